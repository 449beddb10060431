/* hauldctl: a command-line client for hauld's HTTP API. This file holds
 * the command table with each command's help, the options that come before
 * the command, and main. The commands live in cmd_*.c; what they share in
 * ctl.c. Exit statuses are ctl.h's CTL_EXIT_* (also in hauldctl(1)). */
#include "autoconfig.h"

#include <curl/curl.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/ctl.h"
#include "common/clock.h"

static const struct ctl_command commands[] = {
        {"submit", cmd_submit, "URL...|- [OPTIONS] | --query Q --source S... [OPTIONS]",
         "Submit a job: URLs (- reads them from stdin) or a search query.",
         "\n"
         "  -q, --query Q              search Q on the sources given with --source\n"
         "  -s, --source S             a source to search (repeatable, needs --query)\n"
         "  -m, --max N                items to download successfully (1..10000)\n"
         "  -l, --label L              a label for the job\n"
         "  -p, --priority P           -10..10; higher runs first\n"
         "  -t, --timeout SECONDS      the job's deadline, from its start\n"
         "  -k, --idempotency-key K    submit at most once under K, even when repeated\n"
         "  -w, --wait                 follow the job to its end; exit 1 unless it succeeded\n"
         "\n"
         "Prints the new job's id (with --json, the job).\n"},
        {"ls", cmd_ls, "[--state S]... [--label L] [--limit N] [--all]", "List jobs, newest first.",
         "\n"
         "  -s, --state S     only jobs in state S (repeatable)\n"
         "  -l, --label L     only jobs labelled exactly L\n"
         "  -n, --limit N     jobs per page (1..500, default 50)\n"
         "  -a, --all         every page, not only the first\n"},
        {"show", cmd_show, "ID", "Show one job: its state, progress and sources.", ""},
        {"items", cmd_items, "ID [--state S]...", "List a job's items.",
         "\n"
         "  -s, --state S     only items in state S (repeatable)\n"},
        {"watch", cmd_watch, "ID", "Follow a job's progress until it ends; exit 1 unless it succeeded.",
         "\n"
         "On a terminal one progress line is redrawn; otherwise each event is one line.\n"},
        {"cancel", cmd_change, "ID", "Cancel a queued or running job.", ""},
        {"retry", cmd_change, "ID", "Run a finished job's failed and skipped items again.", ""},
        {"pause", cmd_change, "ID", "Pause a queued or running job.", ""},
        {"resume", cmd_change, "ID", "Resume a paused job.", ""},
        {"rm", cmd_rm, "ID", "Forget a finished job (its files stay).", ""},
        {"get", cmd_get, "ID INDEX [-o FILE] [--force]", "Download a finished item's file.",
         "\n"
         "  -o, --output FILE  where to save it (- for stdout); default: the server's\n"
         "                     file name, in the current directory\n"
         "  -f, --force        overwrite an existing file\n"},
        {"circuits", cmd_circuits, "", "Show every source's circuit breaker.", ""},
        {"reset", cmd_reset, "SOURCE", "Close a source's circuit breaker.", ""},
        {"stats", cmd_stats, "[--reset]", "Show download statistics.",
         "\n"
         "  -r, --reset       set the counters back to zero (and show them)\n"},
        {"health", cmd_health, "", "Check that hauld answers; show its version.", ""},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
        fprintf(f, "Usage: hauldctl [--url URL] [--token-file FILE] [--json] COMMAND [ARGS...]\n"
                   "\n"
                   "A command-line client for hauld's HTTP API.\n"
                   "\n"
                   "Commands:\n");
        for (size_t i = 0; i < NCOMMANDS; i++)
                fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\n"
                   "Options (also after the command):\n"
                   "      --url URL          the API: http://HOST:PORT, https://... or unix:/PATH\n"
                   "                         (default $HAULD_URL, else " CTL_DEFAULT_URL ")\n"
                   "      --token-file FILE  the API token's file (default $HAULD_TOKEN_FILE)\n"
                   "      --json             print the API's JSON unchanged, one document a line\n"
                   "  -h, --help             this help; hauldctl COMMAND --help for a command's\n"
                   "  -V, --version          show the version\n"
                   "\n"
                   "Exit status: 0 done, 1 a followed job did not succeed, 2 usage error or a\n"
                   "request refused as invalid, 3 server error (also 401, 409), 4 not found,\n"
                   "69 the server cannot be reached, 73 get cannot create its file.\n"
                   "\n"
                   "See the hauldctl(1), hauld(8) and hauld.conf(5) manual pages.\n");
}

static const struct ctl_command *find(const char *name)
{
        for (size_t i = 0; i < NCOMMANDS; i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

/* The options before the command. Returns -1 to go on, else an exit status. */
static int global_options(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {
                {"version", no_argument, NULL, 'V'},
                CTL_COMMON_OPTIONS,
        };
        int o;

        opterr = 0;
        /* "+": stop at the command's name; its options are its own */
        while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
                switch (o) {
                case CTL_OPT_JSON:
                        c->json = true;
                        break;
                case CTL_OPT_URL:
                        c->url = optarg;
                        break;
                case CTL_OPT_TOKEN:
                        c->token_file = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return CTL_EXIT_OK;
                case 'V':
                        printf("hauldctl %s\n", PACKAGE_VERSION);
                        return CTL_EXIT_OK;
                case ':':
                        return ctl_usage_error(c, "option '%s' needs a value", argv[optind - 1]);
                default:
                        if (optopt)
                                return ctl_usage_error(c, "unknown option '-%c'", optopt);
                        return ctl_usage_error(c, "unknown option '%s'", argv[optind - 1]);
                }
        }
        return -1;
}

int main(int argc, char **argv)
{
        struct ctl c = {.url = getenv("HAULD_URL"), .token_file = getenv("HAULD_TOKEN_FILE")};
        int rc;

        setlocale(LC_CTYPE, "");
        if (!c.url || !*c.url)
                c.url = CTL_DEFAULT_URL;
        c.tty = isatty(STDOUT_FILENO) == 1;
        c.now_ms = clock_wall_ms();
        if ((rc = global_options(&c, argc, argv)) >= 0)
                return rc;
        if (optind >= argc)
                return ctl_usage_error(&c, "missing command");
        if (strcmp(argv[optind], "help") == 0) { /* hauldctl help [COMMAND] */
                if (optind + 1 >= argc) {
                        usage(stdout);
                        return CTL_EXIT_OK;
                }
                if (!(c.cmd = find(argv[optind + 1])))
                        return ctl_usage_error(&c, "unknown command '%s'", argv[optind + 1]);
                ctl_command_help(c.cmd);
                return CTL_EXIT_OK;
        }
        if (!(c.cmd = find(argv[optind])))
                return ctl_usage_error(&c, "unknown command '%s'", argv[optind]);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int cargc = argc - optind;
        char **cargv = argv + optind;
        optind = 0; /* a fresh getopt scan of the command's arguments */
        rc = c.cmd->run(&c, cargc, cargv);
        http_client_free(c.http);
        curl_global_cleanup();
        if (fflush(stdout) != 0 && rc == CTL_EXIT_OK) {
                ctl_warn("cannot write the output");
                rc = CTL_EXIT_SERVER;
        }
        return rc;
}

/* ctl: the plumbing every hauldctl command uses. Options: each command's
 * getopt_long table ends with CTL_COMMON_OPTIONS, so --url, --token-file
 * and --json work before or after the command's name. The API: every
 * call goes through ctl_call, which turns transport failures and problem
 * documents into one message on stderr and the exit status the manual
 * lists (ctl.h's CTL_EXIT_*). Server text is shown through fmt_clean. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/ctl.h"
#include "cli/format.h"

#define SHORTOPTS_MAX 64 /* bytes of a command's short option string */

/* ---- messages and parsing --------------------------------------------------- */

void ctl_warn(const char *fmt, ...)
{
        va_list ap;
        fputs("hauldctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

int ctl_usage_error(struct ctl *c, const char *fmt, ...)
{
        const char *name = c->cmd ? c->cmd->name : NULL;
        va_list ap;

        fprintf(stderr, "hauldctl%s%s: ", name ? " " : "", name ? name : "");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, " (try 'hauldctl%s%s --help')\n", name ? " " : "", name ? name : "");
        return CTL_EXIT_USAGE;
}

void ctl_command_help(const struct ctl_command *cmd)
{
        printf("Usage: hauldctl %s %s\n\n%s\n%s", cmd->name, cmd->synopsis, cmd->summary, cmd->help);
        printf("\nCommon options: --url URL, --token-file FILE, --json (see hauldctl --help).\n"
               "See hauldctl(1).\n");
}

int ctl_getopt(struct ctl *c, int argc, char **argv, const char *shortopts, const struct option *longopts)
{
        char opts[SHORTOPTS_MAX];

        snprintf(opts, sizeof(opts), ":h%s", shortopts);
        for (;;) {
                int o = getopt_long(argc, argv, opts, longopts, NULL);
                switch (o) {
                case CTL_OPT_JSON:
                        c->json = true;
                        continue;
                case CTL_OPT_URL:
                        c->url = optarg;
                        continue;
                case CTL_OPT_TOKEN:
                        c->token_file = optarg;
                        continue;
                case 'h':
                        ctl_command_help(c->cmd);
                        c->exit = CTL_EXIT_OK;
                        return CTL_OPT_STOP;
                case ':':
                        c->exit = ctl_usage_error(c, "option '%s' needs a value", argv[optind - 1]);
                        return CTL_OPT_STOP;
                case '?':
                        if (optopt)
                                c->exit = ctl_usage_error(c, "unknown option '-%c'", optopt);
                        else
                                c->exit = ctl_usage_error(c, "unknown option '%s'", argv[optind - 1]);
                        return CTL_OPT_STOP;
                default:
                        return o;
                }
        }
}

int ctl_want_args(struct ctl *c, int argc, int n, const char *what)
{
        if (argc < n)
                return ctl_usage_error(c, "missing %s", what);
        if (argc > n)
                return ctl_usage_error(c, "too many arguments");
        return 0;
}

/* ---- the token ----------------------------------------------------------------- */

/* The token in path: a regular file of at most CTL_TOKEN_MAX bytes holding
 * one printable ASCII word (spaces and newlines around it are dropped). */
static int read_token(const char *path, char **ret, const char **ret_why)
{
        char buf[CTL_TOKEN_MAX + 1];
        struct stat st;
        ssize_t n;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

        *ret_why = NULL;
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                *ret_why = "is not a regular file";
                close(fd);
                return -EINVAL;
        }
        n = read(fd, buf, sizeof(buf));
        close(fd);
        if (n < 0)
                return -errno;
        if ((size_t)n > CTL_TOKEN_MAX) {
                *ret_why = "is larger than 4096 bytes";
                return -EFBIG;
        }
        size_t start = 0, end = (size_t)n;
        while (start < end && strchr(" \t\r\n", buf[start]))
                start++;
        while (end > start && strchr(" \t\r\n", buf[end - 1]))
                end--;
        if (start == end) {
                *ret_why = "is empty";
                return -EINVAL;
        }
        for (size_t i = start; i < end; i++)
                if (buf[i] < 0x21 || buf[i] > 0x7E) {
                        *ret_why = "must hold one token of printable ASCII without spaces";
                        explicit_bzero(buf, sizeof(buf));
                        return -EINVAL;
                }
        char *t = strndup(buf + start, end - start);
        explicit_bzero(buf, sizeof(buf));
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

int ctl_connect(struct ctl *c)
{
        char *token = NULL;
        const char *why;
        int r;

        if (c->token_file && *c->token_file && (r = read_token(c->token_file, &token, &why)) < 0) {
                ctl_warn("token file %s: %s", c->token_file, why ? why : strerror(-r));
                return CTL_EXIT_USAGE;
        }
        r = http_client_new(c->url, token, &c->http);
        if (token)
                explicit_bzero(token, strlen(token));
        free(token);
        if (r == -EINVAL)
                return ctl_usage_error(c, "bad --url '%s': use http://HOST:PORT, https://... or unix:/PATH",
                                       c->url);
        if (r < 0) {
                ctl_warn("%s", strerror(-r));
                return CTL_EXIT_SERVER;
        }
        return 0;
}

/* ---- errors of the API ------------------------------------------------------------- */

int ctl_transport_error(struct ctl *c, int r)
{
        if (r == -EHOSTUNREACH) {
                ctl_warn("cannot reach hauld at %s: %s", c->url, http_error(c->http));
                return CTL_EXIT_UNAVAILABLE;
        }
        if (r == -ENOMEM)
                ctl_warn("out of memory");
        else
                ctl_warn("%s: %s", c->url, http_error(c->http));
        return CTL_EXIT_SERVER;
}

static void warn_clean(const char *prefix, const char *text)
{
        char *t = fmt_clean(text);
        fprintf(stderr, "%s%s\n", prefix, t ? t : "");
        free(t);
}

/* The problem's title, detail and field errors. */
static void print_problem(const json_t *p, long status)
{
        const char *title = ctl_str(p, "title"), *detail = ctl_str(p, "detail");
        char *t = fmt_clean(*title ? title : "Error"), *d = fmt_clean(detail);
        json_t *errors = json_object_get(p, "errors"), *e;
        size_t i;

        fprintf(stderr, "hauldctl: %s (%ld)%s%s\n", t ? t : "", status, d && *d ? ": " : "", d ? d : "");
        free(t);
        free(d);
        json_array_foreach(errors, i, e)
        {
                char *f = fmt_clean(ctl_str(e, "field")), *m = fmt_clean(ctl_str(e, "message"));
                fprintf(stderr, "  %s: %s\n", f ? f : "", m ? m : "");
                free(f);
                free(m);
        }
}

int ctl_answer_error(struct ctl *c, const struct http_answer *a)
{
        json_t *p = a->body ? json_loads(a->body, 0, NULL) : NULL;

        if (json_is_object(p))
                print_problem(p, a->status);
        else if (a->body && a->len > 0 && a->len < 200 && !strchr(a->body, '\n'))
                warn_clean("hauldctl: the server answered: ", a->body);
        else
                ctl_warn("the server answered HTTP %ld", a->status);
        json_decref(p);
        if (a->status == 401) {
                if (http_has_token(c->http))
                        ctl_warn("the server refused the token from %s", c->token_file);
                else
                        ctl_warn("the server requires an API token: give its file with --token-file or "
                                 "HAULD_TOKEN_FILE");
        }
        if (a->status == 404)
                return CTL_EXIT_NOT_FOUND;
        if (a->status == 400 || a->status == 413 || a->status == 422)
                return CTL_EXIT_USAGE;
        return CTL_EXIT_SERVER;
}

int ctl_call(struct ctl *c, const char *method, const char *path, const char *body,
             const char *const *headers, json_t **ret_json, struct http_answer *ret)
{
        struct http_answer a;
        json_t *j = NULL;
        int r = http_request(c->http, method, path, body, headers, &a);

        if (r < 0)
                return ctl_transport_error(c, r);
        if (a.status < 200 || a.status > 299) {
                r = ctl_answer_error(c, &a);
                http_answer_clear(&a);
                return r;
        }
        if (ret_json && a.len > 0 && !(j = json_loadb(a.body, a.len, 0, NULL))) {
                ctl_warn("%s %s: the answer is not JSON", method, path);
                http_answer_clear(&a);
                return CTL_EXIT_SERVER;
        }
        if (ret_json)
                *ret_json = j;
        if (ret)
                *ret = a;
        else
                http_answer_clear(&a);
        return CTL_EXIT_OK;
}

char *ctl_job_path(const char *id, const char *suffix)
{
        char *e = http_escape(id), *path = NULL;
        if (e && asprintf(&path, "/v1/jobs/%s%s", e, suffix) < 0)
                path = NULL;
        free(e);
        return path;
}

void ctl_print_raw(const struct http_answer *a)
{
        if (!a->body || a->len == 0)
                return;
        fwrite(a->body, 1, a->len, stdout);
        if (a->body[a->len - 1] != '\n')
                fputc('\n', stdout);
}

/* ---- reading JSON ---------------------------------------------------------------------- */

const char *ctl_str(const json_t *o, const char *key)
{
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "";
}

int64_t ctl_int(const json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);
        if (json_is_integer(v))
                return (int64_t)json_integer_value(v);
        if (json_is_real(v))
                return (int64_t)json_real_value(v);
        return -1;
}

double ctl_real(const json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);
        return json_is_number(v) ? json_number_value(v) : NAN;
}

bool ctl_job_is_over(const json_t *job)
{
        static const char *const terminal[] = {"succeeded", "partial", "failed", "cancelled", "timed_out"};
        const char *state = ctl_str(job, "state");

        for (size_t i = 0; i < sizeof(terminal) / sizeof(terminal[0]); i++)
                if (strcmp(state, terminal[i]) == 0)
                        return true;
        return json_is_string(json_object_get(job, "finished_at"));
}

char *ctl_time(struct ctl *c, const json_t *o, const char *key, bool rel, char *buf, size_t size)
{
        const char *s = ctl_str(o, key);
        char ago[FMT_SIZE_LEN];
        int64_t ms;

        if (fmt_parse_time(s, &ms) < 0)
                snprintf(buf, size, "-");
        else if (rel)
                snprintf(buf, size, "%s", fmt_ago(ms, c->now_ms, ago, sizeof(ago)));
        else
                snprintf(buf, size, "%s (%s)", s, fmt_ago(ms, c->now_ms, ago, sizeof(ago)));
        return buf;
}

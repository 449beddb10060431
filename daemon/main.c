/* main: wiring only. Settings, then the scheduler (store, engine), then the
 * API; signals are taken on this thread with sigwait(): SIGTERM and SIGINT
 * stop gracefully, SIGHUP re-reads the settings. */
#include "autoconfig.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sysexits.h>

#include "api/httpd.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/engine.h"
#include "daemon/events.h"
#include "daemon/notify.h"
#include "daemon/sched.h"
#include "daemon/sources.h"
#include "daemon/store.h"

#define MALLOC_ARENAS         2            /* M_ARENA_MAX: see main() */
#define MALLOC_MMAP_THRESHOLD (256 * 1024) /* bytes: M_MMAP_THRESHOLD, see main() */

/* Settings and sources replaced by a reload stay alive until exit: the
 * scheduler and the API may still be reading the old ones. */
struct settings {
        struct config cfg;
        struct source_set *sources;
        struct settings *next;
};

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: hauld [--config FILE] [--check-config] [KEY=VALUE...]\n"
                "\n"
                "The download daemon: an HTTP API takes download jobs, a worker pool runs them.\n"
                "\n"
                "  -c, --config FILE   settings file (default " SYSCONFDIR "/hauld/hauld.conf if present)\n"
                "      --check-config  validate the settings and exit\n"
                "  -h, --help          show this help\n"
                "  -V, --version       show the version\n"
                "  KEY=VALUE           a setting, overriding the file and the environment\n"
                "\n"
                "Settings are described in docs/configuration.md and etc/hauld.conf.\n"
                "See the hauld(8) and hauld.conf(5) manual pages.\n");
}

static int load_sources(const struct config *cfg, struct source_set **ret)
{
        struct sources_error err = {0};

        if (sources_load_dir(cfg->sources_dir, ret, &err) == 0)
                return 0;
        log_error("config: %s: %s%s%s", err.file[0] ? err.file : cfg->sources_dir, err.field,
                  err.field[0] ? ": " : "", err.message);
        return -EINVAL;
}

/* Behind a proxy hauld sees only the proxy's address, never the target's:
 * with private addresses refused, the proxy must be the one refusing them. */
static int proxy_policy(struct config *cfg)
{
        if (!*cfg->proxy || cfg->allow_private_addresses || cfg->proxy_trusted)
                return 0;
        log_error("config: PROXY is set and ALLOW_PRIVATE_ADDRESSES=false, but behind a proxy hauld "
                  "cannot see the address of a download's target: the proxy must enforce the egress "
                  "policy (refuse loopback, private and link-local targets). Set PROXY_TRUSTED=true to "
                  "say that it does");
        return -EINVAL;
}

/* "config: FILE:LINE: KEY: message", each part only when known. */
static void log_config_error(const struct config_error *err)
{
        char where[sizeof(err->file) + 16] = "";

        if (err->line > 0)
                snprintf(where, sizeof(where), "%s:%d: ", err->file, err->line);
        else if (err->file[0])
                snprintf(where, sizeof(where), "%s: ", err->file);
        log_error("config: %s%s%s%s", where, err->key, err->key[0] ? ": " : "", err->message);
}

/* The settings, checked as a start needs them: SOURCES_DIR must exist, and
 * a PROXY must be trusted when private addresses are refused. */
static int load(struct config *cfg, const char *file, char **flags, int nflags)
{
        struct config_error err = {0};

        if (config_load(cfg, file, flags, nflags, &err) < 0) {
                log_config_error(&err);
                return -EINVAL;
        }
        if (config_check_sources_dir(cfg, &err) < 0) {
                log_config_error(&err);
                config_free(cfg);
                return -EINVAL;
        }
        if (proxy_policy(cfg) < 0) {
                config_free(cfg);
                return -EINVAL;
        }
        return 0;
}

/* next as it will be in effect: what takes a restart keeps running's value. */
static int settle(const struct config *running, struct config *next)
{
        const char *kept[CONFIG_RESTART_KEYS_MAX];
        size_t n;

        if (config_merge_reload(running, next, kept, &n) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                log_warning("config: %s changed in the settings, but takes a restart to change; "
                            "the running value stays",
                            kept[i]);
        return 0;
}

/* live is the first settings; the newest in effect head its list. */
static void reload(struct sched *sched, struct httpd *httpd, struct settings *live, const char *file,
                   char **flags, int nflags)
{
        const struct config *running = live->next ? &live->next->cfg : &live->cfg;
        struct settings *n = calloc(1, sizeof(*n));

        notify_send("RELOADING=1");
        if (!n || load(&n->cfg, file, flags, nflags) < 0) {
                free(n);
                log_warning("config: reload failed; the previous settings stay");
                goto out;
        }
        if (settle(running, &n->cfg) < 0 || load_sources(&n->cfg, &n->sources) < 0) {
                config_free(&n->cfg);
                free(n);
                log_warning("config: reload failed; the previous settings and sources stay");
                goto out;
        }
        log_set_level((enum log_level)n->cfg.log_level);
        log_set_format((enum log_format)n->cfg.log_format);
        sched_reconfigure(sched, &n->cfg, n->sources);
        httpd_reconfigure(httpd, &n->cfg);
        n->next = live->next;
        live->next = n;
        log_info("config: reloaded (%zu source%s)", sources_count(n->sources),
                 sources_count(n->sources) == 1 ? "" : "s");
out:
        notify_send("READY=1");
}

/* Where other nodes reach this one: NODE_URL, else the address it listens
 * on (the host name for an address of every interface). */
static void node_url(const struct config *cfg, struct httpd *httpd, struct sched *sched)
{
        char host[256], url[320];
        const char *l = cfg->listen;

        if (cfg->node_url && *cfg->node_url) {
                sched_set_node_url(sched, cfg->node_url);
                return;
        }
        if (httpd_port(httpd) <= 0 || strncmp(l, "unix:", 5) == 0)
                return;
        size_t n = l[0] == '[' ? strcspn(l, "]") + 1 : strcspn(l, ":");
        snprintf(host, sizeof(host), "%.*s", (int)n, l);
        if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0) {
                if (gethostname(host, sizeof(host) - 1) < 0)
                        return;
                host[sizeof(host) - 1] = '\0';
        }
        snprintf(url, sizeof(url), "http://%s:%d", host, httpd_port(httpd));
        sched_set_node_url(sched, url);
}

static int serve(struct settings *live, const char *file, char **flags, int nflags)
{
        struct sched *sched = NULL;
        struct httpd *httpd = NULL;
        struct event_bus *events = NULL;
        struct config *cfg = &live->cfg;
        sigset_t sigs;
        int sig, r, rc = EXIT_FAILURE;

        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGXFSZ, SIG_IGN); /* a file-size limit fails the write with EFBIG: that item ends "io" */

        if (events_new(&events) < 0)
                return EXIT_FAILURE;
        r = sched_start(cfg, live->sources, events, &sched);
        if (r < 0)
                goto out;
        struct httpd_deps deps = {.cfg = cfg, .sched = sched, .events = events, .version = PACKAGE_VERSION};
        int fd = notify_listen_fd();
        r = httpd_start(&deps, fd, &httpd);
        if (r < 0) {
                sched_stop(sched);
                goto out;
        }
        node_url(cfg, httpd, sched);
        if (fd >= 0)
                log_info("hauld %s ready: API on the socket from systemd", PACKAGE_VERSION);
        else if (httpd_port(httpd) > 0)
                log_info("hauld %s ready: API on port %d (%s)", PACKAGE_VERSION, httpd_port(httpd),
                         cfg->listen);
        else
                log_info("hauld %s ready: API on %s", PACKAGE_VERSION, cfg->listen);
        char *shown = NULL;
        store_url_redact(cfg->store, &shown); /* a PostgreSQL URL may hold a password */
        log_info("job table %s, files in %s, %zu query source%s", shown ? shown : "(its URL)",
                 cfg->download_dir, sources_count(live->sources),
                 sources_count(live->sources) == 1 ? "" : "s");
        free(shown);
        notify_send("READY=1\nSTATUS=ready");

        for (;;) {
                if (sigwait(&sigs, &sig) != 0)
                        continue;
                if (sig != SIGHUP)
                        break;
                reload(sched, httpd, live, file, flags, nflags);
        }
        log_info("stopping (signal %d)", sig);
        notify_send("STOPPING=1");
        httpd_set_draining(httpd);
        httpd_stop(httpd);
        sched_stop(sched);
        log_info("stopped");
        rc = EXIT_SUCCESS;
out:
        events_free(events);
        return rc;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"check-config", no_argument, NULL, 'k'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {NULL, 0, NULL, 0},
        };
        const char *file = NULL;
        bool check = false;
        struct settings live = {0};
        struct config *cfg = &live.cfg;
        int c, rc;

        /* glibc gives each thread that allocates its own heap arena, up to
         * 8 per core, and an arena keeps the memory it once held: with the
         * API's threads, the scheduler and the committer that was a third
         * of the resident memory in a job over 10,000 hosts. Two arenas
         * cost no measurable speed. MALLOC_ARENA_MAX still overrides. */
        if (!getenv("MALLOC_ARENA_MAX"))
                mallopt(M_ARENA_MAX, MALLOC_ARENAS);
        /* A fixed threshold: large buffers (a big job's per_source text, an
         * answer of many jobs) are mapped and unmapped on their own.
         * glibc's sliding threshold moves them into the heap after the
         * first free, where they fragment it. */
        if (!getenv("MALLOC_MMAP_THRESHOLD_"))
                mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        log_init();
        while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        file = optarg;
                        break;
                case 'k':
                        check = true;
                        break;
                case 'h':
                        usage(stdout);
                        return EXIT_SUCCESS;
                case 'V':
                        printf("hauld %s\n", PACKAGE_VERSION);
                        return EXIT_SUCCESS;
                default:
                        usage(stderr);
                        return EX_USAGE;
                }
        }
        if (load(cfg, file, argv + optind, argc - optind) < 0)
                return CONFIG_EXIT_BAD;
        log_set_level((enum log_level)cfg->log_level);
        log_set_format((enum log_format)cfg->log_format);
        if (store_check_url(cfg->store) < 0) {
                /* the URL may hold a password: name the scheme only */
                log_error("config: STORE: this build has no backend for %.*s; use sqlite:/absolute/path",
                          (int)strcspn(cfg->store, ":"), cfg->store);
                config_free(cfg);
                return CONFIG_EXIT_BAD;
        }
        if (load_sources(cfg, &live.sources) < 0) {
                config_free(cfg);
                return CONFIG_EXIT_BAD;
        }
        int fd = notify_listen_fd();
        /* a listener anyone on the network can reach needs a token */
        if (!cfg->api_token && !httpd_listener_is_local(cfg->listen, fd)) {
                log_error("config: the API listener (%s) is reachable from the network; set API_TOKEN_FILE",
                          fd >= 0 ? "the socket from systemd" : cfg->listen);
                rc = CONFIG_EXIT_BAD;
        } else if (check) {
                printf("configuration OK (%zu query source%s)\n", sources_count(live.sources),
                       sources_count(live.sources) == 1 ? "" : "s");
                rc = EXIT_SUCCESS;
        } else if (engine_global_init() < 0) {
                log_error("engine: libcurl cannot start");
                rc = EXIT_FAILURE;
        } else {
                rc = serve(&live, file, argv + optind, argc - optind);
                engine_global_cleanup();
        }
        while (live.next) {
                struct settings *n = live.next;
                live.next = n->next;
                config_free(&n->cfg);
                sources_free(n->sources);
                free(n);
        }
        sources_free(live.sources);
        config_free(cfg);
        return rc;
}

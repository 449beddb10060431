/* cmd_system: the daemon's own resources: circuits (and resetting one),
 * statistics (and resetting them) and health. */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "cli/ctl.h"
#include "cli/format.h"

/* Parse the command's options (only the common ones) and want n arguments. */
static int plain_args(struct ctl *c, int argc, char **argv, int n, const char *what)
{
        static const struct option opts[] = {CTL_COMMON_OPTIONS};
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "", opts)) != -1)
                if (o == CTL_OPT_STOP)
                        return c->exit == CTL_EXIT_OK ? -1 : c->exit;
        if ((rc = ctl_want_args(c, argc - optind, n, what)) || (rc = ctl_connect(c)))
                return rc;
        return 0;
}

int cmd_circuits(struct ctl *c, int argc, char **argv)
{
        static const char *const headers[] = {"SOURCE", "STATE", "FAILURES", "TRIPS", "RETRY", "LAST ERROR"};
        struct http_answer a;
        json_t *doc = NULL, *e;
        char when[FMT_SIZE_LEN];
        size_t i;
        int rc = plain_args(c, argc, argv, 0, "");

        if (rc)
                return rc < 0 ? CTL_EXIT_OK : rc;
        if ((rc = ctl_call(c, "GET", "/v1/circuits", NULL, NULL, &doc, &a)))
                return rc;
        if (c->json)
                ctl_print_raw(&a);
        else {
                struct table *t = table_new("llrrll", headers);
                json_array_foreach(json_object_get(doc, "circuits"), i, e)
                {
                        table_cell(t, "%s", ctl_str(e, "source"));
                        table_cell(t, "%s", ctl_str(e, "state"));
                        table_cell(t, "%lld/%lld", (long long)ctl_int(e, "consecutive_failures"),
                                   (long long)ctl_int(e, "threshold"));
                        table_cell(t, "%lld", (long long)ctl_int(e, "trips"));
                        table_cell(t, "%s", ctl_time(c, e, "retry_at", true, when, sizeof(when)));
                        const char *err = ctl_str(e, "last_error");
                        table_cell(t, "%s", *err ? err : "-");
                }
                table_print(t, stdout);
                table_free(t);
        }
        json_decref(doc);
        http_answer_clear(&a);
        return CTL_EXIT_OK;
}

int cmd_reset(struct ctl *c, int argc, char **argv)
{
        struct http_answer a;
        json_t *entry = NULL;
        char *e, *path = NULL;
        int rc = plain_args(c, argc, argv, 1, "the source's name");

        if (rc)
                return rc < 0 ? CTL_EXIT_OK : rc;
        e = http_escape(argv[optind]);
        if (!e || asprintf(&path, "/v1/circuits/%s/reset", e) < 0) {
                free(e);
                ctl_warn("out of memory");
                return CTL_EXIT_SERVER;
        }
        free(e);
        rc = ctl_call(c, "POST", path, NULL, NULL, &entry, &a);
        free(path);
        if (rc)
                return rc;
        if (c->json)
                ctl_print_raw(&a);
        else {
                char *s = fmt_clean(ctl_str(entry, "source")), *st = fmt_clean(ctl_str(entry, "state"));
                printf("%s %s\n", s ? s : "", st ? st : "");
                free(s);
                free(st);
        }
        json_decref(entry);
        http_answer_clear(&a);
        return CTL_EXIT_OK;
}

static void stats_print(const json_t *st)
{
        static const char *const headers[] = {"SOURCE",  "ATTEMPTS", "OK",     "FAILED",
                                              "RETRIES", "BYTES",    "CIRCUIT"};
        char d[FMT_SIZE_LEN], b[FMT_SIZE_LEN];
        const char *key;
        json_t *v;

        printf("uptime:    %s\n", fmt_duration((double)ctl_int(st, "uptime_s"), d, sizeof(d)));
        const char *sep = " ";
        printf("jobs:     ");
        json_object_foreach(json_object_get(st, "jobs"), key, v)
        {
                char *k = fmt_clean(key);
                printf("%s%s %lld", sep, k ? k : "", (long long)json_integer_value(v));
                sep = ", ";
                free(k);
        }
        printf("\nattempts:  %lld (%lld succeeded, %lld failed, %lld retries)\n",
               (long long)ctl_int(st, "total_attempts"), (long long)ctl_int(st, "total_successes"),
               (long long)ctl_int(st, "total_failures"), (long long)ctl_int(st, "total_retries"));
        printf("bytes:     %s\n", fmt_size(ctl_int(st, "total_bytes"), b, sizeof(b)));
        json_t *sources = json_object_get(st, "sources");
        if (json_object_size(sources) == 0)
                return;
        struct table *t = table_new("lrrrrrl", headers);
        json_object_foreach(sources, key, v)
        {
                table_cell(t, "%s", key);
                table_cell(t, "%lld", (long long)ctl_int(v, "attempts"));
                table_cell(t, "%lld", (long long)ctl_int(v, "successes"));
                table_cell(t, "%lld", (long long)ctl_int(v, "failures"));
                table_cell(t, "%lld", (long long)ctl_int(v, "retries"));
                table_cell(t, "%s", fmt_size(ctl_int(v, "bytes"), b, sizeof(b)));
                table_cell(t, "%s", ctl_str(v, "circuit"));
        }
        printf("\n");
        table_print(t, stdout);
        table_free(t);
}

int cmd_stats(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {{"reset", no_argument, NULL, 'r'}, CTL_COMMON_OPTIONS};
        struct http_answer a;
        json_t *st = NULL;
        bool reset = false;
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "r", opts)) != -1) {
                if (o == CTL_OPT_STOP)
                        return c->exit;
                reset = true;
        }
        if ((rc = ctl_want_args(c, argc - optind, 0, "")) || (rc = ctl_connect(c)))
                return rc;
        if (reset)
                rc = ctl_call(c, "POST", "/v1/stats/reset", NULL, NULL, &st, &a);
        else
                rc = ctl_call(c, "GET", "/v1/stats", NULL, NULL, &st, &a);
        if (rc)
                return rc;
        if (c->json)
                ctl_print_raw(&a);
        else
                stats_print(st);
        json_decref(st);
        http_answer_clear(&a);
        return CTL_EXIT_OK;
}

int cmd_health(struct ctl *c, int argc, char **argv)
{
        struct http_answer a;
        json_t *h = NULL;
        int rc = plain_args(c, argc, argv, 0, "");

        if (rc)
                return rc < 0 ? CTL_EXIT_OK : rc;
        if ((rc = ctl_call(c, "GET", "/v1/health", NULL, NULL, &h, &a)))
                return rc;
        const char *status = ctl_str(h, "status");
        if (c->json)
                ctl_print_raw(&a);
        else {
                char *s = fmt_clean(status), *v = fmt_clean(ctl_str(h, "version"));
                printf("%s (hauld %s)\n", s ? s : "", v ? v : "");
                free(s);
                free(v);
        }
        rc = strcmp(status, "ok") == 0 ? CTL_EXIT_OK : CTL_EXIT_SERVER;
        json_decref(h);
        http_answer_clear(&a);
        return rc;
}

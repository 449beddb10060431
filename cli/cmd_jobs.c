/* cmd_jobs: the job commands: submit, ls, show, items, cancel, retry,
 * pause, resume and rm. Each builds one request (or a page after page
 * for lists), prints the API's JSON unchanged with --json, and otherwise a
 * table or a short listing. Values the server validates (ranges, state
 * names, URLs) are left to it, so its field errors are the ones shown. */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/ctl.h"
#include "cli/format.h"

#define LIST_QUERY_MAX   4096        /* bytes of a list request's query string */
#define ITEMS_PAGE_LIMIT 1000        /* items asked per page (the API's maximum) */
#define URL_LINE_MAX     (64 * 1024) /* bytes of one URL read from stdin */

/* ---- parsing numbers ---------------------------------------------------------- */

static bool parse_integer(const char *s, json_int_t *ret)
{
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (!*s || *end || errno)
                return false;
        *ret = v;
        return true;
}

/* A JSON number: whole seconds as an integer, others as a real. */
static json_t *seconds_json(const char *s)
{
        char *end;
        double v = strtod(s, &end);
        if (!*s || *end || !isfinite(v))
                return NULL;
        if (v == floor(v) && fabs(v) < 1e15)
                return json_integer((json_int_t)v);
        return json_real(v);
}

/* ---- submit -------------------------------------------------------------------- */

struct submit {
        json_t *body;
        json_t *urls;
        json_t *sources;
        const char *key;
        bool wait;
};

/* URLs from stdin, one a line; blank lines are skipped. */
static int read_urls(struct ctl *c, json_t *urls)
{
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int rc = 0;

        while ((n = getline(&line, &cap, stdin)) >= 0) {
                while (n > 0 && strchr(" \t\r\n", line[n - 1]))
                        line[--n] = '\0';
                char *u = line + strspn(line, " \t");
                if (!*u)
                        continue;
                if (n > URL_LINE_MAX) {
                        rc = ctl_usage_error(c, "a URL on stdin is longer than %d bytes", URL_LINE_MAX);
                        break;
                }
                if (json_array_append_new(urls, json_string(u)) < 0) {
                        rc = ctl_usage_error(c, "a URL on stdin is not UTF-8");
                        break;
                }
        }
        free(line);
        if (rc == 0 && ferror(stdin))
                rc = ctl_usage_error(c, "cannot read URLs from stdin");
        return rc;
}

/* One option of submit; 0 or an exit status. */
static int submit_option(struct ctl *c, struct submit *s, int o, const char *arg)
{
        json_int_t v;
        json_t *t;

        switch (o) {
        case 'q':
                return json_object_set_new(s->body, "query", json_string(arg)) < 0
                               ? ctl_usage_error(c, "--query must be UTF-8")
                               : 0;
        case 's':
                return json_array_append_new(s->sources, json_string(arg)) < 0
                               ? ctl_usage_error(c, "--source must be UTF-8")
                               : 0;
        case 'm':
        case 'p':
                if (!parse_integer(arg, &v))
                        return ctl_usage_error(c, "--%s must be an integer", o == 'm' ? "max" : "priority");
                json_object_set_new(s->body, o == 'm' ? "max" : "priority", json_integer(v));
                return 0;
        case 'l':
                return json_object_set_new(s->body, "label", json_string(arg)) < 0
                               ? ctl_usage_error(c, "--label must be UTF-8")
                               : 0;
        case 't':
                if (!(t = seconds_json(arg)))
                        return ctl_usage_error(c, "--timeout must be a number of seconds");
                json_object_set_new(s->body, "timeout", t);
                return 0;
        case 'k':
                if (!*arg || arg[strcspn(arg, "\r\n")])
                        return ctl_usage_error(c, "--idempotency-key must be one line");
                s->key = arg;
                return 0;
        case 'w':
                s->wait = true;
                return 0;
        }
        return ctl_usage_error(c, "unexpected option");
}

/* The body from the options and the URLs; 0 or an exit status. */
static int submit_body(struct ctl *c, struct submit *s, int argc, char **argv)
{
        bool query = json_object_get(s->body, "query") != NULL;
        int rc;

        for (int i = optind; i < argc; i++) {
                if (strcmp(argv[i], "-") == 0)
                        rc = read_urls(c, s->urls);
                else
                        rc = json_array_append_new(s->urls, json_string(argv[i])) < 0
                                     ? ctl_usage_error(c, "a URL must be UTF-8")
                                     : 0;
                if (rc)
                        return rc;
        }
        if (query && optind < argc)
                return ctl_usage_error(c, "give URLs or --query, not both");
        if (!query && json_array_size(s->sources) > 0)
                return ctl_usage_error(c, "--source needs --query");
        if (query && json_array_size(s->sources) == 0)
                return ctl_usage_error(c, "--query needs at least one --source");
        if (!query && optind == argc)
                return ctl_usage_error(c, "missing URLs (or --query and --source)");
        if (!query && json_array_size(s->urls) == 0)
                return ctl_usage_error(c, "no URLs on stdin");
        if (query)
                json_object_set(s->body, "sources", s->sources);
        else
                json_object_set(s->body, "urls", s->urls);
        return 0;
}

static int submit_send(struct ctl *c, struct submit *s)
{
        char header[256];
        const char *headers[] = {s->key ? header : NULL, NULL};
        struct http_answer a = {0};
        json_t *job = NULL;
        char *text = json_dumps(s->body, JSON_COMPACT);
        int rc;

        if (!text) {
                ctl_warn("out of memory");
                return CTL_EXIT_SERVER;
        }
        if (s->key &&
            snprintf(header, sizeof(header), "Idempotency-Key: %s", s->key) >= (int)sizeof(header)) {
                free(text);
                return ctl_usage_error(c, "--idempotency-key is too long");
        }
        rc = ctl_call(c, "POST", "/v1/jobs", text, headers, &job, &a);
        free(text);
        if (rc)
                return rc;
        const char *id = ctl_str(job, "id");
        if (!*id) {
                ctl_warn("the server answered no job id");
                rc = CTL_EXIT_SERVER;
        } else {
                if (c->json)
                        ctl_print_raw(&a);
                else
                        printf("%s\n", id);
                fflush(stdout);
                if (s->wait)
                        rc = ctl_follow(c, id, isatty(STDERR_FILENO) ? stderr : NULL, false);
        }
        json_decref(job);
        http_answer_clear(&a);
        return rc;
}

int cmd_submit(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {
                {"query", required_argument, NULL, 'q'},
                {"source", required_argument, NULL, 's'},
                {"max", required_argument, NULL, 'm'},
                {"label", required_argument, NULL, 'l'},
                {"priority", required_argument, NULL, 'p'},
                {"timeout", required_argument, NULL, 't'},
                {"idempotency-key", required_argument, NULL, 'k'},
                {"wait", no_argument, NULL, 'w'},
                CTL_COMMON_OPTIONS,
        };
        struct submit s = {.body = json_object(), .urls = json_array(), .sources = json_array()};
        int o, rc = 0;

        if (!s.body || !s.urls || !s.sources) {
                ctl_warn("out of memory");
                rc = CTL_EXIT_SERVER;
                goto out;
        }
        while ((o = ctl_getopt(c, argc, argv, "q:s:m:l:p:t:k:w", opts)) != -1) {
                rc = o == CTL_OPT_STOP ? c->exit : submit_option(c, &s, o, optarg);
                if (o == CTL_OPT_STOP || rc)
                        goto out;
        }
        rc = submit_body(c, &s, argc, argv);
        if (rc == 0)
                rc = ctl_connect(c);
        if (rc == 0)
                rc = submit_send(c, &s);
out:
        json_decref(s.body);
        json_decref(s.urls);
        json_decref(s.sources);
        return rc;
}

/* ---- ls and items ------------------------------------------------------------------- */

/* "&state=S" for each state, escaped, appended to q. false when too long. */
static bool append_param(char *q, size_t size, const char *key, const char *value)
{
        char *e = http_escape(value);
        size_t n = strlen(q);
        bool ok = e && (size_t)snprintf(q + n, size - n, "&%s=%s", key, e) < size - n;
        free(e);
        return ok;
}

static const char *progress_items(const json_t *job, char *buf, size_t size)
{
        json_t *p = json_object_get(job, "progress");
        int64_t done = ctl_int(p, "succeeded") + ctl_int(p, "failed") + ctl_int(p, "skipped");
        snprintf(buf, size, "%lld/%lld", (long long)done, (long long)ctl_int(p, "total"));
        return buf;
}

static void job_row(struct ctl *c, struct table *t, const json_t *job)
{
        char items[48], bytes[FMT_SIZE_LEN], created[FMT_SIZE_LEN];

        table_cell(t, "%s", ctl_str(job, "id"));
        table_cell(t, "%s", ctl_str(job, "state"));
        table_cell(t, "%s", progress_items(job, items, sizeof(items)));
        table_cell(t, "%s",
                   fmt_size(ctl_int(json_object_get(job, "progress"), "bytes"), bytes, sizeof(bytes)));
        table_cell(t, "%s", ctl_time(c, job, "created_at", true, created, sizeof(created)));
        table_cell(t, "%s", ctl_str(job, "label"));
}

/* path with "cursor=CURSOR" added (escaped), or path itself; NULL without memory. */
static char *page_path(const char *path, const char *cursor)
{
        char *ec = cursor ? http_escape(cursor) : NULL, *page = NULL;

        if (!cursor)
                return strdup(path);
        if (ec && asprintf(&page, "%s%scursor=%s", path, strchr(path, '?') ? "&" : "?", ec) < 0)
                page = NULL;
        free(ec);
        return page;
}

/* GET path page after page (all: until the last; else the first only).
 * With --json each page is printed as it came; otherwise row() adds each
 * element of the array key to t. *ret_more: a next page exists. */
static int list_pages(struct ctl *c, const char *path, const char *key, bool all, struct table *t,
                      void (*row)(struct ctl *, struct table *, const json_t *), bool *ret_more)
{
        char *cursor = NULL;
        int rc = 0;

        do {
                struct http_answer a;
                json_t *doc = NULL;
                char *page = page_path(path, cursor);

                free(cursor);
                cursor = NULL;
                if (!page) {
                        ctl_warn("out of memory");
                        return CTL_EXIT_SERVER;
                }
                rc = ctl_call(c, "GET", page, NULL, NULL, &doc, &a);
                free(page);
                if (rc)
                        return rc;
                json_t *list = json_object_get(doc, key);
                const char *next = json_string_value(json_object_get(doc, "next_cursor"));
                if (!json_is_array(list)) {
                        ctl_warn("GET %s: the answer has no \"%s\" list", path, key);
                        rc = CTL_EXIT_SERVER;
                } else if (c->json)
                        ctl_print_raw(&a);
                for (size_t i = 0; rc == 0 && !c->json && i < json_array_size(list); i++)
                        row(c, t, json_array_get(list, i));
                if (rc == 0 && next && *next && !(cursor = strdup(next)))
                        rc = CTL_EXIT_SERVER;
                json_decref(doc);
                http_answer_clear(&a);
        } while (rc == 0 && all && cursor);
        *ret_more = cursor != NULL;
        free(cursor);
        return rc;
}

int cmd_ls(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {
                {"state", required_argument, NULL, 's'},
                {"label", required_argument, NULL, 'l'},
                {"limit", required_argument, NULL, 'n'},
                {"all", no_argument, NULL, 'a'},
                CTL_COMMON_OPTIONS,
        };
        static const char *const headers[] = {"ID", "STATE", "ITEMS", "BYTES", "CREATED", "LABEL"};
        char q[LIST_QUERY_MAX] = "";
        const char *limit = NULL;
        json_int_t v;
        bool all = false, more, ok = true;
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "s:l:n:a", opts)) != -1) {
                if (o == CTL_OPT_STOP)
                        return c->exit;
                if (o == 's' || o == 'l')
                        ok = ok && append_param(q, sizeof(q), o == 's' ? "state" : "label", optarg);
                else if (o == 'n' && !parse_integer(optarg, &v))
                        return ctl_usage_error(c, "--limit must be an integer");
                else if (o == 'n')
                        limit = optarg;
                else
                        all = true;
        }
        if (!ok)
                return ctl_usage_error(c, "too many --state or --label values");
        if ((rc = ctl_want_args(c, argc - optind, 0, "")) || (rc = ctl_connect(c)))
                return rc;
        char path[LIST_QUERY_MAX + 64];
        if (limit)
                snprintf(path, sizeof(path), "/v1/jobs?limit=%s%s", limit, q);
        else
                snprintf(path, sizeof(path), "/v1/jobs%s%s", q[0] ? "?" : "", q[0] ? q + 1 : "");
        struct table *t = c->json ? NULL : table_new("lllrll", headers);
        rc = list_pages(c, path, "jobs", all, t, job_row, &more);
        if (rc == 0 && t) {
                table_print(t, stdout);
                if (more)
                        fprintf(stderr, "(more jobs: --all shows every page)\n");
        }
        table_free(t);
        return rc;
}

static void item_row(struct ctl *c, struct table *t, const json_t *it)
{
        char bytes[FMT_SIZE_LEN], expected[FMT_SIZE_LEN];
        const char *state = ctl_str(it, "state"), *path = ctl_str(it, "path");
        int64_t want = ctl_int(it, "bytes_expected");

        table_cell(t, "%lld", (long long)ctl_int(it, "index"));
        table_cell(t, "%s", state);
        fmt_size(ctl_int(it, "bytes"), bytes, sizeof(bytes));
        if (strcmp(state, "running") == 0 && want >= 0)
                table_cell(t, "%s/%s", bytes, fmt_size(want, expected, sizeof(expected)));
        else
                table_cell(t, "%s", bytes);
        table_cell(t, "%s", ctl_str(it, "source"));
        const char *code = ctl_str(json_object_get(it, "error"), "code");
        table_cell(t, "%s", *code ? code : "-");
        table_cell(t, "%s", *path ? path : ctl_str(it, "url"));
}

int cmd_items(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {{"state", required_argument, NULL, 's'}, CTL_COMMON_OPTIONS};
        static const char *const headers[] = {"#", "STATE", "BYTES", "SOURCE", "ERROR", "FILE"};
        char q[LIST_QUERY_MAX] = "";
        bool ok = true, more;
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "s:", opts)) != -1) {
                if (o == CTL_OPT_STOP)
                        return c->exit;
                ok = ok && append_param(q, sizeof(q), "state", optarg);
        }
        if (!ok)
                return ctl_usage_error(c, "too many --state values");
        if ((rc = ctl_want_args(c, argc - optind, 1, "the job's ID")) || (rc = ctl_connect(c)))
                return rc;
        char *base = ctl_job_path(argv[optind], "/items"), *path = NULL;
        if (!base || asprintf(&path, "%s?limit=%d%s", base, ITEMS_PAGE_LIMIT, q) < 0) {
                free(base);
                ctl_warn("out of memory");
                return CTL_EXIT_SERVER;
        }
        struct table *t = c->json ? NULL : table_new("rlrlll", headers);
        rc = list_pages(c, path, "items", true, t, item_row, &more);
        if (rc == 0 && t)
                table_print(t, stdout);
        table_free(t);
        free(base);
        free(path);
        return rc;
}

/* ---- show -------------------------------------------------------------------------------- */

static void show_sources(const json_t *job)
{
        static const char *const headers[] = {"SOURCE",  "STATE",   "ITEMS", "OK",      "FAILED",
                                              "SKIPPED", "RETRIES", "BYTES", "CIRCUIT", "ERROR"};
        json_t *per = json_object_get(job, "per_source"), *s;
        char bytes[FMT_SIZE_LEN];
        size_t i;

        if (json_array_size(per) == 0)
                return;
        struct table *t = table_new("llrrrrrrll", headers);
        json_array_foreach(per, i, s)
        {
                table_cell(t, "%s", ctl_str(s, "source"));
                table_cell(t, "%s", ctl_str(s, "state"));
                table_cell(t, "%lld", (long long)ctl_int(s, "items"));
                table_cell(t, "%lld", (long long)ctl_int(s, "succeeded"));
                table_cell(t, "%lld", (long long)ctl_int(s, "failed"));
                table_cell(t, "%lld", (long long)ctl_int(s, "skipped"));
                table_cell(t, "%lld", (long long)ctl_int(s, "retries"));
                table_cell(t, "%s", fmt_size(ctl_int(s, "bytes"), bytes, sizeof(bytes)));
                table_cell(t, "%s", ctl_str(s, "circuit"));
                json_t *e = json_object_get(s, "error");
                if (json_is_object(e))
                        table_cell(t, "%s: %s", ctl_str(e, "code"), ctl_str(e, "message"));
                else
                        table_cell(t, "-");
        }
        printf("\n");
        table_print(t, stdout);
        table_free(t);
        int64_t more = ctl_int(job, "per_source_total") - (int64_t)json_array_size(per);
        if (more > 0)
                printf("... and %lld more (GET /v1/jobs/%s/sources lists them all)\n", (long long)more,
                       ctl_str(job, "id"));
}

static void show_line(const char *key, const char *value)
{
        char *v = fmt_clean(value);
        printf("%-10s %s\n", key, v ? v : "");
        free(v);
}

static void show_job(struct ctl *c, const json_t *job)
{
        json_t *p = json_object_get(job, "progress"), *e = json_object_get(job, "error"), *src;
        char buf[512], a[FMT_SIZE_LEN], b[FMT_SIZE_LEN], items[48];
        size_t i, n = 0;

        show_line("id:", ctl_str(job, "id"));
        show_line("state:", ctl_str(job, "state"));
        show_line("label:", ctl_str(job, "label"));
        if (json_is_string(json_object_get(job, "query"))) {
                n = (size_t)snprintf(buf, sizeof(buf), "%s (", ctl_str(job, "query"));
                json_array_foreach(json_object_get(job, "sources"), i, src)
                {
                        const char *name = json_string_value(src);
                        if (n < sizeof(buf))
                                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", i ? ", " : "",
                                                      name ? name : "");
                }
                if (n < sizeof(buf))
                        snprintf(buf + n, sizeof(buf) - n, ")");
                show_line("query:", buf);
        }
        snprintf(buf, sizeof(buf), "%lld, max %lld, timeout %s", (long long)ctl_int(job, "priority"),
                 (long long)ctl_int(job, "max"), fmt_duration(ctl_real(job, "timeout"), a, sizeof(a)));
        show_line("priority:", buf);
        show_line("created:", ctl_time(c, job, "created_at", false, buf, sizeof(buf)));
        show_line("started:", ctl_time(c, job, "started_at", false, buf, sizeof(buf)));
        show_line("finished:", ctl_time(c, job, "finished_at", false, buf, sizeof(buf)));
        show_line("deadline:", ctl_time(c, job, "deadline_at", false, buf, sizeof(buf)));
        snprintf(buf, sizeof(buf), "%s items (%lld succeeded, %lld failed, %lld skipped, %lld running), %s",
                 progress_items(job, items, sizeof(items)), (long long)ctl_int(p, "succeeded"),
                 (long long)ctl_int(p, "failed"), (long long)ctl_int(p, "skipped"),
                 (long long)ctl_int(p, "running"), fmt_size(ctl_int(p, "bytes"), a, sizeof(a)));
        if (ctl_int(p, "bytes_expected") >= 0) {
                n = strlen(buf);
                snprintf(buf + n, sizeof(buf) - n, " of %s",
                         fmt_size(ctl_int(p, "bytes_expected"), b, sizeof(b)));
        }
        if (!ctl_job_is_over(job) && ctl_int(p, "speed_bps") >= 0) {
                n = strlen(buf);
                snprintf(buf + n, sizeof(buf) - n, ", %s", fmt_speed(ctl_int(p, "speed_bps"), b, sizeof(b)));
        }
        if (!ctl_job_is_over(job) && !isnan(ctl_real(p, "eta_s"))) {
                n = strlen(buf);
                snprintf(buf + n, sizeof(buf) - n, ", ETA %s",
                         fmt_duration(ctl_real(p, "eta_s"), b, sizeof(b)));
        }
        show_line("progress:", buf);
        if (json_is_object(e)) {
                snprintf(buf, sizeof(buf), "%s: %s", ctl_str(e, "code"), ctl_str(e, "message"));
                show_line("error:", buf);
        }
        show_sources(job);
}

int cmd_show(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {CTL_COMMON_OPTIONS};
        struct http_answer a;
        json_t *job = NULL;
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "", opts)) != -1)
                if (o == CTL_OPT_STOP)
                        return c->exit;
        if ((rc = ctl_want_args(c, argc - optind, 1, "the job's ID")) || (rc = ctl_connect(c)))
                return rc;
        char *path = ctl_job_path(argv[optind], "");
        rc = path ? ctl_call(c, "GET", path, NULL, NULL, &job, &a) : CTL_EXIT_SERVER;
        free(path);
        if (rc)
                return rc;
        if (c->json)
                ctl_print_raw(&a);
        else
                show_job(c, job);
        json_decref(job);
        http_answer_clear(&a);
        return CTL_EXIT_OK;
}

/* ---- cancel, retry, pause, resume, rm ---------------------------------------------------------- */

int cmd_change(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {CTL_COMMON_OPTIONS};
        struct http_answer a;
        json_t *job = NULL;
        char suffix[32];
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "", opts)) != -1)
                if (o == CTL_OPT_STOP)
                        return c->exit;
        if ((rc = ctl_want_args(c, argc - optind, 1, "the job's ID")) || (rc = ctl_connect(c)))
                return rc;
        snprintf(suffix, sizeof(suffix), "/%s", c->cmd->name);
        char *path = ctl_job_path(argv[optind], suffix);
        rc = path ? ctl_call(c, "POST", path, NULL, NULL, &job, &a) : CTL_EXIT_SERVER;
        free(path);
        if (rc)
                return rc;
        if (c->json)
                ctl_print_raw(&a);
        else {
                char *id = fmt_clean(ctl_str(job, "id")), *state = fmt_clean(ctl_str(job, "state"));
                printf("%s %s\n", id ? id : "", state ? state : "");
                free(id);
                free(state);
        }
        json_decref(job);
        http_answer_clear(&a);
        return CTL_EXIT_OK;
}

int cmd_rm(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {CTL_COMMON_OPTIONS};
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "", opts)) != -1)
                if (o == CTL_OPT_STOP)
                        return c->exit;
        if ((rc = ctl_want_args(c, argc - optind, 1, "the job's ID")) || (rc = ctl_connect(c)))
                return rc;
        char *path = ctl_job_path(argv[optind], "");
        rc = path ? ctl_call(c, "DELETE", path, NULL, NULL, NULL, NULL) : CTL_EXIT_SERVER;
        free(path);
        return rc;
}

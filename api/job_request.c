/* job_request: turns a POST /v1/jobs body into a struct job and its URL
 * items, or into the list of everything wrong with it. It collects every
 * field error rather than stopping at the first (up to PROBLEM_MAX_ERRORS),
 * names fields as clients wrote them ("urls[3].url"), and never keeps a
 * partial result: on any error the caller gets only the error list.
 *
 * Limits are checked before work that grows with the input: the urls
 * array is counted before its entries are parsed, nesting is measured
 * before fields are read, and duplicate URLs and per-source tallies use a
 * hash table so 10000 items stay linear. */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/job_request.h"
#include "api/problem.h"
#include "daemon/urlcheck.h"

/* ---- a fixed-capacity string -> int map (keys borrowed) ---------------- */

struct strmap {
        const char **keys;
        int *vals;
        size_t mask; /* capacity - 1; capacity a power of two, over twice the entries */
};

static int strmap_init(struct strmap *m, size_t entries)
{
        size_t cap = 16;
        while (cap < 2 * entries + 1)
                cap *= 2;
        m->keys = calloc(cap, sizeof(*m->keys));
        m->vals = calloc(cap, sizeof(*m->vals));
        m->mask = cap - 1;
        if (!m->keys || !m->vals)
                return -ENOMEM;
        return 0;
}

static void strmap_free(struct strmap *m)
{
        free(m->keys);
        free(m->vals);
}

/* The value stored under key, or -1 after storing val under it. */
static int strmap_find_or_add(struct strmap *m, const char *key, int val)
{
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (const unsigned char *p = (const unsigned char *)key; *p; p++)
                h = (h ^ *p) * 1099511628211ull;
        for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
                if (!m->keys[i]) {
                        m->keys[i] = key;
                        m->vals[i] = val;
                        return -1;
                }
                if (strcmp(m->keys[i], key) == 0)
                        return m->vals[i];
        }
}

/* ---- parse state ------------------------------------------------------- */

struct parse {
        const struct job_request_hooks *hooks;
        json_t *errors; /* the problem "errors" array */
        int oom;        /* -ENOMEM once an allocation failed, else 0 */
        struct job *job;
        struct item *items;
        size_t nitems;
        char **normalized; /* per item: libcurl's form of its URL, for duplicate detection */
};

static void bad(struct parse *p, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void bad(struct parse *p, const char *field, const char *fmt, ...)
{
        char msg[PROBLEM_TEXT_MAX + 1];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (problem_error_add(p->errors, field, "%s", msg) < 0)
                p->oom = -ENOMEM;
}

static bool depth_ok(json_t *v, int depth)
{
        const char *key;
        json_t *child;
        size_t i;

        if (!json_is_object(v) && !json_is_array(v))
                return true;
        if (depth > JOB_REQUEST_MAX_DEPTH)
                return false;
        if (json_is_array(v)) {
                json_array_foreach(v, i, child)
                {
                        if (!depth_ok(child, depth + 1))
                                return false;
                }
        } else {
                json_object_foreach(v, key, child)
                {
                        if (!depth_ok(child, depth + 1))
                                return false;
                }
        }
        return true;
}

/* Unicode code points of a valid UTF-8 string (jansson checked it). */
static size_t utf8_chars(const char *s)
{
        size_t n = 0;
        for (; *s; s++)
                n += ((unsigned char)*s & 0xC0) != 0x80;
        return n;
}

/* Report each key of obj that is not in allowed (NULL-terminated). */
static void check_keys(struct parse *p, json_t *obj, const char *prefix, const char *const *allowed)
{
        const char *key;
        json_t *v;
        char field[PROBLEM_TEXT_MAX + 1];

        json_object_foreach(obj, key, v)
        {
                bool known = false;
                for (const char *const *a = allowed; *a && !known; a++)
                        known = strcmp(*a, key) == 0;
                if (known)
                        continue;
                snprintf(field, sizeof(field), "%s%s", prefix, key);
                bad(p, field, "unknown field");
        }
}

bool job_request_source_name_ok(const char *name)
{
        size_t n = strlen(name);

        if (n == 0 || n > SOURCE_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                return false;
        for (const unsigned char *c = (const unsigned char *)name; *c; c++)
                if (*c == '/' || *c < 0x20 || *c == 0x7F)
                        return false;
        return true;
}

/* ---- scalar fields ----------------------------------------------------- */

static void parse_int(struct parse *p, json_t *root, const char *name, int lo, int hi, int *out)
{
        json_t *v = json_object_get(root, name);
        if (!v)
                return;
        if (!json_is_integer(v)) {
                bad(p, name, "must be an integer %d..%d", lo, hi);
                return;
        }
        json_int_t i = json_integer_value(v);
        if (i < lo || i > hi) {
                bad(p, name, "must be %d..%d", lo, hi);
                return;
        }
        *out = (int)i;
}

/* A number of seconds lo..hi. */
static void parse_seconds(struct parse *p, json_t *root, const char *name, double lo, double hi, double *out)
{
        json_t *v = json_object_get(root, name);
        if (!v)
                return;
        if (!json_is_number(v)) {
                bad(p, name, "must be a number of seconds %g..%g", lo, hi);
                return;
        }
        double t = json_number_value(v);
        if (!(t >= lo && t <= hi)) {
                bad(p, name, "must be %g..%g seconds", lo, hi);
                return;
        }
        *out = t;
}

/* The job's own limits over the settings (the same ranges as theirs). */
static void parse_limits(struct parse *p, json_t *root)
{
        struct job_limits *l = &p->job->limits;
        parse_seconds(p, root, "source_timeout", 1, 86400, &l->source_timeout);
        parse_seconds(p, root, "request_timeout", 0.1, 3600, &l->request_timeout);
        parse_seconds(p, root, "stall_timeout", 1, 3600, &l->stall_timeout);
        parse_int(p, root, "max_retries", 0, 100, &l->max_retries);
}

/* A string field of lo..hi characters; *out is replaced by a copy. */
static void parse_text(struct parse *p, json_t *root, const char *name, size_t lo, size_t hi, char **out)
{
        json_t *v = json_object_get(root, name);
        if (!v)
                return;
        size_t n = json_is_string(v) ? utf8_chars(json_string_value(v)) : 0;
        if (!json_is_string(v) || n < lo || n > hi) {
                bad(p, name, "must be a string of %zu..%zu characters", lo, hi);
                return;
        }
        char *s = strdup(json_string_value(v));
        if (!s) {
                p->oom = -ENOMEM;
                return;
        }
        free(*out);
        *out = s;
}

static void parse_sources(struct parse *p, json_t *root)
{
        json_t *v = json_object_get(root, "sources"), *e;
        char field[32];
        size_t i, n = json_array_size(v);

        if (!v)
                return;
        if (!json_is_array(v) || n < 1 || n > JOB_MAX_SOURCES) {
                bad(p, "sources", "must be an array of 1..%d source names", JOB_MAX_SOURCES);
                return;
        }
        p->job->sources = calloc(n, sizeof(char *));
        if (!p->job->sources) {
                p->oom = -ENOMEM;
                return;
        }
        json_array_foreach(v, i, e)
        {
                const char *name = json_string_value(e);
                snprintf(field, sizeof(field), "sources[%zu]", i);
                if (!name || !job_request_source_name_ok(name)) {
                        bad(p, field, "must be a source name of 1..%d bytes", SOURCE_NAME_MAX);
                        continue;
                }
                bool dup = false;
                for (size_t k = 0; k < p->job->nsources && !dup; k++)
                        dup = strcmp(p->job->sources[k], name) == 0;
                if (dup) {
                        bad(p, field, "repeats an earlier source");
                        continue;
                }
                if (p->hooks && p->hooks->source_known &&
                    !p->hooks->source_known(name, p->hooks->userdata)) {
                        bad(p, field, "unknown source");
                        continue;
                }
                if (!(p->job->sources[p->job->nsources++] = strdup(name)))
                        p->oom = -ENOMEM;
        }
}

/* Each query source may accept fewer characters than JOB_QUERY_MAX. */
static void check_query_length(struct parse *p)
{
        const char *q = p->job->query;
        size_t n;

        if (!q || !p->hooks || !p->hooks->source_max_query_length)
                return;
        n = utf8_chars(q);
        for (size_t i = 0; i < p->job->nsources; i++) {
                int max = p->hooks->source_max_query_length(p->job->sources[i], p->hooks->userdata);
                if (max > 0 && n > (size_t)max)
                        bad(p, "query", "is %zu characters; source %s accepts at most %d", n,
                            p->job->sources[i], max);
        }
}

/* ---- urls -------------------------------------------------------------- */

static void url_error(struct parse *p, const char *field, int r)
{
        if (r == -EPROTONOSUPPORT)
                bad(p, field, "scheme must be http or https");
        else if (r == -E2BIG)
                bad(p, field, "must be at most %d bytes", JOB_URL_MAX);
        else if (r == -EINVAL)
                bad(p, field, "must be an absolute http(s) URL with a host");
        else
                p->oom = -ENOMEM;
}

/* Fill it from one urls[] entry: a string or {"url","source"?,"filename"?}. */
static void parse_url_entry(struct parse *p, size_t i, json_t *e, struct item *it)
{
        static const char *const allowed[] = {"url", "source", "filename", NULL};
        char prefix[40], field[48];
        json_t *url = e, *source = NULL, *filename = NULL;
        char *host = NULL;
        int r;

        snprintf(prefix, sizeof(prefix), "urls[%zu].", i);
        snprintf(field, sizeof(field), "urls[%zu]", i);
        if (json_is_object(e)) {
                check_keys(p, e, prefix, allowed);
                url = json_object_get(e, "url");
                source = json_object_get(e, "source");
                filename = json_object_get(e, "filename");
                snprintf(field, sizeof(field), "urls[%zu].url", i);
                if (!url) {
                        bad(p, field, "is required");
                        return;
                }
        } else if (!json_is_string(e)) {
                bad(p, field, "must be a URL string or an object with \"url\"");
                return;
        }
        if (!json_is_string(url)) {
                bad(p, field, "must be a string");
                return;
        }
        r = urlcheck_validate(json_string_value(url), source ? NULL : &host, &p->normalized[i]);
        if (r < 0) {
                url_error(p, field, r);
                return;
        }
        bool ok = true;
        if (source && (!json_is_string(source) || !job_request_source_name_ok(json_string_value(source)))) {
                snprintf(field, sizeof(field), "urls[%zu].source", i);
                bad(p, field, "must be a source name of 1..%d bytes without '/'", SOURCE_NAME_MAX);
                ok = false;
        } else if (source && p->hooks && p->hooks->source_known &&
                   p->hooks->source_known(json_string_value(source), p->hooks->userdata)) {
                /* one name, one circuit and one set of counters: a label may not borrow a query source's */
                snprintf(field, sizeof(field), "urls[%zu].source", i);
                bad(p, field, "names a configured query source; choose another label");
                ok = false;
        }
        size_t fnlen = json_is_string(filename) ? strlen(json_string_value(filename)) : 0;
        if (filename && (fnlen < 1 || fnlen > JOB_REQUEST_FILENAME_MAX)) {
                snprintf(field, sizeof(field), "urls[%zu].filename", i);
                bad(p, field, "must be a string of 1..%d bytes", JOB_REQUEST_FILENAME_MAX);
                ok = false;
        }
        if (!ok) {
                free(host);
                return;
        }
        it->url = strdup(json_string_value(url));
        it->source = host ? host : strdup(json_string_value(source));
        it->filename = filename ? strdup(json_string_value(filename)) : NULL;
        if (!it->url || !it->source || (filename && !it->filename))
                p->oom = -ENOMEM;
}

/* Skip each item whose URL (as libcurl normalizes it) repeats an earlier one. */
static void mark_duplicates(struct parse *p)
{
        struct strmap seen;

        if (strmap_init(&seen, p->nitems) < 0) {
                p->oom = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < p->nitems; i++) {
                int first = strmap_find_or_add(&seen, p->normalized[i], (int)i);
                if (first < 0)
                        continue;
                p->items[i].state = ITEM_SKIPPED;
                job_error_set(&p->items[i].error, "duplicate", "same URL as item %d", first);
                if (!p->items[i].error.code || !p->items[i].error.message)
                        p->oom = -ENOMEM;
        }
out:
        strmap_free(&seen);
}

static void parse_urls(struct parse *p, json_t *root)
{
        json_t *v = json_object_get(root, "urls"), *e;
        size_t i, n = json_array_size(v);

        if (!v)
                return;
        if (!json_is_array(v) || n < 1 || n > JOB_MAX_ITEMS) {
                bad(p, "urls", "must be an array of 1..%d URLs", JOB_MAX_ITEMS);
                return;
        }
        p->items = calloc(n, sizeof(*p->items));
        p->normalized = calloc(n, sizeof(char *));
        if (!p->items || !p->normalized) {
                p->oom = -ENOMEM;
                return;
        }
        p->nitems = n;
        json_array_foreach(v, i, e)
        {
                p->items[i].index = (int)i;
                p->items[i].state = ITEM_PENDING;
                parse_url_entry(p, i, e, &p->items[i]);
        }
}

/* ---- the request ------------------------------------------------------- */

static void parse_fields(struct parse *p, json_t *root)
{
        static const char *const allowed[] = {"query",         "sources",        "urls",
                                              "max",           "timeout",        "priority",
                                              "label",         "source_timeout", "request_timeout",
                                              "stall_timeout", "max_retries",    NULL};
        struct job *j = p->job;

        check_keys(p, root, "", allowed);
        parse_text(p, root, "query", 1, JOB_QUERY_MAX, &j->query);
        parse_sources(p, root);
        check_query_length(p);
        parse_urls(p, root);
        /* max: the URLs given (all of them), plus JOB_DEFAULT_MAX from a query */
        size_t dflt = p->nitems + (json_object_get(root, "query") ? JOB_DEFAULT_MAX : 0);
        j->max = dflt > JOB_MAX_MAX ? JOB_MAX_MAX : dflt < 1 ? 1 : (int)dflt;
        parse_int(p, root, "max", 1, JOB_MAX_MAX, &j->max);
        parse_seconds(p, root, "timeout", JOB_TIMEOUT_MIN, JOB_TIMEOUT_MAX, &j->timeout);
        parse_limits(p, root);
        parse_int(p, root, "priority", JOB_PRIORITY_MIN, JOB_PRIORITY_MAX, &j->priority);
        parse_text(p, root, "label", 0, JOB_LABEL_MAX, &j->label);

        bool has_query = json_object_get(root, "query"), has_sources = json_object_get(root, "sources");
        if (has_query && !has_sources)
                bad(p, "sources", "is required with query");
        if (has_sources && !has_query)
                bad(p, "query", "is required with sources");
        if (!has_query && !has_sources && !json_object_get(root, "urls"))
                bad(p, "urls", "give urls, or query with sources");
}

/* Decode body into *ret_root, or report why it is not a usable JSON object. */
static void load(struct parse *p, const char *body, size_t len, json_t **ret_root)
{
        json_error_t jerr;
        json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);

        if (!root)
                bad(p, "body", "invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        else if (!json_is_object(root))
                bad(p, "body", "must be a JSON object");
        else if (!depth_ok(root, 1))
                bad(p, "body", "nested deeper than %d levels", JOB_REQUEST_MAX_DEPTH);
        else {
                *ret_root = root;
                return;
        }
        json_decref(root);
}

int job_request_parse_with(const struct job_request_hooks *hooks, const char *body, size_t len,
                           struct job **ret_job, struct item **ret_items, size_t *ret_n, json_t **ret_errors)
{
        struct parse p = {.hooks = hooks};
        json_t *root = NULL;
        int r = -ENOMEM;

        p.errors = json_array();
        p.job = calloc(1, sizeof(*p.job));
        if (p.job)
                p.job->limits.max_retries = -1;
        if (!p.errors || !p.job)
                goto out;
        p.job->max = JOB_DEFAULT_MAX;
        p.job->label = strdup("");
        if (!p.job->label)
                goto out;
        load(&p, body, len, &root);
        if (root)
                parse_fields(&p, root);
        if (json_array_size(p.errors) == 0 && !p.oom)
                mark_duplicates(&p);
        if (p.oom)
                goto out;
        if (json_array_size(p.errors) > 0) {
                *ret_errors = p.errors;
                p.errors = NULL;
                r = -EINVAL;
                goto out;
        }
        *ret_job = p.job;
        *ret_items = p.items;
        *ret_n = p.nitems;
        p.job = NULL;
        p.items = NULL;
        r = 0;
out:
        for (size_t i = 0; p.normalized && i < p.nitems; i++)
                free(p.normalized[i]);
        free(p.normalized);
        items_free(p.items, p.nitems);
        job_free(p.job);
        json_decref(p.errors);
        json_decref(root);
        return r;
}

int job_request_parse(const char *body, size_t len, struct job **ret_job, struct item **ret_items,
                      size_t *ret_n, json_t **ret_errors)
{
        return job_request_parse_with(NULL, body, len, ret_job, ret_items, ret_n, ret_errors);
}

/* ---- counting ---------------------------------------------------------- */

static void count_state(struct progress *pr, enum item_state s)
{
        switch (s) {
        case ITEM_PENDING:
                pr->pending++;
                break;
        case ITEM_RUNNING:
                pr->running++;
                break;
        case ITEM_SUCCEEDED:
                pr->succeeded++;
                break;
        case ITEM_FAILED:
                pr->failed++;
                break;
        case ITEM_SKIPPED:
                pr->skipped++;
                break;
        default:
                break;
        }
}

/* Index of name in per (adding it when new), or -ENOMEM. */
static int source_slot(struct strmap *m, struct job_source *per, size_t *n, const char *name)
{
        int at = strmap_find_or_add(m, name, (int)*n);
        if (at >= 0)
                return at;
        per[*n].source = strdup(name);
        per[*n].state = SRC_PENDING;
        if (!per[*n].source)
                return -ENOMEM;
        return (int)(*n)++;
}

int job_request_tally(struct job *job, const struct item *items, size_t n)
{
        struct job_source *per = calloc(job->nsources + n + 1, sizeof(*per));
        struct progress pr = {.total = (int64_t)n};
        struct strmap m = {0};
        size_t nper = 0;
        int r = -ENOMEM;

        if (!per || strmap_init(&m, job->nsources + n) < 0)
                goto out;
        for (size_t i = 0; i < job->nsources; i++)
                if (source_slot(&m, per, &nper, job->sources[i]) < 0)
                        goto out;
        for (size_t i = 0; i < n; i++) {
                int at = source_slot(&m, per, &nper, items[i].source);
                if (at < 0)
                        goto out;
                struct progress one = {0};
                count_state(&one, items[i].state);
                count_state(&pr, items[i].state);
                per[at].items++;
                per[at].succeeded += one.succeeded;
                per[at].failed += one.failed;
                per[at].skipped += one.skipped;
                per[at].bytes += items[i].bytes;
                pr.bytes += items[i].bytes;
        }
        for (size_t i = 0; i < job->nper_source; i++)
                job_source_clear(&job->per_source[i]);
        free(job->per_source);
        job->per_source = per;
        job->nper_source = nper;
        job->progress = pr;
        per = NULL;
        r = 0;
out:
        for (size_t i = 0; per && i < nper; i++)
                job_source_clear(&per[i]);
        free(per);
        strmap_free(&m);
        return r;
}

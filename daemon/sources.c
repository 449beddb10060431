/* sources: loading the query-source descriptions (SOURCES_DIR/NAME.json)
 * into a sorted source_set, with an error naming the file and the field of
 * the first mistake. sources_request.c builds requests from a loaded
 * description and sources_list.c reads its listing pages; the token bucket
 * that paces listings is daemon/ratelimit.
 *
 * Pure: files are read, getenv() is consulted, nothing else; no network,
 * no logging, no clock.
 *
 * Invariants of a loaded struct source_def: every template was scanned
 * (sources_template_check), so it holds only known placeholders
 * (search_url: {query} at least once, plus {page} {per_page} {offset}
 * {start} {env:NAME}; header values: {env:NAME} and {env?:NAME}) and no
 * control character; search_url is printable ASCII starting http:// or
 * https:// with a literal host; items, url and total are valid JSON
 * Pointers; download_hosts are lower-case host names or "*.suffix" with
 * at least two labels in suffix, none twice; end_status holds distinct
 * 4xx statuses but 408 and 429; name equals the file stem. A source_set's
 * defs are sorted by name (strcmp), so lookups bisect. */
#include "autoconfig.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/fs.h"
#include "common/jsonptr.h"
#include "common/str.h"
#include "daemon/job.h"
#include "daemon/sources-internal.h"
#include "daemon/sources.h"

_Static_assert(SOURCES_POINTER_MAX == JSONPTR_MAX, "sources.h restates JSONPTR_MAX");

struct source_set {
        struct source_def **defs; /* sorted by name */
        size_t n;
};

/* ---- errors ----------------------------------------------------------- */

static int __attribute__((format(printf, 2, 3))) fail_msg(struct sources_error *e, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static void error_init(struct sources_error *e, const char *file, const char *field)
{
        snprintf(e->file, sizeof(e->file), "%s", file);
        snprintf(e->field, sizeof(e->field), "%s", field);
        e->message[0] = '\0';
}

/* ---- names and pointers ----------------------------------------------- */

static bool name_char(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == '-';
}

static bool name_valid(const char *s, size_t len)
{
        if (len < 1 || len > SOURCES_NAME_MAX || s[0] == '.')
                return false;
        for (size_t i = 0; i < len; i++)
                if (!name_char(s[i]))
                        return false;
        return true;
}

/* RFC 9110 tchar. */
static bool header_name_valid(const char *s)
{
        size_t len = strlen(s);

        if (len < 1 || len > SOURCES_HEADER_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!name_char(s[i]) && !strchr("!#$%&'*+^`|~", s[i]))
                        return false;
        return true;
}

/* ---- one file --------------------------------------------------------- */

static int json_to_int(json_t *v, int min, int max, int *out, struct sources_error *e)
{
        if (!json_is_integer(v))
                return fail_msg(e, "must be an integer, %d..%d", min, max);
        json_int_t i = json_integer_value(v);
        if (i < min || i > max)
                return fail_msg(e, "%lld is out of range %d..%d", (long long)i, min, max);
        *out = (int)i;
        return 0;
}

static int json_to_str(json_t *v, size_t max, char **out, struct sources_error *e)
{
        if (!json_is_string(v))
                return fail_msg(e, "must be a string");
        if (json_string_length(v) > max)
                return fail_msg(e, "is longer than %zu bytes", max);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return fail_msg(e, "must not contain NUL");
        char *s = strdup(json_string_value(v));
        if (!s)
                return -ENOMEM;
        free(*out);
        *out = s;
        return 0;
}

static int parse_name(struct source_def *d, json_t *v, struct sources_error *e)
{
        int r = json_to_str(v, SOURCES_NAME_MAX * 4, &d->name, e);

        if (r == 0 && !name_valid(d->name, strlen(d->name)))
                r = fail_msg(e, "'%s' must be 1..%d characters of A-Z a-z 0-9 . _ - not starting with '.'",
                             d->name, SOURCES_NAME_MAX);
        return r;
}

static int template_check(const char *t, unsigned allowed, unsigned *ret_seen, struct sources_error *e)
{
        if (sources_template_check(t, allowed, ret_seen, e->message, sizeof(e->message)) < 0)
                return -EINVAL;
        return 0;
}

/* http(s)://host... with a literal host; printable ASCII only. */
static int check_url_template(const char *t, struct sources_error *e)
{
        size_t skip;

        if (!strncasecmp(t, "https://", 8))
                skip = 8;
        else if (!strncasecmp(t, "http://", 7))
                skip = 7;
        else
                return fail_msg(e, "must start with http:// or https://");
        for (const unsigned char *p = (const unsigned char *)t; *p; p++)
                if (*p <= 0x20 || *p >= 0x7f)
                        return fail_msg(e, "must be printable ASCII without spaces (percent-encode others)");
        size_t host = strcspn(t + skip, "/?#");
        if (host == 0 || memchr(t + skip, '{', host))
                return fail_msg(e, "must name a literal host (no placeholder before the path)");
        return 0;
}

static int parse_search_url(struct source_def *d, json_t *v, struct sources_error *e)
{
        unsigned seen;
        int r = json_to_str(v, SOURCES_TEMPLATE_MAX, &d->search_url, e);

        if (r == 0)
                r = check_url_template(d->search_url, e);
        if (r == 0)
                r = template_check(d->search_url, PH_URL_ALL, &seen, e);
        if (r == 0 && !(seen & PH_BIT(PH_QUERY)))
                r = fail_msg(e, "must contain {query}");
        if (r == 0)
                d->paged = (seen & PH_PAGING) != 0;
        return r;
}

static int parse_per_page(struct source_def *d, json_t *v, struct sources_error *e)
{
        return json_to_int(v, 1, SOURCES_PER_PAGE_MAX, &d->per_page, e);
}

static int parse_pointer(json_t *v, char **out, struct sources_error *e)
{
        int r = json_to_str(v, SOURCES_POINTER_MAX, out, e);

        if (r == 0 && !jsonptr_valid(*out))
                r = fail_msg(e,
                             "'%s' is not a JSON Pointer (RFC 6901): \"\" or \"/a/b\", '~' only as ~0 or ~1",
                             *out);
        return r;
}

static int parse_items(struct source_def *d, json_t *v, struct sources_error *e)
{
        return parse_pointer(v, &d->items, e);
}

static int parse_url(struct source_def *d, json_t *v, struct sources_error *e)
{
        return parse_pointer(v, &d->url, e);
}

static int parse_allow_missing(struct source_def *d, json_t *v, struct sources_error *e)
{
        if (!json_is_boolean(v))
                return fail_msg(e, "must be true or false");
        d->allow_missing_items = json_is_true(v);
        return 0;
}

static int parse_max_connections(struct source_def *d, json_t *v, struct sources_error *e)
{
        return json_to_int(v, 1, SOURCES_CONNECTIONS_MAX, &d->max_connections, e);
}

static int parse_rps(struct source_def *d, json_t *v, struct sources_error *e)
{
        if (!json_is_number(v))
                return fail_msg(e, "must be a number, 0..%g (0: unlimited)", SOURCES_RPS_MAX);
        double x = json_number_value(v);
        if (!(x >= 0 && x <= SOURCES_RPS_MAX))
                return fail_msg(e, "%g is out of range 0..%g (0: unlimited)", x, SOURCES_RPS_MAX);
        d->requests_per_second = x;
        return 0;
}

static int parse_header(struct source_header *h, const char *name, json_t *v, struct sources_error *e)
{
        unsigned seen;
        int r;

        if (!header_name_valid(name))
                return fail_msg(e, "is not a header name (1..%d token characters)", SOURCES_HEADER_NAME_MAX);
        h->name = strdup(name);
        if (!h->name)
                return -ENOMEM;
        r = json_to_str(v, SOURCES_TEMPLATE_MAX, &h->value, e);
        if (r == 0 && sources_has_control(h->value))
                r = fail_msg(e, "must not contain control characters (CR, LF, ...)");
        if (r == 0)
                r = template_check(h->value, PH_HEADER_ALL, &seen, e);
        return r;
}

static int parse_headers(struct source_def *d, json_t *v, struct sources_error *e)
{
        const char *name;
        json_t *value;
        int r;

        if (!json_is_object(v))
                return fail_msg(e, "must be an object of header names to string values");
        if (json_object_size(v) > SOURCES_MAX_HEADERS)
                return fail_msg(e, "has more than %d headers", SOURCES_MAX_HEADERS);
        d->headers = calloc(json_object_size(v) + 1, sizeof(*d->headers));
        if (!d->headers)
                return -ENOMEM;
        json_object_foreach(v, name, value)
        {
                snprintf(e->field, sizeof(e->field), "headers.%s", name);
                for (size_t i = 0; i < d->nheaders; i++)
                        if (!strcasecmp(d->headers[i].name, name))
                                return fail_msg(e, "is given twice (header names ignore case)");
                r = parse_header(&d->headers[d->nheaders++], name, value, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_total(struct source_def *d, json_t *v, struct sources_error *e)
{
        return parse_pointer(v, &d->total, e);
}

static int parse_max_pages(struct source_def *d, json_t *v, struct sources_error *e)
{
        return json_to_int(v, 1, SOURCES_MAX_PAGES_MAX, &d->max_pages, e);
}

static int parse_max_results(struct source_def *d, json_t *v, struct sources_error *e)
{
        return json_to_int(v, 1, SOURCES_MAX_RESULTS_MAX, &d->max_results, e);
}

static int parse_max_query_length(struct source_def *d, json_t *v, struct sources_error *e)
{
        return json_to_int(v, 1, SOURCES_QUERY_LENGTH_MAX, &d->max_query_length, e);
}

/* A status that means "past the last page": a client error, but not one
 * that asks to wait and retry. */
static int check_end_status(json_int_t st, struct sources_error *e)
{
        if (st == 408 || st == 429)
                return fail_msg(e, "%lld asks to retry later; it cannot mean the end of the results",
                                (long long)st);
        if (st < 400 || st > 499)
                return fail_msg(e, "%lld is not a 4xx status (400..499)", (long long)st);
        return 0;
}

static int parse_end_status(struct source_def *d, json_t *v, struct sources_error *e)
{
        char field[sizeof(e->field)];
        size_t i;
        json_t *st;

        if (!json_is_array(v) || json_array_size(v) > SOURCES_END_STATUS_MAX)
                return fail_msg(e, "must be an array of at most %d HTTP statuses", SOURCES_END_STATUS_MAX);
        memcpy(field, e->field, sizeof(field));
        json_array_foreach(v, i, st)
        {
                snprintf(e->field, sizeof(e->field), "%s[%zu]", field, i);
                if (!json_is_integer(st))
                        return fail_msg(e, "must be an integer HTTP status, 400..499");
                int r = check_end_status(json_integer_value(st), e);
                if (r < 0)
                        return r;
                for (size_t k = 0; k < d->nend_status; k++)
                        if (d->end_status[k] == json_integer_value(st))
                                return fail_msg(e, "%d is given twice", d->end_status[k]);
                d->end_status[d->nend_status++] = (int)json_integer_value(st);
        }
        return 0;
}

/* One DNS label: 1..63 of A-Z a-z 0-9 -, not starting or ending with '-'. */
static bool label_valid(const char *s, size_t n)
{
        if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
                        return false;
        return true;
}

/* "host.example" or "*.example.org": labels, and for a wildcard at least
 * two of them after "*." whose last is not a number (so "*.org" and
 * "*.0.0.1" are refused). */
static bool host_pattern_valid(const char *s)
{
        bool wild = !strncmp(s, "*.", 2);
        const char *p = wild ? s + 2 : s, *last = p;
        int labels = 0;

        if (strlen(s) > SOURCES_HOST_MAX)
                return false;
        for (;;) {
                size_t n = strcspn(p, ".");
                if (!label_valid(p, n))
                        return false;
                labels++;
                last = p;
                if (!p[n])
                        break;
                p += n + 1;
        }
        return !wild || (labels >= 2 && strspn(last, "0123456789") != strlen(last));
}

static int parse_download_host(struct source_def *d, json_t *v, struct sources_error *e)
{
        char *host = NULL;
        int r = json_to_str(v, SOURCES_HOST_MAX, &host, e);

        if (r < 0)
                return r;
        if (!host_pattern_valid(host)) {
                r = fail_msg(e,
                             "'%.64s' must be a host name (labels of A-Z a-z 0-9 -) or *.domain.tld for "
                             "its subdomains",
                             host);
                goto fail;
        }
        for (char *c = host; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char)(*c - 'A' + 'a');
        for (size_t k = 0; k < d->ndownload_hosts; k++)
                if (!strcmp(d->download_hosts[k], host)) {
                        r = fail_msg(e, "'%s' is given twice", host);
                        goto fail;
                }
        d->download_hosts[d->ndownload_hosts++] = host;
        return 0;
fail:
        free(host);
        return r;
}

static int parse_download_hosts(struct source_def *d, json_t *v, struct sources_error *e)
{
        char field[sizeof(e->field)];
        size_t i;
        json_t *h;

        if (!json_is_array(v) || json_array_size(v) > SOURCES_DOWNLOAD_HOSTS_MAX)
                return fail_msg(e, "must be an array of at most %d host names", SOURCES_DOWNLOAD_HOSTS_MAX);
        d->download_hosts = calloc(json_array_size(v) + 1, sizeof(*d->download_hosts));
        if (!d->download_hosts)
                return -ENOMEM;
        memcpy(field, e->field, sizeof(field));
        json_array_foreach(v, i, h)
        {
                snprintf(e->field, sizeof(e->field), "%s[%zu]", field, i);
                int r = parse_download_host(d, h, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static const struct field {
        const char *key;
        int (*parse)(struct source_def *d, json_t *v, struct sources_error *e);
} fields[] = {
        {"name", parse_name},
        {"search_url", parse_search_url},
        {"per_page", parse_per_page},
        {"items", parse_items},
        {"url", parse_url},
        {"total", parse_total},
        {"allow_missing_items", parse_allow_missing},
        {"headers", parse_headers},
        {"max_connections", parse_max_connections},
        {"requests_per_second", parse_rps},
        {"max_pages", parse_max_pages},
        {"max_results", parse_max_results},
        {"end_status", parse_end_status},
        {"download_hosts", parse_download_hosts},
        {"max_query_length", parse_max_query_length},
};

static int parse_field(struct source_def *d, const char *key, json_t *v, struct sources_error *e)
{
        snprintf(e->field, sizeof(e->field), "%s", key);
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
                if (!strcmp(fields[i].key, key))
                        return fields[i].parse(d, v, e);
        return fail_msg(e, "unknown field");
}

/* Required fields, the name against the file stem, availability. */
static int finish_def(struct source_def *d, const char *stem, struct sources_error *e)
{
        static const char *const required[] = {"search_url", "items", "url"};
        char *const have[] = {d->search_url, d->items, d->url};
        char env[SOURCES_ENV_NAME_MAX + 1];
        bool missing;

        for (size_t i = 0; i < 3; i++) {
                snprintf(e->field, sizeof(e->field), "%s", required[i]);
                if (!have[i])
                        return fail_msg(e, "is required");
        }
        snprintf(e->field, sizeof(e->field), "name");
        if (!name_valid(stem, strlen(stem)))
                return fail_msg(
                        e, "file name '%s.json' is not a valid source name (1..%d of A-Z a-z 0-9 . _ -)",
                        stem, SOURCES_NAME_MAX);
        if (d->name && strcmp(d->name, stem))
                return fail_msg(e, "'%s' differs from the file name '%s.json'", d->name, stem);
        if (!d->name && !(d->name = strdup(stem)))
                return -ENOMEM;
        e->field[0] = '\0';
        missing = sources_template_env_missing(d->search_url, env);
        for (size_t i = 0; i < d->nheaders && !missing; i++)
                missing = sources_template_env_missing(d->headers[i].value, env);
        if (missing && asprintf(&d->unavailable_reason, "environment variable %s is not set", env) < 0)
                return -ENOMEM;
        d->available = !missing;
        return 0;
}

static int parse_def(struct source_def *d, const char *buf, size_t len, const char *stem,
                     struct sources_error *e)
{
        json_error_t jerr;
        json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
        const char *key;
        json_t *v;
        int r = 0;

        if (!root)
                return fail_msg(e, "not JSON: line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        if (!json_is_object(root)) {
                r = fail_msg(e, "must be a JSON object");
                goto out;
        }
        json_object_foreach(root, key, v)
        {
                r = parse_field(d, key, v, e);
                if (r < 0)
                        goto out;
        }
        r = finish_def(d, stem, e);
out:
        json_decref(root);
        return r;
}

static void source_def_free(struct source_def *d)
{
        if (!d)
                return;
        for (size_t i = 0; i < d->nheaders; i++) {
                free(d->headers[i].name);
                free(d->headers[i].value);
        }
        free(d->headers);
        free(d->name);
        free(d->path);
        free(d->search_url);
        free(d->items);
        free(d->url);
        free(d->total);
        for (size_t i = 0; i < d->ndownload_hosts; i++)
                free(d->download_hosts[i]);
        free(d->download_hosts);
        free(d->unavailable_reason);
        free(d);
}

/* "dir/NAME.json" -> "NAME" (malloc'd). */
static char *file_stem(const char *path)
{
        const char *base = strrchr(path, '/');
        size_t len;

        base = base ? base + 1 : path;
        len = strlen(base);
        if (len > 5 && !strcmp(base + len - 5, ".json"))
                len -= 5;
        return strndup(base, len);
}

static int load_file(const char *path, struct source_def **ret, struct sources_error *e)
{
        struct source_def *d = calloc(1, sizeof(*d));
        char *stem = file_stem(path);
        char *buf = NULL;
        size_t len;
        int r = -ENOMEM;

        error_init(e, path, "");
        if (!d || !stem || !(d->path = strdup(path)))
                goto fail;
        d->per_page = SOURCES_DEFAULT_PER_PAGE;
        r = fs_read_file(path, SOURCES_FILE_MAX, &buf, &len);
        if (r == -EFBIG)
                fail_msg(e, "file is larger than %d bytes", SOURCES_FILE_MAX);
        else if (r < 0)
                fail_msg(e, "cannot read: %s", strerror(-r));
        else
                r = parse_def(d, buf, len, stem, e);
        if (r < 0)
                goto fail;
        free(buf);
        free(stem);
        *ret = d;
        return 0;
fail:
        if (r == -ENOMEM)
                fail_msg(e, "out of memory");
        free(buf);
        free(stem);
        source_def_free(d);
        return r;
}

/* ---- the directory ---------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool is_source_file(int dfd, const char *name)
{
        size_t len = strlen(name);
        struct stat st;

        if (name[0] == '.' || len <= 5 || strcmp(name + len - 5, ".json"))
                return false;
        return fstatat(dfd, name, &st, 0) == 0 && S_ISREG(st.st_mode);
}

/* The stems of dir's source files, sorted. -ENOENT: no dir. */
static int list_stems(const char *dir, char ***ret, size_t *ret_n, struct sources_error *e)
{
        DIR *dp = opendir(dir);
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        int r = 0;

        if (!dp)
                return -errno;
        names = calloc(SOURCES_MAX_FILES, sizeof(*names));
        if (!names) {
                r = -ENOMEM;
                goto out;
        }
        while ((de = readdir(dp))) {
                if (!is_source_file(dirfd(dp), de->d_name))
                        continue;
                if (n == SOURCES_MAX_FILES) {
                        r = -E2BIG;
                        fail_msg(e, "more than %d source files", SOURCES_MAX_FILES);
                        goto out;
                }
                if (!(names[n++] = file_stem(de->d_name))) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        qsort(names, n, sizeof(*names), cmp_str);
out:
        closedir(dp);
        if (r < 0) {
                sources_strv_free(names, n);
                return r;
        }
        *ret = names;
        *ret_n = n;
        return 0;
}

static int load_all(const char *dir, struct source_set *set, char **stems, size_t n, struct sources_error *e)
{
        set->defs = calloc(n ? n : 1, sizeof(*set->defs));
        if (!set->defs)
                return -ENOMEM;
        for (; set->n < n; set->n++) {
                char *path;
                if (asprintf(&path, "%s/%s.json", dir, stems[set->n]) < 0)
                        return -ENOMEM;
                int r = load_file(path, &set->defs[set->n], e);
                free(path);
                if (r < 0)
                        return r;
        }
        return 0;
}

int sources_load_dir(const char *dir, struct source_set **ret, struct sources_error *ret_err)
{
        struct source_set *set = calloc(1, sizeof(*set));
        struct sources_error e = {.file = ""};
        char **stems = NULL;
        size_t n = 0;
        int r = -ENOMEM;

        error_init(&e, dir, "");
        if (!set)
                goto fail;
        r = list_stems(dir, &stems, &n, &e);
        if (r == -ENOENT) {
                *ret = set;
                return 0;
        }
        if (r < 0 && !e.message[0])
                fail_msg(&e, "cannot read the directory: %s", strerror(-r));
        if (r == 0)
                r = load_all(dir, set, stems, n, &e);
        sources_strv_free(stems, n);
        if (r < 0)
                goto fail;
        *ret = set;
        return 0;
fail:
        if (ret_err)
                *ret_err = e;
        sources_free(set);
        return r;
}

void sources_free(struct source_set *set)
{
        if (!set)
                return;
        for (size_t i = 0; i < set->n; i++)
                source_def_free(set->defs[i]);
        free(set->defs);
        free(set);
}

static int cmp_def(const void *key, const void *elem)
{
        return strcmp(key, (*(struct source_def *const *)elem)->name);
}

const struct source_def *sources_find(const struct source_set *set, const char *name)
{
        struct source_def **d;

        if (!set || !name || !set->n)
                return NULL;
        d = bsearch(name, set->defs, set->n, sizeof(*set->defs), cmp_def);
        return d ? *d : NULL;
}

size_t sources_count(const struct source_set *set) { return set ? set->n : 0; }

const struct source_def *sources_at(const struct source_set *set, size_t i)
{
        return set && i < set->n ? set->defs[i] : NULL;
}

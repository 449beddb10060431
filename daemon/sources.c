/* sources: query-source descriptions (SOURCES_DIR/NAME.json), their URL and
 * header templates, and the URLs taken from a listing page (through
 * common/jsonptr). The token bucket that paces listings is daemon/ratelimit.
 *
 * Pure: files are read, getenv() is consulted, nothing else; no network,
 * no logging, no clock. Errors go back in struct sources_error naming the
 * file and the field.
 *
 * Invariants of a loaded struct source_def: every template was scanned at
 * load, so it holds only known placeholders (search_url: {query} at least
 * once, plus {page} {per_page} {offset} {start} {env:NAME}; header values:
 * {env:NAME} only) and the expanders below need not re-check the syntax;
 * search_url is printable ASCII starting http:// or https:// with a literal
 * host; items and url are valid JSON Pointers; name equals the file stem.
 * A source_set's defs are sorted by name (strcmp), so lookups bisect.
 *
 * Percent-encoding is done here rather than with curl_easy_escape(): it is
 * a few lines, and keeps libcurl behind the engine and urlcheck. */
#include "autoconfig.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "daemon/sources.h"

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

static bool env_name_valid(const char *s, size_t len)
{
        if (len < 1 || len > SOURCES_ENV_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
                return false;
        for (size_t i = 0; i < len; i++)
                if (!name_char(s[i]) || s[i] == '.' || s[i] == '-')
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

/* ---- templates -------------------------------------------------------- */

enum placeholder { PH_QUERY, PH_PAGE, PH_PER_PAGE, PH_OFFSET, PH_START, PH_ENV };

#define PH_BIT(k)     (1u << (k))
#define PH_PAGING     (PH_BIT(PH_PAGE) | PH_BIT(PH_OFFSET) | PH_BIT(PH_START))
#define PH_URL_ALL    (PH_BIT(PH_QUERY) | PH_BIT(PH_PER_PAGE) | PH_PAGING | PH_BIT(PH_ENV))
#define PH_HEADER_ALL PH_BIT(PH_ENV)

struct ph {
        enum placeholder kind;
        size_t len;                         /* bytes of "{...}" */
        char env[SOURCES_ENV_NAME_MAX + 1]; /* PH_ENV: NAME */
};

/* The placeholder at p ('{'); -EINVAL when unterminated or unknown. */
static int ph_parse(const char *p, struct ph *ret)
{
        static const struct {
                const char *text;
                enum placeholder kind;
        } fixed[] = {
                {"query", PH_QUERY},   {"page", PH_PAGE},   {"per_page", PH_PER_PAGE},
                {"offset", PH_OFFSET}, {"start", PH_START},
        };
        const char *end = strchr(p, '}');
        const char *in = p + 1;
        size_t n;

        if (!end)
                return -EINVAL;
        n = (size_t)(end - in);
        ret->len = n + 2;
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
                if (strlen(fixed[i].text) == n && !memcmp(in, fixed[i].text, n)) {
                        ret->kind = fixed[i].kind;
                        return 0;
                }
        }
        if (n <= 4 || memcmp(in, "env:", 4) || !env_name_valid(in + 4, n - 4))
                return -EINVAL;
        ret->kind = PH_ENV;
        memcpy(ret->env, in + 4, n - 4);
        ret->env[n - 4] = '\0';
        return 0;
}

/* Scan template t; placeholders outside `allowed` and stray braces are
 * errors. *ret_seen: bits of the placeholders found. */
static int template_check(const char *t, unsigned allowed, unsigned *ret_seen, struct sources_error *e)
{
        unsigned seen = 0;
        struct ph ph;

        for (const char *p = t; *p; p++) {
                if (*p == '}')
                        return fail_msg(e, "'}' without '{' at byte %zu", (size_t)(p - t));
                if (*p != '{')
                        continue;
                if (ph_parse(p, &ph) < 0) {
                        const char *end = strchr(p, '}');
                        int n = end ? (int)(end - p + 1) : (int)strlen(p);
                        return fail_msg(e, "unknown placeholder '%.*s'", n > 64 ? 64 : n, p);
                }
                if (!(PH_BIT(ph.kind) & allowed))
                        return fail_msg(e, "placeholder '%.*s' is not allowed here", (int)ph.len, p);
                seen |= PH_BIT(ph.kind);
                p += ph.len - 1;
        }
        *ret_seen = seen;
        return 0;
}

/* Name of the first {env:NAME} of t that is unset or empty, into name. */
static bool template_env_missing(const char *t, char *name)
{
        struct ph ph;

        for (const char *p = strchr(t, '{'); p; p = strchr(p + ph.len, '{')) {
                if (ph_parse(p, &ph) < 0)
                        return false; /* not reached: checked at load */
                if (ph.kind != PH_ENV)
                        continue;
                const char *v = getenv(ph.env);
                if (!v || !*v) {
                        strcpy(name, ph.env);
                        return true;
                }
        }
        return false;
}

/* A growing NUL-terminated string of at most max bytes. */
struct sbuf {
        char *p;
        size_t len, cap, max;
};

static int sbuf_add(struct sbuf *b, const char *s, size_t n)
{
        if (n > b->max - b->len)
                return -E2BIG;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 128;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *p = realloc(b->p, cap);
                if (!p)
                        return -ENOMEM;
                b->p = p;
                b->cap = cap;
        }
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = '\0';
        return 0;
}

static int sbuf_add_str(struct sbuf *b, const char *s) { return sbuf_add(b, s, strlen(s)); }

static bool unreserved(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_' || c == '~';
}

/* RFC 3986 percent-encoding: everything but unreserved, as %XX. */
static int sbuf_add_encoded(struct sbuf *b, const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        int r = 0;

        for (const unsigned char *p = (const unsigned char *)s; *p && r == 0; p++) {
                char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
                r = unreserved(*p) ? sbuf_add(b, (const char *)p, 1) : sbuf_add(b, enc, 3);
        }
        return r;
}

static bool has_control(const char *s)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                        return true;
        return false;
}

/* Values of the URL placeholders; NULL for header templates. */
struct url_vars {
        const char *query;
        int64_t page, per_page;
        bool redact; /* {env:NAME} as "***" */
};

static int ph_expand(const struct ph *ph, const struct url_vars *v, struct sbuf *out)
{
        char num[32];
        const char *env;

        switch (ph->kind) {
        case PH_QUERY:
                return sbuf_add_encoded(out, v->query);
        case PH_ENV:
                if (v && v->redact)
                        return sbuf_add_str(out, "***");
                env = getenv(ph->env);
                if (!env || !*env)
                        return -ENOKEY;
                if (v)
                        return sbuf_add_encoded(out, env);
                return has_control(env) ? -EINVAL : sbuf_add_str(out, env);
        case PH_PAGE:
                snprintf(num, sizeof(num), "%lld", (long long)v->page);
                break;
        case PH_PER_PAGE:
                snprintf(num, sizeof(num), "%lld", (long long)v->per_page);
                break;
        case PH_OFFSET:
                snprintf(num, sizeof(num), "%lld", (long long)((v->page - 1) * v->per_page));
                break;
        case PH_START:
                snprintf(num, sizeof(num), "%lld", (long long)((v->page - 1) * v->per_page + 1));
                break;
        }
        return sbuf_add_str(out, num);
}

/* Expand a template checked at load. v == NULL: a header value. */
static int template_expand(const char *t, const struct url_vars *v, struct sbuf *out)
{
        const char *p = t;
        struct ph ph;
        int r = 0;

        while (*p && r == 0) {
                const char *brace = strchr(p, '{');
                size_t lit = brace ? (size_t)(brace - p) : strlen(p);

                r = sbuf_add(out, p, lit);
                p += lit;
                if (r < 0 || !brace)
                        break;
                r = ph_parse(p, &ph);
                if (r == 0) {
                        r = ph_expand(&ph, v, out);
                        p += ph.len;
                }
        }
        return r;
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
        if (r == 0 && has_control(h->value))
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

static const struct field {
        const char *key;
        int (*parse)(struct source_def *d, json_t *v, struct sources_error *e);
} fields[] = {
        {"name", parse_name},
        {"search_url", parse_search_url},
        {"per_page", parse_per_page},
        {"items", parse_items},
        {"url", parse_url},
        {"allow_missing_items", parse_allow_missing},
        {"headers", parse_headers},
        {"max_connections", parse_max_connections},
        {"requests_per_second", parse_rps},
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
        missing = template_env_missing(d->search_url, env);
        for (size_t i = 0; i < d->nheaders && !missing; i++)
                missing = template_env_missing(d->headers[i].value, env);
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

int sources_load_file(const char *path, struct source_def **ret, struct sources_error *ret_err)
{
        struct sources_error e = {.file = ""};
        int r = load_file(path, ret, &e);

        if (r < 0 && ret_err)
                *ret_err = e;
        return r;
}

void source_def_free(struct source_def *d)
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
        free(d->unavailable_reason);
        free(d);
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

/* ---- requests --------------------------------------------------------- */

static int build_url(const struct source_def *d, const char *query, int page, bool redact, char **ret)
{
        struct url_vars v = {.query = query, .page = page, .per_page = d->per_page, .redact = redact};
        struct sbuf b = {.max = JOB_URL_MAX};
        int r;

        if (!query || page < 1)
                return -EINVAL;
        r = template_expand(d->search_url, &v, &b);
        if (r < 0) {
                free(b.p);
                return r;
        }
        *ret = b.p;
        return 0;
}

int sources_build_url(const struct source_def *d, const char *query, int page, char **ret)
{
        return build_url(d, query, page, false, ret);
}

int sources_build_url_redacted(const struct source_def *d, const char *query, int page, char **ret)
{
        return build_url(d, query, page, true, ret);
}

static int build_header(const struct source_header *h, char **ret)
{
        struct sbuf b = {.max = SOURCES_HEADER_LINE_MAX};
        int r = sbuf_add_str(&b, h->name);

        if (r == 0)
                r = sbuf_add_str(&b, ": ");
        if (r == 0)
                r = template_expand(h->value, NULL, &b);
        if (r < 0) {
                free(b.p);
                return r;
        }
        *ret = b.p;
        return 0;
}

int sources_build_headers(const struct source_def *d, char ***ret, size_t *ret_n)
{
        char **v = NULL;
        size_t n = 0;
        int r = 0;

        if (d->nheaders && !(v = calloc(d->nheaders, sizeof(*v))))
                return -ENOMEM;
        for (; n < d->nheaders; n++) {
                r = build_header(&d->headers[n], &v[n]);
                if (r < 0)
                        goto fail;
        }
        *ret = v;
        *ret_n = n;
        return 0;
fail:
        sources_strv_free(v, n);
        return r;
}

void sources_strv_free(char **v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* ---- listing pages ---------------------------------------------------- */

/* http(s)://host..., no spaces or control characters, at most JOB_URL_MAX. */
static bool result_url_ok(const char *u, size_t len)
{
        size_t skip;

        if (len > JOB_URL_MAX)
                return false;
        if (!strncasecmp(u, "https://", 8))
                skip = 8;
        else if (!strncasecmp(u, "http://", 7))
                skip = 7;
        else
                return false;
        if (!u[skip] || strchr("/?#", u[skip]))
                return false;
        for (const unsigned char *p = (const unsigned char *)u; *p; p++)
                if (*p <= 0x20 || *p == 0x7f)
                        return false;
        return true;
}

/* Append result's URL to urls when it has an acceptable one. */
static int take_result(const struct source_def *d, json_t *result, char **urls, size_t *n)
{
        json_t *u = jsonptr_get(result, d->url);

        if (!json_is_string(u) || !result_url_ok(json_string_value(u), json_string_length(u)))
                return 0;
        if (!(urls[*n] = strdup(json_string_value(u))))
                return -ENOMEM;
        (*n)++;
        return 0;
}

static int take_results(const struct source_def *d, json_t *items, char **urls, size_t *n)
{
        const char *key;
        size_t i;
        json_t *v;
        int r = 0;

        if (json_is_array(items)) {
                json_array_foreach(items, i, v)
                {
                        if (r < 0 || *n == SOURCES_PAGE_ITEMS_MAX)
                                break;
                        r = take_result(d, v, urls, n);
                }
        } else {
                json_object_foreach(items, key, v)
                {
                        if (r < 0 || *n == SOURCES_PAGE_ITEMS_MAX)
                                break;
                        r = take_result(d, v, urls, n);
                }
        }
        return r;
}

int sources_parse_page(const struct source_def *d, const char *body, size_t len, char ***ret_urls,
                       size_t *ret_n)
{
        json_t *root, *items;
        char **urls = NULL;
        size_t n = 0, size;
        int r = -EBADMSG;

        if (len > SOURCES_PAGE_BODY_MAX)
                return -EFBIG;
        root = json_loadb(body, len, JSON_PRESERVE_ORDER, NULL);
        items = jsonptr_get(root, d->items);
        if (!root || (!items && !d->allow_missing_items))
                goto fail;
        if (items && !json_is_array(items) && !json_is_object(items))
                goto fail;
        size = !items ? 0 : json_is_array(items) ? json_array_size(items) : json_object_size(items);
        if (size > SOURCES_PAGE_ITEMS_MAX)
                size = SOURCES_PAGE_ITEMS_MAX;
        r = -ENOMEM;
        if (size && !(urls = calloc(size, sizeof(*urls))))
                goto fail;
        r = size ? take_results(d, items, urls, &n) : 0;
        if (r < 0)
                goto fail;
        json_decref(root);
        if (n == 0) {
                free(urls);
                urls = NULL;
        }
        *ret_urls = urls;
        *ret_n = n;
        return 0;
fail:
        sources_strv_free(urls, n);
        json_decref(root);
        return r;
}

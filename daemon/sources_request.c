/* sources_request: the templates of a query source and the requests made
 * from them: the listing URL of a page, the headers of a listing request,
 * and the headers of a download from one of the source's download_hosts.
 *
 * Pure: getenv() is read for secrets, nothing else; no network, no
 * logging, no clock.
 *
 * Invariants: sources.c scanned every template at load, so the expanders
 * need not re-check the syntax: search_url holds {query} and only
 * {page} {per_page} {offset} {start} {env:NAME}; header values hold only
 * {env:NAME} and {env?:NAME}. A secret is percent-encoded in a URL and
 * sent raw in a header, never with a control character in it, so it
 * cannot inject a header line. A page past sources_last_page() is never
 * built, and headers go to a download only when libcurl's own URL parser,
 * the one that picks the host the transfer connects to, names one of the
 * download_hosts.
 *
 * Percent-encoding is done here rather than with curl_easy_escape(): it is
 * a few lines; libcurl is used for its URL parser only. */
#include "autoconfig.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/job.h"
#include "daemon/sources-internal.h"
#include "daemon/sources.h"

/* ---- scanning templates ------------------------------------------------- */

static bool env_name_valid(const char *s, size_t len)
{
        if (len < 1 || len > SOURCES_ENV_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '_'))
                        return false;
        }
        return true;
}

int sources_ph_parse(const char *p, struct ph *ret)
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
        size_t n, skip;

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
        if (n > 4 && !memcmp(in, "env:", 4)) {
                ret->kind = PH_ENV;
                skip = 4;
        } else if (n > 5 && !memcmp(in, "env?:", 5)) {
                ret->kind = PH_ENV_OPT;
                skip = 5;
        } else
                return -EINVAL;
        if (!env_name_valid(in + skip, n - skip))
                return -EINVAL;
        memcpy(ret->env, in + skip, n - skip);
        ret->env[n - skip] = '\0';
        return 0;
}

int sources_template_check(const char *t, unsigned allowed, unsigned *ret_seen, char *why, size_t why_size)
{
        unsigned seen = 0;
        struct ph ph;

        for (const char *p = t; *p; p++) {
                if (*p == '}') {
                        snprintf(why, why_size, "'}' without '{' at byte %zu", (size_t)(p - t));
                        return -EINVAL;
                }
                if (*p != '{')
                        continue;
                if (sources_ph_parse(p, &ph) < 0) {
                        const char *end = strchr(p, '}');
                        int n = end ? (int)(end - p + 1) : (int)strlen(p);
                        snprintf(why, why_size, "unknown placeholder '%.*s'", n > 64 ? 64 : n, p);
                        return -EINVAL;
                }
                if (!(PH_BIT(ph.kind) & allowed)) {
                        if (ph.kind == PH_ENV_OPT)
                                snprintf(why, why_size,
                                         "placeholder '%.*s' is not allowed here: optional secrets "
                                         "({env?:NAME}) are for header values only",
                                         (int)ph.len, p);
                        else
                                snprintf(why, why_size, "placeholder '%.*s' is not allowed here",
                                         (int)ph.len, p);
                        return -EINVAL;
                }
                seen |= PH_BIT(ph.kind);
                p += ph.len - 1;
        }
        *ret_seen = seen;
        return 0;
}

static bool env_set(const char *name)
{
        const char *v = getenv(name);
        return v && *v;
}

bool sources_template_env_missing(const char *t, char *name)
{
        struct ph ph;

        for (const char *p = strchr(t, '{'); p; p = strchr(p + ph.len, '{')) {
                if (sources_ph_parse(p, &ph) < 0)
                        return false; /* not reached: checked at load */
                if (ph.kind == PH_ENV && !env_set(ph.env)) {
                        strcpy(name, ph.env);
                        return true;
                }
        }
        return false;
}

bool sources_has_control(const char *s)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                        return true;
        return false;
}

/* ---- expanding templates ------------------------------------------------ */

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

/* Values of the URL placeholders; NULL for header templates. */
struct url_vars {
        const char *query;
        int64_t page, per_page;
        bool redact; /* {env:NAME} as "***" */
};

/* A secret: -ENOKEY when a required one is unset or empty, -ENODATA when an
 * optional one is (its header is left out). */
static int expand_env(const struct ph *ph, const struct url_vars *v, struct sbuf *out)
{
        const char *env;

        if (v && v->redact)
                return sbuf_add_str(out, "***");
        env = getenv(ph->env);
        if (!env || !*env)
                return ph->kind == PH_ENV_OPT ? -ENODATA : -ENOKEY;
        if (v)
                return sbuf_add_encoded(out, env);
        return sources_has_control(env) ? -EINVAL : sbuf_add_str(out, env);
}

static int ph_expand(const struct ph *ph, const struct url_vars *v, struct sbuf *out)
{
        char num[32];

        switch (ph->kind) {
        case PH_QUERY:
                return sbuf_add_encoded(out, v->query);
        case PH_ENV:
        case PH_ENV_OPT:
                return expand_env(ph, v, out);
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
                r = sources_ph_parse(p, &ph);
                if (r == 0) {
                        r = ph_expand(&ph, v, out);
                        p += ph.len;
                }
        }
        return r;
}

/* ---- listing URLs ------------------------------------------------------- */

bool sources_query_fits(const struct source_def *d, const char *query)
{
        size_t chars = 0;

        if (d->max_query_length <= 0)
                return true;
        for (const unsigned char *p = (const unsigned char *)query; *p; p++)
                chars += (*p & 0xC0) != 0x80;
        return chars <= (size_t)d->max_query_length;
}

int sources_last_page(const struct source_def *d)
{
        int64_t last = INT_MAX;

        if (!d->paged)
                return 1;
        if (d->max_pages > 0 && d->max_pages < last)
                last = d->max_pages;
        if (d->max_results > 0) {
                /* the pages whose first position, (page-1)*per_page + 1, is at most max_results */
                int64_t by_results = ((int64_t)d->max_results + d->per_page - 1) / d->per_page;
                if (by_results < last)
                        last = by_results;
        }
        return (int)last;
}

static int build_url(const struct source_def *d, const char *query, int page, bool redact, char **ret)
{
        struct url_vars v = {.query = query, .page = page, .per_page = d->per_page, .redact = redact};
        struct sbuf b = {.max = JOB_URL_MAX};
        int r;

        if (!query || page < 1)
                return -EINVAL;
        if (page > sources_last_page(d))
                return -ERANGE;
        if (!sources_query_fits(d, query))
                return -EMSGSIZE;
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

/* ---- headers ------------------------------------------------------------ */

/* "Name: value" in *ret; -ENODATA: an optional secret is unset, leave the
 * header out. */
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
        for (size_t i = 0; i < d->nheaders; i++) {
                r = build_header(&d->headers[i], &v[n]);
                if (r == -ENODATA)
                        continue;
                if (r < 0)
                        goto fail;
                n++;
        }
        if (n == 0) {
                free(v);
                v = NULL;
        }
        *ret = v;
        *ret_n = n;
        return 0;
fail:
        sources_strv_free(v, n);
        return r;
}

/* The host libcurl connects to for url, lower-cased, without one trailing
 * dot: malloc'd in *ret. -EINVAL: not an http(s) URL libcurl parses. */
static int url_host(const char *url, char **ret)
{
        CURLU *u = curl_url();
        char *scheme = NULL, *host = NULL, *copy = NULL;
        int r = -EINVAL;

        if (!u)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            (strcmp(scheme, "http") && strcmp(scheme, "https")) ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
                goto out;
        copy = strdup(host);
        r = -ENOMEM;
        if (!copy)
                goto out;
        size_t len = strlen(copy);
        if (len > 1 && copy[len - 1] == '.')
                copy[len - 1] = '\0';
        for (char *p = copy; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');
        *ret = copy;
        r = 0;
out:
        curl_free(host);
        curl_free(scheme);
        curl_url_cleanup(u);
        return r;
}

/* pattern (lower-case, checked at load): "host" exactly, or "*.suffix":
 * any host ending in ".suffix" with at least one more label before it. */
static bool host_matches(const char *pattern, const char *host)
{
        if (strncmp(pattern, "*.", 2))
                return strcmp(pattern, host) == 0;
        size_t plen = strlen(pattern + 1), hlen = strlen(host); /* ".suffix" */
        return hlen > plen && strcmp(host + hlen - plen, pattern + 1) == 0 && host[hlen - plen - 1] != '.';
}

/* 1: url's host is one of d's download_hosts, 0: not, -errno: unparseable. */
static int download_host(const struct source_def *d, const char *url)
{
        char *host = NULL;
        bool match = false;

        if (!url)
                return -EINVAL;
        int r = url_host(url, &host);
        if (r < 0)
                return r;
        for (size_t i = 0; i < d->ndownload_hosts && !match; i++)
                match = host_matches(d->download_hosts[i], host);
        free(host);
        return match;
}

bool sources_is_download_host(const struct source_def *d, const char *url)
{
        return download_host(d, url) > 0;
}

/* The host of d's search_url: its "scheme://authority" part parsed on
 * its own, since the rest is a template (the loader made sure the host
 * is written out). */
static int search_host(const struct source_def *d, char **ret)
{
        const char *p = strstr(d->search_url, "://");
        char buf[SOURCES_TEMPLATE_MAX + 2];

        if (!p)
                return -EINVAL;
        size_t n = (size_t)(p + 3 - d->search_url) + strcspn(p + 3, "/?#");
        if (n + 2 > sizeof(buf))
                return -EINVAL; /* (the loader refuses a placeholder in the host) */
        memcpy(buf, d->search_url, n);
        memcpy(buf + n, "/", 2);
        return url_host(buf, ret);
}

bool sources_is_own_host(const struct source_def *d, const char *url)
{
        char *host = NULL, *own = NULL;
        bool match;

        if (download_host(d, url) > 0)
                return true;
        match = url_host(url, &host) == 0 && search_host(d, &own) == 0 && strcmp(host, own) == 0;
        free(host);
        free(own);
        return match;
}

int sources_download_headers(const struct source_def *d, const char *url, char ***ret, size_t *ret_n)
{
        int r = download_host(d, url);

        if (r < 0)
                return r;
        if (r > 0)
                return sources_build_headers(d, ret, ret_n);
        *ret = NULL;
        *ret_n = 0;
        return 0;
}

void sources_strv_free(char **v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

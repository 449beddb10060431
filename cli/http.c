/* http: the libcurl easy client behind every hauldctl command. One handle
 * is reset and reused per request, so its connection cache serves a run's
 * pages. Answers other than 2xx (problem documents) are always collected in
 * memory, up to HTTP_ANSWER_MAX; a 2xx body goes to the caller's callback
 * when one is given. Proxies from the environment are ignored: hauld is
 * reached directly (a reverse proxy in front of it is just its URL). A POST
 * carries application/json with its body, and no Content-Type without one. */
#include "autoconfig.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/http.h"

#define UNIX_PATH_MAX 108  /* sizeof(sockaddr_un.sun_path) */
#define HEADER_MAX    8192 /* bytes of one answer header value kept */

struct http_client {
        CURL *curl;
        char *base;        /* scheme://host[:port][/prefix], no trailing slash */
        char *unix_path;   /* the socket for unix:/PATH, else NULL */
        char *auth_header; /* "Authorization: Bearer ...", or NULL */
        char errbuf[CURL_ERROR_SIZE];
};

/* The state of one transfer. */
struct xfer {
        struct http_client *c;
        struct http_answer *a;
        http_data_fn on_data; /* NULL: keep every body in memory */
        void *userdata;
        size_t cap;     /* bytes allocated for a->body */
        bool too_large; /* the body passed HTTP_ANSWER_MAX */
        bool cancelled; /* on_data asked to stop */
};

int http_client_new(const char *url, const char *token, struct http_client **ret)
{
        struct http_client *c;
        bool is_unix = strncmp(url, "unix:", 5) == 0;
        size_t n;

        if (is_unix) {
                if (url[5] != '/' || strlen(url + 5) >= UNIX_PATH_MAX)
                        return -EINVAL;
        } else {
                size_t scheme = strncasecmp(url, "http://", 7) == 0    ? 7
                                : strncasecmp(url, "https://", 8) == 0 ? 8
                                                                       : 0;
                /* a host, and nothing curl would read as a second argument */
                if (scheme == 0 || url[scheme] == '\0' || url[scheme] == '/' || url[strcspn(url, " \t\r\n")])
                        return -EINVAL;
        }
        if (!(c = calloc(1, sizeof(*c))))
                return -ENOMEM;
        c->base = strdup(is_unix ? "http://localhost" : url);
        if (is_unix)
                c->unix_path = strdup(url + 5);
        if (!c->base || (is_unix && !c->unix_path))
                goto nomem;
        n = strlen(c->base);
        while (n > 0 && c->base[n - 1] == '/')
                c->base[--n] = '\0';
        if (token && asprintf(&c->auth_header, "Authorization: Bearer %s", token) < 0) {
                c->auth_header = NULL;
                goto nomem;
        }
        if (!(c->curl = curl_easy_init()))
                goto nomem;
        *ret = c;
        return 0;
nomem:
        http_client_free(c);
        return -ENOMEM;
}

void http_client_free(struct http_client *c)
{
        if (!c)
                return;
        if (c->curl)
                curl_easy_cleanup(c->curl);
        if (c->auth_header)
                explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        free(c->base);
        free(c->unix_path);
        free(c);
}

const char *http_error(const struct http_client *c) { return c->errbuf; }

const char *http_base(const struct http_client *c) { return c->unix_path ? c->unix_path : c->base; }

bool http_has_token(const struct http_client *c) { return c->auth_header != NULL; }

void http_answer_clear(struct http_answer *a)
{
        free(a->body);
        free(a->content_type);
        free(a->disposition);
        free(a->www_authenticate);
        memset(a, 0, sizeof(*a));
}

char *http_escape(const char *segment)
{
        char *e = curl_easy_escape(NULL, segment, 0);
        char *copy = e ? strdup(e) : NULL;
        curl_free(e);
        return copy;
}

/* ---- callbacks ---------------------------------------------------------- */

static int keep(struct xfer *x, const char *data, size_t n)
{
        struct http_answer *a = x->a;

        if (a->len + n > HTTP_ANSWER_MAX) {
                x->too_large = true;
                return -EFBIG;
        }
        if (a->len + n + 1 > x->cap) {
                size_t cap = x->cap ? x->cap : 4096;
                while (cap < a->len + n + 1)
                        cap *= 2;
                char *b = realloc(a->body, cap);
                if (!b)
                        return -ENOMEM;
                a->body = b;
                x->cap = cap;
        }
        memcpy(a->body + a->len, data, n);
        a->len += n;
        a->body[a->len] = '\0';
        return 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct xfer *x = userdata;
        size_t n = size * nmemb;
        long status = 0;

        curl_easy_getinfo(x->c->curl, CURLINFO_RESPONSE_CODE, &status);
        if (x->on_data && status >= 200 && status < 300) {
                if (x->on_data(data, n, x->userdata) < 0) {
                        x->cancelled = true;
                        return 0;
                }
                return n;
        }
        return keep(x, data, n) < 0 ? 0 : n;
}

/* The value of "Name: value" when line has that name, as a new string. */
static char *header_value(const char *line, size_t len, const char *name)
{
        size_t nlen = strlen(name);

        if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
                return NULL;
        const char *v = line + nlen + 1, *end = line + len;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
                end--;
        if ((size_t)(end - v) > HEADER_MAX)
                return NULL;
        return strndup(v, (size_t)(end - v));
}

static void set_header(char **field, char *value)
{
        if (!value)
                return;
        free(*field);
        *field = value;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata)
{
        struct xfer *x = userdata;
        struct http_answer *a = x->a;
        size_t n = size * nmemb;

        if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) { /* a new answer (after a 100 Continue) */
                free(a->content_type);
                free(a->disposition);
                free(a->www_authenticate);
                a->content_type = a->disposition = a->www_authenticate = NULL;
                return n;
        }
        set_header(&a->content_type, header_value(line, n, "Content-Type"));
        set_header(&a->disposition, header_value(line, n, "Content-Disposition"));
        set_header(&a->www_authenticate, header_value(line, n, "WWW-Authenticate"));
        return n;
}

/* ---- requests ------------------------------------------------------------- */

static int map_error(struct http_client *c, const struct xfer *x, CURLcode rc)
{
        curl_off_t connect_us = 0;

        /* on a unix socket curl's own message names "localhost port 80" */
        if (!c->errbuf[0] || c->unix_path)
                snprintf(c->errbuf, sizeof(c->errbuf), "%s", curl_easy_strerror(rc));
        switch (rc) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
                return -EHOSTUNREACH;
        case CURLE_OPERATION_TIMEDOUT:
                curl_easy_getinfo(c->curl, CURLINFO_CONNECT_TIME_T, &connect_us);
                return connect_us == 0 ? -EHOSTUNREACH : -EIO;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_WRITE_ERROR:
                if (x->cancelled)
                        return -ECANCELED;
                if (x->too_large) {
                        snprintf(c->errbuf, sizeof(c->errbuf), "the answer is larger than %d bytes",
                                 HTTP_ANSWER_MAX);
                        return -EFBIG;
                }
                return -ENOMEM;
        default:
                return -EIO;
        }
}

/* The request's headers. content_type: its Content-Type line; "Content-Type:"
 * (no value) keeps libcurl from sending its own. */
static struct curl_slist *header_list(struct http_client *c, const char *content_type,
                                      const char *const *extra)
{
        struct curl_slist *l = NULL, *t;
        const char *fixed[] = {"Accept: application/json, application/problem+json, text/event-stream, */*",
                               "Expect:", c->auth_header, content_type};

        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
                if (!fixed[i])
                        continue;
                if (!(t = curl_slist_append(l, fixed[i])))
                        goto nomem;
                l = t;
        }
        for (size_t i = 0; extra && extra[i]; i++) {
                if (!(t = curl_slist_append(l, extra[i])))
                        goto nomem;
                l = t;
        }
        return l;
nomem:
        curl_slist_free_all(l);
        return NULL;
}

static int perform(struct http_client *c, const char *method, const char *path, const char *json_body,
                   const char *const *headers, struct xfer *x)
{
        CURL *h = c->curl;
        char *url = NULL;
        bool post = strcmp(method, "POST") == 0;
        /* a POST without a body goes without a type: libcurl's default,
         * application/x-www-form-urlencoded, is one the daemon refuses from
         * web pages */
        const char *ctype = json_body ? "Content-Type: application/json" : post ? "Content-Type:" : NULL;
        struct curl_slist *hl = header_list(c, ctype, headers);
        int r = -ENOMEM;

        memset(x->a, 0, sizeof(*x->a));
        c->errbuf[0] = '\0';
        if (!hl || asprintf(&url, "%s%s", c->base, path) < 0) {
                url = NULL;
                goto out;
        }
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_PROXY, "");
        if (c->unix_path)
                curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "hauldctl/" PACKAGE_VERSION);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)HTTP_CONNECT_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
        if (x->on_data) {
                curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
                curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)HTTP_STALL_TIMEOUT_S);
        } else
                curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)HTTP_REQUEST_TIMEOUT_S);
        if (post) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, json_body ? json_body : "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                                 (curl_off_t)(json_body ? strlen(json_body) : 0));
        } else if (strcmp(method, "GET") != 0)
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        CURLcode rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->a->status);
        r = rc == CURLE_OK ? 0 : map_error(c, x, rc);
out:
        curl_slist_free_all(hl);
        free(url);
        if (r < 0)
                http_answer_clear(x->a);
        return r;
}

int http_request(struct http_client *c, const char *method, const char *path, const char *json_body,
                 const char *const *headers, struct http_answer *ret)
{
        struct xfer x = {.c = c, .a = ret};
        return perform(c, method, path, json_body, headers, &x);
}

int http_stream(struct http_client *c, const char *path, const char *const *headers, http_data_fn on_data,
                void *userdata, struct http_answer *ret)
{
        struct xfer x = {.c = c, .a = ret, .on_data = on_data, .userdata = userdata};
        return perform(c, "GET", path, NULL, headers, &x);
}

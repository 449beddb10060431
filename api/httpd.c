/* httpd: the HTTP API's front door. It owns the listening socket (its own
 * for LISTEN, or one handed over by systemd), the microhttpd daemon, the
 * route table, the guards every request passes in a fixed order and the
 * request body buffer. The handlers (handlers.h) answer through reply.c.
 *
 * A request goes through, in order: framing (400: one way to read the
 * body's length), Host check (421), CORS preflight for OPTIONS, origin
 * (403: a request that changes something from another site's page) and
 * form-like bodies (415: the types a page may POST anywhere without a
 * preflight), bearer token (401), route (404) and method (405), draining
 * (503), body size (413) and type (415); then, once the body is in, the
 * handler. Each guard answers with a problem+json; CORS headers go on every
 * answer to a listed origin. Before any of that, conns.c gives the request
 * API_HEADER_TIMEOUT to deliver its headers, and microhttpd caps
 * connections in all (API_MAX_CONNECTIONS) and per address
 * (API_MAX_CONNECTIONS_PER_IP).
 *
 * Invariants: a request is touched only by the pool thread running its
 * connection; the body buffer never grows past MAX_REQUEST_BODY + 1 bytes. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/conns.h"
#include "api/handlers.h"
#include "api/httpd.h"
#include "api/jobcache.h"
#include "api/reply.h"
#include "daemon/intake.h"
#include "common/log.h"
#include "common/str.h"

#define HTTPD_CONNECTION_TIMEOUT_S 30          /* idle seconds before a connection is closed */
#define HTTPD_CONNECTION_MEMORY    (32 * 1024) /* bytes of request headers and buffers per connection */
#define HTTPD_LISTEN_BACKLOG       128
#define HTTPD_DISCARD_MAX          (16 << 20) /* bytes of an oversized chunked body read before hanging up */
#define HTTPD_NOFILE_RESERVE       64         /* descriptors kept for the store, files and transfers */
#define CORS_ALLOW_HEADERS         "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
#define CORS_MAX_AGE               "600"
#define ALLOW_MAX                  64 /* bytes of an Allow header value */

typedef enum MHD_Result (*httpd_handler)(struct request *rq);

struct route {
        const char *method;  /* "GET" also answers HEAD */
        const char *pattern; /* "/v1/jobs/{}/items": "{}" is one non-empty path segment */
        httpd_handler handler;
        unsigned flags; /* ROUTE_* */
};
#define ROUTE_PUBLIC    1u /* no token needed */
#define ROUTE_JSON_BODY 2u /* takes an application/json body */

/* One request as the front door keeps it: what handlers see, and the
 * route and upload state they do not. */
struct pending {
        struct request rq; /* handed to the handler */
        const struct route *route;
        size_t body_cap;  /* bytes allocated for rq.body */
        size_t discarded; /* bytes read past max_request_body */
        bool too_large;
};

static const struct route routes[] = {
        {"GET", "/", dashboard_page, ROUTE_PUBLIC},
        {"GET", "/app.js", dashboard_script, ROUTE_PUBLIC},
        {"GET", "/app.css", dashboard_style, ROUTE_PUBLIC},
        {"GET", "/favicon.svg", dashboard_icon, ROUTE_PUBLIC},
        {"GET", "/v1/openapi.yaml", dashboard_openapi, ROUTE_PUBLIC},
        {"GET", "/v1/health", system_health, ROUTE_PUBLIC},
        {"GET", "/v1/config", system_config, 0},
        {"GET", "/v1/stats", system_stats, 0},
        {"POST", "/v1/stats/reset", system_stats_reset, 0},
        {"GET", "/v1/circuits", system_circuits, 0},
        {"POST", "/v1/circuits/{}/reset", system_circuit_reset, 0},
        {"GET", "/metrics", system_metrics, 0},
        {"GET", "/v1/sources", system_sources, 0},
        {"GET", "/v1/events", sse_all, 0},
        {"GET", "/v1/jobs/{}/events", sse_job, 0},
        {"POST", "/v1/jobs", jobs_create, ROUTE_JSON_BODY},
        {"GET", "/v1/jobs", jobs_list, 0},
        {"GET", "/v1/jobs/{}", jobs_get, 0},
        {"DELETE", "/v1/jobs/{}", jobs_delete, 0},
        {"GET", "/v1/jobs/{}/items", jobs_items, 0},
        {"GET", "/v1/jobs/{}/sources", jobs_sources, 0},
        {"POST", "/v1/jobs/{}/cancel", jobs_cancel, 0},
        {"POST", "/v1/jobs/{}/retry", jobs_retry, 0},
        {"POST", "/v1/jobs/{}/pause", jobs_pause, 0},
        {"POST", "/v1/jobs/{}/resume", jobs_resume, 0},
        {"GET", "/v1/jobs/{}/items/{}/file", files_item, 0},
        {"GET", "/v1/jobs/{}/archive", files_archive, 0},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* ---- listening ---------------------------------------------------------- */

static int listen_unix(struct httpd *h, const char *path, int *ret_fd)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stat st;
        int fd = -1, r;

        if (strlen(path) >= sizeof(sa.sun_path) || path[0] != '/')
                return -EINVAL;
        strcpy(sa.sun_path, path);
        /* a socket left by an earlier run: reuse the name unless someone answers on it */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        r = -EADDRINUSE;
                        goto fail;
                }
                close(fd);
                unlink(path);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                r = -errno;
                goto fail;
        }
        if (!(h->unix_path = strdup(path))) {
                r = -ENOMEM;
                goto fail;
        }
        if (chmod(path, 0660) < 0 || listen(fd, HTTPD_LISTEN_BACKLOG) < 0) {
                r = -errno;
                goto fail;
        }
        *ret_fd = fd;
        return 0;
fail:
        if (fd >= 0)
                close(fd);
        return r;
}

/* "host:port" or "[v6]:port" into host and port buffers. */
static int split_host_port(const char *spec, char *host, size_t hsize, char *port, size_t psize)
{
        const char *colon, *h = spec;
        size_t hlen;

        if (spec[0] == '[') {
                const char *end = strchr(spec, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                h = spec + 1;
                hlen = (size_t)(end - h);
                colon = end + 1;
        } else {
                colon = strrchr(spec, ':');
                if (!colon || strchr(spec, ':') != colon)
                        return -EINVAL;
                hlen = (size_t)(colon - spec);
        }
        if (hlen == 0 || hlen >= hsize || strlen(colon + 1) == 0 || strlen(colon + 1) >= psize ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1) || atoi(colon + 1) > 65535)
                return -EINVAL;
        memcpy(host, h, hlen);
        host[hlen] = '\0';
        strcpy(port, colon + 1);
        return 0;
}

static int listen_tcp(const char *spec, int *ret_fd)
{
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        char host[256], port[8];
        int fd = -1, r, one = 1;

        r = split_host_port(spec, host, sizeof(host), port, sizeof(port));
        if (r < 0)
                return r;
        if (getaddrinfo(host, port, &hints, &ai) != 0)
                return -EADDRNOTAVAIL;
        r = -EADDRNOTAVAIL;
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
                fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
                if (fd < 0)
                        continue;
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (a->ai_family == AF_INET6)
                        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
                if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, HTTPD_LISTEN_BACKLOG) == 0) {
                        *ret_fd = fd;
                        r = 0;
                        break;
                }
                r = -errno;
                close(fd);
        }
        freeaddrinfo(ai);
        return r;
}

static int socket_port(int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return 0;
        if (ss.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if (ss.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        return 0;
}

/* ---- how far the listener reaches ------------------------------------------ */

static bool v4_is_loopback(const struct in_addr *a) { return (ntohl(a->s_addr) >> 24) == 127; }

/* ::1, or 127.0.0.0/8 mapped into IPv6. */
static bool v6_is_loopback(const struct in6_addr *a)
{
        struct in_addr v4;

        if (IN6_IS_ADDR_LOOPBACK(a))
                return true;
        if (!IN6_IS_ADDR_V4MAPPED(a))
                return false;
        memcpy(&v4, a->s6_addr + 12, sizeof(v4));
        return v4_is_loopback(&v4);
}

/* LISTEN as text: a unix socket, or a host part that is a loopback
 * address or "localhost", parsed as listen_tcp() parses it. */
static bool listen_text_is_local(const char *listen)
{
        char host[256], port[8];
        struct in_addr a4;
        struct in6_addr a6;

        if (str_startswith(listen, "unix:"))
                return true;
        if (split_host_port(listen, host, sizeof(host), port, sizeof(port)) < 0)
                return false;
        if (listen[0] == '[')
                return inet_pton(AF_INET6, host, &a6) == 1 && v6_is_loopback(&a6);
        if (inet_pton(AF_INET, host, &a4) == 1)
                return v4_is_loopback(&a4);
        return strcasecmp(host, "localhost") == 0;
}

/* A bound socket (from systemd): judged by its address. */
static bool socket_is_local(int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return false;
        if (ss.ss_family == AF_UNIX)
                return true;
        if (ss.ss_family == AF_INET)
                return v4_is_loopback(&((struct sockaddr_in *)&ss)->sin_addr);
        if (ss.ss_family == AF_INET6)
                return v6_is_loopback(&((struct sockaddr_in6 *)&ss)->sin6_addr);
        return false;
}

bool httpd_listener_is_local(const char *listen, int fd)
{
        return fd >= 0 ? socket_is_local(fd) : listen_text_is_local(listen);
}

/* ---- guards -------------------------------------------------------------- */

static bool name_is_loopback(const char *name)
{
        struct in_addr a4;
        char buf[256];
        size_t n = strlen(name);

        if (n == 0 || n >= sizeof(buf))
                return false;
        memcpy(buf, name, n + 1);
        if (buf[n - 1] == '.')
                buf[--n] = '\0';
        if (strcasecmp(buf, "localhost") == 0)
                return true;
        if (n > 10 && strcasecmp(buf + n - 10, ".localhost") == 0)
                return true;
        if (inet_pton(AF_INET, buf, &a4) == 1)
                return v4_is_loopback(&a4);
        return false;
}

/* Is the Host header this daemon's: a loopback name or address with an
 * optional port, or listed in ALLOWED_HOSTS (by name, or name:port)? */
static bool host_ok(const struct config *cfg, const char *host)
{
        char name[256];
        const char *port;
        size_t n;

        if (!host || !*host)
                return false;
        if (host[0] == '[') {
                const char *end = strchr(host, ']');
                if (!end || (size_t)(end - host - 1) >= sizeof(name))
                        return false;
                n = (size_t)(end - host - 1);
                port = end + 1;
        } else {
                port = strchr(host, ':');
                n = port ? (size_t)(port - host) : strlen(host);
                if (!port)
                        port = host + n;
                if (n >= sizeof(name))
                        return false;
        }
        if (*port && (port[0] != ':' || strspn(port + 1, "0123456789") != strlen(port + 1)))
                return false;
        memcpy(name, host[0] == '[' ? host + 1 : host, n);
        name[n] = '\0';
        if (host[0] == '[') {
                struct in6_addr a6;
                if (inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6))
                        return true;
        } else if (name_is_loopback(name))
                return true;
        const char *list = cfg->allowed_hosts;
        return list && (str_list_contains(list, name) || str_list_contains(list, host));
}

/* "Bearer <token>" matching token, compared in constant time: the work
 * depends on the token's length only, never on how much of the token, or
 * of its length, a guess got right. */
static bool token_ok(const char *token, const char *authz)
{
        if (!authz || strncasecmp(authz, "Bearer ", 7) != 0)
                return false;
        const char *given = authz + 7;
        while (*given == ' ')
                given++;
        size_t n = strlen(given), m = strlen(token);
        unsigned char diff = n != m;
        for (size_t i = 0; i < m; i++)
                diff |= (unsigned char)token[i] ^ (unsigned char)(i < n ? given[i] : 0);
        return diff == 0;
}

/* application/json, with optional parameters (charset). */
static bool is_json_type(const char *ct)
{
        static const char json[] = "application/json";
        if (!ct)
                return false;
        ct += strspn(ct, " \t");
        if (strncasecmp(ct, json, sizeof(json) - 1) != 0)
                return false;
        ct += sizeof(json) - 1;
        ct += strspn(ct, " \t");
        return *ct == '\0' || *ct == ';';
}

/* The bare type of a Content-Type value, compared without case. */
static bool type_is(const char *ct, const char *type)
{
        size_t n = strlen(type);

        ct += strspn(ct, " \t");
        if (strncasecmp(ct, type, n) != 0)
                return false;
        ct += n;
        ct += strspn(ct, " \t");
        return *ct == '\0' || *ct == ';';
}

/* A type any web page may POST to any site without a CORS preflight. */
static bool is_form_type(const char *ct)
{
        return ct && (type_is(ct, "text/plain") || type_is(ct, "application/x-www-form-urlencoded") ||
                      type_is(ct, "multipart/form-data"));
}

static bool changes_state(const char *method)
{
        return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "OPTIONS") != 0;
}

/* Is origin this daemon's own page, scheme://<Host>? https too: a proxy in
 * front may add TLS, and only whoever serves that host can send it. */
static bool same_origin(const char *origin, const char *host)
{
        if (!host)
                return false;
        if (strncasecmp(origin, "http://", 7) == 0)
                origin += 7;
        else if (strncasecmp(origin, "https://", 8) == 0)
                origin += 8;
        else
                return false;
        return strcasecmp(origin, host) == 0;
}

/* ---- framing ----------------------------------------------------------------- */

struct framing {
        unsigned lengths;    /* Content-Length headers */
        unsigned encodings;  /* Transfer-Encoding headers */
        const char *length;  /* the first Content-Length */
        const char *coding;  /* the first Transfer-Encoding */
        bool lengths_differ; /* two Content-Length values are not the same */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
        struct framing *f = cls;

        (void)kind;
        if (!key || !value)
                return MHD_YES;
        if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
                if (f->lengths++ == 0)
                        f->length = value;
                else if (strcmp(f->length, value) != 0)
                        f->lengths_differ = true;
        } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0 && f->encodings++ == 0)
                f->coding = value;
        return MHD_YES;
}

/* Why the body's length could be read more than one way (a proxy in front
 * and this server would cut the stream into different requests), or NULL. */
static const char *framing_problem(struct request *rq)
{
        struct framing f = {0};

        MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, count_framing, &f);
        if (f.lengths_differ)
                return "Content-Length headers that disagree";
        if (f.lengths > 0 && f.encodings > 0)
                return "both Content-Length and Transfer-Encoding";
        if (f.encodings > 1)
                return "more than one Transfer-Encoding header";
        if (f.encodings == 1 && !type_is(f.coding, "chunked"))
                return "a Transfer-Encoding other than chunked";
        return NULL;
}

/* ---- routes ---------------------------------------------------------------- */

struct span {
        const char *p;
        size_t len;
};

/* Does path fit pattern? Fills params with the "{}" segments. */
static bool path_match(const char *pattern, const char *path, struct span params[HTTPD_MAX_PARAMS])
{
        size_t np = 0;

        memset(params, 0, HTTPD_MAX_PARAMS * sizeof(*params));
        while (*pattern && *path) {
                if (pattern[0] == '{' && pattern[1] == '}') {
                        size_t len = strcspn(path, "/");
                        if (len == 0 || np == HTTPD_MAX_PARAMS)
                                return false;
                        params[np++] = (struct span){path, len};
                        path += len;
                        pattern += 2;
                } else if (*pattern++ != *path++)
                        return false;
        }
        return *pattern == '\0' && *path == '\0';
}

static bool method_fits(const char *route_method, const char *method)
{
        return strcmp(route_method, method) == 0 ||
               (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

/* The route for (method, url), or NULL; *ret_known tells whether any route
 * has this path, allow lists the methods it has. */
static const struct route *route_find(struct request *rq, const char *url, bool *ret_known, char *allow,
                                      size_t allow_size)
{
        const struct route *found = NULL;
        struct span params[HTTPD_MAX_PARAMS], fparams[HTTPD_MAX_PARAMS] = {{0}};

        *ret_known = false;
        snprintf(allow, allow_size, "OPTIONS");
        for (size_t i = 0; i < NROUTES; i++) {
                if (!path_match(routes[i].pattern, url, params))
                        continue;
                *ret_known = true;
                size_t n = strlen(allow);
                snprintf(allow + n, allow_size - n, ", %s%s", routes[i].method,
                         strcmp(routes[i].method, "GET") == 0 ? ", HEAD" : "");
                if (!found && method_fits(routes[i].method, rq->method)) {
                        found = &routes[i];
                        memcpy(fparams, params, sizeof(params));
                }
        }
        for (size_t i = 0; found && i < HTTPD_MAX_PARAMS; i++)
                if (fparams[i].p && !(rq->params[i] = strndup(fparams[i].p, fparams[i].len)))
                        return NULL;
        return found;
}

/* ---- requests ------------------------------------------------------------------ */

static const char *header(struct request *rq, const char *name)
{
        return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result preflight(struct request *rq, const char *allow)
{
        if (rq->origin && header(rq, "Access-Control-Request-Method")) {
                reply_header(rq, "Access-Control-Allow-Methods", allow);
                reply_header(rq, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
                reply_header(rq, "Access-Control-Max-Age", CORS_MAX_AGE);
        } else
                reply_header(rq, MHD_HTTP_HEADER_ALLOW, allow);
        return reply_empty(rq, MHD_HTTP_NO_CONTENT);
}

static bool needs_token(const struct pending *p)
{
        const char *token = p->rq.h->cfg->api_token;
        return token && *token && !(p->route && (p->route->flags & ROUTE_PUBLIC));
}

/* A form-like body nobody but a browser page sends: libcurl's default for
 * an empty POST (curl -d '', hauldctl) is an empty urlencoded one, let
 * through when no Origin says a page sent it. */
static bool form_body_refused(struct request *rq, const char *origin)
{
        const char *ct = header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);
        const char *clen = header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);

        if (!is_form_type(ct))
                return false;
        return origin || !type_is(ct, "application/x-www-form-urlencoded") || !clen ||
               strcmp(clen, "0") != 0;
}

/* The guards against other sites' pages: a request that changes something
 * must come from no page (no Origin), this daemon's own or a CORS_ORIGINS
 * one, and must not carry a body a page may send anywhere unasked. */
static enum MHD_Result cross_site(struct request *rq, const char *origin)
{
        const char *host = header(rq, MHD_HTTP_HEADER_HOST);

        if (!changes_state(rq->method))
                return MHD_YES;
        if (origin && !rq->origin && !same_origin(origin, host))
                return reply_problem(rq, 403, NULL,
                                     "a request from the page of another origin may not change anything; "
                                     "list the origin in CORS_ORIGINS to allow it");
        if (form_body_refused(rq, origin))
                return reply_problem(
                        rq, 415, NULL,
                        "a %s body may come from any web page; send application/json, or no body",
                        header(rq, MHD_HTTP_HEADER_CONTENT_TYPE));
        return MHD_YES;
}

/* The guards that need only the headers. Answers, or leaves p for the body. */
static enum MHD_Result admit(struct pending *p, const char *url)
{
        struct request *rq = &p->rq;
        const struct config *cfg = rq->h->cfg;
        char allow[ALLOW_MAX];
        const char *why;
        bool known;

        if ((why = framing_problem(rq))) {
                reply_header(rq, MHD_HTTP_HEADER_CONNECTION, "close");
                return reply_problem(rq, 400, NULL, "the request's length is ambiguous: %s", why);
        }
        const char *origin = header(rq, "Origin");
        if (origin && cfg->cors_origins && str_list_contains(cfg->cors_origins, origin))
                rq->origin = origin;
        if (!host_ok(cfg, header(rq, MHD_HTTP_HEADER_HOST)))
                return reply_problem(rq, 421, NULL, "this Host is not served here");
        p->route = route_find(rq, url, &known, allow, sizeof(allow));
        rq->pattern = p->route ? p->route->pattern : NULL;
        if (strcmp(rq->method, "OPTIONS") == 0)
                return known ? preflight(rq, allow) : reply_problem(rq, 404, NULL, "no such route");
        enum MHD_Result ret = cross_site(rq, origin);
        if (ret != MHD_YES || rq->answered)
                return ret;
        if (needs_token(p) && !token_ok(cfg->api_token, header(rq, MHD_HTTP_HEADER_AUTHORIZATION)))
                return reply_problem(rq, 401, NULL, "a valid bearer token is required");
        if (!known)
                return reply_problem(rq, 404, NULL, "no such route");
        if (!p->route) {
                reply_header(rq, MHD_HTTP_HEADER_ALLOW, allow);
                return reply_problem(rq, 405, NULL, "%s is not allowed here", rq->method);
        }
        if (atomic_load(&rq->h->draining) && strcmp(p->route->method, "GET") != 0)
                return reply_problem(rq, 503, NULL, "shutting down");
        const char *clen = header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (clen && strtoull(clen, NULL, 10) > (unsigned long long)cfg->max_request_body)
                return reply_problem(rq, 413, NULL, "the body is over %lld bytes",
                                     (long long)cfg->max_request_body);
        if ((p->route->flags & ROUTE_JSON_BODY) && !is_json_type(header(rq, MHD_HTTP_HEADER_CONTENT_TYPE)))
                return reply_problem(rq, 415, NULL, "the body must be application/json");
        return MHD_YES;
}

/* Keep the upload up to MAX_REQUEST_BODY; past it, count and drop. */
static enum MHD_Result take_upload(struct pending *p, const char *data, size_t *size)
{
        struct request *rq = &p->rq;
        size_t n = *size, max = (size_t)rq->h->cfg->max_request_body;

        *size = 0;
        if (p->too_large || n > max - rq->body_len) {
                p->too_large = true;
                p->discarded += n;
                return p->discarded > HTTPD_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (rq->body_len + n + 1 > p->body_cap) {
                size_t cap = p->body_cap ? p->body_cap : 4096;
                while (cap < rq->body_len + n + 1)
                        cap *= 2;
                if (cap > max + 1)
                        cap = max + 1;
                char *b = realloc(rq->body, cap);
                if (!b)
                        return MHD_NO;
                rq->body = b;
                p->body_cap = cap;
        }
        memcpy(rq->body + rq->body_len, data, n);
        rq->body_len += n;
        rq->body[rq->body_len] = '\0';
        return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        struct pending *p = *con_cls;

        if (!p) {
                if (!(p = calloc(1, sizeof(*p))))
                        return MHD_NO;
                p->rq.h = cls;
                p->rq.conn = conn;
                p->rq.method = method;
                *con_cls = p;
                conns_headers_in(conn);
                return admit(p, url);
        }
        if (p->rq.answered) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (*upload_data_size > 0)
                return take_upload(p, upload_data, upload_data_size);
        if (p->too_large)
                return reply_problem(&p->rq, 413, NULL, "the body is over %lld bytes",
                                     (long long)p->rq.h->cfg->max_request_body);
        return request_run(&p->rq, p->route->handler);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
        struct httpd *h = cls;
        struct pending *p = *con_cls;

        if (code == MHD_REQUEST_TERMINATED_COMPLETED_OK)
                conns_request_done(h->conns, conn);
        if (!p)
                return;
        request_store_release(h, p->rq.store);
        if (p->rq.state_free)
                p->rq.state_free(p->rq.state);
        for (size_t i = 0; i < HTTPD_MAX_PARAMS; i++)
                free(p->rq.params[i]);
        for (size_t i = 0; i < p->rq.nheaders; i++)
                free(p->rq.headers[i].value);
        free(p->rq.body);
        free(p);
        *con_cls = NULL;
}

/* ---- start and stop ---------------------------------------------------------------- */

/* API_MAX_CONNECTIONS (limit), within the descriptors this process may
 * open: the soft RLIMIT_NOFILE is raised toward the hard one first (epoll
 * has no FD_SETSIZE limit), and HTTPD_NOFILE_RESERVE descriptors are kept
 * for the rest of the daemon. */
static unsigned connection_limit(unsigned limit)
{
        struct rlimit rl;
        rlim_t want = limit + HTTPD_NOFILE_RESERVE;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return limit;
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
                rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
                return limit;
        if (rl.rlim_cur <= 2 * HTTPD_NOFILE_RESERVE)
                return HTTPD_NOFILE_RESERVE;
        log_warning("httpd: RLIMIT_NOFILE is %llu: at most %llu API connections",
                    (unsigned long long)rl.rlim_cur,
                    (unsigned long long)(rl.rlim_cur - HTTPD_NOFILE_RESERVE));
        return (unsigned)(rl.rlim_cur - HTTPD_NOFILE_RESERVE);
}

static int open_listener(struct httpd *h, const char *listen, int *ret_fd)
{
        if (str_startswith(listen, "unix:"))
                return listen_unix(h, listen + 5, ret_fd);
        return listen_tcp(listen, ret_fd);
}

static void httpd_free(struct httpd *h)
{
        if (!h)
                return;
        sse_free(h);
        intake_free(h->intake);
        jobcache_free(h->jobs);
        if (h->unix_path)
                unlink(h->unix_path);
        free(h->unix_path);
        for (size_t i = 0; i < h->npool; i++)
                store_close(h->pool[i]);
        conns_stop(h->conns);
        pthread_mutex_destroy(&h->pool_lock);
        free(h);
}

static int64_t header_timeout_ms(const struct config *cfg)
{
        return (int64_t)(cfg->api_header_timeout * 1000);
}

void httpd_reconfigure(struct httpd *h, const struct config *cfg)
{
        conns_set_header_timeout(h->conns, header_timeout_ms(cfg));
        h->cfg = cfg;
}

/* microhttpd on fd, with the listener's settings. It splits its connection
 * limit among its threads, so each gets room for all limit of them;
 * conns_admit() holds the total. */
static struct MHD_Daemon *start_mhd(struct httpd *h, int fd, unsigned limit)
{
        const struct config *cfg = h->cfg;
        unsigned threads = (unsigned)cfg->api_threads;

        /* the logger goes first so that microhttpd reports nothing to stderr itself */
        return MHD_start_daemon(
                MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0, conns_admit,
                h->conns, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, conns_log, h->conns,
                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE, threads,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTPD_CONNECTION_TIMEOUT_S,
                MHD_OPTION_CONNECTION_LIMIT, limit * threads, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                (unsigned)cfg->api_max_connections_per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                (size_t)HTTPD_CONNECTION_MEMORY, MHD_OPTION_NOTIFY_CONNECTION, conns_notify, h->conns,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
}

static void wake_sched(void *ud) { sched_wake(ud); }

int httpd_start(const struct httpd_deps *deps, int listen_fd, struct httpd **ret)
{
        struct httpd *h = calloc(1, sizeof(*h));
        int fd = listen_fd, r;

        if (!h)
                return -ENOMEM;
        h->cfg = deps->cfg;
        h->sched = deps->sched;
        h->version = deps->version;
        h->events = deps->events;
        atomic_init(&h->draining, false);
        pthread_mutex_init(&h->pool_lock, NULL);
        if ((r = sse_start(h)) < 0) {
                log_error("httpd: cannot start the event streams: %s", strerror(-r));
                goto fail;
        }
        unsigned limit = connection_limit((unsigned)h->cfg->api_max_connections);
        if ((r = conns_start(header_timeout_ms(h->cfg), limit, &h->conns)) < 0) {
                log_error("httpd: cannot start the connection sweeper: %s", strerror(-r));
                goto fail;
        }
        if ((r = intake_new(h->cfg->store, wake_sched, h->sched, &h->intake)) < 0) {
                log_error("httpd: cannot open the job table for new jobs: %s", strerror(-r));
                goto fail;
        }
        if (h->events && (r = jobcache_new(h->events, &h->jobs)) < 0)
                log_warning("httpd: no cache of finished jobs: %s", strerror(-r));
        if (fd < 0 && (r = open_listener(h, h->cfg->listen, &fd)) < 0) {
                log_error("httpd: cannot listen on %s: %s", h->cfg->listen, strerror(-r));
                goto fail;
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        h->port = socket_port(fd);
        h->mhd = start_mhd(h, fd, limit);
        if (!h->mhd) {
                r = -EIO;
                log_error("httpd: cannot start the HTTP server");
                goto fail;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
        if (info && info->port)
                h->port = info->port;
        *ret = h;
        return 0;
fail:
        if (fd >= 0 && listen_fd < 0)
                close(fd);
        httpd_free(h);
        return r;
}

int httpd_port(const struct httpd *h) { return h->port; }

void httpd_set_draining(struct httpd *h) { atomic_store(&h->draining, true); }

void httpd_stop(struct httpd *h)
{
        if (!h)
                return;
        sse_stop(h); /* resumes and ends every event stream: microhttpd refuses to stop with one suspended */
        intake_free(h->intake); /* answers (and resumes) every submission waiting */
        h->intake = NULL;
        MHD_stop_daemon(h->mhd); /* closes the listening socket */
        httpd_free(h);
}

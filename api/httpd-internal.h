/* What httpd.c shares with the resource handlers (jobs.c, system.c): the
 * server, one request in flight, and the ways to answer it. Handlers run on
 * a microhttpd pool thread; everything reachable from struct request is
 * that thread's alone, struct httpd is shared (read-only but for the store
 * pool, which has its own lock).
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "api/httpd.h"
#include "daemon/store.h"

#define HTTPD_THREADS              2    /* microhttpd pool threads */
#define HTTPD_CONNECTION_TIMEOUT_S 30   /* idle seconds before a connection is closed */
#define HTTPD_CONNECTION_LIMIT     1024 /* open connections, all clients (fewer when RLIMIT_NOFILE is low) */
#define HTTPD_CONNECTION_MEMORY    (32 * 1024) /* bytes of request headers and buffers per connection */
#define HTTPD_LISTEN_BACKLOG       128
#define HTTPD_STORE_POOL_MAX       8          /* idle store connections kept; more are closed after use */
#define HTTPD_RETRY_AFTER_S        5          /* Retry-After of every 503 */
#define HTTPD_MAX_PARAMS           2          /* path parameters of one route ("{id}", "{source}") */
#define HTTPD_MAX_HEADERS          4          /* extra headers one handler may add */
#define HTTPD_DISCARD_MAX          (16 << 20) /* bytes of an oversized chunked body read before hanging up */
#define HTTPD_SSE_MAX              256        /* event streams open at once; more answer 503 */
#define HTTPD_NOFILE_RESERVE       64         /* descriptors kept for the store, files and transfers */

struct sse;
struct jobcache;
struct jobcache_text;

struct httpd {
        const struct config *_Atomic cfg; /* swapped by httpd_reconfigure() */
        struct sched *sched;
        const char *version;
        struct event_bus *events; /* NULL: event streams answer 503 */
        struct sse *sse;          /* the live event streams (sse.c) */
        struct jobcache *jobs;    /* rendered terminal jobs; NULL: none (no event bus) */
        struct MHD_Daemon *mhd;
        char *unix_path;                          /* our unix socket, unlinked at stop; NULL for TCP */
        int port;                                 /* bound TCP port, 0 for unix sockets */
        atomic_bool draining;                     /* POST and DELETE answer 503 */
        pthread_mutex_t pool_lock;                /* guards pool and npool */
        struct store *pool[HTTPD_STORE_POOL_MAX]; /* idle connections, each used by one request at a time */
        size_t npool;
};

struct request;
typedef enum MHD_Result (*httpd_handler)(struct request *rq);

struct route {
        const char *method;  /* "GET" also answers HEAD */
        const char *pattern; /* "/v1/jobs/{}/items": "{}" is one non-empty path segment */
        httpd_handler handler;
        unsigned flags; /* ROUTE_* */
};
#define ROUTE_PUBLIC    1u /* no token needed */
#define ROUTE_JSON_BODY 2u /* takes an application/json body */

struct request {
        struct httpd *h;
        struct MHD_Connection *conn;
        const char *method;
        const struct route *route;
        char *params[HTTPD_MAX_PARAMS]; /* path parameters, decoded, in pattern order */
        char *body;                     /* the upload, NUL-terminated; NULL when none */
        size_t body_len;
        size_t body_cap;
        size_t discarded; /* bytes read past max_request_body */
        bool too_large;
        bool answered;       /* a response is queued */
        const char *origin;  /* Origin when listed in CORS_ORIGINS, else NULL */
        struct store *store; /* from the pool, returned when the request ends */
        struct {
                const char *name; /* static */
                char *value;
        } headers[HTTPD_MAX_HEADERS];
        size_t nheaders;
};

/* The request's store connection, opened or taken from the pool on first
 * use. -errno when the store cannot be opened (answer 503). */
int httpd_store(struct request *rq, struct store **ret);
/* Give a store connection back to the pool (NULL: nothing). */
void httpd_store_release(struct httpd *h, struct store *s);
/* A query-string argument, or NULL. */
const char *httpd_arg(struct request *rq, const char *key);
/* Add a header to the coming answer (name must be static). */
int httpd_header(struct request *rq, const char *name, const char *value);

/* The answers. Each queues a response and returns what the access handler
 * returns; body and errors are stolen (NULL body: 500). */
enum MHD_Result httpd_reply_json(struct request *rq, unsigned status, json_t *body);
enum MHD_Result httpd_reply_text(struct request *rq, unsigned status, const char *content_type, char *text,
                                 size_t len);
enum MHD_Result httpd_reply_empty(struct request *rq, unsigned status);
/* Answer a shared text; the caller's reference is stolen. */
enum MHD_Result httpd_reply_shared(struct request *rq, unsigned status, const char *content_type,
                                   struct jobcache_text *t);
/* Queue resp with the common headers (CORS, Cache-Control, ...); resp is
 * released. */
enum MHD_Result httpd_queue_response(struct request *rq, unsigned status, struct MHD_Response *resp);
enum MHD_Result httpd_reply_problem(struct request *rq, unsigned status, json_t *errors, const char *fmt,
                                    ...) __attribute__((format(printf, 4, 5)));
/* Answer a failed store call: -ENOENT 404 (what names the missing thing),
 * -ENOMEM 500, anything else 503 (store unavailable). */
enum MHD_Result httpd_reply_store_error(struct request *rq, int r, const char *what);
/* Answer a failed sched call: -ENOENT 404, -EBUSY 409, -ESHUTDOWN 503, else 500. */
enum MHD_Result httpd_reply_sched_error(struct request *rq, int r, const char *what);

/* Handlers (jobs.c) */
enum MHD_Result jobs_create(struct request *rq);
enum MHD_Result jobs_list(struct request *rq);
enum MHD_Result jobs_get(struct request *rq);
enum MHD_Result jobs_items(struct request *rq);
enum MHD_Result jobs_cancel(struct request *rq);
enum MHD_Result jobs_retry(struct request *rq);
enum MHD_Result jobs_delete(struct request *rq);
/* The job object with the circuits the scheduler knows now; NULL: no memory. */
json_t *jobs_job_json(struct httpd *h, const struct job *j);
/* Handlers (system.c) */
enum MHD_Result system_health(struct request *rq);
enum MHD_Result dashboard_page(struct request *rq);
enum MHD_Result system_config(struct request *rq);
enum MHD_Result system_circuits(struct request *rq);
enum MHD_Result system_circuit_reset(struct request *rq);
enum MHD_Result system_stats(struct request *rq);
enum MHD_Result system_metrics(struct request *rq);
enum MHD_Result system_sources(struct request *rq);
/* One GET /v1/circuits entry. */
json_t *system_circuit_json(const struct circuit_info *c);
/* Handlers and lifecycle of the event streams (sse.c). sse_start after the
 * struct httpd is filled in and before microhttpd starts; sse_stop before
 * MHD_stop_daemon (it ends every stream); sse_free after it. */
enum MHD_Result sse_job(struct request *rq);
enum MHD_Result sse_all(struct request *rq);
int sse_start(struct httpd *h);
void sse_stop(struct httpd *h);
void sse_free(struct httpd *h);
/* The circuit state of a source from a sched_circuits() snapshot
 * (jobjson_opts.circuit with userdata a struct circuit_list). */
struct circuit_list {
        struct circuit_info *v;
        size_t n;
};
const char *system_circuit_state(const char *source, void *userdata);

/* What a resource handler sees of the API: the server's shared state, one
 * request in flight, and the ways to answer it. Handlers run on a
 * microhttpd pool thread; everything reachable from struct request is
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

#include "daemon/config.h"
#include "daemon/sched.h"
#include "daemon/store.h"

#define HTTPD_STORE_POOL_MAX 8 /* idle store connections kept; more are closed after use */
#define HTTPD_RETRY_AFTER_S  5 /* Retry-After of every 503 */
#define HTTPD_MAX_PARAMS     2 /* path parameters of one route ("{id}", "{source}") */
#define HTTPD_MAX_HEADERS    4 /* extra headers one handler may add */

struct conns;
struct event_bus;
struct sse;
struct jobcache;
struct jobcache_text;

struct httpd {
        const struct config *_Atomic cfg; /* swapped by httpd_reconfigure() */
        struct sched *sched;
        const char *version;
        struct event_bus *events;  /* NULL: event streams answer 503 */
        struct sse *sse;           /* the live event streams (sse.c) */
        struct jobcache *jobs;     /* rendered terminal jobs; NULL: none (no event bus) */
        struct intake *intake;     /* writes new jobs in batches (group commit) */
        struct MHD_Daemon *mhd;    /* httpd.c's */
        struct conns *conns;       /* httpd.c's: header deadlines, microhttpd's log */
        char *unix_path;           /* httpd.c's: our unix socket, unlinked at stop; NULL for TCP */
        int port;                  /* httpd.c's: bound TCP port, 0 for unix sockets */
        atomic_bool draining;      /* httpd.c's: POST and DELETE answer 503 */
        pthread_mutex_t pool_lock; /* guards pool and npool */
        struct store *pool[HTTPD_STORE_POOL_MAX]; /* idle connections, each used by one request at a time */
        size_t npool;
};

struct request {
        struct httpd *h;
        struct MHD_Connection *conn;
        const char *method;
        const char *pattern;            /* of the route taken, for the log; NULL: none */
        char *params[HTTPD_MAX_PARAMS]; /* path parameters, decoded, in pattern order */
        char *body;                     /* the upload, NUL-terminated; NULL when none */
        size_t body_len;                /* bytes of body, without the NUL */
        bool answered;                  /* a response is queued */
        const char *origin;             /* Origin when listed in CORS_ORIGINS, else NULL */
        void *state;                    /* a handler's, across a suspension; freed with state_free */
        void (*state_free)(void *state);
        struct store *store; /* from the pool, returned when the request ends */
        bool store_pooled;   /* store was taken from the pool (it may have outlived its server) */
        bool store_retried;  /* a dead pooled store was let go once already */
        bool rerun;          /* reply_store_error() let a dead pooled store go: run the handler again */
        struct {
                const char *name; /* static */
                char *value;
        } headers[HTTPD_MAX_HEADERS];
        size_t nheaders;
};

/* The request's store connection, opened or taken from the pool on first
 * use. -errno when the store cannot be opened (answer 503). */
int request_store(struct request *rq, struct store **ret);
/* Run a route's handler; once more when its pooled store connection had
 * lost its server (see reply_store_error()). */
enum MHD_Result request_run(struct request *rq, enum MHD_Result (*handler)(struct request *rq));
/* Give a store connection back to the pool (NULL: nothing). */
void request_store_release(struct httpd *h, struct store *s);
/* A query-string argument, or NULL. */
const char *request_arg(struct request *rq, const char *key);

/* Add a header to the coming answer (name must be static). */
int reply_header(struct request *rq, const char *name, const char *value);

/* The answers. Each queues a response and returns what the access handler
 * returns; body and errors are stolen (NULL body: 500). */
enum MHD_Result reply_json(struct request *rq, unsigned status, json_t *body);
enum MHD_Result reply_text(struct request *rq, unsigned status, const char *content_type, char *text,
                           size_t len);
enum MHD_Result reply_empty(struct request *rq, unsigned status);
/* Answer a shared text; the caller's reference is stolen. */
enum MHD_Result reply_shared(struct request *rq, unsigned status, const char *content_type,
                             struct jobcache_text *t);
/* Queue resp with the common headers (CORS, Cache-Control, ...); resp is
 * released. */
enum MHD_Result reply_queue(struct request *rq, unsigned status, struct MHD_Response *resp);
enum MHD_Result reply_problem(struct request *rq, unsigned status, json_t *errors, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Answer a failed store call: -ENOENT 404 (what names the missing thing),
 * -ENOMEM 500, anything else 503 (store unavailable). But a GET or HEAD
 * whose connection came from the pool and lost its server (-ECONNRESET:
 * PostgreSQL restarted) is not answered: that connection and the idle
 * ones are closed and request_run() runs the handler once more, on a
 * fresh connection. */
enum MHD_Result reply_store_error(struct request *rq, int r, const char *what);
/* Answer a failed sched call: -ENOENT 404, -EBUSY 409, -ESHUTDOWN 503, else 500. */
enum MHD_Result reply_sched_error(struct request *rq, int r, const char *what);

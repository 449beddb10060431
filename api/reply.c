/* reply: how every answer of the API leaves, and what a request borrows
 * while it is answered.
 *
 * Every answer goes through reply_queue(), which adds what each answer
 * carries: the handler's extra headers, CORS headers for a listed origin
 * (and Vary: Origin whenever CORS_ORIGINS is set), Retry-After on 503,
 * WWW-Authenticate on 401 and Cache-Control: no-store. Errors are
 * problem+json (problem.c); JSON bodies are written with
 * JOBJSON_DUMP_FLAGS.
 *
 * Invariants: a store connection serves one request at a time (taken from
 * the pool on first use, returned when the request ends); the pool keeps
 * at most HTTPD_STORE_POOL_MAX idle connections; a pooled connection found
 * to have lost its server is closed with every idle one, and its request
 * (a GET or HEAD) runs once more on a new connection. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/jobcache.h"
#include "api/jobjson.h"
#include "api/problem.h"
#include "api/reply.h"
#include "common/log.h"

#define CORS_EXPOSE_HEADERS "Location, Retry-After"
#define DETAIL_MAX          512 /* bytes of a problem's detail, with the NUL */

/* ---- what a request borrows ------------------------------------------------ */

const char *request_arg(struct request *rq, const char *key)
{
        return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

int request_store(struct request *rq, struct store **ret)
{
        struct httpd *h = rq->h;
        struct store *s = NULL;

        if (!rq->store) {
                pthread_mutex_lock(&h->pool_lock);
                if (h->npool > 0 && !rq->store_retried) /* a second try opens a new one */
                        s = h->pool[--h->npool];
                pthread_mutex_unlock(&h->pool_lock);
                rq->store_pooled = s != NULL;
                if (!s) {
                        int r = store_open_existing(h->cfg->store, &s); /* never a new, empty table */
                        if (r < 0) {
                                log_warning("httpd: cannot open the store: %s", strerror(-r));
                                return r;
                        }
                }
                rq->store = s;
        }
        *ret = rq->store;
        return 0;
}

/* The request's pooled connection lost its server: it goes, and so do the
 * idle ones (opened to the same server), so the next request opens a
 * fresh one. Only a GET or HEAD is run again: it changes nothing. */
static bool store_retry(struct request *rq)
{
        struct httpd *h = rq->h;
        struct store *idle[HTTPD_STORE_POOL_MAX];
        size_t n;

        if (!rq->store || !rq->store_pooled || rq->store_retried ||
            (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0))
                return false;
        pthread_mutex_lock(&h->pool_lock);
        n = h->npool;
        memcpy(idle, h->pool, n * sizeof(*idle));
        h->npool = 0;
        pthread_mutex_unlock(&h->pool_lock);
        for (size_t i = 0; i < n; i++)
                store_close(idle[i]);
        store_close(rq->store);
        rq->store = NULL;
        rq->store_retried = true;
        rq->rerun = true;
        log_info("httpd: a pooled job table connection had lost its server; %s %s runs again on a new one",
                 rq->method, rq->pattern ? rq->pattern : "-");
        return true;
}

enum MHD_Result request_run(struct request *rq, enum MHD_Result (*handler)(struct request *rq))
{
        enum MHD_Result ret = handler(rq);
        if (rq->rerun && !rq->answered) {
                rq->rerun = false;
                ret = handler(rq);
        }
        return ret;
}

void request_store_release(struct httpd *h, struct store *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&h->pool_lock);
        if (h->npool < HTTPD_STORE_POOL_MAX) {
                h->pool[h->npool++] = s;
                s = NULL;
        }
        pthread_mutex_unlock(&h->pool_lock);
        store_close(s);
}

/* ---- answers ------------------------------------------------------------------ */

int reply_header(struct request *rq, const char *name, const char *value)
{
        if (rq->nheaders == HTTPD_MAX_HEADERS)
                return -E2BIG;
        char *v = strdup(value);
        if (!v)
                return -ENOMEM;
        rq->headers[rq->nheaders].name = name;
        rq->headers[rq->nheaders++].value = v;
        return 0;
}

enum MHD_Result reply_queue(struct request *rq, unsigned status, struct MHD_Response *resp)
{
        char retry[16];
        enum MHD_Result ret;

        if (!resp)
                return MHD_NO;
        for (size_t i = 0; i < rq->nheaders; i++)
                MHD_add_response_header(resp, rq->headers[i].name, rq->headers[i].value);
        if (rq->origin) {
                MHD_add_response_header(resp, "Access-Control-Allow-Origin", rq->origin);
                MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
        }
        if (rq->h->cfg->cors_origins && *rq->h->cfg->cors_origins)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
        if (status == MHD_HTTP_SERVICE_UNAVAILABLE) {
                snprintf(retry, sizeof(retry), "%d", HTTPD_RETRY_AFTER_S);
                MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry);
        }
        if (status == MHD_HTTP_UNAUTHORIZED)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        ret = MHD_queue_response(rq->conn, status, resp);
        MHD_destroy_response(resp);
        rq->answered = true;
        log_debug("httpd: %s %s %u", rq->method, rq->pattern ? rq->pattern : "-", status);
        return ret;
}

enum MHD_Result reply_text(struct request *rq, unsigned status, const char *content_type, char *text,
                           size_t len)
{
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(text);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        return reply_queue(rq, status, resp);
}

static enum MHD_Result reply_dump(struct request *rq, unsigned status, const char *content_type,
                                  json_t *body)
{
        char *text = body ? json_dumps(body, JOBJSON_DUMP_FLAGS) : NULL;
        json_decref(body);
        if (!text)
                return MHD_NO;
        return reply_text(rq, status, content_type, text, strlen(text));
}

enum MHD_Result reply_problem(struct request *rq, unsigned status, json_t *errors, const char *fmt, ...)
{
        char detail[DETAIL_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
        if (status >= 500)
                log_warning("httpd: %s %s: %u %s", rq->method, rq->pattern ? rq->pattern : "-", status,
                            detail);
        return reply_dump(rq, status, PROBLEM_CONTENT_TYPE, problem_new(status, detail, errors));
}

enum MHD_Result reply_json(struct request *rq, unsigned status, json_t *body)
{
        if (!body)
                return reply_problem(rq, 500, NULL, "out of memory");
        return reply_dump(rq, status, "application/json", body);
}

static void shared_done(void *cls) { jobcache_text_unref(cls); }

enum MHD_Result reply_shared(struct request *rq, unsigned status, const char *content_type,
                             struct jobcache_text *t)
{
        struct MHD_Response *resp =
                MHD_create_response_from_buffer_with_free_callback_cls(t->len, t->text, shared_done, t);
        if (!resp) {
                jobcache_text_unref(t);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        return reply_queue(rq, status, resp);
}

enum MHD_Result reply_empty(struct request *rq, unsigned status)
{
        return reply_queue(rq, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

enum MHD_Result reply_store_error(struct request *rq, int r, const char *what)
{
        if (r == -ECONNRESET && store_retry(rq))
                return MHD_YES; /* request_run() runs the handler again */
        if (r == -ENOENT)
                return reply_problem(rq, 404, NULL, "no such %s", what);
        if (r == -ENOMEM)
                return reply_problem(rq, 500, NULL, "out of memory");
        return reply_problem(rq, 503, NULL, "store unavailable: %s", strerror(-r));
}

enum MHD_Result reply_sched_error(struct request *rq, int r, const char *what)
{
        switch (r) {
        case -ENOENT:
                return reply_problem(rq, 404, NULL, "no such %s", what);
        case -EBUSY:
                return reply_problem(rq, 409, NULL, "the %s's state does not allow this", what);
        case -ESHUTDOWN:
                return reply_problem(rq, 503, NULL, "shutting down");
        default:
                return reply_problem(rq, 500, NULL, "%s", strerror(-r));
        }
}

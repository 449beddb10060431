/* sse: the live event streams, GET /v1/jobs/{id}/events and GET /v1/events
 * (text/event-stream). A stream is a microhttpd response whose content
 * reader turns the event bus's references into events, reading the job,
 * item or circuit as it is when the event is sent.
 *
 * No pool thread ever waits here: when a stream has nothing to send, its
 * reader suspends the connection (MHD_suspend_connection) and returns 0.
 * Two things resume it (MHD_resume_connection, from their own threads): the
 * bus watcher, after each publish, and the ticker, when the stream's next
 * keep-alive or coalesced progress event is due.
 *
 * Invariants, all under sse.lock: a stream is in the live list from its
 * creation until microhttpd frees its response; `suspended` is true only
 * while its connection is suspended, and only then may another thread
 * resume it (a suspended connection cannot be closed, so it is alive);
 * once `stopping` is set no stream suspends again, so httpd_stop can
 * resume them all and microhttpd can close every connection.
 *
 * Progress events are coalesced per stream and job: at most one per
 * SSE_PROGRESS_INTERVAL_MS; a later one waits and is sent with the newest
 * progress when due. */
#include "autoconfig.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/jobjson.h"
#include "api/problem.h"
#include "api/reply.h"
#include "common/clock.h"
#include "common/log.h"
#include "daemon/events.h"

#define SSE_BLOCK_SIZE           (16 * 1024) /* bytes microhttpd asks the reader for at once */
#define SSE_BATCH                32          /* bus events turned into text per reader call */
#define SSE_KEEPALIVE_MS         15000       /* a ": keepalive" comment after this much silence */
#define SSE_PROGRESS_INTERVAL_MS 250         /* at most 4 progress events a second per job and stream */
#define SSE_TICK_MS              100         /* how often the ticker looks for due streams */
#define SSE_PROGRESS_SLOTS       32          /* jobs whose progress one stream coalesces at once */
#define SSE_RETRY_MS             2000        /* the reconnection delay suggested to clients */
#define SSE_OUT_MAX              (1 << 20)   /* bytes of text one stream buffers */
#define SSE_STREAMS_MAX          256         /* event streams open at once; more answer 503 */

struct progress_slot {
        char job_id[JOB_ID_LEN + 1]; /* "": free */
        int64_t sent_ms;             /* mono ms of the last progress event sent */
        bool pending;                /* one is waiting for sent_ms + interval */
        struct event_data *latest;   /* pending: the newest progress (a reference), or NULL */
};

struct stream {
        struct stream *prev, *next; /* the live list */
        struct httpd *h;
        struct MHD_Connection *conn;
        struct store *store;         /* owned: taken from the request */
        char job_id[JOB_ID_LEN + 1]; /* "": all jobs (GET /v1/events) */
        uint64_t last_id;            /* the newest bus event consumed */
        char *out;                   /* text not yet handed to microhttpd */
        size_t out_len, out_off, out_cap;
        int64_t wrote_ms; /* mono ms of the last text produced */
        bool done;        /* end the stream once out is sent */
        int fd;           /* the client's socket, to see it leave while suspended */
        bool gone;        /* under sse.lock: the client closed or reset its end */
        bool suspended;   /* under sse.lock */
        bool woken;       /* under sse.lock: an event came since the last look */
        int64_t wake_ms;  /* under sse.lock: when the ticker resumes it */
        struct progress_slot slots[SSE_PROGRESS_SLOTS];
};

struct sse {
        pthread_mutex_t lock;
        pthread_cond_t tick;    /* signalled to stop the ticker */
        struct stream *streams; /* the live list */
        size_t nstreams;
        bool stopping;
        bool ticker_running;
        pthread_t ticker;
        int watch; /* events_watch handle, 0: none */
};

/* ---- output buffer ------------------------------------------------------- */

static int out_printf(struct stream *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int out_printf(struct stream *s, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        size_t need = s->out_len + (size_t)n + 1;
        if (need > SSE_OUT_MAX)
                return -ENOBUFS;
        if (need > s->out_cap) {
                size_t cap = s->out_cap ? s->out_cap : 4096;
                while (cap < need)
                        cap *= 2;
                char *p = realloc(s->out, cap);
                if (!p)
                        return -ENOMEM;
                s->out = p;
                s->out_cap = cap;
        }
        va_start(ap, fmt);
        vsnprintf(s->out + s->out_len, s->out_cap - s->out_len, fmt, ap);
        va_end(ap);
        s->out_len += (size_t)n;
        s->wrote_ms = clock_mono_ms();
        return 0;
}

/* "id: ID\nevent: NAME\ndata: JSON\n\n"; data is stolen. */
static int out_event(struct stream *s, uint64_t id, const char *name, json_t *data)
{
        char *text = data ? json_dumps(data, JOBJSON_DUMP_FLAGS) : NULL;
        json_decref(data);
        if (!text)
                return -ENOMEM;
        int r = out_printf(s, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", id, name, text);
        free(text);
        return r;
}

/* ---- the objects, as they are now ----------------------------------------- */

/* The job, or -ENOENT when it is gone. */
static int load_job(struct stream *s, const char *job_id, struct job **ret)
{
        return store_job_get(s->store, job_id, ret);
}

static int send_job(struct stream *s, uint64_t id, const struct job *j)
{
        struct snapshot *snap = sched_snapshot(s->h->sched);
        json_t *o = jobjson_job(j, snap, NULL);
        snapshot_unref(snap);
        return out_event(s, id, "job", o);
}

/* The item as the event carries it (with its retry, when it is one). */
static int send_item(struct stream *s, const struct event *e)
{
        const struct event_data *d = e->data;
        if (!d)
                return 0;
        json_t *o = jobjson_item(&d->item, NULL);
        if (o && d->retry_set)
                json_object_set_new(o, "retry",
                                    json_pack("{s:i, s:f, s:s}", "attempt", d->retry.attempt, "delay_s",
                                              (double)d->retry.delay_ms / 1000.0, "reason",
                                              d->retry.reason));
        if (o)
                json_object_set_new(o, "job_id", json_string(e->job_id));
        return out_event(s, e->id, "item", o);
}

static int send_progress(struct stream *s, uint64_t id, const char *job_id, const struct event_data *d)
{
        if (!d)
                return 0;
        json_t *o = jobjson_live(&d->live);
        if (o)
                json_object_set_new(o, "job_id", json_string(job_id));
        return out_event(s, id, "progress", o);
}

static int send_circuit(struct stream *s, const struct event *e)
{
        if (!e->data)
                return 0;
        struct snapshot *snap = sched_snapshot(s->h->sched);
        json_t *entry = jobjson_circuit(&e->data->circuit, snap);
        snapshot_unref(snap);
        return out_event(s, e->id, "circuit", entry);
}

static void slot_clear(struct progress_slot *slot)
{
        event_data_unref(slot->latest);
        memset(slot, 0, sizeof(*slot));
}

/* ---- progress coalescing ------------------------------------------------------ */

static struct progress_slot *slot_for(struct stream *s, const char *job_id, int64_t now)
{
        struct progress_slot *oldest = &s->slots[0];
        for (size_t i = 0; i < SSE_PROGRESS_SLOTS; i++) {
                if (strcmp(s->slots[i].job_id, job_id) == 0)
                        return &s->slots[i];
                if (s->slots[i].sent_ms < oldest->sent_ms)
                        oldest = &s->slots[i];
        }
        /* the least recently sent job gives its slot up; a pending
         * progress of it is sent now rather than lost */
        if (oldest->pending && oldest->job_id[0])
                send_progress(s, s->last_id, oldest->job_id, oldest->latest);
        slot_clear(oldest);
        snprintf(oldest->job_id, sizeof(oldest->job_id), "%s", job_id);
        oldest->sent_ms = now - SSE_PROGRESS_INTERVAL_MS;
        return oldest;
}

static int on_progress(struct stream *s, const struct event *e)
{
        int64_t now = clock_mono_ms();
        struct progress_slot *slot = slot_for(s, e->job_id, now);

        if (now - slot->sent_ms < SSE_PROGRESS_INTERVAL_MS) {
                event_data_unref(slot->latest);
                slot->latest = e->data;
                atomic_fetch_add(&e->data->refs, 1);
                slot->pending = true;
                return 0;
        }
        slot->pending = false;
        slot->sent_ms = now;
        return send_progress(s, e->id, e->job_id, e->data);
}

/* Send the coalesced progress events that are due; labelled with the newest
 * id consumed, so ids on the wire never go down. */
static int flush_progress(struct stream *s, int64_t now)
{
        for (size_t i = 0; i < SSE_PROGRESS_SLOTS; i++) {
                struct progress_slot *slot = &s->slots[i];
                if (!slot->pending || now - slot->sent_ms < SSE_PROGRESS_INTERVAL_MS)
                        continue;
                slot->pending = false;
                slot->sent_ms = now;
                int r = send_progress(s, s->last_id, slot->job_id, slot->latest);
                event_data_unref(slot->latest);
                slot->latest = NULL;
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The mono ms at which the stream has something to send without a new event. */
static int64_t next_due(const struct stream *s)
{
        int64_t due = s->wrote_ms + SSE_KEEPALIVE_MS;
        for (size_t i = 0; i < SSE_PROGRESS_SLOTS; i++)
                if (s->slots[i].pending && s->slots[i].sent_ms + SSE_PROGRESS_INTERVAL_MS < due)
                        due = s->slots[i].sent_ms + SSE_PROGRESS_INTERVAL_MS;
        return due;
}

/* ---- turning bus events into text ---------------------------------------------- */

static int on_job(struct stream *s, const struct event *e)
{
        struct job *j = NULL;
        int r = 0;

        if (!e->data || !e->data->job) { /* no copy (out of memory): the job as stored */
                r = load_job(s, e->job_id, &j);
                if (r == -ENOENT) {
                        s->done = s->job_id[0] != '\0'; /* the job stream's job was deleted */
                        return 0;
                }
                if (r < 0)
                        return r;
        }
        r = send_job(s, e->id, j ? j : e->data->job);
        job_free(j);
        for (size_t i = 0; i < SSE_PROGRESS_SLOTS; i++) /* the job object carries its progress */
                if (strcmp(s->slots[i].job_id, e->job_id) == 0) {
                        s->slots[i].pending = false;
                        event_data_unref(s->slots[i].latest);
                        s->slots[i].latest = NULL;
                }
        if (e->terminal && s->job_id[0])
                s->done = true;
        return r;
}

static int on_event(struct stream *s, const struct event *e)
{
        switch (e->type) {
        case EVENT_JOB:
                return on_job(s, e);
        case EVENT_ITEM:
                return send_item(s, e);
        case EVENT_PROGRESS:
                return on_progress(s, e);
        case EVENT_CIRCUIT:
                return s->job_id[0] ? 0 : send_circuit(s, e);
        }
        return 0;
}

/* Produce the next text: new events, due progress, or a keep-alive. */
static int stream_fill(struct stream *s)
{
        struct event ev[SSE_BATCH];
        size_t n = 0;
        uint64_t top = events_last_id(s->h->events);
        int r = events_read(s->h->events, s->last_id, s->job_id[0] ? s->job_id : NULL, ev, SSE_BATCH, &n);

        for (size_t i = 0; r >= 0 && i < n && !s->done; i++) {
                r = on_event(s, &ev[i]);
                s->last_id = ev[i].id;
        }
        events_release(ev, n);
        /* a short batch saw every match up to top: the rest were other jobs' */
        if (r >= 0 && n < SSE_BATCH && top > s->last_id)
                s->last_id = top;
        if (r < 0 || s->done)
                return r;
        int64_t now = clock_mono_ms();
        if ((r = flush_progress(s, now)) < 0)
                return r;
        if (s->out_len == 0 && now - s->wrote_ms >= SSE_KEEPALIVE_MS)
                r = out_printf(s, ": keepalive\n\n");
        return r;
}

/* ---- suspend and resume ------------------------------------------------------------ */

/* Suspend the connection unless an event came meanwhile or the server is
 * stopping. Returns true when suspended. Called from the content reader. */
static bool stream_sleep(struct stream *s)
{
        struct sse *x = s->h->sse;
        bool slept = false;

        pthread_mutex_lock(&x->lock);
        if (x->stopping)
                s->done = true;
        else if (s->woken)
                s->woken = false;
        else {
                s->wake_ms = next_due(s);
                s->suspended = true;
                MHD_suspend_connection(s->conn);
                slept = true;
        }
        pthread_mutex_unlock(&x->lock);
        return slept;
}

/* Under x->lock. */
static void stream_wake(struct stream *s)
{
        if (s->suspended) {
                s->suspended = false;
                MHD_resume_connection(s->conn);
        } else
                s->woken = true;
}

/* The bus watcher: runs on the publishing thread. */
static void on_publish(void *ud)
{
        struct sse *x = ud;

        pthread_mutex_lock(&x->lock);
        if (!x->stopping)
                for (struct stream *s = x->streams; s; s = s->next)
                        stream_wake(s);
        pthread_mutex_unlock(&x->lock);
}

/* Under x->lock. A suspended connection is not watched by microhttpd, so a
 * client that left would hold its stream (and its place under
 * SSE_STREAMS_MAX) until the next keep-alive failed to send, 15-30 s later.
 * Look at the sockets instead: a hang-up or error ends the stream now. */
static void reap_gone(struct sse *x)
{
        struct pollfd pfd[SSE_STREAMS_MAX];
        struct stream *who[SSE_STREAMS_MAX];
        nfds_t n = 0;

        for (struct stream *s = x->streams; s && n < SSE_STREAMS_MAX; s = s->next)
                if (s->suspended && s->fd >= 0) {
                        pfd[n] = (struct pollfd){.fd = s->fd, .events = POLLRDHUP};
                        who[n++] = s;
                }
        if (n == 0 || poll(pfd, n, 0) <= 0)
                return;
        for (nfds_t i = 0; i < n; i++)
                if (pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
                        who[i]->gone = true;
                        stream_wake(who[i]);
                }
}

static void *ticker_main(void *ud)
{
        struct sse *x = ud;
        struct timespec ts;

        pthread_mutex_lock(&x->lock);
        while (!x->stopping) {
                int64_t now = clock_mono_ms();
                reap_gone(x);
                for (struct stream *s = x->streams; s; s = s->next)
                        if (s->suspended && s->wake_ms <= now)
                                stream_wake(s);
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += SSE_TICK_MS * 1000000L;
                ts.tv_sec += ts.tv_nsec / 1000000000L;
                ts.tv_nsec %= 1000000000L;
                pthread_cond_timedwait(&x->tick, &x->lock, &ts);
        }
        pthread_mutex_unlock(&x->lock);
        return NULL;
}

/* ---- the microhttpd response ----------------------------------------------------------- */

static ssize_t copy_out(struct stream *s, char *buf, size_t max)
{
        size_t n = s->out_len - s->out_off;
        if (n > max)
                n = max;
        memcpy(buf, s->out + s->out_off, n);
        s->out_off += n;
        if (s->out_off == s->out_len)
                s->out_off = s->out_len = 0;
        return (ssize_t)n;
}

static bool stream_gone(struct stream *s)
{
        pthread_mutex_lock(&s->h->sse->lock);
        bool gone = s->gone;
        pthread_mutex_unlock(&s->h->sse->lock);
        return gone;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
        struct stream *s = cls;
        (void)pos;

        for (;;) {
                if (s->out_len > s->out_off)
                        return copy_out(s, buf, max);
                if (s->done)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (stream_gone(s))
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                int r = stream_fill(s);
                if (r < 0) {
                        log_warning("httpd: event stream: %s", strerror(-r));
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                if (s->out_len == 0 && !s->done && stream_sleep(s))
                        return 0;
        }
}

static void stream_free(void *cls)
{
        struct stream *s = cls;
        struct sse *x = s->h->sse;

        pthread_mutex_lock(&x->lock);
        if (s->prev)
                s->prev->next = s->next;
        else
                x->streams = s->next;
        if (s->next)
                s->next->prev = s->prev;
        x->nstreams--;
        pthread_mutex_unlock(&x->lock);
        request_store_release(s->h, s->store);
        for (size_t i = 0; i < SSE_PROGRESS_SLOTS; i++)
                event_data_unref(s->slots[i].latest);
        free(s->out);
        free(s);
}

/* Add s to the live list unless the server is stopping or full. */
static int stream_link(struct sse *x, struct stream *s)
{
        int r = 0;

        pthread_mutex_lock(&x->lock);
        if (x->stopping)
                r = -ESHUTDOWN;
        else if (x->nstreams >= SSE_STREAMS_MAX)
                r = -EMFILE;
        else {
                s->next = x->streams;
                if (x->streams)
                        x->streams->prev = s;
                x->streams = s;
                x->nstreams++;
        }
        pthread_mutex_unlock(&x->lock);
        return r;
}

/* ---- the handlers ------------------------------------------------------------------------ */

/* Last-Event-ID (header, or ?last_event_id=): 1 and the id when given (0
 * asks for every event kept), 0 when absent, -EINVAL when not a decimal id. */
static int resume_point(struct request *rq, uint64_t *ret)
{
        const char *v = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Last-Event-ID");

        if (!v)
                v = request_arg(rq, "last_event_id");
        *ret = 0;
        if (!v || !*v)
                return 0;
        if (strspn(v, "0123456789") != strlen(v) || strlen(v) > 19)
                return -EINVAL;
        *ret = strtoull(v, NULL, 10);
        return 1;
}

/* The job stream's opening: the job as it is now, unless a resume replays
 * it; a terminal job ends the stream (a resume first gets what it missed). */
static int stream_open_job(struct stream *s, bool resuming)
{
        struct job *j;
        uint64_t now_id = events_last_id(s->h->events);
        int r = load_job(s, s->job_id, &j);

        if (r < 0)
                return r;
        bool terminal = job_state_is_terminal(j->state);
        if (resuming && terminal) {
                struct event e;
                size_t n = 0;
                events_read(s->h->events, s->last_id, s->job_id, &e, 1, &n);
                events_release(&e, n);
                resuming = n > 0; /* replay up to the terminal event, else show the job */
        }
        if (!resuming) {
                r = send_job(s, now_id, j);
                s->last_id = now_id;
                s->done = terminal;
        }
        job_free(j);
        return r;
}

static struct stream *stream_new(struct request *rq, const char *job_id, uint64_t after)
{
        struct stream *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->h = rq->h;
        s->conn = rq->conn;
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        s->fd = ci ? ci->connect_fd : -1;
        s->store = rq->store; /* the stream keeps the request's store connection */
        rq->store = NULL;
        s->last_id = after;
        s->wrote_ms = clock_mono_ms();
        snprintf(s->job_id, sizeof(s->job_id), "%s", job_id ? job_id : "");
        return s;
}

static enum MHD_Result stream_reply(struct request *rq, struct stream *s)
{
        int r = stream_link(rq->h->sse, s);
        if (r < 0) {
                request_store_release(rq->h, s->store);
                free(s->out);
                free(s);
                return reply_problem(rq, 503, NULL, "%s",
                                     r == -EMFILE ? "too many event streams" : "shutting down");
        }
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK_SIZE,
                                                                      stream_read, s, stream_free);
        if (!resp) {
                stream_free(s);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        return reply_queue(rq, 200, resp);
}

static enum MHD_Result events_open(struct request *rq, const char *job_id)
{
        struct store *store;
        uint64_t after;
        int r;

        if (!rq->h->events)
                return reply_problem(rq, 503, NULL, "event streams are not available");
        int resuming = resume_point(rq, &after);
        if (resuming < 0) {
                json_t *errors = json_array();
                problem_error_add(errors, "Last-Event-ID", "must be an event id (a decimal integer)");
                return reply_problem(rq, 400, errors, "invalid Last-Event-ID");
        }
        /* an id this run never gave is from an earlier run (ids restart at
         * 1): resume from the oldest kept rather than wait for it */
        if (after > events_last_id(rq->h->events))
                after = 0;
        if ((r = request_store(rq, &store)) < 0)
                return reply_store_error(rq, r, "job");
        struct stream *s = stream_new(rq, job_id, after);
        if (!s)
                return reply_problem(rq, 500, NULL, "out of memory");
        r = out_printf(s, "retry: %d\n\n", SSE_RETRY_MS);
        if (r >= 0 && job_id)
                r = stream_open_job(s, resuming > 0);
        else if (r >= 0 && !resuming)
                s->last_id = events_last_id(rq->h->events);
        if (r < 0) {
                rq->store = s->store; /* back to the request, released with it */
                free(s->out);
                free(s);
                return reply_store_error(rq, r, "job");
        }
        return stream_reply(rq, s);
}

enum MHD_Result sse_job(struct request *rq)
{
        const char *id = rq->params[0];
        if (!id || !job_id_valid(id))
                return reply_problem(rq, 404, NULL, "no such job");
        return events_open(rq, id);
}

enum MHD_Result sse_all(struct request *rq) { return events_open(rq, NULL); }

/* ---- lifecycle ------------------------------------------------------------------------------ */

int sse_start(struct httpd *h)
{
        struct sse *x = calloc(1, sizeof(*x));
        int r;

        if (!x)
                return -ENOMEM;
        pthread_mutex_init(&x->lock, NULL);
        pthread_cond_init(&x->tick, NULL);
        h->sse = x;
        if (!h->events)
                return 0;
        if ((r = events_watch(h->events, on_publish, x, &x->watch)) < 0)
                return r;
        if ((r = -pthread_create(&x->ticker, NULL, ticker_main, x)) < 0)
                return r;
        x->ticker_running = true;
        return 0;
}

void sse_stop(struct httpd *h)
{
        struct sse *x = h->sse;

        if (!x)
                return;
        pthread_mutex_lock(&x->lock);
        x->stopping = true;
        for (struct stream *s = x->streams; s; s = s->next)
                if (s->suspended) {
                        s->suspended = false;
                        s->done = true;
                        MHD_resume_connection(s->conn);
                }
        pthread_cond_broadcast(&x->tick);
        pthread_mutex_unlock(&x->lock);
        if (x->watch)
                events_unwatch(h->events, x->watch);
        x->watch = 0;
        if (x->ticker_running)
                pthread_join(x->ticker, NULL);
        x->ticker_running = false;
}

void sse_free(struct httpd *h)
{
        struct sse *x = h->sse;

        if (!x)
                return;
        sse_stop(h);
        pthread_cond_destroy(&x->tick);
        pthread_mutex_destroy(&x->lock);
        free(x);
        h->sse = NULL;
}

/* sched: the job state machine, on one thread of its own.
 *
 * Owns: the jobs being run (loaded from the store when claimed), their
 * (job, source) units, the transfers in flight, the per-source circuit
 * breakers and statistics, and the engine. Only this thread writes jobs
 * after they are inserted; the API reads them from the store and asks for
 * changes through commands that this thread carries out between two polls.
 *
 * Invariants:
 * - a job's progress and per_source counters always equal what its items'
 *   states add up to (item_set() is the only place that moves an item);
 * - succeeded + in flight <= max for every job, so `max` is never exceeded;
 * - MAX_CONCURRENT_SOURCES units run at once, MAX_CONCURRENT_DOWNLOADS
 *   transfers, MAX_CONNECTIONS_PER_SOURCE per source across all jobs;
 * - a retry waiting for its time holds no transfer and no connection;
 * - everything that changed in one loop turn is committed at its end.
 *
 * `lock` guards everything here; the thread drops it only to wait in
 * engine_poll(), so API calls wait at most one loop turn. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/str.h"
#include "daemon/breaker.h"
#include "daemon/commit.h"
#include "daemon/config.h"
#include "daemon/engine.h"
#include "daemon/events.h"
#include "daemon/notify.h"
#include "daemon/retry.h"
#include "daemon/sched.h"
#include "daemon/sources.h"
#include "daemon/store.h"
#include "daemon/urlcheck.h"

#define POLL_MAX_MS       1000  /* longest engine_poll() when no timer is due sooner */
#define STATUS_EVERY_MS   5000  /* how often STATUS= is refreshed for systemd */
#define FLUSH_EVERY_MS    50    /* item changes are committed at least this often */
#define PROGRESS_EVERY_MS 250   /* at most 4 progress events a second per job */
#define PRUNE_EVERY_MS    60000 /* prune at least this often (and twice per JOB_RETENTION) */

const double sched_duration_bounds[SCHED_DURATION_BUCKETS - 1] = {0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                                                  5,    10,  30,   60,  300};

struct src {
        char *name;
        struct breaker *breaker;
        bool query;            /* a query source from SOURCES_DIR */
        struct ratelimit rl;   /* query sources: requests_per_second */
        double rl_rate;        /* what rl was set up with */
        int64_t rl_wait_until; /* monotonic; no request before */
        int active;            /* transfers in flight, all jobs */
        int64_t attempts, successes, failures, retries, bytes;
        char *last_error;
        struct src *next;
};

struct wait {
        int item;
        int64_t due_ms; /* monotonic */
};

enum unit_phase { UNIT_WAITING, UNIT_RUNNING, UNIT_DONE };

struct unit {
        struct rjob *rj;
        size_t index; /* into rj->job->per_source */
        struct src *src;
        enum unit_phase phase;
        int64_t deadline_ms; /* monotonic, SOURCE_TIMEOUT from its start */
        int *queue;          /* pending item indices, FIFO */
        size_t qhead, qtail;
        struct wait *waits; /* retries waiting for their time */
        size_t nwaits, cwaits;
        int running;            /* transfers in flight */
        int dir_fd;             /* DOWNLOAD_DIR/<job>/<source>, -1 until started */
        bool listing;           /* a query source still paging through results */
        int page;               /* next listing page, from 1 */
        int list_attempts;      /* attempts at the current page */
        int64_t list_due_ms;    /* monotonic: the next page request may start */
        struct slot *list_slot; /* the listing request in flight */
        int64_t candidates;     /* URLs the listing added */
        bool list_failing;      /* the current page failed and waits for a retry */
        size_t qcap;            /* queue capacity */
};

/* A download whose body is complete and now with the committer: its item
 * stays running, and counts against max and its unit, until it is done. */
struct pending_commit {
        int item;
        int attempt;
        int64_t bytes;
        int leader; /* -1: its own file; else the item whose identical file it waits for */
        int leader_attempt;
};

struct slot {
        struct unit *u;
        int item; /* -1: a listing page */
        struct xfer *x;
        struct slot *prev, *next;
};

struct rjob {
        struct job *job;
        struct item *items;
        size_t nitems;
        int *item_unit; /* item index -> unit index */
        struct unit *units;
        size_t nunits;
        int64_t deadline_ms; /* monotonic */
        struct slot *slots;  /* in flight */
        int inflight;
        bool job_dirty;
        bool *dirty; /* per item */
        int *dirty_list;
        size_t ndirty;
        int *sha_map; /* open addressing: item index + 1, 0 empty */
        size_t sha_cap;
        int *url_map; /* open addressing over item URLs, for listings */
        size_t url_cap;
        size_t cap; /* allocated items */
        struct sched *sched;
        bool progress_changed;
        int64_t last_progress_ms;       /* monotonic, last progress event */
        struct pending_commit *commits; /* downloads with the committer */
        size_t ncommits, ccommits;
        struct rjob *next;
};

enum cmd_type { CMD_CANCEL, CMD_RETRY, CMD_DELETE, CMD_RESET };

struct cmd {
        enum cmd_type type;
        const char *arg;
        int result;
        bool done;
        struct cmd *next;
};

struct sched {
        const struct config *cfg;
        const struct source_set *sources;
        struct event_bus *events; /* may be NULL */
        struct event *pending;    /* events of this turn, published after the commit */
        size_t npending, cpending;
        int64_t duration_count[SCHED_DURATION_BUCKETS];
        double duration_sum_s;
        int64_t last_prune_ms;
        int64_t last_flush_ms; /* monotonic */
        bool flush_now;        /* a job changed state: commit without waiting */
        struct store *store;
        struct engine *engine;
        struct committer *committer;
        struct retry_policy policy;
        int dl_fd; /* DOWNLOAD_DIR */
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cmd_done;
        bool stopping;
        bool maybe_queued; /* the store may hold queued jobs */
        struct cmd *cmds, *cmds_tail;
        struct rjob *jobs; /* priority high to low, then oldest first */
        int units_running;
        struct src *srcs;
        int64_t started_ms; /* monotonic */
        int64_t last_status_ms, last_watchdog_ms, watchdog_ms;
};

/* ---- sources ------------------------------------------------------------ */

static struct src *src_get(struct sched *s, const char *name)
{
        struct src *p;

        for (p = s->srcs; p; p = p->next)
                if (strcmp(p->name, name) == 0)
                        return p;
        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->name = strdup(name);
        p->breaker = breaker_new(s->cfg->circuit_breaker_threshold,
                                 (int64_t)(s->cfg->circuit_breaker_timeout * 1000));
        if (!p->name || !p->breaker) {
                free(p->name);
                breaker_free(p->breaker);
                free(p);
                return NULL;
        }
        p->next = s->srcs;
        s->srcs = p;
        return p;
}

static void srcs_free(struct src *p)
{
        while (p) {
                struct src *next = p->next;
                free(p->name);
                free(p->last_error);
                breaker_free(p->breaker);
                free(p);
                p = next;
        }
}

/* ---- events ---------------------------------------------------------------- */

/* Remember an event; it is published after this turn's commit, so that a
 * stream reading the store sees what the event announces. */
static void emit(struct sched *s, enum event_type type, const char *job_id, int item, bool terminal,
                 const char *source)
{
        if (!s->events)
                return;
        if (s->npending == s->cpending) {
                size_t c = s->cpending ? 2 * s->cpending : 64;
                struct event *e = realloc(s->pending, c * sizeof(*e));
                if (!e)
                        return;
                s->pending = e;
                s->cpending = c;
        }
        struct event *e = &s->pending[s->npending++];
        if (type == EVENT_JOB)
                s->flush_now = true;
        memset(e, 0, sizeof(*e));
        e->type = type;
        e->item = item;
        e->terminal = terminal;
        if (job_id)
                snprintf(e->job_id, sizeof(e->job_id), "%s", job_id);
        if (source)
                snprintf(e->source, sizeof(e->source), "%s", source);
}

static void publish(struct sched *s)
{
        for (size_t i = 0; i < s->npending; i++)
                events_publish(s->events, &s->pending[i]);
        s->npending = 0;
}

/* ---- query sources ------------------------------------------------------------ */

static const struct source_def *src_def(struct sched *s, const struct src *src)
{
        return src->query && s->sources ? sources_find(s->sources, src->name) : NULL;
}

/* Transfers one source may have at once, all jobs together. */
static int src_limit(struct sched *s, const struct src *src)
{
        const struct source_def *d = src_def(s, src);
        return d && d->max_connections > 0 ? d->max_connections : s->cfg->max_connections_per_source;
}

/* May a request to src start now (requests_per_second)? */
static bool src_take(struct sched *s, struct src *src, int64_t now)
{
        const struct source_def *d = src_def(s, src);
        double rate = d ? d->requests_per_second : 0;

        if (rate <= 0)
                return true;
        if (rate != src->rl_rate) {
                ratelimit_init(&src->rl, rate, rate < 1 ? 1 : rate);
                src->rl_rate = rate;
        }
        int64_t wait = ratelimit_take(&src->rl, now);
        if (wait > 0) {
                src->rl_wait_until = now + wait;
                return false;
        }
        return true;
}

/* ---- item bookkeeping ------------------------------------------------------ */

static struct unit *unit_of(struct rjob *rj, int item) { return &rj->units[rj->item_unit[item]]; }

static struct job_source *js_of(struct unit *u) { return &u->rj->job->per_source[u->index]; }

static void mark_dirty(struct rjob *rj, int item)
{
        rj->job_dirty = true;
        if (!rj->dirty[item]) {
                rj->dirty[item] = true;
                rj->dirty_list[rj->ndirty++] = item;
        }
}

static void count(struct rjob *rj, struct job_source *js, enum item_state st, int d)
{
        struct progress *p = &rj->job->progress;
        switch (st) {
        case ITEM_PENDING:
                p->pending += d;
                break;
        case ITEM_RUNNING:
                p->running += d;
                break;
        case ITEM_SUCCEEDED:
                p->succeeded += d;
                js->succeeded += d;
                break;
        case ITEM_FAILED:
                p->failed += d;
                js->failed += d;
                break;
        case ITEM_SKIPPED:
                p->skipped += d;
                js->skipped += d;
                break;
        default:
                break;
        }
}

/* The one place an item changes state. */
static void item_set(struct rjob *rj, int idx, enum item_state st)
{
        struct item *it = &rj->items[idx];
        struct job_source *js = js_of(unit_of(rj, idx));

        count(rj, js, it->state, -1);
        it->state = st;
        count(rj, js, st, +1);
        mark_dirty(rj, idx);
        rj->progress_changed = true;
        if (st == ITEM_SUCCEEDED || st == ITEM_FAILED || st == ITEM_SKIPPED)
                emit(rj->sched, EVENT_ITEM, rj->job->id, idx, false, NULL);
}

static void item_skip(struct rjob *rj, int idx, const char *code, const char *msg)
{
        job_error_set(&rj->items[idx].error, code, "%s", msg);
        item_set(rj, idx, ITEM_SKIPPED);
}

/* ---- identical content and repeated URLs within a job ----------------------- */

static size_t str_hash(const char *p)
{
        size_t h = 1469598103934665603u; /* FNV-1a */
        for (; *p; p++)
                h = (h ^ (unsigned char)*p) * 1099511628211u;
        return h;
}

/* Open addressing over item indices (+1, 0 empty), keyed by a string field
 * of the item. The item with that key, or -1; with add, remember idx. */
static int map_find(struct rjob *rj, int *map, size_t cap, bool by_url, const char *key, int idx, bool add)
{
        for (size_t i = str_hash(key) & (cap - 1);; i = (i + 1) & (cap - 1)) {
                int v = map[i];
                if (v == 0) {
                        if (add)
                                map[i] = idx + 1;
                        return -1;
                }
                const char *k = by_url ? rj->items[v - 1].url : rj->items[v - 1].sha256;
                if (k && strcmp(k, key) == 0)
                        return v - 1;
        }
}

static int sha_find(struct rjob *rj, const char *sha, int idx, bool add)
{
        return map_find(rj, rj->sha_map, rj->sha_cap, false, sha, idx, add);
}

static int url_find(struct rjob *rj, const char *url, int idx, bool add)
{
        return map_find(rj, rj->url_map, rj->url_cap, true, url, idx, add);
}

/* (Re)build both maps for at least n items, keeping them under half full. */
static int maps_build(struct rjob *rj, size_t n)
{
        size_t cap = 16;
        while (cap < 2 * n)
                cap *= 2;
        if (cap <= rj->sha_cap && rj->sha_map)
                return 0;
        int *sha = calloc(cap, sizeof(int)), *url = calloc(cap, sizeof(int));
        if (!sha || !url) {
                free(sha);
                free(url);
                return -ENOMEM;
        }
        free(rj->sha_map);
        free(rj->url_map);
        rj->sha_map = sha;
        rj->url_map = url;
        rj->sha_cap = rj->url_cap = cap;
        for (size_t i = 0; i < rj->nitems; i++) {
                const struct item *it = &rj->items[i];
                if (it->state == ITEM_SUCCEEDED && it->sha256)
                        sha_find(rj, it->sha256, (int)i, true);
                if (it->url && !(it->error.code && strcmp(it->error.code, "duplicate") == 0))
                        url_find(rj, it->url, (int)i, true);
        }
        return 0;
}

/* Room for n items in every per-item array. */
static int rjob_reserve(struct rjob *rj, size_t n)
{
        if (n <= rj->cap)
                return maps_build(rj, n);
        size_t cap = rj->cap ? 2 * rj->cap : 16;
        while (cap < n)
                cap *= 2;
        struct item *items = realloc(rj->items, cap * sizeof(*items));
        if (!items)
                return -ENOMEM;
        rj->items = items;
        int *iu = realloc(rj->item_unit, cap * sizeof(int));
        if (!iu)
                return -ENOMEM;
        rj->item_unit = iu;
        bool *dirty = realloc(rj->dirty, cap * sizeof(bool));
        if (!dirty)
                return -ENOMEM;
        rj->dirty = dirty;
        memset(dirty + rj->cap, 0, (cap - rj->cap) * sizeof(bool));
        int *dl = realloc(rj->dirty_list, cap * sizeof(int));
        if (!dl)
                return -ENOMEM;
        rj->dirty_list = dl;
        rj->cap = cap;
        return maps_build(rj, n);
}

static int queue_push(struct unit *u, int item)
{
        if (u->qtail == u->qcap) {
                if (u->qhead > 0) {
                        memmove(u->queue, u->queue + u->qhead, (u->qtail - u->qhead) * sizeof(int));
                        u->qtail -= u->qhead;
                        u->qhead = 0;
                } else {
                        size_t cap = u->qcap ? 2 * u->qcap : 16;
                        int *q = realloc(u->queue, cap * sizeof(int));
                        if (!q)
                                return -ENOMEM;
                        u->queue = q;
                        u->qcap = cap;
                }
        }
        u->queue[u->qtail++] = item;
        return 0;
}

/* ---- loading a job ------------------------------------------------------------ */

static void rjob_free(struct rjob *rj)
{
        if (!rj)
                return;
        for (size_t i = 0; i < rj->nunits; i++) {
                free(rj->units[i].queue);
                free(rj->units[i].waits);
                if (rj->units[i].dir_fd >= 0)
                        close(rj->units[i].dir_fd);
        }
        free(rj->units);
        items_free(rj->items, rj->nitems);
        job_free(rj->job);
        free(rj->item_unit);
        free(rj->dirty);
        free(rj->dirty_list);
        free(rj->sha_map);
        free(rj->url_map);
        free(rj->commits);
        free(rj);
}

static int find_source(struct job *j, const char *name)
{
        for (size_t i = 0; i < j->nper_source; i++)
                if (strcmp(j->per_source[i].source, name) == 0)
                        return (int)i;
        return -1;
}

/* Every item's source has a per_source entry, and counters match items. */
static int rebuild_sources(struct rjob *rj)
{
        struct job *j = rj->job;

        for (size_t i = 0; i < rj->nitems; i++) {
                const char *name = rj->items[i].source;
                if (find_source(j, name) >= 0)
                        continue;
                struct job_source *ps = realloc(j->per_source, (j->nper_source + 1) * sizeof(*ps));
                if (!ps)
                        return -ENOMEM;
                j->per_source = ps;
                memset(&ps[j->nper_source], 0, sizeof(*ps));
                ps[j->nper_source].source = strdup(name);
                if (!ps[j->nper_source++].source)
                        return -ENOMEM;
        }
        memset(&j->progress, 0, sizeof(j->progress));
        for (size_t i = 0; i < j->nper_source; i++) {
                struct job_source *js = &j->per_source[i];
                js->items = js->succeeded = js->failed = js->skipped = js->bytes = 0;
        }
        return 0;
}

static int build_units(struct sched *s, struct rjob *rj)
{
        struct job *j = rj->job;

        rj->nunits = j->nper_source;
        rj->units = calloc(rj->nunits ? rj->nunits : 1, sizeof(*rj->units));
        if (!rj->units)
                return -ENOMEM;
        for (size_t u = 0; u < rj->nunits; u++) {
                rj->units[u] = (struct unit){.rj = rj, .index = u, .dir_fd = -1};
                rj->units[u].src = src_get(s, j->per_source[u].source);
                if (!rj->units[u].src)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < rj->nitems; i++) {
                struct item *it = &rj->items[i];
                int u = find_source(j, it->source);
                struct job_source *js = &j->per_source[u];
                rj->item_unit[i] = u;
                js->items++;
                js->bytes += it->state == ITEM_SUCCEEDED ? it->bytes : 0;
                j->progress.total++;
                j->progress.bytes += it->state == ITEM_SUCCEEDED ? it->bytes : 0;
                if (it->state == ITEM_RUNNING)
                        it->state = ITEM_PENDING;
                count(rj, js, it->state, +1);
                if (it->state == ITEM_PENDING && queue_push(&rj->units[u], (int)i) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int rjob_load(struct sched *s, const char *id, struct rjob **ret)
{
        struct rjob *rj = calloc(1, sizeof(*rj));
        int r = -ENOMEM;

        if (!rj)
                return -ENOMEM;
        r = store_job_get(s->store, id, &rj->job);
        if (r < 0)
                goto fail;
        r = store_item_load(s->store, id, &rj->items, &rj->nitems);
        if (r < 0)
                goto fail;
        rj->sched = s;
        rj->cap = rj->nitems;
        r = -ENOMEM;
        rj->item_unit = calloc(rj->cap ? rj->cap : 1, sizeof(int));
        rj->dirty = calloc(rj->cap ? rj->cap : 1, sizeof(bool));
        rj->dirty_list = calloc(rj->cap ? rj->cap : 1, sizeof(int));
        if (!rj->item_unit || !rj->dirty || !rj->dirty_list)
                goto fail;
        r = maps_build(rj, rj->nitems);
        if (r < 0)
                goto fail;
        r = rebuild_sources(rj);
        if (r < 0)
                goto fail;
        r = build_units(s, rj);
        if (r < 0)
                goto fail;
        *ret = rj;
        return 0;
fail:
        rjob_free(rj);
        return r;
}

/* ---- persisting ------------------------------------------------------------------ */

/* Write what changed in the jobs of list, in one transaction. */
static void flush_list(struct sched *s, struct rjob *list)
{
        bool any = false;
        int r;

        for (struct rjob *rj = list; rj && !any; rj = rj->next)
                any = rj->job_dirty;
        if (!any)
                return;
        r = store_begin(s->store);
        for (struct rjob *rj = list; rj && r >= 0; rj = rj->next) {
                if (!rj->job_dirty)
                        continue;
                for (size_t i = 0; i < rj->ndirty && r >= 0; i++) {
                        r = store_item_update(s->store, rj->job->id, &rj->items[rj->dirty_list[i]]);
                        rj->dirty[rj->dirty_list[i]] = false;
                }
                rj->ndirty = 0;
                if (r >= 0)
                        r = store_job_update(s->store, rj->job);
                rj->job_dirty = false;
        }
        if (r >= 0)
                r = store_commit(s->store);
        else
                store_rollback(s->store);
        if (r < 0)
                log_error("sched: writing the job table failed: %s", strerror(-r));
}

static void flush(struct sched *s)
{
        flush_list(s, s->jobs);
        s->flush_now = false;
}

/* Item changes are committed in batches at most FLUSH_EVERY_MS apart; a
 * job's own state change (start, end, command) at once. Events follow the
 * commit. Returns ms until the next flush is due. */
static int64_t flush_paced(struct sched *s, int64_t now)
{
        bool dirty = false;

        for (struct rjob *rj = s->jobs; rj && !dirty; rj = rj->next)
                dirty = rj->job_dirty;
        if (dirty && !s->flush_now && now - s->last_flush_ms < FLUSH_EVERY_MS)
                return FLUSH_EVERY_MS - (now - s->last_flush_ms);
        if (dirty) {
                flush(s);
                s->last_flush_ms = now;
        }
        publish(s);
        return POLL_MAX_MS;
}

/* ---- running units ------------------------------------------------------------- */

static void wait_add(struct unit *u, int item, int64_t due)
{
        if (u->nwaits == u->cwaits) {
                size_t c = u->cwaits ? 2 * u->cwaits : 8;
                struct wait *w = realloc(u->waits, c * sizeof(*w));
                if (!w) {
                        queue_push(u, item); /* no memory: retry at once */
                        return;
                }
                u->waits = w;
                u->cwaits = c;
        }
        u->waits[u->nwaits++] = (struct wait){item, due};
}

static bool job_max_reached(const struct rjob *rj) { return rj->job->progress.succeeded >= rj->job->max; }

static void slot_unlink(struct slot *sl)
{
        struct rjob *rj = sl->u->rj;

        sl->u->running--;
        sl->u->src->active--;
        if (sl->item >= 0)
                rj->inflight--;
        else
                sl->u->list_slot = NULL;
        if (sl->prev)
                sl->prev->next = sl->next;
        else
                rj->slots = sl->next;
        if (sl->next)
                sl->next->prev = sl->prev;
        free(sl);
}

static void slot_abort(struct sched *s, struct slot *sl)
{
        engine_abort(s->engine, sl->x);
        slot_unlink(sl);
}

/* Stop a unit: abort its transfers, skip its unfinished items with code. */
static void unit_close(struct sched *s, struct unit *u, enum source_state st, const char *code,
                       const char *msg)
{
        struct rjob *rj = u->rj;
        struct job_source *js = js_of(u);

        for (struct slot *sl = rj->slots, *next; sl; sl = next) {
                next = sl->next;
                if (sl->u != u)
                        continue;
                int item = sl->item;
                slot_abort(s, sl);
                if (item >= 0)
                        item_skip(rj, item, code, msg);
        }
        for (size_t i = u->qhead; i < u->qtail; i++)
                item_skip(rj, u->queue[i], code, msg);
        for (size_t i = 0; i < u->nwaits; i++)
                item_skip(rj, u->waits[i].item, code, msg);
        for (size_t i = 0; i < rj->ncommits;) {
                /* the committer finishes the file; the item no longer waits for it */
                if (rj->item_unit[rj->commits[i].item] == (int)u->index) {
                        item_skip(rj, rj->commits[i].item, code, msg);
                        rj->commits[i] = rj->commits[--rj->ncommits];
                        continue;
                }
                i++;
        }
        u->qhead = u->qtail = u->nwaits = 0;
        u->listing = false;
        if (u->phase == UNIT_RUNNING)
                s->units_running--;
        u->phase = UNIT_DONE;
        js->state = st;
        if (st == SRC_TIMED_OUT || st == SRC_FAILED)
                job_error_set(&js->error, code, "%s", msg);
        if (u->dir_fd >= 0) {
                engine_clean_parts(u->dir_fd);
                close(u->dir_fd);
                u->dir_fd = -1;
        }
        rj->job_dirty = true;
        log_info("job %s: source %s %s: %lld items, %lld succeeded, %lld failed, %lld skipped, %lld bytes, "
                 "%lld attempts, %lld retries",
                 rj->job->id, js->source, source_state_to_string(st), (long long)js->items,
                 (long long)js->succeeded, (long long)js->failed, (long long)js->skipped,
                 (long long)js->bytes, (long long)js->attempts, (long long)js->retries);
}

static bool unit_committing(const struct unit *u)
{
        const struct rjob *rj = u->rj;
        for (size_t i = 0; i < rj->ncommits; i++)
                if (rj->item_unit[rj->commits[i].item] == (int)u->index)
                        return true;
        return false;
}

static void unit_maybe_done(struct sched *s, struct unit *u)
{
        if (u->phase != UNIT_RUNNING || u->running > 0 || unit_committing(u))
                return;
        /* a failing listing runs its retries out even when max is reached,
         * so that the source's entry tells whether it works */
        if (u->listing && (!job_max_reached(u->rj) || u->list_failing))
                return;
        if (job_max_reached(u->rj)) {
                unit_close(s, u, SRC_DONE, "max_reached", "the job's max was reached");
                return;
        }
        if (u->qhead == u->qtail && u->nwaits == 0)
                unit_close(s, u, SRC_DONE, "", "");
}

static int unit_open(struct sched *s, struct unit *u)
{
        struct rjob *rj = u->rj;
        struct job_source *js = js_of(u);
        char rel[JOB_ID_LEN + 2 + SOURCE_NAME_MAX];

        snprintf(rel, sizeof(rel), "%s/%s", rj->job->id, js->source);
        int r = fs_mkdirat_p(s->dl_fd, rel, &u->dir_fd);
        if (r < 0) {
                log_error("job %s: source %s: cannot create %s in DOWNLOAD_DIR: %s", rj->job->id, js->source,
                          rel, strerror(-r));
                return r;
        }
        return 0;
}

static bool unit_is_query(struct unit *u)
{
        const struct job *j = u->rj->job;
        const char *name = js_of(u)->source;

        for (size_t i = 0; j->query && i < j->nsources; i++)
                if (strcmp(j->sources[i], name) == 0)
                        return true;
        return false;
}

static void unit_start(struct sched *s, struct unit *u, int64_t now)
{
        struct job_source *js = js_of(u);

        u->phase = UNIT_RUNNING;
        s->units_running++;
        u->deadline_ms = now + (int64_t)(s->cfg->source_timeout * 1000);
        js->state = SRC_DOWNLOADING;
        job_error_clear(&js->error);
        u->rj->job_dirty = true;
        if (unit_is_query(u)) {
                const struct source_def *d = s->sources ? sources_find(s->sources, js->source) : NULL;
                if (!d) {
                        unit_close(s, u, SRC_FAILED, "unknown_source", "no such source is configured");
                        return;
                }
                if (!d->available) {
                        unit_close(s, u, SRC_FAILED, "source_unavailable",
                                   d->unavailable_reason ? d->unavailable_reason
                                                         : "the source is unavailable");
                        return;
                }
                u->src->query = true;
                u->candidates = js->items;
                if (u->candidates < u->rj->job->max) {
                        u->listing = true;
                        u->page = 1;
                        u->list_attempts = 0;
                        u->list_due_ms = now;
                        js->state = SRC_LISTING;
                }
        }
        if (unit_open(s, u) < 0) {
                for (size_t i = u->qhead; i < u->qtail; i++)
                        job_error_set(&u->rj->items[u->queue[i]].error, "io", "cannot create the directory");
                unit_close(s, u, SRC_FAILED, "io", "cannot create the source's download directory");
                return;
        }
        unit_maybe_done(s, u);
}

/* ---- listing query sources ------------------------------------------------------- */

static void log_circuit(struct sched *s, struct src *src, int64_t now, const char *why);

static struct slot *slot_new(struct rjob *rj, struct unit *u, int item)
{
        struct slot *sl = calloc(1, sizeof(*sl));
        if (!sl)
                return NULL;
        sl->u = u;
        sl->item = item;
        return sl;
}

static void slot_link(struct slot *sl)
{
        struct rjob *rj = sl->u->rj;

        sl->next = rj->slots;
        if (rj->slots)
                rj->slots->prev = sl;
        rj->slots = sl;
        sl->u->running++;
        sl->u->src->active++;
        sl->u->src->attempts++;
        js_of(sl->u)->attempts++;
        if (sl->item >= 0)
                rj->inflight++;
        else
                sl->u->list_slot = sl;
}

/* The listing is over: downloads go on with what it found. */
static void list_end(struct sched *s, struct unit *u, const char *code, const char *msg)
{
        struct job_source *js = js_of(u);

        u->listing = false;
        if (!code) {
                js->state = SRC_DOWNLOADING;
                log_info("job %s: source %s listed %lld candidates in %d page%s", u->rj->job->id, js->source,
                         (long long)u->candidates, u->page - 1, u->page == 2 ? "" : "s");
        } else if (u->candidates == 0) {
                unit_close(s, u, SRC_FAILED, code, msg);
                return;
        } else {
                js->state = SRC_DOWNLOADING;
                job_error_set(&js->error, code, "listing stopped at page %d: %s", u->page, msg);
                log_warning("job %s: source %s: listing stopped at page %d (%s: %s); going on with %lld "
                            "candidates",
                            u->rj->job->id, js->source, u->page, code, msg, (long long)u->candidates);
        }
        u->rj->job_dirty = true;
}

static void list_start(struct sched *s, struct unit *u, int64_t now)
{
        struct rjob *rj = u->rj;
        const struct source_def *d = src_def(s, u->src);
        char *url = NULL, *shown = NULL, **headers = NULL;
        size_t nheaders = 0;
        struct slot *sl = NULL;

        if (!d) {
                list_end(s, u, "unknown_source", "the source's file is gone");
                return;
        }
        if (!src_take(s, u->src, now))
                return;
        if (!breaker_allow(u->src->breaker, now)) {
                list_end(s, u, "circuit_open", "the source's circuit is open");
                return;
        }
        int r = sources_build_url(d, rj->job->query, u->page, &url);
        if (r >= 0)
                r = sources_build_headers(d, &headers, &nheaders);
        if (r < 0) {
                list_end(s, u, "source_unavailable",
                         r == -ENOKEY ? "a secret it needs is not set" : "its search URL cannot be built");
                goto out;
        }
        sl = slot_new(rj, u, -1);
        struct xfer_request req = {.url = url,
                                   .dir_fd = u->dir_fd,
                                   .to_memory = true,
                                   .headers = headers,
                                   .nheaders = nheaders,
                                   .userdata = sl};
        if (!sl || engine_start(s->engine, &req, &sl->x) < 0) {
                free(sl);
                goto out; /* tried again next turn */
        }
        slot_link(sl);
        u->list_attempts++;
        sources_build_url_redacted(d, rj->job->query, u->page, &shown);
        log_info("job %s: LIST %s page %d (attempt %d): %s", rj->job->id, u->src->name, u->page,
                 u->list_attempts, shown ? shown : "?");
out:
        free(url);
        free(shown);
        sources_strv_free(headers, nheaders);
}

/* Add a page's URLs as items: new ones only, up to the job's max. */
static size_t list_add(struct sched *s, struct unit *u, char **urls, size_t n)
{
        struct rjob *rj = u->rj;
        struct job_source *js = js_of(u);
        size_t first = rj->nitems, added = 0;

        for (size_t i = 0; i < n && u->candidates < rj->job->max; i++) {
                if (urlcheck_validate(urls[i], NULL, NULL) < 0 || url_find(rj, urls[i], 0, false) >= 0)
                        continue;
                if (rjob_reserve(rj, rj->nitems + 1) < 0 || queue_push(u, (int)rj->nitems) < 0)
                        break;
                int idx = (int)rj->nitems++;
                struct item *it = &rj->items[idx];
                memset(it, 0, sizeof(*it));
                it->index = idx;
                it->state = ITEM_PENDING;
                it->source = strdup(js->source);
                it->url = strdup(urls[i]);
                rj->item_unit[idx] = (int)u->index;
                url_find(rj, it->url, idx, true);
                js->items++;
                rj->job->progress.total++;
                count(rj, js, ITEM_PENDING, +1);
                u->candidates++;
                added++;
        }
        if (added) {
                int r = store_item_append(s->store, rj->job->id, &rj->items[first], added);
                if (r < 0)
                        log_error("job %s: saving listed items: %s", rj->job->id, strerror(-r));
                rj->job_dirty = true;
                rj->progress_changed = true;
        }
        return added;
}

static void list_done(struct sched *s, struct unit *u, const struct xfer_result *res, int64_t now)
{
        const struct source_def *d = src_def(s, u->src);
        enum retry_class rc = res->rc;
        const char *msg = res->message;
        char **urls = NULL;
        size_t n = 0;

        if (u->phase != UNIT_RUNNING)
                return;
        if (rc == RC_OK && (!d || sources_parse_page(d, res->body, res->body_len, &urls, &n) < 0)) {
                rc = RC_INVALID_CONTENT;
                msg = "the listing page is not JSON of the shape the source file describes";
        }
        bool ok = rc == RC_OK;
        if (breaker_record(u->src->breaker, ok, ok || retry_class_counts_for_breaker(rc), now))
                log_circuit(s, u->src, now, ok ? "probe succeeded" : retry_class_code(rc));
        if (!ok) {
                struct retry_policy lp = s->policy;
                lp.max_retries = s->cfg->max_retries_per_source;
                u->src->failures++;
                free(u->src->last_error);
                if (asprintf(&u->src->last_error, "%s: %s", retry_class_code(rc), msg) < 0)
                        u->src->last_error = NULL;
                u->list_failing = true;
                if (retry_should_retry(&lp, rc, u->list_attempts)) {
                        int64_t delay = retry_delay_ms(&lp, u->list_attempts, res->retry_after_ms,
                                                       (double)random() / ((double)RAND_MAX + 1.0));
                        u->list_due_ms = now + delay;
                        u->src->retries++;
                        js_of(u)->retries++;
                        log_info("job %s: RETRY listing %s page %d, attempt %d/%d in %.1fs (%s: %s)",
                                 u->rj->job->id, u->src->name, u->page, u->list_attempts + 1,
                                 lp.max_retries + 1, (double)delay / 1000.0, retry_class_code(rc), msg);
                        return;
                }
                list_end(s, u, retry_class_code(rc), msg);
                return;
        }
        u->src->successes++;
        u->src->bytes += res->bytes;
        u->list_failing = false;
        if (!job_max_reached(u->rj))
                list_add(s, u, urls, n);
        sources_strv_free(urls, n);
        u->page++;
        u->list_attempts = 0;
        if (n == 0 || u->candidates >= u->rj->job->max || !d->paged)
                list_end(s, u, NULL, NULL);
        else
                u->list_due_ms = now;
}

/* ---- transfers ------------------------------------------------------------------- */

static int start_item(struct sched *s, struct unit *u, int idx, int64_t now)
{
        struct rjob *rj = u->rj;
        struct item *it = &rj->items[idx];
        struct slot *sl = slot_new(rj, u, idx);
        struct xfer_request req = {
                .url = it->url,
                .dir_fd = u->dir_fd,
                .part_id = idx,
                .name_hint = it->filename,
                .userdata = sl,
        };

        if (!sl)
                return -ENOMEM;
        int r = engine_start(s->engine, &req, &sl->x);
        if (r < 0) {
                free(sl);
                return r;
        }
        slot_link(sl);
        it->attempts++;
        item_set(rj, idx, ITEM_RUNNING);
        log_debug("job %s: GET %s (source %s, attempt %d)", rj->job->id, it->url, u->src->name,
                  it->attempts);
        (void)now;
        return 0;
}

/* Start what the limits allow from one unit. */
static void unit_fill(struct sched *s, struct unit *u, int64_t now)
{
        struct rjob *rj = u->rj;
        int per_src = src_limit(s, u->src);

        if (u->phase != UNIT_RUNNING)
                return;
        if (u->listing && !u->list_slot && now >= u->list_due_ms && u->src->active < per_src &&
            engine_running(s->engine) < s->cfg->max_concurrent_downloads &&
            (!job_max_reached(rj) || u->list_failing))
                list_start(s, u, now);
        while (u->qhead < u->qtail && engine_running(s->engine) < s->cfg->max_concurrent_downloads &&
               u->src->active < per_src &&
               rj->job->progress.succeeded + rj->inflight + (int64_t)rj->ncommits < rj->job->max) {
                if (u->src->query && !src_take(s, u->src, now))
                        break;
                int idx = u->queue[u->qhead++];
                if (!breaker_allow(u->src->breaker, now)) {
                        item_skip(rj, idx, "circuit_open", "the source's circuit is open");
                        continue;
                }
                if (start_item(s, u, idx, now) < 0) {
                        u->qhead--;
                        break;
                }
        }
        unit_maybe_done(s, u);
}

static void log_circuit(struct sched *s, struct src *src, int64_t now, const char *why)
{
        struct breaker_info bi;
        breaker_get_info(src->breaker, now, &bi);
        emit(s, EVENT_CIRCUIT, NULL, -1, false, src->name);
        if (bi.state == BREAKER_OPEN)
                log_warning("CIRCUIT opened for %s after %d failures (%s); probe in %.1f s", src->name,
                            bi.consecutive_failures, why, (double)(bi.retry_at_ms - now) / 1000.0);
        else
                log_info("CIRCUIT %s for %s (%s)", breaker_state_to_string(bi.state), src->name, why);
}

static void duration_record(struct sched *s, int64_t ms)
{
        double secs = (double)ms / 1000.0;
        size_t b = 0;

        while (b < SCHED_DURATION_BUCKETS - 1 && secs > sched_duration_bounds[b])
                b++;
        s->duration_count[b]++;
        s->duration_sum_s += secs;
}

static void item_succeeded(struct rjob *rj, struct unit *u, int idx, const char *path, int64_t bytes)
{
        struct item *it = &rj->items[idx];

        free(it->path);
        it->path = str_dup(path);
        job_error_clear(&it->error);
        js_of(u)->bytes += bytes;
        rj->job->progress.bytes += bytes;
        u->src->successes++;
        u->src->bytes += bytes;
        item_set(rj, idx, ITEM_SUCCEEDED);
        log_debug("job %s: OK %s -> %s (%lld bytes)", rj->job->id, it->url, path ? path : "?",
                  (long long)bytes);
}

static int commit_find(const struct rjob *rj, int item)
{
        for (size_t i = 0; i < rj->ncommits; i++)
                if (rj->commits[i].item == item && rj->commits[i].leader < 0)
                        return (int)i;
        return -1;
}

static int commit_push(struct rjob *rj, struct pending_commit pc)
{
        if (rj->ncommits == rj->ccommits) {
                size_t c = rj->ccommits ? 2 * rj->ccommits : 16;
                struct pending_commit *v = realloc(rj->commits, c * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                rj->commits = v;
                rj->ccommits = c;
        }
        rj->commits[rj->ncommits++] = pc;
        return 0;
}

/* The body is complete. Identical content is stored once: a body equal to
 * one already on disk takes its path, one equal to a body still with the
 * committer waits for it. Anything else goes to the committer, and the
 * item succeeds when its file is on disk. */
static void item_commit(struct sched *s, struct unit *u, int idx, const struct xfer_result *res)
{
        struct rjob *rj = u->rj;
        struct item *it = &rj->items[idx];
        int same = sha_find(rj, res->sha256, idx, false);
        struct commit_req *req = NULL;

        free(it->sha256);
        it->sha256 = strdup(res->sha256);
        if (same >= 0 && (rj->items[same].path || commit_find(rj, same) >= 0)) {
                close(res->part_fd);
                unlinkat(u->dir_fd, res->part, 0);
                if (rj->items[same].path) {
                        item_succeeded(rj, u, idx, rj->items[same].path, res->bytes);
                        return;
                }
                struct pending_commit pc = {idx, it->attempts, res->bytes, same, rj->items[same].attempts};
                if (commit_push(rj, pc) < 0)
                        goto fail_nofile;
                return;
        }
        req = calloc(1, sizeof(*req));
        if (!req || commit_push(rj, (struct pending_commit){idx, it->attempts, res->bytes, -1, 0}) < 0)
                goto fail;
        req->dir_fd = fcntl(u->dir_fd, F_DUPFD_CLOEXEC, 0);
        if (req->dir_fd < 0) {
                rj->ncommits--;
                goto fail;
        }
        snprintf(req->job_id, sizeof(req->job_id), "%s", rj->job->id);
        req->item = idx;
        req->attempt = it->attempts;
        req->part_fd = res->part_fd;
        req->size = res->bytes;
        snprintf(req->part, sizeof(req->part), "%s", res->part);
        snprintf(req->name, sizeof(req->name), "%s", res->name);
        snprintf(req->sha256, sizeof(req->sha256), "%s", res->sha256);
        if (it->sha256)
                sha_find(rj, it->sha256, idx, true);
        committer_submit(s->committer, req);
        return;
fail:
        free(req);
        close(res->part_fd);
        unlinkat(u->dir_fd, res->part, 0);
fail_nofile:
        job_error_set(&it->error, "io", "out of memory or file descriptors");
        item_set(rj, idx, ITEM_FAILED);
}

/* One item's file is on disk at path, or could not be written (err). */
static void commit_resolve(struct sched *s, struct rjob *rj, struct pending_commit pc, const char *path,
                           int err)
{
        struct unit *u = unit_of(rj, pc.item);
        struct item *it = &rj->items[pc.item];

        if (err < 0) {
                job_error_set(&it->error, "io", "writing the file into place: %s", strerror(-err));
                free(it->sha256);
                it->sha256 = NULL; /* no longer found as stored content */
                item_set(rj, pc.item, ITEM_FAILED);
                log_error("job %s: %s: writing the file into place: %s", rj->job->id, it->url,
                          strerror(-err));
        } else {
                item_succeeded(rj, u, pc.item, path, pc.bytes);
        }
        unit_fill(s, u, clock_mono_ms());
}

/* The committer's answers: the item that owned the file and the items
 * waiting for the same content succeed (or fail "io"). An answer nobody
 * waits for any more (the job or source was stopped meanwhile) leaves the
 * file where it is. */
static void apply_commits(struct sched *s)
{
        struct commit_req *done = committer_take_done(s->committer);

        for (struct commit_req *r = done; r; r = r->next) {
                struct rjob *rj = s->jobs;
                while (rj && strcmp(rj->job->id, r->job_id) != 0)
                        rj = rj->next;
                if (!rj)
                        continue;
                char *path = NULL;
                if (r->error == 0 && asprintf(&path, "%s/%s/%s", rj->job->id,
                                              unit_of(rj, r->item)->src->name, r->final_name) < 0)
                        path = NULL;
                /* take the entries out first: resolving them may start or close work */
                struct pending_commit *mine = calloc(rj->ncommits ? rj->ncommits : 1, sizeof(*mine));
                size_t n = 0;
                for (size_t i = 0; mine && i < rj->ncommits;) {
                        struct pending_commit pc = rj->commits[i];
                        bool owner = pc.leader < 0 && pc.item == r->item && pc.attempt == r->attempt;
                        bool follower = pc.leader == r->item && pc.leader_attempt == r->attempt;
                        if (!owner && !follower) {
                                i++;
                                continue;
                        }
                        rj->commits[i] = rj->commits[--rj->ncommits];
                        mine[n++] = pc;
                }
                for (size_t i = 0; i < n; i++)
                        commit_resolve(s, rj, mine[i], path, r->error);
                free(mine);
                free(path);
        }
        commit_req_free(done);
}

static void item_failed(struct sched *s, struct unit *u, int idx, const struct xfer_result *res, int64_t now)
{
        struct rjob *rj = u->rj;
        struct item *it = &rj->items[idx];
        const char *code = retry_class_code(res->rc);

        u->src->failures++;
        free(u->src->last_error);
        if (asprintf(&u->src->last_error, "%s: %s", code, res->message) < 0)
                u->src->last_error = NULL;
        job_error_set(&it->error, code, "%s", res->message);
        if (retry_should_retry(&s->policy, res->rc, it->attempts)) {
                int64_t delay = retry_delay_ms(&s->policy, it->attempts, res->retry_after_ms,
                                               (double)random() / ((double)RAND_MAX + 1.0));
                wait_add(u, idx, now + delay);
                u->src->retries++;
                js_of(u)->retries++;
                item_set(rj, idx, ITEM_PENDING);
                log_info("job %s: RETRY attempt %d/%d for %s in %.1fs (%s: %s)", rj->job->id,
                         it->attempts + 1, s->policy.max_retries + 1, it->url, (double)delay / 1000.0, code,
                         res->message);
                return;
        }
        item_set(rj, idx, ITEM_FAILED);
        log_info("job %s: FAILED %s after %d attempt%s (%s: %s)", rj->job->id, it->url, it->attempts,
                 it->attempts == 1 ? "" : "s", code, res->message);
}

static void on_done(void *userdata, const struct xfer_result *res, void *ctx)
{
        struct sched *s = ctx;
        struct slot *sl = userdata;
        struct unit *u = sl->u;
        struct rjob *rj = u->rj;
        int idx = sl->item;
        struct item *it = idx >= 0 ? &rj->items[idx] : NULL;
        int64_t now = clock_mono_ms();

        if (idx < 0) {
                slot_unlink(sl); /* the engine frees the transfer */
                list_done(s, u, res, now);
                unit_fill(s, u, now);
                return;
        }
        slot_unlink(sl);
        duration_record(s, res->duration_ms);

        it->http_status = res->http_status;
        it->duration_ms = res->duration_ms;
        it->speed_bps = res->speed_bps;
        it->bytes = res->bytes;
        free(it->content_type);
        it->content_type = res->content_type[0] ? strdup(res->content_type) : NULL;

        bool ok = res->rc == RC_OK;
        if (breaker_record(u->src->breaker, ok, ok || retry_class_counts_for_breaker(res->rc), now))
                log_circuit(s, u->src, now, ok ? "probe succeeded" : retry_class_code(res->rc));
        if (ok)
                item_commit(s, u, idx, res);
        else
                item_failed(s, u, idx, res, now);
        unit_fill(s, u, now);
}

/* ---- jobs ------------------------------------------------------------------------ */

static enum job_state final_state(struct rjob *rj)
{
        const struct progress *p = &rj->job->progress;
        int64_t benign = 0;

        if (job_max_reached(rj))
                return JOB_SUCCEEDED;
        for (size_t i = 0; i < rj->nitems; i++) {
                const struct item *it = &rj->items[i];
                if (it->state == ITEM_SKIPPED && it->error.code &&
                    (strcmp(it->error.code, "duplicate") == 0 || strcmp(it->error.code, "max_reached") == 0))
                        benign++;
        }
        if (p->succeeded > 0 && p->failed == 0 && p->skipped == benign)
                return JOB_SUCCEEDED;
        return p->succeeded > 0 ? JOB_PARTIAL : JOB_FAILED;
}

static void job_finish(struct sched *s, struct rjob *rj, int forced, const char *code, const char *msg)
{
        struct job *j = rj->job;

        for (size_t u = 0; u < rj->nunits; u++)
                if (rj->units[u].phase != UNIT_DONE)
                        unit_close(s, &rj->units[u], forced == JOB_TIMED_OUT ? SRC_TIMED_OUT : SRC_SKIPPED,
                                   code, msg);
        j->state = forced >= 0 ? (enum job_state)forced : final_state(rj);
        if (forced >= 0)
                job_error_set(&j->error, code, "%s", msg);
        else if (j->state == JOB_FAILED && j->progress.total == 0)
                job_error_set(&j->error, "no_items", "no source produced an item");
        else if (j->state == JOB_FAILED)
                job_error_set(&j->error, "all_failed", "no item succeeded");
        j->finished_at = clock_wall_ms();
        rj->job_dirty = true;
        emit(s, EVENT_JOB, j->id, -1, true, NULL);
        log_info("job %s: JOB COMPLETE %s: %lld items, %lld succeeded, %lld failed, %lld skipped, %lld "
                 "bytes in "
                 "%.1f s",
                 j->id, job_state_to_string(j->state), (long long)j->progress.total,
                 (long long)j->progress.succeeded, (long long)j->progress.failed,
                 (long long)j->progress.skipped, (long long)j->progress.bytes,
                 j->started_at ? (double)(j->finished_at - j->started_at) / 1000.0 : 0.0);
}

static bool job_all_done(const struct rjob *rj)
{
        for (size_t u = 0; u < rj->nunits; u++)
                if (rj->units[u].phase != UNIT_DONE)
                        return false;
        return true;
}

/* Write finished jobs and forget them. */
static void reap_jobs(struct sched *s)
{
        bool any = false;

        for (struct rjob *rj = s->jobs; rj; rj = rj->next) {
                if (rj->job->state == JOB_RUNNING && job_all_done(rj))
                        job_finish(s, rj, -1, "", "");
                any |= job_state_is_terminal(rj->job->state);
        }
        if (!any)
                return;
        flush(s);
        for (struct rjob **pp = &s->jobs; *pp;) {
                struct rjob *rj = *pp;
                if (!job_state_is_terminal(rj->job->state)) {
                        pp = &rj->next;
                        continue;
                }
                *pp = rj->next;
                rjob_free(rj);
        }
}

static void job_insert_sorted(struct sched *s, struct rjob *rj)
{
        struct rjob **pp = &s->jobs;
        while (*pp && ((*pp)->job->priority > rj->job->priority ||
                       ((*pp)->job->priority == rj->job->priority && (*pp)->job->seq < rj->job->seq)))
                pp = &(*pp)->next;
        rj->next = *pp;
        *pp = rj;
}

static void job_begin(struct sched *s, struct rjob *rj, int64_t now)
{
        struct job *j = rj->job;
        int64_t wall = clock_wall_ms();

        j->state = JOB_RUNNING;
        if (!j->started_at)
                j->started_at = wall;
        j->finished_at = 0;
        j->deadline_at = wall + (int64_t)(j->timeout * 1000);
        rj->deadline_ms = now + (int64_t)(j->timeout * 1000);
        job_error_clear(&j->error);
        rj->job_dirty = true;
        emit(s, EVENT_JOB, j->id, -1, false, NULL);
        log_info("job %s: JOB START %zu items from %zu source%s, max %d, timeout %.0f s, priority %d%s%s",
                 j->id, rj->nitems, rj->nunits, rj->nunits == 1 ? "" : "s", j->max, j->timeout, j->priority,
                 j->label && *j->label ? ", label " : "", j->label ? j->label : "");
}

static bool units_waiting(struct sched *s)
{
        for (struct rjob *rj = s->jobs; rj; rj = rj->next)
                for (size_t u = 0; u < rj->nunits; u++)
                        if (rj->units[u].phase == UNIT_WAITING)
                                return true;
        return false;
}

static void claim_jobs(struct sched *s, int64_t now)
{
        int free_units = s->cfg->max_concurrent_sources - s->units_running;
        char(*ids)[JOB_ID_LEN + 1] = NULL;
        size_t n = 0;

        if (!s->maybe_queued || free_units <= 0 || units_waiting(s))
                return;
        int r = store_job_next_queued(s->store, (size_t)free_units, &ids, &n);
        if (r < 0) {
                log_error("sched: reading queued jobs: %s", strerror(-r));
                return;
        }
        if (n < (size_t)free_units)
                s->maybe_queued = false;
        for (size_t i = 0; i < n; i++) {
                struct rjob *rj;
                r = rjob_load(s, ids[i], &rj);
                if (r < 0) {
                        log_error("job %s: cannot load: %s", ids[i], strerror(-r));
                        continue;
                }
                job_begin(s, rj, now);
                job_insert_sorted(s, rj);
        }
        free(ids);
}

/* Start units while there is room, then transfers. */
static void start_work(struct sched *s, int64_t now)
{
        for (struct rjob *rj = s->jobs; rj; rj = rj->next)
                for (size_t u = 0; u < rj->nunits; u++) {
                        struct unit *un = &rj->units[u];
                        if (un->phase == UNIT_WAITING && s->units_running < s->cfg->max_concurrent_sources)
                                unit_start(s, un, now);
                        if (un->phase == UNIT_RUNNING)
                                unit_fill(s, un, now);
                }
}

/* Deadlines and due retries; returns ms until the next timer. */
static int64_t run_timers(struct sched *s, int64_t now)
{
        int64_t next = POLL_MAX_MS;

        for (struct src *p = s->srcs; p; p = p->next)
                if (p->rl_wait_until > now && p->rl_wait_until - now < next)
                        next = p->rl_wait_until - now;

        for (struct rjob *rj = s->jobs; rj; rj = rj->next) {
                if (rj->job->state != JOB_RUNNING)
                        continue;
                if (now >= rj->deadline_ms) {
                        log_warning("job %s: deadline of %.0f s passed", rj->job->id, rj->job->timeout);
                        job_finish(s, rj, JOB_TIMED_OUT, "job_timeout", "the job's timeout passed");
                        continue;
                }
                if (rj->deadline_ms - now < next)
                        next = rj->deadline_ms - now;
                for (size_t i = 0; i < rj->nunits; i++) {
                        struct unit *u = &rj->units[i];
                        if (u->phase != UNIT_RUNNING)
                                continue;
                        if (now >= u->deadline_ms) {
                                log_warning("job %s: source %s exceeded SOURCE_TIMEOUT", rj->job->id,
                                            u->src->name);
                                unit_close(s, u, SRC_TIMED_OUT, "source_timeout",
                                           "the source's time (SOURCE_TIMEOUT) ran out");
                                continue;
                        }
                        if (u->deadline_ms - now < next)
                                next = u->deadline_ms - now;
                        if (u->listing && !u->list_slot && u->list_due_ms > now &&
                            u->list_due_ms - now < next)
                                next = u->list_due_ms - now;
                        for (size_t w = 0; w < u->nwaits;) {
                                if (u->waits[w].due_ms <= now && queue_push(u, u->waits[w].item) == 0) {
                                        u->waits[w] = u->waits[--u->nwaits];
                                        continue;
                                }
                                if (u->waits[w].due_ms - now < next)
                                        next = u->waits[w].due_ms - now;
                                w++;
                        }
                }
        }
        return next < 0 ? 0 : next;
}

/* ---- commands from the API ------------------------------------------------------- */

static struct rjob *active_job(struct sched *s, const char *id)
{
        for (struct rjob *rj = s->jobs; rj; rj = rj->next)
                if (strcmp(rj->job->id, id) == 0)
                        return rj;
        return NULL;
}

/* A job that sits in the store only: load it whole, change it, write it. */
static int stored_job_change(struct sched *s, const char *id, enum cmd_type type)
{
        struct rjob *rj;
        int r = rjob_load(s, id, &rj);
        if (r < 0)
                return r;
        struct job *j = rj->job;
        bool terminal = job_state_is_terminal(j->state);

        if (type == CMD_CANCEL) {
                if (terminal) {
                        r = -EBUSY;
                        goto out;
                }
                job_finish(s, rj, JOB_CANCELLED, "cancelled", "cancelled by request");
        } else if (type == CMD_DELETE) {
                r = terminal ? store_job_delete(s->store, id) : -EBUSY;
                goto out;
        } else if (type == CMD_RETRY) {
                if (!terminal) {
                        r = -EBUSY;
                        goto out;
                }
                for (size_t i = 0; i < rj->nitems; i++) {
                        struct item *it = &rj->items[i];
                        if (it->state != ITEM_FAILED && it->state != ITEM_SKIPPED)
                                continue;
                        if (it->error.code && strcmp(it->error.code, "duplicate") == 0)
                                continue;
                        job_error_clear(&it->error);
                        it->attempts = 0;
                        item_set(rj, (int)i, ITEM_PENDING);
                }
                for (size_t u = 0; u < j->nper_source; u++) {
                        j->per_source[u].state = SRC_PENDING;
                        job_error_clear(&j->per_source[u].error);
                }
                j->state = JOB_QUEUED;
                j->finished_at = 0;
                job_error_clear(&j->error);
                s->maybe_queued = true;
                emit(s, EVENT_JOB, j->id, -1, false, NULL);
        }
        flush_list(s, rj);
out:
        rjob_free(rj);
        return r;
}

static int run_cmd(struct sched *s, struct cmd *c)
{
        if (c->type == CMD_RESET) {
                for (struct src *p = s->srcs; p; p = p->next)
                        if (strcmp(p->name, c->arg) == 0) {
                                breaker_reset(p->breaker);
                                emit(s, EVENT_CIRCUIT, NULL, -1, false, p->name);
                                log_info("CIRCUIT closed for %s (reset by request)", p->name);
                                return 0;
                        }
                return -ENOENT;
        }
        if (!job_id_valid(c->arg))
                return -ENOENT;
        struct rjob *rj = active_job(s, c->arg);
        if (!rj)
                return stored_job_change(s, c->arg, c->type);
        if (c->type != CMD_CANCEL)
                return -EBUSY;
        log_info("job %s: cancelled by request", rj->job->id);
        job_finish(s, rj, JOB_CANCELLED, "cancelled", "cancelled by request");
        return 0;
}

static void run_cmds(struct sched *s)
{
        while (s->cmds) {
                struct cmd *c = s->cmds;
                s->cmds = c->next;
                if (!s->cmds)
                        s->cmds_tail = NULL;
                c->result = run_cmd(s, c);
                reap_jobs(s);
                c->done = true;
        }
        pthread_cond_broadcast(&s->cmd_done);
}

static int submit(struct sched *s, enum cmd_type type, const char *arg)
{
        struct cmd c = {.type = type, .arg = arg};

        pthread_mutex_lock(&s->lock);
        if (s->stopping) {
                pthread_mutex_unlock(&s->lock);
                return -ESHUTDOWN;
        }
        /* c lives on this stack until the scheduler marks it done below */
        if (s->cmds_tail)
                s->cmds_tail->next = &c; // cppcheck-suppress autoVariables
        else
                s->cmds = &c; // cppcheck-suppress autoVariables
        s->cmds_tail = &c;    // cppcheck-suppress autoVariables
        engine_wakeup(s->engine);
        while (!c.done)
                pthread_cond_wait(&s->cmd_done, &s->lock);
        pthread_mutex_unlock(&s->lock);
        return c.result;
}

int sched_cancel(struct sched *s, const char *id) { return submit(s, CMD_CANCEL, id); }
int sched_retry(struct sched *s, const char *id) { return submit(s, CMD_RETRY, id); }
int sched_delete(struct sched *s, const char *id) { return submit(s, CMD_DELETE, id); }
int sched_circuit_reset(struct sched *s, const char *source) { return submit(s, CMD_RESET, source); }

void sched_wake(struct sched *s)
{
        pthread_mutex_lock(&s->lock);
        s->maybe_queued = true;
        engine_wakeup(s->engine);
        pthread_mutex_unlock(&s->lock);
}

/* ---- snapshots -------------------------------------------------------------------- */

int sched_circuits(struct sched *s, struct circuit_info **ret, size_t *ret_n)
{
        size_t n = 0, i = 0;
        int64_t now = clock_mono_ms(), wall = clock_wall_ms();

        pthread_mutex_lock(&s->lock);
        for (struct src *p = s->srcs; p; p = p->next)
                n++;
        struct circuit_info *c = calloc(n ? n : 1, sizeof(*c));
        if (!c) {
                pthread_mutex_unlock(&s->lock);
                return -ENOMEM;
        }
        for (struct src *p = s->srcs; p; p = p->next, i++) {
                struct breaker_info bi;
                breaker_get_info(p->breaker, now, &bi);
                c[n - 1 - i] = (struct circuit_info){
                        .source = strdup(p->name),
                        .state = breaker_state_to_string(bi.state),
                        .consecutive_failures = bi.consecutive_failures,
                        .threshold = bi.threshold,
                        .trips = bi.trips,
                        .opened_at = bi.opened_at_ms ? wall - (now - bi.opened_at_ms) : 0,
                        .retry_at = bi.retry_at_ms ? wall + (bi.retry_at_ms - now) : 0,
                        .last_error = str_dup(p->last_error),
                };
        }
        pthread_mutex_unlock(&s->lock);
        *ret = c;
        *ret_n = n;
        return 0;
}

void circuit_infos_free(struct circuit_info *c, size_t n)
{
        if (!c)
                return;
        for (size_t i = 0; i < n; i++) {
                free(c[i].source);
                free(c[i].last_error);
        }
        free(c);
}

int sched_stats(struct sched *s, struct sched_stats *ret)
{
        struct sched_stats st = {0};
        size_t n = 0, i = 0;
        int64_t now = clock_mono_ms();

        pthread_mutex_lock(&s->lock);
        for (struct src *p = s->srcs; p; p = p->next)
                n++;
        st.sources = calloc(n ? n : 1, sizeof(*st.sources));
        if (!st.sources) {
                pthread_mutex_unlock(&s->lock);
                return -ENOMEM;
        }
        st.nsources = n;
        st.uptime_ms = now - s->started_ms;
        memcpy(st.duration_count, s->duration_count, sizeof(st.duration_count));
        st.duration_sum_s = s->duration_sum_s;
        for (struct src *p = s->srcs; p; p = p->next, i++) {
                st.sources[n - 1 - i] = (struct source_stats){
                        .source = strdup(p->name),
                        .attempts = p->attempts,
                        .successes = p->successes,
                        .failures = p->failures,
                        .retries = p->retries,
                        .bytes = p->bytes,
                        .circuit = breaker_state_to_string(breaker_state(p->breaker, now)),
                };
                st.total_attempts += p->attempts;
                st.total_successes += p->successes;
                st.total_failures += p->failures;
                st.total_retries += p->retries;
                st.total_bytes += p->bytes;
        }
        pthread_mutex_unlock(&s->lock);
        *ret = st;
        return 0;
}

int sched_sources(struct sched *s, struct source_info **ret, size_t *ret_n)
{
        pthread_mutex_lock(&s->lock);
        size_t n = s->sources ? sources_count(s->sources) : 0;
        struct source_info *v = calloc(n ? n : 1, sizeof(*v));
        for (size_t i = 0; v && i < n; i++) {
                const struct source_def *d = sources_at(s->sources, i);
                v[i] = (struct source_info){
                        .name = strdup(d->name),
                        .available = d->available,
                        .unavailable_reason = str_dup(d->unavailable_reason),
                        .max_connections = d->max_connections > 0 ? d->max_connections
                                                                  : s->cfg->max_connections_per_source,
                        .requests_per_second = d->requests_per_second,
                        .per_page = d->per_page,
                };
        }
        pthread_mutex_unlock(&s->lock);
        if (!v)
                return -ENOMEM;
        *ret = v;
        *ret_n = n;
        return 0;
}

void source_infos_free(struct source_info *v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++) {
                free(v[i].name);
                free(v[i].unavailable_reason);
        }
        free(v);
}

bool sched_source_known(struct sched *s, const char *name)
{
        pthread_mutex_lock(&s->lock);
        bool known = s->sources && sources_find(s->sources, name);
        pthread_mutex_unlock(&s->lock);
        return known;
}

void sched_stats_clear(struct sched_stats *st)
{
        for (size_t i = 0; i < st->nsources; i++)
                free(st->sources[i].source);
        free(st->sources);
        memset(st, 0, sizeof(*st));
}

/* ---- the loop --------------------------------------------------------------------- */

static void report_status(struct sched *s, int64_t now)
{
        if (s->watchdog_ms > 0 && now - s->last_watchdog_ms >= s->watchdog_ms / 2) {
                notify_send("WATCHDOG=1");
                s->last_watchdog_ms = now;
        }
        if (now - s->last_status_ms < STATUS_EVERY_MS)
                return;
        s->last_status_ms = now;
        int64_t counts[_JOB_STATE_MAX] = {0};
        if (store_job_count_by_state(s->store, counts) == 0)
                notify_send("STATUS=%lld running, %lld queued, %d transfers", (long long)counts[JOB_RUNNING],
                            (long long)counts[JOB_QUEUED], engine_running(s->engine));
}

/* At most one progress event per job every PROGRESS_EVERY_MS; returns ms
 * until one is due. */
static int64_t progress_events(struct sched *s, int64_t now)
{
        int64_t next = POLL_MAX_MS;

        for (struct rjob *rj = s->jobs; rj; rj = rj->next) {
                if (!rj->progress_changed)
                        continue;
                int64_t due = rj->last_progress_ms + PROGRESS_EVERY_MS;
                if (now >= due) {
                        emit(s, EVENT_PROGRESS, rj->job->id, -1, false, NULL);
                        rj->progress_changed = false;
                        rj->last_progress_ms = now;
                } else if (due - now < next) {
                        next = due - now;
                }
        }
        return next;
}

static void prune(struct sched *s, int64_t now)
{
        int64_t n = 0;

        int64_t every = (int64_t)(s->cfg->job_retention * 1000 / 2);

        if (every > PRUNE_EVERY_MS)
                every = PRUNE_EVERY_MS;
        if (s->cfg->job_retention <= 0 || (s->last_prune_ms && now - s->last_prune_ms < every))
                return;
        s->last_prune_ms = now;
        int r = store_job_prune(s->store, clock_wall_ms() - (int64_t)(s->cfg->job_retention * 1000), &n);
        if (r < 0)
                log_error("sched: pruning old jobs: %s", strerror(-r));
        else if (n > 0)
                log_info("sched: pruned %lld job%s older than JOB_RETENTION (their files stay)",
                         (long long)n, n == 1 ? "" : "s");
}

/* Put every unfinished item back to pending and its job to queued. */
static void park_jobs(struct sched *s)
{
        committer_wait_idle(s->committer);
        apply_commits(s);
        for (struct rjob *rj = s->jobs; rj; rj = rj->next) {
                while (rj->slots) {
                        int item = rj->slots->item;
                        engine_abort_keep(s->engine, rj->slots->x);
                        rj->slots->x = NULL;
                        slot_abort(s, rj->slots);
                        if (item >= 0)
                                item_set(rj, item, ITEM_PENDING);
                }
                for (size_t u = 0; u < rj->nunits; u++) {
                        struct unit *un = &rj->units[u];
                        if (un->phase == UNIT_DONE)
                                continue;
                        rj->job->per_source[u].state = SRC_PENDING;
                }
                rj->job->state = JOB_QUEUED;
                rj->job_dirty = true;
                log_info("job %s: parked with %lld items left; it resumes at the next start", rj->job->id,
                         (long long)rj->job->progress.pending);
        }
        flush(s);
        while (s->jobs) {
                struct rjob *rj = s->jobs;
                s->jobs = rj->next;
                rjob_free(rj);
        }
}

static void *loop(void *arg)
{
        struct sched *s = arg;
        int64_t timeout = 0;

        pthread_mutex_lock(&s->lock);
        while (!s->stopping) {
                pthread_mutex_unlock(&s->lock);
                engine_poll(s->engine, (int)timeout);
                pthread_mutex_lock(&s->lock);
                if (s->stopping)
                        break;
                engine_perform(s->engine);
                apply_commits(s);
                run_cmds(s);
                int64_t now = clock_mono_ms();
                claim_jobs(s, now);
                timeout = run_timers(s, now);
                start_work(s, now);
                reap_jobs(s);
                int64_t next_progress = progress_events(s, now);
                if (next_progress < timeout)
                        timeout = next_progress;
                int64_t next_flush = flush_paced(s, now);
                if (next_flush < timeout)
                        timeout = next_flush;
                prune(s, now);
                report_status(s, now);
                if (s->watchdog_ms > 0 && timeout > s->watchdog_ms / 2)
                        timeout = s->watchdog_ms / 2;
                if (s->cmds || (s->maybe_queued && s->units_running < s->cfg->max_concurrent_sources &&
                                !units_waiting(s)))
                        timeout = 0;
        }
        park_jobs(s);
        run_cmds(s); /* answer commands that came in meanwhile */
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

static void engine_opts_from(const struct config *cfg, struct engine_opts *o)
{
        *o = (struct engine_opts){
                .request_timeout_ms = (int64_t)(cfg->request_timeout * 1000),
                .min_speed = cfg->min_download_speed,
                .stall_ms = (int64_t)(cfg->stall_timeout * 1000),
                .max_file_size = cfg->max_file_size,
                .accept_content = cfg->accept_content,
                .allow_private = cfg->allow_private_addresses,
                .max_connects = cfg->max_concurrent_downloads * 2,
        };
}

static void policy_from(const struct config *cfg, struct retry_policy *p)
{
        *p = (struct retry_policy){
                .max_retries = cfg->max_retries_per_item,
                .backoff_base_ms = (int64_t)(cfg->retry_backoff_base * 1000),
                .backoff_max_ms = (int64_t)(cfg->retry_backoff_max * 1000),
        };
}

static void wake_engine(void *ud)
{
        struct sched *s = ud;
        engine_wakeup(s->engine);
}

void sched_reconfigure(struct sched *s, const struct config *cfg, const struct source_set *sources)
{
        struct engine_opts o;

        pthread_mutex_lock(&s->lock);
        s->cfg = cfg;
        s->sources = sources;
        engine_opts_from(cfg, &o);
        engine_configure(s->engine, &o);
        policy_from(cfg, &s->policy);
        for (struct src *p = s->srcs; p; p = p->next)
                breaker_configure(p->breaker, cfg->circuit_breaker_threshold,
                                  (int64_t)(cfg->circuit_breaker_timeout * 1000));
        s->maybe_queued = true;
        engine_wakeup(s->engine);
        pthread_mutex_unlock(&s->lock);
}

static void sched_free(struct sched *s)
{
        if (!s)
                return;
        committer_free(s->committer);
        engine_free(s->engine);
        store_close(s->store);
        if (s->dl_fd >= 0)
                close(s->dl_fd);
        srcs_free(s->srcs);
        free(s->pending);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cmd_done);
        free(s);
}

int sched_start(const struct config *cfg, const struct source_set *sources, struct event_bus *events,
                struct sched **ret)
{
        struct sched *s = calloc(1, sizeof(*s));
        struct engine_opts o;
        int64_t recovered = 0;
        int r;

        if (!s)
                return -ENOMEM;
        s->cfg = cfg;
        s->sources = sources;
        s->events = events;
        s->dl_fd = -1;
        s->maybe_queued = true;
        s->started_ms = clock_mono_ms();
        s->watchdog_ms = notify_watchdog_ms();
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cmd_done, NULL);
        policy_from(cfg, &s->policy);
        srandom((unsigned)clock_wall_ms());

        r = store_open(cfg->store, &s->store);
        if (r < 0) {
                log_error("sched: cannot open the job table %s: %s", cfg->store, strerror(-r));
                goto fail;
        }
        store_set_sync(s->store, false); /* see store_set_sync(): files are flushed first */
        r = store_recover(s->store, &recovered);
        if (r < 0) {
                log_error("sched: recovering the job table: %s", strerror(-r));
                goto fail;
        }
        if (recovered > 0)
                log_info("sched: %lld job%s interrupted by the last stop will resume", (long long)recovered,
                         recovered == 1 ? "" : "s");
        r = fs_mkdir_p(cfg->download_dir);
        if (r >= 0) {
                s->dl_fd = open(cfg->download_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                r = s->dl_fd < 0 ? -errno : 0;
        }
        if (r < 0) {
                log_error("sched: cannot open DOWNLOAD_DIR %s: %s", cfg->download_dir, strerror(-r));
                goto fail;
        }
        engine_opts_from(cfg, &o);
        r = engine_new(&o, on_done, s, &s->engine);
        if (r < 0) {
                log_error("sched: cannot start the transfer engine: %s", strerror(-r));
                goto fail;
        }
        r = committer_new(wake_engine, s, &s->committer);
        if (r < 0) {
                log_error("sched: cannot start the committer: %s", strerror(-r));
                goto fail;
        }
        r = -pthread_create(&s->thread, NULL, loop, s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        sched_free(s);
        return r;
}

void sched_stop(struct sched *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        engine_wakeup(s->engine);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        sched_free(s);
}

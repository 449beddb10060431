/* sched_job: the scheduler's jobs and their items.
 *
 * Owns: loading a claimed job (its items, per-source entries and units),
 * the item bookkeeping, the maps of identical content and repeated URLs
 * within a job, writing changes to the store, the events of a turn, and a
 * job's begin, finish and reaping, claiming queued jobs and the timers.
 *
 * Invariants:
 * - a job's progress and per_source counters always equal what its items'
 *   states add up to (rjob_item_set() is the only place that moves an item);
 * - dirty items and jobs are written in one transaction, item changes at
 *   most FLUSH_EVERY_MS apart, a job's own state change at once;
 * - events are published only after the commit that holds their change.
 *
 * Runs on the scheduler's thread with sched->lock held. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/events.h"
#include "daemon/sched-internal.h"
#include "daemon/store.h"

#define FLUSH_EVERY_MS 50 /* item changes are committed at least this often */

/* ---- events ---------------------------------------------------------------- */

/* Remember an event; it is published after this turn's commit, so that a
 * stream reading the store sees what the event announces. */
void sched_emit(struct sched *s, enum event_type type, const char *job_id, int item, bool terminal,
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

/* ---- item bookkeeping ------------------------------------------------------ */

static void mark_dirty(struct rjob *rj, int item)
{
        rj->job_dirty = true;
        if (!rj->dirty[item]) {
                rj->dirty[item] = true;
                rj->dirty_list[rj->ndirty++] = item;
        }
}

void rjob_count(struct rjob *rj, struct job_source *js, enum item_state st, int d)
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
void rjob_item_set(struct rjob *rj, int idx, enum item_state st)
{
        struct item *it = &rj->items[idx];
        struct job_source *js = js_of(unit_of(rj, idx));

        rjob_count(rj, js, it->state, -1);
        it->state = st;
        rjob_count(rj, js, st, +1);
        mark_dirty(rj, idx);
        rj->progress_changed = true;
        if (st == ITEM_SUCCEEDED || st == ITEM_FAILED || st == ITEM_SKIPPED)
                sched_emit(rj->sched, EVENT_ITEM, rj->job->id, idx, false, NULL);
}

void rjob_item_skip(struct rjob *rj, int idx, const char *code, const char *msg)
{
        job_error_set(&rj->items[idx].error, code, "%s", msg);
        rjob_item_set(rj, idx, ITEM_SKIPPED);
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

int rjob_sha_find(struct rjob *rj, const char *sha, int idx, bool add)
{
        return map_find(rj, rj->sha_map, rj->sha_cap, false, sha, idx, add);
}

int rjob_url_find(struct rjob *rj, const char *url, int idx, bool add)
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
                        rjob_sha_find(rj, it->sha256, (int)i, true);
                if (it->url && !(it->error.code && strcmp(it->error.code, "duplicate") == 0))
                        rjob_url_find(rj, it->url, (int)i, true);
        }
        return 0;
}

/* Room for n items in every per-item array. */
int rjob_reserve(struct rjob *rj, size_t n)
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

int unit_queue_push(struct unit *u, int item)
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

void rjob_free(struct rjob *rj)
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
                rj->units[u].src = sched_src_get(s, j->per_source[u].source);
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
                rjob_count(rj, js, it->state, +1);
                if (it->state == ITEM_PENDING && unit_queue_push(&rj->units[u], (int)i) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int rjob_load(struct sched *s, const char *id, struct rjob **ret)
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
        rj->run = ++s->runs;
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

/* Write what changed in the jobs of list, in one transaction. On failure
 * everything stays dirty, so the next flush writes it again. */
int sched_flush_list(struct sched *s, struct rjob *list)
{
        bool any = false;
        int r;

        for (struct rjob *rj = list; rj && !any; rj = rj->next)
                any = rj->job_dirty;
        if (!any)
                return 0;
        r = store_begin(s->store);
        for (struct rjob *rj = list; rj && r >= 0; rj = rj->next) {
                if (!rj->job_dirty)
                        continue;
                for (size_t i = 0; i < rj->ndirty && r >= 0; i++)
                        r = store_item_update(s->store, rj->job->id, &rj->items[rj->dirty_list[i]]);
                if (r >= 0)
                        r = store_job_update(s->store, rj->job);
        }
        if (r >= 0)
                r = store_commit(s->store);
        if (r < 0) {
                store_rollback(s->store); /* also after a failed COMMIT, or the next BEGIN fails */
                log_error("sched: writing the job table failed: %s", strerror(-r));
                return r;
        }
        for (struct rjob *rj = list; rj; rj = rj->next) {
                for (size_t i = 0; i < rj->ndirty; i++)
                        rj->dirty[rj->dirty_list[i]] = false;
                rj->ndirty = 0;
                rj->job_dirty = false;
        }
        return 0;
}

void sched_flush(struct sched *s)
{
        sched_flush_list(s, s->jobs);
        s->flush_now = false;
}

/* Item changes are committed in batches at most FLUSH_EVERY_MS apart; a
 * job's own state change (start, end, command) at once. Events follow the
 * commit. Returns ms until the next flush is due. */
int64_t sched_flush_paced(struct sched *s, int64_t now)
{
        bool dirty = false;

        for (struct rjob *rj = s->jobs; rj && !dirty; rj = rj->next)
                dirty = rj->job_dirty;
        if (dirty && !s->flush_now && now - s->last_flush_ms < FLUSH_EVERY_MS)
                return FLUSH_EVERY_MS - (now - s->last_flush_ms);
        if (dirty) {
                sched_flush(s);
                s->last_flush_ms = now;
        }
        publish(s);
        return POLL_MAX_MS;
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

void rjob_finish(struct sched *s, struct rjob *rj, int forced, const char *code, const char *msg)
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
        sched_emit(s, EVENT_JOB, j->id, -1, true, NULL);
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
void sched_reap_jobs(struct sched *s)
{
        bool any = false;

        for (struct rjob *rj = s->jobs; rj; rj = rj->next) {
                if (rj->job->state == JOB_RUNNING && job_all_done(rj))
                        rjob_finish(s, rj, -1, "", "");
                any |= job_state_is_terminal(rj->job->state);
        }
        if (!any)
                return;
        sched_flush(s);
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
        sched_emit(s, EVENT_JOB, j->id, -1, false, NULL);
        log_info("job %s: JOB START %zu items from %zu source%s, max %d, timeout %.0f s, priority %d%s%s",
                 j->id, rj->nitems, rj->nunits, rj->nunits == 1 ? "" : "s", j->max, j->timeout, j->priority,
                 j->label && *j->label ? ", label " : "", j->label ? j->label : "");
}

bool sched_units_waiting(struct sched *s)
{
        for (struct rjob *rj = s->jobs; rj; rj = rj->next)
                for (size_t u = 0; u < rj->nunits; u++)
                        if (rj->units[u].phase == UNIT_WAITING)
                                return true;
        return false;
}

void sched_claim_jobs(struct sched *s, int64_t now)
{
        int free_units = s->cfg->max_concurrent_sources - s->units_running;
        char(*ids)[JOB_ID_LEN + 1] = NULL;
        size_t n = 0;

        if (!s->maybe_queued || free_units <= 0 || sched_units_waiting(s))
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
void sched_start_work(struct sched *s, int64_t now)
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
int64_t sched_run_timers(struct sched *s, int64_t now)
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
                        rjob_finish(s, rj, JOB_TIMED_OUT, "job_timeout", "the job's timeout passed");
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
                                if (u->waits[w].due_ms <= now && unit_queue_push(u, u->waits[w].item) == 0) {
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

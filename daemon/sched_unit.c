/* sched_unit: the (job, source) units and their transfers.
 *
 * Owns: starting, filling and closing units, the slots of transfers in
 * flight, what a finished transfer leads to (success, retry or failure),
 * and the hand-off of complete bodies to the committer until their files
 * are on disk.
 *
 * Invariants:
 * - succeeded + in flight + with the committer <= max for every job, so
 *   `max` is never exceeded;
 * - MAX_CONCURRENT_SOURCES units run at once, MAX_CONCURRENT_DOWNLOADS
 *   transfers, MAX_CONNECTIONS_PER_SOURCE per source across all jobs;
 * - a retry waiting for its time holds no transfer and no connection;
 * - a unit is done only when nothing of it is in flight or committing.
 *
 * Runs on the scheduler's thread with sched->lock held. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
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
#include "daemon/retry.h"
#include "daemon/sched-internal.h"
#include "daemon/sources.h"

/* ---- slots: the transfers in flight ------------------------------------------- */

struct slot *sched_slot_new(struct rjob *rj, struct unit *u, int item)
{
        struct slot *sl = calloc(1, sizeof(*sl));
        if (!sl)
                return NULL;
        sl->u = u;
        sl->item = item;
        return sl;
}

void sched_slot_link(struct slot *sl)
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

void sched_slot_abort(struct sched *s, struct slot *sl)
{
        if (sl->probe)
                sched_src_release_probe(sl->u->src, clock_mono_ms());
        engine_abort(s->engine, sl->x);
        slot_unlink(sl);
}

/* ---- downloads with the committer ---------------------------------------------- */

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
        unit_of(rj, pc.item)->committing++;
        return 0;
}

/* Take entry i out of rj->commits (the order is not kept). */
static struct pending_commit commit_take(struct rjob *rj, size_t i)
{
        struct pending_commit pc = rj->commits[i];

        rj->commits[i] = rj->commits[--rj->ncommits];
        unit_of(rj, pc.item)->committing--;
        return pc;
}

/* ---- running units ------------------------------------------------------------- */

static void wait_add(struct unit *u, int item, int64_t due)
{
        if (u->nwaits == u->cwaits) {
                size_t c = u->cwaits ? 2 * u->cwaits : 8;
                struct wait *w = realloc(u->waits, c * sizeof(*w));
                if (!w) {
                        unit_queue_push(u, item); /* no memory: retry at once */
                        return;
                }
                u->waits = w;
                u->cwaits = c;
        }
        u->waits[u->nwaits++] = (struct wait){item, due};
}

/* Stop a unit: abort its transfers, skip its unfinished items with code. */
void unit_close(struct sched *s, struct unit *u, enum source_state st, const char *code, const char *msg)
{
        struct rjob *rj = u->rj;
        struct job_source *js = js_of(u);

        for (struct slot *sl = rj->slots, *next; sl; sl = next) {
                next = sl->next;
                if (sl->u != u)
                        continue;
                int item = sl->item;
                sched_slot_abort(s, sl);
                if (item >= 0)
                        rjob_item_skip(rj, item, code, msg);
        }
        for (size_t i = u->qhead; i < u->qtail; i++)
                rjob_item_skip(rj, u->queue[i], code, msg);
        for (size_t i = 0; i < u->nwaits; i++)
                rjob_item_skip(rj, u->waits[i].item, code, msg);
        for (size_t i = 0; u->committing > 0 && i < rj->ncommits;) {
                /* the committer finishes the file; the item no longer waits for it */
                if (rj->item_unit[rj->commits[i].item] == (int)u->index) {
                        rjob_item_skip(rj, commit_take(rj, i).item, code, msg);
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

static void unit_maybe_done(struct sched *s, struct unit *u)
{
        if (u->phase != UNIT_RUNNING || u->running > 0 || u->committing > 0)
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

void unit_start(struct sched *s, struct unit *u, int64_t now)
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
                unit_close(s, u, SRC_FAILED, "io", "cannot create the source's download directory");
                return;
        }
        unit_maybe_done(s, u);
}

/* ---- transfers ------------------------------------------------------------------- */

static int start_item(struct sched *s, struct unit *u, int idx, bool probe)
{
        struct rjob *rj = u->rj;
        struct item *it = &rj->items[idx];
        struct slot *sl = sched_slot_new(rj, u, idx);
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
        sl->probe = probe;
        sched_slot_link(sl);
        it->attempts++;
        rjob_item_set(rj, idx, ITEM_RUNNING);
        log_debug("job %s: GET %s (source %s, attempt %d)", rj->job->id, it->url, u->src->name,
                  it->attempts);
        return 0;
}

/* Start what the limits allow from one unit. */
void unit_fill(struct sched *s, struct unit *u, int64_t now)
{
        struct rjob *rj = u->rj;
        int per_src = sched_src_limit(s, u->src);

        if (u->phase != UNIT_RUNNING || s->stopping) /* stopping: nothing new starts */
                return;
        if (u->listing && !u->list_slot && now >= u->list_due_ms && u->src->active < per_src &&
            engine_running(s->engine) < s->cfg->max_concurrent_downloads &&
            (!job_max_reached(rj) || u->list_failing))
                unit_list_start(s, u, now);
        while (u->qhead < u->qtail && engine_running(s->engine) < s->cfg->max_concurrent_downloads &&
               u->src->active < per_src &&
               rj->job->progress.succeeded + rj->inflight + (int64_t)rj->ncommits < rj->job->max) {
                if (u->src->query && !sched_src_take(s, u->src, now))
                        break;
                int idx = u->queue[u->qhead++];
                bool probe;
                if (!sched_src_allow(u->src, now, &probe)) {
                        rjob_item_skip(rj, idx, "circuit_open", "the source's circuit is open");
                        continue;
                }
                if (start_item(s, u, idx, probe) < 0) {
                        if (probe)
                                sched_src_release_probe(u->src, now);
                        u->qhead--;
                        break;
                }
        }
        unit_maybe_done(s, u);
}

/* ---- finished transfers and the committer --------------------------------------- */

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
        rjob_item_set(rj, idx, ITEM_SUCCEEDED);
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

/* The body is complete. Identical content is stored once: a body equal to
 * one already on disk takes its path, one equal to a body still with the
 * committer waits for it. Anything else goes to the committer, and the
 * item succeeds when its file is on disk. */
static void item_commit(struct sched *s, struct unit *u, int idx, const struct xfer_result *res)
{
        struct rjob *rj = u->rj;
        struct item *it = &rj->items[idx];
        int same = rjob_sha_find(rj, res->sha256, idx, false);
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
                commit_take(rj, rj->ncommits - 1);
                goto fail;
        }
        snprintf(req->job_id, sizeof(req->job_id), "%s", rj->job->id);
        req->item = idx;
        req->attempt = it->attempts;
        req->run = rj->run;
        req->part_fd = res->part_fd;
        req->size = res->bytes;
        snprintf(req->part, sizeof(req->part), "%s", res->part);
        snprintf(req->name, sizeof(req->name), "%s", res->name);
        snprintf(req->sha256, sizeof(req->sha256), "%s", res->sha256);
        if (it->sha256)
                rjob_sha_find(rj, it->sha256, idx, true);
        committer_submit(s->committer, req);
        return;
fail:
        free(req);
        close(res->part_fd);
        unlinkat(u->dir_fd, res->part, 0);
fail_nofile:
        job_error_set(&it->error, "io", "out of memory or file descriptors");
        rjob_item_set(rj, idx, ITEM_FAILED);
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
                rjob_item_set(rj, pc.item, ITEM_FAILED);
                log_error("job %s: %s: writing the file into place: %s", rj->job->id, it->url,
                          strerror(-err));
        } else {
                item_succeeded(rj, u, pc.item, path, pc.bytes);
        }
        unit_fill(s, u, clock_mono_ms());
}

/* The entry of rj->commits that answer r settles: the item that owned the
 * file or one waiting for the same content; -1 when none is left. */
static int commit_match(const struct rjob *rj, const struct commit_req *r)
{
        for (size_t i = 0; i < rj->ncommits; i++) {
                const struct pending_commit *pc = &rj->commits[i];
                if ((pc->leader < 0 && pc->item == r->item && pc->attempt == r->attempt) ||
                    (pc->leader == r->item && pc->leader_attempt == r->attempt))
                        return (int)i;
        }
        return -1;
}

/* The committer's answers: the item that owned the file and the items
 * waiting for the same content succeed (or fail "io"). An answer nobody
 * waits for any more (the job or source was stopped meanwhile) leaves the
 * file where it is. */
void sched_apply_commits(struct sched *s)
{
        struct commit_req *done = committer_take_done(s->committer);

        for (struct commit_req *r = done; r; r = r->next) {
                struct rjob *rj = s->jobs;
                /* a retried job is loaded anew and counts attempts from 0
                 * again: only answers of this very run are its own */
                while (rj && (strcmp(rj->job->id, r->job_id) != 0 || rj->run != r->run))
                        rj = rj->next;
                if (!rj)
                        continue;
                char *path = NULL;
                int err = r->error;
                if (err == 0 && asprintf(&path, "%s/%s/%s", rj->job->id, unit_of(rj, r->item)->src->name,
                                         r->final_name) < 0) {
                        path = NULL;
                        err = -ENOMEM;
                }
                /* one at a time: resolving an entry may start or close work */
                for (int i; (i = commit_match(rj, r)) >= 0;)
                        commit_resolve(s, rj, commit_take(rj, (size_t)i), path, err);
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
                rjob_item_set(rj, idx, ITEM_PENDING);
                log_info("job %s: RETRY attempt %d/%d for %s in %.1fs (%s: %s)", rj->job->id,
                         it->attempts + 1, s->policy.max_retries + 1, it->url, (double)delay / 1000.0, code,
                         res->message);
                return;
        }
        rjob_item_set(rj, idx, ITEM_FAILED);
        log_info("job %s: FAILED %s after %d attempt%s (%s: %s)", rj->job->id, it->url, it->attempts,
                 it->attempts == 1 ? "" : "s", code, res->message);
}

void sched_on_done(void *userdata, const struct xfer_result *res, void *ctx)
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
                unit_list_done(s, u, res, now);
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
                sched_log_circuit(s, u->src, now, ok ? "probe succeeded" : retry_class_code(res->rc));
        if (ok)
                item_commit(s, u, idx, res);
        else
                item_failed(s, u, idx, res, now);
        unit_fill(s, u, now);
}

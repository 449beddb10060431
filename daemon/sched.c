/* sched: the loop. One thread owns the running jobs (jobrun), the state of
 * every source (srctab), the requests in flight (xfers, over the engine)
 * and the store connection that writes them; work.c decides what a job's
 * groups start and what their outcomes mean.
 *
 * A turn: renew the leases (dropping the jobs lost to other nodes); take
 * the engine's and the committer's outcomes and settle them; carry out
 * the API's commands; claim queued jobs; run the timers
 * (deadlines, retries, sources that may admit again); start what the
 * limits allow, jobs by priority; end the jobs that are done; write every
 * change of the turn in one transaction; then publish the events of what
 * was written and, at most every SNAPSHOT_EVERY_MS, a snapshot for the
 * API. Only the fill step starts work: outcomes only record and mark.
 *
 * Invariants:
 * - events are published only after the commit that holds their change;
 * - a finished job stays in memory until its end is written, so a failing
 *   job table delays the record, never loses it; writes are retried with
 *   backoff and the failure is logged once per change of state;
 * - other threads touch only the command queue (cmd_lock), the wake flag
 *   and the snapshot hub. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fs.h"
#include "common/human.h"
#include "common/log.h"
#include "common/str.h"
#include "daemon/cluster.h"
#include "daemon/commit.h"
#include "daemon/config.h"
#include "daemon/events.h"
#include "daemon/jobrun.h"
#include "daemon/notify.h"
#include "daemon/sched.h"
#include "daemon/sources.h"
#include "daemon/srctab.h"
#include "daemon/store.h"
#include "daemon/work.h"
#include "daemon/xfers.h"

#define POLL_MAX_MS        1000  /* longest wait in the engine when no timer is due sooner */
#define FLUSH_EVERY_MS     50    /* item changes are committed at least this often */
#define PROGRESS_EVERY_MS  250   /* at most 4 progress events a second per job */
#define SNAPSHOT_EVERY_MS  100   /* a new snapshot for the API at most this often */
#define STATUS_EVERY_MS    5000  /* STATUS= for systemd */
#define PRUNE_EVERY_MS     60000 /* jobs past JOB_RETENTION, idle sources */
#define STORE_RETRY_MIN_MS 100   /* a failed write is tried again after this, doubling */
#define STORE_RETRY_MAX_MS 5000
#define IDLE_SOURCE_MS     600000 /* URL sources and hosts idle this long are forgotten */
#define STORE_CHECK_MS     2000   /* how often the job table's file is checked to be the one opened */

enum cmd_type {
        CMD_CANCEL,
        CMD_RETRY,
        CMD_DELETE,
        CMD_PAUSE,
        CMD_RESUME,
        CMD_RESET,
        CMD_STATS_RESET,
        CMD_CONFIG,
        CMD_NODE_URL
};

struct cmd {
        enum cmd_type type;
        const char *arg;
        const struct config *cfg;         /* CMD_CONFIG */
        const struct source_set *sources; /* CMD_CONFIG */
        int result;
        bool done;
        struct cmd *next;
};

/* A job in memory with what the loop keeps of it. */
struct running {
        struct jobrun *jr;
        int64_t progress_ms; /* monotonic, last progress event */
        bool progress_due;   /* its counters or bytes changed since */
        int64_t speed_ms;    /* monotonic start of its speed sample */
        int64_t speed_bytes; /* bytes at speed_ms */
        int64_t speed_bps;   /* the last sample's speed */
};

struct sched {
        const struct config *cfg;
        const struct source_set *sources;
        struct event_bus *events; /* may be NULL */
        struct sched_hooks hooks;
        struct store *store;
        struct engine *engine; /* NULL when a hook's engine is used */
        struct committer *committer;
        struct srctab *srcs;
        struct xfers *xfers;
        struct work_env env;
        struct snapshot_hub *hub;
        struct cluster *cluster; /* this node among those sharing the table */
        size_t live_nodes;       /* nodes alive at the last heartbeat, >= 1 */
        bool shared;             /* the table is shared by nodes (PostgreSQL) */
        char **circuits;         /* sources whose circuit changed, to write and announce */
        size_t ncircuits, ccircuits;
        int dl_fd;

        pthread_t thread;
        bool thread_running;
        pthread_mutex_t cmd_lock; /* guards cmds and stopping */
        pthread_cond_t cmd_done;
        struct cmd *cmds, *cmds_tail;
        bool stopping;
        atomic_bool wake; /* new jobs may be queued */

        /* the loop's own */
        struct running *jobs; /* priority high to low, then oldest first */
        size_t njobs, cjobs;
        uint64_t runs;
        bool maybe_queued;
        int64_t last_claim_ms; /* monotonic, the last claim asked of the store; 0: none */
        int64_t started_ms, last_flush_ms, last_snapshot_ms, last_prune_ms, last_status_ms;
        int64_t last_watchdog_ms, watchdog_ms;
        bool flush_now, snapshot_now;
        struct snapshot_circuits *circ; /* the last export of the circuits, shared by snapshots */
        int64_t circ_ms;                /* monotonic, when it was made */
        bool circuits_now;              /* a circuit changed state, a job ended, a command ran */
        bool store_failing;
        int store_errno; /* why, while failing */
        int64_t store_retry_ms, store_backoff_ms;
        bool store_gone; /* the job table's file was deleted or replaced: no new work */
        int64_t last_check_ms;
        int64_t duration_count[SNAPSHOT_DURATION_BUCKETS];
        double duration_sum_s;
};

static void renew(struct sched *s, int64_t now);
static void beat(struct sched *s, int64_t now);
static bool take_probe(void *ud, struct src *src);

/* ---- clocks ---------------------------------------------------------------------------- */

static int64_t mono(struct sched *s)
{
        return s->hooks.mono_ms ? s->hooks.mono_ms(s->hooks.ud) : clock_mono_ms();
}
static int64_t wall(struct sched *s)
{
        return s->hooks.wall_ms ? s->hooks.wall_ms(s->hooks.ud) : clock_wall_ms();
}

static double rand01(void *ud)
{
        struct sched *s = ud;
        if (s->hooks.rand01)
                return s->hooks.rand01(s->hooks.ud);
        return (double)random() / ((double)RAND_MAX + 1.0);
}

/* ---- the jobs in memory ------------------------------------------------------------------ */

static struct running *find_job(struct sched *s, const char *id)
{
        for (size_t i = 0; i < s->njobs; i++)
                if (strcmp(jobrun_id(s->jobs[i].jr), id) == 0)
                        return &s->jobs[i];
        return NULL;
}

static bool runs_before(const struct job *a, const struct job *b)
{
        return a->priority > b->priority || (a->priority == b->priority && a->seq < b->seq);
}

static int job_add(struct sched *s, struct jobrun *jr, int64_t now)
{
        if (s->njobs == s->cjobs) {
                size_t c = s->cjobs ? 2 * s->cjobs : 16;
                struct running *v = realloc(s->jobs, c * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                s->jobs = v;
                s->cjobs = c;
        }
        size_t at = s->njobs;
        while (at > 0 && runs_before(jobrun_job(jr), jobrun_job(s->jobs[at - 1].jr)))
                at--;
        memmove(&s->jobs[at + 1], &s->jobs[at], (s->njobs - at) * sizeof(*s->jobs));
        s->jobs[at] = (struct running){.jr = jr, .progress_ms = now - PROGRESS_EVERY_MS, .speed_ms = now};
        s->njobs++;
        return 0;
}

static void job_remove(struct sched *s, size_t i)
{
        struct jobrun *jr = s->jobs[i].jr;
        s->circuits_now = true; /* its statistics, whole */
        xfers_forget(s->xfers, jr, NULL, NULL);
        jobrun_free(jr);
        memmove(&s->jobs[i], &s->jobs[i + 1], (s->njobs - i - 1) * sizeof(*s->jobs));
        s->njobs--;
}

/* ---- events ------------------------------------------------------------------------------- */

static void publish(struct sched *s, enum event_type type, const char *job_id, int item, bool terminal,
                    struct event_data *d)
{
        struct event e = {.type = type, .item = item, .terminal = terminal, .data = d};
        if (!s->events) {
                event_data_unref(d);
                return;
        }
        snprintf(e.job_id, sizeof(e.job_id), "%s", job_id ? job_id : "");
        events_publish(s->events, &e);
}

static void live_of(struct sched *s, struct running *r, struct job_live *ret);

static void job_event(struct jobrun *jr, enum jobrun_event ev, int item, const struct jobrun_retry *retry,
                      void *ud)
{
        struct sched *s = ud;
        struct running *r = find_job(s, jobrun_id(jr));
        struct event_data *d;
        const struct job *j = jobrun_job(jr);

        switch (ev) {
        case JOBRUN_EV_JOB:
                d = event_data_new(EVENT_JOB);
                if (d && job_dup(j, &d->job) < 0) {
                        event_data_unref(d);
                        d = NULL;
                }
                publish(s, EVENT_JOB, j->id, -1, job_state_is_terminal(j->state), d);
                if (r)
                        r->progress_due = false; /* the job object carries its progress */
                break;
        case JOBRUN_EV_ITEM:
        case JOBRUN_EV_RETRY:
                d = event_data_new(EVENT_ITEM);
                if (d && item_copy(&d->item, jobrun_item(jr, item)) < 0) {
                        free(d);
                        d = NULL;
                }
                if (d && retry) {
                        /* the item as the retry left it, though it may have moved on */
                        d->item.state = ITEM_PENDING;
                        d->item.attempts = retry->attempt;
                        d->retry_set = true;
                        d->retry =
                                (struct event_retry){.attempt = retry->attempt, .delay_ms = retry->delay_ms};
                        snprintf(d->retry.reason, sizeof(d->retry.reason), "%s",
                                 retry->code ? retry->code : "");
                }
                publish(s, EVENT_ITEM, j->id, item, false, d);
                break;
        case JOBRUN_EV_PROGRESS:
                if (r)
                        r->progress_due = true;
                break;
        }
}

/* Coalesced progress: at most one per job every PROGRESS_EVERY_MS, while
 * its counters change or its transfers move. Returns ms until one is due. */
static int64_t progress_events(struct sched *s, int64_t now)
{
        int64_t next = POLL_MAX_MS;

        for (size_t i = 0; i < s->njobs; i++) {
                struct running *r = &s->jobs[i];
                if (jobrun_job(r->jr)->state != JOB_RUNNING)
                        continue;
                bool moving = xfers_of(s->xfers, r->jr) > 0;
                if (!r->progress_due && !moving)
                        continue;
                int64_t due = r->progress_ms + PROGRESS_EVERY_MS;
                if (now < due) {
                        if (due - now < next)
                                next = due - now;
                        continue;
                }
                struct event_data *d = event_data_new(EVENT_PROGRESS);
                if (d)
                        live_of(s, r, &d->live);
                publish(s, EVENT_PROGRESS, jobrun_id(r->jr), -1, false, d);
                r->progress_due = false;
                r->progress_ms = now;
                if (moving && PROGRESS_EVERY_MS < next)
                        next = PROGRESS_EVERY_MS;
        }
        return next;
}

/* A circuit changed: written with the turn, announced after. */
static void note_circuit(const struct src *src, void *ud)
{
        struct sched *s = ud;

        if (src_turned_half_open(src))
                log_info("CIRCUIT BREAKER half-open for %s: one probe goes (open time over)", src_name(src));
        s->circuits_now = true;
        for (size_t i = 0; i < s->ncircuits; i++)
                if (strcmp(s->circuits[i], src_name(src)) == 0)
                        return;
        if (s->ncircuits == s->ccircuits) {
                size_t c = s->ccircuits ? 2 * s->ccircuits : 8;
                char **v = realloc(s->circuits, c * sizeof(*v));
                if (!v)
                        return;
                s->circuits = v;
                s->ccircuits = c;
        }
        if ((s->circuits[s->ncircuits] = strdup(src_name(src))))
                s->ncircuits++;
        s->snapshot_now = true;
}

static void circuit_event(const struct src *src, void *ud)
{
        struct sched *s = ud;
        struct event_data *d = event_data_new(EVENT_CIRCUIT);

        if (d && srctab_info(s->srcs, src, mono(s), &d->circuit) < 0) {
                free(d);
                d = NULL;
        }
        publish(s, EVENT_CIRCUIT, NULL, -1, false, d); /* the source: d->circuit.name */
        s->snapshot_now = true;
}

/* Take in the circuits other nodes (or an earlier run) changed in the
 * table: announced, never written back (that would be news to the others
 * in turn). Local changes not written yet go first: the sync waits. */
static void sync_circuits(struct sched *s, int64_t now)
{
        if (s->ncircuits > 0 || s->store_gone)
                return;
        cluster_sync_circuits(s->cluster, s->srcs, now, wall(s), false);
        srctab_drain_changed(s->srcs, circuit_event, s);
}

/* ---- writing ---------------------------------------------------------------------------------- */

static void store_failed(struct sched *s, int r, int64_t now)
{
        if (!s->store_failing)
                log_error("sched: the job table cannot be written (%s); the changes are kept and written "
                          "when it can be again",
                          strerror(-r));
        if (s->store_failing && now < s->store_retry_ms) {
                s->store_errno = -r; /* a heartbeat or renewal between two tries: the backoff stands */
                return;
        }
        s->store_failing = true;
        s->store_errno = -r;
        s->store_backoff_ms = s->store_backoff_ms ? s->store_backoff_ms * 2 : STORE_RETRY_MIN_MS;
        if (s->store_backoff_ms > STORE_RETRY_MAX_MS)
                s->store_backoff_ms = STORE_RETRY_MAX_MS;
        s->store_retry_ms = now + s->store_backoff_ms;
        s->snapshot_now = true;
}

/* The job table is still the one opened (not deleted or replaced under us).
 * When it is not, the daemon takes no new work: writing on would split the
 * record in two. */
static void store_identity(struct sched *s, int64_t now)
{
        if (s->store_gone || now - s->last_check_ms < STORE_CHECK_MS)
                return;
        s->last_check_ms = now;
        int r = store_check(s->store);
        if (r != -ESTALE)
                return;
        s->store_gone = true;
        s->snapshot_now = true;
        log_error("sched: the job table's file was deleted or replaced while hauld ran; hauld takes no new "
                  "work: restart it to open the table again");
}

static void store_recovered(struct sched *s)
{
        if (s->store_failing)
                log_info("sched: the job table is written again; every kept change has landed");
        s->store_failing = false;
        s->store_backoff_ms = 0;
        s->snapshot_now = true;
}

/* Do changes wait to be written (a per_source paced for later included)? */
static bool changes_waiting(const struct sched *s)
{
        for (size_t i = 0; i < s->njobs; i++)
                if (jobrun_dirty(s->jobs[i].jr, INT64_MAX))
                        return true;
        return s->ncircuits > 0;
}

/* A call of the job table other than a write (claim, renewal, heartbeat)
 * went through: a failure is over, unless changes still wait to be
 * written (then their write tells). */
static void store_answered(struct sched *s)
{
        if (s->store_failing && !changes_waiting(s))
                store_recovered(s);
}

/* Write every dirty job in one transaction; on success publish their
 * events and forget the ended ones. */
static int flush_once(struct sched *s, int64_t now)
{
        bool any = s->ncircuits > 0;
        int r;

        for (size_t i = 0; i < s->njobs && !any; i++)
                any = jobrun_dirty(s->jobs[i].jr, now);
        if (!any)
                return 0;
        r = store_begin(s->store);
        for (size_t i = 0; i < s->ncircuits && r >= 0; i++) {
                const struct src *src = srctab_find(s->srcs, s->circuits[i]);
                if (src)
                        r = cluster_put_circuit(s->cluster, s->srcs, src, now, wall(s));
        }
        for (size_t i = 0; i < s->njobs && r >= 0; i++)
                if (jobrun_dirty(s->jobs[i].jr, now))
                        r = jobrun_write(s->jobs[i].jr, s->store, now);
        if (r >= 0)
                r = store_commit(s->store);
        if (r < 0) {
                store_rollback(s->store); /* also after a failed COMMIT, or the next BEGIN fails */
                if (r != -ESTALE)
                        store_failed(s, r, now);
                return r;
        }
        store_recovered(s);
        s->last_flush_ms = now;
        s->flush_now = false;
        for (size_t i = 0; i < s->njobs; i++) {
                jobrun_written(s->jobs[i].jr, now);
                jobrun_drain_events(s->jobs[i].jr, job_event, s);
        }
        for (size_t i = 0; i < s->ncircuits; i++) { /* after the items whose outcomes changed them */
                const struct src *src = srctab_find(s->srcs, s->circuits[i]);
                if (src)
                        circuit_event(src, s);
                free(s->circuits[i]);
        }
        s->ncircuits = 0;
        for (size_t i = s->njobs; i-- > 0;) {
                enum job_state st = jobrun_job(s->jobs[i].jr)->state;
                if (st != JOB_RUNNING) {
                        job_remove(s, i);
                        s->snapshot_now = true;
                }
        }
        return 0;
}

/* A write refused for a lease (-ESTALE) names no job: renew to learn
 * which were lost, drop them, and write the rest. */
static int flush(struct sched *s, int64_t now)
{
        int r = flush_once(s, now);
        if (r != -ESTALE)
                return r;
        cluster_renew_soon(s->cluster);
        renew(s, now);
        return flush_once(s, now);
}

/* Item changes go in batches at most FLUSH_EVERY_MS apart; a job's own
 * change (start, end, command) at once; after a failure, on its backoff.
 * Returns ms until the next write is due. */
static int64_t flush_paced(struct sched *s, int64_t now)
{
        bool dirty = s->ncircuits > 0;
        int64_t later = POLL_MAX_MS;

        for (size_t i = 0; i < s->njobs && !dirty; i++) {
                dirty = jobrun_dirty(s->jobs[i].jr, now);
                int64_t due = jobrun_per_source_due(s->jobs[i].jr); /* a per_source change waits */
                if (due - now < later)
                        later = due - now;
        }
        if (!dirty)
                return later;
        if (s->store_failing && now < s->store_retry_ms)
                return s->store_retry_ms - now;
        if (!s->store_failing && !s->flush_now && now - s->last_flush_ms < FLUSH_EVERY_MS)
                return FLUSH_EVERY_MS - (now - s->last_flush_ms);
        if (flush(s, now) < 0)
                return s->store_retry_ms - now;
        return POLL_MAX_MS;
}

/* ---- logging a job's start and end ------------------------------------------------------------- */

static void log_start(struct sched *s, struct jobrun *jr)
{
        const struct job *j = jobrun_job(jr);
        const struct config *c = s->cfg;
        char srcs[512] = "";
        size_t o = 0;

        for (size_t i = 0; j->query && i < j->nsources && o < sizeof(srcs); i++)
                o += (size_t)snprintf(srcs + o, sizeof(srcs) - o, "%s%s", i ? ", " : "", j->sources[i]);
        if (j->query)
                log_info("job %s: === JOB START === | Query: %s | Sources: [%s] | Max: %d | Items: %lld%s%s",
                         j->id, j->query, srcs, j->max, (long long)j->progress.total,
                         *j->label ? " | Label: " : "", j->label);
        else
                log_info("job %s: === JOB START === | URLs: %lld on %zu host%s | Max: %d%s%s", j->id,
                         (long long)j->progress.total, jobrun_ngroups(jr),
                         jobrun_ngroups(jr) == 1 ? "" : "s", j->max, *j->label ? " | Label: " : "",
                         j->label);
        log_info("job %s: CONFIG: MAX_CONCURRENT_SOURCES=%d, SOURCE_TIMEOUT=%gs, GLOBAL_TIMEOUT=%gs", j->id,
                 c->max_concurrent_sources,
                 j->limits.source_timeout > 0 ? j->limits.source_timeout : c->source_timeout, j->timeout);
        log_info("job %s: CONFIG: REQUEST_TIMEOUT=%gs, MAX_RETRIES_PER_SOURCE=%d, MAX_RETRIES_PER_ITEM=%d",
                 j->id, j->limits.request_timeout > 0 ? j->limits.request_timeout : c->request_timeout,
                 j->limits.max_retries >= 0 ? j->limits.max_retries : c->max_retries_per_source,
                 c->max_retries_per_item);
        log_info("job %s: CONFIG: MIN_DOWNLOAD_SPEED=%lld bytes/s, STALL_TIMEOUT=%gs", j->id,
                 (long long)c->min_download_speed,
                 j->limits.stall_timeout > 0 ? j->limits.stall_timeout : c->stall_timeout);
        log_info("job %s: CONFIG: CIRCUIT_BREAKER_THRESHOLD=%d, CIRCUIT_BREAKER_TIMEOUT=%gs", j->id,
                 c->circuit_breaker_threshold, c->circuit_breaker_timeout);
}

/* "a, b" of the groups for which ok(js) holds; "none" when none. */
static void source_list(struct jobrun *jr, bool (*ok)(const struct job_source *), char *buf, size_t size)
{
        size_t o = 0;

        buf[0] = '\0';
        for (size_t g = 0; g < jobrun_ngroups(jr) && o < size; g++) {
                const struct job_source *js = jobrun_source(jr, (int)g);
                if (ok(js))
                        o += (size_t)snprintf(buf + o, size - o, "%s%s", o ? ", " : "", js->source);
        }
        if (!buf[0])
                snprintf(buf, size, "none");
}

static bool source_ok(const struct job_source *js) { return js->succeeded > 0; }

static bool source_failed(const struct job_source *js)
{
        return js->succeeded == 0 &&
               (js->failed > 0 || js->state == SRC_FAILED || js->state == SRC_TIMED_OUT);
}

static void log_end(struct sched *s, struct jobrun *jr, int64_t now)
{
        const struct job *j = jobrun_job(jr);
        int64_t images = 0, videos = 0, attempts = 0, retries = 0;
        char ok[512], bad[512], n1[HUMAN_MAX], n2[HUMAN_MAX], n3[HUMAN_MAX];

        for (size_t i = 0; i < jobrun_nitems(jr); i++) {
                const struct item *it = jobrun_item(jr, (int)i);
                if (it->state != ITEM_SUCCEEDED || !it->content_type)
                        continue;
                images += str_startswith(it->content_type, "image/");
                videos += str_startswith(it->content_type, "video/");
        }
        for (size_t g = 0; g < jobrun_ngroups(jr); g++) {
                attempts += jobrun_source(jr, (int)g)->attempts;
                retries += jobrun_source(jr, (int)g)->retries;
        }
        source_list(jr, source_ok, ok, sizeof(ok));
        source_list(jr, source_failed, bad, sizeof(bad));
        log_info("job %s: === JOB COMPLETE === %s | Downloaded: %lld | Images: %lld | Videos: %lld | in "
                 "%s%s%s",
                 j->id, job_state_to_string(j->state), (long long)j->progress.succeeded, (long long)images,
                 (long long)videos, human_secs(j->started_at ? wall(s) - j->started_at : 0, n1, sizeof(n1)),
                 j->error.code ? " | " : "", j->error.code ? j->error.message : "");
        log_info("job %s: STATISTICS | Success: %s | Failed: %s", j->id, ok, bad);
        log_info("job %s: DOWNLOAD STATS | Attempts: %lld, Successes: %lld, Failures: %lld, Skipped: %lld, "
                 "Retries: %lld",
                 j->id, (long long)attempts, (long long)j->progress.succeeded, (long long)j->progress.failed,
                 (long long)j->progress.skipped, (long long)retries);
        log_info("job %s: DOWNLOAD STATS | Total Bytes: %s (%s)", j->id,
                 human_count(j->progress.bytes, n1, sizeof(n1)),
                 human_mb(j->progress.bytes, n2, sizeof(n2)));
        for (size_t g = 0; g < jobrun_ngroups(jr); g++) {
                const struct job_source *js = jobrun_source(jr, (int)g);
                struct src_info si;
                const char *circuit = "CLOSED";
                if (srctab_info(s->srcs, jobrun_group(jr, (int)g)->src, now, &si) == 0) {
                        circuit = si.state == BREAKER_OPEN        ? "OPEN"
                                  : si.state == BREAKER_HALF_OPEN ? "HALF_OPEN"
                                                                  : "CLOSED";
                        src_info_clear(&si);
                }
                log_info("job %s: SOURCE STATS | %s: Attempts=%lld, Success=%lld, Fail=%lld, Bytes=%s, "
                         "Circuit=%s",
                         j->id, js->source, (long long)js->attempts, (long long)js->succeeded,
                         (long long)js->failed, human_count(js->bytes, n3, sizeof(n3)), circuit);
        }
}

/* End job r now with st (code NULL: the error its items add up to). */
static void job_end(struct sched *s, struct running *r, int st, const char *code, const char *msg,
                    int64_t now)
{
        struct jobrun *jr = r->jr;

        work_end(&s->env, jr, st < 0 ? JOB_SUCCEEDED : (enum job_state)st, code, msg, now);
        if (st < 0)
                st = (int)jobrun_outcome(jr, &code, &msg);
        jobrun_set_state(jr, (enum job_state)st, code, msg, wall(s));
        s->flush_now = true;
        log_end(s, jr, now);
}

/* ---- commands from the API ----------------------------------------------------------------------- */

/* A job that sits in the store only: load it, change it, write it. */
static int stored_change(struct sched *s, const char *id, enum cmd_type type)
{
        struct jobrun *jr;
        int64_t token = 0;
        int r = 0;

        /* a new lease fences out a node that may be running it (another
         * node's job, or one whose record this node has not claimed) */
        if (type != CMD_DELETE)
                r = store_lease_take(s->store, id, cluster_node(s->cluster), wall(s),
                                     cluster_lease_ms(s->cluster), &token);
        if (r < 0 || (r = jobrun_load(s->store, id, ++s->runs, &jr)) < 0)
                return r == -ENOENT ? r : r == -ESTALE ? -EBUSY : r;
        jobrun_set_lease(jr, token);
        enum job_state st = jobrun_job(jr)->state;
        bool terminal = job_state_is_terminal(st);
        switch (type) {
        case CMD_CANCEL:
                if (terminal) {
                        r = -EBUSY;
                        goto out;
                }
                if (st == JOB_RUNNING)
                        log_info("job %s: cancelled by request while node %s ran it", id,
                                 jobrun_job(jr)->lease_owner ? jobrun_job(jr)->lease_owner : "?");
                jobrun_skip_all(jr, "cancelled", "cancelled by request");
                jobrun_set_state(jr, JOB_CANCELLED, "cancelled", "cancelled by request", wall(s));
                break;
        case CMD_RETRY:
                if (!terminal) {
                        r = -EBUSY;
                        goto out;
                }
                jobrun_reset_failed(jr);
                jobrun_set_state(jr, JOB_QUEUED, NULL, NULL, 0);
                s->maybe_queued = true;
                break;
        case CMD_DELETE:
                r = terminal ? store_job_delete(s->store, id) : -EBUSY;
                goto out;
        case CMD_PAUSE:
                if (st != JOB_QUEUED && st != JOB_RUNNING) {
                        r = -EBUSY;
                        goto out;
                }
                jobrun_set_state(jr, JOB_PAUSED, NULL, NULL, 0);
                break;
        case CMD_RESUME:
                if (st != JOB_PAUSED) {
                        r = -EBUSY;
                        goto out;
                }
                jobrun_set_state(jr, JOB_QUEUED, NULL, NULL, 0);
                s->maybe_queued = true;
                break;
        default:
                r = -EINVAL;
                goto out;
        }
        r = store_begin(s->store);
        if (r >= 0)
                r = jobrun_write(jr, s->store, mono(s));
        if (r >= 0)
                r = store_commit(s->store);
        if (r < 0) {
                store_rollback(s->store);
                r = -EIO;
                goto out;
        }
        jobrun_written(jr, mono(s));
        jobrun_drain_events(jr, job_event, s);
out:
        jobrun_free(jr);
        return r;
}

/* A change of a job in memory, written before the answer. */
static int active_change(struct sched *s, struct running *r, enum cmd_type type, int64_t now)
{
        struct jobrun *jr = r->jr;

        if (jobrun_job(jr)->state != JOB_RUNNING)
                return -EBUSY; /* ended, its record not written yet */
        if (type == CMD_CANCEL) {
                log_info("job %s: cancelled by request", jobrun_id(jr));
                job_end(s, r, JOB_CANCELLED, "cancelled", "cancelled by request", now);
        } else if (type == CMD_PAUSE) {
                log_info("job %s: paused by request; %lld items left", jobrun_id(jr),
                         (long long)(jobrun_job(jr)->progress.total - jobrun_job(jr)->progress.succeeded));
                work_park(&s->env, jr, JOB_PAUSED, now);
        } else
                return -EBUSY;
        return flush(s, now) < 0 ? -EIO : 0;
}

static int run_cmd(struct sched *s, struct cmd *c, int64_t now)
{
        struct src *src;

        switch (c->type) {
        case CMD_RESET:
                if (!(src = srctab_find(s->srcs, c->arg)))
                        return -ENOENT;
                srctab_reset_circuit(s->srcs, src);
                log_info("CIRCUIT BREAKER closed for %s (reset by request)", c->arg);
                return 0;
        case CMD_STATS_RESET:
                srctab_reset_stats(s->srcs);
                memset(s->duration_count, 0, sizeof(s->duration_count));
                s->duration_sum_s = 0;
                log_info("sched: statistics reset by request");
                return 0;
        case CMD_CONFIG:
                return 0; /* applied by the caller */
        case CMD_NODE_URL:
                cluster_set_url(s->cluster, c->arg);
                return 0;
        default:
                break;
        }
        if (!job_id_valid(c->arg))
                return -ENOENT;
        struct running *r = find_job(s, c->arg);
        if (!r)
                return stored_change(s, c->arg, c->type);
        if (c->type == CMD_CANCEL || c->type == CMD_PAUSE)
                return active_change(s, r, c->type, now);
        return -EBUSY;
}

static void apply_config(struct sched *s, const struct config *cfg, const struct source_set *sources);

static void publish_snapshot(struct sched *s, int64_t now);

/* Carry out the commands waiting, then answer them: after a snapshot that
 * shows their effect, so that an API answer read from it is current. */
static void run_cmds(struct sched *s, int64_t now)
{
        struct cmd *list, *c;

        pthread_mutex_lock(&s->cmd_lock);
        list = s->cmds;
        s->cmds = s->cmds_tail = NULL;
        pthread_mutex_unlock(&s->cmd_lock);
        if (!list)
                return;
        s->circuits_now = true; /* what a command changed shows in its answer */
        for (c = list; c; c = c->next) {
                if (c->type == CMD_CONFIG)
                        apply_config(s, c->cfg, c->sources);
                c->result = run_cmd(s, c, now);
        }
        publish_snapshot(s, now);
        pthread_mutex_lock(&s->cmd_lock);
        for (c = list; c; c = c->next)
                c->done = true;
        pthread_cond_broadcast(&s->cmd_done);
        pthread_mutex_unlock(&s->cmd_lock);
}

static int submit(struct sched *s, struct cmd *c)
{
        pthread_mutex_lock(&s->cmd_lock);
        if (s->stopping) {
                pthread_mutex_unlock(&s->cmd_lock);
                return -ESHUTDOWN;
        }
        if (s->cmds_tail)
                s->cmds_tail->next = c;
        else
                s->cmds = c;
        s->cmds_tail = c;
        if (!s->thread_running) { /* tests: no thread, the caller's turn does it */
                pthread_mutex_unlock(&s->cmd_lock);
                run_cmds(s, mono(s));
                return c->result;
        }
        if (s->engine)
                engine_wakeup(s->engine);
        while (!c->done)
                pthread_cond_wait(&s->cmd_done, &s->cmd_lock);
        pthread_mutex_unlock(&s->cmd_lock);
        return c->result;
}

static int command(struct sched *s, enum cmd_type type, const char *arg)
{
        struct cmd c = {.type = type, .arg = arg};
        return submit(s, &c);
}

int sched_cancel(struct sched *s, const char *id) { return command(s, CMD_CANCEL, id); }
int sched_retry(struct sched *s, const char *id) { return command(s, CMD_RETRY, id); }
int sched_delete(struct sched *s, const char *id) { return command(s, CMD_DELETE, id); }
int sched_pause(struct sched *s, const char *id) { return command(s, CMD_PAUSE, id); }
int sched_resume(struct sched *s, const char *id) { return command(s, CMD_RESUME, id); }
int sched_circuit_reset(struct sched *s, const char *source) { return command(s, CMD_RESET, source); }
int sched_stats_reset(struct sched *s) { return command(s, CMD_STATS_RESET, NULL); }
void sched_set_node_url(struct sched *s, const char *url) { command(s, CMD_NODE_URL, url); }

void sched_wake(struct sched *s)
{
        atomic_store(&s->wake, true);
        if (s->engine)
                engine_wakeup(s->engine);
}

struct snapshot *sched_snapshot(struct sched *s) { return snapshot_hub_get(s->hub); }

/* ---- claiming jobs -------------------------------------------------------------------------------------
 */

/* Remove DOWNLOAD_DIR/path, a file of job jr, unless an item whose
 * success is written names it. Returns 1 when a file went. */
static int remove_unrecorded(struct sched *s, struct jobrun *jr, const char *path)
{
        for (size_t i = 0; i < jobrun_nitems(jr); i++) {
                const struct item *it = jobrun_item(jr, (int)i);
                if (it->state == ITEM_SUCCEEDED && it->path && strcmp(it->path, path) == 0 &&
                    jobrun_item_written(jr, (int)i))
                        return 0;
        }
        return unlinkat(s->dl_fd, path, 0) == 0;
}

struct unfiled {
        struct sched *s;
        int removed; /* files removed */
};

/* A file of a lost job that landed after the job was lost. */
static void unfiled(void *job, const struct xfer_tags *tags, const char *name, void *ud)
{
        struct unfiled *u = ud;
        struct jobrun *jr = job;
        char path[PATH_MAX];

        if (snprintf(path, sizeof(path), "%s/%s/%s", jobrun_id(jr), jobrun_source(jr, tags->group)->source,
                     name) < (int)sizeof(path))
                u->removed += remove_unrecorded(u->s, jr, path);
}

/* A job is lost to another node (its lease moved on): its requests stop,
 * their parts go, nothing of it is written from here any more. Its files
 * whose success was never written go too (the new owner downloads them
 * again): no file without a record, no record without a file. */
static void job_drop(struct sched *s, size_t i, int64_t now)
{
        struct jobrun *jr = s->jobs[i].jr;
        struct unfiled u = {.s = s};

        log_warning("job %s: its lease went to another node; its work here stops (parts removed)",
                    jobrun_id(jr));
        xfers_abort(s->xfers, jr, -1, false, now, NULL, NULL);
        xfers_forget(s->xfers, jr, unfiled, &u);
        for (size_t k = 0; k < jobrun_nitems(jr); k++) {
                const struct item *it = jobrun_item(jr, (int)k);
                if (it->state == ITEM_SUCCEEDED && it->path && !jobrun_item_written(jr, (int)k))
                        u.removed += remove_unrecorded(s, jr, it->path);
        }
        if (u.removed > 0)
                log_info("job %s: %d file%s whose success was not written removed", jobrun_id(jr), u.removed,
                         u.removed == 1 ? "" : "s");
        job_remove(s, i);
        s->snapshot_now = true;
}

/* Renew the leases of the jobs this node runs; drop those it lost. */
static void renew(struct sched *s, int64_t now)
{
        struct store_claim *held;
        bool *lost;
        size_t n = 0;

        if (!cluster_renew_due(s->cluster, now) || s->store_gone)
                return;
        held = calloc(s->njobs ? s->njobs : 1, sizeof(*held));
        lost = calloc(s->njobs ? s->njobs : 1, sizeof(*lost));
        for (size_t i = 0; held && lost && i < s->njobs; i++) {
                const struct job *j = jobrun_job(s->jobs[i].jr);
                if (j->lease_token == 0) /* also a job ended here whose end is not written yet */
                        continue;
                snprintf(held[n].id, sizeof(held[n].id), "%s", j->id);
                held[n++].lease_token = j->lease_token;
        }
        int r = held && lost ? cluster_renew(s->cluster, held, n, now, wall(s), lost) : -ENOMEM;
        if (r < 0 && r != -ENOMEM)
                store_failed(s, r, now);
        else if (r == 0 && n > 0)
                store_answered(s);
        if (r == 0)
                for (size_t k = 0; k < n; k++)
                        for (size_t i = 0; lost[k] && i < s->njobs; i++)
                                if (strcmp(jobrun_id(s->jobs[i].jr), held[k].id) == 0) {
                                        job_drop(s, i, now);
                                        break;
                                }
        free(held);
        free(lost);
}

static void claim_one(struct sched *s, const struct store_claim *c, int64_t now)
{
        struct running *old = find_job(s, c->id);
        struct jobrun *jr;

        if (old) /* this node's own lease ran out and it claimed the job again */
                job_drop(s, (size_t)(old - s->jobs), now);
        int r = jobrun_load(s->store, c->id, ++s->runs, &jr);
        if (r < 0) {
                log_error("job %s: cannot load: %s", c->id, strerror(-r));
                return;
        }
        jobrun_set_lease(jr, c->lease_token);
        /* a job taken over from a node that stopped keeps its deadline */
        int64_t keep = c->rescued ? jobrun_job(jr)->deadline_at : 0;
        jobrun_begin(jr, wall(s), now, keep);
        if (work_begin(&s->env, jr, now) < 0 || job_add(s, jr, now) < 0) {
                log_error("job %s: cannot start: out of memory", c->id);
                jobrun_free(jr);
                return;
        }
        if (c->rescued)
                log_info("job %s: taken over from a node whose lease ran out", c->id);
        log_start(s, jr);
        s->flush_now = true;
}

static void claim(struct sched *s, int64_t now)
{
        struct store_claim *c = NULL;
        size_t n = 0, room = (size_t)s->cfg->max_concurrent_jobs;

        if (atomic_exchange(&s->wake, false))
                s->maybe_queued = true;
        /* a lease running out wakes nobody: look every third of a lease, so
         * a lost node's job is taken over within a lease and a third */
        if (now - s->last_claim_ms >= cluster_lease_ms(s->cluster) / 3)
                s->maybe_queued = true;
        /* while the table fails: no new work before what waits is written;
         * on a node with nothing to write, a claim on the failure's backoff
         * tells when the table is back */
        if (s->store_failing && (now < s->store_retry_ms || changes_waiting(s)))
                return;
        if (s->store_failing)
                s->maybe_queued = true;
        if (!s->maybe_queued || s->njobs >= room || s->store_gone)
                return;
        if (room - s->njobs > STORE_LEASE_MAX)
                room = s->njobs + STORE_LEASE_MAX;
        s->last_claim_ms = now;
        int r = store_job_claim(s->store, cluster_node(s->cluster), room - s->njobs, wall(s),
                                cluster_lease_ms(s->cluster), &c, &n);
        if (r < 0) {
                store_failed(s, r, now);
                return;
        }
        store_answered(s);
        if (n < room - s->njobs)
                s->maybe_queued = false;
        for (size_t i = 0; i < n; i++)
                claim_one(s, &c[i], now);
        free(c);
}

/* ---- one turn ------------------------------------------------------------------------------------------
 */

static void duration_record(struct sched *s, int64_t ms)
{
        double secs = (double)ms / 1000.0;
        size_t b = 0;

        while (b < SNAPSHOT_DURATION_BUCKETS - 1 && secs > snapshot_duration_bounds[b])
                b++;
        s->duration_count[b]++;
        s->duration_sum_s += secs;
}

static void settle(struct sched *s, int64_t now)
{
        struct outcome *list = xfers_take(s->xfers);

        for (struct outcome *o = list; o; o = o->next) {
                if (o->kind == OUTCOME_DOWNLOAD)
                        duration_record(s, o->res.duration_ms);
                work_apply(&s->env, o->tags.job, o, now);
        }
        outcome_free(list);
}

/* Deadlines and the jobs' timers; returns ms until the next one. */
static int64_t timers(struct sched *s, int64_t now)
{
        int64_t next = srctab_next_wake(s->srcs, now);

        srctab_tick(s->srcs, now);
        for (size_t i = 0; i < s->njobs; i++) {
                struct running *r = &s->jobs[i];
                if (jobrun_job(r->jr)->state != JOB_RUNNING)
                        continue;
                if (now >= jobrun_deadline(r->jr)) {
                        char m[128];
                        snprintf(m, sizeof(m), "the job's timeout (%g s) passed",
                                 jobrun_job(r->jr)->timeout);
                        log_warning("job %s: TIMEOUT job: %s", jobrun_id(r->jr), m);
                        job_end(s, r, JOB_TIMED_OUT, "job_timeout", m, now);
                        continue;
                }
                if (jobrun_deadline(r->jr) < next)
                        next = jobrun_deadline(r->jr);
                int64_t t = work_timers(&s->env, r->jr, now);
                if (t < next)
                        next = t;
        }
        return next == INT64_MAX ? POLL_MAX_MS : next - now;
}

static void fill(struct sched *s, int64_t now)
{
        bool stopping;

        pthread_mutex_lock(&s->cmd_lock);
        stopping = s->stopping;
        pthread_mutex_unlock(&s->cmd_lock);
        if (stopping)
                return;
        for (size_t i = 0; i < s->njobs; i++)
                if (jobrun_job(s->jobs[i].jr)->state == JOB_RUNNING &&
                    !work_fill(&s->env, s->jobs[i].jr, now))
                        break;
}

static void finish(struct sched *s, int64_t now)
{
        for (size_t i = 0; i < s->njobs; i++) {
                struct running *r = &s->jobs[i];
                if (jobrun_job(r->jr)->state != JOB_RUNNING)
                        continue;
                if (jobrun_max_reached(r->jr) || work_done(r->jr))
                        job_end(s, r, -1, NULL, NULL, now);
        }
}

/* ---- the snapshot ----------------------------------------------------------------------------------------
 */

struct live_walk {
        struct snapshot_job *sj;
        size_t cap;
        int64_t bytes, expected, speed;
        bool expected_known;
};

static void live_item(int item, const struct xfer_progress *p, void *ud)
{
        struct live_walk *w = ud;

        w->bytes += p->bytes;
        w->speed += p->speed_bps;
        if (p->expected < 0)
                w->expected_known = false;
        else
                w->expected += p->expected;
        if (w->sj && w->sj->nitems < w->cap)
                w->sj->items[w->sj->nitems++] =
                        (struct item_live){item, p->bytes, p->expected, p->speed_bps};
}

/* The job's counters with the bytes of its transfers in flight; speed as
 * the sum of its transfers' speeds; expected bytes when every item's size
 * is known, an estimate from the sizes seen for the ETA otherwise. */
static void live_walk(struct sched *s, struct running *r, struct live_walk *w, struct job_live *ret)
{
        const struct job *j = jobrun_job(r->jr);
        int64_t done_items = j->progress.succeeded, pending = j->progress.pending;

        w->expected_known = true;
        xfers_progress(s->xfers, r->jr, live_item, w);
        *ret = (struct job_live){.progress = j->progress, .bytes_expected = -1, .eta_s = -1};
        ret->progress.bytes = j->progress.bytes + w->bytes;
        ret->speed_bps = w->speed;
        int64_t committing = j->progress.running - xfers_of(s->xfers, r->jr);
        if (w->expected_known && pending == 0 && committing <= 0)
                ret->bytes_expected = j->progress.bytes + w->expected;
        int64_t estimate = ret->bytes_expected;
        if (estimate < 0 && done_items > 0)
                estimate = j->progress.bytes / done_items *
                           (j->progress.total - j->progress.failed - j->progress.skipped);
        if (estimate >= ret->progress.bytes && ret->speed_bps > 0)
                ret->eta_s = (double)(estimate - ret->progress.bytes) / (double)ret->speed_bps;
}

static void live_of(struct sched *s, struct running *r, struct job_live *ret)
{
        struct live_walk w = {0};
        live_walk(s, r, &w, ret);
}

static int snapshot_jobs(struct sched *s, struct snapshot *snap)
{
        snap->jobs = calloc(s->njobs ? s->njobs : 1, sizeof(*snap->jobs));
        if (!snap->jobs)
                return -ENOMEM;
        for (size_t i = 0; i < s->njobs; i++) {
                struct running *r = &s->jobs[i];
                if (jobrun_job(r->jr)->state != JOB_RUNNING)
                        continue;
                struct snapshot_job *sj = &snap->jobs[snap->njobs++];
                int n = xfers_of(s->xfers, r->jr);
                snprintf(sj->id, sizeof(sj->id), "%s", jobrun_id(r->jr));
                sj->items = n > 0 ? calloc((size_t)n, sizeof(*sj->items)) : NULL;
                struct live_walk w = {.sj = sj, .cap = sj->items ? (size_t)n : 0};
                live_walk(s, r, &w, &sj->live);
                snap->bytes_in_flight += w.bytes;
        }
        /* by id, for snapshot_job()'s binary search */
        for (size_t i = 1; i < snap->njobs; i++)
                for (size_t k = i; k > 0 && strcmp(snap->jobs[k - 1].id, snap->jobs[k].id) > 0; k--) {
                        struct snapshot_job t = snap->jobs[k];
                        snap->jobs[k] = snap->jobs[k - 1];
                        snap->jobs[k - 1] = t;
                }
        return 0;
}

static int snapshot_sources(struct sched *s, struct snapshot *snap)
{
        size_t n = s->sources ? sources_count(s->sources) : 0;

        snap->sources = calloc(n ? n : 1, sizeof(*snap->sources));
        if (!snap->sources)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct source_def *d = sources_at(s->sources, i);
                struct snapshot_source *o = &snap->sources[snap->nsources++];
                *o = (struct snapshot_source){
                        .name = strdup(d->name),
                        .available = d->available,
                        .unavailable_reason = str_dup(d->unavailable_reason),
                        .max_connections = d->max_connections > 0 ? d->max_connections
                                                                  : s->cfg->max_connections_per_source,
                        .requests_per_second = d->requests_per_second,
                        .per_page = d->per_page,
                        .max_query_length = d->max_query_length,
                };
                if (!o->name)
                        return -ENOMEM;
        }
        return 0;
}

/* A fresh export of the circuits when one is due (SNAPSHOT_CIRCUITS_EVERY_MS,
 * or s->circuits_now), else the last one goes on. */
static int export_circuits(struct sched *s, int64_t now)
{
        struct snapshot_circuits *c;

        if (s->circ && !s->circuits_now && now - s->circ_ms < SNAPSHOT_CIRCUITS_EVERY_MS)
                return 0;
        c = snapshot_circuits_new();
        if (!c || srctab_export(s->srcs, now, &c->v, &c->n, &c->downloads, &c->listings) < 0) {
                snapshot_circuits_unref(c);
                return s->circ ? 0 : -ENOMEM; /* the last export goes on */
        }
        snapshot_circuits_unref(s->circ);
        s->circ = c;
        s->circ_ms = now;
        s->circuits_now = false;
        return 0;
}

static void publish_snapshot(struct sched *s, int64_t now)
{
        struct snapshot *snap = snapshot_new();

        if (!snap)
                return;
        snap->wall_ms = wall(s);
        snap->mono_ms = now;
        snap->uptime_ms = now - s->started_ms;
        snap->store_ok = !s->store_failing && !s->store_gone;
        if (s->store_gone)
                snprintf(snap->store_error, sizeof(snap->store_error),
                         "the job table's file was deleted or replaced; restart hauld");
        else if (s->store_failing)
                snprintf(snap->store_error, sizeof(snap->store_error),
                         "the job table cannot be written (%s); changes are kept and retried",
                         strerror(s->store_errno));
        snap->accepting = snap->store_ok;
        memcpy(snap->duration_count, s->duration_count, sizeof(snap->duration_count));
        snap->duration_sum_s = s->duration_sum_s;
        snap->transfers = xfers_running(s->xfers);
        if (export_circuits(s, now) < 0) {
                snapshot_unref(snap);
                return; /* the older one stays */
        }
        snap->shared = snapshot_circuits_ref(s->circ);
        snap->circuits = s->circ->v;
        snap->ncircuits = s->circ->n;
        snap->downloads = s->circ->downloads;
        snap->listings = s->circ->listings;
        if (snapshot_jobs(s, snap) < 0 || snapshot_sources(s, snap) < 0 ||
            !(snap->node = strdup(cluster_node(s->cluster))) ||
            cluster_nodes(s->cluster, &snap->nodes, &snap->nnodes) < 0) {
                snapshot_unref(snap);
                return; /* the older one stays */
        }
        snapshot_hub_put(s->hub, snap);
        s->last_snapshot_ms = now;
        s->snapshot_now = false;
}

/* ---- housekeeping
 * ------------------------------------------------------------------------------------------ */

static void prune(struct sched *s, int64_t now)
{
        int64_t n = 0, every = (int64_t)(s->cfg->job_retention * 1000 / 2);

        if (every <= 0 || every > PRUNE_EVERY_MS)
                every = PRUNE_EVERY_MS;
        if (s->last_prune_ms && now - s->last_prune_ms < every)
                return;
        s->last_prune_ms = now;
        size_t gone = srctab_prune(s->srcs, now);
        if (gone > 0)
                log_debug("sched: forgot %zu idle sources and hosts", gone);
        if (s->cfg->job_retention <= 0 || s->store_failing)
                return;
        int r = store_job_prune(s->store, wall(s) - (int64_t)(s->cfg->job_retention * 1000), &n);
        if (r < 0)
                log_error("sched: pruning old jobs: %s", strerror(-r));
        else if (n > 0)
                log_info("sched: pruned %lld job%s older than JOB_RETENTION (their files stay)",
                         (long long)n, n == 1 ? "" : "s");
}

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
        if (!s->store_failing && store_job_count_by_state(s->store, counts) == 0)
                notify_send("STATUS=%lld running, %lld queued, %d transfers", (long long)counts[JOB_RUNNING],
                            (long long)counts[JOB_QUEUED], xfers_running(s->xfers));
        else
                notify_send("STATUS=%zu running, %d transfers; the job table cannot be read or written",
                            s->njobs, xfers_running(s->xfers));
}

int64_t sched_turn(struct sched *s)
{
        int64_t now = mono(s);

        if (s->engine)
                engine_perform(s->engine);
        if (s->hooks.sync_commits)
                committer_wait_idle(s->committer);
        renew(s, now); /* first: the answers of a job lost meanwhile are dropped, not settled */
        settle(s, now);
        run_cmds(s, now);
        store_identity(s, now);
        beat(s, now);
        claim(s, now);
        int64_t timeout = timers(s, now);
        fill(s, now);
        finish(s, now);
        srctab_drain_changed(s->srcs, note_circuit, s); /* this node's own changes, to write */
        int64_t t = flush_paced(s, now);
        if (t < timeout)
                timeout = t;
        sync_circuits(s, now);
        t = progress_events(s, now);
        if (t < timeout)
                timeout = t;
        if (s->snapshot_now || now - s->last_snapshot_ms >= SNAPSHOT_EVERY_MS)
                publish_snapshot(s, now);
        prune(s, now);
        report_status(s, now);
        if (s->watchdog_ms > 0 && timeout > s->watchdog_ms / 2)
                timeout = s->watchdog_ms / 2;
        if (s->store_failing && s->store_retry_ms - now < timeout) /* the next try of the job table */
                timeout = s->store_retry_ms - now;
        if (atomic_load(&s->wake) && s->njobs < (size_t)s->cfg->max_concurrent_jobs)
                timeout = 0;
        return timeout < 0 ? 0 : timeout;
}

/* ---- lifecycle
 * ---------------------------------------------------------------------------------------------- */

/* This node's share of a connection limit that holds for all nodes
 * together: rounded up, so the cluster may go over by nodes - 1. */
static int share(const struct sched *s, int limit)
{
        size_t n = s->live_nodes ? s->live_nodes : 1;
        return limit > 0 ? (int)(((size_t)limit + n - 1) / n) : limit;
}

static void srctab_opts_from(const struct sched *s, const struct config *cfg, struct srctab_opts *o)
{
        *o = (struct srctab_opts){
                .threshold = cfg->circuit_breaker_threshold,
                .open_ms = (int64_t)(cfg->circuit_breaker_timeout * 1000),
                .open_growth = cfg->circuit_breaker_growth,
                .max_open_ms = (int64_t)(cfg->circuit_breaker_max_timeout * 1000),
                .host_connections = share(s, cfg->max_connections_per_source),
                .default_source_connections = share(s, cfg->max_connections_per_source),
                .idle_prune_ms = IDLE_SOURCE_MS,
        };
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
                .user_agent = cfg->user_agent,
                .proxy = cfg->proxy,
        };
}

/* Every configured query source is known (and listed in /v1/circuits)
 * from the start, with its limits. */
static void known_sources(struct sched *s)
{
        size_t n = s->sources ? sources_count(s->sources) : 0;
        for (size_t i = 0; i < n; i++) {
                const struct source_def *d = sources_at(s->sources, i);
                struct src *src = srctab_source(s->srcs, d->name, true);
                if (src)
                        srctab_set_limits(s->srcs, src, share(s, d->max_connections),
                                          d->requests_per_second /
                                                  (double)(s->live_nodes ? s->live_nodes : 1));
        }
}

/* The heartbeat; when the number of live nodes changed, each node's share
 * of the limits follows. */
static void beat(struct sched *s, int64_t now)
{
        size_t live = s->live_nodes;
        struct srctab_opts so;

        if (s->store_gone || !cluster_beat_due(s->cluster, now))
                return;
        int r = cluster_beat(s->cluster, now, wall(s), (int64_t)s->njobs, &live);
        if (r < 0) {
                store_failed(s, r, now);
                return;
        }
        store_answered(s);
        if (live == s->live_nodes)
                return;
        log_info("sched: %zu node%s share the job table; this node takes its share of the connection limits",
                 live, live == 1 ? "" : "s");
        s->live_nodes = live;
        srctab_opts_from(s, s->cfg, &so);
        srctab_configure(s->srcs, &so);
        known_sources(s);
        s->snapshot_now = true;
}

static void apply_config(struct sched *s, const struct config *cfg, const struct source_set *sources)
{
        struct srctab_opts so;
        struct engine_opts eo;

        s->cfg = cfg;
        s->sources = sources;
        s->env.cfg = cfg;
        s->env.sources = sources;
        s->env.file_lines = cfg->log_file_lines;
        srctab_opts_from(s, cfg, &so);
        srctab_configure(s->srcs, &so);
        known_sources(s);
        if (s->engine) {
                engine_opts_from(cfg, &eo);
                engine_configure(s->engine, &eo);
        }
        s->maybe_queued = true;
}

void sched_reconfigure(struct sched *s, const struct config *cfg, const struct source_set *sources)
{
        struct cmd c = {.type = CMD_CONFIG, .cfg = cfg, .sources = sources};
        submit(s, &c);
}

static void wake_engine(void *ud)
{
        struct sched *s = ud;
        if (s->engine)
                engine_wakeup(s->engine);
}

static void sched_free(struct sched *s)
{
        if (!s)
                return;
        committer_free(s->committer); /* finishes what was submitted */
        xfers_free(s->xfers);
        engine_free(s->engine);
        for (size_t i = 0; i < s->njobs; i++)
                jobrun_free(s->jobs[i].jr);
        free(s->jobs);
        for (size_t i = 0; i < s->ncircuits; i++)
                free(s->circuits[i]);
        free(s->circuits);
        snapshot_circuits_unref(s->circ);
        srctab_free(s->srcs);
        cluster_free(s->cluster);
        store_close(s->store);
        snapshot_hub_free(s->hub);
        if (s->dl_fd >= 0)
                close(s->dl_fd);
        pthread_mutex_destroy(&s->cmd_lock);
        pthread_cond_destroy(&s->cmd_done);
        free(s);
}

static int open_download_dir(struct sched *s)
{
        int r = fs_mkdir_p(s->cfg->download_dir);
        if (r >= 0) {
                s->dl_fd = open(s->cfg->download_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                r = s->dl_fd < 0 ? -errno : 0;
        }
        if (r < 0)
                log_error("sched: cannot open DOWNLOAD_DIR %s: %s", s->cfg->download_dir, strerror(-r));
        return r;
}

static int open_store(struct sched *s)
{
        int64_t recovered = 0;
        int r = store_open(s->cfg->store, &s->store);

        if (r < 0) {
                char *shown = NULL;
                store_url_redact(s->cfg->store, &shown);
                log_error("sched: cannot open the job table %s: %s", shown ? shown : "(its URL)",
                          strerror(-r));
                free(shown);
                return r;
        }
        store_set_sync(s->store, false); /* see store_set_sync(): files are flushed first */
        r = store_recover(s->store, NULL, wall(s), &recovered);
        if (r < 0) {
                log_error("sched: recovering the job table: %s", strerror(-r));
                return r;
        }
        if (recovered > 0)
                log_info("sched: %lld job%s interrupted by the last stop will resume", (long long)recovered,
                         recovered == 1 ? "" : "s");
        return 0;
}

static int make_engine(struct sched *s)
{
        struct engine_opts eo;
        int r = xfers_new(s->hooks.engine_ops ? s->hooks.engine_ops : &engine_ops, s->hooks.engine, s->srcs,
                          s->committer, &s->xfers);

        if (r >= 0 && s->hooks.engine_ops && s->hooks.engine_bind)
                s->hooks.engine_bind(s->hooks.engine, xfers_on_done, s->xfers);
        if (r < 0 || s->hooks.engine_ops)
                return r;
        engine_opts_from(s->cfg, &eo);
        r = engine_new(&eo, xfers_on_done, s->xfers, &s->engine);
        if (r < 0) {
                log_error("sched: cannot start the transfer engine: %s", strerror(-r));
                return r;
        }
        xfers_set_engine(s->xfers, s->engine);
        return 0;
}

int sched_new(const struct config *cfg, const struct source_set *sources, struct event_bus *events,
              const struct sched_hooks *hooks, struct sched **ret)
{
        struct sched *s = calloc(1, sizeof(*s));
        struct srctab_opts so;
        int r = -ENOMEM;

        if (!s)
                return -ENOMEM;
        s->cfg = cfg;
        s->sources = sources;
        s->events = events;
        s->dl_fd = -1;
        if (hooks)
                s->hooks = *hooks;
        s->maybe_queued = true;
        s->watchdog_ms = notify_watchdog_ms();
        pthread_mutex_init(&s->cmd_lock, NULL);
        pthread_cond_init(&s->cmd_done, NULL);
        atomic_init(&s->wake, false);
        s->started_ms = mono(s);
        srandom((unsigned)wall(s));
        srctab_opts_from(s, cfg, &so);
        if (!(s->srcs = srctab_new(&so)) || snapshot_hub_new(&s->hub) < 0)
                goto fail;
        known_sources(s);
        if ((r = open_store(s)) < 0 || (r = open_download_dir(s)) < 0)
                goto fail;
        s->shared = str_startswith(cfg->store, "postgres");
        r = cluster_new(cfg, s->store, s->shared, &s->cluster);
        if (r < 0) {
                log_error("sched: cannot name this node (NODE_ID, or %s/node-id): %s", cfg->state_dir,
                          strerror(-r));
                goto fail;
        }
        r = cluster_load_circuits(s->cluster, s->srcs, s->started_ms, wall(s));
        if (r < 0)
                log_warning("sched: the circuits kept in the job table cannot be read: %s", strerror(-r));
        srctab_drain_changed(s->srcs, circuit_event, s); /* as they are in the table: not written back */
        r = committer_new(wake_engine, s, &s->committer);
        if (r < 0) {
                log_error("sched: cannot start the committer: %s", strerror(-r));
                goto fail;
        }
        if ((r = make_engine(s)) < 0)
                goto fail;
        s->env = (struct work_env){.cfg = cfg,
                                   .sources = sources,
                                   .srcs = s->srcs,
                                   .xfers = s->xfers,
                                   .dl_fd = s->dl_fd,
                                   .node = cluster_node(s->cluster),
                                   .file_lines = cfg->log_file_lines,
                                   .rand01 = rand01,
                                   .rand_ud = s,
                                   .take_probe = s->shared ? take_probe : NULL,
                                   .probe_ud = s};
        publish_snapshot(s, s->started_ms);
        *ret = s;
        return 0;
fail:
        sched_free(s);
        return r;
}

/* Other nodes' news (PostgreSQL's NOTIFY): a job queued or taken. */
static void notified(struct sched *s)
{
        bool any = false;
        int r = store_notify_drain(s->store, &any);
        if (r < 0) /* the connection is lost: no polling of its socket until a call gets through */
                store_failed(s, r, mono(s));
        if (r < 0 || !any)
                return;
        atomic_store(&s->wake, true);
        cluster_renew_soon(s->cluster);
}

static bool take_probe(void *ud, struct src *src)
{
        struct sched *s = ud;
        return cluster_take_probe(s->cluster, src, wall(s));
}

static void *loop(void *arg)
{
        struct sched *s = arg;
        int64_t timeout = 0;
        bool ready = false;

        for (;;) {
                pthread_mutex_lock(&s->cmd_lock);
                bool stop = s->stopping;
                pthread_mutex_unlock(&s->cmd_lock);
                if (stop)
                        break;
                /* anew each time: a reconnect changes it; none while the store fails (a
                 * lost connection's socket reads as ready for ever) */
                int fd = s->shared && !s->store_failing ? store_notify_fd(s->store) : -1;
                engine_poll_fd(s->engine, fd, (int)timeout, &ready);
                if (fd >= 0)
                        notified(s); /* also when not readable: an answer may have brought one */
                timeout = sched_turn(s);
        }
        return NULL;
}

int sched_run(struct sched *s)
{
        int r = -pthread_create(&s->thread, NULL, loop, s);
        if (r == 0)
                s->thread_running = true;
        return r;
}

int sched_start(const struct config *cfg, const struct source_set *sources, struct event_bus *events,
                struct sched **ret)
{
        struct sched *s;
        int r = sched_new(cfg, sources, events, NULL, &s);

        if (r < 0)
                return r;
        r = sched_run(s);
        if (r < 0) {
                sched_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

/* Put every unfinished job back to queued: parts kept, files with the
 * committer found in place by the next start. */
static void park_all(struct sched *s)
{
        int64_t now = mono(s);

        committer_wait_idle(s->committer);
        settle(s, now);
        for (size_t i = 0; i < s->njobs; i++) {
                struct jobrun *jr = s->jobs[i].jr;
                if (jobrun_job(jr)->state != JOB_RUNNING)
                        continue;
                work_park(&s->env, jr, JOB_QUEUED, now);
                log_info("job %s: parked with %lld items left; it resumes at the next start", jobrun_id(jr),
                         (long long)jobrun_job(jr)->progress.pending);
        }
        if (flush(s, now) < 0)
                log_error("sched: the last changes could not be written; the next start redoes them");
        cluster_leave(s->cluster); /* parked jobs are queued again: any node may take them */
}

void sched_stop(struct sched *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&s->cmd_lock);
        s->stopping = true;
        pthread_mutex_unlock(&s->cmd_lock);
        if (s->thread_running) {
                if (s->engine)
                        engine_wakeup(s->engine);
                pthread_join(s->thread, NULL);
                s->thread_running = false;
        }
        park_all(s);
        pthread_mutex_lock(&s->cmd_lock); /* commands that came meanwhile: shutting down */
        for (struct cmd *c = s->cmds; c; c = c->next) {
                c->result = -ESHUTDOWN;
                c->done = true;
        }
        s->cmds = s->cmds_tail = NULL;
        pthread_cond_broadcast(&s->cmd_done);
        pthread_mutex_unlock(&s->cmd_lock);
        sched_free(s);
}

/* sched: the job state machine, on one thread of its own.
 *
 * Owns: the jobs being run (loaded from the store when claimed), their
 * (job, source) units, the transfers in flight, the per-source circuit
 * breakers and statistics, and the engine. Only this thread writes jobs
 * after they are inserted; the API reads them from the store and asks for
 * changes through commands that this thread carries out between two polls.
 *
 * This file holds the loop, the API's commands and snapshots, and the
 * start and stop of the whole; sched_job.c keeps the jobs and their items,
 * sched_unit.c runs units and transfers, sched_list.c keeps per-source
 * state and lists query sources (their shared state: sched-internal.h).
 *
 * Invariant: everything that changed in one loop turn is committed at its
 * end, and its events are published after that commit.
 *
 * `lock` guards everything here; the thread drops it only to wait in
 * engine_poll(), so API calls wait at most one loop turn. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#include "daemon/sched-internal.h"
#include "daemon/sched.h"
#include "daemon/sources.h"
#include "daemon/store.h"

#define STATUS_EVERY_MS   5000  /* how often STATUS= is refreshed for systemd */
#define PROGRESS_EVERY_MS 250   /* at most 4 progress events a second per job */
#define PRUNE_EVERY_MS    60000 /* prune at least this often (and twice per JOB_RETENTION) */

const double sched_duration_bounds[SCHED_DURATION_BUCKETS - 1] = {0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                                                  5,    10,  30,   60,  300};

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
                rjob_finish(s, rj, JOB_CANCELLED, "cancelled", "cancelled by request");
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
                        rjob_item_set(rj, (int)i, ITEM_PENDING);
                }
                for (size_t u = 0; u < j->nper_source; u++) {
                        j->per_source[u].state = SRC_PENDING;
                        job_error_clear(&j->per_source[u].error);
                }
                j->state = JOB_QUEUED;
                j->finished_at = 0;
                job_error_clear(&j->error);
                s->maybe_queued = true;
                sched_emit(s, EVENT_JOB, j->id, -1, false, NULL);
        }
        r = sched_flush_list(s, rj); /* the answer tells whether the change was written */
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
                                sched_emit(s, EVENT_CIRCUIT, NULL, -1, false, p->name);
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
        rjob_finish(s, rj, JOB_CANCELLED, "cancelled", "cancelled by request");
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
                sched_reap_jobs(s);
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
                        sched_emit(s, EVENT_PROGRESS, rj->job->id, -1, false, NULL);
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
        sched_apply_commits(s);
        for (struct rjob *rj = s->jobs; rj; rj = rj->next) {
                while (rj->slots) {
                        int item = rj->slots->item;
                        engine_abort_keep(s->engine, rj->slots->x);
                        rj->slots->x = NULL;
                        sched_slot_abort(s, rj->slots);
                        if (item >= 0)
                                rjob_item_set(rj, item, ITEM_PENDING);
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
        sched_flush(s);
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
                if (s->reconfigured) { /* the engine is this thread's, even for its options */
                        struct engine_opts o;
                        engine_opts_from(s->cfg, &o);
                        engine_configure(s->engine, &o);
                        s->reconfigured = false;
                }
                engine_perform(s->engine);
                sched_apply_commits(s);
                run_cmds(s);
                int64_t now = clock_mono_ms();
                sched_claim_jobs(s, now);
                timeout = sched_run_timers(s, now);
                sched_start_work(s, now);
                sched_reap_jobs(s);
                int64_t next_progress = progress_events(s, now);
                if (next_progress < timeout)
                        timeout = next_progress;
                int64_t next_flush = sched_flush_paced(s, now);
                if (next_flush < timeout)
                        timeout = next_flush;
                prune(s, now);
                report_status(s, now);
                if (s->watchdog_ms > 0 && timeout > s->watchdog_ms / 2)
                        timeout = s->watchdog_ms / 2;
                if (s->cmds || (s->maybe_queued && s->units_running < s->cfg->max_concurrent_sources &&
                                !sched_units_waiting(s)))
                        timeout = 0;
        }
        park_jobs(s);
        run_cmds(s); /* answer commands that came in meanwhile */
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void wake_engine(void *ud)
{
        struct sched *s = ud;
        engine_wakeup(s->engine);
}

void sched_reconfigure(struct sched *s, const struct config *cfg, const struct source_set *sources)
{
        pthread_mutex_lock(&s->lock);
        s->cfg = cfg;
        s->sources = sources;
        s->reconfigured = true; /* the loop applies it: engine_poll() runs without the lock */
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
        sched_srcs_free(s->srcs);
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
        r = store_recover(s->store, NULL, clock_wall_ms(), &recovered);
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
        r = engine_new(&o, sched_on_done, s, &s->engine);
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

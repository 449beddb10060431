/* The scheduler as the rest of the daemon sees it. One thread of its own
 * owns the running jobs, the per-source state and every transfer; other
 * threads never wait for it:
 * - they read what it knows through snapshots (sched_snapshot());
 * - they ask for changes of jobs and circuits through commands, which it
 *   carries out between two turns and answers once the change is written
 *   (a turn never waits for a transfer, so an answer comes within
 *   milliseconds);
 * - new jobs are written to the store by the API, which then calls
 *   sched_wake().
 *
 * int returns: 0 ok, -ENOENT unknown job or source, -EBUSY state conflict
 * (409), -ESHUTDOWN shutting down (503), -EIO the job table could not be
 * written (503), other -errno. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/engine.h"
#include "daemon/snapshot.h"

struct sched;
struct config;
struct source_set;
struct event_bus;

/* New jobs are queued in the store. Never blocks. */
void sched_wake(struct sched *s);
/* Cancel an active (queued, running or paused) job: transfers stop at once. */
int sched_cancel(struct sched *s, const char *job_id);
/* Requeue a terminal job's failed and skipped items. */
int sched_retry(struct sched *s, const char *job_id);
/* Remove a terminal job's record. */
int sched_delete(struct sched *s, const char *job_id);
/* Put a queued or running job aside: its transfers stop keeping their
 * parts, it holds no slot until resumed. */
int sched_pause(struct sched *s, const char *job_id);
/* A paused job goes back to the queue. */
int sched_resume(struct sched *s, const char *job_id);
/* Close a source's circuit. -ENOENT if the source is not known. */
int sched_circuit_reset(struct sched *s, const char *source);
/* Zero the statistics (circuits stay). */
int sched_stats_reset(struct sched *s);
/* Where other nodes reach this node's API (for the files it holds). */
void sched_set_node_url(struct sched *s, const char *url);

/* The newest snapshot, with a reference (snapshot_unref() it); never NULL
 * once sched_start() returned. */
struct snapshot *sched_snapshot(struct sched *s);

/* ---- lifecycle, for daemon/main.c and tests --------------------------------- */

/* What a test puts in place of the real engine and clocks; NULL members
 * take the real ones. */
struct sched_hooks {
        const struct engine_ops *engine_ops;
        void *engine; /* with engine_ops */
        int64_t (*mono_ms)(void *ud);
        int64_t (*wall_ms)(void *ud);
        double (*rand01)(void *ud);
        void *ud;
        /* Test seams. engine_bind: with engine_ops, told once (in
         * sched_new()) the callback and context that engine's transfers
         * end through, what engine_new() takes; sync_commits: each turn
         * first waits until the committer has finished every file handed
         * to it, so that its answers are taken at that turn. */
        void (*engine_bind)(void *engine, engine_done_fn done, void *ctx);
        bool sync_commits;
};

/* Open the store (recovering jobs a crash left running) and the download
 * directory, set everything up; no thread yet. hooks may be NULL. */
int sched_new(const struct config *cfg, const struct source_set *sources, struct event_bus *events,
              const struct sched_hooks *hooks, struct sched **ret);
/* Start the scheduler's thread. */
int sched_run(struct sched *s);
/* sched_new() then sched_run(). */
int sched_start(const struct config *cfg, const struct source_set *sources, struct event_bus *events,
                struct sched **ret);
/* One turn of the loop, without waiting (tests drive a scheduler with no
 * thread this way); returns ms until the next timer. */
int64_t sched_turn(struct sched *s);
/* Stop starting work, abort transfers keeping their parts, put unfinished
 * items back to pending and their jobs back to queued so that the next
 * start resumes them; then free everything. */
void sched_stop(struct sched *s);
/* Apply changed settings (SIGHUP). The caller keeps cfg and sources alive. */
void sched_reconfigure(struct sched *s, const struct config *cfg, const struct source_set *sources);

/* The scheduler as the API sees it: the engine thread owns all running
 * jobs; the API writes new jobs to the store itself, then calls
 * sched_wake(). State changes of existing jobs go through these calls,
 * which the engine thread carries out in order and answers at once (they
 * never wait on a transfer).
 *
 * int returns: 0 ok, -ENOENT unknown job, -EBUSY state conflict (409),
 * -ESHUTDOWN shutting down (503), other -errno. */
#pragma once
#include <stdint.h>

#include "daemon/job.h"

struct sched;

/* A new job is queued in the store. */
void sched_wake(struct sched *s);
/* Cancel an active (queued or running) job: transfers stop at once. */
int sched_cancel(struct sched *s, const char *job_id);
/* Requeue a terminal job's failed and skipped items. */
int sched_retry(struct sched *s, const char *job_id);
/* Remove a terminal job's record. */
int sched_delete(struct sched *s, const char *job_id);
/* Close a source's circuit. -ENOENT if the source was never seen. */
int sched_circuit_reset(struct sched *s, const char *source);

/* Read-only snapshots for the API, taken under the engine's lock. */
struct circuit_info {
        char *source;
        const char *state;          /* "closed", "open", "half_open" */
        int consecutive_failures;
        int threshold;
        int64_t trips;
        int64_t opened_at;          /* wall ms, 0: null */
        int64_t retry_at;           /* wall ms, 0: null */
        char *last_error;           /* NULL: none */
};
struct source_stats {
        char *source;
        int64_t attempts, successes, failures, retries, bytes;
        const char *circuit;
};
struct sched_stats {
        int64_t uptime_ms;
        int64_t total_attempts, total_successes, total_failures, total_retries, total_bytes;
        struct source_stats *sources;
        size_t nsources;
};

int sched_circuits(struct sched *s, struct circuit_info **ret, size_t *ret_n);
void circuit_infos_free(struct circuit_info *c, size_t n);
int sched_stats(struct sched *s, struct sched_stats *ret);
void sched_stats_clear(struct sched_stats *st);

/* ---- lifecycle, for daemon/main.c ---------------------------------------- */
struct config;

/* Open the store (recovering jobs a crash left running) and the download
 * directory; start the engine thread. */
int sched_start(const struct config *cfg, struct sched **ret);
/* Stop claiming work, abort transfers, put unfinished items back to pending
 * and their jobs back to queued so that the next start resumes them. */
void sched_stop(struct sched *s);
/* Apply changed settings (SIGHUP). The caller keeps cfg alive. */
void sched_reconfigure(struct sched *s, const struct config *cfg);

/* The scheduler as the API sees it: the engine thread owns all running
 * jobs; the API writes new jobs to the store itself, then calls
 * sched_wake(). State changes of existing jobs go through these calls,
 * which the engine thread carries out in order and answers at once (they
 * never wait on a transfer).
 *
 * int returns: 0 ok, -ENOENT unknown job, -EBUSY state conflict (409),
 * -ESHUTDOWN shutting down (503), other -errno. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
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
        const char *state; /* "closed", "open", "half_open" */
        int consecutive_failures;
        int threshold;
        int64_t trips;
        int64_t opened_at; /* wall ms, 0: null */
        int64_t retry_at;  /* wall ms, 0: null */
        char *last_error;  /* NULL: none */
};
struct source_stats {
        char *source;
        int64_t attempts, successes, failures, retries, bytes;
        const char *circuit;
};
/* Upper bounds (seconds) of the download duration histogram's buckets; the
 * last bucket is +Inf. Counts are per bucket, not cumulative. */
#define SCHED_DURATION_BUCKETS 12
extern const double sched_duration_bounds[SCHED_DURATION_BUCKETS - 1];

struct sched_stats {
        int64_t uptime_ms;
        int64_t duration_count[SCHED_DURATION_BUCKETS]; /* finished downloads (success or failure) */
        double duration_sum_s;
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
struct source_set;
struct event_bus;

/* Open the store (recovering jobs a crash left running) and the download
 * directory; start the engine thread. */
int sched_start(const struct config *cfg, const struct source_set *sources, struct event_bus *events,
                struct sched **ret);
/* Stop claiming work, abort transfers, put unfinished items back to pending
 * and their jobs back to queued so that the next start resumes them. */
void sched_stop(struct sched *s);
/* Apply changed settings (SIGHUP). The caller keeps cfg alive. */
void sched_reconfigure(struct sched *s, const struct config *cfg, const struct source_set *sources);

/* Query sources as GET /v1/sources shows them. */
struct source_info {
        char *name;
        bool available;
        char *unavailable_reason;   /* NULL when available */
        int max_connections;        /* effective */
        double requests_per_second; /* 0: unlimited */
        int per_page;
};
int sched_sources(struct sched *s, struct source_info **ret, size_t *ret_n);
void source_infos_free(struct source_info *v, size_t n);
/* Is name a configured query source (available or not)? */
bool sched_source_known(struct sched *s, const char *name);

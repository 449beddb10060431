/* snapshot: what the API reads of the scheduler without ever waiting for
 * it. After its turns (at most every SNAPSHOT_EVERY_MS, at once after a
 * command) the scheduler builds an immutable snapshot and publishes it;
 * readers take a reference, read, and drop it. Swapping and taking are a
 * pointer copy under a lock of their own, held for nanoseconds.
 *
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/cluster.h"
#include "daemon/job.h"
#include "daemon/srctab.h"

#define SNAPSHOT_DURATION_BUCKETS 12
/* Upper bounds (seconds) of the download duration histogram's buckets;
 * the last bucket is +Inf. Counts are per bucket, not cumulative. */
extern const double snapshot_duration_bounds[SNAPSHOT_DURATION_BUCKETS - 1];

/* Every source's circuit and counters as exported at one time, shared by
 * the snapshots taken until the next export: with thousands of hosts an
 * export is the dearest part of a snapshot, so the scheduler makes one
 * when a circuit changes state, a job ends or a command ran, and else at
 * most every SNAPSHOT_CIRCUITS_EVERY_MS (the counters are that old at most). */
#define SNAPSHOT_CIRCUITS_EVERY_MS 1000
struct snapshot_circuits {
        atomic_uint refs;
        struct src_info *v; /* sorted by name */
        size_t n;
        struct src_counters downloads, listings; /* totals, pruned sources included */
};
struct snapshot_circuits *snapshot_circuits_new(void);
struct snapshot_circuits *snapshot_circuits_ref(struct snapshot_circuits *c);
void snapshot_circuits_unref(struct snapshot_circuits *c);

/* A running job as the scheduler has it now. */
struct snapshot_job {
        char id[JOB_ID_LEN + 1];
        struct job_live live;
        struct item_live *items; /* in flight, by index */
        size_t nitems;
};

/* A configured query source (GET /v1/sources). */
struct snapshot_source {
        char *name;
        bool available;
        char *unavailable_reason; /* NULL when available */
        int max_connections;      /* in effect */
        double requests_per_second;
        int per_page;
        int max_query_length; /* 0: the general limit */
};

struct snapshot {
        atomic_uint refs;
        int64_t wall_ms; /* when it was taken */
        int64_t mono_ms; /* the same instant on the scheduler's monotonic clock */
        int64_t uptime_ms;
        bool store_ok;             /* the job table is written (and is the one opened) */
        char store_error[256];     /* why not, when !store_ok */
        bool accepting;            /* new jobs may be submitted */
        struct src_info *circuits; /* every source, sorted by name */
        size_t ncircuits;
        struct src_counters downloads, listings; /* totals, pruned sources included */
        struct snapshot_circuits *shared;        /* owns circuits when set; else the snapshot does */
        int64_t duration_count[SNAPSHOT_DURATION_BUCKETS];
        double duration_sum_s;
        struct snapshot_job *jobs; /* running, sorted by id */
        size_t njobs;
        int transfers; /* in flight */
        int64_t bytes_in_flight;
        struct snapshot_source *sources; /* configured, sorted by name */
        size_t nsources;
        char *node;                 /* this node's id */
        struct cluster_node *nodes; /* live nodes sharing the job table at the last heartbeat */
        size_t nnodes;
};

struct snapshot *snapshot_new(void);
struct snapshot *snapshot_ref(struct snapshot *s);
void snapshot_unref(struct snapshot *s);
/* NULL when not there. */
const struct src_info *snapshot_circuit(const struct snapshot *s, const char *name);
const struct snapshot_job *snapshot_job(const struct snapshot *s, const char *id);
const struct snapshot_source *snapshot_source(const struct snapshot *s, const char *name);

struct snapshot_hub;
int snapshot_hub_new(struct snapshot_hub **ret);
void snapshot_hub_free(struct snapshot_hub *h);
/* Publish s (the hub takes the caller's reference). */
void snapshot_hub_put(struct snapshot_hub *h, struct snapshot *s);
/* The newest snapshot with a reference for the caller; NULL before the first. */
struct snapshot *snapshot_hub_get(struct snapshot_hub *h);

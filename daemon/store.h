/* The persistent job table. A backend is chosen by the STORE URL at open
 * ("sqlite:/var/lib/hauld/jobs.db", "postgresql://user:pw@host/db");
 * callers never see which.
 *
 * A struct store is one connection: use it from one thread at a time (the
 * scheduler's thread owns one; the API lends one from its pool to each
 * request). Every call that writes is committed when it returns, unless it
 * runs between store_begin() and store_commit(), which the scheduler uses
 * to batch.
 *
 * Several nodes may share one PostgreSQL table. A node owns the jobs it
 * runs through a lease (store_job_claim()): the lease names the node, runs
 * out at a wall-clock time unless renewed, and carries a fencing token, a
 * number that grows with every lease handed out for the table. A write of
 * a leased job carries the token (job->lease_token) and is refused with
 * -ESTALE once another node took the job, so a node that lost its lease
 * (paused, cut off) cannot overwrite the new holder's work. A batch that
 * changes a leased job writes the job row first, then its items: in
 * PostgreSQL the fenced UPDATE locks the row until the batch commits, so
 * no claim can take the job between the check and the item writes; in
 * SQLite the batch holds the file's write lock from store_begin() on.
 * The calls that hand out leases or probes (claim, renew, take,
 * take_probe) commit before they return and are refused inside a batch.
 *
 * int returns: 0 ok, -errno on failure: -ENOENT not found, -EEXIST a
 * uniqueness conflict (idempotency key), -ESTALE a fenced write lost its
 * lease, -EBUSY locked too long (or a serialization failure: try again),
 * -ECONNRESET the database connection was lost (PostgreSQL; the next call
 * reconnects), -EPROTO a schema this build does not know, -EIO other
 * database errors. ret_* are written only on success.
 *
 * PostgreSQL: an error other than -ENOENT, -EEXIST, -ESTALE or -EINVAL
 * inside a batch ends the batch on the server: store_commit() then rolls
 * back and fails. Text must be UTF-8 there: bytes that are not are stored
 * as '?'. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/breaker.h"
#include "daemon/job.h"

#define STORE_NODE_ID_MAX 255  /* bytes of a node id */
#define STORE_LEASE_MAX   1000 /* jobs per store_job_claim() or store_lease_renew() */

struct store;

struct job_filter {
        unsigned states;    /* bit mask of 1u << enum job_state; 0: all */
        int limit;          /* 1..500 */
        int64_t before_seq; /* cursor: only jobs with seq < before_seq; 0: from newest */
        const char *label;  /* only jobs with exactly this label; NULL: any */
        /* When set and true for a terminal job (its id and finished_at),
         * the job comes back as a stub: seq, id, state and finished_at
         * only (job.stub), its other columns not decoded. For a caller
         * that keeps the rendered text of finished jobs. */
        bool (*known)(const char *id, int64_t finished_at, void *ud);
        void *known_ud;
};

struct item_filter {
        unsigned states; /* bit mask of 1u << enum item_state; 0: all */
        int limit;       /* 1..10000 */
        int after_index; /* cursor: only items with index > after_index; -1: from first */
};

/* A job a node holds. */
struct store_claim {
        char id[JOB_ID_LEN + 1];
        int64_t lease_token; /* write the job with this token (job->lease_token) */
        bool rescued;        /* it was running under a lease that ran out */
};

/* A hauld process sharing the table. */
struct store_node {
        char *id;             /* 1..STORE_NODE_ID_MAX bytes */
        int64_t started_at;   /* wall ms the process started */
        int64_t heartbeat_at; /* wall ms of its last beat */
        int64_t leases;       /* jobs it held at that beat */
        char *api_url;        /* where its API answers; NULL: unknown */
        char *version;        /* hauld version; NULL: unknown */
};

/* A source's circuit breaker as the nodes share it. */
struct store_circuit {
        char *source; /* the key */
        enum breaker_state state;
        int consecutive_failures;
        int64_t trips;       /* times it opened */
        int64_t opened_at;   /* wall ms it last opened; 0: never */
        int64_t retry_at;    /* wall ms a half-open probe may start; 0: none */
        int64_t open_ms;     /* length of the current opening, ms */
        char *last_error;    /* NULL: none */
        char *probe_owner;   /* node holding the half-open probe; NULL: none */
        int64_t probe_until; /* wall ms that hold ends; 0: none */
        int64_t updated_at;  /* wall ms of the last change (store_circuit_list's cursor) */
};

int store_open(const char *url, struct store **ret);
/* Like store_open(), for a table that must exist already: never creates a
 * SQLite file or its directory (-ENOENT when missing) and applies no
 * migration (-EPROTO when the schema is older or newer than this build's).
 * For connections that must never see a deleted file re-created empty. */
int store_open_existing(const char *url, struct store **ret);
/* Is there a backend for url in this build? -EPROTONOSUPPORT for a known
 * scheme without one (postgresql:// built without libpq), -EINVAL for
 * anything else. */
int store_check_url(const char *url);
void store_close(struct store *s);
/* A short description for logs: the URL with any password shown as ***. */
const char *store_describe(const struct store *s);
/* url with the password of its user-info and any password=... parameter
 * shown as ***; safe to log. *ret is freed by the caller. */
int store_url_redact(const char *url, char **ret);
/* Is this still the table opened? SQLite: -ESTALE when the file at the
 * path was deleted or replaced since the open (the connection still
 * writes the old one). PostgreSQL: -ECONNRESET when the server does not
 * answer. */
int store_check(struct store *s);

int store_begin(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s);

/* Insert a job (job->seq is assigned and written back) with its items, in
 * one transaction. -EEXIST when job->idempotency_key is taken. The lease
 * fields are not written: a new job has no lease. */
int store_job_insert(struct store *s, struct job *job, const struct item *items, size_t nitems);
/* The job with the head of its per_source (JOB_PER_SOURCE_HEAD entries at
 * most; per_source_total says how many it has): what a job object shows. */
int store_job_get(struct store *s, const char *id, struct job **ret);
/* Every per_source entry of a job, in order. */
int store_job_per_source(struct store *s, const char *id, struct job_source **ret, size_t *ret_n);
int store_job_find_idempotent(struct store *s, const char *key, struct job **ret);
/* Newest first. ret_next_seq is the cursor for the next page, 0 when none. */
int store_job_list(struct store *s, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                   int64_t *ret_next_seq);
/* Write a job's mutable fields: state, started/finished/deadline, progress,
 * per_source, error. With job->lease_token > 0 the write is fenced: only
 * the row still holding that token is written, else -ESTALE (also when
 * the job is gone); 0 writes unfenced (-ENOENT when the job is gone). A
 * new state other than running ends the lease (lease_owner and
 * lease_until cleared; the token stays). */
int store_job_update(struct store *s, const struct job *job);
/* The same, except that the stored per_source stays as it is: for the
 * frequent writes of a running job's progress, its per_source (one entry
 * per source or host, thousands in a big job) written less often. */
int store_job_update_progress(struct store *s, const struct job *job);
/* Remove a job and its items. */
int store_job_delete(struct store *s, const char *id);
/* Ids of queued jobs, priority high to low then oldest first, at most limit. */
int store_job_next_queued(struct store *s, size_t limit, char (**ret_ids)[JOB_ID_LEN + 1], size_t *ret_n);
/* Count of jobs per state into counts[_JOB_STATE_MAX]. */
int store_job_count_by_state(struct store *s, int64_t counts[]);
/* Delete terminal jobs finished before wall_ms; ret_n how many. */
int store_job_prune(struct store *s, int64_t finished_before_ms, int64_t *ret_n);

/* Items ordered by index. */
int store_item_list(struct store *s, const char *job_id, const struct item_filter *f, struct item **ret,
                    size_t *ret_n, int *ret_next_index);
/* All items of a job (the scheduler loads a job it starts). */
int store_item_load(struct store *s, const char *job_id, struct item **ret, size_t *ret_n);
/* Write an item's mutable fields (state and everything after it). */
int store_item_update(struct store *s, const char *job_id, const struct item *it);
/* Append items to an existing job (query listings add candidates). */
int store_item_append(struct store *s, const char *job_id, const struct item *items, size_t n);

/* Whether each commit waits for the disk (the default). The scheduler
 * turns it off for its own connection: what it writes follows files that
 * are already on disk, and after a power loss it redoes a little work
 * (finding the files in place) rather than losing any. A crash of the
 * process alone never loses a commit either way. PostgreSQL:
 * synchronous_commit for this connection. */
int store_set_sync(struct store *s, bool each_commit);

/* At start: running jobs go back to queued with no lease, running items
 * of queued, running and paused jobs to pending (their attempts kept).
 * SQLite (one node per file): every running job. PostgreSQL: only the
 * running jobs whose lease is node's, has no owner, or ran out before
 * now_ms; other nodes keep theirs. node may be NULL (no node id). ret_jobs
 * how many jobs were requeued. */
int store_recover(struct store *s, const char *node, int64_t now_ms, int64_t *ret_jobs);

/* ---- leases: which node runs which job ---------------------------------------- */

/* Take up to limit (0..STORE_LEASE_MAX) jobs for node: queued ones, and
 * running ones whose lease ran out before now_ms or that have none
 * (rescued), priority high to low then oldest first. Each becomes
 * running, leased to node until now_ms + lease_ms, with a new token
 * greater than every token handed out for the table before; its running
 * items (a dead node's transfers) go back to pending. Committed when it
 * returns. *ret (free()) in that order, NULL when none. */
int store_job_claim(struct store *s, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                    struct store_claim **ret, size_t *ret_n);
/* Extend node's leases c[0..n) (n <= STORE_LEASE_MAX) to now_ms +
 * lease_ms, in one round trip. ret_lost[i] (n entries, written only on
 * success) is true for each lease node no longer holds: its token moved
 * on, the job is gone, or it is neither running nor paused. */
int store_lease_renew(struct store *s, const char *node, const struct store_claim *c, size_t n,
                      int64_t now_ms, int64_t lease_ms, bool *ret_lost);
/* Give job id a new token leased to node until now_ms + lease_ms, whoever
 * held it: the holder's next fenced write fails with -ESTALE. The state
 * is left alone. For changing a job another node runs (cancel): take,
 * then write with the new token. -ENOENT when there is no such job. */
int store_lease_take(struct store *s, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                     int64_t *ret_token);

/* ---- nodes ---------------------------------------------------------------------- */

/* Insert or replace the node's row. */
int store_node_beat(struct store *s, const struct store_node *n);
/* Nodes whose last beat is at or after alive_since_ms (0: all), by id. */
int store_node_list(struct store *s, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n);
int store_node_remove(struct store *s, const char *id);
void store_nodes_free(struct store_node *v, size_t n);

/* ---- circuits shared by the nodes ------------------------------------------------ */

/* Insert or replace the source's circuit; a half-open one written again as
 * half-open keeps the node holding its probe (probe_owner NULL in c). */
int store_circuit_put(struct store *s, const struct store_circuit *c);
/* Circuits with updated_at at or after changed_since_ms (0: all), by source. */
int store_circuit_list(struct store *s, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n);
/* 0 when node now holds the source's half-open probe until now_ms +
 * probe_ms (the circuit turns half_open): it is open or half_open,
 * retry_at is at or before now_ms, and no other node's hold is still
 * ahead. -EBUSY otherwise; -ENOENT when the source has no circuit. */
int store_circuit_take_probe(struct store *s, const char *source, const char *node, int64_t now_ms,
                             int64_t probe_ms);
int store_circuit_delete(struct store *s, const char *source);
void store_circuits_free(struct store_circuit *v, size_t n);

/* ---- notifications (PostgreSQL) --------------------------------------------------- */

/* Inserting a job, claiming and taking leases notify every node listening
 * on the table (on commit). store_notify_fd() starts listening and
 * returns the socket to poll for reading; it can change when the
 * connection is re-established, so take it anew for each poll.
 * -EOPNOTSUPP for SQLite. */
int store_notify_fd(struct store *s);
/* Consume what arrived: *ret_any true when at least one notification did
 * (or the connection was re-established, which may have missed some).
 * Call it before sleeping too: a notification that came with the answer
 * to another call is read already. SQLite: always false. */
int store_notify_drain(struct store *s, bool *ret_any);

/* The persistent job table. A backend is chosen by the STORE URL at open
 * ("sqlite:/var/lib/hauld/jobs.db"); callers never see which.
 *
 * A struct store is one connection: use it from one thread at a time (the
 * scheduler's thread owns one; the API lends one from its pool to each
 * request). Every call that writes is committed when it returns, unless it
 * runs between store_begin() and store_commit(), which the scheduler uses
 * to batch.
 *
 * int returns: 0 ok, -errno on failure: -ENOENT not found, -EEXIST a
 * uniqueness conflict (idempotency key), -EBUSY locked too long,
 * -EIO other database errors. ret_* are written only on success. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/job.h"

struct store;

struct job_filter {
        unsigned states;    /* bit mask of 1u << enum job_state; 0: all */
        int limit;          /* 1..500 */
        int64_t before_seq; /* cursor: only jobs with seq < before_seq; 0: from newest */
};

struct item_filter {
        unsigned states; /* bit mask of 1u << enum item_state; 0: all */
        int limit;       /* 1..10000 */
        int after_index; /* cursor: only items with index > after_index; -1: from first */
};

int store_open(const char *url, struct store **ret);
/* Is there a backend for url in this build? -EPROTONOSUPPORT for a known
 * scheme without one (postgresql:// for now), -EINVAL for anything else. */
int store_check_url(const char *url);
void store_close(struct store *s);
/* A short description for logs ("sqlite:/path"). */
const char *store_describe(const struct store *s);

int store_begin(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s);

/* Insert a job (job->seq is assigned and written back) with its items, in
 * one transaction. -EEXIST when job->idempotency_key is taken. */
int store_job_insert(struct store *s, struct job *job, const struct item *items, size_t nitems);
int store_job_get(struct store *s, const char *id, struct job **ret);
int store_job_find_idempotent(struct store *s, const char *key, struct job **ret);
/* Newest first. ret_next_seq is the cursor for the next page, 0 when none. */
int store_job_list(struct store *s, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                   int64_t *ret_next_seq);
/* Write a job's mutable fields: state, started/finished/deadline, progress,
 * per_source, error. */
int store_job_update(struct store *s, const struct job *job);
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
 * process alone never loses a commit either way. */
int store_set_sync(struct store *s, bool each_commit);

/* At start: running jobs go back to queued, running items to pending
 * (their attempts kept). ret_jobs how many jobs were requeued. */
int store_recover(struct store *s, int64_t *ret_jobs);

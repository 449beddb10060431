/* work: what the scheduler does with one running job: start its groups,
 * start the downloads and listing pages the limits allow, and settle what
 * comes back (success, retry, failure; new candidates from a listing).
 *
 * The policies live here:
 * - limits: MAX_CONCURRENT_DOWNLOADS transfers at once; per job,
 *   MAX_CONCURRENT_SOURCES query sources at once (explicit URLs are not
 *   held back by it); connections per query source and per host (srctab);
 *   `max` items in play per job;
 * - an open circuit defers its source's items (no slot held) until the
 *   probe decides, and skips them only when its next probe comes after
 *   the job's deadline, or when other sources filled a query job's max;
 * - retries: a failed request is tried again up to max_retries times with
 *   exponential backoff (the source level), then an item that failed on
 *   transient faults gets MAX_RETRIES_PER_ITEM more rounds, after the
 *   other items of its group (the item level); a URL counts once against
 *   its circuit however many attempts it takes;
 * - time: SOURCE_TIMEOUT bounds a query source's part of a job; the URLs of
 *   a host in an explicit-URL job are bounded by the job's timeout unless
 *   the job sets source_timeout.
 *
 * Runs on the scheduler's thread; logs the per-file lines (DOWNLOADING,
 * SUCCESS, RETRY, TIMEOUT, FAILED) with a `job ID:` prefix.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "daemon/jobrun.h"
#include "daemon/xfers.h"

struct config;
struct source_set;
struct srctab;

/* What work needs of the scheduler; the scheduler owns all of it. */
struct work_env {
        const struct config *cfg;
        const struct source_set *sources; /* NULL: none configured */
        struct srctab *srcs;
        struct xfers *xfers;
        int dl_fd;        /* DOWNLOAD_DIR */
        const char *node; /* this node's id for items' files; NULL: single node */
        bool file_lines;  /* log DOWNLOADING and SUCCESS per file at info */
        /* Nodes sharing circuits: may this node send src's half-open probe?
         * NULL: yes (one node). */
        bool (*take_probe)(void *ud, struct src *src);
        void *probe_ud;
        double (*rand01)(void *ud); /* uniform in [0, 1), for jitter */
        void *rand_ud;
};

/* The job begins: its groups get their source entries; explicit-URL groups
 * start at once, query groups wait for their turn. */
int work_begin(struct work_env *w, struct jobrun *jr, int64_t now_ms);
/* Start what the limits allow for the job's marked groups. Returns false
 * when MAX_CONCURRENT_DOWNLOADS is reached (the caller stops filling). */
bool work_fill(struct work_env *w, struct jobrun *jr, int64_t now_ms);
/* Settle one outcome of this job (the caller frees o). */
void work_apply(struct work_env *w, struct jobrun *jr, struct outcome *o, int64_t now_ms);
/* Timers of the job: group deadlines, due retries and listings, groups
 * waiting for their source. Returns the monotonic time of the next one
 * (INT64_MAX: none). */
int64_t work_timers(struct work_env *w, struct jobrun *jr, int64_t now_ms);
/* Is every group done (nothing queued, waiting, in flight or listing)? */
bool work_done(struct jobrun *jr);
/* End the job now (the caller then sets its state st): transfers aborted
 * (parts removed), unfinished items skipped with code and msg (max
 * reached: max_reached, the groups done). */
void work_end(struct work_env *w, struct jobrun *jr, enum job_state st, const char *code, const char *msg,
              int64_t now_ms);
/* Put the job aside (a stop, a pause): transfers aborted keeping their
 * parts, running items back to pending; the job's state becomes st. */
void work_park(struct work_env *w, struct jobrun *jr, enum job_state st, int64_t now_ms);

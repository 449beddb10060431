/* jobrun: one job in the scheduler's memory while it runs: its items, its
 * groups (one per per_source entry: a query source, or the explicit URLs
 * of one host or label), the counters, what changed since the last write,
 * and the indexes of its URLs and contents.
 *
 * It keeps the bookkeeping honest and nothing else: every item state
 * change goes through jobrun_item_*(), which keeps progress and
 * per_source counters equal to what the items add up to, marks what must
 * be written and notes the events the change makes. It starts nothing and
 * decides nothing: the scheduler (work.c, sched.c) does, and keeps its
 * per-group and per-item scheduling state in the structs below.
 *
 * No clock of its own (times are arguments), no logging, no engine; the
 * store only in jobrun_load() and jobrun_write().
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/job.h"

struct jobrun;
struct store;

enum group_phase {
        GROUP_WAITING, /* a query source not started yet (MAX_CONCURRENT_SOURCES) */
        GROUP_RUNNING,
        GROUP_DONE,
};

/* The scheduler's state of one group; jobrun only keeps it with the job. */
struct group_run {
        void *src;  /* the scheduler's source entry */
        bool query; /* a query source of the job: it lists pages */
        enum group_phase phase;
        int64_t deadline_ms; /* monotonic end of its time (source_timeout); 0: none */
        int inplay;          /* items running or with the committer */
        /* listing (query groups) */
        bool listing;         /* more pages may be asked for */
        bool list_inflight;   /* a page request is under way */
        int page;             /* the next page, from 1 */
        int list_attempts;    /* attempts at that page */
        int64_t list_due_ms;  /* monotonic: not before */
        int64_t results;      /* results seen on the pages so far */
        int64_t total;        /* results the source says it has; -1 unknown */
        int pages;            /* pages listed */
        const char *list_end; /* why listing stopped (static string); NULL: not stopped */
        /* waiting for its source: circuit, connections or rate */
        uint64_t blocked_gen;  /* the source's gen when it blocked; 0: not blocked */
        int64_t blocked_until; /* monotonic: look again by then; 0: on a gen change only */
        int64_t next_round_ms; /* monotonic: failed items get another round from then */
};

/* The scheduler's state of one item. */
struct item_run {
        bool counted;         /* a failure of this URL was counted against its circuit in this run */
        int rounds;           /* rounds of attempts ended (MAX_RETRIES_PER_ITEM) */
        int round_attempts;   /* attempts in the current round */
        int leader;           /* -1, or the item with identical content whose file this one waits for */
        int64_t resumed_from; /* bytes its body continued from an earlier part (Range) */
};

int jobrun_load(struct store *st, const char *id, uint64_t run, struct jobrun **ret);
void jobrun_free(struct jobrun *jr);

const struct job *jobrun_job(const struct jobrun *jr);
const char *jobrun_id(const struct jobrun *jr);
uint64_t jobrun_run(const struct jobrun *jr);
size_t jobrun_nitems(const struct jobrun *jr);
const struct item *jobrun_item(const struct jobrun *jr, int i);
struct item_run *jobrun_item_run(struct jobrun *jr, int i);
int jobrun_group_of(const struct jobrun *jr, int item);
size_t jobrun_ngroups(const struct jobrun *jr);
const struct job_source *jobrun_source(const struct jobrun *jr, int g);
struct group_run *jobrun_group(struct jobrun *jr, int g);
bool jobrun_group_is_query(const struct jobrun *jr, int g); /* named in the job's sources */

/* ---- the job --------------------------------------------------------------- */

/* The job starts (or resumes) running: started_at once, a deadline of its
 * timeout from now (or deadline_wall_ms when it is > 0: a job taken over
 * from a node that stopped keeps its deadline), error cleared. */
void jobrun_begin(struct jobrun *jr, int64_t wall_ms, int64_t now_ms, int64_t deadline_wall_ms);
/* The lease token its writes are fenced with (0: none). */
void jobrun_set_lease(struct jobrun *jr, int64_t token);
int64_t jobrun_deadline(const struct jobrun *jr); /* monotonic */
/* The job's state changes to st (terminal, or queued/paused when it is put
 * aside); code NULL: no error. */
void jobrun_set_state(struct jobrun *jr, enum job_state st, const char *code, const char *msg,
                      int64_t wall_ms);
/* The terminal state its items add up to, with its error code (NULL none). */
enum job_state jobrun_outcome(const struct jobrun *jr, const char **ret_code, const char **ret_msg);
/* succeeded >= max */
bool jobrun_max_reached(const struct jobrun *jr);
/* succeeded + items running or with the committer (all groups) */
int64_t jobrun_committed(const struct jobrun *jr);
/* A query group's listing in per_source: pages answered, and why it
 * stopped (a static string; NULL: not stopped). */
void jobrun_group_listing(struct jobrun *jr, int g, int pages, const char *why);
/* A group's state in per_source; code NULL clears its error. */
void jobrun_group_set(struct jobrun *jr, int g, enum source_state st, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

/* ---- items ------------------------------------------------------------------ */

/* The next item ready to start in group g (taken off its queue), or -1. */
int jobrun_take_ready(struct jobrun *jr, int g);
/* Put an item taken just now back at the front (it could not start). */
void jobrun_untake(struct jobrun *jr, int g, int item);
size_t jobrun_queued(const struct jobrun *jr, int g);  /* ready items */
size_t jobrun_waiting(const struct jobrun *jr, int g); /* items waiting for a retry time */

void jobrun_item_started(struct jobrun *jr, int i);
/* What an attempt's answer said (status, size, time, speed, type), kept
 * whatever comes of it. */
void jobrun_item_answer(struct jobrun *jr, int i, int http_status, int64_t bytes, int64_t duration_ms,
                        int64_t speed_bps, const char *content_type);
/* Its body is complete, with this content; the file is on its way. */
void jobrun_item_content(struct jobrun *jr, int i, const char *sha256);
void jobrun_item_succeeded(struct jobrun *jr, int i, const char *path, int64_t resumed_from,
                           const char *node);
/* Back to pending, waiting delay_ms until due_ms; its error stays as the
 * reason. code is a static string (a retry class's code). */
void jobrun_item_retry(struct jobrun *jr, int i, int64_t due_ms, int64_t delay_ms, const char *code,
                       const char *msg);
void jobrun_item_failed(struct jobrun *jr, int i, const char *code, const char *msg);
/* An item taken just now waits until due_ms before it is ready again (its
 * host's circuit is open): no attempt, no error, no retry counted. */
void jobrun_item_defer(struct jobrun *jr, int i, int64_t due_ms);
/* Skipped. An item that already failed an attempt keeps that error's code
 * and gets why it was not tried again appended to its message; one never
 * tried gets code and msg. */
void jobrun_item_skipped(struct jobrun *jr, int i, const char *code, const char *msg);
/* A running item goes back to pending, at the front of its queue (the job
 * is put aside, or its transfer could not go on for a reason of ours). */
void jobrun_item_requeue(struct jobrun *jr, int i);
/* Failed and skipped items (but duplicates) back to pending with their
 * attempts cleared, groups pending: a retried job. */
void jobrun_reset_failed(struct jobrun *jr);
/* Retries whose time came go to their queues; returns the monotonic time
 * of the next one, INT64_MAX when none. Calls ready(g) for each group
 * that got items. */
int64_t jobrun_due(struct jobrun *jr, int64_t now_ms, void (*ready)(struct jobrun *jr, int g, void *ud),
                   void *ud);
/* Skip every item of group g still queued or waiting (not those in flight). */
void jobrun_skip_rest(struct jobrun *jr, int g, const char *code, const char *msg);
/* Skip every unfinished item of a job that is not running, and mark its
 * groups skipped (a queued or paused job cancelled). */
void jobrun_skip_all(struct jobrun *jr, const char *code, const char *msg);

/* An item of the job whose content is sha256 and that succeeded or is
 * with the committer, or -1. */
int jobrun_find_content(const struct jobrun *jr, const char *sha256);
/* A listed URL becomes an item of group g: its index, -EEXIST when the job
 * has this URL already, -E2BIG at JOB_MAX_ITEMS. */
int jobrun_add_item(struct jobrun *jr, int g, const char *url);

/* Item i's content is the same as leader's, whose file is with the
 * committer: i waits for that file. */
int jobrun_follow(struct jobrun *jr, int i, int leader);
/* An item waiting for leader's file (taken off that list), or -1. */
int jobrun_take_follower(struct jobrun *jr, int leader);

/* The scheduler's own timer for the job's groups (monotonic; INT64_MAX none). */
int64_t jobrun_group_timer(const struct jobrun *jr);
void jobrun_set_group_timer(struct jobrun *jr, int64_t at_ms);

/* ---- groups with something to look at ------------------------------------------ */

/* Put g on the job's list of groups to look at (once). */
void jobrun_mark(struct jobrun *jr, int g);
/* The next group on that list, taken off it, or -1. */
int jobrun_take_marked(struct jobrun *jr);
/* Groups that stopped starting items because the job's committed items
 * reached max: noted once each, and all put on the marked list when a
 * place under max comes free (an item failed or was skipped). */
void jobrun_set_capped(struct jobrun *jr, int g);
void jobrun_mark_capped(struct jobrun *jr);
/* The list of groups waiting for their source: on it with blocked true
 * (the caller sets group_run.blocked_*), off it (and those fields zeroed)
 * with false. */
void jobrun_set_blocked(struct jobrun *jr, int g, bool blocked);
size_t jobrun_blocked(const struct jobrun *jr, const int **ret);

/* ---- writing and events ---------------------------------------------------------- */

/* How often a running job's per_source (an entry per source or host,
 * thousands in a big job) is written at most; its counters are recounted
 * from the items when a job is loaded, so only attempts and retries can
 * lag after a crash. */
#define JOBRUN_PER_SOURCE_EVERY_MS 1000

/* Something to write now (monotonic now). */
bool jobrun_dirty(const struct jobrun *jr, int64_t now);
/* When a per_source change that waits is due; INT64_MAX: none waits. */
int64_t jobrun_per_source_due(const struct jobrun *jr);
/* Write what changed: the job row first (a lease token fences it; its
 * per_source when due), then items listed since the last write, then
 * changed items. Runs inside the caller's transaction; on failure nothing
 * is forgotten. */
int jobrun_write(struct jobrun *jr, struct store *st, int64_t now);
/* The caller's transaction committed: what jobrun_write() wrote is clean. */
void jobrun_written(struct jobrun *jr, int64_t now);

enum jobrun_event {
        JOBRUN_EV_JOB,      /* the job's state changed */
        JOBRUN_EV_ITEM,     /* an item ended (succeeded, failed, skipped) */
        JOBRUN_EV_RETRY,    /* an item failed an attempt and waits for its retry */
        JOBRUN_EV_PROGRESS, /* counters changed */
};
/* A retry as it was decided: the item itself may have moved on (its
 * retry started, or ended) by the time its event is drained. */
struct jobrun_retry {
        int attempt;      /* the attempt that failed, from 1 */
        int64_t delay_ms; /* the wait before the next */
        const char *code; /* why, a retry class's code */
};
/* The events of the changes written so far (call after jobrun_written()),
 * oldest first, then forget them. retry is set for JOBRUN_EV_RETRY only. */
void jobrun_drain_events(struct jobrun *jr,
                         void (*fn)(struct jobrun *jr, enum jobrun_event ev, int item,
                                    const struct jobrun_retry *retry, void *ud),
                         void *ud);

/* Is item i in the store as it is in memory (neither listed nor changed
 * since the last write)? */
bool jobrun_item_written(const struct jobrun *jr, int i);

/* What the scheduler's files share (sched.c, sched_job.c, sched_unit.c,
 * sched_list.c): its state and the steps of its loop. Everything here runs
 * on the scheduler's thread, or under sched->lock; nothing outside these
 * files includes this header (the rest of the daemon sees daemon/sched.h).
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/engine.h"
#include "daemon/events.h"
#include "daemon/job.h"
#include "daemon/retry.h"
#include "daemon/sched.h"
#include "daemon/sources.h"

#define POLL_MAX_MS 1000 /* longest engine_poll() when no timer is due sooner */

struct src {
        char *name;
        struct breaker *breaker;
        bool query;            /* a query source from SOURCES_DIR */
        struct ratelimit rl;   /* query sources: requests_per_second */
        double rl_rate;        /* what rl was set up with */
        int64_t rl_wait_until; /* monotonic; no request before */
        int active;            /* transfers in flight, all jobs */
        int64_t attempts, successes, failures, retries, bytes;
        char *last_error;
        struct src *next;
};

struct wait {
        int item;
        int64_t due_ms; /* monotonic */
};

enum unit_phase { UNIT_WAITING, UNIT_RUNNING, UNIT_DONE };

struct unit {
        struct rjob *rj;
        size_t index; /* into rj->job->per_source */
        struct src *src;
        enum unit_phase phase;
        int64_t deadline_ms; /* monotonic, SOURCE_TIMEOUT from its start */
        int *queue;          /* pending item indices, FIFO */
        size_t qhead, qtail;
        struct wait *waits; /* retries waiting for their time */
        size_t nwaits, cwaits;
        int running;            /* transfers in flight */
        int committing;         /* its entries in rj->commits */
        int dir_fd;             /* DOWNLOAD_DIR/<job>/<source>, -1 until started */
        bool listing;           /* a query source still paging through results */
        int page;               /* next listing page, from 1 */
        int list_attempts;      /* attempts at the current page */
        int64_t list_due_ms;    /* monotonic: the next page request may start */
        struct slot *list_slot; /* the listing request in flight */
        int64_t candidates;     /* URLs the listing added */
        bool list_failing;      /* the current page failed and waits for a retry */
        size_t qcap;            /* queue capacity */
};

/* A download whose body is complete and now with the committer: its item
 * stays running, and counts against max and its unit, until it is done. */
struct pending_commit {
        int item;
        int attempt;
        int64_t bytes;
        int leader; /* -1: its own file; else the item whose identical file it waits for */
        int leader_attempt;
};

struct slot {
        struct unit *u;
        int item;   /* -1: a listing page */
        bool probe; /* holds its source's half-open probe */
        struct xfer *x;
        struct slot *prev, *next;
};

struct rjob {
        struct job *job;
        uint64_t run; /* this load of the job: commit answers of an earlier run are not its own */
        struct item *items;
        size_t nitems;
        int *item_unit; /* item index -> unit index */
        struct unit *units;
        size_t nunits;
        int64_t deadline_ms; /* monotonic */
        struct slot *slots;  /* in flight */
        int inflight;
        bool job_dirty;
        bool *dirty; /* per item */
        int *dirty_list;
        size_t ndirty;
        int *sha_map; /* open addressing: item index + 1, 0 empty */
        size_t sha_cap;
        int *url_map; /* open addressing over item URLs, for listings */
        size_t url_cap;
        size_t cap; /* allocated items */
        struct sched *sched;
        bool progress_changed;
        int64_t last_progress_ms;       /* monotonic, last progress event */
        struct pending_commit *commits; /* downloads with the committer */
        size_t ncommits, ccommits;
        struct rjob *next;
};

enum cmd_type { CMD_CANCEL, CMD_RETRY, CMD_DELETE, CMD_RESET };

struct cmd {
        enum cmd_type type;
        const char *arg;
        int result;
        bool done;
        struct cmd *next;
};

struct sched {
        const struct config *cfg;
        const struct source_set *sources;
        struct event_bus *events; /* may be NULL */
        struct event *pending;    /* events of this turn, published after the commit */
        size_t npending, cpending;
        int64_t duration_count[SCHED_DURATION_BUCKETS];
        double duration_sum_s;
        int64_t last_prune_ms;
        int64_t last_flush_ms; /* monotonic */
        bool flush_now;        /* a job changed state: commit without waiting */
        struct store *store;
        struct engine *engine;
        struct committer *committer;
        struct retry_policy policy;
        int dl_fd; /* DOWNLOAD_DIR */
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cmd_done;
        bool stopping;
        bool reconfigured; /* engine options changed: the loop applies them */
        bool maybe_queued; /* the store may hold queued jobs */
        struct cmd *cmds, *cmds_tail;
        struct rjob *jobs; /* priority high to low, then oldest first */
        int units_running;
        struct src *srcs;
        int64_t started_ms; /* monotonic */
        uint64_t runs;      /* jobs loaded so far: the next rjob's run */
        int64_t last_status_ms, last_watchdog_ms, watchdog_ms;
};

static inline struct unit *unit_of(struct rjob *rj, int item) { return &rj->units[rj->item_unit[item]]; }

static inline struct job_source *js_of(struct unit *u) { return &u->rj->job->per_source[u->index]; }

static inline bool job_max_reached(const struct rjob *rj)
{
        return rj->job->progress.succeeded >= rj->job->max;
}

/* ---- sched_job.c: events, items, loading, flushing, jobs, timers ---------- */

/* Remember an event; it is published after this turn's commit. */
void sched_emit(struct sched *s, enum event_type type, const char *job_id, int item, bool terminal,
                const char *source);
/* Add d to the counters of state st (progress and js). */
void rjob_count(struct rjob *rj, struct job_source *js, enum item_state st, int d);
/* The one place an item changes state. */
void rjob_item_set(struct rjob *rj, int idx, enum item_state st);
void rjob_item_skip(struct rjob *rj, int idx, const char *code, const char *msg);
/* The item with this content (or URL), or -1; with add, remember idx. */
int rjob_sha_find(struct rjob *rj, const char *sha, int idx, bool add);
int rjob_url_find(struct rjob *rj, const char *url, int idx, bool add);
/* Room for n items in every per-item array. */
int rjob_reserve(struct rjob *rj, size_t n);
int unit_queue_push(struct unit *u, int item);
int rjob_load(struct sched *s, const char *id, struct rjob **ret);
void rjob_free(struct rjob *rj);
/* Write what changed in the jobs of list, in one transaction. */
int sched_flush_list(struct sched *s, struct rjob *list);
void sched_flush(struct sched *s);
/* Commit (paced) and publish; returns ms until the next flush is due. */
int64_t sched_flush_paced(struct sched *s, int64_t now);
/* forced: a job_state, or -1 to take the state the items add up to. */
void rjob_finish(struct sched *s, struct rjob *rj, int forced, const char *code, const char *msg);
void sched_reap_jobs(struct sched *s);
bool sched_units_waiting(struct sched *s);
void sched_claim_jobs(struct sched *s, int64_t now);
void sched_start_work(struct sched *s, int64_t now);
/* Deadlines and due retries; returns ms until the next timer. */
int64_t sched_run_timers(struct sched *s, int64_t now);

/* ---- sched_unit.c: units, transfers, the committer's answers -------------- */

struct slot *sched_slot_new(struct rjob *rj, struct unit *u, int item);
void sched_slot_link(struct slot *sl);
void sched_slot_abort(struct sched *s, struct slot *sl);
/* Stop a unit: abort its transfers, skip its unfinished items with code. */
void unit_close(struct sched *s, struct unit *u, enum source_state st, const char *code, const char *msg);
void unit_start(struct sched *s, struct unit *u, int64_t now);
/* Start what the limits allow from one unit. */
void unit_fill(struct sched *s, struct unit *u, int64_t now);
void sched_apply_commits(struct sched *s);
/* The engine's completion callback (ctx: the sched). */
void sched_on_done(void *userdata, const struct xfer_result *res, void *ctx);

/* ---- sched_list.c: per-source state, rate limits, listing ----------------- */

struct src *sched_src_get(struct sched *s, const char *name);
void sched_srcs_free(struct src *p);
/* Transfers one source may have at once, all jobs together. */
int sched_src_limit(struct sched *s, const struct src *src);
/* May a request to src start now (requests_per_second)? */
bool sched_src_take(struct sched *s, struct src *src, int64_t now);
/* May a request to src start now (its circuit)? *ret_probe: it is the half-open probe. */
bool sched_src_allow(struct src *src, int64_t now, bool *ret_probe);
/* The probe ended without a verdict (aborted, or never started). */
void sched_src_release_probe(struct src *src, int64_t now);
void sched_log_circuit(struct sched *s, struct src *src, int64_t now, const char *why);
void unit_list_start(struct sched *s, struct unit *u, int64_t now);
void unit_list_done(struct sched *s, struct unit *u, const struct xfer_result *res, int64_t now);

/* xfers: the requests in flight for the scheduler (downloads and listing
 * pages) and the downloads with the committer.
 *
 * A request is started with its tags (which job, item or group, which
 * source and host entries it holds connections of) and ends once, as an
 * outcome the scheduler takes with xfers_take() at its next turn: the
 * engine's answer, or the committer's for a download whose file it
 * flushed and renamed. The engine is reached through struct engine_ops,
 * so that tests drive a fake one. The connections a request holds in the
 * srctab are released when it ends or is aborted; what it means for the
 * job (success, retry, failure) is the scheduler's to decide.
 *
 * Runs on the scheduler's thread. int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/engine.h"

struct xfers;
struct srctab;
struct src;
struct committer;

/* Who a request is for. job is the scheduler's opaque owner (a jobrun). */
struct xfer_tags {
        void *job;
        int item;         /* the item downloaded; -1 for a listing page */
        int group;        /* the item's or the listing's group */
        int attempt;      /* the item's attempt number */
        struct src *src;  /* the source entry (circuit, source connections) */
        struct src *host; /* the host entry of a download; NULL for a listing */
        bool rate;        /* it took a requests_per_second token */
        bool probe;       /* it is its source's half-open probe */
};

enum outcome_kind {
        OUTCOME_DOWNLOAD,  /* the engine's answer to a download */
        OUTCOME_LISTING,   /* the engine's answer to a listing page */
        OUTCOME_COMMITTED, /* the committer's answer: the file is in place, or could not be */
};

struct outcome {
        enum outcome_kind kind;
        struct xfer_tags tags;
        struct xfer_result res; /* DOWNLOAD/LISTING; res.part_fd and res.dir_fd are the outcome's until
                                   xfers_commit() takes them; res.body points into body */
        char *body;             /* LISTING: a copy of the page */
        char *final_name;       /* COMMITTED: the file's name in its folder, when error == 0 */
        int error;              /* COMMITTED: -errno */
        struct outcome *next;
};

int xfers_new(const struct engine_ops *ops, void *engine, struct srctab *srcs, struct committer *committer,
              struct xfers **ret);
void xfers_free(struct xfers *x);
/* The engine, when it is made after the xfers (its callback needs them). */
void xfers_set_engine(struct xfers *x, void *engine);

/* Start a request; the connections of tags->src/host are acquired (with
 * the probe and rate token as the tags say). */
int xfers_start(struct xfers *x, const struct xfer_request *req, const struct xfer_tags *tags,
                int64_t now_ms);
/* Abort the requests of job (all of its groups when group is -1): their
 * parts are kept for a later resume when keep_parts. Calls fn for each
 * aborted download item (listings are not reported). */
void xfers_abort(struct xfers *x, void *job, int group, bool keep_parts, int64_t now_ms,
                 void (*fn)(void *job, int item, void *ud), void *ud);
/* Hand a finished download's part to the committer (its fds are taken from
 * o->res), named name (or a free variant of it) in its folder. */
int xfers_commit(struct xfers *x, struct outcome *o, const char *job_id, const char *name);
/* Forget job (call before freeing it, after xfers_abort()): its outcomes
 * not taken yet go, their part files removed. With unfiled, its downloads
 * still with the committer are waited for, and unfiled(job, tags, name,
 * ud) is called for each file of job that landed (name in its folder) but
 * was never taken as an outcome: the caller removes it, as no record will
 * name it. Without unfiled, answers still to come for job are dropped and
 * its files stay where the committer puts them. */
void xfers_forget(struct xfers *x, void *job,
                  void (*unfiled)(void *job, const struct xfer_tags *tags, const char *name, void *ud),
                  void *ud);

/* The outcomes since the last call, oldest first; free each with
 * outcome_free() (which closes fds not taken). */
struct outcome *xfers_take(struct xfers *x);
void outcome_free(struct outcome *o);

int xfers_running(const struct xfers *x);             /* requests in flight, all jobs */
int xfers_of(const struct xfers *x, const void *job); /* requests in flight for job */
/* Live bytes of job's downloads in flight: fn(item, progress). */
void xfers_progress(const struct xfers *x, const void *job,
                    void (*fn)(int item, const struct xfer_progress *p, void *ud), void *ud);
/* The engine's completion callback (ctx: the struct xfers). */
void xfers_on_done(void *userdata, const struct xfer_result *res, void *ctx);

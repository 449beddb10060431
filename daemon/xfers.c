/* xfers: requests in flight and downloads with the committer.
 *
 * Owns the slots of requests in flight (a list: at most
 * MAX_CONCURRENT_DOWNLOADS of them), the tickets of downloads handed to
 * the committer, and the outcomes not taken yet.
 *
 * Invariants: a slot holds the srctab connections its tags name from
 * xfers_start() until it ends (engine answer) or is aborted, and its
 * probe until then too (an aborted probe is abandoned, without verdict);
 * every engine answer becomes exactly one outcome; a committer answer
 * becomes an outcome only while its ticket is known (its job not
 * forgotten); a forgotten job has no outcome left to take. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/commit.h"
#include "daemon/srctab.h"
#include "daemon/xfers.h"

struct slot {
        struct xfer_tags tags;
        struct xfer *x;
        struct slot *prev, *next;
};

/* A download with the committer. */
struct ticket {
        uint64_t id;
        struct xfer_tags tags;
        bool dropped; /* its job was forgotten: the answer is not reported */
};

struct xfers {
        const struct engine_ops *ops;
        void *engine;
        struct srctab *srcs;
        struct committer *committer;
        struct slot *slots; /* in flight */
        int nslots;
        struct ticket *tickets;
        size_t ntickets, ctickets;
        uint64_t next_ticket;
        struct outcome *done, *done_tail;
};

int xfers_new(const struct engine_ops *ops, void *engine, struct srctab *srcs, struct committer *committer,
              struct xfers **ret)
{
        struct xfers *x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->ops = ops;
        x->engine = engine;
        x->srcs = srcs;
        x->committer = committer;
        x->next_ticket = 1;
        *ret = x;
        return 0;
}

void xfers_set_engine(struct xfers *x, void *engine) { x->engine = engine; }

void outcome_free(struct outcome *o)
{
        while (o) {
                struct outcome *next = o->next;
                if (o->res.part_fd >= 0)
                        close(o->res.part_fd);
                if (o->res.dir_fd >= 0)
                        close(o->res.dir_fd);
                free(o->body);
                free(o->final_name);
                free(o);
                o = next;
        }
}

/* Everything in flight is aborted (parts kept: the next start resumes them). */
void xfers_free(struct xfers *x)
{
        if (!x)
                return;
        while (x->slots) {
                struct slot *sl = x->slots;
                x->slots = sl->next;
                x->ops->abort(x->engine, sl->x, true);
                free(sl);
        }
        outcome_free(x->done);
        free(x->tickets);
        free(x);
}

static void push(struct xfers *x, struct outcome *o)
{
        o->next = NULL;
        if (x->done_tail)
                x->done_tail->next = o;
        else
                x->done = o;
        x->done_tail = o;
}

static void slot_link(struct xfers *x, struct slot *sl)
{
        sl->prev = NULL;
        sl->next = x->slots;
        if (x->slots)
                x->slots->prev = sl;
        x->slots = sl;
        x->nslots++;
}

static void slot_unlink(struct xfers *x, struct slot *sl)
{
        if (sl->prev)
                sl->prev->next = sl->next;
        else
                x->slots = sl->next;
        if (sl->next)
                sl->next->prev = sl->prev;
        x->nslots--;
        srctab_release(x->srcs, sl->tags.src, sl->tags.host);
}

int xfers_start(struct xfers *x, const struct xfer_request *req, const struct xfer_tags *tags,
                int64_t now_ms)
{
        struct slot *sl = calloc(1, sizeof(*sl));
        struct xfer_request r = *req;

        if (!sl)
                return -ENOMEM;
        sl->tags = *tags;
        r.userdata = sl;
        int err = x->ops->start(x->engine, &r, &sl->x);
        if (err < 0) {
                free(sl);
                return err;
        }
        srctab_acquire(x->srcs, tags->src, tags->host, tags->rate, tags->probe, now_ms);
        slot_link(x, sl);
        return 0;
}

void xfers_abort(struct xfers *x, void *job, int group, bool keep_parts, int64_t now_ms,
                 void (*fn)(void *job, int item, void *ud), void *ud)
{
        for (struct slot *sl = x->slots, *next; sl; sl = next) {
                next = sl->next;
                if (sl->tags.job != job || (group >= 0 && sl->tags.group != group))
                        continue;
                x->ops->abort(x->engine, sl->x, keep_parts);
                if (sl->tags.probe)
                        srctab_abandon_probe(x->srcs, sl->tags.src, now_ms);
                slot_unlink(x, sl);
                if (sl->tags.item >= 0 && fn)
                        fn(job, sl->tags.item, ud);
                free(sl);
        }
}

/* The engine's answer: the connections are free now; the rest is the
 * scheduler's, at its next look at the outcomes. */
void xfers_on_done(void *userdata, const struct xfer_result *res, void *ctx)
{
        struct xfers *x = ctx;
        struct slot *sl = userdata;
        struct outcome *o = calloc(1, sizeof(*o));

        slot_unlink(x, sl);
        if (!o) {
                /* out of memory: the request is lost as if aborted; the item
                 * stays running until its job ends (a deadline always comes) */
                if (res->part_fd >= 0)
                        close(res->part_fd);
                if (res->dir_fd >= 0)
                        close(res->dir_fd);
                if (sl->tags.probe)
                        srctab_abandon_probe(x->srcs, sl->tags.src, 0);
                free(sl);
                return;
        }
        o->kind = sl->tags.item >= 0 ? OUTCOME_DOWNLOAD : OUTCOME_LISTING;
        o->tags = sl->tags;
        o->res = *res;
        o->res.body = NULL;
        if (res->body && (o->body = malloc(res->body_len + 1))) {
                memcpy(o->body, res->body, res->body_len);
                o->body[res->body_len] = '\0';
                o->res.body = o->body;
        } else if (res->body) {
                o->res.rc = RC_IO;
                o->res.body_len = 0;
                snprintf(o->res.message, sizeof(o->res.message), "out of memory for the listing page");
        }
        push(x, o);
        free(sl);
}

/* ---- the committer ------------------------------------------------------------------ */

static struct ticket *ticket_new(struct xfers *x)
{
        if (x->ntickets == x->ctickets) {
                size_t c = x->ctickets ? 2 * x->ctickets : 32;
                struct ticket *t = realloc(x->tickets, c * sizeof(*t));
                if (!t)
                        return NULL;
                x->tickets = t;
                x->ctickets = c;
        }
        struct ticket *t = &x->tickets[x->ntickets++];
        *t = (struct ticket){.id = x->next_ticket++};
        return t;
}

int xfers_commit(struct xfers *x, struct outcome *o, const char *job_id, const char *name)
{
        struct commit_req *req = calloc(1, sizeof(*req));
        struct ticket *t = req ? ticket_new(x) : NULL;

        if (!t) {
                free(req);
                return -ENOMEM;
        }
        t->tags = o->tags;
        snprintf(req->job_id, sizeof(req->job_id), "%s", job_id);
        req->item = o->tags.item;
        req->attempt = o->tags.attempt;
        req->run = t->id; /* the ticket: matched when the answer comes */
        req->dir_fd = o->res.dir_fd;
        req->part_fd = o->res.part_fd;
        o->res.dir_fd = o->res.part_fd = -1;
        req->size = o->res.bytes;
        snprintf(req->part, sizeof(req->part), "%s", o->res.part);
        snprintf(req->name, sizeof(req->name), "%s", name);
        snprintf(req->sha256, sizeof(req->sha256), "%s", o->res.sha256);
        committer_submit(x->committer, req);
        return 0;
}

static void take_commits(struct xfers *x);

/* Take job's outcomes off the list: parts removed, files that landed
 * reported to unfiled (when given). */
static void purge(struct xfers *x, void *job,
                  void (*unfiled)(void *job, const struct xfer_tags *tags, const char *name, void *ud),
                  void *ud)
{
        struct outcome **at = &x->done;

        x->done_tail = NULL;
        while (*at) {
                struct outcome *o = *at;
                if (o->tags.job != job) {
                        x->done_tail = o;
                        at = &o->next;
                        continue;
                }
                *at = o->next;
                if (o->kind == OUTCOME_DOWNLOAD && o->res.part_fd >= 0 && o->res.dir_fd >= 0)
                        unlinkat(o->res.dir_fd, o->res.part, 0);
                if (o->kind == OUTCOME_COMMITTED && o->error == 0 && o->final_name && unfiled)
                        unfiled(job, &o->tags, o->final_name, ud);
                o->next = NULL;
                outcome_free(o);
        }
}

void xfers_forget(struct xfers *x, void *job,
                  void (*unfiled)(void *job, const struct xfer_tags *tags, const char *name, void *ud),
                  void *ud)
{
        bool with_committer = false;

        for (size_t i = 0; i < x->ntickets; i++)
                if (x->tickets[i].tags.job == job) {
                        x->tickets[i].dropped = !unfiled;
                        with_committer = true;
                }
        if (with_committer && unfiled && x->committer) {
                /* rare (a lost lease): the scheduler waits for one batch of the committer */
                committer_wait_idle(x->committer);
                take_commits(x);
        }
        purge(x, job, unfiled, ud);
}

/* The committer's answers become outcomes (their tickets then go). */
static void take_commits(struct xfers *x)
{
        struct commit_req *done = x->committer ? committer_take_done(x->committer) : NULL;

        for (struct commit_req *r = done; r; r = r->next) {
                size_t i = 0;
                while (i < x->ntickets && x->tickets[i].id != r->run)
                        i++;
                if (i == x->ntickets)
                        continue;
                struct ticket t = x->tickets[i];
                x->tickets[i] = x->tickets[--x->ntickets];
                if (t.dropped)
                        continue;
                struct outcome *o = calloc(1, sizeof(*o));
                if (!o)
                        continue; /* the item stays running until its job ends */
                o->kind = OUTCOME_COMMITTED;
                o->tags = t.tags;
                o->res.part_fd = o->res.dir_fd = -1;
                o->error = r->error;
                o->final_name = r->final_name;
                r->final_name = NULL;
                push(x, o);
        }
        commit_req_free(done);
}

struct outcome *xfers_take(struct xfers *x)
{
        take_commits(x);
        struct outcome *o = x->done;
        x->done = x->done_tail = NULL;
        return o;
}

int xfers_running(const struct xfers *x) { return x->nslots; }

int xfers_of(const struct xfers *x, const void *job)
{
        int n = 0;
        for (const struct slot *sl = x->slots; sl; sl = sl->next)
                n += sl->tags.job == job;
        return n;
}

void xfers_progress(const struct xfers *x, const void *job,
                    void (*fn)(int item, const struct xfer_progress *p, void *ud), void *ud)
{
        for (const struct slot *sl = x->slots; sl; sl = sl->next) {
                if (sl->tags.job != job || sl->tags.item < 0)
                        continue;
                struct xfer_progress p;
                x->ops->progress(x->engine, sl->x, &p);
                fn(sl->tags.item, &p, ud);
        }
}

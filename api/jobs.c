/* jobs: the /v1/jobs resource. New jobs are validated by job_request and
 * handed to the intake, which writes them in batches (one transaction and
 * one sync for every submission waiting); the connection is suspended
 * until its batch is durable, then answered 201 (the scheduler learns of
 * new jobs through sched_wake). Every change to an existing job goes
 * through the scheduler, and the answer re-reads the job so it shows the
 * state the scheduler left.
 *
 * Idempotency: a key is stored with the hex SHA-256 of the request as
 * parsed (canonical JSON: sorted keys, no whitespace); a repeat with the
 * same key answers exactly as the first did (201 and its Location) when
 * the hash matches, and 422 when it does not, also when two submissions
 * with one key meet in a batch.
 * Cursors are opaque to clients: the decimal seq (jobs) or item index. */
#include "autoconfig.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/job_request.h"
#include "api/jobcache.h"
#include "api/jobjson.h"
#include "api/problem.h"
#include "api/reply.h"
#include "daemon/intake.h"
#include "common/clock.h"
#include "common/sha256.h"

#define JOBS_LIMIT_DEFAULT    50
#define JOBS_LIMIT_MAX        500
#define ITEMS_LIMIT_DEFAULT   100
#define ITEMS_LIMIT_MAX       1000
#define SOURCES_LIMIT_DEFAULT JOB_PER_SOURCE_HEAD
#define SOURCES_LIMIT_MAX     1000
#define IDEMPOTENCY_KEY_MAX   128  /* bytes, visible ASCII */
#define CURSOR_MAX_DIGITS     18   /* a cursor always fits an int64 */
#define PRUNE_MARGIN_MS       1000 /* cached jobs this close to JOB_RETENTION are read from the store */

/* ---- helpers ------------------------------------------------------------ */

/* A decimal lo..hi with nothing else around it. */
static bool parse_decimal(const char *s, long long lo, long long hi, long long *ret)
{
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > CURSOR_MAX_DIGITS || strspn(s, "0123456789") != n)
                return false;
        long long v = strtoll(s, NULL, 10);
        if (v < lo || v > hi)
                return false;
        *ret = v;
        return true;
}

struct page {
        unsigned states; /* bit mask over the state enum; 0: all */
        int limit;
        long long cursor; /* -1: none given */
        int (*state_from)(const char *);
        bool bad_state;
};

static enum MHD_Result state_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
        struct page *pg = cls;
        if (strcmp(key, "state") != 0)
                return MHD_YES;
        int s = value ? pg->state_from(value) : -EINVAL;
        if (s < 0)
                pg->bad_state = true;
        else
                pg->states |= 1u << s;
        return MHD_YES;
}

/* state (repeatable), limit and cursor of a list request. -EINVAL with the
 * problem errors in *ret_errors. */
static int page_args(struct request *rq, struct page *pg, int limit_default, int limit_max,
                     long long cursor_min, json_t **ret_errors)
{
        const char *limit = request_arg(rq, "limit"), *cursor = request_arg(rq, "cursor");
        long long v;
        json_t *errors = json_array();

        if (!errors)
                return -ENOMEM;
        MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, state_arg, pg);
        if (pg->bad_state)
                problem_error_add(errors, "state", "unknown state");
        pg->limit = limit_default;
        if (limit && !parse_decimal(limit, 1, limit_max, &v))
                problem_error_add(errors, "limit", "must be an integer 1..%d", limit_max);
        else if (limit)
                pg->limit = (int)v;
        pg->cursor = -1;
        if (cursor && !parse_decimal(cursor, cursor_min, INT64_MAX / 2, &pg->cursor))
                problem_error_add(errors, "cursor", "is not a cursor this server gave");
        if (json_array_size(errors) == 0) {
                json_decref(errors);
                return 0;
        }
        *ret_errors = errors;
        return -EINVAL;
}

static json_t *cursor_json(long long next, bool more)
{
        char buf[24];
        if (!more)
                return json_null();
        snprintf(buf, sizeof(buf), "%lld", next);
        return json_string(buf);
}

/* One scheduler snapshot for the jobs of one answer, taken when the first
 * job is rendered (so after the caller's jobcache_stamp): circuit states
 * and the live progress of running jobs. */
struct circuits {
        struct httpd *h;
        struct snapshot *snap; /* NULL until a job is rendered */
        bool all_closed;       /* every source of the last job shown had a closed circuit */
};

static void circuits_release(struct circuits *c) { snapshot_unref(c->snap); }

/* The job object; c->all_closed tells whether all its circuits were closed. */
static json_t *job_json(const struct job *j, struct circuits *c)
{
        if (!c->snap)
                c->snap = sched_snapshot(c->h->sched);
        return jobjson_job(j, c->snap, &c->all_closed);
}

/* The job object as the scheduler knows it now. */
static json_t *job_now(struct httpd *h, const struct job *j)
{
        struct circuits c = {.h = h};
        json_t *o = job_json(j, &c);
        circuits_release(&c);
        return o;
}

/* The text of a job as answered, kept when the job is terminal and all
 * its circuits closed; stamp from jobcache_stamp() before the store read. */
static struct jobcache_text *job_text(struct httpd *h, uint64_t stamp, const struct job *j,
                                      struct circuits *c)
{
        struct jobcache_text *t = NULL;
        json_t *o = job_json(j, c);
        char *text = o ? json_dumps(o, JOBJSON_DUMP_FLAGS) : NULL;

        json_decref(o);
        if (text)
                t = jobcache_text_new(text, strlen(text));
        free(text);
        if (t && h->jobs && c->all_closed && job_state_is_terminal(j->state))
                jobcache_put(h->jobs, stamp, j->id, j->finished_at, t);
        return t;
}

/* The {id} of the path, when it can name a job. */
static const char *job_id_arg(struct request *rq)
{
        const char *id = rq->params[0];
        return id && job_id_valid(id) ? id : NULL;
}

/* Answer 200 with the job as stored now. */
static enum MHD_Result reply_stored_job(struct request *rq, unsigned status, const char *id)
{
        struct store *s;
        struct job *j;
        int r = request_store(rq, &s);
        if (r < 0 || (r = store_job_get(s, id, &j)) < 0)
                return reply_store_error(rq, r, "job");
        enum MHD_Result ret = reply_json(rq, status, job_now(rq->h, j));
        job_free(j);
        return ret;
}

/* ---- POST /v1/jobs ------------------------------------------------------------ */

static bool idempotency_key_ok(const char *key)
{
        size_t n = strlen(key);
        if (n < 1 || n > IDEMPOTENCY_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (key[i] < 0x21 || key[i] > 0x7E)
                        return false;
        return true;
}

/* The SHA-256 of the request as parsed, not of its bytes: the same JSON
 * with other whitespace or key order is the same request. */
static int request_hash(const char *body, size_t len, char **ret)
{
        char hash[SHA256_HEX_LEN + 1];
        json_t *root = json_loadb(body ? body : "", len, 0, NULL);
        char *canon = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;

        json_decref(root);
        int r = canon ? sha256_hex(canon, strlen(canon), hash) : -ENOMEM;
        free(canon);
        if (r < 0)
                return r;
        return (*ret = strdup(hash)) ? 0 : -ENOMEM;
}

/* The job as the handler completes it: defaults, identity, counts. */
static int job_fill(struct request *rq, struct job *job, const struct item *items, size_t n, const char *key)
{
        int64_t now = clock_wall_ms();

        if (job->timeout == 0)
                job->timeout = rq->h->cfg->global_job_timeout;
        job_id_new(job->id, now);
        job->created_at = now;
        job->state = JOB_QUEUED;
        if (key) {
                if (!(job->idempotency_key = strdup(key)))
                        return -ENOMEM;
                int r = request_hash(rq->body, rq->body_len, &job->request_hash);
                if (r < 0)
                        return r;
        }
        return job_request_tally(job, items, n);
}

/* A submission waiting for its batch to be written; the connection is
 * suspended meanwhile and resumed by the writer. */
struct submission {
        struct intake_req req;
        struct job *job;
        struct item *items;
        size_t n;
        struct MHD_Connection *conn;
};

static void submission_free(void *p)
{
        struct submission *sub = p;
        if (!sub)
                return;
        job_free(sub->job);
        items_free(sub->items, sub->n);
        job_free(sub->req.existing);
        free(sub);
}

/* On the writer's thread: the batch holding it is written (or failed). */
static void submission_done(struct intake_req *r, void *ud)
{
        struct submission *sub = ud;
        (void)r;
        MHD_resume_connection(sub->conn);
}

/* 201 with its Location: a job written now, or the one a repeated
 * Idempotency-Key names (a replay answers as the first request did). */
static enum MHD_Result reply_created(struct request *rq, const struct job *j)
{
        char location[64];
        snprintf(location, sizeof(location), "/v1/jobs/%s", j->id);
        reply_header(rq, MHD_HTTP_HEADER_LOCATION, location);
        return reply_json(rq, 201, job_now(rq->h, j));
}

static enum MHD_Result reply_submission(struct request *rq, struct submission *sub)
{
        const struct job *e = sub->req.existing;

        switch (sub->req.result) {
        case 0:
                return reply_created(rq, sub->job);
        case -EEXIST:
                if (e && e->request_hash && sub->job->request_hash &&
                    strcmp(e->request_hash, sub->job->request_hash) == 0)
                        return reply_created(rq, e);
                return reply_problem(rq, 422, NULL, "this Idempotency-Key was used with another request");
        case -ESHUTDOWN:
                return reply_problem(rq, 503, NULL, "shutting down");
        default:
                return reply_store_error(rq, sub->req.result, "job");
        }
}

/* Hand the job to the writer (taking job and items); the answer comes
 * once it is durable. */
static enum MHD_Result submit(struct request *rq, struct job *job, struct item *items, size_t n)
{
        struct submission *sub = calloc(1, sizeof(*sub));

        if (!sub) {
                job_free(job);
                items_free(items, n);
                return reply_problem(rq, 500, NULL, "out of memory");
        }
        *sub = (struct submission){.job = job, .items = items, .n = n, .conn = rq->conn};
        sub->req = (struct intake_req){
                .job = job, .items = items, .nitems = n, .done = submission_done, .ud = sub};
        rq->state = sub;
        rq->state_free = submission_free;
        MHD_suspend_connection(rq->conn); /* before the writer may resume it */
        intake_submit(rq->h->intake, &sub->req);
        return MHD_YES;
}

static bool source_known(const char *name, void *userdata)
{
        return snapshot_source(userdata, name) != NULL;
}

static int source_max_query_length(const char *name, void *userdata)
{
        const struct snapshot_source *src = snapshot_source(userdata, name);
        return src ? src->max_query_length : 0;
}

enum MHD_Result jobs_create(struct request *rq)
{
        struct snapshot *snap = NULL;
        struct job_request_hooks hooks = {.source_known = source_known,
                                          .source_max_query_length = source_max_query_length};
        const char *key = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Idempotency-Key");
        struct job *job = NULL;
        struct item *items = NULL;
        size_t n = 0;
        json_t *errors = NULL;
        enum MHD_Result ret;
        int r;

        if (rq->state) /* resumed: the writer answered */
                return reply_submission(rq, rq->state);
        if (key && !idempotency_key_ok(key)) {
                errors = json_array();
                problem_error_add(errors, "Idempotency-Key", "must be 1..%d visible ASCII characters",
                                  IDEMPOTENCY_KEY_MAX);
                return reply_problem(rq, 400, errors, "invalid Idempotency-Key header");
        }
        hooks.userdata = snap = sched_snapshot(rq->h->sched);
        if (snap && !snap->accepting) {
                enum MHD_Result busy =
                        reply_problem(rq, 503, NULL, "not taking jobs now: %s", snap->store_error);
                snapshot_unref(snap);
                return busy;
        }
        r = job_request_parse_with(&hooks, rq->body, rq->body_len, &job, &items, &n, &errors);
        snapshot_unref(snap);
        if (r == -EINVAL)
                return reply_problem(rq, 400, errors, "invalid job request");
        if (r < 0)
                return reply_problem(rq, 500, NULL, "cannot parse the request: %s", strerror(-r));
        r = job_fill(rq, job, items, n, key);
        if (r >= 0)
                return submit(rq, job, items, n);
        ret = reply_problem(rq, 500, NULL, "cannot prepare the job: %s", strerror(-r));
        job_free(job);
        items_free(items, n);
        return ret;
}

/* ---- GET /v1/jobs, GET /v1/jobs/{id}, GET /v1/jobs/{id}/items ---------------------------- */

/* The cached texts of the listed jobs the store left as stubs, in the
 * order it listed them: taken while it reads the rows (job_filter.known),
 * so that a text evicted in between is never needed again. */
struct listed {
        struct httpd *h;
        struct jobcache_text *t[JOBS_LIMIT_MAX];
        size_t n, used;
};

/* job_filter.known: a terminal job whose text of this very finish is
 * cached (a job retried and finished again since has another). */
static bool listed_known(const char *id, int64_t finished_at, void *ud)
{
        struct listed *l = ud;
        struct jobcache_text *t;

        if (l->n == JOBS_LIMIT_MAX || !(t = jobcache_get_finished(l->h->jobs, id, finished_at)))
                return false;
        l->t[l->n++] = t;
        return true;
}

/* The text of one listed job: taken at the listing for a stub, else
 * rendered now. */
static struct jobcache_text *listed_text(struct listed *l, uint64_t stamp, const struct job *j,
                                         struct circuits *c)
{
        if (!j->stub)
                return job_text(l->h, stamp, j, c);
        if (l->used == l->n)
                return NULL; /* cannot be: a stub for each text taken */
        struct jobcache_text *t = l->t[l->used];
        l->t[l->used++] = NULL;
        return t;
}

/* {"jobs":[...],"next_cursor":...} as json_dumps would write it, from the
 * jobs' texts; NULL: no memory. */
static char *jobs_text(struct listed *l, uint64_t stamp, struct job **jobs, size_t n, int64_t next)
{
        struct circuits c = {.h = l->h};
        char *text = NULL;
        size_t len = 0;
        bool ok = true;
        FILE *f = open_memstream(&text, &len);

        if (!f)
                return NULL;
        fputs("{\"jobs\":[", f);
        for (size_t i = 0; ok && i < n; i++) {
                struct jobcache_text *t = listed_text(l, stamp, jobs[i], &c);
                ok = t && (i == 0 || fputc(',', f) != EOF) && fwrite(t->text, 1, t->len, f) == t->len;
                jobcache_text_unref(t);
        }
        circuits_release(&c);
        if (next > 0)
                fprintf(f, "],\"next_cursor\":\"%lld\"}", (long long)next);
        else
                fputs("],\"next_cursor\":null}", f);
        if (ferror(f))
                ok = false;
        if (fclose(f) != 0 || !ok) {
                free(text);
                return NULL;
        }
        return text;
}

static void listed_release(struct listed *l)
{
        for (size_t i = 0; i < l->n; i++)
                jobcache_text_unref(l->t[i]);
}

enum MHD_Result jobs_list(struct request *rq)
{
        struct page pg = {.state_from = job_state_from_string};
        struct store *s;
        struct job **jobs = NULL;
        size_t n = 0;
        int64_t next = 0;
        json_t *errors = NULL;
        int r = page_args(rq, &pg, JOBS_LIMIT_DEFAULT, JOBS_LIMIT_MAX, 1, &errors);

        if (r == -EINVAL)
                return reply_problem(rq, 400, errors, "invalid query parameters");
        if (r < 0 || (r = request_store(rq, &s)) < 0)
                return reply_store_error(rq, r, "job");
        const char *label = request_arg(rq, "label");
        if (label && strlen(label) > JOB_LABEL_MAX * 4) { /* 256 characters are at most 1,024 bytes */
                errors = json_array();
                problem_error_add(errors, "label", "is longer than any label can be (%d characters)",
                                  JOB_LABEL_MAX);
                return reply_problem(rq, 400, errors, "invalid query parameters");
        }
        struct listed *l = calloc(1, sizeof(*l));
        if (!l)
                return reply_problem(rq, 500, NULL, "out of memory");
        l->h = rq->h;
        struct job_filter f = {.states = pg.states,
                               .limit = pg.limit,
                               .before_seq = pg.cursor < 0 ? 0 : pg.cursor,
                               .label = label,
                               .known = rq->h->jobs ? listed_known : NULL,
                               .known_ud = l};
        uint64_t stamp = rq->h->jobs ? jobcache_stamp(rq->h->jobs) : 0;
        r = store_job_list(s, &f, &jobs, &n, &next);
        char *text = r < 0 ? NULL : jobs_text(l, stamp, jobs, n, next);
        listed_release(l);
        free(l);
        if (r < 0)
                return reply_store_error(rq, r, "job");
        jobs_free(jobs, n);
        if (!text)
                return reply_problem(rq, 500, NULL, "out of memory");
        return reply_text(rq, 200, "application/json", text, strlen(text));
}

/* Cached jobs finished before this may have been pruned (wall ms). */
static int64_t prune_horizon(const struct httpd *h)
{
        double retention = h->cfg->job_retention;
        if (retention <= 0)
                return INT64_MIN;
        return clock_wall_ms() - (int64_t)(retention * 1000) + PRUNE_MARGIN_MS;
}

/* Answer the job from the store and keep its text when it is terminal. */
static enum MHD_Result reply_and_cache(struct request *rq, const char *id)
{
        uint64_t stamp = jobcache_stamp(rq->h->jobs);
        struct circuits c = {.h = rq->h};
        struct store *s;
        struct job *j;
        int r = request_store(rq, &s);

        if (r < 0 || (r = store_job_get(s, id, &j)) < 0)
                return reply_store_error(rq, r, "job");
        struct jobcache_text *t = job_text(rq->h, stamp, j, &c);
        circuits_release(&c);
        job_free(j);
        if (!t)
                return reply_problem(rq, 500, NULL, "out of memory");
        return reply_shared(rq, 200, "application/json", t);
}

enum MHD_Result jobs_get(struct request *rq)
{
        const char *id = job_id_arg(rq);
        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        if (!rq->h->jobs)
                return reply_stored_job(rq, 200, id);
        struct jobcache_text *t = jobcache_get(rq->h->jobs, id, prune_horizon(rq->h));
        if (t)
                return reply_shared(rq, 200, "application/json", t);
        return reply_and_cache(rq, id);
}

/* The live bytes of a running item, when the snapshot has them. */
static const struct item_live *item_live_of(const struct snapshot_job *sj, const struct item *it)
{
        for (size_t k = 0; sj && it->state == ITEM_RUNNING && k < sj->nitems; k++)
                if (sj->items[k].index == it->index)
                        return &sj->items[k];
        return NULL;
}

enum MHD_Result jobs_items(struct request *rq)
{
        struct page pg = {.state_from = item_state_from_string};
        const char *id = job_id_arg(rq);
        struct store *s;
        struct item *items = NULL;
        size_t n = 0;
        int next = -1;
        json_t *errors = NULL;
        int r;

        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        r = page_args(rq, &pg, ITEMS_LIMIT_DEFAULT, ITEMS_LIMIT_MAX, 0, &errors);
        if (r == -EINVAL)
                return reply_problem(rq, 400, errors, "invalid query parameters");
        if (r < 0 || (r = request_store(rq, &s)) < 0)
                return reply_store_error(rq, r, "job");
        if (pg.cursor > JOB_MAX_ITEMS) /* an index past any job's end: an empty page */
                pg.cursor = JOB_MAX_ITEMS;
        struct item_filter f = {.states = pg.states, .limit = pg.limit, .after_index = (int)pg.cursor};
        r = store_item_list(s, id, &f, &items, &n, &next); /* -ENOENT: no such job */
        if (r < 0)
                return reply_store_error(rq, r, "job");
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        const struct snapshot_job *sj = snap ? snapshot_job(snap, id) : NULL;
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                if (json_array_append_new(arr, jobjson_item(&items[i], item_live_of(sj, &items[i]))) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        snapshot_unref(snap);
        items_free(items, n);
        if (!arr)
                return reply_json(rq, 200, NULL);
        return reply_json(
                rq, 200, json_pack("{s:o, s:o}", "items", arr, "next_cursor", cursor_json(next, next >= 0)));
}

/* ---- GET /v1/jobs/{id}/sources ------------------------------------------------------------ */

/* Every per_source entry of a job, paged (the job object shows the first
 * JOB_PER_SOURCE_HEAD): ?state= filters, the cursor is the index to go on
 * from. A running job's entries are as last written (at most
 * JOBRUN_PER_SOURCE_EVERY_MS old). */
enum MHD_Result jobs_sources(struct request *rq)
{
        struct page pg = {.state_from = source_state_from_string};
        const char *id = job_id_arg(rq);
        struct store *s;
        struct job_source *v = NULL;
        size_t n = 0, i;
        json_t *errors = NULL, *arr;
        bool all_closed = true;
        int r;

        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        r = page_args(rq, &pg, SOURCES_LIMIT_DEFAULT, SOURCES_LIMIT_MAX, 0, &errors);
        if (r == -EINVAL)
                return reply_problem(rq, 400, errors, "invalid query parameters");
        if (r < 0 || (r = request_store(rq, &s)) < 0)
                return reply_store_error(rq, r, "job");
        r = store_job_per_source(s, id, &v, &n); /* -ENOENT: no such job */
        if (r < 0)
                return reply_store_error(rq, r, "job");
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        arr = json_array();
        for (i = pg.cursor > 0 ? (size_t)pg.cursor : 0;
             arr && i < n && json_array_size(arr) < (size_t)pg.limit; i++)
                if ((!pg.states || (pg.states & (1u << v[i].state))) &&
                    json_array_append_new(arr, jobjson_per_source(&v[i], snap, &all_closed)) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        while (i < n && pg.states && !(pg.states & (1u << v[i].state)))
                i++; /* no cursor to a page with nothing on it */
        snapshot_unref(snap);
        for (size_t k = 0; k < n; k++)
                job_source_clear(&v[k]);
        free(v);
        if (!arr)
                return reply_json(rq, 200, NULL);
        return reply_json(rq, 200,
                          json_pack("{s:o, s:I, s:o}", "per_source", arr, "per_source_total", (json_int_t)n,
                                    "next_cursor", cursor_json((long long)i, i < n)));
}

/* ---- POST /v1/jobs/{id}/cancel, /retry, DELETE /v1/jobs/{id} ------------------------------ */

static enum MHD_Result change(struct request *rq, int (*fn)(struct sched *, const char *))
{
        const char *id = job_id_arg(rq);
        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        int r = fn(rq->h->sched, id);
        if (r < 0)
                return reply_sched_error(rq, r, "job");
        if (rq->h->jobs)
                jobcache_drop(rq->h->jobs, id);
        return reply_stored_job(rq, 200, id);
}

enum MHD_Result jobs_cancel(struct request *rq) { return change(rq, sched_cancel); }

enum MHD_Result jobs_retry(struct request *rq) { return change(rq, sched_retry); }

enum MHD_Result jobs_pause(struct request *rq) { return change(rq, sched_pause); }

enum MHD_Result jobs_resume(struct request *rq) { return change(rq, sched_resume); }

enum MHD_Result jobs_delete(struct request *rq)
{
        const char *id = job_id_arg(rq);
        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        int r = sched_delete(rq->h->sched, id);
        if (r < 0)
                return reply_sched_error(rq, r, "job");
        if (rq->h->jobs)
                jobcache_drop(rq->h->jobs, id);
        return reply_empty(rq, 204);
}

/* jobrun: a running job's items, groups and counters in memory.
 *
 * Invariants:
 * - job->progress and each per_source entry's counters equal what the
 *   items' states add up to: item_set() is the one place an item moves;
 * - an item index is in at most one of: its group's ready queue, the
 *   wait heap, in flight (running), ended;
 * - items [0, nstored) exist in the store; the rest were listed since the
 *   last write and are inserted by the next one;
 * - dirty[] marks items changed since the last write, dirty_list holds
 *   each once; job_dirty is set by any change of the job or its items;
 * - the URL index holds every item's URL but duplicates'; the content
 *   index holds items that succeeded or are with the committer.
 *
 * The three indexes (URLs, contents, group names) are open addressing
 * over item or group indices (+1, 0 empty), kept at most half full. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/str.h"
#include "daemon/jobrun.h"
#include "daemon/store.h"

struct queue {
        int *v;
        size_t head, tail, cap;
};

struct wait {
        int64_t due_ms; /* monotonic */
        int item;
};

struct grp {
        struct group_run run;
        bool on_blocked;    /* on jr->blocked */
        size_t blocked_at;  /* its place there */
        struct queue ready; /* items ready to start, FIFO */
        size_t nwaiting;    /* its items in the wait heap */
        bool marked;        /* on the job's marked list */
        bool capped;        /* on the job's capped list */
};

struct index {
        int *slot; /* entry + 1; 0 empty */
        size_t cap;
};

struct jobrun {
        struct job *job;
        uint64_t run;
        struct item *items;
        struct item_run *iruns;
        int *item_group;
        size_t nitems, cap;
        size_t nstored; /* items [0, nstored) are in the store */
        struct grp *groups;
        size_t ngroups;
        struct index urls, contents, names;
        bool job_dirty;
        bool ps_stale;         /* per_source changed since it was last written */
        bool ps_writing;       /* the write under way includes it */
        int64_t ps_written_ms; /* monotonic, when it was last written; 0 never */
        bool *dirty;
        int *dirty_list;
        size_t ndirty;
        struct wait *waits; /* min-heap on due_ms */
        size_t nwaits, cwaits;
        struct queue marked; /* groups to look at */
        struct queue capped; /* groups that stopped starting items at max */
        struct follow {
                int item, leader;
        } * follows; /* items waiting for an identical file with the committer */
        size_t nfollows, cfollows;
        int64_t group_timer; /* the scheduler's, monotonic */
        int *blocked;        /* groups waiting for their source */
        size_t nblocked, cblocked;
        int64_t deadline_ms; /* monotonic */
        /* events since the last drain */
        struct ev {
                enum jobrun_event ev;
                int item;
                struct jobrun_retry retry;
        } * evs;
        size_t nevs, cevs;
        bool ev_progress;
};

/* ---- small containers ---------------------------------------------------------- */

static int queue_push(struct queue *q, int v)
{
        if (q->tail == q->cap) {
                if (q->head > 0) {
                        memmove(q->v, q->v + q->head, (q->tail - q->head) * sizeof(int));
                        q->tail -= q->head;
                        q->head = 0;
                } else {
                        size_t cap = q->cap ? 2 * q->cap : 8;
                        int *v2 = realloc(q->v, cap * sizeof(int));
                        if (!v2)
                                return -ENOMEM;
                        q->v = v2;
                        q->cap = cap;
                }
        }
        q->v[q->tail++] = v;
        return 0;
}

static int queue_push_front(struct queue *q, int v)
{
        if (q->head > 0) {
                q->v[--q->head] = v;
                return 0;
        }
        int r = queue_push(q, v); /* make room, then rotate it to the front */
        if (r < 0)
                return r;
        memmove(q->v + q->head + 1, q->v + q->head, (q->tail - q->head - 1) * sizeof(int));
        q->v[q->head] = v;
        return 0;
}

static int queue_pop(struct queue *q) { return q->head < q->tail ? q->v[q->head++] : -1; }
static size_t queue_len(const struct queue *q) { return q->tail - q->head; }

static size_t str_hash(const char *p)
{
        size_t h = 1469598103934665603u; /* FNV-1a */
        for (; *p; p++)
                h = (h ^ (unsigned char)*p) * 1099511628211u;
        return h;
}

/* The key of entry v of index ix (its URL, content or group name). */
static const char *index_key(const struct jobrun *jr, const struct index *ix, int v)
{
        if (ix == &jr->names)
                return jr->job->per_source[v].source;
        return ix == &jr->urls ? jr->items[v].url : jr->items[v].sha256;
}

static int index_find(const struct jobrun *jr, const struct index *ix, const char *key)
{
        if (!key || ix->cap == 0)
                return -1;
        for (size_t i = str_hash(key) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
                int v = ix->slot[i];
                if (v == 0)
                        return -1;
                const char *k = index_key(jr, ix, v - 1);
                if (k && strcmp(k, key) == 0)
                        return v - 1;
        }
}

/* Add entry v under its key (the caller checked it is not there). */
static void index_add(const struct jobrun *jr, struct index *ix, int v)
{
        const char *key = index_key(jr, ix, v);
        size_t i = str_hash(key) & (ix->cap - 1);
        while (ix->slot[i] != 0)
                i = (i + 1) & (ix->cap - 1);
        ix->slot[i] = v + 1;
}

static bool is_duplicate(const struct item *it)
{
        return it->error.code && strcmp(it->error.code, "duplicate") == 0;
}

static bool in_content_index(const struct item *it)
{
        return it->sha256 && (it->state == ITEM_SUCCEEDED || it->state == ITEM_RUNNING);
}

/* (Re)build the item indexes for at least n items, under half full. */
static int items_reindex(struct jobrun *jr, size_t n)
{
        size_t cap = 16;
        while (cap < 2 * n)
                cap *= 2;
        if (cap <= jr->urls.cap)
                return 0;
        int *u = calloc(cap, sizeof(int)), *c = calloc(cap, sizeof(int));
        if (!u || !c) {
                free(u);
                free(c);
                return -ENOMEM;
        }
        free(jr->urls.slot);
        free(jr->contents.slot);
        jr->urls = (struct index){u, cap};
        jr->contents = (struct index){c, cap};
        for (size_t i = 0; i < jr->nitems; i++) {
                const struct item *it = &jr->items[i];
                if (it->url && !is_duplicate(it) && index_find(jr, &jr->urls, it->url) < 0)
                        index_add(jr, &jr->urls, (int)i);
                if (in_content_index(it) && index_find(jr, &jr->contents, it->sha256) < 0)
                        index_add(jr, &jr->contents, (int)i);
        }
        return 0;
}

/* ---- the wait heap --------------------------------------------------------------------- */

static void heap_swap(struct wait *a, struct wait *b)
{
        struct wait t = *a;
        *a = *b;
        *b = t;
}

static int heap_push(struct jobrun *jr, int64_t due, int item)
{
        if (jr->nwaits == jr->cwaits) {
                size_t c = jr->cwaits ? 2 * jr->cwaits : 16;
                struct wait *w = realloc(jr->waits, c * sizeof(*w));
                if (!w)
                        return -ENOMEM;
                jr->waits = w;
                jr->cwaits = c;
        }
        size_t i = jr->nwaits++;
        jr->waits[i] = (struct wait){due, item};
        while (i > 0 && jr->waits[(i - 1) / 2].due_ms > jr->waits[i].due_ms) {
                heap_swap(&jr->waits[(i - 1) / 2], &jr->waits[i]);
                i = (i - 1) / 2;
        }
        return 0;
}

static struct wait heap_pop(struct jobrun *jr)
{
        struct wait top = jr->waits[0];
        jr->waits[0] = jr->waits[--jr->nwaits];
        for (size_t i = 0;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;
                if (l < jr->nwaits && jr->waits[l].due_ms < jr->waits[m].due_ms)
                        m = l;
                if (r < jr->nwaits && jr->waits[r].due_ms < jr->waits[m].due_ms)
                        m = r;
                if (m == i)
                        break;
                heap_swap(&jr->waits[i], &jr->waits[m]);
                i = m;
        }
        return top;
}

/* ---- counters, dirt and events ------------------------------------------------------------ */

static void note_retry(struct jobrun *jr, enum jobrun_event ev, int item, const struct jobrun_retry *retry)
{
        if (ev == JOBRUN_EV_PROGRESS) {
                jr->ev_progress = true;
                return;
        }
        if (jr->nevs == jr->cevs) {
                size_t c = jr->cevs ? 2 * jr->cevs : 16;
                struct ev *e = realloc(jr->evs, c * sizeof(*e));
                if (!e)
                        return; /* an event less; the state itself is written */
                jr->evs = e;
                jr->cevs = c;
        }
        jr->evs[jr->nevs++] = (struct ev){ev, item, retry ? *retry : (struct jobrun_retry){0}};
}

static void note(struct jobrun *jr, enum jobrun_event ev, int item) { note_retry(jr, ev, item, NULL); }

/* The job changed: its row is written with the next batch, its per_source
 * (which may have changed with it) at most every JOBRUN_PER_SOURCE_EVERY_MS. */
static void touch(struct jobrun *jr)
{
        jr->job_dirty = true;
        jr->ps_stale = true;
}

static void mark_dirty(struct jobrun *jr, int i)
{
        touch(jr);
        if ((size_t)i < jr->nstored && !jr->dirty[i]) {
                jr->dirty[i] = true;
                jr->dirty_list[jr->ndirty++] = i;
        }
}

static void count(struct jobrun *jr, struct job_source *js, enum item_state st, int d)
{
        struct progress *p = &jr->job->progress;
        switch (st) {
        case ITEM_PENDING:
                p->pending += d;
                break;
        case ITEM_RUNNING:
                p->running += d;
                break;
        case ITEM_SUCCEEDED:
                p->succeeded += d;
                js->succeeded += d;
                break;
        case ITEM_FAILED:
                p->failed += d;
                js->failed += d;
                break;
        case ITEM_SKIPPED:
                p->skipped += d;
                js->skipped += d;
                break;
        default:
                break;
        }
}

static bool ended(enum item_state st)
{
        return st == ITEM_SUCCEEDED || st == ITEM_FAILED || st == ITEM_SKIPPED;
}

/* The one place an item changes state. */
static void item_set(struct jobrun *jr, int i, enum item_state st)
{
        struct item *it = &jr->items[i];
        struct job_source *js = &jr->job->per_source[jr->item_group[i]];

        count(jr, js, it->state, -1);
        it->state = st;
        count(jr, js, st, +1);
        mark_dirty(jr, i);
        note(jr, JOBRUN_EV_PROGRESS, i);
        if (ended(st))
                note(jr, JOBRUN_EV_ITEM, i);
}

/* ---- loading ---------------------------------------------------------------------------- */

void jobrun_free(struct jobrun *jr)
{
        if (!jr)
                return;
        for (size_t g = 0; g < jr->ngroups; g++)
                free(jr->groups[g].ready.v);
        free(jr->groups);
        items_free(jr->items, jr->nitems);
        job_free(jr->job);
        free(jr->iruns);
        free(jr->item_group);
        free(jr->dirty);
        free(jr->dirty_list);
        free(jr->urls.slot);
        free(jr->contents.slot);
        free(jr->names.slot);
        free(jr->waits);
        free(jr->marked.v);
        free(jr->capped.v);
        free(jr->blocked);
        free(jr->follows);
        free(jr->evs);
        free(jr);
}

/* Room for n items in every per-item array. */
static int reserve(struct jobrun *jr, size_t n)
{
        if (n > jr->cap) {
                size_t cap = jr->cap ? 2 * jr->cap : 16;
                while (cap < n)
                        cap *= 2;
                struct item *items = realloc(jr->items, cap * sizeof(*items));
                if (!items)
                        return -ENOMEM;
                jr->items = items;
                struct item_run *iruns = realloc(jr->iruns, cap * sizeof(*iruns));
                if (!iruns)
                        return -ENOMEM;
                jr->iruns = iruns;
                int *ig = realloc(jr->item_group, cap * sizeof(int));
                if (!ig)
                        return -ENOMEM;
                jr->item_group = ig;
                bool *dirty = realloc(jr->dirty, cap * sizeof(bool));
                if (!dirty)
                        return -ENOMEM;
                jr->dirty = dirty;
                memset(dirty + jr->cap, 0, (cap - jr->cap) * sizeof(bool));
                int *dl = realloc(jr->dirty_list, cap * sizeof(int));
                if (!dl)
                        return -ENOMEM;
                jr->dirty_list = dl;
                jr->cap = cap;
        }
        return items_reindex(jr, n);
}

static int names_build(struct jobrun *jr)
{
        size_t cap = 16;
        while (cap < 2 * (jr->job->nper_source + 1))
                cap *= 2;
        int *slot = calloc(cap, sizeof(int));
        if (!slot)
                return -ENOMEM;
        free(jr->names.slot);
        jr->names = (struct index){slot, cap};
        for (size_t g = 0; g < jr->job->nper_source; g++)
                index_add(jr, &jr->names, (int)g);
        return 0;
}

/* The per_source entry of name, added when missing. */
static int group_of_name(struct jobrun *jr, const char *name)
{
        struct job *j = jr->job;
        int g = index_find(jr, &jr->names, name);
        if (g >= 0)
                return g;
        struct job_source *ps = realloc(j->per_source, (j->nper_source + 1) * sizeof(*ps));
        if (!ps)
                return -ENOMEM;
        j->per_source = ps;
        memset(&ps[j->nper_source], 0, sizeof(*ps));
        if (!(ps[j->nper_source].source = strdup(name)))
                return -ENOMEM;
        j->nper_source++;
        return names_build(jr) < 0 ? -ENOMEM : (int)j->nper_source - 1;
}

static bool source_named(const struct job *j, const char *name)
{
        for (size_t i = 0; j->query && i < j->nsources; i++)
                if (strcmp(j->sources[i], name) == 0)
                        return true;
        return false;
}

/* Every item's source has a group; counters are recounted from the items;
 * pending items are queued, running ones (a stop or crash) too. */
static int build_groups(struct jobrun *jr)
{
        struct job *j = jr->job;
        int r = names_build(jr);

        for (size_t i = 0; r >= 0 && i < jr->nitems; i++) {
                int g = group_of_name(jr, jr->items[i].source ? jr->items[i].source : "");
                r = g < 0 ? g : 0;
                jr->item_group[i] = g;
        }
        if (r < 0)
                return r;
        jr->ngroups = j->nper_source;
        jr->groups = calloc(jr->ngroups ? jr->ngroups : 1, sizeof(*jr->groups));
        if (!jr->groups)
                return -ENOMEM;
        memset(&j->progress, 0, sizeof(j->progress));
        for (size_t g = 0; g < jr->ngroups; g++) {
                struct job_source *js = &j->per_source[g];
                js->items = js->succeeded = js->failed = js->skipped = js->bytes = 0;
                jr->groups[g].run =
                        (struct group_run){.query = source_named(j, js->source), .total = -1, .page = 1};
        }
        for (size_t i = 0; i < jr->nitems; i++) {
                struct item *it = &jr->items[i];
                struct job_source *js = &j->per_source[jr->item_group[i]];
                jr->iruns[i] = (struct item_run){.leader = -1};
                if (it->state == ITEM_RUNNING)
                        it->state = ITEM_PENDING;
                js->items++;
                j->progress.total++;
                if (it->state == ITEM_SUCCEEDED) {
                        js->bytes += it->bytes;
                        j->progress.bytes += it->bytes;
                }
                count(jr, js, it->state, +1);
                if (it->state == ITEM_PENDING &&
                    queue_push(&jr->groups[jr->item_group[i]].ready, (int)i) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int jobrun_load(struct store *st, const char *id, uint64_t run, struct jobrun **ret)
{
        struct jobrun *jr = calloc(1, sizeof(*jr));
        struct item *items = NULL;
        size_t n = 0;
        int r;

        if (!jr)
                return -ENOMEM;
        jr->run = run;
        jr->group_timer = INT64_MAX;
        r = store_job_get(st, id, &jr->job);
        if (r < 0)
                goto fail;
        if (jr->job->per_source_total > jr->job->nper_source) { /* only its head was read */
                struct job_source *all = NULL;
                size_t nall = 0;
                r = store_job_per_source(st, id, &all, &nall);
                if (r < 0)
                        goto fail;
                for (size_t g = 0; g < jr->job->nper_source; g++)
                        job_source_clear(&jr->job->per_source[g]);
                free(jr->job->per_source);
                jr->job->per_source = all;
                jr->job->nper_source = jr->job->per_source_total = nall;
        }
        r = store_item_load(st, id, &items, &n);
        if (r < 0)
                goto fail;
        jr->items = items;
        jr->nitems = jr->cap = jr->nstored = n;
        r = -ENOMEM;
        jr->iruns = calloc(n ? n : 1, sizeof(*jr->iruns));
        jr->item_group = calloc(n ? n : 1, sizeof(int));
        jr->dirty = calloc(n ? n : 1, sizeof(bool));
        jr->dirty_list = calloc(n ? n : 1, sizeof(int));
        if (!jr->iruns || !jr->item_group || !jr->dirty || !jr->dirty_list)
                goto fail;
        jr->cap = n; /* the items array's size; the others have at least as much */
        r = items_reindex(jr, n);
        if (r >= 0)
                r = build_groups(jr);
        if (r < 0)
                goto fail;
        *ret = jr;
        return 0;
fail:
        jobrun_free(jr);
        return r;
}

/* ---- accessors ------------------------------------------------------------------------------ */

const struct job *jobrun_job(const struct jobrun *jr) { return jr->job; }
const char *jobrun_id(const struct jobrun *jr) { return jr->job->id; }
uint64_t jobrun_run(const struct jobrun *jr) { return jr->run; }
size_t jobrun_nitems(const struct jobrun *jr) { return jr->nitems; }
const struct item *jobrun_item(const struct jobrun *jr, int i) { return &jr->items[i]; }
struct item_run *jobrun_item_run(struct jobrun *jr, int i) { return &jr->iruns[i]; }
int jobrun_group_of(const struct jobrun *jr, int item) { return jr->item_group[item]; }
size_t jobrun_ngroups(const struct jobrun *jr) { return jr->ngroups; }
const struct job_source *jobrun_source(const struct jobrun *jr, int g) { return &jr->job->per_source[g]; }
struct group_run *jobrun_group(struct jobrun *jr, int g) { return &jr->groups[g].run; }

bool jobrun_group_is_query(const struct jobrun *jr, int g)
{
        return source_named(jr->job, jr->job->per_source[g].source);
}

/* ---- the job ------------------------------------------------------------------------------------ */

void jobrun_begin(struct jobrun *jr, int64_t wall_ms, int64_t now_ms, int64_t deadline_wall_ms)
{
        struct job *j = jr->job;

        j->state = JOB_RUNNING;
        if (!j->started_at)
                j->started_at = wall_ms;
        j->finished_at = 0;
        j->deadline_at = deadline_wall_ms > 0 ? deadline_wall_ms : wall_ms + (int64_t)(j->timeout * 1000);
        jr->deadline_ms = now_ms + (j->deadline_at - wall_ms);
        job_error_clear(&j->error);
        touch(jr);
        note(jr, JOBRUN_EV_JOB, -1);
}

int64_t jobrun_deadline(const struct jobrun *jr) { return jr->deadline_ms; }

void jobrun_set_lease(struct jobrun *jr, int64_t token) { jr->job->lease_token = token; }

void jobrun_set_state(struct jobrun *jr, enum job_state st, const char *code, const char *msg,
                      int64_t wall_ms)
{
        struct job *j = jr->job;

        j->state = st;
        if (code)
                job_error_set(&j->error, code, "%s", msg ? msg : "");
        else
                job_error_clear(&j->error);
        j->finished_at = job_state_is_terminal(st) ? wall_ms : 0;
        if (st == JOB_QUEUED || st == JOB_PAUSED)
                j->deadline_at = 0;
        touch(jr);
        note(jr, JOBRUN_EV_JOB, -1);
}

/* Skips that do not make a job partial: a repeated URL, and items never
 * needed because max was reached. */
static bool benign_skip(const struct item *it)
{
        return it->state == ITEM_SKIPPED && it->error.code &&
               (strcmp(it->error.code, "duplicate") == 0 || strcmp(it->error.code, "max_reached") == 0);
}

enum job_state jobrun_outcome(const struct jobrun *jr, const char **ret_code, const char **ret_msg)
{
        const struct progress *p = &jr->job->progress;
        int64_t benign = 0;

        *ret_code = *ret_msg = NULL;
        if (jobrun_max_reached(jr))
                return JOB_SUCCEEDED;
        for (size_t i = 0; i < jr->nitems; i++)
                benign += benign_skip(&jr->items[i]);
        if (p->succeeded > 0 && p->failed == 0 && p->skipped == benign)
                return JOB_SUCCEEDED;
        if (p->succeeded > 0)
                return JOB_PARTIAL;
        if (p->total == 0) {
                *ret_code = "no_items";
                *ret_msg = "no source produced an item";
        } else {
                *ret_code = "all_failed";
                *ret_msg = "no item succeeded";
        }
        return JOB_FAILED;
}

bool jobrun_max_reached(const struct jobrun *jr) { return jr->job->progress.succeeded >= jr->job->max; }

/* Items in play are the running ones: a group's inplay counts its items
 * in ITEM_RUNNING (transferring, or with the committer). */
int64_t jobrun_committed(const struct jobrun *jr)
{
        return jr->job->progress.succeeded + jr->job->progress.running;
}

void jobrun_group_listing(struct jobrun *jr, int g, int pages, const char *why)
{
        struct job_source *js = &jr->job->per_source[g];
        char *w = str_dup(why);

        if (why && !w)
                return;
        js->pages = pages;
        free(js->listing);
        js->listing = w;
        touch(jr);
}

void jobrun_group_set(struct jobrun *jr, int g, enum source_state st, const char *code, const char *fmt, ...)
{
        struct job_source *js = &jr->job->per_source[g];
        char msg[512];
        va_list ap;

        js->state = st;
        if (code) {
                va_start(ap, fmt);
                vsnprintf(msg, sizeof(msg), fmt, ap);
                va_end(ap);
                job_error_set(&js->error, code, "%s", msg);
        } else
                job_error_clear(&js->error);
        touch(jr);
}

/* ---- items ------------------------------------------------------------------------------------------ */

int jobrun_take_ready(struct jobrun *jr, int g) { return queue_pop(&jr->groups[g].ready); }

void jobrun_untake(struct jobrun *jr, int g, int item)
{
        if (queue_push_front(&jr->groups[g].ready, item) < 0)
                jobrun_item_skipped(jr, item, "io", "out of memory");
}

size_t jobrun_queued(const struct jobrun *jr, int g) { return queue_len(&jr->groups[g].ready); }
size_t jobrun_waiting(const struct jobrun *jr, int g) { return jr->groups[g].nwaiting; }

void jobrun_item_started(struct jobrun *jr, int i)
{
        jr->job->per_source[jr->item_group[i]].attempts++;
        jr->items[i].attempts++;
        jr->iruns[i].round_attempts++;
        item_set(jr, i, ITEM_RUNNING);
}

void jobrun_item_answer(struct jobrun *jr, int i, int http_status, int64_t bytes, int64_t duration_ms,
                        int64_t speed_bps, const char *content_type)
{
        struct item *it = &jr->items[i];

        it->http_status = http_status;
        it->bytes = bytes;
        it->duration_ms = duration_ms;
        it->speed_bps = speed_bps;
        free(it->content_type);
        it->content_type = content_type && *content_type ? strdup(content_type) : NULL;
        mark_dirty(jr, i);
}

void jobrun_item_content(struct jobrun *jr, int i, const char *sha256)
{
        struct item *it = &jr->items[i];

        if (it->sha256 && strcmp(it->sha256, sha256) == 0)
                return;
        free(it->sha256);
        it->sha256 = strdup(sha256);
        if (it->sha256 && index_find(jr, &jr->contents, sha256) < 0)
                index_add(jr, &jr->contents, i);
        mark_dirty(jr, i);
}

void jobrun_item_succeeded(struct jobrun *jr, int i, const char *path, int64_t resumed_from,
                           const char *node)
{
        struct item *it = &jr->items[i];
        struct job_source *js = &jr->job->per_source[jr->item_group[i]];

        free(it->path);
        it->path = str_dup(path);
        free(it->node);
        it->node = str_dup(node);
        it->resumed_from = resumed_from;
        job_error_clear(&it->error);
        js->bytes += it->bytes;
        jr->job->progress.bytes += it->bytes;
        item_set(jr, i, ITEM_SUCCEEDED);
}

/* An item whose content left the content index (its file failed) must not
 * be found there any more: rebuild without it. */
static void content_forget(struct jobrun *jr, int i)
{
        if (!jr->items[i].sha256)
                return;
        free(jr->items[i].sha256);
        jr->items[i].sha256 = NULL;
        memset(jr->contents.slot, 0, jr->contents.cap * sizeof(int));
        for (size_t k = 0; k < jr->nitems; k++)
                if (in_content_index(&jr->items[k]) &&
                    index_find(jr, &jr->contents, jr->items[k].sha256) < 0)
                        index_add(jr, &jr->contents, (int)k);
}

void jobrun_item_retry(struct jobrun *jr, int i, int64_t due_ms, int64_t delay_ms, const char *code,
                       const char *msg)
{
        struct jobrun_retry rt = {.attempt = jr->items[i].attempts, .delay_ms = delay_ms, .code = code};
        int g = jr->item_group[i];

        job_error_set(&jr->items[i].error, code, "%s", msg);
        if (heap_push(jr, due_ms, i) < 0) {
                jobrun_item_failed(jr, i, code, msg);
                return;
        }
        jr->groups[g].nwaiting++;
        jr->job->per_source[g].retries++;
        item_set(jr, i, ITEM_PENDING);
        note_retry(jr, JOBRUN_EV_RETRY, i, &rt);
}

void jobrun_item_defer(struct jobrun *jr, int i, int64_t due_ms)
{
        if (heap_push(jr, due_ms, i) < 0) {
                jobrun_untake(jr, jr->item_group[i], i);
                return;
        }
        jr->groups[jr->item_group[i]].nwaiting++;
}

void jobrun_item_failed(struct jobrun *jr, int i, const char *code, const char *msg)
{
        if (jr->items[i].state == ITEM_RUNNING && jr->items[i].sha256 && !jr->items[i].path)
                content_forget(jr, i);
        job_error_set(&jr->items[i].error, code, "%s", msg);
        item_set(jr, i, ITEM_FAILED);
}

void jobrun_item_skipped(struct jobrun *jr, int i, const char *code, const char *msg)
{
        struct item *it = &jr->items[i];

        if (it->state == ITEM_RUNNING && it->sha256 && !it->path)
                content_forget(jr, i);
        if (it->error.code && it->attempts > 0 && !is_duplicate(it))
                job_error_set(&it->error, it->error.code, "%s; not tried again: %s",
                              it->error.message ? it->error.message : "", msg);
        else
                job_error_set(&it->error, code, "%s", msg);
        item_set(jr, i, ITEM_SKIPPED);
}

void jobrun_item_requeue(struct jobrun *jr, int i)
{
        int g = jr->item_group[i];

        if (jr->items[i].state == ITEM_RUNNING && jr->items[i].sha256 && !jr->items[i].path)
                content_forget(jr, i);
        if (queue_push_front(&jr->groups[g].ready, i) < 0) {
                jobrun_item_skipped(jr, i, "io", "out of memory");
                return;
        }
        item_set(jr, i, ITEM_PENDING);
}

void jobrun_reset_failed(struct jobrun *jr)
{
        for (size_t i = 0; i < jr->nitems; i++) {
                struct item *it = &jr->items[i];
                if ((it->state != ITEM_FAILED && it->state != ITEM_SKIPPED) || is_duplicate(it))
                        continue;
                if (queue_push(&jr->groups[jr->item_group[i]].ready, (int)i) < 0)
                        continue;
                job_error_clear(&it->error);
                it->attempts = 0;
                jr->iruns[i] = (struct item_run){.leader = -1};
                item_set(jr, (int)i, ITEM_PENDING);
        }
        for (size_t g = 0; g < jr->ngroups; g++) {
                jr->job->per_source[g].state = SRC_PENDING;
                job_error_clear(&jr->job->per_source[g].error);
        }
        touch(jr);
}

int64_t jobrun_due(struct jobrun *jr, int64_t now_ms, void (*ready)(struct jobrun *jr, int g, void *ud),
                   void *ud)
{
        while (jr->nwaits > 0 && jr->waits[0].due_ms <= now_ms) {
                struct wait w = heap_pop(jr);
                int g = jr->item_group[w.item];
                jr->groups[g].nwaiting--;
                if (jr->items[w.item].state != ITEM_PENDING) /* skipped meanwhile */
                        continue;
                if (queue_push(&jr->groups[g].ready, w.item) < 0) {
                        jobrun_item_skipped(jr, w.item, "io", "out of memory");
                        continue;
                }
                if (ready)
                        ready(jr, g, ud);
        }
        return jr->nwaits > 0 ? jr->waits[0].due_ms : INT64_MAX;
}

/* Restore the heap order of jr->waits after entries were removed. */
static void heap_rebuild(struct jobrun *jr)
{
        struct wait *w = jr->waits;
        size_t n = jr->nwaits;

        jr->nwaits = 0;
        for (size_t k = 0; k < n; k++)
                heap_push(jr, w[k].due_ms, w[k].item); /* in place: never grows past n */
}

void jobrun_skip_rest(struct jobrun *jr, int g, const char *code, const char *msg)
{
        struct grp *gr = &jr->groups[g];
        size_t kept = 0;
        int i;

        while ((i = queue_pop(&gr->ready)) >= 0)
                if (jr->items[i].state == ITEM_PENDING)
                        jobrun_item_skipped(jr, i, code, msg);
        if (gr->nwaiting == 0)
                return;
        for (size_t k = 0; k < jr->nwaits; k++) {
                struct wait w = jr->waits[k];
                if (jr->item_group[w.item] != g) {
                        jr->waits[kept++] = w;
                        continue;
                }
                if (jr->items[w.item].state == ITEM_PENDING)
                        jobrun_item_skipped(jr, w.item, code, msg);
        }
        jr->nwaits = kept;
        gr->nwaiting = 0;
        heap_rebuild(jr);
}

void jobrun_skip_all(struct jobrun *jr, const char *code, const char *msg)
{
        for (size_t g = 0; g < jr->ngroups; g++) {
                jobrun_skip_rest(jr, (int)g, code, msg);
                if (jr->job->per_source[g].state == SRC_PENDING)
                        jobrun_group_set(jr, (int)g, SRC_SKIPPED, NULL, NULL);
        }
        for (size_t i = 0; i < jr->nitems; i++)
                if (jr->items[i].state == ITEM_PENDING || jr->items[i].state == ITEM_RUNNING)
                        jobrun_item_skipped(jr, (int)i, code, msg);
}

int jobrun_find_content(const struct jobrun *jr, const char *sha256)
{
        int i = index_find(jr, &jr->contents, sha256);
        return i >= 0 && in_content_index(&jr->items[i]) ? i : -1;
}

int jobrun_add_item(struct jobrun *jr, int g, const char *url)
{
        if (index_find(jr, &jr->urls, url) >= 0)
                return -EEXIST;
        if (jr->nitems >= JOB_MAX_ITEMS)
                return -E2BIG;
        if (reserve(jr, jr->nitems + 1) < 0)
                return -ENOMEM;
        int i = (int)jr->nitems;
        struct item *it = &jr->items[i];
        memset(it, 0, sizeof(*it));
        it->index = i;
        it->state = ITEM_PENDING;
        it->source = strdup(jr->job->per_source[g].source);
        it->url = strdup(url);
        if (!it->source || !it->url || queue_push(&jr->groups[g].ready, i) < 0) {
                item_clear(it);
                return -ENOMEM;
        }
        jr->iruns[i] = (struct item_run){.leader = -1};
        jr->item_group[i] = g;
        jr->dirty[i] = false;
        jr->nitems++;
        index_add(jr, &jr->urls, i);
        jr->job->per_source[g].items++;
        jr->job->progress.total++;
        count(jr, &jr->job->per_source[g], ITEM_PENDING, +1);
        touch(jr);
        note(jr, JOBRUN_EV_PROGRESS, i);
        return i;
}

int jobrun_follow(struct jobrun *jr, int i, int leader)
{
        if (jr->nfollows == jr->cfollows) {
                size_t c = jr->cfollows ? 2 * jr->cfollows : 8;
                struct follow *f = realloc(jr->follows, c * sizeof(*f));
                if (!f)
                        return -ENOMEM;
                jr->follows = f;
                jr->cfollows = c;
        }
        jr->follows[jr->nfollows++] = (struct follow){i, leader};
        jr->iruns[i].leader = leader;
        return 0;
}

int jobrun_take_follower(struct jobrun *jr, int leader)
{
        for (size_t k = 0; k < jr->nfollows; k++)
                if (jr->follows[k].leader == leader) {
                        int i = jr->follows[k].item;
                        jr->follows[k] = jr->follows[--jr->nfollows];
                        jr->iruns[i].leader = -1;
                        return i;
                }
        return -1;
}

int64_t jobrun_group_timer(const struct jobrun *jr) { return jr->group_timer; }
void jobrun_set_group_timer(struct jobrun *jr, int64_t at_ms) { jr->group_timer = at_ms; }

/* ---- marked groups ----------------------------------------------------------------------------------- */

void jobrun_mark(struct jobrun *jr, int g)
{
        if (jr->groups[g].marked)
                return;
        if (queue_push(&jr->marked, g) == 0)
                jr->groups[g].marked = true;
}

void jobrun_set_capped(struct jobrun *jr, int g)
{
        if (jr->groups[g].capped)
                return;
        if (queue_push(&jr->capped, g) == 0)
                jr->groups[g].capped = true;
}

void jobrun_mark_capped(struct jobrun *jr)
{
        int g;

        while ((g = queue_pop(&jr->capped)) >= 0) {
                jr->groups[g].capped = false;
                jobrun_mark(jr, g);
        }
        jr->capped.head = jr->capped.tail = 0;
}

int jobrun_take_marked(struct jobrun *jr)
{
        int g = queue_pop(&jr->marked);
        if (g >= 0)
                jr->groups[g].marked = false;
        return g;
}

void jobrun_set_blocked(struct jobrun *jr, int g, bool blocked)
{
        struct grp *gr = &jr->groups[g];

        if (!blocked) {
                gr->run.blocked_gen = 0;
                gr->run.blocked_until = 0;
                if (!gr->on_blocked)
                        return;
                size_t at = gr->blocked_at;
                jr->blocked[at] = jr->blocked[--jr->nblocked];
                jr->groups[jr->blocked[at]].blocked_at = at;
                gr->on_blocked = false;
                return;
        }
        if (gr->on_blocked)
                return;
        if (jr->nblocked == jr->cblocked) {
                size_t c = jr->cblocked ? 2 * jr->cblocked : 8;
                int *v = realloc(jr->blocked, c * sizeof(int));
                if (!v)
                        return; /* not on the list: it is looked at again when next marked */
                jr->blocked = v;
                jr->cblocked = c;
        }
        gr->blocked_at = jr->nblocked;
        gr->on_blocked = true;
        jr->blocked[jr->nblocked++] = g;
}

size_t jobrun_blocked(const struct jobrun *jr, const int **ret)
{
        *ret = jr->blocked;
        return jr->nblocked;
}

/* ---- writing and events --------------------------------------------------------------------------------
 */

/* per_source goes with a write when it changed and the job is not running
 * (its end, a pause, ...), or it was last written long enough ago. */
static bool per_source_due(const struct jobrun *jr, int64_t now)
{
        return jr->ps_stale && (jr->job->state != JOB_RUNNING || jr->ps_written_ms == 0 ||
                                now - jr->ps_written_ms >= JOBRUN_PER_SOURCE_EVERY_MS);
}

bool jobrun_dirty(const struct jobrun *jr, int64_t now)
{
        return jr->job_dirty || jr->nstored < jr->nitems || per_source_due(jr, now);
}

int64_t jobrun_per_source_due(const struct jobrun *jr)
{
        return jr->ps_stale ? jr->ps_written_ms + JOBRUN_PER_SOURCE_EVERY_MS : INT64_MAX;
}

int jobrun_write(struct jobrun *jr, struct store *st, int64_t now)
{
        jr->ps_writing = per_source_due(jr, now);
        int r = jr->ps_writing ? store_job_update(st, jr->job) : store_job_update_progress(st, jr->job);

        if (r >= 0 && jr->nstored < jr->nitems)
                r = store_item_append(st, jr->job->id, &jr->items[jr->nstored], jr->nitems - jr->nstored);
        for (size_t k = 0; r >= 0 && k < jr->ndirty; k++)
                r = store_item_update(st, jr->job->id, &jr->items[jr->dirty_list[k]]);
        return r;
}

void jobrun_written(struct jobrun *jr, int64_t now)
{
        if (jr->ps_writing) {
                jr->ps_stale = false;
                jr->ps_written_ms = now;
                jr->ps_writing = false;
        }
        for (size_t k = 0; k < jr->ndirty; k++)
                jr->dirty[jr->dirty_list[k]] = false;
        jr->ndirty = 0;
        jr->nstored = jr->nitems;
        jr->job_dirty = false;
}

void jobrun_drain_events(struct jobrun *jr,
                         void (*fn)(struct jobrun *jr, enum jobrun_event ev, int item,
                                    const struct jobrun_retry *retry, void *ud),
                         void *ud)
{
        size_t n = jr->nevs;

        jr->nevs = 0;
        for (size_t k = 0; k < n; k++) {
                struct ev e = jr->evs[k];
                fn(jr, e.ev, e.item, e.ev == JOBRUN_EV_RETRY ? &e.retry : NULL, ud);
        }
        if (jr->ev_progress) {
                jr->ev_progress = false;
                fn(jr, JOBRUN_EV_PROGRESS, -1, NULL, ud);
        }
}

bool jobrun_item_written(const struct jobrun *jr, int i)
{
        return i >= 0 && (size_t)i < jr->nstored && !jr->dirty[i];
}

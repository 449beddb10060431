/* jobcache: rendered terminal jobs for GET /v1/jobs/{id}.
 *
 * A terminal job's object changes only when a retry makes it queued again
 * (the scheduler publishes EVENT_JOB), when it is deleted (the API's handler
 * drops it) or pruned (older than JOB_RETENTION: jobcache_get's limit), and
 * through the circuit state shown per source (EVENT_CIRCUIT drops all; only
 * all-closed texts are kept, since open turns half-open with time alone).
 *
 * Invariants, under lock: a text in a slot holds one reference; stamp
 * grows on every drop, and a put whose caller read the store before the
 * latest drop is refused, so no text read before a change is kept after
 * it. The bus watcher runs on the publisher's thread and consumes events
 * in id order from seen_id (under watch_lock); a gap drops everything.
 *
 * Layout: JOBCACHE_ENTRIES slots in sets of JOBCACHE_WAYS chosen by a hash
 * of the id; a full set replaces its least recently read slot. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "api/jobcache.h"
#include "daemon/events.h"

#define JOBCACHE_WAYS  4  /* slots per set */
#define JOBCACHE_BATCH 64 /* bus events read at once */
#define JOBCACHE_SETS  (JOBCACHE_ENTRIES / JOBCACHE_WAYS)

struct slot {
        char id[JOB_ID_LEN + 1];
        int64_t finished_at;     /* wall ms */
        uint64_t used;           /* tick of the last read or put */
        struct jobcache_text *t; /* NULL: free */
};

struct jobcache {
        pthread_mutex_t lock;
        uint64_t stamp; /* drops so far */
        uint64_t tick;  /* reads and puts so far */
        struct slot slots[JOBCACHE_ENTRIES];
        struct event_bus *events;
        int watch;                  /* events_watch handle, 0: none */
        pthread_mutex_t watch_lock; /* guards seen_id */
        uint64_t seen_id;           /* the newest bus event applied */
};

void jobcache_text_unref(struct jobcache_text *t)
{
        if (t && atomic_fetch_sub(&t->refs, 1) == 1)
                free(t);
}

static struct slot *set_of(struct jobcache *c, const char *id)
{
        uint32_t h = 2166136261u; /* FNV-1a */
        for (const char *p = id; *p; p++)
                h = (h ^ (unsigned char)*p) * 16777619u;
        return &c->slots[(h % JOBCACHE_SETS) * JOBCACHE_WAYS];
}

static void slot_clear(struct slot *s)
{
        jobcache_text_unref(s->t);
        s->t = NULL;
        s->id[0] = '\0';
}

static struct slot *find(struct jobcache *c, const char *id)
{
        struct slot *set = set_of(c, id);
        for (size_t i = 0; i < JOBCACHE_WAYS; i++)
                if (set[i].t && strcmp(set[i].id, id) == 0)
                        return &set[i];
        return NULL;
}

/* A new reference to id's text when its finish time is at least
 * not_before_ms and, unless exact is 0, exactly exact. */
static struct jobcache_text *lookup(struct jobcache *c, const char *id, int64_t not_before_ms, int64_t exact)
{
        struct jobcache_text *t = NULL;

        pthread_mutex_lock(&c->lock);
        struct slot *s = find(c, id);
        if (s && s->finished_at >= not_before_ms && (exact == 0 || s->finished_at == exact)) {
                s->used = ++c->tick;
                t = s->t;
                atomic_fetch_add(&t->refs, 1);
        }
        pthread_mutex_unlock(&c->lock);
        return t;
}

struct jobcache_text *jobcache_get(struct jobcache *c, const char *id, int64_t not_before_ms)
{
        return lookup(c, id, not_before_ms, 0);
}

struct jobcache_text *jobcache_get_finished(struct jobcache *c, const char *id, int64_t finished_at_ms)
{
        return finished_at_ms ? lookup(c, id, INT64_MIN, finished_at_ms) : NULL;
}

uint64_t jobcache_stamp(struct jobcache *c)
{
        pthread_mutex_lock(&c->lock);
        uint64_t v = c->stamp;
        pthread_mutex_unlock(&c->lock);
        return v;
}

struct jobcache_text *jobcache_text_new(const char *s, size_t len)
{
        struct jobcache_text *t = malloc(sizeof(*t) + len + 1);
        if (!t)
                return NULL;
        atomic_init(&t->refs, 1);
        t->len = len;
        memcpy(t->text, s, len);
        t->text[len] = '\0';
        return t;
}

void jobcache_put(struct jobcache *c, uint64_t stamp, const char *id, int64_t finished_at_ms,
                  struct jobcache_text *t)
{
        struct jobcache_text *old = NULL;

        if (strlen(id) > JOB_ID_LEN)
                return;
        atomic_fetch_add(&t->refs, 1);
        pthread_mutex_lock(&c->lock);
        if (stamp != c->stamp) {
                old = t; /* something changed since the caller read the store */
                goto out;
        }
        struct slot *s = find(c, id);
        if (!s) {
                struct slot *set = set_of(c, id);
                s = &set[0];
                for (size_t i = 0; i < JOBCACHE_WAYS && s->t; i++)
                        if (!set[i].t || set[i].used < s->used)
                                s = &set[i];
        }
        old = s->t;
        strcpy(s->id, id);
        s->finished_at = finished_at_ms;
        s->used = ++c->tick;
        s->t = t;
out:
        pthread_mutex_unlock(&c->lock);
        jobcache_text_unref(old);
}

void jobcache_drop(struct jobcache *c, const char *id)
{
        pthread_mutex_lock(&c->lock);
        c->stamp++;
        struct slot *s = find(c, id);
        if (s)
                slot_clear(s);
        pthread_mutex_unlock(&c->lock);
}

static void drop_all(struct jobcache *c)
{
        pthread_mutex_lock(&c->lock);
        c->stamp++;
        for (size_t i = 0; i < JOBCACHE_ENTRIES; i++)
                if (c->slots[i].t)
                        slot_clear(&c->slots[i]);
        pthread_mutex_unlock(&c->lock);
}

/* The bus watcher: apply every event since seen_id. */
static void on_publish(void *ud)
{
        struct jobcache *c = ud;
        struct event ev[JOBCACHE_BATCH];
        size_t n;

        pthread_mutex_lock(&c->watch_lock);
        do {
                if (events_read(c->events, c->seen_id, NULL, ev, JOBCACHE_BATCH, &n) < 0) {
                        drop_all(c);
                        break;
                }
                for (size_t i = 0; i < n; i++) {
                        if (ev[i].id != c->seen_id + 1 || ev[i].type == EVENT_CIRCUIT)
                                drop_all(c); /* events lost, or every text's circuits may be stale */
                        else if (ev[i].type == EVENT_JOB)
                                jobcache_drop(c, ev[i].job_id);
                        c->seen_id = ev[i].id;
                }
                events_release(ev, n);
        } while (n == JOBCACHE_BATCH);
        pthread_mutex_unlock(&c->watch_lock);
}

int jobcache_new(struct event_bus *events, struct jobcache **ret)
{
        struct jobcache *c;
        int r;

        if (!events)
                return -EINVAL; /* without events nothing would drop a retried job */
        if (!(c = calloc(1, sizeof(*c))))
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        pthread_mutex_init(&c->watch_lock, NULL);
        c->events = events;
        c->seen_id = events_last_id(events);
        if ((r = events_watch(events, on_publish, c, &c->watch)) < 0) {
                jobcache_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void jobcache_free(struct jobcache *c)
{
        if (!c)
                return;
        if (c->watch)
                events_unwatch(c->events, c->watch);
        for (size_t i = 0; i < JOBCACHE_ENTRIES; i++)
                jobcache_text_unref(c->slots[i].t);
        pthread_mutex_destroy(&c->watch_lock);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

/* events: the bus between the scheduler and the API's live streams. It owns
 * a ring of the last EVENTS_RING events and a list of watchers.
 *
 * Invariants: ids are 1, 2, 3, ... with no gaps; the ring holds ids
 * (next_id - count) .. (next_id - 1), the event with id i in slot
 * i % EVENTS_RING. Watchers are called after the lock is released, from a
 * snapshot of the list, so a watcher may read the bus; events_unwatch()
 * waits until no watcher call is in flight, so that after it returns the
 * watcher's userdata may be freed. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/events.h"

#define EVENTS_WATCHERS_MAX 64 /* events_watch() callers: the API holds one */

struct watcher {
        int handle; /* 0: free slot */
        void (*fn)(void *ud);
        void *ud;
};

struct event_bus {
        pthread_mutex_t lock;
        pthread_cond_t idle; /* signalled when calling drops to 0 */
        struct event ring[EVENTS_RING];
        uint64_t next_id; /* the id the next event gets */
        size_t count;     /* events in the ring, <= EVENTS_RING */
        struct watcher watchers[EVENTS_WATCHERS_MAX];
        int last_handle;
        int calling; /* publishers calling watchers now */
};

struct event_data *event_data_new(enum event_type type)
{
        struct event_data *d = calloc(1, sizeof(*d));
        if (d) {
                atomic_init(&d->refs, 1);
                d->type = type;
        }
        return d;
}

static struct event_data *data_ref(struct event_data *d)
{
        if (d)
                atomic_fetch_add(&d->refs, 1);
        return d;
}

void event_data_unref(struct event_data *d)
{
        if (!d || atomic_fetch_sub(&d->refs, 1) != 1)
                return;
        switch (d->type) {
        case EVENT_JOB:
                job_free(d->job);
                break;
        case EVENT_ITEM:
                item_clear(&d->item);
                break;
        case EVENT_PROGRESS:
                break;
        case EVENT_CIRCUIT:
                src_info_clear(&d->circuit);
                break;
        }
        free(d);
}

void events_release(struct event *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                event_data_unref(v[i].data);
                v[i].data = NULL;
        }
}

int events_new(struct event_bus **ret)
{
        struct event_bus *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        pthread_mutex_init(&b->lock, NULL);
        pthread_cond_init(&b->idle, NULL);
        b->next_id = 1;
        *ret = b;
        return 0;
}

void events_free(struct event_bus *b)
{
        if (!b)
                return;
        for (size_t i = 0; i < EVENTS_RING; i++)
                event_data_unref(b->ring[i].data);
        pthread_cond_destroy(&b->idle);
        pthread_mutex_destroy(&b->lock);
        free(b);
}

/* Copy the watcher list (under the lock). */
static size_t watchers_snapshot(struct event_bus *b, struct watcher *out)
{
        size_t n = 0;
        for (size_t i = 0; i < EVENTS_WATCHERS_MAX; i++)
                if (b->watchers[i].handle)
                        out[n++] = b->watchers[i];
        return n;
}

void events_publish(struct event_bus *b, struct event *e)
{
        struct watcher w[EVENTS_WATCHERS_MAX];
        size_t nw;

        pthread_mutex_lock(&b->lock);
        e->id = b->next_id++;
        struct event_data *old = b->ring[e->id % EVENTS_RING].data;
        b->ring[e->id % EVENTS_RING] = *e;
        e->data = NULL; /* the ring's now */
        if (b->count < EVENTS_RING)
                b->count++;
        nw = watchers_snapshot(b, w);
        b->calling++;
        pthread_mutex_unlock(&b->lock);
        event_data_unref(old);

        for (size_t i = 0; i < nw; i++)
                w[i].fn(w[i].ud);

        pthread_mutex_lock(&b->lock);
        if (--b->calling == 0)
                pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->lock);
}

static bool event_matches(const struct event *e, const char *job_id)
{
        return !job_id || strcmp(e->job_id, job_id) == 0;
}

int events_read(struct event_bus *b, uint64_t after_id, const char *job_id, struct event *ret, size_t max,
                size_t *ret_n)
{
        size_t n = 0;

        pthread_mutex_lock(&b->lock);
        uint64_t oldest = b->next_id - b->count;
        /* after_id past the newest (a client's Last-Event-ID from another
         * run, or UINT64_MAX, whose + 1 would wrap to 0): nothing yet */
        uint64_t id = after_id >= b->next_id ? b->next_id : after_id < oldest ? oldest : after_id + 1;
        for (; id < b->next_id && n < max; id++) {
                const struct event *e = &b->ring[id % EVENTS_RING];
                if (event_matches(e, job_id)) {
                        ret[n] = *e;
                        data_ref(ret[n++].data);
                }
        }
        pthread_mutex_unlock(&b->lock);
        *ret_n = n;
        return 0;
}

uint64_t events_last_id(struct event_bus *b)
{
        pthread_mutex_lock(&b->lock);
        uint64_t id = b->next_id - 1;
        pthread_mutex_unlock(&b->lock);
        return id;
}

int events_watch(struct event_bus *b, void (*fn)(void *ud), void *ud, int *ret_handle)
{
        int r = -ENOSPC;

        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < EVENTS_WATCHERS_MAX; i++)
                if (!b->watchers[i].handle) {
                        b->watchers[i] = (struct watcher){.handle = ++b->last_handle, .fn = fn, .ud = ud};
                        *ret_handle = b->watchers[i].handle;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&b->lock);
        return r;
}

void events_unwatch(struct event_bus *b, int handle)
{
        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < EVENTS_WATCHERS_MAX; i++)
                if (b->watchers[i].handle == handle && handle)
                        b->watchers[i] = (struct watcher){0};
        while (b->calling > 0)
                pthread_cond_wait(&b->idle, &b->lock);
        pthread_mutex_unlock(&b->lock);
}

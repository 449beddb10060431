/* snapshot: immutable views of the scheduler for the API, and the hub that
 * hands the newest one out. A snapshot is freed by the last unref; the hub
 * holds one reference to the newest. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/snapshot.h"

const double snapshot_duration_bounds[SNAPSHOT_DURATION_BUCKETS - 1] = {0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                                                        5,    10,  30,   60,  300};

struct snapshot_hub {
        pthread_mutex_t lock; /* guards cur: held for a pointer copy and a reference */
        struct snapshot *cur;
};

struct snapshot *snapshot_new(void)
{
        struct snapshot *s = calloc(1, sizeof(*s));
        if (s)
                atomic_init(&s->refs, 1);
        return s;
}

struct snapshot_circuits *snapshot_circuits_new(void)
{
        struct snapshot_circuits *c = calloc(1, sizeof(*c));
        if (c)
                atomic_init(&c->refs, 1);
        return c;
}

struct snapshot_circuits *snapshot_circuits_ref(struct snapshot_circuits *c)
{
        if (c)
                atomic_fetch_add(&c->refs, 1);
        return c;
}

void snapshot_circuits_unref(struct snapshot_circuits *c)
{
        if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
                return;
        src_infos_free(c->v, c->n);
        free(c);
}

struct snapshot *snapshot_ref(struct snapshot *s)
{
        if (s)
                atomic_fetch_add(&s->refs, 1);
        return s;
}

void snapshot_unref(struct snapshot *s)
{
        if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
                return;
        if (s->shared)
                snapshot_circuits_unref(s->shared);
        else
                src_infos_free(s->circuits, s->ncircuits);
        for (size_t i = 0; i < s->njobs; i++)
                free(s->jobs[i].items);
        free(s->jobs);
        for (size_t i = 0; i < s->nsources; i++) {
                free(s->sources[i].name);
                free(s->sources[i].unavailable_reason);
        }
        free(s->sources);
        free(s->node);
        cluster_nodes_free(s->nodes, s->nnodes);
        free(s);
}

const struct src_info *snapshot_circuit(const struct snapshot *s, const char *name)
{
        size_t lo = 0, hi = s->ncircuits;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(s->circuits[mid].name, name);
                if (c == 0)
                        return &s->circuits[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

const struct snapshot_job *snapshot_job(const struct snapshot *s, const char *id)
{
        size_t lo = 0, hi = s->njobs;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(s->jobs[mid].id, id);
                if (c == 0)
                        return &s->jobs[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

const struct snapshot_source *snapshot_source(const struct snapshot *s, const char *name)
{
        for (size_t i = 0; i < s->nsources; i++) /* a few hundred at most */
                if (strcmp(s->sources[i].name, name) == 0)
                        return &s->sources[i];
        return NULL;
}

int snapshot_hub_new(struct snapshot_hub **ret)
{
        struct snapshot_hub *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        pthread_mutex_init(&h->lock, NULL);
        *ret = h;
        return 0;
}

void snapshot_hub_free(struct snapshot_hub *h)
{
        if (!h)
                return;
        snapshot_unref(h->cur);
        pthread_mutex_destroy(&h->lock);
        free(h);
}

void snapshot_hub_put(struct snapshot_hub *h, struct snapshot *s)
{
        pthread_mutex_lock(&h->lock);
        struct snapshot *old = h->cur;
        h->cur = s;
        pthread_mutex_unlock(&h->lock);
        snapshot_unref(old);
}

struct snapshot *snapshot_hub_get(struct snapshot_hub *h)
{
        pthread_mutex_lock(&h->lock);
        struct snapshot *s = snapshot_ref(h->cur);
        pthread_mutex_unlock(&h->lock);
        return s;
}

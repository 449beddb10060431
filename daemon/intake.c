/* intake: group commit of new jobs.
 *
 * Owns the queue of submissions, the writer thread and its store
 * connection (synchronous commits: a job answered 201 survives a power
 * loss). Invariants: every submitted request is answered exactly once;
 * an answer 0 comes only after the commit holding the job returned; a
 * failed batch fails every request of it (none was written). */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "daemon/intake.h"
#include "daemon/store.h"

#define BATCH_MAX 512 /* submissions written in one transaction */

struct intake {
        struct store *store;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t work;
        struct intake_req *queue, *tail;
        bool stopping;
        void (*wake)(void *ud);
        void *wake_ud;
};

/* One submission inside the batch's transaction. */
static int write_one(struct intake *in, struct intake_req *r)
{
        struct job *j = r->job;
        int e;

        if (j->idempotency_key) {
                e = store_job_find_idempotent(in->store, j->idempotency_key, &r->existing);
                if (e == 0)
                        return -EEXIST;
                if (e != -ENOENT)
                        return e;
        }
        e = store_job_insert(in->store, j, r->items, r->nitems);
        if (e == -EEXIST && j->idempotency_key &&
            store_job_find_idempotent(in->store, j->idempotency_key, &r->existing) == 0)
                return -EEXIST;
        return e;
}

/* Write batch in one transaction; every request's result set. Returns
 * whether a job was inserted. */
static bool write_batch(struct intake *in, struct intake_req *batch)
{
        bool inserted = false;
        int r = store_begin(in->store);

        for (struct intake_req *q = batch; q; q = q->next) {
                q->result = r < 0 ? r : write_one(in, q);
                inserted |= q->result == 0;
        }
        if (r >= 0)
                r = store_commit(in->store);
        if (r >= 0)
                return inserted;
        store_rollback(in->store);
        for (struct intake_req *q = batch; q; q = q->next) {
                q->result = r;
                job_free(q->existing);
                q->existing = NULL;
        }
        return false;
}

static void answer(struct intake_req *batch)
{
        while (batch) {
                struct intake_req *next = batch->next;
                batch->next = NULL;
                batch->done(batch, batch->ud); /* may free batch */
                batch = next;
        }
}

static void *writer(void *arg)
{
        struct intake *in = arg;

        pthread_mutex_lock(&in->lock);
        for (;;) {
                while (!in->queue && !in->stopping)
                        pthread_cond_wait(&in->work, &in->lock);
                if (!in->queue)
                        break;
                struct intake_req *batch = in->queue, *last = batch;
                for (size_t n = 1; last->next && n < BATCH_MAX; n++)
                        last = last->next;
                in->queue = last->next;
                if (!in->queue)
                        in->tail = NULL;
                last->next = NULL;
                pthread_mutex_unlock(&in->lock);
                bool inserted = write_batch(in, batch);
                if (inserted && in->wake)
                        in->wake(in->wake_ud);
                answer(batch);
                pthread_mutex_lock(&in->lock);
        }
        pthread_mutex_unlock(&in->lock);
        return NULL;
}

int intake_new(const char *store_url, void (*wake)(void *ud), void *wake_ud, struct intake **ret)
{
        struct intake *in = calloc(1, sizeof(*in));
        int r;

        if (!in)
                return -ENOMEM;
        in->wake = wake;
        in->wake_ud = wake_ud;
        pthread_mutex_init(&in->lock, NULL);
        pthread_cond_init(&in->work, NULL);
        r = store_open_existing(store_url, &in->store); /* the scheduler made it; never a new one */
        if (r < 0)
                goto fail;
        r = -pthread_create(&in->thread, NULL, writer, in);
        if (r < 0)
                goto fail;
        *ret = in;
        return 0;
fail:
        store_close(in->store);
        pthread_mutex_destroy(&in->lock);
        pthread_cond_destroy(&in->work);
        free(in);
        return r;
}

void intake_submit(struct intake *in, struct intake_req *r)
{
        r->next = NULL;
        r->result = 0;
        r->existing = NULL;
        pthread_mutex_lock(&in->lock);
        if (in->stopping) {
                pthread_mutex_unlock(&in->lock);
                r->result = -ESHUTDOWN;
                r->done(r, r->ud);
                return;
        }
        if (in->tail)
                in->tail->next = r;
        else
                in->queue = r;
        in->tail = r;
        pthread_cond_signal(&in->work);
        pthread_mutex_unlock(&in->lock);
}

void intake_stop(struct intake *in)
{
        pthread_mutex_lock(&in->lock);
        in->stopping = true;
        pthread_cond_signal(&in->work);
        pthread_mutex_unlock(&in->lock);
}

void intake_free(struct intake *in)
{
        if (!in)
                return;
        intake_stop(in);
        pthread_join(in->thread, NULL);
        store_close(in->store);
        pthread_mutex_destroy(&in->lock);
        pthread_cond_destroy(&in->work);
        free(in);
}

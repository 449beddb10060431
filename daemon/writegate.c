/* writegate: a FIFO lock per file, handed from holder to waiter.
 *
 * A pthread mutex lets the thread that unlocks take it again before the
 * woken one runs; here the leaving holder gives the gate to the head of
 * the queue itself, so a waiter is served after at most the holders
 * queued before it. Each waiter waits on its own condition variable, on
 * its stack. The gates live in a short list under one lock: a process has
 * one job table, so one or two. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "daemon/writegate.h"

struct waiter {
        pthread_cond_t cv;
        bool granted;
        struct waiter *next;
};

struct writegate {
        dev_t dev;
        ino_t ino;
        int refs;             /* under gates_lock */
        pthread_mutex_t lock; /* held, queue, tail */
        bool held;
        struct waiter *queue, *tail;
        struct writegate *next; /* in gates, under gates_lock */
};

static pthread_mutex_t gates_lock = PTHREAD_MUTEX_INITIALIZER;
static struct writegate *gates;

int writegate_get(dev_t dev, ino_t ino, struct writegate **ret)
{
        struct writegate *g;

        pthread_mutex_lock(&gates_lock);
        for (g = gates; g && !(g->dev == dev && g->ino == ino); g = g->next)
                ;
        if (!g && (g = calloc(1, sizeof(*g)))) {
                g->dev = dev;
                g->ino = ino;
                pthread_mutex_init(&g->lock, NULL);
                g->next = gates;
                gates = g;
        }
        if (g)
                g->refs++;
        pthread_mutex_unlock(&gates_lock);
        if (!g)
                return -ENOMEM;
        *ret = g;
        return 0;
}

void writegate_put(struct writegate *g)
{
        if (!g)
                return;
        pthread_mutex_lock(&gates_lock);
        if (--g->refs == 0) {
                struct writegate **p = &gates;
                while (*p != g)
                        p = &(*p)->next;
                *p = g->next;
                pthread_mutex_destroy(&g->lock);
                free(g);
        }
        pthread_mutex_unlock(&gates_lock);
}

static void unqueue(struct writegate *g, struct waiter *w)
{
        struct waiter **p = &g->queue, *prev = NULL;

        while (*p != w) {
                prev = *p;
                p = &(*p)->next;
        }
        *p = w->next;
        if (g->tail == w)
                g->tail = prev;
}

int writegate_enter(struct writegate *g, int64_t timeout_ms)
{
        struct waiter w = {.granted = false};
        pthread_condattr_t ca;
        struct timespec until;
        int r = 0;

        pthread_mutex_lock(&g->lock);
        if (!g->held) { /* free means nobody waits either: leave() hands it on */
                g->held = true;
                pthread_mutex_unlock(&g->lock);
                return 0;
        }
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w.cv, &ca);
        pthread_condattr_destroy(&ca);
        /* w lives on this stack until it leaves the queue, below or in leave() */
        if (g->tail)
                g->tail->next = &w;
        else
                g->queue = &w; // cppcheck-suppress autoVariables
        g->tail = &w;          // cppcheck-suppress autoVariables
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        while (!w.granted && r != ETIMEDOUT)
                r = pthread_cond_timedwait(&w.cv, &g->lock, &until);
        if (!w.granted) /* timed out in the queue: leave it, holding nothing */
                unqueue(g, &w);
        pthread_mutex_unlock(&g->lock);
        pthread_cond_destroy(&w.cv);
        return w.granted ? 0 : -EBUSY;
}

void writegate_leave(struct writegate *g)
{
        pthread_mutex_lock(&g->lock);
        struct waiter *w = g->queue;
        if (w) { /* held passes straight to w: nobody can take it in between */
                g->queue = w->next;
                if (!g->queue)
                        g->tail = NULL;
                w->granted = true;
                pthread_cond_signal(&w->cv);
        } else {
                g->held = false;
        }
        pthread_mutex_unlock(&g->lock);
}

int writegate_waiting(struct writegate *g)
{
        int n = 0;

        pthread_mutex_lock(&g->lock);
        for (const struct waiter *w = g->queue; w; w = w->next)
                n++;
        pthread_mutex_unlock(&g->lock);
        return n;
}

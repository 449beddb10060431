/* The event bus: what happened, for the API's live event streams (SSE).
 * The scheduler publishes each event after the change is committed to the
 * store, with the object as it was then (a job, an item, the live
 * progress, a circuit) in shared, immutable data, so a stream sends it
 * without reading the store. A ring of the most recent events lets a
 * client resume with Last-Event-ID.
 * Thread-safe: one publisher thread, any number of reader threads.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/job.h"
#include "daemon/srctab.h"

#define EVENTS_RING 8192 /* events kept for resuming */

enum event_type { EVENT_JOB, EVENT_ITEM, EVENT_PROGRESS, EVENT_CIRCUIT };

/* An item's failed attempt that will be tried again. */
struct event_retry {
        int attempt;      /* the attempt that failed, from 1 */
        int64_t delay_ms; /* until the next */
        char reason[32];  /* its error code */
};

/* The object an event carries, shared by every reader (reference counted,
 * immutable once published): one of its kind's fields, the ring holding
 * thousands of them. */
struct event_data {
        atomic_uint refs;
        enum event_type type;
        union {
                struct job *job; /* EVENT_JOB */
                struct {         /* EVENT_ITEM */
                        struct item item;
                        bool retry_set; /* a retry, with retry */
                        struct event_retry retry;
                };
                struct job_live live;    /* EVENT_PROGRESS */
                struct src_info circuit; /* EVENT_CIRCUIT */
        };
};

struct event {
        uint64_t id; /* 1, 2, 3, ... per daemon run */
        enum event_type type;
        char job_id[JOB_ID_LEN + 1]; /* "" for circuit events */
        int item;                    /* EVENT_ITEM: the item's index; else -1 */
        bool terminal;               /* EVENT_JOB: the job reached a terminal state */
        struct event_data *data;     /* NULL: none (then a reader has only the references) */
};

/* New data with one reference; NULL: out of memory. */
struct event_data *event_data_new(enum event_type type);
void event_data_unref(struct event_data *d);

struct event_bus;

int events_new(struct event_bus **ret);
void events_free(struct event_bus *b);
/* Assigns e->id and wakes the readers and watchers; the bus takes the
 * caller's reference to e->data. */
void events_publish(struct event_bus *b, struct event *e);
/* Copy into ret up to max events with id > after_id (for job_id only, when
 * not NULL); *ret_n how many. Returns immediately. When events after
 * after_id have left the ring, starts from the oldest kept. Each copy
 * holds a reference to its data: give them back with events_release(). */
int events_read(struct event_bus *b, uint64_t after_id, const char *job_id, struct event *ret, size_t max,
                size_t *ret_n);
void events_release(struct event *v, size_t n);
/* The id of the newest event (0: none yet). */
uint64_t events_last_id(struct event_bus *b);
/* Watchers are called (on the publisher's thread, without the bus lock
 * held) after each publish: the API uses this to resume suspended streams.
 * Returns a handle for events_unwatch(). */
int events_watch(struct event_bus *b, void (*fn)(void *ud), void *ud, int *ret_handle);
void events_unwatch(struct event_bus *b, int handle);

/* The event bus: what happened, for the API's live event streams (SSE).
 * The scheduler publishes small references (which job, which item, which
 * source) after the change is committed to the store; a stream reads the
 * current object from the store (or the circuit list) when it sends one.
 * A ring of the most recent events lets a client resume with Last-Event-ID.
 * Thread-safe: one publisher thread, any number of reader threads.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/job.h"

#define EVENTS_RING 8192 /* events kept for resuming */

enum event_type { EVENT_JOB, EVENT_ITEM, EVENT_PROGRESS, EVENT_CIRCUIT };

struct event {
        uint64_t id; /* 1, 2, 3, ... per daemon run */
        enum event_type type;
        char job_id[JOB_ID_LEN + 1];      /* "" for circuit events */
        int item;                         /* EVENT_ITEM: the item's index; else -1 */
        bool terminal;                    /* EVENT_JOB: the job reached a terminal state */
        char source[SOURCE_NAME_MAX + 1]; /* EVENT_CIRCUIT: the source */
};

struct event_bus;

int events_new(struct event_bus **ret);
void events_free(struct event_bus *b);
/* Assigns e->id and wakes the readers and watchers. */
void events_publish(struct event_bus *b, struct event *e);
/* Copy into ret up to max events with id > after_id (for job_id only, when
 * not NULL); *ret_n how many. Returns immediately. When events after
 * after_id have left the ring, starts from the oldest kept. */
int events_read(struct event_bus *b, uint64_t after_id, const char *job_id, struct event *ret, size_t max,
                size_t *ret_n);
/* The id of the newest event (0: none yet). */
uint64_t events_last_id(struct event_bus *b);
/* Watchers are called (on the publisher's thread, without the bus lock
 * held) after each publish: the API uses this to resume suspended streams.
 * Returns a handle for events_unwatch(). */
int events_watch(struct event_bus *b, void (*fn)(void *ud), void *ud, int *ret_handle);
void events_unwatch(struct event_bus *b, int handle);

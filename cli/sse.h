/* sse: a text/event-stream parser (the WHATWG EventSource rules): bytes in,
 * in pieces of any size, events out through a callback. int returns: 0 or
 * -errno; -E2BIG when a line or an event's data passes its limit, or the
 * callback's own negative return. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define SSE_LINE_MAX (1024 * 1024)     /* bytes of one line */
#define SSE_DATA_MAX (4 * 1024 * 1024) /* bytes of one event's data */
#define SSE_NAME_MAX 64                /* bytes of an event name kept */
#define SSE_ID_MAX   64                /* bytes of an event id kept */

struct sse_event {
        const char *name; /* "message" when the event named none */
        const char *id;   /* the last event id seen so far ("" if none) */
        const char *data; /* NUL-terminated, lines joined by "\n" */
        size_t data_len;
};

typedef int (*sse_event_fn)(const struct sse_event *ev, void *userdata);

struct sse_parser {
        sse_event_fn on_event;
        void *userdata;
        char *line; /* the line being read */
        size_t line_len, line_cap;
        char *data; /* the event's data so far, each line followed by "\n" */
        size_t data_len, data_cap;
        bool has_data; /* a data field came since the last dispatch */
        bool after_cr; /* the last byte was a CR: a LF right after it ends nothing */
        char name[SSE_NAME_MAX + 1];
        char id[SSE_ID_MAX + 1];
};

void sse_init(struct sse_parser *p, sse_event_fn on_event, void *userdata);
int sse_feed(struct sse_parser *p, const char *buf, size_t len);
void sse_clear(struct sse_parser *p);

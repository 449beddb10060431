/* A fake transfer engine for the scheduler's unit tests, behind struct
 * engine_ops: it starts nothing, records every request it is asked to
 * start, and lets the test end each one with any struct xfer_result,
 * through the callback the real engine would call (xfers_on_done). It
 * writes a download's part file where the real engine would, so the
 * committer finds a real file. No network, no clock, no thread. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/engine.h"

#define FAKE_MAX_XFERS 512 /* requests one test may start */

enum fake_state { FAKE_RUNNING, FAKE_DONE, FAKE_ABORTED };

/* One request the engine was asked to start. */
struct fake_xfer {
        int id; /* start order, from 0 */
        char *url;
        char *subdir; /* NULL: the request's dir_fd itself */
        int dir_fd;   /* the request's, not owned */
        int part_id;
        bool to_memory;
        int64_t request_timeout_ms, stall_ms;
        size_t nheaders;
        void *userdata; /* what the callback gets back */
        enum fake_state state;
        bool kept_part;                /* aborted with its part kept for a resume */
        struct xfer_progress progress; /* what progress() reports; the test sets it */
        int running_at_start;          /* transfers in flight once it started, itself included */
        int host_running_at_start;     /* of them, to its URL's host[:port] */
};

struct fake_engine {
        struct fake_xfer *x[FAKE_MAX_XFERS]; /* every request started, in order */
        size_t n;
        int running;
        int start_error; /* < 0: start() fails with it (nothing recorded) */
        engine_done_fn done;
        void *ctx;
};

extern const struct engine_ops fake_engine_ops;

void fake_engine_init(struct fake_engine *fe);
void fake_engine_clear(struct fake_engine *fe);
/* The callback transfers end through (struct sched_hooks.engine_bind). */
void fake_engine_bind(void *engine, engine_done_fn done, void *ctx);

/* The k-th request in flight, oldest first; NULL past the last. */
struct fake_xfer *fake_running(struct fake_engine *fe, int k);
/* The newest request of url (any state); NULL when never started. */
struct fake_xfer *fake_find(struct fake_engine *fe, const char *url);
/* The newest request whose URL contains part (any state), or NULL. */
struct fake_xfer *fake_find_part(struct fake_engine *fe, const char *part);
/* How many requests of url were started. */
int fake_starts(const struct fake_engine *fe, const char *url);
/* The largest running_at_start and host_running_at_start seen. */
int fake_peak(const struct fake_engine *fe);
int fake_peak_host(const struct fake_engine *fe);

/* End x with res (x must be in flight). */
void fake_finish(struct fake_engine *fe, struct fake_xfer *x, const struct xfer_result *res);
/* A download answered 200 with body: its part file written where the
 * real engine writes it (made like the engine's, under dir_fd/subdir as
 * ".<part_id>.part"), the result carrying its SHA-256, size, name (the
 * URL's last path segment), content type, and the open part and folder. */
void fake_ok(struct fake_engine *fe, struct fake_xfer *x, const char *body);
/* The SHA-256 in hex of body, as fake_ok() reports it. */
void fake_sha256(const char *body, char hex[65]);
/* An HTTP answer that is not 2xx, classified as the engine does. */
void fake_http(struct fake_engine *fe, struct fake_xfer *x, int status);
/* A failure without an answer (RC_TIMEOUT, RC_CONNECT, ...). */
void fake_fail(struct fake_engine *fe, struct fake_xfer *x, enum retry_class rc, const char *message);
/* A listing page answered 200 with body. */
void fake_page(struct fake_engine *fe, struct fake_xfer *x, const char *body);

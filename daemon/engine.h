/* The transfer engine: libcurl's multi interface driving many downloads on
 * the scheduler's thread. It knows transfers, not jobs: the scheduler asks
 * it to fetch a URL into a directory and hears back once per transfer.
 *
 * Each body is checked while it streams: the first bytes must sniff as an
 * accepted type, its size stays under max_file_size, it is written to a
 * ".N.part" file beside its final place with its SHA-256 computed on the
 * way; the scheduler hands a finished part to the committer (commit.h),
 * which flushes and renames it into place.
 *
 * A part file left by an attempt cut short (a retryable fault, a stop, a
 * crash) is resumed by the next attempt with Range and If-Range when the
 * origin gave a strong ETag or a Last-Modified (kept in the part's
 * user.hauld.validator attribute); an answer that is not the expected 206 starts it over, so
 * an error body or another version is never appended.
 *
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "daemon/retry.h"

struct engine;
struct xfer;

struct engine_opts {
        int64_t request_timeout_ms; /* connect, first byte, between bytes */
        int64_t min_speed;          /* bytes/s over stall_ms; 0: no stall check */
        int64_t stall_ms;
        int64_t max_file_size;      /* bytes */
        const char *accept_content; /* ACCEPT_CONTENT list */
        bool allow_private;         /* allow loopback/private peers */
        int max_connects;           /* connection cache size */
        const char *user_agent;     /* User-Agent of every request (USER_AGENT); NULL: "hauld/VERSION".
                                     * A "User-Agent" in a request's headers replaces it */
        const char *proxy;          /* every request through this proxy URL (PROXY), whose peer is then the
                                     * only address opened and is not checked; NULL or "": none, whatever
                                     * http_proxy, HTTPS_PROXY or ALL_PROXY in the environment say */
};

struct xfer_request {
        const char *url;
        int dir_fd;                 /* DOWNLOAD_DIR; not owned */
        const char *subdir;         /* the folder under dir_fd the file lands in ("JOB/SOURCE"), made when
                                       the first body byte is written; NULL: dir_fd itself */
        int part_id;                /* names the part file ".<part_id>.part" */
        int64_t request_timeout_ms; /* this request's REQUEST_TIMEOUT; 0: the engine's */
        int64_t stall_ms;           /* this request's STALL_TIMEOUT; 0: the engine's */
        const char *name_hint;      /* requested file name, or NULL */
        bool to_memory;             /* a listing page: body kept in memory, not sniffed */
        char *const *headers;       /* extra request headers "Name: value", or NULL */
        size_t nheaders;
        void *userdata;
};

struct xfer_result {
        enum retry_class rc;
        int http_status;        /* 0: no answer */
        int64_t retry_after_ms; /* -1: none */
        int64_t bytes;
        int64_t duration_ms;
        int64_t speed_bps;
        char content_type[128]; /* sniffed MIME type, "" unknown */
        char sha256[65];        /* of the body, when rc == RC_OK */
        char name[256];         /* proposed final name, when rc == RC_OK */
        char part[64];          /* part file in its folder, when rc == RC_OK */
        int part_fd;            /* its open fd, when rc == RC_OK: the receiver owns it */
        int dir_fd;             /* its folder, when rc == RC_OK: the receiver owns it */
        int64_t resumed_from;   /* bytes of an earlier attempt's part that this one continued */
        char message[256];      /* human-readable reason when rc != RC_OK */
        const char *body;       /* to_memory: the body (NUL-terminated), valid in the callback */
        size_t body_len;
};

/* A transfer's bytes so far. */
struct xfer_progress {
        int64_t bytes;     /* body bytes in its part (a resumed part's included) */
        int64_t expected;  /* the whole body's size when the answer says it; -1 unknown */
        int64_t speed_bps; /* over the last few seconds */
};

/* Called from engine_perform() once per finished transfer; the xfer is
 * freed after it returns. */
typedef void (*engine_done_fn)(void *userdata, const struct xfer_result *res, void *ctx);

/* libcurl's process-wide setup and teardown: init once before any thread
 * starts (and before any other curl call, urlcheck's and naming's URL
 * parsing included), cleanup once after every engine is freed. -EIO when
 * libcurl cannot start. */
int engine_global_init(void);
void engine_global_cleanup(void);

int engine_new(const struct engine_opts *opts, engine_done_fn done, void *ctx, struct engine **ret);
void engine_free(struct engine *e);
void engine_configure(struct engine *e, const struct engine_opts *opts);
int engine_start(struct engine *e, const struct xfer_request *req, struct xfer **ret);
/* Stop a transfer at once: no callback, its part file removed. */
void engine_abort(struct engine *e, struct xfer *x);
/* The same, keeping the part file so that a later attempt resumes it with
 * Range and If-Range (used when the daemon stops). */
void engine_abort_keep(struct engine *e, struct xfer *x);
/* Remove every part file left in dir_fd's subdir (transfers over), then
 * the subdir and its parent when they are empty. */
void engine_clean_parts(int dir_fd, const char *subdir);
/* Wait for network activity, a wakeup or timeout_ms; no callbacks run. */
int engine_poll(struct engine *e, int timeout_ms);
/* The same, also waking when fd (>= 0) is readable: *ret_ready then. */
int engine_poll_fd(struct engine *e, int fd, int timeout_ms, bool *ret_ready);
/* Make progress and report finished transfers through the done callback. */
int engine_perform(struct engine *e);
/* Interrupt engine_poll() from another thread. */
void engine_wakeup(struct engine *e);
int engine_running(const struct engine *e);
void engine_progress(const struct engine *e, const struct xfer *x, struct xfer_progress *ret);

/* The engine as the scheduler's transfers use it (tests put a fake one in
 * its place). */
struct engine_ops {
        int (*start)(void *engine, const struct xfer_request *req, struct xfer **ret);
        void (*abort)(void *engine, struct xfer *x, bool keep_part);
        int (*running)(const void *engine);
        void (*progress)(const void *engine, const struct xfer *x, struct xfer_progress *ret);
};
extern const struct engine_ops engine_ops;

/* Is addr (a struct sockaddr) loopback, private, link-local, CGNAT,
 * multicast or reserved? */
bool engine_address_blocked(const void *sockaddr, unsigned addrlen);

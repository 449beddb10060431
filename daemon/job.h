/* The job model shared by the store, the scheduler and the API.
 * Times are wall-clock milliseconds since the epoch; 0 means null.
 * Strings are heap-owned by the struct; job_free()/item_clear() free them. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOB_ID_LEN      26 /* ULID-like: 48-bit ms time + 80 random bits, Crockford base32 */
#define JOB_MAX_ITEMS   10000
#define JOB_MAX_SOURCES 16
#define JOB_MAX_MAX     10000
#define JOB_DEFAULT_MAX 50
#define JOB_QUERY_MAX   256
#define JOB_LABEL_MAX   256
#define JOB_URL_MAX     8192
#define SOURCE_NAME_MAX 255

enum job_state {
        JOB_QUEUED,
        JOB_RUNNING,
        JOB_SUCCEEDED,
        JOB_PARTIAL,
        JOB_FAILED,
        JOB_CANCELLED,
        JOB_TIMED_OUT,
        JOB_PAUSED, /* held back by a user; not terminal, never claimed */
        _JOB_STATE_MAX
};
enum item_state { ITEM_PENDING, ITEM_RUNNING, ITEM_SUCCEEDED, ITEM_FAILED, ITEM_SKIPPED, _ITEM_STATE_MAX };
enum source_state {
        SRC_PENDING,
        SRC_LISTING,
        SRC_DOWNLOADING,
        SRC_DONE,
        SRC_FAILED,
        SRC_TIMED_OUT,
        SRC_SKIPPED,
        _SRC_STATE_MAX
};

struct job_error {
        char *code; /* NULL: no error */
        char *message;
};

struct progress {
        int64_t total, pending, running, succeeded, failed, skipped;
        int64_t bytes;
};

/* What a running job shows between two writes: its counters plus the
 * bytes of transfers in flight. */
struct job_live {
        struct progress progress; /* counters; bytes includes items in flight */
        int64_t bytes_expected;   /* of all items, when every size is known; -1 unknown */
        int64_t speed_bps;        /* bytes per second over the last seconds */
        double eta_s;             /* seconds to go at that speed; -1 unknown */
};

/* One item in flight. */
struct item_live {
        int index;
        int64_t bytes;          /* so far */
        int64_t bytes_expected; /* -1 unknown */
        int64_t speed_bps;
};

/* The entries of per_source a job object shows and the job table keeps in
 * its row's first part (the rest is read only by whoever asks for it). */
#define JOB_PER_SOURCE_HEAD 100

/* One (job, source) entry of per_source. */
struct job_source {
        char *source;
        enum source_state state;
        int64_t items, succeeded, failed, skipped, attempts, retries, bytes;
        struct job_error error;
        int pages;     /* a query source: listing pages answered */
        char *listing; /* a query source: why its listing stopped ("exhausted", "page_limit",
                          "result_limit", "single_page", "error", ...); NULL: not stopped */
};

struct item {
        int index;
        char *source;
        char *url;
        char *filename; /* requested name, or NULL */
        enum item_state state;
        int attempts;
        int http_status; /* 0: none yet */
        int64_t bytes;
        char *content_type;
        char *path;   /* relative to DOWNLOAD_DIR */
        char *sha256; /* 64 hex chars */
        int64_t duration_ms;
        int64_t speed_bps;
        struct job_error error;
        char *node;           /* id of the node whose DOWNLOAD_DIR holds the file; NULL: none */
        int64_t resumed_from; /* bytes the successful attempt resumed from with Range; 0: from the start */
};

/* Per-job overrides of settings; a field not set leaves the setting. */
struct job_limits {
        double source_timeout;  /* s; 0: not set */
        double request_timeout; /* s; 0: not set */
        double stall_timeout;   /* s; 0: not set */
        int max_retries;        /* -1: not set */
};
#define JOB_LIMITS_UNSET ((struct job_limits){0, 0, 0, -1})

struct job {
        char id[JOB_ID_LEN + 1];
        int64_t seq; /* store order; cursor material; 0 before insert */
        enum job_state state;
        bool stub;      /* from a store listing: only id, seq, state and finished_at (job_filter.known) */
        char *query;    /* NULL for URL-only jobs */
        char **sources; /* query sources */
        size_t nsources;
        int max;
        double timeout; /* s */
        int priority;
        char *label;
        int64_t created_at, started_at, finished_at, deadline_at;
        struct progress progress;
        /* One entry per query source and per URL host. Read for the API
         * (store_job_get(), store_job_list()) it holds the first
         * JOB_PER_SOURCE_HEAD entries at most: store_job_per_source() reads
         * them all. */
        struct job_source *per_source;
        size_t nper_source;
        size_t per_source_total; /* the entries the job has; 0: nper_source */
        struct job_error error;
        char *idempotency_key; /* NULL: none */
        char *request_hash;    /* hex SHA-256 of the request body, with idempotency_key */
        struct job_limits limits;
        /* The lease of the node running the job (store_job_claim()). The
         * token stays when the lease ends: it fences the last holder. */
        char *lease_owner;   /* node id; NULL: no lease */
        int64_t lease_token; /* fencing token; 0: never leased */
        int64_t lease_until; /* wall ms the lease runs out; 0: no lease */
};

const char *job_state_to_string(enum job_state s);
int job_state_from_string(const char *s); /* -EINVAL when unknown */
const char *item_state_to_string(enum item_state s);
int item_state_from_string(const char *s);
const char *source_state_to_string(enum source_state s);
int source_state_from_string(const char *s);
bool job_state_is_terminal(enum job_state s);

/* New random id into id (JOB_ID_LEN + 1 bytes), time-ordered. */
void job_id_new(char *id, int64_t wall_ms);
bool job_id_valid(const char *id);

void job_error_set(struct job_error *e, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void job_error_clear(struct job_error *e);

void item_clear(struct item *it);
void items_free(struct item *items, size_t n);
void job_source_clear(struct job_source *s);
void job_free(struct job *j);
void jobs_free(struct job **jobs, size_t n);
/* Deep copies (for events that carry the object as it was). */
int job_dup(const struct job *j, struct job **ret);
int item_copy(struct item *dst, const struct item *src);

/* The contract between store.c and a store backend (OpenSMTPD
 * queue_backend style). store.c picks a backend by URL prefix, checks the
 * arguments callers pass (filters, NULLs) and then calls through the
 * table; a backend sees only its own connection state (`be`).
 *
 * Every operation has store.h's contract: 0 or -errno, ret_* written only
 * on success. A backend does not log. */
#pragma once
#include <stdbool.h>

#include "daemon/store.h"

struct store_backend {
        const char *name;   /* "sqlite" */
        const char *prefix; /* URL prefix that selects it: "sqlite:" */

        /* location is the URL with the prefix removed. */
        int (*open)(const char *location, void **ret_be);
        void (*close)(void *be);

        int (*begin)(void *be);
        int (*commit)(void *be);
        int (*rollback)(void *be);

        int (*job_insert)(void *be, struct job *job, const struct item *items, size_t nitems);
        int (*job_get)(void *be, const char *id, struct job **ret);
        int (*job_find_idempotent)(void *be, const char *key, struct job **ret);
        int (*job_list)(void *be, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                        int64_t *ret_next_seq);
        int (*job_update)(void *be, const struct job *job);
        int (*job_delete)(void *be, const char *id);
        int (*job_next_queued)(void *be, size_t limit, char (**ret_ids)[JOB_ID_LEN + 1], size_t *ret_n);
        int (*job_count_by_state)(void *be, int64_t counts[]);
        int (*job_prune)(void *be, int64_t finished_before_ms, int64_t *ret_n);

        int (*item_list)(void *be, const char *job_id, const struct item_filter *f, struct item **ret,
                         size_t *ret_n, int *ret_next_index);
        int (*item_load)(void *be, const char *job_id, struct item **ret, size_t *ret_n);
        int (*item_update)(void *be, const char *job_id, const struct item *it);
        int (*item_append)(void *be, const char *job_id, const struct item *items, size_t n);

        int (*recover)(void *be, int64_t *ret_jobs);
        int (*set_sync)(void *be, bool each_commit);
};

struct store {
        const struct store_backend *backend;
        void *be;  /* the backend's connection state */
        char *url; /* as given to store_open(), for store_describe() */
};

extern const struct store_backend store_backend_sqlite;

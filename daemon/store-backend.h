/* The contract between store.c and a store backend (OpenSMTPD
 * queue_backend style). store.c picks a backend by URL prefix, checks the
 * arguments callers pass (filters, NULLs, node ids, lease lengths) and
 * then calls through the table; a backend sees only its own connection
 * state (`be`).
 *
 * Every operation has store.h's contract: 0 or -errno, ret_* written only
 * on success. A backend does not log. */
#pragma once
#include <stdbool.h>

#include "daemon/store.h"

struct store_backend {
        const char *name;    /* "sqlite" */
        const char *prefix;  /* URL prefix that selects it: "sqlite:" */
        const char *prefix2; /* another spelling of it, or NULL */

        /* location is the URL with the prefix removed. existing: the
         * table must be there at the schema of this build (see
         * store_open_existing()). */
        int (*open)(const char *location, bool existing, void **ret_be);
        void (*close)(void *be);
        int (*check)(void *be);

        int (*begin)(void *be);
        int (*commit)(void *be);
        int (*rollback)(void *be);
        /* true between begin and commit/rollback */
        bool (*in_batch)(void *be);

        int (*job_insert)(void *be, struct job *job, const struct item *items, size_t nitems);
        int (*job_get)(void *be, const char *id, struct job **ret);
        int (*job_find_idempotent)(void *be, const char *key, struct job **ret);
        int (*job_list)(void *be, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                        int64_t *ret_next_seq);
        int (*job_update)(void *be, const struct job *job, bool per_source); /* false: per_source kept */
        int (*job_per_source)(void *be, const char *id, struct job_source **ret, size_t *ret_n);
        int (*job_delete)(void *be, const char *id);
        int (*job_next_queued)(void *be, size_t limit, char (**ret_ids)[JOB_ID_LEN + 1], size_t *ret_n);
        int (*job_count_by_state)(void *be, int64_t counts[]);
        int (*job_prune)(void *be, int64_t finished_before_ms, int64_t *ret_n);

        int (*item_list)(void *be, const char *job_id, const struct item_filter *f, struct item **ret,
                         size_t *ret_n, int *ret_next_index);
        int (*item_load)(void *be, const char *job_id, struct item **ret, size_t *ret_n);
        int (*item_update)(void *be, const char *job_id, const struct item *it);
        int (*item_append)(void *be, const char *job_id, const struct item *items, size_t n);

        int (*recover)(void *be, const char *node, int64_t now_ms, int64_t *ret_jobs);
        int (*set_sync)(void *be, bool each_commit);

        /* limit >= 1; never called inside a batch */
        int (*job_claim)(void *be, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                         struct store_claim **ret, size_t *ret_n);
        /* n >= 1; never called inside a batch */
        int (*lease_renew)(void *be, const char *node, const struct store_claim *c, size_t n, int64_t now_ms,
                           int64_t lease_ms, bool *ret_lost);
        int (*lease_take)(void *be, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                          int64_t *ret_token);

        int (*node_beat)(void *be, const struct store_node *n);
        int (*node_list)(void *be, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n);
        int (*node_remove)(void *be, const char *id);

        int (*circuit_put)(void *be, const struct store_circuit *c);
        int (*circuit_list)(void *be, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n);
        int (*circuit_take_probe)(void *be, const char *source, const char *node, int64_t now_ms,
                                  int64_t probe_ms);
        int (*circuit_delete)(void *be, const char *source);

        /* NULL: no notifications (store.c answers -EOPNOTSUPP / none) */
        int (*notify_fd)(void *be);
        int (*notify_drain)(void *be, bool *ret_any);
};

struct store {
        const struct store_backend *backend;
        void *be;   /* the backend's connection state */
        char *desc; /* the URL given to store_open(), password shown as *** */
};

extern const struct store_backend store_backend_sqlite;
#ifdef HAVE_LIBPQ
extern const struct store_backend store_backend_pg;
#endif

/* The names of circuit states in the table: "closed", "open", "half_open". */
const char *store_circuit_state_name(enum breaker_state s);
int store_circuit_state_parse(const char *s); /* -EINVAL when unknown */

/* v grown to hold more than *cap elements of size bytes (*cap updated);
 * NULL when out of memory, v then unchanged. */
void *store_array_grow(void *v, size_t *cap, size_t size);

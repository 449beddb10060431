/* What the parts of the PostgreSQL backend share: store_pg.c (the
 * connection, the schema, jobs and items), store_pg_cluster.c (leases,
 * nodes, circuits, notifications) and store_pg_wire.c (parameters,
 * results, errors). Each half owns its statements' SQL; the connection
 * prepares both halves' statements on first use. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "daemon/store-backend.h"

#define PG_CHANNEL "hauld_jobs" /* LISTEN/NOTIFY channel of job changes */

/* store_pg.c's statements */
enum pg_query {
        P_JOB_INSERT,
        P_JOB_GET,
        P_JOB_BY_KEY,
        P_JOB_SEQ,
        P_JOB_PER_SOURCE,
        P_JOB_LIST,
        P_JOB_LIST_STATES,
        P_JOB_LIST_LABEL,
        P_JOB_UPDATE,
        P_JOB_DELETE,
        P_JOB_QUEUED,
        P_JOB_COUNT,
        P_JOB_PRUNE,
        P_ITEM_LIST,
        P_ITEM_UPDATE,
        P_ITEM_APPEND,
        P_RECOVER,
        _P_CORE_MAX
};

/* store_pg_cluster.c's statements */
enum pg_cluster_query {
        PC_CLAIM = _P_CORE_MAX,
        PC_RENEW,
        PC_TAKE,
        PC_NODE_BEAT,
        PC_NODE_LIST,
        PC_NODE_REMOVE,
        PC_CIRCUIT_PUT,
        PC_CIRCUIT_LIST,
        PC_CIRCUIT_TAKE,
        PC_CIRCUIT_EXISTS,
        PC_CIRCUIT_DELETE,
        _P_MAX
};

struct pg {
        PGconn *conn;
        bool prepared[_P_MAX];     /* on this connection; a reconnect clears them */
        bool batch;                /* between store_begin() and commit/rollback */
        bool listening;            /* LISTEN issued (store_notify_fd()) */
        bool missed;               /* reconnected since the last drain: notifications may be lost */
        bool async_commit;         /* store_set_sync(false) */
        int64_t last_reconnect_ms; /* monotonic; 0: never */
};

/* The parameters of one statement, as text. */
#define PG_PARAMS_MAX 48
struct pg_params {
        int n;
        const char *v[PG_PARAMS_MAX];
        char num[PG_PARAMS_MAX][32]; /* numbers printed for v[] */
        char *owned[PG_PARAMS_MAX];  /* copies v[] points to, freed by pgp_clear() */
        bool failed;                 /* out of memory, or more than PG_PARAMS_MAX */
};

void pgp_str(struct pg_params *p, const char *s); /* NULL: SQL NULL; bytes not UTF-8 become '?' */
void pgp_i64(struct pg_params *p, int64_t v);
void pgp_time(struct pg_params *p, int64_t ms); /* 0: NULL */
void pgp_dbl(struct pg_params *p, double v);
void pgp_take(struct pg_params *p, char *s); /* a heap string (NULL: SQL NULL, or out of memory) */
void pgp_clear(struct pg_params *p);

/* An array literal ("{...}") being built for a text[] or bigint[] parameter. */
struct pg_array {
        char *buf;
        size_t len, cap;
        bool oom;
};
void pga_str(struct pg_array *a, const char *s); /* NULL: NULL element */
void pga_i64(struct pg_array *a, int64_t v);
/* The literal (to free), NULL when out of memory; a is emptied. */
char *pga_end(struct pg_array *a);

/* A connection to use: reconnect a lost one, unless a batch was open on
 * it (the caller must see the batch fail) or the last try was less than
 * a second ago. */
int pg_ready(struct pg *be);
/* Prepare statement q from sql on first use, run it with p (NULL: none),
 * and hand back its result (PQclear it): rows or a command's status. */
int pg_exec(struct pg *be, int q, const char *sql, struct pg_params *p, PGresult **ret);
/* Run SQL without parameters or rows. */
int pg_simple(struct pg *be, const char *sql);
/* The -errno of a failed result (NULL: the connection's state). */
int pg_error(struct pg *be, const PGresult *res);

/* Reading: a NULL column is a NULL string; *oom notes a failed copy. */
char *pg_str(const PGresult *res, int row, int col, bool *oom);
int64_t pg_i64(const PGresult *res, int row, int col); /* NULL: 0 */
bool pg_bool(const PGresult *res, int row, int col);

/* A write inside the caller's batch runs in a savepoint, so a failure
 * leaves the batch usable; outside one it is a single statement, which
 * PostgreSQL runs in a transaction of its own. */
int pg_op_begin(struct pg *be, bool *ret_savepoint);
int pg_op_end(struct pg *be, bool savepoint, int r);

/* store_pg_cluster.c's operations, for the backend table. */
int pg_job_claim(void *be, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                 struct store_claim **ret, size_t *ret_n);
int pg_lease_renew(void *be, const char *node, const struct store_claim *c, size_t n, int64_t now_ms,
                   int64_t lease_ms, bool *ret_lost);
int pg_lease_take(void *be, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                  int64_t *ret_token);
int pg_node_beat(void *be, const struct store_node *n);
int pg_node_list(void *be, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n);
int pg_node_remove(void *be, const char *id);
int pg_circuit_put(void *be, const struct store_circuit *c);
int pg_circuit_list(void *be, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n);
int pg_circuit_take_probe(void *be, const char *source, const char *node, int64_t now_ms, int64_t probe_ms);
int pg_circuit_delete(void *be, const char *source);
int pg_notify_fd(void *be);
int pg_notify_drain(void *be, bool *ret_any);
/* After a reconnect: LISTEN again if store_notify_fd() had. */
int pg_listen_again(struct pg *be);

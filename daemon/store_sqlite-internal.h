/* What the two halves of the SQLite backend share: store_sqlite.c (the
 * connection, the schema, jobs and items) and store_sqlite_cluster.c
 * (leases, nodes, circuits). Each half owns its statements' SQL; the
 * connection caches both halves' prepared statements in one array. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "daemon/store-backend.h"

/* store_sqlite.c's statements */
enum query {
        Q_BEGIN,
        Q_COMMIT,
        Q_ROLLBACK,
        Q_SAVEPOINT,
        Q_RELEASE,
        Q_ROLLBACK_TO,
        Q_JOB_INSERT,
        Q_JOB_GET,
        Q_JOB_BY_KEY,
        Q_JOB_SEQ,
        Q_JOB_PER_SOURCE,
        Q_JOB_LIST,
        Q_JOB_LIST_STATES,
        Q_JOB_LIST_LABEL,
        Q_JOB_UPDATE,
        Q_JOB_DELETE,
        Q_JOB_QUEUED,
        Q_JOB_COUNT,
        Q_JOB_PRUNE,
        Q_ITEM_INSERT,
        Q_ITEM_LIST,
        Q_ITEM_UPDATE,
        Q_RECOVER_ITEMS,
        Q_RECOVER_JOBS,
        _Q_CORE_MAX
};

/* store_sqlite_cluster.c's statements */
enum cluster_query {
        QC_TOKEN_GET = _Q_CORE_MAX,
        QC_TOKEN_SET,
        QC_CLAIMABLE,
        QC_CLAIM,
        QC_RESCUE_ITEMS,
        QC_RENEW,
        QC_TAKE,
        QC_NODE_BEAT,
        QC_NODE_LIST,
        QC_NODE_REMOVE,
        QC_CIRCUIT_PUT,
        QC_CIRCUIT_LIST,
        QC_CIRCUIT_TAKE,
        QC_CIRCUIT_EXISTS,
        QC_CIRCUIT_DELETE,
        _Q_MAX
};

struct writegate;

struct sq {
        sqlite3 *db;
        sqlite3_stmt *stmt[_Q_MAX]; /* prepared on first use, NULL before */
        char *path;                 /* the database file, for store_check() */
        dev_t dev;                  /* its identity when opened */
        ino_t ino;
        dev_t wal_dev; /* its write-ahead log's, 0 if none was seen */
        ino_t wal_ino;
        bool detached;          /* the log was moved aside (the file was replaced) */
        struct writegate *gate; /* this process's queue of the file's writers */
        bool gated;             /* holding it: a write transaction is open */
};

/* An SQLite result code as -errno. */
int sq_error(int rc);
/* The cached statement in slot q, prepared from sql on first use. */
int sq_prepare(struct sq *be, int q, const char *sql, sqlite3_stmt **ret);
/* After every use: no open cursor, no bound pointers left behind. */
void sq_stmt_done(sqlite3_stmt *st);
/* Step a statement that returns no rows, then reset it. */
int sq_stmt_run(sqlite3_stmt *st);
/* Run st when binding went well (r == 0); reset it either way. */
int sq_stmt_run_bound(sqlite3_stmt *st, int r);
int sq_exec(struct sq *be, const char *sql);
bool sq_in_transaction(struct sq *be);
/* A write of several statements: a transaction of its own, or a
 * savepoint inside the caller's. op_end commits when r is 0, else undoes;
 * it returns the first error. */
int sq_op_begin(struct sq *be, bool *ret_own);
int sq_op_end(struct sq *be, bool own, int r);

/* Binding: each returns an SQLite code; callers OR them (SQLITE_OK is 0).
 * Strings are SQLITE_STATIC: they outlive the step. */
int sq_bind_str(sqlite3_stmt *st, int i, const char *s);
int sq_bind_time(sqlite3_stmt *st, int i, int64_t ms); /* 0: NULL */
int sq_bind_failed(int rc);                            /* the OR of bind codes as -errno */
/* Bind key to ?1 of st and step it once: 0 with st on its row, -ENOENT
 * when there is none, else -errno. The caller calls sq_stmt_done(st). */
int sq_stmt_row(sqlite3_stmt *st, const char *key);

/* Reading: a NULL column is a NULL string; *oom notes a failed copy. */
char *sq_col_str(sqlite3_stmt *st, int i, bool *oom);
const char *sq_col_text(sqlite3_stmt *st, int i); /* "" for NULL */

/* store_sqlite_cluster.c's operations, for the backend table. */
int sq_job_claim(void *be, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                 struct store_claim **ret, size_t *ret_n);
int sq_lease_renew(void *be, const char *node, const struct store_claim *c, size_t n, int64_t now_ms,
                   int64_t lease_ms, bool *ret_lost);
int sq_lease_take(void *be, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                  int64_t *ret_token);
int sq_node_beat(void *be, const struct store_node *n);
int sq_node_list(void *be, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n);
int sq_node_remove(void *be, const char *id);
int sq_circuit_put(void *be, const struct store_circuit *c);
int sq_circuit_list(void *be, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n);
int sq_circuit_take_probe(void *be, const char *source, const char *node, int64_t now_ms, int64_t probe_ms);
int sq_circuit_delete(void *be, const char *source);

/* store_sqlite_cluster: leases, nodes and circuits in the SQLite backend.
 *
 * A SQLite file serves one node, but the calls behave as in PostgreSQL so
 * that the scheduler has one way of working. The fencing token comes from
 * the one-row table lease_tokens, read and written in the same IMMEDIATE
 * transaction that hands it out: SQLite's single writer makes that the
 * whole of the locking, and the counter outlives restarts with the file.
 * Claims, renewals and takes are their own transactions (store.c refuses
 * them inside a batch). */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/store_sqlite-internal.h"

#define NODE_COLS "id, started_at, heartbeat_at, leases, api_url, version"
#define CIRCUIT_COLS                                                                                        \
        "source, state, consecutive_failures, trips, opened_at, retry_at, open_ms, last_error, "            \
        "probe_owner, probe_until, updated_at"
/* A half-open circuit written again as half-open (its probe's node writing
 * its own change) keeps the probe's holder, unless the write names one. */
#define HALF_OPEN_AGAIN                                                                                     \
        "circuits.state = 'half_open' AND excluded.state = 'half_open' AND excluded.probe_owner IS NULL"
#define KEEP_PROBE                                                                                          \
        " probe_owner = CASE WHEN " HALF_OPEN_AGAIN " THEN circuits.probe_owner"                            \
        " ELSE excluded.probe_owner END,"                                                                   \
        " probe_until = CASE WHEN " HALF_OPEN_AGAIN " THEN circuits.probe_until"                            \
        " ELSE excluded.probe_until END,"

static const char *const queries[_Q_MAX - _Q_CORE_MAX] = {
#define Q(x) [(x)-_Q_CORE_MAX]
        Q(QC_TOKEN_GET) = "SELECT last FROM lease_tokens WHERE id = 1",
        Q(QC_TOKEN_SET) = "UPDATE lease_tokens SET last = ?1 WHERE id = 1",
        /* queued, or running without a live lease: ?1 now, ?2 limit. Each
         * side reads its first ?2 rows in the order of the index jobs_sched;
         * one WHERE with OR would read and sort every queued job. */
        Q(QC_CLAIMABLE) = "SELECT seq, id, state FROM ("
                          "SELECT * FROM (SELECT seq, id, state, priority FROM jobs WHERE state = 'queued'"
                          " ORDER BY priority DESC, seq LIMIT ?2) UNION ALL"
                          " SELECT * FROM (SELECT seq, id, state, priority FROM jobs WHERE state = 'running'"
                          " AND coalesce(lease_until, 0) < ?1 ORDER BY priority DESC, seq LIMIT ?2))"
                          " ORDER BY priority DESC, seq LIMIT ?2",
        Q(QC_CLAIM) = "UPDATE jobs SET state = 'running', lease_owner = ?2, lease_token = ?3,"
                      " lease_until = ?4 WHERE seq = ?1",
        Q(QC_RESCUE_ITEMS) = "UPDATE items SET state = 'pending' WHERE job_seq = ?1 AND state = 'running'",
        Q(QC_RENEW) = "UPDATE jobs SET lease_until = ?4 WHERE id = ?1 AND lease_token = ?2"
                      " AND lease_owner = ?3 AND state IN ('running', 'paused')",
        Q(QC_TAKE) = "UPDATE jobs SET lease_owner = ?2, lease_token = ?3, lease_until = ?4 WHERE id = ?1",
        Q(QC_NODE_BEAT) = "INSERT INTO nodes (" NODE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                          " ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,"
                          " heartbeat_at = excluded.heartbeat_at, leases = excluded.leases,"
                          " api_url = excluded.api_url, version = excluded.version",
        Q(QC_NODE_LIST) = "SELECT " NODE_COLS " FROM nodes WHERE heartbeat_at >= ?1 ORDER BY id",
        Q(QC_NODE_REMOVE) = "DELETE FROM nodes WHERE id = ?1",
        Q(QC_CIRCUIT_PUT) = "INSERT INTO circuits (" CIRCUIT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
                            " ?9, ?10, ?11) ON CONFLICT (source) DO UPDATE SET state = excluded.state,"
                            " consecutive_failures = excluded.consecutive_failures, trips = excluded.trips,"
                            " opened_at = excluded.opened_at, retry_at = excluded.retry_at,"
                            " open_ms = excluded.open_ms, last_error = excluded.last_error," KEEP_PROBE
                            " updated_at = excluded.updated_at",
        Q(QC_CIRCUIT_LIST) = "SELECT " CIRCUIT_COLS " FROM circuits WHERE updated_at >= ?1 ORDER BY source",
        /* ?1 source, ?2 node, ?3 now, ?4 the hold's end */
        Q(QC_CIRCUIT_TAKE) =
                "UPDATE circuits SET state = 'half_open', probe_owner = ?2, probe_until = ?4,"
                " updated_at = ?3 WHERE source = ?1 AND state IN ('open', 'half_open')"
                " AND coalesce(retry_at, 0) <= ?3"
                " AND (probe_owner IS NULL OR probe_owner = ?2 OR coalesce(probe_until, 0) <= ?3)",
        Q(QC_CIRCUIT_EXISTS) = "SELECT 1 FROM circuits WHERE source = ?1",
        Q(QC_CIRCUIT_DELETE) = "DELETE FROM circuits WHERE source = ?1",
#undef Q
};

static int cl_stmt(struct sq *be, enum cluster_query q, sqlite3_stmt **ret)
{
        return sq_prepare(be, q, queries[q - _Q_CORE_MAX], ret);
}

/* ---- the token counter ---- */

static int token_get(struct sq *be, int64_t *ret)
{
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = cl_stmt(be, QC_TOKEN_GET, &st);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, 0);
        else
                r = rc == SQLITE_DONE ? -EIO : sq_error(rc);
        sq_stmt_done(st);
        return r;
}

static int token_set(struct sq *be, int64_t last)
{
        sqlite3_stmt *st = NULL;
        int r = cl_stmt(be, QC_TOKEN_SET, &st);

        if (r < 0)
                return r;
        return sq_stmt_run_bound(st, sq_bind_failed(sqlite3_bind_int64(st, 1, last)));
}

/* ---- claims ---- */

/* A job the claim will take. */
struct candidate {
        int64_t seq;
        struct store_claim c;
};

static int claimable(struct sq *be, size_t limit, int64_t now_ms, struct candidate **ret, size_t *ret_n)
{
        struct candidate *v = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0, cap = 0;
        int r, rc = SQLITE_DONE;

        r = cl_stmt(be, QC_CLAIMABLE, &st);
        if (r < 0)
                return r;
        r = sq_bind_failed(sqlite3_bind_int64(st, 1, now_ms) | sqlite3_bind_int64(st, 2, (int64_t)limit));
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *id = sq_col_text(st, 1);
                if (n == cap) {
                        struct candidate *nv = store_array_grow(v, &cap, sizeof(*v));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                }
                if (strlen(id) > JOB_ID_LEN) {
                        r = -EIO;
                        break;
                }
                memset(&v[n], 0, sizeof(v[n]));
                v[n].seq = sqlite3_column_int64(st, 0);
                strcpy(v[n].c.id, id);
                v[n].c.rescued = strcmp(sq_col_text(st, 2), "running") == 0;
                n++;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0) {
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* Lease one job to node with token; its running items start over. */
static int claim_one(struct sq *be, const struct candidate *k, const char *node, int64_t token,
                     int64_t until)
{
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = cl_stmt(be, QC_CLAIM, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_int64(st, 1, k->seq);
        rc |= sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
        rc |= sqlite3_bind_int64(st, 3, token);
        rc |= sqlite3_bind_int64(st, 4, until);
        r = sq_stmt_run_bound(st, sq_bind_failed(rc));
        if (r == 0)
                r = cl_stmt(be, QC_RESCUE_ITEMS, &st);
        if (r == 0)
                r = sq_stmt_run_bound(st, sq_bind_failed(sqlite3_bind_int64(st, 1, k->seq)));
        return r;
}

int sq_job_claim(void *p, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                 struct store_claim **ret, size_t *ret_n)
{
        struct sq *be = p;
        struct candidate *k = NULL;
        struct store_claim *out = NULL;
        int64_t last = 0;
        size_t n = 0;
        bool own = false;
        int r;

        r = sq_op_begin(be, &own);
        if (r < 0)
                return r;
        r = token_get(be, &last);
        if (r == 0)
                r = claimable(be, limit, now_ms, &k, &n);
        for (size_t i = 0; r == 0 && i < n; i++) {
                k[i].c.lease_token = last + 1 + (int64_t)i;
                r = claim_one(be, &k[i], node, k[i].c.lease_token, now_ms + lease_ms);
        }
        if (r == 0 && n > 0)
                r = token_set(be, last + (int64_t)n);
        if (r == 0 && n > 0 && !(out = calloc(n, sizeof(*out))))
                r = -ENOMEM;
        r = sq_op_end(be, own, r);
        if (r < 0) {
                free(out);
                free(k);
                return r;
        }
        for (size_t i = 0; i < n; i++)
                out[i] = k[i].c;
        free(k);
        *ret = out;
        *ret_n = n;
        return 0;
}

int sq_lease_renew(void *p, const char *node, const struct store_claim *c, size_t n, int64_t now_ms,
                   int64_t lease_ms, bool *ret_lost)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        bool own = false, *lost;
        int r, rc;

        lost = calloc(n, sizeof(*lost));
        if (!lost)
                return -ENOMEM;
        r = sq_op_begin(be, &own);
        if (r < 0)
                goto out;
        r = cl_stmt(be, QC_RENEW, &st);
        for (size_t i = 0; r == 0 && i < n; i++) {
                rc = sqlite3_bind_text(st, 1, c[i].id, -1, SQLITE_STATIC);
                rc |= sqlite3_bind_int64(st, 2, c[i].lease_token);
                rc |= sqlite3_bind_text(st, 3, node, -1, SQLITE_STATIC);
                rc |= sqlite3_bind_int64(st, 4, now_ms + lease_ms);
                r = sq_stmt_run_bound(st, sq_bind_failed(rc));
                lost[i] = sqlite3_changes(be->db) == 0;
        }
        r = sq_op_end(be, own, r);
        if (r == 0)
                memcpy(ret_lost, lost, n * sizeof(*lost));
out:
        free(lost);
        return r;
}

int sq_lease_take(void *p, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                  int64_t *ret_token)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int64_t last = 0;
        bool own = false;
        int r, rc;

        r = sq_op_begin(be, &own);
        if (r < 0)
                return r;
        r = token_get(be, &last);
        if (r == 0)
                r = cl_stmt(be, QC_TAKE, &st);
        if (r == 0) {
                rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
                rc |= sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
                rc |= sqlite3_bind_int64(st, 3, last + 1);
                rc |= sqlite3_bind_int64(st, 4, now_ms + lease_ms);
                r = sq_stmt_run_bound(st, sq_bind_failed(rc));
        }
        if (r == 0 && sqlite3_changes(be->db) == 0)
                r = -ENOENT;
        if (r == 0)
                r = token_set(be, last + 1);
        r = sq_op_end(be, own, r);
        if (r < 0)
                return r;
        *ret_token = last + 1;
        return 0;
}

/* ---- nodes ---- */

int sq_node_beat(void *p, const struct store_node *n)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = cl_stmt(be, QC_NODE_BEAT, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_text(st, 1, n->id, -1, SQLITE_STATIC);
        rc |= sqlite3_bind_int64(st, 2, n->started_at);
        rc |= sqlite3_bind_int64(st, 3, n->heartbeat_at);
        rc |= sqlite3_bind_int64(st, 4, n->leases);
        rc |= sq_bind_str(st, 5, n->api_url);
        rc |= sq_bind_str(st, 6, n->version);
        return sq_stmt_run_bound(st, sq_bind_failed(rc));
}

static int node_read(sqlite3_stmt *st, struct store_node *n)
{
        bool oom = false;

        memset(n, 0, sizeof(*n));
        n->id = sq_col_str(st, 0, &oom);
        n->started_at = sqlite3_column_int64(st, 1);
        n->heartbeat_at = sqlite3_column_int64(st, 2);
        n->leases = sqlite3_column_int64(st, 3);
        n->api_url = sq_col_str(st, 4, &oom);
        n->version = sq_col_str(st, 5, &oom);
        return oom || !n->id ? -ENOMEM : 0;
}

int sq_node_list(void *p, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n)
{
        struct sq *be = p;
        struct store_node *v = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0, cap = 0;
        int r, rc = SQLITE_DONE;

        r = cl_stmt(be, QC_NODE_LIST, &st);
        if (r < 0)
                return r;
        r = sq_bind_failed(sqlite3_bind_int64(st, 1, alive_since_ms));
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        struct store_node *nv = store_array_grow(v, &cap, sizeof(*v));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                }
                r = node_read(st, &v[n++]);
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0) {
                store_nodes_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* DELETE by a text key; -ENOENT when no row went. */
static int delete_by(struct sq *be, enum cluster_query q, const char *key)
{
        sqlite3_stmt *st = NULL;
        int r = cl_stmt(be, q, &st);

        if (r < 0)
                return r;
        r = sq_stmt_run_bound(st, sq_bind_failed(sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC)));
        if (r == 0 && sqlite3_changes(be->db) == 0)
                r = -ENOENT;
        return r;
}

int sq_node_remove(void *p, const char *id) { return delete_by(p, QC_NODE_REMOVE, id); }

/* ---- circuits ---- */

int sq_circuit_put(void *p, const struct store_circuit *c)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = cl_stmt(be, QC_CIRCUIT_PUT, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_text(st, 1, c->source, -1, SQLITE_STATIC);
        rc |= sqlite3_bind_text(st, 2, store_circuit_state_name(c->state), -1, SQLITE_STATIC);
        rc |= sqlite3_bind_int(st, 3, c->consecutive_failures);
        rc |= sqlite3_bind_int64(st, 4, c->trips);
        rc |= sq_bind_time(st, 5, c->opened_at);
        rc |= sq_bind_time(st, 6, c->retry_at);
        rc |= sqlite3_bind_int64(st, 7, c->open_ms);
        rc |= sq_bind_str(st, 8, c->last_error);
        rc |= sq_bind_str(st, 9, c->probe_owner);
        rc |= sq_bind_time(st, 10, c->probe_until);
        rc |= sqlite3_bind_int64(st, 11, c->updated_at);
        return sq_stmt_run_bound(st, sq_bind_failed(rc));
}

static int circuit_read(sqlite3_stmt *st, struct store_circuit *c)
{
        bool oom = false;
        int s = store_circuit_state_parse(sq_col_text(st, 1));

        memset(c, 0, sizeof(*c));
        c->state = s < 0 ? BREAKER_CLOSED : (enum breaker_state)s;
        c->consecutive_failures = sqlite3_column_int(st, 2);
        c->trips = sqlite3_column_int64(st, 3);
        c->opened_at = sqlite3_column_int64(st, 4);
        c->retry_at = sqlite3_column_int64(st, 5);
        c->open_ms = sqlite3_column_int64(st, 6);
        c->probe_until = sqlite3_column_int64(st, 9);
        c->updated_at = sqlite3_column_int64(st, 10);
        c->source = sq_col_str(st, 0, &oom);
        c->last_error = sq_col_str(st, 7, &oom);
        c->probe_owner = sq_col_str(st, 8, &oom);
        if (oom || !c->source)
                return -ENOMEM;
        return s < 0 ? -EIO : 0;
}

int sq_circuit_list(void *p, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n)
{
        struct sq *be = p;
        struct store_circuit *v = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0, cap = 0;
        int r, rc = SQLITE_DONE;

        r = cl_stmt(be, QC_CIRCUIT_LIST, &st);
        if (r < 0)
                return r;
        r = sq_bind_failed(sqlite3_bind_int64(st, 1, changed_since_ms));
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        struct store_circuit *nv = store_array_grow(v, &cap, sizeof(*v));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                }
                r = circuit_read(st, &v[n++]);
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0) {
                store_circuits_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static int circuit_exists(struct sq *be, const char *source)
{
        sqlite3_stmt *st = NULL;
        int r = cl_stmt(be, QC_CIRCUIT_EXISTS, &st);

        if (r < 0)
                return r;
        r = sq_stmt_row(st, source);
        sq_stmt_done(st);
        return r;
}

int sq_circuit_take_probe(void *p, const char *source, const char *node, int64_t now_ms, int64_t probe_ms)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = cl_stmt(be, QC_CIRCUIT_TAKE, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
        rc |= sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
        rc |= sqlite3_bind_int64(st, 3, now_ms);
        rc |= sqlite3_bind_int64(st, 4, now_ms + probe_ms);
        r = sq_stmt_run_bound(st, sq_bind_failed(rc));
        if (r == 0 && sqlite3_changes(be->db) == 0) {
                r = circuit_exists(be, source);
                if (r == 0)
                        r = -EBUSY;
        }
        return r;
}

int sq_circuit_delete(void *p, const char *source) { return delete_by(p, QC_CIRCUIT_DELETE, source); }

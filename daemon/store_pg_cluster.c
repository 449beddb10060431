/* store_pg_cluster: leases, nodes, circuits and notifications in the
 * PostgreSQL backend, where several nodes share the table.
 *
 * A claim is one statement: a SELECT ... FOR UPDATE SKIP LOCKED picks the
 * jobs (rows another transaction holds are passed over, not waited for),
 * the UPDATE leases them with tokens from the sequence lease_tokens, the
 * items' UPDATE restarts their running items, and pg_notify() wakes the
 * other nodes when it commits, which is when the statement returns. A
 * sequence never hands out a number twice nor a smaller one, across
 * connections and restarts, so a token orders the leases of a job.
 *
 * A fenced job UPDATE (store_pg.c) row-locks the job until its batch
 * commits: a claim running meanwhile skips the row, and one that comes
 * after sees the batch's result. Notifications use one channel,
 * PG_CHANNEL; their payload names the cause and is not read. */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/store_pg-internal.h"

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

static const char *const queries[_P_MAX - _P_CORE_MAX] = {
#define Q(x) [(x)-_P_CORE_MAX]
        /* $1 node, $2 now, $3 limit, $4 lease length */
        Q(PC_CLAIM) = "WITH c AS (SELECT seq, state = 'running' AS rescued FROM jobs WHERE state = 'queued'"
                      " OR (state = 'running' AND coalesce(lease_until, 0) < $2::bigint)"
                      " ORDER BY priority DESC, seq LIMIT $3 FOR UPDATE SKIP LOCKED),"
                      " u AS (UPDATE jobs SET state = 'running', lease_owner = $1,"
                      " lease_token = nextval('lease_tokens'), lease_until = $2::bigint + $4::bigint"
                      " FROM c WHERE jobs.seq = c.seq"
                      " RETURNING jobs.seq, jobs.id, jobs.priority, jobs.lease_token, c.rescued),"
                      " i AS (UPDATE items SET state = 'pending' WHERE state = 'running'"
                      " AND job_seq IN (SELECT seq FROM u))"
                      " SELECT id, lease_token, rescued, pg_notify('" PG_CHANNEL "', 'claim') FROM u"
                      " ORDER BY priority DESC, seq",
        /* $1 node, $2 new end, $3 ids, $4 tokens: the positions kept */
        Q(PC_RENEW) = "UPDATE jobs SET lease_until = $2::bigint"
                      " FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS u (id, token, i)"
                      " WHERE jobs.id = u.id AND jobs.lease_token = u.token AND jobs.lease_owner = $1"
                      " AND jobs.state IN ('running', 'paused') RETURNING u.i",
        Q(PC_TAKE) = "WITH t AS (UPDATE jobs SET lease_owner = $2, lease_token = nextval('lease_tokens'),"
                     " lease_until = $3::bigint WHERE id = $1 RETURNING lease_token)"
                     " SELECT lease_token, pg_notify('" PG_CHANNEL "', 'take') FROM t",
        Q(PC_NODE_BEAT) = "INSERT INTO nodes (" NODE_COLS ") VALUES ($1, $2, $3, $4, $5, $6)"
                          " ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,"
                          " heartbeat_at = excluded.heartbeat_at, leases = excluded.leases,"
                          " api_url = excluded.api_url, version = excluded.version",
        Q(PC_NODE_LIST) =
                "SELECT " NODE_COLS " FROM nodes WHERE heartbeat_at >= $1 ORDER BY id COLLATE \"C\"",
        Q(PC_NODE_REMOVE) = "DELETE FROM nodes WHERE id = $1",
        Q(PC_CIRCUIT_PUT) = "INSERT INTO circuits (" CIRCUIT_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                            " $9, $10, $11) ON CONFLICT (source) DO UPDATE SET state = excluded.state,"
                            " consecutive_failures = excluded.consecutive_failures, trips = excluded.trips,"
                            " opened_at = excluded.opened_at, retry_at = excluded.retry_at,"
                            " open_ms = excluded.open_ms, last_error = excluded.last_error," KEEP_PROBE
                            " updated_at = excluded.updated_at",
        Q(PC_CIRCUIT_LIST) = "SELECT " CIRCUIT_COLS " FROM circuits WHERE updated_at >= $1"
                             " ORDER BY source COLLATE \"C\"",
        /* $1 source, $2 node, $3 now, $4 the hold's end. A concurrent
         * taker waits for the row, then finds the hold ahead. */
        Q(PC_CIRCUIT_TAKE) = "UPDATE circuits SET state = 'half_open', probe_owner = $2,"
                             " probe_until = $4::bigint, updated_at = $3::bigint"
                             " WHERE source = $1 AND state IN ('open', 'half_open')"
                             " AND coalesce(retry_at, 0) <= $3::bigint AND (probe_owner IS NULL"
                             " OR probe_owner = $2 OR coalesce(probe_until, 0) <= $3::bigint)",
        Q(PC_CIRCUIT_EXISTS) = "SELECT 1 FROM circuits WHERE source = $1",
        Q(PC_CIRCUIT_DELETE) = "DELETE FROM circuits WHERE source = $1",
#undef Q
};

static int cl_exec(struct pg *be, enum pg_cluster_query q, struct pg_params *p, PGresult **ret)
{
        return pg_exec(be, q, queries[q - _P_CORE_MAX], p, ret);
}

/* Run q for its count of rows changed. */
static int cl_change(struct pg *be, enum pg_cluster_query q, struct pg_params *p, int64_t *ret)
{
        PGresult *res;
        int r = cl_exec(be, q, p, &res);

        if (r < 0)
                return r;
        *ret = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return 0;
}

/* ---- leases ---- */

int pg_job_claim(void *vbe, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                 struct store_claim **ret, size_t *ret_n)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        struct store_claim *c = NULL;
        PGresult *res;
        int r, rows;

        pgp_str(&p, node);
        pgp_i64(&p, now_ms);
        pgp_i64(&p, (int64_t)limit);
        pgp_i64(&p, lease_ms);
        r = cl_exec(be, PC_CLAIM, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        rows = PQntuples(res);
        if (rows > 0 && !(c = calloc((size_t)rows, sizeof(*c))))
                r = -ENOMEM;
        for (int i = 0; r == 0 && i < rows; i++) {
                const char *id = PQgetvalue(res, i, 0);
                if (strlen(id) > JOB_ID_LEN) {
                        r = -EIO;
                        break;
                }
                strcpy(c[i].id, id);
                c[i].lease_token = pg_i64(res, i, 1);
                c[i].rescued = pg_bool(res, i, 2);
        }
        PQclear(res);
        if (r < 0) {
                /* committed already: the leases run out on their own */
                free(c);
                return r;
        }
        *ret = c;
        *ret_n = (size_t)rows;
        return 0;
}

int pg_lease_renew(void *vbe, const char *node, const struct store_claim *c, size_t n, int64_t now_ms,
                   int64_t lease_ms, bool *ret_lost)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        struct pg_array ids = {0}, tokens = {0};
        PGresult *res;
        bool *lost;
        char *lit;
        int r;

        lost = malloc(n * sizeof(*lost));
        if (!lost)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                lost[i] = true;
                pga_str(&ids, c[i].id);
                pga_i64(&tokens, c[i].lease_token);
        }
        pgp_str(&p, node);
        pgp_i64(&p, now_ms + lease_ms);
        if (!(lit = pga_end(&ids)))
                p.failed = true;
        pgp_take(&p, lit);
        if (!(lit = pga_end(&tokens)))
                p.failed = true;
        pgp_take(&p, lit);
        r = cl_exec(be, PC_RENEW, &p, &res);
        pgp_clear(&p);
        if (r == 0) {
                for (int i = 0; i < PQntuples(res); i++) {
                        int64_t at = pg_i64(res, i, 0);
                        if (at >= 1 && (size_t)at <= n)
                                lost[at - 1] = false;
                }
                PQclear(res);
                memcpy(ret_lost, lost, n * sizeof(*lost));
        }
        free(lost);
        return r;
}

int pg_lease_take(void *vbe, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                  int64_t *ret_token)
{
        struct pg_params p = {0};
        PGresult *res;
        int r;

        pgp_str(&p, id);
        pgp_str(&p, node);
        pgp_i64(&p, now_ms + lease_ms);
        r = cl_exec(vbe, PC_TAKE, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 1)
                *ret_token = pg_i64(res, 0, 0);
        else
                r = -ENOENT;
        PQclear(res);
        return r;
}

/* ---- nodes ---- */

int pg_node_beat(void *vbe, const struct store_node *n)
{
        struct pg_params p = {0};
        PGresult *res;
        int r;

        pgp_str(&p, n->id);
        pgp_i64(&p, n->started_at);
        pgp_i64(&p, n->heartbeat_at);
        pgp_i64(&p, n->leases);
        pgp_str(&p, n->api_url);
        pgp_str(&p, n->version);
        r = cl_exec(vbe, PC_NODE_BEAT, &p, &res);
        pgp_clear(&p);
        if (r == 0)
                PQclear(res);
        return r;
}

static int node_read(const PGresult *res, int row, struct store_node *n)
{
        bool oom = false;

        memset(n, 0, sizeof(*n));
        n->id = pg_str(res, row, 0, &oom);
        n->started_at = pg_i64(res, row, 1);
        n->heartbeat_at = pg_i64(res, row, 2);
        n->leases = pg_i64(res, row, 3);
        n->api_url = pg_str(res, row, 4, &oom);
        n->version = pg_str(res, row, 5, &oom);
        return oom || !n->id ? -ENOMEM : 0;
}

int pg_node_list(void *vbe, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n)
{
        struct pg_params p = {0};
        struct store_node *v = NULL;
        PGresult *res;
        size_t n = 0;
        int r, rows;

        pgp_i64(&p, alive_since_ms);
        r = cl_exec(vbe, PC_NODE_LIST, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        rows = PQntuples(res);
        if (rows > 0 && !(v = calloc((size_t)rows, sizeof(*v))))
                r = -ENOMEM;
        while (r == 0 && n < (size_t)rows) {
                r = node_read(res, (int)n, &v[n]);
                n++;
        }
        PQclear(res);
        if (r < 0) {
                store_nodes_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* DELETE by a text key; -ENOENT when no row went. */
static int delete_by(struct pg *be, enum pg_cluster_query q, const char *key)
{
        struct pg_params p = {0};
        int64_t n = 0;
        int r;

        pgp_str(&p, key);
        r = cl_change(be, q, &p, &n);
        pgp_clear(&p);
        return r == 0 && n == 0 ? -ENOENT : r;
}

int pg_node_remove(void *vbe, const char *id) { return delete_by(vbe, PC_NODE_REMOVE, id); }

/* ---- circuits ---- */

int pg_circuit_put(void *vbe, const struct store_circuit *c)
{
        struct pg_params p = {0};
        PGresult *res;
        int r;

        pgp_str(&p, c->source);
        pgp_str(&p, store_circuit_state_name(c->state));
        pgp_i64(&p, c->consecutive_failures);
        pgp_i64(&p, c->trips);
        pgp_time(&p, c->opened_at);
        pgp_time(&p, c->retry_at);
        pgp_i64(&p, c->open_ms);
        pgp_str(&p, c->last_error);
        pgp_str(&p, c->probe_owner);
        pgp_time(&p, c->probe_until);
        pgp_i64(&p, c->updated_at);
        r = cl_exec(vbe, PC_CIRCUIT_PUT, &p, &res);
        pgp_clear(&p);
        if (r == 0)
                PQclear(res);
        return r;
}

static int circuit_read(const PGresult *res, int row, struct store_circuit *c)
{
        bool oom = false;
        int s = store_circuit_state_parse(PQgetvalue(res, row, 1));

        memset(c, 0, sizeof(*c));
        c->state = s < 0 ? BREAKER_CLOSED : (enum breaker_state)s;
        c->consecutive_failures = (int)pg_i64(res, row, 2);
        c->trips = pg_i64(res, row, 3);
        c->opened_at = pg_i64(res, row, 4);
        c->retry_at = pg_i64(res, row, 5);
        c->open_ms = pg_i64(res, row, 6);
        c->probe_until = pg_i64(res, row, 9);
        c->updated_at = pg_i64(res, row, 10);
        c->source = pg_str(res, row, 0, &oom);
        c->last_error = pg_str(res, row, 7, &oom);
        c->probe_owner = pg_str(res, row, 8, &oom);
        if (oom || !c->source)
                return -ENOMEM;
        return s < 0 ? -EIO : 0;
}

int pg_circuit_list(void *vbe, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n)
{
        struct pg_params p = {0};
        struct store_circuit *v = NULL;
        PGresult *res;
        size_t n = 0;
        int r, rows;

        pgp_i64(&p, changed_since_ms);
        r = cl_exec(vbe, PC_CIRCUIT_LIST, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        rows = PQntuples(res);
        if (rows > 0 && !(v = calloc((size_t)rows, sizeof(*v))))
                r = -ENOMEM;
        while (r == 0 && n < (size_t)rows) {
                r = circuit_read(res, (int)n, &v[n]);
                n++;
        }
        PQclear(res);
        if (r < 0) {
                store_circuits_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int pg_circuit_take_probe(void *vbe, const char *source, const char *node, int64_t now_ms, int64_t probe_ms)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        PGresult *res;
        int64_t n = 0;
        int r;

        pgp_str(&p, source);
        pgp_str(&p, node);
        pgp_i64(&p, now_ms);
        pgp_i64(&p, now_ms + probe_ms);
        r = cl_change(be, PC_CIRCUIT_TAKE, &p, &n);
        pgp_clear(&p);
        if (r < 0 || n > 0)
                return r;
        pgp_str(&p, source);
        r = cl_exec(be, PC_CIRCUIT_EXISTS, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        r = PQntuples(res) > 0 ? -EBUSY : -ENOENT;
        PQclear(res);
        return r;
}

int pg_circuit_delete(void *vbe, const char *source) { return delete_by(vbe, PC_CIRCUIT_DELETE, source); }

/* ---- notifications ---- */

int pg_listen_again(struct pg *be) { return be->listening ? pg_simple(be, "LISTEN " PG_CHANNEL) : 0; }

int pg_notify_fd(void *vbe)
{
        struct pg *be = vbe;
        int fd;

        if (!be->listening) {
                int r = pg_simple(be, "LISTEN " PG_CHANNEL);
                if (r < 0)
                        return r;
                be->listening = true;
        }
        fd = PQsocket(be->conn);
        return fd < 0 ? -ECONNRESET : fd;
}

int pg_notify_drain(void *vbe, bool *ret_any)
{
        struct pg *be = vbe;
        PGnotify *n;
        bool any;
        int r;

        /* a lost connection is re-established here (and reported as any) */
        r = pg_ready(be);
        if (r < 0)
                return r;
        if (!PQconsumeInput(be->conn))
                return pg_error(be, NULL);
        any = be->missed;
        while ((n = PQnotifies(be->conn))) {
                any = true;
                PQfreemem(n);
        }
        be->missed = false;
        *ret_any = any;
        return 0;
}

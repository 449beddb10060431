/* store_pg: the PostgreSQL backend of the job table, over libpq; this part
 * holds the connection, the schema, jobs and items, store_pg_cluster.c
 * the leases, nodes, circuits and notifications, store_pg_wire.c the
 * parameters, results and errors.
 *
 * One struct pg is one connection. Statements are prepared on first use
 * and all parameters travel apart from the SQL text, so nothing a user
 * wrote ever becomes SQL. Each operation is one statement where it can be
 * (a job with its items is one INSERT with data-modifying CTEs fed by
 * arrays), so outside a batch PostgreSQL makes it atomic on its own;
 * inside one, a write that may fail on a constraint runs in a savepoint.
 *
 * The schema is the list migrations[], applied at open in one transaction
 * under a transaction-level advisory lock keyed by the schema, so nodes
 * starting together migrate once and the others wait, then find nothing
 * to do; `schema_migrations` records the versions. A schema already at
 * this build's version needs no CREATE privilege.
 *
 * A lost connection fails the call with -ECONNRESET; the next call
 * outside a batch reconnects (at most once a second), prepares again and
 * LISTENs again. The URL is kept only inside libpq: its password never
 * reaches an error or a log line. Times are bigint ms (NULL for 0),
 * states their names, lists and options jsonb. */
#include "autoconfig.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "daemon/store_json.h"
#include "daemon/store_pg-internal.h"

#define PG_LOCK_TIMEOUT_MS    "5000" /* a row or table lock waited for longer: -EBUSY */
#define PG_CONNECT_TIMEOUT_S  "5"
#define PG_RECONNECT_EVERY_MS 1000
#define PG_LOCK_CLASS         "1751215204" /* advisory lock space of hauld's migrations: "hald" in ASCII */

static const char *const migrations[] = {
        /* 1: everything of the SQLite schema at its version 3 */
        "CREATE TABLE jobs ("
        "  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        "  id text NOT NULL UNIQUE,"
        "  state text NOT NULL,"
        "  query text,"
        "  sources jsonb," /* array of names; NULL: none */
        "  max integer NOT NULL,"
        "  timeout double precision NOT NULL," /* s */
        "  priority integer NOT NULL,"
        "  label text,"
        "  created_at bigint, started_at bigint, finished_at bigint, deadline_at bigint,"
        "  total bigint NOT NULL, pending bigint NOT NULL, running bigint NOT NULL,"
        "  succeeded bigint NOT NULL, failed bigint NOT NULL, skipped bigint NOT NULL,"
        "  bytes bigint NOT NULL,"
        "  per_source jsonb," /* array of struct job_source; NULL: none */
        "  error_code text, error_message text,"
        "  idempotency_key text UNIQUE,"
        "  request_hash text,"
        "  lease_owner text,"
        "  lease_token bigint NOT NULL DEFAULT 0,"
        "  lease_until bigint,"
        "  options jsonb" /* object of job_limits; NULL: none */
        ");"
        /* claims: queued and running jobs by priority, then age */
        "CREATE INDEX jobs_sched ON jobs (priority DESC, seq) WHERE state IN ('queued', 'running');"
        /* listing by state, newest first */
        "CREATE INDEX jobs_state ON jobs (state, seq);"
        "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;"
        "CREATE TABLE items ("
        "  job_seq bigint NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,"
        "  idx integer NOT NULL,"
        "  source text, url text, filename text,"
        "  state text NOT NULL,"
        "  attempts integer NOT NULL, http_status integer NOT NULL, bytes bigint NOT NULL,"
        "  content_type text, path text, sha256 text,"
        "  duration_ms bigint NOT NULL, speed_bps bigint NOT NULL,"
        "  error_code text, error_message text,"
        "  node text,"
        "  resumed_from bigint NOT NULL DEFAULT 0,"
        "  PRIMARY KEY (job_seq, idx)"
        ");"
        /* fencing tokens: never handed out twice, never smaller */
        "CREATE SEQUENCE lease_tokens;"
        "CREATE TABLE nodes ("
        "  id text PRIMARY KEY,"
        "  started_at bigint NOT NULL, heartbeat_at bigint NOT NULL,"
        "  leases bigint NOT NULL,"
        "  api_url text, version text"
        ");"
        "CREATE TABLE circuits ("
        "  source text PRIMARY KEY,"
        "  state text NOT NULL,"
        "  consecutive_failures integer NOT NULL, trips bigint NOT NULL,"
        "  opened_at bigint, retry_at bigint, open_ms bigint NOT NULL,"
        "  last_error text,"
        "  probe_owner text, probe_until bigint,"
        "  updated_at bigint NOT NULL"
        ");",
        /* 2: listing by label, newest first */
        "CREATE INDEX jobs_label ON jobs (label, seq);",
        /* 3: per_source in two parts (see the SQLite schema's version 5) */
        "ALTER TABLE jobs ADD COLUMN per_source_rest jsonb, ADD COLUMN per_source_total bigint;",
};
#define SCHEMA_VERSION ((int64_t)(sizeof(migrations) / sizeof(migrations[0])))

/* Column order of JOB_COLS. */
enum {
        JC_SEQ,
        JC_ID,
        JC_STATE,
        JC_QUERY,
        JC_SOURCES,
        JC_MAX,
        JC_TIMEOUT,
        JC_PRIORITY,
        JC_LABEL,
        JC_CREATED,
        JC_STARTED,
        JC_FINISHED,
        JC_DEADLINE,
        JC_TOTAL,
        JC_PENDING,
        JC_RUNNING,
        JC_SUCCEEDED,
        JC_FAILED,
        JC_SKIPPED,
        JC_BYTES,
        JC_PER_SOURCE,
        JC_ERROR_CODE,
        JC_ERROR_MESSAGE,
        JC_IDEMPOTENCY_KEY,
        JC_REQUEST_HASH,
        JC_LEASE_OWNER,
        JC_LEASE_TOKEN,
        JC_LEASE_UNTIL,
        JC_OPTIONS,
        JC_PER_SOURCE_TOTAL
};
#define JOB_COLS                                                                                            \
        "seq, id, state, query, sources, max, timeout, priority, label, created_at, started_at, "           \
        "finished_at, deadline_at, total, pending, running, succeeded, failed, skipped, bytes, "            \
        "per_source, error_code, error_message, idempotency_key, request_hash, lease_owner, lease_token, "  \
        "lease_until, options, per_source_total"

/* Column order of ITEM_COLS. */
enum {
        IC_IDX,
        IC_SOURCE,
        IC_URL,
        IC_FILENAME,
        IC_STATE,
        IC_ATTEMPTS,
        IC_HTTP_STATUS,
        IC_BYTES,
        IC_CONTENT_TYPE,
        IC_PATH,
        IC_SHA256,
        IC_DURATION_MS,
        IC_SPEED_BPS,
        IC_ERROR_CODE,
        IC_ERROR_MESSAGE,
        IC_NODE,
        IC_RESUMED_FROM,
        _IC_MAX
};
#define ITEM_COLS                                                                                           \
        "idx, source, url, filename, state, attempts, http_status, bytes, content_type, path, sha256, "     \
        "duration_ms, speed_bps, error_code, error_message, node, resumed_from"
/* The items of a statement as one array parameter per column, from $N. */
#define ITEM_ARRAYS(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q)                                      \
        "unnest($" a "::integer[], $" b "::text[], $" c "::text[], $" d "::text[], $" e "::text[], $" f     \
        "::integer[], $" g "::integer[], $" h "::bigint[], $" i "::text[], $" j "::text[], $" k             \
        "::text[], $" l "::bigint[], $" m "::bigint[], $" n "::text[], $" o "::text[], $" p "::text[], $" q \
        "::bigint[])"

/* Job parameters: the fixed fields $1..$11, then the mutable ones from
 * $12 (insert) or $3 (update, after $1 id and $2 the fencing token). */
/* (unformatted: clang-format would break the SQL apart around ITEM_ARRAYS) */
/* clang-format off */
static const char *const queries[_P_CORE_MAX] = {
        [P_JOB_INSERT] =
                "WITH j AS (INSERT INTO jobs (id, query, sources, max, timeout, priority, label, created_at,"
                " idempotency_key, request_hash, options, state, started_at, finished_at, deadline_at,"
                " total, pending, running, succeeded, failed, skipped, bytes, per_source, error_code,"
                " error_message, per_source_rest, per_source_total)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
                " $19, $20, $21, $22, $23, $24, $25, $43, $44) ON CONFLICT DO NOTHING RETURNING seq),"
                " i AS (INSERT INTO items (job_seq, " ITEM_COLS ") SELECT j.seq, u.* FROM j, "
                ITEM_ARRAYS("26", "27", "28", "29", "30", "31", "32", "33", "34", "35", "36", "37", "38",
                            "39", "40", "41", "42") " AS u)"
                " SELECT seq, pg_notify('" PG_CHANNEL "', 'insert') FROM j",
        [P_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = $1",
        [P_JOB_BY_KEY] = "SELECT " JOB_COLS " FROM jobs WHERE idempotency_key = $1",
        [P_JOB_SEQ] = "SELECT seq FROM jobs WHERE id = $1",
        [P_JOB_PER_SOURCE] = "SELECT per_source, per_source_rest FROM jobs WHERE id = $1",
        [P_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        /* $3 the label, $4 the states (an empty array: any) */
        [P_JOB_LIST_LABEL] = "SELECT " JOB_COLS " FROM jobs WHERE label = $3 AND seq < $1 AND"
                             " (cardinality($4::text[]) = 0 OR state = ANY ($4::text[])) ORDER BY seq DESC LIMIT $2",
        /* each state's newest page, merged: every page uses jobs_state */
        [P_JOB_LIST_STATES] = "SELECT " JOB_COLS " FROM jobs WHERE seq IN (SELECT p.seq FROM"
                              " unnest($3::text[]) AS s (state) CROSS JOIN LATERAL (SELECT seq FROM jobs"
                              " WHERE jobs.state = s.state AND jobs.seq < $1 ORDER BY jobs.seq DESC"
                              " LIMIT $2) AS p) ORDER BY seq DESC LIMIT $2",
        [P_JOB_UPDATE] = "UPDATE jobs SET state = $3, started_at = $4, finished_at = $5, deadline_at = $6,"
                         " total = $7, pending = $8, running = $9, succeeded = $10, failed = $11,"
                         " skipped = $12, bytes = $13, per_source = CASE WHEN $17 THEN $14::jsonb ELSE per_source END,"
                         " per_source_rest = CASE WHEN $17 THEN $18::jsonb ELSE per_source_rest END,"
                         " per_source_total = CASE WHEN $17 THEN $19::bigint ELSE per_source_total END,"
                         " error_code = $15,"
                         " error_message = $16,"
                         " lease_owner = CASE WHEN $3 = 'running' THEN lease_owner END,"
                         " lease_until = CASE WHEN $3 = 'running' THEN lease_until END"
                         " WHERE id = $1 AND ($2::bigint = 0 OR lease_token = $2::bigint)",
        [P_JOB_DELETE] = "DELETE FROM jobs WHERE id = $1",
        [P_JOB_QUEUED] = "SELECT id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT $1",
        [P_JOB_COUNT] = "SELECT state, count(*) FROM jobs GROUP BY state",
        [P_JOB_PRUNE] = "DELETE FROM jobs WHERE state NOT IN ('queued', 'running', 'paused')"
                        " AND finished_at < $1",
        [P_ITEM_LIST] = "SELECT " ITEM_COLS " FROM items WHERE job_seq = $1 AND idx > $2"
                        " AND ($3::text[] IS NULL OR state = ANY ($3::text[])) ORDER BY idx LIMIT $4",
        [P_ITEM_UPDATE] = "UPDATE items SET state = $3, attempts = $4, http_status = $5, bytes = $6,"
                          " content_type = $7, path = $8, sha256 = $9, duration_ms = $10, speed_bps = $11,"
                          " error_code = $12, error_message = $13, node = $14, resumed_from = $15"
                          " WHERE job_seq = (SELECT seq FROM jobs WHERE id = $1) AND idx = $2",
        [P_ITEM_APPEND] =
                "WITH j AS (SELECT seq FROM jobs WHERE id = $1),"
                " i AS (INSERT INTO items (job_seq, " ITEM_COLS ") SELECT j.seq, u.* FROM j, "
                ITEM_ARRAYS("2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
                            "16", "17", "18") " AS u RETURNING 1)"
                " SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM i)",
        /* $1 node (NULL: none), $2 now. The statement sees the states
         * from before it, so the items' CTE takes the requeued jobs from
         * the jobs' CTE. */
        [P_RECOVER] =
                "WITH j AS (UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL"
                " WHERE state = 'running' AND (lease_owner IS NULL OR lease_owner = $1::text"
                " OR coalesce(lease_until, 0) < $2::bigint) RETURNING seq),"
                " i AS (UPDATE items SET state = 'pending' WHERE state = 'running' AND job_seq IN"
                " (SELECT seq FROM j UNION ALL SELECT seq FROM jobs WHERE state IN ('queued', 'paused')))"
                " SELECT count(*) FROM j",
};
/* clang-format on */

/* ---- the connection ---- */

static void quiet(void *arg, const char *message)
{
        (void)arg;
        (void)message;
}

/* What every connection sets, again after a reconnect. */
static int session_setup(struct pg *be)
{
        if (PQsetClientEncoding(be->conn, "UTF8") != 0)
                return PQstatus(be->conn) == CONNECTION_OK ? -EIO : -ECONNRESET;
        return pg_simple(be, be->async_commit ? "SET lock_timeout = " PG_LOCK_TIMEOUT_MS
                                                "; SET synchronous_commit = off"
                                              : "SET lock_timeout = " PG_LOCK_TIMEOUT_MS
                                                "; SET synchronous_commit = on");
}

int pg_ready(struct pg *be)
{
        int64_t now;
        int r;

        if (PQstatus(be->conn) == CONNECTION_OK)
                return 0;
        now = clock_mono_ms();
        if (be->batch || (be->last_reconnect_ms && now - be->last_reconnect_ms < PG_RECONNECT_EVERY_MS))
                return -ECONNRESET;
        be->last_reconnect_ms = now;
        PQreset(be->conn);
        if (PQstatus(be->conn) != CONNECTION_OK)
                return -ECONNRESET;
        memset(be->prepared, 0, sizeof(be->prepared));
        be->missed = true;
        r = session_setup(be);
        if (r == 0)
                r = pg_listen_again(be);
        return r;
}

int pg_simple(struct pg *be, const char *sql)
{
        PGresult *res;
        int r = pg_ready(be);

        if (r < 0)
                return r;
        res = PQexec(be->conn, sql);
        r = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK
                    ? 0
                    : pg_error(be, res);
        PQclear(res);
        return r;
}

int pg_exec(struct pg *be, int q, const char *sql, struct pg_params *p, PGresult **ret)
{
        char name[16];
        PGresult *res;
        int r;

        if (p && p->failed)
                return -ENOMEM;
        r = pg_ready(be);
        if (r < 0)
                return r;
        snprintf(name, sizeof(name), "hauld%d", q);
        if (!be->prepared[q]) {
                res = PQprepare(be->conn, name, sql, 0, NULL);
                r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_error(be, res);
                PQclear(res);
                if (r < 0)
                        return r;
                be->prepared[q] = true;
        }
        res = PQexecPrepared(be->conn, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
                r = pg_error(be, res);
                PQclear(res);
                return r;
        }
        *ret = res;
        return 0;
}

static int core_exec(struct pg *be, enum pg_query q, struct pg_params *p, PGresult **ret)
{
        return pg_exec(be, q, queries[q], p, ret);
}

/* Run q for its count of rows changed (PQcmdTuples). */
static int core_change(struct pg *be, enum pg_query q, struct pg_params *p, int64_t *ret)
{
        PGresult *res;
        int r = core_exec(be, q, p, &res);

        if (r < 0)
                return r;
        *ret = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return 0;
}

int pg_op_begin(struct pg *be, bool *ret_savepoint)
{
        if (be->batch) {
                int r = pg_simple(be, "SAVEPOINT op");
                if (r < 0)
                        return r;
        }
        *ret_savepoint = be->batch;
        return 0;
}

int pg_op_end(struct pg *be, bool savepoint, int r)
{
        if (!savepoint)
                return r;
        if (r == 0)
                return pg_simple(be, "RELEASE op");
        pg_simple(be, "ROLLBACK TO op");
        pg_simple(be, "RELEASE op");
        return r;
}

static int pg_begin(void *p)
{
        struct pg *be = p;
        int r;

        if (be->batch)
                return -EBUSY;
        r = pg_simple(be, "BEGIN");
        if (r == 0)
                be->batch = true;
        return r;
}

/* A batch that failed on the server is aborted there: COMMIT would only
 * roll it back. */
static int pg_commit(void *p)
{
        struct pg *be = p;
        PGresult *res;
        int r;

        if (!be->batch)
                return -EINVAL;
        be->batch = false;
        if (PQstatus(be->conn) != CONNECTION_OK)
                return -ECONNRESET;
        if (PQtransactionStatus(be->conn) == PQTRANS_INERROR) {
                pg_simple(be, "ROLLBACK");
                return -EIO;
        }
        res = PQexec(be->conn, "COMMIT");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
                r = pg_error(be, res);
        else
                r = strcmp(PQcmdStatus(res), "COMMIT") == 0 ? 0 : -EIO;
        PQclear(res);
        return r;
}

static int pg_rollback(void *p)
{
        struct pg *be = p;

        if (!be->batch)
                return 0;
        be->batch = false;
        if (PQstatus(be->conn) != CONNECTION_OK)
                return 0; /* the server rolled back when the connection went */
        return pg_simple(be, "ROLLBACK");
}

static bool pg_in_batch(void *p) { return ((struct pg *)p)->batch; }

/* ---- jobs ---- */

static int job_read(const PGresult *res, int row, const struct job_filter *f, struct job **ret)
{
        struct job *j = calloc(1, sizeof(*j));
        const char *id = PQgetvalue(res, row, JC_ID);
        bool oom = false;
        int r;

        if (!j)
                return -ENOMEM;
        r = job_state_from_string(PQgetvalue(res, row, JC_STATE));
        if (r < 0 || strlen(id) > JOB_ID_LEN) {
                r = -EIO;
                goto fail;
        }
        j->state = r;
        strcpy(j->id, id);
        if (f && f->known && job_state_is_terminal(j->state) &&
            f->known(j->id, pg_i64(res, row, JC_FINISHED), f->known_ud)) {
                j->stub = true;
                j->seq = pg_i64(res, row, JC_SEQ);
                j->finished_at = pg_i64(res, row, JC_FINISHED);
                *ret = j;
                return 0;
        }
        j->seq = pg_i64(res, row, JC_SEQ);
        j->max = (int)pg_i64(res, row, JC_MAX);
        j->timeout = strtod(PQgetvalue(res, row, JC_TIMEOUT), NULL);
        j->priority = (int)pg_i64(res, row, JC_PRIORITY);
        j->created_at = pg_i64(res, row, JC_CREATED);
        j->started_at = pg_i64(res, row, JC_STARTED);
        j->finished_at = pg_i64(res, row, JC_FINISHED);
        j->deadline_at = pg_i64(res, row, JC_DEADLINE);
        j->progress.total = pg_i64(res, row, JC_TOTAL);
        j->progress.pending = pg_i64(res, row, JC_PENDING);
        j->progress.running = pg_i64(res, row, JC_RUNNING);
        j->progress.succeeded = pg_i64(res, row, JC_SUCCEEDED);
        j->progress.failed = pg_i64(res, row, JC_FAILED);
        j->progress.skipped = pg_i64(res, row, JC_SKIPPED);
        j->progress.bytes = pg_i64(res, row, JC_BYTES);
        j->lease_token = pg_i64(res, row, JC_LEASE_TOKEN);
        j->lease_until = pg_i64(res, row, JC_LEASE_UNTIL);
        j->query = pg_str(res, row, JC_QUERY, &oom);
        j->label = pg_str(res, row, JC_LABEL, &oom);
        j->error.code = pg_str(res, row, JC_ERROR_CODE, &oom);
        j->error.message = pg_str(res, row, JC_ERROR_MESSAGE, &oom);
        j->idempotency_key = pg_str(res, row, JC_IDEMPOTENCY_KEY, &oom);
        j->request_hash = pg_str(res, row, JC_REQUEST_HASH, &oom);
        j->lease_owner = pg_str(res, row, JC_LEASE_OWNER, &oom);
        r = oom ? -ENOMEM : 0;
#define JSON_COL(c) (PQgetisnull(res, row, (c)) ? NULL : PQgetvalue(res, row, (c)))
        if (r == 0)
                r = store_json_decode_sources(JSON_COL(JC_SOURCES), &j->sources, &j->nsources);
        if (r == 0)
                r = store_json_decode_per_source(JSON_COL(JC_PER_SOURCE), &j->per_source, &j->nper_source);
        j->per_source_total = PQgetisnull(res, row, JC_PER_SOURCE_TOTAL)
                                      ? j->nper_source
                                      : (size_t)pg_i64(res, row, JC_PER_SOURCE_TOTAL);
        if (r == 0)
                r = store_json_decode_options(JSON_COL(JC_OPTIONS), &j->limits);
#undef JSON_COL
        if (r < 0)
                goto fail;
        *ret = j;
        return 0;
fail:
        job_free(j);
        return r;
}

/* The fields store_job_update writes, in its order. */
/* *rest: the rest of per_source, for the caller to add where its statement
 * wants it (store_json_encode_per_source_split()); NULL when none. */
static int params_job_mutable(struct pg_params *p, const struct job *j, bool with_per_source, char **rest)
{
        const struct progress *g = &j->progress;
        char *per_source = NULL;
        int r;

        if ((unsigned)j->state >= _JOB_STATE_MAX)
                return -EINVAL;
        r = with_per_source ? store_json_encode_per_source_split(j, &per_source, rest) : 0;
        if (r < 0)
                return r;
        pgp_str(p, job_state_to_string(j->state));
        pgp_time(p, j->started_at);
        pgp_time(p, j->finished_at);
        pgp_time(p, j->deadline_at);
        pgp_i64(p, g->total);
        pgp_i64(p, g->pending);
        pgp_i64(p, g->running);
        pgp_i64(p, g->succeeded);
        pgp_i64(p, g->failed);
        pgp_i64(p, g->skipped);
        pgp_i64(p, g->bytes);
        pgp_take(p, per_source);
        pgp_str(p, j->error.code);
        pgp_str(p, j->error.message);
        return 0;
}

/* The fields only the insert writes, $1..$11. */
static int params_job_fixed(struct pg_params *p, const struct job *j)
{
        char *sources = NULL, *options = NULL;
        int r;

        r = store_json_encode_sources(j, &sources);
        if (r == 0)
                r = store_json_encode_options(&j->limits, &options);
        if (r < 0) {
                free(sources);
                return r;
        }
        pgp_str(p, j->id);
        pgp_str(p, j->query);
        pgp_take(p, sources);
        pgp_i64(p, j->max);
        pgp_dbl(p, j->timeout);
        pgp_i64(p, j->priority);
        pgp_str(p, j->label);
        pgp_time(p, j->created_at);
        pgp_str(p, j->idempotency_key);
        pgp_str(p, j->request_hash);
        pgp_take(p, options);
        return 0;
}

static int cmp_int(const void *a, const void *b)
{
        int x = *(const int *)a, y = *(const int *)b;
        return (x > y) - (x < y);
}

/* Items with the same index would break the insert's statement (and a
 * batch around it) on the primary key: -EEXIST before sending. */
static int items_distinct(const struct item *items, size_t n)
{
        int *idx;
        int r = 0;

        if (n < 2)
                return 0;
        idx = malloc(n * sizeof(*idx));
        if (!idx)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                idx[i] = items[i].index;
        qsort(idx, n, sizeof(*idx), cmp_int);
        for (size_t i = 1; i < n && r == 0; i++)
                if (idx[i] == idx[i - 1])
                        r = -EEXIST;
        free(idx);
        return r;
}

/* The items as one array parameter per column of ITEM_COLS. */
static int params_items(struct pg_params *p, const struct item *items, size_t n)
{
        struct pg_array a[_IC_MAX];

        memset(a, 0, sizeof(a));
        for (size_t i = 0; i < n; i++) {
                const struct item *it = &items[i];
                if ((unsigned)it->state >= _ITEM_STATE_MAX || it->resumed_from < 0) {
                        for (int c = 0; c < _IC_MAX; c++)
                                free(pga_end(&a[c]));
                        return -EINVAL;
                }
                pga_i64(&a[IC_IDX], it->index);
                pga_str(&a[IC_SOURCE], it->source);
                pga_str(&a[IC_URL], it->url);
                pga_str(&a[IC_FILENAME], it->filename);
                pga_str(&a[IC_STATE], item_state_to_string(it->state));
                pga_i64(&a[IC_ATTEMPTS], it->attempts);
                pga_i64(&a[IC_HTTP_STATUS], it->http_status);
                pga_i64(&a[IC_BYTES], it->bytes);
                pga_str(&a[IC_CONTENT_TYPE], it->content_type);
                pga_str(&a[IC_PATH], it->path);
                pga_str(&a[IC_SHA256], it->sha256);
                pga_i64(&a[IC_DURATION_MS], it->duration_ms);
                pga_i64(&a[IC_SPEED_BPS], it->speed_bps);
                pga_str(&a[IC_ERROR_CODE], it->error.code);
                pga_str(&a[IC_ERROR_MESSAGE], it->error.message);
                pga_str(&a[IC_NODE], it->node);
                pga_i64(&a[IC_RESUMED_FROM], it->resumed_from);
        }
        for (int c = 0; c < _IC_MAX; c++) {
                char *s = pga_end(&a[c]);
                if (!s)
                        p->failed = true;
                pgp_take(p, s);
        }
        return 0;
}

static int pg_job_insert(void *vbe, struct job *job, const struct item *items, size_t nitems)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        PGresult *res = NULL;
        char *rest = NULL;
        int r;

        r = items_distinct(items, nitems);
        if (r == 0)
                r = params_job_fixed(&p, job);
        if (r == 0)
                r = params_job_mutable(&p, job, true, &rest);
        if (r == 0)
                r = params_items(&p, items, nitems);
        if (r == 0) {
                pgp_take(&p, rest); /* $43 */
                rest = NULL;
                pgp_i64(&p, (int64_t)job->nper_source); /* $44 */
        }
        free(rest);
        if (r == 0)
                r = core_exec(be, P_JOB_INSERT, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        /* no row: ON CONFLICT met a taken id or idempotency key */
        if (PQntuples(res) == 1)
                job->seq = pg_i64(res, 0, 0);
        else
                r = -EEXIST;
        PQclear(res);
        return r;
}

/* Look up by a text key and read at most one row: a job, or its seq. */
static int job_select(struct pg *be, enum pg_query q, const char *key, struct job **ret_job,
                      int64_t *ret_seq)
{
        struct pg_params p = {0};
        PGresult *res;
        int r;

        pgp_str(&p, key);
        r = core_exec(be, q, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                r = -ENOENT;
        else if (ret_job)
                r = job_read(res, 0, NULL, ret_job);
        else
                *ret_seq = pg_i64(res, 0, 0);
        PQclear(res);
        return r;
}

static int job_seq_of(struct pg *be, const char *id, int64_t *ret)
{
        return job_select(be, P_JOB_SEQ, id, NULL, ret);
}

static int pg_job_get(void *be, const char *id, struct job **ret)
{
        return job_select(be, P_JOB_GET, id, ret, NULL);
}

static int pg_job_per_source(void *vbe, const char *id, struct job_source **ret, size_t *ret_n)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        PGresult *res;
        int r;

        pgp_str(&p, id);
        r = core_exec(be, P_JOB_PER_SOURCE, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                r = -ENOENT;
        else
                r = store_json_decode_per_source_parts(PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0),
                                                       PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1),
                                                       ret, ret_n);
        PQclear(res);
        return r;
}

static int pg_job_find_idempotent(void *be, const char *key, struct job **ret)
{
        return job_select(be, P_JOB_BY_KEY, key, ret, NULL);
}

static int pg_job_list(void *vbe, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                       int64_t *ret_next_seq)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        struct job **jobs = NULL;
        PGresult *res;
        size_t n = 0;
        int64_t next = 0;
        int r, rows;

        pgp_i64(&p, f->before_seq > 0 ? f->before_seq : INT64_MAX);
        pgp_i64(&p, f->limit + 1);
        if (f->label)
                pgp_str(&p, f->label);
        if (f->states || f->label) {
                struct pg_array a = {0};
                for (int s = 0; s < _JOB_STATE_MAX; s++)
                        if (f->states & 1u << s)
                                pga_str(&a, job_state_to_string(s));
                char *lit = pga_end(&a);
                if (!lit)
                        p.failed = true;
                pgp_take(&p, lit);
        }
        r = core_exec(be,
                      f->label    ? P_JOB_LIST_LABEL
                      : f->states ? P_JOB_LIST_STATES
                                  : P_JOB_LIST,
                      &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        rows = PQntuples(res);
        jobs = calloc((size_t)f->limit, sizeof(*jobs));
        if (!jobs)
                r = -ENOMEM;
        for (int i = 0; r == 0 && i < rows; i++) {
                if (n == (size_t)f->limit) {
                        next = jobs[n - 1]->seq;
                        break;
                }
                r = job_read(res, i, f, &jobs[n]);
                if (r == 0)
                        n++;
        }
        PQclear(res);
        if (r < 0) {
                jobs_free(jobs, n);
                return r;
        }
        *ret = jobs;
        *ret_n = n;
        *ret_next_seq = next;
        return 0;
}

static int pg_job_update(void *vbe, const struct job *job, bool with_per_source)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        char *rest = NULL;
        int64_t n = 0;
        int r;

        pgp_str(&p, job->id);
        pgp_i64(&p, job->lease_token);
        r = params_job_mutable(&p, job, with_per_source, &rest);
        pgp_str(&p, with_per_source ? "true" : "false"); /* $17 */
        pgp_take(&p, rest);                              /* $18 */
        pgp_i64(&p, (int64_t)job->nper_source);          /* $19 */
        if (r == 0)
                r = core_change(be, P_JOB_UPDATE, &p, &n);
        pgp_clear(&p);
        if (r == 0 && n == 0)
                r = job->lease_token > 0 ? -ESTALE : -ENOENT;
        return r;
}

static int pg_job_delete(void *vbe, const char *id)
{
        struct pg_params p = {0};
        int64_t n = 0;
        int r;

        pgp_str(&p, id);
        r = core_change(vbe, P_JOB_DELETE, &p, &n);
        pgp_clear(&p);
        return r == 0 && n == 0 ? -ENOENT : r;
}

static int pg_job_next_queued(void *vbe, size_t limit, char (**ret_ids)[JOB_ID_LEN + 1], size_t *ret_n)
{
        struct pg_params p = {0};
        char(*ids)[JOB_ID_LEN + 1] = NULL;
        PGresult *res;
        int r, rows;

        if (limit > INT64_MAX)
                pgp_str(&p, NULL); /* LIMIT NULL: all */
        else
                pgp_i64(&p, (int64_t)limit);
        r = core_exec(vbe, P_JOB_QUEUED, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        rows = PQntuples(res);
        if (rows > 0 && !(ids = calloc((size_t)rows, sizeof(*ids))))
                r = -ENOMEM;
        for (int i = 0; r == 0 && i < rows; i++) {
                const char *id = PQgetvalue(res, i, 0);
                if (strlen(id) > JOB_ID_LEN)
                        r = -EIO;
                else
                        strcpy(ids[i], id);
        }
        PQclear(res);
        if (r < 0) {
                free(ids);
                return r;
        }
        *ret_ids = ids;
        *ret_n = (size_t)rows;
        return 0;
}

static int pg_job_count_by_state(void *vbe, int64_t counts[])
{
        int64_t c[_JOB_STATE_MAX] = {0};
        PGresult *res;
        int r;

        r = core_exec(vbe, P_JOB_COUNT, NULL, &res);
        if (r < 0)
                return r;
        for (int i = 0; r == 0 && i < PQntuples(res); i++) {
                int s = job_state_from_string(PQgetvalue(res, i, 0));
                if (s < 0)
                        r = -EIO;
                else
                        c[s] = pg_i64(res, i, 1);
        }
        PQclear(res);
        if (r < 0)
                return r;
        memcpy(counts, c, sizeof(c));
        return 0;
}

static int pg_job_prune(void *vbe, int64_t finished_before_ms, int64_t *ret_n)
{
        struct pg_params p = {0};
        int r;

        pgp_i64(&p, finished_before_ms);
        r = core_change(vbe, P_JOB_PRUNE, &p, ret_n);
        pgp_clear(&p);
        return r;
}

/* ---- items ---- */

static int item_read(const PGresult *res, int row, struct item *it)
{
        bool oom = false;
        int s = item_state_from_string(PQgetvalue(res, row, IC_STATE));

        if (s < 0)
                return -EIO;
        memset(it, 0, sizeof(*it));
        it->index = (int)pg_i64(res, row, IC_IDX);
        it->state = s;
        it->attempts = (int)pg_i64(res, row, IC_ATTEMPTS);
        it->http_status = (int)pg_i64(res, row, IC_HTTP_STATUS);
        it->bytes = pg_i64(res, row, IC_BYTES);
        it->duration_ms = pg_i64(res, row, IC_DURATION_MS);
        it->speed_bps = pg_i64(res, row, IC_SPEED_BPS);
        it->resumed_from = pg_i64(res, row, IC_RESUMED_FROM);
        it->source = pg_str(res, row, IC_SOURCE, &oom);
        it->url = pg_str(res, row, IC_URL, &oom);
        it->filename = pg_str(res, row, IC_FILENAME, &oom);
        it->content_type = pg_str(res, row, IC_CONTENT_TYPE, &oom);
        it->path = pg_str(res, row, IC_PATH, &oom);
        it->sha256 = pg_str(res, row, IC_SHA256, &oom);
        it->error.code = pg_str(res, row, IC_ERROR_CODE, &oom);
        it->error.message = pg_str(res, row, IC_ERROR_MESSAGE, &oom);
        it->node = pg_str(res, row, IC_NODE, &oom);
        if (oom) {
                item_clear(it);
                return -ENOMEM;
        }
        return 0;
}

/* Items of job_seq after index after, in the states of mask (0: all), at
 * most limit (-1: all). */
static int items_select(struct pg *be, int64_t job_seq, unsigned mask, int after, int limit,
                        struct item **ret, size_t *ret_n)
{
        struct pg_params p = {0};
        struct item *items = NULL;
        PGresult *res;
        size_t n = 0;
        int r, rows;

        pgp_i64(&p, job_seq);
        pgp_i64(&p, after);
        if (mask) {
                struct pg_array a = {0};
                for (int s = 0; s < _ITEM_STATE_MAX; s++)
                        if (mask & 1u << s)
                                pga_str(&a, item_state_to_string(s));
                char *lit = pga_end(&a);
                if (!lit)
                        p.failed = true;
                pgp_take(&p, lit);
        } else {
                pgp_str(&p, NULL);
        }
        if (limit < 0)
                pgp_str(&p, NULL);
        else
                pgp_i64(&p, limit);
        r = core_exec(be, P_ITEM_LIST, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        rows = PQntuples(res);
        if (rows > 0 && !(items = calloc((size_t)rows, sizeof(*items))))
                r = -ENOMEM;
        for (int i = 0; r == 0 && i < rows; i++) {
                r = item_read(res, i, &items[n]);
                if (r == 0)
                        n++;
        }
        PQclear(res);
        if (r < 0) {
                items_free(items, n);
                return r;
        }
        *ret = items;
        *ret_n = n;
        return 0;
}

static int pg_item_list(void *vbe, const char *job_id, const struct item_filter *f, struct item **ret,
                        size_t *ret_n, int *ret_next_index)
{
        struct item *items;
        int64_t seq;
        size_t n;
        int next = -1;
        int r;

        r = job_seq_of(vbe, job_id, &seq);
        if (r == 0)
                r = items_select(vbe, seq, f->states, f->after_index, f->limit + 1, &items, &n);
        if (r < 0)
                return r;
        if (n > (size_t)f->limit) {
                item_clear(&items[--n]);
                next = items[n - 1].index;
        }
        *ret = items;
        *ret_n = n;
        *ret_next_index = next;
        return 0;
}

static int pg_item_load(void *vbe, const char *job_id, struct item **ret, size_t *ret_n)
{
        int64_t seq;
        int r;

        r = job_seq_of(vbe, job_id, &seq);
        if (r < 0)
                return r;
        return items_select(vbe, seq, 0, -1, -1, ret, ret_n);
}

static int pg_item_update(void *vbe, const char *job_id, const struct item *it)
{
        struct pg_params p = {0};
        int64_t n = 0;
        int r;

        if ((unsigned)it->state >= _ITEM_STATE_MAX)
                return -EINVAL;
        pgp_str(&p, job_id);
        pgp_i64(&p, it->index);
        pgp_str(&p, item_state_to_string(it->state));
        pgp_i64(&p, it->attempts);
        pgp_i64(&p, it->http_status);
        pgp_i64(&p, it->bytes);
        pgp_str(&p, it->content_type);
        pgp_str(&p, it->path);
        pgp_str(&p, it->sha256);
        pgp_i64(&p, it->duration_ms);
        pgp_i64(&p, it->speed_bps);
        pgp_str(&p, it->error.code);
        pgp_str(&p, it->error.message);
        pgp_str(&p, it->node);
        pgp_i64(&p, it->resumed_from);
        r = core_change(vbe, P_ITEM_UPDATE, &p, &n);
        pgp_clear(&p);
        return r == 0 && n == 0 ? -ENOENT : r;
}

static int pg_item_append(void *vbe, const char *job_id, const struct item *items, size_t n)
{
        struct pg *be = vbe;
        struct pg_params p = {0};
        PGresult *res = NULL;
        bool sp = false;
        int r;

        r = items_distinct(items, n);
        if (r < 0)
                return r;
        pgp_str(&p, job_id);
        r = params_items(&p, items, n);
        if (r == 0)
                r = pg_op_begin(be, &sp);
        if (r < 0)
                goto out;
        r = core_exec(be, P_ITEM_APPEND, &p, &res);
        if (r == 0 && pg_i64(res, 0, 0) == 0)
                r = -ENOENT;
        PQclear(res);
        r = pg_op_end(be, sp, r);
out:
        pgp_clear(&p);
        return r;
}

static int pg_recover(void *vbe, const char *node, int64_t now_ms, int64_t *ret_jobs)
{
        struct pg_params p = {0};
        PGresult *res;
        int r;

        pgp_str(&p, node);
        pgp_i64(&p, now_ms);
        r = core_exec(vbe, P_RECOVER, &p, &res);
        pgp_clear(&p);
        if (r < 0)
                return r;
        *ret_jobs = pg_i64(res, 0, 0);
        PQclear(res);
        return 0;
}

static int pg_set_sync(void *vbe, bool each_commit)
{
        struct pg *be = vbe;
        int r = pg_simple(be, each_commit ? "SET synchronous_commit = on" : "SET synchronous_commit = off");

        if (r == 0)
                be->async_commit = !each_commit;
        return r;
}

/* ---- opening: the connection, the schema ---- */

/* One value of a query without parameters; -ENOENT when no row. */
static int query_i64(struct pg *be, const char *sql, int64_t *ret)
{
        PGresult *res = PQexec(be->conn, sql);
        int r = 0;

        if (PQresultStatus(res) != PGRES_TUPLES_OK)
                r = pg_error(be, res);
        else if (PQntuples(res) == 0)
                r = -ENOENT;
        else
                *ret = pg_i64(res, 0, 0);
        PQclear(res);
        return r;
}

/* The schema's version, 0 when it has no schema_migrations. */
static int schema_version(struct pg *be, int64_t *ret)
{
        int64_t exists = 0;
        int r;

        r = query_i64(be, "SELECT (to_regclass('schema_migrations') IS NOT NULL)::int", &exists);
        if (r < 0)
                return r;
        if (!exists) {
                *ret = 0;
                return 0;
        }
        return query_i64(be, "SELECT coalesce(max(version), 0) FROM schema_migrations", ret);
}

static int migration_apply(struct pg *be, int64_t version)
{
        char v[32], at[32];
        const char *values[] = {v, at};
        PGresult *res;
        int r;

        r = pg_simple(be, migrations[version - 1]);
        if (r < 0)
                return r;
        snprintf(v, sizeof(v), "%" PRId64, version);
        snprintf(at, sizeof(at), "%" PRId64, clock_wall_ms());
        res = PQexecParams(be->conn, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                           2, NULL, values, NULL, NULL, 0);
        r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pg_error(be, res);
        PQclear(res);
        return r;
}

/* In one transaction, under the schema's advisory lock (no lock timeout:
 * another node's migration may take its time). */
static int schema_migrate(struct pg *be)
{
        int64_t version = 0;
        int r;

        r = pg_simple(be, "BEGIN");
        if (r < 0)
                return r;
        r = pg_simple(be, "SET LOCAL lock_timeout = 0;"
                          "SELECT pg_advisory_xact_lock(" PG_LOCK_CLASS
                          ", hashtext(coalesce(current_schema(), '')))");
        if (r == 0)
                r = schema_version(be, &version);
        if (r == 0 && version == 0)
                r = pg_simple(be, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                  "version integer PRIMARY KEY, applied_at bigint NOT NULL)");
        if (r == 0 && version > SCHEMA_VERSION)
                r = -EPROTO;
        for (int64_t v = version + 1; r == 0 && v <= SCHEMA_VERSION; v++)
                r = migration_apply(be, v);
        if (r == 0)
                return pg_simple(be, "COMMIT");
        pg_simple(be, "ROLLBACK");
        return r;
}

static int schema_check(struct pg *be)
{
        int64_t version = 0;
        int r = schema_version(be, &version);

        if (r == 0 && version != SCHEMA_VERSION)
                r = -EPROTO;
        return r;
}

static void pg_close(void *vbe)
{
        struct pg *be = vbe;

        if (!be)
                return;
        PQfinish(be->conn);
        free(be);
}

/* location: the URL after "postgresql://" or "postgres://". hauld's
 * defaults come before the URL, so the URL's own parameters win. */
static int pg_open(const char *location, bool existing, void **ret_be)
{
        static const char *const keys[] = {"application_name",
                                           "connect_timeout",
                                           "keepalives_idle",
                                           "keepalives_interval",
                                           "keepalives_count",
                                           "dbname",
                                           NULL};
        const char *values[sizeof(keys) / sizeof(keys[0])] = {"hauld", PG_CONNECT_TIMEOUT_S, "30", "10",
                                                              "3"};
        struct pg *be;
        char *url = NULL;
        int r;

        be = calloc(1, sizeof(*be));
        if (!be || asprintf(&url, "postgresql://%s", location) < 0) {
                free(be);
                return -ENOMEM;
        }
        values[5] = url;
        be->conn = PQconnectdbParams(keys, values, 1);
        free(url);
        if (!be->conn) {
                r = -ENOMEM;
                goto fail;
        }
        PQsetNoticeProcessor(be->conn, quiet, NULL);
        if (PQstatus(be->conn) != CONNECTION_OK) {
                /* the server asked for a password, or refused the one given */
                r = PQconnectionNeedsPassword(be->conn) || PQconnectionUsedPassword(be->conn)
                            ? -EACCES
                            : -ECONNREFUSED;
                goto fail;
        }
        r = session_setup(be);
        if (r == 0)
                r = existing ? schema_check(be) : schema_migrate(be);
        if (r < 0)
                goto fail;
        *ret_be = be;
        return 0;
fail:
        pg_close(be);
        return r;
}

/* Does the server answer? An empty query is one round trip. */
static int pg_check(void *vbe)
{
        struct pg *be = vbe;
        PGresult *res;
        int r;

        if (PQstatus(be->conn) != CONNECTION_OK)
                return -ECONNRESET;
        res = PQexec(be->conn, "");
        r = PQresultStatus(res) == PGRES_EMPTY_QUERY ? 0 : -ECONNRESET;
        PQclear(res);
        return r;
}

const struct store_backend store_backend_pg = {
        .name = "postgresql",
        .prefix = "postgresql://",
        .prefix2 = "postgres://",
        .open = pg_open,
        .close = pg_close,
        .check = pg_check,
        .begin = pg_begin,
        .commit = pg_commit,
        .rollback = pg_rollback,
        .in_batch = pg_in_batch,
        .job_insert = pg_job_insert,
        .job_get = pg_job_get,
        .job_find_idempotent = pg_job_find_idempotent,
        .job_list = pg_job_list,
        .job_update = pg_job_update,
        .job_per_source = pg_job_per_source,
        .job_delete = pg_job_delete,
        .job_next_queued = pg_job_next_queued,
        .job_count_by_state = pg_job_count_by_state,
        .job_prune = pg_job_prune,
        .item_list = pg_item_list,
        .item_load = pg_item_load,
        .item_update = pg_item_update,
        .item_append = pg_item_append,
        .recover = pg_recover,
        .set_sync = pg_set_sync,
        .job_claim = pg_job_claim,
        .lease_renew = pg_lease_renew,
        .lease_take = pg_lease_take,
        .node_beat = pg_node_beat,
        .node_list = pg_node_list,
        .node_remove = pg_node_remove,
        .circuit_put = pg_circuit_put,
        .circuit_list = pg_circuit_list,
        .circuit_take_probe = pg_circuit_take_probe,
        .circuit_delete = pg_circuit_delete,
        .notify_fd = pg_notify_fd,
        .notify_drain = pg_notify_drain,
};

/* store_sqlite: the SQLite backend of the job table; this half holds the
 * connection, the schema, jobs and items, store_sqlite_cluster.c the
 * leases, nodes and circuits.
 *
 * One struct sq is one connection: WAL, synchronous=FULL (a commit that
 * returned survives power loss; the engine amortises it by batching in
 * store_begin/commit), foreign keys on, a 5 s busy timeout. Statements are
 * prepared once, on first use, and kept in sq.stmt[]; every use binds,
 * steps and resets, so nothing stays bound or open between calls.
 *
 * The schema is the list migrations[], applied in order at open, each in
 * one transaction with its row in `migrations`. A file written by a newer
 * hauld (a version past the end of the list) is refused with -EPROTO.
 *
 * A write of several statements runs in its own transaction, or in a
 * savepoint inside the caller's store_begin(), so a failed operation
 * leaves nothing behind either way (sq_op_begin/sq_op_end).
 *
 * In the file: times are INTEGER ms since the epoch, NULL for 0; states
 * are their names, so the file reads well in the sqlite3 shell and does
 * not depend on the order of the C enums; sources and per_source are JSON
 * arrays, options a JSON object (store_json.c). Strings that are not
 * UTF-8 are stored as they are in plain columns.
 *
 * The connection remembers the device and inode of its file: a file
 * deleted or replaced under it is reported by store_check() instead of
 * going on unseen (the connection would write to the unlinked inode). */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/fs.h"
#include "common/log.h"
#include "daemon/store_json.h"
#include "daemon/store_sqlite-internal.h"
#include "daemon/writegate.h"

#define SQ_BUSY_TIMEOUT_MS 5000
#define SQ_BUSY_RETRY_MS   10 /* between tries to turn a new file to WAL */
/* Page cache per connection. A 10,000-item job is about 2 MiB of pages;
 * past the cache SQLite spills dirty pages to the WAL mid-transaction. */
#define SQ_CACHE_KIB        "8192" /* the scheduler's connection: its jobs' items and the indexes */
#define SQ_CACHE_KIB_READER "1024" /* each of the API's and the intake's: a page cache each, 8 of them */

static const char *const migrations[] = {
        /* 1: jobs and items */
        "CREATE TABLE jobs ("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  id TEXT NOT NULL UNIQUE,"
        "  state TEXT NOT NULL,"
        "  query TEXT,"
        "  sources TEXT," /* JSON array of names; NULL: none */
        "  max INTEGER NOT NULL,"
        "  timeout REAL NOT NULL," /* s */
        "  priority INTEGER NOT NULL,"
        "  label TEXT,"
        "  created_at INTEGER, started_at INTEGER, finished_at INTEGER, deadline_at INTEGER,"
        "  total INTEGER NOT NULL, pending INTEGER NOT NULL, running INTEGER NOT NULL,"
        "  succeeded INTEGER NOT NULL, failed INTEGER NOT NULL, skipped INTEGER NOT NULL,"
        "  bytes INTEGER NOT NULL,"
        "  per_source TEXT," /* JSON array of struct job_source; NULL: none */
        "  error_code TEXT, error_message TEXT,"
        "  idempotency_key TEXT UNIQUE,"
        "  request_hash TEXT"
        ");"
        /* the scheduler: state = 'queued' ORDER BY priority DESC, seq */
        "CREATE INDEX jobs_sched ON jobs (state, priority DESC, seq);"
        /* listing by state: the rowid (seq) ends every index entry, so
         * this serves state = ? AND seq < ? ORDER BY seq DESC */
        "CREATE INDEX jobs_state ON jobs (state);"
        "CREATE TABLE items ("
        "  job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,"
        "  idx INTEGER NOT NULL,"
        "  source TEXT, url TEXT, filename TEXT,"
        "  state TEXT NOT NULL,"
        "  attempts INTEGER NOT NULL, http_status INTEGER NOT NULL, bytes INTEGER NOT NULL,"
        "  content_type TEXT, path TEXT, sha256 TEXT,"
        "  duration_ms INTEGER NOT NULL, speed_bps INTEGER NOT NULL,"
        "  error_code TEXT, error_message TEXT,"
        "  PRIMARY KEY (job_seq, idx)"
        ") WITHOUT ROWID;",
        /* 2: pruning by finished_at without scanning every job */
        "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;",
        /* 3: leases and per-job options; where an item's file is; the
         * token counter, nodes and shared circuits */
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT;"
        "ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE jobs ADD COLUMN lease_until INTEGER;"
        "ALTER TABLE jobs ADD COLUMN options TEXT;" /* JSON object of job_limits; NULL: none */
        "ALTER TABLE items ADD COLUMN node TEXT;"
        "ALTER TABLE items ADD COLUMN resumed_from INTEGER NOT NULL DEFAULT 0;"
        /* the last fencing token handed out, in one row */
        "CREATE TABLE lease_tokens (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);"
        "INSERT INTO lease_tokens (id, last) VALUES (1, 0);"
        "CREATE TABLE nodes ("
        "  id TEXT PRIMARY KEY,"
        "  started_at INTEGER NOT NULL, heartbeat_at INTEGER NOT NULL,"
        "  leases INTEGER NOT NULL,"
        "  api_url TEXT, version TEXT"
        ");"
        "CREATE TABLE circuits ("
        "  source TEXT PRIMARY KEY,"
        "  state TEXT NOT NULL,"
        "  consecutive_failures INTEGER NOT NULL, trips INTEGER NOT NULL,"
        "  opened_at INTEGER, retry_at INTEGER, open_ms INTEGER NOT NULL,"
        "  last_error TEXT,"
        "  probe_owner TEXT, probe_until INTEGER,"
        "  updated_at INTEGER NOT NULL"
        ");",
        /* 4: listing by label, newest first */
        "CREATE INDEX jobs_label ON jobs (label, seq);",
        /* 5: per_source in two parts: the head (per_source) is read with the
         * job, the rest only when asked for; rows from before keep all of it
         * in the head and a NULL total; per_source_rest is a JSON array,
         * NULL for none */
        ("ALTER TABLE jobs ADD COLUMN per_source_rest TEXT;"
         "ALTER TABLE jobs ADD COLUMN per_source_total INTEGER;"),
};
#define SCHEMA_VERSION ((int64_t)(sizeof(migrations) / sizeof(migrations[0])))

/* Column order of JOB_COLS; in the insert, parameter ?N is column N. */
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

#define Q_JOB_UPDATE_WITH_PER_SOURCE 30 /* Q_JOB_UPDATE's ?30 */
#define Q_JOB_PER_SOURCE_REST        31 /* per_source_rest, in the insert and the update */

/* Column order of ITEM_COLS; the insert binds job_seq as ?1 and column N as ?N+2. */
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
        IC_RESUMED_FROM
};
#define ITEM_COLS                                                                                           \
        "idx, source, url, filename, state, attempts, http_status, bytes, content_type, path, sha256, "     \
        "duration_ms, speed_bps, error_code, error_message, node, resumed_from"

/* One state's newest page for the filtered job list: ?1 before, ?2 limit. */
#define STATE_PAGE(p)                                                                                       \
        "SELECT seq FROM (SELECT seq FROM jobs WHERE state = " p " AND seq < ?1 "                           \
        "ORDER BY seq DESC LIMIT ?2)"
_Static_assert(_JOB_STATE_MAX == 8, "Q_JOB_LIST_STATES has one STATE_PAGE per job state");
_Static_assert(_ITEM_STATE_MAX == 5, "Q_ITEM_LIST has one parameter per item state");

/* (unformatted: clang-format would split the STATE_PAGE arguments) */
/* clang-format off */
static const char *const queries[_Q_CORE_MAX] = {
        [Q_BEGIN] = "BEGIN IMMEDIATE",
        [Q_COMMIT] = "COMMIT",
        [Q_ROLLBACK] = "ROLLBACK",
        [Q_SAVEPOINT] = "SAVEPOINT op",
        [Q_RELEASE] = "RELEASE op",
        [Q_ROLLBACK_TO] = "ROLLBACK TO op",
        /* a new job has no lease (?25..?27 unused) */
        [Q_JOB_INSERT] = "INSERT INTO jobs (" JOB_COLS ", per_source_rest) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                         " ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24,"
                         " NULL, 0, NULL, ?28, ?29, ?31)",
        [Q_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
        [Q_JOB_BY_KEY] = "SELECT " JOB_COLS " FROM jobs WHERE idempotency_key = ?1",
        [Q_JOB_SEQ] = "SELECT seq FROM jobs WHERE id = ?1",
        [Q_JOB_PER_SOURCE] = "SELECT per_source, per_source_rest FROM jobs WHERE id = ?1",
        [Q_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
        /* ?3 the label, ?4 ",state,state," or "" for any */
        [Q_JOB_LIST_LABEL] = "SELECT " JOB_COLS " FROM jobs WHERE label = ?3 AND seq < ?1 AND"
                             " (?4 = '' OR instr(?4, ',' || state || ',') > 0) ORDER BY seq DESC LIMIT ?2",
        [Q_JOB_LIST_STATES] = "SELECT " JOB_COLS " FROM jobs WHERE seq IN ("
                STATE_PAGE("?3") " UNION ALL " STATE_PAGE("?4") " UNION ALL " STATE_PAGE("?5") " UNION ALL "
                STATE_PAGE("?6") " UNION ALL " STATE_PAGE("?7") " UNION ALL " STATE_PAGE("?8") " UNION ALL "
                STATE_PAGE("?9") " UNION ALL " STATE_PAGE("?10") ") ORDER BY seq DESC LIMIT ?2",
        /* ?26: the fencing token, 0 for none; a state but running ends the lease;
         * ?30: 1 to write per_source, 0 to keep it */
        [Q_JOB_UPDATE] =
                "UPDATE jobs SET state = ?2, started_at = ?10, finished_at = ?11, deadline_at = ?12,"
                " total = ?13, pending = ?14, running = ?15, succeeded = ?16, failed = ?17,"
                " skipped = ?18, bytes = ?19, per_source = CASE WHEN ?30 THEN ?20 ELSE per_source END,"
                " per_source_rest = CASE WHEN ?30 THEN ?31 ELSE per_source_rest END,"
                " per_source_total = CASE WHEN ?30 THEN ?29 ELSE per_source_total END, error_code = ?21,"
                " error_message = ?22,"
                " lease_owner = CASE WHEN ?2 = 'running' THEN lease_owner END,"
                " lease_until = CASE WHEN ?2 = 'running' THEN lease_until END"
                " WHERE id = ?1 AND (?26 = 0 OR lease_token = ?26)",
        [Q_JOB_DELETE] = "DELETE FROM jobs WHERE id = ?1",
        [Q_JOB_QUEUED] = "SELECT id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT ?1",
        [Q_JOB_COUNT] = "SELECT state, count(*) FROM jobs GROUP BY state",
        [Q_JOB_PRUNE] = "DELETE FROM jobs WHERE state NOT IN ('queued', 'running', 'paused')"
                        " AND finished_at < ?1",
        [Q_ITEM_INSERT] = "INSERT INTO items (job_seq, " ITEM_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                          " ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        [Q_ITEM_LIST] = "SELECT " ITEM_COLS " FROM items WHERE job_seq = ?1 AND idx > ?2"
                        " AND (?3 = 0 OR state IN (?4, ?5, ?6, ?7, ?8)) ORDER BY idx LIMIT ?9",
        [Q_ITEM_UPDATE] = "UPDATE items SET state = ?3, attempts = ?4, http_status = ?5, bytes = ?6,"
                          " content_type = ?7, path = ?8, sha256 = ?9, duration_ms = ?10, speed_bps = ?11,"
                          " error_code = ?12, error_message = ?13, node = ?14, resumed_from = ?15"
                          " WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND idx = ?2",
        [Q_RECOVER_ITEMS] = ("UPDATE items SET state = 'pending' WHERE state = 'running' AND job_seq IN"
                             " (SELECT seq FROM jobs WHERE state IN ('queued', 'running', 'paused'))"),
        [Q_RECOVER_JOBS] = "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL"
                           " WHERE state = 'running'",
};
/* clang-format on */

int sq_error(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_FULL:
                return -ENOSPC; /* "No space left on device" says what to fix */
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CONSTRAINT:
                if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
                        return -EEXIST;
                return -EIO;
        default:
                return -EIO;
        }
}

int sq_prepare(struct sq *be, int q, const char *sql, sqlite3_stmt **ret)
{
        if (!be->stmt[q]) {
                int rc = sqlite3_prepare_v3(be->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &be->stmt[q], NULL);
                if (rc != SQLITE_OK)
                        return sq_error(rc);
        }
        *ret = be->stmt[q];
        return 0;
}

static int sq_stmt(struct sq *be, enum query q, sqlite3_stmt **ret)
{
        return sq_prepare(be, q, queries[q], ret);
}

void sq_stmt_done(sqlite3_stmt *st)
{
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
}

int sq_stmt_run(sqlite3_stmt *st)
{
        int rc = sqlite3_step(st);
        sq_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : sq_error(rc);
}

int sq_stmt_run_bound(sqlite3_stmt *st, int r)
{
        if (r < 0) {
                sq_stmt_done(st);
                return r;
        }
        return sq_stmt_run(st);
}

static int sq_run(struct sq *be, enum query q)
{
        sqlite3_stmt *st = NULL;
        int r = sq_stmt(be, q, &st);
        return r < 0 ? r : sq_stmt_run(st);
}

int sq_exec(struct sq *be, const char *sql) { return sq_error(sqlite3_exec(be->db, sql, NULL, NULL, NULL)); }

bool sq_in_transaction(struct sq *be) { return !sqlite3_get_autocommit(be->db); }

/* Leave the write gate once the transaction is over, however it ended
 * (COMMIT, ROLLBACK, or SQLite's own rollback after an I/O error). */
static void gate_sync(struct sq *be)
{
        if (be->gated && !sq_in_transaction(be)) {
                be->gated = false;
                writegate_leave(be->gate);
        }
}

/* BEGIN IMMEDIATE behind this process's earlier writers of the file. */
static int begin_write(struct sq *be)
{
        if (be->gate) {
                if (writegate_enter(be->gate, SQ_BUSY_TIMEOUT_MS) < 0)
                        return -EBUSY;
                be->gated = true;
        }
        int r = sq_run(be, Q_BEGIN);
        gate_sync(be);
        return r;
}

int sq_op_begin(struct sq *be, bool *ret_own)
{
        bool own = !sq_in_transaction(be);
        int r = own ? begin_write(be) : sq_run(be, Q_SAVEPOINT);
        if (r < 0)
                return r;
        *ret_own = own;
        return 0;
}

/* Undoing can fail when SQLite already rolled back on its own (I/O error,
 * full disk): nothing is left to undo then. */
int sq_op_end(struct sq *be, bool own, int r)
{
        if (r == 0) {
                r = sq_run(be, own ? Q_COMMIT : Q_RELEASE);
                gate_sync(be);
                if (r == 0)
                        return 0;
        }
        if (own) {
                sq_run(be, Q_ROLLBACK);
                gate_sync(be);
        } else {
                sq_run(be, Q_ROLLBACK_TO);
                sq_run(be, Q_RELEASE);
        }
        return r;
}

int sq_bind_str(sqlite3_stmt *st, int i, const char *s)
{
        return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

int sq_bind_time(sqlite3_stmt *st, int i, int64_t ms)
{
        return ms ? sqlite3_bind_int64(st, i, ms) : sqlite3_bind_null(st, i);
}

int sq_bind_failed(int rc) { return rc == SQLITE_OK ? 0 : rc == SQLITE_NOMEM ? -ENOMEM : -EIO; }

char *sq_col_str(sqlite3_stmt *st, int i, bool *oom)
{
        const unsigned char *t;
        char *s;

        if (sqlite3_column_type(st, i) == SQLITE_NULL)
                return NULL;
        t = sqlite3_column_text(st, i);
        s = t ? strdup((const char *)t) : NULL;
        if (!s)
                *oom = true;
        return s;
}

const char *sq_col_text(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return t ? (const char *)t : "";
}

/* Jobs: rows to structs and back. */

static int job_read(sqlite3_stmt *st, const struct job_filter *f, struct job **ret)
{
        struct job *j = calloc(1, sizeof(*j));
        const char *id = sq_col_text(st, JC_ID);
        bool oom = false;
        int r;

        if (!j)
                return -ENOMEM;
        r = job_state_from_string(sq_col_text(st, JC_STATE));
        if (r < 0 || strlen(id) > JOB_ID_LEN) {
                r = -EIO;
                goto fail;
        }
        j->state = r;
        strcpy(j->id, id);
        if (f && f->known && job_state_is_terminal(j->state) &&
            f->known(j->id, sqlite3_column_int64(st, JC_FINISHED), f->known_ud)) {
                j->stub = true;
                j->seq = sqlite3_column_int64(st, JC_SEQ);
                j->finished_at = sqlite3_column_int64(st, JC_FINISHED);
                *ret = j;
                return 0;
        }
        j->seq = sqlite3_column_int64(st, JC_SEQ);
        j->max = sqlite3_column_int(st, JC_MAX);
        j->timeout = sqlite3_column_double(st, JC_TIMEOUT);
        j->priority = sqlite3_column_int(st, JC_PRIORITY);
        j->created_at = sqlite3_column_int64(st, JC_CREATED);
        j->started_at = sqlite3_column_int64(st, JC_STARTED);
        j->finished_at = sqlite3_column_int64(st, JC_FINISHED);
        j->deadline_at = sqlite3_column_int64(st, JC_DEADLINE);
        j->progress.total = sqlite3_column_int64(st, JC_TOTAL);
        j->progress.pending = sqlite3_column_int64(st, JC_PENDING);
        j->progress.running = sqlite3_column_int64(st, JC_RUNNING);
        j->progress.succeeded = sqlite3_column_int64(st, JC_SUCCEEDED);
        j->progress.failed = sqlite3_column_int64(st, JC_FAILED);
        j->progress.skipped = sqlite3_column_int64(st, JC_SKIPPED);
        j->progress.bytes = sqlite3_column_int64(st, JC_BYTES);
        j->query = sq_col_str(st, JC_QUERY, &oom);
        j->label = sq_col_str(st, JC_LABEL, &oom);
        j->error.code = sq_col_str(st, JC_ERROR_CODE, &oom);
        j->error.message = sq_col_str(st, JC_ERROR_MESSAGE, &oom);
        j->idempotency_key = sq_col_str(st, JC_IDEMPOTENCY_KEY, &oom);
        j->request_hash = sq_col_str(st, JC_REQUEST_HASH, &oom);
        j->lease_owner = sq_col_str(st, JC_LEASE_OWNER, &oom);
        j->lease_token = sqlite3_column_int64(st, JC_LEASE_TOKEN);
        j->lease_until = sqlite3_column_int64(st, JC_LEASE_UNTIL);
        r = oom ? -ENOMEM : 0;
        if (r == 0)
                r = store_json_decode_sources((const char *)sqlite3_column_text(st, JC_SOURCES), &j->sources,
                                              &j->nsources);
        if (r == 0)
                r = store_json_decode_per_source((const char *)sqlite3_column_text(st, JC_PER_SOURCE),
                                                 &j->per_source, &j->nper_source);
        j->per_source_total = sqlite3_column_type(st, JC_PER_SOURCE_TOTAL) == SQLITE_NULL
                                      ? j->nper_source
                                      : (size_t)sqlite3_column_int64(st, JC_PER_SOURCE_TOTAL);
        if (r == 0)
                r = store_json_decode_options((const char *)sqlite3_column_text(st, JC_OPTIONS), &j->limits);
        if (r < 0)
                goto fail;
        *ret = j;
        return 0;
fail:
        job_free(j);
        return r;
}

/* The fields store_job_update writes: ?2, ?10..?22, and per_source's
 * total (?29) and rest (?31). */
static int bind_job_mutable(sqlite3_stmt *st, const struct job *j, const char *head, const char *rest)
{
        const struct progress *p = &j->progress;
        int rc;

        if ((unsigned)j->state >= _JOB_STATE_MAX)
                return -EINVAL;
        rc = sqlite3_bind_text(st, JC_STATE, job_state_to_string(j->state), -1, SQLITE_STATIC);
        rc |= sq_bind_time(st, JC_STARTED, j->started_at);
        rc |= sq_bind_time(st, JC_FINISHED, j->finished_at);
        rc |= sq_bind_time(st, JC_DEADLINE, j->deadline_at);
        rc |= sqlite3_bind_int64(st, JC_TOTAL, p->total);
        rc |= sqlite3_bind_int64(st, JC_PENDING, p->pending);
        rc |= sqlite3_bind_int64(st, JC_RUNNING, p->running);
        rc |= sqlite3_bind_int64(st, JC_SUCCEEDED, p->succeeded);
        rc |= sqlite3_bind_int64(st, JC_FAILED, p->failed);
        rc |= sqlite3_bind_int64(st, JC_SKIPPED, p->skipped);
        rc |= sqlite3_bind_int64(st, JC_BYTES, p->bytes);
        rc |= sq_bind_str(st, JC_PER_SOURCE, head);
        rc |= sqlite3_bind_int64(st, JC_PER_SOURCE_TOTAL, (int64_t)j->nper_source);
        rc |= sq_bind_str(st, Q_JOB_PER_SOURCE_REST, rest);
        rc |= sq_bind_str(st, JC_ERROR_CODE, j->error.code);
        rc |= sq_bind_str(st, JC_ERROR_MESSAGE, j->error.message);
        return sq_bind_failed(rc);
}

/* The fields only the insert writes. */
static int bind_job_fixed(sqlite3_stmt *st, const struct job *j, const char *sources, const char *options)
{
        int rc;

        rc = sqlite3_bind_text(st, JC_ID, j->id, -1, SQLITE_STATIC);
        rc |= sq_bind_str(st, JC_QUERY, j->query);
        rc |= sq_bind_str(st, JC_SOURCES, sources);
        rc |= sqlite3_bind_int(st, JC_MAX, j->max);
        rc |= sqlite3_bind_double(st, JC_TIMEOUT, j->timeout);
        rc |= sqlite3_bind_int(st, JC_PRIORITY, j->priority);
        rc |= sq_bind_str(st, JC_LABEL, j->label);
        rc |= sq_bind_time(st, JC_CREATED, j->created_at);
        rc |= sq_bind_str(st, JC_IDEMPOTENCY_KEY, j->idempotency_key);
        rc |= sq_bind_str(st, JC_REQUEST_HASH, j->request_hash);
        rc |= sq_bind_str(st, JC_OPTIONS, options);
        return sq_bind_failed(rc);
}

/* Items: rows to structs and back. */

static int item_read(sqlite3_stmt *st, struct item *it)
{
        bool oom = false;
        int s = item_state_from_string(sq_col_text(st, IC_STATE));

        if (s < 0)
                return -EIO;
        memset(it, 0, sizeof(*it));
        it->index = sqlite3_column_int(st, IC_IDX);
        it->state = s;
        it->attempts = sqlite3_column_int(st, IC_ATTEMPTS);
        it->http_status = sqlite3_column_int(st, IC_HTTP_STATUS);
        it->bytes = sqlite3_column_int64(st, IC_BYTES);
        it->duration_ms = sqlite3_column_int64(st, IC_DURATION_MS);
        it->speed_bps = sqlite3_column_int64(st, IC_SPEED_BPS);
        it->source = sq_col_str(st, IC_SOURCE, &oom);
        it->url = sq_col_str(st, IC_URL, &oom);
        it->filename = sq_col_str(st, IC_FILENAME, &oom);
        it->content_type = sq_col_str(st, IC_CONTENT_TYPE, &oom);
        it->path = sq_col_str(st, IC_PATH, &oom);
        it->sha256 = sq_col_str(st, IC_SHA256, &oom);
        it->error.code = sq_col_str(st, IC_ERROR_CODE, &oom);
        it->error.message = sq_col_str(st, IC_ERROR_MESSAGE, &oom);
        it->node = sq_col_str(st, IC_NODE, &oom);
        it->resumed_from = sqlite3_column_int64(st, IC_RESUMED_FROM);
        if (oom) {
                item_clear(it);
                return -ENOMEM;
        }
        return 0;
}

/* state .. resumed_from as ?first .. ?first+12 */
static int bind_item_mutable(sqlite3_stmt *st, int first, const struct item *it)
{
        int rc;

        if ((unsigned)it->state >= _ITEM_STATE_MAX)
                return -EINVAL;
        rc = sqlite3_bind_text(st, first, item_state_to_string(it->state), -1, SQLITE_STATIC);
        rc |= sqlite3_bind_int(st, first + 1, it->attempts);
        rc |= sqlite3_bind_int(st, first + 2, it->http_status);
        rc |= sqlite3_bind_int64(st, first + 3, it->bytes);
        rc |= sq_bind_str(st, first + 4, it->content_type);
        rc |= sq_bind_str(st, first + 5, it->path);
        rc |= sq_bind_str(st, first + 6, it->sha256);
        rc |= sqlite3_bind_int64(st, first + 7, it->duration_ms);
        rc |= sqlite3_bind_int64(st, first + 8, it->speed_bps);
        rc |= sq_bind_str(st, first + 9, it->error.code);
        rc |= sq_bind_str(st, first + 10, it->error.message);
        rc |= sq_bind_str(st, first + 11, it->node);
        rc |= sqlite3_bind_int64(st, first + 12, it->resumed_from);
        return sq_bind_failed(rc);
}

static int item_insert_row(struct sq *be, int64_t job_seq, const struct item *it)
{
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = sq_stmt(be, Q_ITEM_INSERT, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_int64(st, 1, job_seq);
        rc |= sqlite3_bind_int(st, 2 + IC_IDX, it->index);
        rc |= sq_bind_str(st, 2 + IC_SOURCE, it->source);
        rc |= sq_bind_str(st, 2 + IC_URL, it->url);
        rc |= sq_bind_str(st, 2 + IC_FILENAME, it->filename);
        r = sq_bind_failed(rc);
        if (r == 0)
                r = bind_item_mutable(st, 2 + IC_STATE, it);
        return sq_stmt_run_bound(st, r);
}

static int items_insert(struct sq *be, int64_t job_seq, const struct item *items, size_t n)
{
        int r = 0;

        for (size_t i = 0; r == 0 && i < n; i++)
                r = item_insert_row(be, job_seq, &items[i]);
        return r;
}

/* Look up by a text key and read at most one row: a job, or its seq. */
int sq_stmt_row(sqlite3_stmt *st, const char *key)
{
        int r = sq_bind_failed(sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC));
        if (r < 0)
                return r;
        int rc = sqlite3_step(st);
        return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : sq_error(rc);
}

static int job_select(struct sq *be, enum query q, const char *key, struct job **ret_job, int64_t *ret_seq)
{
        sqlite3_stmt *st = NULL;
        int r = sq_stmt(be, q, &st);

        if (r < 0)
                return r;
        r = sq_stmt_row(st, key);
        if (r == 0 && ret_job)
                r = job_read(st, NULL, ret_job);
        else if (r == 0)
                *ret_seq = sqlite3_column_int64(st, 0);
        sq_stmt_done(st);
        return r;
}

static int job_seq_of(struct sq *be, const char *id, int64_t *ret)
{
        return job_select(be, Q_JOB_SEQ, id, NULL, ret);
}

/* Backend operations. */

static int sq_begin(void *p)
{
        struct sq *be = p;
        return sq_in_transaction(be) ? -EBUSY : begin_write(be);
}

static int sq_commit(void *p)
{
        struct sq *be = p;
        int r = sq_in_transaction(be) ? sq_run(be, Q_COMMIT) : -EINVAL;
        gate_sync(be);
        return r;
}

/* Also fine when SQLite already rolled back on its own. */
static int sq_rollback(void *p)
{
        struct sq *be = p;
        int r = sq_in_transaction(be) ? sq_run(be, Q_ROLLBACK) : 0;
        gate_sync(be);
        return r;
}

/* JSON text of the job's list and options columns (NULL: none). */
struct job_json {
        char *sources, *per_source, *per_source_rest, *options;
};

static int job_json_encode(const struct job *job, struct job_json *ret)
{
        struct job_json t = {0};
        int r;

        r = store_json_encode_sources(job, &t.sources);
        if (r == 0)
                r = store_json_encode_per_source_split(job, &t.per_source, &t.per_source_rest);
        if (r == 0)
                r = store_json_encode_options(&job->limits, &t.options);
        if (r < 0) {
                free(t.sources);
                free(t.per_source);
                free(t.per_source_rest);
                return r;
        }
        *ret = t;
        return 0;
}

static void job_json_clear(struct job_json *t)
{
        free(t->sources);
        free(t->per_source);
        free(t->per_source_rest);
        free(t->options);
}

static int job_insert_row(struct sq *be, const struct job *job, const struct job_json *t)
{
        sqlite3_stmt *st = NULL;
        int r;

        r = sq_stmt(be, Q_JOB_INSERT, &st);
        if (r < 0)
                return r;
        r = bind_job_fixed(st, job, t->sources, t->options);
        if (r == 0)
                r = bind_job_mutable(st, job, t->per_source, t->per_source_rest);
        return sq_stmt_run_bound(st, r);
}

static int sq_job_insert(void *p, struct job *job, const struct item *items, size_t nitems)
{
        struct sq *be = p;
        struct job_json t;
        int64_t seq = 0;
        bool own = false;
        int r;

        r = job_json_encode(job, &t);
        if (r < 0)
                return r;
        r = sq_op_begin(be, &own);
        if (r < 0)
                goto out;
        r = job_insert_row(be, job, &t);
        if (r == 0) {
                seq = sqlite3_last_insert_rowid(be->db);
                r = items_insert(be, seq, items, nitems);
        }
        r = sq_op_end(be, own, r);
        if (r == 0)
                job->seq = seq;
out:
        job_json_clear(&t);
        return r;
}

static int sq_job_get(void *p, const char *id, struct job **ret)
{
        return job_select(p, Q_JOB_GET, id, ret, NULL);
}

static int sq_job_per_source(void *p, const char *id, struct job_source **ret, size_t *ret_n)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r = sq_stmt(be, Q_JOB_PER_SOURCE, &st);

        if (r < 0)
                return r;
        r = sq_stmt_row(st, id);
        if (r == 0)
                r = store_json_decode_per_source_parts((const char *)sqlite3_column_text(st, 0),
                                                       (const char *)sqlite3_column_text(st, 1), ret, ret_n);
        sq_stmt_done(st);
        return r;
}

static int sq_job_find_idempotent(void *p, const char *key, struct job **ret)
{
        return job_select(p, Q_JOB_BY_KEY, key, ret, NULL);
}

static int sq_job_list(void *p, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                       int64_t *ret_next_seq)
{
        struct sq *be = p;
        struct job **jobs = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0;
        int64_t next = 0;
        int r, rc = SQLITE_DONE;

        r = sq_stmt(be, f->label ? Q_JOB_LIST_LABEL : f->states ? Q_JOB_LIST_STATES : Q_JOB_LIST, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_int64(st, 1, f->before_seq > 0 ? f->before_seq : INT64_MAX);
        rc |= sqlite3_bind_int(st, 2, f->limit + 1);
        if (f->label) {
                char set[160] = ","; /* ",queued,running," */
                for (int s = 0; f->states && s < _JOB_STATE_MAX; s++)
                        if (f->states & 1u << s)
                                snprintf(set + strlen(set), sizeof(set) - strlen(set), "%s,",
                                         job_state_to_string(s));
                rc |= sq_bind_str(st, 3, f->label);
                rc |= sqlite3_bind_text(st, 4, f->states ? set : "", -1, SQLITE_TRANSIENT);
        }
        for (int s = 0; !f->label && f->states && s < _JOB_STATE_MAX; s++)
                rc |= sq_bind_str(st, 3 + s, f->states & 1u << s ? job_state_to_string(s) : NULL);
        r = sq_bind_failed(rc);
        jobs = calloc((size_t)f->limit, sizeof(*jobs));
        if (r == 0 && !jobs)
                r = -ENOMEM;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == (size_t)f->limit) {
                        next = jobs[n - 1]->seq;
                        break;
                }
                r = job_read(st, f, &jobs[n]);
                if (r == 0)
                        n++;
        }
        if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0)
                goto fail;
        *ret = jobs;
        *ret_n = n;
        *ret_next_seq = next;
        return 0;
fail:
        jobs_free(jobs, n);
        return r;
}

static int sq_job_update(void *p, const struct job *job, bool with_per_source)
{
        struct sq *be = p;
        char *head = NULL, *rest = NULL;
        sqlite3_stmt *st = NULL;
        int r;

        r = sq_stmt(be, Q_JOB_UPDATE, &st);
        if (r == 0 && with_per_source)
                r = store_json_encode_per_source_split(job, &head, &rest);
        if (r < 0)
                return r;
        r = sq_bind_failed(sqlite3_bind_text(st, JC_ID, job->id, -1, SQLITE_STATIC) |
                           sqlite3_bind_int64(st, JC_LEASE_TOKEN, job->lease_token) |
                           sqlite3_bind_int(st, Q_JOB_UPDATE_WITH_PER_SOURCE, with_per_source));
        if (r == 0)
                r = bind_job_mutable(st, job, head, rest);
        r = sq_stmt_run_bound(st, r);
        if (r == 0 && sqlite3_changes(be->db) == 0)
                r = job->lease_token > 0 ? -ESTALE : -ENOENT;
        free(head);
        free(rest);
        return r;
}

static int sq_job_delete(void *p, const char *id)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r;

        r = sq_stmt(be, Q_JOB_DELETE, &st);
        if (r < 0)
                return r;
        r = sq_bind_failed(sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC));
        r = sq_stmt_run_bound(st, r);
        if (r == 0 && sqlite3_changes(be->db) == 0)
                r = -ENOENT;
        return r;
}

static int sq_job_next_queued(void *p, size_t limit, char (**ret_ids)[JOB_ID_LEN + 1], size_t *ret_n)
{
        struct sq *be = p;
        char(*ids)[JOB_ID_LEN + 1] = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0, cap = 0;
        int r, rc = SQLITE_DONE;

        r = sq_stmt(be, Q_JOB_QUEUED, &st);
        if (r < 0)
                return r;
        /* a limit past INT64_MAX binds as -1: no limit */
        r = sq_bind_failed(sqlite3_bind_int64(st, 1, (int64_t)limit));
        while (r == 0 && n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *id = sq_col_text(st, 0);
                if (n == cap) {
                        size_t ncap = cap ? 2 * cap : 16;
                        char(*v)[JOB_ID_LEN + 1] = realloc(ids, ncap * sizeof(*ids));
                        if (!v) {
                                r = -ENOMEM;
                                break;
                        }
                        ids = v;
                        cap = ncap;
                }
                if (strlen(id) > JOB_ID_LEN)
                        r = -EIO;
                else
                        strcpy(ids[n++], id);
        }
        if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0) {
                free(ids);
                return r;
        }
        *ret_ids = ids;
        *ret_n = n;
        return 0;
}

static int sq_job_count_by_state(void *p, int64_t counts[])
{
        struct sq *be = p;
        int64_t c[_JOB_STATE_MAX] = {0};
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = sq_stmt(be, Q_JOB_COUNT, &st);
        if (r < 0)
                return r;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                int s = job_state_from_string(sq_col_text(st, 0));
                if (s < 0)
                        r = -EIO;
                else
                        c[s] = sqlite3_column_int64(st, 1);
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0)
                return r;
        memcpy(counts, c, sizeof(c));
        return 0;
}

static int sq_job_prune(void *p, int64_t finished_before_ms, int64_t *ret_n)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r;

        r = sq_stmt(be, Q_JOB_PRUNE, &st);
        if (r < 0)
                return r;
        r = sq_bind_failed(sqlite3_bind_int64(st, 1, finished_before_ms));
        r = sq_stmt_run_bound(st, r);
        if (r < 0)
                return r;
        *ret_n = sqlite3_changes(be->db);
        return 0;
}

/* Items of job_seq after index after, in the states of mask (0: all), at
 * most limit (-1: all). */
static int items_select(struct sq *be, int64_t job_seq, unsigned mask, int after, int limit,
                        struct item **ret, size_t *ret_n)
{
        struct item *items = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0, cap = 0;
        int r, rc;

        r = sq_stmt(be, Q_ITEM_LIST, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_int64(st, 1, job_seq);
        rc |= sqlite3_bind_int(st, 2, after);
        rc |= sqlite3_bind_int(st, 3, (int)mask);
        for (int s = 0; s < _ITEM_STATE_MAX; s++)
                rc |= sq_bind_str(st, 4 + s, mask & 1u << s ? item_state_to_string(s) : NULL);
        rc |= sqlite3_bind_int(st, 9, limit);
        r = sq_bind_failed(rc);
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        size_t ncap = cap ? 2 * cap : 64;
                        struct item *v = realloc(items, ncap * sizeof(*v));
                        if (!v) {
                                r = -ENOMEM;
                                break;
                        }
                        items = v;
                        cap = ncap;
                }
                r = item_read(st, &items[n]);
                if (r == 0)
                        n++;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_error(rc);
        sq_stmt_done(st);
        if (r < 0) {
                items_free(items, n);
                return r;
        }
        *ret = items;
        *ret_n = n;
        return 0;
}

static int sq_item_list(void *p, const char *job_id, const struct item_filter *f, struct item **ret,
                        size_t *ret_n, int *ret_next_index)
{
        struct sq *be = p;
        struct item *items;
        int64_t seq;
        size_t n;
        int next = -1;
        int r;

        r = job_seq_of(be, job_id, &seq);
        if (r == 0)
                r = items_select(be, seq, f->states, f->after_index, f->limit + 1, &items, &n);
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

static int sq_item_load(void *p, const char *job_id, struct item **ret, size_t *ret_n)
{
        struct sq *be = p;
        int64_t seq;
        int r;

        r = job_seq_of(be, job_id, &seq);
        if (r < 0)
                return r;
        return items_select(be, seq, 0, -1, -1, ret, ret_n);
}

static int sq_item_update(void *p, const char *job_id, const struct item *it)
{
        struct sq *be = p;
        sqlite3_stmt *st = NULL;
        int r, rc;

        r = sq_stmt(be, Q_ITEM_UPDATE, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_text(st, 1, job_id, -1, SQLITE_STATIC);
        rc |= sqlite3_bind_int(st, 2, it->index);
        r = sq_bind_failed(rc);
        if (r == 0)
                r = bind_item_mutable(st, 3, it);
        r = sq_stmt_run_bound(st, r);
        if (r == 0 && sqlite3_changes(be->db) == 0)
                r = -ENOENT;
        return r;
}

static int sq_item_append(void *p, const char *job_id, const struct item *items, size_t n)
{
        struct sq *be = p;
        int64_t seq;
        bool own = false;
        int r;

        r = sq_op_begin(be, &own);
        if (r < 0)
                return r;
        r = job_seq_of(be, job_id, &seq);
        if (r == 0)
                r = items_insert(be, seq, items, n);
        return sq_op_end(be, own, r);
}

/* A file is one node's: every running job is requeued, whoever's lease. */
static int sq_recover(void *p, const char *node, int64_t now_ms, int64_t *ret_jobs)
{
        struct sq *be = p;
        int64_t n = 0;
        bool own = false;
        int r;

        r = sq_op_begin(be, &own);
        if (r < 0)
                return r;
        /* items first: the job states still say which jobs were active */
        r = sq_run(be, Q_RECOVER_ITEMS);
        if (r == 0)
                r = sq_run(be, Q_RECOVER_JOBS);
        if (r == 0)
                n = sqlite3_changes(be->db);
        r = sq_op_end(be, own, r);
        if (r < 0)
                return r;
        *ret_jobs = n;
        return 0;
}

/* Opening: the file, the connection settings, the schema. */

static int schema_version(struct sq *be, int64_t *ret)
{
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(be->db, "SELECT coalesce(max(version), 0) FROM migrations", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sq_error(rc);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 0 : sq_error(rc);
}

static int migration_apply(struct sq *be, int64_t version)
{
        char *sql;
        int r;

        r = sq_exec(be, migrations[version - 1]);
        if (r < 0)
                return r;
        sql = sqlite3_mprintf("INSERT INTO migrations (version, applied_at) VALUES (%lld, %lld)",
                              (long long)version, (long long)clock_wall_ms());
        if (!sql)
                return -ENOMEM;
        r = sq_exec(be, sql);
        sqlite3_free(sql);
        return r;
}

static int schema_migrate(struct sq *be)
{
        int64_t version = 0;
        int r;

        r = sq_exec(be, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = sq_exec(be, "CREATE TABLE IF NOT EXISTS migrations ("
                        "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
        if (r == 0)
                r = schema_version(be, &version);
        if (r == 0 && version > SCHEMA_VERSION)
                r = -EPROTO;
        for (int64_t v = version + 1; r == 0 && v <= SCHEMA_VERSION; v++)
                r = migration_apply(be, v);
        if (r == 0)
                return sq_exec(be, "COMMIT");
        sq_exec(be, "ROLLBACK");
        return r;
}

/* For store_open_existing(): the schema must be this build's, as it is. */
static int schema_check(struct sq *be)
{
        sqlite3_stmt *st = NULL;
        int64_t version = 0;
        int r, rc;

        rc = sqlite3_prepare_v2(be->db, "SELECT count(*) FROM sqlite_master WHERE name = 'migrations'", -1,
                                &st, NULL);
        if (rc != SQLITE_OK)
                return sq_error(rc);
        rc = sqlite3_step(st);
        r = rc != SQLITE_ROW ? sq_error(rc) : sqlite3_column_int(st, 0) == 0 ? -EPROTO : 0;
        sqlite3_finalize(st);
        if (r == 0)
                r = schema_version(be, &version);
        if (r == 0 && version != SCHEMA_VERSION)
                r = -EPROTO;
        return r;
}

/* "sqlite:/abs/path", "sqlite:///abs/path", "sqlite:rel/path" (after the
 * prefix) to a file name; creates the file's directory when asked. */
static int db_path(const char *location, bool mkdir, char **ret)
{
        char *path, *slash;
        int r;

        if (location[0] == '/' && location[1] == '/')
                location += 2;
        if (!*location)
                return -EINVAL;
        path = strdup(location);
        if (!path)
                return -ENOMEM;
        slash = strrchr(path, '/');
        if (mkdir && slash && slash != path) {
                *slash = '\0';
                r = fs_mkdir_p(path);
                *slash = '/';
                if (r < 0) {
                        free(path);
                        return r;
                }
        }
        *ret = path;
        return 0;
}

/* temp_store: savepoints inside a caller's batch journal every page they
 * touch; in a temp file that is 4x slower. Turning a new file to WAL while
 * another connection opens it too can fail at once with SQLITE_BUSY (the
 * busy handler is not asked), so that is tried again until the busy
 * timeout. */
static int sq_settings(struct sq *be)
{
        int64_t give_up = clock_mono_ms() + SQ_BUSY_TIMEOUT_MS;
        int r;

        while ((r = sq_exec(be, "PRAGMA journal_mode = WAL;")) == -EBUSY && clock_mono_ms() < give_up)
                nanosleep(&(struct timespec){.tv_nsec = SQ_BUSY_RETRY_MS * 1000000L}, NULL);
        if (r < 0)
                return r;
        return sq_exec(be, "PRAGMA synchronous = FULL;"
                           "PRAGMA foreign_keys = ON;"
                           "PRAGMA temp_store = MEMORY;"
                           "PRAGMA cache_size = -" SQ_CACHE_KIB ";");
}

/* The connections opened on an existing table (the API's pool, the intake)
 * keep a smaller page cache: they read a few rows each. */
static int sq_reader_cache(struct sq *be)
{
        return sq_exec(be, "PRAGMA cache_size = -" SQ_CACHE_KIB_READER ";");
}

static void sq_close(void *p)
{
        struct sq *be = p;

        if (!be)
                return;
        for (int q = 0; q < _Q_MAX; q++)
                sqlite3_finalize(be->stmt[q]);
        sqlite3_close_v2(be->db); /* rolls back a transaction left open */
        if (be->gated)
                writegate_leave(be->gate);
        writegate_put(be->gate);
        free(be->path);
        free(be);
}

static int wal_stat(const struct sq *be, struct stat *sb)
{
        char wal[PATH_MAX];

        if ((size_t)snprintf(wal, sizeof(wal), "%s-wal", be->path) >= sizeof(wal))
                return -ENAMETOOLONG;
        return stat(wal, sb) < 0 ? -errno : 0;
}

/* The file at our path is no longer ours (deleted, or another put in its
 * place), but our write-ahead log still sits beside it under the name
 * SQLite looks for: whoever opens the path next would replay our log over
 * a table it does not belong to. Move it aside, as "-wal.detached-INODE"
 * (what it holds belongs to the file that went), and drop the shared-memory
 * index, which only caches the log. Only a log that is ours moves. */
static void detach_wal(struct sq *be)
{
        char wal[PATH_MAX], aside[PATH_MAX + 40], shm[PATH_MAX];
        struct stat sb;

        if (be->detached || !be->wal_ino)
                return;
        be->detached = true;
        if (wal_stat(be, &sb) < 0 || sb.st_dev != be->wal_dev || sb.st_ino != be->wal_ino)
                return;
        snprintf(wal, sizeof(wal), "%s-wal", be->path);
        snprintf(aside, sizeof(aside), "%s-wal.detached-%llu", be->path, (unsigned long long)be->ino);
        snprintf(shm, sizeof(shm), "%s-shm", be->path);
        if (rename(wal, aside) < 0) {
                log_error("store: cannot move the write-ahead log of the replaced job table aside: %s: %s",
                          wal, strerror(errno));
                return;
        }
        unlink(shm);
        log_warning("store: the write-ahead log of the job table that was deleted or replaced moved to %s, "
                    "so that it is not replayed over the file now at %s",
                    aside, be->path);
}

static int sq_open(const char *location, bool existing, void **ret_be)
{
        struct sq *be;
        struct stat sb;
        int r, rc;

        be = calloc(1, sizeof(*be));
        if (!be)
                return -ENOMEM;
        r = db_path(location, !existing, &be->path);
        if (r < 0)
                goto fail;
        rc = sqlite3_open_v2(
                be->path, &be->db,
                SQLITE_OPEN_READWRITE | (existing ? 0 : SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                /* the errno of a failed open(2) says more than SQLITE_CANTOPEN */
                r = be->db && sqlite3_system_errno(be->db) ? -sqlite3_system_errno(be->db) : sq_error(rc);
                goto fail;
        }
        sqlite3_extended_result_codes(be->db, 1);
        sqlite3_busy_timeout(be->db, SQ_BUSY_TIMEOUT_MS);
        r = sq_settings(be);
        if (r == 0 && existing)
                r = sq_reader_cache(be);
        if (r == 0)
                r = existing ? schema_check(be) : schema_migrate(be);
        if (r == 0 && stat(be->path, &sb) < 0)
                r = -errno;
        if (r < 0)
                goto fail;
        be->dev = sb.st_dev;
        be->ino = sb.st_ino;
        r = writegate_get(be->dev, be->ino, &be->gate);
        if (r < 0)
                goto fail;
        if (wal_stat(be, &sb) == 0) { /* the reads above made it */
                be->wal_dev = sb.st_dev;
                be->wal_ino = sb.st_ino;
        }
        *ret_be = be;
        return 0;
fail:
        sq_close(be);
        return r;
}

/* The connection keeps the inode it opened; the path may now name
 * another file, or none. */
static int sq_check(void *p)
{
        struct sq *be = p;
        struct stat sb;

        if (stat(be->path, &sb) == 0) {
                if (sb.st_dev == be->dev && sb.st_ino == be->ino)
                        return 0;
        } else if (errno != ENOENT) {
                return -errno;
        }
        detach_wal(be);
        return -ESTALE;
}

static bool sq_in_batch(void *p) { return sq_in_transaction(p); }

/* WAL with synchronous=NORMAL: a commit survives a crash of the process,
 * and reaches the disk at the next checkpoint. */
static int sq_set_sync(void *p, bool each_commit)
{
        struct sq *be = p;
        return sq_exec(be, each_commit ? "PRAGMA synchronous = FULL;" : "PRAGMA synchronous = NORMAL;");
}

const struct store_backend store_backend_sqlite = {
        .name = "sqlite",
        .prefix = "sqlite:",
        .open = sq_open,
        .close = sq_close,
        .check = sq_check,
        .begin = sq_begin,
        .commit = sq_commit,
        .rollback = sq_rollback,
        .in_batch = sq_in_batch,
        .job_insert = sq_job_insert,
        .job_get = sq_job_get,
        .job_find_idempotent = sq_job_find_idempotent,
        .job_list = sq_job_list,
        .job_update = sq_job_update,
        .job_per_source = sq_job_per_source,
        .job_delete = sq_job_delete,
        .job_next_queued = sq_job_next_queued,
        .job_count_by_state = sq_job_count_by_state,
        .job_prune = sq_job_prune,
        .item_list = sq_item_list,
        .item_load = sq_item_load,
        .item_update = sq_item_update,
        .item_append = sq_item_append,
        .recover = sq_recover,
        .set_sync = sq_set_sync,
        .job_claim = sq_job_claim,
        .lease_renew = sq_lease_renew,
        .lease_take = sq_lease_take,
        .node_beat = sq_node_beat,
        .node_list = sq_node_list,
        .node_remove = sq_node_remove,
        .circuit_put = sq_circuit_put,
        .circuit_list = sq_circuit_list,
        .circuit_take_probe = sq_circuit_take_probe,
        .circuit_delete = sq_circuit_delete,
};

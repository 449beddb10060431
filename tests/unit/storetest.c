/* The fixtures and helpers of the job store's unit tests (storetest.h). */
#include "autoconfig.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif

#include "tests/unit/storetest.h"

enum backend backend;
char *tmp;
char url[8192];
char dbfile[4096];
char schema[64];
#ifdef HAVE_LIBPQ
PGconn *admin; /* this test's own connection to its schema, behind the store's back */
#endif

void setup_sqlite(void)
{
        backend = BE_SQLITE;
        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        snprintf(dbfile, sizeof(dbfile), "%s/jobs.db", tmp);
        snprintf(url, sizeof(url), "sqlite:%s", dbfile);
}

#ifdef HAVE_LIBPQ
static void quiet(void *arg, const char *message)
{
        (void)arg;
        (void)message;
}

static void admin_exec(const char *sql)
{
        PGresult *res = PQexec(admin, sql);
        ExecStatusType st = PQresultStatus(res);

        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
                ck_abort_msg("%s: %s", sql, PQerrorMessage(admin));
        PQclear(res);
}
#endif

/* A schema of its own; the store's connection finds it by search_path
 * and names itself after it (application_name), so a test can find it
 * in pg_stat_activity. */
void setup_pg(void)
{
#ifdef HAVE_LIBPQ
        const char *base = getenv("HAULD_TEST_PG_URL");
        unsigned char rnd[6];
        char sql[256];

        backend = BE_PG;
        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        ck_assert_ptr_nonnull(base);
        ck_assert_int_eq(getrandom(rnd, sizeof(rnd), 0), sizeof(rnd));
        snprintf(schema, sizeof(schema), "t_%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4], rnd[5]);
        admin = PQconnectdb(base);
        ck_assert_msg(PQstatus(admin) == CONNECTION_OK, "%s", PQerrorMessage(admin));
        PQsetNoticeProcessor(admin, quiet, NULL);
        snprintf(sql, sizeof(sql), "CREATE SCHEMA %s; SET search_path TO %s", schema, schema);
        admin_exec(sql);
        snprintf(url, sizeof(url), "%s%coptions=-csearch_path%%3D%s&application_name=%s", base,
                 strchr(base, '?') ? '&' : '?', schema, schema);
#else
        ck_abort_msg("built without libpq");
#endif
}

void teardown(void)
{
#ifdef HAVE_LIBPQ
        if (backend == BE_PG && admin) {
                char sql[128];
                snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", schema);
                admin_exec(sql);
                PQfinish(admin);
                admin = NULL;
        }
#endif
        testutil_rmtree(tmp);
        tmp = NULL;
}

void add_backend_cases(Suite *su, const char *name, void (*add)(TCase *tc, enum backend be), int timeout)
{
        static const struct {
                const char *suffix;
                enum backend be;
                void (*setup)(void);
        } cases[] = {{"sqlite", BE_SQLITE, setup_sqlite}, {"pg", BE_PG, setup_pg}};
        static char names[16][64]; /* check keeps the name for the run */
        static size_t nnames;
        const char *pg_only = getenv("HAULD_TEST_PG_ONLY");

        for (size_t i = 0; i < 2; i++) {
                TCase *tc;

                if (cases[i].be == BE_SQLITE && pg_only && strcmp(pg_only, "1") == 0)
                        continue;
                if (cases[i].be == BE_PG && !getenv("HAULD_TEST_PG_URL"))
                        continue;
                if (nnames == sizeof(names) / sizeof(names[0]))
                        abort();
                snprintf(names[nnames], sizeof(names[0]), "%s-%s", name, cases[i].suffix);
                tc = tcase_create(names[nnames++]);
                tcase_add_checked_fixture(tc, cases[i].setup, teardown);
                if (timeout > 0)
                        tcase_set_timeout(tc, timeout);
                add(tc, cases[i].be);
                suite_add_tcase(su, tc);
        }
}

int storetest_main(Suite *(*suite)(void))
{
#ifndef HAVE_LIBPQ
        if (getenv("HAULD_TEST_PG_URL")) {
                printf("skipped: HAULD_TEST_PG_URL is set but this build has no PostgreSQL backend\n");
                return 77;
        }
#endif
        return testutil_run(suite());
}

struct store *open_store(void)
{
        struct store *s = NULL;
        ck_assert_int_eq(store_open(url, &s), 0);
        ck_assert_ptr_nonnull(s);
        return s;
}

#ifdef HAVE_LIBPQ
static int64_t pg_sql_int(const char *sql)
{
        PGresult *res = PQexec(admin, sql);
        int64_t v;

        ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(admin));
        ck_assert_int_eq(PQntuples(res), 1);
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        return v;
}
#endif

int64_t sql_int(const char *sql)
{
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v;

#ifdef HAVE_LIBPQ
        if (backend == BE_PG)
                return pg_sql_int(sql);
#endif
        ck_assert_int_eq(sqlite3_open_v2(dbfile, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

void sql_exec(const char *sql)
{
        sqlite3 *db;

#ifdef HAVE_LIBPQ
        if (backend == BE_PG) {
                admin_exec(sql);
                return;
        }
#endif
        ck_assert_int_eq(sqlite3_open_v2(dbfile, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

const char *migrations_table(void) { return backend == BE_PG ? "schema_migrations" : "migrations"; }
int64_t schema_version(void) { return backend == BE_PG ? 3 : 5; }

double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct job *job_make(int64_t created_at, enum job_state state, int priority)
{
        struct job *j = calloc(1, sizeof(*j));
        ck_assert_ptr_nonnull(j);
        job_id_new(j->id, created_at);
        j->state = state;
        j->max = JOB_DEFAULT_MAX;
        j->timeout = 300;
        j->priority = priority;
        j->created_at = created_at;
        j->limits = JOB_LIMITS_UNSET;
        return j;
}

struct job *job_make_full(void)
{
        struct job *j = job_make(T0 + 123, JOB_RUNNING, 3);

        j->query = strdup("red cars");
        j->nsources = 2;
        j->sources = calloc(2, sizeof(char *));
        j->sources[0] = strdup("openverse");
        j->sources[1] = strdup("wikimedia");
        j->max = 77;
        j->timeout = 12.5;
        j->label = strdup("a \"label\", with ünïcode");
        j->started_at = T0 + 1000;
        j->finished_at = 0;
        j->deadline_at = T0 + 301000;
        j->progress = (struct progress){10, 3, 2, 4, 1, 0, 123456789012LL};
        j->nper_source = 2;
        j->per_source = calloc(2, sizeof(*j->per_source));
        j->per_source[0] =
                (struct job_source){strdup("openverse"), SRC_DOWNLOADING, 5, 3, 1, 1, 9, 2, 4242, {0}};
        j->per_source[1] = (struct job_source){strdup("wikimedia"), SRC_FAILED, 5, 1, 3, 1, 12, 4, 99, {0}};
        job_error_set(&j->per_source[1].error, "http_5xx", "503 from %s", "upstream");
        job_error_set(&j->error, "source_timeout", "%d sources timed out", 1);
        j->idempotency_key = strdup("key-1");
        j->request_hash = strdup("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        j->limits = (struct job_limits){.source_timeout = 45.5, .stall_timeout = 20, .max_retries = 0};
        return j;
}

static void error_eq(const struct job_error *a, const struct job_error *b)
{
        ck_assert_pstr_eq(a->code, b->code);
        ck_assert_pstr_eq(a->message, b->message);
}

void job_eq(const struct job *a, const struct job *b)
{
        ck_assert_str_eq(a->id, b->id);
        ck_assert_int_eq(a->seq, b->seq);
        ck_assert_int_eq(a->state, b->state);
        ck_assert_pstr_eq(a->query, b->query);
        ck_assert_uint_eq(a->nsources, b->nsources);
        for (size_t i = 0; i < a->nsources; i++)
                ck_assert_str_eq(a->sources[i], b->sources[i]);
        ck_assert_int_eq(a->max, b->max);
        ck_assert_double_eq(a->timeout, b->timeout);
        ck_assert_int_eq(a->priority, b->priority);
        ck_assert_pstr_eq(a->label, b->label);
        ck_assert_int_eq(a->created_at, b->created_at);
        ck_assert_int_eq(a->started_at, b->started_at);
        ck_assert_int_eq(a->finished_at, b->finished_at);
        ck_assert_int_eq(a->deadline_at, b->deadline_at);
        ck_assert_mem_eq(&a->progress, &b->progress, sizeof(a->progress));
        ck_assert_uint_eq(a->nper_source, b->nper_source);
        for (size_t i = 0; i < a->nper_source; i++) {
                const struct job_source *x = &a->per_source[i], *y = &b->per_source[i];
                ck_assert_pstr_eq(x->source, y->source);
                ck_assert_int_eq(x->state, y->state);
                ck_assert_int_eq(x->items, y->items);
                ck_assert_int_eq(x->succeeded, y->succeeded);
                ck_assert_int_eq(x->failed, y->failed);
                ck_assert_int_eq(x->skipped, y->skipped);
                ck_assert_int_eq(x->attempts, y->attempts);
                ck_assert_int_eq(x->retries, y->retries);
                ck_assert_int_eq(x->bytes, y->bytes);
                error_eq(&x->error, &y->error);
        }
        error_eq(&a->error, &b->error);
        ck_assert_pstr_eq(a->idempotency_key, b->idempotency_key);
        ck_assert_pstr_eq(a->request_hash, b->request_hash);
        ck_assert_double_eq(a->limits.source_timeout, b->limits.source_timeout);
        ck_assert_double_eq(a->limits.request_timeout, b->limits.request_timeout);
        ck_assert_double_eq(a->limits.stall_timeout, b->limits.stall_timeout);
        ck_assert_int_eq(a->limits.max_retries, b->limits.max_retries);
        ck_assert_pstr_eq(a->lease_owner, b->lease_owner);
        ck_assert_int_eq(a->lease_token, b->lease_token);
        ck_assert_int_eq(a->lease_until, b->lease_until);
}

void item_make(struct item *it, int index)
{
        char buf[128];

        memset(it, 0, sizeof(*it));
        it->index = index;
        it->source = strdup(index % 2 ? "openverse" : "example.com");
        snprintf(buf, sizeof(buf), "https://example.com/img/%d.jpg", index);
        it->url = strdup(buf);
        it->filename = index % 3 ? NULL : strdup("wanted name.jpg");
}

struct item *items_make(size_t n)
{
        struct item *items = calloc(n, sizeof(*items));
        ck_assert_ptr_nonnull(items);
        for (size_t i = 0; i < n; i++)
                item_make(&items[i], (int)i);
        return items;
}

void item_finish(struct item *it, bool ok)
{
        it->attempts = ok ? 1 : 3;
        if (!ok) {
                it->state = ITEM_FAILED;
                it->http_status = 503;
                job_error_set(&it->error, "http_5xx", "HTTP %d", 503);
                return;
        }
        it->state = ITEM_SUCCEEDED;
        it->http_status = 200;
        it->bytes = 245678;
        free(it->content_type);
        it->content_type = strdup("image/jpeg");
        free(it->path);
        it->path = strdup("JOB/openverse/image1.jpg");
        free(it->sha256);
        it->sha256 = strdup("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        it->duration_ms = 2300;
        it->speed_bps = 104500;
        free(it->node);
        it->node = strdup("node-a");
        it->resumed_from = 65536;
}

void item_eq(const struct item *a, const struct item *b)
{
        ck_assert_int_eq(a->index, b->index);
        ck_assert_pstr_eq(a->source, b->source);
        ck_assert_pstr_eq(a->url, b->url);
        ck_assert_pstr_eq(a->filename, b->filename);
        ck_assert_int_eq(a->state, b->state);
        ck_assert_int_eq(a->attempts, b->attempts);
        ck_assert_int_eq(a->http_status, b->http_status);
        ck_assert_int_eq(a->bytes, b->bytes);
        ck_assert_pstr_eq(a->content_type, b->content_type);
        ck_assert_pstr_eq(a->path, b->path);
        ck_assert_pstr_eq(a->sha256, b->sha256);
        ck_assert_int_eq(a->duration_ms, b->duration_ms);
        ck_assert_int_eq(a->speed_bps, b->speed_bps);
        error_eq(&a->error, &b->error);
        ck_assert_pstr_eq(a->node, b->node);
        ck_assert_int_eq(a->resumed_from, b->resumed_from);
}

struct job *insert_job(struct store *s, int64_t created_at, enum job_state state, int priority)
{
        struct job *j = job_make(created_at, state, priority);
        ck_assert_int_eq(store_job_insert(s, j, NULL, 0), 0);
        ck_assert_int_gt(j->seq, 0);
        return j;
}

struct job *get_job(struct store *s, const char *id)
{
        struct job *g = NULL;
        ck_assert_int_eq(store_job_get(s, id, &g), 0);
        ck_assert_ptr_nonnull(g);
        return g;
}

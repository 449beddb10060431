/* What the job store's unit tests share: one fixture per backend, SQL
 * behind the store's back, and jobs and items to store and compare.
 *
 * Every test runs against SQLite (a file in a fresh temporary directory)
 * and, when HAULD_TEST_PG_URL names a PostgreSQL database, against that
 * too, in a fresh schema that is dropped afterwards (the connection's
 * search_path names it). tests/pg_harness.sh starts such a server. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif

#include "daemon/job.h"
#include "daemon/store.h"
#include "tests/unit/testutil.h"

#define T0 1700000000000LL /* a wall-clock ms base for created_at */

enum backend { BE_SQLITE, BE_PG };

extern enum backend backend; /* this test's */
extern char *tmp;            /* this test's directory, both backends */
extern char url[8192];       /* the STORE URL of this test's table */
extern char dbfile[4096];    /* SQLite: "<tmp>/jobs.db" */
extern char schema[64];      /* PostgreSQL: this test's schema */
#ifdef HAVE_LIBPQ
extern PGconn *admin; /* PostgreSQL: a connection to the schema behind the store's back */
#endif

void setup_sqlite(void);
void setup_pg(void);
void teardown(void);
/* One case per backend that is to run (HAULD_TEST_PG_URL; HAULD_TEST_PG_ONLY=1
 * leaves SQLite out), each with its fixture and the tests add() adds for
 * that backend; timeout in s, 0 for check's default. */
void add_backend_cases(Suite *su, const char *name, void (*add)(TCase *tc, enum backend be), int timeout);
/* main() of a store test program: 77 (skipped) when a PostgreSQL URL is
 * given to a build without libpq. */
int storetest_main(Suite *(*suite)(void));

struct store *open_store(void);
/* One integer from SQL run on the table behind the store's back. */
int64_t sql_int(const char *sql);
void sql_exec(const char *sql);
/* The name of the table of applied migrations, and how many there are. */
const char *migrations_table(void);
int64_t schema_version(void);

struct job *job_make(int64_t created_at, enum job_state state, int priority);
/* Every field set, per_source with and without an error, one null time. */
struct job *job_make_full(void);
void job_eq(const struct job *a, const struct job *b);
void item_make(struct item *it, int index);
struct item *items_make(size_t n);
/* The item as the engine leaves it after a download. */
void item_finish(struct item *it, bool ok);
void item_eq(const struct item *a, const struct item *b);
/* Insert a bare job; returns its (heap) copy with seq set. */
struct job *insert_job(struct store *s, int64_t created_at, enum job_state state, int priority);
struct job *get_job(struct store *s, const char *id);
double now_ms(void);

/* Unit tests of the scheduler's loop (daemon/sched.c, with work.c,
 * jobrun.c, xfers.c and srctab.c inside it), driven turn by turn with
 * sched_turn() on a scheduler without a thread:
 * - a stepped fake clock (mono_ms, wall_ms) and rand01 0, the low end of
 *   every jitter: at RETRY_JITTER 0.1 a retry waits 90% of its backoff
 *   (900 ms, 1.8 s, 3.6 s ...);
 * - the fake engine (fake_engine.c): the test ends each transfer with the
 *   answer it wants, writing the part file the real engine would;
 * - a real SQLite job table, DOWNLOAD_DIR and SOURCES_DIR in a temp
 *   directory, a real committer (sync_commits: each turn waits for it);
 * - jobs inserted as the API's intake does, read back through a
 *   connection of the test's own; events read from a real event bus.
 * No sleeps, no network. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/job_request.h"
#include "common/fs.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/events.h"
#include "daemon/jobrun.h"
#include "daemon/sched.h"
#include "daemon/sources.h"
#include "daemon/store.h"
#include "tests/unit/fake_engine.h"
#include "tests/unit/testutil.h"

#define WALL0   1700000000000LL /* the wall clock at mono 0 */
#define T0      1000000         /* the monotonic clock at the start of each test */
#define TICK    10              /* a turn soon after: settles what the engine answered */
#define FLUSH   60              /* past FLUSH_EVERY_MS: item changes are written */
#define SNAP    100             /* SNAPSHOT_EVERY_MS: a new snapshot is due */
#define MAX_EVS 256

static char *tmp;
static char dl_dir[4200];
static struct config cfg;
static struct source_set *sources;
static struct event_bus *bus;
static struct fake_engine fe;
static struct sched *s;
static struct store *db; /* the test's own connection to the job table */
static int64_t now;

static int64_t mono_ms(void *ud)
{
        (void)ud;
        return now;
}

static int64_t wall_ms(void *ud)
{
        (void)ud;
        return WALL0 + now;
}

static double rand_low(void *ud)
{
        (void)ud;
        return 0.0;
}

static void set(const char *key, const char *value)
{
        struct config_error e;
        ck_assert_msg(config_set(&cfg, key, value, &e) == 0, "%s: %s", key, e.message);
}

static void setup(void)
{
        char path[4300];

        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        ck_assert_int_eq(config_defaults(&cfg), 0);
        set("STATE_DIR", tmp);
        snprintf(path, sizeof(path), "sqlite:%s/jobs.db", tmp);
        set("STORE", path);
        snprintf(dl_dir, sizeof(dl_dir), "%s/downloads", tmp);
        set("DOWNLOAD_DIR", dl_dir);
        snprintf(path, sizeof(path), "%s/sources", tmp);
        set("SOURCES_DIR", path);
        ck_assert_int_eq(mkdir(path, 0750), 0);
        set("LOG_LEVEL", "warning");
        ck_assert_int_eq(store_open(cfg.store, &db), 0);
        fake_engine_init(&fe);
        now = T0;
}

static void teardown(void)
{
        sched_stop(s);
        s = NULL;
        events_free(bus);
        bus = NULL;
        sources_free(sources);
        sources = NULL;
        store_close(db);
        db = NULL;
        config_free(&cfg);
        fake_engine_clear(&fe);
        testutil_rmtree(tmp);
        tmp = NULL;
}

/* A source file in SOURCES_DIR, before start(). */
static void write_source(const char *name, const char *json)
{
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s.json", cfg.sources_dir, name);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(json, f);
        fclose(f);
}

/* The source files used by the query tests: alpha and beta, paged. */
static void write_sources(int per_page)
{
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"search_url\": \"http://alpha.test/search?q={query}&page={page}\", \"per_page\": %d,"
                 " \"items\": \"/results\", \"url\": \"/url\", \"max_connections\": 3,"
                 " \"requests_per_second\": 50}",
                 per_page);
        write_source("alpha", json);
        write_source("beta", "{\"search_url\": \"http://beta.test/search?q={query}&page={page}\","
                             " \"items\": \"/results\", \"url\": \"/url\"}");
}

static void start(void)
{
        struct sources_error err;
        struct sched_hooks hooks = {.engine_ops = &fake_engine_ops,
                                    .engine = &fe,
                                    .mono_ms = mono_ms,
                                    .wall_ms = wall_ms,
                                    .rand01 = rand_low,
                                    .engine_bind = fake_engine_bind,
                                    .sync_commits = true};

        log_set_level((enum log_level)cfg.log_level);
        ck_assert_msg(sources_load_dir(cfg.sources_dir, &sources, &err) == 0, "%s: %s: %s", err.file,
                      err.field, err.message);
        ck_assert_int_eq(events_new(&bus), 0);
        ck_assert_int_eq(sched_new(&cfg, sources, bus, &hooks, &s), 0);
}

/* A job from a request body, written as the API's intake writes it. */
static void submit(const char *body, char *id)
{
        struct job *j = NULL;
        struct item *items = NULL;
        size_t n = 0;
        json_t *errors = NULL;

        ck_assert_int_eq(job_request_parse(body, strlen(body), &j, &items, &n, &errors), 0);
        if (j->timeout == 0)
                j->timeout = cfg.global_job_timeout;
        job_id_new(j->id, WALL0 + now);
        j->created_at = WALL0 + now;
        j->state = JOB_QUEUED;
        ck_assert_int_eq(job_request_tally(j, items, n), 0);
        ck_assert_int_eq(store_job_insert(db, j, items, n), 0);
        snprintf(id, JOB_ID_LEN + 1, "%s", j->id);
        job_free(j);
        items_free(items, n);
        if (s)
                sched_wake(s);
}

static void turn(void) { sched_turn(s); }

static void step(int64_t ms)
{
        now += ms;
        sched_turn(s);
}

/* Step to the monotonic time t, then turn. */
static void step_to(int64_t t)
{
        ck_assert_int_ge(t, now);
        now = t;
        sched_turn(s);
}

static struct job *job_get(const char *id)
{
        struct job *j = NULL;
        ck_assert_int_eq(store_job_get(db, id, &j), 0);
        return j;
}

static enum job_state job_state(const char *id)
{
        struct job *j = job_get(id);
        enum job_state st = j->state;
        job_free(j);
        return st;
}

/* The job's items as the table has them; free with items_free(). */
static struct item *items_get(const char *id, size_t *ret_n)
{
        struct item *v = NULL;
        ck_assert_int_eq(store_item_load(db, id, &v, ret_n), 0);
        return v;
}

static const struct job_source *per_source(const struct job *j, const char *name)
{
        for (size_t i = 0; i < j->nper_source; i++)
                if (strcmp(j->per_source[i].source, name) == 0)
                        return &j->per_source[i];
        ck_abort_msg("no per_source entry %s", name);
        return NULL;
}

static bool contains(const char *text, const char *part) { return text && strstr(text, part); }

static int running(void) { return fe.running; }

/* The newest snapshot after a turn at least SNAP later (snapshot_unref it). */
static struct snapshot *snap_now(void)
{
        step(SNAP);
        struct snapshot *snap = sched_snapshot(s);
        ck_assert_ptr_nonnull(snap);
        return snap;
}

/* Events of job id (NULL: all) so far; events_release() them. */
static size_t events_of(const char *id, struct event *ev)
{
        size_t n = 0;
        ck_assert_int_eq(events_read(bus, 0, id, ev, MAX_EVS, &n), 0);
        return n;
}

static int terminal_events(const char *id)
{
        struct event ev[MAX_EVS];
        size_t n = events_of(id, ev);
        int k = 0;
        for (size_t i = 0; i < n; i++)
                k += ev[i].type == EVENT_JOB && ev[i].terminal;
        events_release(ev, n);
        return k;
}

/* The text of DOWNLOAD_DIR/rel ("" when missing). */
static void file_text(const char *rel, char *buf, size_t size)
{
        char path[8400], *text = NULL;
        size_t len = 0;

        snprintf(path, sizeof(path), "%s/%s", dl_dir, rel);
        buf[0] = '\0';
        if (fs_read_file(path, 4096, &text, &len) == 0)
                snprintf(buf, size, "%s", text);
        free(text);
}

/* End the running transfer of url with a 200 and body. */
static void ok(const char *url, const char *body)
{
        struct fake_xfer *x = fake_find(&fe, url);
        ck_assert_msg(x && x->state == FAKE_RUNNING, "%s is not in flight", url);
        fake_ok(&fe, x, body);
}

static void http(const char *url, int status)
{
        struct fake_xfer *x = fake_find(&fe, url);
        ck_assert_msg(x && x->state == FAKE_RUNNING, "%s is not in flight", url);
        fake_http(&fe, x, status);
}

/* ---- a URL job from start to end -------------------------------------------------------- */

START_TEST(test_url_job_succeeds)
{
        static const char *const urls[] = {"http://a.example/1.png", "http://a.example/2.png",
                                           "http://b.example:8080/3.png"};
        static const char *const bodies[] = {"one", "two!", "three"};
        char id[JOB_ID_LEN + 1], want[512], text[64], sha[65];

        submit("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/2.png\","
               " \"http://b.example:8080/3.png\"]}",
               id);
        start();
        turn();
        ck_assert_int_eq(running(), 3);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_RUNNING);
        ck_assert_int_eq(j->started_at, WALL0 + T0);
        ck_assert_int_eq(j->deadline_at, WALL0 + T0 + 300000);
        job_free(j);

        for (int i = 0; i < 3; i++)
                ok(urls[i], bodies[i]);
        step(TICK); /* the engine's answers: the parts go to the committer */
        ck_assert_int_eq(job_state(id), JOB_RUNNING);
        step(TICK); /* the committer's: the files are in place */

        j = job_get(id);
        ck_assert_int_eq(j->state, JOB_SUCCEEDED);
        ck_assert_ptr_null(j->error.code);
        ck_assert_int_eq(j->finished_at, WALL0 + now);
        ck_assert_int_eq(j->progress.succeeded, 3);
        ck_assert_int_eq(
                j->progress.pending + j->progress.running + j->progress.failed + j->progress.skipped, 0);
        ck_assert_int_eq(j->progress.bytes, 3 + 4 + 5);
        ck_assert_int_eq(per_source(j, "a.example")->state, SRC_DONE);
        ck_assert_int_eq(per_source(j, "a.example")->succeeded, 2);
        ck_assert_int_eq(per_source(j, "a.example")->attempts, 2);
        ck_assert_int_eq(per_source(j, "a.example")->bytes, 7);
        ck_assert_int_eq(per_source(j, "b.example:8080")->succeeded, 1);
        job_free(j);

        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_uint_eq(n, 3);
        for (int i = 0; i < 3; i++) {
                const char *name = strrchr(urls[i], '/') + 1;
                ck_assert_int_eq(it[i].state, ITEM_SUCCEEDED);
                ck_assert_int_eq(it[i].attempts, 1);
                ck_assert_int_eq(it[i].http_status, 200);
                ck_assert_int_eq(it[i].bytes, (int64_t)strlen(bodies[i]));
                ck_assert_str_eq(it[i].content_type, "image/png");
                fake_sha256(bodies[i], sha);
                ck_assert_str_eq(it[i].sha256, sha);
                snprintf(want, sizeof(want), "%s/%s/%s", id, i < 2 ? "a.example" : "b.example:8080", name);
                ck_assert_str_eq(it[i].path, want);
                file_text(it[i].path, text, sizeof(text));
                ck_assert_str_eq(text, bodies[i]);
        }
        items_free(it, n);
        char part[8400];
        snprintf(part, sizeof(part), "%s/%s/a.example/.0.part", dl_dir, id);
        ck_assert_int_ne(access(part, F_OK), 0); /* no part file left */

        /* events: the start, each item, the end once, in that order */
        struct event ev[MAX_EVS];
        size_t ne = events_of(id, ev), items_ended = 0;
        ck_assert_uint_gt(ne, 0);
        ck_assert_int_eq(ev[0].type, EVENT_JOB);
        ck_assert_int_eq(ev[0].data->job->state, JOB_RUNNING);
        for (size_t i = 0; i < ne; i++)
                if (ev[i].type == EVENT_ITEM) {
                        ck_assert_int_eq(ev[i].data->item.state, ITEM_SUCCEEDED);
                        items_ended++;
                }
        ck_assert_uint_eq(items_ended, 3);
        size_t last = ne;
        while (last-- > 0 && ev[last].type != EVENT_JOB)
                ;
        ck_assert(ev[last].terminal);
        ck_assert_int_eq(ev[last].data->job->state, JOB_SUCCEEDED);
        events_release(ev, ne);
        ck_assert_int_eq(terminal_events(id), 1);

        struct snapshot *snap = snap_now();
        ck_assert_uint_eq(snap->njobs, 0);
        ck_assert_int_eq(snap->transfers, 0);
        snapshot_unref(snap);
}
END_TEST

/* ---- retries ---------------------------------------------------------------------------- */

START_TEST(test_retry_after_backoff)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        http(u, 503);
        step(TICK);
        int64_t failed_at = now;
        ck_assert_int_eq(running(), 0);
        step_to(failed_at + 899); /* RETRY_BACKOFF_BASE 1 s, jitter 0.1 at its low end: 900 ms */
        ck_assert_int_eq(fake_starts(&fe, u), 1);
        step_to(failed_at + 900);
        ck_assert_int_eq(fake_starts(&fe, u), 2);
        ok(u, "pixels");
        step(TICK);
        step(TICK);

        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_SUCCEEDED);
        ck_assert_int_eq(per_source(j, "a.example")->attempts, 2);
        ck_assert_int_eq(per_source(j, "a.example")->retries, 1);
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_SUCCEEDED);
        ck_assert_int_eq(it[0].attempts, 2);
        ck_assert_ptr_null(it[0].error.code);
        items_free(it, n);

        struct event ev[MAX_EVS];
        size_t ne = events_of(id, ev), retries = 0;
        for (size_t i = 0; i < ne; i++)
                if (ev[i].type == EVENT_ITEM && ev[i].data->retry_set) {
                        ck_assert_int_eq(ev[i].data->retry.attempt, 1);
                        ck_assert_int_eq(ev[i].data->retry.delay_ms, 900);
                        ck_assert_str_eq(ev[i].data->retry.reason, "http_5xx");
                        ck_assert_int_eq(ev[i].data->item.state, ITEM_PENDING);
                        retries++;
                }
        events_release(ev, ne);
        ck_assert_uint_eq(retries, 1);

        struct snapshot *snap = snap_now();
        const struct src_info *c = snapshot_circuit(snap, "a.example");
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(c->downloads.attempts, 2);
        ck_assert_int_eq(c->downloads.failures, 1);
        ck_assert_int_eq(c->downloads.successes, 1);
        ck_assert_int_eq(c->downloads.retries, 1);
        ck_assert_int_eq(c->consecutive_failures, 0);
        snapshot_unref(snap);
}
END_TEST

START_TEST(test_attempts_per_round_and_rounds)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1];
        struct fake_xfer *x;

        set("MAX_RETRIES_PER_SOURCE", "2"); /* 3 attempts a round */
        set("MAX_RETRIES_PER_ITEM", "1");   /* and one more round */
        set("CIRCUIT_BREAKER_THRESHOLD", "2");
        submit("{\"urls\": [\"http://a.example/1.png\"], \"timeout\": 3600}", id);
        start();
        turn();
        for (int k = 0; k < 20 && (x = fake_running(&fe, 0)); k++) {
                fake_http(&fe, x, 503);
                step(TICK);
                step(FLUSH);
                step(10000); /* past any of these delays */
        }
        ck_assert_int_eq(fake_starts(&fe, u), 6);
        ck_assert_int_eq(job_state(id), JOB_FAILED);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_FAILED);
        ck_assert_int_eq(it[0].attempts, 6);
        ck_assert_str_eq(it[0].error.code, "http_5xx");
        ck_assert_str_eq(it[0].error.message, "HTTP 503");
        items_free(it, n);

        /* five retries: two in the first round, one to start the next, two in it */
        struct event ev[MAX_EVS];
        size_t ne = events_of(id, ev);
        int64_t delays[8];
        int nd = 0;
        for (size_t i = 0; i < ne; i++)
                if (ev[i].type == EVENT_ITEM && ev[i].data->retry_set && nd < 8) {
                        ck_assert_int_eq(ev[i].data->retry.attempt, nd + 1);
                        delays[nd++] = ev[i].data->retry.delay_ms;
                }
        events_release(ev, ne);
        ck_assert_int_eq(nd, 5);
        ck_assert_int_eq(delays[0], 900);
        ck_assert_int_eq(delays[1], 1800);
        ck_assert_int_eq(delays[2], 3600); /* a new round: the next step */
        ck_assert_int_eq(delays[3], 900);
        ck_assert_int_eq(delays[4], 1800);

        /* one URL counts once against its circuit, however many attempts */
        struct snapshot *snap = snap_now();
        const struct src_info *c = snapshot_circuit(snap, "a.example");
        ck_assert_int_eq(c->state, BREAKER_CLOSED);
        ck_assert_int_eq(c->consecutive_failures, 1);
        ck_assert_int_eq(c->downloads.failures, 6);
        snapshot_unref(snap);
}
END_TEST

START_TEST(test_retry_past_deadline_fails_at_once)
{
        const char *u = "http://a.example/1.png", *v = "http://a.example/2.png";
        char id[JOB_ID_LEN + 1], id2[JOB_ID_LEN + 1];

        set("RETRY_BACKOFF_BASE", "10"); /* the first retry comes after 5 s */
        submit("{\"urls\": [\"http://a.example/1.png\"], \"timeout\": 2}", id);
        start();
        turn();
        http(u, 503);
        step(TICK);
        ck_assert_int_lt(now, T0 + 2000);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_FAILED);
        ck_assert_str_eq(j->error.code, "all_failed");
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_FAILED);
        ck_assert_str_eq(it[0].error.code, "http_5xx");
        ck_assert_msg(
                contains(it[0].error.message, "HTTP 503") &&
                        contains(it[0].error.message,
                                 "not tried again: the next attempt would come after the job's timeout"),
                "%s", it[0].error.message);
        items_free(it, n);
        ck_assert_int_eq(fake_starts(&fe, u), 1);

        /* a job's source_timeout is the nearer end: named as such */
        submit("{\"urls\": [\"http://a.example/2.png\"], \"source_timeout\": 3}", id2);
        step(TICK);
        http(v, 503);
        step(TICK);
        it = items_get(id2, &n);
        ck_assert_int_eq(it[0].state, ITEM_FAILED);
        ck_assert_msg(contains(it[0].error.message, "would come after the source's time (SOURCE_TIMEOUT)"),
                      "%s", it[0].error.message);
        items_free(it, n);
}
END_TEST

START_TEST(test_job_max_retries_sets_the_round)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1];
        struct fake_xfer *x;

        set("MAX_RETRIES_PER_SOURCE", "5");
        set("MAX_RETRIES_PER_ITEM", "1");
        submit("{\"urls\": [\"http://a.example/1.png\"], \"max_retries\": 0, \"timeout\": 3600}", id);
        start();
        turn();
        for (int k = 0; k < 20 && (x = fake_running(&fe, 0)); k++) {
                fake_fail(&fe, x, RC_TIMEOUT, "no byte for 15 s");
                step(TICK);
                step(FLUSH);
                step(10000);
        }
        ck_assert_int_eq(fake_starts(&fe, u), 2); /* a round of one attempt, and one more round */
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_FAILED);
        ck_assert_str_eq(it[0].error.code, "timeout");
        items_free(it, n);
}
END_TEST

START_TEST(test_retry_event_tells_the_failed_attempt)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1];

        set("RETRY_BACKOFF_BASE", "0"); /* a retry is due at once */
        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        http(u, 503);
        step(TICK);
        ck_assert_int_eq(fake_starts(&fe, u), 2); /* tried again in the same turn */
        step(FLUSH);

        /* the event is of the failed attempt: the first, its item waiting */
        struct event ev[MAX_EVS];
        size_t ne = events_of(id, ev), retries = 0;
        for (size_t i = 0; i < ne; i++)
                if (ev[i].type == EVENT_ITEM && ev[i].data->retry_set) {
                        ck_assert_int_eq(ev[i].data->retry.attempt, 1);
                        ck_assert_int_eq(ev[i].data->retry.delay_ms, 0);
                        ck_assert_str_eq(ev[i].data->retry.reason, "http_5xx");
                        ck_assert_int_eq(ev[i].data->item.state, ITEM_PENDING);
                        ck_assert_int_eq(ev[i].data->item.attempts, 1);
                        retries++;
                }
        events_release(ev, ne);
        ck_assert_uint_eq(retries, 1);
}
END_TEST

/* ---- circuits ---------------------------------------------------------------------------- */

/* The states the circuit events of source said, oldest first. */
static int circuit_states(const char *source, enum breaker_state *v, int max)
{
        struct event ev[MAX_EVS];
        size_t ne = events_of(NULL, ev);
        int n = 0;
        for (size_t i = 0; i < ne; i++)
                if (ev[i].type == EVENT_CIRCUIT && ev[i].data &&
                    strcmp(ev[i].data->circuit.name, source) == 0 && n < max)
                        v[n++] = ev[i].data->circuit.state;
        events_release(ev, ne);
        return n;
}

START_TEST(test_circuit_defers_then_one_probe)
{
        char id[JOB_ID_LEN + 1], url[64];

        set("CIRCUIT_BREAKER_THRESHOLD", "3");
        set("CIRCUIT_BREAKER_TIMEOUT", "10");
        set("MAX_CONNECTIONS_PER_SOURCE", "3");
        submit("{\"urls\": [\"http://a.example/0.png\", \"http://a.example/1.png\", "
               "\"http://a.example/2.png\","
               " \"http://a.example/3.png\", \"http://a.example/4.png\"]}",
               id);
        start();
        turn();
        ck_assert_int_eq(running(), 3);
        for (int i = 0; i < 3; i++) {
                snprintf(url, sizeof(url), "http://a.example/%d.png", i);
                http(url, 503);
        }
        step(TICK); /* three distinct URLs failed: the circuit opens */
        int64_t opened = now;
        ck_assert_int_eq(running(), 0);
        struct snapshot *snap = snap_now();
        const struct src_info *c = snapshot_circuit(snap, "a.example");
        ck_assert_int_eq(c->state, BREAKER_OPEN);
        ck_assert_int_eq(c->trips, 1);
        ck_assert_int_eq(c->consecutive_failures, 3);
        ck_assert_int_eq(c->retry_at_ms, opened + 10000);
        ck_assert_int_eq(c->active, 0);
        snapshot_unref(snap);

        /* the waiting items hold no transfer while it is open, retries due or not */
        step_to(opened + 500);
        step_to(opened + 5000);
        step_to(opened + 9999);
        ck_assert_uint_eq(fe.n, 3);
        ck_assert_int_eq(running(), 0);
        ck_assert_int_eq(job_state(id), JOB_RUNNING);

        step_to(opened + 10000); /* half-open: exactly one probe */
        ck_assert_uint_eq(fe.n, 4);
        ck_assert_int_eq(running(), 1);
        step(SNAP);
        step(SNAP);
        ck_assert_uint_eq(fe.n, 4);
        struct fake_xfer *probe = fake_running(&fe, 0);
        fake_ok(&fe, probe, "probe");
        step(TICK); /* its success closes the circuit: the rest go, as many as the host allows */
        ck_assert_int_eq(running(), 3);
        ck_assert_uint_eq(fe.n, 7);
        for (int k = 0; k < 10 && running() > 0; k++) {
                struct fake_xfer *x = fake_running(&fe, 0);
                snprintf(url, sizeof(url), "body of %d", x->id);
                fake_ok(&fe, x, url);
                step(TICK);
        }
        step(TICK);
        ck_assert_uint_eq(fe.n, 8);
        ck_assert_int_eq(job_state(id), JOB_SUCCEEDED);

        enum breaker_state st[8];
        int nst = circuit_states("a.example", st, 8);
        ck_assert_int_eq(nst, 3);
        ck_assert_int_eq(st[0], BREAKER_OPEN);
        ck_assert_int_eq(st[1], BREAKER_HALF_OPEN);
        ck_assert_int_eq(st[2], BREAKER_CLOSED);
}
END_TEST

START_TEST(test_circuit_past_deadline_skips_waiting)
{
        char id[JOB_ID_LEN + 1];

        set("CIRCUIT_BREAKER_THRESHOLD", "2");
        set("CIRCUIT_BREAKER_TIMEOUT", "60");
        set("MAX_CONNECTIONS_PER_SOURCE", "2");
        submit("{\"urls\": [\"http://a.example/0.png\", \"http://a.example/1.png\", "
               "\"http://a.example/2.png\"],"
               " \"timeout\": 20}",
               id);
        start();
        turn();
        ck_assert_int_eq(running(), 2);
        http("http://a.example/0.png", 503);
        http("http://a.example/1.png", 503);
        step(TICK); /* open for 60 s: its probe comes after the job's 20 s */

        ck_assert_uint_eq(fe.n, 2);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_FAILED);
        ck_assert_int_eq(j->finished_at, WALL0 + now); /* at once, not at the deadline */
        ck_assert_int_eq(j->progress.skipped, 3);
        ck_assert_str_eq(per_source(j, "a.example")->error.code, "circuit_open");
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        for (int i = 0; i < 2; i++) { /* tried: their own error stays, with why they were not tried again */
                ck_assert_int_eq(it[i].state, ITEM_SKIPPED);
                ck_assert_str_eq(it[i].error.code, "http_5xx");
                ck_assert_msg(contains(it[i].error.message,
                                       "HTTP 503; not tried again: the circuit of a.example is open"),
                              "%s", it[i].error.message);
        }
        ck_assert_int_eq(it[2].state, ITEM_SKIPPED); /* never tried */
        ck_assert_str_eq(it[2].error.code, "circuit_open");
        ck_assert_msg(contains(it[2].error.message, "comes after the job's timeout"), "%s",
                      it[2].error.message);
        items_free(it, n);
}
END_TEST

/* ---- max and limits ---------------------------------------------------------------------- */

START_TEST(test_max_reached_ends_job_at_once)
{
        char id[JOB_ID_LEN + 1], want[256];

        write_sources(20);
        submit("{\"query\": \"cats\", \"sources\": [\"alpha\", \"beta\"], \"max\": 2}", id);
        start();
        turn();
        ck_assert_int_eq(running(), 2); /* a page of each source */
        struct fake_xfer *pa = fake_find_part(&fe, "alpha.test"), *pb = fake_find_part(&fe, "beta.test");
        ck_assert_ptr_nonnull(pa);
        ck_assert_ptr_nonnull(pb);
        ck_assert_str_eq(pa->url, "http://alpha.test/search?q=cats&page=1");
        fake_page(&fe, pa,
                  "{\"results\": [{\"url\": \"http://img.test/a1.png\"}, {\"url\": "
                  "\"http://img.test/a2.png\"},"
                  " {\"url\": \"http://img.test/a3.png\"}]}");
        step(TICK);
        ck_assert_int_eq(running(), 3); /* beta's page, and two downloads: max */
        ck_assert_int_eq(fake_starts(&fe, "http://img.test/a3.png"), 0);
        ok("http://img.test/a1.png", "first");
        ok("http://img.test/a2.png", "second");
        step(TICK);
        step(TICK); /* both files in place: max reached */

        ck_assert_int_eq(running(), 0);
        ck_assert_int_eq(pb->state, FAKE_ABORTED); /* beta's page was still out */
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_SUCCEEDED);
        ck_assert_int_eq(j->progress.succeeded, 2);
        ck_assert_int_eq(j->progress.skipped, 1);
        ck_assert_int_eq(per_source(j, "alpha")->state, SRC_DONE);
        ck_assert_int_eq(per_source(j, "alpha")->pages, 1);
        ck_assert_str_eq(per_source(j, "alpha")->listing, "max_reached");
        ck_assert_int_eq(per_source(j, "beta")->pages, 0);
        ck_assert_str_eq(per_source(j, "beta")->listing, "max_reached");
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_uint_eq(n, 3);
        snprintf(want, sizeof(want), "%s/alpha/a1.png", id);
        ck_assert_str_eq(it[0].path, want);
        ck_assert_int_eq(it[2].state, ITEM_SKIPPED);
        ck_assert_str_eq(it[2].error.code, "max_reached");
        ck_assert_int_eq(it[2].attempts, 0);
        items_free(it, n);
}
END_TEST

START_TEST(test_max_below_urls_moves_to_other_host)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\", \"http://b.example/2.png\"], \"max\": 1}", id);
        start();
        turn();
        ck_assert_int_eq(running(), 1); /* max 1: one in play */
        ck_assert_int_eq(fake_starts(&fe, "http://a.example/1.png"), 1);
        http("http://a.example/1.png", 404);
        step(TICK);
        /* the place under max came free: the other host's URL starts */
        ck_assert_int_eq(fake_starts(&fe, "http://b.example/2.png"), 1);
        ok("http://b.example/2.png", "pixels");
        step(TICK);
        step(TICK);
        ck_assert_int_eq(job_state(id), JOB_SUCCEEDED);
}
END_TEST

START_TEST(test_download_and_host_limits)
{
        char id[JOB_ID_LEN + 1], body[2048] = "{\"urls\": [", url[64];

        set("MAX_CONCURRENT_DOWNLOADS", "3");
        set("MAX_CONNECTIONS_PER_SOURCE", "1");
        for (int h = 0; h < 5; h++)
                for (int k = 0; k < 2; k++) {
                        snprintf(url, sizeof(url), "%s\"http://h%d.example/%d.png\"", h + k ? ", " : "", h,
                                 k);
                        strcat(body, url);
                }
        strcat(body, "]}");
        submit(body, id);
        start();
        turn();
        ck_assert_int_eq(running(), 3);
        ok(fake_running(&fe, 0)->url, "x");
        step(TICK);
        ck_assert_int_eq(running(), 3); /* the place is taken again at once */
        for (int k = 0; k < 30 && running() > 0; k++) {
                struct fake_xfer *x = fake_running(&fe, 0);
                snprintf(body, sizeof(body), "body %d", x->id);
                fake_ok(&fe, x, body);
                step(TICK);
        }
        step(TICK);
        ck_assert_uint_eq(fe.n, 10);
        ck_assert_int_eq(fake_peak(&fe), 3);
        ck_assert_int_eq(fake_peak_host(&fe), 1);
        ck_assert_int_eq(job_state(id), JOB_SUCCEEDED);
}
END_TEST

START_TEST(test_max_concurrent_jobs)
{
        char a[JOB_ID_LEN + 1], b[JOB_ID_LEN + 1], c[JOB_ID_LEN + 1];

        set("MAX_CONCURRENT_JOBS", "1");
        submit("{\"urls\": [\"http://a.example/a.png\"]}", a);
        start();
        turn();
        submit("{\"urls\": [\"http://a.example/b.png\"]}", b);
        submit("{\"urls\": [\"http://a.example/c.png\"], \"priority\": 5}", c);
        step(TICK);
        step(SNAP);
        ck_assert_int_eq(running(), 1);
        ck_assert_int_eq(job_state(a), JOB_RUNNING);
        ck_assert_int_eq(job_state(b), JOB_QUEUED);
        ck_assert_int_eq(job_state(c), JOB_QUEUED);
        struct snapshot *snap = snap_now();
        ck_assert_uint_eq(snap->njobs, 1);
        ck_assert_ptr_nonnull(snapshot_job(snap, a));
        snapshot_unref(snap);

        ok("http://a.example/a.png", "a");
        step(TICK);
        step(TICK);
        step(TICK);
        ck_assert_int_eq(job_state(a), JOB_SUCCEEDED);
        /* the higher priority first, and still one at a time */
        ck_assert_int_eq(fake_starts(&fe, "http://a.example/c.png"), 1);
        ck_assert_int_eq(fake_starts(&fe, "http://a.example/b.png"), 0);
        ok("http://a.example/c.png", "c");
        step(TICK);
        step(TICK);
        step(TICK);
        ck_assert_int_eq(fake_starts(&fe, "http://a.example/b.png"), 1);
}
END_TEST

/* ---- time ---------------------------------------------------------------------------------- */

START_TEST(test_job_deadline_times_out)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"], \"timeout\": 5}", id);
        start();
        turn();
        step_to(T0 + 4999);
        ck_assert_int_eq(running(), 1);
        ck_assert_int_eq(job_state(id), JOB_RUNNING);
        step_to(T0 + 5000);
        struct fake_xfer *x = fake_find(&fe, "http://a.example/1.png");
        ck_assert_int_eq(x->state, FAKE_ABORTED);
        ck_assert(!x->kept_part);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_TIMED_OUT);
        ck_assert_str_eq(j->error.code, "job_timeout");
        ck_assert_int_eq(per_source(j, "a.example")->state, SRC_TIMED_OUT);
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_SKIPPED);
        ck_assert_str_eq(it[0].error.code, "job_timeout");
        items_free(it, n);
        ck_assert_int_eq(terminal_events(id), 1);
}
END_TEST

START_TEST(test_source_timeout_closes_query_group)
{
        char id[JOB_ID_LEN + 1];

        set("SOURCE_TIMEOUT", "5");
        write_sources(20);
        submit("{\"query\": \"cats\", \"sources\": [\"alpha\"]}", id);
        start();
        turn();
        struct fake_xfer *page = fake_find_part(&fe, "alpha.test");
        ck_assert_ptr_nonnull(page);
        step_to(T0 + 4999);
        ck_assert_int_eq(page->state, FAKE_RUNNING);
        step_to(T0 + 5000);
        ck_assert_int_eq(page->state, FAKE_ABORTED);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_FAILED);
        ck_assert_int_eq(per_source(j, "alpha")->state, SRC_TIMED_OUT);
        ck_assert_str_eq(per_source(j, "alpha")->error.code, "source_timeout");
        ck_assert_str_eq(per_source(j, "alpha")->listing, "source_timeout");
        job_free(j);
}
END_TEST

START_TEST(test_source_timeout_of_url_groups)
{
        char plain[JOB_ID_LEN + 1], own[JOB_ID_LEN + 1];

        set("SOURCE_TIMEOUT", "5");
        submit("{\"urls\": [\"http://a.example/1.png\"]}", plain);
        submit("{\"urls\": [\"http://b.example/2.png\"], \"source_timeout\": 5}", own);
        start();
        turn();
        ck_assert_int_eq(running(), 2);
        step_to(T0 + 4999);
        ck_assert_int_eq(running(), 2);
        step_to(T0 + 5000);
        /* the job's own source_timeout bounds its URLs */
        struct fake_xfer *b = fake_find(&fe, "http://b.example/2.png");
        ck_assert_int_eq(b->state, FAKE_ABORTED);
        struct job *j = job_get(own);
        ck_assert_int_eq(j->state, JOB_FAILED);
        ck_assert_int_eq(per_source(j, "b.example")->state, SRC_TIMED_OUT);
        job_free(j);
        size_t n;
        struct item *it = items_get(own, &n);
        ck_assert_str_eq(it[0].error.code, "source_timeout");
        items_free(it, n);

        /* SOURCE_TIMEOUT alone does not touch explicit URLs */
        step_to(T0 + 60000);
        ck_assert_int_eq(fake_find(&fe, "http://a.example/1.png")->state, FAKE_RUNNING);
        j = job_get(plain);
        ck_assert_int_eq(j->state, JOB_RUNNING);
        ck_assert_int_eq(per_source(j, "a.example")->state, SRC_DOWNLOADING);
        job_free(j);
}
END_TEST

/* ---- query sources ----------------------------------------------------------------------- */

static void page_of(const char *page_url_part, const char *body)
{
        struct fake_xfer *x = fake_find_part(&fe, page_url_part);
        ck_assert_msg(x && x->state == FAKE_RUNNING, "%s is not in flight", page_url_part);
        fake_page(&fe, x, body);
}

START_TEST(test_listing_pages_until_empty)
{
        char id[JOB_ID_LEN + 1];

        write_sources(2);
        submit("{\"query\": \"cats\", \"sources\": [\"alpha\"], \"max\": 5}", id);
        start();
        turn();
        page_of("page=1", "{\"results\": [{\"url\": \"http://img.test/1.png\"}, {\"url\": "
                          "\"http://img.test/2.png\"}]}");
        step(TICK);
        ck_assert_ptr_nonnull(fake_find_part(&fe, "page=2")); /* 2 candidates of 5 wanted */
        page_of("page=2", "{\"results\": [{\"url\": \"http://img.test/3.png\"}, {\"url\": "
                          "\"http://img.test/4.png\"}]}");
        step(TICK);
        page_of("page=3", "{\"results\": []}");
        step(TICK);
        step(SNAP);
        step(JOBRUN_PER_SOURCE_EVERY_MS); /* a running job's per_source is written every second */
        ck_assert_ptr_null(fake_find_part(&fe, "page=4")); /* an empty page ends the listing */
        struct job *j = job_get(id);
        ck_assert_int_eq(per_source(j, "alpha")->pages, 3);
        ck_assert_str_eq(per_source(j, "alpha")->listing, "exhausted");
        ck_assert_int_eq(j->progress.total, 4);
        job_free(j);

        for (int k = 0; k < 10 && running() > 0; k++) {
                struct fake_xfer *x = fake_running(&fe, 0);
                ck_assert(!x->to_memory);
                fake_ok(&fe, x, x->url);
                step(TICK);
        }
        step(TICK);
        j = job_get(id);
        ck_assert_int_eq(j->state, JOB_SUCCEEDED);
        ck_assert_int_eq(j->progress.succeeded, 4);
        ck_assert_int_eq(per_source(j, "alpha")->state, SRC_DONE);
        job_free(j);
        ck_assert_uint_eq(fe.n, 3 + 4);
}
END_TEST

START_TEST(test_listing_waits_until_more_are_needed)
{
        char id[JOB_ID_LEN + 1];

        write_sources(2);
        submit("{\"query\": \"cats\", \"sources\": [\"alpha\"], \"max\": 2}", id);
        start();
        turn();
        page_of("page=1", "{\"results\": [{\"url\": \"http://img.test/1.png\"}, {\"url\": "
                          "\"http://img.test/2.png\"}]}");
        step(TICK);
        step(1000);
        step(1000);
        ck_assert_ptr_null(fake_find_part(&fe, "page=2")); /* two candidates for max 2 */
        http("http://img.test/1.png", 404);
        step(TICK);
        ck_assert_ptr_nonnull(fake_find_part(&fe, "page=2")); /* one more is needed now */
        page_of("page=2", "{\"results\": [{\"url\": \"http://img.test/3.png\"}]}");
        step(TICK);
        ck_assert_int_eq(fake_starts(&fe, "http://img.test/3.png"), 1);
        ok("http://img.test/2.png", "two");
        ok("http://img.test/3.png", "three");
        step(TICK);
        step(TICK);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_SUCCEEDED);
        ck_assert_int_eq(j->progress.succeeded, 2);
        ck_assert_int_eq(j->progress.failed, 1);
        job_free(j);
}
END_TEST

START_TEST(test_max_concurrent_sources)
{
        char id[JOB_ID_LEN + 1];

        set("MAX_CONCURRENT_SOURCES", "1");
        write_sources(20);
        submit("{\"query\": \"cats\", \"sources\": [\"alpha\", \"beta\"]}", id);
        start();
        turn();
        step(SNAP);
        ck_assert_int_eq(running(), 1); /* one source of the job at a time */
        ck_assert_ptr_nonnull(fake_find_part(&fe, "alpha.test"));
        ck_assert_ptr_null(fake_find_part(&fe, "beta.test"));
        page_of("alpha.test", "{\"results\": []}");
        step(TICK); /* alpha has no more: beta's turn */
        ck_assert_ptr_nonnull(fake_find_part(&fe, "beta.test"));
        page_of("beta.test", "{\"results\": []}");
        step(TICK);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_FAILED);
        ck_assert_str_eq(j->error.code, "no_items");
        ck_assert_str_eq(per_source(j, "alpha")->listing, "exhausted");
        ck_assert_str_eq(per_source(j, "beta")->listing, "exhausted");
        job_free(j);
}
END_TEST

/* ---- commands -------------------------------------------------------------------------------- */

START_TEST(test_cancel_running_job)
{
        char id[JOB_ID_LEN + 1], unknown[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/2.png\"]}", id);
        start();
        turn();
        ck_assert_int_eq(running(), 2);
        ck_assert_int_eq(sched_cancel(s, id), 0);
        ck_assert_int_eq(running(), 0); /* stopped at once, parts removed */
        ck_assert_int_eq(fe.x[0]->state, FAKE_ABORTED);
        ck_assert(!fe.x[0]->kept_part);
        struct job *j = job_get(id); /* written before the answer */
        ck_assert_int_eq(j->state, JOB_CANCELLED);
        ck_assert_str_eq(j->error.code, "cancelled");
        ck_assert_int_eq(j->progress.skipped, 2);
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_str_eq(it[0].error.code, "cancelled");
        items_free(it, n);
        ck_assert_int_eq(terminal_events(id), 1);

        ck_assert_int_eq(sched_cancel(s, id), -EBUSY);
        ck_assert_int_eq(sched_pause(s, id), -EBUSY);
        ck_assert_int_eq(sched_resume(s, id), -EBUSY);
        ck_assert_int_eq(sched_cancel(s, "not-a-job"), -ENOENT);
        job_id_new(unknown, WALL0 + now);
        ck_assert_int_eq(sched_cancel(s, unknown), -ENOENT);
        ck_assert_int_eq(sched_pause(s, unknown), -ENOENT);
        step(SNAP);
        ck_assert_uint_eq(fe.n, 2);

        ck_assert_int_eq(sched_delete(s, id), 0);
        struct job *gone = NULL;
        ck_assert_int_eq(store_job_get(db, id, &gone), -ENOENT);
        ck_assert_int_eq(sched_delete(s, id), -ENOENT);
}
END_TEST

START_TEST(test_pause_and_resume)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        ck_assert_int_eq(sched_pause(s, id), 0);
        ck_assert_int_eq(fe.x[0]->state, FAKE_ABORTED);
        ck_assert(fe.x[0]->kept_part); /* kept for a resume */
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_PAUSED);
        ck_assert_int_eq(j->progress.pending, 1);
        ck_assert_int_eq(j->progress.running, 0);
        job_free(j);
        struct snapshot *snap = snap_now();
        ck_assert_ptr_null(snapshot_job(snap, id));
        snapshot_unref(snap);

        ck_assert_int_eq(sched_pause(s, id), -EBUSY);
        ck_assert_int_eq(sched_retry(s, id), -EBUSY);
        ck_assert_int_eq(sched_delete(s, id), -EBUSY);
        step(1000);
        step(1000);
        ck_assert_int_eq(fake_starts(&fe, u), 1); /* a paused job is not claimed */

        ck_assert_int_eq(sched_resume(s, id), 0);
        ck_assert_int_eq(job_state(id), JOB_QUEUED);
        ck_assert_int_eq(sched_resume(s, id), -EBUSY);
        step(TICK);
        ck_assert_int_eq(fake_starts(&fe, u), 2);
        ck_assert_int_eq(job_state(id), JOB_RUNNING);
        ck_assert_int_eq(sched_resume(s, id), -EBUSY);
        ck_assert_int_eq(sched_retry(s, id), -EBUSY);
        ck_assert_int_eq(sched_delete(s, id), -EBUSY);
        ok(u, "pixels");
        step(TICK);
        step(TICK);
        ck_assert_int_eq(job_state(id), JOB_SUCCEEDED);
}
END_TEST

START_TEST(test_retry_failed_job)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        http(u, 404);
        step(TICK);
        ck_assert_int_eq(job_state(id), JOB_FAILED);

        ck_assert_int_eq(sched_retry(s, id), 0);
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_QUEUED);
        ck_assert_int_eq(j->progress.pending, 1);
        ck_assert_int_eq(j->progress.failed, 0);
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_PENDING);
        ck_assert_int_eq(it[0].attempts, 0);
        ck_assert_ptr_null(it[0].error.code);
        items_free(it, n);

        step(TICK);
        ck_assert_int_eq(fake_starts(&fe, u), 2);
        ok(u, "pixels");
        step(TICK);
        step(TICK);
        ck_assert_int_eq(job_state(id), JOB_SUCCEEDED);
        ck_assert_int_eq(terminal_events(id), 2);
}
END_TEST

START_TEST(test_commands_on_queued_jobs)
{
        char a[JOB_ID_LEN + 1], b[JOB_ID_LEN + 1], c[JOB_ID_LEN + 1];

        set("MAX_CONCURRENT_JOBS", "1");
        submit("{\"urls\": [\"http://a.example/a.png\"]}", a);
        submit("{\"urls\": [\"http://a.example/b.png\"]}", b);
        submit("{\"urls\": [\"http://a.example/c.png\"]}", c);
        start();
        turn();
        ck_assert_int_eq(sched_pause(s, b), 0);
        ck_assert_int_eq(job_state(b), JOB_PAUSED);
        ck_assert_int_eq(sched_cancel(s, c), 0);
        struct job *j = job_get(c);
        ck_assert_int_eq(j->state, JOB_CANCELLED);
        ck_assert_int_eq(j->progress.skipped, 1);
        job_free(j);
        ck_assert_int_eq(sched_retry(s, b), -EBUSY); /* not terminal */

        ok("http://a.example/a.png", "a");
        step(TICK);
        step(TICK);
        step(TICK);
        step(SNAP);
        ck_assert_int_eq(job_state(a), JOB_SUCCEEDED);
        ck_assert_uint_eq(fe.n, 1); /* b paused, c cancelled: nothing more to run */
        ck_assert_int_eq(sched_resume(s, b), 0);
        step(TICK);
        ck_assert_int_eq(fake_starts(&fe, "http://a.example/b.png"), 1);
        ck_assert_int_eq(fake_starts(&fe, "http://a.example/c.png"), 0);
}
END_TEST

/* ---- the job table failing ------------------------------------------------------------------ */

static void sql(const char *text)
{
        char path[4300];
        sqlite3 *raw = NULL;

        snprintf(path, sizeof(path), "%s/jobs.db", tmp);
        ck_assert_int_eq(sqlite3_open(path, &raw), SQLITE_OK);
        sqlite3_busy_timeout(raw, 5000);
        ck_assert_msg(sqlite3_exec(raw, text, NULL, NULL, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(raw));
        sqlite3_close(raw);
}

START_TEST(test_store_failure_keeps_changes)
{
        const char *u = "http://a.example/1.png";
        char id[JOB_ID_LEN + 1], want[256];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        ck_assert_int_eq(job_state(id), JOB_RUNNING);

        /* every write of a job row fails, whoever writes it (root too) */
        sql("CREATE TRIGGER no_job_writes BEFORE UPDATE ON jobs"
            " BEGIN SELECT RAISE(ABORT, 'the job table refuses writes'); END;");
        ok(u, "pixels");
        step(TICK);
        step(TICK); /* the job ended in memory; its write fails */
        struct snapshot *snap = sched_snapshot(s);
        ck_assert(!snap->store_ok);
        ck_assert(!snap->accepting);
        ck_assert_str_eq(
                snap->store_error,
                "the job table cannot be written (Input/output error); changes are kept and retried");
        snapshot_unref(snap);
        ck_assert_int_eq(job_state(id), JOB_RUNNING);
        ck_assert_int_eq(terminal_events(id), 0); /* nothing announced before it is written */
        step(SNAP);
        step(SNAP * 3);
        ck_assert_int_eq(job_state(id), JOB_RUNNING);
        snap = snap_now();
        ck_assert(!snap->store_ok);
        snapshot_unref(snap);

        sql("DROP TRIGGER no_job_writes;");
        step(6000); /* past the longest backoff */
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_SUCCEEDED);
        ck_assert_int_eq(j->progress.succeeded, 1);
        job_free(j);
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_eq(it[0].state, ITEM_SUCCEEDED);
        snprintf(want, sizeof(want), "%s/a.example/1.png", id);
        ck_assert_str_eq(it[0].path, want);
        items_free(it, n);
        ck_assert_int_eq(terminal_events(id), 1);
        snap = snap_now();
        ck_assert(snap->store_ok);
        ck_assert(snap->accepting);
        snapshot_unref(snap);
}
END_TEST

/* An idle node whose claims fail says the table is unavailable, tries
 * again on the failure's backoff (not every turn), and is well again once
 * a claim goes through. */
START_TEST(test_idle_node_claim_failure_and_recovery)
{
        char id[JOB_ID_LEN + 1];

        start();
        turn();
        sql("CREATE TRIGGER no_job_writes BEFORE UPDATE ON jobs"
            " BEGIN SELECT RAISE(ABORT, 'the job table refuses writes'); END;");
        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        int64_t wait = sched_turn(s); /* the claim fails */
        ck_assert_int_gt(wait, 0);
        ck_assert_int_le(wait, 100); /* the first backoff */
        struct snapshot *snap = sched_snapshot(s);
        ck_assert(!snap->store_ok);
        ck_assert_str_eq(
                snap->store_error,
                "the job table cannot be written (Input/output error); changes are kept and retried");
        snapshot_unref(snap);
        wait = sched_turn(s); /* not tried again before its time */
        ck_assert_int_gt(wait, 0);
        now += wait;
        wait = sched_turn(s); /* tried, failed again: the backoff doubles */
        ck_assert_int_gt(wait, 100);
        ck_assert_int_le(wait, 200);
        ck_assert_int_eq(job_state(id), JOB_QUEUED);

        sql("DROP TRIGGER no_job_writes;");
        step(wait);
        ck_assert_int_eq(job_state(id), JOB_RUNNING);
        ck_assert_int_eq(running(), 1);
        snap = snap_now();
        ck_assert(snap->store_ok);
        snapshot_unref(snap);
}
END_TEST

/* The same when the heartbeat fails on a node with nothing to claim. */
START_TEST(test_idle_node_beat_failure_and_recovery)
{
        start();
        turn();
        struct snapshot *snap = snap_now();
        ck_assert(snap->store_ok);
        ck_assert_uint_eq(snap->nnodes, 1);
        snapshot_unref(snap);
        sql("CREATE TRIGGER no_beats BEFORE UPDATE ON nodes"
            " BEGIN SELECT RAISE(ABORT, 'the job table refuses writes'); END;");
        step_to(T0 + 10000); /* a heartbeat is due: it fails */
        snap = sched_snapshot(s);
        ck_assert(!snap->store_ok);
        snapshot_unref(snap);

        sql("DROP TRIGGER no_beats;");
        step(500); /* past the backoff: a call goes through */
        snap = snap_now();
        ck_assert(snap->store_ok);
        snapshot_unref(snap);
}
END_TEST

/* ---- leases: jobs shared with other nodes ----------------------------------------------------- */

#define LEASE 30000 /* LEASE_TIMEOUT's default, ms */

/* Another node ("node-x") takes job id's lease now, as its claim would. */
static int64_t other_node_claims(const char *id)
{
        struct store_claim *c = NULL;
        size_t n = 0;

        ck_assert_int_eq(store_job_claim(db, "node-x", 1, WALL0 + now, LEASE, &c, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(c[0].id, id);
        int64_t token = c[0].lease_token;
        free(c);
        return token;
}

static bool leased_to_other(const char *id)
{
        struct job *j = job_get(id);
        bool other = j->lease_owner && strcmp(j->lease_owner, "node-x") == 0;
        job_free(j);
        return other;
}

/* An idle node, woken by nothing, takes over a job whose node stopped
 * renewing once its lease ran out, within a third of a lease. */
START_TEST(test_idle_node_takes_expired_lease)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        other_node_claims(id);
        turn(); /* nothing to claim: the job's lease is live */
        ck_assert_int_eq(running(), 0);
        ck_assert(leased_to_other(id));

        step_to(T0 + LEASE / 2); /* node-x is gone, its lease not out yet */
        step_to(T0 + LEASE - 1);
        ck_assert(leased_to_other(id));
        ck_assert_int_eq(running(), 0);
        for (int64_t t = T0 + LEASE; t <= T0 + LEASE + LEASE / 3; t += 500)
                step_to(t);
        ck_assert_int_eq(running(), 1);
        ck_assert(!leased_to_other(id));
        struct job *j = job_get(id);
        ck_assert_int_eq(j->state, JOB_RUNNING);
        ck_assert_ptr_nonnull(j->lease_owner);
        ck_assert_int_gt(j->lease_until, WALL0 + T0 + LEASE);
        job_free(j);
        ok("http://a.example/1.png", "pixels");
        step(TICK);
        step(TICK);
        ck_assert_int_eq(job_state(id), JOB_SUCCEEDED);
}
END_TEST

/* Another node takes job id's lease (a command there, or a claim after
 * this node's lease ran out): this node's writes of it are refused. */
static void other_node_takes(const char *id)
{
        int64_t token = 0;
        ck_assert_int_eq(store_lease_take(db, id, "node-x", WALL0 + now, LEASE, &token), 0);
        ck_assert_int_gt(token, 0);
}

/* Does DOWNLOAD_DIR/id/host/name exist? */
static bool landed(const char *id, const char *host, const char *name)
{
        char path[8400];
        snprintf(path, sizeof(path), "%s/%s/%s/%s", dl_dir, id, host, name);
        return access(path, F_OK) == 0;
}

/* The item as the table has it. */
static enum item_state item_state(const char *id, int i)
{
        size_t n;
        struct item *it = items_get(id, &n);
        ck_assert_int_lt(i, (int)n);
        enum item_state st = it[i].state;
        items_free(it, n);
        return st;
}

/* The lease is found lost at a renewal while a finished download waits to
 * be settled: its part goes, and nothing of it is written or kept. */
START_TEST(test_lost_lease_drops_answer_not_settled)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        ck_assert_int_eq(running(), 1);
        other_node_takes(id);
        ok("http://a.example/1.png", "pixels"); /* its part is in place, the answer waits */
        ck_assert(landed(id, "a.example", ".0.part"));
        step_to(T0 + LEASE / 3); /* the renewal finds the lease gone */
        for (int k = 0; k < 5; k++)
                step(FLUSH);
        ck_assert(!landed(id, "a.example", ".0.part"));
        ck_assert(!landed(id, "a.example", "1.png"));
        ck_assert(leased_to_other(id));
        ck_assert_int_ne(item_state(id, 0), ITEM_SUCCEEDED);
        ck_assert_int_eq(terminal_events(id), 0);
}
END_TEST

/* The lease is lost while the committer has a finished download's file:
 * the file lands, but no record will name it here, so it goes. */
START_TEST(test_lost_lease_removes_file_with_committer)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        ok("http://a.example/1.png", "pixels");
        step(TICK); /* the answer settled: the part goes to the committer */
        other_node_takes(id);
        step_to(T0 + LEASE / 3); /* the committer is done; the renewal finds the lease gone */
        for (int k = 0; k < 5; k++)
                step(FLUSH);
        ck_assert(!landed(id, "a.example", "1.png"));
        ck_assert(!landed(id, "a.example", ".0.part"));
        ck_assert(leased_to_other(id));
        ck_assert_int_ne(item_state(id, 0), ITEM_SUCCEEDED);
}
END_TEST

/* A write refused for the lease: the item whose success it carried loses
 * its file (the new owner downloads it again); an item whose success was
 * written before keeps its file. No file without a record, no record
 * without a file. */
START_TEST(test_lost_lease_removes_unwritten_success)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/2.png\","
               " \"http://b.example/3.png\"]}",
               id);
        start();
        turn();
        ck_assert_int_eq(running(), 3);
        ok("http://a.example/1.png", "one");
        step(TICK);
        step(TICK);
        step(FLUSH); /* item 0's success is written */
        ck_assert_int_eq(item_state(id, 0), ITEM_SUCCEEDED);
        ck_assert(landed(id, "a.example", "1.png"));

        ok("http://a.example/2.png", "two");
        step(TICK);
        other_node_takes(id);
        step(TICK);  /* item 1 succeeded here: its file is in place */
        step(FLUSH); /* the write is refused: the job goes */
        for (int k = 0; k < 3; k++)
                step(FLUSH);
        ck_assert(leased_to_other(id));
        ck_assert_int_eq(item_state(id, 0), ITEM_SUCCEEDED);
        ck_assert(landed(id, "a.example", "1.png"));
        ck_assert_int_ne(item_state(id, 1), ITEM_SUCCEEDED);
        ck_assert(!landed(id, "a.example", "2.png"));
        ck_assert(!landed(id, "a.example", ".1.part"));
        ck_assert_int_eq(fake_find(&fe, "http://b.example/3.png")->state, FAKE_ABORTED);
        ck_assert_int_eq(running(), 0);
        struct snapshot *snap = snap_now();
        ck_assert_ptr_null(snapshot_job(snap, id));
        snapshot_unref(snap);
}
END_TEST

/* The same when the refused write is the job's end: the job leaves this
 * node unannounced, its file goes. */
START_TEST(test_lost_lease_of_ended_job)
{
        char id[JOB_ID_LEN + 1];

        submit("{\"urls\": [\"http://a.example/1.png\"]}", id);
        start();
        turn();
        ok("http://a.example/1.png", "one");
        step(TICK);
        other_node_takes(id);
        step(TICK); /* it succeeded and ended here; the write is refused */
        for (int k = 0; k < 3; k++)
                step(FLUSH);
        ck_assert(leased_to_other(id));
        ck_assert_int_eq(job_state(id), JOB_RUNNING); /* as node-x runs it */
        ck_assert_int_ne(item_state(id, 0), ITEM_SUCCEEDED);
        ck_assert(!landed(id, "a.example", "1.png"));
        ck_assert_int_eq(terminal_events(id), 0);
        struct snapshot *snap = snap_now();
        ck_assert_ptr_null(snapshot_job(snap, id));
        ck_assert(snap->store_ok);
        snapshot_unref(snap);
}
END_TEST

/* ---- circuits kept in the table -------------------------------------------------------------- */

/* Circuit events of source so far. */
static int circuit_events(const char *source)
{
        struct event ev[MAX_EVS];
        size_t n = events_of(NULL, ev);
        int k = 0;
        for (size_t i = 0; i < n; i++)
                k += ev[i].type == EVENT_CIRCUIT && ev[i].data &&
                     strcmp(ev[i].data->circuit.name, source) == 0;
        events_release(ev, n);
        return k;
}

static struct store_circuit circuit_row(const char *source)
{
        struct store_circuit *v = NULL, row = {0};
        size_t n = 0;

        ck_assert_int_eq(store_circuit_list(db, 0, &v, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].source, source) == 0)
                        row = (struct store_circuit){.state = v[i].state, .updated_at = v[i].updated_at};
        store_circuits_free(v, n);
        return row;
}

/* A circuit another node opened is taken in here and announced once; it
 * is not written back as this node's change (which other nodes would read
 * as news in turn). */
START_TEST(test_circuit_from_table_not_written_back)
{
        write_sources(10);
        start();
        turn();
        struct store_circuit c = {.source = "alpha",
                                  .state = BREAKER_OPEN,
                                  .consecutive_failures = 5,
                                  .trips = 1,
                                  .opened_at = WALL0 + now,
                                  .retry_at = WALL0 + now + 60000,
                                  .open_ms = 60000,
                                  .last_error = "HTTP 503",
                                  .updated_at = WALL0 + now};
        ck_assert_int_eq(store_circuit_put(db, &c), 0);
        for (int k = 0; k < 10; k++)
                step(500);
        struct snapshot *snap = snap_now();
        ck_assert_int_eq(snapshot_circuit(snap, "alpha")->state, BREAKER_OPEN);
        snapshot_unref(snap);
        ck_assert_int_eq(circuit_events("alpha"), 1);
        struct store_circuit row = circuit_row("alpha");
        ck_assert_int_eq(row.state, BREAKER_OPEN);
        ck_assert_int_eq(row.updated_at, c.updated_at); /* nobody wrote it again */
}
END_TEST

/* A circuit opened here is written once and announced once; reading the
 * table back does not take it for news. */
START_TEST(test_own_circuit_written_once)
{
        char id[JOB_ID_LEN + 1];

        set("CIRCUIT_BREAKER_THRESHOLD", "2");
        set("MAX_RETRIES_PER_SOURCE", "0");
        set("MAX_RETRIES_PER_ITEM", "0");
        submit("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/2.png\"]}", id);
        start();
        turn();
        http("http://a.example/1.png", 503);
        http("http://a.example/2.png", 503);
        step(TICK);
        step(FLUSH);
        struct store_circuit row = circuit_row("a.example");
        ck_assert_int_eq(row.state, BREAKER_OPEN);
        ck_assert_int_eq(circuit_events("a.example"), 1);
        for (int k = 0; k < 10; k++)
                step(500);
        ck_assert_int_eq(circuit_events("a.example"), 1);
        ck_assert_int_eq(circuit_row("a.example").updated_at, row.updated_at);
}
END_TEST

/* Another node writes the half-open state this node's circuit is in (it
 * turned half-open by the same clock) while this node's probe is out:
 * nothing new, and no second probe goes. */
START_TEST(test_same_circuit_from_table_keeps_probe)
{
        char id[JOB_ID_LEN + 1], url[64];

        set("CIRCUIT_BREAKER_THRESHOLD", "3");
        set("CIRCUIT_BREAKER_TIMEOUT", "10");
        set("MAX_CONNECTIONS_PER_SOURCE", "3");
        submit("{\"urls\": [\"http://a.example/0.png\", \"http://a.example/1.png\", "
               "\"http://a.example/2.png\", \"http://a.example/3.png\", \"http://a.example/4.png\"]}",
               id);
        start();
        turn();
        for (int i = 0; i < 3; i++) {
                snprintf(url, sizeof(url), "http://a.example/%d.png", i);
                http(url, 503);
        }
        step(TICK);
        int64_t opened = now;
        step_to(opened + 10000); /* half-open: one probe */
        ck_assert_uint_eq(fe.n, 4);
        ck_assert_int_eq(running(), 1);
        int events = circuit_events("a.example");

        struct store_circuit c = {.source = "a.example",
                                  .state = BREAKER_HALF_OPEN,
                                  .consecutive_failures = 3,
                                  .trips = 1,
                                  .opened_at = WALL0 + opened,
                                  .retry_at = WALL0 + opened + 10000,
                                  .open_ms = 10000,
                                  .last_error = "http_5xx: HTTP 503",
                                  .updated_at = WALL0 + now + 5};
        ck_assert_int_eq(store_circuit_put(db, &c), 0);
        for (int k = 0; k < 6; k++)
                step(500);
        ck_assert_uint_eq(fe.n, 4); /* still the one probe */
        ck_assert_int_eq(running(), 1);
        ck_assert_int_eq(circuit_events("a.example"), events);
        fake_ok(&fe, fake_running(&fe, 0), "probe");
        step(TICK); /* its success closes the circuit: the rest go, as many as the host allows */
        ck_assert_int_eq(running(), 3);
        ck_assert_uint_eq(fe.n, 7);
}
END_TEST

/* ---- the snapshot ---------------------------------------------------------------------------- */

START_TEST(test_snapshot_after_a_turn)
{
        char id[JOB_ID_LEN + 1];

        write_sources(10);
        submit("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/2.png\"]}", id);
        start();
        turn();
        ck_assert_int_eq(running(), 2);
        fake_find(&fe, "http://a.example/1.png")->progress =
                (struct xfer_progress){.bytes = 1234, .expected = 4000, .speed_bps = 100};
        fake_find(&fe, "http://a.example/2.png")->progress =
                (struct xfer_progress){.bytes = 66, .expected = 1000, .speed_bps = 50};

        struct snapshot *snap = snap_now();
        ck_assert_int_eq(snap->mono_ms, now);
        ck_assert_int_eq(snap->wall_ms, WALL0 + now);
        ck_assert(snap->store_ok);
        ck_assert_int_eq(snap->transfers, 2);
        ck_assert_int_eq(snap->bytes_in_flight, 1300);
        ck_assert_ptr_nonnull(snap->node);

        const struct snapshot_job *sj = snapshot_job(snap, id);
        ck_assert_ptr_nonnull(sj);
        ck_assert_int_eq(sj->live.progress.running, 2);
        ck_assert_int_eq(sj->live.progress.bytes, 1300);
        ck_assert_int_eq(sj->live.bytes_expected, 5000);
        ck_assert_int_eq(sj->live.speed_bps, 150);
        ck_assert_uint_eq(sj->nitems, 2);
        int k1 = sj->items[0].index == 0 ? 0 : 1;
        ck_assert_int_eq(sj->items[k1].index, 0);
        ck_assert_int_eq(sj->items[k1].bytes, 1234);
        ck_assert_int_eq(sj->items[k1].bytes_expected, 4000);
        ck_assert_int_eq(sj->items[1 - k1].bytes, 66);

        /* a host first seen this turn: its circuit shows with the next export */
        ck_assert_ptr_null(snapshot_circuit(snap, "a.example"));
        snapshot_unref(snap);
        step(SNAPSHOT_CIRCUITS_EVERY_MS);
        snap = snap_now();
        const struct src_info *c = snapshot_circuit(snap, "a.example");
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(c->state, BREAKER_CLOSED);
        ck_assert_int_eq(c->active, 2);
        ck_assert(!c->query);
        c = snapshot_circuit(snap, "alpha"); /* configured sources are known from the start */
        ck_assert_ptr_nonnull(c);
        ck_assert(c->query);
        ck_assert_int_eq(c->active, 0);

        ck_assert_uint_eq(snap->nsources, 2);
        const struct snapshot_source *src = snapshot_source(snap, "alpha");
        ck_assert_ptr_nonnull(src);
        ck_assert(src->available);
        ck_assert_int_eq(src->max_connections, 3);
        ck_assert(src->requests_per_second == 50);
        ck_assert_int_eq(src->per_page, 10);
        src = snapshot_source(snap, "beta");
        ck_assert_int_eq(src->max_connections, cfg.max_connections_per_source);
        snapshot_unref(snap);

        /* the next one follows the bytes */
        fake_find(&fe, "http://a.example/1.png")->progress.bytes = 2000;
        snap = snap_now();
        ck_assert_int_eq(snapshot_job(snap, id)->live.progress.bytes, 2066);
        snapshot_unref(snap);
}
END_TEST

static Suite *sched_suite(void)
{
        Suite *su = suite_create("sched");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_url_job_succeeds);
        tcase_add_test(tc, test_retry_after_backoff);
        tcase_add_test(tc, test_attempts_per_round_and_rounds);
        tcase_add_test(tc, test_job_max_retries_sets_the_round);
        tcase_add_test(tc, test_retry_event_tells_the_failed_attempt);
        tcase_add_test(tc, test_retry_past_deadline_fails_at_once);
        tcase_add_test(tc, test_circuit_defers_then_one_probe);
        tcase_add_test(tc, test_circuit_past_deadline_skips_waiting);
        tcase_add_test(tc, test_max_reached_ends_job_at_once);
        tcase_add_test(tc, test_max_below_urls_moves_to_other_host);
        tcase_add_test(tc, test_download_and_host_limits);
        tcase_add_test(tc, test_max_concurrent_jobs);
        tcase_add_test(tc, test_job_deadline_times_out);
        tcase_add_test(tc, test_source_timeout_closes_query_group);
        tcase_add_test(tc, test_source_timeout_of_url_groups);
        tcase_add_test(tc, test_listing_pages_until_empty);
        tcase_add_test(tc, test_listing_waits_until_more_are_needed);
        tcase_add_test(tc, test_max_concurrent_sources);
        tcase_add_test(tc, test_cancel_running_job);
        tcase_add_test(tc, test_pause_and_resume);
        tcase_add_test(tc, test_retry_failed_job);
        tcase_add_test(tc, test_commands_on_queued_jobs);
        tcase_add_test(tc, test_store_failure_keeps_changes);
        tcase_add_test(tc, test_idle_node_claim_failure_and_recovery);
        tcase_add_test(tc, test_idle_node_beat_failure_and_recovery);
        tcase_add_test(tc, test_idle_node_takes_expired_lease);
        tcase_add_test(tc, test_lost_lease_drops_answer_not_settled);
        tcase_add_test(tc, test_lost_lease_removes_file_with_committer);
        tcase_add_test(tc, test_lost_lease_removes_unwritten_success);
        tcase_add_test(tc, test_lost_lease_of_ended_job);
        tcase_add_test(tc, test_circuit_from_table_not_written_back);
        tcase_add_test(tc, test_own_circuit_written_once);
        tcase_add_test(tc, test_same_circuit_from_table_keeps_probe);
        tcase_add_test(tc, test_snapshot_after_a_turn);
        suite_add_tcase(su, tc);
        return su;
}

int main(void) { return testutil_run(sched_suite()); }

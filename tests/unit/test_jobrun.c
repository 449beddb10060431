/* Unit tests of daemon/jobrun.c: a job in memory against a real SQLite
 * job table in a temp directory; times are plain numbers (no sleeps). */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/job_request.h"
#include "daemon/jobrun.h"
#include "daemon/store.h"
#include "tests/unit/testutil.h"

static char *tmp;
static struct store *st;
static char id[JOB_ID_LEN + 1];

static void setup(void)
{
        char url[4200];
        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        snprintf(url, sizeof(url), "sqlite:%s/jobs.db", tmp);
        ck_assert_int_eq(store_open(url, &st), 0);
}

static void teardown(void)
{
        store_close(st);
        st = NULL;
        testutil_rmtree(tmp);
        tmp = NULL;
}

/* A job from a request body, as the API would store it. */
static void insert(const char *body)
{
        struct job *j = NULL;
        struct item *items = NULL;
        size_t n = 0;
        json_t *errors = NULL;

        ck_assert_int_eq(job_request_parse(body, strlen(body), &j, &items, &n, &errors), 0);
        job_id_new(j->id, 1700000000000LL);
        j->timeout = 300;
        j->state = JOB_QUEUED;
        ck_assert_int_eq(job_request_tally(j, items, n), 0);
        ck_assert_int_eq(store_job_insert(st, j, items, n), 0);
        snprintf(id, sizeof(id), "%s", j->id);
        job_free(j);
        items_free(items, n);
}

static struct jobrun *load(void)
{
        struct jobrun *jr = NULL;
        ck_assert_int_eq(jobrun_load(st, id, 1, &jr), 0);
        return jr;
}

/* Write what changed and forget it, as the scheduler's flush does at
 * monotonic time now. */
static void write_at(struct jobrun *jr, int64_t now)
{
        ck_assert_int_eq(store_begin(st), 0);
        ck_assert_int_eq(jobrun_write(jr, st, now), 0);
        ck_assert_int_eq(store_commit(st), 0);
        jobrun_written(jr, now);
}

static void write_all(struct jobrun *jr) { write_at(jr, 1000000); }

/* The stored job's per_source counter of succeeded items of group g. */
static int64_t stored_succeeded(int g)
{
        struct job *j = NULL;
        ck_assert_int_eq(store_job_get(st, id, &j), 0);
        int64_t n = j->per_source[g].succeeded;
        job_free(j);
        return n;
}

static const char *three_urls = "{\"urls\": [\"http://a.example/1.png\", \"http://a.example/2.png\","
                                " \"http://b.example:8080/3.png\"]}";

START_TEST(test_load_groups_and_counts)
{
        insert(three_urls);
        struct jobrun *jr = load();
        const struct job *j = jobrun_job(jr);

        ck_assert_uint_eq(jobrun_nitems(jr), 3);
        ck_assert_uint_eq(jobrun_ngroups(jr), 2);
        ck_assert_str_eq(jobrun_source(jr, jobrun_group_of(jr, 0))->source, "a.example");
        ck_assert_str_eq(jobrun_source(jr, jobrun_group_of(jr, 2))->source, "b.example:8080");
        ck_assert_int_eq(j->progress.total, 3);
        ck_assert_int_eq(j->progress.pending, 3);
        ck_assert_uint_eq(jobrun_queued(jr, jobrun_group_of(jr, 0)), 2);
        ck_assert(!jobrun_group_is_query(jr, 0));
        jobrun_free(jr);
}
END_TEST

START_TEST(test_queue_order_and_untake)
{
        insert(three_urls);
        struct jobrun *jr = load();
        int g = jobrun_group_of(jr, 0);

        ck_assert_int_eq(jobrun_take_ready(jr, g), 0);
        jobrun_untake(jr, g, 0);
        ck_assert_int_eq(jobrun_take_ready(jr, g), 0);
        ck_assert_int_eq(jobrun_take_ready(jr, g), 1);
        ck_assert_int_eq(jobrun_take_ready(jr, g), -1);
        jobrun_free(jr);
}
END_TEST

static int ready_calls;
static void count_ready(struct jobrun *jr, int g, void *ud)
{
        (void)jr;
        (void)g;
        (void)ud;
        ready_calls++;
}

START_TEST(test_retry_waits_for_its_time)
{
        insert(three_urls);
        struct jobrun *jr = load();
        int g = jobrun_group_of(jr, 0);

        ck_assert_int_eq(jobrun_take_ready(jr, g), 0);
        jobrun_item_started(jr, 0);
        ck_assert_int_eq(jobrun_job(jr)->progress.running, 1);
        ck_assert_int_eq(jobrun_item(jr, 0)->attempts, 1);
        jobrun_item_retry(jr, 0, 5000, 5000, "http_5xx", "HTTP 503");
        ck_assert_int_eq(jobrun_job(jr)->progress.pending, 3);
        ck_assert_uint_eq(jobrun_waiting(jr, g), 1);
        ready_calls = 0;
        ck_assert_int_eq(jobrun_due(jr, 4999, count_ready, NULL), 5000);
        ck_assert_int_eq(ready_calls, 0);
        ck_assert_int_eq(jobrun_due(jr, 5000, count_ready, NULL), INT64_MAX);
        ck_assert_int_eq(ready_calls, 1);
        ck_assert_uint_eq(jobrun_waiting(jr, g), 0);
        ck_assert_int_eq(jobrun_take_ready(jr, g), 1); /* it went to the back */
        ck_assert_int_eq(jobrun_take_ready(jr, g), 0);
        ck_assert_str_eq(jobrun_item(jr, 0)->error.code, "http_5xx");
        jobrun_free(jr);
}
END_TEST

START_TEST(test_skip_keeps_the_real_error)
{
        insert(three_urls);
        struct jobrun *jr = load();
        int g = jobrun_group_of(jr, 0);

        jobrun_take_ready(jr, g);
        jobrun_item_started(jr, 0);
        jobrun_item_retry(jr, 0, 5000, 5000, "http_5xx", "HTTP 500");
        jobrun_skip_rest(jr, g, "circuit_open", "the circuit of a.example is open");
        ck_assert_int_eq(jobrun_item(jr, 0)->state, ITEM_SKIPPED);
        ck_assert_str_eq(jobrun_item(jr, 0)->error.code, "http_5xx");
        ck_assert_ptr_nonnull(strstr(jobrun_item(jr, 0)->error.message, "HTTP 500"));
        ck_assert_ptr_nonnull(strstr(jobrun_item(jr, 0)->error.message, "circuit of a.example"));
        /* never tried: the reason is its error */
        ck_assert_int_eq(jobrun_item(jr, 1)->state, ITEM_SKIPPED);
        ck_assert_str_eq(jobrun_item(jr, 1)->error.code, "circuit_open");
        ck_assert_uint_eq(jobrun_waiting(jr, g), 0);
        ck_assert_int_eq(jobrun_due(jr, 10000, NULL, NULL), INT64_MAX); /* the wait is gone */
        ck_assert_int_eq(jobrun_job(jr)->progress.skipped, 2);
        ck_assert_int_eq(jobrun_source(jr, g)->skipped, 2);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_outcome)
{
        const char *code, *msg;
        insert(three_urls);
        struct jobrun *jr = load();

        for (int i = 0; i < 3; i++) {
                jobrun_take_ready(jr, jobrun_group_of(jr, i));
                jobrun_item_started(jr, i);
        }
        jobrun_item_failed(jr, 0, "http_4xx", "HTTP 404");
        jobrun_item_failed(jr, 1, "http_4xx", "HTTP 404");
        jobrun_item_failed(jr, 2, "http_4xx", "HTTP 404");
        ck_assert_int_eq(jobrun_outcome(jr, &code, &msg), JOB_FAILED);
        ck_assert_str_eq(code, "all_failed");
        jobrun_free(jr);

        insert(three_urls);
        jr = load();
        for (int i = 0; i < 3; i++) {
                jobrun_take_ready(jr, jobrun_group_of(jr, i));
                jobrun_item_started(jr, i);
                jobrun_item_answer(jr, i, 200, 100, 10, 10000, "image/png");
                jobrun_item_succeeded(jr, i, "x/y/z.png", 0, NULL);
        }
        ck_assert_int_eq(jobrun_outcome(jr, &code, &msg), JOB_SUCCEEDED);
        ck_assert_ptr_null(code);
        ck_assert_int_eq(jobrun_job(jr)->progress.bytes, 300);
        ck_assert(jobrun_max_reached(jr)); /* max defaults to the number of URLs */
        jobrun_free(jr);
}
END_TEST

START_TEST(test_duplicates_are_benign)
{
        const char *code, *msg;
        insert("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/1.png\"]}");
        struct jobrun *jr = load();

        ck_assert_int_eq(jobrun_item(jr, 1)->state, ITEM_SKIPPED);
        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 0);
        jobrun_item_succeeded(jr, 0, "p", 0, NULL);
        ck_assert_int_eq(jobrun_outcome(jr, &code, &msg), JOB_SUCCEEDED);
        jobrun_free(jr);
}
END_TEST

/* A running job's per_source is written at most every
 * JOBRUN_PER_SOURCE_EVERY_MS; its progress with every write; all of it
 * when the job ends. A load recounts it from the items. */
START_TEST(test_per_source_paced)
{
        const int64_t t0 = 5000000, every = JOBRUN_PER_SOURCE_EVERY_MS;

        insert(three_urls);
        struct jobrun *jr = load();
        int g = jobrun_group_of(jr, 0);
        jobrun_set_state(jr, JOB_RUNNING, NULL, NULL, 1700000000000LL);
        write_at(jr, t0); /* the first write has it */
        ck_assert_int_eq(jobrun_per_source_due(jr), INT64_MAX);

        ck_assert_int_eq(jobrun_take_ready(jr, g), 0);
        jobrun_item_started(jr, 0);
        jobrun_item_succeeded(jr, 0, "x/a.example/1.png", 0, NULL);
        ck_assert(jobrun_dirty(jr, t0 + 10));
        write_at(jr, t0 + 10); /* the item and the progress, not per_source */
        ck_assert_int_eq(stored_succeeded(g), 0);
        ck_assert_int_eq(jobrun_per_source_due(jr), t0 + every);
        ck_assert(!jobrun_dirty(jr, t0 + every - 1)); /* nothing else waits */
        ck_assert(jobrun_dirty(jr, t0 + every));
        write_at(jr, t0 + every);
        ck_assert_int_eq(stored_succeeded(g), 1);
        ck_assert(!jobrun_dirty(jr, t0 + 10 * every));

        /* its end writes it at once */
        ck_assert_int_eq(jobrun_take_ready(jr, g), 1);
        jobrun_item_started(jr, 1);
        jobrun_item_succeeded(jr, 1, "x/a.example/2.png", 0, NULL);
        write_at(jr, t0 + every + 1);
        ck_assert_int_eq(stored_succeeded(g), 1);
        jobrun_set_state(jr, JOB_PARTIAL, NULL, NULL, 1700000001000LL);
        ck_assert(jobrun_dirty(jr, t0 + every + 2));
        write_at(jr, t0 + every + 2);
        ck_assert_int_eq(stored_succeeded(g), 2);
        jobrun_free(jr);
}
END_TEST

/* A crash before per_source was written: the load recounts it. */
START_TEST(test_per_source_recounted)
{
        insert(three_urls);
        struct jobrun *jr = load();
        int g = jobrun_group_of(jr, 0);
        jobrun_set_state(jr, JOB_RUNNING, NULL, NULL, 1700000000000LL);
        write_at(jr, 100);
        ck_assert_int_eq(jobrun_take_ready(jr, g), 0);
        jobrun_item_started(jr, 0);
        jobrun_item_succeeded(jr, 0, "x/a.example/1.png", 0, NULL);
        write_at(jr, 200);
        ck_assert_int_eq(stored_succeeded(g), 0);
        jobrun_free(jr); /* gone without another write */
        jr = load();
        ck_assert_int_eq(jobrun_source(jr, g)->succeeded, 1);
        ck_assert_int_eq(jobrun_source(jr, g)->items, 2);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_add_item_dedupes)
{
        insert("{\"query\": \"cats\", \"sources\": [\"pics\"], \"max\": 5}");
        struct jobrun *jr = load();

        ck_assert_uint_eq(jobrun_ngroups(jr), 1);
        ck_assert(jobrun_group_is_query(jr, 0));
        ck_assert_int_eq(jobrun_add_item(jr, 0, "http://x.example/1.jpg"), 0);
        ck_assert_int_eq(jobrun_add_item(jr, 0, "http://x.example/2.jpg"), 1);
        ck_assert_int_eq(jobrun_add_item(jr, 0, "http://x.example/1.jpg"), -EEXIST);
        ck_assert_int_eq(jobrun_job(jr)->progress.total, 2);
        ck_assert_int_eq(jobrun_source(jr, 0)->items, 2);
        ck_assert_uint_eq(jobrun_queued(jr, 0), 2);
        /* listed items are inserted by the next write, and read back */
        ck_assert(jobrun_dirty(jr, 1000000));
        write_all(jr);
        ck_assert(!jobrun_dirty(jr, 1000000));
        jobrun_free(jr);
        jr = load();
        ck_assert_uint_eq(jobrun_nitems(jr), 2);
        ck_assert_str_eq(jobrun_item(jr, 1)->url, "http://x.example/2.jpg");
        ck_assert_int_eq(jobrun_add_item(jr, 0, "http://x.example/2.jpg"), -EEXIST);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_item_limit)
{
        insert("{\"query\": \"cats\", \"sources\": [\"pics\"], \"max\": 5}");
        struct jobrun *jr = load();
        char url[64];

        for (int i = 0; i < JOB_MAX_ITEMS; i++) {
                snprintf(url, sizeof(url), "http://x.example/%d.jpg", i);
                ck_assert_int_eq(jobrun_add_item(jr, 0, url), i);
        }
        ck_assert_int_eq(jobrun_add_item(jr, 0, "http://x.example/one-more.jpg"), -E2BIG);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_write_and_reload)
{
        insert(three_urls);
        struct jobrun *jr = load();

        jobrun_begin(jr, 1700000001000LL, 100, 0);
        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 0);
        jobrun_item_answer(jr, 0, 200, 1234, 50, 24680, "image/png");
        jobrun_item_content(jr, 0, "aa");
        jobrun_item_succeeded(jr, 0, "J/a.example/1.png", 200, NULL);
        write_all(jr);
        jobrun_free(jr);

        jr = load();
        const struct item *it = jobrun_item(jr, 0);
        ck_assert_int_eq(it->state, ITEM_SUCCEEDED);
        ck_assert_int_eq(it->bytes, 1234);
        ck_assert_str_eq(it->path, "J/a.example/1.png");
        ck_assert_int_eq(jobrun_job(jr)->state, JOB_RUNNING);
        ck_assert_int_eq(jobrun_job(jr)->progress.succeeded, 1);
        ck_assert_int_eq(jobrun_job(jr)->progress.bytes, 1234);
        ck_assert_int_eq(jobrun_find_content(jr, "aa"), 0);
        ck_assert_int_eq(jobrun_find_content(jr, "bb"), -1);
        jobrun_free(jr);
}
END_TEST

static int evs[4];
static void count_event(struct jobrun *jr, enum jobrun_event ev, int item, const struct jobrun_retry *retry,
                        void *ud)
{
        (void)jr;
        (void)item;
        ck_assert((ev == JOBRUN_EV_RETRY) == (retry != NULL));
        (void)ud;
        evs[ev]++;
}

START_TEST(test_events_after_write)
{
        insert(three_urls);
        struct jobrun *jr = load();

        memset(evs, 0, sizeof(evs));
        jobrun_begin(jr, 1, 1, 0);
        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 0);
        jobrun_item_retry(jr, 0, 10, 10, "timeout", "slow");
        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 1);
        jobrun_item_failed(jr, 1, "http_4xx", "HTTP 404");
        write_all(jr);
        jobrun_drain_events(jr, count_event, NULL);
        ck_assert_int_eq(evs[JOBRUN_EV_JOB], 1);
        ck_assert_int_eq(evs[JOBRUN_EV_RETRY], 1);
        ck_assert_int_eq(evs[JOBRUN_EV_ITEM], 1); /* only the item that ended */
        ck_assert_int_eq(evs[JOBRUN_EV_PROGRESS], 1);
        memset(evs, 0, sizeof(evs));
        jobrun_drain_events(jr, count_event, NULL);
        ck_assert_int_eq(evs[0] + evs[1] + evs[2] + evs[3], 0);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_followers)
{
        insert(three_urls);
        struct jobrun *jr = load();

        jobrun_item_started(jr, 0);
        jobrun_item_content(jr, 0, "cc");
        ck_assert_int_eq(jobrun_find_content(jr, "cc"), 0);
        jobrun_item_started(jr, 1);
        ck_assert_int_eq(jobrun_follow(jr, 1, 0), 0);
        ck_assert_int_eq(jobrun_item_run(jr, 1)->leader, 0);
        ck_assert_int_eq(jobrun_take_follower(jr, 2), -1);
        ck_assert_int_eq(jobrun_take_follower(jr, 0), 1);
        ck_assert_int_eq(jobrun_take_follower(jr, 0), -1);
        /* a file that could not be written no longer stands for its content */
        jobrun_item_failed(jr, 0, "io", "disk full");
        ck_assert_int_eq(jobrun_find_content(jr, "cc"), -1);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_reset_failed)
{
        insert("{\"urls\": [\"http://a.example/1.png\", \"http://a.example/1.png\", "
               "\"http://a.example/2.png\"]}");
        struct jobrun *jr = load();

        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 0);
        jobrun_item_failed(jr, 0, "http_5xx", "HTTP 500");
        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 2);
        jobrun_item_succeeded(jr, 2, "p", 0, NULL);
        jobrun_reset_failed(jr);
        ck_assert_int_eq(jobrun_item(jr, 0)->state, ITEM_PENDING);
        ck_assert_int_eq(jobrun_item(jr, 0)->attempts, 0);
        ck_assert_ptr_null(jobrun_item(jr, 0)->error.code);
        ck_assert_int_eq(jobrun_item(jr, 1)->state, ITEM_SKIPPED); /* the duplicate stays */
        ck_assert_int_eq(jobrun_item(jr, 2)->state, ITEM_SUCCEEDED);
        ck_assert_int_eq(jobrun_take_ready(jr, 0), 0);
        ck_assert_int_eq(jobrun_job(jr)->progress.failed, 0);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_blocked_list)
{
        insert(three_urls);
        struct jobrun *jr = load();
        const int *v;

        jobrun_group(jr, 0)->blocked_gen = 7;
        jobrun_set_blocked(jr, 0, true);
        jobrun_set_blocked(jr, 0, true);
        jobrun_group(jr, 1)->blocked_until = 99;
        jobrun_set_blocked(jr, 1, true);
        ck_assert_uint_eq(jobrun_blocked(jr, &v), 2);
        jobrun_set_blocked(jr, 0, false);
        ck_assert_uint_eq(jobrun_blocked(jr, &v), 1);
        ck_assert_int_eq(v[0], 1);
        ck_assert_uint_eq(jobrun_group(jr, 0)->blocked_gen, 0);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_marked_once)
{
        insert(three_urls);
        struct jobrun *jr = load();

        jobrun_mark(jr, 1);
        jobrun_mark(jr, 0);
        jobrun_mark(jr, 1);
        ck_assert_int_eq(jobrun_take_marked(jr), 1);
        ck_assert_int_eq(jobrun_take_marked(jr), 0);
        ck_assert_int_eq(jobrun_take_marked(jr), -1);
        jobrun_free(jr);
}
END_TEST

START_TEST(test_load_unknown)
{
        struct jobrun *jr = NULL;
        ck_assert_int_eq(jobrun_load(st, "01KB0000000000000000000000", 1, &jr), -ENOENT);
        ck_assert_ptr_null(jr);
}
END_TEST

/* An item changed since the last write is not written; after it, it is. */
START_TEST(test_item_written)
{
        insert(three_urls);
        struct jobrun *jr = load();

        for (int i = 0; i < 3; i++)
                ck_assert(jobrun_item_written(jr, i));
        ck_assert(!jobrun_item_written(jr, 3));
        ck_assert(!jobrun_item_written(jr, -1));
        jobrun_begin(jr, 1700000001000LL, 100, 0);
        jobrun_take_ready(jr, 0);
        jobrun_item_started(jr, 0);
        jobrun_item_answer(jr, 0, 200, 4, 50, 80, "image/png");
        jobrun_item_content(jr, 0, "aa");
        jobrun_item_succeeded(jr, 0, "J/a.example/1.png", 0, "node-a");
        ck_assert(!jobrun_item_written(jr, 0));
        ck_assert(jobrun_item_written(jr, 1));
        write_all(jr);
        ck_assert(jobrun_item_written(jr, 0));
        jobrun_free(jr);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("jobrun");
        TCase *tc = tcase_create("core");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_load_groups_and_counts);
        tcase_add_test(tc, test_queue_order_and_untake);
        tcase_add_test(tc, test_retry_waits_for_its_time);
        tcase_add_test(tc, test_skip_keeps_the_real_error);
        tcase_add_test(tc, test_outcome);
        tcase_add_test(tc, test_duplicates_are_benign);
        tcase_add_test(tc, test_add_item_dedupes);
        tcase_add_test(tc, test_per_source_paced);
        tcase_add_test(tc, test_per_source_recounted);
        tcase_add_test(tc, test_item_limit);
        tcase_add_test(tc, test_write_and_reload);
        tcase_add_test(tc, test_events_after_write);
        tcase_add_test(tc, test_followers);
        tcase_add_test(tc, test_reset_failed);
        tcase_add_test(tc, test_blocked_list);
        tcase_add_test(tc, test_marked_once);
        tcase_add_test(tc, test_load_unknown);
        tcase_add_test(tc, test_item_written);
        suite_add_tcase(s, tc);
        return testutil_run(s);
}

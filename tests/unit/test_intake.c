/* Unit tests of daemon/intake.c: group commit of new jobs into a real
 * SQLite job table in a temp directory.
 *
 * What goes into one batch is made certain without sleeping: a first
 * submission's answer (on the writer's thread) waits at a gate the test
 * opens, and whatever the test submits meanwhile is queued together; the
 * writer calls wake() once per batch that inserted a job. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/job_request.h"
#include "daemon/intake.h"
#include "daemon/store.h"
#include "tests/unit/testutil.h"

static char *tmp;
static char url[4200];
static struct store *db; /* the test's own connection, for reading */
static struct intake *in;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int answers; /* every answer, all submissions */
static int wakes;
static bool gate_open, at_gate;

struct sub {
        struct intake_req req;
        struct job *job;
        struct item *items;
        size_t n;
        bool gate; /* its answer waits for the gate */
        int answers;
        int result;
        char existing[JOB_ID_LEN + 1]; /* -EEXIST: the job holding the key */
        char existing_hash[65];
};

static void on_wake(void *ud)
{
        (void)ud;
        pthread_mutex_lock(&lock);
        wakes++;
        pthread_mutex_unlock(&lock);
}

static void on_done(struct intake_req *r, void *ud)
{
        struct sub *s = ud;

        pthread_mutex_lock(&lock);
        s->answers++;
        s->result = r->result;
        if (r->existing) {
                snprintf(s->existing, sizeof(s->existing), "%s", r->existing->id);
                snprintf(s->existing_hash, sizeof(s->existing_hash), "%s",
                         r->existing->request_hash ? r->existing->request_hash : "");
                job_free(r->existing);
                r->existing = NULL;
        }
        answers++;
        pthread_cond_broadcast(&changed);
        while (s->gate && !gate_open) {
                at_gate = true;
                pthread_cond_broadcast(&changed);
                pthread_cond_wait(&changed, &lock);
        }
        pthread_mutex_unlock(&lock);
}

static void setup(void)
{
        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        snprintf(url, sizeof(url), "sqlite:%s/jobs.db", tmp);
        ck_assert_int_eq(store_open(url, &db), 0);
        answers = wakes = 0;
        gate_open = at_gate = false;
        ck_assert_int_eq(intake_new(url, on_wake, NULL, &in), 0);
}

static void teardown(void)
{
        intake_free(in);
        in = NULL;
        store_close(db);
        db = NULL;
        testutil_rmtree(tmp);
        tmp = NULL;
}

/* A job as the API hands it over: label, and an Idempotency-Key when key. */
static struct sub *sub_new(const char *label, const char *key, const char *hash)
{
        char body[256];
        struct sub *s = calloc(1, sizeof(*s));
        json_t *errors = NULL;

        ck_assert_ptr_nonnull(s);
        snprintf(body, sizeof(body), "{\"urls\": [\"http://a.example/1.png\"], \"label\": \"%s\"}", label);
        ck_assert_int_eq(job_request_parse(body, strlen(body), &s->job, &s->items, &s->n, &errors), 0);
        job_id_new(s->job->id, 1700000000000LL);
        s->job->created_at = 1700000000000LL;
        s->job->timeout = 300;
        s->job->state = JOB_QUEUED;
        if (key) {
                s->job->idempotency_key = strdup(key);
                s->job->request_hash = strdup(hash);
        }
        ck_assert_int_eq(job_request_tally(s->job, s->items, s->n), 0);
        s->req = (struct intake_req){
                .job = s->job, .items = s->items, .nitems = s->n, .done = on_done, .ud = s};
        return s;
}

static void sub_free(struct sub *s)
{
        job_free(s->job);
        items_free(s->items, s->n);
        free(s);
}

static void wait_answers(int n)
{
        pthread_mutex_lock(&lock);
        while (answers < n)
                pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
}

/* Submit a gated job and wait until the writer holds at its answer: what
 * is submitted next goes into one batch. */
static struct sub *hold_writer(void)
{
        struct sub *g = sub_new("gate", NULL, NULL);

        g->gate = true;
        intake_submit(in, &g->req);
        pthread_mutex_lock(&lock);
        while (!at_gate)
                pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
        return g;
}

static void release_writer(void)
{
        pthread_mutex_lock(&lock);
        gate_open = true;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
}

static bool stored(const struct sub *s)
{
        struct job *j = NULL;
        int r = store_job_get(db, s->job->id, &j);
        ck_assert(r == 0 || r == -ENOENT);
        job_free(j);
        return r == 0;
}

static int wakes_now(void)
{
        pthread_mutex_lock(&lock);
        int n = wakes;
        pthread_mutex_unlock(&lock);
        return n;
}

START_TEST(test_batch_written_together_each_answered_once)
{
        struct sub *g = hold_writer(), *s[3];

        ck_assert_int_eq(wakes_now(), 1);
        for (int i = 0; i < 3; i++) {
                s[i] = sub_new("batch", NULL, NULL);
                intake_submit(in, &s[i]->req);
        }
        release_writer();
        wait_answers(4);
        ck_assert_int_eq(wakes_now(), 2); /* the three in one batch */
        ck_assert_int_eq(g->answers, 1);
        ck_assert_int_eq(g->result, 0);
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(s[i]->answers, 1);
                ck_assert_int_eq(s[i]->result, 0);
                ck_assert(stored(s[i]));
                ck_assert_int_gt(s[i]->job->seq, g->job->seq); /* written back, in submission order */
                if (i > 0)
                        ck_assert_int_eq(s[i]->job->seq, s[i - 1]->job->seq + 1);
        }
        intake_free(in); /* nothing left: no more answers */
        in = NULL;
        ck_assert_int_eq(answers, 4);
        sub_free(g);
        for (int i = 0; i < 3; i++)
                sub_free(s[i]);
}
END_TEST

START_TEST(test_idempotency_key_in_and_across_batches)
{
        struct sub *g = hold_writer();
        struct sub *a = sub_new("a", "key-1", "hash-a"), *b = sub_new("b", "key-1", "hash-b"),
                   *c = sub_new("c", "key-2", "hash-c");

        intake_submit(in, &a->req);
        intake_submit(in, &b->req);
        intake_submit(in, &c->req);
        release_writer();
        wait_answers(4);
        ck_assert_int_eq(a->result, 0);
        ck_assert_int_eq(b->result, -EEXIST);
        ck_assert_str_eq(b->existing, a->job->id);
        ck_assert_str_eq(b->existing_hash, "hash-a");
        ck_assert_int_eq(c->result, 0);
        ck_assert(stored(a));
        ck_assert(!stored(b));
        ck_assert(stored(c));

        struct sub *d = sub_new("d", "key-1", "hash-a");
        intake_submit(in, &d->req);
        wait_answers(5);
        ck_assert_int_eq(d->answers, 1);
        ck_assert_int_eq(d->result, -EEXIST);
        ck_assert_str_eq(d->existing, a->job->id);
        ck_assert(!stored(d));
        ck_assert_int_eq(a->answers + b->answers + c->answers, 3);
        sub_free(g);
        sub_free(a);
        sub_free(b);
        sub_free(c);
        sub_free(d);
}
END_TEST

/* Run sql on the table through a connection of the test's own. */
static void sql(const char *text)
{
        char path[4200];
        sqlite3 *raw = NULL;

        snprintf(path, sizeof(path), "%s/jobs.db", tmp);
        ck_assert_int_eq(sqlite3_open(path, &raw), SQLITE_OK);
        sqlite3_busy_timeout(raw, 5000);
        ck_assert_msg(sqlite3_exec(raw, text, NULL, NULL, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(raw));
        sqlite3_close(raw);
}

START_TEST(test_failing_commit_fails_the_whole_batch)
{
        /* a job labelled "poison" leaves a row whose deferred foreign key
         * fails the COMMIT: every insert of its batch went well alone */
        sql("CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE poison (ref INTEGER REFERENCES poison_parent (id) DEFERRABLE INITIALLY DEFERRED);"
            "CREATE TRIGGER poison_jobs AFTER INSERT ON jobs WHEN NEW.label = 'poison'"
            " BEGIN INSERT INTO poison VALUES (1); END;");
        struct sub *g = hold_writer();
        struct sub *s[3] = {sub_new("fine", "key-f", "h"), sub_new("poison", NULL, NULL),
                            sub_new("fine", NULL, NULL)};

        for (int i = 0; i < 3; i++)
                intake_submit(in, &s[i]->req);
        release_writer();
        wait_answers(4);
        ck_assert_int_eq(wakes_now(), 1); /* the gate's batch only */
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(s[i]->answers, 1);
                ck_assert_int_lt(s[i]->result, 0);
                ck_assert_int_ne(s[i]->result, -EEXIST);
                ck_assert_str_eq(s[i]->existing, "");
                ck_assert(!stored(s[i]));
        }

        /* the table works again for the next batch; the key was never taken */
        struct sub *later = sub_new("fine", "key-f", "h");
        intake_submit(in, &later->req);
        wait_answers(5);
        ck_assert_int_eq(later->result, 0);
        ck_assert(stored(later));
        sub_free(g);
        sub_free(later);
        for (int i = 0; i < 3; i++)
                sub_free(s[i]);
}
END_TEST

START_TEST(test_free_answers_what_is_queued)
{
        struct sub *g = hold_writer(), *q[2] = {sub_new("q0", NULL, NULL), sub_new("q1", NULL, NULL)};

        intake_submit(in, &q[0]->req);
        intake_submit(in, &q[1]->req);
        intake_stop(in);

        /* past the stop: answered at once, on the submitter's thread */
        struct sub *late = sub_new("late", NULL, NULL);
        intake_submit(in, &late->req);
        ck_assert_int_eq(late->answers, 1);
        ck_assert_int_eq(late->result, -ESHUTDOWN);

        release_writer();
        intake_free(in); /* writes the queue, answers it, then stops */
        in = NULL;
        ck_assert_int_eq(answers, 4);
        ck_assert_int_eq(g->answers, 1);
        for (int i = 0; i < 2; i++) {
                ck_assert_int_eq(q[i]->answers, 1);
                ck_assert_int_eq(q[i]->result, 0);
                ck_assert(stored(q[i]));
        }
        ck_assert_int_eq(late->answers, 1);
        ck_assert(!stored(late));
        sub_free(g);
        sub_free(late);
        sub_free(q[0]);
        sub_free(q[1]);
}
END_TEST

START_TEST(test_submit_after_stop_writes_nothing)
{
        struct sub *s = sub_new("late", NULL, NULL);
        int64_t counts[_JOB_STATE_MAX] = {0};

        intake_stop(in);
        intake_submit(in, &s->req);
        ck_assert_int_eq(s->answers, 1);
        ck_assert_int_eq(s->result, -ESHUTDOWN);
        intake_free(in);
        in = NULL;
        ck_assert_int_eq(s->answers, 1);
        ck_assert_int_eq(wakes, 0);
        ck_assert_int_eq(store_job_count_by_state(db, counts), 0);
        ck_assert_int_eq(counts[JOB_QUEUED], 0);
        sub_free(s);
}
END_TEST

START_TEST(test_new_needs_an_existing_table)
{
        char other[4300];
        struct intake *x = NULL;

        snprintf(other, sizeof(other), "sqlite:%s/none/jobs.db", tmp);
        ck_assert_int_lt(intake_new(other, on_wake, NULL, &x), 0);
        ck_assert_ptr_null(x);
}
END_TEST

static Suite *intake_suite(void)
{
        Suite *s = suite_create("intake");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_batch_written_together_each_answered_once);
        tcase_add_test(tc, test_idempotency_key_in_and_across_batches);
        tcase_add_test(tc, test_failing_commit_fails_the_whole_batch);
        tcase_add_test(tc, test_free_answers_what_is_queued);
        tcase_add_test(tc, test_submit_after_stop_writes_nothing);
        tcase_add_test(tc, test_new_needs_an_existing_table);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(intake_suite()); }

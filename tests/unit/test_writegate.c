/* Unit tests of daemon/writegate.c: one gate per file, first come first
 * served, the holder that leaves cannot take it back before a waiter, a
 * waiter that times out holds nothing; and through the SQLite backend, a
 * writer that commits back to back lets another connection's writer in. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "daemon/store.h"
#include "daemon/writegate.h"
#include "tests/unit/testutil.h"

#define WAITERS 5
#define LONG_MS 10000 /* a wait that must not run out */

struct turns {
        struct writegate *g;
        pthread_mutex_t lock;
        int order[WAITERS + 2];
        int n;
};

struct waiter_arg {
        struct turns *t;
        int id;
};

static void record(struct turns *t, int id)
{
        pthread_mutex_lock(&t->lock);
        t->order[t->n++] = id;
        pthread_mutex_unlock(&t->lock);
}

static void *waiter(void *p)
{
        struct waiter_arg *a = p;

        ck_assert_int_eq(writegate_enter(a->t->g, LONG_MS), 0);
        record(a->t, a->id);
        writegate_leave(a->t->g);
        return NULL;
}

static void wait_queued(struct writegate *g, int n)
{
        while (writegate_waiting(g) < n)
                nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
}

START_TEST(test_one_gate_per_file)
{
        struct writegate *a, *b, *c;

        ck_assert_int_eq(writegate_get(1, 42, &a), 0);
        ck_assert_int_eq(writegate_get(1, 42, &b), 0);
        ck_assert_int_eq(writegate_get(1, 43, &c), 0);
        ck_assert_ptr_eq(a, b);
        ck_assert_ptr_ne(a, c);
        /* a and c are different files: both can be held at once */
        ck_assert_int_eq(writegate_enter(a, 0), 0);
        ck_assert_int_eq(writegate_enter(c, 0), 0);
        writegate_leave(a);
        writegate_leave(c);
        writegate_put(a);
        writegate_put(b);
        writegate_put(c);
        writegate_put(NULL);
}
END_TEST

START_TEST(test_timeout_holds_nothing)
{
        struct writegate *g;

        ck_assert_int_eq(writegate_get(2, 1, &g), 0);
        ck_assert_int_eq(writegate_enter(g, LONG_MS), 0);
        ck_assert_int_eq(writegate_enter(g, 30), -EBUSY);
        ck_assert_int_eq(writegate_waiting(g), 0);
        writegate_leave(g);
        /* free again: taken at once, and once left, free */
        ck_assert_int_eq(writegate_enter(g, 0), 0);
        writegate_leave(g);
        ck_assert_int_eq(writegate_enter(g, 0), 0);
        writegate_leave(g);
        writegate_put(g);
}
END_TEST

START_TEST(test_first_come_first_served)
{
        struct turns t = {.lock = PTHREAD_MUTEX_INITIALIZER};
        struct waiter_arg a[WAITERS];
        pthread_t th[WAITERS];

        ck_assert_int_eq(writegate_get(3, 1, &t.g), 0);
        ck_assert_int_eq(writegate_enter(t.g, LONG_MS), 0);
        for (int i = 0; i < WAITERS; i++) {
                a[i] = (struct waiter_arg){.t = &t, .id = i + 1};
                ck_assert_int_eq(pthread_create(&th[i], NULL, waiter, &a[i]), 0);
                wait_queued(t.g, i + 1);
        }
        /* the holder leaves and comes back at once: it queues behind all */
        writegate_leave(t.g);
        ck_assert_int_eq(writegate_enter(t.g, LONG_MS), 0);
        record(&t, 0);
        writegate_leave(t.g);
        for (int i = 0; i < WAITERS; i++)
                pthread_join(th[i], NULL);
        ck_assert_int_eq(t.n, WAITERS + 1);
        for (int i = 0; i < WAITERS; i++)
                ck_assert_int_eq(t.order[i], i + 1);
        ck_assert_int_eq(t.order[WAITERS], 0);
        writegate_put(t.g);
}
END_TEST

/* ---- through the store ---------------------------------------------------------------------- */

struct hog {
        struct store *s;
        atomic_bool stop;
        atomic_int commits;
};

/* Commits back to back, as the intake does under many clients. */
static void *hog(void *p)
{
        struct hog *h = p;

        while (!atomic_load(&h->stop)) {
                ck_assert_int_eq(store_begin(h->s), 0);
                nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
                ck_assert_int_eq(store_commit(h->s), 0);
                atomic_fetch_add(&h->commits, 1);
        }
        return NULL;
}

START_TEST(test_store_writers_take_turns)
{
        char *dir = testutil_tmpdir(), *url = NULL;
        struct store *mine, *other;
        struct hog h = {0};
        pthread_t th;

        ck_assert_ptr_nonnull(dir);
        ck_assert_int_ge(asprintf(&url, "sqlite:%s/jobs.db", dir), 0);
        ck_assert_int_eq(store_open(url, &mine), 0);
        ck_assert_int_eq(store_open_existing(url, &other), 0);
        h.s = other;
        ck_assert_int_eq(pthread_create(&th, NULL, hog, &h), 0);
        while (atomic_load(&h.commits) < 10)
                nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        /* each begin waits for at most the one transaction before it; with
         * SQLite's polling alone it lost to the hog again and again until
         * its 5 s busy timeout */
        for (int i = 0; i < 50; i++) {
                int before = atomic_load(&h.commits);
                ck_assert_int_eq(store_begin(mine), 0);
                ck_assert_int_le(atomic_load(&h.commits) - before, 2);
                ck_assert_int_eq(store_commit(mine), 0);
        }
        atomic_store(&h.stop, true);
        pthread_join(th, NULL);
        store_close(other);
        store_close(mine);
        free(url);
        testutil_rmtree(dir);
}
END_TEST

START_TEST(test_store_closed_in_a_transaction_lets_the_next_writer_in)
{
        char *dir = testutil_tmpdir(), *url = NULL;
        struct store *a, *b;

        ck_assert_ptr_nonnull(dir);
        ck_assert_int_ge(asprintf(&url, "sqlite:%s/jobs.db", dir), 0);
        ck_assert_int_eq(store_open(url, &b), 0);
        ck_assert_int_eq(store_open_existing(url, &a), 0);
        ck_assert_int_eq(store_begin(a), 0);
        store_close(a); /* its transaction rolled back, its place at the gate given up */
        ck_assert_int_eq(store_begin(b), 0);
        ck_assert_int_eq(store_commit(b), 0);
        store_close(b);
        free(url);
        testutil_rmtree(dir);
}
END_TEST

static Suite *writegate_suite(void)
{
        Suite *s = suite_create("writegate");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_one_gate_per_file);
        tcase_add_test(tc, test_timeout_holds_nothing);
        tcase_add_test(tc, test_first_come_first_served);
        tcase_add_test(tc, test_store_writers_take_turns);
        tcase_add_test(tc, test_store_closed_in_a_transaction_lets_the_next_writer_in);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(writegate_suite()); }

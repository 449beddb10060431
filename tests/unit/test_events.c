/* The event bus: ids, the per-job filter, the ring's overflow, watchers,
 * and readers on other threads while one thread publishes. */
#include "autoconfig.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "daemon/events.h"
#include "tests/unit/testutil.h"

#define JOB_A "01ARZ3NDEKTSV4RRFFQ69G5FAV"
#define JOB_B "01ARZ3NDEKTSV4RRFFQ69G5FAW"

static struct event job_event(const char *job_id, enum event_type type, int item)
{
        struct event e = {.type = type, .item = item};
        strcpy(e.job_id, job_id);
        return e;
}

static struct event_bus *bus_new(void)
{
        struct event_bus *b = NULL;
        ck_assert_int_eq(events_new(&b), 0);
        ck_assert_ptr_nonnull(b);
        return b;
}

START_TEST(test_publish_and_read)
{
        struct event_bus *b = bus_new();
        struct event out[8];
        size_t n = 99;

        ck_assert_uint_eq(events_last_id(b), 0);
        ck_assert_int_eq(events_read(b, 0, NULL, out, 8, &n), 0);
        ck_assert_uint_eq(n, 0);
        for (int i = 0; i < 3; i++) {
                struct event e = job_event(JOB_A, EVENT_ITEM, i);
                events_publish(b, &e);
                ck_assert_uint_eq(e.id, (uint64_t)i + 1);
        }
        ck_assert_uint_eq(events_last_id(b), 3);
        ck_assert_int_eq(events_read(b, 0, NULL, out, 8, &n), 0);
        ck_assert_uint_eq(n, 3);
        for (size_t i = 0; i < n; i++) {
                ck_assert_uint_eq(out[i].id, i + 1);
                ck_assert_int_eq(out[i].item, (int)i);
                ck_assert_str_eq(out[i].job_id, JOB_A);
        }
        ck_assert_int_eq(events_read(b, 2, NULL, out, 8, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_uint_eq(out[0].id, 3);
        ck_assert_int_eq(events_read(b, 3, NULL, out, 8, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(events_read(b, 0, NULL, out, 2, &n), 0); /* max respected */
        ck_assert_uint_eq(n, 2);
        events_free(b);
}
END_TEST

START_TEST(test_job_filter)
{
        struct event_bus *b = bus_new();
        struct event out[8];
        size_t n;

        for (int i = 0; i < 6; i++) {
                struct event e = job_event(i % 2 ? JOB_B : JOB_A, EVENT_PROGRESS, -1);
                events_publish(b, &e);
        }
        struct event c = {.type = EVENT_CIRCUIT, .item = -1};
        events_publish(b, &c);

        ck_assert_int_eq(events_read(b, 0, JOB_B, out, 8, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_uint_eq(out[0].id, 2);
        ck_assert_uint_eq(out[1].id, 4);
        ck_assert_uint_eq(out[2].id, 6);
        ck_assert_int_eq(events_read(b, 0, NULL, out, 8, &n), 0);
        ck_assert_uint_eq(n, 7);
        ck_assert_int_eq(out[6].type, EVENT_CIRCUIT);
        events_free(b);
}
END_TEST

START_TEST(test_ring_overflow_resumes_from_oldest)
{
        struct event_bus *b = bus_new();
        struct event out[4];
        size_t n;
        uint64_t total = EVENTS_RING + 100;

        for (uint64_t i = 0; i < total; i++) {
                struct event e = job_event(JOB_A, EVENT_PROGRESS, -1);
                events_publish(b, &e);
        }
        ck_assert_uint_eq(events_last_id(b), total);
        /* ids 1..100 have left the ring: a resume from 5 starts at 101 */
        ck_assert_int_eq(events_read(b, 5, NULL, out, 4, &n), 0);
        ck_assert_uint_eq(n, 4);
        ck_assert_uint_eq(out[0].id, 101);
        ck_assert_uint_eq(out[3].id, 104);
        ck_assert_int_eq(events_read(b, total - 1, NULL, out, 4, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_uint_eq(out[0].id, total);
        /* an id past the newest, up to UINT64_MAX, reads nothing */
        ck_assert_int_eq(events_read(b, total, NULL, out, 4, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(events_read(b, UINT64_MAX, NULL, out, 4, &n), 0);
        ck_assert_uint_eq(n, 0);
        events_free(b);
}
END_TEST

static void count_call(void *ud) { atomic_fetch_add((atomic_int *)ud, 1); }

/* A watcher may read the bus: it is called without the lock held. */
struct reading_watcher {
        struct event_bus *b;
        uint64_t seen;
};

static void read_call(void *ud)
{
        struct reading_watcher *w = ud;
        w->seen = events_last_id(w->b);
}

START_TEST(test_watchers_and_unwatch)
{
        struct event_bus *b = bus_new();
        atomic_int calls1 = 0, calls2 = 0;
        struct reading_watcher rw = {.b = b};
        int h1, h2, h3;

        ck_assert_int_eq(events_watch(b, count_call, &calls1, &h1), 0);
        ck_assert_int_eq(events_watch(b, count_call, &calls2, &h2), 0);
        ck_assert_int_eq(events_watch(b, read_call, &rw, &h3), 0);
        ck_assert_int_ne(h1, h2);
        struct event e = job_event(JOB_A, EVENT_JOB, -1);
        events_publish(b, &e);
        ck_assert_int_eq(atomic_load(&calls1), 1);
        ck_assert_int_eq(atomic_load(&calls2), 1);
        ck_assert_uint_eq(rw.seen, 1);
        events_unwatch(b, h1);
        events_publish(b, &e);
        ck_assert_int_eq(atomic_load(&calls1), 1);
        ck_assert_int_eq(atomic_load(&calls2), 2);
        ck_assert_uint_eq(rw.seen, 2);
        events_unwatch(b, h2);
        events_unwatch(b, h3);
        events_unwatch(b, 12345); /* unknown: nothing happens */
        events_publish(b, &e);
        ck_assert_int_eq(atomic_load(&calls2), 2);
        events_free(b);
}
END_TEST

#define READERS   4
#define PUBLISHED 20000

struct reader {
        struct event_bus *b;
        const char *job_id;
        uint64_t got; /* events seen */
        bool ordered; /* ids strictly increased */
};

/* Poll until the last id is read, checking the ids go up. The ring is big
 * enough that a reader falling behind by EVENTS_RING is unlikely, and the
 * test counts only what it saw. */
static void *reader_main(void *ud)
{
        struct reader *r = ud;
        struct event buf[256];
        uint64_t after = 0;
        size_t n;

        r->ordered = true;
        while (after < PUBLISHED) {
                events_read(r->b, after, r->job_id, buf, 256, &n);
                for (size_t i = 0; i < n; i++) {
                        if (buf[i].id <= after)
                                r->ordered = false;
                        after = buf[i].id;
                        r->got++;
                }
                if (n == 0) {
                        uint64_t last = events_last_id(r->b);
                        if (r->job_id && last >= PUBLISHED)
                                break;
                        sched_yield();
                }
        }
        return NULL;
}

START_TEST(test_concurrent_readers)
{
        struct event_bus *b = bus_new();
        pthread_t t[READERS];
        struct reader rd[READERS];
        atomic_int calls = 0;
        int h;

        ck_assert_int_eq(events_watch(b, count_call, &calls, &h), 0);
        for (int i = 0; i < READERS; i++) {
                rd[i] = (struct reader){.b = b, .job_id = i % 2 ? JOB_B : NULL};
                ck_assert_int_eq(pthread_create(&t[i], NULL, reader_main, &rd[i]), 0);
        }
        for (int i = 0; i < PUBLISHED; i++) {
                struct event e = job_event(i % 2 ? JOB_B : JOB_A, EVENT_PROGRESS, -1);
                events_publish(b, &e);
        }
        for (int i = 0; i < READERS; i++) {
                pthread_join(t[i], NULL);
                ck_assert(rd[i].ordered);
                ck_assert_uint_gt(rd[i].got, 0);
                ck_assert_uint_le(rd[i].got, rd[i].job_id ? PUBLISHED / 2 : PUBLISHED);
        }
        ck_assert_int_eq(atomic_load(&calls), PUBLISHED);
        events_unwatch(b, h);
        events_free(b);
}
END_TEST

static Suite *events_suite(void)
{
        Suite *s = suite_create("events");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, test_publish_and_read);
        tcase_add_test(tc, test_job_filter);
        tcase_add_test(tc, test_ring_overflow_resumes_from_oldest);
        tcase_add_test(tc, test_watchers_and_unwatch);
        tcase_add_test(tc, test_concurrent_readers);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(events_suite()); }

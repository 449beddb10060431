/* Unit tests of daemon/snapshot.c: the hub's references (a reader keeps
 * an old snapshot while newer ones are put) and the lookups by name. */
#include "autoconfig.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/snapshot.h"
#include "tests/unit/testutil.h"

#define PUTS 20000 /* snapshots put while readers read */

/* A snapshot with circuits, running jobs and sources named as given
 * (each list sorted as the scheduler sorts them). */
static struct snapshot *make(const char *const *circuits, size_t nc, const char *const *jobs, size_t nj,
                             const char *const *sources, size_t ns)
{
        struct snapshot *s = snapshot_new();

        ck_assert_ptr_nonnull(s);
        s->circuits = calloc(nc ? nc : 1, sizeof(*s->circuits));
        s->jobs = calloc(nj ? nj : 1, sizeof(*s->jobs));
        s->sources = calloc(ns ? ns : 1, sizeof(*s->sources));
        ck_assert(s->circuits && s->jobs && s->sources);
        for (size_t i = 0; i < nc; i++) {
                s->circuits[i].name = strdup(circuits[i]);
                s->circuits[i].trips = (int64_t)i + 1;
        }
        s->ncircuits = nc;
        for (size_t i = 0; i < nj; i++) {
                snprintf(s->jobs[i].id, sizeof(s->jobs[i].id), "%s", jobs[i]);
                s->jobs[i].live.progress.total = (int64_t)i + 10;
                s->jobs[i].items = calloc(1, sizeof(*s->jobs[i].items));
                s->jobs[i].nitems = 1;
        }
        s->njobs = nj;
        for (size_t i = 0; i < ns; i++) {
                s->sources[i].name = strdup(sources[i]);
                s->sources[i].per_page = (int)i + 20;
        }
        s->nsources = ns;
        s->node = strdup("node-1");
        return s;
}

static unsigned refs(struct snapshot *s) { return atomic_load(&s->refs); }

START_TEST(test_hub_empty_until_put)
{
        struct snapshot_hub *h;

        ck_assert_int_eq(snapshot_hub_new(&h), 0);
        ck_assert_ptr_null(snapshot_hub_get(h));
        snapshot_hub_free(h);
        snapshot_hub_free(NULL);
        snapshot_unref(NULL);
        ck_assert_ptr_null(snapshot_ref(NULL));
}
END_TEST

START_TEST(test_reader_keeps_old_snapshot)
{
        static const char *const c1[] = {"a.example"}, *const c2[] = {"b.example"};
        struct snapshot_hub *h;

        ck_assert_int_eq(snapshot_hub_new(&h), 0);
        struct snapshot *s1 = make(c1, 1, NULL, 0, NULL, 0);
        s1->uptime_ms = 1;
        snapshot_hub_put(h, s1); /* the hub holds the one reference */
        ck_assert_uint_eq(refs(s1), 1);

        struct snapshot *reader = snapshot_hub_get(h);
        ck_assert_ptr_eq(reader, s1);
        ck_assert_uint_eq(refs(s1), 2);

        struct snapshot *s2 = make(c2, 1, NULL, 0, NULL, 0);
        s2->uptime_ms = 2;
        snapshot_hub_put(h, s2);
        ck_assert_uint_eq(refs(s1), 1); /* the reader's only */
        ck_assert_uint_eq(refs(s2), 1);
        /* the old one is whole while its reader holds it */
        ck_assert_int_eq(reader->uptime_ms, 1);
        ck_assert_ptr_nonnull(snapshot_circuit(reader, "a.example"));
        ck_assert_ptr_null(snapshot_circuit(reader, "b.example"));

        struct snapshot *newer = snapshot_hub_get(h);
        ck_assert_ptr_eq(newer, s2);
        ck_assert_uint_eq(refs(s2), 2);
        ck_assert_ptr_nonnull(snapshot_circuit(newer, "b.example"));
        snapshot_unref(reader); /* frees s1: under ASan a later read of it would be reported */

        /* a reference taken with snapshot_ref() counts as one more reader */
        ck_assert_ptr_eq(snapshot_ref(newer), s2);
        ck_assert_uint_eq(refs(s2), 3);
        snapshot_unref(newer);
        snapshot_unref(newer);
        ck_assert_uint_eq(refs(s2), 1);
        snapshot_hub_free(h); /* drops the hub's, the last */
}
END_TEST

START_TEST(test_lookups)
{
        static const char *const circuits[] = {"a.example", "alpha", "b.example:8080", "zeta"};
        static const char *const jobs[] = {"01HZ0000000000000000000001", "01HZ0000000000000000000005",
                                           "01HZ0000000000000000000009"};
        static const char *const sources[] = {"alpha", "zeta"};
        struct snapshot *s = make(circuits, 4, jobs, 3, sources, 2);

        for (size_t i = 0; i < 4; i++) {
                const struct src_info *c = snapshot_circuit(s, circuits[i]);
                ck_assert_ptr_nonnull(c);
                ck_assert_str_eq(c->name, circuits[i]);
                ck_assert_int_eq(c->trips, (int64_t)i + 1);
        }
        ck_assert_ptr_null(snapshot_circuit(s, "0first"));
        ck_assert_ptr_null(snapshot_circuit(s, "b.example"));
        ck_assert_ptr_null(snapshot_circuit(s, "zzz"));
        ck_assert_ptr_null(snapshot_circuit(s, ""));

        for (size_t i = 0; i < 3; i++) {
                const struct snapshot_job *j = snapshot_job(s, jobs[i]);
                ck_assert_ptr_nonnull(j);
                ck_assert_str_eq(j->id, jobs[i]);
                ck_assert_int_eq(j->live.progress.total, (int64_t)i + 10);
        }
        ck_assert_ptr_null(snapshot_job(s, "01HZ0000000000000000000000"));
        ck_assert_ptr_null(snapshot_job(s, "01HZ0000000000000000000004"));
        ck_assert_ptr_null(snapshot_job(s, "01HZ000000000000000000000A"));

        ck_assert_int_eq(snapshot_source(s, "zeta")->per_page, 21);
        ck_assert_int_eq(snapshot_source(s, "alpha")->per_page, 20);
        ck_assert_ptr_null(snapshot_source(s, "beta"));
        snapshot_unref(s);

        struct snapshot *empty = make(NULL, 0, NULL, 0, NULL, 0);
        ck_assert_ptr_null(snapshot_circuit(empty, "a.example"));
        ck_assert_ptr_null(snapshot_job(empty, jobs[0]));
        ck_assert_ptr_null(snapshot_source(empty, "alpha"));
        snapshot_unref(empty);
}
END_TEST

struct reading {
        struct snapshot_hub *h;
        atomic_bool stop;
        int64_t reads, torn;
};

/* A reader of the API's kind: take, check that it is whole, drop. */
static void *reader(void *arg)
{
        struct reading *r = arg;

        while (!atomic_load(&r->stop)) {
                struct snapshot *s = snapshot_hub_get(r->h);
                if (!s)
                        continue;
                const struct src_info *c = snapshot_circuit(s, "a.example");
                if (!c || c->trips != s->uptime_ms)
                        r->torn++;
                r->reads++;
                snapshot_unref(s);
        }
        return NULL;
}

START_TEST(test_readers_while_puts)
{
        static const char *const c[] = {"a.example"};
        struct snapshot_hub *h;
        struct reading r[2] = {0};
        pthread_t t[2];

        ck_assert_int_eq(snapshot_hub_new(&h), 0);
        for (int k = 0; k < 2; k++) {
                r[k].h = h;
                atomic_init(&r[k].stop, false);
                ck_assert_int_eq(pthread_create(&t[k], NULL, reader, &r[k]), 0);
        }
        for (int i = 1; i <= PUTS; i++) {
                struct snapshot *s = make(c, 1, NULL, 0, NULL, 0);
                s->circuits[0].trips = i;
                s->uptime_ms = i;
                snapshot_hub_put(h, s);
        }
        for (int k = 0; k < 2; k++) {
                atomic_store(&r[k].stop, true);
                pthread_join(t[k], NULL);
                ck_assert_int_eq(r[k].torn, 0);
        }
        struct snapshot *last = snapshot_hub_get(h);
        ck_assert_int_eq(last->uptime_ms, PUTS);
        ck_assert_uint_eq(refs(last), 2);
        snapshot_unref(last);
        snapshot_hub_free(h);
}
END_TEST

static Suite *snapshot_suite(void)
{
        Suite *s = suite_create("snapshot");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_hub_empty_until_put);
        tcase_add_test(tc, test_reader_keeps_old_snapshot);
        tcase_add_test(tc, test_lookups);
        tcase_add_test(tc, test_readers_while_puts);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(snapshot_suite()); }

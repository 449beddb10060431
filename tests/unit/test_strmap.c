/* Unit tests of common/strmap.c: many keys, deletes during iteration,
 * re-inserts, replaces, and probe lengths that show O(1) lookups. */
#include "autoconfig.h"

#include "tests/unit/testutil.h"
#include "common/strmap.h"

#include <errno.h>
#include <stdint.h>

#define NKEYS 100000
/* Linear probing at a load of at most 3/4 averages about 2.5 slots per
 * hit; a map that degraded to a scan would need thousands. */
#define MEAN_PROBES_MAX 3.0
#define MAX_PROBES      64

/* check writes down where each ck_assert is, which costs a system call:
 * loops over every key count their misses and assert once. */

static struct strmap *m;
static char **keys; /* keys[i] = "host-<i>.example:8080", owned here */

static void setup(void)
{
        size_t bad = 0;

        m = strmap_new();
        ck_assert_ptr_nonnull(m);
        keys = calloc(NKEYS, sizeof(*keys));
        ck_assert_ptr_nonnull(keys);
        for (size_t i = 0; i < NKEYS; i++)
                bad += asprintf(&keys[i], "host-%zu.example:8080", i) < 0;
        ck_assert_uint_eq(bad, 0);
}

static void teardown(void)
{
        strmap_free(m);
        m = NULL;
        for (size_t i = 0; i < NKEYS; i++)
                free(keys[i]);
        free(keys);
        keys = NULL;
}

/* The value stored for key i: any non-NULL pointer that says i. */
static void *val(size_t i) { return (void *)(uintptr_t)(i + 1); }
static size_t idx(const void *v) { return (size_t)(uintptr_t)v - 1; }

static void put_all(void)
{
        size_t bad = 0;

        for (size_t i = 0; i < NKEYS; i++) {
                void *old = val(7);
                bad += strmap_put(m, keys[i], val(i), &old) != 0 || old != NULL;
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(strmap_count(m), NKEYS);
}

/* Keys whose value is not want(i). */
static size_t misses(void *(*want)(size_t i))
{
        size_t bad = 0;

        for (size_t i = 0; i < NKEYS; i++)
                bad += strmap_get(m, keys[i]) != want(i);
        return bad;
}

static void *odd_only(size_t i) { return i % 2 ? val(i) : NULL; }
static void *odd_kept_even_swapped(size_t i) { return i % 2 ? val(i) : val(NKEYS - 1 - i); }

/* Mean and maximum slots examined to find every key with (i % mod == rem). */
static void probe_stats(size_t mod, size_t rem, double *ret_mean, size_t *ret_max)
{
        size_t total = 0, max = 0, n = 0, bad = 0;

        for (size_t i = rem; i < NKEYS; i += mod) {
                size_t p = strmap_probe_len(m, keys[i]);
                bad += p < 1;
                total += p;
                if (p > max)
                        max = p;
                n++;
        }
        ck_assert_uint_eq(bad, 0);
        *ret_mean = (double)total / (double)n;
        *ret_max = max;
}

START_TEST(test_empty)
{
        size_t pos = 0;
        const char *k;
        void *v;

        ck_assert_uint_eq(strmap_count(m), 0);
        ck_assert_ptr_null(strmap_get(m, "a"));
        ck_assert_ptr_null(strmap_delete(m, "a"));
        ck_assert(!strmap_next(m, &pos, &k, &v));
        ck_assert_uint_eq(strmap_probe_len(m, "a"), 0);
        ck_assert_int_eq(strmap_put(m, NULL, val(1), NULL), -EINVAL);
        ck_assert_int_eq(strmap_put(m, "a", NULL, NULL), -EINVAL);
        ck_assert_uint_eq(strmap_count(m), 0);
        ck_assert_ptr_null(strmap_get(m, "")); /* the empty key is a key like any other */
        ck_assert_int_eq(strmap_put(m, "", val(3), NULL), 0);
        ck_assert_ptr_eq(strmap_get(m, ""), val(3));
        strmap_free(NULL);
}
END_TEST

START_TEST(test_many_keys_found)
{
        double mean;
        size_t max;

        put_all();
        ck_assert_uint_eq(misses(val), 0);
        /* keys that are not there, including near misses */
        ck_assert_ptr_null(strmap_get(m, "host-100000.example:8080"));
        ck_assert_ptr_null(strmap_get(m, "host-1.example:808"));
        ck_assert_ptr_null(strmap_get(m, "HOST-1.example:8080"));
        probe_stats(1, 0, &mean, &max);
        ck_assert_double_le(mean, MEAN_PROBES_MAX);
        ck_assert_uint_le(max, MAX_PROBES);
}
END_TEST

START_TEST(test_delete_half_iterate_rest)
{
        char *seen = calloc(NKEYS, 1);
        size_t pos = 0, n = 0, bad = 0;
        const char *k;
        void *v;
        double mean;
        size_t max;

        ck_assert_ptr_nonnull(seen);
        put_all();
        for (size_t i = 0; i < NKEYS; i += 2)
                bad += strmap_delete(m, keys[i]) != val(i);
        for (size_t i = 0; i < NKEYS; i += 2)
                bad += strmap_delete(m, keys[i]) != NULL; /* gone already */
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(strmap_count(m), NKEYS / 2);
        while (strmap_next(m, &pos, &k, &v)) {
                size_t i = idx(v);
                if (i >= NKEYS || i % 2 != 1 || k != keys[i] || seen[i]) {
                        bad++;
                        continue;
                }
                seen[i] = 1;
                n++;
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(n, NKEYS / 2);
        ck_assert(!strmap_next(m, &pos, &k, &v)); /* stays at the end */
        ck_assert_uint_eq(misses(odd_only), 0);
        /* the tombstones do not make lookups of the rest slower than O(1) */
        probe_stats(2, 1, &mean, &max);
        ck_assert_double_le(mean, MEAN_PROBES_MAX);
        ck_assert_uint_le(max, MAX_PROBES);
        free(seen);
}
END_TEST

START_TEST(test_reinsert_after_delete)
{
        size_t bad = 0;

        put_all();
        for (size_t i = 0; i < NKEYS; i += 2)
                strmap_delete(m, keys[i]);
        ck_assert_uint_eq(misses(odd_only), 0);
        for (size_t i = 0; i < NKEYS; i += 2) {
                void *old = val(7);
                bad += strmap_put(m, keys[i], val(NKEYS - 1 - i), &old) != 0 || old != NULL;
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(strmap_count(m), NKEYS);
        ck_assert_uint_eq(misses(odd_kept_even_swapped), 0);
}
END_TEST

START_TEST(test_replace)
{
        char *copy = strdup(keys[42]);
        size_t pos = 0;
        const char *k;
        void *old = NULL, *v;

        ck_assert_ptr_nonnull(copy);
        ck_assert_int_eq(strmap_put(m, keys[42], val(42), NULL), 0);
        ck_assert_int_eq(strmap_put(m, keys[43], val(43), NULL), 0);
        /* the same key in other memory: the value and the key pointer change */
        ck_assert_int_eq(strmap_put(m, copy, val(1000), &old), 0);
        ck_assert_ptr_eq(old, val(42));
        ck_assert_uint_eq(strmap_count(m), 2);
        free(keys[42]); /* the map must no longer read it */
        keys[42] = NULL;
        ck_assert_ptr_eq(strmap_get(m, copy), val(1000));
        while (strmap_next(m, &pos, &k, &v))
                if (v == val(1000))
                        ck_assert_ptr_eq(k, copy);
        ck_assert_ptr_eq(strmap_delete(m, copy), val(1000));
        ck_assert_ptr_eq(strmap_get(m, keys[43]), val(43));
        free(copy);
}
END_TEST

/* Deleting the current entry, and entries not seen yet, while iterating. */
START_TEST(test_delete_while_iterating)
{
        char *seen = calloc(NKEYS, 1);
        size_t pos = 0, visited = 0, deleted = 0, bad = 0;
        const char *k;
        void *v;

        ck_assert_ptr_nonnull(seen);
        put_all();
        while (strmap_next(m, &pos, &k, &v)) {
                size_t i = idx(v);
                bad += seen[i] != 0;
                seen[i] = 1;
                visited++;
                if (i % 3 == 0) {
                        bad += strmap_delete(m, k) != v;
                        deleted++;
                }
                /* an entry ahead of us: it must not be visited later */
                if (i % 3 == 1 && i + 1 < NKEYS && !seen[i + 1] && strmap_delete(m, keys[i + 1])) {
                        seen[i + 1] = 2;
                        deleted++;
                }
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(visited + deleted, NKEYS + (NKEYS + 2) / 3);
        ck_assert_uint_eq(strmap_count(m), NKEYS - deleted);
        for (size_t i = 0; i < NKEYS; i++)
                bad += seen[i] == 0;
        ck_assert_uint_eq(bad, 0);
        /* and then everything */
        pos = 0;
        while (strmap_next(m, &pos, &k, &v))
                bad += strmap_delete(m, k) != v;
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(strmap_count(m), 0);
        pos = 0;
        ck_assert(!strmap_next(m, &pos, &k, &v));
        free(seen);
}
END_TEST

/* Keys come and go, few at a time: tombstones are cleared, so a lookup
 * that misses stays short. */
START_TEST(test_churn)
{
        size_t bad = 0;

        for (size_t i = 0; i < NKEYS; i++) {
                bad += strmap_put(m, keys[i], val(i), NULL) != 0;
                if (i >= 10)
                        bad += strmap_delete(m, keys[i - 10]) != val(i - 10);
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(strmap_count(m), 10);
        ck_assert_uint_le(strmap_probe_len(m, "not-there"), MAX_PROBES);
        for (size_t i = NKEYS - 10; i < NKEYS; i++)
                ck_assert_ptr_eq(strmap_get(m, keys[i]), val(i));
}
END_TEST

static Suite *strmap_suite(void)
{
        Suite *s = suite_create("strmap");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_empty);
        tcase_add_test(tc, test_many_keys_found);
        tcase_add_test(tc, test_delete_half_iterate_rest);
        tcase_add_test(tc, test_reinsert_after_delete);
        tcase_add_test(tc, test_replace);
        tcase_add_test(tc, test_delete_while_iterating);
        tcase_add_test(tc, test_churn);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(strmap_suite()); }

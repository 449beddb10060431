/* Unit tests of daemon/breaker.c with a stepped clock: no sleeps. */
#include "autoconfig.h"

#include "tests/unit/testutil.h"
#include "daemon/breaker.h"

#include <math.h>
#include <stdint.h>

#define THRESHOLD 3
#define OPEN_MS   10000

static struct breaker *b;
static int64_t now; /* the stepped monotonic clock, ms */

static void setup(void)
{
        b = breaker_new(THRESHOLD, OPEN_MS);
        ck_assert_ptr_nonnull(b);
        now = 1000;
}

static void teardown(void)
{
        breaker_free(b);
        b = NULL;
}

static bool fail_counted(void) { return breaker_record(b, false, true, now); }

/* Counted failures up to the threshold; returns whether the last one
 * changed the state. */
static bool trip_it(void)
{
        bool changed = false;
        for (int i = 0; i < THRESHOLD; i++) {
                ck_assert(breaker_allow(b, now));
                changed = fail_counted();
        }
        return changed;
}

/* Step to the retry time, admit the probe and fail it. */
static void probe_and_fail(void)
{
        struct breaker_info info;
        breaker_get_info(b, now, &info);
        now = info.retry_at_ms;
        ck_assert(breaker_allow(b, now));
        ck_assert(fail_counted());
}

static int64_t open_span(void)
{
        struct breaker_info info;
        breaker_get_info(b, now, &info);
        return info.retry_at_ms - info.opened_at_ms;
}

START_TEST(test_new_is_closed)
{
        struct breaker_info info;

        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_CLOSED);
        ck_assert_int_eq(info.consecutive_failures, 0);
        ck_assert_int_eq(info.threshold, THRESHOLD);
        ck_assert_int_eq(info.trips, 0);
        ck_assert_int_eq(info.opened_at_ms, 0);
        ck_assert_int_eq(info.retry_at_ms, 0);
        ck_assert(breaker_allow(b, now));
}
END_TEST

START_TEST(test_stays_closed_below_threshold)
{
        for (int i = 0; i < THRESHOLD - 1; i++)
                ck_assert(!fail_counted());
        ck_assert_int_eq(breaker_state(b, now), BREAKER_CLOSED);
        ck_assert(breaker_allow(b, now));
}
END_TEST

START_TEST(test_opens_at_threshold)
{
        struct breaker_info info;

        now = 5000;
        ck_assert(trip_it());
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_OPEN);
        ck_assert_int_eq(info.consecutive_failures, THRESHOLD);
        ck_assert_int_eq(info.trips, 1);
        ck_assert_int_eq(info.opened_at_ms, 5000);
        ck_assert_int_eq(info.retry_at_ms, 5000 + OPEN_MS);
}
END_TEST

START_TEST(test_success_resets_count)
{
        for (int i = 0; i < THRESHOLD - 1; i++)
                fail_counted();
        ck_assert(!breaker_record(b, true, true, now));
        for (int i = 0; i < THRESHOLD - 1; i++)
                ck_assert(!fail_counted());
        ck_assert_int_eq(breaker_state(b, now), BREAKER_CLOSED);
        ck_assert(fail_counted());
        ck_assert_int_eq(breaker_state(b, now), BREAKER_OPEN);
}
END_TEST

START_TEST(test_not_counted_failures_ignored)
{
        struct breaker_info info;

        for (int i = 0; i < 10 * THRESHOLD; i++)
                ck_assert(!breaker_record(b, false, false, now));
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_CLOSED);
        ck_assert_int_eq(info.consecutive_failures, 0);
        /* nor do they break a run of counted ones */
        fail_counted();
        breaker_record(b, false, false, now);
        fail_counted();
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.consecutive_failures, 2);
}
END_TEST

START_TEST(test_open_denies_until_timeout)
{
        trip_it();
        ck_assert(!breaker_allow(b, now));
        now += OPEN_MS - 1;
        ck_assert(!breaker_allow(b, now));
        ck_assert_int_eq(breaker_state(b, now), BREAKER_OPEN);
        now += 1;
        ck_assert_int_eq(breaker_state(b, now), BREAKER_HALF_OPEN);
}
END_TEST

START_TEST(test_results_while_open_ignored)
{
        trip_it();
        /* stragglers that started before the trip */
        ck_assert(!fail_counted());
        ck_assert(!breaker_record(b, true, true, now));
        ck_assert_int_eq(breaker_state(b, now), BREAKER_OPEN);
        ck_assert_int_eq(open_span(), OPEN_MS);
}
END_TEST

START_TEST(test_half_open_admits_one_probe)
{
        trip_it();
        now += OPEN_MS;
        ck_assert(breaker_allow(b, now));
        ck_assert_int_eq(breaker_state(b, now), BREAKER_HALF_OPEN);
        ck_assert(!breaker_allow(b, now));
        now += 100000;
        ck_assert(!breaker_allow(b, now));
}
END_TEST

START_TEST(test_probe_success_closes)
{
        struct breaker_info info;

        trip_it();
        now += OPEN_MS;
        ck_assert(breaker_allow(b, now));
        ck_assert(breaker_record(b, true, true, now));
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_CLOSED);
        ck_assert_int_eq(info.consecutive_failures, 0);
        ck_assert_int_eq(info.retry_at_ms, 0);
        ck_assert_int_eq(info.trips, 1);
        ck_assert(breaker_allow(b, now));
        ck_assert(breaker_allow(b, now));
}
END_TEST

START_TEST(test_probe_failure_reopens_doubled)
{
        struct breaker_info info;

        trip_it();
        ck_assert_int_eq(open_span(), OPEN_MS);
        probe_and_fail();
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_OPEN);
        ck_assert_int_eq(info.trips, 2);
        ck_assert_int_eq(info.opened_at_ms, now);
        ck_assert_int_eq(info.retry_at_ms, now + 2 * OPEN_MS);
        ck_assert(!breaker_allow(b, now + 2 * OPEN_MS - 1));
        ck_assert(breaker_allow(b, now + 2 * OPEN_MS));
}
END_TEST

START_TEST(test_open_time_capped_at_8x)
{
        static const int64_t spans[] = {2, 4, 8, 8, 8};

        trip_it();
        for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++) {
                probe_and_fail();
                ck_assert_int_eq(open_span(), spans[i] * OPEN_MS);
        }
}
END_TEST

START_TEST(test_success_resets_multiplier)
{
        trip_it();
        probe_and_fail();
        probe_and_fail();
        ck_assert_int_eq(open_span(), 4 * OPEN_MS);
        now += 4 * OPEN_MS;
        ck_assert(breaker_allow(b, now));
        ck_assert(breaker_record(b, true, true, now));
        trip_it();
        ck_assert_int_eq(open_span(), OPEN_MS);
}
END_TEST

START_TEST(test_probe_not_counted_allows_another)
{
        trip_it();
        now += OPEN_MS;
        ck_assert(breaker_allow(b, now));
        ck_assert(!breaker_record(b, false, false, now));
        ck_assert_int_eq(breaker_state(b, now), BREAKER_HALF_OPEN);
        ck_assert(breaker_allow(b, now));
        ck_assert(!breaker_allow(b, now));
        ck_assert(breaker_record(b, true, true, now));
        ck_assert_int_eq(breaker_state(b, now), BREAKER_CLOSED);
}
END_TEST

START_TEST(test_reset)
{
        struct breaker_info info;

        trip_it();
        probe_and_fail();
        int64_t opened = now;
        breaker_reset(b);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_CLOSED);
        ck_assert_int_eq(info.consecutive_failures, 0);
        ck_assert_int_eq(info.retry_at_ms, 0);
        ck_assert_int_eq(info.trips, 2);
        ck_assert_int_eq(info.opened_at_ms, opened);
        ck_assert(breaker_allow(b, now));
        /* the multiplier went back to 1 too */
        trip_it();
        ck_assert_int_eq(open_span(), OPEN_MS);
}
END_TEST

START_TEST(test_configure_keeps_state)
{
        struct breaker_info info;

        fail_counted();
        breaker_configure(b, 2, 500);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.threshold, 2);
        ck_assert_int_eq(info.consecutive_failures, 1);
        ck_assert(fail_counted());
        ck_assert_int_eq(open_span(), 500);
        breaker_configure(b, 0, -1); /* clamped */
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.threshold, 1);
        ck_assert_int_eq(info.state, BREAKER_OPEN);
}
END_TEST

START_TEST(test_open_ms_in_info)
{
        struct breaker_info info;

        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.open_ms, OPEN_MS);
        ck_assert(!info.probe_out);
        trip_it();
        probe_and_fail();
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.open_ms, 2 * OPEN_MS);
        ck_assert_int_eq(info.open_ms, info.retry_at_ms - info.opened_at_ms);
        now = info.retry_at_ms;
        ck_assert(breaker_allow(b, now));
        breaker_get_info(b, now, &info);
        ck_assert(info.probe_out);
        ck_assert(breaker_record(b, true, true, now));
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.open_ms, OPEN_MS); /* closing brings it back */
        ck_assert(!info.probe_out);
}
END_TEST

START_TEST(test_growth_one_is_fixed)
{
        breaker_configure_growth(b, THRESHOLD, OPEN_MS, 1.0, 100 * OPEN_MS);
        trip_it();
        ck_assert_int_eq(open_span(), OPEN_MS);
        for (int i = 0; i < 10; i++) {
                probe_and_fail();
                ck_assert_int_eq(open_span(), OPEN_MS);
        }
}
END_TEST

START_TEST(test_growth_three_capped)
{
        static const int64_t spans[] = {3 * OPEN_MS, 9 * OPEN_MS, 20 * OPEN_MS, 20 * OPEN_MS};

        breaker_configure_growth(b, THRESHOLD, OPEN_MS, 3.0, 20 * OPEN_MS);
        trip_it();
        ck_assert_int_eq(open_span(), OPEN_MS);
        for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++) {
                probe_and_fail();
                ck_assert_int_eq(open_span(), spans[i]);
        }
        /* a success brings the next opening back to open_ms */
        now += 20 * OPEN_MS;
        ck_assert(breaker_allow(b, now));
        ck_assert(breaker_record(b, true, true, now));
        trip_it();
        ck_assert_int_eq(open_span(), OPEN_MS);
        probe_and_fail();
        ck_assert_int_eq(open_span(), 3 * OPEN_MS);
}
END_TEST

START_TEST(test_growth_fractional)
{
        breaker_configure_growth(b, THRESHOLD, 1000, 1.5, 3000);
        trip_it();
        probe_and_fail();
        ck_assert_int_eq(open_span(), 1500);
        probe_and_fail();
        ck_assert_int_eq(open_span(), 2250);
        probe_and_fail();
        ck_assert_int_eq(open_span(), 3000);
}
END_TEST

START_TEST(test_growth_settings_clamped)
{
        struct breaker_info info;

        /* growth below 1 or not a number: a fixed time */
        breaker_configure_growth(b, THRESHOLD, OPEN_MS, 0.5, 8 * OPEN_MS);
        trip_it();
        probe_and_fail();
        ck_assert_int_eq(open_span(), OPEN_MS);
        breaker_configure_growth(b, THRESHOLD, OPEN_MS, NAN, 8 * OPEN_MS);
        probe_and_fail();
        ck_assert_int_eq(open_span(), OPEN_MS);
        /* a cap below open_ms reads as open_ms */
        breaker_configure_growth(b, THRESHOLD, OPEN_MS, 4.0, OPEN_MS / 2);
        probe_and_fail();
        ck_assert_int_eq(open_span(), OPEN_MS);
        /* a huge growth stays at the cap, without overflow */
        breaker_configure_growth(b, THRESHOLD, OPEN_MS, 1e300, INT64_MAX / 2);
        probe_and_fail();
        ck_assert_int_eq(open_span(), INT64_MAX / 2);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_OPEN);
}
END_TEST

START_TEST(test_configure_while_open)
{
        struct breaker_info info;

        trip_it();
        probe_and_fail();
        probe_and_fail(); /* open for 4x */
        int64_t retry_at = now + 4 * OPEN_MS;
        /* a lower cap: the retry time stays, the period comes down to it */
        breaker_configure_growth(b, THRESHOLD, OPEN_MS, 2.0, 3 * OPEN_MS);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.retry_at_ms, retry_at);
        ck_assert_int_eq(info.open_ms, 3 * OPEN_MS);
        probe_and_fail();
        ck_assert_int_eq(open_span(), 3 * OPEN_MS);
        /* a longer open_ms: the period rises to it */
        breaker_configure_growth(b, THRESHOLD, 5 * OPEN_MS, 2.0, 40 * OPEN_MS);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.open_ms, 5 * OPEN_MS);
        probe_and_fail();
        ck_assert_int_eq(open_span(), 10 * OPEN_MS);
}
END_TEST

START_TEST(test_tick_turns_half_open)
{
        struct breaker_info info;

        ck_assert(!breaker_tick(b, now));
        trip_it();
        ck_assert(!breaker_tick(b, now + OPEN_MS - 1));
        ck_assert(breaker_tick(b, now + OPEN_MS));
        ck_assert(!breaker_tick(b, now + OPEN_MS)); /* once */
        breaker_get_info(b, now + OPEN_MS, &info);
        ck_assert_int_eq(info.state, BREAKER_HALF_OPEN);
        ck_assert(!info.probe_out);
        ck_assert(breaker_allow(b, now + OPEN_MS));
        ck_assert(!breaker_allow(b, now + OPEN_MS));
        ck_assert(!breaker_tick(b, now + 10 * OPEN_MS)); /* the probe stays out */
        ck_assert(!breaker_allow(b, now + 10 * OPEN_MS));
}
END_TEST

/* ---- restore ------------------------------------------------------------- */

static void assert_same(const struct breaker *x, const struct breaker *y, int64_t t)
{
        struct breaker_info a, c;

        breaker_get_info(x, t, &a);
        breaker_get_info(y, t, &c);
        ck_assert_int_eq(a.state, c.state);
        ck_assert_int_eq(a.consecutive_failures, c.consecutive_failures);
        ck_assert_int_eq(a.threshold, c.threshold);
        ck_assert_int_eq(a.trips, c.trips);
        ck_assert_int_eq(a.opened_at_ms, c.opened_at_ms);
        ck_assert_int_eq(a.retry_at_ms, c.retry_at_ms);
        ck_assert_int_eq(a.open_ms, c.open_ms);
        ck_assert_int_eq(a.probe_out, c.probe_out);
}

/* A copy of b made by breaker_restore() from its info. */
static struct breaker *restored_copy(void)
{
        struct breaker_info info;
        struct breaker *c = breaker_new(THRESHOLD, OPEN_MS);

        ck_assert_ptr_nonnull(c);
        breaker_get_info(b, now, &info);
        breaker_restore(c, info.state, info.consecutive_failures, info.trips, info.opened_at_ms,
                        info.retry_at_ms, info.open_ms);
        return c;
}

/* Both breakers go through the same life from here on and stay alike. */
static void assert_same_life(struct breaker *c)
{
        struct breaker_info info;

        assert_same(b, c, now);
        for (int step = 0; step < 6; step++) {
                breaker_get_info(b, now, &info);
                if (info.state == BREAKER_OPEN)
                        now = info.retry_at_ms - 1;
                ck_assert_int_eq(breaker_allow(b, now), breaker_allow(c, now));
                assert_same(b, c, now);
                now++;
                ck_assert_int_eq(breaker_allow(b, now), breaker_allow(c, now));
                /* fail, fail, ..., then succeed at the end */
                bool ok = step == 5;
                ck_assert_int_eq(breaker_record(b, ok, true, now), breaker_record(c, ok, true, now));
                assert_same(b, c, now);
        }
        breaker_get_info(c, now, &info);
        ck_assert_int_eq(info.state, BREAKER_CLOSED);
        breaker_free(c);
}

START_TEST(test_restore_closed)
{
        fail_counted();
        fail_counted();
        assert_same_life(restored_copy());
}
END_TEST

START_TEST(test_restore_open)
{
        trip_it();
        probe_and_fail(); /* open for 2x */
        now += 10;
        assert_same_life(restored_copy());
}
END_TEST

START_TEST(test_restore_open_past_its_time)
{
        struct breaker_info info;

        trip_it();
        now += OPEN_MS + 5; /* reads half-open */
        struct breaker *c = restored_copy();
        breaker_get_info(c, now, &info);
        ck_assert_int_eq(info.state, BREAKER_HALF_OPEN);
        assert_same_life(c);
}
END_TEST

START_TEST(test_restore_half_open)
{
        struct breaker_info info;

        trip_it();
        probe_and_fail();
        probe_and_fail(); /* open for 4x */
        now += 4 * OPEN_MS;
        ck_assert(breaker_allow(b, now)); /* the probe is out */
        struct breaker *c = restored_copy();
        /* the probe of the earlier run is gone: the copy admits another */
        breaker_get_info(c, now, &info);
        ck_assert_int_eq(info.state, BREAKER_HALF_OPEN);
        ck_assert(!info.probe_out);
        ck_assert_int_eq(info.open_ms, 4 * OPEN_MS);
        breaker_record(b, false, false, now); /* the original's probe ends without a verdict */
        assert_same_life(c);
}
END_TEST

START_TEST(test_restore_out_of_range)
{
        struct breaker_info info;

        breaker_restore(b, (enum breaker_state)7, -3, -1, 0, 500, 10);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_CLOSED);
        ck_assert_int_eq(info.consecutive_failures, 0);
        ck_assert_int_eq(info.trips, 0);
        ck_assert_int_eq(info.retry_at_ms, 0);
        ck_assert_int_eq(info.open_ms, OPEN_MS);
        /* open without a retry time: one period after it opened; the period
         * within [open_ms, max_open_ms] */
        breaker_restore(b, BREAKER_OPEN, THRESHOLD, 4, 900, 0, 1000 * OPEN_MS);
        breaker_get_info(b, now, &info);
        ck_assert_int_eq(info.state, BREAKER_OPEN);
        ck_assert_int_eq(info.open_ms, 8 * OPEN_MS);
        ck_assert_int_eq(info.retry_at_ms, 900 + 8 * OPEN_MS);
        ck_assert_int_eq(info.trips, 4);
        ck_assert(!breaker_allow(b, now));
}
END_TEST

START_TEST(test_state_strings)
{
        ck_assert_str_eq(breaker_state_to_string(BREAKER_CLOSED), "closed");
        ck_assert_str_eq(breaker_state_to_string(BREAKER_OPEN), "open");
        ck_assert_str_eq(breaker_state_to_string(BREAKER_HALF_OPEN), "half_open");
        breaker_free(NULL);
}
END_TEST

static Suite *breaker_suite(void)
{
        Suite *s = suite_create("breaker");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_new_is_closed);
        tcase_add_test(tc, test_stays_closed_below_threshold);
        tcase_add_test(tc, test_opens_at_threshold);
        tcase_add_test(tc, test_success_resets_count);
        tcase_add_test(tc, test_not_counted_failures_ignored);
        tcase_add_test(tc, test_open_denies_until_timeout);
        tcase_add_test(tc, test_results_while_open_ignored);
        tcase_add_test(tc, test_half_open_admits_one_probe);
        tcase_add_test(tc, test_probe_success_closes);
        tcase_add_test(tc, test_probe_failure_reopens_doubled);
        tcase_add_test(tc, test_open_time_capped_at_8x);
        tcase_add_test(tc, test_success_resets_multiplier);
        tcase_add_test(tc, test_probe_not_counted_allows_another);
        tcase_add_test(tc, test_reset);
        tcase_add_test(tc, test_configure_keeps_state);
        tcase_add_test(tc, test_open_ms_in_info);
        tcase_add_test(tc, test_growth_one_is_fixed);
        tcase_add_test(tc, test_growth_three_capped);
        tcase_add_test(tc, test_growth_fractional);
        tcase_add_test(tc, test_growth_settings_clamped);
        tcase_add_test(tc, test_configure_while_open);
        tcase_add_test(tc, test_tick_turns_half_open);
        tcase_add_test(tc, test_restore_closed);
        tcase_add_test(tc, test_restore_open);
        tcase_add_test(tc, test_restore_open_past_its_time);
        tcase_add_test(tc, test_restore_half_open);
        tcase_add_test(tc, test_restore_out_of_range);
        tcase_add_test(tc, test_state_strings);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(breaker_suite()); }

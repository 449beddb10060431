/* Unit tests of daemon/retry.c: the class table, HTTP classification,
 * backoff with jitter (RETRY_JITTER at 0, the default 0.1 and 1, with fixed
 * draws at both ends and the middle) and Retry-After, and Retry-After
 * parsing. */
#include "autoconfig.h"

#include "tests/unit/testutil.h"
#include "daemon/retry.h"

/* RETRY_BACKOFF_BASE=1, RETRY_BACKOFF_MAX=60, RETRY_JITTER=0.1: the defaults */
static const struct retry_policy policy = {
        .max_retries = 2,
        .backoff_base_ms = 1000,
        .backoff_max_ms = 60000,
        .jitter = 0.1,
};

/* 2015-10-21T07:28:00Z */
#define OCT21_2015_MS ((int64_t)1445412480 * 1000)

struct class_row {
        enum retry_class c;
        const char *code;
        bool retryable;
        bool counted;
};

static const struct class_row class_rows[] = {
        {RC_HTTP_4XX, "http_4xx", false, false},
        {RC_HTTP_5XX, "http_5xx", true, true},
        {RC_RATE_LIMITED, "rate_limited", true, false},
        {RC_CONNECT, "connect", true, true},
        {RC_TIMEOUT, "timeout", true, true},
        {RC_STALLED, "stalled", true, true},
        {RC_TRUNCATED, "truncated", true, true},
        {RC_INVALID_CONTENT, "invalid_content", false, true},
        {RC_TOO_LARGE, "too_large", false, false},
        {RC_BLOCKED_ADDRESS, "blocked_address", false, false},
        {RC_CIRCUIT_OPEN, "circuit_open", false, false},
        {RC_IO, "io", false, false},
        {RC_BAD_RESPONSE, "bad_response", false, true},
};

START_TEST(test_class_table)
{
        const struct class_row *r = &class_rows[_i];

        ck_assert_str_eq(retry_class_code(r->c), r->code);
        ck_assert_int_eq(retry_class_retryable(r->c), r->retryable);
        ck_assert_int_eq(retry_class_counts_for_breaker(r->c), r->counted);
}
END_TEST

START_TEST(test_class_every_code_covered)
{
        ck_assert_int_eq(sizeof(class_rows) / sizeof(class_rows[0]), _RC_MAX - 1);
        ck_assert(!retry_class_retryable(RC_OK));
        ck_assert(!retry_class_counts_for_breaker(RC_OK));
        ck_assert_ptr_nonnull(retry_class_code(_RC_MAX));
        ck_assert(!retry_class_retryable(_RC_MAX));
}
END_TEST

START_TEST(test_classify_http)
{
        ck_assert_int_eq(retry_classify_http(200, false), RC_OK);
        ck_assert_int_eq(retry_classify_http(206, false), RC_OK);
        ck_assert_int_eq(retry_classify_http(204, true), RC_OK);
        ck_assert_int_eq(retry_classify_http(404, false), RC_HTTP_4XX);
        ck_assert_int_eq(retry_classify_http(404, true), RC_HTTP_4XX);
        ck_assert_int_eq(retry_classify_http(429, false), RC_RATE_LIMITED);
        ck_assert_int_eq(retry_classify_http(429, true), RC_RATE_LIMITED);
        ck_assert_int_eq(retry_classify_http(500, false), RC_HTTP_5XX);
        ck_assert_int_eq(retry_classify_http(500, true), RC_HTTP_5XX);
        ck_assert_int_eq(retry_classify_http(503, false), RC_HTTP_5XX);
        ck_assert_int_eq(retry_classify_http(503, true), RC_RATE_LIMITED);
        ck_assert_int_eq(retry_classify_http(599, false), RC_HTTP_5XX);
}
END_TEST

START_TEST(test_classify_http_odd_statuses_not_retried)
{
        ck_assert_int_eq(retry_classify_http(100, false), RC_HTTP_4XX);
        ck_assert_int_eq(retry_classify_http(302, false), RC_HTTP_4XX);
        ck_assert_int_eq(retry_classify_http(304, false), RC_HTTP_4XX);
        ck_assert_int_eq(retry_classify_http(0, false), RC_HTTP_4XX);
        ck_assert_int_eq(retry_classify_http(600, false), RC_HTTP_4XX);
}
END_TEST

START_TEST(test_should_retry)
{
        ck_assert(retry_should_retry(&policy, RC_HTTP_5XX, 1));
        ck_assert(retry_should_retry(&policy, RC_HTTP_5XX, 2));
        ck_assert(!retry_should_retry(&policy, RC_HTTP_5XX, 3));
        ck_assert(retry_should_retry(&policy, RC_RATE_LIMITED, 1));
        ck_assert(!retry_should_retry(&policy, RC_HTTP_4XX, 1));
        ck_assert(!retry_should_retry(&policy, RC_INVALID_CONTENT, 1));
        ck_assert(!retry_should_retry(&policy, RC_OK, 1));

        struct retry_policy none = policy;
        none.max_retries = 0;
        ck_assert(!retry_should_retry(&none, RC_CONNECT, 1));
}
END_TEST

/* rand01 at the low end, the middle, just below the top and at the top
 * (a caller's 1.0 is taken as the top). */
static const double draws[] = {0.0, 0.5, 0.999, 1.0};

struct delay_row {
        int attempt;
        int64_t want[4]; /* for each of draws[] */
};

START_TEST(test_delay_defaults)
{
        /* 1, 2, 4 s, each spread by 10% either way */
        static const struct delay_row rows[] = {
                {1, {900, 1000, 1099, 1100}},
                {2, {1800, 2000, 2199, 2200}},
                {3, {3600, 4000, 4399, 4400}},
                {4, {7200, 8000, 8798, 8800}},
        };
        for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
                for (size_t k = 0; k < 4; k++)
                        ck_assert_int_eq(retry_delay_ms(&policy, rows[r].attempt, -1, draws[k]),
                                         rows[r].want[k]);
}
END_TEST

START_TEST(test_delay_no_jitter_is_exact)
{
        struct retry_policy exact = policy;
        exact.jitter = 0;

        for (size_t k = 0; k < 4; k++) {
                ck_assert_int_eq(retry_delay_ms(&exact, 1, -1, draws[k]), 1000);
                ck_assert_int_eq(retry_delay_ms(&exact, 2, -1, draws[k]), 2000);
                ck_assert_int_eq(retry_delay_ms(&exact, 3, -1, draws[k]), 4000);
                ck_assert_int_eq(retry_delay_ms(&exact, 7, -1, draws[k]), 60000);
        }
        /* a policy that leaves the field out gets the exact schedule too */
        struct retry_policy unset = {.max_retries = 3, .backoff_base_ms = 500, .backoff_max_ms = 8000};
        ck_assert_int_eq(retry_delay_ms(&unset, 1, -1, 0.999), 500);
        ck_assert_int_eq(retry_delay_ms(&unset, 3, -1, 0.0), 2000);
}
END_TEST

START_TEST(test_delay_full_jitter)
{
        struct retry_policy full = policy;
        full.jitter = 1.0;

        /* [0, 2d], capped by the maximum */
        ck_assert_int_eq(retry_delay_ms(&full, 1, -1, 0.0), 0);
        ck_assert_int_eq(retry_delay_ms(&full, 1, -1, 0.5), 1000);
        ck_assert_int_eq(retry_delay_ms(&full, 1, -1, 1.0), 2000);
        ck_assert_int_eq(retry_delay_ms(&full, 6, -1, 0.0), 0);
        ck_assert_int_eq(retry_delay_ms(&full, 6, -1, 0.5), 32000);
        ck_assert_int_eq(retry_delay_ms(&full, 6, -1, 0.999), 60000); /* 63.9 s capped */
}
END_TEST

START_TEST(test_delay_out_of_range_inputs)
{
        struct retry_policy odd = policy;

        /* a jitter outside 0..1 is taken as the nearer end; NaN as 0 */
        odd.jitter = -0.5;
        ck_assert_int_eq(retry_delay_ms(&odd, 1, -1, 0.0), 1000);
        odd.jitter = 3.0;
        ck_assert_int_eq(retry_delay_ms(&odd, 1, -1, 0.0), 0);
        ck_assert_int_eq(retry_delay_ms(&odd, 1, -1, 1.0), 2000);
        odd.jitter = __builtin_nan("");
        ck_assert_int_eq(retry_delay_ms(&odd, 1, -1, 0.0), 1000);
        /* so is a draw outside [0, 1) */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, -1, -1.0), 900);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, -1, 7.0), 1100);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, -1, __builtin_nan("")), 900);
}
END_TEST

START_TEST(test_delay_bounds_over_many_draws)
{
        for (int attempt = 1; attempt <= 10; attempt++) {
                int64_t d = (int64_t)1000 << (attempt - 1);
                if (d > 60000)
                        d = 60000;
                int64_t lo = d - d / 10, hi = d + d / 10;
                if (hi > 60000)
                        hi = 60000;
                for (int k = 0; k < 1000; k++) {
                        int64_t v = retry_delay_ms(&policy, attempt, -1, k / 1000.0);
                        ck_assert_int_ge(v, lo);
                        ck_assert_int_le(v, hi);
                }
        }
}
END_TEST

START_TEST(test_delay_cap)
{
        /* 64 s is capped at 60 before the spread, and the spread at 60 again */
        ck_assert_int_eq(retry_delay_ms(&policy, 7, -1, 0.0), 54000);
        ck_assert_int_eq(retry_delay_ms(&policy, 7, -1, 0.5), 60000);
        ck_assert_int_eq(retry_delay_ms(&policy, 7, -1, 0.999), 60000);
        ck_assert_int_eq(retry_delay_ms(&policy, 1000, -1, 0.999), 60000); /* no overflow */
        ck_assert_int_eq(retry_delay_ms(&policy, 0, -1, 0.0), 900);        /* treated as 1 */

        /* no cap at all (backoff_max < 0): still no overflow */
        struct retry_policy uncapped = {
                .max_retries = 2, .backoff_base_ms = 1000, .backoff_max_ms = -1, .jitter = 1.0};
        ck_assert_int_gt(retry_delay_ms(&uncapped, 1000, -1, 0.999), 0);
        ck_assert_int_gt(retry_delay_ms(&uncapped, 1000, -1, 0.999),
                         retry_delay_ms(&uncapped, 1000, -1, 0.5));
}
END_TEST

START_TEST(test_delay_retry_after_floor)
{
        /* Retry-After above the backoff wins */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 10000, 0.999), 10000);
        /* below it, the backoff stands */
        ck_assert_int_eq(retry_delay_ms(&policy, 3, 100, 0.999), 4399);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 0, 0.0), 900);
        /* the jitter never takes a delay under the Retry-After */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 1000, 0.0), 1000);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 1000, 0.999), 1099);
        /* the floor is capped by backoff_max */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 3600 * 1000, 0.0), 60000);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 60000, 0.0), 60000);

        /* RETRY_BACKOFF_MAX=0 means no waiting at all, Retry-After or not */
        struct retry_policy zero = {
                .max_retries = 2, .backoff_base_ms = 0, .backoff_max_ms = 0, .jitter = 0.1};
        ck_assert_int_eq(retry_delay_ms(&zero, 3, -1, 0.999), 0);
        ck_assert_int_eq(retry_delay_ms(&zero, 1, 5000, 0.999), 0);
}
END_TEST

START_TEST(test_after_parse_delta)
{
        ck_assert_int_eq(retry_after_parse("2", OCT21_2015_MS), 2000);
        ck_assert_int_eq(retry_after_parse("0", OCT21_2015_MS), 0);
        ck_assert_int_eq(retry_after_parse(" 120 ", OCT21_2015_MS), 120000);
        ck_assert_int_eq(retry_after_parse("-1", OCT21_2015_MS), -1);
        ck_assert_int_gt(retry_after_parse("99999999999999999999999", 0), 0);
}
END_TEST

START_TEST(test_after_parse_garbage)
{
        ck_assert_int_eq(retry_after_parse(NULL, 0), -1);
        ck_assert_int_eq(retry_after_parse("", 0), -1);
        ck_assert_int_eq(retry_after_parse("soon", 0), -1);
        ck_assert_int_eq(retry_after_parse("2s", 0), -1);
        ck_assert_int_eq(retry_after_parse("1.5", 0), -1);
        ck_assert_int_eq(retry_after_parse("Wed, 21 Foo 2015 07:28:00 GMT", 0), -1);
        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 25:28:00 GMT", 0), -1);
        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT junk", 0), -1);
        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 07:28:00", 0), -1);
}
END_TEST

START_TEST(test_after_parse_http_date)
{
        int64_t now = OCT21_2015_MS - 30 * 1000;

        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", now), 30000);
        ck_assert_int_eq(retry_after_parse("Wednesday, 21-Oct-15 07:28:00 GMT", now), 30000);
        ck_assert_int_eq(retry_after_parse("Wed Oct 21 07:28:00 2015", now), 30000);
        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", now + 250), 29750);
        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", OCT21_2015_MS), 0);
}
END_TEST

START_TEST(test_after_parse_past_date)
{
        ck_assert_int_eq(retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", OCT21_2015_MS + 5000), 0);
        ck_assert_int_eq(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", OCT21_2015_MS), 0);
}
END_TEST

static Suite *retry_suite(void)
{
        Suite *s = suite_create("retry");
        TCase *tc = tcase_create("core");

        tcase_add_loop_test(tc, test_class_table, 0, sizeof(class_rows) / sizeof(class_rows[0]));
        tcase_add_test(tc, test_class_every_code_covered);
        tcase_add_test(tc, test_classify_http);
        tcase_add_test(tc, test_classify_http_odd_statuses_not_retried);
        tcase_add_test(tc, test_should_retry);
        tcase_add_test(tc, test_delay_defaults);
        tcase_add_test(tc, test_delay_no_jitter_is_exact);
        tcase_add_test(tc, test_delay_full_jitter);
        tcase_add_test(tc, test_delay_out_of_range_inputs);
        tcase_add_test(tc, test_delay_bounds_over_many_draws);
        tcase_add_test(tc, test_delay_cap);
        tcase_add_test(tc, test_delay_retry_after_floor);
        tcase_add_test(tc, test_after_parse_delta);
        tcase_add_test(tc, test_after_parse_garbage);
        tcase_add_test(tc, test_after_parse_http_date);
        tcase_add_test(tc, test_after_parse_past_date);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(retry_suite()); }

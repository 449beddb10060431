/* Unit tests of daemon/retry.c: the class table, HTTP classification,
 * backoff with jitter and Retry-After, and Retry-After parsing. */
#include "autoconfig.h"

#include "tests/unit/testutil.h"
#include "daemon/retry.h"

static const struct retry_policy policy = {
        .max_retries = 2,
        .backoff_base_ms = 1000,
        .backoff_max_ms = 60000,
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

START_TEST(test_delay_sequence_and_jitter)
{
        /* attempt n waits base * 2^(n-1), spread over [d/2, d) */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, -1, 0.0), 500);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, -1, 0.999), 999);
        ck_assert_int_eq(retry_delay_ms(&policy, 2, -1, 0.0), 1000);
        ck_assert_int_eq(retry_delay_ms(&policy, 2, -1, 0.999), 1999);
        ck_assert_int_eq(retry_delay_ms(&policy, 3, -1, 0.0), 2000);
        ck_assert_int_eq(retry_delay_ms(&policy, 3, -1, 0.999), 3998);
        ck_assert_int_eq(retry_delay_ms(&policy, 3, -1, 0.5), 3000);
}
END_TEST

START_TEST(test_delay_bounds_over_many_draws)
{
        for (int attempt = 1; attempt <= 10; attempt++) {
                int64_t d = (int64_t)1000 << (attempt - 1);
                if (d > 60000)
                        d = 60000;
                for (int k = 0; k < 1000; k++) {
                        int64_t v = retry_delay_ms(&policy, attempt, -1, k / 1000.0);
                        ck_assert_int_ge(v, d / 2);
                        ck_assert_int_le(v, d);
                }
        }
}
END_TEST

START_TEST(test_delay_cap)
{
        ck_assert_int_eq(retry_delay_ms(&policy, 7, -1, 0.0), 30000); /* 64 s capped at 60 */
        ck_assert_int_eq(retry_delay_ms(&policy, 7, -1, 0.999), 59970);
        ck_assert_int_eq(retry_delay_ms(&policy, 1000, -1, 0.999), 59970); /* no overflow */
        ck_assert_int_eq(retry_delay_ms(&policy, 0, -1, 0.0), 500);        /* treated as 1 */
}
END_TEST

START_TEST(test_delay_retry_after_floor)
{
        /* Retry-After above the backoff wins */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 10000, 0.999), 10000);
        /* below it, the backoff stands */
        ck_assert_int_eq(retry_delay_ms(&policy, 3, 100, 0.999), 3998);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 0, 0.0), 500);
        /* the floor is capped by backoff_max */
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 3600 * 1000, 0.0), 60000);
        ck_assert_int_eq(retry_delay_ms(&policy, 1, 60000, 0.0), 60000);

        /* RETRY_BACKOFF_MAX=0 means no waiting at all, Retry-After or not */
        struct retry_policy zero = {.max_retries = 2, .backoff_base_ms = 0, .backoff_max_ms = 0};
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
        tcase_add_test(tc, test_delay_sequence_and_jitter);
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

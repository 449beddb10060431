/* Unit tests of daemon/srctab.c with a stepped clock: no sleeps. */
#include "autoconfig.h"

#include "tests/unit/testutil.h"
#include "daemon/srctab.h"

#include <stdint.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#endif
#ifdef TEST_ASAN
#include <sanitizer/allocator_interface.h>
#else
#include <malloc.h>
#endif

#define THRESHOLD    3
#define OPEN_MS      10000
#define GROWTH       3.0
#define MAX_OPEN_MS  90000
#define HOST_CONNS   2
#define DEFAULT_CONN 4
#define IDLE_MS      60000
#define MANY         10000 /* distinct sources and hosts of the big test */

static const struct srctab_opts opts = {
        .threshold = THRESHOLD,
        .open_ms = OPEN_MS,
        .open_growth = GROWTH,
        .max_open_ms = MAX_OPEN_MS,
        .host_connections = HOST_CONNS,
        .default_source_connections = DEFAULT_CONN,
        .idle_prune_ms = IDLE_MS,
};

static struct srctab *t;
static int64_t now; /* the stepped monotonic clock, ms */

static void setup(void)
{
        t = srctab_new(&opts);
        ck_assert_ptr_nonnull(t);
        now = 1000000;
}

static void teardown(void)
{
        srctab_free(t);
        t = NULL;
}

/* Bytes the heap holds now. */
static size_t heap_bytes(void)
{
#ifdef TEST_ASAN
        return __sanitizer_get_current_allocated_bytes();
#else
        struct mallinfo2 mi = mallinfo2();
        return mi.uordblks + mi.hblkhd; /* small chunks and mmap()ed ones */
#endif
}

static struct src *source(const char *name)
{
        struct src *s = srctab_source(t, name, false);
        ck_assert_ptr_nonnull(s);
        return s;
}

static struct src *query_source(const char *name)
{
        struct src *s = srctab_source(t, name, true);
        ck_assert_ptr_nonnull(s);
        return s;
}

static struct src *host(const char *name)
{
        struct src *h = srctab_host(t, name);
        ck_assert_ptr_nonnull(h);
        return h;
}

static enum src_admit admit(struct src *s, struct src *h, bool rate, int64_t *wake)
{
        int64_t w = -1;
        enum src_admit a = srctab_admit(t, s, h, rate, now, &w);
        ck_assert_int_ge(w, 0); /* always written */
        if (wake)
                *wake = w;
        return a;
}

/* One download attempt of s that starts and ends now. */
static bool attempt(struct src *s, bool ok, bool counted, bool probe)
{
        struct src_result r = {.ok = ok,
                               .counted = counted,
                               .bytes = ok ? 100 : 0,
                               .error = ok ? NULL : "http_503: Service Unavailable"};
        srctab_acquire(t, s, NULL, false, probe, now);
        bool changed = srctab_record(t, s, &r, probe, now);
        srctab_release(t, s, NULL);
        return changed;
}

static struct src_info info(const struct src *s)
{
        struct src_info i;
        ck_assert_int_eq(srctab_info(t, s, now, &i), 0);
        return i;
}

static enum breaker_state state(const struct src *s)
{
        struct src_info i = info(s);
        enum breaker_state st = i.state;
        src_info_clear(&i);
        return st;
}

/* Counted failures up to the threshold: the last one opens the circuit. */
static void trip(struct src *s)
{
        for (int i = 0; i < THRESHOLD; i++) {
                ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_OK);
                ck_assert_int_eq(attempt(s, false, true, false), i == THRESHOLD - 1);
        }
        ck_assert_int_eq(state(s), BREAKER_OPEN);
}

static int64_t retry_at(const struct src *s)
{
        struct src_info i = info(s);
        int64_t at = i.retry_at_ms;
        src_info_clear(&i);
        return at;
}

static void count_changed(const struct src *s, void *ud)
{
        (void)s;
        (*(int *)ud)++;
}

static int drain_count(void)
{
        int n = 0;
        srctab_drain_changed(t, count_changed, &n);
        return n;
}

/* ---- the breaker rule --------------------------------------------------- */

START_TEST(test_counted_failures_open)
{
        struct src *s = source("a.example");
        int64_t wake;

        for (int i = 0; i < THRESHOLD - 1; i++)
                ck_assert(!attempt(s, false, true, false));
        ck_assert_int_eq(state(s), BREAKER_CLOSED);
        ck_assert_int_eq(drain_count(), 0);
        ck_assert(attempt(s, false, true, false));
        ck_assert_int_eq(state(s), BREAKER_OPEN);
        ck_assert_int_eq(admit(s, NULL, false, &wake), ADMIT_OPEN);
        ck_assert_int_eq(wake, now + OPEN_MS);
        ck_assert_int_eq(retry_at(s), now + OPEN_MS);
        ck_assert_int_eq(drain_count(), 1);
        ck_assert_int_eq(drain_count(), 0); /* forgotten once drained */
        now += OPEN_MS - 1;
        ck_assert_int_eq(admit(s, NULL, false, &wake), ADMIT_OPEN);
        ck_assert_int_eq(wake, now + 1);
}
END_TEST

START_TEST(test_success_between_resets)
{
        struct src *s = source("a.example");

        for (int round = 0; round < 5; round++) {
                for (int i = 0; i < THRESHOLD - 1; i++)
                        ck_assert(!attempt(s, false, true, false));
                ck_assert(!attempt(s, true, false, false));
        }
        struct src_info i = info(s);
        ck_assert_int_eq(i.state, BREAKER_CLOSED);
        ck_assert_int_eq(i.consecutive_failures, 0);
        ck_assert_int_eq(i.trips, 0);
        src_info_clear(&i);
}
END_TEST

START_TEST(test_uncounted_failures_never_open)
{
        struct src *s = source("a.example");

        for (int i = 0; i < 10 * THRESHOLD; i++)
                ck_assert(!attempt(s, false, false, false));
        struct src_info i = info(s);
        ck_assert_int_eq(i.state, BREAKER_CLOSED);
        ck_assert_int_eq(i.consecutive_failures, 0);
        ck_assert_int_eq(i.downloads.failures, 10 * THRESHOLD);
        src_info_clear(&i);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_OK);
}
END_TEST

START_TEST(test_probe_success_closes)
{
        struct src *s = source("a.example");
        int64_t wake;

        trip(s);
        drain_count();
        now += OPEN_MS;
        uint64_t gen = src_gen(s);
        ck_assert_int_eq(admit(s, NULL, false, &wake), ADMIT_PROBE);
        ck_assert_int_eq(wake, 0);
        ck_assert_uint_gt(src_gen(s), gen); /* the half-open turn */
        ck_assert_int_eq(drain_count(), 1);
        srctab_acquire(t, s, NULL, false, true, now);
        gen = src_gen(s);
        struct src_result ok = {.ok = true};
        ck_assert(srctab_record(t, s, &ok, true, now));
        ck_assert_uint_gt(src_gen(s), gen);
        srctab_release(t, s, NULL);
        ck_assert_int_eq(drain_count(), 1);
        struct src_info i = info(s);
        ck_assert_int_eq(i.state, BREAKER_CLOSED);
        ck_assert_int_eq(i.retry_at_ms, 0);
        ck_assert_int_eq(i.trips, 1);
        src_info_clear(&i);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_OK);
}
END_TEST

START_TEST(test_failed_probe_reopens_grown)
{
        static const int64_t spans[] = {OPEN_MS * 3, OPEN_MS * 9, MAX_OPEN_MS, MAX_OPEN_MS};
        struct src *s = source("a.example");

        trip(s);
        for (size_t k = 0; k < sizeof(spans) / sizeof(spans[0]); k++) {
                now = retry_at(s);
                ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
                ck_assert(attempt(s, false, true, true));
                struct src_info i = info(s);
                ck_assert_int_eq(i.state, BREAKER_OPEN);
                ck_assert_int_eq(i.retry_at_ms, now + spans[k]);
                ck_assert_int_eq(i.open_ms, spans[k]);
                ck_assert_int_eq(i.trips, (int64_t)k + 2);
                src_info_clear(&i);
        }
}
END_TEST

START_TEST(test_one_probe_at_a_time)
{
        struct src *s = source("a.example");
        int64_t wake;

        trip(s);
        now += OPEN_MS;
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
        srctab_acquire(t, s, NULL, false, true, now);
        ck_assert_int_eq(admit(s, NULL, false, &wake), ADMIT_OPEN);
        ck_assert_int_eq(wake, 0); /* no known time: ask when gen moves */
        now += 1000000;
        ck_assert_int_eq(admit(s, NULL, false, &wake), ADMIT_OPEN);
        ck_assert_int_eq(wake, 0);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
}
END_TEST

START_TEST(test_abandoned_probe_lets_another_go)
{
        struct src *s = source("a.example");

        trip(s);
        now += OPEN_MS;
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
        srctab_acquire(t, s, NULL, false, true, now);
        srctab_release(t, s, NULL);
        uint64_t gen = src_gen(s);
        srctab_abandon_probe(t, s, now);
        ck_assert_uint_gt(src_gen(s), gen);
        ck_assert_int_eq(state(s), BREAKER_HALF_OPEN);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
        /* abandoning with no probe out changes nothing */
        gen = src_gen(s);
        srctab_abandon_probe(t, s, now);
        ck_assert_uint_eq(src_gen(s), gen);
        /* a probe whose failure does not count is no verdict either */
        ck_assert(!attempt(s, false, false, true));
        ck_assert_uint_gt(src_gen(s), gen);
        ck_assert_int_eq(state(s), BREAKER_HALF_OPEN);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
        ck_assert(attempt(s, true, false, true));
        ck_assert_int_eq(state(s), BREAKER_CLOSED);
}
END_TEST

START_TEST(test_stragglers_ignored)
{
        struct src *s = source("a.example");
        struct src_result ok = {.ok = true, .bytes = 5};
        struct src_result bad = {.ok = false, .counted = true, .error = "timeout: slow"};

        srctab_acquire(t, s, NULL, false, false, now); /* started before the trip */
        srctab_acquire(t, s, NULL, false, false, now);
        trip(s);
        ck_assert(!srctab_record(t, s, &ok, false, now));
        srctab_release(t, s, NULL);
        ck_assert_int_eq(state(s), BREAKER_OPEN);
        int64_t at = retry_at(s);
        /* half-open with the probe out: only the probe decides */
        now = at;
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
        srctab_acquire(t, s, NULL, false, true, now);
        ck_assert(!srctab_record(t, s, &bad, false, now));
        srctab_release(t, s, NULL);
        struct src_info i = info(s);
        ck_assert_int_eq(i.state, BREAKER_HALF_OPEN);
        ck_assert_int_eq(i.trips, 1);
        ck_assert_int_eq(i.downloads.attempts, THRESHOLD + 2); /* counted all the same */
        ck_assert_int_eq(i.downloads.successes, 1);
        ck_assert_int_eq(i.downloads.bytes, 5);
        ck_assert_str_eq(i.last_error, "timeout: slow");
        src_info_clear(&i);
        ck_assert(srctab_record(t, s, &ok, true, now));
        srctab_release(t, s, NULL);
        ck_assert_int_eq(state(s), BREAKER_CLOSED);
        ck_assert_int_eq(src_active(s), 0);
}
END_TEST

START_TEST(test_reset_circuit)
{
        struct src *s = source("a.example");

        trip(s);
        drain_count();
        uint64_t gen = src_gen(s);
        srctab_reset_circuit(t, s);
        ck_assert_uint_gt(src_gen(s), gen);
        ck_assert_int_eq(drain_count(), 1);
        ck_assert_int_eq(state(s), BREAKER_CLOSED);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_OK);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        srctab_tick(t, now + OPEN_MS); /* nothing turns half-open */
        ck_assert_int_eq(state(s), BREAKER_CLOSED);
}
END_TEST

/* ---- connection limits -------------------------------------------------- */

START_TEST(test_query_source_limit)
{
        struct src *q = query_source("search");
        int64_t wake;

        for (int i = 0; i < DEFAULT_CONN; i++) {
                ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_OK);
                srctab_acquire(t, q, NULL, false, false, now);
        }
        ck_assert_int_eq(admit(q, NULL, false, &wake), ADMIT_FULL);
        ck_assert_int_eq(wake, 0);
        ck_assert_int_eq(src_active(q), DEFAULT_CONN);
        /* its own max_connections */
        uint64_t gen = src_gen(q);
        srctab_set_limits(t, q, DEFAULT_CONN + 1, 0);
        ck_assert_uint_gt(src_gen(q), gen);
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_OK);
        srctab_acquire(t, q, NULL, false, false, now);
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_FULL);
        gen = src_gen(q);
        srctab_set_limits(t, q, DEFAULT_CONN + 1, 0); /* the same: gen stays */
        ck_assert_uint_eq(src_gen(q), gen);
        srctab_release(t, q, NULL);
        ck_assert_uint_gt(src_gen(q), gen);
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_OK);
        /* a lower limit: full at once */
        srctab_set_limits(t, q, 1, 0);
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_FULL);
}
END_TEST

START_TEST(test_host_limit_shared)
{
        struct src *a = source("label-a"), *b = source("label-b");
        struct src *h = host("cdn.example:443"), *other = host("other.example"),
                   *third = host("third.example");
        int64_t wake;

        srctab_acquire(t, a, h, false, false, now);
        srctab_acquire(t, b, h, false, false, now);
        ck_assert_int_eq(src_active(h), HOST_CONNS);
        ck_assert_int_eq(admit(a, h, false, &wake), ADMIT_FULL);
        ck_assert_int_eq(wake, 0);
        ck_assert_int_eq(admit(b, h, false, NULL), ADMIT_FULL);
        /* other hosts of the same label are free: URL sources have no limit
         * of their own, not even default_source_connections */
        for (int i = 0; i < HOST_CONNS; i++) {
                ck_assert_int_eq(admit(a, other, false, NULL), ADMIT_OK);
                srctab_acquire(t, a, other, false, false, now);
                ck_assert_int_eq(admit(a, third, false, NULL), ADMIT_OK);
                srctab_acquire(t, a, third, false, false, now);
        }
        ck_assert_int_eq(src_active(a), 2 * HOST_CONNS + 1);
        ck_assert_int_gt(src_active(a), DEFAULT_CONN);
        ck_assert_int_eq(admit(a, other, false, NULL), ADMIT_FULL);
        ck_assert_int_eq(admit(a, NULL, false, NULL), ADMIT_OK); /* a listing needs no host */
        uint64_t ga = src_gen(a), gh = src_gen(h);
        srctab_release(t, b, h);
        ck_assert_uint_gt(src_gen(h), gh);
        ck_assert_uint_eq(src_gen(a), ga); /* b's release frees nothing of a's own */
        ck_assert_int_eq(admit(a, h, false, NULL), ADMIT_OK);
        ck_assert_int_eq(src_active(b), 0);
        /* hosts are not sources */
        ck_assert_ptr_null(srctab_find(t, "cdn.example:443"));
        ck_assert_ptr_eq(srctab_host(t, "cdn.example:443"), h);
        ck_assert_uint_eq(srctab_count(t), 2);
}
END_TEST

START_TEST(test_circuit_before_limits)
{
        struct src *q = query_source("search");
        int64_t wake;

        trip(q);
        srctab_set_limits(t, q, 1, 0);
        srctab_acquire(t, q, NULL, false, false, now); /* one started before the trip */
        ck_assert_int_eq(admit(q, NULL, false, &wake), ADMIT_OPEN);
        ck_assert_int_eq(wake, now + OPEN_MS);
        now += OPEN_MS;
        /* half-open, but the one connection is taken: the probe waits */
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_FULL);
        srctab_release(t, q, NULL);
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_PROBE);
}
END_TEST

/* ---- rate tokens ---------------------------------------------------------- */

START_TEST(test_rate_tokens)
{
        struct src *q = query_source("search");
        int64_t wake;

        srctab_set_limits(t, q, 0, 2);
        for (int i = 0; i < 2; i++) {
                ck_assert_int_eq(admit(q, NULL, true, NULL), ADMIT_OK);
                ck_assert_int_eq(admit(q, NULL, true, NULL), ADMIT_OK); /* admit takes no token */
                srctab_acquire(t, q, NULL, true, false, now);
        }
        ck_assert_int_eq(admit(q, NULL, true, &wake), ADMIT_RATE);
        ck_assert_int_eq(wake, now + 500);
        ck_assert_int_eq(srctab_next_wake(t, now), now + 500);
        /* a request that spends no token is not held back */
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_OK);
        now += 499;
        ck_assert_int_eq(admit(q, NULL, true, &wake), ADMIT_RATE);
        ck_assert_int_eq(wake, now + 1);
        now += 1;
        uint64_t gen = src_gen(q);
        srctab_tick(t, now);
        ck_assert_uint_gt(src_gen(q), gen);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        ck_assert_int_eq(admit(q, NULL, true, NULL), ADMIT_OK);
        srctab_acquire(t, q, NULL, true, false, now);
        ck_assert_int_eq(admit(q, NULL, true, &wake), ADMIT_RATE);
        ck_assert_int_eq(wake, now + 500);
        /* without requests_per_second there is no bucket */
        srctab_set_limits(t, q, 0, 0);
        ck_assert_int_eq(admit(q, NULL, true, NULL), ADMIT_OK);
}
END_TEST

START_TEST(test_rate_after_limits)
{
        struct src *q = query_source("search");
        int64_t wake;

        srctab_set_limits(t, q, 1, 1);
        srctab_acquire(t, q, NULL, true, false, now);
        ck_assert_int_eq(admit(q, NULL, true, &wake), ADMIT_FULL);
        ck_assert_int_eq(wake, 0);
        srctab_release(t, q, NULL);
        ck_assert_int_eq(admit(q, NULL, true, &wake), ADMIT_RATE);
        ck_assert_int_eq(wake, now + 1000);
}
END_TEST

/* ---- statistics ------------------------------------------------------------ */

START_TEST(test_stats_split)
{
        struct src *q = query_source("search");
        struct src_result page = {.listing = true, .ok = true, .bytes = 2000};
        struct src_result page_bad = {
                .listing = true, .counted = true, .will_retry = true, .error = "http_500: x"};
        struct src_result page_retry = {.listing = true, .ok = true, .retry = true, .bytes = 10};
        struct src_result file = {.ok = true, .bytes = 1 << 20};
        struct src_result file_bad = {.error = "http_404: Not Found"};

        srctab_record(t, q, &page, false, now);
        srctab_record(t, q, &page_bad, false, now);
        srctab_record(t, q, &page_retry, false, now);
        srctab_record(t, q, &file, false, now);
        srctab_record(t, q, &file_bad, false, now);
        struct src_info i = info(q);
        ck_assert_int_eq(i.listings.attempts, 3);
        ck_assert_int_eq(i.listings.successes, 2);
        ck_assert_int_eq(i.listings.failures, 1);
        ck_assert_int_eq(i.listings.retries, 1);
        ck_assert_int_eq(i.listings.bytes, 2010);
        ck_assert_int_eq(i.downloads.attempts, 2);
        ck_assert_int_eq(i.downloads.successes, 1);
        ck_assert_int_eq(i.downloads.failures, 1);
        ck_assert_int_eq(i.downloads.retries, 0);
        ck_assert_int_eq(i.downloads.bytes, 1 << 20);
        ck_assert_str_eq(i.last_error, "http_404: Not Found");
        ck_assert(i.query);
        ck_assert_str_eq(i.name, "search");
        src_info_clear(&i);
        /* a success keeps the last error */
        srctab_record(t, q, &file, false, now);
        i = info(q);
        ck_assert_str_eq(i.last_error, "http_404: Not Found");
        src_info_clear(&i);
}
END_TEST

START_TEST(test_reset_stats_keeps_circuits)
{
        struct src *s = source("a.example"), *gone = source("gone.example");
        struct src_counters dl, ls;
        struct src_info *v;
        size_t n;

        attempt(gone, true, false, false);
        now += IDLE_MS + 1;
        trip(s);
        ck_assert_uint_eq(srctab_prune(t, now), 1);
        srctab_reset_stats(t);
        ck_assert_int_eq(srctab_export(t, now, &v, &n, &dl, &ls), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(v[0].state, BREAKER_OPEN);
        ck_assert_int_eq(v[0].consecutive_failures, THRESHOLD);
        ck_assert_int_eq(v[0].trips, 1);
        ck_assert_int_eq(v[0].downloads.attempts, 0);
        ck_assert_int_eq(v[0].downloads.failures, 0);
        ck_assert_int_eq(dl.attempts, 0); /* the pruned source's too */
        ck_assert_int_eq(dl.bytes, 0);
        ck_assert_int_eq(ls.attempts, 0);
        src_infos_free(v, n);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_OPEN);
}
END_TEST

/* ---- pruning ---------------------------------------------------------------- */

START_TEST(test_prune_idle_only)
{
        struct src *idle = source("idle.example"), *busy = source("busy.example");
        struct src *open = source("open.example"), *q = query_source("search");
        struct src *h_idle = host("idle.example"), *h_busy = host("busy.example");

        srctab_acquire(t, idle, h_idle, false, false, now);
        srctab_release(t, idle, h_idle);
        attempt(idle, true, false, false);
        srctab_acquire(t, busy, h_busy, false, false, now);
        trip(open);
        attempt(q, true, false, false);
        drain_count();
        /* not before idle_prune_ms has passed */
        now += IDLE_MS;
        ck_assert_uint_eq(srctab_prune(t, now), 0);
        now += 1;
        ck_assert_uint_eq(srctab_prune(t, now), 2); /* idle.example, source and host */
        ck_assert_ptr_null(srctab_find(t, "idle.example"));
        ck_assert_ptr_eq(srctab_find(t, "busy.example"), busy);
        ck_assert_ptr_eq(srctab_find(t, "open.example"), open);
        ck_assert_ptr_eq(srctab_find(t, "search"), q);
        ck_assert_uint_eq(srctab_count(t), 3);
        ck_assert_int_eq(admit(busy, h_busy, false, NULL), ADMIT_OK); /* the busy host is still there */
        srctab_acquire(t, busy, h_busy, false, false, now);
        ck_assert_int_eq(admit(busy, h_busy, false, NULL), ADMIT_FULL);
        /* a new entry gets a full idle period, even when never used */
        struct src *fresh = source("fresh.example");
        ck_assert_uint_eq(srctab_prune(t, now), 0);
        now += IDLE_MS;
        ck_assert_uint_eq(srctab_prune(t, now), 0);
        ck_assert_ptr_eq(srctab_find(t, "fresh.example"), fresh);
        now += 1;
        ck_assert_uint_eq(srctab_prune(t, now), 1);
        ck_assert_ptr_null(srctab_find(t, "fresh.example"));
        /* once closed and idle, the open one goes too */
        srctab_reset_circuit(t, open);
        drain_count();
        ck_assert_uint_eq(srctab_prune(t, now), 1);
        ck_assert_ptr_null(srctab_find(t, "open.example"));
        /* the query source stays however long it idles */
        now += 100 * IDLE_MS;
        srctab_release(t, busy, h_busy);
        srctab_release(t, busy, h_busy);
        ck_assert_uint_eq(srctab_prune(t, now), 2); /* busy.example, source and host */
        ck_assert_ptr_eq(srctab_find(t, "search"), q);
        ck_assert_uint_eq(srctab_count(t), 1);
}
END_TEST

START_TEST(test_prune_waits_for_drain)
{
        struct src *s = source("a.example");

        trip(s);
        srctab_reset_circuit(t, s);
        now += IDLE_MS + 1;
        ck_assert_uint_eq(srctab_prune(t, now), 0); /* its change is not drained yet */
        ck_assert_int_eq(drain_count(), 1);
        ck_assert_uint_eq(srctab_prune(t, now), 1);
}
END_TEST

START_TEST(test_totals_survive_pruning)
{
        struct src *a = source("a.example"), *b = source("b.example");
        struct src_result dl = {.ok = true, .bytes = 700};
        struct src_result ls = {.listing = true, .ok = false, .retry = true, .error = "e: x"};
        struct src_counters d0, l0, d1, l1;
        struct src_info *v;
        size_t n;

        srctab_record(t, a, &dl, false, now);
        srctab_record(t, a, &ls, false, now);
        srctab_record(t, b, &dl, false, now);
        ck_assert_int_eq(srctab_export(t, now, &v, &n, &d0, &l0), 0);
        src_infos_free(v, n);
        ck_assert_int_eq(d0.attempts, 2);
        ck_assert_int_eq(d0.bytes, 1400);
        ck_assert_int_eq(l0.failures, 1);
        ck_assert_int_eq(l0.retries, 1);
        now += IDLE_MS / 2;
        srctab_record(t, b, &dl, false, now);
        now += IDLE_MS / 2 + 1;
        ck_assert_uint_eq(srctab_prune(t, now), 1); /* a */
        ck_assert_int_eq(srctab_export(t, now, &v, &n, &d1, &l1), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].name, "b.example");
        ck_assert_int_eq(v[0].downloads.attempts, 2);
        src_infos_free(v, n);
        ck_assert_int_eq(d1.attempts, 3);
        ck_assert_int_eq(d1.successes, 3);
        ck_assert_int_eq(d1.bytes, 2100);
        ck_assert_int_eq(l1.attempts, 1);
        ck_assert_int_eq(l1.failures, 1);
        ck_assert_int_eq(l1.retries, 1);
        /* a source seen again starts from zero; the totals still hold the old */
        a = source("a.example");
        srctab_record(t, a, &dl, false, now);
        ck_assert_int_eq(srctab_export(t, now, &v, &n, &d1, NULL), 0);
        ck_assert_int_eq(v[0].downloads.attempts, 1);
        src_infos_free(v, n);
        ck_assert_int_eq(d1.attempts, 4);
}
END_TEST

/* ---- export and restore -------------------------------------------------- */

START_TEST(test_export_sorted)
{
        static const char *names[] = {"zeta.example", "alpha.example", "search", "mid.example:8080", "Beta"};
        struct src_info *v;
        size_t n;

        ck_assert_int_eq(srctab_export(t, now, &v, &n, NULL, NULL), 0);
        ck_assert_uint_eq(n, 0);
        src_infos_free(v, n);
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                srctab_source(t, names[i], i == 2);
        host("alpha.example");
        host("aaa-host.example");
        ck_assert_int_eq(srctab_export(t, now, &v, &n, NULL, NULL), 0);
        ck_assert_uint_eq(n, 5);
        ck_assert_str_eq(v[0].name, "Beta");
        ck_assert_str_eq(v[1].name, "alpha.example");
        ck_assert_str_eq(v[2].name, "mid.example:8080");
        ck_assert_str_eq(v[3].name, "search");
        ck_assert(v[3].query);
        ck_assert(!v[1].query);
        ck_assert_str_eq(v[4].name, "zeta.example");
        ck_assert_int_eq(v[0].threshold, THRESHOLD);
        ck_assert_int_eq(v[0].open_ms, OPEN_MS);
        ck_assert_ptr_null(v[0].last_error);
        src_infos_free(v, n);
        src_infos_free(NULL, 0);
        src_info_clear(NULL);
}
END_TEST

START_TEST(test_restore_circuit)
{
        struct src *s = source("a.example"), *b = source("b.example");
        int64_t wake;

        srctab_restore_circuit(t, s, BREAKER_OPEN, THRESHOLD + 2, 7, now - 5000, now + 25000, 3 * OPEN_MS);
        ck_assert_int_eq(drain_count(), 1);
        struct src_info i = info(s);
        ck_assert_int_eq(i.state, BREAKER_OPEN);
        ck_assert_int_eq(i.consecutive_failures, THRESHOLD + 2);
        ck_assert_int_eq(i.trips, 7);
        ck_assert_int_eq(i.opened_at_ms, now - 5000);
        ck_assert_int_eq(i.open_ms, 3 * OPEN_MS);
        src_info_clear(&i);
        ck_assert_int_eq(admit(s, NULL, false, &wake), ADMIT_OPEN);
        ck_assert_int_eq(wake, now + 25000);
        ck_assert_int_eq(srctab_next_wake(t, now), now + 25000);
        now += 25000;
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
        ck_assert(attempt(s, false, true, true));
        i = info(s);
        ck_assert_int_eq(i.open_ms, 9 * OPEN_MS); /* grows from the restored period */
        ck_assert_int_eq(i.trips, 8);
        src_info_clear(&i);
        /* a half-open circuit comes back with no probe out */
        srctab_restore_circuit(t, b, BREAKER_HALF_OPEN, THRESHOLD, 1, now - OPEN_MS, now, OPEN_MS);
        ck_assert_int_eq(admit(b, NULL, false, NULL), ADMIT_PROBE);
        /* a closed one keeps its count of failures */
        srctab_restore_circuit(t, b, BREAKER_CLOSED, THRESHOLD - 1, 1, now - OPEN_MS, 0, OPEN_MS);
        ck_assert_int_eq(admit(b, NULL, false, NULL), ADMIT_OK);
        ck_assert(attempt(b, false, true, false));
        ck_assert_int_eq(state(b), BREAKER_OPEN);
}
END_TEST

/* ---- wake times ---------------------------------------------------------- */

START_TEST(test_next_wake_and_tick)
{
        struct src *a = source("a.example"), *b = source("b.example"), *q = query_source("search");
        int64_t t0 = now;

        for (int i = 0; i < 100; i++) { /* idle entries wake nothing */
                char name[32];
                snprintf(name, sizeof(name), "idle-%d.example", i);
                attempt(source(name), true, false, false);
        }
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        trip(a);
        now += 2000;
        trip(b);
        srctab_set_limits(t, q, 0, 0.5);
        srctab_acquire(t, q, NULL, true, false, now);
        int64_t wake;
        ck_assert_int_eq(admit(q, NULL, true, &wake), ADMIT_RATE);
        ck_assert_int_eq(wake, now + 2000);
        ck_assert_int_eq(srctab_next_wake(t, now), now + 2000);
        drain_count();
        /* the rate token comes first */
        now += 2000;
        srctab_tick(t, now);
        ck_assert_int_eq(drain_count(), 0); /* no circuit changed */
        ck_assert_int_eq(srctab_next_wake(t, now), t0 + OPEN_MS);
        /* then a's circuit turns half-open, by tick */
        uint64_t gen = src_gen(a);
        ck_assert_int_eq(srctab_next_wake(t, t0 + OPEN_MS + 5), t0 + OPEN_MS + 5); /* due: tick now */
        now = t0 + OPEN_MS;
        srctab_tick(t, now);
        ck_assert_uint_gt(src_gen(a), gen);
        ck_assert_int_eq(state(a), BREAKER_HALF_OPEN);
        ck_assert_int_eq(drain_count(), 1);
        ck_assert_int_eq(srctab_next_wake(t, now), t0 + 2000 + OPEN_MS);
        gen = src_gen(a);
        srctab_tick(t, now); /* once */
        ck_assert_uint_eq(src_gen(a), gen);
        now = t0 + 2000 + OPEN_MS;
        srctab_tick(t, now);
        ck_assert_int_eq(state(b), BREAKER_HALF_OPEN);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        /* a failed probe puts a back on the list */
        ck_assert_int_eq(admit(a, NULL, false, NULL), ADMIT_PROBE);
        ck_assert(attempt(a, false, true, true));
        ck_assert_int_eq(srctab_next_wake(t, now), now + 3 * OPEN_MS);
}
END_TEST

/* A probe that starts without asking admit first still turns the circuit
 * half-open: nothing is left waiting for a time already past. */
START_TEST(test_probe_acquired_without_admit)
{
        struct src *s = source("a.example");

        trip(s);
        now = retry_at(s);
        drain_count();
        srctab_acquire(t, s, NULL, false, true, now);
        ck_assert_int_eq(drain_count(), 1);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_OPEN); /* the probe is out */
        struct src_result bad = {.counted = true, .error = "e: x"};
        ck_assert(srctab_record(t, s, &bad, true, now));
        ck_assert_int_eq(srctab_next_wake(t, now), now + 3 * OPEN_MS);
}
END_TEST

START_TEST(test_open_ms_zero)
{
        struct srctab_opts o = opts;
        o.open_ms = 0;
        o.max_open_ms = 0;
        srctab_configure(t, &o);
        struct src *s = source("a.example");

        for (int i = 0; i < THRESHOLD; i++)
                ck_assert_int_eq(attempt(s, false, true, false), i == THRESHOLD - 1);
        ck_assert_int_eq(state(s), BREAKER_HALF_OPEN);   /* open for no time */
        ck_assert_int_eq(srctab_next_wake(t, now), now); /* due at once */
        srctab_tick(t, now);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        ck_assert_int_eq(admit(s, NULL, false, NULL), ADMIT_PROBE);
}
END_TEST

START_TEST(test_configure)
{
        struct src *s = source("a.example"), *q = query_source("search");
        struct src *h = host("h.example");
        struct srctab_opts o = opts;

        srctab_acquire(t, s, h, false, false, now);
        srctab_acquire(t, s, h, false, false, now);
        ck_assert_int_eq(admit(s, h, false, NULL), ADMIT_FULL);
        uint64_t gs = src_gen(s), gh = src_gen(h), gq = src_gen(q);
        o.host_connections = HOST_CONNS + 1;
        o.threshold = 1;
        o.open_growth = 0.2; /* reads as 1 */
        srctab_configure(t, &o);
        ck_assert_uint_gt(src_gen(s), gs);
        ck_assert_uint_gt(src_gen(h), gh);
        ck_assert_uint_gt(src_gen(q), gq);
        ck_assert_int_eq(admit(s, h, false, NULL), ADMIT_OK);
        struct src_info i = info(s);
        ck_assert_int_eq(i.threshold, 1);
        src_info_clear(&i);
        ck_assert(attempt(q, false, true, false)); /* one counted failure opens now */
        now = retry_at(q);
        ck_assert_int_eq(admit(q, NULL, false, NULL), ADMIT_PROBE);
        ck_assert(attempt(q, false, true, true));
        i = info(q);
        ck_assert_int_eq(i.open_ms, OPEN_MS); /* growth 1: fixed */
        src_info_clear(&i);
        /* a source named again as a query source becomes one, and stays */
        ck_assert_ptr_eq(srctab_source(t, "a.example", true), s);
        ck_assert(src_is_query(s));
        ck_assert_ptr_eq(srctab_source(t, "a.example", false), s);
        ck_assert(src_is_query(s));
        ck_assert_str_eq(src_name(s), "a.example");
}
END_TEST

/* ---- many sources ----------------------------------------------------------- */

START_TEST(test_many_sources)
{
        static struct src *srcs[MANY];
        char name[64];
        size_t before = heap_bytes(), bad = 0;

        for (int i = 0; i < MANY; i++) {
                snprintf(name, sizeof(name), "host-%d.example", i);
                struct src *s = srctab_source(t, name, false);
                snprintf(name, sizeof(name), "host-%d.example:443", i);
                struct src *h = srctab_host(t, name);
                int64_t wake;
                ck_assert(s && h);
                bad += srctab_admit(t, s, h, false, now, &wake) != ADMIT_OK;
                srctab_acquire(t, s, h, false, false, now);
                struct src_result r = {
                        .ok = i % 2 == 0, .counted = true, .bytes = 1, .error = "http_500: x"};
                bad += srctab_record(t, s, &r, false, now); /* no circuit opens */
                srctab_release(t, s, h);
                srcs[i] = s;
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_eq(srctab_count(t), MANY);
        size_t full = heap_bytes();
        ck_assert_uint_gt(full - before, (size_t)MANY * 2 * 200); /* the entries are on the heap */
        /* a million lookups by name, each finding its entry */
        for (int k = 0; k < 100; k++)
                for (int i = 0; i < MANY; i++) {
                        snprintf(name, sizeof(name), "host-%d.example", i);
                        bad += srctab_find(t, name) != srcs[i];
                }
        ck_assert_uint_eq(bad, 0);
        ck_assert_int_eq(srctab_next_wake(t, now), INT64_MAX);
        now += IDLE_MS + 1;
        ck_assert_uint_eq(srctab_prune(t, now), 2 * MANY);
        ck_assert_uint_eq(srctab_count(t), 0);
        /* all but the two maps' arrays (2^14 slots of 24 bytes) is given back */
        size_t after = heap_bytes();
        ck_assert_uint_le(after, before + 2 * 16384 * 24 + 65536);
        struct src_counters dl;
        struct src_info *v;
        size_t n;
        ck_assert_int_eq(srctab_export(t, now, &v, &n, &dl, NULL), 0);
        ck_assert_uint_eq(n, 0);
        src_infos_free(v, n);
        ck_assert_int_eq(dl.attempts, MANY);
        ck_assert_int_eq(dl.successes, MANY / 2);
        ck_assert_int_eq(dl.failures, MANY / 2);
        /* the names come back as new entries in the same arrays */
        for (int i = 0; i < MANY; i++) {
                snprintf(name, sizeof(name), "host-%d.example", i);
                bad += srctab_source(t, name, false) == NULL;
        }
        ck_assert_uint_eq(bad, 0);
        ck_assert_uint_le(heap_bytes(), full);
}
END_TEST

static Suite *srctab_suite(void)
{
        Suite *s = suite_create("srctab");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_counted_failures_open);
        tcase_add_test(tc, test_success_between_resets);
        tcase_add_test(tc, test_uncounted_failures_never_open);
        tcase_add_test(tc, test_probe_success_closes);
        tcase_add_test(tc, test_failed_probe_reopens_grown);
        tcase_add_test(tc, test_one_probe_at_a_time);
        tcase_add_test(tc, test_abandoned_probe_lets_another_go);
        tcase_add_test(tc, test_stragglers_ignored);
        tcase_add_test(tc, test_reset_circuit);
        tcase_add_test(tc, test_query_source_limit);
        tcase_add_test(tc, test_host_limit_shared);
        tcase_add_test(tc, test_circuit_before_limits);
        tcase_add_test(tc, test_rate_tokens);
        tcase_add_test(tc, test_rate_after_limits);
        tcase_add_test(tc, test_stats_split);
        tcase_add_test(tc, test_reset_stats_keeps_circuits);
        tcase_add_test(tc, test_prune_idle_only);
        tcase_add_test(tc, test_prune_waits_for_drain);
        tcase_add_test(tc, test_totals_survive_pruning);
        tcase_add_test(tc, test_export_sorted);
        tcase_add_test(tc, test_restore_circuit);
        tcase_add_test(tc, test_next_wake_and_tick);
        tcase_add_test(tc, test_probe_acquired_without_admit);
        tcase_add_test(tc, test_open_ms_zero);
        tcase_add_test(tc, test_configure);
        tcase_add_test(tc, test_many_sources);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(srctab_suite()); }

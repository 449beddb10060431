/* Retry policy: pure, no I/O, no clock of its own. Which faults are retried
 * and which count against the source's circuit breaker, and how long to
 * wait before the next attempt. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* What went wrong with one attempt; the item's error.code is
 * retry_class_code(). */
enum retry_class {
        RC_OK = 0,
        RC_HTTP_4XX,        /* "http_4xx"        not retried, not counted */
        RC_HTTP_5XX,        /* "http_5xx"        retried, counted */
        RC_RATE_LIMITED,    /* "rate_limited"    429, or 503 with Retry-After: retried no sooner than it, not
                               counted */
        RC_CONNECT,         /* "connect"         refused, reset, DNS: retried, counted */
        RC_TIMEOUT,         /* "timeout"         retried, counted */
        RC_STALLED,         /* "stalled"         retried, counted */
        RC_TRUNCATED,       /* "truncated"       retried, counted */
        RC_INVALID_CONTENT, /* "invalid_content" not retried, counted */
        RC_TOO_LARGE,       /* "too_large"       not retried, not counted */
        RC_BLOCKED_ADDRESS, /* "blocked_address" not retried, not counted */
        RC_CIRCUIT_OPEN,    /* "circuit_open"    not retried, not counted */
        RC_IO,              /* "io"              local disk error: not retried, not counted */
        RC_BAD_RESPONSE,    /* "bad_response"    no usable HTTP answer (headers too large or too many,
                               garbled): not retried, counted */
        _RC_MAX
};

struct retry_policy {
        int max_retries;         /* retries after the first attempt */
        int64_t backoff_base_ms; /* first delay; doubles each retry */
        int64_t backoff_max_ms;  /* cap of one delay and of an honoured Retry-After */
        double jitter;           /* RETRY_JITTER, fraction 0..1: a delay d is spread over
                                    [d*(1-jitter), d*(1+jitter)]; 0: the exact schedule */
};

const char *retry_class_code(enum retry_class c);
bool retry_class_retryable(enum retry_class c);
bool retry_class_counts_for_breaker(enum retry_class c);
/* Map an HTTP status (and whether a Retry-After came with it) to a class;
 * 2xx -> RC_OK. */
enum retry_class retry_classify_http(int status, bool has_retry_after);

/* Should an item that has made `attempts` attempts (>= 1) and failed with c
 * be tried again? */
bool retry_should_retry(const struct retry_policy *p, enum retry_class c, int attempts);
/* Delay before attempt number attempts+1, in ms: d = base * 2^(attempts-1)
 * capped by backoff_max, then spread uniformly over
 * [d*(1-jitter), d*(1+jitter)] using rand01 in [0,1) (0 gives the low end,
 * 0.5 d itself), and capped by backoff_max again. A Retry-After
 * (retry_after_ms >= 0) is a floor, itself capped by backoff_max. */
int64_t retry_delay_ms(const struct retry_policy *p, int attempts, int64_t retry_after_ms, double rand01);
/* Parse a Retry-After header value: delta-seconds or an HTTP-date, relative
 * to now_wall_ms. Returns ms >= 0, or -1 when unparseable. */
int64_t retry_after_parse(const char *value, int64_t now_wall_ms);

/* Retry policy: the table of fault classes (their codes, whether they are
 * retried, whether they count against a source's circuit breaker), the map
 * from an HTTP status to a class, the backoff delay and the Retry-After
 * parser.
 *
 * The delay before retry n is base * 2^(n-1) capped by the maximum, spread
 * by the jitter over [d*(1-j), d*(1+j)] and capped again, so at defaults
 * (1 s, 60 s, 0.1) the retries wait 0.9..1.1, 1.8..2.2 and 3.6..4.4 s.
 *
 * Pure: no I/O, no clock, no randomness of its own. The caller passes the
 * wall time (for HTTP dates) and a uniform random number (for jitter), so
 * every answer is a function of the arguments. */
#include "autoconfig.h"

#include "daemon/retry.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct class_info {
        const char *code;
        bool retryable;
        bool counted; /* counts against the source's breaker */
};

static const struct class_info classes[_RC_MAX] = {
        [RC_OK] = {"ok", false, false},
        [RC_HTTP_4XX] = {"http_4xx", false, false},
        [RC_HTTP_5XX] = {"http_5xx", true, true},
        [RC_RATE_LIMITED] = {"rate_limited", true, false},
        [RC_CONNECT] = {"connect", true, true},
        [RC_TIMEOUT] = {"timeout", true, true},
        [RC_STALLED] = {"stalled", true, true},
        [RC_TRUNCATED] = {"truncated", true, true},
        [RC_INVALID_CONTENT] = {"invalid_content", false, true},
        [RC_TOO_LARGE] = {"too_large", false, false},
        [RC_BLOCKED_ADDRESS] = {"blocked_address", false, false},
        [RC_CIRCUIT_OPEN] = {"circuit_open", false, false},
        [RC_IO] = {"io", false, false},
        [RC_BAD_RESPONSE] = {"bad_response", false, true},
};

/* A century: far above any backoff cap; only keeps absurd Retry-After
 * values and uncapped delays from overflowing int64 arithmetic. */
#define RETRY_AFTER_MAX_S ((int64_t)100 * 365 * 24 * 3600)

static bool class_valid(enum retry_class c) { return (unsigned)c < _RC_MAX; }

const char *retry_class_code(enum retry_class c) { return class_valid(c) ? classes[c].code : "unknown"; }

bool retry_class_retryable(enum retry_class c) { return class_valid(c) && classes[c].retryable; }

bool retry_class_counts_for_breaker(enum retry_class c) { return class_valid(c) && classes[c].counted; }

/* Statuses outside 2xx, 429 and 5xx (1xx, a 3xx that was not followed,
 * nonsense like 600) are not worth retrying: they map to RC_HTTP_4XX. */
enum retry_class retry_classify_http(int status, bool has_retry_after)
{
        if (status >= 200 && status <= 299)
                return RC_OK;
        if (status == 429 || (status == 503 && has_retry_after))
                return RC_RATE_LIMITED;
        if (status >= 500 && status <= 599)
                return RC_HTTP_5XX;
        return RC_HTTP_4XX;
}

bool retry_should_retry(const struct retry_policy *p, enum retry_class c, int attempts)
{
        if (!retry_class_retryable(c))
                return false;
        /* attempts includes the first one: attempts - 1 retries made so far */
        return attempts >= 1 && attempts - 1 < p->max_retries;
}

/* The longest delay the arithmetic handles: keeps a policy without a cap
 * (backoff_max_ms < 0) from overflowing int64 once jitter widens it. */
#define DELAY_LIMIT_MS (RETRY_AFTER_MAX_S * 1000)

/* base * 2^(attempts-1), capped by max (max < 0: no cap) and by
 * DELAY_LIMIT_MS, without overflowing. */
static int64_t backoff_ms(int64_t base, int64_t max, int attempts)
{
        int64_t d = base > 0 ? base : 0;

        if (max < 0 || max > DELAY_LIMIT_MS)
                max = DELAY_LIMIT_MS;
        for (int i = 1; i < attempts && d > 0 && d < max; i++)
                d *= 2;
        return d > max ? max : d;
}

/* x clamped into [0, 1]; NaN -> 0. */
static double unit_interval(double x)
{
        if (!(x >= 0.0))
                return 0.0;
        return x > 1.0 ? 1.0 : x;
}

int64_t retry_delay_ms(const struct retry_policy *p, int attempts, int64_t retry_after_ms, double rand01)
{
        int64_t d = backoff_ms(p->backoff_base_ms, p->backoff_max_ms, attempts < 1 ? 1 : attempts);
        int64_t half = (int64_t)((double)d * unit_interval(p->jitter) + 0.5); /* <= d */

        d = d - half + (int64_t)((double)(2 * half) * unit_interval(rand01));
        if (p->backoff_max_ms >= 0 && d > p->backoff_max_ms)
                d = p->backoff_max_ms;
        if (retry_after_ms >= 0) {
                int64_t floor = retry_after_ms;
                if (p->backoff_max_ms >= 0 && floor > p->backoff_max_ms)
                        floor = p->backoff_max_ms;
                if (d < floor)
                        d = floor;
        }
        return d;
}

static const char *skip_space(const char *s)
{
        while (*s == ' ' || *s == '\t')
                s++;
        return s;
}

static bool only_space(const char *s) { return *skip_space(s) == '\0'; }

/* delta-seconds = 1*DIGIT; returns -1 when s is not one. */
static int64_t parse_delta_seconds(const char *s)
{
        int64_t v = 0;

        if (!isdigit((unsigned char)*s))
                return -1;
        for (; isdigit((unsigned char)*s); s++) {
                if (v < RETRY_AFTER_MAX_S)
                        v = v * 10 + (*s - '0');
        }
        if (!only_space(s))
                return -1;
        return v > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : v;
}

static int month_index(const char *mon)
{
        static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        for (int i = 0; i < 12; i++) {
                if (strcasecmp(mon, months[i]) == 0)
                        return i;
        }
        return -1;
}

/* Each scanner fills tm (tm_year as a full year) and returns the length
 * consumed, or -1. The weekday is read but not checked. */
static int scan_imf_fixdate(const char *s, struct tm *tm, char *mon)
{
        char wday[4];
        int n = -1;

        if (sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wday, &tm->tm_mday, mon,
                   &tm->tm_year, &tm->tm_hour, &tm->tm_min, &tm->tm_sec, &n) != 7)
                return -1;
        return n;
}

static int scan_rfc850(const char *s, struct tm *tm, char *mon)
{
        char wday[10];
        int n = -1;

        if (sscanf(s, "%9[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", wday, &tm->tm_mday, mon,
                   &tm->tm_year, &tm->tm_hour, &tm->tm_min, &tm->tm_sec, &n) != 7)
                return -1;
        tm->tm_year += tm->tm_year < 70 ? 2000 : 1900; /* two-digit years: 1970..2069 */
        return n;
}

static int scan_asctime(const char *s, struct tm *tm, char *mon)
{
        char wday[4];
        int n = -1;

        if (sscanf(s, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wday, mon, &tm->tm_mday, &tm->tm_hour,
                   &tm->tm_min, &tm->tm_sec, &tm->tm_year, &n) != 7)
                return -1;
        return n;
}

/* The three HTTP-date forms of RFC 9110 5.6.7, parsed without the locale
 * (strptime's %a/%b follow LC_TIME):
 *   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
 *   RFC 850      "Sunday, 06-Nov-94 08:49:37 GMT"
 *   asctime      "Sun Nov  6 08:49:37 1994"
 * Returns 0 and *ret (seconds since the epoch), or -EINVAL. */
static int parse_http_date(const char *s, int64_t *ret)
{
        struct tm tm = {0};
        char mon[4];
        int n;

        n = scan_imf_fixdate(s, &tm, mon);
        if (n < 0)
                n = scan_rfc850(s, &tm, mon);
        if (n < 0)
                n = scan_asctime(s, &tm, mon);
        if (n < 0 || !only_space(s + n))
                return -EINVAL;
        tm.tm_mon = month_index(mon);
        tm.tm_year -= 1900;
        if (tm.tm_mon < 0 || tm.tm_year < 70 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour < 0 ||
            tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60)
                return -EINVAL;
        time_t t = timegm(&tm);
        if (t == (time_t)-1)
                return -EINVAL;
        *ret = (int64_t)t;
        return 0;
}

int64_t retry_after_parse(const char *value, int64_t now_wall_ms)
{
        int64_t secs, delta;

        if (!value)
                return -1;
        value = skip_space(value);
        secs = parse_delta_seconds(value);
        if (secs >= 0)
                return secs * 1000;
        if (parse_http_date(value, &secs) < 0)
                return -1;
        delta = secs * 1000 - now_wall_ms;
        if (delta < 0)
                return 0;
        return delta > RETRY_AFTER_MAX_S * 1000 ? RETRY_AFTER_MAX_S * 1000 : delta;
}

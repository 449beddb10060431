/* Circuit breaker of one source.
 *
 * Owns the state of one source's circuit and nothing else: no I/O, no
 * locking (the caller holds its own lock), the monotonic time is an
 * argument. Invariants:
 *  - CLOSED: retry_at_ms == 0, no probe outstanding.
 *  - OPEN is stored; it reads as HALF_OPEN once now >= retry_at_ms, and
 *    breaker_allow() makes that transition real when it admits the probe.
 *  - HALF_OPEN admits one probe at a time (probe_out); only a result
 *    recorded while a probe is out is taken as its verdict. Results from
 *    transfers that started before the circuit opened (stragglers) are
 *    ignored while OPEN or HALF_OPEN without a probe.
 *  - cur_open_ms is the period of the last opening: a trip from CLOSED
 *    opens for open_ms, a re-trip from HALF_OPEN for cur_open_ms * growth,
 *    within [open_ms, max_open_ms]; closing brings it back to open_ms. */
#include "autoconfig.h"

#include "daemon/breaker.h"

#include <math.h>
#include <stdlib.h>

struct breaker {
        int threshold;            /* consecutive counted failures that open it, >= 1 */
        int64_t open_ms;          /* configured open time, ms, >= 0 */
        double growth;            /* factor of the open time after a failed probe, >= 1 */
        int64_t max_open_ms;      /* cap of a grown open time, ms, >= open_ms */
        enum breaker_state state; /* stored state; see breaker_state() for the one seen */
        int consecutive_failures; /* counted failures since the last success */
        int64_t cur_open_ms;      /* ms, the period of the last opening; open_ms when closed */
        int64_t trips;            /* times it opened since start */
        int64_t opened_at_ms;     /* monotonic, last time it opened; 0 when never */
        int64_t retry_at_ms;      /* monotonic, when the probe is allowed; 0 when closed */
        bool probe_out;           /* a half-open probe was admitted and has no result yet */
};

static int clamp_threshold(int threshold) { return threshold < 1 ? 1 : threshold; }

static int64_t clamp_open_ms(int64_t open_ms) { return open_ms < 0 ? 0 : open_ms; }

struct breaker *breaker_new(int threshold, int64_t open_ms)
{
        struct breaker *b = calloc(1, sizeof(*b));

        if (!b)
                return NULL;
        b->state = BREAKER_CLOSED;
        breaker_configure(b, threshold, open_ms);
        return b;
}

void breaker_free(struct breaker *b) { free(b); }

static int64_t clamp_period(const struct breaker *b, int64_t ms)
{
        if (ms < b->open_ms)
                return b->open_ms;
        return ms > b->max_open_ms ? b->max_open_ms : ms;
}

/* A lowered threshold takes effect at the next counted failure; an open
 * circuit keeps its retry time. */
void breaker_configure_growth(struct breaker *b, int threshold, int64_t open_ms, double growth,
                              int64_t max_open_ms)
{
        b->threshold = clamp_threshold(threshold);
        b->open_ms = clamp_open_ms(open_ms);
        b->growth = growth >= 1.0 ? growth : 1.0; /* NaN fails the test too */
        b->max_open_ms = max_open_ms > b->open_ms ? max_open_ms : b->open_ms;
        b->cur_open_ms = b->state == BREAKER_CLOSED ? b->open_ms : clamp_period(b, b->cur_open_ms);
}

void breaker_configure(struct breaker *b, int threshold, int64_t open_ms)
{
        int64_t ms = clamp_open_ms(open_ms);
        int64_t max = ms > INT64_MAX / BREAKER_DEFAULT_MAX_MUL ? INT64_MAX : ms * BREAKER_DEFAULT_MAX_MUL;

        breaker_configure_growth(b, threshold, open_ms, BREAKER_DEFAULT_GROWTH, max);
}

/* The open period after one more failed probe. */
static int64_t grown(const struct breaker *b)
{
        double next = (double)b->cur_open_ms * b->growth;

        if (!isfinite(next) || next >= (double)b->max_open_ms)
                return b->max_open_ms;
        return clamp_period(b, (int64_t)next);
}

static int64_t add_ms(int64_t t, int64_t ms) { return t > INT64_MAX - ms ? INT64_MAX : t + ms; }

static void trip(struct breaker *b, int64_t now_ms)
{
        b->state = BREAKER_OPEN;
        b->trips++;
        b->opened_at_ms = now_ms;
        b->retry_at_ms = add_ms(now_ms, b->cur_open_ms);
        b->probe_out = false;
}

static void close_circuit(struct breaker *b)
{
        b->state = BREAKER_CLOSED;
        b->consecutive_failures = 0;
        b->cur_open_ms = b->open_ms;
        b->retry_at_ms = 0;
        b->probe_out = false;
}

bool breaker_allow(struct breaker *b, int64_t now_ms)
{
        switch (b->state) {
        case BREAKER_CLOSED:
                return true;
        case BREAKER_OPEN:
                if (now_ms < b->retry_at_ms)
                        return false;
                b->state = BREAKER_HALF_OPEN;
                b->probe_out = false;
                break;
        case BREAKER_HALF_OPEN:
                break;
        }
        if (b->probe_out)
                return false;
        b->probe_out = true;
        return true;
}

static bool record_closed(struct breaker *b, bool success, bool counted, int64_t now_ms)
{
        if (success) {
                b->consecutive_failures = 0;
                return false;
        }
        if (!counted)
                return false;
        b->consecutive_failures++;
        if (b->consecutive_failures < b->threshold)
                return false;
        trip(b, now_ms);
        return true;
}

static bool record_probe(struct breaker *b, bool success, bool counted, int64_t now_ms)
{
        if (success) {
                close_circuit(b);
                return true;
        }
        if (!counted) {
                b->probe_out = false; /* no verdict: let another probe go */
                return false;
        }
        b->consecutive_failures++;
        b->cur_open_ms = grown(b);
        trip(b, now_ms);
        return true;
}

bool breaker_record(struct breaker *b, bool success, bool counted, int64_t now_ms)
{
        switch (b->state) {
        case BREAKER_CLOSED:
                return record_closed(b, success, counted, now_ms);
        case BREAKER_HALF_OPEN:
                if (b->probe_out)
                        return record_probe(b, success, counted, now_ms);
                return false;
        case BREAKER_OPEN:
                return false;
        }
        return false;
}

/* Closes the circuit; trips and opened_at_ms stay as history. */
void breaker_reset(struct breaker *b) { close_circuit(b); }

bool breaker_tick(struct breaker *b, int64_t now_ms)
{
        if (b->state != BREAKER_OPEN || now_ms < b->retry_at_ms)
                return false;
        b->state = BREAKER_HALF_OPEN;
        b->probe_out = false;
        return true;
}

/* Out-of-range input is brought to the nearest state that makes sense: an
 * unknown state reads as CLOSED, an open circuit without a retry time
 * retries one period after it opened. */
void breaker_restore(struct breaker *b, enum breaker_state state, int failures, int64_t trips,
                     int64_t opened_at_ms, int64_t retry_at_ms, int64_t open_ms)
{
        close_circuit(b);
        b->consecutive_failures = failures > 0 ? failures : 0;
        b->trips = trips > 0 ? trips : 0;
        b->opened_at_ms = opened_at_ms;
        if (state != BREAKER_OPEN && state != BREAKER_HALF_OPEN)
                return;
        b->state = state;
        b->cur_open_ms = clamp_period(b, open_ms);
        b->retry_at_ms = retry_at_ms > 0 ? retry_at_ms : add_ms(opened_at_ms, b->cur_open_ms);
}

enum breaker_state breaker_state(const struct breaker *b, int64_t now_ms)
{
        if (b->state == BREAKER_OPEN && now_ms >= b->retry_at_ms)
                return BREAKER_HALF_OPEN;
        return b->state;
}

void breaker_get_info(const struct breaker *b, int64_t now_ms, struct breaker_info *ret)
{
        ret->state = breaker_state(b, now_ms);
        ret->consecutive_failures = b->consecutive_failures;
        ret->threshold = b->threshold;
        ret->trips = b->trips;
        ret->opened_at_ms = b->opened_at_ms;
        ret->retry_at_ms = b->retry_at_ms;
        ret->open_ms = b->cur_open_ms;
        ret->probe_out = b->state == BREAKER_HALF_OPEN && b->probe_out;
}

const char *breaker_state_to_string(enum breaker_state s)
{
        switch (s) {
        case BREAKER_CLOSED:
                return "closed";
        case BREAKER_OPEN:
                return "open";
        case BREAKER_HALF_OPEN:
                return "half_open";
        }
        return "unknown";
}

/* Circuit breaker of one source: pure, no I/O, no locking, the time is an
 * argument (now_ms, monotonic). CLOSED -> OPEN after `threshold`
 * consecutive counted failures; OPEN for open_ms (doubling on each re-trip
 * from HALF_OPEN, capped at 8x), then HALF_OPEN admits one probe; the probe's
 * success closes the circuit, its failure opens it again. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

struct breaker;

struct breaker_info {
        enum breaker_state state;
        int consecutive_failures;
        int threshold;
        int64_t trips;        /* times it opened since start */
        int64_t opened_at_ms; /* monotonic; 0 when never */
        int64_t retry_at_ms;  /* monotonic time the half-open probe is allowed; 0 when closed */
};

struct breaker *breaker_new(int threshold, int64_t open_ms);
void breaker_free(struct breaker *b);
/* Change settings on reload; keeps the state. */
void breaker_configure(struct breaker *b, int threshold, int64_t open_ms);
/* May a request start now? OPEN past its time turns HALF_OPEN and admits
 * exactly one probe until its result is recorded. */
bool breaker_allow(struct breaker *b, int64_t now_ms);
/* Record an attempt's outcome. Returns true when this call changed the state
 * (for a log line). Results that do not count (success=false, counted=false)
 * leave the state alone but end a half-open probe without a verdict. */
bool breaker_record(struct breaker *b, bool success, bool counted, int64_t now_ms);
void breaker_reset(struct breaker *b);
enum breaker_state breaker_state(const struct breaker *b, int64_t now_ms);
void breaker_get_info(const struct breaker *b, int64_t now_ms, struct breaker_info *ret);
const char *breaker_state_to_string(enum breaker_state s); /* "closed", "open", "half_open" */

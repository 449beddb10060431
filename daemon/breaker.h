/* Circuit breaker of one source: pure, no I/O, no locking, the time is an
 * argument (now_ms, monotonic). CLOSED -> OPEN after `threshold`
 * consecutive counted failures; OPEN for open_ms, then HALF_OPEN admits one
 * probe; the probe's success closes the circuit, its failure opens it again
 * for the last open time * growth, capped at max_open_ms (by default growth
 * 2 and a cap of 8 * open_ms). */
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
        int64_t open_ms;      /* ms: the current open period (closed: the one a trip would use) */
        bool probe_out;       /* half-open with its probe admitted and no result yet */
};

#define BREAKER_DEFAULT_GROWTH  2.0 /* breaker_new(): factor after each failed probe */
#define BREAKER_DEFAULT_MAX_MUL 8   /* breaker_new(): the cap is this many open_ms */

/* growth BREAKER_DEFAULT_GROWTH, max_open_ms BREAKER_DEFAULT_MAX_MUL * open_ms */
struct breaker *breaker_new(int threshold, int64_t open_ms);
void breaker_free(struct breaker *b);
/* Change settings on reload; keeps the state. growth >= 1 (1: a fixed
 * open time; less, or not a number, reads as 1); max_open_ms below open_ms
 * reads as open_ms. An open circuit keeps its retry time; its open period
 * is brought within [open_ms, max_open_ms]. */
void breaker_configure_growth(struct breaker *b, int threshold, int64_t open_ms, double growth,
                              int64_t max_open_ms);
/* breaker_configure_growth() with the defaults of breaker_new(). */
void breaker_configure(struct breaker *b, int threshold, int64_t open_ms);
/* May a request start now? OPEN past its time turns HALF_OPEN and admits
 * exactly one probe until its result is recorded. */
bool breaker_allow(struct breaker *b, int64_t now_ms);
/* Record an attempt's outcome. Returns true when this call changed the state
 * (for a log line). Results that do not count (success=false, counted=false)
 * leave the state alone but end a half-open probe without a verdict. */
bool breaker_record(struct breaker *b, bool success, bool counted, int64_t now_ms);
void breaker_reset(struct breaker *b);
/* An OPEN circuit whose time is over turns HALF_OPEN with no probe out
 * (breaker_allow() admits it). Returns true when it turned. */
bool breaker_tick(struct breaker *b, int64_t now_ms);
/* Put back a state kept from an earlier run: the times in this run's
 * monotonic clock, open_ms the open period then (brought within
 * [open_ms, max_open_ms] of the settings). A HALF_OPEN circuit comes back
 * with no probe out; a CLOSED one with retry_at_ms 0. */
void breaker_restore(struct breaker *b, enum breaker_state state, int failures, int64_t trips,
                     int64_t opened_at_ms, int64_t retry_at_ms, int64_t open_ms);
enum breaker_state breaker_state(const struct breaker *b, int64_t now_ms);
void breaker_get_info(const struct breaker *b, int64_t now_ms, struct breaker_info *ret);
const char *breaker_state_to_string(enum breaker_state s); /* "closed", "open", "half_open" */

/* srctab: what the scheduler knows of every source and host it talks to,
 * shared by all jobs: circuit breakers, connection counts, the rate limit
 * of query sources, statistics and the last error.
 *
 * Two kinds of entries, each in a hash map keyed by name:
 * - sources: a configured query source (its name), or the group name of
 *   explicit URLs (the URL's host[:port], or the label the job gave).
 *   A source has a circuit, statistics, a last error and, for query
 *   sources, a connection limit and a requests_per_second token bucket.
 * - hosts: host[:port] of a download's URL. A host has a connection count
 *   only: MAX_CONNECTIONS_PER_SOURCE holds per host, whatever the labels.
 *
 * The breaker rule: CIRCUIT_BREAKER_THRESHOLD counted failures with no
 * success in between open a source's circuit. The caller decides what
 * counts (one failure per URL and run, however many retries it takes; see
 * srctab_record). Open for open_ms, then half-open: exactly one probe may
 * start; its success closes the circuit, its failure opens it again for
 * open_ms * growth^n (n failed probes in a row), capped at max_open_ms.
 *
 * Pure: no I/O, no locking, no logging; the monotonic time is an argument.
 * Runs on the scheduler's thread; the API sees it through snapshots.
 * int returns: 0 ok, -errno on failure; NULL returns: out of memory. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/breaker.h"

struct srctab;
struct src; /* a source or a host entry; valid until srctab_prune() or srctab_free() */

struct srctab_opts {
        int threshold;                  /* CIRCUIT_BREAKER_THRESHOLD, >= 1 */
        int64_t open_ms;                /* CIRCUIT_BREAKER_TIMEOUT */
        double open_growth;             /* factor after each failed probe, >= 1 (1: fixed) */
        int64_t max_open_ms;            /* cap of a grown open time */
        int host_connections;           /* MAX_CONNECTIONS_PER_SOURCE: transfers at once per host */
        int default_source_connections; /* a query source without max_connections */
        int64_t idle_prune_ms;          /* URL sources and hosts idle this long are pruned */
};

/* One direction of the statistics: downloads (media files) or listings
 * (a query source's search requests). */
struct src_counters {
        int64_t attempts;  /* requests started */
        int64_t successes; /* ended well */
        int64_t failures;  /* ended badly (each attempt) */
        int64_t retries;   /* attempts that were retries */
        int64_t bytes;     /* body bytes of successes */
};

/* One source as GET /v1/circuits and /v1/stats show it. */
struct src_info {
        char *name;
        bool query; /* a configured query source */
        enum breaker_state state;
        int consecutive_failures;
        int threshold;
        int64_t trips;
        int64_t opened_at_ms; /* monotonic; 0: never */
        int64_t retry_at_ms;  /* monotonic; 0: closed */
        int64_t open_ms;      /* the current open period */
        int active;           /* transfers in flight now */
        char *last_error;     /* "code: message"; NULL none */
        struct src_counters downloads, listings;
};

/* What srctab_admit() says about starting one more request now. */
enum src_admit {
        ADMIT_OK,    /* start it */
        ADMIT_PROBE, /* start it: it is the circuit's half-open probe */
        ADMIT_FULL,  /* a connection limit (source or host) is reached: wait for a release */
        ADMIT_RATE,  /* the source's requests_per_second: wait until *ret_wake_ms */
        ADMIT_OPEN,  /* the circuit is open (until *ret_wake_ms), or half-open with its probe out */
};

struct srctab *srctab_new(const struct srctab_opts *o);
void srctab_free(struct srctab *t);
/* New settings (reload): thresholds and open times of every circuit,
 * limits; states and counts are kept. */
void srctab_configure(struct srctab *t, const struct srctab_opts *o);

/* The source entry of name, made on first use (closed, zero counts).
 * query: name is a configured query source; it is then never pruned. */
struct src *srctab_source(struct srctab *t, const char *name, bool query);
struct src *srctab_find(const struct srctab *t, const char *name);
/* The host entry of host[:port], made on first use. */
struct src *srctab_host(struct srctab *t, const char *host);
/* A query source's own limits from its file: max_connections (0: the
 * default) and requests_per_second (0: unlimited). */
void srctab_set_limits(struct srctab *t, struct src *s, int max_connections, double requests_per_second);
const char *src_name(const struct src *s);
bool src_is_query(const struct src *s);
int src_active(const struct src *s);

/* May one more request of source s (downloading from host h, NULL for a
 * listing) start now? rate: the request spends a requests_per_second
 * token (query sources: listings and downloads alike). On ADMIT_RATE and
 * ADMIT_OPEN (with a known time) *ret_wake_ms is when to ask again, else 0.
 * Changes nothing but a circuit whose open time is over turning half-open. */
enum src_admit srctab_admit(struct srctab *t, struct src *s, struct src *h, bool rate, int64_t now_ms,
                            int64_t *ret_wake_ms);
/* A request admitted just now starts: counts its connections, takes its
 * rate token, and marks the probe out when it is the probe. */
void srctab_acquire(struct srctab *t, struct src *s, struct src *h, bool rate, bool probe, int64_t now_ms);
/* Its connection is over (done or aborted). */
void srctab_release(struct srctab *t, struct src *s, struct src *h);

/* The result of one attempt, for the breaker and the statistics. */
struct src_result {
        bool listing; /* a search request, else a download */
        bool ok;
        bool counted;      /* a failure that counts against the circuit (the caller's rule) */
        bool retry;        /* this attempt was a retry */
        bool will_retry;   /* a failure that will be tried again */
        int64_t bytes;     /* body bytes, when ok */
        const char *error; /* "code: message" when !ok; kept as last_error */
};
/* Record one finished attempt. probe: it was the half-open probe (its
 * result is the verdict whether counted or not: a success closes, a
 * counted failure reopens, an uncounted one lets another probe go).
 * Returns true when the circuit changed state (for a log line and event). */
bool srctab_record(struct srctab *t, struct src *s, const struct src_result *r, bool probe, int64_t now_ms);
/* A probe that ended without a verdict (aborted): another may go. */
void srctab_abandon_probe(struct srctab *t, struct src *s, int64_t now_ms);
/* Close the circuit (reset by request). */
void srctab_reset_circuit(struct srctab *t, struct src *s);

/* A counter that grows whenever s may admit more than before: a
 * connection released, the circuit closed or turned half-open with no
 * probe out, a probe abandoned. A caller that found s full or open keeps
 * the value and asks again once it changed (or its wake time came). */
uint64_t src_gen(const struct src *s);
/* The monotonic time at which some circuit turns half-open or some rate
 * token comes, whichever is first after now; INT64_MAX when none; now_ms
 * when one has come that srctab_tick() has not seen yet. Circuits turning
 * half-open by time (and sources whose rate token came) bump their gen in
 * srctab_tick(). Both walk only the circuits stored open and the sources
 * waiting for a token, never the idle entries. */
int64_t srctab_next_wake(const struct srctab *t, int64_t now_ms);
void srctab_tick(struct srctab *t, int64_t now_ms);

/* Circuits that changed state since the last call (for events and the
 * job table), including a turn to half-open and a reset or restore: calls
 * fn for each, oldest first, and forgets them. fn must not prune. */
void srctab_drain_changed(struct srctab *t, void (*fn)(const struct src *s, void *ud), void *ud);
/* Within fn: the change was the circuit's turn to half-open by time. */
bool src_turned_half_open(const struct src *s);

/* Forget idle URL sources and hosts: no connection, closed circuit, last
 * used more than idle_prune_ms ago. Their counters stay in the totals.
 * Returns how many were removed. Never prunes query sources, nor a source
 * whose change srctab_drain_changed() has not reported yet. An entry never
 * used counts as used at the first prune that sees it. O(entries): for a
 * timer, not every turn. Pointers to the removed entries die. */
size_t srctab_prune(struct srctab *t, int64_t now_ms);
/* Zero every counter (downloads, listings, totals, pruned); circuits stay. */
void srctab_reset_stats(struct srctab *t);

/* Every source (not hosts), sorted by name, and the totals (including
 * pruned sources). Free with src_infos_free(). */
int srctab_export(const struct srctab *t, int64_t now_ms, struct src_info **ret, size_t *ret_n,
                  struct src_counters *ret_downloads, struct src_counters *ret_listings);
void src_infos_free(struct src_info *v, size_t n);
int srctab_info(const struct srctab *t, const struct src *s, int64_t now_ms, struct src_info *ret);
void src_info_clear(struct src_info *i);

/* Put back a circuit kept from an earlier run (or another node): state,
 * consecutive failures, trips, and times converted to this run's
 * monotonic clock by the caller. */
void srctab_restore_circuit(struct srctab *t, struct src *s, enum breaker_state state, int failures,
                            int64_t trips, int64_t opened_at_ms, int64_t retry_at_ms, int64_t open_ms);
size_t srctab_count(const struct srctab *t); /* sources, not hosts */

/* srctab: per-source and per-host state shared by all jobs.
 *
 * Owns every struct src: sources and hosts, each in its own strmap keyed
 * by the entry's name (which lives at the end of the entry), so a lookup
 * is O(1) however many names the jobs bring.
 *
 * Two intrusive lists keep the work of a turn independent of the number of
 * idle entries:
 * - wakers: the entries that wait for a time, i.e. a circuit stored OPEN
 *   (open_wait) or a rate token promised by ADMIT_RATE (rate_wake_ms).
 *   srctab_next_wake() and srctab_tick() walk only this list. An entry is
 *   on it exactly when open_wait || rate_wake_ms (wake_sync() keeps that).
 * - changed: the sources whose circuit changed state since the last
 *   srctab_drain_changed(), in order, each once (the changed flag).
 *
 * A breaker's state changes only here: opened by srctab_record(), turned
 * half-open by time in srctab_admit() or srctab_tick(), closed by a probe,
 * a reset or a restore. Every change that lets more requests start bumps
 * the entry's gen. srctab_prune() is the one O(entries) call, meant for a
 * timer: it drops idle URL sources and hosts and folds their counters
 * into the pruned totals, so totals never go down by pruning.
 *
 * Memory, on x86-64 with glibc: a source is one allocation of 208 bytes
 * + its name + 1 (malloc adds 8 and rounds up to 16) and its breaker (96
 * with malloc's share), so about 330 bytes with a 16-byte name, plus 24
 * bytes of map slot at a load between 3/8 and 3/4 (32 to 64 per entry).
 * A host uses the same struct without a breaker: about 240 + slot. 10,000
 * sources and 10,000 hosts take some 6.5 MB; pruning gives back all of
 * it but the two map arrays (2^14 slots, 384 KiB each, for 10,000).
 *
 * Pure: no I/O, no locking, no logging; the monotonic time is an argument. */
#include "autoconfig.h"

#include "daemon/srctab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/str.h"
#include "common/strmap.h"
#include "daemon/ratelimit.h"

#define NEVER_USED INT64_MIN /* last_used_ms of an entry not used yet */

struct src {
        struct breaker *breaker;           /* sources only; NULL for a host */
        char *last_error;                  /* "code: message" of the last failure; NULL none */
        struct src_counters downloads;     /* media files */
        struct src_counters listings;      /* search requests */
        struct ratelimit rl;               /* requests_per_second when rps > 0 */
        double rps;                        /* requests per second; 0: unlimited */
        int64_t rate_wake_ms;              /* monotonic, the token ADMIT_RATE promised; 0 none */
        int64_t last_used_ms;              /* monotonic, last acquire or record; NEVER_USED */
        uint64_t gen;                      /* grows when more may be admitted */
        struct src *wake_prev, *wake_next; /* on t->wakers */
        struct src *changed_next;          /* on t->changed */
        int max_connections;               /* a query source's own limit; 0: the default */
        int active;                        /* transfers in flight, all jobs */
        bool query;                        /* a configured query source: never pruned */
        bool open_wait;                    /* the circuit is stored OPEN: a tick may turn it */
        bool waking;                       /* on t->wakers */
        bool changed;                      /* on t->changed */
        bool turned_half_open;             /* by time, since the last drain */
        char name[];
};

struct srctab {
        struct srctab_opts o;                 /* normalized settings */
        struct strmap *sources;               /* name -> struct src */
        struct strmap *hosts;                 /* host[:port] -> struct src */
        struct src *wakers;                   /* entries waiting for a time */
        struct src *changed, *changed_tail;   /* circuits changed, oldest first */
        struct src_counters pruned_downloads; /* counters of pruned sources */
        struct src_counters pruned_listings;
};

/* ---- settings and entries -------------------------------------------------- */

static void normalize(struct srctab_opts *o)
{
        if (o->threshold < 1)
                o->threshold = 1;
        if (o->open_ms < 0)
                o->open_ms = 0;
        if (!(o->open_growth >= 1.0)) /* NaN too */
                o->open_growth = 1.0;
        if (o->max_open_ms < o->open_ms)
                o->max_open_ms = o->open_ms;
        if (o->host_connections < 1)
                o->host_connections = 1;
        if (o->default_source_connections < 1)
                o->default_source_connections = 1;
        if (o->idle_prune_ms < 0)
                o->idle_prune_ms = 0;
}

static void configure_breaker(const struct srctab *t, struct src *s)
{
        breaker_configure_growth(s->breaker, t->o.threshold, t->o.open_ms, t->o.open_growth,
                                 t->o.max_open_ms);
}

static void entry_free(struct src *s)
{
        if (!s)
                return;
        breaker_free(s->breaker);
        free(s->last_error);
        free(s);
}

static struct src *entry_new(struct srctab *t, const char *name, bool host)
{
        size_t len = strlen(name);
        struct src *s = calloc(1, sizeof(*s) + len + 1);

        if (!s)
                return NULL;
        memcpy(s->name, name, len + 1);
        s->last_used_ms = NEVER_USED;
        if (!host) {
                s->breaker = breaker_new(t->o.threshold, t->o.open_ms);
                if (!s->breaker)
                        goto fail;
                configure_breaker(t, s);
        }
        if (strmap_put(host ? t->hosts : t->sources, s->name, s, NULL) < 0)
                goto fail;
        return s;
fail:
        entry_free(s);
        return NULL;
}

struct srctab *srctab_new(const struct srctab_opts *o)
{
        struct srctab *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->o = *o;
        normalize(&t->o);
        t->sources = strmap_new();
        t->hosts = strmap_new();
        if (!t->sources || !t->hosts) {
                srctab_free(t);
                return NULL;
        }
        return t;
}

static void free_entries(struct strmap *m)
{
        size_t pos = 0;
        void *v;

        if (!m)
                return;
        while (strmap_next(m, &pos, NULL, &v))
                entry_free(v);
        strmap_free(m);
}

void srctab_free(struct srctab *t)
{
        if (!t)
                return;
        free_entries(t->sources);
        free_entries(t->hosts);
        free(t);
}

static void bump_all(struct strmap *m)
{
        size_t pos = 0;
        void *v;

        while (strmap_next(m, &pos, NULL, &v))
                ((struct src *)v)->gen++;
}

/* Limits may have grown: every gen moves, and callers ask again. */
void srctab_configure(struct srctab *t, const struct srctab_opts *o)
{
        size_t pos = 0;
        void *v;

        t->o = *o;
        normalize(&t->o);
        while (strmap_next(t->sources, &pos, NULL, &v))
                configure_breaker(t, v);
        bump_all(t->sources);
        bump_all(t->hosts);
}

struct src *srctab_source(struct srctab *t, const char *name, bool query)
{
        struct src *s = strmap_get(t->sources, name);

        if (!s)
                s = entry_new(t, name, false);
        if (s && query)
                s->query = true;
        return s;
}

struct src *srctab_find(const struct srctab *t, const char *name) { return strmap_get(t->sources, name); }

struct src *srctab_host(struct srctab *t, const char *host)
{
        struct src *h = strmap_get(t->hosts, host);
        return h ? h : entry_new(t, host, true);
}

void srctab_set_limits(struct srctab *t, struct src *s, int max_connections, double requests_per_second)
{
        int maxc = max_connections > 0 ? max_connections : 0;
        double rps = requests_per_second > 0 ? requests_per_second : 0; /* NaN reads as 0 */

        (void)t;
        if (maxc == s->max_connections && rps == s->rps)
                return;
        s->max_connections = maxc;
        if (rps != s->rps) {
                ratelimit_init(&s->rl, rps, rps < 1 ? 1 : rps);
                s->rps = rps;
        }
        s->gen++;
}

const char *src_name(const struct src *s) { return s->name; }
bool src_is_query(const struct src *s) { return s->query; }
int src_active(const struct src *s) { return s->active; }
uint64_t src_gen(const struct src *s) { return s->gen; }
size_t srctab_count(const struct srctab *t) { return strmap_count(t->sources); }

/* ---- the wakers and changed lists ------------------------------------------ */

/* On t->wakers exactly when s waits for a time. */
static void wake_sync(struct srctab *t, struct src *s)
{
        bool want = s->open_wait || s->rate_wake_ms != 0;

        if (want == s->waking)
                return;
        if (want) {
                s->wake_prev = NULL;
                s->wake_next = t->wakers;
                if (t->wakers)
                        t->wakers->wake_prev = s;
                t->wakers = s;
        } else {
                if (s->wake_prev)
                        s->wake_prev->wake_next = s->wake_next;
                else
                        t->wakers = s->wake_next;
                if (s->wake_next)
                        s->wake_next->wake_prev = s->wake_prev;
                s->wake_prev = s->wake_next = NULL;
        }
        s->waking = want;
}

static void mark_changed(struct srctab *t, struct src *s)
{
        if (s->changed)
                return;
        s->changed = true;
        s->changed_next = NULL;
        if (t->changed_tail)
                t->changed_tail->changed_next = s;
        else
                t->changed = s;
        t->changed_tail = s;
}

void srctab_drain_changed(struct srctab *t, void (*fn)(const struct src *s, void *ud), void *ud)
{
        struct src *s = t->changed;

        t->changed = t->changed_tail = NULL;
        while (s) {
                struct src *next = s->changed_next;
                s->changed = false;
                s->changed_next = NULL;
                fn(s, ud);
                s->turned_half_open = false;
                s = next;
        }
}

bool src_turned_half_open(const struct src *s) { return s->turned_half_open; }

/* An OPEN circuit whose time is over turns half-open: a probe may go. */
static void turn_half_open(struct srctab *t, struct src *s, int64_t now_ms)
{
        if (!s->open_wait || breaker_state(s->breaker, now_ms) == BREAKER_OPEN)
                return;
        s->open_wait = false;
        if (breaker_tick(s->breaker, now_ms)) {
                s->turned_half_open = true;
                s->gen++;
                mark_changed(t, s);
        }
        wake_sync(t, s);
}

int64_t srctab_next_wake(const struct srctab *t, int64_t now_ms)
{
        int64_t best = INT64_MAX;

        for (const struct src *s = t->wakers; s; s = s->wake_next) {
                if (s->open_wait) {
                        struct breaker_info bi;
                        breaker_get_info(s->breaker, now_ms, &bi);
                        if (bi.retry_at_ms < best)
                                best = bi.retry_at_ms;
                }
                if (s->rate_wake_ms && s->rate_wake_ms < best)
                        best = s->rate_wake_ms;
        }
        return best < now_ms ? now_ms : best; /* already come: srctab_tick() is due */
}

void srctab_tick(struct srctab *t, int64_t now_ms)
{
        struct src *s = t->wakers;

        while (s) {
                struct src *next = s->wake_next;
                turn_half_open(t, s, now_ms);
                if (s->rate_wake_ms && s->rate_wake_ms <= now_ms) {
                        s->rate_wake_ms = 0;
                        s->gen++;
                        wake_sync(t, s);
                }
                s = next;
        }
}

/* ---- admission ------------------------------------------------------------- */

/* Transfers s may have at once, all jobs together; 0: no limit of its own. */
static int source_limit(const struct srctab *t, const struct src *s)
{
        if (!s->query)
                return 0;
        return s->max_connections > 0 ? s->max_connections : t->o.default_source_connections;
}

/* The circuit's answer: ADMIT_OK (closed), ADMIT_PROBE or ADMIT_OPEN. */
static enum src_admit admit_circuit(struct srctab *t, struct src *s, int64_t now_ms, int64_t *ret_wake_ms)
{
        struct breaker_info bi;

        if (!s->breaker)
                return ADMIT_OK;
        turn_half_open(t, s, now_ms);
        breaker_get_info(s->breaker, now_ms, &bi);
        switch (bi.state) {
        case BREAKER_CLOSED:
                return ADMIT_OK;
        case BREAKER_OPEN:
                *ret_wake_ms = bi.retry_at_ms;
                return ADMIT_OPEN;
        case BREAKER_HALF_OPEN:
                break;
        }
        return bi.probe_out ? ADMIT_OPEN : ADMIT_PROBE;
}

enum src_admit srctab_admit(struct srctab *t, struct src *s, struct src *h, bool rate, int64_t now_ms,
                            int64_t *ret_wake_ms)
{
        int limit = source_limit(t, s);

        *ret_wake_ms = 0;
        enum src_admit verdict = admit_circuit(t, s, now_ms, ret_wake_ms);
        if (verdict == ADMIT_OPEN)
                return verdict;
        if ((limit > 0 && s->active >= limit) || (h && h->active >= t->o.host_connections))
                return ADMIT_FULL;
        if (rate && s->rps > 0) {
                struct ratelimit peek = s->rl; /* admit takes no token */
                int64_t wait = ratelimit_take(&peek, now_ms);
                if (wait > 0) {
                        s->rate_wake_ms = now_ms + wait;
                        wake_sync(t, s);
                        *ret_wake_ms = s->rate_wake_ms;
                        return ADMIT_RATE;
                }
        }
        return verdict;
}

void srctab_acquire(struct srctab *t, struct src *s, struct src *h, bool rate, bool probe, int64_t now_ms)
{
        s->active++;
        s->last_used_ms = now_ms;
        if (h) {
                h->active++;
                h->last_used_ms = now_ms;
        }
        if (rate && s->rps > 0) {
                ratelimit_take(&s->rl, now_ms);
                if (s->rate_wake_ms && s->rate_wake_ms <= now_ms) {
                        s->rate_wake_ms = 0;
                        wake_sync(t, s);
                }
        }
        if (probe && s->breaker) {
                turn_half_open(t, s, now_ms);
                breaker_allow(s->breaker, now_ms); /* half-open: the probe is out */
        }
}

void srctab_release(struct srctab *t, struct src *s, struct src *h)
{
        (void)t;
        if (s->active > 0)
                s->active--;
        s->gen++;
        if (h) {
                if (h->active > 0)
                        h->active--;
                h->gen++;
        }
}

/* ---- results and the breaker ----------------------------------------------- */

static void count(struct src *s, const struct src_result *r)
{
        struct src_counters *c = r->listing ? &s->listings : &s->downloads;

        c->attempts++;
        if (r->retry)
                c->retries++;
        if (r->ok) {
                c->successes++;
                if (r->bytes > 0)
                        c->bytes += r->bytes;
                return;
        }
        c->failures++;
        if (r->error) {
                char *e = strdup(r->error);
                if (e) {
                        free(s->last_error);
                        s->last_error = e;
                }
        }
}

/* The circuit's verdict on one result; true when its state changed. */
static bool judge(struct srctab *t, struct src *s, const struct src_result *r, bool probe, int64_t now_ms)
{
        struct breaker_info bi;

        breaker_get_info(s->breaker, now_ms, &bi);
        if (bi.state == BREAKER_CLOSED) {
                if (!breaker_record(s->breaker, r->ok, r->counted, now_ms))
                        return false;
        } else if (bi.state == BREAKER_HALF_OPEN && bi.probe_out && probe) {
                if (!breaker_record(s->breaker, r->ok, r->counted, now_ms)) {
                        s->gen++; /* no verdict: another probe may go */
                        return false;
                }
        } else {
                return false; /* a straggler, or a probe given up on */
        }
        /* a recorded change either opened the circuit (reading half-open at
         * once when open_ms is 0) or closed it */
        s->open_wait = breaker_state(s->breaker, now_ms) != BREAKER_CLOSED;
        if (!s->open_wait)
                s->gen++;
        wake_sync(t, s);
        mark_changed(t, s);
        return true;
}

bool srctab_record(struct srctab *t, struct src *s, const struct src_result *r, bool probe, int64_t now_ms)
{
        count(s, r);
        s->last_used_ms = now_ms;
        return s->breaker ? judge(t, s, r, probe, now_ms) : false;
}

void srctab_abandon_probe(struct srctab *t, struct src *s, int64_t now_ms)
{
        struct breaker_info bi;

        (void)t;
        if (!s->breaker)
                return;
        breaker_get_info(s->breaker, now_ms, &bi);
        if (!bi.probe_out)
                return;
        breaker_record(s->breaker, false, false, now_ms);
        s->gen++;
}

void srctab_reset_circuit(struct srctab *t, struct src *s)
{
        if (!s->breaker)
                return;
        breaker_reset(s->breaker);
        s->open_wait = false;
        s->gen++;
        wake_sync(t, s);
        mark_changed(t, s);
}

void srctab_restore_circuit(struct srctab *t, struct src *s, enum breaker_state state, int failures,
                            int64_t trips, int64_t opened_at_ms, int64_t retry_at_ms, int64_t open_ms)
{
        if (!s->breaker)
                return;
        breaker_restore(s->breaker, state, failures, trips, opened_at_ms, retry_at_ms, open_ms);
        s->open_wait = state == BREAKER_OPEN;
        s->gen++;
        wake_sync(t, s);
        if (state == BREAKER_OPEN || state == BREAKER_HALF_OPEN)
                mark_changed(t, s);
}

/* ---- pruning and statistics ------------------------------------------------ */

static void add_counters(struct src_counters *to, const struct src_counters *c)
{
        to->attempts += c->attempts;
        to->successes += c->successes;
        to->failures += c->failures;
        to->retries += c->retries;
        to->bytes += c->bytes;
}

/* Idle long enough? An entry never used counts as used at the first
 * prune that sees it, so a new entry lives at least idle_prune_ms. */
static bool idle(const struct srctab *t, struct src *s, int64_t now_ms)
{
        if (s->last_used_ms == NEVER_USED) {
                s->last_used_ms = now_ms;
                return false;
        }
        return now_ms - s->last_used_ms > t->o.idle_prune_ms;
}

static bool prunable(const struct srctab *t, struct src *s, int64_t now_ms)
{
        if (s->query || s->active > 0 || s->waking || s->changed)
                return false;
        if (s->breaker && breaker_state(s->breaker, now_ms) != BREAKER_CLOSED)
                return false;
        return idle(t, s, now_ms);
}

static size_t prune_map(struct srctab *t, struct strmap *m, int64_t now_ms)
{
        size_t pos = 0, n = 0;
        void *v;

        while (strmap_next(m, &pos, NULL, &v)) {
                struct src *s = v;
                if (!prunable(t, s, now_ms))
                        continue;
                add_counters(&t->pruned_downloads, &s->downloads);
                add_counters(&t->pruned_listings, &s->listings);
                strmap_delete(m, s->name);
                entry_free(s);
                n++;
        }
        return n;
}

size_t srctab_prune(struct srctab *t, int64_t now_ms)
{
        return prune_map(t, t->sources, now_ms) + prune_map(t, t->hosts, now_ms);
}

void srctab_reset_stats(struct srctab *t)
{
        size_t pos = 0;
        void *v;

        while (strmap_next(t->sources, &pos, NULL, &v)) {
                struct src *s = v;
                s->downloads = (struct src_counters){0};
                s->listings = (struct src_counters){0};
        }
        t->pruned_downloads = (struct src_counters){0};
        t->pruned_listings = (struct src_counters){0};
}

/* ---- snapshots ------------------------------------------------------------- */

void src_info_clear(struct src_info *i)
{
        if (!i)
                return;
        free(i->name);
        free(i->last_error);
        *i = (struct src_info){0};
}

void src_infos_free(struct src_info *v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                src_info_clear(&v[i]);
        free(v);
}

int srctab_info(const struct srctab *t, const struct src *s, int64_t now_ms, struct src_info *ret)
{
        struct src_info i = {
                .query = s->query,
                .state = BREAKER_CLOSED,
                .threshold = t->o.threshold,
                .open_ms = t->o.open_ms,
                .active = s->active,
                .downloads = s->downloads,
                .listings = s->listings,
        };

        if (s->breaker) {
                struct breaker_info bi;
                breaker_get_info(s->breaker, now_ms, &bi);
                i.state = bi.state;
                i.consecutive_failures = bi.consecutive_failures;
                i.threshold = bi.threshold;
                i.trips = bi.trips;
                i.opened_at_ms = bi.opened_at_ms;
                i.retry_at_ms = bi.retry_at_ms;
                i.open_ms = bi.open_ms;
        }
        i.name = strdup(s->name);
        i.last_error = str_dup(s->last_error);
        if (!i.name || (s->last_error && !i.last_error)) {
                src_info_clear(&i);
                return -ENOMEM;
        }
        *ret = i;
        return 0;
}

static int by_name(const void *a, const void *b)
{
        return strcmp(((const struct src_info *)a)->name, ((const struct src_info *)b)->name);
}

int srctab_export(const struct srctab *t, int64_t now_ms, struct src_info **ret, size_t *ret_n,
                  struct src_counters *ret_downloads, struct src_counters *ret_listings)
{
        size_t n = strmap_count(t->sources), i = 0, pos = 0;
        struct src_info *v = calloc(n ? n : 1, sizeof(*v));
        struct src_counters dl = t->pruned_downloads, ls = t->pruned_listings;
        void *e;

        if (!v)
                return -ENOMEM;
        while (strmap_next(t->sources, &pos, NULL, &e)) {
                const struct src *s = e;
                if (srctab_info(t, s, now_ms, &v[i]) < 0) {
                        src_infos_free(v, i);
                        return -ENOMEM;
                }
                add_counters(&dl, &s->downloads);
                add_counters(&ls, &s->listings);
                i++;
        }
        qsort(v, n, sizeof(*v), by_name);
        *ret = v;
        *ret_n = n;
        if (ret_downloads)
                *ret_downloads = dl;
        if (ret_listings)
                *ret_listings = ls;
        return 0;
}

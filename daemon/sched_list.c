/* sched_list: per-source state and the listing of query sources.
 *
 * Owns: struct src (circuit breaker, statistics, rate limit, last error)
 * for every source seen since the start, shared by all jobs, and the
 * paging through a query source's search results, whose URLs become items.
 *
 * Invariants:
 * - a source's requests, listing pages and downloads alike, keep to its
 *   requests_per_second and connection limit across all jobs;
 * - a listing adds new URLs only (none twice within a job) and stops at
 *   the job's max candidates;
 * - a listing that fails runs its retries out; it ends the unit only when
 *   it found nothing.
 *
 * Runs on the scheduler's thread with sched->lock held. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/breaker.h"
#include "daemon/config.h"
#include "daemon/engine.h"
#include "daemon/retry.h"
#include "daemon/sched-internal.h"
#include "daemon/sources.h"
#include "daemon/store.h"
#include "daemon/urlcheck.h"

/* ---- sources ------------------------------------------------------------ */

struct src *sched_src_get(struct sched *s, const char *name)
{
        struct src *p;

        for (p = s->srcs; p; p = p->next)
                if (strcmp(p->name, name) == 0)
                        return p;
        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->name = strdup(name);
        p->breaker = breaker_new(s->cfg->circuit_breaker_threshold,
                                 (int64_t)(s->cfg->circuit_breaker_timeout * 1000));
        if (!p->name || !p->breaker) {
                free(p->name);
                breaker_free(p->breaker);
                free(p);
                return NULL;
        }
        p->next = s->srcs;
        s->srcs = p;
        return p;
}

void sched_srcs_free(struct src *p)
{
        while (p) {
                struct src *next = p->next;
                free(p->name);
                free(p->last_error);
                breaker_free(p->breaker);
                free(p);
                p = next;
        }
}

void sched_log_circuit(struct sched *s, struct src *src, int64_t now, const char *why)
{
        struct breaker_info bi;
        breaker_get_info(src->breaker, now, &bi);
        sched_emit(s, EVENT_CIRCUIT, NULL, -1, false, src->name);
        if (bi.state == BREAKER_OPEN)
                log_warning("CIRCUIT opened for %s after %d failures (%s); probe in %.1f s", src->name,
                            bi.consecutive_failures, why, (double)(bi.retry_at_ms - now) / 1000.0);
        else
                log_info("CIRCUIT %s for %s (%s)", breaker_state_to_string(bi.state), src->name, why);
}

/* ---- query sources ------------------------------------------------------------ */

static const struct source_def *src_def(struct sched *s, const struct src *src)
{
        return src->query && s->sources ? sources_find(s->sources, src->name) : NULL;
}

/* Transfers one source may have at once, all jobs together. */
int sched_src_limit(struct sched *s, const struct src *src)
{
        const struct source_def *d = src_def(s, src);
        return d && d->max_connections > 0 ? d->max_connections : s->cfg->max_connections_per_source;
}

/* May a request to src start now (requests_per_second)? */
bool sched_src_take(struct sched *s, struct src *src, int64_t now)
{
        const struct source_def *d = src_def(s, src);
        double rate = d ? d->requests_per_second : 0;

        if (rate <= 0)
                return true;
        if (rate != src->rl_rate) {
                ratelimit_init(&src->rl, rate, rate < 1 ? 1 : rate);
                src->rl_rate = rate;
        }
        int64_t wait = ratelimit_take(&src->rl, now);
        if (wait > 0) {
                src->rl_wait_until = now + wait;
                return false;
        }
        return true;
}

/* May a request to src start now (its circuit)? When it may, *ret_probe
 * tells whether the request is the circuit's half-open probe. */
bool sched_src_allow(struct src *src, int64_t now, bool *ret_probe)
{
        bool probe = breaker_state(src->breaker, now) != BREAKER_CLOSED;

        if (!breaker_allow(src->breaker, now))
                return false;
        *ret_probe = probe;
        return true;
}

/* The probe ends without a verdict (aborted, or it never started): without
 * this, the circuit would wait for its result forever. */
void sched_src_release_probe(struct src *src, int64_t now)
{
        breaker_record(src->breaker, false, false, now);
}

/* ---- listing query sources ------------------------------------------------------- */

/* The listing is over: downloads go on with what it found. */
static void list_end(struct sched *s, struct unit *u, const char *code, const char *msg)
{
        struct job_source *js = js_of(u);

        u->listing = false;
        if (!code) {
                js->state = SRC_DOWNLOADING;
                log_info("job %s: source %s listed %lld candidates in %d page%s", u->rj->job->id, js->source,
                         (long long)u->candidates, u->page - 1, u->page == 2 ? "" : "s");
        } else if (u->candidates == 0) {
                unit_close(s, u, SRC_FAILED, code, msg);
                return;
        } else {
                js->state = SRC_DOWNLOADING;
                job_error_set(&js->error, code, "listing stopped at page %d: %s", u->page, msg);
                log_warning("job %s: source %s: listing stopped at page %d (%s: %s); going on with %lld "
                            "candidates",
                            u->rj->job->id, js->source, u->page, code, msg, (long long)u->candidates);
        }
        u->rj->job_dirty = true;
}

void unit_list_start(struct sched *s, struct unit *u, int64_t now)
{
        struct rjob *rj = u->rj;
        const struct source_def *d = src_def(s, u->src);
        char *url = NULL, *shown = NULL, **headers = NULL;
        size_t nheaders = 0;
        struct slot *sl = NULL;
        bool probe;

        if (!d) {
                list_end(s, u, "unknown_source", "the source's file is gone");
                return;
        }
        if (!sched_src_take(s, u->src, now))
                return;
        int r = sources_build_url(d, rj->job->query, u->page, &url);
        if (r >= 0)
                r = sources_build_headers(d, &headers, &nheaders);
        if (r < 0) {
                list_end(s, u, "source_unavailable",
                         r == -ENOKEY ? "a secret it needs is not set" : "its search URL cannot be built");
                goto out;
        }
        if (!sched_src_allow(u->src, now, &probe)) {
                list_end(s, u, "circuit_open", "the source's circuit is open");
                goto out;
        }
        sl = sched_slot_new(rj, u, -1);
        struct xfer_request req = {.url = url,
                                   .dir_fd = u->dir_fd,
                                   .to_memory = true,
                                   .headers = headers,
                                   .nheaders = nheaders,
                                   .userdata = sl};
        if (!sl || engine_start(s->engine, &req, &sl->x) < 0) {
                free(sl);
                if (probe)
                        sched_src_release_probe(u->src, now);
                goto out; /* tried again next turn */
        }
        sl->probe = probe;
        sched_slot_link(sl);
        u->list_attempts++;
        sources_build_url_redacted(d, rj->job->query, u->page, &shown);
        log_info("job %s: LIST %s page %d (attempt %d): %s", rj->job->id, u->src->name, u->page,
                 u->list_attempts, shown ? shown : "?");
out:
        free(url);
        free(shown);
        sources_strv_free(headers, nheaders);
}

/* Add a page's URLs as items: new ones only, up to the job's max. */
static size_t list_add(struct sched *s, struct unit *u, char **urls, size_t n)
{
        struct rjob *rj = u->rj;
        struct job_source *js = js_of(u);
        size_t first = rj->nitems, added = 0;

        for (size_t i = 0; i < n && u->candidates < rj->job->max; i++) {
                if (urlcheck_validate(urls[i], NULL, NULL) < 0 || rjob_url_find(rj, urls[i], 0, false) >= 0)
                        continue;
                if (rjob_reserve(rj, rj->nitems + 1) < 0 || unit_queue_push(u, (int)rj->nitems) < 0)
                        break;
                int idx = (int)rj->nitems++;
                struct item *it = &rj->items[idx];
                memset(it, 0, sizeof(*it));
                it->index = idx;
                it->state = ITEM_PENDING;
                it->source = strdup(js->source);
                it->url = strdup(urls[i]);
                rj->item_unit[idx] = (int)u->index;
                rjob_url_find(rj, it->url, idx, true);
                js->items++;
                rj->job->progress.total++;
                rjob_count(rj, js, ITEM_PENDING, +1);
                u->candidates++;
                added++;
        }
        if (added) {
                int r = store_item_append(s->store, rj->job->id, &rj->items[first], added);
                if (r < 0)
                        log_error("job %s: saving listed items: %s", rj->job->id, strerror(-r));
                rj->job_dirty = true;
                rj->progress_changed = true;
        }
        return added;
}

void unit_list_done(struct sched *s, struct unit *u, const struct xfer_result *res, int64_t now)
{
        const struct source_def *d = src_def(s, u->src);
        enum retry_class rc = res->rc;
        const char *msg = res->message;
        char **urls = NULL;
        size_t n = 0;

        if (u->phase != UNIT_RUNNING)
                return;
        if (rc == RC_OK && (!d || sources_parse_page(d, res->body, res->body_len, &urls, &n) < 0)) {
                rc = RC_INVALID_CONTENT;
                msg = "the listing page is not JSON of the shape the source file describes";
        }
        bool ok = rc == RC_OK;
        if (breaker_record(u->src->breaker, ok, ok || retry_class_counts_for_breaker(rc), now))
                sched_log_circuit(s, u->src, now, ok ? "probe succeeded" : retry_class_code(rc));
        if (!ok) {
                struct retry_policy lp = s->policy;
                lp.max_retries = s->cfg->max_retries_per_source;
                u->src->failures++;
                free(u->src->last_error);
                if (asprintf(&u->src->last_error, "%s: %s", retry_class_code(rc), msg) < 0)
                        u->src->last_error = NULL;
                u->list_failing = true;
                if (retry_should_retry(&lp, rc, u->list_attempts)) {
                        int64_t delay = retry_delay_ms(&lp, u->list_attempts, res->retry_after_ms,
                                                       (double)random() / ((double)RAND_MAX + 1.0));
                        u->list_due_ms = now + delay;
                        u->src->retries++;
                        js_of(u)->retries++;
                        log_info("job %s: RETRY listing %s page %d, attempt %d/%d in %.1fs (%s: %s)",
                                 u->rj->job->id, u->src->name, u->page, u->list_attempts + 1,
                                 lp.max_retries + 1, (double)delay / 1000.0, retry_class_code(rc), msg);
                        return;
                }
                list_end(s, u, retry_class_code(rc), msg);
                return;
        }
        u->src->successes++;
        u->src->bytes += res->bytes;
        u->list_failing = false;
        if (!job_max_reached(u->rj))
                list_add(s, u, urls, n);
        sources_strv_free(urls, n);
        u->page++;
        u->list_attempts = 0;
        if (n == 0 || u->candidates >= u->rj->job->max || !d->paged)
                list_end(s, u, NULL, NULL);
        else
                u->list_due_ms = now;
}

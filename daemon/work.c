/* work: starting and settling the requests of one running job.
 *
 * A group is looked at when it is marked (jobrun_mark): when the job
 * begins, when one of its requests ends, when a retry or listing page is
 * due, when the source it waits for may admit more (its gen changed) or
 * its wait time came. work_fill() takes the marked groups in order and
 * starts what the limits allow; a group its source cannot admit now is
 * put on the job's blocked list with what it waits for.
 *
 * Invariants:
 * - group_run.inplay counts the group's items that are running (in flight
 *   or with the committer); jobrun_committed() <= max whenever a download
 *   starts, so max is never exceeded;
 * - a group is done only when nothing of it is queued, waiting, in play or
 *   listing, and its listing has ended (or the job needs no more);
 * - every request started here ends in exactly one work_apply() or is
 *   aborted by close_group()/work_park(). */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/human.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/retry.h"
#include "daemon/sources.h"
#include "daemon/srctab.h"
#include "daemon/urlcheck.h"
#include "daemon/work.h"

#define SUBDIR_MAX      (JOB_ID_LEN + 2 + SOURCE_NAME_MAX)
#define RESTART_WAIT_MS 1000 /* a request that could not start is tried again this much later */

/* ---- settings of a group -------------------------------------------------------------- */

static const struct source_def *group_def(const struct work_env *w, const struct jobrun *jr, int g)
{
        return w->sources ? sources_find(w->sources, jobrun_source(jr, g)->source) : NULL;
}

static int max_retries(const struct work_env *w, const struct jobrun *jr)
{
        int r = jobrun_job(jr)->limits.max_retries;
        return r >= 0 ? r : w->cfg->max_retries_per_source;
}

static double source_timeout(const struct work_env *w, struct jobrun *jr, int g)
{
        double t = jobrun_job(jr)->limits.source_timeout;
        if (t > 0)
                return t;
        return jobrun_group(jr, g)->query ? w->cfg->source_timeout : 0;
}

static struct retry_policy policy(const struct work_env *w, const struct jobrun *jr)
{
        return (struct retry_policy){
                .max_retries = max_retries(w, jr),
                .backoff_base_ms = (int64_t)(w->cfg->retry_backoff_base * 1000),
                .backoff_max_ms = (int64_t)(w->cfg->retry_backoff_max * 1000),
                .jitter = w->cfg->retry_jitter,
        };
}

/* The earlier of the job's deadline and the group's. */
static int64_t deadline(struct jobrun *jr, int g)
{
        int64_t d = jobrun_deadline(jr), gd = jobrun_group(jr, g)->deadline_ms;
        return gd > 0 && gd < d ? gd : d;
}

static const char *deadline_name(struct jobrun *jr, int g)
{
        int64_t gd = jobrun_group(jr, g)->deadline_ms;
        return gd > 0 && gd < jobrun_deadline(jr) ? "the source's time (SOURCE_TIMEOUT)"
                                                  : "the job's timeout";
}

static void subdir_of(const struct jobrun *jr, int g, char *buf)
{
        snprintf(buf, SUBDIR_MAX, "%s/%s", jobrun_id(jr), jobrun_source(jr, g)->source);
}

/* ---- groups ---------------------------------------------------------------------------- */

static void mark_waiting_queries(struct jobrun *jr)
{
        for (size_t g = 0; g < jobrun_ngroups(jr); g++)
                if (jobrun_group(jr, (int)g)->phase == GROUP_WAITING)
                        jobrun_mark(jr, (int)g);
}

static void skip_aborted(void *job, int item, void *ud)
{
        struct jobrun *jr = job;
        const char *const *why = ud;
        jobrun_group(jr, jobrun_group_of(jr, item))->inplay--;
        jobrun_item_skipped(jr, item, why[0], why[1]);
}

/* Stop group g: requests aborted, unfinished items skipped with code. */
static void close_group(struct work_env *w, struct jobrun *jr, int g, enum source_state st, const char *code,
                        const char *msg, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);
        const char *why[2] = {code, msg};
        char subdir[SUBDIR_MAX];

        xfers_abort(w->xfers, jr, g, false, now, skip_aborted, why);
        for (size_t i = 0; gr->inplay > 0 && i < jobrun_nitems(jr); i++)
                if (jobrun_group_of(jr, (int)i) == g && jobrun_item(jr, (int)i)->state == ITEM_RUNNING) {
                        /* with the committer: the file lands, the item no longer waits for it */
                        jobrun_item_skipped(jr, (int)i, code, msg);
                        gr->inplay--;
                }
        jobrun_skip_rest(jr, g, code, msg);
        if (gr->query && gr->listing) /* it could have listed more: why it stopped */
                jobrun_group_listing(jr, g, gr->pages, code ? code : "done");
        gr->inplay = 0;
        gr->list_inflight = false;
        gr->listing = false;
        gr->phase = GROUP_DONE;
        jobrun_set_blocked(jr, g, false);
        subdir_of(jr, g, subdir);
        engine_clean_parts(w->dl_fd, subdir);
        const struct job_source *js = jobrun_source(jr, g);
        if (st != SRC_TIMED_OUT && js->items == 0 && js->error.code) /* its listing failed */
                jobrun_group_set(jr, g, SRC_FAILED, js->error.code, "%s", js->error.message);
        else if (st == SRC_FAILED || st == SRC_TIMED_OUT)
                jobrun_group_set(jr, g, st, code, "%s", msg);
        else if (js->error.code) /* what stopped it (its listing, its circuit) */
                jobrun_group_set(jr, g, st, js->error.code, "%s", js->error.message);
        else
                jobrun_group_set(jr, g, st, NULL, NULL);
        log_info("job %s: source %s %s: %lld items, %lld succeeded, %lld failed, %lld skipped, %lld bytes, "
                 "%lld attempts, %lld retries",
                 jobrun_id(jr), js->source, source_state_to_string(st), (long long)js->items,
                 (long long)js->succeeded, (long long)js->failed, (long long)js->skipped,
                 (long long)js->bytes, (long long)js->attempts, (long long)js->retries);
        mark_waiting_queries(jr);
}

/* More candidates are worth listing: what succeeded, is in play or waits
 * does not reach max. */
static bool need_more(const struct jobrun *jr)
{
        const struct job *j = jobrun_job(jr);
        return j->progress.succeeded + j->progress.running + j->progress.pending < j->max;
}

static void maybe_done(struct work_env *w, struct jobrun *jr, int g, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);

        if (gr->phase != GROUP_RUNNING || gr->inplay > 0 || gr->list_inflight || jobrun_queued(jr, g) > 0 ||
            jobrun_waiting(jr, g) > 0)
                return;
        if (gr->listing && need_more(jr))
                return; /* the next page comes */
        if (gr->listing && !jobrun_max_reached(jr) && jobrun_committed(jr) > 0) {
                jobrun_set_capped(jr, g); /* others' items in play may still fail and want candidates */
                return;
        }
        close_group(w, jr, g, SRC_DONE, NULL, NULL, now);
}

/* A query group's turn comes (MAX_CONCURRENT_SOURCES per job). */
static bool start_query_group(struct work_env *w, struct jobrun *jr, int g, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);
        const struct source_def *d = group_def(w, jr, g);
        int running = 0;

        for (size_t k = 0; k < jobrun_ngroups(jr); k++) {
                const struct group_run *o = jobrun_group(jr, (int)k);
                running += o->query && o->phase == GROUP_RUNNING;
        }
        if (running >= w->cfg->max_concurrent_sources)
                return false;
        gr->phase = GROUP_RUNNING;
        double t = source_timeout(w, jr, g);
        gr->deadline_ms = t > 0 ? now + (int64_t)(t * 1000) : 0;
        if (gr->deadline_ms > 0 && gr->deadline_ms < jobrun_group_timer(jr))
                jobrun_set_group_timer(jr, gr->deadline_ms); /* its time is watched from now */
        if (!d) {
                close_group(w, jr, g, SRC_FAILED, "unknown_source", "no such source is configured", now);
                return false;
        }
        if (!d->available) {
                close_group(w, jr, g, SRC_FAILED, "source_unavailable",
                            d->unavailable_reason ? d->unavailable_reason : "the source is unavailable",
                            now);
                return false;
        }
        srctab_set_limits(w->srcs, gr->src, d->max_connections, d->requests_per_second);
        gr->listing = true;
        gr->page = 1;
        gr->list_attempts = 0;
        gr->list_due_ms = now;
        gr->list_end = NULL;
        jobrun_group_set(jr, g, SRC_LISTING, NULL, NULL);
        return true;
}

int work_begin(struct work_env *w, struct jobrun *jr, int64_t now)
{
        for (size_t k = 0; k < jobrun_ngroups(jr); k++) {
                int g = (int)k;
                struct group_run *gr = jobrun_group(jr, g);
                gr->query = jobrun_group_is_query(jr, g);
                gr->src = srctab_source(w->srcs, jobrun_source(jr, g)->source, gr->query);
                if (!gr->src)
                        return -ENOMEM;
                if (gr->query) {
                        gr->phase = GROUP_WAITING;
                } else {
                        gr->phase = GROUP_RUNNING;
                        double t = source_timeout(w, jr, g);
                        gr->deadline_ms = t > 0 ? now + (int64_t)(t * 1000) : 0;
                        jobrun_group_set(jr, g, SRC_DOWNLOADING, NULL, NULL);
                }
                jobrun_mark(jr, g);
        }
        jobrun_set_group_timer(jr, now);
        return 0;
}

/* ---- starting requests ------------------------------------------------------------------ */

enum start { STARTED, BLOCKED, ENDED };

/* srctab's word, and, with nodes sharing the circuit, the cluster's on
 * who sends the half-open probe (another node's probe: wait for it). */
static enum src_admit admit(struct work_env *w, struct src *s, struct src *h, bool rate, int64_t now,
                            int64_t *ret_wake)
{
        enum src_admit a = srctab_admit(w->srcs, s, h, rate, now, ret_wake);
        if (a == ADMIT_PROBE && w->take_probe && !w->take_probe(w->probe_ud, s)) {
                *ret_wake = now + RESTART_WAIT_MS;
                return ADMIT_OPEN;
        }
        return a;
}

/* The source could not admit the request: wait for it, or give up on the
 * group's waiting items when the circuit opens again only after the
 * deadline. */
static enum start blocked(struct work_env *w, struct jobrun *jr, int g, enum src_admit a, struct src *src,
                          struct src *h, int64_t wake, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);

        if (a == ADMIT_OPEN && wake > 0 && wake >= deadline(jr, g)) {
                char msg[256], at[HUMAN_MAX];
                snprintf(msg, sizeof(msg),
                         "the circuit of %s is open; its next probe (in %s) comes after %s", src_name(src),
                         human_secs(wake - now, at, sizeof(at)), deadline_name(jr, g));
                jobrun_skip_rest(jr, g, "circuit_open", msg);
                jobrun_group_set(jr, g, jobrun_source(jr, g)->state, "circuit_open", "%s", msg);
                if (gr->listing && !gr->list_inflight) {
                        gr->listing = false;
                        gr->list_end = "circuit_open";
                        jobrun_group_listing(jr, g, gr->pages, gr->list_end);
                        if (jobrun_source(jr, g)->items == 0) {
                                close_group(w, jr, g, SRC_FAILED, "circuit_open", msg, now);
                                return ENDED;
                        }
                }
                maybe_done(w, jr, g, now);
                return ENDED;
        }
        gr->blocked_gen = src_gen(src) + (h ? src_gen(h) : 0) + 1; /* + 1: never 0 */
        gr->blocked_until = a == ADMIT_RATE || a == ADMIT_OPEN ? wake : 0;
        jobrun_set_blocked(jr, g, true);
        return BLOCKED;
}

static enum start start_listing(struct work_env *w, struct jobrun *jr, int g, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);
        const struct source_def *d = group_def(w, jr, g);
        char *url = NULL, *shown = NULL, **headers = NULL;
        size_t nheaders = 0;
        int64_t wake = 0;

        if (!d) {
                close_group(w, jr, g, SRC_FAILED, "unknown_source", "the source's file is gone", now);
                return ENDED;
        }
        enum src_admit a = admit(w, gr->src, NULL, true, now, &wake);
        if (a != ADMIT_OK && a != ADMIT_PROBE)
                return blocked(w, jr, g, a, gr->src, NULL, wake, now);
        int r = sources_build_url(d, jobrun_job(jr)->query, gr->page, &url);
        if (r >= 0)
                r = sources_build_headers(d, &headers, &nheaders);
        if (r < 0) {
                close_group(w, jr, g, SRC_FAILED, "source_unavailable",
                            r == -ENOKEY ? "a secret it needs is not set" : "its search URL cannot be built",
                            now);
                goto out;
        }
        struct xfer_request req = {
                .url = url, .dir_fd = w->dl_fd, .to_memory = true, .headers = headers, .nheaders = nheaders};
        struct xfer_tags tags = {.job = jr,
                                 .item = -1,
                                 .group = g,
                                 .attempt = gr->list_attempts + 1,
                                 .src = gr->src,
                                 .rate = true,
                                 .probe = a == ADMIT_PROBE};
        if (xfers_start(w->xfers, &req, &tags, now) < 0) {
                if (a == ADMIT_PROBE)
                        srctab_abandon_probe(w->srcs, gr->src, now);
                gr->list_due_ms = now + RESTART_WAIT_MS;
                goto out;
        }
        gr->list_inflight = true;
        gr->list_attempts++;
        sources_build_url_redacted(d, jobrun_job(jr)->query, gr->page, &shown);
        log_info("job %s: LIST %s page %d (attempt %d): %s", jobrun_id(jr), src_name(gr->src), gr->page,
                 gr->list_attempts, shown ? shown : "?");
out:
        free(url);
        free(shown);
        sources_strv_free(headers, nheaders);
        return STARTED;
}

/* The entries a download of item i answers to: its host (connections),
 * and the circuit it counts for: the group's source, except for a query
 * source's candidate on a host the source does not own (neither its
 * search_url's host nor one of its download_hosts), which has its host's
 * own circuit and takes no token of the source's rate. NULL *ret_host:
 * out of memory; -EINVAL: no host. */
static int item_entries(struct work_env *w, struct jobrun *jr, int g, int i, struct src **ret_src,
                        struct src **ret_host, bool *ret_rate)
{
        struct group_run *gr = jobrun_group(jr, g);
        const char *url = jobrun_item(jr, i)->url;
        char *hostname = NULL;

        if (urlcheck_validate(url, &hostname, NULL) < 0)
                return -EINVAL;
        *ret_host = srctab_host(w->srcs, hostname);
        *ret_src = gr->src;
        *ret_rate = false;
        if (gr->query) {
                const struct source_def *d = group_def(w, jr, g);
                if (d && sources_is_own_host(d, url))
                        *ret_rate = true;
                else
                        *ret_src = srctab_source(w->srcs, hostname, false);
        }
        free(hostname);
        return *ret_src && *ret_host ? 0 : -ENOMEM;
}

static enum start start_download(struct work_env *w, struct jobrun *jr, int g, int i, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);
        const struct item *it = jobrun_item(jr, i);
        char subdir[SUBDIR_MAX];
        struct src *src = NULL, *h = NULL;
        int64_t wake = 0;
        bool rate;

        int r = item_entries(w, jr, g, i, &src, &h, &rate);
        if (r == -EINVAL) {
                jobrun_item_failed(jr, i, "http_4xx", "the URL cannot be parsed");
                return STARTED;
        }
        if (r < 0) {
                jobrun_untake(jr, g, i);
                return blocked(w, jr, g, ADMIT_RATE, gr->src, NULL, now + RESTART_WAIT_MS, now);
        }
        enum src_admit a = admit(w, src, h, rate, now, &wake);
        if (a == ADMIT_OPEN && src != gr->src) {
                /* another host's circuit: this item waits (or gives up), the group goes on */
                if (wake > 0 && wake < deadline(jr, g)) {
                        jobrun_item_defer(jr, i, wake);
                } else {
                        char msg[256];
                        snprintf(msg, sizeof(msg), "the circuit of %s is open past %s", src_name(src),
                                 deadline_name(jr, g));
                        jobrun_item_skipped(jr, i, "circuit_open", msg);
                }
                return STARTED;
        }
        if (a != ADMIT_OK && a != ADMIT_PROBE) {
                jobrun_untake(jr, g, i);
                return blocked(w, jr, g, a, src, h, wake, now);
        }
        const struct job *j = jobrun_job(jr);
        const struct source_def *d = gr->query ? group_def(w, jr, g) : NULL;
        char **headers = NULL;
        size_t nheaders = 0;
        if (d && sources_download_headers(d, it->url, &headers, &nheaders) < 0)
                headers = NULL, nheaders = 0;
        subdir_of(jr, g, subdir);
        struct xfer_request req = {
                .url = it->url,
                .dir_fd = w->dl_fd,
                .subdir = subdir,
                .part_id = i,
                .name_hint = it->filename,
                .request_timeout_ms = (int64_t)(j->limits.request_timeout * 1000),
                .stall_ms = (int64_t)(j->limits.stall_timeout * 1000),
                .headers = headers,
                .nheaders = nheaders,
        };
        struct xfer_tags tags = {.job = jr,
                                 .item = i,
                                 .group = g,
                                 .attempt = it->attempts + 1,
                                 .src = src,
                                 .host = h,
                                 .rate = rate,
                                 .probe = a == ADMIT_PROBE};
        r = xfers_start(w->xfers, &req, &tags, now);
        sources_strv_free(headers, nheaders);
        if (r < 0) {
                if (a == ADMIT_PROBE)
                        srctab_abandon_probe(w->srcs, src, now);
                jobrun_untake(jr, g, i);
                return blocked(w, jr, g, ADMIT_RATE, gr->src, NULL, now + RESTART_WAIT_MS, now);
        }
        jobrun_item_started(jr, i);
        gr->inplay++;
        if (w->file_lines)
                log_info("job %s: DOWNLOADING: %s | Item %d | URL: %s", jobrun_id(jr),
                         jobrun_source(jr, g)->source, i, it->url);
        else
                log_debug("job %s: DOWNLOADING: %s | Item %d | URL: %s", jobrun_id(jr),
                          jobrun_source(jr, g)->source, i, it->url);
        return STARTED;
}

/* Returns false when MAX_CONCURRENT_DOWNLOADS stopped it. */
static bool fill_group(struct work_env *w, struct jobrun *jr, int g, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);

        if (gr->phase == GROUP_WAITING && !start_query_group(w, jr, g, now))
                return true;
        if (gr->phase != GROUP_RUNNING)
                return true;
        jobrun_set_blocked(jr, g, false);
        if (gr->listing && !gr->list_inflight && !need_more(jr))
                jobrun_set_capped(jr, g); /* enough candidates for now */
        if (gr->listing && !gr->list_inflight && now >= gr->list_due_ms && need_more(jr)) {
                if (xfers_running(w->xfers) >= w->cfg->max_concurrent_downloads)
                        return false;
                if (start_listing(w, jr, g, now) != STARTED)
                        return true;
        }
        while (gr->phase == GROUP_RUNNING) {
                if (xfers_running(w->xfers) >= w->cfg->max_concurrent_downloads)
                        return false;
                if (jobrun_committed(jr) >= jobrun_job(jr)->max) {
                        jobrun_set_capped(jr, g); /* looked at again if a place comes free */
                        break;
                }
                int i = jobrun_take_ready(jr, g);
                if (i < 0)
                        break;
                if (start_download(w, jr, g, i, now) != STARTED)
                        return true;
        }
        maybe_done(w, jr, g, now);
        return true;
}

bool work_fill(struct work_env *w, struct jobrun *jr, int64_t now)
{
        int g;

        while ((g = jobrun_take_marked(jr)) >= 0)
                if (!fill_group(w, jr, g, now)) {
                        jobrun_mark(jr, g);
                        return false;
                }
        return true;
}

/* ---- settling outcomes ---------------------------------------------------------------------- */

static void log_circuit(struct work_env *w, struct src *s, int64_t now, const char *why)
{
        struct src_info si;
        if (srctab_info(w->srcs, s, now, &si) < 0)
                return;
        if (si.state == BREAKER_OPEN)
                log_warning("CIRCUIT BREAKER opened for %s after %d failures (%s); probe in %.1f s", si.name,
                            si.consecutive_failures, why, (double)(si.retry_at_ms - now) / 1000.0);
        else if (si.state == BREAKER_HALF_OPEN)
                log_info("CIRCUIT BREAKER half-open for %s: one probe goes (%s)", si.name, why);
        else
                log_info("CIRCUIT BREAKER closed for %s (%s)", si.name, why);
        src_info_clear(&si);
}

/* The attempt failed with rc: retry (this round, or a new one) while the
 * limits and the deadline allow, else the item fails. */
static void fail_or_retry(struct work_env *w, struct jobrun *jr, int g, int i, enum retry_class rc,
                          const char *msg, int64_t retry_after_ms, int64_t now)
{
        struct item_run *ir = jobrun_item_run(jr, i);
        const struct item *it = jobrun_item(jr, i);
        struct retry_policy p = policy(w, jr);
        const char *code = retry_class_code(rc);
        int per_round = p.max_retries + 1;
        char d[HUMAN_MAX];

        if (rc == RC_TIMEOUT || rc == RC_STALLED)
                log_warning("job %s: TIMEOUT %s: %s", jobrun_id(jr), it->url, msg);
        if (retry_class_retryable(rc)) {
                bool next_round = ir->round_attempts >= per_round;
                if (!next_round || ir->rounds < w->cfg->max_retries_per_item) {
                        /* a new round waits one step longer than the round's last retry */
                        int step = ir->round_attempts;
                        int64_t delay = retry_delay_ms(&p, step, retry_after_ms, w->rand01(w->rand_ud));
                        if (now + delay < deadline(jr, g)) {
                                if (next_round) {
                                        ir->rounds++;
                                        ir->round_attempts = 0;
                                }
                                jobrun_item_retry(jr, i, now + delay, delay, code, msg);
                                log_info("job %s: RETRY Attempt %d/%d%s for %s after %s (%s: %s)",
                                         jobrun_id(jr), ir->round_attempts + 1, per_round,
                                         next_round ? " (a new round)" : "", it->url,
                                         human_secs(delay, d, sizeof(d)), code, msg);
                                return;
                        }
                        char m[512];
                        snprintf(m, sizeof(m), "%s; not tried again: the next attempt would come after %s",
                                 msg, deadline_name(jr, g));
                        jobrun_item_failed(jr, i, code, m);
                        log_info("job %s: FAILED %s after %d attempts (%s: %s)", jobrun_id(jr), it->url,
                                 it->attempts, code, m);
                        return;
                }
        }
        jobrun_item_failed(jr, i, code, msg);
        log_info("job %s: FAILED %s after %d attempt%s (%s: %s)", jobrun_id(jr), it->url, it->attempts,
                 it->attempts == 1 ? "" : "s", code, msg);
}

static void log_success(struct work_env *w, struct jobrun *jr, int i, const char *path)
{
        const struct item *it = jobrun_item(jr, i);
        const char *name = strrchr(path, '/');
        char n[HUMAN_MAX], t[HUMAN_MAX], r[HUMAN_MAX];

        enum log_level level = w->file_lines ? LOG_INFO : LOG_DEBUG;

        if (log_get_level() > level)
                return;
        log_msg(level, "job %s: SUCCESS: Downloaded: %s (%s bytes in %s at %s) from %s%s", jobrun_id(jr),
                name ? name + 1 : path, human_count(it->bytes, n, sizeof(n)),
                human_secs(it->duration_ms, t, sizeof(t)), human_rate(it->speed_bps, r, sizeof(r)),
                jobrun_source(jr, jobrun_group_of(jr, i))->source, it->resumed_from > 0 ? " (resumed)" : "");
}

static void succeed(struct work_env *w, struct jobrun *jr, int i, const char *path, int64_t resumed_from)
{
        struct group_run *gr = jobrun_group(jr, jobrun_group_of(jr, i));
        gr->inplay--;
        jobrun_item_succeeded(jr, i, path, resumed_from, w->node);
        log_success(w, jr, i, path);
}

/* A complete body: identical content is stored once. */
static void body_done(struct work_env *w, struct jobrun *jr, int g, int i, struct outcome *o)
{
        const char *sha = o->res.sha256;
        int same = jobrun_find_content(jr, sha);

        if (same >= 0 && same != i) {
                unlinkat(o->res.dir_fd, o->res.part, 0);
                jobrun_item_content(jr, i, sha);
                if (jobrun_item(jr, same)->path) {
                        succeed(w, jr, i, jobrun_item(jr, same)->path, o->res.resumed_from);
                } else if (jobrun_follow(jr, i, same) < 0) {
                        jobrun_group(jr, g)->inplay--;
                        jobrun_item_failed(jr, i, "io", "out of memory");
                }
                return;
        }
        jobrun_item_content(jr, i, sha);
        jobrun_item_run(jr, i)->resumed_from = o->res.resumed_from;
        if (xfers_commit(w->xfers, o, jobrun_id(jr), o->res.name) < 0) {
                unlinkat(o->res.dir_fd, o->res.part, 0);
                jobrun_group(jr, g)->inplay--;
                jobrun_item_failed(jr, i, "io", "out of memory or file descriptors");
        }
}

static void apply_download(struct work_env *w, struct jobrun *jr, struct outcome *o, int64_t now)
{
        int i = o->tags.item, g = o->tags.group;
        struct item_run *ir = jobrun_item_run(jr, i);
        const struct xfer_result *res = &o->res;
        bool ok = res->rc == RC_OK;
        char err[400];

        if (jobrun_item(jr, i)->state != ITEM_RUNNING)
                return; /* its group was closed meanwhile */
        jobrun_item_answer(jr, i, res->http_status, res->bytes, res->duration_ms, res->speed_bps,
                           res->content_type);
        snprintf(err, sizeof(err), "%s: %s", retry_class_code(res->rc), res->message);
        /* a query source's candidate that is not media says nothing of its host's health */
        /* a URL counts once against its circuit, but a failed probe always
         * counts: it is the circuit's verdict (open again) */
        bool counted = !ok && retry_class_counts_for_breaker(res->rc) && (!ir->counted || o->tags.probe) &&
                       !(jobrun_group(jr, g)->query && res->rc == RC_INVALID_CONTENT);
        struct src_result sr = {.ok = ok,
                                .counted = counted,
                                .retry = o->tags.attempt > 1,
                                .will_retry = !ok && retry_class_retryable(res->rc),
                                .bytes = ok ? res->bytes : 0,
                                .error = ok ? NULL : err};
        if (counted)
                ir->counted = true;
        if (srctab_record(w->srcs, o->tags.src, &sr, o->tags.probe, now))
                log_circuit(w, o->tags.src, now, ok ? "probe succeeded" : retry_class_code(res->rc));
        if (ok) {
                body_done(w, jr, g, i, o);
                if (o->res.resumed_from > 0)
                        log_info("job %s: item %d resumed from byte %lld", jobrun_id(jr), i,
                                 (long long)o->res.resumed_from);
        } else {
                jobrun_group(jr, g)->inplay--;
                fail_or_retry(w, jr, g, i, res->rc, res->message, res->retry_after_ms, now);
        }
}

static void apply_committed(struct work_env *w, struct jobrun *jr, struct outcome *o)
{
        int i = o->tags.item, g = o->tags.group, k;
        char *path = NULL;

        if (jobrun_item(jr, i)->state != ITEM_RUNNING)
                return; /* its group was closed meanwhile: the file stays */
        if (o->error == 0 &&
            asprintf(&path, "%s/%s/%s", jobrun_id(jr), jobrun_source(jr, g)->source, o->final_name) < 0)
                path = NULL;
        if (!path) {
                char m[300];
                snprintf(m, sizeof(m), "writing the file into place: %s",
                         strerror(o->error ? -o->error : ENOMEM));
                log_error("job %s: %s: %s", jobrun_id(jr), jobrun_item(jr, i)->url, m);
                jobrun_group(jr, g)->inplay--;
                jobrun_item_failed(jr, i, "io", m);
                while ((k = jobrun_take_follower(jr, i)) >= 0) {
                        jobrun_group(jr, jobrun_group_of(jr, k))->inplay--;
                        jobrun_item_failed(jr, k, "io", m);
                }
                return;
        }
        succeed(w, jr, i, path, jobrun_item_run(jr, i)->resumed_from);
        while ((k = jobrun_take_follower(jr, i)) >= 0)
                if (jobrun_item(jr, k)->state == ITEM_RUNNING)
                        succeed(w, jr, k, path, 0);
        free(path);
}

/* ---- listing pages ------------------------------------------------------------------------------ */

static void list_end(struct work_env *w, struct jobrun *jr, int g, const char *why, const char *code,
                     const char *msg, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);
        const struct job_source *js = jobrun_source(jr, g);

        gr->listing = false;
        gr->list_end = why;
        jobrun_group_listing(jr, g, gr->pages, why);
        if (code && js->items == 0) {
                close_group(w, jr, g, SRC_FAILED, code, msg, now);
                return;
        }
        if (code) {
                jobrun_group_set(jr, g, SRC_DOWNLOADING, code, "listing stopped at page %d: %s", gr->page,
                                 msg);
                log_warning("job %s: source %s: listing stopped at page %d (%s: %s); going on with %lld "
                            "candidates",
                            jobrun_id(jr), js->source, gr->page, code, msg, (long long)js->items);
        } else {
                jobrun_group_set(jr, g, SRC_DOWNLOADING, NULL, NULL);
                log_info("job %s: source %s listed %lld candidates in %d page%s (%s)", jobrun_id(jr),
                         js->source, (long long)js->items, gr->pages, gr->pages == 1 ? "" : "s", why);
        }
        maybe_done(w, jr, g, now);
}

/* A page's URLs become items: new ones only. */
static void list_add(struct jobrun *jr, int g, char **urls, size_t n)
{
        for (size_t k = 0; k < n; k++) {
                if (urlcheck_validate(urls[k], NULL, NULL) < 0)
                        continue;
                int r = jobrun_add_item(jr, g, urls[k]);
                if (r == -E2BIG)
                        break;
        }
}

static void list_failed(struct work_env *w, struct jobrun *jr, int g, enum retry_class rc, const char *msg,
                        int64_t retry_after_ms, int64_t now)
{
        struct group_run *gr = jobrun_group(jr, g);
        struct retry_policy p = policy(w, jr);
        char d[HUMAN_MAX];

        p.max_retries = w->cfg->max_retries_per_source;
        jobrun_group_set(jr, g, SRC_LISTING, retry_class_code(rc), "page %d: %s", gr->page, msg);
        if (retry_should_retry(&p, rc, gr->list_attempts)) {
                int64_t delay = retry_delay_ms(&p, gr->list_attempts, retry_after_ms, w->rand01(w->rand_ud));
                if (now + delay < deadline(jr, g)) {
                        gr->list_due_ms = now + delay;
                        if (gr->list_due_ms < jobrun_group_timer(jr))
                                jobrun_set_group_timer(jr, gr->list_due_ms);
                        log_info("job %s: RETRY listing %s page %d, Attempt %d/%d after %s (%s: %s)",
                                 jobrun_id(jr), src_name(gr->src), gr->page, gr->list_attempts + 1,
                                 p.max_retries + 1, human_secs(delay, d, sizeof(d)), retry_class_code(rc),
                                 msg);
                        return;
                }
        }
        list_end(w, jr, g, "error", retry_class_code(rc), msg, now);
}

/* The page answered with an end_status: the listing ends cleanly. */
static bool past_the_end(const struct source_def *d, struct group_run *gr, const struct xfer_result *res)
{
        return d && res->rc != RC_OK && res->http_status > 0 &&
               sources_end_status(d, gr->page, res->http_status);
}

static void apply_listing(struct work_env *w, struct jobrun *jr, struct outcome *o, int64_t now)
{
        int g = o->tags.group;
        struct group_run *gr = jobrun_group(jr, g);
        const struct source_def *d = group_def(w, jr, g);
        enum retry_class rc = o->res.rc;
        const char *msg = o->res.message;
        struct sources_page page = {.total = -1};
        char err[400];

        if (gr->phase != GROUP_RUNNING || !gr->list_inflight)
                return;
        gr->list_inflight = false;
        bool end = past_the_end(d, gr, &o->res);
        if (end)
                rc = RC_OK;
        else if (rc == RC_OK && (!d || sources_parse_listing(d, o->res.body, o->res.body_len, &page) < 0)) {
                rc = RC_INVALID_CONTENT;
                msg = "the listing page is not JSON of the shape the source file describes";
        }
        bool ok = rc == RC_OK;
        snprintf(err, sizeof(err), "%s: %s", retry_class_code(rc), msg);
        struct src_result sr = {.listing = true,
                                .ok = ok,
                                .counted = !ok && retry_class_counts_for_breaker(rc),
                                .retry = gr->list_attempts > 1,
                                .will_retry = !ok && retry_class_retryable(rc),
                                .bytes = ok ? o->res.bytes : 0,
                                .error = ok ? NULL : err};
        if (srctab_record(w->srcs, gr->src, &sr, o->tags.probe, now))
                log_circuit(w, gr->src, now, ok ? "probe succeeded" : retry_class_code(rc));
        if (!ok) {
                list_failed(w, jr, g, rc, msg, o->res.retry_after_ms, now);
                return;
        }
        if (!end) {
                gr->pages++;
                jobrun_group_listing(jr, g, gr->pages, NULL);
                gr->results += (int64_t)page.results;
                if (page.total >= 0)
                        gr->total = page.total;
                if (!jobrun_max_reached(jr))
                        list_add(jr, g, page.urls, page.n);
        }
        enum sources_list_end next =
                sources_listing_next(d, gr->page, gr->results, end ? -1 : page.total, end ? 0 : page.results,
                                     end ? o->res.http_status : 200);
        sources_page_clear(&page);
        gr->page++;
        gr->list_attempts = 0;
        gr->list_due_ms = now;
        if (next == LIST_MORE && jobrun_nitems(jr) >= JOB_MAX_ITEMS)
                list_end(w, jr, g, "result_limit", NULL, NULL, now);
        else if (next != LIST_MORE)
                list_end(w, jr, g, sources_list_end_to_string(next), NULL, NULL, now);
        else
                jobrun_group_set(jr, g, SRC_LISTING, NULL, NULL);
}

void work_apply(struct work_env *w, struct jobrun *jr, struct outcome *o, int64_t now)
{
        int g = o->tags.group;

        switch (o->kind) {
        case OUTCOME_DOWNLOAD:
                apply_download(w, jr, o, now);
                break;
        case OUTCOME_LISTING:
                apply_listing(w, jr, o, now);
                break;
        case OUTCOME_COMMITTED:
                apply_committed(w, jr, o);
                break;
        }
        jobrun_mark(jr, g);
        /* a place under max may have come free: the groups that stopped at
         * max start items again, query groups list more */
        if (o->kind != OUTCOME_LISTING && jobrun_committed(jr) < jobrun_job(jr)->max)
                jobrun_mark_capped(jr);
}

/* ---- timers ---------------------------------------------------------------------------------------- */

static void mark_ready(struct jobrun *jr, int g, void *ud)
{
        (void)ud;
        jobrun_mark(jr, g);
}

/* Group deadlines and listing pages due. */
static int64_t group_timers(struct work_env *w, struct jobrun *jr, int64_t now)
{
        int64_t next = INT64_MAX;

        if (now < jobrun_group_timer(jr))
                return jobrun_group_timer(jr);
        for (size_t k = 0; k < jobrun_ngroups(jr); k++) {
                int g = (int)k;
                struct group_run *gr = jobrun_group(jr, g);
                if (gr->phase != GROUP_RUNNING)
                        continue;
                if (gr->deadline_ms > 0 && now >= gr->deadline_ms) {
                        char m[200];
                        snprintf(m, sizeof(m), "the source's time ran out (SOURCE_TIMEOUT %.0f s)",
                                 source_timeout(w, jr, g));
                        log_warning("job %s: TIMEOUT source %s: %s", jobrun_id(jr), src_name(gr->src), m);
                        close_group(w, jr, g, SRC_TIMED_OUT, "source_timeout", m, now);
                        continue;
                }
                if (gr->deadline_ms > 0 && gr->deadline_ms < next)
                        next = gr->deadline_ms;
                if (gr->listing && !gr->list_inflight && gr->list_due_ms > now && gr->list_due_ms < next)
                        next = gr->list_due_ms;
                if (gr->listing && !gr->list_inflight && gr->list_due_ms <= now)
                        jobrun_mark(jr, g);
        }
        jobrun_set_group_timer(jr, next);
        return next;
}

/* Groups waiting for their source: their source may admit more now, or
 * their wait is over. */
static int64_t blocked_timers(struct work_env *w, struct jobrun *jr, int64_t now)
{
        const int *v;
        size_t n = jobrun_blocked(jr, &v);
        int64_t next = INT64_MAX;

        for (size_t k = n; k-- > 0;) {
                int g = v[k];
                struct group_run *gr = jobrun_group(jr, g);
                uint64_t gen = src_gen(gr->src) + 1;
                int i = jobrun_take_ready(jr, g);
                if (i >= 0) {
                        struct src *src, *h;
                        bool rate;
                        if (item_entries(w, jr, g, i, &src, &h, &rate) == 0)
                                gen = src_gen(src) + src_gen(h) + 1;
                        jobrun_untake(jr, g, i);
                }
                bool due = gr->blocked_until > 0 && now >= gr->blocked_until;
                if (gen != gr->blocked_gen || due) {
                        jobrun_set_blocked(jr, g, false);
                        jobrun_mark(jr, g);
                } else if (gr->blocked_until > 0 && gr->blocked_until < next)
                        next = gr->blocked_until;
        }
        return next;
}

int64_t work_timers(struct work_env *w, struct jobrun *jr, int64_t now)
{
        int64_t next = jobrun_due(jr, now, mark_ready, NULL);
        int64_t t = group_timers(w, jr, now);
        if (t < next)
                next = t;
        t = blocked_timers(w, jr, now);
        return t < next ? t : next;
}

bool work_done(struct jobrun *jr)
{
        for (size_t k = 0; k < jobrun_ngroups(jr); k++)
                if (jobrun_group(jr, (int)k)->phase != GROUP_DONE)
                        return false;
        return true;
}

/* ---- ending and parking ------------------------------------------------------------------------------- */

void work_end(struct work_env *w, struct jobrun *jr, enum job_state st, const char *code, const char *msg,
              int64_t now)
{
        enum source_state ss = st == JOB_TIMED_OUT ? SRC_TIMED_OUT : SRC_SKIPPED;
        const char *icode = code, *imsg = msg;

        if (st == JOB_SUCCEEDED && jobrun_max_reached(jr)) {
                ss = SRC_DONE;
                icode = "max_reached";
                imsg = "the job's max was reached";
        }
        for (size_t k = 0; k < jobrun_ngroups(jr); k++)
                if (jobrun_group(jr, (int)k)->phase != GROUP_DONE)
                        close_group(w, jr, (int)k, ss, icode, imsg, now);
}

static void requeue_aborted(void *job, int item, void *ud)
{
        struct jobrun *jr = job;
        (void)ud;
        jobrun_group(jr, jobrun_group_of(jr, item))->inplay--;
        jobrun_item_requeue(jr, item);
}

void work_park(struct work_env *w, struct jobrun *jr, enum job_state st, int64_t now)
{
        xfers_abort(w->xfers, jr, -1, true, now, requeue_aborted, NULL);
        for (size_t i = 0; i < jobrun_nitems(jr); i++)
                if (jobrun_item(jr, (int)i)->state == ITEM_RUNNING)
                        jobrun_item_requeue(jr, (int)i); /* with the committer: found in place next time */
        for (size_t k = 0; k < jobrun_ngroups(jr); k++) {
                struct group_run *gr = jobrun_group(jr, (int)k);
                gr->inplay = 0;
                jobrun_set_blocked(jr, (int)k, false);
                if (gr->phase != GROUP_DONE)
                        jobrun_group_set(jr, (int)k, SRC_PENDING, NULL, NULL);
        }
        jobrun_set_state(jr, st, NULL, NULL, 0);
}

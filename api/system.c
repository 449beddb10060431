/* system: the daemon's own resources: health, effective configuration,
 * sources, circuits, statistics and Prometheus metrics. Everything here
 * reads a scheduler snapshot (and the store's job counts), except the
 * circuit and statistics resets, which go through the scheduler. */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/jobjson.h"
#include "api/reply.h"
#include "daemon/config.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What the handlers read when the scheduler has published no snapshot
 * yet (its first turn is still to come, or memory ran out): no sources,
 * no counters, no nodes. */
static const struct snapshot no_snapshot;

static const struct snapshot *view(const struct snapshot *snap) { return snap ? snap : &no_snapshot; }

/* The nodes sharing the job table: id, last heartbeat, leases held. */
static json_t *nodes_json(const struct snapshot *snap)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < snap->nnodes; i++) {
                const struct cluster_node *n = &snap->nodes[i];
                if (json_array_append_new(a, json_pack("{s:s, s:o, s:I, s:o}", "id", n->id, "heartbeat_at",
                                                       jobjson_time(n->heartbeat_at), "leases",
                                                       (json_int_t)n->leases, "api_url",
                                                       n->api_url ? json_string(n->api_url) : json_null())) <
                    0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}

enum MHD_Result system_health(struct request *rq)
{
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        const char *version = rq->h->version ? rq->h->version : PACKAGE_VERSION;
        bool ok = !snap || snap->store_ok;
        json_t *o = ok ? json_pack("{s:s, s:s}", "status", "ok", "version", version)
                       : json_pack("{s:s, s:s, s:s}", "status", "unavailable", "version", version, "reason",
                                   snap->store_error);

        if (o && json_object_update_new(o, json_pack("{s:s, s:o}", "node",
                                                     view(snap)->node ? view(snap)->node : "", "nodes",
                                                     nodes_json(view(snap)))) < 0) {
                json_decref(o);
                o = NULL;
        }
        snapshot_unref(snap);
        return reply_json(rq, ok ? 200 : 503, o);
}

/* ---- GET /v1/config -------------------------------------------------------- */

struct config_visit {
        json_t *o;
        bool failed;
};

static void config_entry(const char *key, const char *value, void *ud)
{
        struct config_visit *v = ud;
        if (json_object_set_new(v->o, key, value ? json_string(value) : json_null()) < 0)
                v->failed = true;
}

enum MHD_Result system_config(struct request *rq)
{
        struct config_visit v = {.o = json_object()};
        if (v.o)
                config_foreach(rq->h->cfg, config_entry, &v);
        /* the token itself is no key; show that one is set, never what it is */
        if (v.o && rq->h->cfg->api_token)
                config_entry("API_TOKEN", "***", &v);
        if (v.failed) {
                json_decref(v.o);
                v.o = NULL;
        }
        return reply_json(rq, 200, v.o);
}

/* ---- circuits ---------------------------------------------------------------- */

enum MHD_Result system_circuits(struct request *rq)
{
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        json_t *arr = json_array();

        for (size_t i = 0; arr && snap && i < snap->ncircuits; i++)
                if (json_array_append_new(arr, jobjson_circuit(&snap->circuits[i], snap)) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        snapshot_unref(snap);
        return reply_json(rq, 200, arr ? json_pack("{s:o}", "circuits", arr) : NULL);
}

enum MHD_Result system_circuit_reset(struct request *rq)
{
        const char *source = rq->params[0];
        int r = sched_circuit_reset(rq->h->sched, source);

        if (r < 0)
                return reply_sched_error(rq, r, "source");
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        const struct src_info *c = snap ? snapshot_circuit(snap, source) : NULL;
        json_t *entry = c ? jobjson_circuit(c, snap) : NULL;
        snapshot_unref(snap);
        if (!entry)
                return reply_problem(rq, 404, NULL, "no such source");
        return reply_json(rq, 200, entry);
}

/* ---- GET /v1/sources ----------------------------------------------------------- */

static json_t *source_json(const struct snapshot_source *si)
{
        json_t *o = json_pack("{s:s, s:s, s:i, s:f, s:i, s:b}", "name", si->name, "kind", "search",
                              "max_connections", si->max_connections, "requests_per_second",
                              si->requests_per_second, "per_page", si->per_page, "available", si->available);
        if (o && !si->available &&
            json_object_set_new(
                    o, "unavailable_reason",
                    json_string(si->unavailable_reason ? si->unavailable_reason : "unavailable")) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

enum MHD_Result system_sources(struct request *rq)
{
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        json_t *arr = json_array();

        for (size_t i = 0; arr && snap && i < snap->nsources; i++)
                if (json_array_append_new(arr, source_json(&snap->sources[i])) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        snapshot_unref(snap);
        return reply_json(rq, 200, arr ? json_pack("{s:o}", "sources", arr) : NULL);
}

/* ---- GET /v1/stats ----------------------------------------------------------------- */

static json_t *job_counts(const int64_t counts[_JOB_STATE_MAX])
{
        json_t *o = json_object();
        for (int i = 0; o && i < _JOB_STATE_MAX; i++)
                if (json_object_set_new(o, job_state_to_string(i), json_integer(counts[i])) < 0) {
                        json_decref(o);
                        return NULL;
                }
        return o;
}

static json_t *counters_json(const struct src_counters *c)
{
        return json_pack("{s:I, s:I, s:I, s:I, s:I}", "attempts", (json_int_t)c->attempts, "successes",
                         (json_int_t)c->successes, "failures", (json_int_t)c->failures, "retries",
                         (json_int_t)c->retries, "bytes", (json_int_t)c->bytes);
}

/* A source's entry: its downloads at the top level (as the totals), and
 * both directions apart. */
static json_t *source_stats_json(const struct src_info *si)
{
        json_t *o = counters_json(&si->downloads);
        if (o && json_object_update_new(o, json_pack("{s:s, s:o, s:o}", "circuit",
                                                     jobjson_circuit_state(si->state), "downloads",
                                                     counters_json(&si->downloads), "listings",
                                                     counters_json(&si->listings))) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static json_t *sources_stats_json(const struct snapshot *snap)
{
        json_t *o = json_object();
        for (size_t i = 0; o && i < snap->ncircuits; i++)
                if (json_object_set_new(o, snap->circuits[i].name, source_stats_json(&snap->circuits[i])) <
                    0) {
                        json_decref(o);
                        return NULL;
                }
        return o;
}

/* Job counts per state from the store. */
static int count_jobs(struct request *rq, int64_t counts[_JOB_STATE_MAX])
{
        struct store *s;
        int r = request_store(rq, &s);
        if (r < 0)
                return r;
        return store_job_count_by_state(s, counts);
}

static enum MHD_Result reply_stats(struct request *rq)
{
        int64_t counts[_JOB_STATE_MAX] = {0};
        int r = count_jobs(rq, counts);

        if (r < 0)
                return reply_store_error(rq, r, "job");
        struct snapshot *ref = sched_snapshot(rq->h->sched);
        const struct snapshot *snap = view(ref);
        const struct src_counters *d = &snap->downloads;
        json_t *o =
                json_pack("{s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "uptime_s",
                          (json_int_t)(snap->uptime_ms / 1000), "jobs", job_counts(counts), "total_attempts",
                          (json_int_t)d->attempts, "total_successes", (json_int_t)d->successes,
                          "total_failures", (json_int_t)d->failures, "total_retries", (json_int_t)d->retries,
                          "total_bytes", (json_int_t)d->bytes, "downloads", counters_json(d), "listings",
                          counters_json(&snap->listings), "sources", sources_stats_json(snap));
        if (o && json_object_set_new(o, "nodes", nodes_json(snap)) < 0) {
                json_decref(o);
                o = NULL;
        }
        snapshot_unref(ref);
        return reply_json(rq, 200, o);
}

enum MHD_Result system_stats(struct request *rq) { return reply_stats(rq); }

enum MHD_Result system_stats_reset(struct request *rq)
{
        int r = sched_stats_reset(rq->h->sched);
        if (r < 0)
                return reply_sched_error(rq, r, "statistics");
        return reply_stats(rq);
}

/* ---- GET /metrics ------------------------------------------------------------------------ */

/* A Prometheus label value: \\, " and newline escaped. */
static void label(FILE *f, const char *v)
{
        for (; *v; v++) {
                if (*v == '\\' || *v == '"')
                        fprintf(f, "\\%c", *v);
                else if (*v == '\n')
                        fputs("\\n", f);
                else
                        fputc(*v, f);
        }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void source_metric(FILE *f, const char *name, const char *source, const char *extra, int64_t value)
{
        fprintf(f, "%s{source=\"", name);
        label(f, source);
        fprintf(f, "\"%s} %lld\n", extra, (long long)value);
}

/* A number as Prometheus writes it: "+Inf", or the shortest %g that reads back exactly. */
static void prom_number(char *buf, size_t n, double v)
{
        if (isinf(v)) {
                snprintf(buf, n, "+Inf");
                return;
        }
        for (int p = 1; p <= 17; p++) {
                snprintf(buf, n, "%.*g", p, v);
                if (strtod(buf, NULL) == v)
                        return;
        }
}

/* hauld_download_duration_seconds: the scheduler counts per bucket; the
 * text format wants cumulative le buckets, then _sum and _count. */
static void duration_histogram(FILE *f, const struct snapshot *snap)
{
        const char *name = "hauld_download_duration_seconds";
        char le[32], sum[32];
        int64_t cum = 0;

        family(f, name, "histogram",
               "Duration of finished download attempts (success or failure), seconds.");
        for (int i = 0; i < SNAPSHOT_DURATION_BUCKETS; i++) {
                cum += snap->duration_count[i];
                prom_number(le, sizeof(le),
                            i < SNAPSHOT_DURATION_BUCKETS - 1 ? snapshot_duration_bounds[i] : INFINITY);
                fprintf(f, "%s_bucket{le=\"%s\"} %lld\n", name, le, (long long)cum);
        }
        prom_number(sum, sizeof(sum), snap->duration_sum_s);
        fprintf(f, "%s_sum %s\n%s_count %lld\n", name, sum, name, (long long)cum);
}

/* Successes and failures of one direction (downloads or listings) per source. */
static void results(FILE *f, const struct snapshot *snap, const char *name, bool listings)
{
        for (size_t i = 0; i < snap->ncircuits; i++) {
                const struct src_info *si = &snap->circuits[i];
                const struct src_counters *c = listings ? &si->listings : &si->downloads;
                source_metric(f, name, si->name, ",result=\"success\"", c->successes);
                source_metric(f, name, si->name, ",result=\"failure\"", c->failures);
        }
}

static void metrics_write(FILE *f, const int64_t counts[], const struct snapshot *snap)
{
        family(f, "hauld_build_info", "gauge", "Always 1; the version of the running daemon.");
        fprintf(f, "hauld_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
        family(f, "hauld_jobs", "gauge", "Jobs in the job table by state.");
        for (int i = 0; i < _JOB_STATE_MAX; i++)
                fprintf(f, "hauld_jobs{state=\"%s\"} %lld\n", job_state_to_string(i), (long long)counts[i]);
        family(f, "hauld_transfers_in_flight", "gauge",
               "Requests (downloads and listing pages) in flight now.");
        fprintf(f, "hauld_transfers_in_flight %d\n", snap->transfers);
        family(f, "hauld_bytes_in_flight", "gauge",
               "Body bytes received so far by the downloads in flight.");
        fprintf(f, "hauld_bytes_in_flight %lld\n", (long long)snap->bytes_in_flight);
        family(f, "hauld_downloads_total", "counter",
               "Finished download attempts of media files (not listing requests) by source and result.");
        results(f, snap, "hauld_downloads_total", false);
        family(f, "hauld_listings_total", "counter",
               "Finished listing (search) requests of query sources by source and result.");
        results(f, snap, "hauld_listings_total", true);
        family(f, "hauld_download_bytes_total", "counter", "Bytes of media files downloaded, by source.");
        for (size_t i = 0; i < snap->ncircuits; i++)
                source_metric(f, "hauld_download_bytes_total", snap->circuits[i].name, "",
                              snap->circuits[i].downloads.bytes);
        family(f, "hauld_retries_total", "counter", "Download attempts that were retries, by source.");
        for (size_t i = 0; i < snap->ncircuits; i++)
                source_metric(f, "hauld_retries_total", snap->circuits[i].name, "",
                              snap->circuits[i].downloads.retries);
        family(f, "hauld_circuit_state", "gauge", "Circuit breaker state: 0 closed, 1 half-open, 2 open.");
        for (size_t i = 0; i < snap->ncircuits; i++) {
                enum breaker_state st = snap->circuits[i].state;
                source_metric(f, "hauld_circuit_state", snap->circuits[i].name, "",
                              st == BREAKER_OPEN        ? 2
                              : st == BREAKER_HALF_OPEN ? 1
                                                        : 0);
        }
        duration_histogram(f, snap);
}

enum MHD_Result system_metrics(struct request *rq)
{
        int64_t counts[_JOB_STATE_MAX] = {0};
        size_t len = 0;
        char *text = NULL;
        int r = count_jobs(rq, counts);

        if (r < 0)
                return reply_store_error(rq, r, "job");
        struct snapshot *snap = sched_snapshot(rq->h->sched);
        FILE *f = open_memstream(&text, &len);
        if (f) {
                metrics_write(f, counts, view(snap));
                fclose(f);
        }
        snapshot_unref(snap);
        if (!text)
                return reply_problem(rq, 500, NULL, "out of memory");
        return reply_text(rq, 200, METRICS_CONTENT_TYPE, text, len);
}

/* system: the daemon's own resources: health, effective configuration,
 * circuits, statistics and Prometheus metrics. Everything here is a read
 * of a snapshot (sched_stats, sched_circuits, the store's counts) except
 * the circuit reset, which goes through the scheduler. */
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

enum MHD_Result system_health(struct request *rq)
{
        return reply_json(rq, 200,
                          json_pack("{s:s, s:s}", "status", "ok", "version",
                                    rq->h->version ? rq->h->version : PACKAGE_VERSION));
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
        struct circuit_info *v;
        size_t n;
        int r = sched_circuits(rq->h->sched, &v, &n);

        if (r < 0)
                return reply_sched_error(rq, r, "circuit");
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                if (json_array_append_new(arr, jobjson_circuit(&v[i])) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        circuit_infos_free(v, n);
        return reply_json(rq, 200, arr ? json_pack("{s:o}", "circuits", arr) : NULL);
}

enum MHD_Result system_circuit_reset(struct request *rq)
{
        const char *source = rq->params[0];
        struct circuit_info *v;
        size_t n;
        json_t *entry = NULL;
        int r = sched_circuit_reset(rq->h->sched, source);

        if (r < 0 || (r = sched_circuits(rq->h->sched, &v, &n)) < 0)
                return reply_sched_error(rq, r, "source");
        for (size_t i = 0; i < n && !entry; i++)
                if (strcmp(v[i].source, source) == 0)
                        entry = jobjson_circuit(&v[i]);
        circuit_infos_free(v, n);
        if (!entry)
                return reply_problem(rq, 404, NULL, "no such source");
        return reply_json(rq, 200, entry);
}

/* ---- GET /v1/sources ----------------------------------------------------------- */

static json_t *source_json(const struct source_info *si)
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
        struct source_info *v;
        size_t n;
        int r = sched_sources(rq->h->sched, &v, &n);

        if (r < 0)
                return reply_sched_error(rq, r, "source");
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                if (json_array_append_new(arr, source_json(&v[i])) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        source_infos_free(v, n);
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

static json_t *source_stats_json(const struct sched_stats *st)
{
        json_t *o = json_object();
        for (size_t i = 0; o && i < st->nsources; i++) {
                const struct source_stats *s = &st->sources[i];
                json_t *e = json_pack("{s:I, s:I, s:I, s:I, s:I, s:s}", "attempts", (json_int_t)s->attempts,
                                      "successes", (json_int_t)s->successes, "failures",
                                      (json_int_t)s->failures, "retries", (json_int_t)s->retries, "bytes",
                                      (json_int_t)s->bytes, "circuit", s->circuit ? s->circuit : "closed");
                if (json_object_set_new(o, s->source, e) < 0) {
                        json_decref(o);
                        return NULL;
                }
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

enum MHD_Result system_stats(struct request *rq)
{
        int64_t counts[_JOB_STATE_MAX] = {0};
        struct sched_stats st = {0};
        int r = count_jobs(rq, counts);

        if (r < 0)
                return reply_store_error(rq, r, "job");
        if ((r = sched_stats(rq->h->sched, &st)) < 0)
                return reply_sched_error(rq, r, "statistics");
        json_t *o = json_pack("{s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:o}", "uptime_s",
                              (json_int_t)(st.uptime_ms / 1000), "jobs", job_counts(counts),
                              "total_attempts", (json_int_t)st.total_attempts, "total_successes",
                              (json_int_t)st.total_successes, "total_failures",
                              (json_int_t)st.total_failures, "total_retries", (json_int_t)st.total_retries,
                              "total_bytes", (json_int_t)st.total_bytes, "sources", source_stats_json(&st));
        sched_stats_clear(&st);
        return reply_json(rq, 200, o);
}

/* ---- GET /metrics ------------------------------------------------------------------------ */

/* A Prometheus label value: \, " and newline escaped. */
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
static void duration_histogram(FILE *f, const struct sched_stats *st)
{
        const char *name = "hauld_download_duration_seconds";
        char le[32], sum[32];
        int64_t cum = 0;

        family(f, name, "histogram", "Duration of finished downloads (success or failure), seconds.");
        for (int i = 0; i < SCHED_DURATION_BUCKETS; i++) {
                cum += st->duration_count[i];
                prom_number(le, sizeof(le),
                            i < SCHED_DURATION_BUCKETS - 1 ? sched_duration_bounds[i] : INFINITY);
                fprintf(f, "%s_bucket{le=\"%s\"} %lld\n", name, le, (long long)cum);
        }
        prom_number(sum, sizeof(sum), st->duration_sum_s);
        fprintf(f, "%s_sum %s\n%s_count %lld\n", name, sum, name, (long long)cum);
}

static void metrics_write(FILE *f, const int64_t counts[], const struct sched_stats *st,
                          const struct circuit_info *c, size_t nc)
{
        family(f, "hauld_jobs", "gauge", "Jobs in the store by state.");
        for (int i = 0; i < _JOB_STATE_MAX; i++)
                fprintf(f, "hauld_jobs{state=\"%s\"} %lld\n", job_state_to_string(i), (long long)counts[i]);
        family(f, "hauld_downloads_total", "counter", "Finished downloads by source and result.");
        for (size_t i = 0; i < st->nsources; i++) {
                source_metric(f, "hauld_downloads_total", st->sources[i].source, ",result=\"success\"",
                              st->sources[i].successes);
                source_metric(f, "hauld_downloads_total", st->sources[i].source, ",result=\"failure\"",
                              st->sources[i].failures);
        }
        family(f, "hauld_download_bytes_total", "counter", "Bytes downloaded by source.");
        for (size_t i = 0; i < st->nsources; i++)
                source_metric(f, "hauld_download_bytes_total", st->sources[i].source, "",
                              st->sources[i].bytes);
        family(f, "hauld_retries_total", "counter", "Download retries by source.");
        for (size_t i = 0; i < st->nsources; i++)
                source_metric(f, "hauld_retries_total", st->sources[i].source, "", st->sources[i].retries);
        family(f, "hauld_circuit_state", "gauge", "Circuit breaker state: 0 closed, 1 half-open, 2 open.");
        for (size_t i = 0; i < nc; i++) {
                int v = strcmp(c[i].state, "open") == 0 ? 2 : strcmp(c[i].state, "half_open") == 0 ? 1 : 0;
                source_metric(f, "hauld_circuit_state", c[i].source, "", v);
        }
        duration_histogram(f, st);
}

enum MHD_Result system_metrics(struct request *rq)
{
        int64_t counts[_JOB_STATE_MAX] = {0};
        struct sched_stats st = {0};
        struct circuit_info *c = NULL;
        size_t nc = 0, len = 0;
        char *text = NULL;
        int r = count_jobs(rq, counts);

        if (r < 0)
                return reply_store_error(rq, r, "job");
        if ((r = sched_stats(rq->h->sched, &st)) < 0)
                return reply_sched_error(rq, r, "statistics");
        if ((r = sched_circuits(rq->h->sched, &c, &nc)) < 0) {
                sched_stats_clear(&st);
                return reply_sched_error(rq, r, "circuit");
        }
        FILE *f = open_memstream(&text, &len);
        if (f) {
                metrics_write(f, counts, &st, c, nc);
                fclose(f);
        }
        sched_stats_clear(&st);
        circuit_infos_free(c, nc);
        if (!text)
                return reply_problem(rq, 500, NULL, "out of memory");
        return reply_text(rq, 200, METRICS_CONTENT_TYPE, text, len);
}

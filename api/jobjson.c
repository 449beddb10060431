/* jobjson: struct job, struct item and a circuit as the API shows them.
 * Every field of the objects is always present (null when unknown), so
 * clients never test for absent keys; internal fields (seq, idempotency
 * key, request hash, requested filename, lease) are never shown. Circuit
 * states and a running job's live progress come from a scheduler
 * snapshot. */
#include "autoconfig.h"

#include <math.h>
#include <string.h>

#include "api/jobjson.h"
#include "common/clock.h"

/* jansson steals a NULL argument to json_*_set_new as an error, so every
 * builder below returns NULL when any part failed. */

json_t *jobjson_time(int64_t wall_ms)
{
        char buf[40];
        if (wall_ms == 0)
                return json_null();
        return json_string(clock_format_rfc3339(wall_ms, buf, sizeof(buf)));
}

json_t *jobjson_error(const struct job_error *e)
{
        if (!e->code)
                return json_null();
        return json_pack("{s:s, s:s}", "code", e->code, "message", e->message ? e->message : "");
}

static json_t *string_or_null(const char *s) { return s ? json_string(s) : json_null(); }

/* Whole seconds as an integer (300), others as a real (0.5). */
static json_t *seconds(double s)
{
        if (s == floor(s) && fabs(s) < 1e15)
                return json_integer((json_int_t)s);
        return json_real(s);
}

double jobjson_percent(const struct progress *p)
{
        if (p->total <= 0)
                return 0.0;
        double done = (double)(p->succeeded + p->failed + p->skipped);
        return round(done * 1000.0 / (double)p->total) / 10.0;
}

static json_t *int_or_null(int64_t v) { return v < 0 ? json_null() : json_integer((json_int_t)v); }

json_t *jobjson_live(const struct job_live *l)
{
        const struct progress *p = &l->progress;
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o, s:I, s:o}", "total",
                         (json_int_t)p->total, "pending", (json_int_t)p->pending, "running",
                         (json_int_t)p->running, "succeeded", (json_int_t)p->succeeded, "failed",
                         (json_int_t)p->failed, "skipped", (json_int_t)p->skipped, "bytes",
                         (json_int_t)p->bytes, "percent", jobjson_percent(p), "bytes_expected",
                         int_or_null(l->bytes_expected), "speed_bps", (json_int_t)l->speed_bps, "eta_s",
                         l->eta_s < 0 ? json_null() : json_real(round(l->eta_s * 10.0) / 10.0));
}

json_t *jobjson_progress(const struct job *j)
{
        struct job_live l = {.progress = j->progress, .bytes_expected = -1, .eta_s = -1};
        if (job_state_is_terminal(j->state))
                l.bytes_expected = j->progress.bytes; /* nothing more comes */
        return jobjson_live(&l);
}

const char *jobjson_circuit_state(enum breaker_state st) { return breaker_state_to_string(st); }

json_t *jobjson_per_source(const struct job_source *s, const struct snapshot *snap, bool *all_closed)
{
        const struct src_info *c = snap ? snapshot_circuit(snap, s->source) : NULL;
        enum breaker_state st = c ? c->state : BREAKER_CLOSED;
        if (st != BREAKER_CLOSED)
                *all_closed = false;
        return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o, s:i, s:o}", "source",
                         s->source, "state", source_state_to_string(s->state), "items", (json_int_t)s->items,
                         "succeeded", (json_int_t)s->succeeded, "failed", (json_int_t)s->failed, "skipped",
                         (json_int_t)s->skipped, "attempts", (json_int_t)s->attempts, "retries",
                         (json_int_t)s->retries, "bytes", (json_int_t)s->bytes, "circuit",
                         jobjson_circuit_state(st), "error", jobjson_error(&s->error), "pages", s->pages,
                         "listing", string_or_null(s->listing));
}

static json_t *string_array(char *const *v, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++)
                if (json_array_append_new(a, json_string(v[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

/* A limit of the job's own: seconds, or null when it is not set. */
static json_t *limit(double s) { return s > 0 ? seconds(s) : json_null(); }

json_t *jobjson_job(const struct job *j, const struct snapshot *snap, bool *ret_all_closed)
{
        const struct snapshot_job *sj = snap && j->state == JOB_RUNNING ? snapshot_job(snap, j->id) : NULL;
        bool all_closed = snap != NULL;
        json_t *per = json_array();

        size_t shown = j->nper_source < JOB_PER_SOURCE_HEAD ? j->nper_source : JOB_PER_SOURCE_HEAD;
        size_t total = j->per_source_total > j->nper_source ? j->per_source_total : j->nper_source;

        for (size_t i = 0; per && i < shown; i++)
                if (json_array_append_new(per, jobjson_per_source(&j->per_source[i], snap, &all_closed)) <
                    0) {
                        json_decref(per);
                        per = NULL;
                }
        if (!per)
                return NULL;
        if (ret_all_closed)
                *ret_all_closed = all_closed;
        json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:i, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                              "id", j->id, "state", job_state_to_string(j->state), "query",
                              string_or_null(j->query), "sources", string_array(j->sources, j->nsources),
                              "max", j->max, "label", j->label ? j->label : "", "priority", j->priority,
                              "timeout", seconds(j->timeout), "created_at", jobjson_time(j->created_at),
                              "started_at", jobjson_time(j->started_at), "finished_at",
                              jobjson_time(j->finished_at), "deadline_at", jobjson_time(j->deadline_at),
                              "progress", sj ? jobjson_live(&sj->live) : jobjson_progress(j), "per_source",
                              per, "error", jobjson_error(&j->error));
        if (o && json_object_update_new(o, json_pack("{s:I, s:o, s:o, s:o, s:o}", "per_source_total",
                                                     (json_int_t)total, "source_timeout",
                                                     limit(j->limits.source_timeout), "request_timeout",
                                                     limit(j->limits.request_timeout), "stall_timeout",
                                                     limit(j->limits.stall_timeout), "max_retries",
                                                     int_or_null(j->limits.max_retries))) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

json_t *jobjson_item(const struct item *it, const struct item_live *live)
{
        int64_t bytes = live ? live->bytes : it->bytes;
        int64_t expected = live ? live->bytes_expected : it->state == ITEM_SUCCEEDED ? it->bytes : -1;
        int64_t speed = live ? live->speed_bps : it->speed_bps;
        json_t *o =
                json_pack("{s:i, s:s, s:s, s:s, s:i, s:o, s:I, s:o, s:o, s:o, s:o, s:I, s:I, s:o}", "index",
                          it->index, "source", it->source ? it->source : "", "url", it->url ? it->url : "",
                          "state", item_state_to_string(it->state), "attempts", it->attempts, "http_status",
                          it->http_status ? json_integer(it->http_status) : json_null(), "bytes",
                          (json_int_t)bytes, "bytes_expected", int_or_null(expected), "content_type",
                          string_or_null(it->content_type), "path", string_or_null(it->path), "sha256",
                          string_or_null(it->sha256), "duration_ms", (json_int_t)it->duration_ms,
                          "speed_bps", (json_int_t)speed, "error", jobjson_error(&it->error));
        if (o && (json_object_set_new(o, "resumed_from", json_integer((json_int_t)it->resumed_from)) < 0 ||
                  (it->node && *it->node && json_object_set_new(o, "node", json_string(it->node)) < 0))) {
                json_decref(o);
                return NULL;
        }
        return o;
}

/* ---- circuits ------------------------------------------------------------ */

/* A monotonic time of the snapshot's scheduler as wall time; 0: null. */
static int64_t wall_of(const struct snapshot *snap, int64_t mono_ms)
{
        if (mono_ms == 0 || !snap)
                return 0;
        return snap->wall_ms + (mono_ms - snap->mono_ms);
}

json_t *jobjson_circuit(const struct src_info *c, const struct snapshot *snap)
{
        return json_pack("{s:s, s:s, s:i, s:i, s:I, s:o, s:o, s:f, s:o}", "source", c->name, "state",
                         jobjson_circuit_state(c->state), "consecutive_failures", c->consecutive_failures,
                         "threshold", c->threshold, "trips", (json_int_t)c->trips, "opened_at",
                         jobjson_time(wall_of(snap, c->opened_at_ms)), "retry_at",
                         jobjson_time(c->state == BREAKER_CLOSED ? 0 : wall_of(snap, c->retry_at_ms)),
                         "open_s", (double)c->open_ms / 1000.0, "last_error",
                         c->last_error ? json_string(c->last_error) : json_null());
}

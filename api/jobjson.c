/* jobjson: struct job, struct item and a circuit as the API shows them.
 * Every field of the spec's objects is always present (null when unknown),
 * so clients never test for absent keys; internal fields (seq, idempotency
 * key, request hash, requested filename) are never shown. A job's circuit
 * states come from the caller (jobjson_opts), or from one sched_circuits()
 * snapshot in jobjson_job_now(). */
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

json_t *jobjson_progress(const struct progress *p)
{
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "total", (json_int_t)p->total,
                         "pending", (json_int_t)p->pending, "running", (json_int_t)p->running, "succeeded",
                         (json_int_t)p->succeeded, "failed", (json_int_t)p->failed, "skipped",
                         (json_int_t)p->skipped, "bytes", (json_int_t)p->bytes, "percent",
                         jobjson_percent(p));
}

static json_t *per_source(const struct job_source *s, const struct jobjson_opts *opts)
{
        const char *circuit = NULL;
        if (opts && opts->circuit)
                circuit = opts->circuit(s->source, opts->userdata);
        return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o}", "source", s->source,
                         "state", source_state_to_string(s->state), "items", (json_int_t)s->items,
                         "succeeded", (json_int_t)s->succeeded, "failed", (json_int_t)s->failed, "skipped",
                         (json_int_t)s->skipped, "attempts", (json_int_t)s->attempts, "retries",
                         (json_int_t)s->retries, "bytes", (json_int_t)s->bytes, "circuit",
                         circuit ? circuit : "closed", "error", jobjson_error(&s->error));
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

json_t *jobjson_job(const struct job *j, const struct jobjson_opts *opts)
{
        json_t *per = json_array();
        for (size_t i = 0; per && i < j->nper_source; i++)
                if (json_array_append_new(per, per_source(&j->per_source[i], opts)) < 0) {
                        json_decref(per);
                        per = NULL;
                }
        if (!per)
                return NULL;
        return json_pack(
                "{s:s, s:s, s:o, s:o, s:i, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", j->id,
                "state", job_state_to_string(j->state), "query", string_or_null(j->query), "sources",
                string_array(j->sources, j->nsources), "max", j->max, "label", j->label ? j->label : "",
                "priority", j->priority, "timeout", seconds(j->timeout), "created_at",
                jobjson_time(j->created_at), "started_at", jobjson_time(j->started_at), "finished_at",
                jobjson_time(j->finished_at), "deadline_at", jobjson_time(j->deadline_at), "progress",
                jobjson_progress(&j->progress), "per_source", per, "error", jobjson_error(&j->error));
}

json_t *jobjson_item(const struct item *it)
{
        return json_pack("{s:i, s:s, s:s, s:s, s:i, s:o, s:I, s:o, s:o, s:o, s:I, s:I, s:o}", "index",
                         it->index, "source", it->source ? it->source : "", "url", it->url ? it->url : "",
                         "state", item_state_to_string(it->state), "attempts", it->attempts, "http_status",
                         it->http_status ? json_integer(it->http_status) : json_null(), "bytes",
                         (json_int_t)it->bytes, "content_type", string_or_null(it->content_type), "path",
                         string_or_null(it->path), "sha256", string_or_null(it->sha256), "duration_ms",
                         (json_int_t)it->duration_ms, "speed_bps", (json_int_t)it->speed_bps, "error",
                         jobjson_error(&it->error));
}

/* ---- circuits ------------------------------------------------------------ */

const char *jobjson_circuit_state(const char *source, void *userdata)
{
        const struct circuit_list *cl = userdata;
        for (size_t i = 0; cl && i < cl->n; i++)
                if (strcmp(cl->v[i].source, source) == 0)
                        return cl->v[i].state;
        return NULL;
}

json_t *jobjson_job_now(struct sched *sched, const struct job *j)
{
        struct circuit_list cl = {0};
        struct jobjson_opts opts = {.circuit = jobjson_circuit_state, .userdata = &cl};

        if (sched_circuits(sched, &cl.v, &cl.n) < 0)
                cl = (struct circuit_list){0};
        json_t *o = jobjson_job(j, &opts);
        circuit_infos_free(cl.v, cl.n);
        return o;
}

json_t *jobjson_circuit(const struct circuit_info *c)
{
        return json_pack("{s:s, s:s, s:i, s:i, s:I, s:o, s:o, s:o}", "source", c->source, "state", c->state,
                         "consecutive_failures", c->consecutive_failures, "threshold", c->threshold, "trips",
                         (json_int_t)c->trips, "opened_at", jobjson_time(c->opened_at), "retry_at",
                         jobjson_time(c->retry_at), "last_error",
                         c->last_error ? json_string(c->last_error) : json_null());
}

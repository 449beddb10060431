/* The JSON shapes of the API's job, item, progress and circuit objects
 * (see docs/api.md). Pure but for jobjson_job_now(), which asks the
 * scheduler for its circuits: the caller supplies anything not in the
 * structs. json_t * returns: a new reference, NULL when out of memory. */
#pragma once
#include <jansson.h>

#include "daemon/job.h"
#include "daemon/sched.h"

/* json_dumps flags for API answers: compact, and reals such as a percent
 * of 33.3 printed as 33.3 rather than 33.299999999999997. */
#define JOBJSON_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

struct jobjson_opts {
        /* State of a source's circuit: "closed", "open" or "half_open".
         * NULL, or a NULL answer: "closed". */
        const char *(*circuit)(const char *source, void *userdata);
        void *userdata;
};

/* opts may be NULL. */
json_t *jobjson_job(const struct job *j, const struct jobjson_opts *opts);
json_t *jobjson_item(const struct item *it);
json_t *jobjson_progress(const struct progress *p);
/* null, or {"code","message"}. */
json_t *jobjson_error(const struct job_error *e);
/* RFC 3339 UTC string, null for 0. */
json_t *jobjson_time(int64_t wall_ms);
/* (succeeded + failed + skipped) / total * 100 rounded to 0.1; 0 when total is 0. */
double jobjson_percent(const struct progress *p);

/* A sched_circuits() snapshot. */
struct circuit_list {
        struct circuit_info *v;
        size_t n;
};
/* The state of source's circuit in a struct circuit_list (userdata), NULL
 * when it is not listed: a jobjson_opts.circuit. */
const char *jobjson_circuit_state(const char *source, void *userdata);
/* The job with the circuits the scheduler knows now (all "closed" when it
 * cannot tell). */
json_t *jobjson_job_now(struct sched *sched, const struct job *j);
/* One circuit as GET /v1/circuits lists it. */
json_t *jobjson_circuit(const struct circuit_info *c);

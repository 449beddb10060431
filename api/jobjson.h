/* The JSON shapes of the API's job, item, progress and circuit objects
 * (see docs/api.md). Pure: what is not in the structs comes from a
 * scheduler snapshot the caller holds (circuit states, a running job's
 * live bytes). json_t * returns: a new reference, NULL when out of memory. */
#pragma once
#include <jansson.h>
#include <stdbool.h>

#include "daemon/job.h"
#include "daemon/snapshot.h"

/* json_dumps flags for API answers: compact, and reals such as a percent
 * of 33.3 printed as 33.3 rather than 33.299999999999997. */
#define JOBJSON_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* The job object. snap (may be NULL) gives its sources' circuit states
 * ("closed" when not known) and, while it runs, its live progress. It
 * shows the first JOB_PER_SOURCE_HEAD entries of per_source and their
 * number in per_source_total (GET /v1/jobs/{id}/sources lists them all).
 * *ret_all_closed (may be NULL): every one of the circuits shown was closed. */
json_t *jobjson_job(const struct job *j, const struct snapshot *snap, bool *ret_all_closed);
/* One per_source entry; clears *all_closed when its circuit is not closed. */
json_t *jobjson_per_source(const struct job_source *s, const struct snapshot *snap, bool *all_closed);
/* The item object; live (may be NULL) are its bytes while in flight. */
json_t *jobjson_item(const struct item *it, const struct item_live *live);
/* The progress object of a running job. */
json_t *jobjson_live(const struct job_live *l);
/* The progress object of a job as stored. */
json_t *jobjson_progress(const struct job *j);
/* null, or {"code","message"}. */
json_t *jobjson_error(const struct job_error *e);
/* RFC 3339 UTC string, null for 0. */
json_t *jobjson_time(int64_t wall_ms);
/* (succeeded + failed + skipped) / total * 100 rounded to 0.1; 0 when total is 0. */
double jobjson_percent(const struct progress *p);
/* One circuit as GET /v1/circuits lists it (times from snap's clocks). */
json_t *jobjson_circuit(const struct src_info *c, const struct snapshot *snap);
const char *jobjson_circuit_state(enum breaker_state st);

/* POST /v1/jobs bodies: parse and validate a request into a job and its
 * items, and count them into the job's progress and per_source. Pure: no
 * HTTP, no store, no clock; the handler fills id, times and state.
 * int returns: 0 ok, -EINVAL invalid request (the problem "errors" array
 * in *ret_errors), -ENOMEM. ret_* are written only as stated. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/job.h"

#define JOB_REQUEST_MAX_DEPTH    32      /* deepest JSON nesting accepted; the top-level object is 1 */
#define JOB_REQUEST_FILENAME_MAX 1024    /* bytes of a requested filename (the engine sanitizes it) */
#define JOB_TIMEOUT_MIN          1.0     /* s */
#define JOB_TIMEOUT_MAX          86400.0 /* s */
#define JOB_PRIORITY_MIN         -10
#define JOB_PRIORITY_MAX         10

/* Hooks into modules the parser must not depend on. */
struct job_request_hooks {
        /* Is name a configured query source? Checks sources[] (an unknown
         * one is refused) and urls[].source labels (one naming a query
         * source is refused). NULL: every name is, and labels go unchecked. */
        bool (*source_known)(const char *name, void *userdata);
        /* The most characters a query may have for the query source name
         * (its max_query_length), 0 when it sets no limit or is unknown.
         * NULL: no source limits the query beyond JOB_QUERY_MAX. A longer
         * query is refused with an error naming "query". */
        int (*source_max_query_length)(const char *name, void *userdata);
        void *userdata;
};

/* Parse body with the default hooks. On 0: *ret_job has query, sources,
 * max (default JOB_DEFAULT_MAX), timeout (0: not given, the caller uses
 * GLOBAL_JOB_TIMEOUT), priority, label ("" when not given); *ret_items the
 * URL items (index 0..n-1, pending; a URL repeating an earlier one of the
 * same job is skipped with error "duplicate"), *ret_n their count (0 and
 * NULL for query-only jobs). On -EINVAL: *ret_errors only. */
int job_request_parse(const char *body, size_t len, struct job **ret_job, struct item **ret_items,
                      size_t *ret_n, json_t **ret_errors);
int job_request_parse_with(const struct job_request_hooks *hooks, const char *body, size_t len,
                           struct job **ret_job, struct item **ret_items, size_t *ret_n,
                           json_t **ret_errors);

/* Fill job->progress (total, pending, skipped) and job->per_source (each
 * query source, then each distinct item source in order of appearance,
 * state pending, items/skipped counted) from items. Replaces any earlier
 * per_source. */
int job_request_tally(struct job *job, const struct item *items, size_t n);

/* Is name usable as a source (1..SOURCE_NAME_MAX bytes, no '/', no
 * control characters, not "." or "..")? */
bool job_request_source_name_ok(const char *name);

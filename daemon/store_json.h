/* JSON text of a job's list and options columns, shared by store backends.
 * int returns: 0 ok, -errno (-ENOMEM, -EINVAL a bad enum on encode, -EIO
 * text that does not decode); ret_* written only on success. */
#pragma once
#include <stddef.h>

#include "daemon/job.h"

/* j->sources as a JSON array; *ret NULL when there are none. */
int store_json_encode_sources(const struct job *j, char **ret);
/* j->per_source as a JSON array; *ret NULL when there are none. */
int store_json_encode_per_source(const struct job *j, char **ret);
/* Entries [from, to) of j->per_source (to capped at their number); *ret
 * NULL when that is none. */
int store_json_encode_per_source_range(const struct job *j, size_t from, size_t to, char **ret);
/* The job table keeps per_source in two parts: the first
 * JOB_PER_SOURCE_HEAD entries (read with the job) and the rest (read only
 * by store_job_per_source()). -EINVAL for a job read as a view (it has
 * fewer entries than per_source_total). */
int store_json_encode_per_source_split(const struct job *j, char **ret_head, char **ret_rest);
/* text NULL: no sources (*ret NULL, *ret_n 0). */
int store_json_decode_sources(const char *text, char ***ret, size_t *ret_n);
int store_json_decode_per_source(const char *text, struct job_source **ret, size_t *ret_n);
/* The head and the rest (either may be NULL) as one array. */
int store_json_decode_per_source_parts(const char *head, const char *rest, struct job_source **ret,
                                       size_t *ret_n);
/* j->limits as a JSON object of the fields that are set; *ret NULL when
 * none is. -EINVAL for a negative or non-finite timeout, or max_retries
 * below -1. */
int store_json_encode_options(const struct job_limits *l, char **ret);
/* text NULL: nothing set (JOB_LIMITS_UNSET). Unknown keys are ignored. */
int store_json_decode_options(const char *text, struct job_limits *ret);

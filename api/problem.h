/* Problem details (RFC 9457) for every API error, built as JSON only: the
 * HTTP side (status line, Content-Type application/problem+json,
 * Retry-After) is reply.c's. Pure; no microhttpd here.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <jansson.h>

#define PROBLEM_MAX_ERRORS   100 /* validation errors kept per answer; more are dropped */
#define PROBLEM_TEXT_MAX     255 /* bytes of one field name or message; longer ones are cut */
#define PROBLEM_CONTENT_TYPE "application/problem+json"

/* The reason phrase of status ("Not Found"), "Error" when unknown. */
const char *problem_title(unsigned status);

/* {"type":"about:blank","title":...,"status":N,"detail":detail} with
 * "errors" when errors is non-NULL (stolen, also on failure). NULL when
 * out of memory. */
json_t *problem_new(unsigned status, const char *detail, json_t *errors);

/* Append {"field":field,"message":...} to the array errors, once it holds
 * fewer than PROBLEM_MAX_ERRORS entries (field and message cut to
 * PROBLEM_TEXT_MAX bytes on a UTF-8 boundary). -ENOMEM. */
int problem_error_add(json_t *errors, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

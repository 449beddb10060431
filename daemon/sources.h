/* Query sources: the SOURCES_DIR/NAME.json files that describe how a search
 * API turns a query into media URLs (docs/sources.md). Pure: no network, no
 * logging, no clock; the caller logs errors and owns the time.
 * int returns: 0 ok, -errno on failure; ret_* written only on success. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/jsonptr.h"
#include "daemon/ratelimit.h" /* paces requests_per_second */

#define SOURCES_FILE_MAX         (64 * 1024) /* bytes of one NAME.json */
#define SOURCES_MAX_FILES        256         /* *.json files in SOURCES_DIR */
#define SOURCES_NAME_MAX         64          /* chars of a source name */
#define SOURCES_TEMPLATE_MAX     2048        /* bytes of search_url and of a header value */
#define SOURCES_POINTER_MAX      JSONPTR_MAX /* bytes of a JSON Pointer */
#define SOURCES_MAX_HEADERS      32
#define SOURCES_HEADER_NAME_MAX  64
#define SOURCES_HEADER_LINE_MAX  8192 /* bytes of one expanded "Name: value" */
#define SOURCES_ENV_NAME_MAX     128  /* chars of NAME in {env:NAME} */
#define SOURCES_DEFAULT_PER_PAGE 20
#define SOURCES_PER_PAGE_MAX     1000
#define SOURCES_CONNECTIONS_MAX  1000
#define SOURCES_RPS_MAX          1000.0
#define SOURCES_PAGE_BODY_MAX    (8 * 1024 * 1024) /* bytes of one listing page */
#define SOURCES_PAGE_ITEMS_MAX   10000             /* URLs taken from one page; the rest ignored */

struct source_header {
        char *name;  /* field name, RFC 9110 token chars */
        char *value; /* template: literal text and {env:NAME} */
};

struct source_def {
        char *name;               /* 1..64 of [A-Za-z0-9._-], not starting with '.'; the file stem */
        char *path;               /* the file it came from */
        char *search_url;         /* template: {query} {page} {per_page} {offset} {start} {env:NAME} */
        bool paged;               /* search_url has {page}, {offset} or {start}; else one page only */
        int per_page;             /* results asked per page, 1..1000 */
        char *items;              /* JSON Pointer to the results (array or object) of one page */
        char *url;                /* JSON Pointer to the URL inside one result */
        bool allow_missing_items; /* `items` absent from a page means an empty page, not an error */
        struct source_header *headers;
        size_t nheaders;
        int max_connections;        /* 1..1000; 0: MAX_CONNECTIONS_PER_SOURCE */
        double requests_per_second; /* listing requests per second, (0, 1000]; 0: unlimited */
        bool available;             /* false when an {env:NAME} it uses is unset or empty at load */
        char *unavailable_reason;   /* NULL when available */
};

/* Where loading failed. file is the path ("" when the directory itself
 * failed), field the top-level key ("headers.NAME" for a header; "" when
 * the file as a whole is bad). */
struct sources_error {
        char file[512];
        char field[128];
        char message[256];
};

struct source_set;

/* Load every regular *.json file of dir (names starting with '.' and other
 * files ignored), sorted by name. A missing dir is an empty set. The first
 * bad file fails the whole load: -EINVAL (bad content), -EFBIG (file over
 * SOURCES_FILE_MAX), -E2BIG (over SOURCES_MAX_FILES) or an I/O -errno;
 * *ret_err (may be NULL) then says where. getenv() decides `available`. */
int sources_load_dir(const char *dir, struct source_set **ret, struct sources_error *ret_err);
/* Load one file; NAME is its file name without ".json". */
int sources_load_file(const char *path, struct source_def **ret, struct sources_error *ret_err);
void sources_free(struct source_set *set);
void source_def_free(struct source_def *d);
/* NULL when no source has that name (case-sensitive). */
const struct source_def *sources_find(const struct source_set *set, const char *name);
size_t sources_count(const struct source_set *set);
const struct source_def *sources_at(const struct source_set *set, size_t i); /* sorted by name */

/* The listing URL of page (1-based): {query} and {env:NAME} values
 * percent-encoded (RFC 3986 unreserved kept), {offset} = (page-1)*per_page,
 * {start} = offset+1. -EINVAL page < 1, -ENOKEY a secret is unset now,
 * -E2BIG longer than JOB_URL_MAX. */
int sources_build_url(const struct source_def *d, const char *query, int page, char **ret);
/* The same with every {env:NAME} shown as "***" (set or not): for logs,
 * job errors and the API, which must never show a secret. */
int sources_build_url_redacted(const struct source_def *d, const char *query, int page, char **ret);
/* The request headers as "Name: value" strings, {env:NAME} expanded raw.
 * -EINVAL a secret holds a control character (CR, LF, ...), -ENOKEY a
 * secret is unset now, -E2BIG a line over SOURCES_HEADER_LINE_MAX.
 * *ret is NULL when there are none; free with sources_strv_free(). */
int sources_build_headers(const struct source_def *d, char ***ret, size_t *ret_n);
void sources_strv_free(char **v, size_t n);

/* URLs of one listing page, in the order of the results: `items` of the body
 * (array, or object whose values are taken in order), then `url` in each
 * result; results without a string http(s) URL (at most JOB_URL_MAX bytes)
 * are skipped, and only the first SOURCES_PAGE_ITEMS_MAX are taken.
 * n == 0 (and *ret_urls NULL) ends the listing. -EBADMSG the body is not
 * JSON or `items` is missing (unless allow_missing_items) or neither array
 * nor object; -EFBIG len over SOURCES_PAGE_BODY_MAX. Free with
 * sources_strv_free(). */
int sources_parse_page(const struct source_def *d, const char *body, size_t len, char ***ret_urls,
                       size_t *ret_n);

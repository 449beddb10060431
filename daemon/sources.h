/* Query sources: the SOURCES_DIR/NAME.json files that describe how a search
 * API turns a query into media URLs (docs/sources.md). Pure: no network, no
 * logging, no clock; the caller logs errors and owns the time. getenv() is
 * the only outside state read (secrets, at load and when requests are built).
 * int returns: 0 ok, -errno on failure; ret_* written only on success. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/ratelimit.h" /* paces requests_per_second */

#define SOURCES_FILE_MAX           (64 * 1024) /* bytes of one NAME.json */
#define SOURCES_MAX_FILES          256         /* *.json files in SOURCES_DIR */
#define SOURCES_NAME_MAX           64          /* chars of a source name */
#define SOURCES_TEMPLATE_MAX       2048        /* bytes of search_url and of a header value */
#define SOURCES_POINTER_MAX        1024        /* bytes of a JSON Pointer (common/jsonptr's JSONPTR_MAX) */
#define SOURCES_MAX_HEADERS        32
#define SOURCES_HEADER_NAME_MAX    64
#define SOURCES_HEADER_LINE_MAX    8192 /* bytes of one expanded "Name: value" */
#define SOURCES_ENV_NAME_MAX       128  /* chars of NAME in {env:NAME} and {env?:NAME} */
#define SOURCES_DEFAULT_PER_PAGE   20
#define SOURCES_PER_PAGE_MAX       1000
#define SOURCES_CONNECTIONS_MAX    1000
#define SOURCES_RPS_MAX            1000.0
#define SOURCES_MAX_PAGES_MAX      10000  /* largest max_pages */
#define SOURCES_MAX_RESULTS_MAX    100000 /* largest max_results */
#define SOURCES_QUERY_LENGTH_MAX   256    /* largest max_query_length (characters; JOB_QUERY_MAX) */
#define SOURCES_END_STATUS_MAX     16     /* entries of end_status */
#define SOURCES_DOWNLOAD_HOSTS_MAX 32     /* entries of download_hosts */
#define SOURCES_HOST_MAX           253    /* bytes of one download_hosts entry */
#define SOURCES_PAGE_BODY_MAX      (8 * 1024 * 1024) /* bytes of one listing page */
#define SOURCES_PAGE_ITEMS_MAX     10000             /* URLs taken from one page; the rest ignored */

struct source_header {
        char *name;  /* field name, RFC 9110 token chars */
        char *value; /* template: literal text, {env:NAME} and {env?:NAME} */
};

struct source_def {
        char *name;               /* 1..64 of [A-Za-z0-9._-], not starting with '.'; the file stem */
        char *path;               /* the file it came from */
        char *search_url;         /* template: {query} {page} {per_page} {offset} {start} {env:NAME} */
        bool paged;               /* search_url has {page}, {offset} or {start}; else one page only */
        int per_page;             /* results asked per page, 1..1000 */
        char *items;              /* JSON Pointer to the results (array or object) of one page */
        char *url;                /* JSON Pointer to the URL inside one result */
        char *total;              /* JSON Pointer to the total result count of a page; NULL: none */
        bool allow_missing_items; /* `items` absent from a page means an empty page, not an error */
        struct source_header *headers;
        size_t nheaders;
        char **download_hosts;  /* lower-case host names, or "*.suffix" for any subdomain of suffix:
                                 * downloads from them carry `headers` too */
        size_t ndownload_hosts; /* 0..SOURCES_DOWNLOAD_HOSTS_MAX */
        int end_status[SOURCES_END_STATUS_MAX]; /* HTTP statuses (400..499) meaning "past the last page" */
        size_t nend_status;
        int max_pages;              /* 1..10000 pages listed at most; 0: no limit */
        int max_results;            /* 1..100000: no page starting past this result is listed; 0: none */
        int max_query_length;       /* 1..256 characters of a job's query; 0: JOB_QUERY_MAX only */
        int max_connections;        /* 1..1000; 0: MAX_CONNECTIONS_PER_SOURCE */
        double requests_per_second; /* listing requests per second, (0, 1000]; 0: unlimited */
        bool available;             /* false when a required {env:NAME} is unset or empty at load */
        char *unavailable_reason;   /* NULL when available */
};

/* Where loading failed. file is the path ("" when the directory itself
 * failed), field the top-level key ("headers.NAME" for a header,
 * "download_hosts[2]" for a list entry; "" when the file as a whole is
 * bad). */
struct sources_error {
        char file[512];
        char field[128];
        char message[256];
};

struct source_set;

/* ---- loading ------------------------------------------------------------ */

/* Load every regular *.json file of dir (names starting with '.' and other
 * files ignored), sorted by name; NAME is a file's name without ".json". A
 * missing dir is an empty set. The first bad file fails the whole load:
 * -EINVAL (bad content), -EFBIG (file over SOURCES_FILE_MAX), -E2BIG (over
 * SOURCES_MAX_FILES) or an I/O -errno; *ret_err (may be NULL) then says
 * where. getenv() decides `available`. */
int sources_load_dir(const char *dir, struct source_set **ret, struct sources_error *ret_err);
void sources_free(struct source_set *set);
/* NULL when no source has that name (case-sensitive). */
const struct source_def *sources_find(const struct source_set *set, const char *name);
size_t sources_count(const struct source_set *set);
const struct source_def *sources_at(const struct source_set *set, size_t i); /* sorted by name */

/* ---- requests ----------------------------------------------------------- */

/* Does query fit d's max_query_length (counted in Unicode characters of
 * its UTF-8, as JOB_QUERY_MAX is)? Always true without one. */
bool sources_query_fits(const struct source_def *d, const char *query);
/* The last page that may be listed: 1 for a source without paging, else
 * the least of max_pages and the last page starting at or before
 * max_results ((page-1)*per_page < max_results); INT_MAX without limits. */
int sources_last_page(const struct source_def *d);

/* The listing URL of page (1-based): {query} and {env:NAME} values
 * percent-encoded (RFC 3986 unreserved kept), {offset} = (page-1)*per_page,
 * {start} = offset+1. -EINVAL page < 1, -ERANGE page past
 * sources_last_page() (a page beyond max_pages or starting past
 * max_results is never built), -EMSGSIZE the query is longer than
 * max_query_length, -ENOKEY a secret is unset now, -E2BIG longer than
 * JOB_URL_MAX. */
int sources_build_url(const struct source_def *d, const char *query, int page, char **ret);
/* The same with every {env:NAME} shown as "***" (set or not): for logs,
 * job errors and the API, which must never show a secret. */
int sources_build_url_redacted(const struct source_def *d, const char *query, int page, char **ret);
/* The request headers of a listing request as "Name: value" strings,
 * {env:NAME} and {env?:NAME} expanded raw; a header with an {env?:NAME}
 * that is unset or empty now is left out. -EINVAL a secret holds a control
 * character (CR, LF, ...), -ENOKEY a required secret is unset now, -E2BIG a
 * line over SOURCES_HEADER_LINE_MAX. *ret is NULL (and *ret_n 0) when there
 * are none; free with sources_strv_free(). A "User-Agent" among them
 * replaces USER_AGENT for the request. */
int sources_build_headers(const struct source_def *d, char ***ret, size_t *ret_n);
/* The headers for downloading url, an item of source d: those of
 * sources_build_headers() when url's host (parsed by libcurl's URL API,
 * ASCII case ignored, one trailing dot dropped; userinfo and port do not
 * matter) is in d's download_hosts, where "*.example.org" matches
 * a.example.org and a.b.example.org but not example.org; else none (*ret
 * NULL, *ret_n 0). Headers never go to any other host. -EINVAL url is not
 * an absolute http(s) URL libcurl can parse; otherwise the errors of
 * sources_build_headers(). */
int sources_download_headers(const struct source_def *d, const char *url, char ***ret, size_t *ret_n);
/* Is url's host one of d's download_hosts (matched as above)? false for a
 * URL libcurl cannot parse. */
bool sources_is_download_host(const struct source_def *d, const char *url);
/* Is url's host the source's own: one of its download_hosts, or the host
 * of its search_url? Its
 * downloads from there count under the source, in its statistics and
 * against its circuit. */
bool sources_is_own_host(const struct source_def *d, const char *url);
void sources_strv_free(char **v, size_t n);

/* ---- listing pages ------------------------------------------------------ */

/* One parsed listing page. */
struct sources_page {
        char **urls;    /* media URLs in the order of the results; NULL when n == 0 */
        size_t n;       /* entries of urls, at most SOURCES_PAGE_ITEMS_MAX */
        size_t results; /* entries of `items`, with or without a usable URL; 0: an empty page */
        int64_t total;  /* the page's `total`: -1 when the source has none or the page lacks it */
};

/* Parse one listing page (a 2xx body): `items` of the body (array, or
 * object whose values are taken in order), then `url` in each result;
 * results without a string http(s) URL (at most JOB_URL_MAX bytes) are
 * skipped, and only the first SOURCES_PAGE_ITEMS_MAX are taken. `total`
 * counts when it is a non-negative JSON integer or a string of 1..18
 * decimal digits (Google sends "12300"); anything else is -1. -EBADMSG the
 * body is not JSON or `items` is missing (unless allow_missing_items) or
 * neither array nor object; -EFBIG len over SOURCES_PAGE_BODY_MAX. Free
 * with sources_page_clear(). */
int sources_parse_listing(const struct source_def *d, const char *body, size_t len,
                          struct sources_page *ret);
/* Free p's URLs and zero it; p may be NULL. */
void sources_page_clear(struct sources_page *p);
/* sources_parse_listing() keeping only the URLs: n == 0 (and *ret_urls
 * NULL) for a page without any. Free with sources_strv_free(). */
int sources_parse_page(const struct source_def *d, const char *body, size_t len, char ***ret_urls,
                       size_t *ret_n);

/* Is http_status, the answer to page, d's "past the last page" signal?
 * Only after the first page: page 1 is never past the end (an API answers
 * an empty page, or a real error such as a bad key, there). */
bool sources_end_status(const struct source_def *d, int page, int http_status);

/* What follows a listed page. */
enum sources_list_end {
        LIST_MORE,         /* the next page may be requested */
        LIST_EXHAUSTED,    /* the source has no more: an empty page, the total reached, or an
                            * end_status answer */
        LIST_SINGLE_PAGE,  /* search_url has no {page}, {offset} or {start} */
        LIST_PAGE_LIMIT,   /* max_pages pages listed */
        LIST_RESULT_LIMIT, /* max_results reached, or the next page would start past it */
        LIST_FAILED,       /* http_status is a failure, not an end: retries and errors apply */
};

/* Decide after page page_just_listed (1-based) of d answered http_status.
 * For a 2xx answer: n_on_page is the page's `results` (struct
 * sources_page), results_so_far the sum of `results` over pages 1..
 * page_just_listed, total the page's total (-1: none). Checked in this
 * order: an end_status answer or an empty page or the total reached
 * (results_so_far >= total, or page_just_listed * per_page >= total):
 * LIST_EXHAUSTED; no paging: LIST_SINGLE_PAGE; max_pages: LIST_PAGE_LIMIT;
 * max_results (results_so_far, or the next page's first position, past
 * it): LIST_RESULT_LIMIT; else LIST_MORE. Any answer that is neither 2xx
 * nor an end_status of that page: LIST_FAILED. Every value but LIST_MORE
 * and LIST_FAILED ends the listing cleanly. */
enum sources_list_end sources_listing_next(const struct source_def *d, int page_just_listed,
                                           int64_t results_so_far, int64_t total, size_t n_on_page,
                                           int http_status);
/* "more", "exhausted", "single_page", "page_limit", "result_limit",
 * "failed"; "unknown" for other values. */
const char *sources_list_end_to_string(enum sources_list_end e);

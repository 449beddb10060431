/* http: hauldctl's HTTP client, one libcurl easy handle reused for every
 * request of a run (so paging keeps its connection). int returns: 0 when an
 * answer came, whatever its status; -EHOSTUNREACH when no connection could
 * be made (resolve or connect failed); -ECANCELED when a data callback
 * stopped the transfer; -EFBIG when an answer is larger than
 * HTTP_ANSWER_MAX; -ENOMEM; -EIO for any other transport failure.
 * http_error() then says what failed. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define HTTP_ANSWER_MAX        (16 * 1024 * 1024) /* bytes of an answer body kept in memory */
#define HTTP_CONNECT_TIMEOUT_S 10                 /* to establish a connection */
#define HTTP_REQUEST_TIMEOUT_S 120                /* a whole ordinary request */
#define HTTP_STALL_TIMEOUT_S   60                 /* a stream or download that sends nothing this long */

struct http_client;

struct http_answer {
        long status;            /* HTTP status code */
        char *body;             /* NUL-terminated; for a streamed 200, NULL */
        size_t len;             /* bytes in body */
        char *content_type;     /* Content-Type, or NULL */
        char *disposition;      /* Content-Disposition, or NULL */
        char *www_authenticate; /* WWW-Authenticate, or NULL */
};

/* Called with each piece of a 2xx answer's body; a negative return stops
 * the transfer (the request then returns -ECANCELED). */
typedef int (*http_data_fn)(const char *data, size_t len, void *userdata);

/* url: http://HOST[:PORT][/PREFIX], https://..., or unix:/PATH (the API on
 * a unix socket). token: the bearer token, or NULL. -EINVAL: a bad url. */
int http_client_new(const char *url, const char *token, struct http_client **ret);
void http_client_free(struct http_client *c);

/* The transport failure of the last request, for messages. */
const char *http_error(const struct http_client *c);
/* The URL the client sends to (for messages). */
const char *http_base(const struct http_client *c);
/* Was a token given? */
bool http_has_token(const struct http_client *c);

/* method path (starting with /, already escaped) with an optional JSON body
 * and extra header lines ("Name: value", NULL-terminated list or NULL). */
int http_request(struct http_client *c, const char *method, const char *path, const char *json_body,
                 const char *const *headers, struct http_answer *ret);

/* GET path, handing a 2xx body to on_data as it arrives (no overall time
 * limit; HTTP_STALL_TIMEOUT_S of silence ends it). Other answers are kept
 * in ret->body as http_request does. */
int http_stream(struct http_client *c, const char *path, const char *const *headers, http_data_fn on_data,
                void *userdata, struct http_answer *ret);

void http_answer_clear(struct http_answer *a);

/* One path segment, percent-encoded (malloc'd), or NULL without memory. */
char *http_escape(const char *segment);

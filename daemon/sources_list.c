/* sources_list: what a listing page holds (its media URLs, how many
 * results it had, the total the API announces) and whether another page
 * may follow: the end of the results (an empty page, the total reached, an
 * end_status answer) or a limit of the source file (max_pages,
 * max_results).
 *
 * Pure: no I/O, no clock, no logging. jansson stays in here and in
 * sources.c; sources.h does not expose it. */
#include "autoconfig.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/jsonptr.h"
#include "daemon/job.h"
#include "daemon/sources.h"

#define TOTAL_DIGITS_MAX 18 /* a string total of more digits is not taken (int64_t) */

/* ---- one page ----------------------------------------------------------- */

/* http(s)://host..., no spaces or control characters, at most JOB_URL_MAX. */
static bool result_url_ok(const char *u, size_t len)
{
        size_t skip;

        if (len > JOB_URL_MAX)
                return false;
        if (!strncasecmp(u, "https://", 8))
                skip = 8;
        else if (!strncasecmp(u, "http://", 7))
                skip = 7;
        else
                return false;
        if (!u[skip] || strchr("/?#", u[skip]))
                return false;
        for (const unsigned char *p = (const unsigned char *)u; *p; p++)
                if (*p <= 0x20 || *p == 0x7f)
                        return false;
        return true;
}

/* Append result's URL to urls when it has an acceptable one. */
static int take_result(const struct source_def *d, json_t *result, char **urls, size_t *n)
{
        json_t *u = jsonptr_get(result, d->url);

        if (!json_is_string(u) || !result_url_ok(json_string_value(u), json_string_length(u)))
                return 0;
        if (!(urls[*n] = strdup(json_string_value(u))))
                return -ENOMEM;
        (*n)++;
        return 0;
}

static int take_results(const struct source_def *d, json_t *items, char **urls, size_t *n)
{
        const char *key;
        size_t i;
        json_t *v;
        int r = 0;

        if (json_is_array(items)) {
                json_array_foreach(items, i, v)
                {
                        if (r < 0 || *n == SOURCES_PAGE_ITEMS_MAX)
                                break;
                        r = take_result(d, v, urls, n);
                }
        } else {
                json_object_foreach(items, key, v)
                {
                        if (r < 0 || *n == SOURCES_PAGE_ITEMS_MAX)
                                break;
                        r = take_result(d, v, urls, n);
                }
        }
        return r;
}

/* The page's total: a non-negative integer, or a string of decimal digits. */
static int64_t page_total(const struct source_def *d, json_t *root)
{
        json_t *t = d->total ? jsonptr_get(root, d->total) : NULL;
        const char *s;
        size_t len;

        if (json_is_integer(t))
                return json_integer_value(t) >= 0 ? (int64_t)json_integer_value(t) : -1;
        if (!json_is_string(t))
                return -1;
        s = json_string_value(t);
        len = json_string_length(t);
        if (len < 1 || len > TOTAL_DIGITS_MAX || strspn(s, "0123456789") != len)
                return -1;
        return strtoll(s, NULL, 10);
}

int sources_parse_listing(const struct source_def *d, const char *body, size_t len, struct sources_page *ret)
{
        json_t *root, *items;
        char **urls = NULL;
        size_t n = 0, size;
        int r = -EBADMSG;

        if (len > SOURCES_PAGE_BODY_MAX)
                return -EFBIG;
        root = json_loadb(body, len, JSON_PRESERVE_ORDER, NULL);
        items = jsonptr_get(root, d->items);
        if (!root || (!items && !d->allow_missing_items))
                goto fail;
        if (items && !json_is_array(items) && !json_is_object(items))
                goto fail;
        size = !items ? 0 : json_is_array(items) ? json_array_size(items) : json_object_size(items);
        r = -ENOMEM;
        if (size &&
            !(urls = calloc(size < SOURCES_PAGE_ITEMS_MAX ? size : SOURCES_PAGE_ITEMS_MAX, sizeof(*urls))))
                goto fail;
        r = size ? take_results(d, items, urls, &n) : 0;
        if (r < 0)
                goto fail;
        if (n == 0) {
                free(urls);
                urls = NULL;
        }
        *ret = (struct sources_page){.urls = urls, .n = n, .results = size, .total = page_total(d, root)};
        json_decref(root);
        return 0;
fail:
        sources_strv_free(urls, n);
        json_decref(root);
        return r;
}

void sources_page_clear(struct sources_page *p)
{
        if (!p)
                return;
        sources_strv_free(p->urls, p->n);
        memset(p, 0, sizeof(*p));
}

int sources_parse_page(const struct source_def *d, const char *body, size_t len, char ***ret_urls,
                       size_t *ret_n)
{
        struct sources_page page;
        int r = sources_parse_listing(d, body, len, &page);

        if (r < 0)
                return r;
        *ret_urls = page.urls;
        *ret_n = page.n;
        return 0;
}

/* ---- the next page ------------------------------------------------------ */

bool sources_end_status(const struct source_def *d, int page, int http_status)
{
        if (page <= 1)
                return false;
        for (size_t i = 0; i < d->nend_status; i++)
                if (d->end_status[i] == http_status)
                        return true;
        return false;
}

static bool exhausted(const struct source_def *d, int page, int64_t so_far, int64_t total, size_t n)
{
        if (n == 0)
                return true;
        return total >= 0 && (so_far >= total || (int64_t)page * d->per_page >= total);
}

enum sources_list_end sources_listing_next(const struct source_def *d, int page_just_listed,
                                           int64_t results_so_far, int64_t total, size_t n_on_page,
                                           int http_status)
{
        int page = page_just_listed;

        if (sources_end_status(d, page, http_status))
                return LIST_EXHAUSTED;
        if (http_status < 200 || http_status > 299)
                return LIST_FAILED;
        if (exhausted(d, page, results_so_far, total, n_on_page))
                return LIST_EXHAUSTED;
        if (!d->paged)
                return LIST_SINGLE_PAGE;
        if ((d->max_pages > 0 && page >= d->max_pages) || page == INT_MAX)
                return LIST_PAGE_LIMIT;
        if (d->max_results > 0 &&
            (results_so_far >= d->max_results || (int64_t)page * d->per_page >= d->max_results))
                return LIST_RESULT_LIMIT;
        return LIST_MORE;
}

const char *sources_list_end_to_string(enum sources_list_end e)
{
        switch (e) {
        case LIST_MORE:
                return "more";
        case LIST_EXHAUSTED:
                return "exhausted";
        case LIST_SINGLE_PAGE:
                return "single_page";
        case LIST_PAGE_LIMIT:
                return "page_limit";
        case LIST_RESULT_LIMIT:
                return "result_limit";
        case LIST_FAILED:
                return "failed";
        }
        return "unknown";
}

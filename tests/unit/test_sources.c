/* Unit tests of daemon/sources*.c: loading and its errors (every field at
 * and past its limits), the shipped examples, templating and optional
 * secrets, download headers by host, JSON Pointer, page parsing, the end
 * of a listing, and the token bucket (stepped clock). Each test works in
 * its own temp directory. */
#include "autoconfig.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>

#include "tests/unit/testutil.h"
#include "common/jsonptr.h"
#include "daemon/job.h"
#include "daemon/sources.h"

#define GOOD_URL "https://api.example.org/s?q={query}&page={page}&n={per_page}"

static char *tmp;
static struct source_set *set;

static void setup(void)
{
        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        set = NULL;
        unsetenv("HAULD_TEST_TOKEN");
        unsetenv("HAULD_TEST_KEY");
}

static void teardown(void)
{
        sources_free(set);
        set = NULL;
        testutil_rmtree(tmp);
        tmp = NULL;
}

static void write_file(const char *name, const char *content, size_t len)
{
        char *path;
        ck_assert_int_ge(asprintf(&path, "%s/%s", tmp, name), 0);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(content, 1, len, f), len);
        fclose(f);
        free(path);
}

static void write_str(const char *name, const char *content) { write_file(name, content, strlen(content)); }

/* A minimal valid body with `extra` fields spliced in ("" for none). */
static char *body_with(const char *extra)
{
        char *s;
        ck_assert_int_ge(asprintf(&s,
                                  "{\"search_url\": \"%s\", \"items\": \"/results\", \"url\": \"/url\"%s%s}",
                                  GOOD_URL, *extra ? ", " : "", extra),
                         0);
        return s;
}

/* Load tmp expecting success. */
static void load_ok(void)
{
        sources_free(set);
        set = NULL;
        struct sources_error err;
        int r = sources_load_dir(tmp, &set, &err);
        ck_assert_msg(r == 0, "load: %d %s [%s] %s", r, err.file, err.field, err.message);
}

/* One def from one file content, loaded as src.json. */
static const struct source_def *load_one(const char *json)
{
        write_str("src.json", json);
        load_ok();
        ck_assert_uint_eq(sources_count(set), 1);
        return sources_at(set, 0);
}

/* ---- loading ---------------------------------------------------------- */

START_TEST(test_load_good)
{
        char *a = body_with("\"name\": \"alpha\", \"per_page\": 50, \"max_connections\": 3, "
                            "\"requests_per_second\": 2.5, \"headers\": {\"Accept\": \"application/json\"}, "
                            "\"total\": \"/meta/count\", \"max_pages\": 7, \"max_results\": 70, "
                            "\"end_status\": [404, 400], \"max_query_length\": 100, "
                            "\"download_hosts\": [\"Upload.Example.ORG\", \"*.CDN.example.net\"]");
        char *b = body_with("");
        write_str("alpha.json", a);
        write_str("beta.json", b);
        write_str("README.md", "not a source");
        write_str(".hidden.json", "not json");
        write_str("beta.json~", "backup");
        free(a);
        free(b);
        load_ok();

        ck_assert_uint_eq(sources_count(set), 2);
        const struct source_def *d = sources_at(set, 0);
        ck_assert_str_eq(d->name, "alpha");
        ck_assert_int_eq(d->per_page, 50);
        ck_assert_int_eq(d->max_connections, 3);
        ck_assert_double_eq(d->requests_per_second, 2.5);
        ck_assert_uint_eq(d->nheaders, 1);
        ck_assert_str_eq(d->headers[0].name, "Accept");
        ck_assert_str_eq(d->items, "/results");
        ck_assert_str_eq(d->url, "/url");
        ck_assert_str_eq(d->total, "/meta/count");
        ck_assert_int_eq(d->max_pages, 7);
        ck_assert_int_eq(d->max_results, 70);
        ck_assert_int_eq(d->max_query_length, 100);
        ck_assert_uint_eq(d->nend_status, 2);
        ck_assert_int_eq(d->end_status[0], 404);
        ck_assert_int_eq(d->end_status[1], 400);
        ck_assert_uint_eq(d->ndownload_hosts, 2);
        ck_assert_str_eq(d->download_hosts[0], "upload.example.org"); /* lower-cased */
        ck_assert_str_eq(d->download_hosts[1], "*.cdn.example.net");
        ck_assert(d->paged);
        ck_assert(d->available);
        ck_assert_ptr_null(d->unavailable_reason);
        ck_assert_ptr_nonnull(strstr(d->path, "/alpha.json"));

        d = sources_at(set, 1);
        ck_assert_str_eq(d->name, "beta"); /* name taken from the file */
        ck_assert_int_eq(d->per_page, SOURCES_DEFAULT_PER_PAGE);
        ck_assert_int_eq(d->max_connections, 0);
        ck_assert_double_eq(d->requests_per_second, 0);
        ck_assert_uint_eq(d->nheaders, 0);
        ck_assert(!d->allow_missing_items);
        ck_assert_ptr_null(d->total);
        ck_assert_int_eq(d->max_pages, 0);
        ck_assert_int_eq(d->max_results, 0);
        ck_assert_int_eq(d->max_query_length, 0);
        ck_assert_uint_eq(d->nend_status, 0);
        ck_assert_uint_eq(d->ndownload_hosts, 0);
        ck_assert_ptr_null(d->download_hosts);
        ck_assert_int_eq(sources_last_page(d), INT_MAX);

        ck_assert_ptr_eq(sources_find(set, "beta"), d);
        ck_assert_ptr_null(sources_find(set, "BETA"));
        ck_assert_ptr_null(sources_find(set, "gamma"));
        ck_assert_ptr_null(sources_at(set, 2));
}
END_TEST

START_TEST(test_load_sorted_and_dirs_ignored)
{
        char *b = body_with("");
        char *sub;
        write_str("a.b.json", b);
        write_str("a.json", b);
        write_str("Z.json", b);
        free(b);
        ck_assert_int_ge(asprintf(&sub, "%s/dir.json", tmp), 0);
        ck_assert_int_eq(mkdir(sub, 0700), 0);
        free(sub);
        load_ok();
        ck_assert_uint_eq(sources_count(set), 3);
        ck_assert_str_eq(sources_at(set, 0)->name, "Z");
        ck_assert_str_eq(sources_at(set, 1)->name, "a");
        ck_assert_str_eq(sources_at(set, 2)->name, "a.b");
        ck_assert_ptr_nonnull(sources_find(set, "a.b"));
        ck_assert_ptr_nonnull(sources_find(set, "Z"));
}
END_TEST

START_TEST(test_load_missing_dir)
{
        char *missing;
        ck_assert_int_ge(asprintf(&missing, "%s/nope", tmp), 0);
        ck_assert_int_eq(sources_load_dir(missing, &set, NULL), 0);
        free(missing);
        ck_assert_uint_eq(sources_count(set), 0);
        ck_assert_ptr_null(sources_find(set, "x"));
        ck_assert_ptr_null(sources_at(set, 0));
}
END_TEST

START_TEST(test_load_not_a_dir)
{
        char *file;
        struct sources_error err;
        write_str("plain", "x");
        ck_assert_int_ge(asprintf(&file, "%s/plain", tmp), 0);
        ck_assert_int_eq(sources_load_dir(file, &set, &err), -ENOTDIR);
        ck_assert_str_eq(err.file, file);
        free(file);
}
END_TEST

/* Each bad file: its name, its content (unless raw, merged over a valid
 * body so the case holds one fault), the field the error names and a
 * piece of the message. */
static const struct bad_case {
        const char *file;
        bool raw;
        const char *json;
        const char *field;
        const char *message;
} bad_cases[] = {
        {"src.json", true, "{\"search_url\": ", "", "not JSON"},
        {"src.json", true, "[1, 2]", "", "JSON object"},
        {"src.json", true, "{\"url\": \"/a\", \"url\": \"/b\"}", "", "duplicate"},
        {"src.json", false, "{\"colour\": 1}", "colour", "unknown field"},
        {"src.json", false, "{\"per_page\": \"20\"}", "per_page", "integer"},
        {"src.json", false, "{\"per_page\": 2.0}", "per_page", "integer"},
        {"src.json", false, "{\"per_page\": 0}", "per_page", "1..1000"},
        {"src.json", false, "{\"per_page\": 1001}", "per_page", "1..1000"},
        {"src.json", false, "{\"max_connections\": 0}", "max_connections", "1..1000"},
        {"src.json", false, "{\"max_connections\": 1001}", "max_connections", "1..1000"},
        {"src.json", false, "{\"requests_per_second\": -1}", "requests_per_second", "0..1000"},
        {"src.json", false, "{\"requests_per_second\": 1000.5}", "requests_per_second", "0..1000"},
        {"src.json", false, "{\"requests_per_second\": \"5\"}", "requests_per_second", "number"},
        {"src.json", false, "{\"allow_missing_items\": \"yes\"}", "allow_missing_items", "true or false"},
        {"src.json", false, "{\"items\": \"results\"}", "items", "JSON Pointer"},
        {"src.json", false, "{\"url\": \"/a~2b\"}", "url", "JSON Pointer"},
        {"src.json", false, "{\"url\": \"/a~\"}", "url", "JSON Pointer"},
        {"src.json", false, "{\"items\": 5}", "items", "string"},
        {"src.json", false, "{\"name\": \"bad name\"}", "name", "1..64"},
        {"src.json", false, "{\"name\": \".dot\"}", "name", "1..64"},
        {"src.json", false, "{\"name\": \"other\"}", "name", "differs"},
        {"bad name.json", false, "{}", "name", "file name"},
        {"src.json", false, "{\"search_url\": \"https://h/?q={query}&x={foo}\"}", "search_url", "{foo}"},
        {"src.json", false, "{\"search_url\": \"https://h/?q={query}&x={env:}\"}", "search_url",
         "placeholder"},
        {"src.json", false, "{\"search_url\": \"https://h/?q={query}&x={env:1A}\"}", "search_url",
         "placeholder"},
        {"src.json", false, "{\"search_url\": \"https://h/?q={query}&x={page\"}", "search_url",
         "placeholder"},
        {"src.json", false, "{\"search_url\": \"https://h/?q={query}}\"}", "search_url", "'}'"},
        {"src.json", false, "{\"search_url\": \"ftp://h/?q={query}\"}", "search_url", "http"},
        {"src.json", false, "{\"search_url\": \"/relative?q={query}\"}", "search_url", "http"},
        {"src.json", false, "{\"search_url\": \"https://h/?q=cats\"}", "search_url", "{query}"},
        {"src.json", false, "{\"search_url\": \"https://{env:HOST}/?q={query}\"}", "search_url", "host"},
        {"src.json", false, "{\"search_url\": \"https:///?q={query}\"}", "search_url", "host"},
        {"src.json", false, "{\"search_url\": \"https://h/?q={query} x\"}", "search_url", "ASCII"},
        {"src.json", false, "{\"search_url\": \"https://h/caf\\u00e9?q={query}\"}", "search_url", "ASCII"},
        {"src.json", false, "{\"headers\": []}", "headers", "object"},
        {"src.json", false, "{\"headers\": {\"Bad Name\": \"x\"}}", "headers.Bad Name", "header name"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"a\\r\\nX-B: b\"}}", "headers.X-A", "control"},
        {"src.json", false, "{\"headers\": {\"X-A\": 5}}", "headers.X-A", "string"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"{query}\"}}", "headers.X-A", "not allowed"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"a\", \"x-a\": \"b\"}}", "headers.x-a", "twice"},
        /* optional secrets: header values only, with a valid name */
        {"src.json", false, "{\"search_url\": \"https://h/?q={query}&k={env?:KEY}\"}", "search_url",
         "header values only"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"{env?:}\"}}", "headers.X-A", "placeholder"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"{env?:1A}\"}}", "headers.X-A", "placeholder"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"{env?:A-B}\"}}", "headers.X-A", "placeholder"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"{env? :A}\"}}", "headers.X-A", "placeholder"},
        {"src.json", false, "{\"headers\": {\"X-A\": \"{env?A}\"}}", "headers.X-A", "placeholder"},
        /* listing limits */
        {"src.json", false, "{\"max_pages\": 0}", "max_pages", "1..10000"},
        {"src.json", false, "{\"max_pages\": 10001}", "max_pages", "1..10000"},
        {"src.json", false, "{\"max_pages\": \"5\"}", "max_pages", "integer"},
        {"src.json", false, "{\"max_results\": 0}", "max_results", "1..100000"},
        {"src.json", false, "{\"max_results\": 100001}", "max_results", "1..100000"},
        {"src.json", false, "{\"max_results\": 1.5}", "max_results", "integer"},
        {"src.json", false, "{\"max_query_length\": 0}", "max_query_length", "1..256"},
        {"src.json", false, "{\"max_query_length\": 257}", "max_query_length", "1..256"},
        {"src.json", false, "{\"max_query_length\": -1}", "max_query_length", "1..256"},
        {"src.json", false, "{\"max_query_length\": null}", "max_query_length", "integer"},
        /* the end of the results */
        {"src.json", false, "{\"total\": \"count\"}", "total", "JSON Pointer"},
        {"src.json", false, "{\"total\": 5}", "total", "string"},
        {"src.json", false, "{\"end_status\": 400}", "end_status", "array"},
        {"src.json", false, "{\"end_status\": [\"400\"]}", "end_status[0]", "integer"},
        {"src.json", false, "{\"end_status\": [399]}", "end_status[0]", "400..499"},
        {"src.json", false, "{\"end_status\": [200]}", "end_status[0]", "400..499"},
        {"src.json", false, "{\"end_status\": [400, 500]}", "end_status[1]", "400..499"},
        {"src.json", false, "{\"end_status\": [429]}", "end_status[0]", "retry"},
        {"src.json", false, "{\"end_status\": [404, 408]}", "end_status[1]", "retry"},
        {"src.json", false, "{\"end_status\": [404, 410, 404]}", "end_status[2]", "twice"},
        /* download hosts */
        {"src.json", false, "{\"download_hosts\": \"a.example\"}", "download_hosts", "array"},
        {"src.json", false, "{\"download_hosts\": [5]}", "download_hosts[0]", "string"},
        {"src.json", false, "{\"download_hosts\": [\"\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"ok.example\", \"*\"]}", "download_hosts[1]",
         "host name"},
        {"src.json", false, "{\"download_hosts\": [\"*.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"*.0.0.1\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"*.*.example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"a.*.example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"*example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"a..example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\".example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"example.org.\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"-a.example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"a-.example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"ex ample.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"ex_ample.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"[::1]\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"a.example.org:443\"]}", "download_hosts[0]",
         "host name"},
        {"src.json", false, "{\"download_hosts\": [\"https://a.example.org\"]}", "download_hosts[0]",
         "host name"},
        {"src.json", false, "{\"download_hosts\": [\"a.example.org/x\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"u@a.example.org\"]}", "download_hosts[0]", "host name"},
        {"src.json", false, "{\"download_hosts\": [\"b\\u00fccher.example\"]}", "download_hosts[0]",
         "host name"},
        {"src.json", false, "{\"download_hosts\": [\"A.Example.org\", \"a.example.ORG\"]}",
         "download_hosts[1]", "twice"},
};

static char *bad_body(const struct bad_case *c)
{
        json_t *body, *fault;
        char *s;

        if (c->raw)
                return strdup(c->json);
        body = json_pack("{s:s, s:s, s:s}", "search_url", GOOD_URL, "items", "/results", "url", "/url");
        fault = json_loads(c->json, 0, NULL);
        ck_assert_ptr_nonnull(fault);
        ck_assert_int_eq(json_object_update(body, fault), 0);
        s = json_dumps(body, JSON_PRESERVE_ORDER);
        json_decref(fault);
        json_decref(body);
        return s;
}

START_TEST(test_load_errors)
{
        const struct bad_case *c = &bad_cases[_i];
        char *json = bad_body(c);
        struct sources_error err;

        write_str(c->file, json);
        free(json);
        memset(&err, 0, sizeof(err));
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EINVAL);
        ck_assert_ptr_null(set);
        ck_assert_msg(strstr(err.file, c->file) != NULL, "file '%s'", err.file);
        ck_assert_msg(!strcmp(err.field, c->field), "case %d: field '%s', want '%s' (%s)", _i, err.field,
                      c->field, err.message);
        ck_assert_msg(strstr(err.message, c->message) != NULL, "case %d: message '%s', want '%s'", _i,
                      err.message, c->message);
}
END_TEST

START_TEST(test_load_required)
{
        static const char *const cases[][2] = {
                {"{\"items\": \"/r\", \"url\": \"/u\"}", "search_url"},
                {"{\"search_url\": \"" GOOD_URL "\", \"url\": \"/u\"}", "items"},
                {"{\"search_url\": \"" GOOD_URL "\", \"items\": \"/r\"}", "url"},
        };
        struct sources_error err;
        for (size_t i = 0; i < 3; i++) {
                write_str("src.json", cases[i][0]);
                ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EINVAL);
                ck_assert_str_eq(err.field, cases[i][1]);
                ck_assert_str_eq(err.message, "is required");
        }
}
END_TEST

START_TEST(test_load_limits)
{
        char name[SOURCES_NAME_MAX + 7];
        char *b = body_with("\"per_page\": 1000, \"max_connections\": 1000, \"requests_per_second\": 1000");
        struct sources_error err;

        /* a 64-character name is the longest */
        memset(name, 'n', SOURCES_NAME_MAX);
        strcpy(name + SOURCES_NAME_MAX, ".json");
        write_str(name, b);
        load_ok();
        ck_assert_uint_eq(strlen(sources_at(set, 0)->name), SOURCES_NAME_MAX);
        ck_assert_int_eq(sources_at(set, 0)->per_page, 1000);
        ck_assert_int_eq(sources_at(set, 0)->max_connections, 1000);
        sources_free(set);
        set = NULL;

        memset(name, 'n', SOURCES_NAME_MAX + 1);
        strcpy(name + SOURCES_NAME_MAX + 1, ".json");
        write_str(name, b);
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EINVAL);
        ck_assert_str_eq(err.field, "name");
        free(b);
}
END_TEST

/* A file whose `key` is a JSON array of n entries made by entry(i). */
static char *array_body(const char *key, int n, char *(*entry)(int i))
{
        char *list = strdup(""), *extra, *body;
        for (int i = 0; i < n; i++) {
                char *e = entry(i), *next;
                ck_assert_int_ge(asprintf(&next, "%s%s%s", list, i ? ", " : "", e), 0);
                free(e);
                free(list);
                list = next;
        }
        ck_assert_int_ge(asprintf(&extra, "\"%s\": [%s]", key, list), 0);
        body = body_with(extra);
        free(extra);
        free(list);
        return body;
}

static char *status_entry(int i)
{
        char *s;
        ck_assert_int_ge(asprintf(&s, "%d", 430 + i), 0); /* past 408 and 429 */
        return s;
}

static char *host_entry(int i)
{
        char *s;
        ck_assert_int_ge(asprintf(&s, "\"h%d.example.org\"", i), 0);
        return s;
}

static void load_bad(const char *json, const char *field, const char *message)
{
        struct sources_error err;

        write_str("src.json", json);
        sources_free(set);
        set = NULL;
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EINVAL);
        ck_assert_str_eq(err.field, field);
        ck_assert_msg(strstr(err.message, message), "message '%s' lacks '%s'", err.message, message);
}

START_TEST(test_load_listing_limits)
{
        char *b = body_with("\"max_pages\": 1, \"max_results\": 1, \"max_query_length\": 1");
        const struct source_def *d = load_one(b);
        free(b);
        ck_assert_int_eq(d->max_pages, 1);
        ck_assert_int_eq(d->max_results, 1);
        ck_assert_int_eq(d->max_query_length, 1);

        b = body_with("\"max_pages\": 10000, \"max_results\": 100000, \"max_query_length\": 256");
        d = load_one(b);
        free(b);
        ck_assert_int_eq(d->max_pages, SOURCES_MAX_PAGES_MAX);
        ck_assert_int_eq(d->max_results, SOURCES_MAX_RESULTS_MAX);
        ck_assert_int_eq(d->max_query_length, SOURCES_QUERY_LENGTH_MAX);

        /* end_status: 16 statuses, then 17 */
        b = array_body("end_status", SOURCES_END_STATUS_MAX, status_entry);
        d = load_one(b);
        free(b);
        ck_assert_uint_eq(d->nend_status, SOURCES_END_STATUS_MAX);
        ck_assert_int_eq(d->end_status[SOURCES_END_STATUS_MAX - 1], 445);
        b = array_body("end_status", SOURCES_END_STATUS_MAX + 1, status_entry);
        load_bad(b, "end_status", "at most 16");
        free(b);
        b = body_with("\"end_status\": []");
        ck_assert_uint_eq(load_one(b)->nend_status, 0);
        free(b);
        b = body_with("\"end_status\": [400, 499]");
        ck_assert_uint_eq(load_one(b)->nend_status, 2);
        free(b);

        /* download_hosts: 32 hosts, then 33 */
        b = array_body("download_hosts", SOURCES_DOWNLOAD_HOSTS_MAX, host_entry);
        d = load_one(b);
        free(b);
        ck_assert_uint_eq(d->ndownload_hosts, SOURCES_DOWNLOAD_HOSTS_MAX);
        ck_assert_str_eq(d->download_hosts[31], "h31.example.org");
        b = array_body("download_hosts", SOURCES_DOWNLOAD_HOSTS_MAX + 1, host_entry);
        load_bad(b, "download_hosts", "at most 32");
        free(b);
}
END_TEST

/* download_hosts entries at the length limits: a 63-byte label and a
 * 253-byte name load; a 64-byte label and a 254-byte name do not. */
START_TEST(test_load_host_limits)
{
        char label[65], host[SOURCES_HOST_MAX + 2], *b, *extra;

        memset(label, 'l', 63);
        label[63] = '\0';
        ck_assert_int_ge(
                asprintf(&extra, "\"download_hosts\": [\"%s.example\", \"*.%s.example\"]", label, label), 0);
        b = body_with(extra);
        free(extra);
        ck_assert_uint_eq(load_one(b)->ndownload_hosts, 2);
        free(b);
        strcat(label, "l");
        ck_assert_int_ge(asprintf(&extra, "\"download_hosts\": [\"%s.example\"]", label), 0);
        b = body_with(extra);
        free(extra);
        load_bad(b, "download_hosts[0]", "host name");
        free(b);

        /* 4 labels of 62 bytes, each with its dot: 252 bytes, then "x" */
        host[0] = '\0';
        for (int i = 0; i < 4; i++) {
                memset(label, 'a' + i, 62);
                label[62] = '\0';
                strcat(host, label);
                strcat(host, ".");
        }
        strcat(host, "x"); /* 253 bytes */
        ck_assert_uint_eq(strlen(host), SOURCES_HOST_MAX);
        ck_assert_int_ge(asprintf(&extra, "\"download_hosts\": [\"%s\"]", host), 0);
        b = body_with(extra);
        free(extra);
        ck_assert_uint_eq(load_one(b)->ndownload_hosts, 1);
        free(b);
        strcat(host, "y"); /* 254 */
        ck_assert_int_ge(asprintf(&extra, "\"download_hosts\": [\"%s\"]", host), 0);
        b = body_with(extra);
        free(extra);
        load_bad(b, "download_hosts[0]", "longer than 253");
        free(b);
}
END_TEST

START_TEST(test_load_max_files)
{
        char *b = body_with("");
        char name[32];
        struct sources_error err;

        for (int i = 0; i < SOURCES_MAX_FILES; i++) {
                snprintf(name, sizeof(name), "s%03d.json", i);
                write_str(name, b);
        }
        load_ok();
        ck_assert_uint_eq(sources_count(set), SOURCES_MAX_FILES);
        ck_assert_str_eq(sources_at(set, SOURCES_MAX_FILES - 1)->name, "s255");
        sources_free(set);
        set = NULL;
        write_str("t.json", b);
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -E2BIG);
        ck_assert_ptr_nonnull(strstr(err.message, "more than"));
        free(b);
}
END_TEST

/* A file whose headers object has n entries. */
static char *headers_body(int n)
{
        char *h = strdup(""), *b;
        for (int i = 0; i < n; i++) {
                char *next;
                ck_assert_int_ge(asprintf(&next, "%s%s\"X-H%d\": \"v\"", h, i ? ", " : "", i), 0);
                free(h);
                h = next;
        }
        ck_assert_int_ge(asprintf(&b, "\"headers\": {%s}", h), 0);
        free(h);
        char *body = body_with(b);
        free(b);
        return body;
}

START_TEST(test_load_template_and_header_limits)
{
        char *b = headers_body(SOURCES_MAX_HEADERS);
        struct sources_error err;
        char *url, *extra;

        write_str("src.json", b);
        free(b);
        load_ok();
        ck_assert_uint_eq(sources_at(set, 0)->nheaders, SOURCES_MAX_HEADERS);
        sources_free(set);
        set = NULL;
        b = headers_body(SOURCES_MAX_HEADERS + 1);
        write_str("src.json", b);
        free(b);
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EINVAL);
        ck_assert_str_eq(err.field, "headers");

        /* search_url of SOURCES_TEMPLATE_MAX bytes, then one more */
        const char *head = "https://h/?q={query}&x=";
        url = malloc(SOURCES_TEMPLATE_MAX + 2);
        strcpy(url, head);
        memset(url + strlen(head), 'x', SOURCES_TEMPLATE_MAX - strlen(head));
        url[SOURCES_TEMPLATE_MAX] = '\0';
        ck_assert_int_ge(asprintf(&extra, "{\"search_url\": \"%s\", \"items\": \"\", \"url\": \"\"}", url),
                         0);
        write_str("src.json", extra);
        free(extra);
        load_ok();
        sources_free(set);
        set = NULL;
        strcat(url, "x");
        ck_assert_int_ge(asprintf(&extra, "{\"search_url\": \"%s\", \"items\": \"\", \"url\": \"\"}", url),
                         0);
        write_str("src.json", extra);
        free(extra);
        free(url);
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EINVAL);
        ck_assert_str_eq(err.field, "search_url");
        ck_assert_ptr_nonnull(strstr(err.message, "longer"));
}
END_TEST

START_TEST(test_load_file_size)
{
        char *b = body_with("\"per_page\": 1");
        size_t len = strlen(b);
        char *big = malloc(SOURCES_FILE_MAX + 2);
        struct sources_error err;

        /* exactly the limit: padded with whitespace, loads */
        memcpy(big, b, len);
        memset(big + len, ' ', SOURCES_FILE_MAX - len);
        write_file("src.json", big, SOURCES_FILE_MAX);
        load_ok();
        ck_assert_int_eq(sources_at(set, 0)->per_page, 1);
        sources_free(set);
        set = NULL;

        /* one byte over */
        big[SOURCES_FILE_MAX] = ' ';
        write_file("src.json", big, SOURCES_FILE_MAX + 1);
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), -EFBIG);
        ck_assert_ptr_nonnull(strstr(err.file, "src.json"));
        ck_assert_str_eq(err.field, "");
        ck_assert_ptr_nonnull(strstr(err.message, "larger"));
        free(big);
        free(b);
}
END_TEST

START_TEST(test_load_error_untouched_on_success)
{
        struct sources_error err;
        char *b = body_with("");

        write_str("src.json", b);
        free(b);
        memset(&err, 'x', sizeof(err));
        ck_assert_int_eq(sources_load_dir(tmp, &set, &err), 0);
        ck_assert_int_eq(err.file[0], 'x');
        ck_assert_int_eq(err.message[sizeof(err.message) - 1], 'x');
}
END_TEST

/* ---- the shipped examples --------------------------------------------- */

static char *examples_dir(void)
{
        const char *src = getenv("HAULD_SRCDIR");
        char *dir;
        ck_assert_int_ge(asprintf(&dir, "%s/etc/sources.d", src && *src ? src : "."), 0);
        return dir;
}

static char *url_of(const char *name, const char *query, int page)
{
        char *url = NULL;
        const struct source_def *d = sources_find(set, name);
        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(sources_build_url(d, query, page, &url), 0);
        return url;
}

static void unset_example_secrets(void)
{
        static const char *const names[] = {"PIXABAY_KEY", "GOOGLE_CSE_KEY", "GOOGLE_CSE_CX",
                                            "OPENVERSE_TOKEN", "WIKIMEDIA_USER_AGENT"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                unsetenv(names[i]);
}

static void load_examples(void)
{
        char *dir = examples_dir();
        struct sources_error err;

        sources_free(set);
        set = NULL;
        int r = sources_load_dir(dir, &set, &err);
        ck_assert_msg(r == 0, "%s: %d %s [%s] %s", dir, r, err.file, err.field, err.message);
        free(dir);
}

/* The one header a source sends to url, or NULL when it sends none. */
static char *one_download_header(const struct source_def *d, const char *url)
{
        char **h = NULL, *one = NULL;
        size_t n = 99;

        ck_assert_int_eq(sources_download_headers(d, url, &h, &n), 0);
        ck_assert_uint_le(n, 1);
        if (n == 1)
                one = strdup(h[0]);
        sources_strv_free(h, n);
        return one;
}

START_TEST(test_examples_load)
{
        const struct source_def *d;
        char *url, **h;
        size_t n;

        unset_example_secrets();
        load_examples();
        ck_assert_uint_eq(sources_count(set), 4);
        ck_assert_str_eq(sources_at(set, 0)->name, "google-cse");
        ck_assert_str_eq(sources_at(set, 1)->name, "openverse");
        ck_assert_str_eq(sources_at(set, 2)->name, "pixabay");
        ck_assert_str_eq(sources_at(set, 3)->name, "wikimedia-commons");

        /* Openverse: anonymous clients get 20 requests a minute and pages of
         * at most 20; the API refuses pages past 20; the token is optional */
        d = sources_find(set, "openverse");
        ck_assert(d->available);
        ck_assert(d->requests_per_second > 0 && d->requests_per_second * 60 <= 20);
        ck_assert_int_le(d->per_page, 20);
        ck_assert_int_eq(sources_last_page(d), 20);
        ck_assert_str_eq(d->total, "/result_count");
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_uint_eq(n, 0);
        url = url_of("openverse", "red car", 2);
        ck_assert_str_eq(url, "https://api.openverse.org/v1/images/?q=red%20car&page=2&page_size=20");
        free(url);
        ck_assert_int_eq(sources_build_url(d, "red car", 21, &url), -ERANGE);

        /* Wikimedia Commons: bitmaps of the File namespace; the agent goes
         * to upload.wikimedia.org too, at most 2 downloads at once */
        d = sources_find(set, "wikimedia-commons");
        ck_assert(d->available);
        ck_assert_int_le(d->max_connections, 2);
        url = url_of("wikimedia-commons", "red car", 3);
        ck_assert_ptr_nonnull(strstr(url, "gsrsearch=filetype%3Abitmap%20red%20car&"));
        ck_assert_ptr_nonnull(strstr(url, "gsroffset=40"));
        ck_assert_ptr_nonnull(strstr(url, "gsrlimit=20"));
        ck_assert_ptr_nonnull(strstr(url, "gsrnamespace=6"));
        free(url);
        ck_assert_ptr_null(
                one_download_header(d, "https://upload.wikimedia.org/wikipedia/commons/a/ab/X.jpg"));

        /* Pixabay: a key, 100 requests a minute, queries of 100 characters,
         * 500 results a query, 400 past the last page */
        d = sources_find(set, "pixabay");
        ck_assert(!d->available);
        ck_assert_ptr_nonnull(strstr(d->unavailable_reason, "PIXABAY_KEY"));
        ck_assert_int_eq(d->max_query_length, 100);
        ck_assert(d->requests_per_second * 60 <= 100);
        ck_assert_int_eq(d->max_results, 500);
        ck_assert(sources_end_status(d, 2, 400));
        ck_assert_str_eq(d->total, "/totalHits");

        /* Google: num at most 10, never past the 100th result */
        d = sources_find(set, "google-cse");
        ck_assert(!d->available);
        ck_assert_int_le(d->per_page, 10);
        ck_assert_int_eq(d->max_results, 100);
        ck_assert_int_eq(sources_last_page(d), 10);

        setenv("PIXABAY_KEY", "k1", 1);
        setenv("GOOGLE_CSE_KEY", "k2", 1);
        setenv("GOOGLE_CSE_CX", "c:x", 1);
        setenv("OPENVERSE_TOKEN", "tok", 1);
        setenv("WIKIMEDIA_USER_AGENT", "acme-media-fetcher/1.0 (https://acme.example/bot; ops@acme.example)",
               1);
        load_examples();
        ck_assert(sources_find(set, "pixabay")->available);
        ck_assert(sources_find(set, "google-cse")->available);
        url = url_of("pixabay", "cats", 1);
        ck_assert_str_eq(url, "https://pixabay.com/api/?key=k1&q=cats&image_type=photo&page=1&per_page=20");
        free(url);
        url = url_of("google-cse", "cats", 2);
        ck_assert_ptr_nonnull(strstr(url, "key=k2&cx=c%3Ax&q=cats&searchType=image&num=10&start=11"));
        free(url);
        url = url_of("google-cse", "cats", 10);
        ck_assert_ptr_nonnull(strstr(url, "&num=10&start=91"));
        free(url);
        ck_assert_int_eq(sources_build_url(sources_find(set, "google-cse"), "cats", 11, &url), -ERANGE);

        ck_assert_int_eq(sources_build_headers(sources_find(set, "openverse"), &h, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(h[0], "Authorization: Bearer tok");
        sources_strv_free(h, n);

        d = sources_find(set, "wikimedia-commons");
        char *ua = one_download_header(d, "https://upload.wikimedia.org/wikipedia/commons/a/ab/X.jpg");
        ck_assert_str_eq(ua,
                         "User-Agent: acme-media-fetcher/1.0 (https://acme.example/bot; ops@acme.example)");
        free(ua);
        ck_assert_ptr_null(one_download_header(d, "https://upload.wikimedia.org.example/X.jpg"));
        ck_assert_ptr_null(one_download_header(d, "https://commons.wikimedia.org/wiki/File:X.jpg"));
        unset_example_secrets();
}
END_TEST

static struct sources_page parse_ok(const struct source_def *d, const char *body)
{
        struct sources_page pg;
        ck_assert_int_eq(sources_parse_listing(d, body, strlen(body), &pg), 0);
        return pg;
}

/* Each shipped source against a page in its provider's documented
 * response format: its pointers find the URLs and the total, and the
 * provider's way of saying "no more" ends the listing. */
START_TEST(test_examples_read_provider_pages)
{
        const struct source_def *d;
        struct sources_page pg;

        unset_example_secrets();
        load_examples();

        d = sources_find(set, "openverse");
        pg = parse_ok(
                d,
                "{\"result_count\": 21, \"page_count\": 2, \"page_size\": 20, \"page\": 2, "
                "\"results\": [{\"id\": \"a\", \"title\": \"cat\", \"url\": \"https://live.example/c.jpg\", "
                "\"thumbnail\": \"https://api.openverse.org/v1/images/a/thumb/\"}]}");
        ck_assert_uint_eq(pg.n, 1);
        ck_assert_str_eq(pg.urls[0], "https://live.example/c.jpg");
        ck_assert_int_eq(pg.total, 21);
        ck_assert_int_eq(sources_listing_next(d, 2, 21, pg.total, pg.results, 200), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 1, 20, pg.total, 20, 200), LIST_MORE);
        sources_page_clear(&pg);

        d = sources_find(set, "wikimedia-commons");
        pg = parse_ok(d,
                      "{\"batchcomplete\": \"\", \"continue\": {\"gsroffset\": 20, \"continue\": "
                      "\"gsroffset||\"}, "
                      "\"query\": {\"pages\": {\"7\": {\"pageid\": 7, \"ns\": 6, \"title\": \"File:A.jpg\", "
                      "\"index\": 1, \"imagerepository\": \"local\", \"imageinfo\": [{\"url\": "
                      "\"https://upload.wikimedia.org/wikipedia/commons/a/a1/A.jpg\", \"descriptionurl\": "
                      "\"https://commons.wikimedia.org/wiki/File:A.jpg\"}]}}}}");
        ck_assert_uint_eq(pg.n, 1);
        ck_assert_int_eq(pg.total, -1);
        ck_assert_int_eq(sources_listing_next(d, 1, 1, pg.total, pg.results, 200), LIST_MORE);
        sources_page_clear(&pg);
        pg = parse_ok(d, "{\"batchcomplete\": \"\"}"); /* past the end: no "query" at all */
        ck_assert_uint_eq(pg.results, 0);
        ck_assert_int_eq(sources_listing_next(d, 2, 1, pg.total, pg.results, 200), LIST_EXHAUSTED);

        d = sources_find(set, "pixabay");
        pg = parse_ok(d, "{\"total\": 4692, \"totalHits\": 500, \"hits\": [{\"id\": 195893, \"pageURL\": "
                         "\"https://pixabay.com/en/blossom-bloom-flower-195893/\", \"type\": \"photo\", "
                         "\"largeImageURL\": \"https://pixabay.com/get/ed6a99fd0a76647_1280.jpg\"}]}");
        ck_assert_uint_eq(pg.n, 1);
        ck_assert_int_eq(pg.total, 500);
        sources_page_clear(&pg);
        /* "[ERROR 400] "page" is out of valid range." */
        ck_assert_int_eq(sources_listing_next(d, 3, 40, -1, 0, 400), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 1, 0, -1, 0, 400), LIST_FAILED); /* a bad key */

        d = sources_find(set, "google-cse");
        pg = parse_ok(d,
                      "{\"kind\": \"customsearch#search\", \"queries\": {\"request\": [{\"totalResults\": "
                      "\"12300\", \"count\": 10, \"startIndex\": 91}]}, \"searchInformation\": "
                      "{\"searchTime\": 0.2, \"totalResults\": \"12300\"}, \"items\": [{\"kind\": "
                      "\"customsearch#result\", \"link\": \"https://img.example/91.jpg\", \"mime\": "
                      "\"image/jpeg\"}]}");
        ck_assert_uint_eq(pg.n, 1);
        ck_assert_int_eq(pg.total, 12300);
        ck_assert_int_eq(sources_listing_next(d, 10, 91, pg.total, pg.results, 200), LIST_RESULT_LIMIT);
        sources_page_clear(&pg);
        pg = parse_ok(
                d, "{\"kind\": \"customsearch#search\", \"searchInformation\": {\"totalResults\": \"0\"}}");
        ck_assert_uint_eq(pg.results, 0);
        ck_assert_int_eq(pg.total, 0);
        ck_assert_int_eq(sources_listing_next(d, 1, 0, pg.total, pg.results, 200), LIST_EXHAUSTED);
}
END_TEST

/* ---- templating ------------------------------------------------------- */

START_TEST(test_url_hostile_queries)
{
        const struct source_def *d = load_one("{\"search_url\": \"https://h.example/s?q={query}&p={page}\", "
                                              "\"items\": \"\", \"url\": \"\"}");
        static const char *const cases[][2] = {
                {"cats & dogs/?#%", "cats%20%26%20dogs%2F%3F%23%25"},
                {"caf\xc3\xa9", "caf%C3%A9"},
                {"", ""},
                {"a-b.c_d~e", "a-b.c_d~e"},
                {"{query}+=;\"<>\\", "%7Bquery%7D%2B%3D%3B%22%3C%3E%5C"},
                {"\r\n\t", "%0D%0A%09"},
        };
        char *url, *want;

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                ck_assert_int_eq(sources_build_url(d, cases[i][0], 1, &url), 0);
                ck_assert_int_ge(asprintf(&want, "https://h.example/s?q=%s&p=1", cases[i][1]), 0);
                ck_assert_str_eq(url, want);
                free(url);
                free(want);
        }
        url = (char *)"untouched";
        ck_assert_int_eq(sources_build_url(d, "x", 0, &url), -EINVAL);
        ck_assert_int_eq(sources_build_url(d, NULL, 1, &url), -EINVAL);
        ck_assert_str_eq(url, "untouched");
}
END_TEST

START_TEST(test_url_offset_start)
{
        const struct source_def *d = load_one(
                "{\"search_url\": \"https://h/s?q={query}&o={offset}&s={start}&n={per_page}&p={page}\", "
                "\"per_page\": 10, \"items\": \"\", \"url\": \"\"}");
        char *url;

        ck_assert(d->paged);
        ck_assert_int_eq(sources_build_url(d, "q", 1, &url), 0);
        ck_assert_str_eq(url, "https://h/s?q=q&o=0&s=1&n=10&p=1");
        free(url);
        ck_assert_int_eq(sources_build_url(d, "q", 3, &url), 0);
        ck_assert_str_eq(url, "https://h/s?q=q&o=20&s=21&n=10&p=3");
        free(url);
        ck_assert_int_eq(sources_build_url(d, "q", 2147483647, &url), 0);
        ck_assert_ptr_nonnull(strstr(url, "o=21474836460&s=21474836461"));
        free(url);
}
END_TEST

START_TEST(test_url_unpaged_and_too_long)
{
        const struct source_def *d = load_one("{\"search_url\": \"https://h/s?q={query}\", "
                                              "\"items\": \"\", \"url\": \"\"}");
        char *q = malloc(JOB_URL_MAX);
        char *url;

        ck_assert(!d->paged);
        /* "https://h/s?q=" is 14 bytes: fill up to JOB_URL_MAX exactly */
        memset(q, 'a', JOB_URL_MAX - 14);
        q[JOB_URL_MAX - 14] = '\0';
        ck_assert_int_eq(sources_build_url(d, q, 1, &url), 0);
        ck_assert_uint_eq(strlen(url), JOB_URL_MAX);
        free(url);
        q[JOB_URL_MAX - 15] = ' '; /* one byte becomes three */
        ck_assert_int_eq(sources_build_url(d, q, 1, &url), -E2BIG);
        free(q);
}
END_TEST

START_TEST(test_url_env)
{
        const struct source_def *d =
                load_one("{\"search_url\": \"https://h/s?k={env:HAULD_TEST_KEY}&q={query}\", "
                         "\"items\": \"\", \"url\": \"\"}");
        char *url;

        /* missing at load: unavailable, and building fails */
        ck_assert(!d->available);
        ck_assert_str_eq(d->unavailable_reason, "environment variable HAULD_TEST_KEY is not set");
        ck_assert_int_eq(sources_build_url(d, "x", 1, &url), -ENOKEY);
        ck_assert_int_eq(sources_build_url_redacted(d, "x", 1, &url), 0);
        ck_assert_str_eq(url, "https://h/s?k=***&q=x");
        free(url);

        /* empty counts as missing */
        setenv("HAULD_TEST_KEY", "", 1);
        d = load_one("{\"search_url\": \"https://h/s?k={env:HAULD_TEST_KEY}&q={query}\", "
                     "\"items\": \"\", \"url\": \"\"}");
        ck_assert(!d->available);

        setenv("HAULD_TEST_KEY", "a b&c=d", 1);
        d = load_one("{\"search_url\": \"https://h/s?k={env:HAULD_TEST_KEY}&q={query}\", "
                     "\"items\": \"\", \"url\": \"\"}");
        ck_assert(d->available);
        ck_assert_ptr_null(d->unavailable_reason);
        ck_assert_int_eq(sources_build_url(d, "x", 1, &url), 0);
        ck_assert_str_eq(url, "https://h/s?k=a%20b%26c%3Dd&q=x");
        free(url);
        ck_assert_int_eq(sources_build_url_redacted(d, "x", 1, &url), 0);
        ck_assert_str_eq(url, "https://h/s?k=***&q=x");
        free(url);
}
END_TEST

START_TEST(test_headers)
{
        const char *json = "{\"search_url\": \"" GOOD_URL "\", \"items\": \"\", \"url\": \"\", "
                           "\"headers\": {\"Authorization\": \"Bearer {env:HAULD_TEST_TOKEN}\", "
                           "\"Accept\": \"application/json\"}}";
        const struct source_def *d = load_one(json);
        char **h = NULL;
        size_t n = 99;

        ck_assert(!d->available);
        ck_assert_ptr_nonnull(strstr(d->unavailable_reason, "HAULD_TEST_TOKEN"));
        ck_assert_int_eq(sources_build_headers(d, &h, &n), -ENOKEY);
        ck_assert_uint_eq(n, 99);

        setenv("HAULD_TEST_TOKEN", "a b/c%", 1); /* raw, not encoded */
        d = load_one(json);
        ck_assert(d->available);
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(h[0], "Authorization: Bearer a b/c%");
        ck_assert_str_eq(h[1], "Accept: application/json");
        sources_strv_free(h, n);

        static const char *const evil[] = {"abc\r\nX-Evil: 1", "abc\nX", "abc\r", "a\x7f"};
        for (size_t i = 0; i < 4; i++) {
                setenv("HAULD_TEST_TOKEN", evil[i], 1);
                h = NULL;
                ck_assert_int_eq(sources_build_headers(d, &h, &n), -EINVAL);
                ck_assert_ptr_null(h);
        }
        setenv("HAULD_TEST_TOKEN", "tab\tok", 1);
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_str_eq(h[0], "Authorization: Bearer tab\tok");
        sources_strv_free(h, n);

        /* over SOURCES_HEADER_LINE_MAX */
        char *big = malloc(SOURCES_HEADER_LINE_MAX + 1);
        memset(big, 'k', SOURCES_HEADER_LINE_MAX);
        big[SOURCES_HEADER_LINE_MAX] = '\0';
        setenv("HAULD_TEST_TOKEN", big, 1);
        free(big);
        ck_assert_int_eq(sources_build_headers(d, &h, &n), -E2BIG);
}
END_TEST

START_TEST(test_headers_none)
{
        char *b = body_with("");
        char **h = (char **)1;
        size_t n = 99;
        const struct source_def *d = load_one(b);

        free(b);
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_ptr_null(h);
        ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_headers_optional_secret)
{
        const char *json = "{\"search_url\": \"" GOOD_URL "\", \"items\": \"\", \"url\": \"\", "
                           "\"headers\": {\"Authorization\": \"Bearer {env?:HAULD_TEST_TOKEN}\", "
                           "\"Accept\": \"application/json\", \"X-Key\": \"{env:HAULD_TEST_KEY}\"}}";
        const struct source_def *d;
        char **h = NULL;
        size_t n = 99;

        /* the required secret decides availability, the optional one never */
        d = load_one(json);
        ck_assert(!d->available);
        ck_assert_str_eq(d->unavailable_reason, "environment variable HAULD_TEST_KEY is not set");
        ck_assert_int_eq(sources_build_headers(d, &h, &n), -ENOKEY);

        setenv("HAULD_TEST_KEY", "k", 1);
        d = load_one(json);
        ck_assert(d->available);
        ck_assert_ptr_null(d->unavailable_reason);
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_uint_eq(n, 2); /* Authorization left out */
        ck_assert_str_eq(h[0], "Accept: application/json");
        ck_assert_str_eq(h[1], "X-Key: k");
        sources_strv_free(h, n);

        setenv("HAULD_TEST_TOKEN", "", 1); /* empty is unset */
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_uint_eq(n, 2);
        sources_strv_free(h, n);

        setenv("HAULD_TEST_TOKEN", "t0k", 1); /* read when the request is built */
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(h[0], "Authorization: Bearer t0k");
        sources_strv_free(h, n);

        setenv("HAULD_TEST_TOKEN", "t0k\r\nX-Evil: 1", 1);
        h = (char **)1;
        ck_assert_int_eq(sources_build_headers(d, &h, &n), -EINVAL);
        ck_assert_ptr_eq(h, (char **)1);
}
END_TEST

START_TEST(test_headers_optional_only)
{
        const char *json = "{\"search_url\": \"" GOOD_URL "\", \"items\": \"\", \"url\": \"\", "
                           "\"headers\": {\"X-Both\": \"{env:HAULD_TEST_KEY}/{env?:HAULD_TEST_TOKEN}\"}}";
        const struct source_def *d;
        char **h = (char **)1;
        size_t n = 99;

        setenv("HAULD_TEST_KEY", "k", 1);
        d = load_one(json);
        ck_assert(d->available);
        /* the optional part is unset: the whole header goes, none is left */
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_ptr_null(h);
        ck_assert_uint_eq(n, 0);
        setenv("HAULD_TEST_TOKEN", "t", 1);
        ck_assert_int_eq(sources_build_headers(d, &h, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(h[0], "X-Both: k/t");
        sources_strv_free(h, n);
        /* the required part unset now: the request cannot be built */
        unsetenv("HAULD_TEST_KEY");
        ck_assert_int_eq(sources_build_headers(d, &h, &n), -ENOKEY);
}
END_TEST

START_TEST(test_query_length)
{
        char *b = body_with("\"max_query_length\": 100");
        const struct source_def *d = load_one(b);
        char q[512], *url;

        free(b);
        memset(q, 'a', 100);
        q[100] = '\0';
        ck_assert(sources_query_fits(d, q));
        ck_assert_int_eq(sources_build_url(d, q, 1, &url), 0);
        free(url);
        strcat(q, "a");
        ck_assert(!sources_query_fits(d, q));
        url = (char *)"untouched";
        ck_assert_int_eq(sources_build_url(d, q, 1, &url), -EMSGSIZE);
        ck_assert_int_eq(sources_build_url_redacted(d, q, 1, &url), -EMSGSIZE);
        ck_assert_str_eq(url, "untouched");

        /* characters, not bytes */
        q[0] = '\0';
        for (int i = 0; i < 100; i++)
                strcat(q, "\xc3\xa9");
        ck_assert(sources_query_fits(d, q));
        strcat(q, "\xe2\x82\xac");
        ck_assert(!sources_query_fits(d, q));

        b = body_with("");
        d = load_one(b);
        free(b);
        memset(q, 'a', 300);
        q[300] = '\0';
        ck_assert(sources_query_fits(d, q));
}
END_TEST

/* ---- download headers ------------------------------------------------- */

static const char dl_json[] = "{\"search_url\": \"" GOOD_URL "\", \"items\": \"\", \"url\": \"\", "
                              "\"headers\": {\"User-Agent\": \"acme/1.0 (ops@acme.example)\", "
                              "\"Authorization\": \"Bearer {env:HAULD_TEST_TOKEN}\"}, "
                              "\"download_hosts\": [\"upload.example.org\", \"*.cdn.example.net\"]}";

START_TEST(test_download_headers)
{
        static const char *const match[] = {
                "https://upload.example.org/a.jpg",
                "http://upload.example.org/a.jpg",
                "https://UPLOAD.Example.ORG/a.jpg",
                "https://user:pw@upload.example.org/a.jpg",
                "https://upload.example.org:8443/a.jpg",
                "https://upload.example.org./a.jpg",
                "https://upload%2Eexample.org/a.jpg",
                "https://upload.example.org/evil.example/?h=evil.example#x",
                "https://a.cdn.example.net/x",
                "https://a.b.cdn.example.net/x",
                "https://A.CDN.Example.net:81/x",
        };
        static const char *const other[] = {
                "https://example.org/a.jpg",
                "https://evil.example/upload.example.org",
                "https://evil.example/?h=upload.example.org",
                "https://upload.example.org.evil.example/a",
                "https://upload.example.org@evil.example/a",
                "https://evil.example#@upload.example.org/",
                "https://evil.example?@upload.example.org/",
                "https://upload.example.org%2eevil.example/a",
                "https://x.upload.example.org/a", /* an exact name covers no subdomain */
                "https://cdn.example.net/x",      /* "*." needs a label before the suffix */
                "https://badcdn.example.net/x",
                "https://acdn.example.net/x",
                "https://a.cdn.example.net.evil.example/x",
                "https://cdn.example.net.a/x",
                "https://[::1]/x",
                "https://127.0.0.1/x",
        };
        static const char *const bad[] = {
                "ftp://upload.example.org/a",       "upload.example.org/a", "not a url", "",
                "https://upload.example.org%2fx/a",
        };
        const struct source_def *d;
        char **h;
        size_t n;

        setenv("HAULD_TEST_TOKEN", "t", 1);
        d = load_one(dl_json);
        for (size_t i = 0; i < sizeof(match) / sizeof(match[0]); i++) {
                h = NULL;
                n = 0;
                ck_assert_msg(sources_download_headers(d, match[i], &h, &n) == 0, "%s", match[i]);
                ck_assert_msg(n == 2, "%s: %zu headers", match[i], n);
                ck_assert_str_eq(h[0], "User-Agent: acme/1.0 (ops@acme.example)");
                ck_assert_str_eq(h[1], "Authorization: Bearer t");
                sources_strv_free(h, n);
        }
        for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
                h = (char **)1;
                n = 99;
                ck_assert_msg(sources_download_headers(d, other[i], &h, &n) == 0, "%s", other[i]);
                ck_assert_msg(h == NULL && n == 0, "%s got headers", other[i]);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                h = (char **)1;
                ck_assert_msg(sources_download_headers(d, bad[i], &h, &n) == -EINVAL, "%s", bad[i]);
                ck_assert_ptr_eq(h, (char **)1);
        }
        ck_assert_int_eq(sources_download_headers(d, NULL, &h, &n), -EINVAL);
}
END_TEST

/* A source owns its search_url's host and its download_hosts: downloads
 * from there count under it. Headers still go to download_hosts only. */
START_TEST(test_own_host)
{
        const struct source_def *d = load_one(dl_json);
        char **h = NULL;
        size_t n = 0;

        ck_assert(sources_is_own_host(d, "https://api.example.org/media/1.jpg"));
        ck_assert(sources_is_own_host(d, "http://API.example.org:8080/x"));
        ck_assert(sources_is_own_host(d, "https://upload.example.org/a.jpg"));
        ck_assert(sources_is_own_host(d, "https://a.cdn.example.net/x"));
        ck_assert(!sources_is_own_host(d, "https://example.org/a.jpg"));
        ck_assert(!sources_is_own_host(d, "https://api.example.org.evil.example/a"));
        ck_assert(!sources_is_own_host(d, "not a url"));
        ck_assert(!sources_is_download_host(d, "https://api.example.org/media/1.jpg"));
        ck_assert_int_eq(sources_download_headers(d, "https://api.example.org/media/1.jpg", &h, &n), 0);
        ck_assert_ptr_null(h);
}
END_TEST

START_TEST(test_download_headers_secrets)
{
        const struct source_def *d = load_one(dl_json);
        char *b;
        char **h = (char **)1;
        size_t n = 99;

        /* a required secret unset: an error for its hosts, nothing to do elsewhere */
        ck_assert_int_eq(sources_download_headers(d, "https://upload.example.org/a", &h, &n), -ENOKEY);
        ck_assert_int_eq(sources_download_headers(d, "https://other.example/a", &h, &n), 0);
        ck_assert_ptr_null(h);
        ck_assert_uint_eq(n, 0);

        /* an optional one unset: its header is left out there too */
        b = body_with(
                "\"headers\": {\"Authorization\": \"Bearer {env?:HAULD_TEST_TOKEN}\", \"X-A\": \"a\"}, "
                "\"download_hosts\": [\"upload.example.org\"]");
        d = load_one(b);
        free(b);
        ck_assert_int_eq(sources_download_headers(d, "https://upload.example.org/a", &h, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(h[0], "X-A: a");
        sources_strv_free(h, n);

        /* no download_hosts: headers are for listing requests only */
        b = body_with("\"headers\": {\"X-A\": \"a\"}");
        d = load_one(b);
        free(b);
        h = (char **)1;
        ck_assert_int_eq(sources_download_headers(d, "https://api.example.org/a", &h, &n), 0);
        ck_assert_ptr_null(h);
        ck_assert_uint_eq(n, 0);
}
END_TEST

/* ---- JSON Pointer ----------------------------------------------------- */

/* RFC 6901 section 5. */
static const char rfc6901_doc[] =
        "{\"foo\": [\"bar\", \"baz\"], \"\": 0, \"a/b\": 1, \"c%d\": 2, \"e^f\": 3, "
        "\"g|h\": 4, \"i\\\\j\": 5, \"k\\\"l\": 6, \" \": 7, \"m~n\": 8, \"~1\": 9}";

START_TEST(test_pointer_rfc6901)
{
        json_t *doc = json_loads(rfc6901_doc, 0, NULL);
        static const struct {
                const char *pointer;
                int value;
        } ints[] = {
                {"/", 0},     {"/a~1b", 1}, {"/c%d", 2}, {"/e^f", 3},  {"/g|h", 4},
                {"/i\\j", 5}, {"/k\"l", 6}, {"/ ", 7},   {"/m~0n", 8}, {"/~01", 9},
        };

        ck_assert_ptr_nonnull(doc);
        ck_assert_ptr_eq(jsonptr_get(doc, ""), doc);
        ck_assert_ptr_eq(jsonptr_get(doc, "/foo"), json_object_get(doc, "foo"));
        ck_assert_str_eq(json_string_value(jsonptr_get(doc, "/foo/0")), "bar");
        ck_assert_str_eq(json_string_value(jsonptr_get(doc, "/foo/1")), "baz");
        for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
                json_t *v = jsonptr_get(doc, ints[i].pointer);
                ck_assert_msg(json_is_integer(v), "%s", ints[i].pointer);
                ck_assert_int_eq(json_integer_value(v), ints[i].value);
        }
        static const char *const absent[] = {
                "foo",
                "/foo/2",
                "/foo/01",
                "/foo/-",
                "/foo/+1",
                "/foo/ 1",
                "/foo/",
                "/foo/0/x",
                "/m~2n",
                "/m~",
                "/nope",
                "/a/b",
                "/foo/99999999999999999999",
        };
        for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
                ck_assert_msg(jsonptr_get(doc, absent[i]) == NULL, "%s", absent[i]);
        ck_assert_ptr_null(jsonptr_get(NULL, ""));
        json_decref(doc);
}
END_TEST

START_TEST(test_pointer_arrays)
{
        json_t *doc = json_loads("{\"imageinfo\": [{\"url\": \"https://u/1\"}], "
                                 "\"m\": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}",
                                 0, NULL);
        ck_assert_str_eq(json_string_value(jsonptr_get(doc, "/imageinfo/0/url")), "https://u/1");
        ck_assert_ptr_null(jsonptr_get(doc, "/imageinfo/1/url"));
        ck_assert_int_eq(json_integer_value(jsonptr_get(doc, "/m/0/10")), 10);
        ck_assert_ptr_null(jsonptr_get(doc, "/m/0/010"));
        json_decref(doc);

        ck_assert(jsonptr_valid(""));
        ck_assert(jsonptr_valid("/"));
        ck_assert(jsonptr_valid("/a~0~1/b"));
        ck_assert(!jsonptr_valid("a"));
        ck_assert(!jsonptr_valid("/a~"));
        ck_assert(!jsonptr_valid("/a~x"));
        ck_assert(!jsonptr_valid(NULL));
        char long_ptr[SOURCES_POINTER_MAX + 2];
        memset(long_ptr, '/', sizeof(long_ptr) - 1);
        long_ptr[SOURCES_POINTER_MAX] = '\0';
        ck_assert(jsonptr_valid(long_ptr));
        long_ptr[SOURCES_POINTER_MAX] = '/';
        long_ptr[SOURCES_POINTER_MAX + 1] = '\0';
        ck_assert(!jsonptr_valid(long_ptr));
}
END_TEST

/* ---- page parsing ----------------------------------------------------- */

static int parse(const struct source_def *d, const char *body, char ***urls, size_t *n)
{
        return sources_parse_page(d, body, strlen(body), urls, n);
}

START_TEST(test_page_array)
{
        const struct source_def *d = load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/results\", "
                                              "\"url\": \"/url\"}");
        const char *body = "{\"result_count\": 6, \"results\": ["
                           "{\"url\": \"https://a.example/1.jpg\"},"
                           "{\"url\": 5},"
                           "{\"title\": \"no url\"},"
                           "{\"url\": \"ftp://a.example/x\"},"
                           "{\"url\": \"https:///nohost\"},"
                           "{\"url\": \"javascript:alert(1)\"},"
                           "{\"url\": \"https://a.example/has space\"},"
                           "\"not an object\","
                           "{\"url\": \"HTTP://b.example/2.png?x=1#f\"}]}";
        char **urls;
        size_t n;

        ck_assert_int_eq(parse(d, body, &urls, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(urls[0], "https://a.example/1.jpg");
        ck_assert_str_eq(urls[1], "HTTP://b.example/2.png?x=1#f");
        sources_strv_free(urls, n);

        urls = (char **)1;
        ck_assert_int_eq(parse(d, "{\"results\": []}", &urls, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_ptr_null(urls);
}
END_TEST

START_TEST(test_page_object_order)
{
        const struct source_def *d =
                load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/query/pages\", "
                         "\"url\": \"/imageinfo/0/url\"}");
        const char *body =
                "{\"batchcomplete\": \"\", \"query\": {\"pages\": {"
                "\"30\": {\"title\": \"File:C.jpg\", \"imageinfo\": [{\"url\": \"https://u/c\"}]},"
                "\"10\": {\"title\": \"File:A.jpg\", \"imageinfo\": [{\"url\": \"https://u/a\"}]},"
                "\"-1\": {\"title\": \"File:Missing.jpg\", \"missing\": \"\"},"
                "\"20\": {\"title\": \"File:B.jpg\", \"imageinfo\": [{\"url\": \"https://u/b\"}]}}}}";
        char **urls;
        size_t n;

        ck_assert_int_eq(parse(d, body, &urls, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(urls[0], "https://u/c");
        ck_assert_str_eq(urls[1], "https://u/a");
        ck_assert_str_eq(urls[2], "https://u/b");
        sources_strv_free(urls, n);
        ck_assert_int_eq(parse(d, "{\"query\": {\"pages\": {}}}", &urls, &n), 0);
        ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_page_bad)
{
        const struct source_def *d = load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/results\", "
                                              "\"url\": \"/url\"}");
        static const char *const bodies[] = {
                "<html>rate limited</html>",
                "",
                "{\"results\": [",
                "{\"error\": \"bad key\"}",
                "{\"results\": \"none\"}",
                "{\"results\": null}",
                "[]",
                "\"just a string\"",
        };
        char **urls = (char **)1;
        size_t n = 99;

        for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
                ck_assert_msg(parse(d, bodies[i], &urls, &n) == -EBADMSG, "%s", bodies[i]);
        ck_assert_ptr_eq(urls, (char **)1);
        ck_assert_uint_eq(n, 99);
        /* a body may hold NULs; it is not JSON then */
        ck_assert_int_eq(sources_parse_page(d, "{\"results\": []}\0x", 17, &urls, &n), -EBADMSG);
}
END_TEST

START_TEST(test_page_missing_items_allowed)
{
        const struct source_def *d = load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/items\", "
                                              "\"url\": \"/link\", \"allow_missing_items\": true}");
        char **urls;
        size_t n;

        ck_assert(d->allow_missing_items);
        ck_assert_int_eq(parse(d, "{\"kind\": \"customsearch#search\"}", &urls, &n), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(parse(d, "{\"items\": 5}", &urls, &n), -EBADMSG);
        ck_assert_int_eq(parse(d, "not json", &urls, &n), -EBADMSG);
}
END_TEST

START_TEST(test_page_root_array_of_strings)
{
        const struct source_def *d =
                load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"\", \"url\": \"\"}");
        char **urls;
        size_t n;

        ck_assert_int_eq(parse(d, "[\"https://a/1\", 5, null, \"http://b/2\"]", &urls, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(urls[1], "http://b/2");
        sources_strv_free(urls, n);
}
END_TEST

/* A body of exactly `size` bytes: `count` results, then padding. */
static char *big_page(size_t size, size_t count)
{
        char *b = malloc(size + 1);
        size_t len = 0;

        len += sprintf(b, "{\"results\": [");
        for (size_t i = 0; i < count; i++)
                len += sprintf(b + len, "%s{\"url\": \"https://h/%zu\"}", i ? "," : "", i);
        len += sprintf(b + len, "], \"pad\": \"");
        ck_assert_uint_lt(len + 2, size);
        memset(b + len, 'p', size - len - 2);
        memcpy(b + size - 2, "\"}", 2);
        b[size] = '\0';
        return b;
}

START_TEST(test_page_limits)
{
        const struct source_def *d = load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/results\", "
                                              "\"url\": \"/url\"}");
        char *body = big_page(SOURCES_PAGE_BODY_MAX, SOURCES_PAGE_ITEMS_MAX + 5);
        char **urls;
        size_t n;

        ck_assert_int_eq(sources_parse_page(d, body, SOURCES_PAGE_BODY_MAX, &urls, &n), 0);
        ck_assert_uint_eq(n, SOURCES_PAGE_ITEMS_MAX);
        ck_assert_str_eq(urls[SOURCES_PAGE_ITEMS_MAX - 1], "https://h/9999");
        sources_strv_free(urls, n);
        struct sources_page pg;
        ck_assert_int_eq(sources_parse_listing(d, body, SOURCES_PAGE_BODY_MAX, &pg), 0);
        ck_assert_uint_eq(pg.n, SOURCES_PAGE_ITEMS_MAX);
        ck_assert_uint_eq(pg.results, SOURCES_PAGE_ITEMS_MAX + 5);
        sources_page_clear(&pg);
        free(body);

        body = big_page(SOURCES_PAGE_BODY_MAX + 1, 1);
        ck_assert_int_eq(sources_parse_page(d, body, SOURCES_PAGE_BODY_MAX + 1, &urls, &n), -EFBIG);
        free(body);
}
END_TEST

START_TEST(test_page_total_and_results)
{
        const struct source_def *d = load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/results\", "
                                              "\"url\": \"/url\", \"total\": \"/meta/total\"}");
        static const struct {
                const char *total; /* JSON text of meta.total; NULL: no meta */
                int64_t want;
        } cases[] = {
                {"45", 45},
                {"0", 0},
                {"\"12300\"", 12300},
                {"\"999999999999999999\"", 999999999999999999LL},
                {"\"1000000000000000000\"", -1}, /* 19 digits */
                {"\"\"", -1},
                {"\"12a\"", -1},
                {"\"-5\"", -1},
                {"\" 5\"", -1},
                {"-5", -1},
                {"4.5", -1},
                {"true", -1},
                {"null", -1},
                {"[5]", -1},
                {NULL, -1},
        };
        struct sources_page pg;
        char *body;

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                if (cases[i].total)
                        ck_assert_int_ge(asprintf(&body,
                                                  "{\"meta\": {\"total\": %s}, \"results\": [{\"url\": 5}, "
                                                  "{\"url\": \"https://a.example/1\"}, {\"x\": 1}]}",
                                                  cases[i].total),
                                         0);
                else
                        body = strdup(
                                "{\"results\": [{\"url\": 5}, {\"url\": \"https://a.example/1\"}, {}]}");
                pg = parse_ok(d, body);
                ck_assert_msg(pg.total == cases[i].want, "%s: total %lld", cases[i].total,
                              (long long)pg.total);
                ck_assert_uint_eq(pg.results, 3); /* results without a usable URL count */
                ck_assert_uint_eq(pg.n, 1);
                ck_assert_str_eq(pg.urls[0], "https://a.example/1");
                sources_page_clear(&pg);
                ck_assert_ptr_null(pg.urls);
                ck_assert_uint_eq(pg.n, 0);
                free(body);
        }

        /* a page of results none of which is usable is not an empty page */
        pg = parse_ok(d, "{\"results\": [{\"url\": \"ftp://x/1\"}, {\"url\": null}]}");
        ck_assert_uint_eq(pg.results, 2);
        ck_assert_uint_eq(pg.n, 0);
        ck_assert_ptr_null(pg.urls);
        ck_assert_int_eq(sources_listing_next(d, 1, 2, pg.total, pg.results, 200), LIST_MORE);
        sources_page_clear(&pg);
        sources_page_clear(NULL);

        /* a source without `total` ignores one in the page */
        d = load_one("{\"search_url\": \"" GOOD_URL "\", \"items\": \"/results\", \"url\": \"/url\"}");
        pg = parse_ok(d, "{\"meta\": {\"total\": 45}, \"total\": 45, \"results\": []}");
        ck_assert_int_eq(pg.total, -1);
        ck_assert_uint_eq(pg.results, 0);

        /* errors leave *ret alone */
        memset(&pg, 0x5a, sizeof(pg));
        ck_assert_int_eq(sources_parse_listing(d, "{", 1, &pg), -EBADMSG);
        ck_assert_uint_eq(pg.n, 0x5a5a5a5a5a5a5a5aULL);
}
END_TEST

/* ---- the end of a listing ----------------------------------------------- */

/* A source of per_page 10 whose search_url pages with `paging` and whose
 * file adds `extra` ("" for nothing). */
static const struct source_def *paged_source(const char *paging, const char *extra)
{
        char *json;
        ck_assert_int_ge(asprintf(&json,
                                  "{\"search_url\": \"https://h.example/s?q={query}%s\", \"per_page\": 10, "
                                  "\"items\": \"/r\", \"url\": \"/u\"%s%s}",
                                  paging, *extra ? ", " : "", extra),
                         0);
        const struct source_def *d = load_one(json);
        free(json);
        return d;
}

START_TEST(test_listing_end_signals)
{
        const struct source_def *d = paged_source("&p={page}", "");

        ck_assert_int_eq(sources_last_page(d), INT_MAX);
        ck_assert_int_eq(sources_listing_next(d, 1, 10, -1, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 500, 5000, -1, 10, 206), LIST_MORE);
        /* an empty page, always */
        ck_assert_int_eq(sources_listing_next(d, 1, 0, -1, 0, 200), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 7, 60, 1000, 0, 200), LIST_EXHAUSTED);
        /* the total, counted or by position */
        ck_assert_int_eq(sources_listing_next(d, 2, 20, 25, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 3, 25, 25, 5, 200), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 3, 22, 25, 2, 200),
                         LIST_EXHAUSTED); /* 3 pages of 10 >= 25 */
        ck_assert_int_eq(sources_listing_next(d, 2, 20, 21, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 1, 10, 0, 10, 200), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 1, 10, 10, 10, 200), LIST_EXHAUSTED);
        /* failures are not ends; without end_status a 4xx is one too */
        static const int fails[] = {0, 199, 301, 304, 400, 404, 429, 500, 503};
        for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++)
                ck_assert_int_eq(sources_listing_next(d, 2, 10, -1, 10, fails[i]), LIST_FAILED);
        ck_assert(!sources_end_status(d, 2, 400));
        /* the largest page number: no next one */
        ck_assert_int_eq(sources_listing_next(d, INT_MAX, 10, -1, 10, 200), LIST_PAGE_LIMIT);
}
END_TEST

START_TEST(test_listing_end_status)
{
        const struct source_def *d = paged_source("&p={page}", "\"end_status\": [400, 404]");

        ck_assert(!sources_end_status(d, 1, 400)); /* page 1 is never past the end */
        ck_assert(!sources_end_status(d, 0, 400));
        ck_assert(sources_end_status(d, 2, 400));
        ck_assert(sources_end_status(d, 9, 404));
        ck_assert(!sources_end_status(d, 2, 403));
        ck_assert(!sources_end_status(d, 2, 200));
        ck_assert_int_eq(sources_listing_next(d, 2, 10, -1, 0, 400), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 5, 40, -1, 0, 404), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_listing_next(d, 1, 0, -1, 0, 400), LIST_FAILED);
        ck_assert_int_eq(sources_listing_next(d, 2, 10, -1, 0, 403), LIST_FAILED);
        ck_assert_int_eq(sources_listing_next(d, 2, 10, -1, 0, 500), LIST_FAILED);
}
END_TEST

START_TEST(test_listing_single_page)
{
        const struct source_def *d = paged_source("", "\"max_pages\": 5");
        char *url;

        ck_assert(!d->paged);
        ck_assert_int_eq(sources_last_page(d), 1);
        ck_assert_int_eq(sources_listing_next(d, 1, 10, -1, 10, 200), LIST_SINGLE_PAGE);
        ck_assert_int_eq(sources_listing_next(d, 1, 0, -1, 0, 200), LIST_EXHAUSTED);
        ck_assert_int_eq(sources_build_url(d, "q", 1, &url), 0);
        free(url);
        ck_assert_int_eq(sources_build_url(d, "q", 2, &url), -ERANGE);
}
END_TEST

START_TEST(test_listing_max_pages)
{
        const struct source_def *d = paged_source("&p={page}", "\"max_pages\": 3");
        char *url;

        ck_assert_int_eq(sources_last_page(d), 3);
        ck_assert_int_eq(sources_listing_next(d, 1, 10, -1, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 2, 20, -1, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 3, 30, -1, 10, 200), LIST_PAGE_LIMIT);
        ck_assert_int_eq(sources_listing_next(d, 3, 30, 30, 10, 200), LIST_EXHAUSTED); /* the end first */
        ck_assert_int_eq(sources_build_url(d, "q", 3, &url), 0);
        ck_assert_str_eq(url, "https://h.example/s?q=q&p=3");
        free(url);
        url = (char *)"untouched";
        ck_assert_int_eq(sources_build_url(d, "q", 4, &url), -ERANGE);
        ck_assert_int_eq(sources_build_url_redacted(d, "q", 4, &url), -ERANGE);
        ck_assert_str_eq(url, "untouched");

        d = paged_source("&p={page}", "\"max_pages\": 1");
        ck_assert_int_eq(sources_listing_next(d, 1, 10, -1, 10, 200), LIST_PAGE_LIMIT);
        d = paged_source("&p={page}", "\"max_pages\": 10000");
        ck_assert_int_eq(sources_listing_next(d, 9999, 99990, -1, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 10000, 100000, -1, 10, 200), LIST_PAGE_LIMIT);
        ck_assert_int_eq(sources_build_url(d, "q", 10001, &url), -ERANGE);
}
END_TEST

/* Google's Custom Search: num=10, and start may not pass 91 (results 91..100
 * are the last page); the URL of page 11 (start=101) is never built. */
START_TEST(test_listing_max_results_start)
{
        const struct source_def *d = paged_source("&num={per_page}&start={start}", "\"max_results\": 100");
        char *url;

        ck_assert_int_eq(sources_last_page(d), 10);
        for (int page = 1; page <= 9; page++)
                ck_assert_int_eq(sources_listing_next(d, page, page * 10, 12300, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 10, 100, 12300, 10, 200), LIST_RESULT_LIMIT);
        /* more results than asked per page: counted ones reach the limit early */
        ck_assert_int_eq(sources_listing_next(d, 5, 100, -1, 20, 200), LIST_RESULT_LIMIT);
        ck_assert_int_eq(sources_build_url(d, "q", 10, &url), 0);
        ck_assert_str_eq(url, "https://h.example/s?q=q&num=10&start=91");
        free(url);
        ck_assert_int_eq(sources_build_url(d, "q", 11, &url), -ERANGE);

        /* a limit that is not a multiple of per_page: the page that starts
         * before it is the last */
        d = paged_source("&num={per_page}&start={start}", "\"max_results\": 95");
        ck_assert_int_eq(sources_last_page(d), 10);
        ck_assert_int_eq(sources_listing_next(d, 9, 90, -1, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 10, 100, -1, 10, 200), LIST_RESULT_LIMIT);
        d = paged_source("&num={per_page}&start={start}", "\"max_results\": 1");
        ck_assert_int_eq(sources_last_page(d), 1);
        ck_assert_int_eq(sources_listing_next(d, 1, 10, -1, 10, 200), LIST_RESULT_LIMIT);
        ck_assert_int_eq(sources_build_url(d, "q", 2, &url), -ERANGE);
}
END_TEST

START_TEST(test_listing_max_results_offset)
{
        const struct source_def *d = paged_source("&o={offset}", "\"max_results\": 30");
        char *url;

        ck_assert_int_eq(sources_last_page(d), 3);
        ck_assert_int_eq(sources_listing_next(d, 2, 20, -1, 10, 200), LIST_MORE);
        ck_assert_int_eq(sources_listing_next(d, 3, 30, -1, 10, 200), LIST_RESULT_LIMIT);
        ck_assert_int_eq(sources_build_url(d, "q", 3, &url), 0);
        ck_assert_str_eq(url, "https://h.example/s?q=q&o=20");
        free(url);
        ck_assert_int_eq(sources_build_url(d, "q", 4, &url), -ERANGE);

        /* both limits: the nearer one counts */
        d = paged_source("&p={page}", "\"max_results\": 100, \"max_pages\": 2");
        ck_assert_int_eq(sources_last_page(d), 2);
        ck_assert_int_eq(sources_listing_next(d, 2, 20, -1, 10, 200), LIST_PAGE_LIMIT);
        d = paged_source("&p={page}", "\"max_results\": 20, \"max_pages\": 5");
        ck_assert_int_eq(sources_last_page(d), 2);
        ck_assert_int_eq(sources_listing_next(d, 2, 20, -1, 10, 200), LIST_RESULT_LIMIT);
        d = paged_source("&p={page}", "\"max_results\": 100000");
        ck_assert_int_eq(sources_last_page(d), 10000);
}
END_TEST

START_TEST(test_list_end_strings)
{
        ck_assert_str_eq(sources_list_end_to_string(LIST_MORE), "more");
        ck_assert_str_eq(sources_list_end_to_string(LIST_EXHAUSTED), "exhausted");
        ck_assert_str_eq(sources_list_end_to_string(LIST_SINGLE_PAGE), "single_page");
        ck_assert_str_eq(sources_list_end_to_string(LIST_PAGE_LIMIT), "page_limit");
        ck_assert_str_eq(sources_list_end_to_string(LIST_RESULT_LIMIT), "result_limit");
        ck_assert_str_eq(sources_list_end_to_string(LIST_FAILED), "failed");
        ck_assert_str_eq(sources_list_end_to_string((enum sources_list_end)99), "unknown");
}
END_TEST

/* ---- token bucket ----------------------------------------------------- */

START_TEST(test_ratelimit_steps)
{
        struct ratelimit rl;
        int64_t now = 1000;

        ratelimit_init(&rl, 2, 1);
        ck_assert_int_eq(ratelimit_take(&rl, now), 0);
        ck_assert_int_eq(ratelimit_take(&rl, now), 500);
        ck_assert_int_eq(ratelimit_take(&rl, now + 499), 1);
        ck_assert_int_eq(ratelimit_take(&rl, now + 500), 0);
        ck_assert_int_eq(ratelimit_take(&rl, now + 500), 500);
        /* a long idle time fills the bucket only to burst */
        ck_assert_int_eq(ratelimit_take(&rl, now + 100000), 0);
        ck_assert_int_eq(ratelimit_take(&rl, now + 100000), 500);
        /* a clock going backwards refills nothing */
        ck_assert_int_gt(ratelimit_take(&rl, now), 0);
}
END_TEST

START_TEST(test_ratelimit_burst_and_fractions)
{
        struct ratelimit rl;
        int64_t now = 0;

        ratelimit_init(&rl, 1, 3);
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(ratelimit_take(&rl, now), 0);
        ck_assert_int_eq(ratelimit_take(&rl, now), 1000);

        ratelimit_init(&rl, 0.5, 1);
        ck_assert_int_eq(ratelimit_take(&rl, now), 0);
        ck_assert_int_eq(ratelimit_take(&rl, now), 2000);

        /* 3/s: waits round up, and waiting that long is always enough */
        ratelimit_init(&rl, 3, 1);
        for (int i = 0; i < 100; i++) {
                ck_assert_int_eq(ratelimit_take(&rl, now), 0);
                int64_t w = ratelimit_take(&rl, now);
                ck_assert_int_ge(w, 333);
                ck_assert_int_le(w, 334);
                now += w;
        }
        /* 100 requests take no less than 99 intervals */
        ck_assert_int_ge(now, 99 * 1000 / 3);
}
END_TEST

START_TEST(test_ratelimit_unlimited)
{
        struct ratelimit rl;

        ratelimit_init(&rl, 0, 0);
        for (int i = 0; i < 1000; i++)
                ck_assert_int_eq(ratelimit_take(&rl, 5), 0);
        ratelimit_init(&rl, SOURCES_RPS_MAX, 1);
        ck_assert_int_eq(ratelimit_take(&rl, 0), 0);
        ck_assert_int_eq(ratelimit_take(&rl, 0), 1);
        ck_assert_int_eq(ratelimit_take(&rl, 1), 0);
}
END_TEST

static Suite *sources_suite(void)
{
        Suite *s = suite_create("sources");
        TCase *load = tcase_create("load");
        TCase *tmpl = tcase_create("templates");
        TCase *ptr = tcase_create("pointer");
        TCase *page = tcase_create("page");
        TCase *rate = tcase_create("ratelimit");

        tcase_add_checked_fixture(load, setup, teardown);
        tcase_add_test(load, test_load_good);
        tcase_add_test(load, test_load_sorted_and_dirs_ignored);
        tcase_add_test(load, test_load_missing_dir);
        tcase_add_test(load, test_load_not_a_dir);
        tcase_add_loop_test(load, test_load_errors, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
        tcase_add_test(load, test_load_required);
        tcase_add_test(load, test_load_limits);
        tcase_add_test(load, test_load_listing_limits);
        tcase_add_test(load, test_load_host_limits);
        tcase_add_test(load, test_load_file_size);
        tcase_add_test(load, test_load_max_files);
        tcase_add_test(load, test_load_template_and_header_limits);
        tcase_add_test(load, test_load_error_untouched_on_success);
        tcase_add_test(load, test_examples_load);
        tcase_add_test(load, test_examples_read_provider_pages);
        suite_add_tcase(s, load);

        tcase_add_checked_fixture(tmpl, setup, teardown);
        tcase_add_test(tmpl, test_url_hostile_queries);
        tcase_add_test(tmpl, test_url_offset_start);
        tcase_add_test(tmpl, test_url_unpaged_and_too_long);
        tcase_add_test(tmpl, test_url_env);
        tcase_add_test(tmpl, test_headers);
        tcase_add_test(tmpl, test_headers_none);
        tcase_add_test(tmpl, test_headers_optional_secret);
        tcase_add_test(tmpl, test_headers_optional_only);
        tcase_add_test(tmpl, test_query_length);
        tcase_add_test(tmpl, test_download_headers);
        tcase_add_test(tmpl, test_own_host);
        tcase_add_test(tmpl, test_download_headers_secrets);
        suite_add_tcase(s, tmpl);

        tcase_add_test(ptr, test_pointer_rfc6901);
        tcase_add_test(ptr, test_pointer_arrays);
        suite_add_tcase(s, ptr);

        tcase_add_checked_fixture(page, setup, teardown);
        tcase_add_test(page, test_page_array);
        tcase_add_test(page, test_page_object_order);
        tcase_add_test(page, test_page_bad);
        tcase_add_test(page, test_page_missing_items_allowed);
        tcase_add_test(page, test_page_root_array_of_strings);
        tcase_add_test(page, test_page_limits);
        tcase_add_test(page, test_page_total_and_results);
        tcase_add_test(page, test_listing_end_signals);
        tcase_add_test(page, test_listing_end_status);
        tcase_add_test(page, test_listing_single_page);
        tcase_add_test(page, test_listing_max_pages);
        tcase_add_test(page, test_listing_max_results_start);
        tcase_add_test(page, test_listing_max_results_offset);
        tcase_add_test(page, test_list_end_strings);
        tcase_set_timeout(page, 30);
        suite_add_tcase(s, page);

        tcase_add_test(rate, test_ratelimit_steps);
        tcase_add_test(rate, test_ratelimit_burst_and_fractions);
        tcase_add_test(rate, test_ratelimit_unlimited);
        suite_add_tcase(s, rate);
        return s;
}

int main(void) { return testutil_run(sources_suite()); }

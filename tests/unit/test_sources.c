/* Unit tests of daemon/sources.c: loading and its errors, the shipped
 * examples, templating, JSON Pointer, page parsing and the token bucket
 * (stepped clock). Each test works in its own temp directory. */
#include "autoconfig.h"

#include <errno.h>
#include <sys/stat.h>

#include "tests/unit/testutil.h"
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
                            "\"requests_per_second\": 2.5, \"headers\": {\"Accept\": \"application/json\"}");
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

START_TEST(test_examples_load)
{
        char *dir = examples_dir();
        struct sources_error err;
        char *url;

        unsetenv("PIXABAY_KEY");
        unsetenv("GOOGLE_CSE_KEY");
        unsetenv("GOOGLE_CSE_CX");
        int r = sources_load_dir(dir, &set, &err);
        ck_assert_msg(r == 0, "%s: %d %s [%s] %s", dir, r, err.file, err.field, err.message);
        ck_assert_uint_eq(sources_count(set), 4);
        ck_assert_str_eq(sources_at(set, 0)->name, "google-cse");
        ck_assert_str_eq(sources_at(set, 1)->name, "openverse");
        ck_assert_str_eq(sources_at(set, 2)->name, "pixabay");
        ck_assert_str_eq(sources_at(set, 3)->name, "wikimedia-commons");
        ck_assert(sources_find(set, "openverse")->available);
        ck_assert(sources_find(set, "wikimedia-commons")->available);
        ck_assert(!sources_find(set, "pixabay")->available);
        ck_assert_ptr_nonnull(strstr(sources_find(set, "pixabay")->unavailable_reason, "PIXABAY_KEY"));
        ck_assert(!sources_find(set, "google-cse")->available);
        ck_assert_int_le(sources_find(set, "google-cse")->per_page, 10);

        url = url_of("openverse", "red car", 2);
        ck_assert_str_eq(url, "https://api.openverse.org/v1/images/?q=red%20car&page=2&page_size=20");
        free(url);
        url = url_of("wikimedia-commons", "red car", 3);
        ck_assert_ptr_nonnull(strstr(url, "gsrsearch=red%20car"));
        ck_assert_ptr_nonnull(strstr(url, "gsroffset=40"));
        ck_assert_ptr_nonnull(strstr(url, "gsrlimit=20"));
        ck_assert_ptr_nonnull(strstr(url, "gsrnamespace=6"));
        free(url);

        setenv("PIXABAY_KEY", "k1", 1);
        setenv("GOOGLE_CSE_KEY", "k2", 1);
        setenv("GOOGLE_CSE_CX", "c:x", 1);
        sources_free(set);
        set = NULL;
        ck_assert_int_eq(sources_load_dir(dir, &set, &err), 0);
        ck_assert(sources_find(set, "pixabay")->available);
        ck_assert(sources_find(set, "google-cse")->available);
        url = url_of("pixabay", "cats", 1);
        ck_assert_str_eq(url, "https://pixabay.com/api/?key=k1&q=cats&image_type=photo&page=1&per_page=20");
        free(url);
        url = url_of("google-cse", "cats", 2);
        ck_assert_ptr_nonnull(strstr(url, "key=k2&cx=c%3Ax&q=cats&searchType=image&num=10&start=11"));
        free(url);
        unsetenv("PIXABAY_KEY");
        unsetenv("GOOGLE_CSE_KEY");
        unsetenv("GOOGLE_CSE_CX");
        free(dir);
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
        free(body);

        body = big_page(SOURCES_PAGE_BODY_MAX + 1, 1);
        ck_assert_int_eq(sources_parse_page(d, body, SOURCES_PAGE_BODY_MAX + 1, &urls, &n), -EFBIG);
        free(body);
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
        tcase_add_test(load, test_load_file_size);
        tcase_add_test(load, test_load_max_files);
        tcase_add_test(load, test_load_template_and_header_limits);
        tcase_add_test(load, test_load_error_untouched_on_success);
        tcase_add_test(load, test_examples_load);
        suite_add_tcase(s, load);

        tcase_add_checked_fixture(tmpl, setup, teardown);
        tcase_add_test(tmpl, test_url_hostile_queries);
        tcase_add_test(tmpl, test_url_offset_start);
        tcase_add_test(tmpl, test_url_unpaged_and_too_long);
        tcase_add_test(tmpl, test_url_env);
        tcase_add_test(tmpl, test_headers);
        tcase_add_test(tmpl, test_headers_none);
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
        tcase_set_timeout(page, 30);
        suite_add_tcase(s, page);

        tcase_add_test(rate, test_ratelimit_steps);
        tcase_add_test(rate, test_ratelimit_burst_and_fractions);
        tcase_add_test(rate, test_ratelimit_unlimited);
        suite_add_tcase(s, rate);
        return s;
}

int main(void) { return testutil_run(sources_suite()); }

/* Unit tests of api/job_request.c (POST /v1/jobs bodies: every field at its
 * limits and one past, types, shapes, duplicates) and of api/jobjson.c
 * (the job and item objects as the API shows them). */
#include "autoconfig.h"

#include "tests/unit/testutil.h"

#include <errno.h>
#include <stdarg.h>

#include "api/job_request.h"
#include "api/jobjson.h"
#include "api/problem.h"

/* ---- helpers ------------------------------------------------------------ */

struct result {
        int r;
        struct job *job;
        struct item *items;
        size_t n;
        json_t *errors;
};

static struct result res;

static void result_clear(void)
{
        job_free(res.job);
        items_free(res.items, res.n);
        json_decref(res.errors);
        memset(&res, 0, sizeof(res));
}

static int parse_len(const char *body, size_t len)
{
        result_clear();
        res.r = job_request_parse(body, len, &res.job, &res.items, &res.n, &res.errors);
        return res.r;
}

static int parse(const char *body) { return parse_len(body, strlen(body)); }

/* Is field named in the errors of the last parse? */
static bool has_error(const char *field)
{
        size_t i;
        json_t *e;
        json_array_foreach(res.errors, i, e)
        {
                if (strcmp(json_string_value(json_object_get(e, "field")), field) == 0)
                        return true;
        }
        return false;
}

static void assert_invalid(const char *body, const char *field)
{
        ck_assert_int_eq(parse(body), -EINVAL);
        ck_assert_ptr_nonnull(res.errors);
        ck_assert_msg(has_error(field), "no error for %s in %s", field,
                      json_dumps(res.errors, JSON_COMPACT));
        ck_assert_ptr_null(res.job);
}

static void assert_valid(const char *body)
{
        ck_assert_msg(parse(body) == 0, "%s rejected: %s", body,
                      res.errors ? json_dumps(res.errors, JSON_COMPACT) : "(no errors)");
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
        char *s;
        va_list ap;
        va_start(ap, f);
        ck_assert_int_ge(vasprintf(&s, f, ap), 0);
        va_end(ap);
        return s;
}

static char *repeat(const char *unit, size_t n)
{
        size_t ul = strlen(unit);
        char *s = malloc(ul * n + 1);
        for (size_t i = 0; i < n; i++)
                memcpy(s + i * ul, unit, ul);
        s[ul * n] = '\0';
        return s;
}

/* {"urls": [n distinct URLs]} */
static char *urls_body(size_t n)
{
        size_t cap = 64 + n * 48, len = 0;
        char *s = malloc(cap);
        len += (size_t)sprintf(s, "{\"urls\":[");
        for (size_t i = 0; i < n; i++)
                len += (size_t)sprintf(s + len, "%s\"http://example.com/%zu.jpg\"", i ? "," : "", i);
        sprintf(s + len, "]}");
        return s;
}

/* {"query":"q","sources":[n names]} */
static char *sources_body(size_t n)
{
        char *s = strdup("{\"query\":\"q\",\"sources\":[");
        for (size_t i = 0; i < n; i++) {
                char *t = fmt("%s%s\"src%zu\"", s, i ? "," : "", i);
                free(s);
                s = t;
        }
        char *t = fmt("%s]}", s);
        free(s);
        return t;
}

static void check_body(char *body, int want, const char *field)
{
        if (want == 0)
                assert_valid(body);
        else
                assert_invalid(body, field);
        free(body);
}

/* ---- valid requests and defaults ----------------------------------------- */

START_TEST(test_valid_url_job)
{
        assert_valid("{\"urls\":[\"https://example.com/a.jpg\",\"http://example.org:8080/b.png\"],"
                     "\"max\":7,\"timeout\":12.5,\"priority\":3,\"label\":\"cars\"}");
        ck_assert_int_eq(res.n, 2);
        ck_assert_int_eq(res.job->max, 7);
        ck_assert(res.job->timeout == 12.5);
        ck_assert_int_eq(res.job->priority, 3);
        ck_assert_str_eq(res.job->label, "cars");
        ck_assert_ptr_null(res.job->query);
        ck_assert_int_eq(res.job->nsources, 0);
        for (size_t i = 0; i < res.n; i++) {
                ck_assert_int_eq(res.items[i].index, (int)i);
                ck_assert_int_eq(res.items[i].state, ITEM_PENDING);
                ck_assert_ptr_null(res.items[i].error.code);
        }
        ck_assert_str_eq(res.items[0].url, "https://example.com/a.jpg");
        ck_assert_str_eq(res.items[0].source, "example.com");
        ck_assert_str_eq(res.items[1].source, "example.org:8080");
        ck_assert_ptr_null(res.items[0].filename);
        result_clear();
}
END_TEST

START_TEST(test_defaults)
{
        assert_valid("{\"urls\":[\"https://example.com/a.jpg\"]}");
        ck_assert_int_eq(res.job->max, 1); /* every URL given */
        ck_assert_int_eq(res.job->priority, 0);
        ck_assert(res.job->timeout == 0); /* the handler fills GLOBAL_JOB_TIMEOUT */
        ck_assert_str_eq(res.job->label, "");
        ck_assert(res.job->limits.source_timeout == 0 && res.job->limits.stall_timeout == 0);
        ck_assert_int_eq(res.job->limits.max_retries, -1);
        result_clear();
        assert_valid("{\"query\":\"cats\",\"sources\":[\"s\"]}");
        ck_assert_int_eq(res.job->max, JOB_DEFAULT_MAX);
        result_clear();
        assert_valid("{\"query\":\"cats\",\"sources\":[\"s\"],\"urls\":[\"https://a.com/1\",\"https://a.com/"
                     "2\"]}");
        ck_assert_int_eq(res.job->max, JOB_DEFAULT_MAX + 2);
        result_clear();
        assert_valid("{\"urls\":[\"https://example.com/a.jpg\"],\"max\":7,\"source_timeout\":5,"
                     "\"request_timeout\":0.5,\"stall_timeout\":10,\"max_retries\":0}");
        ck_assert_int_eq(res.job->max, 7);
        ck_assert(res.job->limits.source_timeout == 5 && res.job->limits.request_timeout == 0.5);
        ck_assert(res.job->limits.stall_timeout == 10);
        ck_assert_int_eq(res.job->limits.max_retries, 0);
        result_clear();
}
END_TEST

START_TEST(test_query_job)
{
        assert_valid("{\"query\":\"red cars\",\"sources\":[\"openverse\",\"wikimedia\"]}");
        ck_assert_str_eq(res.job->query, "red cars");
        ck_assert_int_eq(res.job->nsources, 2);
        ck_assert_str_eq(res.job->sources[1], "wikimedia");
        ck_assert_int_eq(res.n, 0);
        ck_assert_ptr_null(res.items);
        result_clear();
}
END_TEST

START_TEST(test_query_and_urls)
{
        assert_valid("{\"query\":\"q\",\"sources\":[\"openverse\"],\"urls\":[\"https://a.example/x\"]}");
        ck_assert_int_eq(res.n, 1);
        ck_assert_int_eq(res.job->nsources, 1);
        result_clear();
}
END_TEST

/* ---- limits -------------------------------------------------------------- */

START_TEST(test_max_limits)
{
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":0}", "max");
        assert_valid("{\"urls\":[\"https://e.com/a\"],\"max\":1}");
        assert_valid("{\"urls\":[\"https://e.com/a\"],\"max\":10000}");
        ck_assert_int_eq(res.job->max, 10000);
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":10001}", "max");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":-1}", "max");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"source_timeout\":0.5}", "source_timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"source_timeout\":86401}", "source_timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"request_timeout\":0.05}", "request_timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"stall_timeout\":\"5\"}", "stall_timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max_retries\":101}", "max_retries");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max_retries\":-1}", "max_retries");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":99999999999999999}", "max");
        result_clear();
}
END_TEST

START_TEST(test_priority_limits)
{
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"priority\":-11}", "priority");
        assert_valid("{\"urls\":[\"https://e.com/a\"],\"priority\":-10}");
        ck_assert_int_eq(res.job->priority, -10);
        assert_valid("{\"urls\":[\"https://e.com/a\"],\"priority\":10}");
        ck_assert_int_eq(res.job->priority, 10);
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"priority\":11}", "priority");
        result_clear();
}
END_TEST

START_TEST(test_timeout_limits)
{
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"timeout\":0}", "timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"timeout\":0.5}", "timeout");
        assert_valid("{\"urls\":[\"https://e.com/a\"],\"timeout\":1}");
        ck_assert(res.job->timeout == 1.0);
        assert_valid("{\"urls\":[\"https://e.com/a\"],\"timeout\":86400}");
        ck_assert(res.job->timeout == 86400.0);
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"timeout\":86400.5}", "timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"timeout\":86401}", "timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"timeout\":-5}", "timeout");
        result_clear();
}
END_TEST

START_TEST(test_label_limits)
{
        char *ascii256 = repeat("a", 256), *ascii257 = repeat("a", 257);
        char *wide256 = repeat("\xc3\xa9", 256), *wide257 = repeat("\xc3\xa9", 257); /* é: 2 bytes */

        assert_valid("{\"urls\":[\"https://e.com/a\"],\"label\":\"\"}");
        check_body(fmt("{\"urls\":[\"https://e.com/a\"],\"label\":\"%s\"}", ascii256), 0, NULL);
        check_body(fmt("{\"urls\":[\"https://e.com/a\"],\"label\":\"%s\"}", ascii257), -EINVAL, "label");
        /* characters, not bytes */
        check_body(fmt("{\"urls\":[\"https://e.com/a\"],\"label\":\"%s\"}", wide256), 0, NULL);
        check_body(fmt("{\"urls\":[\"https://e.com/a\"],\"label\":\"%s\"}", wide257), -EINVAL, "label");
        free(ascii256);
        free(ascii257);
        free(wide256);
        free(wide257);
        result_clear();
}
END_TEST

START_TEST(test_query_limits)
{
        char *q256 = repeat("q", 256), *q257 = repeat("q", 257), *w256 = repeat("\xe2\x82\xac", 256);

        assert_invalid("{\"query\":\"\",\"sources\":[\"s\"]}", "query");
        assert_valid("{\"query\":\"q\",\"sources\":[\"s\"]}");
        check_body(fmt("{\"query\":\"%s\",\"sources\":[\"s\"]}", q256), 0, NULL);
        check_body(fmt("{\"query\":\"%s\",\"sources\":[\"s\"]}", q257), -EINVAL, "query");
        check_body(fmt("{\"query\":\"%s\",\"sources\":[\"s\"]}", w256), 0, NULL); /* 768 bytes */
        free(q256);
        free(q257);
        free(w256);
        result_clear();
}
END_TEST

START_TEST(test_sources_limits)
{
        assert_invalid("{\"query\":\"q\",\"sources\":[]}", "sources");
        check_body(sources_body(1), 0, NULL);
        check_body(sources_body(16), 0, NULL);
        check_body(sources_body(17), -EINVAL, "sources");
        assert_invalid("{\"query\":\"q\",\"sources\":[\"a\",\"b\",\"a\"]}", "sources[2]");
        assert_invalid("{\"query\":\"q\",\"sources\":[\"\"]}", "sources[0]");
        assert_invalid("{\"query\":\"q\",\"sources\":[\"a/b\"]}", "sources[0]");
        assert_invalid("{\"query\":\"q\",\"sources\":[\"..\"]}", "sources[0]");
        assert_invalid("{\"query\":\"q\",\"sources\":[\"a\\u0001\"]}", "sources[0]");
        assert_invalid("{\"query\":\"q\",\"sources\":[5]}", "sources[0]");
        result_clear();
}
END_TEST

START_TEST(test_urls_limits)
{
        assert_invalid("{\"urls\":[]}", "urls");
        check_body(urls_body(10000), 0, NULL);
        check_body(urls_body(10001), -EINVAL, "urls");
        result_clear();
}
END_TEST

START_TEST(test_urls_10000_counted)
{
        char *body = urls_body(JOB_MAX_ITEMS);
        assert_valid(body);
        ck_assert_int_eq(res.n, JOB_MAX_ITEMS);
        ck_assert_int_eq(res.items[JOB_MAX_ITEMS - 1].index, JOB_MAX_ITEMS - 1);
        free(body);
        result_clear();
}
END_TEST

/* ---- types and shapes ---------------------------------------------------- */

START_TEST(test_wrong_types)
{
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":\"5\"}", "max");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":5.0}", "max");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":null}", "max");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"priority\":true}", "priority");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"priority\":1.5}", "priority");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"timeout\":\"10\"}", "timeout");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"label\":5}", "label");
        assert_invalid("{\"query\":[\"q\"],\"sources\":[\"s\"]}", "query");
        assert_invalid("{\"query\":\"q\",\"sources\":\"s\"}", "sources");
        assert_invalid("{\"urls\":\"https://e.com/a\"}", "urls");
        assert_invalid("{\"urls\":[5]}", "urls[0]");
        assert_invalid("{\"urls\":[\"https://e.com/a\", null]}", "urls[1]");
        assert_invalid("{\"urls\":[{\"url\":5}]}", "urls[0].url");
        assert_invalid("{\"urls\":[{\"source\":\"s\"}]}", "urls[0].url");
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"source\":5}]}", "urls[0].source");
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"filename\":5}]}", "urls[0].filename");
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"filename\":\"\"}]}", "urls[0].filename");
        result_clear();
}
END_TEST

START_TEST(test_unknown_field)
{
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"colour\":\"red\"}", "colour");
        ck_assert_int_eq(json_array_size(res.errors), 1);
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"referer\":\"x\"}]}", "urls[0].referer");
        result_clear();
}
END_TEST

START_TEST(test_url_schemes)
{
        assert_invalid("{\"urls\":[\"ftp://e.com/a.jpg\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"file:///etc/passwd\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"javascript:alert(1)\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"https://e.com/a\",{\"url\":\"gopher://e.com/\"}]}", "urls[1].url");
        assert_valid("{\"urls\":[\"HTTPS://E.COM/a\"]}");
        result_clear();
}
END_TEST

START_TEST(test_malformed_url)
{
        assert_invalid("{\"urls\":[\"not a url\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"http://\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"/relative/path.jpg\"]}", "urls[0]");
        assert_invalid("{\"urls\":[\"https://e.com/a\",\"https://e.com/b\",\"http//x\"]}", "urls[2]");
        char *longurl = repeat("a", JOB_URL_MAX);
        check_body(fmt("{\"urls\":[\"https://e.com/%s\"]}", longurl), -EINVAL, "urls[0]");
        free(longurl);
        result_clear();
}
END_TEST

START_TEST(test_malformed_json)
{
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"max\":1,\"max\":2}", "body"); /* duplicate key */
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"url\":\"https://e.com/b\"}]}", "body");
        assert_invalid("not json", "body");
        assert_invalid("{\"urls\":[\"https://e.com/a\"]", "body");
        assert_invalid("[\"https://e.com/a\"]", "body");
        assert_invalid("\"https://e.com/a\"", "body");
        ck_assert_int_eq(parse_len("", 0), -EINVAL);
        ck_assert(has_error("body"));
        ck_assert_int_eq(parse_len(NULL, 0), -EINVAL);
        /* invalid UTF-8 in a string */
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"label\":\"\xff\xfe\"}", "body");
        assert_invalid("{\"urls\":[\"https://e.com/a\"],\"label\":\"\xc3\"}", "body");
        /* a NUL inside the body */
        ck_assert_int_eq(parse_len("{\"label\":\"a\0b\"}", 15), -EINVAL);
        result_clear();
}
END_TEST

START_TEST(test_nesting)
{
        /* depth 32 passes the nesting check (and fails as an unknown field) */
        char *open = repeat("[", 31), *close = repeat("]", 31);
        check_body(fmt("{\"urls\":[\"https://e.com/a\"],\"x\":%s%s}", open, close), -EINVAL, "x");
        ck_assert(!has_error("body"));
        free(open);
        free(close);
        /* depth 33 is rejected as such */
        open = repeat("[", 32);
        close = repeat("]", 32);
        check_body(fmt("{\"urls\":[\"https://e.com/a\"],\"x\":%s%s}", open, close), -EINVAL, "body");
        free(open);
        free(close);
        open = repeat("{\"a\":", 40);
        close = repeat("}", 40);
        check_body(fmt("{\"x\":%s1%s}", open, close), -EINVAL, "body");
        free(open);
        free(close);
        result_clear();
}
END_TEST

START_TEST(test_required_combinations)
{
        assert_invalid("{\"query\":\"q\"}", "sources");
        assert_invalid("{\"sources\":[\"s\"]}", "query");
        assert_invalid("{\"sources\":[\"s\"],\"urls\":[\"https://e.com/a\"]}", "query");
        assert_invalid("{}", "urls");
        assert_invalid("{\"max\":5,\"label\":\"x\"}", "urls");
        result_clear();
}
END_TEST

START_TEST(test_errors_collected)
{
        ck_assert_int_eq(parse("{\"max\":0,\"priority\":99,\"urls\":[\"ftp://x/\",\"https://e.com/\",5]}"),
                         -EINVAL);
        ck_assert(has_error("max"));
        ck_assert(has_error("priority"));
        ck_assert(has_error("urls[0]"));
        ck_assert(!has_error("urls[1]"));
        ck_assert(has_error("urls[2]"));
        result_clear();
}
END_TEST

START_TEST(test_errors_capped)
{
        char *body = malloc(64 + 1000 * 2);
        strcpy(body, "{\"urls\":[");
        for (int i = 0; i < 1000; i++)
                strcat(body, i ? ",5" : "5");
        strcat(body, "]}");
        ck_assert_int_eq(parse(body), -EINVAL);
        ck_assert(has_error("urls[0]"));
        ck_assert_int_eq(json_array_size(res.errors), PROBLEM_MAX_ERRORS);
        free(body);
        result_clear();
}
END_TEST

/* ---- items ----------------------------------------------------------------- */

START_TEST(test_duplicate_url)
{
        assert_valid("{\"urls\":[\"https://e.com/a\",\"https://e.com/b\",\"https://e.com/a\","
                     "\"https://e.com\",\"https://e.com/\"]}");
        ck_assert_int_eq(res.n, 5);
        ck_assert_int_eq(res.items[0].state, ITEM_PENDING);
        ck_assert_int_eq(res.items[1].state, ITEM_PENDING);
        ck_assert_int_eq(res.items[2].state, ITEM_SKIPPED);
        ck_assert_str_eq(res.items[2].error.code, "duplicate");
        ck_assert_str_eq(res.items[2].error.message, "same URL as item 0");
        ck_assert_int_eq(res.items[3].state, ITEM_PENDING);
        ck_assert_int_eq(res.items[4].state, ITEM_SKIPPED); /* the same URL once normalized */
        ck_assert_str_eq(res.items[4].error.message, "same URL as item 3");
        ck_assert_str_eq(res.items[4].url, "https://e.com/"); /* kept as requested */
        result_clear();
}
END_TEST

START_TEST(test_explicit_source_filename)
{
        assert_valid("{\"urls\":[{\"url\":\"https://cdn.e.com/x/1.jpg\",\"source\":\"gallery\","
                     "\"filename\":\"../odd name.jpg\"},{\"url\":\"https://cdn.e.com/2.jpg\"}]}");
        ck_assert_str_eq(res.items[0].source, "gallery");
        ck_assert_str_eq(res.items[0].filename, "../odd name.jpg"); /* the engine sanitizes */
        ck_assert_str_eq(res.items[1].source, "cdn.e.com");
        ck_assert_ptr_null(res.items[1].filename);
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"source\":\"a/b\"}]}", "urls[0].source");
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"source\":\".\"}]}", "urls[0].source");
        assert_invalid("{\"urls\":[{\"url\":\"https://e.com/a\",\"source\":\"\"}]}", "urls[0].source");
        result_clear();
}
END_TEST

START_TEST(test_source_from_host_port)
{
        assert_valid("{\"urls\":[\"http://Img.Example.com:8080/a.jpg\",\"https://example.com:443/b\","
                     "\"http://example.com/c\",\"http://[::1]:9000/d\"]}");
        ck_assert_str_eq(res.items[0].source, "img.example.com:8080");
        ck_assert_str_eq(res.items[1].source, "example.com");
        ck_assert_str_eq(res.items[2].source, "example.com");
        result_clear();
}
END_TEST

static bool only_openverse(const char *name, void *ud)
{
        (*(int *)ud)++;
        return strcmp(name, "openverse") == 0;
}

START_TEST(test_source_hook)
{
        int calls = 0;
        struct job_request_hooks hooks = {.source_known = only_openverse, .userdata = &calls};
        const char *body = "{\"query\":\"q\",\"sources\":[\"openverse\",\"nope\"]}";

        res.r = job_request_parse_with(&hooks, body, strlen(body), &res.job, &res.items, &res.n,
                                       &res.errors);
        ck_assert_int_eq(res.r, -EINVAL);
        ck_assert(has_error("sources[1]"));
        ck_assert(!has_error("sources[0]"));
        ck_assert_int_eq(calls, 2);
        result_clear();
}
END_TEST

/* max_query_length of the test sources: pixabay 100, tiny 1, others none. */
static int query_limit(const char *name, void *ud)
{
        (*(int *)ud)++;
        if (strcmp(name, "pixabay") == 0)
                return 100;
        return strcmp(name, "tiny") == 0 ? 1 : 0;
}

static int parse_hooked(const struct job_request_hooks *hooks, const char *body)
{
        result_clear();
        res.r = job_request_parse_with(hooks, body, strlen(body), &res.job, &res.items, &res.n, &res.errors);
        return res.r;
}

/* The messages of the errors naming field, joined by '|'. */
static char *error_messages(const char *field)
{
        char *out = strdup("");
        size_t i;
        json_t *e;
        json_array_foreach(res.errors, i, e)
        {
                if (strcmp(json_string_value(json_object_get(e, "field")), field) != 0)
                        continue;
                char *next = fmt("%s%s|", out, json_string_value(json_object_get(e, "message")));
                free(out);
                out = next;
        }
        return out;
}

/* An explicit URL's source label may not be a query source's name: the
 * two would share one circuit and one set of counters. Labels that name no
 * query source, and labels taken from the host, pass. */
START_TEST(test_label_names_query_source)
{
        int calls = 0;
        struct job_request_hooks hooks = {.source_known = only_openverse, .userdata = &calls};
        const char *body = "{\"urls\":[{\"url\":\"http://a.example/1.jpg\",\"source\":\"mine\"},"
                           "{\"url\":\"http://a.example/2.jpg\",\"source\":\"openverse\"},"
                           "\"http://openverse/3.jpg\"]}";

        ck_assert_int_eq(parse_hooked(&hooks, body), -EINVAL);
        ck_assert(has_error("urls[1].source"));
        ck_assert(!has_error("urls[0].source"));
        ck_assert(!has_error("urls[2]"));
        char *msg = error_messages("urls[1].source");
        ck_assert_ptr_nonnull(strstr(msg, "configured query source"));
        free(msg);
        ck_assert_int_eq(calls, 2); /* the explicit labels only */

        /* the same label without the hook, or with another label, is fine */
        ck_assert_int_eq(parse_hooked(NULL, body), 0);
        ck_assert_str_eq(res.items[1].source, "openverse");
        ck_assert_int_eq(parse_hooked(&hooks, "{\"urls\":[{\"url\":\"http://a.example/2.jpg\","
                                              "\"source\":\"openverse-mirror\"}]}"),
                         0);
        result_clear();
}
END_TEST

START_TEST(test_query_length_hook)
{
        int calls = 0;
        struct job_request_hooks hooks = {.source_max_query_length = query_limit, .userdata = &calls};
        char q[JOB_QUERY_MAX * 2 + 1], *body, *msgs;

        /* exactly 100 characters: accepted */
        memset(q, 'a', 100);
        q[100] = '\0';
        body = fmt("{\"query\":\"%s\",\"sources\":[\"pixabay\"]}", q);
        ck_assert_int_eq(parse_hooked(&hooks, body), 0);
        ck_assert_int_eq(calls, 1);
        free(body);

        /* 101: refused, naming query, the source and its limit */
        strcat(q, "b");
        body = fmt("{\"query\":\"%s\",\"sources\":[\"openverse\",\"pixabay\"]}", q);
        ck_assert_int_eq(parse_hooked(&hooks, body), -EINVAL);
        ck_assert_ptr_null(res.job);
        ck_assert_int_eq(json_array_size(res.errors), 1);
        msgs = error_messages("query");
        ck_assert_str_eq(msgs, "is 101 characters; source pixabay accepts at most 100|");
        free(msgs);
        free(body);

        /* sources without a limit take it */
        body = fmt("{\"query\":\"%s\",\"sources\":[\"openverse\"]}", q);
        ck_assert_int_eq(parse_hooked(&hooks, body), 0);
        free(body);

        /* two sources refusing: one error each */
        body = fmt("{\"query\":\"%s\",\"sources\":[\"tiny\",\"pixabay\"]}", q);
        ck_assert_int_eq(parse_hooked(&hooks, body), -EINVAL);
        ck_assert_int_eq(json_array_size(res.errors), 2);
        free(body);

        /* characters, not bytes: 100 two-byte characters fit, 101 do not */
        q[0] = '\0';
        for (int i = 0; i < 100; i++)
                strcat(q, "\xc3\xa9");
        body = fmt("{\"query\":\"%s\",\"sources\":[\"pixabay\"]}", q);
        ck_assert_int_eq(parse_hooked(&hooks, body), 0);
        free(body);
        strcat(q, "\xc3\xa9");
        body = fmt("{\"query\":\"%s\",\"sources\":[\"pixabay\"]}", q);
        ck_assert_int_eq(parse_hooked(&hooks, body), -EINVAL);
        ck_assert(has_error("query"));
        free(body);

        /* one character for tiny: "a" fits, "ab" does not */
        ck_assert_int_eq(parse_hooked(&hooks, "{\"query\":\"a\",\"sources\":[\"tiny\"]}"), 0);
        ck_assert_int_eq(parse_hooked(&hooks, "{\"query\":\"ab\",\"sources\":[\"tiny\"]}"), -EINVAL);

        /* a bad source name is reported as such, not looked up */
        calls = 0;
        ck_assert_int_eq(parse_hooked(&hooks, "{\"query\":\"ab\",\"sources\":[\"\"]}"), -EINVAL);
        ck_assert(has_error("sources[0]"));
        ck_assert(!has_error("query"));
        ck_assert_int_eq(calls, 0);

        /* without the hook (or without hooks) only JOB_QUERY_MAX applies */
        memset(q, 'a', JOB_QUERY_MAX);
        q[JOB_QUERY_MAX] = '\0';
        body = fmt("{\"query\":\"%s\",\"sources\":[\"pixabay\"]}", q);
        hooks.source_max_query_length = NULL;
        ck_assert_int_eq(parse_hooked(&hooks, body), 0);
        ck_assert_int_eq(parse_hooked(NULL, body), 0);
        free(body);
        result_clear();
}
END_TEST

START_TEST(test_tally)
{
        assert_valid("{\"query\":\"q\",\"sources\":[\"openverse\"],\"urls\":[\"https://a.com/1\","
                     "\"https://b.com:81/1\",\"https://a.com/2\",\"https://a.com/1\"]}");
        ck_assert_int_eq(job_request_tally(res.job, res.items, res.n), 0);
        struct job *j = res.job;
        ck_assert_int_eq(j->progress.total, 4);
        ck_assert_int_eq(j->progress.pending, 3);
        ck_assert_int_eq(j->progress.skipped, 1);
        ck_assert_int_eq(j->nper_source, 3);
        ck_assert_str_eq(j->per_source[0].source, "openverse");
        ck_assert_int_eq(j->per_source[0].items, 0);
        ck_assert_str_eq(j->per_source[1].source, "a.com");
        ck_assert_int_eq(j->per_source[1].items, 3);
        ck_assert_int_eq(j->per_source[1].skipped, 1);
        ck_assert_str_eq(j->per_source[2].source, "b.com:81");
        ck_assert_int_eq(j->per_source[2].items, 1);
        ck_assert_int_eq(j->per_source[2].state, SRC_PENDING);
        /* a second tally replaces, not appends */
        ck_assert_int_eq(job_request_tally(res.job, res.items, res.n), 0);
        ck_assert_int_eq(j->nper_source, 3);
        result_clear();
}
END_TEST

/* ---- jobjson --------------------------------------------------------------- */

/* A snapshot in which b.com's circuit is open and job id runs with live bytes. */
static struct snapshot *snap_b_open(const char *id)
{
        struct snapshot *snap = snapshot_new();
        ck_assert_ptr_nonnull(snap);
        snap->circuits = calloc(2, sizeof(*snap->circuits));
        snap->ncircuits = 2;
        snap->circuits[0] = (struct src_info){.name = strdup("a.com"), .state = BREAKER_CLOSED};
        snap->circuits[1] = (struct src_info){.name = strdup("b.com"), .state = BREAKER_OPEN};
        snap->jobs = calloc(1, sizeof(*snap->jobs));
        snap->njobs = 1;
        snprintf(snap->jobs[0].id, sizeof(snap->jobs[0].id), "%s", id);
        snap->jobs[0].live = (struct job_live){.progress = {.total = 3, .running = 1, .bytes = 5000},
                                               .bytes_expected = 9000,
                                               .speed_bps = 1000,
                                               .eta_s = 4.0};
        return snap;
}

START_TEST(test_jobjson_round_trip)
{
        assert_valid("{\"urls\":[\"https://a.com/1\",\"https://b.com/2\",\"https://a.com/3\"],"
                     "\"label\":\"l\",\"timeout\":300}");
        struct job *j = res.job;
        ck_assert_int_eq(job_request_tally(j, res.items, res.n), 0);
        memcpy(j->id, "01JB0000000000000000000000", JOB_ID_LEN + 1);
        j->created_at = 1796032800123; /* 2026-11-30T10:00:00.123Z */
        j->progress.pending = 2;
        j->progress.succeeded = 1;

        struct snapshot *snap = snap_b_open(j->id);
        bool all_closed = true;
        json_t *o = jobjson_job(j, snap, &all_closed);
        ck_assert(!all_closed);
        ck_assert_ptr_nonnull(o);
        char *text = json_dumps(o, JOBJSON_DUMP_FLAGS);
        json_decref(o);
        json_error_t jerr;
        json_t *back = json_loads(text, 0, &jerr);
        ck_assert_ptr_nonnull(back);

        ck_assert_str_eq(json_string_value(json_object_get(back, "id")), j->id);
        ck_assert_str_eq(json_string_value(json_object_get(back, "state")), "queued");
        ck_assert(json_is_null(json_object_get(back, "query")));
        ck_assert_int_eq(json_array_size(json_object_get(back, "sources")), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(back, "max")), 3);
        ck_assert(json_is_null(json_object_get(back, "source_timeout")));
        ck_assert(json_is_null(json_object_get(back, "max_retries")));
        ck_assert_int_eq(json_integer_value(json_object_get(back, "timeout")), 300);
        ck_assert_str_eq(json_string_value(json_object_get(back, "label")), "l");
        ck_assert_str_eq(json_string_value(json_object_get(back, "created_at")), "2026-11-30T10:00:00.123Z");
        ck_assert(json_is_null(json_object_get(back, "started_at")));
        ck_assert(json_is_null(json_object_get(back, "finished_at")));
        ck_assert(json_is_null(json_object_get(back, "deadline_at")));
        ck_assert(json_is_null(json_object_get(back, "error")));
        ck_assert_ptr_nonnull(strstr(text, "\"started_at\":null"));
        /* 1 of 3 done: 33.3, printed as such */
        json_t *pr = json_object_get(back, "progress");
        ck_assert(json_real_value(json_object_get(pr, "percent")) == 33.3);
        ck_assert_ptr_nonnull(strstr(text, "\"percent\":33.3,") ? strstr(text, "\"percent\":33.3,")
                                                                : strstr(text, "\"percent\":33.3}"));
        ck_assert_int_eq(json_integer_value(json_object_get(pr, "total")), 3);
        json_t *per = json_object_get(back, "per_source");
        ck_assert_int_eq(json_array_size(per), 2);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(per, 0), "source")), "a.com");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(per, 0), "circuit")), "closed");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(per, 1), "circuit")), "open");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(per, 0), "state")), "pending");
        ck_assert(json_is_null(json_object_get(json_array_get(per, 0), "error")));
        ck_assert(json_is_null(json_object_get(pr, "bytes_expected"))); /* queued: not known */
        ck_assert(json_is_null(json_object_get(pr, "eta_s")));
        json_decref(back);
        free(text);

        /* without a snapshot every circuit is closed */
        o = jobjson_job(j, NULL, &all_closed);
        ck_assert(!all_closed);
        ck_assert_str_eq(json_string_value(json_object_get(
                                 json_array_get(json_object_get(o, "per_source"), 1), "circuit")),
                         "closed");
        json_decref(o);

        /* running: the snapshot's live progress */
        j->state = JOB_RUNNING;
        o = jobjson_job(j, snap, NULL);
        pr = json_object_get(o, "progress");
        ck_assert_int_eq(json_integer_value(json_object_get(pr, "bytes")), 5000);
        ck_assert_int_eq(json_integer_value(json_object_get(pr, "bytes_expected")), 9000);
        ck_assert_int_eq(json_integer_value(json_object_get(pr, "speed_bps")), 1000);
        ck_assert(json_real_value(json_object_get(pr, "eta_s")) == 4.0);
        json_decref(o);
        snapshot_unref(snap);
        result_clear();
}
END_TEST

START_TEST(test_jobjson_percent)
{
        struct progress p = {0};
        ck_assert(jobjson_percent(&p) == 0.0);
        p.total = 3;
        p.succeeded = 2;
        ck_assert(jobjson_percent(&p) == 66.7);
        p.failed = 1;
        ck_assert(jobjson_percent(&p) == 100.0);
        p = (struct progress){.total = 10000, .skipped = 1};
        ck_assert(jobjson_percent(&p) == 0.0);
        p.skipped = 5;
        ck_assert(jobjson_percent(&p) == 0.1);
        struct job j = {.state = JOB_SUCCEEDED, .progress = {.bytes = 77}};
        json_t *o = jobjson_progress(&j);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes_expected")),
                         77); /* ended: all known */
        char *t = json_dumps(o, JOBJSON_DUMP_FLAGS);
        ck_assert_ptr_nonnull(strstr(t, "\"percent\":0.0"));
        free(t);
        json_decref(o);
}
END_TEST

START_TEST(test_jobjson_item)
{
        assert_valid("{\"urls\":[\"https://a.com/1\",\"https://a.com/1\"]}");
        json_t *o = jobjson_item(&res.items[1], NULL);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "index")), 1);
        ck_assert_str_eq(json_string_value(json_object_get(o, "state")), "skipped");
        ck_assert_str_eq(json_string_value(json_object_get(o, "source")), "a.com");
        ck_assert(json_is_null(json_object_get(o, "http_status")));
        ck_assert(json_is_null(json_object_get(o, "path")));
        ck_assert(json_is_null(json_object_get(o, "sha256")));
        json_t *err = json_object_get(o, "error");
        ck_assert_str_eq(json_string_value(json_object_get(err, "code")), "duplicate");
        ck_assert_str_eq(json_string_value(json_object_get(err, "message")), "same URL as item 0");
        ck_assert_ptr_null(json_object_get(o, "filename"));
        json_decref(o);
        o = jobjson_item(&res.items[0], NULL);
        ck_assert(json_is_null(json_object_get(o, "error")));
        ck_assert(json_is_null(json_object_get(o, "bytes_expected")));
        json_decref(o);
        /* in flight: its live bytes */
        res.items[0].state = ITEM_RUNNING;
        struct item_live live = {.index = 0, .bytes = 100, .bytes_expected = 400, .speed_bps = 50};
        o = jobjson_item(&res.items[0], &live);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes")), 100);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes_expected")), 400);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "speed_bps")), 50);
        json_decref(o);
        result_clear();
}
END_TEST

static Suite *job_request_suite(void)
{
        Suite *s = suite_create("job_request");
        TCase *tc = tcase_create("core");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_valid_url_job);
        tcase_add_test(tc, test_defaults);
        tcase_add_test(tc, test_query_job);
        tcase_add_test(tc, test_query_and_urls);
        tcase_add_test(tc, test_max_limits);
        tcase_add_test(tc, test_priority_limits);
        tcase_add_test(tc, test_timeout_limits);
        tcase_add_test(tc, test_label_limits);
        tcase_add_test(tc, test_query_limits);
        tcase_add_test(tc, test_sources_limits);
        tcase_add_test(tc, test_urls_limits);
        tcase_add_test(tc, test_urls_10000_counted);
        tcase_add_test(tc, test_wrong_types);
        tcase_add_test(tc, test_unknown_field);
        tcase_add_test(tc, test_url_schemes);
        tcase_add_test(tc, test_malformed_url);
        tcase_add_test(tc, test_malformed_json);
        tcase_add_test(tc, test_nesting);
        tcase_add_test(tc, test_required_combinations);
        tcase_add_test(tc, test_errors_collected);
        tcase_add_test(tc, test_errors_capped);
        tcase_add_test(tc, test_duplicate_url);
        tcase_add_test(tc, test_explicit_source_filename);
        tcase_add_test(tc, test_source_from_host_port);
        tcase_add_test(tc, test_source_hook);
        tcase_add_test(tc, test_query_length_hook);
        tcase_add_test(tc, test_label_names_query_source);
        tcase_add_test(tc, test_tally);
        tcase_add_test(tc, test_jobjson_round_trip);
        tcase_add_test(tc, test_jobjson_percent);
        tcase_add_test(tc, test_jobjson_item);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(job_request_suite()); }

/* Unit tests of common/log.c: the text and JSON line formats (with and
 * without journald's priority prefix), the "job" field, escaping, invalid
 * UTF-8, cutting long messages, the format names, and log_msg() writing
 * one line to stderr at or above the level. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>

#include "common/log.h"
#include "tests/unit/testutil.h"

/* 2025-10-02T12:00:00.123Z */
static const struct timespec when = {.tv_sec = 1759406400, .tv_nsec = 123456789};

static char line[LOG_LINE_MAX];

static size_t format(enum log_format f, bool journal, enum log_level level, const char *msg)
{
        size_t n = log_format_line(line, sizeof(line), f, journal, level, &when, msg);
        ck_assert_uint_eq(n, strlen(line));
        ck_assert_uint_gt(n, 0);
        ck_assert_int_eq(line[n - 1], '\n');
        ck_assert_ptr_null(memchr(line, '\n', n - 1)); /* one line */
        return n;
}

/* The JSON line just formatted (after skip bytes of prefix), parsed. */
static json_t *parsed(size_t skip)
{
        json_error_t e;
        json_t *o = json_loadb(line + skip, strlen(line) - skip, 0, &e);
        ck_assert_msg(o != NULL, "not JSON (%s): %s", e.text, line);
        ck_assert(json_is_object(o));
        return o;
}

static const char *field(json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);
        return json_is_string(v) ? json_string_value(v) : NULL;
}

START_TEST(test_text)
{
        format(LOG_FORMAT_TEXT, false, LOG_INFO, "job 01ABC: SUCCESS: Downloaded: a.png");
        ck_assert_str_eq(line, "2025-10-02T12:00:00.123Z info job 01ABC: SUCCESS: Downloaded: a.png\n");
        format(LOG_FORMAT_TEXT, false, LOG_WARNING, "CIRCUIT BREAKER opened for x");
        ck_assert_str_eq(line, "2025-10-02T12:00:00.123Z warning CIRCUIT BREAKER opened for x\n");
        /* journald: the priority instead of the timestamp and level */
        format(LOG_FORMAT_TEXT, true, LOG_INFO, "sched: ready");
        ck_assert_str_eq(line, "<6>sched: ready\n");
        format(LOG_FORMAT_TEXT, true, LOG_DEBUG, "d");
        ck_assert_str_eq(line, "<7>d\n");
        format(LOG_FORMAT_TEXT, true, LOG_WARNING, "w");
        ck_assert_str_eq(line, "<4>w\n");
        format(LOG_FORMAT_TEXT, true, LOG_ERROR, "e");
        ck_assert_str_eq(line, "<3>e\n");
}
END_TEST

/* A message cannot end its line or forge the next one: control characters
 * become escapes; other bytes pass as they are. */
START_TEST(test_text_escapes_control_characters)
{
        format(LOG_FORMAT_TEXT, true, LOG_INFO,
               "job 1: === JOB START === | Label: x\n<3>job 1: forged\r\t\x01\x1b[31m\x7f caf\xc3\xa9 \xff");
        ck_assert_str_eq(
                line, "<6>job 1: === JOB START === | Label: x\\n<3>job 1: forged\\r\\t\\x01\\x1b[31m\\x7f "
                      "caf\xc3\xa9 \xff\n");
        /* cut at a whole escape */
        char msg[600];
        memset(msg, '\n', sizeof(msg) - 1);
        msg[sizeof(msg) - 1] = '\0';
        size_t n = log_format_line(line, 256, LOG_FORMAT_TEXT, true, LOG_INFO, &when, msg);
        ck_assert_uint_eq(n, 3 + 2 * 125 + 1); /* "<6>", 125 escapes, newline: 254 of 256 */
        ck_assert_int_eq(line[n - 2], 'n');
        ck_assert_int_eq(line[n - 3], '\\');
}
END_TEST

START_TEST(test_json_fields)
{
        json_t *o;

        format(LOG_FORMAT_JSON, false, LOG_INFO, "job 01KB3ZQ4T5: === JOB START === | Query: cars");
        o = parsed(0);
        ck_assert_str_eq(field(o, "time"), "2025-10-02T12:00:00.123Z");
        ck_assert_str_eq(field(o, "level"), "info");
        ck_assert_str_eq(field(o, "job"), "01KB3ZQ4T5");
        ck_assert_str_eq(field(o, "message"), "job 01KB3ZQ4T5: === JOB START === | Query: cars");
        ck_assert_uint_eq(json_object_size(o), 4);
        json_decref(o);

        /* not about a job: no "job" */
        format(LOG_FORMAT_JSON, false, LOG_ERROR, "config: reload failed");
        o = parsed(0);
        ck_assert_str_eq(field(o, "level"), "error");
        ck_assert_ptr_null(json_object_get(o, "job"));
        ck_assert_str_eq(field(o, "message"), "config: reload failed");
        json_decref(o);
        ck_assert_str_eq(line, "{\"time\":\"2025-10-02T12:00:00.123Z\",\"level\":\"error\","
                               "\"message\":\"config: reload failed\"}\n");
}
END_TEST

/* Only "job ID: " at the very start makes a job field. */
START_TEST(test_json_job_only_from_the_prefix)
{
        static const char *const none[] = {
                "job : x",
                "job x:y",
                "job x",
                "jobs 1: x",
                " job 1: x",
                "job  1: x",
                "Job 1: x",
                "the job 1: x",
                "job 1 2: x",
                "job",
                "job 1:",
                "",
                "job 1:\tx",
                "sched: job 1: x",
                /* longer than any job id */
                "job 0123456789012345678901234567890123456789012345678901234567890123456789: x",
        };
        for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
                format(LOG_FORMAT_JSON, false, LOG_INFO, none[i]);
                json_t *o = parsed(0);
                ck_assert_msg(!json_object_get(o, "job"), "job field from \"%s\"", none[i]);
                ck_assert_str_eq(field(o, "message"), none[i]);
                json_decref(o);
        }
        format(LOG_FORMAT_JSON, false, LOG_INFO, "job a-b_c.d: x");
        json_t *o = parsed(0);
        ck_assert_str_eq(field(o, "job"), "a-b_c.d");
        json_decref(o);
}
END_TEST

/* Whatever the message holds, the line is one valid JSON object whose
 * message reads back as sent. */
START_TEST(test_json_escapes)
{
        static const char *const msgs[] = {
                "quote \" backslash \\ slash /",
                "new\nline, tab\t, return\r, bell\a, escape\x1b, del\x7f, \x01\x1f",
                "{\"message\":\"forged\",\"level\":\"error\"}",
                "job 1: \"}, {\"job\": \"2",
                "UTF-8 kept: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8",
        };
        for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
                format(LOG_FORMAT_JSON, false, LOG_INFO, msgs[i]);
                json_t *o = parsed(0);
                ck_assert_str_eq(field(o, "message"), msgs[i]);
                ck_assert_str_eq(field(o, "level"), "info");
                json_decref(o);
        }
        format(LOG_FORMAT_JSON, false, LOG_INFO, "a\nb\x01");
        ck_assert_ptr_nonnull(strstr(line, "\"a\\nb\\u0001\""));
}
END_TEST

/* Bytes that are not UTF-8 become U+FFFD, one per byte. */
START_TEST(test_json_invalid_utf8)
{
        static const struct {
                const char *in, *out;
        } rows[] = {
                {"a\x80z", "a\xef\xbf\xbdz"},                                 /* lone continuation */
                {"a\xc0\xafz", "a\xef\xbf\xbd\xef\xbf\xbdz"},                 /* overlong '/' */
                {"a\xed\xa0\x80z", "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz"}, /* surrogate D800 */
                {"a\xf4\x90\x80\x80z", "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz"}, /* > 10FFFF */
                {"a\xf5z", "a\xef\xbf\xbdz"},
                {"a\xffz", "a\xef\xbf\xbdz"},
                {"a\xe2\x82", "a\xef\xbf\xbd\xef\xbf\xbd"}, /* cut short at the end */
                {"\xe2\x82z", "\xef\xbf\xbd\xef\xbf\xbdz"},
                {"ok \xf0\x9f\x98\x80", "ok \xf0\x9f\x98\x80"},
        };
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                format(LOG_FORMAT_JSON, false, LOG_INFO, rows[i].in);
                json_t *o = parsed(0);
                ck_assert_msg(strcmp(field(o, "message"), rows[i].out) == 0, "row %zu: %s", i, line);
                json_decref(o);
        }
        /* in a job id too */
        format(LOG_FORMAT_JSON, false, LOG_INFO, "job \xff: x");
        json_t *o = parsed(0);
        ck_assert_str_eq(field(o, "job"), "\xef\xbf\xbd");
        json_decref(o);
}
END_TEST

/* Under journald a JSON line keeps its priority prefix; journald strips
 * it, and the rest is the object. */
START_TEST(test_json_journal)
{
        format(LOG_FORMAT_JSON, true, LOG_WARNING, "job 7: TIMEOUT x");
        ck_assert(strncmp(line, "<4>{", 4) == 0);
        json_t *o = parsed(3);
        ck_assert_str_eq(field(o, "level"), "warning");
        ck_assert_str_eq(field(o, "time"), "2025-10-02T12:00:00.123Z");
        ck_assert_str_eq(field(o, "job"), "7");
        json_decref(o);
        format(LOG_FORMAT_JSON, true, LOG_DEBUG, "d");
        ck_assert(strncmp(line, "<7>{", 4) == 0);
}
END_TEST

/* A message too long for the line is cut at a whole character or escape;
 * the line stays valid JSON and within the buffer. */
START_TEST(test_json_long_messages_cut)
{
        static const char *const units[] = {"a", "\"", "\x01", "\xc3\xa9", "\xf0\x9f\x98\x80", "\xff"};
        static char msg[LOG_MSG_MAX * 4];

        for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
                size_t ul = strlen(units[u]), n = 0;
                while (n + ul < sizeof(msg)) {
                        memcpy(msg + n, units[u], ul);
                        n += ul;
                }
                msg[n] = '\0';
                for (size_t size = 256; size <= sizeof(line); size += 517) {
                        size_t len =
                                log_format_line(line, size, LOG_FORMAT_JSON, u % 2, LOG_INFO, &when, msg);
                        ck_assert_uint_lt(len, size);
                        ck_assert_uint_eq(len, strlen(line));
                        ck_assert_int_eq(line[len - 1], '\n');
                        json_t *o = parsed(u % 2 ? 3 : 0);
                        const char *m = field(o, "message");
                        ck_assert_ptr_nonnull(m);
                        ck_assert_uint_gt(strlen(m), 0);
                        /* what is left is whole units (U+FFFD for the invalid one) */
                        const char *want = units[u][0] == '\xff' ? "\xef\xbf\xbd" : units[u];
                        for (size_t k = 0; m[k]; k += strlen(want))
                                ck_assert_msg(strncmp(m + k, want, strlen(want)) == 0, "unit %zu size %zu",
                                              u, size);
                        /* and the line is nearly full: cut, not dropped */
                        ck_assert_uint_gt(len + 8, size);
                        json_decref(o);
                }
        }
}
END_TEST

START_TEST(test_text_long_messages_cut)
{
        static char msg[LOG_LINE_MAX * 2];

        memset(msg, 'x', sizeof(msg) - 1);
        size_t n = log_format_line(line, sizeof(line), LOG_FORMAT_TEXT, false, LOG_INFO, &when, msg);
        ck_assert_uint_eq(n, sizeof(line) - 1);
        ck_assert_int_eq(line[n - 1], '\n');
        n = log_format_line(line, 300, LOG_FORMAT_TEXT, true, LOG_INFO, &when, msg);
        ck_assert_uint_eq(n, 299);
        ck_assert(strncmp(line, "<6>xxx", 6) == 0);
}
END_TEST

START_TEST(test_format_names)
{
        enum log_format f = LOG_FORMAT_JSON;

        ck_assert_int_eq(log_format_parse("text", &f), 0);
        ck_assert_int_eq(f, LOG_FORMAT_TEXT);
        ck_assert_int_eq(log_format_parse("json", &f), 0);
        ck_assert_int_eq(f, LOG_FORMAT_JSON);
        ck_assert_int_eq(log_format_parse("JSON", &f), -EINVAL);
        ck_assert_int_eq(log_format_parse("", &f), -EINVAL);
        ck_assert_int_eq(log_format_parse("jsonl", &f), -EINVAL);
        ck_assert_int_eq(f, LOG_FORMAT_JSON); /* unchanged on failure */
        ck_assert_str_eq(log_format_name(LOG_FORMAT_TEXT), "text");
        ck_assert_str_eq(log_format_name(LOG_FORMAT_JSON), "json");
        ck_assert_str_eq(log_format_name((enum log_format)7), "?");
}
END_TEST

/* log_msg() to a pipe standing in for stderr: what it wrote, NUL-ended. */
static char *captured(void (*emit)(void))
{
        static char buf[4 * LOG_LINE_MAX];
        int fds[2], saved = dup(STDERR_FILENO);
        ssize_t n;

        ck_assert_int_eq(pipe(fds), 0);
        dup2(fds[1], STDERR_FILENO);
        emit();
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(fds[1]);
        n = read(fds[0], buf, sizeof(buf) - 1);
        close(fds[0]);
        buf[n > 0 ? n : 0] = '\0';
        return buf;
}

static void emit_lines(void)
{
        log_debug("job %s: hidden at info", "1");
        log_info("job %s: DOWNLOADING: %s | Item %d | URL: %s", "01X", "src", 0, "http://h/a\"b");
        log_warning("plain %d", 2);
}

START_TEST(test_log_msg_writes_lines)
{
        unsetenv("JOURNAL_STREAM");
        log_init();
        log_set_level(LOG_INFO);
        log_set_format(LOG_FORMAT_JSON);
        ck_assert_int_eq(log_get_format(), LOG_FORMAT_JSON);
        char *out = captured(emit_lines);
        char *second = strchr(out, '\n');
        ck_assert_ptr_nonnull(second);
        *second++ = '\0';
        json_t *a = json_loads(out, 0, NULL), *b = json_loads(second, 0, NULL);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        ck_assert_str_eq(field(a, "job"), "01X");
        ck_assert_str_eq(field(a, "message"), "job 01X: DOWNLOADING: src | Item 0 | URL: http://h/a\"b");
        ck_assert_str_eq(field(b, "level"), "warning");
        ck_assert_str_eq(field(b, "message"), "plain 2");
        json_decref(a);
        json_decref(b);

        log_set_format(LOG_FORMAT_TEXT);
        setenv("JOURNAL_STREAM", "8:1234", 1);
        log_init();
        out = captured(emit_lines);
        ck_assert_str_eq(out, "<6>job 01X: DOWNLOADING: src | Item 0 | URL: http://h/a\"b\n<4>plain 2\n");
}
END_TEST

static Suite *log_suite(void)
{
        Suite *s = suite_create("log");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_text);
        tcase_add_test(tc, test_text_escapes_control_characters);
        tcase_add_test(tc, test_json_fields);
        tcase_add_test(tc, test_json_job_only_from_the_prefix);
        tcase_add_test(tc, test_json_escapes);
        tcase_add_test(tc, test_json_invalid_utf8);
        tcase_add_test(tc, test_json_journal);
        tcase_add_test(tc, test_json_long_messages_cut);
        tcase_add_test(tc, test_text_long_messages_cut);
        tcase_add_test(tc, test_format_names);
        tcase_add_test(tc, test_log_msg_writes_lines);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(log_suite()); }

/* hauldctl's pure modules: the event-stream parser (line endings, pieces
 * split anywhere, limits), the formats people read (sizes, durations,
 * relative times, RFC 3339, terminal-safe text) and the file name `get`
 * takes from Content-Disposition (never a path). */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/filename.h"
#include "cli/format.h"
#include "cli/sse.h"
#include "tests/unit/testutil.h"

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

/* ---- sse ---------------------------------------------------------------------- */

#define EVENTS_MAX 8

struct seen {
        int n;
        char name[EVENTS_MAX][SSE_NAME_MAX + 1];
        char id[EVENTS_MAX][SSE_ID_MAX + 1];
        char *data[EVENTS_MAX];
        int stop_at; /* return -EPIPE at this event (1-based), 0: never */
};

static int record(const struct sse_event *ev, void *userdata)
{
        struct seen *s = userdata;
        ck_assert_int_lt(s->n, EVENTS_MAX);
        snprintf(s->name[s->n], sizeof(s->name[0]), "%s", ev->name);
        snprintf(s->id[s->n], sizeof(s->id[0]), "%s", ev->id);
        s->data[s->n] = strndup(ev->data, ev->data_len);
        ck_assert_uint_eq(strlen(ev->data), ev->data_len);
        s->n++;
        return s->stop_at == s->n ? -EPIPE : 0;
}

static void seen_free(struct seen *s)
{
        for (int i = 0; i < s->n; i++)
                free(s->data[i]);
}

/* Feed text in pieces of step bytes (0: all at once). */
static int feed(struct seen *s, const char *text, size_t step)
{
        struct sse_parser p;
        size_t len = strlen(text);
        int r = 0;

        sse_init(&p, record, s);
        for (size_t i = 0; r == 0 && i < len; i += step ? step : len)
                r = sse_feed(&p, text + i, step && len - i > step ? step : len - i);
        sse_clear(&p);
        return r;
}

static const char *const stream = "retry: 2000\r\n\r\n"
                                  ": keepalive\n\n"
                                  "id: 7\nevent: job\ndata: {\"id\":\"J\",\"state\":\"running\"}\n\n"
                                  "id: 8\revent: progress\rdata: {\"total\":2}\r\r"
                                  "event: item\r\ndata:first\r\ndata: second\r\n\r\n"
                                  "data\n\n";

START_TEST(test_sse_pieces)
{
        /* every split of the same bytes gives the same events */
        for (size_t step = 0; step <= 7; step++) {
                struct seen s = {0};
                ck_assert_int_eq(feed(&s, stream, step), 0);
                ck_assert_int_eq(s.n, 4);
                ck_assert_str_eq(s.name[0], "job");
                ck_assert_str_eq(s.id[0], "7");
                ck_assert_str_eq(s.data[0], "{\"id\":\"J\",\"state\":\"running\"}");
                ck_assert_str_eq(s.name[1], "progress");
                ck_assert_str_eq(s.id[1], "8");
                ck_assert_str_eq(s.data[1], "{\"total\":2}");
                ck_assert_str_eq(s.name[2], "item");
                ck_assert_str_eq(s.id[2], "8"); /* the last id stays until another comes */
                ck_assert_str_eq(s.data[2], "first\nsecond");
                ck_assert_str_eq(s.name[3], "message"); /* no event: field */
                ck_assert_str_eq(s.data[3], "");
                seen_free(&s);
        }
}
END_TEST

START_TEST(test_sse_no_data_no_event)
{
        struct seen s = {0};
        /* an event name without data dispatches nothing and is forgotten */
        ck_assert_int_eq(feed(&s, "event: job\n\ndata: x\n\n", 0), 0);
        ck_assert_int_eq(s.n, 1);
        ck_assert_str_eq(s.name[0], "message");
        ck_assert_str_eq(s.data[0], "x");
        seen_free(&s);
}
END_TEST

START_TEST(test_sse_unfinished_event)
{
        struct seen s = {0};
        /* the stream ends before the blank line: nothing is dispatched */
        ck_assert_int_eq(feed(&s, "event: job\ndata: {}\n", 0), 0);
        ck_assert_int_eq(s.n, 0);
}
END_TEST

START_TEST(test_sse_callback_stops)
{
        struct seen s = {.stop_at = 1};
        ck_assert_int_eq(feed(&s, "data: a\n\ndata: b\n\n", 0), -EPIPE);
        ck_assert_int_eq(s.n, 1);
        seen_free(&s);
}
END_TEST

START_TEST(test_sse_line_limit)
{
        size_t n = SSE_LINE_MAX + 10;
        char *big = malloc(n + 1);
        struct seen s = {0};

        ck_assert_ptr_nonnull(big);
        memset(big, 'x', n);
        big[n] = '\0';
        memcpy(big, "data: ", 6);
        /* a line with no end past the limit, in pieces and at once */
        ck_assert_int_eq(feed(&s, big, 4096), -E2BIG);
        big[n - 1] = '\n';
        ck_assert_int_eq(feed(&s, big, 0), -E2BIG);
        ck_assert_int_eq(s.n, 0);
        free(big);
}
END_TEST

START_TEST(test_sse_line_at_limit)
{
        /* a line of exactly SSE_LINE_MAX bytes is taken, in pieces too */
        size_t n = SSE_LINE_MAX;
        char *line = malloc(n + 3);
        struct seen s = {0};

        ck_assert_ptr_nonnull(line);
        memset(line, 'y', n);
        memcpy(line, "data:", 5);
        memcpy(line + n, "\n\n", 3);
        ck_assert_int_eq(feed(&s, line, 65536), 0);
        ck_assert_int_eq(s.n, 1);
        ck_assert_uint_eq(strlen(s.data[0]), n - 5);
        seen_free(&s);
        free(line);
}
END_TEST

START_TEST(test_sse_data_limit)
{
        /* many short data lines cannot grow one event past SSE_DATA_MAX */
        size_t lines = SSE_DATA_MAX / 995 + 2, len = lines * 1001; /* 996 bytes of data each */
        char *text = malloc(len + 1);
        struct seen s = {0};

        ck_assert_ptr_nonnull(text);
        for (size_t i = 0; i < lines; i++) {
                memset(text + i * 1001, 'z', 1000);
                memcpy(text + i * 1001, "data:", 5);
                text[i * 1001 + 1000] = '\n';
        }
        text[len] = '\0';
        ck_assert_int_eq(feed(&s, text, 0), -E2BIG);
        ck_assert_int_eq(s.n, 0);
        free(text);
}
END_TEST

/* ---- format ---------------------------------------------------------------------- */

START_TEST(test_fmt_size)
{
        static const struct {
                int64_t in;
                const char *out;
        } cases[] = {
                {0, "0 B"},
                {1023, "1023 B"},
                {1024, "1.0 KiB"},
                {1536, "1.5 KiB"},
                {1024 * 1024 - 1, "1.0 MiB"}, /* never "1024.0 KiB" */
                {12 * 1024 * 1024 + 300 * 1024, "12.3 MiB"},
                {(int64_t)5 << 30, "5.0 GiB"},
                {(int64_t)3 << 40, "3.0 TiB"},
                {-1, "-"},
        };
        char buf[FMT_SIZE_LEN];

        for (int i = 0; i < N(cases); i++)
                ck_assert_str_eq(fmt_size(cases[i].in, buf, sizeof(buf)), cases[i].out);
        ck_assert_str_eq(fmt_speed(2048, buf, sizeof(buf)), "2.0 KiB/s");
        ck_assert_str_eq(fmt_speed(-1, buf, sizeof(buf)), "-");
        ck_assert_str_eq(fmt_size(INT64_MAX, buf, sizeof(buf)), "8.0 EiB");
}
END_TEST

START_TEST(test_fmt_duration)
{
        char buf[FMT_SIZE_LEN];

        ck_assert_str_eq(fmt_duration(0, buf, sizeof(buf)), "0s");
        ck_assert_str_eq(fmt_duration(0.4, buf, sizeof(buf)), "0s");
        ck_assert_str_eq(fmt_duration(59, buf, sizeof(buf)), "59s");
        ck_assert_str_eq(fmt_duration(185, buf, sizeof(buf)), "3m05s");
        ck_assert_str_eq(fmt_duration(7260, buf, sizeof(buf)), "2h01m");
        ck_assert_str_eq(fmt_duration(3 * 86400 + 4 * 3600, buf, sizeof(buf)), "3d04h");
        ck_assert_str_eq(fmt_duration(-1, buf, sizeof(buf)), "-");
        ck_assert_str_eq(fmt_duration(NAN, buf, sizeof(buf)), "-");
}
END_TEST

START_TEST(test_fmt_ago)
{
        char buf[FMT_SIZE_LEN];
        int64_t now = 1800000000000;

        ck_assert_str_eq(fmt_ago(now - 500, now, buf, sizeof(buf)), "just now");
        ck_assert_str_eq(fmt_ago(now - 5000, now, buf, sizeof(buf)), "5s ago");
        ck_assert_str_eq(fmt_ago(now - 185000, now, buf, sizeof(buf)), "3m ago");
        ck_assert_str_eq(fmt_ago(now - 7200000, now, buf, sizeof(buf)), "2h ago");
        ck_assert_str_eq(fmt_ago(now - 4 * 86400000LL, now, buf, sizeof(buf)), "4d ago");
        ck_assert_str_eq(fmt_ago(now + 600000, now, buf, sizeof(buf)), "in 10m");
}
END_TEST

START_TEST(test_fmt_parse_time)
{
        int64_t ms;

        ck_assert_int_eq(fmt_parse_time("2015-10-21T07:28:00Z", &ms), 0);
        ck_assert_int_eq(ms, (int64_t)1445412480 * 1000);
        ck_assert_int_eq(fmt_parse_time("2015-10-21T07:28:00.123Z", &ms), 0);
        ck_assert_int_eq(ms, (int64_t)1445412480 * 1000 + 123);
        ck_assert_int_eq(fmt_parse_time("2015-10-21T09:28:00.5+02:00", &ms), 0);
        ck_assert_int_eq(ms, (int64_t)1445412480 * 1000 + 500);
        ck_assert_int_eq(fmt_parse_time("2015-10-21T07:28:00", &ms), -EINVAL); /* no zone */
        ck_assert_int_eq(fmt_parse_time("2015-13-21T07:28:00Z", &ms), -EINVAL);
        ck_assert_int_eq(fmt_parse_time("2015-10-21T07:28:00.Z", &ms), -EINVAL);
        ck_assert_int_eq(fmt_parse_time("2015-10-21T07:28:00Zjunk", &ms), -EINVAL);
        ck_assert_int_eq(fmt_parse_time("", &ms), -EINVAL);
        ck_assert_int_eq(fmt_parse_time(NULL, &ms), -EINVAL);
}
END_TEST

START_TEST(test_fmt_clean)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                {"plain label", "plain label"},
                {"caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9 \xe2\x9c\x93"}, /* UTF-8 stays */
                {"\x1b[2J\x1b]0;title\x07", "?[2J?]0;title?"},            /* ESC, BEL */
                {"a\rb\nc\td", "a?b?c?d"},
                {"del\x7f", "del?"},
                {"c1 \xc2\x9b"
                 "31m",
                 "c1 ?31m"},                          /* CSI as a C1 control */
                {"bad \xff\xfe utf8", "bad ?? utf8"}, /* not UTF-8 */
                {"cut \xe2\x9c", "cut ??"},           /* truncated sequence */
                {"overlong \xc0\xaf", "overlong ??"},
        };

        for (int i = 0; i < N(cases); i++) {
                char *out = fmt_clean(cases[i].in);
                ck_assert_ptr_nonnull(out);
                ck_assert_str_eq(out, cases[i].out);
                free(out);
        }
        ck_assert_uint_eq(fmt_width("abc"), 3);
        ck_assert_uint_eq(fmt_width("caf\xc3\xa9"), 4);
}
END_TEST

/* ---- filename ---------------------------------------------------------------------- */

static void assert_plain(const char *name)
{
        size_t n = strlen(name);
        ck_assert_msg(n > 0 && n <= FILENAME_MAX_BYTES, "'%s'", name);
        ck_assert_msg(!strchr(name, '/') && !strchr(name, '\\') && name[0] != '.', "'%s'", name);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg((unsigned char)name[i] >= 0x20 && name[i] != 0x7F, "'%s'", name);
}

START_TEST(test_filename_disposition)
{
        static const struct {
                const char *header, *name; /* NULL: -ENOENT */
        } cases[] = {
                {"attachment; filename=\"a.png\"", "a.png"},
                {"attachment; filename=a.png", "a.png"},
                {"attachment;filename=\"with \\\"quote\\\".jpg\"", "with \"quote\".jpg"},
                {"attachment; filename*=UTF-8''caf%C3%A9.png", "caf\xc3\xa9.png"},
                {"attachment; filename=\"plain.png\"; filename*=utf-8''better.png", "better.png"},
                {"attachment; filename*=ISO-8859-1''x%E9.png; filename=\"x.png\"", "x.png"},
                {"attachment; filename*=UTF-8''a%00b.png; filename=\"safe.png\"", "safe.png"},
                {"attachment; filename=\"../../etc/passwd\"", "passwd"},
                {"attachment; filename=\"/etc/shadow\"", "shadow"},
                {"attachment; filename=\"..\\\\..\\\\win.ini\"", "win.ini"},
                {"attachment; filename*=UTF-8''..%2F..%2Fx.png", "x.png"},
                {"attachment; filename=\".bashrc\"", "bashrc"},
                {"attachment; filename=\"a\x01"
                 "b\"",
                 "a_b"},
                {"attachment; filename=\"..\"", NULL},
                {"attachment; filename=\"dir/\"", NULL},
                {"attachment; filename=\"\"", NULL},
                {"attachment", NULL},
                {"inline; name=\"x\"", NULL},
                {"", NULL},
                {NULL, NULL},
        };

        for (int i = 0; i < N(cases); i++) {
                char *name = NULL;
                int r = filename_from_disposition(cases[i].header, &name);
                if (!cases[i].name) {
                        ck_assert_msg(r == -ENOENT, "%s -> %d %s", cases[i].header, r, name ? name : "");
                        continue;
                }
                ck_assert_msg(r == 0, "%s -> %d", cases[i].header, r);
                ck_assert_str_eq(name, cases[i].name);
                assert_plain(name);
                free(name);
        }
}
END_TEST

START_TEST(test_filename_length)
{
        /* 300 bytes of two-byte characters: cut at 255 bytes or less, on a boundary */
        char in[601], *out = NULL;

        for (int i = 0; i < 300; i++)
                memcpy(in + 2 * i, "\xc3\xa9", 2);
        in[600] = '\0';
        ck_assert_int_eq(filename_safe(in, &out), 0);
        ck_assert_uint_eq(strlen(out), 254);
        assert_plain(out);
        free(out);
        memset(in, 'a', 255);
        in[255] = '\0';
        ck_assert_int_eq(filename_safe(in, &out), 0);
        ck_assert_uint_eq(strlen(out), 255);
        free(out);
        ck_assert_int_eq(filename_safe("...", &out), -ENOENT);
}
END_TEST

static Suite *cli_suite(void)
{
        Suite *s = suite_create("cli");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_sse_pieces);
        tcase_add_test(tc, test_sse_no_data_no_event);
        tcase_add_test(tc, test_sse_unfinished_event);
        tcase_add_test(tc, test_sse_callback_stops);
        tcase_add_test(tc, test_sse_line_limit);
        tcase_add_test(tc, test_sse_line_at_limit);
        tcase_add_test(tc, test_sse_data_limit);
        tcase_add_test(tc, test_fmt_size);
        tcase_add_test(tc, test_fmt_duration);
        tcase_add_test(tc, test_fmt_ago);
        tcase_add_test(tc, test_fmt_parse_time);
        tcase_add_test(tc, test_fmt_clean);
        tcase_add_test(tc, test_filename_disposition);
        tcase_add_test(tc, test_filename_length);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(cli_suite()); }

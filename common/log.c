/* log: one line per call on stderr, written with a single write(2) so lines
 * from the engine and API threads never interleave. Under journald the
 * syslog priority prefix comes first (journald strips it and keeps the
 * priority); in text the prefix replaces our timestamp. Either format
 * escapes control characters, so one call is always one line.
 *
 * LOG_FORMAT=json writes one JSON object per line for log shippers:
 * {"time", "level", "job" (when the message starts with "job ID: "),
 * "message"}. The object is valid JSON whatever the message holds: the
 * formatter escapes as it copies, replaces bytes that are not UTF-8 with
 * U+FFFD, and cuts a message too long for the line at a whole character,
 * always leaving room for the closing quote and brace. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define JOB_ID_MAX 64 /* bytes of a job id taken from "job ID: " */

static enum log_level min_level = LOG_INFO;      /* set by main (reload), read by every thread: atomic */
static enum log_format format = LOG_FORMAT_TEXT; /* likewise */
static int journal;

static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const int syslog_prio[] = {7, 6, 4, 3};
static const char *const format_names[] = {"text", "json"};

void log_set_level(enum log_level level) { __atomic_store_n(&min_level, level, __ATOMIC_RELAXED); }
enum log_level log_get_level(void) { return __atomic_load_n(&min_level, __ATOMIC_RELAXED); }
void log_set_format(enum log_format f) { __atomic_store_n(&format, f, __ATOMIC_RELAXED); }
enum log_format log_get_format(void) { return __atomic_load_n(&format, __ATOMIC_RELAXED); }
void log_init(void) { journal = getenv("JOURNAL_STREAM") != NULL; }

static int parse_name(const char *s, const char *const *names, size_t n, int *ret)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(s, names[i]) == 0) {
                        *ret = (int)i;
                        return 0;
                }
        return -EINVAL;
}

int log_level_parse(const char *s, enum log_level *ret)
{
        int i;

        if (parse_name(s, level_names, sizeof(level_names) / sizeof(level_names[0]), &i) < 0)
                return -EINVAL;
        *ret = (enum log_level)i;
        return 0;
}

const char *log_level_name(enum log_level level)
{
        return (unsigned)level <= LOG_ERROR ? level_names[level] : "?";
}

int log_format_parse(const char *s, enum log_format *ret)
{
        int i;

        if (parse_name(s, format_names, sizeof(format_names) / sizeof(format_names[0]), &i) < 0)
                return -EINVAL;
        *ret = (enum log_format)i;
        return 0;
}

const char *log_format_name(enum log_format f)
{
        return (unsigned)f <= LOG_FORMAT_JSON ? format_names[f] : "?";
}

/* ---- building one line ---------------------------------------------------------------------- */

/* A line being built: text goes in while it fits below `end`, which keeps
 * room for what must close the line. */
struct out {
        char *buf;
        size_t len;
        size_t end; /* text may fill buf[0..end) */
};

static bool put(struct out *o, const char *s, size_t n)
{
        if (n > o->end - o->len)
                return false;
        memcpy(o->buf + o->len, s, n);
        o->len += n;
        return true;
}

static bool puts_(struct out *o, const char *s) { return put(o, s, strlen(s)); }

/* "2025-10-02T12:00:00.123Z" */
static void put_time(struct out *o, const struct timespec *wall)
{
        char t[40];
        struct tm tm;
        size_t n;

        gmtime_r(&wall->tv_sec, &tm);
        n = strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(t + n, sizeof(t) - n, ".%03ldZ", wall->tv_nsec / 1000000 % 1000);
        puts_(o, t);
}

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
        unsigned char c = s[0];
        unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
        size_t n;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2;
        else if (c >= 0xe0 && c <= 0xef)
                n = 3;
        else if (c >= 0xf0 && c <= 0xf4)
                n = 4;
        else
                return 0;
        if (c == 0xe0)
                lo = 0xa0;
        else if (c == 0xed)
                hi = 0x9f;
        else if (c == 0xf0)
                lo = 0x90;
        else if (c == 0xf4)
                hi = 0x8f;
        if (s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return n;
}

/* The n bytes of s as the inside of a JSON string; stops at the first
 * character that does not fit. */
static void put_json_chars(struct out *o, const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s, *e = p + n;

        while (p < e) {
                char esc[8];
                size_t len = utf8_len(p);
                bool ok;

                if (len == 0 || (size_t)(e - p) < len) {
                        ok = put(o, "\xef\xbf\xbd", 3); /* U+FFFD */
                        len = 1;
                } else if (*p == '"' || *p == '\\') {
                        esc[0] = '\\';
                        esc[1] = (char)*p;
                        ok = put(o, esc, 2);
                } else if (*p == '\n') {
                        ok = put(o, "\\n", 2);
                } else if (*p == '\t') {
                        ok = put(o, "\\t", 2);
                } else if (*p == '\r') {
                        ok = put(o, "\\r", 2);
                } else if (*p < 0x20 || *p == 0x7f) {
                        snprintf(esc, sizeof(esc), "\\u%04x", *p);
                        ok = put(o, esc, 6);
                } else {
                        ok = put(o, (const char *)p, len);
                }
                if (!ok)
                        return;
                p += len;
        }
}

/* The message as text: control characters written as escapes (\n, \r,
 * \t, \xHH), so that no message can end its line or forge the next one;
 * stops at the first escape that does not fit. */
static void put_text_chars(struct out *o, const char *s)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                char esc[8];
                bool ok;

                if (*p >= 0x20 && *p != 0x7f) {
                        ok = put(o, (const char *)p, 1);
                } else {
                        if (*p == '\n')
                                snprintf(esc, sizeof(esc), "\\n");
                        else if (*p == '\r')
                                snprintf(esc, sizeof(esc), "\\r");
                        else if (*p == '\t')
                                snprintf(esc, sizeof(esc), "\\t");
                        else
                                snprintf(esc, sizeof(esc), "\\x%02x", *p);
                        ok = puts_(o, esc);
                }
                if (!ok)
                        return;
        }
}

/* The id of a message that starts with "job ID: ": its length, or 0. */
static size_t job_id_len(const char *msg)
{
        size_t n;

        if (strncmp(msg, "job ", 4) != 0)
                return 0;
        n = strcspn(msg + 4, " :");
        if (n == 0 || n > JOB_ID_MAX || msg[4 + n] != ':' || msg[5 + n] != ' ')
                return 0;
        return n;
}

static void put_json(struct out *o, enum log_level level, const struct timespec *wall, const char *msg)
{
        size_t id = job_id_len(msg);

        puts_(o, "{\"time\":\"");
        put_time(o, wall);
        puts_(o, "\",\"level\":\"");
        puts_(o, level_names[level]);
        if (id) {
                puts_(o, "\",\"job\":\"");
                put_json_chars(o, msg + 4, id);
        }
        puts_(o, "\",\"message\":\"");
        put_json_chars(o, msg, strlen(msg));
}

size_t log_format_line(char *buf, size_t size, enum log_format fmt, bool in_journal, enum log_level level,
                       const struct timespec *wall, const char *msg)
{
        /* the closing "}, newline and NUL always fit; the prefix and the
         * fields before the message take under 160 bytes (size >= 256) */
        struct out o = {.buf = buf, .len = 0, .end = size - 4};
        char prio[8];

        if ((unsigned)level > LOG_ERROR)
                level = LOG_ERROR;
        if (in_journal) {
                snprintf(prio, sizeof(prio), "<%d>", syslog_prio[level]);
                puts_(&o, prio);
        }
        if (fmt == LOG_FORMAT_JSON) {
                put_json(&o, level, wall, msg);
                o.end = size - 1;
                puts_(&o, "\"}");
        } else {
                if (!in_journal) {
                        put_time(&o, wall);
                        puts_(&o, " ");
                        puts_(&o, level_names[level]);
                        puts_(&o, " ");
                }
                o.end = size - 2;
                put_text_chars(&o, msg);
        }
        buf[o.len++] = '\n';
        buf[o.len] = '\0';
        return o.len;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        char msg[LOG_MSG_MAX], line[LOG_LINE_MAX];
        struct timespec ts;
        va_list ap;

        if ((unsigned)level > LOG_ERROR || level < log_get_level())
                return;
        va_start(ap, fmt);
        int w = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (w < 0)
                return;
        clock_gettime(CLOCK_REALTIME, &ts);
        size_t n = log_format_line(line, sizeof(line), log_get_format(), journal, level, &ts, msg);
        ssize_t r = write(STDERR_FILENO, line, n);
        (void)r;
}

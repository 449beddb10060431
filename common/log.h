/* Levelled log lines on stderr, as text or as one JSON object per line.
 * Returns nothing; never fails the caller. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR };

/* LOG_FORMAT: "2025-10-02T12:00:00.123Z info job ID: ..." or
 * {"time":"2025-10-02T12:00:00.123Z","level":"info","job":"ID","message":"job ID: ..."} */
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

#define LOG_MSG_MAX  2048 /* bytes of one message; longer ones are cut */
#define LOG_LINE_MAX 4096 /* bytes of one line as written, newline included */

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "debug", "info", "warning", "error" -> 0 and *ret; unknown -> -EINVAL */
int log_level_parse(const char *s, enum log_level *ret);
/* "debug" .. "error"; "?" for a value out of range. */
const char *log_level_name(enum log_level level);

void log_set_format(enum log_format format);
enum log_format log_get_format(void);
/* "text", "json" -> 0 and *ret; unknown -> -EINVAL */
int log_format_parse(const char *s, enum log_format *ret);
/* "text", "json"; "?" for a value out of range. */
const char *log_format_name(enum log_format format);

/* Under journald (JOURNAL_STREAM set) lines get "<N>" syslog priority
 * prefixes, which journald takes as the priority and strips; the text
 * format then leaves out its timestamp (the journal has one), the JSON
 * format keeps its "time". */
void log_init(void);

/* One line as log_msg() writes it, for msg at level and the wall time
 * *wall, into buf (size >= 256): the "<N>" prefix when journal, then the
 * text or the JSON object, then '\n'. Control characters in msg are
 * escaped in both formats (text: \n, \r, \t, \xHH), so a line never
 * splits. A message too long for size is cut at a whole character or
 * escape (text: at a byte). JSON is valid whatever msg holds: quotes and
 * backslashes are escaped too and bytes that are not UTF-8 become U+FFFD;
 * "job" is set when msg starts with "job ID: " (the message keeps that
 * prefix). Returns the length written, newline included; buf is also
 * NUL-terminated. */
size_t log_format_line(char *buf, size_t size, enum log_format format, bool journal, enum log_level level,
                       const struct timespec *wall, const char *msg);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                                      \
        do {                                                                                                \
                if (log_get_level() <= LOG_DEBUG)                                                           \
                        log_msg(LOG_DEBUG, __VA_ARGS__);                                                    \
        } while (0)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_msg(LOG_ERROR, __VA_ARGS__)

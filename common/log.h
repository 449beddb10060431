/* Levelled log lines on stderr. Returns nothing; never fails the caller. */
#pragma once

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "debug", "info", "warning", "error" -> 0 and *ret; unknown -> -EINVAL */
int log_level_parse(const char *s, enum log_level *ret);
/* "debug" .. "error"; "?" for a value out of range. */
const char *log_level_name(enum log_level level);
/* Under journald (JOURNAL_STREAM set) lines get "<N>" priority prefixes
 * instead of timestamps. */
void log_init(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                                      \
        do {                                                                                                \
                if (log_get_level() <= LOG_DEBUG)                                                           \
                        log_msg(LOG_DEBUG, __VA_ARGS__);                                                    \
        } while (0)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_msg(LOG_ERROR, __VA_ARGS__)

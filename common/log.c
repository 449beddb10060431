/* log: one line per call on stderr, written with a single write(2) so lines
 * from the engine and API threads never interleave. Under journald the
 * syslog priority prefix replaces our timestamp. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

static enum log_level min_level = LOG_INFO; /* set by main (reload), read by every thread: atomic */
static int journal;

static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const int syslog_prio[] = {7, 6, 4, 3};

void log_set_level(enum log_level level) { __atomic_store_n(&min_level, level, __ATOMIC_RELAXED); }
enum log_level log_get_level(void) { return __atomic_load_n(&min_level, __ATOMIC_RELAXED); }
void log_init(void) { journal = getenv("JOURNAL_STREAM") != NULL; }

int log_level_parse(const char *s, enum log_level *ret)
{
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
                if (strcmp(s, level_names[i]) == 0) {
                        *ret = (enum log_level)i;
                        return 0;
                }
        return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
        return (unsigned)level <= LOG_ERROR ? level_names[level] : "?";
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        char line[2048];
        size_t n;
        va_list ap;

        if ((unsigned)level > LOG_ERROR || level < log_get_level())
                return;
        if (journal) {
                n = (size_t)snprintf(line, sizeof(line), "<%d>", syslog_prio[level]);
        } else {
                struct timespec ts;
                struct tm tm;
                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
                n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                                      level_names[level]);
        }
        va_start(ap, fmt);
        int w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (w < 0)
                return;
        n += (size_t)w;
        if (n > sizeof(line) - 2)
                n = sizeof(line) - 2;
        line[n++] = '\n';
        ssize_t r = write(STDERR_FILENO, line, n);
        (void)r;
}

/* clock: thin wrappers so that every module speaks milliseconds. */
#include "autoconfig.h"

#include <stdio.h>
#include <time.h>

#include "common/clock.h"

static int64_t ts_ms(clockid_t id)
{
        struct timespec ts;
        clock_gettime(id, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_ms(void) { return ts_ms(CLOCK_MONOTONIC); }
int64_t clock_wall_ms(void) { return ts_ms(CLOCK_REALTIME); }

char *clock_format_rfc3339(int64_t wall_ms, char *buf, size_t size)
{
        time_t secs = (time_t)(wall_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, size - n, ".%03dZ", (int)(wall_ms % 1000));
        return buf;
}

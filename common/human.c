/* human: numbers for log lines, in the design's format. Pure. */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/human.h"

char *human_count(int64_t n, char *buf, size_t size)
{
        char digits[24];
        uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
        int len = snprintf(digits, sizeof(digits), "%" PRIu64, u);
        size_t o = 0;

        if (size == 0)
                return buf;
        if (n < 0 && o + 1 < size)
                buf[o++] = '-';
        for (int i = 0; i < len && o + 1 < size; i++) {
                if (i > 0 && (len - i) % 3 == 0) {
                        buf[o++] = ',';
                        if (o + 1 >= size)
                                break;
                }
                buf[o++] = digits[i];
        }
        buf[o] = '\0';
        return buf;
}

char *human_rate(int64_t bps, char *buf, size_t size)
{
        if (bps < 1024)
                snprintf(buf, size, "%" PRId64 " B/s", bps);
        else if (bps < 1024 * 1024)
                snprintf(buf, size, "%.1f KB/s", (double)bps / 1024.0);
        else
                snprintf(buf, size, "%.1f MB/s", (double)bps / (1024.0 * 1024.0));
        return buf;
}

char *human_mb(int64_t bytes, char *buf, size_t size)
{
        snprintf(buf, size, "%.2f MB", (double)bytes / (1024.0 * 1024.0));
        return buf;
}

char *human_secs(int64_t ms, char *buf, size_t size)
{
        snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
        return buf;
}

/* Numbers as operators read them in logs: "245,678", "104.5 KB/s",
 * "11.88 MB", "2.3s". Each writes into buf and returns it. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define HUMAN_MAX 32 /* enough for any of them */

/* Thousands separated by commas: 12,456,789. */
char *human_count(int64_t n, char *buf, size_t size);
/* Bytes per second: "512 B/s", "104.5 KB/s", "3.2 MB/s" (1 KB = 1024 B). */
char *human_rate(int64_t bps, char *buf, size_t size);
/* Bytes as MB with two decimals: "11.88 MB" (1 MB = 1024 KB). */
char *human_mb(int64_t bytes, char *buf, size_t size);
/* Milliseconds as seconds with one decimal: "2.3s". */
char *human_secs(int64_t ms, char *buf, size_t size);

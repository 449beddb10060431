/* format: how hauldctl writes numbers, times and text for people. Pure:
 * the current time is an argument; nothing here prints. Each fmt_* writes
 * a NUL-terminated string into buf (truncated to size) and returns buf. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define FMT_SIZE_LEN 32 /* a buffer that holds any fmt_size/fmt_speed/fmt_duration/fmt_ago */

/* 0 B, 1023 B, 1.0 KiB, 12.3 MiB, 1.5 GiB, 2.0 TiB; "-" when negative (unknown). */
char *fmt_size(int64_t bytes, char *buf, size_t size);
/* fmt_size per second: "1.2 MiB/s"; "-" when negative. */
char *fmt_speed(int64_t bytes_per_s, char *buf, size_t size);
/* 0s, 45s, 3m05s, 2h01m, 3d04h; "-" when negative or not a number. */
char *fmt_duration(double seconds, char *buf, size_t size);
/* then relative to now: "just now", "5s ago", "3m ago", "in 2h", "4d ago". */
char *fmt_ago(int64_t then_ms, int64_t now_ms, char *buf, size_t size);

/* An RFC 3339 time ("2026-11-30T10:00:00.123Z", offsets "+01:00" too) into
 * wall-clock ms. 0 or -EINVAL. */
int fmt_parse_time(const char *s, int64_t *ret_ms);

/* A copy of s safe to show on a terminal: C0 and C1 control characters,
 * DEL and bytes that are not UTF-8 become '?'. NULL without memory. */
char *fmt_clean(const char *s);
/* Columns s takes on a terminal (UTF-8; wide characters count 2 where the
 * locale knows them). */
size_t fmt_width(const char *s);

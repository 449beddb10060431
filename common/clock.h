/* Clocks in milliseconds. Monotonic for timers, wall clock for records. */
#pragma once
#include <stdint.h>
#include <stddef.h>

int64_t clock_mono_ms(void);
int64_t clock_wall_ms(void);
/* RFC 3339 UTC with milliseconds ("2026-11-30T10:00:00.123Z") into buf
 * (at least 25 bytes). Returns buf. */
char *clock_format_rfc3339(int64_t wall_ms, char *buf, size_t size);

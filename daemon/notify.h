/* systemd notification and socket activation; no-ops without libsystemd. */
#pragma once
#include <stdint.h>

/* sd_notify(3) message; silently nothing when not under systemd. */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Watchdog interval asked for by systemd in ms (0: none). */
int64_t notify_watchdog_ms(void);
/* A listening socket passed by systemd (LISTEN_FDS), or -1. */
int notify_listen_fd(void);

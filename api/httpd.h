/* The HTTP control API (libmicrohttpd). It reads the job table through its
 * own store connection and changes jobs only through the scheduler.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>

#include "daemon/config.h"
#include "daemon/sched.h"

struct event_bus;

struct httpd;

struct httpd_deps {
        const struct config *cfg;
        struct sched *sched;
        struct event_bus *events; /* live events for the SSE streams */
        const char *version;
};

/* Can only this host reach the listener? With fd >= 0 (a socket from
 * systemd) its bound address decides: unix, 127.0.0.0/8 or ::1. Else the
 * LISTEN text: unix:PATH, or a host part that is a loopback address (in
 * any spelling inet_pton accepts, IPv6 in brackets) or "localhost". */
bool httpd_listener_is_local(const char *listen, int fd);
/* Start serving on listen_fd (a bound, listening socket, e.g. from
 * systemd) or, when listen_fd < 0, on cfg->listen. */
int httpd_start(const struct httpd_deps *deps, int listen_fd, struct httpd **ret);
/* The TCP port actually bound (for LISTEN=127.0.0.1:0), 0 for unix sockets. */
int httpd_port(const struct httpd *h);
/* Use reloaded settings from now on; the caller keeps cfg alive (and the
 * old one until httpd_stop()). The listener's keys (LISTEN, STORE,
 * API_THREADS, API_MAX_CONNECTIONS*) must be the running ones
 * (config_merge_reload()): they are not applied again. */
void httpd_reconfigure(struct httpd *h, const struct config *cfg);
/* Refuse new work with 503 (shutting down); reads still answer. */
void httpd_set_draining(struct httpd *h);
void httpd_stop(struct httpd *h);

/* The API's connections as httpd.c guards them: at most
 * API_MAX_CONNECTIONS open, however microhttpd's threads share them out;
 * each request has API_HEADER_TIMEOUT to deliver its headers, however
 * slowly its bytes trickle in; what microhttpd says about its connections
 * reaches the log at a bounded rate.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <microhttpd.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONNS_SWEEP_MS      250   /* how often deadlines are checked */
#define CONNS_LOG_WINDOW_MS 10000 /* at most one line of each kind per window */

struct conns;

/* Start the sweeper thread; header_timeout_ms is the first deadline,
 * max_connections the most open at once. */
int conns_start(int64_t header_timeout_ms, unsigned max_connections, struct conns **ret);
/* Deadlines armed from now on (a reload) use header_timeout_ms. */
void conns_set_header_timeout(struct conns *c, int64_t header_timeout_ms);
/* Stop the sweeper and free; after MHD_stop_daemon() (which closes every
 * connection, telling conns_notify()). NULL: nothing. */
void conns_stop(struct conns *c);

/* microhttpd's accept policy (cls: the struct conns): refuses a connection
 * while max_connections are open. microhttpd's own limit is per thread (it
 * splits MHD_OPTION_CONNECTION_LIMIT evenly, and its threads do not take
 * connections evenly), so httpd.c gives each thread room for them all and
 * this holds the total; threads accepting at the same moment may pass it by
 * one each. */
enum MHD_Result conns_admit(void *cls, const struct sockaddr *addr, socklen_t addrlen);
/* MHD_OPTION_NOTIFY_CONNECTION (cls: the struct conns): a new connection's
 * deadline is armed, a closed one's dropped. */
void conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode code);
/* A request's headers are in (the access handler's first call): no
 * deadline while it is answered. */
void conns_headers_in(struct MHD_Connection *conn);
/* A request was answered: the next one on this connection has its own
 * deadline, from now. */
void conns_request_done(struct conns *c, struct MHD_Connection *conn);
/* MHD_OPTION_EXTERNAL_LOGGER (cls: the struct conns): the first message of
 * a window is logged, the rest counted into one summary line. */
void conns_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* conns: header deadlines for the API's connections, and a bounded log of
 * what microhttpd says about them.
 *
 * microhttpd's own timeout (MHD_OPTION_CONNECTION_TIMEOUT) counts idle
 * time: every byte that arrives starts it over, so a client sending one
 * byte a second holds its connection forever. Here each connection gets a
 * deadline when it opens and again after each answer; a request whose
 * headers are not all in by then has its socket shut down by the sweeper
 * thread, which microhttpd sees as the client going away and closes. The
 * deadline is dropped while a request is being answered (its body, a long
 * event stream), where the idle timeout applies.
 *
 * The total of open connections is counted here (started less closed)
 * and held to max_connections by the accept policy: microhttpd's own
 * limit applies to each of its threads alone.
 *
 * Invariants: a watch is in the armed list exactly while its connection
 * owes a request's headers; the list and the log counters are guarded by
 * lock. A watch's fd stays open while the watch exists: microhttpd tells
 * conns_notify() a connection closed before it closes the socket, and the
 * sweeper calls shutdown() only under lock on watches still listed. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api/conns.h"
#include "common/clock.h"
#include "common/log.h"

#define LOG_TEXT_MAX 256 /* bytes of one microhttpd message kept */

struct watch {
        struct conns *owner;
        struct watch *prev, *next; /* in owner's armed list */
        int fd;
        int64_t deadline_ms; /* monotonic */
        bool armed;          /* in the list */
        bool shut;           /* shut down by the sweeper; closing */
};

struct conns {
        pthread_mutex_t lock;
        pthread_cond_t wake; /* stop, on CLOCK_MONOTONIC */
        pthread_t thread;
        bool stopping;
        int64_t header_timeout_ms;
        unsigned max_connections;
        atomic_uint open;   /* connections started and not yet closed */
        atomic_uint turned; /* refused for max_connections since the window began */
        struct watch *head; /* armed watches, in arming order */
        /* the log window */
        int64_t window_ms;       /* monotonic start of the current window */
        bool said;               /* a microhttpd message went out in this window */
        unsigned hushed;         /* microhttpd messages held back in this window */
        unsigned late;           /* connections shut for their deadline in this window */
        char last[LOG_TEXT_MAX]; /* the last message held back */
};

/* ---- the armed list (under lock) ------------------------------------------- */

static void arm(struct conns *c, struct watch *w, int64_t now)
{
        w->deadline_ms = now + c->header_timeout_ms;
        if (w->armed || w->shut)
                return;
        w->prev = NULL;
        w->next = c->head;
        if (c->head)
                c->head->prev = w;
        c->head = w;
        w->armed = true;
}

static void disarm(struct conns *c, struct watch *w)
{
        if (!w->armed)
                return;
        if (w->prev)
                w->prev->next = w->next;
        else
                c->head = w->next;
        if (w->next)
                w->next->prev = w->prev;
        w->prev = w->next = NULL;
        w->armed = false;
}

static struct watch *watch_of(struct MHD_Connection *conn)
{
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return ci ? ci->socket_context : NULL;
}

/* ---- microhttpd's callbacks ------------------------------------------------- */

enum MHD_Result conns_admit(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
        struct conns *c = cls;

        (void)addr;
        (void)addrlen;
        if (atomic_load(&c->open) < c->max_connections)
                return MHD_YES;
        atomic_fetch_add(&c->turned, 1);
        return MHD_NO;
}

void conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                  enum MHD_ConnectionNotificationCode code)
{
        struct conns *c = cls;
        struct watch *w = *socket_context;

        if (code == MHD_CONNECTION_NOTIFY_STARTED)
                atomic_fetch_add(&c->open, 1);
        else
                atomic_fetch_sub(&c->open, 1);
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
                if (!ci || !(w = calloc(1, sizeof(*w))))
                        return; /* this connection goes without a deadline */
                w->owner = c;
                w->fd = ci->connect_fd;
                pthread_mutex_lock(&c->lock);
                arm(c, w, clock_mono_ms());
                pthread_mutex_unlock(&c->lock);
                *socket_context = w;
                return;
        }
        if (!w)
                return;
        pthread_mutex_lock(&c->lock);
        disarm(c, w);
        pthread_mutex_unlock(&c->lock);
        free(w);
        *socket_context = NULL;
}

void conns_headers_in(struct MHD_Connection *conn)
{
        struct watch *w = watch_of(conn);

        if (!w)
                return;
        pthread_mutex_lock(&w->owner->lock);
        disarm(w->owner, w);
        pthread_mutex_unlock(&w->owner->lock);
}

void conns_request_done(struct conns *c, struct MHD_Connection *conn)
{
        struct watch *w = watch_of(conn);

        if (!w)
                return;
        pthread_mutex_lock(&c->lock);
        arm(c, w, clock_mono_ms());
        pthread_mutex_unlock(&c->lock);
}

void conns_log(void *cls, const char *fmt, va_list ap)
{
        struct conns *c = cls;
        char text[LOG_TEXT_MAX];
        bool say;

        vsnprintf(text, sizeof(text), fmt, ap);
        text[strcspn(text, "\n")] = '\0';
        pthread_mutex_lock(&c->lock);
        say = !c->said;
        c->said = true;
        if (!say) {
                c->hushed++;
                memcpy(c->last, text, sizeof(text));
        }
        pthread_mutex_unlock(&c->lock);
        if (say)
                log_warning("httpd: %s", text);
}

/* ---- the sweeper -------------------------------------------------------------- */

/* Shut every connection past its deadline; at the end of a window, one line
 * for what was held back and one for the connections shut. Under lock. */
static void sweep(struct conns *c, int64_t now, unsigned *ret_hushed, unsigned *ret_late,
                  unsigned *ret_turned, char *last)
{
        *ret_hushed = *ret_late = *ret_turned = 0;
        for (struct watch *w = c->head; w; w = w->next)
                if (!w->shut && w->deadline_ms <= now) {
                        shutdown(w->fd, SHUT_RDWR);
                        w->shut = true;
                        c->late++;
                }
        if (now - c->window_ms < CONNS_LOG_WINDOW_MS)
                return;
        *ret_hushed = c->hushed;
        *ret_late = c->late;
        *ret_turned = atomic_exchange(&c->turned, 0);
        memcpy(last, c->last, LOG_TEXT_MAX);
        c->window_ms = now;
        c->said = false;
        c->hushed = c->late = 0;
}

static void *sweeper(void *arg)
{
        struct conns *c = arg;
        char last[LOG_TEXT_MAX];
        unsigned hushed, late, turned;
        struct timespec ts;

        pthread_mutex_lock(&c->lock);
        while (!c->stopping) {
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += CONNS_SWEEP_MS * 1000000L;
                ts.tv_sec += ts.tv_nsec / 1000000000L;
                ts.tv_nsec %= 1000000000L;
                pthread_cond_timedwait(&c->wake, &c->lock, &ts);
                int64_t timeout_ms = c->header_timeout_ms;
                sweep(c, clock_mono_ms(), &hushed, &late, &turned, last);
                pthread_mutex_unlock(&c->lock);
                if (turned)
                        log_warning("httpd: refused %u connection%s in the last %d s: %u open "
                                    "(API_MAX_CONNECTIONS)",
                                    turned, turned == 1 ? "" : "s", CONNS_LOG_WINDOW_MS / 1000,
                                    c->max_connections);
                if (hushed)
                        log_warning(
                                "httpd: %u more messages about connections in the last %d s; the last: %s",
                                hushed, CONNS_LOG_WINDOW_MS / 1000, last);
                if (late)
                        log_warning("httpd: closed %u connection%s in the last %d s: no complete request "
                                    "headers within %g s",
                                    late, late == 1 ? "" : "s", CONNS_LOG_WINDOW_MS / 1000,
                                    (double)timeout_ms / 1000);
                pthread_mutex_lock(&c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* ---- start and stop ------------------------------------------------------------- */

int conns_start(int64_t header_timeout_ms, unsigned max_connections, struct conns **ret)
{
        struct conns *c = calloc(1, sizeof(*c));
        pthread_condattr_t ca;
        int r;

        if (!c)
                return -ENOMEM;
        c->header_timeout_ms = header_timeout_ms;
        c->max_connections = max_connections;
        atomic_init(&c->open, 0);
        atomic_init(&c->turned, 0);
        c->window_ms = clock_mono_ms();
        pthread_mutex_init(&c->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->wake, &ca);
        pthread_condattr_destroy(&ca);
        r = -pthread_create(&c->thread, NULL, sweeper, c);
        if (r < 0) {
                pthread_cond_destroy(&c->wake);
                pthread_mutex_destroy(&c->lock);
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void conns_set_header_timeout(struct conns *c, int64_t header_timeout_ms)
{
        pthread_mutex_lock(&c->lock);
        c->header_timeout_ms = header_timeout_ms;
        pthread_mutex_unlock(&c->lock);
}

void conns_stop(struct conns *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_cond_signal(&c->wake);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        if (c->hushed) /* what microhttpd said as it stopped */
                log_warning("httpd: %u more messages about connections; the last: %s", c->hushed, c->last);
        pthread_cond_destroy(&c->wake);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

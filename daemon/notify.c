/* notify: the only file that speaks to systemd. Without libsystemd every
 * call is a no-op, so hauld runs the same outside systemd. */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon/notify.h"

void notify_send(const char *fmt, ...)
{
#ifdef HAVE_SYSTEMD
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        sd_notify(0, msg);
#else
        (void)fmt;
#endif
}

int64_t notify_watchdog_ms(void)
{
#ifdef HAVE_SYSTEMD
        uint64_t usec = 0;
        if (sd_watchdog_enabled(0, &usec) > 0)
                return (int64_t)(usec / 1000);
#endif
        return 0;
}

int notify_listen_fd(void)
{
#ifdef HAVE_SYSTEMD
        /* sd_listen_fds(1) unsets LISTEN_FDS, so a second call would find
         * nothing: ask once, remember the answer. */
        static int fd = -2;
        if (fd == -2)
                fd = sd_listen_fds(1) >= 1 ? SD_LISTEN_FDS_START : -1;
        return fd;
#else
        return -1;
#endif
}

/* Unit tests of httpd_listener_is_local() (api/httpd.c): which LISTEN
 * values and which sockets handed over by systemd count as reachable from
 * this host only, the condition for running without API_TOKEN_FILE. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "api/httpd.h"
#include "tests/unit/testutil.h"

static const struct {
        const char *listen;
        bool local;
} texts[] = {
        {"127.0.0.1:80", true},
        {"127.1.2.3:1", true},
        {"127.255.255.255:65535", true},
        {"[::1]:8080", true},
        {"[0:0:0:0:0:0:0:1]:8080", true},
        {"[::ffff:127.0.0.1]:80", true},
        {"localhost:9", true},
        {"LocalHost:9", true},
        {"unix:/run/x.sock", true},
        {"0.0.0.0:8080", false},
        {"[::]:80", false},
        {"192.168.1.2:80", false},
        {"127.0.0.1.example.com:80", false},
        {"localhost.example.com:9", false},
        {"128.0.0.1:80", false},
        {"10.127.0.1:80", false},
        {"[::2]:80", false},
        {"[::ffff:10.0.0.1]:80", false},
        {"[127.0.0.1]:80", false},
        {"hauld.example:8080", false},
        {"127.0.0.1", false},
        {"127.0.0.1:", false},
        {"::1:80", false},
        {"", false},
};

START_TEST(test_listen_text)
{
        ck_assert_msg(httpd_listener_is_local(texts[_i].listen, -1) == texts[_i].local, "%s: want %s",
                      texts[_i].listen, texts[_i].local ? "local" : "not local");
}
END_TEST

/* A socket bound to addr (not listening, so nothing can connect). */
static int bound(int family, const void *addr, socklen_t len)
{
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(bind(fd, addr, len) == 0, "bind: %s", strerror(errno));
        return fd;
}

static int bound_v4(const char *ip)
{
        struct sockaddr_in sa = {.sin_family = AF_INET};
        ck_assert_int_eq(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
        return bound(AF_INET, &sa, sizeof(sa));
}

START_TEST(test_socket_v4)
{
        int lo = bound_v4("127.0.0.1"), any = bound_v4("0.0.0.0");

        /* the socket decides, whatever LISTEN says */
        ck_assert(httpd_listener_is_local("0.0.0.0:8080", lo));
        ck_assert(!httpd_listener_is_local("127.0.0.1:8080", any));
        close(lo);
        close(any);
}
END_TEST

START_TEST(test_socket_v6)
{
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (probe < 0 && errno == EAFNOSUPPORT) {
                /* a kernel without IPv6: the text cases still cover [::1] */
                fprintf(stderr, "test_socket_v6: no IPv6 on this host, socket cases not run\n");
                return;
        }
        ck_assert_int_ge(probe, 0);
        close(probe);
        int lo = bound(AF_INET6, &sa, sizeof(sa));
        ck_assert(httpd_listener_is_local("0.0.0.0:8080", lo));
        close(lo);
        sa.sin6_addr = in6addr_any;
        int any = bound(AF_INET6, &sa, sizeof(sa));
        ck_assert(!httpd_listener_is_local("[::1]:8080", any));
        close(any);
}
END_TEST

START_TEST(test_socket_unix)
{
        char *dir = testutil_tmpdir();
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        ck_assert_ptr_nonnull(dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/api.sock", dir);
        int fd = bound(AF_UNIX, &sa, sizeof(sa));
        ck_assert(httpd_listener_is_local("0.0.0.0:8080", fd));
        close(fd);
        testutil_rmtree(dir);
}
END_TEST

START_TEST(test_socket_unusable)
{
        int fds[2];

        /* not a socket at all: getsockname fails, so not known to be local */
        ck_assert_int_eq(pipe(fds), 0);
        ck_assert(!httpd_listener_is_local("127.0.0.1:8080", fds[0]));
        close(fds[0]);
        close(fds[1]);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

static Suite *listen_suite(void)
{
        Suite *s = suite_create("listen");
        TCase *tc = tcase_create("text");

        tcase_add_loop_test(tc, test_listen_text, 0, N(texts));
        suite_add_tcase(s, tc);
        tc = tcase_create("socket");
        tcase_add_test(tc, test_socket_v4);
        tcase_add_test(tc, test_socket_v6);
        tcase_add_test(tc, test_socket_unix);
        tcase_add_test(tc, test_socket_unusable);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(listen_suite()); }

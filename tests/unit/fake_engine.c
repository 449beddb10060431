/* The fake engine of the scheduler's unit tests (fake_engine.h).
 *
 * Each started request becomes a struct fake_xfer, handed to the caller
 * as its struct xfer * (a cast: callers never look inside). A request
 * stays in x[] after it ends so that tests can count starts and see how
 * it ended. */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/sha256.h"
#include "tests/unit/fake_engine.h"

void fake_engine_init(struct fake_engine *fe) { *fe = (struct fake_engine){0}; }

void fake_engine_clear(struct fake_engine *fe)
{
        for (size_t i = 0; i < fe->n; i++) {
                free(fe->x[i]->url);
                free(fe->x[i]->subdir);
                free(fe->x[i]);
        }
        fake_engine_init(fe);
}

void fake_engine_bind(void *engine, engine_done_fn done, void *ctx)
{
        struct fake_engine *fe = engine;
        fe->done = done;
        fe->ctx = ctx;
}

/* host[:port] of an http(s) URL, into buf. */
static void host_of(const char *url, char *buf, size_t size)
{
        const char *p = strstr(url, "://");
        p = p ? p + 3 : url;
        size_t n = strcspn(p, "/?#");
        snprintf(buf, size, "%.*s", (int)n, p);
}

static int fake_start(void *engine, const struct xfer_request *req, struct xfer **ret)
{
        struct fake_engine *fe = engine;
        char host[256], other[256];

        if (fe->start_error < 0)
                return fe->start_error;
        ck_assert_uint_lt(fe->n, FAKE_MAX_XFERS);
        struct fake_xfer *x = calloc(1, sizeof(*x));
        ck_assert_ptr_nonnull(x);
        *x = (struct fake_xfer){.id = (int)fe->n,
                                .url = strdup(req->url),
                                .subdir = req->subdir ? strdup(req->subdir) : NULL,
                                .dir_fd = req->dir_fd,
                                .part_id = req->part_id,
                                .to_memory = req->to_memory,
                                .request_timeout_ms = req->request_timeout_ms,
                                .stall_ms = req->stall_ms,
                                .nheaders = req->nheaders,
                                .userdata = req->userdata,
                                .progress = {.bytes = 0, .expected = -1, .speed_bps = 0}};
        ck_assert_ptr_nonnull(x->url);
        fe->x[fe->n++] = x;
        fe->running++;
        x->running_at_start = fe->running;
        host_of(x->url, host, sizeof(host));
        for (size_t i = 0; i < fe->n; i++) {
                if (fe->x[i]->state != FAKE_RUNNING)
                        continue;
                host_of(fe->x[i]->url, other, sizeof(other));
                x->host_running_at_start += strcmp(host, other) == 0;
        }
        *ret = (struct xfer *)x;
        return 0;
}

static void fake_abort(void *engine, struct xfer *xp, bool keep_part)
{
        struct fake_engine *fe = engine;
        struct fake_xfer *x = (struct fake_xfer *)xp;

        ck_assert_int_eq(x->state, FAKE_RUNNING);
        x->state = FAKE_ABORTED;
        x->kept_part = keep_part;
        fe->running--;
}

static int fake_running_count(const void *engine) { return ((const struct fake_engine *)engine)->running; }

static void fake_progress(const void *engine, const struct xfer *xp, struct xfer_progress *ret)
{
        (void)engine;
        *ret = ((const struct fake_xfer *)xp)->progress;
}

const struct engine_ops fake_engine_ops = {
        .start = fake_start,
        .abort = fake_abort,
        .running = fake_running_count,
        .progress = fake_progress,
};

struct fake_xfer *fake_running(struct fake_engine *fe, int k)
{
        for (size_t i = 0; i < fe->n; i++)
                if (fe->x[i]->state == FAKE_RUNNING && k-- == 0)
                        return fe->x[i];
        return NULL;
}

struct fake_xfer *fake_find(struct fake_engine *fe, const char *url)
{
        for (size_t i = fe->n; i-- > 0;)
                if (strcmp(fe->x[i]->url, url) == 0)
                        return fe->x[i];
        return NULL;
}

struct fake_xfer *fake_find_part(struct fake_engine *fe, const char *part)
{
        for (size_t i = fe->n; i-- > 0;)
                if (strstr(fe->x[i]->url, part))
                        return fe->x[i];
        return NULL;
}

int fake_starts(const struct fake_engine *fe, const char *url)
{
        int n = 0;
        for (size_t i = 0; i < fe->n; i++)
                n += strcmp(fe->x[i]->url, url) == 0;
        return n;
}

int fake_peak(const struct fake_engine *fe)
{
        int peak = 0;
        for (size_t i = 0; i < fe->n; i++)
                if (fe->x[i]->running_at_start > peak)
                        peak = fe->x[i]->running_at_start;
        return peak;
}

int fake_peak_host(const struct fake_engine *fe)
{
        int peak = 0;
        for (size_t i = 0; i < fe->n; i++)
                if (fe->x[i]->host_running_at_start > peak)
                        peak = fe->x[i]->host_running_at_start;
        return peak;
}

void fake_finish(struct fake_engine *fe, struct fake_xfer *x, const struct xfer_result *res)
{
        ck_assert_ptr_nonnull(x);
        ck_assert_int_eq(x->state, FAKE_RUNNING);
        ck_assert_ptr_nonnull(fe->done);
        x->state = FAKE_DONE;
        fe->running--;
        fe->done(x->userdata, res, fe->ctx);
}

void fake_sha256(const char *body, char hex[65])
{
        ck_assert_int_eq(sha256_hex(body, strlen(body), hex), 0);
}

/* The last path segment of url (without query), "download" when empty. */
static void name_of(const char *url, char *buf, size_t size)
{
        const char *p = strstr(url, "://");
        p = p ? p + 3 : url;
        size_t end = strcspn(p, "?#");
        const char *slash = NULL;
        for (const char *q = p; q < p + end; q++)
                if (*q == '/')
                        slash = q;
        if (!slash || slash + 1 == p + end)
                snprintf(buf, size, "download");
        else
                snprintf(buf, size, "%.*s", (int)(p + end - slash - 1), slash + 1);
}

void fake_ok(struct fake_engine *fe, struct fake_xfer *x, const char *body)
{
        struct xfer_result res = {.rc = RC_OK, .http_status = 200, .retry_after_ms = -1, .duration_ms = 10};
        size_t len = strlen(body);
        int dir_fd = -1;

        ck_assert_ptr_nonnull(x);
        ck_assert(!x->to_memory);
        if (x->subdir)
                ck_assert_int_eq(fs_mkdirat_p(x->dir_fd, x->subdir, &dir_fd), 0);
        else
                ck_assert_int_ge(dir_fd = fcntl(x->dir_fd, F_DUPFD_CLOEXEC, 0), 0);
        snprintf(res.part, sizeof(res.part), ".%d.part", x->part_id);
        int fd = openat(dir_fd, res.part, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, body, len), (ssize_t)len);
        res.part_fd = fd;
        res.dir_fd = dir_fd;
        res.bytes = (int64_t)len;
        res.speed_bps = (int64_t)len * 100;
        snprintf(res.content_type, sizeof(res.content_type), "image/png");
        fake_sha256(body, res.sha256);
        name_of(x->url, res.name, sizeof(res.name));
        fake_finish(fe, x, &res);
}

void fake_http(struct fake_engine *fe, struct fake_xfer *x, int status)
{
        struct xfer_result res = {.http_status = status, .retry_after_ms = -1, .part_fd = -1, .dir_fd = -1};

        res.rc = retry_classify_http(status, false);
        snprintf(res.message, sizeof(res.message), "HTTP %d", status);
        fake_finish(fe, x, &res);
}

void fake_fail(struct fake_engine *fe, struct fake_xfer *x, enum retry_class rc, const char *message)
{
        struct xfer_result res = {.rc = rc, .retry_after_ms = -1, .part_fd = -1, .dir_fd = -1};

        snprintf(res.message, sizeof(res.message), "%s", message);
        fake_finish(fe, x, &res);
}

void fake_page(struct fake_engine *fe, struct fake_xfer *x, const char *body)
{
        struct xfer_result res = {.rc = RC_OK,
                                  .http_status = 200,
                                  .retry_after_ms = -1,
                                  .part_fd = -1,
                                  .dir_fd = -1,
                                  .body = body,
                                  .body_len = strlen(body)};

        ck_assert_ptr_nonnull(x);
        ck_assert(x->to_memory);
        res.bytes = (int64_t)res.body_len;
        snprintf(res.content_type, sizeof(res.content_type), "application/json");
        fake_finish(fe, x, &res);
}

/* Unit tests of daemon/xfers.c: requests in flight over a fake engine
 * (tests/unit/fake_engine.c), with a real srctab and a real committer
 * writing into a temp directory. Times are plain numbers: no sleeps; the
 * committer is waited for with committer_wait_idle(). */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "daemon/commit.h"
#include "daemon/srctab.h"
#include "daemon/xfers.h"
#include "tests/unit/fake_engine.h"
#include "tests/unit/testutil.h"

#define THRESHOLD  2
#define OPEN_MS    10000
#define HOST_CONNS 2

static const struct srctab_opts opts = {
        .threshold = THRESHOLD,
        .open_ms = OPEN_MS,
        .open_growth = 2,
        .max_open_ms = 8 * OPEN_MS,
        .host_connections = HOST_CONNS,
        .default_source_connections = 4,
        .idle_prune_ms = 600000,
};

static char *tmp;
static int dl_fd = -1;
static struct srctab *srcs;
static struct committer *committer;
static struct fake_engine fe;
static struct xfers *xf;
static int64_t now;
static int job_a, job_b; /* their addresses are the jobs' opaque owners */

static void no_wake(void *ud) { (void)ud; }

static void setup(void)
{
        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        dl_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ck_assert_int_ge(dl_fd, 0);
        srcs = srctab_new(&opts);
        ck_assert_ptr_nonnull(srcs);
        ck_assert_int_eq(committer_new(no_wake, NULL, &committer), 0);
        fake_engine_init(&fe);
        ck_assert_int_eq(xfers_new(&fake_engine_ops, &fe, srcs, committer, &xf), 0);
        fake_engine_bind(&fe, xfers_on_done, xf);
        now = 1000000;
}

static void teardown(void)
{
        xfers_free(xf);
        xf = NULL;
        committer_free(committer);
        committer = NULL;
        srctab_free(srcs);
        srcs = NULL;
        fake_engine_clear(&fe);
        close(dl_fd);
        dl_fd = -1;
        testutil_rmtree(tmp);
        tmp = NULL;
}

/* Start a download of item for job (group 0 unless told) from a.example. */
static void start_item(void *job, int item, int group, const char *url, bool probe)
{
        struct src *src = srctab_source(srcs, "a.example", false), *h = srctab_host(srcs, "a.example");
        struct xfer_request req = {.url = url, .dir_fd = dl_fd, .subdir = "JOB/a.example", .part_id = item};
        struct xfer_tags tags = {.job = job,
                                 .item = item,
                                 .group = group,
                                 .attempt = 1,
                                 .src = src,
                                 .host = h,
                                 .probe = probe};
        ck_assert_int_eq(xfers_start(xf, &req, &tags, now), 0);
}

static void start_listing(void *job, int group)
{
        struct src *src = srctab_source(srcs, "alpha", true);
        struct xfer_request req = {
                .url = "http://alpha.test/search?page=1", .dir_fd = dl_fd, .to_memory = true};
        struct xfer_tags tags = {
                .job = job, .item = -1, .group = group, .attempt = 1, .src = src, .rate = true};
        ck_assert_int_eq(xfers_start(xf, &req, &tags, now), 0);
}

static int outcomes(struct outcome *o)
{
        int n = 0;
        for (; o; o = o->next)
                n++;
        return n;
}

static int aborted_items[16];
static int naborted;
static void *aborted_job;

static void on_abort(void *job, int item, void *ud)
{
        (void)ud;
        aborted_job = job;
        ck_assert_int_lt(naborted, 16);
        aborted_items[naborted++] = item;
}

START_TEST(test_connections_held_until_answer_or_abort)
{
        struct src *src = srctab_source(srcs, "a.example", false), *h = srctab_host(srcs, "a.example");
        int64_t wake;

        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_item(&job_a, 1, 0, "http://a.example/1.png", false);
        ck_assert_int_eq(src_active(src), 2);
        ck_assert_int_eq(src_active(h), 2);
        ck_assert_int_eq(xfers_running(xf), 2);
        ck_assert_int_eq(xfers_of(xf, &job_a), 2);
        ck_assert_int_eq(xfers_of(xf, &job_b), 0);
        ck_assert_int_eq(srctab_admit(srcs, src, h, false, now, &wake), ADMIT_FULL);

        uint64_t gen = src_gen(h);
        fake_http(&fe, fake_running(&fe, 0), 503); /* the engine's answer frees its connection at once */
        ck_assert_int_eq(src_active(src), 1);
        ck_assert_int_eq(src_active(h), 1);
        ck_assert_uint_gt(src_gen(h), gen);
        ck_assert_int_eq(xfers_running(xf), 1);
        ck_assert_int_eq(srctab_admit(srcs, src, h, false, now, &wake), ADMIT_OK);

        naborted = 0;
        xfers_abort(xf, &job_a, -1, false, now, on_abort, NULL);
        ck_assert_int_eq(src_active(src), 0);
        ck_assert_int_eq(src_active(h), 0);
        ck_assert_int_eq(xfers_running(xf), 0);
        ck_assert_int_eq(naborted, 1);
        ck_assert_int_eq(aborted_items[0], 1);
        ck_assert_ptr_eq(aborted_job, &job_a);
        ck_assert_int_eq(fe.x[1]->state, FAKE_ABORTED);
        ck_assert(!fe.x[1]->kept_part);

        /* the answer is an outcome; the abort is none */
        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_int_eq(o->kind, OUTCOME_DOWNLOAD);
        ck_assert_int_eq(o->tags.item, 0);
        ck_assert_int_eq(o->res.http_status, 503);
        ck_assert_int_eq(o->res.rc, RC_HTTP_5XX);
        outcome_free(o);
        ck_assert_ptr_null(xfers_take(xf));
}
END_TEST

START_TEST(test_start_failure_holds_nothing)
{
        struct src *src = srctab_source(srcs, "a.example", false), *h = srctab_host(srcs, "a.example");
        struct xfer_request req = {.url = "http://a.example/0.png", .dir_fd = dl_fd};
        struct xfer_tags tags = {.job = &job_a, .item = 0, .attempt = 1, .src = src, .host = h};

        fe.start_error = -EMFILE;
        ck_assert_int_eq(xfers_start(xf, &req, &tags, now), -EMFILE);
        ck_assert_int_eq(src_active(src), 0);
        ck_assert_int_eq(src_active(h), 0);
        ck_assert_int_eq(xfers_running(xf), 0);
        ck_assert_ptr_null(xfers_take(xf));
}
END_TEST

/* Open a.example's circuit and let its open time pass: a probe may go. */
static struct src *half_open(void)
{
        struct src *src = srctab_source(srcs, "a.example", false);
        struct src_result fail = {.counted = true, .error = "http_5xx: HTTP 503"};
        int64_t wake;

        for (int i = 0; i < THRESHOLD; i++)
                srctab_record(srcs, src, &fail, false, now);
        ck_assert_int_eq(srctab_admit(srcs, src, NULL, false, now, &wake), ADMIT_OPEN);
        now += OPEN_MS;
        ck_assert_int_eq(srctab_admit(srcs, src, NULL, false, now, &wake), ADMIT_PROBE);
        return src;
}

START_TEST(test_aborted_probe_lets_another_go)
{
        struct src *src = half_open(), *h = srctab_host(srcs, "a.example");
        int64_t wake;

        start_item(&job_a, 0, 0, "http://a.example/0.png", true);
        ck_assert_int_eq(srctab_admit(srcs, src, h, false, now, &wake), ADMIT_OPEN); /* its probe is out */
        naborted = 0;
        xfers_abort(xf, &job_a, -1, true, now, on_abort, NULL);
        ck_assert_int_eq(naborted, 1);
        ck_assert(fe.x[0]->kept_part);
        ck_assert_int_eq(srctab_admit(srcs, src, h, false, now, &wake), ADMIT_PROBE);

        /* the next probe's answer reaches the caller marked as the probe */
        start_item(&job_a, 1, 0, "http://a.example/1.png", true);
        ck_assert_int_eq(srctab_admit(srcs, src, h, false, now, &wake), ADMIT_OPEN);
        fake_ok(&fe, fake_running(&fe, 0), "pixels");
        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert(o->tags.probe);
        ck_assert_ptr_eq(o->tags.src, src);
        ck_assert_int_eq(o->res.rc, RC_OK);
        outcome_free(o); /* closes the part's fds not taken */
}
END_TEST

START_TEST(test_aborted_listing_probe_not_reported)
{
        struct src *src = srctab_source(srcs, "alpha", true);
        struct src_result fail = {.listing = true, .counted = true, .error = "timeout: no answer"};
        int64_t wake;

        for (int i = 0; i < THRESHOLD; i++)
                srctab_record(srcs, src, &fail, false, now);
        now += OPEN_MS;
        ck_assert_int_eq(srctab_admit(srcs, src, NULL, true, now, &wake), ADMIT_PROBE);
        struct xfer_request req = {
                .url = "http://alpha.test/search?page=1", .dir_fd = dl_fd, .to_memory = true};
        struct xfer_tags tags = {
                .job = &job_a, .item = -1, .attempt = 1, .src = src, .rate = true, .probe = true};
        ck_assert_int_eq(xfers_start(xf, &req, &tags, now), 0);
        ck_assert_int_eq(srctab_admit(srcs, src, NULL, true, now, &wake), ADMIT_OPEN);
        naborted = 0;
        xfers_abort(xf, &job_a, -1, false, now, on_abort, NULL);
        ck_assert_int_eq(naborted, 0); /* listings are not reported */
        ck_assert_int_eq(src_active(src), 0);
        ck_assert_int_eq(srctab_admit(srcs, src, NULL, true, now, &wake), ADMIT_PROBE);
}
END_TEST

START_TEST(test_one_outcome_per_answer_in_order)
{
        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_item(&job_a, 1, 0, "http://a.example/1.png", false);
        start_item(&job_b, 2, 3, "http://a.example/2.png", false);
        ck_assert_ptr_null(xfers_take(xf));

        fake_http(&fe, fe.x[2], 404);
        fake_fail(&fe, fe.x[0], RC_TIMEOUT, "no byte for 15 s");
        fake_http(&fe, fe.x[1], 503);
        struct outcome *list = xfers_take(xf), *o = list;
        ck_assert_int_eq(outcomes(list), 3);
        ck_assert_int_eq(o->tags.item, 2);
        ck_assert_ptr_eq(o->tags.job, &job_b);
        ck_assert_int_eq(o->tags.group, 3);
        ck_assert_int_eq(o->res.rc, RC_HTTP_4XX);
        o = o->next;
        ck_assert_int_eq(o->tags.item, 0);
        ck_assert_int_eq(o->res.rc, RC_TIMEOUT);
        ck_assert_str_eq(o->res.message, "no byte for 15 s");
        o = o->next;
        ck_assert_int_eq(o->tags.item, 1);
        ck_assert_int_eq(o->res.http_status, 503);
        outcome_free(list);
        ck_assert_ptr_null(xfers_take(xf));
        ck_assert_int_eq(xfers_running(xf), 0);

        /* an answered request is not in flight: aborting its job touches nothing */
        naborted = 0;
        xfers_abort(xf, &job_a, -1, false, now, on_abort, NULL);
        ck_assert_int_eq(naborted, 0);
}
END_TEST

START_TEST(test_listing_body_copied)
{
        char page[] = "{\"results\": [{\"url\": \"http://img.test/1.png\"}]}";
        size_t len = strlen(page);
        struct xfer_result res = {
                .rc = RC_OK, .http_status = 200, .retry_after_ms = -1, .part_fd = -1, .dir_fd = -1};

        start_listing(&job_a, 2);
        res.body = page;
        res.body_len = len;
        res.bytes = (int64_t)len;
        fake_finish(&fe, fe.x[0], &res);
        memset(page, 'x', len); /* the engine's buffer is gone after the callback */

        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_int_eq(o->kind, OUTCOME_LISTING);
        ck_assert_int_eq(o->tags.item, -1);
        ck_assert_int_eq(o->tags.group, 2);
        ck_assert_ptr_nonnull(o->body);
        ck_assert_ptr_eq(o->res.body, o->body);
        ck_assert_uint_eq(o->res.body_len, len);
        ck_assert_str_eq(o->body, "{\"results\": [{\"url\": \"http://img.test/1.png\"}]}");
        ck_assert_int_eq(src_active(srctab_source(srcs, "alpha", true)), 0);
        outcome_free(o);
}
END_TEST

/* What the file at JOB/a.example/name holds ("" when missing). */
static void file_text(const char *name, char *buf, size_t size)
{
        char path[4200], *text = NULL;
        size_t len = 0;

        snprintf(path, sizeof(path), "%s/JOB/a.example/%s", tmp, name);
        buf[0] = '\0';
        if (fs_read_file(path, 4096, &text, &len) == 0)
                snprintf(buf, size, "%s", text);
        free(text);
}

static bool exists(const char *name)
{
        char path[4200];
        snprintf(path, sizeof(path), "%s/JOB/a.example/%s", tmp, name);
        return access(path, F_OK) == 0;
}

/* Download item with body, hand it to the committer as name, and return
 * the committer's answer. */
static struct outcome *commit_one(void *job, int item, const char *body, const char *name)
{
        char url[64];

        snprintf(url, sizeof(url), "http://a.example/%d.png", item);
        start_item(job, item, 0, url, false);
        fake_ok(&fe, fake_find(&fe, url), body);
        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_int_eq(o->kind, OUTCOME_DOWNLOAD);
        ck_assert_int_ge(o->res.part_fd, 0);
        ck_assert_int_ge(o->res.dir_fd, 0);
        ck_assert_int_eq(xfers_commit(xf, o, "JOB", name), 0);
        ck_assert_int_eq(o->res.part_fd, -1); /* taken by the committer */
        ck_assert_int_eq(o->res.dir_fd, -1);
        outcome_free(o);
        committer_wait_idle(committer);
        return xfers_take(xf);
}

START_TEST(test_commit_answer_is_an_outcome)
{
        char text[64];

        struct outcome *o = commit_one(&job_a, 0, "pixels", "cat.png");
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_int_eq(o->kind, OUTCOME_COMMITTED);
        ck_assert_int_eq(o->error, 0);
        ck_assert_str_eq(o->final_name, "cat.png");
        ck_assert_ptr_eq(o->tags.job, &job_a);
        ck_assert_int_eq(o->tags.item, 0);
        ck_assert_int_eq(o->tags.attempt, 1);
        outcome_free(o);
        file_text("cat.png", text, sizeof(text));
        ck_assert_str_eq(text, "pixels");
        ck_assert(!exists(".0.part"));

        /* another content wanting the same name gets a free variant */
        o = commit_one(&job_a, 1, "other pixels", "cat.png");
        ck_assert_int_eq(o->kind, OUTCOME_COMMITTED);
        ck_assert_int_eq(o->error, 0);
        ck_assert_str_eq(o->final_name, "cat-1.png");
        outcome_free(o);
        file_text("cat-1.png", text, sizeof(text));
        ck_assert_str_eq(text, "other pixels");

        /* the same content under a taken name is that very file */
        o = commit_one(&job_a, 2, "pixels", "cat.png");
        ck_assert_str_eq(o->final_name, "cat.png");
        outcome_free(o);
        ck_assert(!exists("cat-2.png"));
        ck_assert(!exists(".2.part"));
}
END_TEST

START_TEST(test_forgotten_job_commit_dropped)
{
        char text[64];

        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_item(&job_b, 1, 0, "http://a.example/1.png", false);
        fake_ok(&fe, fe.x[0], "from a");
        fake_ok(&fe, fe.x[1], "from b");
        struct outcome *list = xfers_take(xf);
        ck_assert_int_eq(outcomes(list), 2);
        ck_assert_int_eq(xfers_commit(xf, list, "JOB", "a.png"), 0);
        ck_assert_int_eq(xfers_commit(xf, list->next, "JOB", "b.png"), 0);
        outcome_free(list);
        xfers_forget(xf, &job_a, NULL, NULL);
        committer_wait_idle(committer);

        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_ptr_eq(o->tags.job, &job_b);
        ck_assert_str_eq(o->final_name, "b.png");
        outcome_free(o);
        ck_assert_ptr_null(xfers_take(xf));
        file_text("a.png", text, sizeof(text)); /* the forgotten job's file stays where it landed */
        ck_assert_str_eq(text, "from a");
}
END_TEST

/* Outcomes of a forgotten job not taken yet go with it, their parts
 * removed; another job's stay. */
START_TEST(test_forgotten_job_outcomes_purged)
{
        start_item(&job_b, 0, 0, "http://a.example/0.png", false);
        start_item(&job_a, 1, 0, "http://a.example/1.png", false);
        start_item(&job_b, 2, 0, "http://a.example/2.png", false);
        start_item(&job_a, 3, 0, "http://alpha.test/x", false);
        fake_ok(&fe, fe.x[0], "from b");
        fake_ok(&fe, fe.x[1], "from a");
        fake_ok(&fe, fe.x[2], "from b too");
        fake_http(&fe, fe.x[3], 500);
        ck_assert(exists(".1.part"));
        xfers_forget(xf, &job_a, NULL, NULL);
        ck_assert(!exists(".1.part"));
        ck_assert(exists(".0.part"));

        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 2);
        ck_assert_ptr_eq(o->tags.job, &job_b);
        ck_assert_int_eq(o->tags.item, 0);
        ck_assert_ptr_eq(o->next->tags.job, &job_b);
        ck_assert_int_eq(o->next->tags.item, 2);
        outcome_free(o);
        /* the list stays whole for what comes next */
        start_item(&job_b, 4, 0, "http://a.example/4.png", false);
        fake_http(&fe, fake_find(&fe, "http://a.example/4.png"), 404);
        o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_int_eq(o->tags.item, 4);
        outcome_free(o);
}
END_TEST

static char unfiled_names[4][64];
static int nunfiled;

static void on_unfiled(void *job, const struct xfer_tags *tags, const char *name, void *ud)
{
        char path[300];
        ck_assert_ptr_eq(job, &job_a);
        ck_assert_ptr_eq(ud, &nunfiled);
        ck_assert_int_lt(nunfiled, 4);
        snprintf(unfiled_names[nunfiled++], sizeof(unfiled_names[0]), "%d:%s", tags->item, name);
        snprintf(path, sizeof(path), "JOB/a.example/%s", name);
        ck_assert_int_eq(unlinkat(dl_fd, path, 0), 0);
}

/* With unfiled, the files of a forgotten job still with the committer are
 * waited for and handed over to be removed; another job's answer stays. */
START_TEST(test_forgotten_job_unfiled_files)
{
        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_item(&job_b, 1, 0, "http://a.example/1.png", false);
        start_item(&job_a, 2, 0, "http://a.example/2.png", false);
        for (int i = 0; i < 3; i++)
                fake_ok(&fe, fe.x[i], i == 1 ? "from b" : i == 0 ? "from a" : "from a too");
        struct outcome *list = xfers_take(xf);
        ck_assert_int_eq(outcomes(list), 3);
        ck_assert_int_eq(xfers_commit(xf, list, "JOB", "a.png"), 0);
        ck_assert_int_eq(xfers_commit(xf, list->next, "JOB", "b.png"), 0);
        ck_assert_int_eq(xfers_commit(xf, list->next->next, "JOB", "a2.png"), 0);
        outcome_free(list);

        nunfiled = 0;
        xfers_forget(xf, &job_a, on_unfiled, &nunfiled);
        ck_assert_int_eq(nunfiled, 2);
        ck_assert_str_eq(unfiled_names[0], "0:a.png");
        ck_assert_str_eq(unfiled_names[1], "2:a2.png");
        ck_assert(!exists("a.png"));
        ck_assert(!exists("a2.png"));
        ck_assert(exists("b.png"));
        struct outcome *o = xfers_take(xf);
        ck_assert_int_eq(outcomes(o), 1);
        ck_assert_ptr_eq(o->tags.job, &job_b);
        ck_assert_int_eq(o->kind, OUTCOME_COMMITTED);
        ck_assert_str_eq(o->final_name, "b.png");
        outcome_free(o);
        committer_wait_idle(committer);
        ck_assert_ptr_null(xfers_take(xf));
}
END_TEST

struct seen {
        int items[8];
        int64_t bytes[8];
        int64_t expected[8];
        int n;
};

static void on_progress(int item, const struct xfer_progress *p, void *ud)
{
        struct seen *s = ud;
        ck_assert_int_lt(s->n, 8);
        s->items[s->n] = item;
        s->bytes[s->n] = p->bytes;
        s->expected[s->n] = p->expected;
        s->n++;
}

START_TEST(test_progress_of_one_job)
{
        struct seen seen = {0};

        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_listing(&job_a, 1);
        start_item(&job_a, 5, 0, "http://a.example/5.png", false);
        start_item(&job_b, 0, 0, "http://a.example/b.png", false);
        fe.x[0]->progress = (struct xfer_progress){.bytes = 1000, .expected = 4000, .speed_bps = 10};
        fe.x[1]->progress = (struct xfer_progress){.bytes = 77, .expected = -1};
        fe.x[2]->progress = (struct xfer_progress){.bytes = 250, .expected = -1, .speed_bps = 5};
        fe.x[3]->progress = (struct xfer_progress){.bytes = 999999, .expected = -1};

        xfers_progress(xf, &job_a, on_progress, &seen);
        ck_assert_int_eq(seen.n, 2); /* downloads of job a only: not its listing, not job b */
        int k0 = seen.items[0] == 0 ? 0 : 1, k5 = 1 - k0;
        ck_assert_int_eq(seen.items[k0], 0);
        ck_assert_int_eq(seen.bytes[k0], 1000);
        ck_assert_int_eq(seen.expected[k0], 4000);
        ck_assert_int_eq(seen.items[k5], 5);
        ck_assert_int_eq(seen.bytes[k5], 250);
        ck_assert_int_eq(seen.expected[k5], -1);

        fake_http(&fe, fe.x[0], 404); /* ended: no longer in progress */
        seen.n = 0;
        xfers_progress(xf, &job_a, on_progress, &seen);
        ck_assert_int_eq(seen.n, 1);
        ck_assert_int_eq(seen.items[0], 5);
        outcome_free(xfers_take(xf));
}
END_TEST

START_TEST(test_abort_one_group_keeping_parts)
{
        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_item(&job_a, 1, 1, "http://a.example/1.png", false);
        start_listing(&job_a, 1);
        start_item(&job_b, 2, 0, "http://a.example/2.png", false);

        naborted = 0;
        xfers_abort(xf, &job_a, 1, true, now, on_abort, NULL);
        ck_assert_int_eq(naborted, 1);
        ck_assert_int_eq(aborted_items[0], 1);
        ck_assert_int_eq(fe.x[0]->state, FAKE_RUNNING);
        ck_assert_int_eq(fe.x[1]->state, FAKE_ABORTED);
        ck_assert(fe.x[1]->kept_part);
        ck_assert_int_eq(fe.x[2]->state, FAKE_ABORTED);
        ck_assert_int_eq(fe.x[3]->state, FAKE_RUNNING);
        ck_assert_int_eq(xfers_of(xf, &job_a), 1);
        ck_assert_int_eq(xfers_of(xf, &job_b), 1);
        ck_assert_int_eq(src_active(srctab_host(srcs, "a.example")), 2);
        ck_assert_int_eq(src_active(srctab_source(srcs, "alpha", true)), 0);
}
END_TEST

START_TEST(test_free_aborts_keeping_parts)
{
        start_item(&job_a, 0, 0, "http://a.example/0.png", false);
        start_listing(&job_b, 0);
        xfers_free(xf);
        xf = NULL;
        ck_assert_int_eq(fe.x[0]->state, FAKE_ABORTED);
        ck_assert(fe.x[0]->kept_part);
        ck_assert_int_eq(fe.x[1]->state, FAKE_ABORTED);
        ck_assert_int_eq(fe.running, 0);
}
END_TEST

static Suite *xfers_suite(void)
{
        Suite *s = suite_create("xfers");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_connections_held_until_answer_or_abort);
        tcase_add_test(tc, test_start_failure_holds_nothing);
        tcase_add_test(tc, test_aborted_probe_lets_another_go);
        tcase_add_test(tc, test_aborted_listing_probe_not_reported);
        tcase_add_test(tc, test_one_outcome_per_answer_in_order);
        tcase_add_test(tc, test_listing_body_copied);
        tcase_add_test(tc, test_commit_answer_is_an_outcome);
        tcase_add_test(tc, test_forgotten_job_commit_dropped);
        tcase_add_test(tc, test_forgotten_job_outcomes_purged);
        tcase_add_test(tc, test_forgotten_job_unfiled_files);
        tcase_add_test(tc, test_progress_of_one_job);
        tcase_add_test(tc, test_abort_one_group_keeping_parts);
        tcase_add_test(tc, test_free_aborts_keeping_parts);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(xfers_suite()); }

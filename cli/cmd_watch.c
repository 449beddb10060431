/* cmd_watch: following a job to its end over GET /v1/jobs/{id}/events, for
 * `watch` and `submit --wait`. Three ways to show it: a progress line
 * redrawn on a terminal (items done/total, bytes, speed, ETA), one plain
 * line per event (stdout not a terminal), or each event's JSON unchanged
 * (--json).
 *
 * The stream opens with the job as it is and closes after the job's
 * terminal `job` event. When it ends early (a restart, a proxy timeout, too
 * many streams) the job is read once; if it is still going the stream is
 * opened again after FOLLOW_RETRY_MS, from the last event id seen. Fields
 * the server may not send yet (bytes_expected, speed_bps, eta_s) are shown
 * as unknown. */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/ctl.h"
#include "cli/format.h"
#include "cli/sse.h"
#include "common/clock.h"

#define FOLLOW_RETRY_MS      2000 /* before opening the stream again (the server's retry: hint) */
#define FOLLOW_RECONNECT_MAX 30   /* failed connections in a row before giving up */
#define BAR_WIDTH_MIN        10   /* columns of the bar itself */
#define BAR_WIDTH_MAX        40
#define TERM_COLUMNS_DEFAULT 80
#define LINE_MAX_BYTES       1024 /* one line of output */
#define PROGRESS_TEXT_MAX    256  /* the counts, sizes, speed and ETA part of a line */

struct follow {
        struct ctl *c;
        const char *id;
        FILE *bar;        /* where the redrawn line goes, or NULL */
        bool lines;       /* one line per event on stdout */
        json_t *job;      /* the newest job object, or NULL */
        json_t *progress; /* the newest progress object (from the job or a progress event) */
        char last_id[SSE_ID_MAX + 1];
        bool bar_shown; /* a progress line is on the terminal, to clear before other output */
        bool bad_event; /* an event's data was not the JSON expected */
};

/* ---- the progress line ---------------------------------------------------------- */

static int columns(FILE *f)
{
        struct winsize ws;
        if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
                return ws.ws_col;
        return TERM_COLUMNS_DEFAULT;
}

/* "3/7 items  12.3 MiB/40.0 MiB  1.2 MiB/s  ETA 23s" and the fraction done (0..1). */
static double progress_text(const json_t *p, char *buf, size_t size)
{
        int64_t total = ctl_int(p, "total"), bytes = ctl_int(p, "bytes"),
                want = ctl_int(p, "bytes_expected");
        int64_t done = ctl_int(p, "succeeded") + ctl_int(p, "failed") + ctl_int(p, "skipped");
        int64_t speed = ctl_int(p, "speed_bps");
        double eta = ctl_real(p, "eta_s");
        char b[FMT_SIZE_LEN], w[FMT_SIZE_LEN], s[FMT_SIZE_LEN], e[FMT_SIZE_LEN];
        size_t n;

        n = (size_t)snprintf(buf, size, "%lld/%lld items  %s", (long long)done, (long long)total,
                             fmt_size(bytes, b, sizeof(b)));
        if (want >= 0 && n < size)
                n += (size_t)snprintf(buf + n, size - n, "/%s", fmt_size(want, w, sizeof(w)));
        if (speed >= 0 && n < size)
                n += (size_t)snprintf(buf + n, size - n, "  %s", fmt_speed(speed, s, sizeof(s)));
        if (!isnan(eta) && n < size)
                snprintf(buf + n, size - n, "  ETA %s", fmt_duration(eta, e, sizeof(e)));
        if (want > 0 && bytes >= 0)
                return bytes >= want ? 1.0 : (double)bytes / (double)want;
        return total > 0 ? (double)done / (double)total : 0.0;
}

static void bar_clear(struct follow *f)
{
        if (f->bar && f->bar_shown) {
                fputs("\r\033[K", f->bar);
                f->bar_shown = false;
        }
}

static void bar_draw(struct follow *f)
{
        char text[PROGRESS_TEXT_MAX], bar[BAR_WIDTH_MAX + 1];

        if (!f->bar || !f->progress)
                return;
        double frac = progress_text(f->progress, text, sizeof(text));
        int width = columns(f->bar) - (int)fmt_width(text) - 9; /* "[" "] " "100% " "  " */
        if (width > BAR_WIDTH_MAX)
                width = BAR_WIDTH_MAX;
        fputs("\r\033[K", f->bar);
        if (width >= BAR_WIDTH_MIN) {
                int fill = (int)(frac * width);
                memset(bar, '#', (size_t)fill);
                memset(bar + fill, '-', (size_t)(width - fill));
                bar[width] = '\0';
                fprintf(f->bar, "[%s] ", bar);
        }
        fprintf(f->bar, "%3d%%  %s", (int)(frac * 100), text);
        fflush(f->bar);
        f->bar_shown = true;
}

/* ---- one line per event -------------------------------------------------------------- */

static void put_line(struct follow *f, FILE *out, const char *text)
{
        char *t = fmt_clean(text);
        bar_clear(f);
        fprintf(out, "%s\n", t ? t : "");
        free(t);
        fflush(out);
}

static void job_line(struct follow *f, FILE *out, const json_t *job)
{
        char line[LINE_MAX_BYTES], text[PROGRESS_TEXT_MAX];
        const json_t *e = json_object_get(job, "error");

        progress_text(json_object_get(job, "progress"), text, sizeof(text));
        snprintf(line, sizeof(line), "job %s %s %s%s%s%s%s", ctl_str(job, "id"), ctl_str(job, "state"), text,
                 json_is_object(e) ? "  " : "", ctl_str(e, "code"), json_is_object(e) ? ": " : "",
                 ctl_str(e, "message"));
        put_line(f, out, line);
}

static void item_line(struct follow *f, FILE *out, const json_t *it)
{
        char line[LINE_MAX_BYTES], b[FMT_SIZE_LEN];
        const json_t *e = json_object_get(it, "error");
        const char *path = ctl_str(it, "path");

        snprintf(line, sizeof(line), "item %s %lld %s %s %s %s%s%s%s%s", ctl_str(it, "job_id"),
                 (long long)ctl_int(it, "index"), ctl_str(it, "state"), ctl_str(it, "source"),
                 fmt_size(ctl_int(it, "bytes"), b, sizeof(b)), *path ? path : ctl_str(it, "url"),
                 json_is_object(e) ? "  " : "", ctl_str(e, "code"), json_is_object(e) ? ": " : "",
                 ctl_str(e, "message"));
        put_line(f, out, line);
}

static void progress_line(struct follow *f, const json_t *p)
{
        char line[LINE_MAX_BYTES], text[PROGRESS_TEXT_MAX];

        progress_text(p, text, sizeof(text));
        snprintf(line, sizeof(line), "progress %s %s  %.1f%%", f->id, text, ctl_real(p, "percent"));
        put_line(f, stdout, line);
}

/* ---- events --------------------------------------------------------------------------- */

static void take_job(struct follow *f, json_t *job)
{
        const char *before = f->job ? ctl_str(f->job, "state") : "";
        bool changed = strcmp(before, ctl_str(job, "state")) != 0;

        if (f->lines)
                job_line(f, stdout, job);
        else if (f->bar && changed && !ctl_job_is_over(job)) {
                char line[LINE_MAX_BYTES];
                snprintf(line, sizeof(line), "job %s %s", ctl_str(job, "id"), ctl_str(job, "state"));
                put_line(f, f->bar, line);
        }
        json_decref(f->job);
        f->job = job;
        json_decref(f->progress);
        f->progress = json_incref(json_object_get(job, "progress"));
        bar_draw(f);
}

static int on_event(const struct sse_event *ev, void *userdata)
{
        struct follow *f = userdata;
        json_t *o;

        snprintf(f->last_id, sizeof(f->last_id), "%s", ev->id);
        if (strcmp(ev->name, "job") != 0 && strcmp(ev->name, "item") != 0 &&
            strcmp(ev->name, "progress") != 0)
                return 0;
        if (!(o = json_loadb(ev->data, ev->data_len, 0, NULL)) || !json_is_object(o)) {
                json_decref(o);
                f->bad_event = true;
                return -EBADMSG;
        }
        if (f->c->json) {
                fwrite(ev->data, 1, ev->data_len, stdout);
                fputc('\n', stdout);
                fflush(stdout);
        }
        if (strcmp(ev->name, "job") == 0) {
                take_job(f, o);
                return 0;
        }
        if (strcmp(ev->name, "item") == 0) {
                const char *state = ctl_str(o, "state");
                if (f->lines)
                        item_line(f, stdout, o);
                else if (f->bar && (strcmp(state, "failed") == 0 || strcmp(state, "skipped") == 0))
                        item_line(f, f->bar, o);
                bar_draw(f);
                json_decref(o);
                return 0;
        }
        if (f->lines)
                progress_line(f, o);
        json_decref(f->progress);
        f->progress = o;
        bar_draw(f);
        return 0;
}

static int on_data(const char *data, size_t len, void *userdata)
{
        struct sse_parser *p = userdata;
        return sse_feed(p, data, len);
}

/* ---- the stream ------------------------------------------------------------------------------ */

static void sleep_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* One connection to the job's stream. Returns -1 when it ended or could
 * not be opened for now (the caller decides what next), else an exit
 * status; *ret_connected tells whether the server answered. */
static int stream_once(struct follow *f, const char *path, bool *ret_connected)
{
        struct sse_parser parser;
        struct http_answer a;
        char header[SSE_ID_MAX + 32];
        const char *headers[] = {f->last_id[0] ? header : NULL, NULL};
        int r, rc = -1;

        *ret_connected = false;
        snprintf(header, sizeof(header), "Last-Event-ID: %s", f->last_id);
        sse_init(&parser, on_event, f);
        r = http_stream(f->c->http, path, headers, on_data, &parser, &a);
        sse_clear(&parser);
        if (r == -ECANCELED) {
                bar_clear(f);
                ctl_warn("%s: %s", path,
                         f->bad_event ? "an event is not the JSON expected" : "a bad event stream");
                return CTL_EXIT_SERVER;
        }
        if (r == -EHOSTUNREACH)
                return -1;
        *ret_connected = true;
        if (r < 0)
                return -1; /* cut off mid-stream: look at the job and go on */
        /* 503: too many streams or shutting down, worth another try */
        if ((a.status < 200 || a.status > 299) && a.status != 503) {
                bar_clear(f);
                rc = ctl_answer_error(f->c, &a);
        }
        http_answer_clear(&a);
        return rc;
}

/* The stream ended before the job did: read the job as it is now. -1 to
 * go on (also when the server cannot be reached: the next connection
 * tells), else an exit status (the job is gone, or access refused). */
static int recheck(struct follow *f, const char *path)
{
        struct http_answer a;
        json_t *job;
        char *p = strndup(path, strlen(path) - strlen("/events"));
        int r = p ? http_request(f->c->http, "GET", p, NULL, NULL, &a) : -ENOMEM;

        free(p);
        if (r < 0)
                return -1;
        if (a.status != 200) {
                r = a.status == 503 ? -1 : (bar_clear(f), ctl_answer_error(f->c, &a));
                http_answer_clear(&a);
                return r;
        }
        job = json_loadb(a.body ? a.body : "", a.len, 0, NULL);
        if (json_is_object(job) && ctl_job_is_over(job)) {
                if (f->c->json)
                        ctl_print_raw(&a);
                take_job(f, job);
        } else
                json_decref(job);
        http_answer_clear(&a);
        return -1;
}

/* "job ID succeeded: 2 succeeded, 0 failed, 0 skipped of 2; 2.0 KiB in 3s" */
static void summary(struct follow *f, FILE *out)
{
        const json_t *p = json_object_get(f->job, "progress"), *e = json_object_get(f->job, "error");
        char line[LINE_MAX_BYTES], b[FMT_SIZE_LEN], d[FMT_SIZE_LEN];
        int64_t start, end;
        double took = NAN;

        if (fmt_parse_time(ctl_str(f->job, "started_at"), &start) == 0 &&
            fmt_parse_time(ctl_str(f->job, "finished_at"), &end) == 0)
                took = (double)(end - start) / 1000.0;
        snprintf(line, sizeof(line),
                 "job %s %s: %lld succeeded, %lld failed, %lld skipped of %lld; %s in %s%s%s%s%s",
                 ctl_str(f->job, "id"), ctl_str(f->job, "state"), (long long)ctl_int(p, "succeeded"),
                 (long long)ctl_int(p, "failed"), (long long)ctl_int(p, "skipped"),
                 (long long)ctl_int(p, "total"), fmt_size(ctl_int(p, "bytes"), b, sizeof(b)),
                 fmt_duration(took, d, sizeof(d)), json_is_object(e) ? "; " : "", ctl_str(e, "code"),
                 json_is_object(e) ? ": " : "", ctl_str(e, "message"));
        put_line(f, out, line);
}

static int follow_run(struct follow *f, const char *path)
{
        int failures = 0, rc;
        bool connected, ever = false;

        for (;;) {
                rc = stream_once(f, path, &connected);
                if (rc >= 0)
                        return rc;
                if (f->job && ctl_job_is_over(f->job))
                        return CTL_EXIT_OK;
                ever = ever || connected;
                failures = connected ? 0 : failures + 1;
                if (!connected && (!ever || failures >= FOLLOW_RECONNECT_MAX)) {
                        bar_clear(f);
                        return ctl_transport_error(f->c, -EHOSTUNREACH);
                }
                if (connected && (rc = recheck(f, path)) >= 0)
                        return rc;
                if (f->job && ctl_job_is_over(f->job))
                        return CTL_EXIT_OK;
                sleep_ms(FOLLOW_RETRY_MS);
        }
}

int ctl_follow(struct ctl *c, const char *id, FILE *progress_to, bool lines)
{
        struct follow f = {
                .c = c, .id = id, .bar = c->json ? NULL : progress_to, .lines = lines && !c->json};
        char *path = ctl_job_path(id, "/events");
        int rc;

        if (!path) {
                ctl_warn("out of memory");
                return CTL_EXIT_SERVER;
        }
        rc = follow_run(&f, path);
        bar_clear(&f);
        if (rc == CTL_EXIT_OK && f.job) {
                if (!f.lines && !c->json)
                        summary(&f, f.bar == stdout ? stdout : stderr);
                rc = strcmp(ctl_str(f.job, "state"), "succeeded") == 0 ? CTL_EXIT_OK : CTL_EXIT_JOB;
        }
        json_decref(f.job);
        json_decref(f.progress);
        free(path);
        return rc;
}

int cmd_watch(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {CTL_COMMON_OPTIONS};
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "", opts)) != -1)
                if (o == CTL_OPT_STOP)
                        return c->exit;
        if ((rc = ctl_want_args(c, argc - optind, 1, "the job's ID")) || (rc = ctl_connect(c)))
                return rc;
        return ctl_follow(c, argv[optind], c->tty ? stdout : NULL, !c->tty);
}

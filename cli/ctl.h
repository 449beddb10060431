/* ctl: what hauldctl's commands share: exit statuses, the options every
 * command takes, option parsing, calling the API and reporting its errors,
 * and the table printer. A command is `int cmd_NAME(struct ctl *, argc,
 * argv)` (argv[0] the command's name) and returns the exit status. */
#pragma once
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/http.h"

enum {
        CTL_EXIT_OK = 0,
        CTL_EXIT_JOB = 1,          /* a job followed with --wait or watch ended other than succeeded */
        CTL_EXIT_USAGE = 2,        /* bad command line, or a request the server refused as invalid */
        CTL_EXIT_SERVER = 3,       /* 5xx, 401, 409, or an answer hauldctl did not expect */
        CTL_EXIT_NOT_FOUND = 4,    /* 404 */
        CTL_EXIT_UNAVAILABLE = 69, /* EX_UNAVAILABLE: no connection to the server */
        CTL_EXIT_CANTCREAT = 73,   /* EX_CANTCREAT: get cannot create its output file */
};

#define CTL_DEFAULT_URL "http://127.0.0.1:8080"
#define CTL_TOKEN_MAX   4096   /* bytes of a token file, as the daemon allows */
#define CTL_OPT_STOP    0x1000 /* ctl_getopt: stop and return c->exit */
#define CTL_OPT_JSON    0x1001
#define CTL_OPT_URL     0x1002
#define CTL_OPT_TOKEN   0x1003

/* The long options every command accepts, to end its option table with. */
#define CTL_COMMON_OPTIONS                                                                                  \
        {"json", no_argument, NULL, CTL_OPT_JSON}, {"url", required_argument, NULL, CTL_OPT_URL},           \
                {"token-file", required_argument, NULL, CTL_OPT_TOKEN}, {"help", no_argument, NULL, 'h'},   \
        {                                                                                                   \
                NULL, 0, NULL, 0                                                                            \
        }

struct ctl_command;

struct ctl {
        const char *url;        /* --url, $HAULD_URL or CTL_DEFAULT_URL */
        const char *token_file; /* --token-file or $HAULD_TOKEN_FILE, or NULL */
        bool json;              /* --json: the API's JSON, unchanged */
        bool tty;               /* stdout is a terminal */
        int64_t now_ms;         /* wall clock at start, for relative times */
        const struct ctl_command *cmd;
        struct http_client *http; /* after ctl_connect */
        int exit;                 /* the status to return after CTL_OPT_STOP */
};

struct ctl_command {
        const char *name;
        int (*run)(struct ctl *c, int argc, char **argv);
        const char *synopsis; /* after "hauldctl NAME " */
        const char *summary;  /* one line for hauldctl --help */
        const char *help;     /* the options and details for NAME --help */
};

/* ---- the commands ---------------------------------------------------------- */

int cmd_submit(struct ctl *c, int argc, char **argv);
int cmd_ls(struct ctl *c, int argc, char **argv);
int cmd_show(struct ctl *c, int argc, char **argv);
int cmd_items(struct ctl *c, int argc, char **argv);
int cmd_watch(struct ctl *c, int argc, char **argv);
int cmd_change(struct ctl *c, int argc, char **argv); /* cancel, retry, pause, resume */
int cmd_rm(struct ctl *c, int argc, char **argv);
int cmd_get(struct ctl *c, int argc, char **argv);
int cmd_circuits(struct ctl *c, int argc, char **argv);
int cmd_reset(struct ctl *c, int argc, char **argv);
int cmd_stats(struct ctl *c, int argc, char **argv);
int cmd_health(struct ctl *c, int argc, char **argv);

/* Follow job id over its event stream until it ends (watch, submit
 * --wait). progress_to: where a live view goes (NULL: none); with lines,
 * one line per event goes to stdout. Returns the exit status. */
int ctl_follow(struct ctl *c, const char *id, FILE *progress_to, bool lines);

/* ---- parsing ------------------------------------------------------------------ */

/* getopt_long over a command's arguments: handles CTL_COMMON_OPTIONS and
 * errors itself; returns the command's own options, -1 at the end, or
 * CTL_OPT_STOP (return c->exit). shortopts: the command's own. */
int ctl_getopt(struct ctl *c, int argc, char **argv, const char *shortopts, const struct option *longopts);
/* NAME's usage and options on stdout. */
void ctl_command_help(const struct ctl_command *cmd);
/* "hauldctl CMD: MESSAGE (try 'hauldctl CMD --help')" on stderr; CTL_EXIT_USAGE. */
int ctl_usage_error(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "hauldctl: MESSAGE" on stderr. */
void ctl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Exactly n positional arguments left after the options, else a usage error (>0). */
int ctl_want_args(struct ctl *c, int argc, int n, const char *what);
/* Create c->http from the options (reads the token file). An exit status. */
int ctl_connect(struct ctl *c);

/* ---- the API --------------------------------------------------------------------- */

/* method path; on a 2xx answer 0, with the parsed JSON in *ret_json (when
 * ret_json is not NULL and the answer has a body) and the raw answer in
 * *ret (when not NULL; cleared by the caller). Otherwise the error is
 * reported and the exit status returned. */
int ctl_call(struct ctl *c, const char *method, const char *path, const char *body,
             const char *const *headers, json_t **ret_json, struct http_answer *ret);
/* Report a failed transport (http_* return r): an exit status. */
int ctl_transport_error(struct ctl *c, int r);
/* Report a non-2xx answer (its problem document): an exit status. */
int ctl_answer_error(struct ctl *c, const struct http_answer *a);
/* "/v1/jobs/ID" + suffix with ID escaped (malloc'd); NULL without memory. */
char *ctl_job_path(const char *id, const char *suffix);
/* Print an answer's body as it came, one line. */
void ctl_print_raw(const struct http_answer *a);

/* ---- reading JSON ------------------------------------------------------------------ */

const char *ctl_str(const json_t *o, const char *key); /* "" when absent or not a string */
int64_t ctl_int(const json_t *o, const char *key);     /* -1 when absent or not a number */
double ctl_real(const json_t *o, const char *key);     /* NAN when absent or not a number */
bool ctl_job_is_over(const json_t *job);               /* a terminal state or finished_at set */
/* A time field as "2026-...Z (5m ago)", relative only (rel), or "-". */
char *ctl_time(struct ctl *c, const json_t *o, const char *key, bool rel, char *buf, size_t size);

/* ---- tables ------------------------------------------------------------------------- */

struct table;
/* align: one char per column, 'l' or 'r'; headers: that many strings. */
struct table *table_new(const char *align, const char *const *headers);
/* Append a cell to the current row (a new row when the last one is full),
 * shown through fmt_clean. */
void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_print(struct table *t, FILE *f);
void table_free(struct table *t);

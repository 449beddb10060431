/* Unit tests of daemon/config.c: defaults, the file format, the layers
 * (file < environment < flags), every key at the limits of its range,
 * derived paths and the derived CIRCUIT_BREAKER_MAX_TIMEOUT, the token file
 * and what config_foreach shows.
 * check forks each test, so setenv/unsetenv stay inside one test. */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>

#include "common/log.h"
#include "daemon/config.h"
#include "tests/unit/testutil.h"

#define GiB (1024LL * 1024 * 1024)

static char *tmp;

static void collect_name(const char *key, const char *value, void *ud)
{
        (void)value;
        unsetenv(key);
        (*(int *)ud)++;
}

#define NKEYS 44 /* every key config_foreach() visits */

/* A temp dir and an environment without any of our keys. */
static void setup(void)
{
        struct config c;
        int n = 0;

        tmp = testutil_tmpdir();
        ck_assert_ptr_nonnull(tmp);
        unsetenv("STATE_DIRECTORY");
        unsetenv("CREDENTIALS_DIRECTORY");
        ck_assert_int_eq(config_defaults(&c), 0);
        config_foreach(&c, collect_name, &n);
        config_free(&c);
        ck_assert_int_eq(n, NKEYS);
}

static void teardown(void)
{
        testutil_rmtree(tmp);
        tmp = NULL;
}

/* Write text to tmp/name; the returned path is static until the next call. */
static const char *write_file(const char *name, const char *text)
{
        static char path[4096];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", tmp, name);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);
        return path;
}

static int load_text(struct config *c, const char *text, struct config_error *err)
{
        return config_load(c, write_file("hauld.conf", text), NULL, 0, err);
}

START_TEST(test_defaults)
{
        struct config c;
        struct config_error err;

        ck_assert_int_eq(config_load(&c, "/dev/null", NULL, 0, &err), 0);
        ck_assert_int_eq(c.max_concurrent_sources, 5);
        ck_assert_double_eq(c.source_timeout, 30);
        ck_assert_double_eq(c.global_job_timeout, 300);
        ck_assert_double_eq(c.request_timeout, 15);
        ck_assert_int_eq(c.max_retries_per_source, 3);
        ck_assert_int_eq(c.max_retries_per_item, 2);
        ck_assert_int_eq(c.min_download_speed, 1024);
        ck_assert_double_eq(c.stall_timeout, 30);
        ck_assert_int_eq(c.circuit_breaker_threshold, 5);
        ck_assert_double_eq(c.circuit_breaker_timeout, 60);
        ck_assert_str_eq(c.listen, "127.0.0.1:8080");
        ck_assert_str_eq(c.state_dir, "/var/lib/hauld");
        ck_assert_str_eq(c.store, "sqlite:/var/lib/hauld/jobs.db");
        ck_assert_str_eq(c.download_dir, "/var/lib/hauld/downloads");
        ck_assert_str_eq(c.sources_dir, "/etc/hauld/sources.d");
        ck_assert_ptr_null(c.api_token_file);
        ck_assert_ptr_null(c.api_token);
        ck_assert_str_eq(c.cors_origins, "");
        ck_assert_str_eq(c.allowed_hosts, "");
        ck_assert_int_eq(c.max_concurrent_downloads, 32);
        ck_assert_int_eq(c.max_connections_per_source, 4);
        ck_assert_double_eq(c.retry_backoff_base, 1);
        ck_assert_double_eq(c.retry_backoff_max, 60);
        ck_assert_double_eq(c.retry_jitter, 0.1);
        ck_assert_double_eq(c.circuit_breaker_growth, 2);
        ck_assert_double_eq(c.circuit_breaker_max_timeout, 480);
        ck_assert_int_eq(c.max_file_size, 2 * GiB);
        ck_assert_str_eq(c.accept_content, "image,video");
        ck_assert(!c.allow_private_addresses);
        ck_assert_str_eq(c.user_agent, "hauld/" PACKAGE_VERSION);
        ck_assert_int_eq(c.max_request_body, 1024 * 1024);
        ck_assert_int_eq(c.api_threads, 4);
        ck_assert_int_eq(c.api_max_connections, 1024);
        ck_assert_int_eq(c.api_max_connections_per_ip, 64);
        ck_assert_double_eq(c.api_header_timeout, 10);
        ck_assert_double_eq(c.job_retention, 7 * 86400);
        ck_assert_int_eq(c.log_level, LOG_INFO);
        ck_assert_int_eq(c.log_format, LOG_FORMAT_TEXT);
        ck_assert(c.log_file_lines);
        ck_assert_str_eq(c.config_file, "/dev/null");
        config_free(&c);
}
END_TEST

START_TEST(test_defaults_systemd_dirs)
{
        struct config c;
        char creds[4096];

        snprintf(creds, sizeof(creds), "%s/api-token", tmp);
        write_file("api-token", "tok\n");
        setenv("STATE_DIRECTORY", "/srv/hauld:/srv/other", 1);
        setenv("CREDENTIALS_DIRECTORY", tmp, 1);
        ck_assert_int_eq(config_defaults(&c), 0);
        ck_assert_str_eq(c.state_dir, "/srv/hauld");
        ck_assert_str_eq(c.store, "sqlite:/srv/hauld/jobs.db");
        ck_assert_str_eq(c.download_dir, "/srv/hauld/downloads");
        ck_assert_str_eq(c.api_token_file, creds);
        config_free(&c);
}
END_TEST

START_TEST(test_no_default_file)
{
        struct config c;
        struct config_error err;

        if (access("/etc/hauld/hauld.conf", F_OK) == 0)
                return; /* this machine has one: its content is unknown */
        ck_assert_int_eq(config_load(&c, NULL, NULL, 0, &err), 0);
        ck_assert_ptr_null(c.config_file);
        config_free(&c);
}
END_TEST

START_TEST(test_missing_file)
{
        struct config c;
        struct config_error err;
        char path[4096];

        snprintf(path, sizeof(path), "%s/nope.conf", tmp);
        ck_assert_int_eq(config_load(&c, path, NULL, 0, &err), -EINVAL);
        ck_assert_str_eq(err.file, path);
        ck_assert_ptr_nonnull(strstr(err.message, "No such file"));
        /* a directory is not a settings file either, and says so */
        ck_assert_int_eq(config_load(&c, tmp, NULL, 0, &err), -EINVAL);
        ck_assert_str_eq(err.file, tmp);
        ck_assert_str_eq(err.message, "is a directory");
}
END_TEST

/* The settings file is a regular file (or a symlink to one), read once
 * without blocking: a FIFO or a device fails at once, naming what it is. */
START_TEST(test_file_kinds)
{
        struct config c;
        struct config_error err;
        char fifo[4096], link[4096], conf[4096];

        snprintf(fifo, sizeof(fifo), "%s/fifo", tmp);
        ck_assert_int_eq(mkfifo(fifo, 0600), 0); /* nobody writes: opening it blocking would hang */
        ck_assert_int_eq(config_load(&c, fifo, NULL, 0, &err), -EINVAL);
        ck_assert_str_eq(err.file, fifo);
        ck_assert_str_eq(err.message, "is not a regular file (it is a FIFO)");

        ck_assert_int_eq(config_load(&c, "/dev/zero", NULL, 0, &err), -EINVAL);
        ck_assert_str_eq(err.file, "/dev/zero");
        ck_assert_str_eq(err.message, "is not a regular file (it is a character device)");

        /* a symlink to a regular file is read through; to a FIFO, refused */
        snprintf(conf, sizeof(conf), "%s", write_file("real.conf", "MAX_RETRIES_PER_ITEM=7\n"));
        snprintf(link, sizeof(link), "%s/link.conf", tmp);
        ck_assert_int_eq(symlink(conf, link), 0);
        ck_assert_int_eq(config_load(&c, link, NULL, 0, &err), 0);
        ck_assert_int_eq(c.max_retries_per_item, 7);
        config_free(&c);
        snprintf(link, sizeof(link), "%s/fifo.conf", tmp);
        ck_assert_int_eq(symlink(fifo, link), 0);
        ck_assert_int_eq(config_load(&c, link, NULL, 0, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "FIFO"));

        /* the null device reads as an empty file */
        ck_assert_int_eq(config_load(&c, "/dev/null", NULL, 0, &err), 0);
        config_free(&c);
}
END_TEST

/* At most CONFIG_FILE_MAX bytes: exactly that loads, one more does not. */
START_TEST(test_file_size_limit)
{
        struct config c;
        struct config_error err;
        char *text = malloc(CONFIG_FILE_MAX + 2);

        ck_assert_ptr_nonnull(text);
        memset(text, '#', CONFIG_FILE_MAX);
        memcpy(text, "LOG_LEVEL=debug\n", 16);
        text[CONFIG_FILE_MAX - 1] = '\n';
        text[CONFIG_FILE_MAX] = '\0';
        ck_assert_int_eq(load_text(&c, text, &err), 0);
        ck_assert_int_eq(c.log_level, LOG_DEBUG);
        config_free(&c);
        text[CONFIG_FILE_MAX] = '\n';
        text[CONFIG_FILE_MAX + 1] = '\0';
        ck_assert_int_eq(load_text(&c, text, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.file, "hauld.conf"));
        ck_assert_str_eq(err.message, "is larger than 1048576 bytes");
        free(text);
}
END_TEST

/* SOURCES_DIR must exist and be a directory; empty is fine. */
START_TEST(test_sources_dir)
{
        struct config c;
        struct config_error err;
        char dir[4096];

        ck_assert_int_eq(config_defaults(&c), 0);
        snprintf(dir, sizeof(dir), "%s/missing", tmp);
        ck_assert_int_eq(config_set(&c, "SOURCES_DIR", dir, &err), 0);
        ck_assert_int_eq(config_check_sources_dir(&c, &err), -EINVAL);
        ck_assert_str_eq(err.key, "SOURCES_DIR");
        ck_assert_ptr_nonnull(strstr(err.message, dir));
        ck_assert_ptr_nonnull(strstr(err.message, "does not exist"));

        ck_assert_int_eq(config_set(&c, "SOURCES_DIR", tmp, &err), 0);
        ck_assert_int_eq(config_check_sources_dir(&c, &err), 0);

        ck_assert_int_eq(config_set(&c, "SOURCES_DIR", write_file("plain", "x"), &err), 0);
        ck_assert_int_eq(config_check_sources_dir(&c, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "is not a directory"));
        config_free(&c);
}
END_TEST

/* A reload keeps what takes a restart, names each kept key once, and
 * takes everything else. */
START_TEST(test_merge_reload)
{
        struct config run, next;
        struct config_error err;
        const char *kept[CONFIG_RESTART_KEYS_MAX];
        size_t n = 99;
        char *before[] = {"LISTEN=127.0.0.1:8080", "STORE=sqlite:/srv/a/jobs.db", "MAX_RETRIES_PER_ITEM=2"};
        char *after[] = {"LISTEN=127.0.0.1:9090", "STORE=sqlite:/srv/b/jobs.db", "MAX_RETRIES_PER_ITEM=5",
                         "API_THREADS=8",         "API_HEADER_TIMEOUT=3",        "LOG_LEVEL=debug"};

        ck_assert_int_eq(config_load(&run, "/dev/null", before, 3, &err), 0);
        ck_assert_int_eq(config_load(&next, "/dev/null", before, 3, &err), 0);
        ck_assert_int_eq(config_merge_reload(&run, &next, kept, &n), 0);
        ck_assert_uint_eq(n, 0);
        config_free(&next);

        ck_assert_int_eq(config_load(&next, "/dev/null", after, 6, &err), 0);
        ck_assert_int_eq(config_merge_reload(&run, &next, kept, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(kept[0], "LISTEN");
        ck_assert_str_eq(kept[1], "STORE");
        ck_assert_str_eq(kept[2], "API_THREADS");
        ck_assert_str_eq(next.listen, "127.0.0.1:8080");
        ck_assert_str_eq(next.store, "sqlite:/srv/a/jobs.db");
        ck_assert_ptr_ne(next.store, run.store); /* its own copy */
        ck_assert_int_eq(next.api_threads, 4);
        ck_assert_int_eq(next.max_retries_per_item, 5);
        ck_assert_double_eq(next.api_header_timeout, 3);
        ck_assert_int_eq(next.log_level, LOG_DEBUG);
        config_free(&next);

        /* a new STATE_DIR moves nothing it derives either */
        char *moved[] = {"STATE_DIR=/srv/elsewhere"};
        config_free(&run);
        ck_assert_int_eq(config_load(&run, "/dev/null", NULL, 0, &err), 0);
        ck_assert_int_eq(config_load(&next, "/dev/null", moved, 1, &err), 0);
        ck_assert_int_eq(config_merge_reload(&run, &next, kept, &n), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(kept[0], "STATE_DIR");
        ck_assert_str_eq(kept[1], "STORE");
        ck_assert_str_eq(kept[2], "DOWNLOAD_DIR");
        ck_assert_str_eq(next.state_dir, run.state_dir);
        ck_assert_str_eq(next.download_dir, run.download_dir);
        config_free(&next);
        config_free(&run);

        static const char *const restart[] = {"LISTEN",
                                              "STATE_DIR",
                                              "STORE",
                                              "DOWNLOAD_DIR",
                                              "API_THREADS",
                                              "API_MAX_CONNECTIONS",
                                              "API_MAX_CONNECTIONS_PER_IP"};
        for (size_t i = 0; i < sizeof(restart) / sizeof(restart[0]); i++)
                ck_assert_msg(config_needs_restart(restart[i]), "%s", restart[i]);
        ck_assert(!config_needs_restart("MAX_RETRIES_PER_ITEM"));
        ck_assert(!config_needs_restart("SOURCES_DIR"));
        ck_assert(!config_needs_restart("API_HEADER_TIMEOUT"));
        ck_assert(!config_needs_restart("API_TOKEN_FILE"));
}
END_TEST

/* microhttpd shares the connections out among its threads: at least 4 each. */
START_TEST(test_api_threads_and_connections)
{
        struct config c;
        struct config_error err;
        char *fit[] = {"API_MAX_CONNECTIONS=16", "API_THREADS=4"};
        char *over[] = {"API_MAX_CONNECTIONS=16", "API_THREADS=5"};

        ck_assert_int_eq(config_load(&c, "/dev/null", fit, 2, &err), 0);
        config_free(&c);
        ck_assert_int_eq(config_load(&c, "/dev/null", over, 2, &err), -EINVAL);
        ck_assert_str_eq(err.key, "API_THREADS");
        ck_assert_str_eq(err.file, "command line");
        ck_assert_str_eq(err.message, "must be at most API_MAX_CONNECTIONS / 4 (4)");
}
END_TEST

START_TEST(test_layers)
{
        struct config c;
        struct config_error err;
        char *flags[] = {"SOURCE_TIMEOUT=40", "LISTEN=[::1]:9000"};

        write_file("hauld.conf", "SOURCE_TIMEOUT=10\nREQUEST_TIMEOUT=5\nMAX_RETRIES_PER_ITEM=7\n"
                                 "LOG_LEVEL=debug\n");
        setenv("SOURCE_TIMEOUT", "20", 1);
        setenv("REQUEST_TIMEOUT", "6", 1);
        setenv("PATH_UNRELATED", "whatever", 1);
        setenv("HAULD_NOT_A_KEY", "x", 1);
        char path[4096];
        snprintf(path, sizeof(path), "%s/hauld.conf", tmp);
        ck_assert_int_eq(config_load(&c, path, flags, 2, &err), 0);
        ck_assert_double_eq(c.source_timeout, 40);   /* flag over env over file */
        ck_assert_double_eq(c.request_timeout, 6);   /* env over file */
        ck_assert_int_eq(c.max_retries_per_item, 7); /* file over default */
        ck_assert_int_eq(c.log_level, LOG_DEBUG);
        ck_assert_str_eq(c.listen, "[::1]:9000");
        ck_assert_int_eq(c.max_concurrent_sources, 5); /* default */
        ck_assert_str_eq(c.config_file, path);
        config_free(&c);
}
END_TEST

START_TEST(test_file_format)
{
        struct config c;
        struct config_error err;

        ck_assert_int_eq(load_text(&c,
                                   "\xef\xbb\xbf# a comment\n"
                                   "; another comment\n"
                                   "\n"
                                   "   \t\n"
                                   "  SOURCES_DIR  =  /srv/sources  \n"
                                   "export LISTEN=\"unix:/run/hauld.sock\"\n"
                                   "CORS_ORIGINS='https://a.example, https://b.example:8443'\n"
                                   "ALLOWED_HOSTS=\"dl.example \\\"x\\\"\"\n"
                                   "ACCEPT_CONTENT=image # not a comment\r\n"
                                   "MAX_RETRIES_PER_SOURCE=\"0\"\r\n"
                                   "MAX_RETRIES_PER_SOURCE=9\n"
                                   "ALLOW_PRIVATE_ADDRESSES=''",
                                   &err),
                         -EINVAL);
        /* \" inside double quotes is a literal quote, not a host name: line 8 */
        ck_assert_int_eq(err.line, 8);
        ck_assert_str_eq(err.key, "ALLOWED_HOSTS");

        ck_assert_int_eq(load_text(&c,
                                   "\xef\xbb\xbf# a comment\n"
                                   "; another comment\n"
                                   "\n"
                                   "   \t\n"
                                   "  SOURCES_DIR  =  /srv/sources  \n"
                                   "export LISTEN=\"unix:/run/hauld.sock\"\n"
                                   "ALLOWED_HOSTS=\"dl.example, [::1]\"\n"
                                   "ACCEPT_CONTENT=image,video/mp4\r\n"
                                   "MAX_RETRIES_PER_SOURCE=\"0\"\r\n"
                                   "MAX_RETRIES_PER_SOURCE=9\n"
                                   "CORS_ORIGINS=' https://c.example '\n"
                                   "STORE=\"sqlite:/srv/my jobs.db\"",
                                   &err),
                         0);
        ck_assert_str_eq(c.sources_dir, "/srv/sources");
        ck_assert_str_eq(c.listen, "unix:/run/hauld.sock");
        ck_assert_str_eq(c.allowed_hosts, "dl.example, [::1]");
        ck_assert_str_eq(c.accept_content, "image,video/mp4");
        ck_assert_int_eq(c.max_retries_per_source, 9);           /* the later line wins */
        ck_assert_str_eq(c.cors_origins, " https://c.example "); /* quotes keep spaces */
        ck_assert_str_eq(c.store, "sqlite:/srv/my jobs.db");
        config_free(&c);
}
END_TEST

START_TEST(test_file_errors)
{
        struct config c;
        struct config_error err;

        ck_assert_int_eq(load_text(&c, "# ok\n\nSOURCE_TIMEOUT=5\nSOURCE_TIMOUT=5\n", &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.file, "/hauld.conf"));
        ck_assert_int_eq(err.line, 4);
        ck_assert_str_eq(err.key, "SOURCE_TIMOUT");
        ck_assert_str_eq(err.message, "unknown key");

        ck_assert_int_eq(load_text(&c, "LOG_LEVEL=info\n\njust words\n", &err), -EINVAL);
        ck_assert_int_eq(err.line, 3);
        ck_assert_str_eq(err.key, "");
        ck_assert_str_eq(err.message, "expected KEY=VALUE");

        ck_assert_int_eq(load_text(&c, "LISTEN=\"127.0.0.1:80\n", &err), -EINVAL);
        ck_assert_int_eq(err.line, 1);
        ck_assert_str_eq(err.key, "LISTEN");
        ck_assert_int_eq(load_text(&c, "LISTEN='127.0.0.1:80' x\n", &err), -EINVAL);
        ck_assert_str_eq(err.key, "LISTEN");
        ck_assert_int_eq(load_text(&c, "=5\n", &err), -EINVAL);
        ck_assert_str_eq(err.message, "unknown key");

        ck_assert_int_eq(load_text(&c, "\n\nMAX_FILE_SIZE=0\n", &err), -EINVAL);
        ck_assert_int_eq(err.line, 3);
        ck_assert_str_eq(err.key, "MAX_FILE_SIZE");
        ck_assert_str_eq(err.message, "must be a size in bytes in 1..1T (suffix K, M, G or T allowed)");
}
END_TEST

START_TEST(test_env_and_flag_errors)
{
        struct config c;
        struct config_error err;
        char *noeq[] = {"LOG_LEVEL"};
        char *unknown[] = {"LOG_LEVELS=info"};
        char *bad[] = {"LOG_LEVEL=info", "STALL_TIMEOUT=0"};

        setenv("SOURCE_TIMEOUT", "0", 1);
        ck_assert_int_eq(config_load(&c, "/dev/null", NULL, 0, &err), -EINVAL);
        ck_assert_str_eq(err.file, "environment");
        ck_assert_int_eq(err.line, 0);
        ck_assert_str_eq(err.key, "SOURCE_TIMEOUT");
        ck_assert_str_eq(err.message,
                         "must be a number of seconds in 1..86400 (suffix s, m, h or d allowed)");
        unsetenv("SOURCE_TIMEOUT");

        ck_assert_int_eq(config_load(&c, "/dev/null", noeq, 1, &err), -EINVAL);
        ck_assert_str_eq(err.file, "command line");
        ck_assert_ptr_nonnull(strstr(err.message, "KEY=VALUE"));
        ck_assert_int_eq(config_load(&c, "/dev/null", unknown, 1, &err), -EINVAL);
        ck_assert_str_eq(err.key, "LOG_LEVELS");
        ck_assert_str_eq(err.message, "unknown key");
        ck_assert_int_eq(config_load(&c, "/dev/null", bad, 2, &err), -EINVAL);
        ck_assert_str_eq(err.file, "command line");
        ck_assert_str_eq(err.key, "STALL_TIMEOUT");
        ck_assert_ptr_nonnull(strstr(err.message, "1..3600"));
        /* a failed load leaves nothing to free, and freeing again is fine */
        config_free(&c);
}
END_TEST

/* Each number-valued key at both ends of its range and one step beyond.
 * pre: a setting the value needs (the backoff base may not exceed the cap). */
static const struct limit {
        const char *key, *lowest, *highest, *below, *above, *range, *pre;
} limits[] = {
        {"MAX_CONCURRENT_SOURCES", "1", "1000", "0", "1001", "an integer in 1..1000", NULL},
        {"SOURCE_TIMEOUT", "1", "86400", "0.999", "86400.001", "seconds in 1..86400", NULL},
        {"GLOBAL_JOB_TIMEOUT", "1", "1d", "0", "86401", "seconds in 1..86400", NULL},
        {"REQUEST_TIMEOUT", "0.1", "1h", "0.09", "3601", "seconds in 0.1..3600", NULL},
        {"MAX_RETRIES_PER_SOURCE", "0", "100", "-1", "101", "an integer in 0..100", NULL},
        {"MAX_RETRIES_PER_ITEM", "0", "100", "-1", "101", "an integer in 0..100", NULL},
        {"MIN_DOWNLOAD_SPEED", "0", "1G", "-1", "1073741825", "bytes in 0..1G", NULL},
        {"STALL_TIMEOUT", "1", "60m", "0.5", "3601", "seconds in 1..3600", NULL},
        {"CIRCUIT_BREAKER_THRESHOLD", "1", "10000", "0", "10001", "an integer in 1..10000", NULL},
        {"CIRCUIT_BREAKER_TIMEOUT", "0.1", "24h", "0.05", "86400.5", "seconds in 0.1..86400", NULL},
        {"MAX_CONCURRENT_DOWNLOADS", "1", "10000", "0", "10001", "an integer in 1..10000", NULL},
        {"MAX_CONNECTIONS_PER_SOURCE", "1", "1000", "0", "1001", "an integer in 1..1000", NULL},
        {"RETRY_BACKOFF_BASE", "0", "3600", "-0.5", "3600.5", "seconds in 0..3600",
         "RETRY_BACKOFF_MAX=86400"},
        {"RETRY_BACKOFF_MAX", "0", "86400", "-1", "86401", "seconds in 0..86400", "RETRY_BACKOFF_BASE=0"},
        {"RETRY_JITTER", "0", "1", "-0.1", "1.01", "a number in 0..1", NULL},
        {"CIRCUIT_BREAKER_GROWTH", "1", "10", "0.99", "10.5", "a number in 1..10", NULL},
        {"CIRCUIT_BREAKER_MAX_TIMEOUT", "0.1", "8d", "0.05", "691201", "seconds in 0.1..691200",
         "CIRCUIT_BREAKER_TIMEOUT=0.1"},
        {"MAX_FILE_SIZE", "1", "1T", "0", "1099511627777", "bytes in 1..1T", NULL},
        {"MAX_REQUEST_BODY", "1K", "1G", "1023", "1025M", "bytes in 1K..1G", NULL},
        {"JOB_RETENTION", "0", "3650d", "-1", "315360001", "seconds in 0..315360000", NULL},
        {"API_THREADS", "1", "64", "0", "65", "an integer in 1..64", "API_MAX_CONNECTIONS=256"},
        {"API_MAX_CONNECTIONS", "16", "65536", "15", "65537", "an integer in 16..65536", "API_THREADS=1"},
        {"API_MAX_CONNECTIONS_PER_IP", "1", "65536", "0", "65537", "an integer in 1..65536", NULL},
        {"API_HEADER_TIMEOUT", "1", "5m", "0.5", "301", "seconds in 1..300", NULL},
};

/* Load with flag key=value (after l->pre); the result of config_load. */
static int load_limit(const struct limit *l, const char *value, struct config_error *err)
{
        struct config c;
        char *flags[2], *flag;
        int n = 0, r;

        ck_assert_int_ge(asprintf(&flag, "%s=%s", l->key, value), 0);
        if (l->pre)
                flags[n++] = (char *)l->pre;
        flags[n++] = flag;
        r = config_load(&c, "/dev/null", flags, n, err);
        if (r == 0)
                config_free(&c);
        free(flag);
        return r;
}

static void expect_bad(const struct limit *l, const char *value)
{
        struct config_error err;

        ck_assert_msg(load_limit(l, value, &err) == -EINVAL, "%s=%s accepted", l->key, value);
        ck_assert_str_eq(err.key, l->key);
        ck_assert_str_eq(err.file, "command line");
        ck_assert_msg(strstr(err.message, l->range), "%s=%s: message \"%s\" lacks \"%s\"", l->key, value,
                      err.message, l->range);
}

static void expect_good(const struct limit *l, const char *value)
{
        struct config_error err;

        ck_assert_msg(load_limit(l, value, &err) == 0, "%s=%s: %s", l->key, value, err.message);
}

START_TEST(test_limits)
{
        const struct limit *l = &limits[_i];

        expect_good(l, l->lowest);
        expect_good(l, l->highest);
        expect_bad(l, l->below);
        expect_bad(l, l->above);
        expect_bad(l, "");
        expect_bad(l, "twelve");
}
END_TEST

START_TEST(test_limits_exact_values)
{
        struct config c;
        struct config_error err;
        char *flags[] = {"MAX_FILE_SIZE=1T", "MIN_DOWNLOAD_SPEED=0", "REQUEST_TIMEOUT=0.1",
                         "JOB_RETENTION=3650d", "MAX_CONCURRENT_SOURCES=1000"};

        ck_assert_int_eq(config_load(&c, "/dev/null", flags, 5, &err), 0);
        ck_assert_int_eq(c.max_file_size, 1024 * GiB);
        ck_assert_int_eq(c.min_download_speed, 0);
        ck_assert_double_eq(c.request_timeout, 0.1);
        ck_assert_double_eq(c.job_retention, 3650.0 * 86400);
        ck_assert_int_eq(c.max_concurrent_sources, 1000);
        config_free(&c);
}
END_TEST

START_TEST(test_backoff_order)
{
        struct config c;
        struct config_error err;
        char *flags[] = {"RETRY_BACKOFF_MAX=0.5"};
        char *base[] = {"RETRY_BACKOFF_BASE=61"};

        ck_assert_int_eq(config_load(&c, "/dev/null", flags, 1, &err), -EINVAL);
        ck_assert_str_eq(err.key, "RETRY_BACKOFF_MAX");
        ck_assert_str_eq(err.message, "must be at least RETRY_BACKOFF_BASE (1)");
        ck_assert_int_eq(load_text(&c, "\nRETRY_BACKOFF_BASE=61\n", &err), -EINVAL);
        ck_assert_int_eq(err.line, 2);
        ck_assert_str_eq(err.key, "RETRY_BACKOFF_BASE");
        ck_assert_str_eq(err.message, "must be at most RETRY_BACKOFF_MAX (60)");
        ck_assert_int_eq(config_load(&c, "/dev/null", base, 1, &err), -EINVAL);
        ck_assert_str_eq(err.file, "command line");
}
END_TEST

/* CIRCUIT_BREAKER_MAX_TIMEOUT follows CIRCUIT_BREAKER_TIMEOUT (8 x) unless a
 * layer set it; set, it may not be under CIRCUIT_BREAKER_TIMEOUT. */
START_TEST(test_circuit_max_timeout)
{
        struct config c;
        struct config_error err;
        char *day[] = {"CIRCUIT_BREAKER_TIMEOUT=1d"};
        char *below[] = {"CIRCUIT_BREAKER_MAX_TIMEOUT=30"};
        char *equal[] = {"CIRCUIT_BREAKER_TIMEOUT=2m", "CIRCUIT_BREAKER_MAX_TIMEOUT=120"};

        ck_assert_int_eq(load_text(&c, "CIRCUIT_BREAKER_TIMEOUT=600\n", &err), 0);
        ck_assert_double_eq(c.circuit_breaker_max_timeout, 4800);
        config_free(&c);
        ck_assert_int_eq(config_load(&c, "/dev/null", day, 1, &err), 0);
        ck_assert_double_eq(c.circuit_breaker_max_timeout, 8 * 86400);
        config_free(&c);
        ck_assert_int_eq(config_load(&c, "/dev/null", equal, 2, &err), 0);
        ck_assert_double_eq(c.circuit_breaker_max_timeout, 120);
        config_free(&c);
        /* set below the open time: the error names where it was set */
        ck_assert_int_eq(config_load(&c, "/dev/null", below, 1, &err), -EINVAL);
        ck_assert_str_eq(err.file, "command line");
        ck_assert_str_eq(err.key, "CIRCUIT_BREAKER_MAX_TIMEOUT");
        ck_assert_str_eq(err.message, "must be at least CIRCUIT_BREAKER_TIMEOUT (60)");
        ck_assert_int_eq(load_text(&c, "\nCIRCUIT_BREAKER_MAX_TIMEOUT=5m\n", &err), 0);
        ck_assert_double_eq(c.circuit_breaker_max_timeout, 300);
        config_free(&c);
        /* a later layer raising the open time past a file's cap is caught */
        setenv("CIRCUIT_BREAKER_TIMEOUT", "10m", 1);
        ck_assert_int_eq(load_text(&c, "\nCIRCUIT_BREAKER_MAX_TIMEOUT=5m\n", &err), -EINVAL);
        ck_assert_int_eq(err.line, 2);
        ck_assert_str_eq(err.key, "CIRCUIT_BREAKER_MAX_TIMEOUT");
        ck_assert_str_eq(err.message, "must be at least CIRCUIT_BREAKER_TIMEOUT (600)");
        unsetenv("CIRCUIT_BREAKER_TIMEOUT");
}
END_TEST

/* Plain numbers (RETRY_JITTER, CIRCUIT_BREAKER_GROWTH): decimals, no
 * suffix, sign or exponent. */
START_TEST(test_numbers)
{
        struct config c;
        struct config_error err;

        ck_assert_int_eq(config_defaults(&c), 0);
        ck_assert_int_eq(config_set(&c, "RETRY_JITTER", "0.25", &err), 0);
        ck_assert_double_eq(c.retry_jitter, 0.25);
        ck_assert_int_eq(config_set(&c, "RETRY_JITTER", ".5", &err), 0);
        ck_assert_double_eq(c.retry_jitter, 0.5);
        ck_assert_int_eq(config_set(&c, "RETRY_JITTER", "0", &err), 0);
        ck_assert_double_eq(c.retry_jitter, 0);
        ck_assert_int_eq(config_set(&c, "CIRCUIT_BREAKER_GROWTH", "1.5", &err), 0);
        ck_assert_double_eq(c.circuit_breaker_growth, 1.5);
        static const char *const bad[] = {"",   ".",   "0.5s", "1e-1", "+0.5",
                                          "-0", "0,5", "nan",  "inf",  " 0.5"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_msg(config_set(&c, "RETRY_JITTER", bad[i], &err) == -EINVAL, "%s accepted",
                              bad[i]);
                ck_assert_str_eq(err.message, "must be a number in 0..1");
        }
        ck_assert_double_eq(c.retry_jitter, 0); /* unchanged by failures */
        config_free(&c);
}
END_TEST

static int64_t size_of(const char *v, int *ret)
{
        struct config c;
        struct config_error err;

        ck_assert_int_eq(config_defaults(&c), 0);
        *ret = config_set(&c, "MAX_FILE_SIZE", v, &err);
        int64_t n = c.max_file_size;
        config_free(&c);
        return n;
}

START_TEST(test_sizes)
{
        int r;

        ck_assert_int_eq(size_of("100", &r), 100);
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(size_of("512K", &r), 512 * 1024);
        ck_assert_int_eq(size_of("1M", &r), 1024 * 1024);
        ck_assert_int_eq(size_of("2G", &r), 2 * GiB);
        ck_assert_int_eq(size_of("2g", &r), 2 * GiB);
        ck_assert_int_eq(size_of("1T", &r), 1024 * GiB);
        ck_assert_int_eq(r, 0);
        static const char *const bad[] = {"1.5G",
                                          "G",
                                          "1KB",
                                          "1 K",
                                          " 1",
                                          "+1",
                                          "0x10",
                                          "1P",
                                          "99999999999999999999",
                                          "9000000T",
                                          "9223372036854775807"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_int_eq(size_of(bad[i], &r), 2 * GiB); /* unchanged */
                ck_assert_msg(r == -EINVAL, "%s accepted", bad[i]);
        }
}
END_TEST

static double duration_of(const char *v, int *ret)
{
        struct config c;
        struct config_error err;

        ck_assert_int_eq(config_defaults(&c), 0);
        *ret = config_set(&c, "JOB_RETENTION", v, &err);
        double d = c.job_retention;
        config_free(&c);
        return d;
}

START_TEST(test_durations)
{
        int r;

        ck_assert_double_eq(duration_of("0.5", &r), 0.5);
        ck_assert_double_eq(duration_of("30s", &r), 30);
        ck_assert_double_eq(duration_of("2m", &r), 120);
        ck_assert_double_eq(duration_of("1.5h", &r), 5400);
        ck_assert_double_eq(duration_of("7d", &r), 604800);
        ck_assert_double_eq(duration_of(".5", &r), 0.5);
        ck_assert_double_eq(duration_of("5.", &r), 5);
        ck_assert_int_eq(r, 0);
        static const char *const bad[] = {"",   ".",   "1w",  "1e3", "inf", "nan", "0x10",
                                          " 5", "5 s", "5ss", "-0",  "+5",  "1,5", "1d2h"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_double_eq(duration_of(bad[i], &r), 604800); /* unchanged */
                ck_assert_msg(r == -EINVAL, "%s accepted", bad[i]);
        }
}
END_TEST

START_TEST(test_booleans_and_levels)
{
        struct config c;
        struct config_error err;
        static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
        static const char *const no[] = {"false", "no", "off", "0", "Off"};

        ck_assert_int_eq(config_defaults(&c), 0);
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
                c.allow_private_addresses = false;
                ck_assert_int_eq(config_set(&c, "ALLOW_PRIVATE_ADDRESSES", yes[i], &err), 0);
                ck_assert(c.allow_private_addresses);
        }
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
                c.allow_private_addresses = true;
                ck_assert_int_eq(config_set(&c, "ALLOW_PRIVATE_ADDRESSES", no[i], &err), 0);
                ck_assert(!c.allow_private_addresses);
        }
        ck_assert_int_eq(config_set(&c, "ALLOW_PRIVATE_ADDRESSES", "maybe", &err), -EINVAL);
        ck_assert_str_eq(err.key, "ALLOW_PRIVATE_ADDRESSES");
        ck_assert_ptr_nonnull(strstr(err.message, "true or false"));

        ck_assert_int_eq(config_set(&c, "LOG_LEVEL", "debug", &err), 0);
        ck_assert_int_eq(c.log_level, LOG_DEBUG);
        ck_assert_int_eq(config_set(&c, "LOG_LEVEL", "warning", &err), 0);
        ck_assert_int_eq(c.log_level, LOG_WARNING);
        ck_assert_int_eq(config_set(&c, "LOG_LEVEL", "error", &err), 0);
        ck_assert_int_eq(c.log_level, LOG_ERROR);
        ck_assert_int_eq(config_set(&c, "LOG_LEVEL", "verbose", &err), -EINVAL);
        ck_assert_int_eq(c.log_level, LOG_ERROR);
        ck_assert_str_eq(err.message, "must be one of debug, info, warning, error");

        ck_assert_int_eq(config_set(&c, "LOG_FORMAT", "json", &err), 0);
        ck_assert_int_eq(c.log_format, LOG_FORMAT_JSON);
        ck_assert_int_eq(config_set(&c, "LOG_FORMAT", "text", &err), 0);
        ck_assert_int_eq(c.log_format, LOG_FORMAT_TEXT);
        ck_assert_int_eq(config_set(&c, "LOG_FORMAT", "JSON", &err), -EINVAL);
        ck_assert_str_eq(err.message, "must be text or json");
        ck_assert_int_eq(config_set(&c, "LOG_FORMAT", "logfmt", &err), -EINVAL);
        ck_assert_int_eq(c.log_format, LOG_FORMAT_TEXT);
        ck_assert_int_eq(config_set(&c, "LOG_FILE_LINES", "false", &err), 0);
        ck_assert(!c.log_file_lines);
        ck_assert_int_eq(config_set(&c, "LOG_FILE_LINES", "quiet", &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "true or false"));
        ck_assert(!c.log_file_lines);
        ck_assert_int_eq(config_set(&c, "NO_SUCH_KEY", "1", &err), -EINVAL);
        ck_assert_str_eq(err.message, "unknown key");
        config_free(&c);
}
END_TEST

START_TEST(test_strings)
{
        struct config c;
        struct config_error err;
        char longpath[1100], longsock[200];
        static const char *const good_listen[] = {
                "127.0.0.1:8080", "0.0.0.0:0",         "localhost:65535",         "[::1]:8080",
                "[::]:80",        "[fe80::1%eth0]:80", "unix:/run/hauld/api.sock"};
        static const char *const bad_listen[] = {
                "127.0.0.1", "127.0.0.1:65536", ":8080",           "[::1]", "[zz]:80",  "::1:80",
                "host:-1",   "host:80x",        "unix:run/x.sock", "unix:", "ho st:80", ""};

        ck_assert_int_eq(config_defaults(&c), 0);
        for (size_t i = 0; i < sizeof(good_listen) / sizeof(good_listen[0]); i++)
                ck_assert_msg(config_set(&c, "LISTEN", good_listen[i], &err) == 0, "%s", good_listen[i]);
        for (size_t i = 0; i < sizeof(bad_listen) / sizeof(bad_listen[0]); i++) {
                ck_assert_msg(config_set(&c, "LISTEN", bad_listen[i], &err) == -EINVAL, "%s", bad_listen[i]);
                ck_assert_ptr_nonnull(strstr(err.message, "port 0..65535"));
        }
        ck_assert_str_eq(c.listen, "unix:/run/hauld/api.sock"); /* unchanged by failures */
        memset(longsock, 'a', sizeof(longsock));
        memcpy(longsock, "unix:/", 6);
        longsock[5 + 107] = '\0'; /* sun_path holds 107 bytes and the NUL */
        ck_assert_int_eq(config_set(&c, "LISTEN", longsock, &err), 0);
        longsock[5 + 107] = 'a';
        longsock[5 + 108] = '\0';
        ck_assert_int_eq(config_set(&c, "LISTEN", longsock, &err), -EINVAL);

        ck_assert_int_eq(config_set(&c, "STATE_DIR", "relative/dir", &err), -EINVAL);
        ck_assert_str_eq(err.message, "must be an absolute path of at most 1024 bytes");
        memset(longpath, 'd', sizeof(longpath));
        longpath[0] = '/';
        longpath[1024] = '\0';
        ck_assert_int_eq(config_set(&c, "DOWNLOAD_DIR", longpath, &err), 0);
        longpath[1024] = 'd';
        longpath[1025] = '\0';
        ck_assert_int_eq(config_set(&c, "DOWNLOAD_DIR", longpath, &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "STORE", "mysql://x", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "STORE", "sqlite:jobs.db", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "STORE", "postgresql://db.example/hauld", &err), 0);
        ck_assert_int_eq(config_set(&c, "CORS_ORIGINS", "https://a.example/path", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "CORS_ORIGINS", "a.example", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "CORS_ORIGINS", "http://a.example:3000,https://b", &err), 0);
        ck_assert_int_eq(config_set(&c, "ALLOWED_HOSTS", "a.example,b/c", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "ACCEPT_CONTENT", "any", &err), 0);
        ck_assert_int_eq(config_set(&c, "ACCEPT_CONTENT", "image, application/pdf", &err), 0);
        ck_assert_int_eq(config_set(&c, "ACCEPT_CONTENT", "", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "ACCEPT_CONTENT", "pictures", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "ACCEPT_CONTENT", "image/", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "API_TOKEN_FILE", "token", &err), -EINVAL);
        ck_assert_int_eq(config_set(&c, "API_TOKEN_FILE", "/etc/token", &err), 0);
        ck_assert_int_eq(config_set(&c, "API_TOKEN_FILE", "", &err), 0);
        ck_assert_ptr_null(c.api_token_file);
        config_free(&c);
}
END_TEST

START_TEST(test_value_too_long)
{
        struct config c;
        struct config_error err;
        char v[4098];

        memset(v, 'a', sizeof(v));
        v[4097] = '\0';
        ck_assert_int_eq(config_defaults(&c), 0);
        ck_assert_int_eq(config_set(&c, "CORS_ORIGINS", v, &err), -EINVAL);
        ck_assert_str_eq(err.message, "must be at most 4096 bytes");
        config_free(&c);
}
END_TEST

START_TEST(test_state_dir_moves_paths)
{
        struct config c;
        struct config_error err;
        char *flags[] = {"STATE_DIR=/srv/flag/"};

        ck_assert_int_eq(load_text(&c, "STATE_DIR=/srv/file\n", &err), 0);
        ck_assert_str_eq(c.state_dir, "/srv/file");
        ck_assert_str_eq(c.store, "sqlite:/srv/file/jobs.db");
        ck_assert_str_eq(c.download_dir, "/srv/file/downloads");
        config_free(&c);

        /* STATE_DIRECTORY (systemd) gives the default; STATE_DIR wins */
        setenv("STATE_DIRECTORY", "/srv/systemd", 1);
        ck_assert_int_eq(config_load(&c, "/dev/null", flags, 1, &err), 0);
        ck_assert_str_eq(c.store, "sqlite:/srv/flag/jobs.db");
        ck_assert_str_eq(c.download_dir, "/srv/flag/downloads");
        config_free(&c);
        ck_assert_int_eq(config_load(&c, "/dev/null", NULL, 0, &err), 0);
        ck_assert_str_eq(c.store, "sqlite:/srv/systemd/jobs.db");
        config_free(&c);
}
END_TEST

START_TEST(test_explicit_store_kept)
{
        struct config c;
        struct config_error err;
        char *flags[] = {"STATE_DIR=/srv/late"};

        setenv("STORE", "sqlite:/data/jobs.db", 1);
        ck_assert_int_eq(load_text(&c, "STATE_DIR=/srv/file\n", &err), 0);
        ck_assert_str_eq(c.store, "sqlite:/data/jobs.db");
        ck_assert_str_eq(c.download_dir, "/srv/file/downloads");
        config_free(&c);
        unsetenv("STORE");

        ck_assert_int_eq(load_text(&c, "DOWNLOAD_DIR=/data/dl\n", &err), 0);
        config_free(&c);
        char path[4096];
        snprintf(path, sizeof(path), "%s/hauld.conf", tmp);
        ck_assert_int_eq(config_load(&c, path, flags, 1, &err), 0);
        ck_assert_str_eq(c.download_dir, "/data/dl");
        ck_assert_str_eq(c.store, "sqlite:/srv/late/jobs.db");
        config_free(&c);
}
END_TEST

START_TEST(test_token_file)
{
        struct config c;
        struct config_error err;
        char conf[8192];
        const char *tok = write_file("token", "  s3cr3t-Token_value.~\n\n\t");

        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s\n", tok);
        ck_assert_int_eq(load_text(&c, conf, &err), 0);
        ck_assert_str_eq(c.api_token, "s3cr3t-Token_value.~");
        ck_assert_ptr_nonnull(strstr(c.api_token_file, "/token"));
        config_free(&c);

        /* from $CREDENTIALS_DIRECTORY when present; "" turns it off */
        write_file("api-token", "cred\n");
        setenv("CREDENTIALS_DIRECTORY", tmp, 1);
        ck_assert_int_eq(config_load(&c, "/dev/null", NULL, 0, &err), 0);
        ck_assert_str_eq(c.api_token, "cred");
        config_free(&c);
        ck_assert_int_eq(load_text(&c, "API_TOKEN_FILE=\n", &err), 0);
        ck_assert_ptr_null(c.api_token_file);
        ck_assert_ptr_null(c.api_token);
        config_free(&c);
}
END_TEST

START_TEST(test_token_file_errors)
{
        struct config c;
        struct config_error err;
        char conf[8192], big[5000];

        snprintf(conf, sizeof(conf), "\nAPI_TOKEN_FILE=%s/missing\n", tmp);
        ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.file, "hauld.conf"));
        ck_assert_int_eq(err.line, 2);
        ck_assert_str_eq(err.key, "API_TOKEN_FILE");
        ck_assert_ptr_nonnull(strstr(err.message, "No such file"));

        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s", write_file("empty", " \n\n"));
        ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
        ck_assert_str_eq(err.key, "API_TOKEN_FILE");
        ck_assert_ptr_nonnull(strstr(err.message, "is empty"));

        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s", write_file("two", "one two\n"));
        ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "printable"));

        memset(big, 'x', sizeof(big));
        big[sizeof(big) - 1] = '\0';
        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s", write_file("big", big));
        ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "larger than 4096"));

        /* what is no regular file is named for what it is, and never read */
        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s\n", tmp);
        ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
        ck_assert_str_eq(err.key, "API_TOKEN_FILE");
        ck_assert_ptr_nonnull(strstr(err.message, "is a directory"));
        char fifo[4096];
        snprintf(fifo, sizeof(fifo), "%s/token.fifo", tmp);
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s\n", fifo);
        ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "is not a regular file (it is a FIFO)"));
        ck_assert_int_eq(load_text(&c, "API_TOKEN_FILE=/dev/zero\n", &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err.message, "character device"));

        if (geteuid() != 0) {
                const char *p = write_file("secret", "tok\n");
                ck_assert_int_eq(chmod(p, 0), 0);
                snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s", p);
                ck_assert_int_eq(load_text(&c, conf, &err), -EINVAL);
                ck_assert_ptr_nonnull(strstr(err.message, "Permission denied"));
        }
}
END_TEST

struct shown {
        int n;
        char keys[64][64];
        char values[64][4200];
};

static void show(const char *key, const char *value, void *ud)
{
        struct shown *s = ud;

        ck_assert_int_lt(s->n, 64);
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", key);
        snprintf(s->values[s->n], sizeof(s->values[0]), "%s", value);
        s->n++;
}

static const char *shown_value(const struct shown *s, const char *key)
{
        for (int i = 0; i < s->n; i++)
                if (strcmp(s->keys[i], key) == 0)
                        return s->values[i];
        ck_abort_msg("%s not shown", key);
        return NULL;
}

START_TEST(test_foreach)
{
        struct config c, again;
        struct config_error err;
        static struct shown s, s2;
        char conf[8192], tok[4096];

        snprintf(tok, sizeof(tok), "%s", write_file("token", "topsecret\n"));

        snprintf(conf, sizeof(conf), "API_TOKEN_FILE=%s\nSTORE=postgresql://hauld:pw0rd@db:5432/hauld\n",
                 tok);
        ck_assert_int_eq(load_text(&c, conf, &err), 0);
        config_foreach(&c, show, &s);
        ck_assert_int_eq(s.n, NKEYS);
        /* the design's ten download settings first, in their order */
        ck_assert_str_eq(s.keys[0], "MAX_CONCURRENT_SOURCES");
        ck_assert_str_eq(s.keys[9], "CIRCUIT_BREAKER_TIMEOUT");
        ck_assert_str_eq(s.keys[10], "LISTEN");
        for (int i = 0; i < s.n; i++) /* each key once */
                for (int k = i + 1; k < s.n; k++)
                        ck_assert_str_ne(s.keys[i], s.keys[k]);
        for (int i = 0; i < s.n; i++) {
                ck_assert_str_ne(s.keys[i], "API_TOKEN");
                ck_assert_ptr_null(strstr(s.values[i], "topsecret"));
                ck_assert_ptr_null(strstr(s.values[i], "pw0rd"));
        }
        ck_assert_str_eq(shown_value(&s, "STORE"), "postgresql://hauld:***@db:5432/hauld");
        ck_assert_str_eq(shown_value(&s, "API_TOKEN_FILE"), tok);
        ck_assert_str_eq(shown_value(&s, "MAX_FILE_SIZE"), "2G");
        ck_assert_str_eq(shown_value(&s, "JOB_RETENTION"), "604800");
        ck_assert_str_eq(shown_value(&s, "ALLOW_PRIVATE_ADDRESSES"), "false");
        ck_assert_str_eq(shown_value(&s, "LOG_LEVEL"), "info");
        ck_assert_str_eq(shown_value(&s, "REQUEST_TIMEOUT"), "15");
        ck_assert_str_eq(shown_value(&s, "RETRY_JITTER"), "0.1");
        ck_assert_str_eq(shown_value(&s, "CIRCUIT_BREAKER_GROWTH"), "2");
        ck_assert_str_eq(shown_value(&s, "CIRCUIT_BREAKER_MAX_TIMEOUT"), "480");
        ck_assert_str_eq(shown_value(&s, "LOG_FORMAT"), "text");
        ck_assert_str_eq(shown_value(&s, "LOG_FILE_LINES"), "true");
        config_free(&c);

        /* what is shown reads back as the same settings */
        ck_assert_int_eq(config_defaults(&c), 0);
        ck_assert_int_eq(config_set(&c, "REQUEST_TIMEOUT", "0.25", &err), 0);
        ck_assert_int_eq(config_set(&c, "MIN_DOWNLOAD_SPEED", "1000", &err), 0);
        ck_assert_int_eq(config_set(&c, "MAX_REQUEST_BODY", "1536K", &err), 0);
        ck_assert_int_eq(config_set(&c, "RETRY_JITTER", "0.35", &err), 0);
        ck_assert_int_eq(config_set(&c, "LOG_FORMAT", "json", &err), 0);
        ck_assert_int_eq(config_set(&c, "STORE", "postgresql://db/h?password=pw0rd&sslmode=require", &err),
                         0);
        s.n = 0;
        config_foreach(&c, show, &s);
        ck_assert_str_eq(shown_value(&s, "STORE"), "postgresql://db/h?password=***&sslmode=require");
        ck_assert_int_eq(config_set(&c, "STORE", "postgresql://u:p@ss@db/h", &err), 0);
        s2.n = 0;
        config_foreach(&c, show, &s2);
        ck_assert_str_eq(shown_value(&s2, "STORE"), "postgresql://u:***@db/h");
        s2.n = 0;
        ck_assert_int_eq(config_defaults(&again), 0);
        for (int i = 0; i < s.n; i++)
                if (strcmp(s.keys[i], "STORE") != 0)
                        ck_assert_msg(config_set(&again, s.keys[i], s.values[i], &err) == 0, "%s=%s: %s",
                                      s.keys[i], s.values[i], err.message);
        config_foreach(&again, show, &s2);
        for (int i = 0; i < s.n; i++)
                if (strcmp(s.keys[i], "STORE") != 0)
                        ck_assert_str_eq(s.values[i], s2.values[i]);
        config_free(&again);
        config_free(&c);
}
END_TEST

START_TEST(test_user_agent)
{
        static const char *const wikimedia =
                "acme-media-fetcher/1.0 (https://acme.example/bot; ops@acme.example) hauld/0.1";
        struct config c;
        struct config_error err;
        static struct shown s;
        char v[300], conf[512];

        ck_assert_int_eq(config_defaults(&c), 0);
        ck_assert_str_eq(c.user_agent, "hauld/" PACKAGE_VERSION);
        ck_assert_int_eq(config_set(&c, "USER_AGENT", wikimedia, &err), 0);
        ck_assert_str_eq(c.user_agent, wikimedia);
        ck_assert_int_eq(config_set(&c, "USER_AGENT", "x", &err), 0);

        /* 256 printable characters, the longest; 257 is one too many */
        memset(v, '~', 256);
        v[0] = '!';
        v[256] = '\0';
        ck_assert_int_eq(config_set(&c, "USER_AGENT", v, &err), 0);
        ck_assert_uint_eq(strlen(c.user_agent), 256);
        v[256] = 'a';
        v[257] = '\0';
        ck_assert_int_eq(config_set(&c, "USER_AGENT", v, &err), -EINVAL);
        ck_assert_str_eq(err.key, "USER_AGENT");
        ck_assert_ptr_nonnull(strstr(err.message, "1..256 printable ASCII"));
        ck_assert_uint_eq(strlen(c.user_agent), 256); /* unchanged by failures */

        static const char *const bad[] = {
                "",
                "bot/1\r\nX-Injected: 1",
                "bot/1\n",
                "bot/1\r",
                "bot\t1",
                "bot/1\x7f",
                "b\xc3\xa9/1",
                " bot/1",
                "bot/1 ",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                ck_assert_msg(config_set(&c, "USER_AGENT", bad[i], &err) == -EINVAL, "accepted %zu", i);
        config_free(&c);

        /* from the file, quoted, as docs/configuration.md shows it; shown as set */
        snprintf(conf, sizeof(conf), "USER_AGENT=\"%s\"\n", wikimedia);
        ck_assert_int_eq(load_text(&c, conf, &err), 0);
        ck_assert_str_eq(c.user_agent, wikimedia);
        config_foreach(&c, show, &s);
        ck_assert_str_eq(shown_value(&s, "USER_AGENT"), wikimedia);
        config_free(&c);
        ck_assert_int_eq(load_text(&c, "USER_AGENT=\n", &err), -EINVAL);
        ck_assert_int_eq(err.line, 1);
        ck_assert_str_eq(err.key, "USER_AGENT");
}
END_TEST

START_TEST(test_proxy)
{
        static const char *const good[] = {
                "",
                "http://127.0.0.1:3128",
                "http://proxy.internal:3128/",
                "https://proxy.internal",
                "socks5h://[::1]:1080",
                "http://user:p@ss@proxy:8080",
        };
        static const char *const bad[] = {
                "proxy:3128",          "ftp://proxy:21",  "socks4://proxy:1080",
                "socks5://proxy:1080", "http://",         "http://:3128",
                "http://proxy/path",   "http://pro xy:1", "http://proxy:1\r\nX:1",
                "http://proxy:1?a=b",
        };
        struct config c;
        struct config_error err;
        static struct shown s;
        char v[600];

        ck_assert_int_eq(config_defaults(&c), 0);
        ck_assert_str_eq(c.proxy, "");
        ck_assert(!c.proxy_trusted);
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                ck_assert_msg(config_set(&c, "PROXY", good[i], &err) == 0, "refused %s: %s", good[i],
                              err.message);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_msg(config_set(&c, "PROXY", bad[i], &err) == -EINVAL, "accepted %s", bad[i]);
                ck_assert_str_eq(err.key, "PROXY");
                ck_assert_ptr_nonnull(strstr(err.message, "socks5h://host:port"));
        }
        ck_assert_str_eq(c.proxy, "http://user:p@ss@proxy:8080"); /* unchanged by failures */

        /* 512 bytes, the longest; 513 is one too many */
        snprintf(v, sizeof(v), "http://%0505d", 0);
        ck_assert_uint_eq(strlen(v), 512);
        ck_assert_int_eq(config_set(&c, "PROXY", v, &err), 0);
        strcat(v, "0");
        ck_assert_int_eq(config_set(&c, "PROXY", v, &err), -EINVAL);

        /* the password is never shown */
        ck_assert_int_eq(config_set(&c, "PROXY", "http://fetcher:s3cret@proxy:3128", &err), 0);
        ck_assert_int_eq(config_set(&c, "PROXY_TRUSTED", "yes", &err), 0);
        ck_assert(c.proxy_trusted);
        config_foreach(&c, show, &s);
        ck_assert_str_eq(shown_value(&s, "PROXY"), "http://fetcher:***@proxy:3128");
        ck_assert_str_eq(shown_value(&s, "PROXY_TRUSTED"), "true");
        config_free(&c);
}
END_TEST

/* etc/hauld.conf lists every key with its default: uncommented, it loads
 * to exactly the defaults. */
START_TEST(test_shipped_conf)
{
        static struct shown want, got;
        struct config c;
        struct config_error err;
        const char *srcdir = getenv("srcdir");
        char path[4096], line[1024], *text = NULL;
        size_t len = 0;
        FILE *in, *out;

        snprintf(path, sizeof(path), "%s/etc/hauld.conf", srcdir ? srcdir : ".");
        in = fopen(path, "r");
        if (!in)
                return; /* not run from the source tree */
        out = open_memstream(&text, &len);
        ck_assert_ptr_nonnull(out);
        while (fgets(line, sizeof(line), in))
                if (line[0] == '#' && isupper((unsigned char)line[1]))
                        fputs(line + 1, out);
        fclose(in);
        fclose(out);
        ck_assert_int_eq(load_text(&c, text, &err), 0);
        config_foreach(&c, show, &got);
        config_free(&c);
        ck_assert_int_eq(config_load(&c, "/dev/null", NULL, 0, &err), 0);
        config_foreach(&c, show, &want);
        config_free(&c);
        ck_assert_int_eq(got.n, want.n);
        for (int i = 0; i < want.n; i++) {
                ck_assert_str_eq(got.keys[i], want.keys[i]);
                ck_assert_str_eq(got.values[i], want.values[i]);
        }
        /* every key is there, once */
        for (int i = 0; i < want.n; i++) {
                char needle[80];
                snprintf(needle, sizeof(needle), "%s=", want.keys[i]);
                const char *at = strstr(text, needle);
                ck_assert_msg(at && !strstr(at + 1, needle), "%s", needle);
        }
        free(text);
}
END_TEST

START_TEST(test_free)
{
        struct config c;

        memset(&c, 0, sizeof(c));
        config_free(&c);
        config_free(NULL);
        ck_assert_int_eq(config_defaults(&c), 0);
        config_free(&c);
        config_free(&c);
        ck_assert_ptr_null(c.listen);
}
END_TEST

static Suite *config_suite(void)
{
        Suite *s = suite_create("config");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_defaults);
        tcase_add_test(tc, test_defaults_systemd_dirs);
        tcase_add_test(tc, test_no_default_file);
        tcase_add_test(tc, test_missing_file);
        tcase_add_test(tc, test_file_kinds);
        tcase_add_test(tc, test_file_size_limit);
        tcase_add_test(tc, test_sources_dir);
        tcase_add_test(tc, test_merge_reload);
        tcase_add_test(tc, test_api_threads_and_connections);
        tcase_add_test(tc, test_layers);
        tcase_add_test(tc, test_file_format);
        tcase_add_test(tc, test_file_errors);
        tcase_add_test(tc, test_env_and_flag_errors);
        tcase_add_loop_test(tc, test_limits, 0, (int)(sizeof(limits) / sizeof(limits[0])));
        tcase_add_test(tc, test_limits_exact_values);
        tcase_add_test(tc, test_backoff_order);
        tcase_add_test(tc, test_circuit_max_timeout);
        tcase_add_test(tc, test_numbers);
        tcase_add_test(tc, test_sizes);
        tcase_add_test(tc, test_durations);
        tcase_add_test(tc, test_booleans_and_levels);
        tcase_add_test(tc, test_strings);
        tcase_add_test(tc, test_value_too_long);
        tcase_add_test(tc, test_state_dir_moves_paths);
        tcase_add_test(tc, test_explicit_store_kept);
        tcase_add_test(tc, test_token_file);
        tcase_add_test(tc, test_token_file_errors);
        tcase_add_test(tc, test_foreach);
        tcase_add_test(tc, test_user_agent);
        tcase_add_test(tc, test_proxy);
        tcase_add_test(tc, test_shipped_conf);
        tcase_add_test(tc, test_free);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(config_suite()); }

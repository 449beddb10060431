/* config: the settings table. Each key is one row of `keys` (spec order):
 * its type, its field in struct config, its allowed range and its default
 * text. Defaults, the file, the environment and flags all pass through
 * set_key(), so every layer shares one parser and one range check, and any
 * error can name the key and its range.
 *
 * The settings file and the token file are read whole, once, and only
 * when they are regular files: what they are is checked before they are
 * opened, so a FIFO or a device can neither block the start nor stream
 * into memory.
 *
 * Invariants: after config_defaults() or a successful config_load() every
 * string field but api_token_file, api_token and config_file is non-NULL and
 * valid, STORE and DOWNLOAD_DIR follow STATE_DIR unless a layer set them, and
 * CIRCUIT_BREAKER_MAX_TIMEOUT is 8 x CIRCUIT_BREAKER_TIMEOUT unless a layer
 * set it (then at least CIRCUIT_BREAKER_TIMEOUT).
 * No logging here: errors go back to the caller in struct config_error. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/str.h"
#include "daemon/config.h"

#ifndef CONFIG_DEFAULT_FILE
#define CONFIG_DEFAULT_FILE "/etc/hauld/hauld.conf"
#endif
#define DEFAULT_STATE_DIR "/var/lib/hauld"
#define VALUE_MAX         4096 /* bytes of one value */
#define DIR_MAX           1024 /* bytes of a path setting: leaves PATH_MAX room for <job>/<source>/<name> */
#define TOKEN_MAX         4096 /* bytes of the API token file */
#define UNIX_PATH_MAX     (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define USER_AGENT_MAX    256 /* bytes of USER_AGENT */
#define MAX_OPEN_FACTOR   8   /* CIRCUIT_BREAKER_MAX_TIMEOUT's default, times CIRCUIT_BREAKER_TIMEOUT */
#define CONNS_PER_THREAD  4   /* API_MAX_CONNECTIONS per API_THREADS, at least */
#define PROXY_MAX         512 /* bytes of PROXY */

enum kind {
        K_INT,      /* int, decimal */
        K_DURATION, /* double seconds; suffix s, m, h, d */
        K_NUMBER,   /* double, decimal digits [. digits], no suffix */
        K_SIZE,     /* int64_t bytes; suffix K, M, G, T */
        K_BOOL,
        K_LEVEL,   /* enum log_level stored in an int */
        K_FORMAT,  /* enum log_format stored in an int */
        K_STRING,  /* char *, checked by check() */
        K_OPTPATH, /* char *, absolute path; "" stores NULL (none) */
};

/* NULL when a string value is acceptable, else what it must be. */
typedef const char *(*check_fn)(const char *v);

struct key {
        const char *name;
        enum kind kind;
        size_t off;      /* offsetof(struct config, field) */
        double min, max; /* K_INT, K_DURATION (s), K_NUMBER, K_SIZE (bytes) */
        const char *def; /* default text; NULL: computed in config_defaults() */
        check_fn check;  /* K_STRING */
};

/* Where a layer set a key, for errors found after all layers. */
struct origin {
        const char *file; /* NULL: not set by any layer */
        int line;
};

static const char *check_listen(const char *v);
static const char *check_dir(const char *v);
static const char *check_store(const char *v);
static const char *check_origins(const char *v);
static const char *check_hosts(const char *v);
static const char *check_accept(const char *v);
static const char *check_node_id(const char *v);
static const char *check_node_url(const char *v);
static const char *check_user_agent(const char *v);
static const char *check_proxy(const char *v);

/* clang-format off */
#define K(n, k, f, lo, hi, d, chk) {n, k, offsetof(struct config, f), lo, hi, d, chk}
#define KIB 1024.0
#define GIB (KIB * KIB * KIB)
#define TIB (GIB * KIB)
#define DAY 86400.0

static const struct key keys[] = {
        K("MAX_CONCURRENT_SOURCES", K_INT, max_concurrent_sources, 1, 1000, "5", NULL),
        K("SOURCE_TIMEOUT", K_DURATION, source_timeout, 1, DAY, "30", NULL),
        K("GLOBAL_JOB_TIMEOUT", K_DURATION, global_job_timeout, 1, DAY, "300", NULL),
        K("REQUEST_TIMEOUT", K_DURATION, request_timeout, 0.1, 3600, "15", NULL),
        K("MAX_RETRIES_PER_SOURCE", K_INT, max_retries_per_source, 0, 100, "3", NULL),
        K("MAX_RETRIES_PER_ITEM", K_INT, max_retries_per_item, 0, 100, "2", NULL),
        K("MIN_DOWNLOAD_SPEED", K_SIZE, min_download_speed, 0, GIB, "1024", NULL),
        K("STALL_TIMEOUT", K_DURATION, stall_timeout, 1, 3600, "30", NULL),
        K("CIRCUIT_BREAKER_THRESHOLD", K_INT, circuit_breaker_threshold, 1, 10000, "5", NULL),
        K("CIRCUIT_BREAKER_TIMEOUT", K_DURATION, circuit_breaker_timeout, 0.1, DAY, "60", NULL),
        K("LISTEN", K_STRING, listen, 0, 0, "127.0.0.1:8080", check_listen),
        K("STATE_DIR", K_STRING, state_dir, 0, 0, NULL, check_dir),
        K("STORE", K_STRING, store, 0, 0, NULL, check_store),
        K("DOWNLOAD_DIR", K_STRING, download_dir, 0, 0, NULL, check_dir),
        K("SOURCES_DIR", K_STRING, sources_dir, 0, 0, "/etc/hauld/sources.d", check_dir),
        K("API_TOKEN_FILE", K_OPTPATH, api_token_file, 0, 0, NULL, NULL),
        K("CORS_ORIGINS", K_STRING, cors_origins, 0, 0, "", check_origins),
        K("ALLOWED_HOSTS", K_STRING, allowed_hosts, 0, 0, "", check_hosts),
        K("MAX_CONCURRENT_DOWNLOADS", K_INT, max_concurrent_downloads, 1, 10000, "32", NULL),
        K("MAX_CONCURRENT_JOBS", K_INT, max_concurrent_jobs, 1, 10000, "32", NULL),
        K("NODE_ID", K_STRING, node_id, 0, 0, "", check_node_id),
        K("NODE_URL", K_STRING, node_url, 0, 0, "", check_node_url),
        K("LEASE_TIMEOUT", K_DURATION, lease_timeout, 3, 3600, "30", NULL),
        K("MAX_CONNECTIONS_PER_SOURCE", K_INT, max_connections_per_source, 1, 1000, "4", NULL),
        K("RETRY_BACKOFF_BASE", K_DURATION, retry_backoff_base, 0, 3600, "1", NULL),
        K("RETRY_BACKOFF_MAX", K_DURATION, retry_backoff_max, 0, DAY, "60", NULL),
        K("RETRY_JITTER", K_NUMBER, retry_jitter, 0, 1, "0.1", NULL),
        K("CIRCUIT_BREAKER_GROWTH", K_NUMBER, circuit_breaker_growth, 1, 10, "2", NULL),
        K("CIRCUIT_BREAKER_MAX_TIMEOUT", K_DURATION, circuit_breaker_max_timeout, 0.1, MAX_OPEN_FACTOR * DAY,
          NULL, NULL),
        K("MAX_FILE_SIZE", K_SIZE, max_file_size, 1, TIB, "2G", NULL),
        K("ACCEPT_CONTENT", K_STRING, accept_content, 0, 0, "image,video", check_accept),
        K("ALLOW_PRIVATE_ADDRESSES", K_BOOL, allow_private_addresses, 0, 0, "false", NULL),
        K("PROXY", K_STRING, proxy, 0, 0, "", check_proxy),
        K("PROXY_TRUSTED", K_BOOL, proxy_trusted, 0, 0, "false", NULL),
        K("USER_AGENT", K_STRING, user_agent, 0, 0, PACKAGE_NAME "/" PACKAGE_VERSION, check_user_agent),
        K("MAX_REQUEST_BODY", K_SIZE, max_request_body, KIB, GIB, "1M", NULL),
        K("API_THREADS", K_INT, api_threads, 1, 64, "4", NULL),
        K("API_MAX_CONNECTIONS", K_INT, api_max_connections, 16, 65536, "1024", NULL),
        K("API_MAX_CONNECTIONS_PER_IP", K_INT, api_max_connections_per_ip, 1, 65536, "64", NULL),
        K("API_HEADER_TIMEOUT", K_DURATION, api_header_timeout, 1, 300, "10", NULL),
        K("JOB_RETENTION", K_DURATION, job_retention, 0, 3650 * DAY, "7d", NULL),
        K("LOG_LEVEL", K_LEVEL, log_level, 0, 0, "info", NULL),
        K("LOG_FORMAT", K_FORMAT, log_format, 0, 0, "text", NULL),
        K("LOG_FILE_LINES", K_BOOL, log_file_lines, 0, 0, "true", NULL),
};
/* clang-format on */
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static int fail(struct config_error *e, const char *file, int line, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static int fail(struct config_error *e, const char *file, int line, const char *key, const char *fmt, ...)
{
        va_list ap;

        if (!e)
                return -EINVAL;
        snprintf(e->file, sizeof(e->file), "%s", file);
        e->line = line;
        snprintf(e->key, sizeof(e->key), "%s", key);
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static const struct key *find_key(const char *name)
{
        for (size_t i = 0; i < NKEYS; i++)
                if (strcmp(keys[i].name, name) == 0)
                        return &keys[i];
        return NULL;
}

static size_t key_index(const char *name) { return (size_t)(find_key(name) - keys); }

/* ---- value parsers: 0 ok, -EINVAL malformed, -ERANGE too large ---- */

static int parse_int(const char *v, long long *ret)
{
        const char *p = v + (*v == '-');
        char *end;
        long long n;

        if (!isdigit((unsigned char)*p))
                return -EINVAL;
        errno = 0;
        n = strtoll(v, &end, 10);
        if (*end)
                return -EINVAL;
        if (errno == ERANGE)
                return -ERANGE;
        *ret = n;
        return 0;
}

/* digits [. digits]: no sign, exponent, hex, inf or nan. Returns the
 * length of the number (0: none there). */
static size_t scan_decimal(const char *v)
{
        const char *p = v;
        size_t digits = 0;

        for (; isdigit((unsigned char)*p); p++)
                digits++;
        if (*p == '.')
                for (p++; isdigit((unsigned char)*p); p++)
                        digits++;
        return digits ? (size_t)(p - v) : 0;
}

static int parse_number(const char *v, double *ret)
{
        size_t n = scan_decimal(v);

        if (n == 0 || v[n])
                return -EINVAL;
        *ret = strtod(v, NULL);
        return 0;
}

/* a decimal [s|m|h|d] */
static int parse_duration(const char *v, double *ret)
{
        size_t n = scan_decimal(v);
        const char *p = v + n;
        double unit = 1;

        if (n == 0)
                return -EINVAL;
        switch (*p) {
        case '\0':
                break;
        case 's':
                unit = 1;
                break;
        case 'm':
                unit = 60;
                break;
        case 'h':
                unit = 3600;
                break;
        case 'd':
                unit = DAY;
                break;
        default:
                return -EINVAL;
        }
        if (*p && p[1])
                return -EINVAL;
        *ret = strtod(v, NULL) * unit;
        return 0;
}

/* digits [K|M|G|T], 1024-based */
static int parse_size(const char *v, int64_t *ret)
{
        static const char suffixes[] = "KMGT";
        unsigned long long n;
        char *end;
        int shift = 0;

        if (!isdigit((unsigned char)*v))
                return -EINVAL;
        errno = 0;
        n = strtoull(v, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end) {
                const char *s = strchr(suffixes, toupper((unsigned char)*end));
                if (!s || end[1])
                        return -EINVAL;
                shift = 10 * (int)(s - suffixes + 1);
        }
        if (n > ((unsigned long long)INT64_MAX >> shift))
                return -ERANGE;
        *ret = (int64_t)(n << shift);
        return 0;
}

static int parse_bool(const char *v, bool *ret)
{
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};

        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
                if (strcasecmp(v, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(v, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

/* ---- formatting ---- */

static void fmt_number(double d, char *buf, size_t n) { snprintf(buf, n, "%.15g", d); }

/* Largest suffix that divides exactly: 2147483648 -> "2G". */
static void fmt_size(int64_t b, char *buf, size_t n)
{
        static const char suffixes[] = "KMGT";
        int i = 0;

        while (b != 0 && i < 4 && b % 1024 == 0) {
                b /= 1024;
                i++;
        }
        if (i == 0)
                snprintf(buf, n, "%lld", (long long)b);
        else
                snprintf(buf, n, "%lld%c", (long long)b, suffixes[i - 1]);
}

static void range_text(const struct key *k, char *buf, size_t n)
{
        char lo[32], hi[32];

        switch (k->kind) {
        case K_INT:
                snprintf(buf, n, "must be an integer in %.0f..%.0f", k->min, k->max);
                break;
        case K_DURATION:
                fmt_number(k->min, lo, sizeof(lo));
                fmt_number(k->max, hi, sizeof(hi));
                snprintf(buf, n, "must be a number of seconds in %s..%s (suffix s, m, h or d allowed)", lo,
                         hi);
                break;
        case K_NUMBER:
                fmt_number(k->min, lo, sizeof(lo));
                fmt_number(k->max, hi, sizeof(hi));
                snprintf(buf, n, "must be a number in %s..%s", lo, hi);
                break;
        case K_SIZE:
                fmt_size((int64_t)k->min, lo, sizeof(lo));
                fmt_size((int64_t)k->max, hi, sizeof(hi));
                snprintf(buf, n, "must be a size in bytes in %s..%s (suffix K, M, G or T allowed)", lo, hi);
                break;
        case K_BOOL:
                snprintf(buf, n, "must be true or false (or yes/no, on/off, 1/0)");
                break;
        case K_LEVEL:
                snprintf(buf, n, "must be one of debug, info, warning, error");
                break;
        case K_FORMAT:
                snprintf(buf, n, "must be text or json");
                break;
        case K_STRING:
        case K_OPTPATH:
                snprintf(buf, n, "is invalid");
                break;
        }
}

/* ---- string checks ---- */

static bool valid_port(const char *p)
{
        size_t n = strlen(p);

        if (n == 0 || n > 5 || strspn(p, "0123456789") != n)
                return false;
        return atoi(p) <= 65535;
}

static bool valid_hostname(const char *s, size_t n)
{
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
                        return false;
        return true;
}

static bool valid_v6(const char *s, size_t n)
{
        char buf[INET6_ADDRSTRLEN + 32];
        struct in6_addr a;
        const char *zone = memchr(s, '%', n);

        if (zone)
                n = (size_t)(zone - s);
        if (n == 0 || n >= sizeof(buf))
                return false;
        memcpy(buf, s, n);
        buf[n] = '\0';
        return inet_pton(AF_INET6, buf, &a) == 1;
}

static const char *check_listen(const char *v)
{
        static const char msg[] = "must be host:port or [v6]:port (port 0..65535), or unix:/absolute/path";
        const char *colon;

        if (strncmp(v, "unix:", 5) == 0)
                return v[5] == '/' && strlen(v + 5) <= UNIX_PATH_MAX ? NULL : msg;
        if (*v == '[') {
                const char *end = strchr(v, ']');
                if (!end || end[1] != ':' || !valid_v6(v + 1, (size_t)(end - v - 1)))
                        return msg;
                return valid_port(end + 2) ? NULL : msg;
        }
        colon = strchr(v, ':');
        if (!colon || !valid_hostname(v, (size_t)(colon - v)))
                return msg;
        return valid_port(colon + 1) ? NULL : msg;
}

static bool valid_path(const char *v)
{
        if (v[0] != '/' || strlen(v) > DIR_MAX)
                return false;
        for (const char *p = v; *p; p++)
                if (iscntrl((unsigned char)*p))
                        return false;
        return true;
}

static const char *check_dir(const char *v)
{
        return valid_path(v) ? NULL : "must be an absolute path of at most 1024 bytes";
}

static const char *check_store(const char *v)
{
        if (strncmp(v, "sqlite:", 7) == 0 && valid_path(v + 7))
                return NULL;
        if (strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0)
                return NULL;
        return "must be sqlite:/absolute/path or postgresql://...";
}

/* Call ok() on each comma-separated entry, spaces around it trimmed and
 * empty entries skipped; the number of entries, or -1 if one is bad. */
static int each_entry(const char *v, bool (*ok)(const char *s, size_t n))
{
        int count = 0;

        while (*v) {
                size_t n = strcspn(v, ",");
                const char *s = v;
                size_t len = n;
                while (len > 0 && *s == ' ') {
                        s++;
                        len--;
                }
                while (len > 0 && s[len - 1] == ' ')
                        len--;
                if (len > 0) {
                        if (!ok(s, len))
                                return -1;
                        count++;
                }
                v += n + (v[n] == ',');
        }
        return count;
}

static bool valid_host_entry(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr(".-_:[]", s[i]))
                        return false;
        return true;
}

/* scheme://host[:port], no path */
static bool valid_origin(const char *s, size_t n)
{
        size_t skip;

        if (n > 7 && strncmp(s, "http://", 7) == 0)
                skip = 7;
        else if (n > 8 && strncmp(s, "https://", 8) == 0)
                skip = 8;
        else
                return false;
        return valid_host_entry(s + skip, n - skip);
}

static bool valid_media_type(const char *s, size_t n)
{
        static const char *const tops[] = {"any", "image", "video", "audio", "text", "application"};
        const char *slash = memchr(s, '/', n);

        for (size_t i = 0; i < sizeof(tops) / sizeof(tops[0]); i++)
                if (strlen(tops[i]) == n && strncmp(s, tops[i], n) == 0)
                        return true;
        if (!slash || slash == s || slash == s + n - 1)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr("/.+-_", s[i]))
                        return false;
        return memchr(slash + 1, '/', (size_t)(s + n - slash - 1)) == NULL;
}

static const char *check_origins(const char *v)
{
        return each_entry(v, valid_origin) < 0
                       ? "must be comma-separated origins like https://example.com:8443 (no path)"
                       : NULL;
}

static const char *check_hosts(const char *v)
{
        return each_entry(v, valid_host_entry) < 0 ? "must be comma-separated host names or addresses"
                                                   : NULL;
}

static const char *check_accept(const char *v)
{
        return each_entry(v, valid_media_type) < 1
                       ? "must be a comma-separated list of any, image, video, audio, text, application "
                         "or full types like application/pdf"
                       : NULL;
}

/* A node's name: what other nodes and the job table show; "" derives one. */
static const char *check_node_id(const char *v)
{
        size_t n = strlen(v);
        if (n > 64 || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != n)
                return "must be at most 64 of A-Z a-z 0-9 . - _ (empty: a name kept in STATE_DIR/node-id)";
        return NULL;
}

/* Where other nodes send a user for files this node holds. */
static const char *check_node_url(const char *v)
{
        size_t n = strlen(v);
        if (n == 0)
                return NULL;
        if (n > 512 || (!str_startswith(v, "http://") && !str_startswith(v, "https://")) ||
            strcspn(v, " \t\r\n\"<>") != n || v[n - 1] == '/')
                return "must be an http:// or https:// URL without a trailing slash, at most 512 bytes";
        return NULL;
}

/* Sent as a header value: printable ASCII, so no CR or LF can end the
 * line; no space at either end, which HTTP would trim. */
static const char *check_user_agent(const char *v)
{
        size_t n = strlen(v);

        for (size_t i = 0; i < n; i++)
                if (v[i] < 0x20 || v[i] > 0x7e)
                        n = 0;
        if (n < 1 || n > USER_AGENT_MAX || v[0] == ' ' || v[n - 1] == ' ')
                return "must be 1..256 printable ASCII characters, without control characters and not "
                       "starting or ending with a space";
        return NULL;
}

/* scheme://[user[:password]@]host[:port][/]: what libcurl takes as a
 * proxy, without a path; "" none. */
static const char *check_proxy(const char *v)
{
        static const char *const schemes[] = {"http://", "https://", "socks5h://"};
        size_t n = strlen(v), skip = 0;

        if (n == 0)
                return NULL;
        for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && !skip; i++)
                if (str_startswith(v, schemes[i]))
                        skip = strlen(schemes[i]);
        const char *host = v + skip;
        size_t len = strlen(host) - (n > skip && v[n - 1] == '/');
        const char *at = memrchr(host, '@', len);
        if (at) {
                len -= (size_t)(at + 1 - host);
                host = at + 1;
        }
        if (!skip || n > PROXY_MAX || strcspn(v, " \t\r\n\"<>") != n || !valid_host_entry(host, len) ||
            len == 0 || host[0] == ':')
                return "must be http://host:port, https://host:port or socks5h://host:port (user:password@ "
                       "allowed, no path), at most 512 bytes; empty: no proxy";
        return NULL;
}

/* ---- setting one key ---- */

static int set_string(char **field, const char *v)
{
        char *s = strdup(v);

        if (!s)
                return -ENOMEM;
        free(*field);
        *field = s;
        return 0;
}

static int set_number(struct config *c, const struct key *k, const char *v)
{
        void *p = (char *)c + k->off;
        long long i;
        int64_t b;
        double d;
        int r;

        switch (k->kind) {
        case K_INT:
                r = parse_int(v, &i);
                if (r < 0 || i < k->min || i > k->max)
                        return -EINVAL;
                *(int *)p = (int)i;
                return 0;
        case K_DURATION:
        case K_NUMBER:
                r = k->kind == K_DURATION ? parse_duration(v, &d) : parse_number(v, &d);
                if (r < 0 || d < k->min || d > k->max)
                        return -EINVAL;
                *(double *)p = d;
                return 0;
        case K_SIZE:
                r = parse_size(v, &b);
                if (r < 0 || b < k->min || b > k->max)
                        return -EINVAL;
                *(int64_t *)p = b;
                return 0;
        default:
                return -EINVAL;
        }
}

/* Parse v into k's field. On -EINVAL msg says what the value must be;
 * the field is changed only on success. */
static int set_key(struct config *c, const struct key *k, const char *v, char *msg, size_t msgsz)
{
        void *p = (char *)c + k->off;
        enum log_level level;
        enum log_format format;
        const char *bad;
        bool b;

        if (strlen(v) > VALUE_MAX) {
                snprintf(msg, msgsz, "must be at most %d bytes", VALUE_MAX);
                return -EINVAL;
        }
        switch (k->kind) {
        case K_BOOL:
                if (parse_bool(v, &b) < 0)
                        break;
                *(bool *)p = b;
                return 0;
        case K_LEVEL:
                if (log_level_parse(v, &level) < 0)
                        break;
                *(int *)p = (int)level;
                return 0;
        case K_FORMAT:
                if (log_format_parse(v, &format) < 0)
                        break;
                *(int *)p = (int)format;
                return 0;
        case K_STRING:
                bad = k->check ? k->check(v) : NULL;
                if (bad) {
                        snprintf(msg, msgsz, "%s", bad);
                        return -EINVAL;
                }
                return set_string(p, v);
        case K_OPTPATH:
                if (!*v) {
                        free(*(char **)p);
                        *(char **)p = NULL;
                        return 0;
                }
                if (!valid_path(v)) {
                        snprintf(msg, msgsz,
                                 "must be an absolute path of at most %d bytes, or empty for none", DIR_MAX);
                        return -EINVAL;
                }
                return set_string(p, v);
        default:
                if (set_number(c, k, v) == 0)
                        return 0;
                break;
        }
        range_text(k, msg, msgsz);
        return -EINVAL;
}

/* set_key() from a layer: errors name file and line; org records it. */
static int apply(struct config *c, const struct key *k, const char *v, const char *file, int line,
                 struct origin *org, struct config_error *err)
{
        char msg[sizeof(err->message)];
        int r = set_key(c, k, v, msg, sizeof(msg));

        if (r == -EINVAL)
                return fail(err, file, line, k->name, "%s", msg);
        if (r < 0) {
                fail(err, file, line, k->name, "%s", strerror(-r));
                return r;
        }
        org[k - keys] = (struct origin){file, line};
        return 0;
}

int config_set(struct config *c, const char *key, const char *value, struct config_error *ret_err)
{
        const struct key *k = find_key(key);
        char msg[sizeof(ret_err->message)];
        int r;

        if (!k)
                return fail(ret_err, "", 0, key, "unknown key");
        r = set_key(c, k, value, msg, sizeof(msg));
        if (r < 0)
                fail(ret_err, "", 0, key, "%s", r == -EINVAL ? msg : strerror(-r));
        return r;
}

/* ---- defaults and derived paths ---- */

/* field = prefix + dir + "/" + leaf, without doubling dir's trailing '/' */
static int derive(char **field, const char *prefix, const char *dir, const char *leaf)
{
        size_t n = strlen(dir), len;
        char *s;

        while (n > 0 && dir[n - 1] == '/')
                n--;
        len = strlen(prefix) + n + strlen(leaf) + 2;
        s = malloc(len);
        if (!s)
                return -ENOMEM;
        snprintf(s, len, "%s%.*s/%s", prefix, (int)n, dir, leaf);
        free(*field);
        *field = s;
        return 0;
}

/* $STATE_DIRECTORY may list several directories separated by ':'. */
static int default_state_dir(struct config *c)
{
        const char *env = getenv("STATE_DIRECTORY");
        size_t n = env ? strcspn(env, ":") : 0;
        char *s;

        if (n == 0 || env[0] != '/' || n > DIR_MAX)
                return set_string(&c->state_dir, DEFAULT_STATE_DIR);
        s = strndup(env, n);
        if (!s)
                return -ENOMEM;
        free(c->state_dir);
        c->state_dir = s;
        return 0;
}

static int default_token_file(struct config *c)
{
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        char *path = NULL;
        int r;

        if (!dir || dir[0] != '/')
                return 0;
        r = derive(&path, "", dir, "api-token");
        if (r < 0)
                return r;
        if (!valid_path(path) || access(path, F_OK) < 0) {
                free(path);
                return 0;
        }
        free(c->api_token_file);
        c->api_token_file = path;
        return 0;
}

int config_defaults(struct config *c)
{
        char msg[256];
        int r = 0;

        memset(c, 0, sizeof(*c));
        for (size_t i = 0; i < NKEYS; i++) {
                if (!keys[i].def)
                        continue;
                r = set_key(c, &keys[i], keys[i].def, msg, sizeof(msg));
                if (r < 0)
                        goto fail;
        }
        r = default_state_dir(c);
        if (r < 0)
                goto fail;
        r = default_token_file(c);
        if (r < 0)
                goto fail;
        c->circuit_breaker_max_timeout = MAX_OPEN_FACTOR * c->circuit_breaker_timeout;
        r = derive(&c->store, "sqlite:", c->state_dir, "jobs.db");
        if (r < 0)
                goto fail;
        r = derive(&c->download_dir, "", c->state_dir, "downloads");
        if (r < 0)
                goto fail;
        return 0;
fail:
        config_free(c);
        return r;
}

/* ---- the layers ---- */

static char *trim(char *s)
{
        size_t n;

        while (isspace((unsigned char)*s))
                s++;
        n = strlen(s);
        while (n > 0 && isspace((unsigned char)s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* Strip one pair of quotes in place; inside "..." a backslash escapes the
 * next character. -EINVAL for an unclosed quote or text after it. */
static int unquote(char *v)
{
        char q = *v, *w = v;

        if (q != '"' && q != '\'')
                return 0;
        for (char *r = v + 1; *r; r++) {
                if (*r == q) {
                        *w = '\0';
                        return r[1] ? -EINVAL : 0;
                }
                if (q == '"' && *r == '\\' && r[1])
                        r++;
                *w++ = *r;
        }
        return -EINVAL;
}

static int load_line(struct config *c, char *s, const char *file, int line, struct origin *org,
                     struct config_error *err)
{
        const struct key *k;
        char *eq, *key, *value;

        if (line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
                s += 3;
        s = trim(s);
        if (*s == '\0' || *s == '#' || *s == ';')
                return 0;
        if (strncmp(s, "export", 6) == 0 && (s[6] == ' ' || s[6] == '\t'))
                s += 7;
        eq = strchr(s, '=');
        if (!eq)
                return fail(err, file, line, "", "expected KEY=VALUE");
        *eq = '\0';
        key = trim(s);
        value = trim(eq + 1);
        k = find_key(key);
        if (!k)
                return fail(err, file, line, key, "unknown key");
        if (unquote(value) < 0)
                return fail(err, file, line, key, "unbalanced quotes (or text after the closing quote)");
        return apply(c, k, value, file, line, org, err);
}

/* ---- reading a settings file ---- */

static const char *file_kind(mode_t m)
{
        if (S_ISDIR(m))
                return "a directory";
        if (S_ISFIFO(m))
                return "a FIFO";
        if (S_ISCHR(m))
                return "a character device";
        if (S_ISBLK(m))
                return "a block device";
        if (S_ISSOCK(m))
                return "a socket";
        return "of another kind";
}

static bool is_null_device(const struct stat *st)
{
        struct stat null;

        return S_ISCHR(st->st_mode) && stat("/dev/null", &null) == 0 && S_ISCHR(null.st_mode) &&
               st->st_rdev == null.st_rdev;
}

/* Why st is no file to read at most max bytes of, or NULL. */
static const char *unreadable(const struct stat *st, size_t max, char *msg, size_t msgsz)
{
        if (S_ISDIR(st->st_mode))
                snprintf(msg, msgsz, "is a directory");
        else if (!S_ISREG(st->st_mode))
                snprintf(msg, msgsz, "is not a regular file (it is %s)", file_kind(st->st_mode));
        else if ((uintmax_t)st->st_size > max)
                snprintf(msg, msgsz, "is larger than %zu bytes", max);
        else
                return NULL;
        return msg;
}

/* Read the regular file path (at most max bytes) whole into a
 * NUL-terminated buffer. What it is gets checked before it is opened (a
 * FIFO or a device is never opened) and again on the open file, which is
 * opened without blocking. The null device reads as empty. On -EINVAL, msg
 * says why, to follow the file's name ("is a directory"). */
static int read_small_file(const char *path, size_t max, char **ret, size_t *ret_len, char *msg,
                           size_t msgsz)
{
        struct stat st;
        char *buf = NULL;
        size_t len = 0;
        ssize_t n;
        int fd = -1, r = -EINVAL;

        if (stat(path, &st) < 0) {
                snprintf(msg, msgsz, "cannot be opened: %s", strerror(errno));
                return -EINVAL;
        }
        if (!is_null_device(&st) && unreadable(&st, max, msg, msgsz))
                return -EINVAL;
        if (!(buf = malloc(max + 1)))
                return -ENOMEM;
        if (is_null_device(&st))
                goto done;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
                snprintf(msg, msgsz, "cannot be opened: %s", strerror(errno));
                goto fail;
        }
        if (fstat(fd, &st) < 0 || unreadable(&st, max, msg, msgsz)) /* replaced since stat() */
                goto fail;
        while ((n = read(fd, buf + len, max + 1 - len)) != 0) {
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        snprintf(msg, msgsz, "cannot be read: %s", strerror(errno));
                        goto fail;
                }
                len += (size_t)n;
                if (len > max) { /* grew since fstat() */
                        snprintf(msg, msgsz, "is larger than %zu bytes", max);
                        goto fail;
                }
        }
        close(fd);
done:
        buf[len] = '\0';
        *ret = buf;
        *ret_len = len;
        return 0;
fail:
        if (fd >= 0)
                close(fd);
        explicit_bzero(buf, max + 1);
        free(buf);
        return r;
}

static int load_file(struct config *c, const char *path, struct origin *org, struct config_error *err)
{
        char msg[sizeof(err->message)], *buf = NULL, *s, *end;
        size_t len;
        int line = 0, r;

        r = read_small_file(path, CONFIG_FILE_MAX, &buf, &len, msg, sizeof(msg));
        if (r == -EINVAL)
                return fail(err, path, 0, "", "%s", msg);
        if (r < 0)
                return r;
        end = buf + len;
        for (s = buf; s < end;) {
                char *nl = memchr(s, '\n', (size_t)(end - s));
                if (!nl)
                        nl = end; /* the buffer's NUL */
                line++;
                if (memchr(s, '\0', (size_t)(nl - s))) {
                        r = fail(err, path, line, "", "contains a NUL byte");
                        goto out;
                }
                *nl = '\0';
                r = load_line(c, s, path, line, org, err);
                if (r < 0)
                        goto out;
                s = nl + 1;
        }
out:
        free(buf);
        return r;
}

/* Only the known keys: the environment holds much else. */
static int load_env(struct config *c, struct origin *org, struct config_error *err)
{
        for (size_t i = 0; i < NKEYS; i++) {
                const char *v = getenv(keys[i].name);
                if (!v)
                        continue;
                int r = apply(c, &keys[i], v, "environment", 0, org, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int load_flags(struct config *c, char *const *flags, int nflags, struct origin *org,
                      struct config_error *err)
{
        for (int i = 0; i < nflags; i++) {
                const char *eq = strchr(flags[i], '=');
                char name[64];
                const struct key *k;

                if (!eq)
                        return fail(err, "command line", 0, "", "expected KEY=VALUE, got \"%.100s\"",
                                    flags[i]);
                snprintf(name, sizeof(name), "%.*s", (int)(eq - flags[i]), flags[i]);
                k = find_key(name);
                if (!k || (size_t)(eq - flags[i]) >= sizeof(name))
                        return fail(err, "command line", 0, name, "unknown key");
                int r = apply(c, k, eq + 1, "command line", 0, org, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- after all layers ---- */

static int read_token(struct config *c, const struct origin *o, struct config_error *err)
{
        const char *file = o->file ? o->file : "";
        const char *path = c->api_token_file;
        char msg[sizeof(err->message)], *buf = NULL;
        size_t size, len, start = 0;
        int r;

        r = read_small_file(path, TOKEN_MAX, &buf, &size, msg, sizeof(msg));
        if (r == -EINVAL)
                return fail(err, file, o->line, "API_TOKEN_FILE", "%s %s", path, msg);
        if (r < 0)
                return r;
        len = size;
        while (len > 0 && isspace((unsigned char)buf[len - 1]))
                len--;
        while (start < len && isspace((unsigned char)buf[start]))
                start++;
        if (start == len) {
                r = fail(err, file, o->line, "API_TOKEN_FILE", "%s is empty", path);
                goto fail;
        }
        for (size_t i = start; i < len; i++)
                if (buf[i] <= ' ' || buf[i] > '~') {
                        r = fail(err, file, o->line, "API_TOKEN_FILE",
                                 "%s must hold one token of printable ASCII without spaces", path);
                        goto fail;
                }
        memmove(buf, buf + start, len - start);
        explicit_bzero(buf + len - start, size - (len - start));
        c->api_token = buf;
        return 0;
fail:
        explicit_bzero(buf, size);
        free(buf);
        return r;
}

/* The first retry delay may not exceed the cap; blame the key a layer set. */
static int check_backoff(const struct config *c, const struct origin *org, struct config_error *err)
{
        const struct origin *ob = &org[key_index("RETRY_BACKOFF_BASE")];
        const struct origin *om = &org[key_index("RETRY_BACKOFF_MAX")];
        char num[32];

        if (c->retry_backoff_base <= c->retry_backoff_max)
                return 0;
        if (om->file) {
                fmt_number(c->retry_backoff_base, num, sizeof(num));
                return fail(err, om->file, om->line, "RETRY_BACKOFF_MAX",
                            "must be at least RETRY_BACKOFF_BASE (%s)", num);
        }
        fmt_number(c->retry_backoff_max, num, sizeof(num));
        return fail(err, ob->file ? ob->file : "", ob->line, "RETRY_BACKOFF_BASE",
                    "must be at most RETRY_BACKOFF_MAX (%s)", num);
}

/* A circuit's open time may grow, never shrink: CIRCUIT_BREAKER_MAX_TIMEOUT
 * follows CIRCUIT_BREAKER_TIMEOUT unless a layer set it, and is then at
 * least that. */
static int check_max_open(struct config *c, const struct origin *org, struct config_error *err)
{
        const struct origin *om = &org[key_index("CIRCUIT_BREAKER_MAX_TIMEOUT")];
        char num[32];

        if (!om->file) {
                c->circuit_breaker_max_timeout = MAX_OPEN_FACTOR * c->circuit_breaker_timeout;
                return 0;
        }
        if (c->circuit_breaker_max_timeout >= c->circuit_breaker_timeout)
                return 0;
        fmt_number(c->circuit_breaker_timeout, num, sizeof(num));
        return fail(err, om->file, om->line, "CIRCUIT_BREAKER_MAX_TIMEOUT",
                    "must be at least CIRCUIT_BREAKER_TIMEOUT (%s)", num);
}

/* microhttpd shares API_MAX_CONNECTIONS out among its threads: each gets
 * at least CONNS_PER_THREAD. Blames the key a layer set. */
static int check_api_threads(const struct config *c, const struct origin *org, struct config_error *err)
{
        const struct origin *ot = &org[key_index("API_THREADS")];
        const struct origin *oc = &org[key_index("API_MAX_CONNECTIONS")];

        if (c->api_max_connections >= CONNS_PER_THREAD * c->api_threads)
                return 0;
        if (ot->file)
                return fail(err, ot->file, ot->line, "API_THREADS",
                            "must be at most API_MAX_CONNECTIONS / %d (%d)", CONNS_PER_THREAD,
                            c->api_max_connections / CONNS_PER_THREAD);
        return fail(err, oc->file ? oc->file : "", oc->line, "API_MAX_CONNECTIONS",
                    "must be at least %d per API thread (%d for API_THREADS=%d)", CONNS_PER_THREAD,
                    CONNS_PER_THREAD * c->api_threads, c->api_threads);
}

/* Derived paths, checks across keys and the token, once all layers ran. */
static int finish(struct config *c, const struct origin *org, struct config_error *err)
{
        int r;

        if (!org[key_index("STORE")].file) {
                r = derive(&c->store, "sqlite:", c->state_dir, "jobs.db");
                if (r < 0)
                        return r;
        }
        if (!org[key_index("DOWNLOAD_DIR")].file) {
                r = derive(&c->download_dir, "", c->state_dir, "downloads");
                if (r < 0)
                        return r;
        }
        r = check_backoff(c, org, err);
        if (r < 0)
                return r;
        r = check_max_open(c, org, err);
        if (r >= 0)
                r = check_api_threads(c, org, err);
        if (r < 0)
                return r;
        if (c->api_token_file)
                return read_token(c, &org[key_index("API_TOKEN_FILE")], err);
        return 0;
}

int config_load(struct config *c, const char *config_file, char *const *flags, int nflags,
                struct config_error *ret_err)
{
        struct origin org[NKEYS] = {{0}};
        const char *path = config_file;
        int r;

        r = config_defaults(c);
        if (r < 0) {
                fail(ret_err, "", 0, "", "out of memory");
                return r;
        }
        if (!path && (access(CONFIG_DEFAULT_FILE, F_OK) == 0 || errno != ENOENT))
                path = CONFIG_DEFAULT_FILE;
        if (path) {
                r = load_file(c, path, org, ret_err);
                if (r < 0)
                        goto fail;
                r = set_string(&c->config_file, path);
                if (r < 0)
                        goto fail;
        }
        r = load_env(c, org, ret_err);
        if (r < 0)
                goto fail;
        r = load_flags(c, flags, nflags, org, ret_err);
        if (r < 0)
                goto fail;
        r = finish(c, org, ret_err);
        if (r < 0)
                goto fail;
        return 0;
fail:
        if (r == -ENOMEM)
                fail(ret_err, path ? path : "", 0, "", "out of memory");
        config_free(c);
        return r;
}

int config_check_sources_dir(const struct config *c, struct config_error *ret_err)
{
        struct stat st;

        if (stat(c->sources_dir, &st) < 0) {
                if (errno == ENOENT)
                        return fail(ret_err, "", 0, "SOURCES_DIR",
                                    "%s does not exist (an empty directory means no query sources)",
                                    c->sources_dir);
                return fail(ret_err, "", 0, "SOURCES_DIR", "%s cannot be opened: %s", c->sources_dir,
                            strerror(errno));
        }
        if (!S_ISDIR(st.st_mode))
                return fail(ret_err, "", 0, "SOURCES_DIR", "%s is not a directory", c->sources_dir);
        return 0;
}

/* ---- reloading ---- */

/* What a running daemon cannot change: its listener, the listener's
 * threads and limits (microhttpd takes them at start), and where state
 * lives (the job table and the download directory are opened at start). */
static const char *const restart_keys[] = {
        "LISTEN",
        "STATE_DIR",
        "STORE",
        "DOWNLOAD_DIR",
        "API_THREADS",
        "API_MAX_CONNECTIONS",
        "API_MAX_CONNECTIONS_PER_IP",
};
_Static_assert(sizeof(restart_keys) / sizeof(restart_keys[0]) <= CONFIG_RESTART_KEYS_MAX,
               "CONFIG_RESTART_KEYS_MAX is too small");

bool config_needs_restart(const char *key)
{
        for (size_t i = 0; i < sizeof(restart_keys) / sizeof(restart_keys[0]); i++)
                if (strcmp(restart_keys[i], key) == 0)
                        return true;
        return false;
}

static bool same_value(const struct config *a, const struct config *b, const struct key *k)
{
        const void *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
        const char *sa, *sb;

        switch (k->kind) {
        case K_INT:
        case K_LEVEL:
        case K_FORMAT:
                return *(const int *)pa == *(const int *)pb;
        case K_DURATION:
        case K_NUMBER:
                return *(const double *)pa == *(const double *)pb;
        case K_SIZE:
                return *(const int64_t *)pa == *(const int64_t *)pb;
        case K_BOOL:
                return *(const bool *)pa == *(const bool *)pb;
        case K_STRING:
        case K_OPTPATH:
                sa = *(char *const *)pa;
                sb = *(char *const *)pb;
                return sa == sb || (sa && sb && strcmp(sa, sb) == 0);
        }
        return false;
}

/* to's field of k takes from's value. */
static int copy_value(struct config *to, const struct config *from, const struct key *k)
{
        void *pt = (char *)to + k->off;
        const void *pf = (const char *)from + k->off;
        char *s = NULL;

        switch (k->kind) {
        case K_STRING:
        case K_OPTPATH:
                if (*(char *const *)pf && !(s = strdup(*(char *const *)pf)))
                        return -ENOMEM;
                free(*(char **)pt);
                *(char **)pt = s;
                return 0;
        case K_INT:
        case K_LEVEL:
        case K_FORMAT:
                *(int *)pt = *(const int *)pf;
                return 0;
        case K_DURATION:
        case K_NUMBER:
                *(double *)pt = *(const double *)pf;
                return 0;
        case K_SIZE:
                *(int64_t *)pt = *(const int64_t *)pf;
                return 0;
        case K_BOOL:
                *(bool *)pt = *(const bool *)pf;
                return 0;
        }
        return -EINVAL;
}

int config_merge_reload(const struct config *running, struct config *next,
                        const char *ret_kept[CONFIG_RESTART_KEYS_MAX], size_t *ret_nkept)
{
        const char *kept[CONFIG_RESTART_KEYS_MAX];
        size_t n = 0;

        for (size_t i = 0; i < NKEYS; i++) {
                if (!config_needs_restart(keys[i].name) || same_value(running, next, &keys[i]))
                        continue;
                int r = copy_value(next, running, &keys[i]);
                if (r < 0)
                        return r;
                kept[n++] = keys[i].name;
        }
        memcpy(ret_kept, kept, n * sizeof(kept[0]));
        *ret_nkept = n;
        return 0;
}

/* ---- showing ---- */

/* The STORE or PROXY URL with any password replaced by "***": the user-info
 * password (scheme://user:pw@host) and a password=... parameter. */
static void mask_url(const char *v, char *buf, size_t n)
{
        const char *auth = strstr(v, "://");
        const char *at, *colon;
        char *pw;
        size_t len;

        if (!auth) {
                snprintf(buf, n, "%s", v);
                return;
        }
        auth += 3;
        len = strcspn(auth, "/?#");
        at = NULL;
        for (size_t i = 0; i < len; i++) /* the last '@': a password may hold one */
                if (auth[i] == '@')
                        at = auth + i;
        colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon)
                snprintf(buf, n, "%.*s***%s", (int)(colon + 1 - v), v, at);
        else
                snprintf(buf, n, "%s", v);
        pw = strstr(buf, "password=");
        if (pw) {
                char rest[VALUE_MAX + 64];
                pw += 9;
                snprintf(rest, sizeof(rest), "%s", pw + strcspn(pw, "&#"));
                snprintf(pw, n - (size_t)(pw - buf), "***%s", rest);
        }
}

static void format_value(const struct config *c, const struct key *k, char *buf, size_t n)
{
        const void *p = (const char *)c + k->off;
        const char *s;

        switch (k->kind) {
        case K_INT:
                snprintf(buf, n, "%d", *(const int *)p);
                break;
        case K_DURATION:
        case K_NUMBER:
                fmt_number(*(const double *)p, buf, n);
                break;
        case K_SIZE:
                fmt_size(*(const int64_t *)p, buf, n);
                break;
        case K_BOOL:
                snprintf(buf, n, "%s", *(const bool *)p ? "true" : "false");
                break;
        case K_LEVEL:
                snprintf(buf, n, "%s", log_level_name((enum log_level) * (const int *)p));
                break;
        case K_FORMAT:
                snprintf(buf, n, "%s", log_format_name((enum log_format) * (const int *)p));
                break;
        case K_STRING:
        case K_OPTPATH:
                s = *(char *const *)p;
                if ((k->check == check_store || k->check == check_proxy) && s)
                        mask_url(s, buf, n);
                else
                        snprintf(buf, n, "%s", s ? s : "");
                break;
        }
}

void config_foreach(const struct config *c, void (*fn)(const char *key, const char *value, void *ud),
                    void *ud)
{
        char buf[VALUE_MAX + 64];

        for (size_t i = 0; i < NKEYS; i++) {
                format_value(c, &keys[i], buf, sizeof(buf));
                fn(keys[i].name, buf, ud);
        }
}

void config_free(struct config *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < NKEYS; i++)
                if (keys[i].kind == K_STRING || keys[i].kind == K_OPTPATH)
                        free(*(char **)((char *)c + keys[i].off));
        if (c->api_token)
                explicit_bzero(c->api_token, strlen(c->api_token));
        free(c->api_token);
        free(c->config_file);
        memset(c, 0, sizeof(*c));
}

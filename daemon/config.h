/* Settings: defaults, then the KEY=VALUE file, then the environment, then
 * command-line flags (later wins). See ../docs/configuration.md.
 * int returns: 0 ok, -errno on failure; config_load() reports the exact
 * problem through ret_err. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_EXIT_BAD         78      /* EX_CONFIG */
#define CONFIG_FILE_MAX         1048576 /* bytes of the settings file */
#define CONFIG_RESTART_KEYS_MAX 8       /* keys a reload cannot change (config_merge_reload()) */

struct config {
        /* download settings, names as existing deployments use them */
        int max_concurrent_sources;     /* (job, source) units at once, 1..1000 */
        double source_timeout;          /* s, 1..86400 */
        double global_job_timeout;      /* s, 1..86400: default job timeout */
        double request_timeout;         /* s, 0.1..3600: connect, first byte, between bytes */
        int max_retries_per_source;     /* 0..100: retries of a listing request */
        int max_retries_per_item;       /* 0..100: retries of a download after the first attempt */
        int64_t min_download_speed;     /* bytes/s, 0..1G (0: no stall check) */
        double stall_timeout;           /* s, 1..3600 */
        int circuit_breaker_threshold;  /* consecutive counted failures, 1..10000 */
        double circuit_breaker_timeout; /* s open before a half-open probe, 0.1..86400 */

        char *listen; /* "host:port", "[v6]:port" or "unix:/path" */
        char *state_dir;
        char *store; /* "sqlite:/path" */
        char *download_dir;
        char *sources_dir;
        char *api_token_file;           /* NULL: none ("" in any layer sets none) */
        char *api_token;                /* read from api_token_file; never logged */
        char *cors_origins;             /* comma-separated, "" none */
        char *allowed_hosts;            /* comma-separated, "" none */
        int max_concurrent_downloads;   /* 1..10000 */
        int max_concurrent_jobs;        /* jobs running at once, 1..10000 */
        char *node_id;                  /* this node's name in a shared job table; "": STATE_DIR/node-id */
        char *node_url;                 /* where other nodes reach this node's API; "": from LISTEN */
        double lease_timeout;           /* s a claimed job stays this node's without a renewal, 3..3600 */
        int max_connections_per_source; /* 1..1000 */
        double retry_backoff_base;      /* s, 0..3600 */
        double retry_backoff_max;       /* s, 0..86400 */
        double retry_jitter;            /* fraction 0..1: a retry delay d is spread over d*(1 +- j) */
        double circuit_breaker_growth;  /* 1..10: factor of the open time after each failed probe */
        double circuit_breaker_max_timeout; /* s, 0.1..8d, >= circuit_breaker_timeout: cap of a grown
                                               open time; default 8 x circuit_breaker_timeout */
        int64_t max_file_size;              /* bytes, 1..1T */
        char *accept_content;               /* "image,video", "any", ... */
        bool allow_private_addresses;
        char *proxy;        /* every request goes through this proxy URL (http, https, socks5h); "" none */
        bool proxy_trusted; /* the proxy enforces the egress policy (needed for PROXY when private
                               addresses are refused: hauld sees only the proxy's address) */
        char *user_agent;   /* User-Agent of every request: 1..256 printable ASCII */
        int64_t max_request_body; /* bytes, 1K..1G */
        int api_threads;          /* microhttpd pool threads, 1..64 */
        int api_max_connections;  /* open API connections, 16..65536 (fewer when RLIMIT_NOFILE is low) */
        int api_max_connections_per_ip; /* open API connections from one address, 1..65536 */
        double api_header_timeout;      /* s a request has to send all of its headers, 1..300 */
        double job_retention;           /* s, 0..10 years; 0 keeps forever */
        int log_level;                  /* enum log_level */
        int log_format;                 /* enum log_format: text or json lines */
        bool log_file_lines;            /* DOWNLOADING and SUCCESS per file at info (false: at debug) */

        char *config_file; /* the file read, or NULL */
};

/* One problem with the settings, for the message and exit status 78. */
struct config_error {
        char file[256]; /* the file, "environment", "command line" or "" */
        int line;       /* 0 when not from a file */
        char key[64];
        char message[256]; /* e.g. "must be an integer in 1..1000" */
};

/* Defaults only (state_dir from $STATE_DIRECTORY or /var/lib/hauld, ...).
 * Overwrites *c without freeing it. */
int config_defaults(struct config *c);
/* Full load: defaults, config_file (NULL: /etc/hauld/hauld.conf if it exists),
 * environment (only the known keys), then flags given as "KEY=VALUE" strings.
 * The file (at most CONFIG_FILE_MAX bytes) and API_TOKEN_FILE (4096) must
 * be regular files, or symlinks to one; the null device reads as an empty
 * file. Anything else is refused before it is opened, so a FIFO or a device
 * never blocks or streams.
 * Derived paths (STORE, DOWNLOAD_DIR) follow STATE_DIR unless set, and
 * CIRCUIT_BREAKER_MAX_TIMEOUT follows CIRCUIT_BREAKER_TIMEOUT unless set. Reads
 * API_TOKEN_FILE. On error fills *ret_err, leaves *c freed (zeroed) and
 * returns -EINVAL (-ENOMEM when out of memory). */
int config_load(struct config *c, const char *config_file, char *const *flags, int nflags,
                struct config_error *ret_err);
/* Is SOURCES_DIR an existing directory (empty is fine)? -EINVAL with
 * *ret_err naming it and why not. */
int config_check_sources_dir(const struct config *c, struct config_error *ret_err);
/* Does a change of key take a restart (the listener, its threads and
 * limits, where state lives)? */
bool config_needs_restart(const char *key);
/* The settings in effect after a reload: next, read anew, gets running's
 * value of every key that needs a restart. The names of those whose value
 * in next differed (static strings, config_foreach() order) go to
 * ret_kept, their number to *ret_nkept. -ENOMEM leaves next half merged:
 * free it. */
int config_merge_reload(const struct config *running, struct config *next,
                        const char *ret_kept[CONFIG_RESTART_KEYS_MAX], size_t *ret_nkept);
/* Set one key from a string (used by load and tests); *c is unchanged on
 * error. Does not re-derive STORE/DOWNLOAD_DIR/CIRCUIT_BREAKER_MAX_TIMEOUT,
 * check keys against each other or read the token file. */
int config_set(struct config *c, const char *key, const char *value, struct config_error *ret_err);
/* Visit every key with its effective value as text; secrets are "***". */
void config_foreach(const struct config *c, void (*fn)(const char *key, const char *value, void *ud),
                    void *ud);
void config_free(struct config *c);

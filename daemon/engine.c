/* engine: the transfer engine, libcurl multi transfers into part files.
 * Everything here runs on the scheduler's thread.
 *
 * Owns: the CURLM handle, every easy handle (finished ones are reset and
 * kept for reuse, up to SPARE_HANDLES) and the part file of each transfer.
 *
 * A body goes to ".N.part" in the directory it lands in. Nothing is
 * written until the answer is 2xx and its first CONTENT_SNIFF_BYTES (the
 * whole body when shorter) sniff as a type ACCEPT_CONTENT lets through;
 * the SHA-256 is taken as bytes are written. Write-back is started every
 * WRITEBACK_EVERY bytes (sync_file_range, never waited for), but the
 * engine flushes nothing: a finished part is handed over open
 * (xfer_result.part_fd) and the committer (commit.c) flushes and renames
 * it. Listing pages (to_memory) stay in memory, unsniffed, up to
 * MEMORY_BODY_MAX bytes.
 *
 * Resuming: a part's validator (the answer's strong ETag, else its
 * Last-Modified) is kept in the part's user.hauld.validator extended
 * attribute. A transfer cut short by a retryable fault (rate limiting
 * aside), or stopped with engine_abort_keep(), leaves its part; the next
 * attempt on it asks for the rest with Range and If-Range, and appends
 * only a 206 that starts where the part ends, after hashing and sniffing
 * what the part already holds. A 200 starts the part over; a 206 from
 * elsewhere fails the attempt as truncated and a 416 drops the part, so
 * the next attempt starts from zero. Other failures and plain aborts
 * remove the part; a complete body loses the attribute.
 *
 * Timeouts other than connect are judged in the progress callback, so
 * that each fault has its own error class (timeout, stalled, too_large)
 * instead of curl's one code. Each socket's peer is checked as it opens:
 * loopback, private and reserved addresses are refused unless allowed.
 *
 * Proxies: libcurl's own reading of http_proxy, HTTPS_PROXY, ALL_PROXY and
 * NO_PROXY is turned off; only opts.proxy (PROXY) names one. Through a
 * proxy every socket opened goes to the proxy, so the peer check would see
 * the proxy and never the target: it is skipped, and the proxy must
 * enforce the egress policy (main refuses PROXY with private addresses
 * refused unless PROXY_TRUSTED says it does). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fs.h"
#include "common/sha256.h"
#include "common/str.h"
#include "daemon/content.h"
#include "daemon/engine.h"
#include "daemon/naming.h"
#include "daemon/urlcheck.h"

#define ERROR_BODY_MAX   (64 * 1024) /* error bodies read (and dropped) to keep the connection */
#define MAX_REDIRECTS    5
#define MEMORY_BODY_MAX  (8 * 1024 * 1024)      /* a listing page larger than this is refused */
#define VALIDATOR_MAX    512                    /* longest ETag or Last-Modified kept for resuming */
#define XATTR_VALIDATOR  "user.hauld.validator" /* on a part file: its ETag or Last-Modified */
#define WRITEBACK_EVERY  (4 * 1024 * 1024)      /* start write-back of a part after this many bytes */
#define RECV_BUFFER      (128 * 1024)           /* libcurl's receive buffer: 16 KiB meant 8x the syscalls */
#define SPARE_HANDLES    64                     /* easy handles kept for reuse */
#define SPEED_SAMPLE_MS  1000                   /* a transfer's speed is sampled this often */
#define DNS_CACHE_S      60L         /* libcurl's own default: names resolved are kept this long */
#define HEADER_LINES_MAX 500         /* header lines of one answer; more is a bad_response */
#define HEADER_BYTES_MAX (64 * 1024) /* bytes of one answer's headers; more is a bad_response */
#define DEFAULT_USER_AGENT                                                                                  \
        PACKAGE_NAME "/" PACKAGE_VERSION /* without opts.user_agent (USER_AGENT's default) */

struct engine {
        CURLM *multi;
        struct engine_opts opts;
        char *accept;     /* own copy of opts.accept_content */
        char *user_agent; /* own copy of opts.user_agent, or DEFAULT_USER_AGENT */
        char *proxy;      /* own copy of opts.proxy; "" none */
        struct sniffer *sniffer;
        engine_done_fn done;
        void *ctx;
        int running;                /* transfers added and not finished */
        CURL *spare[SPARE_HANDLES]; /* reset handles, reused instead of re-created */
        int nspare;
};

struct xfer {
        struct engine *e;
        CURL *easy;
        void *userdata;
        int base_fd;                /* DOWNLOAD_DIR (not owned) */
        char *subdir;               /* the folder under base_fd; NULL: base_fd itself */
        int dir_fd;                 /* the folder, owned; -1 until it exists */
        int part_fd;                /* -1 until the body is accepted */
        int64_t request_timeout_ms; /* REQUEST_TIMEOUT of this transfer */
        int64_t stall_ms;           /* STALL_TIMEOUT of this transfer */
        bool resumed;               /* the answer continued the part (206 at resume_from) */
        int64_t expected;           /* whole body size from the answer; -1 unknown */
        int64_t speed_ms;           /* monotonic start of the speed sample */
        int64_t speed_bytes;        /* bytes at speed_ms */
        int64_t speed_bps;          /* the last sample's speed */
        char part[64];              /* ".N.part": the body so far */
        bool keep_part;             /* leave the part for a later attempt to resume */
        int64_t unflushed;          /* bytes written since write-back was last started */
        int64_t resume_from;        /* bytes already in the part, asked for with Range; 0: none */
        char *validator;            /* sent as If-Range when resuming */
        char etag[VALIDATOR_MAX];   /* of the current answer */
        char last_modified[VALIDATOR_MAX];
        int64_t range_start; /* Content-Range start of the current answer; -1: none */
        size_t header_lines; /* of the current answer */
        size_t header_bytes; /* of the current answer, its status line included */
        bool headers_done;   /* the current answer's headers ended (its blank line came) */
        char *url;
        char *host;      /* host[:port] of the URL asked for: its own headers go there only */
        bool own_follow; /* it has headers of its own: redirects are followed here, not by libcurl */
        int redirects;   /* followed here so far */
        char *name_hint;
        char *disposition; /* Content-Disposition of the final answer */
        bool to_memory;    /* body into mem, not a file */
        char *mem;         /* to_memory: the body so far */
        size_t mem_len, mem_cap;
        struct curl_slist *headers;
        struct sha256 *sha;                      /* of the body so far */
        bool validator_set;                      /* write_validator() ran for this part */
        bool complete;                           /* the body ended well: no validator needed any more */
        unsigned char head[CONTENT_SNIFF_BYTES]; /* first bytes, until sniffed */
        size_t head_len;
        bool sniffed;
        int64_t bytes;           /* body bytes accepted */
        int64_t discarded;       /* bytes of a non-2xx body */
        int64_t started_ms;      /* monotonic */
        int64_t last_data_ms;    /* monotonic, last time bytes arrived */
        int64_t window_ms;       /* start of the current stall window */
        curl_off_t window_bytes; /* bytes received when it started */
        curl_off_t last_dlnow;
        int64_t retry_after_ms;
        bool blocked;              /* a peer address was refused */
        enum retry_class abort_rc; /* set when we abort from a callback */
        char abort_msg[200];
        char content_type[128];
        char errbuf[CURL_ERROR_SIZE];
};

static void xfer_free(struct xfer *x)
{
        if (!x)
                return;
        if (x->easy) {
                struct engine *e = x->e;
                curl_multi_remove_handle(e->multi, x->easy);
                if (e->nspare < SPARE_HANDLES) {
                        curl_easy_reset(x->easy);
                        e->spare[e->nspare++] = x->easy;
                } else {
                        curl_easy_cleanup(x->easy);
                }
        }
        if (x->part_fd >= 0) {
                if (x->keep_part) /* start write-back, do not wait for it: this is the transfer loop */
                        sync_file_range(x->part_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
                close(x->part_fd);
                if (!x->keep_part)
                        unlinkat(x->dir_fd, x->part, 0);
        }
        if (x->dir_fd >= 0)
                close(x->dir_fd);
        free(x->subdir);
        free(x->validator);
        sha256_free(x->sha);
        curl_slist_free_all(x->headers);
        free(x->mem);
        free(x->url);
        free(x->host);
        free(x->name_hint);
        free(x->disposition);
        free(x);
}

static int xfer_abort_with(struct xfer *x, enum retry_class rc, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int xfer_abort_with(struct xfer *x, enum retry_class rc, const char *fmt, ...)
{
        va_list ap;
        x->abort_rc = rc;
        va_start(ap, fmt);
        vsnprintf(x->abort_msg, sizeof(x->abort_msg), fmt, ap);
        va_end(ap);
        return 1;
}

static long http_status(struct xfer *x)
{
        long code = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
        return code;
}

/* Remember under which validator the part is fetched, so that a later
 * attempt (or the next start after a crash) can resume it with If-Range.
 * An extended attribute of the part itself: a file beside it cost a create
 * and an unlink per download. Where the file system has no user
 * attributes, parts are simply not resumed. Written after the first
 * bytes of the body, unless they are the whole body: a part that is
 * complete at once never needs resuming, and a small file then costs no
 * fsetxattr and no fremovexattr (two of about fifteen system calls per
 * file on the scheduler's thread). */
static void write_validator(struct xfer *x)
{
        const char *v = x->etag[0] ? x->etag : x->last_modified;
        curl_off_t length = -1;

        if (x->validator_set)
                return;
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
        if (x->complete || (length >= 0 && x->bytes >= (int64_t)length))
                return;
        x->validator_set = true;
        if (v[0])
                fsetxattr(x->part_fd, XATTR_VALIDATOR, v, strlen(v), 0);
}

/* The body was accepted: open the part file and write what we held back. */
static int open_part(struct xfer *x)
{
        if (x->dir_fd < 0) {
                int r = x->subdir ? fs_mkdirat_p(x->base_fd, x->subdir, &x->dir_fd) : 0;
                if (!x->subdir && (x->dir_fd = fcntl(x->base_fd, F_DUPFD_CLOEXEC, 0)) < 0)
                        r = -errno;
                if (r < 0)
                        return r;
        }
        for (int tries = 0; tries < 2; tries++) {
                x->part_fd = openat(x->dir_fd, x->part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                    0640);
                if (x->part_fd >= 0)
                        return 0;
                if (errno != EEXIST)
                        break;
                unlinkat(x->dir_fd, x->part, 0); /* left over: start over */
        }
        return -errno;
}

static void drop_part(struct xfer *x)
{
        if (x->dir_fd >= 0)
                unlinkat(x->dir_fd, x->part, 0);
        x->resume_from = 0;
}

/* The transfer's folder when it exists already (a part to resume may be
 * there); else it is made with the first body byte. */
static void open_dir(struct xfer *x)
{
        if (!x->subdir)
                x->dir_fd = fcntl(x->base_fd, F_DUPFD_CLOEXEC, 0);
        else
                x->dir_fd = openat(x->base_fd, x->subdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* A part from an earlier attempt with a validator: ask for the rest. */
static void prepare_resume(struct xfer *x)
{
        char v[VALIDATOR_MAX];
        struct stat st = {0};
        ssize_t n = -1;

        if (x->dir_fd < 0)
                return;
        int fd = openat(x->dir_fd, x->part, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
                if (errno != ENOENT)
                        drop_part(x);
                return;
        }
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
                n = fgetxattr(fd, XATTR_VALIDATOR, v, sizeof(v) - 1);
        close(fd);
        if (st.st_size <= 0 || st.st_size > x->e->opts.max_file_size || n <= 0) {
                drop_part(x);
                return;
        }
        v[n] = '\0';
        x->validator = strdup(v);
        x->resume_from = x->validator ? (int64_t)st.st_size : 0;
}

/* The answer to a Range request is 206 from where the part ends: append,
 * after hashing and sniffing what the part already holds. */
static int resume_open(struct xfer *x)
{
        unsigned char buf[65536];
        ssize_t n;

        x->part_fd = openat(x->dir_fd, x->part, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        if (x->part_fd < 0)
                return -errno;
        while ((n = pread(x->part_fd, buf, sizeof(buf), x->bytes)) > 0) {
                if (x->bytes == 0) {
                        x->head_len = (size_t)n < sizeof(x->head) ? (size_t)n : sizeof(x->head);
                        memcpy(x->head, buf, x->head_len);
                }
                sha256_update(x->sha, buf, (size_t)n);
                x->bytes += n;
        }
        if (n < 0 || x->bytes != x->resume_from)
                return n < 0 ? -errno : -EIO;
        return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;
        while (len > 0) {
                ssize_t w = write(fd, p, len);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                len -= (size_t)w;
        }
        return 0;
}

static int body_store(struct xfer *x, const void *buf, size_t len)
{
        int r = write_all(x->part_fd, buf, len);
        if (r < 0)
                return xfer_abort_with(x, RC_IO, "writing %s: %s", x->part, strerror(-r)), -1;
        sha256_update(x->sha, buf, len);
        write_validator(x);
        x->unflushed += (int64_t)len;
        if (x->unflushed >= WRITEBACK_EVERY) {
                /* start write-back now, without waiting: the commit's flush
                 * then finds most of a large file already on disk */
                sync_file_range(x->part_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
                x->unflushed = 0;
        }
        return 0;
}

/* Decide on the first bytes: type accepted? */
static int sniff(struct xfer *x)
{
        char *mime = NULL;

        x->sniffed = true;
        if (sniffer_mime(x->e->sniffer, x->head, x->head_len, &mime) == 0) {
                snprintf(x->content_type, sizeof(x->content_type), "%s", mime);
                free(mime);
        }
        if (!content_accepted(x->e->accept, x->content_type)) {
                xfer_abort_with(x, RC_INVALID_CONTENT, "body is %s, not %s",
                                x->content_type[0] ? x->content_type : "unknown", x->e->accept);
                return -1;
        }
        return 0;
}

/* Decide on the first bytes, then open the file. */
static int sniff_and_open(struct xfer *x)
{
        if (sniff(x) < 0)
                return -1;
        int r = open_part(x);
        if (r < 0) {
                xfer_abort_with(x, RC_IO, "creating %s: %s", x->part, strerror(-r));
                return -1;
        }
        return body_store(x, x->head, x->head_len);
}

static size_t mem_append(struct xfer *x, const char *data, size_t len)
{
        if (x->mem_len + len + 1 > x->mem_cap) {
                if (x->mem_len + len + 1 > MEMORY_BODY_MAX) {
                        xfer_abort_with(x, RC_TOO_LARGE, "listing page over %d bytes", MEMORY_BODY_MAX);
                        return 0;
                }
                size_t cap = x->mem_cap ? x->mem_cap : 16384;
                while (cap < x->mem_len + len + 1)
                        cap *= 2;
                char *m = realloc(x->mem, cap);
                if (!m) {
                        xfer_abort_with(x, RC_IO, "out of memory");
                        return 0;
                }
                x->mem = m;
                x->mem_cap = cap;
        }
        memcpy(x->mem + x->mem_len, data, len);
        x->mem_len += len;
        x->mem[x->mem_len] = '\0';
        x->bytes += (int64_t)len;
        return len;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
        struct xfer *x = ud;
        size_t len = size * nmemb;
        long code = http_status(x);

        if (code < 200 || code > 299) {
                x->discarded += (int64_t)len;
                return x->discarded > ERROR_BODY_MAX ? 0 : len;
        }
        if (x->to_memory)
                return mem_append(x, data, len);
        if (x->resume_from > 0 && x->part_fd < 0 && !x->sniffed) {
                if (code != 206 || x->range_start != x->resume_from) {
                        /* the range was ignored or the validator changed: from zero */
                        drop_part(x);
                        if (code == 206) {
                                xfer_abort_with(x, RC_TRUNCATED, "answer to a range request starts at %lld",
                                                (long long)x->range_start);
                                return 0;
                        }
                } else {
                        int r = resume_open(x);
                        if (r < 0 || sniff(x) < 0) {
                                if (r < 0)
                                        xfer_abort_with(x, RC_IO, "resuming %s: %s", x->part, strerror(-r));
                                drop_part(x);
                                return 0;
                        }
                        x->resumed = true;
                        x->validator_set = true; /* the part has it: that is how it resumes */
                }
        }
        if (x->bytes + (int64_t)len > x->e->opts.max_file_size) {
                xfer_abort_with(x, RC_TOO_LARGE, "body exceeds MAX_FILE_SIZE (%lld bytes)",
                                (long long)x->e->opts.max_file_size);
                return 0;
        }
        x->bytes += (int64_t)len;
        if (x->sniffed)
                return body_store(x, data, len) < 0 ? 0 : len;
        size_t take = sizeof(x->head) - x->head_len;
        if (take > len)
                take = len;
        memcpy(x->head + x->head_len, data, take);
        x->head_len += take;
        if (x->head_len < sizeof(x->head))
                return len;
        if (sniff_and_open(x) < 0)
                return 0;
        if (take < len && body_store(x, data + take, len - take) < 0)
                return 0;
        return len;
}

/* Headers of each answer (redirects included): keep what we need of the last. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
        struct xfer *x = ud;
        size_t len = size * nmemb;
        char value[512];

        if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
                x->retry_after_ms = -1;
                free(x->disposition);
                x->disposition = NULL;
                x->etag[0] = x->last_modified[0] = '\0';
                x->range_start = -1;
                x->header_lines = 0;
                x->header_bytes = len;
                x->headers_done = false;
                return len;
        }
        if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
                x->headers_done = true;
                return len;
        }
        x->header_bytes += len;
        if (++x->header_lines > HEADER_LINES_MAX)
                return xfer_abort_with(x, RC_BAD_RESPONSE, "the answer has more than %d header lines",
                                       HEADER_LINES_MAX),
                       0;
        if (x->header_bytes > HEADER_BYTES_MAX)
                return xfer_abort_with(x, RC_BAD_RESPONSE, "the answer's headers are over %d bytes",
                                       HEADER_BYTES_MAX),
                       0;
        const char *colon = memchr(line, ':', len);
        if (!colon)
                return len;
        size_t klen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = len - klen - 1;
        while (vlen > 0 && (*v == ' ' || *v == '\t'))
                v++, vlen--;
        while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
                vlen--;
        if (vlen >= sizeof(value))
                vlen = sizeof(value) - 1;
        memcpy(value, v, vlen);
        value[vlen] = '\0';
        if (klen == 11 && strncasecmp(line, "Retry-After", 11) == 0)
                x->retry_after_ms = retry_after_parse(value, clock_wall_ms());
        else if (klen == 19 && strncasecmp(line, "Content-Disposition", 19) == 0) {
                free(x->disposition);
                x->disposition = strdup(value);
        } else if (klen == 4 && strncasecmp(line, "ETag", 4) == 0 && strncmp(value, "W/", 2) != 0) {
                snprintf(x->etag, sizeof(x->etag), "%s", value); /* weak ones cannot validate a range */
        } else if (klen == 13 && strncasecmp(line, "Last-Modified", 13) == 0) {
                snprintf(x->last_modified, sizeof(x->last_modified), "%s", value);
        } else if (klen == 13 && strncasecmp(line, "Content-Range", 13) == 0) {
                long long start;
                if (sscanf(value, "bytes %lld-", &start) == 1)
                        x->range_start = start;
        }
        return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
        struct xfer *x = ud;
        const struct engine_opts *o = &x->e->opts;
        int64_t now = clock_mono_ms();

        if (dltotal > 0)
                x->expected = (int64_t)dltotal + (x->resumed ? x->resume_from : 0);
        if (now - x->speed_ms >= SPEED_SAMPLE_MS) {
                x->speed_bps = (x->bytes - x->speed_bytes) * 1000 / (now - x->speed_ms);
                x->speed_ms = now;
                x->speed_bytes = x->bytes;
        }
        if (dlnow != x->last_dlnow) {
                x->last_dlnow = dlnow;
                x->last_data_ms = now;
        } else if (now - x->last_data_ms > x->request_timeout_ms) {
                return xfer_abort_with(x, RC_TIMEOUT, "no data for %.1f s (REQUEST_TIMEOUT)",
                                       (double)(now - x->last_data_ms) / 1000.0);
        }
        if (dltotal > o->max_file_size)
                return xfer_abort_with(x, RC_TOO_LARGE, "Content-Length %lld exceeds MAX_FILE_SIZE",
                                       (long long)dltotal);
        if (o->min_speed > 0 && now - x->window_ms >= x->stall_ms) {
                int64_t speed = (int64_t)(dlnow - x->window_bytes) * 1000 / (now - x->window_ms);
                if (speed < o->min_speed)
                        return xfer_abort_with(
                                x, RC_STALLED,
                                "%lld B/s over %.1f s (STALL_TIMEOUT), below MIN_DOWNLOAD_SPEED",
                                (long long)speed, (double)(now - x->window_ms) / 1000.0);
                x->window_ms = now;
                x->window_bytes = dlnow;
        }
        return 0;
}

bool engine_address_blocked(const void *sockaddr, unsigned addrlen)
{
        const struct sockaddr *sa = sockaddr;

        if (sa->sa_family == AF_INET && addrlen >= sizeof(struct sockaddr_in)) {
                uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
                return (a >> 24) == 0 ||                           /* 0.0.0.0/8 this network */
                       (a >> 24) == 10 ||                          /* 10/8 private */
                       (a >> 24) == 127 ||                         /* loopback */
                       (a >> 22) == (100u << 2 | 1) ||             /* 100.64/10 CGNAT */
                       (a >> 16) == (169u << 8 | 254) ||           /* link-local */
                       (a >> 20) == (172u << 4 | 1) ||             /* 172.16/12 private */
                       (a >> 8) == (192u << 16 | 0 << 8 | 0) ||    /* 192.0.0/24 protocol assignments */
                       (a >> 8) == (192u << 16 | 0 << 8 | 2) ||    /* 192.0.2/24 documentation */
                       (a >> 16) == (192u << 8 | 168) ||           /* 192.168/16 private */
                       (a >> 17) == (198u << 7 | 9) ||             /* 198.18/15 benchmarking */
                       (a >> 8) == (198u << 16 | 51 << 8 | 100) || /* 198.51.100/24 documentation */
                       (a >> 8) == (203u << 16 | 0 << 8 | 113) ||  /* 203.0.113/24 documentation */
                       (a >> 28) >= 14;                            /* multicast, reserved, broadcast */
        }
        if (sa->sa_family == AF_INET6 && addrlen >= sizeof(struct sockaddr_in6)) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
                const uint8_t *b = a->s6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
                        struct sockaddr_in v4 = {.sin_family = AF_INET};
                        memcpy(&v4.sin_addr, b + 12, 4);
                        return IN6_IS_ADDR_V4COMPAT(a) || engine_address_blocked(&v4, sizeof(v4));
                }
                return IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) ||
                       (b[0] & 0xfe) == 0xfc ||                   /* fc00::/7 unique local */
                       (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
                       (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local */
                       b[0] == 0xff ||                            /* multicast */
                       (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff &&
                        b[3] == 0x9b) || /* 64:ff9b::/96 NAT64 */
                       (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) || /* 2001:db8::/32 */
                       (b[0] == 0x20 && b[1] == 0x02) || /* 2002::/16 6to4 embeds any v4 */
                       (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00); /* Teredo */
        }
        return true; /* unix sockets and anything else */
}

static curl_socket_t on_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
        struct xfer *x = ud;

        if (!x->e->opts.allow_private && !*x->e->proxy &&
            engine_address_blocked(&addr->addr, addr->addrlen)) {
                x->blocked = true;
                return CURL_SOCKET_BAD;
        }
        return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

/* Is the URL's host an IP address rather than a name? */
static bool url_names_an_address(const char *url)
{
        CURLU *u = curl_url();
        char *host = NULL;
        bool r = false;

        if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
                struct in_addr a4;
                r = host[0] == '[' || inet_pton(AF_INET, host, &a4) == 1;
        }
        curl_free(host);
        curl_url_cleanup(u);
        return r;
}

static int setup_easy(struct xfer *x)
{
        struct engine *e = x->e;
        CURL *c = e->nspare > 0 ? e->spare[--e->nspare] : curl_easy_init();
        const struct engine_opts *o = &e->opts;

        if (!c)
                return -ENOMEM;
        x->easy = c;
        curl_easy_setopt(c, CURLOPT_URL, x->url);
        curl_easy_setopt(c, CURLOPT_PRIVATE, x);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, x);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, x->own_follow ? 0L : 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)MAX_REDIRECTS);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)x->request_timeout_ms);
        curl_easy_setopt(c, CURLOPT_USERAGENT, e->user_agent);
        curl_easy_setopt(c, CURLOPT_PROXY, e->proxy); /* "": none, the environment ignored */
        curl_easy_setopt(c, CURLOPT_NOPROXY, "");     /* NO_PROXY ignored: a proxy takes every request */
        /* libcurl prunes its name cache by walking all of it at each name
         * lookup: a job over thousands of addresses would pay for all of
         * them at every start. An address needs no lookup to cache. */
        curl_easy_setopt(c, CURLOPT_DNS_CACHE_TIMEOUT, url_names_an_address(x->url) ? 0L : DNS_CACHE_S);
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_file_size);
        curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
        if (x->resume_from > 0) {
                char ifrange[VALIDATOR_MAX + 16];
                snprintf(ifrange, sizeof(ifrange), "If-Range: %s", x->validator);
                struct curl_slist *l = curl_slist_append(x->headers, ifrange);
                if (!l)
                        return -ENOMEM;
                x->headers = l;
                /* CURLOPT_RANGE rather than RESUME_FROM: a 200 must restart, not fail */
                char range[32];
                snprintf(range, sizeof(range), "%lld-", (long long)x->resume_from);
                curl_easy_setopt(c, CURLOPT_RANGE, range);
        }
        if (x->headers)
                curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->headers);
        return 0;
}

int engine_start(struct engine *e, const struct xfer_request *req, struct xfer **ret)
{
        struct xfer *x = calloc(1, sizeof(*x));
        int r = -ENOMEM;

        if (!x)
                return -ENOMEM;
        x->e = e;
        x->part_fd = -1;
        x->dir_fd = -1;
        x->base_fd = req->dir_fd;
        x->expected = -1;
        x->request_timeout_ms =
                req->request_timeout_ms > 0 ? req->request_timeout_ms : e->opts.request_timeout_ms;
        x->stall_ms = req->stall_ms > 0 ? req->stall_ms : e->opts.stall_ms;
        x->userdata = req->userdata;
        x->retry_after_ms = -1;
        x->abort_rc = RC_OK;
        snprintf(x->part, sizeof(x->part), ".%d.part", req->part_id);
        x->range_start = -1;
        x->url = strdup(req->url);
        x->name_hint = str_dup(req->name_hint);
        x->subdir = str_dup(req->subdir);
        x->to_memory = req->to_memory;
        x->own_follow = req->nheaders > 0;
        if (x->own_follow && urlcheck_validate(req->url, &x->host, NULL) < 0) {
                r = -EINVAL;
                goto fail;
        }
        for (size_t i = 0; i < req->nheaders; i++) {
                struct curl_slist *l = curl_slist_append(x->headers, req->headers[i]);
                if (!l)
                        goto fail;
                x->headers = l;
        }
        if (!x->url || (req->name_hint && !x->name_hint) || (req->subdir && !x->subdir))
                goto fail;
        r = sha256_new(&x->sha);
        if (r < 0)
                goto fail;
        if (!req->to_memory) {
                open_dir(x);
                prepare_resume(x);
        }
        r = setup_easy(x);
        if (r < 0)
                goto fail;
        x->started_ms = x->last_data_ms = x->window_ms = x->speed_ms = clock_mono_ms();
        if (curl_multi_add_handle(e->multi, x->easy) != CURLM_OK) {
                r = -EIO;
                goto fail;
        }
        e->running++;
        *ret = x;
        return 0;
fail:
        xfer_free(x);
        return r;
}

void engine_abort(struct engine *e, struct xfer *x)
{
        if (!x)
                return;
        e->running--;
        xfer_free(x);
}

void engine_abort_keep(struct engine *e, struct xfer *x)
{
        if (x)
                x->keep_part = true;
        engine_abort(e, x);
}

void engine_clean_parts(int base_fd, const char *subdir)
{
        int dir_fd = subdir ? openat(base_fd, subdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                            : fcntl(base_fd, F_DUPFD_CLOEXEC, 0);
        DIR *d = dir_fd >= 0 ? fdopendir(dir_fd) : NULL;
        struct dirent *de;

        if (!d) {
                if (dir_fd >= 0)
                        close(dir_fd);
                return;
        }
        while ((de = readdir(d))) {
                unsigned n;
                char kind[8];
                if (sscanf(de->d_name, ".%u.%7s", &n, kind) == 2 && strcmp(kind, "part") == 0)
                        unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
        if (!subdir)
                return;
        /* empty folders go: "JOB/SOURCE", then "JOB" (rmdir refuses a folder that is not empty) */
        char *p = strdup(subdir);
        while (p && *p) {
                if (unlinkat(base_fd, p, AT_REMOVEDIR) < 0)
                        break;
                char *slash = strrchr(p, '/');
                if (!slash)
                        break;
                *slash = '\0';
        }
        free(p);
}

static enum retry_class classify_curl(struct xfer *x, CURLcode cc)
{
        if (x->abort_rc != RC_OK)
                return x->abort_rc;
        if (x->blocked)
                return RC_BLOCKED_ADDRESS;
        switch (cc) {
        case CURLE_OPERATION_TIMEDOUT:
                return RC_TIMEOUT;
        case CURLE_PARTIAL_FILE:
        case CURLE_BAD_CONTENT_ENCODING:
                return RC_TRUNCATED;
        case CURLE_RECV_ERROR:
                return x->bytes > 0 ? RC_TRUNCATED : RC_CONNECT;
        case CURLE_FILESIZE_EXCEEDED:
                return RC_TOO_LARGE;
        case CURLE_TOO_MANY_REDIRECTS:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
                return RC_HTTP_4XX;
        case CURLE_WEIRD_SERVER_REPLY: /* no HTTP status line, a header without a colon, ... */
#if LIBCURL_VERSION_NUM >= 0x080600
        case CURLE_TOO_LARGE: /* headers past libcurl's own limits */
#endif
                return RC_BAD_RESPONSE;
        default:
                return RC_CONNECT;
        }
}

/* The body ended well: sniff what is still held back, hash, name it. */
static enum retry_class finish_body(struct xfer *x, struct xfer_result *res)
{
        x->complete = true;
        if (!x->sniffed && sniff_and_open(x) < 0)
                return x->abort_rc;
        res->part_fd = x->part_fd; /* the committer flushes and closes it */
        x->part_fd = -1;
        res->dir_fd = x->dir_fd;
        x->dir_fd = -1;
        res->resumed_from = x->resumed ? x->resume_from : 0;
        if (x->validator_set)
                fremovexattr(res->part_fd, XATTR_VALIDATOR);
        sha256_final_hex(x->sha, res->sha256);
        snprintf(res->part, sizeof(res->part), "%s", x->part);

        char *name = NULL;
        if (x->name_hint)
                naming_sanitize(x->name_hint, &name);
        if (!name && x->disposition)
                naming_from_content_disposition(x->disposition, &name);
        if (!name) {
                char *eff = NULL;
                curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &eff);
                naming_from_url(eff ? eff : x->url, &name);
        }
        char *named = NULL;
        if (name && naming_with_extension(name, content_extension(x->content_type), &named) == 0) {
                free(name);
                name = named;
        }
        snprintf(res->name, sizeof(res->name), "%s", name ? name : "file");
        free(name);
        return RC_OK;
}

/* The request's headers stay with its host: a redirect elsewhere keeps
 * only what the resume needs. */
static int redirect_headers(struct xfer *x, const char *url)
{
        char *host = NULL;
        bool same = urlcheck_validate(url, &host, NULL) == 0 && strcmp(host, x->host) == 0;

        free(host);
        if (same)
                return 0;
        curl_slist_free_all(x->headers);
        x->headers = NULL;
        if (x->resume_from > 0 && x->validator) {
                char ifrange[VALIDATOR_MAX + 16];
                snprintf(ifrange, sizeof(ifrange), "If-Range: %s", x->validator);
                if (!(x->headers = curl_slist_append(NULL, ifrange)))
                        return -ENOMEM;
        }
        curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
        return 0;
}

/* A request with headers of its own got a redirect: follow it here (libcurl
 * would send every custom header to any host a redirect names). Returns
 * true when the transfer goes on. */
static bool follow_redirect(struct engine *e, struct xfer *x, CURLcode cc)
{
        long code = http_status(x);
        char *next = NULL, *url;

        if (!x->own_follow || cc != CURLE_OK ||
            (code != 301 && code != 302 && code != 303 && code != 307 && code != 308))
                return false;
        curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &next);
        if (!next || x->redirects >= MAX_REDIRECTS || !(url = strdup(next)))
                return false;
        curl_multi_remove_handle(e->multi, x->easy);
        if (redirect_headers(x, url) < 0 || curl_easy_setopt(x->easy, CURLOPT_URL, url) != CURLE_OK) {
                free(url);
                return false;
        }
        free(x->url);
        x->url = url;
        x->redirects++;
        x->discarded = 0;
        return curl_multi_add_handle(e->multi, x->easy) == CURLM_OK;
}

static void finish(struct engine *e, struct xfer *x, CURLcode cc)
{
        struct xfer_result res = {.retry_after_ms = x->retry_after_ms, .part_fd = -1, .dir_fd = -1};
        int64_t now = clock_mono_ms();

        res.http_status = (int)http_status(x);
        res.bytes = x->bytes;
        res.duration_ms = now - x->started_ms;
        res.speed_bps = res.duration_ms > 0 ? x->bytes * 1000 / res.duration_ms : x->bytes * 1000;
        /* libcurl before 8.6 answers a header line over CURL_MAX_HTTP_HEADER with "out of memory" */
        if (cc == CURLE_OUT_OF_MEMORY && x->abort_rc == RC_OK && x->header_bytes > 0 && !x->headers_done)
                xfer_abort_with(x, RC_BAD_RESPONSE, "an answer's header line is over %d bytes",
                                CURL_MAX_HTTP_HEADER);
        if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && x->abort_rc == RC_OK && x->discarded > 0)) {
                res.rc = classify_curl(x, cc);
                snprintf(res.message, sizeof(res.message), "%s",
                         x->abort_rc != RC_OK ? x->abort_msg
                         : x->blocked         ? "address not allowed (ALLOW_PRIVATE_ADDRESSES=false)"
                         : x->errbuf[0]       ? x->errbuf
                                              : curl_easy_strerror(cc));
                if (cc == CURLE_OPERATION_TIMEDOUT && x->abort_rc == RC_OK) /* the connect timeout */
                        snprintf(res.message + strlen(res.message),
                                 sizeof(res.message) - strlen(res.message), " (REQUEST_TIMEOUT)");
        } else if (res.http_status == 416 && x->resume_from > 0) {
                drop_part(x); /* the part no longer fits the resource: the next attempt starts over */
                res.rc = RC_TRUNCATED;
                snprintf(res.message, sizeof(res.message), "range not satisfiable; starting over");
        } else if (res.http_status < 200 || res.http_status > 299) {
                res.rc = retry_classify_http(res.http_status, res.retry_after_ms >= 0);
                snprintf(res.message, sizeof(res.message), "HTTP %d", res.http_status);
        } else if (x->to_memory) {
                res.rc = RC_OK;
                res.body = x->mem ? x->mem : "";
                res.body_len = x->mem_len;
        } else {
                res.rc = finish_body(x, &res);
                if (res.rc != RC_OK && !res.message[0])
                        snprintf(res.message, sizeof(res.message), "%s", x->abort_msg);
        }
        snprintf(res.content_type, sizeof(res.content_type), "%s", x->content_type);
        /* a body cut short keeps what arrived, for the retry to resume */
        x->keep_part = retry_class_retryable(res.rc) && res.rc != RC_RATE_LIMITED;
        e->running--;
        e->done(x->userdata, &res, e->ctx);
        xfer_free(x);
}

int engine_perform(struct engine *e)
{
        int still, queued;
        CURLMsg *m;

        curl_multi_perform(e->multi, &still);
        while ((m = curl_multi_info_read(e->multi, &queued))) {
                struct xfer *x = NULL;
                if (m->msg != CURLMSG_DONE)
                        continue;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                if (!follow_redirect(e, x, m->data.result))
                        finish(e, x, m->data.result);
        }
        return 0;
}

int engine_poll_fd(struct engine *e, int fd, int timeout_ms, bool *ret_ready)
{
        struct curl_waitfd w = {.fd = fd, .events = CURL_WAIT_POLLIN};

        *ret_ready = false;
        if (fd < 0)
                return engine_poll(e, timeout_ms);
        if (curl_multi_poll(e->multi, &w, 1, timeout_ms, NULL) != CURLM_OK)
                return -EIO;
        *ret_ready = (w.revents & CURL_WAIT_POLLIN) != 0;
        return 0;
}

int engine_poll(struct engine *e, int timeout_ms)
{
        return curl_multi_poll(e->multi, NULL, 0, timeout_ms, NULL) == CURLM_OK ? 0 : -EIO;
}

void engine_wakeup(struct engine *e) { curl_multi_wakeup(e->multi); }
int engine_running(const struct engine *e) { return e->running; }

void engine_progress(const struct engine *e, const struct xfer *x, struct xfer_progress *ret)
{
        (void)e;
        *ret = (struct xfer_progress){.bytes = x->bytes, .expected = x->expected, .speed_bps = x->speed_bps};
}

static int ops_start(void *e, const struct xfer_request *req, struct xfer **ret)
{
        return engine_start(e, req, ret);
}

static void ops_abort(void *e, struct xfer *x, bool keep_part)
{
        if (keep_part)
                engine_abort_keep(e, x);
        else
                engine_abort(e, x);
}

static int ops_running(const void *e) { return engine_running(e); }

static void ops_progress(const void *e, const struct xfer *x, struct xfer_progress *ret)
{
        engine_progress(e, x, ret);
}

const struct engine_ops engine_ops = {
        .start = ops_start,
        .abort = ops_abort,
        .running = ops_running,
        .progress = ops_progress,
};

void engine_configure(struct engine *e, const struct engine_opts *opts)
{
        char *accept = strdup(opts->accept_content ? opts->accept_content : "any");
        char *agent = strdup(opts->user_agent ? opts->user_agent : DEFAULT_USER_AGENT);
        char *proxy = strdup(opts->proxy ? opts->proxy : "");
        if (!accept || !agent || !proxy) {
                free(accept);
                free(agent);
                free(proxy);
                return;
        }
        free(e->accept);
        free(e->user_agent);
        free(e->proxy);
        e->accept = accept;
        e->user_agent = agent;
        e->proxy = proxy;
        e->opts = *opts;
        e->opts.accept_content = e->accept;
        e->opts.user_agent = e->user_agent;
        e->opts.proxy = e->proxy;
        curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)opts->max_connects);
}

int engine_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO; }

void engine_global_cleanup(void) { curl_global_cleanup(); }

int engine_new(const struct engine_opts *opts, engine_done_fn done, void *ctx, struct engine **ret)
{
        struct engine *e = calloc(1, sizeof(*e));
        int r = -ENOMEM;

        if (!e)
                return -ENOMEM;
        e->done = done;
        e->ctx = ctx;
        e->multi = curl_multi_init();
        if (!e->multi)
                goto fail;
        r = sniffer_new(&e->sniffer);
        if (r < 0)
                goto fail;
        engine_configure(e, opts);
        if (!e->accept) {
                r = -ENOMEM;
                goto fail;
        }
        *ret = e;
        return 0;
fail:
        engine_free(e);
        return r;
}

void engine_free(struct engine *e)
{
        if (!e)
                return;
        while (e->nspare > 0)
                curl_easy_cleanup(e->spare[--e->nspare]);
        if (e->multi)
                curl_multi_cleanup(e->multi);
        sniffer_free(e->sniffer);
        free(e->accept);
        free(e->user_agent);
        free(e->proxy);
        free(e);
}

/* files: a job's downloaded files over the API.
 *
 * GET /v1/jobs/{id}/items/{index}/file answers one succeeded item's file
 * from DOWNLOAD_DIR/<item path>: conditional (If-None-Match against the
 * ETag, the item's SHA-256; If-Modified-Since), one byte range (Range,
 * If-Range; several ranges get the whole file), sent by microhttpd from the
 * descriptor (sendfile where it can), never read into memory.
 *
 * GET /v1/jobs/{id}/archive streams every succeeded file of the job as a
 * POSIX ustar archive (pax records for names past 100 bytes or not ASCII,
 * and for sizes past ustar's 8 GiB), one file after the other, from a
 * content reader that pages through the items and reads each file into
 * microhttpd's buffer: the archive never exists whole, in memory or on
 * disk. Entries are <source>/<name>, the item's path without its job
 * directory; a file several items share is sent once; a file missing on
 * disk, refused, or held by another node is left out.
 *
 * Opening is confined to DOWNLOAD_DIR: the stored path must be relative
 * with no ".", ".." or empty component, and is resolved with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) or, where the kernel (or
 * a seccomp filter) lacks openat2, one component at a time with
 * O_NOFOLLOW; only a regular file is served. A path that would leave the
 * directory is refused (403) and logged, whoever wrote it into the table.
 *
 * Several nodes: a file is on the node that downloaded it (the item's
 * node); an item of another node answers 409 naming it, and is left out of
 * the archive. This node's id comes from the scheduler's snapshot. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "api/handlers.h"
#include "api/reply.h"
#include "common/log.h"
#include "common/strmap.h"

#define FILE_DISPOSITION_MAX 2048 /* bytes of a Content-Disposition value, with the NUL */
#define HTTP_DATE_MAX        40   /* bytes for "Sun, 06 Nov 1994 08:49:37 GMT" and the NUL, with room */
#define ARCHIVE_PAGE         64   /* items read from the store at once */
#define ARCHIVE_BLOCK_SIZE   (16 * 1024) /* bytes microhttpd asks the reader for at once */
#define TAR_BLOCK            512
#define TAR_RECORD           (20 * TAR_BLOCK) /* the archive ends on a whole record */
#define TAR_NAME_MAX         100              /* bytes of a ustar name field */
#define TAR_SIZE_MAX         077777777777LL   /* the largest size 11 octal digits hold */
#define TAR_PAX_MAX          (PATH_MAX + 64)  /* bytes of one entry's pax records */
#define TAR_HEAD_MAX         (2 * TAR_BLOCK + TAR_PAX_MAX + TAR_BLOCK) /* pax header, records, header */
#define TAR_FILE_MODE        0644

/* ---- opening below DOWNLOAD_DIR ------------------------------------------------ */

/* A stored path hauld could have written: relative, each component a
 * plain name. */
static bool path_is_plain(const char *path)
{
        size_t n = strlen(path);
        if (n == 0 || n >= PATH_MAX || path[0] == '/')
                return false;
        for (const char *c = path; *c;) {
                size_t len = strcspn(c, "/");
                if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
                        return false;
                c += len;
                if (*c == '/' && *++c == '\0')
                        return false;
        }
        return true;
}

/* One component at a time, never following a symlink. */
static int open_walk(int dirfd, const char *path, int flags)
{
        char buf[PATH_MAX];
        int fd = dirfd, r;

        strcpy(buf, path); /* path_is_plain: shorter than PATH_MAX */
        char *save = NULL, *c = strtok_r(buf, "/", &save);
        while (c) {
                char *next = strtok_r(NULL, "/", &save);
                int nfd = next ? openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                               : openat(fd, c, flags | O_NOFOLLOW);
                struct stat st;
                r = nfd < 0 ? -errno : 0;
                if (r == -ENOTDIR && fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                        r = -ELOOP; /* O_PATH | O_NOFOLLOW opens the link itself, O_DIRECTORY refuses it */
                if (fd != dirfd)
                        close(fd);
                if (r < 0)
                        return r;
                fd = nfd;
                c = next;
        }
        return fd;
}

/* Open path below dirfd for reading: the file descriptor, or -errno:
 * -ENOENT missing, -ELOOP a symlink on the way, -EXDEV a way out of
 * dirfd, -EINVAL a path hauld never writes, -EISDIR not a regular file. */
static int open_beneath(int dirfd, const char *path)
{
        int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC; /* O_NONBLOCK: a FIFO must not hang us */
        struct open_how how = {.flags = (uint64_t)flags,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
        struct stat st;
        int fd;

        if (!path_is_plain(path))
                return -EINVAL;
        fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        if (fd < 0 && (errno == ENOSYS || errno == EPERM)) /* an old kernel, or a seccomp filter */
                fd = open_walk(dirfd, path, flags);
        else if (fd < 0)
                fd = -errno;
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return -EISDIR;
        }
        return fd;
}

/* DOWNLOAD_DIR as a directory descriptor; -errno. */
static int open_download_dir(const struct config *cfg)
{
        int fd = open(cfg->download_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* The node that holds an item's file, when it is not self (this
 * daemon's node id; NULL: unknown, then every named node is another). */
static const char *node_elsewhere(const struct item *it, const char *self)
{
        if (!it->node || !*it->node || (self && strcmp(it->node, self) == 0))
                return NULL;
        return it->node;
}

/* This daemon's node id, as the scheduler's newest snapshot has it, into
 * buf; NULL when none is known. */
static const char *node_self(struct httpd *h, char *buf, size_t size)
{
        struct snapshot *snap = sched_snapshot(h->sched);
        const char *self = NULL;

        if (snap && snap->node && strlen(snap->node) < size) {
                strcpy(buf, snap->node);
                self = buf;
        }
        snapshot_unref(snap);
        return self;
}

/* ---- HTTP dates, entity tags, ranges ----------------------------------------------- */

static const char weekdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* IMF-fixdate (RFC 9110 5.6.7), whatever the locale. */
static void http_date(time_t t, char buf[HTTP_DATE_MAX])
{
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(buf, HTTP_DATE_MAX, "%s, %02d %s %04d %02d:%02d:%02d GMT", weekdays[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* An IMF-fixdate; false for anything else (the obsolete forms included). */
static bool http_date_parse(const char *s, time_t *ret)
{
        char wday[4], mon[4];
        struct tm tm = {0};
        int n = 0;

        if (sscanf(s, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wday, &tm.tm_mday, mon,
                   &tm.tm_year, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 7 ||
            n == 0 || s[n] != '\0')
                return false;
        for (tm.tm_mon = 0; tm.tm_mon < 12 && strcmp(mon, months[tm.tm_mon]) != 0; tm.tm_mon++)
                ;
        if (tm.tm_mon == 12)
                return false;
        tm.tm_year -= 1900;
        *ret = timegm(&tm);
        return true;
}

/* Does an If-None-Match list ("*", or entity tags separated by commas)
 * hold etag? Weak comparison: W/"x" matches "x" (RFC 9110 13.1.2). */
static bool etag_list_matches(const char *list, const char *etag)
{
        const char *p = list;

        while (*p) {
                p += strspn(p, " \t,");
                if (*p == '*')
                        return true;
                if (strncmp(p, "W/", 2) == 0)
                        p += 2;
                if (*p != '"')
                        return false;
                const char *end = strchr(p + 1, '"');
                if (!end)
                        return false;
                size_t len = (size_t)(end - p + 1);
                if (len == strlen(etag) && memcmp(p, etag, len) == 0)
                        return true;
                p = end + 1;
        }
        return false;
}

enum range_kind { RANGE_NONE, RANGE_ONE, RANGE_UNSATISFIABLE };

static bool parse_offset(const char *s, size_t len, int64_t *ret)
{
        int64_t v = 0;
        if (len == 0 || len > 18)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return true;
}

/* A Range header against a file of size bytes (RFC 9110 14.1.2): one
 * range "bytes=a-b", "a-" or "-n" is RANGE_ONE with [*ret_first,
 * *ret_first + *ret_len); several ranges, another unit or a malformed
 * value are RANGE_NONE (the whole file); a range starting past the end,
 * or "-0", is RANGE_UNSATISFIABLE. */
static enum range_kind parse_range(const char *v, int64_t size, int64_t *ret_first, int64_t *ret_len)
{
        int64_t a, b;

        if (strncasecmp(v, "bytes=", 6) != 0 || strchr(v, ','))
                return RANGE_NONE;
        v += 6;
        v += strspn(v, " \t");
        size_t vlen = strcspn(v, " \t");
        if (v[vlen + strspn(v + vlen, " \t")] != '\0')
                return RANGE_NONE;
        const char *dash = memchr(v, '-', vlen);
        if (!dash)
                return RANGE_NONE;
        size_t alen = (size_t)(dash - v), blen = vlen - alen - 1;
        if (alen == 0) { /* the last n bytes */
                if (!parse_offset(dash + 1, blen, &b))
                        return RANGE_NONE;
                if (b == 0 || size == 0)
                        return RANGE_UNSATISFIABLE;
                *ret_first = b >= size ? 0 : size - b;
                *ret_len = size - *ret_first;
                return RANGE_ONE;
        }
        if (!parse_offset(v, alen, &a) || (blen > 0 && !parse_offset(dash + 1, blen, &b)))
                return RANGE_NONE;
        if (blen > 0 && b < a)
                return RANGE_NONE;
        if (a >= size)
                return RANGE_UNSATISFIABLE;
        if (blen == 0 || b >= size)
                b = size - 1;
        *ret_first = a;
        *ret_len = b - a + 1;
        return RANGE_ONE;
}

/* If-Range: an entity tag (strong comparison) or a date equal to the
 * file's Last-Modified. */
static bool if_range_holds(const char *v, const char *etag, time_t mtime)
{
        time_t t;
        if (v[0] == '"')
                return etag && strcmp(v, etag) == 0;
        if (strncmp(v, "W/", 2) == 0)
                return false;
        return http_date_parse(v, &t) && t == mtime;
}

/* ---- Content-Disposition ------------------------------------------------------------- */

/* RFC 8187 attr-char: sent as it is in filename*. */
static bool is_attr_char(unsigned char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("!#$&+-.^_`|~", c);
}

/* attachment; filename="ascii" and, when the name is not plain ASCII,
 * filename*=UTF-8''percent-encoded (RFC 6266, RFC 8187). */
static void disposition(const char *name, char *buf, size_t size)
{
        size_t n = (size_t)snprintf(buf, size, "attachment; filename=\"");
        bool plain = true;

        for (const unsigned char *c = (const unsigned char *)name; *c && n + 4 < size; c++) {
                if ((*c & 0xC0) == 0x80) /* a UTF-8 continuation: one '_' per character */
                        continue;
                bool ok = *c >= 0x20 && *c < 0x7F && *c != '"' && *c != '\\' && *c != '%';
                plain &= ok;
                buf[n++] = ok ? (char)*c : '_';
        }
        for (const unsigned char *c = (const unsigned char *)name; *c; c++)
                plain &= *c >= 0x20 && *c < 0x7F;
        n += (size_t)snprintf(buf + n, size - n, "\"");
        if (plain || n >= size)
                return;
        n += (size_t)snprintf(buf + n, size - n, "; filename*=UTF-8''");
        for (const unsigned char *c = (const unsigned char *)name; *c && n + 4 < size; c++)
                n += (size_t)(is_attr_char(*c) ? snprintf(buf + n, size - n, "%c", *c)
                                               : snprintf(buf + n, size - n, "%%%02X", *c));
}

/* ---- the item ---------------------------------------------------------------------------- */

/* The {id} of the path, when it can name a job. */
static const char *job_id_arg(struct request *rq)
{
        const char *id = rq->params[0];
        return id && job_id_valid(id) ? id : NULL;
}

/* {index}: a decimal below JOB_MAX_ITEMS, or -1. */
static int index_arg(struct request *rq)
{
        const char *s = rq->params[1];
        int64_t v;
        if (!s || !parse_offset(s, strlen(s), &v) || v >= JOB_MAX_ITEMS)
                return -1;
        return (int)v;
}

/* Answer the reason an item has no file to give, or MHD_YES with
 * *ret_ok set when it has one. */
static enum MHD_Result item_servable(struct request *rq, const char *id, const struct item *it, bool *ret_ok)
{
        char self[STORE_NODE_ID_MAX + 1];
        const char *node = node_elsewhere(it, node_self(rq->h, self, sizeof(self)));

        *ret_ok = false;
        if (it->state != ITEM_SUCCEEDED)
                return reply_problem(rq, 409, NULL, "item %d of job %s is %s, not succeeded", it->index, id,
                                     item_state_to_string(it->state));
        if (node)
                return reply_problem(rq, 409, NULL, "the file of item %d is on node %s", it->index, node);
        if (!it->path)
                return reply_problem(rq, 404, NULL, "item %d of job %s has no file", it->index, id);
        *ret_ok = true;
        return MHD_YES;
}

/* The item {index} of job id into *ret; answers when there is none. */
static enum MHD_Result item_find(struct request *rq, const char *id, int index, struct item **ret)
{
        struct item_filter f = {.limit = 1, .after_index = index - 1};
        struct store *s;
        struct item *items = NULL;
        size_t n = 0;
        int next, r = request_store(rq, &s);

        if (r < 0 || (r = store_item_list(s, id, &f, &items, &n, &next)) < 0)
                return reply_store_error(rq, r, "job");
        if (n == 0 || items[0].index != index) {
                items_free(items, n);
                return reply_problem(rq, 404, NULL, "job %s has no item %d", id, index);
        }
        *ret = items;
        return MHD_YES;
}

/* Answer an open_beneath() failure. */
static enum MHD_Result reply_open_error(struct request *rq, const char *id, const struct item *it, int r)
{
        switch (r) {
        case -ENOENT:
        case -ENOTDIR:
                return reply_problem(rq, 404, NULL, "the file of item %d of job %s is missing on disk",
                                     it->index, id);
        case -ELOOP:
        case -EXDEV:
        case -EINVAL:
        case -EISDIR:
                log_warning("api: job %s: item %d: refused to serve %s: %s", id, it->index, it->path,
                            r == -EISDIR ? "not a regular file" : "not a plain path below DOWNLOAD_DIR");
                return reply_problem(rq, 403, NULL,
                                     "the file of item %d is not a regular file below DOWNLOAD_DIR",
                                     it->index);
        default:
                return reply_problem(rq, 500, NULL, "cannot open the file of item %d: %s", it->index,
                                     strerror(-r));
        }
}

/* What the answer says of the file, on 200, 206 and 304 alike. */
struct file_meta {
        char etag[72]; /* "\"<sha256>\"", or "" when the item has none */
        char modified[HTTP_DATE_MAX];
        time_t mtime;
        int64_t size;
};

static void add_validators(struct MHD_Response *resp, const struct file_meta *m)
{
        if (m->etag[0])
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, m->etag);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, m->modified);
}

/* Is the client's copy current (If-None-Match, else If-Modified-Since)? */
static bool not_modified(struct request *rq, const struct file_meta *m)
{
        const char *inm =
                MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
        const char *ims =
                MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
        time_t t;

        if (inm)
                return m->etag[0] && etag_list_matches(inm, m->etag);
        return ims && http_date_parse(ims, &t) && m->mtime <= t;
}

/* 200 (the whole file) or 206 (one range) from fd, which the response
 * takes; 416 when the range is past the end. */
static enum MHD_Result reply_file(struct request *rq, const struct item *it, int fd,
                                  const struct file_meta *m)
{
        const char *range = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
        const char *if_range =
                MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_RANGE);
        const char *base = strrchr(it->path, '/');
        char buf[FILE_DISPOSITION_MAX];
        int64_t first = 0, len = m->size;
        enum range_kind kind = RANGE_NONE;
        struct MHD_Response *resp;

        if (range && (!if_range || if_range_holds(if_range, m->etag[0] ? m->etag : NULL, m->mtime)))
                kind = parse_range(range, m->size, &first, &len);
        if (kind == RANGE_UNSATISFIABLE) {
                close(fd);
                snprintf(buf, sizeof(buf), "bytes */%" PRId64, m->size);
                reply_header(rq, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
                return reply_problem(rq, 416, NULL, "the range is outside the file's %" PRId64 " bytes",
                                     m->size);
        }
        if (len == 0) { /* an empty file */
                close(fd);
                resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        } else if (!(resp = MHD_create_response_from_fd_at_offset64((uint64_t)len, fd, (uint64_t)first)))
                close(fd);
        if (!resp)
                return MHD_NO;
        add_validators(resp, m);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                it->content_type ? it->content_type : "application/octet-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
        disposition(base ? base + 1 : it->path, buf, sizeof(buf));
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, buf);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_X_CONTENT_TYPE_OPTIONS, "nosniff");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_SECURITY_POLICY, "sandbox");
        if (kind == RANGE_ONE) {
                snprintf(buf, sizeof(buf), "bytes %" PRId64 "-%" PRId64 "/%" PRId64, first, first + len - 1,
                         m->size);
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
        }
        return reply_queue(rq, kind == RANGE_ONE ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK, resp);
}

/* The opened file of a servable item: 304, or reply_file(). */
static enum MHD_Result serve(struct request *rq, const struct item *it, int fd)
{
        struct file_meta m = {0};
        struct stat st;

        if (fstat(fd, &st) < 0) {
                close(fd);
                return reply_problem(rq, 500, NULL, "cannot stat the file of item %d", it->index);
        }
        m.size = st.st_size;
        m.mtime = st.st_mtime;
        http_date(m.mtime, m.modified);
        if (it->sha256)
                snprintf(m.etag, sizeof(m.etag), "\"%s\"", it->sha256);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        if (not_modified(rq, &m)) {
                close(fd);
                struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
                if (!resp)
                        return MHD_NO;
                add_validators(resp, &m);
                return reply_queue(rq, MHD_HTTP_NOT_MODIFIED, resp);
        }
        return reply_file(rq, it, fd, &m);
}

enum MHD_Result files_item(struct request *rq)
{
        const char *id = job_id_arg(rq);
        int index = index_arg(rq);
        struct item *it = NULL;
        enum MHD_Result ret;
        bool ok;

        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        if (index < 0)
                return reply_problem(rq, 404, NULL, "job %s has no item %s", id, rq->params[1]);
        if ((ret = item_find(rq, id, index, &it)) != MHD_YES || !it)
                return ret;
        ret = item_servable(rq, id, it, &ok);
        if (ok) {
                int dir = open_download_dir(rq->h->cfg);
                int fd = dir < 0 ? dir : open_beneath(dir, it->path);
                if (dir >= 0)
                        close(dir);
                ret = fd < 0 ? reply_open_error(rq, id, it, fd) : serve(rq, it, fd);
        }
        items_free(it, 1);
        return ret;
}

/* ---- the archive -------------------------------------------------------------------------- */

/* One archive being sent: the page of items in hand, the file being read,
 * and the bytes of headers and padding still to go. */
struct archive {
        struct httpd *h;
        struct store *store; /* owned: taken from the request */
        char job_id[JOB_ID_LEN + 1];
        char self[STORE_NODE_ID_MAX + 1]; /* this daemon's node id; "": unknown */
        int dir_fd;                       /* DOWNLOAD_DIR */
        struct item *items;               /* the current page, by index */
        size_t nitems, next;              /* items in it; the next one to look at */
        int cursor;                       /* index after which the next page starts; -1: no more pages */
        struct strmap *sent;              /* paths already in the archive; keys owned (freed with the map) */
        int fd;                           /* the file being sent; -1: none */
        int64_t left;                     /* its bytes still to send */
        char head[TAR_HEAD_MAX];
        size_t head_len, head_off; /* header bytes in head, and sent of them */
        int64_t zeros;             /* padding bytes to send after head and file */
        int64_t total;             /* bytes produced so far */
        bool ended;                /* the trailer is queued: nothing after zeros */
        bool failed;               /* end the stream with an error at the next call */
};

/* v in width - 1 octal digits and a NUL (v fits: callers clamp it). */
static void octal(char *field, size_t width, int64_t v)
{
        uint64_t u = (uint64_t)v;
        field[width - 1] = '\0';
        for (size_t i = width - 1; i-- > 0; u >>= 3)
                field[i] = (char)('0' + (u & 7));
}

/* One 512-byte ustar header at out. */
static void tar_header(char *out, const char *name, int64_t size, time_t mtime, char type)
{
        unsigned sum = 0;

        memset(out, 0, TAR_BLOCK);
        memcpy(out, name, strnlen(name, TAR_NAME_MAX));
        octal(out + 100, 8, TAR_FILE_MODE);
        octal(out + 108, 8, 0);
        octal(out + 116, 8, 0);
        octal(out + 124, 12, size > TAR_SIZE_MAX ? TAR_SIZE_MAX : size);
        octal(out + 136, 12, mtime < 0 ? 0 : (int64_t)mtime);
        memset(out + 148, ' ', 8);
        out[156] = type;
        memcpy(out + 257, "ustar", 6);
        memcpy(out + 263, "00", 2);
        for (size_t i = 0; i < TAR_BLOCK; i++)
                sum += (unsigned char)out[i];
        snprintf(out + 148, 8, "%06o", sum);
        out[155] = ' ';
}

/* "LEN key=value\n", LEN counting itself (POSIX pax). */
static size_t pax_record(char *out, size_t size, const char *key, const char *value)
{
        size_t body = strlen(key) + strlen(value) + 3, len = body + 1;
        while ((size_t)snprintf(NULL, 0, "%zu", len) + body != len)
                len++;
        return (size_t)snprintf(out, size, "%zu %s=%s\n", len, key, value);
}

static bool name_fits_ustar(const char *name)
{
        size_t n = strlen(name);
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] >= 0x7F)
                        return false;
        return n <= TAR_NAME_MAX;
}

static int64_t round_block(int64_t n) { return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK; }

/* The headers of one entry into a->head: a pax header and its records
 * when the name or size does not fit ustar, then the ustar header. */
static void entry_head(struct archive *a, const char *name, int64_t size, time_t mtime)
{
        char records[TAR_PAX_MAX], num[24];
        size_t n = 0;

        a->head_len = a->head_off = 0;
        if (!name_fits_ustar(name))
                n += pax_record(records + n, sizeof(records) - n, "path", name);
        if (size > TAR_SIZE_MAX) {
                snprintf(num, sizeof(num), "%" PRId64, size);
                n += pax_record(records + n, sizeof(records) - n, "size", num);
        }
        if (n > 0) {
                tar_header(a->head, "././@PaxHeader", (int64_t)n, mtime, 'x');
                memset(a->head + TAR_BLOCK, 0, (size_t)round_block((int64_t)n));
                memcpy(a->head + TAR_BLOCK, records, n);
                a->head_len = TAR_BLOCK + (size_t)round_block((int64_t)n);
        }
        tar_header(a->head + a->head_len, name, size, mtime, '0');
        a->head_len += TAR_BLOCK;
}

/* The next page of succeeded items; 0 with none left (a->cursor -1). */
static int next_page(struct archive *a)
{
        struct item_filter f = {
                .states = 1u << ITEM_SUCCEEDED, .limit = ARCHIVE_PAGE, .after_index = a->cursor};
        int next = -1;

        items_free(a->items, a->nitems);
        a->items = NULL;
        a->nitems = a->next = 0;
        int r = store_item_list(a->store, a->job_id, &f, &a->items, &a->nitems, &next);
        if (r < 0)
                return r;
        a->cursor = next;
        return 0;
}

/* Has this path been sent? If not, remember it. */
static int path_seen(struct archive *a, const char *path, bool *ret_seen)
{
        if (strmap_get(a->sent, path)) {
                *ret_seen = true;
                return 0;
        }
        char *key = strdup(path);
        if (!key || strmap_put(a->sent, key, key, NULL) < 0) {
                free(key);
                return -ENOMEM;
        }
        *ret_seen = false;
        return 0;
}

/* Open the item's file for the archive: 1 with a->fd and the headers
 * ready, 0 to leave the item out, -errno to end the stream. */
static int entry_open(struct archive *a, const struct item *it)
{
        struct stat st;
        bool seen;
        size_t prefix = strlen(a->job_id);

        if (!it->path || node_elsewhere(it, a->self[0] ? a->self : NULL))
                return 0;
        int r = path_seen(a, it->path, &seen);
        if (r < 0 || seen)
                return r;
        int fd = open_beneath(a->dir_fd, it->path);
        if (fd < 0) {
                if (fd != -ENOENT && fd != -ENOTDIR)
                        log_warning("api: job %s: archive leaves out item %d (%s): %s", a->job_id, it->index,
                                    it->path, strerror(-fd));
                return 0;
        }
        if (fstat(fd, &st) < 0) {
                close(fd);
                return 0;
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        const char *name = it->path;
        if (strncmp(name, a->job_id, prefix) == 0 && name[prefix] == '/')
                name += prefix + 1; /* <source>/<name> */
        entry_head(a, name, st.st_size, st.st_mtime);
        a->fd = fd;
        a->left = st.st_size;
        a->zeros = round_block(st.st_size) - st.st_size;
        return 1;
}

/* Line up the next entry, or the trailer when there is none. */
static int archive_advance(struct archive *a)
{
        for (;;) {
                if (a->next == a->nitems && a->cursor < 0) {
                        a->zeros = 2 * TAR_BLOCK;
                        a->zeros += (TAR_RECORD - (a->total + a->zeros) % TAR_RECORD) % TAR_RECORD;
                        a->ended = true;
                        return 0;
                }
                if (a->next == a->nitems) {
                        int r = next_page(a);
                        if (r < 0)
                                return r;
                        continue;
                }
                int r = entry_open(a, &a->items[a->next++]);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
}

/* Fill buf from the head, the file and the padding, in that order. */
static ssize_t archive_fill(struct archive *a, char *buf, size_t max)
{
        size_t n = 0, k;

        while (n < max) {
                if (a->head_off < a->head_len) {
                        k = a->head_len - a->head_off < max - n ? a->head_len - a->head_off : max - n;
                        memcpy(buf + n, a->head + a->head_off, k);
                        a->head_off += k;
                } else if (a->fd >= 0 && a->left > 0) {
                        k = (uint64_t)a->left < max - n ? (size_t)a->left : max - n;
                        ssize_t got = read(a->fd, buf + n, k);
                        if (got <= 0) { /* the file shrank or failed: the archive cannot be whole */
                                log_warning("api: job %s: archive: a file ended early", a->job_id);
                                a->failed = true;
                                break;
                        }
                        k = (size_t)got;
                        a->left -= got;
                } else if (a->zeros > 0) {
                        k = (uint64_t)a->zeros < max - n ? (size_t)a->zeros : max - n;
                        memset(buf + n, 0, k);
                        a->zeros -= (int64_t)k;
                } else if (a->ended) {
                        break;
                } else {
                        k = 0;
                        if (a->fd >= 0)
                                close(a->fd);
                        a->fd = -1;
                        int r = archive_advance(a);
                        if (r < 0) {
                                log_warning("api: job %s: archive: %s", a->job_id, strerror(-r));
                                a->failed = true;
                                break;
                        }
                }
                n += k;
                a->total += (int64_t)k;
        }
        return (ssize_t)n;
}

static ssize_t archive_read(void *cls, uint64_t pos, char *buf, size_t max)
{
        struct archive *a = cls;

        (void)pos;
        if (a->failed)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        ssize_t n = archive_fill(a, buf, max);
        if (n > 0)
                return n;
        return a->failed ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
}

static void archive_free(void *cls)
{
        struct archive *a = cls;
        const char *key;
        void *value;
        size_t pos = 0;

        if (!a)
                return;
        if (a->fd >= 0)
                close(a->fd);
        if (a->dir_fd >= 0)
                close(a->dir_fd);
        items_free(a->items, a->nitems);
        while (a->sent && strmap_next(a->sent, &pos, &key, &value))
                free(value);
        strmap_free(a->sent);
        request_store_release(a->h, a->store);
        free(a);
}

enum MHD_Result files_archive(struct request *rq)
{
        const char *id = job_id_arg(rq);
        struct archive *a;
        struct store *s;
        struct job *j;
        char buf[64];
        int r;

        if (!id)
                return reply_problem(rq, 404, NULL, "no such job");
        if ((r = request_store(rq, &s)) < 0 || (r = store_job_get(s, id, &j)) < 0)
                return reply_store_error(rq, r, "job");
        job_free(j);
        if (!(a = calloc(1, sizeof(*a))))
                return reply_problem(rq, 500, NULL, "out of memory");
        a->h = rq->h;
        a->fd = -1;
        a->cursor = -1;
        memcpy(a->job_id, id, JOB_ID_LEN + 1);
        node_self(rq->h, a->self, sizeof(a->self));
        a->store = rq->store; /* the archive keeps the request's store connection */
        rq->store = NULL;
        a->dir_fd = open_download_dir(rq->h->cfg);
        if (a->dir_fd < 0 && a->dir_fd != -ENOENT) {
                r = a->dir_fd;
                archive_free(a);
                return reply_problem(rq, 500, NULL, "cannot open DOWNLOAD_DIR: %s", strerror(-r));
        }
        r = !(a->sent = strmap_new()) ? -ENOMEM : a->dir_fd < 0 ? 0 : next_page(a);
        if (r < 0) { /* no DOWNLOAD_DIR yet: nothing to send */
                archive_free(a);
                return reply_store_error(rq, r, "job");
        }
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, ARCHIVE_BLOCK_SIZE,
                                                                      archive_read, a, archive_free);
        if (!resp) {
                archive_free(a);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-tar");
        snprintf(buf, sizeof(buf), "attachment; filename=\"%s.tar\"", id);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, buf);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_X_CONTENT_TYPE_OPTIONS, "nosniff");
        return reply_queue(rq, MHD_HTTP_OK, resp);
}

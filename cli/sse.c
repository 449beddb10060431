/* sse: the event-stream parser. A line ends at CRLF, LF or CR (a CR at the
 * end of one piece and a LF at the start of the next are one ending); a
 * blank line dispatches the event gathered so far when it has data. Fields:
 * "data" (appended, lines joined by LF), "event", "id" (kept across events,
 * ignored when it holds a NUL), anything else and ":" comments ignored.
 * Lines and data are bounded by SSE_LINE_MAX and SSE_DATA_MAX so a server
 * that never ends a line cannot grow the client without limit. */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sse.h"

void sse_init(struct sse_parser *p, sse_event_fn on_event, void *userdata)
{
        memset(p, 0, sizeof(*p));
        p->on_event = on_event;
        p->userdata = userdata;
}

void sse_clear(struct sse_parser *p)
{
        free(p->line);
        free(p->data);
        p->line = p->data = NULL;
        p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

/* Make room for n more bytes plus a NUL in *buf. */
static int grow(char **buf, size_t *cap, size_t len, size_t n, size_t max)
{
        if (len + n > max)
                return -E2BIG;
        if (len + n + 1 <= *cap)
                return 0;
        size_t c = *cap ? *cap : 256;
        while (c < len + n + 1)
                c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
                return -ENOMEM;
        *buf = b;
        *cap = c;
        return 0;
}

static int dispatch(struct sse_parser *p)
{
        int r = 0;

        if (p->has_data) {
                if (p->data_len > 0 && p->data[p->data_len - 1] == '\n')
                        p->data[--p->data_len] = '\0';
                struct sse_event ev = {.name = p->name[0] ? p->name : "message",
                                       .id = p->id,
                                       .data = p->data ? p->data : "",
                                       .data_len = p->data_len};
                r = p->on_event(&ev, p->userdata);
        }
        p->has_data = false;
        p->data_len = 0;
        if (p->data)
                p->data[0] = '\0';
        p->name[0] = '\0';
        return r;
}

static void copy_field(char *dst, size_t size, const char *value, size_t len)
{
        if (len >= size)
                len = size - 1;
        memcpy(dst, value, len);
        dst[len] = '\0';
}

/* One complete line (without its ending; may hold NULs, so len counts). */
static int on_line(struct sse_parser *p, const char *line, size_t len)
{
        if (len == 0)
                return dispatch(p);
        if (line[0] == ':')
                return 0;
        const char *colon = memchr(line, ':', len);
        size_t flen = colon ? (size_t)(colon - line) : len;
        const char *value = colon ? colon + 1 : line + len;
        size_t vlen = len - (size_t)(value - line);

        if (vlen > 0 && value[0] == ' ') {
                value++;
                vlen--;
        }
        if (flen == 4 && memcmp(line, "data", 4) == 0) {
                int r = grow(&p->data, &p->data_cap, p->data_len, vlen + 1, SSE_DATA_MAX);
                if (r < 0)
                        return r;
                memcpy(p->data + p->data_len, value, vlen);
                p->data_len += vlen;
                p->data[p->data_len++] = '\n';
                p->data[p->data_len] = '\0';
                p->has_data = true;
        } else if (flen == 5 && memcmp(line, "event", 5) == 0)
                copy_field(p->name, sizeof(p->name), value, vlen);
        else if (flen == 2 && memcmp(line, "id", 2) == 0 && !memchr(value, '\0', vlen))
                copy_field(p->id, sizeof(p->id), value, vlen);
        return 0;
}

/* Bytes before the first CR or LF of s[0..len), or len. */
static size_t line_span(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (s[i] == '\r' || s[i] == '\n')
                        return i;
        return len;
}

int sse_feed(struct sse_parser *p, const char *buf, size_t len)
{
        size_t i = 0;

        if (p->after_cr && len > 0 && buf[0] == '\n')
                i = 1;
        p->after_cr = false;
        while (i < len) {
                size_t n = line_span(buf + i, len - i);
                int r;
                if (i + n == len) { /* no line ending in this piece: keep the rest */
                        if ((r = grow(&p->line, &p->line_cap, p->line_len, n, SSE_LINE_MAX)) < 0)
                                return r;
                        memcpy(p->line + p->line_len, buf + i, n);
                        p->line_len += n;
                        return 0;
                }
                if (p->line_len > 0) {
                        if ((r = grow(&p->line, &p->line_cap, p->line_len, n, SSE_LINE_MAX)) < 0)
                                return r;
                        memcpy(p->line + p->line_len, buf + i, n);
                        r = on_line(p, p->line, p->line_len + n);
                        p->line_len = 0;
                } else
                        r = n > SSE_LINE_MAX ? -E2BIG : on_line(p, buf + i, n);
                if (r < 0)
                        return r;
                i += n;
                if (buf[i] == '\r') {
                        if (i + 1 == len)
                                p->after_cr = true;
                        else if (buf[i + 1] == '\n')
                                i++;
                }
                i++;
        }
        return 0;
}

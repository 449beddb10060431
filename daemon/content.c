/* content: decide what a body is from its first bytes (libmagic), whether
 * ACCEPT_CONTENT lets it through, and which extension a type earns.
 *
 * A sniffer owns one magic_t with the compiled database loaded at
 * sniffer_new() (magic.mgc from libmagic-mgc, no network); libmagic handles
 * are not thread-safe, so each engine thread keeps its own. At most
 * CONTENT_SNIFF_BYTES of a buffer are looked at.
 *
 * libmagic names SVG "image/svg+xml" only when <svg, an XML declaration or
 * an SVG doctype comes first; an SVG that opens with a comment (editors
 * write one) comes back as text/plain or text/xml. When libmagic answers
 * with a text or XML type, svg_root() looks past the prolog for an <svg
 * root element and the answer becomes image/svg+xml.
 *
 * Scriptable types (SVG, HTML, XHTML, XML and JavaScript: what a browser
 * runs scripts from when it opens the file) are never let through by a
 * class ("image", "text", or one with a wildcard subtype): ACCEPT_CONTENT must name them
 * ("image/svg+xml"), or be "any". An SVG with a <script> is an image to
 * libmagic. */
#include "autoconfig.h" /* autoconf's; "config.h" would find daemon/config.h */

#include <errno.h>
#include <magic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/str.h"
#include "daemon/content.h"

#define MIME_TYPE_MAX 127 /* longest "type/subtype" content_* look at, bytes */

struct sniffer {
        magic_t magic; /* loaded database; one thread at a time */
};

int sniffer_new(struct sniffer **ret)
{
        struct sniffer *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        /* No decompression: a gzip body is what it is. No encoding check
         * would lose text/html and text/xml, so that one stays on. */
        s->magic = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR | MAGIC_NO_CHECK_COMPRESS | MAGIC_NO_CHECK_TAR |
                              MAGIC_NO_CHECK_APPTYPE);
        if (!s->magic) {
                r = errno > 0 ? -errno : -ENOMEM;
                goto fail;
        }
        if (magic_load(s->magic, NULL) != 0) {
                r = magic_errno(s->magic) > 0 ? -magic_errno(s->magic) : -ENOENT;
                goto fail;
        }
        *ret = s;
        return 0;
fail:
        sniffer_free(s);
        return r;
}

void sniffer_free(struct sniffer *s)
{
        if (!s)
                return;
        if (s->magic)
                magic_close(s->magic);
        free(s);
}

/* Position after the first occurrence of needle in [p, end), or end. */
static const char *skip_past(const char *p, const char *end, const char *needle)
{
        size_t n = strlen(needle);

        for (; (size_t)(end - p) >= n; p++)
                if (memcmp(p, needle, n) == 0)
                        return p + n;
        return end;
}

static const char *skip_space(const char *p, const char *end)
{
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
                p++;
        return p;
}

/* A doctype may carry an internal subset in [...] with '>' inside. */
static const char *skip_doctype(const char *p, const char *end)
{
        for (; p < end; p++) {
                if (*p == '[')
                        p = skip_past(p, end, "]") - 1;
                else if (*p == '>')
                        return p + 1;
        }
        return end;
}

static bool has_prefix(const char *p, const char *end, const char *prefix, bool nocase)
{
        size_t n = strlen(prefix);

        if ((size_t)(end - p) < n)
                return false;
        return nocase ? strncasecmp(p, prefix, n) == 0 : memcmp(p, prefix, n) == 0;
}

/* Is the root element of this XML text <svg>? Skips a BOM, whitespace,
 * the XML declaration, processing instructions, comments and a doctype. */
static bool svg_root(const char *p, size_t len)
{
        const char *end = p + len;

        if (has_prefix(p, end, "\xef\xbb\xbf", false))
                p += 3;
        for (;;) {
                p = skip_space(p, end);
                if (has_prefix(p, end, "<?", false))
                        p = skip_past(p, end, "?>");
                else if (has_prefix(p, end, "<!--", false))
                        p = skip_past(p + 4, end, "-->");
                else if (has_prefix(p, end, "<!DOCTYPE", true))
                        p = skip_doctype(p, end);
                else
                        break;
        }
        if (!has_prefix(p, end, "<svg", false) || end - p < 5)
                return false;
        return p[4] == '>' || p[4] == '/' || p[4] == ' ' || p[4] == '\t' || p[4] == '\r' || p[4] == '\n';
}

static bool maybe_svg(const char *mime)
{
        return str_startswith(mime, "text/") || strcmp(mime, "application/xml") == 0;
}

/* The four image formats most downloads are, by their fixed signatures:
 * libmagic walks its whole rule set for them and took 11% of the daemon's
 * CPU on small files (bench/RESULTS.md). Anything else goes to libmagic. */
static const char *fast_mime(const unsigned char *b, size_t len)
{
        if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
                return "image/png";
        if (len >= 4 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff && b[3] >= 0xc0)
                return "image/jpeg";
        if (len >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
                return "image/gif";
        if (len >= 16 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBPVP8", 7) == 0)
                return "image/webp";
        return NULL;
}

int sniffer_mime(struct sniffer *s, const void *buf, size_t len, char **ret)
{
        const char *mime;
        char *copy;

        if (len > CONTENT_SNIFF_BYTES)
                len = CONTENT_SNIFF_BYTES;
        mime = fast_mime(buf, len);
        if (!mime)
                mime = magic_buffer(s->magic, buf, len);
        if (!mime)
                return magic_errno(s->magic) > 0 ? -magic_errno(s->magic) : -EIO;
        if (maybe_svg(mime) && svg_root(buf, len))
                mime = "image/svg+xml";
        copy = strdup(mime);
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        return 0;
}

/* Copy the bare "type/subtype" of mime (parameters and spaces dropped) into
 * out; false when it does not fit or has no '/'. */
static bool mime_essence(const char *mime, char out[static MIME_TYPE_MAX + 1])
{
        size_t len;

        while (*mime == ' ' || *mime == '\t')
                mime++;
        len = strcspn(mime, "; \t");
        if (len == 0 || len > MIME_TYPE_MAX)
                return false;
        memcpy(out, mime, len);
        out[len] = '\0';
        return strchr(out, '/') != NULL;
}

/* Does a browser run scripts from a file of this bare type? */
static bool scriptable(const char *type)
{
        static const char *const subtypes[] = {"svg",        "html",         "xhtml",     "xml",
                                               "javascript", "x-javascript", "ecmascript"};
        const char *sub = strchr(type, '/') + 1;
        size_t n = strlen(sub);

        if (n > 4 && strcasecmp(sub + n - 4, "+xml") == 0) /* image/svg+xml, application/xhtml+xml, ... */
                return true;
        for (size_t i = 0; i < sizeof(subtypes) / sizeof(subtypes[0]); i++)
                if (strcasecmp(sub, subtypes[i]) == 0)
                        return true;
        return false;
}

bool content_accepted(const char *accept, const char *mime)
{
        char type[MIME_TYPE_MAX + 1], top[MIME_TYPE_MAX + 3];
        size_t n;

        if (!accept)
                return false;
        if (str_list_contains(accept, "any"))
                return true;
        if (!mime || !mime_essence(mime, type))
                return false;
        if (str_list_contains(accept, type))
                return true;
        if (scriptable(type))
                return false; /* only when named */
        /* Then the top-level type, named bare or with a wildcard subtype. */
        n = strcspn(type, "/");
        memcpy(top, type, n);
        top[n] = '\0';
        if (str_list_contains(accept, top))
                return true;
        strcat(top, "/*");
        return str_list_contains(accept, top);
}

static const struct {
        const char *mime;
        const char *ext;
} extensions[] = {
        {"image/jpeg", "jpg"},
        {"image/pjpeg", "jpg"},
        {"image/png", "png"},
        {"image/apng", "png"},
        {"image/gif", "gif"},
        {"image/webp", "webp"},
        {"image/avif", "avif"},
        {"image/heic", "heic"},
        {"image/heic-sequence", "heic"},
        {"image/heif", "heif"},
        {"image/heif-sequence", "heif"},
        {"image/jxl", "jxl"},
        {"image/bmp", "bmp"},
        {"image/x-ms-bmp", "bmp"},
        {"image/tiff", "tiff"},
        {"image/svg+xml", "svg"},
        {"image/x-icon", "ico"},
        {"image/vnd.microsoft.icon", "ico"},
        {"video/mp4", "mp4"},
        {"video/x-m4v", "m4v"},
        {"video/quicktime", "mov"},
        {"video/webm", "webm"},
        {"video/x-matroska", "mkv"},
        {"video/x-msvideo", "avi"},
        {"video/mpeg", "mpg"},
        {"video/mp2t", "ts"},
        {"video/3gpp", "3gp"},
        {"video/x-flv", "flv"},
        {"video/ogg", "ogg"},
        {"audio/mpeg", "mp3"},
        {"audio/ogg", "ogg"},
        {"application/ogg", "ogg"},
        {"audio/flac", "flac"},
        {"audio/x-flac", "flac"},
        {"audio/wav", "wav"},
        {"audio/x-wav", "wav"},
        {"audio/vnd.wave", "wav"},
        {"audio/mp4", "m4a"},
        {"audio/x-m4a", "m4a"},
        {"audio/aac", "aac"},
        {"audio/opus", "opus"},
        {"application/pdf", "pdf"},
        {"application/json", "json"},
        {"application/xml", "xml"},
        {"application/zip", "zip"},
        {"application/gzip", "gz"},
        {"text/plain", "txt"},
        {"text/html", "html"},
        {"text/xml", "xml"},
        {"text/csv", "csv"},
};

const char *content_extension(const char *mime)
{
        char type[MIME_TYPE_MAX + 1];

        if (!mime || !mime_essence(mime, type))
                return NULL;
        for (size_t i = 0; i < sizeof(extensions) / sizeof(extensions[0]); i++)
                if (strcasecmp(extensions[i].mime, type) == 0)
                        return extensions[i].ext;
        return NULL;
}

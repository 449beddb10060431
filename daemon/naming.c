/* naming: the one path component a download is stored under.
 *
 * Every name that leaves this module has been through sanitize(): it holds
 * no '/', '\\', NUL, C0/C1 control or bidi-override characters; it is valid
 * UTF-8; it neither starts with '.' nor ends with '.' or ' ' (so it is
 * never "." or ".."); it is 1..NAME_MAX_BYTES bytes. Cuts land on character
 * boundaries and keep a short extension.
 *
 * URLs are split by libcurl's URL API and decoded by curl_easy_unescape()
 * (its handle argument is ignored, so NULL is passed). libcurl has no public
 * Content-Disposition parser, so the RFC 6266 / RFC 8187 subset lives here;
 * the UTF-8 check is the RFC 3629 table, too small to warrant glib or
 * libunistring as a dependency. */
#include "autoconfig.h" /* autoconf's; "config.h" would find daemon/config.h */

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/naming.h"

#define EXT_MAX_BYTES 16 /* longest extension (without dot) kept as one */
#define FALLBACK_NAME "file"

/* Length of the well-formed UTF-8 sequence at p (at most avail bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t avail)
{
        unsigned char lo = 0x80, hi = 0xbf;
        size_t n;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                n = 2;
        else if (p[0] >= 0xe0 && p[0] <= 0xef)
                n = 3;
        else if (p[0] >= 0xf0 && p[0] <= 0xf4)
                n = 4;
        else
                return 0;
        if (p[0] == 0xe0)
                lo = 0xa0;
        else if (p[0] == 0xed)
                hi = 0x9f; /* no surrogates */
        else if (p[0] == 0xf0)
                lo = 0x90;
        else if (p[0] == 0xf4)
                hi = 0x8f; /* nothing past U+10FFFF */
        if (avail < n || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if (p[i] < 0x80 || p[i] > 0xbf)
                        return 0;
        return n;
}

/* C0, DEL, C1, U+2028/2029 and the bidi marks, embeddings, overrides and
 * isolates, which can make "gpj.exe" display as "exe.jpg". */
static bool unsafe_char(const unsigned char *p, size_t n)
{
        if (n == 1)
                return p[0] < 0x20 || p[0] == 0x7f || p[0] == '/' || p[0] == '\\';
        if (n == 2)
                return p[0] == 0xc2 && p[1] < 0xa0;
        if (n == 3 && p[0] == 0xe2 && p[1] == 0x80)
                return p[2] == 0x8e || p[2] == 0x8f || (p[2] >= 0xa8 && p[2] <= 0xae);
        if (n == 3 && p[0] == 0xe2 && p[1] == 0x81)
                return p[2] >= 0xa6 && p[2] <= 0xa9;
        return false;
}

/* Largest cut <= max that does not split a UTF-8 sequence of s. */
static size_t utf8_cut(const char *s, size_t max)
{
        while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
                max--;
        return max;
}

static size_t trim_tail(const char *s, size_t len)
{
        while (len > 0 && (s[len - 1] == '.' || s[len - 1] == ' '))
                len--;
        return len;
}

/* Offset of the '.' that starts name's extension, or len when it has none:
 * 1..EXT_MAX_BYTES bytes, no space or dot, and not the leading dot. */
static size_t ext_offset(const char *name, size_t len)
{
        const char *dot = memrchr(name, '.', len);

        if (!dot || dot == name)
                return len;
        size_t elen = len - (size_t)(dot - name) - 1;
        if (elen == 0 || elen > EXT_MAX_BYTES || memchr(dot, ' ', elen + 1))
                return len;
        return (size_t)(dot - name);
}

/* Fit stem + tail into NAME_MAX_BYTES by cutting stem: returns a malloc'd
 * "<stem><tail>"; a cut stem loses trailing dots and spaces, an empty one
 * becomes FALLBACK_NAME. */
static int join_fit(const char *stem, size_t slen, const char *tail, size_t tlen, char **ret)
{
        char *out;

        if (tlen >= NAME_MAX_BYTES)
                return -ENAMETOOLONG;
        if (slen + tlen > NAME_MAX_BYTES)
                slen = trim_tail(stem, utf8_cut(stem, NAME_MAX_BYTES - tlen));
        if (slen == 0) {
                stem = FALLBACK_NAME;
                slen = strlen(FALLBACK_NAME);
        }
        out = malloc(slen + tlen + 1);
        if (!out)
                return -ENOMEM;
        memcpy(out, stem, slen);
        memcpy(out + slen, tail, tlen);
        out[slen + tlen] = '\0';
        *ret = out;
        return 0;
}

/* sanitize() on len bytes that may hold NULs (a decoded "%00"). */
static int sanitize_n(const char *in, size_t len, char **ret)
{
        const unsigned char *p = (const unsigned char *)in;
        size_t start = 0, olen = 0, e;
        char *buf;
        int r;

        buf = malloc(len + 1);
        if (!buf)
                return -ENOMEM;
        for (size_t i = 0; i < len;) {
                size_t n = utf8_len(p + i, len - i);
                if (n == 0 || unsafe_char(p + i, n)) {
                        buf[olen++] = '_';
                        i += n ? n : 1;
                        continue;
                }
                memcpy(buf + olen, p + i, n);
                olen += n;
                i += n;
        }
        while (start < olen && (buf[start] == '.' || buf[start] == ' '))
                start++;
        olen = start + trim_tail(buf + start, olen - start);
        e = ext_offset(buf + start, olen - start);
        r = join_fit(buf + start, e, buf + start + e, olen - start - e, ret);
        free(buf);
        return r;
}

int naming_sanitize(const char *name, char **ret) { return sanitize_n(name, strlen(name), ret); }

static int sanitize_escaped(const char *s, size_t len, char **ret)
{
        char *raw;
        int rlen, r;

        if (len > INT_MAX)
                return -E2BIG;
        raw = curl_easy_unescape(NULL, s, (int)len, &rlen);
        if (!raw)
                return -ENOMEM;
        r = sanitize_n(raw, (size_t)rlen, ret);
        curl_free(raw);
        return r;
}

int naming_from_url(const char *url, char **ret)
{
        CURLU *u;
        char *path = NULL;
        const char *seg;
        int r;

        u = curl_url();
        if (!u)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
                r = -EINVAL;
                goto fail;
        }
        /* Split before decoding: an encoded "%2F" stays inside the segment. */
        seg = strrchr(path, '/');
        seg = seg ? seg + 1 : path;
        r = sanitize_escaped(seg, strlen(seg), ret);
fail:
        curl_free(path);
        curl_url_cleanup(u);
        return r;
}

/* ---- Content-Disposition (RFC 6266) ---- */

struct cd_param {
        const char *name; /* parameter name, not terminated */
        size_t nlen;      /* bytes of name */
        char *value;      /* malloc'd: unquoted, or NULL when absent */
};

static const char *skip_ows(const char *p)
{
        while (*p == ' ' || *p == '\t')
                p++;
        return p;
}

/* Value after '=' at *pp: a quoted-string (backslash escapes) or a token
 * up to ';' with trailing blanks dropped. Advances *pp past it. */
static char *cd_value(const char **pp)
{
        const char *p = skip_ows(*pp);
        char *out = malloc(strlen(p) + 1);
        size_t n = 0;

        if (!out)
                return NULL;
        if (*p == '"') {
                for (p++; *p && *p != '"'; p++) {
                        if (*p == '\\' && p[1])
                                p++;
                        out[n++] = *p;
                }
                if (*p == '"')
                        p++;
        } else {
                for (; *p && *p != ';'; p++)
                        out[n++] = *p;
                while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t'))
                        n--;
        }
        out[n] = '\0';
        *pp = p;
        return out;
}

/* Next "name[=value]" parameter after *pp; false at the end. */
static bool cd_next(const char **pp, struct cd_param *prm)
{
        const char *p = *pp;

        p += strcspn(p, ";");
        if (!*p)
                return false;
        p = skip_ows(p + 1);
        prm->name = p;
        p += strcspn(p, "=; \t");
        prm->nlen = (size_t)(p - prm->name);
        p = skip_ows(p);
        prm->value = NULL;
        if (*p == '=') {
                p++;
                prm->value = cd_value(&p);
        }
        *pp = p;
        return true;
}

static bool cd_is(const struct cd_param *prm, const char *name)
{
        return prm->nlen == strlen(name) && strncasecmp(prm->name, name, prm->nlen) == 0;
}

/* Last '/' or '\\' component: senders are told not to send paths
 * (RFC 6266 4.3) and some do. */
static const char *basename_any(const char *s, size_t *len)
{
        const char *b = s;

        for (size_t i = 0; i < *len; i++)
                if (s[i] == '/' || s[i] == '\\')
                        b = s + i + 1;
        *len -= (size_t)(b - s);
        return b;
}

/* The sanitized base name of len bytes at s; -ENOENT when nothing but
 * dots and spaces is left, so the caller falls back to the URL's name. */
static int cd_name(const char *s, size_t len, char **ret)
{
        const char *b = basename_any(s, &len);

        if (strspn(b, ". ") >= len)
                return -ENOENT;
        return sanitize_n(b, len, ret);
}

/* ISO-8859-1 bytes to UTF-8 (each byte is its code point). */
static char *latin1_to_utf8(const char *in, size_t len, size_t *olen)
{
        char *out = malloc(2 * len + 1);
        size_t n = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)in[i];
                if (c < 0x80) {
                        out[n++] = (char)c;
                } else {
                        out[n++] = (char)(0xc0 | (c >> 6));
                        out[n++] = (char)(0x80 | (c & 0x3f));
                }
        }
        out[n] = '\0';
        *olen = n;
        return out;
}

/* filename*= ext-value (RFC 8187): charset'language'percent-encoded.
 * UTF-8 and ISO-8859-1 are understood; others give -ENOENT. */
static int name_from_ext(const char *v, char **ret)
{
        const char *q1 = strchr(v, '\''), *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
        char *raw, *conv = NULL;
        size_t len, clen;
        const char *b;
        int rlen, r;

        if (!q2)
                return -ENOENT;
        clen = (size_t)(q1 - v);
        bool utf8 = clen == 5 && strncasecmp(v, "utf-8", 5) == 0;
        bool latin1 = clen == 10 && strncasecmp(v, "iso-8859-1", 10) == 0;
        if (!utf8 && !latin1)
                return -ENOENT;
        raw = curl_easy_unescape(NULL, q2 + 1, 0, &rlen);
        if (!raw)
                return -ENOMEM;
        len = (size_t)rlen;
        b = raw;
        if (latin1) {
                conv = latin1_to_utf8(raw, len, &len);
                if (!conv) {
                        r = -ENOMEM;
                        goto fail;
                }
                b = conv;
        }
        r = cd_name(b, len, ret);
fail:
        free(conv);
        curl_free(raw);
        return r;
}

int naming_from_content_disposition(const char *value, char **ret)
{
        struct cd_param prm;
        char *plain = NULL, *ext = NULL;
        const char *p = value;
        int r = -ENOENT;

        while (cd_next(&p, &prm)) {
                if (prm.value && cd_is(&prm, "filename*") && !ext)
                        ext = prm.value;
                else if (prm.value && cd_is(&prm, "filename") && !plain)
                        plain = prm.value;
                else
                        free(prm.value);
        }
        if (ext)
                r = name_from_ext(ext, ret);
        if (r == -ENOENT && plain)
                r = cd_name(plain, strlen(plain), ret);
        free(ext);
        free(plain);
        return r;
}

/* ---- extensions and variants ---- */

static const char *const ext_aliases[][5] = {
        {"jpg", "jpeg", "jpe", "jfif", NULL},
        {"tif", "tiff", NULL},
        {"mpg", "mpeg", "mpe", NULL},
        {"htm", "html", NULL},
        {"mp4", "m4v", NULL},
        {"mov", "qt", NULL},
        {"heic", "heif", NULL},
        {"ogg", "ogv", "oga", "ogx", NULL},
        {"mkv", "mk3d", NULL},
        {"txt", "text", NULL},
};

static int alias_group(const char *ext, size_t len)
{
        for (size_t g = 0; g < sizeof(ext_aliases) / sizeof(ext_aliases[0]); g++)
                for (size_t i = 0; ext_aliases[g][i]; i++)
                        if (strlen(ext_aliases[g][i]) == len &&
                            strncasecmp(ext_aliases[g][i], ext, len) == 0)
                                return (int)g;
        return -1;
}

static bool same_ext(const char *a, size_t alen, const char *b)
{
        size_t blen = strlen(b);
        int g;

        if (alen == blen && strncasecmp(a, b, alen) == 0)
                return true;
        g = alias_group(a, alen);
        return g >= 0 && g == alias_group(b, blen);
}

static bool valid_ext(const char *ext)
{
        size_t len = strlen(ext);

        if (len == 0 || len > EXT_MAX_BYTES)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!strchr("abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-",
                            ext[i]))
                        return false;
        return true;
}

int naming_with_extension(const char *name, const char *ext, char **ret)
{
        char *clean, tail[EXT_MAX_BYTES + 2];
        size_t len, e;
        int r;

        if (ext && !valid_ext(ext))
                return -EINVAL;
        r = naming_sanitize(name, &clean);
        if (r < 0)
                return r;
        len = strlen(clean);
        e = ext_offset(clean, len);
        if (!ext || (e < len && same_ext(clean + e + 1, len - e - 1, ext))) {
                *ret = clean;
                return 0;
        }
        snprintf(tail, sizeof(tail), ".%s", ext);
        r = join_fit(clean, len, tail, strlen(tail), ret);
        free(clean);
        return r;
}

int naming_variant(const char *name, unsigned n, char **ret)
{
        char *clean, *tail = NULL;
        size_t len, e;
        int r;

        r = naming_sanitize(name, &clean);
        if (r < 0)
                return r;
        if (n == 0) {
                *ret = clean;
                return 0;
        }
        len = strlen(clean);
        e = ext_offset(clean, len);
        if (asprintf(&tail, "-%u%s", n, clean + e) < 0) {
                tail = NULL;
                r = -ENOMEM;
                goto fail;
        }
        r = join_fit(clean, e, tail, strlen(tail), ret);
fail:
        free(tail);
        free(clean);
        return r;
}

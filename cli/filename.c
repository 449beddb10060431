/* filename: Content-Disposition (RFC 6266) to a name that can only ever
 * be a plain file in the current directory. The server's name is a hint,
 * never a path: whatever it holds ("../x", "/etc/passwd", "a\b", ".",
 * control characters) is reduced to its last component without leading
 * dots, and refused when nothing is left. */
#include "autoconfig.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/filename.h"

#define PARAM_MAX 1024 /* bytes of one parameter value considered */

int filename_safe(const char *name, char **ret)
{
        const char *slash = strrchr(name, '/'), *bslash = strrchr(name, '\\');
        const char *base = name;
        char *out;
        size_t n;

        if (slash && slash + 1 > base)
                base = slash + 1;
        if (bslash && bslash + 1 > base)
                base = bslash + 1;
        while (*base == '.')
                base++;
        n = strlen(base);
        if (n > FILENAME_MAX_BYTES) {
                n = FILENAME_MAX_BYTES;
                while (n > 0 && ((unsigned char)base[n] & 0xC0) == 0x80)
                        n--;
        }
        if (n == 0)
                return -ENOENT;
        if (!(out = strndup(base, n)))
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)out[i] < 0x20 || out[i] == 0x7F)
                        out[i] = '_';
        *ret = out;
        return 0;
}

static const char *skip_space(const char *p)
{
        while (*p == ' ' || *p == '\t')
                p++;
        return p;
}

/* The value at p (a quoted-string or a token) into buf; returns the
 * position after it. */
static const char *param_value(const char *p, char *buf, size_t size)
{
        size_t n = 0;

        if (*p == '"') {
                for (p++; *p && *p != '"'; p++) {
                        if (*p == '\\' && p[1])
                                p++;
                        if (n + 1 < size)
                                buf[n++] = *p;
                }
                if (*p == '"')
                        p++;
        } else {
                for (; *p && *p != ';'; p++)
                        if (n + 1 < size)
                                buf[n++] = *p;
                while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
                        n--;
        }
        buf[n] = '\0';
        return p;
}

static int hex(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* An RFC 8187 ext-value (charset'language'pct-encoded) in UTF-8 or
 * US-ASCII, decoded in place; false when it is not one or holds a NUL. */
static bool ext_value_decode(char *v)
{
        char *q1 = strchr(v, '\''), *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
        size_t o = 0;

        if (!q2)
                return false;
        *q1 = '\0';
        if (strcasecmp(v, "UTF-8") != 0 && strcasecmp(v, "US-ASCII") != 0)
                return false;
        for (const char *p = q2 + 1; *p; p++) {
                if (*p == '%') {
                        int hi = hex(p[1]), lo = hi >= 0 ? hex(p[2]) : -1;
                        if (lo < 0 || (hi == 0 && lo == 0))
                                return false;
                        v[o++] = (char)(hi << 4 | lo);
                        p += 2;
                } else
                        v[o++] = *p;
        }
        v[o] = '\0';
        return true;
}

int filename_from_disposition(const char *header, char **ret)
{
        char plain[PARAM_MAX + 1] = "", ext[PARAM_MAX + 1] = "", value[PARAM_MAX + 1];
        const char *p = header ? strchr(header, ';') : NULL;

        while (p && *p) {
                p = skip_space(p + 1);
                size_t nlen = strcspn(p, "=;");
                const char *name = p;
                p += nlen;
                while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
                        nlen--;
                if (*p != '=')
                        continue;
                p = param_value(skip_space(p + 1), value, sizeof(value));
                if (nlen == 9 && strncasecmp(name, "filename*", 9) == 0 && !ext[0])
                        memcpy(ext, value, sizeof(ext));
                else if (nlen == 8 && strncasecmp(name, "filename", 8) == 0 && !plain[0])
                        memcpy(plain, value, sizeof(plain));
                p = strchr(p, ';');
        }
        if (ext[0] && ext_value_decode(ext)) {
                int r = filename_safe(ext, ret);
                if (r != -ENOENT)
                        return r;
        }
        if (plain[0])
                return filename_safe(plain, ret);
        return -ENOENT;
}

/* format: sizes in 1024-based units, durations, relative times, RFC 3339
 * parsing, and text made safe for a terminal. The server's strings
 * (labels, URLs, error messages) are shown through fmt_clean so that none
 * can move the cursor or change the terminal's state. */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#include "cli/format.h"

#define MS_PER_S  1000
#define UNIT_STEP 1024.0

char *fmt_size(int64_t bytes, char *buf, size_t size)
{
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        double v = (double)bytes;
        size_t u = 0;

        if (bytes < 0) {
                snprintf(buf, size, "-");
                return buf;
        }
        if (bytes < 1024) {
                snprintf(buf, size, "%lld B", (long long)bytes);
                return buf;
        }
        v /= UNIT_STEP;
        /* 1023.96 KiB would print as "1024.0 KiB": that is 1.0 MiB */
        while (v >= UNIT_STEP - 0.05 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= UNIT_STEP;
                u++;
        }
        snprintf(buf, size, "%.1f %s", v, units[u]);
        return buf;
}

char *fmt_speed(int64_t bytes_per_s, char *buf, size_t size)
{
        char s[FMT_SIZE_LEN];
        if (bytes_per_s < 0) {
                snprintf(buf, size, "-");
                return buf;
        }
        snprintf(buf, size, "%s/s", fmt_size(bytes_per_s, s, sizeof(s)));
        return buf;
}

char *fmt_duration(double seconds, char *buf, size_t size)
{
        if (!(seconds >= 0) || seconds > 1e12) {
                snprintf(buf, size, "-");
                return buf;
        }
        long long s = llround(seconds);
        if (s < 60)
                snprintf(buf, size, "%llds", s);
        else if (s < 3600)
                snprintf(buf, size, "%lldm%02llds", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%lldh%02lldm", s / 3600, s / 60 % 60);
        else
                snprintf(buf, size, "%lldd%02lldh", s / 86400, s / 3600 % 24);
        return buf;
}

char *fmt_ago(int64_t then_ms, int64_t now_ms, char *buf, size_t size)
{
        int64_t d = now_ms - then_ms;
        bool future = d < 0;
        long long s = (long long)((future ? -d : d) / MS_PER_S);
        long long n;
        char unit;

        if (s < 1) {
                snprintf(buf, size, "just now");
                return buf;
        }
        if (s < 60) {
                n = s;
                unit = 's';
        } else if (s < 3600) {
                n = s / 60;
                unit = 'm';
        } else if (s < 86400) {
                n = s / 3600;
                unit = 'h';
        } else {
                n = s / 86400;
                unit = 'd';
        }
        if (future)
                snprintf(buf, size, "in %lld%c", n, unit);
        else
                snprintf(buf, size, "%lld%c ago", n, unit);
        return buf;
}

/* n decimal digits at *p into *ret, advancing *p. */
static bool digits(const char **p, int n, int *ret)
{
        int v = 0;
        for (int i = 0; i < n; i++) {
                char c = (*p)[i];
                if (c < '0' || c > '9')
                        return false;
                v = v * 10 + (c - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

static bool expect(const char **p, char c)
{
        if (**p != c && !(c == 'T' && (**p == 't' || **p == ' ')))
                return false;
        (*p)++;
        return true;
}

int fmt_parse_time(const char *s, int64_t *ret_ms)
{
        struct tm tm = {0};
        int year, mon, day, hour, min, sec, ms = 0, off = 0;
        const char *p = s;

        if (!s || !digits(&p, 4, &year) || !expect(&p, '-') || !digits(&p, 2, &mon) || !expect(&p, '-') ||
            !digits(&p, 2, &day) || !expect(&p, 'T') || !digits(&p, 2, &hour) || !expect(&p, ':') ||
            !digits(&p, 2, &min) || !expect(&p, ':') || !digits(&p, 2, &sec))
                return -EINVAL;
        if (*p == '.') {
                int scale = 100, n = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, n++) {
                        ms += (*p - '0') * scale;
                        scale /= 10;
                }
                if (n == 0)
                        return -EINVAL;
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                int sign = *p++ == '-' ? -1 : 1, oh, om;
                if (!digits(&p, 2, &oh) || !expect(&p, ':') || !digits(&p, 2, &om) || oh > 23 || om > 59)
                        return -EINVAL;
                off = sign * (oh * 3600 + om * 60);
        } else
                return -EINVAL;
        if (*p || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
                return -EINVAL;
        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = sec;
        time_t t = timegm(&tm);
        *ret_ms = ((int64_t)t - off) * MS_PER_S + ms;
        return 0;
}

/* Length of the UTF-8 sequence at s (at most n bytes) and its code point;
 * 0 when it is not valid UTF-8. */
static size_t utf8_decode(const unsigned char *s, size_t n, unsigned *ret_cp)
{
        size_t len;
        unsigned cp;

        if (s[0] < 0x80) {
                *ret_cp = s[0];
                return 1;
        }
        if (s[0] >= 0xC2 && s[0] <= 0xDF) {
                len = 2;
                cp = s[0] & 0x1F;
        } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
                len = 3;
                cp = s[0] & 0x0F;
        } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
                len = 4;
                cp = s[0] & 0x07;
        } else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;
        *ret_cp = cp;
        return len;
}

char *fmt_clean(const char *s)
{
        size_t n = strlen(s), o = 0;
        char *out = malloc(n + 1);

        if (!out)
                return NULL;
        for (size_t i = 0; i < n;) {
                unsigned cp;
                size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
                if (len == 0 || cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) {
                        out[o++] = '?';
                        i += len ? len : 1;
                        continue;
                }
                memcpy(out + o, s + i, len);
                o += len;
                i += len;
        }
        out[o] = '\0';
        return out;
}

size_t fmt_width(const char *s)
{
        size_t n = strlen(s), w = 0;

        for (size_t i = 0; i < n;) {
                unsigned cp;
                size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
                int cw = len ? wcwidth((wchar_t)cp) : 1;
                w += cw < 0 ? 1 : (size_t)cw;
                i += len ? len : 1;
        }
        return w;
}

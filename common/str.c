/* str: helpers too small to deserve a dependency. */
#include "autoconfig.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/str.h"

char *str_dup(const char *s) { return s ? strdup(s) : NULL; }

bool str_startswith(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

bool str_list_contains(const char *list, const char *item)
{
        size_t ilen = strlen(item);
        const char *p = list;

        while (p && *p) {
                while (*p == ' ' || *p == ',')
                        p++;
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                while (len > 0 && p[len - 1] == ' ')
                        len--;
                if (len == ilen && len > 0 && strncasecmp(p, item, len) == 0)
                        return true;
                p = end;
        }
        return false;
}

void str_hex(const unsigned char *in, size_t len, char *out)
{
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < len; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 15];
        }
        out[2 * len] = '\0';
}

/* jsonptr: RFC 6901 JSON Pointers over jansson values. A pointer is
 * checked whole before it is followed, so a token never overflows its
 * buffer (at most JSONPTR_MAX bytes). Pure: no allocation, no I/O. */
#include "autoconfig.h"

#include <errno.h>
#include <string.h>

#include "common/jsonptr.h"

bool jsonptr_valid(const char *p)
{
        if (!p || strlen(p) > JSONPTR_MAX)
                return false;
        if (p[0] != '\0' && p[0] != '/')
                return false;
        for (; *p; p++)
                if (*p == '~' && p[1] != '0' && p[1] != '1')
                        return false;
        return true;
}

/* One reference token of a pointer, unescaped into tok; *p moves past it. */
static int pointer_token(const char **p, char *tok)
{
        const char *s = *p + 1; /* past '/' */
        size_t n = 0;

        for (; *s && *s != '/'; s++) {
                if (*s == '~') {
                        if (s[1] != '0' && s[1] != '1')
                                return -EINVAL;
                        tok[n++] = s[1] == '0' ? '~' : '/';
                        s++;
                } else {
                        tok[n++] = *s;
                }
        }
        tok[n] = '\0';
        *p = s;
        return 0;
}

/* Decimal index without leading zeros; -1 when tok is none. */
static long long array_index(const char *tok)
{
        long long i = 0;

        if (!*tok || (tok[0] == '0' && tok[1]) || strlen(tok) > 15)
                return -1;
        for (const char *s = tok; *s; s++) {
                if (*s < '0' || *s > '9')
                        return -1;
                i = i * 10 + (*s - '0');
        }
        return i;
}

json_t *jsonptr_get(json_t *root, const char *pointer)
{
        char tok[JSONPTR_MAX + 1];
        const char *p = pointer;
        json_t *cur = root;

        if (!root || !jsonptr_valid(pointer))
                return NULL;
        while (*p && cur) {
                if (pointer_token(&p, tok) < 0)
                        return NULL;
                if (json_is_object(cur)) {
                        cur = json_object_get(cur, tok);
                } else if (json_is_array(cur)) {
                        long long i = array_index(tok);
                        cur = i < 0 ? NULL : json_array_get(cur, (size_t)i);
                } else {
                        cur = NULL;
                }
        }
        return cur;
}

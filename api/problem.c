/* problem: the RFC 9457 body shared by every error answer, and the
 * validation list ("errors": [{"field","message"}]) that request parsers
 * fill. The list is capped at PROBLEM_MAX_ERRORS so that a 10000-entry
 * body cannot produce a 10000-entry answer. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/problem.h"

static const struct {
        unsigned status;
        const char *title;
} titles[] = {
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {409, "Conflict"},
        {413, "Content Too Large"},
        {415, "Unsupported Media Type"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
};

const char *problem_title(unsigned status)
{
        for (size_t i = 0; i < sizeof(titles) / sizeof(titles[0]); i++)
                if (titles[i].status == status)
                        return titles[i].title;
        return "Error";
}

json_t *problem_new(unsigned status, const char *detail, json_t *errors)
{
        json_t *p = json_pack("{s:s, s:s, s:I}", "type", "about:blank", "title", problem_title(status),
                              "status", (json_int_t)status);
        if (!p)
                goto fail;
        if (detail && json_object_set_new(p, "detail", json_string(detail)) < 0)
                goto fail;
        if (errors && json_object_set_new(p, "errors", errors) < 0) {
                errors = NULL; /* set_new consumed it */
                goto fail;
        }
        return p;
fail:
        json_decref(p);
        json_decref(errors);
        return NULL;
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_prefix(const char *s, size_t max)
{
        size_t n = strnlen(s, max + 1);
        if (n <= max)
                return n;
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
                n--;
        return n;
}

int problem_error_add(json_t *errors, const char *field, const char *fmt, ...)
{
        char msg[PROBLEM_TEXT_MAX + 1];
        va_list ap;

        if (json_array_size(errors) >= PROBLEM_MAX_ERRORS)
                return 0;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        json_t *e = json_pack("{s:s#, s:s#}", "field", field, (int)utf8_prefix(field, PROBLEM_TEXT_MAX),
                              "message", msg, (int)utf8_prefix(msg, PROBLEM_TEXT_MAX - 1));
        if (json_array_append_new(errors, e) < 0)
                return -ENOMEM;
        return 0;
}

/* What the sources files share (sources.c loads and checks the files,
 * sources_request.c expands templates into requests, sources_list.c reads
 * listing pages): the template scanner. Nothing else includes this. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "daemon/sources.h"

enum placeholder {
        PH_QUERY,
        PH_PAGE,
        PH_PER_PAGE,
        PH_OFFSET,
        PH_START,
        PH_ENV,     /* {env:NAME}: required secret */
        PH_ENV_OPT, /* {env?:NAME}: optional secret, header values only */
};

#define PH_BIT(k)     (1u << (k))
#define PH_PAGING     (PH_BIT(PH_PAGE) | PH_BIT(PH_OFFSET) | PH_BIT(PH_START))
#define PH_URL_ALL    (PH_BIT(PH_QUERY) | PH_BIT(PH_PER_PAGE) | PH_PAGING | PH_BIT(PH_ENV))
#define PH_HEADER_ALL (PH_BIT(PH_ENV) | PH_BIT(PH_ENV_OPT))

struct ph {
        enum placeholder kind;
        size_t len;                         /* bytes of "{...}" */
        char env[SOURCES_ENV_NAME_MAX + 1]; /* PH_ENV, PH_ENV_OPT: NAME */
};

/* The placeholder at p ('{'); -EINVAL when unterminated or unknown. */
int sources_ph_parse(const char *p, struct ph *ret);
/* Scan template t; placeholders outside `allowed` and stray braces are
 * -EINVAL with the reason in why (why_size bytes). *ret_seen: bits of the
 * placeholders found. */
int sources_template_check(const char *t, unsigned allowed, unsigned *ret_seen, char *why, size_t why_size);
/* Copy into name (SOURCES_ENV_NAME_MAX + 1 bytes) the first required
 * {env:NAME} of t that is unset or empty now; false when there is none. */
bool sources_template_env_missing(const char *t, char *name);
/* Any control character but tab (CR, LF, DEL, ...)? */
bool sources_has_control(const char *s);

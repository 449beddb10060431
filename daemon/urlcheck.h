/* URL checks with libcurl's URL API: is a URL one hauld may download, and
 * which source does it belong to.
 * int returns: 0 ok, -EINVAL malformed, -EPROTONOSUPPORT not http/https,
 * -E2BIG too long. */
#pragma once
#include <stddef.h>

/* Validate url (absolute, http or https, a host, at most JOB_URL_MAX bytes).
 * On success *ret_source is the host, lower-case, with ":port" when the
 * port is not the scheme's default (malloc'd), and *ret_normalized the URL
 * as libcurl normalizes it (malloc'd); either may be NULL. */
int urlcheck_validate(const char *url, char **ret_source, char **ret_normalized);

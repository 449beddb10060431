/* File names: turning a URL (or Content-Disposition) into one safe path
 * component. Pure string work, no I/O.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stddef.h>

#define NAME_MAX_BYTES 255

/* The name a URL suggests: last path segment, percent-decoded, then
 * naming_sanitize(). "" or unusable -> "file". *ret is malloc'd. */
int naming_from_url(const char *url, char **ret);
/* The filename of a Content-Disposition header value (filename*= UTF-8''
 * preferred over filename=), sanitized; -ENOENT when it has none. */
int naming_from_content_disposition(const char *value, char **ret);
/* Reduce name to one safe component: no '/', '\\', NUL or control bytes,
 * not "." or "..", no leading dot, no trailing dots or spaces, valid UTF-8
 * (invalid bytes replaced by '_'), at most NAME_MAX_BYTES bytes (cut on a
 * character boundary, keeping the extension). Empty -> "file". */
int naming_sanitize(const char *name, char **ret);
/* Make name's extension match ext (NULL: leave it): "photo" + "jpg" ->
 * "photo.jpg"; "photo.jpeg" with "jpg" stays (known alias); "x.html" with
 * "png" -> "x.html.png". Stays within NAME_MAX_BYTES. */
int naming_with_extension(const char *name, const char *ext, char **ret);
/* The n-th alternative of a taken name: "a.jpg", 1 -> "a-1.jpg". */
int naming_variant(const char *name, unsigned n, char **ret);

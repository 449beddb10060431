/* filename: the local name `hauldctl get` saves a file under, from the
 * server's Content-Disposition. Pure. int returns: 0 or -errno. */
#pragma once

#define FILENAME_MAX_BYTES 255 /* NAME_MAX on Linux file systems */

/* The file name a Content-Disposition header gives (filename*= in UTF-8
 * preferred over filename=), reduced by filename_safe. -ENOENT: the header
 * gives none that is usable; -ENOMEM. */
int filename_from_disposition(const char *header, char **ret);

/* One plain name in the current directory: the part after the last '/' or
 * '\', leading dots removed, control characters replaced by '_', cut to
 * FILENAME_MAX_BYTES bytes on a UTF-8 boundary. -ENOENT when nothing is
 * left. */
int filename_safe(const char *name, char **ret);

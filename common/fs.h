/* File-system helpers. int returns: 0 ok, -errno on failure. */
#pragma once
#include <stddef.h>

/* mkdir -p with mode 0750 for each missing component. */
int fs_mkdir_p(const char *path);
/* Same, below an open directory: path is relative to dirfd and never
 * follows a symlink (each component opened with O_NOFOLLOW). On success
 * *ret_fd is an O_DIRECTORY fd of the last component. */
int fs_mkdirat_p(int dirfd, const char *relpath, int *ret_fd);
/* fsync the directory dirfd (after a rename into it). */
int fs_fsync_dir(int dirfd);
/* Read a whole small file (at most max bytes) into a NUL-terminated buffer. */
int fs_read_file(const char *path, size_t max, char **ret, size_t *ret_len);

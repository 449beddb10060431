/* fs: small file-system helpers: mkdir -p (also below an open directory,
 * never following a symlink), the directory fsync that makes a rename
 * durable, and reading a small file whole. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"

int fs_mkdir_p(const char *path)
{
        char buf[PATH_MAX];
        size_t len = strlen(path);

        if (len == 0 || len >= sizeof(buf))
                return -ENAMETOOLONG;
        memcpy(buf, path, len + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, 0750) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int fs_mkdirat_p(int dirfd, const char *relpath, int *ret_fd)
{
        char buf[PATH_MAX];
        int fd, r = 0;

        if (strlen(relpath) >= sizeof(buf))
                return -ENAMETOOLONG;
        strcpy(buf, relpath);
        fd = dup(dirfd);
        if (fd < 0)
                return -errno;
        for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0) {
                        r = -EINVAL;
                        goto fail;
                }
                if (mkdirat(fd, c, 0750) < 0 && errno != EEXIST) {
                        r = -errno;
                        goto fail;
                }
                int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0) {
                        r = -errno;
                        goto fail;
                }
                close(fd);
                fd = next;
        }
        *ret_fd = fd;
        return 0;
fail:
        close(fd);
        return r;
}

int fs_fsync_dir(int dirfd) { return fsync(dirfd) < 0 ? -errno : 0; }

int fs_read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
        FILE *f = fopen(path, "re");
        char *buf;
        size_t n;

        if (!f)
                return -errno;
        buf = malloc(max + 1);
        if (!buf) {
                fclose(f);
                return -ENOMEM;
        }
        n = fread(buf, 1, max + 1, f);
        int err = ferror(f);
        fclose(f);
        if (err) {
                free(buf);
                return -EIO;
        }
        if (n > max) {
                free(buf);
                return -EFBIG;
        }
        buf[n] = '\0';
        *ret = buf;
        if (ret_len)
                *ret_len = n;
        return 0;
}

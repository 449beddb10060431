/* fs: the few file-system operations whose exact sequence matters for
 * crash safety (fsync before rename, fsync of the directory after). */
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

int fs_write_atomic(const char *path, const void *data, size_t len)
{
        char tmp[PATH_MAX], dir[PATH_MAX];
        const char *p = data;
        int fd, dfd, r = 0;

        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
                return -ENAMETOOLONG;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (fd < 0)
                return -errno;
        while (len > 0) {
                ssize_t w = write(fd, p, len);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                p += w;
                len -= (size_t)w;
        }
        if (fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        close(fd);
        fd = -1;
        if (rename(tmp, path) < 0) {
                r = -errno;
                goto fail;
        }
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash == dir)
                slash[1] = '\0';
        else if (slash)
                *slash = '\0';
        else
                strcpy(dir, ".");
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        r = fs_fsync_dir(dfd);
        close(dfd);
        return r;
fail:
        if (fd >= 0)
                close(fd);
        unlink(tmp);
        return r;
}

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

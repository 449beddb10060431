/* cmd_get: GET /v1/jobs/{id}/items/{index}/file into a local file. The
 * body goes to a hidden temporary file in the target directory, which
 * takes its final name only once the whole body is in: renameat2 with
 * RENAME_NOREPLACE (or link() where the file system lacks it) when the
 * name must not exist yet, so an existing file is never replaced, even by
 * a race; rename() with --force. The name is -o's, or the server's from
 * Content-Disposition made safe by filename.c (never a path), or ID-INDEX
 * when it gives none. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/ctl.h"
#include "cli/filename.h"
#include "cli/format.h"

#define TEMP_TRIES 100 /* temporary names tried before giving up */

struct get {
        struct ctl *c;
        const char *output; /* -o, or NULL */
        bool force;
        int dir_fd;       /* the directory the file goes to */
        const char *name; /* in dir_fd, when -o names a file */
        char tmp[64];     /* the temporary file in dir_fd, "" when none */
        int fd;           /* of tmp, or STDOUT_FILENO for -o - */
        int write_errno;  /* a failed write */
};

static int on_data(const char *data, size_t len, void *userdata)
{
        struct get *g = userdata;

        while (len > 0) {
                ssize_t n = write(g->fd, data, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        g->write_errno = errno;
                        return -errno;
                }
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Where the file goes: -o's directory (and name), or the current one. */
static int target(struct get *g)
{
        struct stat st;
        const char *out = g->output;

        if (out && stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
                g->dir_fd = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        } else if (out) {
                const char *slash = strrchr(out, '/');
                char *dir = slash ? strndup(out, (size_t)(slash - out + 1)) : strdup(".");
                g->name = slash ? slash + 1 : out;
                if (!dir || !*g->name) {
                        free(dir);
                        return ctl_usage_error(g->c, "-o needs a file name");
                }
                g->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                free(dir);
                if (g->dir_fd >= 0 && !g->force &&
                    faccessat(g->dir_fd, g->name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
                        ctl_warn("%s exists (--force overwrites it)", out);
                        return CTL_EXIT_CANTCREAT;
                }
        } else
                g->dir_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (g->dir_fd < 0) {
                ctl_warn("%s: %s", out ? out : ".", strerror(errno));
                return CTL_EXIT_CANTCREAT;
        }
        return 0;
}

static int open_temp(struct get *g)
{
        for (int i = 0; i < TEMP_TRIES; i++) {
                snprintf(g->tmp, sizeof(g->tmp), ".hauldctl-%ld-%d.part", (long)getpid(), i);
                g->fd = openat(g->dir_fd, g->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                               0666);
                if (g->fd >= 0)
                        return 0;
                if (errno != EEXIST)
                        break;
        }
        ctl_warn("cannot create a file in %s: %s", g->output ? g->output : ".", strerror(errno));
        g->tmp[0] = '\0';
        return CTL_EXIT_CANTCREAT;
}

/* Rename the temporary file to final: over an existing file only with
 * --force. 0 or -errno. */
static int rename_temp(struct get *g, const char *final)
{
        if (g->force)
                return renameat(g->dir_fd, g->tmp, g->dir_fd, final) < 0 ? -errno : 0;
        if (renameat2(g->dir_fd, g->tmp, g->dir_fd, final, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        /* a file system without RENAME_NOREPLACE: a link never replaces either */
        if (linkat(g->dir_fd, g->tmp, g->dir_fd, final, 0) < 0)
                return -errno;
        unlinkat(g->dir_fd, g->tmp, 0);
        return 0;
}

/* The saved file's path as the user would write it, cleaned for the terminal. */
static char *shown_path(const struct get *g, const char *final)
{
        char *where = NULL, *shown;

        if (g->name)
                return fmt_clean(g->output);
        if (!g->output)
                return fmt_clean(final);
        size_t n = strlen(g->output);
        if (asprintf(&where, "%s%s%s", g->output, n > 0 && g->output[n - 1] == '/' ? "" : "/", final) < 0)
                return NULL;
        shown = fmt_clean(where);
        free(where);
        return shown;
}

/* Give the complete temporary file its name and print it. */
static int place(struct get *g, const struct http_answer *a, const char *id, long index)
{
        char *name = NULL, fallback[128];

        if (!g->name && filename_from_disposition(a->disposition, &name) < 0) {
                snprintf(fallback, sizeof(fallback), "%s-%ld", id, index);
                if (filename_safe(fallback, &name) < 0) {
                        ctl_warn("no file name to save under (use -o)");
                        return CTL_EXIT_CANTCREAT;
                }
        }
        const char *final = g->name ? g->name : name;
        int r = rename_temp(g, final);
        char *shown = shown_path(g, final);
        const char *s = shown ? shown : "the file";

        if (r == -EEXIST)
                ctl_warn("%s exists (--force overwrites it)", s);
        else if (r < 0)
                ctl_warn("%s: %s", s, strerror(-r));
        else {
                printf("%s\n", s);
                g->tmp[0] = '\0';
        }
        free(shown);
        free(name);
        return r < 0 ? CTL_EXIT_CANTCREAT : CTL_EXIT_OK;
}

static int fetch(struct get *g, const char *path, const char *id, long index)
{
        struct http_answer a;
        int r = http_stream(g->c->http, path, NULL, on_data, g, &a), rc;

        if (r == -ECANCELED) {
                ctl_warn("cannot write %s: %s", g->output ? g->output : "the file",
                         strerror(g->write_errno));
                return CTL_EXIT_CANTCREAT;
        }
        if (r < 0)
                return ctl_transport_error(g->c, r);
        if (a.status != 200)
                rc = ctl_answer_error(g->c, &a);
        else if (g->fd != STDOUT_FILENO && close(g->fd) < 0) {
                g->fd = -1;
                ctl_warn("cannot write the file: %s", strerror(errno));
                rc = CTL_EXIT_CANTCREAT;
        } else {
                g->fd = -1;
                rc = g->tmp[0] ? place(g, &a, id, index) : CTL_EXIT_OK;
        }
        http_answer_clear(&a);
        return rc;
}

int cmd_get(struct ctl *c, int argc, char **argv)
{
        static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                             {"force", no_argument, NULL, 'f'},
                                             CTL_COMMON_OPTIONS};
        struct get g = {.c = c, .dir_fd = -1, .fd = -1};
        char *end, *path = NULL, suffix[48];
        int o, rc;

        while ((o = ctl_getopt(c, argc, argv, "o:f", opts)) != -1) {
                if (o == CTL_OPT_STOP)
                        return c->exit;
                if (o == 'o')
                        g.output = optarg;
                else
                        g.force = true;
        }
        if ((rc = ctl_want_args(c, argc - optind, 2, "the job's ID and the item's index")))
                return rc;
        const char *id = argv[optind];
        errno = 0;
        long index = strtol(argv[optind + 1], &end, 10);
        if (!argv[optind + 1][0] || *end || errno || index < 0)
                return ctl_usage_error(c, "INDEX must be an integer 0 or more");
        if ((rc = ctl_connect(c)))
                return rc;
        snprintf(suffix, sizeof(suffix), "/items/%ld/file", index);
        if (!(path = ctl_job_path(id, suffix))) {
                ctl_warn("out of memory");
                return CTL_EXIT_SERVER;
        }
        if (g.output && strcmp(g.output, "-") == 0)
                g.fd = STDOUT_FILENO;
        else if ((rc = target(&g)) == 0)
                rc = open_temp(&g);
        if (rc == 0)
                rc = fetch(&g, path, id, index);
        if (g.fd >= 0 && g.fd != STDOUT_FILENO)
                close(g.fd);
        if (g.tmp[0])
                unlinkat(g.dir_fd, g.tmp, 0);
        if (g.dir_fd >= 0)
                close(g.dir_fd);
        free(path);
        return rc;
}

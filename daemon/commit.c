/* commit: the durability of finished downloads, on a worker thread.
 *
 * Owns: the queue of submitted requests, the list of finished ones and the
 * worker. Invariant, per request: its part file's data reaches the disk
 * before the rename, and the rename before the request is reported done.
 * A batch of several files uses syncfs(2) twice (data, then names) instead
 * of fdatasync per file and fsync per directory: on ext4 the per-file
 * flushes cost more than the downloads of small files themselves
 * (bench/RESULTS.md). A lone file uses fdatasync and a directory fsync,
 * which touch nothing else on the file system. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h> /* renameat2 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/sha256.h"
#include "daemon/commit.h"
#include "daemon/naming.h"

#define BATCH_MAX    512 /* requests flushed together */
#define SYNCFS_AT    4   /* from this many files on, a batch uses syncfs */
#define VARIANTS_MAX 10000

struct committer {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t work;
        struct commit_req *queue, *queue_tail; /* submitted */
        struct commit_req *done, *done_tail;   /* finished, for the scheduler */
        bool stopping;
        bool busy;           /* the worker holds a batch */
        pthread_cond_t idle; /* queue empty and not busy */
        void (*wake)(void *ud);
        void *ud;
};

void commit_req_free(struct commit_req *req)
{
        while (req) {
                struct commit_req *next = req->next;
                if (req->part_fd >= 0)
                        close(req->part_fd);
                if (req->dir_fd >= 0)
                        close(req->dir_fd);
                free(req->final_name);
                free(req);
                req = next;
        }
}

/* Does the file `name` in dir_fd hold exactly size bytes hashing to sha? */
static bool same_file(int dir_fd, const char *name, const char *sha, int64_t size)
{
        unsigned char buf[65536];
        char hex[SHA256_HEX_LEN + 1];
        struct sha256 *ctx = NULL;
        struct stat st;
        ssize_t n;
        bool same = false;

        int fd = openat(dir_fd, name,
                        O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block */
        if (fd < 0)
                return false;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != size || sha256_new(&ctx) < 0)
                goto out;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                if (sha256_update(ctx, buf, (size_t)n) < 0)
                        goto out;
        if (n == 0 && sha256_final_hex(ctx, hex) == 0)
                same = strcmp(hex, sha) == 0;
out:
        sha256_free(ctx);
        close(fd);
        return same;
}

int commit_rename(int dir_fd, const char *part, const char *name, const char *sha256, int64_t size,
                  char **ret_name)
{
        char *try = strdup(name);

        for (unsigned n = 1; try; n++) {
                if (renameat2(dir_fd, part, dir_fd, try, RENAME_NOREPLACE) == 0) {
                        *ret_name = try;
                        return 0;
                }
                int r = -errno;
                if (r == -EEXIST && sha256 && same_file(dir_fd, try, sha256, size)) {
                        unlinkat(dir_fd, part, 0);
                        *ret_name = try;
                        return 0;
                }
                free(try);
                if (r != -EEXIST || n > VARIANTS_MAX)
                        return r;
                if (naming_variant(name, n, &try) < 0)
                        try = NULL;
        }
        return -ENOMEM;
}

/* syncfs(2) covers one file system: are all of the batch's folders on it? */
static bool one_fs(struct commit_req *batch)
{
        struct stat first, st;

        if (fstat(batch->dir_fd, &first) < 0)
                return false;
        for (struct commit_req *r = batch->next; r; r = r->next)
                if (fstat(r->dir_fd, &st) < 0 || st.st_dev != first.st_dev)
                        return false;
        return true;
}

/* Flush, rename, flush: the whole batch, in that order. */
static void commit_batch(struct commit_req *batch, size_t n)
{
        bool many = n >= SYNCFS_AT && one_fs(batch);
        struct commit_req *r;

        if (many && syncfs(batch->dir_fd) < 0)
                many = false; /* fall back to one file at a time */
        for (r = batch; r; r = r->next) {
                if (!many && fdatasync(r->part_fd) < 0)
                        r->error = -errno;
                close(r->part_fd);
                r->part_fd = -1;
                if (r->error == 0)
                        r->error = commit_rename(r->dir_fd, r->part, r->name, r->sha256, r->size,
                                                 &r->final_name);
                if (r->error < 0)
                        unlinkat(r->dir_fd, r->part, 0);
        }
        if (many && syncfs(batch->dir_fd) == 0)
                return;
        for (r = batch; r; r = r->next)
                if (r->error == 0 && fs_fsync_dir(r->dir_fd) < 0)
                        r->error = -EIO;
}

static void *worker(void *arg)
{
        struct committer *c = arg;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                while (!c->queue && !c->stopping) {
                        pthread_cond_broadcast(&c->idle);
                        pthread_cond_wait(&c->work, &c->lock);
                }
                if (!c->queue)
                        break;
                struct commit_req *batch = c->queue, *last = batch;
                size_t n = 1;
                while (last->next && n < BATCH_MAX) {
                        last = last->next;
                        n++;
                }
                c->queue = last->next;
                if (!c->queue)
                        c->queue_tail = NULL;
                last->next = NULL;
                c->busy = true;
                pthread_mutex_unlock(&c->lock);

                commit_batch(batch, n);
                for (struct commit_req *r = batch; r; r = r->next) {
                        close(r->dir_fd);
                        r->dir_fd = -1;
                }

                pthread_mutex_lock(&c->lock);
                if (c->done_tail)
                        c->done_tail->next = batch;
                else
                        c->done = batch;
                c->done_tail = last;
                c->busy = false;
                pthread_mutex_unlock(&c->lock);
                c->wake(c->ud);
                pthread_mutex_lock(&c->lock);
        }
        pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

int committer_new(void (*wake)(void *ud), void *ud, struct committer **ret)
{
        struct committer *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->wake = wake;
        c->ud = ud;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->work, NULL);
        pthread_cond_init(&c->idle, NULL);
        int r = pthread_create(&c->thread, NULL, worker, c);
        if (r != 0) {
                pthread_mutex_destroy(&c->lock);
                pthread_cond_destroy(&c->work);
                pthread_cond_destroy(&c->idle);
                free(c);
                return -r;
        }
        *ret = c;
        return 0;
}

void committer_free(struct committer *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_cond_signal(&c->work);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        commit_req_free(c->done);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->work);
        pthread_cond_destroy(&c->idle);
        free(c);
}

void committer_submit(struct committer *c, struct commit_req *req)
{
        req->next = NULL;
        pthread_mutex_lock(&c->lock);
        if (c->queue_tail)
                c->queue_tail->next = req;
        else
                c->queue = req;
        c->queue_tail = req;
        pthread_cond_signal(&c->work);
        pthread_mutex_unlock(&c->lock);
}

struct commit_req *committer_take_done(struct committer *c)
{
        pthread_mutex_lock(&c->lock);
        struct commit_req *list = c->done;
        c->done = c->done_tail = NULL;
        pthread_mutex_unlock(&c->lock);
        return list;
}

void committer_wait_idle(struct committer *c)
{
        pthread_mutex_lock(&c->lock);
        while (c->queue || c->busy)
                pthread_cond_wait(&c->idle, &c->lock);
        pthread_mutex_unlock(&c->lock);
}

/* The committer: makes finished downloads durable off the scheduler's
 * thread. A part file's data is flushed before it is renamed into place,
 * and the rename is flushed before the download is reported done, so a
 * crash never shows a named file with missing data and never loses a file
 * the job table calls downloaded.
 *
 * Work is batched: one batch of many files costs two syncfs(2) calls
 * instead of an fdatasync per file and an fsync per directory.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdint.h>

#include "daemon/job.h"

struct committer;

struct commit_req {
        /* in */
        char job_id[JOB_ID_LEN + 1];
        int item;
        int attempt;
        uint64_t run;    /* the scheduler's load of the job it belongs to */
        int dir_fd;      /* owned: closed by the committer */
        int part_fd;     /* owned: closed by the committer */
        char part[64];   /* the part file's name in dir_fd */
        char name[256];  /* the name wanted; name-1.ext ... when taken */
        char sha256[65]; /* of the part: a taken name with this content is the same file */
        int64_t size;
        /* out */
        char *final_name; /* malloc'd, when error == 0 */
        int error;        /* -errno */
        struct commit_req *next;
};

/* wake(ud) is called from a worker thread when requests are done. */
int committer_new(void (*wake)(void *ud), void *ud, struct committer **ret);
/* Finishes what was submitted, then stops the worker. */
void committer_free(struct committer *c);
/* Hand a request over (ownership included). */
void committer_submit(struct committer *c, struct commit_req *req);
/* The finished requests, oldest first, as a list the caller frees with
 * commit_req_free(). */
struct commit_req *committer_take_done(struct committer *c);
void commit_req_free(struct commit_req *req);
/* Wait until everything submitted is done (before a stop). */
void committer_wait_idle(struct committer *c);

/* Rename part to name (or a free variant of it) in dir_fd without
 * replacing anything; a taken name whose file has the same size and
 * SHA-256 is taken as this very file (committed before a crash that came
 * before the job table heard of it). Does not flush. */
int commit_rename(int dir_fd, const char *part, const char *name, const char *sha256, int64_t size,
                  char **ret_name);

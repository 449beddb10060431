/* intake: new jobs written to the job table by one writer thread, in
 * batches: every submission waiting when the writer is free goes into one
 * transaction with one sync (group commit), and each submitter hears back
 * once its job is durable. The API answers 201 only then.
 *
 * An Idempotency-Key is checked inside the batch: a key already held
 * answers with that job (a replay, or a conflict when the request hash
 * differs), also when two submissions with one key meet in a batch.
 *
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stddef.h>

#include "daemon/job.h"

struct intake;

struct intake_req {
        /* in: owned by the submitter, untouched by the intake but for job->seq */
        struct job *job;
        const struct item *items;
        size_t nitems;
        void (*done)(struct intake_req *r, void *ud); /* on the writer thread, once */
        void *ud;
        /* out */
        int result;           /* 0 inserted; -EEXIST its key is held: see existing; -errno */
        struct job *existing; /* -EEXIST: the job that holds the key (the submitter frees it) */
        struct intake_req *next;
};

/* The writer opens its own connection to store_url. wake(ud) is called
 * after each batch that inserted a job (the scheduler's sched_wake). */
int intake_new(const char *store_url, void (*wake)(void *ud), void *wake_ud, struct intake **ret);
/* Queue r; r->done is called later (at once with -ESHUTDOWN once the
 * intake is stopping). */
void intake_submit(struct intake *in, struct intake_req *r);
/* Take no more submissions (later ones are answered -ESHUTDOWN at once);
 * what is queued is still written. intake_free() begins with it; tests
 * call it alone to submit past it. */
void intake_stop(struct intake *in);
/* Write what is queued, answer it, stop the writer. */
void intake_free(struct intake *in);

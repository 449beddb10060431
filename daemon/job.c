/* job: names of states, ids, and the memory discipline of the job model.
 * Nothing here does I/O except reading random bytes for ids. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/str.h"
#include "daemon/job.h"

static const char *const job_states[] = {"queued", "running",   "succeeded", "partial",
                                         "failed", "cancelled", "timed_out", "paused"};
_Static_assert(sizeof(job_states) / sizeof(job_states[0]) == _JOB_STATE_MAX, "a name per job state");
static const char *const item_states[] = {"pending", "running", "succeeded", "failed", "skipped"};
static const char *const source_states[] = {"pending", "listing",   "downloading", "done",
                                            "failed",  "timed_out", "skipped"};

static int lookup(const char *const *names, int n, const char *s)
{
        for (int i = 0; i < n; i++)
                if (strcmp(names[i], s) == 0)
                        return i;
        return -EINVAL;
}

const char *job_state_to_string(enum job_state s) { return job_states[s]; }
int job_state_from_string(const char *s) { return lookup(job_states, _JOB_STATE_MAX, s); }
const char *item_state_to_string(enum item_state s) { return item_states[s]; }
int item_state_from_string(const char *s) { return lookup(item_states, _ITEM_STATE_MAX, s); }
const char *source_state_to_string(enum source_state s) { return source_states[s]; }
int source_state_from_string(const char *s) { return lookup(source_states, _SRC_STATE_MAX, s); }

bool job_state_is_terminal(enum job_state s)
{
        return s != JOB_QUEUED && s != JOB_RUNNING && s != JOB_PAUSED;
}

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void job_id_new(char *id, int64_t wall_ms)
{
        unsigned char rnd[10];
        uint64_t t = (uint64_t)wall_ms;

        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                for (size_t i = 0; i < sizeof(rnd); i++)
                        rnd[i] = (unsigned char)random();
        /* 10 chars of time (50 bits, top 2 zero), 16 chars of randomness */
        for (int i = 9; i >= 0; i--) {
                id[i] = crockford[t & 31];
                t >>= 5;
        }
        uint64_t hi = 0, lo = 0;
        for (int i = 0; i < 5; i++) {
                hi = hi << 8 | rnd[i];
                lo = lo << 8 | rnd[5 + i];
        }
        for (int i = 17; i >= 10; i--) {
                id[i] = crockford[hi & 31];
                hi >>= 5;
        }
        for (int i = 25; i >= 18; i--) {
                id[i] = crockford[lo & 31];
                lo >>= 5;
        }
        id[JOB_ID_LEN] = '\0';
}

bool job_id_valid(const char *id)
{
        size_t n = strlen(id);
        if (n != JOB_ID_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!strchr(crockford, id[i]) || id[i] == '\0')
                        return false;
        return true;
}

/* code and the arguments may point into *e itself: the new strings are
 * made before the old ones go. */
void job_error_set(struct job_error *e, const char *code, const char *fmt, ...)
{
        char buf[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        char *c = strdup(code);
        job_error_clear(e);
        e->code = c;
        e->message = strdup(buf);
}

void job_error_clear(struct job_error *e)
{
        free(e->code);
        free(e->message);
        e->code = e->message = NULL;
}

void item_clear(struct item *it)
{
        free(it->source);
        free(it->url);
        free(it->filename);
        free(it->content_type);
        free(it->path);
        free(it->sha256);
        free(it->node);
        job_error_clear(&it->error);
        memset(it, 0, sizeof(*it));
}

void items_free(struct item *items, size_t n)
{
        if (!items)
                return;
        for (size_t i = 0; i < n; i++)
                item_clear(&items[i]);
        free(items);
}

void job_source_clear(struct job_source *s)
{
        free(s->source);
        free(s->listing);
        job_error_clear(&s->error);
        memset(s, 0, sizeof(*s));
}

void job_free(struct job *j)
{
        if (!j)
                return;
        free(j->query);
        for (size_t i = 0; i < j->nsources; i++)
                free(j->sources[i]);
        free(j->sources);
        free(j->label);
        for (size_t i = 0; i < j->nper_source; i++)
                job_source_clear(&j->per_source[i]);
        free(j->per_source);
        job_error_clear(&j->error);
        free(j->idempotency_key);
        free(j->request_hash);
        free(j->lease_owner);
        free(j);
}

void jobs_free(struct job **jobs, size_t n)
{
        if (!jobs)
                return;
        for (size_t i = 0; i < n; i++)
                job_free(jobs[i]);
        free(jobs);
}

/* str_dup that notes a failure in *oom. */
static char *dup_or(const char *s, bool *oom)
{
        char *d = str_dup(s);
        if (s && !d)
                *oom = true;
        return d;
}

static void error_copy(struct job_error *dst, const struct job_error *src, bool *oom)
{
        dst->code = dup_or(src->code, oom);
        dst->message = dup_or(src->message, oom);
}

int job_dup(const struct job *j, struct job **ret)
{
        struct job *c = calloc(1, sizeof(*c));
        bool oom = false;

        if (!c)
                return -ENOMEM;
        *c = *j;
        c->query = dup_or(j->query, &oom);
        c->label = dup_or(j->label, &oom);
        c->idempotency_key = dup_or(j->idempotency_key, &oom);
        c->request_hash = dup_or(j->request_hash, &oom);
        error_copy(&c->error, &j->error, &oom);
        c->lease_owner = dup_or(j->lease_owner, &oom);
        c->sources = j->nsources ? calloc(j->nsources, sizeof(char *)) : NULL;
        c->per_source = j->nper_source ? calloc(j->nper_source, sizeof(*c->per_source)) : NULL;
        if ((j->nsources && !c->sources) || (j->nper_source && !c->per_source)) {
                c->nsources = c->sources ? j->nsources : 0;
                c->nper_source = c->per_source ? j->nper_source : 0;
                oom = true;
        }
        for (size_t i = 0; c->sources && i < j->nsources; i++)
                c->sources[i] = dup_or(j->sources[i], &oom);
        for (size_t i = 0; c->per_source && i < j->nper_source; i++) {
                c->per_source[i] = j->per_source[i];
                c->per_source[i].source = dup_or(j->per_source[i].source, &oom);
                c->per_source[i].listing = dup_or(j->per_source[i].listing, &oom);
                error_copy(&c->per_source[i].error, &j->per_source[i].error, &oom);
        }
        if (oom) {
                job_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int item_copy(struct item *dst, const struct item *src)
{
        bool oom = false;

        *dst = *src;
        dst->source = dup_or(src->source, &oom);
        dst->url = dup_or(src->url, &oom);
        dst->filename = dup_or(src->filename, &oom);
        dst->content_type = dup_or(src->content_type, &oom);
        dst->path = dup_or(src->path, &oom);
        dst->sha256 = dup_or(src->sha256, &oom);
        dst->node = dup_or(src->node, &oom);
        error_copy(&dst->error, &src->error, &oom);
        if (oom) {
                item_clear(dst);
                return -ENOMEM;
        }
        return 0;
}

/* jobcache: the JSON text of terminal jobs as GET /v1/jobs/{id} answers
 * it, so that repeated reads of a finished job skip the store and jansson.
 * Thread-safe. int returns: 0 ok, -errno on failure. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define JOBCACHE_ENTRIES 4096 /* jobs kept; the least recently read of a set goes first */

struct jobcache;
struct event_bus;

/* A cached text, shared by the cache and the answers that send it: each
 * holder owns one reference. */
struct jobcache_text {
        _Atomic unsigned refs;
        size_t len; /* bytes of text, without the NUL */
        char text[];
};

/* The cache drops a job on each EVENT_JOB for it and everything on
 * EVENT_CIRCUIT (a cached text shows circuit states), or on lost events. */
int jobcache_new(struct event_bus *events, struct jobcache **ret);
void jobcache_free(struct jobcache *c);

/* The text for id with a new reference, or NULL. A job finished before
 * not_before_ms (wall ms; one JOB_RETENTION may have pruned it) is not
 * answered from the cache; 0: no such limit. */
struct jobcache_text *jobcache_get(struct jobcache *c, const char *id, int64_t not_before_ms);
/* The text for id when it was kept for the job finished at finished_at_ms
 * (wall ms), with a new reference, or NULL. */
struct jobcache_text *jobcache_get_finished(struct jobcache *c, const char *id, int64_t finished_at_ms);
void jobcache_text_unref(struct jobcache_text *t);

/* Take jobcache_stamp() before reading the job from the store; jobcache_put
 * keeps the text only when nothing was dropped since, so a text read just
 * before a change never outlives the change. */
uint64_t jobcache_stamp(struct jobcache *c);
/* A new text (one reference) holding a copy of len bytes of s; NULL: no memory. */
struct jobcache_text *jobcache_text_new(const char *s, size_t len);
/* Keep t (with a reference of its own) as the text of a terminal job whose
 * sources' circuits were all closed (an open circuit turns half-open with
 * time, with no event). */
void jobcache_put(struct jobcache *c, uint64_t stamp, const char *id, int64_t finished_at_ms,
                  struct jobcache_text *t);
/* Forget id (the API's own retry and delete call this once the scheduler
 * has made the change). */
void jobcache_drop(struct jobcache *c, const char *id);

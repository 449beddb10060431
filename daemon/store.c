/* store: the front of the persistent job table. It owns the choice of
 * backend (by URL prefix, once, at open) and the checks on what callers
 * pass; everything else goes through the backend's table of functions,
 * so a backend only sees arguments that are already valid. */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/str.h"
#include "daemon/store-backend.h"
#include "daemon/store.h"

#define STORE_JOB_LIST_MAX  500   /* struct job_filter.limit */
#define STORE_ITEM_LIST_MAX 10000 /* struct item_filter.limit */

static const struct store_backend *const backends[] = {
        &store_backend_sqlite,
};

/* Schemes we know of but have no backend for yet. */
static const char *const unbuilt_prefixes[] = {"postgresql://", "postgres://"};

static int backend_find(const char *url, const struct store_backend **ret)
{
        for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
                if (str_startswith(url, backends[i]->prefix)) {
                        *ret = backends[i];
                        return 0;
                }
        for (size_t i = 0; i < sizeof(unbuilt_prefixes) / sizeof(unbuilt_prefixes[0]); i++)
                if (str_startswith(url, unbuilt_prefixes[i]))
                        return -EPROTONOSUPPORT;
        return -EINVAL;
}

int store_check_url(const char *url)
{
        const struct store_backend *b;
        return backend_find(url, &b);
}

int store_open(const char *url, struct store **ret)
{
        const struct store_backend *b;
        struct store *s;
        int r;

        if (!url)
                return -EINVAL;
        r = backend_find(url, &b);
        if (r < 0)
                return r;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->backend = b;
        s->url = strdup(url);
        if (!s->url) {
                r = -ENOMEM;
                goto fail;
        }
        r = b->open(url + strlen(b->prefix), &s->be);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        free(s->url);
        free(s);
        return r;
}

void store_close(struct store *s)
{
        if (!s)
                return;
        s->backend->close(s->be);
        free(s->url);
        free(s);
}

const char *store_describe(const struct store *s) { return s->url; }

int store_begin(struct store *s) { return s->backend->begin(s->be); }
int store_commit(struct store *s) { return s->backend->commit(s->be); }
int store_rollback(struct store *s) { return s->backend->rollback(s->be); }

int store_job_insert(struct store *s, struct job *job, const struct item *items, size_t nitems)
{
        if (!job || (nitems > 0 && !items))
                return -EINVAL;
        return s->backend->job_insert(s->be, job, items, nitems);
}

int store_job_get(struct store *s, const char *id, struct job **ret)
{
        if (!id)
                return -EINVAL;
        return s->backend->job_get(s->be, id, ret);
}

int store_job_find_idempotent(struct store *s, const char *key, struct job **ret)
{
        if (!key)
                return -EINVAL;
        return s->backend->job_find_idempotent(s->be, key, ret);
}

int store_job_list(struct store *s, const struct job_filter *f, struct job ***ret, size_t *ret_n,
                   int64_t *ret_next_seq)
{
        if (!f || f->limit < 1 || f->limit > STORE_JOB_LIST_MAX || f->before_seq < 0 ||
            (f->states >> _JOB_STATE_MAX) != 0)
                return -EINVAL;
        return s->backend->job_list(s->be, f, ret, ret_n, ret_next_seq);
}

int store_job_update(struct store *s, const struct job *job)
{
        if (!job)
                return -EINVAL;
        return s->backend->job_update(s->be, job);
}

int store_job_delete(struct store *s, const char *id)
{
        if (!id)
                return -EINVAL;
        return s->backend->job_delete(s->be, id);
}

int store_job_next_queued(struct store *s, size_t limit, char (**ret_ids)[JOB_ID_LEN + 1], size_t *ret_n)
{
        return s->backend->job_next_queued(s->be, limit, ret_ids, ret_n);
}

int store_job_count_by_state(struct store *s, int64_t counts[])
{
        return s->backend->job_count_by_state(s->be, counts);
}

int store_job_prune(struct store *s, int64_t finished_before_ms, int64_t *ret_n)
{
        return s->backend->job_prune(s->be, finished_before_ms, ret_n);
}

int store_item_list(struct store *s, const char *job_id, const struct item_filter *f, struct item **ret,
                    size_t *ret_n, int *ret_next_index)
{
        if (!job_id || !f || f->limit < 1 || f->limit > STORE_ITEM_LIST_MAX || f->after_index < -1 ||
            (f->states >> _ITEM_STATE_MAX) != 0)
                return -EINVAL;
        return s->backend->item_list(s->be, job_id, f, ret, ret_n, ret_next_index);
}

int store_item_load(struct store *s, const char *job_id, struct item **ret, size_t *ret_n)
{
        if (!job_id)
                return -EINVAL;
        return s->backend->item_load(s->be, job_id, ret, ret_n);
}

int store_item_update(struct store *s, const char *job_id, const struct item *it)
{
        if (!job_id || !it)
                return -EINVAL;
        return s->backend->item_update(s->be, job_id, it);
}

int store_item_append(struct store *s, const char *job_id, const struct item *items, size_t n)
{
        if (!job_id || (n > 0 && !items))
                return -EINVAL;
        return s->backend->item_append(s->be, job_id, items, n);
}

int store_recover(struct store *s, int64_t *ret_jobs) { return s->backend->recover(s->be, ret_jobs); }
int store_set_sync(struct store *s, bool each_commit) { return s->backend->set_sync(s->be, each_commit); }

/* store: the front of the persistent job table. It owns the choice of
 * backend (by URL prefix, once, at open) and the checks on what callers
 * pass; everything else goes through the backend's table of functions,
 * so a backend only sees arguments that are already valid.
 *
 * The URL given at open is kept only with its password masked: a
 * connection URL may hold one, and store_describe() ends up in logs. */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/str.h"
#include "daemon/store-backend.h"
#include "daemon/store.h"

#define STORE_JOB_LIST_MAX  500   /* struct job_filter.limit */
#define STORE_ITEM_LIST_MAX 10000 /* struct item_filter.limit */
#define REDACTED            "***"

static const struct store_backend *const backends[] = {
        &store_backend_sqlite,
#ifdef HAVE_LIBPQ
        &store_backend_pg,
#endif
};

/* Schemes we know of but have no backend for in this build. */
static const char *const unbuilt_prefixes[] = {
#ifndef HAVE_LIBPQ
        "postgresql://",
        "postgres://",
#endif
        NULL,
};

static const char *const circuit_states[] = {
        [BREAKER_CLOSED] = "closed", [BREAKER_OPEN] = "open", [BREAKER_HALF_OPEN] = "half_open"};

const char *store_circuit_state_name(enum breaker_state s) { return circuit_states[s]; }

int store_circuit_state_parse(const char *s)
{
        for (size_t i = 0; i < sizeof(circuit_states) / sizeof(circuit_states[0]); i++)
                if (strcmp(circuit_states[i], s) == 0)
                        return (int)i;
        return -EINVAL;
}

void *store_array_grow(void *v, size_t *cap, size_t size)
{
        size_t ncap = *cap ? 2 * *cap : 16;
        void *nv = ncap <= SIZE_MAX / size ? realloc(v, ncap * size) : NULL;

        if (nv)
                *cap = ncap;
        return nv;
}

/* The backend for url and the length of the prefix that chose it. */
static int backend_find(const char *url, const struct store_backend **ret, size_t *ret_len)
{
        for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
                const struct store_backend *b = backends[i];
                const char *p = str_startswith(url, b->prefix)                  ? b->prefix
                                : b->prefix2 && str_startswith(url, b->prefix2) ? b->prefix2
                                                                                : NULL;
                if (p) {
                        *ret = b;
                        *ret_len = strlen(p);
                        return 0;
                }
        }
        for (size_t i = 0; unbuilt_prefixes[i]; i++)
                if (str_startswith(url, unbuilt_prefixes[i]))
                        return -EPROTONOSUPPORT;
        return -EINVAL;
}

int store_check_url(const char *url)
{
        const struct store_backend *b;
        size_t len;

        if (!url)
                return -EINVAL;
        return backend_find(url, &b, &len);
}

/* Append src[0..n) to *out. */
static void emit(char **out, const char *src, size_t n)
{
        memcpy(*out, src, n);
        *out += n;
}

/* Two passes. The user-info: everything between the first ':' after the
 * scheme and the last '@' is the password (a password may hold an '@';
 * masking too much is harmless, too little is not). Then every
 * ...password=VALUE up to the next '&'. */
int store_url_redact(const char *url, char **ret)
{
        const char *rest, *at = NULL, *colon = NULL, *p;
        size_t len;
        char *a, *o, *out, *q;

        if (!url)
                return -EINVAL;
        len = strlen(url);
        /* every mask replaces at least "password=" or ":@" plus nothing */
        a = malloc(len + sizeof(REDACTED) + 1);
        out = malloc(2 * len + 2 * sizeof(REDACTED) + 1);
        if (!a || !out) {
                free(a);
                free(out);
                return -ENOMEM;
        }
        rest = strstr(url, "://");
        rest = rest ? rest + 3 : url;
        at = strrchr(rest, '@');
        colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
        o = a;
        if (colon) {
                emit(&o, url, (size_t)(colon + 1 - url));
                emit(&o, REDACTED, strlen(REDACTED));
                p = at;
        } else {
                p = url;
        }
        emit(&o, p, strlen(p) + 1);

        o = out;
        p = a;
        while ((q = strcasestr(p, "password="))) {
                q += strlen("password=");
                emit(&o, p, (size_t)(q - p));
                emit(&o, REDACTED, strlen(REDACTED));
                p = q + strcspn(q, "&");
        }
        emit(&o, p, strlen(p) + 1);
        free(a);
        *ret = out;
        return 0;
}

static int open_url(const char *url, bool existing, struct store **ret)
{
        const struct store_backend *b;
        struct store *s;
        size_t len;
        int r;

        if (!url)
                return -EINVAL;
        r = backend_find(url, &b, &len);
        if (r < 0)
                return r;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->backend = b;
        r = store_url_redact(url, &s->desc);
        if (r < 0)
                goto fail;
        r = b->open(url + len, existing, &s->be);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        free(s->desc);
        free(s);
        return r;
}

int store_open(const char *url, struct store **ret) { return open_url(url, false, ret); }
int store_open_existing(const char *url, struct store **ret) { return open_url(url, true, ret); }

void store_close(struct store *s)
{
        if (!s)
                return;
        s->backend->close(s->be);
        free(s->desc);
        free(s);
}

const char *store_describe(const struct store *s) { return s->desc; }
int store_check(struct store *s) { return s->backend->check(s->be); }

int store_begin(struct store *s) { return s->backend->begin(s->be); }
int store_commit(struct store *s) { return s->backend->commit(s->be); }
int store_rollback(struct store *s) { return s->backend->rollback(s->be); }

/* What every backend needs of items it writes: a known state, and no
 * negative resume offset. */
static bool items_ok(const struct item *items, size_t n)
{
        if (n > 0 && !items)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned)items[i].state >= _ITEM_STATE_MAX || items[i].resumed_from < 0)
                        return false;
        return true;
}

int store_job_insert(struct store *s, struct job *job, const struct item *items, size_t nitems)
{
        if (!job || !items_ok(items, nitems))
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
        if (!job || job->lease_token < 0 || (unsigned)job->state >= _JOB_STATE_MAX)
                return -EINVAL;
        return s->backend->job_update(s->be, job, true);
}

int store_job_per_source(struct store *s, const char *id, struct job_source **ret, size_t *ret_n)
{
        if (!id || !ret || !ret_n)
                return -EINVAL;
        return s->backend->job_per_source(s->be, id, ret, ret_n);
}

int store_job_update_progress(struct store *s, const struct job *job)
{
        if (!job || job->lease_token < 0 || (unsigned)job->state >= _JOB_STATE_MAX)
                return -EINVAL;
        return s->backend->job_update(s->be, job, false);
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
        if (!job_id || !items_ok(it, 1))
                return -EINVAL;
        return s->backend->item_update(s->be, job_id, it);
}

int store_item_append(struct store *s, const char *job_id, const struct item *items, size_t n)
{
        if (!job_id || !items_ok(items, n))
                return -EINVAL;
        return s->backend->item_append(s->be, job_id, items, n);
}

int store_set_sync(struct store *s, bool each_commit) { return s->backend->set_sync(s->be, each_commit); }

/* A node id: 1..STORE_NODE_ID_MAX bytes, no control characters. */
static bool node_ok(const char *id)
{
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n < 1 || n > STORE_NODE_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (iscntrl((unsigned char)id[i]))
                        return false;
        return true;
}

int store_recover(struct store *s, const char *node, int64_t now_ms, int64_t *ret_jobs)
{
        if ((node && !node_ok(node)) || now_ms < 0)
                return -EINVAL;
        return s->backend->recover(s->be, node, now_ms, ret_jobs);
}

/* ---- leases ---- */

static bool lease_args_ok(struct store *s, const char *node, int64_t now_ms, int64_t lease_ms)
{
        return node_ok(node) && now_ms >= 0 && lease_ms > 0 && lease_ms <= INT64_MAX - now_ms &&
               !s->backend->in_batch(s->be);
}

int store_job_claim(struct store *s, const char *node, size_t limit, int64_t now_ms, int64_t lease_ms,
                    struct store_claim **ret, size_t *ret_n)
{
        if (!lease_args_ok(s, node, now_ms, lease_ms) || limit > STORE_LEASE_MAX || !ret || !ret_n)
                return -EINVAL;
        if (limit == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        return s->backend->job_claim(s->be, node, limit, now_ms, lease_ms, ret, ret_n);
}

int store_lease_renew(struct store *s, const char *node, const struct store_claim *c, size_t n,
                      int64_t now_ms, int64_t lease_ms, bool *ret_lost)
{
        if (!lease_args_ok(s, node, now_ms, lease_ms) || n > STORE_LEASE_MAX || (n > 0 && (!c || !ret_lost)))
                return -EINVAL;
        if (n == 0)
                return 0;
        return s->backend->lease_renew(s->be, node, c, n, now_ms, lease_ms, ret_lost);
}

int store_lease_take(struct store *s, const char *id, const char *node, int64_t now_ms, int64_t lease_ms,
                     int64_t *ret_token)
{
        if (!id || !ret_token || !lease_args_ok(s, node, now_ms, lease_ms))
                return -EINVAL;
        return s->backend->lease_take(s->be, id, node, now_ms, lease_ms, ret_token);
}

/* ---- nodes ---- */

int store_node_beat(struct store *s, const struct store_node *n)
{
        if (!n || !node_ok(n->id) || n->started_at < 0 || n->heartbeat_at < 0 || n->leases < 0)
                return -EINVAL;
        return s->backend->node_beat(s->be, n);
}

int store_node_list(struct store *s, int64_t alive_since_ms, struct store_node **ret, size_t *ret_n)
{
        if (alive_since_ms < 0 || !ret || !ret_n)
                return -EINVAL;
        return s->backend->node_list(s->be, alive_since_ms, ret, ret_n);
}

int store_node_remove(struct store *s, const char *id)
{
        if (!node_ok(id))
                return -EINVAL;
        return s->backend->node_remove(s->be, id);
}

void store_nodes_free(struct store_node *v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++) {
                free(v[i].id);
                free(v[i].api_url);
                free(v[i].version);
        }
        free(v);
}

/* ---- circuits ---- */

static bool source_ok(const char *source) { return source && *source && strlen(source) <= SOURCE_NAME_MAX; }

int store_circuit_put(struct store *s, const struct store_circuit *c)
{
        if (!c || !source_ok(c->source) || (unsigned)c->state > BREAKER_HALF_OPEN ||
            c->consecutive_failures < 0 || c->trips < 0 || c->open_ms < 0 ||
            (c->probe_owner && !node_ok(c->probe_owner)))
                return -EINVAL;
        return s->backend->circuit_put(s->be, c);
}

int store_circuit_list(struct store *s, int64_t changed_since_ms, struct store_circuit **ret, size_t *ret_n)
{
        if (changed_since_ms < 0 || !ret || !ret_n)
                return -EINVAL;
        return s->backend->circuit_list(s->be, changed_since_ms, ret, ret_n);
}

int store_circuit_take_probe(struct store *s, const char *source, const char *node, int64_t now_ms,
                             int64_t probe_ms)
{
        if (!source_ok(source) || !lease_args_ok(s, node, now_ms, probe_ms))
                return -EINVAL;
        return s->backend->circuit_take_probe(s->be, source, node, now_ms, probe_ms);
}

int store_circuit_delete(struct store *s, const char *source)
{
        if (!source_ok(source))
                return -EINVAL;
        return s->backend->circuit_delete(s->be, source);
}

void store_circuits_free(struct store_circuit *v, size_t n)
{
        if (!v)
                return;
        for (size_t i = 0; i < n; i++) {
                free(v[i].source);
                free(v[i].last_error);
                free(v[i].probe_owner);
        }
        free(v);
}

/* ---- notifications ---- */

int store_notify_fd(struct store *s)
{
        return s->backend->notify_fd ? s->backend->notify_fd(s->be) : -EOPNOTSUPP;
}

int store_notify_drain(struct store *s, bool *ret_any)
{
        if (!ret_any)
                return -EINVAL;
        if (!s->backend->notify_drain) {
                *ret_any = false;
                return 0;
        }
        return s->backend->notify_drain(s->be, ret_any);
}

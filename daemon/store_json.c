/* store_json: the JSON text of the job columns that hold lists, `sources`
 * (an array of names) and `per_source` (an array of struct job_source),
 * and of `options` (an object of the job_limits that are set), for store
 * backends. An empty list is stored as NULL (no text). Strings
 * that are not UTF-8 are written with '?' for the bad bytes (jansson
 * refuses them); text that does not decode to the expected shape is -EIO. */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "daemon/store_json.h"

/* A JSON string of s (NULL: JSON null); bytes of s that are not UTF-8
 * become '?'. */
static json_t *jstr(const char *s)
{
        json_t *v;
        char *copy;

        if (!s)
                return json_null();
        v = json_string(s);
        if (v)
                return v;
        copy = strdup(s);
        if (!copy)
                return NULL;
        for (unsigned char *p = (unsigned char *)copy; *p; p++)
                if (*p >= 0x80)
                        *p = '?';
        v = json_string(copy);
        free(copy);
        return v;
}

/* JSON null or absent: NULL; a string: a copy; anything else: -EIO. */
static int jstr_dup(json_t *v, char **ret)
{
        char *s = NULL;

        if (v && !json_is_null(v)) {
                if (!json_is_string(v))
                        return -EIO;
                s = strdup(json_string_value(v));
                if (!s)
                        return -ENOMEM;
        }
        *ret = s;
        return 0;
}

/* Dump a (stolen) array, or NULL for an empty one. */
static int json_take_text(json_t *a, char **ret)
{
        char *text = NULL;

        if (!a)
                return -ENOMEM;
        if (json_array_size(a) > 0) {
                text = json_dumps(a, JSON_COMPACT);
                if (!text) {
                        json_decref(a);
                        return -ENOMEM;
                }
        }
        json_decref(a);
        *ret = text;
        return 0;
}

int store_json_encode_sources(const struct job *j, char **ret)
{
        json_t *a = json_array();

        for (size_t i = 0; a && i < j->nsources; i++)
                if (json_array_append_new(a, jstr(j->sources[i])) < 0) {
                        json_decref(a);
                        a = NULL;
                }
        return json_take_text(a, ret);
}

/* per_source is written without a jansson tree: a tree costs some 14
 * allocations per entry, and a job over 10,000 hosts rewrote 140,000 of
 * them at each write, which fragmented the heap (measured: RSS twice the
 * heap). The text is the same JSON, decoded by jansson as before. */
struct text {
        char *p;
        size_t n, cap;
        bool oom;
};

static void text_put(struct text *t, const char *s, size_t n)
{
        if (t->oom)
                return;
        if (t->n + n + 1 > t->cap) {
                size_t cap = t->cap ? t->cap : 4096;
                while (cap < t->n + n + 1)
                        cap *= 2;
                char *p = realloc(t->p, cap);
                if (!p) {
                        t->oom = true;
                        return;
                }
                t->p = p;
                t->cap = cap;
        }
        memcpy(t->p + t->n, s, n);
        t->n += n;
        t->p[t->n] = '\0';
}

static void text_str(struct text *t, const char *s) { text_put(t, s, strlen(s)); }

static void text_int(struct text *t, const char *key, int64_t v)
{
        char buf[64];
        int n = snprintf(buf, sizeof(buf), ",\"%s\":%lld", key, (long long)v);
        text_put(t, buf, (size_t)n);
}

/* Is s well-formed UTF-8 (no overlong forms, surrogates or code points
 * past U+10FFFF), as jansson wants its strings? */
static bool utf8_valid(const unsigned char *s)
{
        while (*s) {
                unsigned c = *s, n;
                uint32_t cp;
                if (c < 0x80) {
                        s++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1, cp = c & 0x1f;
                else if (c >= 0xe0 && c <= 0xef)
                        n = 2, cp = c & 0x0f;
                else if (c >= 0xf0 && c <= 0xf4)
                        n = 3, cp = c & 0x07;
                else
                        return false;
                for (unsigned k = 1; k <= n; k++) {
                        if ((s[k] & 0xc0) != 0x80)
                                return false;
                        cp = cp << 6 | (s[k] & 0x3f);
                }
                if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
                    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
                        return false;
                s += n + 1;
        }
        return true;
}

/* A JSON string of s (NULL: null); as jstr(), bytes of s that are not
 * UTF-8 become '?'. */
static void text_json_string(struct text *t, const char *s)
{
        static const char hex[] = "0123456789abcdef";
        bool valid;

        if (!s) {
                text_str(t, "null");
                return;
        }
        valid = utf8_valid((const unsigned char *)s);
        text_put(t, "\"", 1);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                const unsigned char *run = p;
                while (*p >= 0x20 && *p != '"' && *p != '\\' && (valid || *p < 0x80))
                        p++;
                text_put(t, (const char *)run, (size_t)(p - run));
                if (!*p)
                        break;
                if (*p == '"' || *p == '\\') {
                        char e[2] = {'\\', (char)*p};
                        text_put(t, e, 2);
                } else if (*p >= 0x80) {
                        text_put(t, "?", 1);
                } else {
                        char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
                        text_put(t, e, 6);
                }
        }
        text_put(t, "\"", 1);
}

static void job_source_write(struct text *t, const struct job_source *ps)
{
        text_str(t, "{\"source\":");
        text_json_string(t, ps->source);
        text_str(t, ",\"state\":");
        text_json_string(t, source_state_to_string(ps->state));
        text_int(t, "items", ps->items);
        text_int(t, "succeeded", ps->succeeded);
        text_int(t, "failed", ps->failed);
        text_int(t, "skipped", ps->skipped);
        text_int(t, "attempts", ps->attempts);
        text_int(t, "retries", ps->retries);
        text_int(t, "bytes", ps->bytes);
        text_str(t, ",\"error\":");
        if (ps->error.code) {
                text_str(t, "{\"code\":");
                text_json_string(t, ps->error.code);
                text_str(t, ",\"message\":");
                text_json_string(t, ps->error.message);
                text_str(t, "}");
        } else {
                text_str(t, "null");
        }
        if (ps->pages || ps->listing) {
                text_int(t, "pages", ps->pages);
                text_str(t, ",\"listing\":");
                text_json_string(t, ps->listing);
        }
        text_str(t, "}");
}

int store_json_encode_per_source(const struct job *j, char **ret)
{
        return store_json_encode_per_source_range(j, 0, j->nper_source, ret);
}

int store_json_encode_per_source_split(const struct job *j, char **ret_head, char **ret_rest)
{
        char *head = NULL, *rest = NULL;
        int r;

        if (j->per_source_total > j->nper_source)
                return -EINVAL;
        r = store_json_encode_per_source_range(j, 0, JOB_PER_SOURCE_HEAD, &head);
        if (r == 0)
                r = store_json_encode_per_source_range(j, JOB_PER_SOURCE_HEAD, j->nper_source, &rest);
        if (r < 0) {
                free(head);
                return r;
        }
        *ret_head = head;
        *ret_rest = rest;
        return 0;
}

int store_json_encode_per_source_range(const struct job *j, size_t from, size_t to, char **ret)
{
        struct text t = {0};

        if (to > j->nper_source)
                to = j->nper_source;
        if (from >= to) {
                *ret = NULL;
                return 0;
        }
        for (size_t i = from; i < to; i++)
                if ((unsigned)j->per_source[i].state >= _SRC_STATE_MAX)
                        return -EINVAL;
        for (size_t i = from; i < to; i++) {
                text_put(&t, i == from ? "[" : ",", 1);
                job_source_write(&t, &j->per_source[i]);
        }
        text_put(&t, "]", 1);
        if (t.oom) {
                free(t.p);
                return -ENOMEM;
        }
        *ret = t.p;
        return 0;
}

/* Parse a column holding a JSON array; NULL column: *ret NULL. */
static int json_array_load(const char *text, json_t **ret)
{
        json_t *a = NULL;

        if (text) {
                a = json_loads(text, 0, NULL);
                if (!json_is_array(a)) {
                        json_decref(a);
                        return -EIO;
                }
        }
        *ret = a;
        return 0;
}

int store_json_decode_sources(const char *text, char ***ret, size_t *ret_n)
{
        json_t *a = NULL;
        char **v = NULL;
        size_t n = 0;
        int r = json_array_load(text, &a);

        if (r < 0 || !a)
                goto out;
        v = calloc(json_array_size(a) + 1, sizeof(*v));
        if (!v)
                r = -ENOMEM;
        for (; r == 0 && n < json_array_size(a); n++) {
                r = jstr_dup(json_array_get(a, n), &v[n]);
                if (r == 0 && !v[n])
                        r = -EIO;
        }
out:
        json_decref(a);
        if (r < 0) {
                for (size_t i = 0; v && i < n; i++)
                        free(v[i]);
                free(v);
                return r;
        }
        *ret = n ? v : NULL;
        if (!n)
                free(v);
        *ret_n = n;
        return 0;
}

static int error_decode(json_t *o, struct job_error *e)
{
        int r;

        if (!o || json_is_null(o))
                return 0;
        if (!json_is_object(o))
                return -EIO;
        r = jstr_dup(json_object_get(o, "code"), &e->code);
        if (r == 0)
                r = jstr_dup(json_object_get(o, "message"), &e->message);
        return r;
}

/* Into a zeroed *ps; on failure the caller clears it. */
static int job_source_decode(json_t *o, struct job_source *ps)
{
        json_t *name = NULL, *err = NULL, *listing = NULL;
        const char *state;
        int pages = 0;
        json_int_t v[7];
        int r, s;

        if (json_unpack(o, "{s:o, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s?o, s?i, s?o}", "source", &name,
                        "state", &state, "items", &v[0], "succeeded", &v[1], "failed", &v[2], "skipped",
                        &v[3], "attempts", &v[4], "retries", &v[5], "bytes", &v[6], "error", &err, "pages",
                        &pages, "listing", &listing) < 0)
                return -EIO;
        s = source_state_from_string(state);
        if (s < 0)
                return -EIO;
        ps->state = s;
        ps->items = v[0];
        ps->succeeded = v[1];
        ps->failed = v[2];
        ps->skipped = v[3];
        ps->attempts = v[4];
        ps->retries = v[5];
        ps->bytes = v[6];
        ps->pages = pages;
        r = jstr_dup(name, &ps->source);
        if (r == 0 && listing && !json_is_null(listing))
                r = jstr_dup(listing, &ps->listing);
        if (r == 0)
                r = error_decode(err, &ps->error);
        return r;
}

int store_json_decode_per_source(const char *text, struct job_source **ret, size_t *ret_n)
{
        struct job_source *v = NULL;
        json_t *a = NULL;
        size_t n = 0;
        int r = json_array_load(text, &a);

        if (r < 0 || !a)
                goto out;
        v = calloc(json_array_size(a), sizeof(*v));
        if (!v && json_array_size(a) > 0)
                r = -ENOMEM;
        for (; r == 0 && n < json_array_size(a); n++)
                r = job_source_decode(json_array_get(a, n), &v[n]);
out:
        json_decref(a);
        if (r < 0) {
                for (size_t i = 0; v && i < n; i++)
                        job_source_clear(&v[i]);
                free(v);
                return r;
        }
        *ret = n ? v : NULL;
        if (!n)
                free(v);
        *ret_n = n;
        return 0;
}

int store_json_decode_per_source_parts(const char *head, const char *rest, struct job_source **ret,
                                       size_t *ret_n)
{
        struct job_source *a = NULL, *b = NULL, *v;
        size_t na = 0, nb = 0;
        int r = store_json_decode_per_source(head, &a, &na);

        if (r == 0)
                r = store_json_decode_per_source(rest, &b, &nb);
        if (r < 0)
                goto fail;
        if (nb == 0) {
                *ret = a;
                *ret_n = na;
                return 0;
        }
        r = -ENOMEM;
        v = realloc(a, (na + nb) * sizeof(*v));
        if (!v)
                goto fail;
        memcpy(v + na, b, nb * sizeof(*v));
        free(b);
        *ret = v;
        *ret_n = na + nb;
        return 0;
fail:
        for (size_t i = 0; i < na; i++)
                job_source_clear(&a[i]);
        for (size_t i = 0; i < nb; i++)
                job_source_clear(&b[i]);
        free(a);
        free(b);
        return r;
}

/* A timeout as stored: 0 (not set) or a finite positive number of s. */
static bool timeout_ok(double v) { return isfinite(v) && v >= 0; }

int store_json_encode_options(const struct job_limits *l, char **ret)
{
        const double t[] = {l->source_timeout, l->request_timeout, l->stall_timeout};
        static const char *const names[] = {"source_timeout", "request_timeout", "stall_timeout"};
        json_t *o;
        char *text = NULL;
        int r = 0;

        for (size_t i = 0; i < 3; i++)
                if (!timeout_ok(t[i]))
                        return -EINVAL;
        if (l->max_retries < -1)
                return -EINVAL;
        o = json_object();
        for (size_t i = 0; o && r == 0 && i < 3; i++)
                if (t[i] > 0)
                        r = json_object_set_new(o, names[i], json_real(t[i]));
        if (o && r == 0 && l->max_retries >= 0)
                r = json_object_set_new(o, "max_retries", json_integer(l->max_retries));
        if (o && r == 0 && json_object_size(o) > 0) {
                text = json_dumps(o, JSON_COMPACT);
                if (!text)
                        r = -1;
        }
        json_decref(o);
        if (!o || r < 0)
                return -ENOMEM;
        *ret = text;
        return 0;
}

/* A timeout member: absent leaves *v 0; anything but a number >= 0 is -EIO. */
static int timeout_decode(json_t *o, const char *name, double *v)
{
        json_t *m = json_object_get(o, name);

        if (!m)
                return 0;
        if (!json_is_number(m) || !timeout_ok(json_number_value(m)))
                return -EIO;
        *v = json_number_value(m);
        return 0;
}

int store_json_decode_options(const char *text, struct job_limits *ret)
{
        struct job_limits l = JOB_LIMITS_UNSET;
        json_t *o, *m;
        int r;

        if (!text) {
                *ret = l;
                return 0;
        }
        o = json_loads(text, 0, NULL);
        if (!json_is_object(o)) {
                json_decref(o);
                return -EIO;
        }
        r = timeout_decode(o, "source_timeout", &l.source_timeout);
        if (r == 0)
                r = timeout_decode(o, "request_timeout", &l.request_timeout);
        if (r == 0)
                r = timeout_decode(o, "stall_timeout", &l.stall_timeout);
        m = json_object_get(o, "max_retries");
        if (r == 0 && m) {
                if (json_is_integer(m) && json_integer_value(m) >= 0 && json_integer_value(m) <= INT_MAX)
                        l.max_retries = (int)json_integer_value(m);
                else
                        r = -EIO;
        }
        json_decref(o);
        if (r < 0)
                return r;
        *ret = l;
        return 0;
}

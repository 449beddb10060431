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

static json_t *jerror(const struct job_error *e)
{
        if (!e->code)
                return json_null();
        return json_pack("{s:o, s:o}", "code", jstr(e->code), "message", jstr(e->message));
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

static json_t *job_source_encode(const struct job_source *ps)
{
        json_t *o = json_pack("{s:o, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "source",
                              jstr(ps->source), "state", source_state_to_string(ps->state), "items",
                              (json_int_t)ps->items, "succeeded", (json_int_t)ps->succeeded, "failed",
                              (json_int_t)ps->failed, "skipped", (json_int_t)ps->skipped, "attempts",
                              (json_int_t)ps->attempts, "retries", (json_int_t)ps->retries, "bytes",
                              (json_int_t)ps->bytes, "error", jerror(&ps->error));
        if (o && (ps->pages || ps->listing) &&
            json_object_update_new(
                    o, json_pack("{s:i, s:o}", "pages", ps->pages, "listing", jstr(ps->listing))) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int store_json_encode_per_source(const struct job *j, char **ret)
{
        json_t *a;

        for (size_t i = 0; i < j->nper_source; i++)
                if ((unsigned)j->per_source[i].state >= _SRC_STATE_MAX)
                        return -EINVAL;
        a = json_array();
        for (size_t i = 0; a && i < j->nper_source; i++)
                if (json_array_append_new(a, job_source_encode(&j->per_source[i])) < 0) {
                        json_decref(a);
                        a = NULL;
                }
        return json_take_text(a, ret);
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

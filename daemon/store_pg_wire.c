/* store_pg_wire: what travels between the PostgreSQL backend and libpq:
 * statement parameters as text (strings cleaned to UTF-8, which the
 * server requires of text), array literals for the parameters that carry
 * many rows at once, reading result columns, and SQLSTATE codes as
 * -errno. Nothing here talks to the server. */
#include "autoconfig.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/store_pg-internal.h"

/* ---- parameters ---- */

/* Length of the valid UTF-8 sequence at s, 0 when none starts there. */
static size_t utf8_seq(const unsigned char *s)
{
        unsigned c = s[0];
        size_t n;
        unsigned min, v;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2, min = 0x80, v = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                n = 3, min = 0x800, v = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                n = 4, min = 0x10000, v = c & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                v = v << 6 | (s[i] & 0x3f);
        }
        if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
                return 0;
        return n;
}

/* s itself when it is UTF-8, else a copy with '?' for each bad byte
 * (*ret_copy set, to free). NULL when out of memory. */
static const char *utf8_clean(const char *s, char **ret_copy)
{
        const unsigned char *p = (const unsigned char *)s;
        char *copy;
        size_t i = 0, n;

        *ret_copy = NULL;
        while (p[i] && (n = utf8_seq(p + i)) > 0)
                i += n;
        if (!p[i])
                return s;
        copy = strdup(s);
        if (!copy)
                return NULL;
        for (unsigned char *q = (unsigned char *)copy + i; *q;) {
                n = utf8_seq(q);
                if (n == 0)
                        *q++ = '?';
                else
                        q += n;
        }
        *ret_copy = copy;
        return copy;
}

static bool pgp_room(struct pg_params *p)
{
        if (p->n >= PG_PARAMS_MAX) {
                p->failed = true;
                return false;
        }
        return true;
}

void pgp_str(struct pg_params *p, const char *s)
{
        char *copy = NULL;

        if (!pgp_room(p))
                return;
        if (s) {
                s = utf8_clean(s, &copy);
                if (!s)
                        p->failed = true;
        }
        p->owned[p->n] = copy;
        p->v[p->n++] = s;
}

void pgp_take(struct pg_params *p, char *s)
{
        if (!pgp_room(p)) {
                free(s);
                return;
        }
        p->owned[p->n] = s;
        p->v[p->n++] = s;
}

void pgp_i64(struct pg_params *p, int64_t v)
{
        if (!pgp_room(p))
                return;
        snprintf(p->num[p->n], sizeof(p->num[p->n]), "%" PRId64, v);
        p->owned[p->n] = NULL;
        p->v[p->n] = p->num[p->n];
        p->n++;
}

void pgp_time(struct pg_params *p, int64_t ms)
{
        if (ms)
                pgp_i64(p, ms);
        else
                pgp_str(p, NULL);
}

void pgp_dbl(struct pg_params *p, double v)
{
        if (!pgp_room(p))
                return;
        snprintf(p->num[p->n], sizeof(p->num[p->n]), "%.17g", v);
        p->owned[p->n] = NULL;
        p->v[p->n] = p->num[p->n];
        p->n++;
}

void pgp_clear(struct pg_params *p)
{
        for (int i = 0; i < p->n; i++) {
                free(p->owned[i]);
                p->owned[i] = NULL;
        }
        p->n = 0;
}

/* ---- array literals ---- */

static void pga_put(struct pg_array *a, const char *s, size_t n)
{
        if (a->oom)
                return;
        if (a->len + n + 2 > a->cap) {
                size_t cap = a->cap ? a->cap : 256;
                char *b;
                while (cap < a->len + n + 2)
                        cap *= 2;
                b = realloc(a->buf, cap);
                if (!b) {
                        a->oom = true;
                        return;
                }
                a->buf = b;
                a->cap = cap;
        }
        memcpy(a->buf + a->len, s, n);
        a->len += n;
}

static void pga_sep(struct pg_array *a) { pga_put(a, a->len ? "," : "{", 1); }

/* Quoted, with '"' and '\' escaped; NULL unquoted. */
void pga_str(struct pg_array *a, const char *s)
{
        char *copy = NULL;

        pga_sep(a);
        if (!s) {
                pga_put(a, "NULL", 4);
                return;
        }
        s = utf8_clean(s, &copy);
        if (!s) {
                a->oom = true;
                return;
        }
        pga_put(a, "\"", 1);
        for (const char *p = s; *p;) {
                size_t n = strcspn(p, "\"\\");
                pga_put(a, p, n);
                p += n;
                if (*p) {
                        pga_put(a, "\\", 1);
                        pga_put(a, p++, 1);
                }
        }
        pga_put(a, "\"", 1);
        free(copy);
}

void pga_i64(struct pg_array *a, int64_t v)
{
        char num[32];
        int n = snprintf(num, sizeof(num), "%" PRId64, v);

        pga_sep(a);
        pga_put(a, num, (size_t)n);
}

char *pga_end(struct pg_array *a)
{
        char *s;

        if (a->len == 0)
                pga_put(a, "{", 1);
        pga_put(a, "}", 2); /* with the NUL */
        s = a->oom ? NULL : a->buf;
        if (!s)
                free(a->buf);
        memset(a, 0, sizeof(*a));
        return s;
}

/* ---- results and errors ---- */

char *pg_str(const PGresult *res, int row, int col, bool *oom)
{
        char *s;

        if (PQgetisnull(res, row, col))
                return NULL;
        s = strdup(PQgetvalue(res, row, col));
        if (!s)
                *oom = true;
        return s;
}

int64_t pg_i64(const PGresult *res, int row, int col)
{
        return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

bool pg_bool(const PGresult *res, int row, int col) { return strcmp(PQgetvalue(res, row, col), "t") == 0; }

static bool sqlstate_is(const char *state, const char *want) { return strcmp(state, want) == 0; }

int pg_error(struct pg *be, const PGresult *res)
{
        const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

        if (PQstatus(be->conn) != CONNECTION_OK)
                return -ECONNRESET;
        if (!st)
                return res ? -EIO : -ENOMEM;
        if (sqlstate_is(st, "23505"))
                return -EEXIST; /* unique_violation */
        if (sqlstate_is(st, "23503"))
                return -ENOENT; /* foreign_key_violation: the job went */
        if (sqlstate_is(st, "40001") || sqlstate_is(st, "40P01") || sqlstate_is(st, "55P03") ||
            sqlstate_is(st, "57014") || sqlstate_is(st, "53300"))
                return -EBUSY; /* serialization, deadlock, lock timeout, cancelled, too many connections */
        if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0)
                return -ECONNRESET; /* connection exception, shutdown */
        if (sqlstate_is(st, "53100"))
                return -ENOSPC;
        if (sqlstate_is(st, "53200"))
                return -ENOMEM;
        if (sqlstate_is(st, "42501") || strncmp(st, "28", 2) == 0)
                return -EACCES;
        return -EIO;
}

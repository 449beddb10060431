/* table: aligned columns for people. Cells are kept cleaned (fmt_clean)
 * until table_print measures them on a terminal's terms (fmt_width) and
 * writes each row with two spaces between columns; the last column is
 * never padded, so long URLs or errors do not drag spaces behind them. */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/ctl.h"
#include "cli/format.h"

#define TABLE_COLS_MAX 16 /* columns of one table */
#define TABLE_GAP      "  "

struct table {
        size_t ncols;
        char align[TABLE_COLS_MAX]; /* 'l' or 'r' per column */
        char **cells;               /* row-major, ncols per row; the first row holds the headers */
        size_t ncells, cap;
        bool failed; /* a cell could not be kept (no memory): print nothing */
};

static void push(struct table *t, char *cell)
{
        if (!cell) {
                t->failed = true;
                return;
        }
        if (t->ncells == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 64;
                char **v = realloc(t->cells, cap * sizeof(*v));
                if (!v) {
                        free(cell);
                        t->failed = true;
                        return;
                }
                t->cells = v;
                t->cap = cap;
        }
        t->cells[t->ncells++] = cell;
}

struct table *table_new(const char *align, const char *const *headers)
{
        struct table *t = calloc(1, sizeof(*t));
        size_t n = strlen(align);

        if (!t || n == 0 || n > TABLE_COLS_MAX) {
                free(t);
                return NULL;
        }
        t->ncols = n;
        memcpy(t->align, align, n);
        for (size_t i = 0; i < n; i++)
                push(t, strdup(headers[i]));
        return t;
}

void table_cell(struct table *t, const char *fmt, ...)
{
        char *raw;
        va_list ap;

        if (!t)
                return;
        va_start(ap, fmt);
        int r = vasprintf(&raw, fmt, ap);
        va_end(ap);
        if (r < 0) {
                t->failed = true;
                return;
        }
        push(t, fmt_clean(raw));
        free(raw);
}

void table_print(struct table *t, FILE *f)
{
        size_t width[TABLE_COLS_MAX] = {0};

        if (!t || t->failed) {
                ctl_warn("out of memory");
                return;
        }
        for (size_t i = 0; i < t->ncells; i++) {
                size_t w = fmt_width(t->cells[i]);
                if (w > width[i % t->ncols])
                        width[i % t->ncols] = w;
        }
        for (size_t i = 0; i < t->ncells; i++) {
                size_t col = i % t->ncols, pad = width[col] - fmt_width(t->cells[i]);
                bool last = col + 1 == t->ncols || i + 1 == t->ncells;
                if (col > 0)
                        fputs(TABLE_GAP, f);
                if (t->align[col] == 'r')
                        fprintf(f, "%*s", (int)pad, "");
                fputs(t->cells[i], f);
                if (t->align[col] != 'r' && !last)
                        fprintf(f, "%*s", (int)pad, "");
                if (last)
                        fputc('\n', f);
        }
}

void table_free(struct table *t)
{
        if (!t)
                return;
        for (size_t i = 0; i < t->ncells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
}

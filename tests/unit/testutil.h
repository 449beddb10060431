/* Shared bits of the check unit tests: each test gets its own temp dir. */
#pragma once
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* mkdtemp under $TMPDIR; the caller removes it with testutil_rmtree(). */
static inline char *testutil_tmpdir(void)
{
        const char *base = getenv("TMPDIR");
        char *path;
        if (!base || !*base)
                base = "/tmp";
        char tail[7]; /* mkdtemp's template ends in six capital X */
        memset(tail, 'X', 6);
        tail[6] = '\0';
        if (asprintf(&path, "%s/hauld-test-%s", base, tail) < 0)
                return NULL;
        if (!mkdtemp(path)) {
                free(path);
                return NULL;
        }
        return path;
}

static inline void testutil_rmtree(char *path)
{
        char *cmd;
        if (!path)
                return;
        if (asprintf(&cmd, "rm -rf '%s'", path) >= 0) {
                int r = system(cmd);
                (void)r;
                free(cmd);
        }
        free(path);
}

/* Run one suite; exit status for automake. */
static inline int testutil_run(Suite *s)
{
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* libFuzzer target: file names from hostile input. Whatever comes in, a
 * name out of naming_* is one safe path component: no '/', no NUL inside,
 * not "." or "..", 1..NAME_MAX_BYTES bytes. urlcheck_validate must not
 * crash and its source must be usable as a directory name. */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/naming.h"
#include "daemon/urlcheck.h"

#define FUZZ_INPUT_MAX 16384

static void check_name(const char *name)
{
        size_t len = strlen(name);
        if (len == 0 || len > NAME_MAX_BYTES)
                abort();
        if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                abort();
}

/* name was allocated by the call that returned r; checked and freed. */
static void take(int r, char *name)
{
        if (r < 0)
                return;
        check_name(name);
        char *ext = NULL;
        if (naming_with_extension(name, "jpg", &ext) == 0) {
                check_name(ext);
                free(ext);
        }
        char *var = NULL;
        if (naming_variant(name, 12345, &var) == 0) {
                check_name(var);
                free(var);
        }
        free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s, *out = NULL, *source = NULL, *norm = NULL;

        if (size > FUZZ_INPUT_MAX || !(s = malloc(size + 1)))
                return 0;
        memcpy(s, data, size);
        s[size] = '\0'; /* the C string stops at any NUL inside: that is the point of the test */

        take(naming_sanitize(s, &out), out);
        out = NULL;
        take(naming_from_url(s, &out), out);
        out = NULL;
        take(naming_from_content_disposition(s, &out), out);
        if (urlcheck_validate(s, &source, &norm) == 0) {
                if (!source || !*source || strchr(source, '/'))
                        abort();
        }
        free(source);
        free(norm);
        free(s);
        return 0;
}

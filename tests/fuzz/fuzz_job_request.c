/* libFuzzer target: POST /v1/jobs bodies. job_request_parse must answer
 * every input with 0 or -EINVAL (never crash, leak or read past len), and
 * what it accepts must satisfy the limits it promises. */
#include "autoconfig.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/job_request.h"

#define FUZZ_BODY_MAX (64 * 1024) /* bodies past this are the 413 guard's, not the parser's */

static void check_job(const struct job *job, const struct item *items, size_t n)
{
        if (job->max < 1 || job->max > JOB_MAX_MAX || job->nsources > JOB_MAX_SOURCES || n > JOB_MAX_ITEMS)
                abort();
        if (job->priority < JOB_PRIORITY_MIN || job->priority > JOB_PRIORITY_MAX)
                abort();
        if (!job->query && job->nsources > 0)
                abort();
        if (!job->query && n == 0)
                abort();
        for (size_t i = 0; i < n; i++)
                if ((size_t)items[i].index != i || !items[i].url || !items[i].source ||
                    strlen(items[i].url) > JOB_URL_MAX)
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct job *job = NULL;
        struct item *items = NULL;
        size_t n = 0;
        json_t *errors = NULL;

        if (size > FUZZ_BODY_MAX)
                return 0;
        /* an exact-size copy, so ASan sees any read past len */
        char *body = malloc(size ? size : 1);
        if (!body)
                return 0;
        memcpy(body, data, size);
        int r = job_request_parse(body, size, &job, &items, &n, &errors);
        if (r == 0) {
                check_job(job, items, n);
                if (job_request_tally(job, items, n) < 0)
                        abort();
                job_free(job);
                items_free(items, n);
        } else if (r == -EINVAL) {
                if (!json_is_array(errors) || json_array_size(errors) == 0)
                        abort();
                json_decref(errors);
        } else if (r != -ENOMEM) {
                abort();
        }
        free(body);
        return 0;
}

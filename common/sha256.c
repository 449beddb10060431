/* sha256: the one place that asks OpenSSL for SHA-256 (transfers hash their
 * bodies as they arrive, the committer compares files, the API hashes
 * request bodies for idempotency). A context is one EVP_MD_CTX; after
 * sha256_final_hex() it is finished and refuses updates (-EINVAL). */
#include "autoconfig.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/sha256.h"
#include "common/str.h"

#define SHA256_BYTES 32 /* bytes of a digest */

struct sha256 {
        EVP_MD_CTX *ctx;
        bool finished; /* sha256_final_hex() was called */
};

int sha256_new(struct sha256 **ret)
{
        struct sha256 *s = calloc(1, sizeof(*s));
        int r = -ENOMEM;

        if (!s)
                return -ENOMEM;
        s->ctx = EVP_MD_CTX_new();
        if (!s->ctx)
                goto fail;
        if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1) {
                r = -EIO;
                goto fail;
        }
        *ret = s;
        return 0;
fail:
        sha256_free(s);
        return r;
}

int sha256_update(struct sha256 *s, const void *data, size_t len)
{
        if (s->finished)
                return -EINVAL;
        if (len == 0)
                return 0;
        return EVP_DigestUpdate(s->ctx, data, len) == 1 ? 0 : -EIO;
}

int sha256_final_hex(struct sha256 *s, char *hex)
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;

        if (s->finished)
                return -EINVAL;
        s->finished = true;
        if (EVP_DigestFinal_ex(s->ctx, md, &mdlen) != 1 || mdlen != SHA256_BYTES)
                return -EIO;
        str_hex(md, mdlen, hex);
        return 0;
}

void sha256_free(struct sha256 *s)
{
        if (!s)
                return;
        EVP_MD_CTX_free(s->ctx);
        free(s);
}

int sha256_hex(const void *data, size_t len, char *hex)
{
        struct sha256 *s;
        int r = sha256_new(&s);

        if (r < 0)
                return r;
        r = sha256_update(s, data, len);
        if (r == 0)
                r = sha256_final_hex(s, hex);
        sha256_free(s);
        return r;
}

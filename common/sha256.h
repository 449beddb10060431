/* SHA-256 digests as lowercase hex, over OpenSSL's EVP.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stddef.h>

#define SHA256_HEX_LEN 64 /* hex characters of a digest, without the NUL */

struct sha256;

/* An incremental digest: new, update any number of times, final once. */
int sha256_new(struct sha256 **ret);
int sha256_update(struct sha256 *s, const void *data, size_t len);
/* The digest of everything updated so far into hex (SHA256_HEX_LEN + 1
 * bytes, NUL-terminated); s takes no more updates after it. */
int sha256_final_hex(struct sha256 *s, char *hex);
void sha256_free(struct sha256 *s);

/* The digest of len bytes of data (NULL when len is 0) into hex. */
int sha256_hex(const void *data, size_t len, char *hex);

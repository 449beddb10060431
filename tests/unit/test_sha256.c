/* Unit tests of common/sha256.c: the FIPS 180-2 vectors one-shot and fed
 * piece by piece, a large input in odd-sized pieces against one call, and
 * a finished context refusing more. */
#include "autoconfig.h"

#include <errno.h>

#include "common/sha256.h"
#include "tests/unit/testutil.h"

#define MIB (1024 * 1024)

static const struct {
        const char *text;
        const char *hex;
} vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
};

START_TEST(test_one_shot)
{
        char hex[SHA256_HEX_LEN + 1];

        ck_assert_int_eq(sha256_hex(vectors[_i].text, strlen(vectors[_i].text), hex), 0);
        ck_assert_str_eq(hex, vectors[_i].hex);
}
END_TEST

START_TEST(test_byte_by_byte)
{
        const char *text = vectors[_i].text;
        char hex[SHA256_HEX_LEN + 1];
        struct sha256 *s;

        ck_assert_int_eq(sha256_new(&s), 0);
        for (size_t i = 0; text[i]; i++)
                ck_assert_int_eq(sha256_update(s, text + i, 1), 0);
        ck_assert_int_eq(sha256_final_hex(s, hex), 0);
        ck_assert_str_eq(hex, vectors[_i].hex);
        sha256_free(s);
}
END_TEST

START_TEST(test_empty_without_data)
{
        char hex[SHA256_HEX_LEN + 1];

        ck_assert_int_eq(sha256_hex(NULL, 0, hex), 0);
        ck_assert_str_eq(hex, vectors[0].hex);
}
END_TEST

/* A million "a": the long FIPS vector, in pieces of 1, 2, 3, ... bytes. */
START_TEST(test_million_a_in_pieces)
{
        static char a[1000];
        char hex[SHA256_HEX_LEN + 1];
        struct sha256 *s;
        size_t done = 0, piece = 1;

        memset(a, 'a', sizeof(a));
        ck_assert_int_eq(sha256_new(&s), 0);
        while (done < 1000000) {
                size_t n = piece < 1000000 - done ? piece : 1000000 - done;
                ck_assert_int_eq(sha256_update(s, a, n), 0);
                done += n;
                piece = piece % 997 + 1;
        }
        ck_assert_int_eq(sha256_final_hex(s, hex), 0);
        ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        sha256_free(s);
}
END_TEST

/* 1 MiB of varied bytes in odd-sized pieces (prime sizes, crossing every
 * 64-byte block boundary differently) hashes as the whole does at once. */
START_TEST(test_pieces_equal_one_shot)
{
        static const size_t sizes[] = {1, 3, 7, 63, 65, 127, 4093, 65537};
        unsigned char *buf = malloc(MIB);
        char whole[SHA256_HEX_LEN + 1], pieces[SHA256_HEX_LEN + 1], shorter[SHA256_HEX_LEN + 1];
        struct sha256 *s;
        uint32_t x = 2463534242u;

        ck_assert_ptr_nonnull(buf);
        for (size_t i = 0; i < MIB; i++) { /* xorshift32 */
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf[i] = (unsigned char)x;
        }
        ck_assert_int_eq(sha256_hex(buf, MIB, whole), 0);
        ck_assert_int_eq(sha256_new(&s), 0);
        for (size_t off = 0, k = 0; off < MIB; k++) {
                size_t n = sizes[k % 8] < MIB - off ? sizes[k % 8] : MIB - off;
                ck_assert_int_eq(sha256_update(s, buf + off, n), 0);
                off += n;
        }
        ck_assert_int_eq(sha256_final_hex(s, pieces), 0);
        ck_assert_str_eq(pieces, whole);
        /* and one byte less is another digest */
        ck_assert_int_eq(sha256_hex(buf, MIB - 1, shorter), 0);
        ck_assert_str_ne(shorter, whole);
        sha256_free(s);
        free(buf);
}
END_TEST

START_TEST(test_finished_refuses_more)
{
        char hex[SHA256_HEX_LEN + 1] = "";
        struct sha256 *s;

        ck_assert_int_eq(sha256_new(&s), 0);
        ck_assert_int_eq(sha256_update(s, "abc", 3), 0);
        ck_assert_int_eq(sha256_final_hex(s, hex), 0);
        ck_assert_str_eq(hex, vectors[1].hex);
        ck_assert_int_eq(sha256_update(s, "d", 1), -EINVAL);
        memset(hex, 'z', SHA256_HEX_LEN);
        ck_assert_int_eq(sha256_final_hex(s, hex), -EINVAL);
        ck_assert_int_eq(hex[0], 'z'); /* not written on failure */
        sha256_free(s);
        sha256_free(NULL);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

static Suite *sha256_suite(void)
{
        Suite *s = suite_create("sha256");
        TCase *tc = tcase_create("digest");

        tcase_add_loop_test(tc, test_one_shot, 0, N(vectors));
        tcase_add_loop_test(tc, test_byte_by_byte, 0, N(vectors));
        tcase_add_test(tc, test_empty_without_data);
        tcase_add_test(tc, test_million_a_in_pieces);
        tcase_add_test(tc, test_pieces_equal_one_shot);
        tcase_add_test(tc, test_finished_refuses_more);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(sha256_suite()); }

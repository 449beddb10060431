/* naming and urlcheck: hostile names never survive as unsafe path
 * components, and only http(s) URLs with a usable host pass. */
#include "autoconfig.h"

#include <errno.h>
#include <iconv.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/job.h"
#include "daemon/naming.h"
#include "daemon/urlcheck.h"
#include "tests/unit/testutil.h"

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

/* Independent of naming.c's own check: glibc's iconv rejects overlongs,
 * surrogates and truncated sequences. */
static bool valid_utf8(const char *s)
{
        iconv_t cd = iconv_open("UTF-8", "UTF-8");
        size_t inlen = strlen(s), outlen = inlen * 4 + 4;
        char *out = malloc(outlen), *in = (char *)s, *o = out;
        bool ok;

        ck_assert_ptr_nonnull(out);
        ck_assert(cd != (iconv_t)-1);
        ok = iconv(cd, &in, &inlen, &o, &outlen) != (size_t)-1 && inlen == 0;
        iconv_close(cd);
        free(out);
        return ok;
}

static void assert_safe(const char *input, const char *name)
{
        size_t len = strlen(name);

        ck_assert_msg(len > 0 && len <= NAME_MAX_BYTES, "%s -> %zu bytes", input, len);
        ck_assert_msg(!strchr(name, '/') && !strchr(name, '\\'), "%s -> %s", input, name);
        ck_assert_msg(name[0] != '.', "%s -> %s starts with a dot", input, name);
        ck_assert_msg(strcmp(name, ".") != 0 && strcmp(name, "..") != 0, "%s", input);
        ck_assert_msg(name[len - 1] != '.' && name[len - 1] != ' ', "%s -> '%s'", input, name);
        for (size_t i = 0; i < len; i++)
                ck_assert_msg((unsigned char)name[i] >= 0x20 && name[i] != 0x7f, "%s -> control byte at %zu",
                              input, i);
        ck_assert_msg(valid_utf8(name), "%s -> invalid UTF-8", input);
}

static char *repeat(const char *unit, size_t times, const char *suffix)
{
        size_t ul = strlen(unit), sl = strlen(suffix);
        char *s = malloc(ul * times + sl + 1);

        ck_assert_ptr_nonnull(s);
        for (size_t i = 0; i < times; i++)
                memcpy(s + i * ul, unit, ul);
        memcpy(s + ul * times, suffix, sl + 1);
        return s;
}

static bool ends_with(const char *s, const char *suffix)
{
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- naming_sanitize ---- */

static const struct {
        const char *in;
        const char *out; /* NULL: only check it is safe */
} sanitize_cases[] = {
        {"photo.jpg", "photo.jpg"},
        {"../../etc/passwd", "_.._etc_passwd"},
        {"..", "file"},
        {".", "file"},
        {"...", "file"},
        {"", "file"},
        {" . . ", "file"},
        {"   ", "file"},
        {".hidden", "hidden"},
        {"..hidden", "hidden"},
        {"a/b", "a_b"},
        {"a\\b", "a_b"},
        {"/", "_"},
        {"%2e%2e%2f", "%2e%2e%2f"},
        {"a\x01"
         "b\x7f"
         "c\td\ne\rf",
         "a_b_c_d_e_f"},
        {"\x1b[31mred", "_[31mred"},
        {"photo.jpg.", "photo.jpg"},
        {"photo ", "photo"},
        {"name. . .", "name"},
        {" lead.png", "lead.png"},
        {"a .jpg", "a .jpg"},
        {"a\xff"
         "b",
         "a_b"},
        {"\xc0\xaf"
         "x",
         "__x"},                         /* overlong '/' */
        {"\xed\xa0\x80.png", "___.png"}, /* surrogate */
        {"x\xe2\x82", "x__"},            /* truncated */
        {"\xf4\x90\x80\x80", "____"},    /* past U+10FFFF */
        {"a\xc2\x85"
         "b",
         "a_b"}, /* C1 NEL */
        {"evil\xe2\x80\xae"
         "gpj.exe",
         "evil_gpj.exe"}, /* RLO */
        {"caf\xc3\xa9.jpg", "caf\xc3\xa9.jpg"},
        {"\xe6\x97\xa5\xe6\x9c\xac.png", "\xe6\x97\xa5\xe6\x9c\xac.png"},
        {"\xf0\x9f\x98\x80.gif", "\xf0\x9f\x98\x80.gif"},
        {"a:b*c?d\"e<f>g|h", "a:b*c?d\"e<f>g|h"},
        {"CON", "CON"},
        {"nul.txt", "nul.txt"},
        {"a..b", "a..b"},
};

START_TEST(test_sanitize)
{
        char *out = NULL;

        ck_assert_int_eq(naming_sanitize(sanitize_cases[_i].in, &out), 0);
        assert_safe(sanitize_cases[_i].in, out);
        if (sanitize_cases[_i].out)
                ck_assert_msg(strcmp(out, sanitize_cases[_i].out) == 0, "'%s' -> '%s', want '%s'",
                              sanitize_cases[_i].in, out, sanitize_cases[_i].out);
        free(out);
}
END_TEST

START_TEST(test_sanitize_long_keeps_extension)
{
        char *in = repeat("a", 300, ".jpg"), *out = NULL;

        ck_assert_int_eq(naming_sanitize(in, &out), 0);
        assert_safe("300 a", out);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        ck_assert(ends_with(out, ".jpg"));
        free(out);
        free(in);
}
END_TEST

START_TEST(test_sanitize_long_multibyte)
{
        /* 2-, 3- and 4-byte characters: the cut must not split any. */
        static const char *const units[] = {"\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80"};

        for (int i = 0; i < N(units); i++) {
                for (int tail = 0; tail < 2; tail++) {
                        char *in = repeat(units[i], 200, tail ? ".png" : ""), *out = NULL;
                        ck_assert_int_eq(naming_sanitize(in, &out), 0);
                        assert_safe("multibyte", out);
                        ck_assert_uint_ge(strlen(out), NAME_MAX_BYTES - 3);
                        if (tail)
                                ck_assert(ends_with(out, ".png"));
                        free(out);
                        free(in);
                }
        }
}
END_TEST

START_TEST(test_sanitize_limits)
{
        char *exact = repeat("b", NAME_MAX_BYTES - 4, ".jpg");
        char *over = repeat("b", NAME_MAX_BYTES - 3, ".jpg");
        char *noext = repeat("c", 300, "");
        char *longext = repeat("d", 300, "");
        char *spaces = repeat(" ", 300, ".jpg");
        char *out = NULL;

        ck_assert_int_eq(naming_sanitize(exact, &out), 0);
        ck_assert_str_eq(out, exact); /* 255 bytes: untouched */
        free(out);
        ck_assert_int_eq(naming_sanitize(over, &out), 0);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        ck_assert(ends_with(out, "b.jpg"));
        free(out);
        ck_assert_int_eq(naming_sanitize(noext, &out), 0);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        free(out);
        longext[0] = 'x';
        longext[1] = '.'; /* "x." + 298 bytes: no real extension to keep */
        ck_assert_int_eq(naming_sanitize(longext, &out), 0);
        assert_safe("long extension", out);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        free(out);
        spaces[0] = 'f'; /* "f" + 299 spaces + ".jpg": the cut stem loses its blanks */
        ck_assert_int_eq(naming_sanitize(spaces, &out), 0);
        ck_assert_str_eq(out, "f.jpg");
        free(out);
        free(spaces);
        free(longext);
        free(noext);
        free(over);
        free(exact);
}
END_TEST

/* ---- naming_from_url ---- */

static const struct {
        const char *url;
        const char *out;
} url_cases[] = {
        {"http://example.com/photos/cat.jpg", "cat.jpg"},
        {"http://example.com/photos/cat.jpg?size=large&x=1#frag", "cat.jpg"},
        {"https://example.com/a/b/c/clip.mp4?token=abc/def", "clip.mp4"},
        {"http://example.com/dir/", "file"},
        {"http://example.com/", "file"},
        {"http://example.com", "file"},
        {"http://example.com/?q=x.jpg", "file"},
        {"http://example.com/caf%C3%A9.jpg", "caf\xc3\xa9.jpg"},
        {"http://example.com/%E6%97%A5%E6%9C%AC.png", "\xe6\x97\xa5\xe6\x9c\xac.png"},
        {"http://example.com/a%20b.jpg", "a b.jpg"},
        {"http://example.com/a+b.jpg", "a+b.jpg"},
        {"http://example.com/..%2f..%2fetc%2fpasswd", "_.._etc_passwd"},
        {"http://example.com/%2e%2e%2f", "_"},
        {"http://example.com/%2e%2e", "file"},
        {"http://example.com/a/../b.jpg", "b.jpg"},
        {"http://example.com/.htaccess", "htaccess"},
        {"http://example.com/%ff%fe.jpg", "__.jpg"},
        {"http://example.com/a%00b.jpg", "a_b.jpg"},
        {"http://example.com/%00", "_"},
        {"http://example.com/a%0a.jpg", "a_.jpg"},
        {"http://example.com/a%5Cb.jpg", "a_b.jpg"},
        {"http://example.com/img.JPG.", "img.JPG"},
        {"HTTP://EXAMPLE.COM/UPPER.PNG", "UPPER.PNG"},
};

START_TEST(test_from_url)
{
        char *out = NULL;

        ck_assert_int_eq(naming_from_url(url_cases[_i].url, &out), 0);
        assert_safe(url_cases[_i].url, out);
        ck_assert_msg(strcmp(out, url_cases[_i].out) == 0, "%s -> '%s', want '%s'", url_cases[_i].url, out,
                      url_cases[_i].out);
        free(out);
}
END_TEST

START_TEST(test_from_url_long_and_bad)
{
        char *seg = repeat("a", 400, ".jpg"), *url = NULL, *out = NULL;

        ck_assert_int_ge(asprintf(&url, "http://example.com/%s?x=1", seg), 0);
        ck_assert_int_eq(naming_from_url(url, &out), 0);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        ck_assert(ends_with(out, ".jpg"));
        free(out);
        free(url);
        free(seg);

        seg = repeat("%C3%A9", 200, ".webp");
        ck_assert_int_ge(asprintf(&url, "http://example.com/%s", seg), 0);
        ck_assert_int_eq(naming_from_url(url, &out), 0);
        assert_safe("encoded multibyte", out);
        ck_assert(ends_with(out, "\xc3\xa9.webp"));
        free(out);
        free(url);
        free(seg);

        out = (char *)"untouched";
        ck_assert_int_eq(naming_from_url("not a url", &out), -EINVAL);
        ck_assert_str_eq(out, "untouched");
}
END_TEST

/* ---- naming_from_content_disposition ---- */

static const struct {
        const char *value;
        const char *out; /* NULL: -ENOENT */
} cd_cases[] = {
        {"attachment; filename=\"cat.jpg\"", "cat.jpg"},
        {"attachment; filename=cat.jpg", "cat.jpg"},
        {"inline; filename=cat.jpg; size=100", "cat.jpg"},
        {"inline;filename=cat.jpg;size=100", "cat.jpg"},
        {"attachment; filename = \"spaced.jpg\" ", "spaced.jpg"},
        {"attachment; FILENAME=\"upper.jpg\"", "upper.jpg"},
        {"attachment; filename=\"a \\\"quoted\\\" name.png\"", "a \"quoted\" name.png"},
        {"attachment; filename=\"semi;colon.jpg\"; size=1", "semi;colon.jpg"},
        {"attachment; filename=two words.jpg", "two words.jpg"},
        {"attachment; filename=\"unterminated.jpg", "unterminated.jpg"},
        {"attachment; filename*=UTF-8''caf%C3%A9.jpg", "caf\xc3\xa9.jpg"},
        {"attachment; filename*=utf-8'en'x.png; filename=y.png", "x.png"},
        {"attachment; filename=\"fallback.jpg\"; filename*=UTF-8''%E2%82%AC%20rates.jpg",
         "\xe2\x82\xac rates.jpg"},
        {"attachment; filename*=iso-8859-1''caf%E9.jpg", "caf\xc3\xa9.jpg"},
        {"attachment; filename*=KOI8-R''%C1.jpg; filename=\"plain.jpg\"", "plain.jpg"},
        {"attachment; filename*=UTF-8''; filename=\"plain.jpg\"", "plain.jpg"},
        {"attachment; filename*=garbage; filename=\"plain.jpg\"", "plain.jpg"},
        {"attachment; filename=\"a%20b.jpg\"", "a%20b.jpg"},
        {"attachment; filename=\"../../etc/passwd\"", "passwd"},
        {"attachment; filename=C:\\Users\\x\\evil.exe", "evil.exe"},
        {"attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd", "passwd"},
        {"attachment; filename*=UTF-8''a%00b.jpg", "a_b.jpg"},
        {"attachment; filename*=UTF-8''%FF.jpg", "_.jpg"},
        {"attachment; filename=\".bashrc\"", "bashrc"},
        {"attachment; filename=\"x\x01y.jpg\"", "x_y.jpg"},
        {"attachment; filename=\"..\"", NULL},
        {"attachment; filename=\"dir/\"", NULL},
        {"attachment; filename=\" . \"", NULL},
        {"attachment; filename=\"\"", NULL},
        {"attachment; filename=", NULL},
        {"attachment; filename", NULL},
        {"attachment", NULL},
        {"inline; size=5", NULL},
        {"", NULL},
        {"attachment; name=\"filename=x.jpg\"", NULL},
};

START_TEST(test_content_disposition)
{
        char *out = NULL;
        int r = naming_from_content_disposition(cd_cases[_i].value, &out);

        if (!cd_cases[_i].out) {
                ck_assert_msg(r == -ENOENT, "%s -> %d", cd_cases[_i].value, r);
                ck_assert_ptr_null(out);
                return;
        }
        ck_assert_msg(r == 0, "%s -> %d", cd_cases[_i].value, r);
        assert_safe(cd_cases[_i].value, out);
        ck_assert_msg(strcmp(out, cd_cases[_i].out) == 0, "%s -> '%s', want '%s'", cd_cases[_i].value, out,
                      cd_cases[_i].out);
        free(out);
}
END_TEST

/* ---- naming_with_extension ---- */

static const struct {
        const char *name;
        const char *ext;
        const char *out;
} ext_cases[] = {
        {"photo", "jpg", "photo.jpg"},
        {"photo.jpg", "jpg", "photo.jpg"},
        {"photo.JPG", "jpg", "photo.JPG"},
        {"photo.jpeg", "jpg", "photo.jpeg"},
        {"photo.JPEG", "jpg", "photo.JPEG"},
        {"photo.jpe", "jpg", "photo.jpe"},
        {"photo.jpg", "JPG", "photo.jpg"},
        {"x.html", "png", "x.html.png"},
        {"x.htm", "html", "x.htm"},
        {"x.HTML", "html", "x.HTML"},
        {"scan.tif", "tiff", "scan.tif"},
        {"scan.TIFF", "tiff", "scan.TIFF"},
        {"clip.mpeg", "mpg", "clip.mpeg"},
        {"clip.mpg", "mpg", "clip.mpg"},
        {"clip.mp4", "mov", "clip.mp4.mov"},
        {"clip.ogv", "ogg", "clip.ogv"},
        {"archive.tar.gz", "gz", "archive.tar.gz"},
        {"Mr. Smith", "jpg", "Mr. Smith.jpg"},
        {"file", "svg", "file.svg"},
        {"photo.jpg", NULL, "photo.jpg"},
        {"photo", NULL, "photo"},
        {"../x", "png", "_x.png"},
        {"", "png", "file.png"},
};

START_TEST(test_with_extension)
{
        char *out = NULL;

        ck_assert_int_eq(naming_with_extension(ext_cases[_i].name, ext_cases[_i].ext, &out), 0);
        assert_safe(ext_cases[_i].name, out);
        ck_assert_msg(strcmp(out, ext_cases[_i].out) == 0, "%s + %s -> '%s', want '%s'", ext_cases[_i].name,
                      ext_cases[_i].ext, out, ext_cases[_i].out);
        free(out);
}
END_TEST

START_TEST(test_with_extension_limits)
{
        char *full = repeat("a", NAME_MAX_BYTES, ""), *out = NULL;
        char *withext = repeat("\xe6\x97\xa5", 83, ".jpg"); /* 249 + 4 bytes */

        ck_assert_int_eq(naming_with_extension(full, "png", &out), 0);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        ck_assert(ends_with(out, "a.png"));
        free(out);
        ck_assert_int_eq(naming_with_extension(withext, "webm", &out), 0);
        assert_safe("multibyte + ext", out);
        ck_assert(ends_with(out, ".webm"));
        free(out);

        out = (char *)"untouched";
        ck_assert_int_eq(naming_with_extension("x", "../png", &out), -EINVAL);
        ck_assert_int_eq(naming_with_extension("x", "", &out), -EINVAL);
        ck_assert_int_eq(naming_with_extension("x", "a.b", &out), -EINVAL);
        ck_assert_int_eq(naming_with_extension("x", "averyveryverylongextension", &out), -EINVAL);
        ck_assert_str_eq(out, "untouched");
        free(withext);
        free(full);
}
END_TEST

/* ---- naming_variant ---- */

static const struct {
        const char *name;
        unsigned n;
        const char *out;
} variant_cases[] = {
        {"a.jpg", 1, "a-1.jpg"},
        {"a.jpg", 12, "a-12.jpg"},
        {"a.jpg", 0, "a.jpg"},
        {"a", 2, "a-2"},
        {"README", 1, "README-1"},
        {"archive.tar.gz", 1, "archive.tar-1.gz"},
        {".bashrc", 1, "bashrc-1"},
        {"Mr. Smith", 1, "Mr. Smith-1"},
        {"caf\xc3\xa9.png", 3, "caf\xc3\xa9-3.png"},
        {"x.jpg", UINT_MAX, "x-4294967295.jpg"},
        {"..", 1, "file-1"},
};

START_TEST(test_variant)
{
        char *out = NULL;

        ck_assert_int_eq(naming_variant(variant_cases[_i].name, variant_cases[_i].n, &out), 0);
        assert_safe(variant_cases[_i].name, out);
        ck_assert_msg(strcmp(out, variant_cases[_i].out) == 0, "%s,%u -> '%s', want '%s'",
                      variant_cases[_i].name, variant_cases[_i].n, out, variant_cases[_i].out);
        free(out);
}
END_TEST

START_TEST(test_variant_long)
{
        char *in = repeat("\xf0\x9f\x98\x80", 62, ".jpg"); /* 248 + 4 bytes */
        char *plain = repeat("z", NAME_MAX_BYTES, ""), *out = NULL;

        ck_assert_int_eq(naming_variant(in, UINT_MAX, &out), 0);
        assert_safe("long variant", out);
        ck_assert(ends_with(out, "-4294967295.jpg"));
        free(out);
        ck_assert_int_eq(naming_variant(plain, 7, &out), 0);
        ck_assert_uint_eq(strlen(out), NAME_MAX_BYTES);
        ck_assert(ends_with(out, "z-7"));
        free(out);
        free(plain);
        free(in);
}
END_TEST

/* ---- urlcheck_validate ---- */

static const struct {
        const char *url;
        int r;
        const char *source; /* checked when r == 0 */
} check_cases[] = {
        {"http://example.com/a.jpg", 0, "example.com"},
        {"https://example.com/", 0, "example.com"},
        {"https://example.com", 0, "example.com"},
        {"http://user:pw@example.com/x", 0, "example.com"},
        {"http://example.com:80/", 0, "example.com"},
        {"https://example.com:443/", 0, "example.com"},
        {"http://example.com:8080/", 0, "example.com:8080"},
        {"https://example.com:8443/", 0, "example.com:8443"},
        {"https://example.com:80/", 0, "example.com:80"},
        {"http://example.com:443/", 0, "example.com:443"},
        {"HTTP://EXAMPLE.COM/Path.JPG", 0, "example.com"},
        {"http://Img.Example.COM:8080/", 0, "img.example.com:8080"},
        {"http://[::1]:8080/x", 0, "[::1]:8080"},
        {"http://[2001:DB8::1]/", 0, "[2001:db8::1]"},
        {"https://[2001:db8::1]:443/", 0, "[2001:db8::1]"},
        {"http://192.168.0.1:81/", 0, "192.168.0.1:81"},
        {"http://example.com./", 0, "example.com."},
        {"ftp://example.com/f", -EPROTONOSUPPORT, NULL},
        {"file:///etc/passwd", -EPROTONOSUPPORT, NULL},
        {"javascript:alert(1)", -EPROTONOSUPPORT, NULL},
        {"data:text/plain,hi", -EPROTONOSUPPORT, NULL},
        {"gopher://example.com/", -EPROTONOSUPPORT, NULL},
        {"ws://example.com/", -EPROTONOSUPPORT, NULL},
        {"http://", -EINVAL, NULL},
        {"http://:80/", -EINVAL, NULL},
        {"https:///", -EINVAL, NULL},
        {"", -EINVAL, NULL},
        {"example.com/x.jpg", -EINVAL, NULL},
        {"/relative/x.jpg", -EINVAL, NULL},
        {"//example.com/x", -EINVAL, NULL},
        {"http://example.com/a b", -EINVAL, NULL},
        {" http://example.com/", -EINVAL, NULL},
        {"http://exa mple.com/", -EINVAL, NULL},
        {"http://example.com/a\x01"
         "b",
         -EINVAL, NULL},
        {"http://example.com/?q=\x7f", -EINVAL, NULL},
        {"http://example.com/\r\nHost: evil", -EINVAL, NULL},
        {"http://example.com/\t", -EINVAL, NULL},
        {"http://../x", -EINVAL, NULL},
        {"http://./x", -EINVAL, NULL},
        {"http://.example.com/", -EINVAL, NULL},
        {"http://a..b/", -EINVAL, NULL},
        {"http://example.com:0/", -EINVAL, NULL},
        {"http://example.com:99999/", -EINVAL, NULL},
        {"http://example.com:abc/", -EINVAL, NULL},
        /* an encoded separator in the host never reaches the <source> dir */
        {"http://a%2fb/x", -EINVAL, NULL},
        {"http://a%5cb/x", -EINVAL, NULL},
        {"http://%2e%2e/x", -EINVAL, NULL},
};

START_TEST(test_urlcheck)
{
        char *src = (char *)"untouched", *norm = (char *)"untouched";
        int r = urlcheck_validate(check_cases[_i].url, &src, &norm);

        ck_assert_msg(r == check_cases[_i].r, "%s -> %d, want %d", check_cases[_i].url, r,
                      check_cases[_i].r);
        if (r < 0) {
                ck_assert_str_eq(src, "untouched");
                ck_assert_str_eq(norm, "untouched");
                return;
        }
        ck_assert_msg(strcmp(src, check_cases[_i].source) == 0, "%s -> source %s, want %s",
                      check_cases[_i].url, src, check_cases[_i].source);
        ck_assert(strncmp(norm, "http", 4) == 0);
        free(src);
        free(norm);
}
END_TEST

START_TEST(test_urlcheck_outputs)
{
        char *src = NULL, *norm = NULL;

        ck_assert_int_eq(urlcheck_validate("http://example.com/a/../b.jpg?x=1#f", &src, &norm), 0);
        ck_assert_str_eq(src, "example.com");
        ck_assert_str_eq(norm, "http://example.com/b.jpg?x=1#f");
        free(src);
        free(norm);
        ck_assert_int_eq(urlcheck_validate("https://example.com/", NULL, NULL), 0);
        ck_assert_int_eq(urlcheck_validate("ftp://example.com/", NULL, NULL), -EPROTONOSUPPORT);
        ck_assert_int_eq(urlcheck_validate(NULL, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_urlcheck_length)
{
        const char *prefix = "http://example.com/";
        size_t plen = strlen(prefix);
        char *at = repeat("a", JOB_URL_MAX - plen, ""), *url = NULL;

        ck_assert_int_ge(asprintf(&url, "%s%s", prefix, at), 0);
        ck_assert_uint_eq(strlen(url), JOB_URL_MAX);
        ck_assert_int_eq(urlcheck_validate(url, NULL, NULL), 0);
        free(url);
        ck_assert_int_ge(asprintf(&url, "%s%sa", prefix, at), 0);
        ck_assert_int_eq(urlcheck_validate(url, NULL, NULL), -E2BIG);
        free(url);
        free(at);

        /* A host too long to be a <source> directory name. */
        at = repeat("h", SOURCE_NAME_MAX + 1, "");
        ck_assert_int_ge(asprintf(&url, "http://%s/", at), 0);
        ck_assert_int_eq(urlcheck_validate(url, NULL, NULL), -EINVAL);
        free(url);
        free(at);
        at = repeat("h", SOURCE_NAME_MAX, "");
        ck_assert_int_ge(asprintf(&url, "http://%s/", at), 0);
        ck_assert_int_eq(urlcheck_validate(url, NULL, NULL), 0);
        free(url);
        free(at);
}
END_TEST

static Suite *naming_suite(void)
{
        Suite *s = suite_create("naming");
        TCase *tc = tcase_create("sanitize");

        tcase_add_loop_test(tc, test_sanitize, 0, N(sanitize_cases));
        tcase_add_test(tc, test_sanitize_long_keeps_extension);
        tcase_add_test(tc, test_sanitize_long_multibyte);
        tcase_add_test(tc, test_sanitize_limits);
        suite_add_tcase(s, tc);

        tc = tcase_create("sources");
        tcase_add_loop_test(tc, test_from_url, 0, N(url_cases));
        tcase_add_test(tc, test_from_url_long_and_bad);
        tcase_add_loop_test(tc, test_content_disposition, 0, N(cd_cases));
        suite_add_tcase(s, tc);

        tc = tcase_create("extension");
        tcase_add_loop_test(tc, test_with_extension, 0, N(ext_cases));
        tcase_add_test(tc, test_with_extension_limits);
        tcase_add_loop_test(tc, test_variant, 0, N(variant_cases));
        tcase_add_test(tc, test_variant_long);
        suite_add_tcase(s, tc);

        tc = tcase_create("urlcheck");
        tcase_add_loop_test(tc, test_urlcheck, 0, N(check_cases));
        tcase_add_test(tc, test_urlcheck_outputs);
        tcase_add_test(tc, test_urlcheck_length);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(naming_suite()); }

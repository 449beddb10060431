/* content: libmagic sniffing on real magic bytes, ACCEPT_CONTENT matching
 * and the extensions content_extension() gives. */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/content.h"
#include "tests/unit/testutil.h"

static struct sniffer *sn;

static void setup(void) { ck_assert_int_eq(sniffer_new(&sn), 0); }

static void teardown(void)
{
        sniffer_free(sn);
        sn = NULL;
}

#define BYTES(s) s, sizeof(s) - 1

static const struct {
        const char *what;
        const char *buf;
        size_t len;
        const char *mime;
} samples[] = {
        {"jpeg", BYTES("\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
         "image/jpeg"},
        {"png",
         BYTES("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"
               "\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"),
         "image/png"},
        {"gif",
         BYTES("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01"
               "\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02"
               "D\x01\x00;"),
         "image/gif"},
        {"webp",
         BYTES("RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10"
               "\x11\x11\x88\x88\xfe\x07\x00"),
         "image/webp"},
        {"bmp",
         BYTES("BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00\x01\x00"
               "\x00\x00\x01\x00\x00\x00\x01\x00\x18\x00\x00\x00\x00\x00\x04\x00\x00\x00"
               "\x13\x0b\x00\x00\x13\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\x00"
               "\x00\x00"),
         "image/bmp"},
        {"tiff le", BYTES("II*\x00\x08\x00\x00\x00\x00\x00\x00\x00"), "image/tiff"},
        {"tiff be", BYTES("MM\x00*\x00\x00\x00\x08\x00\x00"), "image/tiff"},
        {"avif",
         BYTES("\x00\x00\x00\x1c"
               "ftypavif\x00\x00\x00\x00"
               "avifmif1miaf\x00\x00\x00\x00"),
         "image/avif"},
        {"heic",
         BYTES("\x00\x00\x00\x18"
               "ftypheic\x00\x00\x00\x00"
               "mif1heic\x00\x00\x00\x00"),
         "image/heic"},
        {"svg",
         BYTES("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1\" height=\"1\">"
               "<rect width=\"1\" height=\"1\"/></svg>\n"),
         "image/svg+xml"},
        {"svg with xml declaration",
         BYTES("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>\n"),
         "image/svg+xml"},
        /* libmagic says text/plain for these two; svg_root() fixes it. */
        {"svg after a comment",
         BYTES("<!-- Generator: Adobe Illustrator -->\n"
               "<svg version=\"1.1\" xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>\n"),
         "image/svg+xml"},
        {"svg with BOM, PI, comment, doctype subset",
         BYTES("\xef\xbb\xbf  <?xml version=\"1.0\"?>\n<!-- a > b -->\n"
               "<!DOCTYPE svg [ <!ENTITY e \"<x>\"> ]>\n<svg\n xmlns=\"http://www.w3.org/2000/svg\"/>"),
         "image/svg+xml"},
        {"mp4",
         BYTES("\x00\x00\x00\x20"
               "ftypisom\x00\x00\x02\x00"
               "isomiso2avc1mp41"
               "\x00\x00\x00\x08"
               "free"),
         "video/mp4"},
        {"mov",
         BYTES("\x00\x00\x00\x14"
               "ftypqt  \x00\x00\x02\x00qt  \x00\x00\x00\x08wide"),
         "video/quicktime"},
        {"webm",
         BYTES("\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04"
               "\x42\xf3\x81\x08\x42\x82\x84webm\x42\x87\x81\x04\x42\x85\x81\x02"),
         "video/webm"},
        {"mkv",
         BYTES("\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04"
               "\x42\xf3\x81\x08\x42\x82\x88matroska\x42\x87\x81\x04\x42\x85\x81\x02"),
         "video/x-matroska"},
        {"avi",
         BYTES("RIFF\x24\x00\x00\x00"
               "AVI LIST\x18\x00\x00\x00hdrlavih\x38\x00\x00\x00"
               "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
         "video/x-msvideo"},
        {"mpeg-ps",
         BYTES("\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01\x01\x89\xc3\xf8\x00\x00"
               "\x01\xbb"),
         "video/mpeg"},
        {"flac",
         BYTES("fLaC\x80\x00\x00\x22\x10\x00\x10\x00\x00\x00\x00\x00\x00\x00\x0a\xc4"
               "\x42\xf0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
               "\x00\x00\x00\x00\x00"),
         "audio/flac"},
        {"mp3 (id3)", BYTES("ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64\x00\x00\x00\x00"),
         "audio/mpeg"},
        {"pdf", BYTES("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
         "application/pdf"},
        {"html",
         BYTES("<!DOCTYPE html>\n<html><head><title>x</title></head>"
               "<body><p>hello</p></body></html>\n"),
         "text/html"},
        {"xml (not svg)",
         BYTES("<?xml version=\"1.0\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">"
               "</feed>\n"),
         "text/xml"},
        {"plain text", BYTES("hello world, this is plain text\nand a second line\n"), "text/plain"},
        {"text mentioning svg", BYTES("the <svg> element draws vector images\n"), "text/plain"},
        {"json", BYTES("{\"a\": [1, 2, 3], \"b\": \"x\"}\n"), "application/json"},
        {"empty", "", 0, "application/x-empty"},
};

START_TEST(test_sniff)
{
        char *mime = NULL;

        ck_assert_int_eq(sniffer_mime(sn, samples[_i].buf, samples[_i].len, &mime), 0);
        ck_assert_msg(strcmp(mime, samples[_i].mime) == 0, "%s: got %s, want %s", samples[_i].what, mime,
                      samples[_i].mime);
        free(mime);
}
END_TEST

START_TEST(test_sniff_only_first_bytes)
{
        size_t len = 3 * CONTENT_SNIFF_BYTES;
        unsigned char *buf = malloc(len);
        char *mime = NULL;

        ck_assert_ptr_nonnull(buf);
        /* Text up to the limit, then binary garbage libmagic never sees. */
        memset(buf, 'a', len);
        for (size_t i = 80; i < CONTENT_SNIFF_BYTES; i += 81)
                buf[i] = '\n';
        for (size_t i = CONTENT_SNIFF_BYTES; i < len; i++)
                buf[i] = (unsigned char)(i * 7);
        ck_assert_int_eq(sniffer_mime(sn, buf, len, &mime), 0);
        ck_assert_str_eq(mime, "text/plain");
        free(mime);
        free(buf);
}
END_TEST

START_TEST(test_sniff_binary_junk)
{
        unsigned char buf[CONTENT_SNIFF_BYTES];
        char *mime = NULL;

        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (unsigned char)(i * 31 + 17);
        buf[0] = 0x01;
        ck_assert_int_eq(sniffer_mime(sn, buf, sizeof(buf), &mime), 0);
        ck_assert_str_eq(mime, "application/octet-stream");
        ck_assert(!content_accepted("image,video", mime));
        ck_assert_ptr_null(content_extension(mime));
        free(mime);
}
END_TEST

/* Sniffers share nothing: freeing one (or NULL) leaves another working. */
START_TEST(test_sniffers_independent)
{
        static const char png[] = "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"
                                  "\x08\x06\x00\x00\x00\x1f\x15\xc4\x89";
        struct sniffer *a = NULL, *b = NULL;
        char *mime = NULL;

        sniffer_free(NULL);
        ck_assert_int_eq(sniffer_new(&a), 0);
        ck_assert_int_eq(sniffer_new(&b), 0);
        ck_assert_ptr_ne(a, b);
        sniffer_free(a);
        ck_assert_int_eq(sniffer_mime(b, png, sizeof(png) - 1, &mime), 0);
        ck_assert_str_eq(mime, "image/png");
        free(mime);
        mime = NULL;
        ck_assert_int_eq(sniffer_mime(sn, png, sizeof(png) - 1, &mime), 0);
        ck_assert_str_eq(mime, "image/png");
        free(mime);
        sniffer_free(b);
}
END_TEST

static const struct {
        const char *accept;
        const char *mime;
        bool ok;
} accept_cases[] = {
        {"any", "application/octet-stream", true},
        {"any", "text/html", true},
        {"any", NULL, true},
        {"image,any", "x/y", true},
        {"ANY", "video/mp4", true},
        {"image", "image/jpeg", true},
        /* scriptable types pass only when named (or with "any") */
        {"image", "image/svg+xml", false},
        {"image/*", "image/svg+xml", false},
        {"image,image/svg+xml", "image/svg+xml", true},
        {"image/svg+xml", "IMAGE/SVG+XML", true},
        {"any", "image/svg+xml", true},
        {"image", "image/svg", false},
        {"text", "text/html", false},
        {"text/*", "text/html; charset=utf-8", false},
        {"text/html", "text/html; charset=utf-8", true},
        {"text", "text/xml", false},
        {"application", "application/xml", false},
        {"application", "application/xhtml+xml", false},
        {"application", "application/rss+xml", false},
        {"application", "application/javascript", false},
        {"text", "text/javascript", false},
        {"text", "text/plain", true},
        {"application", "application/x-xml-like", true},
        {"text", "text/xmlish", true},
        {"image", "video/mp4", false},
        {"image", "text/plain", false},
        {"image", "application/octet-stream", false},
        {"image", "imagex/jpeg", false},
        {"image", "", false},
        {"image", NULL, false},
        {"image,video", "image/png", true},
        {"image,video", "video/webm", true},
        {"image, video", "video/x-matroska", true},
        {" image , video ", "video/quicktime", true},
        {"image,video", "audio/mpeg", false},
        {"image,video", "application/pdf", false},
        {"image,video", "text/html", false},
        {"image,video", "application/x-empty", false},
        {"application/pdf", "application/pdf", true},
        {"application/pdf", "application/json", false},
        {"application/pdf", "image/png", false},
        {"application", "application/json", true},
        {"image,application/pdf", "application/pdf", true},
        {"image,application/pdf", "image/gif", true},
        {"image,application/pdf", "application/zip", false},
        {"IMAGE", "image/png", true},
        {"image", "IMAGE/PNG", true},
        {"Application/PDF", "application/pdf", true},
        {"video", "video/MP2T", true},
        {"image/*", "image/webp", true},
        {"image/*", "video/webm", false},
        {"image", "image/png; charset=binary", true},
        {"application/pdf", "application/pdf ; x=y", true},
        {"", "image/png", false},
        {NULL, "image/png", false},
        {"text", "text/plain", true},
        {"audio", "audio/flac", true},
        {"video", "image/jpeg", false},
};

START_TEST(test_accepted)
{
        ck_assert_msg(content_accepted(accept_cases[_i].accept, accept_cases[_i].mime) ==
                              accept_cases[_i].ok,
                      "accept=%s mime=%s want %d", accept_cases[_i].accept, accept_cases[_i].mime,
                      accept_cases[_i].ok);
}
END_TEST

START_TEST(test_sniffed_svg_is_image)
{
        static const char svg[] = "<!-- made by hand -->\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
        char *mime = NULL;

        ck_assert_int_eq(sniffer_mime(sn, svg, sizeof(svg) - 1, &mime), 0);
        ck_assert_str_eq(mime, "image/svg+xml");
        ck_assert(content_accepted("image,image/svg+xml", mime));
        ck_assert(!content_accepted("video,text", mime));
        ck_assert_str_eq(content_extension(mime), "svg");
        free(mime);
}
END_TEST

/* What a browser would run scripts from is no "image": an SVG with a
 * <script>, in each form libmagic or the prolog check names it, and an
 * HTML page, need ACCEPT_CONTENT to name their type. */
START_TEST(test_scriptable_needs_naming)
{
        static const char *const bodies[] = {
                "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
                ("<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\">"
                 "<script>alert(1)</script></svg>"),
                "<!-- x -->\n<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
                "<!DOCTYPE html>\n<html><body><script>alert(1)</script></body></html>",
                "<?xml version=\"1.0\"?>\n<note><script>alert(1)</script></note>",
        };

        for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
                char *mime = NULL;
                ck_assert_int_eq(sniffer_mime(sn, bodies[i], strlen(bodies[i]), &mime), 0);
                ck_assert_msg(!content_accepted("image,video", mime), "body %zu (%s) accepted", i, mime);
                ck_assert_msg(!content_accepted("image,video,text,application", mime),
                              "body %zu (%s) accepted by the classes", i, mime);
                ck_assert_msg(content_accepted("any", mime), "body %zu (%s)", i, mime);
                char named[160];
                snprintf(named, sizeof(named), "image,%s", mime);
                ck_assert_msg(content_accepted(named, mime), "body %zu (%s) named", i, mime);
                free(mime);
        }
}
END_TEST

/* The extensions content.h promises, independent of the table's order
 * and of how many aliases it lists. */
START_TEST(test_extension_known)
{
        ck_assert_str_eq(content_extension("image/jpeg"), "jpg");
        ck_assert_str_eq(content_extension("image/png"), "png");
        ck_assert_str_eq(content_extension("image/svg+xml"), "svg");
        ck_assert_str_eq(content_extension("video/quicktime"), "mov");
        ck_assert_str_eq(content_extension("video/x-matroska"), "mkv");
        ck_assert_str_eq(content_extension("application/pdf"), "pdf");
}
END_TEST

/* Only the essence counts: case and parameters do not change the answer. */
START_TEST(test_extension_essence)
{
        ck_assert_str_eq(content_extension("IMAGE/JPEG"), "jpg");
        ck_assert_str_eq(content_extension("Video/MP4"), "mp4");
        ck_assert_str_eq(content_extension("image/png; charset=binary"), "png");
        ck_assert_str_eq(content_extension("application/pdf ; x=y"), "pdf");
}
END_TEST

/* No guess for what is not a known type. */
START_TEST(test_extension_unknown)
{
        ck_assert_ptr_null(content_extension("application/octet-stream"));
        ck_assert_ptr_null(content_extension("application/x-empty"));
        ck_assert_ptr_null(content_extension("image/x-unknown"));
        ck_assert_ptr_null(content_extension("image/jpegx"));
        ck_assert_ptr_null(content_extension("jpeg"));
        ck_assert_ptr_null(content_extension(""));
        ck_assert_ptr_null(content_extension(NULL));
}
END_TEST

/* An extension goes after a dot in a file name: 1..5 of [a-z0-9]. */
static void assert_safe_extension(const char *what, const char *ext)
{
        size_t n = strlen(ext);

        ck_assert_msg(n >= 1 && n <= 5 && strspn(ext, "abcdefghijklmnopqrstuvwxyz0123456789") == n,
                      "%s: extension \"%s\"", what, ext);
}

START_TEST(test_sniffed_types_have_extensions)
{
        char *mime = NULL;

        ck_assert_int_eq(sniffer_mime(sn, samples[_i].buf, samples[_i].len, &mime), 0);
        if (strcmp(mime, "application/x-empty") != 0) {
                const char *ext = content_extension(mime);
                ck_assert_msg(ext != NULL, "%s: no extension for %s", samples[_i].what, mime);
                assert_safe_extension(samples[_i].what, ext);
        }
        free(mime);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

static Suite *content_suite(void)
{
        Suite *s = suite_create("content");
        TCase *tc = tcase_create("sniff");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_loop_test(tc, test_sniff, 0, N(samples));
        tcase_add_test(tc, test_sniff_only_first_bytes);
        tcase_add_test(tc, test_sniff_binary_junk);
        tcase_add_test(tc, test_sniffers_independent);
        tcase_add_test(tc, test_sniffed_svg_is_image);
        tcase_add_test(tc, test_scriptable_needs_naming);
        tcase_add_loop_test(tc, test_sniffed_types_have_extensions, 0, N(samples));
        suite_add_tcase(s, tc);

        tc = tcase_create("accept");
        tcase_add_loop_test(tc, test_accepted, 0, N(accept_cases));
        suite_add_tcase(s, tc);

        tc = tcase_create("extension");
        tcase_add_test(tc, test_extension_known);
        tcase_add_test(tc, test_extension_essence);
        tcase_add_test(tc, test_extension_unknown);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) { return testutil_run(content_suite()); }

/* Content sniffing: what a body's first bytes show, via libmagic.
 * Not thread-safe per handle: each thread that sniffs owns a struct sniffer.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define CONTENT_SNIFF_BYTES 4096 /* bytes collected before deciding */

struct sniffer;

int sniffer_new(struct sniffer **ret);
void sniffer_free(struct sniffer *s);
/* MIME type of buf ("image/jpeg"); *ret is malloc'd. */
int sniffer_mime(struct sniffer *s, const void *buf, size_t len, char **ret);

/* Does mime satisfy ACCEPT_CONTENT? accept is a comma-separated list of
 * "any", top-level types ("image", "video", "audio", "text", "application",
 * also written with a wildcard subtype) or full types ("application/pdf").
 * A scriptable type (SVG, HTML, XHTML, XML, JavaScript) passes only when
 * named in full, or with "any". */
bool content_accepted(const char *accept, const char *mime);
/* A file extension (without dot) for a MIME type, or NULL: "jpg" for
 * image/jpeg, "png", "gif", "webp", "avif", "heic", "bmp", "tiff", "svg",
 * "mp4", "mov", "webm", "mkv", "avi", ... */
const char *content_extension(const char *mime);

/* RFC 6901 JSON Pointers: "" is the whole document, "/a/0/~1b" walks
 * object members and array indices ("~0" is '~', "~1" is '/'). */
#pragma once
#include <jansson.h>
#include <stdbool.h>

#define JSONPTR_MAX 1024 /* bytes of a pointer */

/* Is pointer a syntactically valid pointer of at most JSONPTR_MAX bytes? */
bool jsonptr_valid(const char *pointer);
/* Resolve pointer in root (borrowed reference; NULL when absent or invalid).
 * Array tokens are decimal indices without leading zeros; "-" never matches. */
json_t *jsonptr_get(json_t *root, const char *pointer);

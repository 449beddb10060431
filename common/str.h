/* Small string helpers. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* strdup that accepts NULL (and returns NULL for it). */
char *str_dup(const char *s);
bool str_startswith(const char *s, const char *prefix);
/* Is item one of the comma-separated entries of list (spaces around
 * entries ignored, case-insensitive)? */
bool str_list_contains(const char *list, const char *item);
/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void str_hex(const unsigned char *in, size_t len, char *out);

/* strmap: a hash map from a string key to a pointer.
 *
 * The map keeps the key pointer, not a copy: its memory belongs to the
 * caller (typically a field of the value) and must stay unchanged while
 * the entry is in the map. Values are never NULL (NULL means absent).
 * Lookups are O(1) on average whatever the keys (a keyed hash); the map
 * grows as needed and never shrinks.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

struct strmap;

/* NULL: out of memory. */
struct strmap *strmap_new(void);
/* Frees the map, not the keys or values. */
void strmap_free(struct strmap *m);
/* The value of key, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);
/* Adds key, or replaces its value (and key pointer) when present;
 * *ret_old (ret_old may be NULL) is the value replaced, or NULL.
 * -EINVAL: key or value NULL; -ENOMEM: the map is unchanged. */
int strmap_put(struct strmap *m, const char *key, void *value, void **ret_old);
/* Removes key; returns its value, or NULL when absent. */
void *strmap_delete(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);
/* Iteration: start with *pos = 0; each true return gives one entry, in
 * no particular order. Deleting entries (the current one or others)
 * during the iteration is allowed; adding is not. */
bool strmap_next(const struct strmap *m, size_t *pos, const char **ret_key, void **ret_value);
/* Slots a lookup of key examines (for tests of the O(1) behaviour). */
size_t strmap_probe_len(const struct strmap *m, const char *key);

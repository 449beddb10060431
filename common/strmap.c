/* strmap: open addressing with linear probing over one array of slots.
 *
 * Why this shape: one allocation for the whole table (no node per entry),
 * and a scan of neighbouring slots is cache-friendly. Each slot keeps the
 * key's 64-bit hash, so a probe compares strings only when the hashes
 * match, and growing never hashes a key again.
 *
 * Invariants:
 * - cap is 0 (nothing allocated yet) or a power of two >= STRMAP_MIN_CAP;
 * - a slot is empty (key NULL), a tombstone (key == tombstone) or live;
 *   used = live + tombstones, and used <= cap * 3/4, so every probe
 *   sequence meets an empty slot;
 * - deleting leaves a tombstone (an emptied slot would cut the probe
 *   sequence of keys placed after it), except when the next slot is empty:
 *   then no sequence runs through it and it becomes empty. Tombstones keep
 *   every other slot where it is, which is what lets an iteration delete;
 * - when a put would pass 3/4, the live entries move to a new array at
 *   most half full (the same size when tombstones made most of the load).
 *
 * The hash is SipHash-1-3 with a random key per map: the keys are host
 * names that users choose, and a fixed hash would let them pick names
 * that all collide, making every lookup a scan. */
#include "autoconfig.h"

#include "common/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define STRMAP_MIN_CAP 16 /* slots of the first array */

struct strmap_slot {
        const char *key; /* NULL: empty; tombstone: deleted; else the caller's key */
        void *value;
        uint64_t hash;
};

struct strmap {
        struct strmap_slot *slots;
        size_t cap;      /* slots, a power of two, or 0 */
        size_t count;    /* live entries */
        size_t used;     /* live entries and tombstones */
        uint64_t k0, k1; /* SipHash key */
};

static const char tombstone[1];

/* ---- SipHash-1-3 ---------------------------------------------------------- */

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

static inline void sipround(uint64_t v[4])
{
        v[0] += v[1];
        v[1] = rotl(v[1], 13) ^ v[0];
        v[0] = rotl(v[0], 32);
        v[2] += v[3];
        v[3] = rotl(v[3], 16) ^ v[2];
        v[0] += v[3];
        v[3] = rotl(v[3], 21) ^ v[0];
        v[2] += v[1];
        v[1] = rotl(v[1], 17) ^ v[2];
        v[2] = rotl(v[2], 32);
}

static inline uint64_t load_le(const unsigned char *p, size_t n)
{
        uint64_t m = 0;
        for (size_t i = 0; i < n; i++)
                m |= (uint64_t)p[i] << (8 * i);
        return m;
}

static uint64_t siphash13(uint64_t k0, uint64_t k1, const char *s)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t len = strlen(s), full = len & ~(size_t)7;
        uint64_t v[4] = {k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL, k0 ^ 0x6c7967656e657261ULL,
                         k1 ^ 0x7465646279746573ULL};
        uint64_t m;

        for (size_t i = 0; i < full; i += 8) {
                m = load_le(p + i, 8);
                v[3] ^= m;
                sipround(v);
                v[0] ^= m;
        }
        m = load_le(p + full, len - full) | (uint64_t)len << 56;
        v[3] ^= m;
        sipround(v);
        v[0] ^= m;
        v[2] ^= 0xff;
        sipround(v);
        sipround(v);
        sipround(v);
        return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- the table ------------------------------------------------------------ */

struct strmap *strmap_new(void)
{
        struct strmap *m = calloc(1, sizeof(*m));
        uint64_t key[2];

        if (!m)
                return NULL;
        if (getrandom(key, sizeof(key), GRND_NONBLOCK) != (ssize_t)sizeof(key)) {
                /* no entropy yet (early boot): still differs per map and run */
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)m;
                key[1] = (uint64_t)ts.tv_sec ^ rotl(key[0], 29);
        }
        m->k0 = key[0];
        m->k1 = key[1];
        return m;
}

void strmap_free(struct strmap *m)
{
        if (!m)
                return;
        free(m->slots);
        free(m);
}

static inline bool slot_live(const struct strmap_slot *sl) { return sl->key && sl->key != tombstone; }

/* The slot holding key, or SIZE_MAX; *probes: slots examined. */
static size_t find(const struct strmap *m, const char *key, uint64_t hash, size_t *probes)
{
        size_t mask = m->cap - 1, n = 0;

        if (m->cap == 0) {
                *probes = 0;
                return SIZE_MAX;
        }
        for (size_t i = hash & mask;; i = (i + 1) & mask) {
                const struct strmap_slot *sl = &m->slots[i];
                n++;
                if (!sl->key) {
                        *probes = n;
                        return SIZE_MAX;
                }
                if (sl->key != tombstone && sl->hash == hash && strcmp(sl->key, key) == 0) {
                        *probes = n;
                        return i;
                }
        }
}

void *strmap_get(const struct strmap *m, const char *key)
{
        size_t probes, i = find(m, key, siphash13(m->k0, m->k1, key), &probes);
        return i == SIZE_MAX ? NULL : m->slots[i].value;
}

size_t strmap_probe_len(const struct strmap *m, const char *key)
{
        size_t probes;
        find(m, key, siphash13(m->k0, m->k1, key), &probes);
        return probes;
}

/* Moves the live entries to an array of newcap slots. */
static int rehash(struct strmap *m, size_t newcap)
{
        struct strmap_slot *slots = calloc(newcap, sizeof(*slots));
        size_t mask = newcap - 1;

        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
                const struct strmap_slot *sl = &m->slots[i];
                if (!slot_live(sl))
                        continue;
                size_t j = sl->hash & mask;
                while (slots[j].key)
                        j = (j + 1) & mask;
                slots[j] = *sl;
        }
        free(m->slots);
        m->slots = slots;
        m->cap = newcap;
        m->used = m->count;
        return 0;
}

/* Room for one more slot in use, keeping used <= 3/4 of cap. */
static int reserve_one(struct strmap *m)
{
        size_t newcap = m->cap ? m->cap : STRMAP_MIN_CAP;

        if (m->cap && (m->used + 1) * 4 <= m->cap * 3)
                return 0;
        while ((m->count + 1) * 2 > newcap) {
                if (newcap > SIZE_MAX / 2 / sizeof(struct strmap_slot))
                        return -ENOMEM;
                newcap *= 2;
        }
        return rehash(m, newcap);
}

int strmap_put(struct strmap *m, const char *key, void *value, void **ret_old)
{
        if (!key || !value)
                return -EINVAL;
        uint64_t hash = siphash13(m->k0, m->k1, key);
        size_t probes, i = find(m, key, hash, &probes);
        if (i != SIZE_MAX) {
                if (ret_old)
                        *ret_old = m->slots[i].value;
                m->slots[i].key = key;
                m->slots[i].value = value;
                return 0;
        }
        int r = reserve_one(m);
        if (r < 0)
                return r;
        size_t mask = m->cap - 1;
        for (i = hash & mask; slot_live(&m->slots[i]); i = (i + 1) & mask)
                ;
        if (!m->slots[i].key)
                m->used++; /* else a tombstone is reused */
        m->slots[i] = (struct strmap_slot){.key = key, .value = value, .hash = hash};
        m->count++;
        if (ret_old)
                *ret_old = NULL;
        return 0;
}

void *strmap_delete(struct strmap *m, const char *key)
{
        size_t probes, i = find(m, key, siphash13(m->k0, m->k1, key), &probes);

        if (i == SIZE_MAX)
                return NULL;
        struct strmap_slot *sl = &m->slots[i];
        void *value = sl->value;
        if (!m->slots[(i + 1) & (m->cap - 1)].key) {
                *sl = (struct strmap_slot){0};
                m->used--;
        } else {
                *sl = (struct strmap_slot){.key = tombstone};
        }
        m->count--;
        return value;
}

size_t strmap_count(const struct strmap *m) { return m->count; }

bool strmap_next(const struct strmap *m, size_t *pos, const char **ret_key, void **ret_value)
{
        for (size_t i = *pos; i < m->cap; i++) {
                const struct strmap_slot *sl = &m->slots[i];
                if (!slot_live(sl))
                        continue;
                *pos = i + 1;
                if (ret_key)
                        *ret_key = sl->key;
                if (ret_value)
                        *ret_value = sl->value;
                return true;
        }
        *pos = m->cap;
        return false;
}

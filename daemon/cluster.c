/* cluster: the node's name, leases, heartbeat and shared circuits.
 *
 * Timing: leases are renewed and the heartbeat sent every third of
 * LEASE_TIMEOUT, so a node misses two before another may take its jobs;
 * nodes whose last beat is older than two leases count as gone. The first
 * heartbeat goes at the first turn, and on a shared table the list of
 * live nodes is read every second, so a node that starts or stops shows
 * on the others within a second or two, not a third of a lease.
 *
 * Circuits: a change here is written with the turn's transaction
 * (cluster_put_circuit) and remembered with its time, and so is a probe
 * taken in the table; a row read back whose updated_at is not newer than
 * this node's own last write of that source is this node's echo and is
 * skipped, and so is a row in the state this node's circuit is in already
 * (the same state of the same opening). What is read is restored, never
 * written back by the caller.
 * Times in the table are wall ms; the scheduler's are monotonic:
 * converted at the edge.
 *
 * Invariant: c->nodes is the list of the last successful beat. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/str.h"
#include "common/strmap.h"
#include "daemon/cluster.h"
#include "daemon/config.h"
#include "daemon/srctab.h"

#define SYNC_EVERY_MS   1000 /* circuits changed elsewhere are read this often */
#define LIST_EVERY_MS   1000 /* shared table: the live nodes are read this often (between heartbeats) */
#define NODE_FILE       "node-id"
#define NODE_RANDOM_LEN 6

struct cluster {
        struct store *store;
        char node[STORE_NODE_ID_MAX + 1];
        char *url;   /* this node's API, for others; NULL: unknown */
        bool shared; /* nodes share the table: probes are taken in it */
        int64_t lease_ms;
        int64_t started_wall;
        int64_t last_renew_ms, last_beat_ms, last_list_ms, last_sync_ms; /* monotonic; 0: never */
        bool renew_soon;
        int64_t seen_wall;   /* circuits changed at or after this are read at the next sync */
        struct strmap *puts; /* source -> int64_t *: wall ms of this node's last write */
        struct store_node *nodes;
        size_t nnodes;
};

/* ---- the node's name ------------------------------------------------------------- */

static int read_node_file(const char *path, char *buf, size_t size)
{
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, size - 1);
        close(fd);
        if (n <= 0)
                return -EINVAL;
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        return buf[0] ? 0 : -EINVAL;
}

/* hostname-abc123, written to path for the next starts. */
static int make_node_file(const char *path, char *buf, size_t size)
{
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        unsigned char rnd[NODE_RANDOM_LEN];
        char host[64] = "hauld", suffix[NODE_RANDOM_LEN + 1];

        gethostname(host, sizeof(host) - 1);
        host[strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")] = '\0';
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
                return -EIO;
        for (int i = 0; i < NODE_RANDOM_LEN; i++)
                suffix[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
        suffix[NODE_RANDOM_LEN] = '\0';
        snprintf(buf, size, "%s-%s", host[0] ? host : "hauld", suffix);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return errno == EEXIST ? read_node_file(path, buf, size) : -errno;
        size_t len = strlen(buf);
        int r = write(fd, buf, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0 ? 0 : -EIO;
        close(fd);
        return r;
}

static int node_name(const struct config *cfg, char *buf, size_t size)
{
        char path[4096];

        if (cfg->node_id && *cfg->node_id) {
                snprintf(buf, size, "%s", cfg->node_id);
                return 0;
        }
        snprintf(path, sizeof(path), "%s/%s", cfg->state_dir, NODE_FILE);
        int r = read_node_file(path, buf, size);
        return r == -ENOENT ? make_node_file(path, buf, size) : r;
}

int cluster_new(const struct config *cfg, struct store *st, bool shared, struct cluster **ret)
{
        struct cluster *c = calloc(1, sizeof(*c));
        int r = -ENOMEM;

        if (!c || !(c->puts = strmap_new()))
                goto fail;
        r = node_name(cfg, c->node, sizeof(c->node));
        if (r < 0)
                goto fail;
        c->store = st;
        c->shared = shared;
        c->lease_ms = (int64_t)(cfg->lease_timeout * 1000);
        if (cfg->node_url && *cfg->node_url && !(c->url = strdup(cfg->node_url))) {
                r = -ENOMEM;
                goto fail;
        }
        *ret = c;
        return 0;
fail:
        cluster_free(c);
        return r;
}

void cluster_free(struct cluster *c)
{
        if (!c)
                return;
        if (c->puts) {
                size_t pos = 0;
                const char *k;
                void *v;
                while (strmap_next(c->puts, &pos, &k, &v)) {
                        strmap_delete(c->puts, k);
                        free(v); /* the key lives in the value's block */
                }
                strmap_free(c->puts);
        }
        store_nodes_free(c->nodes, c->nnodes);
        free(c->url);
        free(c);
}

const char *cluster_node(const struct cluster *c) { return c->node; }
int64_t cluster_lease_ms(const struct cluster *c) { return c->lease_ms; }

void cluster_set_url(struct cluster *c, const char *url)
{
        char *u = str_dup(url);
        if (url && !u)
                return;
        free(c->url);
        c->url = u;
}

/* ---- leases and heartbeat ---------------------------------------------------------------- */

bool cluster_renew_due(const struct cluster *c, int64_t now_ms)
{
        return c->renew_soon || c->last_renew_ms == 0 || now_ms - c->last_renew_ms >= c->lease_ms / 3;
}

void cluster_renew_soon(struct cluster *c) { c->renew_soon = true; }

int cluster_renew(struct cluster *c, const struct store_claim *held, size_t n, int64_t now_ms,
                  int64_t wall_ms, bool *lost)
{
        c->last_renew_ms = now_ms;
        c->renew_soon = false;
        for (size_t done = 0; done < n;) {
                size_t k = n - done > STORE_LEASE_MAX ? STORE_LEASE_MAX : n - done;
                int r = store_lease_renew(c->store, c->node, held + done, k, wall_ms, c->lease_ms,
                                          lost + done);
                if (r < 0)
                        return r;
                done += k;
        }
        return 0;
}

static bool heartbeat_due(const struct cluster *c, int64_t now_ms)
{
        return c->last_beat_ms == 0 || now_ms - c->last_beat_ms >= c->lease_ms / 3;
}

bool cluster_beat_due(const struct cluster *c, int64_t now_ms)
{
        return heartbeat_due(c, now_ms) || (c->shared && now_ms - c->last_list_ms >= LIST_EVERY_MS);
}

int cluster_beat(struct cluster *c, int64_t now_ms, int64_t wall_ms, int64_t leases, size_t *ret_live)
{
        struct store_node me = {.id = c->node,
                                .started_at = c->started_wall ? c->started_wall : wall_ms,
                                .heartbeat_at = wall_ms,
                                .leases = leases,
                                .api_url = c->url,
                                .version = PACKAGE_VERSION};
        struct store_node *v = NULL;
        size_t n = 0;
        int r;

        if (heartbeat_due(c, now_ms)) {
                c->last_beat_ms = now_ms;
                if (!c->started_wall)
                        c->started_wall = wall_ms;
                if ((r = store_node_beat(c->store, &me)) < 0)
                        return r;
        }
        c->last_list_ms = now_ms;
        if ((r = store_node_list(c->store, wall_ms - 2 * c->lease_ms, &v, &n)) < 0)
                return r;
        if (n != c->nnodes)
                *ret_live = n > 0 ? n : 1;
        store_nodes_free(c->nodes, c->nnodes);
        c->nodes = v;
        c->nnodes = n;
        return 0;
}

int cluster_nodes(const struct cluster *c, struct cluster_node **ret, size_t *ret_n)
{
        struct cluster_node *v = calloc(c->nnodes ? c->nnodes : 1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < c->nnodes; i++) {
                v[i] = (struct cluster_node){.id = strdup(c->nodes[i].id),
                                             .heartbeat_at = c->nodes[i].heartbeat_at,
                                             .leases = c->nodes[i].leases,
                                             .api_url = str_dup(c->nodes[i].api_url)};
                if (!v[i].id) {
                        cluster_nodes_free(v, i + 1);
                        return -ENOMEM;
                }
        }
        *ret = v;
        *ret_n = c->nnodes;
        return 0;
}

void cluster_nodes_free(struct cluster_node *v, size_t n)
{
        for (size_t i = 0; v && i < n; i++) {
                free(v[i].id);
                free(v[i].api_url);
        }
        free(v);
}

void cluster_leave(struct cluster *c) { store_node_remove(c->store, c->node); }

/* ---- circuits --------------------------------------------------------------------------------- */

/* This node wrote source's circuit at wall ms t. */
static void note_put(struct cluster *c, const char *source, int64_t t)
{
        int64_t *at = strmap_get(c->puts, source);
        if (at) {
                *at = t;
                return;
        }
        size_t len = strlen(source) + 1;
        char *block = malloc(sizeof(int64_t) + len); /* the time, then the key */
        if (!block)
                return;
        memcpy(block, &t, sizeof(t));
        memcpy(block + sizeof(int64_t), source, len);
        if (strmap_put(c->puts, block + sizeof(int64_t), block, NULL) < 0)
                free(block);
}

static int64_t own_put(const struct cluster *c, const char *source)
{
        const int64_t *at = strmap_get(c->puts, source);
        return at ? *at : 0;
}

static int64_t to_mono(int64_t wall_t, int64_t now_ms, int64_t wall_ms)
{
        return wall_t ? now_ms + (wall_t - wall_ms) : 0;
}

static bool restore(struct srctab *srcs, const struct store_circuit *row, int64_t now_ms, int64_t wall_ms)
{
        struct src *s = srctab_source(srcs, row->source, false);
        if (!s)
                return false;
        srctab_restore_circuit(srcs, s, row->state, row->consecutive_failures, row->trips,
                               to_mono(row->opened_at, now_ms, wall_ms),
                               to_mono(row->retry_at, now_ms, wall_ms), row->open_ms);
        return true;
}

/* Is the row what this node has already: the same state of the same
 * opening (another node turned half-open by the same clock, say)?
 * Restoring it would only disturb the circuit here (a probe in flight
 * would be forgotten, and a second one sent). */
static bool known(struct srctab *srcs, const struct store_circuit *row, int64_t now_ms)
{
        struct src *s = srctab_source(srcs, row->source, false);
        struct src_info si;
        bool same;

        if (!s || srctab_info(srcs, s, now_ms, &si) < 0)
                return false;
        same = si.state == row->state && si.trips == row->trips;
        src_info_clear(&si);
        return same;
}

int cluster_load_circuits(struct cluster *c, struct srctab *srcs, int64_t now_ms, int64_t wall_ms)
{
        struct store_circuit *v = NULL;
        size_t n = 0;
        int r = store_circuit_list(c->store, 0, &v, &n);

        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (v[i].state != BREAKER_CLOSED || v[i].trips > 0)
                        restore(srcs, &v[i], now_ms, wall_ms);
        c->seen_wall = wall_ms;
        c->last_sync_ms = now_ms;
        store_circuits_free(v, n);
        return 0;
}

int cluster_put_circuit(struct cluster *c, struct srctab *srcs, const struct src *src, int64_t now_ms,
                        int64_t wall_ms)
{
        struct src_info si;
        int r = srctab_info(srcs, src, now_ms, &si);

        if (r < 0)
                return r;
        struct store_circuit row = {
                .source = si.name,
                .state = si.state,
                .consecutive_failures = si.consecutive_failures,
                .trips = si.trips,
                .opened_at = si.opened_at_ms ? wall_ms + (si.opened_at_ms - now_ms) : 0,
                .retry_at = si.retry_at_ms ? wall_ms + (si.retry_at_ms - now_ms) : 0,
                .open_ms = si.open_ms,
                .last_error = si.last_error,
                .updated_at = wall_ms,
        };
        r = store_circuit_put(c->store, &row);
        if (r >= 0)
                note_put(c, si.name, wall_ms);
        src_info_clear(&si);
        return r;
}

int cluster_sync_circuits(struct cluster *c, struct srctab *srcs, int64_t now_ms, int64_t wall_ms, bool now)
{
        struct store_circuit *v = NULL;
        size_t n = 0;
        int changed = 0;

        if (!now && c->last_sync_ms && now_ms - c->last_sync_ms < SYNC_EVERY_MS)
                return 0;
        c->last_sync_ms = now_ms;
        /* a second back: a row written just before our last read may carry an older time */
        int r = store_circuit_list(c->store, c->seen_wall - 1000, &v, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (v[i].updated_at <= own_put(c, v[i].source))
                        continue; /* our own write, or older than it */
                note_put(c, v[i].source, v[i].updated_at);
                if (!known(srcs, &v[i], now_ms) && restore(srcs, &v[i], now_ms, wall_ms))
                        changed++;
        }
        c->seen_wall = wall_ms;
        store_circuits_free(v, n);
        return changed;
}

bool cluster_take_probe(struct cluster *c, const struct src *src, int64_t wall_ms)
{
        if (!c->shared)
                return true;
        int r = store_circuit_take_probe(c->store, src_name(src), c->node, wall_ms, c->lease_ms);
        if (r == 0)
                note_put(c, src_name(src),
                         wall_ms);     /* the row's change is ours: not news at the next sync */
        return r == 0 || r == -ENOENT; /* no row: no other node knows the circuit open */
}

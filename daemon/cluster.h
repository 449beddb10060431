/* cluster: this node among the others that share its job table. It owns
 * the node's name, the timing of lease renewals and heartbeats, the list
 * of live nodes, and the circuits kept in the table (written when they
 * change here, read back when another node or an earlier run changed
 * them). With one node on SQLite the same calls keep circuits across
 * restarts and the leases of its own jobs.
 *
 * Runs on the scheduler's thread with the scheduler's store connection.
 * int returns: 0 ok, -errno on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/store.h"

struct cluster;
struct config;
struct srctab;
struct src;

/* A node as snapshots show it. */
struct cluster_node {
        char *id;
        int64_t heartbeat_at; /* wall ms */
        int64_t leases;       /* jobs it held then */
        char *api_url;        /* NULL: unknown */
};

/* The node's name: NODE_ID, else the one kept in STATE_DIR/node-id (made
 * on first start: the host name and six random characters). shared: the
 * table is shared by nodes (PostgreSQL): probes are taken cluster-wide. */
int cluster_new(const struct config *cfg, struct store *st, bool shared, struct cluster **ret);
void cluster_free(struct cluster *c);
const char *cluster_node(const struct cluster *c);
int64_t cluster_lease_ms(const struct cluster *c);
void cluster_set_url(struct cluster *c, const char *url);

/* Is a renewal due (a third of the lease since the last, or asked for)? */
bool cluster_renew_due(const struct cluster *c, int64_t now_ms);
void cluster_renew_soon(struct cluster *c);
/* Renew held[0..n); lost[i] is set for each lease this node lost. */
int cluster_renew(struct cluster *c, const struct store_claim *held, size_t n, int64_t now_ms,
                  int64_t wall_ms, bool *lost);

/* Is the heartbeat due (a third of the lease since the last, or never),
 * or, on a shared table, a look at the live nodes (every second)? */
bool cluster_beat_due(const struct cluster *c, int64_t now_ms);
/* The node's heartbeat (with the jobs it holds) when it is due; then the
 * live nodes are counted: *ret_live (>= 1) when it changed, else
 * unchanged. Call when cluster_beat_due(); the next heartbeat is due a
 * third of a lease later, even after a failure. */
int cluster_beat(struct cluster *c, int64_t now_ms, int64_t wall_ms, int64_t leases, size_t *ret_live);
/* The live nodes at the last beat (the caller frees with cluster_nodes_free). */
int cluster_nodes(const struct cluster *c, struct cluster_node **ret, size_t *ret_n);
void cluster_nodes_free(struct cluster_node *v, size_t n);
/* The node leaves (a graceful stop): its row goes. */
void cluster_leave(struct cluster *c);

/* Circuits: every one kept in the table into srcs (at start). */
int cluster_load_circuits(struct cluster *c, struct srctab *srcs, int64_t now_ms, int64_t wall_ms);
/* Write src's circuit as it is now (inside the caller's transaction). */
int cluster_put_circuit(struct cluster *c, struct srctab *srcs, const struct src *src, int64_t now_ms,
                        int64_t wall_ms);
/* Take in circuits other nodes changed since the last look (at most once a
 * second unless asked for). Returns how many changed here; the caller
 * announces them and must not write them back. */
int cluster_sync_circuits(struct cluster *c, struct srctab *srcs, int64_t now_ms, int64_t wall_ms, bool now);
/* May this node send src's half-open probe (no other node holds it)? */
bool cluster_take_probe(struct cluster *c, const struct src *src, int64_t wall_ms);

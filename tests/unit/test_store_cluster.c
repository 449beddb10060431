/* Unit tests of what several nodes share in the job store: leases and
 * fencing tokens, claims from two connections at once, nodes, circuits,
 * notifications, and (PostgreSQL) a lost connection and a role without
 * CREATE. Each runs against SQLite and, with HAULD_TEST_PG_URL, against
 * PostgreSQL (storetest.h). */
#include "autoconfig.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/job.h"
#include "daemon/store.h"
#include "tests/unit/storetest.h"

#define LEASE 30000 /* ms */

static struct store_claim *claim(struct store *s, const char *node, size_t limit, int64_t now, size_t want)
{
        struct store_claim *c = NULL;
        size_t n = 99;

        ck_assert_int_eq(store_job_claim(s, node, limit, now, LEASE, &c, &n), 0);
        ck_assert_uint_eq(n, want);
        ck_assert(want > 0 || c == NULL);
        return c;
}

/* ---- claims ------------------------------------------------------------------------- */

/* Queued jobs by priority then age, up to the limit; running ones with a
 * live lease, paused and finished ones never. */
START_TEST(test_claim_order)
{
        struct store *s = open_store();
        struct job *j[7];
        struct store_claim *c;
        struct job *g;

        j[0] = insert_job(s, T0 + 0, JOB_QUEUED, 0);
        j[1] = insert_job(s, T0 + 1, JOB_QUEUED, 5);
        j[2] = insert_job(s, T0 + 2, JOB_PAUSED, 10);
        j[3] = insert_job(s, T0 + 3, JOB_QUEUED, -3);
        j[4] = insert_job(s, T0 + 4, JOB_QUEUED, 5);
        j[5] = insert_job(s, T0 + 5, JOB_SUCCEEDED, 10);
        j[6] = insert_job(s, T0 + 6, JOB_CANCELLED, 10);

        c = claim(s, "node-a", 2, T0, 2);
        ck_assert_str_eq(c[0].id, j[1]->id);
        ck_assert_str_eq(c[1].id, j[4]->id);
        ck_assert(!c[0].rescued && !c[1].rescued);
        ck_assert_int_gt(c[0].lease_token, 0);
        ck_assert_int_ne(c[0].lease_token, c[1].lease_token);
        g = get_job(s, j[1]->id);
        ck_assert_int_eq(g->state, JOB_RUNNING);
        ck_assert_str_eq(g->lease_owner, "node-a");
        ck_assert_int_eq(g->lease_token, c[0].lease_token);
        ck_assert_int_eq(g->lease_until, T0 + LEASE);
        job_free(g);
        free(c);

        /* the running ones are leased: another node gets the rest */
        c = claim(s, "node-b", 10, T0 + 1, 2);
        ck_assert_str_eq(c[0].id, j[0]->id);
        ck_assert_str_eq(c[1].id, j[3]->id);
        free(c);
        c = claim(s, "node-b", 10, T0 + 2, 0);
        ck_assert_ptr_null(c);
        c = claim(s, "node-b", 0, T0 + 2, 0);
        for (int i = 0; i < 7; i++)
                job_free(j[i]);
        store_close(s);
}
END_TEST

START_TEST(test_claim_args)
{
        struct store *s = open_store();
        struct store_claim *c = NULL, one = {.lease_token = 1};
        char long_id[STORE_NODE_ID_MAX + 2];
        bool lost[1];
        size_t n = 0;
        int64_t token;

        memset(long_id, 'n', sizeof(long_id) - 1);
        long_id[sizeof(long_id) - 1] = '\0';
        ck_assert_int_eq(store_job_claim(s, NULL, 1, T0, LEASE, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, "", 1, T0, LEASE, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, long_id, 1, T0, LEASE, &c, &n), -EINVAL);
        long_id[STORE_NODE_ID_MAX] = '\0'; /* at the limit */
        ck_assert_int_eq(store_job_claim(s, long_id, 1, T0, LEASE, &c, &n), 0);
        ck_assert_int_eq(store_job_claim(s, "a\nb", 1, T0, LEASE, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, "node-a", 1, T0, 0, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, "node-a", 1, -1, LEASE, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, "node-a", 1, T0, INT64_MAX, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, "node-a", STORE_LEASE_MAX + 1, T0, LEASE, &c, &n), -EINVAL);
        ck_assert_int_eq(store_job_claim(s, "node-a", STORE_LEASE_MAX, T0, LEASE, &c, &n), 0);
        ck_assert_int_eq(store_lease_renew(s, "node-a", &one, STORE_LEASE_MAX + 1, T0, LEASE, lost),
                         -EINVAL);
        ck_assert_int_eq(store_lease_renew(s, "node-a", NULL, 1, T0, LEASE, lost), -EINVAL);
        ck_assert_int_eq(store_lease_renew(s, "node-a", &one, 0, T0, LEASE, NULL), 0);

        /* leases commit before they return: never inside a batch */
        ck_assert_int_eq(store_begin(s), 0);
        ck_assert_int_eq(store_job_claim(s, "node-a", 1, T0, LEASE, &c, &n), -EINVAL);
        ck_assert_int_eq(store_lease_renew(s, "node-a", &one, 1, T0, LEASE, lost), -EINVAL);
        ck_assert_int_eq(store_lease_take(s, "0000000000NOSUCHJOB0000000", "node-a", T0, LEASE, &token),
                         -EINVAL);
        ck_assert_int_eq(store_rollback(s), 0);
        ck_assert_int_eq(store_lease_take(s, "0000000000NOSUCHJOB0000000", "node-a", T0, LEASE, &token),
                         -ENOENT);
        store_close(s);
}
END_TEST

/* A lease that ran out is taken over: rescued, with a greater token, its
 * running items back to pending; the old holder is fenced out. */
START_TEST(test_claim_rescue)
{
        struct store *s = open_store();
        struct job *j = job_make(T0, JOB_QUEUED, 1), *q = insert_job(s, T0 + 1, JOB_QUEUED, 5),
                   *low = insert_job(s, T0 + 2, JOB_QUEUED, 0), *g;
        struct item *items = items_make(3), *got;
        struct store_claim *a, *b;
        size_t n;

        ck_assert_int_eq(store_job_insert(s, j, items, 3), 0);
        a = claim(s, "node-a", 3, T0, 3);
        ck_assert_str_eq(a[1].id, j->id);
        /* node-a starts two items and writes them under its lease */
        j->state = JOB_RUNNING;
        j->lease_token = a[1].lease_token;
        items[0].state = items[2].state = ITEM_RUNNING;
        ck_assert_int_eq(store_begin(s), 0);
        ck_assert_int_eq(store_job_update(s, j), 0);
        ck_assert_int_eq(store_item_update(s, j->id, &items[0]), 0);
        ck_assert_int_eq(store_item_update(s, j->id, &items[2]), 0);
        ck_assert_int_eq(store_commit(s), 0);

        /* live leases are not taken; at the lease's end they are */
        b = claim(s, "node-b", 10, T0 + LEASE - 1, 0);
        ck_assert_int_eq(store_job_claim(s, "node-b", 10, T0 + LEASE, LEASE, &b, &n), 0);
        ck_assert_uint_eq(n, 0);
        b = claim(s, "node-b", 2, T0 + LEASE + 1, 2);
        ck_assert_str_eq(b[0].id, q->id); /* still priority first */
        ck_assert_str_eq(b[1].id, j->id);
        ck_assert(b[0].rescued && b[1].rescued);
        ck_assert_int_gt(b[1].lease_token, a[0].lease_token);
        ck_assert_int_gt(b[1].lease_token, a[2].lease_token);
        g = get_job(s, j->id);
        ck_assert_str_eq(g->lease_owner, "node-b");
        ck_assert_int_eq(g->lease_until, T0 + 2 * LEASE + 1);
        job_free(g);
        ck_assert_int_eq(store_item_load(s, j->id, &got, &n), 0);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(got[i].state, ITEM_PENDING);
        items_free(got, n);

        /* node-a comes back: its write is refused and changes nothing */
        j->progress.succeeded = 3;
        ck_assert_int_eq(store_job_update(s, j), -ESTALE);
        g = get_job(s, j->id);
        ck_assert_int_eq(g->progress.succeeded, 0);
        ck_assert_int_eq(g->lease_token, b[1].lease_token);
        job_free(g);
        /* the third job was not in node-b's limit */
        g = get_job(s, low->id);
        ck_assert_str_eq(g->lease_owner, "node-a");
        job_free(g);
        free(a);
        free(b);
        items_free(items, 3);
        job_free(j);
        job_free(q);
        job_free(low);
        store_close(s);
}
END_TEST

#define RACE_JOBS 120

static pthread_barrier_t start_line;

struct racer {
        const char *node;
        struct store_claim got[RACE_JOBS];
        size_t n;
        int err;
};

/* Claim three at a time on a connection of its own until none are left. */
static void *race(void *arg)
{
        struct racer *r = arg;
        struct store *s = NULL;
        int e = store_open(url, &s);

        pthread_barrier_wait(&start_line);
        for (int rounds = 0; e == 0 && rounds < 1000; rounds++) {
                struct store_claim *c = NULL;
                size_t n = 0;
                e = store_job_claim(s, r->node, 3, T0, LEASE, &c, &n);
                if (e == -EBUSY) {
                        e = 0;
                        continue;
                }
                for (size_t i = 0; e == 0 && i < n && r->n < RACE_JOBS; i++)
                        r->got[r->n++] = c[i];
                free(c);
                if (e == 0 && n == 0)
                        break;
        }
        store_close(s);
        r->err = e;
        return NULL;
}

/* Two connections claiming at once: every job goes to exactly one, each
 * token is handed out once. */
START_TEST(test_claim_concurrent)
{
        struct store *s = open_store();
        struct racer r[2] = {{.node = "node-a"}, {.node = "node-b"}};
        int64_t tokens[RACE_JOBS];
        size_t total = 0;
        pthread_t t[2];
        int r0;

        ck_assert_int_eq(store_begin(s), 0);
        for (int i = 0; i < RACE_JOBS; i++) {
                struct job *j = job_make(T0 + i, JOB_QUEUED, i % 3);
                ck_assert_int_eq(store_job_insert(s, j, NULL, 0), 0);
                job_free(j);
        }
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(pthread_barrier_init(&start_line, NULL, 2), 0);
        for (int i = 0; i < 2; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
        for (int i = 0; i < 2; i++) {
                ck_assert_int_eq(pthread_join(t[i], NULL), 0);
                ck_assert_int_eq(r[i].err, 0);
        }
        for (int i = 0; i < 2; i++) {
                for (size_t k = 0; k < r[i].n; k++) {
                        struct job *g = get_job(s, r[i].got[k].id);
                        ck_assert_str_eq(g->lease_owner, r[i].node);
                        ck_assert_int_eq(g->lease_token, r[i].got[k].lease_token);
                        job_free(g);
                        ck_assert_uint_lt(total, RACE_JOBS);
                        tokens[total++] = r[i].got[k].lease_token;
                }
        }
        pthread_barrier_destroy(&start_line);
        ck_assert_uint_eq(total, RACE_JOBS);
        for (size_t i = 0; i < total; i++)
                for (size_t k = i + 1; k < total; k++)
                        ck_assert_int_ne(tokens[i], tokens[k]);
        r0 = (int)sql_int("SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL");
        ck_assert_int_eq(r0, RACE_JOBS);
        fprintf(stderr, "test_store_cluster: %zu and %zu of %d jobs claimed\n", r[0].n, r[1].n, RACE_JOBS);
        store_close(s);
}
END_TEST

/* ---- renewing, taking, fencing -------------------------------------------------------- */

START_TEST(test_renew)
{
        struct store *s = open_store();
        struct job *j[4], *g;
        struct store_claim *c;
        bool lost[4];
        int64_t token;

        for (int i = 0; i < 4; i++)
                j[i] = insert_job(s, T0 + i, JOB_QUEUED, 0);
        c = claim(s, "node-a", 4, T0, 4);
        memset(lost, 1, sizeof(lost));
        ck_assert_int_eq(store_lease_renew(s, "node-a", c, 4, T0 + 1000, LEASE, lost), 0);
        for (int i = 0; i < 4; i++)
                ck_assert(!lost[i]);
        g = get_job(s, c[0].id);
        ck_assert_int_eq(g->lease_until, T0 + 1000 + LEASE);
        job_free(g);
        /* another node's id holds none of them */
        ck_assert_int_eq(store_lease_renew(s, "node-b", c, 4, T0 + 1000, LEASE, lost), 0);
        for (int i = 0; i < 4; i++)
                ck_assert(lost[i]);

        /* c[1] taken by node-b, c[2] gone, c[3] finished under its lease */
        ck_assert_int_eq(store_lease_take(s, c[1].id, "node-b", T0 + 2000, LEASE, &token), 0);
        ck_assert_int_eq(store_job_delete(s, c[2].id), 0);
        g = get_job(s, c[3].id);
        g->state = JOB_SUCCEEDED;
        g->finished_at = T0 + 2000;
        ck_assert_int_eq(store_job_update(s, g), 0);
        job_free(g);
        ck_assert_int_eq(store_lease_renew(s, "node-a", c, 4, T0 + 3000, LEASE, lost), 0);
        ck_assert(!lost[0] && lost[1] && lost[2] && lost[3]);
        g = get_job(s, c[0].id);
        ck_assert_int_eq(g->lease_until, T0 + 3000 + LEASE);
        job_free(g);
        g = get_job(s, c[1].id);
        ck_assert_int_eq(g->lease_until, T0 + 2000 + LEASE); /* node-b's, untouched */
        job_free(g);

        /* a paused job whose lease a node took keeps it renewable */
        ck_assert_int_eq(store_lease_take(s, c[0].id, "node-a", T0 + 4000, LEASE, &token), 0);
        g = get_job(s, c[0].id);
        g->state = JOB_PAUSED;
        ck_assert_int_eq(store_job_update(s, g), 0);
        job_free(g);
        ck_assert_int_eq(store_lease_take(s, c[0].id, "node-a", T0 + 4000, LEASE, &c[0].lease_token), 0);
        ck_assert_int_eq(store_lease_renew(s, "node-a", c, 1, T0 + 5000, LEASE, lost), 0);
        ck_assert(!lost[0]);
        free(c);
        for (int i = 0; i < 4; i++)
                job_free(j[i]);
        store_close(s);
}
END_TEST

/* Taking a lease fences out the holder; the taker's final write ends the
 * lease and keeps the token. */
START_TEST(test_fence_take)
{
        struct store *s = open_store(), *other = open_store();
        struct job *j = insert_job(s, T0, JOB_QUEUED, 0), *a, *g;
        struct store_claim *c;
        int64_t token = 0;
        bool lost;

        c = claim(s, "node-a", 1, T0, 1);
        a = get_job(s, j->id);
        ck_assert_int_eq(store_lease_take(other, j->id, "node-b", T0 + 10, LEASE, &token), 0);
        ck_assert_int_gt(token, c[0].lease_token);
        g = get_job(s, j->id);
        ck_assert_int_eq(g->state, JOB_RUNNING); /* the state is left alone */
        ck_assert_str_eq(g->lease_owner, "node-b");
        ck_assert_int_eq(g->lease_until, T0 + 10 + LEASE);
        job_free(g);

        a->progress.succeeded = 1;
        ck_assert_int_eq(store_job_update(s, a), -ESTALE);
        ck_assert_int_eq(store_lease_renew(s, "node-a", c, 1, T0 + 20, LEASE, &lost), 0);
        ck_assert(lost);

        /* node-b cancels it under its token */
        g = get_job(other, j->id);
        g->state = JOB_CANCELLED;
        g->finished_at = T0 + 30;
        job_error_set(&g->error, "cancelled", "cancelled by request");
        ck_assert_int_eq(store_job_update(other, g), 0);
        job_free(g);
        g = get_job(s, j->id);
        ck_assert_int_eq(g->state, JOB_CANCELLED);
        ck_assert_ptr_null(g->lease_owner);
        ck_assert_int_eq(g->lease_until, 0);
        ck_assert_int_eq(g->lease_token, token);
        ck_assert_int_eq(g->progress.succeeded, 0);
        /* an unfenced write still goes through; a fenced one of a gone job is stale */
        g->lease_token = 0;
        ck_assert_int_eq(store_job_update(s, g), 0);
        g->lease_token = token;
        ck_assert_int_eq(store_job_delete(s, j->id), 0);
        ck_assert_int_eq(store_job_update(s, g), -ESTALE);
        g->lease_token = 0;
        ck_assert_int_eq(store_job_update(s, g), -ENOENT);
        job_free(g);
        g = NULL;
        a->lease_token = -1;
        ck_assert_int_eq(store_job_update(s, a), -EINVAL);
        free(c);
        job_free(a);
        job_free(j);
        store_close(other);
        store_close(s);
}
END_TEST

struct claimer {
        int64_t now;
        struct store_claim *c;
        size_t n;
        int err;
        double took_ms;
};

static void *claim_thread(void *arg)
{
        struct claimer *k = arg;
        struct store *s = NULL;
        double t0 = now_ms();

        k->err = store_open(url, &s);
        if (k->err == 0)
                k->err = store_job_claim(s, "node-b", 5, k->now, LEASE, &k->c, &k->n);
        k->took_ms = now_ms() - t0;
        store_close(s);
        return NULL;
}

/* A batch writes the job row first (fenced), then its items. No claim
 * takes the job in between: PostgreSQL's claim passes the locked row by,
 * SQLite's waits for the batch. Either way the batch commits whole and
 * the next claim fences it out. */
START_TEST(test_fence_row_lock)
{
        struct store *s = open_store();
        struct job *j = job_make(T0, JOB_QUEUED, 0), *g;
        struct item *items = items_make(2), *got;
        struct claimer k = {.now = T0 + 10 * LEASE};
        struct store_claim *c;
        pthread_t t;
        size_t n;

        ck_assert_int_eq(store_job_insert(s, j, items, 2), 0);
        c = claim(s, "node-a", 1, T0, 1);
        j->state = JOB_RUNNING;
        j->lease_token = c[0].lease_token;
        j->progress.succeeded = 1;
        item_finish(&items[0], true);

        ck_assert_int_eq(store_begin(s), 0);
        ck_assert_int_eq(store_job_update(s, j), 0);
        ck_assert_int_eq(pthread_create(&t, NULL, claim_thread, &k), 0);
        usleep(300 * 1000);
        ck_assert_int_eq(store_item_update(s, j->id, &items[0]), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        ck_assert_int_eq(k.err, 0);
        if (backend == BE_PG) {
                ck_assert_uint_eq(k.n, 0); /* passed by, without waiting */
                ck_assert_double_lt(k.took_ms, 250 + 1000);
                k.c = claim(s, "node-b", 5, k.now, 1);
                k.n = 1;
        } else {
                ck_assert_uint_eq(k.n, 1); /* waited for the batch */
                ck_assert_double_ge(k.took_ms, 250);
        }
        ck_assert(k.c[0].rescued);
        ck_assert_int_gt(k.c[0].lease_token, c[0].lease_token);
        /* the whole batch is there: job row and item */
        g = get_job(s, j->id);
        ck_assert_int_eq(g->progress.succeeded, 1);
        ck_assert_str_eq(g->lease_owner, "node-b");
        job_free(g);
        ck_assert_int_eq(store_item_load(s, j->id, &got, &n), 0);
        ck_assert_int_eq(got[0].state, ITEM_SUCCEEDED);
        items_free(got, n);
        /* node-a's next batch fails at its first write */
        ck_assert_int_eq(store_begin(s), 0);
        ck_assert_int_eq(store_job_update(s, j), -ESTALE);
        ck_assert_int_eq(store_rollback(s), 0);
        free(k.c);
        free(c);
        items_free(items, 2);
        job_free(j);
        store_close(s);
}
END_TEST

/* Tokens only grow: across calls, connections and reopening. */
START_TEST(test_tokens_monotonic)
{
        struct store *s = open_store();
        struct job *j[4];
        struct store_claim *c;
        int64_t last = 0, token;

        for (int i = 0; i < 4; i++)
                j[i] = insert_job(s, T0 + i, JOB_QUEUED, 0);
        c = claim(s, "node-a", 2, T0, 2);
        last = c[0].lease_token > c[1].lease_token ? c[0].lease_token : c[1].lease_token;
        free(c);
        store_close(s);

        s = open_store();
        ck_assert_int_eq(store_lease_take(s, j[0]->id, "node-b", T0, LEASE, &token), 0);
        ck_assert_int_gt(token, last);
        last = token;
        c = claim(s, "node-a", 1, T0, 1);
        ck_assert_int_gt(c[0].lease_token, last);
        last = c[0].lease_token;
        /* deleting the job with the highest token does not bring it back down */
        ck_assert_int_eq(store_job_delete(s, c[0].id), 0);
        free(c);
        store_close(s);
        s = open_store();
        c = claim(s, "node-a", 1, T0, 1);
        ck_assert_int_gt(c[0].lease_token, last);
        free(c);
        for (int i = 0; i < 4; i++)
                job_free(j[i]);
        store_close(s);
}
END_TEST

/* At start a node requeues what it ran. SQLite: every running job (one
 * node per file). PostgreSQL: its own, the unowned and the expired;
 * another node's live lease stays. */
START_TEST(test_recover_leases)
{
        struct store *s = open_store();
        struct job *theirs = insert_job(s, T0, JOB_QUEUED, 3), *mine = insert_job(s, T0 + 1, JOB_QUEUED, 2),
                   *expired = insert_job(s, T0 + 2, JOB_QUEUED, 1), *g;
        struct item *items = items_make(2), *got;
        struct store_claim *c;
        int64_t n;
        size_t ni;

        ck_assert_int_eq(store_item_append(s, theirs->id, items, 2), 0);
        c = claim(s, "node-b", 1, T0 + 5 * LEASE, 1);
        ck_assert_str_eq(c[0].id, theirs->id);
        free(c);
        c = claim(s, "node-a", 1, T0, 1);
        ck_assert_str_eq(c[0].id, mine->id);
        free(c);
        c = claim(s, "node-c", 1, T0, 1);
        ck_assert_str_eq(c[0].id, expired->id);
        free(c);
        items[0].state = ITEM_RUNNING;
        ck_assert_int_eq(store_item_update(s, theirs->id, &items[0]), 0);

        ck_assert_int_eq(store_recover(s, "node-a", T0 + 2 * LEASE, &n), 0);
        g = get_job(s, theirs->id);
        if (backend == BE_PG) {
                ck_assert_int_eq(n, 2);
                ck_assert_int_eq(g->state, JOB_RUNNING);
                ck_assert_str_eq(g->lease_owner, "node-b");
                ck_assert_int_eq(g->lease_until, T0 + 6 * LEASE);
                ck_assert_int_eq(store_item_load(s, theirs->id, &got, &ni), 0);
                ck_assert_int_eq(got[0].state, ITEM_RUNNING); /* being downloaded by node-b */
                items_free(got, ni);
        } else {
                ck_assert_int_eq(n, 3);
                ck_assert_int_eq(g->state, JOB_QUEUED);
                ck_assert_ptr_null(g->lease_owner);
                ck_assert_int_eq(store_item_load(s, theirs->id, &got, &ni), 0);
                ck_assert_int_eq(got[0].state, ITEM_PENDING);
                items_free(got, ni);
        }
        job_free(g);
        g = get_job(s, mine->id);
        ck_assert_int_eq(g->state, JOB_QUEUED);
        ck_assert_ptr_null(g->lease_owner);
        ck_assert_int_eq(g->lease_until, 0);
        ck_assert_int_gt(g->lease_token, 0);
        job_free(g);
        g = get_job(s, expired->id);
        ck_assert_int_eq(g->state, JOB_QUEUED);
        job_free(g);
        ck_assert_int_eq(store_recover(s, "a\tb", T0, &n), -EINVAL);
        items_free(items, 2);
        job_free(mine);
        job_free(theirs);
        job_free(expired);
        store_close(s);
}
END_TEST

/* ---- nodes and circuits ------------------------------------------------------------------ */

START_TEST(test_nodes)
{
        struct store *s = open_store();
        struct store_node a = {.id = "node-a",
                               .started_at = T0,
                               .heartbeat_at = T0 + 100,
                               .leases = 3,
                               .api_url = "http://10.0.0.1:8080",
                               .version = "0.2.0"};
        struct store_node b = {.id = "node-b", .started_at = T0 + 5, .heartbeat_at = T0 + 50};
        struct store_node *v;
        size_t n;

        ck_assert_int_eq(store_node_list(s, 0, &v, &n), 0);
        ck_assert_uint_eq(n, 0);
        store_nodes_free(v, n);
        ck_assert_int_eq(store_node_beat(s, &b), 0);
        ck_assert_int_eq(store_node_beat(s, &a), 0);
        ck_assert_int_eq(store_node_list(s, 0, &v, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(v[0].id, "node-a");
        ck_assert_int_eq(v[0].started_at, T0);
        ck_assert_int_eq(v[0].heartbeat_at, T0 + 100);
        ck_assert_int_eq(v[0].leases, 3);
        ck_assert_str_eq(v[0].api_url, "http://10.0.0.1:8080");
        ck_assert_str_eq(v[0].version, "0.2.0");
        ck_assert_str_eq(v[1].id, "node-b");
        ck_assert_ptr_null(v[1].api_url);
        ck_assert_ptr_null(v[1].version);
        store_nodes_free(v, n);

        /* a beat replaces the row; the alive filter is at-or-after */
        b.heartbeat_at = T0 + 200;
        b.leases = 7;
        b.version = "0.3.0";
        ck_assert_int_eq(store_node_beat(s, &b), 0);
        ck_assert_int_eq(store_node_list(s, T0 + 101, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].id, "node-b");
        ck_assert_int_eq(v[0].leases, 7);
        ck_assert_str_eq(v[0].version, "0.3.0");
        store_nodes_free(v, n);
        ck_assert_int_eq(store_node_list(s, T0 + 100, &v, &n), 0);
        ck_assert_uint_eq(n, 2);
        store_nodes_free(v, n);

        ck_assert_int_eq(store_node_remove(s, "node-a"), 0);
        ck_assert_int_eq(store_node_remove(s, "node-a"), -ENOENT);
        ck_assert_int_eq(store_node_list(s, 0, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        store_nodes_free(v, n);
        store_nodes_free(NULL, 0);

        b.id = "";
        ck_assert_int_eq(store_node_beat(s, &b), -EINVAL);
        b.id = "node-b";
        b.leases = -1;
        ck_assert_int_eq(store_node_beat(s, &b), -EINVAL);
        ck_assert_int_eq(store_node_list(s, -1, &v, &n), -EINVAL);
        ck_assert_int_eq(store_node_remove(s, NULL), -EINVAL);
        store_close(s);
}
END_TEST

static struct store_circuit circuit(const char *source, enum breaker_state st, int64_t retry_at, int64_t at)
{
        return (struct store_circuit){.source = (char *)source,
                                      .state = st,
                                      .consecutive_failures = st == BREAKER_CLOSED ? 0 : 5,
                                      .trips = 2,
                                      .opened_at = st == BREAKER_CLOSED ? 0 : at,
                                      .retry_at = retry_at,
                                      .open_ms = 30000,
                                      .last_error = st == BREAKER_CLOSED ? NULL : (char *)"HTTP 503",
                                      .updated_at = at};
}

START_TEST(test_circuits)
{
        struct store *s = open_store();
        struct store_circuit a = circuit("openverse", BREAKER_OPEN, T0 + 30000, T0),
                             b = circuit("wikimedia", BREAKER_CLOSED, 0, T0 + 10), *v;
        size_t n;

        ck_assert_int_eq(store_circuit_put(s, &b), 0);
        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        ck_assert_int_eq(store_circuit_list(s, 0, &v, &n), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(v[0].source, "openverse");
        ck_assert_int_eq(v[0].state, BREAKER_OPEN);
        ck_assert_int_eq(v[0].consecutive_failures, 5);
        ck_assert_int_eq(v[0].trips, 2);
        ck_assert_int_eq(v[0].opened_at, T0);
        ck_assert_int_eq(v[0].retry_at, T0 + 30000);
        ck_assert_int_eq(v[0].open_ms, 30000);
        ck_assert_str_eq(v[0].last_error, "HTTP 503");
        ck_assert_ptr_null(v[0].probe_owner);
        ck_assert_int_eq(v[0].probe_until, 0);
        ck_assert_int_eq(v[0].updated_at, T0);
        ck_assert_str_eq(v[1].source, "wikimedia");
        ck_assert_int_eq(v[1].state, BREAKER_CLOSED);
        ck_assert_ptr_null(v[1].last_error);
        store_circuits_free(v, n);
        ck_assert_int_eq(store_circuit_list(s, T0 + 1, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].source, "wikimedia");
        store_circuits_free(v, n);

        /* the probe: not before retry_at, then one node at a time */
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-a", T0 + 29999, 5000), -EBUSY);
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-a", T0 + 30000, 5000), 0);
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-b", T0 + 31000, 5000), -EBUSY);
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-a", T0 + 31000, 5000), 0);
        ck_assert_int_eq(store_circuit_list(s, T0 + 31000, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(v[0].state, BREAKER_HALF_OPEN);
        ck_assert_str_eq(v[0].probe_owner, "node-a");
        ck_assert_int_eq(v[0].probe_until, T0 + 36000);
        store_circuits_free(v, n);
        /* node-a's hold ran out: node-b takes it */
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-b", T0 + 36000, 5000), 0);
        /* a closed circuit has no probe to take; an unknown one is not there */
        ck_assert_int_eq(store_circuit_take_probe(s, "wikimedia", "node-a", T0 + 50000, 5000), -EBUSY);
        ck_assert_int_eq(store_circuit_take_probe(s, "nosuch", "node-a", T0, 5000), -ENOENT);

        /* the probe's success closes it: a put replaces everything */
        a = circuit("openverse", BREAKER_CLOSED, 0, T0 + 40000);
        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        ck_assert_int_eq(store_circuit_list(s, T0 + 40000, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(v[0].state, BREAKER_CLOSED);
        ck_assert_ptr_null(v[0].probe_owner);
        store_circuits_free(v, n);

        ck_assert_int_eq(store_circuit_delete(s, "openverse"), 0);
        ck_assert_int_eq(store_circuit_delete(s, "openverse"), -ENOENT);
        a.state = 3;
        ck_assert_int_eq(store_circuit_put(s, &a), -EINVAL);
        a = circuit("", BREAKER_OPEN, 0, T0);
        ck_assert_int_eq(store_circuit_put(s, &a), -EINVAL);
        ck_assert_int_eq(store_begin(s), 0);
        ck_assert_int_eq(store_circuit_take_probe(s, "wikimedia", "node-a", T0, 5000), -EINVAL);
        ck_assert_int_eq(store_rollback(s), 0);
        store_close(s);
}
END_TEST

/* A node writing its half-open circuit (its own probe's start, a failure
 * count) keeps the probe's holder: another node must still wait for it.
 * Any other state written clears the hold. */
START_TEST(test_circuit_put_keeps_probe)
{
        struct store *s = open_store();
        struct store_circuit a = circuit("openverse", BREAKER_OPEN, T0 + 30000, T0), *v;
        size_t n;

        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-a", T0 + 30000, 5000), 0);
        a = circuit("openverse", BREAKER_HALF_OPEN, T0 + 30000, T0 + 30010);
        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        ck_assert_int_eq(store_circuit_list(s, 0, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(v[0].state, BREAKER_HALF_OPEN);
        ck_assert_ptr_nonnull(v[0].probe_owner);
        ck_assert_str_eq(v[0].probe_owner, "node-a");
        ck_assert_int_eq(v[0].probe_until, T0 + 35000);
        ck_assert_int_eq(v[0].updated_at, T0 + 30010);
        store_circuits_free(v, n);
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-b", T0 + 31000, 5000), -EBUSY);

        /* the probe failed: open again, the hold is gone with the half-open state */
        a = circuit("openverse", BREAKER_OPEN, T0 + 60000, T0 + 32000);
        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        ck_assert_int_eq(store_circuit_list(s, 0, &v, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(v[0].state, BREAKER_OPEN);
        ck_assert_ptr_null(v[0].probe_owner);
        ck_assert_int_eq(v[0].probe_until, 0);
        store_circuits_free(v, n);
        /* half-open written over open sets no holder of its own */
        a = circuit("openverse", BREAKER_HALF_OPEN, T0 + 60000, T0 + 60000);
        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        ck_assert_int_eq(store_circuit_list(s, 0, &v, &n), 0);
        ck_assert_ptr_null(v[0].probe_owner);
        store_circuits_free(v, n);
        ck_assert_int_eq(store_circuit_take_probe(s, "openverse", "node-b", T0 + 60000, 5000), 0);
        store_close(s);
}
END_TEST

struct prober {
        const char *node;
        int err;
};

static void *probe_thread(void *arg)
{
        struct prober *p = arg;
        struct store *s = NULL;

        p->err = store_open(url, &s);
        if (p->err == 0)
                p->err = store_circuit_take_probe(s, "openverse", p->node, T0 + 60000, 5000);
        store_close(s);
        return NULL;
}

/* Four connections after the same probe at once: exactly one gets it. */
START_TEST(test_probe_race)
{
        struct store *s = open_store();
        struct store_circuit a = circuit("openverse", BREAKER_OPEN, T0 + 30000, T0);
        struct prober p[4] = {{"node-a", 0}, {"node-b", 0}, {"node-c", 0}, {"node-d", 0}};
        pthread_t t[4];
        int won = 0;

        ck_assert_int_eq(store_circuit_put(s, &a), 0);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, probe_thread, &p[i]), 0);
        for (int i = 0; i < 4; i++) {
                ck_assert_int_eq(pthread_join(t[i], NULL), 0);
                ck_assert(p[i].err == 0 || p[i].err == -EBUSY);
                won += p[i].err == 0;
        }
        ck_assert_int_eq(won, 1);
        store_close(s);
}
END_TEST

/* ---- notifications ------------------------------------------------------------------------- */

static bool readable(int fd, int ms)
{
        struct pollfd p = {.fd = fd, .events = POLLIN};
        return poll(&p, 1, ms) == 1;
}

START_TEST(test_notify)
{
        struct store *s = open_store(), *w = open_store();
        struct job *j = job_make(T0, JOB_QUEUED, 0), *k = job_make(T0, JOB_QUEUED, 0);
        struct store_claim *c;
        bool any = true;
        int64_t token;
        int fd;

        if (backend == BE_SQLITE) {
                ck_assert_int_eq(store_notify_fd(s), -EOPNOTSUPP);
                ck_assert_int_eq(store_notify_drain(s, &any), 0);
                ck_assert(!any);
                goto out;
        }
        fd = store_notify_fd(s);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(!any);

        /* an insert wakes the listener when it commits, not before */
        ck_assert_int_eq(store_begin(w), 0);
        ck_assert_int_eq(store_job_insert(w, j, NULL, 0), 0);
        ck_assert(!readable(fd, 200));
        ck_assert_int_eq(store_commit(w), 0);
        ck_assert(readable(fd, 5000));
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(any);
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(!any);

        /* a rolled-back insert never does */
        ck_assert_int_eq(store_begin(w), 0);
        ck_assert_int_eq(store_job_insert(w, k, NULL, 0), 0);
        ck_assert_int_eq(store_rollback(w), 0);
        ck_assert(!readable(fd, 300));

        /* claims and takes do; so does the listener's own write, which
         * arrives with its answer (drain before sleeping) */
        c = claim(w, "node-b", 1, T0, 1);
        free(c);
        ck_assert(readable(fd, 5000));
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(any);
        ck_assert_int_eq(store_lease_take(s, j->id, "node-a", T0, LEASE, &token), 0);
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(any);
        /* an empty claim does not */
        c = claim(w, "node-b", 1, T0, 0);
        ck_assert(!readable(fd, 300));
out:
        job_free(j);
        job_free(k);
        store_close(w);
        store_close(s);
}
END_TEST

#ifdef HAVE_LIBPQ
/* ---- PostgreSQL: the connection ------------------------------------------------------------- */

/* End this test's store connections from the server's side. */
static void kill_connections(void)
{
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = "
                 "'%s'",
                 schema);
        ck_assert_int_ge(sql_int(sql), 1);
        usleep(100 * 1000);
}

/* A lost connection fails the call that meets it; the next reconnects,
 * prepares again, listens again and says it may have missed something. */
START_TEST(test_reconnect)
{
        struct store *s = open_store(), *w = open_store();
        struct job *j = insert_job(s, T0, JOB_QUEUED, 0), *g = NULL, *k;
        bool any = false;
        int fd;

        ck_assert_int_ge(store_notify_fd(s), 0);
        kill_connections();
        ck_assert_int_eq(store_job_get(s, j->id, &g), -ECONNRESET);
        ck_assert_int_eq(store_check(s), -ECONNRESET);
        g = get_job(s, j->id); /* reconnected; the prepared statement is made again */
        job_free(g);
        ck_assert_int_eq(store_check(s), 0);
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(any);
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(!any);
        fd = store_notify_fd(s);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(store_check(w), -ECONNRESET); /* w finds out on its next call */
        k = insert_job(w, T0, JOB_QUEUED, 0);          /* and reconnects on the one after */
        ck_assert(readable(fd, 5000));
        ck_assert_int_eq(store_notify_drain(s, &any), 0);
        ck_assert(any);

        /* lost inside a batch: the batch fails to the end, then all is well */
        ck_assert_int_eq(store_begin(s), 0);
        j->progress.total = 5;
        ck_assert_int_eq(store_job_update(s, j), 0);
        kill_connections();
        ck_assert_int_eq(store_job_update(s, j), -ECONNRESET);
        ck_assert_int_eq(store_job_update(s, j), -ECONNRESET);
        ck_assert_int_eq(store_commit(s), -ECONNRESET);
        ck_assert_int_eq(store_rollback(s), 0);
        usleep(1100 * 1000); /* reconnecting waits a second after the last try */
        g = get_job(s, j->id);
        ck_assert_int_eq(g->progress.total, 0);
        job_free(g);
        job_free(j);
        job_free(k);
        store_close(w);
        store_close(s);
}
END_TEST

/* A failure inside a batch ends it on the server: the commit says so. */
START_TEST(test_batch_aborted)
{
        struct store *s = open_store();
        struct job *j = insert_job(s, T0, JOB_QUEUED, 0), *k = job_make(T0, JOB_QUEUED, 0), *g = NULL;
        char sql[128];

        sql_exec("ALTER TABLE jobs ADD CONSTRAINT no_big_totals CHECK (total < 100) NOT VALID");
        ck_assert_int_eq(store_begin(s), 0);
        ck_assert_int_eq(store_job_insert(s, k, NULL, 0), 0);
        j->progress.total = 1000;
        ck_assert_int_eq(store_job_update(s, j), -EIO);
        ck_assert_int_eq(store_commit(s), -EIO);
        ck_assert_int_eq(store_job_get(s, k->id, &g), -ENOENT);
        ck_assert_int_eq(store_rollback(s), 0);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs");
        ck_assert_int_eq(sql_int(sql), 1);
        job_free(j);
        job_free(k);
        store_close(s);
}
END_TEST

/* A row held by another transaction for longer than the lock timeout
 * (5 s) is -EBUSY, and the connection stays usable. */
START_TEST(test_lock_timeout)
{
        struct store *s = open_store();
        struct job *j = insert_job(s, T0, JOB_QUEUED, 0), *g;
        char sql[128];
        double t0;

        snprintf(sql, sizeof(sql), "BEGIN; SELECT 1 FROM jobs WHERE id = '%s' FOR UPDATE", j->id);
        sql_exec(sql);
        j->progress.total = 3;
        t0 = now_ms();
        ck_assert_int_eq(store_job_update(s, j), -EBUSY);
        ck_assert_double_ge(now_ms() - t0, 4500);
        sql_exec("ROLLBACK");
        ck_assert_int_eq(store_job_update(s, j), 0);
        g = get_job(s, j->id);
        ck_assert_int_eq(g->progress.total, 3);
        job_free(g);
        job_free(j);
        store_close(s);
}
END_TEST

/* A role that may use the tables but not create any: a migrated schema
 * opens; a new one is refused with -EACCES. */
START_TEST(test_no_create_privilege)
{
        const char *base = getenv("HAULD_TEST_PG_URL");
        PQconninfoOption *o = PQconninfoParse(base, NULL);
        const char *host = NULL, *port = NULL, *db = NULL;
        struct store *s = open_store(), *r = NULL;
        char sql[1024], u[2048], role[80];
        struct store_claim *c;
        struct job *j;

        ck_assert_ptr_nonnull(o);
        for (PQconninfoOption *p = o; p->keyword; p++) {
                if (strcmp(p->keyword, "host") == 0)
                        host = p->val;
                else if (strcmp(p->keyword, "port") == 0)
                        port = p->val;
                else if (strcmp(p->keyword, "dbname") == 0)
                        db = p->val;
        }
        ck_assert(host && port && db);
        snprintf(role, sizeof(role), "%s_user", schema);
        snprintf(sql, sizeof(sql),
                 "CREATE ROLE %s LOGIN PASSWORD 'pw'; GRANT USAGE ON SCHEMA %s TO %s;"
                 " GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s;"
                 " GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %s TO %s",
                 role, schema, role, schema, role, schema, role);
        sql_exec(sql);
        snprintf(u, sizeof(u), "postgresql://%s:pw@%s:%s/%s?options=-csearch_path%%3D%s", role, host, port,
                 db, schema);
        ck_assert_int_eq(store_open(u, &r), 0);
        j = insert_job(r, T0, JOB_QUEUED, 0);
        c = claim(r, "node-a", 1, T0, 1);
        free(c);
        store_close(r);
        r = NULL;

        snprintf(sql, sizeof(sql), "CREATE SCHEMA %s_new; GRANT USAGE ON SCHEMA %s_new TO %s", schema,
                 schema, role);
        sql_exec(sql);
        snprintf(u, sizeof(u), "postgresql://%s:pw@%s:%s/%s?options=-csearch_path%%3D%s_new", role, host,
                 port, db, schema);
        ck_assert_int_eq(store_open(u, &r), -EACCES);
        snprintf(u, sizeof(u), "postgresql://%s:wrong@%s:%s/%s", role, host, port, db);
        ck_assert_int_eq(store_open(u, &r), -EACCES);
        ck_assert_ptr_null(r);
        snprintf(sql, sizeof(sql), "DROP SCHEMA %s_new; DROP OWNED BY %s; DROP ROLE %s", schema, role, role);
        sql_exec(sql);
        PQconninfoFree(o);
        job_free(j);
        store_close(s);
}
END_TEST
#endif

static void add_cluster(TCase *tc, enum backend be)
{
        tcase_add_test(tc, test_claim_order);
        tcase_add_test(tc, test_claim_args);
        tcase_add_test(tc, test_claim_rescue);
        tcase_add_test(tc, test_claim_concurrent);
        tcase_add_test(tc, test_renew);
        tcase_add_test(tc, test_fence_take);
        tcase_add_test(tc, test_fence_row_lock);
        tcase_add_test(tc, test_tokens_monotonic);
        tcase_add_test(tc, test_recover_leases);
        tcase_add_test(tc, test_nodes);
        tcase_add_test(tc, test_circuits);
        tcase_add_test(tc, test_circuit_put_keeps_probe);
        tcase_add_test(tc, test_probe_race);
        tcase_add_test(tc, test_notify);
#ifdef HAVE_LIBPQ
        if (be == BE_PG) {
                tcase_add_test(tc, test_reconnect);
                tcase_add_test(tc, test_batch_aborted);
                tcase_add_test(tc, test_lock_timeout);
                tcase_add_test(tc, test_no_create_privilege);
        }
#endif
}

static Suite *cluster_suite(void)
{
        Suite *su = suite_create("store_cluster");
        add_backend_cases(su, "cluster", add_cluster, 60);
        return su;
}

int main(void) { return storetest_main(cluster_suite); }

/* writegate: one first-come, first-served lock per file among the writers
 * of one process.
 *
 * SQLite lets one connection write at a time, and a connection that finds
 * the file locked polls it (sleeping 1, 2, 5 ... 100 ms between tries). A
 * thread that commits back to back (the intake under many clients) takes
 * the lock again before a poller looks: the scheduler's turn waited
 * seconds. The connections of one file in one process therefore queue
 * here before BEGIN IMMEDIATE, and the lock goes to the longest waiter
 * when its holder leaves. Another process still meets SQLite's own lock. */
#pragma once
#include <stdint.h>
#include <sys/types.h>

struct writegate;

/* The gate of the file (dev, ino), shared by every caller in this process
 * that names the same file; writegate_put() drops the reference. */
int writegate_get(dev_t dev, ino_t ino, struct writegate **ret);
void writegate_put(struct writegate *g);

/* Wait for the gate, behind every earlier waiter, at most timeout_ms:
 * 0 when held, -EBUSY when the time ran out (nothing held then). */
int writegate_enter(struct writegate *g, int64_t timeout_ms);
/* Hand the gate to the longest waiter, or free it. */
void writegate_leave(struct writegate *g);
/* How many wait now (for tests). */
int writegate_waiting(struct writegate *g);

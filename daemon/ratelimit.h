/* Token bucket for a source's requests_per_second. Pure: the monotonic
 * time is an argument. ratelimit_take() answers with a wait in ms. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* Starts full. For a source: rate = requests_per_second and burst
 * = max(1, rate), one bucket per source shared by all its jobs. */
struct ratelimit {
        double rate;     /* tokens per second; <= 0: unlimited */
        double burst;    /* bucket size, tokens, >= 1 */
        double tokens;   /* tokens held at last_ms */
        int64_t last_ms; /* monotonic ms of the last refill */
        bool started;    /* last_ms is set */
};

void ratelimit_init(struct ratelimit *rl, double rate, double burst);
/* 0: a request may start now (a token is taken); else the ms to wait
 * before asking again (nothing taken). A clock going backwards is ignored. */
int64_t ratelimit_take(struct ratelimit *rl, int64_t now_ms);

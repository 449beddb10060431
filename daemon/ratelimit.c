/* ratelimit: a token bucket for a source's listing requests. Pure: the
 * monotonic time is an argument, so tests step it. Floats keep fractional
 * rates exact enough; the slack constants below absorb their rounding. */
#include "autoconfig.h"

#include "daemon/ratelimit.h"

#define RATELIMIT_EPSILON    1e-6 /* tokens: float slack when a wait ends exactly */
#define RATELIMIT_WAIT_SLACK 1e-7 /* ms: float slack before rounding a wait up; < EPSILON up to 1000/s */
#define RATELIMIT_WAIT_MAX   1e12 /* ms: caps the wait of a vanishing rate */

void ratelimit_init(struct ratelimit *rl, double rate, double burst)
{
        *rl = (struct ratelimit){
                .rate = rate > 0 ? rate : 0,
                .burst = burst >= 1 ? burst : 1,
        };
        rl->tokens = rl->burst;
}

static void ratelimit_refill(struct ratelimit *rl, int64_t now_ms)
{
        if (!rl->started) {
                rl->started = true;
                rl->last_ms = now_ms;
                return;
        }
        if (now_ms <= rl->last_ms)
                return;
        rl->tokens += (double)(now_ms - rl->last_ms) * rl->rate / 1000.0;
        if (rl->tokens > rl->burst)
                rl->tokens = rl->burst;
        rl->last_ms = now_ms;
}

int64_t ratelimit_take(struct ratelimit *rl, int64_t now_ms)
{
        double wait;
        int64_t ms;

        if (rl->rate <= 0)
                return 0;
        ratelimit_refill(rl, now_ms);
        if (rl->tokens >= 1.0 - RATELIMIT_EPSILON) {
                rl->tokens = rl->tokens > 1.0 ? rl->tokens - 1.0 : 0.0;
                return 0;
        }
        wait = (1.0 - rl->tokens) * 1000.0 / rl->rate;
        if (wait > RATELIMIT_WAIT_MAX)
                wait = RATELIMIT_WAIT_MAX;
        ms = (int64_t)wait;
        if ((double)ms < wait - RATELIMIT_WAIT_SLACK)
                ms++;
        return ms > 0 ? ms : 1;
}

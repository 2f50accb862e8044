#include "coalesce.h"

void coalesce_after_pass(coalesce *c, uint64_t start_ns, uint64_t took_ns, uint32_t written)
{
    uint64_t hold = 2 * took_ns;
    if (hold > COALESCE_HOLD_MAX_NS)
        hold = COALESCE_HOLD_MAX_NS;
    c->flush_after_ns = written >= COALESCE_MIN_SOCKETS ? start_ns + took_ns + hold : 0;
}

int coalesce_wait_ms(const coalesce *c, uint64_t now_ns, int timeout_ms)
{
    if (now_ns >= c->flush_after_ns)
        return 0;
    uint64_t ms = (c->flush_after_ns - now_ns) / 1000000u + 1; /* never early */
    return timeout_ms >= 0 && (uint64_t)timeout_ms <= ms ? timeout_ms : (int)ms;
}

#include "coalesce.h"

uint64_t coalesce_slice_begin(coalesce *c, uint64_t now_ns)
{
    if (!c->in_round) {
        c->in_round = true;
        c->round_start_ns = now_ns;
        c->round_frames = 0;
        c->round_writes = 0;
    }
    return now_ns + COALESCE_SLICE_NS;
}

bool coalesce_slice_end(coalesce *c, uint64_t now_ns, uint32_t writes, uint64_t frames,
                        bool round_done)
{
    c->round_writes += writes;
    c->round_frames += frames;
    c->flush_after_ns = 0;
    if (!round_done)
        return false;
    c->in_round = false;
    uint64_t took = now_ns - c->round_start_ns, batched = c->round_frames;
    if (took < COALESCE_BEHIND_NS || batched < COALESCE_MIN_BATCH * c->round_writes ||
        batched >= COALESCE_MAX_BATCH * c->round_writes)
        return false;
    c->flush_after_ns = now_ns + (took < COALESCE_HOLD_MAX_NS ? took : COALESCE_HOLD_MAX_NS);
    return true;
}

int coalesce_wait_ms(const coalesce *c, uint64_t now_ns, int timeout_ms)
{
    if (now_ns >= c->flush_after_ns)
        return 0;
    uint64_t ms = (c->flush_after_ns - now_ns) / 1000000u + 1; /* never early */
    return timeout_ms >= 0 && (uint64_t)timeout_ms <= ms ? timeout_ms : (int)ms;
}

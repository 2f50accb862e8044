/* Write coalescing: when a worker writes its dirty sockets. Pure: the caller
 * passes the clock (ns) and the counts.
 *
 * Sockets are written oldest-dirty first, in slices of about
 * COALESCE_SLICE_NS (the clock is read after each write) between which the
 * loop reads its sockets and its inbox again. A round is every socket dirty when it began. Frames published while a
 * round runs join the queues of the sockets it has not reached yet, so a
 * frame waits at most about one round, and when the worker is behind (long
 * rounds) each write carries more frames without anything being held.
 *
 * Holding the next round back on purpose pays only when the loop is behind
 * (the round took COALESCE_BEHIND_NS or more) and holding merges frames that
 * would otherwise cost a write each: the round's writes carried between
 * COALESCE_MIN_BATCH and COALESCE_MAX_BATCH frames on average. Then the next
 * round waits as long as this one took, at most COALESCE_HOLD_MAX_NS. A
 * server that keeps up (rounds of a few sockets, one frame each) never
 * holds, whatever stalled it once; one whose writes already carry many
 * frames (a closed-loop publisher at saturation) gains little CPU from a
 * hold and would lose throughput. The numbers behind each constant are in
 * BENCHMARKS.md ("Latency policy"). */
#ifndef HERALD_COALESCE_H
#define HERALD_COALESCE_H

#include <stdbool.h>
#include <stdint.h>

#define COALESCE_SLICE_NS (1000000ull)
#define COALESCE_BEHIND_NS (5 * 1000000ull)
#define COALESCE_HOLD_MAX_NS (20 * 1000000ull)
#define COALESCE_MIN_BATCH 2
#define COALESCE_MAX_BATCH 16

typedef struct coalesce {
    uint64_t flush_after_ns; /* no slice before this (0: at once) */
    uint64_t round_start_ns;
    uint64_t round_frames; /* data frames its slices wrote */
    uint64_t round_writes; /* connections its slices visited */
    bool in_round;
} coalesce;

/* Whether a slice may run now. */
static inline bool coalesce_due(const coalesce *c, uint64_t now_ns)
{
    return now_ns >= c->flush_after_ns;
}

/* Before a slice that starts at now_ns (the first of a round starts the
 * round). Returns the slice's deadline. */
uint64_t coalesce_slice_begin(coalesce *c, uint64_t now_ns);

/* After the slice: it visited `writes` connections, which wrote `frames` data
 * frames, and finished its round when round_done. Decides when the next slice
 * may run, and says whether it holds it back. A visit that could not write
 * (a full socket) counts with no frames, so slow readers make holds rarer,
 * never more frequent. */
bool coalesce_slice_end(coalesce *c, uint64_t now_ns, uint32_t writes, uint64_t frames,
                        bool round_done);

/* The wait (ms, rounded up) until a held slice is due, at most timeout_ms
 * (negative: no limit of its own). */
int coalesce_wait_ms(const coalesce *c, uint64_t now_ns, int timeout_ms);

#endif

/* Write coalescing: when to run a worker's next flush pass. A pass that
 * wrote to many sockets (a large fan-out, where each write carries one frame
 * and syscalls are the cost) holds the next pass back for twice as long as
 * it took, capped: under load more frames then share each write on both
 * ends, while passes over fewer sockets (and every idle server) flush at
 * once, so closed-loop publishers are not slowed. Measured in BENCHMARKS.md
 * (S2 vs S3). Pure: the caller passes the clock (ns) and the counts. */
#ifndef HERALD_COALESCE_H
#define HERALD_COALESCE_H

#include <stdbool.h>
#include <stdint.h>

#define COALESCE_HOLD_MAX_NS (20 * 1000000ull)
#define COALESCE_MIN_SOCKETS 1024

typedef struct coalesce {
    uint64_t flush_after_ns; /* no flush pass before this (0: at once) */
} coalesce;

/* Whether a flush pass may run now. */
static inline bool coalesce_due(const coalesce *c, uint64_t now_ns)
{
    return now_ns >= c->flush_after_ns;
}

/* A flush pass that started at start_ns took took_ns and wrote to `written`
 * sockets: decides when the next one may run. */
void coalesce_after_pass(coalesce *c, uint64_t start_ns, uint64_t took_ns, uint32_t written);

/* The wait (ms, rounded up) until a held pass is due, at most timeout_ms
 * (negative: no limit of its own). */
int coalesce_wait_ms(const coalesce *c, uint64_t now_ns, int timeout_ms);

#endif

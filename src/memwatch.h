/* The process memory view and the --max-memory ceiling. Where memory goes is
 * summed from counters each module keeps (history and group records in chan,
 * queues and connections in each worker's metrics, OpenSSL through counting
 * allocators, inbox rings); RSS comes from /proc. Worker 0's tick samples
 * RSS and raises or clears the pressure flag the edges and workers act on. */
#ifndef HERALD_MEMWATCH_H
#define HERALD_MEMWATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"

struct server;
struct worker;

/* Fills the view (summed over workers; racy reads of gauges, fine for a view). */
void memwatch_collect(struct server *s, metrics_memory *out);

/* Worker 0, every tick: RSS sample, pressure on at 90 % of --max-memory and
 * off below 80 %; while on, history is shrunk by the excess and freed pages
 * are handed back to the kernel. */
void memwatch_tick(struct server *s, uint64_t now_ms);

#endif

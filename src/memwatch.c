#include "memwatch.h"
#include "deflate.h"

#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include "chan.h"
#include "server.h"
#include "tls.h"
#include "worker.h"

/* Groups whose history one tick may drop under pressure: the rest next tick,
 * so worker 0's clients never wait for a whole table. */
#define MEMWATCH_EVICT_BATCH 4096

static uint64_t memwatch_last_trim_ms; /* worker 0 only */

static uint64_t memwatch_read_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return n == 2 ? resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static bool memwatch_pressure(const server *s)
{
    return atomic_load_explicit(&s->mem_pressure, memory_order_relaxed);
}

void memwatch_collect(server *s, metrics_memory *out)
{
    *out = (metrics_memory){0};
    out->history = chan_history_bytes();
    uint64_t all = msg_memory();
    out->messages = all > out->history ? all - out->history : 0;
    out->groups = chan_record_total();
    out->evictions = chan_evictions();
    out->tls_record_errors = tls_record_errors();
    out->tls = tls_memory();
    out->deflate = deflate_memory();
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        out->queues += atomic_load_explicit(&w->m.queue_arrays, memory_order_relaxed);
        out->connections += atomic_load_explicit(&w->m.conn_memory, memory_order_relaxed);
        out->inbox += inbox_memory(&w->dl.in);
    }
    out->rss = memwatch_read_rss(); /* fresh: the tick's sample may predate a shrink */
    out->limit = config_get()->max_memory;
    out->pressure = memwatch_pressure(s);
}

void memwatch_tick(server *s, uint64_t now_ms)
{
    uint64_t rss = memwatch_read_rss(), limit = config_get()->max_memory;
    bool on = memwatch_pressure(s);
    if (!limit) {
        if (on)
            atomic_store_explicit(&s->mem_pressure, false, memory_order_relaxed);
        return;
    }
    if (!on && rss >= limit / 10 * 9)
        atomic_store_explicit(&s->mem_pressure, on = true, memory_order_relaxed);
    else if (on && rss < limit / 10 * 8)
        atomic_store_explicit(&s->mem_pressure, on = false, memory_order_relaxed);
    if (!on)
        return;
    /* Give up as much history as we are over the low mark, oldest groups
     * first; then hand the freed pages back so RSS shows it. */
    uint64_t excess = rss - limit / 10 * 8, hist = chan_history_bytes();
    size_t evicted = chan_enforce_budget(hist > excess ? hist - excess : 0, MEMWATCH_EVICT_BATCH);
    /* Trimming walks the heap: only after freeing something, or once a second. */
    if (evicted || now_ms >= memwatch_last_trim_ms + 1000) {
        memwatch_last_trim_ms = now_ms;
        malloc_trim(0);
    }
}

#include "worker.h"

#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "chan.h"
#include "conn.h"
#include "conn_sse_route.h"
#include "deflate.h"

#define WORKER_TICK_MS 100

static int worker_before_wait(void *ctx, int timeout_ms);
static void worker_after_events(void *ctx);
static void worker_tick(void *ctx);

static const loop_hooks worker_hooks = {worker_before_wait, worker_after_events, worker_tick};

/* A subscriber released from the cluster hold: a stream starts now. */
static void worker_on_release(conn *c)
{
    if (c->sse)
        conn_sse_begin(c);
}

int worker_init(worker *w, const worker_deps *deps, int id, int listen_fd)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->deps = deps;
    /* Set before anything can fail: worker_cleanup closes the listener and
     * the inbox's eventfd, and must not take descriptor 0 for either. */
    w->ls = (listener){.fd = listen_fd, .reserve_fd = -1, .env = &w->env};
    w->dl.in.efd = -1;
    w->loop.epfd = -1;
    w->env = (conn_env){.cfg = deps->cfg, .loop = &w->loop, .m = &w->m, .tls = deps->tls,
                        .dl = &w->dl, .forget = delivery_forget, .start_ms = deps->start_ms,
                        .pressure = deps->pressure, .metrics_text = deps->metrics_text,
                        .owner = deps->owner};
    w->env.scratch_cap = 65536 + w->env.cfg->max_header_size;
    w->env.scratch = malloc(w->env.scratch_cap);
    atomic_init(&w->stop, 0);
    atomic_init(&w->seen_generation, 0);
    atomic_init(&w->done, false);
    if (!loop_init(&w->loop, WORKER_TICK_MS, &worker_hooks, w) || !w->env.scratch ||
        !delivery_init(&w->dl, deps->hub, id, &w->loop, &w->env.cfg, &w->m))
        return -1;
    w->dl.on_release = worker_on_release;
    return listener_init(&w->ls, listen_fd, &w->env) ? 0 : -1;
}

struct conn *worker_adopt(worker *w, int fd, const struct sockaddr_storage *peer)
{
    return listener_adopt(&w->ls, fd, peer);
}

/* Shards of the process-wide group table each worker visits per tick: with
 * 64 shards and 100 ms ticks, two workers cover it every 1.6 s. */
#define WORKER_SWEEP_SHARDS 2
/* Under memory pressure each tick sheds the largest WebSocket queue above this. */
#define WORKER_SHED_MIN 65536
/* Groups whose history one tick may evict for --history-memory. */
#define WORKER_EVICT_BATCH 4096

static void worker_tick(void *ctx)
{
    worker *w = ctx;
    /* Backwards: conn_tick may destroy, which moves the last entry here. */
    for (uint32_t i = w->env.nconns; i-- > 0;)
        conn_tick(w->env.conns[i], w->loop.now_ms);
    /* In a cluster, groups are forgotten only while Redis (which owns the
     * offsets) is reachable: during an outage this node numbers messages
     * itself and must not restart a group's offsets. */
    chan_history_cfg hc = delivery_history_cfg(&w->dl);
    if (!broker_enabled() || broker_up())
        chan_sweep(WORKER_SWEEP_SHARDS, &hc, w->loop.now_ms, w->env.cfg->group_linger_ms);
    if (hc.memory)
        chan_enforce_budget(hc.memory, WORKER_EVICT_BATCH);
    if (w->id == 0 && w->deps->memory_tick)
        w->deps->memory_tick(w->deps->owner, w->loop.now_ms);
    /* Over the memory mark: the largest queue goes first. */
    if (conn_env_pressure(&w->env))
        conn_shed_largest(&w->env, WORKER_SHED_MIN, "server memory limit");
}


/* Picks up a reloaded configuration between loop passes; advertising the
 * generation tells the reloader this worker no longer holds the old one. */
static void worker_refresh_config(worker *w)
{
    const config *c = config_get();
    if (c != w->env.cfg) {
        size_t need = 65536 + c->max_header_size;
        if (need > w->env.scratch_cap) {
            uint8_t *s = realloc(w->env.scratch, need);
            if (s) {
                w->env.scratch = s;
                w->env.scratch_cap = need;
            }
        }
        w->env.cfg = c;
    }
    atomic_store_explicit(&w->seen_generation, c->generation, memory_order_release);
}

static void worker_check_stop(worker *w)
{
    int stop = atomic_load_explicit(&w->stop, memory_order_acquire);
    if (!stop)
        return;
    if (!w->drain.active) {
        /* Whatever was published before the stop reaches its subscribers
         * ahead of their close frames. */
        delivery_drain(&w->dl);
        listener_close(&w->ls);
        drain_begin(&w->drain, &w->env, stop == 2);
    } else if (w->drain.restart && stop == 1) { /* a second, impatient signal */
        drain_hurry(&w->drain, &w->env);
    }
}

static int worker_before_wait(void *ctx, int timeout)
{
    worker *w = ctx;
    /* Sockets left to write: the next slice when a hold ends (at once if
     * none), and at once while draining, which holds nothing. */
    if (w->env.dirty)
        timeout = w->drain.active ? 0 : coalesce_wait_ms(&w->coalesce, loop_clock_ns(), timeout);
    return timeout;
}

/* One slice of the current write round (src/coalesce.h). */
static void worker_flush_slice(worker *w)
{
    uint64_t now = loop_clock_ns();
    if (!w->env.dirty || (!coalesce_due(&w->coalesce, now) && !w->drain.active))
        return;
    bool done;
    uint64_t frames = METRIC_GET(&w->m, deliveries);
    uint32_t writes = conn_flush_dirty(&w->env, coalesce_slice_begin(&w->coalesce, now), &done);
    frames = METRIC_GET(&w->m, deliveries) - frames;
    METRIC_INC(&w->m, write_slices);
    if (coalesce_slice_end(&w->coalesce, loop_clock_ns(), writes, frames, done))
        METRIC_INC(&w->m, write_holds);
    if (done)
        METRIC_INC(&w->m, write_rounds);
}

/* After the pass's events: the broker (worker 0), the inbox, the cluster
 * hold, a stop, a slice of writes, a paused listener. */
static void worker_after_events(void *ctx)
{
    worker *w = ctx;
    if (w->id == 0)
        broker_poll(w->loop.now_ms);
    delivery_drain(&w->dl);
    delivery_check_held(&w->dl);
    worker_check_stop(w);
    if (w->drain.active && w->drain.restart)
        drain_step(&w->drain, &w->env);
    worker_flush_slice(w);
    listener_resume_due(&w->ls);
}

bool worker_run_pass(worker *w, int max_wait_ms)
{
    worker_refresh_config(w);
    uint64_t busy = loop_pass(&w->loop, max_wait_ms);
    conn_env_pass_end(&w->env);
    METRIC_ADD(&w->m, busy_ns, busy);
    return !drain_done(&w->drain, &w->env);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    while (worker_run_pass(w, WORKER_TICK_MS))
        ;
    deflate_thread_done();
    atomic_store_explicit(&w->done, true, memory_order_release);
    return NULL;
}

int worker_start(worker *w) { return pthread_create(&w->thread, NULL, worker_main, w); }

void worker_join(worker *w) { pthread_join(w->thread, NULL); }

void worker_wake(worker *w) { inbox_wake(&w->dl.in); }

void worker_request_stop(worker *w, bool restart)
{
    int want = restart ? 2 : 1, cur = atomic_load(&w->stop);
    /* 0 -> anything; 2 (drain) -> 1 (now); never back. */
    while ((cur == 0 || (cur == 2 && want == 1)) &&
           !atomic_compare_exchange_weak(&w->stop, &cur, want))
        ;
    worker_wake(w);
}

/* After every worker has stopped: nothing can push into any inbox any more. */
void worker_cleanup(worker *w)
{
    conn_env_cleanup(&w->env);
    delivery_destroy(&w->dl);
    free(w->env.scratch);
    deflate_thread_done(); /* a worker driven from this thread (tests, fuzzer) */
    listener_close(&w->ls);
    loop_close(&w->loop);
}

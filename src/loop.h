/* The event loop of one worker thread: epoll, one handler per descriptor, a
 * per-pass hook and a periodic tick. It knows neither connections nor
 * brokers: whatever owns a descriptor embeds a loop_handler (first, by
 * convention) and gets its events through on_io. */
#ifndef HERALD_LOOP_H
#define HERALD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loop_handler loop_handler;
typedef void (*loop_io_fn)(loop_handler *h, uint32_t events);
struct loop_handler {
    loop_io_fn on_io;
};

/* What the owner does around each pass: before_wait may shorten the wait
 * (a flush due sooner), after_events runs once per pass after the events,
 * tick every tick_ms. */
typedef struct loop_hooks {
    int (*before_wait)(void *ctx, int timeout_ms);
    void (*after_events)(void *ctx);
    void (*tick)(void *ctx);
} loop_hooks;

#define LOOP_BATCH 256

typedef struct loop {
    int epfd;
    uint64_t now_ms;       /* the clock at the start of the pass's events */
    uint64_t next_tick_ms;
    uint32_t tick_ms;
    const loop_hooks *hooks;
    void *ctx;
    /* The batch being dispatched: a handler deleted mid-pass has its
     * remaining events dropped, so its memory may go at once. */
    void *batch;
    int batch_n;
} loop;

bool loop_init(loop *l, uint32_t tick_ms, const loop_hooks *hooks, void *ctx);
void loop_close(loop *l);
/* events: EPOLLIN/EPOLLOUT/... as for epoll_ctl. 0 on success, -1 (errno). */
int loop_add(loop *l, int fd, loop_handler *h, uint32_t events);
int loop_mod(loop *l, int fd, loop_handler *h, uint32_t events);
int loop_del(loop *l, int fd, loop_handler *h);

/* One pass: waits up to max_wait_ms (or less, see before_wait), dispatches
 * the events, runs after_events, and the tick when due. Returns the time
 * spent busy (not waiting), in ns. */
uint64_t loop_pass(loop *l, int max_wait_ms);

uint64_t loop_clock_ns(void);
uint64_t loop_clock_ms(void);

#endif

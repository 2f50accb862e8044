#include "loop.h"

#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

uint64_t loop_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t loop_clock_ms(void) { return loop_clock_ns() / 1000000u; }

bool loop_init(loop *l, uint32_t tick_ms, const loop_hooks *hooks, void *ctx)
{
    *l = (loop){.tick_ms = tick_ms, .hooks = hooks, .ctx = ctx};
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->now_ms = loop_clock_ms();
    l->next_tick_ms = l->now_ms + tick_ms;
    return l->epfd >= 0;
}

void loop_close(loop *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
}

static int loop_ctl(loop *l, int op, int fd, loop_handler *h, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(l->epfd, op, fd, &ev);
}

int loop_add(loop *l, int fd, loop_handler *h, uint32_t events)
{
    return loop_ctl(l, EPOLL_CTL_ADD, fd, h, events);
}

int loop_mod(loop *l, int fd, loop_handler *h, uint32_t events)
{
    return loop_ctl(l, EPOLL_CTL_MOD, fd, h, events);
}

int loop_del(loop *l, int fd, loop_handler *h)
{
    struct epoll_event *evs = l->batch;
    for (int i = 0; i < l->batch_n; i++)
        if (evs[i].data.ptr == h)
            evs[i].data.ptr = NULL;
    return fd >= 0 ? epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL) : 0;
}

uint64_t loop_pass(loop *l, int max_wait_ms)
{
    struct epoll_event evs[LOOP_BATCH];
    int timeout = max_wait_ms;
    if (l->hooks->before_wait)
        timeout = l->hooks->before_wait(l->ctx, timeout);
    int n = epoll_wait(l->epfd, evs, LOOP_BATCH, timeout);
    uint64_t t0 = loop_clock_ns();
    l->now_ms = t0 / 1000000u;
    l->batch = evs;
    l->batch_n = n > 0 ? n : 0;
    for (int i = 0; i < l->batch_n; i++) {
        loop_handler *h = evs[i].data.ptr;
        if (h)
            h->on_io(h, evs[i].events);
    }
    l->batch = NULL;
    l->batch_n = 0;
    if (l->hooks->after_events)
        l->hooks->after_events(l->ctx);
    if (l->now_ms >= l->next_tick_ms) {
        if (l->hooks->tick)
            l->hooks->tick(l->ctx);
        l->next_tick_ms = l->now_ms + l->tick_ms;
    }
    return loop_clock_ns() - t0;
}

#include "inbox.h"

#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

static void inbox_on_wake(loop_handler *h, uint32_t events)
{
    (void)events;
    inbox *ib = (inbox *)((char *)h - offsetof(inbox, wake));
    uint64_t v;
    ssize_t r = read(ib->efd, &v, sizeof v);
    (void)r;
    /* Cleared before the drain (after_events), so a push racing with it
     * wakes us again. */
    atomic_exchange_explicit(&ib->notified, false, memory_order_acq_rel);
}

bool inbox_init(inbox *ib, size_t cap, loop *l)
{
    memset(&ib->notified, 0, sizeof *ib - offsetof(inbox, notified));
    atomic_init(&ib->notified, false);
    atomic_init(&ib->overflow_used, false);
    atomic_init(&ib->overflow_bytes, 0);
    pthread_mutex_init(&ib->lock, NULL);
    ib->wake.on_io = inbox_on_wake;
    ib->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ib->efd < 0 || !ring_init(&ib->ring, cap))
        return false;
    return loop_add(l, ib->efd, &ib->wake, EPOLLIN) == 0;
}

void inbox_destroy(inbox *ib)
{
    if (!ib->ring.slots) { /* never initialised (a worker that failed to start) */
        if (ib->efd >= 0)
            close(ib->efd);
        ib->efd = -1;
        return;
    }
    msg *m;
    while ((m = ring_pop(&ib->ring)))
        msg_unref(m);
    for (size_t i = 0; i < ib->overflow.count; i++)
        msg_unref(ib->overflow.items[(ib->overflow.head + i) % ib->overflow.cap]);
    free(ib->overflow.items);
    ib->overflow = (inbox_fifo){0};
    pthread_mutex_destroy(&ib->lock);
    ring_destroy(&ib->ring);
    if (ib->efd >= 0)
        close(ib->efd);
    ib->efd = -1;
}

static bool inbox_fifo_push(inbox *ib, msg *m)
{
    inbox_fifo *f = &ib->overflow;
    if (f->count == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 256;
        msg **n = malloc(sizeof *n * nc);
        if (!n)
            return false;
        atomic_store_explicit(&ib->overflow_bytes, sizeof *n * nc, memory_order_relaxed);
        for (size_t i = 0; i < f->count; i++)
            n[i] = f->items[(f->head + i) % f->cap];
        free(f->items);
        f->items = n;
        f->cap = nc;
        f->head = 0;
    }
    f->items[(f->head + f->count++) % f->cap] = m;
    return true;
}

void inbox_push(inbox *ib, msg *m)
{
    if (!atomic_load_explicit(&ib->overflow_used, memory_order_acquire) && ring_push(&ib->ring, m))
        return;
    pthread_mutex_lock(&ib->lock);
    bool ok = inbox_fifo_push(ib, m);
    if (ok)
        atomic_store_explicit(&ib->overflow_used, true, memory_order_release);
    pthread_mutex_unlock(&ib->lock);
    if (!ok) {
        log_msg(LOG_ERROR, "out of memory: a message to '%.*s' lost for one worker",
                (int)m->group_len, m->group);
        msg_unref(m);
    }
}

void inbox_wake(inbox *ib)
{
    uint64_t one = 1;
    ssize_t r = write(ib->efd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is already non-zero, it will wake anyway */
}

void inbox_notify(inbox *ib)
{
    /* One wake-up per drain: later pushes see the flag still set. */
    if (!atomic_exchange_explicit(&ib->notified, true, memory_order_acq_rel))
        inbox_wake(ib);
}

void inbox_drain(inbox *ib, inbox_fn fn, void *ctx)
{
    for (;;) {
        msg *m;
        while ((m = ring_pop(&ib->ring))) {
            fn(ctx, m);
            msg_unref(m);
        }
        if (!atomic_load_explicit(&ib->overflow_used, memory_order_acquire))
            return;
        pthread_mutex_lock(&ib->lock);
        inbox_fifo f = ib->overflow;
        ib->overflow = (inbox_fifo){0};
        atomic_store_explicit(&ib->overflow_used, false, memory_order_release);
        atomic_store_explicit(&ib->overflow_bytes, 0, memory_order_relaxed);
        pthread_mutex_unlock(&ib->lock);
        for (size_t i = 0; i < f.count; i++) {
            m = f.items[(f.head + i) % f.cap];
            fn(ctx, m);
            msg_unref(m);
        }
        free(f.items);
    }
}

uint64_t inbox_memory(const inbox *ib)
{
    return ring_capacity(&ib->ring) * sizeof(ring_slot) +
           atomic_load_explicit(&ib->overflow_bytes, memory_order_relaxed);
}

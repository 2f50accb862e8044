/* Bounded lock-free ring of pointers, many producers and many consumers
 * (D. Vyukov's sequence-numbered slot design). Workers use it as their
 * inbox: any worker pushes message pointers, the owner pops them.
 *
 * Why this design: each slot carries a sequence number, so producers claim a
 * slot with one CAS on the tail and publish it with one release store to the
 * slot; the consumer never touches the producers' cache line. Head and tail
 * sit on separate cache lines so producers and the consumer do not false-share
 * (the seed article's padding fix). Capacity is fixed at creation: pushing
 * into a full ring fails instead of allocating. */
#ifndef HERALD_RING_H
#define HERALD_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define RING_CACHE_LINE 64

typedef struct ring_slot {
    atomic_size_t seq;
    void *item;
} ring_slot;

typedef struct ring {
    alignas(RING_CACHE_LINE) atomic_size_t tail; /* producers */
    alignas(RING_CACHE_LINE) atomic_size_t head; /* consumers */
    alignas(RING_CACHE_LINE) size_t mask;
    ring_slot *slots;
} ring;

/* capacity is rounded up to a power of two (minimum 2). Returns false on
 * allocation failure. */
static inline bool ring_init(ring *r, size_t capacity)
{
    size_t cap = 2;
    while (cap < capacity)
        cap <<= 1;
    r->slots = aligned_alloc(RING_CACHE_LINE, ((cap * sizeof(ring_slot)) + RING_CACHE_LINE - 1) /
                                                  RING_CACHE_LINE * RING_CACHE_LINE);
    if (!r->slots)
        return false;
    for (size_t i = 0; i < cap; i++) {
        atomic_init(&r->slots[i].seq, i);
        r->slots[i].item = NULL;
    }
    r->mask = cap - 1;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    return true;
}

static inline void ring_destroy(ring *r)
{
    free(r->slots);
    r->slots = NULL;
}

static inline size_t ring_capacity(const ring *r) { return r->mask + 1; }

/* Returns false when the ring is full. */
static inline bool ring_push(ring *r, void *item)
{
    size_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    for (;;) {
        ring_slot *s = &r->slots[pos & r->mask];
        size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->tail, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                s->item = item;
                atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
                return true;
            }
        } else if (dif < 0) {
            return false;
        } else {
            pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
        }
    }
}

/* Returns NULL when the ring is empty. NULL items are not allowed. */
static inline void *ring_pop(ring *r)
{
    size_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);
    for (;;) {
        ring_slot *s = &r->slots[pos & r->mask];
        size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                void *item = s->item;
                atomic_store_explicit(&s->seq, pos + r->mask + 1, memory_order_release);
                return item;
            }
        } else if (dif < 0) {
            return NULL;
        } else {
            pos = atomic_load_explicit(&r->head, memory_order_relaxed);
        }
    }
}

#endif

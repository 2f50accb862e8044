/* A worker's inbox: other threads hand it messages (one reference each)
 * without blocking. A bounded lock-free ring first; when the ring is full,
 * an ordered overflow list under a lock (no blocking, no loss, order kept:
 * once a message went to the list, later ones follow it there until the
 * owner has taken the list). One eventfd wake-up per drain. */
#ifndef HERALD_INBOX_H
#define HERALD_INBOX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "msg.h"
#include "ring.h"

typedef struct inbox_fifo {
    msg **items;
    size_t head, count, cap;
} inbox_fifo;

typedef struct inbox {
    ring ring; /* first: its cache-line-aligned indices stay on their own lines */
    atomic_bool notified;
    int efd;
    loop_handler wake; /* the eventfd's handler in the owner's loop */
    pthread_mutex_t lock;
    inbox_fifo overflow;
    atomic_bool overflow_used;
    _Atomic uint64_t overflow_bytes; /* the overflow list's array (memory view) */
} inbox;

/* A ring of cap slots, its eventfd registered in the owner's loop. */
bool inbox_init(inbox *ib, size_t cap, loop *l);
/* After the owner stopped: drops what is left (one reference each). */
void inbox_destroy(inbox *ib);

/* Producer side, any thread. The caller orders pushes (a group's lock), so
 * one group's messages arrive in order. Takes over the reference. */
void inbox_push(inbox *ib, msg *m);
/* Wakes the owner unless a wake-up is already pending since its last drain. */
void inbox_notify(inbox *ib);
/* Wakes the owner unconditionally (stop requests, reloads). */
void inbox_wake(inbox *ib);

/* Owner side: hands every waiting message to fn in order, then drops the
 * reference it held. */
typedef void (*inbox_fn)(void *ctx, msg *m);
void inbox_drain(inbox *ib, inbox_fn fn, void *ctx);

/* Bytes the inbox holds (ring slots and overflow array). */
uint64_t inbox_memory(const inbox *ib);

#endif

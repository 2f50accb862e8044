/* Delivery, per worker: publish, sequence, fan-out, subscribe/join with
 * history replay, and the cluster hold (subscribers whose 101 waits for the
 * broker's SUBSCRIBE). The equivalent of Redis' pubsub.c.
 *
 * A publish is sequenced once, under its group's lock (chan.c): it gets the
 * group's next offset (or the broker's), joins the history, and a reference
 * goes into every worker's inbox in offset order. Each worker then fans it
 * out to its own subscribers from its own group table, without locks. */
#ifndef HERALD_DELIVERY_H
#define HERALD_DELIVERY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.h"
#include "config.h"
#include "groups.h"
#include "inbox.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"

struct conn;

#define DELIVERY_MAX_WORKERS 64

/* Every worker's delivery: a sequenced message goes to all of them. */
typedef struct delivery_hub {
    struct delivery *v[DELIVERY_MAX_WORKERS];
    int n;
} delivery_hub;

typedef struct delivery {
    inbox in;               /* first: the ring's cache-line-aligned indices */
    delivery_hub *hub;
    const config **cfg;     /* the owner's snapshot in force */
    loop *loop;             /* the clock, and the broker's descriptors (worker 0) */
    metrics *m;
    group_table groups;     /* this worker's subscribers by group */
    struct conn **all;      /* every subscriber: broadcasts to all go here */
    uint32_t nall, cap_all;
    struct conn **held;
    uint32_t nheld, cap_held;
    atomic_bool check_held;
    /* A held subscriber went live (after its replays and notices): the
     * stream formats start here (conn_sse_begin). */
    void (*on_release)(struct conn *c);
} delivery;

/* The cluster broker as delivery sees it (broker_redis.c registers one when
 * --broker is set): publishes go up and come back sequenced; a group's first
 * and last local subscriber are announced. None: a single node. Set before
 * the workers start, read by every thread. */
typedef struct delivery_upstream {
    bool (*up)(void); /* connected and subscribed: publishes go through it */
    void (*publish)(msg *m);
    void (*subscribe)(const char *group, size_t len);
    void (*unsubscribe)(const char *group, size_t len);
} delivery_upstream;

void delivery_set_upstream(const delivery_upstream *u);
/* An upstream is configured (cluster mode). */
bool delivery_clustered(void);
/* ... and it is up. */
bool delivery_upstream_up(void);

bool delivery_init(delivery *d, delivery_hub *hub, int id, loop *l, const config **cfg,
                   metrics *m);
void delivery_destroy(delivery *d);

/* The history settings in force, for chan_append/chan_replay. */
chan_history_cfg delivery_history_cfg(const delivery *d);

/* Publishes a finished message from this worker: through the cluster broker
 * when there is one, else sequenced here. Consumes the caller's reference. */
void delivery_publish(delivery *d, msg *m);
/* Sequences m in its group (the next local offset, or the broker's) and
 * hands it to every worker's inbox. Consume the reference. */
void delivery_deliver_local(delivery *d, msg *m);
void delivery_deliver_sequenced(delivery *d, msg *m, uint64_t offset);

/* Fans out everything waiting in the inbox to this worker's subscribers. */
void delivery_drain(delivery *d);

/* Joins a group. With recover, first replays the kept messages after `since`
 * (or queues a recovery-failed notice) and joins so that live delivery
 * continues exactly after the replay. joined (/ws?joined=1, /sse): a plain
 * join first queues a notice with the offset it joins after, so the client
 * knows a quiet group's position; in a cluster, once the group's record is
 * filled (at release of the hold). */
bool delivery_subscribe(struct conn *c, const char *name, size_t len, bool recover, uint64_t since,
                        bool epoch_ok, bool joined);
/* A connection goes: leaves the cluster hold, its groups and the broadcast
 * list (the conn environment's forget hook). */
void delivery_forget(struct conn *c);
/* Adds a subscriber to the broadcast-to-all list. */
bool delivery_add_all(delivery *d, struct conn *c);

/* The cluster hold. */
bool delivery_hold(delivery *d, struct conn *c);
/* Once per pass: releases the held subscribers that are ready. */
void delivery_check_held(delivery *d);
/* Any thread: every worker re-checks its held subscribers. */
void delivery_release_held_all(delivery_hub *hub);

/* The frame of a published message for this subscriber: its envelope format,
 * compressed when it negotiated permessage-deflate (both shared, built once
 * per message); NULL when out of memory. No reference is taken. */
msg *delivery_frame(struct conn *c, msg *m);

#endif

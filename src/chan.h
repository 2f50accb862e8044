/* Channels: the process-wide, per-group sequencing point. Every publish to a
 * group takes the group's shard lock, gets the next offset, is appended to the
 * group's history and is pushed into every worker's inbox before the lock is
 * released. So every subscriber of a group, on any worker, sees its messages
 * in the same order, offsets increase by one, and a subscriber can join at an
 * exact offset (history replay then live, no gap, no duplicate).
 *
 * Why a lock here when the delivery path has none: this is the seed's
 * sharded-lock idea applied where an order must be agreed on. It is taken once
 * per publish (not per delivery), 64 shards keep unrelated groups apart, and
 * nothing inside it blocks. */
#ifndef HERALD_CHAN_H
#define HERALD_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

typedef struct chan chan;

typedef struct chan_history_cfg {
    size_t max;      /* messages kept per group (0: none) */
    uint64_t ttl_ms; /* 0: no age limit */
    size_t memory;   /* bytes of kept messages, all groups together (0: no limit) */
} chan_history_cfg;

/* local_offsets: this node issues offsets itself (no broker). Then a group
 * forgotten by chan_sweep leaves a floor behind so that its next incarnation
 * continues above every offset it had: offsets never repeat under an epoch.
 * With a broker, offsets come from Redis and no floor is kept. */
bool chan_init(bool local_offsets);

/* Group records currently held, and how many were forgotten so far. */
uint64_t chan_live(void);
uint64_t chan_reclaimed(void);

/* True when the group exists or one more may be created under max live
 * groups (the edges refuse new groups past it; internal paths may exceed it
 * by the publishes already accepted). */
bool chan_admit(const char *name, size_t len, int max);

/* --history-memory: while kept messages take more than budget bytes, drops
 * the whole history of the least recently published group (across shards),
 * at most max_groups of them; the last group left keeps its newest messages
 * that fit (at least one). Returns how many groups were dropped. Appends
 * also evict inline once 1/8 over, so the budget holds between calls. A
 * recovery into evicted history gets too_old. */
size_t chan_enforce_budget(size_t budget, size_t max_groups);

/* Memory view: bytes of kept messages (msg_footprint each), bytes of group
 * records with their history arrays, and groups evicted by the budget. */
uint64_t chan_history_bytes(void);
uint64_t chan_record_total(void);
uint64_t chan_evictions(void);

/* Visits the next `shards` shards (a process-wide cursor, so workers share
 * the walk): trims expired history and forgets groups with no subscribers
 * and no history that saw no publish for linger_ms. */
void chan_sweep(int shards, const chan_history_cfg *cfg, uint64_t now_ms, uint64_t linger_ms);

/* The longest epoch: a client hands it back in ?epoch= (/ws, /sse) and in an
 * SSE id, and a cluster's is whatever Redis holds (herald writes 16 hex
 * digits there; longer values are refused). */
#define CHAN_EPOCH_MAX 64

/* This node's history epoch: random at start, so offsets from an earlier
 * process (whose history is gone) are never mistaken for ours. */
const char *chan_epoch(void);
/* Increases with every epoch change: tells lineages apart cheaply. */
uint32_t chan_epoch_gen(void);
void chan_destroy(void);

/* Locks the shard of a group (len 0: the broadcast-to-all channel) and returns
 * its channel, created on first use; NULL on allocation failure (unlocked). */
chan *chan_lock(const char *name, size_t len);
void chan_unlock(chan *c);

/* With the lock held: assigns m the next offset and keeps it in the history
 * (taking a reference) according to cfg; now_ms for the TTL. */
void chan_append(chan *c, msg *m, const chan_history_cfg *cfg, uint64_t now_ms);

/* With the lock held: the same, for a message whose offset was assigned
 * elsewhere (the cluster broker). A jump in offsets clears the history: what
 * lies between was never seen here, so replays must not pretend otherwise. */
void chan_append_at(chan *c, msg *m, uint64_t offset, const chan_history_cfg *cfg,
                    uint64_t now_ms);

/* With the lock held. */
uint64_t chan_last_offset(const chan *c);
const char *chan_name(const chan *c, size_t *len);

/* With the lock held: local subscribers of the group across all workers
 * (true when this made it the first / the last; a group with subscribers is
 * never forgotten), and whether the cluster broker confirmed our
 * subscription to it. */
bool chan_subscriber_add(chan *c);
bool chan_subscriber_del(chan *c);
bool chan_confirmed(const chan *c);
uint32_t chan_subscribers(const chan *c);
void chan_set_confirmed(chan *c, bool yes);

/* Calls fn on every channel, each under its lock (for resubscribing after a
 * broker reconnect). */
void chan_foreach(void (*fn)(chan *c, void *arg), void *arg);

/* Forgets every channel's history and offsets: the node's history epoch is
 * changing (broker outage and recovery). */
void chan_reset_all(void);

/* Replaces the epoch (cluster mode: shared by the nodes, from the broker). */
void chan_set_epoch(const char *epoch);

/* Cluster, with the lock held: the node no longer follows the group (its last
 * local subscriber left and it unsubscribed at the broker). Its history is
 * dropped and, until a message arrives again, recoveries answer TOO_OLD:
 * publishes on other nodes meanwhile never reached us, so "nothing missed"
 * would be a silent loss. */
void chan_mark_stale(chan *c);

/* Cluster, with the lock held: Redis's view of the group arrived after our
 * SUBSCRIBE was confirmed: its last offset and its kept messages (ascending
 * offsets, each with m->offset set; references stay the caller's). Merged
 * with what arrived live meanwhile into one contiguous history; the record
 * is no longer stale. */
void chan_fill(chan *c, uint64_t last, msg **fetched, size_t n, const chan_history_cfg *cfg,
               uint64_t now_ms);

/* Confirmed at the broker and filled: a recovery here sees what Redis saw. */
bool chan_ready(const chan *c);

typedef enum chan_replay_result {
    CHAN_REPLAY_OK = 0,
    CHAN_REPLAY_TOO_OLD,    /* messages after `since` are no longer all kept */
    CHAN_REPLAY_FUTURE,     /* since is beyond the last offset: another history */
} chan_replay_result;

/* With the lock held: calls fn for each kept message with offset > since,
 * oldest first, after checking that none is missing. Expired messages
 * (ttl) count as missing. */
chan_replay_result chan_replay(chan *c, uint64_t since, const chan_history_cfg *cfg,
                               uint64_t now_ms, void (*fn)(void *arg, msg *m), void *arg);

#endif

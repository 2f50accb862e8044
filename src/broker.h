/* Cluster broker: with --broker redis://HOST:PORT[/DB] (or a Sentinel-managed
 * master, or a Redis Cluster: see broker_url.h), a publish on any node
 * reaches the subscribers of its group on every node, exactly once and in one
 * order. The broker runs inside worker 0's event loop (hiredis' async API on
 * our own epoll; no extra thread, no blocking call); other workers hand it
 * commands through a small locked queue and a wake-up.
 *
 * Publishing is one Redis command (an EVAL that INCRs the group's offset and
 * PUBLISHes the message with it), so offsets are the same on every node.
 * Nodes SUBSCRIBE to a group's channel on its first local subscriber and
 * UNSUBSCRIBE on its last. When Redis is unreachable, local publishes still
 * reach local subscribers (with a new local epoch), /healthz says degraded,
 * and the broker reconnects with backoff and resubscribes. */
#ifndef HERALD_BROKER_H
#define HERALD_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "broker_info.h"
#include "msg.h"


/* Any thread: a consistent copy of the connections and counters. */
void broker_snapshot(broker_info *out);

struct delivery;
struct server;

/* Parses the URL and prepares; false (after logging) on a bad URL. */
bool broker_init(const char *url);
void broker_destroy(void);

bool broker_enabled(void);
/* Connected and subscribed: publishes go through Redis. */
bool broker_up(void);

/* Worker 0's loop: called once per pass (connects, retries, sends queued
 * commands) and for events on the broker's descriptors. */
void broker_attach(struct delivery *d0);
void broker_poll(uint64_t now_ms);

/* Any thread. Takes over the reference to m. */
void broker_publish(msg *m);
/* Any thread: a group got its first / lost its last local subscriber. */
void broker_subscribe(const char *group, size_t len);
void broker_unsubscribe(const char *group, size_t len);

#endif

/* One connection to a Redis server (or a Sentinel) driven by the caller's
 * epoll: commands queue their reply callbacks in order; a Pub/Sub connection
 * hands every reply to its event callback instead.
 *
 * Why not hiredis' async API: Debian's hiredis (0.14) predates sharded
 * Pub/Sub and asserts when a reply it did not expect arrives (an "smessage"
 * on a connection it does not know is subscribed), and Redis Cluster needs
 * several connections whose failures we handle one at a time. hiredis still
 * formats the commands and parses the replies (its reader); this file only
 * moves bytes and keeps the queue of callbacks. */
#ifndef HERALD_RESP_H
#define HERALD_RESP_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

typedef struct resp_conn resp_conn;

/* r is NULL when the connection failed before the reply came. */
typedef void (*resp_reply_fn)(resp_conn *rc, redisReply *r, void *priv);

typedef enum resp_event { RESP_UP, RESP_DOWN, RESP_PUSH } resp_event;
/* RESP_UP: connected; RESP_DOWN: lost (why says how; not called for a
 * resp_close()); RESP_PUSH: a reply on a Pub/Sub connection. */
typedef void (*resp_event_fn)(resp_conn *rc, resp_event ev, redisReply *r, const char *why);

typedef struct resp_pending {
    resp_reply_fn fn;
    void *priv;
} resp_pending;

struct resp_conn {
    loop_handler io; /* first: the loop hands events to resp_on_io */
    int fd; /* -1: closed */
    loop *loop;
    uint32_t events;
    bool connected, pubsub;
    uint32_t gen; /* changes on every open and close: callbacks may do either */
    redisReader *reader;
    char *out;
    size_t out_len, out_off, out_cap;
    resp_pending *q;
    size_t q_head, q_len, q_cap;
    resp_event_fn on_event;
    void *owner;
    char host[256];
    int port;
};

void resp_init(resp_conn *rc, void *owner, resp_event_fn on_event);
/* Starts a non-blocking connect (the host is resolved first, blocking, like
 * hiredis did: use addresses for anything but a local name). */
bool resp_open(resp_conn *rc, loop *l, const char *host, int port, bool pubsub);
/* Closes without RESP_DOWN; pending callbacks get NULL. */
void resp_close(resp_conn *rc);
bool resp_is_open(const resp_conn *rc);
bool resp_is_up(const resp_conn *rc);

/* Queues a command (written by resp_flush or when the socket allows). fn
 * may be NULL (the reply is dropped); ignored on a Pub/Sub connection. */
bool resp_command(resp_conn *rc, resp_reply_fn fn, void *priv, int argc, const char **argv, const size_t *lens);
bool resp_commandf(resp_conn *rc, resp_reply_fn fn, void *priv, const char *fmt, ...);
void resp_flush(resp_conn *rc);
void resp_on_io(resp_conn *rc, uint32_t events);

#endif

/* Server-Sent Events side of a connection (GET /sse; the request is
 * conn_sse_route.c): the stream's resume position carried in every event id,
 * and queueing of the shared SSE encodings of messages (envelope.c builds
 * them once per message).
 *
 * An SSE subscriber is a connection in state CONN_WS with role ROLE_SUB and
 * c->sse set: fan-out, history replay, recovery, limits, the slow policy,
 * write timeouts and the drain treat it like a WebSocket subscriber; only
 * the bytes differ. Each event goes out as two queued items: a private
 * "id: <position>\n" line, then the shared event ("data: ...\n\n"), so one
 * encoding serves every subscriber while each stream's id says where all of
 * its groups stand. */
#ifndef HERALD_CONN_SSE_H
#define HERALD_CONN_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "msg.h"

struct conn;

/* Marks a queued id line (MSG_RAW): it is dropped together with its event. */
#define CONN_SSE_ID_OP 0xE1

/* Where the stream stands: the epoch and, per distinct group of the request
 * (in request order, the order of c->subs), the last offset it covered. */
typedef struct conn_sse {
    const char *epoch; /* an interned epoch string (chan_epoch), never freed while running */
    uint16_t n;
    bool *known;
    bool *pending;     /* fresh groups whose join position waits for the cluster (in known's block) */
    bool first_sent;   /* the stream's first event (its starting id) is queued */
    uint64_t off[];
} conn_sse;

/* "id: <position>\n" of the stream's current position (extra appended
 * after it), private to this stream; NULL on allocation failure. */
msg *conn_sse_id(const struct conn *c, const char *extra, size_t extra_len, msg_kind kind);

/* Fan-out: queues an SSE variant with its id line, applying --queue-limit and
 * the slow policy. Takes no reference (the caller adds one per true). */
bool conn_sse_fanout_noref(struct conn *c, msg *v);

/* Replay: queues an SSE variant with its id line; takes over the reference. */
bool conn_sse_send_consume(struct conn *c, msg *v);

/* Queues `event: recovery_failed` with the WebSocket path's JSON; the stream's
 * position for that group becomes `last` under the current epoch. */
void conn_sse_recovery_failed(struct conn *c, const char *name, size_t len, const char *json,
                              size_t n, uint64_t last);

/* Ends the stream: after what is queued (drain), or now dropping unsent
 * events (slow consumer). No bytes follow the last complete event, so a
 * client's Last-Event-ID is always that of an event it received whole. */
void conn_sse_close(struct conn *c, bool after_data);

/* Drops unsent events (drop-oldest shedding); returns how many. */
uint32_t conn_sse_drop_unsent(struct conn *c);

/* A comment line, every --ping-interval while nothing is queued: keeps
 * proxies from timing the stream out and finds dead peers. */
void conn_sse_keepalive(struct conn *c);

#endif

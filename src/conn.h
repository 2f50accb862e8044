/* One client connection, owned by one worker: its state machine, read path
 * dispatch, outbound queue and flush. HTTP handling lives in conn_http.c and
 * the WebSocket read path in conn_ws.c; this file's functions are shared. */
#ifndef HERALD_CONN_H
#define HERALD_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admit.h"
#include "config.h"
#include "groups.h"
#include "metrics.h"
#include "loop.h"
#include "msg.h"
#include "outq.h"
#include "transport.h"
#include "ws.h"

struct delivery;
struct conn;
typedef struct ssl_ctx_st SSL_CTX;

/* What a connection reaches of its worker, and nothing more: the config
 * snapshot in force, the clock and the descriptor registration (its loop),
 * metrics, one read buffer shared by the worker's connections, the batch of
 * message releases, TLS, its delivery state (for the protocol handlers), and
 * the connection lists the worker walks (registry, flush, graveyard). */
typedef struct conn_env {
    const config *cfg;
    loop *loop;
    metrics *m;
    uint8_t *scratch;
    size_t scratch_cap;
    msg_batch release;   /* releases of written messages, applied once per pass */
    SSL_CTX *tls;        /* NULL: cleartext */
    struct delivery *dl;
    struct conn **conns; /* every connection, for the tick and the drain */
    uint32_t nconns, cap_conns;
    struct conn *dirty, *dirty_tail; /* to write, oldest first */
    struct conn *round_end;          /* the last one of the current flush round */
    struct conn *graveyard;  /* destroyed, freed after the pass */
    /* Server-wide views the HTTP routes serve: process start (resume grace),
     * the memory-pressure flag, and the metrics text (/metrics, /stats) of
     * owner, the worker's server. */
    uint64_t start_ms;
    const atomic_bool *pressure;
    size_t (*metrics_text)(void *owner, char *buf, size_t cap, int json);
    void *owner;
    /* The upper layers' part of a teardown, first thing in conn_destroy:
     * delivery_forget (groups, broadcast list, cluster hold). */
    void (*forget)(struct conn *c);
} conn_env;

/* A connection's life. The role says what it became, the state where it is:
 *
 *   role HTTP      HTTP --head announcing a body--> HTTP_BODY --body read--> HTTP
 *                  HTTP --/ws or /sse accepted--> WS with role SUB (SSE: c->sse set)
 *                  HTTP --/publish upgrade accepted--> WS with role PUB
 *   every role     --conn_close_after_flush (an HTTP refusal or Connection: close,
 *                    a close frame queued, an SSE stream's end)--> CLOSING:
 *                    input ignored while the queue flushes, then the transport
 *                    shuts down (close_notify, SHUT_WR) --> DRAIN: input read and
 *                    discarded until the peer's EOF or CONN_DRAIN_MS --> destroyed
 *                  --conn_abort (out of memory, from any context)--> DRAIN with a
 *                    passed deadline --> destroyed at the next event or tick
 *                  --the peer gone, an I/O error, a timer (tick)--> destroyed
 *
 * conn_destroy is the one teardown every path ends in: the upper layers'
 * forget hook (groups, broadcast list, cluster hold), the queue, the
 * transport, the per-IP slot; the memory goes after the pass (conn_env_pass_end). */
typedef enum conn_state {
    CONN_HTTP = 0,  /* reading request heads */
    CONN_HTTP_BODY, /* reading a POST /publish body into c->pub */
    CONN_WS,        /* open WebSocket */
    CONN_CLOSING,   /* closing: flush what is queued (ending in a close frame), input ignored */
    CONN_DRAIN,     /* write side shut down; reading until EOF or deadline */
} conn_state;

typedef enum conn_role { ROLE_HTTP = 0, ROLE_SUB, ROLE_PUB } conn_role;

typedef struct conn_sub {
    group *g;
    uint32_t slot;
    bool recovering;  /* cluster: the replay waits until the group's record is filled */
    bool joined;      /* ?joined=1 plain join: the position notice is owed (sent at release) */
    uint64_t since;
} conn_sub;

typedef struct conn {
    loop_handler io;           /* first: the loop hands events to conn_on_io */
    transport t;               /* the socket, and TLS over it */
    uint8_t state;
    uint8_t role;
    /* Flags as bits: an idle connection's size is herald's memory per client. */
    bool dirty : 1;            /* on the worker's dirty list */
    bool want_out : 1;         /* EPOLLOUT registered */
    bool dead : 1;             /* destroyed, waiting in the graveyard */
    bool close_after_flush : 1;
    bool keepalive : 1;
    bool body_text : 1;        /* POST body must be UTF-8 and goes out as a text frame */
    bool in_all : 1;           /* member of the worker's broadcast-to-all list */
    bool ip_counted : 1;       /* holds a slot in the per-IP connection count */
    bool hold : 1;             /* cluster: 101 and data wait for the broker's SUBSCRIBE */
    bool read_paused : 1;      /* EPOLLIN off until the queue drains (pipelined requests) */
    bool head_active : 1;      /* a request head (or TLS handshake) started, not complete */
    bool cors_errors : 1;      /* /sse: refusals carry Access-Control-Allow-Origin: * so a
                                * page on another origin can read why (401, 403, 503) */
    /* permessage-deflate (pmd.h): negotiated, the client resets its context
     * each message, and the windows (bits) each side may use. */
    bool pmd : 1;
    bool pmd_fresh : 1;
    uint8_t pmd_server_bits : 4;
    uint8_t pmd_client_bits : 4;
    uint8_t format;            /* msg_format: raw, json or msgpack envelopes */
    uint16_t nsubs;
    uint32_t slot;             /* index in worker->conns */
    uint32_t all_slot;         /* index in worker->all */
    uint32_t rate_frames;      /* counted frames at the start of the rate window (mod 2^32) */
    uint32_t ctl_frames;       /* control frames received (publishers' rate limit); a
                                * subscriber's frames from readers already released */
    uint64_t last_read_ms;
    uint64_t last_progress_ms; /* last write progress, or when data started waiting */
    uint64_t last_ping_ms;
    /* CLOSING/DRAIN: destroy after this; HTTP with head_active: 408 after
     * this (--header-timeout from the first byte); HTTP_BODY: 408 after this. */
    uint64_t deadline_ms;
    conn_env *env;
    struct conn *next_dirty;
    struct conn *next_dead;
    uint8_t *pend;         /* unparsed partial request head (pend_len bytes, below) */
    outq q;
    conn_sub *subs;
    msg *pub;              /* message being assembled (WS publisher or POST body) */
    char *pub_group;       /* WS publisher's target group; NULL: everyone */
    union {
        uint64_t body_left;  /* HTTP: body bytes still to come */
        uint64_t zin_charge; /* WebSocket subscriber: inflated bytes not yet charged as a frame */
    };
    uint64_t rate_window_ms;
    ip_key ip;
    uint32_t pend_len;     /* here, in the padding after ip, rather than beside pend: it
                            * keeps the struct at 432 bytes with both sse and zin */
    struct conn_sse *sse;  /* set for a Server-Sent Events subscriber: its resume position */
    struct deflate_inflater *zin; /* on the first compressed frame received; NULL before */
    /* The frame reader (~200 bytes, most of it a control frame's payload) is
     * allocated when a WebSocket's input arrives and a subscriber's is
     * released again between frames: idle subscribers hold none. */
    ws_reader *rd;
} conn;

/* Takes fd over: on failure (NULL) it is closed. */
conn *conn_new(conn_env *env, int fd);

/* The environment's lists. conn_flush_dirty writes the connections marked
 * dirty, oldest first, in rounds: a round is every connection dirty when it
 * began; one call (a slice) goes on until its round is done (*round_done) or
 * the clock passes deadline_ns, and returns how many connections it visited.
 * conn_env_pass_end, after every loop pass, applies the release batch and
 * frees the destroyed; conn_env_cleanup destroys all (worker cleanup). */
uint32_t conn_flush_dirty(conn_env *e, uint64_t deadline_ns, bool *round_done);
void conn_env_pass_end(conn_env *e);
void conn_env_cleanup(conn_env *e);
/* Applies the slow policy to the WebSocket with the largest queue above min
 * bytes (memory pressure). */
void conn_shed_largest(conn_env *e, size_t min, const char *reason);

/* Re-registers the connection's events: EPOLLIN unless reading is paused,
 * EPOLLOUT when want_out. */
int conn_watch(conn *c, bool want_out);

/* Queues the connection for writing, behind those already waiting (after
 * the current write round, when one is running). */
void conn_mark_dirty(conn *c);
/* The delivery state of the connection's worker. */
struct delivery *conn_delivery(conn *c);
/* Over the --max-memory mark (memwatch.c): refuse what can wait, shed the
 * largest queues. */
static inline bool conn_env_pressure(const conn_env *e)
{
    return e->pressure && atomic_load_explicit(e->pressure, memory_order_relaxed);
}
static inline bool conn_pressure(const conn *c) { return conn_env_pressure(c->env); }

/* Keeps n unparsed input bytes aside in c->pend (the worker's scratch buffer
 * is reused by the next read): a partial request head, or requests waiting
 * while reading is paused. False on allocation failure. */
bool conn_keep_pending(conn *c, const uint8_t *p, size_t n);

/* Takes the kept input back (copied to dst unless NULL) and frees it;
 * returns its length. */
size_t conn_take_pending(conn *c, uint8_t *dst);

/* Feeds bytes that were read (in the worker's scratch buffer) to the
 * connection's current state. */
void conn_process(conn *c, uint8_t *p, size_t n);

/* Queues a published message for a subscriber, applying the slow policy.
 * Takes no reference: returns true when the queue now holds m, and the
 * caller adds one reference per true (msg_ref_n, once per fan-out). */
bool conn_fanout_noref(conn *c, msg *m);

/* Applies the slow-consumer policy now: close 1008 with reason, or drop the
 * unsent data messages (counted). */
void conn_shed(conn *c, const char *reason);

/* Queues a message and marks the connection for flushing. Takes over the
 * caller's reference; false (and reference dropped) on allocation failure. */
bool conn_send_consume(conn *c, msg *m, bool urgent);

/* Answers a ping: at most one pong waits per connection, carrying the latest
 * ping's payload (RFC 6455 5.5.3), so a ping flood costs O(1) each and no
 * memory. */
void conn_send_pong(conn *c, const void *payload, size_t n);

/* Starts a WebSocket close: sends a close frame with code/reason after what is
 * queued (after_data) or at the next frame boundary dropping unsent data, then
 * shuts the connection down. */
void conn_close_ws(conn *c, unsigned code, const char *reason, bool after_data);

/* Marks the connection for closing once its queue is flushed. */
void conn_close_after_flush(conn *c);

/* Writes as much of the queue as the socket takes. */
void conn_flush(conn *c);

/* Housekeeping from the worker's periodic tick. */
void conn_tick(conn *c, uint64_t now_ms);

/* Safe from any context (even mid fan-out): stops all I/O now and leaves the
 * teardown to the next event or tick. */
void conn_abort(conn *c);

/* Immediate teardown; the memory is freed later by the worker. Never call it
 * while iterating a group's members. */
void conn_destroy(conn *c);

/* Final free (graveyard). */
void conn_free(conn *c);

/* Queues m without a reference of its own (conn_fanout_noref's rule); false when
 * the connection was aborted (out of memory). */
bool conn_queue_noref(conn *c, msg *m, bool urgent);

/* Drops the oldest unsent data messages, each with its prefix item (see
 * outq_drop_oldest_data_prefixed), until `room` more bytes fit under
 * --queue-limit (SIZE_MAX: all of them); returns how many. */
uint32_t conn_drop_prefixed(conn *c, size_t room, uint8_t prefix_op);

/* Cuts the queue at the first unsent data message, its prefix and all
 * after it (outq_cut_at_unstarted_data); returns the data messages cut. */
uint32_t conn_cut_prefixed(conn *c, uint8_t prefix_op);

/* conn_http.c */
/* Answers an error status and closes after it. */
void conn_http_refuse(conn *c, int status, const char *why, const char *extra_headers);
void conn_http_process(conn *c, uint8_t *p, size_t n, size_t *used);
void conn_http_body(conn *c, uint8_t *p, size_t n, size_t *used);

/* conn_http.c checks shared with the /sse route (conn_sse.c): each answers
 * the refusal itself and returns false. */
struct http_request;
void conn_http_answer(conn *c, int status, const char *ctype, const void *body, size_t blen,
                      const char *extra_headers);
bool conn_origin_ok(conn *c, const struct http_request *req);
bool conn_accept_rate_ok(conn *c);
/* --client-frame-rate over the last second (conn_ws.c). */
bool conn_frame_rate_ok(conn *c);
bool conn_jwt_ok(conn *c, const struct http_request *req, const char *list, long n);
bool conn_groups_admit(conn *c, const char *list, long n);
bool conn_since_params(conn *c, const struct http_request *req, const char *list, long n, char *since,
                       size_t since_cap, char *epoch, size_t epoch_cap, long *sl, long *el);
/* Cluster: false (503 answered) during the first seconds after start while
 * the node has not learnt the cluster's epoch, for requests that resume
 * (since, Last-Event-ID). */
bool conn_resume_ready(conn *c);
/* The same condition, without answering. */
bool conn_resume_early(const conn *c);

/* conn_ws.c */
void conn_ws_process(conn *c, uint8_t *p, size_t n);

/* permessage-deflate: a standalone compressed frame of m reaches back at
 * most m's own length, so it fits any window the client allowed (its
 * server_max_window_bits) when the payload is no longer than the window. */
static inline bool conn_pmd_fits(const conn *c, const msg *m)
{
    return c->pmd_server_bits >= 15 || m->payload_len <= (1u << c->pmd_server_bits);
}

#endif

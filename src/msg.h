/* Immutable, reference-counted messages. A published payload is framed once
 * (server header + payload in one allocation) and every delivery holds a
 * reference to that frame: zero per-delivery serialization or copying. The
 * same type carries raw bytes (HTTP responses) so a connection has one write
 * path. */
#ifndef HERALD_MSG_H
#define HERALD_MSG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws.h"

#define MSG_GROUP_MAX 128
/* Envelope variants a message can carry (envelope.h: msg_format - 1). */
#define MSG_VARIANTS 6

typedef enum msg_kind {
    MSG_DATA = 0,   /* a published text/binary frame: counts as a delivery */
    MSG_CONTROL,    /* ping/pong/close frame */
    MSG_RAW,        /* HTTP bytes */
} msg_kind;

typedef struct msg {
    atomic_uint refs;
    uint8_t kind;
    uint8_t opcode;
    uint8_t group_len;      /* 0: broadcast to every subscriber */
    bool is_close;
    uint32_t len;           /* bytes to write, starting at data */
    uint32_t cap;           /* payload capacity while assembling */
    uint32_t payload_len;
    uint64_t publish_ns;    /* CLOCK_MONOTONIC at publish, for latency metrics */
    uint64_t offset;        /* position in its group (chan.c), 0 for non-published */
    const char *epoch;      /* the epoch it was sequenced under (immutable string) */
    uint32_t epoch_gen;
    /* The same message wrapped in an envelope (JSON, msgpack, and the SSE
     * events raw and JSON), built at most once, on first need, and shared by
     * every subscriber using that format. */
    _Atomic(struct msg *) variant[MSG_VARIANTS];
    /* Its permessage-deflate frame (deflate.c), built at most once; m itself
     * when compressing does not pay; MSG_DEFLATE_BUILDING while a worker
     * compresses it. Only WebSocket frames (raw, JSON and msgpack) are ever
     * compressed: an SSE event never gets one. */
    _Atomic(struct msg *) deflated;
    uint8_t *data;
    char group[MSG_GROUP_MAX + 1];
    /* WS_MAX_SERVER_HEADER bytes of room, then the payload */
    uint8_t buf[];
} msg;

/* A marker, never a message: msg.deflated while its frame is being built. */
extern struct msg msg_deflate_building;
#define MSG_DEFLATE_BUILDING (&msg_deflate_building)

/* A message whose payload is filled by the caller (msg_payload) and then
 * framed by msg_finish; NULL on allocation failure. */
msg *msg_alloc(size_t payload_cap);

/* Grows an unfinished, unshared message; NULL (and m untouched) on failure. */
msg *msg_grow(msg *m, size_t payload_cap);

static inline uint8_t *msg_payload(msg *m) { return m->buf + WS_MAX_SERVER_HEADER; }

/* Bytes one message's allocation takes (envelope variants not included). */
static inline size_t msg_footprint(const msg *m)
{
    return sizeof *m + WS_MAX_SERVER_HEADER + m->cap;
}

/* Gives back capacity beyond payload_cap (>= payload_len) of an unfinished,
 * unshared message; returns the message (moved, or m when nothing changed). */
msg *msg_trim(msg *m, size_t payload_cap);

/* Bytes of all messages alive, each counted once. */
uint64_t msg_memory(void);

/* Encodes the frame header right in front of the payload. */
void msg_finish(msg *m, msg_kind kind, uint8_t opcode, const char *group, size_t group_len);

/* One-shot helpers. */
msg *msg_new_frame(msg_kind kind, uint8_t opcode, const void *payload, size_t n);
msg *msg_new_raw(const void *p, size_t n);
msg *msg_new_close(unsigned code, const char *reason);

static inline msg *msg_ref(msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

/* Adds n references at once: fan-out to n subscribers costs one atomic op. */
static inline void msg_ref_n(msg *m, unsigned n)
{
    atomic_fetch_add_explicit(&m->refs, n, memory_order_relaxed);
}

void msg_free(msg *m);

static inline void msg_unref_n(msg *m, unsigned n)
{
    if (atomic_fetch_sub_explicit(&m->refs, n, memory_order_acq_rel) == n)
        msg_free(m);
}

static inline void msg_unref(msg *m) { msg_unref_n(m, 1); }

/* Batched releases. A broadcast completes on many connections of one worker
 * in the same loop pass; instead of one atomic decrement per delivery on a
 * cache line the other workers also touch, a worker counts releases per
 * message in this small table and applies them once (msg_batch_flush). */
#define MSG_BATCH_SLOTS 32

typedef struct msg_batch {
    msg *m[MSG_BATCH_SLOTS];
    unsigned n[MSG_BATCH_SLOTS];
} msg_batch;

static inline void msg_batch_unref(msg_batch *b, msg *m)
{
    unsigned h = (unsigned)(((uintptr_t)m >> 6) & (MSG_BATCH_SLOTS - 1));
    if (b->m[h] == m) {
        b->n[h]++;
        return;
    }
    if (b->m[h])
        msg_unref_n(b->m[h], b->n[h]);
    b->m[h] = m;
    b->n[h] = 1;
}

void msg_batch_flush(msg_batch *b);

#endif

/* Per-connection outbound queue: a ring (deque) of message references plus
 * the write offset into the first one. No I/O: the connection layer asks for
 * iovecs, writes them, and reports how many bytes went out.
 *
 * Why a deque of references rather than a byte buffer: a broadcast appends
 * one pointer per subscriber instead of copying the frame, and flushing
 * gathers many shared frames into one writev. Control frames (pong, close)
 * are inserted at the next frame boundary so a backlog of data never delays
 * them. The array is allocated lazily and released when idle, so an idle
 * connection costs no queue memory. */
#ifndef HERALD_OUTQ_H
#define HERALD_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "metrics.h"
#include "msg.h"

typedef struct outq {
    msg **items;
    uint32_t cap;   /* power of two, 0 when unallocated */
    uint32_t head;
    uint32_t count;
    uint32_t off;   /* bytes of items[head] already written */
    size_t bytes;   /* bytes still to write */
    size_t mem;     /* memory charged against --queue-limit (outq_cost of each item) */
} outq;

typedef struct outq_done {
    metrics *lat;        /* in: where to record publish->written latency, or NULL */
    msg_batch *release;  /* in: batch finished messages' releases here, or NULL */
    uint64_t now_us;     /* in: CLOCK_MONOTONIC now */
    uint32_t data_msgs;  /* MSG_DATA messages fully written */
    size_t bytes;
    bool close_sent;     /* a close frame was fully written */
} outq_done;

static inline bool outq_empty(const outq *q) { return q->count == 0; }

/* What one queued item costs this connection. A published frame is shared by
 * every subscriber, so it is charged its frame bytes plus its slot; a private
 * message (pong, close, HTTP response) is charged its whole allocation: a
 * flood of 2-byte pongs must not look like 2 bytes each. */
static inline size_t outq_cost(const msg *m)
{
    return m->len + sizeof(msg *) + (m->kind == MSG_DATA ? 0 : sizeof(msg));
}

/* Appends (takes over the caller's reference). False on allocation failure. */
bool outq_push(outq *q, msg *m);

/* Inserts at the next frame boundary: after the partly written head, if any. */
bool outq_push_urgent(outq *q, msg *m);

/* Drops every data message that has not started; the partly written head,
 * HTTP bytes (a 101) and control frames stay, so a close that follows still
 * comes after them. Returns the number dropped. */
uint32_t outq_drop_unstarted_data(outq *q);

/* Replaces the first control frame with this opcode that has not started
 * (RFC 6455 5.5.3: only the latest ping needs its pong), taking over m's
 * reference and releasing the old one. False when there is none. O(control
 * frames queued), which stays a handful because pongs coalesce here. */
bool outq_replace_control(outq *q, uint8_t opcode, msg *m);

/* Drops the oldest data message that has not started; false when none. */
bool outq_drop_oldest_data(outq *q);

/* Drops the oldest data message that has not started and, when the item
 * right before it has not started either and is HTTP bytes (MSG_RAW) with
 * opcode prefix_op, that one too (an SSE event's id line goes with its
 * event). False when there is no data message to drop. */
bool outq_drop_oldest_data_prefixed(outq *q, uint8_t prefix_op);

/* Cuts the queue at the first data message that has not started: it and
 * everything after it go, control items included, and so does its prefix
 * (an unstarted MSG_RAW with opcode prefix_op right before it). The partly
 * written head stays. For an SSE stream that ends: its ids are cumulative,
 * so an id-carrying control left behind a dropped event would claim it.
 * Returns the number of data messages dropped. */
uint32_t outq_cut_at_unstarted_data(outq *q, uint8_t prefix_op);

/* Fills up to max iovecs from the head; returns how many. */
int outq_iov(const outq *q, struct iovec *iov, int max);

/* Accounts n written bytes, releasing finished messages. */
void outq_consume(outq *q, size_t n, outq_done *done);

/* Releases everything, including the array. */
void outq_clear(outq *q);

/* Frees the array when empty (called from idle housekeeping). */
void outq_shrink(outq *q);

#endif

/* permessage-deflate data path (RFC 7692): compress-once frames for
 * delivery and the inflater for compressed messages clients send.
 *
 * Outgoing: a published frame (raw, or a JSON/msgpack envelope) gets a
 * compressed twin built at most once, by the first worker that needs it, with
 * libdeflate (whole buffer, no context: RFC 7692 server_no_context_takeover),
 * and shared by every subscriber that negotiated the extension, like the
 * envelopes. Compression costs the same for 10 subscribers as for 10,000.
 *
 * Incoming: zlib's streaming inflate, allocated on a connection's first
 * compressed frame; the inflated size of a message counts against a limit as
 * it grows, so a small "bomb" never allocates past --max-message-size. */
#ifndef HERALD_DEFLATE_H
#define HERALD_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

struct metrics;

/* libdeflate level for outgoing frames: the best ratio per CPU on JSON
 * notifications (BENCHMARKS.md, "permessage-deflate"). */
#define DEFLATE_LEVEL 6

/* The compressed frame of m (RSV1 set), built on first use and cached in m
 * (thread-safe, never twice); m itself when its payload is shorter than
 * min_size, does not shrink, memory is short, or another thread is building
 * it right now. The caller holds a reference to m and does not own one to
 * the result. Counts the compression in mt (may be NULL) when this call
 * built it, and a plain answer while another thread builds (deflate_busy). */
msg *deflate_variant(msg *m, size_t min_size, struct metrics *mt);

/* Frees this thread's compressor (a worker's at exit). */
void deflate_thread_done(void);

/* Bytes held by compressors and inflaters (memory view, kind "deflate"). */
uint64_t deflate_memory(void);

/* ---- inflate ------------------------------------------------------------- */

typedef struct deflate_inflater deflate_inflater;

typedef enum deflate_result {
    DEFLATE_OK = 0,
    DEFLATE_TOO_BIG,  /* the message inflates past the limit: close 1009 */
    DEFLATE_CORRUPT,  /* not valid DEFLATE data: close 1007 */
    DEFLATE_NOMEM,    /* close 1011 */
    DEFLATE_STOPPED,  /* the sink refused the data */
} deflate_result;

#define DEFLATE_CHUNK 16384

/* Receives inflated bytes in chunks of at most DEFLATE_CHUNK; returning false
 * stops the inflate (DEFLATE_STOPPED). */
typedef bool (*deflate_sink)(void *arg, const uint8_t *p, size_t n);

/* window_bits: the client's LZ77 window (8..15); fresh_each_message: the
 * client does not keep its compression context (client_no_context_takeover),
 * so no window needs to survive between messages. NULL when out of memory. */
deflate_inflater *deflate_inflater_new(int window_bits, bool fresh_each_message);
void deflate_inflater_free(deflate_inflater *z);

/* Inflates the next chunk of a compressed message's payload; last ends the
 * message (after the RFC 7692 tail 00 00 ff ff). The message's inflated bytes
 * count against limit: past it the call returns DEFLATE_TOO_BIG before handing
 * the sink a byte beyond it. After an error the inflater is unusable. */
deflate_result deflate_inflate(deflate_inflater *z, const uint8_t *in, size_t n, bool last,
                               uint64_t limit, deflate_sink sink, void *arg);

/* Bytes the inflater of one connection holds (documented per-connection cost). */
size_t deflate_inflater_footprint(const deflate_inflater *z);

#endif

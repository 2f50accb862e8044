/* Publisher side: frames built in place in a per-publisher buffer (no
 * allocation per message), flushed once per loop pass so frames due
 * together share a write, and the saturate-mode outstanding window. */
#ifndef HB_PUB_H
#define HB_PUB_H

#include <stdbool.h>
#include <stdint.h>

#include "bench.h"

/* Allocates p's buffer (and window slots in saturate mode). False on ENOMEM. */
bool pub_init(pub *p, const bench_args *a, uint32_t id);
void pub_free(pub *p);

/* Builds the next message of p into its buffer, stamped now. False when p is
 * not open or its buffer is full (the server is not reading fast enough). */
bool pub_send_message(worker *w, pub *p, bool measured);
/* Appends a whole control frame; false (frame dropped) when there is no room. */
bool pub_append(pub *p, const uint8_t *frame, size_t n);
/* Writes out what the buffer holds, as far as the socket takes it. */
void pub_flush(worker *w, pub *p);

/* Saturate mode. */
typedef enum { SAT_SENT, SAT_WINDOW_FULL, SAT_NOTHING } sat_result;
/* Sends as many messages as the window and buffers allow, round-robin over
 * w's publishers, at most budget; returns why it stopped. */
sat_result sat_publish(worker *w, bool measured, uint32_t budget);
/* A first delivery of (publisher, seq) arrived on worker self. */
void sat_complete(worker *self, uint32_t publisher, uint64_t seq);
/* Releases window slots of p's messages older than the timeout. */
void sat_expire(worker *w, pub *p);

#endif

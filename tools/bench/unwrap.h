/* Finding the bench payload inside herald's envelopes (?format=json|msgpack)
 * from what the frame reader keeps of a message: its first bytes, its last
 * WSC_TAIL bytes and its length. The payload is the envelope's last field,
 * so its start is found in the first bytes and its size follows from the
 * total length; only its first MSG_HEAD bytes are decoded, into a fixed
 * buffer (no allocation).
 *   json:    {"group":"g3","offset":N,"epoch":"E","binary":true,"data":"<base64>"}
 *   msgpack: map {group, offset, epoch, data: bin 8/16/32} with data last */
#ifndef HB_UNWRAP_H
#define HB_UNWRAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "wsc.h"

/* head: the message's first `have` bytes; tail: its last WSC_TAIL bytes;
 * total: its length. On success writes min(size, MSG_HEAD) payload bytes to
 * out and the payload size to *size; false when the message is not such an
 * envelope (or its payload starts too far in to be captured). */
bool unwrap_json(const uint8_t *head, size_t have, const uint8_t tail[WSC_TAIL], uint64_t total,
                 uint8_t out[MSG_HEAD], uint64_t *size);
bool unwrap_msgpack(const uint8_t *head, size_t have, uint64_t total, uint8_t out[MSG_HEAD],
                    uint64_t *size);

#endif

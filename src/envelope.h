/* Envelopes: a published message wrapped with its group, offset and epoch, for
 * subscribers that ask for ?format=json or ?format=msgpack.
 *   JSON:    {"group":"g"|null,"offset":N,"epoch":"E","data":"..."} as a text
 *            frame; binary payloads are base64 with "binary":true.
 *   msgpack: a map with the same keys as a binary frame; data is str for text
 *            messages and bin for binary ones.
 * The encoders are pure; envelope_variant builds a message's envelope once
 * and shares it. */
#ifndef HERALD_ENVELOPE_H
#define HERALD_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

typedef enum msg_format {
    FORMAT_RAW = 0,
    FORMAT_JSON = 1,
    FORMAT_MSGPACK = 2,
    FORMAT_SSE_RAW = 3,  /* an SSE event: data lines, or event: binary + base64 */
    FORMAT_SSE_JSON = 4, /* an SSE event whose data is the JSON envelope */
    /* The same events starting with "id: <epoch>/<offset>": a stream of one
     * group shares its whole event, id included (none for a broadcast). */
    FORMAT_SSE_RAW_ID = 5,
    FORMAT_SSE_JSON_ID = 6,
    FORMAT_COUNT
} msg_format;

/* The formats a WebSocket subscriber can use (raw, JSON, msgpack): the only
 * ones permessage-deflate may compress. FORMAT_SSE_* come after them. */
#define FORMAT_WS_COUNT (FORMAT_MSGPACK + 1)

typedef struct envelope_in {
    const char *group; /* NULL: broadcast to all */
    size_t group_len;
    uint64_t offset;
    const char *epoch;
    const uint8_t *data;
    size_t len;
    bool binary;
} envelope_in;

/* Upper bound of the JSON envelope's size. */
size_t envelope_json_bound(const envelope_in *in);
/* Writes the JSON envelope into out (cap >= envelope_json_bound); returns its length. */
size_t envelope_json(const envelope_in *in, uint8_t *out, size_t cap);

/* Writes the msgpack envelope; returns its length, or 0 when cap is too small.
 * envelope_msgpack_bound gives a sufficient cap. */
size_t envelope_msgpack_bound(const envelope_in *in);
size_t envelope_msgpack(const envelope_in *in, uint8_t *out, size_t cap);

/* The envelope frame of a published message in format f (JSON or msgpack,
 * or the SSE event bytes for FORMAT_SSE_*, without an id line),
 * with the epoch it was sequenced under, built on first use and cached in m
 * (thread-safe); NULL on allocation failure. The caller does not own a
 * reference. */
msg *envelope_variant(msg *m, msg_format f);

#endif

/* Server-Sent Events subscriber side for --sse, independent of the server's
 * code: the GET request, the 200 text/event-stream check, and a streaming
 * event reader that keeps only the first base64 characters of each binary
 * event's data (enough to decode the bench header, MSG_HEAD bytes), its
 * length and its padding, so a connection holds a few dozen bytes and no
 * buffer grows per event. Lines may end in LF or CRLF; comments, `id:` and
 * `event:` lines are skipped. */
#ifndef HB_SSEC_H
#define HB_SSEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

#define SSEC_B64_HEAD ((MSG_HEAD + 2) / 3 * 4) /* base64 chars that hold MSG_HEAD bytes */

typedef struct ssec_reader {
    uint8_t field;         /* the line being read: 0 unknown yet, 'd' data, 's' skipped */
    uint8_t name_len;      /* bytes of the field name seen (up to "data:") */
    bool line_empty;       /* nothing on this line yet */
    bool space_skip;       /* the one space after "data:" may follow */
    bool has_data;         /* the event has a data line */
    uint8_t b64_have;
    char b64[SSEC_B64_HEAD];
    char last[2];          /* last two data characters (padding) */
    uint64_t data_len;
} ssec_reader;

/* Writes "GET path?groups=group HTTP/1.1" with Host and Accept; returns its
 * length, 0 when it does not fit. */
size_t ssec_request(char *out, size_t cap, const char *host_port, const char *path,
                    const char *groups);

/* Checks a complete response head: status 200 and a text/event-stream
 * Content-Type. On failure writes a short reason into why. */
bool ssec_response_ok(const char *head, size_t len, char *why, size_t why_cap);

void ssec_reader_init(ssec_reader *r);

/* Consumes n bytes; calls on_event(ctx, head, total) for each event with data:
 * head holds min(total, MSG_HEAD) decoded payload bytes, total the payload
 * size. Returns false when an event's data is not base64. */
bool ssec_feed(ssec_reader *r, const uint8_t *p, size_t n,
               void (*on_event)(void *ctx, const uint8_t *head, uint64_t total), void *ctx);

#endif

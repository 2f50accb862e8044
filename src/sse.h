/* Server-Sent Events encoding (text/event-stream, WHATWG HTML 9.2): pure
 * functions, no I/O, no allocation.
 *
 * A message becomes one event: `data:` lines (a text payload split at its
 * line breaks, which a client joins back with "\n") or, for a binary payload,
 * `event: binary` and one `data:` line of base64; then a blank line.
 *
 * The event id is the stream's resume position (docs/interface.md, "/sse"):
 *     <epoch>/<o1>,<o2>,...,<on>
 * one entry per distinct group of the request, in the order of its `groups`
 * parameter; an entry is the last offset of that group the stream covered,
 * or empty when there is none under this epoch. The epoch is everything
 * before the last '/'. */
#ifndef HERALD_SSE_H
#define HERALD_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest epoch an id may carry (herald's epochs are 16-40 bytes). */
#define SSE_EPOCH_MAX 64
/* Longest Last-Event-ID accepted: an epoch and 20 digits + ',' per group for
 * 64 groups fit comfortably; anything longer is refused before parsing. */
#define SSE_ID_MAX 4096
/* Bytes of "id: " + ... + "\n" around an id. */
#define SSE_ID_LINE_EXTRA 5

/* Upper bound of sse_encode_text's output for a payload of n bytes. */
size_t sse_text_bound(size_t event_len, size_t n);
/* Writes an event: "event: <event>\n" when event_len > 0, then one "data: "
 * line per line of p (CRLF, CR and LF each end a line), then "\n". Returns the
 * length written. out must hold sse_text_bound bytes. */
size_t sse_encode_text(uint8_t *out, const char *event, size_t event_len, const uint8_t *p,
                       size_t n);

/* Upper bound of sse_encode_binary's output. */
size_t sse_binary_bound(size_t n);
/* "event: binary\ndata: <base64 of p>\n\n"; returns the length written. */
size_t sse_encode_binary(uint8_t *out, const uint8_t *p, size_t n);

/* An id's stream position: offsets[i] valid when known[i]. */
typedef struct sse_pos {
    const char *epoch; /* not NUL-terminated when parsed: epoch_len bytes */
    size_t epoch_len;
    uint64_t *off;
    bool *known;
    size_t n;
} sse_pos;

/* Upper bound of the id text (without the "id: " line around it). */
size_t sse_id_bound(size_t epoch_len, size_t n);
/* Writes "id: <id>\n" into out (cap bytes); returns the length, 0 when it
 * does not fit or the epoch holds a byte an id line cannot carry. */
size_t sse_id_line(uint8_t *out, size_t cap, const sse_pos *pos);

typedef enum sse_id_result {
    SSE_ID_OK = 0,
    SSE_ID_TOO_LONG,   /* longer than SSE_ID_MAX */
    SSE_ID_NO_EPOCH,   /* no '/', or an empty epoch */
    SSE_ID_BAD_EPOCH,  /* longer than SSE_EPOCH_MAX, or bytes outside 0x21-0x7e */
    SSE_ID_BAD_OFFSET, /* an entry that is neither empty nor 1-20 digits below 2^64 */
    SSE_ID_COUNT,      /* not one entry per group of the request */
} sse_id_result;

/* Parses id s[0..n) for a stream of ngroups groups into pos (pos->off and
 * pos->known hold ngroups entries; pos->epoch points into s). */
sse_id_result sse_id_parse(const char *s, size_t n, size_t ngroups, sse_pos *pos);

/* A short human-readable reason for a result (for a 400 answer). */
const char *sse_id_error(sse_id_result r);

#endif

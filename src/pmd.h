/* permessage-deflate (RFC 7692) negotiation: parses the client's
 * Sec-WebSocket-Extensions offers and picks the first one herald can honour.
 * Pure: no I/O, no allocation.
 *
 * herald always answers server_no_context_takeover: every message is
 * compressed on its own, so one compressed frame can be shared by every
 * subscriber that negotiated the extension. It always answers
 * client_no_context_takeover too (RFC 7692 7.1.1.2 allows it unasked): no
 * inflate window has to outlive a message. An offer with an unknown or
 * repeated parameter or a bad value is skipped for the next one; when none
 * is usable the extension is simply not used (the handshake never fails
 * because of an offer). */
#ifndef HERALD_PMD_H
#define HERALD_PMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

/* The longest answer (every parameter, two-digit window bits) is 128 bytes
 * plus the NUL; the rest is slack. An answer that would not fit declines the
 * offer instead of sending a truncated header. */
#define PMD_RESPONSE_MAX 192

typedef struct pmd_params {
    /* The client resets its compressor for every message: our inflater can
     * start each message afresh (no window kept between messages). Always
     * true: herald's answer asks it of every client. */
    bool client_no_context_takeover;
    /* LZ77 window the client compresses with (inflate window), 8..15. */
    uint8_t client_window_bits;
    /* Largest window our compressed frames may use, 8..15: a message
     * compressed standalone never reaches back further than its own length,
     * so frames of payloads up to 2^bits bytes are sent compressed and
     * larger ones plain. */
    uint8_t server_window_bits;
} pmd_params;

/* Negotiates over the values of every Sec-WebSocket-Extensions header (in
 * order; each a comma list of offers). Returns true when an offer was
 * accepted: *p is set and out holds the response header's value
 * (NUL-terminated, at most PMD_RESPONSE_MAX bytes with the NUL). */
bool pmd_negotiate(const http_str *values, size_t n, pmd_params *p, char out[PMD_RESPONSE_MAX]);

#endif

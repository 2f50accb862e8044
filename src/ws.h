/* RFC 6455 codec, server side: handshake key, frame headers, an incremental
 * frame reader that enforces the protocol rules, close-code checks.
 * No I/O, no allocation: the caller owns every buffer. */
#ifndef HERALD_WS_H
#define HERALD_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never on the wire */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_RESTART = 1012,
    WS_CLOSE_TRY_LATER = 1013,
};

#define WS_MAX_HEADER 14      /* 2 + 8 (length) + 4 (mask) */
#define WS_MAX_SERVER_HEADER 10
#define WS_MAX_CONTROL 125
#define WS_ACCEPT_LEN 28      /* base64 of a SHA-1 digest */

/* Sec-WebSocket-Key must be base64 that decodes to exactly 16 bytes. */
bool ws_key_valid(const char *key, size_t len);

/* Writes the 28-character Sec-WebSocket-Accept value plus a NUL into out. */
void ws_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1]);

/* Encodes an unmasked server frame header with the minimal length form.
 * Returns its size (2, 4 or 10). */
size_t ws_header_encode(uint8_t out[WS_MAX_SERVER_HEADER], bool fin, uint8_t opcode, uint64_t len);

/* XORs n bytes with the mask; pos is the offset of p[0] in the payload. */
void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t pos);

/* Close codes a peer may send (RFC 6455 7.4, plus 3000-4999). */
bool ws_close_code_valid(unsigned code);

/* Encodes a complete close frame (code + reason, reason truncated to fit 125
 * bytes) into out; returns its size. */
size_t ws_close_frame(uint8_t out[2 + WS_MAX_CONTROL], unsigned code, const char *reason);

/* ---- incremental reader ------------------------------------------------ */

typedef enum ws_event_type {
    WS_EV_NONE = 0,   /* all input consumed, nothing to report */
    WS_EV_DATA,       /* a chunk of a data message's payload (unmasked, in place) */
    WS_EV_MESSAGE_END,/* the data message that the DATA chunks belong to is complete */
    WS_EV_PING,       /* payload in ev.data/ev.len (<= 125) */
    WS_EV_PONG,
    WS_EV_CLOSE,      /* ev.code (WS_CLOSE_NO_STATUS when empty), reason in data/len */
    WS_EV_ERROR,      /* protocol violation: close with ev.code, then stop feeding */
} ws_event_type;

typedef struct ws_event {
    ws_event_type type;
    uint8_t opcode;        /* DATA/MESSAGE_END: WS_OP_TEXT or WS_OP_BINARY */
    unsigned code;         /* CLOSE: peer's code; ERROR: the close code to send */
    const uint8_t *data;   /* DATA: points into the caller's buffer; control: into the reader */
    size_t len;
    bool compressed;       /* DATA/MESSAGE_END: the message is permessage-deflate data
                            * (RSV1 on its first frame): its UTF-8 is the caller's to check */
} ws_event;

typedef struct ws_reader {
    uint64_t max_message;  /* 0 = unlimited; larger messages -> 1009 */
    bool rsv1_ok;          /* permessage-deflate negotiated: RSV1 marks compressed messages */
    bool msg_compressed;   /* the message being read has RSV1 */
    /* frame being read */
    uint8_t hdr[WS_MAX_HEADER];
    uint8_t hdr_have;
    uint8_t opcode;
    bool fin;
    uint8_t mask[4];
    uint64_t frame_len;
    uint64_t frame_pos;
    bool in_payload;
    /* message being assembled from fragments */
    bool in_message;
    uint8_t msg_opcode;
    uint64_t msg_len;
    utf8_state utf8;
    /* control frame payload, collected whole */
    uint8_t ctrl[WS_MAX_CONTROL];
    bool end_pending;      /* the last DATA event finished the message */
    bool failed;
    uint16_t fail_code;
    uint64_t frames;       /* frame headers accepted so far (for rate limits) */
} ws_reader;

void ws_reader_init(ws_reader *r, uint64_t max_message);

/* True between messages: no frame or message is partly read and no error or
 * event is pending, so the reader holds nothing but its counters and a
 * fresh one (with the same settings) would continue the stream alike. */
bool ws_reader_at_rest(const ws_reader *r);

/* Allows RSV1 on the first frame of data messages (permessage-deflate). Such
 * a message's wire size may exceed max_message by DEFLATE's worst-case
 * expansion; the caller limits what it inflates to. */
void ws_reader_allow_rsv1(ws_reader *r);

/* Consumes input from buf (which it unmasks in place) until it has one event
 * to report or a frame boundary without an event. Returns the number of bytes
 * consumed. Callers loop until it reports WS_EV_NONE with all input consumed:
 * a DATA event that completes a message is followed by MESSAGE_END on the
 * next call, even with len == 0. After WS_EV_ERROR the reader stays failed. */
size_t ws_reader_feed(ws_reader *r, uint8_t *buf, size_t len, ws_event *ev);

#endif

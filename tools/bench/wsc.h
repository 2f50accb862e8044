/* Minimal RFC 6455 client side, independent of the server's code: the
 * upgrade request and response check, masked frame encoding, and a
 * streaming frame reader that keeps only what the bench needs (the first
 * MSG_HEAD bytes of each data message and whole control payloads), so a
 * connection costs a few hundred bytes and no buffer grows per frame. */
#ifndef HB_WSC_H
#define HB_WSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

#define WSC_OP_CONT 0x0
#define WSC_OP_TEXT 0x1
#define WSC_OP_BINARY 0x2
#define WSC_OP_CLOSE 0x8
#define WSC_OP_PING 0x9
#define WSC_OP_PONG 0xA

#define WSC_MAX_CONTROL 125
#define WSC_MAX_HEADER 14                    /* 2 + 8 length + 4 mask */
#define WSC_CTL_FRAME (6 + WSC_MAX_CONTROL)  /* masked control frame, max */
#define WSC_KEY_LEN 24                       /* base64 of 16 bytes */
#define WSC_ACCEPT_LEN 28                    /* base64 of a SHA-1 digest */
/* bytes of a message kept at most: enough for a JSON or msgpack envelope's
 * fields plus the start of its payload (herald's epoch is < 80 chars) */
#define WSC_HEAD_CAP 256
#define WSC_TAIL 4                           /* last bytes of a message kept */

/* ---- handshake ---------------------------------------------------------- */

/* Sec-WebSocket-Key from 16 key bytes (base64, NUL-terminated). */
void wsc_key_encode(const uint8_t raw[16], char out[WSC_KEY_LEN + 1]);

/* Writes the upgrade request for path+query into out; returns its length,
 * or 0 when it does not fit. */
size_t wsc_request(char *out, size_t cap, const char *host_port, const char *path,
                   const char *query_key, const char *query_value, const char *key);

/* Same, with extra header lines (each ending in CRLF) before the blank line. */
size_t wsc_request_ext(char *out, size_t cap, const char *host_port, const char *path,
                       const char *query_key, const char *query_value, const char *key,
                       const char *extra_headers);

/* The permessage-deflate offer of --deflate subscribers (RFC 7692). It asks
 * for server_no_context_takeover: messages are inflated whole and
 * independently (a per-thread decompressor), so a server that would keep
 * its context across messages (Node ws by default) must not. */
#define WSC_DEFLATE_OFFER \
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " \
    "client_max_window_bits\r\n"

/* True when a (checked) response head accepts permessage-deflate. */
bool wsc_response_deflate(const char *head, size_t len);

/* Length of the response head including the blank line, 0 if the head is not
 * complete within buf[0..n). */
size_t wsc_head_len(const char *buf, size_t n);

/* Checks a complete response head: status 101, Upgrade: websocket,
 * Connection: upgrade and the accept value matching key. On failure returns
 * false and writes a short reason (e.g. the status line) into why. */
bool wsc_response_ok(const char *head, size_t len, const char *key, char *why, size_t why_cap);

/* ---- frames ------------------------------------------------------------- */

/* Header size for a masked client frame of payload length len. */
static inline size_t wsc_header_size(uint64_t len)
{
    return 2 + (len < 126 ? 0 : len < 65536 ? 2 : 8) + 4;
}

/* Writes a masked frame header (FIN set) into out; returns its size. */
size_t wsc_header(uint8_t *out, uint8_t opcode, uint64_t len, uint32_t mask);

/* XORs payload p[0..n) with the 4-byte mask (as written by wsc_header). */
void wsc_mask(uint8_t *p, size_t n, uint32_t mask);

/* Encodes a whole masked control frame (payload <= 125) into out. */
size_t wsc_control(uint8_t out[WSC_CTL_FRAME], uint8_t opcode, const uint8_t *payload,
                   size_t n, uint32_t mask);

/* ---- streaming reader --------------------------------------------------- */

typedef struct wsc_handler {
    /* A complete data message: its opcode, its first min(total, head_want)
     * bytes (MSG_HEAD unless set otherwise) and its total length (fragments
     * joined). */
    void (*on_message)(void *ctx, uint8_t opcode, const uint8_t *head, uint64_t total);
    void (*on_ping)(void *ctx, const uint8_t *p, size_t n);
    /* code is -1 when the close frame had no status */
    void (*on_close)(void *ctx, int code);
} wsc_handler;

typedef struct wsc_reader {
    uint8_t hdr[WSC_MAX_HEADER];
    uint8_t hdr_have;
    uint8_t hdr_need;       /* 2 until the length form is known */
    uint8_t opcode;
    bool fin;
    bool in_frame;          /* header complete, payload pending */
    uint64_t remaining;     /* payload bytes of the current frame still to come */
    /* data message being assembled */
    bool in_msg;
    uint8_t msg_op;
    uint16_t head_have;
    uint16_t head_want;     /* capture this many first bytes (<= WSC_HEAD_CAP) */
    bool want_tail;         /* also keep the last WSC_TAIL bytes in tail */
    uint64_t msg_len;
    uint8_t tail[WSC_TAIL]; /* last min(msg_len, WSC_TAIL) bytes, oldest first */
    uint8_t head[WSC_HEAD_CAP];
    /* control frame payload */
    uint8_t ctl_have;
    uint8_t ctl_len;
    uint8_t ctl[WSC_MAX_CONTROL];
    /* permessage-deflate: RSV1 allowed on a message's first frame; such a
     * message is gathered in zbuf (only while one is being read, freed
     * after large ones) and inflated whole when it ends. */
    bool deflate;
    bool msg_z;
    uint8_t *zbuf;
    uint32_t zlen, zcap;
} wsc_reader;

enum { WSC_FEED_OK = 0, WSC_FEED_CLOSED = 1, WSC_FEED_ERROR = -1 };

/* A reader that keeps MSG_HEAD first bytes of each message. */
void wsc_reader_init(wsc_reader *r);
/* Keeps head_want (<= WSC_HEAD_CAP) first bytes and the last WSC_TAIL bytes:
 * for envelopes, where the payload is not at the start. */
void wsc_reader_init_capture(wsc_reader *r, uint16_t head_want);

/* Accepts compressed messages (the server accepted permessage-deflate). */
void wsc_reader_enable_deflate(wsc_reader *r);
/* Frees this thread's decompressor and output buffer (at a worker's exit). */
void wsc_thread_done(void);

/* Frees what a reader holds (the compressed message buffer). */
void wsc_reader_free(wsc_reader *r);

/* Consumes n bytes. Returns WSC_FEED_CLOSED once a close frame was handled
 * (later bytes are ignored) and WSC_FEED_ERROR on a protocol violation by
 * the server (masked frame, RSV bits, bad opcode, bad fragmentation, long or
 * fragmented control frame). */
int wsc_feed(wsc_reader *r, const uint8_t *p, size_t n, const wsc_handler *h, void *ctx);

#endif

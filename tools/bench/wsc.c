#include "wsc.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <libdeflate.h>
#include <openssl/evp.h>
#include <stdlib.h>

static const char wsc_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void wsc_key_encode(const uint8_t raw[16], char out[WSC_KEY_LEN + 1])
{
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
    out[WSC_KEY_LEN] = '\0';
}

size_t wsc_request(char *out, size_t cap, const char *host_port, const char *path,
                   const char *query_key, const char *query_value, const char *key)
{
    return wsc_request_ext(out, cap, host_port, path, query_key, query_value, key, "");
}

size_t wsc_request_ext(char *out, size_t cap, const char *host_port, const char *path,
                       const char *query_key, const char *query_value, const char *key,
                       const char *extra_headers)
{
    /* a path that already has a query gets our parameter appended */
    char sep = strchr(path, '?') ? '&' : '?';
    int n = snprintf(out, cap,
                     "GET %s%c%s=%s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s\r\n",
                     path, sep, query_key, query_value, host_port, key, extra_headers);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

size_t wsc_head_len(const char *buf, size_t n)
{
    for (size_t i = 3; i < n; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

static void wsc_accept_for(const char *key, char out[WSC_ACCEPT_LEN + 1])
{
    char buf[WSC_KEY_LEN + sizeof wsc_guid];
    size_t kl = strlen(key);
    memcpy(buf, key, kl);
    memcpy(buf + kl, wsc_guid, sizeof wsc_guid - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(buf, kl + sizeof wsc_guid - 1, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    out[WSC_ACCEPT_LEN] = '\0';
}

/* Case-insensitive search for a token in a comma list value ("keep-alive, Upgrade"). */
static bool wsc_has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

bool wsc_response_ok(const char *head, size_t len, const char *key, char *why, size_t why_cap)
{
    const char *end = head + len;
    const char *eol = memchr(head, '\r', len);
    if (!eol)
        eol = end;
    size_t sl = (size_t)(eol - head);
    /* "HTTP/1.1 101 ..." */
    if (sl < 12 || strncmp(head, "HTTP/1.", 7) != 0 || strncmp(head + 8, " 101", 4) != 0) {
        snprintf(why, why_cap, "status: %.*s", (int)(sl > 80 ? 80 : sl), head);
        return false;
    }
    bool upgrade = false, connection = false, accept = false;
    char want[WSC_ACCEPT_LEN + 1];
    wsc_accept_for(key, want);
    const char *p = eol;
    while (p < end) {
        while (p < end && (*p == '\r' || *p == '\n'))
            p++;
        const char *le = p;
        while (le < end && *le != '\r')
            le++;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t nl = (size_t)(colon - p);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(le - v);
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (nl == 7 && strncasecmp(p, "upgrade", 7) == 0)
                upgrade = wsc_has_token(v, vl, "websocket");
            else if (nl == 10 && strncasecmp(p, "connection", 10) == 0)
                connection = wsc_has_token(v, vl, "upgrade");
            else if (nl == 20 && strncasecmp(p, "sec-websocket-accept", 20) == 0)
                accept = vl == WSC_ACCEPT_LEN && memcmp(v, want, WSC_ACCEPT_LEN) == 0;
        }
        p = le;
    }
    if (!upgrade || !connection || !accept) {
        snprintf(why, why_cap, "bad 101 response:%s%s%s", upgrade ? "" : " no Upgrade: websocket",
                 connection ? "" : " no Connection: upgrade", accept ? "" : " wrong/missing accept");
        return false;
    }
    return true;
}

bool wsc_response_deflate(const char *head, size_t len)
{
    static const char name[] = "\r\nsec-websocket-extensions:";
    size_t nl = sizeof name - 1;
    for (size_t i = 0; i + nl <= len; i++) {
        if (strncasecmp(head + i, name, nl) != 0)
            continue;
        const char *v = head + i + nl, *end = head + len;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        return (size_t)(end - v) >= 18 && strncasecmp(v, "permessage-deflate", 18) == 0;
    }
    return false;
}

size_t wsc_header(uint8_t *out, uint8_t opcode, uint64_t len, uint32_t mask)
{
    size_t n = 0;
    out[n++] = (uint8_t)(0x80u | opcode);
    if (len < 126) {
        out[n++] = (uint8_t)(0x80u | len);
    } else if (len < 65536) {
        out[n++] = 0x80u | 126u;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80u | 127u;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)(len >> (8 * i));
    }
    memcpy(out + n, &mask, 4);
    return n + 4;
}

void wsc_mask(uint8_t *p, size_t n, uint32_t mask)
{
    /* the mask is applied byte-wise in memory order, so a word made of the
     * mask's own bytes repeated XORs 8 payload bytes at once */
    uint64_t m8 = ((uint64_t)mask << 32) | mask;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m8;
        memcpy(p + i, &w, 8);
    }
    const uint8_t *mb = (const uint8_t *)&mask;
    for (; i < n; i++)
        p[i] ^= mb[i & 3];
}

size_t wsc_control(uint8_t out[WSC_CTL_FRAME], uint8_t opcode, const uint8_t *payload,
                   size_t n, uint32_t mask)
{
    if (n > WSC_MAX_CONTROL)
        n = WSC_MAX_CONTROL;
    size_t h = wsc_header(out, opcode, n, mask);
    if (n)
        memcpy(out + h, payload, n);
    wsc_mask(out + h, n, mask);
    return h + n;
}

void wsc_reader_init(wsc_reader *r)
{
    memset(r, 0, sizeof *r);
    r->hdr_need = 2;
    r->head_want = MSG_HEAD;
}

void wsc_reader_init_capture(wsc_reader *r, uint16_t head_want)
{
    wsc_reader_init(r);
    r->head_want = head_want > WSC_HEAD_CAP ? WSC_HEAD_CAP : head_want;
    r->want_tail = true;
}

void wsc_reader_enable_deflate(wsc_reader *r) { r->deflate = true; }

void wsc_reader_free(wsc_reader *r)
{
    free(r->zbuf);
    r->zbuf = NULL;
    r->zlen = r->zcap = 0;
}

/* Keeps what the bench looks at of a message's (plain) payload: its first
 * head_want bytes, its last WSC_TAIL bytes, its length. */
static void wsc_capture(wsc_reader *r, const uint8_t *p, size_t take)
{
    if (r->head_have < r->head_want) {
        size_t k = (size_t)(r->head_want - r->head_have);
        if (k > take)
            k = take;
        memcpy(r->head + r->head_have, p, k);
        r->head_have = (uint16_t)(r->head_have + k);
    }
    if (r->want_tail) {
        /* per chunk, not per byte: shift in its last <= 4 bytes */
        if (take >= WSC_TAIL) {
            memcpy(r->tail, p + take - WSC_TAIL, WSC_TAIL);
        } else {
            memmove(r->tail, r->tail + take, WSC_TAIL - take);
            memcpy(r->tail + WSC_TAIL - take, p, take);
        }
    }
    r->msg_len += take;
}

static bool wsc_zappend(wsc_reader *r, const uint8_t *p, size_t n)
{
    if ((uint64_t)r->zlen + n > (1u << 30))
        return false;
    if (r->zlen + n > r->zcap) {
        size_t cap = r->zcap ? r->zcap : 256;
        while (cap < r->zlen + n)
            cap *= 2;
        uint8_t *b = realloc(r->zbuf, cap);
        if (!b)
            return false;
        r->zbuf = b;
        r->zcap = (uint32_t)cap;
    }
    memcpy(r->zbuf + r->zlen, p, n);
    r->zlen += (uint32_t)n;
    return true;
}

/* One decompressor and output buffer per thread: messages are whole when
 * inflated, so nothing of a connection's stream lives between reads except
 * its compressed bytes. The tail (RFC 7692 7.2.2) is followed by an empty
 * final block so libdeflate sees a complete stream whether the server ended
 * the message with a sync flush or a final block. */
static _Thread_local struct libdeflate_decompressor *wsc_dec;
static _Thread_local uint8_t *wsc_out;
static _Thread_local size_t wsc_out_cap;

void wsc_thread_done(void)
{
    if (wsc_dec)
        libdeflate_free_decompressor(wsc_dec);
    free(wsc_out);
    wsc_dec = NULL;
    wsc_out = NULL;
    wsc_out_cap = 0;
}

static bool wsc_inflate_message(wsc_reader *r)
{
    static const uint8_t tail[] = {0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff};
    if (!wsc_zappend(r, tail, sizeof tail))
        return false;
    if (!wsc_dec && !(wsc_dec = libdeflate_alloc_decompressor()))
        return false;
    if (!wsc_out) {
        wsc_out_cap = 1u << 16;
        if (!(wsc_out = malloc(wsc_out_cap)))
            return false;
    }
    for (;;) {
        size_t got = 0, used = 0;
        enum libdeflate_result rc = libdeflate_deflate_decompress_ex(
            wsc_dec, r->zbuf, r->zlen, wsc_out, wsc_out_cap, &used, &got);
        if (rc == LIBDEFLATE_SUCCESS) {
            wsc_capture(r, wsc_out, got);
            break;
        }
        if (rc != LIBDEFLATE_INSUFFICIENT_SPACE || wsc_out_cap >= (1u << 28))
            return false;
        uint8_t *b = realloc(wsc_out, wsc_out_cap * 2);
        if (!b)
            return false;
        wsc_out = b;
        wsc_out_cap *= 2;
    }
    r->zlen = 0;
    if (r->zcap > (1u << 16)) /* a large message: do not keep its buffer */
        wsc_reader_free(r);
    return true;
}

/* Header complete: validate it and set up the payload phase. */
static int wsc_begin_frame(wsc_reader *r)
{
    uint8_t b0 = r->hdr[0], b1 = r->hdr[1];
    bool rsv1 = b0 & 0x40u, first = (b0 & 0x0fu) == WSC_OP_TEXT || (b0 & 0x0fu) == WSC_OP_BINARY;
    /* RSV1 only with permessage-deflate, on a data message's first frame */
    if ((b0 & 0x30u) || (rsv1 && (!r->deflate || !first)))
        return WSC_FEED_ERROR;
    if (b1 & 0x80u)
        return WSC_FEED_ERROR; /* servers must not mask */
    r->fin = (b0 & 0x80u) != 0;
    r->opcode = b0 & 0x0fu;
    uint64_t len = b1 & 0x7fu;
    if (len == 126) {
        len = ((uint64_t)r->hdr[2] << 8) | r->hdr[3];
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | r->hdr[2 + i];
        if (len >> 63)
            return WSC_FEED_ERROR;
    }
    r->remaining = len;
    switch (r->opcode) {
    case WSC_OP_CLOSE:
    case WSC_OP_PING:
    case WSC_OP_PONG:
        if (!r->fin || len > WSC_MAX_CONTROL)
            return WSC_FEED_ERROR;
        r->ctl_have = 0;
        r->ctl_len = (uint8_t)len;
        break;
    case WSC_OP_TEXT:
    case WSC_OP_BINARY:
        if (r->in_msg)
            return WSC_FEED_ERROR;
        r->in_msg = true;
        r->msg_op = r->opcode;
        r->msg_len = 0;
        r->head_have = 0;
        r->msg_z = rsv1;
        r->zlen = 0;
        break;
    case WSC_OP_CONT:
        if (!r->in_msg)
            return WSC_FEED_ERROR;
        break;
    default:
        return WSC_FEED_ERROR;
    }
    r->in_frame = true;
    return WSC_FEED_OK;
}

/* Payload of the current frame complete: dispatch it. */
static int wsc_end_frame(wsc_reader *r, const wsc_handler *h, void *ctx)
{
    r->in_frame = false;
    r->hdr_have = 0;
    r->hdr_need = 2;
    switch (r->opcode) {
    case WSC_OP_PING:
        h->on_ping(ctx, r->ctl, r->ctl_len);
        return WSC_FEED_OK;
    case WSC_OP_PONG:
        return WSC_FEED_OK;
    case WSC_OP_CLOSE: {
        int code = r->ctl_len >= 2 ? (r->ctl[0] << 8) | r->ctl[1] : -1;
        if (r->ctl_len == 1)
            return WSC_FEED_ERROR;
        h->on_close(ctx, code);
        return WSC_FEED_CLOSED;
    }
    default:
        if (r->fin) {
            r->in_msg = false;
            if (r->msg_z && !wsc_inflate_message(r))
                return WSC_FEED_ERROR;
            h->on_message(ctx, r->msg_op, r->head, r->msg_len);
        }
        return WSC_FEED_OK;
    }
}

int wsc_feed(wsc_reader *r, const uint8_t *p, size_t n, const wsc_handler *h, void *ctx)
{
    size_t i = 0;
    for (;;) {
        if (!r->in_frame) {
            if (i == n)
                return WSC_FEED_OK;
            while (r->hdr_have < r->hdr_need && i < n)
                r->hdr[r->hdr_have++] = p[i++];
            if (r->hdr_have < r->hdr_need)
                return WSC_FEED_OK;
            if (r->hdr_need == 2) {
                uint8_t l7 = r->hdr[1] & 0x7fu;
                /* a mask bit is an error anyway: don't wait for its key */
                r->hdr_need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0));
                if (r->hdr_have < r->hdr_need)
                    continue;
            }
            int rc = wsc_begin_frame(r);
            if (rc != WSC_FEED_OK)
                return rc;
        }
        /* payload (possibly empty) */
        size_t take = n - i;
        if (take > r->remaining)
            take = (size_t)r->remaining;
        if (take) {
            if (r->opcode >= WSC_OP_CLOSE) {
                memcpy(r->ctl + r->ctl_have, p + i, take);
                r->ctl_have = (uint8_t)(r->ctl_have + take);
            } else if (r->msg_z) {
                if (!wsc_zappend(r, p + i, take))
                    return WSC_FEED_ERROR;
            } else {
                wsc_capture(r, p + i, take);
            }
            i += take;
            r->remaining -= take;
        }
        if (r->remaining)
            return WSC_FEED_OK;
        int rc = wsc_end_frame(r, h, ctx);
        if (rc != WSC_FEED_OK)
            return rc;
    }
}

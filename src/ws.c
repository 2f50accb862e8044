#include "ws.h"

#include <openssl/evp.h>
#include <string.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int ws_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* 16 bytes encode to exactly 22 base64 characters plus "==". The last
 * character before the padding carries 2 unused bits that must be zero for
 * the encoding to be canonical. */
bool ws_key_valid(const char *key, size_t len)
{
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (ws_b64_value((unsigned char)key[i]) < 0)
            return false;
    return (ws_b64_value((unsigned char)key[21]) & 0x0F) == 0;
}

void ws_accept_key(const char *key, size_t len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* SHA-1 is what RFC 6455 mandates for the accept key, not a security
     * choice of ours. */
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) || !EVP_DigestUpdate(ctx, key, len) ||
        !EVP_DigestUpdate(ctx, ws_guid, sizeof ws_guid - 1) ||
        !EVP_DigestFinal_ex(ctx, digest, &dlen) || dlen != 20) {
        memset(out, 0, WS_ACCEPT_LEN + 1);
    } else {
        EVP_EncodeBlock((unsigned char *)out, digest, 20);
    }
    EVP_MD_CTX_free(ctx);
}

size_t ws_header_encode(uint8_t out[WS_MAX_SERVER_HEADER], bool fin, uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len <= 125) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t pos)
{
    size_t i = 0;
    /* Align the mask to the payload offset, then XOR 8 bytes at a time. */
    uint8_t m[8];
    for (int k = 0; k < 8; k++)
        m[k] = mask[(pos + (uint64_t)k) & 3];
    uint64_t m64;
    memcpy(&m64, m, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m64;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= m[i & 7];
}

bool ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

size_t ws_close_frame(uint8_t out[2 + WS_MAX_CONTROL], unsigned code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > WS_MAX_CONTROL - 2) {
        rlen = WS_MAX_CONTROL - 2;
        /* Cut on a character boundary: the reason must stay valid UTF-8. */
        while (rlen > 0 && ((unsigned char)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    out[0] = 0x80 | WS_OP_CLOSE;
    out[1] = (uint8_t)(2 + rlen);
    out[2] = (uint8_t)(code >> 8);
    out[3] = (uint8_t)code;
    if (rlen)
        memcpy(out + 4, reason, rlen);
    return 4 + rlen;
}

/* ---- incremental reader ------------------------------------------------ */

void ws_reader_init(ws_reader *r, uint64_t max_message)
{
    memset(r, 0, sizeof *r);
    r->max_message = max_message;
    utf8_init(&r->utf8);
}

void ws_reader_allow_rsv1(ws_reader *r) { r->rsv1_ok = true; }

/* Wire bytes allowed for a message: compressed data may be a little larger
 * than what it inflates to (stored blocks: 5 bytes per 64 KiB, plus slack). */
static uint64_t ws_wire_limit(const ws_reader *r)
{
    if (!r->msg_compressed || !r->max_message)
        return r->max_message;
    return r->max_message + r->max_message / 256 + 64;
}

static size_t ws_fail(ws_reader *r, ws_event *ev, unsigned code, size_t used)
{
    r->failed = true;
    r->fail_code = (uint16_t)code;
    ev->type = WS_EV_ERROR;
    ev->code = code;
    return used;
}

/* Header bytes needed given what we have so far. */
static size_t ws_header_need(const ws_reader *r)
{
    if (r->hdr_have < 2)
        return 2;
    size_t n = 2 + ((r->hdr[1] & 0x80) ? 4 : 0);
    uint8_t l7 = r->hdr[1] & 0x7F;
    if (l7 == 126)
        n += 2;
    else if (l7 == 127)
        n += 8;
    return n;
}

static bool ws_is_control(uint8_t op) { return op & 0x08; }

/* Validates a complete header and enters its payload. Returns 0 or the close
 * code to fail with. */
static unsigned ws_begin_frame(ws_reader *r)
{
    const uint8_t *h = r->hdr;
    uint8_t op = h[0] & 0x0F;
    uint8_t l7 = h[1] & 0x7F;
    size_t p = 2;
    uint64_t len = l7;
    bool rsv1 = h[0] & 0x40;
    if (h[0] & 0x30)
        return WS_CLOSE_PROTOCOL; /* no extension uses RSV2/RSV3 */
    /* RSV1 only with permessage-deflate, and only on a message's first frame
     * (RFC 7692 6.1): never on control frames or continuations. */
    if (rsv1 && (!r->rsv1_ok || (op != WS_OP_TEXT && op != WS_OP_BINARY)))
        return WS_CLOSE_PROTOCOL;
    if (!(h[1] & 0x80))
        return WS_CLOSE_PROTOCOL; /* clients must mask */
    if (l7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        p = 4;
    } else if (l7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        p = 10;
        if (len >> 63)
            return WS_CLOSE_PROTOCOL;
    }
    memcpy(r->mask, h + p, 4);
    r->opcode = op;
    r->fin = h[0] & 0x80;
    r->frame_len = len;
    r->frame_pos = 0;
    switch (op) {
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!r->fin || len > WS_MAX_CONTROL)
            return WS_CLOSE_PROTOCOL;
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (r->in_message)
            return WS_CLOSE_PROTOCOL;
        r->in_message = true;
        r->msg_opcode = op;
        r->msg_compressed = rsv1;
        r->msg_len = 0;
        utf8_init(&r->utf8);
        break;
    case WS_OP_CONT:
        if (!r->in_message)
            return WS_CLOSE_PROTOCOL;
        break;
    default:
        return WS_CLOSE_PROTOCOL; /* reserved opcode */
    }
    if (!ws_is_control(op) && r->max_message && len > ws_wire_limit(r) - r->msg_len)
        return WS_CLOSE_TOO_BIG;
    r->in_payload = true;
    r->frames++;
    return 0;
}

static size_t ws_control_event(ws_reader *r, ws_event *ev, size_t used)
{
    size_t n = (size_t)r->frame_len;
    ev->data = r->ctrl;
    ev->len = n;
    if (r->opcode == WS_OP_PING) {
        ev->type = WS_EV_PING;
    } else if (r->opcode == WS_OP_PONG) {
        ev->type = WS_EV_PONG;
    } else {
        if (n == 1)
            return ws_fail(r, ev, WS_CLOSE_PROTOCOL, used);
        ev->type = WS_EV_CLOSE;
        ev->code = WS_CLOSE_NO_STATUS;
        if (n >= 2) {
            ev->code = (unsigned)r->ctrl[0] << 8 | r->ctrl[1];
            if (!ws_close_code_valid(ev->code))
                return ws_fail(r, ev, WS_CLOSE_PROTOCOL, used);
            if (!utf8_valid(r->ctrl + 2, n - 2))
                return ws_fail(r, ev, WS_CLOSE_BAD_DATA, used);
            ev->data = r->ctrl + 2;
            ev->len = n - 2;
        }
    }
    return used;
}

static size_t ws_message_end(ws_reader *r, ws_event *ev, size_t used)
{
    r->end_pending = false;
    r->in_message = false;
    if (r->msg_opcode == WS_OP_TEXT && !r->msg_compressed && !utf8_complete(&r->utf8))
        return ws_fail(r, ev, WS_CLOSE_BAD_DATA, used);
    ev->type = WS_EV_MESSAGE_END;
    ev->opcode = r->msg_opcode;
    ev->compressed = r->msg_compressed;
    ev->len = 0;
    return used;
}

bool ws_reader_at_rest(const ws_reader *r)
{
    return !r->failed && !r->end_pending && !r->in_payload && r->hdr_have == 0 && !r->in_message;
}

size_t ws_reader_feed(ws_reader *r, uint8_t *buf, size_t len, ws_event *ev)
{
    size_t used = 0;
    ev->type = WS_EV_NONE;
    ev->data = NULL;
    ev->len = 0;
    ev->code = 0;
    ev->opcode = 0;
    ev->compressed = false;
    if (r->failed) {
        ev->type = WS_EV_ERROR;
        ev->code = r->fail_code;
        return 0;
    }
    if (r->end_pending)
        return ws_message_end(r, ev, 0);

    if (!r->in_payload) {
        size_t need;
        while (r->hdr_have < (need = ws_header_need(r))) {
            if (used == len)
                return used;
            r->hdr[r->hdr_have++] = buf[used++];
        }
        unsigned err = ws_begin_frame(r);
        if (err)
            return ws_fail(r, ev, err, used);
    }

    uint64_t remaining = r->frame_len - r->frame_pos;
    size_t take = remaining < (uint64_t)(len - used) ? (size_t)remaining : len - used;

    if (ws_is_control(r->opcode)) {
        memcpy(r->ctrl + r->frame_pos, buf + used, take);
        ws_unmask(r->ctrl + r->frame_pos, take, r->mask, r->frame_pos);
        r->frame_pos += take;
        used += take;
        if (r->frame_pos < r->frame_len)
            return used;
        r->in_payload = false;
        r->hdr_have = 0;
        return ws_control_event(r, ev, used);
    }

    if (take > 0) {
        uint8_t *p = buf + used;
        ws_unmask(p, take, r->mask, r->frame_pos);
        used += take;
        if (r->msg_opcode == WS_OP_TEXT && !r->msg_compressed && !utf8_feed(&r->utf8, p, take))
            return ws_fail(r, ev, WS_CLOSE_BAD_DATA, used);
        r->frame_pos += take;
        r->msg_len += take;
        ev->type = WS_EV_DATA;
        ev->opcode = r->msg_opcode;
        ev->compressed = r->msg_compressed;
        ev->data = p;
        ev->len = take;
    }
    if (r->frame_pos == r->frame_len) {
        r->in_payload = false;
        r->hdr_have = 0;
        if (r->fin) {
            if (ev->type == WS_EV_DATA)
                r->end_pending = true;
            else
                return ws_message_end(r, ev, used);
        }
    }
    return used;
}

#include "envelope.h"

#include "chan.h"
#include "sse.h"

#include <msgpack.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* ---- JSON, by hand: the schema is fixed, so a direct encoder is a few
 * dozen lines and several times faster than building a jansson tree. ---- */

size_t envelope_json_bound(const envelope_in *in)
{
    size_t data = in->binary ? (in->len + 2) / 3 * 4 + 1 : in->len * 6;
    return 96 + in->group_len + (in->epoch ? strlen(in->epoch) : 0) + data;
}

static size_t envelope_json_string(uint8_t *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            o[k++] = '\\';
            o[k++] = c;
        } else if (c < 0x20) {
            o[k++] = '\\';
            switch (c) {
            case '\n': o[k++] = 'n'; break;
            case '\r': o[k++] = 'r'; break;
            case '\t': o[k++] = 't'; break;
            default:
                o[k++] = 'u'; o[k++] = '0'; o[k++] = '0';
                o[k++] = (uint8_t)hex[c >> 4];
                o[k++] = (uint8_t)hex[c & 15];
            }
        } else {
            o[k++] = c; /* UTF-8 passes through: text payloads were validated */
        }
    }
    return k;
}

size_t envelope_json(const envelope_in *in, uint8_t *out, size_t cap)
{
    (void)cap;
    size_t k = 0;
    memcpy(out, "{\"group\":", 9);
    k = 9;
    if (in->group) {
        out[k++] = '"';
        memcpy(out + k, in->group, in->group_len); /* names need no escaping */
        k += in->group_len;
        out[k++] = '"';
    } else {
        memcpy(out + k, "null", 4);
        k += 4;
    }
    k += (size_t)sprintf((char *)out + k, ",\"offset\":%llu,\"epoch\":\"%s\",",
                         (unsigned long long)in->offset, in->epoch ? in->epoch : "");
    if (in->binary) {
        memcpy(out + k, "\"binary\":true,\"data\":\"", 22);
        k += 22;
        k += (size_t)EVP_EncodeBlock(out + k, in->data, (int)in->len);
    } else {
        memcpy(out + k, "\"data\":\"", 8);
        k += 8;
        k += envelope_json_string(out + k, in->data, in->len);
    }
    out[k++] = '"';
    out[k++] = '}';
    return k;
}

/* ---- msgpack, with msgpack-c writing into our buffer ---------------------- */

size_t envelope_msgpack_bound(const envelope_in *in)
{
    return 64 + in->group_len + (in->epoch ? strlen(in->epoch) : 0) + in->len;
}

typedef struct envelope_buf {
    uint8_t *p;
    size_t len, cap;
} envelope_buf;

static int envelope_buf_write(void *data, const char *buf, size_t len)
{
    envelope_buf *b = data;
    if (b->len + len > b->cap)
        return -1;
    memcpy(b->p + b->len, buf, len);
    b->len += len;
    return 0;
}

static int envelope_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

size_t envelope_msgpack(const envelope_in *in, uint8_t *out, size_t cap)
{
    envelope_buf b = {out, 0, cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, envelope_buf_write);
    size_t elen = in->epoch ? strlen(in->epoch) : 0;
    int rc = msgpack_pack_map(&pk, 4);
    rc |= envelope_pack_str(&pk, "group", 5);
    rc |= in->group ? envelope_pack_str(&pk, in->group, in->group_len) : msgpack_pack_nil(&pk);
    rc |= envelope_pack_str(&pk, "offset", 6);
    rc |= msgpack_pack_uint64(&pk, in->offset);
    rc |= envelope_pack_str(&pk, "epoch", 5);
    rc |= envelope_pack_str(&pk, in->epoch ? in->epoch : "", elen);
    rc |= envelope_pack_str(&pk, "data", 4);
    if (in->binary) {
        rc |= msgpack_pack_bin(&pk, in->len);
        rc |= msgpack_pack_bin_body(&pk, in->data, in->len);
    } else {
        rc |= msgpack_pack_str(&pk, in->len);
        rc |= msgpack_pack_str_body(&pk, in->data, in->len);
    }
    return rc == 0 ? b.len : 0; /* any write past cap fails its call */
}

/* ---- shared variants ------------------------------------------------------ */

static msg *envelope_build(const msg *m, msg_format f)
{
    const char *epoch = m->epoch ? m->epoch : chan_epoch();
    envelope_in in = {
        .group = m->group_len ? m->group : NULL,
        .group_len = m->group_len,
        .offset = m->offset,
        .epoch = epoch,
        .data = m->data + (m->len - m->payload_len),
        .len = m->payload_len,
        .binary = m->opcode == WS_OP_BINARY,
    };
    size_t cap = f == FORMAT_JSON ? envelope_json_bound(&in) : envelope_msgpack_bound(&in);
    msg *v = msg_alloc(cap);
    if (!v)
        return NULL;
    size_t n = f == FORMAT_JSON ? envelope_json(&in, msg_payload(v), cap)
                                : envelope_msgpack(&in, msg_payload(v), cap);
    if (n == 0) {
        msg_unref(v);
        return NULL;
    }
    v->payload_len = (uint32_t)n;
    if (cap - n > 4096) /* escaping bounds are generous: give the slack back */
        v = msg_trim(v, n);
    msg_finish(v, MSG_DATA, f == FORMAT_JSON ? WS_OP_TEXT : WS_OP_BINARY, m->group, m->group_len);
    v->publish_ns = m->publish_ns; /* latency is measured from the original publish */
    v->offset = m->offset;
    return v;
}

/* ---- SSE events (sse.h): the bytes of one event without its id line, which
 * each stream adds itself (conn_sse.c) ------------------------------------- */

static msg *envelope_build_sse(const msg *m, msg_format f)
{
    const uint8_t *payload = m->data + (m->len - m->payload_len);
    bool binary = m->opcode == WS_OP_BINARY;
    envelope_in in = {
        .group = m->group_len ? m->group : NULL,
        .group_len = m->group_len,
        .offset = m->offset,
        .epoch = m->epoch ? m->epoch : chan_epoch(),
        .data = payload,
        .len = m->payload_len,
        .binary = binary,
    };
    bool json = f == FORMAT_SSE_JSON || f == FORMAT_SSE_JSON_ID;
    /* One group's position is this message's: the id is the same for every
     * stream of that one group. */
    uint64_t off = m->offset;
    bool known = true;
    sse_pos pos = {in.epoch, strlen(in.epoch), &off, &known, 1};
    size_t idcap = f >= FORMAT_SSE_RAW_ID && m->group_len
                       ? sse_id_bound(pos.epoch_len, 1) + SSE_ID_LINE_EXTRA : 0;
    size_t cap = idcap + (json     ? envelope_json_bound(&in) + 8
                          : binary ? sse_binary_bound(m->payload_len)
                                   : sse_text_bound(0, m->payload_len));
    msg *v = msg_alloc(cap);
    if (!v)
        return NULL;
    size_t idlen = idcap ? sse_id_line(msg_payload(v), idcap, &pos) : 0;
    uint8_t *o = msg_payload(v) + idlen;
    size_t n;
    if (json) {
        memcpy(o, "data: ", 6);
        n = 6 + envelope_json(&in, o + 6, cap - 6); /* one line: JSON escapes line breaks */
        o[n++] = '\n';
        o[n++] = '\n';
    } else if (binary) {
        n = sse_encode_binary(o, payload, m->payload_len);
    } else {
        n = sse_encode_text(o, NULL, 0, payload, m->payload_len);
    }
    v->payload_len = (uint32_t)(idlen + n);
    n = v->payload_len;
    if (cap - n > 4096)
        v = msg_trim(v, n);
    /* Not a WebSocket frame: the event bytes are the whole message. */
    v->data = msg_payload(v);
    v->len = v->payload_len;
    v->kind = MSG_DATA;
    v->opcode = m->opcode;
    v->group_len = m->group_len;
    memcpy(v->group, m->group, (size_t)m->group_len + 1);
    v->publish_ns = m->publish_ns;
    v->offset = m->offset;
    v->epoch = m->epoch;
    v->epoch_gen = m->epoch_gen;
    return v;
}

msg *envelope_variant(msg *m, msg_format f)
{
    _Atomic(msg *) *slot = &m->variant[f - 1];
    msg *v = atomic_load_explicit(slot, memory_order_acquire);
    if (v)
        return v;
    msg *built = f >= FORMAT_SSE_RAW ? envelope_build_sse(m, f) : envelope_build(m, f);
    if (!built)
        return NULL;
    /* Two workers may race to build it: one wins, the other frees its copy. */
    if (atomic_compare_exchange_strong_explicit(slot, &v, built, memory_order_acq_rel,
                                                memory_order_acquire))
        return built;
    msg_unref(built);
    return v;
}

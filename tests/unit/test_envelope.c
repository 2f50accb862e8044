/* Unit tests for the message envelopes (src/envelope.c).
 *
 * envelope_json / envelope_msgpack are called directly: exact bytes for
 * known inputs (escaping, base64, null group, offset limits), then every
 * output is decoded by an independent parser -- jansson for JSON, msgpack-c's
 * unpacker for msgpack -- and compared field by field with the input. Every
 * call writes into a buffer of exactly *_bound bytes followed by a guard
 * zone, so writing past the bound is caught even without ASan.
 * envelope_variant: built once, cached, shared, framed, freed with the
 * message (ASan/LSan builds catch leaks), and race-free across threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <pthread.h>

#include "envelope.h"
#include "msg.h"

#define EPOCH "0123456789abcdef"
#define GUARD 64
#define GUARD_BYTE 0xA5

/* ---- helpers -------------------------------------------------------------- */

static envelope_in text_in(const char *group, uint64_t off, const void *data, size_t len)
{
    envelope_in in = {group, group ? strlen(group) : 0, off, EPOCH, data, len, false};
    return in;
}

static envelope_in bin_in(const char *group, uint64_t off, const void *data, size_t len)
{
    envelope_in in = text_in(group, off, data, len);
    in.binary = true;
    return in;
}

/* Encodes into a buffer of exactly bound bytes plus a guard; checks the
 * length against the bound and the guard. Returns a malloc'd copy (NUL
 * terminated for convenience) and its length. */
static uint8_t *encode(const envelope_in *in, msg_format f, size_t *len)
{
    size_t bound = f == FORMAT_JSON ? envelope_json_bound(in) : envelope_msgpack_bound(in);
    uint8_t *buf = malloc(bound + GUARD);
    assert_non_null(buf);
    memset(buf, GUARD_BYTE, bound + GUARD);
    size_t n = f == FORMAT_JSON ? envelope_json(in, buf, bound) : envelope_msgpack(in, buf, bound);
    if (n == 0 || n > bound)
        fail_msg("%s envelope of %zu data bytes: length %zu, bound %zu",
                 f == FORMAT_JSON ? "JSON" : "msgpack", in->len, n, bound);
    for (size_t i = 0; i < GUARD; i++)
        if (buf[bound + i] != GUARD_BYTE)
            fail_msg("%s envelope of %zu data bytes wrote past its bound (%zu) at +%zu",
                     f == FORMAT_JSON ? "JSON" : "msgpack", in->len, bound, i);
    uint8_t *out = malloc(n + 1);
    assert_non_null(out);
    memcpy(out, buf, n);
    out[n] = '\0';
    free(buf);
    *len = n;
    return out;
}

static void expect_json_exact(const envelope_in *in, const char *want)
{
    size_t n;
    uint8_t *out = encode(in, FORMAT_JSON, &n);
    if (n != strlen(want) || memcmp(out, want, n) != 0)
        fail_msg("JSON envelope\n  got:  %.*s\n  want: %s", (int)n, out, want);
    free(out);
}

static uint8_t *b64decode(const char *s, size_t n, size_t *outlen)
{
    uint8_t *out = malloc(n / 4 * 3 + 3);
    assert_non_null(out);
    int k = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    assert_true(k >= 0);
    size_t pad = (n >= 1 && s[n - 1] == '=') + (n >= 2 && s[n - 2] == '=');
    *outlen = (size_t)k - pad;
    return out;
}

/* Parses the JSON envelope with jansson and checks every field. */
static void check_json_decodes(const envelope_in *in)
{
    size_t n;
    uint8_t *out = encode(in, FORMAT_JSON, &n);
    json_error_t err;
    json_t *o = json_loadb((const char *)out, n, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &err);
    if (!o)
        fail_msg("jansson rejects the JSON envelope (%s at %d): %.*s", err.text, err.position,
                 (int)(n > 300 ? 300 : n), out);
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), in->binary ? 5 : 4);
    json_t *g = json_object_get(o, "group");
    if (in->group) {
        assert_true(json_is_string(g));
        assert_int_equal(json_string_length(g), in->group_len);
        assert_memory_equal(json_string_value(g), in->group, in->group_len);
    } else {
        assert_true(json_is_null(g));
    }
    json_t *off = json_object_get(o, "offset");
    assert_true(json_is_integer(off));
    /* jansson integers are signed 64-bit; compare what fits */
    if (in->offset <= (uint64_t)INT64_MAX)
        assert_int_equal((uint64_t)json_integer_value(off), in->offset);
    json_t *e = json_object_get(o, "epoch");
    assert_true(json_is_string(e));
    assert_string_equal(json_string_value(e), in->epoch ? in->epoch : "");
    json_t *d = json_object_get(o, "data");
    assert_true(json_is_string(d));
    if (in->binary) {
        assert_true(json_is_true(json_object_get(o, "binary")));
        size_t bl;
        uint8_t *b = b64decode(json_string_value(d), json_string_length(d), &bl);
        assert_int_equal(bl, in->len);
        if (bl)
            assert_memory_equal(b, in->data, bl);
        free(b);
    } else {
        assert_null(json_object_get(o, "binary"));
        assert_int_equal(json_string_length(d), in->len);
        if (in->len)
            assert_memory_equal(json_string_value(d), in->data, in->len);
    }
    json_decref(o);
    free(out);
}

static void expect_str(const msgpack_object *o, const char *s, size_t n)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, n);
    if (n)
        assert_memory_equal(o->via.str.ptr, s, n);
}

/* Decodes the msgpack envelope with msgpack-c and checks every field, in the
 * documented key order group, offset, epoch, data. */
static void check_msgpack_decodes(const envelope_in *in)
{
    size_t n;
    uint8_t *out = encode(in, FORMAT_MSGPACK, &n);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t pos = 0;
    msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)out, n, &pos);
    assert_int_equal(r, MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(pos, n); /* one object, nothing after it */
    msgpack_object *o = &u.data;
    assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o->via.map.size, 4);
    msgpack_object_kv *kv = o->via.map.ptr;
    expect_str(&kv[0].key, "group", 5);
    if (in->group)
        expect_str(&kv[0].val, in->group, in->group_len);
    else
        assert_int_equal(kv[0].val.type, MSGPACK_OBJECT_NIL);
    expect_str(&kv[1].key, "offset", 6);
    assert_int_equal(kv[1].val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_true(kv[1].val.via.u64 == in->offset);
    expect_str(&kv[2].key, "epoch", 5);
    expect_str(&kv[2].val, in->epoch ? in->epoch : "", in->epoch ? strlen(in->epoch) : 0);
    expect_str(&kv[3].key, "data", 4);
    if (in->binary) {
        assert_int_equal(kv[3].val.type, MSGPACK_OBJECT_BIN);
        assert_int_equal(kv[3].val.via.bin.size, in->len);
        if (in->len)
            assert_memory_equal(kv[3].val.via.bin.ptr, in->data, in->len);
    } else {
        expect_str(&kv[3].val, (const char *)in->data, in->len);
    }
    msgpack_unpacked_destroy(&u);

    /* the streaming unpacker agrees, fed a few bytes at a time */
    msgpack_unpacker *up = msgpack_unpacker_new(64);
    assert_non_null(up);
    msgpack_unpacked u2;
    msgpack_unpacked_init(&u2);
    size_t fed = 0;
    int got = 0;
    while (fed < n) {
        size_t chunk = n - fed < 7 ? n - fed : 7;
        assert_true(msgpack_unpacker_reserve_buffer(up, chunk));
        memcpy(msgpack_unpacker_buffer(up), out + fed, chunk);
        msgpack_unpacker_buffer_consumed(up, chunk);
        fed += chunk;
        while (msgpack_unpacker_next(up, &u2) == MSGPACK_UNPACK_SUCCESS) {
            got++;
            assert_int_equal(u2.data.type, MSGPACK_OBJECT_MAP);
            assert_int_equal(u2.data.via.map.size, 4);
        }
    }
    assert_int_equal(got, 1);
    msgpack_unpacked_destroy(&u2);
    msgpack_unpacker_free(up);
    free(out);
}

static void check_both(const envelope_in *in)
{
    check_json_decodes(in);
    check_msgpack_decodes(in);
}

/* ---- JSON: exact output --------------------------------------------------- */

static void test_json_text_exact(void **state)
{
    (void)state;
    envelope_in in = text_in("news", 7, "hello", 5);
    expect_json_exact(&in, "{\"group\":\"news\",\"offset\":7,\"epoch\":\"" EPOCH
                           "\",\"data\":\"hello\"}");
    in = text_in("a.b:c-d_E9", 1, "", 0);
    expect_json_exact(&in, "{\"group\":\"a.b:c-d_E9\",\"offset\":1,\"epoch\":\"" EPOCH
                           "\",\"data\":\"\"}");
}

static void test_json_null_group(void **state)
{
    (void)state;
    envelope_in in = text_in(NULL, 3, "all", 3);
    expect_json_exact(&in, "{\"group\":null,\"offset\":3,\"epoch\":\"" EPOCH "\",\"data\":\"all\"}");
    check_both(&in);
    in = bin_in(NULL, 4, "\x00\x01", 2);
    expect_json_exact(&in, "{\"group\":null,\"offset\":4,\"epoch\":\"" EPOCH
                           "\",\"binary\":true,\"data\":\"AAE=\"}");
    check_both(&in);
}

static void test_json_escaping(void **state)
{
    (void)state;
    static const char s[] = "q\"b\\s/n\nr\rt\tnul\0x\x01y\x1f\x7f";
    envelope_in in = text_in("g", 1, s, sizeof s - 1);
    expect_json_exact(&in, "{\"group\":\"g\",\"offset\":1,\"epoch\":\"" EPOCH
                           "\",\"data\":\"q\\\"b\\\\s/n\\nr\\rt\\tnul\\u0000x\\u0001y\\u001f\x7f\"}");
    check_both(&in);
}

static void test_json_every_control_char(void **state)
{
    (void)state;
    uint8_t s[32];
    for (int i = 0; i < 32; i++)
        s[i] = (uint8_t)i;
    envelope_in in = text_in("ctl", 9, s, sizeof s);
    check_both(&in);
    /* the worst case of the bound: every byte becomes \u00XX */
    uint8_t worst[1000];
    memset(worst, 0x01, sizeof worst);
    in = text_in("ctl", UINT64_MAX, worst, sizeof worst);
    size_t n;
    uint8_t *out = encode(&in, FORMAT_JSON, &n);
    free(out);
    check_msgpack_decodes(&in);
    in.offset = (uint64_t)INT64_MAX; /* the largest offset jansson reads back */
    check_both(&in);
}

static void test_json_utf8_passthrough(void **state)
{
    (void)state;
    /* 2, 3 and 4-byte sequences, U+2028/2029, U+FEFF: copied as they are */
    static const char s[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8\xe2\x80\xa9\xef\xbb\xbf";
    envelope_in in = text_in("u", 2, s, sizeof s - 1);
    char want[256];
    snprintf(want, sizeof want, "{\"group\":\"u\",\"offset\":2,\"epoch\":\"" EPOCH "\",\"data\":\"%s\"}", s);
    expect_json_exact(&in, want);
    check_both(&in);
}

static void test_json_binary_base64(void **state)
{
    (void)state;
    static const struct {
        const char *data;
        size_t len;
        const char *b64;
    } cases[] = {
        {"", 0, ""},          {"f", 1, "Zg=="},          {"fo", 2, "Zm8="},
        {"foo", 3, "Zm9v"},   {"foob", 4, "Zm9vYg=="},   {"fooba", 5, "Zm9vYmE="},
        {"foobar", 6, "Zm9vYmFy"}, {"\xff\xfe\x00\"\\", 5, "//4AIlw="},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        envelope_in in = bin_in("bin", 10 + i, cases[i].data, cases[i].len);
        char want[200];
        snprintf(want, sizeof want,
                 "{\"group\":\"bin\",\"offset\":%zu,\"epoch\":\"" EPOCH
                 "\",\"binary\":true,\"data\":\"%s\"}",
                 10 + i, cases[i].b64);
        expect_json_exact(&in, want);
        check_both(&in);
    }
}

static void test_offsets_limits(void **state)
{
    (void)state;
    envelope_in in = text_in("o", 0, "x", 1);
    expect_json_exact(&in, "{\"group\":\"o\",\"offset\":0,\"epoch\":\"" EPOCH "\",\"data\":\"x\"}");
    check_both(&in);
    in.offset = UINT64_MAX;
    expect_json_exact(&in, "{\"group\":\"o\",\"offset\":18446744073709551615,\"epoch\":\"" EPOCH
                           "\",\"data\":\"x\"}");
    check_msgpack_decodes(&in);
    /* msgpack integer widths: fixint, uint8, uint16, uint32, uint64 */
    uint64_t offs[] = {1, 127, 128, 255, 256, 65535, 65536, 4294967295ull, 4294967296ull,
                       (uint64_t)INT64_MAX, UINT64_MAX};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        in.offset = offs[i];
        check_msgpack_decodes(&in);
        if (offs[i] <= (uint64_t)INT64_MAX)
            check_json_decodes(&in);
    }
}

static void test_no_epoch(void **state)
{
    (void)state;
    envelope_in in = text_in("e", 1, "x", 1);
    in.epoch = NULL;
    expect_json_exact(&in, "{\"group\":\"e\",\"offset\":1,\"epoch\":\"\",\"data\":\"x\"}");
    check_both(&in);
}

static void test_long_group(void **state)
{
    (void)state;
    char g[129];
    memset(g, 'G', 128);
    g[128] = '\0';
    envelope_in in = text_in(g, 5, "x", 1);
    check_both(&in);
    in = bin_in(g, UINT64_MAX, "\x01\x02\x03", 3);
    check_msgpack_decodes(&in);
    size_t n;
    free(encode(&in, FORMAT_JSON, &n));
}

/* Every length 0..600 and some large ones, text and binary, random bytes
 * (text: printable ASCII, controls, quotes, backslashes and UTF-8 mixed). */
static void test_bounds_and_decoding_sweep(void **state)
{
    (void)state;
    static const char *pieces[] = {"a", "\"", "\\", "\n", "\x01", "\x1f", "\xc3\xa9",
                                   "\xe2\x82\xac", "\xf0\x9f\x98\x80", " ", "\x7f", "/"};
    srand(12345);
    size_t sizes[620];
    size_t ns = 0;
    for (size_t i = 0; i <= 600; i++)
        sizes[ns++] = i;
    size_t big[] = {4095, 4096, 65535, 65536, 70000, 200000};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        sizes[ns++] = big[i];
    for (size_t k = 0; k < ns; k++) {
        size_t len = sizes[k];
        uint8_t *b = malloc(len + 1);
        assert_non_null(b);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)rand();
        envelope_in in = bin_in(k % 3 ? "sweep" : NULL, k + 1, b, len);
        check_both(&in);
        /* text of about len bytes made of whole UTF-8 pieces */
        size_t t = 0;
        while (t < len) {
            const char *p = pieces[(size_t)rand() % (sizeof pieces / sizeof pieces[0])];
            size_t pl = strlen(p);
            if (t + pl > len)
                p = "b", pl = 1;
            memcpy(b + t, p, pl);
            t += pl;
        }
        in = text_in(k % 3 ? "sweep" : NULL, k + 1, b, t);
        check_both(&in);
        free(b);
    }
}

/* str8/str16/str32 and bin8/bin16/bin32 headers at their boundaries */
static void test_msgpack_length_boundaries(void **state)
{
    (void)state;
    size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t *b = malloc(lens[i] + 1);
        assert_non_null(b);
        memset(b, 'm', lens[i]);
        envelope_in in = text_in("mp", 1, b, lens[i]);
        check_msgpack_decodes(&in);
        in.binary = true;
        check_msgpack_decodes(&in);
        free(b);
    }
}

static void test_msgpack_exact(void **state)
{
    (void)state;
    envelope_in in = text_in("g", 5, "hi", 2);
    size_t n;
    uint8_t *out = encode(&in, FORMAT_MSGPACK, &n);
    static const uint8_t want[] = {
        0x84,                                   /* fixmap 4 */
        0xa5, 'g', 'r', 'o', 'u', 'p', 0xa1, 'g',
        0xa6, 'o', 'f', 'f', 's', 'e', 't', 0x05,
        0xa5, 'e', 'p', 'o', 'c', 'h', 0xb0, '0', '1', '2', '3', '4', '5', '6', '7',
        '8', '9', 'a', 'b', 'c', 'd', 'e', 'f',
        0xa4, 'd', 'a', 't', 'a', 0xa2, 'h', 'i',
    };
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);
    free(out);
    /* binary data is bin8, a null group is nil */
    in = bin_in(NULL, 5, "hi", 2);
    out = encode(&in, FORMAT_MSGPACK, &n);
    assert_int_equal(out[7], 0xc0);
    assert_int_equal(out[n - 4], 0xc4);
    assert_int_equal(out[n - 3], 2);
    free(out);
}

/* The header promises "0 when cap is too small": every cap below the real
 * size must give 0 (a partial envelope must never be reported as written),
 * and the bytes written must stay within cap. */
static void test_msgpack_small_cap_returns_zero(void **state)
{
    (void)state;
    const envelope_in ins[] = {
        text_in("g", 5, "", 0),
        text_in("g", 5, "hi", 2),
        bin_in(NULL, 300, "abc", 3),
        text_in("group", 70000, "0123456789012345678901234567890123456789", 40),
    };
    for (size_t k = 0; k < sizeof ins / sizeof ins[0]; k++) {
        size_t full;
        free(encode(&ins[k], FORMAT_MSGPACK, &full));
        for (size_t cap = 0; cap < full; cap++) {
            uint8_t *buf = malloc(cap + GUARD);
            assert_non_null(buf);
            memset(buf, GUARD_BYTE, cap + GUARD);
            size_t n = envelope_msgpack(&ins[k], buf, cap);
            bool overrun = false;
            for (size_t i = 0; i < GUARD; i++)
                overrun |= buf[cap + i] != GUARD_BYTE;
            free(buf);
            if (overrun)
                fail_msg("case %zu: envelope_msgpack wrote past cap %zu", k, cap);
            if (n != 0)
                fail_msg("case %zu (data len %zu, envelope %zu bytes): cap %zu returned %zu, "
                         "expected 0 (the output is a truncated, invalid envelope)",
                         k, ins[k].len, full, cap, n);
        }
    }
}

/* ---- envelope_variant ----------------------------------------------------- */

static msg *published(const char *group, uint8_t opcode, const void *p, size_t n, uint64_t off)
{
    msg *m = msg_alloc(n);
    assert_non_null(m);
    if (n)
        memcpy(msg_payload(m), p, n);
    m->payload_len = (uint32_t)n;
    msg_finish(m, MSG_DATA, opcode, group, group ? strlen(group) : 0);
    m->offset = off;
    m->epoch = EPOCH; /* stamped when sequenced (worker_sequence) */
    return m;
}

/* v is a finished server frame (header + payload) whose payload is want. */
static void check_frame(const msg *v, uint8_t opcode, const uint8_t *want, size_t wn)
{
    assert_int_equal(v->payload_len, wn);
    assert_int_equal(v->opcode, opcode);
    assert_int_equal(v->kind, MSG_DATA);
    const uint8_t *d = v->data;
    assert_int_equal(d[0], 0x80 | opcode);
    size_t h, plen = d[1] & 0x7f;
    if (plen < 126) {
        h = 2;
    } else if (plen == 126) {
        h = 4;
        plen = (size_t)d[2] << 8 | d[3];
    } else {
        h = 10;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | d[2 + i];
    }
    assert_int_equal(plen, wn);
    assert_int_equal(v->len, h + wn);
    assert_memory_equal(d + h, want, wn);
}

static void test_variant_built_once_and_shared(void **state)
{
    (void)state;
    msg *m = published("room", WS_OP_TEXT, "hello \"x\"", 9, 42);
    msg *j = envelope_variant(m, FORMAT_JSON);
    assert_non_null(j);
    assert_ptr_equal(envelope_variant(m, FORMAT_JSON), j);
    msg *p = envelope_variant(m, FORMAT_MSGPACK);
    assert_non_null(p);
    assert_ptr_not_equal(p, j);
    assert_ptr_equal(envelope_variant(m, FORMAT_MSGPACK), p);
    assert_int_equal(j->offset, 42);
    assert_int_equal(p->offset, 42);
    assert_true(j->publish_ns == m->publish_ns);
    assert_int_equal(atomic_load(&j->refs), 1); /* owned by m only */

    envelope_in in = text_in("room", 42, "hello \"x\"", 9);
    size_t n;
    uint8_t *want = encode(&in, FORMAT_JSON, &n);
    check_frame(j, WS_OP_TEXT, want, n);
    free(want);
    want = encode(&in, FORMAT_MSGPACK, &n);
    check_frame(p, WS_OP_BINARY, want, n);
    free(want);
    /* the original is untouched */
    check_frame(m, WS_OP_TEXT, (const uint8_t *)"hello \"x\"", 9);
    msg_unref(m); /* frees both variants (LSan checks) */
}

static void test_variant_binary_and_broadcast(void **state)
{
    (void)state;
    msg *m = published(NULL, WS_OP_BINARY, "\x00\xff", 2, 9);
    msg *j = envelope_variant(m, FORMAT_JSON);
    assert_non_null(j);
    static const char want[] = "{\"group\":null,\"offset\":9,\"epoch\":\"" EPOCH
                               "\",\"binary\":true,\"data\":\"AP8=\"}";
    check_frame(j, WS_OP_TEXT, (const uint8_t *)want, sizeof want - 1);
    msg *p = envelope_variant(m, FORMAT_MSGPACK);
    envelope_in in = bin_in(NULL, 9, "\x00\xff", 2);
    size_t n;
    uint8_t *wp = encode(&in, FORMAT_MSGPACK, &n);
    check_frame(p, WS_OP_BINARY, wp, n);
    free(wp);
    msg_unref(m);
}

/* Large text: the bound is 6x the payload, the variant gives the slack back
 * (realloc) and must still be a correct frame. */
static void test_variant_large_payloads(void **state)
{
    (void)state;
    size_t sizes[] = {125, 126, 65535, 65536, 300000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t len = sizes[k];
        uint8_t *b = malloc(len);
        assert_non_null(b);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)('a' + i % 26);
        b[len / 2] = '"';
        msg *m = published("big", WS_OP_TEXT, b, len, 1000 + k);
        msg *j = envelope_variant(m, FORMAT_JSON);
        msg *p = envelope_variant(m, FORMAT_MSGPACK);
        assert_non_null(j);
        assert_non_null(p);
        envelope_in in = text_in("big", 1000 + k, b, len);
        size_t n;
        uint8_t *want = encode(&in, FORMAT_JSON, &n);
        check_frame(j, WS_OP_TEXT, want, n);
        free(want);
        want = encode(&in, FORMAT_MSGPACK, &n);
        check_frame(p, WS_OP_BINARY, want, n);
        free(want);
        msg_unref(m);
        free(b);
    }
}

typedef struct race {
    msg *m;
    msg_format f;
    msg *got;
    pthread_barrier_t *bar;
} race;

static void *race_main(void *arg)
{
    race *r = arg;
    pthread_barrier_wait(r->bar);
    r->got = envelope_variant(r->m, r->f);
    return NULL;
}

static void test_variant_race(void **state)
{
    (void)state;
    enum { T = 8, ROUNDS = 200 };
    for (int round = 0; round < ROUNDS; round++) {
        msg *m = published("race", WS_OP_TEXT, "payload", 7, (uint64_t)round + 1);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, T);
        pthread_t th[T];
        race r[T];
        for (int i = 0; i < T; i++) {
            r[i] = (race){m, i % 2 ? FORMAT_MSGPACK : FORMAT_JSON, NULL, &bar};
            assert_int_equal(pthread_create(&th[i], NULL, race_main, &r[i]), 0);
        }
        for (int i = 0; i < T; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        for (int i = 0; i < T; i++) {
            assert_non_null(r[i].got);
            assert_ptr_equal(r[i].got, r[i % 2].got); /* one per format for everyone */
        }
        assert_ptr_not_equal(r[0].got, r[1].got);
        assert_int_equal(atomic_load(&r[0].got->refs), 1);
        msg_unref(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_text_exact),
        cmocka_unit_test(test_json_null_group),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_json_every_control_char),
        cmocka_unit_test(test_json_utf8_passthrough),
        cmocka_unit_test(test_json_binary_base64),
        cmocka_unit_test(test_offsets_limits),
        cmocka_unit_test(test_no_epoch),
        cmocka_unit_test(test_long_group),
        cmocka_unit_test(test_bounds_and_decoding_sweep),
        cmocka_unit_test(test_msgpack_length_boundaries),
        cmocka_unit_test(test_msgpack_exact),
        cmocka_unit_test(test_msgpack_small_cap_returns_zero),
        cmocka_unit_test(test_variant_built_once_and_shared),
        cmocka_unit_test(test_variant_binary_and_broadcast),
        cmocka_unit_test(test_variant_large_payloads),
        cmocka_unit_test(test_variant_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

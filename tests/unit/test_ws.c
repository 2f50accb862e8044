/* Unit tests for the RFC 6455 codec (src/ws.h): handshake key, server frame
 * headers, unmasking, close codes and frames, and the incremental reader.
 *
 * Reader tests describe a client byte stream and the events it must produce
 * ("logical" events: a data message is compared whole at MESSAGE_END, since
 * how its payload is chunked into DATA events depends on the reads). Every
 * stream is fed whole, one byte at a time and in several chunk sizes, and all
 * runs must give the same logical events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "ws.h"

/* ---- handshake key ------------------------------------------------------ */

static void test_accept_key_rfc_example(void **state)
{
    (void)state;
    /* RFC 6455 section 1.3 */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    char out[WS_ACCEPT_LEN + 1];
    memset(out, 'X', sizeof out);
    ws_accept_key(key, strlen(key), out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(out[WS_ACCEPT_LEN], '\0');
}

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void test_accept_key_vs_openssl(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++) {
        unsigned char raw[16], key[32], cat[64], dig[SHA_DIGEST_LENGTH];
        char want[WS_ACCEPT_LEN + 4], got[WS_ACCEPT_LEN + 1];
        for (int k = 0; k < 16; k++)
            raw[k] = (unsigned char)rnd();
        int klen = EVP_EncodeBlock(key, raw, 16);
        assert_int_equal(klen, 24);
        memcpy(cat, key, 24);
        memcpy(cat + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
        SHA1(cat, 60, dig);
        EVP_EncodeBlock((unsigned char *)want, dig, SHA_DIGEST_LENGTH);
        ws_accept_key((const char *)key, 24, got);
        assert_string_equal(got, want);
    }
}

static void test_key_valid(void **state)
{
    (void)state;
#define KEY_OK(s) assert_true(ws_key_valid((s), strlen(s)))
#define KEY_BAD(s) assert_false(ws_key_valid((s), strlen(s)))
    KEY_OK("dGhlIHNhbXBsZSBub25jZQ==");
    KEY_OK("AAAAAAAAAAAAAAAAAAAAAA==");
    KEY_OK("/////////////////////w==");
    KEY_OK("+++++++++++++++++++++w==");
    /* only len bytes count */
    assert_true(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==trailing", 24));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 23));

    KEY_BAD("");
    KEY_BAD("dGhlIHNhbXBsZSBub25jZQ");     /* missing padding */
    KEY_BAD("dGhlIHNhbXBsZSBub25jZQ=");    /* half the padding */
    KEY_BAD("dGhlIHNhbXBsZSBub25jZQ===");  /* too much padding */
    KEY_BAD("dGhlIHNhbXBsZSBub25jZQ==\r"); /* untrimmed */
    KEY_BAD(" dGhlIHNhbXBsZSBub25jZQ==");
    KEY_BAD("dGhlIHNhbXBsZSBub25jZQ!=");
    KEY_BAD("dGhlIHNhbXBsZSBub2!jZQ==");   /* bad characters */
    KEY_BAD("dGhlIHNhbXBsZSBub2-jZQ==");   /* base64url is not base64 */
    KEY_BAD("dGhlIHNhbXBsZSBub2_jZQ==");
    KEY_BAD("dGhlIHNhbXBsZSBub2 jZQ==");
    KEY_BAD("dGhlIHNhbXBs=SBub25jZQ==");   /* padding in the middle */
    KEY_BAD("========================");
    KEY_BAD("AAAAAAAAAAAAAAAAAAAA");       /* 15 bytes, no padding needed */
    KEY_BAD("AAAAAAAAAAAAAAAAAAAAAAA=");   /* 17 bytes */
    KEY_BAD("AAAAAAAAAAAAAAAAAAAAAAAA");   /* 18 bytes */
    KEY_BAD("AAAAAAAAAAAAAAAAAAAAAAAAAA=="); /* 19 bytes */
    assert_false(ws_key_valid("dGhlIHNhbXBs\0SBub25jZQ==", 24));

    /* random 16-byte nonces are valid; 15- and 17-byte ones are not */
    for (int i = 0; i < 300; i++) {
        unsigned char raw[17];
        char enc[32];
        for (int k = 0; k < 17; k++)
            raw[k] = (unsigned char)rnd();
        int n = EVP_EncodeBlock((unsigned char *)enc, raw, 16);
        if (!ws_key_valid(enc, (size_t)n))
            fail_msg("valid 16-byte key rejected: %s", enc);
        n = EVP_EncodeBlock((unsigned char *)enc, raw, 15);
        if (ws_key_valid(enc, (size_t)n))
            fail_msg("15-byte key accepted: %s", enc);
        n = EVP_EncodeBlock((unsigned char *)enc, raw, 17);
        if (ws_key_valid(enc, (size_t)n))
            fail_msg("17-byte key accepted: %s", enc);
    }
#undef KEY_OK
#undef KEY_BAD
}

/* ---- server frame headers ----------------------------------------------- */

static void test_header_encode(void **state)
{
    (void)state;
    static const struct {
        bool fin;
        uint8_t op;
        uint64_t len;
        size_t size;
        uint8_t bytes[WS_MAX_SERVER_HEADER];
    } cases[] = {
        {true, WS_OP_TEXT, 0, 2, {0x81, 0x00}},
        {true, WS_OP_TEXT, 1, 2, {0x81, 0x01}},
        {true, WS_OP_BINARY, 125, 2, {0x82, 0x7D}},
        {true, WS_OP_BINARY, 126, 4, {0x82, 0x7E, 0x00, 0x7E}},
        {true, WS_OP_TEXT, 127, 4, {0x81, 0x7E, 0x00, 0x7F}},
        {true, WS_OP_TEXT, 256, 4, {0x81, 0x7E, 0x01, 0x00}},
        {true, WS_OP_TEXT, 65535, 4, {0x81, 0x7E, 0xFF, 0xFF}},
        {true, WS_OP_TEXT, 65536, 10, {0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
        {true, WS_OP_BINARY, 1048576, 10, {0x82, 0x7F, 0, 0, 0, 0, 0, 0x10, 0x00, 0x00}},
        {true, WS_OP_BINARY, 4294967296ULL, 10, {0x82, 0x7F, 0, 0, 0, 0x01, 0, 0, 0, 0}},
        {true, WS_OP_BINARY, 0x0102030405060708ULL, 10, {0x82, 0x7F, 1, 2, 3, 4, 5, 6, 7, 8}},
        {false, WS_OP_TEXT, 5, 2, {0x01, 0x05}},
        {false, WS_OP_CONT, 5, 2, {0x00, 0x05}},
        {true, WS_OP_CONT, 300, 4, {0x80, 0x7E, 0x01, 0x2C}},
        {true, WS_OP_PING, 0, 2, {0x89, 0x00}},
        {true, WS_OP_PONG, 125, 2, {0x8A, 0x7D}},
        {true, WS_OP_CLOSE, 2, 2, {0x88, 0x02}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[WS_MAX_SERVER_HEADER + 4];
        memset(out, 0xEE, sizeof out);
        size_t n = ws_header_encode(out, cases[i].fin, cases[i].op, cases[i].len);
        if (n != cases[i].size)
            fail_msg("case %zu (len %llu): size %zu, expected %zu", i,
                     (unsigned long long)cases[i].len, n, cases[i].size);
        if (memcmp(out, cases[i].bytes, n) != 0)
            fail_msg("case %zu (len %llu): wrong bytes", i, (unsigned long long)cases[i].len);
        /* never masked, never writes past its size */
        assert_int_equal(out[1] & 0x80, 0);
        for (size_t k = n; k < sizeof out; k++)
            assert_int_equal(out[k], 0xEE);
    }
}

/* ---- unmasking ---------------------------------------------------------- */

static void test_unmask_offsets(void **state)
{
    (void)state;
    const uint8_t mask[4] = {0x37, 0xFA, 0x21, 0x3D};
    /* RFC 6455 5.7: masked "Hello" */
    uint8_t hello[5] = {0x7F, 0x9F, 0x4D, 0x51, 0x58};
    ws_unmask(hello, 5, mask, 0);
    assert_memory_equal(hello, "Hello", 5);
    /* in pieces, each with its payload offset */
    uint8_t h2[5] = {0x7F, 0x9F, 0x4D, 0x51, 0x58};
    ws_unmask(h2, 1, mask, 0);
    ws_unmask(h2 + 1, 3, mask, 1);
    ws_unmask(h2 + 4, 1, mask, 4);
    assert_memory_equal(h2, "Hello", 5);

    uint8_t plain[100], buf[100];
    for (size_t i = 0; i < sizeof plain; i++)
        plain[i] = (uint8_t)(i * 7 + 3);
    /* every split point and every starting offset, incl. huge ones */
    static const uint64_t bases[] = {0, 1, 2, 3, 4, 5, 4294967295ULL, 4294967296ULL + 3,
                                     0xFFFFFFFFFFFFFFF0ULL};
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        uint64_t base = bases[b];
        for (size_t cut = 0; cut <= sizeof plain; cut++) {
            for (size_t i = 0; i < sizeof plain; i++)
                buf[i] = plain[i] ^ mask[(base + i) & 3];
            ws_unmask(buf, cut, mask, base);
            ws_unmask(buf + cut, sizeof plain - cut, mask, base + cut);
            if (memcmp(buf, plain, sizeof plain) != 0)
                fail_msg("unmask base %llu cut %zu differs", (unsigned long long)base, cut);
        }
        /* unaligned pointers and short lengths */
        for (size_t start = 0; start < 9; start++) {
            for (size_t n = 0; n + start <= sizeof plain; n += 5) {
                memcpy(buf, plain, sizeof plain);
                ws_unmask(buf + start, n, mask, base);
                for (size_t i = 0; i < sizeof plain; i++) {
                    uint8_t want = plain[i];
                    if (i >= start && i < start + n)
                        want ^= mask[(base + (i - start)) & 3];
                    if (buf[i] != want)
                        fail_msg("unmask start %zu n %zu base %llu: byte %zu wrong", start, n,
                                 (unsigned long long)base, i);
                }
            }
        }
    }
}

/* ---- close codes and frames --------------------------------------------- */

static void test_close_code_valid(void **state)
{
    (void)state;
    for (unsigned c = 0; c <= 70000; c++) {
        bool want;
        if (c >= 1000 && c <= 1003)
            want = true;
        else if (c >= 1004 && c <= 1006)
            want = false; /* reserved; 1005/1006 never on the wire */
        else if (c >= 1007 && c <= 1011)
            want = true;
        else if (c >= 1012 && c <= 1014)
            want = true; /* IANA: Service Restart, Try Again Later, Bad Gateway */
        else if (c == 1015)
            want = false; /* TLS handshake: never on the wire */
        else if (c >= 3000 && c <= 4999)
            want = true; /* registered / private use */
        else
            want = false; /* 0-999, 1016-2999, 5000+ */
        if (ws_close_code_valid(c) != want)
            fail_msg("ws_close_code_valid(%u) = %d, expected %d", c, !want, want);
    }
    assert_false(ws_close_code_valid(65536 + 1000));
    assert_false(ws_close_code_valid(0xFFFFFFFFu));
}

static void test_close_frame(void **state)
{
    (void)state;
    uint8_t out[2 + WS_MAX_CONTROL + 8];

    memset(out, 0xEE, sizeof out);
    size_t n = ws_close_frame(out, 1000, "bye");
    static const uint8_t want1[] = {0x88, 0x05, 0x03, 0xE8, 'b', 'y', 'e'};
    assert_int_equal(n, sizeof want1);
    assert_memory_equal(out, want1, sizeof want1);
    assert_int_equal(out[n], 0xEE);

    n = ws_close_frame(out, 1008, "slow consumer");
    assert_int_equal(n, 4 + 13);
    assert_int_equal(out[0], 0x88);
    assert_int_equal(out[1], 15);
    assert_int_equal(out[2], 0x03);
    assert_int_equal(out[3], 0xF0);
    assert_memory_equal(out + 4, "slow consumer", 13);

    n = ws_close_frame(out, 4999, "");
    static const uint8_t want3[] = {0x88, 0x02, 0x13, 0x87};
    assert_int_equal(n, 4);
    assert_memory_equal(out, want3, 4);

    /* a long reason is truncated so the payload fits 125 bytes */
    char longr[300];
    memset(longr, 'r', sizeof longr - 1);
    longr[sizeof longr - 1] = '\0';
    memset(out, 0xEE, sizeof out);
    n = ws_close_frame(out, 1001, longr);
    assert_int_equal(n, 2 + WS_MAX_CONTROL);
    assert_int_equal(out[1], WS_MAX_CONTROL);
    assert_int_equal(out[2], 0x03);
    assert_int_equal(out[3], 0xE9);
    for (size_t i = 4; i < n; i++)
        assert_int_equal(out[i], 'r');
    assert_int_equal(out[n], 0xEE);

    /* reason exactly 123 bytes: kept whole */
    longr[123] = '\0';
    n = ws_close_frame(out, 1000, longr);
    assert_int_equal(n, 127);
    assert_int_equal(out[1], 125);
}

/* A close reason must be UTF-8 (RFC 6455 5.5.1, 7.1.6): truncating a reason
 * to 123 bytes must not cut a character in half, or the peer fails the
 * connection with 1007. */
static void test_close_frame_truncates_on_char_boundary(void **state)
{
    (void)state;
    char reason[200];
    size_t k = 0;
    memset(reason, 'a', 122);
    k = 122;
    memcpy(reason + k, "\xC3\xA9\xC3\xA9", 4); /* "éé": bytes 122-125 */
    k += 4;
    reason[k] = '\0';
    uint8_t out[2 + WS_MAX_CONTROL];
    size_t n = ws_close_frame(out, 1000, reason);
    assert_true(n <= 2 + WS_MAX_CONTROL);
    assert_int_equal(out[1], n - 2);
    size_t rlen = n - 4;
    if (!utf8_valid(out + 4, rlen))
        fail_msg("truncated close reason (%zu bytes) is not valid UTF-8: ends with %02X", rlen,
                 out[4 + rlen - 1]);
    assert_int_equal(rlen, 122);

    /* 4-byte character straddling the limit */
    memset(reason, 'b', 121);
    memcpy(reason + 121, "\xF0\x9F\x98\x80", 4); /* bytes 121-124 */
    reason[125] = '\0';
    n = ws_close_frame(out, 1000, reason);
    rlen = n - 4;
    if (!utf8_valid(out + 4, rlen))
        fail_msg("truncated close reason (%zu bytes) is not valid UTF-8", rlen);
    assert_int_equal(rlen, 121);
}

/* ---- reader: stream building -------------------------------------------- */

typedef struct sbuf {
    uint8_t *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void sb_byte(sbuf *b, uint8_t c) { sb_put(b, &c, 1); }

static const uint8_t default_mask[4] = {0x37, 0xFA, 0x21, 0x3D};

/* Appends a client frame: b0 is the complete first byte (FIN, RSV, opcode),
 * masked with mask (NULL: unmasked), minimal length form. */
static void sb_frame_raw(sbuf *b, uint8_t b0, const void *payload, size_t len,
                         const uint8_t *mask)
{
    sb_byte(b, b0);
    uint8_t mbit = mask ? 0x80 : 0;
    if (len <= 125) {
        sb_byte(b, (uint8_t)(mbit | len));
    } else if (len <= 0xFFFF) {
        sb_byte(b, mbit | 126);
        sb_byte(b, (uint8_t)(len >> 8));
        sb_byte(b, (uint8_t)len);
    } else {
        sb_byte(b, mbit | 127);
        for (int i = 7; i >= 0; i--)
            sb_byte(b, (uint8_t)((uint64_t)len >> (8 * i)));
    }
    if (mask)
        sb_put(b, mask, 4);
    const uint8_t *pl = payload;
    for (size_t i = 0; i < len; i++)
        sb_byte(b, mask ? (uint8_t)(pl[i] ^ mask[i & 3]) : pl[i]);
}

static void sb_frame(sbuf *b, bool fin, uint8_t op, const void *payload, size_t len)
{
    sb_frame_raw(b, (uint8_t)((fin ? 0x80 : 0) | op), payload, len, default_mask);
}

static void sb_text(sbuf *b, bool fin, uint8_t op, const char *s)
{
    sb_frame(b, fin, op, s, strlen(s));
}

static void sb_close(sbuf *b, unsigned code, const void *reason, size_t rlen)
{
    uint8_t pl[2 + 256];
    pl[0] = (uint8_t)(code >> 8);
    pl[1] = (uint8_t)code;
    memcpy(pl + 2, reason, rlen);
    sb_frame(b, true, WS_OP_CLOSE, pl, 2 + rlen);
}

/* ---- reader: driving and logging ---------------------------------------- */

typedef struct lev {
    ws_event_type type; /* MESSAGE_END stands for a whole message */
    uint8_t opcode;
    unsigned code;
    uint8_t *data;
    size_t len;
} lev;

#define MAX_LEV 64

typedef struct evlog {
    lev ev[MAX_LEV];
    size_t n;
    bool failed;
    /* message being assembled */
    bool in_msg;
    uint8_t msg_op;
    sbuf msg;
    size_t data_events;
} evlog;

static void log_free(evlog *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->ev[i].data);
    free(l->msg.p);
    memset(l, 0, sizeof *l);
}

static void log_add(evlog *l, ws_event_type t, uint8_t op, unsigned code, const uint8_t *d,
                    size_t n)
{
    if (l->n == MAX_LEV)
        fail_msg("too many events");
    lev *e = &l->ev[l->n++];
    e->type = t;
    e->opcode = op;
    e->code = code;
    e->len = n;
    e->data = malloc(n ? n : 1);
    assert_non_null(e->data);
    if (n)
        memcpy(e->data, d, n);
}

/* Feeds one read's worth of bytes, looping as the contract says, checking the
 * per-call invariants, and logging logical events. */
static void drive(ws_reader *r, uint8_t *p, size_t n, evlog *l)
{
    size_t off = 0;
    int zero_streak = 0;
    if (l->failed)
        return;
    for (;;) {
        ws_event ev;
        memset(&ev, 0x5A, sizeof ev);
        size_t used = ws_reader_feed(r, p + off, n - off, &ev);
        if (used > n - off)
            fail_msg("consumed %zu of %zu bytes", used, n - off);
        off += used;
        if (ev.type == WS_EV_NONE) {
            if (off == n)
                return;
            if (used == 0)
                fail_msg("WS_EV_NONE without progress with %zu bytes left", n - off);
            continue;
        }
        if (used == 0 && ++zero_streak > 2)
            fail_msg("events without progress keep coming (type %d)", ev.type);
        if (used != 0)
            zero_streak = 0;
        switch (ev.type) {
        case WS_EV_DATA:
            if (!l->in_msg) {
                l->in_msg = true;
                l->msg_op = ev.opcode;
                l->msg.n = 0;
            }
            if (ev.opcode != l->msg_op)
                fail_msg("DATA opcode %u inside a message of opcode %u", ev.opcode, l->msg_op);
            if (ev.opcode != WS_OP_TEXT && ev.opcode != WS_OP_BINARY)
                fail_msg("DATA with opcode %u", ev.opcode);
            if (ev.len > 0 && (ev.data < p || ev.data + ev.len > p + off))
                fail_msg("DATA does not point into the consumed input");
            sb_put(&l->msg, ev.data, ev.len);
            l->data_events++;
            break;
        case WS_EV_MESSAGE_END:
            if (l->in_msg && ev.opcode != l->msg_op)
                fail_msg("MESSAGE_END opcode %u, DATA had %u", ev.opcode, l->msg_op);
            if (ev.opcode != WS_OP_TEXT && ev.opcode != WS_OP_BINARY)
                fail_msg("MESSAGE_END with opcode %u", ev.opcode);
            log_add(l, WS_EV_MESSAGE_END, ev.opcode, 0, l->msg.p, l->in_msg ? l->msg.n : 0);
            l->in_msg = false;
            l->msg.n = 0;
            break;
        case WS_EV_PING:
        case WS_EV_PONG:
        case WS_EV_CLOSE:
            if (ev.len > WS_MAX_CONTROL)
                fail_msg("control event with %zu bytes", ev.len);
            log_add(l, ev.type, 0, ev.type == WS_EV_CLOSE ? ev.code : 0, ev.data, ev.len);
            break;
        case WS_EV_ERROR:
            log_add(l, WS_EV_ERROR, 0, ev.code, NULL, 0);
            l->failed = true;
            if (!r->failed)
                fail_msg("reader not marked failed after ERROR");
            /* stays failed: more input gives the same error, no events */
            {
                uint8_t more[8];
                sbuf tmp = {0};
                sb_text(&tmp, true, WS_OP_TEXT, "x");
                memcpy(more, tmp.p, tmp.n);
                ws_event ev2;
                ws_reader_feed(r, more, tmp.n, &ev2);
                free(tmp.p);
                if (ev2.type != WS_EV_ERROR || ev2.code != ev.code)
                    fail_msg("after ERROR %u: next feed gave type %d code %u", ev.code, ev2.type,
                             ev2.code);
            }
            return;
        default:
            fail_msg("unknown event type %d", ev.type);
        }
    }
}

/* Feeds stream (copied: the reader unmasks in place) with a chunk size:
 * 0 = whole, otherwise fixed size; negative = pseudo-random sizes. */
static void run_stream(const uint8_t *stream, size_t n, uint64_t max, long chunk, evlog *l)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n)
        memcpy(copy, stream, n);
    ws_reader r;
    ws_reader_init(&r, max);
    memset(l, 0, sizeof *l);
    uint32_t seed = (uint32_t)(-chunk) * 2654435761u;
    size_t off = 0;
    if (n == 0)
        drive(&r, copy, 0, l);
    while (off < n && !l->failed) {
        size_t take = n - off;
        if (chunk > 0 && (size_t)chunk < take)
            take = (size_t)chunk;
        if (chunk < 0) {
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 16) % 37;
            if (k < take)
                take = k;
        }
        drive(&r, copy + off, take, l);
        off += take;
    }
    free(copy);
}

typedef struct exp_ev {
    ws_event_type type;
    uint8_t opcode;
    unsigned code;
    const void *data;
    size_t len;
} exp_ev;

#define X_MSG(op, s) {WS_EV_MESSAGE_END, (op), 0, (s), sizeof(s) - 1}
#define X_TEXT(s) X_MSG(WS_OP_TEXT, s)
#define X_BIN(s) X_MSG(WS_OP_BINARY, s)
#define X_PING(s) {WS_EV_PING, 0, 0, (s), sizeof(s) - 1}
#define X_PONG(s) {WS_EV_PONG, 0, 0, (s), sizeof(s) - 1}
#define X_CLOSE(c, s) {WS_EV_CLOSE, 0, (c), (s), sizeof(s) - 1}
#define X_ERR(c) {WS_EV_ERROR, 0, (c), NULL, 0}

static const char *ev_name(ws_event_type t)
{
    switch (t) {
    case WS_EV_NONE: return "NONE";
    case WS_EV_DATA: return "DATA";
    case WS_EV_MESSAGE_END: return "MESSAGE";
    case WS_EV_PING: return "PING";
    case WS_EV_PONG: return "PONG";
    case WS_EV_CLOSE: return "CLOSE";
    case WS_EV_ERROR: return "ERROR";
    }
    return "?";
}

static void dump_log(const evlog *l, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < l->n && o + 40 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s(op=%u code=%u len=%zu)", i ? " " : "",
                              ev_name(l->ev[i].type), l->ev[i].opcode, l->ev[i].code,
                              l->ev[i].len);
}

static void expect_log(const evlog *l, const exp_ev *x, size_t nx, const char *what, long chunk)
{
    char got[1024];
    bool ok = l->n == nx;
    for (size_t i = 0; ok && i < nx; i++) {
        const lev *e = &l->ev[i];
        if (e->type != x[i].type)
            ok = false;
        else if (e->type == WS_EV_MESSAGE_END && e->opcode != x[i].opcode)
            ok = false;
        else if ((e->type == WS_EV_CLOSE || e->type == WS_EV_ERROR) && e->code != x[i].code)
            ok = false;
        else if (e->type != WS_EV_ERROR &&
                 (e->len != x[i].len || (e->len && memcmp(e->data, x[i].data, e->len) != 0)))
            ok = false;
    }
    if (!ok) {
        dump_log(l, got, sizeof got);
        char want[1024];
        size_t o = 0;
        want[0] = '\0';
        for (size_t i = 0; i < nx && o + 40 < sizeof want; i++)
            o += (size_t)snprintf(want + o, sizeof want - o, "%s%s(op=%u code=%u len=%zu)",
                                  i ? " " : "", ev_name(x[i].type), x[i].opcode, x[i].code,
                                  x[i].len);
        fail_msg("%s (chunk %ld):\n  got:      %s\n  expected: %s", what, chunk, got, want);
    }
}

/* The core check: every chunking of the stream gives exactly these events. */
static void check_stream(const sbuf *s, uint64_t max, const exp_ev *x, size_t nx, const char *what)
{
    static const long chunks[] = {0, 1, 2, 3, 5, 7, 13, 64, -1, -2, -3};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        evlog l;
        run_stream(s->p, s->n, max, chunks[c], &l);
        expect_log(&l, x, nx, what, chunks[c]);
        log_free(&l);
    }
}

#define CHECK(s, max, what, ...)                                                  \
    do {                                                                           \
        const exp_ev x_[] = {__VA_ARGS__};                                         \
        check_stream((s), (max), x_, sizeof x_ / sizeof x_[0], (what));            \
    } while (0)
#define CHECK_NONE(s, max, what) check_stream((s), (max), NULL, 0, (what))

/* ---- reader tests ------------------------------------------------------- */

static void test_reader_simple_messages(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_text(&s, true, WS_OP_TEXT, "Hello");
    CHECK(&s, 0, "masked text", X_TEXT("Hello"));

    s.n = 0;
    sb_frame(&s, true, WS_OP_BINARY, "\x00\xFF\xC0\x80", 4);
    CHECK(&s, 0, "masked binary (not UTF-8 checked)", X_BIN("\x00\xFF\xC0\x80"));

    s.n = 0;
    sb_text(&s, true, WS_OP_TEXT, "");
    CHECK(&s, 0, "empty text", X_TEXT(""));

    s.n = 0;
    sb_frame(&s, true, WS_OP_BINARY, "", 0);
    CHECK(&s, 0, "empty binary", X_BIN(""));

    s.n = 0;
    sb_text(&s, true, WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5");
    sb_frame(&s, true, WS_OP_BINARY, "bin", 3);
    sb_text(&s, true, WS_OP_TEXT, "third");
    CHECK(&s, 0, "three messages back to back",
          X_TEXT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), X_BIN("bin"), X_TEXT("third"));

    /* the RFC 6455 5.7 example frame, byte for byte */
    s.n = 0;
    static const uint8_t rfc[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    sb_put(&s, rfc, sizeof rfc);
    CHECK(&s, 0, "RFC 6455 5.7 masked Hello", X_TEXT("Hello"));

    /* a different mask */
    s.n = 0;
    static const uint8_t m2[4] = {0xFF, 0x00, 0x80, 0x01};
    sb_frame_raw(&s, 0x82, "abcdefgh", 8, m2);
    CHECK(&s, 0, "other mask", X_BIN("abcdefgh"));
    free(s.p);
}

static void test_reader_length_forms(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 125, 126, 127, 1000, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        uint8_t *pl = malloc(n + 1);
        assert_non_null(pl);
        for (size_t k = 0; k < n; k++)
            pl[k] = (uint8_t)('a' + k % 26);
        sbuf s = {0};
        sb_frame(&s, true, WS_OP_TEXT, pl, n);
        sb_frame(&s, true, WS_OP_BINARY, pl, n);
        size_t hl = n <= 125 ? 6 : n <= 65535 ? 8 : 14;
        assert_int_equal(s.n, 2 * (hl + n));
        exp_ev x[2] = {{WS_EV_MESSAGE_END, WS_OP_TEXT, 0, pl, n},
                       {WS_EV_MESSAGE_END, WS_OP_BINARY, 0, pl, n}};
        char what[64];
        snprintf(what, sizeof what, "length %zu", n);
        check_stream(&s, 0, x, 2, what);
        /* max_message equal to the size is allowed */
        check_stream(&s, n ? n : 1, x, 2, what);
        free(s.p);
        free(pl);
    }
}

static void test_reader_data_streams_before_frame_end(void **state)
{
    (void)state;
    /* DATA is delivered as bytes arrive, unmasked in place, with MESSAGE_END
     * only after the last byte */
    sbuf s = {0};
    sb_frame(&s, true, WS_OP_BINARY, "0123456789", 10);
    ws_reader r;
    ws_reader_init(&r, 0);
    ws_event ev;
    size_t used = ws_reader_feed(&r, s.p, 6 + 4, &ev);
    assert_int_equal(used, 10);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_int_equal(ev.opcode, WS_OP_BINARY);
    assert_int_equal(ev.len, 4);
    assert_ptr_equal(ev.data, s.p + 6);
    assert_memory_equal(s.p + 6, "0123", 4); /* unmasked in place */
    used = ws_reader_feed(&r, s.p + 10, 0, &ev);
    assert_int_equal(used, 0);
    assert_int_equal(ev.type, WS_EV_NONE);
    used = ws_reader_feed(&r, s.p + 10, 6, &ev);
    assert_int_equal(used, 6);
    assert_int_equal(ev.type, WS_EV_DATA);
    assert_int_equal(ev.len, 6);
    assert_memory_equal(ev.data, "456789", 6);
    used = ws_reader_feed(&r, s.p + 16, 0, &ev);
    assert_int_equal(used, 0);
    assert_int_equal(ev.type, WS_EV_MESSAGE_END);
    assert_int_equal(ev.opcode, WS_OP_BINARY);
    used = ws_reader_feed(&r, s.p + 16, 0, &ev);
    assert_int_equal(ev.type, WS_EV_NONE);
    free(s.p);
}

static void test_reader_fragmentation(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_text(&s, false, WS_OP_TEXT, "Hel");
    sb_text(&s, true, WS_OP_CONT, "lo");
    CHECK(&s, 0, "two fragments", X_TEXT("Hello"));

    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "frag1 ");
    sb_text(&s, true, WS_OP_PING, "ping!");
    sb_text(&s, false, WS_OP_CONT, "frag2 ");
    sb_text(&s, true, WS_OP_PONG, "");
    sb_text(&s, true, WS_OP_CONT, "frag3");
    sb_text(&s, true, WS_OP_TEXT, "next");
    CHECK(&s, 0, "fragments with interleaved ping and pong", X_PING("ping!"), X_PONG(""),
          X_TEXT("frag1 frag2 frag3"), X_TEXT("next"));

    s.n = 0;
    sb_frame(&s, false, WS_OP_BINARY, "\x01", 1);
    sb_frame(&s, false, WS_OP_CONT, "", 0);
    sb_frame(&s, false, WS_OP_CONT, "\x02\x03", 2);
    sb_frame(&s, true, WS_OP_CONT, "", 0);
    CHECK(&s, 0, "binary fragments incl. empty ones", X_BIN("\x01\x02\x03"));

    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "");
    sb_text(&s, true, WS_OP_CONT, "");
    CHECK(&s, 0, "empty fragments", X_TEXT(""));

    /* a UTF-8 character split across fragments is fine */
    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "\xE2\x82");
    sb_text(&s, true, WS_OP_PING, "p");
    sb_text(&s, true, WS_OP_CONT, "\xAC");
    CHECK(&s, 0, "char split across fragments", X_PING("p"), X_TEXT("\xE2\x82\xAC"));

    /* 1-byte fragments (Autobahn 5.x / 6.x style) */
    s.n = 0;
    const char *k = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
    for (size_t i = 0; i < 11; i++)
        sb_frame(&s, i == 10, i ? WS_OP_CONT : WS_OP_TEXT, k + i, 1);
    CHECK(&s, 0, "one byte per fragment", X_TEXT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));

    /* close in the middle of a fragmented message is reported */
    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "part");
    sb_close(&s, 1000, "", 0);
    CHECK(&s, 0, "close inside a fragmented message", X_CLOSE(1000, ""));
    free(s.p);
}

/* At rest exactly between messages: never inside a frame's header or payload,
 * a fragmented message or a pending end, nor after an error. A control frame
 * between fragments leaves the message open. */
static void test_reader_at_rest(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_text(&s, false, WS_OP_TEXT, "ab");
    sb_text(&s, true, WS_OP_PING, "p");
    sb_text(&s, true, WS_OP_CONT, "cd");
    size_t msg_end = s.n;
    sb_text(&s, true, WS_OP_PONG, "");
    ws_reader r;
    ws_reader_init(&r, 0);
    assert_true(ws_reader_at_rest(&r));
    for (size_t i = 0; i < s.n; i++) {
        ws_event ev;
        size_t used = 0;
        do
            used += ws_reader_feed(&r, s.p + i + used, 1 - used, &ev);
        while (ev.type != WS_EV_NONE);
        bool rest = i + 1 == msg_end || i + 1 == s.n;
        assert_int_equal(ws_reader_at_rest(&r), rest);
    }
    s.n = 0;
    sb_text(&s, false, WS_OP_PING, "x"); /* fragmented ping: an error */
    ws_event ev;
    ws_reader_init(&r, 0);
    ws_reader_feed(&r, s.p, s.n, &ev);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_false(ws_reader_at_rest(&r));
    free(s.p);
}

static void test_reader_control_frames(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_text(&s, true, WS_OP_PING, "");
    sb_text(&s, true, WS_OP_PING, "payload");
    sb_text(&s, true, WS_OP_PONG, "unsolicited");
    CHECK(&s, 0, "ping/pong", X_PING(""), X_PING("payload"), X_PONG("unsolicited"));

    char big[126];
    memset(big, 'p', sizeof big);
    s.n = 0;
    sb_frame(&s, true, WS_OP_PING, big, 125);
    exp_ev x1 = {WS_EV_PING, 0, 0, big, 125};
    check_stream(&s, 0, &x1, 1, "125-byte ping");
    /* control frames do not count against max_message */
    check_stream(&s, 10, &x1, 1, "125-byte ping with max_message 10");

    s.n = 0;
    sb_frame(&s, true, WS_OP_PING, big, 126);
    CHECK(&s, 0, "126-byte ping", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_frame(&s, true, WS_OP_PONG, big, 126);
    CHECK(&s, 0, "126-byte pong", X_ERR(WS_CLOSE_PROTOCOL));
    /* an over-long control frame fails from its header alone */
    s.n = 0;
    sb_frame(&s, true, WS_OP_CLOSE, big, 126);
    s.n = 8;
    CHECK(&s, 0, "126-byte close, header only", X_ERR(WS_CLOSE_PROTOCOL));

    s.n = 0;
    sb_text(&s, false, WS_OP_PING, "frag");
    CHECK(&s, 0, "fragmented ping", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_text(&s, false, WS_OP_PONG, "");
    CHECK(&s, 0, "fragmented pong", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_close(&s, 1000, "", 0);
    s.p[0] = WS_OP_CLOSE; /* FIN cleared */
    CHECK(&s, 0, "fragmented close", X_ERR(WS_CLOSE_PROTOCOL));
    free(s.p);
}

static void test_reader_close(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_frame(&s, true, WS_OP_CLOSE, "", 0);
    CHECK(&s, 0, "empty close", X_CLOSE(WS_CLOSE_NO_STATUS, ""));

    s.n = 0;
    sb_close(&s, 1000, "", 0);
    CHECK(&s, 0, "close 1000", X_CLOSE(1000, ""));

    s.n = 0;
    sb_close(&s, 1001, "going away", 10);
    CHECK(&s, 0, "close with reason", X_CLOSE(1001, "going away"));

    s.n = 0;
    sb_close(&s, 3000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11);
    CHECK(&s, 0, "close 3000 with UTF-8 reason",
          X_CLOSE(3000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));

    char r123[123];
    memset(r123, 'r', sizeof r123);
    s.n = 0;
    sb_close(&s, 4999, r123, 123);
    exp_ev x = {WS_EV_CLOSE, 0, 4999, r123, 123};
    check_stream(&s, 0, &x, 1, "close with 123-byte reason");

    s.n = 0;
    sb_frame(&s, true, WS_OP_CLOSE, "\x03", 1);
    CHECK(&s, 0, "close with 1-byte payload", X_ERR(WS_CLOSE_PROTOCOL));

    static const unsigned bad_codes[] = {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000,
                                         2999, 5000, 65535};
    for (size_t i = 0; i < sizeof bad_codes / sizeof bad_codes[0]; i++) {
        s.n = 0;
        sb_close(&s, bad_codes[i], "", 0);
        char what[48];
        snprintf(what, sizeof what, "close code %u", bad_codes[i]);
        CHECK(&s, 0, what, X_ERR(WS_CLOSE_PROTOCOL));
    }
    static const unsigned good_codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                          1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < sizeof good_codes / sizeof good_codes[0]; i++) {
        s.n = 0;
        sb_close(&s, good_codes[i], "ok", 2);
        char what[48];
        snprintf(what, sizeof what, "close code %u", good_codes[i]);
        exp_ev xg = {WS_EV_CLOSE, 0, good_codes[i], "ok", 2};
        check_stream(&s, 0, &xg, 1, what);
    }

    s.n = 0;
    sb_close(&s, 1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", 14);
    CHECK(&s, 0, "close reason with a surrogate", X_ERR(WS_CLOSE_BAD_DATA));
    s.n = 0;
    sb_close(&s, 1000, "abc\xE2\x82", 5);
    CHECK(&s, 0, "close reason truncated mid-character", X_ERR(WS_CLOSE_BAD_DATA));
    s.n = 0;
    sb_close(&s, 1000, "\xFF", 1);
    CHECK(&s, 0, "close reason 0xFF", X_ERR(WS_CLOSE_BAD_DATA));
    free(s.p);
}

static void test_reader_protocol_errors(void **state)
{
    (void)state;
    sbuf s = {0};

    /* unmasked client frames */
    sb_frame_raw(&s, 0x81, "hi", 2, NULL);
    CHECK(&s, 0, "unmasked text", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_frame_raw(&s, 0x89, "", 0, NULL);
    CHECK(&s, 0, "unmasked ping", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_text(&s, true, WS_OP_TEXT, "ok");
    sb_frame_raw(&s, 0x82, "x", 1, NULL);
    CHECK(&s, 0, "unmasked after a good frame", X_TEXT("ok"), X_ERR(WS_CLOSE_PROTOCOL));

    /* RSV bits without an extension */
    static const uint8_t rsv[] = {0x40, 0x20, 0x10, 0x70};
    for (size_t i = 0; i < sizeof rsv; i++) {
        s.n = 0;
        sb_frame_raw(&s, (uint8_t)(0x80 | rsv[i] | WS_OP_TEXT), "x", 1, default_mask);
        CHECK(&s, 0, "RSV bit on text", X_ERR(WS_CLOSE_PROTOCOL));
        s.n = 0;
        sb_frame_raw(&s, (uint8_t)(0x80 | rsv[i] | WS_OP_PING), "", 0, default_mask);
        CHECK(&s, 0, "RSV bit on ping", X_ERR(WS_CLOSE_PROTOCOL));
    }

    /* reserved opcodes */
    static const uint8_t ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof ops; i++) {
        s.n = 0;
        sb_frame_raw(&s, (uint8_t)(0x80 | ops[i]), "", 0, default_mask);
        char what[48];
        snprintf(what, sizeof what, "reserved opcode %u", ops[i]);
        CHECK(&s, 0, what, X_ERR(WS_CLOSE_PROTOCOL));
        /* also inside a fragmented message */
        s.n = 0;
        sb_text(&s, false, WS_OP_TEXT, "a");
        sb_frame_raw(&s, (uint8_t)(0x80 | ops[i]), "zz", 2, default_mask);
        CHECK(&s, 0, what, X_ERR(WS_CLOSE_PROTOCOL));
    }

    /* continuation without a message */
    s.n = 0;
    sb_text(&s, true, WS_OP_CONT, "x");
    CHECK(&s, 0, "final continuation without start", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_text(&s, false, WS_OP_CONT, "x");
    CHECK(&s, 0, "continuation without start", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_text(&s, true, WS_OP_TEXT, "done");
    sb_text(&s, true, WS_OP_CONT, "x");
    CHECK(&s, 0, "continuation after a complete message", X_TEXT("done"),
          X_ERR(WS_CLOSE_PROTOCOL));

    /* a new data frame while a fragmented message is open */
    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "a");
    sb_text(&s, true, WS_OP_TEXT, "b");
    CHECK(&s, 0, "text inside open text", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_frame(&s, false, WS_OP_BINARY, "a", 1);
    sb_text(&s, true, WS_OP_PING, "");
    sb_frame(&s, false, WS_OP_BINARY, "b", 1);
    CHECK(&s, 0, "binary inside open binary", X_PING(""), X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "a");
    sb_frame(&s, true, WS_OP_BINARY, "b", 1);
    CHECK(&s, 0, "binary inside open text", X_ERR(WS_CLOSE_PROTOCOL));

    /* 64-bit length with the most significant bit set */
    s.n = 0;
    static const uint8_t msb[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 1, 2, 3, 4};
    sb_put(&s, msb, sizeof msb);
    CHECK(&s, 0, "64-bit length with MSB set", X_ERR(WS_CLOSE_PROTOCOL));
    s.n = 0;
    static const uint8_t msb2[] = {0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                   1, 2, 3, 4};
    sb_put(&s, msb2, sizeof msb2);
    CHECK(&s, 0, "64-bit length all ones", X_ERR(WS_CLOSE_PROTOCOL));
    /* 2^63 - 1 is a legal length: no error from the header alone */
    s.n = 0;
    static const uint8_t big[] = {0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  1, 2, 3, 4, 'a', 'b'};
    sb_put(&s, big, sizeof big);
    CHECK_NONE(&s, 0, "64-bit length 2^63-1, unlimited");
    free(s.p);
}

static void test_reader_utf8(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_text(&s, true, WS_OP_TEXT, "ab\xC0\xAF");
    CHECK(&s, 0, "overlong in text", X_ERR(WS_CLOSE_BAD_DATA));

    s.n = 0;
    sb_text(&s, true, WS_OP_TEXT, "abc\xE2\x82");
    CHECK(&s, 0, "text ends mid-character", X_ERR(WS_CLOSE_BAD_DATA));

    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "abc\xE2\x82");
    sb_text(&s, true, WS_OP_CONT, "");
    CHECK(&s, 0, "last fragment leaves a character unfinished", X_ERR(WS_CLOSE_BAD_DATA));

    /* fail fast: a non-final fragment with an impossible byte fails without
     * waiting for the rest of the message */
    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT,
            "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64");
    CHECK(&s, 0, "Autobahn 6.4.1-like non-final fragment", X_ERR(WS_CLOSE_BAD_DATA));

    /* ...and within a frame: only part of the payload has arrived */
    s.n = 0;
    sb_text(&s, true, WS_OP_TEXT, "ok\xED\xA0\x80 and then a lot more text follows");
    s.n = 6 + 4; /* header + "ok\xED\xA0" */
    CHECK(&s, 0, "surrogate, rest of frame not yet received", X_ERR(WS_CLOSE_BAD_DATA));

    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "good");
    sb_text(&s, false, WS_OP_CONT, "still good");
    sb_text(&s, false, WS_OP_CONT, "\xFF");
    CHECK(&s, 0, "bad byte in a later fragment", X_ERR(WS_CLOSE_BAD_DATA));

    /* each message is validated from a fresh state */
    s.n = 0;
    sb_frame(&s, true, WS_OP_BINARY, "\xE2\x82", 2);
    sb_text(&s, true, WS_OP_TEXT, "\xAC");
    CHECK(&s, 0, "binary does not leak UTF-8 state into text", X_BIN("\xE2\x82"),
          X_ERR(WS_CLOSE_BAD_DATA));
    free(s.p);
}

static void test_reader_max_message(void **state)
{
    (void)state;
    sbuf s = {0};
    sb_text(&s, true, WS_OP_TEXT, "0123456789");
    CHECK(&s, 10, "exactly max", X_TEXT("0123456789"));
    CHECK(&s, 9, "one over max", X_ERR(WS_CLOSE_TOO_BIG));

    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "012345");
    sb_text(&s, true, WS_OP_CONT, "6789");
    CHECK(&s, 10, "fragments summing to max", X_TEXT("0123456789"));
    CHECK(&s, 9, "fragments one over max", X_ERR(WS_CLOSE_TOO_BIG));

    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "012345");
    sb_text(&s, true, WS_OP_PING, "ping");
    sb_text(&s, false, WS_OP_CONT, "");
    sb_text(&s, true, WS_OP_CONT, "6789X");
    CHECK(&s, 10, "over max across fragments, after a ping", X_PING("ping"),
          X_ERR(WS_CLOSE_TOO_BIG));

    /* the limit is per message */
    s.n = 0;
    for (int i = 0; i < 5; i++)
        sb_text(&s, true, WS_OP_TEXT, "01234567");
    CHECK(&s, 10, "many messages under the limit", X_TEXT("01234567"), X_TEXT("01234567"),
          X_TEXT("01234567"), X_TEXT("01234567"), X_TEXT("01234567"));

    /* reported from the header, before any payload */
    s.n = 0;
    static const uint8_t hdr16[] = {0x82, 0xFE, 0x04, 0x00, 1, 2, 3, 4}; /* 1024 bytes */
    sb_put(&s, hdr16, sizeof hdr16);
    CHECK(&s, 1000, "16-bit length over max, header only", X_ERR(WS_CLOSE_TOO_BIG));
    s.n = 0;
    static const uint8_t hdr64[] = {0x81, 0xFF, 0, 0, 0, 0x01, 0, 0, 0, 0, 1, 2, 3, 4};
    sb_put(&s, hdr64, sizeof hdr64);
    CHECK(&s, 1048576, "4 GiB frame, header only", X_ERR(WS_CLOSE_TOO_BIG));
    s.n = 0;
    sb_text(&s, false, WS_OP_TEXT, "0123456");
    static const uint8_t cont[] = {0x80, 0x84, 1, 2, 3, 4}; /* continuation of 4 */
    sb_put(&s, cont, sizeof cont);
    CHECK(&s, 10, "continuation header pushes over max", X_ERR(WS_CLOSE_TOO_BIG));
    free(s.p);
}

static void test_reader_one_byte_at_a_time_equals_whole(void **state)
{
    (void)state;
    /* a long mixed stream, checked under all chunkings by check_stream, and
     * here additionally: the concatenated DATA of each message is the same */
    sbuf s = {0};
    sb_text(&s, false, WS_OP_TEXT, "The quick ");
    sb_text(&s, true, WS_OP_PING, "1");
    sb_text(&s, false, WS_OP_CONT, "brown \xF0\x9F\xA6");
    sb_text(&s, true, WS_OP_CONT, "\x8A fox");
    char mid[300];
    memset(mid, 'm', sizeof mid);
    sb_frame(&s, true, WS_OP_BINARY, mid, sizeof mid);
    sb_text(&s, true, WS_OP_PONG, "2");
    sb_close(&s, 1000, "bye", 3);
    exp_ev x[] = {X_PING("1"), X_TEXT("The quick brown \xF0\x9F\xA6\x8A fox"),
                  {WS_EV_MESSAGE_END, WS_OP_BINARY, 0, mid, sizeof mid}, X_PONG("2"),
                  X_CLOSE(1000, "bye")};
    check_stream(&s, 0, x, sizeof x / sizeof x[0], "mixed stream");

    /* one byte at a time: one DATA event per payload byte, never more
     * bytes than were given */
    evlog l;
    run_stream(s.p, s.n, 0, 1, &l);
    assert_true(l.data_events >= 10 + 9 + 5 + 300);
    log_free(&l);
    free(s.p);
}

/* Random valid streams (random masks, fragmentation, interleaved control
 * frames), random chunking: the messages come out intact. */
static void test_reader_random_valid_streams(void **state)
{
    (void)state;
    for (int iter = 0; iter < 300; iter++) {
        sbuf s = {0};
        exp_ev x[40];
        uint8_t *bufs[40];
        size_t nx = 0;
        int nmsg = 1 + (int)(rnd() % 6);
        for (int m = 0; m < nmsg; m++) {
            bool text = rnd() & 1;
            size_t len = rnd() % 3 == 0 ? rnd() % 2000 : rnd() % 40;
            uint8_t *pl = malloc(len + 1);
            assert_non_null(pl);
            for (size_t k = 0; k < len; k++)
                pl[k] = text ? (uint8_t)(' ' + rnd() % 95) : (uint8_t)rnd();
            int nfrag = 1 + (int)(rnd() % 4);
            size_t off = 0;
            for (int f = 0; f < nfrag; f++) {
                size_t take = f == nfrag - 1 ? len - off : rnd() % (len - off + 1);
                uint8_t mask[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(),
                                   (uint8_t)rnd()};
                uint8_t op = f ? WS_OP_CONT : text ? WS_OP_TEXT : WS_OP_BINARY;
                sb_frame_raw(&s, (uint8_t)((f == nfrag - 1 ? 0x80 : 0) | op), pl + off, take,
                             mask);
                off += take;
                /* control frames between fragments, or between messages */
                if (f == nfrag - 1) {
                    x[nx] = (exp_ev){WS_EV_MESSAGE_END, text ? WS_OP_TEXT : WS_OP_BINARY, 0,
                                     pl, len};
                    bufs[nx++] = pl;
                }
                if (rnd() % 3 == 0 && nx < 38) {
                    static const char pp[] = "ping-payload";
                    size_t plen = rnd() % sizeof pp;
                    bool ping = rnd() & 1;
                    sb_frame_raw(&s, ping ? 0x89 : 0x8A, pp, plen, mask);
                    x[nx] = (exp_ev){ping ? WS_EV_PING : WS_EV_PONG, 0, 0, pp, plen};
                    bufs[nx++] = NULL;
                }
            }
        }
        check_stream(&s, 0, x, nx, "random valid stream");
        for (size_t i = 0; i < nx; i++)
            free(bufs[i]);
        free(s.p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_accept_key_vs_openssl),
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_header_encode),
        cmocka_unit_test(test_unmask_offsets),
        cmocka_unit_test(test_close_code_valid),
        cmocka_unit_test(test_close_frame),
        cmocka_unit_test(test_close_frame_truncates_on_char_boundary),
        cmocka_unit_test(test_reader_simple_messages),
        cmocka_unit_test(test_reader_length_forms),
        cmocka_unit_test(test_reader_data_streams_before_frame_end),
        cmocka_unit_test(test_reader_fragmentation),
        cmocka_unit_test(test_reader_control_frames),
        cmocka_unit_test(test_reader_at_rest),
        cmocka_unit_test(test_reader_close),
        cmocka_unit_test(test_reader_protocol_errors),
        cmocka_unit_test(test_reader_utf8),
        cmocka_unit_test(test_reader_max_message),
        cmocka_unit_test(test_reader_one_byte_at_a_time_equals_whole),
        cmocka_unit_test(test_reader_random_valid_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests of herald-bench's pure parts: histogram precision, sequence
 * tracking, frame reader (byte by byte, fragments with control frames in
 * between), handshake check and masking. Plain asserts, no framework. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "msg.h"
#include "track.h"
#include "unwrap.h"
#include "wsc.h"

#include <libdeflate.h>
#include <openssl/evp.h>

static int unit_failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            unit_failures++;                                                 \
        }                                                                    \
    } while (0)

static void test_hist(void)
{
    /* every value lands in a bucket that contains it, buckets at most 1/128 wide */
    for (uint64_t v = 0; v < (1ull << 41); v = v < 1000 ? v + 1 : v + v / 97 + 1) {
        uint32_t i = hist_index(v);
        CHECK(i < HIST_BUCKETS);
        CHECK(hist_bucket_low(i) <= v && v <= hist_bucket_high(i));
        uint64_t width = hist_bucket_high(i) - hist_bucket_low(i) + 1;
        CHECK(width * 128 <= hist_bucket_low(i) + 128);
    }
    CHECK(hist_index(1ull << 50) == HIST_BUCKETS - 1);

    static hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_add(&h, v * 1000); /* 1 us .. 100 ms */
    double p50 = (double)hist_quantile(&h, 0.5), p99 = (double)hist_quantile(&h, 0.99);
    CHECK(p50 > 50e6 * 0.99 && p50 < 50e6 * 1.01);
    CHECK(p99 > 99e6 * 0.99 && p99 < 99e6 * 1.01);
    CHECK(hist_quantile(&h, 1.0) == 100000000);
    CHECK(hist_quantile(&h, 0.0) == 1000);

    static hist a, b;
    hist_init(&a);
    hist_init(&b);
    hist_add(&a, 5);
    hist_add(&b, 7000);
    hist_merge(&a, &b);
    CHECK(a.count == 2 && a.min == 5 && a.max == 7000);
    CHECK(hist_quantile(&a, 0.5) == 5);
}

static void test_track(void)
{
    track_entry e = {0, 0};
    CHECK(track_note(&e, 0) == TRACK_NEW);
    CHECK(track_note(&e, 1) == TRACK_NEW);
    CHECK(track_note(&e, 1) == TRACK_DUP);
    CHECK(track_note(&e, 3) == TRACK_NEW);  /* 2 missing for now */
    CHECK(track_note(&e, 2) == TRACK_LATE); /* arrives after 3 */
    CHECK(track_note(&e, 2) == TRACK_DUP);
    CHECK(track_note(&e, 0) == TRACK_DUP);
    CHECK(track_note(&e, 100) == TRACK_NEW);
    CHECK(track_note(&e, 40) == TRACK_LATE);
    CHECK(track_note(&e, 40) == TRACK_DUP);
    CHECK(track_note(&e, 3) == TRACK_LATE); /* outside the window: cannot tell, counted late */
    CHECK(track_note(&e, 1000) == TRACK_NEW);
    CHECK(track_note(&e, 1000) == TRACK_DUP);

    track_entry f = {0, 0};
    CHECK(track_note(&f, 5) == TRACK_NEW); /* first message of a run need not be 0 */
    CHECK(track_note(&f, 4) == TRACK_LATE);
    CHECK(track_note(&f, 5) == TRACK_DUP);
}

typedef struct rec {
    int messages, pings, closes, close_code;
    uint64_t last_total;
    uint8_t last_head[MSG_HEAD];
    uint8_t op;
    uint8_t ping[WSC_MAX_CONTROL];
    size_t ping_len;
} rec;

static void rec_message(void *ctx, uint8_t op, const uint8_t *head, uint64_t total)
{
    rec *r = ctx;
    r->messages++;
    r->op = op;
    r->last_total = total;
    memcpy(r->last_head, head, total < MSG_HEAD ? total : MSG_HEAD);
}

static void rec_ping(void *ctx, const uint8_t *p, size_t n)
{
    rec *r = ctx;
    r->pings++;
    memcpy(r->ping, p, n);
    r->ping_len = n;
}

static void rec_close(void *ctx, int code)
{
    rec *r = ctx;
    r->closes++;
    r->close_code = code;
}

static const wsc_handler rec_handler = {rec_message, rec_ping, rec_close};

static size_t put_frame(uint8_t *out, bool fin, uint8_t op, const uint8_t *p, size_t n)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        out[h++] = (uint8_t)n;
    } else if (n < 65536) {
        out[h++] = 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(out + h, p, n);
    return h + n;
}

static void test_reader(void)
{
    static uint8_t payload[70000], wire[80000];
    msg_head m = {MSG_FLAG_MEASURED, 7, 123456789012ull, 42};
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)i;
    msg_encode(payload, &m);

    /* a fragmented 300-byte message with a ping between fragments, a 70000
     * byte one (64-bit length), a ping, a close: fed one byte at a time */
    size_t n = 0;
    n += put_frame(wire + n, false, WSC_OP_BINARY, payload, 3);
    n += put_frame(wire + n, true, WSC_OP_PING, (const uint8_t *)"abc", 3);
    n += put_frame(wire + n, false, WSC_OP_CONT, payload + 3, 0);
    n += put_frame(wire + n, false, WSC_OP_CONT, payload + 3, 30);
    n += put_frame(wire + n, true, WSC_OP_CONT, payload + 33, 267);
    n += put_frame(wire + n, true, WSC_OP_BINARY, payload, 70000);
    n += put_frame(wire + n, true, WSC_OP_TEXT, payload, 200);
    uint8_t cl[2] = {0x03, 0xf0}; /* 1008 */
    n += put_frame(wire + n, true, WSC_OP_CLOSE, cl, 2);
    n += put_frame(wire + n, true, WSC_OP_BINARY, payload, 10); /* after close: ignored */

    wsc_reader rd;
    wsc_reader_init(&rd);
    rec r = {0};
    int rc = WSC_FEED_OK;
    size_t i = 0;
    int msgs_at_ping = -1;
    for (; i < n && rc == WSC_FEED_OK; i++) {
        rc = wsc_feed(&rd, wire + i, 1, &rec_handler, &r);
        if (r.pings == 1 && msgs_at_ping < 0)
            msgs_at_ping = r.messages;
        if (r.messages == 1 && r.last_total == 300) {
            msg_head got = {0};
            CHECK(msg_decode(r.last_head, r.last_total, &got));
            CHECK(got.publisher == 7 && got.seq == 123456789012ull && got.sent_ns == 42);
            CHECK(got.flags == MSG_FLAG_MEASURED);
            r.last_total = 0;
        }
    }
    CHECK(rc == WSC_FEED_CLOSED);
    CHECK(msgs_at_ping == 0); /* the ping came mid-message */
    CHECK(r.messages == 3 && r.last_total == 200 && r.op == WSC_OP_TEXT);
    CHECK(r.pings == 1 && r.ping_len == 3 && memcmp(r.ping, "abc", 3) == 0);
    CHECK(r.closes == 1 && r.close_code == 1008);

    /* the same stream in one piece */
    wsc_reader_init(&rd);
    memset(&r, 0, sizeof r);
    CHECK(wsc_feed(&rd, wire, n, &rec_handler, &r) == WSC_FEED_CLOSED);
    CHECK(r.messages == 3 && r.pings == 1 && r.closes == 1);

    /* protocol errors */
    uint8_t bad[4][8] = {
        {0x82, 0x81, 1, 2, 3, 4, 0}, /* masked server frame */
        {0xC2, 0x00},                /* RSV1 */
        {0x80, 0x00},                /* continuation without a message */
        {0x09, 0x00},                /* fragmented ping */
    };
    for (int k = 0; k < 4; k++) {
        wsc_reader_init(&rd);
        CHECK(wsc_feed(&rd, bad[k], 7, &rec_handler, &r) == WSC_FEED_ERROR);
    }
    uint8_t close_empty[2] = {0x88, 0x00};
    wsc_reader_init(&rd);
    memset(&r, 0, sizeof r);
    CHECK(wsc_feed(&rd, close_empty, 2, &rec_handler, &r) == WSC_FEED_CLOSED);
    CHECK(r.close_code == -1);
}

/* --deflate: compressed messages (RSV1 on the first frame), fragmented and
 * fed byte by byte, inflate to the same head and length; one ending in a
 * final block plus 0x00 (as herald sends) and one ending in a sync flush
 * (as zlib-based servers do). RSV1 without the extension, or on a
 * continuation, is an error. */
static void test_reader_deflate(void)
{
    static uint8_t payload[40000], z[41000], wire[50000];
    msg_head m = {MSG_FLAG_MEASURED, 3, 99, 5};
    static const char pat[] = "{\"id\":1,\"t\":\"order shipped\"},";
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)pat[i % (sizeof pat - 1)];
    msg_encode(payload, &m);
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    size_t zn = libdeflate_deflate_compress(c, payload, sizeof payload, z, sizeof z - 1);
    libdeflate_free_compressor(c);
    CHECK(zn > 0 && zn < sizeof payload / 4);
    z[zn++] = 0x00; /* what follows a final block (RFC 7692 7.2.3.4) */
    size_t n = 0;
    n += put_frame(wire + n, false, WSC_OP_BINARY, z, 10);
    wire[0] |= 0x40;
    n += put_frame(wire + n, true, WSC_OP_PING, (const uint8_t *)"p", 1);
    n += put_frame(wire + n, true, WSC_OP_CONT, z + 10, zn - 10);
    /* a sync-flush message: a stored block of the 24-byte head, then the
     * empty stored block of the flush without its last 4 bytes (0x00 left) */
    uint8_t sync[40] = {0x00, 24, 0, (uint8_t)~24, 0xff};
    memcpy(sync + 5, payload, 24);
    sync[29] = 0x00;
    size_t s0 = n;
    n += put_frame(wire + n, true, WSC_OP_BINARY, sync, 30);
    wire[s0] |= 0x40;
    n += put_frame(wire + n, true, WSC_OP_TEXT, (const uint8_t *)"plain", 5);

    wsc_reader rd;
    wsc_reader_init(&rd);
    wsc_reader_enable_deflate(&rd);
    rec r = {0};
    for (size_t i = 0; i < n; i++)
        CHECK(wsc_feed(&rd, wire + i, 1, &rec_handler, &r) == WSC_FEED_OK);
    CHECK(r.messages == 3 && r.pings == 1 && r.last_total == 5 && r.op == WSC_OP_TEXT);
    wsc_reader_free(&rd);
    wsc_reader_init(&rd);
    wsc_reader_enable_deflate(&rd);
    memset(&r, 0, sizeof r);
    CHECK(wsc_feed(&rd, wire, s0, &rec_handler, &r) == WSC_FEED_OK);
    CHECK(r.messages == 1 && r.last_total == sizeof payload);
    msg_head got = {0};
    CHECK(msg_decode(r.last_head, r.last_total, &got) && got.publisher == 3 && got.seq == 99);
    CHECK(wsc_feed(&rd, wire + s0, n - s0, &rec_handler, &r) == WSC_FEED_OK);
    CHECK(r.messages == 3);
    wsc_reader_free(&rd);

    uint8_t bad[2][12] = {
        {0xC2, 0x01, 0x00},                   /* RSV1 without the extension */
        {0x42, 0x01, 0x00, 0xC0, 0x01, 0x00}, /* RSV1 on a continuation */
    };
    wsc_reader_init(&rd);
    CHECK(wsc_feed(&rd, bad[0], 3, &rec_handler, &r) == WSC_FEED_ERROR);
    wsc_reader_init(&rd);
    wsc_reader_enable_deflate(&rd);
    CHECK(wsc_feed(&rd, bad[1], 6, &rec_handler, &r) == WSC_FEED_ERROR);
    wsc_reader_free(&rd);
    wsc_thread_done();
}

/* ---- envelopes: built as herald builds them, read back through a
 * capturing reader (fragmented, byte by byte) and unwrapped ---- */

typedef struct env_rec {
    wsc_reader *rd;
    int format; /* 1 json, 2 msgpack */
    int messages, ok;
    uint64_t size;
    uint8_t payload[MSG_HEAD];
} env_rec;

static void env_message(void *ctx, uint8_t op, const uint8_t *head, uint64_t total)
{
    env_rec *e = ctx;
    (void)op;
    size_t have = total < e->rd->head_want ? (size_t)total : e->rd->head_want;
    e->messages++;
    e->ok = e->format == 1 ? unwrap_json(head, have, e->rd->tail, total, e->payload, &e->size)
                           : unwrap_msgpack(head, have, total, e->payload, &e->size);
}

static void env_ping(void *ctx, const uint8_t *p, size_t n)
{
    (void)ctx, (void)p, (void)n;
}

static void env_close(void *ctx, int code)
{
    (void)ctx, (void)code;
}

static const wsc_handler env_handler = {env_message, env_ping, env_close};

static size_t env_json(uint8_t *out, const char *epoch, const uint8_t *p, size_t n)
{
    int k = sprintf((char *)out, "{\"group\":\"g3\",\"offset\":18446744073709551615,"
                                 "\"epoch\":\"%s\",\"binary\":true,\"data\":\"", epoch);
    k += EVP_EncodeBlock(out + k, p, (int)n);
    out[k++] = '"';
    out[k++] = '}';
    return (size_t)k;
}

static size_t env_msgpack(uint8_t *out, const char *epoch, const uint8_t *p, size_t n)
{
    size_t k = 0, el = strlen(epoch);
    out[k++] = 0x84;
    out[k++] = 0xa5;
    memcpy(out + k, "group", 5), k += 5;
    out[k++] = 0xa2, out[k++] = 'g', out[k++] = '3';
    out[k++] = 0xa6;
    memcpy(out + k, "offset", 6), k += 6;
    out[k++] = 0xcf; /* uint64 */
    for (int i = 0; i < 8; i++)
        out[k++] = 0xff;
    out[k++] = 0xa5;
    memcpy(out + k, "epoch", 5), k += 5;
    out[k++] = 0xd9, out[k++] = (uint8_t)el; /* str8 */
    memcpy(out + k, epoch, el), k += el;
    out[k++] = 0xa4;
    memcpy(out + k, "data", 4), k += 4;
    if (n < 256) {
        out[k++] = 0xc4, out[k++] = (uint8_t)n;
    } else if (n < 65536) {
        out[k++] = 0xc5, out[k++] = (uint8_t)(n >> 8), out[k++] = (uint8_t)n;
    } else {
        out[k++] = 0xc6;
        for (int i = 3; i >= 0; i--)
            out[k++] = (uint8_t)(n >> (8 * i));
    }
    memcpy(out + k, p, n);
    return k + n;
}

static void test_unwrap(void)
{
    static uint8_t payload[70000], env[100000], wire[110000];
    msg_head m = {MSG_FLAG_MEASURED, 5, 987654321ull, 777};
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 13);
    msg_encode(payload, &m);
    const char *epoch = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";
    /* padding 0/2/1, bin 8/16/32 */
    size_t sizes[] = {24, 25, 26, 128, 255, 256, 1000, 65535, 65536, 70000};
    for (int fmt = 1; fmt <= 2; fmt++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            size_t el = fmt == 1 ? env_json(env, epoch, payload, n) : env_msgpack(env, epoch, payload, n);
            /* three fragments with a ping in between */
            size_t a = el / 3, b = el / 3 + 1, w = 0;
            w += put_frame(wire + w, false, fmt == 1 ? WSC_OP_TEXT : WSC_OP_BINARY, env, a);
            w += put_frame(wire + w, true, WSC_OP_PING, (const uint8_t *)"p", 1);
            w += put_frame(wire + w, false, WSC_OP_CONT, env + a, b);
            w += put_frame(wire + w, true, WSC_OP_CONT, env + a + b, el - a - b);
            for (int bytewise = 0; bytewise < 2; bytewise++) {
                if (bytewise && n > 1000)
                    continue;
                wsc_reader rd;
                wsc_reader_init_capture(&rd, WSC_HEAD_CAP);
                env_rec e = {.rd = &rd, .format = fmt};
                int rc = WSC_FEED_OK;
                if (bytewise)
                    for (size_t i = 0; i < w && rc == WSC_FEED_OK; i++)
                        rc = wsc_feed(&rd, wire + i, 1, &env_handler, &e);
                else
                    rc = wsc_feed(&rd, wire, w, &env_handler, &e);
                CHECK(rc == WSC_FEED_OK);
                CHECK(e.messages == 1 && e.ok && e.size == n);
                msg_head got = {0};
                CHECK(msg_decode(e.payload, e.size, &got));
                CHECK(got.publisher == 5 && got.seq == 987654321ull && got.sent_ns == 777);
                if (e.messages != 1 || !e.ok || e.size != n)
                    fprintf(stderr, "  format %d size %zu bytewise %d: ok %d size %llu\n", fmt, n,
                            bytewise, e.ok, (unsigned long long)e.size);
            }
        }
    }

    /* not envelopes, or damaged ones */
    uint8_t tail[WSC_TAIL];
    uint8_t out[MSG_HEAD];
    uint64_t size;
    size_t el = env_json(env, "e", payload, 128);
    memcpy(tail, env + el - WSC_TAIL, WSC_TAIL);
    CHECK(unwrap_json(env, el, tail, el, out, &size) && size == 128);
    CHECK(!unwrap_json(env, el, tail, el + 1, out, &size));      /* length not 4k */
    CHECK(!unwrap_json(payload, 128, tail, 128, out, &size));     /* raw payload */
    env[60] = '*';                                                /* not base64 */
    CHECK(!unwrap_json(env, el, tail, el, out, &size));
    el = env_msgpack(env, "e", payload, 128);
    CHECK(unwrap_msgpack(env, el, el, out, &size) && size == 128);
    CHECK(!unwrap_msgpack(env, el, el + 5, out, &size));          /* data not last */
    CHECK(!unwrap_msgpack(env, 20, el, out, &size));              /* payload not captured */
    CHECK(!unwrap_msgpack(payload, 128, 128, out, &size));
}

static void test_handshake(void)
{
    /* RFC 6455 section 1.3 example */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
                      "Connection: keep-alive, Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    char why[160];
    CHECK(wsc_head_len(ok, sizeof ok - 1) == sizeof ok - 1);
    CHECK(wsc_head_len(ok, sizeof ok - 2) == 0);
    CHECK(wsc_response_ok(ok, sizeof ok - 1, key, why, sizeof why));
    const char bad_accept[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Accept: xxxx\r\n\r\n";
    CHECK(!wsc_response_ok(bad_accept, sizeof bad_accept - 1, key, why, sizeof why));
    const char refused[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    CHECK(!wsc_response_ok(refused, sizeof refused - 1, key, why, sizeof why));
    CHECK(strstr(why, "400") != NULL);

    uint8_t raw[16] = {0};
    char k[WSC_KEY_LEN + 1];
    wsc_key_encode(raw, k);
    CHECK(strcmp(k, "AAAAAAAAAAAAAAAAAAAAAA==") == 0);
    char req[512];
    size_t rl = wsc_request(req, sizeof req, "127.0.0.1:80", "/ws", "groups", "g1", k);
    CHECK(rl > 0 && strncmp(req, "GET /ws?groups=g1 HTTP/1.1\r\n", 28) == 0);
    rl = wsc_request(req, sizeof req, "127.0.0.1:80", "/sub?x=1", "groups", "g1", k);
    CHECK(rl > 0 && strncmp(req, "GET /sub?x=1&groups=g1 ", 23) == 0);
}

static void test_mask(void)
{
    uint8_t buf[37], orig[37];
    for (int i = 0; i < 37; i++)
        buf[i] = orig[i] = (uint8_t)(i * 7);
    uint8_t hdr[WSC_MAX_HEADER];
    uint32_t mask = 0xa1b2c3d4u;
    size_t h = wsc_header(hdr, WSC_OP_BINARY, 37, mask);
    CHECK(h == 6 && hdr[0] == 0x82 && hdr[1] == (0x80 | 37));
    wsc_mask(buf, 37, mask);
    for (int i = 0; i < 37; i++)
        CHECK(buf[i] == (orig[i] ^ hdr[2 + (i & 3)]));
    CHECK(wsc_header_size(125) == 6 && wsc_header_size(126) == 8 && wsc_header_size(65536) == 14);
    h = wsc_header(hdr, WSC_OP_BINARY, 70000, mask);
    CHECK(h == 14 && hdr[1] == (0x80 | 127));
}

int main(void)
{
    test_hist();
    test_track();
    test_reader();
    test_reader_deflate();
    test_unwrap();
    test_handshake();
    test_mask();
    if (unit_failures) {
        fprintf(stderr, "%d check(s) failed\n", unit_failures);
        return 1;
    }
    printf("herald-bench unit tests passed\n");
    return 0;
}

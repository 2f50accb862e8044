/* Unit tests for src/deflate.c: compress-once frames and the bounded inflater.
 * zlib's own deflate plays the client (context takeover, sync flushes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <sched.h>

#include <cmocka.h>
#include <zlib.h>

#include "deflate.h"
#include "metrics.h"

typedef struct sink_buf {
    uint8_t *p;
    size_t n, cap, calls;
} sink_buf;

static bool sink(void *arg, const uint8_t *p, size_t n)
{
    sink_buf *b = arg;
    assert_true(n <= 16384);
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->calls++;
    return true;
}

/* A client's compressor: RFC 7692 7.2.1 (sync flush, tail removed). */
static size_t client_deflate(z_stream *zs, const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    zs->next_in = (Bytef *)(uintptr_t)in;
    zs->avail_in = (uInt)n;
    zs->next_out = out;
    zs->avail_out = (uInt)cap;
    assert_int_equal(deflate(zs, Z_SYNC_FLUSH), Z_OK);
    size_t z = cap - zs->avail_out;
    assert_true(z >= 4 && memcmp(out + z - 4, "\0\0\xff\xff", 4) == 0);
    return z - 4;
}

static void test_roundtrip_context_takeover(void **st)
{
    (void)st;
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    deflate_inflater *z = deflate_inflater_new(15, false);
    assert_non_null(z);
    static uint8_t out[1 << 16];
    const char *msgs[] = {"hello hello hello world", "hello hello hello world again",
                          "{\"a\":1,\"b\":[1,2,3]}"};
    for (int i = 0; i < 3; i++) {
        size_t n = client_deflate(&zs, (const uint8_t *)msgs[i], strlen(msgs[i]), out, sizeof out);
        sink_buf b = {0};
        /* fed byte by byte: fragments and reads split anywhere */
        for (size_t k = 0; k < n; k++)
            assert_int_equal(deflate_inflate(z, out + k, 1, false, 1 << 20, sink, &b), DEFLATE_OK);
        assert_int_equal(deflate_inflate(z, NULL, 0, true, 1 << 20, sink, &b), DEFLATE_OK);
        assert_int_equal(b.n, strlen(msgs[i]));
        assert_memory_equal(b.p, msgs[i], b.n);
        free(b.p);
    }
    deflateEnd(&zs);
    deflate_inflater_free(z);
}

static void test_bomb_stops_at_limit(void **st)
{
    (void)st;
    size_t big = 64u << 20;
    uint8_t *zeros = calloc(1, big);
    uLongf zcap = compressBound((uLong)big);
    uint8_t *zbuf = malloc(zcap);
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t zn = client_deflate(&zs, zeros, big, zbuf, zcap);
    deflateEnd(&zs);
    free(zeros);
    assert_true(zn < 128 * 1024); /* 64 MiB in ~64 KiB: the bomb */
    deflate_inflater *z = deflate_inflater_new(15, true);
    sink_buf b = {0};
    deflate_result r = deflate_inflate(z, zbuf, zn, true, 1 << 20, sink, &b);
    assert_int_equal(r, DEFLATE_TOO_BIG);
    assert_true(b.n <= 1 << 20); /* nothing past the limit reached the sink */
    free(b.p);
    free(zbuf);
    deflate_inflater_free(z);
}

static void test_corrupt_data(void **st)
{
    (void)st;
    deflate_inflater *z = deflate_inflater_new(15, true);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x13, 0x37};
    sink_buf b = {0};
    assert_int_equal(deflate_inflate(z, junk, sizeof junk, true, 1 << 20, sink, &b),
                     DEFLATE_CORRUPT);
    deflate_inflater_free(z);
    free(b.p);
}

static void test_truncated_with_context_kept(void **st)
{
    (void)st;
    /* A stored block header promising bytes that never come: with the
     * context kept, the next message would be read as its rest. */
    deflate_inflater *z = deflate_inflater_new(15, false);
    static const uint8_t half[] = {0x00, 0x0a, 0x00, 0xf5, 0xff, 'a'};
    sink_buf b = {0};
    assert_int_equal(deflate_inflate(z, half, sizeof half, true, 1 << 20, sink, &b),
                     DEFLATE_CORRUPT);
    deflate_inflater_free(z);
    free(b.p);
}

/* A message ending with a final block (BFINAL=1, RFC 7692 7.2.3.4): only
 * the empty stored block's 00 (or nothing) may follow it before the tail we
 * append; other bytes after the stream's end are refused, whether they come
 * with the last block or in a later fragment. */
static void test_after_final_block(void **st)
{
    (void)st;
    static const char body[] = "a final block, then only the empty block";
    uint8_t zb[256];
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)body;
    zs.avail_in = sizeof body - 1;
    zs.next_out = zb;
    zs.avail_out = sizeof zb - 8;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t zn = sizeof zb - 8 - zs.avail_out;
    deflateEnd(&zs);
    static const struct {
        const char *extra;
        size_t n;
        bool split; /* the extra bytes in a fragment of their own */
        deflate_result want;
    } cases[] = {
        {"", 0, false, DEFLATE_OK},
        {"\x00", 1, false, DEFLATE_OK},
        {"\x00", 1, true, DEFLATE_OK},
        {"\x00garbage", 8, false, DEFLATE_CORRUPT},
        {"garbage", 7, true, DEFLATE_CORRUPT},
        {"\x01", 1, false, DEFLATE_CORRUPT},
        {"\x00\x00", 2, false, DEFLATE_CORRUPT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        deflate_inflater *z = deflate_inflater_new(15, true);
        uint8_t in[300];
        memcpy(in, zb, zn);
        memcpy(in + zn, cases[i].extra, cases[i].n);
        sink_buf b = {0};
        deflate_result r;
        if (cases[i].split) {
            r = deflate_inflate(z, in, zn, false, 1 << 20, sink, &b);
            assert_int_equal(r, DEFLATE_OK);
            r = deflate_inflate(z, in + zn, cases[i].n, true, 1 << 20, sink, &b);
        } else {
            r = deflate_inflate(z, in, zn + cases[i].n, true, 1 << 20, sink, &b);
        }
        if (r != cases[i].want)
            fail_msg("case %zu: %d, want %d", i, (int)r, (int)cases[i].want);
        if (r == DEFLATE_OK) {
            assert_int_equal(b.n, sizeof body - 1);
            assert_memory_equal(b.p, body, b.n);
            /* and the next message starts afresh */
            free(b.p);
            b = (sink_buf){0};
            assert_int_equal(deflate_inflate(z, in, zn, true, 1 << 20, sink, &b), DEFLATE_OK);
            assert_int_equal(b.n, sizeof body - 1);
        }
        free(b.p);
        deflate_inflater_free(z);
    }
}

static msg *published(const void *p, size_t n)
{
    msg *m = msg_new_frame(MSG_DATA, WS_OP_TEXT, p, n);
    assert_non_null(m);
    return m;
}

static void test_variant_compress_once(void **st)
{
    (void)st;
    char text[4096];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = "{\"id\":12,\"name\":\"x\"}"[i % 20];
    msg *m = published(text, sizeof text);
    metrics mt = {0};
    msg *z = deflate_variant(m, 128, &mt);
    assert_ptr_not_equal(z, m);
    assert_ptr_equal(deflate_variant(m, 128, &mt), z); /* cached: built once */
    assert_int_equal(mt.deflate_messages, 1);
    assert_int_equal(z->data[0], 0x80 | 0x40 | WS_OP_TEXT); /* FIN, RSV1, text */
    /* what a client does: payload + 00 00 ff ff, inflate */
    size_t hl = z->len - z->payload_len;
    deflate_inflater *in = deflate_inflater_new(15, true);
    sink_buf b = {0};
    assert_int_equal(deflate_inflate(in, z->data + hl, z->payload_len, true, 1 << 20, sink, &b),
                     DEFLATE_OK);
    assert_int_equal(b.n, sizeof text);
    assert_memory_equal(b.p, text, b.n);
    free(b.p);
    deflate_inflater_free(in);
    msg_unref(m); /* frees the variant too (ASan would see a leak) */
}

static void test_variant_not_worth_it(void **st)
{
    (void)st;
    msg *small = published("tiny", 4);
    assert_ptr_equal(deflate_variant(small, 128, NULL), small);
    uint8_t rnd[1000];
    uint32_t x = 1;
    for (size_t i = 0; i < sizeof rnd; i++) {
        x = x * 1103515245u + 12345u;
        rnd[i] = (uint8_t)(x >> 24);
    }
    msg *noise = published(rnd, sizeof rnd);
    metrics mt = {0};
    assert_ptr_equal(deflate_variant(noise, 128, &mt), noise); /* does not shrink */
    assert_ptr_equal(atomic_load(&noise->deflated), noise);    /* ...and is not tried again */
    assert_ptr_equal(deflate_variant(noise, 128, &mt), noise);
    /* counted apart: herald_deflate_messages_total and its bytes are real compressions only */
    assert_int_equal(mt.deflate_messages, 0);
    assert_int_equal(mt.deflate_bytes_in, 0);
    assert_int_equal(mt.deflate_bytes_out, 0);
    assert_int_equal(mt.deflate_not_smaller, 1);
    msg_unref(small);
    msg_unref(noise);
    deflate_thread_done();
}

/* Two workers fanning out the same message at once: the first claims the
 * build, the other gets the plain frame at once (counted as busy) instead of
 * compressing the same bytes a second time; once built, everyone gets it. */
typedef struct build_arg {
    msg *m;
    msg *z;
    metrics mt;
} build_arg;

static void *build_thread(void *p)
{
    build_arg *a = p;
    a->z = deflate_variant(a->m, 128, &a->mt);
    deflate_thread_done();
    return NULL;
}

static void test_variant_built_once_under_concurrency(void **st)
{
    (void)st;
    /* 8 MiB of word salad: compressing it takes long enough to look at the
     * claim from this thread. */
    static const char *const words[] = {"order", "shipped", "payment", "received", "build",
                                        "{\"id\":", "\"user\":", "42,", "7}", " "};
    size_t n = 8u << 20;
    char *text = malloc(n);
    uint32_t x = 7;
    for (size_t i = 0; i < n;) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 16) % 10];
        for (; *w && i < n; w++)
            text[i++] = *w;
    }
    msg *m = published(text, n);
    free(text);
    build_arg a = {.m = m};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, build_thread, &a), 0);
    msg *seen;
    while (!(seen = atomic_load(&m->deflated)))
        sched_yield();
    metrics mt = {0};
    msg *mine = deflate_variant(m, 128, &mt);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_ptr_equal(seen, MSG_DEFLATE_BUILDING); /* claimed before compressing */
    assert_ptr_equal(mine, m);                    /* plain, not a second build */
    assert_int_equal(mt.deflate_messages, 0);
    assert_int_equal(mt.deflate_busy, 1);
    assert_int_equal(a.mt.deflate_messages, 1);
    assert_ptr_not_equal(a.z, m);
    assert_ptr_equal(deflate_variant(m, 128, &mt), a.z); /* published for everyone */
    msg_unref(m);

    /* A message freed with the claim still in place neither frees the
     * marker nor leaks (ASan). */
    msg *c = published("claimed", 7);
    atomic_store(&c->deflated, MSG_DEFLATE_BUILDING);
    msg_unref(c);
}

static void test_memory_counted(void **st)
{
    (void)st;
    uint64_t before = deflate_memory();
    deflate_inflater *z = deflate_inflater_new(15, false);
    sink_buf b = {0};
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    assert_int_equal(deflate_inflate(z, hello, sizeof hello, true, 100, sink, &b), DEFLATE_OK);
    assert_memory_equal(b.p, "Hello", 5);
    uint64_t during = deflate_memory();
    /* state + 32 KiB window */
    assert_true(during - before > 32768 && during - before < 64 * 1024);
    deflate_inflater_free(z);
    assert_int_equal(deflate_memory(), before);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_context_takeover),
        cmocka_unit_test(test_bomb_stops_at_limit),
        cmocka_unit_test(test_corrupt_data),
        cmocka_unit_test(test_truncated_with_context_kept),
        cmocka_unit_test(test_after_final_block),
        cmocka_unit_test(test_variant_compress_once),
        cmocka_unit_test(test_variant_not_worth_it),
        cmocka_unit_test(test_variant_built_once_under_concurrency),
        cmocka_unit_test(test_memory_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

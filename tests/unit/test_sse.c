/* Unit tests for the SSE encoder and the resume-position id (src/sse.c),
 * checked against an independent reading of the event stream format
 * (tests/common/ref_sse.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ref_sse.h"
#include "sse.h"

static uint8_t out[1 << 16], data[1 << 16];

/* Encodes text, checks the bound, parses it back. */
static ref_sse_event roundtrip_text(const char *event, const char *p, size_t n)
{
    size_t el = event ? strlen(event) : 0;
    size_t k = sse_encode_text(out, event, el, (const uint8_t *)p, n);
    assert_true(k <= sse_text_bound(el, n));
    ref_sse_event ev = {.data = data};
    assert_true(ref_sse_parse(out, k, &ev));
    return ev;
}

static void test_text_lines(void **state)
{
    (void)state;
    ref_sse_event ev = roundtrip_text(NULL, "hello", 5);
    assert_int_equal(ev.data_len, 5);
    assert_memory_equal(ev.data, "hello", 5);
    assert_string_equal(ev.event, "");
    /* Every line break kind becomes LF; a trailing break survives. */
    ev = roundtrip_text(NULL, "a\nb\r\nc\rd\n", 9);
    assert_int_equal(ev.data_len, 8);
    assert_memory_equal(ev.data, "a\nb\nc\nd\n", 8);
    /* Exact bytes for a simple case. */
    size_t k = sse_encode_text(out, NULL, 0, (const uint8_t *)"x\ny", 3);
    assert_int_equal(k, strlen("data: x\ndata: y\n\n"));
    assert_memory_equal(out, "data: x\ndata: y\n\n", k);
}

static void test_text_edges(void **state)
{
    (void)state;
    /* A leading space is data: the one after "data:" is the separator. */
    ref_sse_event ev = roundtrip_text(NULL, " x", 2);
    assert_int_equal(ev.data_len, 2);
    assert_memory_equal(ev.data, " x", 2);
    /* Colons and "id:" inside data stay data. */
    ev = roundtrip_text(NULL, "id: 5\n: c", 9);
    assert_false(ev.has_id);
    assert_memory_equal(ev.data, "id: 5\n: c", 9);
    /* Only line breaks: the worst case of the bound. */
    char breaks[64];
    memset(breaks, '\r', sizeof breaks);
    ev = roundtrip_text(NULL, breaks, sizeof breaks);
    assert_int_equal(ev.data_len, sizeof breaks);
    /* Empty: one empty data line. */
    size_t k = sse_encode_text(out, NULL, 0, (const uint8_t *)"", 0);
    assert_memory_equal(out, "data: \n\n", k);
    /* With an event name. */
    ev = roundtrip_text("recovery_failed", "{\"a\":1}", 7);
    assert_string_equal(ev.event, "recovery_failed");
    assert_memory_equal(ev.data, "{\"a\":1}", 7);
}

static void test_binary(void **state)
{
    (void)state;
    const uint8_t b[] = {0, 1, 2, 0xff, '\n', '\r'};
    size_t k = sse_encode_binary(out, b, sizeof b);
    assert_true(k <= sse_binary_bound(sizeof b));
    ref_sse_event ev = {.data = data};
    assert_true(ref_sse_parse(out, k, &ev));
    assert_string_equal(ev.event, "binary");
    assert_int_equal(ev.data_len, 8);
    assert_memory_equal(ev.data, "AAEC/woN", 8);
    k = sse_encode_binary(out, b, 0);
    assert_memory_equal(out, "event: binary\ndata: \n\n", k);
}

static void test_id_line(void **state)
{
    (void)state;
    uint64_t off[3] = {5, 0, UINT64_MAX};
    bool known[3] = {true, false, true};
    sse_pos p = {"ep0", 3, off, known, 3};
    size_t k = sse_id_line(out, sizeof out, &p);
    const char *want = "id: ep0/5,,18446744073709551615\n";
    assert_int_equal(k, strlen(want));
    assert_memory_equal(out, want, k);
    /* Too small a buffer, or an epoch byte an id line cannot carry. */
    assert_int_equal(sse_id_line(out, 10, &p), 0);
    p.epoch = "e\np";
    assert_int_equal(sse_id_line(out, sizeof out, &p), 0);
    /* No groups. */
    sse_pos z = {"e", 1, NULL, NULL, 0};
    k = sse_id_line(out, sizeof out, &z);
    assert_memory_equal(out, "id: e/\n", k);
}

static sse_id_result parse(const char *s, size_t ng, uint64_t *off, bool *known, sse_pos *p)
{
    p->off = off;
    p->known = known;
    return sse_id_parse(s, strlen(s), ng, p);
}

static void test_id_parse(void **state)
{
    (void)state;
    uint64_t off[4];
    bool known[4];
    sse_pos p;
    assert_int_equal(parse("abc/1,,30", 3, off, known, &p), SSE_ID_OK);
    assert_int_equal(p.epoch_len, 3);
    assert_memory_equal(p.epoch, "abc", 3);
    assert_true(known[0] && !known[1] && known[2]);
    assert_int_equal(off[0], 1);
    assert_int_equal(off[2], 30);
    /* The epoch is everything before the last '/'. */
    assert_int_equal(parse("a/b/7", 1, off, known, &p), SSE_ID_OK);
    assert_int_equal(p.epoch_len, 3);
    assert_int_equal(off[0], 7);
    assert_int_equal(parse("e/", 0, off, known, &p), SSE_ID_OK);
    assert_int_equal(parse("e/", 1, off, known, &p), SSE_ID_OK); /* one empty entry */
    assert_false(known[0]);
    assert_int_equal(parse("e/18446744073709551615", 1, off, known, &p), SSE_ID_OK);
    assert_int_equal(off[0], UINT64_MAX);
}

static void test_id_parse_hostile(void **state)
{
    (void)state;
    uint64_t off[4];
    bool known[4];
    sse_pos p;
    assert_int_equal(parse("", 1, off, known, &p), SSE_ID_NO_EPOCH);
    assert_int_equal(parse("12", 1, off, known, &p), SSE_ID_NO_EPOCH);
    assert_int_equal(parse("/5", 1, off, known, &p), SSE_ID_NO_EPOCH);
    assert_int_equal(parse("e e/5", 1, off, known, &p), SSE_ID_BAD_EPOCH);
    assert_int_equal(parse("e\x7f/5", 1, off, known, &p), SSE_ID_BAD_EPOCH);
    char big[SSE_ID_MAX + 2];
    memset(big, 'a', sizeof big);
    big[SSE_EPOCH_MAX + 1] = '/';
    big[SSE_EPOCH_MAX + 2] = '\0';
    assert_int_equal(parse(big, 0, off, known, &p), SSE_ID_BAD_EPOCH);
    memset(big, '1', sizeof big - 1);
    big[0] = 'e';
    big[1] = '/';
    big[sizeof big - 1] = '\0';
    assert_int_equal(parse(big, 1, off, known, &p), SSE_ID_TOO_LONG);
    assert_int_equal(parse("e/18446744073709551616", 1, off, known, &p), SSE_ID_BAD_OFFSET);
    assert_int_equal(parse("e/-1", 1, off, known, &p), SSE_ID_BAD_OFFSET);
    assert_int_equal(parse("e/1 ", 1, off, known, &p), SSE_ID_BAD_OFFSET);
    assert_int_equal(parse("e/0x1", 1, off, known, &p), SSE_ID_BAD_OFFSET);
    assert_int_equal(parse("e/1,2", 1, off, known, &p), SSE_ID_COUNT);
    assert_int_equal(parse("e/1", 2, off, known, &p), SSE_ID_COUNT);
    assert_int_equal(parse("e/1", 0, off, known, &p), SSE_ID_COUNT);
    assert_int_equal(parse("e/1,2,3,4,5", 4, off, known, &p), SSE_ID_COUNT);
    assert_string_equal(sse_id_error(SSE_ID_COUNT),
                        "Last-Event-ID does not match the groups of this stream");
}

static void test_id_roundtrip(void **state)
{
    (void)state;
    uint64_t off[64], back[64];
    bool known[64], bknown[64];
    for (size_t i = 0; i < 64; i++) {
        off[i] = i * 0x9e3779b97f4a7c15ull;
        known[i] = i % 3 != 0;
    }
    char epoch[SSE_EPOCH_MAX];
    memset(epoch, 'z', sizeof epoch);
    sse_pos p = {epoch, sizeof epoch, off, known, 64};
    size_t k = sse_id_line(out, sizeof out, &p);
    assert_true(k > 5 && k - 5 <= SSE_ID_MAX); /* the largest id a stream makes parses */
    sse_pos q = {.off = back, .known = bknown};
    assert_int_equal(sse_id_parse((const char *)out + 4, k - 5, 64, &q), SSE_ID_OK);
    assert_int_equal(q.epoch_len, sizeof epoch);
    for (size_t i = 0; i < 64; i++) {
        assert_int_equal(bknown[i], known[i]);
        if (known[i])
            assert_int_equal(back[i], off[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_lines),     cmocka_unit_test(test_text_edges),
        cmocka_unit_test(test_binary),         cmocka_unit_test(test_id_line),
        cmocka_unit_test(test_id_parse),       cmocka_unit_test(test_id_parse_hostile),
        cmocka_unit_test(test_id_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for permessage-deflate negotiation (src/pmd.c, RFC 7692 7.1)
 * and for the frame reader's RSV1 rules once it is negotiated (src/ws.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pmd.h"
#include "ws.h"

/* Negotiates over one or more header values; returns the response or NULL. */
static const char *neg(pmd_params *p, size_t n, const char *const *v)
{
    static char out[PMD_RESPONSE_MAX];
    http_str hs[8];
    for (size_t i = 0; i < n; i++)
        hs[i] = (http_str){v[i], strlen(v[i])};
    memset(p, 0xAA, sizeof *p);
    return pmd_negotiate(hs, n, p, out) ? out : NULL;
}

static const char *neg1(pmd_params *p, const char *v) { return neg(p, 1, &v); }

static void test_plain_offer(void **st)
{
    (void)st;
    pmd_params p;
    const char *r = neg1(&p, "permessage-deflate");
    assert_non_null(r);
    /* client_no_context_takeover is always added (RFC 7692 7.1.1.2). */
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover");
    assert_true(p.client_no_context_takeover);
    assert_int_equal(p.client_window_bits, 15);
    assert_int_equal(p.server_window_bits, 15);
}

static void test_browser_offer(void **st)
{
    (void)st;
    pmd_params p;
    /* Chromium and Firefox send exactly this. */
    const char *r = neg1(&p, "permessage-deflate; client_max_window_bits");
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover");
    assert_int_equal(p.client_window_bits, 15);
}

static void test_all_parameters(void **st)
{
    (void)st;
    pmd_params p;
    const char *r = neg1(&p, "permessage-deflate;client_no_context_takeover; "
                             "server_no_context_takeover ;server_max_window_bits=10;"
                             " client_max_window_bits=\"9\"");
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; server_max_window_bits=10; "
                           "client_max_window_bits=9");
    assert_true(p.client_no_context_takeover);
    assert_int_equal(p.server_window_bits, 10);
    assert_int_equal(p.client_window_bits, 9);
}

static void test_case_insensitive_names(void **st)
{
    (void)st;
    pmd_params p;
    assert_non_null(neg1(&p, "PerMessage-Deflate; Server_Max_Window_Bits=8"));
    assert_int_equal(p.server_window_bits, 8);
}

static void test_bad_offers_are_skipped(void **st)
{
    (void)st;
    static const char *const bad[] = {
        "permessage-deflate; server_max_window_bits",        /* needs a value */
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",    /* leading zero */
        "permessage-deflate; client_max_window_bits=0x9",
        "permessage-deflate; client_max_window_bits=123456789012345678901",
        "permessage-deflate; server_no_context_takeover=1",  /* takes no value */
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; unknown_param",
        "permessage-deflate; x-webkit=1",
        "permessage-deflate; server_max_window_bits=\"1",    /* unterminated quote */
        "permessage-deflate; =9",
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate server_no_context_takeover",     /* missing ';' */
        "x-webkit-deflate-frame",
        "deflate-frame; no_context_takeover",
        "",
        ",,,",
        ";",
        "permessage-deflate;;",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pmd_params p;
        if (neg1(&p, bad[i]))
            fail_msg("accepted: %s", bad[i]);
    }
}

static void test_next_offer_after_a_bad_one(void **st)
{
    (void)st;
    pmd_params p;
    const char *r = neg1(&p, "permessage-deflate; foo=\"a,b\", "
                             "permessage-deflate; server_max_window_bits=99, "
                             "x-other; a=1, permessage-deflate; client_no_context_takeover");
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover");
    assert_true(p.client_no_context_takeover);
}

static void test_offers_across_headers(void **st)
{
    (void)st;
    pmd_params p;
    static const char *const v[] = {"foo, permessage-deflate; bar", "",
                                    "permessage-deflate; server_max_window_bits=12"};
    const char *r = neg(&p, 3, v);
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; server_max_window_bits=12");
    assert_int_equal(p.server_window_bits, 12);
}

static void test_first_acceptable_wins(void **st)
{
    (void)st;
    pmd_params p;
    const char *r = neg1(&p, "permessage-deflate; client_max_window_bits=10, permessage-deflate");
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; client_max_window_bits=10");
}

/* The largest answers, every parameter with two-digit window bits, come
 * back whole (a 128-byte buffer once cut the last digit off). */
static void test_response_fits(void **st)
{
    (void)st;
    pmd_params p;
    const char *r = neg1(&p, "permessage-deflate; client_no_context_takeover; "
                             "server_no_context_takeover; server_max_window_bits=15; "
                             "client_max_window_bits=15");
    assert_non_null(r);
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; server_max_window_bits=15; "
                           "client_max_window_bits=15");
    r = neg1(&p, "permessage-deflate; server_max_window_bits=15; client_max_window_bits=15");
    assert_non_null(r);
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; server_max_window_bits=15; "
                           "client_max_window_bits=15");
    assert_int_equal(p.client_window_bits, 15);
    assert_int_equal(p.server_window_bits, 15);
    assert_true(strlen(r) < PMD_RESPONSE_MAX);
}

/* ---- the reader's RSV1 rules ------------------------------------------ */

static size_t frame(uint8_t *out, uint8_t b0, const char *payload)
{
    size_t n = strlen(payload);
    out[0] = b0;
    out[1] = (uint8_t)(0x80 | n);
    memset(out + 2, 0, 4); /* zero mask: payload as is */
    memcpy(out + 6, payload, n);
    return 6 + n;
}

static ws_event feed_all(ws_reader *r, uint8_t *b, size_t n)
{
    ws_event ev = {0}, last = {0};
    size_t off = 0;
    for (int guard = 0; guard < 64; guard++) {
        off += ws_reader_feed(r, b + off, n - off, &ev);
        if (ev.type == WS_EV_ERROR)
            return ev;
        if (ev.type != WS_EV_NONE)
            last = ev;
        else if (off >= n)
            break;
    }
    return last;
}

static void test_rsv1_without_extension(void **st)
{
    (void)st;
    ws_reader r;
    ws_reader_init(&r, 1 << 20);
    uint8_t b[64];
    size_t n = frame(b, 0x80 | 0x40 | WS_OP_TEXT, "x");
    ws_event ev = feed_all(&r, b, n);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.code, WS_CLOSE_PROTOCOL);
}

static void test_rsv1_on_control_and_continuation(void **st)
{
    (void)st;
    uint8_t b[64];
    ws_reader r;
    ws_reader_init(&r, 1 << 20);
    ws_reader_allow_rsv1(&r);
    size_t n = frame(b, 0x80 | 0x40 | WS_OP_PING, "p");
    ws_event ev = feed_all(&r, b, n);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.code, WS_CLOSE_PROTOCOL);

    ws_reader_init(&r, 1 << 20);
    ws_reader_allow_rsv1(&r);
    n = frame(b, 0x40 | WS_OP_TEXT, "ab");
    n += frame(b + n, 0x80 | 0x40 | WS_OP_CONT, "cd");
    ev = feed_all(&r, b, n);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.code, WS_CLOSE_PROTOCOL);

    ws_reader_init(&r, 1 << 20);
    ws_reader_allow_rsv1(&r);
    n = frame(b, 0x80 | 0x20 | WS_OP_TEXT, "ab"); /* RSV2: never */
    ev = feed_all(&r, b, n);
    assert_int_equal(ev.code, WS_CLOSE_PROTOCOL);
}

static void test_compressed_message_skips_utf8(void **st)
{
    (void)st;
    uint8_t b[64];
    ws_reader r;
    ws_reader_init(&r, 1 << 20);
    ws_reader_allow_rsv1(&r);
    /* Compressed bytes are not UTF-8; the caller checks the inflated text.
     * Fragmented: RSV1 on the first frame only. */
    size_t n = frame(b, 0x40 | WS_OP_TEXT, "\xff\xfe");
    n += frame(b + n, 0x80 | WS_OP_CONT, "\xc0");
    ws_event ev = feed_all(&r, b, n);
    assert_int_equal(ev.type, WS_EV_MESSAGE_END);
    assert_true(ev.compressed);
    /* The next, uncompressed message is checked again. */
    n = frame(b, 0x80 | WS_OP_TEXT, "\xff");
    ev = feed_all(&r, b, n);
    assert_int_equal(ev.type, WS_EV_ERROR);
    assert_int_equal(ev.code, WS_CLOSE_BAD_DATA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_offer),
        cmocka_unit_test(test_browser_offer),
        cmocka_unit_test(test_all_parameters),
        cmocka_unit_test(test_case_insensitive_names),
        cmocka_unit_test(test_bad_offers_are_skipped),
        cmocka_unit_test(test_next_offer_after_a_bad_one),
        cmocka_unit_test(test_offers_across_headers),
        cmocka_unit_test(test_first_acceptable_wins),
        cmocka_unit_test(test_response_fits),
        cmocka_unit_test(test_rsv1_without_extension),
        cmocka_unit_test(test_rsv1_on_control_and_continuation),
        cmocka_unit_test(test_compressed_message_skips_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

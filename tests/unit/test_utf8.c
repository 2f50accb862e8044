/* Unit tests for the incremental UTF-8 validator (src/utf8.h), RFC 3629.
 *
 * Every case is checked three ways: utf8_valid on the whole buffer, utf8_feed
 * on the whole buffer, and utf8_feed one byte at a time. The byte-at-a-time
 * run also pins down "fail fast": utf8_feed must return false exactly at the
 * first byte that can no longer be part of valid UTF-8, not later when the
 * sequence would have ended. An independent reference (which decodes code
 * point ranges instead of using lead-byte tables) checks exhaustive and
 * random inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

#define NO_FAIL ((size_t)-1)

/* ---- independent reference -------------------------------------------- */

#include "ref_utf8.h"

/* ---- helpers ------------------------------------------------------------ */

/* Byte-at-a-time run: index of the first byte for which utf8_feed returned
 * false (n when none did); *complete is utf8_complete at the end. */
static size_t impl_first_bad(const uint8_t *p, size_t n, bool *complete)
{
    utf8_state s;
    utf8_init(&s);
    for (size_t i = 0; i < n; i++) {
        if (!utf8_feed(&s, p + i, 1)) {
            *complete = false;
            return i;
        }
    }
    *complete = utf8_complete(&s);
    return n;
}

static bool feed_split(const uint8_t *p, size_t n, size_t cut)
{
    utf8_state s;
    utf8_init(&s);
    if (!utf8_feed(&s, p, cut))
        return false;
    if (!utf8_feed(&s, p + cut, n - cut))
        return false;
    return utf8_complete(&s);
}

/* Checks one input every way. fail_at: index of the first impossible byte,
 * or NO_FAIL when no byte is impossible (valid, or merely truncated). */
static void check_bytes(const uint8_t *p, size_t n, bool valid, size_t fail_at, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, "case %s", what);

    bool whole = utf8_valid(p, n);
    if (whole != valid)
        fail_msg("%s: utf8_valid = %d, expected %d", msg, whole, valid);

    utf8_state s;
    utf8_init(&s);
    bool fed = utf8_feed(&s, p, n);
    if (fed != (fail_at == NO_FAIL))
        fail_msg("%s: utf8_feed(whole) = %d, expected %d", msg, fed, fail_at == NO_FAIL);
    if (fed && utf8_complete(&s) != valid)
        fail_msg("%s: utf8_complete = %d, expected %d", msg, utf8_complete(&s), valid);

    bool complete;
    size_t bad = impl_first_bad(p, n, &complete);
    size_t want = fail_at == NO_FAIL ? n : fail_at;
    if (bad != want)
        fail_msg("%s: byte-by-byte feed failed at %zu, expected %zu", msg, bad, want);
    if (bad == n && complete != valid)
        fail_msg("%s: byte-by-byte complete = %d, expected %d", msg, complete, valid);

    /* The bytes before the first impossible one are accepted in one call. */
    if (fail_at != NO_FAIL) {
        utf8_init(&s);
        if (!utf8_feed(&s, p, fail_at))
            fail_msg("%s: prefix before the bad byte rejected", msg);
        if (utf8_feed(&s, p + fail_at, 1))
            fail_msg("%s: bad byte %zu accepted after whole prefix", msg, fail_at);
    }

    for (size_t cut = 0; cut <= n; cut++)
        if (feed_split(p, n, cut) != valid)
            fail_msg("%s: split at %zu gives %d, expected %d", msg, cut, !valid, valid);

    /* And the reference agrees with the expectation (guards the table). */
    bool rc;
    size_t rbad = ref_first_bad(p, n, &rc);
    if (rbad != want || (rbad == n && rc != valid))
        fail_msg("%s: reference disagrees with the test table", msg);
}

#define CASE(lit, valid, fail_at) \
    check_bytes((const uint8_t *)(lit), sizeof(lit) - 1, (valid), (fail_at), #lit)
#define VALID(lit) CASE(lit, true, NO_FAIL)
#define TRUNCATED(lit) CASE(lit, false, NO_FAIL)
#define INVALID_AT(lit, i) CASE(lit, false, (size_t)(i))

/* ---- tests -------------------------------------------------------------- */

static void test_empty(void **state)
{
    (void)state;
    utf8_state s;
    utf8_init(&s);
    assert_true(utf8_complete(&s));
    assert_true(utf8_feed(&s, (const uint8_t *)"", 0));
    assert_true(utf8_complete(&s));
    assert_true(utf8_valid((const uint8_t *)"", 0));
}

static void test_ascii(void **state)
{
    (void)state;
    uint8_t all[128];
    for (int i = 0; i < 128; i++)
        all[i] = (uint8_t)i;
    check_bytes(all, sizeof all, true, NO_FAIL, "all ASCII");
    VALID("Hello, world!");
    VALID("\x00");

    /* A long ASCII run with one bad byte at every position (exercises any
     * word-at-a-time fast path and its tail). */
    uint8_t buf[67];
    for (size_t bad = 0; bad < sizeof buf; bad++) {
        static const uint8_t bads[] = {0x80, 0xBF, 0xC0, 0xFF};
        for (size_t k = 0; k < sizeof bads; k++) {
            memset(buf, 'a', sizeof buf);
            buf[bad] = bads[k];
            char what[64];
            snprintf(what, sizeof what, "ascii with 0x%02X at %zu", bads[k], bad);
            check_bytes(buf, sizeof buf, false, bad, what);
        }
        /* a valid 2-byte char at every alignment */
        if (bad + 1 < sizeof buf) {
            memset(buf, 'a', sizeof buf);
            buf[bad] = 0xC3;
            buf[bad + 1] = 0xA9;
            check_bytes(buf, sizeof buf, true, NO_FAIL, "ascii with e-acute");
        }
    }
}

static void test_valid_multibyte(void **state)
{
    (void)state;
    VALID("\xC2\xA2");             /* U+00A2 */
    VALID("\xC3\xA9t\xC3\xA9");    /* été */
    VALID("\xE2\x82\xAC");         /* U+20AC euro */
    VALID("\xE6\x97\xA5\xE6\x9C\xAC"); /* 日本 */
    VALID("\xF0\x9F\x98\x80");     /* U+1F600 */
    VALID("\xF0\x90\x8D\x88");     /* U+10348 */
    VALID("a\xC2\xA2\xE2\x82\xAC\xF0\x9F\x98\x80z");
}

static void test_boundaries(void **state)
{
    (void)state;
    VALID("\x7F");             /* U+007F */
    VALID("\xC2\x80");         /* U+0080 */
    VALID("\xDF\xBF");         /* U+07FF */
    VALID("\xE0\xA0\x80");     /* U+0800 */
    VALID("\xED\x9F\xBF");     /* U+D7FF */
    VALID("\xEE\x80\x80");     /* U+E000 */
    VALID("\xEF\xBF\xBD");     /* U+FFFD */
    VALID("\xEF\xBF\xBF");     /* U+FFFF */
    VALID("\xF0\x90\x80\x80"); /* U+10000 */
    VALID("\xF4\x8F\xBF\xBF"); /* U+10FFFF */
}

static void test_overlong(void **state)
{
    (void)state;
    /* C0 and C1 can only start overlongs: rejected on the lead byte. */
    INVALID_AT("\xC0\x80", 0);
    INVALID_AT("\xC0\xAF", 0);
    INVALID_AT("\xC1\xBF", 0);
    INVALID_AT("\xE0\x80\x80", 1);
    INVALID_AT("\xE0\x80\xAF", 1);
    INVALID_AT("\xE0\x9F\xBF", 1); /* U+07FF in 3 bytes */
    INVALID_AT("\xF0\x80\x80\x80", 1);
    INVALID_AT("\xF0\x80\x80\xAF", 1);
    INVALID_AT("\xF0\x8F\xBF\xBF", 1); /* U+FFFF in 4 bytes */
    INVALID_AT("\xF8\x80\x80\x80\xAF", 0);
    INVALID_AT("\xFC\x80\x80\x80\x80\xAF", 0);
    INVALID_AT("ab\xC0\x80", 2);
}

static void test_surrogates(void **state)
{
    (void)state;
    INVALID_AT("\xED\xA0\x80", 1); /* U+D800 */
    INVALID_AT("\xED\xAD\xBF", 1); /* U+DB7F */
    INVALID_AT("\xED\xAE\x80", 1); /* U+DB80 */
    INVALID_AT("\xED\xAF\xBF", 1); /* U+DBFF */
    INVALID_AT("\xED\xB0\x80", 1); /* U+DC00 */
    INVALID_AT("\xED\xBE\x80", 1); /* U+DF80 */
    INVALID_AT("\xED\xBF\xBF", 1); /* U+DFFF */
    /* paired surrogates (CESU-8) are not UTF-8 either */
    INVALID_AT("\xED\xA0\x80\xED\xB0\x80", 1);
    INVALID_AT("\xED\xAF\xBF\xED\xBF\xBF", 1);
    /* the lead byte ED itself is fine: it may still become U+D000..U+D7FF */
    TRUNCATED("\xED");
    VALID("\xED\x80\x80"); /* U+D000 */
}

static void test_above_max(void **state)
{
    (void)state;
    INVALID_AT("\xF4\x90\x80\x80", 1); /* U+110000 */
    INVALID_AT("\xF4\xBF\xBF\xBF", 1);
    INVALID_AT("\xF7\xBF\xBF\xBF", 0); /* U+1FFFFF */
    INVALID_AT("\xFB\xBF\xBF\xBF\xBF", 0);
    INVALID_AT("\xFD\xBF\xBF\xBF\xBF\xBF", 0);
    for (unsigned b = 0xF5; b <= 0xFF; b++) {
        uint8_t one[4] = {(uint8_t)b, 0x80, 0x80, 0x80};
        char what[32];
        snprintf(what, sizeof what, "lead 0x%02X", b);
        check_bytes(one, 1, false, 0, what);
        check_bytes(one, 4, false, 0, what);
    }
}

static void test_stray_continuation(void **state)
{
    (void)state;
    for (unsigned b = 0x80; b <= 0xBF; b++) {
        uint8_t one[3] = {(uint8_t)b, 'a', (uint8_t)b};
        char what[48];
        snprintf(what, sizeof what, "continuation 0x%02X", b);
        check_bytes(one, 1, false, 0, what);
        check_bytes(one, 3, false, 0, what);
    }
    INVALID_AT("a\x80", 1);
    INVALID_AT("\xC2\x80\x80", 2);     /* one continuation too many */
    INVALID_AT("\xE2\x82\xAC\xAC", 3);
    INVALID_AT("\xF0\x9F\x98\x80\x80", 4);
}

static void test_truncated(void **state)
{
    (void)state;
    TRUNCATED("\xC2");
    TRUNCATED("\xDF");
    TRUNCATED("\xE0");
    TRUNCATED("\xE0\xA0");
    TRUNCATED("\xE2\x82");
    TRUNCATED("\xEF\xBF");
    TRUNCATED("\xF0");
    TRUNCATED("\xF0\x9F");
    TRUNCATED("\xF0\x9F\x98");
    TRUNCATED("\xF4\x8F\xBF");
    TRUNCATED("abc\xE2\x82");
    /* a truncated sequence followed by something that cannot continue it */
    INVALID_AT("\xE2\x82" "A", 2);
    INVALID_AT("\xC2\xC2\x80", 1);
    INVALID_AT("\xF0\x9F\x98" "\xE2\x82\xAC", 3);
    INVALID_AT("\xC2 ", 1);
}

static void test_lonely_start_bytes(void **state)
{
    (void)state;
    /* Autobahn 6.13: each start byte followed by a space. */
    for (unsigned b = 0xC0; b <= 0xFF; b++) {
        uint8_t two[2] = {(uint8_t)b, ' '};
        size_t at = (b == 0xC0 || b == 0xC1 || b >= 0xF5) ? 0 : 1;
        char what[32];
        snprintf(what, sizeof what, "lonely 0x%02X", b);
        check_bytes(two, 2, false, at, what);
    }
}

static void test_fail_fast(void **state)
{
    (void)state;
    /* Autobahn 6.4.x: the validator must stop at the byte that makes the
     * text impossible, before the (would-be) sequence ends. */
    static const uint8_t t641[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                                  "\xf4\x90\x80\x80"
                                  "\x65\x64\x69\x74\x65\x64";
    utf8_state s;
    utf8_init(&s);
    assert_true(utf8_feed(&s, t641, 11));     /* κόσμε */
    assert_true(utf8_feed(&s, t641 + 11, 1)); /* F4 may still be U+10xxxx */
    assert_false(utf8_complete(&s));
    assert_false(utf8_feed(&s, t641 + 12, 1)); /* 90: would be > U+10FFFF */

    /* fed in one call, it still fails before consuming the whole buffer
     * would matter: the result must be false */
    utf8_init(&s);
    assert_false(utf8_feed(&s, t641, sizeof t641 - 1));

    /* surrogate: fails on the second byte */
    utf8_init(&s);
    assert_true(utf8_feed(&s, (const uint8_t *)"ok\xED", 3));
    assert_false(utf8_feed(&s, (const uint8_t *)"\xA0", 1));

    /* overlong: fails on the second byte */
    utf8_init(&s);
    assert_true(utf8_feed(&s, (const uint8_t *)"\xF0", 1));
    assert_false(utf8_feed(&s, (const uint8_t *)"\x8F", 1));
}

static void test_autobahn_6(void **state)
{
    (void)state;
    VALID("");                                                   /* 6.1 */
    VALID("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"); /* 6.2 */
    VALID("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5");       /* 6.3.1 / 6.5.1 κόσμε */
    INVALID_AT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"   /* 6.3.2 */
               "\xed\xa0\x80\x65\x64\x69\x74\x65\x64", 12);
    INVALID_AT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"   /* 6.4.1 */
               "\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64", 12);
    INVALID_AT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", 12); /* 6.4.3 */
    INVALID_AT("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90", 12);        /* 6.4.4 */
    /* 6.6: every prefix of κόσμε is valid-so-far; the ones ending mid-char
     * are incomplete */
    static const uint8_t kosme[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
    static const bool boundary[] = {1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1};
    for (size_t n = 0; n <= 11; n++)
        check_bytes(kosme, n, boundary[n], NO_FAIL, "6.6 prefix of kosme");
    /* 6.7 / 6.9: first and last sequences of each length */
    VALID("\x00");
    VALID("\xc2\x80");
    VALID("\xe0\xa0\x80");
    VALID("\xf0\x90\x80\x80");
    VALID("\x7f");
    VALID("\xdf\xbf");
    VALID("\xef\xbf\xbf");
    VALID("\xf4\x8f\xbf\xbf");
    /* 6.8 / 6.10: 5- and 6-byte forms */
    INVALID_AT("\xf8\x88\x80\x80\x80", 0);
    INVALID_AT("\xfc\x84\x80\x80\x80\x80", 0);
    INVALID_AT("\xfb\xbf\xbf\xbf\xbf", 0);
    INVALID_AT("\xfd\xbf\xbf\xbf\xbf\xbf", 0);
    /* 6.11: other boundaries */
    VALID("\xed\x9f\xbf");
    VALID("\xee\x80\x80");
    VALID("\xef\xbf\xbd");
    INVALID_AT("\xf4\x90\x80\x80", 1);
    /* 6.12.x: unexpected continuation bytes */
    INVALID_AT("\x80", 0);
    INVALID_AT("\xbf", 0);
    INVALID_AT("\x80\xbf", 0);
    INVALID_AT("\x80\xbf\x80", 0);
    INVALID_AT("\x80\xbf\x80\xbf", 0);
    /* 6.14 / 6.15: last byte missing, and those concatenated */
    TRUNCATED("\xdf");
    TRUNCATED("\xef\xbf");
    INVALID_AT("\xc0", 0);
    INVALID_AT("\xe0\x80", 1);
    INVALID_AT("\xf0\x80\x80", 1);
    INVALID_AT("\xf7\xbf\xbf", 0);
    INVALID_AT("\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80", 0);
    INVALID_AT("\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf", 1);
    /* 6.16: impossible bytes */
    INVALID_AT("\xfe", 0);
    INVALID_AT("\xff", 0);
    INVALID_AT("\xfe\xfe\xff\xff", 0);
    INVALID_AT("a\xfe", 1);
    /* 6.17-6.19: overlongs (see test_overlong) */
    INVALID_AT("\xc0\xaf", 0);
    INVALID_AT("\xe0\x80\xaf", 1);
    INVALID_AT("\xf0\x80\x80\xaf", 1);
    INVALID_AT("\xc1\xbf", 0);
    INVALID_AT("\xe0\x9f\xbf", 1);
    INVALID_AT("\xf0\x8f\xbf\xbf", 1);
    /* 6.20 / 6.21: surrogates (see test_surrogates) */
    INVALID_AT("\xed\xa0\x80\xed\xbf\xbf", 1);
    /* 6.22: noncharacters are valid UTF-8 */
    VALID("\xef\xbf\xbe");     /* U+FFFE */
    VALID("\xef\xbf\xbf");     /* U+FFFF */
    VALID("\xef\xb7\x90");     /* U+FDD0 */
    VALID("\xef\xb7\xaf");     /* U+FDEF */
    VALID("\xf0\x9f\xbf\xbe"); /* U+1FFFE */
    VALID("\xf0\x9f\xbf\xbf");
    VALID("\xf4\x8f\xbf\xbe"); /* U+10FFFE */
    /* 6.23 */
    VALID("\xef\xbf\xbd");
}

static void test_exhaustive_vs_reference(void **state)
{
    (void)state;
    static const uint8_t probes[] = {0x41, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC2, 0xFF};
    uint8_t buf[4];
    /* every 1- and 2-byte input */
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            buf[0] = (uint8_t)a;
            buf[1] = (uint8_t)b;
            for (size_t n = 1; n <= 2; n++) {
                bool rc, ic;
                size_t rbad = ref_first_bad(buf, n, &rc);
                size_t ibad = impl_first_bad(buf, n, &ic);
                bool want = rbad == n && rc;
                if (utf8_valid(buf, n) != want || ibad != rbad || (rbad == n && ic != rc))
                    fail_msg("%02X %02X (n=%zu): valid=%d first_bad=%zu, reference %d/%zu", a, b,
                             n, utf8_valid(buf, n), ibad, want, rbad);
            }
        }
    }
    /* every lead and second byte with probe values after them */
    for (unsigned a = 0xC0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (size_t c = 0; c < sizeof probes; c++) {
                for (size_t d = 0; d < sizeof probes; d++) {
                    buf[0] = (uint8_t)a;
                    buf[1] = (uint8_t)b;
                    buf[2] = probes[c];
                    buf[3] = probes[d];
                    for (size_t n = 3; n <= 4; n++) {
                        if (n == 3 && d > 0)
                            continue;
                        bool rc, ic;
                        size_t rbad = ref_first_bad(buf, n, &rc);
                        size_t ibad = impl_first_bad(buf, n, &ic);
                        bool want = rbad == n && rc;
                        if (utf8_valid(buf, n) != want || ibad != rbad ||
                            (rbad == n && ic != rc))
                            fail_msg("%02X %02X %02X %02X (n=%zu): valid=%d first_bad=%zu, "
                                     "reference %d/%zu",
                                     buf[0], buf[1], buf[2], buf[3], n, utf8_valid(buf, n), ibad,
                                     want, rbad);
                    }
                }
            }
        }
    }
    /* every 3-byte sequence with a valid-looking continuation as the third
     * byte, and every 4-byte one starting F0..F4 with its 2nd and 3rd byte
     * enumerated over the continuation range */
    for (unsigned a = 0xE0; a <= 0xF4; a++) {
        for (unsigned b = 0x80; b <= 0xBF; b++) {
            for (unsigned c = 0x80; c <= 0xBF; c++) {
                buf[0] = (uint8_t)a;
                buf[1] = (uint8_t)b;
                buf[2] = (uint8_t)c;
                buf[3] = 0x80;
                size_t n = a >= 0xF0 ? 4 : 3;
                bool rc;
                size_t rbad = ref_first_bad(buf, n, &rc);
                bool want = rbad == n && rc;
                if (utf8_valid(buf, n) != want)
                    fail_msg("%02X %02X %02X: valid=%d, reference %d", a, b, c,
                             utf8_valid(buf, n), want);
            }
        }
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Random text that is mostly well-formed, with occasional damage. */
static size_t random_text(uint8_t *out, size_t cap)
{
    size_t n = 0;
    size_t target = rnd() % cap;
    while (n + 4 <= target) {
        uint32_t k = rnd() % 100;
        uint32_t cp;
        if (k < 40)
            cp = rnd() % 0x80;
        else if (k < 60)
            cp = 0x80 + rnd() % (0x800 - 0x80);
        else if (k < 80)
            cp = 0x800 + rnd() % (0x10000 - 0x800);
        else if (k < 95)
            cp = 0x10000 + rnd() % (0x110000 - 0x10000);
        else {
            out[n++] = (uint8_t)rnd(); /* damage */
            continue;
        }
        if (cp < 0x80) {
            out[n++] = (uint8_t)cp;
        } else if (cp < 0x800) {
            out[n++] = (uint8_t)(0xC0 | cp >> 6);
            out[n++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[n++] = (uint8_t)(0xE0 | cp >> 12);
            out[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            out[n++] = (uint8_t)(0xF0 | cp >> 18);
            out[n++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (uint8_t)(0x80 | (cp & 0x3F));
        }
    }
    if (n > 0 && rnd() % 4 == 0)
        n -= 1 + rnd() % (n < 3 ? n : 3); /* truncate */
    return n;
}

static void test_random_incremental(void **state)
{
    (void)state;
    uint8_t buf[256];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = random_text(buf, sizeof buf);
        bool rc;
        size_t rbad = ref_first_bad(buf, n, &rc);
        bool want = rbad == n && rc;
        if (utf8_valid(buf, n) != want)
            fail_msg("iteration %d: utf8_valid=%d, reference %d", iter, !want, want);
        bool ic;
        size_t ibad = impl_first_bad(buf, n, &ic);
        if (ibad != rbad)
            fail_msg("iteration %d: first bad byte %zu, reference %zu", iter, ibad, rbad);
        /* random chunking gives the whole-buffer answer */
        utf8_state s;
        utf8_init(&s);
        bool ok = true;
        for (size_t off = 0; off < n && ok;) {
            size_t take = 1 + rnd() % 17;
            if (take > n - off)
                take = n - off;
            ok = utf8_feed(&s, buf + off, take);
            off += take;
        }
        if ((ok && utf8_complete(&s)) != want)
            fail_msg("iteration %d: chunked result differs from whole", iter);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_ascii),
        cmocka_unit_test(test_valid_multibyte),
        cmocka_unit_test(test_boundaries),
        cmocka_unit_test(test_overlong),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_above_max),
        cmocka_unit_test(test_stray_continuation),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_lonely_start_bytes),
        cmocka_unit_test(test_fail_fast),
        cmocka_unit_test(test_autobahn_6),
        cmocka_unit_test(test_exhaustive_vs_reference),
        cmocka_unit_test(test_random_incremental),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

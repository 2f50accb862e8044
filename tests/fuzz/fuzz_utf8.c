/* libFuzzer target: the incremental UTF-8 validator (src/utf8.h).
 *
 * Byte 0 seeds the chunk sizes; the rest is the text. Checks that
 *  - utf8_valid, utf8_feed in random chunks and utf8_feed byte by byte agree;
 *  - the byte-by-byte run fails exactly at the first byte that makes the text
 *    impossible (fail fast), per an independent reference that reasons on
 *    code point ranges instead of lead-byte tables;
 *  - the bytes before that point are accepted in a single call. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "utf8.h"

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_utf8: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            abort();                                                     \
        }                                                                \
    } while (0)

static bool ref_viable(uint32_t lo, uint32_t hi, int len)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    static const uint32_t max[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    if (lo < min[len])
        lo = min[len];
    if (hi > max[len])
        hi = max[len];
    return lo <= hi && !(lo >= 0xD800 && hi <= 0xDFFF);
}

/* Index of the first impossible byte (n if none); *complete: ends on a
 * character boundary. */
static size_t ref_first_bad(const uint8_t *p, size_t n, bool *complete)
{
    size_t i = 0;
    *complete = true;
    while (i < n) {
        uint8_t b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp;
        if ((b & 0xE0) == 0xC0) {
            len = 2;
            cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3;
            cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4;
            cp = b & 0x07;
        } else {
            return i;
        }
        for (int m = 1; m <= len; m++) {
            size_t at = i + (size_t)m - 1;
            if (at >= n) {
                *complete = false;
                return n;
            }
            if (m > 1) {
                if ((p[at] & 0xC0) != 0x80)
                    return at;
                cp = cp << 6 | (p[at] & 0x3F);
            }
            int rest = 6 * (len - m);
            uint32_t lo = cp << rest, hi = lo | ((1u << rest) - 1);
            if (!ref_viable(lo, hi, len))
                return at;
        }
        i += (size_t)len;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 7;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    bool whole = utf8_valid(p, n);

    bool rc;
    size_t rbad = ref_first_bad(p, n, &rc);
    bool want = rbad == n && rc;
    CHECK(whole == want, "utf8_valid = %d, reference %d", whole, want);

    /* random chunks */
    utf8_state s;
    utf8_init(&s);
    bool ok = true;
    for (size_t off = 0; off < n && ok;) {
        seed = seed * 1103515245u + 12345u;
        size_t take = (seed >> 16) % 9; /* zero-length feeds too */
        if (take > n - off)
            take = n - off;
        ok = utf8_feed(&s, p + off, take);
        off += take;
    }
    CHECK((ok && utf8_complete(&s)) == whole, "chunked %d, whole %d", ok && utf8_complete(&s),
          whole);

    /* byte by byte: fails exactly at the first impossible byte */
    utf8_init(&s);
    size_t bad = n;
    for (size_t i = 0; i < n; i++) {
        if (!utf8_feed(&s, p + i, 1)) {
            bad = i;
            break;
        }
    }
    CHECK(bad == rbad, "byte-by-byte failed at %zu, reference %zu", bad, rbad);
    if (bad == n)
        CHECK(utf8_complete(&s) == rc, "complete %d, reference %d", utf8_complete(&s), rc);

    /* the prefix before the bad byte is fine in one call; the bad byte is not */
    utf8_init(&s);
    CHECK(utf8_feed(&s, p, bad), "prefix of %zu bytes rejected", bad);
    if (bad < n)
        CHECK(!utf8_feed(&s, p + bad, n - bad), "rest accepted after the prefix");
    return 0;
}

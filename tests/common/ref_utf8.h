/* A reference UTF-8 validator for tests and fuzzers: written independently
 * of src/utf8.c (decode, then check the range each prefix can still reach),
 * so the two can be compared. Header-only, shared by tests/unit/test_utf8.c
 * and tests/fuzz/fuzz_utf8.c. */
#ifndef HERALD_TEST_REF_UTF8_H
#define HERALD_TEST_REF_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Can a sequence of length len whose completions span code points [lo, hi]
 * still encode a valid scalar value with that length? */
static inline bool ref_viable(uint32_t lo, uint32_t hi, int len)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    static const uint32_t max[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    if (lo < min[len])
        lo = min[len];
    if (hi > max[len])
        hi = max[len];
    if (lo > hi)
        return false;
    if (lo >= 0xD800 && hi <= 0xDFFF)
        return false; /* only surrogates remain */
    return true;
}

/* Index of the first byte at which p[0..n) stops being a prefix of valid
 * UTF-8, or n when it is one; *complete says whether it ends on a boundary. */
static inline size_t ref_first_bad(const uint8_t *p, size_t n, bool *complete)
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

#endif

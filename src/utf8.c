#include "utf8.h"

#include <string.h>

/* Lead byte -> (continuations, allowed range of the first continuation).
 * The narrowed ranges after E0, ED, F0 and F4 are what rule out overlong
 * forms, UTF-16 surrogates and code points above U+10FFFF without decoding. */
static bool utf8_lead(utf8_state *s, uint8_t b)
{
    if (b >= 0xC2 && b <= 0xDF) {
        s->need = 1; s->lo = 0x80; s->hi = 0xBF;
    } else if (b == 0xE0) {
        s->need = 2; s->lo = 0xA0; s->hi = 0xBF;
    } else if (b == 0xED) {
        s->need = 2; s->lo = 0x80; s->hi = 0x9F;
    } else if (b >= 0xE1 && b <= 0xEF) {
        s->need = 2; s->lo = 0x80; s->hi = 0xBF;
    } else if (b == 0xF0) {
        s->need = 3; s->lo = 0x90; s->hi = 0xBF;
    } else if (b >= 0xF1 && b <= 0xF3) {
        s->need = 3; s->lo = 0x80; s->hi = 0xBF;
    } else if (b == 0xF4) {
        s->need = 3; s->lo = 0x80; s->hi = 0x8F;
    } else {
        return false;
    }
    return true;
}

bool utf8_feed(utf8_state *s, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s->need == 0) {
            /* Fast path: most payloads are ASCII; check 8 bytes at a time. */
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            uint8_t b = p[i++];
            if (b < 0x80)
                continue;
            if (!utf8_lead(s, b))
                return false;
        } else {
            uint8_t b = p[i++];
            if (b < s->lo || b > s->hi)
                return false;
            s->need--;
            s->lo = 0x80;
            s->hi = 0xBF;
        }
    }
    return true;
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    utf8_state s;
    utf8_init(&s);
    return utf8_feed(&s, p, n) && utf8_complete(&s);
}

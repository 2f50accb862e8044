/* Incremental UTF-8 validation (RFC 3629): no I/O, no allocation.
 * The state survives across calls so a text message split over many frames
 * and many reads is validated as it arrives and rejected at the first byte
 * that can no longer start or continue a valid sequence ("fail fast"). */
#ifndef HERALD_UTF8_H
#define HERALD_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct utf8_state {
    uint8_t need; /* continuation bytes still expected */
    uint8_t lo;   /* allowed range of the next continuation byte */
    uint8_t hi;
} utf8_state;

static inline void utf8_init(utf8_state *s) { s->need = 0; s->lo = 0x80; s->hi = 0xBF; }

/* Feeds n bytes. Returns false as soon as the input cannot be valid UTF-8
 * (overlong forms, surrogates, code points above U+10FFFF, stray bytes). */
bool utf8_feed(utf8_state *s, const uint8_t *p, size_t n);

/* True when the input so far ends on a character boundary. */
static inline bool utf8_complete(const utf8_state *s) { return s->need == 0; }

/* Whole-buffer convenience: valid and complete. */
bool utf8_valid(const uint8_t *p, size_t n);

#endif

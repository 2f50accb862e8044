/* The bench message: the first 24 bytes of every published payload.
 * Little-endian on the wire; the rest of the S bytes is filler. */
#ifndef HB_MSG_H
#define HB_MSG_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define MSG_HEAD 24
#define MSG_MAGIC 0x484e4200u       /* "\0BNH" little-endian; low byte = flags */
#define MSG_MAGIC_MASK 0xffffff00u
#define MSG_FLAG_MEASURED 0x01u     /* sent in the measured phase (not warm-up) */

typedef struct msg_head {
    uint32_t flags;
    uint32_t publisher;
    uint64_t seq;
    uint64_t sent_ns;               /* CLOCK_MONOTONIC */
} msg_head;

static inline void msg_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void msg_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t msg_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t msg_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void msg_encode(uint8_t out[MSG_HEAD], const msg_head *m)
{
    msg_put32(out, MSG_MAGIC | (m->flags & 0xffu));
    msg_put32(out + 4, m->publisher);
    msg_put64(out + 8, m->seq);
    msg_put64(out + 16, m->sent_ns);
}

/* False when the bytes are not a bench message (wrong magic or too short). */
static inline bool msg_decode(const uint8_t *p, uint64_t len, msg_head *m)
{
    if (len < MSG_HEAD)
        return false;
    uint32_t magic = msg_get32(p);
    if ((magic & MSG_MAGIC_MASK) != MSG_MAGIC)
        return false;
    m->flags = magic & 0xffu;
    m->publisher = msg_get32(p + 4);
    m->seq = msg_get64(p + 8);
    m->sent_ns = msg_get64(p + 16);
    return true;
}

#endif

#include "redis_slot.h"

#include <string.h>

/* Bitwise CRC16-CCITT (XMODEM: poly 0x1021, init 0): keys are short, and a
 * table would be 512 bytes of cache for no measurable gain here. */
uint16_t redis_crc16(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

/* Only the first '{' counts, up to the first '}' after it, and only when
 * something lies between them: the rule every Redis client shares. */
unsigned redis_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return redis_crc16(open + 1, (size_t)(close - open - 1)) & (REDIS_SLOTS - 1);
    }
    return redis_crc16(key, len) & (REDIS_SLOTS - 1);
}

static bool redis_parse_uint(const char **p, const char *end, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    const char *s = *p;
    while (s < end && *s >= '0' && *s <= '9') {
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > max)
            return false;
        s++;
    }
    if (s == *p)
        return false;
    *p = s;
    *out = v;
    return true;
}

bool redis_parse_redirect(const char *err, size_t len, redis_redirect *out)
{
    memset(out, 0, sizeof *out);
    const char *p = err, *end = err + len;
    redis_redirect_kind kind;
    if (len > 6 && memcmp(p, "MOVED ", 6) == 0) {
        kind = REDIS_MOVED;
        p += 6;
    } else if (len > 4 && memcmp(p, "ASK ", 4) == 0) {
        kind = REDIS_ASK;
        p += 4;
    } else {
        return false;
    }
    unsigned long slot, port;
    if (!redis_parse_uint(&p, end, REDIS_SLOTS - 1, &slot) || p >= end || *p++ != ' ')
        return false;
    /* host:port, the host possibly an IPv6 address: the port follows the last ':' */
    const char *colon = NULL;
    for (const char *s = p; s < end; s++)
        if (*s == ':')
            colon = s;
    if (!colon || (size_t)(colon - p) >= sizeof out->host || (colon - p == 1 && *p == '?'))
        return false;
    const char *q = colon + 1;
    if (!redis_parse_uint(&q, end, 65535, &port) || q != end || port == 0)
        return false;
    for (const char *s = p; s < colon; s++)
        if (*s == ' ' || *s == '\0')
            return false;
    memcpy(out->host, p, (size_t)(colon - p));
    out->host[colon - p] = '\0';
    out->slot = (unsigned)slot;
    out->port = (int)port;
    out->kind = kind;
    return true;
}

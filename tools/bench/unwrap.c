#include "unwrap.h"

#include <string.h>

/* ---- JSON ----------------------------------------------------------------- */

static int unwrap_b64(uint8_t ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Decodes 4 base64 characters without padding into 3 bytes. */
static bool unwrap_b64_quad(const uint8_t *in, uint8_t *out)
{
    int a = unwrap_b64(in[0]), b = unwrap_b64(in[1]), c = unwrap_b64(in[2]), d = unwrap_b64(in[3]);
    if ((a | b | c | d) < 0)
        return false;
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
    out[0] = (uint8_t)(v >> 16);
    out[1] = (uint8_t)(v >> 8);
    out[2] = (uint8_t)v;
    return true;
}

static const uint8_t *unwrap_find(const uint8_t *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (h[i] == (uint8_t)needle[0] && memcmp(h + i, needle, k) == 0)
            return h + i;
    return NULL;
}

bool unwrap_json(const uint8_t *head, size_t have, const uint8_t tail[WSC_TAIL], uint64_t total,
                 uint8_t out[MSG_HEAD], uint64_t *size)
{
    static const char key[] = "\"binary\":true,\"data\":\"";
    if (have < 2 || head[0] != '{')
        return false;
    const uint8_t *k = unwrap_find(head, have, key);
    if (!k)
        return false;
    uint64_t start = (uint64_t)(k - head) + sizeof key - 1;   /* first base64 char */
    /* the data string is the last member: <base64>"} */
    if (total < start + 2 + 4 || tail[WSC_TAIL - 2] != '"' || tail[WSC_TAIL - 1] != '}')
        return false;
    uint64_t b64 = total - start - 2;
    if (b64 % 4)
        return false;
    unsigned pad = tail[1] == '=' ? (tail[0] == '=' ? 2u : 1u) : 0u;
    *size = b64 / 4 * 3 - pad;
    /* MSG_HEAD (24) payload bytes are exactly 32 characters, no padding */
    size_t quads = MSG_HEAD / 3;
    if (*size < MSG_HEAD) {
        /* too short to be a bench message; decode nothing, let the caller
         * see the size */
        memset(out, 0, MSG_HEAD);
        return true;
    }
    if (start + quads * 4 > have)
        return false;
    for (size_t q = 0; q < quads; q++)
        if (!unwrap_b64_quad(head + start + 4 * q, out + 3 * q))
            return false;
    return true;
}

/* ---- msgpack -------------------------------------------------------------- */

typedef struct unwrap_cur {
    const uint8_t *p;
    size_t at, n;
} unwrap_cur;

static bool unwrap_uint(unwrap_cur *c, unsigned bytes, uint64_t *v)
{
    if (c->at + bytes > c->n)
        return false;
    *v = 0;
    for (unsigned i = 0; i < bytes; i++)
        *v = (*v << 8) | c->p[c->at++];
    return true;
}

/* A str header: its length, the cursor left at its body. */
static bool unwrap_str(unwrap_cur *c, uint64_t *len)
{
    if (c->at >= c->n)
        return false;
    uint8_t t = c->p[c->at++];
    if ((t & 0xe0u) == 0xa0u) {
        *len = t & 0x1fu;
        return true;
    }
    if (t >= 0xd9 && t <= 0xdb)
        return unwrap_uint(c, 1u << (t - 0xd9), len);
    return false;
}

/* Skips a value of the kinds an envelope holds besides data. */
static bool unwrap_skip(unwrap_cur *c)
{
    if (c->at >= c->n)
        return false;
    uint8_t t = c->p[c->at];
    uint64_t len;
    if (t < 0x80 || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) { /* fixint, nil, bool */
        c->at++;
        return true;
    }
    if (t >= 0xcc && t <= 0xcf) { /* uint 8..64 */
        c->at++;
        return unwrap_uint(c, 1u << (t - 0xcc), &len);
    }
    if (t >= 0xd0 && t <= 0xd3) { /* int 8..64 */
        c->at++;
        return unwrap_uint(c, 1u << (t - 0xd0), &len);
    }
    if (!unwrap_str(c, &len) || c->at + len > c->n)
        return false;
    c->at += (size_t)len;
    return true;
}

bool unwrap_msgpack(const uint8_t *head, size_t have, uint64_t total, uint8_t out[MSG_HEAD],
                    uint64_t *size)
{
    unwrap_cur c = {head, 0, have};
    if (have < 1 || (head[0] & 0xf0u) != 0x80u)
        return false;
    unsigned pairs = head[0] & 0x0fu;
    c.at = 1;
    for (unsigned i = 0; i < pairs; i++) {
        uint64_t kl;
        if (!unwrap_str(&c, &kl) || c.at + kl > c.n)
            return false;
        bool data = kl == 4 && memcmp(head + c.at, "data", 4) == 0;
        c.at += (size_t)kl;
        if (!data) {
            if (!unwrap_skip(&c))
                return false;
            continue;
        }
        if (c.at >= c.n || head[c.at] < 0xc4 || head[c.at] > 0xc6)
            return false;
        uint8_t t = head[c.at++];
        uint64_t len;
        if (!unwrap_uint(&c, 1u << (t - 0xc4), &len))
            return false;
        /* data is the last element: the payload is the last len bytes */
        if (i + 1 != pairs || c.at + len != total)
            return false;
        size_t k = len < MSG_HEAD ? (size_t)len : MSG_HEAD;
        if (c.at + k > have)
            return false;
        memset(out, 0, MSG_HEAD);
        memcpy(out, head + c.at, k);
        *size = len;
        return true;
    }
    return false;
}

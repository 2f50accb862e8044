#include "sse.h"

#include <openssl/evp.h>
#include <string.h>

size_t sse_text_bound(size_t event_len, size_t n)
{
    /* Worst case every byte is a line break: n + 1 empty lines of "data: \n". */
    return (event_len ? event_len + 8 : 0) + 7 * (n + 1) + n + 1;
}

static size_t sse_put(uint8_t *out, const char *s, size_t n)
{
    memcpy(out, s, n);
    return n;
}

size_t sse_encode_text(uint8_t *out, const char *event, size_t event_len, const uint8_t *p,
                       size_t n)
{
    size_t k = 0;
    if (event_len) {
        k += sse_put(out + k, "event: ", 7);
        k += sse_put(out + k, event, event_len);
        out[k++] = '\n';
    }
    size_t i = 0;
    for (;;) {
        size_t s = i;
        while (i < n && p[i] != '\n' && p[i] != '\r')
            i++;
        k += sse_put(out + k, "data: ", 6);
        memcpy(out + k, p + s, i - s);
        k += i - s;
        out[k++] = '\n';
        if (i == n)
            break;
        /* CRLF is one line break, as a client parses it. */
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            i++;
        i++;
    }
    out[k++] = '\n';
    return k;
}

size_t sse_binary_bound(size_t n) { return 20 + (n + 2) / 3 * 4 + 1 + 2; }

size_t sse_encode_binary(uint8_t *out, const uint8_t *p, size_t n)
{
    size_t k = sse_put(out, "event: binary\ndata: ", 20);
    /* EVP_EncodeBlock takes an int: payloads are bounded by
     * --max-message-size, far below it; encode in chunks anyway. */
    for (size_t i = 0; i < n;) {
        size_t chunk = n - i > 3u << 20 ? 3u << 20 : n - i;
        k += (size_t)EVP_EncodeBlock(out + k, p + i, (int)chunk);
        i += chunk;
    }
    out[k++] = '\n';
    out[k++] = '\n';
    return k;
}

size_t sse_id_bound(size_t epoch_len, size_t n) { return epoch_len + 1 + 21 * n; }

static bool sse_epoch_byte_ok(unsigned char c) { return c >= 0x21 && c <= 0x7e; }

size_t sse_id_line(uint8_t *out, size_t cap, const sse_pos *pos)
{
    if (cap < sse_id_bound(pos->epoch_len, pos->n) + SSE_ID_LINE_EXTRA)
        return 0;
    size_t k = sse_put(out, "id: ", 4);
    for (size_t i = 0; i < pos->epoch_len; i++) {
        if (!sse_epoch_byte_ok((unsigned char)pos->epoch[i]))
            return 0;
        out[k++] = (uint8_t)pos->epoch[i];
    }
    out[k++] = '/';
    for (size_t i = 0; i < pos->n; i++) {
        if (i)
            out[k++] = ',';
        if (!pos->known[i])
            continue;
        char d[20];
        size_t nd = 0;
        uint64_t v = pos->off[i];
        do {
            d[nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (nd)
            out[k++] = (uint8_t)d[--nd];
    }
    out[k++] = '\n';
    return k;
}

sse_id_result sse_id_parse(const char *s, size_t n, size_t ngroups, sse_pos *pos)
{
    if (n > SSE_ID_MAX)
        return SSE_ID_TOO_LONG;
    const char *slash = NULL;
    for (size_t i = n; i-- > 0;)
        if (s[i] == '/') {
            slash = s + i;
            break;
        }
    if (!slash || slash == s)
        return SSE_ID_NO_EPOCH;
    size_t elen = (size_t)(slash - s);
    if (elen > SSE_EPOCH_MAX)
        return SSE_ID_BAD_EPOCH;
    for (size_t i = 0; i < elen; i++)
        if (!sse_epoch_byte_ok((unsigned char)s[i]))
            return SSE_ID_BAD_EPOCH;
    pos->epoch = s;
    pos->epoch_len = elen;
    pos->n = ngroups;
    const char *p = slash + 1, *end = s + n;
    if (ngroups == 0)
        return p == end ? SSE_ID_OK : SSE_ID_COUNT;
    size_t k = 0;
    for (;;) {
        if (k == ngroups)
            return SSE_ID_COUNT;
        uint64_t v = 0;
        size_t digits = 0;
        for (; p < end && *p != ','; p++, digits++) {
            if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                return SSE_ID_BAD_OFFSET;
            v = v * 10 + (uint64_t)(*p - '0');
        }
        pos->known[k] = digits > 0;
        pos->off[k] = v;
        k++;
        if (p == end)
            break;
        p++; /* the ',' */
    }
    return k == ngroups ? SSE_ID_OK : SSE_ID_COUNT;
}

const char *sse_id_error(sse_id_result r)
{
    switch (r) {
    case SSE_ID_OK: return "ok";
    case SSE_ID_TOO_LONG: return "Last-Event-ID too long";
    case SSE_ID_NO_EPOCH: return "Last-Event-ID must be EPOCH/OFFSETS";
    case SSE_ID_BAD_EPOCH: return "Last-Event-ID epoch malformed";
    case SSE_ID_BAD_OFFSET: return "Last-Event-ID offsets must be digits";
    case SSE_ID_COUNT: return "Last-Event-ID does not match the groups of this stream";
    }
    return "malformed Last-Event-ID";
}

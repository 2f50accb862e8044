#include "ssec.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

size_t ssec_request(char *out, size_t cap, const char *host_port, const char *path,
                    const char *groups)
{
    int n = snprintf(out, cap,
                     "GET %s?groups=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                     path, groups, host_port);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

bool ssec_response_ok(const char *head, size_t len, char *why, size_t why_cap)
{
    const char *eol = memchr(head, '\r', len);
    size_t l0 = eol ? (size_t)(eol - head) : len;
    if (l0 < 12 || memcmp(head, "HTTP/1.", 7) != 0 || memcmp(head + 8, " 200", 4) != 0) {
        snprintf(why, why_cap, "expected 200, got: %.*s", (int)(l0 > 80 ? 80 : l0), head);
        return false;
    }
    for (const char *p = head; p && p < head + len;) {
        const char *e = memchr(p, '\n', (size_t)(head + len - p));
        size_t ll = e ? (size_t)(e - p) : (size_t)(head + len - p);
        if (ll > 13 && strncasecmp(p, "content-type:", 13) == 0) {
            const char *v = p + 13;
            while (v < p + ll && *v == ' ')
                v++;
            if ((size_t)(p + ll - v) >= 17 && strncasecmp(v, "text/event-stream", 17) == 0)
                return true;
        }
        p = e ? e + 1 : NULL;
    }
    snprintf(why, why_cap, "%s", "response is not text/event-stream");
    return false;
}

void ssec_reader_init(ssec_reader *r)
{
    memset(r, 0, sizeof *r);
    r->line_empty = true;
}

/* The event ended (blank line): decode what was kept. */
static bool ssec_dispatch(ssec_reader *r, void (*on_event)(void *, const uint8_t *, uint64_t),
                          void *ctx)
{
    if (!r->has_data)
        return true;
    if (r->data_len == 0) { /* herald's "joined" event (or any empty one): no message of ours */
        r->has_data = false;
        return true;
    }
    uint64_t len = r->data_len;
    if (len % 4 != 0)
        return false;
    uint64_t pad = len >= 2 ? (r->last[1] == '=') + (r->last[0] == '=' && r->last[1] == '=') : 0;
    uint64_t total = len / 4 * 3 - pad;
    uint8_t out[SSEC_B64_HEAD / 4 * 3 + 1];
    size_t keep = r->b64_have - r->b64_have % 4;
    if (keep && EVP_DecodeBlock(out, (const unsigned char *)r->b64, (int)keep) < 0)
        return false;
    on_event(ctx, out, total);
    r->has_data = false;
    r->data_len = 0;
    r->b64_have = 0;
    return true;
}

bool ssec_feed(ssec_reader *r, const uint8_t *p, size_t n,
               void (*on_event)(void *ctx, const uint8_t *head, uint64_t total), void *ctx)
{
    static const char data[] = "data:";
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (ch == '\r')
            continue; /* CRLF: the LF ends the line */
        if (ch == '\n') {
            if (r->line_empty && !ssec_dispatch(r, on_event, ctx))
                return false;
            r->field = 0;
            r->name_len = 0;
            r->line_empty = true;
            r->space_skip = false;
            continue;
        }
        r->line_empty = false;
        if (r->field == 0) {
            if (ch == (uint8_t)data[r->name_len]) {
                if (++r->name_len == 5) {
                    r->field = 'd';
                    r->space_skip = true;
                    if (r->has_data)
                        return false; /* one data line per binary event */
                    r->has_data = true;
                }
            } else {
                r->field = 's';
            }
            continue;
        }
        if (r->field != 'd')
            continue;
        if (r->space_skip) {
            r->space_skip = false;
            if (ch == ' ')
                continue;
        }
        if (r->b64_have < SSEC_B64_HEAD)
            r->b64[r->b64_have++] = (char)ch;
        r->last[0] = r->last[1];
        r->last[1] = (char)ch;
        r->data_len++;
    }
    return true;
}

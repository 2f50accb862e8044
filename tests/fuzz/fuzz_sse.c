/* libFuzzer target: the SSE encoder and the resume id (src/sse.h).
 *
 * Byte 0 picks a group count (0-69); the rest is read both as a
 * Last-Event-ID and as a message. Checks that
 *  - parsing never reads out of bounds and, when it accepts, writing the
 *    position back gives an id that parses to the same position;
 *  - a text message encodes within its bound into exactly one event whose
 *    data, read by an independent parser, is the message with CRLF and CR
 *    turned into LF; a binary one decodes back from its base64. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ref_sse.h"
#include "sse.h"

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "fuzz_sse: invariant failed: %s\n", #cond);   \
            abort();                                                       \
        }                                                                  \
    } while (0)

static void check_id(const char *s, size_t n, size_t ng)
{
    uint64_t off[70], off2[70];
    bool known[70], known2[70];
    sse_pos p = {.off = off, .known = known};
    if (sse_id_parse(s, n, ng, &p) != SSE_ID_OK)
        return;
    CHECK(p.epoch_len >= 1 && p.epoch_len <= SSE_EPOCH_MAX);
    uint8_t line[SSE_ID_MAX + 2048];
    size_t k = sse_id_line(line, sizeof line, &p);
    CHECK(k > 5);
    sse_pos q = {.off = off2, .known = known2};
    CHECK(sse_id_parse((const char *)line + 4, k - 5, ng, &q) == SSE_ID_OK);
    CHECK(q.epoch_len == p.epoch_len && memcmp(q.epoch, p.epoch, p.epoch_len) == 0);
    for (size_t i = 0; i < ng; i++) {
        CHECK(known2[i] == known[i]);
        CHECK(!known[i] || off2[i] == off[i]);
    }
}

static void check_text(const uint8_t *p, size_t n)
{
    size_t cap = sse_text_bound(0, n);
    uint8_t *out = malloc(cap), *data = malloc(cap), *want = malloc(n + 1);
    CHECK(out && data && want);
    size_t k = sse_encode_text(out, NULL, 0, p, n);
    CHECK(k <= cap);
    ref_sse_event ev = {.data = data};
    CHECK(ref_sse_parse(out, k, &ev));
    CHECK(!ev.has_id && ev.event[0] == '\0');
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            continue;
        want[w++] = p[i] == '\r' ? '\n' : p[i];
    }
    CHECK(ev.data_len == w && memcmp(ev.data, want, w) == 0);
    free(out);
    free(data);
    free(want);
}

static void check_binary(const uint8_t *p, size_t n)
{
    size_t cap = sse_binary_bound(n);
    uint8_t *out = malloc(cap), *data = malloc(cap), *dec = malloc(cap);
    CHECK(out && data && dec);
    size_t k = sse_encode_binary(out, p, n);
    CHECK(k <= cap);
    ref_sse_event ev = {.data = data};
    CHECK(ref_sse_parse(out, k, &ev));
    CHECK(strcmp(ev.event, "binary") == 0);
    int d = EVP_DecodeBlock(dec, data, (int)ev.data_len);
    CHECK(d >= 0);
    size_t pad = ev.data_len >= 2 ? (data[ev.data_len - 1] == '=') + (data[ev.data_len - 2] == '=') : 0;
    CHECK((size_t)d - pad == n && memcmp(dec, p, n) == 0);
    free(out);
    free(data);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t ng = data[0] % 70;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    check_id((const char *)p, n, ng);
    check_text(p, n);
    check_binary(p, n);
    return 0;
}

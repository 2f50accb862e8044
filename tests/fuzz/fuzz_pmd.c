/* libFuzzer target: permessage-deflate negotiation (src/pmd.h).
 *
 * The input is split at '\n' into Sec-WebSocket-Extensions values (exact-size
 * heap copies, so ASan sees any read past one). Checks:
 *  - an accepted offer's response starts with "permessage-deflate;
 *    server_no_context_takeover", fits PMD_RESPONSE_MAX and the window bits
 *    are 8..15;
 *  - the response, offered back, is accepted again with the same parameters
 *    (herald never answers something it would not itself accept). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmd.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_pmd: invariant failed: %s\n", #cond);     \
            abort();                                                         \
        }                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_str v[16];
    char *copies[16];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 16; i++) {
        if (i == size || data[i] == '\n') {
            size_t len = i - start;
            copies[n] = malloc(len ? len : 1);
            memcpy(copies[n], data + start, len);
            v[n] = (http_str){copies[n], len};
            n++;
            start = i + 1;
        }
    }
    pmd_params p;
    char out[PMD_RESPONSE_MAX];
    if (pmd_negotiate(v, n, &p, out)) {
        size_t len = strnlen(out, sizeof out);
        CHECK(len < sizeof out);
        CHECK(strncmp(out, "permessage-deflate; server_no_context_takeover", 46) == 0);
        CHECK(strstr(out, "; client_no_context_takeover") != NULL && p.client_no_context_takeover);
        CHECK(p.client_window_bits >= 8 && p.client_window_bits <= 15);
        CHECK(p.server_window_bits >= 8 && p.server_window_bits <= 15);
        pmd_params q;
        char again[PMD_RESPONSE_MAX];
        http_str r = {out, len};
        CHECK(pmd_negotiate(&r, 1, &q, again));
        CHECK(strcmp(out, again) == 0);
        CHECK(q.client_no_context_takeover == p.client_no_context_takeover);
        CHECK(q.client_window_bits == p.client_window_bits);
        CHECK(q.server_window_bits == p.server_window_bits);
    }
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    return 0;
}

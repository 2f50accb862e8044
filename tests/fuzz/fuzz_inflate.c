/* libFuzzer target: the bounded inflater (src/deflate.h), as a connection
 * drives it with compressed messages from a client.
 *
 * Byte 0: bit 0 fresh context per message, bits 1-3 window bits - 8,
 * bits 4-7 chunk size - 1 (input fed in pieces, as reads and fragments split
 * it). The rest is split at the 4-byte separator "MSG!" into messages. The
 * limit is 64 KiB per message: bombs must stop there. Checks: results are
 * one of the enum values; no message hands the sink more than the limit; no
 * sink chunk is over 16 KiB; after an error the inflater is dropped (as a
 * connection does) and a fresh one used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"

#define LIMIT 65536

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_inflate: invariant failed: %s\n", #cond); \
            abort();                                                         \
        }                                                                    \
    } while (0)

static bool fuzz_sink(void *arg, const uint8_t *p, size_t n)
{
    size_t *total = arg;
    (void)p;
    CHECK(n > 0 && n <= 16384);
    *total += n;
    CHECK(*total <= LIMIT);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool fresh = data[0] & 1;
    int bits = 8 + ((data[0] >> 1) & 7);
    size_t chunk = 1 + (data[0] >> 4);
    data++;
    size--;
    deflate_inflater *z = NULL;
    size_t pos = 0;
    while (pos <= size) {
        const uint8_t *sep = NULL;
        for (size_t i = pos; i + 4 <= size; i++)
            if (memcmp(data + i, "MSG!", 4) == 0) {
                sep = data + i;
                break;
            }
        size_t end = sep ? (size_t)(sep - data) : size;
        if (!z && !(z = deflate_inflater_new(bits, fresh)))
            return 0;
        size_t total = 0;
        deflate_result r = DEFLATE_OK;
        for (size_t k = pos; k < end && r == DEFLATE_OK; k += chunk) {
            size_t n = end - k < chunk ? end - k : chunk;
            r = deflate_inflate(z, data + k, n, false, LIMIT, fuzz_sink, &total);
        }
        if (r == DEFLATE_OK)
            r = deflate_inflate(z, NULL, 0, true, LIMIT, fuzz_sink, &total);
        CHECK(r == DEFLATE_OK || r == DEFLATE_TOO_BIG || r == DEFLATE_CORRUPT);
        if (r != DEFLATE_OK) {
            deflate_inflater_free(z);
            z = NULL;
        }
        if (!sep)
            break;
        pos = end + 4;
    }
    deflate_inflater_free(z);
    CHECK(deflate_memory() == 0);
    return 0;
}

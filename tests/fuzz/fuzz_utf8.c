/* libFuzzer target: the incremental UTF-8 validator (src/utf8.h).
 *
 * Byte 0 seeds the chunk sizes; the rest is the text. Checks that
 *  - utf8_valid, utf8_feed in random chunks and utf8_feed byte by byte agree;
 *  - the byte-by-byte run fails exactly at the first byte that makes the text
 *    impossible (fail fast), per an independent reference that reasons on
 *    code point ranges instead of lead-byte tables;
 *  - the bytes before that point are accepted in a single call. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "utf8.h"

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_utf8: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            abort();                                                     \
        }                                                                \
    } while (0)

#include "ref_utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 7;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    bool whole = utf8_valid(p, n);

    bool rc;
    size_t rbad = ref_first_bad(p, n, &rc);
    bool want = rbad == n && rc;
    CHECK(whole == want, "utf8_valid = %d, reference %d", whole, want);

    /* random chunks */
    utf8_state s;
    utf8_init(&s);
    bool ok = true;
    for (size_t off = 0; off < n && ok;) {
        seed = seed * 1103515245u + 12345u;
        size_t take = (seed >> 16) % 9; /* zero-length feeds too */
        if (take > n - off)
            take = n - off;
        ok = utf8_feed(&s, p + off, take);
        off += take;
    }
    CHECK((ok && utf8_complete(&s)) == whole, "chunked %d, whole %d", ok && utf8_complete(&s),
          whole);

    /* byte by byte: fails exactly at the first impossible byte */
    utf8_init(&s);
    size_t bad = n;
    for (size_t i = 0; i < n; i++) {
        if (!utf8_feed(&s, p + i, 1)) {
            bad = i;
            break;
        }
    }
    CHECK(bad == rbad, "byte-by-byte failed at %zu, reference %zu", bad, rbad);
    if (bad == n)
        CHECK(utf8_complete(&s) == rc, "complete %d, reference %d", utf8_complete(&s), rc);

    /* the prefix before the bad byte is fine in one call; the bad byte is not */
    utf8_init(&s);
    CHECK(utf8_feed(&s, p, bad), "prefix of %zu bytes rejected", bad);
    if (bad < n)
        CHECK(!utf8_feed(&s, p + bad, n - bad), "rest accepted after the prefix");
    return 0;
}

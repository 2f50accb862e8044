/* libFuzzer target: the broker's pure parsers (src/broker_url.h,
 * src/redis_slot.h).
 *
 * The input is, at once, a --broker URL (NUL-terminated copy, cut at the
 * first NUL as a command line would be) and the raw bytes of a Redis error
 * reply and of a key. Besides the sanitizers' checks:
 *  - an accepted URL has 1..16 addresses, each a non-empty terminated host
 *    and a port in 1..65535; redis:// has one; only sentinels name a master;
 *    a rejected one always says why;
 *  - an accepted redirection has a non-empty host without spaces, a slot
 *    below 16384 and a port in 1..65535;
 *  - a key's slot is below 16384 and, for a key with a {tag}, the tag's. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_url.h"
#include "redis_slot.h"

/* Length of a string in a fixed buffer, the size when unterminated (strnlen
 * is POSIX, not C17). */
static size_t fuzz_len(const char *s, size_t cap)
{
    const char *z = memchr(s, '\0', cap);
    return z ? (size_t)(z - s) : cap;
}

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_broker_url: invariant failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            abort();                                                           \
        }                                                                      \
    } while (0)

static void fuzz_url(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        return;
    memcpy(url, data, size);
    url[size] = '\0';
    broker_url u;
    char err[128] = "";
    if (broker_url_parse(url, &u, err, sizeof err)) {
        CHECK(u.naddr >= 1 && u.naddr <= BROKER_URL_HOSTS, "naddr %d", u.naddr);
        for (int i = 0; i < u.naddr; i++) {
            size_t hl = fuzz_len(u.addr[i].host, sizeof u.addr[i].host);
            CHECK(hl > 0 && hl < sizeof u.addr[i].host, "host %d length %zu", i, hl);
            CHECK(u.addr[i].port >= 1 && u.addr[i].port <= 65535, "port %d", u.addr[i].port);
        }
        CHECK(u.kind != BROKER_REDIS || u.naddr == 1, "redis:// with %d hosts", u.naddr);
        size_t ml = fuzz_len(u.master, sizeof u.master);
        CHECK(ml < sizeof u.master, "master unterminated");
        CHECK((u.kind == BROKER_SENTINEL) == (ml > 0), "kind %d, master length %zu", u.kind, ml);
        CHECK(u.kind != BROKER_CLUSTER || u.db == 0, "cluster with db %d", u.db);
        CHECK(u.db >= 0 && u.db <= 1000000, "db %d", u.db);
    } else {
        CHECK(err[0] != '\0', "rejected without a reason");
    }
    free(url);
}

static void fuzz_redirect(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so reading past len is an ASan report */
    char *err = malloc(size ? size : 1);
    if (!err)
        return;
    memcpy(err, data, size);
    redis_redirect rd;
    if (redis_parse_redirect(err, size, &rd)) {
        CHECK(rd.kind == REDIS_MOVED || rd.kind == REDIS_ASK, "kind %d", rd.kind);
        CHECK(rd.slot < REDIS_SLOTS, "slot %u", rd.slot);
        CHECK(rd.port >= 1 && rd.port <= 65535, "port %d", rd.port);
        size_t hl = fuzz_len(rd.host, sizeof rd.host);
        /* empty: "the node that answered" (Redis 7's unknown-endpoint), see redis_slot.h */
        CHECK(hl < sizeof rd.host, "host length %zu", hl);
        CHECK(!strchr(rd.host, ' '), "space in host \"%s\"", rd.host);
    } else {
        CHECK(rd.kind == REDIS_REDIRECT_NONE, "rejected but kind %d", rd.kind);
    }

    unsigned slot = redis_key_slot(err, size);
    CHECK(slot < REDIS_SLOTS, "slot %u", slot);
    const char *open = memchr(err, '{', size);
    if (open) {
        const char *close = memchr(open + 1, '}', size - (size_t)(open - err) - 1);
        if (close && close > open + 1)
            CHECK(slot == redis_key_slot(open + 1, (size_t)(close - open - 1)), "tag slot differs");
    }
    free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_url(data, size);
    fuzz_redirect(data, size);
    return 0;
}

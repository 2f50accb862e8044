/* herald-envbench: a serialization microbenchmark for herald's envelope
 * encoders (issue 5), in the spirit of the article's table (JSON 18.3 MB/s,
 * gob 96.7, msgpack 82.1 for a 128 B struct).
 *
 * Encodes a 128-byte text payload and a 128-byte binary payload N times into
 *   - herald's hand-written JSON envelope   (envelope_json)
 *   - herald's msgpack envelope (msgpack-c)  (envelope_msgpack)
 *   - the full per-message path of the server: envelope_variant (allocate,
 *     encode into a bound-sized buffer, shrink, frame, free)
 *   - jansson's generic encoder as a reference: build the equivalent object
 *     and json_dumps it (what a straightforward implementation would do), and
 *     json_dumps alone on a prebuilt object.
 * and prints a markdown table: ns per envelope, MB/s of payload (the article's
 * measure: bytes of the struct encoded per second) and MB/s of output.
 *
 *   herald-envbench [N]     (default 1000000; MB = 10^6 bytes)
 *
 * Single thread, no I/O; numbers depend on the CPU and its frequency, so
 * compare rows of one run rather than runs of different machines. */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "msg.h"

#define PAYLOAD 128
#define GROUP "chat.room-42"
#define EPOCH "5f0c3a9b2e71d4c8"

static volatile uint64_t sink; /* keeps the work observable */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct row {
    const char *encoder, *payload;
    double ns, out_bytes;
} row;

static row rows[16];
static int nrows;

static void add_row(const char *enc, const char *pl, uint64_t t, long n, size_t out_total)
{
    rows[nrows++] = (row){enc, pl, (double)t / (double)n, (double)out_total / (double)n};
}

/* ---- herald encoders ------------------------------------------------------ */

static void bench_envelope(const char *name, const envelope_in *in, msg_format f, long n)
{
    size_t cap = f == FORMAT_JSON ? envelope_json_bound(in) : envelope_msgpack_bound(in);
    uint8_t *buf = malloc(cap);
    if (!buf)
        exit(1);
    size_t total = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        envelope_in x = *in;
        x.offset = (uint64_t)i + 1;
        size_t k = f == FORMAT_JSON ? envelope_json(&x, buf, cap) : envelope_msgpack(&x, buf, cap);
        total += k;
        sink += buf[k - 1];
    }
    uint64_t t = now_ns() - t0;
    add_row(name, in->binary ? "binary" : "text", t, n, total);
    free(buf);
}

/* The server's path: one envelope per message, built into its own frame. */
static void bench_variant(const char *name, const envelope_in *in, msg_format f, long n)
{
    msg *m = msg_alloc(in->len);
    if (!m)
        exit(1);
    memcpy(msg_payload(m), in->data, in->len);
    m->payload_len = (uint32_t)in->len;
    msg_finish(m, MSG_DATA, in->binary ? WS_OP_BINARY : WS_OP_TEXT, in->group, in->group_len);
    m->epoch = EPOCH; /* as worker_sequence stamps it */
    size_t total = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        m->offset = (uint64_t)i + 1;
        atomic_store_explicit(&m->variant[f - 1], NULL, memory_order_relaxed);
        msg *v = envelope_variant(m, f);
        if (!v)
            exit(1);
        total += v->payload_len;
        sink += v->data[v->len - 1];
        msg_unref(v); /* the cached reference: we cleared the slot above */
    }
    uint64_t t = now_ns() - t0;
    atomic_store_explicit(&m->variant[f - 1], NULL, memory_order_relaxed);
    msg_unref(m);
    add_row(name, in->binary ? "binary" : "text", t, n, total);
}

/* ---- jansson reference ---------------------------------------------------- */

static json_t *jansson_object(const envelope_in *in, uint64_t off, char *b64)
{
    json_t *o = json_object();
    json_object_set_new(o, "group", in->group ? json_stringn(in->group, in->group_len) : json_null());
    json_object_set_new(o, "offset", json_integer((json_int_t)off));
    json_object_set_new(o, "epoch", json_string(in->epoch));
    if (in->binary) {
        int k = EVP_EncodeBlock((unsigned char *)b64, in->data, (int)in->len);
        json_object_set_new(o, "binary", json_true());
        json_object_set_new(o, "data", json_stringn(b64, (size_t)k));
    } else {
        json_object_set_new(o, "data", json_stringn((const char *)in->data, in->len));
    }
    return o;
}

static void bench_jansson_build(const envelope_in *in, long n)
{
    char b64[4 * PAYLOAD];
    size_t total = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        json_t *o = jansson_object(in, (uint64_t)i + 1, b64);
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t k = strlen(s);
        total += k;
        sink += (uint8_t)s[k - 1];
        free(s);
        json_decref(o);
    }
    uint64_t t = now_ns() - t0;
    add_row("jansson: build object + json_dumps", in->binary ? "binary" : "text", t, n, total);
}

static void bench_jansson_dump(const envelope_in *in, long n)
{
    char b64[4 * PAYLOAD];
    json_t *o = jansson_object(in, 1, b64);
    size_t total = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        json_object_set_new(o, "offset", json_integer((json_int_t)i + 1));
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t k = strlen(s);
        total += k;
        sink += (uint8_t)s[k - 1];
        free(s);
    }
    uint64_t t = now_ns() - t0;
    json_decref(o);
    add_row("jansson: json_dumps of a prebuilt object", in->binary ? "binary" : "text", t, n, total);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
    if (n <= 0) {
        fprintf(stderr, "usage: %s [iterations > 0]\n", argv[0]);
        return 2;
    }
    /* A typical chat message as text: JSON text itself, so its quotes need escaping. */
    static char text[PAYLOAD + 1];
    snprintf(text, sizeof text, "{\"user\":\"alice\",\"ts\":1732700000,\"text\":\"%s\"}",
             "see you at the caf\xc3\xa9 at noon, bring the slides and the demo laptop!");
    size_t tl = strlen(text);
    memset(text + tl, ' ', PAYLOAD - tl); /* pad to exactly 128 bytes (still valid UTF-8) */
    text[PAYLOAD] = '\0';
    if (tl > PAYLOAD)
        return 1;
    static uint8_t bin[PAYLOAD];
    for (int i = 0; i < PAYLOAD; i++)
        bin[i] = (uint8_t)(i * 37 + 11);

    envelope_in tin = {GROUP, strlen(GROUP), 0, EPOCH, (const uint8_t *)text, PAYLOAD, false};
    envelope_in bin_in = tin;
    bin_in.data = bin;
    bin_in.binary = true;

    /* warm-up: caches, page faults, CPU frequency */
    bench_envelope("warm-up", &tin, FORMAT_JSON, n / 10 + 1);
    nrows = 0;

    const envelope_in *ins[] = {&tin, &bin_in};
    for (int k = 0; k < 2; k++) {
        bench_envelope("herald envelope_json", ins[k], FORMAT_JSON, n);
        bench_envelope("herald envelope_msgpack", ins[k], FORMAT_MSGPACK, n);
        bench_variant("herald envelope_variant json (alloc+encode+frame)", ins[k], FORMAT_JSON, n);
        bench_variant("herald envelope_variant msgpack (alloc+encode+frame)", ins[k], FORMAT_MSGPACK, n);
        bench_jansson_build(ins[k], n);
        bench_jansson_dump(ins[k], n);
    }

    printf("herald-envbench: %ld envelopes per row, %d-byte payloads, group \"%s\", "
           "1 thread; MB = 10^6 bytes\n\n", n, PAYLOAD, GROUP);
    printf("| encoder | payload | envelope bytes | ns/envelope | payload MB/s | output MB/s |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: |\n");
    for (int i = 0; i < nrows; i++) {
        double mbs = (double)PAYLOAD / rows[i].ns * 1e3; /* bytes/ns -> MB/s */
        double out = rows[i].out_bytes / rows[i].ns * 1e3;
        printf("| %s | %s | %.0f | %.1f | %.1f | %.1f |\n", rows[i].encoder, rows[i].payload,
               rows[i].out_bytes, rows[i].ns, mbs, out);
    }
    printf("\nReference (the article, 128 B struct): JSON 18.3 MB/s, gob 96.7 MB/s, "
           "msgpack 82.1 MB/s.\n");
    return 0;
}

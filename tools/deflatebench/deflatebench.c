/* Compressor comparison for permessage-deflate (see CMakeLists.txt). */
#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t bench_rng = 12345;
static uint32_t bench_rand(void)
{
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 17;
    bench_rng ^= bench_rng << 5;
    return bench_rng;
}

/* Notifications as an app would send them: fixed keys, varying ids, names,
 * timestamps and titles from a vocabulary. One long array of them is made
 * once; a payload of N bytes is its first N bytes. */
static size_t bench_json(char *out, size_t cap)
{
    static const char *const words[] = {"order", "shipped", "your", "package", "arrives",
        "tomorrow", "payment", "received", "invoice", "account", "updated", "new", "message",
        "from", "team", "review", "requested", "build", "passed", "failed", "deploy", "ready"};
    size_t n = (size_t)sprintf(out, "{\"type\":\"notification\",\"items\":[");
    while (n + 400 < cap) {
        n += (size_t)sprintf(out + n,
            "{\"id\":\"%08x-%04x\",\"user\":{\"id\":%u,\"name\":\"user%u\"},\"created_at\":"
            "\"2026-12-%02uT%02u:%02u:%02uZ\",\"read\":%s,\"priority\":%u,\"title\":\"",
            bench_rand(), bench_rand() & 0xffff, bench_rand() % 100000, bench_rand() % 1000,
            1 + bench_rand() % 28, bench_rand() % 24, bench_rand() % 60, bench_rand() % 60,
            bench_rand() & 1 ? "true" : "false", bench_rand() % 5);
        for (int w = 0; w < 8; w++)
            n += (size_t)sprintf(out + n, "%s%s", w ? " " : "",
                                 words[bench_rand() % (sizeof words / sizeof words[0])]);
        n += (size_t)sprintf(out + n, "\"},");
    }
    return n;
}

static size_t bench_mem_now, bench_mem_peak;

static void *bench_malloc(size_t n)
{
    size_t *p = malloc(n + 16);
    *p = n;
    bench_mem_now += n;
    if (bench_mem_now > bench_mem_peak)
        bench_mem_peak = bench_mem_now;
    return (char *)p + 16;
}

static void bench_free(void *q)
{
    if (!q)
        return;
    size_t *p = (size_t *)((char *)q - 16);
    bench_mem_now -= *p;
    free(p);
}

typedef struct bench_result {
    double ratio, ns_per_byte;
} bench_result;

static bench_result bench_libdeflate(int level, const uint8_t *in, size_t n, int reps)
{
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    size_t cap = libdeflate_deflate_compress_bound(c, n);
    uint8_t *out = malloc(cap);
    size_t z = 0;
    uint64_t t0 = bench_now_ns();
    for (int r = 0; r < reps; r++)
        z = libdeflate_deflate_compress(c, in, n, out, cap);
    uint64_t t1 = bench_now_ns();
    free(out);
    libdeflate_free_compressor(c);
    return (bench_result){(double)(z + 1) / (double)n, (double)(t1 - t0) / reps / (double)n};
}

static bench_result bench_zlib(int level, const uint8_t *in, size_t n, int reps)
{
    z_stream zs = {0};
    deflateInit2(&zs, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&zs, n) + 16;
    uint8_t *out = malloc(cap);
    size_t z = 0;
    uint64_t t0 = bench_now_ns();
    for (int r = 0; r < reps; r++) {
        deflateReset(&zs);
        zs.next_in = (Bytef *)(uintptr_t)in;
        zs.avail_in = (uInt)n;
        zs.next_out = out;
        zs.avail_out = (uInt)cap;
        deflate(&zs, Z_SYNC_FLUSH);
        z = cap - zs.avail_out - 4; /* the 00 00 ff ff tail is not sent */
    }
    uint64_t t1 = bench_now_ns();
    free(out);
    deflateEnd(&zs);
    return (bench_result){(double)z / (double)n, (double)(t1 - t0) / reps / (double)n};
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = {32, 64, 128, 256, 512, 1024, 4096, 16384, 65536};
    static const int ld_levels[] = {1, 4, 6, 9};
    static const int z_levels[] = {1, 6};
    double budget = argc > 1 ? atof(argv[1]) : 1.0; /* scales repetitions */
    static char buf[70000];
    bench_json(buf, sizeof buf);
    libdeflate_set_memory_allocator(bench_malloc, bench_free);
    printf("| payload | ");
    for (size_t l = 0; l < 4; l++)
        printf("libdeflate %d | ", ld_levels[l]);
    for (size_t l = 0; l < 2; l++)
        printf("zlib %d | ", z_levels[l]);
    printf("\n|---|---|---|---|---|---|---|\n");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        int reps = (int)(budget * 4e6 / (double)(n + 200));
        if (reps < 5)
            reps = 5;
        printf("| %zu B JSON | ", n);
        for (size_t l = 0; l < 4; l++) {
            bench_result r = bench_libdeflate(ld_levels[l], (uint8_t *)buf, n, reps);
            printf("%.3f, %.2f ns/B | ", r.ratio, r.ns_per_byte);
        }
        for (size_t l = 0; l < 2; l++) {
            bench_result r = bench_zlib(z_levels[l], (uint8_t *)buf, n, reps);
            printf("%.3f, %.2f ns/B | ", r.ratio, r.ns_per_byte);
        }
        printf("\n");
    }
    printf("\ncompressor memory: ");
    for (size_t l = 0; l < 4; l++) {
        bench_mem_peak = bench_mem_now = 0;
        libdeflate_free_compressor(libdeflate_alloc_compressor(ld_levels[l]));
        printf("libdeflate %d: %zu KiB; ", ld_levels[l], bench_mem_peak / 1024);
    }
    printf("zlib (window 15, memLevel 8): ~268 KiB (zlib.h)\n");
    printf("\n(ratio = compressed/original bytes on the wire, lower is better; ns per input byte)\n");
    return 0;
}

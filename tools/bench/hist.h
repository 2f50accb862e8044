/* Log-linear latency histogram: exact below 256 ns, then 128 linear
 * sub-buckets per power of two, so every bucket is at most 1/128 (< 0.8 %)
 * wide relative to its values. Fixed size, no allocation per sample. */
#ifndef HB_HIST_H
#define HB_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
/* values up to 2^42 ns (~73 min) are binned; larger ones go to the last bucket */
#define HIST_MAX_BITS 42
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS) * HIST_SUB + 2 * HIST_SUB)

typedef struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t min;
    uint64_t buckets[HIST_BUCKETS];
} hist;

void hist_init(hist *h);
void hist_add(hist *h, uint64_t v);
/* Adds src's samples into dst (threads merge their histograms at the end). */
void hist_merge(hist *dst, const hist *src);
/* Value at quantile q (0..1): the midpoint of the bucket holding it, clamped
 * to [min, max] so exact extremes stay exact. 0 when empty. */
uint64_t hist_quantile(const hist *h, double q);

/* exposed for tests */
uint32_t hist_index(uint64_t v);
uint64_t hist_bucket_low(uint32_t idx);
uint64_t hist_bucket_high(uint32_t idx);

#endif

/* The run's results and their two renderings: text for people, one JSON
 * line (stable keys) for scripts. */
#ifndef HB_REPORT_H
#define HB_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"
#include "hist.h"

typedef struct bench_result {
    const bench_args *a;
    uint64_t sub_ok, pub_ok, failed, fail_connect, fail_handshake, fail_timeout;
    double connect_seconds;
    uint64_t published, expected, delivered, lost, duplicated, out_of_order;
    uint64_t unexpected, invalid, size_mismatch, skipped, timed_out;
    uint64_t disconnects, protocol_errors, pings;
    uint64_t sub_bytes;
    double measured_seconds;
    double deliveries_per_sec;
    const hist *lat;
    bool have_cpu;
    double server_cpu;
    bool have_rss;
    long rss_kb, rss_before_kb;
    double client_cpu;
    const char *first_error;
} bench_result;

void report_text(FILE *out, const bench_result *r);
void report_json(FILE *out, const bench_result *r);

#endif

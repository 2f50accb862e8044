/* Command line of herald-bench. */
#ifndef HB_ARGS_H
#define HB_ARGS_H

#include <netinet/in.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>

#define BENCH_MAX_PORTS 64
#define BENCH_MAX_PIDS 64

/* ?format= of subscribers: raw payloads, or herald's JSON / msgpack envelopes */
enum bench_format { FMT_RAW = 0, FMT_JSON = 1, FMT_MSGPACK = 2 };
const char *args_format_name(int format);

typedef struct bench_args {
    char host[64];
    struct in_addr addr;        /* resolved host, always in 127.0.0.0/8 */
    uint16_t port;              /* = ports[0] */
    uint16_t ports[BENCH_MAX_PORTS];    /* --ports: subscriber i -> ports[i mod nports] */
    uint32_t nports;
    bool pub_ports_all;         /* publishers round-robin over ports too (else ports[0]) */
    uint32_t subscribers;
    uint32_t publishers;
    uint32_t groups;
    uint32_t size;
    double rate;                /* aggregate messages/s */
    double duration;            /* seconds of the measured phase */
    double warmup;              /* seconds of publishing before measuring */
    double grace;               /* seconds to wait for stragglers after publishing */
    bool saturate;
    uint32_t window;            /* saturate: max outstanding messages */
    bool idle;
    uint32_t source_ips;        /* bind to 127.0.0.1 .. 127.0.0.M */
    uint32_t connect_concurrency;
    double connect_timeout;
    int server_pid;             /* 0 = none; = server_pids[0] */
    int server_pids[BENCH_MAX_PIDS];    /* CPU and RSS are summed over these */
    uint32_t nserver_pids;
    bool tls;                   /* TLS without certificate verification */
    bool sse;                   /* subscribers read Server-Sent Events (GET /sse) */
    int format;                 /* enum bench_format: what subscribers ask for */
    bool deflate;               /* subscribers offer permessage-deflate and inflate */
    bool json_payload;          /* --payload json: filler is JSON notifications */
    uint32_t threads;
    bool json;
    char sub_path[256];
    char pub_path[256];
} bench_args;

enum { ARGS_OK = 0, ARGS_HELP = 1, ARGS_BAD = 2 };

/* Fills a; on ARGS_BAD a message was printed on stderr. */
int args_parse(int argc, char **argv, bench_args *a);
void args_usage(FILE *out);

#endif

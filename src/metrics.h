/* Counters. Each worker owns one metrics block and is its only writer, so an
 * increment is a plain load+store (relaxed atomics keep readers on other
 * threads well-defined without a locked instruction on the delivery path).
 * /metrics and /stats sum the blocks of all workers. */
#ifndef HERALD_METRICS_H
#define HERALD_METRICS_H

#include "broker_info.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_LIST(X)                                                                    \
    X(connections_open, gauge, "Connections currently open")                               \
    X(connections_accepted, counter, "Connections accepted")                               \
    X(subscribers_open, gauge, "WebSocket subscribers currently open")                     \
    X(publishers_open, gauge, "WebSocket publishers currently open")                       \
    X(messages_published, counter, "Messages accepted from publishers")                    \
    X(deliveries, counter, "Messages fully written to subscribers")                        \
    X(bytes_in, counter, "Bytes read from clients")                                        \
    X(bytes_out, counter, "Bytes written to clients")                                      \
    X(messages_dropped, counter, "Messages dropped for slow subscribers (drop-oldest)")    \
    X(slow_consumer_closes, counter, "Connections closed for exceeding the queue limit")   \
    X(write_timeouts, counter, "Connections closed for making no write progress")          \
    X(idle_timeouts, counter, "Connections closed for client silence")                     \
    X(handshakes_failed, counter, "HTTP requests or upgrades refused with an error status") \
    X(protocol_errors, counter, "WebSocket connections closed for a protocol violation")   \
    X(http_requests, counter, "HTTP requests answered")                                    \
    X(queued_bytes, gauge, "Bytes queued for writing across connections")                  \
    X(queue_memory, gauge, "What outbound queues are charged against --queue-limit")       \
    X(queue_arrays, gauge, "Memory of outbound queues' own arrays (frames not included)")  \
    X(conn_memory, gauge, "Memory of connection records and their unparsed input")         \
    X(accept_errors, counter, "accept() failures (e.g. out of file descriptors)")          \
    X(published_http, counter, "Messages published by HTTP POST")                          \
    X(published_ws, counter, "Messages published by WebSocket publishers")                 \
    X(deliveries_tls, counter, "Deliveries written over TLS (wss)")                        \
    X(deliveries_sse, counter, "Deliveries written to Server-Sent Events subscribers")     \
    X(sse_open, gauge, "Server-Sent Events subscribers currently open")                    \
    X(rate_limited, counter, "Connections closed or refused by a rate or count limit")     \
    X(busy_ns, counter, "Nanoseconds spent outside epoll_wait")                            \
    X(pongs_coalesced, counter, "Pongs merged into one already queued (ping floods)")      \
    X(write_rounds, counter, "Write rounds (each waiting connection written once)")       \
    X(write_slices, counter, "Write slices (<= 1 ms each; more per round: long rounds)")   \
    X(write_holds, counter, "Write rounds held back to merge frames (a worker behind)")    \
    X(broker_published, counter, "Messages sent to the cluster broker")                    \
    X(broker_received, counter, "Messages received from the cluster broker")               \
    X(broker_errors, counter, "Cluster broker failures (disconnects, failed commands)")    \
    X(broker_reconnects, counter, "Cluster broker (re)connections")                        \
    X(deflate_messages, counter, "Frames compressed for permessage-deflate (once per message and format)") \
    X(deflate_bytes_in, counter, "Payload bytes before compression (of deflate_messages)")  \
    X(deflate_bytes_out, counter, "Payload bytes after compression (of deflate_messages)")  \
    X(deflate_not_smaller, counter, "Frames that did not shrink when compressed (sent plain, not in deflate_messages)") \
    X(deflate_deliveries, counter, "Compressed frames queued to subscribers")              \
    X(deflate_busy, counter, "Frames sent plain because another worker was compressing them") \
    X(inflate_messages, counter, "Compressed messages received and inflated")             \
    X(inflate_bytes_in, counter, "Compressed payload bytes received")                      \
    X(inflate_bytes_out, counter, "Payload bytes after inflating")

/* Publish -> written latency inside the server, upper bounds in microseconds. */
#define METRICS_LAT_BUCKETS 16
extern const uint64_t metrics_lat_bounds_us[METRICS_LAT_BUCKETS - 1];

/* Reasons a request was refused (label values of handshake/auth failures). */
#define METRICS_STATUSES 16
extern const int metrics_statuses[METRICS_STATUSES]; /* last entry 0 = other */
#define METRICS_AUTH_REASONS 10

typedef struct metrics {
#define METRICS_FIELD(name, type, help) _Atomic uint64_t name;
    METRICS_LIST(METRICS_FIELD)
#undef METRICS_FIELD
    _Atomic uint64_t lat_bucket[METRICS_LAT_BUCKETS];
    _Atomic uint64_t lat_sum_us;
    _Atomic uint64_t failed_by_status[METRICS_STATUSES];
    _Atomic uint64_t auth_failures[METRICS_AUTH_REASONS];
    _Atomic uint64_t request_timeouts[2]; /* METRICS_PHASE_HEAD, _BODY: answered 408 */
} metrics;

enum { METRICS_PHASE_HEAD = 0, METRICS_PHASE_BODY = 1 };

static inline void metrics_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void metrics_sub(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

#define METRIC_INC(m, name) metrics_add(&(m)->name, 1)
#define METRIC_ADD(m, name, n) metrics_add(&(m)->name, (n))
#define METRIC_SUB(m, name, n) metrics_sub(&(m)->name, (n))
/* The owning worker's own read of one of its counters. */
#define METRIC_GET(m, name) atomic_load_explicit(&(m)->name, memory_order_relaxed)

void metrics_observe_latency(metrics *m, uint64_t us);
void metrics_count_status(metrics *m, int status);

/* Where the process's memory goes, by kind (bytes), for /metrics, /stats and
 * the status page; filled by the server. */
typedef struct metrics_memory {
    uint64_t history;     /* kept messages (--history-memory) */
    uint64_t messages;    /* every other message alive: queued frames, bodies being
                           * received, envelopes, answers (each counted once) */
    uint64_t groups;      /* group records and their history arrays */
    uint64_t queues;      /* outbound queues' arrays (their frames are in messages) */
    uint64_t connections; /* connection records and unparsed input */
    uint64_t tls;         /* everything OpenSSL allocated */
    uint64_t inbox;       /* worker inbox rings and their overflow lists */
    uint64_t deflate;     /* compressors (one per worker) and inflaters (per connection
                           * that sent a compressed frame); compressed frames are messages */
    uint64_t rss;         /* resident set size, from /proc */
    uint64_t limit;       /* --max-memory, 0 = off */
    uint64_t evictions;   /* groups whose history the budget dropped */
    uint64_t tls_record_errors; /* handed-off TLS records that failed to open (tls.c) */
    bool pressure;        /* over the --max-memory mark */
} metrics_memory;

/* Sums n blocks into out (plain values). */
void metrics_sum(const metrics *const *blocks, size_t n, metrics *out);

/* Renders Prometheus text (format 0.0.4) / a JSON object into buf; returns
 * the length written (truncated to cap-1, always NUL-terminated). */
/* bi: the broker's snapshot, NULL without a broker. */
size_t metrics_prometheus(const metrics *m, const metrics *const *per_worker, int workers,
                          const metrics_memory *mem, const broker_info *bi, double uptime,
                          char *buf, size_t cap);
size_t metrics_json(const metrics *m, int workers, const metrics_memory *mem,
                    const broker_info *bi, double uptime, char *buf, size_t cap);

#endif

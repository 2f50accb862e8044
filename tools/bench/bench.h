/* Shared state of one herald-bench run: phases driven by the coordinator
 * (main thread), workers (one epoll loop each) owning disjoint sets of
 * connections, and the few cross-thread counters. */
#ifndef HB_BENCH_H
#define HB_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>

#include "args.h"
#include "hist.h"
#include "track.h"
#include "ssec.h"
#include "wsc.h"

/* Phases only move forward; workers poll the current one at least every
 * BENCH_TICK_IDLE_NS and act on changes. */
enum bench_phase {
    PH_INIT = 0,
    PH_CONNECT_SUBS,
    PH_CONNECT_PUBS,
    PH_WARMUP,
    PH_RUN,
    PH_GRACE,
    PH_CLOSE,
};

#define BENCH_TICK_IDLE_NS 10000000LL     /* 10 ms */
#define BENCH_TICK_MIN_NS 200000LL        /* finest pacing tick: 0.2 ms */
#define BENCH_CLOSE_WAIT_NS 1000000000LL  /* close handshake bound at the end */
#define BENCH_SCRATCH (64 * 1024)

enum conn_state {
    CS_NEW = 0,
    CS_CONNECTING,
    CS_TLS,       /* --tls: TLS handshake in progress */
    CS_SEND_REQ,
    CS_RECV_HEAD,
    CS_OPEN,
    CS_CLOSING,   /* we sent a close frame; waiting for the server's or EOF */
    CS_DONE,      /* fd closed */
};

struct worker;
struct pub;

typedef struct conn {
    int fd;
    uint8_t state;
    bool is_pub;
    bool close_sent;
    bool counted_open;      /* the handshake completed */
    uint8_t ctl_len;        /* subscribers: pending control frame (pong/close) */
    uint8_t ctl_sent;
    bool tls_wpend;         /* SSL_write wants a retry: its buffer is frozen */
    uint16_t req_sent;      /* bytes of the upgrade request already written */
    uint16_t hlen;          /* --tls: bytes of the response head in hbuf */
    uint32_t index;         /* global index among subscribers or publishers */
    uint32_t group;
    int64_t deadline;       /* connect + handshake must end by then */
    struct worker *w;
    track_entry *track;     /* subscriber: one entry per publisher of its group */
    struct pub *pub;        /* publisher */
    SSL *ssl;               /* --tls */
    char *hbuf;             /* --tls: response head being read (handshake only) */
    wsc_reader rd;
    ssec_reader srd;        /* --sse subscriber */
    uint8_t ctl[WSC_CTL_FRAME];
} conn;

typedef struct pub {
    conn *c;
    uint8_t *buf;           /* outgoing frames [head, tail) */
    uint32_t cap, head, tail;
    uint32_t id, group;
    uint32_t expect;        /* connected subscribers of the group */
    uint64_t seq;           /* next sequence number */
    /* saturate mode: one slot per outstanding message, indexed by seq; a slot
     * packs (seq low 32 bits << 32 | deliveries still missing) so deliverers
     * on any thread can count down with one CAS and never touch a reused slot */
    _Atomic uint64_t *slots;
    int64_t *slot_sent;
    uint64_t sat_tail;      /* oldest sequence whose slot may still be live */
    uint32_t slot_mask;
} pub;

/* Counters a worker writes and the coordinator may read while running:
 * single writer, relaxed atomics (plain loads/stores on x86). */
typedef struct worker_stats {
    _Atomic uint64_t sub_ok, pub_ok, failed, fail_connect, fail_handshake, fail_timeout;
    _Atomic uint64_t published, expected, skipped, timed_out;
    _Atomic uint64_t delivered, duplicated, out_of_order, unexpected, invalid, size_mismatch;
    _Atomic uint64_t disconnects, protocol_errors, pings;
    _Atomic uint64_t sub_bytes;     /* WebSocket bytes subscribers read (frames, as on the wire) */
    _Atomic int64_t last_delivery_ns;
} worker_stats;

#define STAT_GET(w, f) atomic_load_explicit(&(w)->st.f, memory_order_relaxed)
#define STAT_ADD(w, f, n) \
    atomic_store_explicit(&(w)->st.f, STAT_GET(w, f) + (n), memory_order_relaxed)

typedef struct bench_run bench_run;

typedef struct worker {
    bench_run *run;
    uint32_t id;
    pthread_t th;
    int epfd, tfd, efd;
    conn *subs;
    uint32_t nsubs;
    conn *pconns;
    pub *pubs;
    uint32_t npubs;
    track_entry *track;
    uint8_t *scratch;
    uint64_t rng;
    int64_t now;            /* CLOCK_MONOTONIC ns, refreshed per loop pass and per read */
    int phase;              /* last phase acted on */
    bool measuring;         /* count deliveries of measured messages */
    /* connect phase */
    conn *clist;
    uint32_t ctotal, cnext, cfirst, cfinished, inflight, climit;
    int64_t next_scan;
    /* publishing */
    uint64_t cursor;        /* rate mode: next global message index */
    uint32_t rr;            /* saturate mode: next publisher to try */
    int64_t close_deadline;
    uint32_t open_conns;
    _Atomic int phase_seen;
    _Atomic int connect_done;   /* the connect phase this worker finished */
    _Atomic bool exited;
    _Atomic int sat_blocked;    /* waiting for the window: wake via efd */
    worker_stats st;
    hist lat;
    char first_err[200];
} worker;

struct bench_run {
    const bench_args *a;
    _Atomic int phase;
    int64_t t_pub0;             /* pacing origin, set before PH_WARMUP/PH_RUN */
    SSL_CTX *tls_ctx;           /* --tls */
    uint8_t *filler;            /* S bytes of payload template */
    _Atomic uint32_t *group_live;   /* connected subscribers per group */
    uint32_t *group_expect;     /* frozen after the subscriber phase */
    pub **pub_by_id;
    worker *workers;
    uint32_t nworkers;
    uint64_t key_seed;
    _Atomic int64_t outstanding;    /* saturate: messages not fully delivered */
    int64_t sat_timeout_ns;
};

static inline int64_t bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline uint64_t bench_mix64(uint64_t x)
{
    /* splitmix64 finaliser: cheap, well spread (masks, keys) */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint32_t worker_rand32(worker *w)
{
    w->rng += 0x9e3779b97f4a7c15ull;
    return (uint32_t)(bench_mix64(w->rng) >> 16);
}

/* Remembers the first failure reason of this worker for the report. */
void worker_note_error(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

/* Microbenchmark of herald's inbox ring (src/ring.h, included from the source
 * tree, not copied) against a mutex + array queue and against Concurrency
 * Kit's ck_ring (Debian libck-dev), for 1->1, 2->1 and 2->2 producer->consumer
 * threads.
 *
 * Every queue gets the same harness: P producers push ITEMS pointers in total,
 * C consumers pop until they see a poison pill (one per consumer, pushed by
 * the last producer to finish, so it lands after every real item). A full or
 * empty queue is retried with the same backoff for all (pause, then
 * sched_yield: the machine this runs on has 2 cores, so 4 threads spinning
 * would otherwise starve each other). Consumers check that items from one
 * producer arrive in order and that the sum of everything popped is right.
 *
 * Reported: items/s (one item = one enqueue + one dequeue), ns per item and
 * ms per 100k enqueues under that contention, the median of REPS runs; and,
 * single-threaded, the time for 100k enqueues into an empty queue (then 100k
 * dequeues), the article's "time per 100k enqueues".
 *
 * Threads are pinned (producer i on CPU i, consumer i on CPU i+1, modulo the
 * CPU count) so items cross cores as they do between herald's workers; with
 * --no-pin the scheduler decides, and a producer and consumer that happen to
 * share a core trade whole batches without cache-line traffic (much faster,
 * much noisier).
 *
 * usage: ring_bench [--items N] [--reps R] [--capacity C] [--no-pin]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ck_ring.h>

#include "ring.h" /* herald's src/ring.h via -I src */

#define POISON ((uintptr_t)1 << 62)
#define MAXT 8

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* shared backoff: spin briefly, then give the core away */
static inline void backoff(unsigned *spins)
{
    if (++*spins < 64)
        cpu_relax();
    else {
        *spins = 0;
        sched_yield();
    }
}

/* ---- mutex + array queue ------------------------------------------------ */
typedef struct mqueue {
    pthread_mutex_t mu;
    size_t head, tail, mask;
    void **items;
} mqueue;

static bool mq_init(mqueue *q, size_t cap)
{
    size_t c = 2;
    while (c < cap)
        c <<= 1;
    q->items = calloc(c, sizeof(void *));
    if (q->items) /* fault the pages in now, as ring_init does for its slots */
        memset(q->items, 0, c * sizeof(void *));
    q->mask = c - 1;
    q->head = q->tail = 0;
    pthread_mutex_init(&q->mu, NULL);
    return q->items != NULL;
}

static inline bool mq_push(mqueue *q, void *it)
{
    bool ok = false;
    pthread_mutex_lock(&q->mu);
    if (q->tail - q->head <= q->mask) {
        q->items[q->tail++ & q->mask] = it;
        ok = true;
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
}

static inline void *mq_pop(mqueue *q)
{
    void *it = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->head != q->tail)
        it = q->items[q->head++ & q->mask];
    pthread_mutex_unlock(&q->mu);
    return it;
}

/* ---- ck_ring wrapper ---------------------------------------------------- */
typedef struct ckq {
    ck_ring_t ring;
    ck_ring_buffer_t *buf;
} ckq;

static bool ckq_init(ckq *q, size_t cap)
{
    size_t c = 2;
    while (c < cap + 1) /* ck_ring holds size - 1 items */
        c <<= 1;
    q->buf = aligned_alloc(64, c * sizeof(ck_ring_buffer_t));
    if (!q->buf)
        return false;
    memset(q->buf, 0, c * sizeof(ck_ring_buffer_t)); /* fault the pages in now */
    ck_ring_init(&q->ring, (unsigned)c);
    return true;
}

/* ---- the harness, specialised per queue so every operation inlines ------ */
typedef struct run_ctx {
    void *q;
    int producers, consumers;
    uint64_t items;
    atomic_int ready;
    atomic_int go;
    atomic_int producers_done;
    atomic_uint_fast64_t sum;
    atomic_int errors;
} run_ctx;

typedef struct targ {
    run_ctx *rc;
    int id;
} targ;

static void start_gate(run_ctx *rc)
{
    atomic_fetch_add(&rc->ready, 1);
    while (!atomic_load_explicit(&rc->go, memory_order_acquire))
        cpu_relax();
}

#define DEFINE_QUEUE_BENCH(NAME, QTYPE, PUSH, POP)                                             \
    static void *NAME##_producer(void *arg)                                                    \
    {                                                                                          \
        targ *t = arg;                                                                         \
        run_ctx *rc = t->rc;                                                                   \
        QTYPE *q = rc->q;                                                                      \
        uint64_t n = rc->items / (uint64_t)rc->producers +                                     \
                     ((uint64_t)t->id < rc->items % (uint64_t)rc->producers);                  \
        start_gate(rc);                                                                        \
        for (uint64_t s = 1; s <= n; s++) {                                                    \
            void *it = (void *)(((uintptr_t)t->id << 40) | (uintptr_t)s);                      \
            unsigned spins = 0;                                                                \
            while (!(PUSH(q, it)))                                                             \
                backoff(&spins);                                                               \
        }                                                                                      \
        if (atomic_fetch_add(&rc->producers_done, 1) + 1 == rc->producers) {                   \
            for (int c = 0; c < rc->consumers; c++) {                                          \
                unsigned spins = 0;                                                            \
                while (!(PUSH(q, (void *)POISON)))                                             \
                    backoff(&spins);                                                           \
            }                                                                                  \
        }                                                                                      \
        return NULL;                                                                           \
    }                                                                                          \
    static void *NAME##_consumer(void *arg)                                                    \
    {                                                                                          \
        targ *t = arg;                                                                         \
        run_ctx *rc = t->rc;                                                                   \
        QTYPE *q = rc->q;                                                                      \
        uint64_t last[MAXT] = {0}, sum = 0;                                                    \
        int errors = 0;                                                                        \
        start_gate(rc);                                                                        \
        for (;;) {                                                                             \
            void *it;                                                                          \
            unsigned spins = 0;                                                                \
            while (!(it = POP(q)))                                                             \
                backoff(&spins);                                                               \
            uintptr_t v = (uintptr_t)it;                                                       \
            if (v == POISON)                                                                   \
                break;                                                                         \
            unsigned p = (unsigned)(v >> 40);                                                  \
            uint64_t s = v & (((uintptr_t)1 << 40) - 1);                                       \
            if (p >= MAXT || s <= last[p])                                                     \
                errors++;                                                                      \
            else                                                                               \
                last[p] = s;                                                                   \
            sum += v;                                                                          \
        }                                                                                      \
        atomic_fetch_add(&rc->sum, sum);                                                       \
        atomic_fetch_add(&rc->errors, errors);                                                 \
        return NULL;                                                                           \
    }

#define HR_PUSH(q, it) ring_push((q), (it))
#define HR_POP(q) ring_pop(q)
DEFINE_QUEUE_BENCH(herald, ring, HR_PUSH, HR_POP)

#define MQ_PUSH(q, it) mq_push((q), (it))
#define MQ_POP(q) mq_pop(q)
DEFINE_QUEUE_BENCH(mutex, mqueue, MQ_PUSH, MQ_POP)

static inline void *ck_pop_spsc(ckq *q)
{
    void *it;
    return ck_ring_dequeue_spsc(&q->ring, q->buf, &it) ? it : NULL;
}
static inline void *ck_pop_mpsc(ckq *q)
{
    void *it;
    return ck_ring_dequeue_mpsc(&q->ring, q->buf, &it) ? it : NULL;
}
static inline void *ck_pop_mpmc(ckq *q)
{
    void *it;
    return ck_ring_dequeue_mpmc(&q->ring, q->buf, &it) ? it : NULL;
}
#define CKS_PUSH(q, it) ck_ring_enqueue_spsc(&(q)->ring, (q)->buf, (it))
#define CKMS_PUSH(q, it) ck_ring_enqueue_mpsc(&(q)->ring, (q)->buf, (it))
#define CKMM_PUSH(q, it) ck_ring_enqueue_mpmc(&(q)->ring, (q)->buf, (it))
DEFINE_QUEUE_BENCH(ck_spsc, ckq, CKS_PUSH, ck_pop_spsc)
DEFINE_QUEUE_BENCH(ck_mpsc, ckq, CKMS_PUSH, ck_pop_mpsc)
DEFINE_QUEUE_BENCH(ck_mpmc, ckq, CKMM_PUSH, ck_pop_mpmc)

/* ---- runner ------------------------------------------------------------- */
enum qkind { Q_HERALD, Q_MUTEX, Q_CK_SPSC, Q_CK_MPSC, Q_CK_MPMC };

static const char *qname(enum qkind k)
{
    switch (k) {
    case Q_HERALD: return "herald ring (MPMC)";
    case Q_MUTEX: return "mutex + array";
    case Q_CK_SPSC: return "ck_ring spsc";
    case Q_CK_MPSC: return "ck_ring mpsc";
    default: return "ck_ring mpmc";
    }
}

static size_t g_capacity = 16384; /* herald's WORKER_INBOX */
static int g_pin = 1;               /* producers and consumers on different CPUs */

/* producer i on CPU i, consumer i on CPU i+1 (mod ncpu): every producer's
 * items cross to another core, as between two herald workers */
static void pin_thread(pthread_t th, int cpu)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (!g_pin || n < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % n, &set);
    pthread_setaffinity_np(th, sizeof set, &set);
}

/* one timed run; returns seconds, or a negative value on a check failure */
static double run_once(enum qkind k, int P, int C, uint64_t items)
{
    ring hr;
    mqueue mq;
    ckq cq;
    void *(*prod)(void *) = NULL, *(*cons)(void *) = NULL;
    run_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.producers = P;
    rc.consumers = C;
    rc.items = items;
    switch (k) {
    case Q_HERALD:
        if (!ring_init(&hr, g_capacity))
            return -1;
        rc.q = &hr, prod = herald_producer, cons = herald_consumer;
        break;
    case Q_MUTEX:
        if (!mq_init(&mq, g_capacity))
            return -1;
        rc.q = &mq, prod = mutex_producer, cons = mutex_consumer;
        break;
    case Q_CK_SPSC:
    case Q_CK_MPSC:
    case Q_CK_MPMC:
        if (!ckq_init(&cq, g_capacity))
            return -1;
        rc.q = &cq;
        prod = k == Q_CK_SPSC ? ck_spsc_producer : k == Q_CK_MPSC ? ck_mpsc_producer : ck_mpmc_producer;
        cons = k == Q_CK_SPSC ? ck_spsc_consumer : k == Q_CK_MPSC ? ck_mpsc_consumer : ck_mpmc_consumer;
        break;
    }
    pthread_t th[2 * MAXT];
    targ ta[2 * MAXT];
    int n = 0;
    for (int i = 0; i < P; i++, n++) {
        ta[n] = (targ){&rc, i};
        pthread_create(&th[n], NULL, prod, &ta[n]);
        pin_thread(th[n], i);
    }
    for (int i = 0; i < C; i++, n++) {
        ta[n] = (targ){&rc, i};
        pthread_create(&th[n], NULL, cons, &ta[n]);
        pin_thread(th[n], i + 1);
    }
    while (atomic_load(&rc.ready) < n)
        sched_yield();
    double t0 = now_s();
    atomic_store_explicit(&rc.go, 1, memory_order_release);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;

    /* expected sum: producer p pushes seq 1..n_p tagged with p << 40 */
    uint64_t want = 0;
    for (int p = 0; p < P; p++) {
        uint64_t np = items / (uint64_t)P + ((uint64_t)p < items % (uint64_t)P);
        want += ((uint64_t)p << 40) * np + np * (np + 1) / 2;
    }
    bool bad = atomic_load(&rc.errors) != 0 || atomic_load(&rc.sum) != want;
    if (k == Q_HERALD)
        ring_destroy(&hr);
    else if (k == Q_MUTEX)
        free(mq.items), pthread_mutex_destroy(&mq.mu);
    else
        free(cq.buf);
    if (bad) {
        fprintf(stderr, "ring_bench: %s %d->%d: CHECK FAILED (errors %d, sum %s)\n", qname(k), P,
                C, atomic_load(&rc.errors), atomic_load(&rc.sum) == want ? "ok" : "wrong");
        return -1;
    }
    return dt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* single thread: 100k enqueues into an empty queue, then 100k dequeues */
#define BURST 100000
static void burst(enum qkind k, int reps, double *enq_ms, double *deq_ms)
{
    double be = 1e9, bd = 1e9;
    for (int r = 0; r < reps; r++) {
        ring hr;
        mqueue mq;
        ckq cq;
        double t0, t1, t2;
        uintptr_t acc = 0;
        switch (k) {
        case Q_HERALD:
            ring_init(&hr, BURST);
            t0 = now_s();
            for (uintptr_t i = 1; i <= BURST; i++)
                ring_push(&hr, (void *)i);
            t1 = now_s();
            for (int i = 0; i < BURST; i++)
                acc += (uintptr_t)ring_pop(&hr);
            t2 = now_s();
            ring_destroy(&hr);
            break;
        case Q_MUTEX:
            mq_init(&mq, BURST);
            t0 = now_s();
            for (uintptr_t i = 1; i <= BURST; i++)
                mq_push(&mq, (void *)i);
            t1 = now_s();
            for (int i = 0; i < BURST; i++)
                acc += (uintptr_t)mq_pop(&mq);
            t2 = now_s();
            free(mq.items);
            break;
        default:
            ckq_init(&cq, BURST);
            t0 = now_s();
            for (uintptr_t i = 1; i <= BURST; i++) {
                if (k == Q_CK_SPSC)
                    ck_ring_enqueue_spsc(&cq.ring, cq.buf, (void *)i);
                else if (k == Q_CK_MPSC)
                    ck_ring_enqueue_mpsc(&cq.ring, cq.buf, (void *)i);
                else
                    ck_ring_enqueue_mpmc(&cq.ring, cq.buf, (void *)i);
            }
            t1 = now_s();
            for (int i = 0; i < BURST; i++) {
                void *it = NULL;
                if (k == Q_CK_SPSC)
                    ck_ring_dequeue_spsc(&cq.ring, cq.buf, &it);
                else if (k == Q_CK_MPSC)
                    ck_ring_dequeue_mpsc(&cq.ring, cq.buf, &it);
                else
                    ck_ring_dequeue_mpmc(&cq.ring, cq.buf, &it);
                acc += (uintptr_t)it;
            }
            t2 = now_s();
            free(cq.buf);
            break;
        }
        if (acc != (uintptr_t)BURST * (BURST + 1) / 2)
            fprintf(stderr, "ring_bench: %s burst: CHECK FAILED\n", qname(k));
        if (t1 - t0 < be)
            be = t1 - t0;
        if (t2 - t1 < bd)
            bd = t2 - t1;
    }
    *enq_ms = be * 1e3;
    *deq_ms = bd * 1e3;
}

int main(int argc, char **argv)
{
    uint64_t items = 10000000;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--items") && i + 1 < argc)
            items = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--capacity") && i + 1 < argc)
            g_capacity = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--no-pin"))
            g_pin = 0;
        else if (!strcmp(argv[i], "--markdown"))
            ; /* the only output format */
        else {
            fprintf(stderr, "usage: ring_bench [--items N] [--reps R] [--capacity C] [--no-pin]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 15 || items < 1000 || g_capacity < 2) {
        fprintf(stderr, "ring_bench: bad arguments\n");
        return 2;
    }

    static const struct {
        int p, c;
        enum qkind ck;
    } cfg[] = {{1, 1, Q_CK_SPSC}, {2, 1, Q_CK_MPSC}, {2, 2, Q_CK_MPMC}};
    int failures = 0;

    printf("Ring microbenchmark: %llu items per run, capacity %zu, median of %d runs, %s "
           "(article: 402k ops/s, 9 ms per 100k enqueues)\n\n",
           (unsigned long long)items, g_capacity, reps,
           g_pin ? "producer i on CPU i, consumer i on CPU i+1" : "threads not pinned");
    printf("| threads P->C | queue | items/s (median) | range over runs | ns/item | ms per 100k enqueues "
           "| vs herald ring | vs article's 402k/s |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        enum qkind kinds[4] = {Q_HERALD, Q_MUTEX, cfg[ci].ck, Q_CK_MPMC};
        int nk = cfg[ci].ck == Q_CK_MPMC ? 3 : 4;
        double herald_rate = 0;
        for (int ki = 0; ki < nk; ki++) {
            double t[16];
            int ok = 1;
            for (int r = 0; r < reps; r++) {
                t[r] = run_once(kinds[ki], cfg[ci].p, cfg[ci].c, items);
                if (t[r] < 0)
                    ok = 0;
            }
            if (!ok) {
                failures++;
                printf("| %d->%d | %s | CHECK FAILED | | | | | |\n", cfg[ci].p, cfg[ci].c,
                       qname(kinds[ki]));
                continue;
            }
            qsort(t, (size_t)reps, sizeof t[0], cmp_double);
            double med = t[reps / 2];
            double rate = (double)items / med;
            if (ki == 0)
                herald_rate = rate;
            printf("| %d->%d | %s | %.2fM | %.1fM-%.1fM | %.1f | %.2f | %.2fx | %.0fx |\n", cfg[ci].p,
                   cfg[ci].c, qname(kinds[ki]), rate / 1e6, (double)items / t[reps - 1] / 1e6,
                   (double)items / t[0] / 1e6, med / (double)items * 1e9, 1e5 / rate * 1e3,
                   herald_rate > 0 ? rate / herald_rate : 0.0, rate / 402e3);
            fflush(stdout);
        }
    }

    printf("\nSingle thread, empty queue: 100k enqueues, then 100k dequeues (best of %d)\n\n", reps);
    printf("| queue | 100k enqueues (ms) | 100k dequeues (ms) |\n| --- | ---: | ---: |\n");
    enum qkind all[5] = {Q_HERALD, Q_MUTEX, Q_CK_SPSC, Q_CK_MPSC, Q_CK_MPMC};
    for (int i = 0; i < 5; i++) {
        double e, d;
        burst(all[i], reps, &e, &d);
        printf("| %s | %.3f | %.3f |\n", qname(all[i]), e, d);
    }
    return failures ? 1 : 0;
}

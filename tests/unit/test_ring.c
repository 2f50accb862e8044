/* Unit tests for the bounded MPMC ring (src/ring.h, header-only).
 *
 * Single-threaded: FIFO order, full/empty, capacity rounding, many
 * wrap-arounds. Multi-threaded: 2 producers -> 1 consumer and 2 -> 2, every
 * item received exactly once and, on each consumer, each producer's items in
 * increasing sequence. The outcome is deterministic (only the interleaving
 * varies) and the test is small enough to run quickly under TSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>

#include "ring.h"

/* Items are non-NULL pointers encoding (producer, sequence). */
#define ITEM(prod, seq) ((void *)(uintptr_t)(((uintptr_t)(prod) << 24) | ((uintptr_t)(seq) + 1)))
#define ITEM_PROD(it) ((unsigned)((uintptr_t)(it) >> 24))
#define ITEM_SEQ(it) ((size_t)(((uintptr_t)(it) & 0xFFFFFF) - 1))

static void test_capacity_rounding(void **state)
{
    (void)state;
    static const struct {
        size_t ask, want;
    } cases[] = {{0, 2}, {1, 2}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {8, 8}, {9, 16},
                 {1000, 1024}, {1024, 1024}, {1025, 2048}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ring r;
        assert_true(ring_init(&r, cases[i].ask));
        if (ring_capacity(&r) != cases[i].want)
            fail_msg("ring_init(%zu): capacity %zu, expected %zu", cases[i].ask,
                     ring_capacity(&r), cases[i].want);
        /* exactly capacity items fit */
        for (size_t k = 0; k < cases[i].want; k++)
            assert_true(ring_push(&r, ITEM(0, k)));
        assert_false(ring_push(&r, ITEM(0, 999)));
        ring_destroy(&r);
        assert_null(r.slots);
    }
}

static void test_fifo_full_empty(void **state)
{
    (void)state;
    ring r;
    assert_true(ring_init(&r, 8));
    assert_null(ring_pop(&r)); /* empty */
    assert_null(ring_pop(&r));
    for (size_t i = 0; i < 8; i++)
        assert_true(ring_push(&r, ITEM(1, i)));
    assert_false(ring_push(&r, ITEM(1, 8))); /* full */
    assert_false(ring_push(&r, ITEM(1, 9)));
    for (size_t i = 0; i < 8; i++)
        assert_ptr_equal(ring_pop(&r), ITEM(1, i));
    assert_null(ring_pop(&r));
    /* full -> one pop -> one push fits again, order kept */
    for (size_t i = 0; i < 8; i++)
        assert_true(ring_push(&r, ITEM(2, i)));
    assert_ptr_equal(ring_pop(&r), ITEM(2, 0));
    assert_true(ring_push(&r, ITEM(2, 8)));
    assert_false(ring_push(&r, ITEM(2, 9)));
    for (size_t i = 1; i <= 8; i++)
        assert_ptr_equal(ring_pop(&r), ITEM(2, i));
    assert_null(ring_pop(&r));
    ring_destroy(&r);
}

static void test_wrap_around(void **state)
{
    (void)state;
    ring r;
    assert_true(ring_init(&r, 4));
    size_t next_push = 0, next_pop = 0, held = 0;
    uint64_t x = 12345;
    /* thousands of laps with varying fill levels */
    for (int step = 0; step < 100000; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (x & 1) {
            bool ok = ring_push(&r, ITEM(3, next_push));
            if (ok != (held < 4))
                fail_msg("step %d: push returned %d with %zu held", step, ok, held);
            if (ok) {
                next_push++;
                held++;
            }
        } else {
            void *it = ring_pop(&r);
            if (held == 0) {
                if (it)
                    fail_msg("step %d: pop from empty ring returned an item", step);
            } else {
                if (it != ITEM(3, next_pop))
                    fail_msg("step %d: popped seq %zu, expected %zu", step, ITEM_SEQ(it), next_pop);
                next_pop++;
                held--;
            }
        }
    }
    assert_true(next_push > 20000); /* thousands of laps of a 4-slot ring */
    ring_destroy(&r);
}

/* ---- multi-threaded ----------------------------------------------------- */

#define PER_PRODUCER 20000
#define MAX_THREADS 4

typedef struct mt_ctx {
    ring r;
    unsigned nprod;
    atomic_size_t received; /* total popped, across consumers */
    atomic_bool go;
} mt_ctx;

typedef struct prod_arg {
    mt_ctx *ctx;
    unsigned id;
} prod_arg;

typedef struct cons_arg {
    mt_ctx *ctx;
    uint8_t *seen[MAX_THREADS]; /* per producer: times each seq was received */
    size_t count;
    bool order_ok;
    char why[128];
} cons_arg;

static void *producer(void *p)
{
    prod_arg *a = p;
    while (!atomic_load(&a->ctx->go))
        sched_yield();
    for (size_t i = 0; i < PER_PRODUCER; i++) {
        while (!ring_push(&a->ctx->r, ITEM(a->id, i)))
            sched_yield();
    }
    return NULL;
}

static void *consumer(void *p)
{
    cons_arg *a = p;
    mt_ctx *ctx = a->ctx;
    long last[MAX_THREADS];
    for (int i = 0; i < MAX_THREADS; i++)
        last[i] = -1;
    size_t total = (size_t)ctx->nprod * PER_PRODUCER;
    while (!atomic_load(&ctx->go))
        sched_yield();
    while (atomic_load(&ctx->received) < total) {
        void *it = ring_pop(&ctx->r);
        if (!it) {
            sched_yield();
            continue;
        }
        atomic_fetch_add(&ctx->received, 1);
        unsigned prod = ITEM_PROD(it);
        size_t seq = ITEM_SEQ(it);
        if (prod >= ctx->nprod || seq >= PER_PRODUCER) {
            if (a->order_ok)
                snprintf(a->why, sizeof a->why, "bogus item %p", it);
            a->order_ok = false;
            continue;
        }
        if ((long)seq <= last[prod] && a->order_ok) {
            snprintf(a->why, sizeof a->why, "producer %u: seq %zu after %ld", prod, seq,
                     last[prod]);
            a->order_ok = false;
        }
        last[prod] = (long)seq;
        if (a->seen[prod][seq] < 255)
            a->seen[prod][seq]++;
        a->count++;
    }
    return NULL;
}

static void run_mt(unsigned nprod, unsigned ncons, size_t capacity)
{
    mt_ctx ctx;
    assert_true(ring_init(&ctx.r, capacity));
    ctx.nprod = nprod;
    atomic_init(&ctx.received, 0);
    atomic_init(&ctx.go, false);

    pthread_t pt[MAX_THREADS], ct[MAX_THREADS];
    prod_arg pa[MAX_THREADS];
    cons_arg ca[MAX_THREADS];
    for (unsigned c = 0; c < ncons; c++) {
        memset(&ca[c], 0, sizeof ca[c]);
        ca[c].ctx = &ctx;
        ca[c].order_ok = true;
        for (unsigned p = 0; p < nprod; p++) {
            ca[c].seen[p] = calloc(PER_PRODUCER, 1);
            assert_non_null(ca[c].seen[p]);
        }
        assert_int_equal(pthread_create(&ct[c], NULL, consumer, &ca[c]), 0);
    }
    for (unsigned p = 0; p < nprod; p++) {
        pa[p].ctx = &ctx;
        pa[p].id = p;
        assert_int_equal(pthread_create(&pt[p], NULL, producer, &pa[p]), 0);
    }
    atomic_store(&ctx.go, true);
    for (unsigned p = 0; p < nprod; p++)
        pthread_join(pt[p], NULL);
    for (unsigned c = 0; c < ncons; c++)
        pthread_join(ct[c], NULL);

    size_t total = 0;
    for (unsigned c = 0; c < ncons; c++) {
        if (!ca[c].order_ok)
            fail_msg("%u->%u consumer %u: order violated: %s", nprod, ncons, c, ca[c].why);
        total += ca[c].count;
    }
    if (total != (size_t)nprod * PER_PRODUCER)
        fail_msg("%u->%u: received %zu items, expected %zu", nprod, ncons, total,
                 (size_t)nprod * PER_PRODUCER);
    for (unsigned p = 0; p < nprod; p++) {
        for (size_t s = 0; s < PER_PRODUCER; s++) {
            unsigned times = 0;
            for (unsigned c = 0; c < ncons; c++)
                times += ca[c].seen[p][s];
            if (times != 1)
                fail_msg("%u->%u: producer %u seq %zu received %u times", nprod, ncons, p, s,
                         times);
        }
    }
    assert_null(ring_pop(&ctx.r));
    for (unsigned c = 0; c < ncons; c++)
        for (unsigned p = 0; p < nprod; p++)
            free(ca[c].seen[p]);
    ring_destroy(&ctx.r);
}

static void test_mt_2_producers_1_consumer(void **state)
{
    (void)state;
    run_mt(2, 1, 64);
    run_mt(2, 1, 2); /* tiny ring: constant full/empty transitions */
}

static void test_mt_2_producers_2_consumers(void **state)
{
    (void)state;
    run_mt(2, 2, 64);
    run_mt(2, 2, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_rounding),
        cmocka_unit_test(test_fifo_full_empty),
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_mt_2_producers_1_consumer),
        cmocka_unit_test(test_mt_2_producers_2_consumers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

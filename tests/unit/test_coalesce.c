/* Write coalescing (src/coalesce.c): slices are bounded; a round that keeps
 * up, or one after a stall whose writes carried one frame each, or one whose
 * writes already carried many frames, never holds the next; a long round
 * whose writes merged a few frames each holds the next for as long as it
 * took, capped; the wait for a held slice is rounded up (never early) and
 * bounded by the loop's own timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "coalesce.h"

#define MS 1000000ull

/* One round in one slice: starts at t, takes `took`, `writes` sockets
 * carrying `frames`; returns whether the next is held. */
static bool one_round(coalesce *c, uint64_t t, uint64_t took, uint32_t writes, uint64_t frames)
{
    assert_int_equal(coalesce_slice_begin(c, t), t + COALESCE_SLICE_NS);
    bool held = coalesce_slice_end(c, t + took, writes, frames, true);
    assert_int_equal(held, !coalesce_due(c, t + took));
    return held;
}

static void test_keeping_up_never_holds(void **state)
{
    (void)state;
    coalesce c = {0};
    assert_true(coalesce_due(&c, 0));
    assert_false(one_round(&c, 10 * MS, MS / 5, 25, 25)); /* S4: a fan-out, one frame each */
    assert_int_equal(c.flush_after_ns, 0);
    assert_int_equal(coalesce_wait_ms(&c, 11 * MS, 100), 0);
    /* a short round, even with merged frames: not behind */
    assert_false(one_round(&c, 20 * MS, 4 * MS, 500, 3000));
    assert_true(coalesce_due(&c, 24 * MS));
}

static void test_after_a_stall_single_frames_never_hold(void **state)
{
    (void)state;
    coalesce c = {0};
    /* a 60 ms round (the machine stalled) whose writes still carried ~1 frame */
    assert_false(one_round(&c, 0, 60 * MS, 2500, 2600));
    assert_true(coalesce_due(&c, 60 * MS));
}

static void test_full_writes_never_hold(void **state)
{
    (void)state;
    coalesce c = {0};
    /* S3: 500 sockets, 47 frames each, 6 ms */
    assert_false(one_round(&c, 0, 6 * MS, 500, 500 * 47));
    assert_true(coalesce_due(&c, 6 * MS));
    assert_false(one_round(&c, 10 * MS, 6 * MS, 500, 500 * COALESCE_MAX_BATCH));
    assert_true(coalesce_due(&c, 16 * MS));
}

static void test_behind_and_merging_holds_as_long_as_the_round(void **state)
{
    (void)state;
    coalesce c = {0};
    assert_true(one_round(&c, 100 * MS, 8 * MS, 1000, 1000 * COALESCE_MIN_BATCH));
    assert_int_equal(c.flush_after_ns, 116 * MS); /* ended at 108, held 8 */
    assert_false(coalesce_due(&c, 115 * MS));
    assert_true(coalesce_due(&c, 116 * MS));
    /* 110 ms: 6 ms left, rounded up so the loop never wakes early */
    assert_int_equal(coalesce_wait_ms(&c, 110 * MS, 100), 7);
    assert_int_equal(coalesce_wait_ms(&c, 110 * MS, 2), 2);
    assert_int_equal(coalesce_wait_ms(&c, 110 * MS, -1), 7);
    /* capped */
    assert_true(one_round(&c, 200 * MS, 45 * MS, 5000, 5000 * 6));
    assert_int_equal(c.flush_after_ns, 245 * MS + COALESCE_HOLD_MAX_NS);
}

static void test_a_round_spans_slices(void **state)
{
    (void)state;
    coalesce c = {0};
    /* three slices of one round: its start, writes and frames add up */
    uint64_t t = 1000 * MS;
    assert_int_equal(coalesce_slice_begin(&c, t), t + COALESCE_SLICE_NS);
    assert_false(coalesce_slice_end(&c, t + MS, 300, 900, false));
    assert_true(coalesce_due(&c, t + MS)); /* mid-round: no hold */
    /* a later slice of the same round keeps the round's start */
    assert_int_equal(coalesce_slice_begin(&c, t + 2 * MS), t + 2 * MS + COALESCE_SLICE_NS);
    assert_int_equal(c.round_start_ns, t);
    coalesce_slice_end(&c, t + 3 * MS, 300, 900, false);
    coalesce_slice_begin(&c, t + 4 * MS);
    assert_true(coalesce_slice_end(&c, t + 6 * MS, 300, 900, true));
    /* 6 ms, 900 visits, 2700 frames (3 each): held 6 ms */
    assert_int_equal(c.flush_after_ns, t + 12 * MS);
    /* the next round starts afresh */
    coalesce_slice_begin(&c, t + 12 * MS);
    assert_int_equal(c.round_start_ns, t + 12 * MS);
    assert_int_equal(c.round_writes, 0);
    assert_int_equal(c.round_frames, 0);
    assert_false(coalesce_slice_end(&c, t + 12 * MS + MS / 10, 10, 10, true));
    assert_true(coalesce_due(&c, t + 12 * MS + MS / 10));
}

static void test_edges(void **state)
{
    (void)state;
    coalesce c = {0};
    /* exactly the "behind" duration holds; just under it does not */
    assert_true(one_round(&c, 0, COALESCE_BEHIND_NS, 100, 200));
    assert_false(one_round(&c, 100 * MS, COALESCE_BEHIND_NS - 1, 100, 200));
    /* just under 2 frames per visit: no hold */
    assert_false(one_round(&c, 200 * MS, 10 * MS, 100, 199));
    /* a long round that visited nothing (every connection already dead) */
    assert_false(one_round(&c, 300 * MS, 10 * MS, 0, 0));
    /* visits that hit full sockets (no frames) dilute the ratio: no hold */
    coalesce_slice_begin(&c, 400 * MS);
    coalesce_slice_end(&c, 401 * MS, 100, 300, false);
    assert_false(coalesce_slice_end(&c, 410 * MS, 100, 0, true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keeping_up_never_holds),
        cmocka_unit_test(test_after_a_stall_single_frames_never_hold),
        cmocka_unit_test(test_full_writes_never_hold),
        cmocka_unit_test(test_behind_and_merging_holds_as_long_as_the_round),
        cmocka_unit_test(test_a_round_spans_slices),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

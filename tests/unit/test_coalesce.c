/* Write coalescing (src/coalesce.c): small passes and idle servers flush at
 * once; a pass over many sockets holds the next one for twice its duration,
 * never more than COALESCE_HOLD_MAX_NS; the wait the loop takes for a held
 * pass is rounded up (never early) and bounded by its own timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "coalesce.h"

#define MS 1000000ull

static void test_idle_and_small_passes_flush_at_once(void **state)
{
    (void)state;
    coalesce c = {0};
    assert_true(coalesce_due(&c, 0));
    coalesce_after_pass(&c, 5 * MS, 3 * MS, 0);
    assert_true(coalesce_due(&c, 8 * MS));
    coalesce_after_pass(&c, 10 * MS, 3 * MS, COALESCE_MIN_SOCKETS - 1);
    assert_int_equal(c.flush_after_ns, 0);
    assert_true(coalesce_due(&c, 13 * MS));
    assert_int_equal(coalesce_wait_ms(&c, 13 * MS, 100), 0);
}

static void test_large_pass_holds_twice_its_duration(void **state)
{
    (void)state;
    coalesce c = {0};
    coalesce_after_pass(&c, 100 * MS, 2 * MS, COALESCE_MIN_SOCKETS);
    /* ends at 102 ms, held for 4 ms more */
    assert_int_equal(c.flush_after_ns, 106 * MS);
    assert_false(coalesce_due(&c, 105 * MS));
    assert_true(coalesce_due(&c, 106 * MS));
    /* 103 ms: 3 ms left, rounded up to 4 so the loop never wakes early */
    assert_int_equal(coalesce_wait_ms(&c, 103 * MS, 100), 4);
    /* the loop's own timeout wins when it is shorter */
    assert_int_equal(coalesce_wait_ms(&c, 103 * MS, 2), 2);
    /* no limit of its own */
    assert_int_equal(coalesce_wait_ms(&c, 103 * MS, -1), 4);
}

static void test_hold_is_capped(void **state)
{
    (void)state;
    coalesce c = {0};
    coalesce_after_pass(&c, 0, 50 * MS, 100000);
    assert_int_equal(c.flush_after_ns, 50 * MS + COALESCE_HOLD_MAX_NS);
    /* a later small pass releases the hold at once */
    coalesce_after_pass(&c, 80 * MS, 1 * MS, 10);
    assert_true(coalesce_due(&c, 81 * MS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_and_small_passes_flush_at_once),
        cmocka_unit_test(test_large_pass_holds_twice_its_duration),
        cmocka_unit_test(test_hold_is_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for a worker's group table (src/groups.c) and the batched
 * message releases (msg_batch in src/msg.h): no locks, no I/O, so they are
 * tested directly. Connections are opaque here: any distinct pointers do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "groups.h"
#include "msg.h"

static struct conn *fake(uintptr_t i) { return (struct conn *)(0x1000 + 16 * i); }

static void test_find_get_release(void **state)
{
    (void)state;
    group_table t;
    assert_true(groups_init(&t));
    assert_null(groups_find(&t, "a", 1));
    group *a = groups_get(&t, "a", 1);
    assert_non_null(a);
    assert_ptr_equal(groups_get(&t, "a", 1), a);
    assert_ptr_equal(groups_find(&t, "a", 1), a);
    assert_null(groups_find(&t, "ab", 2)); /* a prefix is another group */
    assert_int_equal(groups_add(a, fake(1), 0, 0), 0);
    groups_release_if_empty(&t, a); /* has a member: stays */
    assert_ptr_equal(groups_find(&t, "a", 1), a);
    assert_null(groups_remove(a, 0)); /* the last member: nothing moved */
    groups_release_if_empty(&t, a);
    assert_null(groups_find(&t, "a", 1));
    groups_destroy(&t);
}

static void test_remove_moves_last_into_hole(void **state)
{
    (void)state;
    group_table t;
    assert_true(groups_init(&t));
    group *g = groups_get(&t, "g", 1);
    for (uintptr_t i = 0; i < 5; i++)
        assert_int_equal(groups_add(g, fake(i), i, 7), (long)i);
    /* removing slot 1 moves the last member (4) into it, with its filter */
    assert_ptr_equal(groups_remove(g, 1), fake(4));
    assert_int_equal(g->n, 4);
    assert_ptr_equal(g->members[1].c, fake(4));
    assert_int_equal(g->members[1].after, 4);
    assert_int_equal(g->members[1].after_gen, 7);
    assert_null(groups_remove(g, 3)); /* the last slot: nothing moves */
    assert_int_equal(g->n, 3);
    while (g->n)
        groups_remove(g, 0);
    groups_release_if_empty(&t, g);
    groups_destroy(&t);
}

static void test_many_groups_grow_the_table(void **state)
{
    (void)state;
    group_table t;
    assert_true(groups_init(&t));
    char name[32];
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(name, sizeof name, "grp.%d", i);
        group *g = groups_get(&t, name, (size_t)n);
        assert_non_null(g);
        assert_int_equal(groups_add(g, fake((uintptr_t)i), 0, 0), 0);
    }
    assert_int_equal(t.count, 20000);
    for (int i = 0; i < 20000; i += 997) {
        int n = snprintf(name, sizeof name, "grp.%d", i);
        group *g = groups_find(&t, name, (size_t)n);
        assert_non_null(g);
        assert_ptr_equal(g->members[0].c, fake((uintptr_t)i));
    }
    groups_destroy(&t);
}

static unsigned refs(msg *m) { return atomic_load(&m->refs); }

static void test_batch_applies_releases_once(void **state)
{
    (void)state;
    msg *a = msg_new_raw("a", 1), *b = msg_new_raw("b", 1);
    msg_ref_n(a, 99); /* 100 holders */
    msg_ref_n(b, 9);  /* 10 holders */
    msg_batch batch;
    memset(&batch, 0, sizeof batch);
    for (int i = 0; i < 60; i++)
        msg_batch_unref(&batch, a);
    for (int i = 0; i < 5; i++)
        msg_batch_unref(&batch, b);
    /* releases of one message in a row are counted, not applied (a slot
     * switching messages applies the previous count at once) */
    assert_true(refs(a) >= 40);
    msg_batch_flush(&batch);
    assert_int_equal(refs(a), 40);
    assert_int_equal(refs(b), 5);
    for (int i = 0; i < 40; i++)
        msg_batch_unref(&batch, a);
    for (int i = 0; i < 5; i++)
        msg_batch_unref(&batch, b);
    msg_batch_flush(&batch); /* the last holders: both freed (ASan checks) */
    for (int i = 0; i < MSG_BATCH_SLOTS; i++)
        assert_null(batch.m[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_get_release),
        cmocka_unit_test(test_remove_moves_last_into_hole),
        cmocka_unit_test(test_many_groups_grow_the_table),
        cmocka_unit_test(test_batch_applies_releases_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the outbound queue (src/outq.c): ordering of control frames,
 * pong coalescing, what a close drops, and the memory it charges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "msg.h"
#include "outq.h"

/* outq reports latency through metrics.c, which this test does not link:
 * done->lat is NULL here, so this is never called. */
void metrics_observe_latency(metrics *m, uint64_t us)
{
    (void)m;
    (void)us;
    fail();
}

static msg *data(const char *s) { return msg_new_frame(MSG_DATA, WS_OP_TEXT, s, strlen(s)); }
static msg *pong(const char *s) { return msg_new_frame(MSG_CONTROL, WS_OP_PONG, s, strlen(s)); }
static msg *raw(const char *s) { return msg_new_raw(s, strlen(s)); }

/* The opcodes (RAW as 0xFF) of the queue, front to back. */
static void expect(const outq *q, const char *want)
{
    struct iovec iov[64];
    int n = outq_iov(q, iov, 64);
    char got[65];
    for (int i = 0; i < n; i++) {
        const uint8_t *p = iov[i].iov_base;
        got[i] = p[0] == 'H' ? 'H' : (p[0] & 0x0F) == WS_OP_PONG ? 'P'
                 : (p[0] & 0x0F) == WS_OP_CLOSE                   ? 'C'
                                                                  : 'D';
    }
    got[n] = '\0';
    assert_string_equal(got, want);
}

static void test_urgent_after_101_before_data(void **state)
{
    (void)state;
    outq q = {0};
    assert_true(outq_push(&q, raw("HTTP/1.1 101")));
    assert_true(outq_push(&q, data("a")));
    assert_true(outq_push(&q, data("b")));
    assert_true(outq_push_urgent(&q, pong("1")));
    expect(&q, "HPDD");
    outq_clear(&q);
}

static void test_pongs_coalesce(void **state)
{
    (void)state;
    outq q = {0};
    assert_true(outq_push(&q, data("a")));
    assert_true(outq_push_urgent(&q, pong("first")));
    size_t mem = q.mem, bytes = q.bytes;
    for (int i = 0; i < 10000; i++) {
        msg *p = pong("later");
        assert_true(outq_replace_control(&q, WS_OP_PONG, p));
    }
    expect(&q, "PD");
    assert_int_equal(q.count, 2);
    assert_int_equal(q.mem, mem);     /* same sizes: same charge */
    assert_int_equal(q.bytes, bytes);
    struct iovec iov[2];
    outq_iov(&q, iov, 2);
    assert_memory_equal((uint8_t *)iov[0].iov_base + 2, "later", 5);
    outq_clear(&q);
}

static void test_started_pong_is_not_replaced(void **state)
{
    (void)state;
    outq q = {0};
    assert_true(outq_push_urgent(&q, pong("one")));
    outq_done done = {0};
    outq_consume(&q, 1, &done); /* the pong is partly written */
    msg *p = pong("two");
    assert_false(outq_replace_control(&q, WS_OP_PONG, p));
    assert_true(outq_push_urgent(&q, p)); /* goes after it */
    assert_int_equal(q.count, 2);
    outq_clear(&q);
}

static void test_close_keeps_101_and_control(void **state)
{
    (void)state;
    outq q = {0};
    assert_true(outq_push(&q, raw("HTTP/1.1 101")));
    assert_true(outq_push(&q, data("a")));
    assert_true(outq_push_urgent(&q, pong("p")));
    assert_true(outq_push(&q, data("b")));
    assert_int_equal(outq_drop_unstarted_data(&q), 2);
    expect(&q, "HP");
    assert_true(outq_push(&q, msg_new_close(1000, NULL)));
    expect(&q, "HPC");
    outq_clear(&q);
}

static void test_cut_at_unstarted_data(void **state)
{
    (void)state;
    outq q = {0};
    msg *id1 = raw("id: 1\n"), *id2 = raw("id: 2\n");
    id1->opcode = id2->opcode = 0x7f;
    msg *a = data("a");
    assert_true(outq_push(&q, a)); /* partly written: stays */
    assert_true(outq_push(&q, id1));
    assert_true(outq_push(&q, data("b")));
    assert_true(outq_push(&q, id2));
    assert_true(outq_push(&q, data("c")));
    assert_true(outq_push(&q, pong("p"))); /* an id-carrying control behind b and c */
    outq_done done = {0};
    outq_consume(&q, 1, &done);
    assert_int_equal(outq_cut_at_unstarted_data(&q, 0x7f), 2);
    expect(&q, "D");
    assert_int_equal(q.count, 1);
    assert_int_equal(q.bytes, a->len - 1);
    assert_int_equal(q.mem, outq_cost(a));
    /* nothing but controls: nothing cut */
    assert_true(outq_push(&q, pong("q")));
    assert_int_equal(outq_cut_at_unstarted_data(&q, 0x7f), 0);
    expect(&q, "DP");
    outq_clear(&q);
}

static void test_memory_charge(void **state)
{
    (void)state;
    outq q = {0};
    msg *d = data("0123456789");
    msg *p = pong("");
    /* shared data: its frame bytes and a slot; a private pong: its allocation */
    size_t dc = outq_cost(d), pc = outq_cost(p);
    assert_int_equal(dc, d->len + sizeof(msg *));
    assert_int_equal(pc, p->len + sizeof(msg *) + sizeof(msg));
    assert_true(pc > 200); /* a 2-byte pong is not charged 2 bytes */
    assert_true(outq_push(&q, d));
    assert_true(outq_push_urgent(&q, p));
    assert_int_equal(q.mem, dc + pc);
    outq_done done = {0};
    outq_consume(&q, p->len, &done); /* the pong goes out */
    assert_int_equal(q.mem, dc);
    assert_true(outq_drop_oldest_data(&q));
    assert_int_equal(q.mem, 0);
    assert_int_equal(q.bytes, 0);
    outq_clear(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_urgent_after_101_before_data),
        cmocka_unit_test(test_pongs_coalesce),
        cmocka_unit_test(test_started_pong_is_not_replaced),
        cmocka_unit_test(test_close_keeps_101_and_control),
        cmocka_unit_test(test_cut_at_unstarted_data),
        cmocka_unit_test(test_memory_charge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

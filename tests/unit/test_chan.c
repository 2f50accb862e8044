/* Unit tests for the per-group channels (src/chan.c): offsets, history
 * bounds (count and age), replay results, message references and the epoch.
 *
 * Each test runs between chan_init(true) and chan_destroy(), so channels start
 * fresh. Messages are built with msg.c (a data frame with a group), and the
 * tests keep their own reference to each one so that the references the
 * history takes and gives back can be checked exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chan.h"
#include "msg.h"

#define MS 1000000ull /* ns per ms */

static int setup(void **state)
{
    (void)state;
    return chan_init(true) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    chan_destroy();
    return 0;
}

static msg *mk(const char *group, const char *text, uint64_t publish_ms)
{
    size_t n = strlen(text);
    msg *m = msg_alloc(n);
    assert_non_null(m);
    memcpy(msg_payload(m), text, n);
    m->payload_len = (uint32_t)n;
    msg_finish(m, MSG_DATA, WS_OP_TEXT, group, strlen(group));
    m->publish_ns = publish_ms * MS;
    return m;
}

static unsigned refs(msg *m) { return atomic_load(&m->refs); }

/* Appends one message to group g (lock, append, unlock) and returns it; the
 * caller keeps its own reference. */
static msg *pub(const char *g, const chan_history_cfg *cfg, uint64_t now_ms)
{
    msg *m = mk(g, "x", now_ms);
    chan *c = chan_lock(g, strlen(g));
    assert_non_null(c);
    chan_append(c, m, cfg, now_ms);
    chan_unlock(c);
    return m;
}

/* ---- replay collection ---------------------------------------------------- */

typedef struct seen {
    uint64_t off[4096];
    msg *m[4096];
    size_t n;
} seen;

static void collect(void *arg, msg *m)
{
    seen *s = arg;
    assert_true(s->n < 4096);
    s->off[s->n] = m->offset;
    s->m[s->n] = m;
    s->n++;
}

static chan_replay_result replay(const char *g, uint64_t since, const chan_history_cfg *cfg,
                                 uint64_t now_ms, seen *s)
{
    memset(s, 0, sizeof *s);
    chan *c = chan_lock(g, strlen(g));
    assert_non_null(c);
    chan_replay_result r = chan_replay(c, since, cfg, now_ms, collect, s);
    chan_unlock(c);
    return r;
}

/* The replay gave exactly offsets first..last, in order. */
static void expect_range(const seen *s, uint64_t first, uint64_t last)
{
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    if (s->n != want)
        fail_msg("replay gave %zu messages, expected %zu (offsets %llu..%llu)", s->n, want,
                 (unsigned long long)first, (unsigned long long)last);
    for (size_t i = 0; i < s->n; i++)
        if (s->off[i] != first + i)
            fail_msg("replay[%zu] has offset %llu, expected %llu", i,
                     (unsigned long long)s->off[i], (unsigned long long)(first + i));
}

static void unref_all(msg **ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        msg_unref(ms[i]);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_epoch(void **state)
{
    (void)state;
    const char *e = chan_epoch();
    assert_int_equal(strlen(e), 16);
    for (size_t i = 0; i < 16; i++)
        if (!((e[i] >= '0' && e[i] <= '9') || (e[i] >= 'a' && e[i] <= 'f')))
            fail_msg("epoch %s is not 16 lowercase hex chars", e);
    /* a new process start (init) draws a new epoch: 2^-64 chance of a clash */
    char first[17];
    memcpy(first, e, 17);
    chan_destroy();
    assert_true(chan_init(true));
    assert_string_not_equal(first, chan_epoch());
}

static void test_lock_same_channel(void **state)
{
    (void)state;
    chan *a = chan_lock("a", 1);
    assert_non_null(a);
    chan_unlock(a);
    chan *a2 = chan_lock("a", 1);
    assert_ptr_equal(a, a2);
    chan_unlock(a2);
    chan *ab = chan_lock("ab", 2); /* a prefix is another group */
    assert_ptr_not_equal(a, ab);
    chan_unlock(ab);
    chan *all = chan_lock("", 0); /* the broadcast-to-all channel */
    assert_non_null(all);
    assert_ptr_not_equal(all, a);
    chan_unlock(all);
    assert_ptr_equal(chan_lock("", 0), all);
    chan_unlock(all);
    /* a 128-byte name (the maximum) */
    char big[129];
    memset(big, 'z', 128);
    big[128] = '\0';
    chan *b = chan_lock(big, 128);
    assert_non_null(b);
    chan_unlock(b);
    assert_ptr_equal(chan_lock(big, 128), b);
    chan_unlock(b);
    /* name comparison uses the length, not a terminator */
    assert_ptr_equal(chan_lock("abc", 1), a);
    chan_unlock(a);
}

static void test_offsets_per_group(void **state)
{
    (void)state;
    chan_history_cfg none = {0, 0, 0};
    msg *ms[64];
    size_t n = 0;
    /* interleave three groups and the broadcast channel */
    const char *gs[] = {"a", "b", "a", "", "a", "c", "b", "", "a"};
    uint64_t want[] = {1, 1, 2, 1, 3, 1, 2, 2, 4};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) {
        ms[n] = pub(gs[i], &none, 1000);
        if (ms[n]->offset != want[i])
            fail_msg("publish %zu to '%s': offset %llu, expected %llu", i, gs[i],
                     (unsigned long long)ms[n]->offset, (unsigned long long)want[i]);
        n++;
    }
    chan *a = chan_lock("a", 1);
    assert_int_equal(chan_last_offset(a), 4);
    chan_unlock(a);
    chan *d = chan_lock("d", 1); /* never published: 0 */
    assert_int_equal(chan_last_offset(d), 0);
    chan_unlock(d);
    /* no history: the channel keeps no reference */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(refs(ms[i]), 1);
    unref_all(ms, n);
}

static void test_offsets_many(void **state)
{
    (void)state;
    chan_history_cfg cfg = {16, 0, 0};
    for (uint64_t i = 1; i <= 100000; i++) {
        msg *m = pub("many", &cfg, 5);
        if (m->offset != i)
            fail_msg("offset %llu, expected %llu", (unsigned long long)m->offset,
                     (unsigned long long)i);
        msg_unref(m);
    }
    seen s;
    assert_int_equal(replay("many", 100000 - 16, &cfg, 5, &s), CHAN_REPLAY_OK);
    expect_range(&s, 100000 - 15, 100000);
}

static void test_history_max(void **state)
{
    (void)state;
    chan_history_cfg cfg = {3, 0, 0};
    msg *ms[5];
    for (int i = 0; i < 5; i++)
        ms[i] = pub("h", &cfg, 100);
    /* the two oldest were given back, the three newest are held */
    assert_int_equal(refs(ms[0]), 1);
    assert_int_equal(refs(ms[1]), 1);
    assert_int_equal(refs(ms[2]), 2);
    assert_int_equal(refs(ms[3]), 2);
    assert_int_equal(refs(ms[4]), 2);

    seen s;
    assert_int_equal(replay("h", 2, &cfg, 100, &s), CHAN_REPLAY_OK);
    expect_range(&s, 3, 5);
    assert_ptr_equal(s.m[0], ms[2]);
    assert_ptr_equal(s.m[2], ms[4]);
    assert_int_equal(replay("h", 3, &cfg, 100, &s), CHAN_REPLAY_OK);
    expect_range(&s, 4, 5);
    assert_int_equal(replay("h", 4, &cfg, 100, &s), CHAN_REPLAY_OK);
    expect_range(&s, 5, 5);
    /* since == last: nothing to replay, but fine */
    assert_int_equal(replay("h", 5, &cfg, 100, &s), CHAN_REPLAY_OK);
    assert_int_equal(s.n, 0);
    /* offset 2 is gone: since 1 or 0 would need it */
    assert_int_equal(replay("h", 1, &cfg, 100, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(s.n, 0);
    assert_int_equal(replay("h", 0, &cfg, 100, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(s.n, 0);
    /* beyond the last offset */
    assert_int_equal(replay("h", 6, &cfg, 100, &s), CHAN_REPLAY_FUTURE);
    assert_int_equal(s.n, 0);
    assert_int_equal(replay("h", UINT64_MAX, &cfg, 100, &s), CHAN_REPLAY_FUTURE);
    /* replay does not consume history */
    assert_int_equal(replay("h", 2, &cfg, 100, &s), CHAN_REPLAY_OK);
    expect_range(&s, 3, 5);
    unref_all(ms, 5);
}

static void test_history_fresh_group(void **state)
{
    (void)state;
    chan_history_cfg cfg = {10, 0, 0};
    seen s;
    /* never published: since 0 is "up to date" */
    assert_int_equal(replay("fresh", 0, &cfg, 1, &s), CHAN_REPLAY_OK);
    assert_int_equal(s.n, 0);
    assert_int_equal(replay("fresh", 1, &cfg, 1, &s), CHAN_REPLAY_FUTURE);
    /* everything kept: since 0 replays from the first */
    msg *ms[4];
    for (int i = 0; i < 4; i++)
        ms[i] = pub("fresh", &cfg, 1);
    assert_int_equal(replay("fresh", 0, &cfg, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 1, 4);
    unref_all(ms, 4);
}

static void test_history_none(void **state)
{
    (void)state;
    chan_history_cfg cfg = {0, 0, 0};
    msg *ms[3];
    for (int i = 0; i < 3; i++)
        ms[i] = pub("n", &cfg, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(refs(ms[i]), 1);
    seen s;
    assert_int_equal(replay("n", 3, &cfg, 1, &s), CHAN_REPLAY_OK);
    assert_int_equal(s.n, 0);
    assert_int_equal(replay("n", 2, &cfg, 1, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("n", 0, &cfg, 1, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("n", 4, &cfg, 1, &s), CHAN_REPLAY_FUTURE);
    unref_all(ms, 3);
}

static void test_history_growth_keeps_order(void **state)
{
    (void)state;
    chan_history_cfg cfg = {100, 0, 0};
    /* the ring grows 8 -> 16 -> 32 -> 64 -> 100 */
    for (int i = 0; i < 50; i++)
        msg_unref(pub("g", &cfg, 1));
    seen s;
    assert_int_equal(replay("g", 0, &cfg, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 1, 50);
    for (int i = 0; i < 100; i++)
        msg_unref(pub("g", &cfg, 1));
    assert_int_equal(replay("g", 50, &cfg, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 51, 150);
    assert_int_equal(replay("g", 49, &cfg, 1, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("g", 120, &cfg, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 121, 150);
}

/* TTL expiry moves the ring's head while the ring is still small; the next
 * growth must copy a wrapped ring in order. */
static void test_history_growth_after_wrap(void **state)
{
    (void)state;
    chan_history_cfg cfg = {100, 1000, 0};
    for (int i = 0; i < 6; i++) /* offsets 1..6 at t=0 */
        msg_unref(pub("w", &cfg, 0));
    /* at t=5000 they are all expired: appending 1..N more wraps the ring of 8 */
    for (int i = 0; i < 20; i++) /* offsets 7..26 */
        msg_unref(pub("w", &cfg, 5000));
    seen s;
    assert_int_equal(replay("w", 6, &cfg, 5000, &s), CHAN_REPLAY_OK);
    expect_range(&s, 7, 26);
    assert_int_equal(replay("w", 5, &cfg, 5000, &s), CHAN_REPLAY_TOO_OLD);
}

static void test_history_ttl(void **state)
{
    (void)state;
    chan_history_cfg cfg = {10, 1000, 0};
    msg *m1 = pub("t", &cfg, 10000); /* offset 1, published at 10.0 s */
    msg *m2 = pub("t", &cfg, 10500); /* 2 at 10.5 s */
    msg *m3 = pub("t", &cfg, 11000); /* 3 at 11.0 s */
    seen s;
    /* at 11.0 s nothing is older than 1 s (the boundary is kept) */
    assert_int_equal(replay("t", 0, &cfg, 11000, &s), CHAN_REPLAY_OK);
    expect_range(&s, 1, 3);
    /* at 11.2 s offset 1 is expired: since 0 cannot be served, since 1 can */
    assert_int_equal(replay("t", 0, &cfg, 11200, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("t", 1, &cfg, 11200, &s), CHAN_REPLAY_OK);
    expect_range(&s, 2, 3);
    /* the replay trimmed it: the history gave its reference back */
    assert_int_equal(refs(m1), 1);
    assert_int_equal(refs(m2), 2);
    /* at 11.8 s offset 2 is expired too */
    assert_int_equal(replay("t", 1, &cfg, 11800, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("t", 2, &cfg, 11800, &s), CHAN_REPLAY_OK);
    expect_range(&s, 3, 3);
    /* at 20 s everything is expired: only since == last is still fine */
    assert_int_equal(replay("t", 2, &cfg, 20000, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("t", 3, &cfg, 20000, &s), CHAN_REPLAY_OK);
    assert_int_equal(s.n, 0);
    assert_int_equal(replay("t", 4, &cfg, 20000, &s), CHAN_REPLAY_FUTURE);
    assert_int_equal(refs(m3), 1);
    msg_unref(m1);
    msg_unref(m2);
    msg_unref(m3);
}

static void test_history_ttl_trimmed_on_append(void **state)
{
    (void)state;
    chan_history_cfg cfg = {10, 100, 0};
    msg *old = pub("ta", &cfg, 0);
    assert_int_equal(refs(old), 2);
    msg *young = pub("ta", &cfg, 1000); /* appending at 1 s drops the expired one */
    assert_int_equal(refs(old), 1);
    assert_int_equal(refs(young), 2);
    seen s;
    assert_int_equal(replay("ta", 1, &cfg, 1000, &s), CHAN_REPLAY_OK);
    expect_range(&s, 2, 2);
    msg_unref(old);
    msg_unref(young);
}

static void test_history_max_lowered(void **state)
{
    (void)state;
    /* a reload may lower --history: the next append or replay applies it */
    chan_history_cfg big = {10, 0, 0}, small = {2, 0, 0};
    for (int i = 0; i < 10; i++)
        msg_unref(pub("low", &big, 1));
    seen s;
    assert_int_equal(replay("low", 0, &big, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 1, 10);
    assert_int_equal(replay("low", 7, &small, 1, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("low", 8, &small, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 9, 10);
    msg_unref(pub("low", &small, 1));
    assert_int_equal(replay("low", 9, &small, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 10, 11);
    assert_int_equal(replay("low", 8, &small, 1, &s), CHAN_REPLAY_TOO_OLD);
}

static void test_destroy_releases_history(void **state)
{
    (void)state;
    chan_history_cfg cfg = {4, 0, 0};
    msg *ms[3];
    for (int i = 0; i < 3; i++)
        ms[i] = pub("d", &cfg, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(refs(ms[i]), 2);
    chan_destroy();
    for (int i = 0; i < 3; i++)
        assert_int_equal(refs(ms[i]), 1);
    unref_all(ms, 3);
    assert_true(chan_init(true)); /* for teardown */
}

static void test_many_groups(void **state)
{
    (void)state;
    /* enough groups to share shards and buckets: each keeps its own sequence */
    chan_history_cfg cfg = {2, 0, 0};
    char name[32];
    for (int round = 1; round <= 3; round++)
        for (int g = 0; g < 5000; g++) {
            snprintf(name, sizeof name, "grp.%d", g);
            msg *m = pub(name, &cfg, 1);
            if (m->offset != (uint64_t)round)
                fail_msg("group %s round %d: offset %llu", name, round,
                         (unsigned long long)m->offset);
            msg_unref(m);
        }
    seen s;
    assert_int_equal(replay("grp.4321", 1, &cfg, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 2, 3);
}

static void test_sweep_forgets_unused_groups(void **state)
{
    (void)state;
    chan_history_cfg none = {0, 0, 0};
    uint64_t live0 = chan_live(), reclaimed0 = chan_reclaimed();
    char name[32];
    for (int g = 0; g < 1000; g++) {
        snprintf(name, sizeof name, "churn.%d", g);
        msg_unref(pub(name, &none, 1000));
    }
    assert_int_equal(chan_live(), live0 + 1000);
    chan_sweep(64, &none, 1500, 1000); /* not idle long enough yet */
    assert_int_equal(chan_live(), live0 + 1000);
    chan_sweep(64, &none, 2000, 1000);
    assert_int_equal(chan_live(), live0);
    assert_int_equal(chan_reclaimed(), reclaimed0 + 1000);
}

static void test_sweep_never_repeats_offsets(void **state)
{
    (void)state;
    chan_history_cfg none = {0, 0, 0};
    for (int i = 0; i < 3; i++)
        msg_unref(pub("again", &none, 10));
    chan_sweep(64, &none, 100000, 1000);
    /* A new incarnation continues above the forgotten one's offsets. */
    msg *m = pub("again", &none, 100000);
    assert_true(m->offset >= 4);
    msg_unref(m);
}

static void test_sweep_keeps_subscribed_and_history(void **state)
{
    (void)state;
    chan_history_cfg keep = {4, 5000, 0};
    msg_unref(pub("hist", &keep, 10));
    chan *c = chan_lock("subd", 4);
    assert_true(chan_subscriber_add(c));
    chan_unlock(c);
    uint64_t live = chan_live();
    chan_sweep(64, &keep, 3000, 1000); /* history not expired, subscriber present */
    assert_int_equal(chan_live(), live);
    chan_sweep(64, &keep, 6000, 1000); /* history expired: "hist" goes, "subd" stays */
    assert_int_equal(chan_live(), live - 1);
    c = chan_lock("subd", 4);
    assert_true(chan_subscriber_del(c));
    chan_unlock(c);
    chan_sweep(64, &keep, UINT64_MAX / 2, 1000);
    assert_int_equal(chan_live(), live - 2);
}

static void test_budget_evicts_least_recently_published(void **state)
{
    (void)state;
    chan_history_cfg cfg = {10, 0, 0}; /* no inline eviction: the budget call decides */
    char name[32];
    /* g0 is published first, g9 last; then g0 again: the order is g1..g9, g0. */
    for (int g = 0; g < 10; g++) {
        snprintf(name, sizeof name, "lru.%d", g);
        for (int i = 0; i < 3; i++)
            msg_unref(pub(name, &cfg, 100 + (uint64_t)g));
    }
    msg_unref(pub("lru.0", &cfg, 200));
    uint64_t total = chan_history_bytes(), per_msg = total / 31;
    assert_true(total > 0);
    uint64_t ev0 = chan_evictions();
    /* Room for everything but about two groups' worth: lru.1 and lru.2 go. */
    assert_int_equal(chan_enforce_budget(total - 5 * per_msg, 100), 2);
    assert_int_equal(chan_evictions(), ev0 + 2);
    seen s;
    assert_int_equal(replay("lru.1", 0, &cfg, 300, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("lru.2", 1, &cfg, 300, &s), CHAN_REPLAY_TOO_OLD);
    assert_int_equal(replay("lru.3", 0, &cfg, 300, &s), CHAN_REPLAY_OK);
    expect_range(&s, 1, 3);
    assert_int_equal(replay("lru.0", 0, &cfg, 300, &s), CHAN_REPLAY_OK);
    expect_range(&s, 1, 4);
    /* A group with its history evicted still numbers on. */
    msg *m = pub("lru.1", &cfg, 300);
    assert_int_equal(m->offset, 4);
    msg_unref(m);
    /* lru.1 has history again (9 groups); the last one left keeps its newest message */
    assert_int_equal(chan_enforce_budget(0, 1000), 8);
    assert_int_equal(chan_history_bytes(), per_msg);
}

static void test_budget_inline_on_append(void **state)
{
    (void)state;
    chan_history_cfg probe = {100, 0, 0};
    msg_unref(pub("probe", &probe, 1));
    uint64_t per_msg = chan_history_bytes();
    chan_enforce_budget(0, 10);
    /* A budget of ~8 messages: appends keep the total within 1/8 over it. */
    chan_history_cfg cfg = {100, 0, 8 * per_msg};
    char name[32];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "inl.%d", i % 50);
        msg_unref(pub(name, &cfg, 10 + (uint64_t)i));
        assert_true(chan_history_bytes() <= 9 * per_msg + per_msg);
    }
    chan_enforce_budget(0, 1000);
}

static void test_budget_single_hot_group_keeps_newest(void **state)
{
    (void)state;
    chan_history_cfg probe = {1000, 0, 0};
    msg_unref(pub("hot", &probe, 1));
    uint64_t per_msg = chan_history_bytes();
    chan_enforce_budget(0, 10); /* the only group: keeps its newest message */
    assert_int_equal(chan_history_bytes(), per_msg);
    /* one group, 200 messages, a budget of ~20: never wiped, the newest kept */
    chan_history_cfg cfg = {1000, 0, 20 * per_msg};
    for (int i = 0; i < 200; i++)
        msg_unref(pub("hot", &cfg, 10 + (uint64_t)i));
    chan_enforce_budget(cfg.memory, 100);
    assert_true(chan_history_bytes() <= cfg.memory);
    assert_true(chan_history_bytes() >= cfg.memory - per_msg);
    seen s;
    assert_int_equal(replay("hot", 195, &cfg, 500, &s), CHAN_REPLAY_OK);
    expect_range(&s, 196, 201);
    assert_int_equal(replay("hot", 100, &cfg, 500, &s), CHAN_REPLAY_TOO_OLD);
}

static void test_fill_merges_redis_view_with_live(void **state)
{
    (void)state;
    /* a cluster node: records start stale and offsets come from the broker */
    chan_destroy();
    assert_true(chan_init(false));
    chan_history_cfg cfg = {100, 0, 0};
    chan *c = chan_lock("f", 1);
    chan_set_confirmed(c, true);
    assert_false(chan_ready(c));
    seen s;
    memset(&s, 0, sizeof s);
    assert_int_equal(chan_replay(c, 0, &cfg, 1, collect, &s), CHAN_REPLAY_TOO_OLD);
    /* live messages 9 and 10 arrived after our SUBSCRIBE */
    msg *live[2];
    for (int i = 0; i < 2; i++) {
        live[i] = mk("f", "live", 1);
        chan_append_at(c, live[i], 9 + (uint64_t)i, &cfg, 1);
    }
    /* Redis had 4..9 kept when the counter read 9 (9 overlaps the live copy) */
    msg *fetched[6];
    for (int i = 0; i < 6; i++) {
        fetched[i] = mk("f", "kept", 1);
        fetched[i]->offset = 4 + (uint64_t)i;
    }
    chan_fill(c, 9, fetched, 6, &cfg, 1);
    assert_true(chan_ready(c));
    assert_int_equal(chan_last_offset(c), 10);
    chan_unlock(c);
    assert_int_equal(replay("f", 3, &cfg, 1, &s), CHAN_REPLAY_OK);
    expect_range(&s, 4, 10);
    assert_int_equal(replay("f", 2, &cfg, 1, &s), CHAN_REPLAY_TOO_OLD);
    unref_all(fetched, 6);
    unref_all(live, 2);
    /* the last subscriber leaves: stale again, recoveries say too_old */
    c = chan_lock("f", 1);
    chan_mark_stale(c);
    chan_unlock(c);
    assert_int_equal(replay("f", 10, &cfg, 1, &s), CHAN_REPLAY_TOO_OLD);
}

static void test_admit_caps_new_groups(void **state)
{
    (void)state;
    uint64_t live = chan_live();
    chan_unlock(chan_lock("exists", 6));
    int max = (int)live + 1;
    assert_true(chan_admit("exists", 6, max)); /* existing: always */
    assert_false(chan_admit("new-one", 7, max));
    assert_true(chan_admit("new-one", 7, max + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_same_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offsets_per_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offsets_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_fresh_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_growth_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_growth_after_wrap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_ttl_trimmed_on_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_max_lowered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_releases_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_forgets_unused_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_never_repeats_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_keeps_subscribed_and_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_caps_new_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_evicts_least_recently_published, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_budget_inline_on_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_single_hot_group_keeps_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fill_merges_redis_view_with_live, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

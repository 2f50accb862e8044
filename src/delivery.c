#include "delivery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "conn_sse.h"
#include "deflate.h"
#include "envelope.h"
#include "log.h"

#define DELIVERY_INBOX 16384

static void delivery_finish_recoveries(conn *c);

static const delivery_upstream *delivery_up;

void delivery_set_upstream(const delivery_upstream *u) { delivery_up = u; }

bool delivery_clustered(void) { return delivery_up != NULL; }

bool delivery_upstream_up(void) { return delivery_up && delivery_up->up(); }

bool delivery_init(delivery *d, delivery_hub *hub, int id, loop *l, const config **cfg,
                   metrics *m)
{
    if (!inbox_init(&d->in, DELIVERY_INBOX, l) || !groups_init(&d->groups))
        return false;
    d->hub = hub;
    d->cfg = cfg;
    d->loop = l;
    d->m = m;
    atomic_init(&d->check_held, false);
    if (id >= 0 && id < DELIVERY_MAX_WORKERS) {
        hub->v[id] = d;
        if (hub->n <= id)
            hub->n = id + 1;
    }
    return true;
}

void delivery_destroy(delivery *d)
{
    inbox_destroy(&d->in);
    groups_destroy(&d->groups);
    free(d->all);
    free(d->held);
    d->all = d->held = NULL;
}

chan_history_cfg delivery_history_cfg(const delivery *d)
{
    const config *c = *d->cfg;
    return (chan_history_cfg){(size_t)c->history, c->history_ttl_ms, c->history_memory};
}

static bool delivery_grow(void *arrp, uint32_t *cap, uint32_t n)
{
    void **arr = arrp;
    if (n < *cap)
        return true;
    uint32_t nc = *cap ? *cap * 2 : 64;
    void *a = realloc(*arr, sizeof(void *) * nc);
    if (!a)
        return false;
    *arr = a;
    *cap = nc;
    return true;
}

bool delivery_add_all(delivery *d, conn *c)
{
    if (!delivery_grow(&d->all, &d->cap_all, d->nall))
        return false;
    c->all_slot = d->nall;
    c->in_all = true;
    d->all[d->nall++] = c;
    return true;
}

static void delivery_remove_all(delivery *d, conn *c)
{
    conn *last = d->all[--d->nall];
    d->all[c->all_slot] = last;
    last->all_slot = c->all_slot;
    c->in_all = false;
}

/* ---- fan-out ------------------------------------------------------------- */

/* Fan-out slots: one per format, then one per WebSocket format compressed
 * (permessage-deflate is a WebSocket extension: SSE formats have none). */
#define DELIVERY_SLOTS (FORMAT_COUNT + FORMAT_WS_COUNT)

/* The frame a subscriber gets: its format's envelope, and that compressed
 * when it negotiated permessage-deflate (and the payload fits the window it
 * allowed us). Each is built at most once per message and shared; v[] holds
 * them per slot for the whole fan-out. */
static int delivery_frame_slot(delivery *d, msg *m, const conn *c, msg *v[DELIVERY_SLOTS])
{
    unsigned f = c->format;
    if (!v[f] && !(v[f] = f ? envelope_variant(m, (msg_format)f) : m))
        return -1;
    if (f >= FORMAT_WS_COUNT || !c->pmd || !conn_pmd_fits(c, v[f]))
        return (int)f;
    unsigned k = FORMAT_COUNT + f;
    if (!v[k])
        v[k] = deflate_variant(v[f], (*d->cfg)->compression_min_size, d->m);
    return v[k] != v[f] ? (int)k : (int)f;
}

/* The caller holds a reference for the whole loop, and nothing in it can
 * release m (queues only drop messages queued before m), so the references
 * for all the queues are added with one atomic operation per frame at the
 * end. Subscribers asking for an envelope or compression get the message's
 * shared variant. */
static void delivery_fanout(void *ctx, msg *m)
{
    delivery *d = ctx;
    msg *v[DELIVERY_SLOTS] = {m};
    unsigned queued[DELIVERY_SLOTS] = {0};
    if (m->group_len == 0) { /* every subscriber, whatever its groups */
        for (uint32_t i = 0; i < d->nall; i++) {
            conn *c = d->all[i];
            int k = delivery_frame_slot(d, m, c, v);
            if (k >= 0)
                queued[k] += conn_fanout_noref(c, v[k]);
        }
    } else {
        group *g = groups_find(&d->groups, m->group, m->group_len);
        for (uint32_t i = 0; g && i < g->n; i++) {
            group_entry *gm = &g->members[i];
            if (m->offset <= gm->after && m->epoch_gen == gm->after_gen)
                continue; /* already sent by this subscriber's history replay */
            int k = delivery_frame_slot(d, m, gm->c, v);
            if (k >= 0)
                queued[k] += conn_fanout_noref(gm->c, v[k]);
        }
    }
    for (int k = 0; k < DELIVERY_SLOTS; k++)
        if (queued[k]) {
            msg_ref_n(v[k], queued[k]);
            if (k >= FORMAT_COUNT)
                METRIC_ADD(d->m, deflate_deliveries, queued[k]);
        }
}

void delivery_drain(delivery *d) { inbox_drain(&d->in, delivery_fanout, d); }

/* ---- sequencing ---------------------------------------------------------- */

/* Under the group's lock: offset, history, and every inbox in offset order.
 * Local subscribers too go through our own inbox: delivering them directly
 * could overtake an earlier offset of the same group still in the ring. */
static void delivery_sequence(delivery *d, msg *m, bool at, uint64_t offset)
{
    chan *ch = chan_lock(m->group, m->group_len);
    if (!ch) {
        log_msg(LOG_ERROR, "out of memory: publish to '%s' lost", m->group);
        msg_unref(m);
        return;
    }
    chan_history_cfg hc = delivery_history_cfg(d);
    if (at)
        chan_append_at(ch, m, offset, &hc, d->loop->now_ms);
    else
        chan_append(ch, m, &hc, d->loop->now_ms);
    m->epoch = chan_epoch();
    m->epoch_gen = chan_epoch_gen();
    delivery_hub *hub = d->hub;
    for (int i = 0; i < hub->n; i++)
        inbox_push(&hub->v[i]->in, msg_ref(m));
    chan_unlock(ch);
    for (int i = 0; i < hub->n; i++)
        if (hub->v[i] != d)
            inbox_notify(&hub->v[i]->in);
    msg_unref(m);
}

void delivery_deliver_local(delivery *d, msg *m) { delivery_sequence(d, m, false, 0); }

void delivery_deliver_sequenced(delivery *d, msg *m, uint64_t offset)
{
    delivery_sequence(d, m, true, offset);
}

void delivery_publish(delivery *d, msg *m)
{
    METRIC_INC(d->m, messages_published);
    if (delivery_upstream_up())
        delivery_up->publish(m); /* comes back through the broker, with its offset */
    else
        delivery_deliver_local(d, m);
}

/* ---- the cluster hold ---------------------------------------------------- */

bool delivery_hold(delivery *d, conn *c)
{
    if (!delivery_grow(&d->held, &d->cap_held, d->nheld))
        return false;
    d->held[d->nheld++] = c;
    return true;
}

static void delivery_unhold(delivery *d, conn *c)
{
    for (uint32_t i = 0; i < d->nheld; i++)
        if (d->held[i] == c) {
            d->held[i] = d->held[--d->nheld];
            return;
        }
}

void delivery_release_held_all(delivery_hub *hub)
{
    for (int i = 0; i < hub->n; i++) {
        atomic_store(&hub->v[i]->check_held, true);
        inbox_wake(&hub->v[i]->in);
    }
}

/* A held subscriber goes live once the broker confirmed all its groups and
 * their records reached the offsets it resumes from, the broker is down
 * (local delivery only), or it waited long enough. */
static bool delivery_held_ready(delivery *d, conn *c)
{
    if (!delivery_upstream_up() || d->loop->now_ms - c->last_read_ms > 2000)
        return true;
    for (uint16_t i = 0; i < c->nsubs; i++) {
        const conn_sub *s = &c->subs[i];
        group *g = s->g;
        chan *ch = chan_lock(g->name, g->name_len);
        bool ok = !ch || (chan_ready(ch) && (!s->recovering || s->joined ||
                                             chan_last_offset(ch) >= s->since));
        if (ch)
            chan_unlock(ch);
        if (!ok)
            return false;
    }
    return true;
}

void delivery_check_held(delivery *d)
{
    if (!d->nheld || !(atomic_load(&d->check_held) || d->loop->now_ms >= d->loop->next_tick_ms))
        return;
    atomic_store(&d->check_held, false);
    for (uint32_t i = d->nheld; i-- > 0;) {
        conn *c = d->held[i];
        if (c->dead || delivery_held_ready(d, c)) {
            c->hold = false;
            if (!c->dead)
                delivery_finish_recoveries(c);
            if (!c->dead && d->on_release)
                d->on_release(c);
            conn_mark_dirty(c);
            d->held[i] = d->held[--d->nheld];
        }
    }
}

/* ---- subscribe ----------------------------------------------------------- */

/* A replay is taken as a list of references under the group's lock and
 * queued after it is released: building envelopes for a long history must
 * not hold up publishes to the group (or its shard). */
typedef struct delivery_replay {
    msg **v;
    size_t n, cap;
    bool oom;
} delivery_replay;

static void delivery_replay_take(void *arg, msg *m)
{
    delivery_replay *r = arg;
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 64;
        msg **v = realloc(r->v, sizeof *v * nc);
        if (!v) {
            r->oom = true;
            return;
        }
        r->v = v;
        r->cap = nc;
    }
    r->v[r->n++] = msg_ref(m);
}

msg *delivery_frame(conn *c, msg *m)
{
    delivery *d = conn_delivery(c);
    msg *v = c->format ? envelope_variant(m, (msg_format)c->format) : m;
    if (!v || c->format >= FORMAT_WS_COUNT || !c->pmd || !conn_pmd_fits(c, v))
        return v;
    msg *z = deflate_variant(v, (*d->cfg)->compression_min_size, d->m);
    if (z != v)
        METRIC_INC(d->m, deflate_deliveries);
    return z;
}

/* Queues the replay (send) or just lets it go. */
static void delivery_replay_finish(conn *c, delivery_replay *r, bool send)
{
    for (size_t i = 0; i < r->n; i++) {
        msg *v = send ? delivery_frame(c, r->v[i]) : NULL;
        if (v && !c->dead)
            conn_send_consume(c, msg_ref(v), false);
        msg_unref(r->v[i]);
    }
    free(r->v);
}

/* Tells a recovering client that it cannot get a gap-free history and must
 * resync: a text frame (JSON whatever the format) ahead of live messages. */
static void delivery_recovery_failed(conn *c, const char *name, size_t len, const char *reason,
                                 uint64_t last)
{
    char buf[320];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\":\"recovery_failed\",\"group\":\"%.*s\",\"reason\":\"%s\","
                     "\"epoch\":\"%s\",\"offset\":%llu}",
                     (int)len, name, reason, chan_epoch(), (unsigned long long)last);
    if (c->sse) {
        conn_sse_recovery_failed(c, name, len, buf, (size_t)n, last);
        return;
    }
    msg *m = msg_new_frame(MSG_CONTROL, WS_OP_TEXT, buf, (size_t)n);
    if (m)
        conn_send_consume(c, m, false);
}

/* ?joined=1: where a plain join starts, so a client can later resume a group
 * that has delivered nothing to it yet. Same shape as recovery_failed. */
static void delivery_joined_notice(conn *c, const char *name, size_t len, uint64_t last)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\":\"joined\",\"group\":\"%.*s\",\"offset\":%llu,\"epoch\":\"%s\"}",
                     (int)len, name, (unsigned long long)last, chan_epoch());
    msg *m = msg_new_frame(MSG_CONTROL, WS_OP_TEXT, buf, (size_t)n);
    if (m)
        conn_send_consume(c, m, false);
}

/* Leaves a group's process-wide record: the last local subscriber lets the
 * group be forgotten later (chan_sweep) and, in a cluster, unsubscribes the
 * node at the broker. */
static void delivery_chan_leave(const char *name, size_t len)
{
    chan *ch = chan_lock(name, len);
    if (!ch)
        return;
    bool last = chan_subscriber_del(ch);
    if (last && delivery_clustered()) {
        chan_set_confirmed(ch, false);
        chan_mark_stale(ch);
        delivery_up->unsubscribe(name, len);
    }
    chan_unlock(ch);
}

bool delivery_subscribe(conn *c, const char *name, size_t len, bool recover, uint64_t since,
                        bool epoch_ok, bool joined)
{
    delivery *d = conn_delivery(c);
    for (uint16_t i = 0; i < c->nsubs; i++) {
        group *g = c->subs[i].g;
        if (g->name_len == len && memcmp(g->name, name, len) == 0)
            return true; /* a=a,a: one membership, one delivery */
    }
    group *g = groups_get(&d->groups, name, len);
    if (!g)
        return false;
    conn_sub *s = realloc(c->subs, sizeof *s * (c->nsubs + 1u));
    if (!s) {
        groups_release_if_empty(&d->groups, g);
        return false;
    }
    c->subs = s;
    /* Under the group's lock no publish can slip between the replay and the
     * join: everything up to `after` is replayed, everything above it
     * arrives live (the inbox may still hold older ones: skipped). Counting
     * the subscriber here keeps the group's record (and offsets) alive. */
    chan *ch = chan_lock(name, len);
    if (!ch) {
        groups_release_if_empty(&d->groups, g);
        return false;
    }
    bool first = chan_subscriber_add(ch), confirmed = chan_confirmed(ch);
    /* Queued under the lock: a last-leave and a first-join of the same group
     * on two workers reach Redis in the order they happened here. */
    if (first && delivery_clustered())
        delivery_up->subscribe(name, len);
    uint64_t after = chan_last_offset(ch);
    uint32_t after_gen = chan_epoch_gen();
    delivery_replay rp = {0};
    chan_replay_result r = CHAN_REPLAY_OK;
    /* Cluster: a record this node does not follow yet is filled from Redis
     * once our SUBSCRIBE is confirmed. Until then the subscriber is held
     * (no 101) and skips every live message; the replay runs at release
     * (delivery_finish_recoveries) and the join point moves to its end. A record
     * it follows whose last offset is still below `since` is a few messages
     * behind the node the client read them on: the subscriber is held the
     * same way until they arrive (or the hold times out: unknown_offset). */
    bool defer = recover && epoch_ok && delivery_upstream_up() && (!chan_ready(ch) || since > after);
    /* A joined notice needs a position Redis agrees with: an unfilled record
     * is held and skips live messages the same way, and the notice (with the
     * join point) is sent at release. */
    joined = joined && !recover;
    bool defer_joined = joined && delivery_upstream_up() && !chan_ready(ch);
    if (defer || defer_joined)
        after = UINT64_MAX;
    if (recover && epoch_ok && !defer) {
        chan_history_cfg hc = delivery_history_cfg(d);
        r = chan_replay(ch, since, &hc, d->loop->now_ms, delivery_replay_take, &rp);
    }
    chan_unlock(ch);
    if (rp.oom)
        r = CHAN_REPLAY_TOO_OLD; /* a partial replay would be a silent gap */
    delivery_replay_finish(c, &rp, !rp.oom);
    if (joined && !defer_joined)
        delivery_joined_notice(c, name, len, after); /* before any live message: same thread */
    if (joined)
        ; /* joins after `after` (the notice above), or decided at release */
    else if (!recover)
        after = 0; /* a plain join: every message still in the inbox counts */
    else if (defer)
        ; /* decided at release */
    else if (!epoch_ok)
        delivery_recovery_failed(c, name, len, "epoch", after);
    else if (r == CHAN_REPLAY_TOO_OLD)
        delivery_recovery_failed(c, name, len, "too_old", after);
    else if (r == CHAN_REPLAY_FUTURE)
        delivery_recovery_failed(c, name, len, "unknown_offset", after);
    /* A joined notice promises offsets above `after` only, so the inbox's
     * older ones are skipped as after a replay. */
    long slot = groups_add(g, c, after, recover || joined ? after_gen : 0);
    if (slot < 0) {
        delivery_chan_leave(name, len);
        groups_release_if_empty(&d->groups, g);
        return false;
    }
    s[c->nsubs++] = (conn_sub){g, (uint32_t)slot, defer || defer_joined, defer_joined, since};
    if ((!confirmed || defer || defer_joined) && delivery_upstream_up() && !c->hold &&
        delivery_hold(d, c))
        c->hold = true; /* the 101 waits for the broker's SUBSCRIBE (cluster) */
    if ((defer || defer_joined) && !c->hold)
        delivery_finish_recoveries(c); /* cannot wait (out of memory): say too_old now */
    return true;
}

/* Cluster: a held subscriber goes live; first replays what its deferred
 * recoveries ask, from the now filled records (or says too_old), and sends
 * the joined notices it owes. */
static void delivery_finish_recoveries(conn *c)
{
    delivery *d = conn_delivery(c);
    for (uint16_t i = 0; i < c->nsubs && !c->dead; i++) {
        conn_sub *s = &c->subs[i];
        if (!s->recovering)
            continue;
        s->recovering = false;
        group *g = s->g;
        chan *ch = chan_lock(g->name, g->name_len);
        if (s->joined) {
            /* A plain join waited for the record: it starts at its last offset
             * (released unfilled, by timeout or a broker outage, it is the
             * best known; a resume from it then answers too_old, not a gap). */
            uint64_t last = ch ? chan_last_offset(ch) : 0;
            g->members[s->slot].after = last;
            g->members[s->slot].after_gen = chan_epoch_gen();
            if (ch)
                chan_unlock(ch);
            s->joined = false;
            delivery_joined_notice(c, g->name, g->name_len, last);
            continue;
        }
        if (!ch) {
            g->members[s->slot].after = 0; /* live from here; the gap is reported */
            delivery_recovery_failed(c, g->name, g->name_len, "too_old", 0);
            continue;
        }
        chan_history_cfg hc = delivery_history_cfg(d);
        delivery_replay rp = {0};
        chan_replay_result r = chan_replay(ch, s->since, &hc, d->loop->now_ms, delivery_replay_take, &rp);
        uint64_t last = chan_last_offset(ch);
        /* Everything up to `last` is in the replay or was never kept; what is
         * above it arrives live (older ones still in the inbox are skipped). */
        g->members[s->slot].after = last;
        g->members[s->slot].after_gen = chan_epoch_gen();
        chan_unlock(ch);
        if (rp.oom)
            r = CHAN_REPLAY_TOO_OLD;
        delivery_replay_finish(c, &rp, !rp.oom);
        if (r == CHAN_REPLAY_TOO_OLD)
            delivery_recovery_failed(c, g->name, g->name_len, "too_old", last);
        else if (r == CHAN_REPLAY_FUTURE)
            delivery_recovery_failed(c, g->name, g->name_len, "unknown_offset", last);
    }
}

/* Leaves every group (and the broadcast list). */
static void delivery_leave_all(conn *c)
{
    delivery *d = conn_delivery(c);
    for (uint16_t i = 0; i < c->nsubs; i++) {
        group *g = c->subs[i].g;
        delivery_chan_leave(g->name, g->name_len);
        conn *moved = groups_remove(g, c->subs[i].slot);
        if (moved) {
            for (uint16_t k = 0; k < moved->nsubs; k++)
                if (moved->subs[k].g == g)
                    moved->subs[k].slot = c->subs[i].slot;
        }
        groups_release_if_empty(&d->groups, g);
    }
    free(c->subs);
    c->subs = NULL;
    c->nsubs = 0;
    if (c->in_all)
        delivery_remove_all(d, c);
}

void delivery_forget(conn *c)
{
    if (c->hold) {
        delivery_unhold(conn_delivery(c), c);
        c->hold = false;
    }
    delivery_leave_all(c);
}

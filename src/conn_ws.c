/* WebSocket side of a connection: the read path (frames in, events out),
 * streaming publishers, and group membership of subscribers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "chan.h"
#include "conn.h"
#include "conn_sse.h"
#include "deflate.h"
#include "envelope.h"
#include "log.h"
#include "worker.h"

#define CONN_PUB_MIN_CAP 4096
/* Inflated bytes one read event may cost (a few ms of zlib): past it the
 * rest of the read waits for the next loop pass, so a flood of small
 * compressed messages that inflate a thousandfold cannot hold up every other
 * connection of the worker (/healthz included) for the whole read. */
#define CONN_INFLATE_BUDGET (4u << 20)

/* Appends a chunk of a publisher's message. The buffer grows by doubling but
 * never beyond --max-message-size (the reader has already refused larger
 * messages with 1009). */
static bool conn_pub_append(conn *c, const uint8_t *d, size_t len)
{
    msg *m = c->pub;
    size_t have = m ? m->payload_len : 0, need = have + len;
    if (!m || need > m->cap) {
        size_t cap = m && m->cap ? m->cap : CONN_PUB_MIN_CAP;
        while (cap < need)
            cap *= 2;
        size_t max = c->w->cfg->max_message_size;
        if (cap > max && need <= max)
            cap = max;
        msg *n = m ? msg_grow(m, cap) : msg_alloc(cap);
        if (!n)
            return false;
        c->pub = m = n;
    }
    memcpy(msg_payload(m) + have, d, len);
    m->payload_len = (uint32_t)need;
    return true;
}

static void conn_pub_finish(conn *c, uint8_t opcode)
{
    msg *m = c->pub;
    c->pub = NULL;
    if (!m && !(m = msg_alloc(0))) {
        conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return;
    }
    /* Give back the doubling slack of large messages before they are shared. */
    if (m->cap > m->payload_len + CONN_PUB_MIN_CAP)
        m = msg_trim(m, m->payload_len);
    const char *g = c->pub_group;
    msg_finish(m, MSG_DATA, opcode, g, g ? strlen(g) : 0);
    METRIC_INC(&c->w->m, published_ws);
    worker_publish(c->w, m);
}


/* permessage-deflate input: where inflated bytes go, and why a sink stopped. */
typedef struct conn_inflate_ctx {
    conn *c;
    bool text;
    bool keep;        /* a publisher's message: appended to c->pub */
    unsigned fail;    /* close code when the sink stopped */
    uint64_t out;     /* bytes inflated by this call */
} conn_inflate_ctx;

static bool conn_inflate_sink(void *arg, const uint8_t *p, size_t n)
{
    conn_inflate_ctx *x = arg;
    METRIC_ADD(&x->c->w->m, inflate_bytes_out, n);
    x->out += n;
    /* The reader leaves a compressed message's UTF-8 to us: it is checked on
     * the inflated text, failing fast like uncompressed text. */
    if (x->text && !utf8_feed(&x->c->rd->utf8, p, n)) {
        x->fail = WS_CLOSE_BAD_DATA;
        return false;
    }
    if (x->keep && !conn_pub_append(x->c, p, n)) {
        x->fail = WS_CLOSE_INTERNAL;
        return false;
    }
    /* A subscriber's messages go nowhere, yet a small compressed frame can
     * make us inflate up to --max-message-size: every 16 KiB inflated counts
     * as one more frame against --client-frame-rate, so a stream of bombs
     * costs us no more CPU than a stream of frames. The bytes add up across
     * chunks and messages: many messages just under 16 KiB are charged too. */
    if (x->c->role == ROLE_SUB && (x->c->zin_charge += n) >= DEFLATE_CHUNK) {
        x->c->rd->frames += x->c->zin_charge / DEFLATE_CHUNK;
        x->c->zin_charge %= DEFLATE_CHUNK;
        if (!conn_frame_rate_ok(x->c)) {
            x->fail = WS_CLOSE_POLICY;
            return false;
        }
    }
    return true;
}

/* Inflates a chunk of a compressed message (last: its end), adding the bytes
 * inflated to *spent. Subscribers' messages are inflated only to be
 * validated, then dropped, so they cost no memory beyond the inflater. False
 * after closing the connection. */
static bool conn_inflate(conn *c, const uint8_t *p, size_t n, bool last, uint8_t opcode,
                         uint64_t *spent)
{
    if (!c->zin && !(c->zin = deflate_inflater_new(c->pmd_client_bits, c->pmd_fresh))) {
        conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return false;
    }
    METRIC_ADD(&c->w->m, inflate_bytes_in, n);
    conn_inflate_ctx x = {c, opcode == WS_OP_TEXT, c->role == ROLE_PUB, 0, 0};
    deflate_result r =
        deflate_inflate(c->zin, p, n, last, c->w->cfg->max_message_size, conn_inflate_sink, &x);
    *spent += x.out;
    if (r == DEFLATE_OK && last && x.text && !utf8_complete(&c->rd->utf8)) {
        r = DEFLATE_STOPPED;
        x.fail = WS_CLOSE_BAD_DATA;
    }
    if (r == DEFLATE_OK) {
        if (last)
            METRIC_INC(&c->w->m, inflate_messages);
        /* No context survives a message (client_no_context_takeover is in
         * every answer): a subscriber, which rarely sends one, does not keep
         * ~40 KiB of inflater until it leaves. Publishers keep theirs. */
        if (last && c->role != ROLE_PUB) {
            deflate_inflater_free(c->zin);
            c->zin = NULL;
        }
        return true;
    }
    unsigned code = r == DEFLATE_TOO_BIG   ? WS_CLOSE_TOO_BIG
                    : r == DEFLATE_CORRUPT ? WS_CLOSE_BAD_DATA
                    : r == DEFLATE_NOMEM   ? WS_CLOSE_INTERNAL
                                           : x.fail;
    if (code == WS_CLOSE_POLICY)
        METRIC_INC(&c->w->m, rate_limited);
    else if (code != WS_CLOSE_INTERNAL)
        METRIC_INC(&c->w->m, protocol_errors);
    conn_close_ws(c, code,
                  code == WS_CLOSE_TOO_BIG     ? "message too big"
                  : r == DEFLATE_CORRUPT       ? "invalid compressed data"
                  : code == WS_CLOSE_BAD_DATA  ? "invalid UTF-8"
                  : code == WS_CLOSE_POLICY    ? "client frame rate limit"
                                               : "out of memory",
                  false);
    /* The rest of this read is not looked at: the inflater is done. */
    deflate_inflater_free(c->zin);
    c->zin = NULL;
    return false;
}

/* --client-frame-rate: subscribers only send control frames in normal use;
 * a flood of frames costs us CPU for nothing. Publishers send data at any
 * rate, but their control frames (pings, pongs) are limited the same way:
 * each asks something of us, and so does a TLS handshake message after the
 * handshake (a KeyUpdate: ctl_frames counts those for every connection).
 * Counted per one-second window. */
bool conn_frame_rate_ok(conn *c)
{
    int rate = c->w->cfg->client_frame_rate;
    if (rate <= 0)
        return true;
    uint64_t now = c->w->now_ms;
    uint32_t count = (c->role == ROLE_SUB && c->rd ? (uint32_t)c->rd->frames : 0) + c->ctl_frames;
    if (now - c->rate_window_ms >= 1000) {
        c->rate_window_ms = now;
        c->rate_frames = count;
        return true;
    }
    return (uint32_t)(count - c->rate_frames) <= (uint32_t)rate; /* mod 2^32: wrap-safe */
}

/* The read's inflate budget is spent: the unread rest waits aside with
 * reading paused, the way pipelined HTTP requests wait for a flush, and
 * conn_flush_done takes it up again. Asking for writability (level
 * triggered: at once when the socket has room) brings that on the next loop
 * pass, after the worker's other events, with no new socket data needed. */
static void conn_ws_yield(conn *c, const uint8_t *p, size_t n)
{
    if (!conn_keep_pending(c, p, n)) {
        conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return;
    }
    c->read_paused = true;
    if (worker_epoll_mod(c->w, c, true) != 0) {
        c->read_paused = false;
        conn_take_pending(c, NULL);
        conn_close_ws(c, WS_CLOSE_INTERNAL, "internal error", false);
        return;
    }
    c->want_out = true;
}

/* The reader for this read: limits as configured now (a reader released
 * between messages takes up a changed --max-message-size with the next). */
static bool conn_ws_reader(conn *c)
{
    if (c->rd)
        return true;
    if (!(c->rd = malloc(sizeof *c->rd)))
        return false;
    METRIC_ADD(&c->w->m, conn_memory, sizeof *c->rd);
    ws_reader_init(c->rd, c->w->cfg->max_message_size);
    if (c->pmd)
        ws_reader_allow_rsv1(c->rd);
    return true;
}

/* A subscriber between messages gives its reader back; its frame count
 * carries on in ctl_frames (conn_frame_rate_ok adds the two). Publishers
 * keep theirs: they are few, and read often. */
static void conn_ws_reader_rest(conn *c)
{
    if (c->rd && c->role == ROLE_SUB && ws_reader_at_rest(c->rd)) {
        c->ctl_frames += (uint32_t)c->rd->frames;
        METRIC_SUB(&c->w->m, conn_memory, sizeof *c->rd);
        free(c->rd);
        c->rd = NULL;
    }
}

static void conn_ws_feed(conn *c, uint8_t *p, size_t n);

void conn_ws_process(conn *c, uint8_t *p, size_t n)
{
    if (!conn_ws_reader(c)) {
        conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return;
    }
    conn_ws_feed(c, p, n);
    conn_ws_reader_rest(c);
}

static void conn_ws_feed(conn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    uint64_t spent = 0; /* inflated by this read */
    while (!c->dead) {
        if (spent >= CONN_INFLATE_BUDGET && off < n) {
            conn_ws_yield(c, p + off, n - off);
            return;
        }
        ws_event ev;
        off += ws_reader_feed(c->rd, p + off, n - off, &ev);
        bool open = c->state == CONN_WS;
        if ((ev.type == WS_EV_PING || ev.type == WS_EV_PONG) && c->role != ROLE_SUB)
            c->ctl_frames++; /* a subscriber's are in rd.frames already */
        if (open && !conn_frame_rate_ok(c)) {
            METRIC_INC(&c->w->m, rate_limited);
            conn_close_ws(c, WS_CLOSE_POLICY, "client frame rate limit", false);
            return;
        }
        switch (ev.type) {
        case WS_EV_NONE:
            if (off >= n)
                return;
            break;
        case WS_EV_DATA:
            if (ev.compressed) {
                if (open && !conn_inflate(c, ev.data, ev.len, false, ev.opcode, &spent))
                    return;
                break;
            }
            /* Subscribers' data messages are validated by the reader and
             * dropped: they have nowhere to go. */
            if (open && c->role == ROLE_PUB && !conn_pub_append(c, ev.data, ev.len)) {
                log_msg(LOG_WARN, "out of memory assembling a message");
                conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory", false);
            }
            break;
        case WS_EV_MESSAGE_END:
            if (open && ev.compressed && !conn_inflate(c, NULL, 0, true, ev.opcode, &spent))
                return;
            if (open && c->role == ROLE_PUB)
                conn_pub_finish(c, ev.opcode);
            break;
        case WS_EV_PING:
            if (open && c->q.mem + conn_tls_pending(c) > c->w->cfg->queue_limit) {
                /* Pings from a client that does not read what we send: the
                 * same bound as for any slow consumer. */
                METRIC_INC(&c->w->m, slow_consumer_closes);
                conn_close_ws(c, WS_CLOSE_POLICY, "slow consumer", false);
                return;
            }
            if (open)
                conn_send_pong(c, ev.data, ev.len);
            break;
        case WS_EV_PONG:
            break;
        case WS_EV_CLOSE:
            /* Echo the peer's code; an empty close gets 1000. */
            conn_close_ws(c, ev.code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : ev.code, NULL,
                          false);
            return;
        case WS_EV_ERROR:
            METRIC_INC(&c->w->m, protocol_errors);
            conn_close_ws(c, ev.code,
                          ev.code == WS_CLOSE_TOO_BIG   ? "message too big"
                          : ev.code == WS_CLOSE_BAD_DATA ? "invalid UTF-8"
                                                         : "protocol error",
                          false);
            return;
        }
    }
}

/* A replay is taken as a list of references under the group's lock and
 * queued after it is released: building envelopes for a long history must
 * not hold up publishes to the group (or its shard). */
typedef struct conn_replay {
    msg **v;
    size_t n, cap;
    bool oom;
} conn_replay;

static void conn_replay_take(void *arg, msg *m)
{
    conn_replay *r = arg;
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

msg *conn_frame(conn *c, msg *m)
{
    msg *v = c->format ? envelope_variant(m, (msg_format)c->format) : m;
    if (!v || c->format >= FORMAT_WS_COUNT || !c->pmd || !conn_pmd_fits(c, v))
        return v;
    msg *z = deflate_variant(v, c->w->cfg->compression_min_size, &c->w->m);
    if (z != v)
        METRIC_INC(&c->w->m, deflate_deliveries);
    return z;
}

/* Queues the replay (send) or just lets it go. */
static void conn_replay_finish(conn *c, conn_replay *r, bool send)
{
    for (size_t i = 0; i < r->n; i++) {
        msg *v = send ? conn_frame(c, r->v[i]) : NULL;
        if (v && !c->dead)
            conn_send(c, msg_ref(v), false);
        msg_unref(r->v[i]);
    }
    free(r->v);
}

/* Tells a recovering client that it cannot get a gap-free history and must
 * resync: a text frame (JSON whatever the format) ahead of live messages. */
static void conn_recovery_failed(conn *c, const char *name, size_t len, const char *reason,
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
        conn_send(c, m, false);
}

/* ?joined=1: where a plain join starts, so a client can later resume a group
 * that has delivered nothing to it yet. Same shape as recovery_failed. */
static void conn_joined_notice(conn *c, const char *name, size_t len, uint64_t last)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\":\"joined\",\"group\":\"%.*s\",\"offset\":%llu,\"epoch\":\"%s\"}",
                     (int)len, name, (unsigned long long)last, chan_epoch());
    msg *m = msg_new_frame(MSG_CONTROL, WS_OP_TEXT, buf, (size_t)n);
    if (m)
        conn_send(c, m, false);
}

/* Leaves a group's process-wide record: the last local subscriber lets the
 * group be forgotten later (chan_sweep) and, in a cluster, unsubscribes the
 * node at the broker. */
static void conn_chan_leave(const char *name, size_t len)
{
    chan *ch = chan_lock(name, len);
    if (!ch)
        return;
    bool last = chan_subscriber_del(ch);
    if (last && broker_enabled()) {
        chan_set_confirmed(ch, false);
        chan_mark_stale(ch);
        broker_unsubscribe(name, len);
    }
    chan_unlock(ch);
}

static bool conn_subscribe_at(conn *c, const char *name, size_t len, bool recover,
                              uint64_t since, bool epoch_ok, bool joined)
{
    for (uint16_t i = 0; i < c->nsubs; i++) {
        group *g = c->subs[i].g;
        if (g->name_len == len && memcmp(g->name, name, len) == 0)
            return true; /* a=a,a: one membership, one delivery */
    }
    group *g = groups_get(&c->w->groups, name, len);
    if (!g)
        return false;
    conn_sub *s = realloc(c->subs, sizeof *s * (c->nsubs + 1u));
    if (!s) {
        groups_release_if_empty(&c->w->groups, g);
        return false;
    }
    c->subs = s;
    /* Under the group's lock no publish can slip between the replay and the
     * join: everything up to `after` is replayed, everything above it
     * arrives live (the inbox may still hold older ones: skipped). Counting
     * the subscriber here keeps the group's record (and offsets) alive. */
    chan *ch = chan_lock(name, len);
    if (!ch) {
        groups_release_if_empty(&c->w->groups, g);
        return false;
    }
    bool first = chan_subscriber_add(ch), confirmed = chan_confirmed(ch);
    /* Queued under the lock: a last-leave and a first-join of the same group
     * on two workers reach Redis in the order they happened here. */
    if (first && broker_enabled())
        broker_subscribe(name, len);
    uint64_t after = chan_last_offset(ch);
    uint32_t after_gen = chan_epoch_gen();
    conn_replay rp = {0};
    chan_replay_result r = CHAN_REPLAY_OK;
    /* Cluster: a record this node does not follow yet is filled from Redis
     * once our SUBSCRIBE is confirmed. Until then the subscriber is held
     * (no 101) and skips every live message; the replay runs at release
     * (conn_finish_recoveries) and the join point moves to its end. */
    bool defer = recover && epoch_ok && broker_enabled() && broker_up() && !chan_ready(ch);
    /* A joined notice needs a position Redis agrees with: an unfilled record
     * is held and skips live messages the same way, and the notice (with the
     * join point) is sent at release. */
    joined = joined && !recover;
    bool defer_joined = joined && broker_enabled() && broker_up() && !chan_ready(ch);
    if (defer || defer_joined)
        after = UINT64_MAX;
    if (recover && epoch_ok && !defer) {
        chan_history_cfg hc = worker_history_cfg(c->w);
        r = chan_replay(ch, since, &hc, c->w->now_ms, conn_replay_take, &rp);
    }
    chan_unlock(ch);
    if (rp.oom)
        r = CHAN_REPLAY_TOO_OLD; /* a partial replay would be a silent gap */
    conn_replay_finish(c, &rp, !rp.oom);
    if (joined && !defer_joined)
        conn_joined_notice(c, name, len, after); /* before any live message: same thread */
    if (joined)
        ; /* joins after `after` (the notice above), or decided at release */
    else if (!recover)
        after = 0; /* a plain join: every message still in the inbox counts */
    else if (defer)
        ; /* decided at release */
    else if (!epoch_ok)
        conn_recovery_failed(c, name, len, "epoch", after);
    else if (r == CHAN_REPLAY_TOO_OLD)
        conn_recovery_failed(c, name, len, "too_old", after);
    else if (r == CHAN_REPLAY_FUTURE)
        conn_recovery_failed(c, name, len, "unknown_offset", after);
    /* A joined notice promises offsets above `after` only, so the inbox's
     * older ones are skipped as after a replay. */
    long slot = groups_add(g, c, after, recover || joined ? after_gen : 0);
    if (slot < 0) {
        conn_chan_leave(name, len);
        groups_release_if_empty(&c->w->groups, g);
        return false;
    }
    s[c->nsubs++] = (conn_sub){g, (uint32_t)slot, defer || defer_joined, defer_joined, since};
    if (broker_enabled() && (!confirmed || defer || defer_joined) && broker_up() && !c->hold &&
        worker_hold(c->w, c))
        c->hold = true; /* the 101 waits for the broker's SUBSCRIBE (cluster) */
    if ((defer || defer_joined) && !c->hold)
        conn_finish_recoveries(c); /* cannot wait (out of memory): say too_old now */
    return true;
}

bool conn_subscribe(conn *c, const char *name, size_t len, bool recover, uint64_t since,
                    bool epoch_ok)
{
    return conn_subscribe_at(c, name, len, recover, since, epoch_ok, false);
}

bool conn_subscribe_joined(conn *c, const char *name, size_t len, bool recover, uint64_t since,
                           bool epoch_ok)
{
    return conn_subscribe_at(c, name, len, recover, since, epoch_ok, true);
}

void conn_finish_recoveries(conn *c)
{
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
            conn_joined_notice(c, g->name, g->name_len, last);
            continue;
        }
        if (!ch) {
            g->members[s->slot].after = 0; /* live from here; the gap is reported */
            conn_recovery_failed(c, g->name, g->name_len, "too_old", 0);
            continue;
        }
        chan_history_cfg hc = worker_history_cfg(c->w);
        conn_replay rp = {0};
        chan_replay_result r = chan_replay(ch, s->since, &hc, c->w->now_ms, conn_replay_take, &rp);
        uint64_t last = chan_last_offset(ch);
        /* Everything up to `last` is in the replay or was never kept; what is
         * above it arrives live (older ones still in the inbox are skipped). */
        g->members[s->slot].after = last;
        g->members[s->slot].after_gen = chan_epoch_gen();
        chan_unlock(ch);
        if (rp.oom)
            r = CHAN_REPLAY_TOO_OLD;
        conn_replay_finish(c, &rp, !rp.oom);
        if (r == CHAN_REPLAY_TOO_OLD)
            conn_recovery_failed(c, g->name, g->name_len, "too_old", last);
        else if (r == CHAN_REPLAY_FUTURE)
            conn_recovery_failed(c, g->name, g->name_len, "unknown_offset", last);
    }
}

void conn_unsubscribe_all(conn *c)
{
    for (uint16_t i = 0; i < c->nsubs; i++) {
        group *g = c->subs[i].g;
        conn_chan_leave(g->name, g->name_len);
        conn *moved = groups_remove(g, c->subs[i].slot);
        if (moved) {
            for (uint16_t k = 0; k < moved->nsubs; k++)
                if (moved->subs[k].g == g)
                    moved->subs[k].slot = c->subs[i].slot;
        }
        groups_release_if_empty(&c->w->groups, g);
    }
    free(c->subs);
    c->subs = NULL;
    c->nsubs = 0;
    if (c->in_all)
        worker_remove_all(c->w, c);
}

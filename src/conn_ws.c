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
#include "delivery.h"
#include "envelope.h"
#include "log.h"

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
        size_t max = c->env->cfg->max_message_size;
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
    METRIC_INC(c->env->m, published_ws);
    delivery_publish(c->env->dl, m);
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
    METRIC_ADD(x->c->env->m, inflate_bytes_out, n);
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
    METRIC_ADD(c->env->m, inflate_bytes_in, n);
    conn_inflate_ctx x = {c, opcode == WS_OP_TEXT, c->role == ROLE_PUB, 0, 0};
    deflate_result r =
        deflate_inflate(c->zin, p, n, last, c->env->cfg->max_message_size, conn_inflate_sink, &x);
    *spent += x.out;
    if (r == DEFLATE_OK && last && x.text && !utf8_complete(&c->rd->utf8)) {
        r = DEFLATE_STOPPED;
        x.fail = WS_CLOSE_BAD_DATA;
    }
    if (r == DEFLATE_OK) {
        if (last)
            METRIC_INC(c->env->m, inflate_messages);
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
        METRIC_INC(c->env->m, rate_limited);
    else if (code != WS_CLOSE_INTERNAL)
        METRIC_INC(c->env->m, protocol_errors);
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
    int rate = c->env->cfg->client_frame_rate;
    if (rate <= 0)
        return true;
    uint64_t now = c->env->loop->now_ms;
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
    if (conn_watch(c, true) != 0) {
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
    METRIC_ADD(c->env->m, conn_memory, sizeof *c->rd);
    ws_reader_init(c->rd, c->env->cfg->max_message_size);
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
        METRIC_SUB(c->env->m, conn_memory, sizeof *c->rd);
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
            METRIC_INC(c->env->m, rate_limited);
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
            if (open && c->q.mem + transport_pending(&c->t) > c->env->cfg->queue_limit) {
                /* Pings from a client that does not read what we send: the
                 * same bound as for any slow consumer. */
                METRIC_INC(c->env->m, slow_consumer_closes);
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
            METRIC_INC(c->env->m, protocol_errors);
            conn_close_ws(c, ev.code,
                          ev.code == WS_CLOSE_TOO_BIG   ? "message too big"
                          : ev.code == WS_CLOSE_BAD_DATA ? "invalid UTF-8"
                                                         : "protocol error",
                          false);
            return;
        }
    }
}

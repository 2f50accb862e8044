#include "conn.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "conn_sse.h"
#include "deflate.h"
#include "log.h"

/* An idle connection's size is herald's memory per client: SSE (sse) and
 * permessage-deflate (zin, pmd bits) together must not grow it. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(conn) <= 240, "struct conn grew past 240 bytes");
#endif

#define CONN_IOV 128
#define CONN_DRAIN_MS 2000   /* how long we wait for the peer's EOF after our close */
/* Pipelined HTTP requests are parsed only while fewer response bytes than
 * this wait: a client that sends requests without reading the answers must
 * not make us queue responses without bound. */
#define CONN_HTTP_BACKLOG 65536

static void conn_on_readable(conn *c);

/* The loop's entry point: writable first (a flush frees queue room), then
 * readable. */
static void conn_on_io(loop_handler *h, uint32_t events)
{
    conn *c = (conn *)h;
    if (c->dead)
        return;
    if (events & EPOLLOUT)
        conn_flush(c);
    if (!c->dead && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        conn_on_readable(c);
}

void conn_mark_dirty(conn *c)
{
    if (c->dirty || c->dead)
        return;
    conn_env *e = c->env;
    c->dirty = true;
    c->next_dirty = NULL;
    if (e->dirty)
        e->dirty_tail->next_dirty = c;
    else
        e->dirty = c;
    e->dirty_tail = c;
}

int conn_watch(conn *c, bool want_out)
{
    return loop_mod(c->env->loop, c->t.fd, &c->io,
                    (c->read_paused ? 0 : EPOLLIN) | (want_out ? EPOLLOUT : 0));
}

struct delivery *conn_delivery(conn *c) { return c->env->dl; }

static bool conn_register(conn_env *e, conn *c)
{
    if (e->nconns == e->cap_conns) {
        uint32_t nc = e->cap_conns ? e->cap_conns * 2 : 64;
        conn **a = realloc(e->conns, sizeof *a * nc);
        if (!a)
            return false;
        e->conns = a;
        e->cap_conns = nc;
    }
    c->slot = e->nconns;
    e->conns[e->nconns++] = c;
    return true;
}

static void conn_unregister(conn_env *e, conn *c)
{
    conn *last = e->conns[--e->nconns];
    e->conns[c->slot] = last;
    last->slot = c->slot;
}

/* A round ends with the connection that was last on the list when it began:
 * one marked dirty again after its write waits for the next round, behind
 * those still waiting in this one. round_end stays on the list (and is not
 * freed: conn_env_pass_end spares dirty connections) until it is written. */
uint32_t conn_flush_dirty(conn_env *e, uint64_t deadline_ns, bool *round_done)
{
    conn *c;
    uint32_t n = 0;
    *round_done = false;
    if (!e->round_end)
        e->round_end = e->dirty_tail;
    while ((c = e->dirty)) {
        e->dirty = c->next_dirty;
        c->dirty = false;
        if (!c->dead) {
            conn_flush(c);
            n++;
        }
        if (c == e->round_end) {
            e->round_end = NULL;
            *round_done = true;
            break;
        }
        /* After every write: one write can be long (a backlog of megabytes,
         * TLS), and a vDSO clock read is ~1 % of a loopback writev. */
        if (loop_clock_ns() >= deadline_ns)
            break;
    }
    if (!e->dirty)
        e->dirty_tail = NULL;
    return n;
}

/* Every pass, whether or not it wrote (EPOLLOUT writes release messages
 * too): the release batch is applied, and destroyed connections are freed --
 * except those still on the dirty list (the round has not reached them yet):
 * they wait. */
void conn_env_pass_end(conn_env *e)
{
    msg_batch_flush(&e->release);
    conn *c, *keep = NULL;
    while ((c = e->graveyard)) {
        e->graveyard = c->next_dead;
        if (c->dirty) {
            c->next_dead = keep;
            keep = c;
        } else {
            conn_free(c);
        }
    }
    e->graveyard = keep;
}

void conn_shed_largest(conn_env *e, size_t min, const char *reason)
{
    conn *big = NULL;
    for (uint32_t i = 0; i < e->nconns; i++) {
        conn *c = e->conns[i];
        if (c->state == CONN_WS && c->q.mem > min && (!big || c->q.mem > big->q.mem))
            big = c;
    }
    if (big)
        conn_shed(big, reason);
}

void conn_env_cleanup(conn_env *e)
{
    for (uint32_t i = e->nconns; i-- > 0;)
        conn_destroy(e->conns[i]);
    for (conn *c = e->dirty; c; c = c->next_dirty)
        c->dirty = false;
    e->dirty = e->dirty_tail = e->round_end = NULL;
    conn_env_pass_end(e);
    free(e->conns);
    e->conns = NULL;
}

conn *conn_new(conn_env *w, int fd)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->io.on_io = conn_on_io;
    c->env = w;
    c->state = CONN_HTTP;
    c->keepalive = true;
    c->last_read_ms = w->loop->now_ms;
    c->last_progress_ms = w->loop->now_ms;
    if (!transport_open(&c->t, fd, w->tls, &c->ctl_frames)) {
        close(fd);
        free(c);
        return NULL;
    }
    if (!conn_register(w, c)) {
        transport_close(&c->t); /* closes fd */
        free(c);
        return NULL;
    }
    METRIC_INC(w->m, connections_open);
    METRIC_INC(w->m, connections_accepted);
    METRIC_ADD(w->m, conn_memory, sizeof *c);
    return c;
}

/* The queue's totals before a change, so the worker's gauges (bytes to
 * write, memory charged) follow it without a copy kept per connection. */
typedef struct conn_qsnap {
    size_t bytes, mem;
    uint32_t cap;
} conn_qsnap;

static inline conn_qsnap conn_snap(const conn *c)
{
    return (conn_qsnap){c->q.bytes, c->q.mem, c->q.cap};
}

static void conn_gauge(_Atomic uint64_t *g, size_t before, size_t after)
{
    if (after > before)
        metrics_add(g, after - before);
    else if (after < before)
        metrics_sub(g, before - after);
}

static void conn_account(conn *c, conn_qsnap before)
{
    conn_gauge(&c->env->m->queued_bytes, before.bytes, c->q.bytes);
    conn_gauge(&c->env->m->queue_memory, before.mem, c->q.mem);
    conn_gauge(&c->env->m->queue_arrays, before.cap * sizeof(msg *), c->q.cap * sizeof(msg *));
}

/* Queues m, taking over its reference; false (reference kept by the caller)
 * when the queue cannot grow, in which case the connection is aborted. */
bool conn_queue_noref(conn *c, msg *m, bool urgent)
{
    if (outq_empty(&c->q))
        c->last_progress_ms = c->env->loop->now_ms;
    conn_qsnap before = conn_snap(c);
    if (!(urgent ? outq_push_urgent(&c->q, m) : outq_push(&c->q, m))) {
        log_msg(LOG_WARN, "out of memory queueing for fd %d", c->t.fd);
        conn_abort(c);
        return false;
    }
    conn_account(c, before);
    conn_mark_dirty(c);
    return true;
}

bool conn_send_consume(conn *c, msg *m, bool urgent)
{
    if (c->sse && m->kind == MSG_DATA)
        return conn_sse_send_consume(c, m); /* a replayed event: its id line goes first */
    if (conn_queue_noref(c, m, urgent))
        return true;
    msg_unref(m);
    return false;
}

void conn_send_pong(conn *c, const void *payload, size_t n)
{
    msg *m = msg_new_frame(MSG_CONTROL, WS_OP_PONG, payload, n);
    if (!m) {
        conn_abort(c);
        return;
    }
    conn_qsnap before = conn_snap(c);
    if (outq_replace_control(&c->q, WS_OP_PONG, m)) {
        conn_account(c, before);
        METRIC_INC(c->env->m, pongs_coalesced);
        return;
    }
    conn_send_consume(c, m, true);
}

void conn_close_after_flush(conn *c)
{
    c->close_after_flush = true;
    if (c->state != CONN_DRAIN)
        c->state = CONN_CLOSING;
    c->deadline_ms = c->env->loop->now_ms + c->env->cfg->write_timeout_ms + CONN_DRAIN_MS;
    conn_mark_dirty(c);
}

void conn_close_ws(conn *c, unsigned code, const char *reason, bool after_data)
{
    if (c->sse) {
        conn_sse_close(c, after_data); /* no close frame: the stream just ends */
        return;
    }
    if (c->state != CONN_WS)
        return; /* a close is already on its way */
    if (!after_data) {
        conn_qsnap before = conn_snap(c);
        uint32_t dropped = outq_drop_unstarted_data(&c->q);
        conn_account(c, before);
        if (dropped && c->env->cfg->slow_policy == SLOW_DROP_OLDEST)
            METRIC_ADD(c->env->m, messages_dropped, dropped);
    }
    msg *m = msg_new_close(code, reason);
    if (!m) {
        conn_abort(c);
        return;
    }
    if (!conn_send_consume(c, m, false))
        return;
    conn_close_after_flush(c);
}

void conn_shed(conn *c, const char *reason)
{
    if (c->state != CONN_WS)
        return;
    if (c->env->cfg->slow_policy == SLOW_CLOSE) {
        METRIC_INC(c->env->m, slow_consumer_closes);
        conn_close_ws(c, WS_CLOSE_POLICY, reason, false);
        return;
    }
    if (c->sse) {
        METRIC_ADD(c->env->m, messages_dropped, conn_sse_drop_unsent(c));
        return;
    }
    conn_qsnap before = conn_snap(c);
    uint32_t dropped = outq_drop_unstarted_data(&c->q);
    conn_account(c, before);
    METRIC_ADD(c->env->m, messages_dropped, dropped);
}

uint32_t conn_drop_prefixed(conn *c, size_t room, uint8_t prefix_op)
{
    conn_qsnap before = conn_snap(c);
    uint32_t n = 0;
    while ((room == SIZE_MAX || c->q.mem + room > c->env->cfg->queue_limit) &&
           outq_drop_oldest_data_prefixed(&c->q, prefix_op))
        n++;
    conn_account(c, before);
    return n;
}

uint32_t conn_cut_prefixed(conn *c, uint8_t prefix_op)
{
    conn_qsnap before = conn_snap(c);
    uint32_t n = outq_cut_at_unstarted_data(&c->q, prefix_op);
    conn_account(c, before);
    return n;
}

bool conn_fanout_noref(conn *c, msg *m)
{
    if (c->sse)
        return conn_sse_fanout_noref(c, m);
    if (c->state != CONN_WS || c->dead)
        return false;
    const config *cfg = c->env->cfg;
    /* TLS records already encrypted count with the queue: one rule for both. */
    size_t cost = outq_cost(m) + transport_pending(&c->t);
    if (c->q.mem + cost > cfg->queue_limit && !outq_empty(&c->q)) {
        if (cfg->slow_policy == SLOW_CLOSE) {
            conn_shed(c, "slow consumer");
            return false;
        }
        uint64_t dropped = 0;
        conn_qsnap before = conn_snap(c);
        while (c->q.mem + cost > cfg->queue_limit && outq_drop_oldest_data(&c->q))
            dropped++;
        conn_account(c, before);
        METRIC_ADD(c->env->m, messages_dropped, dropped);
    }
    /* No reference taken here: the fan-out adds them all at once. */
    return conn_queue_noref(c, m, false);
}

static void conn_flush_done(conn *c);

static void conn_after_write(conn *c, const outq_done *done)
{
    conn_env *w = c->env;
    if (done->bytes) {
        c->last_progress_ms = w->loop->now_ms;
        METRIC_ADD(w->m, bytes_out, done->bytes);
    }
    if (done->data_msgs) {
        METRIC_ADD(w->m, deliveries, done->data_msgs);
        if (c->sse)
            METRIC_ADD(w->m, deliveries_sse, done->data_msgs);
    }
}

static uint64_t conn_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Stops watching for writability: a level-triggered EPOLLOUT left on while
 * we choose not to write would spin the loop. */
static void conn_quiet(conn *c)
{
    if (c->want_out && conn_watch(c, false) == 0)
        c->want_out = false;
}

static void conn_wait_writable(conn *c)
{
    if (!c->want_out && conn_watch(c, true) == 0)
        c->want_out = true;
}

/* One path for every transport: the transport's own backlog first (TLS
 * records), then the queue gathered into iovecs, until the socket is full
 * or the queue empty. */
void conn_flush(conn *c)
{
    if (c->hold) {
        conn_quiet(c);
        return; /* delivery_check_held marks it dirty again when released */
    }
    struct iovec iov[CONN_IOV];
    for (;;) {
        size_t held = transport_pending(&c->t);
        int rc = transport_flush(&c->t);
        if (transport_pending(&c->t) < held)
            c->last_progress_ms = c->env->loop->now_ms;
        if (rc < 0) {
            conn_destroy(c); /* EPIPE, ECONNRESET: the peer is gone */
            return;
        }
        if (rc == 0) {
            conn_wait_writable(c);
            return;
        }
        if (outq_empty(&c->q))
            break;
        int n = outq_iov(&c->q, iov, CONN_IOV);
        ssize_t r = transport_writev(&c->t, iov, n);
        if (r == TRANSPORT_AGAIN) {
            conn_wait_writable(c);
            return;
        }
        if (r == TRANSPORT_NOT_READY) { /* the handshake must progress first: reads wake us */
            conn_quiet(c);
            return;
        }
        if (r < 0) {
            conn_destroy(c);
            return;
        }
        outq_done done = {.lat = c->env->m, .release = &c->env->release, .now_us = conn_now_us()};
        conn_qsnap before = conn_snap(c);
        outq_consume(&c->q, (size_t)r, &done);
        conn_account(c, before);
        conn_after_write(c, &done);
        if (done.data_msgs && c->t.tls && !c->sse)
            METRIC_ADD(c->env->m, deliveries_tls, done.data_msgs);
    }
    conn_flush_done(c);
}

/* The queue is empty: stop watching for writability and finish a close. */
static void conn_flush_done(conn *c)
{
    if (c->read_paused && !c->dead && c->close_after_flush) {
        /* Closing (shutdown) while requests waited: they will not be read. */
        c->read_paused = false;
        conn_take_pending(c, NULL);
    } else if (c->read_paused && !c->dead) {
        /* Answers are out: take up the pipelined requests that waited. */
        c->read_paused = false;
        c->last_read_ms = c->env->loop->now_ms; /* we were the ones behind, not the client */
        c->want_out = false;
        conn_watch(c, false);
        size_t n = conn_take_pending(c, c->env->scratch);
        if (n)
            conn_process(c, c->env->scratch, n);
        /* TLS may hold decrypted bytes epoll cannot see (reading stopped on
         * an inflate budget, conn_ws_yield): read them now. */
        if (!c->dead && !c->read_paused && transport_buffered(&c->t))
            conn_on_readable(c);
        return;
    }
    conn_quiet(c);
    if (c->close_after_flush && c->state != CONN_DRAIN) {
        /* Half-close and wait for the peer's EOF: closing at once could turn
         * unread input into an RST that destroys the frames just written. */
        int rc = transport_shutdown(&c->t);
        if (rc < 0) {
            conn_destroy(c);
            return;
        }
        if (rc == 0) { /* socket full: finish when writable */
            conn_wait_writable(c);
            return;
        }
        c->state = CONN_DRAIN;
        c->deadline_ms = c->env->loop->now_ms + CONN_DRAIN_MS;
    }
}

bool conn_keep_pending(conn *c, const uint8_t *p, size_t n)
{
    c->pend = malloc(n);
    if (!c->pend)
        return false;
    memcpy(c->pend, p, n);
    c->pend_len = (uint32_t)n;
    METRIC_ADD(c->env->m, conn_memory, n);
    return true;
}

size_t conn_take_pending(conn *c, uint8_t *dst)
{
    size_t n = c->pend_len;
    if (dst && n)
        memcpy(dst, c->pend, n);
    free(c->pend);
    METRIC_SUB(c->env->m, conn_memory, n);
    c->pend = NULL;
    c->pend_len = 0;
    return n;
}

/* Keeps the unparsed input aside and stops reading until the queue drains
 * (conn_flush_done resumes). */
static void conn_pause_reading(conn *c, const uint8_t *p, size_t n)
{
    if (!conn_keep_pending(c, p, n)) {
        conn_abort(c);
        return;
    }
    c->read_paused = true;
    conn_watch(c, c->want_out);
}

void conn_process(conn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n && !c->dead) {
        size_t used = 0;
        switch (c->state) {
        case CONN_HTTP:
            if (c->q.bytes > CONN_HTTP_BACKLOG) {
                conn_pause_reading(c, p + off, n - off);
                return;
            }
            conn_http_process(c, p + off, n - off, &used);
            break;
        case CONN_HTTP_BODY:
            conn_http_body(c, p + off, n - off, &used);
            break;
        case CONN_WS:
        case CONN_CLOSING:
            if (c->role == ROLE_HTTP || c->sse)
                return; /* an HTTP error is on its way, or an SSE client: ignore the rest */
            conn_ws_process(c, p + off, n - off);
            return;
        default:
            return; /* DRAIN: discard */
        }
        if (used == 0)
            return; /* parked: partial head saved, or waiting for a flush */
        off += used;
    }
}

/* Reads into buf: > 0 bytes, 0 end of stream, -1 nothing now, -2 error. */
static ssize_t conn_io_read(conn *c, uint8_t *buf, size_t cap)
{
    bool was_ready = c->t.ready;
    uint32_t ctl_before = c->ctl_frames;
    size_t owed_before = transport_pending(&c->t);
    /* Records that reading made us owe (handshake flights, KeyUpdate
     * replies) may not take the connection past its limit, with one staged
     * run of data of slack, so a subscriber whose queue is legitimately full
     * is not cut off for sending a pong. */
    size_t limit = c->env->cfg->queue_limit + TRANSPORT_TLS_STAGE;
    ssize_t r = transport_read(&c->t, buf, cap, c->q.mem < limit ? limit - c->q.mem : 0);
    /* A flood of post-handshake messages (KeyUpdates: tls.c counts them) is
     * a flood of requests like control frames are, whatever the
     * connection's state. */
    if (c->t.ready && c->ctl_frames != ctl_before && !conn_frame_rate_ok(c)) {
        METRIC_INC(c->env->m, rate_limited);
        return -2;
    }
    if (r == TRANSPORT_OVER) {
        METRIC_INC(c->env->m, slow_consumer_closes);
        return -2;
    }
    /* Reading can make records to send (handshake, KeyUpdate replies): they
     * wait in the transport, and count like queued frames. A peer that asks
     * for them and never reads is a slow consumer. */
    size_t owed = transport_pending(&c->t);
    if (owed > owed_before && owed_before == 0 && outq_empty(&c->q))
        c->last_progress_ms = c->env->loop->now_ms; /* data starts waiting now */
    /* The handshake is part of the first request head: --header-timeout
     * runs from its first byte, so a trickled handshake ends too. */
    if (c->state == CONN_HTTP) {
        if (!c->t.ready) {
            if (!c->head_active) {
                c->head_active = true;
                c->deadline_ms = c->env->loop->now_ms + c->env->cfg->header_timeout_ms;
            }
        } else if (!was_ready && r <= 0 && c->head_active) {
            /* The handshake finished in this read and no request byte came
             * with it: the head's deadline starts with its first byte. A
             * partial head waiting aside keeps its deadline: later reads
             * without data (a split record, a KeyUpdate) never reset it. */
            c->head_active = false;
        }
    }
    /* The handshake (or a key update) may have produced bytes to send, or
     * let a write go on that it had stopped (TRANSPORT_NOT_READY turns
     * EPOLLOUT off): a response waiting in the queue goes now. */
    if (owed > 0 || (c->t.ready && !outq_empty(&c->q)))
        conn_mark_dirty(c);
    if (r == TRANSPORT_AGAIN)
        return -1;
    return r < 0 ? -2 : r;
}

static void conn_on_readable(conn *c)
{
    conn_env *w = c->env;
    do {
        size_t have = conn_take_pending(c, w->scratch);
        ssize_t r = conn_io_read(c, w->scratch + have, w->scratch_cap - have);
        if (r == -1) {
            if (have && !conn_keep_pending(c, w->scratch, have))
                conn_destroy(c);
            return;
        }
        if (r <= 0) {
            conn_destroy(c); /* EOF or error */
            return;
        }
        METRIC_ADD(w->m, bytes_in, (uint64_t)r);
        c->last_read_ms = w->loop->now_ms;
        conn_process(c, w->scratch, have + (size_t)r);
        /* TLS may hold decrypted bytes epoll cannot see: read them now. */
    } while (!c->dead && !c->read_paused && transport_buffered(&c->t));
}

/* HTTP timers: while we owe answers (reading paused) only write progress
 * counts; otherwise a head must complete --header-timeout after its first
 * byte and a body by its deadline, however slowly bytes trickle in, and an
 * idle keep-alive connection goes after --idle-timeout. */
static void conn_tick_http(conn *c, uint64_t now, bool writing)
{
    const config *cfg = c->env->cfg;
    if (c->read_paused)
        return;
    if (c->state == CONN_HTTP_BODY) {
        if (now >= c->deadline_ms) {
            METRIC_INC(c->env->m, request_timeouts[METRICS_PHASE_BODY]);
            msg_unref(c->pub);
            c->pub = NULL;
            c->state = CONN_HTTP;
            conn_http_refuse(c, 408, "request body not received in time", NULL);
        }
    } else if (c->head_active) {
        if (now >= c->deadline_ms) {
            METRIC_INC(c->env->m, request_timeouts[METRICS_PHASE_HEAD]);
            if (!c->t.ready) {
                conn_destroy(c); /* no channel to answer on yet */
                return;
            }
            c->head_active = false;
            conn_take_pending(c, NULL);
            conn_http_refuse(c, 408, "request head not received in time", NULL);
        }
    } else if (!writing && now - c->last_read_ms >= cfg->idle_timeout_ms) {
        conn_destroy(c);
    }
}

void conn_tick(conn *c, uint64_t now)
{
    const config *cfg = c->env->cfg;
    if (c->state == CONN_CLOSING || c->state == CONN_DRAIN) {
        if (now >= c->deadline_ms)
            conn_destroy(c);
        return;
    }
    bool writing = !outq_empty(&c->q) || transport_pending(&c->t) > 0;
    if (writing && now - c->last_progress_ms >= cfg->write_timeout_ms) {
        METRIC_INC(c->env->m, write_timeouts);
        conn_destroy(c);
        return;
    }
    if (c->state != CONN_WS) {
        conn_tick_http(c, now, writing);
        return;
    }
    uint64_t silent = now - c->last_read_ms;
    if (c->sse) {
        /* An SSE client never speaks after its request: no idle timeout (a
         * dead peer fails the writes, or --write-timeout ends it); a comment
         * every --ping-interval keeps the path open. */
        if (now - c->last_ping_ms >= cfg->ping_interval_ms) {
            c->last_ping_ms = now;
            if (outq_empty(&c->q))
                conn_sse_keepalive(c);
        }
    } else if (silent >= cfg->idle_timeout_ms) {
        METRIC_INC(c->env->m, idle_timeouts);
        conn_close_ws(c, WS_CLOSE_GOING_AWAY, "idle timeout", false);
        if (!c->dead)
            c->deadline_ms = now + CONN_DRAIN_MS;
        return;
    }
    if (!c->sse && silent >= cfg->ping_interval_ms &&
        now - c->last_ping_ms >= cfg->ping_interval_ms) {
        msg *m = msg_new_frame(MSG_CONTROL, WS_OP_PING, NULL, 0);
        c->last_ping_ms = now;
        if (m)
            conn_send_consume(c, m, true);
    }
    if (outq_empty(&c->q)) {
        conn_qsnap before = conn_snap(c);
        outq_shrink(&c->q);
        conn_account(c, before);
        transport_idle(&c->t);
    }
}

void conn_abort(conn *c)
{
    conn_qsnap before = conn_snap(c);
    outq_drop_unstarted_data(&c->q);
    conn_account(c, before);
    transport_abort(&c->t);
    c->state = CONN_DRAIN;
    c->deadline_ms = 0;
}

void conn_destroy(conn *c)
{
    if (c->dead)
        return;
    conn_env *w = c->env;
    c->dead = true;
    if (w->forget)
        w->forget(c); /* leaves its groups and the cluster hold (delivery_forget) */
    if (c->role == ROLE_SUB)
        METRIC_SUB(w->m, subscribers_open, 1);
    if (c->role == ROLE_SUB && c->sse)
        METRIC_SUB(w->m, sse_open, 1);
    else if (c->role == ROLE_PUB)
        METRIC_SUB(w->m, publishers_open, 1);
    conn_unregister(w, c);
    conn_qsnap before = conn_snap(c);
    outq_clear(&c->q);
    conn_account(c, before);
    transport_close(&c->t);
    if (c->ip_counted)
        admit_ip_release(&c->ip);
    METRIC_SUB(w->m, connections_open, 1);
    c->next_dead = w->graveyard;
    w->graveyard = c;
}

void conn_free(conn *c)
{
    conn_take_pending(c, NULL);
    METRIC_SUB(c->env->m, conn_memory, sizeof *c);
    free(c->subs);
    free(c->pub_group);
    if (c->sse) {
        free(c->sse->known);
        free(c->sse);
    }
    if (c->pub)
        msg_unref(c->pub);
    deflate_inflater_free(c->zin);
    if (c->rd)
        METRIC_SUB(c->env->m, conn_memory, sizeof *c->rd);
    free(c->rd);
    free(c);
}

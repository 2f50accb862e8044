#include "conn.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conn_sse.h"
#include "deflate.h"
#include "log.h"
#include "server.h"
#include "worker.h"

/* An idle connection's size is herald's memory per client: SSE (sse) and
 * permessage-deflate (zin, pmd bits) together must not grow it. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(conn) <= 232, "struct conn grew past 232 bytes");
#endif

#define CONN_IOV 128
#define CONN_DRAIN_MS 2000   /* how long we wait for the peer's EOF after our close */
#define CONN_TLS_RECORDS_PER_EVENT 64
/* Pipelined HTTP requests are parsed only while fewer response bytes than
 * this wait: a client that sends requests without reading the answers must
 * not make us queue responses without bound. */
#define CONN_HTTP_BACKLOG 65536

conn *conn_new(worker *w, int fd)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->w = w;
    c->state = CONN_HTTP;
    c->keepalive = true;
    c->last_read_ms = w->now_ms;
    c->last_progress_ms = w->now_ms;
    if (w->srv->tls) {
        /* Reads come straight from the socket; writes go to a memory BIO so
         * that encrypting never blocks and queued plaintext is consumed at
         * once (see conn_tls_flush). */
        BIO *rb = BIO_new_socket(fd, BIO_NOCLOSE), *wb = BIO_new(BIO_s_mem());
        c->ssl = SSL_new(w->srv->tls);
        if (!rb || !wb || !c->ssl) {
            BIO_free(rb);
            BIO_free(wb);
            SSL_free(c->ssl);
            free(c);
            return NULL;
        }
        SSL_set_bio(c->ssl, rb, wb);
        SSL_set_app_data(c->ssl, &c->ctl_frames); /* tls_on_message counts into it */
        SSL_set_accept_state(c->ssl);
    }
    if (!worker_add_conn(w, c)) {
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    METRIC_INC(&w->m, connections_open);
    METRIC_INC(&w->m, connections_accepted);
    METRIC_ADD(&w->m, conn_memory, sizeof *c);
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
    conn_gauge(&c->w->m.queued_bytes, before.bytes, c->q.bytes);
    conn_gauge(&c->w->m.queue_memory, before.mem, c->q.mem);
    conn_gauge(&c->w->m.queue_arrays, before.cap * sizeof(msg *), c->q.cap * sizeof(msg *));
}

/* Queues m, taking over its reference; false (reference kept by the caller)
 * when the queue cannot grow, in which case the connection is aborted. */
bool conn_queue(conn *c, msg *m, bool urgent)
{
    if (outq_empty(&c->q))
        c->last_progress_ms = c->w->now_ms;
    conn_qsnap before = conn_snap(c);
    if (!(urgent ? outq_push_urgent(&c->q, m) : outq_push(&c->q, m))) {
        log_msg(LOG_WARN, "out of memory queueing for fd %d", c->fd);
        conn_abort(c);
        return false;
    }
    conn_account(c, before);
    worker_mark_dirty(c->w, c);
    return true;
}

bool conn_send(conn *c, msg *m, bool urgent)
{
    if (c->sse && m->kind == MSG_DATA)
        return conn_sse_send(c, m); /* a replayed event: its id line goes first */
    if (conn_queue(c, m, urgent))
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
        METRIC_INC(&c->w->m, pongs_coalesced);
        return;
    }
    conn_send(c, m, true);
}

size_t conn_tls_pending(const conn *c)
{
    return c->ssl ? BIO_ctrl_pending(SSL_get_wbio(c->ssl)) : 0;
}

void conn_close_after_flush(conn *c)
{
    c->close_after_flush = true;
    if (c->state != CONN_DRAIN)
        c->state = CONN_CLOSING;
    c->deadline_ms = c->w->now_ms + c->w->cfg->write_timeout_ms + CONN_DRAIN_MS;
    worker_mark_dirty(c->w, c);
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
        if (dropped && c->w->cfg->slow_policy == SLOW_DROP_OLDEST)
            METRIC_ADD(&c->w->m, messages_dropped, dropped);
    }
    msg *m = msg_new_close(code, reason);
    if (!m) {
        conn_abort(c);
        return;
    }
    if (!conn_send(c, m, false))
        return;
    conn_close_after_flush(c);
}

void conn_shed(conn *c, const char *reason)
{
    if (c->state != CONN_WS)
        return;
    if (c->w->cfg->slow_policy == SLOW_CLOSE) {
        METRIC_INC(&c->w->m, slow_consumer_closes);
        conn_close_ws(c, WS_CLOSE_POLICY, reason, false);
        return;
    }
    if (c->sse) {
        METRIC_ADD(&c->w->m, messages_dropped, conn_sse_drop_unsent(c));
        return;
    }
    conn_qsnap before = conn_snap(c);
    uint32_t dropped = outq_drop_unstarted_data(&c->q);
    conn_account(c, before);
    METRIC_ADD(&c->w->m, messages_dropped, dropped);
}

uint32_t conn_drop_prefixed(conn *c, size_t room, uint8_t prefix_op)
{
    conn_qsnap before = conn_snap(c);
    uint32_t n = 0;
    while ((room == SIZE_MAX || c->q.mem + room > c->w->cfg->queue_limit) &&
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

bool conn_enqueue(conn *c, msg *m)
{
    if (c->sse)
        return conn_sse_enqueue(c, m);
    if (c->state != CONN_WS || c->dead)
        return false;
    const config *cfg = c->w->cfg;
    /* TLS records already encrypted count with the queue: one rule for both. */
    size_t cost = outq_cost(m) + conn_tls_pending(c);
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
        METRIC_ADD(&c->w->m, messages_dropped, dropped);
    }
    /* No reference taken here: the fan-out adds them all at once. */
    return conn_queue(c, m, false);
}

static void conn_flush_done(conn *c);

static void conn_after_write(conn *c, const outq_done *done)
{
    worker *w = c->w;
    if (done->bytes) {
        c->last_progress_ms = w->now_ms;
        METRIC_ADD(&w->m, bytes_out, done->bytes);
    }
    if (done->data_msgs) {
        METRIC_ADD(&w->m, deliveries, done->data_msgs);
        if (c->sse)
            METRIC_ADD(&w->m, deliveries_sse, done->data_msgs);
    }
}

static uint64_t conn_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Writes the ciphertext waiting in the write BIO. Returns 1 when it is all
 * out, 0 when the socket is full, -1 when the peer is gone. */
static int conn_tls_drain(conn *c)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    char *p;
    long n;
    while ((n = BIO_get_mem_data(wb, &p)) > 0) {
        ssize_t r = write(c->fd, p, (size_t)n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
        /* Consume what went out (a copy into scratch: cheap next to AES). */
        for (ssize_t left = r; left > 0;) {
            int k = BIO_read(wb, c->w->scratch, left > 16384 ? 16384 : (int)left);
            if (k <= 0)
                return -1;
            left -= k;
        }
        c->tls_wbio_used = true;
        c->last_progress_ms = c->w->now_ms;
    }
    return 1;
}

/* TLS flush: one SSL_write per run of up to CONN_TLS_STAGE plaintext bytes
 * gathered from many queued frames, instead of one per frame. Returns 1 when
 * everything is out, 0 when the socket is full, 2 while the handshake has not
 * finished (a refusal can be queued before the ClientHello arrives; reads
 * drive the handshake and mark the connection dirty again), -1 on error. */
static int conn_tls_flush(conn *c, outq_done *done)
{
    struct iovec iov[CONN_IOV];
    for (;;) {
        int rc = conn_tls_drain(c);
        if (rc <= 0)
            return rc;
        if (outq_empty(&c->q))
            return 1;
        if (!c->tls_ready)
            return 2;
        int n = outq_iov(&c->q, iov, CONN_IOV);
        size_t len = 0;
        for (int i = 0; i < n && len < CONN_TLS_STAGE; i++) {
            size_t k = iov[i].iov_len < CONN_TLS_STAGE - len ? iov[i].iov_len : CONN_TLS_STAGE - len;
            memcpy(c->w->tls_stage + len, iov[i].iov_base, k);
            len += k;
        }
        ERR_clear_error();
        int r = SSL_write(c->ssl, c->w->tls_stage, (int)len);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 2 : -1;
        }
        conn_qsnap before = conn_snap(c);
        outq_consume(&c->q, (size_t)r, done);
        conn_account(c, before);
    }
}

/* Stops watching for writability: a level-triggered EPOLLOUT left on while
 * we choose not to write would spin the loop. */
static void conn_quiet(conn *c)
{
    if (c->want_out && worker_epoll_mod(c->w, c, false) == 0)
        c->want_out = false;
}

void conn_flush(conn *c)
{
    if (c->hold) {
        conn_quiet(c);
        return; /* worker_check_held marks it dirty again when released */
    }
    if (c->ssl) {
        outq_done done = {.lat = &c->w->m, .release = &c->w->release, .now_us = conn_now_us()};
        int rc = conn_tls_flush(c, &done);
        conn_after_write(c, &done);
        if (done.data_msgs && !c->sse)
            METRIC_ADD(&c->w->m, deliveries_tls, done.data_msgs);
        if (rc < 0) {
            conn_destroy(c);
            return;
        }
        if (rc == 0) {
            if (!c->want_out && worker_epoll_mod(c->w, c, true) == 0)
                c->want_out = true;
            return;
        }
        if (rc == 2) { /* the handshake must progress first: reads will wake us */
            conn_quiet(c);
            return;
        }
        conn_flush_done(c);
        return;
    }
    struct iovec iov[CONN_IOV];
    while (!outq_empty(&c->q)) {
        int n = outq_iov(&c->q, iov, CONN_IOV);
        ssize_t r = writev(c->fd, iov, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->want_out && worker_epoll_mod(c->w, c, true) == 0)
                    c->want_out = true;
                return;
            }
            conn_destroy(c); /* EPIPE, ECONNRESET: the peer is gone */
            return;
        }
        outq_done done = {.lat = &c->w->m, .release = &c->w->release, .now_us = conn_now_us()};
        conn_qsnap before = conn_snap(c);
        outq_consume(&c->q, (size_t)r, &done);
        conn_account(c, before);
        conn_after_write(c, &done);
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
        c->last_read_ms = c->w->now_ms; /* we were the ones behind, not the client */
        c->want_out = false;
        worker_epoll_mod(c->w, c, false);
        size_t n = conn_take_pending(c, c->w->scratch);
        if (n)
            conn_process(c, c->w->scratch, n);
        /* TLS may hold decrypted bytes epoll cannot see (reading stopped on
         * an inflate budget, conn_ws_yield): read them now. */
        if (!c->dead && !c->read_paused && c->ssl && SSL_pending(c->ssl) > 0)
            conn_on_readable(c);
        return;
    }
    if (c->want_out && worker_epoll_mod(c->w, c, false) == 0)
        c->want_out = false;
    if (c->close_after_flush && c->state != CONN_DRAIN) {
        /* Half-close and wait for the peer's EOF: closing at once could turn
         * unread input into an RST that destroys the frames just written. */
        if (c->ssl) {
            if (!c->tls_shut) {
                SSL_shutdown(c->ssl); /* close_notify, into the write BIO */
                c->tls_shut = true;
            }
            int rc = conn_tls_drain(c);
            if (rc < 0) {
                conn_destroy(c);
                return;
            }
            if (rc == 0) { /* socket full: finish when writable */
                if (!c->want_out && worker_epoll_mod(c->w, c, true) == 0)
                    c->want_out = true;
                return;
            }
        }
        shutdown(c->fd, SHUT_WR);
        c->state = CONN_DRAIN;
        c->deadline_ms = c->w->now_ms + CONN_DRAIN_MS;
    }
}

void conn_on_writable(conn *c) { conn_flush(c); }

bool conn_keep_pending(conn *c, const uint8_t *p, size_t n)
{
    c->pend = malloc(n);
    if (!c->pend)
        return false;
    memcpy(c->pend, p, n);
    c->pend_len = (uint32_t)n;
    METRIC_ADD(&c->w->m, conn_memory, n);
    return true;
}

size_t conn_take_pending(conn *c, uint8_t *dst)
{
    size_t n = c->pend_len;
    if (dst && n)
        memcpy(dst, c->pend, n);
    free(c->pend);
    METRIC_SUB(&c->w->m, conn_memory, n);
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
    worker_epoll_mod(c->w, c, c->want_out);
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

/* Records that reading made us owe (handshake flights, KeyUpdate replies)
 * took the connection past its limit: only growth from this read counts,
 * with one staged run of data (CONN_TLS_STAGE) of slack, so a subscriber
 * whose queue is legitimately full is not cut off for sending a pong. */
static bool conn_tls_over(const conn *c, size_t pending_before)
{
    size_t now = conn_tls_pending(c);
    return now > pending_before &&
           now + c->q.mem > c->w->cfg->queue_limit + CONN_TLS_STAGE;
}

/* Reads into buf: > 0 bytes, 0 end of stream, -1 nothing now, -2 error. */
static ssize_t conn_io_read(conn *c, uint8_t *buf, size_t cap)
{
    if (!c->ssl) {
        ssize_t r = read(c->fd, buf, cap);
        if (r < 0)
            return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
        return r;
    }
    size_t pending = conn_tls_pending(c);
    bool was_ready = c->tls_ready;
    /* Without SSL_MODE_AUTO_RETRY (tls.c) SSL_read returns after each record
     * that carries no data (a KeyUpdate, a ticket): take a bounded number of
     * them per event, so a flood of them neither stalls the worker inside
     * OpenSSL nor crawls at one record per loop pass. */
    BIO *rb = SSL_get_rbio(c->ssl);
    uint32_t ctl_before = c->ctl_frames;
    int r;
    for (int records = 0;; records++) {
        uint64_t got = BIO_number_read(rb);
        ERR_clear_error();
        r = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
        if (r > 0 || SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ ||
            BIO_number_read(rb) == got || records == CONN_TLS_RECORDS_PER_EVENT ||
            conn_tls_over(c, pending))
            break;
    }
    if (!c->tls_ready && SSL_is_init_finished(c->ssl)) {
        c->tls_ready = true;
        c->ctl_frames = 0; /* the handshake's own messages ask nothing extra */
    }
    /* A flood of post-handshake messages (KeyUpdates: tls_on_message counts
     * them) is a flood of requests like control frames are, whatever the
     * connection's state. */
    if (c->tls_ready && c->ctl_frames != ctl_before && !conn_frame_rate_ok(c)) {
        METRIC_INC(&c->w->m, rate_limited);
        return -2;
    }
    /* Reading can make records to send (handshake, KeyUpdate replies): they
     * wait in the write BIO, and count like queued frames. A peer that asks
     * for them and never reads is a slow consumer. */
    size_t now_pending = conn_tls_pending(c);
    if (now_pending > pending && pending == 0 && outq_empty(&c->q))
        c->last_progress_ms = c->w->now_ms;
    /* The handshake is part of the first request head: --header-timeout
     * runs from its first byte, so a trickled handshake ends too. */
    if (c->state == CONN_HTTP) {
        if (!c->tls_ready) {
            if (!c->head_active) {
                c->head_active = true;
                c->deadline_ms = c->w->now_ms + c->w->cfg->header_timeout_ms;
            }
        } else if (!was_ready && r <= 0 && c->head_active) {
            /* The handshake finished in this read and no request byte came
             * with it: the head's deadline starts with its first byte. A
             * partial head waiting aside keeps its deadline: later reads
             * without data (a split record, a KeyUpdate) never reset it. */
            c->head_active = false;
        }
    }
    if (conn_tls_over(c, pending)) {
        METRIC_INC(&c->w->m, slow_consumer_closes);
        return -2;
    }
    /* The handshake (or a key update) may have produced bytes to send, or
     * just finished with a response already waiting in the queue. */
    if (BIO_ctrl_pending(SSL_get_wbio(c->ssl)) > 0 ||
        (!outq_empty(&c->q) && c->tls_ready))
        worker_mark_dirty(c->w, c);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        return -2; /* not TLS, bad handshake, or the peer went away */
    }
}

void conn_on_readable(conn *c)
{
    worker *w = c->w;
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
        METRIC_ADD(&w->m, bytes_in, (uint64_t)r);
        c->last_read_ms = w->now_ms;
        conn_process(c, w->scratch, have + (size_t)r);
        /* TLS may hold decrypted bytes epoll cannot see: read them now. */
    } while (!c->dead && !c->read_paused && c->ssl && SSL_pending(c->ssl) > 0);
}

/* HTTP timers: while we owe answers (reading paused) only write progress
 * counts; otherwise a head must complete --header-timeout after its first
 * byte and a body by its deadline, however slowly bytes trickle in, and an
 * idle keep-alive connection goes after --idle-timeout. */
static void conn_tick_http(conn *c, uint64_t now, bool writing)
{
    const config *cfg = c->w->cfg;
    if (c->read_paused)
        return;
    if (c->state == CONN_HTTP_BODY) {
        if (now >= c->deadline_ms) {
            METRIC_INC(&c->w->m, request_timeouts[METRICS_PHASE_BODY]);
            msg_unref(c->pub);
            c->pub = NULL;
            c->state = CONN_HTTP;
            conn_http_refuse(c, 408, "request body not received in time", NULL);
        }
    } else if (c->head_active) {
        if (now >= c->deadline_ms) {
            METRIC_INC(&c->w->m, request_timeouts[METRICS_PHASE_HEAD]);
            if (c->ssl && !c->tls_ready) {
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
    const config *cfg = c->w->cfg;
    if (c->state == CONN_CLOSING || c->state == CONN_DRAIN) {
        if (now >= c->deadline_ms)
            conn_destroy(c);
        return;
    }
    bool writing = !outq_empty(&c->q) || conn_tls_pending(c) > 0;
    if (writing && now - c->last_progress_ms >= cfg->write_timeout_ms) {
        METRIC_INC(&c->w->m, write_timeouts);
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
        METRIC_INC(&c->w->m, idle_timeouts);
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
            conn_send(c, m, true);
    }
    if (outq_empty(&c->q)) {
        conn_qsnap before = conn_snap(c);
        outq_shrink(&c->q);
        conn_account(c, before);
        if (c->tls_wbio_used && BIO_ctrl_pending(SSL_get_wbio(c->ssl)) == 0) {
            /* A memory BIO keeps its peak size: give it back when idle. */
            BIO *fresh = BIO_new(BIO_s_mem());
            if (fresh) {
                SSL_set0_wbio(c->ssl, fresh);
                c->tls_wbio_used = false;
            }
        }
    }
}

void conn_abort(conn *c)
{
    conn_qsnap before = conn_snap(c);
    outq_drop_unstarted_data(&c->q);
    conn_account(c, before);
    shutdown(c->fd, SHUT_RDWR);
    c->state = CONN_DRAIN;
    c->deadline_ms = 0;
}

void conn_destroy(conn *c)
{
    if (c->dead)
        return;
    worker *w = c->w;
    c->dead = true;
    if (c->hold) {
        worker_unhold(w, c);
        c->hold = false;
    }
    if (c->role == ROLE_SUB)
        METRIC_SUB(&w->m, subscribers_open, 1);
    if (c->role == ROLE_SUB && c->sse)
        METRIC_SUB(&w->m, sse_open, 1);
    else if (c->role == ROLE_PUB)
        METRIC_SUB(&w->m, publishers_open, 1);
    conn_unsubscribe_all(c);
    worker_remove_conn(w, c);
    conn_qsnap before = conn_snap(c);
    outq_clear(&c->q);
    conn_account(c, before);
    SSL_free(c->ssl); /* frees both BIOs; the socket BIO leaves the fd to us */
    c->ssl = NULL;
    close(c->fd);
    c->fd = -1;
    if (c->ip_counted)
        admit_ip_release(&c->ip);
    METRIC_SUB(&w->m, connections_open, 1);
    c->next_dead = w->graveyard;
    w->graveyard = c;
}

void conn_free(conn *c)
{
    conn_take_pending(c, NULL);
    METRIC_SUB(&c->w->m, conn_memory, sizeof *c);
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
        METRIC_SUB(&c->w->m, conn_memory, sizeof *c->rd);
    free(c->rd);
    free(c);
}

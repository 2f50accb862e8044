#include "conn.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>

#include "deliver.h"
#include "pub.h"

enum fail_kind { FAIL_CONNECT, FAIL_HANDSHAKE, FAIL_TIMEOUT };

static void conn_on_ping(void *ctx, const uint8_t *p, size_t n);
static void conn_on_close(void *ctx, int code);
static void conn_pub_on_message(void *ctx, uint8_t opcode, const uint8_t *head, uint64_t total);

static const wsc_handler conn_sub_handler = {deliver_on_message, conn_on_ping, conn_on_close};
static const wsc_handler conn_pub_handler = {conn_pub_on_message, conn_on_ping, conn_on_close};

/* close code from the last close frame the reader dispatched (per thread:
 * read right after wsc_feed returns on the same thread) */
static _Thread_local int conn_last_close_code;

/* --tls: the upgrade response head is read into a per-connection buffer
 * (TLS has no MSG_PEEK across records), freed once the handshake is done */
#define CONN_HEAD_MAX 4096

/* ---- transport: the plain socket or TLS over it --------------------------
 * Both return > 0 bytes, 0 at EOF (reads only) or -1 with errno; EAGAIN
 * means "wait for the next event" (edge-triggered on EPOLLIN|EPOLLOUT, so
 * any event retries both directions: TLS may need either for either). After
 * an EAGAIN from a TLS write the same bytes must be offered again (at least
 * as many; the buffer may have moved: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */

/* why the last TLS call on this thread failed (for the report) */
static _Thread_local char conn_tls_why[120];

static ssize_t conn_tls_result(conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
        ERR_clear_error();
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EAGAIN || errno == EINTR)
            errno = ECONNRESET;
        snprintf(conn_tls_why, sizeof conn_tls_why, "%s", strerror(errno));
        break;
    default: {
        unsigned long err = ERR_peek_error();
        if (err)
            ERR_error_string_n(err, conn_tls_why, sizeof conn_tls_why);
        else
            snprintf(conn_tls_why, sizeof conn_tls_why, "SSL error %d", e);
        errno = EPROTO;
        break;
    }
    }
    ERR_clear_error();
    return -1;
}

static ssize_t conn_io_read(conn *c, void *buf, size_t n)
{
    if (!c->ssl)
        return recv(c->fd, buf, n, 0);
    int r = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    return r > 0 ? r : conn_tls_result(c, r);
}

ssize_t conn_io_write(conn *c, const void *buf, size_t n)
{
    if (!c->ssl)
        return send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    int r = SSL_write(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) {
        c->tls_wpend = false;
        return r;
    }
    ssize_t v = conn_tls_result(c, r);
    if (v < 0 && errno == EAGAIN) {
        c->tls_wpend = true;
    } else if (v == 0) {
        errno = EPIPE;
        v = -1;
    }
    return v;
}

/* strerror, or the TLS reason for an EPROTO from the calls above */
static const char *conn_io_error(int err)
{
    return err == EPROTO && conn_tls_why[0] ? conn_tls_why : strerror(err);
}

/* Drops the connection's TLS state and socket. */
static void conn_release(conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl); /* the socket BIO does not close the fd */
        c->ssl = NULL;
    }
    free(c->hbuf);
    c->hbuf = NULL;
    c->hlen = 0;
    c->tls_wpend = false;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void conn_setup_finished(worker *w)
{
    if (w->inflight)
        w->inflight--;
    w->cfinished++;
}

static void conn_fail(worker *w, conn *c, enum fail_kind kind, const char *fmt, const char *arg)
{
    char why[160];
    snprintf(why, sizeof why, fmt, arg);
    worker_note_error(w, "%s %u: %s", c->is_pub ? "publisher" : "subscriber", c->index, why);
    STAT_ADD(w, failed, 1);
    if (kind == FAIL_CONNECT)
        STAT_ADD(w, fail_connect, 1);
    else if (kind == FAIL_HANDSHAKE)
        STAT_ADD(w, fail_handshake, 1);
    else
        STAT_ADD(w, fail_timeout, 1);
    conn_release(c);
    c->state = CS_DONE;
    conn_setup_finished(w);
}

void conn_fail_timeout(worker *w, conn *c)
{
    conn_fail(w, c, FAIL_TIMEOUT, "%s", "connect/handshake timed out");
}

/* The key is derived from the run seed and the connection, so the request
 * can be rebuilt after a partial write and the answer checked without
 * keeping either per connection. */
static void conn_key(worker *w, const conn *c, char key[WSC_KEY_LEN + 1])
{
    uint64_t base = w->run->key_seed ^ (((uint64_t)c->is_pub << 40) | c->index) * 2;
    uint64_t k0 = bench_mix64(base), k1 = bench_mix64(base + 1);
    uint8_t raw[16];
    memcpy(raw, &k0, 8);
    memcpy(raw + 8, &k1, 8);
    wsc_key_encode(raw, key);
}

/* --ports: subscriber i goes to node i mod n; publishers to the first node,
 * or round-robin with --pub-ports-all. */
static uint16_t conn_port(const bench_args *a, const conn *c)
{
    if (c->is_pub && !a->pub_ports_all)
        return a->ports[0];
    return a->ports[c->index % a->nports];
}

static size_t conn_request(worker *w, const conn *c, char *out, size_t cap)
{
    const bench_args *a = w->run->a;
    char key[WSC_KEY_LEN + 1], group[48], host_port[80];
    conn_key(w, c, key);
    if (!c->is_pub && a->format != FMT_RAW)
        snprintf(group, sizeof group, "g%u&format=%s", c->group, args_format_name(a->format));
    else
        snprintf(group, sizeof group, "g%u", c->group);
    snprintf(host_port, sizeof host_port, "%s:%u", a->host, conn_port(a, c));
    if (!c->is_pub && a->sse)
        return ssec_request(out, cap, host_port, a->sub_path, group);
    return wsc_request_ext(out, cap, host_port, c->is_pub ? a->pub_path : a->sub_path,
                           c->is_pub ? "group" : "groups", group, key,
                           !c->is_pub && a->deflate ? WSC_DEFLATE_OFFER : "");
}

static void conn_opened(worker *w, conn *c)
{
    c->state = CS_OPEN;
    c->counted_open = true;
    w->open_conns++;
    if (c->is_pub) {
        STAT_ADD(w, pub_ok, 1);
    } else {
        STAT_ADD(w, sub_ok, 1);
        atomic_fetch_add_explicit(&w->run->group_live[c->group], 1, memory_order_relaxed);
    }
    conn_setup_finished(w);
}

void conn_close(worker *w, conn *c)
{
    conn_release(c);
    wsc_reader_free(&c->rd);
    if (c->state == CS_OPEN || c->state == CS_CLOSING)
        w->open_conns--;
    else if (conn_in_setup(c))
        conn_setup_finished(w);
    c->state = CS_DONE;
    if (c->pub)
        c->pub->head = c->pub->tail = 0;
}

void conn_lost(worker *w, conn *c, const char *why)
{
    if (c->state == CS_OPEN && w->phase < PH_CLOSE) {
        STAT_ADD(w, disconnects, 1);
        worker_note_error(w, "%s %u lost: %s", c->is_pub ? "publisher" : "subscriber", c->index,
                          why);
    }
    conn_close(w, c);
}

/* Subscribers only ever send control frames: one pending frame, written
 * directly; a newer pong may replace an unsent older one (RFC 6455 5.5.3). */
static void conn_ctl_flush(conn *c)
{
    while (c->ctl_sent < c->ctl_len) {
        ssize_t n = conn_io_write(c, c->ctl + c->ctl_sent, (size_t)(c->ctl_len - c->ctl_sent));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN: EPOLLOUT resumes; errors surface on the next read */
        }
        c->ctl_sent = (uint8_t)(c->ctl_sent + n);
    }
    c->ctl_len = c->ctl_sent = 0;
}

static void conn_send_control(worker *w, conn *c, uint8_t opcode, const uint8_t *p, size_t n)
{
    uint8_t frame[WSC_CTL_FRAME];
    size_t len = wsc_control(frame, opcode, p, n, worker_rand32(w));
    if (c->is_pub) {
        pub_append(c->pub, frame, len); /* flushed at the end of the loop pass */
        return;
    }
    /* a frame is half written, or TLS holds it for a retry: it stays */
    bool busy = c->ctl_sent < c->ctl_len && (c->ctl_sent > 0 || c->tls_wpend);
    if (busy && opcode == WSC_OP_PONG)
        return; /* this pong waits for the next ping */
    if (busy) {
        /* a close must follow the half-written frame: finish that first */
        conn_ctl_flush(c);
        if (c->ctl_len)
            return;
    }
    memcpy(c->ctl, frame, len);
    c->ctl_len = (uint8_t)len;
    c->ctl_sent = 0;
    conn_ctl_flush(c);
}

static void conn_on_ping(void *ctx, const uint8_t *p, size_t n)
{
    conn *c = ctx;
    STAT_ADD(c->w, pings, 1);
    if (!c->close_sent)
        conn_send_control(c->w, c, WSC_OP_PONG, p, n);
}

static void conn_on_close(void *ctx, int code)
{
    (void)ctx;
    conn_last_close_code = code;
}

static void conn_pub_on_message(void *ctx, uint8_t opcode, const uint8_t *head, uint64_t total)
{
    conn *c = ctx;
    (void)opcode, (void)head, (void)total;
    if (c->w->measuring)
        STAT_ADD(c->w, unexpected, 1);
}

static void conn_send_close(worker *w, conn *c, int code)
{
    uint8_t payload[2];
    size_t n = 0;
    if (code >= 0) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        n = 2;
    }
    c->close_sent = true;
    conn_send_control(w, c, WSC_OP_CLOSE, payload, n);
    if (c->is_pub && c->fd >= 0)
        pub_flush(w, c->pub);
}

/* The server's close frame arrived: echo it (unless we started the close)
 * and drop the connection; the server closes TCP first or we do now. */
static void conn_peer_closed(worker *w, conn *c, int code)
{
    if (c->state == CS_OPEN && w->phase < PH_CLOSE) {
        STAT_ADD(w, disconnects, 1);
        worker_note_error(w, "%s %u: server closed with code %d", c->is_pub ? "publisher" : "subscriber",
                          c->index, code);
    }
    if (!c->close_sent && c->fd >= 0) {
        /* echo a valid code; 1005-style absence stays absent */
        conn_send_close(w, c, code >= 1000 && code != 1005 && code != 1006 ? code : -1);
    }
    conn_close(w, c);
}

/* Feeds received bytes to the frame reader; false when the connection ended
 * (close frame or protocol error). */
/* --sse: an event's payload, decoded head and size, is delivered like a frame. */
static void conn_sse_event(void *ctx, const uint8_t *head, uint64_t total)
{
    deliver_on_message(ctx, WSC_OP_BINARY, head, total);
}

static bool conn_feed(worker *w, conn *c, const uint8_t *p, size_t n)
{
    const wsc_handler *h = c->is_pub ? &conn_pub_handler : &conn_sub_handler;
    w->now = bench_now();
    if (!c->is_pub && w->phase == PH_RUN) /* as deliveries: the measured phase only */
        STAT_ADD(w, sub_bytes, n);
    if (!c->is_pub && w->run->a->sse) {
        if (ssec_feed(&c->srd, p, n, conn_sse_event, c))
            return true;
        STAT_ADD(w, protocol_errors, 1);
        if (c->state == CS_OPEN && w->phase < PH_CLOSE)
            STAT_ADD(w, disconnects, 1);
        worker_note_error(w, "subscriber %u: malformed event stream", c->index);
        conn_close(w, c);
        return false;
    }
    int rc = wsc_feed(&c->rd, p, n, h, c);
    if (rc == WSC_FEED_CLOSED) {
        conn_peer_closed(w, c, conn_last_close_code);
        return false;
    }
    if (rc == WSC_FEED_ERROR) {
        STAT_ADD(w, protocol_errors, 1);
        if (c->state == CS_OPEN && w->phase < PH_CLOSE)
            STAT_ADD(w, disconnects, 1);
        worker_note_error(w, "%s %u: protocol error in a server frame",
                          c->is_pub ? "publisher" : "subscriber", c->index);
        if (!c->close_sent)
            conn_send_close(w, c, 1002);
        conn_close(w, c);
        return false;
    }
    return true;
}

static void conn_read(worker *w, conn *c, uint32_t events)
{
    bool hup = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    for (;;) {
        ssize_t n = conn_io_read(c, w->scratch, BENCH_SCRATCH);
        if (n > 0) {
            if (!conn_feed(w, c, w->scratch, (size_t)n))
                return;
            /* edge-triggered: a short read drained the socket, and data that
             * arrives later raises a new edge; only a pending EOF does not.
             * TLS returns a record at a time: read until it wants more. */
            if (!c->ssl && (size_t)n < BENCH_SCRATCH && !hup)
                return;
            continue;
        }
        if (n == 0) {
            conn_lost(w, c, "connection closed by server (EOF)");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        conn_lost(w, c, conn_io_error(errno));
        return;
    }
}

/* The reader for a new connection: subscribers of envelopes keep more of
 * each message (the payload is not at its start). */
static void conn_reader_init(worker *w, conn *c)
{
    if (!c->is_pub && w->run->a->sse)
        ssec_reader_init(&c->srd);
    else if (!c->is_pub && w->run->a->format != FMT_RAW)
        wsc_reader_init_capture(&c->rd, WSC_HEAD_CAP);
    else
        wsc_reader_init(&c->rd);
    if (!c->is_pub && w->run->a->deflate) /* conn_check_head made sure it was accepted */
        wsc_reader_enable_deflate(&c->rd);
}

static bool conn_check_head(worker *w, conn *c, const char *head, size_t hl)
{
    char key[WSC_KEY_LEN + 1], why[160];
    conn_key(w, c, key);
    bool ok = !c->is_pub && w->run->a->sse ? ssec_response_ok(head, hl, why, sizeof why)
                                           : wsc_response_ok(head, hl, key, why, sizeof why);
    if (!ok) {
        conn_fail(w, c, FAIL_HANDSHAKE, "%s", why);
        return false;
    }
    if (!c->is_pub && w->run->a->deflate) {
        if (!wsc_response_deflate(head, hl)) {
            conn_fail(w, c, FAIL_HANDSHAKE, "%s", "--deflate: the server declined permessage-deflate");
            return false;
        }
    }
    return true;
}

static void conn_recv_head_plain(worker *w, conn *c)
{
    char *buf = (char *)w->scratch;
    /* peek until the whole head is there, then consume exactly the head so
     * frames that came in the same segment stay for the frame reader */
    ssize_t n = recv(c->fd, buf, BENCH_SCRATCH, MSG_PEEK);
    if (n == 0) {
        conn_fail(w, c, FAIL_HANDSHAKE, "%s", "closed before the upgrade response");
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_fail(w, c, FAIL_HANDSHAKE, "recv: %s", strerror(errno));
        return;
    }
    size_t hl = wsc_head_len(buf, (size_t)n);
    if (hl == 0) {
        if ((size_t)n == BENCH_SCRATCH)
            conn_fail(w, c, FAIL_HANDSHAKE, "%s", "upgrade response head too large");
        return;
    }
    ssize_t got = recv(c->fd, buf, hl, 0);
    if (got != (ssize_t)hl) {
        conn_fail(w, c, FAIL_HANDSHAKE, "%s", "short read of the response head");
        return;
    }
    if (!conn_check_head(w, c, buf, hl))
        return;
    conn_reader_init(w, c);
    conn_opened(w, c);
    conn_read(w, c, EPOLLRDHUP); /* frames may have come with the head */
}

/* TLS: read into hbuf until the head is complete; what follows it in hbuf
 * are the first frames. */
static void conn_recv_head_tls(worker *w, conn *c)
{
    if (!c->hbuf && !(c->hbuf = malloc(CONN_HEAD_MAX))) {
        conn_fail(w, c, FAIL_HANDSHAKE, "%s", "out of memory");
        return;
    }
    for (;;) {
        ssize_t n = conn_io_read(c, c->hbuf + c->hlen, CONN_HEAD_MAX - c->hlen);
        if (n == 0) {
            conn_fail(w, c, FAIL_HANDSHAKE, "%s", "closed before the upgrade response");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            conn_fail(w, c, FAIL_HANDSHAKE, "read: %s", conn_io_error(errno));
            return;
        }
        c->hlen = (uint16_t)(c->hlen + n);
        size_t hl = wsc_head_len(c->hbuf, c->hlen);
        if (hl == 0) {
            if (c->hlen == CONN_HEAD_MAX) {
                conn_fail(w, c, FAIL_HANDSHAKE, "%s", "upgrade response head too large");
                return;
            }
            continue;
        }
        if (!conn_check_head(w, c, c->hbuf, hl))
            return;
        conn_reader_init(w, c);
        conn_opened(w, c);
        /* the frames that came with the head: copied out so hbuf can go */
        size_t rest = c->hlen - hl;
        memcpy(w->scratch, c->hbuf + hl, rest);
        free(c->hbuf);
        c->hbuf = NULL;
        c->hlen = 0;
        if (rest && !conn_feed(w, c, w->scratch, rest))
            return;
        conn_read(w, c, EPOLLRDHUP);
        return;
    }
}

static void conn_recv_head(worker *w, conn *c)
{
    if (c->ssl)
        conn_recv_head_tls(w, c);
    else
        conn_recv_head_plain(w, c);
}

static void conn_send_request(worker *w, conn *c)
{
    /* rebuilt identically on every call, so a retry offers the same bytes */
    char *buf = (char *)w->scratch;
    size_t len = conn_request(w, c, buf, BENCH_SCRATCH);
    if (len == 0) {
        conn_fail(w, c, FAIL_CONNECT, "%s", "request too long");
        return;
    }
    while (c->req_sent < len) {
        ssize_t n = conn_io_write(c, buf + c->req_sent, len - c->req_sent);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            conn_fail(w, c, FAIL_CONNECT, "send: %s", conn_io_error(errno));
            return;
        }
        c->req_sent = (uint16_t)(c->req_sent + n);
    }
    c->state = CS_RECV_HEAD;
    conn_recv_head(w, c);
}

static void conn_tls_handshake(worker *w, conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = CS_SEND_REQ;
        conn_send_request(w, c);
        return;
    }
    if (conn_tls_result(c, r) < 0 && errno == EAGAIN)
        return; /* WANT_READ / WANT_WRITE: the next event resumes */
    conn_fail(w, c, FAIL_HANDSHAKE, "TLS handshake: %s",
              errno == EPROTO ? conn_tls_why : "connection closed");
}

/* TCP is up: start TLS or the upgrade request. */
static void conn_connected(worker *w, conn *c)
{
    SSL_CTX *ctx = w->run->tls_ctx;
    if (!ctx) {
        c->state = CS_SEND_REQ;
        conn_send_request(w, c);
        return;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        ERR_clear_error();
        conn_fail(w, c, FAIL_CONNECT, "%s", "SSL_new failed");
        return;
    }
    SSL_set_connect_state(c->ssl);
    c->state = CS_TLS;
    conn_tls_handshake(w, c);
}

void conn_start(worker *w, conn *c)
{
    const bench_args *a = w->run->a;
    c->deadline = w->now + (int64_t)(a->connect_timeout * 1e9);
    c->req_sent = 0;
    c->state = CS_CONNECTING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(w, c, FAIL_CONNECT, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (a->source_ips > 1) {
        /* choose only the address now; the port is picked at connect() per
         * 4-tuple, so each source address gets its own ephemeral range */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        uint32_t gidx = c->is_pub ? a->subscribers + c->index : c->index;
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + gidx % a->source_ips);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0) {
            conn_fail(w, c, FAIL_CONNECT, "bind: %s", strerror(errno));
            return;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        conn_fail(w, c, FAIL_CONNECT, "epoll_ctl: %s", strerror(errno));
        return;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(conn_port(a, c)),
                              .sin_addr = a->addr};
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) == 0)
        conn_connected(w, c);
    else if (errno != EINPROGRESS)
        conn_fail(w, c, FAIL_CONNECT, "connect: %s", strerror(errno));
}

void conn_event(worker *w, conn *c, uint32_t events)
{
    switch (c->state) {
    case CS_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err) {
            conn_fail(w, c, FAIL_CONNECT, "connect: %s", strerror(err));
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        conn_connected(w, c);
        return;
    }
    case CS_TLS:
        conn_tls_handshake(w, c); /* it may wait for either direction */
        return;
    case CS_SEND_REQ:
        if (c->ssl || (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            conn_send_request(w, c);
        return;
    case CS_RECV_HEAD:
        if (c->ssl || (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
            conn_recv_head(w, c);
        return;
    case CS_OPEN:
    case CS_CLOSING:
        /* TLS: a write may wait for input and a read for output, so every
         * event retries both */
        if ((events & EPOLLOUT) || c->ssl) {
            if (c->is_pub)
                pub_flush(w, c->pub);
            else
                conn_ctl_flush(c);
            if (c->state == CS_DONE)
                return;
        }
        if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) || c->ssl)
            conn_read(w, c, events);
        return;
    default:
        return;
    }
}

void conn_begin_close(worker *w, conn *c)
{
    if (c->state == CS_OPEN && !c->is_pub && w->run->a->sse) {
        conn_close(w, c); /* an event stream just ends */
    } else if (c->state == CS_OPEN) {
        c->state = CS_CLOSING;
        conn_send_close(w, c, 1000);
    } else if (conn_in_setup(c)) {
        conn_close(w, c);
    }
}

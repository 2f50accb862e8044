#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
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

static size_t conn_request(worker *w, const conn *c, char *out, size_t cap)
{
    const bench_args *a = w->run->a;
    char key[WSC_KEY_LEN + 1], group[16];
    conn_key(w, c, key);
    snprintf(group, sizeof group, "g%u", c->group);
    return wsc_request(out, cap, w->run->host_port, c->is_pub ? a->pub_path : a->sub_path,
                       c->is_pub ? "group" : "groups", group, key);
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
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
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
        ssize_t n = send(c->fd, c->ctl + c->ctl_sent, (size_t)(c->ctl_len - c->ctl_sent),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
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
    if (c->ctl_sent > 0 && c->ctl_sent < c->ctl_len && opcode == WSC_OP_PONG)
        return; /* a frame is half written: this pong waits for the next ping */
    if (c->ctl_sent > 0 && c->ctl_sent < c->ctl_len) {
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

static void conn_read(worker *w, conn *c, uint32_t events)
{
    const wsc_handler *h = c->is_pub ? &conn_pub_handler : &conn_sub_handler;
    bool hup = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    for (;;) {
        ssize_t n = recv(c->fd, w->scratch, BENCH_SCRATCH, 0);
        if (n > 0) {
            w->now = bench_now();
            int rc = wsc_feed(&c->rd, w->scratch, (size_t)n, h, c);
            if (rc == WSC_FEED_CLOSED) {
                conn_peer_closed(w, c, conn_last_close_code);
                return;
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
                return;
            }
            /* edge-triggered: a short read drained the socket, and data that
             * arrives later raises a new edge; only a pending EOF does not */
            if ((size_t)n < BENCH_SCRATCH && !hup)
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
        conn_lost(w, c, strerror(errno));
        return;
    }
}

static void conn_recv_head(worker *w, conn *c)
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
    char key[WSC_KEY_LEN + 1], why[160];
    conn_key(w, c, key);
    if (!wsc_response_ok(buf, hl, key, why, sizeof why)) {
        conn_fail(w, c, FAIL_HANDSHAKE, "%s", why);
        return;
    }
    wsc_reader_init(&c->rd);
    conn_opened(w, c);
    conn_read(w, c, EPOLLRDHUP); /* frames may have come with the head */
}

static void conn_send_request(worker *w, conn *c)
{
    char *buf = (char *)w->scratch;
    size_t len = conn_request(w, c, buf, BENCH_SCRATCH);
    if (len == 0) {
        conn_fail(w, c, FAIL_CONNECT, "%s", "request too long");
        return;
    }
    while (c->req_sent < len) {
        ssize_t n = send(c->fd, buf + c->req_sent, len - c->req_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            conn_fail(w, c, FAIL_CONNECT, "send: %s", strerror(errno));
            return;
        }
        c->req_sent = (uint16_t)(c->req_sent + n);
    }
    c->state = CS_RECV_HEAD;
    conn_recv_head(w, c);
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
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(a->port), .sin_addr = a->addr};
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
        c->state = CS_SEND_REQ;
        conn_send_request(w, c);
    } else if (errno != EINPROGRESS) {
        conn_fail(w, c, FAIL_CONNECT, "connect: %s", strerror(errno));
    }
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
        c->state = CS_SEND_REQ;
        conn_send_request(w, c);
        return;
    }
    case CS_SEND_REQ:
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_send_request(w, c);
        return;
    case CS_RECV_HEAD:
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
            conn_recv_head(w, c);
        return;
    case CS_OPEN:
    case CS_CLOSING:
        if (events & EPOLLOUT) {
            if (c->is_pub)
                pub_flush(w, c->pub);
            else
                conn_ctl_flush(c);
            if (c->state == CS_DONE)
                return;
        }
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
            conn_read(w, c, events);
        return;
    default:
        return;
    }
}

void conn_begin_close(worker *w, conn *c)
{
    if (c->state == CS_OPEN) {
        c->state = CS_CLOSING;
        conn_send_close(w, c, 1000);
    } else if (conn_in_setup(c)) {
        conn_close(w, c);
    }
}

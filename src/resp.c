#include "resp.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RESP_READ_CHUNK 16384
/* Commands waiting for the socket beyond this are refused. */
#define RESP_OUT_MAX (64u * 1024 * 1024)
/* hiredis' reader keeps its buffer; past this much idle capacity it frees it. */
#define RESP_READER_MAXBUF (64 * 1024)

static void resp_on_loop(loop_handler *h, uint32_t events) { resp_on_io((resp_conn *)h, events); }

void resp_init(resp_conn *rc, void *owner, resp_event_fn on_event)
{
    memset(rc, 0, sizeof *rc);
    rc->fd = -1;
    rc->io.on_io = resp_on_loop;
    rc->owner = owner;
    rc->on_event = on_event;
}

bool resp_is_open(const resp_conn *rc) { return rc->fd >= 0; }
bool resp_is_up(const resp_conn *rc) { return rc->fd >= 0 && rc->connected; }

static void resp_set_events(resp_conn *rc, uint32_t want)
{
    if (want == rc->events || rc->fd < 0)
        return;
    if (rc->events)
        loop_mod(rc->loop, rc->fd, &rc->io, want);
    else
        loop_add(rc->loop, rc->fd, &rc->io, want);
    rc->events = want;
}

/* Tears down; pending callbacks learn it with NULL, in order. A callback may
 * reopen rc: the generation tells the loop below to stop touching it. */
static void resp_teardown(resp_conn *rc, const char *why, bool notify)
{
    if (rc->fd < 0)
        return;
    loop_del(rc->loop, rc->fd, &rc->io); /* its events left in this pass are dropped */
    close(rc->fd);
    rc->fd = -1;
    rc->events = 0;
    rc->connected = false;
    rc->gen++;
    redisReaderFree(rc->reader);
    rc->reader = NULL;
    free(rc->out);
    rc->out = NULL;
    rc->out_len = rc->out_off = rc->out_cap = 0;
    resp_pending *q = rc->q;
    size_t head = rc->q_head, len = rc->q_len, cap = rc->q_cap;
    uint32_t gen = rc->gen;
    rc->q = NULL;
    rc->q_head = rc->q_len = rc->q_cap = 0;
    for (size_t i = 0; i < len; i++) {
        resp_pending *p = &q[(head + i) % cap];
        if (p->fn)
            p->fn(rc, NULL, p->priv);
    }
    free(q);
    if (notify && rc->on_event && rc->gen == gen) /* not if a callback reopened it */
        rc->on_event(rc, RESP_DOWN, NULL, why);
}

void resp_close(resp_conn *rc) { resp_teardown(rc, NULL, false); }

bool resp_open(resp_conn *rc, loop *l, const char *host, int port, bool pubsub)
{
    resp_close(rc);
    snprintf(rc->host, sizeof rc->host, "%s", host);
    rc->port = port;
    rc->loop = l;
    rc->pubsub = pubsub;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai)
        return false;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (r != 0 && errno != EINPROGRESS) {
        close(fd);
        return false;
    }
    rc->reader = redisReaderCreate();
    if (!rc->reader) {
        close(fd);
        return false;
    }
    rc->reader->maxbuf = RESP_READER_MAXBUF;
    rc->fd = fd;
    rc->gen++;
    rc->connected = false;
    resp_set_events(rc, EPOLLOUT); /* writable: the connect finished, one way or the other */
    return true;
}

static bool resp_push_pending(resp_conn *rc, resp_reply_fn fn, void *priv)
{
    if (rc->q_len == rc->q_cap) {
        size_t ncap = rc->q_cap ? rc->q_cap * 2 : 16;
        resp_pending *nq = malloc(ncap * sizeof *nq);
        if (!nq)
            return false;
        for (size_t i = 0; i < rc->q_len; i++)
            nq[i] = rc->q[(rc->q_head + i) % rc->q_cap];
        free(rc->q);
        rc->q = nq;
        rc->q_head = 0;
        rc->q_cap = ncap;
    }
    rc->q[(rc->q_head + rc->q_len) % rc->q_cap] = (resp_pending){fn, priv};
    rc->q_len++;
    return true;
}

static bool resp_append(resp_conn *rc, const char *cmd, size_t len, resp_reply_fn fn, void *priv)
{
    if (rc->fd < 0)
        return false;
    if (rc->out_off && rc->out_off == rc->out_len)
        rc->out_off = rc->out_len = 0;
    if (rc->out_len - rc->out_off + len > RESP_OUT_MAX)
        return false; /* Redis is not reading: the owner treats it as a failure */
    if (rc->out_off > rc->out_cap / 2) { /* the written half is reused, not grown past */
        memmove(rc->out, rc->out + rc->out_off, rc->out_len - rc->out_off);
        rc->out_len -= rc->out_off;
        rc->out_off = 0;
    }
    if (rc->out_len + len > rc->out_cap) {
        size_t ncap = rc->out_cap ? rc->out_cap : 4096;
        while (ncap < rc->out_len + len)
            ncap *= 2;
        char *n = realloc(rc->out, ncap);
        if (!n)
            return false;
        rc->out = n;
        rc->out_cap = ncap;
    }
    if (!rc->pubsub && !resp_push_pending(rc, fn, priv))
        return false;
    memcpy(rc->out + rc->out_len, cmd, len);
    rc->out_len += len;
    return true; /* the owner flushes once per loop pass: one write for a burst */
}

bool resp_command(resp_conn *rc, resp_reply_fn fn, void *priv, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return false;
    bool ok = resp_append(rc, cmd, (size_t)n, fn, priv);
    redisFreeCommand(cmd);
    return ok;
}

bool resp_commandf(resp_conn *rc, resp_reply_fn fn, void *priv, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    bool ok = resp_append(rc, cmd, (size_t)n, fn, priv);
    redisFreeCommand(cmd);
    return ok;
}

void resp_flush(resp_conn *rc)
{
    if (rc->fd < 0 || !rc->connected)
        return;
    while (rc->out_off < rc->out_len) {
        ssize_t w = send(rc->fd, rc->out + rc->out_off, rc->out_len - rc->out_off, MSG_NOSIGNAL);
        if (w > 0) {
            rc->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            resp_set_events(rc, EPOLLIN | EPOLLOUT);
            return;
        } else {
            resp_teardown(rc, "write failed", true);
            return;
        }
    }
    rc->out_off = rc->out_len = 0;
    if (rc->out_cap > 65536) { /* a burst passed: give its buffer back */
        free(rc->out);
        rc->out = NULL;
        rc->out_cap = 0;
    }
    resp_set_events(rc, EPOLLIN);
}

static void resp_dispatch(resp_conn *rc, redisReply *r)
{
    if (rc->pubsub || rc->q_len == 0) {
        /* A reply nobody asked for on a command connection is a protocol
         * error (e.g. Redis refusing the connection): nothing to match it. */
        if (rc->pubsub && rc->on_event)
            rc->on_event(rc, RESP_PUSH, r, NULL);
        else
            resp_teardown(rc, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", true);
        return;
    }
    resp_pending p = rc->q[rc->q_head];
    rc->q_head = (rc->q_head + 1) % rc->q_cap;
    rc->q_len--;
    if (p.fn)
        p.fn(rc, r, p.priv);
}

void resp_on_io(resp_conn *rc, uint32_t events)
{
    if (rc->fd < 0)
        return;
    uint32_t gen = rc->gen;
    if (!rc->connected) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(rc->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err ||
            (events & (EPOLLERR | EPOLLHUP))) {
            resp_teardown(rc, err ? strerror(err) : "connect failed", true);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        rc->connected = true;
        resp_set_events(rc, EPOLLIN);
        if (rc->on_event)
            rc->on_event(rc, RESP_UP, NULL, NULL);
        if (rc->gen != gen)
            return;
        resp_flush(rc);
        return;
    }
    if (events & EPOLLOUT) {
        resp_flush(rc);
        if (rc->gen != gen)
            return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    char buf[RESP_READ_CHUNK];
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t n = recv(rc->fd, buf, sizeof buf, 0);
        if (n == 0) {
            resp_teardown(rc, "connection closed by Redis", true);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                resp_teardown(rc, strerror(errno), true);
            return;
        }
        if (redisReaderFeed(rc->reader, buf, (size_t)n) != REDIS_OK) {
            resp_teardown(rc, "protocol error", true);
            return;
        }
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
                resp_teardown(rc, "protocol error", true);
                return;
            }
            if (!reply)
                break;
            resp_dispatch(rc, reply);
            freeReplyObject(reply);
            if (rc->gen != gen)
                return;
        }
        if ((size_t)n < sizeof buf)
            return;
    }
}

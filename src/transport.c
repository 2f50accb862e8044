/* The plaintext transport, and the dispatch to TLS (tls.c) for a
 * connection that has it. */
#include "transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

/* A transport is embedded in every connection: the hand-off's state hangs
 * off the same pointer as the SSL, so it stays two words. */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(transport) == 16, "struct transport grew past 16 bytes");
#endif

bool transport_open(transport *t, int fd, SSL_CTX *tls, uint32_t *requests)
{
    *t = (transport){.fd = fd, .ready = true};
    return !tls || tls_open(t, tls, requests);
}

ssize_t transport_read(transport *t, uint8_t *buf, size_t cap, size_t owe_limit)
{
    if (t->tls)
        return tls_read(t, buf, cap, owe_limit);
    ssize_t r = read(t->fd, buf, cap);
    if (r < 0)
        return (errno == EAGAIN || errno == EINTR) ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
    return r;
}

bool transport_buffered(const transport *t) { return t->tls && tls_buffered(t); }

ssize_t transport_writev(transport *t, const struct iovec *iov, int n)
{
    if (t->tls)
        return tls_writev(t, iov, n);
    for (;;) {
        ssize_t r = writev(t->fd, iov, n);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? TRANSPORT_AGAIN : TRANSPORT_ERROR;
    }
}

int transport_flush(transport *t) { return t->tls ? tls_flush(t) : 1; }

size_t transport_pending(const transport *t) { return t->tls ? tls_pending(t) : 0; }

int transport_shutdown(transport *t)
{
    if (t->tls) {
        int rc = tls_shutdown(t);
        if (rc <= 0)
            return rc;
    }
    t->shut = true;
    shutdown(t->fd, SHUT_WR);
    return 1;
}

void transport_abort(transport *t) { shutdown(t->fd, SHUT_RDWR); }

void transport_idle(transport *t)
{
    if (t->tls)
        tls_idle(t);
}

void transport_close(transport *t)
{
    if (t->tls)
        tls_close(t);
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

/* One client connection's life: non-blocking connect (optionally from a
 * chosen 127.0.0.x source), upgrade request, response check, then frames in
 * and control frames out, and the close handshake. Both subscribers and
 * publishers use it; what a data message means is up to deliver.c/pub.c. */
#ifndef HB_CONN_H
#define HB_CONN_H

#include <stdint.h>
#include <sys/types.h>

#include "bench.h"

/* Starts connecting c; the caller counted it in w->inflight. */
void conn_start(worker *w, conn *c);
/* Handles epoll events for c. */
void conn_event(worker *w, conn *c, uint32_t events);
/* Close phase: sends a close frame if open (then waits for the server's),
 * or drops a connection still being set up. */
void conn_begin_close(worker *w, conn *c);
/* Closes the socket now. */
void conn_close(worker *w, conn *c);
/* The connection broke (EOF, reset, write error) outside a clean close. */
void conn_lost(worker *w, conn *c, const char *why);
/* Fails a connection that is still connecting or in its handshake. */
void conn_fail_timeout(worker *w, conn *c);
/* Writes to the socket or through TLS: > 0 bytes written, or -1 with errno
 * (EAGAIN: wait for an event, then offer the same bytes again). */
ssize_t conn_io_write(conn *c, const void *buf, size_t n);

static inline bool conn_in_setup(const conn *c)
{
    return c->state == CS_CONNECTING || c->state == CS_TLS || c->state == CS_SEND_REQ ||
           c->state == CS_RECV_HEAD;
}

#endif

/* The byte stream under a connection: the socket itself (transport.c) or
 * TLS over it (tls.c). One interface -- read, gathered write, flush of what
 * the transport holds, shutdown, bytes pending -- so a connection has one
 * read path and one flush path whatever carries it.
 *
 * Kernel TLS would be a third implementation: after the handshake OpenSSL
 * hands the keys to the kernel (SSL_OP_ENABLE_KTLS with a socket BIO for
 * writing), and transport_writev becomes a plain writev of the frames again,
 * with no staging copy and no ciphertext held here. It needs the kernel's
 * `tls` ULP, which this machine's kernel does not offer (docs/architecture.md).
 * What herald does instead is a user-space version of that hand-off for TLS
 * 1.3: tls.c frees the SSL after the handshake and protects the records
 * itself (tls13rec.c), so an idle TLS connection keeps ~300 bytes of TLS
 * state instead of OpenSSL's ~15 KB. */
#ifndef HERALD_TRANSPORT_H
#define HERALD_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
struct tls_conn;

/* Results other than a byte count. */
enum {
    TRANSPORT_AGAIN = -1,     /* nothing now: the socket is empty (read) or full (write) */
    TRANSPORT_ERROR = -2,     /* the peer is gone, or spoke no TLS */
    TRANSPORT_NOT_READY = -3, /* TLS handshake unfinished: reads will drive it */
    TRANSPORT_OVER = -4,      /* a read made us owe more records than allowed */
};

/* Plaintext handed to one SSL_write (a run of up to four full records): it
 * also bounds the ciphertext one gathered write leaves waiting. */
#define TRANSPORT_TLS_STAGE 65536

typedef struct transport {
    /* One pointer, so a connection does not grow: OpenSSL's SSL during the
     * handshake (and for TLS 1.2 throughout), then, for TLS 1.3, the records
     * carried on without it (tls.c's hand-off, tls13rec.c). */
    union {
        SSL *ssl;             /* tls && !handed */
        struct tls_conn *rec; /* tls && handed */
    };
    int fd;
    bool ready : 1;  /* the first TLS handshake finished (always, in plaintext); a
                      * KeyUpdate later puts OpenSSL "in init" again: no new handshake */
    bool shut : 1;   /* our side is shut down (close_notify generated) */
    bool tls : 1;    /* TLS, through ssl or rec; false: plaintext */
    bool handed : 1; /* the SSL is freed: rec carries the records */
} transport;

/* Over fd; TLS (server side) when tls is set, its post-handshake requests
 * (KeyUpdates) counted into *requests. False when out of memory. */
bool transport_open(transport *t, int fd, SSL_CTX *tls, uint32_t *requests);

/* Reads up to cap bytes: > 0 bytes, 0 end of stream, or a TRANSPORT_ code.
 * A TLS read takes a bounded number of records that carry no data, and stops
 * with TRANSPORT_OVER when the records it made us owe (handshake flights,
 * KeyUpdate replies) grew the pending bytes past owe_limit. */
ssize_t transport_read(transport *t, uint8_t *buf, size_t cap, size_t owe_limit);

/* True when decrypted bytes wait inside TLS, where epoll cannot see them. */
bool transport_buffered(const transport *t);

/* Writes the transport's own backlog (TLS records), then up to the gathered
 * frames: returns how many bytes of them were taken (TLS: encrypted; records
 * that did not fit the socket wait, counted by transport_pending), or a
 * TRANSPORT_ code. */
ssize_t transport_writev(transport *t, const struct iovec *iov, int n);

/* Writes the transport's backlog only: 1 all out, 0 socket full, -1 error. */
int transport_flush(transport *t);

/* Bytes the transport holds for writing (TLS records). */
size_t transport_pending(const transport *t);

/* Shuts our side down after what is queued: TLS close_notify, then
 * SHUT_WR. 1 done, 0 socket full (call again when writable), -1 error. */
int transport_shutdown(transport *t);

/* Stops all I/O now (both directions), from any context. */
void transport_abort(transport *t);

/* The connection is idle: give back buffers that can be rebuilt. */
void transport_idle(transport *t);

/* Frees the state and closes the socket. */
void transport_close(transport *t);

/* tls.c: the TLS implementation behind the functions above. */
bool tls_open(transport *t, SSL_CTX *ctx, uint32_t *requests);
ssize_t tls_read(transport *t, uint8_t *buf, size_t cap, size_t owe_limit);
ssize_t tls_writev(transport *t, const struct iovec *iov, int n);
int tls_flush(transport *t);
size_t tls_pending(const transport *t);
bool tls_buffered(const transport *t);
int tls_shutdown(transport *t);
void tls_idle(transport *t);
void tls_close(transport *t);

#endif

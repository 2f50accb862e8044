/* A hostile TLS 1.3 client for tests/hostile/test_tls_keyupdate.py (Python's ssl module cannot send
 * KeyUpdate): after the handshake it sends KeyUpdate(update_requested) messages, each of which makes
 * the server queue a KeyUpdate of its own, and never reads them.
 *
 * usage: tls_keyupdate HOST PORT COUNT SECONDS
 *
 * Sends up to COUNT KeyUpdates within SECONDS (non-blocking: a server that stops reading does not
 * block us). If the connection is still alive then, it reads the raw socket (not TLS) until EOF/reset
 * or the SECONDS deadline, only to learn whether the server has closed it. Prints one line:
 *   sent=N flood_s=F closed=0|1 how=WORD closed_s=C
 * (closed_s: seconds from the first KeyUpdate to the moment we saw the close, -1 if never).
 * Exit status 0 when the report is meaningful, 2 for usage or setup errors.
 *
 * usage: tls_keyupdate HOST PORT subscribe GROUP COUNT [CIPHERSUITE]
 *
 * A well-behaved client instead (the server's records after its hand-off, tls.c): a WebSocket
 * subscriber to GROUP over TLS 1.3 that, once subscribed and idle for a moment (the server frees its
 * SSL then), sends COUNT KeyUpdate(update_requested), then a ping, and expects the pong (both sides
 * under new keys). Prints "pong server_keyupdates=N" (the KeyUpdates the server answered with) and "ready", then "msg=PAYLOAD" for the first data message, then
 * sends close_notify and prints "closed=eof" once the server has closed. Exit status 1 on a failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what)
{
    fprintf(stderr, "tls_keyupdate: %s: %s\n", what, strerror(errno));
    ERR_print_errors_fp(stderr);
    return 2;
}

static int tcp_connect(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    /* A small receive buffer and a small segment size: the kernel sizes the server's send buffer from
     * the segment size, so its KeyUpdates back up into the server itself within a few thousand,
     * instead of filling megabytes of socket buffers first. */
    int rcv = 4096, mss = 536;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
    }
    struct timeval tv = {.tv_sec = 10};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* After the flood: the raw socket until EOF or reset (the server closed) or the deadline. */
static const char *wait_closed(int fd, double deadline)
{
    static char sink[65536];
    while (now_s() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = (int)((deadline - now_s()) * 1000) + 1;
        if (poll(&p, 1, ms) <= 0)
            continue;
        ssize_t r = recv(fd, sink, sizeof sink, 0);
        if (r == 0)
            return "eof";
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            return errno == ECONNRESET ? "reset" : "error";
    }
    return NULL;
}

/* KeyUpdates the server sent us (its answers to ours). */
static long server_keyupdates;

static void on_message(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                       void *arg)
{
    (void)version, (void)ssl, (void)arg;
    if (!write_p && type == SSL3_RT_HANDSHAKE && len && ((const uint8_t *)buf)[0] == SSL3_MT_KEY_UPDATE)
        server_keyupdates++;
}

static int read_full(SSL *ssl, uint8_t *p, size_t n)
{
    while (n) {
        int r = SSL_read(ssl, p, (int)n);
        if (r <= 0)
            return -1;
        p += r, n -= (size_t)r;
    }
    return 0;
}

/* One server frame (unmasked): its opcode, payload into buf (cap bytes). */
static long read_frame(SSL *ssl, int *op, uint8_t *buf, size_t cap)
{
    uint8_t h[8];
    if (read_full(ssl, h, 2) < 0)
        return -1;
    *op = h[0] & 15;
    uint64_t len = h[1] & 127;
    if (len >= 126) {
        size_t k = len == 126 ? 2 : 8;
        if (read_full(ssl, h, k) < 0)
            return -1;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = len << 8 | h[i];
    }
    if (len > cap || read_full(ssl, buf, len) < 0)
        return -1;
    return (long)len;
}

static int subscribe(SSL *ssl, int fd, const char *group, long count)
{
    static uint8_t buf[1 << 20];
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /ws?groups=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     group);
    if (SSL_write(ssl, req, n) != n)
        return die("write upgrade");
    size_t have = 0;
    while (have < 4 || memcmp(buf + have - 4, "\r\n\r\n", 4)) { /* the 101, byte by byte */
        if (have == 4096 || SSL_read(ssl, buf + have, 1) != 1)
            return die("read 101");
        have++;
    }
    if (strncmp((char *)buf, "HTTP/1.1 101", 12)) {
        fprintf(stderr, "tls_keyupdate: no 101: %.*s\n", (int)have, buf);
        return 1;
    }
    usleep(300 * 1000); /* idle: the server hands the connection off */
    for (long i = 0; i < count; i++)
        if (!SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) || SSL_do_handshake(ssl) != 1)
            return die("KeyUpdate");
    const uint8_t ping[] = {0x89, 0x82, 1, 2, 3, 4, 'k' ^ 1, 'p' ^ 2};
    if (SSL_write(ssl, ping, sizeof ping) != (int)sizeof ping)
        return die("write ping");
    int op;
    long len = read_frame(ssl, &op, buf, sizeof buf);
    if (len != 2 || op != 0xA || memcmp(buf, "kp", 2)) {
        fprintf(stderr, "tls_keyupdate: expected the pong, got op %d len %ld\n", op, len);
        return 1;
    }
    printf("pong server_keyupdates=%ld\nready\n", server_keyupdates);
    fflush(stdout);
    len = read_frame(ssl, &op, buf, sizeof buf);
    if (len < 0 || (op != 1 && op != 2)) {
        fprintf(stderr, "tls_keyupdate: expected a message, got op %d len %ld\n", op, len);
        return 1;
    }
    printf("msg=%.*s\n", (int)len, buf);
    fflush(stdout);
    SSL_shutdown(ssl); /* close_notify */
    const char *how = wait_closed(fd, now_s() + 10);
    printf("closed=%s\n", how ? how : "no");
    return how ? 0 : 1;
}

int main(int argc, char **argv)
{
    if ((argc == 6 || argc == 7) && !strcmp(argv[3], "subscribe")) {
        signal(SIGPIPE, SIG_IGN);
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))
            return die("SSL_CTX");
        if (argc == 7 && !SSL_CTX_set_ciphersuites(ctx, argv[6]))
            return die("ciphersuite");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_msg_callback(ctx, on_message);
        int fd = tcp_connect(argv[1], argv[2]);
        SSL *ssl = fd < 0 ? NULL : SSL_new(ctx);
        if (!ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1)
            return die("TLS handshake");
        if (argc == 7 && strcmp(SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), argv[6])) {
            fprintf(stderr, "tls_keyupdate: negotiated %s\n", SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
            return 1;
        }
        int rc = subscribe(ssl, fd, argv[4], atol(argv[5]));
        SSL_free(ssl);
        close(fd);
        SSL_CTX_free(ctx);
        return rc;
    }
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT COUNT SECONDS\n", argv[0]);
        return 2;
    }
    long count = atol(argv[3]);
    double seconds = atof(argv[4]);
    signal(SIGPIPE, SIG_IGN);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION))
        return die("SSL_CTX");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* an attacker does not care who it talks to */
    int fd = tcp_connect(argv[1], argv[2]);
    if (fd < 0)
        return die("connect");
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1)
        return die("TLS handshake");
    if (SSL_version(ssl) != TLS1_3_VERSION) {
        fprintf(stderr, "tls_keyupdate: negotiated %s, not TLS 1.3\n", SSL_get_version(ssl));
        return 2;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    double t0 = now_s(), deadline = t0 + seconds;
    long sent = 0, want_read = 0, want_write = 0;
    int scheduled = 0;
    const char *how = NULL;
    while (sent < count && now_s() < deadline) {
        if (!scheduled) {
            if (!SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED))
                return die("SSL_key_update");
            scheduled = 1;
        }
        int r = SSL_do_handshake(ssl); /* writes the scheduled KeyUpdate */
        if (r == 1) {
            sent++;
            scheduled = 0;
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            want_read += e == SSL_ERROR_WANT_READ;
            want_write += e == SSL_ERROR_WANT_WRITE;
            /* The server is not reading: wait a little, watching for its close. */
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 50);
            if (p.revents & (POLLERR | POLLHUP)) {
                how = "hangup";
                break;
            }
            continue;
        }
        how = errno == ECONNRESET ? "reset" : errno == EPIPE ? "epipe" : "tls-error";
        break;
    }
    double flood = now_s() - t0;
    if (!how)
        how = wait_closed(fd, deadline);
    double closed_s = how ? now_s() - t0 : -1;
    printf("sent=%ld flood_s=%.3f closed=%d how=%s closed_s=%.3f want_write=%ld want_read=%ld\n", sent,
           flood, how != NULL, how ? how : "open", closed_s, want_write, want_read);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return 0;
}

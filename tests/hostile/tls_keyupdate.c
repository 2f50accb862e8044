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
 * Exit status 0 when the report is meaningful, 2 for usage or setup errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
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

int main(int argc, char **argv)
{
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

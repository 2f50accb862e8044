#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

/* One SO_REUSEPORT listener per worker: the kernel spreads new connections
 * over the workers, so no thread hands sockets to another. */
static int server_listen(const config *cfg, uint16_t port, struct sockaddr_storage *bound)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char ports[8];
    snprintf(ports, sizeof ports, "%u", port);
    int rc = getaddrinfo(cfg->listen_host, ports, &hints, &res);
    if (rc) {
        log_msg(LOG_ERROR, "cannot resolve %s: %s", cfg->listen_host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        log_msg(LOG_ERROR, "cannot listen on %s:%u: %s", cfg->listen_host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    socklen_t len = sizeof *bound;
    getsockname(fd, (struct sockaddr *)bound, &len);
    return fd;
}

static uint16_t server_port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

size_t server_metrics_text(server *s, char *buf, size_t cap, int json)
{
    const metrics *blocks[64];
    int n = s->nworkers < 64 ? s->nworkers : 64;
    for (int i = 0; i < n; i++)
        blocks[i] = &s->workers[i].m;
    metrics sum;
    metrics_sum(blocks, (size_t)n, &sum);
    double up = (double)(worker_clock_ms() - s->start_ms) / 1000.0;
    return json ? metrics_json(&sum, s->nworkers, up, buf, cap)
                : metrics_prometheus(&sum, s->nworkers, up, buf, cap);
}

static int server_wait_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_msg(LOG_INFO, "SIGHUP: nothing to reload (no config file)");
            continue;
        }
        return sig;
    }
}

int server_run(const config *cfg)
{
    server s = {.cfg = cfg, .nworkers = cfg->workers, .start_ms = worker_clock_ms()};
    /* Signals are handled by this thread alone (sigwait); workers inherit the
     * blocked mask. A vanished peer must surface as EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    s.workers = calloc((size_t)s.nworkers, sizeof *s.workers);
    if (!s.workers)
        return 1;
    int status = 0, started = 0, inited = 0;
    struct sockaddr_storage bound;
    for (int i = 0; i < s.nworkers; i++) {
        int fd = server_listen(cfg, i == 0 ? cfg->listen_port : s.port, &bound);
        if (fd < 0) {
            status = 1;
            break;
        }
        if (i == 0)
            s.port = server_port_of(&bound);
        if (worker_init(&s.workers[i], &s, i, fd) < 0) {
            log_msg(LOG_ERROR, "cannot set up worker %d: %s", i, strerror(errno));
            inited = i + 1;
            status = 1;
            break;
        }
        inited = i + 1;
    }
    if (status == 0) {
        for (; started < s.nworkers; started++)
            if (worker_start(&s.workers[started]) != 0) {
                log_msg(LOG_ERROR, "cannot start worker thread");
                status = 1;
                break;
            }
    }
    if (status == 0) {
        const char *h = cfg->listen_host;
        bool v6 = strchr(h, ':') != NULL;
        fprintf(stderr, "herald: listening on %s%s%s:%u (%d workers)\n", v6 ? "[" : "", h,
                v6 ? "]" : "", s.port, s.nworkers);
        int sig = server_wait_signal();
        log_msg(LOG_INFO, "%s: closing connections (up to %.1f s)",
                sig == SIGINT ? "SIGINT" : "SIGTERM", (double)cfg->shutdown_timeout_ms / 1000.0);
    }
    for (int i = 0; i < started; i++)
        worker_request_stop(&s.workers[i]);
    for (int i = 0; i < started; i++)
        worker_join(&s.workers[i]);
    for (int i = 0; i < inited; i++)
        worker_cleanup(&s.workers[i]);
    free(s.workers);
    if (status == 0)
        log_msg(LOG_INFO, "stopped");
    return status;
}

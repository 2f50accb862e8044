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

#include "admit.h"
#include "broker.h"
#include "chan.h"
#include "log.h"
#include "memwatch.h"
#include "tls.h"

/* One SO_REUSEPORT listener per worker: the kernel spreads new connections
 * over the workers, so no thread hands sockets to another. */
static int server_listen(const config *cfg, uint16_t port, bool probe,
                         struct sockaddr_storage *bound)
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
    int one = 1;
    if (port != 0 && probe) {
        /* SO_REUSEPORT would let us share a port another server (even another
         * herald) already listens on: bind once without it to find out. */
        int t = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (t >= 0 && (setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
                       bind(t, res->ai_addr, res->ai_addrlen) < 0)) {
            log_msg(LOG_ERROR, "cannot listen on %s:%u: %s", cfg->listen_host, port,
                    strerror(errno));
            close(t);
            freeaddrinfo(res);
            return -1;
        }
        if (t >= 0)
            close(t);
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
    metrics_memory mem;
    memwatch_collect(s, &mem);
    double up = (double)(loop_clock_ms() - s->start_ms) / 1000.0;
    /* On the heap: it holds every broker link. */
    broker_info *bi = broker_enabled() ? malloc(sizeof *bi) : NULL;
    if (bi)
        broker_snapshot(bi);
    size_t len = json ? metrics_json(&sum, n, &mem, bi, up, buf, cap)
                      : metrics_prometheus(&sum, blocks, n, &mem, bi, up, buf, cap);
    free(bi);
    return len;
}

static size_t server_metrics_for(void *s, char *buf, size_t cap, int json)
{
    return server_metrics_text(s, buf, cap, json);
}

static void server_memory_tick(void *s, uint64_t now_ms) { memwatch_tick(s, now_ms); }

worker_deps server_worker_deps(server *s)
{
    return (worker_deps){.cfg = s->cfg, .tls = s->tls, .hub = &s->hub, .start_ms = s->start_ms,
                         .pressure = &s->mem_pressure, .metrics_text = server_metrics_for,
                         .memory_tick = server_memory_tick, .owner = s};
}

extern char **environ;

/* Waits until every worker has started a loop pass with generation gen: from
 * then on none of them can still hold the previous snapshot (quiescent-state
 * reclamation, the C counterpart of the seed's atomic.Value swap). */
static bool server_quiesce(server *s, uint64_t gen)
{
    for (int tries = 0; tries < 500; tries++) {
        bool all = true;
        for (int i = 0; i < s->nworkers; i++) {
            worker *w = &s->workers[i];
            if (atomic_load_explicit(&w->seen_generation, memory_order_acquire) < gen) {
                all = false;
                worker_wake(w);
            }
        }
        if (all)
            return true;
        usleep(10000);
    }
    return false;
}

static void server_reload(server *s, int argc, char **argv)
{
    const config *old = config_get();
    config *c = NULL;
    /* Collect the loader's messages so they reach the log in its format. */
    char *why = NULL;
    size_t whylen = 0;
    FILE *err = open_memstream(&why, &whylen);
    config_result rc = config_load(argc, argv, environ, err ? err : stderr, err ? err : stderr, &c);
    if (err)
        fclose(err);
    if (rc != CONFIG_OK) {
        if (why)
            for (char *line = strtok(why, "\n"); line; line = strtok(NULL, "\n"))
                log_msg(LOG_ERROR, "reload: %s", line);
        log_msg(LOG_ERROR, "reload failed: keeping the previous configuration");
        free(why);
        return;
    }
    free(why);
    /* What the running process cannot change stays as it was. */
    if (strcmp(c->listen, old->listen) || c->workers != old->workers ||
        (c->tls_cert ? !old->tls_cert || strcmp(c->tls_cert, old->tls_cert) : !!old->tls_cert) ||
        (c->tls_key ? !old->tls_key || strcmp(c->tls_key, old->tls_key) : !!old->tls_key))
        log_msg(LOG_WARN, "reload: listen, workers and TLS files change only on restart");
    free(c->listen);
    c->listen = strdup(old->listen);
    memcpy(c->listen_host, old->listen_host, sizeof c->listen_host);
    c->listen_port = old->listen_port;
    c->workers = old->workers;
    free(c->tls_cert);
    free(c->tls_key);
    c->tls_cert = old->tls_cert ? strdup(old->tls_cert) : NULL;
    c->tls_key = old->tls_key ? strdup(old->tls_key) : NULL;
    c->generation = old->generation + 1;
    log_configure((log_level)c->log_level, c->log_format == LOGF_JSON);
    config_set(c);
    s->cfg = c;
    if (server_quiesce(s, c->generation))
        config_free((config *)old);
    else
        log_msg(LOG_WARN, "reload: a worker did not pass a quiescent point; "
                          "keeping the old configuration's memory");
    log_msg(LOG_INFO, "reloaded configuration (generation %llu, %zu publish keys, "
                      "%zu JWT secrets, %zu allowed origins)",
            (unsigned long long)c->generation, c->publish_keys.n, c->jwt_secrets.n,
            c->allowed_origins.n);
}

static int server_wait_signal(server *s, int argc, char **argv)
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
            server_reload(s, argc, argv);
            continue;
        }
        return sig;
    }
}

/* While the workers drain, a second SIGINT/SIGTERM turns a 1012 drain into
 * an immediate 1001 close. */
static void server_wait_workers(server *s, int started)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    struct timespec tick = {0, 50 * 1000 * 1000};
    for (;;) {
        bool all = true;
        for (int i = 0; i < started; i++)
            all &= atomic_load_explicit(&s->workers[i].done, memory_order_acquire);
        if (all)
            return;
        if (sigtimedwait(&set, NULL, &tick) > 0) {
            log_msg(LOG_INFO, "second signal: closing every connection now");
            for (int i = 0; i < started; i++)
                worker_request_stop(&s->workers[i], false);
        }
    }
}

int server_run(const config *cfg, int argc, char **argv)
{
    server s = {.cfg = cfg, .nworkers = cfg->workers, .start_ms = loop_clock_ms()};
    /* Signals are handled by this thread alone (sigwait); workers inherit the
     * blocked mask. A vanished peer must surface as EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    admit_init();
    if (!chan_init(cfg->broker == NULL) || !broker_init(cfg->broker))
        return 1;
    if (cfg->tls_cert && !(s.tls = tls_ctx_new(cfg->tls_cert, cfg->tls_key)))
        return 1;
    s.workers = calloc((size_t)s.nworkers, sizeof *s.workers);
    if (!s.workers)
        return 1;
    worker_deps deps = server_worker_deps(&s);
    int status = 0, started = 0, inited = 0;
    struct sockaddr_storage bound;
    for (int i = 0; i < s.nworkers; i++) {
        int fd = server_listen(cfg, i == 0 ? cfg->listen_port : s.port, i == 0, &bound);
        if (fd < 0) {
            status = 1;
            break;
        }
        if (i == 0)
            s.port = server_port_of(&bound);
        if (worker_init(&s.workers[i], &deps, i, fd) < 0) {
            log_msg(LOG_ERROR, "cannot set up worker %d: %s", i, strerror(errno));
            inited = i + 1;
            status = 1;
            break;
        }
        inited = i + 1;
    }
    if (status == 0)
        broker_attach(&s.workers[0].dl);
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
        fprintf(stderr, "herald: listening on %s%s%s:%u (%d workers%s)\n", v6 ? "[" : "", h,
                v6 ? "]" : "", s.port, s.nworkers, s.tls ? ", TLS" : "");
        int sig = server_wait_signal(&s, argc, argv);
        cfg = s.cfg;
        log_msg(LOG_INFO, "%s: closing connections (up to %.1f s)",
                sig == SIGINT ? "SIGINT" : "SIGTERM",
                (double)(cfg->shutdown_timeout_ms + (sig == SIGTERM ? cfg->drain_window_ms : 0)) /
                    1000.0);
        for (int i = 0; i < started; i++)
            worker_request_stop(&s.workers[i], sig == SIGTERM);
        server_wait_workers(&s, started);
    } else {
        for (int i = 0; i < started; i++)
            worker_request_stop(&s.workers[i], false);
    }
    for (int i = 0; i < started; i++)
        worker_join(&s.workers[i]);
    broker_destroy(); /* before the inboxes go: its callbacks may still publish */
    for (int i = 0; i < inited; i++)
        worker_cleanup(&s.workers[i]);
    free(s.workers);
    chan_destroy();
    admit_destroy();
    if (s.tls)
        tls_ctx_free(s.tls);
    if (status == 0)
        log_msg(LOG_INFO, "stopped");
    return status;
}

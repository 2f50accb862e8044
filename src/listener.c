#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "admit.h"
#include "log.h"

#define LISTENER_ACCEPT_BATCH 64
#define LISTENER_PAUSE_MS 100

static void listener_on_io(loop_handler *h, uint32_t events)
{
    (void)events;
    listener *ls = (listener *)h;
    conn_env *env = ls->env;
    for (int i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(ls->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return;
            METRIC_INC(env->m, accept_errors);
            if (errno == EMFILE || errno == ENFILE) {
                if (ls->reserve_fd >= 0) {
                    close(ls->reserve_fd);
                    fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC);
                    if (fd >= 0)
                        close(fd);
                    ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                /* The listener stays readable while connections wait, and the
                 * reserve can be lost to another worker's accept: stop
                 * watching it for a moment instead of spinning on it. */
                loop_mod(env->loop, ls->fd, &ls->h, 0);
                ls->resume_ms = env->loop->now_ms + LISTENER_PAUSE_MS;
                log_msg(LOG_WARN, "out of file descriptors: pausing accepts for %d ms",
                        LISTENER_PAUSE_MS);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        listener_adopt(ls, fd, &peer);
    }
}

bool listener_init(listener *ls, int fd, conn_env *env)
{
    *ls = (listener){.h.on_io = listener_on_io, .fd = fd, .env = env};
    /* A spare descriptor: on EMFILE we close it, accept and drop the pending
     * connection, and reopen it. */
    ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return loop_add(env->loop, fd, &ls->h, EPOLLIN) == 0;
}

struct conn *listener_adopt(listener *ls, int fd, const struct sockaddr_storage *peer)
{
    conn_env *env = ls->env;
    conn *c = conn_new(env, fd); /* closes fd on failure */
    if (!c)
        return NULL;
    if (loop_add(env->loop, fd, &c->io, EPOLLIN) < 0) {
        conn_destroy(c);
        return NULL;
    }
    admit_key(peer, env->cfg->ipv6_prefix, &c->ip);
    if (admit_ip_acquire(&c->ip, env->cfg->max_conns_per_ip)) {
        c->ip_counted = true;
    } else {
        METRIC_INC(env->m, rate_limited);
        conn_http_refuse(c, 429, "too many connections from this address", NULL);
    }
    return c;
}

void listener_resume_due(listener *ls)
{
    if (!ls->resume_ms || ls->env->loop->now_ms < ls->resume_ms || ls->fd < 0)
        return;
    loop_mod(ls->env->loop, ls->fd, &ls->h, EPOLLIN);
    ls->resume_ms = 0;
    if (ls->reserve_fd < 0)
        ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void listener_close(listener *ls)
{
    if (ls->fd >= 0) {
        if (ls->env && ls->env->loop)
            loop_del(ls->env->loop, ls->fd, &ls->h);
        close(ls->fd);
    }
    ls->fd = -1;
    if (ls->reserve_fd >= 0)
        close(ls->reserve_fd);
    ls->reserve_fd = -1;
}

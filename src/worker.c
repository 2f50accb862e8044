#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "chan.h"
#include "conn.h"
#include "conn_sse.h"
#include "deflate.h"
#include "envelope.h"
#include "log.h"
#include "memwatch.h"
#include "server.h"

#define WORKER_INBOX 16384
#define WORKER_EVENTS 256
#define WORKER_TICK_MS 100
#define WORKER_ACCEPT_BATCH 64
/* Adaptive coalescing. A flush pass that wrote to many sockets (a large
 * fan-out, where each write carries one frame and syscalls are the cost)
 * holds the next pass back for twice as long as it took, capped: under load
 * more frames then share each write on both ends, while passes over fewer
 * sockets (and every idle server) flush at once, so closed-loop publishers
 * are not slowed. Measured in BENCHMARKS.md (S2 vs S3). */
#define WORKER_FLUSH_DELAY_MAX_NS (20 * 1000000ull)
#define WORKER_FLUSH_COALESCE_CONNS 1024

/* Tags that tell the loop's own descriptors from connections. */
static char worker_tag_listen, worker_tag_wake;

uint64_t worker_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t worker_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int worker_init(worker *w, server *srv, int id, int listen_fd)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->srv = srv;
    w->cfg = srv->cfg;
    w->lfd = listen_fd;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    /* A spare descriptor: on EMFILE we close it, accept and drop the pending
     * connection, and reopen it, so a full table never spins the loop. */
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    w->scratch_cap = 65536 + w->cfg->max_header_size;
    w->scratch = malloc(w->scratch_cap);
    if (srv->tls && !(w->tls_stage = malloc(CONN_TLS_STAGE)))
        return -1;
    pthread_mutex_init(&w->overflow_lock, NULL);
    atomic_init(&w->overflow_used, false);
    w->now_ms = worker_clock_ms();
    atomic_init(&w->notified, false);
    atomic_init(&w->stop, 0);
    atomic_init(&w->seen_generation, 0);
    atomic_init(&w->done, false);
    if (w->epfd < 0 || w->efd < 0 || !w->scratch || !groups_init(&w->groups) ||
        !ring_init(&w->inbox, WORKER_INBOX))
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &worker_tag_listen};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) < 0)
        return -1;
    ev.data.ptr = &worker_tag_wake;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev) < 0)
        return -1;
    return 0;
}

/* ---- bookkeeping --------------------------------------------------------- */

static bool worker_grow(void *arrp, uint32_t *cap, uint32_t n)
{
    void **arr = arrp;
    if (n < *cap)
        return true;
    uint32_t nc = *cap ? *cap * 2 : 64;
    void *a = realloc(*arr, sizeof(void *) * nc);
    if (!a)
        return false;
    *arr = a;
    *cap = nc;
    return true;
}

bool worker_add_conn(worker *w, conn *c)
{
    if (!worker_grow(&w->conns, &w->cap_conns, w->nconns))
        return false;
    c->slot = w->nconns;
    w->conns[w->nconns++] = c;
    return true;
}

void worker_remove_conn(worker *w, conn *c)
{
    conn *last = w->conns[--w->nconns];
    w->conns[c->slot] = last;
    last->slot = c->slot;
}

bool worker_add_all(worker *w, conn *c)
{
    if (!worker_grow(&w->all, &w->cap_all, w->nall))
        return false;
    c->all_slot = w->nall;
    c->in_all = true;
    w->all[w->nall++] = c;
    return true;
}

void worker_remove_all(worker *w, conn *c)
{
    conn *last = w->all[--w->nall];
    w->all[c->all_slot] = last;
    last->all_slot = c->all_slot;
    c->in_all = false;
}

void worker_mark_dirty(worker *w, conn *c)
{
    if (c->dirty || c->dead)
        return;
    c->dirty = true;
    c->next_dirty = w->dirty;
    w->dirty = c;
}

int worker_epoll_mod(worker *w, conn *c, bool want_out)
{
    struct epoll_event ev = {.events = (c->read_paused ? 0 : EPOLLIN) | (want_out ? EPOLLOUT : 0),
                             .data.ptr = c};
    return epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* ---- delivery ------------------------------------------------------------ */

/* Fan-out slots: one per format, then one per WebSocket format compressed
 * (permessage-deflate is a WebSocket extension: SSE formats have none). */
#define WORKER_SLOTS (FORMAT_COUNT + FORMAT_WS_COUNT)

/* The frame a subscriber gets: its format's envelope, and that compressed
 * when it negotiated permessage-deflate (and the payload fits the window it
 * allowed us). Each is built at most once per message and shared; v[] holds
 * them per slot for the whole fan-out. */
static int worker_frame_for(worker *w, msg *m, const conn *c, msg *v[WORKER_SLOTS])
{
    unsigned f = c->format;
    if (!v[f] && !(v[f] = f ? envelope_variant(m, (msg_format)f) : m))
        return -1;
    if (f >= FORMAT_WS_COUNT || !c->pmd || !conn_pmd_fits(c, v[f]))
        return (int)f;
    unsigned k = FORMAT_COUNT + f;
    if (!v[k])
        v[k] = deflate_variant(v[f], w->cfg->compression_min_size, &w->m);
    return v[k] != v[f] ? (int)k : (int)f;
}

/* The caller holds a reference for the whole loop, and nothing in it can
 * release m (queues only drop messages queued before m), so the references
 * for all the queues are added with one atomic operation per frame at the
 * end. Subscribers asking for an envelope or compression get the message's
 * shared variant. */
static void worker_fanout(worker *w, msg *m)
{
    msg *v[WORKER_SLOTS] = {m};
    unsigned queued[WORKER_SLOTS] = {0};
    if (m->group_len == 0) { /* every subscriber, whatever its groups */
        for (uint32_t i = 0; i < w->nall; i++) {
            conn *c = w->all[i];
            int k = worker_frame_for(w, m, c, v);
            if (k >= 0)
                queued[k] += conn_enqueue(c, v[k]);
        }
    } else {
        group *g = groups_find(&w->groups, m->group, m->group_len);
        for (uint32_t i = 0; g && i < g->n; i++) {
            group_entry *gm = &g->members[i];
            if (m->offset <= gm->after && m->epoch_gen == gm->after_gen)
                continue; /* already sent by this subscriber's history replay */
            int k = worker_frame_for(w, m, gm->c, v);
            if (k >= 0)
                queued[k] += conn_enqueue(gm->c, v[k]);
        }
    }
    for (int k = 0; k < WORKER_SLOTS; k++)
        if (queued[k]) {
            msg_ref_n(v[k], queued[k]);
            if (k >= FORMAT_COUNT)
                METRIC_ADD(&w->m, deflate_deliveries, queued[k]);
        }
}

static void worker_notify(worker *target)
{
    /* One wake-up per drain: later pushes see the flag still set. */
    if (!atomic_exchange_explicit(&target->notified, true, memory_order_acq_rel)) {
        uint64_t one = 1;
        ssize_t r = write(target->efd, &one, sizeof one);
        (void)r; /* EAGAIN means the counter is already non-zero: awake anyway */
    }
}

static bool fifo_push(worker *o, msg_fifo *f, msg *m)
{
    if (f->count == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 256;
        msg **n = malloc(sizeof *n * nc);
        if (!n)
            return false;
        atomic_store_explicit(&o->overflow_bytes, sizeof *n * nc, memory_order_relaxed);
        for (size_t i = 0; i < f->count; i++)
            n[i] = f->items[(f->head + i) % f->cap];
        free(f->items);
        f->items = n;
        f->cap = nc;
        f->head = 0;
    }
    f->items[(f->head + f->count++) % f->cap] = m;
    return true;
}

/* Hands m (one reference) to a worker. Called with the group's channel lock
 * held, so for one group the pushes into any inbox happen in offset order:
 * once a message went to the overflow list, later ones follow it there until
 * the owner has taken the list. */
static void worker_push(worker *o, msg *m)
{
    if (!atomic_load_explicit(&o->overflow_used, memory_order_acquire) &&
        ring_push(&o->inbox, m))
        return;
    pthread_mutex_lock(&o->overflow_lock);
    bool ok = fifo_push(o, &o->overflow, m);
    if (ok)
        atomic_store_explicit(&o->overflow_used, true, memory_order_release);
    pthread_mutex_unlock(&o->overflow_lock);
    if (!ok) {
        log_msg(LOG_ERROR, "out of memory: message lost for worker %d", o->id);
        msg_unref(m);
    }
}

/* Under the group's lock: offset, history, and every inbox in offset order.
 * Local subscribers too go through our own inbox: delivering them directly
 * could overtake an earlier offset of the same group still in the ring. */
static void worker_sequence(worker *w, msg *m, bool at, uint64_t offset)
{
    chan *ch = chan_lock(m->group, m->group_len);
    if (!ch) {
        log_msg(LOG_ERROR, "out of memory: publish to '%s' lost", m->group);
        msg_unref(m);
        return;
    }
    chan_history_cfg hc = worker_history_cfg(w);
    if (at)
        chan_append_at(ch, m, offset, &hc, w->now_ms);
    else
        chan_append(ch, m, &hc, w->now_ms);
    m->epoch = chan_epoch();
    m->epoch_gen = chan_epoch_gen();
    for (int i = 0; i < w->srv->nworkers; i++)
        worker_push(&w->srv->workers[i], msg_ref(m));
    chan_unlock(ch);
    for (int i = 0; i < w->srv->nworkers; i++)
        if (&w->srv->workers[i] != w)
            worker_notify(&w->srv->workers[i]);
    msg_unref(m);
}

void worker_deliver_local(worker *w, msg *m) { worker_sequence(w, m, false, 0); }

void worker_deliver_sequenced(worker *w, msg *m, uint64_t offset)
{
    worker_sequence(w, m, true, offset);
}

void worker_publish(worker *w, msg *m)
{
    METRIC_INC(&w->m, messages_published);
    if (broker_enabled() && broker_up())
        broker_publish(m); /* comes back through the broker, with its offset */
    else
        worker_deliver_local(w, m);
}

bool worker_hold(worker *w, conn *c)
{
    if (!worker_grow(&w->held, &w->cap_held, w->nheld))
        return false;
    w->held[w->nheld++] = c;
    return true;
}

void worker_unhold(worker *w, conn *c)
{
    for (uint32_t i = 0; i < w->nheld; i++)
        if (w->held[i] == c) {
            w->held[i] = w->held[--w->nheld];
            return;
        }
}

void worker_release_held_all(server *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        atomic_store(&s->workers[i].check_held, true);
        worker_wake(&s->workers[i]);
    }
}

/* A held subscriber goes live once the broker confirmed all its groups, the
 * broker is down (local delivery only), or it waited long enough. */
static bool worker_held_ready(worker *w, conn *c)
{
    if (!broker_up() || w->now_ms - c->last_read_ms > 2000)
        return true;
    for (uint16_t i = 0; i < c->nsubs; i++) {
        group *g = c->subs[i].g;
        chan *ch = chan_lock(g->name, g->name_len);
        bool ok = !ch || chan_ready(ch);
        if (ch)
            chan_unlock(ch);
        if (!ok)
            return false;
    }
    return true;
}

static void worker_check_held(worker *w)
{
    atomic_store(&w->check_held, false);
    for (uint32_t i = w->nheld; i-- > 0;) {
        conn *c = w->held[i];
        if (c->dead || worker_held_ready(w, c)) {
            c->hold = false;
            if (!c->dead)
                conn_finish_recoveries(c);
            if (!c->dead && c->sse)
                conn_sse_begin(c);
            worker_mark_dirty(w, c);
            w->held[i] = w->held[--w->nheld];
        }
    }
}

static void worker_drain_inbox(worker *w)
{
    for (;;) {
        msg *m;
        while ((m = ring_pop(&w->inbox))) {
            worker_fanout(w, m);
            msg_unref(m);
        }
        if (!atomic_load_explicit(&w->overflow_used, memory_order_acquire))
            return;
        pthread_mutex_lock(&w->overflow_lock);
        msg_fifo f = w->overflow;
        memset(&w->overflow, 0, sizeof w->overflow);
        atomic_store_explicit(&w->overflow_used, false, memory_order_release);
        atomic_store_explicit(&w->overflow_bytes, 0, memory_order_relaxed);
        pthread_mutex_unlock(&w->overflow_lock);
        for (size_t i = 0; i < f.count; i++) {
            m = f.items[(f.head + i) % f.cap];
            worker_fanout(w, m);
            msg_unref(m);
        }
        free(f.items);
    }
}

/* ---- events -------------------------------------------------------------- */

static void worker_accept(worker *w)
{
    for (int i = 0; i < WORKER_ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(w->lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return;
            METRIC_INC(&w->m, accept_errors);
            if (errno == EMFILE || errno == ENFILE) {
                if (w->reserve_fd >= 0) {
                    close(w->reserve_fd);
                    fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC);
                    if (fd >= 0)
                        close(fd);
                    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                /* The listener stays readable while connections wait, and the
                 * reserve can be lost to another worker's accept: stop
                 * watching it for a moment instead of spinning on it. */
                struct epoll_event ev = {.events = 0, .data.ptr = &worker_tag_listen};
                epoll_ctl(w->epfd, EPOLL_CTL_MOD, w->lfd, &ev);
                w->accept_resume_ms = w->now_ms + WORKER_TICK_MS;
                log_msg(LOG_WARN, "out of file descriptors: pausing accepts for %d ms",
                        WORKER_TICK_MS);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        worker_adopt(w, fd, &peer);
    }
}

struct conn *worker_adopt(worker *w, int fd, const struct sockaddr_storage *peer)
{
    conn *c = conn_new(w, fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (!c) {
        close(fd);
        return NULL;
    }
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        conn_destroy(c);
        return NULL;
    }
    admit_key(peer, w->cfg->ipv6_prefix, &c->ip);
    if (admit_ip_acquire(&c->ip, w->cfg->max_conns_per_ip)) {
        c->ip_counted = true;
    } else {
        METRIC_INC(&w->m, rate_limited);
        conn_http_refuse(c, 429, "too many connections from this address", NULL);
    }
    return c;
}

/* Returns how many connections it wrote to. */
static uint32_t worker_flush_dirty(worker *w)
{
    conn *c;
    uint32_t n = 0;
    while ((c = w->dirty)) {
        w->dirty = c->next_dirty;
        c->dirty = false;
        if (!c->dead) {
            conn_flush(c);
            n++;
        }
    }
    msg_batch_flush(&w->release);
    return n;
}

/* Frees destroyed connections -- except those still on the dirty list (a
 * held-back flush pass has not walked it yet): they wait for the next pass. */
static void worker_bury(worker *w)
{
    conn *c, *keep = NULL;
    while ((c = w->graveyard)) {
        w->graveyard = c->next_dead;
        if (c->dirty) {
            c->next_dead = keep;
            keep = c;
        } else {
            conn_free(c);
        }
    }
    w->graveyard = keep;
}

/* Shards of the process-wide group table each worker visits per tick: with
 * 64 shards and 100 ms ticks, two workers cover it every 1.6 s. */
#define WORKER_SWEEP_SHARDS 2
/* Groups whose history one tick may evict for --history-memory. */
#define WORKER_EVICT_BATCH 4096

chan_history_cfg worker_history_cfg(const worker *w)
{
    return (chan_history_cfg){(size_t)w->cfg->history, w->cfg->history_ttl_ms,
                              w->cfg->history_memory};
}

static void worker_tick(worker *w)
{
    /* Backwards: conn_tick may destroy, which moves the last entry here. */
    for (uint32_t i = w->nconns; i-- > 0;)
        conn_tick(w->conns[i], w->now_ms);
    /* In a cluster, groups are forgotten only while Redis (which owns the
     * offsets) is reachable: during an outage this node numbers messages
     * itself and must not restart a group's offsets. */
    chan_history_cfg hc = worker_history_cfg(w);
    if (!broker_enabled() || broker_up())
        chan_sweep(WORKER_SWEEP_SHARDS, &hc, w->now_ms, w->cfg->group_linger_ms);
    if (hc.memory)
        chan_enforce_budget(hc.memory, WORKER_EVICT_BATCH);
    if (w->id == 0)
        memwatch_tick(w->srv, w->now_ms);
    if (memwatch_pressure(w->srv))
        memwatch_shed(w);
}


/* Closes one connection for shutdown: WebSockets get a close frame after
 * what is already queued for them; idle HTTP connections just go. */
static void worker_shut_conn(worker *w, conn *c, unsigned code)
{
    (void)w;
    if (c->state == CONN_WS)
        conn_close_ws(c, code, code == WS_CLOSE_RESTART ? "service restart" : "server shutdown",
                      true);
    else if (c->state == CONN_HTTP && outq_empty(&c->q) && !c->pend_len)
        conn_destroy(c);
    else if (c->state != CONN_DRAIN)
        conn_close_after_flush(c);
}

static void worker_begin_drain(worker *w, bool restart)
{
    /* Whatever was published before the stop reaches its subscribers ahead
     * of their close frames. */
    worker_drain_inbox(w);
    w->draining = true;
    w->restart_drain = restart;
    w->drain_start_ms = w->now_ms;
    w->drain_deadline_ms = w->now_ms + w->cfg->shutdown_timeout_ms +
                           (restart ? w->cfg->drain_window_ms : 0);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
    close(w->lfd);
    w->lfd = -1;
    w->drain_total = w->drain_closed = 0;
    for (uint32_t i = w->nconns; i-- > 0;) {
        conn *c = w->conns[i];
        if (!restart || c->state != CONN_WS)
            worker_shut_conn(w, c, WS_CLOSE_GOING_AWAY);
        else
            w->drain_total++;
    }
}

/* SIGTERM drain: closes the WebSockets open at the start of the drain with
 * 1012 on an even schedule over the window (close i at start + i*window/N),
 * so clients reconnecting elsewhere arrive spread out instead of in a burst. */
static void worker_drain_step(worker *w)
{
    uint64_t window = w->cfg->drain_window_ms, elapsed = w->now_ms - w->drain_start_ms;
    uint64_t total = w->drain_total;
    uint64_t due = elapsed >= window || window == 0 ? total : total * elapsed / window + 1;
    for (uint32_t i = w->nconns; i-- > 0 && w->drain_closed < due;) {
        conn *c = w->conns[i];
        if (c->state == CONN_WS) {
            worker_shut_conn(w, c, WS_CLOSE_RESTART);
            w->drain_closed++;
        }
    }
    if (elapsed >= window) /* connections that were not counted at the start */
        for (uint32_t i = w->nconns; i-- > 0;)
            if (w->conns[i]->state == CONN_WS)
                worker_shut_conn(w, w->conns[i], WS_CLOSE_RESTART);
}

/* Picks up a reloaded configuration between loop passes; advertising the
 * generation tells the reloader this worker no longer holds the old one. */
static void worker_refresh_config(worker *w)
{
    const config *c = config_get();
    if (c != w->cfg) {
        size_t need = 65536 + c->max_header_size;
        if (need > w->scratch_cap) {
            uint8_t *s = realloc(w->scratch, need);
            if (s) {
                w->scratch = s;
                w->scratch_cap = need;
            }
        }
        w->cfg = c;
    }
    atomic_store_explicit(&w->seen_generation, c->generation, memory_order_release);
}

static void worker_check_stop(worker *w)
{
    int stop = atomic_load_explicit(&w->stop, memory_order_acquire);
    if (!stop)
        return;
    if (!w->draining) {
        worker_begin_drain(w, stop == 2);
    } else if (w->restart_drain && stop == 1) { /* a second, impatient signal */
        w->restart_drain = false;
        for (uint32_t i = w->nconns; i-- > 0;)
            worker_shut_conn(w, w->conns[i], WS_CLOSE_GOING_AWAY);
    }
}

bool worker_run_pass(worker *w, int max_wait_ms)
{
    struct epoll_event evs[WORKER_EVENTS];
    worker_refresh_config(w);
    int timeout = max_wait_ms;
    if (w->dirty) { /* a flush is being held back: wake up for it */
        uint64_t now = worker_clock_ns();
        int due = now >= w->flush_after_ns ? 0 : (int)((w->flush_after_ns - now) / 1000000u) + 1;
        if (due < timeout)
            timeout = due;
    }
    int n = epoll_wait(w->epfd, evs, WORKER_EVENTS, timeout);
    uint64_t t0 = worker_clock_ns();
    w->now_ms = t0 / 1000000u;
    for (int i = 0; i < n; i++) {
        void *p = evs[i].data.ptr;
        if (p == &worker_tag_listen) {
            worker_accept(w);
        } else if (broker_owns(p)) {
            broker_on_event(p, evs[i].events);
        } else if (p == &worker_tag_wake) {
            uint64_t v;
            ssize_t r = read(w->efd, &v, sizeof v);
            (void)r;
            atomic_exchange_explicit(&w->notified, false, memory_order_acq_rel);
        } else {
            conn *c = p;
            if (c->dead)
                continue;
            if (evs[i].events & EPOLLOUT)
                conn_on_writable(c);
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_on_readable(c);
        }
    }
    if (w->id == 0)
        broker_poll(w->now_ms);
    worker_drain_inbox(w);
    if (w->nheld && (atomic_load(&w->check_held) || w->now_ms >= w->next_tick_ms))
        worker_check_held(w);
    worker_check_stop(w);
    if (w->draining && w->restart_drain)
        worker_drain_step(w);
    uint64_t f0 = worker_clock_ns();
    if (f0 >= w->flush_after_ns || w->draining) {
        uint32_t written = worker_flush_dirty(w);
        uint64_t took = worker_clock_ns() - f0, hold = 2 * took;
        if (hold > WORKER_FLUSH_DELAY_MAX_NS)
            hold = WORKER_FLUSH_DELAY_MAX_NS;
        w->flush_after_ns = written >= WORKER_FLUSH_COALESCE_CONNS ? f0 + took + hold : 0;
    }
    if (w->accept_resume_ms && w->now_ms >= w->accept_resume_ms && w->lfd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &worker_tag_listen};
        epoll_ctl(w->epfd, EPOLL_CTL_MOD, w->lfd, &ev);
        w->accept_resume_ms = 0;
        if (w->reserve_fd < 0)
            w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (w->now_ms >= w->next_tick_ms) {
        worker_tick(w);
        w->next_tick_ms = w->now_ms + WORKER_TICK_MS;
    }
    worker_bury(w);
    METRIC_ADD(&w->m, busy_ns, worker_clock_ns() - t0);
    return !(w->draining && (w->nconns == 0 || w->now_ms >= w->drain_deadline_ms));
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    w->next_tick_ms = w->now_ms + WORKER_TICK_MS;
    while (worker_run_pass(w, WORKER_TICK_MS))
        ;
    deflate_thread_done();
    atomic_store_explicit(&w->done, true, memory_order_release);
    return NULL;
}

int worker_start(worker *w) { return pthread_create(&w->thread, NULL, worker_main, w); }

void worker_join(worker *w) { pthread_join(w->thread, NULL); }

void worker_wake(worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is already non-zero, it will wake anyway */
}

void worker_request_stop(worker *w, bool restart)
{
    int want = restart ? 2 : 1, cur = atomic_load(&w->stop);
    /* 0 -> anything; 2 (drain) -> 1 (now); never back. */
    while ((cur == 0 || (cur == 2 && want == 1)) &&
           !atomic_compare_exchange_weak(&w->stop, &cur, want))
        ;
    worker_wake(w);
}

/* After every worker has stopped: nothing can push into any inbox any more. */
void worker_cleanup(worker *w)
{
    for (uint32_t i = w->nconns; i-- > 0;)
        conn_destroy(w->conns[i]);
    for (conn *c = w->dirty; c; c = c->next_dirty)
        c->dirty = false;
    w->dirty = NULL;
    worker_bury(w);
    msg_batch_flush(&w->release);
    msg *m;
    while ((m = ring_pop(&w->inbox)))
        msg_unref(m);
    for (size_t i = 0; i < w->overflow.count; i++)
        msg_unref(w->overflow.items[(w->overflow.head + i) % w->overflow.cap]);
    free(w->overflow.items);
    pthread_mutex_destroy(&w->overflow_lock);
    ring_destroy(&w->inbox);
    groups_destroy(&w->groups);
    free(w->conns);
    free(w->all);
    free(w->held);
    free(w->scratch);
    free(w->tls_stage);
    deflate_thread_done(); /* a worker driven from this thread (tests, fuzzer) */
    if (w->lfd >= 0)
        close(w->lfd);
    close(w->epfd);
    close(w->efd);
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
}

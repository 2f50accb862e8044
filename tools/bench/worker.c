#include "worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "conn.h"
#include "pub.h"
#include "wsc.h"

#define WORKER_EVENTS 512
/* saturate mode: messages built per loop pass before servicing reads again */
#define WORKER_SAT_BUDGET 1024

void worker_note_error(worker *w, const char *fmt, ...)
{
    if (w->first_err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_err, sizeof w->first_err, fmt, ap);
    va_end(ap);
}

/* Publishers of group g are g, g+G, g+2G, ... below K. */
static uint32_t worker_pubs_in_group(const bench_args *a, uint32_t g)
{
    return g < a->publishers ? (a->publishers - 1 - g) / a->groups + 1 : 0;
}

static uint32_t worker_share(uint32_t total, uint32_t id, uint32_t n)
{
    return id < total ? (total - id + n - 1) / n : 0;
}

bool worker_init(worker *w, bench_run *run, uint32_t id)
{
    const bench_args *a = run->a;
    uint32_t T = a->threads;
    memset(w, 0, sizeof *w);
    w->run = run;
    w->id = id;
    w->epfd = w->tfd = w->efd = -1;
    w->rng = run->key_seed ^ ((uint64_t)id << 48) ^ 0x5bd1e995u;
    hist_init(&w->lat);
    w->scratch = malloc(BENCH_SCRATCH);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->scratch || w->epfd < 0 || w->tfd < 0 || w->efd < 0) {
        fprintf(stderr, "herald-bench: worker setup: %s\n", strerror(errno));
        return false;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->tfd};
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->tfd, &ev);
    ev.data.ptr = &w->efd;
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev);

    w->nsubs = worker_share(a->subscribers, id, T);
    w->subs = calloc(w->nsubs ? w->nsubs : 1, sizeof *w->subs);
    size_t ntrack = 0;
    if (!a->idle)
        for (uint32_t k = 0; k < w->nsubs; k++)
            ntrack += worker_pubs_in_group(a, (id + k * T) % a->groups);
    w->track = calloc(ntrack ? ntrack : 1, sizeof *w->track);
    if (!w->subs || !w->track) {
        fprintf(stderr, "herald-bench: out of memory for %u subscribers\n", w->nsubs);
        return false;
    }
    size_t t = 0;
    for (uint32_t k = 0; k < w->nsubs; k++) {
        conn *c = &w->subs[k];
        c->fd = -1;
        c->w = w;
        c->index = id + k * T;
        c->group = c->index % a->groups;
        c->track = w->track + t;
        if (!a->idle)
            t += worker_pubs_in_group(a, c->group);
    }

    w->npubs = a->idle ? 0 : worker_share(a->publishers, id, T);
    w->pconns = calloc(w->npubs ? w->npubs : 1, sizeof *w->pconns);
    w->pubs = calloc(w->npubs ? w->npubs : 1, sizeof *w->pubs);
    if (!w->pconns || !w->pubs) {
        fprintf(stderr, "herald-bench: out of memory for publishers\n");
        return false;
    }
    for (uint32_t k = 0; k < w->npubs; k++) {
        conn *c = &w->pconns[k];
        pub *p = &w->pubs[k];
        if (!pub_init(p, a, id + k * T)) {
            fprintf(stderr, "herald-bench: out of memory for publisher buffers\n");
            return false;
        }
        c->fd = -1;
        c->w = w;
        c->is_pub = true;
        c->index = p->id;
        c->group = p->group;
        c->pub = p;
        p->c = c;
        run->pub_by_id[p->id] = p;
    }
    return true;
}

void worker_free(worker *w)
{
    for (uint32_t k = 0; k < w->npubs; k++)
        pub_free(&w->pubs[k]);
    free(w->pubs);
    free(w->pconns);
    free(w->subs);
    free(w->track);
    free(w->scratch);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->tfd >= 0)
        close(w->tfd);
    if (w->efd >= 0)
        close(w->efd);
}

static void worker_set_tick(worker *w, int64_t ns)
{
    struct itimerspec its = {
        .it_interval = {ns / 1000000000LL, ns % 1000000000LL},
        .it_value = {ns / 1000000000LL, ns % 1000000000LL},
    };
    timerfd_settime(w->tfd, 0, &its, NULL);
}

static void worker_connect_begin(worker *w, conn *list, uint32_t n)
{
    const bench_args *a = w->run->a;
    w->clist = list;
    w->ctotal = n;
    w->cnext = w->cfirst = w->cfinished = w->inflight = 0;
    /* the handshake bound is global: each thread gets its share */
    w->climit = (a->connect_concurrency + a->threads - 1) / a->threads;
    w->next_scan = 0;
}

/* Starts connections up to the in-flight bound and fails overdue ones. */
static void worker_connect_step(worker *w)
{
    if (!w->clist)
        return;
    while (w->inflight < w->climit && w->cnext < w->ctotal) {
        conn *c = &w->clist[w->cnext++];
        w->inflight++;
        conn_start(w, c);
    }
    if (w->now >= w->next_scan) {
        /* only [cfirst, cnext) can be in setup: a short scan */
        w->next_scan = w->now + BENCH_TICK_IDLE_NS;
        while (w->cfirst < w->cnext && !conn_in_setup(&w->clist[w->cfirst]))
            w->cfirst++;
        for (uint32_t k = w->cfirst; k < w->cnext; k++) {
            conn *c = &w->clist[k];
            if (conn_in_setup(c) && w->now >= c->deadline)
                conn_fail_timeout(w, c);
        }
    }
    if (w->cfinished == w->ctotal) {
        atomic_store(&w->connect_done, w->phase);
        w->clist = NULL;
    }
}

static void worker_begin_close(worker *w)
{
    w->close_deadline = w->now + BENCH_CLOSE_WAIT_NS;
    for (uint32_t k = 0; k < w->nsubs; k++)
        conn_begin_close(w, &w->subs[k]);
    for (uint32_t k = 0; k < w->npubs; k++)
        conn_begin_close(w, &w->pconns[k]);
}

static void worker_close_all(worker *w)
{
    for (uint32_t k = 0; k < w->nsubs; k++)
        if (w->subs[k].state != CS_DONE)
            conn_close(w, &w->subs[k]);
    for (uint32_t k = 0; k < w->npubs; k++)
        if (w->pconns[k].state != CS_DONE)
            conn_close(w, &w->pconns[k]);
}

static void worker_enter_phase(worker *w, int ph)
{
    const bench_args *a = w->run->a;
    w->phase = ph;
    switch (ph) {
    case PH_CONNECT_SUBS:
        worker_set_tick(w, BENCH_TICK_IDLE_NS);
        worker_connect_begin(w, w->subs, w->nsubs);
        break;
    case PH_CONNECT_PUBS:
        for (uint32_t k = 0; k < w->npubs; k++)
            w->pubs[k].expect = w->run->group_expect[w->pubs[k].group];
        worker_connect_begin(w, w->pconns, w->npubs);
        break;
    case PH_WARMUP:
    case PH_RUN:
        if (!a->saturate && w->npubs) {
            int64_t tick = (int64_t)(1e9 / a->rate);
            if (tick < BENCH_TICK_MIN_NS)
                tick = BENCH_TICK_MIN_NS;
            if (tick > BENCH_TICK_IDLE_NS)
                tick = BENCH_TICK_IDLE_NS;
            worker_set_tick(w, tick);
        }
        break;
    case PH_GRACE:
        worker_set_tick(w, BENCH_TICK_IDLE_NS);
        break;
    case PH_CLOSE:
        w->measuring = false;
        worker_begin_close(w);
        break;
    default:
        break;
    }
    atomic_store(&w->phase_seen, ph);
}

/* Rate mode: message m (global index) is due at t_pub0 + m/R and goes to
 * publisher m mod K, so every publisher is paced evenly and the aggregate
 * is R; this worker sends the due ones that belong to its publishers. */
static void worker_rate_publish(worker *w)
{
    const bench_args *a = w->run->a;
    uint32_t K = a->publishers, T = a->threads;
    double elapsed = (double)(w->now - w->run->t_pub0);
    if (elapsed < 0)
        return;
    uint64_t due = (uint64_t)(elapsed * a->rate * 1e-9) + 1;
    bool measured = w->phase == PH_RUN;
    for (; w->cursor < due; w->cursor++) {
        uint32_t j = (uint32_t)(w->cursor % K);
        if (j % T != w->id)
            continue;
        pub *p = &w->pubs[j / T];
        if (!pub_send_message(w, p, measured) && measured)
            STAT_ADD(w, skipped, 1);
    }
}

static void worker_flush_pubs(worker *w)
{
    for (uint32_t k = 0; k < w->npubs; k++) {
        pub *p = &w->pubs[k];
        if (p->head < p->tail && p->c->fd >= 0)
            pub_flush(w, p);
    }
}

void *worker_main(void *arg)
{
    worker *w = arg;
    bench_run *run = w->run;
    const bench_args *a = run->a;
    struct epoll_event evs[WORKER_EVENTS];
    w->measuring = true;
    int timeout_ms = BENCH_TICK_IDLE_NS / 1000000;
    for (;;) {
        int ph = atomic_load_explicit(&run->phase, memory_order_acquire);
        w->now = bench_now();
        if (ph != w->phase)
            worker_enter_phase(w, ph);
        if (ph == PH_CLOSE && (w->open_conns == 0 || w->now >= w->close_deadline)) {
            worker_close_all(w);
            break;
        }
        int n = epoll_wait(w->epfd, evs, WORKER_EVENTS, timeout_ms);
        w->now = bench_now();
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &w->tfd || tag == &w->efd) {
                uint64_t v;
                ssize_t r = read(tag == &w->tfd ? w->tfd : w->efd, &v, sizeof v);
                (void)r;
                continue;
            }
            conn_event(w, tag, evs[i].events);
        }
        timeout_ms = BENCH_TICK_IDLE_NS / 1000000;
        if (w->phase == PH_CONNECT_SUBS || w->phase == PH_CONNECT_PUBS)
            worker_connect_step(w);
        if ((w->phase == PH_WARMUP || w->phase == PH_RUN) && w->npubs) {
            if (a->saturate) {
                if (sat_publish(w, w->phase == PH_RUN, WORKER_SAT_BUDGET) == SAT_SENT)
                    timeout_ms = 0; /* budget used up: come straight back */
            } else {
                worker_rate_publish(w);
            }
        }
        if (a->saturate && w->phase >= PH_WARMUP && w->phase < PH_CLOSE)
            for (uint32_t k = 0; k < w->npubs; k++)
                sat_expire(w, &w->pubs[k]);
        worker_flush_pubs(w);
    }
    wsc_thread_done();
    atomic_store(&w->exited, true);
    return NULL;
}

#include "pub.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "msg.h"

/* Enough for a few milliseconds of frames at high rates without letting a
 * stalled server absorb an unbounded backlog. */
#define PUB_BUF_MIN (256u * 1024u)
/* Cap on window slots per publisher so K publishers x W stays small. */
#define SAT_SLOTS_TOTAL (1u << 22)

static uint32_t pub_pow2_at_least(uint32_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

bool pub_init(pub *p, const bench_args *a, uint32_t id)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    p->group = id % a->groups;
    size_t frame = wsc_header_size(a->size) + a->size;
    size_t cap = frame * 4 > PUB_BUF_MIN ? frame * 4 : PUB_BUF_MIN;
    if (cap > UINT32_MAX)
        return false;
    p->cap = (uint32_t)cap;
    p->buf = malloc(cap);
    if (!p->buf)
        return false;
    if (a->saturate) {
        uint32_t slots = pub_pow2_at_least(a->window);
        uint32_t per_pub = SAT_SLOTS_TOTAL / (a->publishers ? a->publishers : 1);
        if (per_pub < 64)
            per_pub = 64;
        while (slots > per_pub)
            slots >>= 1;
        p->slot_mask = slots - 1;
        p->slots = calloc(slots, sizeof *p->slots);
        p->slot_sent = calloc(slots, sizeof *p->slot_sent);
        if (!p->slots || !p->slot_sent)
            return false;
    }
    return true;
}

void pub_free(pub *p)
{
    free(p->buf);
    free((void *)p->slots);
    free(p->slot_sent);
}

/* Makes room for n contiguous bytes at the tail. */
static bool pub_room(pub *p, size_t n)
{
    if (p->cap - p->tail >= n)
        return true;
    if (p->head > 0) {
        memmove(p->buf, p->buf + p->head, p->tail - p->head);
        p->tail -= p->head;
        p->head = 0;
    }
    return p->cap - p->tail >= n;
}

bool pub_append(pub *p, const uint8_t *frame, size_t n)
{
    if (!pub_room(p, n))
        return false;
    memcpy(p->buf + p->tail, frame, n);
    p->tail += (uint32_t)n;
    return true;
}

bool pub_send_message(worker *w, pub *p, bool measured)
{
    const bench_args *a = w->run->a;
    if (!p->c || p->c->state != CS_OPEN)
        return false;
    size_t hs = wsc_header_size(a->size);
    if (!pub_room(p, hs + a->size))
        return false;
    uint8_t *f = p->buf + p->tail;
    uint32_t mask = worker_rand32(w);
    wsc_header(f, WSC_OP_BINARY, a->size, mask);
    uint8_t *payload = f + hs;
    memcpy(payload + MSG_HEAD, w->run->filler + MSG_HEAD, a->size - MSG_HEAD);
    int64_t now = bench_now();
    msg_head m = {
        .flags = measured ? MSG_FLAG_MEASURED : 0,
        .publisher = p->id,
        .seq = p->seq,
        .sent_ns = (uint64_t)now,
    };
    msg_encode(payload, &m);
    wsc_mask(payload, a->size, mask);
    p->tail += (uint32_t)(hs + a->size);
    if (p->slots) {
        uint32_t i = (uint32_t)(p->seq & p->slot_mask);
        p->slot_sent[i] = now;
        atomic_store_explicit(&p->slots[i], ((uint64_t)(uint32_t)p->seq << 32) | p->expect,
                              memory_order_release);
    }
    p->seq++;
    if (measured) {
        STAT_ADD(w, published, 1);
        STAT_ADD(w, expected, p->expect);
    }
    return true;
}

void pub_flush(worker *w, pub *p)
{
    conn *c = p->c;
    while (p->head < p->tail && c->fd >= 0) {
        ssize_t n = conn_io_write(c, p->buf + p->head, p->tail - p->head);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return; /* EPOLLOUT (edge) resumes */
            conn_lost(w, c, strerror(errno));
            return;
        }
        p->head += (uint32_t)n;
    }
    if (p->head == p->tail)
        p->head = p->tail = 0;
}

/* ---- saturate mode ------------------------------------------------------ */

static void sat_release(worker *self)
{
    atomic_fetch_sub(&self->run->outstanding, 1);
    /* wake publishing workers parked on a full window (not ourselves: our
     * loop pass publishes again after handling its events) */
    bench_run *run = self->run;
    for (uint32_t i = 0; i < run->nworkers; i++) {
        worker *o = &run->workers[i];
        if (o == self || !atomic_load(&o->sat_blocked))
            continue;
        if (atomic_exchange(&o->sat_blocked, 0)) {
            uint64_t one = 1;
            ssize_t r = write(o->efd, &one, sizeof one);
            (void)r;
        }
    }
}

void sat_complete(worker *self, uint32_t publisher, uint64_t seq)
{
    pub *p = self->run->pub_by_id[publisher];
    if (!p || !p->slots)
        return;
    _Atomic uint64_t *slot = &p->slots[seq & p->slot_mask];
    uint64_t v = atomic_load_explicit(slot, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(v >> 32) != (uint32_t)seq || (uint32_t)v == 0)
            return; /* slot reused or expired: a late delivery */
        if (atomic_compare_exchange_weak_explicit(slot, &v, v - 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    if ((uint32_t)v == 1)
        sat_release(self);
}

void sat_expire(worker *w, pub *p)
{
    while (p->sat_tail < p->seq) {
        uint32_t i = (uint32_t)(p->sat_tail & p->slot_mask);
        uint64_t v = atomic_load_explicit(&p->slots[i], memory_order_acquire);
        if ((uint32_t)v != 0) {
            if (w->now - p->slot_sent[i] < w->run->sat_timeout_ns)
                return;
            /* give up on the missing deliveries: free the window slot, unless
             * the last one lands right now (then the deliverer releases it) */
            uint64_t zero = v & ~(uint64_t)UINT32_MAX;
            if (!atomic_compare_exchange_strong(&p->slots[i], &v, zero))
                continue;
            STAT_ADD(w, timed_out, 1);
            sat_release(w);
        }
        p->sat_tail++;
    }
}

/* Can p take one more message now? */
static bool sat_pub_ready(worker *w, pub *p)
{
    if (!p->c || p->c->state != CS_OPEN || p->expect == 0)
        return false;
    sat_expire(w, p);
    return p->seq - p->sat_tail <= p->slot_mask;
}

sat_result sat_publish(worker *w, bool measured, uint32_t budget)
{
    bench_run *run = w->run;
    int64_t window = run->a->window;
    uint32_t sent = 0;
    while (sent < budget && w->npubs) {
        if (atomic_load(&run->outstanding) >= window) {
            /* park, then re-check so a release between the two is not missed */
            atomic_store(&w->sat_blocked, 1);
            if (atomic_load(&run->outstanding) >= window)
                return SAT_WINDOW_FULL;
            atomic_store(&w->sat_blocked, 0);
        }
        pub *p = NULL;
        for (uint32_t k = 0; k < w->npubs; k++) {
            pub *q = &w->pubs[(w->rr + k) % w->npubs];
            if (sat_pub_ready(w, q)) {
                p = q;
                w->rr = (w->rr + k + 1) % w->npubs;
                break;
            }
        }
        if (!p)
            return SAT_NOTHING;
        if (atomic_fetch_add(&run->outstanding, 1) >= window) {
            atomic_fetch_sub(&run->outstanding, 1);
            continue;
        }
        if (!pub_send_message(w, p, measured)) {
            atomic_fetch_sub(&run->outstanding, 1);
            return SAT_NOTHING; /* buffer full: EPOLLOUT brings us back */
        }
        sent++;
    }
    return SAT_SENT;
}

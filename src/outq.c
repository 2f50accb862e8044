#include "outq.h"

#include <stdlib.h>
#include <string.h>

#define OUTQ_MIN_CAP 8

static bool outq_reserve(outq *q)
{
    if (q->count < q->cap)
        return true;
    uint32_t ncap = q->cap ? q->cap * 2 : OUTQ_MIN_CAP;
    msg **n = malloc(sizeof *n * ncap);
    if (!n)
        return false;
    for (uint32_t i = 0; i < q->count; i++)
        n[i] = q->items[(q->head + i) & (q->cap - 1)];
    free(q->items);
    q->items = n;
    q->cap = ncap;
    q->head = 0;
    return true;
}

static inline msg **outq_at(const outq *q, uint32_t i)
{
    return &q->items[(q->head + i) & (q->cap - 1)];
}

bool outq_push(outq *q, msg *m)
{
    if (!outq_reserve(q))
        return false;
    *outq_at(q, q->count) = m;
    q->count++;
    q->bytes += m->len;
    q->mem += outq_cost(m);
    return true;
}

bool outq_push_urgent(outq *q, msg *m)
{
    if (!outq_reserve(q))
        return false;
    /* Goes after a partly written frame, after HTTP bytes (the 101 must come
     * first) and after earlier control frames (they keep their order), but
     * ahead of every data frame that has not started. */
    uint32_t k = q->off > 0 ? 1 : 0;
    while (k < q->count && (*outq_at(q, k))->kind != MSG_DATA)
        k++;
    q->head = (q->head - 1) & (q->cap - 1);
    q->count++;
    for (uint32_t i = 0; i < k; i++)
        *outq_at(q, i) = *outq_at(q, i + 1);
    *outq_at(q, k) = m;
    q->bytes += m->len;
    q->mem += outq_cost(m);
    return true;
}

bool outq_replace_control(outq *q, uint8_t opcode, msg *m)
{
    for (uint32_t k = q->off > 0 ? 1 : 0; k < q->count; k++) {
        msg **slot = outq_at(q, k);
        if ((*slot)->kind == MSG_DATA)
            return false; /* control frames all sit ahead of the first data frame */
        if ((*slot)->kind == MSG_CONTROL && (*slot)->opcode == opcode) {
            msg *old = *slot;
            q->bytes = q->bytes - old->len + m->len;
            q->mem = q->mem - outq_cost(old) + outq_cost(m);
            *slot = m;
            msg_unref(old);
            return true;
        }
    }
    return false;
}

uint32_t outq_drop_unstarted_data(outq *q)
{
    uint32_t k = q->off > 0 ? 1 : 0, keep = k, dropped = 0;
    for (; k < q->count; k++) {
        msg *m = *outq_at(q, k);
        if (m->kind != MSG_DATA) {
            *outq_at(q, keep++) = m;
            continue;
        }
        q->bytes -= m->len;
        q->mem -= outq_cost(m);
        msg_unref(m);
        dropped++;
    }
    q->count = keep;
    return dropped;
}

/* Removes the item at index k (not the partly written head), shifting the
 * ones before it: items ahead of the first data message are a handful. */
static void outq_remove_at(outq *q, uint32_t k)
{
    msg *m = *outq_at(q, k);
    for (uint32_t i = k; i > 0; i--)
        *outq_at(q, i) = *outq_at(q, i - 1);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->bytes -= m->len;
    q->mem -= outq_cost(m);
    msg_unref(m);
}

bool outq_drop_oldest_data(outq *q)
{
    uint32_t k = q->off > 0 ? 1 : 0;
    /* Control frames sit at the front; the first data frame is a few slots in
     * at most, so this stays O(1) in practice. */
    while (k < q->count && (*outq_at(q, k))->kind != MSG_DATA)
        k++;
    if (k >= q->count)
        return false;
    outq_remove_at(q, k);
    return true;
}

bool outq_drop_oldest_data_prefixed(outq *q, uint8_t prefix_op)
{
    uint32_t start = q->off > 0 ? 1 : 0, k = start;
    while (k < q->count && (*outq_at(q, k))->kind != MSG_DATA)
        k++;
    if (k >= q->count)
        return false;
    outq_remove_at(q, k);
    if (k > start) {
        msg *p = *outq_at(q, k - 1); /* the item that was right before it */
        if (p->kind == MSG_RAW && p->opcode == prefix_op)
            outq_remove_at(q, k - 1);
    }
    return true;
}

uint32_t outq_cut_at_unstarted_data(outq *q, uint8_t prefix_op)
{
    uint32_t start = q->off > 0 ? 1 : 0, k = start, dropped = 0;
    while (k < q->count && (*outq_at(q, k))->kind != MSG_DATA)
        k++;
    if (k >= q->count)
        return 0;
    if (k > start) {
        msg *p = *outq_at(q, k - 1);
        if (p->kind == MSG_RAW && p->opcode == prefix_op)
            k--;
    }
    for (uint32_t i = k; i < q->count; i++) {
        msg *m = *outq_at(q, i);
        dropped += m->kind == MSG_DATA;
        q->bytes -= m->len;
        q->mem -= outq_cost(m);
        msg_unref(m);
    }
    q->count = k;
    return dropped;
}

int outq_iov(const outq *q, struct iovec *iov, int max)
{
    int n = 0;
    for (uint32_t i = 0; i < q->count && n < max; i++, n++) {
        msg *m = *outq_at(q, i);
        size_t skip = i == 0 ? q->off : 0;
        iov[n].iov_base = m->data + skip;
        iov[n].iov_len = m->len - skip;
    }
    return n;
}

void outq_consume(outq *q, size_t n, outq_done *done)
{
    q->bytes -= n;
    done->bytes += n;
    while (n > 0 && q->count > 0) {
        msg *m = *outq_at(q, 0);
        size_t left = m->len - q->off;
        if (n < left) {
            q->off += (uint32_t)n;
            return;
        }
        n -= left;
        q->off = 0;
        q->mem -= outq_cost(m);
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
        if (m->kind == MSG_DATA) {
            done->data_msgs++;
            if (done->lat) {
                uint64_t pub_us = m->publish_ns / 1000u;
                metrics_observe_latency(done->lat,
                                        done->now_us > pub_us ? done->now_us - pub_us : 0);
            }
        } else if (m->is_close) {
            done->close_sent = true;
        }
        if (done->release)
            msg_batch_unref(done->release, m);
        else
            msg_unref(m);
    }
}

void outq_clear(outq *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        msg_unref(*outq_at(q, i));
    free(q->items);
    memset(q, 0, sizeof *q);
}

void outq_shrink(outq *q)
{
    if (q->count == 0 && q->items) {
        free(q->items);
        q->items = NULL;
        q->cap = 0;
        q->head = 0;
        q->off = 0;
    }
}

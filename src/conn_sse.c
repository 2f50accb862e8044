#include "conn_sse.h"

#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "chan.h"
#include "conn.h"
#include "envelope.h"
#include "query.h"
#include "sse.h"

/* The stream's position as the id codec sees it. */
static sse_pos conn_sse_pos(const conn_sse *s)
{
    return (sse_pos){s->epoch, strlen(s->epoch), (uint64_t *)s->off, s->known, s->n};
}

/* The index of group name in the stream's position: the order of c->subs,
 * or the group being joined right now (delivery_subscribe replays and reports
 * before it appends the membership, and joins in request order). */
static long conn_sse_index(const conn *c, const char *name, size_t len)
{
    for (uint16_t i = 0; i < c->nsubs; i++) {
        const group *g = c->subs[i].g;
        if (g->name_len == len && memcmp(g->name, name, len) == 0)
            return i;
    }
    return c->nsubs < c->sse->n ? c->nsubs : -1;
}

/* A delivered message moves its group's position. A message under another
 * epoch (a cluster that lost its offsets) makes every other group's offset
 * meaningless: those entries go empty, and a resume reports them. */
static void conn_sse_advance(conn *c, const msg *v)
{
    conn_sse *s = c->sse;
    if (v->epoch && v->epoch != s->epoch && strcmp(v->epoch, s->epoch) != 0) {
        s->epoch = v->epoch;
        memset(s->known, 0, s->n * sizeof *s->known);
    }
    if (!v->group_len)
        return;
    long i = conn_sse_index(c, v->group, v->group_len);
    if (i >= 0) {
        s->off[i] = v->offset;
        s->known[i] = true;
    }
}

msg *conn_sse_id(const conn *c, const char *extra, size_t extra_len, msg_kind kind)
{
    sse_pos pos = conn_sse_pos(c->sse);
    size_t cap = sse_id_bound(pos.epoch_len, pos.n) + SSE_ID_LINE_EXTRA + extra_len;
    msg *m = msg_alloc(cap);
    if (!m)
        return NULL;
    size_t n = sse_id_line(msg_payload(m), cap, &pos);
    if (extra_len)
        memcpy(msg_payload(m) + n, extra, extra_len);
    m->payload_len = m->len = (uint32_t)(n + extra_len);
    m->kind = (uint8_t)kind;
    m->opcode = CONN_SSE_ID_OP;
    return m;
}

/* A one-group stream's event carries its id already (FORMAT_SSE_*_ID). */
static bool conn_sse_id_inside(const conn *c, const msg *v)
{
    return (c->format == FORMAT_SSE_RAW_ID || c->format == FORMAT_SSE_JSON_ID) && v->group_len;
}

bool conn_sse_fanout_noref(conn *c, msg *v)
{
    if (c->state != CONN_WS || c->dead)
        return false;
    conn_sse_advance(c, v);
    msg *id = NULL;
    if (!conn_sse_id_inside(c, v) && !(id = conn_sse_id(c, NULL, 0, MSG_RAW))) {
        conn_abort(c);
        return false;
    }
    const config *cfg = c->env->cfg;
    size_t cost = (id ? outq_cost(id) : 0) + outq_cost(v) + transport_pending(&c->t);
    if (c->q.mem + cost > cfg->queue_limit && !outq_empty(&c->q)) {
        if (cfg->slow_policy == SLOW_CLOSE) {
            if (id)
                msg_unref(id);
            conn_shed(c, "slow consumer");
            return false;
        }
        /* Whole events go: an id line never outlives its event. */
        uint32_t dropped = conn_drop_prefixed(c, cost, CONN_SSE_ID_OP);
        METRIC_ADD(c->env->m, messages_dropped, dropped);
    }
    if (id && !conn_send_consume(c, id, false))
        return false;
    return conn_queue_noref(c, v, false);
}

bool conn_sse_send_consume(conn *c, msg *v)
{
    conn_sse_advance(c, v);
    if (conn_sse_id_inside(c, v)) {
        if (conn_queue_noref(c, v, false))
            return true;
        msg_unref(v);
        return false;
    }
    msg *id = conn_sse_id(c, NULL, 0, MSG_RAW);
    if (!id) {
        msg_unref(v);
        conn_abort(c);
        return false;
    }
    if (!conn_send_consume(c, id, false)) {
        msg_unref(v);
        return false;
    }
    if (conn_queue_noref(c, v, false))
        return true;
    msg_unref(v);
    return false;
}

void conn_sse_recovery_failed(conn *c, const char *name, size_t len, const char *json, size_t n,
                              uint64_t last)
{
    conn_sse *s = c->sse;
    const char *cur = chan_epoch();
    if (cur != s->epoch && strcmp(cur, s->epoch) != 0) {
        s->epoch = cur;
        memset(s->known, 0, s->n * sizeof *s->known);
    }
    long i = conn_sse_index(c, name, len);
    if (i >= 0) {
        s->off[i] = last;
        s->known[i] = true;
    }
    /* One private item: the id line and the event (the JSON is one line). */
    uint8_t ev[4096];
    if (sse_text_bound(15, n) > sizeof ev) {
        conn_abort(c);
        return;
    }
    size_t k = sse_encode_text(ev, "recovery_failed", 15, (const uint8_t *)json, n);
    msg *m = conn_sse_id(c, (const char *)ev, k, MSG_CONTROL);
    if (!m) {
        conn_abort(c); /* a recovery that cannot be reported must not look like a gap-free one */
        return;
    }
    conn_send_consume(c, m, false);
}

uint32_t conn_sse_drop_unsent(conn *c)
{
    return conn_drop_prefixed(c, SIZE_MAX, CONN_SSE_ID_OP);
}

void conn_sse_close(conn *c, bool after_data)
{
    if (c->state != CONN_WS)
        return;
    if (!after_data) {
        /* Not just the data: an id that a later control event carries
         * (the first event, recovery_failed) covers the events cut here, and
         * a resume from it would skip them silently. */
        uint32_t dropped = conn_cut_prefixed(c, CONN_SSE_ID_OP);
        if (dropped && c->env->cfg->slow_policy == SLOW_DROP_OLDEST)
            METRIC_ADD(c->env->m, messages_dropped, dropped);
    }
    conn_close_after_flush(c);
}

void conn_sse_keepalive(conn *c)
{
    static const char ka[] = ":\n";
    msg *m = msg_new_raw(ka, sizeof ka - 1);
    if (!m) {
        conn_abort(c);
        return;
    }
    m->kind = MSG_CONTROL;
    conn_send_consume(c, m, false);
}

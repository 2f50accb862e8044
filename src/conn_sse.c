#include "conn_sse.h"

#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "broker.h"
#include "chan.h"
#include "conn.h"
#include "delivery.h"
#include "envelope.h"
#include "query.h"
#include "sse.h"
#include "worker.h"

#define CONN_SSE_LIST_MAX 16384

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

/* "id: <position>\n" (extra appended after it), private to this stream.
 * NULL on allocation failure. */
static msg *conn_sse_id(const conn *c, const char *extra, size_t extra_len, msg_kind kind)
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
    const config *cfg = c->w->cfg;
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
        METRIC_ADD(&c->w->m, messages_dropped, dropped);
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
        if (dropped && c->w->cfg->slow_policy == SLOW_DROP_OLDEST)
            METRIC_ADD(&c->w->m, messages_dropped, dropped);
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

/* ---- the request ----------------------------------------------------------- */

/* CORS: EventSource from another origin needs Access-Control-Allow-Origin on
 * the answer (the origin was checked against --allowed-origins already). */
static size_t conn_sse_cors(const http_request *req, char *out, size_t cap)
{
    const http_str *o = http_header_get(req, "origin");
    if (!o || o->n == 0 || o->n > 512)
        return 0;
    int n = snprintf(out, cap, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n",
                     (int)o->n, o->p);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* OPTIONS /sse: a preflight (a client that adds Authorization or
 * Last-Event-ID itself from a page triggers one). */
static void conn_sse_preflight(conn *c, const http_request *req)
{
    char cors[640], extra[900];
    if (!conn_origin_ok(c, req))
        return;
    size_t n = conn_sse_cors(req, cors, sizeof cors);
    snprintf(extra, sizeof extra,
             "%.*sAccess-Control-Allow-Methods: GET\r\n"
             "Access-Control-Allow-Headers: Authorization, Last-Event-ID, Cache-Control\r\n"
             "Access-Control-Max-Age: 600\r\n",
             (int)n, cors);
    conn_http_answer(c, 200, "text/plain", "", 0, extra);
}

/* A vanished peer (power loss, a dropped NAT mapping) never acknowledges
 * the keep-alive comments, yet 2 bytes never fill the socket buffer, so
 * --write-timeout (which times data stuck in our queue) cannot see it, and
 * --idle-timeout does not apply to a client that never sends. The kernel
 * can: data unacknowledged for this long fails the socket (ETIMEDOUT). Best
 * effort: without it the stream only lives on. */
static void conn_sse_user_timeout(const conn *c)
{
    uint64_t ms = c->w->cfg->write_timeout_ms;
    unsigned int t = ms > UINT_MAX ? UINT_MAX : (unsigned int)ms;
    (void)setsockopt(c->t.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &t, sizeof t);
}

/* The 200 of an event stream, with the CORS lines the request calls for,
 * extra header lines and the start of the body; NULL when out of memory. */
static msg *conn_sse_head(const http_request *req, const char *extra, const char *body)
{
    char cors[640], head[1024];
    size_t cl = conn_sse_cors(req, cors, sizeof cors);
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nServer: herald/%s\r\n"
                     "Content-Type: text/event-stream; charset=utf-8\r\n"
                     "Cache-Control: no-store\r\n%s%.*sConnection: close\r\n\r\n%s",
                     HERALD_VERSION, extra, (int)cl, cors, body);
    return h > 0 && (size_t)h < sizeof head ? msg_new_raw(head, (size_t)h) : NULL;
}

static bool conn_sse_start(conn *c, const http_request *req, msg_format format, size_t ng)
{
    /* No Content-Length: the body is the stream and ends with the connection. */
    msg *m = conn_sse_head(req, "X-Accel-Buffering: no\r\n", "");
    if (!m) {
        conn_http_refuse(c, 503, "out of memory", NULL);
        return false;
    }
    c->keepalive = false;
    c->state = CONN_WS;
    c->role = ROLE_SUB;
    conn_sse_user_timeout(c);
    /* One group: its events (id included) are shared whole. */
    if (ng == 1)
        format = format == FORMAT_SSE_JSON ? FORMAT_SSE_JSON_ID : FORMAT_SSE_RAW_ID;
    c->format = (uint8_t)format;
    c->last_ping_ms = c->w->loop.now_ms;
    METRIC_INC(&c->w->m, http_requests);
    METRIC_INC(&c->w->m, subscribers_open);
    METRIC_INC(&c->w->m, sse_open);
    return conn_send_consume(c, m, false);
}

/* 200, "retry: 1000", end of stream. */
static void conn_sse_retry_later(conn *c, const http_request *req)
{
    msg *m = conn_sse_head(req, "", ": cluster broker not reached yet\nretry: 1000\n\n");
    c->keepalive = false;
    METRIC_INC(&c->w->m, http_requests);
    if (m && conn_send_consume(c, m, false))
        conn_close_after_flush(c);
    else if (!m)
        conn_destroy(c);
}

/* A fresh group starts at its last offset before the join: everything after
 * arrives live. In a cluster that offset means something only once this
 * node follows the group (confirmed and filled from Redis): a record made by
 * this lookup, or one left from an earlier subscription, says 0 or an old
 * offset, and an id built from it would replay or refuse on resume. */
static bool conn_sse_fresh_position(conn_sse *s, size_t k, const char *name, size_t len)
{
    chan *ch = chan_lock(name, len);
    if (!ch)
        return true; /* out of memory: the entry stays empty, a resume reports it */
    bool ok = !broker_enabled() || chan_ready(ch);
    if (ok) {
        s->off[k] = chan_last_offset(ch);
        s->known[k] = true;
    }
    chan_unlock(ch);
    return ok;
}

void conn_sse_begin(conn *c)
{
    conn_sse *s = c->sse;
    if (!s || s->first_sent || c->state != CONN_WS || c->dead)
        return;
    s->first_sent = true;
    const char *cur = chan_epoch();
    if (cur != s->epoch && strcmp(cur, s->epoch) != 0) {
        s->epoch = cur; /* the cluster's epoch arrived meanwhile: no old offset holds under it */
        memset(s->known, 0, s->n * sizeof *s->known);
    }
    for (uint16_t k = 0; k < s->n && k < c->nsubs; k++) {
        /* a live message during the hold set the position already */
        if (s->pending[k] && !s->known[k]) {
            const group *g = c->subs[k].g;
            conn_sse_fresh_position(s, k, g->name, g->name_len);
        }
        s->pending[k] = false;
    }
    /* A "joined" event with the id and empty data: the client's
     * Last-Event-ID is set before any message arrives, so even a stream cut
     * before its first message resumes where it began, and an EventSource
     * dispatches it (as type "joined", never "message"): a client learns
     * every group's position at once, quiet groups included. */
    static const char joined[] = "event: joined\ndata: \n\n";
    msg *first = conn_sse_id(c, joined, sizeof joined - 1, MSG_CONTROL);
    if (!first) {
        conn_abort(c);
        return;
    }
    conn_send_consume(c, first, false);
}

void conn_sse_route(conn *c, const http_request *req)
{
    static _Thread_local char list[CONN_SSE_LIST_MAX], since[CONN_SSE_LIST_MAX];
    static _Thread_local const char *names[256];
    static _Thread_local size_t lens[256];
    static _Thread_local uint64_t lei_off[256];
    static _Thread_local bool lei_known[256];
    char fmt[16], epoch[80];
    /* conn_route lets only GET and OPTIONS through. */
    if (req->method != HTTP_GET) {
        conn_sse_preflight(c, req);
        return;
    }
    c->cors_errors = true;
    long n = http_query_get(req->query, "groups", list, sizeof list);
    int max_groups = c->w->cfg->max_groups;
    const char *why = query_groups_check(list, n, max_groups > 256 ? 256 : max_groups);
    if (why) {
        conn_http_refuse(c, 400, why, NULL);
        return;
    }
    long fl = http_query_get(req->query, "format", fmt, sizeof fmt);
    query_format qf = query_format_parse(fmt, fl);
    if (qf != QUERY_FORMAT_RAW && qf != QUERY_FORMAT_JSON) {
        conn_http_refuse(c, 400, "format must be raw or json for /sse", NULL);
        return;
    }
    msg_format format = qf == QUERY_FORMAT_JSON ? FORMAT_SSE_JSON : FORMAT_SSE_RAW;
    long sl, el;
    if (!conn_since_params(c, req, list, n, since, sizeof since, epoch, sizeof epoch, &sl, &el))
        return;
    size_t ng = query_list_distinct(list, n, names, lens, 256);
    /* The browser's own resume: its Last-Event-ID wins over the URL's since
     * (which stays what the page first asked for). */
    const http_str *lei = http_header_get(req, "last-event-id");
    sse_pos lp = {.off = lei_off, .known = lei_known};
    bool use_lei = lei && lei->n > 0;
    if (use_lei) {
        sse_id_result r = http_header_count(req, "last-event-id") > 1
                              ? SSE_ID_COUNT
                              : sse_id_parse(lei->p, lei->n, ng, &lp);
        if (r != SSE_ID_OK) {
            conn_http_refuse(c, 400, sse_id_error(r), NULL);
            return;
        }
    }
    if (!conn_origin_ok(c, req) || !conn_accept_rate_ok(c) || !conn_jwt_ok(c, req, list, n))
        return;
    /* After the origin, rate and token checks: a refused client learns that
     * it is refused, not that it may come back. */
    if ((use_lei || sl >= 0) && conn_resume_early(c)) {
        /* An EventSource gives up on any status but 200; an empty stream
         * with a retry time makes it come back (with the same Last-Event-ID)
         * once this node knows the cluster's epoch. */
        conn_sse_retry_later(c, req);
        return;
    }
    if (!conn_groups_admit(c, list, n))
        return;
    conn_sse *s = calloc(1, sizeof *s + ng * sizeof *s->off);
    bool *known = calloc(ng ? 2 * ng : 1, sizeof *known); /* known, then pending */
    if (!s || !known) {
        free(s);
        free(known);
        conn_http_refuse(c, 503, "out of memory", NULL);
        return;
    }
    const char *cur = chan_epoch();
    s->epoch = cur;
    s->n = (uint16_t)ng;
    s->known = known;
    s->pending = known + ng;
    c->sse = s;
    if (!conn_sse_start(c, req, format, ng) || c->dead)
        return;
    bool epoch_ok = use_lei ? query_epoch_is(lp.epoch, (long)lp.epoch_len, cur)
                            : query_epoch_is(epoch, el, cur);
    /* Every group's position is known before the first join, so an event
     * queued while later groups join never claims a position for them that
     * the stream has not covered. A fresh group starts at its last offset
     * before the join: everything after arrives live. */
    bool recover[256], group_epoch_ok[256], wait = false;
    uint64_t from[256];
    for (size_t k = 0; k < ng; k++) {
        uint64_t off = 0;
        if (use_lei) {
            recover[k] = true;
            group_epoch_ok[k] = epoch_ok && lp.known[k];
            from[k] = lp.off[k];
        } else {
            recover[k] = query_since_find(since, sl, names[k], lens[k], &off) == QUERY_SINCE_FOUND;
            group_epoch_ok[k] = epoch_ok;
            from[k] = off;
        }
        if (recover[k]) {
            known[k] = group_epoch_ok[k];
            s->off[k] = from[k];
        } else if (!conn_sse_fresh_position(s, k, names[k], lens[k])) {
            s->pending[k] = true;
            wait = true;
        }
    }
    bool ok = delivery_add_all(&c->w->dl, c);
    for (size_t k = 0; ok && k < ng; k++)
        ok = delivery_subscribe(c, names[k], lens[k], recover[k], from[k], group_epoch_ok[k], false);
    if (!ok) {
        conn_sse_close(c, false);
        return;
    }
    /* Cluster: a group this node does not follow yet has no position to
     * give until the broker confirmed and filled it; the answer waits like a
     * /ws subscriber's 101 does (delivery_check_held calls conn_sse_begin). */
    if (wait && !c->hold && broker_enabled() && broker_up() && delivery_hold(&c->w->dl, c))
        c->hold = true;
    if (!c->hold)
        conn_sse_begin(c);
}

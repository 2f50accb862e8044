/* GET /sse: the request side of a Server-Sent Events subscriber (the proto
 * layer): validation, the 200 head, subscribing with resume positions, and
 * the stream's start (conn_sse_begin). The stream's framing is conn_sse.c. */
#include "conn_sse_route.h"

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
#include "conn_sse.h"
#include "delivery.h"
#include "envelope.h"
#include "query.h"
#include "sse.h"

_Static_assert(SSE_EPOCH_MAX == CHAN_EPOCH_MAX, "an SSE id carries any epoch ?epoch= accepts");

#define CONN_SSE_LIST_MAX 16384

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
    uint64_t ms = c->env->cfg->write_timeout_ms;
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
    c->last_ping_ms = c->env->loop->now_ms;
    METRIC_INC(c->env->m, http_requests);
    METRIC_INC(c->env->m, subscribers_open);
    METRIC_INC(c->env->m, sse_open);
    return conn_send_consume(c, m, false);
}

/* 200, "retry: 1000", end of stream. */
static void conn_sse_retry_later(conn *c, const http_request *req)
{
    msg *m = conn_sse_head(req, "", ": cluster broker not reached yet\nretry: 1000\n\n");
    c->keepalive = false;
    METRIC_INC(c->env->m, http_requests);
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
    bool ok = !delivery_clustered() || chan_ready(ch);
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
    char fmt[16], epoch[CHAN_EPOCH_MAX + 1];
    /* conn_route lets only GET and OPTIONS through. */
    if (req->method != HTTP_GET) {
        conn_sse_preflight(c, req);
        return;
    }
    c->cors_errors = true;
    long n = http_query_get(req->query, "groups", list, sizeof list);
    int max_groups = c->env->cfg->max_groups;
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
    bool ok = delivery_add_all(c->env->dl, c);
    for (size_t k = 0; ok && k < ng; k++)
        ok = delivery_subscribe(c, names[k], lens[k], recover[k], from[k], group_epoch_ok[k], false);
    if (!ok) {
        conn_sse_close(c, false);
        return;
    }
    /* Cluster: a group this node does not follow yet has no position to
     * give until the broker confirmed and filled it; the answer waits like a
     * /ws subscriber's 101 does (delivery_check_held calls conn_sse_begin). */
    if (wait && !c->hold && delivery_upstream_up() && delivery_hold(c->env->dl, c))
        c->hold = true;
    if (!c->hold)
        conn_sse_begin(c);
}

/* HTTP side of a connection: routing, plain responses, POST /publish bodies
 * and the WebSocket upgrade handshake. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "chan.h"
#include "conn.h"
#include "conn_sse.h"
#include "conn_sse_route.h"
#include "delivery.h"
#include "envelope.h"
#include "http.h"
#include "pmd.h"
#include "query.h"
#include "assets.h"
#include "utf8.h"

#define CONN_GROUP_LIST_MAX 16384
/* Over --max-memory, bodies larger than this and than 1/64 of the limit are
 * refused (503 + Retry-After): each is a real share of what is left. */
#define CONN_PRESSURE_BODY_MIN 65536
/* A POST body buffer starts this big and grows as the bytes arrive. */
#define CONN_BODY_FIRST_CAP 16384

/* Queues a complete response. Error statuses close the connection after it. */
static void conn_http_respond(conn *c, int status, const char *ctype, const void *body,
                              size_t blen, const char *extra, bool head_only)
{
    conn_env *w = c->env;
    bool close = status >= 400 || !c->keepalive;
    char hdr[512];
    int h = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nServer: herald/%s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\n%s%sConnection: %s\r\n\r\n",
                     status, http_reason(status), HERALD_VERSION, ctype, blen, extra ? extra : "",
                     c->cors_errors && status >= 400 ? "Access-Control-Allow-Origin: *\r\n" : "",
                     close ? "close" : "keep-alive");
    if (h < 0 || (size_t)h >= sizeof hdr) {
        conn_destroy(c);
        return;
    }
    size_t total = (size_t)h + (head_only ? 0 : blen);
    msg *m = msg_alloc(total);
    if (!m) {
        conn_destroy(c);
        return;
    }
    memcpy(msg_payload(m), hdr, (size_t)h);
    if (!head_only && blen)
        memcpy(msg_payload(m) + h, body, blen);
    m->payload_len = m->len = (uint32_t)total;
    m->kind = MSG_RAW;
    METRIC_INC(w->m, http_requests);
    if (status >= 400) {
        METRIC_INC(w->m, handshakes_failed);
        metrics_count_status(w->m, status);
    }
    if (!conn_send_consume(c, m, false))
        return;
    if (close)
        conn_close_after_flush(c);
}

void conn_http_answer(conn *c, int status, const char *ctype, const void *body, size_t blen,
                      const char *extra)
{
    conn_http_respond(c, status, ctype, body, blen, extra, false);
}

void conn_http_refuse(conn *c, int status, const char *why, const char *extra)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"ok\":false,\"status\":%d,\"error\":\"%s\"}\n", status,
                     why);
    c->keepalive = false;
    conn_http_respond(c, status, "application/json", body, (size_t)n, extra, false);
}

static bool conn_http_is_text(const http_request *req)
{
    const http_str *ct = http_header_get(req, "content-type");
    if (!ct)
        return false;
    size_t n = ct->n;
    const char *semi = memchr(ct->p, ';', n);
    if (semi)
        n = (size_t)(semi - ct->p);
    while (n && (ct->p[n - 1] == ' ' || ct->p[n - 1] == '\t'))
        n--;
    http_str type = {ct->p, n};
    if (n >= 5 && strncasecmp(ct->p, "text/", 5) == 0)
        return true;
    return http_str_eq(type, "application/json");
}

static void conn_publish_body_done(conn *c)
{
    msg *m = c->pub;
    c->pub = NULL;
    c->state = CONN_HTTP;
    if (c->body_text && !utf8_valid(msg_payload(m), m->payload_len)) {
        msg_unref(m);
        conn_http_refuse(c, 400, "text body is not valid UTF-8", NULL);
        return;
    }
    char group[MSG_GROUP_MAX + 1];
    size_t glen = m->group_len;
    memcpy(group, m->group, glen + 1);
    size_t bytes = m->payload_len;
    msg_finish(m, MSG_DATA, c->body_text ? WS_OP_TEXT : WS_OP_BINARY, group, glen);
    METRIC_INC(c->env->m, published_http);
    delivery_publish(c->env->dl, m);
    char body[MSG_GROUP_MAX + 96];
    int n = glen ? snprintf(body, sizeof body, "{\"ok\":true,\"group\":\"%s\",\"bytes\":%zu}\n",
                            group, bytes)
                 : snprintf(body, sizeof body, "{\"ok\":true,\"group\":null,\"bytes\":%zu}\n",
                            bytes);
    conn_http_respond(c, 200, "application/json", body, (size_t)n, NULL, false);
}

void conn_http_body(conn *c, uint8_t *p, size_t n, size_t *used)
{
    msg *m = c->pub;
    size_t take = n < c->body_left ? n : (size_t)c->body_left;
    size_t need = m->payload_len + take;
    if (need > m->cap) {
        /* The buffer grows with what arrives (doubling, up to the declared
         * length): a client that declares a large body and sends little
         * holds little. */
        size_t total = m->payload_len + c->body_left, cap = m->cap * 2;
        if (cap < need)
            cap = need;
        if (cap > total)
            cap = total;
        msg *g = msg_grow(m, cap);
        if (!g) {
            msg_unref(m);
            c->pub = NULL;
            c->state = CONN_HTTP;
            conn_http_refuse(c, 503, "out of memory", NULL);
            *used = n;
            return;
        }
        c->pub = m = g;
    }
    memcpy(msg_payload(m) + m->payload_len, p, take);
    m->payload_len += (uint32_t)take;
    c->body_left -= take;
    *used = take;
    if (c->body_left == 0)
        conn_publish_body_done(c);
}

static void conn_http_publish(conn *c, const http_request *req, const char *group, size_t glen,
                              long framing, unsigned long long len)
{
    const config *cfg = c->env->cfg;
    if (framing == 0) {
        conn_http_refuse(c, 411, "Content-Length required", NULL);
        return;
    }
    if (len > cfg->max_message_size) {
        conn_http_refuse(c, 413, "message larger than --max-message-size", NULL);
        return;
    }
    if (len > CONN_PRESSURE_BODY_MIN && len > cfg->max_memory / 64 && conn_pressure(c)) {
        conn_http_refuse(c, 503, "server memory limit reached, retry later", "Retry-After: 5\r\n");
        return;
    }
    if (glen && !chan_admit(group, glen, cfg->max_live_groups)) {
        conn_http_refuse(c, 503, "too many live groups (--max-live-groups), retry shortly",
                        "Retry-After: 1\r\n");
        return;
    }
    msg *m = msg_alloc(len < CONN_BODY_FIRST_CAP ? (size_t)len : CONN_BODY_FIRST_CAP);
    if (!m) {
        conn_http_refuse(c, 503, "out of memory", NULL);
        return;
    }
    memcpy(m->group, group, glen);
    m->group[glen] = '\0';
    m->group_len = (uint8_t)glen;
    c->body_text = conn_http_is_text(req);
    const http_str *expect = http_header_get(req, "expect");
    if (expect && http_str_eq(*expect, "100-continue") && len > 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        msg *cm = msg_new_raw(cont, sizeof cont - 1);
        /* Without the interim answer the client would send a body we could
         * not frame: refuse rather than read its bytes as requests. */
        if (!cm) {
            msg_unref(m);
            conn_http_refuse(c, 503, "out of memory", NULL);
            return;
        }
        if (!conn_send_consume(c, cm, false)) {
            msg_unref(m);
            return;
        }
    }
    c->pub = m;
    c->body_left = len;
    if (len == 0) {
        conn_publish_body_done(c);
    } else {
        c->state = CONN_HTTP_BODY;
        /* A body may take --body-timeout plus its length at --body-min-rate. */
        c->deadline_ms = c->env->loop->now_ms + cfg->body_timeout_ms + len * 1000 / cfg->body_min_rate;
    }
}

/* Validates the RFC 6455 opening handshake; on failure answers and returns
 * false. */
static bool conn_ws_handshake_ok(conn *c, const http_request *req)
{
    const http_str *v;
    if (req->minor_version < 1) {
        conn_http_refuse(c, 400, "WebSocket needs HTTP/1.1", NULL);
        return false;
    }
    if (!http_header_get(req, "host")) {
        conn_http_refuse(c, 400, "missing Host header", NULL);
        return false;
    }
    if (!(v = http_header_get(req, "upgrade"))) {
        conn_http_refuse(c, 426, "this endpoint speaks WebSocket", "Upgrade: websocket\r\n");
        return false;
    }
    if (!http_has_token(*v, "websocket")) {
        conn_http_refuse(c, 400, "Upgrade must be websocket", NULL);
        return false;
    }
    if (!(v = http_header_get(req, "connection")) || !http_has_token(*v, "upgrade")) {
        conn_http_refuse(c, 400, "Connection must include Upgrade", NULL);
        return false;
    }
    if (!(v = http_header_get(req, "sec-websocket-version")) || !http_str_eq(*v, "13")) {
        conn_http_refuse(c, 426, "unsupported WebSocket version", "Sec-WebSocket-Version: 13\r\n");
        return false;
    }
    if (!(v = http_header_get(req, "sec-websocket-key")) || !ws_key_valid(v->p, v->n)) {
        conn_http_refuse(c, 400, "missing or invalid Sec-WebSocket-Key", NULL);
        return false;
    }
    return true;
}

/* permessage-deflate: the first offer we can honour, from every
 * Sec-WebSocket-Extensions header in order (--compression off: none). */
static bool conn_pmd_negotiate(conn *c, const http_request *req, char ext[PMD_RESPONSE_MAX])
{
    if (!c->env->cfg->compression)
        return false;
    http_str values[HTTP_MAX_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        if (http_str_eq(req->headers[i].name, "sec-websocket-extensions"))
            values[n++] = req->headers[i].value;
    pmd_params p;
    if (!n || !pmd_negotiate(values, n, &p, ext))
        return false;
    c->pmd = true;
    c->pmd_fresh = p.client_no_context_takeover;
    c->pmd_server_bits = p.server_window_bits & 15;
    c->pmd_client_bits = p.client_window_bits & 15;
    return true;
}

static void conn_ws_accept(conn *c, const http_request *req, conn_role role)
{
    const http_str *key = http_header_get(req, "sec-websocket-key");
    char accept[WS_ACCEPT_LEN + 1];
    ws_accept_key(key->p, key->n, accept);
    char ext[PMD_RESPONSE_MAX];
    bool pmd = conn_pmd_negotiate(c, req, ext);
    char resp[256 + PMD_RESPONSE_MAX];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                     accept, pmd ? "Sec-WebSocket-Extensions: " : "", pmd ? ext : "",
                     pmd ? "\r\n" : "");
    msg *m = msg_new_raw(resp, (size_t)n);
    if (!m) {
        conn_destroy(c);
        return;
    }
    c->state = CONN_WS;
    c->role = (uint8_t)role;
    c->last_ping_ms = c->env->loop->now_ms;
    METRIC_INC(c->env->m, http_requests);
    if (role == ROLE_SUB)
        METRIC_INC(c->env->m, subscribers_open);
    else
        METRIC_INC(c->env->m, publishers_open);
    conn_send_consume(c, m, false);
}

static void conn_auth_failed(conn *c, auth_result r)
{
    METRIC_ADD(c->env->m, auth_failures[r < METRICS_AUTH_REASONS ? r : 0], 1);
    if (r == AUTH_FORBIDDEN_GROUP)
        conn_http_refuse(c, 403, "token does not grant this group", NULL);
    else
        conn_http_refuse(c, 401, auth_result_name(r), "WWW-Authenticate: Bearer realm=\"herald\"\r\n");
}

/* --publish-key: every key is compared (constant time each), so timing does
 * not reveal which one matched or how much of it. */
static bool conn_publish_key_ok(conn *c, const http_request *req)
{
    const str_list *keys = &c->env->cfg->publish_keys;
    if (keys->n == 0)
        return true;
    const http_str *h = http_header_get(req, "authorization");
    const char *tok;
    size_t tlen;
    bool ok = false;
    if (h && auth_bearer(h->p, h->n, &tok, &tlen))
        for (size_t i = 0; i < keys->n; i++)
            ok |= auth_key_equal(tok, tlen, keys->v[i], keys->len[i]);
    if (!ok)
        conn_auth_failed(c, h ? AUTH_BAD_SIGNATURE : AUTH_MISSING);
    return ok;
}

/* Browsers send Origin; other clients usually do not, and cannot be stopped
 * by it anyway. The check defeats cross-site WebSocket hijacking. */
bool conn_origin_ok(conn *c, const http_request *req)
{
    const str_list *allowed = &c->env->cfg->allowed_origins;
    const http_str *o = http_header_get(req, "origin");
    if (!o || allowed->n == 0 ||
        auth_origin_allowed(o->p, o->n, (const char *const *)allowed->v, allowed->n))
        return true;
    conn_http_refuse(c, 403, "origin not allowed", NULL);
    return false;
}

/* --max-memory: while over the mark, no new WebSockets (plain requests,
 * health and metrics included, still work: the operator needs them). */
static bool conn_memory_ok(conn *c)
{
    if (!conn_pressure(c))
        return true;
    METRIC_INC(c->env->m, rate_limited);
    conn_http_refuse(c, 503, "server memory limit reached, retry later", "Retry-After: 5\r\n");
    return false;
}

bool conn_accept_rate_ok(conn *c)
{
    if (!conn_memory_ok(c))
        return false;
    if (admit_accept_allow(c->env->loop->now_ms, c->env->cfg->accept_rate))
        return true;
    METRIC_INC(c->env->m, rate_limited);
    conn_http_refuse(c, 503, "too many new connections, retry shortly", "Retry-After: 1\r\n");
    return false;
}

/* --jwt-secret: a valid token is required, and must grant every group asked. */
bool conn_jwt_ok(conn *c, const http_request *req, const char *list, long n)
{
    const config *cfg = c->env->cfg;
    if (cfg->jwt_secrets.n == 0)
        return true;
    static _Thread_local char tokbuf[8200];
    static _Thread_local jwt_claims claims;
    const char *tok = NULL;
    size_t tlen = 0;
    long q = http_query_get(req->query, "token", tokbuf, sizeof tokbuf);
    const http_str *h = http_header_get(req, "authorization");
    if (q >= 0) {
        tok = tokbuf;
        tlen = (size_t)q;
    } else if (q == -2) {
        conn_auth_failed(c, AUTH_MALFORMED);
        return false;
    } else if (!h || !auth_bearer(h->p, h->n, &tok, &tlen)) {
        conn_auth_failed(c, h ? AUTH_MALFORMED : AUTH_MISSING);
        return false;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    auth_result r = jwt_verify(tok, tlen, (const char *const *)cfg->jwt_secrets.v,
                               cfg->jwt_secrets.len, cfg->jwt_secrets.n, (int64_t)now.tv_sec,
                               (int64_t)(cfg->jwt_leeway_ms / 1000), &claims);
    if (r != AUTH_OK) {
        conn_auth_failed(c, r);
        return false;
    }
    query_list it = query_list_start(list, n);
    const char *g;
    size_t glen;
    while (query_list_next(&it, &g, &glen)) {
        if (!jwt_group_allowed(&claims, g, glen)) {
            conn_auth_failed(c, AUTH_FORBIDDEN_GROUP);
            return false;
        }
    }
    return true;
}

/* --max-live-groups: joining a group the process does not know yet is
 * refused (503) when it knows too many. */
bool conn_groups_admit(conn *c, const char *list, long n)
{
    int max = c->env->cfg->max_live_groups;
    query_list it = query_list_start(list, n);
    const char *g;
    size_t glen;
    while (query_list_next(&it, &g, &glen)) {
        if (!chan_admit(g, glen, max)) {
            conn_http_refuse(c, 503, "too many live groups (--max-live-groups), retry shortly",
                            "Retry-After: 1\r\n");
            return false;
        }
    }
    return true;
}

/* since= and epoch= of /ws and /sse: both well formed, and since naming only
 * requested groups; false once refused (400). *sl, *el: their lengths, -1
 * when absent. */
bool conn_since_params(conn *c, const http_request *req, const char *list, long n, char *since,
                       size_t since_cap, char *epoch, size_t epoch_cap, long *sl, long *el)
{
    *sl = http_query_get(req->query, "since", since, since_cap);
    *el = http_query_get(req->query, "epoch", epoch, epoch_cap);
    const char *why = query_resume_check(since, *sl, *el, list, n);
    if (why)
        conn_http_refuse(c, 400, why, NULL);
    return !why;
}

/* How long after start a node without the cluster's epoch asks resuming
 * clients to retry: Redis answers in milliseconds when it is up; when it is
 * down, resumes are answered as in any outage (recovery_failed "epoch"). */
#define CONN_RESUME_GRACE_MS 5000

bool conn_resume_early(const conn *c)
{
    /* A restarted node that has not reached Redis yet still carries its own
     * start-up epoch: a resume would be told "epoch" (resync) although the
     * cluster kept the history. The client is asked to come back instead. */
    return delivery_clustered() && chan_epoch_gen() <= 1 &&
           c->env->loop->now_ms - c->env->start_ms < CONN_RESUME_GRACE_MS;
}

bool conn_resume_ready(conn *c)
{
    if (!conn_resume_early(c))
        return true;
    conn_http_refuse(c, 503, "cluster broker not reached yet, retry shortly", "Retry-After: 1\r\n");
    return false;
}

static void conn_route_ws(conn *c, const http_request *req)
{
    static _Thread_local char list[CONN_GROUP_LIST_MAX], since[CONN_GROUP_LIST_MAX];
    char fmt[16], epoch[CHAN_EPOCH_MAX + 1], jv[4];
    long n = http_query_get(req->query, "groups", list, sizeof list);
    const char *why = query_groups_check(list, n, c->env->cfg->max_groups);
    if (why) {
        conn_http_refuse(c, 400, why, NULL);
        return;
    }
    static const msg_format formats[] = {
        [QUERY_FORMAT_RAW] = FORMAT_RAW,
        [QUERY_FORMAT_JSON] = FORMAT_JSON,
        [QUERY_FORMAT_MSGPACK] = FORMAT_MSGPACK,
    };
    long fl = http_query_get(req->query, "format", fmt, sizeof fmt);
    query_format qf = query_format_parse(fmt, fl);
    if (qf == QUERY_FORMAT_BAD) {
        conn_http_refuse(c, 400, "format must be raw, json or msgpack", NULL);
        return;
    }
    msg_format format = formats[qf];
    /* joined=1: a position notice per plainly joined group. It is JSON, like
     * the envelopes it sits among: the raw and msgpack formats have no place
     * for it. */
    long jl = http_query_get(req->query, "joined", jv, sizeof jv);
    int joined = query_flag(jv, jl);
    if (joined < 0) {
        conn_http_refuse(c, 400, "joined must be 0 or 1", NULL);
        return;
    }
    if (joined && format != FORMAT_JSON) {
        conn_http_refuse(c, 400, "joined=1 needs format=json", NULL);
        return;
    }
    long sl, el;
    if (!conn_since_params(c, req, list, n, since, sizeof since, epoch, sizeof epoch, &sl, &el))
        return;
    if (!conn_ws_handshake_ok(c, req) || !conn_origin_ok(c, req) || !conn_accept_rate_ok(c) ||
        !conn_jwt_ok(c, req, list, n))
        return;
    /* After the checks: a refused client learns that, not "retry shortly". */
    if (sl >= 0 && !conn_resume_ready(c))
        return;
    if (!conn_groups_admit(c, list, n))
        return;
    c->format = (uint8_t)format;
    conn_ws_accept(c, req, ROLE_SUB); /* the 101 is queued first, replays after it */
    if (c->dead)
        return;
    bool epoch_ok = query_epoch_is(epoch, el, chan_epoch());
    bool ok = delivery_add_all(c->env->dl, c);
    query_list it = query_list_start(list, n);
    const char *g;
    size_t glen;
    while (ok && query_list_next(&it, &g, &glen)) {
        uint64_t off = 0;
        bool recover = query_since_find(since, sl, g, glen, &off) == QUERY_SINCE_FOUND;
        ok = delivery_subscribe(c, g, glen, recover, off, epoch_ok, joined);
    }
    if (!ok)
        conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory", false);
}

/* /publish: a POST body, or a publisher's WebSocket (GET); group= names the
 * target group, absent for everyone. */
static void conn_route_publish(conn *c, const http_request *req)
{
    char group[MSG_GROUP_MAX + 1];
    long glen = http_query_get(req->query, "group", group, sizeof group);
    const char *why = query_group_check(group, glen);
    if (why) {
        conn_http_refuse(c, 400, why, NULL);
        return;
    }
    if (glen < 0)
        glen = 0;
    if (req->method == HTTP_POST) {
        /* conn_route refused a framing that is not 0 or 1 already. */
        unsigned long long blen;
        long framing = http_body_framing(req, &blen);
        if (conn_publish_key_ok(c, req))
            conn_http_publish(c, req, group, (size_t)glen, framing, blen);
        return;
    }
    if (!conn_ws_handshake_ok(c, req) || !conn_origin_ok(c, req) || !conn_accept_rate_ok(c) ||
        !conn_publish_key_ok(c, req) || !conn_groups_admit(c, group, glen ? glen : -1))
        return;
    if (glen && !(c->pub_group = strdup(group))) {
        conn_http_refuse(c, 503, "out of memory", NULL);
        return;
    }
    conn_ws_accept(c, req, ROLE_PUB);
}

/* Degraded still answers 200: local subscribers are served; the body and
 * /stats say the cluster is not. */
static void conn_route_health(conn *c, const http_request *req)
{
    static const char degraded[] = "degraded: cluster broker unreachable\n",
                      pressed[] = "degraded: memory over --max-memory\n";
    const char *body = delivery_clustered() && !delivery_upstream_up() ? degraded
                       : conn_pressure(c)     ? pressed
                                                          : "ok\n";
    conn_http_respond(c, 200, "text/plain; charset=utf-8", body, strlen(body), NULL,
                      req->method == HTTP_HEAD);
}

static void conn_route_counters(conn *c, const http_request *req, bool json)
{
    static _Thread_local char buf[65536];
    size_t n = c->env->metrics_text(c->env->owner, buf, sizeof buf, json);
    conn_http_respond(c, 200, json ? "application/json" : "text/plain; version=0.0.4; charset=utf-8",
                      buf, n, NULL, req->method == HTTP_HEAD);
}

static void conn_route_metrics(conn *c, const http_request *req)
{
    conn_route_counters(c, req, false);
}

static void conn_route_stats(conn *c, const http_request *req)
{
    conn_route_counters(c, req, true);
}

/* The client for pages on other origins too (CORS): it is public code. */
static void conn_route_client_js(conn *c, const http_request *req)
{
    conn_http_respond(c, 200, "text/javascript; charset=utf-8", herald_client_js,
                      herald_client_js_len, "Access-Control-Allow-Origin: *\r\n",
                      req->method == HTTP_HEAD);
}

static void conn_route_page(conn *c, const http_request *req)
{
    conn_http_respond(c, 200, "text/html; charset=utf-8", status_page_html, status_page_html_len,
                      NULL, req->method == HTTP_HEAD);
}

/* Methods as bits of a route's mask. OPTIONS has no http_method of its own
 * (only /sse answers it, a CORS preflight). */
enum {
    CONN_M_GET = 1u << 0,
    CONN_M_HEAD = 1u << 1,
    CONN_M_POST = 1u << 2,
    CONN_M_OPTIONS = 1u << 3,
};

/* Every path herald serves, in one place: a path found here exists (a method
 * it does not list gets 405 with an Allow header built from the mask), any
 * other is 404; a request that passes goes to the handler. */
typedef struct conn_http_route {
    const char *path;
    unsigned methods;
    const char *wrong_method; /* the 405's reason */
    void (*handler)(conn *c, const http_request *req);
} conn_http_route;

static const conn_http_route conn_http_routes[] = {
    {"/ws", CONN_M_GET, "use GET with a WebSocket upgrade", conn_route_ws},
    {"/sse", CONN_M_GET | CONN_M_OPTIONS, "use GET (an EventSource)", conn_sse_route},
    {"/publish", CONN_M_GET | CONN_M_POST, "use POST, or GET with a WebSocket upgrade",
     conn_route_publish},
    {"/healthz", CONN_M_GET | CONN_M_HEAD, "use GET", conn_route_health},
    {"/metrics", CONN_M_GET | CONN_M_HEAD, "use GET", conn_route_metrics},
    {"/stats", CONN_M_GET | CONN_M_HEAD, "use GET", conn_route_stats},
    {"/", CONN_M_GET | CONN_M_HEAD, "use GET", conn_route_page},
    {"/index.html", CONN_M_GET | CONN_M_HEAD, "use GET", conn_route_page},
    {"/herald-client.js", CONN_M_GET | CONN_M_HEAD, "use GET", conn_route_client_js},
};

static unsigned conn_method_bit(const http_request *req)
{
    switch (req->method) {
    case HTTP_GET: return CONN_M_GET;
    case HTTP_HEAD: return CONN_M_HEAD;
    case HTTP_POST: return CONN_M_POST;
    default:
        return req->method_str.n == 7 && memcmp(req->method_str.p, "OPTIONS", 7) == 0
                   ? CONN_M_OPTIONS
                   : 0;
    }
}

/* "Allow: GET, HEAD\r\n" from a route's mask. */
static void conn_allow_header(unsigned methods, char *out, size_t cap)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "OPTIONS"};
    size_t k = (size_t)snprintf(out, cap, "Allow:");
    const char *sep = " ";
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
        if (methods & (1u << i)) {
            k += (size_t)snprintf(out + k, cap - k, "%s%s", sep, names[i]);
            sep = ", ";
        }
    snprintf(out + k, cap - k, "\r\n");
}

static void conn_route(conn *c, const http_request *req)
{
    bool bodiless = req->method == HTTP_GET || req->method == HTTP_HEAD;
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host. */
    if (req->minor_version >= 1 && http_header_count(req, "host") != 1) {
        conn_http_refuse(c, 400, "an HTTP/1.1 request needs exactly one Host header", NULL);
        return;
    }
    unsigned long long blen;
    long framing = http_body_framing(req, &blen);
    if (framing < 0) {
        int status = (int)-framing;
        conn_http_refuse(c, status,
                         status == 411   ? "send the body with Content-Length"
                         : status == 501 ? "transfer coding not supported"
                         : bodiless      ? "a GET or HEAD request carries no body"
                                         : "ambiguous message framing",
                         NULL);
        return;
    }
    const conn_http_route *r = NULL;
    for (size_t i = 0; !r && i < sizeof conn_http_routes / sizeof *conn_http_routes; i++) {
        const char *p = conn_http_routes[i].path;
        if (strlen(p) == req->path.n && memcmp(p, req->path.p, req->path.n) == 0)
            r = &conn_http_routes[i];
    }
    if (!r) {
        conn_http_refuse(c, 404, "not found", NULL);
        return;
    }
    if (!(r->methods & conn_method_bit(req))) {
        char allow[64];
        conn_allow_header(r->methods, allow, sizeof allow);
        conn_http_refuse(c, 405, r->wrong_method, allow);
        return;
    }
    r->handler(c, req);
}

void conn_http_process(conn *c, uint8_t *p, size_t n, size_t *used)
{
    const config *cfg = c->env->cfg;
    http_request req;
    long rc = http_parse_request((const char *)p, n, cfg->max_header_size, &req);
    if (rc == 0) { /* incomplete: keep it for the next read */
        if (!c->head_active) { /* --header-timeout runs from the first byte */
            c->head_active = true;
            c->deadline_ms = c->env->loop->now_ms + cfg->header_timeout_ms;
        }
        if (!conn_keep_pending(c, p, n)) {
            conn_destroy(c);
            return;
        }
        *used = n;
        return;
    }
    if (rc < 0) {
        int status = (int)-rc;
        conn_http_refuse(c, status,
                        status == 431 ? "request head too large"
                        : status == 505 ? "HTTP version not supported"
                                        : "malformed request",
                        NULL);
        *used = n;
        return;
    }
    *used = (size_t)rc;
    c->head_active = false;
    const http_str *conn_hdr = http_header_get(&req, "connection");
    c->keepalive = req.minor_version >= 1 ? !(conn_hdr && http_has_token(*conn_hdr, "close"))
                                          : (conn_hdr && http_has_token(*conn_hdr, "keep-alive"));
    conn_route(c, &req);
}

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "broker.h"
#include "chan.h"
#include "log.h"
#include "server.h"
#include "worker.h"

#define BROKER_BACKOFF_MIN_MS 100
#define BROKER_BACKOFF_MAX_MS 5000
#define BROKER_OFFSET_PREFIX "herald:off:"
#define BROKER_PING_EVERY_MS 1000
#define BROKER_PING_TIMEOUT_MS 3000
#define BROKER_CHANNEL_MAX (32 + MSG_GROUP_MAX)

#define BROKER_HISTORY_PREFIX "herald:h:"

/* INCR, XADD and PUBLISH in one atomic command: the offset, the group's
 * history in Redis and the channel order agree on every node. The payload is
 * "<offset>:<t|b><bytes>"; the stream entry's id is "<offset>-0" and is
 * trimmed to --history entries (ARGV[2]) and expires after --history-ttl of
 * silence (ARGV[3], ms; 0: never). */
static const char broker_script[] =
    "local o = redis.call('INCR', KEYS[1]) "
    "local n = tonumber(ARGV[2]) "
    "if n > 0 then "
    "  redis.call('XADD', KEYS[3], 'MAXLEN', n, o .. '-0', 'd', ARGV[1]) "
    "  local t = tonumber(ARGV[3]) "
    "  if t > 0 then redis.call('PEXPIRE', KEYS[3], t) end "
    "end "
    "redis.call('PUBLISH', KEYS[2], o .. ':' .. ARGV[1]) "
    "return o";

/* A node that starts following a group (its SUBSCRIBE confirmed) reads
 * Redis's view of it: GET the last offset, then XRANGE the kept messages,
 * pipelined on one connection. Not atomic, and need not be: anything
 * published after the SUBSCRIBE also arrives live, and entries above the
 * offset read first are left to that live copy. */
typedef struct broker_filling {
    uint64_t last;
    bool ok;
    bool orphan; /* the XRANGE could not be queued: the GET's callback frees */
    char group[];
} broker_filling;

typedef enum broker_op { BROKER_PUBLISH, BROKER_SUB, BROKER_UNSUB } broker_op;

typedef struct broker_cmd {
    struct broker_cmd *next;
    broker_op op;
    msg *m;
    uint8_t len;
    char group[MSG_GROUP_MAX + 1];
} broker_cmd;

/* One per hiredis context: what our epoll sees. */
typedef struct broker_io {
    redisAsyncContext *ac;
    int fd;
    uint32_t events;
    bool added;
} broker_io;

static struct {
    bool enabled;
    char host[256];
    int port, db;
    worker *w;
    pthread_mutex_t lock;
    broker_cmd *head, *tail;
    broker_io io[2]; /* 0: commands, 1: subscriptions */
    bool connecting;
    int ready;        /* contexts connected */
    atomic_bool up;
    bool closing;             /* shutting down: failed publishes are just released */
    uint64_t retry_at_ms, backoff_ms;
    uint64_t ping_sent_ms;    /* 0: no PING outstanding */
    uint64_t ping_due_ms;
    /* Pub/Sub ignores the database number, so the channels carry it:
     * clusters on two databases of one Redis stay apart. */
    char group_prefix[32];    /* "herald:<db>:g:" */
    size_t group_prefix_len;
    char all_channel[32];     /* "herald:<db>:all" */
} B;

bool broker_enabled(void) { return B.enabled; }

bool broker_up(void) { return atomic_load_explicit(&B.up, memory_order_acquire); }

bool broker_owns(const void *tag) { return tag == &B.io[0] || tag == &B.io[1]; }

bool broker_init(const char *url)
{
    memset(&B, 0, sizeof B);
    pthread_mutex_init(&B.lock, NULL);
    if (!url)
        return true;
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        log_msg(LOG_ERROR, "--broker must be redis://HOST:PORT[/DB], got '%s'", url);
        return false;
    }
    p += 8;
    const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof B.host) {
        log_msg(LOG_ERROR, "--broker: missing host in '%s'", url);
        return false;
    }
    memcpy(B.host, p, hl);
    B.port = 6379;
    char *end;
    if (colon && (!slash || colon < slash)) {
        long port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
            log_msg(LOG_ERROR, "--broker: bad port in '%s'", url);
            return false;
        }
        B.port = (int)port;
    }
    if (slash) {
        long db = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || db < 0 || db > 1000000) {
            log_msg(LOG_ERROR, "--broker: bad database number in '%s'", url);
            return false;
        }
        B.db = (int)db;
    }
    B.enabled = true;
    B.backoff_ms = BROKER_BACKOFF_MIN_MS;
    B.group_prefix_len = (size_t)snprintf(B.group_prefix, sizeof B.group_prefix, "herald:%d:g:", B.db);
    snprintf(B.all_channel, sizeof B.all_channel, "herald:%d:all", B.db);
    return true;
}

/* The channel of a group (len 0: broadcasts to all); returns its length. */
static int broker_channel(char out[BROKER_CHANNEL_MAX], const char *group, size_t len)
{
    if (len == 0)
        return snprintf(out, BROKER_CHANNEL_MAX, "%s", B.all_channel);
    return snprintf(out, BROKER_CHANNEL_MAX, "%s%.*s", B.group_prefix, (int)len, group);
}

/* ---- our epoll as hiredis' event loop ------------------------------------- */

static void broker_io_update(broker_io *io)
{
    struct epoll_event ev = {.events = io->events, .data.ptr = io};
    if (!io->added && io->events) {
        if (epoll_ctl(B.w->epfd, EPOLL_CTL_ADD, io->fd, &ev) == 0)
            io->added = true;
    } else if (io->added && io->events) {
        epoll_ctl(B.w->epfd, EPOLL_CTL_MOD, io->fd, &ev);
    } else if (io->added) {
        epoll_ctl(B.w->epfd, EPOLL_CTL_DEL, io->fd, NULL);
        io->added = false;
    }
}

static void broker_add_read(void *d) { broker_io *io = d; io->events |= EPOLLIN; broker_io_update(io); }
static void broker_del_read(void *d) { broker_io *io = d; io->events &= ~(uint32_t)EPOLLIN; broker_io_update(io); }
static void broker_add_write(void *d) { broker_io *io = d; io->events |= EPOLLOUT; broker_io_update(io); }
static void broker_del_write(void *d) { broker_io *io = d; io->events &= ~(uint32_t)EPOLLOUT; broker_io_update(io); }
static void broker_cleanup(void *d)
{
    broker_io *io = d;
    io->events = 0;
    broker_io_update(io);
    io->ac = NULL;
}

void broker_on_event(void *tag, uint32_t events)
{
    broker_io *io = tag;
    if (io->ac && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        redisAsyncHandleRead(io->ac);
    if (io->ac && (events & EPOLLOUT))
        redisAsyncHandleWrite(io->ac);
}

/* ---- state changes ------------------------------------------------------------ */

/* While Redis is unreachable this node sequences alone: its offsets belong
 * to no one else, so they get an epoch of their own. */
static void broker_local_epoch(void)
{
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)getpid() ^ B.w->now_ms;
    char e[40];
    snprintf(e, sizeof e, "local-%016llx", (unsigned long long)rnd);
    chan_set_epoch(e);
}

static void broker_unconfirm(chan *c, void *arg)
{
    (void)arg;
    chan_set_confirmed(c, false);
}

/* Either context failing takes the broker down as a whole: simpler to reason
 * about than half a connection. */
static void broker_went_down(const char *why)
{
    bool was_up = atomic_exchange(&B.up, false);
    for (int i = 0; i < 2; i++)
        if (B.io[i].ac) {
            redisAsyncContext *ac = B.io[i].ac;
            B.io[i].ac = NULL;
            ac->data = NULL;
            redisAsyncFree(ac);
        }
    B.ready = 0;
    B.connecting = false;
    B.ping_sent_ms = 0;
    METRIC_INC(&B.w->m, broker_errors);
    chan_foreach(broker_unconfirm, NULL);
    if (was_up) {
        /* Messages published elsewhere from now on will not reach us: what
         * our history says from here is another story, under a new epoch. */
        broker_local_epoch();
        log_msg(LOG_WARN, "broker %s:%d down (%s): local delivery only, retrying", B.host, B.port,
                why);
    }
    B.retry_at_ms = B.w->now_ms + B.backoff_ms;
    B.backoff_ms = B.backoff_ms * 2 > BROKER_BACKOFF_MAX_MS ? BROKER_BACKOFF_MAX_MS : B.backoff_ms * 2;
}

static void broker_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    for (int i = 0; i < 2; i++)
        if (B.io[i].ac == ac)
            B.io[i].ac = NULL; /* hiredis frees it after this callback */
    if (B.enabled && B.w)
        broker_went_down(ac->errstr[0] ? ac->errstr : "disconnected");
}

static void broker_on_sub_reply(redisAsyncContext *ac, void *r, void *priv);
static void broker_fill(const char *g, size_t len);

static void broker_resubscribe(chan *c, void *arg)
{
    (void)arg;
    size_t len;
    const char *name = chan_name(c, &len);
    if (len && chan_subscribers(c) > 0 && B.io[1].ac) {
        char ch[BROKER_CHANNEL_MAX];
        int n = broker_channel(ch, name, len);
        redisAsyncCommand(B.io[1].ac, broker_on_sub_reply, NULL, "SUBSCRIBE %b", ch, (size_t)n);
    }
}

/* The cluster's epoch lives in Redis next to the offset counters: if Redis
 * loses them (a restart without persistence), it loses the epoch too, the
 * first node back sets a new one, and every node adopts it. Offsets from
 * before and after can never be confused. Only then does the broker open:
 * every message we deliver from here carries the shared epoch. */
static void broker_on_epoch(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_STRING || reply->len == 0 || reply->len > 64) {
        broker_went_down("no epoch from Redis");
        return;
    }
    char e[80];
    snprintf(e, sizeof e, "%.*s", (int)reply->len, reply->str);
    chan_reset_all(); /* offsets come from Redis again; what we kept is another lineage */
    chan_set_epoch(e);
    redisAsyncCommand(B.io[1].ac, broker_on_sub_reply, NULL, "SUBSCRIBE %s", B.all_channel);
    B.ping_sent_ms = 0;
    B.ping_due_ms = B.w->now_ms + BROKER_PING_EVERY_MS;
    chan_foreach(broker_resubscribe, NULL);
    B.backoff_ms = BROKER_BACKOFF_MIN_MS;
    B.connecting = false;
    atomic_store(&B.up, true);
    METRIC_INC(&B.w->m, broker_reconnects);
    log_msg(LOG_INFO, "broker %s:%d connected (epoch %s)", B.host, B.port, e);
    worker_release_held_all(B.w->srv);
}

static void broker_on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        for (int i = 0; i < 2; i++)
            if (B.io[i].ac == ac)
                B.io[i].ac = NULL; /* hiredis frees a context that failed to connect */
        broker_went_down(ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    if (++B.ready < 2)
        return;
    char e[17];
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)getpid() ^ B.w->now_ms;
    snprintf(e, sizeof e, "%016llx", (unsigned long long)rnd);
    redisAsyncCommand(B.io[0].ac, NULL, NULL, "SET herald:epoch %s NX", e);
    redisAsyncCommand(B.io[0].ac, broker_on_epoch, NULL, "GET herald:epoch");
}

static bool broker_connect_one(int i)
{
    redisAsyncContext *ac = redisAsyncConnect(B.host, B.port);
    if (!ac)
        return false;
    if (ac->err) {
        log_msg(LOG_WARN, "broker: %s", ac->errstr);
        redisAsyncFree(ac);
        return false;
    }
    broker_io *io = &B.io[i];
    io->ac = ac;
    io->fd = ac->c.fd;
    io->events = 0;
    io->added = false;
    ac->ev.data = io;
    ac->ev.addRead = broker_add_read;
    ac->ev.delRead = broker_del_read;
    ac->ev.addWrite = broker_add_write;
    ac->ev.delWrite = broker_del_write;
    ac->ev.cleanup = broker_cleanup;
    redisAsyncSetConnectCallback(ac, broker_on_connect);
    redisAsyncSetDisconnectCallback(ac, broker_on_disconnect);
    if (B.db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", B.db);
    /* hiredis waits for writability to learn that the connect finished. */
    broker_add_write(io);
    return true;
}

static void broker_connect(void)
{
    B.connecting = true;
    B.ready = 0;
    if (!broker_connect_one(0) || !broker_connect_one(1))
        broker_went_down("cannot create a connection");
}

void broker_attach(worker *w0) { B.w = w0; }

/* ---- incoming messages ----------------------------------------------------------- */

static void broker_deliver(const char *ch, size_t chlen, const char *p, size_t n)
{
    const char *group = NULL;
    size_t glen = 0;
    if (chlen > B.group_prefix_len && memcmp(ch, B.group_prefix, B.group_prefix_len) == 0) {
        group = ch + B.group_prefix_len;
        glen = chlen - B.group_prefix_len;
    } else if (!(chlen == strlen(B.all_channel) && memcmp(ch, B.all_channel, chlen) == 0)) {
        return;
    }
    const char *colon = memchr(p, ':', n < 24 ? n : 24);
    if (!colon || colon + 1 >= p + n || glen > MSG_GROUP_MAX) {
        METRIC_INC(&B.w->m, broker_errors);
        return;
    }
    uint64_t off = strtoull(p, NULL, 10);
    char kind = colon[1];
    const char *data = colon + 2;
    size_t dlen = (size_t)(p + n - data);
    msg *m = msg_alloc(dlen);
    if (!m)
        return;
    memcpy(msg_payload(m), data, dlen);
    m->payload_len = (uint32_t)dlen;
    msg_finish(m, MSG_DATA, kind == 't' ? WS_OP_TEXT : WS_OP_BINARY, group, glen);
    METRIC_INC(&B.w->m, broker_received);
    worker_deliver_sequenced(B.w, m, off);
}

static void broker_on_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    redisReply *kind = reply->element[0], *ch = reply->element[1], *body = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING)
        return;
    if (!strcmp(kind->str, "message") && body->type == REDIS_REPLY_STRING) {
        broker_deliver(ch->str, ch->len, body->str, body->len);
        return;
    }
    bool sub = !strcmp(kind->str, "subscribe");
    if (!sub && strcmp(kind->str, "unsubscribe") != 0)
        return;
    if (ch->len <= B.group_prefix_len || memcmp(ch->str, B.group_prefix, B.group_prefix_len) != 0)
        return;
    const char *g = ch->str + B.group_prefix_len;
    chan *c = chan_lock(g, ch->len - B.group_prefix_len);
    if (c) {
        chan_set_confirmed(c, sub);
        chan_unlock(c);
    }
    if (sub) /* subscribed: what came before is read from Redis, then subscribers go live */
        broker_fill(g, ch->len - B.group_prefix_len);
}

/* One kept message from an XRANGE entry [id, [field, value]]; NULL when the
 * entry is not ours. */
static msg *broker_fill_entry(const redisReply *e, const char *g, size_t glen)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY ||
        e->element[1]->elements != 2 || e->element[1]->element[1]->type != REDIS_REPLY_STRING)
        return NULL;
    const redisReply *v = e->element[1]->element[1];
    if (v->len < 1)
        return NULL;
    msg *m = msg_alloc(v->len - 1);
    if (!m)
        return NULL;
    memcpy(msg_payload(m), v->str + 1, v->len - 1);
    m->payload_len = (uint32_t)(v->len - 1);
    msg_finish(m, MSG_DATA, v->str[0] == 't' ? WS_OP_TEXT : WS_OP_BINARY, g, glen);
    m->offset = strtoull(e->element[0]->str, NULL, 10);
    m->epoch = chan_epoch();
    m->epoch_gen = chan_epoch_gen();
    return m;
}

static void broker_on_fill_last(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    broker_filling *f = priv;
    redisReply *reply = r;
    if (f->orphan) {
        free(f);
        worker_release_held_all(B.w->srv);
        return;
    }
    f->ok = reply && (reply->type == REDIS_REPLY_NIL || reply->type == REDIS_REPLY_STRING);
    f->last = f->ok && reply->type == REDIS_REPLY_STRING ? strtoull(reply->str, NULL, 10) : 0;
}

static void broker_on_fill(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    broker_filling *f = priv;
    const char *g = f->group;
    redisReply *reply = r;
    size_t glen = strlen(g);
    if (!f->ok || !reply || reply->type != REDIS_REPLY_ARRAY) {
        /* The record stays stale: recoveries answer too_old, never nothing. */
        if (reply)
            METRIC_INC(&B.w->m, broker_errors);
        free(f);
        worker_release_held_all(B.w->srv);
        return;
    }
    uint64_t last = f->last;
    redisReply *list = reply;
    msg **v = list->elements ? calloc(list->elements, sizeof *v) : NULL;
    size_t n = 0;
    for (size_t i = 0; v && i < list->elements; i++) {
        msg *m = broker_fill_entry(list->element[i], g, glen);
        if (m && (n == 0 || m->offset > v[n - 1]->offset))
            v[n++] = m;
        else if (m)
            msg_unref(m);
    }
    chan_history_cfg hc = worker_history_cfg(B.w);
    chan *c = chan_lock(g, glen);
    if (c) {
        if (chan_confirmed(c) && (list->elements == 0 || v))
            chan_fill(c, last, v, n, &hc, B.w->now_ms);
        chan_unlock(c);
    }
    for (size_t i = 0; i < n; i++)
        msg_unref(v[i]);
    free(v);
    free(f);
    worker_release_held_all(B.w->srv);
}

static void broker_fill(const char *g, size_t len)
{
    char key[sizeof BROKER_OFFSET_PREFIX + MSG_GROUP_MAX], hist[sizeof BROKER_HISTORY_PREFIX + MSG_GROUP_MAX];
    int kl = snprintf(key, sizeof key, BROKER_OFFSET_PREFIX "%.*s", (int)len, g);
    int hl = snprintf(hist, sizeof hist, BROKER_HISTORY_PREFIX "%.*s", (int)len, g);
    broker_filling *f = calloc(1, sizeof *f + len + 1);
    if (!f || !B.io[0].ac) {
        free(f);
        worker_release_held_all(B.w->srv);
        return;
    }
    memcpy(f->group, g, len);
    if (redisAsyncCommand(B.io[0].ac, broker_on_fill_last, f, "GET %b", key, (size_t)kl) !=
        REDIS_OK) {
        free(f);
        worker_release_held_all(B.w->srv);
        return;
    }
    /* hiredis calls every queued callback, with no reply if the connection
     * fails: f is freed by the XRANGE's, or by the GET's when it is alone. */
    if (redisAsyncCommand(B.io[0].ac, broker_on_fill, f, "XRANGE %b - +", hist, (size_t)hl) !=
        REDIS_OK)
        f->orphan = true;
}

/* Each EVAL carries a reference to its message until Redis answers. hiredis
 * calls back with no reply when the connection fails with the command still
 * pending: that publish was accepted (200) but may never have reached Redis,
 * so local subscribers get it from here -- at the cost of a possible
 * duplicate if Redis did publish it just before the connection died. */
static void broker_on_publish_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    redisReply *reply = r;
    msg *m = priv;
    if (reply && reply->type != REDIS_REPLY_ERROR) {
        msg_unref(m);
        return;
    }
    METRIC_INC(&B.w->m, broker_errors);
    if (reply)
        log_msg(LOG_WARN, "broker publish failed: %.*s", (int)reply->len, reply->str);
    if (B.closing)
        msg_unref(m);
    else
        worker_deliver_local(B.w, m);
}

static void broker_on_pong(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)priv;
    if (r) {
        B.ping_sent_ms = 0;
        B.ping_due_ms = B.w->now_ms + BROKER_PING_EVERY_MS;
    }
}

/* ---- commands from any thread ------------------------------------------------------ */

static void broker_enqueue(broker_op op, msg *m, const char *group, size_t len)
{
    broker_cmd *c = calloc(1, sizeof *c);
    if (!c) {
        if (m)
            msg_unref(m);
        log_msg(LOG_ERROR, "out of memory: broker command lost");
        return;
    }
    c->op = op;
    c->m = m;
    c->len = (uint8_t)len;
    memcpy(c->group, group, len);
    pthread_mutex_lock(&B.lock);
    if (B.tail)
        B.tail->next = c;
    else
        B.head = c;
    B.tail = c;
    pthread_mutex_unlock(&B.lock);
    if (B.w)
        worker_wake(B.w);
}

void broker_publish(msg *m) { broker_enqueue(BROKER_PUBLISH, m, m->group, m->group_len); }
void broker_subscribe(const char *g, size_t len) { broker_enqueue(BROKER_SUB, NULL, g, len); }
void broker_unsubscribe(const char *g, size_t len) { broker_enqueue(BROKER_UNSUB, NULL, g, len); }

static void broker_send_publish(msg *m)
{
    char key[sizeof BROKER_OFFSET_PREFIX + MSG_GROUP_MAX], ch[BROKER_CHANNEL_MAX];
    char hist[sizeof BROKER_HISTORY_PREFIX + MSG_GROUP_MAX], n[24], ttl[24];
    int kl = m->group_len ? snprintf(key, sizeof key, BROKER_OFFSET_PREFIX "%s", m->group)
                          : snprintf(key, sizeof key, BROKER_OFFSET_PREFIX "*");
    int hl = m->group_len ? snprintf(hist, sizeof hist, BROKER_HISTORY_PREFIX "%s", m->group)
                          : snprintf(hist, sizeof hist, BROKER_HISTORY_PREFIX "*");
    const config *cfg = B.w->cfg; /* we run in worker 0's loop: its snapshot */
    int nl = snprintf(n, sizeof n, "%d", m->group_len ? cfg->history : 0);
    int tl = snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)cfg->history_ttl_ms);
    int cl = broker_channel(ch, m->group, m->group_len);
    /* ARGV[1] is the kind byte followed by the payload: one copy, as hiredis
     * formats the command into its own buffer anyway. */
    size_t plen = m->payload_len;
    char *arg = malloc(plen + 1);
    if (!arg) {
        worker_deliver_local(B.w, m);
        return;
    }
    arg[0] = m->opcode == WS_OP_TEXT ? 't' : 'b';
    memcpy(arg + 1, m->data + (m->len - plen), plen);
    const char *argv[9] = {"EVAL", broker_script, "3", key, ch, hist, arg, n, ttl};
    size_t lens[9] = {4, sizeof broker_script - 1, 1, (size_t)kl, (size_t)cl, (size_t)hl,
                      plen + 1, (size_t)nl, (size_t)tl};
    if (redisAsyncCommandArgv(B.io[0].ac, broker_on_publish_reply, m, 9, argv, lens) == REDIS_OK) {
        METRIC_INC(&B.w->m, broker_published);
    } else {
        METRIC_INC(&B.w->m, broker_errors);
        worker_deliver_local(B.w, m);
    }
    free(arg);
}

/* hiredis' async API has no timeouts: a Redis that hangs (or a partition
 * that sends no reset) would leave us "up" forever, queueing publishes.
 * A PING every second that must be answered within 3 s catches it. */
static void broker_watchdog(uint64_t now_ms)
{
    if (!broker_up() || !B.io[0].ac)
        return;
    if (B.ping_sent_ms && now_ms - B.ping_sent_ms > BROKER_PING_TIMEOUT_MS) {
        broker_went_down("no answer to PING within 3 s");
        return;
    }
    if (!B.ping_sent_ms && now_ms >= B.ping_due_ms) {
        B.ping_sent_ms = now_ms;
        redisAsyncCommand(B.io[0].ac, broker_on_pong, NULL, "PING");
    }
}

void broker_poll(uint64_t now_ms)
{
    if (!B.enabled)
        return;
    if (!broker_up() && !B.connecting && now_ms >= B.retry_at_ms)
        broker_connect();
    broker_watchdog(now_ms);
    pthread_mutex_lock(&B.lock);
    broker_cmd *c = B.head;
    B.head = B.tail = NULL;
    pthread_mutex_unlock(&B.lock);
    while (c) {
        broker_cmd *next = c->next;
        if (c->op == BROKER_PUBLISH) {
            if (broker_up())
                broker_send_publish(c->m);
            else /* Redis unreachable: local subscribers still get it */
                worker_deliver_local(B.w, c->m);
        } else if (broker_up() && B.io[1].ac) {
            char ch[BROKER_CHANNEL_MAX];
            int n = broker_channel(ch, c->group, c->len);
            redisAsyncCommand(B.io[1].ac, broker_on_sub_reply, NULL,
                              c->op == BROKER_SUB ? "SUBSCRIBE %b" : "UNSUBSCRIBE %b", ch,
                              (size_t)n);
        }
        free(c);
        c = next;
    }
}

void broker_destroy(void)
{
    broker_cmd *c = B.head;
    while (c) {
        broker_cmd *n = c->next;
        if (c->m)
            msg_unref(c->m);
        free(c);
        c = n;
    }
    B.head = B.tail = NULL;
    B.closing = true;  /* pending publishes are released, not delivered */
    B.enabled = false; /* the disconnect callbacks must not reconnect */
    for (int i = 0; i < 2; i++)
        if (B.io[i].ac) {
            redisAsyncContext *ac = B.io[i].ac;
            B.io[i].ac = NULL;
            redisAsyncFree(ac);
        }
}

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "broker_url.h"
#include "chan.h"
#include "log.h"
#include "redis_slot.h"
#include "resp.h"
#include "delivery.h"

#define BROKER_BACKOFF_MIN_MS 100
#define BROKER_BACKOFF_MAX_MS 5000
#define BROKER_PING_EVERY_MS 1000
#define BROKER_PING_TIMEOUT_MS 3000
/* Discovery and connects that take longer than this are a failure (a
 * blackholed address answers nothing at all). */
#define BROKER_CONNECT_TIMEOUT_MS 3000
/* A Redis Cluster's slot map is read again this often while up, so a
 * topology change nobody told us about (a failover with no traffic) is seen. */
#define BROKER_REFRESH_EVERY_MS 5000
#define BROKER_NODES_MAX 16
#define BROKER_CHANNEL_MAX (40 + MSG_GROUP_MAX)
#define BROKER_KEY_MAX (24 + MSG_GROUP_MAX)
/* A publish follows at most this many redirections or busy answers (a slot
 * moving: TRYAGAIN) before it counts as failed; busy ones wait 50 ms each. */
#define BROKER_HOPS_MAX 40
#define BROKER_RETRY_MS 50
/* The slot map is read at most this often, whatever asks for it. */
#define BROKER_REFRESH_MIN_MS 250


/* INCR, XADD and PUBLISH in one atomic command: the offset, the group's
 * history in Redis and the channel order agree on every node. The payload is
 * "<offset>:<t|b><bytes>"; the stream entry's id is "<offset>-0" and is
 * trimmed to --history entries (ARGV[2]) and expires after --history-ttl of
 * silence (ARGV[3], ms; 0: never). ARGV[4] is PUBLISH, or SPUBLISH on a Redis
 * Cluster, where both keys and the channel (ARGV[5]) share the group's {hash
 * tag}. The channel is no key: declared as one, it would be a missing key,
 * which a slot being migrated refuses (TRYAGAIN) for as long as it moves. */
static const char broker_script[] =
    "local o = redis.call('INCR', KEYS[1]) "
    "local n = tonumber(ARGV[2]) "
    "if n > 0 then "
    "  redis.call('XADD', KEYS[2], 'MAXLEN', n, o .. '-0', 'd', ARGV[1]) "
    "  local t = tonumber(ARGV[3]) "
    "  if t > 0 then redis.call('PEXPIRE', KEYS[2], t) end "
    "end "
    "redis.call(ARGV[4], ARGV[5], o .. ':' .. ARGV[1]) "
    "return o";

/* A node that starts following a group (its SUBSCRIBE confirmed) reads
 * Redis's view of it: GET the last offset, then XRANGE the kept messages,
 * pipelined on one connection. Not atomic, and need not be: anything
 * published after the SUBSCRIBE also arrives live, and entries above the
 * offset read first are left to that live copy. */
typedef struct broker_filling {
    uint64_t last, started_ns;
    bool ok;
    bool orphan; /* the XRANGE could not be queued: the GET's callback frees */
    char group[];
} broker_filling;

/* A group whose live stream has a hole (its slot moved to another node, or
 * an offset skipped): its live messages wait here while the missing range
 * is read from the group's stream, then everything goes out in offset
 * order, each once. */
typedef struct broker_held {
    msg *m;
    uint64_t off;
} broker_held;

typedef struct broker_resync {
    struct broker_resync *next;
    broker_held *held;
    size_t n, cap;
    uint64_t started_ns;
    uint8_t len;
    char group[MSG_GROUP_MAX + 1];
} broker_resync;

typedef enum broker_op { BROKER_PUBLISH, BROKER_SUB, BROKER_UNSUB } broker_op;

typedef struct broker_pub broker_pub;

typedef struct broker_cmd {
    struct broker_cmd *next;
    broker_op op;
    msg *m;
    uint8_t len;
    char group[MSG_GROUP_MAX + 1];
} broker_cmd;

/* One Redis server we talk to: commands on one connection, Pub/Sub on the
 * other. A single Redis or a Sentinel-managed master is node 0; a Redis
 * Cluster has one per master, found in its slot map. */
typedef struct broker_node {
    resp_conn cmd, sub;
    bool used;
    bool stale; /* no longer in the slot map: closed once nothing is pending */
    int pings;  /* PINGs without an answer yet */
} broker_node;

/* Phases: DOWN (waiting to retry) -> DISCOVER (asking a Sentinel for the
 * master, or a cluster node for the slot map) -> CONNECT (every node's two
 * connections, then the epoch) -> UP. Any failure returns to DOWN. */
typedef enum broker_phase { PH_DOWN, PH_DISCOVER, PH_CONNECT, PH_UP } broker_phase;

static struct {
    bool enabled;
    broker_url url;
    delivery *d; /* worker 0's: its loop runs us, its inbox, metrics and config */
    pthread_mutex_t lock;
    broker_cmd *head, *tail;
    broker_phase phase;
    uint64_t phase_ms;
    int ready; /* node connections connected in this CONNECT */
    broker_node node[BROKER_NODES_MAX];
    uint8_t slot_node[REDIS_SLOTS];
    int all_node;   /* where the broadcast-to-all subscription lives */
    int epoch_node;
    resp_conn seed;     /* a Sentinel or cluster node asked in DISCOVER */
    int seed_next, seed_tried;
    resp_conn sentinel; /* Sentinel mode: subscribed to +switch-master */
    int sentinel_next;
    uint64_t sentinel_retry_ms;
    bool refreshing;
    uint64_t refresh_due_ms;
    broker_resync *resyncs;
    broker_pub *parked; /* publishes waiting to be sent again (TRYAGAIN...) */
    uint64_t refresh_sent_ms;
    int all_prev;       /* the broadcast subscription's former node, until the new one confirms */
    uint64_t sentinel_ping_ms;
    atomic_bool up;
    bool closing; /* shutting down: failed publishes are just released */
    uint64_t retry_at_ms, backoff_ms;
    uint64_t ping_sent_ms; /* 0: no PING outstanding */
    uint64_t ping_due_ms;
    /* Pub/Sub ignores the database number, so the channels carry it:
     * clusters on two databases of one Redis stay apart. */
    char group_prefix[32]; /* "herald:<db>:g:" */
    size_t group_prefix_len;
    char all_channel[32]; /* "herald:<db>:all" ("herald:{*}:all" on a cluster) */
    /* observability, read by any thread: worker 0 rewrites the link table
     * under info_lock whenever a connection changes */
    pthread_mutex_t info_lock;
    int nlinks;
    broker_link links[BROKER_LINKS_MAX];
    bool links_dirty;
    atomic_ullong failovers, redirections, refreshes, fetches, fetch_failures, fetch_ns;
    atomic_ullong fetch_bucket[BROKER_FETCH_BUCKETS];
} B;

static bool broker_cluster(void) { return B.url.kind == BROKER_CLUSTER; }

static void broker_retry_parked(uint64_t now_ms);

bool broker_enabled(void) { return B.enabled; }

bool broker_up(void) { return atomic_load_explicit(&B.up, memory_order_acquire); }

/* Every descriptor the broker registers is a resp_conn inside B. */
static uint64_t broker_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void broker_node_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why);
static void broker_seed_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why);
static void broker_sentinel_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why);

bool broker_init(const char *url)
{
    memset(&B, 0, sizeof B);
    pthread_mutex_init(&B.lock, NULL);
    pthread_mutex_init(&B.info_lock, NULL);
    for (int i = 0; i < BROKER_NODES_MAX; i++) {
        resp_init(&B.node[i].cmd, &B.node[i], broker_node_event);
        resp_init(&B.node[i].sub, &B.node[i], broker_node_event);
    }
    resp_init(&B.seed, NULL, broker_seed_event);
    resp_init(&B.sentinel, NULL, broker_sentinel_event);
    if (!url)
        return true;
    char err[160];
    if (!broker_url_parse(url, &B.url, err, sizeof err)) {
        log_msg(LOG_ERROR, "--broker '%s': %s", url, err);
        return false;
    }
    B.enabled = true;
    B.all_prev = -1;
    B.backoff_ms = BROKER_BACKOFF_MIN_MS;
    if (broker_cluster()) {
        /* One hash slot for the broadcast-to-all channel and its keys. */
        B.group_prefix_len = (size_t)snprintf(B.group_prefix, sizeof B.group_prefix, "herald:0:g:");
        snprintf(B.all_channel, sizeof B.all_channel, "herald:{*}:all");
    } else {
        B.group_prefix_len =
            (size_t)snprintf(B.group_prefix, sizeof B.group_prefix, "herald:%d:g:", B.url.db);
        snprintf(B.all_channel, sizeof B.all_channel, "herald:%d:all", B.url.db);
    }
    return true;
}

/* ---- names: channels and keys ---------------------------------------------- */

/* On a Redis Cluster a group's channel and keys wrap its name in {}, so they
 * hash to one slot (group names never contain braces). */
static int broker_channel(char out[BROKER_CHANNEL_MAX], const char *group, size_t len)
{
    if (len == 0)
        return snprintf(out, BROKER_CHANNEL_MAX, "%s", B.all_channel);
    if (broker_cluster())
        return snprintf(out, BROKER_CHANNEL_MAX, "%s{%.*s}", B.group_prefix, (int)len, group);
    return snprintf(out, BROKER_CHANNEL_MAX, "%s%.*s", B.group_prefix, (int)len, group);
}

static int broker_key(char out[BROKER_KEY_MAX], const char *prefix, const char *group, size_t len)
{
    if (len == 0)
        group = "*", len = 1;
    if (broker_cluster())
        return snprintf(out, BROKER_KEY_MAX, "%s{%.*s}", prefix, (int)len, group);
    return snprintf(out, BROKER_KEY_MAX, "%s%.*s", prefix, (int)len, group);
}

/* The group a channel carries (NULL: not one of ours); *all for the
 * broadcast channel. */
static const char *broker_channel_group(const char *ch, size_t chlen, size_t *glen, bool *all)
{
    *all = false;
    if (chlen == strlen(B.all_channel) && memcmp(ch, B.all_channel, chlen) == 0) {
        *all = true;
        *glen = 0;
        return "";
    }
    if (chlen <= B.group_prefix_len || memcmp(ch, B.group_prefix, B.group_prefix_len) != 0)
        return NULL;
    const char *g = ch + B.group_prefix_len;
    size_t n = chlen - B.group_prefix_len;
    if (broker_cluster()) {
        if (n < 3 || g[0] != '{' || g[n - 1] != '}')
            return NULL;
        g++;
        n -= 2;
    }
    if (n > MSG_GROUP_MAX)
        return NULL;
    *glen = n;
    return g;
}

/* Which node serves a group (or the broadcast channel, len 0). */
static int broker_node_of(const char *group, size_t len)
{
    if (!broker_cluster())
        return 0;
    char key[BROKER_KEY_MAX];
    int kl = broker_key(key, "herald:off:", group, len);
    return B.slot_node[redis_key_slot(key, (size_t)kl)];
}

/* ---- observability ------------------------------------------------------------ */

void broker_snapshot(broker_info *out)
{
    memset(out, 0, sizeof *out);
    out->mode = !B.enabled ? "none"
                : B.url.kind == BROKER_SENTINEL ? "sentinel"
                : B.url.kind == BROKER_CLUSTER  ? "cluster"
                                                : "redis";
    out->up = B.enabled && broker_up();
    out->failovers = atomic_load(&B.failovers);
    out->redirections = atomic_load(&B.redirections);
    out->topology_refreshes = atomic_load(&B.refreshes);
    out->fetch_failures = atomic_load(&B.fetch_failures);
    for (int i = 0; i < BROKER_FETCH_BUCKETS; i++)
        out->fetch_bucket[i] = atomic_load(&B.fetch_bucket[i]);
    /* counted after the buckets (broker_fetch_done): never below them */
    out->fetches = atomic_load(&B.fetches);
    out->fetch_ns_sum = atomic_load(&B.fetch_ns);
    for (int i = 0; i < BROKER_FETCH_BUCKETS; i++)
        if (out->fetch_bucket[i] > out->fetches)
            out->fetches = out->fetch_bucket[i];
    pthread_mutex_lock(&B.info_lock);
    out->nlinks = B.nlinks;
    memcpy(out->links, B.links, sizeof B.links);
    pthread_mutex_unlock(&B.info_lock);
}

static void broker_link_add(const resp_conn *rc, const char *role, const char *kind, bool up)
{
    if (B.nlinks == BROKER_LINKS_MAX)
        return;
    broker_link *l = &B.links[B.nlinks++];
    snprintf(l->addr, sizeof l->addr, "%.255s:%d", rc->host, rc->port);
    snprintf(l->role, sizeof l->role, "%s", role);
    snprintf(l->kind, sizeof l->kind, "%s", kind);
    l->up = up;
}

/* Worker 0, after any change to a connection or the phase. */
static void broker_links_update(void)
{
    pthread_mutex_lock(&B.info_lock);
    B.nlinks = 0;
    for (int i = 0; i < BROKER_NODES_MAX; i++) {
        const broker_node *n = &B.node[i];
        if (!n->used)
            continue;
        const char *role = n->stale ? "former" : "master";
        broker_link_add(&n->cmd, role, "commands", resp_is_up(&n->cmd) && B.phase == PH_UP);
        broker_link_add(&n->sub, role, "pubsub", resp_is_up(&n->sub) && B.phase == PH_UP);
    }
    if (B.url.kind == BROKER_SENTINEL && B.sentinel.host[0])
        broker_link_add(&B.sentinel, "sentinel", "pubsub", resp_is_up(&B.sentinel));
    pthread_mutex_unlock(&B.info_lock);
}

static void broker_fetch_done(uint64_t started_ns, bool ok)
{
    if (!ok) {
        atomic_fetch_add(&B.fetch_failures, 1);
        return;
    }
    uint64_t ns = broker_now_ns() - started_ns;
    for (int i = 0; i < BROKER_FETCH_BUCKETS; i++)
        if ((double)ns / 1e9 <= broker_fetch_le[i])
            atomic_fetch_add(&B.fetch_bucket[i], 1);
    atomic_fetch_add(&B.fetch_ns, ns);
    atomic_fetch_add(&B.fetches, 1);
}

/* ---- state changes ------------------------------------------------------------ */

/* While Redis is unreachable this node sequences alone: its offsets belong
 * to no one else, so they get an epoch of their own. */
static void broker_local_epoch(void)
{
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)getpid() ^ B.d->loop->now_ms;
    char e[40];
    snprintf(e, sizeof e, "local-%016llx", (unsigned long long)rnd);
    chan_set_epoch(e);
}

static void broker_unconfirm(chan *c, void *arg)
{
    (void)arg;
    chan_set_confirmed(c, false);
}

static void broker_set_phase(broker_phase ph)
{
    B.phase = ph;
    B.phase_ms = B.d ? B.d->loop->now_ms : 0;
    B.links_dirty = true;
}

static void broker_close_all(void)
{
    for (int i = 0; i < BROKER_NODES_MAX; i++) {
        resp_close(&B.node[i].cmd);
        resp_close(&B.node[i].sub);
        B.node[i].pings = 0;
    }
    resp_close(&B.seed);
}

/* Any connection failing takes the broker down as a whole, then it
 * reconnects from discovery: simpler to reason about than half a cluster.
 * Idempotent: closing the connections calls back into here. */
static void broker_went_down(const char *why)
{
    if (B.phase == PH_DOWN)
        return;
    bool was_up = atomic_exchange(&B.up, false);
    broker_set_phase(PH_DOWN);
    B.refreshing = false;
    B.ping_sent_ms = 0;
    METRIC_INC(B.d->m, broker_errors);
    /* Messages published elsewhere from now on will not reach us: what our
     * history says from here is another story, under a new epoch -- set
     * before the connections close, as their pending publishes and held
     * messages are delivered locally from the callbacks. */
    if (was_up)
        broker_local_epoch();
    broker_close_all();
    broker_retry_parked(0);
    chan_foreach(broker_unconfirm, NULL);
    if (was_up) {
        log_msg(LOG_WARN, "broker %s:%d down (%s): local delivery only, retrying",
                B.node[0].cmd.host, B.node[0].cmd.port, why);
    } else {
        log_msg(LOG_DEBUG, "broker: %s", why);
    }
    B.retry_at_ms = B.d->loop->now_ms + B.backoff_ms;
    B.backoff_ms = B.backoff_ms * 2 > BROKER_BACKOFF_MAX_MS ? BROKER_BACKOFF_MAX_MS : B.backoff_ms * 2;
}

static void broker_on_fill(resp_conn *rc, redisReply *r, void *priv);
static void broker_on_fill_last(resp_conn *rc, redisReply *r, void *priv);
static void broker_fill(const char *g, size_t len);

static void broker_subscribe_group(int op_sub, const char *name, size_t len)
{
    char ch[BROKER_CHANNEL_MAX];
    int n = broker_channel(ch, name, len);
    broker_node *node = &B.node[broker_node_of(name, len)];
    const char *verb = broker_cluster() ? (op_sub ? "SSUBSCRIBE" : "SUNSUBSCRIBE")
                                        : (op_sub ? "SUBSCRIBE" : "UNSUBSCRIBE");
    const char *argv[2] = {verb, ch};
    size_t lens[2] = {strlen(verb), (size_t)n};
    resp_command(&node->sub, NULL, NULL, 2, argv, lens);
}

static void broker_resubscribe(chan *c, void *arg)
{
    (void)arg;
    size_t len;
    const char *name = chan_name(c, &len);
    if (len && chan_subscribers(c) > 0)
        broker_subscribe_group(1, name, len);
}

/* The cluster's epoch lives in Redis next to the offset counters: if Redis
 * loses them (a restart without persistence), it loses the epoch too, the
 * first node back sets a new one, and every node adopts it. Offsets from
 * before and after can never be confused. Only then does the broker open:
 * every message we deliver from here carries the shared epoch. */
static void broker_on_epoch(resp_conn *rc, redisReply *reply, void *priv)
{
    (void)rc;
    (void)priv;
    if (B.phase != PH_CONNECT)
        return;
    if (!reply || reply->type != REDIS_REPLY_STRING || reply->len == 0 || reply->len > CHAN_EPOCH_MAX) {
        broker_went_down("no epoch from Redis");
        return;
    }
    char e[CHAN_EPOCH_MAX + 1];
    snprintf(e, sizeof e, "%.*s", (int)reply->len, reply->str);
    chan_reset_all(); /* offsets come from Redis again; what we kept is another lineage */
    chan_set_epoch(e);
    resp_commandf(&B.node[B.all_node].sub, NULL, NULL, "SUBSCRIBE %s", B.all_channel);
    B.all_prev = -1;
    B.ping_sent_ms = 0;
    B.ping_due_ms = B.d->loop->now_ms + BROKER_PING_EVERY_MS;
    B.refresh_due_ms = B.d->loop->now_ms + BROKER_REFRESH_EVERY_MS;
    chan_foreach(broker_resubscribe, NULL);
    B.backoff_ms = BROKER_BACKOFF_MIN_MS;
    broker_set_phase(PH_UP);
    atomic_store(&B.up, true);
    METRIC_INC(B.d->m, broker_reconnects);
    log_msg(LOG_INFO, "broker %s:%d connected (epoch %s%s)", B.node[0].cmd.host, B.node[0].cmd.port, e,
            broker_cluster() ? ", Redis Cluster" : B.url.kind == BROKER_SENTINEL ? ", via Sentinel" : "");
    delivery_release_held_all(B.d->hub);
}

/* Sentinel mode: a master that Sentinel still names while a failover is
 * under way may already be a replica; we only ever write to a master. */
static void broker_on_role(resp_conn *rc, redisReply *r, void *priv)
{
    (void)rc;
    (void)priv;
    if (B.phase != PH_CONNECT || !r)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "master") != 0)
        broker_went_down("the address Sentinel gave is not a master (yet)");
}

static void broker_start_epoch(void)
{
    char e[17];
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)getpid() ^ B.d->loop->now_ms;
    snprintf(e, sizeof e, "%016llx", (unsigned long long)rnd);
    B.epoch_node = broker_cluster() ? B.slot_node[redis_key_slot("herald:epoch", 12)] : 0;
    resp_conn *c = &B.node[B.epoch_node].cmd;
    resp_commandf(c, NULL, NULL, "SET herald:epoch %s NX", e);
    resp_commandf(c, broker_on_epoch, NULL, "GET herald:epoch");
}

static void broker_node_open(int i, const char *host, int port)
{
    broker_node *n = &B.node[i];
    n->used = true;
    n->stale = false;
    n->pings = 0;
    bool ok = resp_open(&n->cmd, B.d->loop, host, port, false) &&
              resp_open(&n->sub, B.d->loop, host, port, true);
    if (!ok) {
        char why[320];
        snprintf(why, sizeof why, "cannot connect to %s:%d", host, port);
        broker_went_down(why);
        return;
    }
    if (B.url.db)
        resp_commandf(&n->cmd, NULL, NULL, "SELECT %d", B.url.db);
    if (B.url.kind == BROKER_SENTINEL)
        resp_commandf(&n->cmd, broker_on_role, NULL, "ROLE");
}

/* CONNECT: node addresses are known (URL, Sentinel or slot map). */
static void broker_connect_nodes(void)
{
    broker_set_phase(PH_CONNECT);
    B.ready = 0;
    for (int i = 0; i < BROKER_NODES_MAX && B.phase == PH_CONNECT; i++)
        if (B.node[i].used) {
            char host[sizeof B.node[i].cmd.host]; /* resp_open writes the one it is given */
            snprintf(host, sizeof host, "%s", B.node[i].cmd.host);
            broker_node_open(i, host, B.node[i].cmd.port);
        }
}

static int broker_nodes_used(void)
{
    int n = 0;
    for (int i = 0; i < BROKER_NODES_MAX; i++)
        n += B.node[i].used;
    return n;
}

static void broker_node_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why);

/* ---- discovery: Sentinel and the cluster's slot map --------------------------------- */

static const broker_addr *broker_seed_addr(int i) { return &B.url.addr[i % B.url.naddr]; }

static void broker_seed_reply_master(resp_conn *rc, redisReply *r, void *priv);
static void broker_seed_reply_slots(resp_conn *rc, redisReply *r, void *priv);

/* Asks the next Sentinel (or seed node) in turn; after a full round without
 * an answer the broker is down and retries after its backoff. */
static void broker_discover_next(const char *why)
{
    if (B.seed_tried >= B.url.naddr) {
        broker_went_down(why);
        return;
    }
    const broker_addr *a = broker_seed_addr(B.seed_next++);
    B.seed_tried++;
    bool ok = resp_open(&B.seed, B.d->loop, a->host, a->port, false);
    if (!ok) {
        broker_discover_next("cannot reach any seed");
        return;
    }
    if (B.url.kind == BROKER_SENTINEL)
        resp_commandf(&B.seed, broker_seed_reply_master, NULL, "SENTINEL get-master-addr-by-name %s",
                      B.url.master);
    else
        resp_commandf(&B.seed, broker_seed_reply_slots, NULL, "CLUSTER SLOTS");
}

static void broker_seed_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why)
{
    (void)rc;
    (void)r;
    if (ev == RESP_DOWN && B.phase == PH_DISCOVER)
        broker_discover_next(why ? why : "seed connection lost");
}

static void broker_seed_reply_master(resp_conn *rc, redisReply *r, void *priv)
{
    (void)priv;
    if (B.phase != PH_DISCOVER || !r)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        resp_close(rc);
        broker_discover_next("Sentinel does not know the master");
        return;
    }
    long port = strtol(r->element[1]->str, NULL, 10);
    if (port < 1 || port > 65535 || r->element[0]->len >= sizeof B.node[0].cmd.host) {
        resp_close(rc);
        broker_discover_next("Sentinel gave a bad address");
        return;
    }
    char host[256];
    memcpy(host, r->element[0]->str, r->element[0]->len);
    host[r->element[0]->len] = '\0';
    resp_close(rc);
    B.links_dirty = true;
    for (int i = 1; i < BROKER_NODES_MAX; i++)
        B.node[i].used = false;
    B.node[0].used = true;
    snprintf(B.node[0].cmd.host, sizeof B.node[0].cmd.host, "%s", host);
    B.node[0].cmd.port = (int)port;
    broker_connect_nodes();
}

/* CLUSTER SLOTS: [[start, end, [ip, port, id...], replicas...], ...]. The
 * map must cover every slot; a master with an empty ip is the one asked. */
static bool broker_parse_slots(const redisReply *r, const char *asked, int asked_port,
                               broker_addr *addrs, int *naddrs, uint8_t *map)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        return false;
    static uint8_t seen[REDIS_SLOTS];
    memset(seen, 0, sizeof seen);
    *naddrs = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2 || e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            return false;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (lo < 0 || hi >= REDIS_SLOTS || lo > hi)
            return false;
        const redisReply *ip = e->element[2]->element[0];
        long long port = e->element[2]->element[1]->integer;
        const char *host = ip->len ? ip->str : asked;
        if (port < 1 || port > 65535 || strlen(host) >= sizeof addrs[0].host)
            return false;
        if (!ip->len)
            port = asked_port;
        int k = 0;
        while (k < *naddrs && !(addrs[k].port == port && strcmp(addrs[k].host, host) == 0))
            k++;
        if (k == *naddrs) {
            if (k == BROKER_NODES_MAX)
                return false;
            snprintf(addrs[k].host, sizeof addrs[k].host, "%s", host);
            addrs[k].port = (int)port;
            (*naddrs)++;
        }
        for (long long s = lo; s <= hi; s++) {
            map[s] = (uint8_t)k;
            seen[s] = 1;
        }
    }
    for (int s = 0; s < REDIS_SLOTS; s++)
        if (!seen[s])
            return false;
    return true;
}

static void broker_seed_reply_slots(resp_conn *rc, redisReply *r, void *priv)
{
    (void)priv;
    if (B.phase != PH_DISCOVER || !r)
        return;
    broker_addr addrs[BROKER_NODES_MAX];
    int n = 0;
    static uint8_t map[REDIS_SLOTS];
    if (!broker_parse_slots(r, rc->host, rc->port, addrs, &n, map)) {
        resp_close(rc);
        broker_discover_next(r->type == REDIS_REPLY_ERROR ? "not a cluster node" : "slots not all covered");
        return;
    }
    resp_close(rc);
    B.links_dirty = true;
    for (int i = 0; i < BROKER_NODES_MAX; i++) {
        B.node[i].used = i < n;
        B.node[i].stale = false;
        if (i < n) {
            _Static_assert(sizeof B.node[i].cmd.host == sizeof addrs[i].host, "host sizes");
            memcpy(B.node[i].cmd.host, addrs[i].host, sizeof addrs[i].host);
            B.node[i].cmd.port = addrs[i].port;
        }
    }
    memcpy(B.slot_node, map, sizeof map);
    B.all_node = B.slot_node[redis_key_slot(B.all_channel, strlen(B.all_channel))];
    broker_connect_nodes();
}

static void broker_start(void)
{
    B.seed_tried = 0;
    if (B.url.kind == BROKER_REDIS) {
        B.links_dirty = true;
        B.node[0].used = true;
        snprintf(B.node[0].cmd.host, sizeof B.node[0].cmd.host, "%s", B.url.addr[0].host);
        B.node[0].cmd.port = B.url.addr[0].port;
        B.all_node = 0;
        broker_connect_nodes();
        return;
    }
    broker_set_phase(PH_DISCOVER);
    broker_discover_next("no seed reachable");
}

/* ---- Sentinel: following a failover ------------------------------------------------------- */

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>": reconnect
 * now instead of waiting for the old master's connection to fail. */
static void broker_sentinel_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why)
{
    (void)why;
    if (ev != RESP_PUSH)
        B.links_dirty = true;
    if (ev == RESP_UP) {
        resp_commandf(rc, NULL, NULL, "SUBSCRIBE +switch-master");
        return;
    }
    if (ev == RESP_DOWN) {
        B.sentinel_retry_ms = B.d->loop->now_ms + 1000;
        B.sentinel_ping_ms = 0;
        return;
    }
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[0]->str, "pong") == 0) {
        B.sentinel_ping_ms = 0;
        B.sentinel_retry_ms = B.d->loop->now_ms + BROKER_PING_EVERY_MS; /* the next PING */
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0 || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    size_t ml = strlen(B.url.master);
    const char *s = r->element[2]->str;
    if (strncmp(s, B.url.master, ml) != 0 || s[ml] != ' ')
        return;
    atomic_fetch_add(&B.failovers, 1);
    log_msg(LOG_WARN, "broker: Sentinel reports a failover of '%s' (%s)", B.url.master, s + ml + 1);
    B.backoff_ms = BROKER_BACKOFF_MIN_MS;
    if (B.phase != PH_DOWN)
        broker_went_down("master switched by Sentinel");
    B.retry_at_ms = B.d->loop->now_ms; /* at once: the new master is known */
}

static void broker_sentinel_watch(uint64_t now_ms)
{
    if (B.url.kind != BROKER_SENTINEL)
        return;
    if (resp_is_up(&B.sentinel)) {
        /* A half-open connection would miss +switch-master: a PING (answered
         * as ["pong", ""] while subscribed) each second, within 3 s. */
        if (B.sentinel_ping_ms && now_ms - B.sentinel_ping_ms > BROKER_PING_TIMEOUT_MS) {
            resp_close(&B.sentinel);
            B.links_dirty = true;
            B.sentinel_ping_ms = 0;
            B.sentinel_retry_ms = now_ms;
        } else if (!B.sentinel_ping_ms && now_ms >= B.sentinel_retry_ms) {
            B.sentinel_ping_ms = now_ms;
            resp_commandf(&B.sentinel, NULL, NULL, "PING");
        }
        return;
    }
    if (resp_is_open(&B.sentinel) || now_ms < B.sentinel_retry_ms)
        return;
    const broker_addr *a = broker_seed_addr(B.sentinel_next++);
    bool ok = resp_open(&B.sentinel, B.d->loop, a->host, a->port, true);
    if (!ok)
        B.sentinel_retry_ms = now_ms + 1000;
}

/* ---- Redis Cluster: redirections and the slot map while up ---------------------------------- */

static int broker_find_node(const char *host, int port)
{
    for (int i = 0; i < BROKER_NODES_MAX; i++)
        if (B.node[i].used && B.node[i].cmd.port == port && strcmp(B.node[i].cmd.host, host) == 0)
            return i;
    return -1;
}

/* A master we did not know (a promoted replica, a redirection's target):
 * connected while up; commands queue on it until the connect completes. */
static int broker_node_add(const char *host, int port)
{
    int i = 0;
    while (i < BROKER_NODES_MAX && B.node[i].used)
        i++;
    if (i == BROKER_NODES_MAX) {
        broker_went_down("too many cluster nodes");
        return -1;
    }
    broker_node *n = &B.node[i];
    n->used = true;
    n->stale = false;
    n->pings = 0;
    B.links_dirty = true;
    if (!resp_open(&n->cmd, B.d->loop, host, port, false) || !resp_open(&n->sub, B.d->loop, host, port, true)) {
        broker_went_down("cannot connect to a new cluster master");
        return -1;
    }
    return i;
}

typedef struct broker_moved {
    const uint8_t *old;
} broker_moved;

/* A group whose slot changed node follows it: subscribe on the new owner,
 * unsubscribe on the old one (which may have done so itself already). */
static void broker_move_group(chan *c, void *arg)
{
    const broker_moved *mv = arg;
    size_t len;
    const char *name = chan_name(c, &len);
    if (!len || chan_subscribers(c) == 0)
        return;
    char key[BROKER_KEY_MAX];
    unsigned slot = redis_key_slot(key, (size_t)broker_key(key, "herald:off:", name, len));
    int from = mv->old[slot], to = B.slot_node[slot];
    if (from == to && chan_confirmed(c))
        return;
    if (from != to && resp_is_up(&B.node[from].sub)) {
        char ch[BROKER_CHANNEL_MAX];
        int n = broker_channel(ch, name, len);
        const char *argv[2] = {"SUNSUBSCRIBE", ch};
        size_t lens[2] = {12, (size_t)n};
        resp_command(&B.node[from].sub, NULL, NULL, 2, argv, lens);
    }
    chan_set_confirmed(c, false);
    broker_subscribe_group(1, name, len);
}

static void broker_on_refresh(resp_conn *rc, redisReply *r, void *priv)
{
    (void)priv;
    B.refreshing = false;
    if (B.phase != PH_UP || !r)
        return;
    atomic_fetch_add(&B.refreshes, 1);
    broker_addr addrs[BROKER_NODES_MAX];
    int n = 0;
    static uint8_t map[REDIS_SLOTS], old[REDIS_SLOTS];
    if (!broker_parse_slots(r, rc->host, rc->port, addrs, &n, map))
        return; /* a cluster mid-change; the next refresh sees it settled */
    int idx[BROKER_NODES_MAX];
    bool changed = false;
    B.links_dirty = true;
    for (int k = 0; k < n; k++) {
        idx[k] = broker_find_node(addrs[k].host, addrs[k].port);
        if (idx[k] < 0) {
            idx[k] = broker_node_add(addrs[k].host, addrs[k].port);
            if (idx[k] < 0)
                return;
            changed = true;
        }
        B.node[idx[k]].stale = false;
    }
    for (int i = 0; i < BROKER_NODES_MAX; i++) {
        bool in = false;
        for (int k = 0; k < n; k++)
            in |= idx[k] == i;
        if (B.node[i].used && !in && !B.node[i].stale) {
            B.node[i].stale = true;
            changed = true;
        }
    }
    memcpy(old, B.slot_node, sizeof old);
    for (int s = 0; s < REDIS_SLOTS; s++) {
        B.slot_node[s] = (uint8_t)idx[map[s]];
        changed |= B.slot_node[s] != old[s];
    }
    if (changed) {
        atomic_fetch_add(&B.failovers, 1);
        log_msg(LOG_WARN, "broker: Redis Cluster topology changed (%d masters)", n);
    }
    /* The broadcast subscription follows its slot too: any master would do
     * (a cluster forwards classic Pub/Sub everywhere), but a former one is
     * closed soon. Copies during the switch are dropped by offset. */
    int all = B.slot_node[redis_key_slot(B.all_channel, strlen(B.all_channel))];
    if (all != B.all_node) { /* the old one is left when the new one confirms */
        resp_commandf(&B.node[all].sub, NULL, NULL, "SUBSCRIBE %s", B.all_channel);
        if (B.all_prev < 0)
            B.all_prev = B.all_node;
        B.all_node = all;
    }
    broker_moved mv = {old};
    chan_foreach(broker_move_group, &mv);
}

static void broker_refresh(uint64_t now_ms)
{
    if (!broker_cluster() || B.phase != PH_UP || B.refreshing || now_ms < B.refresh_due_ms ||
        now_ms < B.refresh_sent_ms + BROKER_REFRESH_MIN_MS)
        return;
    B.refresh_due_ms = now_ms + BROKER_REFRESH_EVERY_MS;
    B.refresh_sent_ms = now_ms;
    for (int i = 0; i < BROKER_NODES_MAX; i++)
        if (B.node[i].used && !B.node[i].stale && resp_is_up(&B.node[i].cmd)) {
            B.refreshing = resp_commandf(&B.node[i].cmd, broker_on_refresh, NULL, "CLUSTER SLOTS");
            return;
        }
    /* Stale nodes with nothing pending are closed here, quietly. */
}

static void broker_close_stale(void)
{
    for (int i = 0; i < BROKER_NODES_MAX; i++) {
        broker_node *n = &B.node[i];
        if (!n->used || !n->stale || n->cmd.q_len || i == B.all_prev)
            continue;
        B.links_dirty = true;
        resp_close(&n->cmd);
        resp_close(&n->sub);
        n->used = n->stale = false;
    }
}

/* ---- incoming messages ----------------------------------------------------------- */

static msg *broker_fill_entry(const redisReply *e, const char *g, size_t glen);

/* Fetches from a group's stream read at most --history entries: what this
 * node would keep anyway. */
static int broker_fetch_count(char out[24])
{
    int n = (*B.d->cfg)->history; /* worker 0's snapshot: we run in its loop */
    return snprintf(out, 24, "%d", n > 0 ? n : 1);
}

static broker_resync *broker_resync_find(const char *g, size_t len)
{
    for (broker_resync *r = B.resyncs; r; r = r->next)
        if (r->len == len && memcmp(r->group, g, len) == 0)
            return r;
    return NULL;
}

static bool broker_resync_hold(broker_resync *r, msg *m, uint64_t off)
{
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 16;
        broker_held *n = realloc(r->held, ncap * sizeof *n);
        if (!n)
            return false;
        r->held = n;
        r->cap = ncap;
    }
    r->held[r->n++] = (broker_held){m, off};
    return true;
}

/* The hole is closed (or cannot be): fetched entries, then what was held,
 * each once and in offset order. If they do not join up (the stream was
 * trimmed or expired, no history is kept, the fetch failed), the broker goes
 * down first, so everything goes out under a new local epoch and no client
 * believes it saw every message. */
static void broker_resync_finish(broker_resync *r, const redisReply *list)
{
    for (broker_resync **pp = &B.resyncs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    chan *c = chan_lock(r->group, r->len);
    uint64_t last = c ? chan_last_offset(c) : 0;
    if (c)
        chan_unlock(c);
    size_t cap = (list ? list->elements : 0) + r->n, n = 0;
    broker_held *out = cap ? malloc(cap * sizeof *out) : NULL;
    bool joined = list != NULL && (cap == 0 || out);
    uint64_t next = last + 1;
    for (size_t i = 0; out && list && i < list->elements; i++) {
        msg *m = broker_fill_entry(list->element[i], r->group, r->len);
        if (!m)
            continue;
        if (m->offset < next) {
            msg_unref(m);
            continue;
        }
        joined &= m->offset == next;
        next = m->offset + 1;
        out[n++] = (broker_held){m, m->offset};
    }
    for (size_t i = 0; i < r->n; i++) {
        broker_held *h = &r->held[i];
        if (h->off < next || !out) { /* a copy (both owners of a moving slot), or no memory */
            if (!out && !B.closing)
                delivery_deliver_local(B.d, h->m); /* the broker goes down below first */
            else
                msg_unref(h->m);
            continue;
        }
        joined &= h->off == next;
        next = h->off + 1;
        out[n++] = *h;
    }
    if (!joined && B.phase != PH_DOWN && !B.closing) {
        log_msg(LOG_WARN, "broker: a hole in '%s' after offset %llu could not be filled from Redis", r->group,
                (unsigned long long)last);
        broker_went_down("a hole in a group's stream could not be filled");
    }
    for (size_t i = 0; i < n; i++) {
        if (B.closing)
            msg_unref(out[i].m);
        else if (B.phase != PH_UP)
            delivery_deliver_local(B.d, out[i].m);
        else
            delivery_deliver_sequenced(B.d, out[i].m, out[i].off);
    }
    free(out);
    free(r->held);
    free(r);
    delivery_release_held_all(B.d->hub);
}

static void broker_on_resync(resp_conn *rc, redisReply *reply, void *priv)
{
    (void)rc;
    broker_resync *r = priv;
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY;
    broker_fetch_done(r->started_ns, ok);
    if (!ok && reply)
        log_msg(LOG_WARN, "broker: reading '%s' from Redis: %.*s", r->group,
                reply->type == REDIS_REPLY_ERROR ? (int)reply->len : 0, reply->str ? reply->str : "");
    broker_resync_finish(r, ok ? reply : NULL);
}

/* Reads the group's stream after `after` while its live messages wait; m
 * (may be NULL) is the live message that showed the hole. */
static void broker_resync_start(const char *g, size_t len, uint64_t after, msg *m, uint64_t off)
{
    broker_resync *r = calloc(1, sizeof *r);
    if (!r || (m && !broker_resync_hold(r, m, off))) { /* out of memory: not silently */
        free(r);
        broker_went_down("out of memory filling a hole");
        if (m)
            delivery_deliver_local(B.d, m);
        return;
    }
    memcpy(r->group, g, len);
    r->len = (uint8_t)len;
    r->started_ns = broker_now_ns();
    r->next = B.resyncs;
    B.resyncs = r;
    char hist[BROKER_KEY_MAX], from[24];
    int hl = broker_key(hist, "herald:h:", g, len);
    int fl = snprintf(from, sizeof from, "%llu-0", (unsigned long long)after + 1);
    char count[24];
    int cl = broker_fetch_count(count);
    const char *argv[6] = {"XRANGE", hist, from, "+", "COUNT", count};
    size_t lens[6] = {6, (size_t)hl, (size_t)fl, 1, 5, (size_t)cl};
    if (!resp_command(&B.node[broker_node_of(g, len)].cmd, broker_on_resync, r, 6, argv, lens))
        broker_resync_finish(r, NULL);
}

static void broker_deliver(const char *ch, size_t chlen, const char *p, size_t n)
{
    size_t glen;
    bool all;
    const char *group = broker_channel_group(ch, chlen, &glen, &all);
    if (!group)
        return;
    const char *colon = memchr(p, ':', n < 24 ? n : 24);
    if (!colon || colon + 1 >= p + n) {
        METRIC_INC(B.d->m, broker_errors);
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
    msg_finish(m, MSG_DATA, kind == 't' ? WS_OP_TEXT : WS_OP_BINARY, all ? NULL : group, glen);
    METRIC_INC(B.d->m, broker_received);
    /* Offsets come from one INCR per group: one already seen is a copy (a
     * slot moving between two masters), one too far means a hole. Broadcasts
     * keep no stream: only copies are dropped for them. */
    broker_resync *r = all ? NULL : broker_resync_find(group, glen);
    if (r) {
        if (!broker_resync_hold(r, m, off)) { /* out of memory: not silently */
            broker_went_down("out of memory holding a group's messages");
            delivery_deliver_local(B.d, m);
        }
        return;
    }
    chan *c = chan_lock(group, glen); /* "" for broadcasts: their record */
    uint64_t last = c ? chan_last_offset(c) : 0;
    bool ready = c && chan_ready(c);
    if (c)
        chan_unlock(c);
    if (last && off <= last) {
        msg_unref(m);
        return;
    }
    if (!all && last && ready && off > last + 1) {
        broker_resync_start(group, glen, last, m, off);
        return;
    }
    delivery_deliver_sequenced(B.d, m, off);
}

/* Replies on a Pub/Sub connection: messages, and the confirmations of our
 * (un)subscriptions. */
static void broker_on_push(broker_node *node, redisReply *reply)
{
    int from = (int)(node - B.node);
    if (reply->type == REDIS_REPLY_ERROR) { /* e.g. MOVED for an SSUBSCRIBE: read the map again */
        redis_redirect rd;
        if (redis_parse_redirect(reply->str, reply->len, &rd))
            atomic_fetch_add(&B.redirections, 1);
        else
            log_msg(LOG_WARN, "broker: %.*s", (int)reply->len, reply->str);
        B.refresh_due_ms = B.d->loop->now_ms;
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    redisReply *kind = reply->element[0], *ch = reply->element[1], *body = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING)
        return;
    const char *k = kind->str;
    if ((!strcmp(k, "message") || !strcmp(k, "smessage")) && body->type == REDIS_REPLY_STRING) {
        broker_deliver(ch->str, ch->len, body->str, body->len);
        return;
    }
    if (!strcmp(k, "ssubscribe") || !strcmp(k, "sunsubscribe"))
        k++; /* the sharded forms mean the same here */
    bool sub = !strcmp(k, "subscribe");
    if (!sub && strcmp(k, "unsubscribe") != 0)
        return;
    size_t glen;
    bool all;
    const char *g = broker_channel_group(ch->str, ch->len, &glen, &all);
    if (g && all && sub && from == B.all_node && B.all_prev >= 0) {
        if (B.all_prev != from && resp_is_up(&B.node[B.all_prev].sub))
            resp_commandf(&B.node[B.all_prev].sub, NULL, NULL, "UNSUBSCRIBE %s", B.all_channel);
        B.all_prev = -1;
        return;
    }
    if (!g || all || broker_node_of(g, glen) != from)
        return; /* an old owner's answer about a group that moved on */
    chan *c = chan_lock(g, glen);
    bool forced = false, resume = false;
    uint64_t last = 0;
    if (c) {
        chan_set_confirmed(c, sub);
        forced = !sub && chan_subscribers(c) > 0; /* the node dropped it: its slot moved */
        /* Subscribed again while local subscribers stayed (a slot moved):
         * they continue from what they last got, nothing skipped. */
        last = chan_last_offset(c);
        resume = sub && chan_subscribers(c) > 0 && chan_ready(c) && last > 0;
        chan_unlock(c);
    }
    if (forced && broker_cluster())
        B.refresh_due_ms = B.d->loop->now_ms;
    if (resume && !broker_resync_find(g, glen))
        broker_resync_start(g, glen, last, NULL, 0);
    else if (sub && !resume) /* subscribed: what came before is read from Redis, then subscribers go live */
        broker_fill(g, glen);
}

static void broker_on_pong(resp_conn *rc, redisReply *r, void *priv)
{
    (void)priv;
    broker_node *n = rc->owner;
    if (r && n->pings > 0)
        n->pings--;
}

static void broker_node_event(resp_conn *rc, resp_event ev, redisReply *r, const char *why)
{
    broker_node *node = rc->owner;
    if (ev == RESP_PUSH) {
        broker_on_push(node, r);
        return;
    }
    B.links_dirty = true;
    if (ev == RESP_DOWN) {
        if (node->stale) { /* a former master we were leaving anyway */
            B.links_dirty = true;
            resp_close(&node->cmd);
            resp_close(&node->sub);
            node->used = node->stale = false;
            return;
        }
        char msg[400];
        snprintf(msg, sizeof msg, "%s:%d: %s", rc->host, rc->port, why ? why : "disconnected");
        broker_went_down(msg);
        return;
    }
    if (B.phase == PH_CONNECT && ++B.ready == 2 * broker_nodes_used())
        broker_start_epoch();
}

/* One kept message from an XRANGE entry [id, [field, value]]; NULL when the
 * entry is not ours. */
static msg *broker_fill_entry(const redisReply *e, const char *g, size_t glen)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_ARRAY || e->element[1]->elements != 2 ||
        e->element[1]->element[1]->type != REDIS_REPLY_STRING)
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

static void broker_on_fill_last(resp_conn *rc, redisReply *reply, void *priv)
{
    (void)rc;
    broker_filling *f = priv;
    if (f->orphan) {
        broker_fetch_done(f->started_ns, false);
        free(f);
        delivery_release_held_all(B.d->hub);
        return;
    }
    f->ok = reply && (reply->type == REDIS_REPLY_NIL || reply->type == REDIS_REPLY_STRING);
    f->last = f->ok && reply->type == REDIS_REPLY_STRING ? strtoull(reply->str, NULL, 10) : 0;
}

static void broker_on_fill(resp_conn *rc, redisReply *reply, void *priv)
{
    (void)rc;
    broker_filling *f = priv;
    const char *g = f->group;
    size_t glen = strlen(g);
    if (!f->ok || !reply || reply->type != REDIS_REPLY_ARRAY) {
        /* The record stays stale: recoveries answer too_old, never nothing. */
        if (reply) {
            METRIC_INC(B.d->m, broker_errors);
            if (reply->type == REDIS_REPLY_ERROR && broker_cluster()) /* MOVED: the map is old */
                B.refresh_due_ms = B.d->loop->now_ms;
        }
        broker_fetch_done(f->started_ns, false);
        free(f);
        delivery_release_held_all(B.d->hub);
        return;
    }
    uint64_t last = f->last;
    redisReply *list = reply;
    msg **v = list->elements ? calloc(list->elements, sizeof *v) : NULL;
    size_t n = 0;
    for (size_t i = list->elements; v && i-- > 0;) { /* XREVRANGE: newest first */
        msg *m = broker_fill_entry(list->element[i], g, glen);
        if (m && (n == 0 || m->offset > v[n - 1]->offset))
            v[n++] = m;
        else if (m)
            msg_unref(m);
    }
    chan_history_cfg hc = delivery_history_cfg(B.d);
    chan *c = chan_lock(g, glen);
    if (c) {
        if (chan_confirmed(c) && (list->elements == 0 || v))
            chan_fill(c, last, v, n, &hc, B.d->loop->now_ms);
        chan_unlock(c);
    }
    for (size_t i = 0; i < n; i++)
        msg_unref(v[i]);
    free(v);
    broker_fetch_done(f->started_ns, true);
    free(f);
    delivery_release_held_all(B.d->hub);
}

static void broker_fill(const char *g, size_t len)
{
    char key[BROKER_KEY_MAX], hist[BROKER_KEY_MAX];
    int kl = broker_key(key, "herald:off:", g, len);
    int hl = broker_key(hist, "herald:h:", g, len);
    resp_conn *cmd = &B.node[broker_node_of(g, len)].cmd;
    broker_filling *f = calloc(1, sizeof *f + len + 1);
    if (!f) {
        delivery_release_held_all(B.d->hub);
        return;
    }
    f->started_ns = broker_now_ns();
    memcpy(f->group, g, len);
    const char *a1[2] = {"GET", key};
    size_t l1[2] = {3, (size_t)kl};
    if (!resp_command(cmd, broker_on_fill_last, f, 2, a1, l1)) {
        free(f);
        delivery_release_held_all(B.d->hub);
        return;
    }
    /* Every queued callback is called, with no reply if the connection
     * fails: f is freed by the XRANGE's, or by the GET's when it is alone. */
    /* The newest --history entries (another node may keep a longer stream). */
    char count[24];
    int cl = broker_fetch_count(count);
    const char *a2[6] = {"XREVRANGE", hist, "+", "-", "COUNT", count};
    size_t l2[6] = {9, (size_t)hl, 1, 1, 5, (size_t)cl};
    if (!resp_command(cmd, broker_on_fill, f, 6, a2, l2))
        f->orphan = true;
}

/* ---- publishing ---------------------------------------------------------------------- */

static void broker_send_publish(broker_pub *p, int node, bool asking);

/* A publish on its way to Redis: its message, and how often it was sent
 * elsewhere (a redirection) or again (a slot busy moving). */
struct broker_pub {
    struct broker_pub *next; /* parked for a retry */
    msg *m;
    uint64_t retry_at_ms;
    uint8_t hops;
};

/* A publish Redis did not take. While the broker is up, a local delivery
 * would be numbered under the cluster's epoch (and the real message with
 * that offset dropped as a copy), so the broker goes down first: the
 * message goes out under the new local epoch, at-least-once. */
static void broker_publish_failed(broker_pub *p, const char *why)
{
    METRIC_INC(B.d->m, broker_errors);
    if (B.phase != PH_DOWN && !B.closing)
        broker_went_down(why);
    if (B.closing)
        msg_unref(p->m);
    else
        delivery_deliver_local(B.d, p->m);
    free(p);
}

static bool broker_retryable(const redisReply *r)
{
    static const char *const busy[] = {"TRYAGAIN ", "CLUSTERDOWN ", "LOADING ", "MASTERDOWN "};
    for (size_t i = 0; i < sizeof busy / sizeof busy[0]; i++)
        if (r->len >= strlen(busy[i]) && memcmp(r->str, busy[i], strlen(busy[i])) == 0)
            return true;
    return false;
}

/* Each EVAL carries a reference to its message until Redis answers. With no
 * reply the connection failed with the command still pending: that publish
 * was accepted (200) but may never have reached Redis, so local subscribers
 * get it from here -- at the cost of a possible duplicate if Redis did
 * publish it just before the connection died. On a cluster, a redirection is
 * followed at once (and the map read again), a slot that is moving is asked
 * again shortly; either at most BROKER_HOPS_MAX times. */
static void broker_on_publish_reply(resp_conn *rc, redisReply *reply, void *priv)
{
    broker_pub *p = priv;
    if (reply && reply->type != REDIS_REPLY_ERROR) {
        msg_unref(p->m);
        free(p);
        return;
    }
    if (!reply) {
        broker_publish_failed(p, "connection lost with publishes in flight");
        return;
    }
    redis_redirect rd;
    if (!B.closing && B.phase == PH_UP && p->hops < BROKER_HOPS_MAX) {
        if (broker_cluster() && redis_parse_redirect(reply->str, reply->len, &rd)) {
            p->hops++;
            atomic_fetch_add(&B.redirections, 1);
            B.refresh_due_ms = B.d->loop->now_ms;
            if (!rd.host[0]) /* "the node you are talking to", at another port */
                snprintf(rd.host, sizeof rd.host, "%s", rc->host);
            int to = broker_find_node(rd.host, rd.port);
            if (to < 0)
                to = broker_node_add(rd.host, rd.port);
            if (to >= 0 && resp_is_open(&B.node[to].cmd)) {
                broker_send_publish(p, to, rd.kind == REDIS_ASK);
                return;
            }
        } else if (broker_retryable(reply)) {
            p->hops++;
            p->retry_at_ms = B.d->loop->now_ms + BROKER_RETRY_MS;
            p->next = B.parked;
            B.parked = p;
            return;
        }
    }
    log_msg(LOG_WARN, "broker publish failed: %.*s", (int)reply->len, reply->str);
    broker_publish_failed(p, "Redis refused a publish");
}

static void broker_send_publish(broker_pub *p, int node, bool asking)
{
    msg *m = p->m;
    char key[BROKER_KEY_MAX], ch[BROKER_CHANNEL_MAX], hist[BROKER_KEY_MAX], n[24], ttl[24];
    int kl = broker_key(key, "herald:off:", m->group, m->group_len);
    int hl = broker_key(hist, "herald:h:", m->group, m->group_len);
    const config *cfg = *B.d->cfg; /* we run in worker 0's loop: its snapshot */
    int nl = snprintf(n, sizeof n, "%d", m->group_len ? cfg->history : 0);
    int tl = snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)cfg->history_ttl_ms);
    int cl = broker_channel(ch, m->group, m->group_len);
    const char *verb = broker_cluster() && m->group_len ? "SPUBLISH" : "PUBLISH";
    /* ARGV[1] is the kind byte followed by the payload: one copy, as the
     * command is formatted into its own buffer anyway. */
    size_t plen = m->payload_len;
    char *arg = malloc(plen + 1);
    resp_conn *rc = &B.node[node].cmd;
    if (!arg) {
        broker_publish_failed(p, "out of memory");
        return;
    }
    arg[0] = m->opcode == WS_OP_TEXT ? 't' : 'b';
    memcpy(arg + 1, m->data + (m->len - plen), plen);
    const char *argv[10] = {"EVAL", broker_script, "2", key, hist, arg, n, ttl, verb, ch};
    size_t lens[10] = {4, sizeof broker_script - 1, 1, (size_t)kl, (size_t)hl,
                       plen + 1, (size_t)nl, (size_t)tl, strlen(verb), (size_t)cl};
    if (asking)
        resp_commandf(rc, NULL, NULL, "ASKING");
    if (resp_command(rc, broker_on_publish_reply, p, 10, argv, lens)) {
        METRIC_INC(B.d->m, broker_published);
    } else {
        broker_publish_failed(p, "cannot queue a publish (Redis too slow?)");
    }
    free(arg);
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
    if (B.d)
        inbox_wake(&B.d->in);
}

void broker_publish(msg *m) { broker_enqueue(BROKER_PUBLISH, m, m->group, m->group_len); }
void broker_subscribe(const char *g, size_t len) { broker_enqueue(BROKER_SUB, NULL, g, len); }
void broker_unsubscribe(const char *g, size_t len) { broker_enqueue(BROKER_UNSUB, NULL, g, len); }

/* No timeouts on our connections: a Redis that hangs (or a partition that
 * sends no reset) would leave us "up" forever, queueing publishes. A PING to
 * every node each second, answered within 3 s, catches it; so does a
 * discovery or connect that never finishes. */
static void broker_watchdog(uint64_t now_ms)
{
    if ((B.phase == PH_DISCOVER || B.phase == PH_CONNECT) && now_ms - B.phase_ms > BROKER_CONNECT_TIMEOUT_MS) {
        broker_went_down("connect timed out");
        return;
    }
    if (B.phase != PH_UP)
        return;
    if (B.ping_sent_ms && now_ms - B.ping_sent_ms > BROKER_PING_TIMEOUT_MS) {
        for (int i = 0; i < BROKER_NODES_MAX; i++)
            if (B.node[i].used && !B.node[i].stale && B.node[i].pings) {
                broker_went_down("no answer to PING within 3 s");
                return;
            }
        B.ping_sent_ms = 0;
    }
    if (!B.ping_sent_ms && now_ms >= B.ping_due_ms) {
        B.ping_sent_ms = now_ms;
        B.ping_due_ms = now_ms + BROKER_PING_EVERY_MS;
        for (int i = 0; i < BROKER_NODES_MAX; i++)
            if (B.node[i].used && !B.node[i].stale && resp_commandf(&B.node[i].cmd, broker_on_pong, NULL, "PING"))
                B.node[i].pings++;
    } else if (B.ping_sent_ms) {
        bool waiting = false;
        for (int i = 0; i < BROKER_NODES_MAX; i++)
            waiting |= B.node[i].used && !B.node[i].stale && B.node[i].pings > 0;
        if (!waiting)
            B.ping_sent_ms = 0;
    }
}

/* Busy answers (a slot moving) are asked again once their wait is over,
 * in the order they were parked in (the list is newest first). */
static void broker_retry_parked(uint64_t now_ms)
{
    broker_pub *due = NULL, **pp = &B.parked;
    while (*pp) {
        broker_pub *p = *pp;
        if (B.phase == PH_UP && now_ms < p->retry_at_ms) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        p->next = due;
        due = p;
    }
    while (due) {
        broker_pub *p = due;
        due = p->next;
        p->next = NULL;
        if (B.phase == PH_UP)
            broker_send_publish(p, broker_node_of(p->m->group, p->m->group_len), false);
        else
            broker_publish_failed(p, "broker down");
    }
}

static void broker_flush_all(void)
{
    for (int i = 0; i < BROKER_NODES_MAX; i++)
        if (B.node[i].used) {
            resp_flush(&B.node[i].cmd);
            resp_flush(&B.node[i].sub);
        }
    resp_flush(&B.seed);
    resp_flush(&B.sentinel);
}

static const delivery_upstream broker_upstream = {broker_up, broker_publish, broker_subscribe,
                                                  broker_unsubscribe};

void broker_attach(delivery *d0)
{
    B.d = d0;
    if (B.enabled)
        delivery_set_upstream(&broker_upstream);
}

void broker_poll(uint64_t now_ms)
{
    if (!B.enabled)
        return;
    if (B.phase == PH_DOWN && now_ms >= B.retry_at_ms)
        broker_start();
    broker_sentinel_watch(now_ms);
    broker_watchdog(now_ms);
    broker_refresh(now_ms);
    broker_close_stale();
    broker_retry_parked(now_ms);
    pthread_mutex_lock(&B.lock);
    broker_cmd *c = B.head;
    B.head = B.tail = NULL;
    pthread_mutex_unlock(&B.lock);
    while (c) {
        broker_cmd *next = c->next;
        if (c->op == BROKER_PUBLISH) {
            broker_pub *p = broker_up() ? calloc(1, sizeof *p) : NULL;
            if (p) {
                p->m = c->m;
                broker_send_publish(p, broker_node_of(c->group, c->len), false);
            } else { /* Redis unreachable: local subscribers still get it */
                delivery_deliver_local(B.d, c->m);
            }
        } else if (broker_up()) {
            broker_subscribe_group(c->op == BROKER_SUB, c->group, c->len);
        }
        free(c);
        c = next;
    }
    broker_flush_all();
    if (B.links_dirty) {
        B.links_dirty = false;
        broker_links_update();
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
    delivery_set_upstream(NULL);
    B.phase = PH_DOWN;
    broker_close_all();
    resp_close(&B.sentinel);
    broker_retry_parked(0);
}

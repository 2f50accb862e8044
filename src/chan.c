#include "chan.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#define CHAN_SHARDS 64
#define CHAN_BUCKETS 256 /* per shard, power of two */

struct chan {
    struct chan *next;
    struct chan_shard *shard;
    uint32_t hash;
    uint64_t last_offset;
    uint32_t subscribers;   /* local, all workers */
    uint64_t used_ms;       /* creation or last publish (coarse clock), for chan_sweep */
    bool confirmed;         /* the broker acknowledged our SUBSCRIBE */
    bool stale;             /* cluster: the node stopped following the group, so its
                             * offsets and history say nothing of what came since */
    /* history: a ring of message references, oldest at head */
    msg **hist;
    uint32_t hist_cap, hist_head, hist_count;
    size_t hist_bytes;      /* msg_footprint of what hist holds */
    /* The shard's groups that keep history, most recently published first:
     * the history budget evicts from the tail. */
    struct chan *lru_prev, *lru_next;
    uint8_t name_len;
    char name[];
};

typedef struct chan_shard {
    pthread_mutex_t lock;
    chan *buckets[CHAN_BUCKETS];
    /* Highest last offset of any group forgotten from each bucket: a new
     * group in the bucket starts above it. Bounded memory (one word per
     * bucket) instead of a tombstone per forgotten group; a group that never
     * shared a bucket with a forgotten one still starts at 1. */
    uint64_t floor[CHAN_BUCKETS];
    chan *lru_head, *lru_tail;
    /* used_ms of lru_tail (UINT64_MAX: none), readable without the lock so
     * the budget can pick the shard whose oldest group is oldest. */
    _Atomic uint64_t lru_tail_ms;
} chan_shard;

static chan_shard *chan_shards;
static bool chan_local_offsets;
static _Atomic uint64_t chan_live_n, chan_reclaimed_n;
/* Bytes of kept messages (msg_footprint), and of group records with their
 * history arrays; groups whose history the budget evicted. */
static _Atomic uint64_t chan_hist_total, chan_rec_total, chan_evicted_n;
static atomic_uint chan_sweep_cursor;
/* Epochs are immutable strings, kept until exit (they change only when
 * history is lost: a handful per process), so a reader may hold one as long
 * as it likes; messages carry the one they were sequenced under. */
typedef struct chan_epoch_node {
    struct chan_epoch_node *next;
    uint32_t gen;
    char s[];
} chan_epoch_node;

static _Atomic(chan_epoch_node *) chan_epoch_cur;
static chan_epoch_node *chan_epoch_all;
static pthread_mutex_t chan_epoch_lock = PTHREAD_MUTEX_INITIALIZER;

const char *chan_epoch(void)
{
    chan_epoch_node *e = atomic_load_explicit(&chan_epoch_cur, memory_order_acquire);
    return e ? e->s : "";
}

uint32_t chan_epoch_gen(void)
{
    chan_epoch_node *e = atomic_load_explicit(&chan_epoch_cur, memory_order_acquire);
    return e ? e->gen : 0;
}

void chan_set_epoch(const char *epoch)
{
    size_t n = strlen(epoch);
    chan_epoch_node *e = malloc(sizeof *e + n + 1);
    if (!e)
        return;
    memcpy(e->s, epoch, n + 1);
    pthread_mutex_lock(&chan_epoch_lock);
    e->gen = chan_epoch_all ? chan_epoch_all->gen + 1 : 1;
    e->next = chan_epoch_all;
    chan_epoch_all = e;
    atomic_store_explicit(&chan_epoch_cur, e, memory_order_release);
    pthread_mutex_unlock(&chan_epoch_lock);
}

bool chan_init(bool local_offsets)
{
    chan_local_offsets = local_offsets;
    atomic_store(&chan_live_n, 0);
    atomic_store(&chan_reclaimed_n, 0);
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
    }
    char e[17];
    snprintf(e, sizeof e, "%016llx", (unsigned long long)r);
    chan_set_epoch(e);
    chan_shards = calloc(CHAN_SHARDS, sizeof *chan_shards);
    if (!chan_shards)
        return false;
    for (int i = 0; i < CHAN_SHARDS; i++) {
        pthread_mutex_init(&chan_shards[i].lock, NULL);
        atomic_init(&chan_shards[i].lru_tail_ms, UINT64_MAX);
    }
    atomic_store(&chan_hist_total, 0);
    atomic_store(&chan_rec_total, 0);
    atomic_store(&chan_evicted_n, 0);
    atomic_store(&chan_sweep_cursor, 0);
    return true;
}

/* ---- the shard's LRU of groups with history (lock held) ---- */

static void chan_lru_publish_tail(chan_shard *sh)
{
    atomic_store_explicit(&sh->lru_tail_ms, sh->lru_tail ? sh->lru_tail->used_ms : UINT64_MAX,
                          memory_order_relaxed);
}

static void chan_lru_unlink(chan *c)
{
    chan_shard *sh = c->shard;
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else
        sh->lru_head = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    else
        sh->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
    chan_lru_publish_tail(sh);
}

/* Moves c to the front (most recently published). */
static void chan_lru_touch(chan *c)
{
    chan_shard *sh = c->shard;
    if (sh->lru_head == c) {
        if (sh->lru_tail == c) /* alone: its own time is the tail's */
            chan_lru_publish_tail(sh);
        return;
    }
    if (c->lru_prev || c->lru_next || sh->lru_tail == c)
        chan_lru_unlink(c);
    c->lru_next = sh->lru_head;
    if (sh->lru_head)
        sh->lru_head->lru_prev = c;
    sh->lru_head = c;
    if (!sh->lru_tail)
        sh->lru_tail = c;
    chan_lru_publish_tail(sh);
}

static void chan_drop_oldest(chan *c)
{
    msg *m = c->hist[c->hist_head];
    size_t f = msg_footprint(m);
    c->hist_bytes -= f;
    atomic_fetch_sub_explicit(&chan_hist_total, f, memory_order_relaxed);
    msg_unref(m);
    c->hist_head = (c->hist_head + 1) % c->hist_cap;
    if (--c->hist_count == 0)
        chan_lru_unlink(c);
}

static void chan_keep(chan *c, msg *m)
{
    size_t f = msg_footprint(m);
    c->hist[(c->hist_head + c->hist_count) % c->hist_cap] = msg_ref(m);
    c->hist_count++;
    c->hist_bytes += f;
    atomic_fetch_add_explicit(&chan_hist_total, f, memory_order_relaxed);
    chan_lru_touch(c);
}

/* A group record's own memory: the struct, its name and its history array. */
static size_t chan_record_bytes(const chan *c)
{
    return sizeof *c + c->name_len + 1 + sizeof(msg *) * c->hist_cap;
}

static void chan_free(chan *c)
{
    while (c->hist_count)
        chan_drop_oldest(c);
    atomic_fetch_sub_explicit(&chan_rec_total, chan_record_bytes(c), memory_order_relaxed);
    free(c->hist);
    free(c);
}

/* Drops a whole group's history (the budget's unit of eviction). */
static void chan_evict(chan *c)
{
    while (c->hist_count)
        chan_drop_oldest(c);
    /* The array goes too: an evicted group is usually an abandoned one. */
    atomic_fetch_sub_explicit(&chan_rec_total, sizeof(msg *) * c->hist_cap, memory_order_relaxed);
    free(c->hist);
    c->hist = NULL;
    c->hist_cap = c->hist_head = 0;
    atomic_fetch_add_explicit(&chan_evicted_n, 1, memory_order_relaxed);
}

void chan_destroy(void)
{
    if (!chan_shards)
        return;
    for (int i = 0; i < CHAN_SHARDS; i++) {
        for (int b = 0; b < CHAN_BUCKETS; b++) {
            chan *c = chan_shards[i].buckets[b];
            while (c) {
                chan *n = c->next;
                chan_free(c);
                c = n;
            }
        }
        pthread_mutex_destroy(&chan_shards[i].lock);
    }
    free(chan_shards);
    chan_shards = NULL;
    atomic_store(&chan_epoch_cur, NULL);
    while (chan_epoch_all) {
        chan_epoch_node *n = chan_epoch_all->next;
        free(chan_epoch_all);
        chan_epoch_all = n;
    }
}

static uint32_t chan_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint64_t chan_coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Locks name's shard and finds its channel; *bucket is where it belongs. */
static chan *chan_find_locked(const char *name, size_t len, uint32_t *hash, chan_shard **shard,
                              uint32_t *bucket)
{
    uint32_t h = chan_hash(name, len);
    chan_shard *sh = &chan_shards[h % CHAN_SHARDS];
    uint32_t b = (h / CHAN_SHARDS) & (CHAN_BUCKETS - 1);
    pthread_mutex_lock(&sh->lock);
    *hash = h;
    *shard = sh;
    *bucket = b;
    for (chan *c = sh->buckets[b]; c; c = c->next)
        if (c->hash == h && c->name_len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

chan *chan_lock(const char *name, size_t len)
{
    uint32_t h, b;
    chan_shard *sh;
    chan *c = chan_find_locked(name, len, &h, &sh, &b);
    if (c)
        return c;
    c = calloc(1, sizeof *c + len + 1);
    if (!c) {
        pthread_mutex_unlock(&sh->lock);
        return NULL;
    }
    c->shard = sh;
    c->hash = h;
    c->name_len = (uint8_t)len;
    memcpy(c->name, name, len);
    c->last_offset = chan_local_offsets ? sh->floor[b] : 0;
    /* In a cluster a group this node meets for the first time may already
     * have messages elsewhere: stale until one reaches us. */
    c->stale = !chan_local_offsets;
    c->used_ms = chan_coarse_ms();
    c->next = sh->buckets[b];
    sh->buckets[b] = c;
    atomic_fetch_add_explicit(&chan_live_n, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&chan_rec_total, chan_record_bytes(c), memory_order_relaxed);
    return c;
}

bool chan_admit(const char *name, size_t len, int max)
{
    uint32_t h, b;
    chan_shard *sh;
    bool ok = chan_find_locked(name, len, &h, &sh, &b) != NULL ||
              atomic_load_explicit(&chan_live_n, memory_order_relaxed) < (uint64_t)max;
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

uint64_t chan_live(void) { return atomic_load_explicit(&chan_live_n, memory_order_relaxed); }

uint64_t chan_reclaimed(void)
{
    return atomic_load_explicit(&chan_reclaimed_n, memory_order_relaxed);
}

void chan_unlock(chan *c) { pthread_mutex_unlock(&c->shard->lock); }

uint64_t chan_last_offset(const chan *c) { return c->last_offset; }

const char *chan_name(const chan *c, size_t *len)
{
    *len = c->name_len;
    return c->name;
}

bool chan_subscriber_add(chan *c) { return c->subscribers++ == 0; }

bool chan_subscriber_del(chan *c) { return c->subscribers > 0 && --c->subscribers == 0; }

bool chan_confirmed(const chan *c) { return c->confirmed; }

uint32_t chan_subscribers(const chan *c) { return c->subscribers; }

void chan_set_confirmed(chan *c, bool yes) { c->confirmed = yes; }

void chan_foreach(void (*fn)(chan *c, void *arg), void *arg)
{
    for (int i = 0; i < CHAN_SHARDS; i++) {
        pthread_mutex_lock(&chan_shards[i].lock);
        for (int b = 0; b < CHAN_BUCKETS; b++)
            for (chan *c = chan_shards[i].buckets[b]; c; c = c->next)
                fn(c, arg);
        pthread_mutex_unlock(&chan_shards[i].lock);
    }
}

static void chan_reset_one(chan *c, void *arg)
{
    (void)arg;
    while (c->hist_count)
        chan_drop_oldest(c);
    c->last_offset = 0;
    c->stale = !chan_local_offsets; /* a cluster node missed what came meanwhile */
}

void chan_reset_all(void)
{
    chan_foreach(chan_reset_one, NULL);
    for (int i = 0; i < CHAN_SHARDS; i++) {
        pthread_mutex_lock(&chan_shards[i].lock);
        memset(chan_shards[i].floor, 0, sizeof chan_shards[i].floor);
        pthread_mutex_unlock(&chan_shards[i].lock);
    }
}

static bool chan_expired(const msg *m, const chan_history_cfg *cfg, uint64_t now_ms)
{
    return cfg->ttl_ms && now_ms > m->publish_ns / 1000000u + cfg->ttl_ms;
}

static void chan_trim(chan *c, const chan_history_cfg *cfg, uint64_t now_ms)
{
    while (c->hist_count && (c->hist_count > cfg->max ||
                             chan_expired(c->hist[c->hist_head], cfg, now_ms)))
        chan_drop_oldest(c);
}

void chan_sweep(int shards, const chan_history_cfg *cfg, uint64_t now_ms, uint64_t linger_ms)
{
    for (int k = 0; k < shards; k++) {
        unsigned i = atomic_fetch_add_explicit(&chan_sweep_cursor, 1, memory_order_relaxed) %
                     CHAN_SHARDS;
        chan_shard *sh = &chan_shards[i];
        pthread_mutex_lock(&sh->lock);
        for (uint32_t b = 0; b < CHAN_BUCKETS; b++) {
            for (chan **pp = &sh->buckets[b]; *pp;) {
                chan *c = *pp;
                chan_trim(c, cfg, now_ms);
                /* used_ms may come from a fresher clock read than now_ms. */
                if (c->subscribers || c->hist_count || now_ms < c->used_ms + linger_ms) {
                    pp = &c->next;
                    continue;
                }
                if (c->last_offset > sh->floor[b])
                    sh->floor[b] = c->last_offset;
                *pp = c->next;
                chan_free(c);
                atomic_fetch_sub_explicit(&chan_live_n, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&chan_reclaimed_n, 1, memory_order_relaxed);
            }
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

void chan_append(chan *c, msg *m, const chan_history_cfg *cfg, uint64_t now_ms)
{
    chan_append_at(c, m, c->last_offset + 1, cfg, now_ms);
}

/* True when c is the only group keeping history (with its shard locked). */
static bool chan_alone(const chan *c)
{
    return c->hist_bytes >= atomic_load_explicit(&chan_hist_total, memory_order_relaxed);
}

/* The one group left over the budget keeps its newest messages: evicting it
 * whole would leave a hot group no history at all after every tick. */
static void chan_trim_to_budget(chan *c, size_t budget)
{
    while (c->hist_count > 1 &&
           atomic_load_explicit(&chan_hist_total, memory_order_relaxed) > budget)
        chan_drop_oldest(c);
}

/* The shard whose least recently published group is the oldest of all
 * (read without locks: a hint, checked again under the lock). */
static chan_shard *chan_oldest_shard(void)
{
    chan_shard *oldest = NULL;
    uint64_t oldest_ms = UINT64_MAX;
    for (int i = 0; i < CHAN_SHARDS; i++) {
        uint64_t t = atomic_load_explicit(&chan_shards[i].lru_tail_ms, memory_order_relaxed);
        if (t < oldest_ms) {
            oldest_ms = t;
            oldest = &chan_shards[i];
        }
    }
    return oldest;
}

/* Over the budget by more than an eighth (the ticks' eviction lags by up to
 * 100 ms of publishes): evict the globally oldest groups now. We hold c's
 * shard lock, so other shards are only tried (a blocking lock could
 * deadlock with a thread doing the same the other way round); the group
 * being published to is never the victim. */
static void chan_evict_inline(chan *c, size_t budget)
{
    while (atomic_load_explicit(&chan_hist_total, memory_order_relaxed) > budget + budget / 8) {
        chan_shard *sh = chan_oldest_shard();
        if (!sh)
            return;
        if (sh == c->shard) {
            if (sh->lru_tail == c && chan_alone(c)) {
                chan_trim_to_budget(c, budget);
                return;
            }
            if (!sh->lru_tail || sh->lru_tail == c)
                return;
            chan_evict(sh->lru_tail);
            continue;
        }
        if (pthread_mutex_trylock(&sh->lock) != 0)
            return;
        if (sh->lru_tail)
            chan_evict(sh->lru_tail);
        pthread_mutex_unlock(&sh->lock);
    }
}

void chan_append_at(chan *c, msg *m, uint64_t offset, const chan_history_cfg *cfg,
                    uint64_t now_ms)
{
    if (offset != c->last_offset + 1)
        while (c->hist_count)
            chan_drop_oldest(c);
    m->offset = c->last_offset = offset;
    c->used_ms = now_ms;
    chan_trim(c, cfg, now_ms);
    if (cfg->max == 0)
        return;
    if (c->hist_count == c->hist_cap) {
        if (c->hist_cap >= cfg->max) {
            chan_drop_oldest(c);
        } else { /* grow towards max: groups with little traffic stay small */
            uint32_t ncap = c->hist_cap ? c->hist_cap * 2 : 8;
            if (ncap > cfg->max)
                ncap = (uint32_t)cfg->max;
            msg **n = malloc(sizeof *n * ncap);
            if (!n)
                return; /* history is best effort; recovery reports the gap */
            for (uint32_t i = 0; i < c->hist_count; i++)
                n[i] = c->hist[(c->hist_head + i) % c->hist_cap];
            free(c->hist);
            atomic_fetch_add_explicit(&chan_rec_total, sizeof *n * (ncap - c->hist_cap),
                                      memory_order_relaxed);
            c->hist = n;
            c->hist_cap = ncap;
            c->hist_head = 0;
        }
    }
    chan_keep(c, m);
    if (cfg->memory)
        chan_evict_inline(c, cfg->memory);
}

size_t chan_enforce_budget(size_t budget, size_t max_groups)
{
    size_t evicted = 0;
    while (evicted < max_groups &&
           atomic_load_explicit(&chan_hist_total, memory_order_relaxed) > budget) {
        chan_shard *oldest = chan_oldest_shard();
        if (!oldest)
            break;
        pthread_mutex_lock(&oldest->lock);
        chan *v = oldest->lru_tail;
        bool done = false;
        if (v && chan_alone(v)) {
            chan_trim_to_budget(v, budget);
            done = true; /* what is left is its newest message */
        } else if (v) {
            chan_evict(v);
            evicted++;
        }
        pthread_mutex_unlock(&oldest->lock);
        if (done)
            break;
    }
    return evicted;
}

uint64_t chan_history_bytes(void)
{
    return atomic_load_explicit(&chan_hist_total, memory_order_relaxed);
}

uint64_t chan_record_total(void)
{
    return atomic_load_explicit(&chan_rec_total, memory_order_relaxed);
}

uint64_t chan_evictions(void) { return atomic_load_explicit(&chan_evicted_n, memory_order_relaxed); }

bool chan_ready(const chan *c) { return c->confirmed && !c->stale; }

void chan_fill(chan *c, uint64_t last, msg **fetched, size_t n, const chan_history_cfg *cfg,
               uint64_t now_ms)
{
    /* What arrived live since our SUBSCRIBE (above `last`, a suffix of the
     * ascending history) stays; below it the fetched copies stand in, in
     * offset order: one contiguous history. */
    msg **later = c->hist_count ? malloc(sizeof *later * c->hist_count) : NULL;
    if (c->hist_count && !later)
        return; /* still stale: recoveries say too_old rather than guess */
    size_t keep_n = 0;
    while (c->hist_count) {
        msg *m = c->hist[c->hist_head];
        if (m->offset > last)
            later[keep_n++] = msg_ref(m);
        chan_drop_oldest(c);
    }
    uint64_t top = c->last_offset > last ? c->last_offset : last;
    c->last_offset = 0;
    for (size_t i = 0; i < n; i++)
        if (fetched[i]->offset <= last && fetched[i]->offset > c->last_offset)
            chan_append_at(c, fetched[i], fetched[i]->offset, cfg, now_ms);
    for (size_t i = 0; i < keep_n; i++) {
        chan_append_at(c, later[i], later[i]->offset, cfg, now_ms);
        msg_unref(later[i]);
    }
    free(later);
    if (c->last_offset < top)
        c->last_offset = top; /* nothing kept up to it (no history, or trimmed) */
    c->stale = false;
}

void chan_mark_stale(chan *c)
{
    while (c->hist_count)
        chan_drop_oldest(c);
    c->stale = true;
}

chan_replay_result chan_replay(chan *c, uint64_t since, const chan_history_cfg *cfg,
                               uint64_t now_ms, void (*fn)(void *arg, msg *m), void *arg)
{
    if (c->stale)
        return CHAN_REPLAY_TOO_OLD; /* we cannot tell what was missed: never claim nothing was */
    if (since > c->last_offset)
        return CHAN_REPLAY_FUTURE;
    chan_trim(c, cfg, now_ms);
    if (since == c->last_offset)
        return CHAN_REPLAY_OK;
    uint64_t oldest = c->hist_count ? c->hist[c->hist_head]->offset : c->last_offset + 1;
    if (since + 1 < oldest)
        return CHAN_REPLAY_TOO_OLD;
    for (uint32_t i = 0; i < c->hist_count; i++) {
        msg *m = c->hist[(c->hist_head + i) % c->hist_cap];
        if (m->offset > since)
            fn(arg, m);
    }
    return CHAN_REPLAY_OK;
}

/* A worker thread: one epoll loop that owns its listener (SO_REUSEPORT), its
 * connections, its group table and its timers. Other threads reach it only by
 * pushing message pointers into its inbox ring. */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "chan.h"
#include "config.h"
#include "groups.h"
#include "metrics.h"
#include "msg.h"
#include "ring.h"

struct conn;
struct server;

typedef struct msg_fifo {
    msg **items;
    size_t head, count, cap;
} msg_fifo;

typedef struct worker {
    ring inbox; /* first: its cache-line-aligned indices stay on their own lines */
    atomic_bool notified;
    atomic_int stop;              /* 0 running, 1 close with 1001 now, 2 drain with 1012 */
    _Atomic uint64_t seen_generation; /* config generation at the last loop pass */
    atomic_bool done;             /* the thread has left its loop */
    int id;
    struct server *srv;
    const config *cfg;
    pthread_t thread;
    int epfd, lfd, efd, reserve_fd;
    bool draining;
    bool restart_drain;           /* closing with 1012 over the drain window */
    uint64_t drain_start_ms;
    uint64_t drain_total, drain_closed; /* WebSockets to close with 1012, and closed so far */
    uint64_t drain_deadline_ms;
    uint64_t now_ms;
    uint64_t next_tick_ms;
    uint64_t flush_after_ns;  /* adaptive coalescing: no flush pass before this */
    uint64_t accept_resume_ms; /* out of descriptors: listener paused until then (0: active) */
    group_table groups;
    struct conn **conns;
    uint32_t nconns, cap_conns;
    struct conn **all; /* every subscriber: broadcasts to all go here */
    uint32_t nall, cap_all;
    struct conn *dirty;
    struct conn **held;
    uint32_t nheld, cap_held;
    atomic_bool check_held;
    struct conn *graveyard;
    /* When the inbox ring is full, producers append here instead (in order,
     * under the lock); the owner drains the ring, then this. */
    pthread_mutex_t overflow_lock;
    msg_fifo overflow;
    atomic_bool overflow_used;
    _Atomic uint64_t overflow_bytes; /* the overflow list's array (memory view) */
    uint8_t *scratch;
    size_t scratch_cap;
    uint8_t *tls_stage;
    msg_batch release;    /* releases of written messages, applied once per pass */   /* plaintext gathered for one SSL_write run (TLS only) */
    metrics m;
} worker;

int worker_init(worker *w, struct server *srv, int id, int listen_fd);
int worker_start(worker *w);
/* One pass of the loop: waits up to max_wait_ms for events, then handles
 * them, the inbox, flushes, timers. False once a stop has finished. The
 * thread runs it forever; tests and the connection fuzzer call it directly. */
bool worker_run_pass(worker *w, int max_wait_ms);

/* Takes a connected, non-blocking socket as a new connection of this worker
 * (the accept path; the fuzzer hands in one end of a socketpair). */
struct conn *worker_adopt(worker *w, int fd, const struct sockaddr_storage *peer);
void worker_join(worker *w);
void worker_cleanup(worker *w);
/* Stops the worker: restart=true closes WebSockets with 1012 spread over
 * --drain-window (SIGTERM), false closes them with 1001 at once (SIGINT).
 * A later call can only make an ongoing stop faster. */
void worker_request_stop(worker *w, bool restart);
void worker_wake(worker *w);

/* Publishes a finished message from this worker: through the cluster broker
 * when there is one, else sequenced here (worker_deliver_local). Consumes the
 * caller's reference. */
void worker_publish(worker *w, msg *m);

/* Sequences m in its group (next local offset, or the broker's offset) and
 * hands it to every worker's inbox. Consume the reference. */
void worker_deliver_local(worker *w, msg *m);
void worker_deliver_sequenced(worker *w, msg *m, uint64_t offset);

/* Subscribers whose 101 waits for the broker to confirm a subscription. */
bool worker_hold(worker *w, struct conn *c);
void worker_unhold(worker *w, struct conn *c);
void worker_release_held_all(struct server *s);

/* Bookkeeping used by conn.c. */
bool worker_add_conn(worker *w, struct conn *c);
void worker_remove_conn(worker *w, struct conn *c);
bool worker_add_all(worker *w, struct conn *c);
void worker_remove_all(worker *w, struct conn *c);
void worker_mark_dirty(worker *w, struct conn *c);
int worker_epoll_mod(worker *w, struct conn *c, bool want_out);

/* The history settings in force, for chan_append/chan_replay. */
chan_history_cfg worker_history_cfg(const worker *w);

uint64_t worker_clock_ms(void);
uint64_t worker_clock_ns(void);

#endif

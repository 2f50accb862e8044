/* A worker thread and its wiring: one event loop (loop.c) that owns its
 * listener (SO_REUSEPORT), its connections, its delivery state (delivery.c:
 * group table, inbox) and its timers. Other threads reach it only through its
 * inbox. */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "coalesce.h"
#include "config.h"
#include "conn.h"
#include "delivery.h"
#include "drain.h"
#include "listener.h"
#include "loop.h"
#include "metrics.h"
#include "msg.h"

struct conn;

/* What a worker gets from the process (server.c fills it): the config, TLS,
 * every worker's delivery, and the server-wide views its connections serve
 * or its tick drives, through owner. */
typedef struct worker_deps {
    const config *cfg;
    SSL_CTX *tls;
    delivery_hub *hub;
    uint64_t start_ms;
    const atomic_bool *pressure; /* over the --max-memory mark */
    size_t (*metrics_text)(void *owner, char *buf, size_t cap, int json);
    void (*memory_tick)(void *owner, uint64_t now_ms); /* worker 0, every tick */
    void *owner;
} worker_deps;

typedef struct worker {
    delivery dl; /* first: its inbox ring's cache-line-aligned indices */
    loop loop;
    atomic_int stop;              /* 0 running, 1 close with 1001 now, 2 drain with 1012 */
    _Atomic uint64_t seen_generation; /* config generation at the last loop pass */
    atomic_bool done;             /* the thread has left its loop */
    int id;
    const worker_deps *deps;
    pthread_t thread;
    listener ls;
    drain drain;
    coalesce coalesce;        /* write rounds: when the next slice may run */
    conn_env env;             /* what its connections reach of it (conn.h) */
    metrics m;
} worker;

/* deps must outlive the worker. */
int worker_init(worker *w, const worker_deps *deps, int id, int listen_fd);
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


#endif

/* A worker's stop. SIGINT closes every WebSocket with 1001 at once; SIGTERM
 * closes the WebSockets open at its start with 1012 on an even schedule over
 * --drain-window (close i at start + i*window/N), so clients reconnecting
 * elsewhere arrive spread out instead of in a burst. Either waits at most
 * --shutdown-timeout (plus the window) for the queues to flush. */
#ifndef HERALD_DRAIN_H
#define HERALD_DRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

typedef struct drain {
    bool active;
    bool restart;            /* closing with 1012 over the window */
    uint64_t start_ms, deadline_ms;
    uint64_t total, closed;  /* WebSockets to close with 1012, and closed so far */
} drain;

/* Starts the stop for every connection of env (restart: SIGTERM). */
void drain_begin(drain *d, conn_env *env, bool restart);
/* Once per pass while a restart drain runs: the closes now due. */
void drain_step(drain *d, conn_env *env);
/* A second, impatient signal: everything closes with 1001 now. */
void drain_hurry(drain *d, conn_env *env);
/* True once every connection went, or the deadline passed. */
bool drain_done(const drain *d, const conn_env *env);

#endif

/* A worker's listening socket (SO_REUSEPORT: one per worker): accepts in
 * batches and adopts each socket as a connection. Running out of
 * descriptors closes a spare one to accept and drop the waiting connection,
 * then pauses accepting for a tick, so a full table never spins the loop. */
#ifndef HERALD_LISTENER_H
#define HERALD_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conn.h"
#include "loop.h"

typedef struct listener {
    loop_handler h; /* first: the loop hands events to listener_on_io */
    int fd;         /* -1: closed (draining) */
    int reserve_fd; /* the spare descriptor */
    uint64_t resume_ms; /* paused until then (0: accepting) */
    conn_env *env;
} listener;

/* Watches fd in env's loop. False on failure. */
bool listener_init(listener *ls, int fd, conn_env *env);
/* Takes a connected, non-blocking socket as a new connection (the accept
 * path; the fuzzer hands in one end of a socketpair). */
struct conn *listener_adopt(listener *ls, int fd, const struct sockaddr_storage *peer);
/* Once per pass: accepting again once a pause is over. */
void listener_resume_due(listener *ls);
/* Stops listening (a drain, or cleanup). */
void listener_close(listener *ls);

#endif

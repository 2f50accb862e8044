/* One event-loop thread: owns subscribers i with i mod T == id and
 * publishers j with j mod T == id, follows the coordinator's phases. */
#ifndef HB_WORKER_H
#define HB_WORKER_H

#include "bench.h"

/* Allocates w's connections, tracking entries and epoll/timer/event fds.
 * Returns false (with a message on stderr) on failure. */
bool worker_init(worker *w, bench_run *run, uint32_t id);
void worker_free(worker *w);
/* Thread body: runs until the close phase has finished. */
void *worker_main(void *arg);

#endif

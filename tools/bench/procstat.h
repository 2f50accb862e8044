/* Reads another process's CPU time and resident memory from /proc. */
#ifndef HB_PROCSTAT_H
#define HB_PROCSTAT_H

#include <stdbool.h>

/* utime + stime of pid in seconds; false if /proc/PID/stat is unreadable. */
bool procstat_cpu(int pid, double *seconds);
/* VmRSS of pid in KiB; false if unavailable. */
bool procstat_rss_kb(int pid, long *kb);
/* CPU seconds (user + system) this process used so far. */
double procstat_self_cpu(void);

#endif

/* One line per event worth an operator's attention, on stderr, as text or
 * JSON (--log-format). */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdbool.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_configure(log_level threshold, bool json);
void log_msg(log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

/* One line per event worth an operator's attention, on stderr. */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level l);
void log_msg(log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

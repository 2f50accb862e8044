#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int log_threshold = LOG_INFO;
static atomic_bool log_json = false;

void log_configure(log_level threshold, bool json)
{
    atomic_store(&log_threshold, (int)threshold);
    atomic_store(&log_json, json);
}

/* Appends s to out as the inside of a JSON string. */
static size_t log_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

void log_msg(log_level l, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if ((int)l < atomic_load_explicit(&log_threshold, memory_order_relaxed))
        return;
    char text[768], ts[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             now.tv_nsec / 1000000);
    /* One fprintf per line: stdio locks the stream, so lines never interleave. */
    if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
        char esc[1600];
        log_escape(esc, sizeof esc, text);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n", ts, names[l], esc);
    } else {
        fprintf(stderr, "%s %s %s\n", ts, names[l], text);
    }
}

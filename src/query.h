/* The query grammar of the HTTP routes (/ws, /sse, /publish): comma lists of
 * groups, since=group:offset lists, format= and 0/1 flags. Pure: no I/O, no
 * allocation, results point into the caller's buffers.
 *
 * Every function reads a value as http_query_get leaves it: percent-decoded,
 * with its length as a long where -1 means the key is absent and -2 that it
 * was malformed or too long. A caller passes what it got straight through,
 * so "absent" and "malformed" are decided here once, not at each call. */
#ifndef HERALD_QUERY_H
#define HERALD_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A comma list, entry by entry. Empty entries count: "" is one empty entry,
 * "a," is "a" and "", "a,,b" has three; an absent list (n < 0) has none. */
typedef struct query_list {
    const char *p;
    size_t n;
    size_t pos;  /* start of the next entry */
    bool done;
} query_list;

query_list query_list_start(const char *list, long n);

/* The next entry (*entry points into the list, *len bytes, no NUL); false
 * when there is none left. */
bool query_list_next(query_list *it, const char **entry, size_t *len);

/* groups=: NULL when the list is absent or valid, else the refusal's reason
 * (answered with 400): malformed encoding, an entry that is no group name
 * (empty entries included), or more than max_groups entries (duplicates
 * count). Entries are checked in order, each for its name first. */
const char *query_groups_check(const char *list, long n, int max_groups);

/* group= of /publish: NULL when absent or valid, else the reason. */
const char *query_group_check(const char *name, long n);

/* True when the comma list holds name as a whole entry. */
bool query_list_has(const char *list, long n, const char *name, size_t len);

/* The distinct entries of a comma list in first-seen order ("a,b,a" is a,
 * b), at most max of them; returns how many were stored. */
size_t query_list_distinct(const char *list, long n, const char **names, size_t *lens,
                           size_t max);

/* One since entry, "name:digits": group names may contain ':', so the last
 * ':' splits. False unless the name and the digits are both non-empty and
 * the offset fits in 64 bits (leading zeros are fine). */
bool query_since_entry(const char *e, size_t len, size_t *name_len, uint64_t *off);

typedef enum query_since_result {
    QUERY_SINCE_NONE = 0, /* g is not listed (or there is no since) */
    QUERY_SINCE_FOUND,    /* *off is g's offset: its first entry wins */
    QUERY_SINCE_BAD,      /* an entry before g's is not name:digits */
} query_since_result;

/* g's offset in a since list "a:5,b:7". Entries are read in order up to g's
 * first one only: query_resume_check is what checks them all. */
query_since_result query_since_find(const char *since, long n, const char *g, size_t glen,
                                    uint64_t *off);

/* since= and epoch= of /ws and /sse: NULL when both are absent or fine, else
 * the refusal's reason (400). Every since entry must be well formed and name
 * a group of the list (so since without groups= is refused); epoch is any
 * value, el only says whether it was readable. */
const char *query_resume_check(const char *since, long sl, long el, const char *list, long n);

/* True when an epoch value (el < 0: absent) is exactly cur: decoded lengths
 * are compared, so "E%00x" is not "E". */
bool query_epoch_is(const char *epoch, long el, const char *cur);

typedef enum query_format {
    QUERY_FORMAT_RAW = 0, /* also when absent */
    QUERY_FORMAT_JSON,
    QUERY_FORMAT_MSGPACK,
    QUERY_FORMAT_BAD,
} query_format;

/* format=raw|json|msgpack (exact, case-sensitive); which a route accepts is
 * its own business (/sse has no msgpack). */
query_format query_format_parse(const char *v, long n);

/* A 0/1 flag such as joined=: 0 when absent or "0", 1 for "1", -1 for any
 * other value. */
int query_flag(const char *v, long n);

#endif

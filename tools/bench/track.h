/* Per (subscriber, publisher) sequence tracking: the highest sequence seen
 * plus a 64-bit window below it, so duplicates and late (out-of-order)
 * arrivals are told apart in 16 bytes per pair, whatever the run length. */
#ifndef HB_TRACK_H
#define HB_TRACK_H

#include <stdint.h>

#define TRACK_WINDOW 64

typedef struct track_entry {
    uint64_t next;   /* highest sequence seen + 1; 0 = nothing yet */
    uint64_t bits;   /* bit i set: sequence next-1-i was received */
} track_entry;

typedef enum track_result {
    TRACK_NEW = 0,        /* first arrival, in order (gaps allowed: they are losses or come later) */
    TRACK_LATE,           /* first arrival, after a higher sequence: out of order */
    TRACK_DUP,            /* already received */
} track_result;

/* Records sequence seq. Arrivals more than TRACK_WINDOW below the highest
 * cannot be checked for duplication: they count as late first arrivals. */
static inline track_result track_note(track_entry *e, uint64_t seq)
{
    if (seq >= e->next) {
        uint64_t shift = seq - e->next + 1;
        e->bits = shift >= TRACK_WINDOW ? 0 : e->bits << shift;
        e->bits |= 1;
        e->next = seq + 1;
        return TRACK_NEW;
    }
    uint64_t d = e->next - 1 - seq;
    if (d >= TRACK_WINDOW)
        return TRACK_LATE;
    uint64_t bit = (uint64_t)1 << d;
    if (e->bits & bit)
        return TRACK_DUP;
    e->bits |= bit;
    return TRACK_LATE;
}

#endif

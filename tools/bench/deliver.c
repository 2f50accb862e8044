#include "deliver.h"

#include "bench.h"
#include "msg.h"
#include "pub.h"
#include "track.h"
#include "unwrap.h"

void deliver_on_message(void *ctx, uint8_t opcode, const uint8_t *head, uint64_t total)
{
    conn *c = ctx;
    worker *w = c->w;
    const bench_args *a = w->run->a;
    msg_head m;
    (void)opcode; /* a peer may relay as text: the magic decides */
    if (a->format != FMT_RAW) {
        /* an envelope: total becomes the payload's size */
        uint8_t payload[MSG_HEAD];
        size_t have = total < c->rd.head_want ? (size_t)total : c->rd.head_want;
        bool ok = a->format == FMT_JSON
                      ? unwrap_json(head, have, c->rd.tail, total, payload, &total)
                      : unwrap_msgpack(head, have, total, payload, &total);
        if (!ok || !msg_decode(payload, total, &m)) {
            if (w->measuring)
                STAT_ADD(w, invalid, 1);
            return;
        }
    } else if (!msg_decode(head, total, &m)) {
        if (w->measuring)
            STAT_ADD(w, invalid, 1);
        return;
    }
    /* only the publishers of this subscriber's group may reach it */
    if (m.publisher >= a->publishers || m.publisher % a->groups != c->group) {
        if (w->measuring)
            STAT_ADD(w, unexpected, 1);
        return;
    }
    track_result r = track_note(&c->track[m.publisher / a->groups], m.seq);
    /* warm-up messages occupy the window too, so they complete it as well */
    if (r != TRACK_DUP && a->saturate)
        sat_complete(w, m.publisher, m.seq);
    if (!(m.flags & MSG_FLAG_MEASURED) || !w->measuring)
        return;
    if (r == TRACK_DUP) {
        STAT_ADD(w, duplicated, 1);
        return;
    }
    if (r == TRACK_LATE)
        STAT_ADD(w, out_of_order, 1);
    STAT_ADD(w, delivered, 1);
    if (total != a->size)
        STAT_ADD(w, size_mismatch, 1);
    int64_t lat = w->now - (int64_t)m.sent_ns;
    hist_add(&w->lat, lat > 0 ? (uint64_t)lat : 0);
    atomic_store_explicit(&w->st.last_delivery_ns, w->now, memory_order_relaxed);
}

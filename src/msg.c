#include "msg.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bytes of every message alive (msg_footprint), for the memory view: one
 * count per message however many queues and histories share it. */
static _Atomic uint64_t msg_live_bytes;

uint64_t msg_memory(void) { return atomic_load_explicit(&msg_live_bytes, memory_order_relaxed); }

struct msg msg_deflate_building; /* only its address is used */

static void msg_count(size_t add, size_t sub)
{
    if (add > sub)
        atomic_fetch_add_explicit(&msg_live_bytes, add - sub, memory_order_relaxed);
    else if (sub > add)
        atomic_fetch_sub_explicit(&msg_live_bytes, sub - add, memory_order_relaxed);
}

msg *msg_alloc(size_t payload_cap)
{
    if (payload_cap > UINT32_MAX - WS_MAX_SERVER_HEADER)
        return NULL;
    msg *m = malloc(sizeof *m + WS_MAX_SERVER_HEADER + payload_cap);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->kind = MSG_DATA;
    m->opcode = 0;
    m->group_len = 0;
    m->group[0] = '\0';
    m->is_close = false;
    m->len = 0;
    m->cap = (uint32_t)payload_cap;
    m->payload_len = 0;
    m->publish_ns = 0;
    m->offset = 0;
    m->epoch = NULL;
    m->epoch_gen = 0;
    for (int i = 0; i < MSG_VARIANTS; i++)
        atomic_init(&m->variant[i], NULL);
    atomic_init(&m->deflated, NULL);
    m->data = msg_payload(m);
    msg_count(msg_footprint(m), 0);
    return m;
}

msg *msg_grow(msg *m, size_t payload_cap)
{
    if (payload_cap <= m->cap)
        return m;
    if (payload_cap > UINT32_MAX - WS_MAX_SERVER_HEADER)
        return NULL;
    size_t before = msg_footprint(m);
    msg *n = realloc(m, sizeof *m + WS_MAX_SERVER_HEADER + payload_cap);
    if (!n)
        return NULL;
    n->cap = (uint32_t)payload_cap;
    n->data = msg_payload(n);
    msg_count(msg_footprint(n), before);
    return n;
}

msg *msg_trim(msg *m, size_t payload_cap)
{
    if (payload_cap >= m->cap || payload_cap < m->payload_len)
        return m;
    size_t before = msg_footprint(m);
    msg *n = realloc(m, sizeof *m + WS_MAX_SERVER_HEADER + payload_cap);
    if (!n)
        return m; /* keeping the slack is harmless */
    n->cap = (uint32_t)payload_cap;
    n->data = msg_payload(n);
    msg_count(msg_footprint(n), before);
    return n;
}

void msg_finish(msg *m, msg_kind kind, uint8_t opcode, const char *group, size_t group_len)
{
    uint8_t hdr[WS_MAX_SERVER_HEADER];
    size_t h = ws_header_encode(hdr, true, opcode, m->payload_len);
    m->data = msg_payload(m) - h;
    memcpy(m->data, hdr, h);
    m->len = (uint32_t)(h + m->payload_len);
    m->kind = (uint8_t)kind;
    m->opcode = opcode;
    if (group_len > MSG_GROUP_MAX)
        group_len = MSG_GROUP_MAX;
    m->group_len = (uint8_t)group_len;
    if (group_len)
        memcpy(m->group, group, group_len);
    m->group[group_len] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    m->publish_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

msg *msg_new_frame(msg_kind kind, uint8_t opcode, const void *payload, size_t n)
{
    msg *m = msg_alloc(n);
    if (!m)
        return NULL;
    if (n)
        memcpy(msg_payload(m), payload, n);
    m->payload_len = (uint32_t)n;
    msg_finish(m, kind, opcode, NULL, 0);
    return m;
}

msg *msg_new_raw(const void *p, size_t n)
{
    msg *m = msg_alloc(n);
    if (!m)
        return NULL;
    memcpy(msg_payload(m), p, n);
    m->payload_len = (uint32_t)n;
    m->len = (uint32_t)n;
    m->kind = MSG_RAW;
    return m;
}

msg *msg_new_close(unsigned code, const char *reason)
{
    uint8_t f[2 + WS_MAX_CONTROL];
    size_t n;
    if (code == WS_CLOSE_NO_STATUS) { /* echo an empty close */
        f[0] = 0x80 | WS_OP_CLOSE;
        f[1] = 0;
        n = 2;
    } else {
        n = ws_close_frame(f, code, reason);
    }
    msg *m = msg_new_raw(f, n);
    if (m) {
        m->kind = MSG_CONTROL;
        m->opcode = WS_OP_CLOSE;
        m->is_close = true;
    }
    return m;
}

void msg_free(msg *m)
{
    for (int i = 0; i < MSG_VARIANTS; i++) {
        msg *v = atomic_load_explicit(&m->variant[i], memory_order_acquire);
        if (v)
            msg_unref(v);
    }
    msg *z = atomic_load_explicit(&m->deflated, memory_order_acquire);
    if (z && z != m && z != MSG_DEFLATE_BUILDING)
        msg_unref(z);
    msg_count(0, msg_footprint(m));
    free(m);
}

void msg_batch_flush(msg_batch *b)
{
    for (unsigned i = 0; i < MSG_BATCH_SLOTS; i++)
        if (b->m[i]) {
            msg_unref_n(b->m[i], b->n[i]);
            b->m[i] = NULL;
        }
}

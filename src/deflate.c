#include "deflate.h"

#include <libdeflate.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "metrics.h"

/* ---- memory accounting ----------------------------------------------------
 * Both libraries take allocator hooks; a small header remembers each block's
 * size so frees can be counted. */

static _Atomic uint64_t deflate_bytes;

uint64_t deflate_memory(void) { return atomic_load_explicit(&deflate_bytes, memory_order_relaxed); }

#define DEFLATE_HDR 16 /* keeps the blocks 16-byte aligned */

static void *deflate_malloc(size_t n)
{
    if (n > SIZE_MAX - DEFLATE_HDR)
        return NULL;
    uint8_t *p = malloc(n + DEFLATE_HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    atomic_fetch_add_explicit(&deflate_bytes, n + DEFLATE_HDR, memory_order_relaxed);
    return p + DEFLATE_HDR;
}

static void deflate_free(void *q)
{
    if (!q)
        return;
    uint8_t *p = (uint8_t *)q - DEFLATE_HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    atomic_fetch_sub_explicit(&deflate_bytes, n + DEFLATE_HDR, memory_order_relaxed);
    free(p);
}

static void *deflate_zalloc(void *opaque, unsigned items, unsigned size)
{
    (void)opaque;
    if (size && items > SIZE_MAX / size)
        return NULL;
    return deflate_malloc((size_t)items * size);
}

static void deflate_zfree(void *opaque, void *p)
{
    (void)opaque;
    deflate_free(p);
}

/* ---- compress once ---------------------------------------------------- */

static pthread_once_t deflate_hooks_once = PTHREAD_ONCE_INIT;
static _Thread_local struct libdeflate_compressor *deflate_compressor;

static void deflate_hooks(void) { libdeflate_set_memory_allocator(deflate_malloc, deflate_free); }

void deflate_thread_done(void)
{
    if (deflate_compressor) {
        libdeflate_free_compressor(deflate_compressor);
        deflate_compressor = NULL;
    }
}

/* RFC 7692 7.2.1 asks for the data to end with an empty stored block whose
 * last 4 bytes (00 00 ff ff) are then removed. libdeflate ends a buffer with
 * a final block (BFINAL=1, allowed by 7.2.3.4); the empty stored block after
 * it leaves its first byte, 0x00. Receivers append 00 00 ff ff and inflate. */
static msg *deflate_build(const msg *m, size_t payload_off)
{
    if (!deflate_compressor) {
        pthread_once(&deflate_hooks_once, deflate_hooks);
        if (!(deflate_compressor = libdeflate_alloc_compressor(DEFLATE_LEVEL)))
            return NULL;
    }
    size_t n = m->payload_len;
    msg *z = msg_alloc(n); /* only worth sending when smaller than the payload */
    if (!z)
        return NULL;
    size_t zn = libdeflate_deflate_compress(deflate_compressor, m->data + payload_off, n,
                                            msg_payload(z), n - 1);
    if (zn == 0) { /* did not fit in n - 1 bytes: no gain */
        msg_unref(z);
        return (msg *)m;
    }
    msg_payload(z)[zn] = 0x00;
    z->payload_len = (uint32_t)(zn + 1);
    z = msg_trim(z, z->payload_len);
    msg_finish(z, MSG_DATA, m->opcode, m->group, m->group_len);
    z->data[0] |= 0x40; /* RSV1: this message is compressed */
    z->publish_ns = m->publish_ns;
    z->offset = m->offset;
    z->epoch = m->epoch;
    z->epoch_gen = m->epoch_gen;
    return z;
}

msg *deflate_variant(msg *m, size_t min_size, struct metrics *mt)
{
    msg *v = atomic_load_explicit(&m->deflated, memory_order_acquire);
    if (v == MSG_DEFLATE_BUILDING)
        goto busy;
    if (v)
        return v;
    if (m->payload_len < min_size || m->payload_len < 2)
        return m;
    /* Claim the build before compressing: workers fanning out the same
     * message at once would otherwise each compress it and all but one throw
     * their copy away. One that finds the claim sends this delivery plain
     * (RSV1 clear is always legal) rather than compress again or wait. */
    if (!atomic_compare_exchange_strong_explicit(&m->deflated, &v, MSG_DEFLATE_BUILDING,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        if (v == MSG_DEFLATE_BUILDING)
            goto busy;
        return v;
    }
    /* Our caller holds m, so it cannot be freed while the claim is ours
     * (msg_free would skip the marker anyway); only we replace the marker. */
    msg *built = deflate_build(m, m->len - m->payload_len);
    atomic_store_explicit(&m->deflated, built, memory_order_release);
    if (!built)
        return m; /* out of memory: plain delivery now, another try later */
    if (mt && built == m) {
        METRIC_INC(mt, deflate_not_smaller); /* tried, kept plain: no compression to count */
    } else if (mt) {
        METRIC_INC(mt, deflate_messages);
        METRIC_ADD(mt, deflate_bytes_in, m->payload_len);
        METRIC_ADD(mt, deflate_bytes_out, built->payload_len);
    }
    return built;
busy:
    if (mt)
        METRIC_INC(mt, deflate_busy);
    return m;
}

/* ---- inflate ------------------------------------------------------------- */

struct deflate_inflater {
    z_stream zs;
    uint64_t msg_out;      /* inflated bytes of the current message */
    uint64_t msg_in;       /* compressed bytes of the current message */
    bool fresh;            /* reset after every message */
    bool ended;            /* the stream ended (BFINAL) before the message did */
    uint8_t trail_n;       /* bytes after the stream's end (payload rest and tail) */
    uint8_t trail[5];      /* ...which may only be [00] 00 00 ff ff */
};

/* Keeps what follows a final block, for deflate_trail_ok; more than an empty
 * stored block's 5 bytes can never be right. */
static bool deflate_trail(deflate_inflater *z, const uint8_t *p, size_t n)
{
    if (n > sizeof z->trail - z->trail_n)
        return false;
    if (n) /* p is NULL for a message's end */
        memcpy(z->trail + z->trail_n, p, n);
    z->trail_n = (uint8_t)(z->trail_n + n);
    return true;
}

/* After a final block RFC 7692 7.2.3.4 allows only the empty stored block
 * whose 00 00 ff ff the sender removed (and we appended): its header byte
 * 00 may precede the tail, or be left out with the block. Anything else is
 * data the sender thinks we read: refused, never silently dropped. */
static bool deflate_trail_ok(const deflate_inflater *z)
{
    static const uint8_t block[5] = {0x00, 0x00, 0x00, 0xff, 0xff};
    return (z->trail_n == 5 && memcmp(z->trail, block, 5) == 0) ||
           (z->trail_n == 4 && memcmp(z->trail, block + 1, 4) == 0);
}

deflate_inflater *deflate_inflater_new(int window_bits, bool fresh_each_message)
{
    deflate_inflater *z = deflate_malloc(sizeof *z);
    if (!z)
        return NULL;
    memset(z, 0, sizeof *z);
    z->zs.zalloc = deflate_zalloc;
    z->zs.zfree = deflate_zfree;
    z->fresh = fresh_each_message;
    /* zlib's deflate cannot use an 8-bit window and silently uses 9: a client
     * built on it that announces 8 may reach back 512 bytes. */
    if (window_bits < 9)
        window_bits = 9;
    if (window_bits > 15)
        window_bits = 15;
    if (inflateInit2(&z->zs, -window_bits) != Z_OK) {
        deflate_free(z);
        return NULL;
    }
    return z;
}

void deflate_inflater_free(deflate_inflater *z)
{
    if (!z)
        return;
    inflateEnd(&z->zs);
    deflate_free(z);
}

size_t deflate_inflater_footprint(const deflate_inflater *z)
{
    (void)z;
    return sizeof *z; /* plus zlib's state and window, counted by the hooks */
}

static deflate_result deflate_run(deflate_inflater *z, const uint8_t *in, size_t n,
                                  uint64_t limit, deflate_sink sink, void *arg)
{
    uint8_t out[DEFLATE_CHUNK];
    if (z->ended)
        return deflate_trail(z, in, n) ? DEFLATE_OK : DEFLATE_CORRUPT;
    while (n > 0 && !z->ended) {
        unsigned take = n > (1u << 30) ? (1u << 30) : (unsigned)n; /* zlib counts in 32 bits */
        z->zs.next_in = (Bytef *)(uintptr_t)in;
        z->zs.avail_in = take;
        for (;;) {
            z->zs.next_out = out;
            z->zs.avail_out = sizeof out;
            int rc = inflate(&z->zs, Z_SYNC_FLUSH);
            size_t got = sizeof out - z->zs.avail_out;
            if (rc == Z_MEM_ERROR)
                return DEFLATE_NOMEM;
            if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
                return DEFLATE_CORRUPT;
            /* Checked before the sink sees (and a publisher stores) a byte
             * past the limit: a bomb costs at most one chunk. */
            if (got > limit || z->msg_out > limit - got)
                return DEFLATE_TOO_BIG;
            z->msg_out += got;
            if (got && !sink(arg, out, got))
                return DEFLATE_STOPPED;
            if (rc == Z_STREAM_END) {
                z->ended = true; /* what follows a final block is checked at the end */
                if (!deflate_trail(z, z->zs.next_in, z->zs.avail_in + (n - take)))
                    return DEFLATE_CORRUPT;
                return DEFLATE_OK;
            }
            if (rc == Z_BUF_ERROR || (z->zs.avail_in == 0 && z->zs.avail_out > 0))
                break; /* input used up and all output handed over */
        }
        in += take;
        n -= take;
    }
    return DEFLATE_OK;
}

deflate_result deflate_inflate(deflate_inflater *z, const uint8_t *in, size_t n, bool last,
                               uint64_t limit, deflate_sink sink, void *arg)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    z->msg_in += n;
    if (last && z->msg_in == 0)
        return DEFLATE_OK; /* RSV1 on an empty payload: an empty message, nothing to inflate */
    deflate_result r = deflate_run(z, in, n, limit, sink, arg);
    if (r != DEFLATE_OK || !last)
        return r;
    r = deflate_run(z, tail, sizeof tail, limit, sink, arg);
    if (r != DEFLATE_OK)
        return r;
    z->msg_out = 0;
    z->msg_in = 0;
    /* A kept context needs the message to end on a block boundary (zlib's
     * data_type 128: waiting for a block header), else the next message
     * would be read as the rest of this block. */
    if (!z->fresh && !z->ended && !(z->zs.data_type & 128))
        return DEFLATE_CORRUPT;
    if (z->ended && !deflate_trail_ok(z))
        return DEFLATE_CORRUPT;
    if (z->fresh || z->ended) {
        /* A stream that ended keeps no usable context either. */
        z->ended = false;
        z->trail_n = 0;
        if (inflateReset(&z->zs) != Z_OK)
            return DEFLATE_CORRUPT;
    }
    return DEFLATE_OK;
}

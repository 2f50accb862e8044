/* An independent reading of an SSE event stream (WHATWG HTML 9.2.6), for the
 * tests of src/sse.c: it follows the spec's field rules line by line rather
 * than sharing anything with the encoder. Parses one event from s[0..n) and
 * returns its data buffer (the spec's final LF removed), its event type and
 * its id; false when the bytes are not exactly one complete event. */
#ifndef HERALD_REF_SSE_H
#define HERALD_REF_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct ref_sse_event {
    uint8_t *data; /* caller's buffer, n bytes suffice */
    size_t data_len;
    char event[64];
    char id[8192];
    bool has_id;
} ref_sse_event;

static bool ref_sse_parse(const uint8_t *s, size_t n, ref_sse_event *ev)
{
    size_t i = 0, dl = 0;
    ev->event[0] = '\0';
    ev->has_id = false;
    bool any_data = false;
    while (i < n) {
        size_t ls = i;
        while (i < n && s[i] != '\n' && s[i] != '\r')
            i++;
        if (i == n)
            return false; /* a line must end */
        size_t le = i;
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
            i++;
        i++;
        if (le == ls) { /* blank line: dispatch; it must be the last byte */
            if (i != n)
                return false;
            if (any_data && dl > 0)
                dl--; /* the final LF */
            ev->data_len = dl;
            return true;
        }
        if (s[ls] == ':')
            continue; /* comment */
        size_t c = ls;
        while (c < le && s[c] != ':')
            c++;
        size_t vs = c < le ? c + 1 : le;
        if (vs < le && s[vs] == ' ')
            vs++;
        size_t fl = c - ls, vl = le - vs;
        if (fl == 4 && !memcmp(s + ls, "data", 4)) {
            memcpy(ev->data + dl, s + vs, vl);
            dl += vl;
            ev->data[dl++] = '\n';
            any_data = true;
        } else if (fl == 5 && !memcmp(s + ls, "event", 5) && vl < sizeof ev->event) {
            memcpy(ev->event, s + vs, vl);
            ev->event[vl] = '\0';
        } else if (fl == 2 && !memcmp(s + ls, "id", 2) && vl < sizeof ev->id) {
            memcpy(ev->id, s + vs, vl);
            ev->id[vl] = '\0';
            ev->has_id = true;
        }
    }
    return false;
}

#endif

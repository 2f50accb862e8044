#include "pmd.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 7230 token characters. */
static bool pmd_tchar(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

typedef struct pmd_cursor {
    const char *p, *e;
} pmd_cursor;

static void pmd_ows(pmd_cursor *c)
{
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static size_t pmd_token(pmd_cursor *c, const char **start)
{
    *start = c->p;
    while (c->p < c->e && pmd_tchar((unsigned char)*c->p))
        c->p++;
    return (size_t)(c->p - *start);
}

/* A parameter value: a token or a quoted string, unescaped into v (values
 * longer than cap-1 are marked too long with SIZE_MAX). Returns false on bad
 * syntax. */
static bool pmd_value(pmd_cursor *c, char *v, size_t cap, size_t *len)
{
    size_t n = 0;
    bool too_long = false;
    if (c->p < c->e && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->e)
                return false;
            unsigned char ch = (unsigned char)*c->p++;
            if (ch == '"')
                break;
            if (ch == '\\') {
                if (c->p >= c->e)
                    return false;
                ch = (unsigned char)*c->p++;
            }
            if (n + 1 < cap)
                v[n++] = (char)ch;
            else
                too_long = true;
        }
    } else {
        const char *s;
        size_t t = pmd_token(c, &s);
        if (t == 0)
            return false;
        if (t >= cap)
            too_long = true;
        else
            memcpy(v, s, n = t);
    }
    v[n] = '\0';
    *len = too_long ? SIZE_MAX : n;
    return true;
}

/* "8".."15", decimal without leading zeros (RFC 7692 7.1.2). */
static int pmd_window_bits(const char *v, size_t n)
{
    if (n == 1 && v[0] == '8')
        return 8;
    if (n == 1 && v[0] == '9')
        return 9;
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + (v[1] - '0');
    return -1;
}

enum { PMD_SNCT = 1, PMD_CNCT = 2, PMD_SMWB = 4, PMD_CMWB = 8 };

typedef struct pmd_offer {
    bool deflate;      /* the extension is permessage-deflate */
    bool usable;       /* ...and herald can honour every parameter */
    unsigned seen;     /* PMD_* parameters present */
    int server_bits;   /* -1: not given */
    int client_bits;   /* -1: not given (or given without a value) */
} pmd_offer;

/* Applies one parameter to the offer; false makes the offer unusable. */
static bool pmd_param(pmd_offer *o, const char *name, size_t nl, bool has_value, const char *v,
                      size_t vl)
{
    static const char *const names[] = {"server_no_context_takeover", "client_no_context_takeover",
                                        "server_max_window_bits", "client_max_window_bits"};
    for (unsigned i = 0; i < 4; i++) {
        if (strlen(names[i]) != nl || strncasecmp(names[i], name, nl) != 0)
            continue;
        unsigned bit = 1u << i;
        if (o->seen & bit)
            return false; /* repeated: RFC 7692 7.1 says decline */
        o->seen |= bit;
        if (bit == PMD_SNCT || bit == PMD_CNCT)
            return !has_value;
        if (!has_value)
            return bit == PMD_CMWB; /* client_max_window_bits alone: the client may take a hint */
        int b = pmd_window_bits(v, vl);
        if (b < 0)
            return false;
        if (bit == PMD_SMWB)
            o->server_bits = b;
        else
            o->client_bits = b;
        return true;
    }
    return false; /* unknown parameter: never accepted as-is */
}

/* Parses one offer from the cursor up to the next top-level comma (or the
 * end). Returns false on a syntax error (the cursor is then somewhere inside
 * the offer; the caller skips to the next comma). */
static bool pmd_parse_offer(pmd_cursor *c, pmd_offer *o)
{
    *o = (pmd_offer){.usable = true, .server_bits = -1, .client_bits = -1};
    pmd_ows(c);
    const char *name;
    size_t nl = pmd_token(c, &name);
    if (nl == 0)
        return false;
    o->deflate = nl == 18 && strncasecmp(name, "permessage-deflate", 18) == 0;
    for (;;) {
        pmd_ows(c);
        if (c->p >= c->e || *c->p == ',')
            return true;
        if (*c->p != ';')
            return false;
        c->p++;
        pmd_ows(c);
        const char *pn;
        size_t pl = pmd_token(c, &pn);
        if (pl == 0)
            return false;
        pmd_ows(c);
        char v[8];
        size_t vl = 0;
        bool has_value = c->p < c->e && *c->p == '=';
        if (has_value) {
            c->p++;
            pmd_ows(c);
            if (!pmd_value(c, v, sizeof v, &vl))
                return false;
        }
        if (o->usable && !pmd_param(o, pn, pl, has_value, v, vl))
            o->usable = false;
    }
}

/* Moves past the next comma outside a quoted string (or to the end). */
static void pmd_skip_offer(pmd_cursor *c)
{
    bool quoted = false;
    while (c->p < c->e) {
        char ch = *c->p++;
        if (quoted && ch == '\\' && c->p < c->e)
            c->p++;
        else if (ch == '"')
            quoted = !quoted;
        else if (ch == ',' && !quoted)
            return;
    }
}

/* Appends to the answer; false when it would not fit (or snprintf failed). */
static bool pmd_put(char out[PMD_RESPONSE_MAX], size_t *n, const char *fmt, int v)
{
    int r = snprintf(out + *n, PMD_RESPONSE_MAX - *n, fmt, v);
    if (r < 0 || (size_t)r >= PMD_RESPONSE_MAX - *n)
        return false;
    *n += (size_t)r;
    return true;
}

/* False (the offer declined) when the answer does not fit out. */
static bool pmd_accept(const pmd_offer *o, pmd_params *p, char out[PMD_RESPONSE_MAX])
{
    /* Always asked of the client (RFC 7692 7.1.1.2 lets the server add it):
     * a subscriber's inflater can then be freed after each message instead
     * of keeping ~40 KiB of window for as long as it stays connected. */
    p->client_no_context_takeover = true;
    p->client_window_bits = (uint8_t)(o->client_bits > 0 ? o->client_bits : 15);
    p->server_window_bits = (uint8_t)(o->server_bits > 0 ? o->server_bits : 15);
    size_t n = 0;
    bool ok = pmd_put(out, &n, "permessage-deflate; server_no_context_takeover", 0);
    if (ok)
        ok = pmd_put(out, &n, "; client_no_context_takeover", 0);
    /* Echoing the limits the client asked for: the server one is a promise
     * we keep (see pmd_params), the client one lets it use a smaller window
     * and us allocate a smaller inflate window. */
    if (ok && o->server_bits > 0)
        ok = pmd_put(out, &n, "; server_max_window_bits=%d", o->server_bits);
    if (ok && o->client_bits > 0)
        ok = pmd_put(out, &n, "; client_max_window_bits=%d", o->client_bits);
    if (!ok)
        out[0] = '\0';
    return ok;
}

bool pmd_negotiate(const http_str *values, size_t n, pmd_params *p, char out[PMD_RESPONSE_MAX])
{
    for (size_t i = 0; i < n; i++) {
        pmd_cursor c = {values[i].p, values[i].p + values[i].n};
        while (c.p < c.e) {
            pmd_offer o;
            bool ok = pmd_parse_offer(&c, &o);
            if (ok && o.deflate && o.usable && pmd_accept(&o, p, out))
                return true;
            pmd_skip_offer(&c);
        }
    }
    return false;
}

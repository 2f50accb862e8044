/* Publish keys, subscriber JWTs (HS256/HS384/HS512) and Origin allow-lists.
 *
 * jwt_verify works in a fixed order so that nothing an attacker controls is
 * trusted before it has to be:
 *   1. size bound (JWT_MAX_TOKEN bytes) and the three-part structure;
 *   2. base64url decoding of the three parts (strict: RFC 7515 alphabet, no
 *      '=' padding, no non-zero trailing bits);
 *   3. the header: a JSON object whose alg is exactly HS256/HS384/HS512
 *      (everything else, "none" included, is AUTH_BAD_ALG), typ absent or
 *      "JWT", and no "crit" (we implement no extension);
 *   4. the HMAC over "header.payload" against every secret, each compared
 *      with CRYPTO_memcmp (all secrets are tried, no early exit);
 *   5. only then the claims JSON: exp, nbf, sub, groups.
 * Decoded parts live in stack buffers; jansson allocates while parsing and
 * every json_t is released before returning. No mutable globals, no I/O. */
#include "auth.h"
#include "names.h"

#include <math.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Tokens longer than this are rejected before any decoding. */
#define JWT_MAX_TOKEN 8192
/* A base64url part of at most JWT_MAX_TOKEN characters decodes to at most
 * 3/4 of that. */
#define JWT_MAX_DECODED (JWT_MAX_TOKEN / 4 * 3)

const char *auth_result_name(auth_result r)
{
    switch (r) {
    case AUTH_OK: return "ok";
    case AUTH_MISSING: return "missing";
    case AUTH_MALFORMED: return "malformed";
    case AUTH_BAD_ALG: return "bad_alg";
    case AUTH_BAD_SIGNATURE: return "bad_signature";
    case AUTH_NO_EXP: return "no_exp";
    case AUTH_EXPIRED: return "expired";
    case AUTH_NOT_YET_VALID: return "not_yet_valid";
    case AUTH_FORBIDDEN_GROUP: return "forbidden_group";
    }
    return "unknown";
}

/* Lengths are not secret (the time depends on them only). An empty key
 * never matches: an empty configured key must not let "Bearer " through. */
bool auth_key_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen || alen == 0 || !a || !b)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool ascii_case_equal(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    return true;
}

/* "Bearer" 1*SP token, scheme case-insensitive (RFC 9110 11.1, RFC 6750 2.1).
 * Leading and trailing SP/HTAB (optional whitespace around a field value) are
 * ignored; the token must be non-empty and contain no whitespace or control
 * character. */
bool auth_bearer(const char *value, size_t len, const char **token, size_t *token_len)
{
    if (!value)
        return false;
    const char *p = value, *e = value + len;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if ((size_t)(e - p) < 7 || !ascii_case_equal(p, "bearer", 6) || p[6] != ' ')
        return false;
    p += 6;
    while (p < e && *p == ' ')
        p++;
    if (p == e)
        return false;
    for (const char *q = p; q < e; q++) {
        unsigned char c = (unsigned char)*q;
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    if (token)
        *token = p;
    if (token_len)
        *token_len = (size_t)(e - p);
    return true;
}

bool auth_origin_allowed(const char *origin, size_t len, const char *const *allowed, size_t n)
{
    if (n == 0)
        return true;
    if (!allowed)
        return false;
    for (size_t i = 0; i < n; i++) {
        const char *a = allowed[i];
        if (!a)
            continue;
        size_t alen = strlen(a);
        if (alen == 1 && a[0] == '*')
            return true;
        if (origin && alen == len && ascii_case_equal(origin, a, len))
            return true;
    }
    return false;
}

/* ---- base64url ---------------------------------------------------------- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict RFC 7515 base64url: only [A-Za-z0-9_-], no '=' padding, a length
 * that is not 1 mod 4, and zero unused bits in the last character (so every
 * byte string has exactly one accepted encoding). Returns the decoded length
 * or -1; out must hold in_len / 4 * 3 + 2 bytes. */
static long b64url_decode(const char *in, size_t in_len, unsigned char *out)
{
    if (in_len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < in_len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* leftover bits (2 or 4) must be zero */
        return -1;
    return (long)o;
}

/* ---- JWT ---------------------------------------------------------------- */

/* A groups entry: a name, "prefix.*" with a valid prefix, or "*". */
static bool group_pattern_valid(const char *s, size_t n)
{
    if (n == 1 && s[0] == '*')
        return true;
    if (n >= 3 && s[n - 2] == '.' && s[n - 1] == '*')
        return group_name_valid(s, n - 2);
    return group_name_valid(s, n);
}

static bool str_equal(const json_t *j, const char *lit)
{
    size_t n = strlen(lit);
    return json_string_length(j) == n && memcmp(json_string_value(j), lit, n) == 0;
}

/* Reads a NumericDate (JSON integer or real) as whole seconds. Reals are
 * rounded towards the stricter side: down for exp, up for nbf. */
static bool numeric_date(const json_t *j, bool round_up, int64_t *out)
{
    if (json_is_integer(j)) {
        *out = (int64_t)json_integer_value(j);
        return true;
    }
    if (!json_is_real(j))
        return false;
    double v = json_real_value(j);
    /* +-2^62: far outside any meaningful date, and exactly convertible. */
    if (!isfinite(v) || v < -4611686018427387904.0 || v > 4611686018427387904.0)
        return false;
    int64_t i = (int64_t)v; /* truncates towards zero */
    if (round_up && (double)i < v)
        i++;
    else if (!round_up && (double)i > v)
        i--;
    *out = i;
    return true;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* Copies at most 128 bytes of s, without splitting a UTF-8 sequence. */
static void copy_sub(char dst[129], const char *s, size_t n)
{
    if (n > 128) {
        n = 128;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static auth_result read_header(const unsigned char *buf, size_t n, const EVP_MD **md)
{
    json_error_t err;
    json_t *h = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &err);
    if (!h)
        return AUTH_MALFORMED;
    auth_result r = AUTH_OK;
    if (!json_is_object(h)) {
        r = AUTH_MALFORMED;
        goto out;
    }
    const json_t *alg = json_object_get(h, "alg");
    if (!json_is_string(alg)) {
        r = AUTH_BAD_ALG;
        goto out;
    }
    if (str_equal(alg, "HS256"))
        *md = EVP_sha256();
    else if (str_equal(alg, "HS384"))
        *md = EVP_sha384();
    else if (str_equal(alg, "HS512"))
        *md = EVP_sha512();
    else {
        r = AUTH_BAD_ALG;
        goto out;
    }
    /* typ is a media type, hence case-insensitive (RFC 7515 4.1.9). */
    const json_t *typ = json_object_get(h, "typ");
    if (typ && !(json_is_string(typ) && json_string_length(typ) == 3 &&
                 ascii_case_equal(json_string_value(typ), "JWT", 3))) {
        r = AUTH_MALFORMED;
        goto out;
    }
    /* Critical extensions must be understood (RFC 7515 4.1.11): we know none. */
    if (json_object_get(h, "crit"))
        r = AUTH_MALFORMED;
out:
    json_decref(h);
    return r;
}

static bool signature_matches(const EVP_MD *md, const char *signed_part, size_t signed_len,
                              const unsigned char *sig, size_t sig_len,
                              const char *const *secrets, const size_t *secret_lens,
                              size_t nsecrets)
{
    size_t md_len = (size_t)EVP_MD_get_size(md);
    if (sig_len != md_len || !secrets || !secret_lens)
        return false;
    int match = 0;
    for (size_t i = 0; i < nsecrets; i++) {
        /* An empty secret would let anyone sign: it never matches. */
        if (!secrets[i] || secret_lens[i] == 0 || secret_lens[i] > 0x7fffffff)
            continue;
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        if (!HMAC(md, secrets[i], (int)secret_lens[i], (const unsigned char *)signed_part,
                  signed_len, mac, &mac_len))
            continue;
        if (mac_len == md_len && CRYPTO_memcmp(mac, sig, md_len) == 0)
            match = 1;
        OPENSSL_cleanse(mac, sizeof mac);
    }
    return match != 0;
}

static auth_result read_groups(const json_t *g, jwt_claims *out)
{
    if (!json_is_array(g))
        return AUTH_MALFORMED;
    size_t n = json_array_size(g);
    if (n > JWT_MAX_GROUPS)
        return AUTH_MALFORMED;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(g, i);
        if (!json_is_string(e))
            return AUTH_MALFORMED;
        const char *s = json_string_value(e);
        size_t len = json_string_length(e);
        if (!group_pattern_valid(s, len) || len > JWT_GROUPS_BUF - used)
            return AUTH_MALFORMED;
        memcpy(out->gbuf + used, s, len);
        out->goff[i] = (uint16_t)used;
        out->glen[i] = (uint8_t)len; /* <= 130 */
        used += len;
    }
    out->ngroups = n;
    out->has_groups = true;
    return AUTH_OK;
}

static auth_result read_claims(const unsigned char *buf, size_t n, int64_t now, int64_t leeway,
                               jwt_claims *out)
{
    json_error_t err;
    json_t *c = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &err);
    if (!c)
        return AUTH_MALFORMED;
    auth_result r = AUTH_MALFORMED;
    if (!json_is_object(c))
        goto out;

    const json_t *exp = json_object_get(c, "exp");
    if (exp && !numeric_date(exp, false, &out->exp))
        goto out;
    const json_t *nbf = json_object_get(c, "nbf");
    if (nbf) {
        if (!numeric_date(nbf, true, &out->nbf))
            goto out;
        out->has_nbf = true;
    }
    const json_t *sub = json_object_get(c, "sub");
    if (sub) {
        if (!json_is_string(sub))
            goto out;
        copy_sub(out->sub, json_string_value(sub), json_string_length(sub));
    }
    const json_t *groups = json_object_get(c, "groups");
    if (groups && read_groups(groups, out) != AUTH_OK)
        goto out;

    if (!exp) {
        r = AUTH_NO_EXP;
        goto out;
    }
    if (leeway < 0)
        leeway = 0;
    if (now > sat_add(out->exp, leeway)) {
        r = AUTH_EXPIRED;
        goto out;
    }
    if (out->has_nbf && sat_add(now, leeway) < out->nbf) {
        r = AUTH_NOT_YET_VALID;
        goto out;
    }
    r = AUTH_OK;
out:
    json_decref(c);
    return r;
}

auth_result jwt_verify(const char *token, size_t len, const char *const *secrets,
                       const size_t *secret_lens, size_t nsecrets, int64_t now, int64_t leeway,
                       jwt_claims *out)
{
    jwt_claims scratch;
    if (!out)
        out = &scratch;
    memset(out, 0, sizeof *out);
    if (!token || len == 0)
        return AUTH_MISSING;
    if (len > JWT_MAX_TOKEN)
        return AUTH_MALFORMED;

    const char *dot1 = memchr(token, '.', len);
    if (!dot1)
        return AUTH_MALFORMED;
    const char *end = token + len;
    const char *dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
        return AUTH_MALFORMED;

    unsigned char hdr[JWT_MAX_DECODED + 2], pay[JWT_MAX_DECODED + 2], sig[JWT_MAX_DECODED + 2];
    long hlen = b64url_decode(token, (size_t)(dot1 - token), hdr);
    long plen = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), pay);
    long slen = b64url_decode(dot2 + 1, (size_t)(end - dot2 - 1), sig);
    if (hlen <= 0 || plen <= 0 || slen < 0)
        return AUTH_MALFORMED;

    const EVP_MD *md = NULL;
    auth_result r = read_header(hdr, (size_t)hlen, &md);
    if (r != AUTH_OK)
        return r;
    if (!signature_matches(md, token, (size_t)(dot2 - token), sig, (size_t)slen, secrets,
                           secret_lens, nsecrets))
        return AUTH_BAD_SIGNATURE;

    r = read_claims(pay, (size_t)plen, now, leeway, out);
    if (r != AUTH_OK && r != AUTH_EXPIRED && r != AUTH_NOT_YET_VALID && r != AUTH_NO_EXP)
        memset(out, 0, sizeof *out);
    return r;
}

/* Exact entries match byte for byte; "prefix.*" matches every group that
 * starts with "prefix." and has at least one more byte (so "chat.*" matches
 * "chat.room1" and "chat.a.b", but neither "chat" nor "chat."); "*" matches
 * every group. Invalid group names never match. */
bool jwt_group_allowed(const jwt_claims *c, const char *group, size_t len)
{
    if (!c || !c->has_groups || !group || !group_name_valid(group, len))
        return false;
    size_t n = c->ngroups < JWT_MAX_GROUPS ? c->ngroups : JWT_MAX_GROUPS;
    for (size_t i = 0; i < n; i++) {
        const char *e = c->gbuf + c->goff[i];
        size_t elen = c->glen[i];
        if ((size_t)c->goff[i] + elen > JWT_GROUPS_BUF)
            continue;
        if (elen == 1 && e[0] == '*')
            return true;
        if (elen >= 3 && e[elen - 2] == '.' && e[elen - 1] == '*') {
            size_t plen = elen - 1; /* "prefix." */
            if (len > plen && memcmp(group, e, plen) == 0)
                return true;
        } else if (elen == len && memcmp(group, e, len) == 0) {
            return true;
        }
    }
    return false;
}

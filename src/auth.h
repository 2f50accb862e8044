/* Authentication and authorisation checks: publish keys, subscriber JWTs
 * (HS256/HS384/HS512), Origin allow-lists. Pure: no I/O; the only
 * allocations are jansson's while parsing the claims JSON, freed before
 * returning. */
#ifndef HERALD_AUTH_H
#define HERALD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum auth_result {
    AUTH_OK = 0,
    AUTH_MISSING,          /* no token */
    AUTH_MALFORMED,        /* not three base64url parts, bad JSON, wrong claim types */
    AUTH_BAD_ALG,          /* alg missing, "none", RS*, ES*, PS*, anything but HS256/384/512 */
    AUTH_BAD_SIGNATURE,
    AUTH_NO_EXP,           /* exp claim missing */
    AUTH_EXPIRED,          /* now > exp + leeway */
    AUTH_NOT_YET_VALID,    /* now + leeway < nbf */
    AUTH_FORBIDDEN_GROUP,  /* a requested group is outside the token's groups claim */
} auth_result;

/* Short stable name for metrics labels and logs ("bad_signature", ...). */
const char *auth_result_name(auth_result r);

/* Constant-time comparison (time depends only on the lengths). */
bool auth_key_equal(const char *a, size_t alen, const char *b, size_t blen);

/* Extracts the token of an "Authorization: Bearer TOKEN" header value
 * (scheme case-insensitive). False when the value is not a Bearer credential. */
bool auth_bearer(const char *value, size_t len, const char **token, size_t *token_len);

#define JWT_MAX_GROUPS 64
#define JWT_GROUPS_BUF 4096

typedef struct jwt_claims {
    int64_t exp;
    int64_t nbf;      /* 0 when absent */
    bool has_nbf;
    char sub[129];    /* "" when absent; truncated to 128 bytes */
    bool has_groups;  /* false: the token grants no group (broadcasts only) */
    size_t ngroups;
    uint16_t goff[JWT_MAX_GROUPS];
    uint8_t glen[JWT_MAX_GROUPS];
    char gbuf[JWT_GROUPS_BUF];
} jwt_claims;

/* Verifies a compact JWS: header alg must be HS256, HS384 or HS512 (typ, if
 * present, must be "JWT"); the signature is checked with HMAC (OpenSSL)
 * against each of the nsecrets secrets (several allow rotation), compared in
 * constant time; then exp (required, number), nbf (optional), sub (optional
 * string) and groups (optional array of strings, each a group name or a
 * "prefix.*" pattern; more than JWT_MAX_GROUPS or JWT_GROUPS_BUF bytes →
 * AUTH_MALFORMED) are read with jansson. now and leeway are in seconds. */
auth_result jwt_verify(const char *token, size_t len, const char *const *secrets,
                       const size_t *secret_lens, size_t nsecrets, int64_t now, int64_t leeway,
                       jwt_claims *out);

/* True when the claims allow joining group: an exact entry, a "prefix.*"
 * entry (matches any group starting with "prefix."), or "*" (everything). */
bool jwt_group_allowed(const jwt_claims *c, const char *group, size_t len);

/* Origin check against an allow-list of exact origins (scheme://host[:port],
 * compared case-insensitively) or "*". An empty list allows everything. */
bool auth_origin_allowed(const char *origin, size_t len, const char *const *allowed, size_t n);

#endif

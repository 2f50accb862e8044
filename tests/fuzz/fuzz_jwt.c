/* libFuzzer target: JWT verification and the other checks of src/auth.h.
 *
 * Input: byte 0 selects the mode, the rest is the body.
 *  - (byte0 & 3) == 0: the body is a compact token, verified as is against
 *    two fixed secrets (seeds hold tokens signed with them);
 *  - (byte0 & 3) == 1/2/3: the body is HEADER_JSON '\0' CLAIMS_JSON; the
 *    target base64url-encodes both and signs them with HMAC-SHA256/384/512
 *    and the first secret, so that the fuzzer gets past the signature into
 *    the header and claims handling.
 * The token is verified from an exact-size heap copy (ASan catches any read
 * past it) and checked:
 *  - the result is a known auth_result with a name;
 *  - on AUTH_OK: exp/nbf respect now and the leeway, sub is NUL-terminated
 *    within 128 bytes, every groups entry lies inside gbuf, is a valid name,
 *    "prefix.*" or "*", and an exact entry allows itself;
 *  - a token accepted with the secrets is refused with other secrets
 *    (AUTH_BAD_SIGNATURE), and refused again once a signature byte changes.
 * The body is also fed to auth_bearer (the token must lie inside, be
 * non-empty and have no whitespace or control byte), auth_key_equal and
 * auth_origin_allowed, compared with reference implementations. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define NOW 1700000000LL
#define LEEWAY 60
#define MAX_TOKEN 8192

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_jwt: %s:%d: check failed: %s: ",       \
                    __FILE__, __LINE__, #cond);                          \
            fprintf(stderr, __VA_ARGS__);                                \
            fputc('\n', stderr);                                         \
            abort();                                                     \
        }                                                                \
    } while (0)

static const char *const secrets[] = {"fuzz-secret-one", "fuzz-secret-two"};
static const size_t secret_lens[] = {15, 15};
static const char *const wrong[] = {"not-the-secret"};
static const size_t wrong_lens[] = {14};

#include "b64url.h" /* writes a NUL after each piece: the next "." or the slack takes it */


/* Builds a signed token from HEADER '\0' CLAIMS into a fresh heap buffer of
 * exactly the token's size. NULL when the body has no '\0'. */
static char *build_token(int mode, const uint8_t *p, size_t n, size_t *out_len)
{
    const uint8_t *nul = memchr(p, 0, n);
    if (!nul)
        return NULL;
    size_t hlen = (size_t)(nul - p), clen = n - hlen - 1;
    char *tmp = malloc((hlen + clen) / 3 * 4 + 8 + 2 + 88);
    if (!tmp)
        return NULL;
    size_t o = b64url(p, hlen, tmp);
    tmp[o++] = '.';
    o += b64url(nul + 1, clen, tmp + o);
    const EVP_MD *md = mode == 1 ? EVP_sha256() : mode == 2 ? EVP_sha384() : EVP_sha512();
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC(md, secrets[0], (int)secret_lens[0], (const unsigned char *)tmp, o, mac,
              &mac_len)) {
        free(tmp);
        return NULL;
    }
    tmp[o++] = '.';
    o += b64url(mac, mac_len, tmp + o);
    char *tok = malloc(o ? o : 1);
    if (tok)
        memcpy(tok, tmp, o);
    free(tmp);
    *out_len = o;
    return tok;
}

static bool is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
}

static bool ref_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)s[i]))
            return false;
    return true;
}

static void check_claims(const jwt_claims *c)
{
    CHECK(NOW <= c->exp || NOW - c->exp <= LEEWAY, "exp %lld", (long long)c->exp);
    if (c->has_nbf)
        CHECK(c->nbf <= NOW + LEEWAY, "nbf %lld", (long long)c->nbf);
    else
        CHECK(c->nbf == 0, "nbf without has_nbf");
    CHECK(memchr(c->sub, 0, sizeof c->sub) != NULL, "sub not terminated");
    CHECK(strlen(c->sub) <= 128, "sub too long");
    if (!c->has_groups) {
        CHECK(c->ngroups == 0, "groups without has_groups");
        CHECK(!jwt_group_allowed(c, "a", 1), "no groups claim but a group allowed");
        return;
    }
    CHECK(c->ngroups <= JWT_MAX_GROUPS, "ngroups %zu", c->ngroups);
    for (size_t i = 0; i < c->ngroups; i++) {
        size_t off = c->goff[i], len = c->glen[i];
        CHECK(off + len <= JWT_GROUPS_BUF, "entry %zu outside gbuf", i);
        const char *e = c->gbuf + off;
        bool star = len == 1 && e[0] == '*';
        bool prefix = len >= 3 && e[len - 2] == '.' && e[len - 1] == '*' &&
                      ref_name_valid(e, len - 2);
        CHECK(star || prefix || ref_name_valid(e, len), "invalid entry %zu", i);
        if (!star && !prefix)
            CHECK(jwt_group_allowed(c, e, len), "exact entry %zu refused", i);
        if (prefix) {
            /* "prefix.x" is allowed; "prefix" alone only by another entry. */
            char g[140];
            memcpy(g, e, len - 1);
            g[len - 1] = 'x';
            if (len <= 128)
                CHECK(jwt_group_allowed(c, g, len), "wildcard entry %zu refused", i);
        }
    }
}

static void check_token(const char *tok, size_t len)
{
    jwt_claims c;
    auth_result r = jwt_verify(tok, len, secrets, secret_lens, 2, NOW, LEEWAY, &c);
    CHECK(r >= AUTH_OK && r <= AUTH_FORBIDDEN_GROUP, "result %d", (int)r);
    CHECK(strcmp(auth_result_name(r), "unknown") != 0, "unnamed result %d", (int)r);
    CHECK(r != AUTH_FORBIDDEN_GROUP, "jwt_verify never checks groups");
    if (len == 0)
        CHECK(r == AUTH_MISSING, "empty token gave %d", (int)r);
    if (len > MAX_TOKEN)
        CHECK(r == AUTH_MALFORMED, "oversize token gave %d", (int)r);
    if (r != AUTH_OK)
        return;
    check_claims(&c);

    /* Accepted: wrong secrets must refuse it, and so must a changed
     * signature (the last character carries the fewest spare bits; change
     * the first character of the signature instead). */
    CHECK(jwt_verify(tok, len, wrong, wrong_lens, 1, NOW, LEEWAY, NULL) == AUTH_BAD_SIGNATURE,
          "accepted with the wrong secret");
    const char *dot = memrchr(tok, '.', len);
    CHECK(dot && (size_t)(dot - tok) + 1 < len, "accepted without signature");
    char *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, tok, len);
    size_t at = (size_t)(dot - tok) + 1;
    copy[at] = copy[at] == 'A' ? 'B' : 'A';
    r = jwt_verify(copy, len, secrets, secret_lens, 2, NOW, LEEWAY, NULL);
    CHECK(r == AUTH_BAD_SIGNATURE, "changed signature gave %d", (int)r);
    free(copy);
}

static void check_bearer(const char *p, size_t n)
{
    const char *tok = NULL;
    size_t tlen = 0;
    if (!auth_bearer(p, n, &tok, &tlen))
        return;
    CHECK(tok >= p && tlen > 0 && tok + tlen <= p + n, "token outside the value");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)tok[i];
        CHECK(ch > 0x20 && ch != 0x7f, "whitespace/control in token");
    }
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    CHECK(n - i >= 7 && strncasecmp(p + i, "bearer ", 7) == 0, "not a Bearer value");
}

static void check_misc(const char *p, size_t n)
{
    bool eq = auth_key_equal(p, n, secrets[0], secret_lens[0]);
    CHECK(eq == (n == secret_lens[0] && memcmp(p, secrets[0], n) == 0), "key_equal");
    CHECK(auth_key_equal(p, n, p, n) == (n > 0), "key_equal with itself");

    static const char *const list[] = {"https://example.com", "http://localhost:8080"};
    bool ref = false;
    for (size_t i = 0; i < 2; i++)
        if (strlen(list[i]) == n && strncasecmp(list[i], p, n) == 0 &&
            memchr(p, 0, n) == NULL)
            ref = true;
    CHECK(auth_origin_allowed(p, n, list, 2) == ref, "origin");
    CHECK(auth_origin_allowed(p, n, list, 0), "empty origin list");
    static const char *const star[] = {"https://example.com", "*"};
    CHECK(auth_origin_allowed(p, n, star, 2), "star origin");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int mode = data[0] & 3;
    const uint8_t *body = data + 1;
    size_t n = size - 1;

    /* An exact-size heap copy of the body. */
    char *raw = malloc(n ? n : 1);
    if (!raw)
        return 0;
    memcpy(raw, body, n);

    if (mode == 0) {
        check_token(raw, n);
    } else {
        size_t tlen = 0;
        char *tok = build_token(mode, body, n, &tlen);
        if (tok) {
            check_token(tok, tlen);
            free(tok);
        }
    }
    check_bearer(raw, n);
    check_misc(raw, n);
    free(raw);
    return 0;
}

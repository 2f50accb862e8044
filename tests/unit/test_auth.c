/* Unit tests for src/auth.h: publish-key comparison, Bearer extraction,
 * Origin allow-lists and JWT verification.
 *
 * Tokens are built here: the header and claims JSON are written by hand,
 * base64url-encoded and signed with OpenSSL's HMAC directly, so that the
 * tests do not depend on the decoder they exercise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define NOW 1700000000LL
#define LEEWAY 30

static const char *const SECRET = "s3cret-key-for-tests";
static const char *const OTHER_SECRET = "another-secret";

/* ---- token construction ------------------------------------------------- */

#include "b64url.h"


static const EVP_MD *md_for(const char *alg)
{
    if (strcmp(alg, "HS384") == 0)
        return EVP_sha384();
    if (strcmp(alg, "HS512") == 0)
        return EVP_sha512();
    return EVP_sha256();
}

/* Builds base64url(header).base64url(claims).signature into out (static
 * storage, overwritten by the next call). sign_alg selects the HMAC digest
 * ("HS256"/"HS384"/"HS512"), NULL gives an empty signature. */
static char tokbuf[40000];
static const char *make_token_raw(const char *header, const char *claims, const char *sign_alg,
                                  const char *secret)
{
    size_t o = b64url((const unsigned char *)header, strlen(header), tokbuf);
    tokbuf[o++] = '.';
    o += b64url((const unsigned char *)claims, strlen(claims), tokbuf + o);
    size_t signed_len = o;
    tokbuf[o++] = '.';
    tokbuf[o] = '\0';
    if (sign_alg) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        assert_non_null(HMAC(md_for(sign_alg), secret, (int)strlen(secret),
                             (const unsigned char *)tokbuf, signed_len, mac, &mac_len));
        b64url(mac, mac_len, tokbuf + o);
    }
    return tokbuf;
}

/* A header {"alg":alg,"typ":"JWT"} signed with alg and secret. */
static const char *make_token(const char *alg, const char *claims, const char *secret)
{
    char header[128];
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return make_token_raw(header, claims, alg, secret);
}

static auth_result verify2(const char *tok, size_t len, jwt_claims *c)
{
    const char *secrets[] = {OTHER_SECRET, SECRET};
    size_t lens[] = {strlen(OTHER_SECRET), strlen(SECRET)};
    return jwt_verify(tok, len, secrets, lens, 2, NOW, LEEWAY, c);
}

/* Verifies tok against SECRET only. */
static auth_result verify(const char *tok, jwt_claims *c)
{
    const char *secrets[] = {SECRET};
    size_t lens[] = {strlen(SECRET)};
    return jwt_verify(tok, strlen(tok), secrets, lens, 1, NOW, LEEWAY, c);
}

static const char *claims_exp_ok(void)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "{\"sub\":\"alice\",\"exp\":%lld}", NOW + 3600);
    return buf;
}

/* ---- result names ------------------------------------------------------- */

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(auth_result_name(AUTH_OK), "ok");
    assert_string_equal(auth_result_name(AUTH_MISSING), "missing");
    assert_string_equal(auth_result_name(AUTH_MALFORMED), "malformed");
    assert_string_equal(auth_result_name(AUTH_BAD_ALG), "bad_alg");
    assert_string_equal(auth_result_name(AUTH_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(auth_result_name(AUTH_NO_EXP), "no_exp");
    assert_string_equal(auth_result_name(AUTH_EXPIRED), "expired");
    assert_string_equal(auth_result_name(AUTH_NOT_YET_VALID), "not_yet_valid");
    assert_string_equal(auth_result_name(AUTH_FORBIDDEN_GROUP), "forbidden_group");
    assert_string_equal(auth_result_name((auth_result)99), "unknown");
}

/* ---- valid tokens ------------------------------------------------------- */

static void check_valid(const char *alg)
{
    jwt_claims c;
    const char *tok = make_token(alg, claims_exp_ok(), SECRET);
    assert_int_equal(verify(tok, &c), AUTH_OK);
    assert_int_equal(c.exp, NOW + 3600);
    assert_string_equal(c.sub, "alice");
    assert_false(c.has_nbf);
    assert_false(c.has_groups);
    assert_false(jwt_group_allowed(&c, "chat", 4));
}

static void test_valid_hs256(void **state) { (void)state; check_valid("HS256"); }
static void test_valid_hs384(void **state) { (void)state; check_valid("HS384"); }
static void test_valid_hs512(void **state) { (void)state; check_valid("HS512"); }

static void test_valid_without_typ(void **state)
{
    (void)state;
    jwt_claims c;
    const char *tok = make_token_raw("{\"alg\":\"HS256\"}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, &c), AUTH_OK);
    tok = make_token_raw("{\"typ\":\"jwt\",\"alg\":\"HS256\",\"kid\":\"k1\"}", claims_exp_ok(),
                         "HS256", SECRET);
    assert_int_equal(verify(tok, &c), AUTH_OK);
}

static void test_bad_typ_and_crit(void **state)
{
    (void)state;
    const char *tok = make_token_raw("{\"alg\":\"HS256\",\"typ\":\"JWS\"}", claims_exp_ok(),
                                     "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
    tok = make_token_raw("{\"alg\":\"HS256\",\"typ\":1}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
    tok = make_token_raw("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", claims_exp_ok(),
                         "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
}

static void test_secret_rotation(void **state)
{
    (void)state;
    jwt_claims c;
    /* Signed with the second of two secrets. */
    const char *tok = make_token("HS256", claims_exp_ok(), SECRET);
    assert_int_equal(verify2(tok, strlen(tok), &c), AUTH_OK);
    /* And with the first. */
    tok = make_token("HS384", claims_exp_ok(), OTHER_SECRET);
    assert_int_equal(verify2(tok, strlen(tok), &c), AUTH_OK);
    assert_string_equal(c.sub, "alice");
    /* Neither. */
    tok = make_token("HS512", claims_exp_ok(), "third");
    assert_int_equal(verify2(tok, strlen(tok), &c), AUTH_BAD_SIGNATURE);
}

static void test_no_or_empty_secrets(void **state)
{
    (void)state;
    const char *tok = make_token("HS256", claims_exp_ok(), SECRET);
    assert_int_equal(jwt_verify(tok, strlen(tok), NULL, NULL, 0, NOW, LEEWAY, NULL),
                     AUTH_BAD_SIGNATURE);
    /* A token signed with an empty key is never accepted, even when an empty
     * secret is (mis)configured. */
    tok = make_token_raw("{\"alg\":\"HS256\"}", claims_exp_ok(), "HS256", "");
    const char *secrets[] = {""};
    size_t lens[] = {0};
    assert_int_equal(jwt_verify(tok, strlen(tok), secrets, lens, 1, NOW, LEEWAY, NULL),
                     AUTH_BAD_SIGNATURE);
}

/* ---- signature failures ------------------------------------------------- */

static void test_wrong_secret(void **state)
{
    (void)state;
    const char *tok = make_token("HS256", claims_exp_ok(), "wrong");
    assert_int_equal(verify(tok, NULL), AUTH_BAD_SIGNATURE);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    char good[4096], evil[4096], forged[8192];
    snprintf(good, sizeof good, "%s", make_token("HS256", claims_exp_ok(), SECRET));
    char claims[128];
    snprintf(claims, sizeof claims, "{\"sub\":\"mallory\",\"exp\":%lld}", NOW + 3600);
    snprintf(evil, sizeof evil, "%s", make_token("HS256", claims, "attacker"));
    /* header and payload of evil, signature of good */
    const char *eparts = strrchr(evil, '.');
    const char *gsig = strrchr(good, '.');
    size_t n = (size_t)(eparts - evil);
    memcpy(forged, evil, n);
    snprintf(forged + n, sizeof forged - n, "%s", gsig);
    assert_int_equal(verify(forged, NULL), AUTH_BAD_SIGNATURE);

    /* One flipped bit in the signature. */
    char *last = good + strlen(good) - 2;
    *last = (*last == 'A') ? 'B' : 'A';
    assert_int_equal(verify(good, NULL), AUTH_BAD_SIGNATURE);
}

static void test_truncated_or_missing_signature(void **state)
{
    (void)state;
    char tok[4096];
    snprintf(tok, sizeof tok, "%s", make_token("HS256", claims_exp_ok(), SECRET));
    /* 43 characters -> 40: a whole number of quanta, 2 bytes short */
    tok[strlen(tok) - 3] = '\0';
    assert_int_equal(verify(tok, NULL), AUTH_BAD_SIGNATURE);
    /* empty signature */
    *(strrchr(tok, '.') + 1) = '\0';
    assert_int_equal(verify(tok, NULL), AUTH_BAD_SIGNATURE);
    /* HS512 signature on an HS256 header (right key) */
    const char *t =
        make_token_raw("{\"alg\":\"HS256\"}", claims_exp_ok(), "HS512", SECRET);
    assert_int_equal(verify(t, NULL), AUTH_BAD_SIGNATURE);
}

/* ---- algorithms --------------------------------------------------------- */

static void test_alg_none(void **state)
{
    (void)state;
    const char *tok = make_token_raw("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims_exp_ok(), NULL,
                                     SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    /* with a (valid HS256) signature */
    tok = make_token_raw("{\"alg\":\"none\"}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    tok = make_token_raw("{\"alg\":\"None\"}", claims_exp_ok(), NULL, SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    tok = make_token_raw("{\"alg\":\"NONE\"}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
}

static void test_alg_asymmetric_and_others(void **state)
{
    (void)state;
    static const char *const algs[] = {"RS256", "RS512", "ES256", "ES384", "PS256", "EdDSA",
                                       "hs256", "HS256 ", "HS", "HS1", "HS2560", ""};
    for (size_t i = 0; i < sizeof algs / sizeof *algs; i++) {
        char header[64];
        snprintf(header, sizeof header, "{\"alg\":\"%s\"}", algs[i]);
        /* signed with HMAC-SHA256 and the right key: the classic confusion */
        const char *tok = make_token_raw(header, claims_exp_ok(), "HS256", SECRET);
        assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    }
    /* alg with an embedded NUL */
    const char *tok = make_token_raw("{\"alg\":\"HS256\\u0000\"}", claims_exp_ok(), "HS256",
                                     SECRET);
    assert_int_not_equal(verify(tok, NULL), AUTH_OK);
}

static void test_alg_missing_or_not_string(void **state)
{
    (void)state;
    const char *tok = make_token_raw("{\"typ\":\"JWT\"}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    tok = make_token_raw("{\"alg\":256}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    tok = make_token_raw("{\"alg\":null}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
    tok = make_token_raw("{\"alg\":[\"HS256\"]}", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_BAD_ALG);
}

static void test_duplicate_header_keys(void **state)
{
    (void)state;
    /* Parsers disagree on which duplicate wins: refuse them. */
    const char *tok = make_token_raw("{\"alg\":\"none\",\"alg\":\"HS256\"}", claims_exp_ok(),
                                     "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
    char claims[128];
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"exp\":%lld}", NOW - 1000, NOW + 1000);
    tok = make_token("HS256", claims, SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
}

/* ---- time claims -------------------------------------------------------- */

static auth_result verify_claims(const char *claims, jwt_claims *c)
{
    return verify(make_token("HS256", claims, SECRET), c);
}

static void test_exp(void **state)
{
    (void)state;
    char claims[128];
    jwt_claims c;
    /* past, beyond the leeway */
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW - LEEWAY - 1);
    assert_int_equal(verify_claims(claims, &c), AUTH_EXPIRED);
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW - 86400);
    assert_int_equal(verify_claims(claims, &c), AUTH_EXPIRED);
    /* past, within the leeway */
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW - LEEWAY);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW - 5);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_int_equal(c.exp, NOW - 5);
    /* real number */
    snprintf(claims, sizeof claims, "{\"exp\":%lld.5}", NOW + 10);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_int_equal(c.exp, NOW + 10);
    snprintf(claims, sizeof claims, "{\"exp\":%lld.9}", NOW - LEEWAY - 1);
    assert_int_equal(verify_claims(claims, &c), AUTH_EXPIRED);
    assert_int_equal(verify_claims("{\"exp\":1.6e9}", &c), AUTH_EXPIRED);
    /* far future: no overflow with the leeway */
    assert_int_equal(verify_claims("{\"exp\":9223372036854775807}", &c), AUTH_OK);
    assert_int_equal(verify_claims("{\"exp\":-9223372036854775808}", &c), AUTH_EXPIRED);
    assert_int_equal(verify_claims("{\"exp\":1e300}", &c), AUTH_MALFORMED);
    /* integer out of range for jansson */
    assert_int_equal(verify_claims("{\"exp\":99999999999999999999}", &c), AUTH_MALFORMED);
}

static void test_exp_missing_or_wrong_type(void **state)
{
    (void)state;
    assert_int_equal(verify_claims("{\"sub\":\"bob\"}", NULL), AUTH_NO_EXP);
    assert_int_equal(verify_claims("{}", NULL), AUTH_NO_EXP);
    char claims[128];
    snprintf(claims, sizeof claims, "{\"exp\":\"%lld\"}", NOW + 100);
    assert_int_equal(verify_claims(claims, NULL), AUTH_MALFORMED);
    assert_int_equal(verify_claims("{\"exp\":null}", NULL), AUTH_MALFORMED);
    assert_int_equal(verify_claims("{\"exp\":true}", NULL), AUTH_MALFORMED);
    assert_int_equal(verify_claims("{\"exp\":[1]}", NULL), AUTH_MALFORMED);
}

static void test_nbf(void **state)
{
    (void)state;
    char claims[128];
    jwt_claims c;
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"nbf\":%lld}", NOW + 3600, NOW + LEEWAY + 1);
    assert_int_equal(verify_claims(claims, &c), AUTH_NOT_YET_VALID);
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"nbf\":%lld}", NOW + 3600, NOW + LEEWAY);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_true(c.has_nbf);
    assert_int_equal(c.nbf, NOW + LEEWAY);
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"nbf\":%lld}", NOW + 3600, NOW - 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    /* real nbf rounds up */
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"nbf\":%lld.25}", NOW + 3600, NOW + LEEWAY);
    assert_int_equal(verify_claims(claims, &c), AUTH_NOT_YET_VALID);
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"nbf\":\"soon\"}", NOW + 3600);
    assert_int_equal(verify_claims(claims, &c), AUTH_MALFORMED);
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"nbf\":9223372036854775807}", NOW + 3600);
    assert_int_equal(verify_claims(claims, &c), AUTH_NOT_YET_VALID);
}

static void test_negative_leeway_is_zero(void **state)
{
    (void)state;
    char claims[128];
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW);
    const char *tok = make_token("HS256", claims, SECRET);
    const char *secrets[] = {SECRET};
    size_t lens[] = {strlen(SECRET)};
    assert_int_equal(jwt_verify(tok, strlen(tok), secrets, lens, 1, NOW, -100, NULL), AUTH_OK);
    assert_int_equal(jwt_verify(tok, strlen(tok), secrets, lens, 1, NOW + 1, -100, NULL),
                     AUTH_EXPIRED);
}

/* ---- structure ---------------------------------------------------------- */

static void test_missing(void **state)
{
    (void)state;
    assert_int_equal(verify("", NULL), AUTH_MISSING);
    const char *secrets[] = {SECRET};
    size_t lens[] = {strlen(SECRET)};
    assert_int_equal(jwt_verify(NULL, 0, secrets, lens, 1, NOW, LEEWAY, NULL), AUTH_MISSING);
}

static void test_part_count(void **state)
{
    (void)state;
    char tok[1024];
    snprintf(tok, sizeof tok, "%s", make_token("HS256", claims_exp_ok(), SECRET));
    char two[1024], four[2048];
    /* two parts: drop the signature and its dot */
    snprintf(two, sizeof two, "%s", tok);
    *strrchr(two, '.') = '\0';
    assert_int_equal(verify(two, NULL), AUTH_MALFORMED);
    /* four parts */
    snprintf(four, sizeof four, "%s.%s", tok, "AAAA");
    assert_int_equal(verify(four, NULL), AUTH_MALFORMED);
    snprintf(four, sizeof four, "%s.", tok);
    assert_int_equal(verify(four, NULL), AUTH_MALFORMED);
    assert_int_equal(verify("abc", NULL), AUTH_MALFORMED);
    assert_int_equal(verify("..", NULL), AUTH_MALFORMED);
    assert_int_equal(verify(".", NULL), AUTH_MALFORMED);
}

static void test_invalid_base64url(void **state)
{
    (void)state;
    char tok[1024];
    snprintf(tok, sizeof tok, "%s", make_token("HS256", claims_exp_ok(), SECRET));
    char bad[2048];
    /* standard-base64 characters, padding, spaces in each part */
    static const char subst[] = {'+', '/', '=', ' ', '\0', '\n', '*'};
    size_t len = strlen(tok);
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    size_t at[] = {1, (size_t)(d1 - tok) + 2, (size_t)(d2 - tok) + 2};
    for (size_t k = 0; k < sizeof at / sizeof *at; k++) {
        for (size_t s = 0; s < sizeof subst; s++) {
            memcpy(bad, tok, len + 1);
            bad[at[k]] = subst[s];
            const char *secrets[] = {SECRET};
            size_t lens[] = {strlen(SECRET)};
            assert_int_equal(jwt_verify(bad, len, secrets, lens, 1, NOW, LEEWAY, NULL),
                             AUTH_MALFORMED);
        }
    }
    /* '=' padding appended to the signature (32 bytes -> 43 chars + '=') */
    snprintf(bad, sizeof bad, "%s=", tok);
    assert_int_equal(verify(bad, NULL), AUTH_MALFORMED);
    /* 43 + 2 characters: length 1 mod 4 */
    snprintf(bad, sizeof bad, "%sAA", tok);
    assert_int_equal(verify(bad, NULL), AUTH_MALFORMED);
    /* non-zero unused bits in the last signature character (43 chars: 2 spare bits) */
    memcpy(bad, tok, len + 1);
    char *lastc = bad + len - 1;
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(tab, *lastc) - tab);
    *lastc = tab[v | 1];
    assert_int_equal(verify(bad, NULL), AUTH_MALFORMED);
}

static void test_not_json(void **state)
{
    (void)state;
    /* payload not JSON */
    assert_int_equal(verify_claims("exp=1", NULL), AUTH_MALFORMED);
    assert_int_equal(verify_claims("{\"exp\":1", NULL), AUTH_MALFORMED);
    char claims[128];
    snprintf(claims, sizeof claims, "{\"exp\":%lld} trailing", NOW + 100);
    assert_int_equal(verify_claims(claims, NULL), AUTH_MALFORMED);
    /* payload a JSON array / string / number */
    snprintf(claims, sizeof claims, "[{\"exp\":%lld}]", NOW + 100);
    assert_int_equal(verify_claims(claims, NULL), AUTH_MALFORMED);
    assert_int_equal(verify_claims("\"x\"", NULL), AUTH_MALFORMED);
    assert_int_equal(verify_claims("42", NULL), AUTH_MALFORMED);
    /* header not JSON, or an array */
    const char *tok = make_token_raw("alg=HS256", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
    tok = make_token_raw("[\"HS256\"]", claims_exp_ok(), "HS256", SECRET);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
    /* empty header / payload parts */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", make_token("HS256", claims_exp_ok(), SECRET));
    const char *d1 = strchr(buf, '.');
    char emptyh[4096];
    snprintf(emptyh, sizeof emptyh, "%s", d1);
    assert_int_equal(verify(emptyh, NULL), AUTH_MALFORMED);
}

static void test_oversize(void **state)
{
    (void)state;
    /* A validly signed token whose sub pads it past 8192 bytes. */
    static char claims[12000];
    int n = snprintf(claims, sizeof claims, "{\"exp\":%lld,\"pad\":\"", NOW + 100);
    memset(claims + n, 'x', 7000);
    snprintf(claims + n + 7000, sizeof claims - (size_t)n - 7000, "\"}");
    const char *tok = make_token("HS256", claims, SECRET);
    assert_true(strlen(tok) > 8192);
    assert_int_equal(verify(tok, NULL), AUTH_MALFORMED);
    /* just under the limit is fine */
    memset(claims + n, 'x', 5500);
    snprintf(claims + n + 5500, sizeof claims - (size_t)n - 5500, "\"}");
    tok = make_token("HS256", claims, SECRET);
    assert_true(strlen(tok) <= 8192);
    assert_int_equal(verify(tok, NULL), AUTH_OK);
    /* a huge non-token is refused up front */
    static char junk[100000];
    memset(junk, 'A', sizeof junk - 1);
    assert_int_equal(verify(junk, NULL), AUTH_MALFORMED);
}

/* ---- sub and groups ----------------------------------------------------- */

static void test_sub(void **state)
{
    (void)state;
    char claims[1024];
    jwt_claims c;
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"sub\":\"user-42\"}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_string_equal(c.sub, "user-42");
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_string_equal(c.sub, "");
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"sub\":42}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_MALFORMED);
    /* truncated to 128 bytes */
    char longsub[300];
    memset(longsub, 's', 200);
    longsub[200] = '\0';
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"sub\":\"%s\"}", NOW + 100, longsub);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_int_equal(strlen(c.sub), 128);
    /* ... without splitting a UTF-8 sequence: 127 ASCII + "é" (2 bytes) */
    memset(longsub, 's', 127);
    snprintf(longsub + 127, sizeof longsub - 127, "\xc3\xa9tail");
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"sub\":\"%s\"}", NOW + 100, longsub);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_int_equal(strlen(c.sub), 127);
}

static void test_groups_exact_and_wildcard(void **state)
{
    (void)state;
    char claims[512];
    jwt_claims c;
    snprintf(claims, sizeof claims,
             "{\"exp\":%lld,\"groups\":[\"news\",\"chat.*\",\"user:42\",\"a.b.*\"]}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_true(c.has_groups);
    assert_int_equal(c.ngroups, 4);
#define ALLOWED(g) jwt_group_allowed(&c, g, strlen(g))
    assert_true(ALLOWED("news"));
    assert_true(ALLOWED("user:42"));
    assert_true(ALLOWED("chat.room1"));
    assert_true(ALLOWED("chat.a.b"));
    assert_true(ALLOWED("a.b.c"));
    /* "chat.*" needs "chat." plus at least one byte */
    assert_false(ALLOWED("chat"));
    assert_false(ALLOWED("chat."));
    assert_false(ALLOWED("chatroom"));
    assert_false(ALLOWED("Chat.room1"));
    assert_false(ALLOWED("other"));
    assert_false(ALLOWED("news2"));
    assert_false(ALLOWED("new"));
    assert_false(ALLOWED("NEWS"));
    assert_false(ALLOWED("a.b"));
    assert_false(ALLOWED("a.bc"));
    /* the pattern itself and invalid names never match */
    assert_false(ALLOWED("chat.*"));
    assert_false(ALLOWED(""));
    assert_false(ALLOWED("chat.room 1"));
    assert_false(jwt_group_allowed(&c, "news\0x", 6));
    assert_false(jwt_group_allowed(NULL, "news", 4));
#undef ALLOWED
}

static void test_groups_star(void **state)
{
    (void)state;
    char claims[256];
    jwt_claims c;
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[\"*\"]}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_true(jwt_group_allowed(&c, "anything", 8));
    assert_true(jwt_group_allowed(&c, "chat.room1", 10));
    assert_false(jwt_group_allowed(&c, "bad name", 8));
    char big[129];
    memset(big, 'g', sizeof big);
    assert_true(jwt_group_allowed(&c, big, 128));
    assert_false(jwt_group_allowed(&c, big, 129));
}

static void test_groups_empty_or_absent(void **state)
{
    (void)state;
    char claims[256];
    jwt_claims c;
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[]}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_true(c.has_groups);
    assert_int_equal(c.ngroups, 0);
    assert_false(jwt_group_allowed(&c, "news", 4));
    snprintf(claims, sizeof claims, "{\"exp\":%lld}", NOW + 100);
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_false(c.has_groups);
    assert_false(jwt_group_allowed(&c, "news", 4));
}

static void test_groups_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[\"ok\",\"bad name\"]", "[\"\"]",       "[\"chat*\"]", "[\".*\"]",
        "[\"*.*\"]",             "[\"a.*.b\"]",  "[\"**\"]",    "[\"chat.**\"]",
        "[\"a/b\"]",             "[\"\\u00e9\"]", "[1]",        "[null]",
        "[[\"a\"]]",             "\"chat\"",     "{}",          "null",
        "true",                  "[\"a\\u0000b\"]",
    };
    char claims[512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":%s}", NOW + 100, bad[i]);
        jwt_claims c;
        assert_int_equal(verify_claims(claims, &c), AUTH_MALFORMED);
        assert_false(c.has_groups);
    }
    /* a 129-byte name, and a 129-byte prefix */
    char name[140];
    memset(name, 'n', 129);
    name[129] = '\0';
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[\"%s\"]}", NOW + 100, name);
    assert_int_equal(verify_claims(claims, NULL), AUTH_MALFORMED);
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[\"%s.*\"]}", NOW + 100, name);
    assert_int_equal(verify_claims(claims, NULL), AUTH_MALFORMED);
    /* 128 bytes is fine, as a name and as a prefix */
    name[128] = '\0';
    snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[\"%s\",\"%s.*\"]}", NOW + 100,
             name, name);
    jwt_claims c;
    assert_int_equal(verify_claims(claims, &c), AUTH_OK);
    assert_true(jwt_group_allowed(&c, name, 128));
}

static void test_groups_limits(void **state)
{
    (void)state;
    static char claims[8192];
    jwt_claims c;
    /* JWT_MAX_GROUPS entries: fine; one more: malformed */
    for (int extra = 0; extra <= 1; extra++) {
        int n = snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[", NOW + 100);
        for (int i = 0; i < JWT_MAX_GROUPS + extra; i++)
            n += snprintf(claims + n, sizeof claims - (size_t)n, "%s\"g%d\"", i ? "," : "", i);
        snprintf(claims + n, sizeof claims - (size_t)n, "]}");
        auth_result r = verify_claims(claims, &c);
        if (extra) {
            assert_int_equal(r, AUTH_MALFORMED);
        } else {
            assert_int_equal(r, AUTH_OK);
            assert_int_equal(c.ngroups, JWT_MAX_GROUPS);
            assert_true(jwt_group_allowed(&c, "g0", 2));
            assert_true(jwt_group_allowed(&c, "g63", 3));
            assert_false(jwt_group_allowed(&c, "g64", 3));
        }
    }
    /* 32 names of 128 bytes = 4096 bytes: fits; 33 do not */
    for (int count = 32; count <= 33; count++) {
        int n = snprintf(claims, sizeof claims, "{\"exp\":%lld,\"groups\":[", NOW + 100);
        for (int i = 0; i < count; i++) {
            n += snprintf(claims + n, sizeof claims - (size_t)n, "%s\"%03d", i ? "," : "", i);
            memset(claims + n, 'x', 125);
            n += 125;
            claims[n++] = '"';
        }
        snprintf(claims + n, sizeof claims - (size_t)n, "]}");
        auth_result r = verify_claims(claims, &c);
        if (count == 32) {
            assert_int_equal(r, AUTH_OK);
            assert_int_equal(c.ngroups, 32);
            char want[129];
            memcpy(want, "031", 3);
            memset(want + 3, 'x', 125);
            assert_true(jwt_group_allowed(&c, want, 128));
        } else {
            assert_int_equal(r, AUTH_MALFORMED);
        }
    }
}

/* ---- publish keys ------------------------------------------------------- */

static void test_key_equal(void **state)
{
    (void)state;
    assert_true(auth_key_equal("abc123", 6, "abc123", 6));
    assert_false(auth_key_equal("abc123", 6, "abc124", 6));
    assert_false(auth_key_equal("Abc123", 6, "abc123", 6));
    assert_false(auth_key_equal("abc123", 6, "abc12", 5));
    assert_false(auth_key_equal("abc12", 5, "abc123", 6));
    /* compares lengths, not NUL-terminated strings */
    assert_false(auth_key_equal("ab\0c", 4, "ab\0d", 4));
    assert_true(auth_key_equal("ab\0c", 4, "ab\0c", 4));
    /* empty never matches, not even empty */
    assert_false(auth_key_equal("", 0, "", 0));
    assert_false(auth_key_equal("", 0, "abc", 3));
    assert_false(auth_key_equal("abc", 3, "", 0));
    assert_false(auth_key_equal(NULL, 0, NULL, 0));
}

/* ---- Bearer ------------------------------------------------------------- */

static bool bearer(const char *v, const char *want)
{
    const char *tok = (const char *)1;
    size_t n = 12345;
    bool ok = auth_bearer(v, strlen(v), &tok, &n);
    if (!want)
        return !ok;
    return ok && n == strlen(want) && memcmp(tok, want, n) == 0 && tok >= v &&
           tok + n <= v + strlen(v);
}

static void test_bearer(void **state)
{
    (void)state;
    assert_true(bearer("Bearer abc.def.ghi", "abc.def.ghi"));
    assert_true(bearer("bearer key", "key"));
    assert_true(bearer("BEARER key", "key"));
    assert_true(bearer("bEaReR key", "key"));
    assert_true(bearer("Bearer    key", "key"));
    assert_true(bearer("Bearer key  ", "key"));  /* trailing OWS */
    assert_true(bearer("  Bearer key", "key"));  /* leading OWS */
    assert_true(bearer("Bearer a+/=~-._", "a+/=~-._"));
    assert_true(bearer("Bearer x", "x"));
    assert_true(bearer("Bearer " "\xc3\xa9", "\xc3\xa9"));

    assert_true(bearer("Bearer", NULL));
    assert_true(bearer("Bearer ", NULL));
    assert_true(bearer("Bearer    ", NULL));
    assert_true(bearer("Bearerkey", NULL));
    assert_true(bearer("Bearer\tkey", NULL));
    assert_true(bearer("Bearer key extra", NULL));
    assert_true(bearer("Bearer key\textra", NULL));
    assert_true(bearer("Bearer ke\x01y", NULL));
    assert_true(bearer("Bearer ke\x7fy", NULL));
    assert_true(bearer("Basic dXNlcjpwYXNz", NULL));
    assert_true(bearer("Bearr key", NULL));
    assert_true(bearer("Bearers key", NULL));
    assert_true(bearer("", NULL));
    assert_true(bearer("key", NULL));
    assert_true(bearer("Token key", NULL));
    /* embedded NUL counts as a control character */
    const char *tok;
    size_t n;
    assert_false(auth_bearer("Bearer ab\0c", 11, &tok, &n));
    /* only len bytes are looked at */
    assert_true(auth_bearer("Bearer keyXYZ", 10, &tok, &n));
    assert_int_equal(n, 3);
    assert_memory_equal(tok, "key", 3);
    assert_false(auth_bearer(NULL, 0, &tok, &n));
}

/* ---- Origin ------------------------------------------------------------- */

static bool origin_ok(const char *o, const char *const *list, size_t n)
{
    return auth_origin_allowed(o, strlen(o), list, n);
}

static void test_origin(void **state)
{
    (void)state;
    const char *const list[] = {"https://example.com", "http://localhost:8080"};
    assert_true(origin_ok("https://example.com", list, 2));
    assert_true(origin_ok("HTTPS://EXAMPLE.COM", list, 2));
    assert_true(origin_ok("http://LocalHost:8080", list, 2));
    assert_false(origin_ok("http://example.com", list, 2));
    assert_false(origin_ok("https://example.com:443", list, 2));
    assert_false(origin_ok("https://example.com/", list, 2));
    assert_false(origin_ok("https://example.com.evil.net", list, 2));
    assert_false(origin_ok("https://evil-example.com", list, 2));
    assert_false(origin_ok("https://example.co", list, 2));
    assert_false(origin_ok("http://localhost", list, 2));
    assert_false(origin_ok("null", list, 2));
    assert_false(origin_ok("", list, 2));
    /* len is honoured: a prefix of an allowed origin is not allowed */
    assert_false(auth_origin_allowed("https://example.comX", 19 - 1, list, 2));
    assert_true(auth_origin_allowed("https://example.comX", 19, list, 2));

    /* empty list allows everything */
    assert_true(origin_ok("https://anything.example", NULL, 0));
    assert_true(origin_ok("", list, 0));

    /* "*" entry */
    const char *const star[] = {"https://example.com", "*"};
    assert_true(origin_ok("https://other.example", star, 2));
    assert_true(origin_ok("null", star, 2));
    /* "*" only as a whole entry, not as a glob */
    const char *const glob[] = {"https://*.example.com"};
    assert_false(origin_ok("https://a.example.com", glob, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_valid_hs256),
        cmocka_unit_test(test_valid_hs384),
        cmocka_unit_test(test_valid_hs512),
        cmocka_unit_test(test_valid_without_typ),
        cmocka_unit_test(test_bad_typ_and_crit),
        cmocka_unit_test(test_secret_rotation),
        cmocka_unit_test(test_no_or_empty_secrets),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_truncated_or_missing_signature),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_asymmetric_and_others),
        cmocka_unit_test(test_alg_missing_or_not_string),
        cmocka_unit_test(test_duplicate_header_keys),
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_exp_missing_or_wrong_type),
        cmocka_unit_test(test_nbf),
        cmocka_unit_test(test_negative_leeway_is_zero),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_part_count),
        cmocka_unit_test(test_invalid_base64url),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_sub),
        cmocka_unit_test(test_groups_exact_and_wildcard),
        cmocka_unit_test(test_groups_star),
        cmocka_unit_test(test_groups_empty_or_absent),
        cmocka_unit_test(test_groups_invalid),
        cmocka_unit_test(test_groups_limits),
        cmocka_unit_test(test_key_equal),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_origin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

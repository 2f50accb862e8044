"""Security (issue 4): publish keys, subscriber JWTs, the Origin allow-list, and the auth metrics.

Every refusal path is exercised with a real client: raw sockets for byte-exact handshakes (status,
WWW-Authenticate, connection closed) and the websockets library for end-to-end delivery.
Tokens are built here with hmac/hashlib/base64/json only (independent of the server's code).
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import time

import pytest
import websockets.exceptions

from herald_helpers import (HOST, Publisher, expect_silence, http_call, metrics, parse_prometheus,
                            read_response, recv, recv_n, run, ws_connect, ws_request_bytes)

KEY1 = "k1-0123456789abcdef"
KEY2 = "k2-fedcba9876543210"
SECRET1 = "jwt-secret-one-0123456789"
SECRET2 = "jwt-secret-two-9876543210"

DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(secret, claims, alg="HS256", header=None, sig_alg=None):
    """Compact JWS. header overrides the JOSE header; sig_alg picks the HMAC (default: alg)."""
    hdr = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing = b64u(json.dumps(hdr, separators=(",", ":"))) + "." + b64u(json.dumps(claims, separators=(",", ":")))
    digest = DIGESTS[sig_alg or alg]
    sig = hmac.new(secret.encode(), signing.encode(), digest).digest()
    return signing + "." + b64u(sig)


def claims(exp_in=300, **kw):
    c = {"sub": "tester"}
    if exp_in is not None:
        c["exp"] = int(time.time()) + exp_in
    c.update(kw)
    return c


def handshake(port, path, headers=(), timeout=5.0):
    """One raw WebSocket upgrade request. Returns the RawResponse; for a refusal (non-101) also
    requires that the server closes the connection after the response."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(ws_request_bytes(path=path, host=f"127.0.0.1:{port}", key=key, extra=list(headers)))
        resp, _ = read_response(s, timeout=timeout, expect_close=False)
        if resp.status != 101:
            s.settimeout(timeout)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    d = s.recv(65536)
                except ConnectionResetError:
                    d = b""
                if not d:
                    break
                assert time.monotonic() < deadline, f"server did not close after {resp.status}"
        return resp
    finally:
        s.close()


def expect_refused(port, path, status, headers=(), www_auth=None):
    resp = handshake(port, path, headers)
    assert resp.status == status, f"{path} {headers}: got {resp!r}, expected {status}"
    assert (resp.header("connection") or "").lower() == "close", resp
    if www_auth is None:
        www_auth = status == 401
    if www_auth:
        assert resp.header("www-authenticate") == 'Bearer realm="herald"', resp
    return resp


def expect_upgraded(port, path, headers=()):
    resp = handshake(port, path, headers)
    assert resp.status == 101, f"{path} {headers}: got {resp!r}, expected 101"
    return resp


def post(port, body=b"x", group=None, auth=None, headers=None):
    h = {"Content-Length": str(len(body)), "Content-Type": "text/plain"}
    if auth is not None:
        h["Authorization"] = auth
    h.update(headers or {})
    path = "/publish" if group is None else f"/publish?group={group}"
    return http_call(port, "POST", path, body=body, headers=h)


def auth_counts(port):
    m = metrics(port)
    return {k[len('herald_auth_failures_total{reason="'):-2]: v
            for k, v in m.items() if k.startswith("herald_auth_failures_total{")}, m


def status_401(m):
    return m['herald_requests_failed_total{status="401"}']


# --------------------------------------------------------------------------
# publish keys
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keysrv(herald_module):
    return herald_module("--publish-key", KEY1, "--publish-key", KEY2)


def test_publish_without_key_is_401_with_challenge(keysrv):
    st, hdrs, body = post(keysrv.port)
    assert st == 401, body
    assert hdrs["WWW-Authenticate"] == 'Bearer realm="herald"'
    assert hdrs["Connection"].lower() == "close"


@pytest.mark.parametrize("auth", [
    "Bearer wrong-key",
    "Bearer " + KEY1 + "x",          # key plus a suffix
    "Bearer " + KEY1[:-1],           # a prefix of a key
    "Bearer " + KEY1.upper(),        # keys are case-sensitive
    "Basic " + base64.b64encode(f"u:{KEY1}".encode()).decode(),
    KEY1,                            # no scheme
    "Bearer",                        # no credentials
    "Bearer " + KEY1 + "," + KEY2,
])
def test_publish_with_wrong_key_is_401(keysrv, auth):
    st, hdrs, body = post(keysrv.port, auth=auth)
    assert st == 401, (auth, st, body)
    assert hdrs["WWW-Authenticate"] == 'Bearer realm="herald"'


@pytest.mark.parametrize("auth", [
    "Bearer " + KEY1, "Bearer " + KEY2, "bearer " + KEY1, "BEARER " + KEY2, "BeArEr  " + KEY1,
])
def test_publish_with_any_configured_key_is_200(keysrv, auth):
    st, _, body = post(keysrv.port, b"hello", group="g", auth=auth)
    assert st == 200, (auth, st, body)
    assert json.loads(body) == {"ok": True, "group": "g", "bytes": 5}


def test_refused_publish_is_not_delivered_and_accepted_one_is(keysrv):
    async def main():
        async with ws_connect(keysrv.port, "/ws?groups=keyed") as sub:   # no credentials needed for /ws
            st, _, _ = post(keysrv.port, b"forged", group="keyed", auth="Bearer nope")
            assert st == 401
            st, _, _ = post(keysrv.port, b"forged2", group="keyed")
            assert st == 401
            await expect_silence(sub, 0.3)
            st, _, _ = post(keysrv.port, b"genuine", group="keyed", auth="Bearer " + KEY2)
            assert st == 200
            assert await recv(sub) == "genuine"
            await expect_silence(sub, 0.2)
    run(main())


def test_keepalive_publisher_with_key(keysrv):
    """Several authorised publishes on one keep-alive connection, all delivered in order."""
    async def main():
        async with ws_connect(keysrv.port, "/ws?groups=ka") as sub:
            c = http.client.HTTPConnection(HOST, keysrv.port, timeout=10)
            try:
                for i in range(20):
                    c.request("POST", "/publish?group=ka", body=f"m{i}".encode(),
                              headers={"Authorization": f"Bearer {KEY1}", "Content-Type": "text/plain"})
                    r = c.getresponse()
                    r.read()
                    assert r.status == 200
            finally:
                c.close()
            assert await recv_n(sub, 20) == [f"m{i}" for i in range(20)]
    run(main())


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", "Basic Zm9vOmJhcg=="])
def test_websocket_publisher_without_valid_key_is_401(keysrv, auth):
    headers = [] if auth is None else [("Authorization", auth)]
    expect_refused(keysrv.port, "/publish?group=g", 401, headers)


def test_websocket_publisher_with_key_publishes(keysrv):
    async def main():
        async with ws_connect(keysrv.port, "/ws?groups=wsk") as sub:
            async with ws_connect(keysrv.port, "/publish?group=wsk",
                                  extra_headers={"Authorization": "bearer " + KEY2}) as pub:
                for i in range(10):
                    await pub.send(f"p{i}")
                assert await recv_n(sub, 10) == [f"p{i}" for i in range(10)]
            # the websockets library sees the refusal as a 401 status
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
                async with ws_connect(keysrv.port, "/publish?group=wsk",
                                      extra_headers={"Authorization": "Bearer bad"}):
                    pass
            assert ei.value.status_code == 401
    run(main())


def test_subscribers_unaffected_by_publish_keys(keysrv):
    expect_upgraded(keysrv.port, "/ws")
    expect_upgraded(keysrv.port, "/ws?groups=a,b")
    # even a wrong Authorization header on /ws does not matter without --jwt-secret
    expect_upgraded(keysrv.port, "/ws?groups=a", [("Authorization", "Bearer whatever")])


def test_publish_key_refusals_are_counted(herald):
    srv = herald("--publish-key", KEY1)
    before, m0 = auth_counts(srv.port)
    assert set(before) >= {"missing", "bad_signature"}, before
    for _ in range(3):
        assert post(srv.port)[0] == 401                                   # missing
    for _ in range(2):
        assert post(srv.port, auth="Bearer nope")[0] == 401              # wrong key
    expect_refused(srv.port, "/publish", 401)                             # missing (WebSocket)
    expect_refused(srv.port, "/publish", 401, [("Authorization", "Bearer nope")])
    assert post(srv.port, auth="Bearer " + KEY1)[0] == 200
    after, m1 = auth_counts(srv.port)
    assert after["missing"] - before["missing"] == 4, (before, after)
    assert after["bad_signature"] - before["bad_signature"] == 3, (before, after)
    assert status_401(m1) - status_401(m0) == 7


def test_publish_keys_from_environment(herald):
    srv = herald(env_extra={"HERALD_PUBLISH_KEY": "envkey1,envkey2"})
    assert post(srv.port)[0] == 401
    assert post(srv.port, auth="Bearer envkey1,envkey2")[0] == 401
    assert post(srv.port, auth="Bearer envkey1")[0] == 200
    assert post(srv.port, auth="Bearer envkey2")[0] == 200
    expect_refused(srv.port, "/publish", 401)
    expect_upgraded(srv.port, "/publish", [("Authorization", "Bearer envkey2")])


# --------------------------------------------------------------------------
# subscriber JWTs
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jwtsrv(herald_module):
    return herald_module("--jwt-secret", SECRET1, "--jwt-secret", SECRET2)


def q(token, groups=None):
    return f"/ws?token={token}" + (f"&groups={groups}" if groups is not None else "")


def test_jwt_missing_token_is_401(jwtsrv):
    expect_refused(jwtsrv.port, "/ws", 401)
    expect_refused(jwtsrv.port, "/ws?groups=a", 401)
    expect_refused(jwtsrv.port, "/ws?token=", 401)
    expect_refused(jwtsrv.port, "/ws", 401, [("Authorization", "Bearer")])


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_jwt_valid_token_without_groups(jwtsrv, alg):
    tok = make_jwt(SECRET1, claims(), alg=alg)
    expect_upgraded(jwtsrv.port, q(tok))
    expect_upgraded(jwtsrv.port, "/ws", [("Authorization", "Bearer " + tok)])
    expect_upgraded(jwtsrv.port, "/ws", [("Authorization", "bearer " + tok)])


def test_jwt_second_secret_rotation(jwtsrv):
    tok2 = make_jwt(SECRET2, claims(groups=["g"]))
    expect_upgraded(jwtsrv.port, q(tok2, "g"))
    expect_upgraded(jwtsrv.port, "/ws?groups=g", [("Authorization", "Bearer " + tok2)])


def _alg_none(c):
    return b64u(json.dumps({"alg": "none", "typ": "JWT"})) + "." + b64u(json.dumps(c)) + "."


def _tampered():
    good = make_jwt(SECRET1, claims(groups=["a"]))
    h, _, s = good.split(".")
    return h + "." + b64u(json.dumps(claims(groups=["*"]))) + "." + s


def _rs256_confusion(c):
    # header says RS256, signature is an HMAC with the shared secret (algorithm confusion)
    return make_jwt(SECRET1, c, header={"alg": "RS256", "typ": "JWT"}, sig_alg="HS256")


def _flip_sig(tok):
    h, p, s = tok.split(".")
    raw = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    raw[0] ^= 1
    return h + "." + p + "." + b64u(bytes(raw))


BAD_TOKENS = {
    "wrong_secret": lambda: make_jwt("not-the-secret", claims()),
    "flipped_signature_bit": lambda: _flip_sig(make_jwt(SECRET1, claims())),
    "tampered_payload": _tampered,
    "alg_none": lambda: _alg_none(claims()),
    "alg_None_with_valid_hmac": lambda: make_jwt(SECRET1, claims(), header={"alg": "None"}, sig_alg="HS256"),
    "alg_missing": lambda: make_jwt(SECRET1, claims(), header={"typ": "JWT"}, sig_alg="HS256"),
    "rs256": lambda: _rs256_confusion(claims()),
    "es256": lambda: make_jwt(SECRET1, claims(), header={"alg": "ES256"}, sig_alg="HS256"),
    "hs256_signed_as_hs512": lambda: make_jwt(SECRET1, claims(), header={"alg": "HS256"}, sig_alg="HS512"),
    "expired_beyond_leeway": lambda: make_jwt(SECRET1, claims(exp_in=-120)),
    "nbf_in_future": lambda: make_jwt(SECRET1, claims(nbf=int(time.time()) + 300)),
    "missing_exp": lambda: make_jwt(SECRET1, claims(exp_in=None)),
    "exp_not_a_number": lambda: make_jwt(SECRET1, claims(exp_in=None, exp="tomorrow")),
    "groups_not_an_array": lambda: make_jwt(SECRET1, claims(groups="a")),
    "garbage": lambda: "garbage",
    "three_garbage_parts": lambda: "a.b.c",
    "empty_parts": lambda: "..",
    "four_parts": lambda: make_jwt(SECRET1, claims()) + ".x",
    "padded_base64": lambda: make_jwt(SECRET1, claims()) + "=",
    "header_not_json": lambda: b64u("nope") + "." + b64u(json.dumps(claims())) + "." + b64u(b"x" * 32),
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_jwt_bad_token_is_401_before_upgrade(jwtsrv, name):
    tok = BAD_TOKENS[name]()
    expect_refused(jwtsrv.port, q(tok), 401)
    expect_refused(jwtsrv.port, "/ws", 401, [("Authorization", "Bearer " + tok)])


def test_jwt_leeway_default_30s(jwtsrv):
    # expired 5 s ago / valid in 5 s: inside the default 30 s clock-skew allowance
    expect_upgraded(jwtsrv.port, q(make_jwt(SECRET1, claims(exp_in=-5))))
    expect_upgraded(jwtsrv.port, q(make_jwt(SECRET1, claims(nbf=int(time.time()) + 5))))
    # just beyond it
    expect_refused(jwtsrv.port, q(make_jwt(SECRET1, claims(exp_in=-45))), 401)
    expect_refused(jwtsrv.port, q(make_jwt(SECRET1, claims(nbf=int(time.time()) + 45))), 401)


def test_jwt_leeway_flag(herald):
    srv = herald("--jwt-secret", SECRET1, "--jwt-leeway", "0")
    expect_refused(srv.port, q(make_jwt(SECRET1, claims(exp_in=-5))), 401)
    expect_refused(srv.port, q(make_jwt(SECRET1, claims(nbf=int(time.time()) + 5))), 401)
    expect_upgraded(srv.port, q(make_jwt(SECRET1, claims(exp_in=60, nbf=int(time.time()) - 1))))


GRANT = ["chat.*", "news"]


@pytest.mark.parametrize("groups", ["chat.room1", "chat.a.b", "news", "chat.room1,news", "news,chat.x,chat.y"])
def test_jwt_granted_groups_upgrade(jwtsrv, groups):
    expect_upgraded(jwtsrv.port, q(make_jwt(SECRET1, claims(groups=GRANT)), groups))


@pytest.mark.parametrize("groups", ["chat", "chat.", "chatroom", "newsroom", "news.x", "sports",
                                    "news,sports", "chat.ok,other", "other.chat.x"])
def test_jwt_group_not_granted_is_403(jwtsrv, groups):
    tok = make_jwt(SECRET1, claims(groups=GRANT))
    expect_refused(jwtsrv.port, q(tok, groups), 403, www_auth=False)


def test_jwt_without_groups_claim_may_not_join_groups(jwtsrv):
    tok = make_jwt(SECRET1, claims())
    expect_upgraded(jwtsrv.port, q(tok))
    expect_refused(jwtsrv.port, q(tok, "a"), 403)
    empty = make_jwt(SECRET1, claims(groups=[]))
    expect_refused(jwtsrv.port, q(empty, "a"), 403)


def test_jwt_star_grants_every_group(jwtsrv):
    tok = make_jwt(SECRET1, claims(groups=["*"]))
    expect_upgraded(jwtsrv.port, q(tok, "anything,chat,x.y.z"))


def test_jwt_subscriber_receives_only_its_groups(jwtsrv):
    tok = make_jwt(SECRET2, claims(groups=GRANT), alg="HS384")

    async def main():
        async with ws_connect(jwtsrv.port, q(tok, "chat.room1,news")) as a, \
                ws_connect(jwtsrv.port, "/ws?groups=chat.room2",
                           extra_headers={"Authorization": "Bearer " + tok}) as b, \
                ws_connect(jwtsrv.port, q(make_jwt(SECRET1, claims()))) as everyone:
            p = Publisher(jwtsrv.port)   # no publish key configured: /publish needs no token
            try:
                p.publish("r1", group="chat.room1", content_type="text/plain")
                p.publish("r2", group="chat.room2", content_type="text/plain")
                p.publish("n", group="news", content_type="text/plain")
                p.publish("all", content_type="text/plain")
            finally:
                p.close()
            assert await recv_n(a, 3) == ["r1", "n", "all"]
            assert await recv_n(b, 2) == ["r2", "all"]
            assert await recv(everyone) == "all"
            await expect_silence(a, 0.2)
            await expect_silence(everyone, 0.05)
            # the websockets library sees the refusals as 401/403
            for path, code in ((q(tok, "sports"), 403), (q("a.b.c"), 401), ("/ws", 401)):
                with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
                    async with ws_connect(jwtsrv.port, path):
                        pass
                assert ei.value.status_code == code, path
    run(main())


def test_jwt_failures_are_counted_by_reason(herald):
    srv = herald("--jwt-secret", SECRET1)
    before, m0 = auth_counts(srv.port)
    good = claims(groups=["a"])
    cases = [
        ("/ws", "missing"),
        (q(make_jwt("wrong", good)), "bad_signature"),
        (q(_alg_none(good)), "bad_alg"),
        (q(_rs256_confusion(good)), "bad_alg"),
        (q(make_jwt(SECRET1, claims(exp_in=-300))), "expired"),
        (q(make_jwt(SECRET1, claims(nbf=int(time.time()) + 300))), "not_yet_valid"),
        (q(make_jwt(SECRET1, claims(exp_in=None))), "no_exp"),
        (q("garbage"), "malformed"),
    ]
    want = {}
    for path, reason in cases:
        expect_refused(srv.port, path, 401)
        want[reason] = want.get(reason, 0) + 1
    expect_refused(srv.port, q(make_jwt(SECRET1, good), "b"), 403)
    want["forbidden_group"] = 1
    expect_upgraded(srv.port, q(make_jwt(SECRET1, good), "a"))
    after, m1 = auth_counts(srv.port)
    for reason in set(before) | set(want):
        assert after.get(reason, 0) - before.get(reason, 0) == want.get(reason, 0), (reason, before, after)
    assert status_401(m1) - status_401(m0) == len(cases)
    assert m1['herald_requests_failed_total{status="403"}'] - m0['herald_requests_failed_total{status="403"}'] == 1


def test_jwt_and_publish_key_are_independent(herald):
    """--jwt-secret gates /ws only; --publish-key gates /publish only."""
    srv = herald("--jwt-secret", SECRET1, "--publish-key", KEY1)
    tok = make_jwt(SECRET1, claims(groups=["g"]))
    # a subscriber token is not a publish key, and a publish key is not a token
    assert post(srv.port, group="g", auth="Bearer " + tok)[0] == 401
    expect_refused(srv.port, "/ws?groups=g", 401, [("Authorization", "Bearer " + KEY1)])
    expect_refused(srv.port, "/publish?group=g", 401, [("Authorization", "Bearer " + tok)])

    async def main():
        async with ws_connect(srv.port, q(tok, "g")) as sub:
            st, _, _ = post(srv.port, b"ok", group="g", auth="Bearer " + KEY1)
            assert st == 200
            assert await recv(sub) == "ok"
    run(main())


# --------------------------------------------------------------------------
# Origin allow-list
# --------------------------------------------------------------------------

ORIGINS = "https://a.example,https://b.example"


@pytest.fixture(scope="module")
def originsrv(herald_module):
    return herald_module("--allowed-origins", ORIGINS)


@pytest.mark.parametrize("path", ["/ws", "/ws?groups=x", "/publish?group=x"])
@pytest.mark.parametrize("origin", ["https://evil.example", "http://a.example", "https://a.example.evil.com",
                                    "https://a.example:8443", "null", "https://c.example"])
def test_origin_not_allowed_is_403(originsrv, path, origin):
    expect_refused(originsrv.port, path, 403, [("Origin", origin)], www_auth=False)


@pytest.mark.parametrize("path", ["/ws", "/ws?groups=x", "/publish?group=x"])
@pytest.mark.parametrize("origin", ["https://a.example", "https://b.example", "HTTPS://A.EXAMPLE",
                                    "https://B.Example", None])
def test_origin_allowed_or_absent_upgrades(originsrv, path, origin):
    headers = [] if origin is None else [("Origin", origin)]
    expect_upgraded(originsrv.port, path, headers)


def test_origin_end_to_end_with_websockets(originsrv):
    async def main():
        async with ws_connect(originsrv.port, "/ws?groups=o", origin="https://b.example") as sub:
            async with ws_connect(originsrv.port, "/publish?group=o", origin="https://a.example") as pub:
                await pub.send("via allowed origins")
                assert await recv(sub) == "via allowed origins"
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            async with ws_connect(originsrv.port, "/ws?groups=o", origin="https://evil.example"):
                pass
        assert ei.value.status_code == 403
    run(main())


def test_origin_refusals_counted_as_403(herald):
    srv = herald("--allowed-origins", ORIGINS)
    m0 = metrics(srv.port)
    for _ in range(3):
        expect_refused(srv.port, "/ws", 403, [("Origin", "https://evil.example")], www_auth=False)
    m1 = metrics(srv.port)
    k = 'herald_requests_failed_total{status="403"}'
    assert m1[k] - m0[k] == 3


def test_origin_checked_together_with_jwt(herald):
    srv = herald("--allowed-origins", ORIGINS, "--jwt-secret", SECRET1)
    tok = make_jwt(SECRET1, claims(groups=["g"]))
    expect_refused(srv.port, q(tok, "g"), 403, [("Origin", "https://evil.example")], www_auth=False)
    expect_refused(srv.port, "/ws?groups=g", 401, [("Origin", "https://a.example")])
    expect_upgraded(srv.port, q(tok, "g"), [("Origin", "https://a.example")])


# --------------------------------------------------------------------------
# metrics format for the auth families
# --------------------------------------------------------------------------

def test_auth_metric_families_are_typed_counters(keysrv):
    st, _, body = http_call(keysrv.port, "GET", "/metrics")
    assert st == 200
    samples, types = parse_prometheus(body.decode())
    assert types.get("herald_auth_failures_total") == "counter", types
    assert types.get("herald_requests_failed_total") == "counter", types
    for reason in ("missing", "bad_signature"):
        assert f'herald_auth_failures_total{{reason="{reason}"}}' in samples
    before = samples['herald_requests_failed_total{status="401"}']
    assert post(keysrv.port)[0] == 401
    assert metrics(keysrv.port)['herald_requests_failed_total{status="401"}'] == before + 1

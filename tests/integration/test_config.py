"""Configuration (issue 4): JSON config file, HERALD_* environment, flags (flag > env > file > default),
--print-config with masked secrets, exit 2 on bad input, and SIGHUP reload (new keys at once, existing
connections kept, a bad file keeps the old config) including the 1,000-subscriber acceptance test."""

import asyncio
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import SANITIZER_PATTERNS, clean_env, herald_bin
from herald_helpers import (RawWS, expect_silence, http_call, metrics, raw_request, recv, recv_n, run,
                            wait_until, ws_connect, ws_request_bytes)

MASK = "********"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def run_herald(args, env=None, timeout=20):
    e = clean_env()
    e.update(env or {})
    p = subprocess.run([herald_bin()] + [str(a) for a in args], capture_output=True, timeout=timeout, env=e,
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode("utf-8", "replace")
    for pat in SANITIZER_PATTERNS:
        assert pat not in err, f"sanitizer report running herald {args}:\n{err[-4000:]}"
    return p.returncode, p.stdout.decode("utf-8", "replace"), err


def print_config(args=(), env=None):
    rc, out, err = run_herald(list(args) + ["--print-config"], env)
    assert rc == 0, f"--print-config exited {rc}: {err}"
    assert "listening" not in err, "--print-config must not start the server"
    return json.loads(out), out


def write_json(path, obj):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        if isinstance(obj, str):
            f.write(obj)
        else:
            json.dump(obj, f)
    os.replace(tmp, path)    # atomic: a reload never sees a half-written file
    return str(path)


def expect_exit2(args, env=None, mention=None):
    rc, out, err = run_herald(args, env)
    assert rc == 2, f"herald {args} env={env}: exit {rc}, expected 2; stderr={err!r}"
    assert "listening" not in err
    assert err.strip(), "no message on stderr"
    if mention:
        assert mention in err, f"stderr should mention {mention!r}: {err!r}"
    return err


def post(port, body=b"x", group=None, key=None):
    h = {"Content-Length": str(len(body)), "Content-Type": "text/plain"}
    if key is not None:
        h["Authorization"] = "Bearer " + key
    path = "/publish" if group is None else f"/publish?group={group}"
    st, _, _ = http_call(port, "POST", path, body=body, headers=h)
    return st


def help_options():
    rc, out, err = run_herald(["--help"])
    assert rc == 0
    return [o for o in re.findall(r"^  --([a-z0-9-]+)", out, re.M) if o not in ("help", "print-config")]


def hup_and_wait(srv, pattern):
    """SIGHUP, then wait for one more `pattern` line on stderr (bounded)."""
    n0 = srv.stderr_text().count(pattern)
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: srv.stderr_text().count(pattern) > n0, timeout=10,
               what=f"{pattern!r} on stderr after SIGHUP")


RELOADED = "reloaded configuration"
RELOAD_FAILED = "reload failed"


# --------------------------------------------------------------------------
# --print-config, defaults, precedence
# --------------------------------------------------------------------------

def test_print_config_defaults():
    cfg, _ = print_config()
    want = {
        "listen": "127.0.0.1:8080", "max-message-size": 1048576, "queue-limit": 4194304, "write-timeout": 10,
        "ping-interval": 25, "idle-timeout": 60, "max-header-size": 8192, "max-groups": 64,
        "max-conns-per-ip": 0, "client-frame-rate": 100, "accept-rate": 0, "publish-key": [],
        "jwt-secret": [], "jwt-leeway": 30, "allowed-origins": [], "shutdown-timeout": 5,
        "drain-window": 2, "log-format": "text", "log-level": "info", "slow-policy": "close",
        "ipv6-prefix": 64, "header-timeout": 10, "body-timeout": 10, "body-min-rate": 16384,
        "group-linger": 30, "max-live-groups": 1000000,
    }
    for k, v in want.items():
        assert cfg.get(k) == v, f"default {k}: {cfg.get(k)!r}, expected {v!r}"
    assert cfg.get("tls-cert") is None and cfg.get("tls-key") is None
    assert isinstance(cfg.get("workers"), int) and cfg["workers"] >= 1


def test_print_config_lists_every_option():
    cfg, _ = print_config()
    missing = [o for o in help_options() if o not in cfg and o != "config"]
    assert not missing, f"options in --help but not in --print-config: {missing}"


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    f = write_json(tmp_path / "h.json", {"queue-limit": "1m", "max-groups": 5, "drain-window": 0.5,
                                         "log-level": "warn"})
    env = {"HERALD_QUEUE_LIMIT": "2m", "HERALD_MAX_GROUPS": "6"}
    assert print_config()[0]["queue-limit"] == 4 * 1024 * 1024
    cfg = print_config(["--config", f])[0]
    assert (cfg["queue-limit"], cfg["max-groups"], cfg["drain-window"], cfg["log-level"]) == (1048576, 5, 0.5, "warn")
    cfg = print_config(["--config", f], env)[0]
    assert (cfg["queue-limit"], cfg["max-groups"], cfg["drain-window"]) == (2097152, 6, 0.5)
    cfg = print_config(["--config", f, "--queue-limit", "3m"], env)[0]
    assert (cfg["queue-limit"], cfg["max-groups"]) == (3145728, 6)
    cfg = print_config(["--queue-limit=3k"], env)[0]
    assert cfg["queue-limit"] == 3072
    # the flag wins wherever it sits on the command line
    cfg = print_config(["--queue-limit", "3m", "--config", f], env)[0]
    assert cfg["queue-limit"] == 3145728


def test_config_file_value_types(tmp_path):
    f = write_json(tmp_path / "h.json", {
        "max-message-size": 2048, "queue-limit": "8m", "write-timeout": "1.5", "idle-timeout": 90,
        "slow-policy": "drop-oldest", "allowed-origins": "https://a.example, https://b.example",
        "client-frame-rate": "0", "log-format": "json",
    })
    cfg = print_config(["--config", f])[0]
    assert cfg["max-message-size"] == 2048
    assert cfg["queue-limit"] == 8 * 1024 * 1024
    assert cfg["write-timeout"] == 1.5
    assert cfg["idle-timeout"] == 90
    assert cfg["slow-policy"] == "drop-oldest"
    assert cfg["allowed-origins"] == ["https://a.example", "https://b.example"]
    assert cfg["client-frame-rate"] == 0
    assert cfg["log-format"] == "json"
    f2 = write_json(tmp_path / "h2.json", {"allowed-origins": ["https://x.example", "https://y.example"]})
    assert print_config(["--config", f2])[0]["allowed-origins"] == ["https://x.example", "https://y.example"]


def test_config_file_from_HERALD_CONFIG(tmp_path):
    f = write_json(tmp_path / "h.json", {"max-groups": 7})
    assert print_config(env={"HERALD_CONFIG": f})[0]["max-groups"] == 7
    # --config wins over HERALD_CONFIG
    f2 = write_json(tmp_path / "h2.json", {"max-groups": 8})
    assert print_config(["--config", f2], env={"HERALD_CONFIG": f})[0]["max-groups"] == 8


def test_secrets_are_masked(tmp_path):
    f = write_json(tmp_path / "h.json", {"publish-key": ["file-key-AAAA", "file-key-BBBB"],
                                         "jwt-secret": ["file-jwt-CCCC"]})
    cfg, out = print_config(["--config", f])
    assert cfg["publish-key"] == [MASK, MASK]
    assert cfg["jwt-secret"] == [MASK]
    cfg, out2 = print_config(["--publish-key", "flag-key-DDDD", "--jwt-secret", "flag-jwt-EEEE",
                              "--jwt-secret", "flag-jwt-FFFF"], env={"HERALD_PUBLISH_KEY": "env-key-GGGG"})
    assert cfg["publish-key"] == [MASK]          # the flag list replaces the environment's
    assert cfg["jwt-secret"] == [MASK, MASK]
    cfg, out3 = print_config(env={"HERALD_PUBLISH_KEY": "env-key-HHHH,env-key-IIII",
                                  "HERALD_JWT_SECRET": "env-jwt-JJJJ"})
    assert cfg["publish-key"] == [MASK, MASK]
    assert cfg["jwt-secret"] == [MASK]
    for text in (out, out2, out3):
        for secret in ("AAAA", "BBBB", "CCCC", "DDDD", "EEEE", "FFFF", "GGGG", "HHHH", "IIII", "JJJJ"):
            assert secret not in text, f"secret leaked in --print-config: {text}"


# --------------------------------------------------------------------------
# bad input: exit 2 with a message
# --------------------------------------------------------------------------

@pytest.mark.parametrize("content,mention", [
    ({"no-such-option": 1}, "no-such-option"),
    ({"max-groups": 3, "publishkey": ["k"]}, "publishkey"),
    ({"config": "other.json"}, "config"),
    ({"queue-limit": "lots"}, "queue-limit"),
    ({"workers": 0}, "workers"),
    ({"max-groups": -1}, "max-groups"),
    ({"slow-policy": "maybe"}, "slow-policy"),
    ({"log-format": "xml"}, "log-format"),
    ({"drain-window": -1}, "drain-window"),
    ({"write-timeout": "soon"}, "write-timeout"),
    ({"publish-key": [1]}, "publish-key"),
    ({"publish-key": [""]}, "publish-key"),
    ({"max-message-size": True}, "max-message-size"),
    ({"listen": "nowhere"}, "listen"),
    ('{"max-groups": 3', None),
    ("[1, 2]", None),
    ("", None),
])
def test_bad_config_file_exits_2(tmp_path, content, mention):
    f = write_json(tmp_path / "bad.json", content)
    expect_exit2(["--config", f], mention=mention)
    # --print-config does not hide the error either
    expect_exit2(["--config", f, "--print-config"], mention=mention)


def test_missing_config_file_exits_2(tmp_path):
    missing = str(tmp_path / "does-not-exist.json")
    expect_exit2(["--config", missing], mention="does-not-exist.json")
    expect_exit2([], env={"HERALD_CONFIG": missing}, mention="does-not-exist.json")


@pytest.mark.parametrize("var,value", [
    ("HERALD_QUEUE_LIMIT", "abc"), ("HERALD_MAX_GROUPS", "many"), ("HERALD_WORKERS", "0"),
    ("HERALD_SLOW_POLICY", "sometimes"), ("HERALD_LOG_FORMAT", "yaml"), ("HERALD_DRAIN_WINDOW", "-2"),
])
def test_bad_environment_value_exits_2(var, value):
    expect_exit2([], env={var: value}, mention=var)


@pytest.mark.parametrize("args", [
    ["--queue-limit", "abc"], ["--max-groups", "0"], ["--drain-window", "x"], ["--no-such-flag", "1"],
    ["--publish-key"], ["--log-format", "xml"], ["stray-argument"],
])
def test_bad_flag_exits_2(args):
    expect_exit2(args)


def test_flag_fixes_nothing_when_file_is_bad(tmp_path):
    """A bad file is an error even if a flag would override the bad key."""
    f = write_json(tmp_path / "bad.json", {"queue-limit": "lots"})
    expect_exit2(["--config", f, "--queue-limit", "1m"], mention="queue-limit")


# --------------------------------------------------------------------------
# the effective configuration at run time
# --------------------------------------------------------------------------

def test_runtime_uses_file_env_and_flags(herald, tmp_path):
    f = write_json(tmp_path / "h.json", {"max-groups": 2, "publish-key": ["file-key"],
                                         "max-message-size": 100})
    srv = herald("--config", f, env_extra={"HERALD_MAX_MESSAGE_SIZE": "200"})
    port = srv.port
    # max-groups 2 from the file
    assert raw_request(port, ws_request_bytes(path="/ws?groups=a,b,c")).status == 400
    ws = RawWS.connect(port, "/ws?groups=a,b")
    ws.close()
    # publish-key from the file
    assert post(port) == 401
    assert post(port, key="file-key") == 200
    # max-message-size: the environment (200) beats the file (100)
    assert post(port, b"x" * 200, key="file-key") == 200
    assert post(port, b"x" * 201, key="file-key") == 413


def test_runtime_list_precedence(herald, tmp_path):
    f = write_json(tmp_path / "h.json", {"publish-key": ["file-key"]})
    srv = herald("--config", f, env_extra={"HERALD_PUBLISH_KEY": "env-key1,env-key2"})
    assert post(srv.port, key="file-key") == 401
    assert post(srv.port, key="env-key1") == 200
    assert post(srv.port, key="env-key2") == 200
    srv2 = herald("--config", f, "--publish-key", "flag-key",
                  env_extra={"HERALD_PUBLISH_KEY": "env-key1,env-key2"})
    assert post(srv2.port, key="env-key1") == 401
    assert post(srv2.port, key="file-key") == 401
    assert post(srv2.port, key="flag-key") == 200


# --------------------------------------------------------------------------
# SIGHUP reload
# --------------------------------------------------------------------------

def test_reload_changes_publish_key_and_keeps_connections(herald, tmp_path):
    path = tmp_path / "h.json"
    write_json(path, {"publish-key": ["old-key"]})
    srv = herald("--config", str(path))
    port = srv.port

    async def main():
        async with ws_connect(port, "/ws?groups=r") as sub, \
                ws_connect(port, "/publish?group=r", extra_headers={"Authorization": "Bearer old-key"}) as wspub:
            assert post(port, b"one", "r", key="old-key") == 200
            assert post(port, b"nope", "r", key="new-key") == 401
            assert await recv(sub) == "one"

            write_json(path, {"publish-key": ["new-key"]})
            await asyncio.to_thread(hup_and_wait, srv, RELOADED)
            # at once, for new requests
            assert post(port, b"stale", "r", key="old-key") == 401
            assert post(port, b"two", "r", key="new-key") == 200
            assert await recv(sub) == "two"
            await expect_silence(sub, 0.2)          # the 401 one was not published
            # the WebSocket publisher admitted with the old key stays open and keeps publishing
            await wspub.send("three")
            assert await recv(sub) == "three"
            # and a new WebSocket publisher needs the new key
            st = raw_request(port, ws_request_bytes(path="/publish?group=r",
                                                    extra=[("Authorization", "Bearer old-key")])).status
            assert st == 401
            async with ws_connect(port, "/publish?group=r",
                                  extra_headers={"Authorization": "Bearer new-key"}) as p2:
                await p2.send("four")
                assert await recv(sub) == "four"
    run(main())


def test_reload_bad_file_keeps_old_config(herald, tmp_path):
    path = tmp_path / "h.json"
    write_json(path, {"publish-key": ["good-key"], "max-groups": 3})
    srv = herald("--config", str(path))
    port = srv.port
    sub = RawWS.connect(port, "/ws?groups=b")
    try:
        for bad in ('{"publish-key": ["other-key"], ', {"publish-key": ["other-key"], "nonsense": 1},
                    {"publish-key": ["other-key"], "max-groups": "many"}):
            write_json(path, bad)
            hup_and_wait(srv, RELOAD_FAILED)
            assert srv.alive()
            assert post(port, b"x", "b", key="other-key") == 401
            assert post(port, b"kept", "b", key="good-key") == 200
            assert sub.recv_message(5)[1] == b"kept"
            assert raw_request(port, ws_request_bytes(path="/ws?groups=a,b,c,d")).status == 400
        err = srv.stderr_text()
        assert "nonsense" in err, "the reason for the failed reload should be reported"
        # a missing file on reload: reported, old config stays
        os.remove(path)
        hup_and_wait(srv, RELOAD_FAILED)
        assert post(port, b"still", "b", key="good-key") == 200
        assert sub.recv_message(5)[1] == b"still"
        # a good file again is picked up
        write_json(path, {"publish-key": ["third-key"], "max-groups": 4})
        hup_and_wait(srv, RELOADED)
        assert post(port, b"x", "b", key="good-key") == 401
        assert post(port, b"third", "b", key="third-key") == 200
        assert sub.recv_message(5)[1] == b"third"
        RawWS.connect(port, "/ws?groups=a,b,c,d").close()
    finally:
        sub.close()


def test_reload_origins_secrets_and_limits(herald, tmp_path):
    path = tmp_path / "h.json"
    write_json(path, {})
    srv = herald("--config", str(path))
    port = srv.port
    early = RawWS.connect(port, "/ws?groups=o", extra=[("Origin", "https://evil.example")])
    try:
        write_json(path, {"allowed-origins": ["https://good.example"], "jwt-secret": ["s3cret"],
                          "max-message-size": 10})
        hup_and_wait(srv, RELOADED)
        # new upgrades see the origin list and the token requirement
        assert raw_request(port, ws_request_bytes(path="/ws", extra=[("Origin", "https://evil.example")])).status == 403
        assert raw_request(port, ws_request_bytes(path="/ws", extra=[("Origin", "https://good.example")])).status == 401
        # new publishes see the new size limit
        assert post(port, b"x" * 11, "o") == 413
        assert post(port, b"x" * 10, "o") == 200
        # the connection admitted before the reload is kept and still receives
        assert early.recv_message(5)[1] == b"x" * 10
        early.ping_roundtrip()
    finally:
        early.close()


def test_reload_keeps_flag_precedence(herald, tmp_path):
    path = tmp_path / "h.json"
    write_json(path, {"publish-key": ["file-key"]})
    srv = herald("--config", str(path), "--publish-key", "flag-key")
    assert post(srv.port, key="file-key") == 401
    write_json(path, {"publish-key": ["file-key2"], "max-groups": 1})
    hup_and_wait(srv, RELOADED)
    assert post(srv.port, key="file-key2") == 401
    assert post(srv.port, key="flag-key") == 200
    assert raw_request(srv.port, ws_request_bytes(path="/ws?groups=a,b")).status == 400


def test_sighup_without_config_file_is_harmless(herald):
    srv = herald("--publish-key", "k")
    sub = RawWS.connect(srv.port, "/ws")
    try:
        for _ in range(3):
            hup_and_wait(srv, RELOADED)
        assert srv.alive()
        assert post(srv.port, b"alive", key="k") == 200
        assert sub.recv_message(5)[1] == b"alive"
    finally:
        sub.close()


def test_reload_with_1000_subscribers_connected(herald, tmp_path):
    """Issue 4 acceptance: a reload changes the publish key while 1,000 subscribers stay connected
    and keep receiving."""
    N = 1000
    path = tmp_path / "h.json"
    write_json(path, {"publish-key": ["before-key"]})
    srv = herald("--config", str(path))
    port = srv.port

    async def main():
        subs = []
        try:
            for i in range(0, N, 100):
                subs += await asyncio.gather(*(ws_connect(port, "/ws?groups=many", open_timeout=30)
                                               for _ in range(100)))
            m = await asyncio.to_thread(metrics, port)
            assert m['herald_connections{state="subscriber"}'] == N

            async def all_receive(text):
                got = await asyncio.gather(*(recv(ws, 20) for ws in subs))
                assert got == [text] * N

            assert await asyncio.to_thread(post, port, b"before", "many", "before-key") == 200
            await all_receive("before")

            write_json(path, {"publish-key": ["after-key"]})
            await asyncio.to_thread(hup_and_wait, srv, RELOADED)
            assert await asyncio.to_thread(post, port, b"x", "many", "before-key") == 401
            assert await asyncio.to_thread(post, port, b"after", "many", "after-key") == 200
            await all_receive("after")
            for i in range(5):
                assert await asyncio.to_thread(post, port, f"m{i}".encode(), "many", "after-key") == 200
            got = await asyncio.gather(*(recv_n(ws, 5, 20) for ws in subs))
            assert all(g == [f"m{i}" for i in range(5)] for g in got)
            assert all(ws.open for ws in subs), "a subscriber was disconnected by the reload"
            m = await asyncio.to_thread(metrics, port)
            assert m['herald_connections{state="subscriber"}'] == N
        finally:
            await asyncio.gather(*(ws.close() for ws in subs), return_exceptions=True)
    run(main(), timeout=120)


# --------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------

def json_log_lines(text):
    out = []
    for ln in text.splitlines():
        if not ln.strip() or ln.startswith("herald: listening on "):
            continue          # the startup line is part of the interface contract, format fixed
        try:
            obj = json.loads(ln)
        except ValueError:
            raise AssertionError(f"--log-format json: stderr line is not JSON: {ln!r}\nall stderr:\n{text}")
        assert isinstance(obj, dict) and {"ts", "level", "msg"} <= set(obj), ln
        assert obj["level"] in ("debug", "info", "warn", "error"), ln
        out.append(obj)
    return out


def test_json_logs_for_reload_events(herald, tmp_path):
    path = tmp_path / "h.json"
    write_json(path, {"publish-key": ["k"]})
    srv = herald("--config", str(path), "--log-format", "json")
    write_json(path, {"publish-key": ["k2"]})
    hup_and_wait(srv, RELOADED)
    lines = json_log_lines(srv.stderr_text())
    assert any(RELOADED in o["msg"] and o["level"] == "info" for o in lines), lines
    write_json(path, {"publish-key": ["k3"], "unknown-thing": 1})
    hup_and_wait(srv, RELOAD_FAILED)
    lines = json_log_lines(srv.stderr_text())
    failed = [o for o in lines if RELOAD_FAILED in o["msg"]]
    assert failed and failed[0]["level"] in ("error", "warn"), lines
    # the reason (the unknown key) is part of the JSON log, not a stray plain-text line
    assert any("unknown-thing" in o["msg"] for o in lines), lines

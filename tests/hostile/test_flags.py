"""Issue 8: the new limits are flags with safe defaults (--print-config shows the effective values) and
bad values are refused with exit status 2 before anything starts."""

import json
import subprocess

import pytest

from conftest import SANITIZER_PATTERNS, clean_env, herald_bin

DEFAULTS = {
    "header-timeout": 10.0,
    "body-timeout": 10.0,
    "body-min-rate": 16384,
    "group-linger": 30.0,
    "max-live-groups": 1000000,
    "ipv6-prefix": 64,
}


def run(*args):
    p = subprocess.run([herald_bin(), *args], capture_output=True, timeout=30, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode("utf-8", "replace")
    for pat in SANITIZER_PATTERNS:
        assert pat not in err, err
    return p.returncode, p.stdout.decode(), err


def effective_config(*args):
    rc, out, err = run(*args, "--print-config")
    assert rc == 0, f"herald {' '.join(args)} --print-config exited {rc}: {err}"
    return json.loads(out)


def test_defaults():
    cfg = effective_config()
    got = {k: cfg.get(k) for k in DEFAULTS}
    assert got == DEFAULTS


@pytest.mark.parametrize("value", ["0", "1", "48", "64", "128"])
def test_ipv6_prefix_accepts_0_to_128(value):
    assert effective_config("--ipv6-prefix", value)["ipv6-prefix"] == int(value)


BAD = [("--ipv6-prefix", v) for v in ("129", "-1", "abc", "64x", "", "1.5")] + [
    ("--header-timeout", "-1"), ("--header-timeout", "soon"), ("--body-timeout", "-2"),
    ("--body-min-rate", "-5"), ("--body-min-rate", "fast"), ("--group-linger", "-1"),
    ("--max-live-groups", "-1"), ("--max-live-groups", "many"),
]


@pytest.mark.parametrize("flag,value", BAD, ids=[f"{f}={v}" for f, v in BAD])
def test_bad_values_exit_2(flag, value):
    rc, _, err = run(flag, value, "--print-config")
    assert rc == 2, f"{flag} {value!r}: exit {rc}, stderr {err!r}"
    assert flag in err and "unknown option" not in err, f"{flag} {value!r}: {err!r}"

"""Smoke test of the installed Debian package, run by tests/package/test_deb.sh after `dpkg -i`
with HERALD_BIN=/usr/bin/herald: the installed binary, started with the installed config (its
listen address overridden to 127.0.0.1 port 0), delivers a message published with HTTP POST to
a WebSocket subscriber, and /stats reports the version --version prints."""

import json
import os
import subprocess

from conftest import herald_bin
from herald_helpers import apublish, http_call, recv, run, ws_connect

CONFIG = os.environ.get("HERALD_PKG_CONFIG", "/etc/herald/herald.json")


def test_installed_binary_delivers(herald):
    binary = herald_bin()
    assert os.environ.get("HERALD_BIN") == binary and binary.startswith("/usr/"), \
        f"set HERALD_BIN to the installed binary (got {binary})"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    srv = herald("--config", CONFIG)

    async def main():
        async with ws_connect(srv.port, "/ws?groups=smoke") as ws:
            r = await apublish(srv.port, "hello from the package", group="smoke",
                               content_type="text/plain")
            assert (r["ok"], r["group"], r["bytes"]) == (True, "smoke", 22), r
            assert await recv(ws) == "hello from the package"

    run(main())
    st, _, body = http_call(srv.port, "GET", "/stats")
    assert st == 200 and json.loads(body)["version"] == version

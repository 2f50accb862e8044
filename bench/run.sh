#!/usr/bin/env bash
# Side-by-side benchmark: herald vs Node.js ws, nginx+Nchan and Go gorilla
# (issue 3, scenarios S1-S5), herald's workers/pinning on S3, the inbox
# ring microbenchmark, and herald-only extra stages: envelope encoders
# (build/herald-envbench), TLS vs cleartext, a 2-node Redis cluster vs 1 node,
# envelope formats under S2-style load, 1 node vs 3 nodes on one Redis and on a
# 3-master Redis Cluster (cluster3). `make bench` calls this. Recovery times
# (memory vs Redis): bench/recovery.py, separately.
#
#   bench/run.sh                  full run (~9-10 min), table -> bench/results/latest.md
#   bench/run.sh --no-extras      without the extra stages (~6 min)
#   bench/run.sh --quick          short durations, for trying it out
#   bench/run.sh --only herald,gorilla --scenarios S1,S3
#   bench/run.sh --help           all options (bench/lib/harness.py)
#
# Installs what is missing (Debian packages, npm ci), builds herald and
# herald-bench (make build), the Go peer and the ring benchmark, then runs
# bench/lib/harness.py. Environment: BENCH_NO_INSTALL=1 skips apt-get/npm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out="$here/.build"
mkdir -p "$out"

for a in "$@"; do
    if [ "$a" = "--help" ] || [ "$a" = "-h" ]; then
        exec /usr/bin/python3 "$here/lib/harness.py" --help
    fi
done

say() { printf 'bench: %s\n' "$*" >&2; }

# --- dependencies -----------------------------------------------------------
if [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
    missing=()
    have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
    have_pkg nginx-light || have_pkg nginx || have_pkg nginx-core || missing+=(nginx-light)
    for p in libnginx-mod-nchan golang-go golang-github-gorilla-websocket-dev libck-dev nodejs; do
        if [ "$p" = nodejs ]; then
            command -v node >/dev/null && command -v npm >/dev/null && continue
            missing+=(nodejs npm)
            continue
        fi
        have_pkg "$p" || missing+=("$p")
    done
    command -v taskset >/dev/null || missing+=(util-linux)
    # extra stages: TLS vs cleartext (self-signed certificate), clusters via Redis / Redis Cluster
    command -v openssl >/dev/null || missing+=(openssl)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    nodedir="$here/peers/node"
    if [ ! -d "$nodedir/node_modules/ws" ] || [ "$nodedir/package-lock.json" -nt "$nodedir/node_modules/.package-lock.json" ]; then
        say "npm ci (bench/peers/node)"
        (cd "$nodedir" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

# --- builds -------------------------------------------------------------------
say "building herald and herald-bench (make build)"
make -C "$root" build >"$out/make-build.log" 2>&1 || { tail -30 "$out/make-build.log" >&2; exit 1; }
for b in herald herald-bench; do
    [ -x "$root/build/$b" ] || { say "build/$b missing after make build"; exit 1; }
done
[ -x "$root/build/herald-envbench" ] || say "build/herald-envbench missing: its stage will report the failure"

say "building the Go gorilla peer (offline, Debian's gorilla/websocket)"
(cd "$here/peers/gorilla" &&
    GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOCACHE="$out/gocache" \
        go build -o "$out/gorilla-peer" .)

say "building the ring microbenchmark"
make -s -C "$here/ring" OUT="$out" >/dev/null

# --- limits ---------------------------------------------------------------------
# S5 holds 18,000 subscriber sockets in one process (client) and one server.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "open files limit $(ulimit -n)"

exec /usr/bin/python3 "$here/lib/harness.py" "$@"

#!/usr/bin/env bash
# A/B: build two git revisions of herald and run one herald-bench scenario
# against each, alternating, N rounds, in the same run (the machine is shared
# and noisy: only same-run ratios mean anything).
#   bench/ab.sh OLD_REV NEW_REV "HERALD ARGS" "HERALD-BENCH ARGS" [ROUNDS]
# e.g. bench/ab.sh HEAD~1 HEAD "--workers 2" \
#        "--subscribers 10000 --rate 100 --size 128 --duration 8 --source-ips 4" 3
set -euo pipefail
old=$1 new=$2 hargs=$3 bargs=$4 rounds=${5:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/herald-ab.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1 || true;
      git -C "$root" worktree remove --force "$work/new" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
make -C "$root" build >/dev/null
for side in old new; do
    rev=${!side}
    git -C "$root" worktree add --detach "$work/$side" "$rev" >/dev/null 2>&1
    cmake -S "$work/$side" -B "$work/$side/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DHERALD_TESTS=OFF >/dev/null
    cmake --build "$work/$side/build" --target herald -j "$(nproc)" >/dev/null
done
ulimit -n 20000
run() { # binary label
    local err="$work/$2.err" pid port
    "$1" --listen 127.0.0.1:0 $hargs 2>"$err" &
    pid=$!
    for _ in $(seq 100); do grep -q "listening on" "$err" && break; sleep 0.05; done
    port=$(grep -o 'listening on [^ ]*' "$err" | sed 's/.*://')
    "$root/build/herald-bench" --port "$port" --server-pid "$pid" --json $bargs |
        python3 -c "import json,sys; d=json.loads(sys.stdin.readline()); print(('%-4s idle connections %d  server RSS per connection %7.1f B' % ('$2', d['connections_ok'], d['server_rss_per_conn_bytes'] or 0)) if d['mode'] == 'idle' else ('%-4s deliveries/s %9.0f  lost %d  p50 %7.1f ms  p99 %7.1f ms  server CPU us/1k %7.1f' % ('$2', d['deliveries_per_sec'], d['lost'], d['p50_ms'], d['p99_ms'], d['server_cpu_us_per_1k'] or 0)))"
    kill -TERM "$pid"
    wait "$pid" || true
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# old=$old new=$new herald $hargs | herald-bench $bargs"
for _ in $(seq "$rounds"); do
    run "$work/old/build/herald" old
    run "$work/new/build/herald" new
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

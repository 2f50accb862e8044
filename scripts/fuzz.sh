#!/usr/bin/env bash
# Runs every libFuzzer target for a fixed time and fails on any crash.
# usage: scripts/fuzz.sh BUILD_DIR SECONDS
#   BUILD_DIR: a build configured with CC=clang -DHERALD_FUZZ=ON (see `make fuzz`)
#   SECONDS:   time per target (-max_total_time)
# Each target starts from a temporary copy of tests/fuzz/corpus/<target>, so
# the repository corpus does not grow. Crash inputs are kept in
# BUILD_DIR/fuzz-artifacts/<target>/.
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
seconds=$2
case "$seconds" in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
# The core targets are required; any other fuzz_* target in the build
# (added by another module's tests/fuzz/*.cmake) is run too.
targets="fuzz_ws_reader fuzz_http fuzz_utf8"
for extra in "$build"/tests/fuzz/fuzz_*; do
    name=$(basename "$extra")
    [ -f "$extra" ] && [ -x "$extra" ] || continue
    case " $targets " in *" $name "*) ;; *) targets="$targets $name" ;; esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/herald-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failed=0
summary=""
for t in $targets; do
    bin="$build/tests/fuzz/$t"
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: $bin not found (configure with CC=clang -DHERALD_FUZZ=ON and build)" >&2
        summary+="$t: MISSING"$'\n'
        failed=1
        continue
    fi
    corpus="$tmp/$t/corpus"
    mkdir -p "$corpus"
    seeds="$root/tests/fuzz/corpus/${t#fuzz_}"
    if [ -d "$seeds" ]; then
        cp -R "$seeds"/. "$corpus"/
    fi
    artifacts="$build/fuzz-artifacts/$t"
    mkdir -p "$artifacts"
    log="$tmp/$t/log"

    echo "== $t: ${seconds}s"
    # -timeout: a single input taking this long is a hang, reported as a crash.
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
    rc=$?

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$rc" -eq 0 ]; then
        line="$t: OK (${runs:-?} runs, cov ${cov:-?}, ${seconds}s)"
    else
        failed=1
        line="$t: FAILED (exit $rc; artifacts in $artifacts)"
        echo "---- $t log (tail) ----"
        tail -n 60 "$log"
        echo "-----------------------"
    fi
    echo "$line"
    summary+="$line"$'\n'
done

echo
echo "fuzz summary:"
printf '%s' "$summary"
exit "$failed"

#!/bin/sh
# `cmake --install` into a scratch DESTDIR: every file lands where the build says, the unit runs
# the installed binary with the installed config, and that binary accepts that config.
# usage: test_install.sh BUILD_DIR BINDIR MANDIR UNIT_FILE CONFIG_FILE   (absolute install paths)
set -eu
build=$1 bindir=$2 mandir=$3 unit=$4 config=$5
dest=$(mktemp -d "${TMPDIR:-/tmp}/herald-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
fail() { echo "test_install: $*" >&2; exit 1; }

DESTDIR=$dest cmake --install "$build" >/dev/null
echo "installed:"; (cd "$dest" && find . -type f | sort)

bin=$dest$bindir/herald
[ -x "$bin" ] || fail "no executable $bindir/herald"
"$bin" --version | grep -q '^herald [0-9]' || fail "$bindir/herald --version: $("$bin" --version 2>&1)"
gzip -t "$dest$mandir/man1/herald.1.gz" || fail "no valid $mandir/man1/herald.1.gz"
[ -f "$dest$unit" ] || fail "no unit $unit"
grep -qx "ExecStart=$bindir/herald --config $config" "$dest$unit" ||
    fail "$unit does not run $bindir/herald --config $config: $(grep ExecStart= "$dest$unit")"
[ -f "$dest$config" ] || fail "no config $config"
env -i "$bin" --config "$dest$config" --print-config >/dev/null ||
    fail "the installed binary rejects the installed config $config"
n=$(cd "$dest" && find . -type f | wc -l)
[ "$n" -eq 4 ] || fail "expected 4 installed files, found $n"
echo "ok: cmake --install"

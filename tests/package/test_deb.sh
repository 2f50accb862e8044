#!/bin/sh
# The Debian package end to end (issue 12), run by `make deb-test` (CI) as root:
# check its metadata and contents, install it with dpkg -i, run /usr/bin/herald --version and a
# publish/subscribe smoke test against the installed binary and config, then purge it so the
# machine is left as found. Refuses to run if a herald package or /usr/bin/herald already exists.
# usage: tests/package/test_deb.sh BUILD_DIR   (where `make deb` left herald_*.deb)
set -eu
fail() { echo "test_deb: FAIL: $*" >&2; exit 1; }
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
build=$(cd "$1" && pwd) || fail "no directory $1"
cd "$(dirname "$0")/../.."
set -- "$build"/herald_*.deb
if [ $# -ne 1 ] || [ ! -f "$1" ]; then fail "expected exactly one herald_*.deb, found: $*"; fi
deb=$1
[ "$(id -u)" -eq 0 ] || fail "must run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' herald 2>/dev/null | grep -q installed || [ -e /usr/bin/herald ]; then
    fail "herald is already installed here; not replacing it"
fi

echo "== $deb"
dpkg-deb -f "$deb" Package Version Architecture Depends
# Depends must name the package of every shared library the binary loads (dpkg-shlibdeps derives
# them; this checks its result against the binary itself, so a new library cannot be missed).
depends=$(dpkg-deb -f "$deb" Depends)
has_dep() { echo "$depends" | grep -Eq "(^|, )$1( |,|$)"; }
unpacked=$(mktemp -d "${TMPDIR:-/tmp}/herald-deb.XXXXXX")
dpkg-deb -x "$deb" "$unpacked"
needed=$(objdump -p "$unpacked/usr/bin/herald" | awk '$1 == "NEEDED" {print $2}')
rm -rf "$unpacked"
[ -n "$needed" ] || fail "no NEEDED libraries found in /usr/bin/herald"
for so in $needed; do
    path=$(ldconfig -p | awk -v so="$so" '$1 == so {print $NF; exit}')
    [ -n "$path" ] || fail "$so (needed by herald) is not installed here"
    # Debian 12 has merged /usr: dpkg may know the file under /lib or /usr/lib.
    owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "/usr$path" 2>/dev/null || dpkg -S "${path#/usr}" 2>/dev/null) ||
        fail "no package owns $path ($so)"
    pkg=${owner%%:*}
    has_dep "$pkg" || fail "herald needs $so from $pkg, which Depends lacks: $depends"
    echo "needs $so: $pkg"
done
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/herald ./usr/share/man/man1/herald.1.gz ./usr/lib/systemd/system/herald.service \
    ./etc/herald/herald.json; do
    echo "$contents" | grep -qx "$f" || fail "$f is not in the package"
done
[ "$(dpkg-deb -I "$deb" conffiles)" = /etc/herald/herald.json ] || fail "conffiles is not /etc/herald/herald.json"

installed=0
cleanup() {
    if [ $installed -eq 1 ]; then
        dpkg -P herald >/dev/null || echo "test_deb: dpkg -P herald failed: remove it by hand" >&2
    fi
}
trap cleanup EXIT
installed=1
dpkg -i "$deb" || fail "dpkg -i $deb"

version=$(dpkg-deb -f "$deb" Version)
got=$(/usr/bin/herald --version) || fail "/usr/bin/herald --version exited $?"
[ "$got" = "herald ${version%%-*}" ] || fail "/usr/bin/herald --version says '$got', package is $version"
echo "$got"
HERALD_BIN=/usr/bin/herald PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/package/smoke_installed.py

installed=0
dpkg -P herald
for f in /usr/bin/herald /usr/lib/systemd/system/herald.service /etc/herald; do
    [ ! -e "$f" ] || fail "$f is still there after dpkg -P herald"
done
echo "test_deb: ok"

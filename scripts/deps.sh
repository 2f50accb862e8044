#!/usr/bin/env bash
# Installs the Debian packages a make target needs, and only the missing ones.
# usage: scripts/deps.sh build|test|fuzz|deb ...
set -euo pipefail

pkgs_build="build-essential cmake pkg-config libssl-dev libjansson-dev libmsgpack-dev libhiredis-dev libdeflate-dev zlib1g-dev"
pkgs_test="redis-server libcmocka-dev python3 python3-websockets python3-pytest openssl chromium fonts-dejavu-core groff-base"
pkgs_fuzz="clang libclang-rt-14-dev"
# CPack's DEB generator derives Depends with dpkg-shlibdeps (dpkg-dev), finding ELF files with file.
pkgs_deb="dpkg-dev file"

want=""
root=$(cd "$(dirname "$0")/.." && pwd)
for set in "$@"; do
    case "$set" in
        build) want="$want $pkgs_build" ;;
        test) want="$want $pkgs_build $pkgs_test" ;;
        fuzz) want="$want $pkgs_build $pkgs_fuzz" ;;
        deb) want="$want $pkgs_build $pkgs_deb" ;;
        *) echo "deps.sh: unknown package set '$set'" >&2; exit 2 ;;
    esac
done

# The browser test drives Debian's chromium with playwright-core from npm
# (never a downloaded browser); install it once from the lock file.
web_modules() {
    case " $* " in *" test "*) ;; *) return 0 ;; esac
    [ -d "$root/tests/web/node_modules/playwright-core" ] && [ -d "$root/tests/web/node_modules/ws" ] && return 0
    command -v npm >/dev/null || return 0
    npm ci --prefix "$root/tests/web" --no-audit --no-fund --loglevel=error
}

missing=""
# Node.js may come from elsewhere with its own npm (Debian's npm package then
# conflicts): only ask apt for them when the commands are missing.
case " $* " in *" test "*)
    command -v node >/dev/null || missing="$missing nodejs"
    command -v npm >/dev/null || missing="$missing npm" ;;
esac
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    web_modules "$@"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "herald needs these Debian packages:$missing" >&2
    echo "run as root:  apt-get install -y$missing" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
web_modules "$@"

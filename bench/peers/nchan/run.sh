#!/bin/sh
# Render nginx.conf.in into DIR and run nginx+nchan in the foreground there.
# usage: bench/peers/nchan/run.sh DIR PORT [WORKERS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$1 port=$2 workers=${3:-1}
mkdir -p "$dir/tmp" "$dir/logs"
sed -e "s|@PREFIX@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$workers|g" \
    "$here/nginx.conf.in" >"$dir/nginx.conf"
exec nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"

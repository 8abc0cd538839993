#!/bin/sh
# bench/inline.sh BUILD_DIR - measures where small objects should stop living inline in their
# metadata record: PUT and GET ops/s at several sizes with everything inline versus nothing
# inline (always erasure-coded shards), both servers in the same run. The default
# --inline-max is chosen from this table (doc/bench.md).
set -u
BUILD=$(cd "${1:?usage: bench/inline.sh BUILD_DIR}" && pwd)
SECS=${BENCH_SECONDS:-4}
SIZES=${BENCH_SIZES:-4k 16k 64k 128k 256k 1m}
AK=inlineAK0123456789 SK=inlineSK0123456789abcdefghijklmnop
export CAIRN_ACCESS_KEY=$AK CAIRN_SECRET_KEY=$SK
TMP=$(mktemp -d /tmp/cairn-inline.XXXXXX)
trap 'for p in $(cat "$TMP"/*.pid 2>/dev/null); do kill $p 2>/dev/null; done; sleep 0.3; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
start() { # NAME INLINE_MAX -> prints port
    port=$("$BUILD/cairn-bench" --free-port)
    "$BUILD/cairn" server --data "$TMP/$1" --listen 127.0.0.1:$port --inline-max "$2" \
        --no-access-log >"$TMP/$1.log" 2>&1 &
    echo $! >"$TMP/$1.pid"
    "$BUILD/cairn-bench" --endpoint http://127.0.0.1:$port --wait 10 -q
    echo "$port"
}
P_IN=$(start inline 4194304)
P_SH=$(start shards 0)
ops() { # PORT OP SIZE PREFIX -> ops/s
    "$BUILD/cairn-bench" --endpoint "http://127.0.0.1:$1" --bucket inline --op "$2" --size "$3" \
        --prefix "$4" --keys 64 --concurrency 8 --duration "$SECS" --json -q |
        sed -n 's/.*"ops_per_s": *\([0-9.]*\).*/\1/p'
}
printf '%-6s %12s %12s %6s %12s %12s %6s\n' size put_inline put_shards ratio get_inline get_shards ratio
for s in $SIZES; do
    for p in $P_IN $P_SH; do
        "$BUILD/cairn-bench" --endpoint http://127.0.0.1:$p --bucket inline --prepare --size "$s" \
            --prefix "g$s/" --keys 64 -q
    done
    pi=$(ops $P_IN put "$s" "p$s/"); ps=$(ops $P_SH put "$s" "p$s/")
    gi=$(ops $P_IN get "$s" "g$s/"); gs=$(ops $P_SH get "$s" "g$s/")
    printf '%-6s %12s %12s %6s %12s %12s %6s\n' "$s" "$pi" "$ps" \
        "$(awk -v a="$pi" -v b="$ps" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')" "$gi" "$gs" \
        "$(awk -v a="$gi" -v b="$gs" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')"
done

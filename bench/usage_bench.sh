#!/bin/sh
# bench/usage_bench.sh BUILD_DIR - what usage counting and access logs cost on the request path:
# starts two cairn servers in the same run, one as shipped (durable usage records + access log)
# one with --usage-fsync, and one with --no-usage --no-access-log, and times 4 KiB PUT and GET with BUILD_DIR/cairn-bench
# against each, alternating, at 1 and 8 connections. Prints ops/s (and p50 latency) side by side.
# Knobs: BENCH_SECONDS per phase (5), BENCH_TMPDIR (/tmp). Every process started is stopped.
set -u
BUILD=$(cd "${1:?usage: bench/usage_bench.sh BUILD_DIR}" && pwd)
SECS=${BENCH_SECONDS:-5}
BENCH=$BUILD/cairn-bench
export CAIRN_ACCESS_KEY=benchAK0123456789 CAIRN_SECRET_KEY=benchSK0123456789abcdefghijklmnopqrstuv
TMP=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/cairn-usage-bench.XXXXXX") || exit 1
PIDS=
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

start() { # NAME PORT ARGS...
    name=$1 port=$2
    shift 2
    "$BUILD/cairn" server --data "$TMP/$name" --listen "127.0.0.1:$port" --log-level warn "$@" \
        >"$TMP/$name.log" 2>&1 &
    PIDS="$PIDS $!"
    "$BENCH" --endpoint "http://127.0.0.1:$port" --wait 30 -q || { echo "bench: $name did not start" >&2; exit 1; }
}

PORT_ON=$("$BENCH" --free-port)
start on "$PORT_ON"
PORT_OFF=$("$BENCH" --free-port)
start off "$PORT_OFF" --no-usage --no-access-log
PORT_FS=$("$BENCH" --free-port)
start fsync "$PORT_FS" --usage-fsync

# run ENDPOINT OP CONC -> "ops_per_s p50_ms"
run() {
    out=$("$BENCH" --endpoint "http://127.0.0.1:$1" --json -q --op "$2" --size 4k \
        --concurrency "$3" --duration "$SECS" --warmup 1 --keys 1000 --bucket usagebench 2>>"$TMP/bench.err" |
        grep '"phase":"run"' | tail -n 1)
    ops=$(printf '%s' "$out" | sed -n 's/.*"ops_per_s":\([0-9.]*\).*/\1/p')
    p50=$(printf '%s' "$out" | sed -n 's/.*"p50_ms":\([0-9.]*\).*/\1/p')
    printf '%s %s' "${ops:-?}" "${p50:-?}"
}

for p in "$PORT_ON" "$PORT_OFF" "$PORT_FS"; do
    "$BENCH" --endpoint "http://127.0.0.1:$p" --bucket usagebench --prepare --keys 1000 \
        --size 4k -q >/dev/null 2>>"$TMP/bench.err" || { echo "bench: prepare failed" >&2; exit 1; }
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
printf '%-4s %4s  %10s %7s  %10s %7s  %6s  %10s %7s  %6s\n' OP CONN "OFF ops/s" "p50 ms" \
    "ON ops/s" "p50 ms" "ON/OFF" "FSYNC" "p50 ms" "FS/OFF"
for op in put get; do
    for c in 1 8; do
        set -- $(run "$PORT_OFF" $op $c) $(run "$PORT_ON" $op $c) $(run "$PORT_FS" $op $c)
        printf '%-4s %4s  %10s %7s  %10s %7s  %6s  %10s %7s  %6s\n' "$op" "$c" "$1" "$2" "$3" "$4" \
            "$(ratio "$3" "$1")" "$5" "$6" "$(ratio "$5" "$1")"
    done
done
echo "(OFF: --no-usage --no-access-log; ON: default, usage record written before each response"
echo " (kill -9 safe) + access log; FSYNC: --usage-fsync, record fsync'd, group-committed;"
echo " ${SECS}s per phase, 4 KiB objects, loopback, $(nproc) CPUs)"

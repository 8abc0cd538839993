#!/bin/sh
# bench/nodes_bench.sh BUILD_DIR - what storage nodes cost: the embedded default (six drive dirs
# under one data dir, 4+2) against six cairn-chunkd nodes on loopback behind a gateway (--nodes,
# 4+2), both measured in the same run with the same client (cairn-bench): PUT and GET of 16 MiB
# objects (MiB/s, 4 connections) and of 4 KiB objects (ops/s, 16 connections). Then two nodes
# are killed (-9) and the GETs run again (every 16 MiB read reconstructs), plus the PUTs (with
# k+1 = 5 durable shards needed, coded PUTs are expected to be refused). Prints one table with
# the ratio of each figure to the embedded default. Every process it starts is stopped by the
# trap. Knobs: NB_SECONDS per timed phase (5), NB_KEEP=1 keeps the temp dir and logs.
set -u
BUILD=${1:?usage: bench/nodes_bench.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
BENCH=$BUILD/cairn-bench
SECS=${NB_SECONDS:-5}
AK=nodebenchAK0123456789
SK=nodebenchSK0123456789abcdefghijklmnopq
export CAIRN_ACCESS_KEY=$AK CAIRN_SECRET_KEY=$SK
CAIRN_CLUSTER_SECRET=nodebench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export CAIRN_CLUSTER_SECRET

say() { printf '%s\n' "$*" >&2; }
die() { say "nodes_bench: $*"; exit 1; }
for b in cairn cairn-chunkd cairn-bench; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b not built"
done

TMP=$(mktemp -d /tmp/cairn-nodebench.XXXXXX) || exit 1
PIDS=
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    if [ "${NB_KEEP:-0}" = 1 ]; then say "nodes_bench: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# jget JSON KEY - one field of a cairn-bench --json line
jget() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1; }

# run LABEL ENDPOINT ARGS... - one timed cairn-bench phase; prints its "run" JSON line.
run() {
    label=$1 ep=$2
    shift 2
    out=$("$BENCH" --json --label "$label" --endpoint "$ep" --bucket nbench "$@" 2>>"$TMP/bench.err")
    line=$(printf '%s\n' "$out" | grep '"phase":"run"' | tail -n 1)
    printf '%s\n' "$line" >>"$TMP/results.jsonl"
    say "$(printf '  %-26s ops/s %9s  MiB/s %8s  p50 %8s ms  p99 %8s ms  errors %s' "$label" \
        "$(jget "$line" ops_per_s)" "$(jget "$line" mib_per_s)" "$(jget "$line" p50_ms)" \
        "$(jget "$line" p99_ms)" "$(jget "$line" errors)")"
    printf '%s\n' "$line"
}

prepare() { # ENDPOINT (progress lines go to stderr)
    "$BENCH" -q --endpoint "$1" --bucket nbench --prepare --prefix g16m/ --keys 8 --size 16m \
        --prepare-concurrency 4 >&2 2>>"$TMP/bench.err" &&
        "$BENCH" -q --endpoint "$1" --bucket nbench --prepare --prefix g4k/ --keys 1000 --size 4k \
            >&2 2>>"$TMP/bench.err"
}

# measure NAME ENDPOINT: the four figures into NAME_PUT16 NAME_GET16 NAME_PUT4 NAME_GET4.
# PUTs cycle over a fixed key set (overwrites), so the disk use stays bounded.
measure() {
    eval "$1_GET16=\$(run $1-get-16m $2 --op get --size 16m --prefix g16m/ --keys 8 --concurrency 4 \
        --duration $SECS --warmup 1)"
    eval "$1_GET4=\$(run $1-get-4k $2 --op get --size 4k --prefix g4k/ --keys 1000 --concurrency 16 \
        --duration $SECS --warmup 1)"
    eval "$1_PUT16=\$(run $1-put-16m $2 --op put --size 16m --prefix p16m/ --keys 8 --concurrency 4 \
        --duration $SECS)"
    eval "$1_PUT4=\$(run $1-put-4k $2 --op put --size 4k --prefix p4k/ --keys 1000 --concurrency 16 \
        --duration $SECS)"
}

LOAD0=$(cut -d ' ' -f 1 /proc/loadavg)
say "nodes_bench: temp dir $TMP, ${SECS}s per phase, $(nproc) CPUs, load average $LOAD0"

# ------------------------------------------------------------ embedded
EPORT=$("$BENCH" --free-port)
"$BUILD/cairn" server --data "$TMP/embedded" --listen "127.0.0.1:$EPORT" --no-access-log \
    >"$TMP/embedded.log" 2>&1 &
EPID=$!
PIDS="$PIDS $EPID"
EEP=http://127.0.0.1:$EPORT
"$BENCH" --endpoint "$EEP" --wait 20 || { tail -n 20 "$TMP/embedded.log" >&2; die "cairn did not start"; }
say "nodes_bench: embedded cairn (6 drive dirs, 4+2) on port $EPORT"
prepare "$EEP" || die "prepare (embedded) failed"
measure EMB "$EEP"
kill "$EPID" 2>/dev/null
wait "$EPID" 2>/dev/null
rm -rf "$TMP/embedded"

# --------------------------------------------------------------- nodes
URLS=
NPIDS=
i=0
while [ $i -lt 6 ]; do
    p=$("$BENCH" --free-port)
    mkdir -p "$TMP/node$i"
    "$BUILD/cairn-chunkd" --listen "127.0.0.1:$p" --dir "$TMP/node$i" >"$TMP/node$i.log" 2>&1 &
    eval "NODE_PID_$i=$!"
    PIDS="$PIDS $!"
    NPIDS="$NPIDS $!"
    "$BENCH" --endpoint "http://127.0.0.1:$p" --wait 20 ||
        { tail -n 20 "$TMP/node$i.log" >&2; die "cairn-chunkd $i did not start"; }
    URLS="$URLS${URLS:+,}http://127.0.0.1:$p"
    i=$((i + 1))
done
GPORT=$("$BENCH" --free-port)
"$BUILD/cairn" server --data "$TMP/gateway" --listen "127.0.0.1:$GPORT" --no-access-log \
    --nodes "$URLS" --ec 4+2 --scrub-rate 0 >"$TMP/gateway.log" 2>&1 &
GPID=$!
PIDS="$PIDS $GPID"
GEP=http://127.0.0.1:$GPORT
"$BENCH" --endpoint "$GEP" --wait 30 || { tail -n 20 "$TMP/gateway.log" >&2; die "the gateway did not start"; }
say "nodes_bench: gateway on port $GPORT, six cairn-chunkd: $URLS"
prepare "$GEP" || die "prepare (nodes) failed"
measure NOD "$GEP"

# ---------------------------------------------------- two nodes killed
eval "kill -9 \$NODE_PID_1 \$NODE_PID_4"
eval "wait \$NODE_PID_1 \$NODE_PID_4" 2>/dev/null
say "nodes_bench: killed nodes 1 and 4 (-9)"
measure DEG "$GEP"

# --------------------------------------------------------------- table
# cell LINE FIELD: the figure, "failed" if every request failed, a * if some did.
cell() {
    awk -v v="$(jget "$1" "$2")" -v e="$(jget "$1" errors)" -v o="$(jget "$1" ops)" 'BEGIN {
        if (v == "") print "-"; else if (e + 0 > 0 && o + 0 == 0) print "failed";
        else if (e + 0 > 0) print v "*"; else print v }'
}
# ratio A B: A / B, or - when either is not a number
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
# row FIGURE FIELD EMB NODES DEGRADED
row() {
    e=$(cell "$3" "$2") n=$(cell "$4" "$2") d=$(cell "$5" "$2")
    printf '%-24s %10s %10s %6s %14s %6s\n' "$1" "$e" "$n" "$(ratio "$n" "$e")" "$d" "$(ratio "$d" "$e")"
}
echo
echo "cairn nodes bench, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, ${SECS}s phases, loopback"
printf '%-24s %10s %10s %6s %14s %6s\n' figure embedded "6 nodes" ratio "nodes, 2 dead" ratio
row "PUT 16 MiB c=4, MiB/s" mib_per_s "$EMB_PUT16" "$NOD_PUT16" "$DEG_PUT16"
row "GET 16 MiB c=4, MiB/s" mib_per_s "$EMB_GET16" "$NOD_GET16" "$DEG_GET16"
row "PUT 4 KiB c=16, ops/s" ops_per_s "$EMB_PUT4" "$NOD_PUT4" "$DEG_PUT4"
row "GET 4 KiB c=16, ops/s" ops_per_s "$EMB_GET4" "$NOD_GET4" "$DEG_GET4"
echo
echo "ratios are to the embedded default of this run; * = some requests failed, failed = all did"
echo "(with 2 of 6 nodes dead a coded PUT cannot have the k+1 = 5 durable shards it needs)."
l=
for v in EMB_GET16 NOD_GET16 DEG_GET16 EMB_GET4 NOD_GET4 DEG_GET4; do
    eval "l=\$$v"
    printf '  %-10s p50 %8s ms  p99 %8s ms  errors %s\n' "$v" "$(jget "$l" p50_ms)" "$(jget "$l" p99_ms)" \
        "$(jget "$l" errors)"
done
echo "  load average $LOAD0 at start, $(cut -d ' ' -f 1 /proc/loadavg) at end ($(nproc) CPUs)"
if [ -s "$TMP/bench.err" ]; then
    echo "  client messages (most frequent):"
    sed 's/[0-9]\{4,\}/N/g' "$TMP/bench.err" | cut -c1-110 | sort | uniq -c | sort -rn | head -n 6 | sed 's/^/    /'
fi
kill -0 "$GPID" 2>/dev/null || echo "  the gateway is no longer running (see its log)"
exit 0

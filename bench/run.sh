#!/bin/sh
# bench/run.sh BUILD_DIR - what `make bench` runs: on loopback, in a fresh temp dir, measures
# nginx (static files), the disk (dd) and cairn with the same client (BUILD_DIR/cairn-bench),
# then prints one table: figure, cairn, baseline, ratio, target, pass/fail. Every process it
# starts is stopped by the trap. How to read the figures: doc/bench.md.
#
# Knobs (environment): BENCH_SECONDS per timed phase (8), BENCH_BIG_KEYS keys in the big
# listing bucket (1000000), BENCH_PRELOAD_BUDGET seconds the big preload may take (90),
# BENCH_TMPDIR parent of the temp dir (/tmp), BENCH_KEEP=1 keeps the temp dir, BENCH_STRICT=1
# exits 1 when a figure misses its target (otherwise only set-up failures do).

set -u
BUILD=${1:?usage: bench/run.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
BENCH=$BUILD/cairn-bench
CAIRN=$BUILD/cairn
SECS=${BENCH_SECONDS:-8}
BIG_KEYS=${BENCH_BIG_KEYS:-1000000}
BUDGET=${BENCH_PRELOAD_BUDGET:-90}
RESULTS=$BUILD/bench-results.jsonl
AK=benchAK0123456789
SK=benchSK0123456789abcdefghijklmnopqrstuv
export CAIRN_ACCESS_KEY=$AK CAIRN_SECRET_KEY=$SK

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

[ -x "$BENCH" ] || die "$BENCH not built (make cairn-bench)"
[ -x "$CAIRN" ] || die "$CAIRN not built (make cairn)"

# ------------------------------------------------------------------- nginx
NGINX=$(command -v nginx 2>/dev/null || true)
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; }
if [ -z "$NGINX" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "bench: nginx missing; installing nginx-light"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null ||
            die "apt-get install nginx-light failed"
        NGINX=/usr/sbin/nginx
    else
        say "bench: nginx not found; install it with: sudo apt-get install nginx-light"
        say "bench: (the nginx baselines will be missing from the table)"
    fi
fi

# ---------------------------------------------------------- temp and trap
TMP=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/cairn-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$TMP" # nginx workers run as another user when started as root
NGINX_PID=
CAIRN_PID=
cleanup() {
    for p in $CAIRN_PID $NGINX_PID; do
        kill "$p" 2>/dev/null
    done
    for p in $CAIRN_PID $NGINX_PID; do
        wait "$p" 2>/dev/null
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        say "bench: kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
: >"$RESULTS"

# jget JSON KEY - one field of a cairn-bench --json line
jget() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1; }

# bench LABEL ARGS... - runs cairn-bench --json, keeps every line in $RESULTS, prints the
# "run" line (or the last line) on stdout.
bench() {
    label=$1
    shift
    out=$("$BENCH" --json --label "$label" "$@" 2>>"$TMP/bench.err")
    rc=$?
    printf '%s\n' "$out" >>"$RESULTS"
    line=$(printf '%s\n' "$out" | grep '"phase":"run"' | tail -n 1)
    [ -n "$line" ] || line=$(printf '%s\n' "$out" | tail -n 1)
    [ $rc = 0 ] || say "bench: $label: cairn-bench exited $rc (see below)"
    printf '%s\n' "$line"
}

# Progress line for one result.
show() {
    say "$(printf '  %-28s ops/s %10s  MiB/s %9s  p50 %8s ms  p99 %8s ms  err %s/%s' "$1" \
        "$(jget "$2" ops_per_s)" "$(jget "$2" mib_per_s)" "$(jget "$2" p50_ms)" \
        "$(jget "$2" p99_ms)" "$(jget "$2" errors)" "$(jget "$2" verify_errors)")"
}

if ! "$BENCH" --self-test >"$TMP/selftest.txt"; then
    cat "$TMP/selftest.txt" >&2
    die "SigV4 self-test failed"
fi
LOAD0=$(cut -d ' ' -f 1 /proc/loadavg)
say "bench: temp dir $TMP, ${SECS}s per phase, $(nproc) CPUs, load average $LOAD0"
awk -v l="$LOAD0" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }' &&
    say "bench: WARNING: the machine is busy (load $LOAD0 on $(nproc) CPUs); figures will be noisy"

# Both servers run side by side and each nginx phase is followed at once by the matching
# cairn phase, so a change in background load hits both figures of a ratio alike.

# ------------------------------------------------------- (1) nginx setup
N_GET4= N_GET16=
if [ -n "$NGINX" ]; then
    NPORT=$("$BENCH" --free-port)
    mkdir -p "$TMP/nginx/tmp" "$TMP/www"
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$NPORT;
        root $TMP/www;
    }
}
EOF
    # The files sit at /bench/KEY, the path cairn serves the same objects at, so request
    # lines and signed headers are byte-for-byte the same size for both servers.
    "$BENCH" -q --prepare-dir "$TMP/www" --bucket bench --prefix g4k/ --keys 1000 --size 4k &&
        "$BENCH" -q --prepare-dir "$TMP/www" --bucket bench --prefix g16m/ --keys 8 --size 16m ||
        die "could not write the nginx files"
    "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        -g 'daemon off;' 2>>"$TMP/nginx/error.log" &
    NGINX_PID=$!
    "$BENCH" --endpoint "http://127.0.0.1:$NPORT" --wait 10 ||
        { cat "$TMP/nginx/error.log" >&2; die "nginx did not start"; }
    say "bench: nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') on port $NPORT"
    NE="--endpoint http://127.0.0.1:$NPORT --bucket bench"
fi

# ------------------------------------------------------- (2) cairn setup
CPORT=$("$BENCH" --free-port)
mkdir -p "$TMP/data"
"$CAIRN" server --data "$TMP/data" --listen "127.0.0.1:$CPORT" >"$TMP/cairn.log" 2>&1 &
CAIRN_PID=$!
CE="--endpoint http://127.0.0.1:$CPORT"
"$BENCH" $CE --wait 20 || { tail -n 20 "$TMP/cairn.log" >&2; die "cairn did not start"; }
say "bench: cairn pid $CAIRN_PID on port $CPORT, data $TMP/data"
P=$(bench prep-4k $CE --bucket bench --prepare --prefix g4k/ --keys 1000 --size 4k)
show "prepare 1000 x 4 KiB" "$P"
P=$(bench prep-16m $CE --bucket bench --prepare --prefix g16m/ --keys 8 --size 16m)
show "prepare 8 x 16 MiB" "$P"

# ------------------------------------------------------------- (3) GETs
if [ -n "$NGINX" ]; then
    N_GET4=$(bench nginx-get-4k $NE --op get --size 4k --keys 1000 --prefix g4k/ \
        --concurrency 16 --duration "$SECS" --warmup 1)
    show "nginx GET 4 KiB c=16" "$N_GET4"
fi
C_GET4=$(bench cairn-get-4k $CE --bucket bench --op get --size 4k --keys 1000 --prefix g4k/ \
    --concurrency 16 --duration "$SECS" --warmup 1)
show "cairn GET 4 KiB c=16" "$C_GET4"
C_GET4_1=$(bench cairn-get-4k-c1 $CE --bucket bench --op get --size 4k --keys 1000 \
    --prefix g4k/ --concurrency 1 --duration 3)
show "cairn GET 4 KiB c=1" "$C_GET4_1"
if [ -n "$NGINX" ]; then
    N_GET16=$(bench nginx-get-16m $NE --op get --size 16m --keys 8 --prefix g16m/ \
        --concurrency 4 --duration "$SECS" --warmup 1)
    show "nginx GET 16 MiB c=4" "$N_GET16"
fi
C_GET16=$(bench cairn-get-16m $CE --bucket bench --op get --size 16m --keys 8 --prefix g16m/ \
    --concurrency 4 --duration "$SECS" --warmup 1)
show "cairn GET 16 MiB c=4" "$C_GET16"
if [ -n "$NGINX_PID" ]; then
    kill "$NGINX_PID" 2>/dev/null
    wait "$NGINX_PID" 2>/dev/null
    NGINX_PID=
    rm -rf "$TMP/www"
fi

# -------------------------------------------------------- (4) disk, PUTs
DD_LINE=$(dd if=/dev/zero of="$TMP/ddtest" bs=1M count=512 conv=fdatasync 2>&1 | tail -n 1)
rm -f "$TMP/ddtest"
# "536870912 bytes (537 MB, 512 MiB) copied, 1.234 s, 435 MB/s": bytes and seconds.
DD_MIBS=$(printf '%s\n' "$DD_LINE" |
    awk '{ for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1)
           if (s > 0) printf "%.1f", $1 / s / 1048576 }')
say "bench: dd 512 MiB fdatasync (same filesystem as the data dir): $DD_LINE"
C_PUT16=$(bench cairn-put-16m $CE --bucket bench --op put --size 16m --prefix p16m/ \
    --concurrency 4 --duration "$SECS")
show "cairn PUT 16 MiB c=4" "$C_PUT16"
C_PUT4=$(bench cairn-put-4k $CE --bucket bench --op put --size 4k --prefix p4k/ \
    --concurrency 16 --duration "$SECS" --verify)
show "cairn PUT 4 KiB c=16" "$C_PUT4"
V=$(grep '"label":"cairn-put-4k"' "$RESULTS" | grep '"phase":"verify"' | tail -n 1)
[ -n "$V" ] && show "  read-back of those PUTs" "$V"

# ---------------------------------------------------------- (5) listing
# 10,000 keys in a bucket of their own; then a big bucket of ten equal prefixes d0/..d9/
# where d5/ is listed, so its pages sit in the middle of the keyspace.
T0=$(date +%s.%N)
P=$(bench prep-list10k $CE --bucket list10k --prepare --prefix k/ --keys 10000 --size 0 \
    --prepare-concurrency 32)
T1=$(date +%s.%N)
show "preload 10000 x 0 B c=32" "$P"
RATE=$(awk -v a="$T0" -v b="$T1" 'BEGIN { d = b - a; if (d <= 0) d = 1; printf "%d", 10000 / d }')
PER=$(awk -v want="$BIG_KEYS" -v rate="$RATE" -v budget="$BUDGET" 'BEGIN {
    n = want; if (rate * budget < n) n = rate * budget; n = int(n / 10 / 1000) * 1000;
    if (n < 1000) n = 1000; print n }')
BIG=$((PER * 10))
[ "$BIG" -lt "$BIG_KEYS" ] &&
    say "bench: preload runs at ~$RATE keys/s: big bucket cut to $BIG keys to stay in ${BUDGET}s"
T0=$(date +%s.%N)
i=0
while [ $i -lt 10 ]; do
    P=$(bench "prep-big-d$i" $CE --bucket listbig --prepare --prefix "d$i/" --keys "$PER" \
        --size 0 --prepare-concurrency 32)
    [ "$(jget "$P" errors)" = 0 ] || say "bench: preload d$i/ had errors"
    i=$((i + 1))
done
T1=$(date +%s.%N)
BIG_SECS=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')
say "bench: preloaded $BIG keys into listbig in ${BIG_SECS}s"
LSECS=$(( (SECS + 1) / 2 ))
[ "$LSECS" -ge 3 ] || LSECS=3
C_LIST10K=$(bench cairn-list-10k $CE --bucket list10k --op list --prefix k/ --concurrency 1 \
    --duration "$LSECS" --verify)
show "cairn LIST 10k bucket c=1" "$C_LIST10K"
C_LISTBIG=$(bench cairn-list-big $CE --bucket listbig --op list --prefix d5/ --concurrency 1 \
    --duration "$LSECS" --verify)
show "cairn LIST big bucket c=1" "$C_LISTBIG"

RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$CAIRN_PID/status" 2>/dev/null)
kill -0 "$CAIRN_PID" 2>/dev/null || say "bench: cairn is no longer running (see $TMP/cairn.log)"

# ------------------------------------------------------------------ table
# row FIGURE CAIRN BASELINE CMP TARGET ERRS: CMP ge (higher is better) or le (lower is better)
FAILS=0
row() {
    r=$(awk -v c="$2" -v b="$3" -v cmp="$4" -v t="$5" -v e="$6" 'BEGIN {
        if (c == "" || b == "" || b + 0 == 0) { printf "%-7s %-6s", "-", "n/a"; exit }
        ratio = c / b; ok = (cmp == "ge") ? ratio >= t : ratio <= t;
        if (e != "" && e + 0 > 0) ok = 0;
        printf "%-7.2f %-6s", ratio, ok ? "PASS" : (e + 0 > 0 ? "ERRORS" : "FAIL") }')
    case $r in *FAIL* | *ERRORS*) FAILS=$((FAILS + 1)) ;; esac
    tgt=$(awk -v t="$5" -v cmp="$4" 'BEGIN { printf "%s %.2f", cmp == "ge" ? ">=" : "<=", t }')
    printf '%-48s %12s %12s  %s  %s\n' "$1" "${2:--}" "${3:--}" "$(printf '%s' "$r" |
        awk '{ print $1 }')   $tgt" "$(printf '%s' "$r" | awk '{ print $2 }')"
}
errs() { awk -v a="$(jget "$1" errors)" -v b="$(jget "$1" verify_errors)" 'BEGIN { print a + b }'; }

GET4_P50=$(jget "$C_GET4" p50_ms)
LIST_BASE=$(awk -v p="$GET4_P50" 'BEGIN { if (p != "") printf "%.3f", 10 * p }')
PUT_BASE=$(awk -v d="$DD_MIBS" 'BEGIN { if (d != "") printf "%.1f", d * 4 / 6 }')

echo
echo "cairn bench, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, ${SECS}s phases, loopback"
printf '%-48s %12s %12s  %-7s %-8s %s\n' figure cairn baseline ratio target result
row "GET 4 KiB c=16, ops/s (vs nginx)" "$(jget "$C_GET4" ops_per_s)" \
    "$(jget "$N_GET4" ops_per_s)" ge 0.60 "$(errs "$C_GET4")"
row "GET 16 MiB c=4, MiB/s (vs nginx)" "$(jget "$C_GET16" mib_per_s)" \
    "$(jget "$N_GET16" mib_per_s)" ge 0.50 "$(errs "$C_GET16")"
row "PUT 16 MiB c=4, MiB/s (vs dd x 4/6)" "$(jget "$C_PUT16" mib_per_s)" "$PUT_BASE" ge 0.80 \
    "$(errs "$C_PUT16")"
row "PUT 4 KiB c=16 durable, ops/s (vs GET 4 KiB)" "$(jget "$C_PUT4" ops_per_s)" \
    "$(jget "$C_GET4" ops_per_s)" ge 0.333 "$(errs "$C_PUT4")"
row "LIST 1000-key page, 10k-key bucket, p50 ms" "$(jget "$C_LIST10K" p50_ms)" "$LIST_BASE" le \
    1.00 "$(errs "$C_LIST10K")"
row "LIST page, 1/10 prefix of $BIG keys, p50 ms" "$(jget "$C_LISTBIG" p50_ms)" "$LIST_BASE" le \
    1.00 "$(errs "$C_LISTBIG")"
printf '%-48s %12s\n' "server peak RSS (VmHWM), MiB" \
    "$(awk -v k="$RSS_KB" 'BEGIN { if (k != "") printf "%.1f", k / 1024; else print "-" }')"
echo
echo "notes: baselines - nginx $(jget "$N_GET4" ops_per_s) ops/s (4 KiB), \
$(jget "$N_GET16" mib_per_s) MiB/s (16 MiB); dd ${DD_MIBS:-?} MiB/s x 4/6 = ${PUT_BASE:-?};"
echo "  list baseline = 10 x GET 4 KiB c=16 p50 (${GET4_P50:-?} ms); GET 4 KiB c=1 p50 \
$(jget "$C_GET4_1" p50_ms) ms;"
echo "  list p99 $(jget "$C_LIST10K" p99_ms) ms (10k bucket), $(jget "$C_LISTBIG" p99_ms) ms (big)"
echo "  big bucket: $BIG keys preloaded in ${BIG_SECS}s (~$RATE keys/s at c=32, 0-byte PUTs)"
echo "  load average $LOAD0 at start, $(cut -d ' ' -f 1 /proc/loadavg) at end ($(nproc) CPUs)"
echo "  every result line: $RESULTS"
if [ -s "$TMP/bench.err" ]; then
    echo "  client messages:"
    sort "$TMP/bench.err" | uniq -c | sort -rn | head -n 8 | sed 's/^/    /'
fi
[ $FAILS = 0 ] || echo "$FAILS figure(s) below target"
[ "${BENCH_STRICT:-0}" = 1 ] && [ $FAILS != 0 ] && exit 1
exit 0

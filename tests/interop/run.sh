#!/usr/bin/env bash
# tests/interop/run.sh - the interop suite: real clients against a real cairn on loopback.
#
#   tests/interop/run.sh BUILD_DIR                  start BUILD_DIR/cairn on a free 127.0.0.1 port
#   S3_ENDPOINT=http://host:port tests/interop/run.sh   use a running endpoint (AWS_ACCESS_KEY_ID and
#                                                   AWS_SECRET_ACCESS_KEY, or CAIRN_*, must be set)
#
# Runs each client suite (aws cli on PATH and /usr/bin/aws, boto3 under python3 and
# /usr/bin/python3, raw SigV4 requests, the AWS SDK for JavaScript, failure tests), prints each
# suite's TAP, and ends with one line "N passed, N failed[, N skipped]" summed over all of them.
# Exit status is non-zero on any failure. Every process it starts is stopped on exit.
# Environment: CAIRN_IT_BIG=0 skips the >100 MiB uploads; CAIRN_IT_SUITES="awscli boto3 ..."
# picks suites (names: awscli boto3 raw sdk-js access cors-browser failure usage events nodes); ASAN_OPTIONS/UBSAN_OPTIONS are passed on.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-}
SUITES=${CAIRN_IT_SUITES:-awscli boto3 raw sdk-js access cors-browser failure usage events nodes}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cairn-interop.XXXXXX")
SERVER_PIDS=()
cleanup() {
    local p i
    for p in "${SERVER_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${SERVER_PIDS[@]}"; do
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}

TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0
FAILED_SUITES=()

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# answers URL: true when something at URL speaks HTTP.
answers() {
    python3 - "$1" <<'EOF'
import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=3)
    c.request("GET", "/")
    c.getresponse().read()
except Exception:
    sys.exit(1)
EOF
}

# tally NAME FILE RC: add one suite's TAP (in FILE, exit code RC) to the totals.
tally() {
    local name=$1 file=$2 rc=$3 p f s plan counted todo
    p=$(grep -Ec '^ok [0-9]+' "$file" | head -n1)
    s=$(grep -Eic '^ok [0-9]+( -)?[^#]*# *skip' "$file")
    todo=$(grep -Eic '^not ok [0-9]+( -)?[^#]*# *todo' "$file")
    f=$(($(grep -Ec '^not ok [0-9]+' "$file") - todo))
    p=$((p - s))
    s=$((s + todo))
    plan=$(grep -Eo '^1\.\.[0-9]+' "$file" | tail -n1 | cut -c4-)
    if grep -Eqi '^1\.\.0 *# *skip' "$file"; then
        s=$((s + 1))
    fi
    counted=$((p + s + f))
    if grep -Eqi '^1\.\.0 *# *skip' "$file"; then counted=$((counted - 1)); fi
    if [ -z "$plan" ]; then
        echo "not ok - $name: no TAP plan (the suite died early, exit $rc)"
        f=$((f + 1))
    elif [ "$plan" != "$counted" ]; then
        echo "not ok - $name: plan 1..$plan but $counted test lines"
        f=$((f + 1))
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $name: exit status $rc with no failing test"
        f=$((f + 1))
    fi
    echo "# $name: $p passed, $f failed, $s skipped$([ "$todo" -gt 0 ] && echo " ($todo of them TODO: failing checks of what is not built yet)")"
    TOTAL_PASS=$((TOTAL_PASS + p))
    TOTAL_FAIL=$((TOTAL_FAIL + f))
    TOTAL_SKIP=$((TOTAL_SKIP + s))
    [ "$f" -eq 0 ] || FAILED_SUITES+=("$name")
}

# suite NAME TIMEOUT CMD...: run one client suite with a time limit, print and tally its TAP.
suite() {
    local name=$1 tmo=$2 rc t0
    shift 2
    echo "# ---------------------------------------------------------------- $name"
    t0=$(date +%s)
    timeout -k 10 "$tmo" "$@" </dev/null >"$TMP/suite.out" 2>"$TMP/suite.err"
    rc=$?
    cat "$TMP/suite.out"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "# $name: timed out after ${tmo}s"
    fi
    if [ -s "$TMP/suite.err" ] && { [ "$rc" -ne 0 ] || [ -n "${CAIRN_IT_VERBOSE:-}" ]; }; then
        echo "# stderr of $name (last lines):"
        tail -n 20 "$TMP/suite.err" | cut -c1-300 | sed 's/^/#   /'
    fi
    tally "$name" "$TMP/suite.out" "$rc"
    echo "# $name took $(($(date +%s) - t0))s"
}

# skip_suite NAME REASON
skip_suite() {
    echo "# ---------------------------------------------------------------- $1"
    echo "1..0 # SKIP $2"
    echo "# $1: 0 passed, 0 failed, 1 skipped"
    TOTAL_SKIP=$((TOTAL_SKIP + 1))
}

want() { [[ " $SUITES " == *" $1 "* ]]; }

# ------------------------------------------------------------- the servers
SRV_N=0
SRV_FAIL=0
srv_ok() { SRV_N=$((SRV_N + 1)); echo "ok $SRV_N - $*" >>"$TMP/server.tap"; }
srv_notok() { SRV_N=$((SRV_N + 1)); SRV_FAIL=$((SRV_FAIL + 1)); echo "not ok $SRV_N - $*" >>"$TMP/server.tap"; }
: >"$TMP/server.tap"

# start_server NAME DATA_DIR PORT ARGS...: start cairn, wait until it answers (30 s).
start_server() {
    local name=$1 data=$2 port=$3 pid i
    shift 3
    mkdir -p "$data"
    "$BUILD/cairn" server --data "$data" --listen "127.0.0.1:$port" "$@" >"$TMP/$name.log" 2>&1 &
    pid=$!
    SERVER_PIDS+=("$pid")
    eval "PID_$name=$pid"
    for i in $(seq 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            srv_notok "$name server started (it exited with status $?)"
            { grep -E -m1 -A12 'ERROR: .*Sanitizer|runtime error:' "$TMP/$name.log" || tail -n 12 "$TMP/$name.log"; } |
                cut -c1-300 | sed 's/^/#   /' >>"$TMP/server.tap"
            return 1
        fi
        if answers "http://127.0.0.1:$port"; then
            srv_ok "$name server started and answers on 127.0.0.1:$port ($((i / 10)).$((i % 10))s)"
            return 0
        fi
        sleep 0.1
    done
    srv_notok "$name server answers within 30s"
    return 1
}

# stop_server NAME: SIGTERM, must exit by itself within 15 s; the log must hold no sanitizer report.
stop_server() {
    local name=$1 pid i rc
    eval "pid=\${PID_$name:-}"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        srv_ok "$name server still running after the suites"
        kill -TERM "$pid"
        for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            srv_notok "$name server exits on SIGTERM within 15s"
            kill -KILL "$pid" 2>/dev/null
        else
            wait "$pid"
            rc=$?
            if [ "$rc" -eq 0 ] || [ "$rc" -eq 143 ]; then srv_ok "$name server exits on SIGTERM (status $rc)"; else
                srv_notok "$name server exits cleanly on SIGTERM (status $rc)"
            fi
        fi
    else
        wait "$pid"
        srv_notok "$name server still running after the suites (it died with status $?)"
    fi
    if grep -Eq 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: .*Sanitizer' "$TMP/$name.log"; then
        srv_notok "$name server log holds no sanitizer report"
        grep -E -A25 'ERROR: .*Sanitizer|runtime error:' "$TMP/$name.log" | head -n 40 | cut -c1-300 | sed 's/^/#   /' >>"$TMP/server.tap"
    else
        srv_ok "$name server log holds no sanitizer report"
    fi
    if [ "$SRV_FAIL" -gt 0 ]; then
        echo "# last lines of the $name server log:" >>"$TMP/server.tap"
        tail -n 15 "$TMP/$name.log" | cut -c1-300 | sed 's/^/#   /' >>"$TMP/server.tap"
    fi
}

T0=$(date +%s)
if [ -n "${S3_ENDPOINT:-}" ]; then
    MODE=external
    export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-${CAIRN_ACCESS_KEY:-}}
    export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-${CAIRN_SECRET_KEY:-}}
    echo "# interop against S3_ENDPOINT=$S3_ENDPOINT"
    if [ -z "$AWS_ACCESS_KEY_ID" ] || [ -z "$AWS_SECRET_ACCESS_KEY" ]; then
        echo "# set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or CAIRN_ACCESS_KEY/CAIRN_SECRET_KEY)"
        srv_notok "credentials for S3_ENDPOINT are set"
    fi
    if answers "$S3_ENDPOINT"; then srv_ok "$S3_ENDPOINT answers"; else srv_notok "$S3_ENDPOINT answers"; fi
else
    MODE=local
    if [ -z "$BUILD" ] || [ ! -x "$BUILD/cairn" ]; then
        echo "usage: $0 BUILD_DIR   (BUILD_DIR/cairn must exist), or set S3_ENDPOINT" >&2
        srv_notok "cairn binary found in '${BUILD:-<no BUILD_DIR given>}'"
    else
        BUILD=$(cd "$BUILD" && pwd)
        export CAIRN_ACCESS_KEY="AK$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"
        export CAIRN_SECRET_KEY="$(od -An -N30 -tx1 /dev/urandom | tr -d ' \n')"
        export AWS_ACCESS_KEY_ID=$CAIRN_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$CAIRN_SECRET_KEY
        PORT=$(free_port)
        export S3_ENDPOINT="http://127.0.0.1:$PORT"
        echo "# cairn: $BUILD/cairn on $S3_ENDPOINT, data in $TMP/data"
        start_server main "$TMP/data" "$PORT"
        if want raw; then
            PORT2=$(free_port)
            if start_server vhost "$TMP/data-vhost" "$PORT2" --domain localhost --trust-proxy; then
                export S3_VHOST_ENDPOINT="http://127.0.0.1:$PORT2" S3_VHOST_DOMAIN=localhost
            fi
        fi
    fi
fi
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
: >"$TMP/aws-config"
: >"$TMP/aws-credentials"
export AWS_CONFIG_FILE="$TMP/aws-config" AWS_SHARED_CREDENTIALS_FILE="$TMP/aws-credentials"
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3

if [ "$SRV_FAIL" -eq 0 ]; then
    # ------------------------------------------------------------ aws cli
    if want awscli; then
        PATH_AWS=$(command -v aws || true)
        if [ -z "$PATH_AWS" ]; then
            skip_suite "awscli (PATH)" "no aws on PATH"
        elif [ "$(readlink -f "$PATH_AWS")" = "$(readlink -f /usr/bin/aws 2>/dev/null)" ]; then
            skip_suite "awscli (PATH)" "the aws on PATH is /usr/bin/aws, run below"
        else
            suite "awscli $("$PATH_AWS" --version 2>&1 | cut -d' ' -f1)" 1200 env AWS="$PATH_AWS" bash "$HERE/awscli.sh"
        fi
        if [ -x /usr/bin/aws ]; then
            suite "awscli $(/usr/bin/aws --version 2>&1 | cut -d' ' -f1) (/usr/bin/aws)" 1200 env AWS=/usr/bin/aws bash "$HERE/awscli.sh"
        else
            skip_suite "awscli (/usr/bin/aws)" "Debian's awscli is not installed"
        fi
    fi
    # ------------------------------------------------------------- boto3
    if want boto3; then
        PY=$(command -v python3)
        if [ "$(python3 -c 'import sys; print(sys.executable)')" = /usr/bin/python3 ] || [ "$(readlink -f "$PY")" = "$(readlink -f /usr/bin/python3)" ]; then
            skip_suite "boto3 (python3 on PATH)" "python3 on PATH is /usr/bin/python3, run below"
        else
            suite "boto3 ($PY)" 900 python3 "$HERE/test_boto3.py"
        fi
        if [ -x /usr/bin/python3 ]; then
            suite "boto3 (/usr/bin/python3)" 900 /usr/bin/python3 "$HERE/test_boto3.py"
        else
            skip_suite "boto3 (/usr/bin/python3)" "no /usr/bin/python3"
        fi
    fi
    # --------------------------------------------------------- raw SigV4
    want raw && suite "raw requests" 300 python3 "$HERE/test_raw.py"
    # ------------------------------------------------------ JavaScript SDK
    if want sdk-js; then
        if ! command -v node >/dev/null; then
            skip_suite "sdk-js" "node is not installed"
        elif [ ! -d "$HERE/sdk-js/node_modules/@aws-sdk/client-s3" ]; then
            skip_suite "sdk-js" "run 'npm install' in tests/interop/sdk-js first"
        else
            suite "sdk-js" 600 node "$HERE/sdk-js/test.mjs"
        fi
    fi
    # ------------------------------------- users, policies, limits, CORS
    if want access; then
        if [ "$MODE" = local ]; then
            suite "access" 600 python3 "$HERE/test_access.py" "$BUILD"
        else
            skip_suite "access" "needs a BUILD_DIR (cairn-admin manages users and limits)"
        fi
    fi
    want cors-browser && suite "cors-browser" 300 python3 "$HERE/test_cors_browser.py"
    # ----------------------------------------------------------- failures
    if want failure; then
        if [ "$MODE" = local ]; then
            suite "failure" 900 python3 "$HERE/test_failure.py" "$BUILD"
        else
            skip_suite "failure" "needs a BUILD_DIR (starts and kills its own servers)"
        fi
    fi
    # ------------------------------------------- usage, access logs, metrics
    if want usage; then
        if [ "$MODE" = local ]; then
            suite "usage" 600 /usr/bin/python3 "$HERE/test_usage.py" "$BUILD"
        else
            skip_suite "usage" "needs a BUILD_DIR (starts and kills its own servers)"
        fi
    fi
    # ------------------------------------- events: webhooks, brokers, functions
    if want events; then
        if [ "$MODE" = local ]; then
            suite "events" 900 /usr/bin/python3 "$HERE/test_events.py" "$BUILD"
        else
            skip_suite "events" "needs a BUILD_DIR (starts and kills its own servers and brokers)"
        fi
    fi
    # ------------------------- storage nodes: cairn-chunkd x 6 behind a gateway
    if want nodes; then
        if [ "$MODE" = local ]; then
            suite "nodes" 900 python3 "$HERE/test_nodes.py" "$BUILD"
        else
            skip_suite "nodes" "needs a BUILD_DIR (starts and kills its own nodes and gateways)"
        fi
    fi
fi

if [ "$MODE" = local ]; then
    stop_server main
    stop_server vhost
fi
echo "# ---------------------------------------------------------------- server"
echo "1..$SRV_N" >>"$TMP/server.tap"
cat "$TMP/server.tap"
tally "server" "$TMP/server.tap" 0

echo "# interop took $(($(date +%s) - T0))s"
[ ${#FAILED_SUITES[@]} -eq 0 ] || echo "# suites with failures: ${FAILED_SUITES[*]}"
if [ "$TOTAL_SKIP" -gt 0 ]; then
    echo "$TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
else
    echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
fi
[ "$TOTAL_FAIL" -eq 0 ]

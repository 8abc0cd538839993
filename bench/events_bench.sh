#!/bin/sh
# bench/events_bench.sh BUILD_DIR - what bucket notifications cost: PUT ops/s of 4 KiB objects
# into a bucket with a notification rule (a webhook on loopback) vs one without, in the same
# run (alternating phases), plus a rule whose target is down (the outbox write alone, no
# delivery work competing for the CPU), and the end-to-end latency p50/p99 from PUT acknowledgement to
# webhook receipt. Starts cairn and a receiver on free 127.0.0.1 ports in a temp dir; every
# process it starts is stopped by the trap.
# After each delivered phase the bench waits until the receiver has every event, so no phase
# pays for an earlier one's delivery backlog; it reports that drain time, and per phase the CPU
# time cairn and the receiver used (from /proc: the receiver shares the cores with cairn).
# Knobs: EVB_SECONDS per throughput phase (8), EVB_CONC PUT connections (8), EVB_ROUNDS
# alternations (2), EVB_LAT_N latency samples (1000), EVB_PY python with boto3 (/usr/bin/python3),
# EVB_RECV receiver: c (default; `cairn-bench --sink`, HTTP/1.1 keep-alive, a thread per
# connection, reads each record's key), asyncio (a small Python HTTP/1.1 server on one thread)
# or threading (http.server's ThreadingHTTPServer); the Python ones json-parse every event.
set -u
BUILD=${1:?usage: bench/events_bench.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
SECS=${EVB_SECONDS:-8}
CONC=${EVB_CONC:-8}
ROUNDS=${EVB_ROUNDS:-2}
LAT_N=${EVB_LAT_N:-1000}
PY=${EVB_PY:-/usr/bin/python3}
AK=evbenchAK0123456789
SK=evbenchSK0123456789abcdefghijklmnopqrstu
export CAIRN_ACCESS_KEY=$AK CAIRN_SECRET_KEY=$SK AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK
export AWS_DEFAULT_REGION=us-east-1

TMP=$(mktemp -d /tmp/cairn-evbench.XXXXXX) || exit 1
CAIRN_PID=
RECV_PID=
cleanup() {
    for p in $CAIRN_PID $RECV_PID; do kill "$p" 2>/dev/null; done
    for p in $CAIRN_PID $RECV_PID; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
EP=http://127.0.0.1:$PORT

# The receiver: appends "epoch_seconds key" per event to $TMP/recv.log (the time taken when
# the request was parsed).
if [ "${EVB_RECV:-c}" = threading ]; then
cat >"$TMP/recv.py" <<'EOF'
import json, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
out = open(sys.argv[2], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        now = time.time()
        for r in json.loads(body)["Records"]:
            out.write("%.6f %s\n" % (now, urllib.parse.unquote_plus(r["s3"]["object"]["key"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
else
cat >"$TMP/recv.py" <<'EOF'
# HTTP/1.1 with keep-alive on asyncio, one thread: request line, headers (Content-Length),
# body, the event JSON parsed, "200 OK". Lines are flushed every 0.1 s.
import asyncio, json, sys, time, urllib.parse
out = open(sys.argv[2], "a", buffering=1 << 16)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
async def conn(r, w):
    try:
        while True:
            lines = (await r.readuntil(b"\r\n\r\n")).split(b"\r\n")
            req = lines[0].split(b" ")
            if len(req) != 3 or not req[2].startswith(b"HTTP/1."):
                w.write(BAD)
                break
            n = 0
            for h in lines[1:]:
                k, _, v = h.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v)
            body = await r.readexactly(n) if n else b""
            now = time.time()
            for rec in json.loads(body)["Records"]:
                out.write("%.6f %s\n" % (now, urllib.parse.unquote_plus(rec["s3"]["object"]["key"])))
            w.write(OK)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    w.close()
async def flusher():
    while True:
        await asyncio.sleep(0.1)
        out.flush()
async def main():
    srv = await asyncio.start_server(conn, "127.0.0.1", int(sys.argv[1]))
    asyncio.ensure_future(flusher())
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
EOF
fi
if [ "${EVB_RECV:-c}" = c ]; then
    "$BUILD/cairn-bench" --sink "$RPORT" --sink-log "$TMP/recv.log" &
else
    "$PY" "$TMP/recv.py" "$RPORT" "$TMP/recv.log" &
fi
RECV_PID=$!
"$BUILD/cairn" server --data "$TMP/data" --listen "127.0.0.1:$PORT" --log-level error \
    --events backoff=60000,backoff-max=60000,retries=1000 >"$TMP/cairn.log" 2>&1 &
CAIRN_PID=$!
for i in $(seq 100); do
    "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
    sleep 0.1
done

"$BUILD/cairn-admin" --endpoint "$EP" target add bench-hook --webhook "http://127.0.0.1:$RPORT/" >/dev/null ||
    { echo "events_bench: cannot define the target" >&2; exit 1; }
DEADPORT=$(free_port) # nothing listens there: deliveries fail and back off for a minute
"$BUILD/cairn-admin" --endpoint "$EP" target add bench-down --webhook "http://127.0.0.1:$DEADPORT/" >/dev/null
"$PY" - "$EP" <<'EOF' || exit 1
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
for b in ("evb-plain", "evb-rule", "evb-down"):
    s3.create_bucket(Bucket=b)
s3.put_bucket_notification_configuration(Bucket="evb-down", NotificationConfiguration={
    "QueueConfigurations": [{"QueueArn": "arn:cairn:sqs:us-east-1::bench-down", "Events": ["s3:ObjectCreated:*"]}]})
s3.put_bucket_notification_configuration(Bucket="evb-rule", NotificationConfiguration={
    "QueueConfigurations": [{"QueueArn": "arn:cairn:sqs:us-east-1::bench-hook", "Events": ["s3:ObjectCreated:*"]}]})
EOF

# jget JSON KEY
jget() { printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime + stime
# Busy ticks of the whole machine (user nice system irq softirq steal): what a phase cost
# everything on it, client and receiver included, not only cairn.
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
HZ=$(getconf CLK_TCK)
SENT=0 # events the receiver should have by now
put_phase() { # BUCKET PREFIX -> "ops/s cairn-CPU-us-per-PUT receiver-CPU-ms PUTs machine-CPU-us-per-PUT"
    c0=$(ticks "$CAIRN_PID")
    r0=$(ticks "$RECV_PID")
    s0=$(busy)
    line=$("$BUILD/cairn-bench" --endpoint "$EP" --bucket "$1" --prefix "$2" --op put --size 4k \
        --concurrency "$CONC" --duration "$SECS" --json 2>>"$TMP/bench.err" | grep '"phase":"run"' | tail -n 1)
    c1=$(ticks "$CAIRN_PID")
    r1=$(ticks "$RECV_PID")
    s1=$(busy)
    ops=$(jget "$line" ops)
    ops=${ops:-0}
    echo "$(jget "$line" ops_per_s) $(((c1 - c0) * 1000000 / HZ / (ops + 1))) $(((r1 - r0) * 1000 / HZ)) $ops" \
        "$(((s1 - s0) * 1000000 / HZ / (ops + 1)))"
}
# Waits (up to 120 s) until the receiver logged SENT events; prints the seconds it took.
drain() {
    "$PY" - "$TMP/recv.log" "$SENT" <<'EOF'
import sys, time
log, want = sys.argv[1], int(sys.argv[2])
t0 = time.time()
while time.time() - t0 < 120:
    try:
        with open(log, "rb") as f:
            if sum(1 for _ in f) >= want:
                break
    except OSError:
        pass
    time.sleep(0.05)
print("%.1f" % (time.time() - t0))
EOF
}

PLAIN="" RULE="" DOWN="" CPU_P="" CPU_R="" CPU_D="" RCV_R="" RCV_O="" DRAIN=""
SYS_P="" SYS_R="" SYS_D=""
phase_plain() {
    set -- $(put_phase evb-plain "p$r-")
    PLAIN="$PLAIN $1" CPU_P="$CPU_P $2" RCV_O="$RCV_O $3" SYS_P="$SYS_P $5"
}
phase_rule() {
    set -- $(put_phase evb-rule "r$r-")
    RULE="$RULE $1" CPU_R="$CPU_R $2" RCV_R="$RCV_R $3" SENT=$((SENT + $4)) SYS_R="$SYS_R $5"
    d0=$(ticks "$RECV_PID")
    DRAIN="$DRAIN $(drain)"
    RCV_R="$RCV_R+$((($(ticks "$RECV_PID") - d0) * 1000 / HZ))"
}
phase_down() {
    set -- $(put_phase evb-down "d$r-")
    DOWN="$DOWN $1" CPU_D="$CPU_D $2" RCV_O="$RCV_O $3" SYS_D="$SYS_D $5"
}
# Odd rounds run plain, rule, down; even rounds down, rule, plain: the metadata store grows
# during the run and each PUT gets a little dearer, and this order gives every case the same
# mean position, so that drift cancels out of the comparison.
r=1
while [ "$r" -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then
        phase_plain
        phase_rule
        phase_down
    else
        phase_down
        phase_rule
        phase_plain
    fi
    r=$((r + 1))
done
echo "PUT 4 KiB, $CONC connections, ${SECS}s phases, alternating (receiver: ${EVB_RECV:-c}):"
echo "  without a rule: ops/s per phase:$PLAIN  (cairn CPU us/PUT:$CPU_P)"
echo "  with a rule:    ops/s per phase:$RULE  (cairn CPU us/PUT:$CPU_R)"
echo "    receiver CPU ms, phase+drain:$RCV_R; backlog drained after the phase, s:$DRAIN"
echo "  rule, target down (outbox writes only): ops/s per phase:$DOWN  (cairn CPU us/PUT:$CPU_D)"
echo "    receiver CPU ms in the other phases (ideally 0):$RCV_O"
echo "  machine CPU us/PUT (/proc/stat, everything: client, cairn, receiver):" \
    "without a rule:$SYS_P; with a rule:$SYS_R; target down:$SYS_D"
"$PY" -c "
import sys
p=[float(x) for x in '$PLAIN'.split()]; r=[float(x) for x in '$RULE'.split()]; d=[float(x) for x in '$DOWN'.split()]
mp=sum(p)/len(p); mr=sum(r)/len(r); md=sum(d)/len(d)
print('  mean: %.0f without, %.0f with a delivered rule (%+.1f%%), %.0f outbox only (%+.1f%%)'
      % (mp, mr, 100*(mr-mp)/mp, md, 100*(md-mp)/mp))
"
# Events per call to the webhook: pipelining carries several when they arrive faster than
# one round trip to the receiver.
"$BUILD/cairn-admin" --endpoint "$EP" events pending --json 2>/dev/null | "$PY" -c '
import json, sys
try:
    st = json.load(sys.stdin)["stats"]
    print("  events per delivery call: %.2f (%d delivered in %d calls)"
          % (st["delivered"] / max(st["calls"], 1), st["delivered"], st["calls"]))
except Exception:
    pass'
# Let the throughput phases' events drain before timing single events.
sleep 2
"$PY" - "$EP" "$TMP/recv.log" "$LAT_N" <<'EOF'
import sys, time, boto3
from botocore.config import Config
ep, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
body = b"x" * 4096
acks, sends = {}, {}
for i in range(n):
    k = "lat-%06d" % i
    sends[k] = time.time()
    s3.put_object(Bucket="evb-rule", Key=k, Body=body)
    acks[k] = time.time()
    time.sleep(0.002)
end = time.time() + 30
got = {}
while time.time() < end and len(got) < n:
    with open(log) as f:
        for line in f:
            t, k = line.rstrip("\n").split(" ", 1)
            if k in acks and k not in got:
                got[k] = float(t)
    time.sleep(0.2)
lat = sorted((got[k] - acks[k]) * 1000 for k in got)
if not lat:
    print("latency: no events received"); sys.exit(1)
p = lambda a, q: a[min(len(a) - 1, int(q * len(a)))]
print("PUT ack -> webhook receipt, %d sequential PUTs (%d received): p50 %.2f ms, p99 %.2f ms, max %.2f ms"
      % (n, len(lat), p(lat, 0.50), p(lat, 0.99), lat[-1]))
# The ack time is taken when boto3 returns, after it parsed the response: an event can arrive
# before that (negative values). From the request's start it is an upper bound:
snd = sorted((got[k] - sends[k]) * 1000 for k in got)
put = sorted((acks[k] - sends[k]) * 1000 for k in got)
print("  PUT start -> webhook receipt: p50 %.2f ms, p99 %.2f ms (the PUT itself, start -> ack: p50 %.2f ms)"
      % (p(snd, 0.50), p(snd, 0.99), p(put, 0.50)))
EOF

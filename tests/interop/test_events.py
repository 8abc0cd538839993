#!/usr/bin/env python3
# tests/interop/test_events.py BUILD_DIR - bucket notifications and functions with real
# processes on 127.0.0.1, as TAP: a webhook receiver gets every event of a mixed workload
# (awkward keys), and all of them after being down for a while; kill -9 after N acknowledged
# PUTs still yields exactly N events; CloudEvents binary mode; real redis-server, nats-server
# and rabbitmq-server (each skipped when not installed), Redis and RabbitMQ also restarted under
# the delivery workers (RabbitMQ by kill -9, with PUTs while it is down: no event lost); an event
# no queue is bound for is retried and dead-lettered, not counted delivered; an exec
# function that reads the object through its presigned URL and writes a derived object; a
# failing function is retried, dead-lettered and replayed; the recursion guard stops a function
# writing into its own bucket.
# Starts its own servers in temp dirs; every wait is bounded; everything stops at the end.
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import pika  # noqa: F401
except ImportError:
    # Debian's python3-pika and python3-boto3 live under /usr/bin/python3.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != "/usr/bin/python3" \
            and not os.environ.get("CAIRN_EVT_REEXEC"):
        os.environ["CAIRN_EVT_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    pika = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
import s3raw  # noqa: E402
from procs import free_port  # noqa: E402

t = TAP()
if len(sys.argv) < 2 or not os.access(os.path.join(sys.argv[1], "cairn"), os.X_OK):
    print("1..0 # SKIP usage: test_events.py BUILD_DIR (with BUILD_DIR/cairn)")
    sys.exit(0)
try:
    import boto3
    from botocore.config import Config
except ImportError:
    print("1..0 # SKIP boto3 is not installed")
    sys.exit(0)

BUILD = os.path.abspath(sys.argv[1])
CAIRN = os.path.join(BUILD, "cairn")
ADMIN = os.path.join(BUILD, "cairn-admin")
AK = "AKEVT" + os.urandom(6).hex().upper()
SK = os.urandom(20).hex()
TOP = tempfile.mkdtemp(prefix="cairn-events.")
PROCS = []
RETRIES = 8
EVENTS_SPEC = "backoff=100,backoff-max=1000,retries=%d,timeout=3000" % RETRIES


def wait_until(fn, timeout=20, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - keep polling
            pass
        time.sleep(step)
    return fn()


def wait_port(port, timeout=30):
    def up():
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    return wait_until(lambda: _try(up), timeout)


def _try(fn):
    try:
        return fn()
    except OSError:
        return False


class Cairn:
    def __init__(self):
        self.data = os.path.join(TOP, "data")
        self.log = os.path.join(TOP, "cairn.log")
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        env = dict(os.environ, CAIRN_ACCESS_KEY=AK, CAIRN_SECRET_KEY=SK)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([CAIRN, "server", "--data", self.data, "--listen",
                                          "127.0.0.1:%d" % self.port, "--events", EVENTS_SPEC],
                                         stdout=logf, stderr=subprocess.STDOUT, env=env)
        PROCS.append(self.proc)
        ok = wait_until(lambda: _try(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close() or True), 30)
        self.s3 = boto3.client("s3", endpoint_url=self.url, aws_access_key_id=AK,
                               aws_secret_access_key=SK, region_name="us-east-1",
                               config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                             read_timeout=30, connect_timeout=5))
        self.raw = s3raw.S3Raw(self.url, AK, SK)
        return bool(ok) and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return "timeout"
        return None

    def logtext(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")


def admin(*args, check=True):
    env = dict(os.environ, CAIRN_ACCESS_KEY=AK, CAIRN_SECRET_KEY=SK, CAIRN_ENDPOINT=srv.url)
    p = subprocess.run([ADMIN] + list(args), env=env, capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise RuntimeError("cairn-admin %s: %s %s" % (" ".join(args), p.stdout, p.stderr))
    return p


def admin_json(*args):
    return json.loads(admin(*args, "--json").stdout)


# ------------------------------------------------------------------ HTTP sinks
class Sink:
    """A webhook / CloudEvents receiver: records (headers, parsed body) of every POST."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.got = []
        self.conns = []
        self.lock = threading.Lock()
        self.httpd = None

    def start(self):
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with sink.lock:
                    sink.conns.append(self.connection)

            def handle(self):
                try:
                    super().handle()
                except OSError:
                    pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with sink.lock:
                    sink.got.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body), time.time()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        deadline = time.time() + 10
        while True:
            try:
                self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        """Stops listening and drops kept-alive connections: the receiver is really down."""
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def records(self, bucket=None):
        with self.lock:
            out = []
            for h, body, _ in self.got:
                for r in body.get("Records", []):
                    if bucket is None or r["s3"]["bucket"]["name"] == bucket:
                        out.append(r)
            return out


def key_of(rec):
    return urllib.parse.unquote_plus(rec["s3"]["object"]["key"])


def notif(bucket, kind, arn, events, prefix=None, suffix=None, rid=None):
    cfg = {"Events": events}
    if kind == "queue":
        cfg["QueueArn"] = arn
    elif kind == "topic":
        cfg["TopicArn"] = arn
    else:
        cfg["LambdaFunctionArn"] = arn
    if rid:
        cfg["Id"] = rid
    rules = []
    if prefix is not None:
        rules.append({"Name": "prefix", "Value": prefix})
    if suffix is not None:
        rules.append({"Name": "suffix", "Value": suffix})
    if rules:
        cfg["Filter"] = {"Key": {"FilterRules": rules}}
    key = {"queue": "QueueConfigurations", "topic": "TopicConfigurations", "lambda": "LambdaFunctionConfigurations"}[kind]
    srv.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={key: [cfg]})


def error_code(fn):
    try:
        fn()
    except srv.s3.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return None


srv = Cairn()
sink = Sink()
children = []
EPMD_PORT = [0]  # the epmd our rabbitmq starts (stopped at the end)


def cleanup():
    sink.stop()
    for p in children + PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL) if getattr(p, "_own_pg", False) else p.kill()
            except OSError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
    shutil.rmtree(TOP, ignore_errors=True)


def main():
    if not t.ok(srv.start(), "cairn starts with --events"):
        return
    sink.start()
    hook_url = "http://127.0.0.1:%d/hook" % sink.port

    # ------------------------------------------------------------ configuration API
    with t.block("configuration"):
        admin("target", "add", "hook", "--webhook", hook_url)
        t.ok("hook" in admin("target", "list").stdout, "target list shows the webhook")
        tl = admin_json("target", "list")
        t.eq([x["name"] for x in tl["targets"]], ["hook"], "target list --json")
        srv.s3.create_bucket(Bucket="evt-mixed")
        t.eq(srv.s3.get_bucket_notification_configuration(Bucket="evt-mixed").get("QueueConfigurations"), None,
             "no configuration: empty NotificationConfiguration")
        code = error_code(lambda: notif("evt-mixed", "queue", "arn:cairn:sqs:us-east-1::nosuch", ["s3:ObjectCreated:*"]))
        t.eq(code, "InvalidArgument", "unknown ARN -> InvalidArgument")
        code = error_code(lambda: notif("evt-mixed", "queue", "arn:cairn:sqs:us-east-1::hook", ["s3:ObjectEaten:*"]))
        t.eq(code, "InvalidArgument", "unknown event name -> InvalidArgument")
        r = srv.raw.request("PUT", "/evt-mixed", query=[("notification", None)], body=b"<NotificationConfiguration><Queue")
        t.eq(r.error().get("Code"), "MalformedXML", "bad XML -> MalformedXML", r)
        code = error_code(lambda: srv.s3.put_bucket_notification_configuration(Bucket="evt-mixed", NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": "arn:cairn:sqs:us-east-1::hook", "Events": ["s3:ObjectCreated:*"],
                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "a/"}]}}},
                {"QueueArn": "arn:cairn:sqs:us-east-1::hook", "Events": ["s3:ObjectCreated:Put"],
                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "a/b"}]}}}]}))
        t.eq(code, "InvalidArgument", "overlapping rules -> InvalidArgument")
        srv.s3.put_bucket_notification_configuration(Bucket="evt-mixed", NotificationConfiguration={
            "QueueConfigurations": [
                {"Id": "created", "QueueArn": "arn:cairn:sqs:us-east-1::hook", "Events": ["s3:ObjectCreated:*"]},
                {"Id": "removed", "QueueArn": "arn:cairn:sqs:us-east-1::hook", "Events": ["s3:ObjectRemoved:Delete"],
                 "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ""}]}}}]})
        got = srv.s3.get_bucket_notification_configuration(Bucket="evt-mixed")["QueueConfigurations"]
        t.eq([(c["Id"], c["QueueArn"], c["Events"]) for c in got],
             [("created", "arn:cairn:sqs:us-east-1::hook", ["s3:ObjectCreated:*"]),
              ("removed", "arn:cairn:sqs:us-east-1::hook", ["s3:ObjectRemoved:Delete"])],
             "Get returns what was put")

    # ------------------------------------------------------------ mixed workload
    keys = ["plain.txt", "with space.txt", "plus+sign", "pct%20x", "uni-é漢字.txt", "dir/sub/a b+c%d"]
    with t.block("mixed workload"):
        want = set()
        for k in keys:
            srv.s3.put_object(Bucket="evt-mixed", Key=k, Body=b"x" * 4096)
            want.add(("ObjectCreated:Put", k))
        srv.s3.copy_object(Bucket="evt-mixed", Key="copy of plain", CopySource={"Bucket": "evt-mixed", "Key": "plain.txt"})
        want.add(("ObjectCreated:Copy", "copy of plain"))
        mpu = srv.s3.create_multipart_upload(Bucket="evt-mixed", Key="multi part+é")
        p1 = srv.s3.upload_part(Bucket="evt-mixed", Key="multi part+é", UploadId=mpu["UploadId"], PartNumber=1, Body=b"a" * (5 << 20))
        p2 = srv.s3.upload_part(Bucket="evt-mixed", Key="multi part+é", UploadId=mpu["UploadId"], PartNumber=2, Body=b"b" * 100)
        srv.s3.complete_multipart_upload(Bucket="evt-mixed", Key="multi part+é", UploadId=mpu["UploadId"],
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]},
                                                                    {"PartNumber": 2, "ETag": p2["ETag"]}]})
        want.add(("ObjectCreated:CompleteMultipartUpload", "multi part+é"))
        srv.s3.delete_object(Bucket="evt-mixed", Key="with space.txt")
        want.add(("ObjectRemoved:Delete", "with space.txt"))
        srv.s3.delete_objects(Bucket="evt-mixed", Delete={"Objects": [{"Key": "plus+sign"}, {"Key": "never-existed"}]})
        want.add(("ObjectRemoved:Delete", "plus+sign"))
        srv.s3.delete_object(Bucket="evt-mixed", Key="also-never-existed")
        wait_until(lambda: len(sink.records("evt-mixed")) >= len(want), 20)
        time.sleep(0.5)
        recs = sink.records("evt-mixed")
        got = [(r["eventName"], key_of(r)) for r in recs]
        t.eq(set(got), want, "the webhook got every event of the workload (awkward keys decoded)")
        t.eq(len(got), len(want), "exactly once each here, and no event for deleting a missing key")
        r0 = next(r for r in recs if key_of(r) == "uni-é漢字.txt")
        t.eq((r0["eventVersion"], r0["eventSource"], r0["awsRegion"], r0["s3"]["s3SchemaVersion"],
              r0["s3"]["bucket"]["arn"], r0["s3"]["object"]["size"], r0["s3"]["configurationId"]),
             ("2.1", "aws:s3", "us-east-1", "1.0", "arn:aws:s3:::evt-mixed", 4096, "created"),
             "record fields follow the S3 event message")
        t.ok(r0["s3"]["object"]["key"] == "uni-%C3%A9%E6%BC%A2%E5%AD%97.txt", "keys are URL-encoded like S3",
             r0["s3"]["object"]["key"])
        t.ok(r0["eventTime"].endswith("Z") and "." in r0["eventTime"] and r0["responseElements"]["x-amz-request-id"]
             and r0["userIdentity"]["principalId"] and r0["requestParameters"]["sourceIPAddress"] == "127.0.0.1",
             "eventTime, request id, principal and source IP are set")
        sp = [r["s3"]["object"]["sequencer"] for r in recs if key_of(r) == "with space.txt"]
        t.ok(len(sp) == 2 and sp[0] < sp[1], "sequencers of one key increase (put, then delete)", sp)
        ch = admin_json("events", "changes", "--bucket", "evt-mixed")
        t.eq(len(ch["changes"]), len(want), "the change log holds every change")
        mid = ch["changes"][3]["sequencer"]
        ch2 = admin_json("events", "changes", "--bucket", "evt-mixed", "--since", mid, "--limit", "2")
        t.ok(len(ch2["changes"]) == 2 and ch2["changes"][0]["sequencer"] > mid and ch2["next"],
             "events changes --since resumes after a sequencer, with paging", ch2)

    # ------------------------------------------------------------ receiver down
    with t.block("receiver down"):
        sink.stop()
        n0 = len(sink.records("evt-mixed"))
        t0 = time.time()
        for i in range(5):
            srv.s3.put_object(Bucket="evt-mixed", Key="while-down-%d" % i, Body=b"y")
        dt = time.time() - t0
        t.ok(dt < 3, "PUTs do not wait for a dead target (%.2fs for 5)" % dt)
        time.sleep(1.0)
        pend = admin_json("events", "pending")
        t.ok(len([e for e in pend["events"] if e["key"].startswith("while-down")]) == 5,
             "events pending lists them while the receiver is down")
        t.ok(any(e["attempts"] >= 1 and e["lastError"] for e in pend["events"]), "with attempts and the last error")
        sink.start()
        wait_until(lambda: len(sink.records("evt-mixed")) >= n0 + 5, 20)
        got = sorted(key_of(r) for r in sink.records("evt-mixed")[n0:])
        t.eq(got, ["while-down-%d" % i for i in range(5)], "the restarted receiver gets all of them")

    # ------------------------------------------------------------ kill -9
    with t.block("kill -9"):
        srv.s3.create_bucket(Bucket="evt-crash")
        notif("evt-crash", "queue", "arn:cairn:sqs:us-east-1::hook", ["s3:ObjectCreated:*"])
        sink.stop()
        n = 25
        for i in range(n):
            srv.s3.put_object(Bucket="evt-crash", Key="crash-%02d" % i, Body=b"z" * 100)
        srv.stop(signal.SIGKILL)
        t.ok(srv.start(), "cairn restarts after kill -9")
        sink.start()
        wait_until(lambda: len({r["s3"]["object"]["sequencer"] for r in sink.records("evt-crash")}) >= n, 30)
        time.sleep(0.5)
        recs = sink.records("evt-crash")
        seqs = {r["s3"]["object"]["sequencer"] for r in recs}
        t.eq(len(seqs), n, "kill -9 after %d acknowledged PUTs: exactly %d distinct events" % (n, n))
        t.eq(sorted({key_of(r) for r in recs}), ["crash-%02d" % i for i in range(n)], "one per acknowledged key")

    # ------------------------------------------------------------ CloudEvents
    with t.block("cloudevents"):
        ce = Sink()
        ce.start()
        admin("target", "add", "ce", "--cloudevents", "http://127.0.0.1:%d/" % ce.port)
        srv.s3.create_bucket(Bucket="evt-ce")
        notif("evt-ce", "topic", "arn:cairn:sns:us-east-1::ce", ["s3:ObjectCreated:Put"])
        srv.s3.put_object(Bucket="evt-ce", Key="ce dir/obj 1+é", Body=b"c")
        wait_until(lambda: ce.got, 15)
        h, body, _ = ce.got[0]
        t.eq((h.get("ce-specversion"), h.get("ce-type"), h.get("ce-source"), h.get("content-type")),
             ("1.0", "com.amazonaws.s3.ObjectCreated:Put", "arn:aws:s3:::evt-ce", "application/json"),
             "ce-specversion, ce-type, ce-source, content-type")
        t.eq(urllib.parse.unquote(h.get("ce-subject", "")), "ce dir/obj 1+é", "ce-subject is the key")
        t.ok(h.get("ce-id") and h.get("ce-time", "").endswith("Z"), "ce-id and ce-time are set")
        t.eq(body["Records"][0]["eventName"], "ObjectCreated:Put", "binary mode: the body is the S3 record")
        ce.stop()

    brokers()
    functions()

    with t.block("admin"):
        t.ok("hook" in admin("target", "list").stdout, "target list")
        admin("target", "remove", "ce")
        t.ok("ce " not in admin("target", "list").stdout, "target remove")
        t.ok(admin("target", "remove", "ce", check=False).returncode != 0, "removing it again fails")

    rc = srv.stop()
    t.ok(rc in (0, -15), "cairn exits on SIGTERM (status %r)" % rc)
    t.ok("Sanitizer" not in srv.logtext() and "runtime error:" not in srv.logtext(), "no sanitizer report")


# ---------------------------------------------------------------- brokers
def start_child(argv, env=None, cwd=None):
    logf = open(os.path.join(TOP, os.path.basename(argv[0]) + ".log"), "ab")
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    p._own_pg = True
    logf.close()
    children.append(p)
    return p


def resp_cmd(sock, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)


def resp_read(f):
    line = f.readline()
    c, rest = line[:1], line[1:-2]
    if c in (b"+", b"-"):
        return rest
    if c == b":":
        return int(rest)
    if c == b"$":
        n = int(rest)
        if n < 0:
            return None
        d = f.read(n + 2)
        return d[:-2]
    if c == b"*":
        n = int(rest)
        return [resp_read(f) for _ in range(max(n, 0))]
    raise ValueError("bad RESP %r" % line)


def brokers():
    # Redis stream
    if not shutil.which("redis-server"):
        t.skip("redis stream", "redis-server is not installed")
    else:
        with t.block("redis"):
            port = free_port()
            d = os.path.join(TOP, "redis")
            os.makedirs(d)
            rsrv = start_child(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", d])
            t.ok(wait_port(port, 20), "redis-server starts")
            admin("target", "add", "rds", "--redis", "redis://127.0.0.1:%d/cairn-events" % port)
            srv.s3.create_bucket(Bucket="evt-redis")
            notif("evt-redis", "queue", "arn:cairn:sqs:us-east-1::rds", ["s3:ObjectCreated:*"])
            for i in range(3):
                srv.s3.put_object(Bucket="evt-redis", Key="r %d" % i, Body=b"r")
            s = socket.create_connection(("127.0.0.1", port), 5)
            f = s.makefile("rb")

            def xlen():
                resp_cmd(s, "XLEN", "cairn-events")
                return resp_read(f) >= 3
            wait_until(xlen, 15)
            resp_cmd(s, "XRANGE", "cairn-events", "-", "+")
            entries = resp_read(f)
            s.close()
            evs = []
            for _id, fields in entries:
                kv = dict(zip(fields[::2], fields[1::2]))
                evs.append(json.loads(kv[b"event"]))
            t.eq(sorted(key_of(e["Records"][0]) for e in evs), ["r 0", "r 1", "r 2"],
                 "XREAD of the stream: the 3 events, S3 JSON in field 'event'")
            # The delivery workers keep their Redis connections open: a restarted server leaves
            # them stale, and the next events must still arrive (on a new connection). The 40
            # events of 4 keys written while it is down go as a backlog, many XADDs at once on a
            # connection: all arrive, each key's in sequencer order.
            rsrv.kill()
            rsrv.wait(10)
            for i in range(40):
                srv.s3.put_object(Bucket="evt-redis", Key="b %d" % (i % 4), Body=b"b%d" % i)
            start_child(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", d])
            t.ok(wait_port(port, 20), "redis-server restarts on the same port")
            s = socket.create_connection(("127.0.0.1", port), 5)
            f = s.makefile("rb")

            def xlen2():
                resp_cmd(s, "XLEN", "cairn-events")
                return resp_read(f) >= 40
            t.ok(wait_until(xlen2, 60), "the 40 events written while Redis was down arrive after its restart")
            resp_cmd(s, "XRANGE", "cairn-events", "-", "+")
            entries = resp_read(f)
            s.close()
            seqs = {}
            for _id, fields in entries:
                rec = json.loads(dict(zip(fields[::2], fields[1::2]))[b"event"])["Records"][0]
                seqs.setdefault(key_of(rec), []).append(rec["s3"]["object"]["sequencer"])
            t.ok(sorted(seqs) == ["b 0", "b 1", "b 2", "b 3"] and
                 all(len(set(v)) == 10 and v == sorted(v) for v in seqs.values()),
                 "each key's 10 events, in sequencer order", repr(seqs)[:300])
    # NATS
    if not shutil.which("nats-server"):
        t.skip("nats", "nats-server is not installed")
    else:
        with t.block("nats"):
            port = free_port()
            start_child(["nats-server", "-a", "127.0.0.1", "-p", str(port)])
            t.ok(wait_port(port, 20), "nats-server starts")
            s = socket.create_connection(("127.0.0.1", port), 10)
            f = s.makefile("rb")
            f.readline()  # INFO
            s.sendall(b'CONNECT {"verbose":false}\r\nSUB cairn.events 1\r\nPING\r\n')
            while f.readline().strip() != b"PONG":
                pass
            admin("target", "add", "nts", "--nats", "nats://127.0.0.1:%d/cairn.events" % port)
            srv.s3.create_bucket(Bucket="evt-nats")
            notif("evt-nats", "topic", "arn:cairn:sns:us-east-1::nts", ["s3:ObjectCreated:Put"])
            for i in range(3):
                srv.s3.put_object(Bucket="evt-nats", Key="n+%d" % i, Body=b"n")
            got = []
            s.settimeout(15)
            try:
                while len(got) < 3:
                    line = f.readline()
                    if line.startswith(b"MSG"):
                        n = int(line.split()[-1])
                        got.append(json.loads(f.read(n + 2)[:-2]))
                    elif line.startswith(b"PING"):
                        s.sendall(b"PONG\r\n")
                    elif not line:
                        break
            except socket.timeout:
                pass
            s.close()
            t.eq(sorted(key_of(e["Records"][0]) for e in got), ["n+0", "n+1", "n+2"],
                 "a NATS subscriber gets the 3 events")
    # RabbitMQ
    if not shutil.which("rabbitmq-server") or pika is None:
        t.skip("amqp", "rabbitmq-server or python3-pika is not installed")
    else:
        with t.block("amqp"):
            port = free_port()
            d = os.path.join(TOP, "rabbit")
            os.makedirs(d)
            node = "cairn%d@localhost" % port
            EPMD_PORT[0] = free_port()
            env = dict(os.environ, RABBITMQ_NODE_PORT=str(port), RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                       RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"), RABBITMQ_LOG_BASE=os.path.join(d, "log"),
                       RABBITMQ_NODENAME=node, RABBITMQ_DIST_PORT=str(free_port()),
                       RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
                       RABBITMQ_PID_FILE=os.path.join(d, "pid"), ERL_EPMD_PORT=str(EPMD_PORT[0]), HOME=d)
            for sub in ("mnesia", "log"):
                os.makedirs(os.path.join(d, sub))
            with open(os.path.join(d, "enabled_plugins"), "w") as fp:
                fp.write("[].\n")
            # Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user when run as root;
            # the script behind it runs the broker as whoever starts it, in our temp dirs.
            if shutil.which("epmd"):  # our own epmd (a child we stop), not a stray daemon
                start_child(["epmd", "-port", str(EPMD_PORT[0]), "-address", "127.0.0.1"])
                wait_port(EPMD_PORT[0], 10)
            exe = "/usr/lib/rabbitmq/bin/rabbitmq-server"
            argv = [exe if os.access(exe, os.X_OK) else "rabbitmq-server"]
            rmq = start_child(argv, env=env, cwd=d)

            def connect():
                return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1,
                                                                         socket_timeout=3, blocked_connection_timeout=5))
            conn = wait_until(lambda: _try(connect), 90, 1)
            if not t.ok(conn, "rabbitmq-server starts (within 90s)"):
                return
            ch = conn.channel()
            ch.exchange_declare("cairn-x", exchange_type="fanout", durable=True)
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(q, "cairn-x")
            admin("target", "add", "amq", "--amqp", "amqp://127.0.0.1:%d/cairn-x" % port)
            srv.s3.create_bucket(Bucket="evt-amqp")
            notif("evt-amqp", "queue", "arn:cairn:sqs:us-east-1::amq", ["s3:ObjectCreated:*"])
            for i in range(3):
                srv.s3.put_object(Bucket="evt-amqp", Key="a %d" % i, Body=b"a")
            got = []
            end = time.time() + 20
            while len(got) < 3 and time.time() < end:
                m, props, body = ch.basic_get(q, auto_ack=True)
                if m:
                    got.append(json.loads(body))
                else:
                    time.sleep(0.2)
            conn.close()
            t.eq(sorted(key_of(e["Records"][0]) for e in got), ["a 0", "a 1", "a 2"],
                 "a queue bound to the exchange gets the 3 events")
            amqp_unroutable(port, connect, os.path.join(d, "log", node + ".log"))
            amqp_restart(rmq, argv, env, d, port, connect)


def group_alive(pgid):
    """True while a process of group pgid runs (zombies do not count)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(st[2]) == pgid and st[0] != "Z":
            return True
    return False


def amqp_unroutable(port, connect, rlog):
    """Events are published mandatory: a broker confirms a message that no queue gets (here a
    direct exchange with nothing bound for the routing key, the bucket name) after returning
    it, and cairn must count that as a failure, not a delivery. The event stays pending with
    the error and is retried; once a queue is bound, the retry gets there, once. When the
    attempts run out it is dead-lettered like for a target that is down, and replayed. The
    returned message is read off the connection, which stays open for the next attempt."""
    def evts(which, bucket):
        return [e for e in admin_json("events", which)["events"] if e["bucket"] == bucket]

    def delivered():
        return admin_json("events", "pending")["stats"]["delivered"]

    def accepted():  # AMQP connections the broker accepted so far
        with open(rlog, "rb") as f:
            return f.read().count(b"accepting AMQP connection")

    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("cairn-direct", exchange_type="direct", durable=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    got = []

    def drain():
        while True:
            m, props, body = ch.basic_get(q, auto_ack=True)
            if not m:
                return got
            got.append(key_of(json.loads(body)["Records"][0]))

    admin("target", "add", "amqd", "--amqp", "amqp://127.0.0.1:%d/cairn-direct" % port)
    for b in ("evt-unrouted", "evt-unrouted-2"):
        srv.s3.create_bucket(Bucket=b)
        notif(b, "queue", "arn:cairn:sqs:us-east-1::amqd", ["s3:ObjectCreated:*"])

    # Retried while no queue is bound, then delivered by a retry once one is.
    d0 = delivered()
    srv.s3.put_object(Bucket="evt-unrouted", Key="nobody home", Body=b"u")
    pend = wait_until(lambda: [e for e in evts("pending", "evt-unrouted") if e["attempts"] >= 2], 15)
    want = 'amqp: unroutable: no queue bound to exchange "cairn-direct" for routing key "evt-unrouted"'
    t.ok(pend and pend[0]["key"] == "nobody home" and pend[0]["lastError"] == want,
         "an unroutable event stays pending, retried, with the broker's return as its error", pend)
    t.ok("last error: " + want in admin("events", "pending").stdout, "events pending shows the error (table)")
    t.eq(delivered(), d0, "the broker's confirm of a returned event does not count as delivered")
    t.eq(drain(), [], "and nothing reached any queue")
    ch.queue_bind(q, "cairn-direct", routing_key="evt-unrouted")
    wait_until(lambda: drain(), 15)
    t.eq(got, ["nobody home"], "with a queue bound, a retry delivers it")
    t.ok(wait_until(lambda: not evts("pending", "evt-unrouted"), 5), "and it is no longer pending")
    t.eq(delivered(), d0 + 1, "counted delivered once")
    dead = evts("dead", "evt-unrouted")
    t.eq(dead, [], "not dead-lettered")
    if dead:
        admin("events", "replay", *[str(e["id"]) for e in dead])

    # Out of attempts: dead-lettered with the same error; replayed once a queue is bound.
    n0 = accepted()
    srv.s3.put_object(Bucket="evt-unrouted-2", Key="still nobody", Body=b"u")
    dead = wait_until(lambda: evts("dead", "evt-unrouted-2"), 30, 0.25)
    want = want.replace('"evt-unrouted"', '"evt-unrouted-2"')
    t.ok(dead and dead[0]["key"] == "still nobody" and dead[0]["attempts"] == RETRIES
         and dead[0]["lastError"] == want,
         "after %d unroutable attempts it is dead-lettered" % RETRIES, dead)
    time.sleep(0.5)  # the broker's log is written a moment later
    t.ok(accepted() - n0 <= 4, "the %d attempts reused the delivery workers' connections (at most one new "
         "per worker of 4, not one per attempt)" % RETRIES, accepted() - n0)
    t.eq(evts("pending", "evt-unrouted-2"), [], "and no longer pending")
    t.eq(drain(), ["nobody home"], "it reached no queue")
    ch.queue_bind(q, "cairn-direct", routing_key="evt-unrouted-2")
    if dead:
        out = admin("events", "replay", str(dead[0]["id"])).stdout
        t.ok("replayed 1" in out, "events replay re-sends it", out)
    wait_until(lambda: len(drain()) >= 2, 15)
    time.sleep(1.5)  # more than backoff-max: a second copy would be here by now
    drain()
    t.eq(got, ["nobody home", "still nobody"], "the replayed event reaches the queue bound since, each event once")
    t.ok(wait_until(lambda: not evts("dead", "evt-unrouted-2") and not evts("pending", "evt-unrouted-2"), 5),
         "and it left the dead letters")
    conn.close()
    admin("target", "remove", "amqd")


def amqp_restart(rmq, argv, env, cwd, port, connect):
    """The delivery workers keep their AMQP connections open too: kill -9 the broker, PUT
    while it is down, start it again on the same port and node dir. A durable queue bound
    (and flushed to disk) before the kill comes back with its binding and must get every
    event (the stale connections are reopened). An event whose retries run out while the
    broker boots is dead-lettered, not lost: it is replayed. Bounded to about a minute."""
    def evts(which):
        return [e for e in admin_json("events", which)["events"] if e["bucket"] == "evt-amqp"]

    conn = connect()
    ch = conn.channel()
    ch.queue_declare("cairn-restart", durable=True)
    ch.queue_bind("cairn-restart", "cairn-x")
    conn.close()
    # RabbitMQ's metadata log (mnesia) reaches the disk lazily: a binding made just before a
    # kill -9 can be gone after the restart (seen under disk load), and cairn's events would
    # then be returned as unroutable and retried until dead-lettered. Flush it first.
    ctl = os.path.join(os.path.dirname(argv[0]), "rabbitmqctl")
    try:
        p = subprocess.run([ctl, "-q", "eval", "mnesia:sync_log()."], env=env, cwd=cwd, capture_output=True,
                           text=True, timeout=15)
        out = (p.returncode, p.stdout.strip(), p.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as e:
        out = (None, "", repr(e))
    t.ok(out[:2] == (0, "ok"), "rabbitmqctl eval 'mnesia:sync_log().' (the binding is on disk)", out)
    # rabbitmq-server is a script waiting for the Erlang VM it started: kill the whole group.
    os.killpg(rmq.pid, signal.SIGKILL)
    rmq.wait(10)

    def listening():
        return _try(lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True)
    t.ok(wait_until(lambda: not group_alive(rmq.pid) and not listening(), 10),
         "rabbitmq-server is killed (kill -9 of its process group) and gone")
    keys = ["down %d" % i for i in range(4)]
    for k in keys:
        srv.s3.put_object(Bucket="evt-amqp", Key=k, Body=b"a")
    t.eq(sorted(e["key"] for e in evts("pending")), keys, "events pending holds them while the broker is down")
    t0 = time.time()
    start_child(argv, env=env, cwd=cwd)

    def try_connect():
        try:
            return connect()
        except Exception:  # noqa: BLE001 - not up yet
            return None
    conn = wait_until(try_connect, 40, 0.5)
    if not t.ok(conn, "rabbitmq-server restarts on the same port and node dir (%.1fs)" % (time.time() - t0)):
        return
    ch = conn.channel()
    ch.queue_declare("cairn-restart", durable=True, passive=True)
    ch.basic_publish("cairn-x", "", b"marker")  # ours: tells whether the broker still routes to the queue
    srv.s3.put_object(Bucket="evt-amqp", Key="after restart", Body=b"a")
    want = keys + ["after restart"]
    got, marker = [], []

    def drain():
        while True:
            m, props, body = ch.basic_get("cairn-restart", auto_ack=True)
            if not m:
                return
            if body == b"marker":
                marker.append(1)
            else:
                got.append(key_of(json.loads(body)["Records"][0]))

    def settled():  # nothing pending: each event was published or dead-lettered
        drain()
        return marker and not evts("pending") and set(got) | {e["key"] for e in evts("dead")} >= set(want)

    def state():  # both sides, for a failure: did cairn keep the events or count them delivered?
        try:
            pend = admin_json("events", "pending")
            n = ch.queue_declare("cairn-restart", durable=True, passive=True).method.message_count
            with open(os.path.join(cwd, "log", env["RABBITMQ_NODENAME"] + ".log"), "rb") as f:
                tail = f.read().decode("utf-8", "replace").splitlines()[-12:]
            return (["published: %r" % got,
                     "cairn pending: %r" % [(e["key"], e["attempts"], e["lastError"]) for e in pend["events"]
                                            if e["bucket"] == "evt-amqp"],
                     "cairn dead: %r" % [(e["key"], e["attempts"], e["lastError"]) for e in evts("dead")],
                     "cairn stats: %r" % pend["stats"], "messages left in the queue: %d" % n,
                     "rabbitmq log:"] + tail)
        except Exception as e:  # noqa: BLE001 - a diagnostic only
            return ["published: %r" % got, "state: %r" % e]
    wait_until(settled, 8, 0.2)
    t.ok(marker, "the restarted broker routes the exchange to the durable queue (a message of ours gets there)")
    dead = evts("dead")
    kept = t.eq(sorted(set(got) | {e["key"] for e in dead}), sorted(want),
                "after the restart every event was published or dead-lettered, none lost")
    if not kept:
        t.diag(*state())
    if dead:
        t.diag("%d of %d events ran out of retries while the broker was down: %s"
               % (len(dead), len(want), ", ".join("%s (%s)" % (e["key"], e["lastError"]) for e in dead)))
        admin("events", "replay", *[str(e["id"]) for e in dead])
    wait_until(lambda: drain() or set(got) >= set(want), 8, 0.2)
    drain()
    full = t.eq(sorted(set(got)), sorted(want),
                "the durable queue gets every event of the PUTs made while the broker was down, and after")
    if not full and kept:
        t.diag(*state())
    conn.close()
    t.eq(len(got), len(set(got)), "each once (no redelivery on the reopened connections)", got)


# ---------------------------------------------------------------- functions
THUMB = r'''
import json, os, sys, urllib.request, boto3
ev = json.load(sys.stdin)
data = urllib.request.urlopen(os.environ["CAIRN_OBJECT_URL"], timeout=10).read()
s3 = boto3.client("s3", endpoint_url=os.environ["CAIRN_ENDPOINT"], region_name="us-east-1")
key = os.environ["CAIRN_KEY"]
s3.put_object(Bucket=os.environ["DEST"], Key=key + ".thumb", Body=data.upper())
print("thumb ok", key, ev["Records"][0]["eventName"], os.environ["CAIRN_EVENT_NAME"])
'''

LOOP = r'''
import os, sys, boto3
sys.stdin.read()
s3 = boto3.client("s3", endpoint_url=os.environ["CAIRN_ENDPOINT"], region_name="us-east-1")
d = int(os.environ["CAIRN_EVENT_DEPTH"])
s3.put_object(Bucket=os.environ["CAIRN_BUCKET"], Key="loop-%d" % (d + 1), Body=b"again")
print("loop run at depth", d)
'''


def functions():
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    with t.block("exec function"):
        path = os.path.join(TOP, "thumb.py")
        with open(path, "w") as fp:
            fp.write(THUMB)
        admin("function", "add", "thumb", "--exec", "%s %s" % (py, path), "--timeout", "30",
              "--concurrency", "2", "--env", "DEST=evt-thumbs")
        t.ok("thumb" in admin("function", "list").stdout, "function list shows it")
        srv.s3.create_bucket(Bucket="evt-src")
        srv.s3.create_bucket(Bucket="evt-thumbs")
        notif("evt-src", "lambda", "arn:cairn:lambda:us-east-1::function:thumb", ["s3:ObjectCreated:*"], suffix=".txt")
        got = srv.s3.get_bucket_notification_configuration(Bucket="evt-src")
        t.eq(got["LambdaFunctionConfigurations"][0]["LambdaFunctionArn"], "arn:cairn:lambda:us-east-1::function:thumb",
             "Get returns the Lambda configuration")
        names = ["img 1.txt", "img+2.txt", "é/3.txt"]
        for k in names:
            srv.s3.put_object(Bucket="evt-src", Key=k, Body=b"hello " + k.encode())
        srv.s3.put_object(Bucket="evt-src", Key="skip.bin", Body=b"no")

        def thumbs():
            return sorted(o["Key"] for o in srv.s3.list_objects_v2(Bucket="evt-thumbs").get("Contents", []))
        wait_until(lambda: len(thumbs()) >= 3, 30)
        t.eq(thumbs(), sorted(k + ".thumb" for k in names), "the function wrote one derived object per upload")
        body = srv.s3.get_object(Bucket="evt-thumbs", Key="img 1.thumb".replace(".thumb", ".txt.thumb"))["Body"].read()
        t.eq(body, b"HELLO IMG 1.TXT", "read through CAIRN_OBJECT_URL, transformed")
        time.sleep(1)
        log = admin("function", "logs", "thumb").stdout
        t.eq(log.count("thumb ok"), 3, "it ran once per upload; function logs shows its output", log[-800:])
        t.ok("ObjectCreated:Put ObjectCreated:Put" in log, "CAIRN_EVENT_NAME and the stdin record agree")

    with t.block("failing function"):
        admin("function", "add", "failer", "--exec", "cat >/dev/null; echo boom >&2; exit 1")
        srv.s3.create_bucket(Bucket="evt-fail")
        notif("evt-fail", "lambda", "arn:cairn:lambda:us-east-1::function:failer", ["s3:ObjectCreated:Put"])
        srv.s3.put_object(Bucket="evt-fail", Key="doomed", Body=b"d")
        dead = wait_until(lambda: [e for e in admin_json("events", "dead")["events"] if e["key"] == "doomed"], 30)
        t.ok(dead and dead[0]["attempts"] == RETRIES and "exit status 1" in dead[0]["lastError"],
             "retried %d times with backoff, then dead-lettered" % RETRIES, dead)
        t.eq(admin("function", "logs", "failer").stdout.count("boom"), RETRIES, "each attempt ran and logged")
        t.ok("doomed" in admin("events", "dead").stdout, "events dead shows it (table)")
        admin("function", "add", "failer", "--exec", "cat >/dev/null; echo fixed")
        out = admin("events", "replay", str(dead[0]["id"])).stdout
        t.ok("replayed 1" in out, "events replay ID re-sends it", out)
        wait_until(lambda: "fixed" in admin("function", "logs", "failer").stdout, 20)
        t.ok("fixed" in admin("function", "logs", "failer").stdout, "the replayed event reached the fixed function")
        t.ok(wait_until(lambda: not [e for e in admin_json("events", "dead")["events"] if e["key"] == "doomed"], 10),
             "and left the dead letters")

    with t.block("recursion guard"):
        path = os.path.join(TOP, "loop.py")
        with open(path, "w") as fp:
            fp.write(LOOP)
        admin("function", "add", "loop", "--exec", "%s %s" % (py, path), "--timeout", "30")
        srv.s3.create_bucket(Bucket="evt-loop")
        notif("evt-loop", "lambda", "arn:cairn:lambda:us-east-1::function:loop", ["s3:ObjectCreated:*"])
        srv.s3.put_object(Bucket="evt-loop", Key="seed", Body=b"s")

        def nobj():
            return len(srv.s3.list_objects_v2(Bucket="evt-loop").get("Contents", []))
        wait_until(lambda: nobj() >= 5, 40)
        time.sleep(3)
        runs = admin("function", "logs", "loop").stdout.count("loop run at depth")
        t.eq((runs, nobj()), (4, 5), "a function writing into its own bucket stops after depth 4")
        t.ok("recursion guard" in srv.logtext(), "the server logs the recursion guard")
        admin("function", "remove", "loop")
        t.ok("loop" not in admin("function", "list").stdout, "function remove")


try:
    main()
finally:
    if t.failed:
        try:
            t.diag("last lines of the cairn log:", *srv.logtext().splitlines()[-40:])
        except OSError:
            pass
    cleanup()
sys.exit(t.done())

#!/usr/bin/env python3
# tests/interop/test_usage.py BUILD_DIR - usage, access logs and metrics with real processes, TAP.
#  (a) exactness: a scripted workload of known size (boto3 PUT/GET, raw PUT/GET/HEAD/LIST/DELETE,
#      403 bad signatures, 412 If-None-Match, 404 missing keys); `cairn-admin usage --format csv`
#      and `--json` must show exactly the requests, billable requests, bytes in and bytes out sent.
#  (b) kill -9: N answered requests, SIGKILL at once, restart: the report shows all N.
#  (c) the access log parsed field by field (and free of signatures); (d) /_cairn/metrics parsed by
#      prometheus_client; (e) PutBucketLogging delivers log objects into the target bucket.
# Each server runs in its own temp dir, is stopped at the end, and every wait is bounded.
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
from s3raw import obj_path  # noqa: E402
from procs import LIVE, Cairn, reap  # noqa: E402

t = TAP()
if len(sys.argv) < 2 or not os.access(os.path.join(sys.argv[1], "cairn"), os.X_OK):
    print("1..0 # SKIP usage: test_usage.py BUILD_DIR (with BUILD_DIR/cairn)")
    sys.exit(0)
BUILD = os.path.abspath(sys.argv[1])
CAIRN = os.path.join(BUILD, "cairn")
ADMIN = os.path.join(BUILD, "cairn-admin")
AK = "AKUSAGE" + os.urandom(5).hex().upper()
SK = os.urandom(20).hex()
TOP = tempfile.mkdtemp(prefix="cairn-usage.")


class Server(Cairn):
    def __init__(self, name, *extra):
        super().__init__(CAIRN, name, os.path.join(TOP, name), os.path.join(TOP, name + ".log"), AK, SK, extra)

    def start(self, timeout=30):
        return super().start(timeout=timeout, probe="/_cairn/health")

    def admin(self, *args):
        env = dict(os.environ, CAIRN_ACCESS_KEY=AK, CAIRN_SECRET_KEY=SK,
                   CAIRN_ENDPOINT=self.endpoint)
        p = subprocess.run([ADMIN] + list(args), env=env, capture_output=True, timeout=60)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class Expect:
    """What the client sent and got, per (operation, status class)."""

    def __init__(self):
        self.rows = {}

    def add(self, op, status, bytes_in, bytes_out, billable=True):
        k = (op, "%dxx" % (status // 100))
        r = self.rows.setdefault(k, [0, 0, 0, 0])
        r[0] += 1
        r[1] += 1 if billable else 0
        r[2] += bytes_in
        r[3] += bytes_out


def raw_do(raw, exp, op, method, path, status_want, query=(), headers=None, body=b"",
           billable=None, **kw):
    r = raw.request(method, path, query=query, headers=headers or {}, body=body, **kw)
    if r.status != status_want:
        t.diag("%s %s: got %r" % (method, path, r))
    if billable is None:
        billable = not (r.status in (401, 403) or r.status >= 500 or op in (
            "DeleteObject", "DeleteBucket", "AbortMultipartUpload", "DeleteObjects"))
    exp.add(op, r.status, len(body), 0 if method == "HEAD" else len(r.body), billable)
    return r


def report(srv, *args):
    rc, out, err = srv.admin("usage", *args)
    return rc, out, err


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def by_op(rows):
    got = {}
    for r in rows:
        if r.get("class") == "storage":
            continue
        k = (r["operation"], r["status_class"])
        g = got.setdefault(k, [0, 0, 0, 0])
        g[0] += int(r["requests"])
        g[1] += int(r["billable_requests"])
        g[2] += int(r["bytes_in"])
        g[3] += int(r["bytes_out"])
    return got


# ------------------------------------------------------------------ (a) exactness
def test_exact(srv):
    raw = srv.raw
    exp = Expect()
    bucket = "usage-" + os.urandom(4).hex()
    raw_do(raw, exp, "CreateBucket", "PUT", obj_path(bucket), 200)
    sizes = [0, 1, 100, 4096, 65536, 70000, 1 << 20]
    keys = []
    for i, n in enumerate(sizes):
        key = "raw/k%02d é+&" % i
        keys.append((key, n))
        raw_do(raw, exp, "PutObject", "PUT", obj_path(bucket, key), 200, body=os.urandom(n))
    for key, n in keys:
        raw_do(raw, exp, "GetObject", "GET", obj_path(bucket, key), 200)
    for key, n in keys[:4]:
        raw_do(raw, exp, "HeadObject", "HEAD", obj_path(bucket, key), 200)
    raw_do(raw, exp, "HeadBucket", "HEAD", obj_path(bucket), 200)
    for q in ([("list-type", "2")], [("list-type", "2"), ("prefix", "raw/")], []):
        raw_do(raw, exp, "ListObjectsV2" if q else "ListObjects", "GET", obj_path(bucket), 200,
               query=q)
    # 404s, 412s, 403s (bad signature: counted, not billed)
    for i in range(3):
        raw_do(raw, exp, "GetObject", "GET", obj_path(bucket, "missing-%d" % i), 404)
    for i in range(2):
        raw_do(raw, exp, "PutObject", "PUT", obj_path(bucket, keys[2][0]), 412,
               headers={"If-None-Match": "*"}, body=b"z" * 33)
    for i in range(4):
        raw_do(raw, exp, "GetObject", "GET", obj_path(bucket, keys[1][0]), 403,
               secret=SK[:-1] + ("0" if SK[-1] != "0" else "1"))
    # boto3, when present: PUTs and GETs of known sizes
    try:
        import boto3
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id=AK,
                          aws_secret_access_key=SK, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1},
                                        s3={"addressing_style": "path"}))
        for i in range(5):
            body = os.urandom(1000 + i)
            s3.put_object(Bucket=bucket, Key="boto/%d" % i, Body=body)
            exp.add("PutObject", 200, len(body), 0)
            got = s3.get_object(Bucket=bucket, Key="boto/%d" % i)["Body"].read()
            exp.add("GetObject", 200, 0, len(got))
        have_boto = True
    except ImportError:
        have_boto = False
    # deletes: free
    for key, n in keys[:3]:
        raw_do(raw, exp, "DeleteObject", "DELETE", obj_path(bucket, key), 204)

    rc, out, err = report(srv, "--bucket", bucket, "--by", "operation", "--format", "csv")
    t.ok(rc == 0, "cairn-admin usage --format csv runs", err)
    rows = csv_rows(out)
    hdr = out.splitlines()[0].split(",") if out else []
    need = ["period", "bucket", "access_key", "operation", "class", "status_class", "requests",
            "billable_requests", "bytes_in", "bytes_out", "cost"]
    t.ok(all(c in hdr for c in need), "CSV header has every required column", hdr)
    got = by_op(rows)
    t.eq(sorted(got), sorted(exp.rows), "same (operation, status class) rows as sent")
    for k in sorted(exp.rows):
        t.eq(got.get(k), exp.rows[k],
             "%s %s: requests, billable, bytes in, bytes out exact" % k)
    classes = {r["operation"]: r["class"] for r in rows if r["class"] != "storage"}
    t.eq((classes.get("PutObject"), classes.get("GetObject"), classes.get("HeadObject"),
          classes.get("ListObjectsV2"), classes.get("DeleteObject")),
         ("A", "B", "B", "A", "free"), "classes follow R2 (PUT/LIST A, GET/HEAD B, DELETE free)")
    # --json: the same totals, and costs under the default (R2) sheet
    rc, out, err = report(srv, "--bucket", bucket, "--json")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = {}
    t.ok(rc == 0 and "totals" in doc, "cairn-admin usage --json gives the report", err, out[:300])
    tot = doc.get("totals", {})
    want = [sum(v[i] for v in exp.rows.values()) for i in range(4)]
    t.eq([tot.get("requests"), tot.get("billable_requests"), tot.get("bytes_in"),
          tot.get("bytes_out")], want, "JSON totals equal the workload")
    bill_a = sum(v[1] for k, v in exp.rows.items() if k[0] in (
        "CreateBucket", "PutObject", "ListObjectsV2", "ListObjects"))
    bill_b = sum(v[1] for k, v in exp.rows.items() if k[0] in (
        "GetObject", "HeadObject", "HeadBucket"))
    t.eq((tot.get("class_a"), tot.get("class_b")), (bill_a, bill_b), "billable per class")
    cost = bill_a * 4.50 / 1e6 + bill_b * 0.36 / 1e6
    t.ok(abs(tot.get("request_cost", -1) - cost) < 1e-6, "request cost under R2 prices",
         tot.get("request_cost"), cost)
    t.ok("R2" in doc.get("prices", {}).get("name", "") and
         "cloudflare.com/r2/pricing" in doc.get("prices", {}).get("source", ""),
         "the default sheet says it is R2's published prices")
    stored = sum(n for k, n in keys[3:]) + (sum(1000 + i for i in range(5)) if have_boto else 0)
    now = {b["bucket"]: b for b in doc.get("buckets_now", [])}
    t.eq(now.get(bucket, {}).get("bytes"), stored, "stored bytes of the bucket exact")
    t.ok(tot.get("byte_hours", 0) > 0 and tot.get("gb_months", 0) > 0,
         "storage byte-hours and GB-months reported")
    # table format and a price sheet file
    sheet = os.path.join(TOP, "prices.txt")
    with open(sheet, "w") as f:
        f.write("# test sheet\nname = test\nclass_a_per_million = 1000000\n"
                "class_b_per_million = 0\nstorage_per_gb_month = 0\n")
    rc, out, err = report(srv, "--bucket", bucket, "--prices", sheet, "--json")
    doc2 = json.loads(out) if rc == 0 else {}
    t.ok(abs(doc2.get("totals", {}).get("cost", -1) - bill_a) < 1e-6,
         "a price sheet file prices the report (1 per Class A request)", err)
    rc, out, err = report(srv, "--bucket", bucket, "--by", "day")
    t.ok(rc == 0 and "prices:" in out and "total:" in out, "table format", err, out[-400:])
    rc, out, err = report(srv, "--bucket", bucket, "--from", "2000-01-01T00:00Z",
                          "--to", "2000-01-02T00:00Z", "--json")
    t.eq(json.loads(out)["totals"]["requests"] if rc == 0 else None, 0,
         "--from/--to outside the workload: nothing")
    rc, out, err = report(srv, "--bucket", bucket, "--access-key", AK, "--by", "access-key",
                          "--format", "csv")
    rows = csv_rows(out) if rc == 0 else []
    t.ok(rows and all(r["access_key"] == AK for r in rows), "--access-key filters", out[:300])
    return bucket, keys


# -------------------------------------------------------------------- (b) kill -9
def test_kill():
    srv = Server("kill", "--usage-fold-ms", "60000")
    if not t.ok(srv.start(), "kill-test server starts"):
        return
    raw = srv.raw
    bucket = "kill-" + os.urandom(4).hex()
    raw.request("PUT", obj_path(bucket))
    n = 0
    for i in range(150):
        r = raw.request("PUT", obj_path(bucket, "k%d" % i), body=b"x" * 10)
        n += r.status == 200
        r = raw.request("GET", obj_path(bucket, "k%d" % i))
        n += r.status == 200
    srv.stop(signal.SIGKILL)
    t.ok(srv.start(), "server restarts after kill -9")
    rc, out, err = srv.admin("usage", "--bucket", bucket, "--by", "operation", "--json")
    doc = json.loads(out) if rc == 0 else {}
    per = {}
    for r in doc.get("rows", []):
        per[r["operation"]] = per.get(r["operation"], 0) + r["requests"]
    t.eq((per.get("PutObject"), per.get("GetObject")), (150, 150),
         "after kill -9 the report shows every answered request (%d)" % n, err)
    t.eq(doc.get("totals", {}).get("bytes_in"), 1500, "and their bytes in")
    srv.stop()


# ----------------------------------------------------------------- (c) access log
LOG_RE = re.compile(
    r'^(?P<owner>\S+) (?P<bucket>\S+) \[(?P<time>[^\]]+)\] (?P<ip>\S+) (?P<requester>\S+) '
    r'(?P<reqid>\S+) (?P<op>\S+) (?P<key>\S+) "(?P<uri>[^"]*)" (?P<status>\d{3}|-) '
    r'(?P<err>\S+) (?P<sent>\d+|-) (?P<size>\d+|-) (?P<total>\d+|-) (?P<turn>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)" (?P<ver>\S+) (?P<hostid>\S+) (?P<sigv>\S+) '
    r'(?P<cipher>\S+) (?P<auth>\S+) (?P<host>\S+) (?P<tls>\S+) (?P<arn>\S+) (?P<acl>\S+)$')


def test_access_log(srv, bucket):
    raw = srv.raw
    key = "log test/ü+x"
    body = b"L" * 1234
    r = raw.request("PUT", obj_path(bucket, key), body=body, headers={"User-Agent": 'ua "q" 1',
                                                                     "Referer": "http://r/"})
    put_id = r.headers.get("x-amz-request-id")
    url = raw.presign("GET", obj_path(bucket, key))
    sig = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Signature"][0]
    u = urllib.parse.urlsplit(url)
    r2 = raw.send("GET", u.path + "?" + u.query, {"host": raw.netloc})
    get_id = r2.headers.get("x-amz-request-id")
    time.sleep(0.3)
    path = os.path.join(srv.data, "logs", "access.log")
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError as e:
        t.ok(False, "DIR/logs/access.log exists", str(e))
        return
    t.ok(len(lines) > 20, "DIR/logs/access.log has a line per request (%d)" % len(lines))
    parsed = [LOG_RE.match(x) for x in lines]
    bad = [x for x, m in zip(lines, parsed) if not m]
    t.ok(not bad, "every line parses into the 25 S3 access log fields", *bad[:3])
    by_id = {m.group("reqid"): m for m in parsed if m}
    m = by_id.get(put_id)
    if t.ok(m is not None, "the PUT's line is found by its request id"):
        t.eq((m.group("bucket"), m.group("op"), urllib.parse.unquote(m.group("key")),
              m.group("status"), m.group("err"), m.group("size"), m.group("requester"),
              m.group("sigv"), m.group("auth"), m.group("ip")),
             (bucket, "REST.PUT.OBJECT", key, "200", "-", "1234", AK, "SigV4", "AuthHeader",
              "127.0.0.1"), "PUT line fields: bucket, operation, key, status, size, requester")
        t.ok(m.group("uri").startswith("PUT /%s/" % bucket) and m.group("uri").endswith(" HTTP/1.1"),
             "request-URI field", m.group("uri"))
        t.ok(re.match(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000$", m.group("time")), "time field")
        t.eq(m.group("referer"), "http://r/", "referer field")
        t.ok('"' not in m.group("ua") and "q" in m.group("ua"), "user agent escaped", m.group("ua"))
    m = by_id.get(get_id)
    if t.ok(m is not None, "the presigned GET's line is found"):
        t.eq((m.group("op"), m.group("status"), m.group("sent"), m.group("auth")),
             ("REST.GET.OBJECT", "200", "1234", "QueryString"), "GET line fields")
    text = "\n".join(lines)
    t.ok(sig not in text and SK not in text and "Authorization" not in text
         and "AWS4-HMAC-SHA256 Credential" not in text,
         "no signature, secret or Authorization header in the log")
    t.ok("X-Amz-Signature=REDACTED" in text, "presigned signature value replaced")


# ---------------------------------------------------------------------- (d) metrics
def test_metrics(srv, bucket):
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        t.skip("metrics parse with prometheus_client", "python3-prometheus-client not installed")
        return
    r = srv.raw.send("GET", "/_cairn/metrics", {"host": srv.raw.netloc})
    t.eq(r.status, 200, "GET /_cairn/metrics answers 200 without credentials")
    try:
        fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    except Exception as e:  # noqa: BLE001
        t.ok(False, "prometheus_client parses the exposition", repr(e), r.body[:500])
        return
    t.ok(True, "prometheus_client parses the exposition")
    for name, typ in (("cairn_requests", "counter"), ("cairn_request_duration_seconds", "histogram"),
                      ("cairn_bytes_in", "counter"), ("cairn_bytes_out", "counter"),
                      ("cairn_bucket_objects", "gauge"), ("cairn_bucket_bytes", "gauge"),
                      ("cairn_event_queue_depth", "gauge"), ("cairn_drive_up", "gauge")):
        f = fams.get(name)
        t.ok(f is not None and f.type == typ, "metric %s (%s)" % (name, typ))
    puts = sum(s.value for s in fams["cairn_requests"].samples
               if s.labels.get("op") == "PutObject" and s.labels.get("status") == "200")
    t.ok(puts >= 7, "cairn_requests_total{op=PutObject,status=200} counts PUTs (%d)" % puts)
    cnt = [s.value for s in fams["cairn_request_duration_seconds"].samples
           if s.name.endswith("_count") and s.labels.get("op") == "PutObject"]
    t.ok(cnt and cnt[0] >= puts, "histogram count per op")
    bb = [s.value for s in fams["cairn_bucket_bytes"].samples if s.labels.get("bucket") == bucket]
    rc, out, err = srv.admin("usage", "--bucket", bucket, "--json")
    now = {b["bucket"]: b["bytes"] for b in json.loads(out).get("buckets_now", [])} if rc == 0 else {}
    t.ok(bb and bb[0] == now.get(bucket), "cairn_bucket_bytes equals the stored bytes", bb, now)
    up = [s.value for s in fams["cairn_drive_up"].samples]
    t.ok(len(up) == 6 and all(v == 1 for v in up), "cairn_drive_up: 6 drives up", up)


# ---------------------------------------------------------------- (e) bucket logging
def test_bucket_logging(srv):
    raw = srv.raw
    src = "logsrc-" + os.urandom(3).hex()
    dst = "logdst-" + os.urandom(3).hex()
    raw.request("PUT", obj_path(src))
    raw.request("PUT", obj_path(dst))
    cfg = ('<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01"><LoggingEnabled>'
           '<TargetBucket>%s</TargetBucket><TargetPrefix>access/</TargetPrefix>'
           '</LoggingEnabled></BucketLoggingStatus>' % dst).encode()
    r = raw.request("PUT", obj_path(src), query=[("logging", "")], body=cfg)
    t.eq(r.status, 200, "PutBucketLogging", r)
    r = raw.request("GET", obj_path(src), query=[("logging", "")])
    t.ok(r.status == 200 and b"<TargetBucket>%s</TargetBucket>" % dst.encode() in r.body
         and b"<TargetPrefix>access/</TargetPrefix>" in r.body, "GetBucketLogging", r)
    bad = cfg.replace(dst.encode(), b"no-such-bucket-xyz")
    r = raw.request("PUT", obj_path(src), query=[("logging", "")], body=bad)
    t.eq((r.status, r.error().get("Code")), (400, "InvalidTargetBucketForLogging"),
         "a missing target bucket is refused")
    ids = []
    for i in range(5):
        r = raw.request("PUT", obj_path(src, "o%d" % i), body=b"d" * 10)
        ids.append(r.headers.get("x-amz-request-id"))
    found, text, keys = set(), "", []
    end = time.time() + 20
    while time.time() < end and len(found) < len(ids):
        r = raw.request("GET", obj_path(dst), query=[("list-type", "2"), ("prefix", "access/")])
        keys = re.findall(rb"<Key>([^<]+)</Key>", r.body)
        text = ""
        for k in keys:
            g = raw.request("GET", obj_path(dst, k.decode()))
            text += g.body.decode("utf-8", "replace")
        found = {i for i in ids if i in text}
        if len(found) < len(ids):
            time.sleep(0.5)
    t.eq(len(found), len(ids), "log lines of the source bucket's requests delivered as objects")
    t.ok(keys and all(re.match(rb"^access/\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9A-F]{16}$", k)
                      for k in keys), "log objects named TargetPrefix + YYYY-mm-DD-HH-MM-SS-UNIQUE",
         keys[:3])
    t.ok(all(LOG_RE.match(x) for x in text.splitlines() if x), "delivered lines parse")
    r = raw.request("PUT", obj_path(src), query=[("logging", "")],
                    body=b'<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01"/>')
    r2 = raw.request("GET", obj_path(src), query=[("logging", "")])
    t.ok(r.status == 200 and b"LoggingEnabled" not in r2.body, "an empty status disables logging")


def main():
    srv = Server("main", "--log-delivery-interval", "1", "--usage-fold-ms", "200")
    if not t.ok(srv.start(), "server starts"):
        return
    bucket = "usage-none"
    with t.block("exactness"):
        bucket, _ = test_exact(srv)
    with t.block("kill -9"):
        test_kill()
    with t.block("access log"):
        test_access_log(srv, bucket)
    with t.block("metrics"):
        test_metrics(srv, bucket)
    with t.block("bucket logging"):
        test_bucket_logging(srv)
    rc = srv.stop()
    t.ok(rc in (0, -15, 143), "server exits on SIGTERM (%r)" % (rc,))
    for s in LIVE:
        rep = s.sanitizer_report()
        if rep:
            t.ok(False, "no sanitizer report in %s" % s.log, *rep)


try:
    main()
finally:
    reap()
    shutil.rmtree(TOP, ignore_errors=True)
sys.exit(t.done())

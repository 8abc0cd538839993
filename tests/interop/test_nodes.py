#!/usr/bin/env python3
# tests/interop/test_nodes.py BUILD_DIR - storage nodes (cairn-chunkd) with real processes, as TAP.
# Six cairn-chunkd nodes on loopback behind one gateway (cairn server --nodes ... --ec 4+2):
#  (1) PUTs and GETs from several threads while two nodes are killed (-9): acknowledged PUTs read
#      back exact, no GET returns wrong bytes, a PUT needs k+1 live nodes; the nodes return (the
#      gateway restarted meanwhile) and heal walks restore full redundancy; two other nodes die
#      and everything still reads back. A hung node (SIGSTOP) is timed out and read around.
#  (2) flipped bytes in a block of a shard file: GET exact; the GET, `scrub`, `heal --deep` and
#      the background scrub (--scrub-rate) each put a damaged file back as it was; a scrub
#      racing a GET's heal of the same shard counts nothing as failed.
#  (3) a wiped node directory: `heal` puts back every shard and manifest it held.
#  (3b) --nodes with two URLs swapped: the nodes claimed for another slot are refused (down),
#      data still reads back, nothing is written to them.
#  (4) DIR/meta deleted: --rebuild-metadata brings back every object (bytes, size, ETag,
#      Content-Type, x-amz-meta-*) and the same listings.
#  (5) node requests without a valid HMAC (missing, other key, other path or method, a body not
#      matching its hash, a stale date) get 403 and change nothing.
#  (6) a second cluster: kill -9 of the gateway during multi-MiB PUTs leaves no half object, and
#      after `gc` no orphan shard or manifest; a DELETE while a node is down is finished by `gc`.
# Standard library only (s3raw.py). Every process is stopped at the end (finally + atexit, also
# on SIGTERM), every wait is bounded. CAIRN_IT_NODES_KEEP=1 keeps the temp dir and logs.
import atexit
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
import s3raw  # noqa: E402
from s3raw import obj_path  # noqa: E402
from procs import LIVE, Cairn, Proc, free_port, wait_for  # noqa: E402

t = TAP()
if len(sys.argv) < 2 or not os.access(os.path.join(sys.argv[1], "cairn"), os.X_OK):
    print("1..0 # SKIP usage: test_nodes.py BUILD_DIR (with BUILD_DIR/cairn)")
    sys.exit(0)
BUILD = os.path.abspath(sys.argv[1])
CAIRN = os.path.join(BUILD, "cairn")
CHUNKD = os.path.join(BUILD, "cairn-chunkd")
ADMIN = os.path.join(BUILD, "cairn-admin")
AK = os.environ.get("CAIRN_ACCESS_KEY") or "AKNODE" + os.urandom(6).hex().upper()
SK = os.environ.get("CAIRN_SECRET_KEY") or os.urandom(20).hex()
SECRET = "nodes-" + os.urandom(16).hex()
TOP = tempfile.mkdtemp(prefix="cairn-nodes.")
KEEP = os.environ.get("CAIRN_IT_NODES_KEEP") == "1"
MB = 1 << 20
K, M = 4, 2
INLINE_MAX = 65536
SHARD_RE = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{32})\.([0-9]+)$")
BLOB_RE = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{32})$")
SETTINGS_ID = "f" * 32  # the blob holding the gateway's settings snapshot
STAT_FIELDS = ("objects", "segments", "shards_checked", "shards_missing", "shards_corrupt",
               "shards_healed", "shards_failed", "manifests", "manifests_healed", "bytes_verified")
NETERR = (OSError, http.client.HTTPException)


def check_stop(p, what):
    return p.stopped_cleanly(t, what)


class Node(Proc):
    def __init__(self, cluster, i):
        name = "%s-node%d" % (cluster, i)
        super().__init__(name, os.path.join(TOP, name + ".log"), {"CAIRN_CLUSTER_SECRET": SECRET})
        self.i = i
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.dir = os.path.join(TOP, cluster, "node%d" % i)
        self.argv = [CHUNKD, "--listen", "127.0.0.1:%d" % self.port, "--dir", self.dir]
        self.attempts = 0

    def answers(self):
        try:
            node_req(self, "GET", "/v1/health", timeout=3)
            return True
        except NETERR:
            return False

    def start(self, timeout=30):
        """Starts the node on its port and waits until it answers HTTP. A node that exits at once
        (e.g. its port is not free yet) is started again until timeout; self.attempts counts."""
        os.makedirs(self.dir, exist_ok=True)
        end = time.time() + timeout
        self.attempts = 0
        while time.time() < end:
            self.attempts += 1
            self.spawn()
            while time.time() < end and self.proc.poll() is None:
                if self.answers():
                    return True
                time.sleep(0.1)
            if self.proc.poll() is None:
                break
            time.sleep(0.5)
        self.kill9()
        return False


class Gateway(Cairn):
    def __init__(self, name, data, nodes):
        super().__init__(CAIRN, name, data, os.path.join(TOP, name + ".log"), AK, SK,
                         env={"CAIRN_CLUSTER_SECRET": SECRET})
        self.nodes = nodes

    @property
    def url(self):
        return self.endpoint

    def start(self, *extra, scrub=0, timeout=60):
        os.makedirs(self.data, exist_ok=True)
        return super().start("--nodes", ",".join(n.url for n in self.nodes), "--ec", "%d+%d" % (K, M),
                             "--inline-max", str(INLINE_MAX), "--scrub-rate", str(scrub), *extra,
                             timeout=timeout, client_timeout=120)


def cluster_stop(procs, what):
    for p in procs:
        if p.proc is not None:
            check_stop(p, what)


# ------------------------------------------------------------ node protocol
def node_sig(secret, method, path, date, body_hash):
    msg = "%s\n%s\n%s\n%s" % (method, path, date, body_hash)
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


def node_req(node, method, path, body=b"", secret=None, date=None, body_hash=None, auth=True,
             sign_method=None, sign_path=None, scheme="CAIRN-HMAC-SHA256", timeout=30):
    """One request to a cairn-chunkd, signed as the protocol says unless told otherwise: secret
    (another key), date (unix seconds), body_hash (declared X-Cairn-Content-SHA256), auth=False
    (no Authorization), sign_method/sign_path (sign another request than the one sent)."""
    date = str(int(time.time()) if date is None else date)
    bh = body_hash or hashlib.sha256(body).hexdigest()
    hdrs = {"X-Cairn-Date": date, "X-Cairn-Content-SHA256": bh}
    if auth:
        hdrs["Authorization"] = "%s %s" % (scheme, node_sig(secret or SECRET, sign_method or method,
                                                             sign_path or path, date, bh))
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        conn.request(method, path, body=body if (body or method in ("PUT", "POST")) else None, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return s3raw.Resp(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def node_scan(node):
    """What a node holds on disk: ({(seg, index): path}, {blob id: path}, [partial files], [others])."""
    shards, blobs, partial, other = {}, {}, [], []
    for sub, rx, out in (("shards", SHARD_RE, shards), ("blobs", BLOB_RE, blobs)):
        root = os.path.join(node.dir, sub)
        for dp, _, fns in os.walk(root):
            for fn in fns:
                p = os.path.join(dp, fn)
                rel = os.path.relpath(p, root)
                mt = rx.match(rel)
                if mt and sub == "blobs" and mt.group(2) == SETTINGS_ID:
                    continue  # the settings snapshot, not an object manifest
                if mt and mt.group(1) == mt.group(2)[:2]:
                    if sub == "shards":
                        out[(mt.group(2), int(mt.group(3)))] = p
                    else:
                        out[mt.group(2)] = p
                elif re.search(r"\.(part|heal|tmp)$", fn):
                    partial.append(os.path.join(sub, rel))
                else:
                    other.append(os.path.join(sub, rel))
    return shards, blobs, partial, other


def segments_on(nodes):
    """{segment id: {node index: shard index}} over every node."""
    out = {}
    for n in nodes:
        for (seg, idx) in node_scan(n)[0]:
            out.setdefault(seg, {})[n.i] = idx
    return out


def blobs_on(nodes):
    out = {}
    for n in nodes:
        for b in node_scan(n)[1]:
            out.setdefault(b, set()).add(n.i)
    return out


def partials_on(nodes):
    return ["%s: %s" % (n.name, p) for n in nodes for p in node_scan(n)[2]]


def redundancy_gaps(nodes):
    """Segments that do not have exactly one shard on every node with indexes 0..k+m-1."""
    gaps = []
    for seg, where in sorted(segments_on(nodes).items()):
        if sorted(where) != [n.i for n in nodes] or sorted(where.values()) != list(range(K + M)):
            gaps.append("%s: node->index %s" % (seg, sorted(where.items())))
    return gaps


def find_shard(nodes, seg, idx):
    for n in nodes:
        p = node_scan(n)[0].get((seg, idx))
        if p:
            return n, p
    return None, None


def new_segments(nodes, fn):
    before = set(segments_on(nodes))
    r = fn()
    return r, sorted(set(segments_on(nodes)) - before)


def read_file(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError:
        return None


def flip(path, off, n=16):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(n)
        f.seek(off)
        f.write(bytes(x ^ 0xA5 for x in b))
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------- admin
def admin_cli(gw, *args, timeout=600):
    """cairn-admin ARGS --json against gw: (parsed JSON or None, error text)."""
    env = dict(os.environ, CAIRN_ACCESS_KEY=AK, CAIRN_SECRET_KEY=SK, CAIRN_ENDPOINT=gw.url)
    try:
        p = subprocess.run([ADMIN] + list(args) + ["--json"], env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "cairn-admin %s: no answer in %ds" % (" ".join(args), timeout)
    if p.returncode != 0:
        return None, "cairn-admin %s: exit %d: %s %s" % (" ".join(args), p.returncode, p.stdout[-400:], p.stderr[-400:])
    try:
        return json.loads(p.stdout), ""
    except ValueError:
        return None, "cairn-admin %s: not JSON: %r" % (" ".join(args), p.stdout[:400])


def admin_http(gw, method, path, query=(), timeout=600):
    raw = gw.client(timeout)
    try:
        r = raw.request(method, path, query=list(query))
    except NETERR as e:
        return None, "%s %s: %s" % (method, path, e)
    if r.status != 200:
        return None, "%s %s: %r" % (method, path, r)
    try:
        return json.loads(r.body), ""
    except ValueError:
        return None, "%s %s: not JSON: %r" % (method, path, r.body[:300])


def metric(gw, name):
    """A counter from /_cairn/metrics (no credentials), or None."""
    try:
        r = gw.raw.send("GET", "/_cairn/metrics", {"host": gw.raw.netloc})
    except NETERR:
        return None
    m = re.search(r"^%s(?:\{\})? ([0-9.e+]+)$" % re.escape(name), r.body.decode("utf-8", "replace"), re.M)
    return int(float(m.group(1))) if m else None


def stats_ok(d):
    return isinstance(d, dict) and all(isinstance(d.get(f), int) for f in STAT_FIELDS)


def nodes_state(gw):
    """{slot: up} from GET /_cairn/admin/nodes, or None."""
    d, _ = admin_http(gw, "GET", "/_cairn/admin/nodes", timeout=30)
    if not isinstance(d, list):
        return None
    try:
        return {int(e["slot"]): bool(e["up"]) for e in d}
    except (KeyError, TypeError, ValueError):
        return None


def wait_nodes(gw, want, timeout=45):
    """Waits until the gateway sees slot i up == want[i] for every i in want; returns the last state."""
    last = [None]

    def check():
        last[0] = nodes_state(gw)
        return last[0] is not None and all(last[0].get(i) == up for i, up in want.items())
    wait_for(check, timeout, 0.5)
    return last[0]


def gc_until_clean(gw, timeout=60):
    """Runs gc until it reports nothing pending; returns (last answer, error, calls)."""
    end = time.time() + timeout
    calls = 0
    while True:
        calls += 1
        d, err = admin_cli(gw, "gc")
        if d is None or d.get("pending") == 0 or time.time() >= end:
            return d, err, calls
        time.sleep(1)


# ------------------------------------------------------------------ objects
KEY_1024 = "long/" + "k" * (1024 - len("long/") - 4) + ".bin"
assert len(KEY_1024.encode()) == 1024


def body_for(key, n, salt=0):
    return random.Random("%s|%d|%d" % (key, n, salt)).randbytes(n)


def object_headers(ctype=None, meta=None):
    hdrs = {"content-type": ctype} if ctype else {}
    for k, v in (meta or {}).items():
        hdrs["x-amz-meta-" + k] = v
    return hdrs


def put(raw, bucket, key, data, ctype=None, meta=None):
    return raw.request("PUT", obj_path(bucket, key), headers=object_headers(ctype, meta), body=data)


def put_multipart(raw, bucket, key, parts, ctype=None, meta=None):
    s3raw.put_multipart(raw, bucket, key, parts, object_headers(ctype, meta))


# (key, size, content-type, metadata): below, at and above the inline threshold, multi-stripe
# (a stripe is 4 x 256 KiB) and awkward keys.
BASE = [
    ("empty", 0, None, {}),
    ("awk/space key.txt", 100, "text/plain; charset=utf-8", {"author": "ann", "n": "42"}),
    ("awk/plus+sign+%20not-a-space.bin", 1000, "application/octet-stream", {}),
    ("awk/percent%2F%25 & amp=eq?q.bin", INLINE_MAX, "application/x-at-threshold", {"edge": "inline"}),
    ("awk/\u00e9t\u00e9 \u65e5\u672c/\u00fcn\u00efc\u00f8d\u00e9.bin", INLINE_MAX + 1, "image/png", {"x": "1"}),
    ("dir/a.txt", 300 * 1024 + 1, "text/plain", {"color": "blue green"}),
    ("dir/sub/b.bin", MB, None, {"a": "1", "b-c": "x y z"}),
    ("dir/sub/c.json", 3 * MB + 17, "application/json", {}),
    ("top-8m", 8 * MB + 5, "video/mp4", {"size": "big"}),
    (KEY_1024, 200 * 1024, "application/x-long-key", {"long": "yes"}),
]
MP_KEY = "mp/multi part \u00e9+%.bin"


class Objects:
    """What cluster A should hold: {bucket: {key: bytes}}."""

    def __init__(self):
        self.b = {}

    def add(self, bucket, key, data):
        self.b.setdefault(bucket, {})[key] = data

    def drop(self, bucket, key):
        self.b.get(bucket, {}).pop(key, None)

    def count(self):
        return sum(len(v) for v in self.b.values())


def load_base(gw, objs, bucket):
    raw = gw.raw
    r = raw.request("PUT", obj_path(bucket))
    if r.status != 200:
        raise RuntimeError("create bucket %s: %r" % (bucket, r))
    for key, n, ctype, meta in BASE:
        d = body_for(key, n)
        r = put(raw, bucket, key, d, ctype, meta)
        if r.status != 200:
            raise RuntimeError("put %s (%d bytes): %r" % (key, n, r))
        objs.add(bucket, key, d)
    parts = [body_for(MP_KEY, 5 * MB, 1), body_for(MP_KEY, MB + 3, 2)]
    put_multipart(raw, bucket, MP_KEY, parts, "application/x-multipart", {"parts": "2"})
    objs.add(bucket, MP_KEY, b"".join(parts))


def read_all(gw, objs, what, ranged=True):
    """GETs every object of objs (and a range of the larger ones). Two test lines: objects
    stored as shards (above --inline-max) and objects stored inline (at most --inline-max)."""
    bad = {True: [], False: []}
    n = {True: 0, False: 0}
    raw = gw.client()
    for bucket, keys in sorted(objs.b.items()):
        for k, d in sorted(keys.items()):
            coded = len(d) > INLINE_MAX
            n[coded] += 1
            r = safe(raw, "GET", bucket, k)
            if r.status != 200 or r.body != d:
                bad[coded].append("%s/%s: HTTP %d %s, %d bytes (want %d)%s" % (
                    bucket, k[:60], r.status, r.reason if r.status == 0 else "", len(r.body), len(d),
                    " " + repr(r.body[:200]) if r.status not in (0, 200) else ""))
                continue
            if ranged and len(d) > 2 * MB:
                a, b = len(d) // 3 + 5, len(d) // 3 + MB + 77
                r = safe(raw, "GET", bucket, k, headers={"range": "bytes=%d-%d" % (a, b)})
                if r.status != 206 or r.body != d[a:b + 1]:
                    bad[coded].append("%s/%s range %d-%d: HTTP %d %s, %d bytes" % (
                        bucket, k[:60], a, b, r.status, r.reason if r.status == 0 else "", len(r.body)))
    ok1 = t.ok(n[True] > 0 and not bad[True], "%s: every object above --inline-max reads back byte-exact (%d%s)"
               % (what, n[True], ", full and ranged" if ranged else ""), *bad[True][:10])
    ok2 = t.ok(not bad[False], "%s: every object up to --inline-max reads back byte-exact (%d)" % (what, n[False]),
               *bad[False][:10])
    return ok1 and ok2


def safe(raw, method, bucket, key, **kw):
    """raw.request that turns a failed connection or a short body into a status-0 answer."""
    try:
        return raw.request(method, obj_path(bucket, key), **kw)
    except NETERR as e:
        return s3raw.Resp(0, "%s: %s" % (type(e).__name__, e), {}, b"")


def list_v2(raw, bucket, prefix="", delimiter=None):
    """Every page of ListObjectsV2: ([(key, size, etag, last-modified)], [common prefixes])."""
    contents, prefixes, token = [], [], None
    for _ in range(1000):
        q = [("list-type", "2"), ("max-keys", "50")]
        if prefix:
            q.append(("prefix", prefix))
        if delimiter:
            q.append(("delimiter", delimiter))
        if token:
            q.append(("continuation-token", token))
        r = raw.request("GET", obj_path(bucket), query=q)
        if r.status != 200:
            raise RuntimeError("list %s: %r" % (bucket, r))
        root = ET.fromstring(r.body)
        for c in root.findall("{*}Contents"):
            contents.append((c.findtext("{*}Key"), int(c.findtext("{*}Size")), c.findtext("{*}ETag"),
                             c.findtext("{*}LastModified")))
        prefixes += [p.findtext("{*}Prefix") for p in root.findall("{*}CommonPrefixes")]
        if root.findtext("{*}IsTruncated") != "true":
            return contents, prefixes
        token = root.findtext("{*}NextContinuationToken")
    raise RuntimeError("list %s: more than 1000 pages" % bucket)


def check_listing(gw, objs, what):
    bad = []
    for bucket, keys in sorted(objs.b.items()):
        got = {k: s for k, s, _, _ in list_v2(gw.raw, bucket)[0]}
        want = {k: len(d) for k, d in keys.items()}
        if got != want:
            extra = sorted(set(got) - set(want))
            missing = sorted(set(want) - set(got))
            wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])
            bad.append("%s: listed but not written: %s; written but not listed: %s; wrong size: %s"
                       % (bucket, [k[:50] for k in extra[:5]], [k[:50] for k in missing[:5]], [k[:50] for k in wrong[:5]]))
    return t.ok(not bad, "%s: the listings hold exactly the objects written (%d)" % (what, objs.count()), *bad)


# ============================================================ (1) node failures
def start_cluster(name, n=6):
    nodes = [Node(name, i) for i in range(n)]
    ok = [nd.start() for nd in nodes]
    t.ok(all(ok), "%s: six cairn-chunkd nodes start and answer" % name,
         *[line for nd, o in zip(nodes, ok) if not o for line in nd.tail(8)])
    gw = Gateway("%s-gateway" % name, os.path.join(TOP, name, "gw"), nodes)
    started = gw.start()
    t.ok(started, "%s: the gateway starts with --nodes (6 URLs) --ec 4+2" % name, *gw.tail())
    return nodes, gw, all(ok) and started


def test_failures(nodes, gw, objs):
    load_base(gw, objs, "nodes-base")
    read_all(gw, objs, "(1) healthy")
    st = nodes_state(gw)
    t.eq(st, {i: True for i in range(6)}, "(1) GET /_cairn/admin/nodes lists slots 0..5, all up")
    d, err = admin_cli(gw, "nodes")
    t.ok(isinstance(d, list) and len(d) == 6 and all(e.get("url") == nodes[e.get("slot", -1)].url
                                                   for e in d if isinstance(e, dict)),
         "(1) cairn-admin nodes --json lists the six node URLs by slot", err, repr(d)[:400])
    segs = segments_on(nodes)
    gaps = redundancy_gaps(nodes)
    t.ok(segs and not gaps, "(1) every segment (%d) has one shard on each of the 6 nodes, indexes 0..5" % len(segs),
         *gaps[:5])
    coded = sum(1 for k, d in objs.b["nodes-base"].items() if len(d) > INLINE_MAX) + 1  # multipart: 2 segments
    t.eq(len(segs), coded, "(1) one segment per object above --inline-max (two for the 2-part upload), none below")
    blobs = blobs_on(nodes)
    t.ok(len(blobs) == objs.count(), "(1) one manifest per object on the nodes (%d objects, %d manifest ids)"
         % (objs.count(), len(blobs)), repr(sorted((b, sorted(w)) for b, w in blobs.items())[:5]))

    # ---- the workload: 3 writers, 2 readers; nodes 1 and 4 are killed one after the other
    bucket = "nodes-work"
    r = gw.raw.request("PUT", obj_path(bucket))
    t.ok(r.status == 200, "(1) create bucket %s" % bucket, repr(r))
    lock = threading.Lock()
    stop = threading.Event()
    acked, results, reads, bad_gets = {}, [], [0, 0], []  # reads: [exact, clean failures]
    sizes = [1000, 70000, 300 * 1024 + 3, MB + 7, 2 * MB + 1]
    kills = {}

    def writer(w):
        raw = gw.client(60)
        for i in range(24):
            if stop.is_set():
                return
            key = "w%d/%03d \u00e9+%%.bin" % (w, i)
            d = body_for(key, sizes[(i + w) % len(sizes)])
            t0 = time.time()
            try:
                r = raw.request("PUT", obj_path(bucket, key), body=d)
                st = r.status
            except NETERR as e:
                st = "%s" % type(e).__name__
            with lock:
                results.append((key, d, st, t0, time.time()))
                if st == 200:
                    acked[key] = d

    def reader(w):
        raw = gw.client(60)
        rnd = random.Random(w)
        while not stop.is_set():
            with lock:
                keys = sorted(acked)
            if not keys:
                time.sleep(0.05)
                continue
            k = rnd.choice(keys)
            try:
                r = raw.request("GET", obj_path(bucket, k))
                if r.status == 200 and r.body != acked[k]:
                    bad_gets.append("%s: HTTP 200 with %d bytes that are not the object (%d bytes)" % (k, len(r.body), len(acked[k])))
                elif r.status == 200:
                    reads[0] += 1
                else:
                    reads[1] += 1
            except NETERR:
                reads[1] += 1

    ths = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(3)]
    ths += [threading.Thread(target=reader, args=(w,), daemon=True) for w in range(2)]
    for th in ths:
        th.start()
    wait_for(lambda: len(acked) >= 8 or not any(th.is_alive() for th in ths[:3]), 90, 0.02)
    kills[1] = time.time()  # before the kill: a PUT answered after this may have lost node 1
    nodes[1].kill9()
    n1 = len(acked)
    wait_for(lambda: len(acked) >= n1 + 8 or not any(th.is_alive() for th in ths[:3]), 90, 0.02)
    kills[4] = time.time()  # before the kill: only PUTs answered before it must have succeeded
    nodes[4].kill9()
    time.sleep(3)
    stop.set()
    for th in ths:
        th.join(120)
    stuck = sum(th.is_alive() for th in ths)
    t.ok(not stuck, "(1) the workload threads finish (every request answered)", "%d threads still waiting" % stuck)
    one_down = [(k, st) for k, _, st, t0, t1 in results if t1 < kills[4]]
    t.ok(len(acked) >= 8, "(1) workload: %d PUTs acknowledged (%d with node 1 dead), %d GETs exact, %d GETs failed cleanly"
         % (len(acked), sum(1 for k, _, st, t0, t1 in results if st == 200 and t0 > kills[1]), reads[0], reads[1]))
    t.ok(not bad_gets, "(1) no GET during the kills returned wrong bytes", *bad_gets[:10])
    failed1 = ["%s: %s" % (k, st) for k, st in one_down if st != 200]
    t.ok(not failed1, "(1) every PUT answered before the second kill succeeded (k+1 = 5 nodes were up)", *failed1[:10])
    for k, d in acked.items():
        objs.add(bucket, k, d)
    st = wait_nodes(gw, {1: False, 4: False})
    t.ok(st == {0: True, 1: False, 2: True, 3: True, 4: False, 5: True},
         "(1) the gateway reports nodes 1 and 4 down, the others up", repr(st))
    read_all(gw, objs, "(1) nodes 1 and 4 dead")
    refused = []
    for k, d, st, t0, t1 in results:
        if st == 200:
            continue
        r = gw.raw.request("HEAD", obj_path(bucket, k))
        if isinstance(st, int) and r.status != 404:
            refused.append("%s: PUT answered %s, now HEAD %d" % (k, st, r.status))
        elif r.status == 200:  # the answer was lost: the object must then be whole
            g = gw.raw.request("GET", obj_path(bucket, k))
            if g.body != d:
                refused.append("%s: PUT got %s, now GET %d with %d bytes" % (k, st, g.status, len(g.body)))
            else:
                objs.add(bucket, k, d)
    t.ok(not refused, "(1) PUTs that were refused stored nothing (%d refused or cut off)"
         % sum(1 for r in results if r[2] != 200), *refused[:10])
    check_listing(gw, objs, "(1) nodes 1 and 4 dead")

    # ---- k+1: with 4 of 6 nodes up a coded PUT cannot be made durable
    k = "needs-k-plus-1"
    d = body_for(k, MB)
    try:
        r = gw.raw.request("PUT", obj_path(bucket, k), body=d)
        st = r.status
    except NETERR as e:
        st, r = type(e).__name__, e
    t.ok(st == 503, "(1) a 1 MiB PUT with only k=4 nodes up is refused with 503 (needs k+1 durable shards): "
         "HTTP %s" % st, repr(r)[:300])
    if st == 200:
        objs.add(bucket, k, d)
    else:
        r = gw.raw.request("HEAD", obj_path(bucket, k))
        t.ok(r.status == 404, "(1) ... and stores nothing", repr(r))

    # ---- a small (inline) object still needs 2 durable manifest copies: with one node up it is refused
    others = [i for i in (0, 2, 3) if nodes[i].alive()]
    for i in others:
        nodes[i].kill9()
    wait_nodes(gw, {i: False for i in others})
    k = "needs-two-manifest-copies"
    try:
        r = gw.raw.request("PUT", obj_path(bucket, k), body=b"small")
        st = r.status
    except NETERR as e:
        st, r = type(e).__name__, e
    t.ok(st == 503, "(1) a small PUT with one node up is refused with 503 (its manifest needs 2 copies): HTTP %s"
         % st, repr(r)[:300])
    r = gw.raw.request("HEAD", obj_path(bucket, k))
    t.ok(r.status == 404, "(1) ... and stores nothing", repr(r))
    for i in others:
        t.ok(nodes[i].start(), "(1) node %d restarts" % i, *nodes[i].tail())
    st = wait_nodes(gw, {i: True for i in others})
    t.ok(st is not None and all(st.get(i) is True for i in others), "(1) the gateway sees them up again", repr(st))

    # ---- node 4 returns: PUTs work with one node down
    t.ok(nodes[4].start(), "(1) node 4 restarts on its port (%d attempts)" % nodes[4].attempts, *nodes[4].tail())
    st = wait_nodes(gw, {4: True})
    t.ok(st is not None and st.get(4) is True, "(1) the gateway sees node 4 up again", repr(st))
    bad = []
    for i, n in enumerate((MB + 11, 3 * MB + 1, 5000, 0)):
        k = "one-down/%d" % i
        d = body_for(k, n)
        r = gw.raw.request("PUT", obj_path(bucket, k), body=d)
        if r.status == 200:
            objs.add(bucket, k, d)
        else:
            bad.append("%s (%d bytes): %r" % (k, n, r))
    t.ok(not bad, "(1) PUTs succeed with node 1 still dead", *bad)

    # ---- node 1 returns: heal. The gateway restarts first, so the shards its PUTs could not
    # write are known only from the metadata (not from its in-memory retry queue), and only
    # heal walks rebuild them: the one started when node 1 returns and the one asked for.
    # Both count in cairn_shards_healed_total.
    lacking1 = sum(1 for seg, where in segments_on(nodes).items() if 1 not in where and len(where) == K + M - 1)
    t.ok(lacking1 >= 1, "(1) with node 1 dead, %d segments were written without a shard on it" % lacking1)
    rc = gw.stop()
    t.ok(rc in (0, -signal.SIGTERM) and gw.start(), "(1) the gateway restarts while node 1 is dead (status %s)" % rc,
         *gw.tail())
    m0 = metric(gw, "cairn_shards_healed_total")
    t.ok(nodes[1].start(), "(1) node 1 restarts on its port (%d attempts)" % nodes[1].attempts, *nodes[1].tail())
    st = wait_nodes(gw, {i: True for i in range(6)})
    t.eq(st, {i: True for i in range(6)}, "(1) the gateway sees all six nodes up")
    d, err, calls = gc_until_clean(gw)
    t.ok(d is not None and d.get("pending") == 0 and isinstance(d.get("reclaimed"), int),
         "(1) cairn-admin gc --json: nothing pending (%d calls)" % calls, err, repr(d))
    h, err = admin_cli(gw, "heal")
    m1 = metric(gw, "cairn_shards_healed_total")
    t.ok(stats_ok(h), "(1) cairn-admin heal --json answers with every count", err, repr(h))
    if stats_ok(h):
        walked = max(h["shards_healed"], (m1 - m0) if m0 is not None and m1 is not None else 0)
        t.ok(h["shards_failed"] == 0 and walked >= lacking1,
             "(1) heal: the %d missing shards were healed, none failed (%s)" % (lacking1, json.dumps(h)),
             "cairn_shards_healed_total (heal walks, including the one started when node 1 returned) went from %s to %s"
             % (m0, m1))
        if h["shards_healed"] != h["shards_missing"] + h["shards_corrupt"]:
            t.diag("note: shards_healed != shards_missing + shards_corrupt")
        want_segs = sum(1 + (1 if k == MP_KEY else 0) for bk in objs.b.values() for k, d in bk.items()
                        if len(d) > INLINE_MAX)
        t.ok(h["objects"] == objs.count() and h["segments"] == want_segs and h["manifests"] >= objs.count(),
             "(1) heal walked every object (%d), segment (%d) and manifest" % (objs.count(), want_segs), json.dumps(h))
    gaps = redundancy_gaps(nodes)
    t.ok(not gaps, "(1) after heal every segment has its 6 shards on the 6 nodes", *gaps[:5])
    h2, err = admin_cli(gw, "heal")
    t.ok(stats_ok(h2) and h2["shards_missing"] == 0 and h2["shards_corrupt"] == 0 and h2["shards_healed"] == 0
         and h2["shards_failed"] == 0 and h2["manifests_healed"] == 0,
         "(1) a second heal finds nothing to do", err, json.dumps(h2))

    # ---- two OTHER nodes die: only the healed shards are left to read from
    nodes[0].kill9()
    nodes[5].kill9()
    read_all(gw, objs, "(1) healed, then nodes 0 and 5 dead")
    for i in (0, 5):
        t.ok(nodes[i].start(), "(1) node %d restarts (%d attempts)" % (i, nodes[i].attempts), *nodes[i].tail())
    st = wait_nodes(gw, {i: True for i in range(6)})
    t.eq(st, {i: True for i in range(6)}, "(1) all six nodes up again")

    # ---- a hung node (SIGSTOP): timed out, read and written around
    nodes[2].pause()
    try:
        base = Objects()
        base.b["nodes-base"] = objs.b["nodes-base"]
        t0 = time.time()
        read_all(gw, base, "(1) node 2 hung (SIGSTOP)", ranged=False)
        t.diag("reading %d objects with node 2 hung took %.1fs" % (base.count(), time.time() - t0))
        k = "hung/put"
        d = body_for(k, 2 * MB + 9)
        t0 = time.time()
        try:
            r = gw.client(180).request("PUT", obj_path(bucket, k), body=d)
            ok, what = r.status == 200, repr(r)
        except NETERR as e:
            ok, what = False, "%s: %s" % (type(e).__name__, e)
        t.ok(ok, "(1) PUT with node 2 hung succeeds (5 shards durable), after %.1fs" % (time.time() - t0), what)
        if ok:
            objs.add(bucket, k, d)
    finally:
        nodes[2].resume()
    st = wait_nodes(gw, {i: True for i in range(6)})
    t.eq(st, {i: True for i in range(6)}, "(1) node 2 is seen up again after SIGCONT")
    r = gw.raw.request("GET", obj_path(bucket, "hung/put"))
    t.ok(r.status == 200 and r.body == objs.b[bucket].get("hung/put"), "(1) the PUT made while node 2 hung reads back",
         "HTTP %d, %d bytes" % (r.status, len(r.body)))


# ============================================================= (2) corruption
def test_corruption(nodes, gw, objs):
    bucket = "nodes-scrub"
    gw.raw.request("PUT", obj_path(bucket))
    segs = {}
    for k, n in (("x", 3 * MB + 5), ("y", MB + 3)):
        d = body_for(k, n)
        r, new = new_segments(nodes, lambda: gw.raw.request("PUT", obj_path(bucket, k), body=d))
        if not t.ok(r.status == 200 and len(new) == 1, "(2) PUT %s (%d bytes) makes one new segment" % (k, n),
                    repr(r), repr(new)):
            return
        objs.add(bucket, k, d)
        segs[k] = new[0]
    orig, where = {}, {}
    # parity shard 5 of x (never read by a healthy GET) and data shard 0 of y, inside block 0
    for name, (k, idx, off) in {"x5": ("x", 5, 64 + 1000), "y0": ("y", 0, 64 + 5000)}.items():
        nd, p = find_shard(nodes, segs[k], idx)
        if not t.ok(p is not None, "(2) shard %s.%d is on a node" % (segs[k], idx)):
            return
        orig[name], where[name] = read_file(p), (nd, p)
        flip(p, off)
    t.ok(read_file(where["x5"][1]) != orig["x5"] and read_file(where["y0"][1]) != orig["y0"],
         "(2) flipped 16 bytes in block 0 of shard x.5 (node %d) and y.0 (node %d)" % (where["x5"][0].i, where["y0"][0].i))
    bad = []
    for k in ("x", "y"):
        r = gw.raw.request("GET", obj_path(bucket, k))
        if r.status != 200 or r.body != objs.b[bucket][k]:
            bad.append("%s: HTTP %d, %d bytes" % (k, r.status, len(r.body)))
    r = gw.raw.request("GET", obj_path(bucket, "y"), headers={"range": "bytes=0-9999"})
    if r.status != 206 or r.body != objs.b[bucket]["y"][:10000]:
        bad.append("y bytes=0-9999: HTTP %d, %d bytes" % (r.status, len(r.body)))
    t.ok(not bad, "(2) GETs (whole and the damaged range) are exact", *bad)
    # The GET that met the bad block of y.0 queues a heal of it; x.5 is never read by a GET.
    t.ok(wait_for(lambda: read_file(where["y0"][1]) == orig["y0"], 20),
         "(2) the GET that met the flipped block heals y.0 by itself (in the background)")

    s, err = admin_cli(gw, "scrub")
    t.ok(stats_ok(s), "(2) cairn-admin scrub --json answers with every count", err, repr(s))
    if stats_ok(s):
        t.ok(s["shards_corrupt"] >= 1 and s["shards_healed"] >= 1 and s["shards_failed"] == 0 and s["bytes_verified"] > 0,
             "(2) scrub finds the corrupt shard x.5 and heals it (%s)" % json.dumps(s))
    restored = wait_for(lambda: all(read_file(where[n][1]) == orig[n] for n in orig), 20)
    t.ok(restored, "(2) both damaged shard files are back to their original bytes",
         *["%s: %s" % (n, "restored" if read_file(where[n][1]) == orig[n] else "still different") for n in orig])
    s2, err = admin_cli(gw, "scrub")
    t.ok(stats_ok(s2) and s2["shards_corrupt"] == 0 and s2["shards_missing"] == 0 and s2["shards_failed"] == 0,
         "(2) a second scrub finds nothing", err, json.dumps(s2))

    # A scrub and a GET-triggered heal of the same shard at the same time: the shard is healed
    # once, and the scrub must not count it as a shard it failed to heal. The bucket sorts
    # first, so the scrub reaches the shard while the GET's heal is still running.
    racing, files, rb = [], [], "a-race"
    gw.raw.request("PUT", obj_path(rb))
    for i in range(6):
        k = "race/%d" % i
        d = body_for(k, MB + 3)
        r, new = new_segments(nodes, lambda: gw.raw.request("PUT", obj_path(rb, k), body=d))
        if r.status != 200 or len(new) != 1:
            racing.append("PUT %s: %r, new segments %r" % (k, r, new))
            continue
        objs.add(rb, k, d)
        nd, p = find_shard(nodes, new[0], 0)
        o = read_file(p)
        flip(p, 64 + 5000)
        files.append((p, o))
        got = []
        th = threading.Thread(target=lambda: got.append(safe(gw.client(), "GET", rb, k)), daemon=True)
        th.start()
        sc, err = admin_cli(gw, "scrub")
        th.join(120)
        if not got or got[0].status != 200 or got[0].body != d:
            racing.append("%s: the GET racing the scrub: %r" % (k, got[0] if got else "no answer"))
        if not stats_ok(sc) or sc["shards_failed"]:
            racing.append("%s: scrub %s %s" % (k, json.dumps(sc), err))
    t.ok(not racing, "(2) scrubs racing GET-triggered heals of the same shard: GETs exact, nothing counted as failed"
         " (6 tries)", *racing)
    t.ok(wait_for(lambda: all(read_file(p) == o for p, o in files), 20), "(2) ... and every one of those shards is healed")

    # heal --deep checks every block too
    nd, p = find_shard(nodes, segs["x"], 4)
    if t.ok(p is not None, "(2) shard x.4 is on a node"):
        o = read_file(p)
        flip(p, 64 + (256 * 1024 + 4) + 100)  # block of stripe 1
        h, err = admin_cli(gw, "heal", "--deep")
        t.ok(stats_ok(h) and h["shards_corrupt"] >= 1 and h["shards_failed"] == 0 and h["bytes_verified"] > 0,
             "(2) heal --deep finds a flipped block in stripe 1 of x.4", err, json.dumps(h))
        t.ok(wait_for(lambda: read_file(p) == o, 20), "(2) ... and puts the file back as it was")

    # the background scrub, at 64 MiB/s
    rc = gw.stop()
    t.ok(rc in (0, -signal.SIGTERM), "(2) gateway stops for a restart with --scrub-rate (status %s)" % rc)
    nd, p = find_shard(nodes, segs["y"], 5)
    if not t.ok(p is not None, "(2) shard y.5 is on a node"):
        return
    o = read_file(p)
    flip(p, 64 + 300)
    if not t.ok(gw.start("--scrub-interval", "2", scrub=64 * MB),
                "(2) gateway restarts with --scrub-rate %d --scrub-interval 2" % (64 * MB), *gw.tail()):
        return
    last = [None]

    def scrubbed():
        last[0], _ = admin_http(gw, "GET", "/_cairn/admin/scrub", timeout=30)
        return stats_ok(last[0]) and last[0]["shards_corrupt"] >= 1 and read_file(p) == o
    t0 = time.time()
    ok = wait_for(scrubbed, 120, 1)
    t.ok(ok, "(2) the background scrub finds the flipped block in y.5 and restores the file (%.0fs)" % (time.time() - t0),
         "GET /_cairn/admin/scrub: %s" % json.dumps(last[0]), "file restored: %s" % (read_file(p) == o))
    rc = gw.stop()
    t.ok(rc in (0, -signal.SIGTERM), "(2) gateway with a running scrub stops on SIGTERM (status %s)" % rc, *gw.tail())
    t.ok(gw.start(), "(2) gateway restarts with --scrub-rate 0", *gw.tail())


# ============================================================= (3) wiped node
def test_wiped_node(nodes, gw, objs):
    h, err = admin_cli(gw, "heal")
    t.ok(stats_ok(h) and h["shards_failed"] == 0, "(3) heal before the wipe: nothing failed", err, json.dumps(h))
    w = nodes[3]
    m0 = metric(gw, "cairn_shards_healed_total")
    shards0, blobs0, _, _ = node_scan(w)
    slot0 = read_file(os.path.join(w.dir, "slot"))
    id0 = read_file(os.path.join(w.dir, "node-id"))
    t.ok(len(shards0) > 0 and len(blobs0) > 0 and slot0 is not None and id0 is not None,
         "(3) node 3 holds %d shards, %d manifests, a slot and a node-id file" % (len(shards0), len(blobs0)))
    check_stop(w, "(3)")
    shutil.rmtree(w.dir)
    os.makedirs(w.dir)
    t.ok(w.start(), "(3) node 3 restarts on its port with an empty directory", *w.tail())
    t0 = time.time()
    claimed = wait_for(lambda: read_file(os.path.join(w.dir, "slot")) == slot0, 30)
    t.ok(claimed, "(3) the gateway claims the wiped node for its slot again (%.1fs)" % (time.time() - t0),
         "DIR/slot: %r, was %r" % (read_file(os.path.join(w.dir, "slot")), slot0), *gw.grep("slot 3|127.0.0.1:%d" % w.port, 5))
    t.ok(read_file(os.path.join(w.dir, "node-id")) not in (None, id0), "(3) the wiped node has a new node-id")
    st = wait_nodes(gw, {3: True})
    t.ok(st is not None and st.get(3) is True, "(3) the gateway sees node 3 up", repr(st))
    # No read before the heal: a GET that meets a missing shard heals it by itself.
    before = len(node_scan(w)[0])
    h, err = admin_cli(gw, "heal")
    m1 = metric(gw, "cairn_shards_healed_total")
    healed = max(h["shards_healed"] if stats_ok(h) else 0, (m1 - m0) if m0 is not None and m1 is not None else 0)
    t.ok(stats_ok(h) and h["shards_failed"] == 0 and healed >= len(shards0),
         "(3) heal after the wipe: the node's %d shards were healed, none failed (%s)" % (len(shards0), json.dumps(h)),
         "cairn_shards_healed_total went from %s to %s (the background walk counts there)" % (m0, m1),
         "node 3 held %d of its %d shards when the heal started" % (before, len(shards0)), err)
    shards1, blobs1, partial, _ = node_scan(w)
    t.ok(set(shards1) == set(shards0), "(3) node 3 holds the same %d shard files as before the wipe (now %d)"
         % (len(shards0), len(shards1)), "missing: %s" % sorted(set(shards0) - set(shards1))[:5],
         "new: %s" % sorted(set(shards1) - set(shards0))[:5])
    t.ok(set(blobs1) == set(blobs0), "(3) node 3 holds the same %d manifests as before the wipe (now %d)"
         % (len(blobs0), len(blobs1)))
    t.ok(not partial, "(3) no partial files on node 3", *partial[:5])
    for i in (1, 5):
        nodes[i].kill9()
    read_all(gw, objs, "(3) healed node 3, nodes 1 and 5 dead", ranged=False)
    for i in (1, 5):
        t.ok(nodes[i].start(), "(3) node %d restarts" % i, *nodes[i].tail())
    st = wait_nodes(gw, {i: True for i in range(6)})
    t.eq(st, {i: True for i in range(6)}, "(3) all six nodes up again")


# ======================================================== (4) rebuild metadata
def snapshot(gw):
    """Everything a client can see: buckets, listings, and per object the bytes and headers."""
    raw = gw.client()
    r = raw.request("GET", "/")
    if r.status != 200:
        raise RuntimeError("ListBuckets: %r" % r)
    buckets = sorted(b.findtext("{*}Name") for b in ET.fromstring(r.body).findall(".//{*}Bucket"))
    snap = {"buckets": buckets, "flat": {}, "delim": {}, "objects": {}, "lastmod": {}}
    for b in buckets:
        flat, _ = list_v2(raw, b)
        snap["flat"][b] = [(k, s, e) for k, s, e, _ in flat]
        snap["lastmod"][b] = {k: lm for k, _, _, lm in flat}
        snap["delim"][b] = (list_v2(raw, b, delimiter="/"), list_v2(raw, b, prefix="dir/", delimiter="/"))
        for k, s, e, _ in flat:
            h = safe(raw, "HEAD", b, k)
            g = safe(raw, "GET", b, k)
            meta = {n: v for n, v in h.headers.items() if n.startswith("x-amz-meta-")}
            snap["objects"][(b, k)] = {"status": (h.status, g.status), "size": h.headers.get("content-length"),
                                       "etag": h.headers.get("etag"), "type": h.headers.get("content-type"),
                                       "meta": meta, "sha": hashlib.sha256(g.body).hexdigest(), "len": len(g.body)}
            snap["lastmod"][b][k] = (snap["lastmod"][b][k], h.headers.get("last-modified"))
    return snap


def strip_lastmod(delim):
    (c1, p1), (c2, p2) = delim
    return ([x[:3] for x in c1], p1), ([x[:3] for x in c2], p2)


def test_rebuild(nodes, gw, objs):
    bucket = "nodes-meta"
    raw = gw.raw
    raw.request("PUT", obj_path(bucket))
    steps = [("dir/keep.txt", 10, "text/plain", {"v": "1"}), ("del-coded", MB, None, {}), ("del-inline", 10, None, {}),
             ("coded-to-inline", MB, "application/x-old", {"v": "old"}),
             ("inline-to-coded", 10, "application/x-old", {"v": "old"}),
             ("coded-to-coded", 300000, "application/x-old", {"v": "old"})]
    for k, n, c, m in steps:
        d = body_for(k, n)
        r = put(raw, bucket, k, d, c, m)
        t.ok(r.status == 200, "(4) PUT %s" % k, repr(r))
        objs.add(bucket, k, d)
    for k, n in (("coded-to-inline", 20), ("inline-to-coded", 200000), ("coded-to-coded", 2 * MB + 1)):
        d = body_for(k, n, 1)
        r = put(raw, bucket, k, d, "application/x-new", {"v": "new", "extra": "e"})
        t.ok(r.status == 200, "(4) overwrite %s with %d bytes" % (k, n), repr(r))
        objs.add(bucket, k, d)
    for k in ("del-coded", "del-inline"):
        r = raw.request("DELETE", obj_path(bucket, k))
        t.ok(r.status == 204, "(4) DELETE %s" % k, repr(r))
        objs.drop(bucket, k)
    # Settings live in a snapshot on the nodes, not in object manifests: an empty bucket and a
    # bucket's CORS configuration must come back too.
    r = raw.request("PUT", obj_path("nodes-empty"))
    t.ok(r.status == 200, "(4) CreateBucket nodes-empty (stays empty)", repr(r))
    cors = ("<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example</AllowedOrigin>"
            "<AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").encode()
    r = raw.request("PUT", obj_path(bucket), [("cors", None)], body=cors)
    t.ok(r.status == 200, "(4) PutBucketCors on %s" % bucket, repr(r))
    cors_before = raw.request("GET", obj_path(bucket), [("cors", None)])
    d, err, calls = gc_until_clean(gw)
    t.ok(d is not None and d.get("pending") == 0, "(4) gc: nothing pending before the rebuild", err, repr(d))
    before = snapshot(gw)
    wrong = []
    for (b, k), o in before["objects"].items():
        want = objs.b.get(b, {}).get(k)
        if want is None or o["sha"] != hashlib.sha256(want).hexdigest():
            wrong.append("%s/%s" % (b, k[:60]))
    t.ok(not wrong and len(before["objects"]) == objs.count(),
         "(4) before: %d objects in %d buckets, every one as written" % (len(before["objects"]), len(before["buckets"])),
         *wrong[:5])

    rc = gw.stop()
    t.ok(rc in (0, -signal.SIGTERM), "(4) gateway stops (status %s)" % rc, *gw.tail())
    shutil.rmtree(os.path.join(gw.data, "meta"))
    t.ok(not os.path.exists(os.path.join(gw.data, "meta")), "(4) DIR/meta deleted")
    t0 = time.time()
    if not t.ok(gw.start("--rebuild-metadata", timeout=300), "(4) gateway starts with --rebuild-metadata", *gw.tail()):
        return
    t.diag("rebuild and start took %.1fs" % (time.time() - t0))
    after = snapshot(gw)
    t.eq(after["buckets"], before["buckets"], "(4) the same buckets (the empty one included)")
    t.ok("nodes-empty" in after["buckets"], "(4) the empty bucket is back", repr(after["buckets"]))
    cors_after = gw.raw.request("GET", obj_path(bucket), [("cors", None)])
    t.ok(cors_after.status == 200 and cors_after.body == cors_before.body,
         "(4) GetBucketCors answers the same after the rebuild", repr(cors_before), repr(cors_after))
    t.ok(after["flat"] == before["flat"], "(4) ListObjectsV2 lists the same keys, sizes and ETags",
         *["%s: before %d entries, after %d; first difference: %r / %r" % (
             b, len(before["flat"][b]), len(after["flat"].get(b, [])),
             next((x for x in before["flat"][b] if x not in after["flat"].get(b, [])), None),
             next((x for x in after["flat"].get(b, []) if x not in before["flat"][b]), None))
           for b in before["flat"] if after["flat"].get(b) != before["flat"][b]][:5])
    t.ok({b: strip_lastmod(v) for b, v in after["delim"].items()} == {b: strip_lastmod(v) for b, v in before["delim"].items()},
         "(4) ListObjectsV2 with delimiter / (top level and under dir/) lists the same",
         *["%s: before %r, after %r" % (b, strip_lastmod(before["delim"][b])[0][1], strip_lastmod(after["delim"].get(b, (([], []), ([], []))))[0][1])
           for b in before["delim"] if strip_lastmod(after["delim"].get(b, (([], []), ([], [])))) != strip_lastmod(before["delim"][b])][:5])
    diffs = []
    for bk, o in sorted(before["objects"].items()):
        a = after["objects"].get(bk)
        if a is None:
            diffs.append("%s/%s: gone" % (bk[0], bk[1][:60]))
            continue
        for f in ("status", "size", "sha", "etag", "type", "meta"):
            if a[f] != o[f]:
                diffs.append("%s/%s: %s was %r, now %r" % (bk[0], bk[1][:60], f, o[f], a[f]))
    t.ok(not diffs and len(after["objects"]) == len(before["objects"]),
         "(4) every object reads back with the same bytes, size, ETag, Content-Type and x-amz-meta-* (%d objects)"
         % len(before["objects"]), *diffs[:12])
    lm = ["%s/%s: %r -> %r" % (b, k[:50], v, after["lastmod"].get(b, {}).get(k)) for b, kv in before["lastmod"].items()
          for k, v in kv.items() if after["lastmod"].get(b, {}).get(k) != v]
    t.ok(not lm, "(4) LastModified (listing and HEAD) is the same after the rebuild", *lm[:6])
    for k in ("del-coded", "del-inline"):
        r = gw.raw.request("GET", obj_path(bucket, k))
        t.ok(r.status == 404, "(4) deleted %s stays deleted after the rebuild" % k, repr(r))
    k = "after-rebuild"
    d = body_for(k, MB + 1)
    r = gw.raw.request("PUT", obj_path(bucket, k), body=d)
    t.ok(r.status == 200, "(4) PUT after the rebuild", repr(r))
    if r.status == 200:
        objs.add(bucket, k, d)
    rc = gw.stop()
    t.ok(rc in (0, -signal.SIGTERM), "(4) gateway stops (status %s)" % rc, *gw.tail())
    if t.ok(gw.start(), "(4) gateway restarts without --rebuild-metadata", *gw.tail()):
        read_all(gw, objs, "(4) after the rebuild and a restart", ranged=False)
        check_listing(gw, objs, "(4) after the rebuild and a restart")


# ============================================================== (5) node auth
def test_node_auth(nodes, gw):
    nd = nodes[0]
    shards, blobs, _, _ = node_scan(nd)
    if not t.ok(shards and blobs, "(5) node 0 holds shards and manifests to aim at"):
        return
    (seg, idx), spath = sorted(shards.items())[0]
    (seg2, idx2), _ = sorted(shards.items())[-1]
    bid, bpath = sorted(blobs.items())[0]
    sp = "/v1/shard/%s.%d" % (seg, idx)
    sp2 = "/v1/shard/%s.%d" % (seg2, idx2)
    newp = "/v1/shard/%s.%d" % ("0123456789abcdef0123456789abcdef", 0)
    bp = "/v1/blob/%s" % bid
    newbp = "/v1/blob/%s" % "fedcba9876543210fedcba9876543210"

    def tree():
        out = {}
        for dp, _, fns in os.walk(nd.dir):
            for fn in fns:
                p = os.path.join(dp, fn)
                out[os.path.relpath(p, nd.dir)] = hashlib.sha256(read_file(p) or b"").hexdigest()
        return out

    r = node_req(nd, "GET", "/v1/health")
    t.ok(r.status == 200, "(5) a signed GET /v1/health is answered 200", repr(r))
    r = node_req(nd, "GET", sp)
    control = t.ok(r.status in (200, 206) and r.body[:8] == b"CAIRNSH1",
                   "(5) a signed GET of a shard is answered (the signing here is right)", repr(r)[:300])
    r = node_req(nd, "HEAD", sp)
    t.ok(r.status == 200, "(5) a signed HEAD of a shard is answered 200", repr(r)[:300])
    snap = tree()
    garbage = os.urandom(4096)
    now = int(time.time())
    hdr64 = read_file(spath)[:64]
    cases = [
        ("GET shard, no Authorization", "GET", sp, b"", {"auth": False}),
        ("GET shard, signed with another secret", "GET", sp, b"", {"secret": "not-the-secret"}),
        ("GET shard, signature of another shard's path", "GET", sp, b"", {"sign_path": sp2}),
        ("GET shard, another scheme name", "GET", sp, b"", {"scheme": "AWS4-HMAC-SHA256"}),
        ("GET /v1/shards, another secret", "GET", "/v1/shards", b"", {"secret": "wrong"}),
        ("GET /v1/blobs, no Authorization", "GET", "/v1/blobs", b"", {"auth": False}),
        ("GET /v1/verify of a shard, another secret", "GET", "/v1/verify/%s.%d" % (seg, idx), b"", {"secret": "wrong"}),
        ("PUT into an existing shard, no Authorization", "PUT", sp + "?off=64", garbage, {"auth": False}),
        ("PUT into an existing shard, another secret", "PUT", sp + "?off=64", garbage, {"secret": "x" + SECRET}),
        ("PUT into an existing shard as a heal, signature without the query", "PUT", sp + "?off=64&heal=1", garbage,
         {"sign_path": sp}),
        ("PUT into an existing shard, valid HMAC, body not matching its hash", "PUT", sp + "?off=64", garbage,
         {"body_hash": hashlib.sha256(garbage[:100]).hexdigest()}),
        ("POST commit of an existing shard, another secret", "POST", sp + "?commit", hdr64, {"secret": "wrong"}),
        ("PUT a new shard, no Authorization", "PUT", newp + "?off=64", garbage, {"auth": False}),
        ("PUT a new shard, valid HMAC, body not matching its hash", "PUT", newp + "?off=64", garbage,
         {"body_hash": hashlib.sha256(b"something else").hexdigest()}),
        ("POST commit of a new shard, valid HMAC, body not matching its hash", "POST", newp + "?commit", hdr64,
         {"body_hash": hashlib.sha256(hdr64[:32]).hexdigest()}),
        ("DELETE shard, another secret", "DELETE", sp, b"", {"secret": SECRET[:-1]}),
        ("DELETE shard, the signature of a GET", "DELETE", sp, b"", {"sign_method": "GET"}),
        ("DELETE shard, signature of another shard's path", "DELETE", sp, b"", {"sign_path": sp2}),
        ("DELETE shard, valid HMAC, date one hour old", "DELETE", sp, b"", {"date": now - 3600}),
        ("DELETE shard, valid HMAC, date one day ahead", "DELETE", sp, b"", {"date": now + 86400}),
        ("DELETE shard, valid HMAC, date 0", "DELETE", sp, b"", {"date": 0}),
        ("GET blob, another secret", "GET", bp, b"", {"secret": "wrong"}),
        ("PUT over an existing blob, no Authorization", "PUT", bp, garbage, {"auth": False}),
        ("PUT over an existing blob, valid HMAC, body not matching its hash", "PUT", bp, garbage,
         {"body_hash": hashlib.sha256(b"").hexdigest()}),
        ("PUT a new blob, another secret", "PUT", newbp, garbage, {"secret": "wrong"}),
        ("DELETE blob, another secret", "DELETE", bp, b"", {"secret": "wrong"}),
        ("DELETE blob, valid HMAC, date one hour old", "DELETE", bp, b"", {"date": now - 3600}),
        ("POST /v1/claim for another slot, another secret", "POST", "/v1/claim?slot=5&cluster=00112233aabbccdd", b"",
         {"secret": "wrong"}),
        ("POST /v1/recover, no Authorization", "POST", "/v1/recover", b"", {"auth": False}),
    ]
    for what, method, path, body, kw in cases:
        try:
            r = node_req(nd, method, path, body, **kw)
            ok = r.status == 403 and b"CAIRNSH1" not in r.body
            why = repr(r)[:300]
        except NETERR as e:
            ok, why = False, "%s: %s" % (type(e).__name__, e)
        t.ok(ok, "(5) %s: 403" % what, why)
    after = tree()
    changed = sorted(p for p in set(snap) | set(after) if snap.get(p) != after.get(p))
    t.ok(not changed, "(5) node 0's directory is unchanged by the refused requests", *changed[:10])
    t.ok(read_file(spath) is not None and read_file(bpath) is not None, "(5) the shard and blob aimed at are still there")
    if not control:
        t.diag("the signed control request failed: the 403s above may not prove anything")


def test_miswired(nodes, gw, objs):
    """--nodes with slots 0 and 1 swapped: both nodes hold another slot's claim, so the gateway
    must refuse them (treat them as down, never write to them); data still reads back."""
    rc = gw.stop()
    t.ok(rc in (0, -signal.SIGTERM), "(3b) gateway stops (status %s)" % rc, *gw.tail())
    slots = [read_file(os.path.join(n.dir, "slot")) for n in nodes]
    good = list(gw.nodes)
    gw.nodes = [good[1], good[0]] + good[2:]
    try:
        if not t.ok(gw.start(), "(3b) gateway starts with the URLs of slots 0 and 1 swapped", *gw.tail()):
            return
        st = wait_nodes(gw, {0: False, 1: False, 2: True, 3: True, 4: True, 5: True}, 20)
        t.eq(st, {0: False, 1: False, 2: True, 3: True, 4: True, 5: True},
             "(3b) the two nodes that hold another slot are refused (reported down)")
        coded = Objects()
        coded.b["nodes-base"] = {k: d for k, d in objs.b.get("nodes-base", {}).items() if len(d) > INLINE_MAX}
        read_all(gw, coded, "(3b) slots 0 and 1 swapped", ranged=False)
        k = "miswired/put"
        r = safe(gw.raw, "PUT", "nodes-base", k, body=body_for(k, MB))
        t.ok(r.status != 200, "(3b) a coded PUT is refused (4 usable nodes): HTTP %s %s" % (r.status, r.reason))
        if r.status == 200:
            objs.add("nodes-base", k, body_for(k, MB))
        t.eq([read_file(os.path.join(n.dir, "slot")) for n in nodes], slots, "(3b) no node's claim changed")
        rc = gw.stop()
        t.ok(rc in (0, -signal.SIGTERM), "(3b) gateway stops (status %s)" % rc, *gw.tail())
    finally:
        gw.nodes = good
        gw.stop()
    if t.ok(gw.start(), "(3b) gateway restarts with the nodes in their order", *gw.tail()):
        st = wait_nodes(gw, {i: True for i in range(6)})
        t.eq(st, {i: True for i in range(6)}, "(3b) all six nodes up again")
        read_all(gw, objs, "(3b) nodes in order again", ranged=False)


# ======================================================= (6) gateway crashes
def test_gateway_crash():
    nodes, gw, ok = start_cluster("crash")
    procs = nodes + [gw]
    try:
        if ok:
            crash_body(nodes, gw)
    finally:
        cluster_stop([gw] + nodes, "(6) end")
    return procs


def expected_counts(gw, bucket):
    flat, _ = list_v2(gw.raw, bucket)
    return flat, sum(1 for _, s, _, _ in flat if s > INLINE_MAX)


def crash_body(nodes, gw):
    bucket = "crash"
    raw = gw.raw
    r = raw.request("PUT", obj_path(bucket))
    t.ok(r.status == 200, "(6) create bucket", repr(r))
    known = {}
    for k, n in (("i/100", 100), ("i/1000", 1000), ("i/max", INLINE_MAX), ("c/1m", MB), ("c/3m", 3 * MB + 3)):
        d = body_for(k, n)
        r = raw.request("PUT", obj_path(bucket, k), body=d)
        t.ok(r.status == 200, "(6) PUT %s" % k, repr(r))
        known[k] = hashlib.sha256(d).hexdigest()
    state, lock, stop, acked = {}, threading.Lock(), threading.Event(), [0]

    def worker(w):
        c = gw.client(60)
        rnd = random.Random(w)
        for i in range(12):
            if stop.is_set():
                return
            k = "p/w%d-%02d \u00e9+%%" % (w, i)
            d = body_for(k, rnd.choice((2 * MB + 1, 4 * MB + 3, 6 * MB + 7)))
            with lock:
                state[k] = ["inflight", hashlib.sha256(d).hexdigest(), len(d)]
            try:
                r = c.request("PUT", obj_path(bucket, k), body=d)
                with lock:
                    state[k][0] = "acked" if r.status == 200 else "failed:%d" % r.status
                    acked[0] += r.status == 200
            except NETERR:
                return

    ths = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(4)]
    for th in ths:
        th.start()
    wait_for(lambda: acked[0] >= 10 or not any(th.is_alive() for th in ths), 120, 0.01)
    gw.kill9()
    stop.set()
    for th in ths:
        th.join(60)
    inflight = [k for k, v in state.items() if v[0] == "inflight"]
    t.ok(acked[0] >= 1 and inflight, "(6) kill -9 of the gateway: %d PUTs acknowledged, %d in flight" % (acked[0], len(inflight)))
    failed = ["%s %s" % (k, v[0]) for k, v in state.items() if v[0].startswith("failed")]
    t.ok(not failed, "(6) no PUT failed before the crash", *failed[:5])
    if not t.ok(gw.start(), "(6) gateway restarts after kill -9", *gw.tail()):
        return
    bad, half = [], []
    for k, (st, h, n) in sorted(state.items()):
        r = safe(gw.raw, "GET", bucket, k)
        got = hashlib.sha256(r.body).hexdigest() if r.status == 200 else None
        if st == "acked" and got != h:
            bad.append("%s: acknowledged, now HTTP %d %s, %d bytes" % (k, r.status, r.reason, len(r.body)))
        elif st != "acked" and not (r.status == 404 or got == h):
            half.append("%s: in flight, now HTTP %d with %d bytes (want 404 or %d)" % (k, r.status, len(r.body), n))
        if got == h:
            known[k] = h
    t.ok(not bad, "(6) every acknowledged PUT reads back exact", *bad[:10])
    t.ok(not half, "(6) every PUT in flight is all there or not there", *half[:10])
    flat, ncoded = expected_counts(gw, bucket)
    ghosts = []
    for k, s, _, _ in flat:
        r = safe(gw.raw, "GET", bucket, k)
        if r.status != 200 or k not in known or hashlib.sha256(r.body).hexdigest() != known[k] or len(r.body) != s:
            ghosts.append("%s: listed (%d bytes), GET %d %s with %d bytes" % (k, s, r.status, r.reason, len(r.body)))
    t.ok(not ghosts and len(flat) == len(known), "(6) every listed object (%d) reads back exact and complete" % len(flat),
         *ghosts[:10])
    d, err, calls = gc_until_clean(gw)
    t.ok(d is not None and d.get("pending") == 0, "(6) gc after the crash: nothing left pending (%d calls)" % calls, err, repr(d))
    clean = wait_for(lambda: not partials_on(nodes), 20)
    t.ok(clean, "(6) no partial (.part/.heal) files left on the nodes", *partials_on(nodes)[:10])
    segs = segments_on(nodes)
    t.ok(len(segs) == ncoded, "(6) no orphan shards: %d distinct segments on the nodes, %d objects above --inline-max"
         % (len(segs), ncoded))
    blobs = blobs_on(nodes)
    t.ok(len(blobs) == len(flat), "(6) no orphan manifests: %d distinct manifests on the nodes, %d objects"
         % (len(blobs), len(flat)))

    # ---- a DELETE while a node is down, finished by gc when it returns
    k = "del/while-down"
    dz = body_for(k, 2 * MB)
    r, new = new_segments(nodes, lambda: gw.raw.request("PUT", obj_path(bucket, k), body=dz))
    if not t.ok(r.status == 200 and len(new) == 1, "(6) PUT %s makes one segment" % k, repr(r), repr(new)):
        return
    seg = new[0]
    nd = nodes[2]
    had = any(s == seg for s, _ in node_scan(nd)[0])
    nd.kill9()
    r1 = gw.raw.request("DELETE", obj_path(bucket, k))
    r2 = gw.raw.request("DELETE", obj_path(bucket, "i/1000"))
    t.ok(r1.status == 204 and r2.status == 204, "(6) DELETE of a coded and an inline object with node 2 dead", repr(r1), repr(r2))
    r = gw.raw.request("GET", obj_path(bucket, k))
    t.ok(r.status == 404, "(6) the deleted object is gone at once", repr(r))
    d, err = admin_cli(gw, "gc")
    t.ok(d is not None and d.get("pending", 0) >= 1, "(6) with node 2 dead, gc reports what it could not remove as pending",
         err, repr(d))
    t.ok(nd.start(), "(6) node 2 restarts", *nd.tail())
    st = wait_nodes(gw, {i: True for i in range(6)})
    t.eq(st, {i: True for i in range(6)}, "(6) the gateway sees node 2 up again")
    d, err, calls = gc_until_clean(gw)
    t.ok(d is not None and d.get("pending") == 0, "(6) gc with node 2 back: nothing pending (%d calls)" % calls, err, repr(d))
    left = sorted("node %d: index %d" % (i, x) for i, x in segments_on(nodes).get(seg, {}).items())
    t.ok(had and not left, "(6) the deleted object's shards are gone from every node, node 2 included", *left)
    flat, ncoded = expected_counts(gw, bucket)
    segs, blobs = segments_on(nodes), blobs_on(nodes)
    t.ok(len(segs) == ncoded and len(blobs) == len(flat),
         "(6) after the deletes: %d segments for %d coded objects, %d manifests for %d objects"
         % (len(segs), ncoded, len(blobs), len(flat)))


# ==================================================================== main
def cleanup():
    for p in LIVE:
        if p.proc is not None and p.proc.poll() is None:
            try:
                os.kill(p.proc.pid, signal.SIGCONT)
                p.proc.kill()
                p.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
    if KEEP:
        sys.stderr.write("test_nodes: kept %s\n" % TOP)
    else:
        shutil.rmtree(TOP, ignore_errors=True)


def on_term(sig, frame):
    raise SystemExit(128 + sig)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGHUP, on_term)

T0 = time.time()
try:
    for exe in (CHUNKD, ADMIN):
        t.ok(os.access(exe, os.X_OK), "%s is built" % os.path.basename(exe))
    if os.access(CHUNKD, os.X_OK):
        nodes, gw, ok = start_cluster("a")
        objs = Objects()
        if ok:
            for name, fn in (("(1) node failures", test_failures), ("(2) corruption", test_corruption),
                             ("(3) wiped node", test_wiped_node), ("(3b) nodes in the wrong order", test_miswired),
                             ("(4) rebuild metadata", test_rebuild)):
                with t.block(name):
                    down = [n.name for n in nodes if not n.alive()]
                    for n in nodes:
                        if n.paused:
                            n.resume()
                        if not n.alive():
                            n.start()
                    if down:
                        t.diag("restarted %s before %s" % (down, name))
                    if not gw.alive() and not gw.start():
                        t.ok(False, "%s: gateway (re)starts" % name, *gw.tail())
                        continue
                    fn(nodes, gw, objs)
            with t.block("(5) node auth"):
                test_node_auth(nodes, gw)
        with t.block("(a) stop"):
            cluster_stop([gw] + nodes, "cluster a")
        with t.block("(6) gateway crash"):
            test_gateway_crash()
finally:
    t.diag("test_nodes took %.0fs" % (time.time() - T0))
    cleanup()
sys.exit(t.done())

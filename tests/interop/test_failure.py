#!/usr/bin/env python3
# tests/interop/test_failure.py BUILD_DIR - failure tests with real processes, as TAP.
#  (a) drives: with the server stopped, delete every file of two drive dirs, or of one drive plus
#      one corrupted byte in a shard block on another, restart, read every object back
#      byte-exact; with --ec 3+3, two wiped drives plus a corrupted third. Also checks that a
#      corrupted or missing shard is healed once read (DESIGN: "heal of the bad shard").
#  (b) crash: kill -9 while 8 threads PUT 1 MiB objects; after restart every acknowledged PUT
#      reads back exact, no object is half there, and once every object is deleted the drive
#      dirs hold no shard file (no orphans).
#  (c) leaks: overwrites (coded -> inline), copies, replaced/unused/aborted multipart parts
#      leave no shard file behind.
#  (d) 3 writers overwrite one key under 4 readers: every GET is one whole version.
#  (e) uploads cut off half way (plain and aws-chunked) store nothing and keep the old object.
# Uses only the standard library (s3raw.py); each server runs in its own temp dir, is stopped
# at the end, and every wait is bounded.
import hashlib
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
import s3raw  # noqa: E402
from s3raw import obj_path, put_multipart  # noqa: E402
from procs import LIVE, Cairn, reap  # noqa: E402

t = TAP()
if len(sys.argv) < 2 or not os.access(os.path.join(sys.argv[1], "cairn"), os.X_OK):
    print("1..0 # SKIP usage: test_failure.py BUILD_DIR (with BUILD_DIR/cairn)")
    sys.exit(0)
CAIRN = os.path.join(os.path.abspath(sys.argv[1]), "cairn")
AK = os.environ.get("CAIRN_ACCESS_KEY") or "AKFAIL" + os.urandom(6).hex().upper()
SK = os.environ.get("CAIRN_SECRET_KEY") or os.urandom(20).hex()
TOP = tempfile.mkdtemp(prefix="cairn-failure.")
SHARD_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}\.[0-9]+$")
MB = 1 << 20


def Server(data, *extra):
    return Cairn(CAIRN, "server-%d" % len(LIVE), data, os.path.join(TOP, "server-%d.log" % len(LIVE)), AK, SK, extra)


def shard_files(data):
    """{drive name: [relative shard paths]} and a list of other files under drive dirs."""
    out, other = {}, []
    for d in sorted(os.listdir(data)):
        if not re.match(r"^drive[0-9]+$", d):
            continue
        root = os.path.join(data, d)
        out[d] = []
        for dp, _, fns in os.walk(root):
            for fn in fns:
                rel = os.path.relpath(os.path.join(dp, fn), root)
                (out[d] if SHARD_RE.match(rel) else other).append(rel if SHARD_RE.match(rel) else os.path.join(d, rel))
    return out, other


def wipe_drive(data, drive):
    root = os.path.join(data, drive)
    n = 0
    for dp, _, fns in os.walk(root):
        for fn in fns:
            os.unlink(os.path.join(dp, fn))
            n += 1
    return n


def corrupt_drive(data, drive):
    """Flips one byte in the middle of every shard file of drive (inside a data block)."""
    n = 0
    for rel in shard_files(data)[0].get(drive, []):
        p = os.path.join(data, drive, rel)
        size = os.path.getsize(p)
        if size < 64:
            continue
        with open(p, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0x5A]))
        n += 1
    return n


def load_objects(srv, bucket, seed):
    """Creates bucket with objects of awkward sizes (and one multipart); returns {key: bytes}."""
    rnd = random.Random(seed)
    raw = srv.raw
    r = raw.request("PUT", obj_path(bucket))
    if r.status != 200:
        raise RuntimeError("create bucket: %r" % r)
    objs = {}
    for n in (0, 1000, 65536, 100 * 1024, 200 * 1024 + 1, MB, 3 * MB + 17, 9 * MB + 5):
        d = rnd.randbytes(n)
        r = raw.request("PUT", obj_path(bucket, "obj/%d" % n), body=d)
        if r.status != 200:
            raise RuntimeError("put %d: %r" % (n, r))
        objs["obj/%d" % n] = d
    parts = [rnd.randbytes(5 * MB), rnd.randbytes(MB + 3)]
    put_multipart(raw, bucket, "obj/multipart", parts)
    objs["obj/multipart"] = b"".join(parts)
    return objs


def read_all(srv, bucket, objs, what):
    bad = []
    for k, d in objs.items():
        try:
            r = srv.raw.request("GET", obj_path(bucket, k))
            if r.status != 200 or r.body != d:
                bad.append("%s: HTTP %d, %d bytes (want %d)%s" % (k, r.status, len(r.body), len(d),
                                                                  " " + repr(r.body[:150]) if r.status != 200 else ""))
                continue
            if len(d) > 10:
                a, b = len(d) // 3, len(d) // 3 + len(d) // 2
                r = srv.raw.request("GET", obj_path(bucket, k), headers={"range": "bytes=%d-%d" % (a, b)})
                if r.status != 206 or r.body != d[a:b + 1]:
                    bad.append("%s range %d-%d: HTTP %d, %d bytes" % (k, a, b, r.status, len(r.body)))
        except OSError as e:
            bad.append("%s: %s" % (k, e))
    t.ok(not bad, "%s: every object reads back byte-exact (%d objects, full and ranged)" % (what, len(objs)), *bad[:10])
    return not bad


def restore(src, dst):
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)


def files_equal(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def check_stop(srv, what):
    srv.stopped_cleanly(t, what)


# ---------------------------------------------------------------- (a) drives
def test_drives():
    data = os.path.join(TOP, "a")
    bak = os.path.join(TOP, "a.bak")
    srv = Server(data)
    if not t.ok(srv.start(), "(a) server starts", *srv.tail()):
        return
    bucket = "fail-drives"
    objs = load_objects(srv, bucket, 1)
    read_all(srv, bucket, objs, "(a) healthy")
    check_stop(srv, "(a)")
    shards, other = shard_files(data)
    t.eq(sorted(shards), ["drive%d" % i for i in range(1, 7)], "(a) six drive dirs drive1..drive6")
    counts = {d: len(v) for d, v in shards.items()}
    t.ok(counts and len(set(counts.values())) == 1 and min(counts.values()) > 0,
         "(a) every drive holds the same, non-zero number of shard files", repr(counts), repr(other[:5]))
    ids = {d: sorted(re.sub(r"\.[0-9]+$", "", f) for f in v) for d, v in shards.items()}
    t.ok(len({tuple(v) for v in ids.values()}) == 1, "(a) every drive holds a shard of the same objects")
    idx = {d: {f.rsplit(".", 1)[1] for f in v} for d, v in shards.items()}
    t.ok(all(len(v) >= 1 for v in idx.values()) and len(set().union(*idx.values())) == 6 if idx else False,
         "(a) shard indexes 0..5 are spread over the drives", repr(idx))
    shutil.copytree(data, bak, symlinks=True)

    # A: two drives gone
    n = wipe_drive(data, "drive2") + wipe_drive(data, "drive5")
    t.ok(n > 0, "(a) deleted %d files in drive2 and drive5" % n)
    if t.ok(srv.start(), "(a) restarts with two drives empty", *srv.tail()):
        read_all(srv, bucket, objs, "(a) drive2+drive5 empty")
        check_stop(srv, "(a) two drives empty")

    # B: one drive gone and one byte corrupted in every shard of another; then: healed?
    restore(bak, data)
    wipe_drive(data, "drive1")
    n = corrupt_drive(data, "drive3")
    t.ok(n > 0, "(a) corrupted one byte in %d shard files of drive3, drive1 empty" % n)
    if t.ok(srv.start(), "(a) restarts with drive1 empty and drive3 corrupt", *srv.tail()):
        read_all(srv, bucket, objs, "(a) drive1 empty + drive3 corrupt")
        end = time.time() + 20  # the heal runs in the background: give it time
        while time.time() < end:
            healed = [f for f in shards["drive3"]
                      if files_equal(os.path.join(data, "drive3", f), os.path.join(bak, "drive3", f))]
            back = [f for f in shards["drive1"] if os.path.exists(os.path.join(data, "drive1", f))]
            if len(healed) == len(shards["drive3"]) and len(back) == len(shards["drive1"]):
                break
            time.sleep(0.25)
        check_stop(srv, "(a) drive1 empty + drive3 corrupt")
        healed = [f for f in shards["drive3"] if files_equal(os.path.join(data, "drive3", f), os.path.join(bak, "drive3", f))]
        t.ok(len(healed) == len(shards["drive3"]), "(a) corrupted shards are healed after being read",
             "%d of %d drive3 shard files are back to their original bytes" % (len(healed), len(shards["drive3"])))
        back = [f for f in shards["drive1"] if os.path.exists(os.path.join(data, "drive1", f))]
        t.ok(len(back) == len(shards["drive1"]), "(a) missing shards are rewritten after being read",
             "%d of %d drive1 shard files exist again" % (len(back), len(shards["drive1"])))

    # C: a corrupt shard in every object of another drive, nothing missing
    restore(bak, data)
    corrupt_drive(data, "drive4")
    if t.ok(srv.start(), "(a) restarts with drive4 corrupt", *srv.tail()):
        read_all(srv, bucket, objs, "(a) drive4 corrupt (header untouched)")
        r = srv.raw.request("DELETE", obj_path(bucket, "obj/%d" % MB))
        t.ok(r.status == 204, "(a) delete works with a corrupt shard", repr(r))
        check_stop(srv, "(a) drive4 corrupt")

    # D: the literal case, 2 drives empty + 1 corrupt, needs m >= 3: --ec 3+3
    data3 = os.path.join(TOP, "a33")
    srv3 = Server(data3, "--ec", "3+3")
    if not t.ok(srv3.start(), "(a) server with --ec 3+3 starts", *srv3.tail()):
        return
    objs3 = load_objects(srv3, bucket, 2)
    check_stop(srv3, "(a) --ec 3+3")
    n = wipe_drive(data3, "drive1") + wipe_drive(data3, "drive6")
    c = corrupt_drive(data3, "drive3")
    t.ok(n > 0 and c > 0, "(a) --ec 3+3: drive1 and drive6 emptied (%d files), %d shards on drive3 corrupted" % (n, c))
    if t.ok(srv3.start(), "(a) --ec 3+3 restarts", *srv3.tail()):
        read_all(srv3, bucket, objs3, "(a) --ec 3+3, two drives empty + one corrupt")
        check_stop(srv3, "(a) --ec 3+3 damaged")


# ---------------------------------------------------------------- (b) crash
def test_crash():
    data = os.path.join(TOP, "b")
    srv = Server(data)
    if not t.ok(srv.start(), "(b) server starts", *srv.tail()):
        return
    bucket = "fail-crash"
    r = srv.raw.request("PUT", obj_path(bucket))
    t.ok(r.status == 200, "(b) create bucket", repr(r))
    # one object that exists before the crash and is overwritten during it
    base = b"before the crash" * 100
    srv.raw.request("PUT", obj_path(bucket, "t0-over"), body=base)
    state = {}  # key -> (status, sha256)  status: 'acked' | 'inflight' | 'failed'
    lock = threading.Lock()
    stop = threading.Event()
    acked = [0]

    def worker(w):
        raw = s3raw.S3Raw("http://127.0.0.1:%d" % srv.port, AK, SK, timeout=30)
        rnd = random.Random(1000 + w)
        for i in range(40):
            if stop.is_set():
                return
            key = "t%d-over" % w if (w == 0 and i % 5 == 4) else "t%d-%03d" % (w, i)
            d = rnd.randbytes(MB)
            h = hashlib.sha256(d).hexdigest()
            with lock:
                prev = state.get(key)
                state[key] = ("inflight", h, prev)
            try:
                r = raw.request("PUT", obj_path(bucket, key), body=d)
                with lock:
                    state[key] = ("acked" if r.status == 200 else "failed:%d" % r.status, h, prev)
                    if r.status == 200:
                        acked[0] += 1
            except OSError:
                return

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(8)]
    for th in threads:
        th.start()
    end = time.time() + 60
    while time.time() < end and acked[0] < 40 and any(th.is_alive() for th in threads):
        time.sleep(0.01)
    srv.proc.kill()  # SIGKILL, mid-traffic
    srv.proc.wait(10)
    stop.set()
    for th in threads:
        th.join(40)
    inflight = sum(1 for v in state.values() if v[0] == "inflight")
    t.ok(acked[0] >= 1, "(b) kill -9 with PUTs in flight: %d acknowledged, %d in flight, %d keys tried"
         % (acked[0], inflight, len(state)))
    failed = ["%s %s" % (k, v[0]) for k, v in state.items() if v[0].startswith("failed")]
    t.ok(not failed, "(b) no PUT failed before the crash", *failed[:5])
    if not t.ok(srv.start(), "(b) server restarts after kill -9", *srv.tail()):
        return
    bad, half = [], []
    for k, (st, h, prev) in sorted(state.items()):
        r = srv.raw.request("GET", obj_path(bucket, k))
        got = hashlib.sha256(r.body).hexdigest() if r.status == 200 else None
        olds = [prev[1]] if prev else []
        if k == "t0-over":
            olds.append(hashlib.sha256(base).hexdigest())
        if st == "acked":
            if got != h:
                bad.append("%s: acknowledged, now HTTP %d%s" % (k, r.status, " with other bytes (%d)" % len(r.body) if got else ""))
        elif r.status == 200 and got != h and got not in olds:
            half.append("%s: in flight, now HTTP 200 with %d bytes that match neither version" % (k, len(r.body)))
        elif r.status not in (200, 404):
            half.append("%s: in flight, now HTTP %d %r" % (k, r.status, r.body[:120]))
        elif r.status == 404 and olds:
            half.append("%s: overwrite in flight, and the old version is gone too" % k)
    t.ok(not bad, "(b) every acknowledged PUT reads back exact after the crash", *bad[:10])
    t.ok(not half, "(b) every PUT in flight is all there or not there (404)", *half[:10])
    r = srv.raw.request("GET", obj_path(bucket), query=[("list-type", "2"), ("max-keys", "1000")])
    listed = [el.text for el in ET.fromstring(r.body).findall(".//{*}Key")] if r.status == 200 else []
    ghosts = []
    for k in listed:
        g = srv.raw.request("HEAD", obj_path(bucket, k))
        if g.status != 200:
            ghosts.append("%s listed but HEAD is %d" % (k, g.status))
    t.ok(r.status == 200 and not ghosts, "(b) every listed object exists (%d listed)" % len(listed), *ghosts[:10])
    # delete everything; the drive dirs must then hold no shard at all
    for k in listed:
        srv.raw.request("DELETE", obj_path(bucket, k))
    r = srv.raw.request("GET", obj_path(bucket), query=[("list-type", "2")])
    t.ok(b"<Key>" not in r.body, "(b) bucket is empty after deleting every object")
    end = time.time() + 15
    while True:
        shards, other = shard_files(data)
        left = sorted(os.path.join(d, f) for d, fs in shards.items() for f in fs)
        if not left or time.time() > end:
            break
        time.sleep(0.5)
    t.ok(not left, "(b) no shard files left after deleting every object (no orphans from the crash)",
         "%d shard files remain, e.g. %s" % (len(left), left[:4]) if left else "")
    t.ok(not other, "(b) no temporary files left in the drive dirs", *other[:5])
    check_stop(srv, "(b)")
    if left:  # informational: would a restart collect them?
        if srv.start():
            time.sleep(3)
            check_stop(srv, "(b) second restart")
            left2 = sum(len(v) for v in shard_files(data)[0].values())
            t.diag("after one more restart: %d shard files remain" % left2)


# ------------------------------------------------------- (c) no leaked shards
def count_shards(data, want, timeout=10):
    """Shard files under data's drives, polled until it equals want (deletes may be lazy)."""
    end = time.time() + timeout
    while True:
        n = sum(len(v) for v in shard_files(data)[0].values())
        if n == want or time.time() > end:
            return n
        time.sleep(0.2)


def test_leaks():
    data = os.path.join(TOP, "c")
    srv = Server(data)
    if not t.ok(srv.start(), "(c) server starts", *srv.tail()):
        return
    raw, bucket = srv.raw, "fail-leaks"
    raw.request("PUT", obj_path(bucket))
    raw.request("PUT", obj_path(bucket, "o"), body=os.urandom(MB))
    t.eq(count_shards(data, 6), 6, "(c) a 1 MiB object has 6 shard files")
    raw.request("PUT", obj_path(bucket, "o"), body=b"small now")
    t.eq(count_shards(data, 0), 0, "(c) overwritten by an inline object: its shards are gone")
    big = os.urandom(2 * MB)
    raw.request("PUT", obj_path(bucket, "o"), body=big)
    raw.request("PUT", obj_path(bucket, "o2"), headers={"x-amz-copy-source": "/%s/o" % bucket})
    r = raw.request("GET", obj_path(bucket, "o2"))
    t.ok(r.status == 200 and r.body == big, "(c) copy of a coded object reads back", repr(r)[:200])
    raw.request("DELETE", obj_path(bucket, "o"))
    r = raw.request("GET", obj_path(bucket, "o2"))
    t.ok(r.status == 200 and r.body == big, "(c) the copy survives deleting its source", repr(r)[:200])
    raw.request("DELETE", obj_path(bucket, "o2"))
    t.eq(count_shards(data, 0), 0, "(c) deleting the object and its copy leaves no shard")

    # multipart: a replaced part, an unused part, an aborted upload
    r = raw.request("POST", obj_path(bucket, "m"), query=[("uploads", None)])
    uid = ET.fromstring(r.body).find("{*}UploadId").text
    etags = {}
    for n in (1, 2, 3, 2):
        r = raw.request("PUT", obj_path(bucket, "m"), query=[("partNumber", str(n)), ("uploadId", uid)],
                        body=os.urandom(5 * MB))
        etags[n] = r.headers.get("etag")
    xml = "<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % "".join(
        "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>" % (n, etags[n]) for n in (1, 2))
    r = raw.request("POST", obj_path(bucket, "m"), query=[("uploadId", uid)], body=xml)
    t.ok(r.status == 200 and b"<Error>" not in r.body, "(c) complete with parts 1 and 2 of 3 (part 2 uploaded twice)", repr(r)[:200])
    t.eq(count_shards(data, 12), 12, "(c) only the 2 completed parts keep shards (replaced and unused parts are gone)")
    raw.request("DELETE", obj_path(bucket, "m"))
    r = raw.request("POST", obj_path(bucket, "a"), query=[("uploads", None)])
    uid = ET.fromstring(r.body).find("{*}UploadId").text
    for n in (1, 2):
        raw.request("PUT", obj_path(bucket, "a"), query=[("partNumber", str(n)), ("uploadId", uid)], body=os.urandom(MB))
    raw.request("DELETE", obj_path(bucket, "a"), query=[("uploadId", uid)])
    t.eq(count_shards(data, 0), 0, "(c) deleted multipart object and aborted upload leave no shard")
    t.eq(shard_files(data)[1], [], "(c) no temporary files in the drive dirs")
    check_stop(srv, "(c)")


# --------------------------------------------- (d) overwrites under readers
def test_overwrite_race():
    data = os.path.join(TOP, "d")
    srv = Server(data)
    if not t.ok(srv.start(), "(d) server starts", *srv.tail()):
        return
    bucket = "fail-race"
    srv.raw.request("PUT", obj_path(bucket))
    versions = [bytes([i]) * (MB + i * 4097) for i in range(6)] + [b"inline %d" % i * 100 for i in range(3)]
    hashes = {hashlib.sha256(v).hexdigest() for v in versions}
    srv.raw.request("PUT", obj_path(bucket, "hot"), body=versions[0])
    stop = threading.Event()
    bad, reads, writes = [], [0], [0]

    def writer(w):
        raw = s3raw.S3Raw("http://127.0.0.1:%d" % srv.port, AK, SK, timeout=30)
        i = w
        while not stop.is_set():
            r = raw.request("PUT", obj_path(bucket, "hot"), body=versions[i % len(versions)])
            if r.status != 200:
                bad.append("PUT -> %r" % r)
            writes[0] += 1
            i += 3

    def reader():
        raw = s3raw.S3Raw("http://127.0.0.1:%d" % srv.port, AK, SK, timeout=30)
        while not stop.is_set():
            r = raw.request("GET", obj_path(bucket, "hot"))
            reads[0] += 1
            if r.status != 200 or hashlib.sha256(r.body).hexdigest() not in hashes:
                bad.append("GET -> HTTP %d, %d bytes, not one of the versions written" % (r.status, len(r.body)))

    ths = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(3)]
    ths += [threading.Thread(target=reader, daemon=True) for _ in range(4)]
    for th in ths:
        th.start()
    time.sleep(4)
    stop.set()
    for th in ths:
        th.join(40)
    t.ok(not bad and reads[0] > 10, "(d) 3 writers overwrite one key, 4 readers: every GET is one whole version (%d reads, %d writes)"
         % (reads[0], writes[0]), *bad[:8])
    srv.raw.request("DELETE", obj_path(bucket, "hot"))
    t.eq(count_shards(data, 0), 0, "(d) no shard left after the overwrites and the delete")
    check_stop(srv, "(d)")


# ------------------------------------------------ (e) truncated uploads
def send_truncated(srv, path, declared, sent, payload_hash="UNSIGNED-PAYLOAD", extra=None):
    """Signs a PUT declaring `declared` body bytes, sends `sent` of them, then closes."""
    hdrs = dict(extra or {})
    hdrs["content-length"] = str(declared)
    srv.raw.sign_headers("PUT", path, [], hdrs, payload_hash, srv.raw.netloc)
    head = "PUT %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % kv for kv in hdrs.items()))
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(head.encode() + sent)
        time.sleep(0.3)
    finally:
        s.close()


def test_truncated():
    data = os.path.join(TOP, "e")
    srv = Server(data)
    if not t.ok(srv.start(), "(e) server starts", *srv.tail()):
        return
    bucket = "fail-trunc"
    srv.raw.request("PUT", obj_path(bucket))
    old = os.urandom(300000)
    srv.raw.request("PUT", obj_path(bucket, "old"), body=old)
    for n, what in ((MB, "1 MiB"), (40000, "40 KB (inline)")):
        send_truncated(srv, obj_path(bucket, "new-%d" % n), n, os.urandom(n // 2))
        send_truncated(srv, obj_path(bucket, "old"), n, os.urandom(n // 2))
        time.sleep(0.5)
        r = srv.raw.request("GET", obj_path(bucket, "new-%d" % n))
        t.ok(r.status == 404, "(e) a %s PUT cut off half way stores nothing" % what, repr(r)[:200])
        r = srv.raw.request("GET", obj_path(bucket, "old"))
        t.ok(r.status == 200 and r.body == old, "(e) a %s overwrite cut off half way keeps the old object" % what,
             "HTTP %d, %d bytes" % (r.status, len(r.body)))
    d = os.urandom(200000)
    chunks = b"%x;chunk-signature=%s\r\n%s\r\n" % (65536, b"0" * 64, d[:65536])
    send_truncated(srv, obj_path(bucket, "chunked"), len(chunks) * 4, chunks, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                   {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(d))})
    r = srv.raw.request("GET", obj_path(bucket, "chunked"))
    t.ok(r.status == 404, "(e) an aws-chunked PUT cut off after one chunk stores nothing", repr(r)[:200])
    srv.raw.request("DELETE", obj_path(bucket, "old"))
    t.eq(count_shards(data, 0), 0, "(e) no shard left behind by the cut-off uploads")
    t.ok(srv.proc.poll() is None, "(e) server still running")
    check_stop(srv, "(e)")


try:
    with t.block("(a) drives"):
        test_drives()
    with t.block("(b) crash"):
        test_crash()
    with t.block("(c) leaks"):
        test_leaks()
    with t.block("(d) overwrite race"):
        test_overwrite_race()
    with t.block("(e) truncated uploads"):
        test_truncated()
finally:
    reap()
    shutil.rmtree(TOP, ignore_errors=True)
sys.exit(t.done())

#!/usr/bin/env python3
# tests/interop/test_boto3.py - boto3 against S3_ENDPOINT, as TAP. Runs under any python3 with
# boto3 (run.sh uses a current boto3 and Debian's 1.26); features the installed botocore lacks
# are skipped, not failed. Every response is audited: x-amz-request-id present, and error
# bodies are XML with Code and RequestId. Creates and deletes its own buckets.
import base64
import concurrent.futures
import datetime
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
import s3raw  # noqa: E402

t = TAP()
try:
    import boto3
    import botocore
    from botocore.client import Config
    from botocore.exceptions import ClientError
except ImportError as e:
    print("1..0 # SKIP boto3 is not installed for %s (%s)" % (sys.executable, e))
    sys.exit(0)

EP = os.environ["S3_ENDPOINT"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
for v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(v, None)
os.environ.setdefault("AWS_CONFIG_FILE", "/dev/null")
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
BV = tuple(int(x) for x in botocore.__version__.split(".")[:2])
print("# %s: boto3 %s, botocore %s" % (sys.executable, boto3.__version__, botocore.__version__))
NEW = BV >= (1, 36)  # default CRC32 request checksums, response validation

audit = []  # problems seen in any response
last = {}


def after_call(http_response=None, model=None, **kw):
    if http_response is None:
        return
    st = http_response.status_code
    h = http_response.headers
    last.update(status=st, headers=h, op=model.name if model else "?")
    if "x-amz-request-id" not in h:
        audit.append("%s -> HTTP %d without x-amz-request-id" % (last["op"], st))
    if st >= 400 and model is not None and model.http.get("method") != "HEAD":
        body = http_response.content or b""
        last["body"] = body
        err = s3raw.parse_error(body)
        if not err.get("Code") or "RequestId" not in err:
            audit.append("%s -> HTTP %d error body is not <Error> with Code and RequestId: %r"
                         % (last["op"], st, body[:200]))


def client(ak=AK, sk=SK, **cfg):
    c = boto3.session.Session().client(
        "s3", endpoint_url=EP, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"},
                      connect_timeout=10, read_timeout=120, signature_version="s3v4", **cfg))
    c.meta.events.register("after-call.s3", after_call)
    return c


s3 = client()
SUF = os.urandom(4).hex()
B = "cairn-it-boto-%s-%s" % ("n" if NEW else "o", SUF)
B2 = B + "-x"


def expect_err(name, code, status, fn, *a, **kw):
    """fn(*a, **kw) must raise ClientError with code and HTTP status."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        got = (e.response.get("Error", {}).get("Code"), e.response["ResponseMetadata"].get("HTTPStatusCode"))
        return t.ok(got == (code, status), name, "got %s %s: %s" % (got[1], got[0], e.response.get("Error")),
                    "want %s %s" % (status, code))
    return t.ok(False, name, "call succeeded; want %s %s" % (status, code))


def rnd(n):
    return os.urandom(n)


def add_headers(cl, op, headers):
    """Adds raw headers to the next calls of op (for params older botocore lacks)."""
    def h(request, **kw):
        for k, v in headers.items():
            request.headers[k] = v
    cl.meta.events.register_first("before-sign.s3.%s" % op, h)
    return lambda: cl.meta.events.unregister("before-sign.s3.%s" % op, h)


def curl(*args):
    p = subprocess.run(["curl", "-s", "-m", "60", "-w", "%{http_code}"] + list(args), capture_output=True, timeout=90)
    return p.stdout


HAVE_CURL = shutil.which("curl") is not None

# ------------------------------------------------------------------ buckets
with t.block("buckets"):
    r = s3.create_bucket(Bucket=B)
    t.eq(r["ResponseMetadata"]["HTTPStatusCode"], 200, "create_bucket")
    t.ok(B in [b["Name"] for b in s3.list_buckets()["Buckets"]], "list_buckets has it")
    for bad in ["Bad_Name", "ab", "-abc", "abc-", "a..b", "10.1.2.3", "x" * 64, "UPPER", "has space"]:
        try:
            expect_err("create_bucket %r -> InvalidBucketName" % bad, "InvalidBucketName", 400, s3.create_bucket, Bucket=bad)
        except botocore.exceptions.ParamValidationError:
            t.skip("create_bucket %r" % bad, "botocore refuses the name itself")
    expect_err("create_bucket twice -> BucketAlreadyOwnedByYou", "BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket=B)
    t.eq(s3.head_bucket(Bucket=B)["ResponseMetadata"]["HTTPStatusCode"], 200, "head_bucket")
    expect_err("head_bucket of a missing bucket -> 404", "404", 404, s3.head_bucket, Bucket=B2)
    loc = s3.get_bucket_location(Bucket=B).get("LocationConstraint")
    t.ok(loc in (None, "", "us-east-1"), "get_bucket_location is us-east-1 (empty)", "got %r" % (loc,))
    v = s3.get_bucket_versioning(Bucket=B)
    t.ok("Status" not in v, "get_bucket_versioning: never enabled", "got %r" % (v,))
    expect_err("list_objects_v2 of a missing bucket -> NoSuchBucket", "NoSuchBucket", 404, s3.list_objects_v2, Bucket=B2)
    expect_err("delete_bucket of a missing bucket -> NoSuchBucket", "NoSuchBucket", 404, s3.delete_bucket, Bucket=B2)

# ----------------------------------------------------- put/get and headers
SMALL = b"hello from boto3\n"
with t.block("put/get"):
    exp = datetime.datetime(2031, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)
    r = s3.put_object(Bucket=B, Key="h/obj", Body=SMALL, ContentType="text/x-b3; charset=utf-8",
                      CacheControl="no-cache", ContentDisposition='attachment; filename="a b.txt"',
                      ContentEncoding="identity", ContentLanguage="fr", Expires=exp,
                      Metadata={"color": "green", "k2": "v 2"})
    t.eq(r["ETag"], '"%s"' % hashlib.md5(SMALL).hexdigest(), "put_object ETag is the MD5")
    for how in ("head", "get"):
        o = s3.head_object(Bucket=B, Key="h/obj") if how == "head" else s3.get_object(Bucket=B, Key="h/obj")
        t.eq(o.get("ContentType"), "text/x-b3; charset=utf-8", how + ": ContentType")
        t.eq(o.get("CacheControl"), "no-cache", how + ": CacheControl")
        t.ok("attachment" in (o.get("ContentDisposition") or ""), how + ": ContentDisposition", repr(o.get("ContentDisposition")))
        t.eq(o.get("ContentEncoding"), "identity", how + ": ContentEncoding")
        t.eq(o.get("ContentLanguage"), "fr", how + ": ContentLanguage")
        t.ok(o.get("Expires") == exp or "2031" in str(o.get("ExpiresString", "")), how + ": Expires", repr(o.get("Expires")))
        t.eq(o.get("Metadata"), {"color": "green", "k2": "v 2"}, how + ": Metadata")
        t.eq(o.get("ContentLength"), len(SMALL), how + ": ContentLength")
        t.eq(o.get("ETag"), r["ETag"], how + ": ETag")
        t.ok(isinstance(o.get("LastModified"), datetime.datetime), how + ": LastModified")
        if how == "get":
            t.eq(o["Body"].read(), SMALL, "get_object body")
        t.eq(o["ResponseMetadata"]["HTTPHeaders"].get("accept-ranges"), "bytes", how + ": Accept-Ranges: bytes")

    # sizes around the inline threshold and the stripe size, byte-exact
    for n in (0, 1, 65535, 65536, 65537, 131072, 131073, 262144 + 7, 1048576, 4 * 1048576 + 3):
        d = rnd(n)
        s3.put_object(Bucket=B, Key="size/%d" % n, Body=d)
        g = s3.get_object(Bucket=B, Key="size/%d" % n)["Body"].read()
        t.ok(g == d, "put/get %d bytes is byte-exact" % n, "got %d bytes" % len(g))

    expect_err("get_object NoSuchKey", "NoSuchKey", 404, s3.get_object, Bucket=B, Key="no/such/key")
    expect_err("get_object NoSuchBucket", "NoSuchBucket", 404, s3.get_object, Bucket=B2, Key="k")
    expect_err("put_object NoSuchBucket", "NoSuchBucket", 404, s3.put_object, Bucket=B2, Key="k", Body=b"x")
    expect_err("head_object missing -> 404", "404", 404, s3.head_object, Bucket=B, Key="no/such/key")
    t.ok(last.get("body", b"") is not None, "(audit hook is active)")

# ------------------------------------------------------------- Content-MD5
with t.block("content-md5"):
    r = s3.put_object(Bucket=B, Key="md5/good", Body=SMALL, ContentMD5=s3raw.b64_md5(SMALL))
    t.eq(r["ResponseMetadata"]["HTTPStatusCode"], 200, "put_object with a good Content-MD5")
    expect_err("put_object with a wrong Content-MD5 -> BadDigest", "BadDigest", 400, s3.put_object,
               Bucket=B, Key="md5/bad", Body=SMALL, ContentMD5=s3raw.b64_md5(b"other"))
    expect_err("nothing stored after BadDigest", "404", 404, s3.head_object, Bucket=B, Key="md5/bad")
    expect_err("put_object with a malformed Content-MD5 -> InvalidDigest", "InvalidDigest", 400, s3.put_object,
               Bucket=B, Key="md5/bad", Body=SMALL, ContentMD5="not-base64!")

# ------------------------------------------------------------ conditionals
with t.block("conditional put"):
    def cput(key, body, **cond):
        """put_object with If-None-Match / If-Match, via headers where botocore is too old."""
        if "IfNoneMatch" in s3.meta.service_model.operation_model("PutObject").input_shape.members:
            return s3.put_object(Bucket=B, Key=key, Body=body, **cond)
        names = {"IfNoneMatch": "If-None-Match", "IfMatch": "If-Match"}
        undo = add_headers(s3, "PutObject", {names[k]: v for k, v in cond.items()})
        try:
            return s3.put_object(Bucket=B, Key=key, Body=body)
        finally:
            undo()
    r = cput("cond/k", b"one", IfNoneMatch="*")
    t.eq(r["ResponseMetadata"]["HTTPStatusCode"], 200, "put If-None-Match * on a new key")
    expect_err("put If-None-Match * again -> PreconditionFailed", "PreconditionFailed", 412, cput, "cond/k", b"two", IfNoneMatch="*")
    t.eq(s3.get_object(Bucket=B, Key="cond/k")["Body"].read(), b"one", "the failed conditional put changed nothing")
    r2 = cput("cond/k", b"three", IfMatch=r["ETag"])
    t.eq(r2["ResponseMetadata"]["HTTPStatusCode"], 200, "put If-Match current ETag")
    expect_err("put If-Match old ETag -> PreconditionFailed", "PreconditionFailed", 412, cput, "cond/k", b"four", IfMatch=r["ETag"])
    expect_err("put If-Match on a missing key -> NoSuchKey", "NoSuchKey", 404, cput, "cond/missing", b"x", IfMatch=r["ETag"])

with t.block("conditional get"):
    et = s3.head_object(Bucket=B, Key="h/obj")["ETag"]
    lm = s3.head_object(Bucket=B, Key="h/obj")["LastModified"]
    expect_err("get If-None-Match current -> 304", "304", 304, s3.get_object, Bucket=B, Key="h/obj", IfNoneMatch=et)
    expect_err("head If-None-Match current -> 304", "304", 304, s3.head_object, Bucket=B, Key="h/obj", IfNoneMatch=et)
    t.eq(s3.get_object(Bucket=B, Key="h/obj", IfNoneMatch='"abc"')["Body"].read(), SMALL, "get If-None-Match other -> 200")
    t.eq(s3.get_object(Bucket=B, Key="h/obj", IfMatch=et)["Body"].read(), SMALL, "get If-Match current -> 200")
    expect_err("get If-Match other -> PreconditionFailed", "PreconditionFailed", 412, s3.get_object, Bucket=B, Key="h/obj", IfMatch='"abc"')
    expect_err("head If-Match other -> 412", "412", 412, s3.head_object, Bucket=B, Key="h/obj", IfMatch='"abc"')
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    expect_err("get If-Modified-Since LastModified -> 304", "304", 304, s3.get_object, Bucket=B, Key="h/obj", IfModifiedSince=lm)
    t.eq(s3.get_object(Bucket=B, Key="h/obj", IfModifiedSince=past)["Body"].read(), SMALL, "get If-Modified-Since past -> 200")
    expect_err("get If-Unmodified-Since past -> PreconditionFailed", "PreconditionFailed", 412, s3.get_object, Bucket=B, Key="h/obj", IfUnmodifiedSince=past)
    t.eq(s3.get_object(Bucket=B, Key="h/obj", IfUnmodifiedSince=future)["Body"].read(), SMALL, "get If-Unmodified-Since future -> 200")
    # If-Match true + If-Unmodified-Since false -> 200 (RFC 7232 precedence, as S3 does)
    t.eq(s3.get_object(Bucket=B, Key="h/obj", IfMatch=et, IfUnmodifiedSince=past)["Body"].read(), SMALL,
         "get If-Match true wins over If-Unmodified-Since false")
    expect_err("get If-None-Match false + If-Modified-Since true -> 304", "304", 304, s3.get_object,
               Bucket=B, Key="h/obj", IfNoneMatch=et, IfModifiedSince=past)

# ------------------------------------------------------------------ ranges
with t.block("ranges"):
    D = rnd(300000)
    s3.put_object(Bucket=B, Key="r/d", Body=D)
    for rng, want in [("bytes=0-0", D[0:1]), ("bytes=10-", D[10:]), ("bytes=-5", D[-5:]),
                      ("bytes=299990-400000", D[299990:]), ("bytes=65530-131080", D[65530:131081]),
                      ("bytes=-400000", D), ("bytes=123456-123456", D[123456:123457])]:
        o = s3.get_object(Bucket=B, Key="r/d", Range=rng)
        body = o["Body"].read()
        t.ok(body == want and o["ResponseMetadata"]["HTTPStatusCode"] == 206 and o.get("ContentLength") == len(want),
             "get Range %s -> 206, %d bytes" % (rng, len(want)),
             "got HTTP %s, %d bytes, ContentRange %s" % (o["ResponseMetadata"]["HTTPStatusCode"], len(body), o.get("ContentRange")))
    o = s3.get_object(Bucket=B, Key="r/d", Range="bytes=10-19")
    t.eq(o.get("ContentRange"), "bytes 10-19/300000", "Content-Range header")
    expect_err("Range beyond the end -> InvalidRange 416", "InvalidRange", 416, s3.get_object, Bucket=B, Key="r/d", Range="bytes=300000-")
    o = s3.get_object(Bucket=B, Key="r/d", Range="bytes=5-1")  # unsatisfiable syntax -> whole object (RFC 7233)
    t.eq((o["ResponseMetadata"]["HTTPStatusCode"], len(o["Body"].read())), (200, 300000), "invalid Range syntax is ignored -> 200 whole")
    o = s3.get_object(Bucket=B, Key="r/d", ResponseContentType="application/x-o", ResponseContentDisposition="inline",
                      ResponseCacheControl="no-store", ResponseContentLanguage="de", ResponseExpires=datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc),
                      ResponseContentEncoding="identity")
    t.eq((o.get("ContentType"), o.get("ContentDisposition"), o.get("CacheControl"), o.get("ContentLanguage"), o.get("ContentEncoding")),
         ("application/x-o", "inline", "no-store", "de", "identity"), "get_object response-* overrides")

# ---------------------------------------------------------- copy / delete
with t.block("copy"):
    r = s3.copy_object(Bucket=B, Key="c/copy1", CopySource={"Bucket": B, "Key": "h/obj"})
    t.ok(r["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(SMALL).hexdigest(), "copy_object COPY: ETag", repr(r.get("CopyObjectResult")))
    h = s3.head_object(Bucket=B, Key="c/copy1")
    t.eq((h["ContentType"], h["Metadata"]), ("text/x-b3; charset=utf-8", {"color": "green", "k2": "v 2"}), "COPY keeps type and metadata")
    s3.copy_object(Bucket=B, Key="c/copy2", CopySource={"Bucket": B, "Key": "h/obj"}, MetadataDirective="REPLACE",
                   ContentType="application/x-r", Metadata={"new": "1"})
    h = s3.head_object(Bucket=B, Key="c/copy2")
    t.eq((h["ContentType"], h["Metadata"]), ("application/x-r", {"new": "1"}), "REPLACE replaces type and metadata")
    expect_err("copy onto itself without REPLACE -> InvalidRequest", "InvalidRequest", 400, s3.copy_object,
               Bucket=B, Key="h/obj", CopySource={"Bucket": B, "Key": "h/obj"})
    s3.copy_object(Bucket=B, Key="h/obj", CopySource={"Bucket": B, "Key": "h/obj"}, MetadataDirective="REPLACE",
                   ContentType="text/x-b3; charset=utf-8", Metadata={"color": "green", "k2": "v 2"})
    t.ok(True, "copy onto itself with REPLACE")
    big = rnd(3 * 1048576 + 11)
    s3.put_object(Bucket=B, Key="c/big", Body=big)
    s3.copy_object(Bucket=B, Key="c/big copy é", CopySource={"Bucket": B, "Key": "c/big"})
    t.ok(s3.get_object(Bucket=B, Key="c/big copy é")["Body"].read() == big, "copy of a coded object is byte-exact")
    et = s3.head_object(Bucket=B, Key="c/big")["ETag"]
    expect_err("copy with CopySourceIfMatch mismatch -> PreconditionFailed", "PreconditionFailed", 412, s3.copy_object,
               Bucket=B, Key="c/x", CopySource={"Bucket": B, "Key": "c/big"}, CopySourceIfMatch='"nope"')
    s3.copy_object(Bucket=B, Key="c/x", CopySource={"Bucket": B, "Key": "c/big"}, CopySourceIfMatch=et)
    t.ok(True, "copy with CopySourceIfMatch current")
    expect_err("copy from a missing key -> NoSuchKey", "NoSuchKey", 404, s3.copy_object, Bucket=B, Key="c/y",
               CopySource={"Bucket": B, "Key": "no/such"})
    expect_err("copy from a missing bucket -> NoSuchBucket", "NoSuchBucket", 404, s3.copy_object, Bucket=B, Key="c/y",
               CopySource={"Bucket": B2, "Key": "k"})

with t.block("delete"):
    r = s3.delete_object(Bucket=B, Key="c/copy2")
    t.eq(r["ResponseMetadata"]["HTTPStatusCode"], 204, "delete_object -> 204")
    expect_err("deleted object is gone", "NoSuchKey", 404, s3.get_object, Bucket=B, Key="c/copy2")
    t.eq(s3.delete_object(Bucket=B, Key="c/never")["ResponseMetadata"]["HTTPStatusCode"], 204, "delete_object of a missing key -> 204")
    for k in ("d/1", "d/2", "d/3 &"):
        s3.put_object(Bucket=B, Key=k, Body=b"x")
    r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "d/1"}, {"Key": "d/2"}, {"Key": "d/missing"}]})
    t.eq(sorted(d["Key"] for d in r.get("Deleted", [])), ["d/1", "d/2", "d/missing"], "delete_objects Deleted list")
    t.eq(r.get("Errors", []), [], "delete_objects no Errors")
    r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "d/3 &"}], "Quiet": True})
    t.eq((r.get("Deleted", []), r.get("Errors", [])), ([], []), "delete_objects Quiet: empty result")
    t.eq(s3.list_objects_v2(Bucket=B, Prefix="d/")["KeyCount"], 0, "delete_objects removed them")
    expect_err("delete_objects of a missing bucket -> NoSuchBucket", "NoSuchBucket", 404, s3.delete_objects,
               Bucket=B2, Delete={"Objects": [{"Key": "a"}]})

# ------------------------------------------------------------------- lists
with t.block("list"):
    keys = ["l/a/1", "l/a/2", "l/b/1", "l/c", "l/d", "l/e f", "l/g+h", "l/\u00e9", "l/\u65e5\u672c"]
    for k in keys:
        s3.put_object(Bucket=B, Key=k, Body=b"x")
    skeys = sorted(keys, key=lambda k: k.encode("utf-8"))
    r = s3.list_objects_v2(Bucket=B, Prefix="l/", Delimiter="/")
    t.eq([p["Prefix"] for p in r.get("CommonPrefixes", [])], ["l/a/", "l/b/"], "v2 CommonPrefixes")
    t.eq([o["Key"] for o in r.get("Contents", [])], [k for k in skeys if k.count("/") == 1], "v2 Contents with delimiter (UTF-8 order)")
    t.eq(r.get("KeyCount"), 9 - 3 + 2, "v2 KeyCount counts prefixes too")
    o = r["Contents"][0]
    t.ok(o.get("ETag") and o.get("Size") == 1 and o.get("LastModified") and o.get("StorageClass") == "STANDARD",
         "v2 Contents entries have ETag, Size, LastModified, StorageClass", repr(o))
    got, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=B, Prefix="l/", MaxKeys=2, **kw)
        pages += 1
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            break
        token = r["NextContinuationToken"]
        if pages > 10:
            break
    t.eq((got, pages), (skeys, 5), "v2 MaxKeys=2 pagination with ContinuationToken")
    r = s3.list_objects_v2(Bucket=B, Prefix="l/", StartAfter="l/c")
    t.eq([o["Key"] for o in r["Contents"]], [k for k in skeys if k.encode() > b"l/c"], "v2 StartAfter")
    r = s3.list_objects_v2(Bucket=B, Prefix="l/", FetchOwner=True, MaxKeys=1)
    t.ok("Owner" in r["Contents"][0], "v2 FetchOwner", repr(r["Contents"][0]))
    r = s3.list_objects_v2(Bucket=B, Prefix="l/", Delimiter="/", MaxKeys=3)
    t.eq(([p["Prefix"] for p in r.get("CommonPrefixes", [])], [o["Key"] for o in r.get("Contents", [])], r["IsTruncated"]),
         (["l/a/", "l/b/"], ["l/c"], True), "v2 MaxKeys counts prefixes and keys together")
    want = ["l/a/", "l/b/"] + [k for k in skeys if k.count("/") == 1]
    got, token = [], None
    for _ in range(20):
        r = s3.list_objects_v2(Bucket=B, Prefix="l/", Delimiter="/", MaxKeys=1, **({"ContinuationToken": token} if token else {}))
        got += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            break
        token = r["NextContinuationToken"]
    t.eq(got, want, "v2 paging one entry at a time through common prefixes: each once, in order")
    got, marker = [], None
    for _ in range(20):
        r = s3.list_objects(Bucket=B, Prefix="l/", Delimiter="/", MaxKeys=1, **({"Marker": marker} if marker else {}))
        got += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            break
        marker = r.get("NextMarker")
    t.eq(got, want, "v1 paging one entry at a time through common prefixes (NextMarker)")
    r = s3.list_objects_v2(Bucket=B, Prefix="l/", MaxKeys=0)
    t.eq((r.get("KeyCount"), r.get("Contents", [])), (0, []), "v2 MaxKeys=0")
    r = s3.list_objects_v2(Bucket=B, Prefix="l/", EncodingType="url")
    t.eq([o["Key"] for o in r.get("Contents", [])][-5:], ["l/d", "l/e%20f", "l/g%2Bh", "l/%C3%A9", "l/%E6%97%A5%E6%9C%AC"],
         "v2 EncodingType=url (asked for explicitly, so botocore leaves keys encoded)")
    t.eq(r.get("EncodingType"), "url", "v2 EncodingType echoed")
    got, marker = [], None
    for _ in range(10):
        kw = {"Marker": marker} if marker else {}
        r = s3.list_objects(Bucket=B, Prefix="l/", MaxKeys=4, **kw)
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            break
        marker = r.get("NextMarker") or r["Contents"][-1]["Key"]
    t.eq(got, skeys, "v1 pagination with Marker")
    r = s3.list_objects(Bucket=B, Prefix="l/", Delimiter="/", MaxKeys=1)
    t.eq((r["IsTruncated"], r.get("NextMarker")), (True, "l/a/"), "v1 NextMarker with a delimiter")
    r = s3.list_objects(Bucket=B, Prefix="l/", Marker="l/d")
    t.eq([o["Key"] for o in r.get("Contents", [])], [k for k in skeys if k.encode() > b"l/d"], "v1 Marker")
    pag = s3.get_paginator("list_objects_v2")
    t.eq([o["Key"] for p in pag.paginate(Bucket=B, Prefix="l/", PaginationConfig={"PageSize": 3}) for o in p.get("Contents", [])],
         skeys, "v2 paginator")
    r = s3.list_object_versions(Bucket=B, Prefix="l/c")
    t.eq([(v["Key"], v["VersionId"], v["IsLatest"]) for v in r.get("Versions", [])], [("l/c", "null", True)], "list_object_versions: VersionId null")
    t.eq(s3.get_object(Bucket=B, Key="l/c", VersionId="null")["Body"].read(), b"x", "get_object VersionId=null")
    expect_err("v2 with a bad continuation token -> InvalidArgument", "InvalidArgument", 400, s3.list_objects_v2,
               Bucket=B, ContinuationToken="!!not-a-token!!")
    expect_err("v2 MaxKeys=-1 -> InvalidArgument", "InvalidArgument", 400, s3.list_objects_v2, Bucket=B, MaxKeys=-1)

with t.block("list 1000+"):
    def put1(i):
        s3.put_object(Bucket=B, Key="many/%05d" % i, Body=b"")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(put1, range(1003)))
    r = s3.list_objects_v2(Bucket=B, Prefix="many/")
    t.eq((r["KeyCount"], r["IsTruncated"], r["MaxKeys"]), (1000, True, 1000), "v2 default page is 1000 keys")
    r = s3.list_objects_v2(Bucket=B, Prefix="many/", ContinuationToken=r["NextContinuationToken"])
    t.eq([o["Key"] for o in r["Contents"]], ["many/01000", "many/01001", "many/01002"], "v2 second page")
    r = s3.list_objects_v2(Bucket=B, Prefix="many/", MaxKeys=5000)
    t.eq(r["KeyCount"], 1000, "v2 MaxKeys above 1000 is capped at 1000")
    r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "many/%05d" % i} for i in range(1000)], "Quiet": True})
    t.eq(r.get("Errors", []), [], "delete_objects with 1000 keys")
    expect_err("delete_objects with 1001 keys -> MalformedXML", "MalformedXML", 400, s3.delete_objects, Bucket=B,
               Delete={"Objects": [{"Key": "many/%05d" % i} for i in range(1001)]})
    s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "many/%05d" % i} for i in range(1000, 1003)]})

# --------------------------------------------------------------- multipart
MB = 1048576
with t.block("multipart"):
    parts_data = [rnd(5 * MB), rnd(5 * MB + 17), rnd(123)]
    up = s3.create_multipart_upload(Bucket=B, Key="mp/o", ContentType="application/x-mp", Metadata={"m": "1"})
    uid = up["UploadId"]
    t.ok(uid, "create_multipart_upload")
    parts = []
    for i, d in enumerate(parts_data, 1):
        r = s3.upload_part(Bucket=B, Key="mp/o", UploadId=uid, PartNumber=i, Body=d)
        t.eq(r["ETag"], '"%s"' % hashlib.md5(d).hexdigest(), "upload_part %d ETag is its MD5" % i)
        parts.append({"PartNumber": i, "ETag": r["ETag"]})
    r = s3.upload_part(Bucket=B, Key="mp/o", UploadId=uid, PartNumber=2, Body=parts_data[1])
    t.eq(r["ETag"], parts[1]["ETag"], "upload_part again replaces the part")
    lp = s3.list_parts(Bucket=B, Key="mp/o", UploadId=uid)
    t.eq([(p["PartNumber"], p["Size"], p["ETag"]) for p in lp["Parts"]],
         [(i + 1, len(d), parts[i]["ETag"]) for i, d in enumerate(parts_data)], "list_parts")
    lp = s3.list_parts(Bucket=B, Key="mp/o", UploadId=uid, MaxParts=1)
    t.eq((len(lp["Parts"]), lp["IsTruncated"], lp.get("NextPartNumberMarker")), (1, True, 1), "list_parts MaxParts=1")
    lp = s3.list_parts(Bucket=B, Key="mp/o", UploadId=uid, PartNumberMarker=1)
    t.eq([p["PartNumber"] for p in lp["Parts"]], [2, 3], "list_parts PartNumberMarker")
    mu = s3.list_multipart_uploads(Bucket=B)
    t.eq([(u["Key"], u["UploadId"]) for u in mu.get("Uploads", [])], [("mp/o", uid)], "list_multipart_uploads")
    mu = s3.list_multipart_uploads(Bucket=B, Prefix="nomatch/")
    t.eq(mu.get("Uploads", []), [], "list_multipart_uploads with a prefix")
    t.eq(s3.list_objects_v2(Bucket=B, Prefix="mp/").get("KeyCount"), 0, "an upload in progress is not listed as an object")
    bad = [dict(p) for p in parts]
    bad[1]["ETag"] = '"%s"' % ("0" * 32)
    expect_err("complete with a wrong ETag -> InvalidPart", "InvalidPart", 400, s3.complete_multipart_upload,
               Bucket=B, Key="mp/o", UploadId=uid, MultipartUpload={"Parts": bad})
    expect_err("complete with a missing part number -> InvalidPart", "InvalidPart", 400, s3.complete_multipart_upload,
               Bucket=B, Key="mp/o", UploadId=uid, MultipartUpload={"Parts": parts[:2] + [{"PartNumber": 9, "ETag": parts[0]["ETag"]}]})
    expect_err("complete in the wrong order -> InvalidPartOrder", "InvalidPartOrder", 400, s3.complete_multipart_upload,
               Bucket=B, Key="mp/o", UploadId=uid, MultipartUpload={"Parts": [parts[1], parts[0], parts[2]]})
    r = s3.complete_multipart_upload(Bucket=B, Key="mp/o", UploadId=uid, MultipartUpload={"Parts": parts})
    want = '"%s-3"' % hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
    t.eq(r.get("ETag"), want, "complete_multipart_upload ETag")
    t.eq((r.get("Bucket"), r.get("Key")), (B, "mp/o"), "complete result names bucket and key")
    whole = b"".join(parts_data)
    o = s3.get_object(Bucket=B, Key="mp/o")
    t.ok(o["Body"].read() == whole, "multipart object is byte-exact")
    t.eq((o["ContentType"], o["Metadata"], o["ETag"]), ("application/x-mp", {"m": "1"}, want), "multipart object type, metadata, ETag")
    o = s3.get_object(Bucket=B, Key="mp/o", Range="bytes=%d-%d" % (5 * MB - 3, 5 * MB + 2))
    t.ok(o["Body"].read() == whole[5 * MB - 3:5 * MB + 3], "range across the part boundary")
with t.block("multipart partNumber"):
    h = s3.head_object(Bucket=B, Key="mp/o", PartNumber=2)
    t.eq((h.get("ContentLength"), h.get("PartsCount"), h["ResponseMetadata"]["HTTPStatusCode"]), (5 * MB + 17, 3, 206), "head_object PartNumber=2")
    o = s3.get_object(Bucket=B, Key="mp/o", PartNumber=3)
    t.ok(o["Body"].read() == parts_data[2], "get_object PartNumber=3")
with t.block("multipart errors"):
    expect_err("upload_part after complete -> NoSuchUpload", "NoSuchUpload", 404, s3.upload_part,
               Bucket=B, Key="mp/o", UploadId=uid, PartNumber=4, Body=b"x")

    u2 = s3.create_multipart_upload(Bucket=B, Key="mp/small")["UploadId"]
    p = [s3.upload_part(Bucket=B, Key="mp/small", UploadId=u2, PartNumber=i, Body=b"x" * 1000)["ETag"] for i in (1, 2)]
    expect_err("complete with a small non-last part -> EntityTooSmall", "EntityTooSmall", 400, s3.complete_multipart_upload,
               Bucket=B, Key="mp/small", UploadId=u2,
               MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p[0]}, {"PartNumber": 2, "ETag": p[1]}]})
    expect_err("upload_part number 10001 -> InvalidArgument", "InvalidArgument", 400, s3.upload_part,
               Bucket=B, Key="mp/small", UploadId=u2, PartNumber=10001, Body=b"x")
    t.eq(s3.abort_multipart_upload(Bucket=B, Key="mp/small", UploadId=u2)["ResponseMetadata"]["HTTPStatusCode"], 204, "abort -> 204")
    expect_err("list_parts after abort -> NoSuchUpload", "NoSuchUpload", 404, s3.list_parts, Bucket=B, Key="mp/small", UploadId=u2)
    expect_err("complete after abort -> NoSuchUpload", "NoSuchUpload", 404, s3.complete_multipart_upload, Bucket=B, Key="mp/small",
               UploadId=u2, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p[0]}]})
    expect_err("abort of an unknown upload -> NoSuchUpload", "NoSuchUpload", 404, s3.abort_multipart_upload, Bucket=B, Key="mp/small",
               UploadId="nosuchuploadid")
    u3 = s3.create_multipart_upload(Bucket=B, Key="mp/one")["UploadId"]
    e = s3.upload_part(Bucket=B, Key="mp/one", UploadId=u3, PartNumber=1, Body=b"tiny")["ETag"]
    s3.complete_multipart_upload(Bucket=B, Key="mp/one", UploadId=u3, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    t.eq(s3.get_object(Bucket=B, Key="mp/one")["Body"].read(), b"tiny", "a single small part is allowed")
    u4 = s3.create_multipart_upload(Bucket=B, Key="mp/copy")["UploadId"]
    r = s3.upload_part_copy(Bucket=B, Key="mp/copy", UploadId=u4, PartNumber=1, CopySource={"Bucket": B, "Key": "mp/o"},
                            CopySourceRange="bytes=0-%d" % (5 * MB - 1))
    e1 = r["CopyPartResult"]["ETag"]
    r = s3.upload_part_copy(Bucket=B, Key="mp/copy", UploadId=u4, PartNumber=2, CopySource={"Bucket": B, "Key": "h/obj"})
    e2 = r["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket=B, Key="mp/copy", UploadId=u4,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    t.ok(s3.get_object(Bucket=B, Key="mp/copy")["Body"].read() == whole[:5 * MB] + SMALL, "upload_part_copy with ranges")
    t.eq(s3.list_multipart_uploads(Bucket=B).get("Uploads", []), [], "no uploads left in progress")

with t.block("transfer manager"):
    from boto3.s3.transfer import TransferConfig
    d = rnd(23 * MB + 5)
    cfg = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=4)
    s3.upload_fileobj(io.BytesIO(d), B, "tm/obj", Config=cfg)
    out = io.BytesIO()
    s3.download_fileobj(B, "tm/obj", out, Config=cfg)
    t.ok(out.getvalue() == d, "upload_fileobj/download_fileobj 23 MiB, 4 threads, byte-exact")
    t.ok(s3.head_object(Bucket=B, Key="tm/obj")["ETag"].endswith('-5"'), "transfer manager made 5 parts")

# --------------------------------------------------------------- checksums
CK = {"CRC32": s3raw.b64_crc32, "CRC32C": s3raw.b64_crc32c, "SHA1": s3raw.b64_sha1,
      "SHA256": s3raw.b64_sha256, "CRC64NVME": s3raw.b64_crc64nvme}
with t.block("checksums"):
    d = rnd(200000)
    if NEW:
        r = s3.put_object(Bucket=B, Key="ck/default", Body=d)
        t.eq(r.get("ChecksumCRC32"), s3raw.b64_crc32(d), "put_object (default CRC32 sent) returns ChecksumCRC32")
    else:
        r = s3.put_object(Bucket=B, Key="ck/default", Body=d, ChecksumAlgorithm="CRC32")
        t.eq(r.get("ChecksumCRC32"), s3raw.b64_crc32(d), "put_object ChecksumAlgorithm=CRC32 returns ChecksumCRC32")
    h = s3.head_object(Bucket=B, Key="ck/default", ChecksumMode="ENABLED")
    t.eq(h.get("ChecksumCRC32"), s3raw.b64_crc32(d), "head_object ChecksumMode=ENABLED returns the CRC32 sent")
    o = s3.get_object(Bucket=B, Key="ck/default", ChecksumMode="ENABLED")
    t.ok(o["Body"].read() == d and o.get("ChecksumCRC32") == s3raw.b64_crc32(d), "get_object ChecksumMode=ENABLED (validated by botocore)",
         repr(o.get("ChecksumCRC32")))
    h = s3.head_object(Bucket=B, Key="ck/default")
    t.ok("ChecksumCRC32" not in h, "no checksum without x-amz-checksum-mode")
    members = s3.meta.service_model.operation_model("PutObject").input_shape.members
    for alg, fn in CK.items():
        key = "ck/" + alg
        if "Checksum" + alg not in members:
            t.skip("put_object ChecksumAlgorithm=%s" % alg, "botocore %s does not know %s" % (botocore.__version__, alg))
            continue
        how = "ChecksumAlgorithm=" + alg
        try:
            r = s3.put_object(Bucket=B, Key=key, Body=d, ChecksumAlgorithm=alg)
        except (botocore.exceptions.MissingDependencyException, botocore.exceptions.FlexibleChecksumError) as e:
            # botocore needs awscrt for this one: send the value we computed ourselves
            how = "Checksum%s precomputed (botocore: %s)" % (alg, type(e).__name__)
            r = s3.put_object(Bucket=B, Key=key, Body=d, **{"Checksum" + alg: fn(d)})
        t.eq(r.get("Checksum" + alg), fn(d), "put_object %s returns it" % how)
        h = s3.head_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
        t.eq(h.get("Checksum" + alg), fn(d), "head_object returns the %s" % alg)
        bad = fn(b"something else")
        expect_err("put_object with a wrong %s -> BadDigest" % alg, "BadDigest", 400, s3.put_object,
                   Bucket=B, Key=key + "-bad", Body=d, **{"Checksum" + alg: bad})
        expect_err("nothing stored after the wrong %s" % alg, "404", 404, s3.head_object, Bucket=B, Key=key + "-bad")
    expect_err("put_object with a wrong x-amz-checksum-crc32 over an old object -> BadDigest", "BadDigest", 400,
               s3.put_object, Bucket=B, Key="ck/default", Body=b"new", ChecksumCRC32=s3raw.b64_crc32(b"old"))
    t.ok(s3.get_object(Bucket=B, Key="ck/default")["Body"].read() == d, "the old object is untouched after BadDigest")

    # multipart with CRC32 per part: composite checksum "<crc of crcs>-N"
    pd = [rnd(5 * MB), rnd(1000)]
    uid = s3.create_multipart_upload(Bucket=B, Key="ck/mp", ChecksumAlgorithm="CRC32")["UploadId"]
    ps = []
    for i, x in enumerate(pd, 1):
        r = s3.upload_part(Bucket=B, Key="ck/mp", UploadId=uid, PartNumber=i, Body=x, ChecksumAlgorithm="CRC32")
        t.eq(r.get("ChecksumCRC32"), s3raw.b64_crc32(x), "upload_part %d returns ChecksumCRC32" % i)
        ps.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumCRC32": r.get("ChecksumCRC32")})
    r = s3.complete_multipart_upload(Bucket=B, Key="ck/mp", UploadId=uid, MultipartUpload={"Parts": ps})
    comp = s3raw.b64_crc32(b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in ps)) + "-2"
    h = s3.head_object(Bucket=B, Key="ck/mp", ChecksumMode="ENABLED")
    t.eq(h.get("ChecksumCRC32"), comp, "multipart composite CRC32 checksum")
    t.ok(s3.get_object(Bucket=B, Key="ck/mp")["Body"].read() == b"".join(pd), "multipart with checksums is byte-exact")

# --------------------------------------------------------------- presigned
with t.block("presigned"):
    s3.put_object(Bucket=B, Key="ps/a b+c.txt", Body=SMALL)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "ps/a b+c.txt"}, ExpiresIn=300)
    url_exp = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "ps/a b+c.txt"}, ExpiresIn=1)
    t_exp = time.time()
    url_ov = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "ps/a b+c.txt",
                                                              "ResponseContentDisposition": "attachment; filename=x.txt"}, ExpiresIn=300)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "ps/up load"}, ExpiresIn=300)
    if HAVE_CURL:
        out = curl(url)
        t.eq(out, SMALL + b"200", "presigned GET with curl")
        out = curl("-D", "-", "-o", "/dev/null", url_ov)
        t.ok(b"attachment; filename=x.txt" in out, "presigned GET with response-content-disposition", out[-300:])
        tmpf = "/tmp/cairn-it-put-%s" % SUF
        with open(tmpf, "wb") as f:
            f.write(b"presigned put body")
        out = curl("-T", tmpf, "-o", "/dev/null", put_url)
        os.unlink(tmpf)
        t.eq(out, b"200", "presigned PUT with curl")
        t.eq(s3.get_object(Bucket=B, Key="ps/up load")["Body"].read(), b"presigned put body", "presigned PUT stored the body")
        out = curl("-X", "PUT", "--data-binary", "x", url)  # a GET signature used for PUT
        t.ok(out.endswith(b"403") and b"SignatureDoesNotMatch" in out, "presigned GET URL used for PUT -> 403 SignatureDoesNotMatch", out[-300:])
        sig = url.rsplit("X-Amz-Signature=", 1)[1][:64]
        out = curl(url.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1")))
        t.ok(out.endswith(b"403") and b"<Code>SignatureDoesNotMatch</Code>" in out and b"<RequestId>" in out,
             "presigned with a wrong signature -> 403 SignatureDoesNotMatch", out[-300:])
        time.sleep(max(0, t_exp + 2.5 - time.time()))
        out = curl(url_exp)
        t.ok(out.endswith(b"403") and b"<Code>AccessDenied</Code>" in out, "expired presigned GET -> 403 AccessDenied", out[-300:])
    else:
        for n in range(7):
            t.skip("presigned with curl %d" % n, "no curl")

# ------------------------------------------------------------ credentials
with t.block("auth"):
    expect_err("wrong secret -> SignatureDoesNotMatch", "SignatureDoesNotMatch", 403, client(sk=SK + "x").list_objects_v2, Bucket=B)
    expect_err("wrong secret on PUT -> SignatureDoesNotMatch", "SignatureDoesNotMatch", 403, client(sk=SK + "x").put_object,
               Bucket=B, Key="auth/x", Body=b"x")
    expect_err("unknown access key -> InvalidAccessKeyId", "InvalidAccessKeyId", 403, client(ak="AKIANOSUCHKEY0000000").list_buckets)
    anon = boto3.session.Session().client("s3", endpoint_url=EP, region_name="us-east-1",
                                          config=Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}))
    anon.meta.events.register("after-call.s3", after_call)
    expect_err("anonymous GET of a private object -> AccessDenied", "AccessDenied", 403, anon.get_object, Bucket=B, Key="h/obj")
    expect_err("anonymous ListBuckets -> AccessDenied", "AccessDenied", 403, anon.list_buckets)

# ------------------------------------------------------------ awkward keys
AWK = ["sp ace", "plus+sign", "pct%25", "pct%2Fenc", "amp&er", "\u00e9t\u00e9", "\u65e5\u672c/\u8a9e",
       "q?x#y", "semi;colon=eq", "tilde~*()!'", "back\\slash", "dot/./x", "dots/../x", "trailing/", "//double",
       "tab\tnewline\nend", "\U0001F600 emoji", "<xml>&\"quotes\"", "k" * 1024]
def awk_one(k):
    """put, get, head, list and copy one awkward key; long keys go in as they are."""
    kk = "awk/" + k if len(k) < 1000 else k
    d = ("body of " + k).encode("utf-8")
    s3.put_object(Bucket=B, Key=kk, Body=d)
    ok = s3.get_object(Bucket=B, Key=kk)["Body"].read() == d
    ok = ok and s3.head_object(Bucket=B, Key=kk)["ContentLength"] == len(d)
    lst = [o["Key"] for o in s3.list_objects_v2(Bucket=B, Prefix=kk).get("Contents", [])]
    s3.copy_object(Bucket=B, Key=kk + ".c" if len(k) < 1000 else "awk/long.c", CopySource={"Bucket": B, "Key": kk})
    t.ok(ok and kk in lst, "key %r: put, get, head, list, copy" % k[:24], "listed: %r" % lst[:3])


with t.block("awkward keys"):
    for k in AWK:
        with t.block("key %r" % k[:24]):
            awk_one(k)
    r = s3.list_objects_v2(Bucket=B, Prefix="awk/")
    t.eq(r["KeyCount"], 2 * (len(AWK) - 1) + 1, "all awkward keys listed once")
    r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": o["Key"]} for o in r["Contents"]]})
    t.eq(len(r.get("Deleted", [])), 2 * (len(AWK) - 1) + 1, "delete_objects with awkward keys")
    t.eq(s3.list_objects_v2(Bucket=B, Prefix="awk/")["KeyCount"], 0, "all deleted")
    expect_err("1025-byte key -> KeyTooLongError", "KeyTooLongError", 400, s3.put_object, Bucket=B, Key="k" * 1025, Body=b"x")
    expect_err("1025-byte key of 2-byte chars -> KeyTooLongError", "KeyTooLongError", 400, s3.put_object, Bucket=B,
               Key="\u00e9" * 513, Body=b"x")

with t.block("more names"):
    nfc, nfd = "norm/caf\u00e9", "norm/cafe\u0301"
    s3.put_object(Bucket=B, Key=nfc, Body=b"nfc")
    s3.put_object(Bucket=B, Key=nfd, Body=b"nfd")
    t.eq((s3.get_object(Bucket=B, Key=nfc)["Body"].read(), s3.get_object(Bucket=B, Key=nfd)["Body"].read()),
         (b"nfc", b"nfd"), "NFC and NFD spellings of a key are two objects (keys are bytes)")
    for name in ["c%s" % SUF[:2], "a.b-c.%s" % SUF, ("edge-%s-" % SUF).ljust(62, "x") + "9"]:
        r = s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="k", Body=b"v")
        s3.delete_object(Bucket=name, Key="k")
        s3.delete_bucket(Bucket=name)
        t.ok(r["ResponseMetadata"]["HTTPStatusCode"] == 200, "valid bucket name %r (%d chars): create, use, delete" % (name, len(name)))
    name = "again-%s" % SUF
    s3.create_bucket(Bucket=name)
    s3.delete_bucket(Bucket=name)
    s3.create_bucket(Bucket=name)
    expect_err("a recreated bucket starts empty", "NoSuchKey", 404, s3.get_object, Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)

# ----------------------------------------------------------------- cleanup
with t.block("cleanup"):
    expect_err("delete_bucket not empty -> BucketNotEmpty", "BucketNotEmpty", 409, s3.delete_bucket, Bucket=B)
    while True:
        r = s3.list_objects_v2(Bucket=B)
        if not r.get("Contents"):
            break
        s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": o["Key"]} for o in r["Contents"]], "Quiet": True})
    for u in s3.list_multipart_uploads(Bucket=B).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=B, Key=u["Key"], UploadId=u["UploadId"])
    t.eq(s3.delete_bucket(Bucket=B)["ResponseMetadata"]["HTTPStatusCode"], 204, "delete_bucket -> 204")
    expect_err("deleted bucket is gone", "404", 404, s3.head_bucket, Bucket=B)

t.ok(not audit, "every response had x-amz-request-id; every error body was XML with Code and RequestId",
     *audit[:15])
sys.exit(t.done())

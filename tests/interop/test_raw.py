#!/usr/bin/env python3
# tests/interop/test_raw.py - hand-signed requests (s3raw.py) for what SDKs won't send, as TAP:
# malformed Authorization, clock skew, the SignatureDoesNotMatch body, aws-chunked bodies
# (signed chunks, unsigned with a checksum trailer), raw list XML with encoding-type=url,
# virtual-hosted style and X-Forwarded-Host (S3_VHOST_ENDPOINT: a server started with
# --domain S3_VHOST_DOMAIN --trust-proxy). Every response must carry x-amz-request-id and every
# error (but HEAD) an XML body with Code and RequestId.
import datetime
import hashlib
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
import s3raw  # noqa: E402
from s3raw import obj_path  # noqa: E402

t = TAP()
EP = os.environ["S3_ENDPOINT"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
VEP = os.environ.get("S3_VHOST_ENDPOINT")
VDOM = os.environ.get("S3_VHOST_DOMAIN", "localhost")
raw = s3raw.S3Raw(EP, AK, SK)
B = "cairn-it-raw-" + os.urandom(4).hex()
audit = []


def R(method, path, name=None, **kw):
    """raw.request plus the audit of request id and error body."""
    r = raw_for(kw.pop("via", None)).request(method, path, **kw)
    audit_resp(r, method, name or "%s %s" % (method, path[:60]))
    return r


def raw_for(via):
    return via or raw


def audit_resp(r, method, name):
    if "x-amz-request-id" not in r.headers:
        audit.append("%s -> HTTP %d without x-amz-request-id" % (name, r.status))
    if r.status >= 400 and method != "HEAD":
        e = r.error()
        if not e.get("Code") or not e.get("RequestId"):
            audit.append("%s -> HTTP %d body is not <Error> with Code and RequestId: %r" % (name, r.status, r.body[:200]))


def is_err(r, code, status, name):
    e = r.error()
    return t.ok(r.status == status and e.get("Code") == code, name,
                "got HTTP %d %s: %s" % (r.status, e.get("Code"), e.get("Message") or r.body[:200]),
                "want HTTP %d %s" % (status, code))


def is_ok(r, name, status=200):
    return t.ok(r.status == status, name, "got %r" % (r,))


def xml_texts(body, tag):
    root = ET.fromstring(body)
    return [el.text or "" for el in root.iter() if el.tag.split("}")[-1] == tag]


now = datetime.datetime.now(datetime.timezone.utc)
DATA = b"raw body \x00\xff\n"

with t.block("basics"):
    is_ok(R("PUT", obj_path(B)), "PUT bucket")
    r = R("GET", "/")
    t.ok(r.status == 200 and b"<ListAllMyBucketsResult" in r.body and B.encode() in r.body, "GET / lists buckets", repr(r))
    t.ok(b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' in r.body, "ListAllMyBucketsResult has the S3 namespace")
    r = R("GET", obj_path(B), query=[("location", None)])
    t.ok(r.status == 200 and b"LocationConstraint" in r.body, "GET ?location (bare subresource)", repr(r))
    is_ok(R("PUT", obj_path(B, "k1"), body=DATA, headers={"content-type": "application/x-raw"}), "PUT object (signed payload)")
    r = R("GET", obj_path(B, "k1"))
    t.ok(r.status == 200 and r.body == DATA, "GET object", repr(r))
    t.eq(r.headers.get("etag"), '"%s"' % hashlib.md5(DATA).hexdigest(), "ETag header")
    t.ok(r.headers.get("last-modified", "").endswith("GMT"), "Last-Modified is an RFC 1123 date", r.headers.get("last-modified"))
    t.eq(r.headers.get("content-type"), "application/x-raw", "Content-Type stored")
    r = R("HEAD", obj_path(B, "nope"))
    t.ok(r.status == 404 and r.body == b"" and "x-amz-request-id" in r.headers, "HEAD 404 has no body, has x-amz-request-id", repr(r))
    is_ok(R("PUT", obj_path(B, "unsigned"), body=DATA, payload_hash="UNSIGNED-PAYLOAD"), "PUT with UNSIGNED-PAYLOAD")
    r = R("GET", obj_path(B, "unsigned"))
    t.ok(r.body == DATA, "UNSIGNED-PAYLOAD body stored", repr(r))
    r = R("PUT", obj_path(B, "sha-mismatch"), body=DATA, payload_hash=hashlib.sha256(b"other").hexdigest())
    is_err(r, "XAmzContentSHA256Mismatch", 400, "x-amz-content-sha256 not matching the body -> XAmzContentSHA256Mismatch")
    is_err(R("GET", obj_path(B, "sha-mismatch")), "NoSuchKey", 404, "nothing stored after the mismatch")
    r = R("PUT", obj_path(B, "k-meta"), body=DATA, headers={"x-amz-meta-big": "a" * 2100})
    is_err(r, "MetadataTooLarge", 400, "user metadata over 2 KB -> MetadataTooLarge")
    # The largest headers S3 takes: a 1024-byte key of 3-byte characters
    # (3072 bytes percent-encoded) in the path and in x-amz-copy-source,
    # and 2 KB of user metadata, in one request.
    big_key = "\u20ac" * 341 + "k"
    big_meta = {"x-amz-meta-m%02d" % i: "v" * 60 for i in range(30)}
    is_ok(R("PUT", obj_path(B, big_key), body=DATA, headers=big_meta), "PUT: 1024-byte key, 2 KB of metadata")
    hdrs = dict(big_meta, **{"x-amz-copy-source": "/%s/%s" % (B, s3raw.uri_encode(big_key)),
                             "x-amz-metadata-directive": "REPLACE"})
    r = R("PUT", obj_path(B, big_key[:-1] + "c"), headers=hdrs)
    t.ok(r.status == 200 and b"<CopyObjectResult" in r.body, "CopyObject with the largest headers", repr(r))
    r = R("HEAD", obj_path(B, big_key[:-1] + "c"))
    t.ok(r.status == 200 and r.headers.get("x-amz-meta-m29") == "v" * 60, "the copy has the 2 KB of metadata", repr(r))
    r = R("POST", obj_path(B, "mpu"), query=[("uploads", None)])
    t.ok(r.status == 200 and xml_texts(r.body, "UploadId"), "POST ?uploads (bare) starts a multipart upload", repr(r))
    if r.status == 200:
        uid = xml_texts(r.body, "UploadId")[0]
        is_ok(R("DELETE", obj_path(B, "mpu"), query=[("uploadId", uid)]), "DELETE ?uploadId aborts", 204)

with t.block("authorization"):
    r = R("GET", obj_path(B, "k1"), sign=False)
    is_err(r, "AccessDenied", 403, "no Authorization -> AccessDenied")
    r = R("GET", obj_path(B, "k1"), sign=False, headers={"authorization": "Foo bar"})
    t.ok(r.status == 400 and r.error().get("Code") in ("InvalidArgument", "AuthorizationHeaderMalformed")
         or r.status == 403 and r.error().get("Code") == "AccessDenied",
         "unknown Authorization scheme -> 400 InvalidArgument (or 403 AccessDenied)", repr(r))
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    base_h = {"x-amz-date": amz, "x-amz-content-sha256": s3raw.EMPTY_SHA256}
    for bad, what in [("AWS4-HMAC-SHA256 garbage", "no Credential"),
                      ("AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/s3/aws4_request" % (AK, amz[:8]), "no SignedHeaders/Signature"),
                      ("AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=host, Signature=%s" % (AK, "0" * 64), "Credential without scope")]:
        r = R("GET", obj_path(B, "k1"), sign=False, headers=dict(base_h, authorization=bad))
        is_err(r, "AuthorizationHeaderMalformed", 400, "Authorization with %s -> AuthorizationHeaderMalformed" % what)
    r = R("GET", obj_path(B, "k1"), region="eu-west-1")
    is_err(r, "AuthorizationHeaderMalformed", 400, "credential scope with the wrong region -> AuthorizationHeaderMalformed")
    r = R("GET", obj_path(B, "k1"), sign=False, headers={"authorization": "AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/ec2/aws4_request, "
                                                           "SignedHeaders=host;x-amz-date, Signature=%s" % (AK, amz[:8], "0" * 64),
                                                           "x-amz-date": amz, "x-amz-content-sha256": s3raw.EMPTY_SHA256})
    is_err(r, "AuthorizationHeaderMalformed", 400, "credential scope for another service -> AuthorizationHeaderMalformed")
    for minutes in (-20, 16):
        r = R("GET", obj_path(B, "k1"), date=now + datetime.timedelta(minutes=minutes))
        is_err(r, "RequestTimeTooSkewed", 403, "x-amz-date %+d minutes -> RequestTimeTooSkewed" % minutes)
    r = R("GET", obj_path(B, "k1"), date=now - datetime.timedelta(minutes=10))
    is_ok(r, "x-amz-date 10 minutes old is accepted")
    r = R("GET", obj_path(B, "k1"), access="AKIDOESNOTEXIST00000")
    is_err(r, "InvalidAccessKeyId", 403, "unknown access key -> InvalidAccessKeyId")

    # SignatureDoesNotMatch tells the client what the server signed; it must equal ours.
    key = "sig/a b+c%2F&é"
    r = R("PUT", obj_path(B, key), query=[("x-id", "PutObject")], body=DATA,
          headers={"content-type": "text/plain", "x-amz-meta-A": "  spaced   value "}, secret=SK + "x")
    is_err(r, "SignatureDoesNotMatch", 403, "wrong secret -> SignatureDoesNotMatch")
    e = r.error()
    t.eq(e.get("CanonicalRequest"), raw.last_creq, "SignatureDoesNotMatch <CanonicalRequest> equals the client's")
    t.eq(e.get("StringToSign"), raw.last_sts, "SignatureDoesNotMatch <StringToSign> equals the client's")
    t.eq(e.get("AWSAccessKeyId"), AK, "SignatureDoesNotMatch <AWSAccessKeyId>")
    t.ok(len(e.get("SignatureProvided", "")) == 64, "SignatureDoesNotMatch <SignatureProvided>", repr(e.get("SignatureProvided")))
    r = R("PUT", obj_path(B, key), query=[("x-id", "PutObject")], body=DATA,
          headers={"content-type": "text/plain", "x-amz-meta-A": "  spaced   value "})
    is_ok(r, "the same request with the right secret")
    r = R("GET", obj_path(B, key), query=[("response-content-type", "a/b c"), ("x-odd", "!*'();:@&=+$,/?#[]")])
    t.ok(r.status == 200 and r.headers.get("content-type") == "a/b c", "query values with reserved characters are signed right", repr(r))
    r = R("GET", obj_path(B, "k1"), headers={"x-amz-date": "garbage"}, sign=False)
    t.ok(r.status in (400, 403), "unsigned request with a garbage x-amz-date is refused", repr(r))

with t.block("presigned"):
    url = raw.presign("GET", obj_path(B, key), expires=60)
    u = urllib.parse.urlsplit(url)
    r = raw.send("GET", u.path + "?" + u.query, {"host": raw.netloc})
    audit_resp(r, "GET", "presigned GET")
    t.ok(r.status == 200 and r.body == DATA, "presigned GET (hand-made) of an awkward key", repr(r))
    url = raw.presign("GET", obj_path(B, key), expires=604801)
    u = urllib.parse.urlsplit(url)
    r = raw.send("GET", u.path + "?" + u.query, {"host": raw.netloc})
    audit_resp(r, "GET", "presigned > 7 days")
    is_err(r, "AuthorizationQueryParametersError", 400, "X-Amz-Expires over 7 days -> AuthorizationQueryParametersError")
    url = raw.presign("GET", obj_path(B, key), expires=60, date=now - datetime.timedelta(minutes=5))
    u = urllib.parse.urlsplit(url)
    r = raw.send("GET", u.path + "?" + u.query, {"host": raw.netloc})
    audit_resp(r, "GET", "presigned expired")
    is_err(r, "AccessDenied", 403, "presigned URL past X-Amz-Date + X-Amz-Expires -> AccessDenied")

with t.block("aws-chunked"):
    D = os.urandom(200000)
    r = raw.put_chunked_signed(obj_path(B, "chunked/signed"), D)
    audit_resp(r, "PUT", "chunked signed")
    is_ok(r, "PUT STREAMING-AWS4-HMAC-SHA256-PAYLOAD, 64 KiB chunks")
    r = R("GET", obj_path(B, "chunked/signed"))
    t.ok(r.body == D, "signed-chunk body stored byte-exact (no chunk framing)", "got %d bytes" % len(r.body))
    t.eq(r.headers.get("etag"), '"%s"' % hashlib.md5(D).hexdigest(), "signed-chunk ETag is the MD5 of the data")
    t.ok("aws-chunked" not in r.headers.get("content-encoding", ""), "aws-chunked is not stored as Content-Encoding",
         r.headers.get("content-encoding"))
    r = raw.put_chunked_signed(obj_path(B, "chunked/bad"), D, corrupt_chunk=1)
    audit_resp(r, "PUT", "chunked bad sig")
    is_err(r, "SignatureDoesNotMatch", 403, "a bad chunk signature -> SignatureDoesNotMatch")
    is_err(R("GET", obj_path(B, "chunked/bad")), "NoSuchKey", 404, "nothing stored after a bad chunk signature")
    r = raw.put_chunked_signed(obj_path(B, "chunked/tiny"), b"tiny", chunk=8192)
    audit_resp(r, "PUT", "chunked tiny")
    is_ok(r, "signed chunks: one small chunk")
    r = raw.put_chunked_trailer(obj_path(B, "chunked/trailer"), D)
    audit_resp(r, "PUT", "chunked trailer")
    is_ok(r, "PUT STREAMING-UNSIGNED-PAYLOAD-TRAILER with x-amz-checksum-crc32 trailer")
    r = R("HEAD", obj_path(B, "chunked/trailer"), headers={"x-amz-checksum-mode": "ENABLED"})
    t.eq(r.headers.get("x-amz-checksum-crc32"), s3raw.b64_crc32(D), "the trailer checksum is stored and returned")
    r = R("GET", obj_path(B, "chunked/trailer"))
    t.ok(r.body == D, "trailer body stored byte-exact", "got %d bytes" % len(r.body))
    r = raw.put_chunked_trailer(obj_path(B, "chunked/trailer-bad"), D, checksum=s3raw.b64_crc32(b"x"))
    audit_resp(r, "PUT", "chunked trailer bad")
    is_err(r, "BadDigest", 400, "a wrong trailer checksum -> BadDigest")
    is_err(R("GET", obj_path(B, "chunked/trailer-bad")), "NoSuchKey", 404, "nothing stored after a wrong trailer")

with t.block("list XML"):
    keys = ["enc/a b", "enc/c+d", "enc/\u00e9", "enc/x&y<z>", "enc/t\tab"]
    for k in keys:
        R("PUT", obj_path(B, k), body=b"x")
    r = R("GET", obj_path(B), query=[("list-type", "2"), ("prefix", "enc/"), ("encoding-type", "url")])
    got = xml_texts(r.body, "Key")
    t.ok(all(" " not in k and "\t" not in k and all(ord(c) < 128 for c in k) for k in got),
         "v2 encoding-type=url: keys in the XML are URL-encoded", repr(got))
    t.eq(sorted(urllib.parse.unquote_plus(k) for k in got), sorted(keys), "v2 encoding-type=url: keys decode back")
    t.eq(xml_texts(r.body, "EncodingType"), ["url"], "v2 <EncodingType>url")
    r = R("GET", obj_path(B), query=[("list-type", "2"), ("prefix", "enc/")])
    t.eq(sorted(xml_texts(r.body, "Key")), sorted(keys), "v2 without encoding: keys are XML-escaped text")
    t.ok(b"<ListBucketResult" in r.body and b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' in r.body,
         "ListBucketResult with the S3 namespace")
    r = R("GET", obj_path(B), query=[("prefix", "enc/"), ("encoding-type", "url"), ("delimiter", " ")])
    t.ok(r.status == 200 and [urllib.parse.unquote_plus(p) for p in xml_texts(r.body, "Prefix")][-1:] == ["enc/a "],
         "v1 encoding-type=url encodes CommonPrefixes too", repr(xml_texts(r.body, "Prefix")))
    r = R("GET", obj_path(B), query=[("list-type", "2"), ("max-keys", "abc")])
    is_err(r, "InvalidArgument", 400, "max-keys=abc -> InvalidArgument")
    r = R("GET", obj_path(B), query=[("list-type", "3")])
    t.ok(r.status == 400, "list-type=3 -> 400", repr(r))

with t.block("bad bodies"):
    bad = b"<Delete><Object><Key>k1</Key></Object"
    r = R("POST", obj_path(B), query=[("delete", None)], body=bad, headers={"content-md5": s3raw.b64_md5(bad)})
    is_err(r, "MalformedXML", 400, "DeleteObjects with malformed XML -> MalformedXML")
    r = R("POST", obj_path(B, "mpx"), query=[("uploads", None)])
    uid = xml_texts(r.body, "UploadId")[0]
    r = R("POST", obj_path(B, "mpx"), query=[("uploadId", uid)], body=b"<CompleteMultipartUpload><Part>")
    is_err(r, "MalformedXML", 400, "CompleteMultipartUpload with malformed XML -> MalformedXML")
    r = R("POST", obj_path(B, "mpx"), query=[("uploadId", uid)], body=b"<CompleteMultipartUpload></CompleteMultipartUpload>")
    is_err(r, "MalformedXML", 400, "CompleteMultipartUpload with no parts -> MalformedXML")
    R("DELETE", obj_path(B, "mpx"), query=[("uploadId", uid)])
    for m in ("GET", "HEAD"):
        r = R(m, obj_path(B, "k1"), query=[("versionId", "not-a-version")])
        t.ok(r.status in (400, 404) and (m == "HEAD" or r.error().get("Code") in ("InvalidArgument", "NoSuchVersion")),
             "%s with an unknown versionId -> 400 InvalidArgument or 404 NoSuchVersion, not the current object" % m, repr(r))
    r = R("DELETE", obj_path(B, "k1"), query=[("versionId", "not-a-version")])
    g = R("GET", obj_path(B, "k1"))
    t.ok(g.status == 200 and g.body == DATA, "DELETE with an unknown versionId leaves the current object alone",
         "DELETE: %r" % r, "then GET: %r" % g)
    R("PUT", obj_path(B, "k1"), body=DATA)
    dx = b"<Delete><Object><Key>k1</Key><VersionId>not-a-version</VersionId></Object></Delete>"
    r = R("POST", obj_path(B), query=[("delete", None)], body=dx, headers={"content-md5": s3raw.b64_md5(dx)})
    g = R("GET", obj_path(B, "k1"))
    t.ok(g.status == 200 and g.body == DATA, "DeleteObjects with an unknown VersionId leaves the current object alone",
         "DeleteObjects: %r" % r, "then GET: %r" % g)
    R("PUT", obj_path(B, "k1"), body=DATA)
    r = R("GET", obj_path(B, "k1"), query=[("versionId", "null")])
    t.ok(r.status == 200 and r.body == DATA, "GET versionId=null is the current object of an unversioned bucket", repr(r))
    r = R("PUT", obj_path(B, "k1"), query=[("partNumber", "1"), ("uploadId", "no-such-upload")], body=b"x")
    is_err(r, "NoSuchUpload", 404, "UploadPart to an unknown uploadId -> NoSuchUpload")

if VEP:
    vr = s3raw.S3Raw(VEP, AK, SK)
    vport = urllib.parse.urlsplit(VEP).port
    with t.block("virtual-hosted"):
        is_ok(R("PUT", obj_path(B), via=vr), "vhost server: PUT bucket path-style")
        vh = "%s.%s:%d" % (B, VDOM, vport)
        is_ok(R("PUT", "/vk", via=vr, host=vh, body=b"vhost body"), "PUT object virtual-hosted (Host: bucket.%s:port)" % VDOM)
        r = R("GET", obj_path(B, "vk"), via=vr)
        t.ok(r.status == 200 and r.body == b"vhost body", "the vhost PUT is visible path-style", repr(r))
        r = R("GET", "/vk", via=vr, host="%s.%s" % (B, VDOM))
        t.ok(r.status == 200 and r.body == b"vhost body", "GET virtual-hosted without a port in Host", repr(r))
        r = R("GET", "/", via=vr, host=vh, query=[("list-type", "2")])
        t.ok(r.status == 200 and xml_texts(r.body, "Name") == [B] and xml_texts(r.body, "Key") == ["vk"],
             "ListObjectsV2 virtual-hosted (GET / on bucket host)", repr(r))
        r = R("GET", "/", via=vr, host="%s:%d" % (VDOM, vport))
        t.ok(r.status == 200 and b"<ListAllMyBucketsResult" in r.body, "GET / on the bare domain is ListBuckets", repr(r))
        r = R("GET", "/" + "a%20key%2Bplus", via=vr, host=vh)
        is_err(r, "NoSuchKey", 404, "vhost GET of a missing key -> NoSuchKey")
        r = R("PUT", "/a%20key%2Bplus%C3%A9", via=vr, host=vh, body=b"k")
        r = R("GET", obj_path(B, "a key+plus\u00e9"), via=vr)
        t.ok(r.status == 200 and r.body == b"k", "vhost awkward key maps to the same object path-style", repr(r))
        r = R("GET", "/vk", via=vr, host="nosuchbucket-%s.%s:%d" % (os.urandom(3).hex(), VDOM, vport))
        is_err(r, "NoSuchBucket", 404, "vhost of a missing bucket -> NoSuchBucket")
        # X-Forwarded-Host: the client signed for the proxy's host; cairn sees its own address.
        fh = "%s:8443" % VDOM
        r = R("GET", obj_path(B, "vk"), via=vr, sign_host=fh, extra_unsigned={"x-forwarded-host": fh})
        t.ok(r.status == 200 and r.body == b"vhost body", "--trust-proxy: X-Forwarded-Host is the signed host", repr(r))
        r = R("GET", "/vk", via=vr, sign_host="%s.%s" % (B, fh), extra_unsigned={"x-forwarded-host": "%s.%s" % (B, fh)})
        t.ok(r.status == 200 and r.body == b"vhost body", "--trust-proxy: virtual-hosted through X-Forwarded-Host", repr(r))
        r = R("GET", obj_path(B, "k1"), sign_host=fh, extra_unsigned={"x-forwarded-host": fh})
        is_err(r, "SignatureDoesNotMatch", 403, "without --trust-proxy X-Forwarded-Host is ignored -> SignatureDoesNotMatch")
        for k in ("vk", "a key+plus\u00e9"):
            R("DELETE", obj_path(B, k), via=vr)
        is_ok(R("DELETE", obj_path(B), via=vr), "vhost server: DELETE bucket", 204)
else:
    t.skip("virtual-hosted style", "S3_VHOST_ENDPOINT is not set (run.sh starts a server with --domain for it)")

with t.block("cleanup"):
    r = R("GET", obj_path(B), query=[("list-type", "2")])
    for k in xml_texts(r.body, "Key"):
        R("DELETE", obj_path(B, k))
    is_ok(R("DELETE", obj_path(B)), "DELETE bucket", 204)

t.ok(not audit, "every response had x-amz-request-id; every error body was XML with Code and RequestId", *audit[:15])
sys.exit(t.done())

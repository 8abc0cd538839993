# tests/interop/s3raw.py - raw S3 requests over http.client, signed by hand with SigV4, for
# what SDKs won't send: odd Authorization headers, skewed clocks, virtual-hosted Host headers,
# X-Forwarded-Host, aws-chunked bodies with chunk signatures or trailers. Standard library only.
# Also: crc32c/crc64nvme in pure python, and an XML error parser.
import base64
import datetime
import hashlib
import hmac
import http.client
import urllib.parse
import xml.etree.ElementTree as ET
import zlib

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def uri_encode(s, slash=False):
    """RFC 3986 encoding as SigV4 wants it; '/' kept when slash is true."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return urllib.parse.quote(s, safe="-_.~" + ("/" if slash else ""))


def obj_path(bucket, key=None):
    """Path-style request path for bucket (and key), URI-encoded once."""
    if key is None:
        return "/" + bucket
    return "/" + bucket + "/" + uri_encode(key, slash=True)


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, datestamp, region, service="s3"):
    k = _hmac(("AWS4" + secret).encode("utf-8"), datestamp)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


class Resp:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # dict, lower-case names
        self.body = body

    def error(self):
        """The <Error> document as a dict of child tag -> text ({} if none)."""
        return parse_error(self.body)

    def __repr__(self):
        return "HTTP %d %s %r" % (self.status, self.reason, self.body[:300])


def parse_error(body):
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return {}
    if root.tag.split("}")[-1] != "Error":
        return {}
    return {c.tag.split("}")[-1]: (c.text or "") for c in root}


def canonical_query(query):
    pairs = sorted((uri_encode(k), uri_encode("" if v is None else v)) for k, v in query)
    return "&".join("%s=%s" % kv for kv in pairs)


def request_query(query):
    out = []
    for k, v in query:
        out.append(uri_encode(k) if v is None else "%s=%s" % (uri_encode(k), uri_encode(v)))
    return "&".join(out)


class S3Raw:
    """One endpoint plus credentials. request() signs (unless sign=False) and sends."""

    def __init__(self, endpoint, access, secret, region="us-east-1", timeout=60):
        u = urllib.parse.urlsplit(endpoint)
        self.host = u.hostname
        self.port = u.port or 80
        self.netloc = u.netloc
        self.access = access
        self.secret = secret
        self.region = region
        self.timeout = timeout
        self.last_sts = None
        self.last_creq = None

    def sign_headers(self, method, path, query, headers, payload_hash, host, date=None,
                     access=None, secret=None, region=None):
        """Adds x-amz-date, x-amz-content-sha256, host and Authorization to headers (a dict
        with lower-case names) in place; returns (signature, scope, amzdate, key)."""
        date = date or datetime.datetime.now(datetime.timezone.utc)
        amzdate = date.strftime("%Y%m%dT%H%M%SZ")
        region = region or self.region
        scope = "%s/%s/s3/aws4_request" % (amzdate[:8], region)
        headers["host"] = host
        headers["x-amz-date"] = amzdate
        headers["x-amz-content-sha256"] = payload_hash
        signed = sorted(k.lower() for k in headers if k.lower() not in ("authorization", "user-agent"))
        canon_h = "".join("%s:%s\n" % (k, " ".join(str(headers[k]).strip().split())) for k in signed)
        creq = "\n".join([method, path, canonical_query(query), canon_h, ";".join(signed), payload_hash])
        sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(creq.encode()).hexdigest()])
        key = signing_key(secret or self.secret, amzdate[:8], region)
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
            access or self.access, scope, ";".join(signed), sig)
        self.last_creq, self.last_sts = creq, sts
        return sig, scope, amzdate, key

    def request(self, method, path, query=(), headers=None, body=b"", sign=True, host=None,
                payload_hash=None, date=None, access=None, secret=None, region=None,
                extra_unsigned=None, sign_host=None):
        """Sends one request. path is the URI-encoded path; query a list of (name, value or
        None); headers a dict (names any case). host is the Host header (default: the endpoint's
        host:port); sign_host, if given, is the host that goes into the signature instead (as
        a client behind a proxy signs). extra_unsigned headers are added after signing."""
        query = list(query)
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        if isinstance(body, str):
            body = body.encode("utf-8")
        host = host or self.netloc
        if sign:
            ph = payload_hash or hashlib.sha256(body).hexdigest()
            self.sign_headers(method, path, query, hdrs, ph, sign_host or host, date, access, secret, region)
        hdrs["host"] = host
        for k, v in (extra_unsigned or {}).items():
            hdrs[k.lower()] = v
        return self.send(method, path + ("?" + request_query(query) if query else ""), hdrs, body)

    def send(self, method, target, hdrs, body=b""):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if body or method in ("PUT", "POST"):
                if "content-length" not in hdrs:
                    conn.putheader("content-length", str(len(body)))
            conn.endheaders(body if body else None)
            r = conn.getresponse()
            data = r.read()
            return Resp(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def presign(self, method, path, expires=300, query=(), host=None, date=None):
        """A presigned URL (query-string SigV4) for path."""
        date = date or datetime.datetime.now(datetime.timezone.utc)
        amzdate = date.strftime("%Y%m%dT%H%M%SZ")
        scope = "%s/%s/s3/aws4_request" % (amzdate[:8], self.region)
        host = host or self.netloc
        q = list(query) + [("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
                           ("X-Amz-Credential", "%s/%s" % (self.access, scope)),
                           ("X-Amz-Date", amzdate), ("X-Amz-Expires", str(expires)),
                           ("X-Amz-SignedHeaders", "host")]
        creq = "\n".join([method, path, canonical_query(q), "host:%s\n" % host, "host", "UNSIGNED-PAYLOAD"])
        sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(creq.encode()).hexdigest()])
        sig = hmac.new(signing_key(self.secret, amzdate[:8], self.region), sts.encode(),
                       hashlib.sha256).hexdigest()
        q.append(("X-Amz-Signature", sig))
        return "http://%s%s?%s" % (host, path, request_query(q))

    def put_chunked_signed(self, path, data, chunk=65536, corrupt_chunk=None, headers=None):
        """PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD (aws-chunked, a signature per chunk).
        corrupt_chunk=i sends chunk i with a wrong signature."""
        chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
        enc_len = sum(len("%x;chunk-signature=%s\r\n" % (len(c), "0" * 64)) + len(c) + 2 for c in chunks)
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        hdrs.update({"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
                     "content-length": str(enc_len)})
        seed, scope, amzdate, key = self.sign_headers("PUT", path, [], hdrs,
                                                      "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", self.netloc)
        prev, out = seed, []
        for i, c in enumerate(chunks):
            sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amzdate, scope, prev, EMPTY_SHA256,
                             hashlib.sha256(c).hexdigest()])
            sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
            prev = sig
            if corrupt_chunk == i:
                sig = ("0" if sig[0] != "0" else "1") + sig[1:]
            out.append(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(c), sig.encode(), c))
        return self.send("PUT", path, hdrs, b"".join(out))

    def put_chunked_trailer(self, path, data, chunk=65536, checksum=None, headers=None):
        """PUT with STREAMING-UNSIGNED-PAYLOAD-TRAILER and an x-amz-checksum-crc32 trailer, as the
        JS SDK sends streams. checksum overrides the (correct) trailer value."""
        checksum = checksum or b64_crc32(data)
        chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        body += b"0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % checksum.encode()
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        hdrs.update({"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
                     "x-amz-trailer": "x-amz-checksum-crc32", "content-length": str(len(body))})
        self.sign_headers("PUT", path, [], hdrs, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", self.netloc)
        return self.send("PUT", path, hdrs, body)


def put_multipart(raw, bucket, key, parts, headers=None):
    """A whole multipart upload of parts (bytes each) through S3Raw raw; headers go on
    CreateMultipartUpload. Raises RuntimeError on any non-200 answer."""
    r = raw.request("POST", obj_path(bucket, key), query=[("uploads", None)], headers=headers or {})
    if r.status != 200:
        raise RuntimeError("create multipart upload: %r" % r)
    uid = ET.fromstring(r.body).find("{*}UploadId").text
    etags = []
    for i, p in enumerate(parts, 1):
        r = raw.request("PUT", obj_path(bucket, key), query=[("partNumber", str(i)), ("uploadId", uid)], body=p)
        if r.status != 200:
            raise RuntimeError("upload part %d: %r" % (i, r))
        etags.append(r.headers["etag"])
    xml = "<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % "".join(
        "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>" % (i, e) for i, e in enumerate(etags, 1))
    r = raw.request("POST", obj_path(bucket, key), query=[("uploadId", uid)], body=xml)
    if r.status != 200 or b"<Error>" in r.body:
        raise RuntimeError("complete multipart upload: %r" % r)


# ---------------------------------------------------------------- checksums
def b64_crc32(data):
    return base64.b64encode((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")).decode()


def _table(poly, bits):
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _table(0x82F63B78, 32)
_CRC64NVME = _table(0x9A6C9329AC4BC9B5, 64)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc64nvme(data, crc=0):
    m = 0xFFFFFFFFFFFFFFFF
    crc ^= m
    t = _CRC64NVME
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ m


def b64_crc32c(data):
    return base64.b64encode(crc32c(data).to_bytes(4, "big")).decode()


def b64_crc64nvme(data):
    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode()


def b64_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def b64_sha1(data):
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def b64_md5(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


assert crc32c(b"123456789") == 0xE3069283
assert crc64nvme(b"123456789") == 0xAE8B14860A799888

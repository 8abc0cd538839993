#!/usr/bin/env python3
# tests/interop/test_access.py - users, keys, grants, bucket policies and rate limits against a
# running cairn (S3_ENDPOINT, root keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), as TAP.
# Users, grants and limits are made with BUILD_DIR/cairn-admin (argv[1]); S3 calls use boto3
# with the users' keys; anonymous calls are plain HTTP. Creates and removes its own buckets.
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TAP  # noqa: E402
import s3raw  # noqa: E402

t = TAP()
try:
    import boto3
    from botocore.client import Config
    from botocore.exceptions import ClientError
except ImportError as e:
    print("1..0 # SKIP boto3 is not installed for %s (%s)" % (sys.executable, e))
    sys.exit(0)
if len(sys.argv) < 2 or not os.access(os.path.join(sys.argv[1], "cairn-admin"), os.X_OK):
    print("1..0 # SKIP needs BUILD_DIR with cairn-admin as the first argument")
    sys.exit(0)

EP = os.environ["S3_ENDPOINT"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
ADMIN = os.path.join(sys.argv[1], "cairn-admin")
for v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(v, None)
os.environ.setdefault("AWS_CONFIG_FILE", "/dev/null")
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
SUF = os.urandom(4).hex()
B = "cairn-acc-%s" % SUF
B2 = B + "-other"


def client(ak=AK, sk=SK, attempts=1):
    return boto3.session.Session().client(
        "s3", endpoint_url=EP, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": attempts, "mode": "standard"},
                      connect_timeout=10, read_timeout=60, signature_version="s3v4"))


def admin(*args):
    env = dict(os.environ, CAIRN_ENDPOINT=EP, CAIRN_ACCESS_KEY=AK, CAIRN_SECRET_KEY=SK)
    p = subprocess.run([ADMIN] + list(args), capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def code_of(fn, *a, **kw):
    """'ok' when fn succeeds, else the S3 error code (HTTP status for HEAD)."""
    try:
        fn(*a, **kw)
        return "ok"
    except ClientError as e:
        c = e.response.get("Error", {}).get("Code")
        return {"403": "AccessDenied", "404": "NoSuchKey"}.get(c, c)


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


root = client()
root.create_bucket(Bucket=B)
root.create_bucket(Bucket=B2)
for k in ("doc.txt", "public/a.txt", "public/secret.txt", "private/b.txt"):
    root.put_object(Bucket=B, Key=k, Body=b"data of " + k.encode())
root.put_object(Bucket=B2, Key="doc.txt", Body=b"other")

# ---------------------------------------------------------------- users
users = {}
with t.block("users"):
    for kind in ("read", "write", "list", "admin", "none"):
        name = "it-%s-%s" % (kind, SUF)
        rc, out, err = admin("user", "add", name, "--json")
        t.eq(rc, 0, "cairn-admin user add %s --json" % kind, err)
        d = json.loads(out)
        t.ok(d.get("access_key") and d.get("secret_key") and len(d["secret_key"]) >= 40,
             "user add --json prints access_key and secret_key", out[:20])
        users[kind] = (name, d["access_key"], d["secret_key"])
        if kind != "none":
            rc, out, err = admin("policy", "set", name, "--bucket", B, "--allow", kind)
            t.eq(rc, 0, "cairn-admin policy set %s --bucket B --allow %s" % (name, kind), err)
    rc, out, err = admin("user", "add", users["read"][0])
    t.ok(rc != 0 and "exists" in err, "user add of an existing name fails", err)
    rc, out, err = admin("user", "add", "bad/name")
    t.ok(rc != 0, "user add of a bad name fails", err)
    rc, out, _ = admin("user", "list")
    t.ok(rc == 0 and all(u[0] in out and u[1] in out for u in users.values()), "user list shows names and keys")
    t.ok(all(u[2] not in out for u in users.values()), "user list never shows secrets")
    rc, out, _ = admin("user", "list", "--json")
    t.ok(rc == 0 and len([u for u in json.loads(out)["users"] if u["name"].endswith(SUF)]) == 5, "user list --json")
    rc, out, _ = admin("policy", "list", "--json")
    g = [p for p in json.loads(out)["policies"] if p["bucket"] == B]
    t.eq(sorted(p["allow"][0] for p in g), ["admin", "list", "read", "write"], "policy list --json")
    rc, _, err = admin("policy", "set", users["none"][0], "--bucket", B, "--allow", "fly")
    t.ok(rc != 0, "policy set with an unknown allow kind fails", err)
    rc, _, err = admin("policy", "set", "nobody-" + SUF, "--bucket", B, "--allow", "read")
    t.ok(rc != 0, "policy set for an unknown user fails", err)

# ---------------------------------------------------------- the matrix
CORS_XML = {"CORSRules": [{"AllowedOrigins": ["http://x"], "AllowedMethods": ["GET"]}]}
ops = {
    "get_object": lambda c: c.get_object(Bucket=B, Key="doc.txt")["Body"].read(),
    "head_object": lambda c: c.head_object(Bucket=B, Key="doc.txt"),
    "put_object": lambda c: c.put_object(Bucket=B, Key="up/x", Body=b"x"),
    "copy_object": lambda c: c.copy_object(Bucket=B, Key="up/copy", CopySource={"Bucket": B, "Key": "doc.txt"}),
    "delete_object": lambda c: c.delete_object(Bucket=B, Key="up/x"),
    "multipart": lambda c: c.abort_multipart_upload(
        Bucket=B, Key="up/mp", UploadId=c.create_multipart_upload(Bucket=B, Key="up/mp")["UploadId"]),
    "list_objects_v2": lambda c: c.list_objects_v2(Bucket=B),
    "list_objects": lambda c: c.list_objects(Bucket=B),
    "head_bucket": lambda c: c.head_bucket(Bucket=B),
    "put_bucket_cors": lambda c: c.put_bucket_cors(Bucket=B, CORSConfiguration=CORS_XML),
    "get_bucket_policy": lambda c: c.get_bucket_policy(Bucket=B),
    "other_bucket_get": lambda c: c.get_object(Bucket=B2, Key="doc.txt"),
    "other_bucket_list": lambda c: c.list_objects_v2(Bucket=B2),
}
D = "AccessDenied"
want = {  # op -> (read, write, list, admin, none)
    "get_object": ("ok", D, D, "ok", D),
    "head_object": ("ok", D, D, "ok", D),
    "put_object": (D, "ok", D, "ok", D),
    "copy_object": (D, D, D, "ok", D),  # write alone cannot read the source
    "delete_object": (D, "ok", D, "ok", D),
    "multipart": (D, "ok", D, "ok", D),
    "list_objects_v2": (D, D, "ok", "ok", D),
    "list_objects": (D, D, "ok", "ok", D),
    "head_bucket": ("ok", "ok", "ok", "ok", D),
    "put_bucket_cors": (D, D, D, "ok", D),
    "get_bucket_policy": (D, D, D, "NoSuchBucketPolicy", D),
    "other_bucket_get": (D, D, D, D, D),
    "other_bucket_list": (D, D, D, D, D),
}
kinds = ("read", "write", "list", "admin", "none")
with t.block("matrix"):
    for op, fn in ops.items():
        for i, kind in enumerate(kinds):
            c = client(users[kind][1], users[kind][2])
            if op in ("delete_object",):
                root.put_object(Bucket=B, Key="up/x", Body=b"x")
            t.eq(code_of(fn, c), want[op][i], "%s with a %s grant" % (op, kind))
    # write + read on the same bucket make copy work; a '*' bucket grant covers every bucket
    w = users["write"]
    admin("policy", "set", w[0], "--bucket", B, "--allow", "write", "--allow", "read")
    t.eq(code_of(ops["copy_object"], client(w[1], w[2])), "ok", "copy_object with read+write")
    admin("policy", "set", users["none"][0], "--bucket", "*", "--allow", "read,list")
    c = client(users["none"][1], users["none"][2])
    t.eq(code_of(ops["other_bucket_get"], c), "ok", "a '*' read grant covers other buckets")
    t.eq(code_of(ops["put_object"], c), D, "a '*' read,list grant does not allow writes")
    rc, _, _ = admin("policy", "remove", users["none"][0], "--bucket", "*")
    t.eq(rc, 0, "policy remove")
    t.eq(code_of(ops["other_bucket_get"], c), D, "after policy remove: denied again")
    t.ok(code_of(lambda: c.list_buckets()) == "ok", "list_buckets works for any user")

# ----------------------------------------------- disabled and removed
with t.block("disable"):
    name, ak, sk = users["read"]
    c = client(ak, sk)
    rc, _, err = admin("user", "disable", name)
    t.eq(rc, 0, "user disable", err)
    t.eq(code_of(ops["get_object"], c), "InvalidAccessKeyId", "disabled user: InvalidAccessKeyId")
    raw = s3raw.S3Raw(EP, ak, sk).request("GET", s3raw.obj_path(B, "doc.txt"))
    t.eq((raw.status, raw.error().get("Code")), (403, "InvalidAccessKeyId"), "disabled user (raw): 403")
    rc, out, _ = admin("user", "list", "--json")
    t.ok([u for u in json.loads(out)["users"] if u["name"] == name][0]["enabled"] is False, "list shows disabled")
    admin("user", "enable", name)
    t.eq(code_of(ops["get_object"], c), "ok", "enabled again: works")
    rc, _, err = admin("user", "remove", name)
    t.eq(rc, 0, "user remove", err)
    t.eq(code_of(ops["get_object"], c), "InvalidAccessKeyId", "removed user: InvalidAccessKeyId")
    rc, _, err = admin("user", "remove", name)
    t.ok(rc != 0, "removing twice fails", err)
    rc, out, _ = admin("policy", "list", name, "--json")
    t.eq(json.loads(out)["policies"], [], "a removed user's grants are gone")
    rc, _, err = admin("user", "add", name, "--json")
    t.eq(rc, 0, "the name can be reused")
    t.eq(code_of(ops["get_object"], c), "InvalidAccessKeyId", "the old key stays invalid after the name is reused")
    p = subprocess.run([ADMIN, "user", "list"], capture_output=True, text=True,
                       env=dict(os.environ, CAIRN_ENDPOINT=EP, CAIRN_ACCESS_KEY=users["admin"][1],
                                CAIRN_SECRET_KEY=users["admin"][2]))
    t.ok(p.returncode != 0, "a user's key (even with an admin grant) cannot use the admin API", p.stderr)

# --------------------------------------------------- anonymous access
def url(key=None, query=""):
    return EP + s3raw.obj_path(B, key) + (("?" + query) if query else "")


with t.block("anonymous"):
    st, body = http("GET", url("public/a.txt"))
    t.ok(st == 403 and b"<Code>AccessDenied</Code>" in body, "anonymous GET without a policy: 403 AccessDenied", st)
    st, _ = http("GET", url())
    t.eq(st, 403, "anonymous list without a policy: 403")
    st, _ = http("PUT", url("drop/x"), b"anon")
    t.eq(st, 403, "anonymous PUT without a policy: 403")
    code = code_of(root.put_bucket_policy, Bucket=B, Policy="not json")
    t.eq(code, "MalformedPolicy", "put_bucket_policy of bad JSON -> MalformedPolicy")
    bad = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                     "Resource": "arn:aws:s3:::%s/*" % B2}]})
    t.eq(code_of(root.put_bucket_policy, Bucket=B, Policy=bad), "MalformedPolicy", "policy naming another bucket")
    pol = {"Version": "2012-10-17", "Statement": [
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
         "Resource": ["arn:aws:s3:::%s/public/*" % B]},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::%s/public/secret*" % B},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::%s" % B},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::%s/drop/*" % B}]}
    t.eq(code_of(root.put_bucket_policy, Bucket=B, Policy=json.dumps(pol)), "ok", "put_bucket_policy")
    got = json.loads(root.get_bucket_policy(Bucket=B)["Policy"])
    t.eq(got, pol, "get_bucket_policy returns the document")
    st, body = http("GET", url("public/a.txt"))
    t.eq((st, body), (200, b"data of public/a.txt"), "anonymous GET of a public object: 200")
    st, _ = http("HEAD", url("public/a.txt"))
    t.eq(st, 200, "anonymous HEAD of a public object: 200")
    st, _ = http("GET", url("private/b.txt"))
    t.eq(st, 403, "anonymous GET outside the public prefix: 403")
    st, _ = http("GET", url("public/secret.txt"))
    t.eq(st, 403, "Deny wins over Allow")
    st, body = http("GET", url(query="list-type=2"))
    t.ok(st == 200 and b"public/a.txt" in body, "anonymous ListObjectsV2 allowed by s3:ListBucket", st)
    st, _ = http("PUT", url("drop/x"), b"anon")
    t.eq(st, 200, "anonymous PUT allowed by s3:PutObject on drop/*")
    t.eq(root.get_object(Bucket=B, Key="drop/x")["Body"].read(), b"anon", "root reads the anonymous upload")
    st, _ = http("PUT", url("public/x"), b"anon")
    t.eq(st, 403, "anonymous PUT outside drop/: 403")
    st, _ = http("DELETE", url("public/a.txt"))
    t.eq(st, 403, "anonymous DELETE: 403")
    st, _ = http("GET", EP + s3raw.obj_path(B2, "doc.txt"))
    t.eq(st, 403, "another bucket's objects stay private")
    c = client(users["none"][1], users["none"][2])
    t.eq(code_of(lambda: c.get_object(Bucket=B, Key="public/a.txt")), "ok", "a policy's '*' covers users too")
    t.eq(code_of(lambda: c.get_object(Bucket=B, Key="public/secret.txt")), D, "and so does its Deny")
    c = client(users["admin"][1], users["admin"][2])
    t.eq(code_of(lambda: c.get_object(Bucket=B, Key="public/secret.txt")), D, "Deny beats an admin grant")
    t.eq(code_of(root.delete_bucket_policy, Bucket=B), "ok", "delete_bucket_policy")
    t.eq(code_of(root.get_bucket_policy, Bucket=B), "NoSuchBucketPolicy", "get after delete -> NoSuchBucketPolicy")
    st, _ = http("GET", url("public/a.txt"))
    t.eq(st, 403, "anonymous GET after the policy is deleted: 403")

# --------------------------------------------------------- rate limits
with t.block("limits"):
    name, ak, sk = users["list"]
    rc, _, err = admin("limit", "set", "--access-key", ak, "--rps", "2", "--burst", "2")
    t.eq(rc, 0, "limit set --access-key K --rps 2 --burst 2", err)
    rc, out, _ = admin("limit", "list", "--json")
    t.ok({"kind": "key", "name": ak, "rps": 2, "burst": 2} in json.loads(out)["limits"], "limit list shows it")
    raw = s3raw.S3Raw(EP, ak, sk)
    res = [raw.request("GET", "/" + B, [("list-type", "2")]) for _ in range(10)]
    codes = [r.status for r in res]
    slow = [r for r in res if r.status == 503]
    t.ok(codes.count(200) >= 2 and len(slow) >= 5, "a burst of 10 raw requests: some 503", codes)
    t.ok(slow and slow[0].error().get("Code") == "SlowDown" and slow[0].error().get("RequestId"),
         "503 carries the S3 SlowDown error body", slow[0].body[:300] if slow else "")
    t.eq(code_of(root.list_objects_v2, Bucket=B), "ok", "root is not limited by another key's limit")
    c = client(ak, sk, attempts=10)
    t0, n_ok = time.time(), 0
    for i in range(8):
        n_ok += code_of(c.list_objects_v2, Bucket=B) == "ok"
    t.eq(n_ok, 8, "boto3 standard retries succeed under the limit (%.1fs)" % (time.time() - t0))
    rc, _, err = admin("limit", "remove", "--access-key", ak)
    t.eq(rc, 0, "limit remove", err)
    codes = [raw.request("GET", "/" + B, [("list-type", "2")]).status for _ in range(10)]
    t.eq(codes, [200] * 10, "no limit after remove")
    rc, _, err = admin("limit", "set", "--bucket", B, "--rps", "1")
    t.eq(rc, 0, "limit set --bucket B --rps 1", err)
    codes = [s3raw.S3Raw(EP, AK, SK).request("HEAD", "/" + B).status for _ in range(6)]
    t.ok(codes[0] == 200 and codes.count(503) >= 3, "a bucket limit applies to every key, root included", codes)
    codes = [s3raw.S3Raw(EP, AK, SK).request("HEAD", "/" + B2).status for _ in range(6)]
    t.eq(codes, [200] * 6, "other buckets are not limited")
    rc, _, _ = admin("limit", "remove", "--bucket", B)
    t.eq(rc, 0, "limit remove --bucket")
    rc, _, err = admin("limit", "remove", "--bucket", B)
    t.ok(rc != 0, "removing a missing limit fails", err)
    rc, _, err = admin("limit", "set", "--bucket", B, "--rps", "0")
    t.ok(rc != 0, "rps 0 is refused", err)

# ---------------------------------------------------------------- cleanup
with t.block("cleanup"):
    for b in (B, B2):
        for o in root.list_objects_v2(Bucket=b).get("Contents", []):
            root.delete_object(Bucket=b, Key=o["Key"])
        root.delete_bucket(Bucket=b)
    for kind, (name, _, _) in users.items():
        admin("user", "remove", name)
    rc, out, _ = admin("user", "list", "--json")
    t.ok(rc == 0 and not [u for u in json.loads(out)["users"] if u["name"].endswith(SUF) and
                          u["name"] != users["read"][0]], "users removed")
    admin("user", "remove", users["read"][0])

sys.exit(t.done())

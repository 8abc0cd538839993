#!/usr/bin/env python3
# tests/interop/test_cors_browser.py - CORS in a real browser, as TAP: headless Chromium (driven
# over the DevTools protocol) loads a page from another localhost origin that uploads with a
# presigned PUT and reads the object back with fetch(); a page from a disallowed origin must be
# blocked by the browser. Also checks preflight answers and Put/Get/DeleteBucketCors directly.
# Needs Debian's chromium and python3-websocket (re-runs itself under /usr/bin/python3 if the
# python3 it was started with lacks websocket).
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

try:
    import websocket
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.access("/usr/bin/python3", os.X_OK) and \
            subprocess.run(["/usr/bin/python3", "-c", "import websocket, boto3"],
                           capture_output=True).returncode == 0:
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("1..0 # SKIP python3-websocket is not installed (apt-get install python3-websocket)")
    sys.exit(0)

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

CHROME = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if not CHROME:
    print("1..0 # SKIP chromium is not installed (apt-get install chromium)")
    sys.exit(0)

EP = os.environ["S3_ENDPOINT"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
for v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(v, None)
os.environ.setdefault("AWS_CONFIG_FILE", "/dev/null")
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
SUF = os.urandom(4).hex()
B = "cairn-cors-%s" % SUF
TMP = tempfile.mkdtemp(prefix="cairn-cors-")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>cors</title></head><body>
<pre id="out">running</pre>
<script>
(async () => {
  const p = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const res = {};
  try {
    const r = await fetch(p.put, {method: "PUT", body: p.body, headers: {"Content-Type": "text/plain"}});
    res.put = r.status;
    res.etag = r.headers.get("ETag");
  } catch (e) { res.put_error = String(e); }
  try {
    const r = await fetch(p.get);
    res.get = r.status;
    res.text = await r.text();
  } catch (e) { res.get_error = String(e); }
  document.getElementById("out").textContent = JSON.stringify(res);
  window.__result = res;
})();
</script></body></html>
"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=TMP, **kw)

    def log_message(self, *a):
        pass


def serve():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Browser:
    """Headless Chromium with a DevTools websocket to its first page."""

    def __init__(self):
        self.udd = tempfile.mkdtemp(prefix="cairn-chromium-")
        self.log = open(os.path.join(self.udd, "chromium.log"), "w")
        args = [CHROME, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--remote-allow-origins=*", "--remote-debugging-port=0",
                "--user-data-dir=" + self.udd, "about:blank"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        port_file = os.path.join(self.udd, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("chromium did not start: " + self.tail())
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        for _ in range(100):
            pages = [x for x in json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port))
                     if x.get("type") == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.id = 0

    def tail(self):
        self.log.flush()
        try:
            return open(os.path.join(self.udd, "chromium.log")).read()[-800:]
        except OSError:
            return ""

    def call(self, method, **params):
        self.id += 1
        self.ws.send(json.dumps({"id": self.id, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.id:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})

    def run_page(self, url, timeout=30):
        """Navigates to url and waits for window.__result (the page's JSON)."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.call("Runtime.evaluate", expression="JSON.stringify(window.__result || null)",
                          returnByValue=True)
            v = r.get("result", {}).get("value")
            if v and v != "null":
                return json.loads(v)
            time.sleep(0.2)
        raise RuntimeError("the page did not finish in %ds" % timeout)

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.udd, ignore_errors=True)


s3 = boto3.session.Session().client(
    "s3", endpoint_url=EP, aws_access_key_id=AK, aws_secret_access_key=SK, region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"},
                  signature_version="s3v4"))
raw = s3raw.S3Raw(EP, AK, SK)
with open(os.path.join(TMP, "page.html"), "w") as f:
    f.write(PAGE)
good, bad = serve(), serve()
GOOD = "http://127.0.0.1:%d" % good.server_address[1]
BAD = "http://127.0.0.1:%d" % bad.server_address[1]
print("# page origins: allowed %s, disallowed %s; cairn %s" % (GOOD, BAD, EP))

browser = None
try:
    s3.create_bucket(Bucket=B)
    # ------------------------------------------------------- the bucket API
    with t.block("cors api"):
        try:
            s3.get_bucket_cors(Bucket=B)
            t.ok(False, "get_bucket_cors without a configuration -> NoSuchCORSConfiguration")
        except ClientError as e:
            t.eq(e.response["Error"]["Code"], "NoSuchCORSConfiguration",
                 "get_bucket_cors without a configuration -> NoSuchCORSConfiguration")
        r = raw.request("OPTIONS", s3raw.obj_path(B, "k"), sign=False,
                        headers={"Origin": GOOD, "Access-Control-Request-Method": "PUT"})
        t.ok(r.status == 403 and b"CORS is not enabled" in r.body, "preflight without a configuration: 403", r)
        conf = {"CORSRules": [{"AllowedOrigins": [GOOD, "http://*.example.com"], "AllowedMethods": ["GET", "PUT", "HEAD"],
                               "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag", "x-amz-request-id"],
                               "MaxAgeSeconds": 60}]}
        s3.put_bucket_cors(Bucket=B, CORSConfiguration=conf)
        got = s3.get_bucket_cors(Bucket=B)["CORSRules"]
        t.eq(got, conf["CORSRules"], "get_bucket_cors returns the rules")
        for why, xml in [("two wildcards", "<CORSConfiguration><CORSRule><AllowedOrigin>http://*.*.com</AllowedOrigin>"
                          "<AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>"),
                         ("bad method", "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
                          "<AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>"),
                         ("no rules", "<CORSConfiguration></CORSConfiguration>"),
                         ("not XML", "<CORS")]:
            r = raw.request("PUT", "/" + B, [("cors", None)], body=xml.encode())
            t.ok(r.status == 400 and r.error().get("Code") in ("InvalidRequest", "MalformedXML"),
                 "put cors refused: %s" % why, r)
        r = raw.request("OPTIONS", s3raw.obj_path(B, "k"), sign=False,
                        headers={"Origin": GOOD, "Access-Control-Request-Method": "PUT",
                                 "Access-Control-Request-Headers": "content-type"})
        h = r.headers
        t.ok(r.status == 200 and h.get("access-control-allow-origin") == GOOD and
             "PUT" in h.get("access-control-allow-methods", "") and
             h.get("access-control-allow-headers") == "content-type" and h.get("access-control-max-age") == "60"
             and "Origin" in h.get("vary", ""), "preflight from the allowed origin: 200 with Allow-*", r, h)
        r = raw.request("OPTIONS", s3raw.obj_path(B, "k"), sign=False,
                        headers={"Origin": "http://a.example.com", "Access-Control-Request-Method": "GET"})
        t.eq((r.status, r.headers.get("access-control-allow-origin")), (200, "http://a.example.com"),
             "preflight from a wildcard origin")
        r = raw.request("OPTIONS", s3raw.obj_path(B, "k"), sign=False,
                        headers={"Origin": BAD, "Access-Control-Request-Method": "PUT"})
        t.ok(r.status == 403 and b"CORSResponse: This CORS request is not allowed" in r.body
             and "access-control-allow-origin" not in r.headers, "preflight from another origin: 403", r)
        r = raw.request("OPTIONS", s3raw.obj_path(B, "k"), sign=False,
                        headers={"Origin": GOOD, "Access-Control-Request-Method": "DELETE"})
        t.eq(r.status, 403, "preflight for a method not allowed: 403")
        r = raw.request("OPTIONS", s3raw.obj_path(B, "k"), sign=False, headers={"Access-Control-Request-Method": "PUT"})
        t.eq(r.status, 400, "preflight without Origin: 400")
        s3.put_object(Bucket=B, Key="plain", Body=b"x")
        r = raw.request("GET", s3raw.obj_path(B, "plain"), headers={"Origin": GOOD})
        t.ok(r.headers.get("access-control-allow-origin") == GOOD and "ETag" in
             r.headers.get("access-control-expose-headers", ""), "actual GET carries Access-Control-*", r.headers)
        r = raw.request("GET", s3raw.obj_path(B, "missing"), headers={"Origin": GOOD})
        t.ok(r.status == 404 and r.headers.get("access-control-allow-origin") == GOOD,
             "error responses carry Access-Control-* too", r.headers)
        r = raw.request("GET", s3raw.obj_path(B, "plain"), headers={"Origin": BAD})
        t.ok(r.status == 200 and "access-control-allow-origin" not in r.headers,
             "no Access-Control-* for another origin", r.headers)
        r = raw.request("DELETE", s3raw.obj_path(B, "plain"), headers={"Origin": GOOD})
        t.ok("access-control-allow-origin" not in r.headers, "no Access-Control-* for a method not allowed")

    # ------------------------------------------------------------ the browser
    try:
        browser = Browser()
    except Exception as e:  # noqa: BLE001
        t.skip("browser tests", "chromium cannot start here: %s" % str(e)[-300:])
    if browser:
        with t.block("browser"):
            body = "written by chromium %s" % SUF

            def urls(key):
                return {"put": s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": key},
                                                         ExpiresIn=300),
                        "get": s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": key},
                                                         ExpiresIn=300),
                        "body": body}
            p = urls("from-browser.txt")
            res = browser.run_page(GOOD + "/page.html#" + urllib.parse.quote(json.dumps(p)))
            t.eq(res.get("put"), 200, "allowed origin: presigned PUT from the page succeeds", res)
            t.ok(res.get("etag", "").strip('"') != "", "the exposed ETag header is readable", res)
            t.eq((res.get("get"), res.get("text")), (200, body), "allowed origin: fetch() reads the object back", res)
            got = s3.get_object(Bucket=B, Key="from-browser.txt")
            t.eq(got["Body"].read().decode(), body, "the object holds what the browser sent")
            t.eq(got["ContentType"], "text/plain", "with the page's Content-Type")

            p = urls("from-bad-origin.txt")
            res = browser.run_page(BAD + "/page.html#" + urllib.parse.quote(json.dumps(p)))
            t.ok("put_error" in res and "put" not in res, "disallowed origin: the browser blocks the PUT", res)
            t.ok("get_error" in res and "get" not in res, "disallowed origin: the browser blocks fetch()", res)
            try:
                s3.head_object(Bucket=B, Key="from-bad-origin.txt")
                t.ok(False, "the blocked upload never reached the store")
            except ClientError as e:
                t.eq(e.response["Error"]["Code"], "404", "the blocked upload never reached the store")

            s3.delete_bucket_cors(Bucket=B)
            p = urls("after-delete.txt")
            res = browser.run_page(GOOD + "/page.html#" + urllib.parse.quote(json.dumps(p)))
            t.ok("put_error" in res, "after delete_bucket_cors the allowed origin is blocked too", res)
    with t.block("cleanup"):
        try:
            s3.delete_bucket_cors(Bucket=B)
        except ClientError:
            pass
        for o in s3.list_objects_v2(Bucket=B).get("Contents", []):
            s3.delete_object(Bucket=B, Key=o["Key"])
        s3.delete_bucket(Bucket=B)
        t.ok(True, "cleanup")
finally:
    if browser:
        browser.close()
    good.shutdown()
    bad.shutdown()
    shutil.rmtree(TMP, ignore_errors=True)

sys.exit(t.done())

// tests/interop/sdk-js/test.mjs - the AWS SDK for JavaScript v3 against S3_ENDPOINT, as TAP.
// The client keeps the SDK's DEFAULT settings (CRC32 request checksums, aws-chunked uploads with
// a checksum trailer for streams, response checksum validation) except endpoint, path style,
// region and credentials. Run: npm install (once) && node test.mjs
import { Readable } from "node:stream";
import { createHash, randomBytes } from "node:crypto";

let n = 0, failed = 0, skipped = 0;
const line = (s) => process.stdout.write(s + "\n");
const diag = (...a) => a.forEach((x) => String(x).split("\n").forEach((l) => line("#   " + l.slice(0, 600))));
function ok(cond, name, ...d) {
  n++;
  if (cond) line(`ok ${n} - ${name}`);
  else { failed++; line(`not ok ${n} - ${name}`); diag(...d); }
  return !!cond;
}
const eq = (got, want, name) => ok(JSON.stringify(got) === JSON.stringify(want), name,
  `got:  ${JSON.stringify(got)}`, `want: ${JSON.stringify(want)}`);
function skip(name, why) { n++; skipped++; line(`ok ${n} # SKIP ${name}: ${why}`); }
function done() {
  line(`1..${n}`);
  line(`# ${n - failed - skipped} passed, ${failed} failed, ${skipped} skipped`);
  process.exit(failed ? 1 : 0);
}
async function block(name, fn) {
  try { await fn(); } catch (e) {
    ok(false, `${name}: unexpected ${e.name}`, e.message, `HTTP ${e.$metadata?.httpStatusCode}`,
      (e.stack || "").split("\n").slice(1, 6).join("\n"));
  }
}

let S3;
try {
  S3 = await import("@aws-sdk/client-s3");
} catch (e) {
  const major = Number(process.versions.node.split(".")[0]);
  line(`1..0 # SKIP @aws-sdk/client-s3 does not load on node ${process.versions.node}${major < 20 ? " (needs node >= 20)" : ""}: ${e.message}`);
  process.exit(major < 20 ? 0 : 1);
}
const {
  S3Client, CreateBucketCommand, HeadBucketCommand, ListBucketsCommand, PutObjectCommand, GetObjectCommand,
  HeadObjectCommand, DeleteObjectCommand, DeleteObjectsCommand, ListObjectsV2Command, CopyObjectCommand,
  CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, AbortMultipartUploadCommand,
  ListPartsCommand, DeleteBucketCommand, paginateListObjectsV2,
} = S3;

const EP = process.env.S3_ENDPOINT;
const creds = { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY };
const mk = (c = creds) => new S3Client({ endpoint: EP, forcePathStyle: true, region: "us-east-1", credentials: c });
const s3 = mk();
let pkgVersion = "?";
try {
  const fs = await import("node:fs");
  pkgVersion = JSON.parse(fs.readFileSync(new URL("./node_modules/@aws-sdk/client-s3/package.json", import.meta.url))).version;
} catch { /* informational only */ }
line(`# node ${process.versions.node}, @aws-sdk/client-s3 ${pkgVersion}`);

const audit = [];
async function send(cmd, client = s3) {
  try {
    const r = await client.send(cmd);
    if (!r.$metadata?.requestId) audit.push(`${cmd.constructor.name}: no x-amz-request-id`);
    return r;
  } catch (e) {
    if (e.$metadata && !e.$metadata.requestId) audit.push(`${cmd.constructor.name} -> ${e.name}: no x-amz-request-id`);
    throw e;
  }
}
async function expectErr(name, code, status, cmd, client = s3) {
  try {
    await send(cmd, client);
    return ok(false, name, `succeeded; want ${status} ${code}`);
  } catch (e) {
    return ok(e.name === code && e.$metadata?.httpStatusCode === status, name,
      `got ${e.$metadata?.httpStatusCode} ${e.name}: ${e.message}`, `want ${status} ${code}`);
  }
}
const bytes = async (r) => Buffer.from(await r.Body.transformToByteArray());
const md5 = (b) => createHash("md5").update(b).digest("hex");
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) { let c = i; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[i] = c >>> 0; }
  return t;
})();
function crc32b64(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  const out = Buffer.alloc(4);
  out.writeUInt32BE((c ^ 0xffffffff) >>> 0);
  return out.toString("base64");
}
const streamOf = (buf, chunk = 65536) => {
  const parts = [];
  for (let i = 0; i < buf.length; i += chunk) parts.push(buf.subarray(i, i + chunk));
  return Readable.from(parts);
};

const B = `cairn-it-js-${randomBytes(4).toString("hex")}`;
const MB = 1 << 20;

await block("buckets", async () => {
  await send(new CreateBucketCommand({ Bucket: B }));
  ok(true, "CreateBucket");
  await send(new HeadBucketCommand({ Bucket: B }));
  ok(true, "HeadBucket");
  const l = await send(new ListBucketsCommand({}));
  ok(l.Buckets.some((b) => b.Name === B), "ListBuckets has it");
  await expectErr("CreateBucket again -> BucketAlreadyOwnedByYou", "BucketAlreadyOwnedByYou", 409, new CreateBucketCommand({ Bucket: B }));
  await expectErr("HeadBucket missing -> NotFound 404", "NotFound", 404, new HeadBucketCommand({ Bucket: B + "-x" }));
});

await block("put/get", async () => {
  const s = "hello from the JS SDK \u00e9\n";
  const r = await send(new PutObjectCommand({ Bucket: B, Key: "s/str", Body: s, ContentType: "text/plain; charset=utf-8",
    Metadata: { color: "teal" }, CacheControl: "max-age=5" }));
  eq(r.ETag, `"${md5(Buffer.from(s))}"`, "PutObject string: ETag is the MD5");
  eq(r.ChecksumCRC32, crc32b64(Buffer.from(s)), "PutObject (default CRC32 header) returns ChecksumCRC32");
  const g = await send(new GetObjectCommand({ Bucket: B, Key: "s/str" }));
  eq((await bytes(g)).toString(), s, "GetObject string body");
  eq([g.ContentType, g.Metadata, g.CacheControl], ["text/plain; charset=utf-8", { color: "teal" }, "max-age=5"], "GetObject headers and metadata");

  const d = randomBytes(300 * 1024 + 3);
  await send(new PutObjectCommand({ Bucket: B, Key: "s/buf", Body: d }));
  const gb = await send(new GetObjectCommand({ Bucket: B, Key: "s/buf", ChecksumMode: "ENABLED" }));
  ok((await bytes(gb)).equals(d), "PutObject/GetObject 300 KiB Buffer byte-exact (response CRC32 validated)");
  eq(gb.ChecksumCRC32, crc32b64(d), "GetObject ChecksumMode ENABLED returns the CRC32");

  const st = randomBytes(MB + 12345);
  const rs = await send(new PutObjectCommand({ Bucket: B, Key: "s/stream", Body: streamOf(st), ContentLength: st.length }));
  eq(rs.ChecksumCRC32, crc32b64(st), "PutObject stream (aws-chunked + CRC32 trailer) returns ChecksumCRC32");
  const gs = await send(new GetObjectCommand({ Bucket: B, Key: "s/stream" }));
  ok((await bytes(gs)).equals(st), "streamed upload is byte-exact");
  const h = await send(new HeadObjectCommand({ Bucket: B, Key: "s/stream", ChecksumMode: "ENABLED" }));
  eq([h.ContentLength, h.ChecksumCRC32, h.ETag], [st.length, crc32b64(st), `"${md5(st)}"`], "HeadObject: length, trailer CRC32, ETag");

  const e = Buffer.alloc(0);
  await send(new PutObjectCommand({ Bucket: B, Key: "s/empty", Body: e }));
  eq((await bytes(await send(new GetObjectCommand({ Bucket: B, Key: "s/empty" })))).length, 0, "0-byte object");

  const rg = await send(new GetObjectCommand({ Bucket: B, Key: "s/buf", Range: "bytes=1000-1999" }));
  ok((await bytes(rg)).equals(d.subarray(1000, 2000)) && rg.ContentRange === `bytes 1000-1999/${d.length}`, "GetObject Range",
    `ContentRange ${rg.ContentRange}`);
  await expectErr("GetObject missing -> NoSuchKey", "NoSuchKey", 404, new GetObjectCommand({ Bucket: B, Key: "no/such" }));
  await expectErr("HeadObject missing -> NotFound", "NotFound", 404, new HeadObjectCommand({ Bucket: B, Key: "no/such" }));
  await expectErr("GetObject from missing bucket -> NoSuchBucket", "NoSuchBucket", 404, new GetObjectCommand({ Bucket: B + "-x", Key: "k" }));
  await expectErr("PutObject IfNoneMatch * on existing -> PreconditionFailed", "PreconditionFailed", 412,
    new PutObjectCommand({ Bucket: B, Key: "s/str", Body: "x", IfNoneMatch: "*" }));
  await expectErr("GetObject IfMatch mismatch -> PreconditionFailed", "PreconditionFailed", 412,
    new GetObjectCommand({ Bucket: B, Key: "s/str", IfMatch: '"0000"' }));
  await expectErr("wrong secret -> SignatureDoesNotMatch", "SignatureDoesNotMatch", 403,
    new ListObjectsV2Command({ Bucket: B }), mk({ ...creds, secretAccessKey: creds.secretAccessKey + "x" }));
  await expectErr("unknown access key -> InvalidAccessKeyId", "InvalidAccessKeyId", 403,
    new ListBucketsCommand({}), mk({ ...creds, accessKeyId: "AKIANOSUCHKEY0000000" }));
});

const AWK = ["sp ace", "plus+sign", "pct%25", "pct%2Fenc", "amp&er", "\u00e9t\u00e9", "\u65e5\u672c/\u8a9e", "q?x#y", "k".repeat(1000)];
await block("keys, copy, list, delete", async () => {
  for (const k of AWK) {
    const key = "awk/" + k;
    await send(new PutObjectCommand({ Bucket: B, Key: key, Body: "v:" + k }));
    const g = (await bytes(await send(new GetObjectCommand({ Bucket: B, Key: key })))).toString();
    await send(new CopyObjectCommand({ Bucket: B, Key: key + ".copy", CopySource: `${B}/${encodeURIComponent(key)}` }));
    const c = (await bytes(await send(new GetObjectCommand({ Bucket: B, Key: key + ".copy" })))).toString();
    ok(g === "v:" + k && c === g, `key ${JSON.stringify(k.slice(0, 20))}: put, get, copy`);
  }
  const keys = [];
  for await (const page of paginateListObjectsV2({ client: s3, pageSize: 4 }, { Bucket: B, Prefix: "awk/" })) {
    for (const o of page.Contents || []) keys.push(o.Key);
  }
  const want = AWK.flatMap((k) => ["awk/" + k, "awk/" + k + ".copy"]).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  eq(keys, want, "paginateListObjectsV2 (page size 4) lists every awkward key in UTF-8 order");
  const dl = await send(new ListObjectsV2Command({ Bucket: B, Prefix: "awk/", Delimiter: "/" }));
  eq((dl.CommonPrefixes || []).map((p) => p.Prefix), ["awk/\u65e5\u672c/"], "ListObjectsV2 delimiter");
  const del = await send(new DeleteObjectsCommand({ Bucket: B, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
  eq([(del.Deleted || []).length, (del.Errors || []).length], [keys.length, 0], "DeleteObjects (SDK sends a CRC32 checksum, not Content-MD5)");
  const after = await send(new ListObjectsV2Command({ Bucket: B, Prefix: "awk/" }));
  eq(after.KeyCount, 0, "all deleted");
  await send(new DeleteObjectCommand({ Bucket: B, Key: "s/empty" }));
  await expectErr("deleted object is gone", "NotFound", 404, new HeadObjectCommand({ Bucket: B, Key: "s/empty" }));
});

await block("multipart", async () => {
  const p1 = randomBytes(5 * MB), p2 = randomBytes(MB + 7);
  const up = await send(new CreateMultipartUploadCommand({ Bucket: B, Key: "mp/o", ChecksumAlgorithm: "CRC32", ContentType: "application/x-js" }));
  const u1 = await send(new UploadPartCommand({ Bucket: B, Key: "mp/o", UploadId: up.UploadId, PartNumber: 1, Body: p1 }));
  const u2 = await send(new UploadPartCommand({ Bucket: B, Key: "mp/o", UploadId: up.UploadId, PartNumber: 2,
    Body: streamOf(p2), ContentLength: p2.length }));
  eq([u1.ChecksumCRC32, u2.ChecksumCRC32], [crc32b64(p1), crc32b64(p2)], "UploadPart (Buffer, then stream with trailer) return CRC32s");
  const lp = await send(new ListPartsCommand({ Bucket: B, Key: "mp/o", UploadId: up.UploadId }));
  eq(lp.Parts.map((p) => [p.PartNumber, p.Size]), [[1, p1.length], [2, p2.length]], "ListParts");
  const c = await send(new CompleteMultipartUploadCommand({ Bucket: B, Key: "mp/o", UploadId: up.UploadId,
    MultipartUpload: { Parts: [{ PartNumber: 1, ETag: u1.ETag, ChecksumCRC32: u1.ChecksumCRC32 },
      { PartNumber: 2, ETag: u2.ETag, ChecksumCRC32: u2.ChecksumCRC32 }] } }));
  const md5s = Buffer.concat([createHash("md5").update(p1).digest(), createHash("md5").update(p2).digest()]);
  eq(c.ETag, `"${md5(md5s)}-2"`, "CompleteMultipartUpload ETag");
  const g = await send(new GetObjectCommand({ Bucket: B, Key: "mp/o" }));
  ok((await bytes(g)).equals(Buffer.concat([p1, p2])) && g.ContentType === "application/x-js", "multipart object byte-exact, type kept");
  const up2 = await send(new CreateMultipartUploadCommand({ Bucket: B, Key: "mp/x" }));
  await send(new AbortMultipartUploadCommand({ Bucket: B, Key: "mp/x", UploadId: up2.UploadId }));
  await expectErr("ListParts after abort -> NoSuchUpload", "NoSuchUpload", 404, new ListPartsCommand({ Bucket: B, Key: "mp/x", UploadId: up2.UploadId }));
});

await block("cleanup", async () => {
  await expectErr("DeleteBucket not empty -> BucketNotEmpty", "BucketNotEmpty", 409, new DeleteBucketCommand({ Bucket: B }));
  const l = await send(new ListObjectsV2Command({ Bucket: B }));
  if (l.Contents?.length) await send(new DeleteObjectsCommand({ Bucket: B, Delete: { Objects: l.Contents.map((o) => ({ Key: o.Key })) } }));
  await send(new DeleteBucketCommand({ Bucket: B }));
  ok(true, "DeleteBucket");
});

ok(audit.length === 0, "every response had x-amz-request-id", ...audit.slice(0, 15));
done();

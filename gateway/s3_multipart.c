/* gateway/s3_multipart.c - multipart uploads: Create, UploadPart (streamed
 * through the object writer), UploadPartCopy, Complete (validation, ETag of
 * ETags, layout concatenation, composite checksum), Abort and ListParts.
 * Listing uploads is in s3_list.c; the metadata rules live in metadata/. */
#include "events/evt.h"
#include "gateway/gw_int.h"
#include "gateway/sigv4.h"
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define UPLOAD_ID_LEN 40           /* random url-safe characters (240 bits) */
#define HDR_CK_ALGO "x-amz-checksum-algorithm" /* kept in the upload's template only */
#define HDR_CK_TYPE "x-amz-checksum-type"
#define LIST_PARTS_MAX 1000

/* ---------------------------------------------------------------- helpers */

/* Parses a decimal in [lo, hi]; false when it is not one. */
static bool parse_uint(cm_slice s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v = 0;
    if (s.n == 0 || s.n > 19)
        return false;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* The uploadId query parameter; NoSuchUpload when missing or empty. */
static bool upload_id_param(gw_req *r, cm_slice *id)
{
    if (!gw_param(r, "uploadId", id) || id->n == 0) {
        gw_error(r, S3E_NoSuchUpload);
        return false;
    }
    return true;
}

/* partNumber: 1..10000, else InvalidArgument. */
static bool part_number_param(gw_req *r, uint32_t *num)
{
    cm_slice v = CM_SLICE_NULL;
    uint64_t n;
    if (!gw_param(r, "partNumber", &v) || !parse_uint(v, 1, GW_MAX_PARTS, &n)) {
        gw_error_msg(r, S3E_InvalidArgument,
                     "Part number must be an integer between 1 and 10000, inclusive");
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR("partNumber"));
        gw_error_extra(r, "ArgumentValue", v);
        return false;
    }
    *num = (uint32_t)n;
    return true;
}

/* Reads the upload named by the request (owned: md_upload_clear). */
static bool upload_get(gw_req *r, cm_slice id, md_upload *u)
{
    int rc = md_upload_get(r->srv->md, r->bucket, r->key, id, u);
    if (rc) {
        if (rc != CM_ENOTFOUND)
            cm_log(CM_LOG_ERROR, "%s: reading upload failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchUpload));
        return false;
    }
    return true;
}

static bool hdr_value(const md_object *o, const char *name, cm_slice *out)
{
    return md_object_hdr(o, name, out) == 0;
}

/* A part's stored checksum "ALGO:base64" -> algo and value. */
static bool part_cksum(cm_slice ck, enum gw_cksum_algo *algo, cm_slice *b64)
{
    const uint8_t *colon = ck.n ? memchr(ck.p, ':', ck.n) : NULL;
    if (!colon)
        return false;
    cm_slice name = CM_SLICE(ck.p, (size_t)(colon - ck.p));
    if (gw_cksum_algo_parse(name, algo))
        return false;
    *b64 = CM_SLICE(colon + 1, ck.n - name.n - 1);
    return true;
}

/* "ChecksumCRC32" ... for an algorithm. */
static void cksum_elem_name(enum gw_cksum_algo a, char *out, size_t n)
{
    snprintf(out, n, "Checksum%s", gw_cksum_algo_name(a));
}

/* Stores the checksum the client sent with a part's body (if any) as
 * "ALGO:base64" in pool memory and echoes its header. */
static cm_slice part_cksum_from_req(gw_req *r)
{
    const char *name, *val;
    enum gw_cksum_algo a;
    if (!gw_auth_checksum(r, &name, &val) || !name || !val ||
        gw_cksum_algo_parse(CM_SLICE_STR(name), &a))
        return CM_SLICE_NULL;
    gw_set_hdr(r, name, val);
    const char *an = gw_cksum_algo_name(a);
    size_t n = strlen(an) + 1 + strlen(val);
    char *s = cm_pool_alloc(r->pool, n + 1);
    if (!s)
        return CM_SLICE_NULL;
    snprintf(s, n + 1, "%s:%s", an, val);
    return CM_SLICE(s, n);
}

/* Stores a finished part; on failure the data is dropped and the error set.
 * Returns true on success. */
static bool part_commit(gw_req *r, cm_slice id, md_part *p, uint64_t intent)
{
    int rc = md_part_put(r->srv->md, r->bucket, r->key, id, p, intent);
    if (rc == 0)
        return true;
    if (intent)
        md_intent_drop(r->srv->md, intent); /* reclaims the part's shards */
    if (rc != CM_ENOTFOUND)
        cm_log(CM_LOG_ERROR, "%s: storing part failed: %s", r->id, cm_strerror(rc));
    gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchUpload));
    return false;
}

/* ------------------------------------------------- CreateMultipartUpload */
static void new_upload_id(char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    uint8_t rnd[UPLOAD_ID_LEN];
    if (cm_random_bytes(rnd, sizeof rnd)) {
        /* No CSPRNG: still unique enough per process, never reused. */
        uint64_t x = (uint64_t)cm_now_ms() ^ cm_mono_ns();
        for (size_t i = 0; i < sizeof rnd; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            rnd[i] = (uint8_t)(x >> 56);
        }
    }
    for (size_t i = 0; i < UPLOAD_ID_LEN; i++)
        out[i] = abc[rnd[i] & 63];
    out[UPLOAD_ID_LEN] = 0;
}

void gw_create_multipart_upload(gw_req *r)
{
    md_kv *hdrs, *all;
    size_t nhdrs, n;
    enum gw_cksum_algo algo = GW_CKSUM_NONE;
    cm_slice v, ctype = CM_SLICE_NULL;
    char id[UPLOAD_ID_LEN + 1];

    if (!gw_bucket_exists(r) || !gw_object_hdrs_from_req(r, &hdrs, &nhdrs))
        return;
    if (gw_hdr(r, HDR_CK_ALGO, &v) && gw_cksum_algo_parse(v, &algo)) {
        gw_error_msg(r, S3E_InvalidRequest,
                     "Checksum algorithm provided is unsupported. Please try again with any of "
                     "the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]");
        return;
    }
    if (gw_hdr(r, HDR_CK_TYPE, &ctype) && !cm_slice_case_eq_str(ctype, "COMPOSITE") &&
        !cm_slice_case_eq_str(ctype, "FULL_OBJECT")) {
        gw_error_msg(r, S3E_InvalidRequest, "Value for x-amz-checksum-type header is invalid.");
        return;
    }
    all = cm_pool_alloc(r->pool, (nhdrs + 2) * sizeof *all);
    if (!all) {
        gw_error(r, S3E_InternalError);
        return;
    }
    memcpy(all, hdrs, nhdrs * sizeof *all);
    n = nhdrs;
    if (algo != GW_CKSUM_NONE) {
        all[n].name = CM_SLICE_STR(HDR_CK_ALGO);
        all[n++].value = CM_SLICE_STR(gw_cksum_algo_name(algo));
        if (ctype.n) {
            bool full = cm_slice_case_eq_str(ctype, "FULL_OBJECT");
            all[n].name = CM_SLICE_STR(HDR_CK_TYPE);
            all[n++].value = CM_SLICE_STR(full ? "FULL_OBJECT" : "COMPOSITE");
        }
    }
    md_object tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    tmpl.hdrs = all;
    tmpl.nhdrs = n;

    int rc;
    for (int tries = 0;; tries++) {
        new_upload_id(id);
        rc = md_upload_create(r->srv->md, r->bucket, r->key, CM_SLICE(id, UPLOAD_ID_LEN), &tmpl);
        if (rc != CM_EEXISTS || tries == 3)
            break;
    }
    if (rc) {
        if (rc != CM_ENOTFOUND)
            cm_log(CM_LOG_ERROR, "%s: creating upload failed: %s", r->id, cm_strerror(rc));
        gw_error(r, rc == CM_EEXISTS ? S3E_InternalError : gw_s3err_from_cm(rc, S3E_NoSuchBucket));
        return;
    }
    if (algo != GW_CKSUM_NONE) {
        gw_set_hdr(r, HDR_CK_ALGO, gw_cksum_algo_name(algo));
        if (ctype.n)
            gw_set_hdr(r, HDR_CK_TYPE,
                       cm_slice_case_eq_str(ctype, "FULL_OBJECT") ? "FULL_OBJECT" : "COMPOSITE");
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "InitiateMultipartUploadResult");
    gw_xml_elem(b, "Bucket", r->bucket);
    gw_xml_elem_slice(b, "Key", r->key);
    gw_xml_elem(b, "UploadId", id);
    gw_xml_close(b, "InitiateMultipartUploadResult");
}

/* ------------------------------------------------------------ UploadPart */
struct part_ctx {
    gw_objw *w;       /* NULL once finished or aborted */
    cm_slice upload_id;
    uint32_t num;
};

int gw_upload_part_begin(gw_req *r)
{
    struct part_ctx *pc;
    md_upload u;
    cm_slice id;
    uint32_t num;

    if (!gw_bucket_exists(r) || !part_number_param(r, &num) || !upload_id_param(r, &id))
        return -1;
    if (!r->has_length && !gw_hdr(r, "x-amz-decoded-content-length", NULL) &&
        !gw_hdr(r, "Transfer-Encoding", NULL)) {
        gw_error(r, S3E_MissingContentLength);
        return -1;
    }
    if (r->content_length > GW_MAX_PUT) {
        gw_error(r, S3E_EntityTooLarge);
        return -1;
    }
    if (!upload_get(r, id, &u))
        return -1;
    md_upload_clear(&u);

    pc = cm_pool_alloc(r->pool, sizeof *pc);
    if (!pc || !(pc->w = gw_objw_new(r, false))) { /* parts are never inline */
        gw_error(r, S3E_InternalError);
        return -1;
    }
    pc->upload_id = id;
    pc->num = num;
    r->op_ctx = pc;
    return 0;
}

int gw_upload_part_data(gw_req *r, const uint8_t *p, size_t n)
{
    struct part_ctx *pc = r->op_ctx;
    if (!pc || !pc->w)
        return -1;
    if (r->body_n > GW_MAX_PUT) {
        gw_error(r, S3E_EntityTooLarge);
        return -1;
    }
    int rc = gw_objw_write(pc->w, p, n);
    if (rc) {
        cm_log(CM_LOG_ERROR, "%s: part write failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return -1;
    }
    return 0;
}

void gw_upload_part_abort(gw_req *r)
{
    struct part_ctx *pc = r->op_ctx;
    if (pc && pc->w) {
        gw_objw_abort(pc->w);
        pc->w = NULL;
    }
}

void gw_upload_part_end(gw_req *r)
{
    struct part_ctx *pc = r->op_ctx;
    md_object obj;
    uint64_t intent = 0;
    char etag[40], q[80];

    if (!pc || !pc->w)
        return;
    if (r->err != S3E__NONE) {
        gw_upload_part_abort(r);
        return;
    }
    memset(&obj, 0, sizeof obj);
    int rc = gw_objw_finish(pc->w, &obj, &intent);
    if (rc) {
        cm_log(CM_LOG_ERROR, "%s: finishing part failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        gw_upload_part_abort(r);
        return;
    }
    cm_hex_encode(gw_auth_md5(r), 16, etag);
    md_part part = {
        .num = pc->num,
        .size = obj.size,
        .mtime_ms = cm_now_ms(),
        .etag = CM_SLICE(etag, 32),
        .cksum = part_cksum_from_req(r),
        .layout = obj.layout,
    };
    if (part_commit(r, pc->upload_id, &part, intent)) {
        gw_etag_quote(part.etag, q);
        gw_set_hdr(r, "ETag", q);
    }
    /* The intent now belongs to the commit (or was dropped): this only
     * frees the writer's buffers. */
    gw_objw_abort(pc->w);
    pc->w = NULL;
}

/* -------------------------------------------------------- UploadPartCopy */
/* x-amz-copy-source-range: "bytes=first-last", both inside the object. */
static bool copy_range(gw_req *r, uint64_t size, uint64_t *off, uint64_t *len)
{
    cm_slice v;
    *off = 0;
    *len = size;
    if (!gw_hdr(r, "x-amz-copy-source-range", &v))
        return true;
    const uint8_t *dash = v.n > 6 ? memchr(v.p + 6, '-', v.n - 6) : NULL;
    uint64_t a, b;
    if (v.n < 6 || memcmp(v.p, "bytes=", 6) || !dash ||
        !parse_uint(CM_SLICE(v.p + 6, (size_t)(dash - v.p) - 6), 0, UINT64_MAX / 2, &a) ||
        !parse_uint(CM_SLICE(dash + 1, v.n - (size_t)(dash - v.p) - 1), 0, UINT64_MAX / 2, &b) ||
        b < a) {
        gw_error_msg(r, S3E_InvalidArgument,
                     "The x-amz-copy-source-range value must be of the form bytes=first-last "
                     "where first and last are the zero-based offsets of the first and last "
                     "bytes to copy");
        return false;
    }
    if (b >= size) {
        char msg[96];
        snprintf(msg, sizeof msg, "Range specified is not valid for source object of size: %llu",
                 (unsigned long long)size);
        gw_error_msg(r, S3E_InvalidArgument, msg);
        return false;
    }
    *off = a;
    *len = b - a + 1;
    return true;
}

void gw_upload_part_copy(gw_req *r)
{
    char sbucket[MD_BUCKET_MAX + 1];
    cm_slice id, skey;
    uint32_t num;
    md_upload u;
    md_bucket sb;
    md_object src, obj;
    gw_objw *w = NULL;
    uint64_t off, len, intent = 0;
    uint8_t md5[16];
    char etag[40], q[80];

    memset(&src, 0, sizeof src);
    memset(&obj, 0, sizeof obj);
    if (!gw_bucket_exists(r) || !part_number_param(r, &num) || !upload_id_param(r, &id) ||
        !gw_copy_source(r, sbucket, sizeof sbucket, &skey))
        return;
    if (!upload_get(r, id, &u))
        return;
    md_upload_clear(&u);
    if (md_bucket_get(r->srv->md, sbucket, &sb)) {
        gw_error(r, S3E_NoSuchBucket);
        return;
    }
    int rc = md_object_get(r->srv->md, sbucket, skey, &src);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchKey));
        return;
    }
    if (gw_read_conditions(r, &src, "x-amz-copy-source-") || !copy_range(r, src.size, &off, &len))
        goto out;
    if (len > GW_MAX_PUT) {
        gw_error(r, S3E_EntityTooLarge);
        goto out;
    }
    if (!(w = gw_objw_new(r, false))) {
        gw_error(r, S3E_InternalError);
        goto out;
    }
    if (!gw_copy_data(r, &src, off, len, w, md5))
        goto out;
    if ((rc = gw_objw_finish(w, &obj, &intent))) {
        cm_log(CM_LOG_ERROR, "%s: finishing part copy failed: %s", r->id, cm_strerror(rc));
        gw_error(r, S3E_InternalError);
        goto out;
    }
    cm_hex_encode(md5, 16, etag);
    md_part part = {
        .num = num,
        .size = obj.size,
        .mtime_ms = cm_now_ms(),
        .etag = CM_SLICE(etag, 32),
        .layout = obj.layout,
    };
    if (!part_commit(r, id, &part, intent))
        goto out;
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "CopyPartResult");
    gw_xml_elem_time(b, "LastModified", part.mtime_ms);
    gw_etag_quote(part.etag, q);
    gw_xml_elem(b, "ETag", q);
    gw_xml_close(b, "CopyPartResult");
out:
    gw_objw_abort(w); /* after a commit: only frees buffers */
    md_object_clear(&src);
}

/* ------------------------------------------------ CompleteMultipartUpload */
struct want_part {
    uint32_t num;
    cm_slice etag;     /* without quotes */
    cm_slice cksum;    /* Checksum<ALGO> value the client listed, or empty */
    enum gw_cksum_algo ck_algo;
};

/* Strips surrounding quotes (and the W/ nobody should send). */
static cm_slice unquote(cm_slice s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t' || s.p[0] == '\n' || s.p[0] == '\r')) {
        s.p++;
        s.n--;
    }
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t' || s.p[s.n - 1] == '\n' ||
                   s.p[s.n - 1] == '\r'))
        s.n--;
    if (s.n >= 2 && s.p[0] == '"' && s.p[s.n - 1] == '"') {
        s.p++;
        s.n -= 2;
    }
    return s;
}

static bool etag_eq(cm_slice a, cm_slice b)
{
    if (a.n != b.n)
        return false;
    return a.n == 0 || strncasecmp((const char *)a.p, (const char *)b.p, a.n) == 0;
}

/* Reads the CompleteMultipartUpload body into a pool array. Sets
 * MalformedXML (or InvalidPartOrder) and returns false when it is wrong. */
static bool parse_complete(gw_req *r, gw_xnode *root, struct want_part **out, size_t *nout)
{
    size_t n = 0;
    if (!root || strcmp(root->name, "CompleteMultipartUpload")) {
        gw_error(r, S3E_MalformedXML);
        return false;
    }
    for (gw_xnode *c = root->child; c; c = c->next)
        n += strcmp(c->name, "Part") == 0;
    if (n == 0 || n > GW_MAX_PARTS) {
        gw_error(r, n ? S3E_TooManyParts : S3E_MalformedXML);
        return false;
    }
    struct want_part *a = cm_pool_alloc(r->pool, n * sizeof *a);
    if (!a) {
        gw_error(r, S3E_InternalError);
        return false;
    }
    size_t i = 0;
    for (gw_xnode *c = root->child; c; c = c->next) {
        if (strcmp(c->name, "Part"))
            continue;
        gw_xnode *pn = gw_xml_child(c, "PartNumber"), *et = gw_xml_child(c, "ETag");
        uint64_t v;
        if (!pn || !et || !parse_uint(unquote(pn->text), 0, UINT32_MAX, &v)) {
            gw_error(r, S3E_MalformedXML);
            return false;
        }
        a[i].num = (uint32_t)v;
        a[i].etag = unquote(et->text);
        for (gw_xnode *k = c->child; k; k = k->next) {
            enum gw_cksum_algo algo;
            if (strncmp(k->name, "Checksum", 8) || !k->name[8] ||
                gw_cksum_algo_parse(CM_SLICE_STR(k->name + 8), &algo))
                continue;
            a[i].ck_algo = algo;
            a[i].cksum = unquote(k->text);
        }
        i++;
    }
    *out = a;
    *nout = n;
    return true;
}

/* Wraps the write precondition to tell its NOTFOUND (If-Match on a missing
 * object) apart from md's (the upload went away). */
struct cond_wrap {
    md_precond_fn fn;
    void *arg;
    bool fn_failed;
};

static int cond_wrap_cb(void *arg, const md_object *cur)
{
    struct cond_wrap *c = arg;
    int rc = c->fn ? c->fn(c->arg, cur) : 0;
    if (rc)
        c->fn_failed = true;
    return rc;
}

/* Location URL of the new object: public_url or http://Host, path style. */
static const char *object_location(gw_req *r)
{
    cm_buf b = {0};
    const char *base = r->srv->cfg.public_url;
    if (base && *base) {
        size_t n = strlen(base);
        while (n && base[n - 1] == '/')
            n--;
        cm_buf_append(&b, base, n);
    } else {
        cm_buf_append_str(&b, "http://");
        cm_buf_append_slice(&b, r->host);
    }
    cm_buf_append_byte(&b, '/');
    cm_buf_append_str(&b, r->bucket);
    cm_buf_append_byte(&b, '/');
    cm_uri_encode(&b, r->key, false);
    const char *s = cm_pool_strndup(r->pool, b.p ? b.p : (const uint8_t *)"", b.n);
    cm_buf_free(&b);
    return s;
}

/* What the listed parts add up to. */
struct assembly {
    cm_buf layout;            /* concatenated part layouts */
    uint64_t size;
    uint32_t *keep;           /* listed part numbers (pool) */
    char etag[48];            /* hex(MD5(part MD5s)) "-" count */
    enum gw_cksum_algo algo;  /* the upload's checksum algorithm, or NONE */
    bool composite;           /* ck64 holds the object's composite checksum */
    char ck64[GW_CKSUM_MAX_B64 + 8]; /* base64 "-" count */
};

/* Sets InvalidPart with the details S3 gives. */
static void invalid_part(gw_req *r, cm_slice id, const struct want_part *w)
{
    char num[16];
    snprintf(num, sizeof num, "%u", w->num);
    gw_error(r, S3E_InvalidPart);
    gw_error_extra(r, "UploadId", id);
    gw_error_extra(r, "PartNumber", CM_SLICE_STR(num));
    gw_error_extra(r, "ETag", w->etag);
}

static void entity_too_small(gw_req *r, const md_part *p)
{
    char num[16], sz[24], q[80];
    snprintf(num, sizeof num, "%u", p->num);
    snprintf(sz, sizeof sz, "%llu", (unsigned long long)p->size);
    gw_etag_quote(p->etag, q);
    gw_error(r, S3E_EntityTooSmall);
    gw_error_extra(r, "ProposedSize", CM_SLICE_STR(sz));
    gw_error_extra(r, "MinSizeAllowed", CM_SLICE_STR("5242880"));
    gw_error_extra(r, "PartNumber", CM_SLICE_STR(num));
    gw_error_extra(r, "ETag", CM_SLICE_STR(q));
}

/* Checks the listed parts against the stored ones (both in ascending order)
 * and assembles the object: layout, size, ETag of ETags, composite
 * checksum. false with an error set. */
static bool assemble(gw_req *r, cm_slice id, const struct want_part *want, size_t nwant,
                     const md_part *have, size_t nhave, struct assembly *a)
{
    gw_cksum md5 = {0}, ck = {0};
    uint8_t dig[GW_CKSUM_MAX_DIGEST];
    size_t dn = 0, j = 0;
    bool ok = false;
    int rc;

    a->keep = cm_pool_alloc(r->pool, nwant * sizeof *a->keep);
    if (!a->keep || gw_cksum_init(&md5, GW_CKSUM_MD5) ||
        (a->composite && gw_cksum_init(&ck, a->algo))) {
        gw_error(r, S3E_InternalError);
        goto out;
    }
    for (size_t i = 0; i < nwant; i++) {
        while (j < nhave && have[j].num < want[i].num)
            j++;
        const md_part *p = j < nhave && have[j].num == want[i].num ? &have[j] : NULL;
        uint8_t bin[16];
        enum gw_cksum_algo pa = GW_CKSUM_NONE;
        cm_slice pv = CM_SLICE_NULL;
        if (!p || !etag_eq(p->etag, want[i].etag) || p->etag.n != 32 ||
            cm_hex_decode((const char *)p->etag.p, 32, bin)) {
            invalid_part(r, id, &want[i]);
            goto out;
        }
        bool has_ck = part_cksum(p->cksum, &pa, &pv);
        if (want[i].cksum.n &&
            (!has_ck || pa != want[i].ck_algo || !cm_slice_eq(pv, want[i].cksum))) {
            invalid_part(r, id, &want[i]);
            goto out;
        }
        if (i + 1 < nwant && p->size < GW_MIN_PART) {
            entity_too_small(r, p);
            goto out;
        }
        if (a->composite) {
            uint8_t d[GW_CKSUM_MAX_DIGEST];
            if (!has_ck || pa != a->algo || gw_cksum_decode_b64(pa, pv, d)) {
                a->composite = false; /* a part without one: the object gets none */
                gw_cksum_free(&ck);
            } else {
                gw_cksum_update(&ck, d, gw_cksum_digest_size(pa));
            }
        }
        gw_cksum_update(&md5, bin, 16);
        if ((rc = cs_layout_append(&a->layout, p->layout))) {
            cm_log(CM_LOG_ERROR, "%s: part %u layout: %s", r->id, p->num, cm_strerror(rc));
            gw_error(r, S3E_InternalError);
            goto out;
        }
        a->size += p->size;
        a->keep[i] = p->num;
    }
    if (a->size > GW_MAX_OBJECT) {
        gw_error(r, S3E_EntityTooLarge);
        goto out;
    }
    if (gw_cksum_final(&md5, dig, &dn) || dn != 16) {
        gw_error(r, S3E_InternalError);
        goto out;
    }
    cm_hex_encode(dig, 16, a->etag);
    snprintf(a->etag + 32, sizeof a->etag - 32, "-%u", (unsigned)nwant);
    if (a->composite) {
        if (gw_cksum_final_b64(&ck, a->ck64)) {
            a->composite = false;
        } else {
            size_t l = strlen(a->ck64);
            snprintf(a->ck64 + l, sizeof a->ck64 - l, "-%u", (unsigned)nwant);
        }
    }
    ok = true;
out:
    gw_cksum_free(&md5);
    gw_cksum_free(&ck);
    return ok;
}

/* The final object: the upload's headers (minus our bookkeeping), plus the
 * composite checksum. false with an error set. */
static bool final_object(gw_req *r, const md_upload *u, const struct assembly *a,
                         md_object *obj)
{
    memset(obj, 0, sizeof *obj);
    obj->hdrs = cm_pool_alloc(r->pool, (u->tmpl.nhdrs + 2) * sizeof *obj->hdrs);
    if (!obj->hdrs) {
        gw_error(r, S3E_InternalError);
        return false;
    }
    for (size_t i = 0; i < u->tmpl.nhdrs; i++) {
        const md_kv *h = &u->tmpl.hdrs[i];
        if (cm_slice_eq_str(h->name, HDR_CK_ALGO) || cm_slice_eq_str(h->name, HDR_CK_TYPE))
            continue;
        obj->hdrs[obj->nhdrs++] = *h;
    }
    if (a->composite) {
        obj->hdrs[obj->nhdrs].name = CM_SLICE_STR(gw_cksum_header_name(a->algo));
        obj->hdrs[obj->nhdrs++].value = CM_SLICE_STR(a->ck64);
        obj->hdrs[obj->nhdrs].name = CM_SLICE_STR(HDR_CK_TYPE);
        obj->hdrs[obj->nhdrs++].value = CM_SLICE_STR("COMPOSITE");
    }
    obj->size = a->size;
    obj->mtime_ms = cm_now_ms();
    obj->etag = CM_SLICE(a->etag, strlen(a->etag));
    obj->layout = cm_buf_slice(&a->layout);
    return true;
}

static void complete_result(gw_req *r, const struct assembly *a)
{
    char q[80], en[32];
    if (a->composite) {
        gw_set_hdr(r, gw_cksum_header_name(a->algo), a->ck64);
        gw_set_hdr(r, HDR_CK_TYPE, "COMPOSITE");
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "CompleteMultipartUploadResult");
    gw_xml_elem(b, "Location", object_location(r));
    gw_xml_elem(b, "Bucket", r->bucket);
    gw_xml_elem_slice(b, "Key", r->key);
    gw_etag_quote(CM_SLICE(a->etag, strlen(a->etag)), q);
    gw_xml_elem(b, "ETag", q);
    if (a->composite) {
        cksum_elem_name(a->algo, en, sizeof en);
        gw_xml_elem(b, en, a->ck64);
        gw_xml_elem(b, "ChecksumType", "COMPOSITE");
    }
    gw_xml_close(b, "CompleteMultipartUploadResult");
}

void gw_complete_multipart_upload(gw_req *r)
{
    void *doc = NULL;
    struct want_part *want = NULL;
    size_t nwant = 0, nhave = 0;
    md_part *have = NULL;
    bool truncated = false;
    md_upload u;
    md_object obj;
    struct assembly a;
    struct cond_wrap cw = {0};
    cm_slice id, v;
    int rc;

    memset(&a, 0, sizeof a);
    if (!gw_bucket_exists(r) || !upload_id_param(r, &id))
        return;
    if (!upload_get(r, id, &u))
        return;
    gw_xnode *root = gw_xml_parse(cm_buf_slice(&r->body), &doc);
    if (!parse_complete(r, root, &want, &nwant))
        goto out;
    for (size_t i = 1; i < nwant; i++) {
        if (want[i].num <= want[i - 1].num) {
            gw_error(r, S3E_InvalidPartOrder);
            goto out;
        }
    }
    if (!gw_write_cond(r, &cw.fn, &cw.arg))
        goto out;
    rc = md_part_list(r->srv->md, r->bucket, r->key, id, 0, GW_MAX_PARTS, &have, &nhave,
                      &truncated);
    if (rc) {
        if (rc != CM_ENOTFOUND)
            cm_log(CM_LOG_ERROR, "%s: listing parts failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchUpload));
        goto out;
    }
    /* The upload's checksum algorithm decides the object's checksum. */
    if (hdr_value(&u.tmpl, HDR_CK_ALGO, &v) && gw_cksum_algo_parse(v, &a.algo) == 0) {
        cm_slice t;
        a.composite = !(hdr_value(&u.tmpl, HDR_CK_TYPE, &t) && cm_slice_eq_str(t, "FULL_OBJECT"));
    }
    if (!assemble(r, id, want, nwant, have, nhave, &a) || !final_object(r, &u, &a, &obj))
        goto out;

    gw_manifest mf;
    if (gw_manifest_attach_req(r, &obj, &mf, 0))
        goto out;
    gw_evt_begin(r, EVT_CREATED_MPU, r->key);
    rc = md_upload_complete_ex(r->srv->md, r->bucket, r->key, id, &obj, a.keep, nwant,
                               &(md_write_opts){cond_wrap_cb, &cw, gw_commit_hook, r,
                                                mf.intent_id});
    gw_evt_end(r, rc);
    gw_manifest_done(r->srv, &mf, rc);
    if (rc == 0) {
        complete_result(r, &a);
    } else if (rc == CM_ENOTFOUND && !cw.fn_failed) {
        gw_error(r, S3E_NoSuchUpload);
    } else if (rc == CM_EINVAL && !cw.fn_failed) {
        gw_error(r, S3E_InvalidPart); /* a listed part vanished meanwhile */
    } else {
        if (!cw.fn_failed)
            cm_log(CM_LOG_ERROR, "%s: completing upload failed: %s", r->id, cm_strerror(rc));
        gw_write_commit_error(r, rc, cw.arg);
    }
out:
    cm_buf_free(&a.layout);
    free(have);
    md_upload_clear(&u);
    gw_xml_doc_free(doc);
}

/* ------------------------------------------------- AbortMultipartUpload */
void gw_abort_multipart_upload(gw_req *r)
{
    cm_slice id;
    if (!gw_bucket_exists(r) || !upload_id_param(r, &id))
        return;
    int rc = md_upload_abort(r->srv->md, r->bucket, r->key, id);
    if (rc) {
        if (rc != CM_ENOTFOUND)
            cm_log(CM_LOG_ERROR, "%s: aborting upload failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchUpload));
        return;
    }
    r->status = 204;
}

/* ------------------------------------------------------------ ListParts */
void gw_list_parts(gw_req *r)
{
    cm_slice id, v;
    md_upload u;
    uint64_t marker = 0, max = LIST_PARTS_MAX;
    md_part *parts = NULL;
    size_t n = 0;
    bool truncated = false;
    enum gw_cksum_algo algo = GW_CKSUM_NONE;

    if (!gw_bucket_exists(r) || !upload_id_param(r, &id))
        return;
    if (gw_param(r, "part-number-marker", &v) && v.n &&
        !parse_uint(v, 0, UINT32_MAX, &marker)) {
        gw_error_msg(r, S3E_InvalidArgument,
                     "Provided part-number-marker not an integer or within integer range");
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR("part-number-marker"));
        gw_error_extra(r, "ArgumentValue", v);
        return;
    }
    if (gw_param(r, "max-parts", &v)) {
        if (!parse_uint(v, 0, UINT64_MAX / 2, &max)) {
            gw_error_msg(r, S3E_InvalidArgument,
                         "Provided max-parts not an integer or within integer range");
            gw_error_extra(r, "ArgumentName", CM_SLICE_STR("max-parts"));
            gw_error_extra(r, "ArgumentValue", v);
            return;
        }
        if (max > LIST_PARTS_MAX)
            max = LIST_PARTS_MAX;
    }
    if (!upload_get(r, id, &u))
        return;
    if (hdr_value(&u.tmpl, HDR_CK_ALGO, &v))
        gw_cksum_algo_parse(v, &algo);
    int rc = max ? md_part_list(r->srv->md, r->bucket, r->key, id, (uint32_t)marker,
                                (size_t)max, &parts, &n, &truncated)
                 : 0;
    if (rc) {
        if (rc != CM_ENOTFOUND)
            cm_log(CM_LOG_ERROR, "%s: listing parts failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchUpload));
        md_upload_clear(&u);
        return;
    }

    cm_buf *b = &r->resp_body;
    char q[80], en[32];
    gw_xml_start(b, "ListPartsResult");
    gw_xml_elem(b, "Bucket", r->bucket);
    gw_xml_elem_slice(b, "Key", r->key);
    gw_xml_elem_slice(b, "UploadId", id);
    gw_xml_elem_u64(b, "PartNumberMarker", marker);
    gw_xml_elem_u64(b, "NextPartNumberMarker", n ? parts[n - 1].num : 0);
    gw_xml_elem_u64(b, "MaxParts", max);
    gw_xml_elem(b, "IsTruncated", truncated ? "true" : "false");
    for (size_t i = 0; i < n; i++) {
        const md_part *p = &parts[i];
        enum gw_cksum_algo pa;
        cm_slice pv;
        gw_xml_open(b, "Part");
        gw_xml_elem_u64(b, "PartNumber", p->num);
        gw_xml_elem_time(b, "LastModified", p->mtime_ms);
        gw_etag_quote(p->etag, q);
        gw_xml_elem(b, "ETag", q);
        gw_xml_elem_u64(b, "Size", p->size);
        if (part_cksum(p->cksum, &pa, &pv)) {
            cksum_elem_name(pa, en, sizeof en);
            gw_xml_elem_slice(b, en, pv);
        }
        gw_xml_close(b, "Part");
    }
    gw_xml_owner(r, b, "Initiator");
    gw_xml_owner(r, b, "Owner");
    gw_xml_elem(b, "StorageClass", GW_STORAGE_CLASS);
    if (algo != GW_CKSUM_NONE)
        gw_xml_elem(b, "ChecksumAlgorithm", gw_cksum_algo_name(algo));
    gw_xml_close(b, "ListPartsResult");
    free(parts);
    md_upload_clear(&u);
}

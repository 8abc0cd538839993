/* gateway/router.c - names the S3 operation of a request: splits host and
 * path into bucket and key (path style or virtual-hosted style), decodes the
 * query, and maps (method, bucket?, key?, subresource, headers) to an
 * enum gw_op. Table-driven; no S3 logic beyond naming. */
#include "gateway/gw_int.h"

/* Subresources that name bucket or object features not built yet: a request
 * carrying one answers NotImplemented rather than being mistaken for a plain
 * GET/PUT of the bucket or object. */
static const char *const unbuilt_subresources[] = {
    "policyStatus", "lifecycle", "tagging", "website",
    "replication", "encryption", "object-lock", "retention", "legal-hold",
    "torrent", "restore", "select", "accelerate", "requestPayment", "ownershipControls",
    "publicAccessBlock", "analytics", "metrics", "inventory", "intelligent-tiering",
    "attributes", "session", NULL};

struct route {
    const char *method;
    int scope;             /* 0: service, 1: bucket, 2: object */
    const char *param;     /* required query parameter, or NULL */
    const char *header;    /* required header, or NULL */
    enum gw_op op;
};

/* First match wins: more specific rows come first. */
static const struct route routes[] = {
    {"GET", 0, NULL, NULL, GW_OP_ListBuckets},
    {"PUT", 1, "notification", NULL, GW_OP_PutBucketNotificationConfiguration},
    {"GET", 1, "notification", NULL, GW_OP_GetBucketNotificationConfiguration},
    {"PUT", 1, "policy", NULL, GW_OP_PutBucketPolicy},
    {"GET", 1, "policy", NULL, GW_OP_GetBucketPolicy},
    {"DELETE", 1, "policy", NULL, GW_OP_DeleteBucketPolicy},
    {"PUT", 1, "cors", NULL, GW_OP_PutBucketCors},
    {"GET", 1, "cors", NULL, GW_OP_GetBucketCors},
    {"DELETE", 1, "cors", NULL, GW_OP_DeleteBucketCors},
    {"OPTIONS", 1, NULL, NULL, GW_OP_CorsPreflight},
    {"OPTIONS", 2, NULL, NULL, GW_OP_CorsPreflight},
    {"PUT", 1, "logging", NULL, GW_OP_PutBucketLogging},
    {"GET", 1, "logging", NULL, GW_OP_GetBucketLogging},
    {"GET", 1, "location", NULL, GW_OP_GetBucketLocation},
    {"GET", 1, "acl", NULL, GW_OP_GetAcl},
    {"PUT", 1, "acl", NULL, GW_OP_PutAcl},
    {"GET", 2, "acl", NULL, GW_OP_GetAcl},
    {"PUT", 2, "acl", NULL, GW_OP_PutAcl},
    {"GET", 1, "versioning", NULL, GW_OP_GetBucketVersioning},
    {"GET", 1, "uploads", NULL, GW_OP_ListMultipartUploads},
    {"GET", 1, "versions", NULL, GW_OP_ListObjectVersions},
    {"GET", 1, "list-type", NULL, GW_OP_ListObjectsV2},
    {"GET", 1, NULL, NULL, GW_OP_ListObjects},
    {"PUT", 1, NULL, NULL, GW_OP_CreateBucket},
    {"HEAD", 1, NULL, NULL, GW_OP_HeadBucket},
    {"DELETE", 1, NULL, NULL, GW_OP_DeleteBucket},
    {"POST", 1, "delete", NULL, GW_OP_DeleteObjects},
    {"PUT", 2, "uploadId", "x-amz-copy-source", GW_OP_UploadPartCopy},
    {"PUT", 2, "uploadId", NULL, GW_OP_UploadPart},
    {"PUT", 2, NULL, "x-amz-copy-source", GW_OP_CopyObject},
    {"PUT", 2, NULL, NULL, GW_OP_PutObject},
    {"GET", 2, "uploadId", NULL, GW_OP_ListParts},
    {"GET", 2, NULL, NULL, GW_OP_GetObject},
    {"HEAD", 2, NULL, NULL, GW_OP_HeadObject},
    {"DELETE", 2, "uploadId", NULL, GW_OP_AbortMultipartUpload},
    {"DELETE", 2, NULL, NULL, GW_OP_DeleteObject},
    {"POST", 2, "uploads", NULL, GW_OP_CreateMultipartUpload},
    {"POST", 2, "uploadId", NULL, GW_OP_CompleteMultipartUpload},
};

bool gw_param(const gw_req *r, const char *name, cm_slice *out)
{
    for (size_t i = 0; i < r->nparams; i++) {
        if (cm_slice_eq_str(r->params[i].name, name)) {
            if (out)
                *out = r->params[i].value;
            return true;
        }
    }
    return false;
}

bool gw_param_has(const gw_req *r, const char *name) { return gw_param(r, name, NULL); }

const char *gw_param_str(gw_req *r, const char *name)
{
    cm_slice v;
    if (!gw_param(r, name, &v))
        return NULL;
    return cm_pool_strndup(r->pool, v.p, v.n);
}

/* Splits the raw query into decoded parameters. */
static int parse_query(gw_req *r)
{
    cm_slice q = r->raw_query;
    size_t n = 1;
    for (size_t i = 0; i < q.n; i++)
        n += q.p[i] == '&';
    r->params = cm_pool_alloc(r->pool, n * sizeof(gw_kv));
    r->nparams = 0;
    size_t i = 0;
    while (i < q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        if (j > i) {
            cm_slice part = CM_SLICE(q.p + i, j - i);
            const uint8_t *eq = memchr(part.p, '=', part.n);
            cm_slice name = eq ? CM_SLICE(part.p, (size_t)(eq - part.p)) : part;
            cm_slice val = eq ? CM_SLICE(eq + 1, part.n - name.n - 1) : CM_SLICE_NULL;
            /* decoded straight into the pool: never longer than encoded */
            uint8_t *dn = cm_pool_alloc(r->pool, name.n + 1);
            uint8_t *dv = cm_pool_alloc(r->pool, val.n + 1);
            size_t nn, nv;
            if (!dn || !dv || cm_uri_decode_into(name, true, dn, &nn) ||
                cm_uri_decode_into(val, true, dv, &nv))
                return CM_EINVAL;
            gw_kv *kv = &r->params[r->nparams++];
            kv->name = CM_SLICE(dn, nn);
            kv->value = CM_SLICE(dv, nv);
            kv->has_value = eq != NULL;
        }
        i = j + 1;
    }
    return 0;
}

/* Host without port, lowercased, into out. */
static void host_name(cm_slice host, char *out, size_t outsz)
{
    size_t n = 0;
    for (size_t i = 0; i < host.n && n + 1 < outsz; i++) {
        char c = (char)host.p[i];
        if (c == ':')
            break;
        out[n++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[n] = 0;
}

int gw_route(gw_req *r)
{
    if (parse_query(r)) {
        gw_error_msg(r, S3E_InvalidArgument, "The query string is not correctly encoded.");
        return -1;
    }
    cm_slice path = r->raw_path;
    if (path.n == 0 || path.p[0] != '/') {
        gw_error(r, S3E_InvalidRequest);
        return -1;
    }
    /* cairn's own endpoints: bucket names cannot start with '_'. */
    if (cm_slice_has_prefix(path, CM_SLICE_STR("/_cairn/"))) {
        r->op = cm_slice_has_prefix(path, CM_SLICE_STR("/_cairn/admin/")) ? GW_OP_Admin
                                                                           : GW_OP_AdminPublic;
        return 0;
    }
    /* Virtual-hosted style: BUCKET.DOMAIN */
    char host[256];
    host_name(r->host, host, sizeof host);
    cm_slice bucket = CM_SLICE_NULL, rest;
    const char *dom = r->srv->cfg.domain;
    size_t hl = strlen(host), dl = dom ? strlen(dom) : 0;
    if (dom && hl > dl + 1 && host[hl - dl - 1] == '.' && strcmp(host + hl - dl, dom) == 0) {
        bucket = CM_SLICE(host, hl - dl - 1);
        rest = CM_SLICE(path.p + 1, path.n - 1);
    } else {
        const uint8_t *slash = memchr(path.p + 1, '/', path.n - 1);
        size_t bl = slash ? (size_t)(slash - path.p - 1) : path.n - 1;
        bucket = CM_SLICE(path.p + 1, bl);
        rest = slash ? CM_SLICE(slash + 1, path.n - bl - 2) : CM_SLICE_NULL;
    }
    if (bucket.n) {
        uint8_t *db = cm_pool_alloc(r->pool, bucket.n + 1);
        size_t dbn = 0;
        if (!db || cm_uri_decode_into(bucket, false, db, &dbn) || dbn > 63 ||
            memchr(db, 0, dbn)) {
            /* Never a valid bucket: keep a printable form for errors. */
            snprintf(r->bucket, sizeof r->bucket, "%.*s", (int)(bucket.n > 63 ? 63 : bucket.n),
                     (const char *)bucket.p);
            r->bucket_invalid = true;
        } else {
            memcpy(r->bucket, db, dbn);
            r->bucket[dbn] = 0;
        }
    }
    if (rest.n) {
        /* decoded straight into the pool (NUL-terminated, as before) */
        uint8_t *dk = cm_pool_alloc(r->pool, rest.n + 1);
        size_t dkn;
        if (!dk || cm_uri_decode_into(rest, false, dk, &dkn)) {
            gw_error_msg(r, S3E_InvalidArgument, "The key is not correctly encoded.");
            return -1;
        }
        r->key = CM_SLICE(dk, dkn);
        r->has_key = true;
    }
    int scope = r->has_key ? 2 : r->bucket[0] ? 1 : 0;
    for (const char *const *s = unbuilt_subresources; *s; s++) {
        if (scope && gw_param_has(r, *s)) {
            r->op = GW_OP_NotImplementedOp;
            return 0;
        }
    }
    bool method_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *rt = &routes[i];
        if (!cm_slice_eq_str(r->method, rt->method))
            continue;
        method_known = true;
        if (rt->scope != scope)
            continue;
        if (rt->param && !gw_param_has(r, rt->param))
            continue;
        if (rt->header && !gw_hdr(r, rt->header, NULL))
            continue;
        r->op = rt->op;
        if (r->has_key && r->key.n > MD_KEY_MAX) {
            gw_error(r, S3E_KeyTooLongError);
            return -1;
        }
        return 0;
    }
    (void)method_known;
    gw_error(r, S3E_MethodNotAllowed);
    return -1;
}

/* The operation table: ops.def rows, in enum order. */
const gw_op_def gw_ops[GW_OP__COUNT] = {
#define OP(name, body, begin, data, end, abort) {#name, GW_BODY_##body, begin, data, end, abort},
#include "gateway/ops.def"
#undef OP
};

/* gateway/s3_list.c - the listing operations: ListObjects (v1),
 * ListObjectsV2 (continuation tokens), ListObjectVersions (an unversioned
 * bucket: each object is its one "null" version) and ListMultipartUploads.
 * Query parsing and XML rendering only; md_object_list / md_upload_list do
 * prefix, delimiter and marker semantics. */
#include "gateway/gw_int.h"
#include <stdio.h>
#include <stdlib.h>

#define LIST_MAX 1000 /* max-keys / max-uploads default and cap */

/* What every listing takes from the query. */
struct list_q {
    cm_slice prefix;
    cm_slice delimiter;
    bool has_delimiter;
    size_t max;
    bool url;           /* encoding-type=url */
};

/* Parses a non-negative decimal count; capped at LIST_MAX. Sets
 * InvalidArgument and returns false when it is not a number. */
static bool parse_max(gw_req *r, const char *name, size_t *out)
{
    cm_slice v;
    *out = LIST_MAX;
    if (!gw_param(r, name, &v))
        return true;
    uint64_t n = 0;
    bool okv = v.n > 0;
    for (size_t i = 0; i < v.n && okv; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            okv = false;
        else if (n < LIST_MAX)
            n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    if (!okv) {
        char msg[96];
        snprintf(msg, sizeof msg, "Provided %s not an integer or within integer range", name);
        gw_error_msg(r, S3E_InvalidArgument, msg);
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR(name));
        gw_error_extra(r, "ArgumentValue", v);
        return false;
    }
    *out = n > LIST_MAX ? LIST_MAX : (size_t)n;
    return true;
}

/* Common query parameters; false with an error set. */
static bool list_query(gw_req *r, const char *max_name, struct list_q *q)
{
    memset(q, 0, sizeof *q);
    gw_param(r, "prefix", &q->prefix);
    q->has_delimiter = gw_param(r, "delimiter", &q->delimiter) && q->delimiter.n > 0;
    cm_slice enc;
    if (gw_param(r, "encoding-type", &enc)) {
        if (!cm_slice_eq_str(enc, "url")) {
            gw_error_msg(r, S3E_InvalidArgument, "Invalid Encoding Method specified in Request");
            gw_error_extra(r, "ArgumentName", CM_SLICE_STR("encoding-type"));
            gw_error_extra(r, "ArgumentValue", enc);
            return false;
        }
        q->url = true;
    }
    return parse_max(r, max_name, &q->max);
}

/* <name>value</name>, URL-encoded first when the client asked for it
 * (encoding-type=url: '/' stays, everything outside A-Za-z0-9-_.~ is %XX,
 * which botocore and the SDKs decode with unquote_plus). */
static void key_elem(cm_buf *b, const char *name, cm_slice v, bool url)
{
    if (!url) {
        gw_xml_elem_slice(b, name, v);
        return;
    }
    cm_buf e = {0};
    if (cm_uri_encode(&e, v, false) == 0)
        gw_xml_elem_slice(b, name, cm_buf_slice(&e));
    cm_buf_free(&e);
}

static void etag_elem(cm_buf *b, cm_slice etag)
{
    char q[80];
    if (etag.n > 70)
        etag.n = 70; /* never from a sane record; keep within q */
    gw_etag_quote(etag, q);
    gw_xml_elem(b, "ETag", q);
}

/* One object inside <Contents> or <Version>: the fields after the key. */
static void obj_fields(gw_req *r, cm_buf *b, const md_object *o, bool owner)
{
    gw_xml_elem_time(b, "LastModified", o->mtime_ms);
    etag_elem(b, o->etag);
    gw_xml_elem_u64(b, "Size", o->size);
    if (owner)
        gw_xml_owner(r, b, "Owner");
    gw_xml_elem(b, "StorageClass", GW_STORAGE_CLASS);
}

static void common_prefixes(cm_buf *b, const md_list_res *res, bool url)
{
    for (size_t i = 0; i < res->n; i++) {
        if (!res->a[i].is_prefix)
            continue;
        gw_xml_open(b, "CommonPrefixes");
        key_elem(b, "Prefix", res->a[i].key, url);
        gw_xml_close(b, "CommonPrefixes");
    }
}

/* Runs md_object_list; false with an error set. */
static bool do_list(gw_req *r, const struct list_q *q, cm_slice start_after, md_list_res *res)
{
    md_list_req req = {
        .bucket = r->bucket,
        .prefix = q->prefix,
        .delimiter = q->has_delimiter ? q->delimiter : CM_SLICE_NULL,
        .start_after = start_after,
        .max_keys = q->max,
    };
    int rc = md_object_list(r->srv->md, &req, res);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
        return false;
    }
    return true;
}

/* What ListObjects v1 and v2 answer alike after their own leading
 * elements: MaxKeys .. CommonPrefixes, then the end of the document. Frees
 * res. */
static void list_body(gw_req *r, cm_buf *b, const struct list_q *q, md_list_res *res,
                      bool owner)
{
    gw_xml_elem_u64(b, "MaxKeys", q->max);
    if (q->has_delimiter)
        key_elem(b, "Delimiter", q->delimiter, q->url);
    if (q->url)
        gw_xml_elem(b, "EncodingType", "url");
    gw_xml_elem(b, "IsTruncated", res->truncated ? "true" : "false");
    for (size_t i = 0; i < res->n; i++) {
        if (res->a[i].is_prefix)
            continue;
        gw_xml_open(b, "Contents");
        key_elem(b, "Key", res->a[i].key, q->url);
        obj_fields(r, b, &res->a[i].obj, owner);
        gw_xml_close(b, "Contents");
    }
    common_prefixes(b, res, q->url);
    gw_xml_close(b, "ListBucketResult");
    md_list_res_free(res);
}

/* ------------------------------------------------------ ListObjects (v1) */
void gw_list_objects(gw_req *r)
{
    struct list_q q;
    cm_slice marker = CM_SLICE_NULL;
    md_list_res res = {0};

    if (!gw_bucket_exists(r) || !list_query(r, "max-keys", &q))
        return;
    gw_param(r, "marker", &marker);
    if (!do_list(r, &q, marker, &res))
        return;

    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "ListBucketResult");
    gw_xml_elem(b, "Name", r->bucket);
    /* botocore does not URL-decode Prefix in v1 responses: send it as is. */
    gw_xml_elem_slice(b, "Prefix", q.prefix);
    key_elem(b, "Marker", marker, q.url);
    if (q.has_delimiter && res.truncated && res.n)
        key_elem(b, "NextMarker", res.a[res.n - 1].key, q.url);
    list_body(r, b, &q, &res, true);
}

/* ----------------------------------------------------- ListObjectsV2 */
/* Continuation tokens are base64 of the last key or common prefix returned:
 * opaque to clients, and listing resumes strictly after it. */
static const char *token_encode(gw_req *r, cm_slice last)
{
    char *t = cm_pool_alloc(r->pool, 4 * ((last.n + 2) / 3) + 1);
    if (t)
        cm_base64_encode(last.p, last.n, t);
    return t;
}

static bool token_decode(gw_req *r, cm_slice tok, cm_slice *out)
{
    uint8_t *p = cm_pool_alloc(r->pool, 3 * (tok.n / 4) + 3);
    size_t n = 0;
    if (!p || tok.n == 0 || tok.n > 4 * ((MD_KEY_MAX + 2) / 3) ||
        cm_base64_decode((const char *)tok.p, tok.n, p, &n) || n == 0 || n > MD_KEY_MAX) {
        gw_error_msg(r, S3E_InvalidArgument, "The continuation token provided is incorrect");
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR("continuation-token"));
        return false;
    }
    *out = CM_SLICE(p, n);
    return true;
}

void gw_list_objects_v2(gw_req *r)
{
    struct list_q q;
    cm_slice lt, token = CM_SLICE_NULL, start_after = CM_SLICE_NULL, from;
    bool has_token, fetch_owner = false;
    md_list_res res = {0};

    if (!gw_bucket_exists(r))
        return;
    if (gw_param(r, "list-type", &lt) && !cm_slice_eq_str(lt, "2")) {
        gw_error_msg(r, S3E_InvalidArgument, "Invalid List Type specified in Request");
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR("list-type"));
        gw_error_extra(r, "ArgumentValue", lt);
        return;
    }
    if (!list_query(r, "max-keys", &q))
        return;
    has_token = gw_param(r, "continuation-token", &token);
    gw_param(r, "start-after", &start_after);
    cm_slice fo;
    if (gw_param(r, "fetch-owner", &fo))
        fetch_owner = cm_slice_case_eq_str(fo, "true");
    from = start_after;
    if (has_token && !token_decode(r, token, &from))
        return;
    if (!do_list(r, &q, from, &res))
        return;

    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "ListBucketResult");
    gw_xml_elem(b, "Name", r->bucket);
    key_elem(b, "Prefix", q.prefix, q.url);
    if (has_token)
        gw_xml_elem_slice(b, "ContinuationToken", token);
    if (start_after.n)
        key_elem(b, "StartAfter", start_after, q.url);
    if (res.truncated && res.n) {
        const char *next = token_encode(r, res.a[res.n - 1].key);
        if (next)
            gw_xml_elem(b, "NextContinuationToken", next);
    }
    gw_xml_elem_u64(b, "KeyCount", res.n);
    list_body(r, b, &q, &res, fetch_owner);
}

/* ------------------------------------------------ ListObjectVersions */
void gw_list_object_versions(gw_req *r)
{
    struct list_q q;
    cm_slice key_marker = CM_SLICE_NULL, vid_marker = CM_SLICE_NULL;
    bool has_vid;
    md_list_res res = {0};

    if (!gw_bucket_exists(r) || !list_query(r, "max-keys", &q))
        return;
    gw_param(r, "key-marker", &key_marker);
    has_vid = gw_param(r, "version-id-marker", &vid_marker) && vid_marker.n > 0;
    if (has_vid && key_marker.n == 0) {
        gw_error_msg(r, S3E_InvalidArgument,
                     "A version-id marker cannot be specified without a key marker.");
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR("version-id-marker"));
        gw_error_extra(r, "ArgumentValue", vid_marker);
        return;
    }
    if (has_vid && !cm_slice_eq_str(vid_marker, "null")) {
        gw_error_msg(r, S3E_InvalidArgument, "Invalid version id specified");
        gw_error_extra(r, "ArgumentName", CM_SLICE_STR("version-id-marker"));
        gw_error_extra(r, "ArgumentValue", vid_marker);
        return;
    }
    /* One version per key: after (key, "null") is after key. */
    if (!do_list(r, &q, key_marker, &res))
        return;

    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "ListVersionsResult");
    gw_xml_elem(b, "Name", r->bucket);
    key_elem(b, "Prefix", q.prefix, q.url);
    key_elem(b, "KeyMarker", key_marker, q.url);
    gw_xml_elem_slice(b, "VersionIdMarker", has_vid ? vid_marker : CM_SLICE_NULL);
    if (res.truncated && res.n) {
        const md_list_ent *last = &res.a[res.n - 1];
        key_elem(b, "NextKeyMarker", last->key, q.url);
        if (!last->is_prefix)
            gw_xml_elem(b, "NextVersionIdMarker", "null");
    }
    gw_xml_elem_u64(b, "MaxKeys", q.max);
    if (q.has_delimiter)
        key_elem(b, "Delimiter", q.delimiter, q.url);
    if (q.url)
        gw_xml_elem(b, "EncodingType", "url");
    gw_xml_elem(b, "IsTruncated", res.truncated ? "true" : "false");
    for (size_t i = 0; i < res.n; i++) {
        if (res.a[i].is_prefix)
            continue;
        gw_xml_open(b, "Version");
        key_elem(b, "Key", res.a[i].key, q.url);
        gw_xml_elem(b, "VersionId", "null");
        gw_xml_elem(b, "IsLatest", "true");
        obj_fields(r, b, &res.a[i].obj, true);
        gw_xml_close(b, "Version");
    }
    common_prefixes(b, &res, q.url);
    gw_xml_close(b, "ListVersionsResult");
    md_list_res_free(&res);
}

/* ---------------------------------------------- ListMultipartUploads */
void gw_list_multipart_uploads(gw_req *r)
{
    struct list_q q;
    cm_slice key_marker = CM_SLICE_NULL, id_marker = CM_SLICE_NULL;
    md_upload_list_res res = {0};

    if (!gw_bucket_exists(r) || !list_query(r, "max-uploads", &q))
        return;
    gw_param(r, "key-marker", &key_marker);
    gw_param(r, "upload-id-marker", &id_marker);
    if (key_marker.n == 0)
        id_marker = CM_SLICE_NULL; /* S3 ignores it without a key marker */
    int rc = md_upload_list(r->srv->md, r->bucket, q.prefix,
                            q.has_delimiter ? q.delimiter : CM_SLICE_NULL, key_marker, id_marker,
                            q.max, &res);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
        return;
    }

    /* Where the next page starts: the later of the last upload and the last
     * common prefix (md resumes past a prefix given as the key marker). */
    cm_slice next_key = CM_SLICE_NULL, next_id = CM_SLICE_NULL;
    if (res.truncated) {
        if (res.n) {
            next_key = res.a[res.n - 1].key;
            next_id = res.a[res.n - 1].upload_id;
        }
        if (res.nprefixes) {
            cm_slice p = res.prefixes[res.nprefixes - 1];
            if (!res.n || cm_slice_cmp(p, next_key) > 0) {
                next_key = p;
                next_id = CM_SLICE_NULL;
            }
        }
    }

    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "ListMultipartUploadsResult");
    gw_xml_elem(b, "Bucket", r->bucket);
    key_elem(b, "KeyMarker", key_marker, q.url);
    gw_xml_elem_slice(b, "UploadIdMarker", id_marker);
    key_elem(b, "NextKeyMarker", next_key, q.url);
    gw_xml_elem_slice(b, "NextUploadIdMarker", next_id);
    if (q.has_delimiter)
        key_elem(b, "Delimiter", q.delimiter, q.url);
    key_elem(b, "Prefix", q.prefix, q.url);
    gw_xml_elem_u64(b, "MaxUploads", q.max);
    if (q.url)
        gw_xml_elem(b, "EncodingType", "url");
    gw_xml_elem(b, "IsTruncated", res.truncated ? "true" : "false");
    for (size_t i = 0; i < res.n; i++) {
        const md_upload *u = &res.a[i];
        gw_xml_open(b, "Upload");
        key_elem(b, "Key", u->key, q.url);
        gw_xml_elem_slice(b, "UploadId", u->upload_id);
        gw_xml_owner(r, b, "Initiator");
        gw_xml_owner(r, b, "Owner");
        gw_xml_elem(b, "StorageClass", GW_STORAGE_CLASS);
        gw_xml_elem_time(b, "Initiated", u->ctime_ms);
        gw_xml_close(b, "Upload");
    }
    for (size_t i = 0; i < res.nprefixes; i++) {
        gw_xml_open(b, "CommonPrefixes");
        key_elem(b, "Prefix", res.prefixes[i], q.url);
        gw_xml_close(b, "CommonPrefixes");
    }
    gw_xml_close(b, "ListMultipartUploadsResult");
    md_upload_list_res_free(&res);
}

/* gateway/s3_buckets.c - bucket operations: ListBuckets, CreateBucket,
 * HeadBucket, DeleteBucket, GetBucketLocation, GetBucketVersioning, and the
 * bucket name rules. */
#include "gateway/gw_int.h"
#include <ctype.h>

/* S3's rules for new bucket names (general purpose buckets). */
static bool bucket_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '.' || c == '-'))
            return false;
        if (c == '.' && (s[i + 1] == '.' || s[i + 1] == '-' || (i && s[i - 1] == '-')))
            return false;
    }
    if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    int a, b, c, d;
    char tail;
    if (sscanf(s, "%d.%d.%d.%d%c", &a, &b, &c, &d, &tail) == 4)
        return false; /* formatted like an IP address */
    if (!strncmp(s, "xn--", 4) || !strncmp(s, "sthree-", 7))
        return false;
    if (n > 8 && !strcmp(s + n - 8, "-s3alias"))
        return false;
    if (n > 6 && !strcmp(s + n - 6, "--ol-s3"))
        return false;
    return true;
}

bool gw_bucket_exists(gw_req *r)
{
    md_bucket b;
    if (r->bucket_invalid) {
        gw_error(r, S3E_NoSuchBucket);
        return false;
    }
    int rc = md_bucket_get(r->srv->md, r->bucket, &b);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
        return false;
    }
    return true;
}

void gw_list_buckets(gw_req *r)
{
    md_bucket *a = NULL;
    size_t n = 0;
    int rc = md_bucket_list(r->srv->md, &a, &n);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return;
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "ListAllMyBucketsResult");
    gw_xml_owner(r, b, "Owner");
    gw_xml_open(b, "Buckets");
    for (size_t i = 0; i < n; i++) {
        gw_xml_open(b, "Bucket");
        gw_xml_elem(b, "Name", a[i].name);
        gw_xml_elem_time(b, "CreationDate", a[i].ctime_ms);
        gw_xml_elem(b, "BucketRegion", a[i].region[0] ? a[i].region : r->srv->cfg.region);
        gw_xml_close(b, "Bucket");
    }
    gw_xml_close(b, "Buckets");
    gw_xml_close(b, "ListAllMyBucketsResult");
    free(a);
}

void gw_create_bucket(gw_req *r)
{
    if (r->bucket_invalid || !bucket_name_valid(r->bucket)) {
        gw_error(r, S3E_InvalidBucketName);
        return;
    }
    const char *region = r->srv->cfg.region;
    if (r->body.n) {
        void *doc = NULL;
        gw_xnode *root = gw_xml_parse(cm_buf_slice(&r->body), &doc);
        if (!root || strcmp(root->name, "CreateBucketConfiguration")) {
            gw_xml_doc_free(doc);
            gw_error(r, S3E_MalformedXML);
            return;
        }
        gw_xnode *lc = gw_xml_child(root, "LocationConstraint");
        bool ok = !lc || lc->text.n == 0 || cm_slice_eq_str(lc->text, region) ||
                  (cm_slice_eq_str(lc->text, "US") && !strcmp(region, "us-east-1"));
        gw_xml_doc_free(doc);
        if (!ok) {
            gw_error_msg(r, S3E_IllegalLocationConstraintException,
                         "The specified location-constraint is not valid for this endpoint.");
            return;
        }
    }
    md_bucket b;
    memset(&b, 0, sizeof b);
    snprintf(b.name, sizeof b.name, "%s", r->bucket);
    snprintf(b.region, sizeof b.region, "%s", region);
    b.ctime_ms = cm_now_ms();
    int rc = md_bucket_create(r->srv->md, &b);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return;
    }
    char loc[80];
    snprintf(loc, sizeof loc, "/%s", r->bucket);
    gw_set_hdr(r, "Location", loc);
}

void gw_head_bucket(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    gw_set_hdr(r, "x-amz-bucket-region", r->srv->cfg.region);
}

void gw_delete_bucket(gw_req *r)
{
    if (r->bucket_invalid) {
        gw_error(r, S3E_NoSuchBucket);
        return;
    }
    int rc = md_bucket_delete(r->srv->md, r->bucket);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
        return;
    }
    gw_evt_bucket_deleted(r->srv, r->bucket);
    r->status = 204;
}

void gw_get_bucket_location(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    cm_buf *b = &r->resp_body;
    cm_buf_append_str(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint "
                         "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    if (strcmp(r->srv->cfg.region, "us-east-1"))
        gw_xml_escape(b, CM_SLICE_STR(r->srv->cfg.region));
    cm_buf_append_str(b, "</LocationConstraint>");
}

void gw_get_bucket_versioning(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "VersioningConfiguration");
    gw_xml_close(b, "VersioningConfiguration");
}

void gw_op_notimpl(gw_req *r)
{
    gw_error_msg(r, S3E_NotImplemented,
                 "A header or query parameter you provided implies functionality that is not "
                 "implemented");
}

/* ACLs: every bucket and object is private to its owner (full control).
 * GET answers that; PUT accepts only what leaves it so ("private", or an
 * AccessControlPolicy granting the owner FULL_CONTROL and nothing else). */
void gw_get_acl(gw_req *r)
{
    if (!gw_bucket_exists(r) || (r->has_key && !gw_version_ok(r)))
        return;
    if (r->has_key) {
        md_object o;
        int rc = md_object_get(r->srv->md, r->bucket, r->key, &o);
        if (rc) {
            gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchKey));
            return;
        }
        md_object_clear(&o);
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "AccessControlPolicy");
    gw_xml_owner(r, b, "Owner");
    gw_xml_open(b, "AccessControlList");
    cm_buf_append_str(b, "<Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
                         "xsi:type=\"CanonicalUser\">");
    gw_xml_elem(b, "ID", r->srv->owner_id);
    gw_xml_elem(b, "DisplayName", r->srv->owner_name);
    cm_buf_append_str(b, "</Grantee><Permission>FULL_CONTROL</Permission></Grant>");
    gw_xml_close(b, "AccessControlList");
    gw_xml_close(b, "AccessControlPolicy");
}

void gw_put_acl(gw_req *r)
{
    if (!gw_bucket_exists(r) || (r->has_key && !gw_version_ok(r)))
        return;
    if (r->has_key) {
        md_object o;
        int rc = md_object_get(r->srv->md, r->bucket, r->key, &o);
        if (rc) {
            gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchKey));
            return;
        }
        md_object_clear(&o);
    }
    cm_slice canned;
    if (gw_hdr(r, "x-amz-acl", &canned)) {
        if (!cm_slice_eq_str(canned, "private") && !cm_slice_eq_str(canned, "bucket-owner-full-control"))
            gw_error_msg(r, S3E_NotImplemented, "Only the private ACL is supported; use a bucket policy to share objects.");
        return;
    }
    for (size_t i = 0; i < r->nhdrs; i++) {
        if (cm_slice_has_prefix(r->hdrs[i].name, CM_SLICE_STR("x-amz-grant-")) ||
            cm_slice_has_prefix(r->hdrs[i].name, CM_SLICE_STR("X-Amz-Grant-"))) {
            gw_error_msg(r, S3E_NotImplemented, "Grants are not supported; use a bucket policy to share objects.");
            return;
        }
    }
    if (r->body.n == 0) {
        gw_error(r, S3E_MalformedXML);
        return;
    }
    void *doc = NULL;
    gw_xnode *root = gw_xml_parse(cm_buf_slice(&r->body), &doc);
    gw_xnode *acl = root ? gw_xml_child(root, "AccessControlList") : NULL;
    if (!root || strcmp(root->name, "AccessControlPolicy") || !acl) {
        gw_xml_doc_free(doc);
        gw_error(r, S3E_MalformedXML);
        return;
    }
    bool only_owner = true;
    for (gw_xnode *g = acl->child; g; g = g->next) {
        gw_xnode *ge = gw_xml_child(g, "Grantee");
        gw_xnode *id = ge ? gw_xml_child(ge, "ID") : NULL;
        gw_xnode *perm = gw_xml_child(g, "Permission");
        if (!id || !cm_slice_eq_str(id->text, r->srv->owner_id) || !perm ||
            !cm_slice_eq_str(perm->text, "FULL_CONTROL"))
            only_owner = false;
    }
    gw_xml_doc_free(doc);
    if (!only_owner)
        gw_error_msg(r, S3E_NotImplemented, "Only the owner's FULL_CONTROL grant is supported; use a bucket policy to share objects.");
}

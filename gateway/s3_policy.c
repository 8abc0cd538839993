/* gateway/s3_policy.c - PutBucketPolicy, GetBucketPolicy and
 * DeleteBucketPolicy: the JSON document is checked (gw_policy_check,
 * authz.c) and stored as sent; evaluation is authz.c's. */
#include "gateway/gw_int.h"

void gw_put_bucket_policy(gw_req *r)
{
    const char *msg = NULL;
    if (!gw_bucket_exists(r))
        return;
    if (gw_policy_check(cm_buf_slice(&r->body), r->bucket, &msg)) {
        gw_error_msg(r, S3E_MalformedPolicy, msg);
        return;
    }
    int rc = md_bucket_doc_put(r->srv->md, MD_DOC_POLICY, r->bucket, cm_buf_slice(&r->body));
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
        return;
    }
    r->status = 204;
}

void gw_get_bucket_policy(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    int rc = md_bucket_doc_get(r->srv->md, MD_DOC_POLICY, r->bucket, &r->resp_body);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucketPolicy));
        return;
    }
    r->content_type = "application/json";
}

void gw_delete_bucket_policy(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    int rc = md_bucket_doc_delete(r->srv->md, MD_DOC_POLICY, r->bucket);
    if (rc && rc != CM_ENOTFOUND) { /* deleting no policy succeeds, as on AWS */
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucketPolicy));
        return;
    }
    r->status = 204;
}

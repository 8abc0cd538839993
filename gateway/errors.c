/* gateway/errors.c - the S3 error table (s3_errors.def) and the rendering of
 * <Error> bodies; gw_s3err_from_cm() is the only place internal error codes
 * become S3 ones. */
#include "gateway/gw_int.h"

static const struct {
    const char *code;
    int status;
    const char *msg;
} errtab[S3E__COUNT] = {
    [S3E__NONE] = {"", 200, ""},
#define S3E(name, st, m) [S3E_##name] = {#name, st, m},
#include "gateway/s3_errors.def"
#undef S3E
};

int gw_s3err_status(enum s3_err e) { return errtab[e].status; }
const char *gw_s3err_code(enum s3_err e) { return errtab[e].code; }
const char *gw_s3err_message(enum s3_err e) { return errtab[e].msg; }

enum s3_err gw_s3err_from_cm(int cm_err, enum s3_err not_found)
{
    switch (cm_err) {
    case 0:
        return S3E__NONE;
    case CM_ENOTFOUND:
        return not_found;
    case CM_EPRECOND:
        return S3E_PreconditionFailed;
    case CM_ENOTEMPTY:
        return S3E_BucketNotEmpty;
    case CM_EEXISTS:
        return S3E_BucketAlreadyOwnedByYou;
    case CM_ETOOBIG:
        return S3E_EntityTooLarge;
    case CM_ERANGE:
        return S3E_InvalidRange;
    case CM_EINVAL:
        return S3E_InvalidArgument;
    case CM_ECONFLICT:
        return S3E_ConditionalRequestConflict;
    case CM_EUNAVAIL:
        return S3E_ServiceUnavailable; /* too few storage nodes reachable */
    default:
        return S3E_InternalError;
    }
}

void gw_error(gw_req *r, enum s3_err e)
{
    gw_error_msg(r, e, NULL);
}

void gw_error_msg(gw_req *r, enum s3_err e, const char *msg)
{
    if (r->err != S3E__NONE)
        return;
    r->err = e;
    r->status = errtab[e].status;
    r->err_msg = msg ? cm_pool_strndup(r->pool, msg, strlen(msg)) : NULL;
}

void gw_error_extra(gw_req *r, const char *name, cm_slice value)
{
    cm_buf_printf(&r->err_extra, "<%s>", name);
    gw_xml_escape(&r->err_extra, value);
    cm_buf_printf(&r->err_extra, "</%s>", name);
}

void gw_error_render(gw_req *r)
{
    cm_buf *b = &r->resp_body;
    cm_buf_reset(b);
    r->stream = NULL;
    r->resp_ref = CM_SLICE_NULL;
    if (r->status == 304 || r->head_only)
        return; /* no body; the code travels in headers only */
    cm_buf_append_str(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    gw_xml_elem(b, "Code", errtab[r->err].code);
    gw_xml_elem(b, "Message", r->err_msg ? r->err_msg : errtab[r->err].msg);
    cm_buf_append_slice(b, cm_buf_slice(&r->err_extra));
    if (r->bucket[0] && (r->err == S3E_NoSuchBucket || r->err == S3E_BucketNotEmpty ||
                         r->err == S3E_BucketAlreadyOwnedByYou ||
                         r->err == S3E_BucketAlreadyExists || r->err == S3E_InvalidBucketName))
        gw_xml_elem(b, "BucketName", r->bucket);
    if (r->has_key && (r->err == S3E_NoSuchKey))
        gw_xml_elem_slice(b, "Key", r->key);
    gw_xml_elem_slice(b, "Resource", r->raw_path);
    gw_xml_elem(b, "RequestId", r->id);
    gw_xml_elem(b, "HostId", r->host_id);
    cm_buf_append_str(b, "</Error>");
    r->content_type = "application/xml";
}

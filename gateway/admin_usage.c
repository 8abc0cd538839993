/* gateway/admin_usage.c - the admin group "usage": GET or POST
 * /_cairn/admin/usage?from=ISO&to=ISO&bucket=B&access_key=K&by=LIST answers
 * the usage report as JSON (billing/report.c). A request body, if any, is a
 * price sheet (billing/classify.c); without one the default R2 sheet is used. */
#include "gateway/gw_int.h"

#include <stdint.h>

void gw_admin_usage(gw_req *r, cm_slice rest)
{
    bill_query q = {.from_ms = INT64_MIN, .to_ms = INT64_MAX, .now_ms = cm_now_ms()};
    bill_prices p;
    char err[160];
    const char *s;
    cm_buf out = {0};
    int rc;

    if (rest.n > 1) {
        gw_json_error(r, 404, "NotFound", "no such usage endpoint");
        return;
    }
    if ((s = gw_param_str(r, "from")) && *s && bill_time_parse(s, &q.from_ms)) {
        gw_json_error(r, 400, "InvalidArgument", "from: want an ISO 8601 UTC time");
        return;
    }
    if ((s = gw_param_str(r, "to")) && *s && bill_time_parse(s, &q.to_ms)) {
        gw_json_error(r, 400, "InvalidArgument", "to: want an ISO 8601 UTC time");
        return;
    }
    if ((s = gw_param_str(r, "by")) && *s && bill_by_parse(s, &q.by)) {
        gw_json_error(r, 400, "InvalidArgument",
                      "by: want hour, day, bucket, access-key or operation");
        return;
    }
    q.bucket = gw_param_str(r, "bucket");
    q.access_key = gw_param_str(r, "access_key");
    if (q.bucket && !*q.bucket)
        q.bucket = NULL;
    if (r->body.n) {
        if (bill_prices_parse(cm_buf_slice(&r->body), &p, err, sizeof err)) {
            gw_json_error(r, 400, "InvalidPriceSheet", err);
            return;
        }
    } else {
        bill_prices_default(&p);
    }
    if ((rc = bill_report_json(r->srv->md, &q, &p, &out))) {
        cm_buf_free(&out);
        gw_json_error(r, 500, "InternalError", cm_strerror(rc));
        return;
    }
    gw_json_reply(r, 200, &out);
    cm_buf_free(&out);
}

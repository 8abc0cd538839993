/* gateway/admin.c - cairn's own HTTP API: /_cairn/health (liveness),
 * /_cairn/metrics (Prometheus text, filled by the parts that count) and the
 * root-only JSON admin API under /_cairn/admin/GROUP/..., dispatched to the
 * handler of the part that owns GROUP. */
#include "common/json.h"
#include "gateway/gw_int.h"

/* One row per admin group. Handlers live beside what they administer. */
static const struct {
    const char *group;
    gw_admin_fn fn;
} admin_groups[] = {
    {"info", gw_admin_info},
    {"functions", gw_admin_functions},
    {"targets", gw_admin_targets},
    {"events", gw_admin_events},
    {"usage", gw_admin_usage},
    {"users", gw_admin_users},
    {"policies", gw_admin_policies},
    {"limits", gw_admin_limits},
    {"heal", gw_admin_heal},
    {"scrub", gw_admin_scrub},
    {"gc", gw_admin_gc},
    {"nodes", gw_admin_nodes},
};

void gw_json_reply(gw_req *r, int status, cm_buf *b)
{
    cm_buf_reset(&r->resp_body);
    cm_buf_append_slice(&r->resp_body, cm_buf_slice(b));
    cm_buf_reset(b);
    r->status = status;
    r->content_type = "application/json";
}

void gw_json_error(gw_req *r, int status, const char *code, const char *msg)
{
    cm_buf b = {0};
    cm_buf_append_str(&b, "{\"error\":");
    cm_json_cstr(&b, code);
    cm_buf_append_str(&b, ",\"message\":");
    cm_json_cstr(&b, msg);
    cm_buf_append_str(&b, ",\"request_id\":");
    cm_json_cstr(&b, r->id);
    cm_buf_append_str(&b, "}\n");
    gw_json_reply(r, status, &b);
    cm_buf_free(&b);
}

/* GET /_cairn/admin/info: what this server is. */
void gw_admin_info(gw_req *r, cm_slice rest)
{
    (void)rest;
    cm_buf b = {0};
    cm_buf_printf(&b, "{\"version\":\"0.1.0\",\"region\":");
    cm_json_cstr(&b, r->srv->cfg.region);
    cm_buf_printf(&b, ",\"ec\":{\"k\":%d,\"m\":%d},\"data_dir\":", r->srv->cfg.ec_k,
                  r->srv->cfg.ec_m);
    cm_json_cstr(&b, r->srv->cfg.data_dir);
    cm_buf_append_str(&b, "}\n");
    gw_json_reply(r, 200, &b);
    cm_buf_free(&b);
}

void gw_admin(gw_req *r)
{
    /* Only the root credentials administer the server. */
    if (r->anonymous || strcmp(r->access_key, r->srv->access_key)) {
        gw_json_error(r, 403, "AccessDenied", "the admin API needs the root credentials");
        return;
    }
    cm_buf path = {0};
    cm_slice raw = CM_SLICE(r->raw_path.p + 14, r->raw_path.n - 14); /* after /_cairn/admin/ */
    if (cm_uri_decode(&path, raw, false)) {
        cm_buf_free(&path);
        gw_json_error(r, 400, "InvalidArgument", "bad escape in path");
        return;
    }
    const uint8_t *slash = memchr(path.p, '/', path.n);
    cm_slice group = CM_SLICE(path.p, slash ? (size_t)(slash - path.p) : path.n);
    cm_slice rest = slash ? CM_SLICE(slash, path.n - group.n) : CM_SLICE_NULL;
    for (size_t i = 0; i < sizeof admin_groups / sizeof admin_groups[0]; i++) {
        if (cm_slice_eq_str(group, admin_groups[i].group)) {
            admin_groups[i].fn(r, rest);
            cm_buf_free(&path);
            return;
        }
    }
    cm_buf_free(&path);
    gw_json_error(r, 404, "NotFound", "no such admin endpoint");
}

void gw_admin_public(gw_req *r)
{
    if (cm_slice_eq_str(r->raw_path, "/_cairn/metrics")) {
        cm_buf b = {0};
        gw_metrics_render(r->srv, &b);
        cm_buf_reset(&r->resp_body);
        cm_buf_append_slice(&r->resp_body, cm_buf_slice(&b));
        cm_buf_free(&b);
        r->status = 200;
        r->content_type = "text/plain; version=0.0.4; charset=utf-8";
        return;
    }
    if (cm_slice_eq_str(r->raw_path, "/_cairn/health")) {
        cm_buf b = {0};
        cm_buf_append_str(&b, "{\"status\":\"ok\"}\n");
        gw_json_reply(r, 200, &b);
        cm_buf_free(&b);
        return;
    }
    gw_json_error(r, 404, "NotFound", "no such endpoint");
}

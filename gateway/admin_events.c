/* gateway/admin_events.c - admin groups "functions", "targets" and
 * "events" of /_cairn/admin: JSON in and out, handed to the events part.
 *   GET    functions                 PUT functions/NAME {"exec","timeout","concurrency","env"}
 *   DELETE functions/NAME            GET functions/NAME/logs[?bytes=N]
 *   GET    targets                   PUT targets/NAME {"kind","url"}     DELETE targets/NAME
 *   GET    events/pending|dead[?limit=N]   POST events/replay {"ids":[..]} (none: all)
 *   GET    events/changes?bucket=B[&since=SEQUENCER][&limit=N] */
#include "common/json.h"
#include "events/evt.h"
#include "gateway/gw_int.h"
#include <stdio.h>
#include <stdlib.h>

static bool is(gw_req *r, const char *m) { return cm_slice_eq_str(r->method, m); }

/* rest "/NAME[/tail]" -> name (NUL-terminated, <= 63) and tail slice. */
static bool name_of(cm_slice rest, char *name, cm_slice *tail)
{
    if (rest.n < 2 || rest.p[0] != '/')
        return false;
    const uint8_t *s = memchr(rest.p + 1, '/', rest.n - 1);
    size_t n = s ? (size_t)(s - rest.p - 1) : rest.n - 1;
    if (n == 0 || n > 63 || memchr(rest.p + 1, 0, n))
        return false;
    memcpy(name, rest.p + 1, n);
    name[n] = 0;
    *tail = s ? CM_SLICE(s, rest.n - n - 1) : CM_SLICE_NULL;
    return true;
}

static void reply_rc(gw_req *r, int rc, const char *why, const char *what)
{
    if (rc == CM_EINVAL)
        gw_json_error(r, 400, "InvalidArgument", why ? why : "invalid argument");
    else if (rc == CM_ENOTFOUND)
        gw_json_error(r, 404, "NotFound", what);
    else
        gw_json_error(r, 500, "InternalError", cm_strerror(rc));
}

static void reply_list(gw_req *r, const char *field, int rc, cm_buf *arr)
{
    cm_buf b = {0};
    if (rc) {
        reply_rc(r, rc, NULL, "not found");
    } else {
        cm_buf_printf(&b, "{\"%s\":", field);
        cm_buf_append_slice(&b, cm_buf_slice(arr));
        cm_buf_append_str(&b, "}\n");
        gw_json_reply(r, 200, &b);
    }
    cm_buf_free(&b);
}

static void reply_ok(gw_req *r)
{
    cm_buf b = {0};
    cm_buf_append_str(&b, "{\"ok\":true}\n");
    gw_json_reply(r, 200, &b);
    cm_buf_free(&b);
}

static size_t param_num(gw_req *r, const char *name, size_t dflt)
{
    const char *v = gw_param_str(r, name);
    return v && *v ? (size_t)strtoull(v, NULL, 10) : dflt;
}

void gw_admin_functions(gw_req *r, cm_slice rest)
{
    evt_t *e = r->srv->evt;
    char name[64];
    cm_slice tail;
    cm_buf b = {0};
    int rc;

    if (rest.n <= 1 && is(r, "GET")) {
        rc = evt_function_list_json(e, &b);
        reply_list(r, "functions", rc, &b);
    } else if (!name_of(rest, name, &tail)) {
        gw_json_error(r, 404, "NotFound", "no such admin endpoint");
    } else if (tail.n == 0 && is(r, "PUT")) {
        cm_json_doc *d = NULL;
        if (cm_json_parse(cm_buf_slice(&r->body), &d)) {
            gw_json_error(r, 400, "InvalidArgument", "the body is not JSON");
            return;
        }
        const cm_json *j = cm_json_root(d), *env = cm_json_get(j, "env");
        const char *envs[64], *why = NULL;
        size_t n = 0;
        for (const cm_json *x = env ? env->child : NULL; x && n < 64; x = x->next)
            if (x->type == CM_JSON_STRING)
                envs[n++] = (const char *)x->str.p;
        rc = evt_function_put(e, name, cm_json_get_str(j, "exec"),
                              (int)cm_json_get_num(j, "timeout", 60),
                              (int)cm_json_get_num(j, "concurrency", 1), envs, n, &why);
        if (rc)
            reply_rc(r, rc, why, "no such function");
        else
            reply_ok(r);
        cm_json_doc_free(d);
    } else if (tail.n == 0 && is(r, "DELETE")) {
        rc = evt_function_remove(e, name);
        if (rc)
            reply_rc(r, rc, NULL, "no such function");
        else
            reply_ok(r);
    } else if (cm_slice_eq_str(tail, "/logs") && is(r, "GET")) {
        cm_buf log = {0};
        rc = evt_function_log(e, name, param_num(r, "bytes", 65536), &log);
        if (rc) {
            reply_rc(r, rc, NULL, "no such function");
        } else {
            cm_buf_append_str(&b, "{\"name\":");
            cm_json_cstr(&b, name);
            cm_buf_append_str(&b, ",\"log\":");
            cm_json_str(&b, cm_buf_slice(&log));
            cm_buf_append_str(&b, "}\n");
            gw_json_reply(r, 200, &b);
        }
        cm_buf_free(&log);
    } else {
        gw_json_error(r, 405, "MethodNotAllowed", "not allowed here");
    }
    cm_buf_free(&b);
}

void gw_admin_targets(gw_req *r, cm_slice rest)
{
    evt_t *e = r->srv->evt;
    char name[64];
    cm_slice tail;
    cm_buf b = {0};
    int rc;

    if (rest.n <= 1 && is(r, "GET")) {
        rc = evt_target_list_json(e, &b);
        reply_list(r, "targets", rc, &b);
    } else if (!name_of(rest, name, &tail) || tail.n) {
        gw_json_error(r, 404, "NotFound", "no such admin endpoint");
    } else if (is(r, "PUT")) {
        cm_json_doc *d = NULL;
        const char *why = NULL;
        if (cm_json_parse(cm_buf_slice(&r->body), &d)) {
            gw_json_error(r, 400, "InvalidArgument", "the body is not JSON");
            return;
        }
        const cm_json *j = cm_json_root(d);
        rc = evt_target_put(e, name, cm_json_get_str(j, "kind"), cm_json_get_str(j, "url"), &why);
        if (rc)
            reply_rc(r, rc, why, "no such target");
        else
            reply_ok(r);
        cm_json_doc_free(d);
    } else if (is(r, "DELETE")) {
        rc = evt_target_remove(e, name);
        if (rc)
            reply_rc(r, rc, NULL, "no such target");
        else
            reply_ok(r);
    } else {
        gw_json_error(r, 405, "MethodNotAllowed", "not allowed here");
    }
    cm_buf_free(&b);
}

void gw_admin_events(gw_req *r, cm_slice rest)
{
    evt_t *e = r->srv->evt;
    cm_buf b = {0};
    int rc;

    if ((cm_slice_eq_str(rest, "/pending") || cm_slice_eq_str(rest, "/dead")) && is(r, "GET")) {
        bool dead = cm_slice_eq_str(rest, "/dead");
        evt_stats st;
        evt_get_stats(e, &st);
        cm_buf_append_str(&b, "{\"events\":");
        rc = evt_events_json(e, dead, param_num(r, "limit", 1000), &b);
        cm_buf_printf(&b, ",\"stats\":{\"pending\":%llu,\"resident\":%llu,\"delivered\":%llu,"
                          "\"failed\":%llu,\"probes\":%llu,\"dead\":%llu,"
                          "\"droppedByDepth\":%llu,\"calls\":%llu}}\n",
                      (unsigned long long)st.pending, (unsigned long long)st.resident,
                      (unsigned long long)st.delivered, (unsigned long long)st.failed,
                      (unsigned long long)st.probes, (unsigned long long)st.dead,
                      (unsigned long long)st.dropped_depth, (unsigned long long)st.calls);
        if (rc)
            reply_rc(r, rc, NULL, "not found");
        else
            gw_json_reply(r, 200, &b);
    } else if (cm_slice_eq_str(rest, "/replay") && is(r, "POST")) {
        cm_json_doc *d = NULL;
        uint64_t ids[1000];
        size_t n = 0, done = 0;
        if (r->body.n && cm_json_parse(cm_buf_slice(&r->body), &d)) {
            gw_json_error(r, 400, "InvalidArgument", "the body is not JSON");
            return;
        }
        const cm_json *a = d ? cm_json_get(cm_json_root(d), "ids") : NULL;
        for (const cm_json *x = a ? a->child : NULL; x && n < 1000; x = x->next)
            if (x->type == CM_JSON_NUMBER && x->num >= 1)
                ids[n++] = (uint64_t)x->num;
        bool asked = a && a->n;
        cm_json_doc_free(d);
        if (asked && !n) {
            gw_json_error(r, 400, "InvalidArgument", "ids are positive numbers");
            return;
        }
        rc = evt_replay(e, ids, n, &done);
        if (rc) {
            reply_rc(r, rc, NULL, "not found");
        } else {
            cm_buf_printf(&b, "{\"replayed\":%zu}\n", done);
            gw_json_reply(r, 200, &b);
        }
    } else if (cm_slice_eq_str(rest, "/changes") && is(r, "GET")) {
        const char *bucket = gw_param_str(r, "bucket"), *since = gw_param_str(r, "since");
        md_bucket bk;
        uint64_t after = 0;
        char *end = NULL;
        if (!bucket || !*bucket) {
            gw_json_error(r, 400, "InvalidArgument", "bucket=B is required");
            return;
        }
        if (since && *since) {
            after = strtoull(since, &end, 16);
            if (*end) {
                gw_json_error(r, 400, "InvalidArgument", "since is a sequencer (hex)");
                return;
            }
        }
        if (md_bucket_get(r->srv->md, bucket, &bk)) {
            gw_json_error(r, 404, "NoSuchBucket", "no such bucket");
            return;
        }
        rc = evt_changes_json(e, bucket, after, param_num(r, "limit", 1000), &b);
        cm_buf_append_byte(&b, '\n');
        if (rc)
            reply_rc(r, rc, NULL, "not found");
        else
            gw_json_reply(r, 200, &b);
    } else {
        gw_json_error(r, 404, "NotFound", "no such admin endpoint");
    }
    cm_buf_free(&b);
}

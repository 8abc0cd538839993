/* gateway/admin_users.c - the admin API groups for access control:
 * /_cairn/admin/users (create, list, enable, disable, remove users and their
 * keys), /_cairn/admin/policies (per-user bucket grants) and
 * /_cairn/admin/limits (rate limits). Root-only, like all of the admin API
 * (admin.c checks). The secret is in the answer to a create, nowhere else. */
#include "common/json.h"
#include "gateway/gw_int.h"
#include <stdio.h>
#include <stdlib.h>

/* Splits rest ("/a/b") into up to max segments; returns how many. */
static size_t split(cm_slice rest, cm_slice *seg, size_t max)
{
    size_t n = 0, i = 0;
    while (i < rest.n && n < max + 1) {
        while (i < rest.n && rest.p[i] == '/')
            i++;
        size_t j = i;
        while (j < rest.n && rest.p[j] != '/')
            j++;
        if (j > i) {
            if (n == max)
                return max + 1; /* too many */
            seg[n++] = CM_SLICE(rest.p + i, j - i);
        }
        i = j;
    }
    return n;
}

static bool method(gw_req *r, const char *m) { return cm_slice_eq_str(r->method, m); }

/* seg as a NUL-terminated string in the pool (NULL if it holds a NUL). */
static const char *seg_str(gw_req *r, cm_slice s)
{
    if (memchr(s.p, 0, s.n))
        return NULL;
    return cm_pool_strndup(r->pool, s.p, s.n);
}

static void reply_ok(gw_req *r, int status)
{
    cm_buf b = {0};
    cm_buf_append_str(&b, "{\"ok\":true}\n");
    gw_json_reply(r, status, &b);
    cm_buf_free(&b);
}

static void reply_cm(gw_req *r, int rc, const char *what)
{
    if (rc == CM_ENOTFOUND)
        gw_json_error(r, 404, "NotFound", what);
    else if (rc == CM_EEXISTS)
        gw_json_error(r, 409, "AlreadyExists", what);
    else if (rc == CM_EINVAL)
        gw_json_error(r, 400, "InvalidArgument", what);
    else
        gw_json_error(r, 500, "InternalError", cm_strerror(rc));
}

static void user_json(cm_buf *b, const md_user *u)
{
    char t[32];
    cm_time_iso8601_ms(u->ctime_ms, t);
    cm_buf_append_str(b, "{\"name\":");
    cm_json_cstr(b, u->name);
    cm_buf_append_str(b, ",\"access_key\":");
    cm_json_cstr(b, u->access_key);
    cm_buf_printf(b, ",\"enabled\":%s,\"created\":\"%s\"}", u->enabled ? "true" : "false", t);
}

/* A new key pair: access key "CK" + 18 base32 characters, secret 40
 * base64 characters (240 random bits). */
static int new_keys(md_user *u)
{
    static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    uint8_t rnd[30];
    int rc = cm_random_bytes(rnd, 18);
    if (rc)
        return rc;
    u->access_key[0] = 'C';
    u->access_key[1] = 'K';
    for (int i = 0; i < 18; i++)
        u->access_key[2 + i] = b32[rnd[i] & 31];
    u->access_key[20] = 0;
    if ((rc = cm_random_bytes(rnd, sizeof rnd)) == 0)
        cm_base64_encode(rnd, sizeof rnd, u->secret);
    cm_wipe(rnd, sizeof rnd);
    return rc;
}

void gw_admin_users(gw_req *r, cm_slice rest)
{
    cm_slice seg[2];
    size_t n = split(rest, seg, 2);
    const char *name = n >= 1 ? seg_str(r, seg[0]) : NULL;
    cm_buf b = {0};
    md_user u;
    int rc;

    memset(&u, 0, sizeof u);
    if (n == 0 && method(r, "GET")) {
        md_user *a = NULL;
        size_t cnt = 0;
        if ((rc = md_user_list(r->srv->md, &a, &cnt))) {
            reply_cm(r, rc, "cannot list users");
            return;
        }
        cm_buf_append_str(&b, "{\"users\":[");
        for (size_t i = 0; i < cnt; i++) {
            if (i)
                cm_buf_append_byte(&b, ',');
            user_json(&b, &a[i]);
        }
        cm_buf_append_str(&b, "]}\n");
        free(a);
        gw_json_reply(r, 200, &b);
    } else if (n == 1 && name && (method(r, "POST") || method(r, "PUT"))) {
        if (md_user_check_name(name)) {
            gw_json_error(r, 400, "InvalidArgument",
                          "user names are 1-64 characters of A-Z a-z 0-9 . _ @ + = -");
            return;
        }
        snprintf(u.name, sizeof u.name, "%s", name);
        u.enabled = true;
        u.ctime_ms = cm_now_ms();
        if ((rc = new_keys(&u)) || (rc = md_user_create(r->srv->md, &u))) {
            cm_wipe(&u, sizeof u);
            reply_cm(r, rc, "a user with that name already exists");
            return;
        }
        cm_log(CM_LOG_INFO, "%s: created user %s with access key %s", r->id, u.name,
               u.access_key);
        cm_buf_append_str(&b, "{\"name\":");
        cm_json_cstr(&b, u.name);
        cm_buf_append_str(&b, ",\"access_key\":");
        cm_json_cstr(&b, u.access_key);
        cm_buf_append_str(&b, ",\"secret_key\":");
        cm_json_cstr(&b, u.secret);
        cm_buf_append_str(&b, "}\n");
        gw_json_reply(r, 201, &b);
        cm_wipe(&u, sizeof u);
    } else if (n == 1 && name && method(r, "GET")) {
        if ((rc = md_user_get(r->srv->md, name, &u))) {
            reply_cm(r, rc, "no such user");
            return;
        }
        user_json(&b, &u);
        cm_buf_append_byte(&b, '\n');
        cm_wipe(&u, sizeof u);
        gw_json_reply(r, 200, &b);
    } else if (n == 1 && name && method(r, "DELETE")) {
        if ((rc = md_user_delete(r->srv->md, name))) {
            reply_cm(r, rc, "no such user");
            return;
        }
        cm_log(CM_LOG_INFO, "%s: removed user %s", r->id, name);
        reply_ok(r, 200);
    } else if (n == 2 && name && method(r, "POST") &&
               (cm_slice_eq_str(seg[1], "enable") || cm_slice_eq_str(seg[1], "disable"))) {
        bool en = cm_slice_eq_str(seg[1], "enable");
        if ((rc = md_user_set_enabled(r->srv->md, name, en))) {
            reply_cm(r, rc, "no such user");
            return;
        }
        cm_log(CM_LOG_INFO, "%s: %s user %s", r->id, en ? "enabled" : "disabled", name);
        reply_ok(r, 200);
    } else {
        gw_json_error(r, 404, "NotFound", "no such users endpoint");
    }
    cm_buf_free(&b);
}

/* ------------------------------------------------------------- policies */
static const struct {
    const char *name;
    uint32_t bit;
} allow_names[] = {
    {"read", MD_ALLOW_READ},
    {"write", MD_ALLOW_WRITE},
    {"list", MD_ALLOW_LIST},
    {"admin", MD_ALLOW_ADMIN},
};

/* "read,list" (or a JSON array of such names) -> bits; false on unknown. */
static bool allow_parse_one(cm_slice s, uint32_t *bits)
{
    size_t i = 0;
    while (i < s.n) {
        size_t j = i;
        while (j < s.n && s.p[j] != ',')
            j++;
        cm_slice w = CM_SLICE(s.p + i, j - i);
        bool hit = false;
        for (size_t k = 0; k < sizeof allow_names / sizeof allow_names[0]; k++) {
            if (cm_slice_eq_str(w, allow_names[k].name)) {
                *bits |= allow_names[k].bit;
                hit = true;
            }
        }
        if (!hit)
            return false;
        i = j + 1;
    }
    return true;
}

static void allow_json(cm_buf *b, uint32_t bits)
{
    cm_buf_append_byte(b, '[');
    bool first = true;
    for (size_t k = 0; k < sizeof allow_names / sizeof allow_names[0]; k++) {
        if (bits & allow_names[k].bit) {
            cm_buf_printf(b, "%s\"%s\"", first ? "" : ",", allow_names[k].name);
            first = false;
        }
    }
    cm_buf_append_byte(b, ']');
}

void gw_admin_policies(gw_req *r, cm_slice rest)
{
    cm_slice seg[2];
    size_t n = split(rest, seg, 2);
    const char *user = n >= 1 ? seg_str(r, seg[0]) : NULL;
    const char *bucket = n >= 2 ? seg_str(r, seg[1]) : NULL;
    cm_buf b = {0};
    int rc;

    if (n <= 1 && method(r, "GET")) {
        md_grant *a = NULL;
        size_t cnt = 0;
        if ((rc = md_grant_list(r->srv->md, user, &a, &cnt))) {
            reply_cm(r, rc, "cannot list grants");
            return;
        }
        cm_buf_append_str(&b, "{\"policies\":[");
        for (size_t i = 0; i < cnt; i++) {
            cm_buf_append_str(&b, i ? ",{\"user\":" : "{\"user\":");
            cm_json_cstr(&b, a[i].user);
            cm_buf_append_str(&b, ",\"bucket\":");
            cm_json_cstr(&b, a[i].bucket);
            cm_buf_append_str(&b, ",\"allow\":");
            allow_json(&b, a[i].allow);
            cm_buf_append_byte(&b, '}');
        }
        cm_buf_append_str(&b, "]}\n");
        free(a);
        gw_json_reply(r, 200, &b);
    } else if (n == 2 && user && bucket && (method(r, "PUT") || method(r, "POST"))) {
        cm_json_doc *doc = NULL;
        uint32_t bits = 0;
        bool ok = cm_json_parse(cm_buf_slice(&r->body), &doc) == 0;
        const cm_json *al = ok ? cm_json_get(cm_json_root(doc), "allow") : NULL;
        if (al && al->type == CM_JSON_STRING)
            ok = allow_parse_one(al->str, &bits);
        else if (al && al->type == CM_JSON_ARRAY)
            for (const cm_json *e = al->child; e && ok; e = e->next)
                ok = e->type == CM_JSON_STRING && allow_parse_one(e->str, &bits);
        else
            ok = false;
        cm_json_doc_free(doc);
        if (!ok || !bits) {
            gw_json_error(r, 400, "InvalidArgument",
                          "body must be {\"allow\": [\"read\"|\"write\"|\"list\"|\"admin\", ...]}");
            return;
        }
        if ((rc = md_grant_set(r->srv->md, user, bucket, bits))) {
            reply_cm(r, rc, rc == CM_EINVAL ? "invalid bucket name" : "no such user");
            return;
        }
        cm_log(CM_LOG_INFO, "%s: grant for user %s on bucket %s set", r->id, user, bucket);
        reply_ok(r, 200);
    } else if (n == 2 && user && bucket && method(r, "DELETE")) {
        if ((rc = md_grant_set(r->srv->md, user, bucket, 0))) {
            reply_cm(r, rc, "no such grant");
            return;
        }
        reply_ok(r, 200);
    } else {
        gw_json_error(r, 404, "NotFound", "no such policies endpoint");
    }
    cm_buf_free(&b);
}

/* --------------------------------------------------------------- limits */
static bool limit_kind(cm_slice s, enum md_limit_kind *k)
{
    if (cm_slice_eq_str(s, "key"))
        *k = MD_LIMIT_KEY;
    else if (cm_slice_eq_str(s, "bucket"))
        *k = MD_LIMIT_BUCKET;
    else
        return false;
    return true;
}

void gw_admin_limits(gw_req *r, cm_slice rest)
{
    cm_slice seg[2];
    size_t n = split(rest, seg, 2);
    enum md_limit_kind kind = MD_LIMIT_KEY;
    const char *name = n == 2 ? seg_str(r, seg[1]) : NULL;
    cm_buf b = {0};
    int rc;

    if (n == 0 && method(r, "GET")) {
        md_limit *a = NULL;
        size_t cnt = 0;
        if ((rc = md_limit_list(r->srv->md, &a, &cnt))) {
            reply_cm(r, rc, "cannot list limits");
            return;
        }
        cm_buf_append_str(&b, "{\"limits\":[");
        for (size_t i = 0; i < cnt; i++) {
            cm_buf_printf(&b, "%s{\"kind\":\"%s\",\"name\":", i ? "," : "",
                          a[i].kind == MD_LIMIT_KEY ? "key" : "bucket");
            cm_json_cstr(&b, a[i].name);
            cm_buf_printf(&b, ",\"rps\":%u,\"burst\":%u}", a[i].rps, a[i].burst);
        }
        cm_buf_append_str(&b, "]}\n");
        free(a);
        gw_json_reply(r, 200, &b);
        cm_buf_free(&b);
        return;
    }
    if (n != 2 || !name || !limit_kind(seg[0], &kind)) {
        gw_json_error(r, 404, "NotFound", "no such limits endpoint (key/K or bucket/B)");
        return;
    }
    if (method(r, "PUT") || method(r, "POST")) {
        cm_json_doc *doc = NULL;
        md_limit l;
        memset(&l, 0, sizeof l);
        l.kind = kind;
        snprintf(l.name, sizeof l.name, "%s", name);
        double rps = 0, burst = 0;
        if (cm_json_parse(cm_buf_slice(&r->body), &doc) == 0) {
            rps = cm_json_get_num(cm_json_root(doc), "rps", 0);
            burst = cm_json_get_num(cm_json_root(doc), "burst", rps);
        }
        cm_json_doc_free(doc);
        if (!(rps >= 1 && rps <= 1e6 && burst >= 1 && burst <= 1e6)) {
            gw_json_error(r, 400, "InvalidArgument",
                          "body must be {\"rps\": N, \"burst\": N} with 1 <= N <= 1000000");
            return;
        }
        l.rps = (uint32_t)rps;
        l.burst = (uint32_t)burst;
        rc = md_limit_set(r->srv->md, &l);
    } else if (method(r, "DELETE")) {
        rc = md_limit_delete(r->srv->md, kind, name);
    } else {
        gw_json_error(r, 405, "MethodNotAllowed", "use PUT, DELETE or GET");
        return;
    }
    if (!rc)
        rc = gw_ratelimit_reload(r->srv);
    if (rc) {
        reply_cm(r, rc, rc == CM_EINVAL ? "invalid access key or bucket name" : "no such limit");
        return;
    }
    reply_ok(r, 200);
}

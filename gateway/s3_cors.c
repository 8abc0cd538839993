/* gateway/s3_cors.c - CORS: PutBucketCors/GetBucketCors/DeleteBucketCors
 * (XML, stored in metadata in a canonical form), the OPTIONS preflight, and
 * the Access-Control-* headers added to responses whose Origin a rule
 * allows. Rule matching follows S3: first matching CORSRule wins. */
#include "gateway/gw_int.h"
#include <stdio.h>
#include <stdlib.h>

#define CORS_MAX_RULES 100

static const char *const cors_methods[] = {"GET", "PUT", "HEAD", "POST", "DELETE", NULL};

/* Parsed configuration: rules point into the XML document. */
typedef struct cors_conf {
    void *doc;
    gw_cors_rule *rules;   /* malloc()ed */
    size_t n;
} cors_conf;

static void cors_conf_free(cors_conf *c)
{
    gw_xml_doc_free(c->doc);
    free(c->rules);
    memset(c, 0, sizeof *c);
}

static cm_slice trim(cm_slice s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t' || s.p[0] == '\n' || s.p[0] == '\r'))
        s = CM_SLICE(s.p + 1, s.n - 1);
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t' || s.p[s.n - 1] == '\n' ||
                   s.p[s.n - 1] == '\r'))
        s.n--;
    return s;
}

/* Parses a CORSConfiguration. 0, or an S3 error code and *msg (static or
 * NULL for the default message). */
static enum s3_err cors_parse(cm_slice xml, cors_conf *out, const char **msg)
{
    cors_conf c = {0};
    enum s3_err e = S3E_MalformedXML;
    *msg = NULL;
    gw_xnode *root = gw_xml_parse(xml, &c.doc);
    if (!root || strcmp(root->name, "CORSConfiguration"))
        goto fail;
    size_t nr = 0;
    for (gw_xnode *n = root->child; n; n = n->next)
        nr += !strcmp(n->name, "CORSRule");
    if (nr == 0 || nr > CORS_MAX_RULES)
        goto fail;
    if (!(c.rules = calloc(nr, sizeof *c.rules))) {
        e = S3E_InternalError;
        goto fail;
    }
    for (gw_xnode *n = root->child; n; n = n->next) {
        if (strcmp(n->name, "CORSRule"))
            goto fail;
        gw_cors_rule *rl = &c.rules[c.n++];
        rl->max_age = -1;
        for (gw_xnode *f = n->child; f; f = f->next) {
            cm_slice t = trim(f->text);
            cm_slice *arr;
            size_t *cnt, cap;
            if (!strcmp(f->name, "AllowedOrigin")) {
                arr = rl->origins, cnt = &rl->norigins, cap = 16;
                const uint8_t *star = memchr(t.p, '*', t.n);
                if (star && memchr(star + 1, '*', t.n - (size_t)(star - t.p) - 1)) {
                    e = S3E_InvalidRequest;
                    *msg = "AllowedOrigin can not have more than one wildcard.";
                    goto fail;
                }
            } else if (!strcmp(f->name, "AllowedMethod")) {
                arr = rl->methods, cnt = &rl->nmethods, cap = 8;
                bool known = false;
                for (const char *const *m = cors_methods; *m; m++)
                    known |= cm_slice_eq_str(t, *m);
                if (!known) {
                    e = S3E_InvalidRequest;
                    *msg = "Found unsupported HTTP method in CORS config.";
                    goto fail;
                }
            } else if (!strcmp(f->name, "AllowedHeader")) {
                arr = rl->headers, cnt = &rl->nheaders, cap = 16;
            } else if (!strcmp(f->name, "ExposeHeader")) {
                arr = rl->expose, cnt = &rl->nexpose, cap = 16;
            } else if (!strcmp(f->name, "MaxAgeSeconds")) {
                char tmp[16], *end;
                if (t.n == 0 || t.n >= sizeof tmp)
                    goto fail;
                memcpy(tmp, t.p, t.n);
                tmp[t.n] = 0;
                rl->max_age = strtol(tmp, &end, 10);
                if (*end || rl->max_age < 0)
                    goto fail;
                continue;
            } else if (!strcmp(f->name, "ID")) {
                continue;
            } else {
                goto fail;
            }
            if (*cnt == cap || t.n == 0) {
                e = S3E_InvalidRequest;
                *msg = "Too many or empty entries in a CORSRule.";
                goto fail;
            }
            arr[(*cnt)++] = t;
        }
        if (!rl->norigins || !rl->nmethods)
            goto fail;
    }
    *out = c;
    return S3E__NONE;
fail:
    cors_conf_free(&c);
    return e;
}

/* Loads and parses the bucket's configuration; false when it has none. */
static bool cors_load(gw_req *r, cors_conf *c)
{
    cm_buf doc = {0};
    const char *msg;
    bool ok = md_bucket_doc_get(r->srv->md, MD_DOC_CORS, r->bucket, &doc) == 0 &&
              cors_parse(cm_buf_slice(&doc), c, &msg) == S3E__NONE;
    cm_buf_free(&doc);
    return ok;
}

bool gw_cors_rule_match(const gw_cors_rule *rule, cm_slice origin, cm_slice method,
                        cm_slice request_headers)
{
    bool ok = false;
    for (size_t i = 0; i < rule->norigins && !ok; i++)
        ok = gw_wild_match(rule->origins[i], origin, false);
    if (!ok)
        return false;
    ok = false;
    for (size_t i = 0; i < rule->nmethods && !ok; i++)
        ok = cm_slice_eq(rule->methods[i], method);
    if (!ok)
        return false;
    size_t i = 0;
    while (i < request_headers.n) {
        size_t j = i;
        while (j < request_headers.n && request_headers.p[j] != ',')
            j++;
        cm_slice h = trim(CM_SLICE(request_headers.p + i, j - i));
        i = j + 1;
        if (h.n == 0)
            continue;
        bool hit = false;
        for (size_t k = 0; k < rule->nheaders && !hit; k++)
            hit = gw_wild_match(rule->headers[k], h, true);
        if (!hit)
            return false;
    }
    return true;
}

/* "a, b, c" of a rule's list into b. */
static void join(cm_buf *b, const cm_slice *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            cm_buf_append_str(b, ", ");
        cm_buf_append_slice(b, a[i]);
    }
}

static void pair(cm_buf *out, const char *name, cm_slice value)
{
    cm_buf_append(out, name, strlen(name) + 1);
    cm_buf_append_slice(out, value);
    cm_buf_append_byte(out, 0);
}

/* The headers every allowed CORS response carries. */
static void allow_headers(cm_buf *out, const gw_cors_rule *rl, cm_slice origin)
{
    bool any = false;
    for (size_t i = 0; i < rl->norigins; i++)
        any |= cm_slice_eq_str(rl->origins[i], "*");
    cm_buf v = {0};
    pair(out, "Access-Control-Allow-Origin", any ? CM_SLICE_STR("*") : origin);
    join(&v, rl->methods, rl->nmethods);
    pair(out, "Access-Control-Allow-Methods", cm_buf_slice(&v));
    if (!any)
        pair(out, "Access-Control-Allow-Credentials", CM_SLICE_STR("true"));
    if (rl->nexpose) {
        cm_buf_reset(&v);
        join(&v, rl->expose, rl->nexpose);
        pair(out, "Access-Control-Expose-Headers", cm_buf_slice(&v));
    }
    if (rl->max_age >= 0) {
        cm_buf_reset(&v);
        cm_buf_printf(&v, "%ld", rl->max_age);
        pair(out, "Access-Control-Max-Age", cm_buf_slice(&v));
    }
    pair(out, "Vary", CM_SLICE_STR("Origin, Access-Control-Request-Headers, "
                                   "Access-Control-Request-Method"));
    cm_buf_free(&v);
}

void gw_cors_headers(gw_req *r, cm_buf *out)
{
    cm_slice origin;
    cors_conf c;
    if (r->op == GW_OP_CorsPreflight || r->op == GW_OP_Admin || r->op == GW_OP_AdminPublic ||
        !r->bucket[0] || r->bucket_invalid || !gw_hdr(r, "Origin", &origin) || !origin.n)
        return;
    if (!cors_load(r, &c))
        return;
    for (size_t i = 0; i < c.n; i++) {
        if (gw_cors_rule_match(&c.rules[i], origin, r->method, CM_SLICE_NULL)) {
            allow_headers(out, &c.rules[i], origin);
            break;
        }
    }
    cors_conf_free(&c);
}

void gw_cors_preflight(gw_req *r)
{
    cm_slice origin, method, hdrs = CM_SLICE_NULL;
    cors_conf c;
    if (!gw_hdr(r, "Origin", &origin) || !origin.n) {
        gw_error(r, S3E_BadRequest);
        return;
    }
    if (!gw_hdr(r, "Access-Control-Request-Method", &method) || !method.n) {
        gw_error_msg(r, S3E_BadRequest, "Invalid Access-Control-Request-Method: null");
        return;
    }
    gw_hdr(r, "Access-Control-Request-Headers", &hdrs);
    if (r->bucket_invalid || !gw_bucket_exists(r))
        return;
    if (!cors_load(r, &c)) {
        gw_error_msg(r, S3E_AccessForbidden, "CORSResponse: CORS is not enabled for this bucket.");
        return;
    }
    for (size_t i = 0; i < c.n; i++) {
        if (!gw_cors_rule_match(&c.rules[i], origin, method, hdrs))
            continue;
        allow_headers(&r->resp_hdrs, &c.rules[i], origin);
        if (trim(hdrs).n)
            pair(&r->resp_hdrs, "Access-Control-Allow-Headers", trim(hdrs));
        cors_conf_free(&c);
        r->status = 200;
        return;
    }
    cors_conf_free(&c);
    gw_error(r, S3E_AccessForbidden);
}

/* -------------------------------------------------------- the bucket API */
static void render(cm_buf *b, const cors_conf *c)
{
    static const char *const names[] = {"AllowedOrigin", "AllowedMethod", "AllowedHeader",
                                        "ExposeHeader"};
    gw_xml_start(b, "CORSConfiguration");
    for (size_t i = 0; i < c->n; i++) {
        const gw_cors_rule *rl = &c->rules[i];
        const cm_slice *arrs[] = {rl->origins, rl->methods, rl->headers, rl->expose};
        const size_t ns[] = {rl->norigins, rl->nmethods, rl->nheaders, rl->nexpose};
        gw_xml_open(b, "CORSRule");
        for (int k = 0; k < 4; k++)
            for (size_t j = 0; j < ns[k]; j++)
                gw_xml_elem_slice(b, names[k], arrs[k][j]);
        if (rl->max_age >= 0)
            gw_xml_elem_u64(b, "MaxAgeSeconds", (uint64_t)rl->max_age);
        gw_xml_close(b, "CORSRule");
    }
    gw_xml_close(b, "CORSConfiguration");
}

void gw_put_bucket_cors(gw_req *r)
{
    cors_conf c;
    const char *msg;
    cm_buf canon = {0};
    if (!gw_bucket_exists(r))
        return;
    enum s3_err e = cors_parse(cm_buf_slice(&r->body), &c, &msg);
    if (e != S3E__NONE) {
        gw_error_msg(r, e, msg);
        return;
    }
    render(&canon, &c);
    cors_conf_free(&c);
    int rc = md_bucket_doc_put(r->srv->md, MD_DOC_CORS, r->bucket, cm_buf_slice(&canon));
    cm_buf_free(&canon);
    if (rc)
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
}

void gw_get_bucket_cors(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    int rc = md_bucket_doc_get(r->srv->md, MD_DOC_CORS, r->bucket, &r->resp_body);
    if (rc)
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchCORSConfiguration));
}

void gw_delete_bucket_cors(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    int rc = md_bucket_doc_delete(r->srv->md, MD_DOC_CORS, r->bucket);
    if (rc && rc != CM_ENOTFOUND) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return;
    }
    r->status = 204;
}

/* gateway/s3_objects.c - object operations: PutObject (streamed into the
 * chunkstore or inline), GetObject/HeadObject (ranges, conditionals,
 * response-* overrides, checksums), DeleteObject, DeleteObjects, CopyObject,
 * and the object writer that UploadPart shares. */
#include "events/evt.h"
#include "gateway/gw_int.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ object writer */
struct gw_objw {
    gw_server *srv;
    bool allow_inline;
    cm_buf inl;            /* bytes while the object may still be inline */
    cs_writer_t *w;        /* shard writer once it outgrew inline */
    cm_buf intent;
    uint64_t intent_id;    /* durable intent (0 = none yet) */
    uint64_t size;
    cm_buf layout;
};

gw_objw *gw_objw_new(gw_req *r, bool allow_inline)
{
    gw_objw *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->srv = r->srv;
    w->allow_inline = allow_inline && r->srv->inline_max > 0;
    return w;
}

static int objw_go_shards(gw_objw *w)
{
    int rc = cs_writer_open(w->srv->cs, &w->intent, &w->w);
    if (rc)
        return rc;
    /* The intent is durable before the first shard byte: a crash from here
     * on leaves data that the next start reclaims. */
    rc = md_intent_add(w->srv->md, cm_buf_slice(&w->intent), &w->intent_id);
    if (rc) {
        cs_writer_abort(w->w);
        w->w = NULL;
        return rc;
    }
    if (w->inl.n) {
        rc = cs_writer_write(w->w, w->inl.p, w->inl.n);
        cm_buf_free(&w->inl);
    }
    return rc;
}

int gw_objw_write(gw_objw *w, const uint8_t *p, size_t n)
{
    int rc;
    w->size += n;
    if (!w->w) {
        if (w->allow_inline && w->inl.n + n <= w->srv->inline_max)
            return cm_buf_append(&w->inl, p, n);
        if ((rc = objw_go_shards(w)))
            return rc;
    }
    return cs_writer_write(w->w, p, n);
}

int gw_objw_finish(gw_objw *w, md_object *obj, uint64_t *intent_id)
{
    int rc;
    if (!w->w && !w->allow_inline && (rc = objw_go_shards(w)))
        return rc;
    obj->size = w->size;
    *intent_id = 0;
    if (!w->w) {
        obj->inline_data = cm_buf_slice(&w->inl);
        obj->layout = CM_SLICE_NULL;
        return 0;
    }
    rc = cs_writer_finish(w->w, &w->layout);
    if (rc)
        return rc;
    w->w = NULL;
    obj->inline_data = CM_SLICE_NULL;
    obj->layout = cm_buf_slice(&w->layout);
    *intent_id = w->intent_id;
    w->intent_id = 0; /* ownership of the intent passes to the commit */
    return 0;
}

/* Frees the writer; data not committed is removed. */
void gw_objw_abort(gw_objw *w)
{
    if (!w)
        return;
    if (w->w)
        cs_writer_abort(w->w);
    if (w->intent_id)
        md_intent_drop(w->srv->md, w->intent_id); /* reclaims whatever was written */
    cm_buf_free(&w->inl);
    cm_buf_free(&w->intent);
    cm_buf_free(&w->layout);
    free(w);
}

/* Frees a finished writer (after its data was committed or dropped). */
static void objw_free(gw_objw *w)
{
    w->w = NULL;
    gw_objw_abort(w);
}

/* ------------------------------------------------------------ helpers */
void gw_etag_quote(cm_slice etag, char *out)
{
    size_t n = etag.n < 76 ? etag.n : 76;
    out[0] = '"';
    memcpy(out + 1, etag.p, n);
    out[n + 1] = '"';
    out[n + 2] = 0;
}

static const char *const stored_hdrs[] = {
    "content-type",  "cache-control",       "content-disposition",
    "content-language", "expires",          "x-amz-website-redirect-location",
    "x-amz-storage-class", NULL};

static bool is_lower_copy(gw_req *r, cm_slice name, cm_slice *out)
{
    char *s = cm_pool_strndup(r->pool, name.p, name.n);
    for (size_t i = 0; i < name.n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] + 32);
    *out = CM_SLICE(s, name.n);
    return true;
}

/* Content-Encoding without the aws-chunked transfer token. */
static cm_slice strip_aws_chunked(gw_req *r, cm_slice v)
{
    cm_buf out = {0};
    size_t i = 0;
    while (i < v.n) {
        size_t j = i;
        while (j < v.n && v.p[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && v.p[a] == ' ')
            a++;
        while (b > a && v.p[b - 1] == ' ')
            b--;
        cm_slice tok = CM_SLICE(v.p + a, b - a);
        if (tok.n && !cm_slice_case_eq_str(tok, "aws-chunked")) {
            if (out.n)
                cm_buf_append_byte(&out, ',');
            cm_buf_append_slice(&out, tok);
        }
        i = j + 1;
    }
    cm_slice res = CM_SLICE(cm_pool_strndup(r->pool, out.p ? (char *)out.p : "", out.n), out.n);
    cm_buf_free(&out);
    return res;
}

bool gw_object_hdrs_from_req(gw_req *r, md_kv **out, size_t *n)
{
    md_kv *a = cm_pool_alloc(r->pool, (r->nhdrs + 2) * sizeof *a);
    size_t k = 0, meta_bytes = 0;
    bool have_ct = false;
    for (size_t i = 0; i < r->nhdrs; i++) {
        cm_slice name = r->hdrs[i].name, value = r->hdrs[i].value;
        bool keep = false;
        if (name.n > 11 && cm_slice_case_eq_str(CM_SLICE(name.p, 11), "x-amz-meta-")) {
            keep = true;
            meta_bytes += name.n - 11 + value.n;
        } else if (cm_slice_case_eq_str(name, "content-encoding")) {
            value = strip_aws_chunked(r, value);
            keep = value.n > 0;
        } else {
            for (const char *const *s = stored_hdrs; *s; s++)
                if (cm_slice_case_eq_str(name, *s))
                    keep = true;
        }
        if (!keep)
            continue;
        if (cm_slice_case_eq_str(name, "x-amz-storage-class") &&
            !cm_slice_eq_str(value, "STANDARD") && !cm_slice_eq_str(value, "REDUCED_REDUNDANCY") &&
            !cm_slice_eq_str(value, "STANDARD_IA") && !cm_slice_eq_str(value, "ONEZONE_IA") &&
            !cm_slice_eq_str(value, "INTELLIGENT_TIERING") && !cm_slice_eq_str(value, "GLACIER") &&
            !cm_slice_eq_str(value, "DEEP_ARCHIVE") && !cm_slice_eq_str(value, "GLACIER_IR") &&
            !cm_slice_eq_str(value, "EXPRESS_ONEZONE")) {
            gw_error(r, S3E_InvalidStorageClass);
            return false;
        }
        if (cm_slice_case_eq_str(name, "content-type"))
            have_ct = true;
        is_lower_copy(r, name, &a[k].name);
        a[k].value = value;
        k++;
    }
    if (meta_bytes > GW_META_MAX) {
        gw_error(r, S3E_MetadataTooLarge);
        return false;
    }
    if (!have_ct) {
        a[k].name = CM_SLICE_STR("content-type");
        a[k].value = CM_SLICE_STR("binary/octet-stream");
        k++;
    }
    *out = a;
    *n = k;
    return true;
}

/* Strong comparison of an If-Match / If-None-Match list with an ETag. */
static bool etag_matches(cm_slice list, cm_slice etag)
{
    size_t i = 0;
    while (i < list.n) {
        size_t j = i;
        while (j < list.n && list.p[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (list.p[a] == ' ' || list.p[a] == '\t'))
            a++;
        while (b > a && (list.p[b - 1] == ' ' || list.p[b - 1] == '\t'))
            b--;
        if (b - a >= 2 && list.p[a] == 'W' && list.p[a + 1] == '/')
            a += 2;
        if (b - a >= 2 && list.p[a] == '"' && list.p[b - 1] == '"') {
            a++;
            b--;
        }
        cm_slice t = CM_SLICE(list.p + a, b - a);
        if (cm_slice_eq_str(t, "*") || cm_slice_eq(t, etag))
            return true;
        i = j + 1;
    }
    return false;
}

/* Preconditions of a write (PutObject, CompleteMultipartUpload, CopyObject). */
struct write_cond {
    cm_slice if_match, if_none_match;
    bool has_match, has_none_match;
    bool missing; /* OUT: If-Match given but no object */
};

static int write_precond(void *arg, const md_object *cur)
{
    struct write_cond *c = arg;
    if (c->has_none_match && cur && cm_slice_eq_str(c->if_none_match, "*"))
        return CM_EPRECOND;
    if (c->has_match) {
        if (!cur) {
            c->missing = true;
            return CM_ENOTFOUND;
        }
        if (!etag_matches(c->if_match, cur->etag))
            return CM_EPRECOND;
    }
    return 0;
}

static bool write_cond_init(gw_req *r, struct write_cond *c)
{
    memset(c, 0, sizeof *c);
    c->has_match = gw_hdr(r, "If-Match", &c->if_match);
    c->has_none_match = gw_hdr(r, "If-None-Match", &c->if_none_match);
    if (c->has_none_match && !cm_slice_eq_str(c->if_none_match, "*")) {
        gw_error_msg(r, S3E_NotImplemented,
                     "A header you provided implies functionality that is not implemented: "
                     "If-None-Match only accepts *");
        return false;
    }
    return true;
}

bool gw_write_cond(gw_req *r, md_precond_fn *fn, void **arg)
{
    struct write_cond *c = cm_pool_alloc(r->pool, sizeof *c);
    if (!write_cond_init(r, c))
        return false;
    *fn = (c->has_match || c->has_none_match) ? write_precond : NULL;
    *arg = c;
    return true;
}

/* Sets the response error of a failed write commit. */
void gw_write_commit_error(gw_req *r, int rc, void *cond_arg)
{
    struct write_cond *c = cond_arg;
    if (rc == CM_ENOTFOUND && c && c->missing)
        gw_error(r, S3E_NoSuchKey);
    else
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchBucket));
}

/* ------------------------------------------------------------ PutObject */
struct put_ctx {
    gw_objw *w;
    md_kv *hdrs;
    size_t nhdrs;
};

int gw_put_object_begin(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return -1;
    if (!r->has_length && !gw_hdr(r, "x-amz-decoded-content-length", NULL) &&
        !gw_hdr(r, "Transfer-Encoding", NULL)) {
        gw_error(r, S3E_MissingContentLength);
        return -1;
    }
    if (r->content_length > GW_MAX_PUT) {
        gw_error(r, S3E_EntityTooLarge);
        return -1;
    }
    struct put_ctx *pc = cm_pool_alloc(r->pool, sizeof *pc);
    if (!gw_object_hdrs_from_req(r, &pc->hdrs, &pc->nhdrs))
        return -1;
    pc->w = gw_objw_new(r, true);
    if (!pc->w) {
        gw_error(r, S3E_InternalError);
        return -1;
    }
    /* A body that will be inline gets its buffer at once, not by doubling
     * from 64 bytes as it arrives (a failure here only defers the growth). */
    if (pc->w->allow_inline && r->has_length && r->content_length > 0 &&
        r->content_length <= r->srv->inline_max)
        cm_buf_reserve(&pc->w->inl, (size_t)r->content_length);
    r->op_ctx = pc;
    return 0;
}

int gw_put_object_data(gw_req *r, const uint8_t *p, size_t n)
{
    struct put_ctx *pc = r->op_ctx;
    if (!pc)
        return -1;
    if (pc->w && r->body_n > GW_MAX_PUT) {
        gw_error(r, S3E_EntityTooLarge);
        return -1;
    }
    int rc = gw_objw_write(pc->w, p, n);
    if (rc) {
        cm_log(CM_LOG_ERROR, "%s: write failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return -1;
    }
    return 0;
}

void gw_put_object_abort(gw_req *r)
{
    struct put_ctx *pc = r->op_ctx;
    if (pc) {
        gw_objw_abort(pc->w);
        r->op_ctx = NULL;
    }
}

/* Adds the request's checksum (if any) to hdrs (pool memory). */
static void add_checksum_hdr(gw_req *r, md_kv **hdrs, size_t *n)
{
    const char *name, *val;
    if (!gw_auth_checksum(r, &name, &val))
        return;
    md_kv *a = cm_pool_alloc(r->pool, (*n + 2) * sizeof *a);
    memcpy(a, *hdrs, *n * sizeof *a);
    a[*n].name = CM_SLICE_STR(name);
    a[*n].value = CM_SLICE_STR(val);
    a[*n + 1].name = CM_SLICE_STR("x-amz-checksum-type");
    a[*n + 1].value = CM_SLICE_STR("FULL_OBJECT");
    *hdrs = a;
    *n += 2;
    gw_set_hdr(r, name, val);
}

void gw_put_object_end(gw_req *r)
{
    struct put_ctx *pc = r->op_ctx;
    md_object obj;
    uint64_t intent = 0;
    char etag[40], q[80];
    md_precond_fn pfn;
    void *parg;
    memset(&obj, 0, sizeof obj);
    if (!gw_write_cond(r, &pfn, &parg)) {
        gw_put_object_abort(r);
        return;
    }
    int rc = gw_objw_finish(pc->w, &obj, &intent);
    if (rc) {
        cm_log(CM_LOG_ERROR, "%s: finishing write failed: %s", r->id, cm_strerror(rc));
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        gw_put_object_abort(r);
        return;
    }
    cm_hex_encode(gw_auth_md5(r), 16, etag);
    obj.etag = CM_SLICE(etag, 32);
    obj.mtime_ms = cm_now_ms();
    obj.hdrs = pc->hdrs;
    obj.nhdrs = pc->nhdrs;
    add_checksum_hdr(r, &obj.hdrs, &obj.nhdrs);
    gw_manifest mf;
    if (gw_manifest_attach_req(r, &obj, &mf, intent)) {
        objw_free(pc->w);
        r->op_ctx = NULL;
        return;
    }
    gw_evt_begin(r, EVT_CREATED_PUT, r->key);
    rc = md_object_put_ex(r->srv->md, r->bucket, r->key, &obj, intent,
                          &(md_write_opts){pfn, parg, gw_commit_hook, r, mf.intent_id});
    gw_evt_end(r, rc);
    gw_manifest_done(r->srv, &mf, rc);
    if (rc) {
        if (intent)
            md_intent_drop(r->srv->md, intent);
        gw_write_commit_error(r, rc, parg);
    } else {
        gw_etag_quote(obj.etag, q);
        gw_set_hdr(r, "ETag", q);
    }
    objw_free(pc->w);
    r->op_ctx = NULL;
}

/* Buckets are unversioned: every object's only version is "null". Any other
 * versionId names nothing (and must never act on the current object). */
bool gw_version_ok(gw_req *r)
{
    cm_slice v;
    if (!gw_param(r, "versionId", &v) || cm_slice_eq_str(v, "null"))
        return true;
    gw_error_msg(r, S3E_InvalidArgument, "Invalid version id specified");
    gw_error_extra(r, "ArgumentName", CM_SLICE_STR("versionId"));
    gw_error_extra(r, "ArgumentValue", v);
    return false;
}

/* ------------------------------------------------------------ GetObject */
struct get_stream {
    gw_server *srv;
    md_object obj;
    uint64_t off, len;
    cs_reader_t *rd;
    uint8_t *head;  /* the first bytes, read before the status was sent */
    size_t head_n;
};

#define GET_HEAD_MAX (64 * 1024)

/* Reads the first bytes of the range before answering, so that data that
 * cannot be read (more shards lost than the code tolerates, too few storage
 * nodes up) gets an S3 error instead of a 200 cut short. */
static int get_stream_prefetch(struct get_stream *gs)
{
    size_t want = gs->len < GET_HEAD_MAX ? (size_t)gs->len : GET_HEAD_MAX;
    int rc = cs_reader_open(gs->srv->cs, gs->obj.layout, gs->off, gs->len, &gs->rd);
    if (rc)
        return rc;
    if (!(gs->head = malloc(want ? want : 1)))
        return CM_ENOMEM;
    while (gs->head_n < want) {
        ssize_t n = cs_reader_read(gs->rd, gs->head + gs->head_n, want - gs->head_n);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        gs->head_n += (size_t)n;
    }
    return 0;
}

static ssize_t get_stream_read(void *ctx, uint64_t pos, uint8_t *buf, size_t max)
{
    struct get_stream *gs = ctx;
    if (pos >= gs->len)
        return 0;
    if (max > gs->len - pos)
        max = (size_t)(gs->len - pos);
    if (gw_obj_inline(&gs->obj)) {
        memcpy(buf, gs->obj.inline_data.p + gs->off + pos, max);
        return (ssize_t)max;
    }
    if (pos < gs->head_n) {
        size_t c = gs->head_n - (size_t)pos < max ? gs->head_n - (size_t)pos : max;
        memcpy(buf, gs->head + pos, c);
        return (ssize_t)c;
    }
    if (!gs->rd && cs_reader_open(gs->srv->cs, gs->obj.layout, gs->off, gs->len, &gs->rd))
        return -1;
    size_t got = 0;
    while (got < max) {
        ssize_t n = cs_reader_read(gs->rd, buf + got, max - got);
        if (n < 0) {
            cm_log(CM_LOG_ERROR, "read of object data failed: %s", cm_strerror((int)n));
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return got ? (ssize_t)got : -1;
}

static void get_stream_free(void *ctx)
{
    struct get_stream *gs = ctx;
    cs_reader_close(gs->rd);
    free(gs->head);
    gw_layout_unref(gs->srv, gs->obj.layout);
    md_object_clear(&gs->obj);
    free(gs);
}

static bool parse_u64(cm_slice s, uint64_t *out)
{
    if (s.n == 0 || s.n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (s.p[i] - '0');
    }
    *out = v;
    return true;
}

/* Parses "bytes=a-b" | "bytes=a-" | "bytes=-n". Returns 1 with a range, 0 to
 * serve the whole object (no or unparseable Range), -1 unsatisfiable. */
static int parse_range(cm_slice h, uint64_t size, uint64_t *off, uint64_t *len)
{
    if (h.n < 7 || memcmp(h.p, "bytes=", 6))
        return 0;
    cm_slice spec = CM_SLICE(h.p + 6, h.n - 6);
    if (memchr(spec.p, ',', spec.n))
        return 0; /* several ranges: S3 serves the whole object */
    const uint8_t *dash = memchr(spec.p, '-', spec.n);
    if (!dash)
        return 0;
    cm_slice a = CM_SLICE(spec.p, (size_t)(dash - spec.p));
    cm_slice b = CM_SLICE(dash + 1, spec.n - a.n - 1);
    uint64_t x, y;
    if (a.n == 0) {
        if (!parse_u64(b, &y))
            return 0;
        if (y == 0 || size == 0)
            return -1;
        if (y > size)
            y = size;
        *off = size - y;
        *len = y;
        return 1;
    }
    if (!parse_u64(a, &x))
        return 0;
    if (b.n == 0) {
        y = size ? size - 1 : 0;
    } else if (!parse_u64(b, &y) || y < x) {
        return 0;
    }
    if (x >= size)
        return -1;
    if (y >= size)
        y = size - 1;
    *off = x;
    *len = y - x + 1;
    return 1;
}

/* pfx followed by name, in buf[64] unless pfx is "". */
static const char *cond_name(char *buf, const char *pfx, const char *name)
{
    if (!*pfx)
        return name;
    snprintf(buf, 64, "%s%s", pfx, name);
    return buf;
}

/* Evaluates GET/HEAD conditionals. Returns 0 to go on, or sets the error. */
int gw_read_conditions(gw_req *r, const md_object *o, const char *pfx)
{
    char name[64];
    cm_slice v;
    time_t t, mt = (time_t)(o->mtime_ms / 1000);
    bool has_im, has_inm;
    has_im = gw_hdr(r, cond_name(name, pfx, "If-Match"), &v);
    if (has_im && !etag_matches(v, o->etag)) {
        gw_error(r, S3E_PreconditionFailed);
        return -1;
    }
    if (!has_im && gw_hdr(r, cond_name(name, pfx, "If-Unmodified-Since"), &v) &&
        cm_time_parse_http((const char *)v.p, v.n, &t) == 0 && mt > t) {
        gw_error(r, S3E_PreconditionFailed);
        return -1;
    }
    has_inm = gw_hdr(r, cond_name(name, pfx, "If-None-Match"), &v);
    bool copy = *pfx != 0;
    if (has_inm && etag_matches(v, o->etag)) {
        gw_error(r, copy ? S3E_PreconditionFailed : S3E_NotModified);
        return -1;
    }
    if (!has_inm && gw_hdr(r, cond_name(name, pfx, "If-Modified-Since"), &v) &&
        cm_time_parse_http((const char *)v.p, v.n, &t) == 0 && mt <= t) {
        gw_error(r, copy ? S3E_PreconditionFailed : S3E_NotModified);
        return -1;
    }
    return 0;
}

static const struct {
    const char *param, *header;
} overrides[] = {
    {"response-content-type", "Content-Type"},
    {"response-content-language", "Content-Language"},
    {"response-expires", "Expires"},
    {"response-cache-control", "Cache-Control"},
    {"response-content-disposition", "Content-Disposition"},
    {"response-content-encoding", "Content-Encoding"},
};

/* Canonical capitalisation for stored header names on the wire. */
static const char *wire_name(gw_req *r, cm_slice n)
{
    static const struct {
        const char *lower, *wire;
    } names[] = {{"content-type", "Content-Type"},
                 {"cache-control", "Cache-Control"},
                 {"content-disposition", "Content-Disposition"},
                 {"content-encoding", "Content-Encoding"},
                 {"content-language", "Content-Language"},
                 {"expires", "Expires"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (cm_slice_eq_str(n, names[i].lower))
            return names[i].wire;
    return cm_pool_strndup(r->pool, n.p, n.n);
}

void gw_get_object(gw_req *r)
{
    struct get_stream *gs = calloc(1, sizeof *gs);
    if (!gs) {
        gw_error(r, S3E_InternalError);
        return;
    }
    gs->srv = r->srv;
    if (!gw_bucket_exists(r) || !gw_version_ok(r)) {
        free(gs);
        return;
    }
    int rc = md_object_get(r->srv->md, r->bucket, r->key, &gs->obj);
    if (rc) {
        free(gs);
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchKey));
        return;
    }
    /* Pin the data, then make sure the record still names it (an overwrite
     * may have committed and freed it between the read and the pin). */
    for (int tries = 0; gs->obj.layout.n; tries++) {
        gw_layout_ref(r->srv, gs->obj.layout);
        md_object again;
        memset(&again, 0, sizeof again);
        int rc2 = md_object_get(r->srv->md, r->bucket, r->key, &again);
        if (rc2 == 0 && cm_slice_eq(again.layout, gs->obj.layout)) {
            md_object_clear(&again);
            break;
        }
        gw_layout_unref(r->srv, gs->obj.layout);
        md_object_clear(&gs->obj);
        if (rc2 || tries == 8) {
            md_object_clear(&again);
            free(gs);
            gw_error(r, rc2 ? gw_s3err_from_cm(rc2, S3E_NoSuchKey) : S3E_InternalError);
            return;
        }
        gs->obj = again;
    }
    /* from here gs is owned by the request */
    r->stream_ctx = gs;
    r->stream_free = get_stream_free;
    md_object *o = &gs->obj;
    char tmp[96];
    gw_etag_quote(o->etag, tmp);
    gw_set_hdr(r, "ETag", tmp);
    cm_time_rfc1123((time_t)(o->mtime_ms / 1000), tmp);
    gw_set_hdr(r, "Last-Modified", tmp);
    if (gw_read_conditions(r, o, "")) {
        if (r->err == S3E_NotModified) {
            /* 304 carries ETag and Last-Modified but no error body */
            r->err = S3E__NONE;
            r->status = 304;
        }
        return;
    }
    uint64_t off = 0, len = o->size;
    cm_slice rh;
    int pr = 0;
    cm_slice pn;
    bool by_part = false;
    if (gw_param(r, "partNumber", &pn)) {
        uint64_t n;
        if (!parse_u64(pn, &n) || n < 1 || n > GW_MAX_PARTS) {
            gw_error_msg(r, S3E_InvalidArgument,
                         "Part number must be an integer between 1 and 10000, inclusive");
            return;
        }
        if (gw_hdr(r, "Range", NULL)) {
            gw_error_msg(r, S3E_InvalidRequest, "Cannot specify both Range header and partNumber query parameter");
            return;
        }
        /* Parts of a multipart object are the segments of its layout; any
         * other object is one part. */
        const uint8_t *dash = memchr(o->etag.p, '-', o->etag.n);
        size_t nparts = 1;
        if (dash) {
            nparts = 0;
            for (const uint8_t *q = dash + 1; q < o->etag.p + o->etag.n; q++)
                nparts = nparts * 10 + (size_t)(*q - '0');
        }
        if (n > nparts) {
            gw_error(r, S3E_InvalidPartNumber);
            return;
        }
        if (dash && cs_layout_segment(o->layout, (size_t)n - 1, &off, &len)) {
            gw_error(r, S3E_InternalError);
            return;
        }
        snprintf(tmp, sizeof tmp, "%zu", nparts);
        gw_set_hdr(r, "x-amz-mp-parts-count", tmp);
        by_part = dash != NULL;
    }
    if (gw_hdr(r, "Range", &rh)) {
        pr = parse_range(rh, o->size, &off, &len);
        if (pr < 0) {
            snprintf(tmp, sizeof tmp, "bytes */%llu", (unsigned long long)o->size);
            gw_error(r, S3E_InvalidRange);
            gw_error_extra(r, "RangeRequested", rh);
            gw_error_extra(r, "ActualObjectSize", CM_SLICE(tmp + 8, strlen(tmp + 8)));
            return;
        }
    }
    if (by_part && !(off == 0 && len == o->size)) {
        pr = 1;
    }
    if (pr == 1) {
        r->status = 206;
        snprintf(tmp, sizeof tmp, "bytes %llu-%llu/%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1), (unsigned long long)o->size);
        gw_set_hdr(r, "Content-Range", tmp);
    }
    gw_set_hdr(r, "Accept-Ranges", "bytes");
    cm_slice mode;
    bool want_ck = gw_hdr(r, "x-amz-checksum-mode", &mode) && cm_slice_case_eq_str(mode, "ENABLED");
    for (size_t i = 0; i < o->nhdrs; i++) {
        cm_slice n = o->hdrs[i].name;
        bool is_ck = n.n > 15 && !memcmp(n.p, "x-amz-checksum-", 15);
        if (is_ck && (!want_ck || pr == 1))
            continue;
        bool overridden = false;
        for (size_t j = 0; j < sizeof overrides / sizeof overrides[0]; j++)
            if (cm_slice_case_eq_str(n, overrides[j].header) && gw_param_has(r, overrides[j].param))
                overridden = true;
        if (overridden)
            continue;
        if (cm_slice_eq_str(n, "content-type")) {
            r->content_type = cm_pool_strndup(r->pool, o->hdrs[i].value.p, o->hdrs[i].value.n);
            continue;
        }
        gw_set_hdr_slice(r, wire_name(r, n), o->hdrs[i].value);
    }
    for (size_t j = 0; j < sizeof overrides / sizeof overrides[0]; j++) {
        const char *v = gw_param_str(r, overrides[j].param);
        if (!v)
            continue;
        if (!strcmp(overrides[j].header, "Content-Type"))
            r->content_type = v;
        else
            gw_set_hdr(r, overrides[j].header, v);
    }
    if (!r->content_type)
        r->content_type = "binary/octet-stream";
    gs->off = off;
    gs->len = len;
    if (gw_obj_inline(o)) {
        /* inline: the bytes are at hand (in gs, which the request owns),
         * no streaming and no copy needed */
        r->resp_ref = CM_SLICE(o->inline_data.p + off, (size_t)len);
        if (!r->content_type)
            r->content_type = "binary/octet-stream";
        return;
    }
    if (len > 0 && !cm_slice_eq_str(r->method, "HEAD")) {
        int prc = get_stream_prefetch(gs);
        if (prc) {
            cm_log(CM_LOG_ERROR, "%s: reading object data failed: %s", r->id, cm_strerror(prc));
            gw_error(r, prc == CM_EIO || prc == CM_EUNAVAIL ? S3E_ServiceUnavailable
                                                            : S3E_InternalError);
            return;
        }
    }
    r->stream = get_stream_read;
    r->stream_len = len;
}

/* ------------------------------------------------------------ Delete */
void gw_delete_object(gw_req *r)
{
    if (!gw_bucket_exists(r) || !gw_version_ok(r))
        return;
    gw_evt_begin(r, EVT_REMOVED_DELETE, r->key);
    int rc = md_object_delete_ex(r->srv->md, r->bucket, r->key,
                                 &(md_write_opts){NULL, NULL, gw_commit_hook, r, 0});
    gw_evt_end(r, rc);
    if (rc && rc != CM_ENOTFOUND) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return;
    }
    r->status = 204;
}

void gw_delete_objects(gw_req *r)
{
    if (!gw_bucket_exists(r))
        return;
    void *doc = NULL;
    gw_xnode *root = gw_xml_parse(cm_buf_slice(&r->body), &doc);
    if (!root || strcmp(root->name, "Delete")) {
        gw_xml_doc_free(doc);
        gw_error(r, S3E_MalformedXML);
        return;
    }
    gw_xnode *q = gw_xml_child(root, "Quiet");
    bool quiet = q && cm_slice_case_eq_str(q->text, "true");
    size_t n = 0;
    for (gw_xnode *c = root->child; c; c = c->next) {
        if (!strcmp(c->name, "Object")) {
            if (!gw_xml_child(c, "Key")) {
                n = 0;
                break;
            }
            n++;
        }
    }
    if (n == 0 || n > 1000) {
        gw_xml_doc_free(doc);
        gw_error(r, S3E_MalformedXML);
        return;
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "DeleteResult");
    for (gw_xnode *c = root->child; c; c = c->next) {
        if (strcmp(c->name, "Object"))
            continue;
        gw_xnode *k = gw_xml_child(c, "Key");
        gw_xnode *v = gw_xml_child(c, "VersionId");
        int rc = 0;
        enum s3_err e = S3E__NONE;
        if (k->text.n > MD_KEY_MAX)
            e = S3E_KeyTooLongError;
        else if (k->text.n == 0)
            e = S3E_InvalidArgument;
        else if (v && v->text.n && !cm_slice_eq_str(v->text, "null"))
            e = S3E_NoSuchVersion;
        else {
            gw_evt_begin(r, EVT_REMOVED_DELETE, k->text);
            rc = md_object_delete_ex(r->srv->md, r->bucket, k->text,
                                     &(md_write_opts){NULL, NULL, gw_commit_hook, r, 0});
            gw_evt_end(r, rc);
            if (rc && rc != CM_ENOTFOUND)
                e = S3E_InternalError;
        }
        if (e != S3E__NONE) {
            gw_xml_open(b, "Error");
            gw_xml_elem_slice(b, "Key", k->text);
            if (v)
                gw_xml_elem_slice(b, "VersionId", v->text);
            gw_xml_elem(b, "Code", gw_s3err_code(e));
            gw_xml_elem(b, "Message", gw_s3err_message(e));
            gw_xml_close(b, "Error");
        } else if (!quiet) {
            gw_xml_open(b, "Deleted");
            gw_xml_elem_slice(b, "Key", k->text);
            if (v)
                gw_xml_elem_slice(b, "VersionId", v->text);
            gw_xml_close(b, "Deleted");
        }
    }
    gw_xml_close(b, "DeleteResult");
    gw_xml_doc_free(doc);
}

/* ------------------------------------------------------------ CopyObject */
/* Parses x-amz-copy-source into bucket and key; false with an error set. */
bool gw_copy_source(gw_req *r, char *bucket, size_t bsz, cm_slice *key)
{
    cm_slice src;
    gw_hdr(r, "x-amz-copy-source", &src);
    const uint8_t *q = memchr(src.p, '?', src.n);
    cm_slice path = q ? CM_SLICE(src.p, (size_t)(q - src.p)) : src;
    if (q) {
        cm_slice qs = CM_SLICE(q + 1, src.n - path.n - 1);
        if (!cm_slice_eq_str(qs, "versionId=null")) {
            gw_error_msg(r, S3E_InvalidArgument, "Invalid version id specified");
            return false;
        }
    }
    cm_buf d = {0};
    if (cm_uri_decode(&d, path, false)) {
        cm_buf_free(&d);
        gw_error_msg(r, S3E_InvalidArgument, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey");
        return false;
    }
    const uint8_t *p = d.p;
    size_t n = d.n;
    if (n && p[0] == '/') {
        p++;
        n--;
    }
    const uint8_t *slash = memchr(p, '/', n);
    if (!slash || slash == p || (size_t)(slash - p) >= bsz || (size_t)(slash - p) + 1 >= n) {
        cm_buf_free(&d);
        gw_error_msg(r, S3E_InvalidArgument, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey");
        return false;
    }
    memcpy(bucket, p, (size_t)(slash - p));
    bucket[slash - p] = 0;
    size_t kl = n - (size_t)(slash - p) - 1;
    if (kl > MD_KEY_MAX) {
        cm_buf_free(&d);
        gw_error(r, S3E_KeyTooLongError);
        return false;
    }
    *key = CM_SLICE(cm_pool_strndup(r->pool, slash + 1, kl), kl);
    cm_buf_free(&d);
    return true;
}

/* Copies the bytes [off, off+len) of src into a new writer; false with an error set. */
bool gw_copy_data(gw_req *r, const md_object *src, uint64_t off, uint64_t len, gw_objw *w,
                  uint8_t md5_out[16])
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(mctx, EVP_md5(), NULL);
    bool ok = true;
    if (gw_obj_inline(src)) {
        EVP_DigestUpdate(mctx, src->inline_data.p + off, len);
        if (gw_objw_write(w, src->inline_data.p + off, len))
            ok = false;
    } else {
        cs_reader_t *rd = NULL;
        uint8_t *buf = malloc(1 << 20);
        gw_layout_ref(r->srv, src->layout);
        if (!buf || cs_reader_open(r->srv->cs, src->layout, off, len, &rd)) {
            ok = false;
        } else {
            for (;;) {
                ssize_t n = cs_reader_read(rd, buf, 1 << 20);
                if (n < 0) {
                    ok = false;
                    break;
                }
                if (n == 0)
                    break;
                EVP_DigestUpdate(mctx, buf, (size_t)n);
                if (gw_objw_write(w, buf, (size_t)n)) {
                    ok = false;
                    break;
                }
            }
        }
        cs_reader_close(rd);
        free(buf);
        gw_layout_unref(r->srv, src->layout);
    }
    unsigned ml = 0;
    EVP_DigestFinal_ex(mctx, md5_out, &ml);
    EVP_MD_CTX_free(mctx);
    if (!ok)
        gw_error(r, S3E_InternalError);
    return ok;
}

void gw_copy_object(gw_req *r)
{
    char sbucket[64];
    cm_slice skey;
    md_object src, obj;
    uint64_t intent = 0;
    memset(&src, 0, sizeof src);
    memset(&obj, 0, sizeof obj);
    if (!gw_bucket_exists(r) || !gw_copy_source(r, sbucket, sizeof sbucket, &skey))
        return;
    md_bucket sb;
    if (md_bucket_get(r->srv->md, sbucket, &sb)) {
        gw_error(r, S3E_NoSuchBucket);
        return;
    }
    int rc = md_object_get(r->srv->md, sbucket, skey, &src);
    if (rc) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_NoSuchKey));
        return;
    }
    gw_objw *w = NULL;
    md_precond_fn pfn;
    void *parg;
    if (gw_read_conditions(r, &src, "x-amz-copy-source-") || !gw_write_cond(r, &pfn, &parg))
        goto out;
    cm_slice dir = CM_SLICE_STR("COPY");
    gw_hdr(r, "x-amz-metadata-directive", &dir);
    bool replace = cm_slice_eq_str(dir, "REPLACE");
    if (!replace && !cm_slice_eq_str(dir, "COPY")) {
        gw_error_msg(r, S3E_InvalidArgument, "Unknown metadata directive.");
        goto out;
    }
    if (!replace && !strcmp(sbucket, r->bucket) && cm_slice_eq(skey, r->key) &&
        !gw_hdr(r, "x-amz-storage-class", NULL)) {
        gw_error_msg(r, S3E_InvalidRequest,
                     "This copy request is illegal because it is trying to copy an object to "
                     "itself without changing the object's metadata, storage class, website "
                     "redirect location or encryption attributes.");
        goto out;
    }
    if (replace) {
        if (!gw_object_hdrs_from_req(r, &obj.hdrs, &obj.nhdrs))
            goto out;
    } else {
        obj.hdrs = src.hdrs;
        obj.nhdrs = src.nhdrs;
    }
    w = gw_objw_new(r, true);
    uint8_t md5[16];
    if (!w || !gw_copy_data(r, &src, 0, src.size, w, md5))
        goto out;
    if ((rc = gw_objw_finish(w, &obj, &intent))) {
        gw_error(r, S3E_InternalError);
        goto out;
    }
    char etag[40];
    /* A copy of a multipart object keeps its ETag only if bytes are equal;
     * S3 computes a fresh MD5 for single-part copies. */
    cm_hex_encode(md5, 16, etag);
    obj.etag = CM_SLICE(etag, 32);
    obj.mtime_ms = cm_now_ms();
    gw_manifest mf;
    if (gw_manifest_attach_req(r, &obj, &mf, intent))
        goto out;
    gw_evt_begin(r, EVT_CREATED_COPY, r->key);
    rc = md_object_put_ex(r->srv->md, r->bucket, r->key, &obj, intent,
                          &(md_write_opts){pfn, parg, gw_commit_hook, r, mf.intent_id});
    gw_evt_end(r, rc);
    gw_manifest_done(r->srv, &mf, rc);
    if (rc) {
        if (intent)
            md_intent_drop(r->srv->md, intent);
        gw_write_commit_error(r, rc, parg);
        goto out;
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "CopyObjectResult");
    gw_xml_elem_time(b, "LastModified", obj.mtime_ms);
    char q[80];
    gw_etag_quote(obj.etag, q);
    gw_xml_elem(b, "ETag", q);
    gw_xml_close(b, "CopyObjectResult");
out:
    if (w) {
        if (r->err != S3E__NONE)
            gw_objw_abort(w);
        else
            objw_free(w);
    }
    md_object_clear(&src);
}

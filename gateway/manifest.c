/* gateway/manifest.c - object manifests on storage nodes, and rebuilding
 * the metadata from them.
 *
 * Over storage nodes, every committed object also leaves a manifest on the
 * nodes (chunkstore blobs, m+1 copies): the object's bucket, key and whole
 * metadata record (size, ETag, headers, inline bytes, layout). A manifest is
 * written, after a durable intent, before the metadata commit that makes
 * the object visible; its record is appended to the object's layout, so
 * whatever frees the object's data (overwrite, delete, crash recovery) frees
 * the manifest too. With the gateway's metadata directory lost,
 * `cairn server --rebuild-metadata` reads every manifest back and restores
 * the newest version of each key.
 *
 * Manifest body (integers little-endian, cm_buf_put_* encodings):
 *   FIELD     SIZE   DESCRIPTION
 *   magic     4      "CMF1"
 *   seq       8      write sequence: orders versions of one key (newest wins)
 *   bucket    4+B    bucket name (u32 length, bytes)
 *   key       4+K    key (u32 length, bytes)
 *   record    rest   the metadata record (md_object_encode), layout without
 *                    the manifest's own record
 */
#include "gateway/gw_int.h"
#include <stdio.h>
#include <stdlib.h>

#define MF_MAGIC "CMF1"

static uint64_t next_seq(void)
{
    static uint64_t last;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    uint64_t cur = __atomic_load_n(&last, __ATOMIC_RELAXED), want;
    do {
        want = now > cur ? now : cur + 1;
    } while (!__atomic_compare_exchange_n(&last, &cur, want, false, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return want;
}

static int manifest_encode(cm_buf *b, const char *bucket, cm_slice key, const md_object *obj)
{
    if (cm_buf_append(b, MF_MAGIC, 4) || cm_buf_put_u64(b, next_seq()) ||
        cm_buf_put_bytes(b, CM_SLICE_STR(bucket)) || cm_buf_put_bytes(b, key))
        return CM_ENOMEM;
    return md_object_encode(b, obj);
}

struct mf_view {
    uint64_t seq;
    char bucket[MD_BUCKET_MAX + 1];
    cm_slice key;
    cm_slice record;
};

/* Checks magic, then reads the sequence that follows it (both bodies, the
 * manifest and the settings snapshot, start this way). */
static int magic_seq(cm_reader *r, const char *magic, uint64_t *seq)
{
    if (r->n < 4 || memcmp(r->p, magic, 4))
        return CM_ECORRUPT;
    r->p += 4;
    r->n -= 4;
    return cm_get_u64(r, seq);
}

static int manifest_decode(cm_slice body, struct mf_view *v)
{
    cm_reader r = {body.p, body.n};
    cm_slice bucket;
    if (magic_seq(&r, MF_MAGIC, &v->seq) || cm_get_bytes(&r, &bucket) ||
        bucket.n > MD_BUCKET_MAX || cm_get_bytes(&r, &v->key))
        return CM_ECORRUPT;
    memcpy(v->bucket, bucket.p, bucket.n);
    v->bucket[bucket.n] = 0;
    v->record = CM_SLICE(r.p, r.n);
    return 0;
}

int gw_manifest_attach(gw_server *srv, const char *bucket, cm_slice key, md_object *obj,
                       gw_manifest *mf)
{
    cs_manifest_t *m = NULL;
    cm_buf body = {0};
    int rc;

    memset(mf, 0, sizeof *mf);
    if (!cs_store_distributed(srv->cs))
        return 0;
    if ((rc = cs_manifest_open(srv->cs, &mf->intent, &m)))
        return rc;
    /* Durable before the manifest exists anywhere: a crash from here on
     * leaves a manifest that the next start removes. */
    if ((rc = md_intent_add(srv->md, cm_buf_slice(&mf->intent), &mf->intent_id))) {
        cs_manifest_abort(m);
        return rc;
    }
    if ((rc = manifest_encode(&body, bucket, key, obj)) ||
        (rc = cm_buf_append_slice(&mf->layout, obj->layout))) {
        cs_manifest_abort(m);
        goto fail;
    }
    rc = cs_manifest_commit(m, cm_buf_slice(&body), &mf->layout);
    if (rc) {
        cs_manifest_abort(m);
        goto fail;
    }
    obj->layout = cm_buf_slice(&mf->layout);
    cm_buf_free(&body);
    return 0;
fail:
    cm_buf_free(&body);
    md_intent_drop(srv->md, mf->intent_id);
    mf->intent_id = 0;
    cm_buf_free(&mf->layout);
    cm_buf_free(&mf->intent);
    return rc;
}

int gw_manifest_attach_req(gw_req *r, md_object *obj, gw_manifest *mf, uint64_t data_intent)
{
    int rc = gw_manifest_attach(r->srv, r->bucket, r->key, obj, mf);
    if (rc) {
        cm_log(CM_LOG_ERROR, "%s: writing the object manifest failed: %s", r->id, cm_strerror(rc));
        if (data_intent)
            md_intent_drop(r->srv->md, data_intent); /* removes the object's data */
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
    }
    return rc;
}

void gw_manifest_done(gw_server *srv, gw_manifest *mf, int commit_rc)
{
    if (commit_rc && mf->intent_id)
        md_intent_drop(srv->md, mf->intent_id); /* removes the manifest from the nodes */
    mf->intent_id = 0;
    cm_buf_free(&mf->layout);
    cm_buf_free(&mf->intent);
}

/* ------------------------------------------------------------ rebuild */

static int rebuild_settings(gw_server *srv);

struct rb_ent {
    uint64_t seq;
    char *bucket;
    cm_buf key;
    cm_buf record;   /* md record bytes */
    cm_buf mrec;     /* the manifest's layout record */
};

struct rb {
    struct rb_ent *a;
    size_t n, cap;
    size_t bad;
};

static int rb_collect(void *arg, cm_slice body, cm_slice rec)
{
    struct rb *rb = arg;
    struct mf_view v;
    if (manifest_decode(body, &v)) {
        rb->bad++;
        cm_log(CM_LOG_WARN, "rebuild: skipping a manifest that does not decode");
        return 0;
    }
    if (rb->n == rb->cap) {
        size_t cap = rb->cap ? 2 * rb->cap : 256;
        struct rb_ent *a = realloc(rb->a, cap * sizeof *a);
        if (!a)
            return CM_ENOMEM;
        rb->a = a;
        rb->cap = cap;
    }
    struct rb_ent *e = &rb->a[rb->n];
    memset(e, 0, sizeof *e);
    e->seq = v.seq;
    e->bucket = strdup(v.bucket);
    if (!e->bucket || cm_buf_append_slice(&e->key, v.key) ||
        cm_buf_append_slice(&e->record, v.record) || cm_buf_append_slice(&e->mrec, rec)) {
        free(e->bucket);
        cm_buf_free(&e->key);
        cm_buf_free(&e->record);
        cm_buf_free(&e->mrec);
        return CM_ENOMEM;
    }
    rb->n++;
    return 0;
}

/* bucket, key ascending; newest (largest seq) first within a key. */
static int rb_cmp(const void *pa, const void *pb)
{
    const struct rb_ent *a = pa, *b = pb;
    int c = strcmp(a->bucket, b->bucket);
    if (c)
        return c;
    size_t n = a->key.n < b->key.n ? a->key.n : b->key.n;
    c = memcmp(a->key.p, b->key.p, n);
    if (c)
        return c;
    if (a->key.n != b->key.n)
        return a->key.n < b->key.n ? -1 : 1;
    return a->seq > b->seq ? -1 : a->seq < b->seq;
}

int gw_rebuild_metadata(gw_server *srv)
{
    struct rb rb = {0};
    gw_req *fake = NULL;
    md_bucket *bks = NULL;
    size_t nbk = 0, nobj = 0, nold = 0, nbuckets = 0;
    int rc;

    if (!cs_store_distributed(srv->cs)) {
        cm_log(CM_LOG_ERROR, "--rebuild-metadata needs --nodes: only storage nodes keep "
                             "object manifests");
        return CM_EINVAL;
    }
    if ((rc = md_bucket_list(srv->md, &bks, &nbk)))
        return rc;
    free(bks);
    if (nbk) {
        cm_log(CM_LOG_ERROR, "--rebuild-metadata: %s/meta already holds %zu bucket(s); move it "
                             "away first (the rebuild only fills an empty metadata store)",
               srv->cfg.data_dir, nbk);
        return CM_EEXISTS;
    }
    cm_log(CM_LOG_INFO, "rebuild: reading object manifests from the storage nodes");
    /* Every manifest has m+1 copies on distinct nodes: with at most m
     * nodes down, each still has a readable copy. */
    int down = 0;
    for (int d = 0; d < cs_store_ndrives(srv->cs); d++)
        down += !cs_store_drive_up(srv->cs, d);
    if (down > srv->cfg.ec_m) {
        cm_log(CM_LOG_ERROR, "rebuild: %d storage nodes are down, more than the %d whose loss "
                             "every object survives; start them and try again",
               down, srv->cfg.ec_m);
        rc = CM_EUNAVAIL;
        goto out;
    }
    if ((rc = rebuild_settings(srv)))
        goto out;
    rc = cs_manifest_scan(srv->cs, rb_collect, &rb);
    if (rc == CM_EUNAVAIL && down <= srv->cfg.ec_m) {
        cm_log(CM_LOG_WARN, "rebuild: %d node(s) unreachable; every manifest has a copy on the "
                            "others, going on", down);
        rc = 0;
    }
    if (rc) {
        cm_log(CM_LOG_ERROR, "rebuild: scanning the nodes failed: %s", cm_strerror(rc));
        goto out;
    }
    if (rb.n)
        qsort(rb.a, rb.n, sizeof *rb.a, rb_cmp);
    /* Objects are put through a request-less commit: its hook adds each
     * bucket's storage delta, so usage and metrics count what is restored. */
    if (!(fake = calloc(1, sizeof *fake))) {
        rc = CM_ENOMEM;
        goto out;
    }
    fake->srv = srv;
    fake->op = GW_OP_NotImplementedOp;
    for (size_t i = 0; i < rb.n && rc == 0; i++) {
        struct rb_ent *e = &rb.a[i];
        bool newest = i == 0 || strcmp(e->bucket, rb.a[i - 1].bucket) ||
                      !cm_slice_eq(cm_buf_slice(&e->key), cm_buf_slice(&rb.a[i - 1].key));
        md_object o;
        if (md_object_decode(cm_buf_slice(&e->record), &o)) {
            cm_log(CM_LOG_WARN, "rebuild: skipping a manifest with a corrupt record");
            continue;
        }
        cm_buf layout = {0};
        if (cm_buf_append_slice(&layout, o.layout) ||
            cm_buf_append_slice(&layout, cm_buf_slice(&e->mrec))) {
            rc = CM_ENOMEM;
        } else if (!newest) {
            /* An older version whose removal had not happened yet: its data
             * is garbage now. */
            cs_layout_delete(srv->cs, cm_buf_slice(&layout));
            nold++;
        } else {
            md_bucket b = {0};
            if (md_bucket_get(srv->md, e->bucket, &b) == CM_ENOTFOUND) {
                snprintf(b.name, sizeof b.name, "%s", e->bucket);
                b.ctime_ms = o.mtime_ms;
                snprintf(b.region, sizeof b.region, "%s", srv->cfg.region);
                if ((rc = md_bucket_create(srv->md, &b)) == 0)
                    nbuckets++;
            }
            o.layout = cm_buf_slice(&layout);
            snprintf(fake->bucket, sizeof fake->bucket, "%s", e->bucket);
            md_write_opts wo = {NULL, NULL, gw_commit_hook, fake, 0};
            if (rc == 0 && (rc = md_object_put_ex(srv->md, e->bucket, cm_buf_slice(&e->key), &o,
                                                  0, &wo)) == 0)
                nobj++;
        }
        cm_buf_free(&layout);
        md_object_clear(&o);
    }
    if (rc == 0)
        cm_log(CM_LOG_INFO,
               "rebuild: restored %zu objects in %zu buckets from the nodes (%zu older versions "
               "removed, %zu unreadable manifests)",
               nobj, nbuckets, nold, rb.bad);
    else
        cm_log(CM_LOG_ERROR, "rebuild failed: %s", cm_strerror(rc));
out:
    for (size_t i = 0; i < rb.n; i++) {
        free(rb.a[i].bucket);
        cm_buf_free(&rb.a[i].key);
        cm_buf_free(&rb.a[i].record);
        cm_buf_free(&rb.a[i].mrec);
    }
    free(rb.a);
    free(fake);
    return rc;
}

/* ------------------------------------------------------------ settings */

/* The settings snapshot on the nodes: "CST1", u64 LE write sequence, then
 * md_settings_export's bytes. Rewritten by the maintenance thread whenever
 * the settings changed (every few seconds at most) and at shutdown. */
#define ST_MAGIC "CST1"

void gw_settings_sync(gw_server *srv, uint64_t *last_hash)
{
    cm_buf body = {0};
    if (!cs_store_distributed(srv->cs))
        return;
    if (cm_buf_append(&body, ST_MAGIC, 4) || cm_buf_put_u64(&body, next_seq()) ||
        md_settings_export(srv->md, &body)) {
        cm_log(CM_LOG_WARN, "settings snapshot: cannot export the settings");
        goto out;
    }
    uint64_t h = cm_fnv1a(CM_FNV1A_INIT, body.p + 12, body.n - 12); /* past magic and seq */
    if (h == *last_hash)
        goto out;
    int copies = 0, rc = cs_store_settings_put(srv->cs, cm_buf_slice(&body), &copies);
    if (rc) {
        cm_log(CM_LOG_WARN, "settings snapshot: no storage node took it (%s); retrying later",
               cm_strerror(rc));
        goto out;
    }
    *last_hash = h;
    cm_log(CM_LOG_DEBUG, "settings snapshot: %zu bytes on %d nodes", body.n, copies);
out:
    cm_buf_free(&body);
}

struct st_best {
    uint64_t seq;
    cm_buf body;
    bool found;
};

static int st_pick(void *arg, cm_slice body)
{
    struct st_best *b = arg;
    cm_reader r = {body.p, body.n};
    uint64_t seq;
    if (magic_seq(&r, ST_MAGIC, &seq))
        return 0;
    if (b->found && seq <= b->seq)
        return 0;
    cm_buf_reset(&b->body);
    if (cm_buf_append(&b->body, r.p, r.n))
        return CM_ENOMEM;
    b->seq = seq;
    b->found = true;
    return 0;
}

/* Restores the newest settings snapshot found on the nodes. */
static int rebuild_settings(gw_server *srv)
{
    struct st_best best = {0};
    size_t n = 0;
    int rc = cs_store_settings_get(srv->cs, st_pick, &best);
    if (rc == 0 && best.found)
        rc = md_settings_import(srv->md, cm_buf_slice(&best.body), &n);
    if (rc)
        cm_log(CM_LOG_ERROR, "rebuild: restoring the settings failed: %s", cm_strerror(rc));
    else if (best.found)
        cm_log(CM_LOG_INFO, "rebuild: restored %zu settings records (buckets, users, policies, "
                            "configurations)", n);
    else
        cm_log(CM_LOG_WARN, "rebuild: no settings snapshot on the nodes; buckets come from the "
                            "objects only");
    cm_buf_free(&best.body);
    return rc;
}

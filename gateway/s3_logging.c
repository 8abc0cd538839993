/* gateway/s3_logging.c - bucket logging: PutBucketLogging/GetBucketLogging
 * (?logging, the configuration kept in metadata) and the delivery thread
 * that writes a bucket's access log lines as objects named
 * TargetPrefix + YYYY-mm-DD-HH-MM-SS-UNIQUE into the target bucket, as S3
 * does. Best effort like S3's: lines not yet delivered die with the process. */
#include "gateway/gw_int.h"

#include <openssl/evp.h>
#include <stdlib.h>

#define SHIP_OBJ_MAX (256u << 10) /* largest log object written (inline) */
#define SHIP_PENDING_MAX (8u << 20) /* per bucket; beyond this lines are dropped */

typedef struct ship_ent {
    md_logging_ent cfg;
    cm_buf pending;       /* lines not delivered yet */
    uint64_t dropped;     /* lines dropped because pending was full */
} ship_ent;

/* Delivery state. ents, n, stop and every ship_ent are guarded by lk; the
 * delivery itself runs unlocked on buffers taken out under lk. */
struct gw_logship {
    gw_server *srv;
    unsigned interval_s;
    pthread_t thread;
    bool started;
    pthread_mutex_t lk;
    pthread_cond_t cv;
    pthread_mutex_t deliver_lk; /* one delivery at a time */
    ship_ent *ents;
    size_t n;
    bool stop;
    int nconf;                  /* atomic: number of configured buckets (fast path) */
};

static ship_ent *find(gw_logship *ls, const char *bucket)
{
    for (size_t i = 0; i < ls->n; i++)
        if (!strcmp(ls->ents[i].cfg.bucket, bucket))
            return &ls->ents[i];
    return NULL;
}

/* Sets (cfg != NULL) or removes bucket's entry. Called with lk held. */
static int set_entry(gw_logship *ls, const char *bucket, const md_logging *cfg)
{
    ship_ent *e = find(ls, bucket);
    if (!cfg) {
        if (e) {
            cm_buf_free(&e->pending);
            *e = ls->ents[--ls->n];
        }
    } else if (e) {
        e->cfg.cfg = *cfg;
    } else {
        ship_ent *na = realloc(ls->ents, (ls->n + 1) * sizeof *na);
        if (!na)
            return CM_ENOMEM;
        ls->ents = na;
        e = &ls->ents[ls->n++];
        memset(e, 0, sizeof *e);
        snprintf(e->cfg.bucket, sizeof e->cfg.bucket, "%s", bucket);
        e->cfg.cfg = *cfg;
    }
    __atomic_store_n(&ls->nconf, (int)ls->n, __ATOMIC_RELEASE);
    return 0;
}

void gw_logship_add(gw_logship *ls, const char *bucket, cm_slice line)
{
    if (!ls || __atomic_load_n(&ls->nconf, __ATOMIC_ACQUIRE) == 0)
        return;
    pthread_mutex_lock(&ls->lk);
    ship_ent *e = find(ls, bucket);
    if (e) {
        if (e->pending.n + line.n > SHIP_PENDING_MAX)
            e->dropped++;
        else
            cm_buf_append_slice(&e->pending, line);
    }
    pthread_mutex_unlock(&ls->lk);
}

/* Writes one log object into target/prefix... Returns 0 or a CM_E* code. */
static int put_log_object(gw_server *srv, const md_logging *cfg, cm_slice data)
{
    uint8_t rnd[8], md5[16];
    unsigned ml = 0;
    char etag[33], ts[32], uniq[17];
    time_t now = time(NULL);
    struct tm tm;
    cm_buf key = {0};
    md_object obj;
    md_kv hdr = {CM_SLICE_STR("content-type"), CM_SLICE_STR("text/plain")};
    gw_req fake;
    int rc;

    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d-%H-%M-%S-", &tm);
    if ((rc = cm_random_bytes(rnd, sizeof rnd)))
        return rc;
    for (int i = 0; i < 8; i++)
        snprintf(uniq + 2 * i, 3, "%02X", rnd[i]);
    cm_buf_printf(&key, "%s%s%s", cfg->target_prefix, ts, uniq);
    EVP_Digest(data.p, data.n, md5, &ml, EVP_md5(), NULL);
    cm_hex_encode(md5, 16, etag);
    memset(&obj, 0, sizeof obj);
    obj.size = data.n;
    obj.mtime_ms = cm_now_ms();
    obj.etag = CM_SLICE(etag, 32);
    obj.hdrs = &hdr;
    obj.nhdrs = 1;
    obj.inline_data = data;
    /* A request-less commit: the hook adds the target's storage delta. */
    memset(&fake, 0, sizeof fake);
    fake.srv = srv;
    fake.op = GW_OP_NotImplementedOp;
    snprintf(fake.bucket, sizeof fake.bucket, "%s", cfg->target_bucket);
    gw_manifest mf;
    if ((rc = gw_manifest_attach(srv, cfg->target_bucket, cm_buf_slice(&key), &obj, &mf))) {
        cm_log(CM_LOG_WARN, "log delivery to %s: manifest: %s", cfg->target_bucket,
               cm_strerror(rc));
        cm_buf_free(&key);
        return rc;
    }
    md_write_opts o = {NULL, NULL, gw_commit_hook, &fake, mf.intent_id};
    rc = md_object_put_ex(srv->md, cfg->target_bucket, cm_buf_slice(&key), &obj, 0, &o);
    gw_manifest_done(srv, &mf, rc);
    if (rc)
        cm_log(CM_LOG_WARN, "log delivery to %s: %s", cfg->target_bucket, cm_strerror(rc));
    cm_buf_free(&key);
    return rc;
}

void gw_logship_flush(gw_logship *ls)
{
    if (!ls)
        return;
    pthread_mutex_lock(&ls->deliver_lk);
    pthread_mutex_lock(&ls->lk);
    size_t n = ls->n;
    md_logging *cfgs = calloc(n ? n : 1, sizeof *cfgs);
    cm_buf *bufs = calloc(n ? n : 1, sizeof *bufs);
    if (cfgs && bufs) {
        for (size_t i = 0; i < n; i++) {
            cfgs[i] = ls->ents[i].cfg.cfg;
            bufs[i] = ls->ents[i].pending; /* taken over */
            memset(&ls->ents[i].pending, 0, sizeof ls->ents[i].pending);
        }
    } else {
        n = 0;
    }
    pthread_mutex_unlock(&ls->lk);
    for (size_t i = 0; i < n; i++) {
        size_t off = 0;
        while (off < bufs[i].n) {
            /* Cut at a line end at most SHIP_OBJ_MAX bytes on. */
            size_t len = bufs[i].n - off;
            if (len > SHIP_OBJ_MAX) {
                len = SHIP_OBJ_MAX;
                while (len > 1 && bufs[i].p[off + len - 1] != '\n')
                    len--;
            }
            put_log_object(ls->srv, &cfgs[i], CM_SLICE(bufs[i].p + off, len));
            off += len;
        }
        cm_buf_free(&bufs[i]);
    }
    free(cfgs);
    free(bufs);
    pthread_mutex_unlock(&ls->deliver_lk);
}

static void *ship_main(void *arg)
{
    gw_logship *ls = arg;
    pthread_mutex_lock(&ls->lk);
    while (!ls->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ls->interval_s;
        pthread_cond_timedwait(&ls->cv, &ls->lk, &ts);
        pthread_mutex_unlock(&ls->lk);
        gw_logship_flush(ls);
        pthread_mutex_lock(&ls->lk);
    }
    pthread_mutex_unlock(&ls->lk);
    return NULL;
}

int gw_logship_start(gw_server *srv, unsigned interval_s, gw_logship **out)
{
    gw_logship *ls = calloc(1, sizeof *ls);
    md_logging_ent *a = NULL;
    size_t n = 0;
    int rc;
    if (!ls)
        return CM_ENOMEM;
    ls->srv = srv;
    ls->interval_s = interval_s ? interval_s : 60;
    pthread_mutex_init(&ls->lk, NULL);
    pthread_mutex_init(&ls->deliver_lk, NULL);
    pthread_cond_init(&ls->cv, NULL);
    if ((rc = md_logging_list(srv->md, &a, &n)))
        goto fail;
    for (size_t i = 0; i < n; i++)
        if ((rc = set_entry(ls, a[i].bucket, &a[i].cfg)))
            goto fail;
    free(a);
    a = NULL;
    if (pthread_create(&ls->thread, NULL, ship_main, ls)) {
        rc = CM_ENOMEM;
        goto fail;
    }
    ls->started = true;
    *out = ls;
    return 0;
fail:
    free(a);
    ls->started = false;
    gw_logship_stop(ls);
    return rc;
}

void gw_logship_stop(gw_logship *ls)
{
    if (!ls)
        return;
    if (ls->started) {
        pthread_mutex_lock(&ls->lk);
        ls->stop = true;
        pthread_cond_signal(&ls->cv);
        pthread_mutex_unlock(&ls->lk);
        pthread_join(ls->thread, NULL);
        gw_logship_flush(ls);
    }
    for (size_t i = 0; i < ls->n; i++)
        cm_buf_free(&ls->ents[i].pending);
    free(ls->ents);
    pthread_mutex_destroy(&ls->lk);
    pthread_mutex_destroy(&ls->deliver_lk);
    pthread_cond_destroy(&ls->cv);
    free(ls);
}

/* ------------------------------------------------------------ handlers */
void gw_put_bucket_logging(gw_req *r)
{
    void *doc = NULL;
    md_logging cfg;
    bool enable = false;
    int rc;

    if (!gw_bucket_exists(r))
        return;
    gw_xnode *root = gw_xml_parse(cm_buf_slice(&r->body), &doc);
    if (!root || strcmp(root->name, "BucketLoggingStatus")) {
        gw_error(r, S3E_MalformedXML);
        goto out;
    }
    memset(&cfg, 0, sizeof cfg);
    gw_xnode *le = gw_xml_child(root, "LoggingEnabled");
    if (le) {
        gw_xnode *tb = gw_xml_child(le, "TargetBucket");
        gw_xnode *tp = gw_xml_child(le, "TargetPrefix");
        if (!tb || tb->text.n == 0 || tb->text.n > MD_BUCKET_MAX ||
            (tp && tp->text.n > MD_KEY_MAX - 40)) {
            gw_error(r, S3E_MalformedXML);
            goto out;
        }
        memcpy(cfg.target_bucket, tb->text.p, tb->text.n);
        if (tp)
            memcpy(cfg.target_prefix, tp->text.p, tp->text.n);
        md_bucket b;
        if (md_bucket_get(r->srv->md, cfg.target_bucket, &b)) {
            gw_error(r, S3E_InvalidTargetBucketForLogging);
            goto out;
        }
        enable = true;
    }
    if ((rc = md_logging_put(r->srv->md, r->bucket, enable ? &cfg : NULL))) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        goto out;
    }
    gw_logship *ls = gw_logship_of(r->srv);
    if (ls) {
        pthread_mutex_lock(&ls->lk);
        rc = set_entry(ls, r->bucket, enable ? &cfg : NULL);
        pthread_mutex_unlock(&ls->lk);
        if (rc)
            cm_log(CM_LOG_WARN, "%s: logging config kept but not active until restart", r->id);
    }
out:
    gw_xml_doc_free(doc);
}

void gw_get_bucket_logging(gw_req *r)
{
    md_logging cfg;
    if (!gw_bucket_exists(r))
        return;
    int rc = md_logging_get(r->srv->md, r->bucket, &cfg);
    if (rc && rc != CM_ENOTFOUND) {
        gw_error(r, gw_s3err_from_cm(rc, S3E_InternalError));
        return;
    }
    cm_buf *b = &r->resp_body;
    gw_xml_start(b, "BucketLoggingStatus");
    if (rc == 0) {
        gw_xml_open(b, "LoggingEnabled");
        gw_xml_elem(b, "TargetBucket", cfg.target_bucket);
        gw_xml_elem(b, "TargetPrefix", cfg.target_prefix);
        gw_xml_close(b, "LoggingEnabled");
    }
    gw_xml_close(b, "BucketLoggingStatus");
}

/* gateway/server.c - assembles a running server: opens metadata and the
 * shard store, wires garbage reclaim between them, recovers from an
 * interrupted run, and starts the HTTP daemon. No S3 logic. */
#include "gateway/gw_int.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <errno.h>

struct gw_ref {
    uint64_t hash;
    size_t count;
};

struct gw_deferred {
    struct gw_deferred *next;
    uint64_t hash;
    size_t n;
    uint8_t layout[];
};

static uint64_t layout_hash(cm_slice s)
{
    return cm_fnv1a(CM_FNV1A_INIT, s.p, s.n);
}

void gw_layout_ref(gw_server *srv, cm_slice layout)
{
    if (!layout.n)
        return;
    uint64_t h = layout_hash(layout);
    pthread_mutex_lock(&srv->refs_lock);
    size_t i;
    for (i = 0; i < srv->nrefs && srv->refs[i].hash != h; i++)
        ;
    if (i < srv->nrefs) {
        srv->refs[i].count++;
    } else {
        if (srv->nrefs == srv->caprefs) {
            size_t cap = srv->caprefs ? srv->caprefs * 2 : 64;
            struct gw_ref *a = realloc(srv->refs, cap * sizeof *a);
            if (!a) {
                pthread_mutex_unlock(&srv->refs_lock);
                return;
            }
            srv->refs = a;
            srv->caprefs = cap;
        }
        srv->refs[srv->nrefs++] = (struct gw_ref){h, 1};
    }
    pthread_mutex_unlock(&srv->refs_lock);
}

void gw_layout_unref(gw_server *srv, cm_slice layout)
{
    if (!layout.n)
        return;
    uint64_t h = layout_hash(layout);
    struct gw_deferred *run = NULL;
    pthread_mutex_lock(&srv->refs_lock);
    for (size_t i = 0; i < srv->nrefs; i++) {
        if (srv->refs[i].hash != h)
            continue;
        if (--srv->refs[i].count == 0) {
            srv->refs[i] = srv->refs[--srv->nrefs];
            for (struct gw_deferred **pp = &srv->deferred; *pp;) {
                if ((*pp)->hash == h) {
                    struct gw_deferred *d = *pp;
                    *pp = d->next;
                    d->next = run;
                    run = d;
                } else {
                    pp = &(*pp)->next;
                }
            }
        }
        break;
    }
    pthread_mutex_unlock(&srv->refs_lock);
    while (run) {
        struct gw_deferred *d = run;
        run = d->next;
        cs_layout_delete(srv->cs, CM_SLICE(d->layout, d->n));
        free(d);
    }
}

/* md's reclaim hook: frees data no record refers to any more, unless a
 * reader still streams it; then the delete waits for that reader and the
 * garbage record stays until the next start (CM_EUNAVAIL). */
static int reclaim(void *arg, cm_slice layout)
{
    gw_server *srv = arg;
    uint64_t h = layout_hash(layout);
    pthread_mutex_lock(&srv->refs_lock);
    for (size_t i = 0; i < srv->nrefs; i++) {
        if (srv->refs[i].hash == h) {
            struct gw_deferred *d = malloc(sizeof *d + layout.n);
            if (d) {
                d->hash = h;
                d->n = layout.n;
                memcpy(d->layout, layout.p, layout.n);
                d->next = srv->deferred;
                srv->deferred = d;
            }
            pthread_mutex_unlock(&srv->refs_lock);
            return CM_EUNAVAIL;
        }
    }
    pthread_mutex_unlock(&srv->refs_lock);
    return cs_layout_delete(srv->cs, layout);
}

static int open_store(gw_server *srv)
{
    const gw_config *c = &srv->cfg;
    char *paths[64];
    int n = 0, rc;
    if (c->nodes && c->nodes[0]) {
        char *dup = strdup(c->nodes), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
            paths[n++] = strdup(t);
        free(dup);
        if (n < c->ec_k + c->ec_m) {
            cm_log(CM_LOG_ERROR, "%d nodes given, but --ec %d+%d needs at least %d", n, c->ec_k,
                   c->ec_m, c->ec_k + c->ec_m);
            rc = CM_EINVAL;
            goto out;
        }
        if (!c->cluster_secret || !c->cluster_secret[0]) {
            cm_log(CM_LOG_ERROR, "--nodes needs the cluster secret in CAIRN_CLUSTER_SECRET");
            rc = CM_EINVAL;
            goto out;
        }
        rc = cs_store_open_nodes((const char *const *)paths, n, c->cluster_secret, c->ec_k,
                                 c->ec_m, c->block_size, &srv->cs);
        if (rc)
            cm_log(CM_LOG_ERROR, "cannot open the storage nodes: %s", cm_strerror(rc));
        goto out;
    }
    if (c->drives && c->drives[0]) {
        char *dup = strdup(c->drives), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
            paths[n++] = strdup(t);
        free(dup);
    } else {
        int want = c->ec_k + c->ec_m;
        for (n = 0; n < want && n < 64; n++) {
            paths[n] = malloc(strlen(c->data_dir) + 16);
            sprintf(paths[n], "%s/drive%d", c->data_dir, n + 1);
        }
    }
    if (n < c->ec_k + c->ec_m) {
        cm_log(CM_LOG_ERROR, "%d drives given, but --ec %d+%d needs at least %d", n, c->ec_k,
               c->ec_m, c->ec_k + c->ec_m);
        rc = CM_EINVAL;
        goto out;
    }
    rc = cs_store_open_local((const char *const *)paths, n, c->ec_k, c->ec_m, c->block_size,
                             &srv->cs);
    if (rc)
        cm_log(CM_LOG_ERROR, "cannot open drives: %s", cm_strerror(rc));
out:
    for (int i = 0; i < n; i++)
        free(paths[i]);
    return rc;
}

int gw_start(const gw_config *cfg, gw_server_t **out)
{
    gw_server *srv = calloc(1, sizeof *srv);
    char path[4096];
    int rc;
    if (!srv)
        return CM_ENOMEM;
    srv->cfg = *cfg;
    pthread_mutex_init(&srv->refs_lock, NULL);
    srv->inline_max = cfg->inline_max;
    snprintf(srv->access_key, sizeof srv->access_key, "%s", cfg->access_key);
    snprintf(srv->secret_key, sizeof srv->secret_key, "%s", cfg->secret_key);
    /* The owner's canonical id: stable, derived from the root access key. */
    uint8_t h[32];
    unsigned hl = 0;
    char seed[160];
    snprintf(seed, sizeof seed, "cairn-owner:%s", cfg->access_key);
    EVP_Digest(seed, strlen(seed), h, &hl, EVP_sha256(), NULL);
    cm_hex_encode(h, 32, srv->owner_id);
    snprintf(srv->owner_name, sizeof srv->owner_name, "cairn");

    if ((rc = cm_mkdir_p(cfg->data_dir, 0700))) {
        cm_log(CM_LOG_ERROR, "cannot create %s", cfg->data_dir);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/meta", cfg->data_dir);
    if ((rc = md_open(path, &srv->md))) {
        cm_log(CM_LOG_ERROR, "cannot open metadata at %s: %s", path, cm_strerror(rc));
        goto fail;
    }
    /* The metadata holds user secrets in the clear (SigV4 needs them): owner only. */
    if (chmod(path, 0700))
        cm_log(CM_LOG_WARN, "cannot chmod 0700 %s: %s", path, strerror(errno));
    if ((rc = open_store(srv)))
        goto fail;
    md_set_reclaim(srv->md, reclaim, srv);
    if (cfg->rebuild_metadata && (rc = gw_rebuild_metadata(srv)))
        goto fail;
    if ((rc = gw_ratelimit_reload(srv))) {
        cm_log(CM_LOG_ERROR, "cannot load rate limits: %s", cm_strerror(rc));
        goto fail;
    }
    if ((rc = cs_store_recover(srv->cs)))
        cm_log(CM_LOG_WARN, "shard recovery: %s", cm_strerror(rc));
    size_t nrec = 0;
    if ((rc = md_recover(srv->md, &nrec))) {
        cm_log(CM_LOG_ERROR, "metadata recovery failed: %s", cm_strerror(rc));
        goto fail;
    }
    if (nrec)
        cm_log(CM_LOG_INFO, "reclaimed the data of %zu interrupted or replaced writes", nrec);
    srv->intents_mark = md_seq_mark(srv->md);
    if ((rc = gw_upkeep_start(srv)))
        goto fail;
    if ((rc = gw_observe_start(srv)))
        goto fail;
    if ((rc = gw_evt_start(srv)))
        goto fail;
    if ((rc = gw_http_start(srv, cfg->listen)))
        goto fail;
    *out = srv;
    return 0;
fail:
    gw_stop(srv);
    return rc;
}

void gw_stop(gw_server_t *srv)
{
    if (!srv)
        return;
    gw_http_stop(srv);
    gw_upkeep_stop(srv);
    gw_evt_stop(srv);
    gw_observe_stop(srv);
    gw_ratelimit_free(srv);
    md_close(srv->md);
    cs_store_close(srv->cs);
    cm_wipe(srv->secret_key, sizeof srv->secret_key);
    while (srv->deferred) {
        struct gw_deferred *d = srv->deferred;
        srv->deferred = d->next;
        free(d); /* its garbage record is reclaimed at the next start */
    }
    free(srv->refs);
    pthread_mutex_destroy(&srv->refs_lock);
    free(srv);
}

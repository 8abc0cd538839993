/* gateway/upkeep.c - keeping the stored data whole while serving: heal
 * walks (every object's shards present, right length, headers matching;
 * missing or bad ones rebuilt), the background scrub (the same walk
 * verifying every block's CRC32C, at a configured rate), garbage retries
 * (data of deleted or replaced objects whose removal failed because a
 * storage node was down), and the admin endpoints for them:
 *
 *   POST /_cairn/admin/heal[?deep=1]   walk now; JSON counts
 *   POST /_cairn/admin/scrub           one deep pass now; JSON counts
 *   GET  /_cairn/admin/scrub           the background scrub's totals
 *   POST /_cairn/admin/gc              retry pending garbage now
 *   GET  /_cairn/admin/nodes           the shard stores and whether they are up
 *
 * One maintenance thread retries garbage every few seconds and, whenever
 * the chunkstore reports that a node came back or was replaced (its epoch
 * moved), runs a heal walk. One scrub thread runs deep passes. Walks are
 * serialised: one at a time. */
#include "common/json.h"
#include "gateway/gw_int.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define GC_EVERY_MS 5000
#define SCRUB_FIRST_MS 60000 /* first background pass a minute after start */

struct gw_upkeep {
    gw_server *srv;
    pthread_mutex_t walk_mu; /* one walk at a time */
    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv;       /* signalled on stop */
    int stop;
    pthread_t maint_th, scrub_th;
    int maint_started, scrub_started;
    /* totals, for GET scrub, metrics */
    struct cs_check_stats scrub_tot, heal_tot;
    uint64_t scrub_passes, heal_walks, gc_reclaimed, gc_pending;
    uint64_t scrub_objects;
    int scrub_running;
    uint64_t settings_hash; /* of the settings snapshot last written (maint thread) */
};

struct walk {
    gw_server *srv;
    struct gw_upkeep *up;
    int deep;
    uint64_t rate;   /* bytes verified per second; 0 = no limit */
    int64_t t0_ms;
    uint64_t objects;
    struct cs_check_stats st;
    char last_bucket[MD_BUCKET_MAX + 1];
    cm_buf last_key;
    int stopped;
};

static bool up_stopping(struct gw_upkeep *up)
{
    pthread_mutex_lock(&up->mu);
    bool s = up->stop;
    pthread_mutex_unlock(&up->mu);
    return s;
}

/* Sleeps ms milliseconds or until stop; returns true if stopping. */
static bool up_sleep(struct gw_upkeep *up, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&up->mu);
    while (!up->stop && pthread_cond_timedwait(&up->cv, &up->mu, &ts) != ETIMEDOUT)
        ;
    bool s = up->stop;
    pthread_mutex_unlock(&up->mu);
    return s;
}

static int walk_one(void *arg, const char *bucket, cm_slice key, const md_object *o)
{
    struct walk *w = arg;
    snprintf(w->last_bucket, sizeof w->last_bucket, "%s", bucket);
    cm_buf_reset(&w->last_key);
    if (cm_buf_append_slice(&w->last_key, key))
        return CM_ENOMEM;
    w->objects++;
    if (o->layout.n) {
        int rc = cs_layout_check(w->srv->cs, o->layout, w->deep, &w->st);
        if (rc)
            cm_log(CM_LOG_WARN, "heal: object in bucket %s has a corrupt layout: %s", bucket,
                   cm_strerror(rc));
    }
    if (w->up && up_stopping(w->up)) {
        w->stopped = 1;
        return CM_EUNAVAIL;
    }
    if (w->rate) {
        /* Pace: never ahead of rate bytes per second since the start. */
        int64_t due = w->t0_ms + (int64_t)(w->st.bytes_verified * 1000 / w->rate);
        int64_t now = cm_now_ms();
        if (due > now && w->up && up_sleep(w->up, due - now)) {
            w->stopped = 1;
            return CM_EUNAVAIL;
        }
    }
    return 0;
}

/* Walks every object; returns 0 or the first scan error. */
static int walk_all(struct walk *w)
{
    bool more = true, first = true;
    int rc = 0;
    w->t0_ms = cm_now_ms();
    while (more && rc == 0) {
        rc = md_object_scan(w->srv->md, first ? NULL : w->last_bucket, cm_buf_slice(&w->last_key),
                            128, walk_one, w, &more);
        first = false;
    }
    cm_buf_free(&w->last_key);
    return w->stopped ? 0 : rc;
}

static void stats_add(struct cs_check_stats *a, const struct cs_check_stats *b)
{
    a->segments += b->segments;
    a->shards_checked += b->shards_checked;
    a->shards_missing += b->shards_missing;
    a->shards_corrupt += b->shards_corrupt;
    a->shards_healed += b->shards_healed;
    a->shards_failed += b->shards_failed;
    a->manifests += b->manifests;
    a->manifests_healed += b->manifests_healed;
    a->bytes_verified += b->bytes_verified;
}

static void stats_json(cm_buf *b, uint64_t objects, const struct cs_check_stats *s)
{
    cm_buf_printf(b,
                  "\"objects\":%llu,\"segments\":%llu,\"shards_checked\":%llu,"
                  "\"shards_missing\":%llu,\"shards_corrupt\":%llu,\"shards_healed\":%llu,"
                  "\"shards_failed\":%llu,\"manifests\":%llu,\"manifests_healed\":%llu,"
                  "\"bytes_verified\":%llu",
                  (unsigned long long)objects, (unsigned long long)s->segments,
                  (unsigned long long)s->shards_checked, (unsigned long long)s->shards_missing,
                  (unsigned long long)s->shards_corrupt, (unsigned long long)s->shards_healed,
                  (unsigned long long)s->shards_failed, (unsigned long long)s->manifests,
                  (unsigned long long)s->manifests_healed,
                  (unsigned long long)s->bytes_verified);
}

/* One whole walk under the walk lock; adds to the totals. */
static int run_walk(gw_server *srv, int deep, uint64_t rate, bool background, struct walk *w)
{
    struct gw_upkeep *up = srv->up;
    memset(w, 0, sizeof *w);
    w->srv = srv;
    w->up = background ? up : NULL;
    w->deep = deep;
    w->rate = rate;
    pthread_mutex_lock(&up->walk_mu);
    if (deep) {
        pthread_mutex_lock(&up->mu);
        up->scrub_running = 1;
        pthread_mutex_unlock(&up->mu);
    }
    int rc = walk_all(w);
    pthread_mutex_lock(&up->mu);
    if (deep) {
        stats_add(&up->scrub_tot, &w->st);
        up->scrub_objects += w->objects;
        up->scrub_running = 0;
        if (!w->stopped)
            up->scrub_passes++;
    } else {
        stats_add(&up->heal_tot, &w->st);
        up->heal_walks++;
    }
    pthread_mutex_unlock(&up->mu);
    pthread_mutex_unlock(&up->walk_mu);
    if (w->st.shards_missing || w->st.shards_corrupt || w->st.shards_failed)
        cm_log(CM_LOG_INFO,
               "%s: %llu objects, %llu shards checked: %llu missing, %llu corrupt, %llu "
               "healed, %llu not healed",
               deep ? "scrub" : "heal", (unsigned long long)w->objects,
               (unsigned long long)w->st.shards_checked,
               (unsigned long long)w->st.shards_missing,
               (unsigned long long)w->st.shards_corrupt,
               (unsigned long long)w->st.shards_healed,
               (unsigned long long)w->st.shards_failed);
    return rc;
}

static void run_gc(gw_server *srv, size_t *done, size_t *left)
{
    size_t d = 0, l = 0;
    int rc = md_gc(srv->md, srv->intents_mark, &d, &l);
    if (rc)
        cm_log(CM_LOG_WARN, "gc: %s", cm_strerror(rc));
    pthread_mutex_lock(&srv->up->mu);
    srv->up->gc_reclaimed += d;
    srv->up->gc_pending = l;
    pthread_mutex_unlock(&srv->up->mu);
    if (done)
        *done = d;
    if (left)
        *left = l;
}

static void *maint_main(void *arg)
{
    gw_server *srv = arg;
    struct gw_upkeep *up = srv->up;
    uint64_t epoch = cs_store_epoch(srv->cs);
    int64_t next_gc = cm_now_ms() + GC_EVERY_MS;
    gw_settings_sync(srv, &up->settings_hash);
    while (!up_sleep(up, 500)) {
        uint64_t e = cs_store_epoch(srv->cs);
        if (e != epoch) {
            /* A node came back or was replaced: give it back what it missed
             * (garbage it still holds, shards it lacks). */
            epoch = e;
            cm_log(CM_LOG_INFO, "a storage node returned or was replaced: garbage retry and "
                                "heal walk");
            run_gc(srv, NULL, NULL);
            struct walk w;
            run_walk(srv, 0, 0, true, &w);
            next_gc = cm_now_ms() + GC_EVERY_MS;
        }
        if (cm_now_ms() >= next_gc) {
            run_gc(srv, NULL, NULL);
            gw_settings_sync(srv, &up->settings_hash);
            next_gc = cm_now_ms() + GC_EVERY_MS;
        }
    }
    return NULL;
}

static void *scrub_main(void *arg)
{
    gw_server *srv = arg;
    struct gw_upkeep *up = srv->up;
    int64_t wait = SCRUB_FIRST_MS;
    if (srv->cfg.scrub_interval_s && (int64_t)srv->cfg.scrub_interval_s * 1000 < wait)
        wait = (int64_t)srv->cfg.scrub_interval_s * 1000;
    while (!up_sleep(up, wait)) {
        struct walk w;
        run_walk(srv, 1, srv->cfg.scrub_rate, true, &w);
        wait = (int64_t)srv->cfg.scrub_interval_s * 1000;
    }
    return NULL;
}

int gw_upkeep_start(gw_server *srv)
{
    struct gw_upkeep *up = calloc(1, sizeof *up);
    if (!up)
        return CM_ENOMEM;
    up->srv = srv;
    pthread_mutex_init(&up->walk_mu, NULL);
    pthread_mutex_init(&up->mu, NULL);
    pthread_cond_init(&up->cv, NULL);
    srv->up = up;
    if (pthread_create(&up->maint_th, NULL, maint_main, srv) == 0)
        up->maint_started = 1;
    else
        cm_log(CM_LOG_WARN, "cannot start the maintenance thread");
    if (srv->cfg.scrub_rate > 0) {
        if (pthread_create(&up->scrub_th, NULL, scrub_main, srv) == 0)
            up->scrub_started = 1;
        else
            cm_log(CM_LOG_WARN, "cannot start the scrub thread");
    }
    return 0;
}

void gw_upkeep_stop(gw_server *srv)
{
    struct gw_upkeep *up = srv ? srv->up : NULL;
    if (!up)
        return;
    pthread_mutex_lock(&up->mu);
    up->stop = 1;
    pthread_cond_broadcast(&up->cv);
    pthread_mutex_unlock(&up->mu);
    if (up->maint_started)
        pthread_join(up->maint_th, NULL);
    if (up->scrub_started)
        pthread_join(up->scrub_th, NULL);
    gw_settings_sync(srv, &up->settings_hash); /* the last changes, before the store closes */
    pthread_mutex_destroy(&up->walk_mu);
    pthread_mutex_destroy(&up->mu);
    pthread_cond_destroy(&up->cv);
    free(up);
    srv->up = NULL;
}

void gw_upkeep_metrics(gw_server *srv, cm_buf *b)
{
    struct gw_upkeep *up = srv->up;
    if (!up)
        return;
    pthread_mutex_lock(&up->mu);
    struct cs_check_stats s = up->scrub_tot, h = up->heal_tot;
    uint64_t passes = up->scrub_passes, walks = up->heal_walks, gcp = up->gc_pending;
    pthread_mutex_unlock(&up->mu);
    cm_buf_printf(b,
                  "# HELP cairn_scrub_passes_total Completed background or admin scrub passes.\n"
                  "# TYPE cairn_scrub_passes_total counter\ncairn_scrub_passes_total %llu\n"
                  "# HELP cairn_scrub_bytes_verified_total Shard bytes whose CRC32C the scrub checked.\n"
                  "# TYPE cairn_scrub_bytes_verified_total counter\n"
                  "cairn_scrub_bytes_verified_total %llu\n"
                  "# HELP cairn_scrub_shards_corrupt_total Shards the scrub found corrupt.\n"
                  "# TYPE cairn_scrub_shards_corrupt_total counter\n"
                  "cairn_scrub_shards_corrupt_total %llu\n"
                  "# HELP cairn_heal_walks_total Heal walks run (admin or after a node returned).\n"
                  "# TYPE cairn_heal_walks_total counter\ncairn_heal_walks_total %llu\n"
                  "# HELP cairn_shards_healed_total Shards rebuilt by heal walks and scrubs.\n"
                  "# TYPE cairn_shards_healed_total counter\ncairn_shards_healed_total %llu\n"
                  "# HELP cairn_garbage_pending Garbage records whose data could not be removed yet.\n"
                  "# TYPE cairn_garbage_pending gauge\ncairn_garbage_pending %llu\n",
                  (unsigned long long)passes, (unsigned long long)s.bytes_verified,
                  (unsigned long long)s.shards_corrupt, (unsigned long long)walks,
                  (unsigned long long)(s.shards_healed + h.shards_healed),
                  (unsigned long long)gcp);
    int n = cs_store_ndrives(srv->cs);
    cm_buf_printf(b, "# HELP cairn_drive_up Whether a shard store (drive or node) is reachable.\n"
                     "# TYPE cairn_drive_up gauge\n");
    for (int d = 0; d < n; d++)
        cm_buf_printf(b, "cairn_drive_up{slot=\"%d\"} %d\n", d, cs_store_drive_up(srv->cs, d));
}

/* ------------------------------------------------------------ admin */

static bool is(gw_req *r, const char *m)
{
    return cm_slice_eq_str(r->method, m);
}

/* The endpoints here take no sub-path and one or two methods: answers 404
 * or 405 and returns false otherwise. */
static bool endpoint_ok(gw_req *r, cm_slice rest, const char *m1, const char *m2)
{
    if (rest.n > 1) {
        gw_json_error(r, 404, "NotFound", "no such admin endpoint");
        return false;
    }
    if (!is(r, m1) && !(m2 && is(r, m2))) {
        char msg[32];
        snprintf(msg, sizeof msg, "use %s%s%s", m1, m2 ? " or " : "", m2 ? m2 : "");
        gw_json_error(r, 405, "MethodNotAllowed", msg);
        return false;
    }
    return true;
}

static void walk_reply(gw_req *r, const struct walk *w)
{
    cm_buf b = {0};
    cm_buf_append_str(&b, "{");
    stats_json(&b, w->objects, &w->st);
    cm_buf_append_str(&b, "}\n");
    gw_json_reply(r, 200, &b);
    cm_buf_free(&b);
}

void gw_admin_heal(gw_req *r, cm_slice rest)
{
    if (!endpoint_ok(r, rest, "POST", NULL))
        return;
    cm_slice v;
    int deep = gw_param(r, "deep", &v) && (cm_slice_eq_str(v, "1") || cm_slice_eq_str(v, "true"));
    struct walk w;
    int rc = run_walk(r->srv, deep, 0, false, &w);
    if (rc) {
        gw_json_error(r, 500, "InternalError", cm_strerror(rc));
        return;
    }
    walk_reply(r, &w);
}

void gw_admin_scrub(gw_req *r, cm_slice rest)
{
    struct gw_upkeep *up = r->srv->up;
    if (!endpoint_ok(r, rest, "GET", "POST"))
        return;
    if (is(r, "POST")) {
        struct walk w;
        int rc = run_walk(r->srv, 1, 0, false, &w);
        if (rc) {
            gw_json_error(r, 500, "InternalError", cm_strerror(rc));
            return;
        }
        walk_reply(r, &w);
        return;
    }
    cm_buf b = {0};
    pthread_mutex_lock(&up->mu);
    cm_buf_printf(&b, "{\"rate\":%llu,\"interval\":%u,\"running\":%s,\"passes\":%llu,",
                  (unsigned long long)r->srv->cfg.scrub_rate, r->srv->cfg.scrub_interval_s,
                  up->scrub_running ? "true" : "false", (unsigned long long)up->scrub_passes);
    stats_json(&b, up->scrub_objects, &up->scrub_tot);
    pthread_mutex_unlock(&up->mu);
    cm_buf_append_str(&b, "}\n");
    gw_json_reply(r, 200, &b);
    cm_buf_free(&b);
}

void gw_admin_gc(gw_req *r, cm_slice rest)
{
    if (!endpoint_ok(r, rest, "POST", NULL))
        return;
    size_t done = 0, left = 0;
    run_gc(r->srv, &done, &left);
    cm_buf b = {0};
    cm_buf_printf(&b, "{\"reclaimed\":%zu,\"pending\":%zu}\n", done, left);
    gw_json_reply(r, 200, &b);
    cm_buf_free(&b);
}

void gw_admin_nodes(gw_req *r, cm_slice rest)
{
    if (!endpoint_ok(r, rest, "GET", NULL))
        return;
    cm_buf b = {0};
    int n = cs_store_ndrives(r->srv->cs);
    cm_buf_append_str(&b, "[");
    for (int d = 0; d < n; d++) {
        cm_buf_printf(&b, "%s{\"slot\":%d,\"url\":", d ? "," : "", d);
        cm_json_cstr(&b, cs_store_drive_name(r->srv->cs, d));
        cm_buf_printf(&b, ",\"up\":%s}", cs_store_drive_up(r->srv->cs, d) ? "true" : "false");
    }
    cm_buf_append_str(&b, "]\n");
    gw_json_reply(r, 200, &b);
    cm_buf_free(&b);
}

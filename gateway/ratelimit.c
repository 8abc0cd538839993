/* gateway/ratelimit.c - request rate limits: one token bucket per limited
 * access key and per limited bucket, configured in metadata (md_limit_*),
 * cached here and reloaded whenever the admin API changes a limit. A request
 * that finds an empty bucket gets 503 SlowDown, which SDKs retry. */
#include "gateway/gw_int.h"
#include <stdlib.h>

struct rl_entry {
    md_limit lim;   /* kind, name, rps, burst */
    gw_tb tb;
};

/* Entries are sorted by (kind, name). lock guards a, n and every tb; the
 * array is replaced whole by reload (token state carried over by name). */
struct gw_ratelimit {
    pthread_mutex_t lock;
    struct rl_entry *a;
    size_t n;       /* also read without the lock as a hint (atomic) */
};

bool gw_tb_take(gw_tb *tb, double rps, double burst, uint64_t now_ns)
{
    if (tb->last_ns == 0) {
        tb->tokens = burst;
    } else if (now_ns > tb->last_ns) {
        tb->tokens += (double)(now_ns - tb->last_ns) * rps / 1e9;
        if (tb->tokens > burst)
            tb->tokens = burst;
    }
    tb->last_ns = now_ns;
    if (tb->tokens < 1.0)
        return false;
    tb->tokens -= 1.0;
    return true;
}

static int ent_cmp(const void *a, const void *b)
{
    const md_limit *x = &((const struct rl_entry *)a)->lim, *y = &((const struct rl_entry *)b)->lim;
    if (x->kind != y->kind)
        return (int)x->kind - (int)y->kind;
    return strcmp(x->name, y->name);
}

static struct rl_entry *find(struct gw_ratelimit *rl, enum md_limit_kind kind, const char *name)
{
    struct rl_entry key;
    key.lim.kind = kind;
    snprintf(key.lim.name, sizeof key.lim.name, "%s", name);
    return rl->n ? bsearch(&key, rl->a, rl->n, sizeof *rl->a, ent_cmp) : NULL;
}

int gw_ratelimit_reload(gw_server *srv)
{
    md_limit *lims = NULL;
    size_t n = 0;
    int rc = md_limit_list(srv->md, &lims, &n);
    if (rc)
        return rc;
    struct rl_entry *a = n ? calloc(n, sizeof *a) : NULL;
    if (n && !a) {
        free(lims);
        return CM_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        a[i].lim = lims[i];
    free(lims);
    if (n)
        qsort(a, n, sizeof *a, ent_cmp);
    if (!srv->rl) {
        struct gw_ratelimit *rl = calloc(1, sizeof *rl);
        if (!rl) {
            free(a);
            return CM_ENOMEM;
        }
        pthread_mutex_init(&rl->lock, NULL);
        srv->rl = rl;
    }
    struct gw_ratelimit *rl = srv->rl;
    pthread_mutex_lock(&rl->lock);
    for (size_t i = 0; i < n; i++) {
        struct rl_entry *old = find(rl, a[i].lim.kind, a[i].lim.name);
        if (old) {
            a[i].tb = old->tb;
            if (a[i].tb.tokens > a[i].lim.burst)
                a[i].tb.tokens = a[i].lim.burst;
        }
    }
    free(rl->a);
    rl->a = a;
    __atomic_store_n(&rl->n, n, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&rl->lock);
    return 0;
}

void gw_ratelimit_free(gw_server *srv)
{
    if (!srv->rl)
        return;
    pthread_mutex_destroy(&srv->rl->lock);
    free(srv->rl->a);
    free(srv->rl);
    srv->rl = NULL;
}

static bool take(struct rl_entry *e, uint64_t now)
{
    return gw_tb_take(&e->tb, (double)e->lim.rps, (double)e->lim.burst, now);
}

int gw_ratelimit_check(gw_req *r)
{
    struct gw_ratelimit *rl = r->srv->rl;
    if (!rl || __atomic_load_n(&rl->n, __ATOMIC_ACQUIRE) == 0)
        return 0;
    if (r->op == GW_OP_Admin || r->op == GW_OP_AdminPublic)
        return 0; /* the operator can always reach the admin API */
    uint64_t now = cm_mono_ns();
    bool ok = true;
    pthread_mutex_lock(&rl->lock);
    struct rl_entry *ke = r->anonymous ? NULL : find(rl, MD_LIMIT_KEY, r->access_key);
    struct rl_entry *be = r->bucket[0] && !r->bucket_invalid
                              ? find(rl, MD_LIMIT_BUCKET, r->bucket)
                              : NULL;
    if (ke && !take(ke, now))
        ok = false;
    if (ok && be && !take(be, now)) {
        ok = false;
        if (ke)
            ke->tb.tokens += 1.0; /* not served: give the key's token back */
    }
    pthread_mutex_unlock(&rl->lock);
    if (!ok) {
        gw_error(r, S3E_SlowDown);
        return -1;
    }
    return 0;
}

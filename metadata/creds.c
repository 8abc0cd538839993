/* metadata/creds.c - users and access keys, per-user bucket grants and rate
 * limit settings. Key layout ('u', 'k', 'g', 'l') and record formats are
 * tabled in doc/metadata-keys.md. Authorization itself lives in the gateway
 * (gateway/authz.c); this file only stores. */
#include "metadata/md_int.h"

#include <pthread.h>
#include <stdlib.h>

#define K_USER 'u'   /* 'u' name -> user record */
#define K_KEY 'k'    /* 'k' access key -> user name */
#define K_GRANT 'g'  /* 'g' user 00 bucket -> grant record */
#define K_LIMIT 'l'  /* 'l' kind byte, name -> limit record */

/* Serialises the check-then-write of user creation and changes (name and
 * key must both stay unique); grants and limits are single-key writes. */
static pthread_mutex_t users_lk = PTHREAD_MUTEX_INITIALIZER;

static int key2(cm_buf *b, char prefix, const char *a, const char *c)
{
    cm_buf_reset(b);
    int rc = cm_buf_put_u8(b, (uint8_t)prefix);
    if (!rc)
        rc = cm_buf_append_str(b, a);
    if (!rc && c) {
        rc = cm_buf_put_u8(b, 0);
        if (!rc)
            rc = cm_buf_append_str(b, c);
    }
    return rc;
}

int md_user_check_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > MD_USER_NAME_MAX)
        return CM_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("._@+=-", ch)))
            return CM_EINVAL;
    }
    return 0;
}

static bool printable(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}

/* ------------------------------------------------------------ user record
 * version u8 | access key (4+n) | secret (4+n) | enabled u8 | ctime u64 */
static int user_encode(cm_buf *b, const md_user *u)
{
    int rc;
    cm_buf_reset(b);
    if ((rc = cm_buf_put_u8(b, MD__REC_VERSION)) ||
        (rc = cm_buf_put_bytes(b, CM_SLICE_STR(u->access_key))) ||
        (rc = cm_buf_put_bytes(b, CM_SLICE_STR(u->secret))) ||
        (rc = cm_buf_put_u8(b, u->enabled ? 1 : 0)) ||
        (rc = cm_buf_put_u64(b, (uint64_t)u->ctime_ms)))
        return rc;
    return 0;
}

static int user_decode(cm_slice name, cm_slice v, md_user *out)
{
    cm_reader r = {v.p, v.n};
    cm_slice ak, sk;
    uint8_t ver, en;
    uint64_t ctime;
    int rc;

    if (name.n == 0 || name.n > MD_USER_NAME_MAX || memchr(name.p, 0, name.n))
        return CM_ECORRUPT;
    if ((rc = cm_get_u8(&r, &ver)) || (rc = cm_get_bytes(&r, &ak)) ||
        (rc = cm_get_bytes(&r, &sk)) || (rc = cm_get_u8(&r, &en)) || (rc = cm_get_u64(&r, &ctime)))
        return rc;
    if (ver != MD__REC_VERSION || ak.n == 0 || ak.n > MD_ACCESS_KEY_MAX || sk.n > MD_SECRET_MAX ||
        memchr(ak.p, 0, ak.n) || memchr(sk.p, 0, sk.n))
        return CM_ECORRUPT;
    memset(out, 0, sizeof *out);
    memcpy(out->name, name.p, name.n);
    memcpy(out->access_key, ak.p, ak.n);
    memcpy(out->secret, sk.p, sk.n);
    out->enabled = en != 0;
    out->ctime_ms = (int64_t)ctime;
    return 0;
}

int md_user_create(md_db_t *db, const md_user *u)
{
    struct md__batch *wb = NULL;
    cm_buf ku = {0}, kk = {0}, v = {0};
    int rc;

    if (md_user_check_name(u->name) || !printable(u->access_key, MD_ACCESS_KEY_MAX) ||
        !printable(u->secret, MD_SECRET_MAX))
        return CM_EINVAL;
    if ((rc = key2(&ku, K_USER, u->name, NULL)) || (rc = key2(&kk, K_KEY, u->access_key, NULL)) ||
        (rc = user_encode(&v, u)))
        goto out0;
    if (!(wb = md__batch_new())) {
        rc = CM_ENOMEM;
        goto out0;
    }
    pthread_mutex_lock(&users_lk);
    rc = md__exists(db, cm_buf_slice(&ku));
    if (rc == 0)
        rc = CM_EEXISTS;
    if (rc == CM_ENOTFOUND) {
        rc = md__exists(db, cm_buf_slice(&kk));
        if (rc == 0)
            rc = CM_EEXISTS;
    }
    if (rc == CM_ENOTFOUND) {
        md__batch_put(wb, cm_buf_slice(&ku), cm_buf_slice(&v));
        md__batch_put(wb, cm_buf_slice(&kk), CM_SLICE_STR(u->name));
        rc = md__batch_commit(db, wb, true);
    }
    pthread_mutex_unlock(&users_lk);
out0:
    md__batch_free(wb);
    if (v.p)
        cm_wipe(v.p, v.n);
    cm_buf_free(&ku);
    cm_buf_free(&kk);
    cm_buf_free(&v);
    return rc;
}

int md_user_get(md_db_t *db, const char *name, md_user *out)
{
    cm_buf k = {0}, v = {0};
    int rc;

    if (md_user_check_name(name))
        return CM_ENOTFOUND;
    if ((rc = key2(&k, K_USER, name, NULL)) || (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    rc = user_decode(CM_SLICE_STR(name), cm_buf_slice(&v), out);
out:
    if (v.p)
        cm_wipe(v.p, v.n);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_user_by_key(md_db_t *db, const char *access_key, md_user *out)
{
    cm_buf k = {0}, v = {0};
    char name[MD_USER_NAME_MAX + 1];
    int rc;

    if (!printable(access_key, MD_ACCESS_KEY_MAX))
        return CM_ENOTFOUND;
    if ((rc = key2(&k, K_KEY, access_key, NULL)) || (rc = md__get(db, cm_buf_slice(&k), &v)))
        goto out;
    if (v.n == 0 || v.n > MD_USER_NAME_MAX) {
        rc = CM_ECORRUPT;
        goto out;
    }
    memcpy(name, v.p, v.n);
    name[v.n] = 0;
    if ((rc = md_user_get(db, name, out)))
        goto out;
    if (strcmp(out->access_key, access_key)) { /* a stale index entry */
        cm_wipe(out, sizeof *out);
        rc = CM_ENOTFOUND;
    }
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_user_set_enabled(md_db_t *db, const char *name, bool enabled)
{
    struct md__batch *wb = NULL;
    cm_buf k = {0}, v = {0};
    md_user u;
    int rc;

    if (!(wb = md__batch_new()))
        return CM_ENOMEM;
    pthread_mutex_lock(&users_lk);
    if ((rc = md_user_get(db, name, &u)))
        goto out;
    u.enabled = enabled;
    if ((rc = key2(&k, K_USER, name, NULL)) || (rc = user_encode(&v, &u)))
        goto out;
    md__batch_put(wb, cm_buf_slice(&k), cm_buf_slice(&v));
    rc = md__batch_commit(db, wb, true);
out:
    pthread_mutex_unlock(&users_lk);
    cm_wipe(&u, sizeof u);
    if (v.p)
        cm_wipe(v.p, v.n);
    md__batch_free(wb);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

/* Calls fn on every (key, value) whose key starts with prefix; stops at the
 * first non-zero return of fn and returns it. */
static int scan(md_db_t *db, cm_slice prefix, int (*fn)(void *arg, cm_slice k, cm_slice v),
                void *arg)
{
    struct md__iter *it = md__iter_new(db);
    int rc = 0;

    if (!it)
        return CM_ENOMEM;
    for (md__iter_seek(it, prefix); md__iter_valid(it); md__iter_next(it)) {
        cm_slice k = md__iter_key(it);
        if (!cm_slice_has_prefix(k, prefix))
            break;
        if ((rc = fn(arg, k, md__iter_val(it))))
            break;
    }
    if (!rc)
        rc = md__iter_status(it);
    md__iter_free(it);
    return rc;
}

static int del_cb(void *arg, cm_slice k, cm_slice v)
{
    (void)v;
    md__batch_del(arg, k);
    return 0;
}

int md_user_delete(md_db_t *db, const char *name)
{
    struct md__batch *wb = NULL;
    cm_buf ku = {0}, kk = {0}, kg = {0};
    md_user u;
    int rc;

    if (!(wb = md__batch_new()))
        return CM_ENOMEM;
    pthread_mutex_lock(&users_lk);
    if ((rc = md_user_get(db, name, &u)))
        goto out;
    if ((rc = key2(&ku, K_USER, name, NULL)) || (rc = key2(&kk, K_KEY, u.access_key, NULL)) ||
        (rc = key2(&kg, K_GRANT, name, "")))
        goto out;
    md__batch_del(wb, cm_buf_slice(&ku));
    md__batch_del(wb, cm_buf_slice(&kk));
    if ((rc = scan(db, cm_buf_slice(&kg), del_cb, wb)))
        goto out;
    rc = md__batch_commit(db, wb, true);
out:
    pthread_mutex_unlock(&users_lk);
    cm_wipe(&u, sizeof u);
    md__batch_free(wb);
    cm_buf_free(&ku);
    cm_buf_free(&kk);
    cm_buf_free(&kg);
    return rc;
}

/* A growable array filled by scan callbacks. */
struct vec {
    void *a;
    size_t n, cap, size;
};

static void *vec_push(struct vec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        void *na = realloc(v->a, cap * v->size);
        if (!na)
            return NULL;
        v->a = na;
        v->cap = cap;
    }
    void *e = (char *)v->a + v->n++ * v->size;
    memset(e, 0, v->size);
    return e;
}

static int user_list_cb(void *arg, cm_slice k, cm_slice v)
{
    struct vec *vec = arg;
    md_user *u = vec_push(vec);
    if (!u)
        return CM_ENOMEM;
    if (user_decode(CM_SLICE(k.p + 1, k.n - 1), v, u)) {
        cm_log(CM_LOG_WARN, "metadata: skipping corrupt user record");
        vec->n--;
        return 0;
    }
    cm_wipe(u->secret, sizeof u->secret);
    return 0;
}

int md_user_list(md_db_t *db, md_user **out, size_t *n)
{
    uint8_t p = K_USER;
    struct vec v = {NULL, 0, 0, sizeof(md_user)};
    int rc = scan(db, CM_SLICE(&p, 1), user_list_cb, &v);
    if (rc) {
        free(v.a);
        return rc;
    }
    *out = v.a;
    *n = v.n;
    return 0;
}

/* ------------------------------------------------------------------ grants
 * record: version u8 | allow u32 */
int md_grant_set(md_db_t *db, const char *user, const char *bucket, uint32_t allow)
{
    struct md__batch *wb = NULL;
    cm_buf k = {0}, v = {0};
    md_user u;
    int rc;

    if (strcmp(bucket, "*") && md__check_bucket(bucket))
        return CM_EINVAL;
    if (!(wb = md__batch_new()))
        return CM_ENOMEM;
    pthread_mutex_lock(&users_lk); /* the user must not vanish meanwhile */
    if ((rc = md_user_get(db, user, &u)))
        goto out;
    if ((rc = key2(&k, K_GRANT, user, bucket)))
        goto out;
    if (allow) {
        if ((rc = cm_buf_put_u8(&v, MD__REC_VERSION)) || (rc = cm_buf_put_u32(&v, allow)))
            goto out;
        md__batch_put(wb, cm_buf_slice(&k), cm_buf_slice(&v));
    } else {
        if ((rc = md__exists(db, cm_buf_slice(&k))))
            goto out;
        md__batch_del(wb, cm_buf_slice(&k));
    }
    rc = md__batch_commit(db, wb, true);
out:
    pthread_mutex_unlock(&users_lk);
    cm_wipe(&u, sizeof u);
    md__batch_free(wb);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static int grant_decode(cm_slice v, uint32_t *allow)
{
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    int rc;
    if ((rc = cm_get_u8(&r, &ver)) || (rc = cm_get_u32(&r, allow)))
        return rc;
    return ver == MD__REC_VERSION ? 0 : CM_ECORRUPT;
}

int md_grant_get(md_db_t *db, const char *user, const char *bucket, uint32_t *out)
{
    cm_buf k = {0}, v = {0};
    int rc;

    *out = 0;
    if ((rc = key2(&k, K_GRANT, user, bucket)))
        goto out;
    rc = md__get(db, cm_buf_slice(&k), &v);
    if (rc == CM_ENOTFOUND) {
        rc = 0;
        goto out;
    }
    if (!rc)
        rc = grant_decode(cm_buf_slice(&v), out);
out:
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

static int grant_list_cb(void *arg, cm_slice k, cm_slice v)
{
    struct vec *vec = arg;
    const uint8_t *z = memchr(k.p + 1, 0, k.n - 1);
    size_t un = z ? (size_t)(z - k.p - 1) : 0, bn = z ? k.n - un - 2 : 0;
    uint32_t allow;
    if (!z || un == 0 || un > MD_USER_NAME_MAX || bn == 0 || bn > MD_BUCKET_MAX ||
        grant_decode(v, &allow)) {
        cm_log(CM_LOG_WARN, "metadata: skipping corrupt grant record");
        return 0;
    }
    md_grant *g = vec_push(vec);
    if (!g)
        return CM_ENOMEM;
    memcpy(g->user, k.p + 1, un);
    memcpy(g->bucket, z + 1, bn);
    g->allow = allow;
    return 0;
}

int md_grant_list(md_db_t *db, const char *user, md_grant **out, size_t *n)
{
    cm_buf k = {0};
    struct vec v = {NULL, 0, 0, sizeof(md_grant)};
    int rc = user ? key2(&k, K_GRANT, user, "") : cm_buf_put_u8(&k, K_GRANT);
    if (!rc)
        rc = scan(db, cm_buf_slice(&k), grant_list_cb, &v);
    cm_buf_free(&k);
    if (rc) {
        free(v.a);
        return rc;
    }
    *out = v.a;
    *n = v.n;
    return 0;
}

/* ------------------------------------------------------------------ limits
 * key: 'l' kind name; record: version u8 | rps u32 | burst u32 */
static int limit_key(cm_buf *b, enum md_limit_kind kind, const char *name)
{
    cm_buf_reset(b);
    int rc = cm_buf_put_u8(b, K_LIMIT);
    if (!rc)
        rc = cm_buf_put_u8(b, (uint8_t)kind);
    if (!rc)
        rc = cm_buf_append_str(b, name);
    return rc;
}

static bool limit_name_ok(enum md_limit_kind kind, const char *name)
{
    if (kind == MD_LIMIT_BUCKET)
        return md__check_bucket(name) == 0;
    return kind == MD_LIMIT_KEY && printable(name, 128);
}

int md_limit_set(md_db_t *db, const md_limit *l)
{
    struct md__batch *wb;
    cm_buf k = {0}, v = {0};
    int rc;

    if (!limit_name_ok(l->kind, l->name) || l->rps == 0 || l->burst == 0)
        return CM_EINVAL;
    if (!(wb = md__batch_new()))
        return CM_ENOMEM;
    if (!(rc = limit_key(&k, l->kind, l->name)) && !(rc = cm_buf_put_u8(&v, MD__REC_VERSION)) &&
        !(rc = cm_buf_put_u32(&v, l->rps)) && !(rc = cm_buf_put_u32(&v, l->burst))) {
        md__batch_put(wb, cm_buf_slice(&k), cm_buf_slice(&v));
        rc = md__batch_commit(db, wb, true);
    }
    md__batch_free(wb);
    cm_buf_free(&k);
    cm_buf_free(&v);
    return rc;
}

int md_limit_delete(md_db_t *db, enum md_limit_kind kind, const char *name)
{
    struct md__batch *wb;
    cm_buf k = {0};
    int rc;

    if (!limit_name_ok(kind, name))
        return CM_ENOTFOUND;
    if (!(wb = md__batch_new()))
        return CM_ENOMEM;
    if (!(rc = limit_key(&k, kind, name)) && !(rc = md__exists(db, cm_buf_slice(&k)))) {
        md__batch_del(wb, cm_buf_slice(&k));
        rc = md__batch_commit(db, wb, true);
    }
    md__batch_free(wb);
    cm_buf_free(&k);
    return rc;
}

static int limit_list_cb(void *arg, cm_slice k, cm_slice v)
{
    struct vec *vec = arg;
    cm_reader r = {v.p, v.n};
    uint8_t ver;
    uint32_t rps, burst;
    if (k.n < 3 || k.n - 2 > 128 || (k.p[1] != MD_LIMIT_KEY && k.p[1] != MD_LIMIT_BUCKET) ||
        cm_get_u8(&r, &ver) || ver != MD__REC_VERSION || cm_get_u32(&r, &rps) ||
        cm_get_u32(&r, &burst)) {
        cm_log(CM_LOG_WARN, "metadata: skipping corrupt limit record");
        return 0;
    }
    md_limit *l = vec_push(vec);
    if (!l)
        return CM_ENOMEM;
    l->kind = (enum md_limit_kind)k.p[1];
    memcpy(l->name, k.p + 2, k.n - 2);
    l->rps = rps;
    l->burst = burst;
    return 0;
}

int md_limit_list(md_db_t *db, md_limit **out, size_t *n)
{
    uint8_t p = K_LIMIT;
    struct vec v = {NULL, 0, 0, sizeof(md_limit)};
    int rc = scan(db, CM_SLICE(&p, 1), limit_list_cb, &v);
    if (rc) {
        free(v.a);
        return rc;
    }
    /* 'b' sorts before 'k': put keys first as documented. */
    md_limit *a = v.a;
    size_t nb = 0;
    while (nb < v.n && a[nb].kind == MD_LIMIT_BUCKET)
        nb++;
    if (nb && nb < v.n) {
        md_limit *t = malloc(v.n * sizeof *t);
        if (!t) {
            free(v.a);
            return CM_ENOMEM;
        }
        memcpy(t, a + nb, (v.n - nb) * sizeof *t);
        memcpy(t + (v.n - nb), a, nb * sizeof *t);
        free(v.a);
        v.a = t;
    }
    *out = v.a;
    *n = v.n;
    return 0;
}

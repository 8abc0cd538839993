/* gateway/events_glue.c - what ties the events part to the gateway: its
 * start and stop, the part of the commit hook that stages the events of an
 * object change, presigned GET URLs for function runs, and the per-run
 * session credentials whose writes carry a recursion depth. */
#include "events/evt.h"
#include "gateway/gw_int.h"
#include "gateway/sigv4.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>

/* The event a request's next commit causes (pool memory). */
struct gw_evt_state {
    uint32_t type;
    cm_slice key;
    evt_staged *staged;
};

/* Session keys: "CRNF" depth(1 hex) expiry(8 hex, unix s) random(8 hex);
 * the secret is HMAC-SHA256(root secret, "cairn-fn-session\n" key), hex,
 * first 40 chars, so the gateway checks one without storing anything. */
#define SESSION_PFX "CRNF"
#define SESSION_LEN 21
#define SESSION_TTL 3600

static void session_secret(gw_server *srv, const char *ak, char *sk /* >= 41 */)
{
    uint8_t mac[32];
    unsigned ml = 0;
    char msg[64], hex[65];
    int n = snprintf(msg, sizeof msg, "cairn-fn-session\n%s", ak);
    HMAC(EVP_sha256(), srv->secret_key, (int)strlen(srv->secret_key), (const uint8_t *)msg,
         (size_t)n, mac, &ml);
    cm_hex_encode(mac, 32, hex);
    memcpy(sk, hex, 40);
    sk[40] = 0;
    cm_wipe(mac, sizeof mac);
    cm_wipe(hex, sizeof hex);
}

static int make_session(void *arg, int depth, char *ak, char *sk)
{
    gw_server *srv = arg;
    uint8_t rnd[4];
    if (cm_random_bytes(rnd, sizeof rnd))
        return CM_EIO;
    snprintf(ak, 128, SESSION_PFX "%X%08llX%02X%02X%02X%02X", depth > 15 ? 15 : depth,
             (unsigned long long)(time(NULL) + SESSION_TTL) & 0xffffffffull, rnd[0], rnd[1],
             rnd[2], rnd[3]);
    session_secret(srv, ak, sk);
    return 0;
}

int gw_evt_session_secret(gw_server *srv, const char *ak, char *sk, int *depth)
{
    char tmp[9];
    if (strlen(ak) != SESSION_LEN || strncmp(ak, SESSION_PFX, 4))
        return CM_ENOTFOUND;
    for (int i = 4; i < SESSION_LEN; i++)
        if (!((ak[i] >= '0' && ak[i] <= '9') || (ak[i] >= 'A' && ak[i] <= 'F')))
            return CM_ENOTFOUND;
    memcpy(tmp, ak + 5, 8);
    tmp[8] = 0;
    if ((long long)strtoull(tmp, NULL, 16) < (long long)(time(NULL) & 0xffffffffll))
        return CM_ENOTFOUND; /* expired */
    *depth = ak[4] >= 'A' ? ak[4] - 'A' + 10 : ak[4] - '0';
    session_secret(srv, ak, sk);
    return 0;
}

/* host[:port] of an http(s) URL. */
static cm_slice url_host(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    return CM_SLICE(p, strcspn(p, "/?#"));
}

static int presign(void *arg, const char *bucket, cm_slice key, int expires, cm_buf *url)
{
    gw_server *srv = arg;
    const char *region = srv->cfg.region;
    char amz[20], date[9], hex[65];
    cm_buf path = {0}, query = {0}, cred = {0}, creq = {0}, sts = {0};
    uint8_t skey[32], sig[32];
    sigv4_auth a;
    int rc;

    memset(&a, 0, sizeof a);
    time_t now = time(NULL);
    cm_time_amz(now, amz);
    memcpy(date, amz, 8);
    date[8] = 0;
    cm_buf_printf(&path, "/%s/", bucket);
    cm_uri_encode(&path, key, false);
    cm_buf_printf(&cred, "%s/%s/%s/s3/aws4_request", srv->access_key, date, region);
    cm_buf_append_str(&query, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
    cm_uri_encode(&query, cm_buf_slice(&cred), true);
    cm_buf_printf(&query, "&X-Amz-Date=%s&X-Amz-Expires=%d&X-Amz-SignedHeaders=host", amz,
                  expires);
    /* The parser wants a signature parameter; the canonical request leaves
     * it out, so a placeholder gives the string to sign. */
    size_t qn = query.n;
    cm_buf_printf(&query, "&X-Amz-Signature=%064d", 0);
    sigv4_header h = {CM_SLICE_STR("host"), url_host(srv->evt_endpoint)};
    sigv4_req sr = {CM_SLICE_STR("GET"), cm_buf_slice(&path), cm_buf_slice(&query), &h, 1,
                    now, CM_SLICE_STR(region), CM_SLICE_STR("s3")};
    if ((rc = sigv4_parse(&sr, &a)) || (rc = sigv4_canonical_request(&sr, &a, &creq)) ||
        (rc = sigv4_string_to_sign(&a, cm_buf_slice(&creq), &sts)) ||
        (rc = sigv4_signing_key(CM_SLICE_STR(srv->secret_key), CM_SLICE_STR(date),
                                CM_SLICE_STR(region), CM_SLICE_STR("s3"), skey)) ||
        (rc = sigv4_sign(skey, cm_buf_slice(&sts), sig))) {
        cm_log(CM_LOG_ERROR, "events: cannot presign a GET of %s: %s", bucket,
               a.errmsg[0] ? a.errmsg : cm_strerror(rc));
        goto out;
    }
    cm_hex_encode(sig, 32, hex);
    query.n = qn;
    query.p[qn] = 0;
    cm_buf_printf(url, "%s%s?%s&X-Amz-Signature=%s", srv->evt_endpoint, cm_buf_str(&path),
                  cm_buf_str(&query), hex);
out:
    cm_wipe(skey, sizeof skey);
    sigv4_auth_free(&a);
    cm_buf_free(&path);
    cm_buf_free(&query);
    cm_buf_free(&cred);
    cm_buf_free(&creq);
    cm_buf_free(&sts);
    return rc;
}

static void queue_depth(void *arg, uint64_t n)
{
    (void)arg;
    gw_metrics_set_event_queue_depth(n);
}

int gw_evt_start(gw_server *srv)
{
    evt_config ec;
    const char *why = NULL;
    int rc;

    if (srv->cfg.public_url && srv->cfg.public_url[0]) {
        snprintf(srv->evt_endpoint, sizeof srv->evt_endpoint, "%s", srv->cfg.public_url);
        size_t n = strlen(srv->evt_endpoint);
        while (n && srv->evt_endpoint[n - 1] == '/')
            srv->evt_endpoint[--n] = 0;
    } else {
        const char *l = srv->cfg.listen;
        if (!strncmp(l, "0.0.0.0:", 8) || !strncmp(l, "[::]:", 5))
            snprintf(srv->evt_endpoint, sizeof srv->evt_endpoint, "http://127.0.0.1:%s",
                     strrchr(l, ':') + 1);
        else
            snprintf(srv->evt_endpoint, sizeof srv->evt_endpoint, "http://%s", l);
    }
    evt_config_defaults(&ec);
    ec.data_dir = srv->cfg.data_dir;
    ec.region = srv->cfg.region;
    ec.endpoint = srv->evt_endpoint;
    ec.presign = presign;
    ec.session = make_session;
    ec.cb_arg = srv;
    ec.depth_fn = queue_depth;
    if (srv->cfg.events && evt_config_parse(srv->cfg.events, &ec, &why)) {
        cm_log(CM_LOG_ERROR, "--events: %s", why);
        return CM_EINVAL;
    }
    if ((rc = evt_start(&ec, srv->md, &srv->evt)))
        cm_log(CM_LOG_ERROR, "cannot start events: %s", cm_strerror(rc));
    return rc;
}

void gw_evt_stop(gw_server *srv)
{
    evt_stop(srv->evt);
    srv->evt = NULL;
}

void gw_evt_bucket_deleted(gw_server *srv, const char *bucket)
{
    evt_notify none = {0};
    const char *why = NULL;
    if (srv->evt && evt_notify_put(srv->evt, bucket, &none, &why))
        cm_log(CM_LOG_WARN, "events: bucket %s: configuration not removed", bucket);
}

void gw_evt_begin(gw_req *r, uint32_t type, cm_slice key)
{
    struct gw_evt_state *st = cm_pool_alloc(r->pool, sizeof *st);
    if (st) {
        st->type = type;
        st->key = key;
    }
    r->evt = st;
}

int gw_evt_hook(gw_req *r, md_batch_t *b, const md_object *cur, const md_object *next)
{
    struct gw_evt_state *st = r->evt;
    if (!st || !r->srv || !r->srv->evt)
        return 0;
    evt_change c = {
        .bucket = r->bucket,
        .key = st->key,
        .type = st->type,
        .size = next ? next->size : 0,
        .etag = next ? next->etag : CM_SLICE_NULL,
        .time_ms = next ? next->mtime_ms : cm_now_ms(),
        .region = r->srv->cfg.region,
        .principal = r->user[0] ? r->user : r->access_key,
        .owner = r->srv->owner_id,
        .source_ip = r->peer ? r->peer : "",
        .request_id = r->id,
        .host_id = r->host_id,
        .depth = r->evt_depth,
    };
    if (st->staged) { /* a retried hook: drop what the first try staged */
        evt_staged_finish(r->srv->evt, st->staged, false);
        st->staged = NULL;
    }
    return evt_stage(r->srv->evt, b, &c, &st->staged);
}

void gw_evt_end(gw_req *r, int rc)
{
    struct gw_evt_state *st = r->evt;
    if (st && r->srv->evt)
        evt_staged_finish(r->srv->evt, st->staged, rc == 0);
    r->evt = NULL;
}

/* gateway/http.c - the only file that includes <microhttpd.h>: runs the
 * libmicrohttpd daemon (a thread per connection, so handlers may block on
 * disk), turns MHD callbacks into gw_req life-cycle steps (headers, body
 * pieces, end), and gw_req responses back into MHD responses. */
#include "gateway/gw_int.h"
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>

enum phase { PH_NEW, PH_BODY, PH_DONE };

/* A request's state. A kept-alive connection keeps one (made when it opens,
 * freed when it closes) and reuses it, with its pool's first block and the
 * response header buffer, for each of its requests in turn; the connection's
 * thread is the only user. */
struct conn_state {
    gw_req r;
    enum phase phase;
    bool queued;
    bool kept;                      /* the connection's: reset, not freed, after a request */
    bool busy;                      /* a request is using it */
    char peer[INET6_ADDRSTRLEN];    /* the client's address ("" until known) */
};

static uint64_t reqid_counter;

/* ------------------------------------------------------------ headers */
bool gw_hdr(const gw_req *r, const char *name, cm_slice *out)
{
    for (size_t i = 0; i < r->nhdrs; i++) {
        if (cm_slice_case_eq_str(r->hdrs[i].name, name)) {
            if (out)
                *out = r->hdrs[i].value;
            return true;
        }
    }
    return false;
}

const char *gw_hdr_str(gw_req *r, const char *name)
{
    cm_slice v;
    if (!gw_hdr(r, name, &v))
        return NULL;
    return cm_pool_strndup(r->pool, v.p, v.n);
}

void gw_set_hdr(gw_req *r, const char *name, const char *value)
{
    cm_buf_append(&r->resp_hdrs, name, strlen(name) + 1);
    cm_buf_append(&r->resp_hdrs, value, strlen(value) + 1);
}

void gw_set_hdr_slice(gw_req *r, const char *name, cm_slice value)
{
    cm_buf_append(&r->resp_hdrs, name, strlen(name) + 1);
    cm_buf_append(&r->resp_hdrs, value.p, value.n);
    cm_buf_append_byte(&r->resp_hdrs, 0);
}

struct hdr_collect {
    gw_req *r;
    size_t cap;
};

static enum MHD_Result collect_hdr(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct hdr_collect *hc = cls;
    gw_req *r = hc->r;
    (void)kind;
    if (r->nhdrs == hc->cap) {
        size_t ncap = hc->cap ? hc->cap * 2 : 32;
        gw_kv *a = cm_pool_alloc(r->pool, ncap * sizeof *a);
        if (!a)
            return MHD_NO;
        if (r->nhdrs)
            memcpy(a, r->hdrs, r->nhdrs * sizeof *a);
        r->hdrs = a;
        hc->cap = ncap;
    }
    gw_kv *kv = &r->hdrs[r->nhdrs++];
    kv->name = CM_SLICE_STR(key);
    kv->value = value ? CM_SLICE_STR(value) : CM_SLICE_NULL;
    kv->has_value = true;
    return MHD_YES;
}

/* ------------------------------------------------------------ responses */
static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    gw_req *r = cls;
    ssize_t n = r->stream(r->stream_ctx, pos, (uint8_t *)buf, max);
    if (n > 0)
        r->bytes_out += (uint64_t)n;
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free_cb(void *cls)
{
    (void)cls; /* the request owns the stream context; freed in request_done */
}

static enum MHD_Result queue_response(struct MHD_Connection *con, struct conn_state *cs)
{
    gw_req *r = &cs->r;
    struct MHD_Response *resp;
    if (r->err != S3E__NONE)
        gw_error_render(r);
    gw_account(r); /* usage record durable before the client sees an answer */
    if (r->stream && !r->err) {
        /* MHD allocates (and zeroes) a buffer of block size per response:
         * keep it no larger than the body. */
        size_t bs = r->stream_len < 256 * 1024 ? (size_t)r->stream_len : 256 * 1024;
        resp = MHD_create_response_from_callback(r->stream_len, bs < 4096 ? 4096 : bs, stream_cb,
                                                 r, stream_free_cb);
    } else {
        /* No copy: MHD reads the body only while sending it, and the
         * request (request_done frees resp_body and what resp_ref borrows
         * from) outlives that. */
        cm_slice body = r->resp_ref.p ? r->resp_ref : cm_buf_slice(&r->resp_body);
        resp = MHD_create_response_from_buffer(body.n, (void *)body.p, MHD_RESPMEM_PERSISTENT);
        if (!r->head_only)
            r->bytes_out = body.n;
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "x-amz-request-id", r->id);
    MHD_add_response_header(resp, "x-amz-id-2", r->host_id);
    MHD_add_response_header(resp, "Server", "cairn");
    if (r->err != S3E__NONE)
        MHD_add_response_header(resp, "x-amz-error-code", gw_s3err_code(r->err));
    const char *ct = r->content_type;
    if (!ct && (r->resp_ref.p ? r->resp_ref.n : r->resp_body.n) && !r->stream)
        ct = "application/xml";
    if (ct)
        MHD_add_response_header(resp, "Content-Type", ct);
    if (r->err == S3E__NONE) {
        const char *p = (const char *)r->resp_hdrs.p, *end = p + r->resp_hdrs.n;
        while (p && p < end) {
            const char *v = p + strlen(p) + 1;
            MHD_add_response_header(resp, p, v);
            p = v + strlen(v) + 1;
        }
    }
    cm_buf cors = {0}; /* Access-Control-* pairs: on errors too (s3_cors.c) */
    gw_cors_headers(r, &cors);
    for (const char *p = (const char *)cors.p, *end = p + cors.n; p && p < end;) {
        const char *v = p + strlen(p) + 1;
        MHD_add_response_header(resp, p, v);
        p = v + strlen(v) + 1;
    }
    cm_buf_free(&cors);
    int status = r->status ? r->status : 200;
    enum MHD_Result ret = MHD_queue_response(con, (unsigned)status, resp);
    MHD_destroy_response(resp);
    cs->queued = true;
    return ret;
}

/* ------------------------------------------------------------ life cycle */
static void conn_state_free(struct conn_state *cs)
{
    cm_buf_free(&cs->r.resp_hdrs);
    cm_pool_free(cs->r.pool);
    free(cs);
}

static void notify_conn(void *cls, struct MHD_Connection *con, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)con;
    struct conn_state *cs = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        /* Without it (out of memory) each request allocates its own. */
        if ((cs = calloc(1, sizeof *cs)) && !(cs->r.pool = cm_pool_new())) {
            free(cs);
            cs = NULL;
        }
        if (cs)
            cs->kept = true;
        *socket_context = cs;
    } else if (cs) {
        if (cs->busy)
            cs->kept = false; /* request_done frees it */
        else
            conn_state_free(cs);
        *socket_context = NULL;
    }
}

/* "%016llX" of v into out[17]. */
static void hex16(char *out, uint64_t v)
{
    static const char digits[] = "0123456789ABCDEF";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
    out[16] = 0;
}

static void *uri_log_cb(void *cls, const char *uri, struct MHD_Connection *con)
{
    gw_server *srv = cls;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_state *cs = ci ? ci->socket_context : NULL;
    if (!cs || cs->busy) {
        if (!(cs = calloc(1, sizeof *cs)))
            return NULL;
        cs->r.pool = cm_pool_new();
    }
    cs->busy = true;
    gw_req *r = &cs->r;
    r->srv = srv;
    r->start_ms = cm_now_ms();
    uint64_t n = __atomic_add_fetch(&reqid_counter, 1, __ATOMIC_RELAXED);
    hex16(r->id, ((uint64_t)r->start_ms << 20) ^ n);
    memcpy(r->host_id, "cairn-", 6);
    memcpy(r->host_id + 6, r->id, 17);
    size_t ul = strlen(uri);
    char *u = cm_pool_strndup(r->pool, uri, ul);
    const char *q = memchr(u, '?', ul);
    r->raw_path = CM_SLICE(u, q ? (size_t)(q - u) : ul);
    r->raw_query = q ? CM_SLICE(q + 1, ul - (size_t)(q - u) - 1) : CM_SLICE_NULL;
    return cs;
}

static void request_done(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)con;
    struct conn_state *cs = *con_cls;
    if (!cs)
        return;
    gw_req *r = &cs->r;
    r->completed = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    gw_observe(r);
    if (cs->phase == PH_BODY && gw_ops[r->op].abort)
        gw_ops[r->op].abort(r); /* the client went away mid-body: undo */
    if (r->stream_free && r->stream_ctx)
        r->stream_free(r->stream_ctx);
    gw_auth_free(r);
    cm_buf_free(&r->body);
    cm_buf_free(&r->err_extra);
    cm_buf_free(&r->resp_body);
    *con_cls = NULL;
    if (!cs->kept) {
        conn_state_free(cs);
        return;
    }
    /* Ready for the connection's next request: as new from calloc, but
     * with the pool's first block, the header buffer and the peer kept. */
    cm_pool *pool = r->pool;
    cm_buf hdrs = r->resp_hdrs;
    cm_pool_reset(pool);
    if (hdrs.cap > 4096)
        cm_buf_free(&hdrs);
    else
        cm_buf_reset(&hdrs);
    memset(&cs->r, 0, sizeof cs->r);
    cs->r.pool = pool;
    cs->r.resp_hdrs = hdrs;
    cs->phase = PH_NEW;
    cs->queued = false;
    cs->busy = false;
}

static int body_sink(gw_req *r, const uint8_t *p, size_t n)
{
    const gw_op_def *op = &gw_ops[r->op];
    r->body_n += n;
    if (op->body == GW_BODY_XML) {
        if (r->body.n + n > GW_XML_MAX) {
            gw_error(r, S3E_MalformedXML);
            return -1;
        }
        return cm_buf_append(&r->body, p, n);
    }
    if (op->body == GW_BODY_STREAM && op->data)
        return op->data(r, p, n);
    return 0;
}

static void begin_request(struct MHD_Connection *con, struct conn_state *cs, const char *method)
{
    gw_req *r = &cs->r;
    struct hdr_collect hc = {r, 0};
    MHD_get_connection_values(con, MHD_HEADER_KIND, collect_hdr, &hc);
    size_t ml = strlen(method);
    r->method = CM_SLICE(cm_pool_strndup(r->pool, method, ml), ml);
    r->head_only = strcmp(method, "HEAD") == 0;
    if (!cs->peer[0]) { /* once per connection */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        char *addr = cs->peer;
        strcpy(addr, "-");
        if (ci && ci->client_addr) {
            if (ci->client_addr->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr,
                          addr, sizeof cs->peer);
            else if (ci->client_addr->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr,
                          addr, sizeof cs->peer);
        }
    }
    r->peer = cs->peer; /* lives as long as the connection, longer than r */
    cm_slice host = CM_SLICE_NULL;
    gw_hdr(r, "Host", &host);
    if (r->srv->cfg.trust_proxy)
        gw_hdr(r, "X-Forwarded-Host", &host);
    r->host = host;
    cm_slice cl;
    if (gw_hdr(r, "Content-Length", &cl)) {
        char tmp[32];
        size_t n = cl.n < sizeof tmp - 1 ? cl.n : sizeof tmp - 1;
        memcpy(tmp, cl.p, n);
        tmp[n] = 0;
        char *end;
        r->content_length = strtoull(tmp, &end, 10);
        r->has_length = *end == 0 && n > 0;
    }
    if (gw_route(r))
        return;
    if (r->op != GW_OP_AdminPublic && r->op != GW_OP_CorsPreflight &&
        (gw_auth_begin(r) || gw_authz(r) || gw_ratelimit_check(r)))
        return;
    const gw_op_def *op = &gw_ops[r->op];
    if (op->begin)
        op->begin(r);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *con, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    struct conn_state *cs = *con_cls;
    if (!cs)
        return MHD_NO;
    gw_req *r = &cs->r;
    if (cs->phase == PH_NEW) {
        begin_request(con, cs, method);
        cs->phase = PH_BODY;
        return MHD_YES;
    }
    if (cs->phase == PH_BODY && *upload_data_size) {
        if (r->err == S3E__NONE)
            gw_auth_body(r, (const uint8_t *)upload_data, *upload_data_size, body_sink);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (cs->queued)
        return MHD_YES;
    /* End of the request. */
    const gw_op_def *op = &gw_ops[r->op];
    if (r->err == S3E__NONE)
        gw_auth_end(r);
    if (r->err == S3E__NONE) {
        cs->phase = PH_DONE;
        op->end(r);
    } else {
        if (op->abort)
            op->abort(r);
        cs->phase = PH_DONE;
    }
    return queue_response(con, cs);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    cm_log(CM_LOG_DEBUG, "http: %s", line);
}

int gw_http_start(gw_server *srv, const char *listen_addr)
{
    char host[128];
    const char *colon = strrchr(listen_addr, ':');
    if (!colon || (size_t)(colon - listen_addr) >= sizeof host) {
        cm_log(CM_LOG_ERROR, "bad --listen address '%s' (want ADDR:PORT)", listen_addr);
        return CM_EINVAL;
    }
    memcpy(host, listen_addr, (size_t)(colon - listen_addr));
    host[colon - listen_addr] = 0;
    int port = atoi(colon + 1);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1) {
        cm_log(CM_LOG_ERROR, "bad --listen address '%s'", listen_addr);
        return CM_EINVAL;
    }
    /* A connection's memory: request headers, the read buffer bodies are
     * received through, response headers. libmicrohttpd zeroes all of it
     * between two requests of a kept-alive connection, which at 64 KiB
     * cost about a tenth of a GET 4 KiB; 32 KiB still holds the largest
     * S3 headers (1024-byte keys percent-encoded in the path and in
     * x-amz-copy-source, 2 KiB of metadata) and did not slow 16 MiB PUTs. */
    enum { CONN_MEMORY = 32 * 1024 };
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
            MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, access_cb, srv, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_URI_LOG_CALLBACK, uri_log_cb, srv, MHD_OPTION_NOTIFY_COMPLETED,
        request_done, srv, MHD_OPTION_NOTIFY_CONNECTION, notify_conn, srv, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!d) {
        cm_log(CM_LOG_ERROR, "cannot listen on %s", listen_addr);
        return CM_EIO;
    }
    srv->http = d;
    return 0;
}

void gw_http_stop(gw_server *srv)
{
    if (srv->http)
        MHD_stop_daemon(srv->http);
    srv->http = NULL;
}

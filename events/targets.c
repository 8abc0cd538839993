/* events/targets.c - delivery to network targets: HTTP webhooks and
 * CloudEvents binary mode (pipelined HTTP/1.1 on kept-alive connections;
 * libcurl for https), Redis streams (XADD over RESP on a
 * plain TCP socket), NATS (PUB then PING/PONG on the text protocol) and
 * AMQP 0-9-1 exchanges (librabbitmq, with publisher confirms; mandatory,
 * so an event no queue gets is a failure). Each call returns 0 only once
 * the target acknowledged the event. */
#include "events/evt_int.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* A kept-alive connection failed before the target answered: worth one
 * retry on a new connection (internal to this file). */
#define TGT_STALE (-1)

/* ------------------------------------------------------------------- URLs */
/* Splits scheme://[user:pass@]host:port/path into parts (path without the
 * leading '/', up to '?'). */
typedef struct tgt_url {
    char host[256];
    char port[8];
    char user[128];
    char pass[128];
    char path[512];
} tgt_url;

static int url_split(const char *url, tgt_url *u)
{
    memset(u, 0, sizeof *u);
    const char *p = strstr(url, "://");
    if (!p)
        return CM_EINVAL;
    p += 3;
    const char *slash = strchr(p, '/');
    if (!slash)
        return CM_EINVAL;
    const char *at = memchr(p, '@', (size_t)(slash - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return CM_EINVAL;
        snprintf(u->user, sizeof u->user, "%.*s", (int)(colon - p), p);
        snprintf(u->pass, sizeof u->pass, "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    const char *colon = memchr(p, ':', (size_t)(slash - p));
    if (!colon || colon == p || slash - colon - 1 <= 0 || slash - colon - 1 >= 8)
        return CM_EINVAL;
    snprintf(u->host, sizeof u->host, "%.*s", (int)(colon - p), p);
    snprintf(u->port, sizeof u->port, "%.*s", (int)(slash - colon - 1), colon + 1);
    size_t n = strcspn(slash + 1, "?");
    if (n == 0 || n >= sizeof u->path)
        return CM_EINVAL;
    memcpy(u->path, slash + 1, n);
    u->path[n] = 0;
    return 0;
}

/* ---------------------------------------------------------------- sockets */
static int tcp_connect(const tgt_url *u, int timeout_ms, cm_buf *err)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g) {
        cm_buf_printf(err, "cannot resolve %s: %s", u->host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd pf = {fd, POLLOUT, 0};
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (poll(&pf, 1, timeout_ms) == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            errno = soerr ? soerr : ETIMEDOUT;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        cm_buf_printf(err, "cannot connect to %s:%s: %s", u->host, u->port, strerror(errno));
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const uint8_t *s = p;
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one line (without CRLF) into line; -1 on EOF, timeout or overlong. */
static int read_line(int fd, cm_buf *in, cm_buf *line)
{
    for (;;) {
        uint8_t *nl = in->n ? memchr(in->p, '\n', in->n) : NULL;
        if (nl) {
            size_t len = (size_t)(nl - in->p);
            cm_buf_reset(line);
            cm_buf_append(line, in->p, len && in->p[len - 1] == '\r' ? len - 1 : len);
            memmove(in->p, nl + 1, in->n - len - 1);
            in->n -= len + 1;
            return 0;
        }
        if (in->n > 1 << 20)
            return -1;
        uint8_t buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        cm_buf_append(in, buf, (size_t)r);
    }
}

/* At most this many request bytes are written before answers are read
 * (HTTP, Redis, NATS): the target's answers (small) then always fit its
 * socket buffer, so neither side can block on a full one while the other
 * does. */
#define PIPE_BYTES (256 * 1024)

/* ---------------------------------------------- kept-alive connections */
/* The worker's kept-alive connection for url, or NULL. */
static evt__conn *conn_find(evt__worker *w, const char *url)
{
    for (int i = 0; i < EVT__CONNS; i++)
        if (w->conns[i].url[0] && w->conns[i].fd >= 0 && !strcmp(w->conns[i].url, url))
            return &w->conns[i];
    return NULL;
}

static void conn_close(evt__conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->url[0] = 0;
    cm_buf_reset(&c->in);
}

/* A slot for a new connection to url (closing the oldest if all are used). */
static evt__conn *conn_slot(evt__worker *w, const char *url)
{
    evt__conn *c = NULL;
    for (int i = 0; i < EVT__CONNS && !c; i++)
        if (!w->conns[i].url[0])
            c = &w->conns[i];
    if (!c)
        c = &w->conns[w->next_conn++ % EVT__CONNS];
    conn_close(c);
    snprintf(c->url, sizeof c->url, "%s", url);
    return c;
}

/* Where a pipelined delivery goes: the target, and its URL split as its
 * protocol needs (u for Redis and NATS, h for HTTP). */
struct pipe_dest {
    const evt__tgt_snap *t;
    const tgt_url *u;
    const struct http_url *h;
};

/* ----------------------------------------------------------------- redis */
static void resp_bulk(cm_buf *b, cm_slice s)
{
    cm_buf_printf(b, "$%zu\r\n", s.n);
    cm_buf_append_slice(b, s);
    cm_buf_append_str(b, "\r\n");
}

static int redis_open(evt__conn *c, const struct pipe_dest *d, int timeout_ms, cm_buf *err)
{
    return (c->fd = tcp_connect(d->u, timeout_ms, err)) < 0 ? CM_EIO : 0;
}

/* XADD stream * event JSON bucket B key K */
static void redis_request(cm_buf *req, const struct pipe_dest *d, const evt__rec *r,
                          cm_slice msg)
{
    cm_buf_append_str(req, "*9\r\n");
    resp_bulk(req, CM_SLICE_STR("XADD"));
    resp_bulk(req, CM_SLICE_STR(d->u->path));
    resp_bulk(req, CM_SLICE_STR("*"));
    resp_bulk(req, CM_SLICE_STR("event"));
    resp_bulk(req, msg);
    resp_bulk(req, CM_SLICE_STR("bucket"));
    resp_bulk(req, CM_SLICE_STR(r->bucket));
    resp_bulk(req, CM_SLICE_STR("key"));
    resp_bulk(req, cm_buf_slice(&r->key));
}

/* One reply per XADD, in order: the new entry's id (a bulk string: stored)
 * or an error (OOM, WRONGTYPE, NOAUTH, LOADING, ...: the target is in
 * trouble, as for every event after it). */
static size_t redis_answers(evt__conn *c, const struct pipe_dest *d, size_t k, int *rc,
                            bool *broken, cm_buf *err)
{
    const tgt_url *u = d->u;
    cm_buf line = {0};
    size_t got = 0;
    while (got < k) {
        if (read_line(c->fd, &c->in, &line)) {
            *broken = true;
            break;
        }
        if (line.n && line.p[0] == '$') {
            rc[got++] = 0;
            /* The id follows on its own line; without it the connection is
             * out of step, but the event is stored. */
            if (read_line(c->fd, &c->in, &line)) {
                *broken = true;
                break;
            }
            continue;
        }
        rc[got++] = CM_EIO;
        if (!err->n)
            cm_buf_printf(err, "redis %s:%s: %.*s", u->host, u->port,
                          (int)(line.n > 200 ? 200 : line.n), (const char *)line.p);
        if (!line.n || line.p[0] != '-') { /* not RESP: out of step */
            *broken = true;
            break;
        }
    }
    cm_buf_free(&line);
    return got;
}

/* ------------------------------------------------------------------ nats */
/* Opens a NATS connection on c: INFO greeting, then CONNECT. */
static int nats_open(evt__conn *c, const struct pipe_dest *d, int timeout_ms, cm_buf *err)
{
    const tgt_url *u = d->u;
    cm_buf req = {0}, line = {0};
    int rc = CM_EIO;
    if ((c->fd = tcp_connect(u, timeout_ms, err)) < 0)
        return CM_EIO;
    if (read_line(c->fd, &c->in, &line) ||
        !cm_slice_has_prefix(cm_buf_slice(&line), CM_SLICE_STR("INFO"))) {
        cm_buf_printf(err, "nats %s:%s: no INFO greeting", u->host, u->port);
        goto out;
    }
    cm_buf_append_str(&req, "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"cairn\","
                            "\"lang\":\"c\",\"version\":\"0.1.0\"");
    if (u->user[0]) {
        cm_buf_printf(&req, ",\"user\":\"%s\",\"pass\":\"%s\"", u->user, u->pass);
    }
    cm_buf_append_str(&req, "}\r\n");
    if (send_all(c->fd, req.p, req.n)) {
        cm_buf_printf(err, "nats %s:%s: send failed", u->host, u->port);
        goto out;
    }
    rc = 0;
out:
    cm_buf_free(&req);
    cm_buf_free(&line);
    return rc;
}

static void nats_request(cm_buf *req, const struct pipe_dest *d, const evt__rec *r,
                         cm_slice msg)
{
    (void)r;
    cm_buf_printf(req, "PUB %s %zu\r\n", d->u->path, msg.n);
    cm_buf_append_slice(req, msg);
    cm_buf_append_str(req, "\r\n");
}

/* The PUBs are followed by one PING; the server handles commands in order,
 * so its PONG acknowledges every PUB before it. Answers the server's own
 * PINGs meanwhile. An -ERR (after which the server closes the connection)
 * fails them all. */
static size_t nats_answers(evt__conn *c, const struct pipe_dest *d, size_t k, int *rc,
                           bool *broken, cm_buf *err)
{
    const tgt_url *u = d->u;
    cm_buf line = {0};
    size_t got = 0;
    for (;;) {
        if (read_line(c->fd, &c->in, &line)) {
            *broken = true;
            break;
        }
        if (cm_slice_eq_str(cm_buf_slice(&line), "PONG")) {
            for (; got < k; got++)
                rc[got] = 0;
            break;
        }
        if (cm_slice_eq_str(cm_buf_slice(&line), "PING")) {
            if (send_all(c->fd, "PONG\r\n", 6)) {
                *broken = true;
                break;
            }
            continue;
        }
        if (cm_slice_has_prefix(cm_buf_slice(&line), CM_SLICE_STR("-ERR"))) {
            if (!err->n)
                cm_buf_printf(err, "nats %s:%s: %.*s", u->host, u->port,
                              (int)(line.n > 200 ? 200 : line.n), (const char *)line.p);
            for (; got < k; got++)
                rc[got] = CM_EIO;
            *broken = true;
            break;
        }
        /* INFO updates and +OK: nothing to do */
    }
    cm_buf_free(&line);
    return got;
}


/* ------------------------------------------------------------------ amqp */
static bool amqp_ok(amqp_rpc_reply_t x, const char *what, cm_buf *err)
{
    if (x.reply_type == AMQP_RESPONSE_NORMAL)
        return true;
    if (x.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        cm_buf_printf(err, "amqp %s: %s", what, amqp_error_string2(x.library_error));
    else
        cm_buf_printf(err, "amqp %s: refused by the server", what);
    return false;
}

/* Opens a connection with channel 1 in confirm mode; NULL on failure. */
static amqp_connection_state_t amqp_open(const tgt_url *u, const struct timeval *tv,
                                         cm_buf *err)
{
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn)
        return NULL;
    amqp_socket_t *s = amqp_tcp_socket_new(conn);
    if (!s || amqp_socket_open_noblock(s, u->host, atoi(u->port), tv) != AMQP_STATUS_OK) {
        cm_buf_printf(err, "amqp: cannot connect to %s:%s", u->host, u->port);
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_set_rpc_timeout(conn, tv);
    if (!amqp_ok(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                            u->user[0] ? u->user : "guest", u->user[0] ? u->pass : "guest"),
                 "login", err))
        goto fail;
    amqp_channel_open(conn, 1);
    if (!amqp_ok(amqp_get_rpc_reply(conn), "channel", err))
        goto fail;
    amqp_confirm_select(conn, 1);
    if (!amqp_ok(amqp_get_rpc_reply(conn), "confirm.select", err))
        goto fail;
    return conn;
fail:
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return NULL;
}

static void amqp_drop(evt__worker *w)
{
    if (w->amqp) {
        amqp_connection_close(w->amqp, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(w->amqp);
    }
    w->amqp = NULL;
    w->amqp_url[0] = 0;
}

/* Reads past the content a basic.return carries (a header frame, then body
 * frames up to its body size) so that the next frame is the confirm.
 * amqp_read_message would do it, but it waits without a time limit and
 * copies the body, which is our own event. 0, or -1 when the connection is
 * not usable any more. */
static int amqp_skip_content(amqp_connection_state_t conn, const struct timeval *tv)
{
    amqp_frame_t f;
    if (amqp_simple_wait_frame_noblock(conn, &f, tv) != AMQP_STATUS_OK ||
        f.channel != 1 || f.frame_type != AMQP_FRAME_HEADER)
        return -1;
    uint64_t left = f.payload.properties.body_size;
    while (left > 0) {
        if (amqp_simple_wait_frame_noblock(conn, &f, tv) != AMQP_STATUS_OK ||
            f.channel != 1 || f.frame_type != AMQP_FRAME_BODY ||
            f.payload.body_fragment.len > left)
            return -1;
        left -= f.payload.body_fragment.len;
    }
    return 0;
}

/* Publishes on conn and waits for the broker's confirm. 0 on ack; TGT_STALE
 * when the connection failed before any answer; CM_EIO otherwise. *keep
 * tells whether the connection is still usable afterwards.
 *
 * Mandatory: a broker confirms a message it routed to no queue just as one
 * it queued, so without it an exchange with nothing bound (or no binding
 * for this bucket's routing key) drops every event while cairn counts them
 * delivered. With it, RabbitMQ sends basic.return (with the message) before
 * the basic.ack, and the event fails like a target that is down: retried
 * with backoff, then dead-lettered. */
static int amqp_publish_on(amqp_connection_state_t conn, const tgt_url *u, const evt__rec *r,
                           cm_slice msg, const struct timeval *tv, cm_buf *err, bool *keep)
{
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = 2; /* persistent */
    amqp_bytes_t body = {msg.n, (void *)msg.p};
    bool returned = false; /* basic.return came: answered, unroutable (err says so) */
    *keep = false;
    /* The frames of the previous publish live in the connection's pools
     * until released: on a kept-alive connection they would pile up. */
    amqp_maybe_release_buffers(conn);
    if (amqp_basic_publish(conn, 1, amqp_cstring_bytes(u->path), amqp_cstring_bytes(r->bucket),
                           1, 0, &props, body) != AMQP_STATUS_OK) {
        cm_buf_printf(err, "amqp: publish to %s failed", u->path);
        return TGT_STALE;
    }
    for (;;) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame_noblock(conn, &f, tv) != AMQP_STATUS_OK) {
            if (returned) /* it was answered: a new connection would not help */
                return CM_EIO;
            cm_buf_printf(err, "amqp: no confirm from %s:%s", u->host, u->port);
            return TGT_STALE;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            *keep = true;
            /* Returned, then confirmed: the broker is fine, this event (its
             * bucket's routing key) has nowhere to go. */
            return returned ? EVT__REJECTED : 0;
        }
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            if (!returned)
                cm_buf_printf(err, "amqp: %s refused the event", u->path);
            *keep = true;
            return CM_EIO;
        }
        if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            amqp_basic_return_t *rt = f.payload.method.decoded;
            if (rt->reply_code == AMQP_NO_ROUTE)
                cm_buf_printf(err, "amqp: unroutable: no queue bound to exchange \"%.*s\" "
                                   "for routing key \"%.*s\"",
                              (int)rt->exchange.len, (const char *)rt->exchange.bytes,
                              (int)rt->routing_key.len, (const char *)rt->routing_key.bytes);
            else
                cm_buf_printf(err, "amqp: returned by exchange \"%.*s\": %u %.*s",
                              (int)rt->exchange.len, (const char *)rt->exchange.bytes,
                              (unsigned)rt->reply_code, (int)rt->reply_text.len,
                              (const char *)rt->reply_text.bytes);
            returned = true;
            if (amqp_skip_content(conn, tv))
                return CM_EIO;
            continue; /* the confirm follows */
        }
        if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *c = f.payload.method.decoded;
            if (!returned)
                cm_buf_printf(err, "amqp: channel closed: %.*s", (int)c->reply_text.len,
                              (const char *)c->reply_text.bytes);
            amqp_channel_close_ok_t ok = {0};
            amqp_send_method(conn, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            return CM_EIO;
        }
        if (f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            if (returned) /* answered first: not a stale connection */
                return CM_EIO;
            cm_buf_printf(err, "amqp: %s:%s closed the connection", u->host, u->port);
            return TGT_STALE;
        }
    }
}

/* Publishes with publisher confirms on the worker's kept-alive connection;
 * a connection that failed before any answer is reopened once. */
static int amqp_pub(evt__worker *w, const char *url, const tgt_url *u, const evt__rec *r,
                    cm_slice msg, cm_buf *err)
{
    struct timeval tv = {w->e->cfg.delivery_timeout_ms / 1000,
                         (w->e->cfg.delivery_timeout_ms % 1000) * 1000};
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = false, keep = false;
        if (w->amqp && strcmp(w->amqp_url, url))
            amqp_drop(w);
        if (!w->amqp) {
            if (!(w->amqp = amqp_open(u, &tv, err)))
                return CM_EIO;
            snprintf(w->amqp_url, sizeof w->amqp_url, "%s", url);
            fresh = true;
        }
        int rc = amqp_publish_on(w->amqp, u, r, msg, &tv, err, &keep);
        if (!keep)
            amqp_drop(w);
        if (rc != TGT_STALE)
            return rc;
        if (fresh)
            return CM_EIO;
        cm_buf_reset(err); /* a stale connection: try a new one */
    }
    return CM_EIO;
}

/* ------------------------------------------------------------------- http */
/* Plain http:// webhooks and CloudEvents sinks go over the worker's
 * kept-alive connection with HTTP/1.1 pipelining: the requests of a batch
 * are written at once and the answers read in order, so a burst of events
 * costs the target and cairn one wake-up each instead of one per event.
 * Each event is still its own POST (one S3 event message, one CloudEvent).
 * https:// goes through libcurl, one event at a time. */

/* host[:port] and request target of an http:// URL; CM_EINVAL otherwise. */
typedef struct http_url {
    tgt_url conn;      /* host and port to connect to */
    char hostport[300]; /* the Host header */
    char target[1024];  /* path and query ("/" when the URL has none) */
    char auth[400];     /* "Basic ..." for user:pass@, else "" */
} http_url;

static int http_url_split(const char *url, http_url *h)
{
    memset(h, 0, sizeof *h);
    if (strncmp(url, "http://", 7))
        return CM_EINVAL;
    const char *p = url + 7;
    size_t n = strcspn(p, "/?#");
    const char *rest = p + n;
    const char *at = memchr(p, '@', n);
    if (at) {
        char ui[256];
        size_t un = (size_t)(at - p);
        if (un >= sizeof ui || !memchr(p, ':', un))
            return CM_EINVAL;
        memcpy(ui, p, un);
        ui[un] = 0;
        char b64[4 * ((sizeof ui + 2) / 3) + 1];
        cm_base64_encode(ui, un, b64);
        snprintf(h->auth, sizeof h->auth, "Basic %s", b64);
        n -= un + 1;
        p = at + 1;
    }
    if (n == 0 || n >= sizeof h->hostport)
        return CM_EINVAL;
    memcpy(h->hostport, p, n);
    h->hostport[n] = 0;
    const char *hend = p + n, *colon = NULL;
    if (p[0] == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', n);
        if (!rb)
            return CM_EINVAL;
        snprintf(h->conn.host, sizeof h->conn.host, "%.*s", (int)(rb - p - 1), p + 1);
        colon = rb + 1 < hend && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', n);
        snprintf(h->conn.host, sizeof h->conn.host, "%.*s",
                 (int)((colon ? colon : hend) - p), p);
    }
    if (colon) {
        size_t pn = (size_t)(hend - colon - 1);
        if (pn == 0 || pn >= sizeof h->conn.port)
            return CM_EINVAL;
        snprintf(h->conn.port, sizeof h->conn.port, "%.*s", (int)pn, colon + 1);
    } else {
        snprintf(h->conn.port, sizeof h->conn.port, "80");
    }
    size_t tn = strcspn(rest, "#");
    if (tn + 2 > sizeof h->target || memchr(rest, ' ', tn) || !h->conn.host[0])
        return CM_EINVAL;
    snprintf(h->target, sizeof h->target, "%s%.*s", rest[0] == '/' ? "" : "/", (int)tn, rest);
    return 0;
}

/* Consumes n bytes of c's input (buffered, then from the socket). */
static int http_skip(evt__conn *c, uint64_t n)
{
    while (n) {
        if (c->in.n) {
            size_t k = c->in.n < n ? c->in.n : (size_t)n;
            memmove(c->in.p, c->in.p + k, c->in.n - k);
            c->in.n -= k;
            n -= k;
            continue;
        }
        uint8_t buf[4096];
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        cm_buf_append(&c->in, buf, (size_t)r);
    }
    return 0;
}

/* Reads one final response from c: *status, the body consumed. *closing is
 * set when the server ends the connection after it (Connection: close,
 * HTTP/1.0 without keep-alive, or a body that runs to the end). -1 when
 * no whole response came (EOF, timeout, garbage). */
static int http_read_response(evt__conn *c, int *status, bool *closing)
{
    cm_buf line = {0};
    int rc = -1;
    for (;;) {
        int major = 0, minor = 0, st = 0;
        if (read_line(c->fd, &c->in, &line) ||
            sscanf(cm_buf_str(&line), "HTTP/%d.%d %3d", &major, &minor, &st) != 3 || st < 100)
            goto out;
        bool close_it = major == 1 && minor == 0, chunked = false, has_len = false;
        uint64_t len = 0;
        for (;;) {
            if (read_line(c->fd, &c->in, &line))
                goto out;
            if (!line.n)
                break;
            const char *h = cm_buf_str(&line), *v = strchr(h, ':');
            if (!v)
                continue;
            size_t hn = (size_t)(v - h);
            for (v++; *v == ' ' || *v == '\t'; v++)
                ;
            if (hn == 14 && !strncasecmp(h, "Content-Length", 14)) {
                char *end;
                len = strtoull(v, &end, 10);
                has_len = end != v;
            } else if (hn == 17 && !strncasecmp(h, "Transfer-Encoding", 17)) {
                chunked = strcasestr(v, "chunked") != NULL;
            } else if (hn == 10 && !strncasecmp(h, "Connection", 10)) {
                if (strcasestr(v, "close"))
                    close_it = true;
                else if (strcasestr(v, "keep-alive"))
                    close_it = false;
            }
        }
        if (st < 200) /* 1xx: informational, the final answer follows */
            continue;
        if (st == 204 || st == 304) {
            /* no body */
        } else if (chunked) {
            for (;;) {
                if (read_line(c->fd, &c->in, &line))
                    goto out;
                char *end;
                uint64_t cn = strtoull(cm_buf_str(&line), &end, 16);
                if (end == cm_buf_str(&line))
                    goto out;
                if (cn == 0)
                    break;
                if (http_skip(c, cn + 2))
                    goto out;
            }
            do { /* trailers, up to the empty line */
                if (read_line(c->fd, &c->in, &line))
                    goto out;
            } while (line.n);
        } else if (has_len) {
            if (http_skip(c, len))
                goto out;
        } else { /* the body runs to the end of the connection */
            uint8_t buf[4096];
            ssize_t r;
            while ((r = recv(c->fd, buf, sizeof buf, 0)) > 0 || (r < 0 && errno == EINTR))
                ;
            if (r < 0)
                goto out;
            close_it = true;
        }
        *status = st;
        *closing = close_it;
        rc = 0;
        break;
    }
out:
    cm_buf_free(&line);
    return rc;
}

/* The CloudEvents headers of r, one "name: value" per LF-ended line; the
 * id is unique per event and destination kind. */
static void ce_headers(const evt__rec *r, cm_buf *out)
{
    char id[40];
    snprintf(id, sizeof id, "%016llX-%s", (unsigned long long)r->evseq,
             r->dest_kind == EVT_DEST_FUNCTION ? "f" : "t");
    evt_cloudevents_headers(r->bucket, cm_buf_slice(&r->key), r->type, r->time_ms, id, out);
}

/* Appends the POST of event r (message msg) to req. */
static void http_request(cm_buf *req, const struct pipe_dest *d, const evt__rec *r, cm_slice msg)
{
    const evt__tgt_snap *t = d->t;
    const http_url *h = d->h;
    cm_buf_printf(req, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cairn-events/0.1\r\n",
                  h->target, h->hostport);
    if (h->auth[0])
        cm_buf_printf(req, "Authorization: %s\r\n", h->auth);
    if (!strcmp(t->kind, "cloudevents")) {
        cm_buf ce = {0};
        ce_headers(r, &ce);
        for (size_t i = 0; i < ce.n; i++) { /* lines end in LF there */
            if (ce.p[i] == '\n')
                cm_buf_append_byte(req, '\r');
            cm_buf_append_byte(req, ce.p[i]);
        }
        cm_buf_free(&ce);
    } else {
        cm_buf_append_str(req, "Content-Type: application/json\r\n");
    }
    cm_buf_printf(req, "Content-Length: %zu\r\n\r\n", msg.n);
    cm_buf_append_slice(req, msg);
}

static int http_open(evt__conn *c, const struct pipe_dest *d, int timeout_ms, cm_buf *err)
{
    cm_buf cerr = {0};
    c->fd = tcp_connect(&d->h->conn, timeout_ms, &cerr);
    if (c->fd < 0)
        cm_buf_printf(err, "%s: %s", d->t->kind, cm_buf_str(&cerr));
    cm_buf_free(&cerr);
    return c->fd < 0 ? CM_EIO : 0;
}

/* The answers in order: 2xx delivered; 4xx but 408 and 429 that event
 * refused (the target's breaker stays closed for the others); 5xx, 408,
 * 429 and anything else the target in trouble. */
static size_t http_answers(evt__conn *c, const struct pipe_dest *d, size_t k, int *rc,
                           bool *broken, cm_buf *err)
{
    size_t got = 0;
    bool closing = false;
    while (got < k && !closing) {
        int st = 0;
        if (http_read_response(c, &st, &closing))
            break;
        if (st >= 200 && st < 300) {
            rc[got] = 0;
        } else {
            bool refused = st >= 400 && st < 500 && st != 408 && st != 429;
            rc[got] = refused ? EVT__REJECTED : CM_EIO;
            if (!err->n)
                cm_buf_printf(err, "%s: HTTP %d", d->t->kind, st);
        }
        got++;
    }
    *broken = got < k || closing;
    return got;
}

/* ------------------------------------------------------- pipelined delivery */
/* Plain HTTP, Redis and NATS: many events written at once on the worker's
 * kept-alive connection, the answers read after. */
struct pipe_proto {
    int (*open)(evt__conn *c, const struct pipe_dest *d, int timeout_ms, cm_buf *err);
    void (*request)(cm_buf *req, const struct pipe_dest *d, const evt__rec *r, cm_slice msg);
    const char *trailer; /* written after the requests, or NULL */
    /* Reads the answers to k requests, setting rc[i] for each answered one
     * (in order); *broken when the connection cannot be used after. */
    size_t (*answers)(evt__conn *c, const struct pipe_dest *d, size_t k, int *rc,
                      bool *broken, cm_buf *err);
};

static const struct pipe_proto http_proto = {http_open, http_request, NULL, http_answers};
static const struct pipe_proto redis_proto = {redis_open, redis_request, NULL, redis_answers};
static const struct pipe_proto nats_proto = {nats_open, nats_request, "PING\r\n", nats_answers};

/* Delivers n events to d with protocol p; rc[i] for each. A connection that
 * ends before answering everything is replaced and the unanswered events
 * are sent again; a kept connection that answers nothing is retried once
 * on a new one (the target may have closed it while idle, or restarted). */
static void pipeline(evt__worker *w, const struct pipe_dest *d, const struct pipe_proto *p,
                     const evt__rec *const *r, const cm_slice *msg, size_t n, int *rc,
                     cm_buf *err)
{
    int tmo = w->e->cfg.delivery_timeout_ms;
    cm_buf req = {0};
    size_t done = 0;
    bool retried = false;
    while (done < n) {
        evt__conn *c = conn_find(w, d->t->url);
        bool fresh = !c;
        if (!c) {
            c = conn_slot(w, d->t->url);
            if (p->open(c, d, tmo, err)) {
                conn_close(c);
                rc[done++] = CM_EIO;
                while (done < n) /* not sent: the breaker decides when to try them */
                    rc[done++] = EVT__UNTRIED;
                break;
            }
        }
        size_t upto = done;
        cm_buf_reset(&req);
        while (upto < n && (upto == done || req.n + msg[upto].n < PIPE_BYTES))
            p->request(&req, d, r[upto], msg[upto]), upto++;
        if (p->trailer)
            cm_buf_append_str(&req, p->trailer);
        size_t got = 0;
        bool broken = true;
        if (!send_all(c->fd, req.p, req.n)) {
            broken = false;
            got = p->answers(c, d, upto - done, rc + done, &broken, err);
        }
        if (broken)
            conn_close(c);
        done += got;
        if (got)
            continue;
        if (!fresh && !retried) { /* a stale kept connection: once more on a new one */
            retried = true;
            cm_buf_reset(err);
            continue;
        }
        if (!err->n)
            cm_buf_printf(err, "%s: no answer from %s:%s", d->t->kind,
                          d->h ? d->h->conn.host : d->u->host, d->h ? d->h->conn.port : d->u->port);
        while (done < upto) /* sent, unanswered: an attempt each */
            rc[done++] = CM_EIO;
        while (done < n)
            rc[done++] = EVT__UNTRIED;
    }
    cm_buf_free(&req);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Sets the handle up for a POST to t with header list hl (the options
 * that do not change between events of a webhook). */
static void http_setup(evt__worker *w, const evt__tgt_snap *t, struct curl_slist *hl)
{
    CURL *h = w->curl;
    evt_t *e = w->e;
    curl_easy_reset(h); /* keeps the connection cache: kept-alive connections stay open */
    curl_easy_setopt(h, CURLOPT_URL, t->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)e->cfg.delivery_timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)e->cfg.delivery_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn-events/0.1");
}

static void http_forget(evt__worker *w)
{
    free(w->curl_url);
    w->curl_url = NULL;
    curl_slist_free_all(w->curl_hdrs);
    w->curl_hdrs = NULL;
}

/* One event to an https:// target, through libcurl (TLS). */
static int https_post(evt__worker *w, const evt__tgt_snap *t, const evt__rec *r, cm_slice msg,
                      cm_buf *err)
{
    CURL *h = w->curl;
    struct curl_slist *hl = NULL;
    cm_buf hdrs = {0};
    int rc = CM_EIO;

    if (!h && !(h = w->curl = curl_easy_init()))
        return CM_ENOMEM;
    if (!strcmp(t->kind, "cloudevents")) { /* headers per event */
        http_forget(w);
        ce_headers(r, &hdrs);
        char *line = (char *)hdrs.p;
        while (line && *line) {
            char *nl = strchr(line, '\n');
            *nl = 0;
            hl = curl_slist_append(hl, line);
            line = nl + 1;
        }
        hl = curl_slist_append(hl, "Expect:");
        http_setup(w, t, hl);
    } else if (!w->curl_url || strcmp(w->curl_url, t->url)) { /* a webhook: set up once */
        http_forget(w);
        hl = curl_slist_append(NULL, "Content-Type: application/json");
        hl = curl_slist_append(hl, "Expect:");
        if (!hl || !(w->curl_url = strdup(t->url))) {
            curl_slist_free_all(hl);
            return CM_ENOMEM;
        }
        w->curl_hdrs = hl;
        hl = NULL;
        http_setup(w, t, w->curl_hdrs);
    }
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)msg.p);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)msg.n);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    if (cc != CURLE_OK) {
        cm_buf_printf(err, "%s: %s", t->kind, curl_easy_strerror(cc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
            rc = 0;
        } else {
            cm_buf_printf(err, "%s: HTTP %ld", t->kind, status);
            if (status >= 400 && status < 500 && status != 408 && status != 429)
                rc = EVT__REJECTED; /* as in http_pipeline */
        }
    }
    if (hl) { /* per-event headers: not kept */
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        curl_slist_free_all(hl);
    }
    cm_buf_free(&hdrs);
    return rc;
}

/* One event to t (https webhooks and AMQP). */
static int deliver_one(evt__worker *w, const evt__tgt_snap *t, const evt__rec *r, cm_slice msg,
                       cm_buf *err)
{
    tgt_url u;
    if (!strcmp(t->kind, "webhook") || !strcmp(t->kind, "cloudevents"))
        return https_post(w, t, r, msg, err);
    if (url_split(t->url, &u)) {
        cm_buf_printf(err, "bad target URL");
        return CM_EINVAL;
    }
    if (!strcmp(t->kind, "amqp"))
        return amqp_pub(w, t->url, &u, r, msg, err);
    cm_buf_printf(err, "unknown target kind %s", t->kind);
    return CM_EINVAL;
}

bool evt__target_pipelines(const char *kind, const char *url)
{
    return ((!strcmp(kind, "webhook") || !strcmp(kind, "cloudevents")) &&
            !strncmp(url, "http://", 7)) ||
           !strcmp(kind, "redis") || !strcmp(kind, "nats");
}

void evt__deliver(evt__worker *w, const evt__tgt_snap *t, const evt__rec *const *r,
                  const cm_slice *msg, size_t n, int *rc, cm_buf *err)
{
    if (evt__target_pipelines(t->kind, t->url)) {
        http_url h;
        tgt_url u;
        struct pipe_dest d = {.t = t};
        const struct pipe_proto *p;
        int bad;
        if (!strcmp(t->kind, "redis") || !strcmp(t->kind, "nats")) {
            p = !strcmp(t->kind, "redis") ? &redis_proto : &nats_proto;
            bad = url_split(t->url, &u);
            d.u = &u;
        } else {
            p = &http_proto;
            bad = http_url_split(t->url, &h);
            d.h = &h;
        }
        if (bad) {
            cm_buf_printf(err, "bad target URL");
            for (size_t i = 0; i < n; i++)
                rc[i] = CM_EINVAL;
            return;
        }
        pipeline(w, &d, p, r, msg, n, rc, err);
        return;
    }
    size_t i = 0;
    for (; i < n; i++) {
        if ((rc[i] = deliver_one(w, t, r[i], msg[i], err)) != 0) {
            i++;
            break;
        }
    }
    for (; i < n; i++) /* after a failure: left to the breaker */
        rc[i] = EVT__UNTRIED;
}

void evt__targets_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void evt__worker_cleanup(evt__worker *w)
{
    if (w->curl)
        curl_easy_cleanup(w->curl);
    w->curl = NULL;
    http_forget(w);
    for (int i = 0; i < EVT__CONNS; i++) {
        conn_close(&w->conns[i]);
        cm_buf_free(&w->conns[i].in);
    }
    amqp_drop(w);
}

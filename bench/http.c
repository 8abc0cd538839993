/* bench/http.c - a minimal keep-alive HTTP/1.1 client over plain TCP for
 * cairn-bench: sends a prebuilt request head plus body with one sendmsg, parses
 * the status line and framing headers, and streams the body (Content-Length,
 * chunked or until close) to a caller's sink. No TLS, no redirects, no proxies:
 * the point is a client whose per-request cost is small and identical for every
 * server it is pointed at. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench/bench.h"

#define RBUF_SIZE (256 * 1024)
#define HEAD_MAX (64 * 1024)

struct bench_conn {
    char *host;        /* owned */
    int port;
    int timeout_s;     /* SO_RCVTIMEO/SO_SNDTIMEO */
    int fd;            /* -1 when closed */
    unsigned connects; /* successful connects so far */
    unsigned nreq;     /* requests on the current socket */
    uint8_t *rbuf;     /* RBUF_SIZE bytes; unread data is rbuf[rpos, rend) */
    size_t rpos, rend;
};

bench_conn_t *bench_conn_new(const char *host, int port, int timeout_s)
{
    bench_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->host = strdup(host);
    c->rbuf = malloc(RBUF_SIZE);
    if (!c->host || !c->rbuf) {
        free(c->host);
        free(c->rbuf);
        free(c);
        return NULL;
    }
    c->port = port;
    c->timeout_s = timeout_s;
    c->fd = -1;
    return c;
}

static void conn_close(bench_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->rpos = c->rend = 0;
    c->nreq = 0;
}

void bench_conn_free(bench_conn_t *c)
{
    if (!c)
        return;
    conn_close(c);
    free(c->host);
    free(c->rbuf);
    free(c);
}

unsigned bench_conn_connects(const bench_conn_t *c) { return c->connects; }

static int conn_open(bench_conn_t *c);

int bench_conn_connect(bench_conn_t *c)
{
    if (c->fd >= 0)
        return 0;
    return conn_open(c);
}

static int conn_open(bench_conn_t *c)
{
    struct addrinfo hints = {0}, *res = NULL, *ai;
    char port[16];
    int one = 1, err = -ECONNREFUSED;
    struct timeval tv = {c->timeout_s, 0};

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", c->port);
    if (getaddrinfo(c->host, port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            c->fd = fd;
            c->connects++;
            c->nreq = 0;
            c->rpos = c->rend = 0;
            freeaddrinfo(res);
            return 0;
        }
        err = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    return err;
}

static int send_all(bench_conn_t *c, const void *head, size_t headlen, const void *body,
                    size_t bodylen)
{
    struct iovec iov[2] = {{(void *)head, headlen}, {(void *)body, bodylen}};
    struct msghdr msg = {0};
    size_t left = headlen + bodylen;

    msg.msg_iov = iov;
    msg.msg_iovlen = bodylen ? 2 : 1;
    while (left) {
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        left -= (size_t)n;
        while (n > 0 && msg.msg_iovlen) {
            if ((size_t)n >= msg.msg_iov[0].iov_len) {
                n -= (ssize_t)msg.msg_iov[0].iov_len;
                msg.msg_iov++;
                msg.msg_iovlen--;
            } else {
                msg.msg_iov[0].iov_base = (uint8_t *)msg.msg_iov[0].iov_base + n;
                msg.msg_iov[0].iov_len -= (size_t)n;
                n = 0;
            }
        }
    }
    return 0;
}

/* Reads more bytes into rbuf, compacting first. Returns bytes read, 0 on EOF,
 * or a negative errno (-ETIMEDOUT on a receive timeout). */
static ssize_t fill(bench_conn_t *c)
{
    ssize_t n;

    if (c->rpos == c->rend) {
        c->rpos = c->rend = 0;
    } else if (c->rend == RBUF_SIZE) {
        if (c->rpos == 0)
            return -E2BIG;
        memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
        c->rend -= c->rpos;
        c->rpos = 0;
    }
    do {
        n = recv(c->fd, c->rbuf + c->rend, RBUF_SIZE - c->rend, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
    c->rend += (size_t)n;
    return n;
}

static void deliver(struct bench_resp *r, const uint8_t *p, size_t n)
{
    if (r->keep) {
        size_t take = n;
        if (r->keep_max && r->keep->n + take > r->keep_max)
            take = r->keep->n < r->keep_max ? r->keep_max - r->keep->n : 0;
        if (take)
            cm_buf_append(r->keep, p, take);
    }
    if (r->sink && !r->sink(r->sink_arg, r->body_len, p, n))
        r->sink_failed = true;
    r->body_len += n;
}

/* Passes exactly n body bytes (or until EOF when n is UINT64_MAX) to r. */
static int read_body(bench_conn_t *c, uint64_t n, struct bench_resp *r)
{
    bool to_eof = n == UINT64_MAX;

    while (n) {
        if (c->rpos == c->rend) {
            ssize_t got = fill(c);
            if (got < 0)
                return (int)got;
            if (got == 0)
                return to_eof ? 0 : -EPIPE;
        }
        size_t avail = c->rend - c->rpos;
        size_t take = (!to_eof && n < avail) ? (size_t)n : avail;
        deliver(r, c->rbuf + c->rpos, take);
        c->rpos += take;
        if (!to_eof)
            n -= take;
    }
    return 0;
}

/* Returns the length of the line at rpos including CRLF, reading as needed. */
static int read_line(bench_conn_t *c, size_t *len)
{
    for (;;) {
        uint8_t *nl = memchr(c->rbuf + c->rpos, '\n', c->rend - c->rpos);
        if (nl) {
            *len = (size_t)(nl - (c->rbuf + c->rpos)) + 1;
            return 0;
        }
        ssize_t got = fill(c);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return -EPIPE;
    }
}

static int read_chunked(bench_conn_t *c, struct bench_resp *r)
{
    for (;;) {
        size_t len;
        int rc = read_line(c, &len);
        if (rc)
            return rc;
        char *end;
        unsigned long long sz = strtoull((char *)c->rbuf + c->rpos, &end, 16);
        if (end == (char *)c->rbuf + c->rpos)
            return -EPROTO;
        c->rpos += len;
        if (sz == 0)
            break;
        if ((rc = read_body(c, sz, r)) != 0)
            return rc;
        if ((rc = read_line(c, &len)) != 0) /* CRLF after the data */
            return rc;
        c->rpos += len;
    }
    for (;;) { /* trailers up to the empty line */
        size_t len;
        int rc = read_line(c, &len);
        if (rc)
            return rc;
        c->rpos += len;
        if (len <= 2)
            return 0;
    }
}

static bool hdr_is(const char *line, size_t len, const char *name, const char **val)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return false;
    const char *v = line + nl + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    *val = v;
    return true;
}

/* Parses one response head at rpos; returns 0 with the framing filled in. */
static int read_head(bench_conn_t *c, int *status, uint64_t *clen, bool *chunked, bool *close_)
{
    uint8_t *end;

    for (;;) {
        end = memmem(c->rbuf + c->rpos, c->rend - c->rpos, "\r\n\r\n", 4);
        if (end)
            break;
        if (c->rend - c->rpos > HEAD_MAX)
            return -EPROTO;
        ssize_t got = fill(c);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return c->rend == c->rpos ? -ECONNRESET : -EPROTO;
    }
    char *p = (char *)c->rbuf + c->rpos, *stop = (char *)end + 2;
    /* "HTTP/1.x NNN " */
    if ((size_t)(stop - p) < 13 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
        p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return -EPROTO;
    int minor = p[7] - '0';
    *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    *clen = UINT64_MAX;
    *chunked = false;
    *close_ = minor == 0;
    while ((p = memchr(p, '\n', (size_t)(stop - p))) != NULL && ++p < stop) {
        char *eol = memchr(p, '\r', (size_t)(stop - p));
        size_t len = eol ? (size_t)(eol - p) : (size_t)(stop - p);
        const char *v;
        if (hdr_is(p, len, "content-length", &v))
            *clen = strtoull(v, NULL, 10);
        else if (hdr_is(p, len, "transfer-encoding", &v))
            *chunked = strncasecmp(v, "chunked", 7) == 0;
        else if (hdr_is(p, len, "connection", &v))
            *close_ = strncasecmp(v, "close", 5) == 0 ? true
                      : strncasecmp(v, "keep-alive", 10) == 0 ? false
                                                              : *close_;
    }
    c->rpos = (size_t)(end + 4 - c->rbuf);
    return 0;
}

static int request_once(bench_conn_t *c, const void *head, size_t headlen, const void *body,
                        size_t bodylen, struct bench_resp *r)
{
    int rc, status = 0;
    uint64_t clen = UINT64_MAX;
    bool chunked = false, close_ = false;

    if ((rc = send_all(c, head, headlen, body, bodylen)) != 0)
        return rc;
    do { /* skip 1xx interim responses */
        if ((rc = read_head(c, &status, &clen, &chunked, &close_)) != 0)
            return rc;
    } while (status >= 100 && status < 200);
    r->status = status;
    c->nreq++;
    if (status == 204 || status == 304 || (headlen >= 5 && memcmp(head, "HEAD ", 5) == 0))
        rc = 0;
    else if (chunked)
        rc = read_chunked(c, r);
    else if (clen != UINT64_MAX)
        rc = read_body(c, clen, r);
    else {
        rc = read_body(c, UINT64_MAX, r);
        close_ = true;
    }
    if (rc == 0 && close_)
        conn_close(c);
    return rc;
}

int bench_conn_request(bench_conn_t *c, const void *head, size_t headlen, const void *body,
                       size_t bodylen, struct bench_resp *r)
{
    int rc;

    r->status = 0;
    r->body_len = 0;
    r->sink_failed = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused;
        if (c->fd < 0 && (rc = conn_open(c)) != 0)
            return rc;
        reused = c->nreq > 0;
        rc = request_once(c, head, headlen, body, bodylen, r);
        if (rc == 0)
            return 0;
        conn_close(c);
        /* A keep-alive socket the server closed between requests fails before
         * any response byte: retry once on a fresh one. */
        if (!reused || r->status != 0 || (rc != -ECONNRESET && rc != -EPIPE))
            return rc;
        if (r->keep)
            cm_buf_reset(r->keep);
    }
    return rc;
}

/* bench/sink.c - `cairn-bench --sink PORT --sink-log FILE`: a webhook receiver
 * for bench/events_bench.sh. HTTP/1.1 with keep-alive on 127.0.0.1, a thread
 * per connection: each request's headers are read (Content-Length), then its
 * body, and for every record's "object":{"key":"..."} one line
 * "EPOCH_SECONDS KEY" (the key URL-decoded, the time taken when the body was
 * complete) goes to FILE, flushed every 100 ms; the answer is 200 with no
 * body. It costs a small part of what a Python receiver costs per event, so a
 * benchmark on one machine charges less of the receiver's CPU to the server.
 * Runs until SIGINT or SIGTERM. */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SINK_MAX_REQUEST ((size_t)16 << 20) /* a larger request closes the connection */

static volatile sig_atomic_t sink_stop;
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *sink_out;

static void sink_on_signal(int sig)
{
    (void)sig;
    sink_stop = 1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* URL-decodes (form style: '+' is a space) p[0..n) into out (NUL-terminated). */
static void url_decode(const char *p, size_t n, cm_buf *out)
{
    cm_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            c = hexval(p[i + 1]) << 4 | hexval(p[i + 2]);
            i += 2;
        }
        cm_buf_append_byte(out, (uint8_t)c);
    }
    cm_buf_append_byte(out, 0);
}

/* Logs every record key of one event message body. */
static void log_keys(const char *body, size_t n, double now, cm_buf *key)
{
    static const char pat[] = "\"object\":{\"key\":\"";
    const char *end = body + n;
    const char *p = body;

    while ((p = memmem(p, (size_t)(end - p), pat, sizeof pat - 1)) != NULL) {
        p += sizeof pat - 1;
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            break;
        url_decode(p, (size_t)(q - p), key);
        pthread_mutex_lock(&sink_mu);
        fprintf(sink_out, "%.6f %s\n", now, (const char *)key->p);
        pthread_mutex_unlock(&sink_mu);
        p = q;
    }
}

/* The Content-Length of a header block (0 if absent), or -1 if malformed. */
static long content_length(const char *h, size_t n)
{
    static const char name[] = "\ncontent-length:";
    for (size_t i = 0; i + sizeof name - 1 <= n; i++) {
        if (strncasecmp(h + i, name, sizeof name - 1) == 0) {
            char *e;
            long v = strtol(h + i + sizeof name - 1, &e, 10);
            return v < 0 || (size_t)v > SINK_MAX_REQUEST ? -1 : v;
        }
    }
    return 0;
}

static void *sink_conn(void *arg)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    int fd = (int)(intptr_t)arg;
    cm_buf in = {0}, key = {0};
    size_t used = 0;

    for (;;) {
        /* Requests already complete in the buffer first. */
        const char *hdr_end = in.n ? memmem(in.p, in.n, "\r\n\r\n", 4) : NULL;
        if (hdr_end) {
            size_t hlen = (size_t)(hdr_end - (const char *)in.p) + 4;
            long clen = content_length((const char *)in.p, hlen);
            if (clen < 0)
                break;
            if (in.n >= hlen + (size_t)clen) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                log_keys((const char *)in.p + hlen, (size_t)clen,
                         (double)ts.tv_sec + (double)ts.tv_nsec / 1e9, &key);
                if (send(fd, ok, sizeof ok - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ok - 1))
                    break;
                used = hlen + (size_t)clen;
                memmove(in.p, in.p + used, in.n - used);
                in.n -= used;
                continue;
            }
        } else if (in.n > 65536) {
            break; /* headers that never end */
        }
        if (cm_buf_reserve(&in, 65536))
            break;
        ssize_t r = recv(fd, in.p + in.n, in.cap - in.n, 0);
        if (r <= 0)
            break;
        in.n += (size_t)r;
        if (in.n > SINK_MAX_REQUEST + 65536)
            break;
    }
    close(fd);
    cm_buf_free(&in);
    cm_buf_free(&key);
    return NULL;
}

int bench_sink_run(int port, const char *log_path)
{
    struct sockaddr_in sa = {0};
    int one = 1, lfd;

    if (!(sink_out = fopen(log_path, "a"))) {
        fprintf(stderr, "cairn-bench: %s: %s\n", log_path, strerror(errno));
        return 1;
    }
    setvbuf(sink_out, NULL, _IOFBF, 1 << 16);
    if ((lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
        return 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 128)) {
        fprintf(stderr, "cairn-bench: --sink %d: %s\n", port, strerror(errno));
        close(lfd);
        return 1;
    }
    signal(SIGINT, sink_on_signal);
    signal(SIGTERM, sink_on_signal);
    signal(SIGPIPE, SIG_IGN);
    while (!sink_stop) {
        struct pollfd pfd = {lfd, POLLIN, 0};
        if (poll(&pfd, 1, 100) > 0) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                pthread_t th;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                if (pthread_create(&th, NULL, sink_conn, (void *)(intptr_t)fd))
                    close(fd);
                else
                    pthread_detach(th);
            }
        }
        pthread_mutex_lock(&sink_mu);
        fflush(sink_out);
        pthread_mutex_unlock(&sink_mu);
    }
    close(lfd);
    pthread_mutex_lock(&sink_mu);
    fflush(sink_out); /* connection threads still running end with the process */
    pthread_mutex_unlock(&sink_mu);
    return 0;
}

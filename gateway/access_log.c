/* gateway/access_log.c - the S3 server access log: one line per request in
 * AWS's documented field order, written to DIR/logs/access.log with size-
 * and age-based rotation (access.log.YYYYmmdd-HHMMSS, oldest pruned). Never
 * writes secrets: no Authorization header, and signature or token values in
 * a request URI are replaced. Delivery to buckets is s3_logging.c's. */
#include "gateway/gw_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* One open log. Lines are gathered in buf and written by whoever fills it
 * or by the flusher thread every ALOG_FLUSH_MS: one write() for many
 * requests. Access logs are best effort, as S3's are; usage counting, which
 * must survive a crash, does not go through here. */
#define ALOG_FLUSH_MS 100
#define ALOG_BUF_MAX (64 * 1024)

struct gw_alog {
    char dir[4096];
    uint64_t max_bytes;
    unsigned max_age_s;
    unsigned keep;
    pthread_mutex_t lk;
    pthread_cond_t cv;
    pthread_t flusher;
    bool stop;         /* guarded by lk */
    cm_buf buf;        /* guarded by lk: lines not yet written */
    int fd;            /* guarded by lk */
    uint64_t size;     /* guarded by lk */
    int64_t opened;    /* guarded by lk: ms when this file was started */
};

/* operation -> "REST.METHOD.RESOURCE" as S3 logs it. */
static const struct {
    enum gw_op op;
    const char *name;
} rest_names[] = {
    {GW_OP_ListBuckets, "REST.GET.SERVICE"},
    {GW_OP_CreateBucket, "REST.PUT.BUCKET"},
    {GW_OP_HeadBucket, "REST.HEAD.BUCKET"},
    {GW_OP_DeleteBucket, "REST.DELETE.BUCKET"},
    {GW_OP_GetBucketLocation, "REST.GET.LOCATION"},
    {GW_OP_GetBucketVersioning, "REST.GET.VERSIONING"},
    {GW_OP_ListObjects, "REST.GET.BUCKET"},
    {GW_OP_ListObjectsV2, "REST.GET.BUCKET"},
    {GW_OP_ListObjectVersions, "REST.GET.BUCKETVERSIONS"},
    {GW_OP_ListMultipartUploads, "REST.GET.UPLOADS"},
    {GW_OP_DeleteObjects, "REST.POST.MULTI_OBJECT_DELETE"},
    {GW_OP_PutObject, "REST.PUT.OBJECT"},
    {GW_OP_GetObject, "REST.GET.OBJECT"},
    {GW_OP_HeadObject, "REST.HEAD.OBJECT"},
    {GW_OP_DeleteObject, "REST.DELETE.OBJECT"},
    {GW_OP_CopyObject, "REST.COPY.OBJECT"},
    {GW_OP_CreateMultipartUpload, "REST.POST.UPLOADS"},
    {GW_OP_UploadPart, "REST.PUT.PART"},
    {GW_OP_UploadPartCopy, "REST.COPY.PART"},
    {GW_OP_CompleteMultipartUpload, "REST.POST.UPLOAD"},
    {GW_OP_AbortMultipartUpload, "REST.DELETE.UPLOAD"},
    {GW_OP_ListParts, "REST.GET.UPLOAD"},
    {GW_OP_PutBucketLogging, "REST.PUT.LOGGING_STATUS"},
    {GW_OP_GetBucketLogging, "REST.GET.LOGGING_STATUS"},
};

static void rest_name(const gw_req *r, cm_buf *b)
{
    for (size_t i = 0; i < sizeof rest_names / sizeof rest_names[0]; i++) {
        if (rest_names[i].op == r->op) {
            cm_buf_append_str(b, rest_names[i].name);
            return;
        }
    }
    /* Others: REST.METHOD.BUCKET|OBJECT, or the op name for cairn's own. */
    cm_buf_append_str(b, "REST.");
    for (size_t i = 0; i < r->method.n && i < 16; i++) {
        char c = (char)r->method.p[i];
        cm_buf_append_byte(b, (uint8_t)(c >= 'a' && c <= 'z' ? c - 32 : c));
    }
    cm_buf_append_str(b, r->has_key ? ".OBJECT" : r->bucket[0] ? ".BUCKET" : ".SERVICE");
}

/* Appends "%XX" (upper-case hex) for byte c. */
static void pct(cm_buf *b, uint8_t c)
{
    static const char hex[] = "0123456789ABCDEF";
    char t[3] = {'%', hex[c >> 4], hex[c & 15]};
    cm_buf_append(b, t, 3);
}

/* Text inside "..." without the quotes: '"', '\' and control bytes are
 * %-escaped. Runs of plain bytes are appended at once. */
static void quoted_text(cm_buf *b, cm_slice s)
{
    size_t i = 0;
    while (i < s.n) {
        size_t j = i;
        for (uint8_t c; j < s.n && (c = s.p[j]) != '"' && c != '\\' && c >= 0x20 && c != 0x7f;)
            j++;
        cm_buf_append(b, s.p + i, j - i);
        if (j < s.n)
            pct(b, s.p[j++]);
        i = j;
    }
}

static void quoted(cm_buf *b, cm_slice s)
{
    cm_buf_append_byte(b, '"');
    quoted_text(b, s);
    cm_buf_append_byte(b, '"');
}

/* A bare field: "-" when empty; spaces and control bytes %-escaped. */
static void bare(cm_buf *b, cm_slice s)
{
    if (!s.n) {
        cm_buf_append_byte(b, '-');
        return;
    }
    size_t i = 0;
    while (i < s.n) {
        size_t j = i;
        for (uint8_t c; j < s.n && (c = s.p[j]) > 0x20 && c != 0x7f && c != '"';)
            j++;
        cm_buf_append(b, s.p + i, j - i);
        if (j < s.n)
            pct(b, s.p[j++]);
        i = j;
    }
}

/* Appends the decimal u and then c (printf's "%llu%c"). */
static void unum(cm_buf *b, uint64_t u, char c)
{
    char t[24], *o = t + sizeof t;
    *--o = c;
    do
        *--o = (char)('0' + u % 10);
    while (u /= 10);
    cm_buf_append(b, o, (size_t)(t + sizeof t - o));
}

/* The same for a signed v ("%lld%c"). */
static void snum(cm_buf *b, int64_t v, char c)
{
    if (v < 0)
        cm_buf_append_byte(b, '-');
    unum(b, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, c);
}

static bool secret_param(cm_slice name)
{
    return cm_slice_case_eq_str(name, "X-Amz-Signature") ||
           cm_slice_case_eq_str(name, "X-Amz-Security-Token") ||
           cm_slice_case_eq_str(name, "Signature") ||
           cm_slice_case_eq_str(name, "x-amz-server-side-encryption-customer-key");
}

/* "METHOD /path?query HTTP/1.1" with secret query values replaced. */
static void request_uri(const gw_req *r, cm_buf *b)
{
    cm_buf_append_byte(b, '"');
    quoted_text(b, r->method);
    cm_buf_append_byte(b, ' ');
    quoted_text(b, r->raw_path);
    cm_slice q = r->raw_query;
    if (q.n) {
        cm_buf_append_byte(b, '?');
        size_t i = 0;
        bool first = true;
        while (i < q.n) {
            size_t j = i;
            while (j < q.n && q.p[j] != '&')
                j++;
            cm_slice part = CM_SLICE(q.p + i, j - i);
            const uint8_t *eq = memchr(part.p, '=', part.n);
            cm_slice name = eq ? CM_SLICE(part.p, (size_t)(eq - part.p)) : part;
            bool secret;
            if (!memchr(name.p, '%', name.n) && !memchr(name.p, '+', name.n)) {
                secret = secret_param(name); /* decoding would not change it */
            } else {
                cm_buf dn = {0};
                secret = cm_uri_decode(&dn, name, true) == 0 && secret_param(cm_buf_slice(&dn));
                cm_buf_free(&dn);
            }
            if (!first)
                cm_buf_append_byte(b, '&');
            first = false;
            if (secret) {
                quoted_text(b, name);
                cm_buf_append_str(b, "=REDACTED");
            } else {
                quoted_text(b, part);
            }
            i = j + 1;
        }
    }
    cm_buf_append_str(b, " HTTP/1.1\"");
}

/* "[30/Aug/2015:12:36:00 +0000]" of the second secs, formatted once per
 * second per thread. */
static const char *log_time(time_t secs)
{
    static _Thread_local time_t last = (time_t)-1;
    static _Thread_local char t[64];
    if (secs != last || !t[0]) {
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(t, sizeof t, "[%d/%b/%Y:%H:%M:%S +0000]", &tm);
        last = secs;
    }
    return t;
}

void gw_alog_format(gw_req *r, cm_buf *b)
{
    int64_t now = cm_now_ms();
    int status = r->status ? r->status : 200;
    cm_slice v;

    /* bucket owner, bucket, time, remote IP, requester, request id */
    bare(b, CM_SLICE_STR(r->srv->owner_id));
    cm_buf_append_byte(b, ' ');
    bare(b, r->bucket[0] ? CM_SLICE_STR(r->bucket) : CM_SLICE_NULL);
    cm_buf_append_byte(b, ' ');
    cm_buf_append_str(b, log_time((time_t)(r->start_ms / 1000)));
    cm_buf_append_byte(b, ' ');
    bare(b, CM_SLICE_STR(r->peer ? r->peer : ""));
    cm_buf_append_byte(b, ' ');
    bare(b, r->anonymous ? CM_SLICE_NULL : CM_SLICE_STR(r->access_key));
    cm_buf_append_byte(b, ' ');
    cm_buf_append_str(b, r->id);
    cm_buf_append_byte(b, ' ');
    /* operation, key (URL-encoded), request URI, status, error code */
    rest_name(r, b);
    cm_buf_append_byte(b, ' ');
    if (r->has_key && r->key.n) {
        cm_uri_encode(b, r->key, false);
    } else {
        cm_buf_append_byte(b, '-');
    }
    cm_buf_append_byte(b, ' ');
    request_uri(r, b);
    cm_buf_append_byte(b, ' ');
    snum(b, status, ' ');
    cm_buf_append_str(b, r->err != S3E__NONE ? gw_s3err_code(r->err) : "-");
    cm_buf_append_byte(b, ' ');
    /* bytes sent, object size, total time, turn-around time (ms) */
    if (r->bytes_out)
        unum(b, r->bytes_out, ' ');
    else
        cm_buf_append_str(b, "- ");
    if ((r->op == GW_OP_PutObject || r->op == GW_OP_UploadPart) && r->err == S3E__NONE)
        unum(b, r->body_n, ' ');
    else if ((r->op == GW_OP_GetObject || r->op == GW_OP_HeadObject) && status == 200 &&
             r->stream)
        unum(b, r->stream_len, ' ');
    else
        cm_buf_append_str(b, "- ");
    int64_t resp = r->resp_ms ? r->resp_ms : now;
    snum(b, now - r->start_ms, ' ');
    snum(b, resp - r->start_ms, ' ');
    /* "referer" "user-agent" version-id host-id */
    quoted(b, gw_hdr(r, "Referer", &v) ? v : CM_SLICE_STR("-"));
    cm_buf_append_byte(b, ' ');
    quoted(b, gw_hdr(r, "User-Agent", &v) ? v : CM_SLICE_STR("-"));
    cm_buf_append_str(b, " - ");
    cm_buf_append_str(b, r->host_id);
    cm_buf_append_byte(b, ' ');
    /* signature version, cipher suite, authentication type, host header,
     * TLS version, access point ARN, acl required */
    bool hdr_auth = gw_hdr(r, "Authorization", NULL);
    bool q_auth = gw_param_has(r, "X-Amz-Signature");
    cm_buf_append_str(b, r->anonymous ? "- - " : "SigV4 - ");
    cm_buf_append_str(b, r->anonymous ? "- " : hdr_auth ? "AuthHeader " : q_auth ? "QueryString " : "- ");
    bare(b, r->host);
    cm_buf_append_str(b, " - - -\n");
}

/* ------------------------------------------------------------ the file */
static int open_file(gw_alog *l)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/access.log", l->dir);
    l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (l->fd < 0)
        return CM_EIO;
    l->size = fstat(l->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    l->opened = cm_now_ms();
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Deletes the oldest rotated files beyond l->keep. */
static void prune(gw_alog *l)
{
    DIR *d = opendir(l->dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    if (!d)
        return;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "access.log.", 11))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **na = realloc(names, nc * sizeof *na);
            if (!na)
                break;
            names = na;
            cap = nc;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, name_cmp); /* timestamps sort by age */
    for (size_t i = 0; i < n; i++) {
        if (i + l->keep < n) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", l->dir, names[i]);
            unlink(path);
        }
        free(names[i]);
    }
    free(names);
}

/* Writes the gathered lines. lk held. */
static void flush_locked(gw_alog *l)
{
    size_t off = 0;
    while (l->fd >= 0 && off < l->buf.n) {
        ssize_t n = write(l->fd, l->buf.p + off, l->buf.n - off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        off += (size_t)n;
        l->size += (uint64_t)n;
    }
    cm_buf_reset(&l->buf);
}

static void *flusher_main(void *arg)
{
    gw_alog *l = arg;
    pthread_mutex_lock(&l->lk);
    while (!l->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += ALOG_FLUSH_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->cv, &l->lk, &ts);
        if (l->buf.n)
            flush_locked(l);
    }
    pthread_mutex_unlock(&l->lk);
    return NULL;
}

static void rotate(gw_alog *l)
{
    flush_locked(l);
    char from[4200], to[4300], ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", &tm);
    snprintf(from, sizeof from, "%s/access.log", l->dir);
    snprintf(to, sizeof to, "%s/access.log.%s", l->dir, ts);
    for (int i = 1; access(to, F_OK) == 0 && i < 1000; i++)
        snprintf(to, sizeof to, "%s/access.log.%s.%03d", l->dir, ts, i);
    close(l->fd);
    l->fd = -1;
    if (rename(from, to))
        cm_log(CM_LOG_WARN, "access log: cannot rotate %s: %s", from, strerror(errno));
    if (open_file(l))
        cm_log(CM_LOG_ERROR, "access log: cannot reopen %s: %s", from, strerror(errno));
    prune(l);
}

int gw_alog_open(const char *dir, uint64_t max_bytes, unsigned max_age_s, unsigned keep,
                 gw_alog **out)
{
    gw_alog *l = calloc(1, sizeof *l);
    int rc;
    if (!l)
        return CM_ENOMEM;
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    l->max_bytes = max_bytes;
    l->max_age_s = max_age_s;
    l->keep = keep;
    l->fd = -1;
    pthread_mutex_init(&l->lk, NULL);
    pthread_cond_init(&l->cv, NULL);
    if ((rc = cm_mkdir_p(dir, 0700)) || (rc = open_file(l)) ||
        (rc = pthread_create(&l->flusher, NULL, flusher_main, l) ? CM_ENOMEM : 0)) {
        if (l->fd >= 0)
            close(l->fd);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->lk);
        free(l);
        return rc ? rc : CM_EIO;
    }
    *out = l;
    return 0;
}

void gw_alog_close(gw_alog *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lk);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->lk);
    pthread_join(l->flusher, NULL);
    flush_locked(l);
    if (l->fd >= 0)
        close(l->fd);
    cm_buf_free(&l->buf);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->lk);
    free(l);
}

void gw_alog_write(gw_alog *l, cm_slice line)
{
    pthread_mutex_lock(&l->lk);
    if (l->fd >= 0 && l->size + l->buf.n > 0 &&
        (l->size + l->buf.n + line.n > l->max_bytes ||
         cm_now_ms() - l->opened > (int64_t)l->max_age_s * 1000))
        rotate(l);
    cm_buf_append_slice(&l->buf, line);
    if (l->buf.n >= ALOG_BUF_MAX)
        flush_locked(l);
    pthread_mutex_unlock(&l->lk);
}

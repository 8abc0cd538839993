/* bench/bench.c - cairn-bench: drives an S3 endpoint (or a static web server)
 * with SigV4-signed PUT/GET/ListObjectsV2 from N threads, one keep-alive
 * connection each, and prints ops/s, MiB/s, latency percentiles and errors.
 * Options, workers, key naming, object content, statistics and output live
 * here; signing is in sig.c and the HTTP client in http.c. */
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench.h"

enum op { OP_NONE, OP_GET, OP_PUT, OP_MIXED, OP_LIST };
static const char *const op_names[] = {"none", "get", "put", "mixed", "list"};

enum payload { PAYLOAD_AUTO, PAYLOAD_SIGNED, PAYLOAD_UNSIGNED };
#define AUTO_SIGNED_MAX (1024 * 1024) /* auto: sign bodies up to 1 MiB */

/* Options; written by parse_args() only, read-only once threads start. */
static struct {
    char host[256];        /* from --endpoint */
    char hostport[300];    /* Host header value */
    int port;
    const char *access_key, *secret_key, *region, *bucket, *prefix;
    const char *url_path;    /* --url-path: GET this path instead of bucket/key */
    const char *prepare_dir; /* --prepare-dir: write objects as files here */
    const char *label;       /* --label: echoed in the JSON line */
    enum op op;
    bool op_given;
    uint64_t size;
    int concurrency, prepare_conc;
    double duration, warmup;
    uint64_t count;
    uint64_t keys;
    bool keys_given;
    bool verify, no_verify, json, prepare, self_test, free_port;
    double wait;  /* --wait: seconds to wait for the endpoint to accept */
    int sink_port;            /* --sink: run the webhook receiver on this port */
    const char *sink_log;     /* --sink-log: where it writes "EPOCH KEY" lines */
    enum payload payload;
    int mix;      /* percent of GETs in mixed */
    int max_keys; /* ListObjectsV2 page size */
    int timeout;  /* socket timeout, seconds */
    int quiet;
} g = {
    .region = "us-east-1",
    .bucket = "bench",
    .prefix = "bench/",
    .op = OP_GET,
    .size = 4096,
    .concurrency = 1,
    .prepare_conc = 32,
    .keys = 100,
    .mix = 70,
    .max_keys = 1000,
    .timeout = 60,
};

/* ------------------------------------------------------------- content */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t bench_seed(const char *key)
{
    const char *base = strrchr(key, '/');
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const char *p = base ? base + 1 : key; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h;
}

static inline uint64_t content_word(uint64_t seed, uint64_t i)
{
    return htole64(mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull));
}

/* The aligned 8-byte loops below are the hot path of --verify (a 16 MiB GET
 * checks 2M words); bytes before and after them go through the word one at a
 * time. */
void bench_fill(uint64_t seed, uint64_t off, uint8_t *p, size_t n)
{
    uint64_t i = off / 8, v;
    size_t o = off % 8;

    if (o) {
        v = content_word(seed, i++);
        size_t take = 8 - o < n ? 8 - o : n;
        memcpy(p, (uint8_t *)&v + o, take);
        p += take;
        n -= take;
    }
    for (; n >= 8; n -= 8, p += 8) {
        v = content_word(seed, i++);
        memcpy(p, &v, 8);
    }
    if (n) {
        v = content_word(seed, i);
        memcpy(p, &v, n);
    }
}

bool bench_check(uint64_t seed, uint64_t off, const uint8_t *p, size_t n)
{
    uint64_t i = off / 8, v, got, bad = 0;
    size_t o = off % 8;

    if (o) {
        v = content_word(seed, i++);
        size_t take = 8 - o < n ? 8 - o : n;
        if (memcmp(p, (uint8_t *)&v + o, take) != 0)
            return false;
        p += take;
        n -= take;
    }
    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&got, p, 8);
        bad |= got ^ content_word(seed, i++);
    }
    if (n) {
        v = content_word(seed, i);
        if (memcmp(p, &v, n) != 0)
            return false;
    }
    return bad == 0;
}

/* ----------------------------------------------------------- histogram */
/* Log-linear buckets over microseconds: exact below 128 us, then 64 buckets
 * per power of two (under 1.6% error). */
#define HIST_N (128 + 64 * 40)

static int hist_idx(uint64_t us)
{
    if (us < 128)
        return (int)us;
    int msb = 63 - __builtin_clzll(us);
    int shift = msb - 6;
    int idx = 128 + (shift - 1) * 64 + (int)((us >> shift) - 64);
    return idx < HIST_N ? idx : HIST_N - 1;
}

static double hist_value_us(int idx)
{
    if (idx < 128)
        return idx;
    int shift = (idx - 128) / 64 + 1;
    uint64_t m = (uint64_t)((idx - 128) % 64 + 64);
    return (double)(m << shift) + (double)(1ull << shift) / 2.0;
}

static double hist_pct_ms(const uint64_t *h, uint64_t total, double pct)
{
    uint64_t want = (uint64_t)ceil(total * pct / 100.0), seen = 0;
    if (!total)
        return 0;
    if (want == 0)
        want = 1;
    for (int i = 0; i < HIST_N; i++) {
        seen += h[i];
        if (seen >= want)
            return hist_value_us(i) / 1000.0;
    }
    return hist_value_us(HIST_N - 1) / 1000.0;
}

/* ------------------------------------------------------------- the run */
/* State shared by the workers of one phase. next and stop are the only fields
 * written while threads run (atomically); the rest is set before they start. */
static struct run {
    enum op op;
    uint64_t count;        /* ops to do (0 = until deadline) */
    uint64_t nkeys;        /* key space [0, nkeys); 0 = unbounded (put) */
    bool seq;              /* key index = ticket (prepare, read-back) */
    uint64_t size;
    uint64_t start_ns;     /* stats count ops that start at or after this */
    uint64_t deadline_ns;  /* 0 = none */
    const char *prefix;
    _Atomic uint64_t next; /* ticket counter */
    _Atomic int errors_shown;
} R;

static volatile sig_atomic_t interrupted;

struct worker {
    pthread_t tid;
    int id;
    bench_conn_t *conn;
    bench_signer_t *signer;
    uint64_t rng;
    cm_buf head, auth, path, query, resp;
    uint8_t *body; /* R.size bytes for PUT */
    bool body_filled; /* body holds content (of some key) already */
    char key[1100];
    char token[2048]; /* ListObjectsV2 continuation token, "" = first page */
    time_t date_t;
    char amz_date[32];
    uint64_t hist[HIST_N];
    uint64_t ops, bytes, errors, verify_errors, keys_listed, end_ns;
};

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ull;
    return mix64(*s);
}

static void key_name(struct worker *w, uint64_t idx)
{
    snprintf(w->key, sizeof w->key, "%s%08llu", R.prefix, (unsigned long long)idx);
}

static void show_error(const char *what, const char *target, int status, int rc,
                       const cm_buf *body)
{
    if (atomic_fetch_add(&R.errors_shown, 1) >= 3)
        return;
    if (status) {
        char text[301];
        snprintf(text, sizeof text, "%s", body ? cm_buf_str(body) : "");
        for (char *p = text; *p; p++)
            if (*p == '\r' || *p == '\n')
                *p = ' ';
        fprintf(stderr, "cairn-bench: %s %s: HTTP %d: %s\n", what, target, status, text);
    }
    else
        fprintf(stderr, "cairn-bench: %s %s: %s\n", what, target, strerror(-rc));
}

/* Builds the signed request head into w->head. path is the encoded path,
 * query the canonical query ("" for none). */
static int build_head(struct worker *w, const char *method, const char *path, const char *query,
                      const char *payload_hash, bool has_len, uint64_t len)
{
    time_t now = time(NULL);
    int rc = 0;

    if (now != w->date_t) {
        w->date_t = now;
        cm_time_amz(now, w->amz_date);
    }
    struct bench_hdr hdrs[] = {
        {"host", g.hostport},
        {"x-amz-content-sha256", payload_hash},
        {"x-amz-date", w->amz_date},
    };
    cm_buf_reset(&w->auth);
    if (bench_sign(w->signer, method, path, query, hdrs, 3, payload_hash, w->amz_date, &w->auth,
                   NULL))
        return CM_ENOMEM;
    cm_buf_reset(&w->head);
    rc |= cm_buf_printf(&w->head, "%s %s%s%s HTTP/1.1\r\nHost: %s\r\n", method, path,
                        *query ? "?" : "", query, g.hostport);
    if (has_len)
        rc |= cm_buf_printf(&w->head, "Content-Length: %llu\r\n", (unsigned long long)len);
    rc |= cm_buf_printf(&w->head,
                        "x-amz-content-sha256: %s\r\nx-amz-date: %s\r\nAuthorization: %s\r\n\r\n",
                        payload_hash, w->amz_date, cm_buf_str(&w->auth));
    return rc ? CM_ENOMEM : 0;
}

static int object_path(struct worker *w, cm_buf *out)
{
    cm_buf_reset(out);
    if (g.url_path)
        return cm_buf_append_str(out, g.url_path);
    if (cm_buf_printf(out, "/%s/", g.bucket))
        return CM_ENOMEM;
    return cm_uri_encode(out, CM_SLICE_STR(w->key), false);
}

struct check_arg {
    uint64_t seed;
};

static bool check_sink(void *arg, uint64_t off, const uint8_t *p, size_t n)
{
    return bench_check(((struct check_arg *)arg)->seed, off, p, n);
}

/* One GET. Returns 0 ok, 1 HTTP/transport error, 2 content mismatch. */
static int do_get(struct worker *w, uint64_t *bytes)
{
    struct check_arg ca;
    struct bench_resp r = {0};
    int rc;

    ca.seed = bench_seed(g.url_path ? g.url_path : w->key);
    if (object_path(w, &w->path) || build_head(w, "GET", cm_buf_str(&w->path), "",
                                              BENCH_EMPTY_SHA256, false, 0))
        return 1;
    cm_buf_reset(&w->resp);
    r.keep = &w->resp;
    r.keep_max = 512;
    if (!g.no_verify) {
        r.sink = check_sink;
        r.sink_arg = &ca;
    }
    rc = bench_conn_request(w->conn, w->head.p, w->head.n, NULL, 0, &r);
    *bytes = r.body_len;
    if (rc || r.status != 200) {
        show_error("GET", cm_buf_str(&w->path), r.status, rc, &w->resp);
        return 1;
    }
    if (r.sink_failed || r.body_len != R.size) {
        if (atomic_fetch_add(&R.errors_shown, 1) < 3)
            fprintf(stderr, "cairn-bench: GET %s: %s (got %llu bytes, want %llu)\n",
                    cm_buf_str(&w->path), r.sink_failed ? "content mismatch" : "wrong length",
                    (unsigned long long)r.body_len, (unsigned long long)R.size);
        return 2;
    }
    return 0;
}

static int do_put(struct worker *w, uint64_t *bytes)
{
    char sha[65];
    const char *ph = BENCH_UNSIGNED;
    struct bench_resp r = {0};
    int rc;

    /* Each key gets its own content when the run reads it back (--verify)
     * or is a mixed workload that GETs keys it wrote; otherwise a worker
     * sends the content it made for its first key again, like a client
     * uploading one file: generating 16 MiB per PUT would take the client
     * about a fifth of a core that the server under test would not get. */
    if (!w->body_filled || g.verify || g.op != OP_PUT) {
        bench_fill(bench_seed(w->key), 0, w->body, R.size);
        w->body_filled = true;
    }
    if (g.payload == PAYLOAD_SIGNED || (g.payload == PAYLOAD_AUTO && R.size <= AUTO_SIGNED_MAX)) {
        bench_sha256_hex(w->body, R.size, sha);
        ph = sha;
    }
    if (object_path(w, &w->path) ||
        build_head(w, "PUT", cm_buf_str(&w->path), "", ph, true, R.size))
        return 1;
    cm_buf_reset(&w->resp);
    r.keep = &w->resp;
    r.keep_max = 512;
    rc = bench_conn_request(w->conn, w->head.p, w->head.n, w->body, R.size, &r);
    *bytes = R.size;
    if (rc || r.status != 200) {
        show_error("PUT", cm_buf_str(&w->path), r.status, rc, &w->resp);
        return 1;
    }
    return 0;
}

/* Finds <tag>value</tag> in the response; returns a pointer to value or NULL. */
static const char *xml_find(const cm_buf *b, const char *tag, size_t *len)
{
    char open[64], close_[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close_, sizeof close_, "</%s>", tag);
    const char *p = memmem(b->p, b->n, open, strlen(open));
    if (!p)
        return NULL;
    p += strlen(open);
    const char *e = memmem(p, b->n - (size_t)(p - (const char *)b->p), close_, strlen(close_));
    if (!e)
        return NULL;
    *len = (size_t)(e - p);
    return p;
}

/* Copies an XML text value into out, undoing the five predefined entities and
 * numeric references below 128. */
static void xml_unescape(const char *p, size_t n, char *out, size_t outsz)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;

    for (size_t i = 0; i < n && o + 1 < outsz;) {
        bool done = false;
        if (p[i] == '&') {
            for (size_t k = 0; k < sizeof ents / sizeof ents[0] && !done; k++) {
                size_t el = strlen(ents[k].ent);
                if (n - i >= el && memcmp(p + i, ents[k].ent, el) == 0) {
                    out[o++] = ents[k].c;
                    i += el;
                    done = true;
                }
            }
            if (!done && n - i > 3 && p[i + 1] == '#') {
                char *end;
                long v = strtol(p + i + 2, &end, p[i + 2] == 'x' ? 0 : 10);
                if (p[i + 2] == 'x')
                    v = strtol(p + i + 3, &end, 16);
                if (*end == ';' && v > 0 && v < 128) {
                    out[o++] = (char)v;
                    i = (size_t)(end - p) + 1;
                    done = true;
                }
            }
        }
        if (!done)
            out[o++] = p[i++];
    }
    out[o] = 0;
}

static size_t count_str(const cm_buf *b, const char *s)
{
    size_t n = 0, sl = strlen(s);
    const uint8_t *p = b->p, *end = b->p + b->n;
    while (p && p < end && (p = memmem(p, (size_t)(end - p), s, sl)) != NULL) {
        n++;
        p += sl;
    }
    return n;
}

/* One ListObjectsV2 page; continues from w->token and wraps to the first page
 * after the last. *keys gets the number of keys on the page. */
static int do_list(struct worker *w, uint64_t *bytes, uint64_t *keys)
{
    struct bench_resp r = {0};
    int rc = 0;

    cm_buf_reset(&w->query);
    if (w->token[0]) {
        rc |= cm_buf_append_str(&w->query, "continuation-token=");
        rc |= cm_uri_encode(&w->query, CM_SLICE_STR(w->token), true);
        rc |= cm_buf_append_byte(&w->query, '&');
    }
    rc |= cm_buf_printf(&w->query, "list-type=2&max-keys=%d&prefix=", g.max_keys);
    rc |= cm_uri_encode(&w->query, CM_SLICE_STR(R.prefix), true);
    cm_buf_reset(&w->path);
    rc |= cm_buf_printf(&w->path, "/%s", g.bucket);
    if (rc || build_head(w, "GET", cm_buf_str(&w->path), cm_buf_str(&w->query),
                         BENCH_EMPTY_SHA256, false, 0))
        return 1;
    cm_buf_reset(&w->resp);
    r.keep = &w->resp;
    rc = bench_conn_request(w->conn, w->head.p, w->head.n, NULL, 0, &r);
    *bytes = r.body_len;
    if (rc || r.status != 200) {
        show_error("LIST", cm_buf_str(&w->path), r.status, rc, &w->resp);
        w->token[0] = 0;
        return 1;
    }
    size_t n = count_str(&w->resp, "<Key>"), tlen;
    bool truncated = count_str(&w->resp, "<IsTruncated>true</IsTruncated>") > 0;
    const char *tok = xml_find(&w->resp, "NextContinuationToken", &tlen);
    *keys = n;
    if (truncated && tok && tlen) {
        xml_unescape(tok, tlen, w->token, sizeof w->token);
    } else {
        w->token[0] = 0;
        if (truncated) {
            show_error("LIST", "(IsTruncated without NextContinuationToken)", 0, -EPROTO, NULL);
            return 1;
        }
    }
    if (truncated && n != (size_t)g.max_keys) {
        if (atomic_fetch_add(&R.errors_shown, 1) < 3)
            fprintf(stderr, "cairn-bench: LIST: truncated page with %zu keys, want %d\n", n,
                    g.max_keys);
        return 2;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (;;) {
        uint64_t t0 = cm_mono_ns(), bytes = 0, keys = 0, ticket = 0;
        enum op op = R.op;
        int rc;

        if (interrupted || (R.deadline_ns && t0 >= R.deadline_ns))
            break;
        if (R.count || R.seq || R.op == OP_PUT) {
            ticket = atomic_fetch_add(&R.next, 1);
            if (R.count && ticket >= R.count)
                break;
        }
        if (op == OP_MIXED)
            op = (int)(rng_next(&w->rng) % 100) < g.mix ? OP_GET : OP_PUT;
        if (op != OP_LIST) {
            uint64_t idx;
            if (R.seq)
                idx = ticket; /* prepare, read-back: each key once */
            else if (R.op == OP_PUT)
                idx = R.nkeys ? ticket % R.nkeys : ticket; /* cycle, or a new key each time */
            else
                idx = rng_next(&w->rng) % R.nkeys; /* GET and mixed: uniform */
            key_name(w, idx);
        }
        switch (op) {
        case OP_GET:
            rc = do_get(w, &bytes);
            break;
        case OP_PUT:
            rc = do_put(w, &bytes);
            break;
        case OP_LIST:
            rc = do_list(w, &bytes, &keys);
            break;
        default:
            rc = 1;
        }
        uint64_t t1 = cm_mono_ns();
        if (t0 < R.start_ns)
            continue;
        w->end_ns = t1;
        if (rc == 1) {
            w->errors++;
            continue;
        }
        if (rc == 2)
            w->verify_errors++;
        w->ops++;
        w->bytes += bytes;
        w->keys_listed += keys;
        w->hist[hist_idx((t1 - t0) / 1000)]++;
    }
    return NULL;
}

struct result {
    enum op op;
    uint64_t size;
    int concurrency;
    double secs;
    uint64_t ops, bytes, errors, verify_errors, keys_listed, connects;
    double p50, p90, p99, max, mean;
    double cpu_s;
    uint64_t *hist;
};

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Runs one phase with n workers; fills res. Returns 0 or a CM_E* code. */
static int run_phase(enum op op, int n, uint64_t count, double duration, double warmup,
                     struct result *res)
{
    struct worker *ws = calloc((size_t)n, sizeof *ws);
    uint64_t now, seed = cm_mono_ns() ^ ((uint64_t)getpid() << 32);
    double cpu0 = cpu_seconds();
    int rc = 0, started = 0;

    if (!ws)
        return CM_ENOMEM;
    memset(res, 0, sizeof *res);
    res->hist = calloc(HIST_N, sizeof *res->hist);
    if (!res->hist) {
        free(ws);
        return CM_ENOMEM;
    }
    R.op = op;
    R.count = count;
    atomic_store(&R.next, 0);
    atomic_store(&R.errors_shown, 0);
    now = cm_mono_ns();
    R.start_ns = now + (uint64_t)(warmup * 1e9);
    R.deadline_ns = count ? 0 : R.start_ns + (uint64_t)(duration * 1e9);

    for (int i = 0; i < n; i++) {
        struct worker *w = &ws[i];
        w->id = i;
        w->rng = seed + (uint64_t)i * 7919;
        w->conn = bench_conn_new(g.host, g.port, g.timeout);
        w->signer = bench_signer_new(g.access_key, g.secret_key, g.region, "s3");
        if (op == OP_PUT || op == OP_MIXED)
            w->body = malloc(R.size ? R.size : 1);
        if (!w->conn || !w->signer || ((op == OP_PUT || op == OP_MIXED) && !w->body)) {
            rc = CM_ENOMEM;
            break;
        }
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            rc = CM_ENOMEM;
            interrupted = 1;
            break;
        }
        started++;
    }
    uint64_t end = R.start_ns;
    for (int i = 0; i < started; i++) {
        struct worker *w = &ws[i];
        pthread_join(w->tid, NULL);
        res->ops += w->ops;
        res->bytes += w->bytes;
        res->errors += w->errors;
        res->verify_errors += w->verify_errors;
        res->keys_listed += w->keys_listed;
        res->connects += bench_conn_connects(w->conn);
        for (int k = 0; k < HIST_N; k++)
            res->hist[k] += w->hist[k];
        if (w->end_ns > end)
            end = w->end_ns;
    }
    for (int i = 0; i < n; i++) {
        struct worker *w = &ws[i];
        bench_conn_free(w->conn);
        bench_signer_free(w->signer);
        cm_buf_free(&w->head);
        cm_buf_free(&w->auth);
        cm_buf_free(&w->path);
        cm_buf_free(&w->query);
        cm_buf_free(&w->resp);
        free(w->body);
    }
    free(ws);

    res->op = op;
    res->size = op == OP_LIST ? 0 : R.size;
    res->concurrency = n;
    res->secs = (double)(end - R.start_ns) / 1e9;
    res->cpu_s = cpu_seconds() - cpu0;
    if (res->secs <= 0)
        res->secs = 1e-9;
    uint64_t total = 0;
    double sum = 0;
    int maxi = 0;
    for (int k = 0; k < HIST_N; k++) {
        total += res->hist[k];
        sum += res->hist[k] * hist_value_us(k);
        if (res->hist[k])
            maxi = k;
    }
    res->p50 = hist_pct_ms(res->hist, total, 50);
    res->p90 = hist_pct_ms(res->hist, total, 90);
    res->p99 = hist_pct_ms(res->hist, total, 99);
    res->max = total ? hist_value_us(maxi) / 1000.0 : 0;
    res->mean = total ? sum / total / 1000.0 : 0;
    return rc;
}

static void print_result(const char *phase, const struct result *r)
{
    double ops_s = r->ops / r->secs, mib_s = r->bytes / r->secs / (1024.0 * 1024.0);

    if (g.json) {
        printf("{\"phase\":\"%s\",\"op\":\"%s\",\"label\":\"%s\",\"size\":%llu,"
               "\"concurrency\":%d,\"seconds\":%.3f,\"ops\":%llu,\"ops_per_s\":%.1f,"
               "\"mib_per_s\":%.2f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
               "\"max_ms\":%.3f,\"mean_ms\":%.3f,\"errors\":%llu,\"verify_errors\":%llu,"
               "\"keys_listed\":%llu,\"connects\":%llu,\"client_cpu_s\":%.2f}\n",
               phase, op_names[r->op], g.label ? g.label : "", (unsigned long long)r->size,
               r->concurrency, r->secs, (unsigned long long)r->ops, ops_s, mib_s, r->p50, r->p90,
               r->p99, r->max, r->mean, (unsigned long long)r->errors,
               (unsigned long long)r->verify_errors, (unsigned long long)r->keys_listed,
               (unsigned long long)r->connects, r->cpu_s);
    } else {
        printf("%-7s %-5s size=%llu c=%d %.2fs ops=%llu ops/s=%.1f MiB/s=%.2f "
               "p50=%.3fms p90=%.3fms p99=%.3fms max=%.3fms errors=%llu verify_errors=%llu",
               phase, op_names[r->op], (unsigned long long)r->size, r->concurrency, r->secs,
               (unsigned long long)r->ops, ops_s, mib_s, r->p50, r->p90, r->p99, r->max,
               (unsigned long long)r->errors, (unsigned long long)r->verify_errors);
        if (r->op == OP_LIST)
            printf(" keys/page=%.1f", r->ops ? (double)r->keys_listed / r->ops : 0.0);
        printf(" connects=%llu client_cpu=%.2fs\n", (unsigned long long)r->connects, r->cpu_s);
    }
    fflush(stdout);
}

/* ---------------------------------------------------------------- prepare */
static int create_bucket(void)
{
    struct worker w = {0};
    struct bench_resp r = {0};
    int rc;

    w.conn = bench_conn_new(g.host, g.port, g.timeout);
    w.signer = bench_signer_new(g.access_key, g.secret_key, g.region, "s3");
    if (!w.conn || !w.signer) {
        rc = CM_ENOMEM;
        goto out;
    }
    cm_buf_printf(&w.path, "/%s", g.bucket);
    rc = build_head(&w, "PUT", cm_buf_str(&w.path), "", BENCH_EMPTY_SHA256, true, 0);
    if (rc)
        goto out;
    r.keep = &w.resp;
    rc = bench_conn_request(w.conn, w.head.p, w.head.n, NULL, 0, &r);
    if (rc) {
        fprintf(stderr, "cairn-bench: PUT /%s: %s\n", g.bucket, strerror(-rc));
        rc = CM_EIO;
    } else if (r.status != 200 && r.status != 409) {
        fprintf(stderr, "cairn-bench: PUT /%s: HTTP %d: %.300s\n", g.bucket, r.status,
                cm_buf_str(&w.resp));
        rc = CM_EIO;
    }
out:
    bench_conn_free(w.conn);
    bench_signer_free(w.signer);
    cm_buf_free(&w.path);
    cm_buf_free(&w.head);
    cm_buf_free(&w.auth);
    cm_buf_free(&w.resp);
    return rc;
}

/* Writes the objects [0, keys) as files DIR/BUCKET/KEY for a static server. */
static int prepare_dir(void)
{
    struct worker w = {0};
    cm_buf path = {0};
    uint8_t *body = malloc(R.size ? R.size : 1);
    int rc = 0;

    if (!body)
        return CM_ENOMEM;
    for (uint64_t i = 0; i < R.nkeys && rc == 0; i++) {
        key_name(&w, i);
        cm_buf_reset(&path);
        cm_buf_printf(&path, "%s/%s/%s", g.prepare_dir, g.bucket, w.key);
        char *slash = strrchr((char *)path.p, '/');
        *slash = 0;
        rc = cm_mkdir_p(cm_buf_str(&path), 0755);
        *slash = '/';
        if (rc) {
            fprintf(stderr, "cairn-bench: mkdir for %s: %s\n", cm_buf_str(&path),
                    cm_strerror(rc));
            break;
        }
        bench_fill(bench_seed(w.key), 0, body, R.size);
        FILE *f = fopen(cm_buf_str(&path), "wb");
        if (!f || fwrite(body, 1, R.size, f) != R.size || fclose(f) != 0) {
            fprintf(stderr, "cairn-bench: write %s: %s\n", cm_buf_str(&path), strerror(errno));
            rc = CM_EIO;
        }
    }
    cm_buf_free(&path);
    free(body);
    return rc;
}

static int do_prepare(void)
{
    struct result res;
    uint64_t t0 = cm_mono_ns();
    int rc, conc = g.prepare_conc;

    if (g.prepare_dir) {
        rc = prepare_dir();
        if (!rc && !g.quiet)
            fprintf(stderr, "cairn-bench: wrote %llu files of %llu bytes under %s/%s/%s\n",
                    (unsigned long long)R.nkeys, (unsigned long long)R.size, g.prepare_dir,
                    g.bucket, R.prefix);
        return rc;
    }
    if ((rc = create_bucket()) != 0)
        return rc;
    /* Cap the body buffers at 512 MiB in total. */
    if (R.size && (uint64_t)conc * R.size > 512ull << 20)
        conc = (int)((512ull << 20) / R.size) > 0 ? (int)((512ull << 20) / R.size) : 1;
    R.seq = true;
    rc = run_phase(OP_PUT, conc, R.nkeys, 0, 0, &res);
    R.seq = false;
    res.secs = (double)(cm_mono_ns() - t0) / 1e9;
    print_result("prepare", &res);
    if (!rc && (res.errors || res.ops != R.nkeys))
        rc = CM_EIO;
    free(res.hist);
    return rc;
}

/* ------------------------------------------------------------------ args */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    double v = strtod(s, &end);
    uint64_t mul = 1;

    if (end == s || v < 0)
        return -1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return -1;
    *out = (uint64_t)(v * (double)mul);
    return 0;
}

static int parse_endpoint(const char *url)
{
    const char *p = url, *hs, *he, *colon;

    if (strncmp(p, "https://", 8) == 0) {
        fprintf(stderr, "cairn-bench: https is not supported (plain-HTTP client by design; "
                        "see doc/bench.md)\n");
        return -1;
    }
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    hs = p;
    if (*p == '[') {
        he = strchr(p, ']');
        if (!he)
            return -1;
        colon = he[1] == ':' ? he + 1 : NULL;
        hs++;
    } else {
        he = p + strcspn(p, ":/");
        colon = *he == ':' ? he : NULL;
    }
    if ((size_t)(he - hs) >= sizeof g.host || he == hs)
        return -1;
    memcpy(g.host, hs, (size_t)(he - hs));
    g.host[he - hs] = 0;
    g.port = colon ? atoi(colon + 1) : 80;
    if (g.port <= 0 || g.port > 65535)
        return -1;
    size_t hplen = colon ? strcspn(p, "/") : (size_t)(he - p) + (*p == '[');
    snprintf(g.hostport, sizeof g.hostport, "%.*s", (int)hplen, p);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: cairn-bench --endpoint http://HOST:PORT [options]\n"
"  --endpoint URL        S3 endpoint or static web server (http only; path-style)\n"
"  --access-key K        default $CAIRN_ACCESS_KEY or $AWS_ACCESS_KEY_ID\n"
"  --secret-key S        default $CAIRN_SECRET_KEY or $AWS_SECRET_ACCESS_KEY\n"
"  --region R            signing region (us-east-1)\n"
"  --bucket B            bucket (bench)\n"
"  --op put|get|mixed|list  operation to time (get)\n"
"  --size N              object size, suffixes k m g = KiB MiB GiB (4k)\n"
"  --concurrency N       threads, one keep-alive connection each (1)\n"
"  --duration S          timed phase length in seconds (10 unless --count)\n"
"  --count N             stop after N operations instead\n"
"  --warmup S            run S seconds before counting (0)\n"
"  --keys N              key space: GET/mixed read keys [0,N); PUT cycles over them\n"
"                        (PUT default: a new key per request); --prepare uploads N (100)\n"
"  --prefix P            key prefix, keys are P%%08u; also the ListObjectsV2 prefix (bench/)\n"
"  --mix PCT             percent GETs in --op mixed (70)\n"
"  --max-keys N          ListObjectsV2 page size (1000)\n"
"  --payload auto|signed|unsigned  x-amz-content-sha256 of PUT bodies: sha256 of the\n"
"                        body, or UNSIGNED-PAYLOAD; auto signs bodies up to 1 MiB (auto)\n"
"  --prepare             create the bucket and upload keys [0,N) first; with no --op\n"
"                        nothing else runs\n"
"  --prepare-concurrency N  connections for --prepare (32)\n"
"  --prepare-dir DIR     write the objects as DIR/BUCKET/KEY files instead (nginx root)\n"
"  --url-path PATH       GET this path on every request (static file; content seed\n"
"                        from its last component); headers stay the same\n"
"  --verify              PUT: read back every written key afterwards and check it\n"
"  --no-verify           GET: do not check the bytes read (checked by default)\n"
"  --json                print one JSON line per phase instead of text\n"
"  --label L             copied into the JSON line\n"
"  --timeout S           socket timeout (60)\n"
"  --wait S              first wait up to S seconds for the endpoint to accept TCP;\n"
"                        with no --op and no --prepare, only wait\n"
"  --free-port           print a free 127.0.0.1 TCP port and exit (for scripts)\n"
"  --self-test           check SigV4 against AWS's published examples and exit\n"
"  --sink PORT --sink-log FILE\n"
"                        be a webhook receiver on 127.0.0.1:PORT until SIGTERM: one line\n"
"                        \"EPOCH_SECONDS KEY\" per event record to FILE (events_bench.sh)\n"
"  -q, --quiet           fewer messages on stderr\n");
}

enum {
    O_ENDPOINT = 256, O_AK, O_SK, O_REGION, O_BUCKET, O_OP, O_SIZE, O_CONC, O_DURATION,
    O_COUNT, O_KEYS, O_PREFIX, O_VERIFY, O_NOVERIFY, O_JSON, O_PREPARE, O_PREPCONC, O_PREPDIR,
    O_URLPATH, O_SELFTEST, O_PAYLOAD, O_MIX, O_MAXKEYS, O_WARMUP, O_TIMEOUT, O_LABEL, O_HELP,
    O_WAIT, O_FREEPORT, O_SINK, O_SINKLOG
};

static const struct option long_opts[] = {
    {"endpoint", 1, NULL, O_ENDPOINT},
    {"access-key", 1, NULL, O_AK},
    {"secret-key", 1, NULL, O_SK},
    {"region", 1, NULL, O_REGION},
    {"bucket", 1, NULL, O_BUCKET},
    {"op", 1, NULL, O_OP},
    {"size", 1, NULL, O_SIZE},
    {"concurrency", 1, NULL, O_CONC},
    {"duration", 1, NULL, O_DURATION},
    {"count", 1, NULL, O_COUNT},
    {"keys", 1, NULL, O_KEYS},
    {"prefix", 1, NULL, O_PREFIX},
    {"verify", 0, NULL, O_VERIFY},
    {"no-verify", 0, NULL, O_NOVERIFY},
    {"json", 0, NULL, O_JSON},
    {"prepare", 0, NULL, O_PREPARE},
    {"prepare-concurrency", 1, NULL, O_PREPCONC},
    {"prepare-dir", 1, NULL, O_PREPDIR},
    {"url-path", 1, NULL, O_URLPATH},
    {"self-test", 0, NULL, O_SELFTEST},
    {"payload", 1, NULL, O_PAYLOAD},
    {"mix", 1, NULL, O_MIX},
    {"max-keys", 1, NULL, O_MAXKEYS},
    {"warmup", 1, NULL, O_WARMUP},
    {"timeout", 1, NULL, O_TIMEOUT},
    {"label", 1, NULL, O_LABEL},
    {"wait", 1, NULL, O_WAIT},
    {"free-port", 0, NULL, O_FREEPORT},
    {"sink", 1, NULL, O_SINK},
    {"sink-log", 1, NULL, O_SINKLOG},
    {"quiet", 0, NULL, 'q'},
    {"help", 0, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static int parse_args(int argc, char **argv)
{
    const char *endpoint = NULL;
    int c;

    g.access_key = getenv("CAIRN_ACCESS_KEY") ? getenv("CAIRN_ACCESS_KEY")
                                               : getenv("AWS_ACCESS_KEY_ID");
    g.secret_key = getenv("CAIRN_SECRET_KEY") ? getenv("CAIRN_SECRET_KEY")
                                               : getenv("AWS_SECRET_ACCESS_KEY");
    while ((c = getopt_long(argc, argv, "q", long_opts, NULL)) != -1) {
        switch (c) {
        case O_ENDPOINT: endpoint = optarg; break;
        case O_AK: g.access_key = optarg; break;
        case O_SK: g.secret_key = optarg; break;
        case O_REGION: g.region = optarg; break;
        case O_BUCKET: g.bucket = optarg; break;
        case O_OP:
            g.op_given = true;
            for (g.op = OP_GET; g.op <= OP_LIST; g.op++)
                if (strcmp(optarg, op_names[g.op]) == 0)
                    break;
            if (g.op > OP_LIST) {
                fprintf(stderr, "cairn-bench: unknown --op %s\n", optarg);
                return -1;
            }
            break;
        case O_SIZE:
            if (parse_size(optarg, &g.size)) {
                fprintf(stderr, "cairn-bench: bad --size %s\n", optarg);
                return -1;
            }
            break;
        case O_CONC: g.concurrency = atoi(optarg); break;
        case O_DURATION: g.duration = atof(optarg); break;
        case O_COUNT: g.count = strtoull(optarg, NULL, 10); break;
        case O_KEYS:
            g.keys = strtoull(optarg, NULL, 10);
            g.keys_given = true;
            break;
        case O_PREFIX: g.prefix = optarg; break;
        case O_VERIFY: g.verify = true; break;
        case O_NOVERIFY: g.no_verify = true; break;
        case O_JSON: g.json = true; break;
        case O_PREPARE: g.prepare = true; break;
        case O_PREPCONC: g.prepare_conc = atoi(optarg); break;
        case O_PREPDIR:
            g.prepare_dir = optarg;
            g.prepare = true;
            break;
        case O_URLPATH: g.url_path = optarg; break;
        case O_SELFTEST: g.self_test = true; break;
        case O_PAYLOAD:
            if (strcmp(optarg, "auto") == 0)
                g.payload = PAYLOAD_AUTO;
            else if (strcmp(optarg, "signed") == 0)
                g.payload = PAYLOAD_SIGNED;
            else if (strcmp(optarg, "unsigned") == 0)
                g.payload = PAYLOAD_UNSIGNED;
            else {
                fprintf(stderr, "cairn-bench: bad --payload %s\n", optarg);
                return -1;
            }
            break;
        case O_MIX: g.mix = atoi(optarg); break;
        case O_MAXKEYS: g.max_keys = atoi(optarg); break;
        case O_WARMUP: g.warmup = atof(optarg); break;
        case O_TIMEOUT: g.timeout = atoi(optarg); break;
        case O_LABEL: g.label = optarg; break;
        case O_WAIT: g.wait = atof(optarg); break;
        case O_FREEPORT: g.free_port = true; break;
        case O_SINK: g.sink_port = atoi(optarg); break;
        case O_SINKLOG: g.sink_log = optarg; break;
        case 'q': g.quiet = 1; break;
        case O_HELP: usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cairn-bench: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    if (g.self_test || g.free_port)
        return 0;
    if (g.sink_port || g.sink_log) {
        if (g.sink_port < 1 || g.sink_port > 65535 || !g.sink_log) {
            fprintf(stderr, "cairn-bench: --sink needs a port and --sink-log FILE\n");
            return -1;
        }
        return 0;
    }
    if (g.concurrency < 1 || g.prepare_conc < 1 || g.max_keys < 1 || g.max_keys > 1000 ||
        g.mix < 0 || g.mix > 100 || g.timeout < 1) {
        fprintf(stderr, "cairn-bench: a numeric option is out of range\n");
        return -1;
    }
    if (g.prepare_dir)
        return 0;
    if (!endpoint) {
        fprintf(stderr, "cairn-bench: --endpoint is required\n");
        return -1;
    }
    if (parse_endpoint(endpoint)) {
        fprintf(stderr, "cairn-bench: bad --endpoint %s\n", endpoint);
        return -1;
    }
    if (!g.access_key || !g.secret_key) {
        fprintf(stderr, "cairn-bench: need --access-key and --secret-key (or CAIRN_ACCESS_KEY"
                        " and CAIRN_SECRET_KEY in the environment)\n");
        return -1;
    }
    if (g.duration <= 0 && !g.count)
        g.duration = 10;
    if (g.keys == 0 && g.op != OP_PUT) {
        fprintf(stderr, "cairn-bench: --keys must be at least 1\n");
        return -1;
    }
    return 0;
}

static int print_free_port(void)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        perror("cairn-bench: free port");
        return 1;
    }
    printf("%d\n", ntohs(sa.sin_port));
    close(fd);
    return 0;
}

/* Polls a TCP connect every 50 ms; returns 0 once one succeeds. */
static int wait_endpoint(double secs)
{
    uint64_t deadline = cm_mono_ns() + (uint64_t)(secs * 1e9);
    do {
        bench_conn_t *c = bench_conn_new(g.host, g.port, 1);
        int rc = c ? bench_conn_connect(c) : CM_ENOMEM;
        bench_conn_free(c);
        if (rc == 0)
            return 0;
        usleep(50 * 1000);
    } while (cm_mono_ns() < deadline && !interrupted);
    return -1;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

int main(int argc, char **argv)
{
    struct result res;
    int rc = 0;
    bool bad = false;

    signal(SIGPIPE, SIG_IGN);
    if (parse_args(argc, argv)) {
        usage(stderr);
        return 2;
    }
    if (g.self_test) {
        int fails = bench_sig_self_test();
        printf("%s\n", fails ? "self-test FAILED" : "self-test passed");
        return fails ? 1 : 0;
    }
    if (g.free_port)
        return print_free_port();
    if (g.sink_port)
        return bench_sink_run(g.sink_port, g.sink_log);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (g.wait > 0) {
        if (wait_endpoint(g.wait)) {
            fprintf(stderr, "cairn-bench: %s:%d not accepting after %.0fs\n", g.host, g.port,
                    g.wait);
            return 1;
        }
        if (!g.op_given && !g.prepare)
            return 0;
    }

    R.size = g.size;
    R.prefix = g.prefix;
    R.nkeys = g.keys;
    if (g.prepare) {
        if ((rc = do_prepare()) != 0) {
            fprintf(stderr, "cairn-bench: prepare failed: %s\n", cm_strerror(rc));
            return 1;
        }
        if (!g.op_given)
            return 0;
    }
    if (g.op == OP_PUT && !g.keys_given)
        R.nkeys = 0;
    rc = run_phase(g.op, g.concurrency, g.count, g.duration, g.warmup, &res);
    if (rc) {
        fprintf(stderr, "cairn-bench: %s\n", cm_strerror(rc));
        return 1;
    }
    print_result("run", &res);
    bad = res.errors || res.verify_errors;
    free(res.hist);

    if (g.verify && g.op == OP_PUT && !interrupted) {
        /* Read back every key the run wrote. */
        uint64_t written = atomic_load(&R.next);
        if (g.count && written > g.count)
            written = g.count;
        if (R.nkeys && written > R.nkeys)
            written = R.nkeys;
        R.seq = true;
        rc = run_phase(OP_GET, g.concurrency, written, 0, 0, &res);
        R.seq = false;
        if (rc == 0)
            print_result("verify", &res);
        bad |= rc || res.errors || res.verify_errors || res.ops != written;
        free(res.hist);
    }
    return bad ? 1 : 0;
}

/* chunkstore/be_node.c - the shard-store backend over cairn-chunkd storage
 * nodes (one node per slot), speaking the signed HTTP protocol of
 * doc/nodes.md with libcurl. Keeps idle curl handles per slot so
 * connections are reused, tracks which nodes are up with a background
 * health probe (claiming fresh nodes for their slot, refusing nodes that
 * belong elsewhere), and counts the events that call for a heal walk. The
 * daemon is chunkd.c; the shared protocol pieces are node_proto.c. */
#include "chunkstore/cs_backend.h"
#include "chunkstore/cs_int.h"
#include "chunkstore/node_proto.h"
#include "common/json.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NODE_CHUNK ((size_t)1 << 20) /* largest PUT ?off= body; appends are buffered up to it */
#define NODE_FREE_MAX 128            /* idle curl handles kept per slot (one per I/O thread) */
#define NODE_CONNECT_MS 1000L
#define NODE_PROBE_MS 1000L     /* a health probe or claim, in total */
#define NODE_SMALL_MS 5000L     /* stat, remove, blob remove: in total */
#define NODE_SYNC_MS 30000L     /* commit, blob put: the node fsyncs before answering */
#define NODE_RECOVER_MS 120000L /* recover walks the node's whole directory */
#define NODE_VERIFY_MS 600000L  /* verify reads a whole shard on the node */
#define NODE_DATA_MAX_MS 120000L /* any data request, in total */
#define NODE_LOW_SPEED 1048576L  /* data requests: abort below 1 MiB/s ... */
#define NODE_LOW_TIME 2L         /* ... sustained for 2 s */
#define NODE_LIST_STALL 10L      /* listings: abort after 10 s without a byte */
#define NODE_DOWN_EVERY_MS 500   /* probe period of a node marked down */
#define NODE_UP_EVERY_MS 2000    /* probe period of a node that is up */
#define NODE_REPLY_MAX 65536     /* JSON replies and error bodies kept */

/* A slot's state. Only the probe thread moves a slot to ST_UP or
 * ST_REFUSED; any request may move ST_UP to ST_DOWN. */
enum { ST_DOWN = 0, ST_UP = 1, ST_REFUSED = 2 };

struct node_slot {
    char *url;  /* immutable: "http://host:port", no trailing '/' */
    int state;  /* atomic: ST_* (drive_up reads it lock-free) */
    pthread_mutex_t mu; /* guards free[] and nfree */
    CURL *free[NODE_FREE_MAX]; /* idle handles, each with its live connection */
    int nfree;
    /* Probe thread only (and open, before the thread starts): */
    char id[33];            /* the node's id when last seen ("" before that) */
    uint64_t next_probe_ms; /* monotonic ms of the next probe */
};

/* The backend. Immutable after open except where marked. */
struct be_node {
    struct cs__be base;
    int n;                   /* slots */
    struct node_slot *slots; /* n slots */
    cm_slice secret;         /* malloc()ed copy; wiped at close */
    char cluster[17];        /* cs__node_cluster_id(secret) */
    uint64_t epoch;          /* atomic: heal-walk events seen */
    pthread_mutex_t mu;      /* guards stop; cv wakes the probe thread */
    pthread_cond_t cv;       /* CLOCK_MONOTONIC */
    int stop;
    int started; /* the probe thread runs (join at close) */
    pthread_t probe;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t mono_ms(void)
{
    return cm_mono_ns() / 1000000;
}

static int slot_state(const struct node_slot *s)
{
    return __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
}

/* Marks slot d down after a failed request (an ST_UP slot only: a refused
 * slot stays refused). Logs the transition once. */
static void mark_down(struct be_node *b, int d, const char *why)
{
    int up = ST_UP;
    if (__atomic_compare_exchange_n(&b->slots[d].state, &up, ST_DOWN, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        cm_log(CM_LOG_WARN, "node %s (slot %d) is down: %s", b->slots[d].url, d, why);
}

/* ------------------------------------------------------------ handles */

static CURL *handle_get(struct node_slot *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->nfree)
        h = s->free[--s->nfree];
    pthread_mutex_unlock(&s->mu);
    return h ? h : curl_easy_init();
}

static void handle_put(struct node_slot *s, CURL *h)
{
    pthread_mutex_lock(&s->mu);
    if (s->nfree < NODE_FREE_MAX) {
        s->free[s->nfree++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (h)
        curl_easy_cleanup(h);
}

/* ------------------------------------------------------------ one request */

/* A listing parsed as it streams: one name per line. */
struct lines {
    int blobs; /* 1: ids (blob list), 0: shard names */
    void (*shard_fn)(void *arg, const uint8_t id[CS_ID_LEN], int index);
    void (*blob_fn)(void *arg, const uint8_t id[CS_ID_LEN]);
    void *arg;
    char carry[64]; /* the current line so far */
    size_t ncarry;
    int bad; /* a line was not a valid name */
};

enum call_kind { K_PROBE, K_SMALL, K_SYNC, K_DATA, K_LIST, K_RECOVER, K_VERIFY };

/* One request to one node and what came back. Lives on the caller's stack. */
struct call {
    /* request */
    const char *method;
    char path[CS__NODE_PATH_MAX];
    const void *body;
    size_t nbody;
    enum call_kind kind;
    int any_state; /* send even if the slot is not up (probe, claim) */
    char range[64]; /* "Range: bytes=a-b" or "" */
    /* response sinks: at most one of iov, out, lines */
    const struct iovec *iov;
    int niov;
    size_t iov_total;
    cm_buf *out;
    size_t out_base, out_max; /* out may grow to out_base + out_max bytes */
    struct lines *lines;
    /* results */
    CURL *h;
    long status;
    size_t got;    /* body bytes delivered to iov */
    int overflow;  /* the node sent more than the sink takes */
    int has_shard_hdr;
    uint8_t shard_hdr[CS__HDR_LEN];
    int has_xlen;
    uint64_t xlen;
    cm_buf err; /* the body of a non-2xx answer (capped) */
};

static void lines_feed_line(struct lines *l, const char *s, size_t n)
{
    uint8_t id[CS_ID_LEN];
    int index;
    if (n == 0)
        return;
    if (l->blobs) {
        if (cs__node_id_parse(CM_SLICE(s, n), id) == 0)
            l->blob_fn(l->arg, id);
        else
            l->bad = 1;
    } else {
        if (cs__node_name_parse(CM_SLICE(s, n), id, &index) == 0)
            l->shard_fn(l->arg, id, index);
        else
            l->bad = 1;
    }
}

static void lines_feed(struct lines *l, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            lines_feed_line(l, l->carry, l->ncarry);
            l->ncarry = 0;
        } else if (l->ncarry < sizeof l->carry) {
            l->carry[l->ncarry++] = p[i];
        } else {
            l->bad = 1; /* too long for any name: parsed (and refused) truncated */
        }
    }
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = size * nmemb;

    if (!c->status)
        curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->status < 200 || c->status > 299) {
        size_t room = c->err.n < NODE_REPLY_MAX ? NODE_REPLY_MAX - c->err.n : 0;
        if (room)
            cm_buf_append(&c->err, p, n < room ? n : room);
        return n;
    }
    if (c->iov) {
        size_t done = 0, pos = 0;
        if (c->got + n > c->iov_total) {
            c->overflow = 1;
            return 0;
        }
        for (int i = 0; i < c->niov && done < n; i++) {
            size_t len = c->iov[i].iov_len;
            if (c->got + done < pos + len) {
                size_t at = c->got + done - pos, k = len - at < n - done ? len - at : n - done;
                memcpy((uint8_t *)c->iov[i].iov_base + at, p + done, k);
                done += k;
            }
            pos += len;
        }
        c->got += n;
    } else if (c->out) {
        if (c->out->n - c->out_base + n > c->out_max) {
            c->overflow = 1;
            return 0;
        }
        if (cm_buf_append(c->out, p, n))
            return 0;
    } else if (c->lines) {
        lines_feed(c->lines, p, n);
    }
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = size * nmemb, k;
    cm_slice line = CM_SLICE(p, n), v;

    while (line.n && (line.p[line.n - 1] == '\n' || line.p[line.n - 1] == '\r'))
        line.n--;
    const uint8_t *colon = memchr(line.p, ':', line.n);
    if (!colon)
        return n;
    k = (size_t)(colon - line.p);
    v = CM_SLICE(colon + 1, line.n - k - 1);
    while (v.n && (v.p[0] == ' ' || v.p[0] == '\t')) {
        v.p++;
        v.n--;
    }
    cm_slice name = CM_SLICE(line.p, k);
    if (cm_slice_case_eq_str(name, CS__NODE_HDR_SHARD)) {
        if (v.n == 2 * CS__HDR_LEN &&
            cm_hex_decode((const char *)v.p, v.n, c->shard_hdr) == 0)
            c->has_shard_hdr = 1;
    } else if (cm_slice_case_eq_str(name, CS__NODE_HDR_LEN) && v.n && v.n < 20) {
        uint64_t x = 0;
        size_t i;
        for (i = 0; i < v.n && v.p[i] >= '0' && v.p[i] <= '9'; i++)
            x = x * 10 + (uint64_t)(v.p[i] - '0');
        if (i == v.n) {
            c->xlen = x;
            c->has_xlen = 1;
        }
    }
    return n;
}

/* Maps an HTTP status to a CM code (0 for 2xx). */
static int status_rc(long st)
{
    if (st >= 200 && st <= 299)
        return 0;
    switch (st) {
    case 400:
        return CM_EINVAL;
    case 403:
        return CM_EAUTH;
    case 404:
        return CM_ENOTFOUND;
    case 409:
        return CM_ECONFLICT;
    case 413:
        return CM_ETOOBIG;
    case 416:
        return CM_ERANGE;
    case 507:
        return CM_ENOSPACE;
    }
    return st >= 500 ? CM_EUNAVAIL : CM_EIO;
}

static void set_timeouts(CURL *h, enum call_kind kind)
{
    long total = 0;
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, kind == K_PROBE ? NODE_PROBE_MS
                                                                    : NODE_CONNECT_MS);
    switch (kind) {
    case K_PROBE:
        total = NODE_PROBE_MS;
        break;
    case K_SMALL:
        total = NODE_SMALL_MS;
        break;
    case K_SYNC:
        total = NODE_SYNC_MS;
        break;
    case K_RECOVER:
        total = NODE_RECOVER_MS;
        break;
    case K_VERIFY:
        total = NODE_VERIFY_MS;
        break;
    case K_DATA:
        total = NODE_DATA_MAX_MS;
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, NODE_LOW_SPEED);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, NODE_LOW_TIME);
        break;
    case K_LIST:
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, NODE_LIST_STALL);
        break;
    }
    if (total)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total);
}

/* Sends c to slot d and fills its results. Returns 0 for a 2xx answer or a
 * CM_E* code; CM_EUNAVAIL (no answer, or 5xx) also marks the slot down. */
static int call_node(struct be_node *b, int d, struct call *c)
{
    struct node_slot *s = &b->slots[d];
    struct curl_slist *hl = NULL, *t;
    char url[CS__NODE_PATH_MAX + 512], date[24], sha[65], auth[96], line[160];
    CURLcode cc;
    int rc;

    if (!c->any_state && slot_state(s) != ST_UP)
        return CM_EUNAVAIL;
    if (snprintf(url, sizeof url, "%s%s", s->url, c->path) >= (int)sizeof url)
        return CM_EINVAL;
    rc = cs__node_sign_request(b->secret, c->method, c->path, (int64_t)time(NULL), c->body,
                               c->nbody, date, sha, auth);
    if (rc)
        return rc;
    if (!(c->h = handle_get(s)))
        return CM_ENOMEM;
    CURL *h = c->h;
    curl_easy_reset(h);

    snprintf(line, sizeof line, "%s: %s", CS__NODE_HDR_DATE, date);
    hl = curl_slist_append(hl, line);
    snprintf(line, sizeof line, "%s: %s", CS__NODE_HDR_SHA, sha);
    if (hl && (t = curl_slist_append(hl, line)))
        hl = t;
    snprintf(line, sizeof line, "%s: %s", CS__NODE_HDR_AUTH, auth);
    if (hl && (t = curl_slist_append(hl, line)))
        hl = t;
    if (hl && (t = curl_slist_append(hl, "Expect:")))
        hl = t;
    if (hl && c->body && (t = curl_slist_append(hl, "Content-Type: application/octet-stream")))
        hl = t;
    if (hl && c->range[0] && (t = curl_slist_append(hl, c->range)))
        hl = t;
    cm_wipe(auth, sizeof auth);
    cm_wipe(line, sizeof line);
    if (!hl) {
        handle_put(s, h);
        return CM_ENOMEM;
    }

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn-gateway/0.1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    set_timeouts(h, c->kind);
    if (!strcmp(c->method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(c->method, "GET")) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
        if (strcmp(c->method, "DELETE")) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? (const char *)c->body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->nbody);
        }
    }
    c->status = 0;
    cc = curl_easy_perform(h);
    curl_slist_free_all(hl);
    if (cc != CURLE_OK) {
        c->h = NULL;
        curl_easy_cleanup(h); /* its connection is in an unknown state */
        if (c->overflow) {
            cm_log(CM_LOG_ERROR, "node %s: %s %s: answer longer than asked for", s->url,
                   c->method, c->path);
            return CM_ECORRUPT;
        }
        if (cc == CURLE_WRITE_ERROR)
            return CM_ENOMEM;
        if (!c->any_state)
            mark_down(b, d, curl_easy_strerror(cc));
        cm_log(CM_LOG_DEBUG, "node %s: %s %s: %s", s->url, c->method, c->path,
               curl_easy_strerror(cc));
        return CM_EUNAVAIL;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    if (cm_log_level >= CM_LOG_DEBUG) {
        long nconn = 0;
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nconn);
        if (nconn)
            cm_log(CM_LOG_DEBUG, "node %s: new connection", s->url);
    }
    c->h = NULL;
    handle_put(s, h);
    rc = status_rc(c->status);
    if (rc && c->any_state) {
        /* Probes: probe() logs the state change once, not every failure. */
        cm_log(CM_LOG_DEBUG, "node %s: %s %s: %ld %s", s->url, c->method, c->path, c->status,
               cm_buf_str(&c->err));
    } else if (rc == CM_EUNAVAIL) {
        if (!c->any_state)
            mark_down(b, d, "server error");
        cm_log(CM_LOG_WARN, "node %s: %s %s: %ld %s", s->url, c->method, c->path, c->status,
               cm_buf_str(&c->err));
    } else if (rc == CM_EAUTH) {
        cm_log(CM_LOG_ERROR, "node %s: %s %s: refused our signature (wrong cluster secret or "
                             "clock off by more than %d s?): %s",
               s->url, c->method, c->path, CS__NODE_SKEW, cm_buf_str(&c->err));
    } else if (rc == CM_EINVAL || rc == CM_EIO) {
        cm_log(CM_LOG_ERROR, "node %s: %s %s: %ld %s", s->url, c->method, c->path, c->status,
               cm_buf_str(&c->err));
    }
    return rc;
}

/* Runs a call and frees its error buffer. */
static int run(struct be_node *b, int d, struct call *c)
{
    int rc = call_node(b, d, c);
    cm_buf_free(&c->err);
    return rc;
}

static int check_drive(struct be_node *b, int d)
{
    return d >= 0 && d < b->n ? 0 : CM_EINVAL;
}

/* ------------------------------------------------------------ health */

struct health {
    char id[33];
    int slot;
    char cluster[65];
};

static int get_health(struct be_node *b, int d, struct health *out)
{
    struct call c = {.method = "GET", .kind = K_PROBE, .any_state = 1};
    cm_buf body = {0};
    cm_json_doc *doc = NULL;
    const cm_json *root;
    const char *id, *cluster;
    uint8_t raw[CS_ID_LEN];
    double slot;
    int rc;

    strcpy(c.path, "/v1/health");
    c.out = &body;
    c.out_max = NODE_REPLY_MAX;
    if ((rc = run(b, d, &c)) != 0)
        goto out;
    rc = CM_ECORRUPT;
    if (cm_json_parse(cm_buf_slice(&body), &doc) || !(root = cm_json_root(doc)))
        goto out;
    id = cm_json_get_str(root, "id");
    cluster = cm_json_get_str(root, "cluster");
    slot = cm_json_get_num(root, "slot", -2);
    if (!id || !cluster || strlen(cluster) > 64 || cs__node_id_parse(CM_SLICE_STR(id), raw) ||
        slot < -1 || slot > CS__MAX_DRIVES || slot != (int)slot)
        goto out;
    memcpy(out->id, id, 33);
    out->slot = (int)slot;
    strcpy(out->cluster, cluster);
    rc = 0;
out:
    cm_json_doc_free(doc);
    cm_buf_free(&body);
    return rc;
}

static int claim(struct be_node *b, int d)
{
    struct call c = {.method = "POST", .kind = K_PROBE, .any_state = 1};
    snprintf(c.path, sizeof c.path, "/v1/claim?slot=%d&cluster=%s", d, b->cluster);
    return run(b, d, &c);
}

/* Probes slot d once: health, claim if fresh, refuse if it belongs to
 * another slot or cluster; counts down->up and replaced-node events in the
 * epoch unless initial (the probes at open). Probe thread (or open) only. */
static void probe(struct be_node *b, int d, int initial)
{
    struct node_slot *s = &b->slots[d];
    int old = slot_state(s), rc, replaced;
    struct health h;

    if ((rc = get_health(b, d, &h)) != 0) {
        const char *hint = rc == CM_EAUTH ? " (it refuses our signature: another cluster "
                                            "secret, or clocks more than 300 s apart)"
                                          : "";
        if (old != ST_DOWN) {
            __atomic_store_n(&s->state, ST_DOWN, __ATOMIC_RELEASE);
            cm_log(CM_LOG_WARN, "node %s (slot %d) is down: %s%s", s->url, d, cm_strerror(rc),
                   hint);
        } else if (initial) {
            cm_log(CM_LOG_WARN, "node %s (slot %d) does not answer: %s%s", s->url, d,
                   cm_strerror(rc), hint);
        }
        return;
    }
    replaced = s->id[0] && strcmp(s->id, h.id) != 0;
    if (replaced)
        cm_log(CM_LOG_WARN, "node %s (slot %d) has a new id %s (was %s): its directory was "
                            "replaced; a heal walk will refill it",
               s->url, d, h.id, s->id);
    if (h.slot == -1) {
        if ((rc = claim(b, d)) != 0) {
            cm_log(CM_LOG_ERROR, "node %s (slot %d): claim failed: %s", s->url, d,
                   cm_strerror(rc));
            __atomic_store_n(&s->state, rc == CM_ECONFLICT ? ST_REFUSED : ST_DOWN,
                             __ATOMIC_RELEASE);
            return;
        }
        cm_log(CM_LOG_INFO, "node %s (id %s) claimed for slot %d", s->url, h.id, d);
        h.slot = d;
        strcpy(h.cluster, b->cluster);
    }
    if (h.slot != d || strcmp(h.cluster, b->cluster) != 0) {
        if (old != ST_REFUSED || replaced || initial)
            cm_log(CM_LOG_ERROR, "node %s (id %s) holds slot %d of cluster %s, not slot %d of "
                                 "cluster %s: refusing it (never written to)",
                   s->url, h.id, h.slot, h.cluster[0] ? h.cluster : "(none)", d, b->cluster);
        memcpy(s->id, h.id, sizeof s->id);
        __atomic_store_n(&s->state, ST_REFUSED, __ATOMIC_RELEASE);
        return;
    }
    memcpy(s->id, h.id, sizeof s->id);
    if (old == ST_UP && !replaced)
        return;
    /* Up now. A request may have marked it down meanwhile: then leave it
     * down, and the next probe counts it. */
    if (old == ST_UP ||
        __atomic_compare_exchange_n(&s->state, &old, ST_UP, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        if (!initial) {
            uint64_t e = __atomic_add_fetch(&b->epoch, 1, __ATOMIC_ACQ_REL);
            cm_log(CM_LOG_INFO, "node %s (slot %d) is up (epoch %llu)", s->url, d,
                   (unsigned long long)e);
        }
    }
}

static void *probe_main(void *arg)
{
    struct be_node *b = arg;
    struct timespec ts;

    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        pthread_mutex_unlock(&b->mu);
        for (int d = 0; d < b->n; d++) {
            struct node_slot *s = &b->slots[d];
            uint64_t now = mono_ms();
            int st = slot_state(s);
            if (st == ST_UP && now < s->next_probe_ms)
                continue;
            if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE))
                break;
            probe(b, d, 0);
            s->next_probe_ms = mono_ms() + NODE_UP_EVERY_MS;
        }
        pthread_mutex_lock(&b->mu);
        if (b->stop)
            break;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)NODE_DOWN_EVERY_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ------------------------------------------------------------ table ops */

static struct be_node *BN(struct cs__be *be)
{
    return (struct be_node *)be;
}

static int op_ndrives(struct cs__be *be)
{
    return BN(be)->n;
}

static const char *op_drive_name(struct cs__be *be, int d)
{
    struct be_node *b = BN(be);
    return d >= 0 && d < b->n ? b->slots[d].url : "(no such node)";
}

static int op_drive_up(struct cs__be *be, int d)
{
    struct be_node *b = BN(be);
    return d >= 0 && d < b->n && slot_state(&b->slots[d]) == ST_UP;
}

static uint64_t op_epoch(struct cs__be *be)
{
    return __atomic_load_n(&BN(be)->epoch, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------ writing */

struct wh {
    struct be_node *b;
    int d;
    int heal;
    char name[CS__NODE_NAME_MAX];
    uint8_t *buf;     /* appends not sent yet; grows up to NODE_CHUNK */
    size_t cap;       /* bytes allocated at buf */
    size_t n;         /* bytes buffered */
    uint64_t off;     /* shard offset of buf[0] */
    int sent;         /* a PUT reached the node (the partial exists) */
    int err;          /* sticky: the first failure */
};

static int w_flush(struct wh *w)
{
    struct call c = {.method = "PUT", .kind = K_DATA};
    int rc;

    if (w->err)
        return w->err;
    if (w->n == 0 && w->sent)
        return 0;
    snprintf(c.path, sizeof c.path, "/v1/shard/%s?off=%llu%s", w->name,
             (unsigned long long)w->off, w->heal ? "&heal=1" : "");
    c.body = w->buf ? w->buf : (const uint8_t *)"";
    c.nbody = w->n;
    if ((rc = run(w->b, w->d, &c)) != 0)
        return w->err = rc;
    w->off += w->n;
    w->n = 0;
    w->sent = 1;
    return 0;
}

static int op_w_open(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, int heal,
                     void **out)
{
    struct be_node *b = BN(be);
    struct wh *w;

    if (check_drive(b, d) || index < 0 || index > CS__NODE_MAX_INDEX)
        return CM_EINVAL;
    if (!(w = calloc(1, sizeof *w)))
        return CM_ENOMEM;
    w->b = b;
    w->d = d;
    w->heal = heal;
    w->off = CS__HDR_LEN;
    cs__node_name_format(id, index, w->name);
    *out = w;
    return 0;
}

/* flags (CS__APPEND_ROOM) do not matter here: the bytes are copied into
 * the request buffer either way. */
static int op_w_append(void *h, uint64_t off, const struct iovec *iov, int niov, unsigned flags)
{
    struct wh *w = h;
    int rc;

    (void)flags;
    if (w->err)
        return w->err;
    if (w->n && off != w->off + w->n && (rc = w_flush(w)) != 0)
        return rc;
    if (w->n == 0)
        w->off = off;
    size_t total = 0;
    for (int i = 0; i < niov; i++)
        total += iov[i].iov_len;
    if (w->n + total > w->cap && w->cap < NODE_CHUNK) {
        size_t cap = w->cap ? w->cap : 64 * 1024;
        while (cap < w->n + total && cap < NODE_CHUNK)
            cap *= 2;
        if (cap > NODE_CHUNK)
            cap = NODE_CHUNK;
        uint8_t *nb = realloc(w->buf, cap);
        if (!nb)
            return w->err = CM_ENOMEM;
        w->buf = nb;
        w->cap = cap;
    }
    for (int i = 0; i < niov; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left) {
            size_t k = w->cap - w->n < left ? w->cap - w->n : left;
            memcpy(w->buf + w->n, p, k);
            w->n += k;
            p += k;
            left -= k;
            if (w->n == NODE_CHUNK && (rc = w_flush(w)) != 0)
                return rc;
        }
    }
    return 0;
}

static int op_w_commit(void *h, const uint8_t hdr[64])
{
    struct wh *w = h;
    struct call c = {.method = "POST", .kind = K_SYNC};
    int rc;

    if ((rc = w_flush(w)) != 0) /* also creates the partial of an empty shard */
        return rc;
    snprintf(c.path, sizeof c.path, "/v1/shard/%s?commit%s", w->name, w->heal ? "&heal=1" : "");
    c.body = hdr;
    c.nbody = CS__HDR_LEN;
    return run(w->b, w->d, &c);
}

static void op_w_close(void *h, int remove)
{
    struct wh *w = h;
    if (!w)
        return;
    if (remove) {
        struct call c = {.method = "DELETE", .kind = K_SMALL};
        int rc;
        snprintf(c.path, sizeof c.path, "/v1/shard/%s%s", w->name, w->heal ? "?heal=1" : "");
        if ((rc = run(w->b, w->d, &c)) != 0)
            cm_log(CM_LOG_WARN, "node %s: cannot remove %s%s: %s (left for recover)",
                   w->b->slots[w->d].url, w->name, w->heal ? ".heal" : "", cm_strerror(rc));
    }
    free(w->buf);
    free(w);
}

/* ------------------------------------------------------------ reading */

struct rh {
    struct be_node *b;
    int d;
    char name[CS__NODE_NAME_MAX];
    int has_hdr;
    uint8_t hdr[CS__HDR_LEN];
};

static int op_r_open(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, void **out)
{
    struct be_node *b = BN(be);
    struct rh *r;

    if (check_drive(b, d) || index < 0 || index > CS__NODE_MAX_INDEX)
        return CM_EINVAL;
    if (!(r = calloc(1, sizeof *r)))
        return CM_ENOMEM;
    r->b = b;
    r->d = d;
    cs__node_name_format(id, index, r->name);
    *out = r;
    return 0;
}

/* GET bytes [off, off + total) into iov; returns the count (short at end
 * of file, 0 past it) and keeps the shard header the node sends along. */
static ssize_t r_get(struct rh *r, uint64_t off, const struct iovec *iov, int niov, size_t total)
{
    struct call c = {.method = "GET", .kind = K_DATA};
    int rc;

    snprintf(c.path, sizeof c.path, "/v1/shard/%s", r->name);
    snprintf(c.range, sizeof c.range, "Range: bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + total - 1));
    c.iov = iov;
    c.niov = niov;
    c.iov_total = total;
    rc = run(r->b, r->d, &c);
    if (c.has_shard_hdr) {
        memcpy(r->hdr, c.shard_hdr, CS__HDR_LEN);
        r->has_hdr = 1;
    }
    if (rc == CM_ERANGE)
        return 0; /* 416: off is at or past the end */
    if (rc)
        return rc;
    if (c.status != 206) {
        cm_log(CM_LOG_ERROR, "node %s: GET %s: status %ld to a range request",
               r->b->slots[r->d].url, r->name, c.status);
        return CM_EIO;
    }
    return (ssize_t)c.got;
}

static ssize_t op_r_read(void *h, uint64_t off, const struct iovec *iov, int niov)
{
    struct rh *r = h;
    size_t total = 0;

    for (int i = 0; i < niov; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    return r_get(r, off, iov, niov, total);
}

static int op_r_header(void *h, uint8_t hdr[64])
{
    struct rh *r = h;

    if (!r->has_hdr) {
        uint8_t tmp[CS__HDR_LEN];
        struct iovec iov = {tmp, sizeof tmp};
        ssize_t n = r_get(r, 0, &iov, 1, sizeof tmp);
        if (n < 0)
            return (int)n;
        if (!r->has_hdr) {
            if (n != CS__HDR_LEN)
                return CM_ECORRUPT; /* shorter than a header */
            memcpy(r->hdr, tmp, CS__HDR_LEN);
            r->has_hdr = 1;
        }
    }
    memcpy(hdr, r->hdr, CS__HDR_LEN);
    return 0;
}

static void op_r_close(void *h)
{
    free(h);
}

/* ------------------------------------------------------------ other shard ops */

static int op_stat(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, uint64_t *len)
{
    struct be_node *b = BN(be);
    struct call c = {.method = "HEAD", .kind = K_SMALL};
    char name[CS__NODE_NAME_MAX];
    int rc;

    if (check_drive(b, d) || index < 0 || index > CS__NODE_MAX_INDEX)
        return CM_EINVAL;
    cs__node_name_format(id, index, name);
    snprintf(c.path, sizeof c.path, "/v1/shard/%s", name);
    if ((rc = run(b, d, &c)) != 0)
        return rc;
    if (!c.has_xlen)
        return CM_ECORRUPT;
    *len = c.xlen;
    return 0;
}

static int op_verify(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index,
                     struct cs__verify *out)
{
    struct be_node *b = BN(be);
    struct call c = {.method = "GET", .kind = K_VERIFY};
    char name[CS__NODE_NAME_MAX];
    cm_buf body = {0};
    cm_json_doc *doc = NULL;
    const cm_json *root, *bh;
    const char *hdr;
    struct cs__verify v;
    int rc;

    if (check_drive(b, d) || index < 0 || index > CS__NODE_MAX_INDEX)
        return CM_EINVAL;
    cs__node_name_format(id, index, name);
    snprintf(c.path, sizeof c.path, "/v1/verify/%s", name);
    c.out = &body;
    c.out_max = NODE_REPLY_MAX;
    if ((rc = run(b, d, &c)) != 0)
        goto out;
    rc = CM_ECORRUPT;
    if (cm_json_parse(cm_buf_slice(&body), &doc) || !(root = cm_json_root(doc)))
        goto out;
    hdr = cm_json_get_str(root, "hdr");
    double len = cm_json_get_num(root, "len", -1), bad = cm_json_get_num(root, "bad_blocks", -1),
           first = cm_json_get_num(root, "first_bad", -1);
    if (!hdr || strlen(hdr) != 2 * CS__HDR_LEN || len < 0 || bad < 0 || first < 0 ||
        cm_hex_decode(hdr, 2 * CS__HDR_LEN, v.hdr))
        goto out;
    v.len = (uint64_t)len;
    v.bad_blocks = (uint64_t)bad;
    v.first_bad = (uint64_t)first;
    bh = cm_json_get(root, "bad_header");
    if (bh && bh->type == CM_JSON_BOOL && bh->b && v.bad_blocks == 0) {
        v.bad_blocks = 1; /* a bad header makes the whole shard unusable */
        v.first_bad = 0;
    }
    *out = v;
    rc = 0;
out:
    cm_json_doc_free(doc);
    cm_buf_free(&body);
    return rc;
}

static int op_remove(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index)
{
    struct be_node *b = BN(be);
    struct call c = {.method = "DELETE", .kind = K_SMALL};
    char name[CS__NODE_NAME_MAX];

    if (check_drive(b, d) || index < 0 || index > CS__NODE_MAX_INDEX)
        return CM_EINVAL;
    cs__node_name_format(id, index, name);
    snprintf(c.path, sizeof c.path, "/v1/shard/%s", name);
    return run(b, d, &c);
}

static int list_common(struct be_node *b, int d, struct lines *l)
{
    struct call c = {.method = "GET", .kind = K_LIST};
    int rc;

    if (check_drive(b, d))
        return CM_EINVAL;
    strcpy(c.path, l->blobs ? "/v1/blobs" : "/v1/shards");
    c.lines = l;
    if ((rc = run(b, d, &c)) != 0)
        return rc;
    if (l->ncarry)
        lines_feed(l, "\n", 1); /* a last line without its newline */
    if (l->bad)
        cm_log(CM_LOG_WARN, "node %s: %s listed names that are not valid (skipped)",
               b->slots[d].url, c.path);
    return 0;
}

static int op_list(struct cs__be *be, int d,
                   void (*fn)(void *arg, const uint8_t id[CS_ID_LEN], int index), void *arg)
{
    struct lines l = {.blobs = 0, .shard_fn = fn, .arg = arg};
    return list_common(BN(be), d, &l);
}

static int op_recover(struct cs__be *be, int d)
{
    struct be_node *b = BN(be);
    struct call c = {.method = "POST", .kind = K_RECOVER};

    if (check_drive(b, d))
        return CM_EINVAL;
    strcpy(c.path, "/v1/recover");
    return run(b, d, &c);
}

/* ------------------------------------------------------------ blobs */

static int op_blob_put(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], const void *p,
                       size_t n)
{
    struct be_node *b = BN(be);
    struct call c = {.method = "PUT", .kind = K_SYNC};
    char hex[2 * CS_ID_LEN + 1];

    if (check_drive(b, d))
        return CM_EINVAL;
    if (n > CS__NODE_BODY_MAX)
        return CM_ETOOBIG;
    cm_hex_encode(id, CS_ID_LEN, hex);
    snprintf(c.path, sizeof c.path, "/v1/blob/%s", hex);
    c.body = n ? p : "";
    c.nbody = n;
    return run(b, d, &c);
}

static int op_blob_get(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], cm_buf *out)
{
    struct be_node *b = BN(be);
    struct call c = {.method = "GET", .kind = K_DATA};
    char hex[2 * CS_ID_LEN + 1];
    size_t base = out->n;
    int rc;

    if (check_drive(b, d))
        return CM_EINVAL;
    cm_hex_encode(id, CS_ID_LEN, hex);
    snprintf(c.path, sizeof c.path, "/v1/blob/%s", hex);
    c.out = out;
    c.out_base = base;
    c.out_max = CS__NODE_BODY_MAX;
    rc = run(b, d, &c);
    if (rc)
        out->n = base; /* unchanged on failure */
    return rc;
}

static int op_blob_remove(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN])
{
    struct be_node *b = BN(be);
    struct call c = {.method = "DELETE", .kind = K_SMALL};
    char hex[2 * CS_ID_LEN + 1];

    if (check_drive(b, d))
        return CM_EINVAL;
    cm_hex_encode(id, CS_ID_LEN, hex);
    snprintf(c.path, sizeof c.path, "/v1/blob/%s", hex);
    return run(b, d, &c);
}

static int op_blob_list(struct cs__be *be, int d,
                        void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg)
{
    struct lines l = {.blobs = 1, .blob_fn = fn, .arg = arg};
    return list_common(BN(be), d, &l);
}

/* ------------------------------------------------------------ open/close */

static void op_close(struct cs__be *be)
{
    struct be_node *b = BN(be);
    if (!b)
        return;
    if (b->started) {
        pthread_mutex_lock(&b->mu);
        __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->probe, NULL);
    }
    for (int d = 0; d < b->n; d++) {
        struct node_slot *s = &b->slots[d];
        for (int i = 0; i < s->nfree; i++)
            curl_easy_cleanup(s->free[i]);
        pthread_mutex_destroy(&s->mu);
        free(s->url);
    }
    free(b->slots);
    if (b->secret.p) {
        cm_wipe((void *)b->secret.p, b->secret.n);
        free((void *)b->secret.p);
    }
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static const struct cs__be_ops node_ops = {
    .name = "node",
    .parallel = 1,
    .ndrives = op_ndrives,
    .drive_name = op_drive_name,
    .drive_up = op_drive_up,
    .epoch = op_epoch,
    .w_open = op_w_open,
    .w_append = op_w_append,
    .w_commit = op_w_commit,
    .w_close = op_w_close,
    .r_open = op_r_open,
    .r_read = op_r_read,
    .r_header = op_r_header,
    .r_close = op_r_close,
    .stat = op_stat,
    .verify = op_verify,
    .remove = op_remove,
    .list = op_list,
    .recover = op_recover,
    .blob_put = op_blob_put,
    .blob_get = op_blob_get,
    .blob_remove = op_blob_remove,
    .blob_list = op_blob_list,
    .close = op_close,
};

struct first_probe {
    struct be_node *b;
    int d;
    pthread_t th;
    int started;
};

static void *first_probe_main(void *arg)
{
    struct first_probe *fp = arg;
    probe(fp->b, fp->d, 1);
    return NULL;
}

int cs__be_node_open(const char *const *urls, int nurls, const char *secret, struct cs__be **out)
{
    struct be_node *b;
    pthread_condattr_t ca;
    struct first_probe *fp;
    size_t sn;

    if (!urls || nurls < 1 || nurls > CS__MAX_DRIVES || !secret || !secret[0])
        return CM_EINVAL;
    for (int d = 0; d < nurls; d++) {
        if (!urls[d] || (strncmp(urls[d], "http://", 7) && strncmp(urls[d], "https://", 8)) ||
            strlen(urls[d]) > 400) {
            cm_log(CM_LOG_ERROR, "node URL %d '%s' is not http://HOST:PORT", d,
                   urls[d] ? urls[d] : "(null)");
            return CM_EINVAL;
        }
    }
    pthread_once(&curl_once, curl_init_once);
    if (!(b = calloc(1, sizeof *b)))
        return CM_ENOMEM;
    b->base.ops = &node_ops;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    sn = strlen(secret);
    uint8_t *sec = malloc(sn);
    if (!sec) {
        op_close(&b->base);
        return CM_ENOMEM;
    }
    memcpy(sec, secret, sn);
    b->secret = CM_SLICE(sec, sn);
    cs__node_cluster_id(b->secret, b->cluster);
    if (!(b->slots = calloc((size_t)nurls, sizeof *b->slots))) {
        op_close(&b->base);
        return CM_ENOMEM;
    }
    for (int d = 0; d < nurls; d++) {
        struct node_slot *s = &b->slots[d];
        pthread_mutex_init(&s->mu, NULL);
        b->n = d + 1;
        if (!(s->url = strdup(urls[d]))) {
            op_close(&b->base);
            return CM_ENOMEM;
        }
        size_t n = strlen(s->url);
        while (n > 8 && s->url[n - 1] == '/')
            s->url[--n] = 0;
    }

    /* First probes, all at once, so open costs one timeout at most. */
    if ((fp = calloc((size_t)nurls, sizeof *fp))) {
        for (int d = 0; d < nurls; d++) {
            fp[d].b = b;
            fp[d].d = d;
            fp[d].started = pthread_create(&fp[d].th, NULL, first_probe_main, &fp[d]) == 0;
            if (!fp[d].started)
                probe(b, d, 1);
        }
        for (int d = 0; d < nurls; d++)
            if (fp[d].started)
                pthread_join(fp[d].th, NULL);
        free(fp);
    } else {
        for (int d = 0; d < nurls; d++)
            probe(b, d, 1);
    }
    uint64_t now = mono_ms();
    for (int d = 0; d < nurls; d++)
        b->slots[d].next_probe_ms = now + NODE_UP_EVERY_MS;
    if (pthread_create(&b->probe, NULL, probe_main, b) != 0) {
        op_close(&b->base);
        return CM_ENOMEM;
    }
    b->started = 1;
    cm_log(CM_LOG_INFO, "node backend: %d nodes, cluster %s", nurls, b->cluster);
    *out = &b->base;
    return 0;
}

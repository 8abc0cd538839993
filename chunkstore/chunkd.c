/* chunkstore/chunkd.c - the `cairn-chunkd` storage node: keeps shard files
 * and blobs in one directory and serves them over HTTP (libmicrohttpd, a
 * thread per connection, so handlers block on disk). Every request is
 * authenticated with the cluster secret (node_proto.c); every write is
 * durable (fdatasync + rename + directory fsync) before it is answered.
 * The protocol is described in doc/nodes.md; the client is be_node.c.
 *
 * DIR layout:
 *   DIR/node-id                    32 hex chars + "\n": this directory's identity
 *   DIR/slot                       "cluster <hex>\nslot <N>\n", written by a claim
 *   DIR/shards/ab/<32hex>.<i>      committed shards (ab = first two hex chars)
 *   DIR/shards/ab/<name>.part      a new shard being written (heal=0)
 *   DIR/shards/ab/<name>.heal      a rebuilt copy being written (heal=1)
 *   DIR/blobs/ab/<32hex>[.tmp]     blobs (.tmp while being written) */
#include "chunkstore/cs_int.h"
#include "chunkstore/node_proto.h"
#include "common/json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PATHN 4096
#define ERR_BODY_MAX 4096 /* a rejected request's body is not kept beyond this */

enum { TREE_SHARDS = 0, TREE_BLOBS = 1 };
static const char *const tree_name[2] = {"shards", "blobs"};

/* The node. Set up by main() before the HTTP daemon starts; afterwards only
 * the fields marked "mu" or "atomic" change. */
static struct node {
    const char *dir;  /* --dir (borrowed from argv) */
    cm_slice secret;  /* malloc()ed copy of CAIRN_CLUSTER_SECRET; wiped at exit */
    char id[33];      /* node-id, immutable */
    pthread_mutex_t mu; /* guards slot and cluster (claims) */
    int slot;           /* mu: -1 while unclaimed */
    char cluster[65];   /* mu: "" while unclaimed */
    uint64_t nshards;   /* atomic: committed shards on disk */
    uint8_t fan_ok[2][256]; /* atomic: fan-out dir exists and its entry is durable */
} g_node = {.mu = PTHREAD_MUTEX_INITIALIZER, .slot = -1};

/* ------------------------------------------------------------ small I/O */

static int pwrite_full(int fd, const uint8_t *p, size_t n, off_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

static ssize_t pread_full(int fd, uint8_t *p, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Writes p[0..n) to path durably: path.tmp, fdatasync, rename, fsync of
 * the directory dir. Returns 0 or -1 with errno set. */
static int write_file_durable(const char *dir, const char *path, const void *p, size_t n)
{
    char tmp[PATHN];
    int fd, e;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (pwrite_full(fd, p, n, 0) || fdatasync(fd)) {
        e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    close(fd);
    if (rename(tmp, path)) {
        e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (cm_fsync_dir(dir)) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* Makes sure DIR/<tree>/<ab> exists and that its directory entry is
 * durable (one fsync of DIR/<tree> per fan-out dir per process). */
static int ensure_fan(int tree, const char *ab)
{
    char path[PATHN];
    int i = cm_hexval(ab[0]) * 16 + cm_hexval(ab[1]);

    if (__atomic_load_n(&g_node.fan_ok[tree][i], __ATOMIC_ACQUIRE))
        return 0;
    snprintf(path, sizeof path, "%s/%s/%.2s", g_node.dir, tree_name[tree], ab);
    if (mkdir(path, 0755) && errno != EEXIST)
        return -1;
    snprintf(path, sizeof path, "%s/%s", g_node.dir, tree_name[tree]);
    if (cm_fsync_dir(path)) {
        errno = EIO;
        return -1;
    }
    __atomic_store_n(&g_node.fan_ok[tree][i], 1, __ATOMIC_RELEASE);
    return 0;
}

/* "DIR/<tree>/ab/<name><suffix>" and, in dir (optional), "DIR/<tree>/ab". */
static void obj_path(int tree, const char *name, const char *suffix, char out[PATHN],
                     char *dir)
{
    snprintf(out, PATHN, "%s/%s/%.2s/%s%s", g_node.dir, tree_name[tree], name, name, suffix);
    if (dir)
        snprintf(dir, PATHN, "%s/%s/%.2s", g_node.dir, tree_name[tree], name);
}

/* ------------------------------------------------------------ requests */

/* One request, from the URI callback to the completion callback. */
struct req {
    char *uri;           /* request-line target as sent (malloc()ed) */
    cm_slice path;       /* uri up to '?' */
    cm_slice query;      /* after '?' (may be empty) */
    const char *method;  /* MHD's string; lives as long as the connection */
    int started;         /* the first access_cb call has run */
    int queued;          /* a response was queued */
    int too_big;         /* body exceeded CS__NODE_BODY_MAX */
    char sha[65];        /* X-Cairn-Content-SHA256 (validated by the auth check) */
    char range[128];     /* Range header, "" if none */
    cm_buf body;         /* buffered request body */
};

/* A response being built by a handler. Exactly one body source: buf, fd
 * (fd >= 0: len bytes from off; MHD closes it) or a lister. */
struct lister;
struct resp {
    int status;
    const char *ctype;
    cm_buf buf;
    int fd;
    uint64_t off, len;
    struct lister *ls;
    int nhdr;
    struct {
        const char *name;
        char value[160];
    } hdr[4];
};

static void set_hdr(struct resp *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_hdr(struct resp *r, const char *name, const char *fmt, ...)
{
    va_list ap;
    if (r->nhdr >= 4)
        return;
    r->hdr[r->nhdr].name = name;
    va_start(ap, fmt);
    vsnprintf(r->hdr[r->nhdr].value, sizeof r->hdr[0].value, fmt, ap);
    va_end(ap);
    r->nhdr++;
}

static void json_reply(struct resp *r, int status)
{
    r->status = status;
    r->ctype = "application/json";
}

static void err_reply(struct resp *r, int status, const char *msg)
{
    cm_buf_reset(&r->buf);
    cm_buf_append_str(&r->buf, "{\"error\":");
    cm_json_cstr(&r->buf, msg);
    cm_buf_append_str(&r->buf, "}\n");
    json_reply(r, status);
}

/* Maps a failed syscall's errno to a reply. */
static void errno_reply(struct resp *r, int e, const char *what)
{
    char msg[256];
    int status = e == ENOENT ? 404 : (e == ENOSPC || e == EDQUOT) ? 507 : 500;

    snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
    if (status != 404)
        cm_log(CM_LOG_ERROR, "%s", msg);
    err_reply(r, status, status == 404 ? "not found" : msg);
}

/* ------------------------------------------------------------ query args */

struct qargs {
    int has_off, has_heal, has_commit, has_slot, has_cluster;
    uint64_t off;
    int heal;
    int slot;
    char cluster[65];
};

static int parse_u64(cm_slice v, uint64_t max, uint64_t *out)
{
    uint64_t x = 0;
    if (v.n == 0 || v.n > 19)
        return -1;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    if (x > max)
        return -1;
    *out = x;
    return 0;
}

/* Parses "k[=v]&..." with the keys this protocol knows. Returns 0 or -1
 * (unknown key, repeated key, bad value). */
static int parse_query(cm_slice q, struct qargs *a)
{
    memset(a, 0, sizeof *a);
    size_t i = 0;
    while (i < q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        cm_slice kv = CM_SLICE(q.p + i, j - i), k = kv, v = CM_SLICE_NULL;
        const uint8_t *eq = memchr(kv.p, '=', kv.n);
        int has_v = eq != NULL;
        if (eq) {
            k = CM_SLICE(kv.p, (size_t)(eq - kv.p));
            v = CM_SLICE(eq + 1, kv.n - k.n - 1);
        }
        uint64_t x;
        if (cm_slice_eq_str(k, "off")) {
            if (a->has_off++ || parse_u64(v, (uint64_t)1 << 50, &a->off))
                return -1;
        } else if (cm_slice_eq_str(k, "heal")) {
            if (a->has_heal++ || parse_u64(v, 1, &x))
                return -1;
            a->heal = (int)x;
        } else if (cm_slice_eq_str(k, "commit")) {
            if (a->has_commit++ || (has_v && v.n))
                return -1;
        } else if (cm_slice_eq_str(k, "slot")) {
            if (a->has_slot++ || parse_u64(v, CS__MAX_DRIVES - 1, &x))
                return -1;
            a->slot = (int)x;
        } else if (cm_slice_eq_str(k, "cluster")) {
            if (a->has_cluster++ || v.n == 0 || v.n > 64)
                return -1;
            for (size_t t = 0; t < v.n; t++)
                if (!((v.p[t] >= '0' && v.p[t] <= '9') || (v.p[t] >= 'a' && v.p[t] <= 'f')))
                    return -1;
            memcpy(a->cluster, v.p, v.n);
            a->cluster[v.n] = 0;
        } else if (kv.n) {
            return -1;
        }
        i = j + 1;
    }
    return 0;
}

/* ------------------------------------------------------------ listing */

/* Streams the names in one tree, a line each: the lister walks the 256
 * fan-out directories lazily as MHD asks for more. */
struct lister {
    int tree;
    int fan;       /* next fan-out dir to open */
    DIR *d;        /* open fan-out dir, or NULL */
    char line[80]; /* pending output line */
    size_t lpos, lnum;
};

static int name_ok(int tree, const char *s)
{
    uint8_t id[CS_ID_LEN];
    int index;
    if (tree == TREE_BLOBS)
        return cs__node_id_parse(CM_SLICE_STR(s), id) == 0;
    return cs__node_name_parse(CM_SLICE_STR(s), id, &index) == 0;
}

/* Next valid name of the walk into l->line; 0 at the end. */
static int lister_next(struct lister *l)
{
    char path[PATHN];
    for (;;) {
        if (!l->d) {
            if (l->fan >= 256)
                return 0;
            snprintf(path, sizeof path, "%s/%s/%02x", g_node.dir, tree_name[l->tree], l->fan++);
            l->d = opendir(path);
            continue;
        }
        struct dirent *e = readdir(l->d);
        if (!e) {
            closedir(l->d);
            l->d = NULL;
            continue;
        }
        if (strlen(e->d_name) < sizeof l->line - 1 && name_ok(l->tree, e->d_name)) {
            l->lnum = (size_t)snprintf(l->line, sizeof l->line, "%s\n", e->d_name);
            l->lpos = 0;
            return 1;
        }
    }
}

static ssize_t lister_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct lister *l = cls;
    size_t n = 0;
    (void)pos;
    while (n < max) {
        if (l->lpos < l->lnum) {
            size_t c = l->lnum - l->lpos < max - n ? l->lnum - l->lpos : max - n;
            memcpy(buf + n, l->line + l->lpos, c);
            l->lpos += c;
            n += c;
            continue;
        }
        if (!lister_next(l))
            break;
    }
    return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void lister_free(void *cls)
{
    struct lister *l = cls;
    if (l->d)
        closedir(l->d);
    free(l);
}

/* Counts the committed shards (at start). */
static uint64_t count_shards(void)
{
    struct lister l = {.tree = TREE_SHARDS};
    uint64_t n = 0;
    while (lister_next(&l))
        n++;
    return n;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

/* Removes every .part/.heal/.tmp file in a tree; returns the count. */
static uint64_t remove_leftovers(int tree)
{
    char path[PATHN];
    uint64_t n = 0;
    for (int fan = 0; fan < 256; fan++) {
        snprintf(path, sizeof path, "%s/%s/%02x", g_node.dir, tree_name[tree], fan);
        DIR *d = opendir(path);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!has_suffix(e->d_name, ".part") && !has_suffix(e->d_name, ".heal") &&
                !has_suffix(e->d_name, ".tmp"))
                continue;
            if (unlinkat(dirfd(d), e->d_name, 0) == 0)
                n++;
        }
        closedir(d);
    }
    return n;
}

/* ------------------------------------------------------------ handlers */

static void h_health(struct resp *r)
{
    struct statvfs sv;
    uint64_t free_bytes = 0;
    int slot;
    char cluster[65];

    if (statvfs(g_node.dir, &sv) == 0)
        free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
    pthread_mutex_lock(&g_node.mu);
    slot = g_node.slot;
    memcpy(cluster, g_node.cluster, sizeof cluster);
    pthread_mutex_unlock(&g_node.mu);
    cm_buf_printf(&r->buf, "{\"id\":\"%s\",\"slot\":%d,\"cluster\":\"%s\",\"shards\":%llu,"
                           "\"free_bytes\":%llu}\n",
                  g_node.id, slot, cluster,
                  (unsigned long long)__atomic_load_n(&g_node.nshards, __ATOMIC_RELAXED),
                  (unsigned long long)free_bytes);
    json_reply(r, 200);
}

static void h_claim(struct resp *r, const struct qargs *a)
{
    char path[PATHN], text[128];
    int n;

    if (!a->has_slot || !a->has_cluster || a->has_off || a->has_heal || a->has_commit) {
        err_reply(r, 400, "claim needs slot and cluster");
        return;
    }
    pthread_mutex_lock(&g_node.mu);
    if (g_node.slot < 0) {
        n = snprintf(text, sizeof text, "cluster %s\nslot %d\n", a->cluster, a->slot);
        snprintf(path, sizeof path, "%s/slot", g_node.dir);
        if (write_file_durable(g_node.dir, path, text, (size_t)n)) {
            int e = errno;
            pthread_mutex_unlock(&g_node.mu);
            errno_reply(r, e, "writing slot");
            return;
        }
        g_node.slot = a->slot;
        snprintf(g_node.cluster, sizeof g_node.cluster, "%s", a->cluster);
        cm_log(CM_LOG_INFO, "claimed for slot %d of cluster %s", a->slot, a->cluster);
    }
    if (g_node.slot == a->slot && strcmp(g_node.cluster, a->cluster) == 0) {
        cm_buf_printf(&r->buf, "{\"slot\":%d,\"cluster\":\"%s\"}\n", g_node.slot, g_node.cluster);
        json_reply(r, 200);
    } else {
        cm_log(CM_LOG_WARN, "refused a claim for slot %d of cluster %s: holds slot %d of %s",
               a->slot, a->cluster, g_node.slot, g_node.cluster);
        cm_buf_printf(&r->buf, "{\"error\":\"claimed\",\"slot\":%d,\"cluster\":\"%s\"}\n",
                      g_node.slot, g_node.cluster);
        json_reply(r, 409);
    }
    pthread_mutex_unlock(&g_node.mu);
}

static void h_shard_put(struct resp *r, const char *name, const struct qargs *a,
                        const cm_buf *body)
{
    char path[PATHN];
    int fd;

    if (!a->has_off || a->has_commit || a->has_slot || a->has_cluster) {
        err_reply(r, 400, "PUT shard needs off");
        return;
    }
    if (ensure_fan(TREE_SHARDS, name)) {
        errno_reply(r, errno, "creating fan-out dir");
        return;
    }
    obj_path(TREE_SHARDS, name, a->heal ? ".heal" : ".part", path, NULL);
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        errno_reply(r, errno, "opening partial shard");
        return;
    }
    if (body->n && pwrite_full(fd, body->p, body->n, (off_t)a->off)) {
        int e = errno;
        close(fd);
        errno_reply(r, e, "writing partial shard");
        return;
    }
    close(fd);
    json_reply(r, 200);
    cm_buf_append_str(&r->buf, "{}\n");
}

static void h_shard_commit(struct resp *r, const char *name, const struct qargs *a,
                           const cm_buf *body)
{
    char part[PATHN], final[PATHN], dir[PATHN];
    struct stat st;
    int fd, existed;

    if (!a->has_commit || a->has_off || a->has_slot || a->has_cluster) {
        err_reply(r, 400, "POST shard needs commit");
        return;
    }
    if (body->n != CS__HDR_LEN) {
        err_reply(r, 400, "commit body must be the 64-byte shard header");
        return;
    }
    obj_path(TREE_SHARDS, name, a->heal ? ".heal" : ".part", part, NULL);
    obj_path(TREE_SHARDS, name, "", final, dir);
    fd = open(part, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        errno_reply(r, errno, "opening partial shard");
        return;
    }
    if (pwrite_full(fd, body->p, CS__HDR_LEN, 0) || fdatasync(fd)) {
        int e = errno;
        close(fd);
        errno_reply(r, e, "writing shard header");
        return;
    }
    close(fd);
    existed = lstat(final, &st) == 0;
    if (rename(part, final)) {
        errno_reply(r, errno, "renaming shard");
        return;
    }
    if (cm_fsync_dir(dir)) {
        errno_reply(r, EIO, "syncing shard directory");
        return;
    }
    if (!existed)
        __atomic_add_fetch(&g_node.nshards, 1, __ATOMIC_RELAXED);
    json_reply(r, 200);
    cm_buf_append_str(&r->buf, "{}\n");
}

/* Parses "bytes=a-b", "bytes=a-" or "bytes=-n" against len. Returns 0 with
 * [*a, *b] (inclusive), 1 if the range starts at or past len, -1 if
 * malformed. */
static int parse_range(const char *s, uint64_t len, uint64_t *a, uint64_t *b)
{
    const char *dash;
    uint64_t x, y;

    if (strncmp(s, "bytes=", 6) != 0 || !(dash = strchr(s + 6, '-')))
        return -1;
    cm_slice first = CM_SLICE(s + 6, (size_t)(dash - s - 6)), last = CM_SLICE_STR(dash + 1);
    if (first.n == 0) { /* suffix: the last n bytes */
        if (parse_u64(last, UINT64_MAX / 2, &y) || y == 0)
            return -1;
        if (len == 0)
            return 1;
        *a = y >= len ? 0 : len - y;
        *b = len - 1;
        return 0;
    }
    if (parse_u64(first, UINT64_MAX / 2, &x))
        return -1;
    if (last.n == 0)
        y = UINT64_MAX;
    else if (parse_u64(last, UINT64_MAX / 2, &y) || y < x)
        return -1;
    if (x >= len)
        return 1;
    *a = x;
    *b = y >= len ? len - 1 : y;
    return 0;
}

/* Opens the committed file name of tree for reading and stats it; on
 * failure answers r (404 for a missing file) and returns -1. */
static int open_committed(struct resp *r, int tree, const char *name, struct stat *st)
{
    char path[PATHN];
    int fd;

    obj_path(tree, name, "", path, NULL);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, st)) {
        errno_reply(r, errno, tree == TREE_BLOBS ? "opening blob" : "opening shard");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void h_shard_get(struct resp *r, const char *name, const char *range)
{
    char hex[2 * CS__HDR_LEN + 1];
    uint8_t hdr[CS__HDR_LEN];
    struct stat st;
    uint64_t a = 0, b = 0;
    ssize_t nh;
    int fd, rc;

    if ((fd = open_committed(r, TREE_SHARDS, name, &st)) < 0)
        return;
    nh = pread_full(fd, hdr, CS__HDR_LEN, 0);
    if (nh == CS__HDR_LEN) {
        cm_hex_encode(hdr, CS__HDR_LEN, hex);
        set_hdr(r, CS__NODE_HDR_SHARD, "%s", hex);
    }
    uint64_t len = (uint64_t)st.st_size;
    if (range[0]) {
        rc = parse_range(range, len, &a, &b);
        if (rc < 0) {
            close(fd);
            err_reply(r, 400, "bad Range");
            return;
        }
        if (rc > 0) {
            close(fd);
            set_hdr(r, "Content-Range", "bytes */%llu", (unsigned long long)len);
            err_reply(r, 416, "range not satisfiable");
            return;
        }
        set_hdr(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)a,
                (unsigned long long)b, (unsigned long long)len);
        r->status = 206;
    } else {
        r->status = 200;
        b = len ? len - 1 : 0;
    }
    r->ctype = "application/octet-stream";
    if (len == 0) {
        close(fd);
        return;
    }
    r->fd = fd;
    r->off = a;
    r->len = b - a + 1;
}

static void h_shard_head(struct resp *r, const char *name)
{
    char path[PATHN];
    struct stat st;

    obj_path(TREE_SHARDS, name, "", path, NULL);
    if (stat(path, &st)) {
        errno_reply(r, errno, "stat shard");
        return;
    }
    set_hdr(r, CS__NODE_HDR_LEN, "%llu", (unsigned long long)st.st_size);
    r->status = 200;
}

static void h_shard_delete(struct resp *r, const char *name, const struct qargs *a)
{
    char path[PATHN];

    if (a->has_off || a->has_commit || a->has_slot || a->has_cluster) {
        err_reply(r, 400, "unexpected query");
        return;
    }
    obj_path(TREE_SHARDS, name, ".heal", path, NULL);
    unlink(path);
    if (!a->heal) { /* heal=1 removes only the rebuilt copy in progress */
        obj_path(TREE_SHARDS, name, ".part", path, NULL);
        unlink(path);
        obj_path(TREE_SHARDS, name, "", path, NULL);
        if (unlink(path) == 0)
            __atomic_sub_fetch(&g_node.nshards, 1, __ATOMIC_RELAXED);
    }
    r->status = 204;
}

/* Reads the whole shard and checks the header and every block's CRC32C. */
static void h_verify(struct resp *r, const char *name)
{
    enum { CHUNK = 1 << 20 };
    char hex[2 * CS__HDR_LEN + 1];
    uint8_t hdrb[CS__HDR_LEN] = {0}, crcb[CS__CRC_LEN];
    struct cs_hdr h;
    struct stat st;
    uint64_t bad = 0, first_bad = 0;
    uint8_t *buf = NULL;
    int fd;

    if ((fd = open_committed(r, TREE_SHARDS, name, &st)) < 0)
        return;
    uint64_t len = (uint64_t)st.st_size;
    ssize_t nh = pread_full(fd, hdrb, CS__HDR_LEN, 0);
    if (nh < 0) {
        errno_reply(r, errno, "reading shard");
        close(fd);
        return;
    }
    cm_hex_encode(hdrb, CS__HDR_LEN, hex);
    if (nh != CS__HDR_LEN || cs__hdr_decode(hdrb, CS__HDR_LEN, &h) != 0) {
        close(fd);
        cm_buf_printf(&r->buf,
                      "{\"len\":%llu,\"bad_blocks\":0,\"first_bad\":0,\"hdr\":\"%s\","
                      "\"bad_header\":true}\n",
                      (unsigned long long)len, hex);
        json_reply(r, 200);
        return;
    }
    if (!(buf = malloc(CHUNK))) {
        close(fd);
        err_reply(r, 500, "out of memory");
        return;
    }
    uint64_t ns = cs__nstripes(h.size, h.k, h.block_size);
    for (uint64_t s = 0; s < ns; s++) {
        uint32_t blen = cs__blen(h.size, h.k, h.block_size, s);
        uint64_t off = cs__stripe_off(h.block_size, s);
        uint32_t crc = 0;
        int good = off + blen + CS__CRC_LEN <= len;
        for (uint32_t done = 0; good && done < blen;) {
            size_t c = blen - done < CHUNK ? blen - done : CHUNK;
            ssize_t got = pread_full(fd, buf, c, (off_t)(off + done));
            if (got != (ssize_t)c) {
                good = 0;
                break;
            }
            crc = rs_crc32c(crc, buf, c);
            done += (uint32_t)c;
        }
        if (good)
            good = pread_full(fd, crcb, CS__CRC_LEN, (off_t)(off + blen)) == CS__CRC_LEN &&
                   cs__get32(crcb) == crc;
        if (!good && bad++ == 0)
            first_bad = s;
    }
    free(buf);
    close(fd);
    cm_buf_printf(&r->buf, "{\"len\":%llu,\"bad_blocks\":%llu,\"first_bad\":%llu,\"hdr\":\"%s\"}\n",
                  (unsigned long long)len, (unsigned long long)bad,
                  (unsigned long long)first_bad, hex);
    json_reply(r, 200);
}

static void start_list(struct resp *r, int tree)
{
    struct lister *l = calloc(1, sizeof *l);
    if (!l) {
        err_reply(r, 500, "out of memory");
        return;
    }
    l->tree = tree;
    r->ls = l;
    r->status = 200;
    r->ctype = "text/plain";
}

static void h_recover(struct resp *r)
{
    uint64_t n = remove_leftovers(TREE_SHARDS) + remove_leftovers(TREE_BLOBS);
    if (n)
        cm_log(CM_LOG_INFO, "recover: removed %llu leftover files", (unsigned long long)n);
    cm_buf_printf(&r->buf, "{\"removed\":%llu}\n", (unsigned long long)n);
    json_reply(r, 200);
}

static void h_blob_put(struct resp *r, const char *id, const cm_buf *body)
{
    char path[PATHN], dir[PATHN];

    if (ensure_fan(TREE_BLOBS, id)) {
        errno_reply(r, errno, "creating fan-out dir");
        return;
    }
    obj_path(TREE_BLOBS, id, "", path, dir);
    if (write_file_durable(dir, path, body->p ? body->p : (const uint8_t *)"", body->n)) {
        errno_reply(r, errno, "writing blob");
        return;
    }
    json_reply(r, 200);
    cm_buf_append_str(&r->buf, "{}\n");
}

static void h_blob_get(struct resp *r, const char *id)
{
    struct stat st;
    int fd;

    if ((fd = open_committed(r, TREE_BLOBS, id, &st)) < 0)
        return;
    r->status = 200;
    r->ctype = "application/octet-stream";
    if (st.st_size == 0) {
        close(fd);
        return;
    }
    r->fd = fd;
    r->off = 0;
    r->len = (uint64_t)st.st_size;
}

static void h_blob_delete(struct resp *r, const char *id)
{
    char path[PATHN];
    obj_path(TREE_BLOBS, id, "", path, NULL);
    unlink(path);
    r->status = 204;
}

static void not_allowed(struct resp *r, const char *allow)
{
    set_hdr(r, "Allow", "%s", allow);
    err_reply(r, 405, "method not allowed");
}

/* Routes a shard request (/v1/shard/<name>) by method. */
static void route_shard(struct req *q, struct resp *r, const char *name, const struct qargs *a,
                        int plain)
{
    const char *m = q->method;

    if (!strcmp(m, "PUT"))
        h_shard_put(r, name, a, &q->body);
    else if (!strcmp(m, "POST"))
        h_shard_commit(r, name, a, &q->body);
    else if (!strcmp(m, "DELETE"))
        h_shard_delete(r, name, a);
    else if (strcmp(m, "GET") && strcmp(m, "HEAD"))
        not_allowed(r, "GET, HEAD, PUT, POST, DELETE");
    else if (!plain)
        err_reply(r, 400, "unexpected query");
    else if (!strcmp(m, "GET"))
        h_shard_get(r, name, q->range);
    else
        h_shard_head(r, name);
}

/* Routes a blob request (/v1/blob/<id>) by method. */
static void route_blob(struct req *q, struct resp *r, const char *id, int plain)
{
    const char *m = q->method;

    if (strcmp(m, "PUT") && strcmp(m, "GET") && strcmp(m, "DELETE"))
        not_allowed(r, "GET, PUT, DELETE");
    else if (!plain)
        err_reply(r, 400, "unexpected query");
    else if (!strcmp(m, "PUT"))
        h_blob_put(r, id, &q->body);
    else if (!strcmp(m, "GET"))
        h_blob_get(r, id);
    else
        h_blob_delete(r, id);
}

/* The fixed endpoints: path, method, whether a query is allowed. */
enum ep { EP_HEALTH, EP_CLAIM, EP_SHARDS, EP_BLOBS, EP_RECOVER, EP__N };
static const struct {
    const char *path, *method;
    int query;
} endpoints[EP__N] = {
    [EP_HEALTH] = {"/v1/health", "GET", 0},   [EP_CLAIM] = {"/v1/claim", "POST", 1},
    [EP_SHARDS] = {"/v1/shards", "GET", 0},   [EP_BLOBS] = {"/v1/blobs", "GET", 0},
    [EP_RECOVER] = {"/v1/recover", "POST", 0},
};

static int node_claimed(void)
{
    pthread_mutex_lock(&g_node.mu);
    int c = g_node.slot >= 0;
    pthread_mutex_unlock(&g_node.mu);
    return c;
}

/* Routes an authenticated request with its verified body. */
static void dispatch(struct req *q, struct resp *r)
{
    static const cm_slice shard_pfx = {(const uint8_t *)"/v1/shard/", 10},
                          verify_pfx = {(const uint8_t *)"/v1/verify/", 11},
                          blob_pfx = {(const uint8_t *)"/v1/blob/", 9};
    cm_slice p = q->path;
    struct qargs a;
    char name[CS__NODE_NAME_MAX];
    uint8_t id[CS_ID_LEN];
    int index, plain;

    if (parse_query(q->query, &a)) {
        err_reply(r, 400, "bad query");
        return;
    }
    plain = !a.has_off && !a.has_heal && !a.has_commit && !a.has_slot && !a.has_cluster;
    for (int e = 0; e < EP__N; e++) {
        if (!cm_slice_eq_str(p, endpoints[e].path))
            continue;
        if (e != EP_HEALTH && e != EP_CLAIM && !node_claimed()) {
            err_reply(r, 503, "unclaimed: no gateway has claimed this node for a slot yet");
            return;
        }
        if (strcmp(q->method, endpoints[e].method))
            not_allowed(r, endpoints[e].method);
        else if (!plain && !endpoints[e].query)
            err_reply(r, 400, "unexpected query");
        else if (e == EP_HEALTH)
            h_health(r);
        else if (e == EP_CLAIM)
            h_claim(r, &a);
        else if (e == EP_SHARDS || e == EP_BLOBS)
            start_list(r, e == EP_SHARDS ? TREE_SHARDS : TREE_BLOBS);
        else
            h_recover(r);
        return;
    }
    if (!node_claimed()) {
        /* A new or wiped node holds nothing until a gateway claims it for
         * its slot: data requests before that would land on a node that
         * no layout names yet. */
        err_reply(r, 503, "unclaimed: no gateway has claimed this node for a slot yet");
        return;
    }
    if (cm_slice_has_prefix(p, verify_pfx)) {
        if (cs__node_name_parse(CM_SLICE(p.p + verify_pfx.n, p.n - verify_pfx.n), id, &index))
            err_reply(r, 400, "bad shard name");
        else if (strcmp(q->method, "GET"))
            not_allowed(r, "GET");
        else if (!plain)
            err_reply(r, 400, "unexpected query");
        else {
            cs__node_name_format(id, index, name);
            h_verify(r, name);
        }
    } else if (cm_slice_has_prefix(p, shard_pfx)) {
        if (cs__node_name_parse(CM_SLICE(p.p + shard_pfx.n, p.n - shard_pfx.n), id, &index)) {
            err_reply(r, 400, "bad shard name");
        } else {
            cs__node_name_format(id, index, name); /* canonical: "x.07" is "x.7" */
            route_shard(q, r, name, &a, plain);
        }
    } else if (cm_slice_has_prefix(p, blob_pfx)) {
        if (cs__node_id_parse(CM_SLICE(p.p + blob_pfx.n, p.n - blob_pfx.n), id)) {
            err_reply(r, 400, "bad blob id");
        } else {
            cm_hex_encode(id, CS_ID_LEN, name);
            route_blob(q, r, name, plain);
        }
    } else {
        err_reply(r, 404, "no such endpoint");
    }
}

/* ------------------------------------------------------------ MHD glue */

static enum MHD_Result send_resp(struct MHD_Connection *con, struct req *q, struct resp *r)
{
    struct MHD_Response *mr;
    enum MHD_Result ret;

    if (r->fd >= 0) {
        mr = MHD_create_response_from_fd_at_offset64(r->len, r->fd, r->off);
        if (!mr)
            close(r->fd);
    } else if (r->ls) {
        mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, lister_cb, r->ls,
                                               lister_free);
        if (!mr)
            lister_free(r->ls);
    } else {
        mr = MHD_create_response_from_buffer(r->buf.n, r->buf.p, MHD_RESPMEM_MUST_COPY);
    }
    r->fd = -1;
    r->ls = NULL;
    cm_buf_free(&r->buf);
    if (!mr)
        return MHD_NO;
    MHD_add_response_header(mr, "Server", "cairn-chunkd");
    if (r->ctype)
        MHD_add_response_header(mr, "Content-Type", r->ctype);
    for (int i = 0; i < r->nhdr; i++)
        MHD_add_response_header(mr, r->hdr[i].name, r->hdr[i].value);
    ret = MHD_queue_response(con, (unsigned)(r->status ? r->status : 200), mr);
    MHD_destroy_response(mr);
    q->queued = 1;
    cm_log(CM_LOG_DEBUG, "%s %.*s -> %d", q->method, (int)q->path.n, (const char *)q->path.p,
           r->status);
    return ret;
}

static enum MHD_Result reject(struct MHD_Connection *con, struct req *q, int status,
                              const char *why)
{
    struct resp r = {.fd = -1};
    err_reply(&r, status, why);
    return send_resp(con, q, &r);
}

static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *con)
{
    (void)cls;
    (void)con;
    struct req *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    if (!(q->uri = strdup(uri))) {
        free(q);
        return NULL;
    }
    size_t n = strlen(q->uri);
    const char *qm = memchr(q->uri, '?', n);
    q->path = CM_SLICE(q->uri, qm ? (size_t)(qm - q->uri) : n);
    q->query = qm ? CM_SLICE(qm + 1, n - q->path.n - 1) : CM_SLICE_NULL;
    return q;
}

static void done_cb(void *cls, struct MHD_Connection *con, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)con;
    (void)toe;
    struct req *q = *con_cls;
    if (!q)
        return;
    cm_buf_free(&q->body);
    free(q->uri);
    free(q);
    *con_cls = NULL;
}

/* First call: authenticate from the headers alone (a bad request is
 * answered at once, its body never read). Returns 0 to go on. */
static int check_headers(struct MHD_Connection *con, struct req *q, int *status,
                         const char **why)
{
    const char *date = MHD_lookup_connection_value(con, MHD_HEADER_KIND, CS__NODE_HDR_DATE);
    const char *sha = MHD_lookup_connection_value(con, MHD_HEADER_KIND, CS__NODE_HDR_SHA);
    const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, CS__NODE_HDR_AUTH);
    const char *range = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Range");
    const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
    char path[CS__NODE_PATH_MAX + 1];

    if (q->uri[0] != '/' || strlen(q->uri) > CS__NODE_PATH_MAX) {
        *status = 400;
        *why = "bad request target";
        return -1;
    }
    memcpy(path, q->uri, strlen(q->uri) + 1);
    if (cs__node_verify(g_node.secret, q->method, path, date, sha, auth, (int64_t)time(NULL),
                        why)) {
        *status = 403;
        return -1;
    }
    memcpy(q->sha, sha, 65);
    if (range) {
        if (strlen(range) >= sizeof q->range) {
            *status = 400;
            *why = "bad Range";
            return -1;
        }
        memcpy(q->range, range, strlen(range) + 1);
    }
    if (cl) {
        uint64_t n;
        if (parse_u64(CM_SLICE_STR(cl), UINT64_MAX / 2, &n)) {
            *status = 400;
            *why = "bad Content-Length";
            return -1;
        }
        if (n > CS__NODE_BODY_MAX) {
            *status = 413;
            *why = "body too large";
            return -1;
        }
    }
    return 0;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *con, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    struct req *q = *con_cls;
    if (!q)
        return MHD_NO;
    if (q->queued) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!q->started) {
        int status;
        const char *why;
        q->started = 1;
        q->method = method;
        if (check_headers(con, q, &status, &why)) {
            if (status == 403)
                cm_log(CM_LOG_WARN, "rejected %s %.*s: %s", method, (int)q->path.n,
                       (const char *)q->path.p, why);
            return reject(con, q, status, why);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!q->too_big) {
            if (q->body.n + *upload_data_size > CS__NODE_BODY_MAX) {
                q->too_big = 1;
                cm_buf_free(&q->body);
            } else if (cm_buf_append(&q->body, upload_data, *upload_data_size)) {
                q->too_big = 1; /* out of memory: refuse the same way */
                cm_buf_free(&q->body);
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* The whole body is here. */
    if (q->too_big)
        return reject(con, q, 413, "body too large");
    char sha[65];
    cs__node_sha256_hex(q->body.p, q->body.n, sha);
    if (strcmp(sha, q->sha) != 0) {
        cm_log(CM_LOG_WARN, "rejected %s %.*s: body does not match its SHA-256", method,
               (int)q->path.n, (const char *)q->path.p);
        return reject(con, q, 403, "body does not match " CS__NODE_HDR_SHA);
    }
    struct resp r = {.fd = -1};
    dispatch(q, &r);
    return send_resp(con, q, &r);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    cm_log(CM_LOG_WARN, "http: %s", line);
}

/* ------------------------------------------------------------ start-up */

/* Reads DIR/node-id, or creates it (random, durable). */
static int load_node_id(void)
{
    char path[PATHN], text[64];
    uint8_t raw[CS_ID_LEN];
    FILE *f;

    snprintf(path, sizeof path, "%s/node-id", g_node.dir);
    if ((f = fopen(path, "r"))) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = 0;
        while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
            text[--n] = 0;
        if (cs__node_id_parse(CM_SLICE(text, n), raw)) {
            cm_log(CM_LOG_ERROR, "%s is corrupt (want 32 lowercase hex chars)", path);
            return -1;
        }
        memcpy(g_node.id, text, 33);
        return 0;
    }
    if (errno != ENOENT) {
        cm_log(CM_LOG_ERROR, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (cm_random_bytes(raw, sizeof raw)) {
        cm_log(CM_LOG_ERROR, "no randomness for the node id");
        return -1;
    }
    cm_hex_encode(raw, sizeof raw, g_node.id);
    snprintf(text, sizeof text, "%s\n", g_node.id);
    if (write_file_durable(g_node.dir, path, text, strlen(text))) {
        cm_log(CM_LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    cm_log(CM_LOG_INFO, "new node id %s in %s", g_node.id, g_node.dir);
    return 0;
}

/* Reads DIR/slot if a claim wrote it. */
static int load_slot(void)
{
    char path[PATHN], cluster[80];
    int slot;
    FILE *f;

    snprintf(path, sizeof path, "%s/slot", g_node.dir);
    if (!(f = fopen(path, "r"))) {
        if (errno == ENOENT)
            return 0;
        cm_log(CM_LOG_ERROR, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    int ok = fscanf(f, "cluster %79s slot %d", cluster, &slot) == 2;
    fclose(f);
    struct qargs a;
    char q[160];
    snprintf(q, sizeof q, "slot=%d&cluster=%s", slot, cluster);
    if (!ok || slot < 0 || parse_query(CM_SLICE_STR(q), &a)) {
        cm_log(CM_LOG_ERROR, "%s is corrupt (want \"cluster HEX\\nslot N\\n\")", path);
        return -1;
    }
    g_node.slot = a.slot;
    memcpy(g_node.cluster, a.cluster, sizeof g_node.cluster);
    return 0;
}

/* Fills a socket address from "ADDR:PORT" ("[v6]:PORT" for IPv6). */
static int parse_listen(const char *s, struct sockaddr_storage *ss, int *v6)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    struct addrinfo hints, *res = NULL;
    size_t hn;

    if (!colon || colon == s || !colon[1])
        return -1;
    hn = (size_t)(colon - s);
    if (s[0] == '[' && hn >= 2 && s[hn - 1] == ']') {
        s++;
        hn -= 2;
    }
    if (hn >= sizeof host)
        return -1;
    memcpy(host, s, hn);
    host[hn] = 0;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, colon + 1, &hints, &res) || !res)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "cairn-chunkd - a cairn storage node\n\n"
               "usage: cairn-chunkd --listen ADDR:PORT --dir DIR [--log-level L]\n\n"
               "  --listen ADDR:PORT  address to serve on (exactly this one; [v6]:PORT for IPv6)\n"
               "  --dir DIR           the node's directory (created if missing): shards, blobs,\n"
               "                      its id (DIR/node-id) and its claim (DIR/slot)\n"
               "  --log-level L       error, warn, info (default) or debug\n"
               "  -h, --help          this text\n\n"
               "The cluster secret comes from CAIRN_CLUSTER_SECRET (required): every request\n"
               "must be signed with it. See doc/nodes.md.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"dir", required_argument, NULL, 'd'},
                                         {"log-level", required_argument, NULL, 'L'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen_at = NULL, *secret;
    struct sockaddr_storage ss;
    char path[PATHN];
    sigset_t sigs;
    int c, v6 = 0, lockfd, sig = 0;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen_at = optarg;
            break;
        case 'd':
            g_node.dir = optarg;
            break;
        case 'L':
            if (!strcmp(optarg, "error"))
                cm_log_level = CM_LOG_ERROR;
            else if (!strcmp(optarg, "warn"))
                cm_log_level = CM_LOG_WARN;
            else if (!strcmp(optarg, "info"))
                cm_log_level = CM_LOG_INFO;
            else if (!strcmp(optarg, "debug"))
                cm_log_level = CM_LOG_DEBUG;
            else {
                fprintf(stderr, "cairn-chunkd: bad --log-level '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !listen_at || !g_node.dir || !g_node.dir[0]) {
        fprintf(stderr, "cairn-chunkd: --listen and --dir are required\n");
        usage(stderr);
        return 2;
    }
    secret = getenv("CAIRN_CLUSTER_SECRET");
    if (!secret || !secret[0]) {
        fprintf(stderr, "cairn-chunkd: CAIRN_CLUSTER_SECRET is not set: refusing to start "
                        "(every gateway and node of a cluster must share this secret)\n");
        return 2;
    }
    size_t sn = strlen(secret);
    uint8_t *sec = malloc(sn);
    if (!sec)
        return 1;
    memcpy(sec, secret, sn);
    g_node.secret = CM_SLICE(sec, sn);
    cm_wipe((char *)secret, sn); /* also out of /proc/PID/environ */
    unsetenv("CAIRN_CLUSTER_SECRET");
    if (parse_listen(listen_at, &ss, &v6)) {
        fprintf(stderr, "cairn-chunkd: bad --listen address '%s' (want ADDR:PORT)\n", listen_at);
        return 2;
    }

    /* The directory: created if missing, locked against a second daemon. */
    if (cm_mkdir_p(g_node.dir, 0755)) {
        cm_log(CM_LOG_ERROR, "cannot create %s: %s", g_node.dir, strerror(errno));
        return 1;
    }
    lockfd = open(g_node.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB)) {
        cm_log(CM_LOG_ERROR, "cannot lock %s: %s (is another cairn-chunkd using it?)",
               g_node.dir, strerror(errno));
        return 1;
    }
    for (int t = 0; t < 2; t++) {
        snprintf(path, sizeof path, "%s/%s", g_node.dir, tree_name[t]);
        if (mkdir(path, 0755) && errno != EEXIST) {
            cm_log(CM_LOG_ERROR, "cannot create %s: %s", path, strerror(errno));
            return 1;
        }
    }
    if (cm_fsync_dir(g_node.dir)) {
        cm_log(CM_LOG_ERROR, "cannot sync %s", g_node.dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/node-id.tmp", g_node.dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/slot.tmp", g_node.dir);
    unlink(path);
    if (load_node_id() || load_slot())
        return 1;
    g_node.nshards = count_shards();

    /* Signals: the HTTP threads inherit the blocked set; main waits. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int slot0 = g_node.slot; /* for the log line: the daemon's threads own them next */
    uint64_t nshards0 = g_node.nshards;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
            MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, access_cb, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_URI_LOG_CALLBACK, uri_cb, NULL, MHD_OPTION_NOTIFY_COMPLETED, done_cb, NULL,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)300, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
    if (!d) {
        cm_log(CM_LOG_ERROR, "cannot listen on %s", listen_at);
        return 1;
    }
    cm_log(CM_LOG_INFO, "cairn-chunkd %s listening on %s, dir %s, slot %d, %llu shards",
           g_node.id, listen_at, g_node.dir, slot0, (unsigned long long)nshards0);
    while (sigwait(&sigs, &sig) != 0)
        ;
    cm_log(CM_LOG_INFO, "signal %d: stopping", sig);
    MHD_stop_daemon(d);
    cm_wipe(sec, sn);
    free(sec);
    close(lockfd);
    return 0;
}

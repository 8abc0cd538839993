/* tests/unit/test_node.c - storage nodes: the protocol's signing and name
 * parsing (node_proto.c), then real cairn-chunkd processes on 127.0.0.1
 * driven through the node backend (be_node.c): shard writes in several
 * appends, range reads, header, stat, verify (and a flipped byte), list,
 * recover, remove, heal copies, blobs; raw requests with bad or missing
 * signatures; a node killed, restarted, wiped; a node holding another slot.
 * Every child gets PR_SET_PDEATHSIG and the test an alarm, so nothing
 * outlives a failed run. */
#include "chunkstore/cs_backend.h"
#include "chunkstore/cs_int.h"
#include "chunkstore/node_proto.h"
#include "tests/unit/tap.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CHUNKD_PATH
#define CHUNKD_PATH "./cairn-chunkd"
#endif

#define SECRET "node-test-secret-0123456789"
#define K 2
#define BS ((uint32_t)1 << 20)
#define SEG_SIZE ((uint64_t)5 << 20) /* 3 stripes: 2 MiB, 2 MiB, 1 MiB */

static char root[256];
static char dir_a[300], dir_b[300];
static int port_a, port_b, port_c, port_dead;
static pid_t pid_a = -1, pid_b = -1, pid_c = -1;

/* ------------------------------------------------------------ processes */

static void kill_children(void)
{
    if (pid_a > 0)
        kill(pid_a, SIGKILL);
    if (pid_b > 0)
        kill(pid_b, SIGKILL);
    if (pid_c > 0)
        kill(pid_c, SIGKILL);
}

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int port_open(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts cairn-chunkd; secret NULL: without CAIRN_CLUSTER_SECRET. Returns
 * the pid once the port accepts connections (or the child exited: then
 * the pid is returned all the same and *exited gets its status). */
static pid_t spawn(int port, const char *dir, const char *secret, int wait_ready)
{
    char listen_at[64], logpath[400];
    pid_t parent = getpid(), pid;

    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", port);
    snprintf(logpath, sizeof logpath, "%s/node-%d.log", root, port);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        if (secret)
            setenv("CAIRN_CLUSTER_SECRET", secret, 1);
        else
            unsetenv("CAIRN_CLUSTER_SECRET");
        execl(CHUNKD_PATH, "cairn-chunkd", "--listen", listen_at, "--dir", dir, "--log-level",
              "debug", (char *)NULL);
        _exit(127);
    }
    if (pid < 0 || !wait_ready)
        return pid;
    for (int i = 0; i < 500; i++) {
        if (port_open(port))
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* Waits up to ms for pid to exit; returns its wait status or -1. */
static int wait_exit(pid_t pid, int ms)
{
    int st;
    for (int i = 0; i < ms / 10; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return st;
        usleep(10000);
    }
    return -1;
}

/* The state letter of /proc/PID/stat ('T' once stopped), or 0. */
static char proc_state(pid_t pid)
{
    char path[64], line[512], *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "r")))
        return 0;
    n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    p = strrchr(line, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

static void stop(pid_t *pid, int sig)
{
    if (*pid > 0) {
        kill(*pid, sig);
        waitpid(*pid, NULL, 0);
    }
    *pid = -1;
}

static int rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

/* ------------------------------------------------------------ raw requests */

enum auth_mode { AUTH_OK, AUTH_WRONG_SECRET, AUTH_NONE, AUTH_WRONG_BODY, AUTH_OLD_DATE,
                 AUTH_GARBAGE };

static size_t sink(char *p, size_t s, size_t n, void *arg)
{
    cm_buf *b = arg;
    cm_buf_append(b, p, s * n);
    return s * n;
}

/* Sends one request to 127.0.0.1:port; returns the HTTP status or -1. */
static long raw(int port, const char *method, const char *path, const void *body, size_t n,
                enum auth_mode mode, cm_buf *out)
{
    char url[1200], date[24], sha[65], auth[96], line[200];
    struct curl_slist *hl = NULL;
    cm_slice secret = CM_SLICE_STR(mode == AUTH_WRONG_SECRET ? "another secret" : SECRET);
    int64_t now = (int64_t)time(NULL) - (mode == AUTH_OLD_DATE ? 1000 : 0);
    long status = -1;
    CURL *h = curl_easy_init();

    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    if (mode == AUTH_WRONG_BODY)
        cs__node_sign_request(secret, method, path, now, "other", 5, date, sha, auth);
    else
        cs__node_sign_request(secret, method, path, now, body, n, date, sha, auth);
    if (mode == AUTH_GARBAGE)
        strcpy(auth, CS__NODE_AUTH_SCHEME " 0123456789abcdef0123456789abcdef0123456789abcdef"
                                          "0123456789abcdef");
    if (mode != AUTH_NONE) {
        snprintf(line, sizeof line, "%s: %s", CS__NODE_HDR_DATE, date);
        hl = curl_slist_append(hl, line);
        snprintf(line, sizeof line, "%s: %s", CS__NODE_HDR_SHA, sha);
        hl = curl_slist_append(hl, line);
        snprintf(line, sizeof line, "Authorization: %s", auth);
        hl = curl_slist_append(hl, line);
    }
    /* A body over the cap waits for the node's 413 (no 100 Continue) instead
     * of racing the node closing the connection under it. */
    hl = curl_slist_append(hl, n > CS__NODE_BODY_MAX ? "Expect: 100-continue" : "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L); /* send "/../" as is */
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    cm_buf tmp = {0};
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out ? out : &tmp);
    if (strcmp(method, "GET")) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body || !strcmp(method, "POST") || !strcmp(method, "PUT")) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        }
    }
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    cm_buf_free(&tmp);
    return status;
}

/* ------------------------------------------------------------ protocol unit tests */

static void test_proto(void)
{
    cm_slice sec = CM_SLICE_STR(SECRET), other = CM_SLICE_STR("not the secret");
    char date[24], sha[65], auth[96], sig[65], sig2[65];
    const char *why = NULL;
    const char *path = "/v1/shard/00112233445566778899aabbccddeeff.3?off=64";
    int64_t now = 1700000000;

    is_int(cs__node_sign_request(sec, "PUT", path, now, "hello", 5, date, sha, auth), 0,
           "sign a request");
    is_str(date, "1700000000", "date header is the unix time");
    is_str(sha, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
           "body hash is SHA-256 of the body");
    ok(!strncmp(auth, "CAIRN-HMAC-SHA256 ", 18) && strlen(auth) == 18 + 64,
       "Authorization is the scheme and 64 hex");
    is_int(cs__node_verify(sec, "PUT", path, date, sha, auth, now, &why), 0, "round trip verifies");
    is_int(cs__node_verify(sec, "PUT", path, date, sha, auth, now + 300, NULL), 0,
           "300 s late still verifies");
    is_int(cs__node_verify(sec, "PUT", path, date, sha, auth, now - 300, NULL), 0,
           "300 s early still verifies");
    is_int(cs__node_verify(sec, "PUT", path, date, sha, auth, now + 301, &why), CM_EAUTH,
           "301 s late is refused (%s)", why);
    is_int(cs__node_verify(sec, "PUT", path, date, sha, auth, now - 301, NULL), CM_EAUTH,
           "301 s early is refused");
    is_int(cs__node_verify(other, "PUT", path, date, sha, auth, now, &why), CM_EAUTH,
           "wrong secret is refused (%s)", why);
    is_int(cs__node_verify(sec, "POST", path, date, sha, auth, now, NULL), CM_EAUTH,
           "changed method is refused");
    is_int(cs__node_verify(sec, "PUT", "/v1/shard/00112233445566778899aabbccddeeff.3?off=65",
                           date, sha, auth, now, NULL),
           CM_EAUTH, "changed query is refused");
    is_int(cs__node_verify(sec, "PUT", "/v1/shard/00112233445566778899aabbccddeeff.4?off=64",
                           date, sha, auth, now, NULL),
           CM_EAUTH, "changed path is refused");
    char sha2[65];
    cs__node_sha256_hex("hellO", 5, sha2);
    is_int(cs__node_verify(sec, "PUT", path, date, sha2, auth, now, NULL), CM_EAUTH,
           "changed body hash is refused");
    is_int(cs__node_verify(sec, "PUT", path, "1700000001", sha, auth, now, NULL), CM_EAUTH,
           "changed date is refused");
    is_int(cs__node_verify(sec, "PUT", path, NULL, sha, auth, now, NULL), CM_EAUTH,
           "missing date is refused");
    is_int(cs__node_verify(sec, "PUT", path, date, sha, NULL, now, NULL), CM_EAUTH,
           "missing Authorization is refused");
    is_int(cs__node_verify(sec, "PUT", path, "17e8", sha, auth, now, NULL), CM_EAUTH,
           "non-decimal date is refused");
    char upper[96];
    strcpy(upper, auth);
    for (char *p = upper + 18; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 32);
    is_int(cs__node_verify(sec, "PUT", path, date, sha, upper, now, NULL), CM_EAUTH,
           "uppercase signature is refused");
    /* Known answer: the signature is HMAC-SHA256 over the four lines. */
    is_int(cs__node_sign(sec, "GET", "/v1/health", "0", CS__NODE_SHA_EMPTY, sig), 0, "sign");
    is_int(cs__node_sign(sec, "GET", "/v1/health", "0", CS__NODE_SHA_EMPTY, sig2), 0, "sign");
    is_str(sig, sig2, "signing is deterministic");
    cs__node_sha256_hex(NULL, 0, sha);
    is_str(sha, CS__NODE_SHA_EMPTY, "hash of no body is SHA-256 of the empty string");

    char c1[17], c2[17];
    cs__node_cluster_id(sec, c1);
    cs__node_cluster_id(other, c2);
    ok(strlen(c1) == 16 && strcmp(c1, c2) != 0, "cluster id is 16 hex, depends on the secret");

    uint8_t id[CS_ID_LEN], want[CS_ID_LEN];
    int index = -1;
    char name[CS__NODE_NAME_MAX];
    for (int i = 0; i < CS_ID_LEN; i++)
        want[i] = (uint8_t)(0x11 * i);
    is_int(cs__node_name_parse(CM_SLICE_STR("00112233445566778899aabbccddeeff.13"), id, &index),
           0, "parse a shard name");
    ok(index == 13 && memcmp(id, want, CS_ID_LEN) == 0, "id and index");
    cs__node_name_format(want, 7, name);
    is_str(name, "00112233445566778899aabbccddeeff.7", "format a shard name");
    static const char *bad[] = {"00112233445566778899aabbccddeeff",
                                "00112233445566778899aabbccddeeff.",
                                "00112233445566778899aabbccddeeff.123",
                                "00112233445566778899AABBCCDDEEFF.1",
                                "00112233445566778899aabbccddeef.1",
                                "00112233445566778899aabbccddeeff.1.part",
                                "../../../../../../../../../etc/pa.1",
                                "00112233445566778899aabbccddeeff.-1",
                                "00112233445566778899aabbccddeeff/1"};
    int nbad = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        nbad += cs__node_name_parse(CM_SLICE_STR(bad[i]), id, &index) == CM_EINVAL;
    is_int(nbad, (int)(sizeof bad / sizeof bad[0]), "malformed shard names are refused");
    is_int(cs__node_id_parse(CM_SLICE_STR("00112233445566778899aabbccddeeff"), id), 0,
           "parse a blob id");
    is_int(cs__node_id_parse(CM_SLICE_STR("00112233445566778899aabbccddeef"), id), CM_EINVAL,
           "short blob id is refused");
}

/* ------------------------------------------------------------ shard images */

/* A whole shard file as the engine would write it: header + blocks + CRCs. */
struct image {
    uint8_t id[CS_ID_LEN];
    int index;
    uint8_t *p;
    size_t len;
};

static void make_image(struct image *im, uint8_t seed, int index)
{
    struct cs_hdr h = {.index = index, .k = K, .m = 1, .block_size = BS, .size = SEG_SIZE};
    uint64_t ns = cs__nstripes(SEG_SIZE, K, BS);

    for (int i = 0; i < CS_ID_LEN; i++)
        im->id[i] = (uint8_t)(seed * 31 + i);
    memcpy(h.id, im->id, CS_ID_LEN);
    im->index = index;
    im->len = cs__shard_len(SEG_SIZE, K, BS);
    im->p = malloc(im->len);
    cs__hdr_encode(&h, im->p);
    uint32_t x = 0x9e3779b9u * (seed + 1);
    for (size_t i = CS__HDR_LEN; i < im->len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        im->p[i] = (uint8_t)x;
    }
    for (uint64_t s = 0; s < ns; s++) {
        uint32_t blen = cs__blen(SEG_SIZE, K, BS, s);
        uint64_t off = cs__stripe_off(BS, s);
        cs__put32(im->p + off + blen, rs_crc32c(0, im->p + off, blen));
    }
}

/* Writes an image through the backend, one append per stripe (block and
 * CRC as two iovs), then commits. */
static int write_image(struct cs__be *be, int d, const struct image *im, int heal, int commit,
                       void **hout)
{
    const struct cs__be_ops *o = be->ops;
    uint64_t ns = cs__nstripes(SEG_SIZE, K, BS);
    void *h;
    int rc = o->w_open(be, d, im->id, im->index, heal, &h);

    if (rc)
        return rc;
    for (uint64_t s = 0; s < ns && !rc; s++) {
        uint32_t blen = cs__blen(SEG_SIZE, K, BS, s);
        uint64_t off = cs__stripe_off(BS, s);
        struct iovec iov[2] = {{im->p + off, blen}, {im->p + off + blen, CS__CRC_LEN}};
        rc = o->w_append(h, off, iov, 2, 0);
    }
    if (!rc && commit)
        rc = o->w_commit(h, im->p);
    if (hout)
        *hout = h;
    else
        o->w_close(h, rc != 0);
    return rc;
}

static void shard_file(const char *dir, const struct image *im, const char *suffix, char *out,
                       size_t n)
{
    char name[CS__NODE_NAME_MAX];
    cs__node_name_format(im->id, im->index, name);
    snprintf(out, n, "%s/shards/%.2s/%s%s", dir, name, name, suffix);
}

/* Sockets in /proc/net/tcp with port on either end, any state (closed
 * connections linger in TIME_WAIT, so this counts connections opened). */
static int count_sockets(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    unsigned lp, rp;
    int n = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, " %*d: %*x:%x %*x:%x", &lp, &rp) == 2 &&
            ((int)lp == port || (int)rp == port))
            n++;
    fclose(f);
    return n;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

struct names {
    int n;
    uint8_t id[16][CS_ID_LEN];
    int index[16];
};

static void collect_shard(void *arg, const uint8_t id[CS_ID_LEN], int index)
{
    struct names *nm = arg;
    if (nm->n < 16) {
        memcpy(nm->id[nm->n], id, CS_ID_LEN);
        nm->index[nm->n] = index;
    }
    nm->n++;
}

static void collect_blob(void *arg, const uint8_t id[CS_ID_LEN])
{
    collect_shard(arg, id, -1);
}

static int has_name(const struct names *nm, const uint8_t id[CS_ID_LEN], int index)
{
    for (int i = 0; i < nm->n && i < 16; i++)
        if (!memcmp(nm->id[i], id, CS_ID_LEN) && nm->index[i] == index)
            return 1;
    return 0;
}

/* ------------------------------------------------------------ the backend against a node */

static void test_shards(struct cs__be *be, struct image *im)
{
    const struct cs__be_ops *o = be->ops;
    char path[600];
    uint64_t len = 0;

    is_int(write_image(be, 0, im, 0, 1, NULL), 0,
           "write a shard in 3 appends (>1 MiB each) and commit");
    shard_file(dir_a, im, "", path, sizeof path);
    ok(exists(path), "committed shard is on disk under DIR/shards/ab/");
    shard_file(dir_a, im, ".part", path, sizeof path);
    ok(!exists(path), "no partial left after commit");
    is_int(o->stat(be, 0, im->id, im->index, &len), 0, "stat");
    is_int(len, im->len, "stat gives the file length");

    /* Range reads. */
    void *r;
    uint8_t *buf = malloc(im->len + 100), hdr[64];
    is_int(o->r_open(be, 0, im->id, im->index, &r), 0, "r_open");
    is_int(o->r_header(r, hdr), 0, "r_header before any read (one request)");
    is_mem(hdr, im->p, 64, "header bytes match");
    struct iovec iov[3] = {{buf, 10}, {buf + 10, 1000}, {buf + 1010, 70000}};
    is_int(o->r_read(r, 12345, iov, 3), 71010, "scattered read of 71010 bytes");
    is_mem(buf, im->p + 12345, 71010, "bytes match");
    struct iovec whole = {buf, im->len + 100};
    is_int(o->r_read(r, 0, &whole, 1), (long long)im->len, "read past the end is short");
    is_mem(buf, im->p, im->len, "whole file matches");
    struct iovec one = {buf, 100};
    is_int(o->r_read(r, im->len, &one, 1), 0, "read at the end gives 0");
    is_int(o->r_read(r, im->len + 5000, &one, 1), 0, "read past the end gives 0");
    is_int(o->r_read(r, im->len - 10, &one, 1), 10, "read across the end is short");
    is_mem(buf, im->p + im->len - 10, 10, "tail bytes match");
    o->r_close(r);
    is_int(o->r_open(be, 0, im->id, im->index, &r), 0, "r_open again");
    is_int(o->r_read(r, 64, &one, 1), 100, "read");
    memset(hdr, 0, sizeof hdr);
    is_int(o->r_header(r, hdr), 0, "r_header after a read");
    is_mem(hdr, im->p, 64, "header captured from the read");
    o->r_close(r);
    uint8_t other[CS_ID_LEN] = {1, 2, 3};
    is_int(o->r_open(be, 0, other, 1, &r), 0, "r_open of a missing shard costs nothing");
    is_int(o->r_read(r, 0, &one, 1), CM_ENOTFOUND, "reading it: not found");
    is_int(o->r_header(r, hdr), CM_ENOTFOUND, "its header: not found");
    o->r_close(r);
    is_int(o->stat(be, 0, other, 1, &len), CM_ENOTFOUND, "stat of a missing shard");
    free(buf);

    /* Connections are kept: 200 requests open (almost) no new ones. */
    int s0 = count_sockets(port_a), nok = 0;
    for (int i = 0; i < 200; i++)
        nok += o->stat(be, 0, im->id, im->index, &len) == 0;
    int s1 = count_sockets(port_a);
    is_int(nok, 200, "200 stats");
    ok(s0 >= 0 && s1 - s0 < 10, "connections reused (%d sockets before, %d after)", s0, s1);

    /* Verify, then rot a byte on disk. */
    struct cs__verify v;
    is_int(o->verify(be, 0, im->id, im->index, &v), 0, "verify");
    ok(v.len == im->len && v.bad_blocks == 0, "verify: full length, no bad block");
    is_mem(v.hdr, im->p, 64, "verify returns the stored header");
    shard_file(dir_a, im, "", path, sizeof path);
    int fd = open(path, O_RDWR);
    uint8_t c;
    off_t rot = (off_t)cs__stripe_off(BS, 1) + 777;
    ok(fd >= 0 && pread(fd, &c, 1, rot) == 1, "read a byte of stripe 1 on disk");
    c ^= 0x40;
    ok(pwrite(fd, &c, 1, rot) == 1, "flip it");
    close(fd);
    is_int(o->verify(be, 0, im->id, im->index, &v), 0, "verify again");
    ok(v.bad_blocks == 1 && v.first_bad == 1, "verify finds stripe 1 bad (%llu bad, first %llu)",
       (unsigned long long)v.bad_blocks, (unsigned long long)v.first_bad);
    is_int(o->verify(be, 0, other, 1, &v), CM_ENOTFOUND, "verify of a missing shard");

    /* A heal copy replaces it at commit; an aborted heal leaves it alone. */
    is_int(write_image(be, 0, im, 1, 1, NULL), 0, "heal copy written and committed");
    is_int(o->verify(be, 0, im->id, im->index, &v), 0, "verify");
    is_int(v.bad_blocks, 0, "the heal replaced the rotten shard");
    void *wh;
    is_int(write_image(be, 0, im, 1, 0, &wh), 0, "heal copy written, not committed");
    shard_file(dir_a, im, ".heal", path, sizeof path);
    ok(exists(path), "it sits in <name>.heal");
    o->w_close(wh, 1);
    ok(!exists(path), "w_close(remove) of a heal drops the .heal file");
    is_int(o->stat(be, 0, im->id, im->index, &len), 0, "... and keeps the committed shard");

    /* An interrupted write: listed nowhere, removed by recover. */
    struct image im2;
    make_image(&im2, 2, 1);
    is_int(write_image(be, 0, &im2, 0, 0, &wh), 0, "second shard written, not committed");
    o->w_close(wh, 0);
    shard_file(dir_a, &im2, ".part", path, sizeof path);
    ok(exists(path), "its data is in <name>.part");
    struct names nm = {0};
    is_int(o->list(be, 0, collect_shard, &nm), 0, "list");
    ok(nm.n == 1 && has_name(&nm, im->id, im->index), "list names the committed shard only (%d)",
       nm.n);
    is_int(o->stat(be, 0, im2.id, im2.index, &len), CM_ENOTFOUND, "uncommitted shard: not found");
    is_int(o->recover(be, 0), 0, "recover");
    ok(!exists(path), "recover removed the .part");
    is_int(o->stat(be, 0, im->id, im->index, &len), 0, "... and kept the committed shard");

    /* w_close(remove) after a commit of a new shard removes it. */
    is_int(write_image(be, 0, &im2, 0, 1, &wh), 0, "second shard committed");
    is_int(o->stat(be, 0, im2.id, im2.index, &len), 0, "stat");
    o->w_close(wh, 1);
    is_int(o->stat(be, 0, im2.id, im2.index, &len), CM_ENOTFOUND,
           "w_close(remove) after commit removed it");

    /* A shard with no appends at all still commits (header only). */
    uint8_t hdr2[64];
    memcpy(hdr2, im2.p, 64);
    is_int(o->w_open(be, 0, im2.id, 5, 0, &wh), 0, "w_open");
    is_int(o->w_commit(wh, hdr2), 0, "commit without appends");
    o->w_close(wh, 0);
    is_int(o->stat(be, 0, im2.id, 5, &len), 0, "stat");
    is_int(len, 64, "header-only shard");
    is_int(o->remove(be, 0, im2.id, 5), 0, "remove");
    is_int(o->stat(be, 0, im2.id, 5, &len), CM_ENOTFOUND, "removed");
    is_int(o->remove(be, 0, im2.id, 5), 0, "removing again is 0");
    free(im2.p);
}

static void test_blobs(struct cs__be *be)
{
    const struct cs__be_ops *o = be->ops;
    uint8_t a[CS_ID_LEN], b[CS_ID_LEN];
    size_t big = 300000;
    uint8_t *p = malloc(big);
    cm_buf out = {0};
    struct names nm = {0};

    memset(a, 0xaa, sizeof a);
    memset(b, 0xbb, sizeof b);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 7);
    is_int(o->blob_put(be, 0, a, "abc", 3), 0, "blob_put small");
    is_int(o->blob_put(be, 0, b, p, big), 0, "blob_put 300 KB");
    cm_buf_append_str(&out, "prefix:");
    is_int(o->blob_get(be, 0, a, &out), 0, "blob_get");
    ok(out.n == 10 && !memcmp(out.p, "prefix:abc", 10), "blob_get appends the bytes");
    cm_buf_reset(&out);
    is_int(o->blob_get(be, 0, b, &out), 0, "blob_get big");
    ok(out.n == big && !memcmp(out.p, p, big), "big blob round trips");
    is_int(o->blob_list(be, 0, collect_blob, &nm), 0, "blob_list");
    ok(nm.n == 2 && has_name(&nm, a, -1) && has_name(&nm, b, -1), "blob_list names both");
    is_int(o->blob_remove(be, 0, a), 0, "blob_remove");
    cm_buf_reset(&out);
    is_int(o->blob_get(be, 0, a, &out), CM_ENOTFOUND, "removed blob: not found");
    is_int(out.n, 0, "out unchanged on failure");
    is_int(o->blob_remove(be, 0, a), 0, "removing again is 0");
    is_int(o->blob_put(be, 0, a, p, 0), 0, "empty blob");
    is_int(o->blob_get(be, 0, a, &out), 0, "blob_get empty");
    is_int(out.n, 0, "empty blob round trips");
    cm_buf_free(&out);
    free(p);
}

static void test_raw(void)
{
    char path[600], name[CS__NODE_NAME_MAX];
    uint8_t id[CS_ID_LEN];
    cm_buf out = {0};

    memset(id, 0x5c, sizeof id);
    cs__node_name_format(id, 3, name);
    snprintf(path, sizeof path, "/v1/shard/%s?off=64", name);
    char file[700];
    snprintf(file, sizeof file, "%s/shards/%.2s/%s.part", dir_a, name, name);

    is_int(raw(port_a, "GET", "/v1/health", NULL, 0, AUTH_NONE, &out), 403, "no auth: 403");
    ok(out.n && out.p[0] == '{' && strstr((char *)out.p, "\"error\""), "with a JSON error body");
    cm_buf_reset(&out);
    is_int(raw(port_a, "GET", "/v1/health", NULL, 0, AUTH_OK, &out), 200, "signed health: 200");
    ok(strstr(cm_buf_str(&out), "\"slot\":0,") && strstr(cm_buf_str(&out), "\"shards\":1,") &&
           strstr(cm_buf_str(&out), "\"free_bytes\":"),
       "health: %s", cm_buf_str(&out));
    is_int(raw(port_a, "PUT", path, "data", 4, AUTH_NONE, NULL), 403, "unsigned PUT: 403");
    is_int(raw(port_a, "PUT", path, "data", 4, AUTH_WRONG_SECRET, NULL), 403,
           "PUT signed with another secret: 403");
    is_int(raw(port_a, "PUT", path, "data", 4, AUTH_GARBAGE, NULL), 403, "wrong HMAC: 403");
    is_int(raw(port_a, "PUT", path, "data", 4, AUTH_WRONG_BODY, NULL), 403,
           "body not matching its signed hash: 403");
    is_int(raw(port_a, "PUT", path, "data", 4, AUTH_OLD_DATE, NULL), 403, "stale date: 403");
    ok(!exists(file), "none of them wrote anything");
    is_int(raw(port_a, "DELETE", "/v1/shard/zz", NULL, 0, AUTH_NONE, NULL), 403,
           "unsigned DELETE: 403");
    is_int(raw(port_a, "PUT", path, "data", 4, AUTH_OK, NULL), 200, "the same PUT signed: 200");
    ok(exists(file), "and written");
    is_int(raw(port_a, "DELETE", path + 0, NULL, 0, AUTH_OK, NULL), 400,
           "DELETE with ?off: 400");
    snprintf(path, sizeof path, "/v1/shard/%s", name);
    is_int(raw(port_a, "DELETE", path, NULL, 0, AUTH_OK, NULL), 204, "DELETE: 204");
    ok(!exists(file), "partial removed");
    is_int(raw(port_a, "DELETE", path, NULL, 0, AUTH_OK, NULL), 204, "DELETE again: 204");
    is_int(raw(port_a, "POST", "/v1/shard/5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c.3?commit", "x", 1,
               AUTH_OK, NULL),
           400, "commit with a short header: 400");
    uint8_t hdr[64] = {0};
    is_int(raw(port_a, "POST", "/v1/shard/5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c.3?commit", hdr, 64,
               AUTH_OK, NULL),
           404, "commit without a partial: 404");
    is_int(raw(port_a, "GET", "/v1/shard/../../node-id", NULL, 0, AUTH_OK, NULL), 400,
           "path traversal: 400");
    is_int(raw(port_a, "GET", "/v1/shard/%2e%2e%2fnode-id.1", NULL, 0, AUTH_OK, NULL), 400,
           "escaped traversal: 400");
    is_int(raw(port_a, "GET", "/v1/shard/5C5C5C5C5C5C5C5C5C5C5C5C5C5C5C5C.3", NULL, 0, AUTH_OK,
               NULL),
           400, "uppercase name: 400");
    is_int(raw(port_a, "GET", "/v1/blob/5c5c", NULL, 0, AUTH_OK, NULL), 400, "short blob id: 400");
    is_int(raw(port_a, "GET", "/v1/nothing", NULL, 0, AUTH_OK, NULL), 404, "unknown path: 404");
    is_int(raw(port_a, "DELETE", "/v1/health", NULL, 0, AUTH_OK, NULL), 405, "wrong method: 405");
    is_int(raw(port_a, "GET", "/v1/health?x=1", NULL, 0, AUTH_OK, NULL), 400, "unknown query: 400");
    char claim[200], cluster[17];
    cs__node_cluster_id(CM_SLICE_STR(SECRET), cluster);
    snprintf(claim, sizeof claim, "/v1/claim?slot=0&cluster=%s", cluster);
    is_int(raw(port_a, "POST", claim, NULL, 0, AUTH_OK, NULL), 200, "same claim again: 200");
    snprintf(claim, sizeof claim, "/v1/claim?slot=5&cluster=%s", cluster);
    cm_buf_reset(&out);
    is_int(raw(port_a, "POST", claim, NULL, 0, AUTH_OK, &out), 409, "claim for another slot: 409");
    ok(out.n && strstr((char *)out.p, "\"claimed\"") && strstr((char *)out.p, "\"slot\":0"),
       "409 names the slot it holds: %s", cm_buf_str(&out));
    size_t big = CS__NODE_BODY_MAX + 1;
    uint8_t *p = calloc(1, big);
    is_int(raw(port_a, "PUT", "/v1/blob/5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c", p, big, AUTH_OK, NULL),
           413, "body over the cap: 413");
    free(p);
    snprintf(file, sizeof file, "%s/blobs/5c/5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c", dir_a);
    ok(!exists(file), "nothing written");
    cm_buf_free(&out);
}

static int wait_up(struct cs__be *be, int d, int want, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        if (be->ops->drive_up(be, d) == want)
            return 1;
        usleep(20000);
    }
    return be->ops->drive_up(be, d) == want;
}

static void read_file(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(out, 1, n - 1, f) : 0;
    out[k] = 0;
    if (f)
        fclose(f);
}

static void test_failures(struct cs__be *be, struct image *im)
{
    const struct cs__be_ops *o = be->ops;
    uint64_t len, e0 = o->epoch(be), e1;
    char path[600], id1[64], id2[64], slot[128];

    snprintf(path, sizeof path, "%s/node-id", dir_a);
    read_file(path, id1, sizeof id1);

    stop(&pid_a, SIGKILL);
    uint64_t t0 = cm_mono_ns();
    is_int(o->stat(be, 0, im->id, im->index, &len), CM_EUNAVAIL, "killed node: CM_EUNAVAIL");
    uint64_t ms = (cm_mono_ns() - t0) / 1000000;
    ok(ms < 1500, "... quickly (%llu ms)", (unsigned long long)ms);
    is_int(o->drive_up(be, 0), 0, "drive_up goes 0");
    void *r;
    uint8_t b[10];
    struct iovec iov = {b, sizeof b};
    is_int(o->r_open(be, 0, im->id, im->index, &r), 0, "r_open");
    is_int(o->r_read(r, 0, &iov, 1), CM_EUNAVAIL, "reads fail fast while down");
    o->r_close(r);
    is_int(o->blob_put(be, 0, im->id, "x", 1), CM_EUNAVAIL, "blob_put too");

    pid_a = spawn(port_a, dir_a, SECRET, 1);
    ok(pid_a > 0, "node restarted");
    ok(wait_up(be, 0, 1, 5000), "drive_up returns to 1");
    e1 = o->epoch(be);
    ok(e1 > e0, "epoch increased (%llu -> %llu)", (unsigned long long)e0, (unsigned long long)e1);
    is_int(o->stat(be, 0, im->id, im->index, &len), 0, "the shard is still there");

    stop(&pid_a, SIGKILL);
    ok(rm_rf(dir_a) == 0, "wipe the node's directory");
    pid_a = spawn(port_a, dir_a, SECRET, 1);
    ok(pid_a > 0, "node restarted on an empty directory (before the probe saw it down)");
    for (int i = 0; i < 250 && o->epoch(be) == e1; i++)
        usleep(20000);
    ok(o->epoch(be) > e1, "epoch increased again (%llu -> %llu)", (unsigned long long)e1,
       (unsigned long long)o->epoch(be));
    ok(wait_up(be, 0, 1, 5000), "drive_up is 1");
    read_file(path, id2, sizeof id2);
    ok(strlen(id2) == 33 && strcmp(id1, id2) != 0, "it has a new node id");
    snprintf(path, sizeof path, "%s/slot", dir_a);
    read_file(path, slot, sizeof slot);
    ok(strstr(slot, "slot 0\n") != NULL, "and was claimed for slot 0 again");
    is_int(o->stat(be, 0, im->id, im->index, &len), CM_ENOTFOUND, "its shards are gone");

    /* A hung node (SIGSTOP): requests time out instead of hanging. */
    kill(pid_a, SIGSTOP);
    for (int i = 0; i < 200 && proc_state(pid_a) != 'T'; i++)
        usleep(5000); /* the signal is delivered asynchronously */
    t0 = cm_mono_ns();
    int rc = o->stat(be, 0, im->id, im->index, &len);
    ms = (cm_mono_ns() - t0) / 1000000;
    is_int(rc, CM_EUNAVAIL, "stopped node: CM_EUNAVAIL");
    ok(ms < 7000, "after the small-request timeout (%llu ms)", (unsigned long long)ms);
    kill(pid_a, SIGCONT);
    ok(wait_up(be, 0, 1, 5000), "up again after SIGCONT");
}

static void test_refused(void)
{
    char url_a[64], url_b[64], url_dead[64], url_c[64], claim[200], cluster[17], dir_c[400];
    const char *urls[4] = {url_a, url_b, url_dead, url_c};
    struct cs__be *be = NULL;
    uint8_t id[CS_ID_LEN] = {9};
    char p[500];

    snprintf(url_a, sizeof url_a, "http://127.0.0.1:%d", port_a);
    snprintf(url_b, sizeof url_b, "http://127.0.0.1:%d/", port_b);
    snprintf(url_dead, sizeof url_dead, "http://127.0.0.1:%d", port_dead);
    snprintf(url_c, sizeof url_c, "http://127.0.0.1:%d", port_c);
    snprintf(dir_c, sizeof dir_c, "%s/c", root);
    pid_c = spawn(port_c, dir_c, "the secret of another cluster", 1);
    ok(pid_c > 0, "a node with another secret started");
    pid_b = spawn(port_b, dir_b, SECRET, 1);
    ok(pid_b > 0, "second node started");
    cs__node_cluster_id(CM_SLICE_STR(SECRET), cluster);
    snprintf(claim, sizeof claim, "/v1/claim?slot=0&cluster=%s", cluster);
    is_int(raw(port_b, "POST", claim, NULL, 0, AUTH_OK, NULL), 200, "claim it for slot 0");
    uint64_t t0 = cm_mono_ns();
    is_int(cs__be_node_open(urls, 4, SECRET, &be), 0, "open over 4 slots (one node down)");
    ok((cm_mono_ns() - t0) / 1000000 < 3000, "open does not wait long for a dead node");
    if (!be)
        return;
    is_int(be->ops->ndrives(be), 4, "4 drives");
    is_int(be->ops->drive_up(be, 0), 1, "slot 0 up");
    is_int(be->ops->drive_up(be, 1), 0, "slot 1 refused: its node holds slot 0");
    is_int(be->ops->drive_up(be, 2), 0, "slot 2 down");
    is_int(be->ops->drive_up(be, 3), 0, "slot 3 down: its node refuses our signature");
    snprintf(p, sizeof p, "%s/slot", dir_c);
    ok(!exists(p), "and was not claimed");
    url_b[strlen(url_b) - 1] = 0;
    is_str(be->ops->drive_name(be, 1), url_b, "drive_name is the URL (no trailing /)");
    is_int(be->ops->blob_put(be, 1, id, "x", 1), CM_EUNAVAIL, "never written to");
    snprintf(p, sizeof p, "%s/blobs/09", dir_b);
    ok(!exists(p), "nothing reached its disk");
    usleep(1200 * 1000); /* a few background probes */
    is_int(be->ops->drive_up(be, 1), 0, "still refused after probes");
    is_int(be->ops->epoch(be), 0, "epoch unchanged");
    be->ops->close(be);
    stop(&pid_b, SIGTERM);
    stop(&pid_c, SIGTERM);
}

static void test_daemon_cli(void)
{
    char d[400];
    snprintf(d, sizeof d, "%s/nosecret", root);
    pid_t pid = spawn(free_port(), d, NULL, 0);
    int st = wait_exit(pid, 5000);
    ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2, "no CAIRN_CLUSTER_SECRET: exit 2");
    pid = spawn(free_port(), d, "", 0);
    st = wait_exit(pid, 5000);
    ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2, "empty secret: exit 2");

    /* A second daemon on the same directory is refused. */
    pid = spawn(free_port(), dir_a, SECRET, 0);
    st = wait_exit(pid, 5000);
    ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "directory in use: exit 1");
}

int main(void)
{
    struct cs__be *be = NULL;
    char url[64];
    const char *urls[1] = {url};
    struct image im;

    alarm(120); /* a hung test dies; its nodes die with it (PDEATHSIG) */
    atexit(kill_children);
    signal(SIGPIPE, SIG_IGN);
    cm_log_level = CM_LOG_ERROR;
    curl_global_init(CURL_GLOBAL_DEFAULT);

    test_proto();

    snprintf(root, sizeof root, "/tmp/cairn-test-node-XXXXXX");
    if (!mkdtemp(root)) {
        ok(0, "mkdtemp");
        return done_testing();
    }
    snprintf(dir_a, sizeof dir_a, "%s/a", root);
    snprintf(dir_b, sizeof dir_b, "%s/b", root);
    port_a = free_port();
    port_b = free_port();
    port_c = free_port();
    port_dead = free_port();
    if (access(CHUNKD_PATH, X_OK) != 0) {
        skip("cairn-chunkd not built at " CHUNKD_PATH);
        goto out;
    }
    pid_a = spawn(port_a, dir_a, SECRET, 1);
    if (!ok(pid_a > 0, "cairn-chunkd started on 127.0.0.1:%d", port_a))
        goto out;
    test_daemon_cli();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port_a);
    is_int(cs__be_node_open(urls, 1, SECRET, &be), 0, "cs__be_node_open");
    if (!be)
        goto out;
    is_str(be->ops->name, "node", "backend name");
    is_int(be->ops->parallel, 1, "parallel");
    is_int(be->ops->drive_up(be, 0), 1, "node up");
    is_int(be->ops->epoch(be), 0, "epoch starts at 0");
    char path[600], slot[128], cluster[17];
    snprintf(path, sizeof path, "%s/slot", dir_a);
    read_file(path, slot, sizeof slot);
    cs__node_cluster_id(CM_SLICE_STR(SECRET), cluster);
    ok(strstr(slot, cluster) && strstr(slot, "slot 0\n"), "open claimed the node for slot 0");

    make_image(&im, 1, 2);
    test_shards(be, &im);
    test_blobs(be);
    test_raw();
    test_failures(be, &im);
    test_refused();
    be->ops->close(be);
    be = NULL;

    stop(&pid_a, SIGTERM);
    pid_a = spawn(port_a, dir_a, SECRET, 1);
    kill(pid_a, SIGTERM);
    int st = wait_exit(pid_a, 5000);
    ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM stops the node cleanly");
    pid_a = -1;
    free(im.p);
out:
    kill_children();
    if (root[0] && tap__fail == 0 && !getenv("CAIRN_TEST_KEEP"))
        rm_rf(root);
    else if (root[0])
        printf("# node logs kept in %s\n", root);
    curl_global_cleanup();
    return done_testing();
}

/* bench/bench.h - internals shared by the cairn-bench files: AWS SigV4 signing
 * (sig.c), the keep-alive HTTP/1.1 client (http.c) and the deterministic object
 * content the reader verifies (bench.c). A private header of the tool; nothing
 * outside bench/ includes it. */
#ifndef BENCH_H
#define BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cm.h"

/* Hex SHA-256 of the empty string: the payload hash of every body-less request. */
#define BENCH_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define BENCH_UNSIGNED "UNSIGNED-PAYLOAD"

/* ------------------------------------------------------------------ sig.c */
/* One header that takes part in the signature. name is lowercase; value is
 * already trimmed. Arrays of these must be sorted by name. Both borrowed. */
struct bench_hdr {
    const char *name;
    const char *value;
};

/* A signer holds the credentials (borrowed; they must outlive it), a cached
 * signing key for the current date and a reusable digest context. One per
 * thread: not thread-safe. */
typedef struct bench_signer bench_signer_t;

/* Returns a new signer or NULL on OOM. service is "s3" for S3. */
bench_signer_t *bench_signer_new(const char *access_key, const char *secret_key,
                                 const char *region, const char *service);
void bench_signer_free(bench_signer_t *s); /* NULL is a no-op; wipes the key */

/* Computes the SigV4 Authorization header value for one request.
 *   method       "GET", "PUT", ...
 *   canon_uri    the path, already URI-encoded once (S3 style), e.g. "/b/k%24"
 *   canon_query  sorted, encoded "a=1&b=2" or ""
 *   hdrs/nhdrs   the signed headers, sorted by name
 *   payload_hash hex sha256 of the body or "UNSIGNED-PAYLOAD"
 *   amz_date     "20130524T000000Z", the value sent in x-amz-date
 *   out          appended with "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 *                Signature=..." (no CRLF)
 * If canon_out is not NULL the canonical request is appended there (debugging).
 * Returns 0 or CM_ENOMEM. */
int bench_sign(bench_signer_t *s, const char *method, const char *canon_uri,
               const char *canon_query, const struct bench_hdr *hdrs, size_t nhdrs,
               const char *payload_hash, const char *amz_date, cm_buf *out,
               cm_buf *canon_out);

/* Writes the 64 hex chars + NUL of SHA-256(p, n) to out. Thread-safe. */
void bench_sha256_hex(const void *p, size_t n, char out[65]);

/* Checks the signer against AWS's published S3 SigV4 examples. Prints one line
 * per case to stdout; returns the number of failures. */
int bench_sig_self_test(void);

/* ----------------------------------------------------------------- sink.c */
/* Runs the webhook receiver on 127.0.0.1:port, logging "EPOCH_SECONDS KEY"
 * per event record to log_path, until SIGINT or SIGTERM. Returns the exit
 * status. */
int bench_sink_run(int port, const char *log_path);

/* ----------------------------------------------------------------- http.c */
/* One keep-alive HTTP/1.1 connection to host:port over plain TCP. Owned by one
 * thread; not thread-safe. */
typedef struct bench_conn bench_conn_t;

/* What to do with a response. Fill in before bench_conn_request(). */
struct bench_resp {
    /* in */
    cm_buf *keep;   /* if not NULL, the body is appended here */
    size_t keep_max; /* append at most this many bytes to keep (0 = all) */
    /* Called with each run of body bytes at its offset; returns false to flag a
     * content mismatch (the body is still drained). May be NULL. */
    bool (*sink)(void *arg, uint64_t off, const uint8_t *p, size_t n);
    void *sink_arg;
    /* out */
    int status;        /* HTTP status code */
    uint64_t body_len; /* body bytes received */
    bool sink_failed;  /* sink returned false at least once */
};

/* Returns a connection (not yet connected: the first request connects) or NULL
 * on OOM. host is a numeric address or a name; port in host order. */
bench_conn_t *bench_conn_new(const char *host, int port, int timeout_s);
void bench_conn_free(bench_conn_t *c); /* NULL is a no-op */

/* Sends one request and reads the whole response.
 *   head  the request line, headers and the empty line, as bytes
 *   body  the request body (may be NULL when bodylen is 0); borrowed
 * A reused connection the peer had closed is reopened and the request sent
 * again once. Returns 0 when a complete response was read (any status), or a
 * negative errno on a transport failure, after which the connection is closed. */
int bench_conn_request(bench_conn_t *c, const void *head, size_t headlen, const void *body,
                       size_t bodylen, struct bench_resp *r);

/* Connects now if not connected. Returns 0 or a negative errno. */
int bench_conn_connect(bench_conn_t *c);

/* Number of TCP connects this connection has made (1 when keep-alive held). */
unsigned bench_conn_connects(const bench_conn_t *c);

/* ---------------------------------------------------------------- content */
/* Object content is a pure function of (seed, offset): 8-byte little-endian
 * words of a SplitMix64 stream. The seed comes from the key's last path
 * component, so a static file written by --prepare-dir and an S3 object of the
 * same name hold the same bytes. */
uint64_t bench_seed(const char *key);
void bench_fill(uint64_t seed, uint64_t off, uint8_t *p, size_t n);
bool bench_check(uint64_t seed, uint64_t off, const uint8_t *p, size_t n);

#endif

/* gateway/sigv4.h - AWS Signature Version 4 on the server side: parsing the
 * Authorization header or presigned query, verifying the signature (sigv4.c),
 * decoding aws-chunked bodies with chunk and trailer signatures
 * (sigv4_stream.c), and the S3 payload checksums (cksum.c). Knows nothing of
 * libmicrohttpd: the HTTP layer describes the request with plain slices. */
#ifndef GW_SIGV4_H
#define GW_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/cm.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_MAX_SKEW 900       /* seconds; header auth: RequestTimeTooSkewed beyond */
#define SIGV4_MAX_EXPIRES 604800 /* seconds; presigned X-Amz-Expires upper bound */
#define SIGV4_MAX_TRAILERS 8     /* trailing headers kept by the chunk decoder */

/* ------------------------------------------------------------ the request */

/* One request header as received: any case, value as sent (the HTTP layer
 * may already have trimmed it). Duplicates are separate entries. */
typedef struct sigv4_header {
    cm_slice name;
    cm_slice value;
} sigv4_header;

/* What the verifier needs to know about a request. Everything is borrowed
 * and must outlive the sigv4_parse/sigv4_verify calls that use it. */
typedef struct sigv4_req {
    cm_slice method;             /* "GET", "PUT", ... as received */
    cm_slice path;               /* raw path as sent on the wire: percent-encoded, no query */
    cm_slice query;              /* raw query string without '?'; empty if none */
    const sigv4_header *headers; /* all request headers; the caller puts the effective
                                    host (e.g. from X-Forwarded-Host) in "host" */
    size_t nheaders;
    time_t now;       /* the server's clock */
    cm_slice region;  /* server region ("us-east-1"); empty accepts any */
    cm_slice service; /* "s3" (the test vectors use "service") */
} sigv4_req;

/* --------------------------------------------------------------- errors */

/* Why a request was refused. sigv4_err_code() gives the S3 error code the
 * gateway answers with; the comment gives code and HTTP status. */
enum sigv4_err {
    SIGV4_OK = 0,
    SIGV4_ERR_ANONYMOUS,        /* no Authorization header, no X-Amz-Algorithm: anonymous
                                   request (not an error by itself; policy decides) */
    SIGV4_ERR_UNSUPPORTED,      /* InvalidRequest 400: SigV2, SigV4a or unknown scheme */
    SIGV4_ERR_MULTIPLE_AUTH,    /* InvalidArgument 400: header and query auth together */
    SIGV4_ERR_HEADER_MALFORMED, /* AuthorizationHeaderMalformed 400 */
    SIGV4_ERR_QUERY_MALFORMED,  /* AuthorizationQueryParametersError 400 (also X-Amz-Expires
                                   out of range) */
    SIGV4_ERR_REGION,           /* AuthorizationHeaderMalformed 400 (header) or
                                   AuthorizationQueryParametersError 400 (presigned): the
                                   credential's region is not the server's; answer with
                                   <Region> set to sigv4_req.region */
    SIGV4_ERR_MISSING_DATE,     /* AccessDenied 403: no x-amz-date / Date */
    SIGV4_ERR_BAD_DATE,         /* AccessDenied 403: unparsable x-amz-date / Date (a
                                   credential date other than the request date is
                                   HEADER_MALFORMED / QUERY_MALFORMED) */
    SIGV4_ERR_SKEWED,           /* RequestTimeTooSkewed 403: |now - date| > 15 min */
    SIGV4_ERR_EXPIRED,          /* AccessDenied 403 "Request has expired" (presigned) */
    SIGV4_ERR_NOT_YET_VALID,    /* AccessDenied 403 "Request is not valid yet" (presigned
                                   X-Amz-Date more than 15 min ahead) */
    SIGV4_ERR_CONTENT_SHA256,   /* InvalidArgument 400: bad x-amz-content-sha256 value */
    SIGV4_ERR_MISSING_LENGTH,   /* MissingContentLength 411: aws-chunked body without a
                                   valid x-amz-decoded-content-length */
    SIGV4_ERR_SIGNATURE,        /* SignatureDoesNotMatch 403 (request, chunk or trailer) */
    SIGV4_ERR_CHUNK_FORMAT,     /* InvalidRequest 400: malformed aws-chunked framing */
    SIGV4_ERR_INCOMPLETE_BODY,  /* IncompleteBody 400: body cut short, or decoded length is
                                   not x-amz-decoded-content-length */
    SIGV4_ERR__COUNT
};

/* S3 error code for e ("SignatureDoesNotMatch"); presigned picks the query
 * flavour for SIGV4_ERR_REGION. Static string. Thread-safe. */
const char *sigv4_err_code(enum sigv4_err e, bool presigned);
/* HTTP status for e (400, 403, 411; 200 for SIGV4_OK). Thread-safe. */
int sigv4_err_status(enum sigv4_err e);

/* ------------------------------------------------------- parsed credential */

/* The body's x-amz-content-sha256 mode. */
enum sigv4_payload {
    SIGV4_PAYLOAD_SHA256 = 0,        /* hex SHA-256 of the body: the caller must hash the body
                                        and compare with payload_sha256 (mismatch:
                                        XAmzContentSHA256Mismatch) */
    SIGV4_PAYLOAD_UNSIGNED,          /* UNSIGNED-PAYLOAD (default for presigned) */
    SIGV4_PAYLOAD_STREAMING,         /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD */
    SIGV4_PAYLOAD_STREAMING_TRAILER, /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER */
    SIGV4_PAYLOAD_UNSIGNED_TRAILER,  /* STREAMING-UNSIGNED-PAYLOAD-TRAILER */
};
/* True for the three aws-chunked modes (body goes through sigv4_stream_*). */
bool sigv4_payload_is_chunked(enum sigv4_payload m);

/* Result of sigv4_parse. Zero-initialise, then release with sigv4_auth_free.
 * Holds no secret; the signature is the client's, not to be logged. */
typedef struct sigv4_auth {
    bool presigned;             /* credential came from the query string */
    char access_key[129];       /* access key id (look the secret up with it) */
    char date[9];               /* credential scope date "20150830" */
    char region[64];            /* credential scope region */
    char service[32];           /* credential scope service */
    char scope[224];            /* "date/region/service/aws4_request" */
    char amz_date[17];          /* request time "20150830T123600Z", as signed */
    time_t t;                   /* the same, as time_t */
    int64_t expires;            /* presigned: X-Amz-Expires seconds; else 0 */
    char *signed_headers;       /* "host;x-amz-date" (malloc()ed; freed by sigv4_auth_free) */
    char *security_token;       /* X-Amz-Security-Token or NULL (malloc()ed); validating it
                                   is the caller's business */
    uint8_t signature[32];      /* the client's signature, decoded */
    enum sigv4_payload payload; /* payload mode */
    char payload_hash[72];      /* the value used as HashedPayload in the canonical request */
    uint8_t payload_sha256[32]; /* SIGV4_PAYLOAD_SHA256: the digest the body must have */
    bool payload_defaulted;     /* x-amz-content-sha256 was absent (header auth: the empty
                                   body's hash is assumed, as MinIO does) */
    int64_t decoded_length;     /* x-amz-decoded-content-length, or -1 if absent */
    enum sigv4_err err;         /* why sigv4_parse/sigv4_verify failed */
    char errmsg[256];           /* S3 <Message> for err; never contains secrets */
} sigv4_auth;

/* Everything chunk and trailer signatures chain from; filled by a successful
 * sigv4_verify. Contains the signing key: wipe with sigv4_seed_wipe. */
typedef struct sigv4_seed {
    uint8_t key[32];       /* signing key (secret) */
    uint8_t signature[32]; /* the request (seed) signature */
    char amz_date[17];     /* request time as signed */
    char scope[224];       /* credential scope */
} sigv4_seed;

/* Finds and parses the SigV4 credential of req: the Authorization header or,
 * if X-Amz-Algorithm is in the query, the presigned parameters. Checks the
 * syntax, the scope (service, "aws4_request", region unless req->region is
 * empty), the date against req->now (15 min skew for header auth, expiry for
 * presigned), and x-amz-content-sha256 (header or X-Amz-Content-Sha256 query
 * parameter; absent: UNSIGNED-PAYLOAD when presigned, the empty body's hash
 * otherwise). Does not need the secret and does not check the signature.
 * Returns 0, CM_EAUTH with out->err/out->errmsg set (SIGV4_ERR_ANONYMOUS if
 * the request carries no SigV4 credential at all), or CM_ENOMEM. out must be
 * zeroed or freed; free it with sigv4_auth_free whatever the result.
 * Thread-safe. */
int sigv4_parse(const sigv4_req *req, sigv4_auth *out);

/* Releases what sigv4_parse allocated and zeroes a. NULL is a no-op. */
void sigv4_auth_free(sigv4_auth *a);

/* Derives the signing key HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region),
 * service), "aws4_request") into key[32]. Depends only on (secret, date,
 * region, service), so a caller may cache it per that tuple (wipe the cached
 * copies with cm_wipe). Returns 0 or CM_ENOMEM. Thread-safe. */
int sigv4_signing_key(cm_slice secret, cm_slice date, cm_slice region, cm_slice service,
                      uint8_t key[32]);

/* Builds the canonical request of req as signed by auth (S3 rules: the raw
 * path is not normalised, only re-encoded; X-Amz-Signature is left out of the
 * query when presigned) and appends it to out. Returns 0 or CM_ENOMEM. */
int sigv4_canonical_request(const sigv4_req *req, const sigv4_auth *auth, cm_buf *out);

/* Appends the string to sign for a canonical request to out:
 * "AWS4-HMAC-SHA256\n" amz_date "\n" scope "\n" hex(SHA-256(creq)).
 * Returns 0 or CM_ENOMEM. */
int sigv4_string_to_sign(const sigv4_auth *auth, cm_slice creq, cm_buf *out);

/* sig[32] = HMAC-SHA256(key, sts). Returns 0 or CM_ENOMEM. */
int sigv4_sign(const uint8_t key[32], cm_slice sts, uint8_t sig[32]);

/* Verifies auth's signature for req with the signing key (from
 * sigv4_signing_key over auth->date/region/service, possibly cached).
 * Compares in constant time. If creq/sts are not NULL the canonical request
 * and string to sign are appended to them (the gateway puts them in the
 * SignatureDoesNotMatch body). On success fills seed (if not NULL) for
 * sigv4_stream_new. Returns 0, CM_EAUTH (auth->err = SIGV4_ERR_SIGNATURE) or
 * CM_ENOMEM. Thread-safe. */
int sigv4_verify_key(const sigv4_req *req, sigv4_auth *auth, const uint8_t key[32],
                     cm_buf *creq /* OUT, optional */, cm_buf *sts /* OUT, optional */,
                     sigv4_seed *seed /* OUT, optional */);

/* Same, deriving the key from the secret access key. The key is wiped
 * before returning (a copy stays in seed). */
int sigv4_verify(const sigv4_req *req, sigv4_auth *auth, cm_slice secret,
                 cm_buf *creq /* OUT, optional */, cm_buf *sts /* OUT, optional */,
                 sigv4_seed *seed /* OUT, optional */);

/* Wipes a seed (it holds the signing key). */
void sigv4_seed_wipe(sigv4_seed *seed);

/* ------------------------------------------------- aws-chunked (stream.c) */

/* Wire format (all modes; sizes in hex, lines end in CRLF):
 *   chunk   = hex-size [";chunk-signature=" 64hex] CRLF data CRLF
 *   body    = *chunk final
 *   final   = "0" [";chunk-signature=" 64hex] CRLF trailers
 *   no-trailer modes:  trailers = CRLF
 *   trailer modes:     trailers = *(name ":" value CRLF)
 *                                 ["x-amz-trailer-signature:" 64hex CRLF] CRLF
 * Signed modes require chunk-signature on every chunk (the final one too);
 * STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER also requires the trailer
 * signature. In STREAMING-UNSIGNED-PAYLOAD-TRAILER the body may end right
 * after a trailer line (the AWS SDK for JavaScript v3 omits the last CRLF
 * when it sends no trailer). */

/* Receives decoded payload bytes. Return 0 to go on or a negative CM_E* code
 * to stop decoding (sigv4_stream_feed returns it). */
typedef int (*sigv4_sink_fn)(void *arg, const uint8_t *p, size_t n);

typedef struct sigv4_stream sigv4_stream_t;

/* Creates a decoder for an aws-chunked body in mode (one of the chunked
 * sigv4_payload values). seed (copied; may be wiped afterwards) is required
 * for the signed modes and ignored otherwise. decoded_length is
 * x-amz-decoded-content-length (or -1 to skip the check). Decoded bytes go
 * to sink(arg, ...). Returns NULL on OOM or bad arguments. Free with
 * sigv4_stream_free. One stream per request; not thread-safe. */
sigv4_stream_t *sigv4_stream_new(enum sigv4_payload mode, const sigv4_seed *seed,
                                 int64_t decoded_length, sigv4_sink_fn sink, void *arg);

/* Feeds n raw body bytes, split anywhere. Payload bytes reach the sink
 * before their chunk's signature is checked (at the chunk's end): nothing
 * may be committed before sigv4_stream_finish succeeds. Returns 0, CM_EAUTH
 * (sigv4_stream_err says why: SIGNATURE, CHUNK_FORMAT, INCOMPLETE_BODY),
 * the sink's error, or CM_ENOMEM. After an error every call fails again. */
int sigv4_stream_feed(sigv4_stream_t *s, const void *p, size_t n);

/* Declares the end of the body: checks the stream ended where it may, every
 * signature matched and the decoded length. Returns 0 or CM_EAUTH. */
int sigv4_stream_finish(sigv4_stream_t *s);

/* Why the last feed/finish failed (SIGV4_OK if it did not). */
enum sigv4_err sigv4_stream_err(const sigv4_stream_t *s);

/* Decoded payload bytes so far. */
uint64_t sigv4_stream_decoded(const sigv4_stream_t *s);

/* Trailing headers received (after a successful finish): names lowercased,
 * values trimmed, x-amz-trailer-signature not included. Borrowed; valid
 * until sigv4_stream_free. Sets *n. */
const sigv4_header *sigv4_stream_trailers(const sigv4_stream_t *s, size_t *n /* OUT */);

/* Finds a trailer by (lowercase) name; returns false if absent. */
bool sigv4_stream_trailer(const sigv4_stream_t *s, const char *name, cm_slice *value /* OUT */);

/* Wipes the signing key and frees s. NULL is a no-op. */
void sigv4_stream_free(sigv4_stream_t *s);

/* ---------------------------------------------------- checksums (cksum.c) */

/* Payload digests: the S3 x-amz-checksum-* algorithms, plus MD5 (ETag,
 * Content-MD5) and SHA-256 (signed payloads), which share the interface. */
enum gw_cksum_algo {
    GW_CKSUM_NONE = 0,
    GW_CKSUM_CRC32,     /* x-amz-checksum-crc32     (4 bytes, big-endian) */
    GW_CKSUM_CRC32C,    /* x-amz-checksum-crc32c    (4 bytes, big-endian) */
    GW_CKSUM_CRC64NVME, /* x-amz-checksum-crc64nvme (8 bytes, big-endian) */
    GW_CKSUM_SHA1,      /* x-amz-checksum-sha1      (20 bytes) */
    GW_CKSUM_SHA256,    /* x-amz-checksum-sha256    (32 bytes) */
    GW_CKSUM_MD5,       /* not an S3 checksum: ETag and Content-MD5 (16 bytes) */
};

#define GW_CKSUM_MAX_DIGEST 32
#define GW_CKSUM_MAX_B64 48 /* base64 of the largest digest plus NUL */

/* A running digest. Zero-initialise, gw_cksum_init, update, final; call
 * gw_cksum_free on paths that skip final. Not thread-safe. */
typedef struct gw_cksum {
    enum gw_cksum_algo algo;
    uint64_t crc; /* CRC algorithms: running value */
    void *md;     /* hash algorithms: an EVP_MD_CTX, or for MD5 an rs_md5_t (cksum.c only) */
} gw_cksum;

/* Starts a digest. Returns 0, CM_EINVAL (bad algo) or CM_ENOMEM. */
int gw_cksum_init(gw_cksum *c, enum gw_cksum_algo algo);
/* Adds n bytes. Returns 0 or CM_EINVAL (not initialised / hash failure). */
int gw_cksum_update(gw_cksum *c, const void *p, size_t n);
/* gw_cksum_update of both c and also with the same bytes; an MD5 beside a
 * SHA-1 or SHA-256 is computed interleaved (a PUT's ETag and its signed
 * payload hash: about 1.3 us less per 4 KiB). */
int gw_cksum_update2(gw_cksum *c, gw_cksum *also, const void *p, size_t n);
/* Finishes: writes the digest (CRCs big-endian, as S3 sends them) to
 * digest[GW_CKSUM_MAX_DIGEST] and its size to *n, and releases c. */
int gw_cksum_final(gw_cksum *c, uint8_t *digest /* OUT */, size_t *n /* OUT */);
/* Same, writing the base64 form S3 uses in x-amz-checksum-* headers to
 * out[GW_CKSUM_MAX_B64] (NUL-terminated). */
int gw_cksum_final_b64(gw_cksum *c, char *out /* OUT */);
/* Releases c without a result; safe on a zeroed or finished c. */
void gw_cksum_free(gw_cksum *c);

/* Parses an algorithm from an x-amz-checksum-algorithm or
 * x-amz-sdk-checksum-algorithm value ("CRC32", "crc64nvme"...) or a header
 * name ("x-amz-checksum-crc32c", as in x-amz-trailer), case-insensitively.
 * Never yields GW_CKSUM_MD5. Returns 0 or CM_EINVAL. */
int gw_cksum_algo_parse(cm_slice s, enum gw_cksum_algo *out /* OUT */);
/* "CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256", "MD5"; "" for NONE. */
const char *gw_cksum_algo_name(enum gw_cksum_algo a);
/* "x-amz-checksum-crc32" ...; NULL for NONE and MD5. */
const char *gw_cksum_header_name(enum gw_cksum_algo a);
/* Digest size in bytes (0 for NONE). */
size_t gw_cksum_digest_size(enum gw_cksum_algo a);
/* Decodes a base64 checksum value as sent by a client and checks its size.
 * Returns 0 or CM_EINVAL (S3: InvalidRequest "Value for x-amz-checksum-...
 * header is invalid."). */
int gw_cksum_decode_b64(enum gw_cksum_algo a, cm_slice b64,
                        uint8_t *digest /* OUT: GW_CKSUM_MAX_DIGEST */);

/* One-shot SHA-256 of p[n] into out[32]. Returns 0 or CM_ENOMEM. */
int gw_sha256(const void *p, size_t n, uint8_t out[32]);
/* HMAC-SHA256 (RFC 2104) of p[n] under key[keylen] into out[32]. Returns 0
 * or CM_ENOMEM. */
int gw_hmac_sha256(const void *key, size_t keylen, const void *p, size_t n, uint8_t out[32]);
/* OpenSSL's SHA-256, fetched once (an EVP_MD), for streaming digests. */
struct evp_md_st;
const struct evp_md_st *gw_sha256_md(void);

#endif

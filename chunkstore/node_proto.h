/* chunkstore/node_proto.h - the storage-node protocol shared by the daemon
 * (chunkd.c) and the gateway's client backend (be_node.c): header names,
 * limits, request signing and verification, the cluster id, and the shard
 * and blob names that appear in paths. No HTTP library here: plain strings
 * in, strings out. See doc/nodes.md for the whole protocol. Private to
 * chunkstore/. */
#ifndef CS_NODE_PROTO_H
#define CS_NODE_PROTO_H

#include "chunkstore/cs.h"

/* ------------------------------------------------------------ headers */
#define CS__NODE_HDR_DATE "X-Cairn-Date"            /* unix seconds, decimal */
#define CS__NODE_HDR_SHA "X-Cairn-Content-SHA256"   /* lowercase hex SHA-256 of the body */
#define CS__NODE_HDR_AUTH "Authorization"           /* CS__NODE_AUTH_SCHEME " " <64 hex> */
#define CS__NODE_HDR_SHARD "X-Cairn-Shard-Header"   /* 128 hex: a shard's first 64 bytes */
#define CS__NODE_HDR_LEN "X-Cairn-Length"           /* HEAD: shard file length */
#define CS__NODE_AUTH_SCHEME "CAIRN-HMAC-SHA256"

/* ------------------------------------------------------------- limits */
#define CS__NODE_SKEW 300                   /* accepted clock difference, seconds (either way) */
/* Largest request body a node buffers (413 above): 16 MiB of payload plus
 * 64 KiB of framing, so that a manifest blob of CS__MF_MAX body bytes and
 * its header fits. Data requests are 1 MiB. */
#define CS__NODE_BODY_MAX (((size_t)16 << 20) + ((size_t)64 << 10))
#define CS__NODE_PATH_MAX 1024               /* longest signed path-with-query */
#define CS__NODE_SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* "<32 hex>.<index>" plus NUL: the longest shard name is 32+1+2 chars. */
#define CS__NODE_NAME_MAX 36
#define CS__NODE_MAX_INDEX 99 /* names carry 1 or 2 decimal digits */

/* ------------------------------------------------------------ hashing */
/* Writes the lowercase hex SHA-256 of p[0..n) (64 chars + NUL) to out.
 * Thread-safe. */
void cs__node_sha256_hex(const void *p, size_t n, char out[65]);

/* ------------------------------------------------------------ signing */
/* Computes the request signature:
 *   HMAC-SHA256(secret, method "\n" path "\n" date "\n" body_sha)
 * as 64 lowercase hex chars + NUL in out. path is the path with its query
 * exactly as it appears in the request line; date the decimal unix seconds
 * exactly as sent in X-Cairn-Date; body_sha the X-Cairn-Content-SHA256
 * value. All strings are NUL-terminated and borrowed. Returns 0, or
 * CM_EINVAL if path is longer than CS__NODE_PATH_MAX or any argument is
 * NULL. Thread-safe; wipes its intermediate copies. */
int cs__node_sign(cm_slice secret, const char *method, const char *path, const char *date,
                  const char *body_sha, char out[65]);

/* Fills the three auth header values for a request sent now (date = now,
 * unix seconds): date_out (decimal, NUL-terminated, size >= 24), sha_out
 * (hex SHA-256 of body[0..nbody); body may be NULL when nbody is 0) and
 * auth_out (CS__NODE_AUTH_SCHEME " " signature; size >= 96). Returns 0 or
 * CM_EINVAL (see cs__node_sign). Thread-safe. */
int cs__node_sign_request(cm_slice secret, const char *method, const char *path, int64_t now,
                          const void *body, size_t nbody, char date_out[24], char sha_out[65],
                          char auth_out[96]);

/* Checks a request's headers against the secret (constant-time compare):
 * date, body_sha and auth are the raw header values (NULL if absent).
 * Accepts only a decimal date within CS__NODE_SKEW seconds of now, a
 * 64-char lowercase hex body_sha and "CAIRN-HMAC-SHA256 <64 hex>" whose
 * signature matches. The body itself is NOT checked here: the caller
 * compares its SHA-256 with body_sha before acting. Returns 0, or CM_EAUTH
 * with *why (optional) set to a static reason for the log and the 403 body.
 * Thread-safe. */
int cs__node_verify(cm_slice secret, const char *method, const char *path, const char *date,
                    const char *body_sha, const char *auth, int64_t now, const char **why);

/* The cluster id a gateway claims nodes for: the first 16 hex chars of
 * HMAC-SHA256(secret, "cairn cluster id"), NUL-terminated in out. Every
 * gateway sharing the secret computes the same id. Thread-safe. */
void cs__node_cluster_id(cm_slice secret, char out[17]);

/* -------------------------------------------------------------- names */
/* Parses a shard name: exactly ^[0-9a-f]{32}\.[0-9]{1,2}$. Returns 0 and
 * id/index, or CM_EINVAL (nothing written). */
int cs__node_name_parse(cm_slice s, uint8_t id[CS_ID_LEN], int *index);
/* Parses a blob id: exactly ^[0-9a-f]{32}$. Returns 0 or CM_EINVAL. */
int cs__node_id_parse(cm_slice s, uint8_t id[CS_ID_LEN]);
/* Writes "<32 hex>.<index>" + NUL (index 0..99) to out. */
void cs__node_name_format(const uint8_t id[CS_ID_LEN], int index, char out[CS__NODE_NAME_MAX]);

#endif

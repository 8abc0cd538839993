/* chunkstore/node_proto.c - the storage-node protocol's shared pieces:
 * request signatures (HMAC-SHA256 over method, path, date and body hash),
 * their verification with a clock window, the cluster id, and the strict
 * shard/blob name parsers. No I/O, no HTTP library. */
#include "chunkstore/node_proto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>

void cs__node_sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t h[SHA256_DIGEST_LENGTH];

    SHA256(n ? p : (const void *)"", n, h);
    cm_hex_encode(h, sizeof h, out);
}

static int hmac_sha256(cm_slice key, const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;

    if (key.n > 0x7fffffff)
        return CM_EINVAL;
    if (!HMAC(EVP_sha256(), key.n ? key.p : (const uint8_t *)"", (int)key.n, p, n, out, &len) ||
        len != 32)
        return CM_EIO;
    return 0;
}

int cs__node_sign(cm_slice secret, const char *method, const char *path, const char *date,
                  const char *body_sha, char out[65])
{
    char msg[CS__NODE_PATH_MAX + 256];
    uint8_t mac[32];
    int n, rc;

    if (!method || !path || !date || !body_sha || strlen(path) > CS__NODE_PATH_MAX ||
        strlen(method) > 16 || strlen(date) > 32 || strlen(body_sha) > 64)
        return CM_EINVAL;
    n = snprintf(msg, sizeof msg, "%s\n%s\n%s\n%s", method, path, date, body_sha);
    if (n < 0 || (size_t)n >= sizeof msg)
        return CM_EINVAL;
    rc = hmac_sha256(secret, msg, (size_t)n, mac);
    if (rc == 0)
        cm_hex_encode(mac, sizeof mac, out);
    cm_wipe(mac, sizeof mac);
    return rc;
}

int cs__node_sign_request(cm_slice secret, const char *method, const char *path, int64_t now,
                          const void *body, size_t nbody, char date_out[24], char sha_out[65],
                          char auth_out[96])
{
    char sig[65];
    int rc;

    snprintf(date_out, 24, "%lld", (long long)now);
    cs__node_sha256_hex(body, nbody, sha_out);
    if ((rc = cs__node_sign(secret, method, path, date_out, sha_out, sig)) != 0)
        return rc;
    snprintf(auth_out, 96, "%s %s", CS__NODE_AUTH_SCHEME, sig);
    return 0;
}

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int fail(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return CM_EAUTH;
}

int cs__node_verify(cm_slice secret, const char *method, const char *path, const char *date,
                    const char *body_sha, const char *auth, int64_t now, const char **why)
{
    static const char scheme[] = CS__NODE_AUTH_SCHEME " ";
    char want[65];
    int64_t t = 0;
    size_t dn;
    int rc;

    if (!auth)
        return fail(why, "missing Authorization");
    if (!date)
        return fail(why, "missing " CS__NODE_HDR_DATE);
    if (!body_sha)
        return fail(why, "missing " CS__NODE_HDR_SHA);
    if (!method || !path)
        return fail(why, "bad request line");
    dn = strlen(date);
    if (dn == 0 || dn > 18)
        return fail(why, "bad " CS__NODE_HDR_DATE);
    for (size_t i = 0; i < dn; i++) {
        if (date[i] < '0' || date[i] > '9')
            return fail(why, "bad " CS__NODE_HDR_DATE);
        t = t * 10 + (date[i] - '0');
    }
    if (t < now - CS__NODE_SKEW || t > now + CS__NODE_SKEW)
        return fail(why, "date outside the clock window");
    if (strlen(body_sha) != 64 || !is_lower_hex(body_sha, 64))
        return fail(why, "bad " CS__NODE_HDR_SHA);
    if (strncmp(auth, scheme, sizeof scheme - 1) != 0)
        return fail(why, "bad Authorization scheme");
    auth += sizeof scheme - 1;
    if (strlen(auth) != 64 || !is_lower_hex(auth, 64))
        return fail(why, "bad signature");
    if ((rc = cs__node_sign(secret, method, path, date, body_sha, want)) != 0)
        return fail(why, rc == CM_EINVAL ? "path too long" : "cannot compute signature");
    rc = CRYPTO_memcmp(want, auth, 64) == 0 ? 0 : fail(why, "signature does not match");
    cm_wipe(want, sizeof want);
    return rc;
}

void cs__node_cluster_id(cm_slice secret, char out[17])
{
    static const char label[] = "cairn cluster id";
    uint8_t mac[32];
    char hex[65];

    if (hmac_sha256(secret, label, sizeof label - 1, mac) != 0)
        memset(mac, 0, sizeof mac);
    cm_hex_encode(mac, sizeof mac, hex);
    memcpy(out, hex, 16);
    out[16] = 0;
    cm_wipe(mac, sizeof mac);
}

int cs__node_id_parse(cm_slice s, uint8_t id[CS_ID_LEN])
{
    if (s.n != 2 * CS_ID_LEN || !is_lower_hex((const char *)s.p, s.n))
        return CM_EINVAL;
    return cm_hex_decode((const char *)s.p, s.n, id);
}

int cs__node_name_parse(cm_slice s, uint8_t id[CS_ID_LEN], int *index)
{
    uint8_t tmp[CS_ID_LEN];
    size_t nd;
    int v = 0;

    if (s.n < 2 * CS_ID_LEN + 2 || s.n > 2 * CS_ID_LEN + 3 || s.p[2 * CS_ID_LEN] != '.')
        return CM_EINVAL;
    nd = s.n - 2 * CS_ID_LEN - 1;
    for (size_t i = 0; i < nd; i++) {
        uint8_t c = s.p[2 * CS_ID_LEN + 1 + i];
        if (c < '0' || c > '9')
            return CM_EINVAL;
        v = v * 10 + (c - '0');
    }
    if (cs__node_id_parse(CM_SLICE(s.p, 2 * CS_ID_LEN), tmp) != 0)
        return CM_EINVAL;
    memcpy(id, tmp, CS_ID_LEN);
    *index = v;
    return 0;
}

void cs__node_name_format(const uint8_t id[CS_ID_LEN], int index, char out[CS__NODE_NAME_MAX])
{
    cm_hex_encode(id, CS_ID_LEN, out);
    snprintf(out + 2 * CS_ID_LEN, CS__NODE_NAME_MAX - 2 * CS_ID_LEN, ".%d",
             index < 0 ? 0 : index > CS__NODE_MAX_INDEX ? CS__NODE_MAX_INDEX : index);
}

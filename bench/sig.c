/* bench/sig.c - AWS Signature Version 4 (header form) for cairn-bench: canonical
 * request, string to sign, cached signing key, HMAC-SHA256 over OpenSSL EVP, and
 * the --self-test known answers from AWS's documentation. No HTTP here: callers
 * pass the already-encoded path, query and sorted headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "bench/bench.h"

#define SHA256_LEN 32
#define SHA256_BLOCK 64

struct bench_signer {
    const char *access_key; /* borrowed */
    const char *secret_key; /* borrowed */
    const char *region;     /* borrowed */
    const char *service;    /* borrowed */
    char date[9];           /* YYYYMMDD the cached key is for; "" = none */
    uint8_t key[SHA256_LEN]; /* signing key for date; wiped on free */
    EVP_MD *md;             /* SHA-256, fetched once (an implicit fetch locks) */
    EVP_MD_CTX *ctx;        /* reused for every digest */
    cm_buf canon;           /* scratch: canonical request */
    cm_buf sts;             /* scratch: string to sign */
};

/* The digest is fetched once per signer and the context reused, so a signature
 * costs a few microseconds and takes no lock. */
static void digest(bench_signer_t *s, const void *a, size_t an, const void *b, size_t bn,
                   uint8_t out[SHA256_LEN])
{
    unsigned int len = SHA256_LEN;
    EVP_DigestInit_ex(s->ctx, s->md, NULL);
    EVP_DigestUpdate(s->ctx, a, an);
    if (bn)
        EVP_DigestUpdate(s->ctx, b, bn);
    EVP_DigestFinal_ex(s->ctx, out, &len);
}

/* HMAC-SHA256 (RFC 2104) built on the digest context. */
static void hmac(bench_signer_t *s, const void *key, size_t keylen, const void *msg, size_t msglen,
                 uint8_t out[SHA256_LEN])
{
    uint8_t k[SHA256_BLOCK] = {0}, pad[SHA256_BLOCK], inner[SHA256_LEN];

    if (keylen > SHA256_BLOCK)
        digest(s, key, keylen, NULL, 0, k);
    else
        memcpy(k, key, keylen);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    digest(s, pad, sizeof pad, msg, msglen, inner);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    digest(s, pad, sizeof pad, inner, sizeof inner, out);
    cm_wipe(k, sizeof k);
    cm_wipe(pad, sizeof pad);
}

void bench_sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t md[SHA256_LEN];
    unsigned int len = SHA256_LEN;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    cm_hex_encode(md, sizeof md, out);
}

bench_signer_t *bench_signer_new(const char *access_key, const char *secret_key,
                                 const char *region, const char *service)
{
    bench_signer_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->ctx = EVP_MD_CTX_new();
    s->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!s->ctx || !s->md) {
        EVP_MD_CTX_free(s->ctx);
        EVP_MD_free(s->md);
        free(s);
        return NULL;
    }
    s->access_key = access_key;
    s->secret_key = secret_key;
    s->region = region;
    s->service = service;
    return s;
}

void bench_signer_free(bench_signer_t *s)
{
    if (!s)
        return;
    cm_wipe(s->key, sizeof s->key);
    EVP_MD_CTX_free(s->ctx);
    EVP_MD_free(s->md);
    cm_buf_free(&s->canon);
    cm_buf_free(&s->sts);
    free(s);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static void signing_key(bench_signer_t *s, const char *date)
{
    size_t slen = strlen(s->secret_key);
    char *k0 = malloc(slen + 5);
    uint8_t a[SHA256_LEN], b[SHA256_LEN];

    if (!k0)
        abort();
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, s->secret_key, slen + 1);
    hmac(s, k0, slen + 4, date, strlen(date), a);
    hmac(s, a, sizeof a, s->region, strlen(s->region), b);
    hmac(s, b, sizeof b, s->service, strlen(s->service), a);
    hmac(s, a, sizeof a, "aws4_request", 12, s->key);
    memcpy(s->date, date, 9);
    cm_wipe(k0, slen + 4);
    cm_wipe(a, sizeof a);
    cm_wipe(b, sizeof b);
    free(k0);
}

int bench_sign(bench_signer_t *s, const char *method, const char *canon_uri,
               const char *canon_query, const struct bench_hdr *hdrs, size_t nhdrs,
               const char *payload_hash, const char *amz_date, cm_buf *out, cm_buf *canon_out)
{
    char date[9], hex[2 * SHA256_LEN + 1];
    uint8_t md[SHA256_LEN];
    int rc = 0;

    memcpy(date, amz_date, 8);
    date[8] = 0;
    if (strcmp(date, s->date) != 0)
        signing_key(s, date);

    cm_buf_reset(&s->canon);
    rc |= cm_buf_printf(&s->canon, "%s\n%s\n%s\n", method, canon_uri, canon_query);
    for (size_t i = 0; i < nhdrs; i++)
        rc |= cm_buf_printf(&s->canon, "%s:%s\n", hdrs[i].name, hdrs[i].value);
    rc |= cm_buf_append_byte(&s->canon, '\n');
    for (size_t i = 0; i < nhdrs; i++) {
        if (i)
            rc |= cm_buf_append_byte(&s->canon, ';');
        rc |= cm_buf_append_str(&s->canon, hdrs[i].name);
    }
    rc |= cm_buf_printf(&s->canon, "\n%s", payload_hash);
    if (rc)
        return CM_ENOMEM;
    if (canon_out && cm_buf_append_slice(canon_out, cm_buf_slice(&s->canon)))
        return CM_ENOMEM;

    digest(s, s->canon.p, s->canon.n, NULL, 0, md);
    cm_hex_encode(md, sizeof md, hex);
    cm_buf_reset(&s->sts);
    if (cm_buf_printf(&s->sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date,
                      s->region, s->service, hex))
        return CM_ENOMEM;
    hmac(s, s->key, sizeof s->key, s->sts.p, s->sts.n, md);
    cm_hex_encode(md, sizeof md, hex);

    rc |= cm_buf_printf(out, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=",
                        s->access_key, date, s->region, s->service);
    for (size_t i = 0; i < nhdrs; i++) {
        if (i)
            rc |= cm_buf_append_byte(out, ';');
        rc |= cm_buf_append_str(out, hdrs[i].name);
    }
    rc |= cm_buf_printf(out, ", Signature=%s", hex);
    return rc ? CM_ENOMEM : 0;
}

/* ------------------------------------------------------------- self-test */
/* Worked examples from "Signature Calculations for the Authorization Header"
 * (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html) and
 * get-vanilla from AWS's aws-sig-v4-test-suite. */
struct sig_case {
    const char *name;
    const char *ak, *sk, *region, *service, *date;
    const char *method, *uri, *query;
    struct bench_hdr hdrs[6];
    size_t nhdrs;
    const char *payload;
    const char *want; /* hex signature */
};

#define AWS_AK "AKIAIOSFODNN7EXAMPLE"
#define AWS_SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define AWS_HOST "examplebucket.s3.amazonaws.com"
#define AWS_DATE "20130524T000000Z"
#define WELCOME_SHA "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"

static const struct sig_case sig_cases[] = {
    {"s3 GET object with Range", AWS_AK, AWS_SK, "us-east-1", "s3", AWS_DATE, "GET", "/test.txt",
     "",
     {{"host", AWS_HOST},
      {"range", "bytes=0-9"},
      {"x-amz-content-sha256", BENCH_EMPTY_SHA256},
      {"x-amz-date", AWS_DATE}},
     4, BENCH_EMPTY_SHA256, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"},
    {"s3 PUT object", AWS_AK, AWS_SK, "us-east-1", "s3", AWS_DATE, "PUT", "/test%24file.text", "",
     {{"date", "Fri, 24 May 2013 00:00:00 GMT"},
      {"host", AWS_HOST},
      {"x-amz-content-sha256", WELCOME_SHA},
      {"x-amz-date", AWS_DATE},
      {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
     5, WELCOME_SHA, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"},
    {"s3 GET bucket lifecycle", AWS_AK, AWS_SK, "us-east-1", "s3", AWS_DATE, "GET", "/",
     "lifecycle=",
     {{"host", AWS_HOST}, {"x-amz-content-sha256", BENCH_EMPTY_SHA256}, {"x-amz-date", AWS_DATE}},
     3, BENCH_EMPTY_SHA256, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"},
    {"s3 GET bucket (list objects)", AWS_AK, AWS_SK, "us-east-1", "s3", AWS_DATE, "GET", "/",
     "max-keys=2&prefix=J",
     {{"host", AWS_HOST}, {"x-amz-content-sha256", BENCH_EMPTY_SHA256}, {"x-amz-date", AWS_DATE}},
     3, BENCH_EMPTY_SHA256, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"},
    {"suite get-vanilla", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1",
     "service", "20150830T123600Z", "GET", "/", "",
     {{"host", "example.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}},
     2, BENCH_EMPTY_SHA256, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
};

int bench_sig_self_test(void)
{
    int fails = 0;
    char hex[65];

    bench_sha256_hex("Welcome to Amazon S3.", 21, hex);
    if (strcmp(hex, WELCOME_SHA) != 0) {
        printf("not ok - sha256 of the PUT example body: %s\n", hex);
        fails++;
    } else {
        printf("ok - sha256 of the PUT example body\n");
    }
    for (size_t i = 0; i < sizeof sig_cases / sizeof sig_cases[0]; i++) {
        const struct sig_case *c = &sig_cases[i];
        bench_signer_t *s = bench_signer_new(c->ak, c->sk, c->region, c->service);
        cm_buf auth = {0};
        const char *sig;
        bool good;

        if (!s || bench_sign(s, c->method, c->uri, c->query, c->hdrs, c->nhdrs, c->payload,
                             c->date, &auth, NULL)) {
            printf("not ok - %s: out of memory\n", c->name);
            fails++;
            bench_signer_free(s);
            continue;
        }
        sig = strstr(cm_buf_str(&auth), "Signature=");
        good = sig && strcmp(sig + 10, c->want) == 0;
        printf("%s - %s%s%s\n", good ? "ok" : "not ok", c->name, good ? "" : ": got ",
               good ? "" : cm_buf_str(&auth));
        fails += !good;
        cm_buf_free(&auth);
        bench_signer_free(s);
    }
    return fails;
}

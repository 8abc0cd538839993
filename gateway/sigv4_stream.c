/* gateway/sigv4_stream.c - the aws-chunked body decoder: a byte-at-a-time
 * safe state machine for STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] (chunk
 * and trailer signatures chained from the seed signature) and
 * STREAMING-UNSIGNED-PAYLOAD-TRAILER. Request signatures are sigv4.c. */
#include "gateway/sigv4.h"

#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define LINE_MAX_LEN 4096   /* a chunk header or trailer line, without CRLF */
#define TRAILER_NAME_MAX 64 /* with NUL */
#define TRAILER_VALUE_MAX 256
#define CHUNK_SIZE_MAX ((uint64_t)1 << 40)

enum st {
    ST_HEADER,      /* reading "hex-size[;ext]" CRLF */
    ST_DATA,        /* chunk data, left bytes to go */
    ST_DATA_CR,     /* CR after data */
    ST_DATA_LF,     /* LF after data */
    ST_END,         /* no-trailer modes: the empty line after the final chunk */
    ST_TRAILER,     /* trailer lines until the empty line */
    ST_TRAILER_END, /* signed trailers: the empty line after x-amz-trailer-signature */
    ST_DONE,
    ST_ERROR,
};

struct sigv4_stream {
    enum sigv4_payload mode;
    bool sign;     /* chunk signatures are checked */
    bool trailers; /* trailer mode */
    enum st st;
    enum sigv4_err err;
    int rc;                /* sticky error returned by feed/finish */
    sigv4_seed seed;       /* key; signature = the previous signature in the chain */
    int64_t want;          /* x-amz-decoded-content-length, -1 = unchecked */
    uint64_t total;        /* decoded bytes so far */
    uint64_t left;         /* data bytes left in the current chunk */
    uint8_t chunk_sig[32]; /* the current chunk's claimed signature */
    EVP_MD_CTX *md;        /* SHA-256 of the current chunk's data */
    sigv4_sink_fn sink;
    void *arg;
    size_t nline; /* bytes in line (a CR at the end is kept) */
    char line[LINE_MAX_LEN + 2];
    size_t ntrailers;
    struct {
        char name[TRAILER_NAME_MAX];
        char value[TRAILER_VALUE_MAX];
    } tr[SIGV4_MAX_TRAILERS];
    sigv4_header trv[SIGV4_MAX_TRAILERS]; /* slices over tr[] for sigv4_stream_trailers */
};

static int sfail(sigv4_stream_t *s, enum sigv4_err e)
{
    s->st = ST_ERROR;
    s->err = e;
    s->rc = CM_EAUTH;
    return CM_EAUTH;
}

sigv4_stream_t *sigv4_stream_new(enum sigv4_payload mode, const sigv4_seed *seed,
                                 int64_t decoded_length, sigv4_sink_fn sink, void *arg)
{
    if (!sigv4_payload_is_chunked(mode) || !sink)
        return NULL;
    bool sign = mode != SIGV4_PAYLOAD_UNSIGNED_TRAILER;
    if (sign && !seed)
        return NULL;
    sigv4_stream_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->mode = mode;
    s->sign = sign;
    s->trailers = mode != SIGV4_PAYLOAD_STREAMING;
    s->want = decoded_length;
    s->sink = sink;
    s->arg = arg;
    s->st = ST_HEADER;
    if (sign) {
        s->seed = *seed;
        if (!(s->md = EVP_MD_CTX_new())) {
            free(s);
            return NULL;
        }
    }
    return s;
}

void sigv4_stream_free(sigv4_stream_t *s)
{
    if (!s)
        return;
    EVP_MD_CTX_free(s->md);
    cm_wipe(s, sizeof *s);
    free(s);
}

enum sigv4_err sigv4_stream_err(const sigv4_stream_t *s)
{
    return s->err;
}

uint64_t sigv4_stream_decoded(const sigv4_stream_t *s)
{
    return s->total;
}

const sigv4_header *sigv4_stream_trailers(const sigv4_stream_t *s, size_t *n)
{
    *n = s->ntrailers;
    return s->trv;
}

bool sigv4_stream_trailer(const sigv4_stream_t *s, const char *name, cm_slice *value)
{
    for (size_t i = 0; i < s->ntrailers; i++) {
        if (cm_slice_eq_str(s->trv[i].name, name)) {
            *value = s->trv[i].value;
            return true;
        }
    }
    return false;
}

/* HMAC(key, prefix "\n" date "\n" scope "\n" hex(prev) "\n" rest) into out;
 * the chain step shared by chunk and trailer signatures. */
static int chain_sign(const sigv4_stream_t *s, const char *prefix, const char *rest,
                      uint8_t out[32])
{
    char prev[65], sts[512];
    cm_hex_encode(s->seed.signature, 32, prev);
    int n = snprintf(sts, sizeof sts, "%s\n%s\n%s\n%s\n%s", prefix, s->seed.amz_date, s->seed.scope,
                     prev, rest);
    if (n < 0 || (size_t)n >= sizeof sts)
        return CM_EINVAL;
    return gw_hmac_sha256(s->seed.key, 32, sts, (size_t)n, out);
}

/* End of a chunk's data: check its signature and advance the chain. */
static int chunk_verify(sigv4_stream_t *s)
{
    uint8_t h[32], sig[32];
    unsigned int hl = 0;
    char rest[64 + 1 + 64 + 1];
    if (!s->sign)
        return 0;
    if (!EVP_DigestFinal_ex(s->md, h, &hl) || hl != 32)
        return s->rc = CM_ENOMEM;
    memcpy(rest, EMPTY_SHA256 "\n", 65);
    cm_hex_encode(h, 32, rest + 65);
    int rc = chain_sign(s, "AWS4-HMAC-SHA256-PAYLOAD", rest, sig);
    if (rc)
        return s->rc = rc;
    if (CRYPTO_memcmp(sig, s->chunk_sig, 32) != 0)
        return sfail(s, SIGV4_ERR_SIGNATURE);
    memcpy(s->seed.signature, sig, 32);
    return 0;
}

static bool ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* "hex-size" *( OWS ";" OWS name [ OWS "=" OWS value ] ) */
static int chunk_header(sigv4_stream_t *s, const uint8_t *p, size_t n)
{
    size_t i = 0;
    uint64_t size = 0;
    bool have_sig = false;

    while (i < n && cm_hexval(p[i]) >= 0) {
        if (i >= 16)
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        size = size << 4 | (uint64_t)cm_hexval(p[i]);
        i++;
    }
    if (i == 0 || size > CHUNK_SIZE_MAX)
        return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    for (;;) {
        while (i < n && ows(p[i]))
            i++;
        if (i == n)
            break;
        if (p[i++] != ';')
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        while (i < n && ows(p[i]))
            i++;
        size_t k = i;
        while (i < n && p[i] != '=' && p[i] != ';' && !ows(p[i]))
            i++;
        cm_slice key = CM_SLICE(p + k, i - k);
        cm_slice val = CM_SLICE_NULL;
        while (i < n && ows(p[i]))
            i++;
        if (i < n && p[i] == '=') {
            i++;
            while (i < n && ows(p[i]))
                i++;
            k = i;
            while (i < n && p[i] != ';' && !ows(p[i]))
                i++;
            val = CM_SLICE(p + k, i - k);
        }
        if (!key.n)
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        if (cm_slice_eq_str(key, "chunk-signature") && s->sign) {
            if (have_sig || val.n != 64 ||
                cm_hex_decode((const char *)val.p, 64, s->chunk_sig) != 0)
                return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
            have_sig = true;
        }
    }
    if (s->sign && !have_sig)
        return sfail(s, SIGV4_ERR_SIGNATURE);
    if (s->want >= 0 && size > (uint64_t)s->want - s->total)
        return sfail(s, SIGV4_ERR_INCOMPLETE_BODY);
    if (s->sign && !EVP_DigestInit_ex(s->md, gw_sha256_md(), NULL))
        return s->rc = CM_ENOMEM;
    s->left = size;
    if (size > 0) {
        s->st = ST_DATA;
        return 0;
    }
    /* The final chunk: sign the empty data now. */
    int rc = chunk_verify(s);
    if (rc)
        return rc;
    s->st = s->trailers ? ST_TRAILER : ST_END;
    return 0;
}

static int trailer_cmp(const void *x, const void *y)
{
    const sigv4_header *a = x, *b = y;
    return cm_slice_cmp(a->name, b->name);
}

/* The trailer signature: over "name:value\n" of every trailer, by name. */
static int trailer_verify(sigv4_stream_t *s, const uint8_t claimed[32])
{
    sigv4_header sorted[SIGV4_MAX_TRAILERS];
    uint8_t h[32], sig[32];
    unsigned int hl = 0;
    char rest[65];
    memcpy(sorted, s->trv, s->ntrailers * sizeof sorted[0]);
    qsort(sorted, s->ntrailers, sizeof sorted[0], trailer_cmp);
    if (!EVP_DigestInit_ex(s->md, gw_sha256_md(), NULL))
        return s->rc = CM_ENOMEM;
    for (size_t i = 0; i < s->ntrailers; i++) {
        if (!EVP_DigestUpdate(s->md, sorted[i].name.p, sorted[i].name.n) ||
            !EVP_DigestUpdate(s->md, ":", 1) ||
            !EVP_DigestUpdate(s->md, sorted[i].value.p, sorted[i].value.n) ||
            !EVP_DigestUpdate(s->md, "\n", 1))
            return s->rc = CM_ENOMEM;
    }
    if (!EVP_DigestFinal_ex(s->md, h, &hl) || hl != 32)
        return s->rc = CM_ENOMEM;
    cm_hex_encode(h, 32, rest);
    int rc = chain_sign(s, "AWS4-HMAC-SHA256-TRAILER", rest, sig);
    if (rc)
        return s->rc = rc;
    if (CRYPTO_memcmp(sig, claimed, 32) != 0)
        return sfail(s, SIGV4_ERR_SIGNATURE);
    memcpy(s->seed.signature, sig, 32);
    return 0;
}

static int end_of_trailers(sigv4_stream_t *s)
{
    if (s->sign && s->st == ST_TRAILER) /* signed trailers without their signature */
        return sfail(s, SIGV4_ERR_SIGNATURE);
    s->st = ST_DONE;
    return 0;
}

/* "name:value" with optional whitespace around the value. */
static int trailer_line(sigv4_stream_t *s, const uint8_t *p, size_t n)
{
    if (n == 0)
        return end_of_trailers(s);
    if (s->st == ST_TRAILER_END) /* nothing may follow the trailer signature */
        return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    const uint8_t *colon = memchr(p, ':', n);
    if (!colon || colon == p)
        return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    size_t nn = (size_t)(colon - p);
    while (nn && ows(p[nn - 1]))
        nn--;
    cm_slice v = CM_SLICE(colon + 1, n - (size_t)(colon - p) - 1);
    while (v.n && ows(v.p[0])) {
        v.p++;
        v.n--;
    }
    while (v.n && ows(v.p[v.n - 1]))
        v.n--;
    char name[TRAILER_NAME_MAX];
    if (nn >= sizeof name)
        return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    for (size_t i = 0; i < nn; i++) {
        uint8_t c = p[i];
        if (c <= ' ' || c >= 0x7f)
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        name[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    name[nn] = 0;
    if (strcmp(name, "x-amz-trailer-signature") == 0) {
        uint8_t claimed[32];
        if (!s->sign) /* nothing to check it with: ignore */
            return 0;
        if (v.n != 64 || cm_hex_decode((const char *)v.p, 64, claimed))
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        int rc = trailer_verify(s, claimed);
        if (rc)
            return rc;
        s->st = ST_TRAILER_END;
        return 0;
    }
    if (s->ntrailers == SIGV4_MAX_TRAILERS || v.n >= TRAILER_VALUE_MAX)
        return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    for (size_t i = 0; i < s->ntrailers; i++)
        if (strcmp(s->tr[i].name, name) == 0)
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    size_t i = s->ntrailers++;
    memcpy(s->tr[i].name, name, nn + 1);
    memcpy(s->tr[i].value, v.p, v.n);
    s->tr[i].value[v.n] = 0;
    s->trv[i].name = CM_SLICE(s->tr[i].name, nn);
    s->trv[i].value = CM_SLICE(s->tr[i].value, v.n);
    return 0;
}

/* A complete line (CRLF stripped) in a line state. */
static int line_done(sigv4_stream_t *s, const uint8_t *p, size_t n)
{
    switch (s->st) {
    case ST_HEADER:
        return chunk_header(s, p, n);
    case ST_END:
        if (n)
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        s->st = ST_DONE;
        return 0;
    case ST_TRAILER:
    case ST_TRAILER_END:
        return trailer_line(s, p, n);
    default:
        return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
    }
}

/* Consumes up to n bytes of a line; returns how many, or -1 on error. */
static ssize_t feed_line(sigv4_stream_t *s, const uint8_t *p, size_t n)
{
    const uint8_t *lf = memchr(p, '\n', n);
    size_t take = lf ? (size_t)(lf - p) : n;
    if (s->nline + take > LINE_MAX_LEN + 1) {
        sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        return -1;
    }
    if (!lf) {
        memcpy(s->line + s->nline, p, take);
        s->nline += take;
        return (ssize_t)n;
    }
    const uint8_t *l;
    size_t ln;
    if (s->nline == 0) { /* the whole line is in this piece: no copy */
        l = p;
        ln = take;
    } else {
        memcpy(s->line + s->nline, p, take);
        l = (const uint8_t *)s->line;
        ln = s->nline + take;
    }
    s->nline = 0;
    if (ln == 0 || l[ln - 1] != '\r' || memchr(l, '\r', ln - 1)) {
        sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        return -1;
    }
    if (line_done(s, l, ln - 1))
        return -1;
    return (ssize_t)(take + 1);
}

int sigv4_stream_feed(sigv4_stream_t *s, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    int rc;

    if (s->rc)
        return s->rc;
    while (n > 0) {
        switch (s->st) {
        case ST_DATA: {
            size_t k = n < s->left ? n : (size_t)s->left;
            if (s->sign && !EVP_DigestUpdate(s->md, p, k))
                return s->rc = CM_ENOMEM;
            if ((rc = s->sink(s->arg, p, k)))
                return s->rc = rc;
            s->total += k;
            s->left -= k;
            p += k;
            n -= k;
            if (s->left == 0) {
                if ((rc = chunk_verify(s)))
                    return rc;
                s->st = ST_DATA_CR;
            }
            break;
        }
        case ST_DATA_CR:
        case ST_DATA_LF:
            if (*p != (s->st == ST_DATA_CR ? '\r' : '\n'))
                return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
            s->st = s->st == ST_DATA_CR ? ST_DATA_LF : ST_HEADER;
            p++;
            n--;
            break;
        case ST_HEADER:
        case ST_END:
        case ST_TRAILER:
        case ST_TRAILER_END: {
            ssize_t k = feed_line(s, p, n);
            if (k < 0)
                return s->rc ? s->rc : CM_EAUTH;
            p += k;
            n -= (size_t)k;
            break;
        }
        case ST_DONE: /* bytes after the end of the body */
            return sfail(s, SIGV4_ERR_CHUNK_FORMAT);
        case ST_ERROR:
        default:
            return s->rc ? s->rc : CM_EAUTH;
        }
    }
    return 0;
}

int sigv4_stream_finish(sigv4_stream_t *s)
{
    if (s->rc)
        return s->rc;
    /* The body may stop at a line boundary where only the empty line is
     * missing: after the trailers of an unsigned body (the JS SDK v3 sends
     * "0\r\n" and nothing else when it has no checksum), or after a
     * trailer signature. */
    if (s->nline == 0 && ((s->st == ST_TRAILER && !s->sign) || s->st == ST_TRAILER_END))
        s->st = ST_DONE;
    if (s->st != ST_DONE)
        return sfail(s, SIGV4_ERR_INCOMPLETE_BODY);
    if (s->want >= 0 && s->total != (uint64_t)s->want)
        return sfail(s, SIGV4_ERR_INCOMPLETE_BODY);
    return 0;
}

/* common/cm.h - the leaf library every part uses: byte slices, growable
 * buffers, error codes, logging, encodings (hex, base64, URI, time) and
 * randomness. Depends on libc only; knows nothing of HTTP, S3 or storage. */
#ifndef CM_H
#define CM_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- errors */
/* Internal functions return 0 on success or a negative CM_E* code. */
enum {
    CM_OK = 0,
#define ERR(name, msg) CM_E##name,
#define ERR_FIRST(name, msg) CM_E##name = -1000,
#include "common/err.def"
#undef ERR
#undef ERR_FIRST
};
/* Returns a static message for a CM_E* code (or "ok" for 0). Thread-safe. */
const char *cm_strerror(int err);

/* ----------------------------------------------------------------- slices */
/* A borrowed run of bytes. Never NUL-terminated by contract. */
typedef struct cm_slice {
    const uint8_t *p;
    size_t n;
} cm_slice;

#define CM_SLICE(ptr, len) ((cm_slice){(const uint8_t *)(ptr), (len)})
#define CM_SLICE_STR(s) ((cm_slice){(const uint8_t *)(s), strlen(s)})
#define CM_SLICE_NULL ((cm_slice){NULL, 0})

bool cm_slice_eq(cm_slice a, cm_slice b);
bool cm_slice_eq_str(cm_slice a, const char *s);
bool cm_slice_case_eq_str(cm_slice a, const char *s); /* ASCII case-insensitive */
int cm_slice_cmp(cm_slice a, cm_slice b);             /* memcmp order, shorter first */
bool cm_slice_has_prefix(cm_slice a, cm_slice prefix);
/* Returns a malloc()ed NUL-terminated copy (free with free()); NULL on OOM. */
char *cm_slice_strdup(cm_slice a);

/* ---------------------------------------------------------------- buffers */
/* A growable byte buffer. Zero-initialise ({0}) before use; free with
 * cm_buf_free(). p is always NUL-terminated after any append (not counted
 * in n), so text built here can be used as a C string. */
typedef struct cm_buf {
    uint8_t *p;
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
} cm_buf;

int cm_buf_reserve(cm_buf *b, size_t extra);
int cm_buf_append(cm_buf *b, const void *p, size_t n);
int cm_buf_append_str(cm_buf *b, const char *s);
int cm_buf_append_slice(cm_buf *b, cm_slice s);
int cm_buf_append_byte(cm_buf *b, uint8_t c);
int cm_buf_printf(cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cm_buf_reset(cm_buf *b); /* n = 0, keeps memory */
void cm_buf_free(cm_buf *b);
static inline cm_slice cm_buf_slice(const cm_buf *b) { return CM_SLICE(b->p, b->n); }
static inline const char *cm_buf_str(const cm_buf *b) { return b->p ? (const char *)b->p : ""; }

/* Little-endian field helpers for record codecs. */
int cm_buf_put_u8(cm_buf *b, uint8_t v);
int cm_buf_put_u32(cm_buf *b, uint32_t v);
int cm_buf_put_u64(cm_buf *b, uint64_t v);
int cm_buf_put_bytes(cm_buf *b, cm_slice s); /* u32 length + bytes */

/* A cursor over encoded bytes; every get returns CM_ECORRUPT on underrun. */
typedef struct cm_reader {
    const uint8_t *p;
    size_t n;
} cm_reader;
int cm_get_u8(cm_reader *r, uint8_t *out);
int cm_get_u32(cm_reader *r, uint32_t *out);
int cm_get_u64(cm_reader *r, uint64_t *out);
int cm_get_bytes(cm_reader *r, cm_slice *out); /* u32 length + bytes; borrowed */

/* ------------------------------------------------------------------ pools */
/* A per-request arena: allocations live until cm_pool_free(); cleanups run
 * in reverse order of registration. Not thread-safe. */
typedef struct cm_pool cm_pool;
cm_pool *cm_pool_new(void);
void cm_pool_free(cm_pool *pool); /* NULL is a no-op */
/* Runs the cleanups and frees every allocation, as cm_pool_free would, but
 * keeps the pool and up to four 4 KiB blocks of its memory for the next user
 * (a kept-alive connection's next request). */
void cm_pool_reset(cm_pool *pool);
void *cm_pool_alloc(cm_pool *pool, size_t n); /* zeroed; NULL on OOM */
char *cm_pool_strndup(cm_pool *pool, const void *p, size_t n);
int cm_pool_cleanup_add(cm_pool *pool, void (*fn)(void *), void *arg);

/* Large buffers of one size and alignment kept for reuse: up to max freed
 * buffers are held instead of going back to malloc (which would keep them
 * in its per-thread arenas anyway), and reused memory needs no page faults.
 * Thread-safe; init and destroy are not. */
typedef struct cm_bufkeep {
    pthread_mutex_t mu;
    size_t size, align;
    int max, n;
    void **kept;
} cm_bufkeep;
int cm_bufkeep_init(cm_bufkeep *k, size_t size, size_t align, int max); /* 0 or CM_ENOMEM */
void *cm_bufkeep_get(cm_bufkeep *k);         /* a kept or new buffer; NULL on OOM */
void cm_bufkeep_put(cm_bufkeep *k, void *p); /* NULL is a no-op */
void cm_bufkeep_destroy(cm_bufkeep *k);      /* frees the kept buffers */

/* ---------------------------------------------------------------- logging */
enum { CM_LOG_ERROR = 0, CM_LOG_WARN = 1, CM_LOG_INFO = 2, CM_LOG_DEBUG = 3 };
extern int cm_log_level;
/* Arguments are not evaluated unless the level is enabled. */
#define cm_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= cm_log_level)                                                               \
            cm__log((level), __VA_ARGS__);                                                         \
    } while (0)
void cm__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* -------------------------------------------------------------- encodings */
/* FNV-1a, 64 bits: h = cm_fnv1a(CM_FNV1A_INIT, p, n), chainable over
 * several pieces. For hash tables and change detection, not security. */
#define CM_FNV1A_INIT 1469598103934665603ull
uint64_t cm_fnv1a(uint64_t h, const void *p, size_t n);
/* Writes 2n lowercase hex chars plus NUL to out (size >= 2n+1). */
void cm_hex_encode(const void *p, size_t n, char *out);
/* Value of one hex digit (either case), or -1. */
int cm_hexval(int c);
/* Decodes 2n hex chars into out[n]; CM_EINVAL on a bad digit. */
int cm_hex_decode(const char *hex, size_t hexlen, uint8_t *out);
/* Writes base64 plus NUL to out (size >= 4*((n+2)/3)+1); returns its length. */
size_t cm_base64_encode(const void *p, size_t n, char *out);
/* Strict standard base64 decode into out (size >= 3*(len/4)); *outn set. */
int cm_base64_decode(const char *s, size_t len, uint8_t *out, size_t *outn);
/* URI-encodes per RFC 3986 unreserved set (A-Z a-z 0-9 - _ . ~); '/' is left
 * as is unless encode_slash. Appends to b. */
int cm_uri_encode(cm_buf *b, cm_slice s, bool encode_slash);
/* Decodes %XX (and '+' as space if plus_space); CM_EINVAL on bad escapes. */
int cm_uri_decode(cm_buf *b, cm_slice s, bool plus_space);
/* The same into out (room for s.n bytes; no NUL added), *outn set to the
 * bytes written (up to the bad escape on CM_EINVAL). No allocation. */
int cm_uri_decode_into(cm_slice s, bool plus_space, uint8_t *out, size_t *outn);

/* Times. Buffers must be at least 32 bytes. */
void cm_time_rfc1123(time_t t, char *out);        /* "Tue, 30 Aug 2015 12:36:00 GMT" */
void cm_time_iso8601_ms(int64_t ms, char *out);   /* "2015-08-30T12:36:00.000Z" */
void cm_time_amz(time_t t, char *out);            /* "20150830T123600Z" */
int cm_time_parse_amz(const char *s, size_t n, time_t *out);  /* "20150830T123600Z" */
int cm_time_parse_http(const char *s, size_t n, time_t *out); /* RFC1123/850/asctime/ISO8601 */
int64_t cm_now_ms(void);                           /* wall clock, ms since epoch */
uint64_t cm_mono_ns(void);                         /* monotonic clock */

/* Fills p with n bytes from the kernel CSPRNG. */
int cm_random_bytes(void *p, size_t n);

/* Wipes memory in a way the compiler may not elide. */
void cm_wipe(void *p, size_t n);

/* Filesystem helpers. */
int cm_mkdir_p(const char *path, int mode);
int cm_fsync_dir(const char *path);

#endif

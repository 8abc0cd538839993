/* chunkstore/cs.h - where object bytes live: erasure-coded shards on a set of
 * shard stores (local drive directories today). Streams objects in and out
 * through fixed stripe buffers; knows nothing of HTTP, S3 or metadata.
 *
 * An object's data is one or more segments. A segment is one erasure-coded
 * byte stream with its own 16-byte id, written as one shard file per chosen
 * drive. A "layout" is an opaque byte string (cs-encoded) listing segments in
 * order; the metadata layer stores it verbatim with the object record.
 * Multipart uploads produce one segment per part; completing the upload
 * concatenates the parts' layouts. */
#ifndef CS_H
#define CS_H

#include "common/cm.h"
#include <sys/types.h>

#define CS_ID_LEN 16

typedef struct cs_store cs_store_t;
typedef struct cs_writer cs_writer_t;
typedef struct cs_reader cs_reader_t;

/* Opens a local store over ndrives existing-or-creatable directories with
 * the given erasure geometry (k data + m parity, k+m <= ndrives) and block
 * size in bytes (one block per shard per stripe; stripe = k*block_size).
 * Each segment's k+m shards go to k+m distinct drives chosen by rendezvous
 * hashing of the segment id. Creates missing drive directories.
 * Returns 0 and *out, or a CM_E* code. Free with cs_store_close(). The store
 * is thread-safe. It owns a pool of I/O threads (the writers' syncs) and,
 * once a reader reports damage, one background heal thread. */
int cs_store_open_local(const char *const *drives, int ndrives, int k, int m, size_t block_size,
                        cs_store_t **out);
/* Finishes the heals already queued (see cs_reader_open), stops the store's
 * threads and frees it. No reader or writer may be open. NULL is a no-op. */
void cs_store_close(cs_store_t *cs);

/* Starts writing a new segment with a fresh random id. *out_intent receives
 * a small encoded descriptor (id + chosen drives) that is enough for
 * cs_layout_delete() to remove whatever was written even if the writer never
 * finishes (the caller records it durably before writing: crash safety).
 * The shard files are created, under their final names, by the first
 * cs_writer_write() or cs_writer_finish() that needs them, so nothing exists
 * on disk before the caller had the chance to record the intent.
 * intent is malloc()ed into out_intent (a cm_buf the caller owns).
 * Returns 0 and *out. Not thread-safe per writer. */
int cs_writer_open(cs_store_t *cs, cm_buf *out_intent, cs_writer_t **out);
/* Appends n bytes. Encodes and writes each full stripe as it fills, and
 * starts the kernel's writeback of what was written every few stripes so
 * that cs_writer_finish() has little left to flush. */
int cs_writer_write(cs_writer_t *w, const void *p, size_t n);
/* Flushes the last (short) stripe, writes the shard headers, makes every
 * shard file and its directory entry durable (fdatasync of each file and
 * fsync of each directory, all k+m+k+m at once on the store's I/O pool),
 * and appends the segment's layout to out_layout. Returns only once all of
 * it is on stable storage. On success the writer is freed. On failure the
 * writer is still valid: call cs_writer_abort(). */
int cs_writer_finish(cs_writer_t *w, cm_buf *out_layout);
/* Removes what was written and frees the writer. NULL is a no-op. */
void cs_writer_abort(cs_writer_t *w);

/* Total object size described by a layout (sum of segment sizes), or
 * CM_ECORRUPT through err. */
int cs_layout_size(cm_slice layout, uint64_t *out);
/* Number of segments in a layout. */
int cs_layout_count(cm_slice layout, size_t *out);
/* Appends every segment of layout to out (to build a multipart object from
 * the layouts of its parts: append each part's whole layout). Validates
 * layout first: CM_ECORRUPT leaves out unchanged. */
int cs_layout_append(cm_buf *out, cm_slice layout);

/* Byte range of segment i (0-based) within the object: for a multipart
 * object, segment i is part i+1. CM_ENOTFOUND past the last segment. */
int cs_layout_segment(cm_slice layout, size_t i, uint64_t *off, uint64_t *len);

/* Opens a reader for bytes [off, off+len) of the object described by
 * layout. Reads data shards only while they are healthy; a missing shard
 * file or a block whose CRC32C fails is rebuilt from parity (up to m per
 * stripe) and the bad shard is reported through cm_log. When the reader
 * leaves a segment it also checks that the shards it did not read exist
 * with the right length. A segment found damaged is queued for the store's
 * heal thread, which later rebuilds the bad shard files from the good ones
 * (never blocking the reader). Returns 0 and *out, CM_ERANGE if the range is
 * outside the object. */
int cs_reader_open(cs_store_t *cs, cm_slice layout, uint64_t off, uint64_t len,
                   cs_reader_t **out);
/* Copies up to n bytes into buf; returns the count (0 at the end) or a
 * negative CM_E* code (CM_EIO / CM_ECORRUPT when more than m shards of a
 * stripe are unreadable). */
ssize_t cs_reader_read(cs_reader_t *r, void *buf, size_t n);
void cs_reader_close(cs_reader_t *r); /* NULL is a no-op */

/* Deletes every shard of every segment named by a layout or an intent
 * (both encodings are accepted). Missing files are not an error. Wins
 * against a concurrent heal of the same segment: the heal then leaves no
 * file behind. */
int cs_layout_delete(cs_store_t *cs, cm_slice layout_or_intent);

/* Waits until every heal queued so far has finished (for tests and tools).
 * Thread-safe. */
void cs_store_heal_wait(cs_store_t *cs);
/* Counts since cs_store_open_local(): shard files rewritten by heals, and
 * heals given up (segment deleted meanwhile, or too damaged). Either
 * pointer may be NULL. Thread-safe. */
void cs_store_heal_stats(cs_store_t *cs, uint64_t *healed, uint64_t *failed);

/* Removes leftovers of interrupted heals (and of writers of older versions,
 * which wrote "<name>.tmp" and renamed): temporary files on all drives.
 * Called once at start, before serving. */
int cs_store_recover(cs_store_t *cs);

/* Calls fn for every segment id found on any drive (for orphan checks in
 * tests and tools). */
int cs_store_list(cs_store_t *cs, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg);

#endif

/* chunkstore/cs.h - where object bytes live: erasure-coded shards on a set of
 * shard stores ("drives": local drive directories, or cairn-chunkd storage
 * nodes). Streams objects in and out through fixed stripe buffers; knows
 * nothing of HTTP, S3 or metadata.
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
typedef struct cs_manifest cs_manifest_t;

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
/* Opens a distributed store: drive (slot) i is the cairn-chunkd storage
 * node at urls[i] ("http://host:port"), secret is the cluster secret that
 * signs every request. Same geometry rules as cs_store_open_local (k+m <=
 * nurls). Nodes that are down at open stay in the table (placement avoids
 * them while others are up; they are probed again in the background).
 * Every shard request of a stripe goes to its nodes at once (on the store's
 * I/O pool). Returns 0 and *out, or CM_EINVAL, CM_EAUTH (a node refused the
 * secret or holds another slot), ... Free with cs_store_close(). */
int cs_store_open_nodes(const char *const *urls, int nurls, const char *secret, int k, int m,
                        size_t block_size, cs_store_t **out);

/* 1 if the store is over storage nodes (cs_store_open_nodes), 0 if local. */
int cs_store_distributed(const cs_store_t *cs);
/* Drives (slots) of the store, for metrics and admin: their number; the
 * name of drive d (directory or node URL; borrowed, lives as long as the
 * store; NULL if d is out of range); whether drive d is believed reachable
 * now (no I/O; local drives are always up). Thread-safe. */
int cs_store_ndrives(const cs_store_t *cs);
const char *cs_store_drive_name(const cs_store_t *cs, int d);
int cs_store_drive_up(const cs_store_t *cs, int d);
/* A counter that grows when a heal walk is due: a node that was down came
 * back, or a node was found wiped and claimed again. The gateway runs
 * cs_layout_check over its layouts when it changes. Always 0 for a local
 * store. Thread-safe, no I/O. */
uint64_t cs_store_epoch(const cs_store_t *cs);

/* Finishes the heals already queued (see cs_reader_open; over nodes only
 * the heal in progress: the queued ones are left to the next heal walk, and
 * heals waiting for a drive that is down are dropped too), stops the
 * store's threads and frees it. No reader or writer may be open, nor any
 * other call in progress. NULL is a no-op. */
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
/* Degraded writes: a shard whose drive is down at open, or whose write or
 * commit fails with any error, is dropped from the writer (logged); the
 * writer goes on while at least k+1 shards (k when m = 0) are alive, and
 * cs_writer_finish() succeeds if that many committed. The layout still
 * names all k+m drives; the missing shards are queued for healing. Below
 * that the writer fails: CM_EUNAVAIL if drives were unreachable (also from
 * cs_writer_open, when too few drives are up), else the first error.
 *
 * Appends n bytes. Encodes and writes each full stripe as it fills, and
 * starts the kernel's writeback of what was written every few stripes so
 * that cs_writer_finish() has little left to flush. */
int cs_writer_write(cs_writer_t *w, const void *p, size_t n);
/* Flushes the last (short) stripe, writes the shard headers, makes every
 * shard durable (local: fdatasync of each file and fsync of its directory;
 * nodes: the same on each node), all k+m commits at once on the store's
 * I/O pool, and appends the segment's layout to out_layout. Returns only once all of
 * it is on stable storage. On success the writer is freed. On failure the
 * writer is still valid: call cs_writer_abort(). */
int cs_writer_finish(cs_writer_t *w, cm_buf *out_layout);
/* Removes what was written and frees the writer. NULL is a no-op. */
void cs_writer_abort(cs_writer_t *w);

/* Manifests: small blobs that describe an object (written by the gateway
 * next to its segments), kept as whole copies on m+1 distinct drives
 * (fewer if the store has fewer drives), so that metadata can be rebuilt
 * from the drives alone. A layout may carry manifest records beside its
 * segment records: cs_layout_size/count/segment and readers ignore them,
 * cs_layout_delete removes their copies, cs_layout_append copies them and
 * cs_layout_check checks and heals them.
 *
 * Picks a random manifest id and its drives (rendezvous, up drives first)
 * and appends an intent record to out_intent, which cs_layout_delete()
 * accepts (record it durably before committing, like a writer's intent).
 * Writes nothing. Returns 0 and *out (free with commit or abort). */
int cs_manifest_open(cs_store_t *cs, cm_buf *out_intent, cs_manifest_t **out);
/* Writes body (at most 16 MiB) to every chosen drive at once. Succeeds if
 * at least min(2, copies) copies are durable; the missing ones are queued
 * for healing. Then appends a manifest record to out_layout and frees m.
 * On failure (CM_EUNAVAIL if drives were unreachable, CM_ETOOBIG, ...) m is
 * still valid: call cs_manifest_abort(). body is borrowed. */
int cs_manifest_commit(cs_manifest_t *m, cm_slice body, cm_buf *out_layout);
/* Removes whatever copies were written and frees m. NULL is a no-op. */
void cs_manifest_abort(cs_manifest_t *m);
/* Lists the manifests on every drive and, for each distinct id, reads one
 * good copy and calls fn(arg, body, record): body is the manifest, record
 * an encoded manifest record naming the drives that hold a copy (append it
 * to a layout). Both are borrowed for the call. fn's nonzero return stops
 * the scan and is returned. Unreachable drives are logged and skipped; the
 * scan then returns CM_EUNAVAIL after visiting the others. Copies that
 * fail their checksums are skipped. Slow: for rebuilding metadata. */
int cs_manifest_scan(cs_store_t *cs, int (*fn)(void *arg, cm_slice body, cm_slice record),
                     void *arg);

/* The settings blob: one small blob with a fixed id, kept on every drive
 * (up to the first 24), replaced whole by each put (the gateway keeps its
 * buckets, users and configurations there, for rebuilding metadata). It is
 * not a manifest: cs_manifest_scan and cs_store_list_manifests skip it.
 * put writes every reachable copy at once; 0 if at least one is durable
 * (*out_copies, may be NULL, gets the count), else CM_EUNAVAIL. get calls
 * fn for every good copy it can read (copies may differ if a drive missed
 * a put: the body should say which is newest); fn's nonzero return stops. */
int cs_store_settings_put(cs_store_t *cs, cm_slice body, int *out_copies);
int cs_store_settings_get(cs_store_t *cs, int (*fn)(void *arg, cm_slice body), void *arg);

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

/* Deletes every shard of every segment and every manifest copy named by a
 * layout or an intent (any of their records are accepted). Missing shards
 * are not an error. A drive that could not be reached makes it return
 * CM_EUNAVAIL after deleting everything else: keep the garbage record and
 * retry later. Wins against a concurrent heal of the same segment: the
 * heal then leaves no shard behind. */
int cs_layout_delete(cs_store_t *cs, cm_slice layout_or_intent);

/* What cs_layout_check() found, added up over calls. */
struct cs_check_stats {
    uint64_t segments;         /* segment records checked */
    uint64_t shards_checked;   /* shards that answered (good, missing or corrupt) */
    uint64_t shards_missing;   /* of those: not there */
    uint64_t shards_corrupt;   /* of those: wrong length, bad header or (deep) bad blocks */
    uint64_t shards_healed;    /* shards rebuilt and committed by the check */
    uint64_t shards_failed;    /* bad shards not rebuilt, shards or manifest copies on drives
                                  that were unreachable (queued for a later heal) */
    uint64_t manifests;        /* manifest records checked */
    uint64_t manifests_healed; /* manifest copies rewritten */
    uint64_t bytes_verified;   /* deep: shard bytes whose blocks were verified */
};
/* Checks every segment and manifest of a layout where the data lives and
 * repairs it now (on the calling thread): deep = 0 checks that each shard
 * exists with the right length and header; deep = 1 has each drive read
 * its shards and verify every block's CRC32C (no shard bytes travel). Bad
 * or missing shards are rebuilt from the good ones (the heal code; a heal
 * scrubs the whole segment). Every copy of a manifest is read and checked;
 * missing or bad copies are rewritten from a good one. Counts are added
 * to *acc. Returns 0, or CM_ECORRUPT if the layout itself is corrupt (an
 * intent is not a layout). Safe against concurrent deletes and heals. */
int cs_layout_check(cs_store_t *cs, cm_slice layout, int deep, struct cs_check_stats *acc);

/* Waits until every heal queued so far has finished (for tests and tools);
 * heals waiting for a drive that is down are not waited for. Thread-safe. */
void cs_store_heal_wait(cs_store_t *cs);
/* Counts since the store opened: shards (and manifest copies) rewritten by
 * heals, and heals given up (segment deleted meanwhile, or too damaged). Either
 * pointer may be NULL. Thread-safe. */
void cs_store_heal_stats(cs_store_t *cs, uint64_t *healed, uint64_t *failed);

/* Removes leftovers of interrupted heals and manifest writes (and of
 * writers of older versions, which wrote "<name>.tmp" and renamed):
 * temporary files on all drives (over nodes: each node does it). Drives
 * that cannot be reached are logged and skipped. Called once at start,
 * before serving. */
int cs_store_recover(cs_store_t *cs);

/* Calls fn once for every segment id that has a shard on any drive (for
 * orphan checks in tests and tools). Unreachable drives are skipped and
 * make the result CM_EUNAVAIL. Not thread-safe against fn. */
int cs_store_list(cs_store_t *cs, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]), void *arg);
/* The same for manifest ids (blobs on any drive). */
int cs_store_list_manifests(cs_store_t *cs, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]),
                            void *arg);

#endif

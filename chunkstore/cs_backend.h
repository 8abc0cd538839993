/* chunkstore/cs_backend.h - the shard-store interface: where the shard files
 * of "drive" (slot) d live. Two implementations: be_local.c (a directory per
 * drive, the embedded default) and be_node.c (a cairn-chunkd storage node
 * per slot, over HTTP). The erasure engine in store.c sees only this table,
 * so the gateway never knows which one it has. Private to chunkstore/.
 *
 * A shard is named by (segment id, shard index) and lives on one drive. Its
 * bytes are the shard file of format.c: a 64-byte header, then block + CRC32C
 * per stripe. A blob is a small whole object named by an id (the object
 * manifests used to rebuild metadata), written and read in one piece.
 *
 * Every function returns 0 (or a byte count) or a negative CM_E* code:
 *   CM_ENOTFOUND  the shard or blob does not exist (a definite answer)
 *   CM_EUNAVAIL   the drive could not be reached or timed out (no answer:
 *                 the engine treats the shard as missing for this request
 *                 and keeps any garbage record for a later retry)
 *   CM_EIO, CM_ENOSPACE, CM_ECORRUPT, CM_ENOMEM, CM_EAUTH  as named
 * All functions are thread-safe; a handle (void *) is used by one thread at
 * a time but may move between threads (the engine's I/O pool). */
#ifndef CS_BACKEND_H
#define CS_BACKEND_H

#include "chunkstore/cs.h"
#include <sys/uio.h>

struct cs__be;

#define CS__APPEND_ROOM 1u /* w_append flag: scratch bytes before iov[0] (see w_append) */
#define CS__APPEND_HEADROOM ((size_t)4096) /* how many: at least one 4 KiB direct-I/O block */

/* What a drive's own check of one shard found (verify op). */
struct cs__verify {
    uint64_t len;        /* shard length in bytes */
    uint64_t bad_blocks; /* blocks whose CRC32C failed (0 = all good) */
    uint64_t first_bad;  /* stripe index of the first bad block (if any) */
    uint8_t hdr[64];     /* the shard's header bytes as stored */
};

struct cs__be_ops {
    const char *name; /* "local" or "node" */
    /* 1: shard I/O of one request must be issued to all drives at once (the
     * engine runs it on its I/O pool); 0: a sequential loop is as fast. */
    int parallel;

    /* Drives (slots) 0..ndrives-1. A name for log lines ("/data/d3" or
     * "http://10.0.0.4:9101"); never NULL. */
    int (*ndrives)(struct cs__be *be);
    const char *(*drive_name)(struct cs__be *be, int d);
    /* 1 if drive d is believed reachable now; costs no I/O (a node marked
     * down after a failed request is retried by the backend's own health
     * probe). Placement prefers drives that are up. */
    int (*drive_up)(struct cs__be *be, int d);
    /* Counts events that call for a heal walk: a drive that was down came
     * back, or a drive was found replaced (a node whose directory was wiped
     * answers with a new id and is claimed for its slot again). Starts at 0;
     * the local backend always returns 0. */
    uint64_t (*epoch)(struct cs__be *be);

    /* ---- writing a shard. heal = 0: a new segment's shard, which becomes
     * visible under its final name at commit (local: written in place,
     * created by the first append, so nothing exists before the caller's
     * intent is durable). heal = 1: a rebuilt copy that atomically replaces
     * whatever is there at commit (tmp + rename). Appends come in
     * increasing offset order starting at 64 (the header is written by
     * commit); a backend may buffer them (copies: the caller's buffer is
     * free again when w_append returns).
     *
     * flags: 0, or CS__APPEND_ROOM: niov is 1 and the CS__APPEND_HEADROOM
     * bytes before iov[0].iov_base are scratch the backend may overwrite
     * during the call (the caller keeps nothing there and does not read or
     * write them until w_append returns). be_local uses them to write the
     * block with O_DIRECT straight from the caller's buffer when its
     * address is congruent to off modulo 4096 (store.c lays its stripe
     * buffers out that way): it puts the unaligned rest of the previous
     * append there, in front of the block. be_node ignores the flag. */
    int (*w_open)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, int heal,
                  void **h);
    int (*w_append)(void *h, uint64_t off, const struct iovec *iov, int niov, unsigned flags);
    /* Writes hdr at offset 0 and makes the shard durable: data, file and
     * directory entry (fdatasync + rename/dir fsync locally; the node does
     * the same before answering). Only after 0 here may the shard be
     * counted. */
    int (*w_commit)(void *h, const uint8_t hdr[64]);
    /* Frees the handle. remove = 1: delete what it wrote (uncommitted data;
     * for heal = 0 also the committed shard). */
    void (*w_close)(void *h, int remove);

    /* ---- reading a shard. r_open costs at most one I/O (local: open +
     * read the header; node: none). r_read reads up to the iov's total at
     * off (short only at end of file); r_header gives the 64 header bytes
     * (node: from the first r_read's response, or one request if none). */
    int (*r_open)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, void **h);
    ssize_t (*r_read)(void *h, uint64_t off, const struct iovec *iov, int niov);
    int (*r_header)(void *h, uint8_t hdr[64]);
    void (*r_close)(void *h);

    /* Length of the committed shard (CM_ENOTFOUND if none). */
    int (*stat)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index, uint64_t *len);
    /* Reads the whole shard where it lives and checks the header and every
     * block's CRC32C (the scrub; a node does it without shipping bytes). */
    int (*verify)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index,
                  struct cs__verify *out);
    /* Removes the committed shard and any partial/tmp copy. Missing is 0. */
    int (*remove)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], int index);
    /* Calls fn for every committed shard on drive d (any order). */
    int (*list)(struct cs__be *be, int d,
                void (*fn)(void *arg, const uint8_t id[CS_ID_LEN], int index), void *arg);
    /* Removes partial/tmp leftovers of interrupted writes and heals on d. */
    int (*recover)(struct cs__be *be, int d);

    /* ---- blobs (whole small objects; durable when put returns 0). */
    int (*blob_put)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], const void *p,
                    size_t n);
    int (*blob_get)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN], cm_buf *out);
    int (*blob_remove)(struct cs__be *be, int d, const uint8_t id[CS_ID_LEN]); /* missing: 0 */
    int (*blob_list)(struct cs__be *be, int d, void (*fn)(void *arg, const uint8_t id[CS_ID_LEN]),
                     void *arg);

    void (*close)(struct cs__be *be);
};

struct cs__be {
    const struct cs__be_ops *ops;
};

/* be_local.c: one directory per drive (created if missing, with the 256
 * fan-out directories). Layout on disk is unchanged from earlier versions:
 * DRIVE/ab/<32 hex>.<index>[.tmp]; blobs at DRIVE/meta/ab/<32 hex>. */
int cs__be_local_open(const char *const *dirs, int ndirs, struct cs__be **out);

/* be_node.c: slot i is the cairn-chunkd at urls[i] ("http://host:port").
 * secret is the cluster secret (HMAC key). Probes every node once at open
 * (claiming unclaimed nodes for their slot, refusing a node that holds a
 * different slot: see doc/nodes.md); nodes that are down stay in the table
 * and are probed again in the background. */
int cs__be_node_open(const char *const *urls, int nurls, const char *secret, struct cs__be **out);

#endif

/* chunkstore/format.c - the on-disk shard file: header encode/decode and the
 * stripe geometry that places each block. File I/O lives in store.c.
 *
 * Shard file = header (64 bytes), then for each stripe s: the shard's block
 * (blen(s) bytes) followed by its CRC32C (4 bytes, little-endian).
 *
 * Header (all integers little-endian):
 *   OFFSET  SIZE  DESCRIPTION
 *   0       8     magic "CAIRNSH1"
 *   8       2     format version (1)
 *   10      2     header length in bytes (64)
 *   12      16    segment id
 *   28      1     shard index (0..k-1 data, k..k+m-1 parity)
 *   29      1     k
 *   30      1     m
 *   31      1     flags (0)
 *   32      4     block size in bytes
 *   36      8     segment size in bytes
 *   44      16    reserved (0)
 *   60      4     CRC32C of bytes 0..59
 */
#include "chunkstore/cs_int.h"

void cs__hdr_encode(const struct cs_hdr *h, uint8_t out[CS__HDR_LEN])
{
    memset(out, 0, CS__HDR_LEN);
    memcpy(out, CS__HDR_MAGIC, 8);
    cs__put16(out + 8, CS__HDR_VERSION);
    cs__put16(out + 10, CS__HDR_LEN);
    memcpy(out + 12, h->id, CS_ID_LEN);
    out[28] = (uint8_t)h->index;
    out[29] = (uint8_t)h->k;
    out[30] = (uint8_t)h->m;
    cs__put32(out + 32, h->block_size);
    cs__put64(out + 36, h->size);
    cs__put32(out + 60, rs_crc32c(0, out, 60));
}

int cs__hdr_decode(const uint8_t *p, size_t n, struct cs_hdr *out)
{
    struct cs_hdr h;

    if (n < CS__HDR_LEN || memcmp(p, CS__HDR_MAGIC, 8) != 0)
        return CM_ECORRUPT;
    if (cs__get16(p + 8) != CS__HDR_VERSION || cs__get16(p + 10) != CS__HDR_LEN)
        return CM_ECORRUPT;
    if (cs__get32(p + 60) != rs_crc32c(0, p, 60))
        return CM_ECORRUPT;
    memcpy(h.id, p + 12, CS_ID_LEN);
    h.index = p[28];
    h.k = p[29];
    h.m = p[30];
    h.block_size = cs__get32(p + 32);
    h.size = cs__get64(p + 36);
    if (h.k < 1 || h.k > RS_MAX_K || h.m > RS_MAX_M || h.index >= h.k + h.m || h.block_size < 1 ||
        h.block_size > CS__MAX_BLOCK)
        return CM_ECORRUPT;
    *out = h;
    return 0;
}

uint64_t cs__nstripes(uint64_t size, int k, uint32_t block_size)
{
    uint64_t stripe = (uint64_t)k * block_size;

    return size / stripe + (size % stripe != 0);
}

uint32_t cs__blen(uint64_t size, int k, uint32_t block_size, uint64_t s)
{
    uint64_t stripe = (uint64_t)k * block_size;
    uint64_t r = size - s * stripe; /* bytes from stripe s to the end */

    if (r >= stripe)
        return block_size;
    return (uint32_t)((r + (uint64_t)k - 1) / (uint64_t)k);
}

uint64_t cs__shard_len(uint64_t size, int k, uint32_t block_size)
{
    uint64_t full = size / ((uint64_t)k * block_size);
    uint64_t len = cs__stripe_off(block_size, full);

    if (size % ((uint64_t)k * block_size) != 0)
        len += cs__blen(size, k, block_size, full) + CS__CRC_LEN;
    return len;
}

/* erasure/crc64.c - CRC-64/NVME (x-amz-checksum-crc64nvme), table-driven
 * slice-by-8. ISA-L 2.30 has no NVMe/Rocksoft CRC-64, hence this file.
 * Reflected poly 0x9a6c9329ac4bc9b5, init and xorout ~0; check value for
 * "123456789" is 0xae8b14860a799888. */
#include "erasure/rs.h"

#include <pthread.h>

#define CRC64_NVME_POLY_REFL 0x9a6c9329ac4bc9b5ULL

static uint64_t crc64_tab[8][256]; /* written once under crc64_once, then read-only */
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;

static void crc64_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint64_t c = (uint64_t)i;
        for (int b = 0; b < 8; b++)
            c = (c & 1) ? (c >> 1) ^ CRC64_NVME_POLY_REFL : c >> 1;
        crc64_tab[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc64_tab[t][i] = (crc64_tab[t - 1][i] >> 8) ^ crc64_tab[0][crc64_tab[t - 1][i] & 0xff];
}

uint64_t rs_crc64nvme(uint64_t crc, const void *p, size_t n)
{
    const uint8_t *q = p;
    uint64_t c = ~crc;

    pthread_once(&crc64_once, crc64_init);
    while (n >= 8) {
        /* Little-endian load, byte by byte: no alignment or endianness assumptions. */
        uint64_t v = (uint64_t)q[0] | (uint64_t)q[1] << 8 | (uint64_t)q[2] << 16 |
                     (uint64_t)q[3] << 24 | (uint64_t)q[4] << 32 | (uint64_t)q[5] << 40 |
                     (uint64_t)q[6] << 48 | (uint64_t)q[7] << 56;
        c ^= v;
        c = crc64_tab[7][c & 0xff] ^ crc64_tab[6][(c >> 8) & 0xff] ^
            crc64_tab[5][(c >> 16) & 0xff] ^ crc64_tab[4][(c >> 24) & 0xff] ^
            crc64_tab[3][(c >> 32) & 0xff] ^ crc64_tab[2][(c >> 40) & 0xff] ^
            crc64_tab[1][(c >> 48) & 0xff] ^ crc64_tab[0][c >> 56];
        q += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc64_tab[0][(c ^ *q++) & 0xff];
    return ~c;
}

/* chunkstore/placement.c - which drives hold a segment's shards (or a
 * manifest's copies): rendezvous (highest random weight) hashing of (id,
 * drive index), passing over drives that are down while enough are up. The
 * chosen list is stored in the layout, so adding drives never moves
 * existing data. */
#include "chunkstore/cs_int.h"

/* splitmix64 finaliser: a bijective 64-bit mix with full avalanche. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t cs__place_score(const uint8_t id[CS_ID_LEN], uint32_t drive)
{
    uint64_t a = cs__get64(id), b = cs__get64(id + 8);

    return mix64(a ^ mix64(b ^ mix64(0x9e3779b97f4a7c15ULL + drive)));
}

/* Inserts (s, d) into the descending list best/out of at most n entries
 * (*have so far). Ties keep the earlier (lower) drive first. */
static void keep_best(uint64_t *best, uint16_t *out, int *have, int n, uint64_t s, int d)
{
    int pos = *have;

    while (pos > 0 && best[pos - 1] < s)
        pos--;
    if (pos >= n)
        return;
    int last = *have < n ? *have : n - 1;
    for (int j = last; j > pos; j--) {
        best[j] = best[j - 1];
        out[j] = out[j - 1];
    }
    best[pos] = s;
    out[pos] = (uint16_t)d;
    if (*have < n)
        (*have)++;
}

int cs__place(const uint8_t id[CS_ID_LEN], int ndrives, int n, uint16_t *out)
{
    return cs__place_up(id, ndrives, n, NULL, out);
}

int cs__place_up(const uint8_t id[CS_ID_LEN], int ndrives, int n, const uint8_t *up,
                 uint16_t *out)
{
    /* Keep the n best (score, drive) pairs of the up drives, and of the
     * down ones, by insertion: n <= 24, so this is O(ndrives * n) with no
     * allocation. */
    uint64_t best[CS__MAX_SHARDS], dbest[CS__MAX_SHARDS];
    uint16_t down[CS__MAX_SHARDS];
    int have = 0, dhave = 0;

    if (n < 1 || n > CS__MAX_SHARDS || ndrives < n || ndrives > CS__MAX_DRIVES)
        return CM_EINVAL;
    for (int d = 0; d < ndrives; d++) {
        uint64_t s = cs__place_score(id, (uint32_t)d);
        if (!up || up[d])
            keep_best(best, out, &have, n, s, d);
        else
            keep_best(dbest, down, &dhave, n, s, d);
    }
    for (int i = 0; have < n && i < dhave; i++)
        out[have++] = down[i];
    return 0;
}

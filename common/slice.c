/* common/slice.c - comparisons and copies of borrowed byte runs (cm_slice). */
#include "common/cm.h"
#include <stdlib.h>

bool cm_slice_eq(cm_slice a, cm_slice b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Both compare as they go instead of taking strlen(s) first: names looked
 * up among request headers mostly differ in their first bytes. */
bool cm_slice_eq_str(cm_slice a, const char *s)
{
    for (size_t i = 0; i < a.n; i++)
        if (!s[i] || (uint8_t)s[i] != a.p[i])
            return false;
    return s[a.n] == 0;
}

bool cm_slice_case_eq_str(cm_slice a, const char *s)
{
    for (size_t i = 0; i < a.n; i++) {
        uint8_t x = a.p[i], y = (uint8_t)s[i];
        if (!y)
            return false;
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
    }
    return s[a.n] == 0;
}

int cm_slice_cmp(cm_slice a, cm_slice b)
{
    size_t n = a.n < b.n ? a.n : b.n;
    int c = n ? memcmp(a.p, b.p, n) : 0;
    if (c)
        return c;
    return a.n < b.n ? -1 : a.n > b.n ? 1 : 0;
}

bool cm_slice_has_prefix(cm_slice a, cm_slice prefix)
{
    return a.n >= prefix.n && (prefix.n == 0 || memcmp(a.p, prefix.p, prefix.n) == 0);
}

char *cm_slice_strdup(cm_slice a)
{
    char *s = malloc(a.n + 1);
    if (!s)
        return NULL;
    if (a.n)
        memcpy(s, a.p, a.n);
    s[a.n] = 0;
    return s;
}

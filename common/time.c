/* common/time.c - the time formats S3 speaks (RFC 1123, ISO 8601, the
 * compact x-amz-date form) and the clocks. */
#include "common/cm.h"
#include <stdio.h>
#include <stdlib.h>

void cm_time_rfc1123(time_t t, char *out)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

void cm_time_iso8601_ms(int64_t ms, char *out)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[24];
    strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", tmp, (int)(ms % 1000));
}

void cm_time_amz(time_t t, char *out)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y%m%dT%H%M%SZ", &tm);
}

static int parse_with(const char *s, size_t n, const char *fmt, time_t *out)
{
    char tmp[64];
    struct tm tm;
    if (n >= sizeof tmp)
        return CM_EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(tmp, fmt, &tm);
    if (!end)
        return CM_EINVAL;
    while (*end == ' ')
        end++;
    if (*end && strcmp(end, "GMT") && strcmp(end, "UTC") && strcmp(end, "Z") &&
        strcmp(end, "+0000"))
        return CM_EINVAL;
    *out = timegm(&tm);
    return 0;
}

int cm_time_parse_amz(const char *s, size_t n, time_t *out)
{
    if (n != 16 || s[8] != 'T' || s[15] != 'Z')
        return CM_EINVAL;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (s[i] < '0' || s[i] > '9'))
            return CM_EINVAL;
    return parse_with(s, n - 1, "%Y%m%dT%H%M%S", out);
}

int cm_time_parse_http(const char *s, size_t n, time_t *out)
{
    static const char *fmts[] = {"%a, %d %b %Y %H:%M:%S", "%A, %d-%b-%y %H:%M:%S",
                                 "%a %b %d %H:%M:%S %Y", "%Y-%m-%dT%H:%M:%S", NULL};
    char tmp[64];
    if (n >= sizeof tmp)
        return CM_EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    /* ISO 8601 with fractional seconds: drop the fraction. */
    char *dot = strchr(tmp, '.');
    if (dot && strchr(tmp, 'T')) {
        char *z = dot + 1;
        while (*z >= '0' && *z <= '9')
            z++;
        memmove(dot, z, strlen(z) + 1);
    }
    for (int i = 0; fmts[i]; i++)
        if (parse_with(tmp, strlen(tmp), fmts[i], out) == 0)
            return 0;
    return CM_EINVAL;
}

int64_t cm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t cm_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

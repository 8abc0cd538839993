/* common/time.c - the time formats S3 speaks (RFC 1123, ISO 8601, the
 * compact x-amz-date form) and the clocks. The formatters and the x-amz-date
 * parser do their own calendar arithmetic for years 1000-9999 (every request
 * parses and formats a date: strftime, strptime and gmtime_r take glibc's
 * time-zone lock); outside that range they use libc as before. */
#include "common/cm.h"
#include <stdio.h>
#include <stdlib.h>

/* Days since 1970-01-01 of a proleptic Gregorian date; linear in d, so a
 * day past the month's end carries into the next one, as timegm does. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Broken-down UTC time of t, for 1000-01-01 <= t < 10000-01-01 only. */
struct civil {
    unsigned y, m, d, hh, mm, ss, wday; /* wday: 0 = Sunday */
};
static const int64_t civil_min = -30610224000LL, civil_max = 253402300800LL; /* [1000, 10000) */

static bool civil_of(int64_t t, struct civil *c)
{
    if (t < civil_min || t >= civil_max)
        return false;
    int64_t z = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    unsigned sod = (unsigned)(t - z * 86400);
    c->hh = sod / 3600;
    c->mm = sod / 60 % 60;
    c->ss = sod % 60;
    c->wday = (unsigned)((z % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    c->d = doy - (153 * mp + 2) / 5 + 1;
    c->m = mp < 10 ? mp + 3 : mp - 9;
    c->y = (unsigned)((int64_t)yoe + era * 400 + (c->m <= 2));
    return true;
}

static char *put2(char *o, unsigned v)
{
    o[0] = (char)('0' + v / 10);
    o[1] = (char)('0' + v % 10);
    return o + 2;
}

static char *put4(char *o, unsigned v)
{
    put2(o, v / 100);
    return put2(o + 2, v % 100);
}

/* yyyy mm dd T HH MM SS, each pair joined by dsep / tsep when they are not
 * 0 (ISO 8601's extended form), or nothing (its basic form). */
static char *put_date_time(char *o, const struct civil *c, char dsep, char tsep)
{
    o = put4(o, c->y);
    if (dsep)
        *o++ = dsep;
    o = put2(o, c->m);
    if (dsep)
        *o++ = dsep;
    o = put2(o, c->d);
    *o++ = 'T';
    o = put2(o, c->hh);
    if (tsep)
        *o++ = tsep;
    o = put2(o, c->mm);
    if (tsep)
        *o++ = tsep;
    return put2(o, c->ss);
}

static const char wday_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char mon_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void cm_time_rfc1123(time_t t, char *out)
{
    struct civil c;
    if (!civil_of((int64_t)t, &c)) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(out, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        return;
    }
    char *o = out;
    memcpy(o, wday_names[c.wday], 3);
    o[3] = ',';
    o[4] = ' ';
    o = put2(o + 5, c.d);
    *o++ = ' ';
    memcpy(o, mon_names[c.m - 1], 3);
    o[3] = ' ';
    o = put4(o + 4, c.y);
    *o++ = ' ';
    o = put2(o, c.hh);
    *o++ = ':';
    o = put2(o, c.mm);
    *o++ = ':';
    o = put2(o, c.ss);
    memcpy(o, " GMT", 5);
}

void cm_time_iso8601_ms(int64_t ms, char *out)
{
    time_t t = (time_t)(ms / 1000);
    struct civil c;
    if (ms < 0 || !civil_of((int64_t)t, &c)) {
        struct tm tm;
        gmtime_r(&t, &tm);
        char tmp[24];
        strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out, 32, "%s.%03dZ", tmp, (int)(ms % 1000));
        return;
    }
    char *o = put_date_time(out, &c, '-', ':');
    unsigned f = (unsigned)(ms % 1000);
    *o++ = '.';
    *o++ = (char)('0' + f / 100);
    o = put2(o, f % 100);
    memcpy(o, "Z", 2);
}

void cm_time_amz(time_t t, char *out)
{
    struct civil c;
    if (!civil_of((int64_t)t, &c)) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(out, 32, "%Y%m%dT%H%M%SZ", &tm);
        return;
    }
    char *o = put_date_time(out, &c, 0, 0);
    memcpy(o, "Z", 2);
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

static unsigned digits(const char *s, int n)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (unsigned)(s[i] - '0');
    return v;
}

int cm_time_parse_amz(const char *s, size_t n, time_t *out)
{
    if (n != 16 || s[8] != 'T' || s[15] != 'Z')
        return CM_EINVAL;
    for (int i = 0; i < 15; i++)
        if (i != 8 && (s[i] < '0' || s[i] > '9'))
            return CM_EINVAL;
    /* The ranges strptime's %Y%m%dT%H%M%S accepts (%S allows 60 and 61);
     * out-of-month days and leap seconds carry over as in timegm. */
    unsigned y = digits(s, 4), mo = digits(s + 4, 2), d = digits(s + 6, 2);
    unsigned hh = digits(s + 9, 2), mm = digits(s + 11, 2), ss = digits(s + 13, 2);
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 61)
        return CM_EINVAL;
    *out = (time_t)(days_from_civil(y, mo, d) * 86400 + hh * 3600 + mm * 60 + ss);
    return 0;
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

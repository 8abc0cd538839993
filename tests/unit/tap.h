/* tests/unit/tap.h - a tiny TAP harness: ok(), is_int(), is_mem(), skip(),
 * done_testing(). done_testing() prints the plan and "# N passed, N failed"
 * and returns the process exit status. Header-only; one per test program. */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>
#include <string.h>

static int tap__n, tap__fail;

#define ok(cond, ...)                                                                              \
    tap__ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static inline int tap__ok(int pass, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
static inline int tap__ok(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    tap__n++;
    if (!pass)
        tap__fail++;
    printf("%s %d - ", pass ? "ok" : "not ok", tap__n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!pass)
        printf("#   failed at %s:%d\n", file, line);
    fflush(stdout);
    return pass;
}

#define is_int(got, want, ...)                                                                     \
    do {                                                                                           \
        long long tap__g = (long long)(got), tap__w = (long long)(want);                           \
        if (!ok(tap__g == tap__w, __VA_ARGS__))                                                    \
            printf("#   got %lld, want %lld\n", tap__g, tap__w);                                   \
    } while (0)

#define is_str(got, want, ...)                                                                     \
    do {                                                                                           \
        const char *tap__g = (got), *tap__w = (want);                                              \
        if (!ok(tap__g && tap__w && strcmp(tap__g, tap__w) == 0, __VA_ARGS__))                     \
            printf("#   got  \"%s\"\n#   want \"%s\"\n", tap__g ? tap__g : "(null)",               \
                   tap__w ? tap__w : "(null)");                                                    \
    } while (0)

#define is_mem(got, want, n, ...) ok(memcmp((got), (want), (n)) == 0, __VA_ARGS__)

#define skip(why)                                                                                  \
    do {                                                                                           \
        tap__n++;                                                                                  \
        printf("ok %d # SKIP %s\n", tap__n, why);                                                  \
    } while (0)

static inline int done_testing(void)
{
    printf("1..%d\n# %d passed, %d failed\n", tap__n, tap__n - tap__fail, tap__fail);
    return tap__fail ? 1 : 0;
}

#endif

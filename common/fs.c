/* common/fs.c - small filesystem and system helpers: directories, fsync of
 * a directory, randomness, wiping secrets. */
#include "common/cm.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int cm_mkdir_p(const char *path, int mode)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp)
        return CM_EINVAL;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, (mode_t)mode) && errno != EEXIST)
                return CM_EIO;
            *p = '/';
        }
    }
    if (mkdir(tmp, (mode_t)mode) && errno != EEXIST)
        return CM_EIO;
    return 0;
}

int cm_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return CM_EIO;
    int rc = fsync(fd) ? CM_EIO : 0;
    close(fd);
    return rc;
}

int cm_random_bytes(void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = getrandom(b, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return CM_EIO;
        }
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

void cm_wipe(void *p, size_t n)
{
    if (p && n)
        explicit_bzero(p, n);
}

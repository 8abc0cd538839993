/* tests/unit/crash.c - see crash.h. */
#include "tests/unit/crash.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void crash_ack(const struct crash_writer *w, uint32_t i)
{
    uint32_t ack[2] = {w->t, i};
    if (write(w->fd, ack, sizeof ack) != sizeof ack)
        _exit(1);
}

bool crash_newest_log(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned long best = 0;
    bool found = false;
    if (!d)
        return false;
    while ((e = readdir(d))) {
        unsigned long n;
        char tail[8];
        if (sscanf(e->d_name, "%lu.%7s", &n, tail) == 2 && !strcmp(tail, "log") &&
            (!found || n > best)) {
            best = n;
            found = true;
        }
    }
    closedir(d);
    if (found)
        snprintf(out, cap, "%s/%06lu.log", dir, best);
    return found;
}

/* The child: never returns. */
static void child(const char *path, int nw, void *(*fn)(void *), int fd)
{
    struct crash_writer w[CRASH_WRITERS_MAX];
    pthread_t th[CRASH_WRITERS_MAX];
    md_db_t *db = NULL;
    struct stat sb;
    char log[300];

    if (md_open(path, &db) || !crash_newest_log(path, log, sizeof log) || stat(log, &sb))
        _exit(1);
    uint64_t size = (uint64_t)sb.st_size;
    if (write(fd, &size, sizeof size) != sizeof size)
        _exit(1);
    for (int t = 0; t < nw; t++) {
        w[t] = (struct crash_writer){db, fd, (uint32_t)t};
        if (pthread_create(&th[t], NULL, fn, &w[t]))
            _exit(1);
    }
    pause();
    _exit(1);
}

static void take(uint32_t *acked, int nw, const uint32_t ack[2])
{
    if (ack[0] < (uint32_t)nw && ack[1] > acked[ack[0]])
        acked[ack[0]] = ack[1];
}

uint32_t crash_run(const char *path, int nw, uint32_t want, void *(*fn)(void *),
                   uint32_t *acked, uint64_t *logsize, bool *killed)
{
    int pipefd[2], st = 0;
    uint32_t ack[2], least = 0;
    pid_t pid;

    *logsize = UINT64_MAX;
    *killed = false;
    for (int t = 0; t < nw; t++)
        acked[t] = 0;
    if (nw < 1 || nw > CRASH_WRITERS_MAX || pipe(pipefd))
        return 0;
    if ((pid = fork()) == 0) {
        close(pipefd[0]);
        child(path, nw, fn, pipefd[1]);
    }
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        return 0;
    }
    if (read(pipefd[0], logsize, sizeof *logsize) != sizeof *logsize)
        *logsize = UINT64_MAX;
    while (least < want && read(pipefd[0], ack, sizeof ack) == sizeof ack) {
        take(acked, nw, ack);
        least = acked[0];
        for (int t = 1; t < nw; t++)
            least = acked[t] < least ? acked[t] : least;
    }
    kill(pid, SIGKILL);
    while (read(pipefd[0], ack, sizeof ack) == sizeof ack)
        take(acked, nw, ack);
    waitpid(pid, &st, 0);
    close(pipefd[0]);
    *killed = WIFSIGNALED(st);
    return least;
}

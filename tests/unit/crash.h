/* tests/unit/crash.h - kill -9 of metadata writers, for test_md and
 * test_values: a child process opens the store, runs writer threads that
 * acknowledge each durable write on a pipe, and is killed with SIGKILL once
 * each has enough acknowledged; the test then reopens the store and checks
 * what the acknowledgements promise. */
#ifndef TESTS_UNIT_CRASH_H
#define TESTS_UNIT_CRASH_H

#include "metadata/md.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRASH_WRITERS_MAX 8

/* What a writer thread gets: the child's store, the pipe, its number. */
struct crash_writer {
    md_db_t *db;
    int fd;
    uint32_t t;
};

/* Acknowledges write i of w as (t, i): 8 bytes, so that acknowledgements of
 * several threads never mix. Ends the child if the pipe is gone. */
void crash_ack(const struct crash_writer *w, uint32_t i);

/* The newest LevelDB log in dir (the one being written), into out. */
bool crash_newest_log(const char *dir, char *out, size_t cap);

/* Forks a child that opens the store at path, sends the size of LevelDB's
 * newest log, and runs nw (at most CRASH_WRITERS_MAX) threads of fn, each
 * with its struct crash_writer; kills it with SIGKILL once every thread
 * has acknowledged write want, then reads what the pipe still holds.
 * acked[t] gets thread t's highest acknowledged write, *logsize the log's
 * size at the child's open (UINT64_MAX if unknown), *killed whether the
 * child died of the signal. Returns the least of acked[] at the kill. */
uint32_t crash_run(const char *path, int nw, uint32_t want, void *(*fn)(void *),
                   uint32_t *acked, uint64_t *logsize, bool *killed);

#endif

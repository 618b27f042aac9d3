/* The pre-fork server scenario in C, for allocators preloaded with LD_PRELOAD (smallarena's
 * SMALLARENA_FORK=share|reuse, glibc, mimalloc): the same steps as the Rust scenario
 * (tests/scenario/forkshare.rs), run by workloads/examples/forkshare.rs.
 *
 * Usage: forkshare HEAP_MIB CHILDREN CHILD_MIB CHURN_ROUNDS
 *
 * The parent mallocs HEAP_MIB MiB of small objects (8 to 256 bytes, each filled with a pattern),
 * then forks CHILDREN children. Each child reads its Private_Dirty (/proc/self/smaps_rollup)
 * right after the fork, walks every inherited object (reads only), reads it again, frees every
 * fourth object, reads it again, mallocs CHILD_MIB MiB of its own (8 to 200 bytes each) and
 * churns them CHURN_ROUNDS times (each round replaces a tenth), reads it a last time, sends its
 * report through a pipe and waits until the parent has every report. After the first fork the
 * parent allocates nothing and writes no heap memory. The parent prints one line per child:
 * `report PID DIRTY0 DIRTY1 DIRTY2 DIRTY3 OWN_BYTES 0 INTACT` (bytes; INTACT is 1 when every
 * inherited object read back as built). */
#define _GNU_SOURCE
#include "common.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 16

typedef struct {
    uint64_t pid;
    uint64_t dirty[4];
    uint64_t own_bytes;
    uint64_t retained;
    uint64_t intact;
} report_t;

/* Private_Dirty of this process in bytes (0 if unreadable); allocates nothing. */
static uint64_t private_dirty(void) {
    char buf[4096];
    int fd = open("/proc/self/smaps_rollup", O_RDONLY);
    if (fd < 0)
        return 0;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    const char *p = strstr(buf, "\nPrivate_Dirty:");
    if (!p)
        return 0;
    p += strlen("\nPrivate_Dirty:");
    uint64_t kib = 0;
    while (*p == ' ')
        p++;
    while (*p >= '0' && *p <= '9')
        kib = kib * 10 + (uint64_t)(*p++ - '0');
    return kib * 1024;
}

static uint8_t pattern(size_t i, size_t j) { return (uint8_t)(i * 31 + j * 7 + 1); }

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: forkshare HEAP_MIB CHILDREN CHILD_MIB CHURN_ROUNDS\n");
        return 2;
    }
    size_t heap_bytes = (size_t)atol(argv[1]) << 20;
    int children = atoi(argv[2]);
    size_t child_bytes = (size_t)atol(argv[3]) << 20;
    int rounds = atoi(argv[4]);
    if (children < 1 || children > MAX_CHILDREN)
        return 2;

    rng_t rng = rng_new(7);
    size_t slots = heap_bytes / 8 + 1024;
    unsigned char **objs = malloc(slots * sizeof *objs);
    size_t *sizes = malloc(slots * sizeof *sizes);
    if (!objs || !sizes)
        return 1;
    size_t n = 0, built = 0;
    while (built < heap_bytes && n < slots) {
        size_t size = 8 + rng_below(&rng, 249);
        unsigned char *p = malloc(size);
        if (!p)
            return 1;
        for (size_t j = 0; j < size; j++)
            p[j] = pattern(n, j);
        objs[n] = p;
        sizes[n] = size;
        n++;
        built += size;
    }

    int results[2], go[2];
    if (pipe(results) || pipe(go))
        return 1;
    pid_t pids[MAX_CHILDREN];
    for (int c = 0; c < children; c++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            close(results[0]);
            close(go[1]);
            report_t r = {0};
            r.pid = (uint64_t)getpid();
            r.dirty[0] = private_dirty();
            int intact = 1;
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < sizes[i]; j++)
                    intact &= objs[i][j] == pattern(i, j);
            r.intact = (uint64_t)intact;
            r.dirty[1] = private_dirty();
            for (size_t i = 0; i < n; i += 4)
                free(objs[i]);
            r.dirty[2] = private_dirty();
            rng_t mine_rng = rng_new(1000 + (uint64_t)c);
            size_t cap = child_bytes / 60 + 16;
            unsigned char **mine = malloc(cap * sizeof *mine);
            size_t *msize = malloc(cap * sizeof *msize);
            size_t m = 0, bytes = 0;
            while (mine && msize && bytes < child_bytes && m < cap) {
                size_t size = 8 + rng_below(&mine_rng, 193);
                mine[m] = malloc(size);
                memset(mine[m], (int)m, size);
                msize[m++] = size;
                bytes += size;
            }
            for (int round = 0; round < rounds; round++) {
                for (size_t i = (size_t)(round % 10); i < m; i += 10) {
                    size_t size = 8 + rng_below(&mine_rng, 193);
                    free(mine[i]);
                    mine[i] = malloc(size);
                    memset(mine[i], (int)i, size);
                    bytes = bytes - msize[i] + size;
                    msize[i] = size;
                }
            }
            /* The containers' slots in use (their unused capacity is never touched). */
            r.own_bytes = bytes + m * (sizeof *mine + sizeof *msize);
            r.dirty[3] = private_dirty();
            ssize_t w = write(results[1], &r, sizeof r);
            char b;
            if (read(go[0], &b, 1) < 0)
                _exit(4);
            _exit(w == (ssize_t)sizeof r ? 0 : 3);
        }
        pids[c] = pid;
    }
    close(results[1]);
    close(go[0]);
    report_t reports[MAX_CHILDREN];
    for (int c = 0; c < children; c++) {
        size_t got = 0;
        while (got < sizeof reports[c]) {
            ssize_t r = read(results[0], (char *)&reports[c] + got, sizeof reports[c] - got);
            if (r <= 0) {
                fprintf(stderr, "forkshare: a child died before reporting\n");
                return 1;
            }
            got += (size_t)r;
        }
    }
    close(go[1]);
    int failed = 0;
    for (int c = 0; c < children; c++) {
        int status;
        if (waitpid(pids[c], &status, 0) != pids[c] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed = 1;
    }
    for (int c = 0; c < children; c++) {
        report_t *r = &reports[c];
        printf("report %llu %llu %llu %llu %llu %llu 0 %llu\n", (unsigned long long)r->pid,
               (unsigned long long)r->dirty[0], (unsigned long long)r->dirty[1],
               (unsigned long long)r->dirty[2], (unsigned long long)r->dirty[3],
               (unsigned long long)r->own_bytes, (unsigned long long)r->intact);
    }
    return failed;
}

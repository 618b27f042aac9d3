/* Small allocations after the arena can no longer grow: the address space is limited
 * (RLIMIT_AS) to a little above what the process uses, so a new arena (a 2 MiB reservation,
 * trimmed to 1 MiB) cannot be mapped while glibc's heap can still grow in smaller steps. Every
 * malloc must then be served by glibc (smallarena's out-of-arena fallback, through
 * `__libc_malloc`) until glibc runs out too and malloc returns NULL; nothing may crash.
 * Prints "arena A libc L" (blocks of each: a 48-byte request's usable size is 48 in the arena,
 * 56 in glibc) and exits 0 when every block kept its bytes. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define N (1 << 17)
#define SIZE 48

static void *blocks[N]; /* static: no allocation for the bookkeeping */

static unsigned long vm_bytes(void) {
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%lu", &pages) != 1)
        pages = 0;
    fclose(f);
    return pages * (unsigned long)sysconf(_SC_PAGESIZE);
}

int main(void) {
    unsigned long vm = vm_bytes();
    if (vm == 0)
        return 2;
    struct rlimit rl = {vm + (1536UL << 10), RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        perror("setrlimit");
        return 2;
    }
    size_t n = 0, arena = 0, libc = 0;
    while (n < N) {
        unsigned char *p = malloc(SIZE);
        if (!p)
            break;
        memset(p, (int)(n * 7), SIZE);
        if (malloc_usable_size(p) == SIZE)
            arena++;
        else
            libc++;
        blocks[n++] = p;
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = blocks[i];
        for (size_t j = 0; j < SIZE; j++)
            if (p[j] != (unsigned char)(i * 7))
                bad = 1;
        free(p);
    }
    rl.rlim_cur = RLIM_INFINITY;
    setrlimit(RLIMIT_AS, &rl);
    printf("arena %zu libc %zu\n", arena, libc);
    return bad || n == N;
}

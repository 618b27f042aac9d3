/* Heap of a thread whose first allocation comes after its thread_local destructors ran
 * (LD_PRELOAD build).
 *
 * glibc ends a thread by running the C++/Rust thread_local destructors (__call_tls_dtors) and
 * only then the pthread key destructors. A thread that allocates for the first time inside a
 * pthread key destructor makes the allocator create its per-thread heap and register its
 * thread-exit destructor at a moment when no further thread_local destructor will ever run.
 * The heap is then never handed back: it keeps its pools, and blocks freed into them later are
 * never reclaimed. Memory grows with every such thread.
 *
 * Expected: RSS after N threads stays about where it started (glibc: +0.3 MiB for 1000
 * threads); exit status 1 if it grew by more than 8 MiB. Run by preload/tests/programs.rs
 * (from ../shared/cases/lifecycle).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_key_t key;

static void key_destructor(void *value) {
    (void)value;
    void *blocks[6];
    for (int k = 0; k < 6; k++) {
        blocks[k] = malloc(64 * (k + 1)); /* this thread's first allocations */
        memset(blocks[k], k, 64 * (k + 1));
    }
    for (int k = 0; k < 6; k++) free(blocks[k]);
}

static void *worker(void *arg) {
    (void)arg;
    pthread_setspecific(key, (void *)1); /* no allocation during the thread's life */
    return NULL;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    pthread_key_create(&key, key_destructor);
    long before = rss_kib();
    for (int t = 0; t < n; t++) {
        pthread_t th;
        pthread_create(&th, NULL, worker, NULL);
        pthread_join(th, NULL);
    }
    long after = rss_kib();
    printf("%d threads: RSS %ld -> %ld KiB\n", n, before, after);
    return after - before > 8 * 1024 ? 1 : 0; /* more than 8 MiB of growth counts as the leak */
}

/* Threads allocating blocks of mixed sizes through the whole malloc family, handing a share of
 * them to other threads to check and free. Prints a deterministic digest; usage: threads [iters] */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define SLOTS 512
#define MAILBOX 256

struct mailbox {
    pthread_mutex_t lock;
    void *blocks[MAILBOX];
    size_t sizes[MAILBOX];
    unsigned char tags[MAILBOX];
    int n;
};

static struct mailbox boxes[THREADS];
static long iters = 200000;

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *s) {
    uint64_t r = next(s) % 100;
    if (r < 70) return next(s) % 129;          /* tiny, including 0 */
    if (r < 95) return next(s) % 513;          /* the rest of the small classes */
    return 513 + next(s) % 20000;              /* large: glibc's */
}

static void check(const void *p, size_t n, unsigned char tag) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != tag) { fprintf(stderr, "corrupt block %p byte %zu\n", p, i); abort(); }
}

static void *alloc_any(uint64_t *s, size_t n) {
    void *p = NULL;
    switch (next(s) % 6) {
    case 0: p = calloc(1, n); if (p) check(p, n, 0); break;
    case 1: if (posix_memalign(&p, 16u << (next(s) % 4), n) != 0) p = NULL; break;
    case 2: p = aligned_alloc(16, (n + 15) & ~(size_t)15); break;
    case 3: p = realloc(NULL, n); break;
    default: p = malloc(n); break;
    }
    if (!p && n) { perror("alloc"); abort(); }
    if (malloc_usable_size(p) < n) { fprintf(stderr, "usable size too small\n"); abort(); }
    return p;
}

static void *worker(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (me + 1);
    void *slot[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    unsigned char tag[SLOTS] = {0};
    uint64_t digest = 0;
    for (long i = 0; i < iters; i++) {
        int k = next(&s) % SLOTS;
        if (slot[k]) {
            check(slot[k], size[k], tag[k]);
            uint64_t r = next(&s) % 10;
            if (r < 3) {
                /* grow or shrink in place or not; the kept prefix must survive */
                size_t n = pick_size(&s) + 1;
                size_t keep = n < size[k] ? n : size[k];
                void *q = realloc(slot[k], n);
                if (!q) abort();
                check(q, keep, tag[k]);
                memset(q, tag[k], n);
                slot[k] = q; size[k] = n;
                continue;
            }
            if (r < 6) {
                /* hand it to the next thread to check and free */
                struct mailbox *b = &boxes[(me + 1) % THREADS];
                pthread_mutex_lock(&b->lock);
                if (b->n < MAILBOX) {
                    b->blocks[b->n] = slot[k]; b->sizes[b->n] = size[k]; b->tags[b->n] = tag[k];
                    b->n++;
                    slot[k] = NULL;
                }
                pthread_mutex_unlock(&b->lock);
                if (!slot[k]) continue;
            }
            free(slot[k]);
            slot[k] = NULL;
        } else {
            size_t n = pick_size(&s);
            void *p = alloc_any(&s, n);
            tag[k] = (unsigned char)(next(&s) | 1);
            memset(p, tag[k], n);
            slot[k] = p; size[k] = n;
            digest += n;
        }
        if ((i & 63) == 0) {
            struct mailbox *b = &boxes[me];
            pthread_mutex_lock(&b->lock);
            for (int j = 0; j < b->n; j++) { check(b->blocks[j], b->sizes[j], b->tags[j]); free(b->blocks[j]); }
            b->n = 0;
            pthread_mutex_unlock(&b->lock);
        }
    }
    for (int k = 0; k < SLOTS; k++) free(slot[k]);
    return (void *)(uintptr_t)digest;
}

static void semantics(void) {
    void *a = malloc(0), *b = malloc(0);
    if (!a || !b || a == b) { puts("malloc(0) not unique"); exit(1); }
    free(a); free(b);
    errno = 0;
    volatile size_t huge = SIZE_MAX / 2;
    if (calloc(huge, 3) != NULL || errno != ENOMEM) { puts("calloc overflow"); exit(1); }
    errno = 0;
    if (reallocarray(NULL, huge, 3) != NULL || errno != ENOMEM) { puts("reallocarray overflow"); exit(1); }
    void *p = malloc(40);
    if (realloc(p, 0) != NULL) { puts("realloc(p, 0) kept the block"); exit(1); }
    if (posix_memalign(&p, 24, 8) != EINVAL || posix_memalign(&p, 4, 8) != EINVAL) { puts("posix_memalign EINVAL"); exit(1); }
    if (posix_memalign(&p, 4096, 100) != 0 || ((uintptr_t)p & 4095)) { puts("posix_memalign 4096"); exit(1); }
    free(p);
    p = memalign(64, 64); if ((uintptr_t)p & 63) { puts("memalign"); exit(1); } free(p);
    p = valloc(10); if ((uintptr_t)p & 4095) { puts("valloc"); exit(1); } free(p);
    p = pvalloc(10); if ((uintptr_t)p & 4095) { puts("pvalloc"); exit(1); } free(p);
    /* every usable byte survives a realloc */
    unsigned char *u = malloc(20);
    size_t us = malloc_usable_size(u);
    memset(u, 0x5a, us);
    u = realloc(u, us + 1000);
    for (size_t i = 0; i < us; i++) if (u[i] != 0x5a) { puts("realloc lost usable bytes"); exit(1); }
    free(u);
    p = malloc(1);
    fprintf(stderr, "usable_size(malloc(1)) = %zu\n", malloc_usable_size(p));
    free(p);
    puts("semantics ok");
}

int main(int argc, char **argv) {
    if (argc > 1) iters = atol(argv[1]);
    if (!getenv("THREADS_NO_SEMANTICS")) /* glibc's contract, which the benchmark of other allocators skips */
        semantics();
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    uint64_t total = 0;
    for (int i = 0; i < THREADS; i++) { void *r; pthread_join(t[i], &r); total += (uintptr_t)r; }
    for (int i = 0; i < THREADS; i++) {
        for (int j = 0; j < boxes[i].n; j++) free(boxes[i].blocks[j]);
        boxes[i].n = 0;
    }
    printf("threads done, %d x %ld iterations, %llu bytes allocated\n", THREADS, iters, (unsigned long long)total);
    return 0;
}

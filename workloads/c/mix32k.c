/* A 4 byte - 32 KiB mix, sizes spread evenly over the powers of two.
 *
 * THREADS threads, each with its own working set of LIVE blocks (no sharing): each operation
 * replaces a random block by a new one (three times in four) or resizes it with realloc. A size
 * is drawn by picking a power of two from 4 to 16384 uniformly, then a size uniformly between it
 * and twice it, so every octave from 4 B to 32 KiB gets the same share of requests: small
 * objects, the medium sizes just above 512 bytes, and pages-sized buffers. */
#include "common.h"
#include <pthread.h>

#define THREADS 2
#define LIVE 4096

static uint64_t ops_per_thread;
static uint64_t sums[THREADS];

static size_t draw_size(rng_t *r) {
    size_t lo = (size_t)4 << rng_below(r, 13); /* 4 .. 16384 */
    return lo + rng_below(r, lo + 1);           /* lo .. 2 lo (32768 at most) */
}

static void *worker(void *arg) {
    long t = (long)arg;
    rng_t r = rng_new(32768 + (uint64_t)t);
    void **ptr = calloc(LIVE, sizeof(void *));
    size_t *len = calloc(LIVE, sizeof(size_t));
    uint64_t sum = 0;
    for (uint64_t i = 0; i < ops_per_thread; i++) {
        size_t k = rng_below(&r, LIVE);
        size_t size = draw_size(&r);
        uint32_t value = (uint32_t)rng_next(&r);
        if (ptr[k] != NULL && rng_below(&r, 4) == 0) {
            /* realloc keeps the first min(old, new) bytes: check the old block, then rewrite. */
            sum += block_check(ptr[k], len[k]);
            void *p = realloc(ptr[k], size);
            if (p == NULL) {
                fprintf(stderr, "out of memory\n");
                exit(2);
            }
            ptr[k] = p;
        } else {
            if (ptr[k] != NULL) {
                sum += block_check(ptr[k], len[k]);
                free(ptr[k]);
            }
            ptr[k] = xmalloc(size);
        }
        len[k] = size;
        block_fill(ptr[k], size, value);
    }
    for (size_t k = 0; k < LIVE; k++) {
        if (ptr[k] != NULL) {
            sum += block_check(ptr[k], len[k]);
            free(ptr[k]);
        }
    }
    free(ptr);
    free(len);
    sums[t] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    ops_per_thread = scaled(argc, argv, 2000000, 60000);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)t);
    uint64_t sum = 0;
    for (long t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        sum += sums[t];
    }
    printf("checksum=%llu\n", (unsigned long long)sum);
    return 0;
}

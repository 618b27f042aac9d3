/* A uniform 8-1000 byte mix with frees by other threads.
 *
 * THREADS threads share one table of SLOTS block pointers. Each operation allocates a block of a
 * uniformly random size in [8, 1000], writes its header, and swaps it into a random slot; the
 * block it takes out, allocated by whichever thread put it there, is checked and freed. With 4
 * threads about three frees in four are by a thread other than the allocating one, and about
 * half of the requests are above 512 bytes. The table's leftovers are freed at the end. */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

#define THREADS 4
#define SLOTS 8192

static _Atomic(void *) slots[SLOTS];
static uint64_t ops_per_thread;

struct result {
    uint64_t sum;
} results[THREADS];

static void *worker(void *arg) {
    long t = (long)arg;
    rng_t r = rng_new(1000 + (uint64_t)t);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < ops_per_thread; i++) {
        size_t size = 8 + rng_below(&r, 993);
        void *p = xmalloc(size);
        block_fill(p, size, (uint32_t)rng_next(&r));
        void *old = atomic_exchange_explicit(&slots[rng_below(&r, SLOTS)], p, memory_order_acq_rel);
        if (old != NULL) {
            sum += block_check(old, block_size(old));
            free(old);
        }
    }
    results[t].sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    ops_per_thread = scaled(argc, argv, 1500000, 60000);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)t);
    uint64_t sum = 0;
    for (long t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        sum += results[t].sum;
    }
    for (int i = 0; i < SLOTS; i++) {
        void *p = atomic_load(&slots[i]);
        if (p != NULL) {
            sum += block_check(p, block_size(p));
            free(p);
        }
    }
    printf("checksum=%llu\n", (unsigned long long)sum);
    return 0;
}

/* A fixed-size alloc/free loop: one thread, 64-byte blocks.
 *
 * Each iteration allocates a block, writes its header and frees the block allocated WINDOW
 * iterations earlier (a ring of WINDOW pointers), so the allocator sees the same size over and
 * over with a short distance between a free and the next reuse. This is the per-call cost of the
 * fast path, with as little else around it as a C program has. */
#include "common.h"

#define SIZE 64
#define WINDOW 16

static void *ring[WINDOW];

int main(int argc, char **argv) {
    uint64_t iters = scaled(argc, argv, 40000000, 1000000);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        void *p = xmalloc(SIZE);
        block_fill(p, SIZE, (uint32_t)i);
        void **slot = &ring[i % WINDOW];
        if (*slot != NULL) {
            sum += block_check(*slot, SIZE);
            free(*slot);
        }
        *slot = p;
    }
    for (int k = 0; k < WINDOW; k++) {
        if (ring[k] != NULL) {
            sum += block_check(ring[k], SIZE);
            free(ring[k]);
        }
    }
    printf("checksum=%llu\n", (unsigned long long)sum);
    return 0;
}

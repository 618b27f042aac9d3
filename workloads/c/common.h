/* Shared helpers of smallarena's C benchmark programs (workloads/c/).
 *
 * Every program takes one argument, the scale: 0 is the quick run (a few tens of milliseconds),
 * 1 the full run (about 0.2-1 s with glibc on the project's 2-core machine), larger values scale
 * the work linearly. Each prints one line `checksum=<n>` that depends only on the program and
 * the scale, never on the allocator or the scheduling: it adds up values that were written into
 * blocks at allocation and read back at free, so a block lost, freed twice or overwritten changes
 * it. A corrupted block also stops the program with exit status 3. */
#ifndef SMALLARENA_BENCH_COMMON_H
#define SMALLARENA_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* xorshift64*: a small deterministic generator, one per thread. */
typedef struct {
    uint64_t s;
} rng_t;

static inline rng_t rng_new(uint64_t seed) {
    rng_t r = {seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull};
    if (r.s == 0)
        r.s = 1;
    return r;
}

static inline uint64_t rng_next(rng_t *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n). */
static inline uint64_t rng_below(rng_t *r, uint64_t n) { return rng_next(r) % n; }

/* The amount of work: `full` units at scale 1, `full * scale` above, `quick` at scale 0. */
static inline uint64_t scaled(int argc, char **argv, uint64_t full, uint64_t quick) {
    long scale = argc > 1 ? strtol(argv[1], NULL, 10) : 1;
    if (scale <= 0)
        return quick;
    return full * (uint64_t)scale;
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* Every block starts with a header when it has room for one (8 bytes and more): the value added
 * to the checksum when it is freed, and its size. Blocks other than 8 bytes also carry a tag in
 * their last byte, checked at free. Below 8 bytes the first byte holds the value's low byte. */
typedef struct {
    uint32_t value;
    uint32_t size;
} block_hdr;

/* Writes the header (or, below 8 bytes, one byte) and the last byte of a new block. */
static inline void block_fill(void *p, size_t size, uint32_t value) {
    unsigned char *b = (unsigned char *)p;
    if (size >= sizeof(block_hdr)) {
        block_hdr *h = (block_hdr *)p;
        h->value = value;
        h->size = (uint32_t)size;
    } else {
        b[0] = (unsigned char)value;
    }
    if (size != sizeof(block_hdr))
        b[size - 1] = (unsigned char)(size ^ 0x5A);
}

/* The size of a block of 8 bytes or more, from its header. */
static inline size_t block_size(const void *p) { return ((const block_hdr *)p)->size; }

/* Checks a block written by block_fill(p, size, _) and returns what it adds to the checksum:
 * its value (the low byte below 8 bytes) plus its size. Exits with status 3 when the block was
 * overwritten. */
static inline uint64_t block_check(const void *p, size_t size) {
    const unsigned char *b = (const unsigned char *)p;
    if (size != sizeof(block_hdr) && b[size - 1] != (unsigned char)(size ^ 0x5A)) {
        fprintf(stderr, "corrupted block %p (size %zu)\n", p, size);
        exit(3);
    }
    if (size >= sizeof(block_hdr)) {
        const block_hdr *h = (const block_hdr *)p;
        if (h->size != size) {
            fprintf(stderr, "corrupted block %p (size %zu, header says %u)\n", p, size, h->size);
            exit(3);
        }
        return (uint64_t)h->value + size;
    }
    return (uint64_t)b[0] + size;
}

#endif

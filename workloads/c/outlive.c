/* Objects that outlive their threads.
 *
 * The program runs GENERATIONS generations of THREADS short-lived threads over one table of
 * SLOTS chains of small blocks (16-320 bytes, 1-8 nodes per chain). Thread t of generation g
 * works on region (t + g) mod THREADS of the table, so the chains it finds were made by a thread
 * of the previous generation that has exited since: it frees about half of them (checking every
 * node) and builds new chains in their place, which in turn outlive it. The main thread frees
 * what is left at the end. */
#include "common.h"
#include <pthread.h>

#define THREADS 4
#define SLOTS (1 << 14)
#define REGION (SLOTS / THREADS)

struct node {
    block_hdr hdr; /* the value and size checked at free */
    struct node *next;
};

static struct node *table[SLOTS];
static uint64_t generation_ops;

struct job {
    long region;
    uint64_t seed;
    uint64_t sum;
};

static struct node *make_chain(rng_t *r) {
    struct node *head = NULL;
    int n = 1 + (int)rng_below(r, 8);
    for (int i = 0; i < n; i++) {
        size_t size = 16 + rng_below(r, 305);
        if (size < sizeof(struct node) + 1)
            size = sizeof(struct node) + 1;
        struct node *p = xmalloc(size);
        block_fill(p, size, (uint32_t)rng_next(r));
        p->next = head;
        head = p;
    }
    return head;
}

static uint64_t free_chain(struct node *p) {
    uint64_t sum = 0;
    while (p != NULL) {
        struct node *next = p->next;
        sum += block_check(p, p->hdr.size);
        free(p);
        p = next;
    }
    return sum;
}

static void *worker(void *arg) {
    struct job *j = arg;
    rng_t r = rng_new(j->seed);
    struct node **region = &table[j->region * REGION];
    for (uint64_t i = 0; i < generation_ops; i++) {
        size_t k = rng_below(&r, REGION);
        if (region[k] == NULL || rng_below(&r, 2) == 0) {
            j->sum += free_chain(region[k]);
            region[k] = make_chain(&r);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    uint64_t generations = scaled(argc, argv, 120, 6);
    generation_ops = REGION;
    uint64_t sum = 0;
    for (uint64_t g = 0; g < generations; g++) {
        pthread_t th[THREADS];
        struct job jobs[THREADS];
        for (long t = 0; t < THREADS; t++) {
            jobs[t] = (struct job){(t + (long)g) % THREADS, g * THREADS + (uint64_t)t, 0};
            pthread_create(&th[t], NULL, worker, &jobs[t]);
        }
        for (long t = 0; t < THREADS; t++) {
            pthread_join(th[t], NULL);
            sum += jobs[t].sum;
        }
    }
    for (size_t k = 0; k < SLOTS; k++)
        sum += free_chain(table[k]);
    printf("checksum=%llu\n", (unsigned long long)sum);
    return 0;
}

/* A producer/consumer at 64 bytes: every free is by another thread.
 *
 * PAIRS producer threads each allocate 64-byte messages and hand them, in batches of BATCH
 * pointers through a bounded queue of QUEUE batches (a mutex and two condition variables), to
 * their consumer thread, which checks and frees them. The batches live in static memory, so the
 * only heap traffic is the messages themselves. */
#include "common.h"
#include <pthread.h>

#define PAIRS 1
#define BATCH 256
#define QUEUE 32
#define MSG 64

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    void *batch[QUEUE][BATCH];
    size_t len[QUEUE];
    size_t head, count;
    int done;
    uint64_t msgs, sum;
};

static struct queue queues[PAIRS];

static void *producer(void *arg) {
    struct queue *q = arg;
    rng_t r = rng_new((uint64_t)(q - queues) + 64);
    uint64_t made = 0;
    while (made < q->msgs) {
        pthread_mutex_lock(&q->lock);
        while (q->count == QUEUE)
            pthread_cond_wait(&q->not_full, &q->lock);
        size_t slot = (q->head + q->count) % QUEUE;
        pthread_mutex_unlock(&q->lock);
        /* Only the producer writes a free slot: fill it outside the lock. */
        size_t n = 0;
        while (n < BATCH && made < q->msgs) {
            void *p = xmalloc(MSG);
            block_fill(p, MSG, (uint32_t)rng_next(&r));
            q->batch[slot][n++] = p;
            made++;
        }
        pthread_mutex_lock(&q->lock);
        q->len[slot] = n;
        q->count++;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_lock(&q->lock);
    q->done = 1;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static void *consumer(void *arg) {
    struct queue *q = arg;
    uint64_t sum = 0;
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (q->count == 0 && !q->done)
            pthread_cond_wait(&q->not_empty, &q->lock);
        if (q->count == 0) {
            pthread_mutex_unlock(&q->lock);
            break;
        }
        size_t slot = q->head;
        pthread_mutex_unlock(&q->lock);
        for (size_t i = 0; i < q->len[slot]; i++) {
            void *p = q->batch[slot][i];
            sum += block_check(p, MSG);
            free(p);
        }
        pthread_mutex_lock(&q->lock);
        q->head = (q->head + 1) % QUEUE;
        q->count--;
        pthread_cond_signal(&q->not_full);
        pthread_mutex_unlock(&q->lock);
    }
    q->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    uint64_t msgs = scaled(argc, argv, 10000000, 300000);
    pthread_t th[2 * PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        struct queue *q = &queues[i];
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->not_empty, NULL);
        pthread_cond_init(&q->not_full, NULL);
        q->msgs = msgs;
        pthread_create(&th[2 * i], NULL, consumer, q);
        pthread_create(&th[2 * i + 1], NULL, producer, q);
    }
    uint64_t sum = 0;
    for (int i = 0; i < 2 * PAIRS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < PAIRS; i++)
        sum += queues[i].sum;
    printf("checksum=%llu\n", (unsigned long long)sum);
    return 0;
}

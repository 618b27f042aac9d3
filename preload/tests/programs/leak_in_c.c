/* The profiler through the preload: `leak_in_c` leaks N blocks of 100 bytes (kept in a global
 * list, never freed), around churn that frees everything it makes. Prints `leaked BYTES`. With
 * `free` as argument, it frees the leak before exiting (the report must then be empty of it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item {
    struct item *next;
    char payload[92];
};

static struct item *kept;

__attribute__((noinline)) void leak_in_c(int n) {
    for (int i = 0; i < n; i++) {
        struct item *it = malloc(sizeof *it);
        memset(it->payload, i, sizeof it->payload);
        it->next = kept;
        kept = it;
    }
}

__attribute__((noinline)) void churn(int n) {
    char *ring[64] = {0};
    for (int i = 0; i < n; i++) {
        free(ring[i % 64]);
        ring[i % 64] = malloc(16 + i % 400);
        ring[i % 64][0] = (char)i;
    }
    for (int i = 0; i < 64; i++) free(ring[i]);
    /* A large block grown by realloc, then freed. */
    char *big = malloc(1000);
    for (int size = 2000; size < (1 << 20); size *= 2) big = realloc(big, size);
    free(big);
}

int main(int argc, char **argv) {
    int n = 20000;
    churn(100000);
    leak_in_c(n);
    churn(100000);
    if (argc > 1 && strcmp(argv[1], "free") == 0) {
        while (kept) {
            struct item *next = kept->next;
            free(kept);
            kept = next;
        }
    }
    printf("leaked %zu\n", (size_t)n * sizeof(struct item));
    return 0;
}

/* Exactly N malloc+free pairs, for instruction counts through the preload (the C twin of
 * examples/pairs.rs):
 *   ./pairs N [SIZE]   N pairs of SIZE bytes (default 64)
 *   ./pairs N mixed    N pairs of sizes 16..512 (16 + (i * 7 * 16) % 497, every class)
 * Instructions per pair = (Ir at 2N - Ir at N) / N under callgrind, which cancels start-up and
 * exit. The pointer goes through a volatile so the compiler cannot drop the pair. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int mixed = argc > 2 && strcmp(argv[2], "mixed") == 0;
    size_t size = argc > 2 && !mixed ? (size_t)atol(argv[2]) : 64;
    void *volatile keep;
    for (long i = 0; i < n; i++) {
        size_t s = mixed ? 16 + (size_t)((i * 7 * 16) % 497) : size;
        keep = malloc(s);
        free(keep);
    }
    printf("%ld pairs\n", n);
    return 0;
}

/* Prints the usable size of a 1-byte block: 16 when smallarena's arena served it, 24 for glibc,
 * 1 for memcheck's replacement malloc. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    void *p = malloc(1);
    fprintf(stderr, "usable_size(malloc(1)) = %zu\n", malloc_usable_size(p));
    free(p);
    return 0;
}

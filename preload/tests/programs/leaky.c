/* Memcheck must report the same errors and leaks with and without the preload. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *a = malloc(40);
    strcpy(a, "hello");
    char *b = malloc(1000);
    b[0] = 1;
    char *c = calloc(3, 10);
    void *d;
    if (posix_memalign(&d, 64, 100) != 0) return 1;
    free(b);
    char *e = malloc(10);
    e[0] = 'e';
    free(e);
    volatile char x = e[0]; /* use after free */
    (void)x;
    char *f = malloc(8); /* leaked, read uninitialised */
    if (f[3]) puts("uninit");
    printf("%s %d\n", a, c[0]);
    return 0;
}

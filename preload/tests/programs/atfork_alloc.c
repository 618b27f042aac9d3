/* Fork handlers registered before the allocator's that allocate (prepare, parent and child; or
 * with CHILD_ONLY=1 only a child handler): a few thousand blocks of many sizes, enough to need
 * new pools. Registered from a constructor of the program, or with -DPREINIT from a
 * .preinit_array entry, which runs before the preload library's constructors.
 * Expected: prints "ok" and exits 0 (as with glibc's malloc). From ../shared/cases/lifecycle. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void churn(void) {
    enum { N = 3000 };
    static void *v[N];
    for (int i = 0; i < N; i++) v[i] = malloc(16 + (i % 31) * 16);
    for (int i = 0; i < N; i++) free(v[i]);
}
static void on_prepare(void) { churn(); }
static void on_parent(void) { churn(); }
static void on_child(void) { churn(); }

static int child_only;

static void library_init(void) {
    const char *e = getenv("CHILD_ONLY");
    child_only = e && *e == '1';
    if (child_only)
        pthread_atfork(NULL, NULL, on_child);
    else
        pthread_atfork(on_prepare, on_parent, on_child);
}

#ifdef PREINIT
/* Before every constructor, the preload library's included: smallarena's handlers are then
 * registered after these, and run inside them. */
__attribute__((section(".preinit_array"), used)) static void (*register_early)(void) = library_init;
#else
/* A constructor of the program: after the preload library's. */
__attribute__((constructor)) static void register_in_constructor(void) { library_init(); }
#endif

int main(void) {
    free(malloc(64)); /* the program has allocated before it forks */
    for (int round = 0; round < 3; round++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 2; }
        if (pid == 0) {
            churn();
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("child of round %d failed\n", round);
            return 1;
        }
    }
    puts("ok");
    return 0;
}

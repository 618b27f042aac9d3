/* fork while other threads allocate; the child frees inherited blocks, allocates, starts a thread,
 * then execs a program (which inherits LD_PRELOAD). Also popen and posix_spawn-based system(). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *arg) {
    (void)arg;
    void *keep[64] = {0};
    unsigned i = 0;
    while (!stop) {
        unsigned k = i % 64;
        free(keep[k]);
        keep[k] = malloc((i * 37) % 700);
        i++;
    }
    for (int k = 0; k < 64; k++) free(keep[k]);
    return NULL;
}

static void *child_thread(void *arg) {
    char *s = malloc(100);
    strcpy(s, arg);
    return s;
}

int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, churn, NULL);
    char *inherited[100];
    for (int i = 0; i < 100; i++) { inherited[i] = malloc(i * 5 + 1); memset(inherited[i], 'x', i * 5 + 1); }
    for (int round = 0; round < 5; round++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 100; i++) free(inherited[i]);
            char *a = malloc(33);
            pthread_t th;
            pthread_create(&th, NULL, child_thread, "from a child thread");
            void *r;
            pthread_join(th, &r);
            printf("child %d: %s\n", round, (char *)r);
            free(r);
            free(a);
            fflush(stdout);
            char arg[32];
            snprintf(arg, sizeof arg, "exec %d", round);
            execlp("sh", "sh", "-c", "echo \"$0\" | tr a-z A-Z", arg, (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { printf("child %d failed: %d\n", round, st); return 1; }
    }
    FILE *f = popen("printf 'a\\nb\\nc\\n' | sort -r", "r");
    char line[64];
    while (fgets(line, sizeof line, f)) printf("popen: %s", line);
    if (pclose(f) != 0) return 1;
    if (system("echo system ok") != 0) return 1;
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 100; i++) free(inherited[i]);
    puts("parent done");
    return 0;
}

/* runner: run one benchmark command, measure its wall time and peak RSS.
 *
 *   runner RESULTFILE TIMEOUT_S COMMAND [ARGS...]
 *
 * Starts COMMAND with posix_spawn (in its own process group), waits for it
 * with wait4 and writes to RESULTFILE:
 *   wall_s <seconds>
 *   maxrss_kib <ru_maxrss of the child, including its waited-for children>
 *   user_s, sys_s, minflt, nvcsw, nivcsw <CPU times, minor page faults and
 *       voluntary/involuntary context switches of the child (and its
 *       waited-for children)>
 *   status <ok | exit N | signal N | timeout>
 * The command's stdout and stderr are the runner's.  If the environment
 * variable BENCH_CHILD_PRELOAD is set and not empty, the child (and only the
 * child) gets it as LD_PRELOAD, so the runner itself never runs on the
 * allocator under test.
 *
 * Why not measure from the Python harness: Linux carries the peak RSS of a
 * process image across execve, so a child forked from a big interpreter
 * reports at least the interpreter's RSS.  This runner is small and spawns
 * through vfork semantics, so what it reports is the command's own peak.
 * On TIMEOUT_S the process group is killed with SIGKILL.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t timed_out;
static pid_t child;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
    if (child > 0)
        kill(-child, SIGKILL);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: runner RESULTFILE TIMEOUT_S COMMAND [ARGS...]\n");
        return 64;
    }
    const char *resfile = argv[1];
    unsigned timeout = (unsigned)strtoul(argv[2], NULL, 10);
    const char *pre = getenv("BENCH_CHILD_PRELOAD");
    if (pre && *pre)
        setenv("LD_PRELOAD", pre, 1);
    else
        unsetenv("LD_PRELOAD");
    unsetenv("BENCH_CHILD_PRELOAD");

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int err = posix_spawnp(&child, argv[3], NULL, &attr, &argv[3], environ);
    if (err != 0) {
        fprintf(stderr, "runner: cannot start %s: %s\n", argv[3], strerror(err));
        return 127;
    }
    if (timeout)
        alarm(timeout);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(child, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("runner: wait4");
            return 70;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    FILE *f = fopen(resfile, "w");
    if (!f) {
        perror(resfile);
        return 70;
    }
    fprintf(f, "wall_s %.6f\nmaxrss_kib %ld\n", wall, ru.ru_maxrss);
    fprintf(f, "user_s %.6f\nsys_s %.6f\nminflt %ld\nnvcsw %ld\nnivcsw %ld\n",
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
            ru.ru_minflt, ru.ru_nvcsw, ru.ru_nivcsw);
    if (timed_out)
        fprintf(f, "status timeout\n");
    else if (WIFSIGNALED(status))
        fprintf(f, "status signal %d\n", WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        fprintf(f, "status exit %d\n", WEXITSTATUS(status));
    else
        fprintf(f, "status ok\n");
    fclose(f);
    return 0;
}

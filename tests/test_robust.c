/* Never hang, never corrupt: fork from signal handlers, signal handlers
 * that allocate, threads killed inside the allocator, the first allocation
 * under a limit, emma_owns racing an unmap, double frees.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma.la: malloc & co. are emma's, in this program and
 * in Check itself.  Each test runs in its own Check child with a timeout,
 * so a hang is a reported failure.  The windows these tests aim at are a
 * few instructions wide: each test repeats its event thousands of times
 * (signals, forks, thread deaths), bounded by a count and by time.
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

void free_sized(void *ptr, size_t size);

/* EMMA_ROBUST_SCALE=N multiplies every count and time bound by N (for
 * long runs by hand; make check uses 1). */
static double scale(void)
{
    const char *e = getenv("EMMA_ROBUST_SCALE");
    double f = e ? atof(e) : 1.0;
    return f > 0 ? f : 1.0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Install handler fn for sig (flags: SA_RESTART or 0). */
static void on_signal(int sig, void (*fn)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(sig, &sa, NULL), 0);
}

/* Busy-wait about `ns` nanoseconds (a random moment for a signal). */
static void spin_ns(long ns)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < ns);
}

/* Sizes from 1 B to max, most of them small, a few up to max. */
static size_t any_size(uint64_t *rng, size_t max)
{
    uint64_t r = tu_rand(rng);
    size_t s;
    switch (r % 16) {
    case 0: s = (size_t)1 << (20 + (r >> 8) % 2); s += (r >> 16) % s; break; /* 1..4 MiB */
    case 1: case 2: s = 1 + (size_t)((r >> 8) % (512 << 10)); break;
    case 3: case 4: case 5: s = 1 + (size_t)((r >> 8) % (16 << 10)); break;
    default: s = 1 + (size_t)((r >> 8) % 1024); break;
    }
    return s < max ? s : max;
}

/* Fill and check only the ends of big blocks: the tests are about the
 * allocator's bookkeeping, not memory bandwidth. */
static void mark(unsigned char *p, size_t n, uint64_t seed)
{
    if (n <= 64) {
        tu_fill(p, n, seed);
    } else {
        tu_fill(p, 32, seed);
        tu_fill(p + n - 32, 32, seed + 1);
    }
}

static int marked(const unsigned char *p, size_t n, uint64_t seed)
{
    if (n <= 64)
        return tu_check(p, n, seed) < 0;
    return tu_check(p, 32, seed) < 0 && tu_check(p + n - 32, 32, seed + 1) < 0;
}

/* ================================================================== */
/* fork() from a signal handler that interrupted malloc/free            */

enum { FS_RING = 512, FS_SENDERS = 2, FS_FORKS = 2000 };
static atomic_int fs_stop, fs_forks, fs_bad_children, fs_last_status, fs_in_handler;
/* The main thread's steps: a sender signals again only once main made one
 * since its last signal.  A handler's fork and wait took longer than the
 * senders' 0-300 us between signals on a loaded VM, so the next signal
 * was always pending when a handler returned and main never ran another
 * instruction (stuck inside pthread_create for 30 s: "Test timeout
 * expired", on main too, 3 runs in 4). */
static atomic_long fs_progress;
static pthread_t fs_main;

/* The child: allocate and free from inside the handler of the process
 * that was interrupted, then leave. */
static int fs_child(void)
{
    uint64_t rng = (uint64_t)getpid() * 7919;
    void *p[64];
    size_t s[64];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 64; i++) {
            s[i] = any_size(&rng, 3 << 20);
            p[i] = malloc(s[i]);
            if (!p[i])
                return 2;
            mark(p[i], s[i], (uintptr_t)p[i]);
        }
        for (int i = 0; i < 64; i++) {
            if (!marked(p[i], s[i], (uintptr_t)p[i]))
                return 3;
            free(p[i]);
        }
    }
    return 0;
}

/* From a signal handler: fork a child that runs fs_child, wait for it,
 * count it in *forks, and a failed one in *bad (its status in *last). */
static void fork_child_and_wait(atomic_int *forks, atomic_int *bad, atomic_int *last)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5); /* a hung child dies of SIGALRM and is reported */
        _exit(fs_child());
    }
    if (pid > 0) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            atomic_fetch_add(bad, 1);
            atomic_store(last, st);
        }
        atomic_fetch_add(forks, 1);
    }
}

static void fs_handler(int sig)
{
    (void)sig;
    int saved = errno;
    if (atomic_exchange(&fs_in_handler, 1)) {
        errno = saved;
        return;
    }
    fork_child_and_wait(&fs_forks, &fs_bad_children, &fs_last_status);
    atomic_store(&fs_in_handler, 0);
    errno = saved;
}

/* Other threads: keep allocating (so that some are inside emma at every
 * fork) and keep signalling the main thread. */
static void *fs_sender(void *arg)
{
    uint64_t rng = 99 + (uintptr_t)arg;
    void *keep[16] = {0};
    long seen = -1;
    while (!atomic_load(&fs_stop)) {
        for (int k = 0; k < 8; k++) {
            unsigned i = (unsigned)(tu_rand(&rng) % 16);
            free(keep[i]);
            keep[i] = malloc(any_size(&rng, 256 << 10));
        }
        long p = atomic_load(&fs_progress);
        if (p != seen) {
            seen = p;
            pthread_kill(fs_main, SIGUSR1);
        }
        spin_ns((long)(tu_rand(&rng) % 300000));
    }
    for (int i = 0; i < 16; i++)
        free(keep[i]);
    return NULL;
}

START_TEST(t_fork_in_signal_handler)
{
    on_signal(SIGUSR1, fs_handler, SA_RESTART);
    fs_main = pthread_self();
    pthread_t th[FS_SENDERS];
    for (int i = 0; i < FS_SENDERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, fs_sender, (void *)(uintptr_t)i), 0);

    uint64_t rng = 4242;
    unsigned char *ring[FS_RING] = {0};
    size_t sz[FS_RING] = {0};
    long corrupt = 0;
    double t0 = now_s(), last_fork_at = t0;
    int forks_seen = 0;
    /* 6 s, or up to 20 s on a loaded machine until 100 forks are done: a
     * hang stops the forks (the handler waits for each child) whatever the
     * time. */
    while (atomic_load(&fs_forks) < FS_FORKS * scale() && atomic_load(&fs_bad_children) == 0 &&
           (now_s() - t0 < 6 * scale() || (atomic_load(&fs_forks) < 100 && now_s() - t0 < 20))) {
        if (atomic_load(&fs_forks) != forks_seen) {
            forks_seen = atomic_load(&fs_forks);
            last_fork_at = now_s();
        }
        atomic_fetch_add(&fs_progress, 1);
        unsigned i = (unsigned)(tu_rand(&rng) % FS_RING);
        if (ring[i]) {
            corrupt += !marked(ring[i], sz[i], (uintptr_t)ring[i]);
            free(ring[i]);
        }
        sz[i] = any_size(&rng, 3 << 20);
        ring[i] = malloc(sz[i]);
        TU_ASSERT(ring[i] != NULL);
        mark(ring[i], sz[i], (uintptr_t)ring[i]);
    }
    atomic_store(&fs_stop, 1);
    for (int i = 0; i < FS_SENDERS; i++)
        pthread_join(th[i], NULL);
    signal(SIGUSR1, SIG_IGN);
    for (int i = 0; i < FS_RING; i++)
        free(ring[i]);
    int st = atomic_load(&fs_last_status);
    fprintf(stderr, "# fork in handler: %d forks in %.1f s\n", atomic_load(&fs_forks),
            now_s() - t0);
    ck_assert_msg(atomic_load(&fs_bad_children) == 0,
                  "%d of %d children failed (last: %s %d)", atomic_load(&fs_bad_children),
                  atomic_load(&fs_forks), WIFEXITED(st) ? "exit code" : "killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    ck_assert_int_eq(corrupt, 0);
    /* a hang stops the forks: fewer than 100 (a machine loaded by other
     * builds managed 85 in 20 s) fail only if they had stopped */
    double quiet = now_s() - last_fork_at;
    ck_assert_msg(atomic_load(&fs_forks) >= 100 || (atomic_load(&fs_forks) >= 20 && quiet < 3.0),
                  "only %d forks, none in the last %.1f s", atomic_load(&fs_forks), quiet);
}
END_TEST

/* ================================================================== */
/* Signal handlers that leave emma by siglongjmp, mixed with handlers    */
/* that fork                                                            */
/* ================================================================== */

/* A SIGUSR2 handler allocates, then siglongjmps back to the main loop,
 * abandoning whatever emma call it interrupted (a fast path, a slow path,
 * a handler's own call on a spare heap: SA_NODEFER lets handlers nest).
 * SIGUSR1's handler forks a child that allocates (fs_child) and waits
 * for it.  Before emma found abandoned frames (heap.c:
 * heap_left_recover), every call after ~8 such jumps returned NULL (the
 * spare heaps all stayed locked) and 406 of 544 children failed.  With
 * this process's other threads allocating and trimming meanwhile, nothing
 * may fail, hang or be corrupted. */
enum { LJ_RING = 256, LJ_SENDERS = 3 };
static sigjmp_buf lj_jump;
static volatile sig_atomic_t lj_armed;
static atomic_int lj_stop, lj_jumps, lj_handler_nulls, lj_forks, lj_bad_children, lj_status;
static atomic_long lj_progress;
static pthread_t lj_main;

static void lj_on_jump(int sig)
{
    (void)sig;
    void *p = malloc(100 + (size_t)(atomic_load(&lj_jumps) % 3000));
    if (!p)
        atomic_fetch_add(&lj_handler_nulls, 1);
    free(p);
    if (lj_armed) {
        atomic_fetch_add(&lj_jumps, 1);
        siglongjmp(lj_jump, 1);
    }
}

static void lj_on_fork(int sig)
{
    (void)sig;
    int saved = errno;
    fork_child_and_wait(&lj_forks, &lj_bad_children, &lj_status);
    errno = saved;
}

static void *lj_sender(void *arg)
{
    uint64_t rng = 777 + (uintptr_t)arg;
    void *keep[16] = {0};
    long seen = -1;
    while (!atomic_load(&lj_stop)) {
        for (int k = 0; k < 8; k++) {
            unsigned i = (unsigned)(tu_rand(&rng) % 16);
            free(keep[i]);
            keep[i] = malloc(any_size(&rng, 256 << 10));
        }
        if (tu_rand(&rng) % 64 == 0)
            emma_trim();
        long p = atomic_load(&lj_progress);
        if (p != seen) { /* as fs_sender: main must get to run */
            seen = p;
            pthread_kill(lj_main, tu_rand(&rng) % 8 == 0 ? SIGUSR1 : SIGUSR2);
        }
        spin_ns((long)(tu_rand(&rng) % 200000));
    }
    for (int i = 0; i < 16; i++)
        free(keep[i]);
    return NULL;
}

/* Not on the stack: the main loop's state must survive the jumps. */
static unsigned char *volatile lj_ring[LJ_RING];
static volatile size_t lj_size[LJ_RING];
static volatile long lj_main_nulls, lj_corrupt;

START_TEST(t_siglongjmp_out_of_emma)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lj_on_fork;
    sa.sa_flags = SA_RESTART;
    sigaddset(&sa.sa_mask, SIGUSR2); /* never jump out of fork() itself */
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lj_on_jump;
    sa.sa_flags = SA_NODEFER;
    ck_assert_int_eq(sigaction(SIGUSR2, &sa, NULL), 0);
    lj_main = pthread_self();
    pthread_t th[LJ_SENDERS];
    for (int i = 0; i < LJ_SENDERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, lj_sender, (void *)(uintptr_t)i), 0);

    static uint64_t rng = 31337;
    static double t0;
    t0 = now_s();
    sigsetjmp(lj_jump, 1);
    lj_armed = 1;
    /* 4 s with at least 300 jumps and 20 forks, or up to 20 s for them */
    while (now_s() - t0 < 4 * scale() ||
           ((atomic_load(&lj_jumps) < 300 || atomic_load(&lj_forks) < 20) && now_s() - t0 < 20)) {
        atomic_fetch_add(&lj_progress, 1);
        unsigned i = (unsigned)(tu_rand(&rng) % LJ_RING);
        unsigned char *old = lj_ring[i];
        lj_ring[i] = NULL; /* a jump from here on must not free it twice */
        if (old) {
            lj_corrupt += !marked(old, lj_size[i], (uintptr_t)old);
            free(old);
        }
        size_t n = any_size(&rng, 3 << 20);
        unsigned char *p = malloc(n);
        if (!p) {
            lj_main_nulls++;
            continue;
        }
        mark(p, n, (uintptr_t)p);
        lj_size[i] = n;
        lj_ring[i] = p;
    }
    lj_armed = 0;
    atomic_store(&lj_stop, 1);
    for (int i = 0; i < LJ_SENDERS; i++)
        pthread_join(th[i], NULL);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    /* after the last jump, the thread allocates as before */
    void *after = malloc(1000);
    ck_assert_ptr_nonnull(after);
    free(after);
    for (int i = 0; i < LJ_RING; i++)
        if (lj_ring[i]) {
            lj_corrupt += !marked(lj_ring[i], lj_size[i], (uintptr_t)lj_ring[i]);
            free(lj_ring[i]);
        }
    int st = atomic_load(&lj_status);
    fprintf(stderr, "# siglongjmp out of emma: %d jumps, %d forks in %.1f s\n",
            atomic_load(&lj_jumps), atomic_load(&lj_forks), now_s() - t0);
    ck_assert_msg(atomic_load(&lj_jumps) >= 300 && atomic_load(&lj_forks) >= 20,
                  "only %d jumps and %d forks in 20 s", atomic_load(&lj_jumps),
                  atomic_load(&lj_forks));
    ck_assert_msg(atomic_load(&lj_handler_nulls) == 0 && lj_main_nulls == 0,
                  "malloc returned NULL %d times in the handler, %ld in the main loop",
                  atomic_load(&lj_handler_nulls), (long)lj_main_nulls);
    ck_assert_msg(atomic_load(&lj_bad_children) == 0, "%d of %d children failed (last: %s %d)",
                  atomic_load(&lj_bad_children), atomic_load(&lj_forks),
                  WIFEXITED(st) ? "exit code" : "killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    ck_assert_int_eq(lj_corrupt, 0);
}
END_TEST

/* The same on a signal stack (SA_ONSTACK): a handler allocates there
 * (maybe from a spare heap, recording its stack pointer on the signal
 * stack) and a nested one jumps back to the thread's own stack.  With
 * the signal stack above the thread's stack, emma took every later call
 * for one nested in that frame and the thread lived on leaked spare heaps
 * (6.8-22.6 million NULLs in 5 s, newcomer's t2_althi); below it, a spare
 * heap left locked on the signal stack was never found gone (20k-102k
 * NULLs in the handlers).  Both placements, 2 s each. */
static sigjmp_buf ss_jump;
static pthread_t ss_thread;
static char *ss_alt;
static atomic_int ss_stop;
static atomic_long ss_progress, ss_jumps, ss_handler_runs, ss_nulls;
static void *volatile ss_ring[64];

static void ss_on_alloc(int sig)
{
    (void)sig;
    for (int k = 0; k < 4; k++) {
        size_t n = 16 + (size_t)(k * 977 + atomic_load(&ss_handler_runs) * 131) % 30000;
        void *p = malloc(n);
        if (!p)
            atomic_fetch_add(&ss_nulls, 1);
        free(p);
    }
    atomic_fetch_add(&ss_handler_runs, 1);
}

static void ss_on_jump(int sig)
{
    (void)sig;
    atomic_fetch_add(&ss_jumps, 1);
    siglongjmp(ss_jump, 1);
}

static void *ss_worker(void *arg)
{
    (void)arg;
    stack_t ss = {.ss_sp = ss_alt, .ss_size = 1 << 20};
    ck_assert_int_eq(sigaltstack(&ss, NULL), 0);
    static volatile unsigned i;
    i = 0;
    sigsetjmp(ss_jump, 1);
    while (!atomic_load(&ss_stop)) {
        i++;
        unsigned j = i % 64;
        void *p = ss_ring[j];
        ss_ring[j] = NULL;
        free(p);
        p = malloc((i * 2654435761u) % 200000 + 1);
        if (!p)
            atomic_fetch_add(&ss_nulls, 1);
        ss_ring[j] = p;
        atomic_fetch_add(&ss_progress, 1);
    }
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    return NULL;
}

static void *ss_sender(void *arg)
{
    int sig = (int)(intptr_t)arg;
    long last = 0; /* the worker's sigsetjmp ran once progress moved */
    while (!atomic_load(&ss_stop)) {
        long p = atomic_load(&ss_progress);
        if (p != last) {
            last = p;
            pthread_kill(ss_thread, sig);
        }
        if (sig == SIGUSR2)
            usleep(50);
        else
            sched_yield();
    }
    return NULL;
}

START_TEST(t_siglongjmp_signal_stack)
{
    static char low_alt[1 << 20]; /* in .bss: below the thread's stack */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ss_on_alloc;
    sa.sa_flags = SA_ONSTACK;
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    sa.sa_handler = ss_on_jump;
    sa.sa_flags = SA_ONSTACK | SA_NODEFER;
    ck_assert_int_eq(sigaction(SIGUSR2, &sa, NULL), 0);
    for (int above = 0; above < 2; above++) {
        /* mapped before the thread: its stack is mapped below */
        ss_alt = above ? mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                              -1, 0)
                       : low_alt;
        ck_assert_ptr_ne(ss_alt, MAP_FAILED);
        atomic_store(&ss_stop, 0);
        atomic_store(&ss_progress, 0);
        atomic_store(&ss_jumps, 0);
        atomic_store(&ss_handler_runs, 0);
        atomic_store(&ss_nulls, 0);
        pthread_t s1, s2;
        ck_assert_int_eq(pthread_create(&ss_thread, NULL, ss_worker, NULL), 0);
        ck_assert_int_eq(pthread_create(&s1, NULL, ss_sender, (void *)(intptr_t)SIGUSR1), 0);
        ck_assert_int_eq(pthread_create(&s2, NULL, ss_sender, (void *)(intptr_t)SIGUSR2), 0);
        double t0 = now_s();
        while (now_s() - t0 < 2 * scale() ||
               (atomic_load(&ss_jumps) < 100 && now_s() - t0 < 20))
            usleep(20000);
        atomic_store(&ss_stop, 1);
        pthread_join(s1, NULL);
        pthread_join(s2, NULL);
        pthread_join(ss_thread, NULL);
        for (int i = 0; i < 64; i++) {
            free(ss_ring[i]);
            ss_ring[i] = NULL;
        }
        fprintf(stderr, "# signal stack %s the thread's: %ld jumps, %ld handler runs, %ld steps\n",
                above ? "above" : "below", (long)ss_jumps, (long)ss_handler_runs,
                (long)ss_progress);
        ck_assert_msg(atomic_load(&ss_nulls) == 0,
                      "signal stack %s the thread's: malloc returned NULL %ld times",
                      above ? "above" : "below", (long)ss_nulls);
        ck_assert_msg(atomic_load(&ss_jumps) >= 100, "only %ld jumps", (long)ss_jumps);
        if (above)
            munmap(ss_alt, 1 << 20);
    }
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
}
END_TEST

/* ================================================================== */
/* fork while another thread is inside emma_stats' walk of the segments */
/* ================================================================== */

/* Unmaps are deferred while a walk reads the address map (os.c).  A fork
 * child inherits the count of the parent's walks, which never end there:
 * its unmaps must not wait for them forever. */
static atomic_int ws_stop;

static void *ws_walker(void *arg)
{
    (void)arg;
    struct emma_stats st;
    while (!atomic_load(&ws_stop))
        emma_stats(&st, sizeof st);
    return NULL;
}

/* In the child: a private heap's segment, destroyed, must be unmapped at
 * once (mincore fails with ENOMEM on an unmapped page). */
static int ws_child(void)
{
    emma_heap_t *h = emma_heap_new();
    if (!h)
        return 2;
    char *p = emma_heap_alloc(h, 100, 16);
    if (!p)
        return 3;
    p[0] = 1;
    emma_heap_destroy(h);
    unsigned char vec;
    void *page = (void *)((uintptr_t)p & ~(uintptr_t)4095);
    return mincore(page, 4096, &vec) == -1 && errno == ENOMEM ? 0 : 1;
}

START_TEST(t_fork_during_stats_walk)
{
    /* the parent's own segments, so that the walk has something to read */
    void *keep[64];
    for (int i = 0; i < 64; i++)
        keep[i] = malloc((size_t)(i + 1) * 1000);
    pthread_t w;
    ck_assert_int_eq(pthread_create(&w, NULL, ws_walker, NULL), 0);
    int forks = 0, stuck = 0, failed = 0;
    for (; forks < 60 * scale(); forks++) {
        spin_ns(20000);
        pid_t pid = fork();
        if (pid == 0)
            _exit(ws_child());
        ck_assert_int_ge(pid, 0);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
            stuck++;
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    atomic_store(&ws_stop, 1);
    pthread_join(w, NULL);
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    ck_assert_msg(stuck == 0 && failed == 0,
                  "%d of %d children kept an unmapped heap mapped, %d failed otherwise", stuck,
                  forks, failed);
}
END_TEST

/* ================================================================== */
/* A signal handler that allocates, interrupting the same thread's       */
/* malloc/free/realloc                                                 */

enum { SA_HELD = 16, SA_SIGNALS = 30000 };
static atomic_long sa_signals, sa_corrupt, sa_null;
static atomic_int sa_stop;
/* A one-shot timer, armed again at the end of each handler: a periodic one
 * livelocked the test wherever a handler took longer than the period (the
 * --enable-boundary-checks build reads each freed block's header with
 * process_vm_readv, 2-5 us a call in a virtual machine): the next signal
 * was always pending when the handler returned, and the interrupted
 * thread never ran again (30 s timeout, 13,000 signals a second). */
static timer_t sa_timer;
static void sa_arm(void)
{
    struct itimerspec its = {{0, 0}, {0, 25000}};
    timer_settime(sa_timer, 0, &its, NULL);
}
static unsigned char *sa_held[SA_HELD];
static size_t sa_held_size[SA_HELD];
static uint64_t sa_rng = 1;

static void sa_on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    /* keep a few blocks across signals, replace some, churn others; some
     * above 64 KiB, the shared heap's, whose lock the interrupted thread
     * may hold outside its slow path (lib/alloc.c, alloc_big; free.c) */
    for (int k = 0; k < 3; k++) {
        unsigned i = (unsigned)(tu_rand(&sa_rng) % SA_HELD);
        if (sa_held[i]) {
            if (!marked(sa_held[i], sa_held_size[i], (uintptr_t)sa_held[i] ^ 0x5a))
                atomic_fetch_add(&sa_corrupt, 1);
            free(sa_held[i]);
        }
        size_t s = any_size(&sa_rng, 256 << 10);
        unsigned char *p = (tu_rand(&sa_rng) & 1) ? malloc(s) : emma_alloc(s, 16);
        if (p && (tu_rand(&sa_rng) & 3) == 0) {
            size_t s2 = any_size(&sa_rng, 256 << 10);
            unsigned char *q = realloc(p, s2);
            if (q) {
                p = q;
                s = s2;
            }
        }
        sa_held[i] = p;
        sa_held_size[i] = s;
        if (!p) {
            atomic_fetch_add(&sa_null, 1);
            continue;
        }
        mark(p, s, (uintptr_t)p ^ 0x5a);
    }
    unsigned char *t = malloc(48);
    if (t) {
        memset(t, 0xee, 48);
        free(t);
    }
    atomic_fetch_add(&sa_signals, 1);
    if (!atomic_load(&sa_stop))
        sa_arm();
    errno = saved;
}

START_TEST(t_signal_handler_allocates)
{
    on_signal(SIGUSR2, sa_on_signal, SA_RESTART);
    /* a high-rate timer signalling this very thread */
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGUSR2;
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    ck_assert_int_eq(timer_create(CLOCK_MONOTONIC, &sev, &sa_timer), 0);
    struct itimerspec its = {{0, 0}, {0, 25000}};
    ck_assert_int_eq(timer_settime(sa_timer, 0, &its, NULL), 0);

    uint64_t rng = 777;
    enum { RING = 64 };
    unsigned char *ring[RING] = {0};
    size_t sz[RING] = {0};
    long corrupt = 0, ops = 0;
    double t0 = now_s();
    /* 6 s, or up to 20 s until 2000 signals on a loaded machine */
    while (atomic_load(&sa_signals) < SA_SIGNALS * scale() &&
           (now_s() - t0 < 6 * scale() || (atomic_load(&sa_signals) < 2000 && now_s() - t0 < 20))) {
        for (int k = 0; k < 64; k++, ops++) {
            unsigned i = (unsigned)(tu_rand(&rng) % RING);
            if (ring[i]) {
                corrupt += !marked(ring[i], sz[i], (uintptr_t)ring[i]);
                if (tu_rand(&rng) & 1) {
                    size_t s2 = any_size(&rng, 128 << 10);
                    unsigned char *q = realloc(ring[i], s2);
                    TU_ASSERT(q != NULL);
                    size_t keep = s2 < sz[i] ? s2 : sz[i];
                    if (sz[i] > 64 && keep > 32)
                        keep = 32; /* mark() filled only the ends */
                    corrupt += tu_check(q, keep, (uintptr_t)ring[i]) >= 0;
                    ring[i] = q;
                    sz[i] = s2;
                    mark(q, s2, (uintptr_t)q);
                    continue;
                }
                free(ring[i]);
            }
            sz[i] = any_size(&rng, 128 << 10);
            ring[i] = malloc(sz[i]);
            TU_ASSERT(ring[i] != NULL);
            mark(ring[i], sz[i], (uintptr_t)ring[i]);
        }
    }
    atomic_store(&sa_stop, 1);
    signal(SIGUSR2, SIG_IGN);
    timer_delete(sa_timer);
    for (int i = 0; i < RING; i++) {
        if (ring[i])
            corrupt += !marked(ring[i], sz[i], (uintptr_t)ring[i]);
        free(ring[i]);
    }
    for (int i = 0; i < SA_HELD; i++) {
        if (sa_held[i])
            corrupt += !marked(sa_held[i], sa_held_size[i], (uintptr_t)sa_held[i] ^ 0x5a);
        free(sa_held[i]);
    }
    fprintf(stderr, "# signal handler allocates: %ld signals, %ld operations in %.1f s\n",
            atomic_load(&sa_signals), ops, now_s() - t0);
    ck_assert_int_eq(corrupt, 0);
    ck_assert_int_eq(atomic_load(&sa_corrupt), 0);
    ck_assert_int_eq(atomic_load(&sa_null), 0);
    ck_assert_msg(atomic_load(&sa_signals) >= 2000, "only %ld signals",
                  atomic_load(&sa_signals));
}
END_TEST

/* ================================================================== */
/* Threads killed inside malloc/free/realloc                            */

/* A block shared between threads: its header says how to check it. */
struct shared_blk {
    size_t size; /* whole block, header included */
    uint64_t seed;
};

enum { TD_SLOTS = 512, TD_WORKERS = 3, TD_DEATHS = 4000 };
static _Atomic(struct shared_blk *) td_slot[TD_SLOTS];
static atomic_long td_corrupt, td_deaths, td_deaths_inside, td_null;
/* Whether each worker is inside emma right now: the killer aims at those
 * moments, and the dying thread counts where it died. */
static atomic_int td_inside[TD_WORKERS];
static __thread atomic_int *td_self;
#define td_in_emma (*td_self)

static struct shared_blk *td_new(uint64_t *rng)
{
    size_t s = sizeof(struct shared_blk) + any_size(rng, 40000);
    td_in_emma = 1;
    struct shared_blk *b = malloc(s);
    td_in_emma = 0;
    if (!b) {
        atomic_fetch_add(&td_null, 1);
        return NULL;
    }
    b->size = s;
    b->seed = tu_rand(rng);
    mark((unsigned char *)(b + 1), s - sizeof *b, b->seed);
    return b;
}

static void td_check_free(struct shared_blk *b)
{
    if (!marked((unsigned char *)(b + 1), b->size - sizeof *b, b->seed))
        atomic_fetch_add(&td_corrupt, 1);
    td_in_emma = 1;
    free(b);
    td_in_emma = 0;
}

/* Die right here, the way a cancelled or killed thread does: no unwinding,
 * no thread-exit hooks. */
static void td_die(int sig)
{
    (void)sig;
    atomic_fetch_add(&td_deaths, 1);
    if (td_self && td_in_emma)
        atomic_fetch_add(&td_deaths_inside, 1);
    syscall(SYS_exit, 0);
}

struct td_arg {
    unsigned slot;
    uint64_t seq;
};

static void *td_worker(void *arg)
{
    struct td_arg *a = arg;
    td_self = &td_inside[a->slot];
    uint64_t rng = a->seq * 0x9e3779b97f4a7c15ull + 1;
    for (;;) {
        unsigned i = (unsigned)(tu_rand(&rng) % TD_SLOTS);
        struct shared_blk *b = td_new(&rng);
        if (b) {
            struct shared_blk *old = atomic_exchange(&td_slot[i], b);
            if (old)
                td_check_free(old);
        }
        /* private churn: most of the time is spent inside emma */
        void *small[16];
        td_in_emma = 1;
        for (int k = 0; k < 16; k++)
            small[k] = malloc(16 + (size_t)(tu_rand(&rng) % 512));
        for (int k = 0; k < 16; k++)
            free(small[k]);
        td_in_emma = 0;
        size_t s = any_size(&rng, 20000);
        td_in_emma = 1;
        unsigned char *p = malloc(s);
        td_in_emma = 0;
        if (!p)
            continue;
        p[0] = 1;
        size_t s2 = any_size(&rng, 20000);
        td_in_emma = 1;
        unsigned char *q = realloc(p, s2);
        if (q)
            p = q;
        free(p);
        td_in_emma = 0;
    }
    return NULL;
}

/* Fresh threads after the massacre: allocate a lot (taking over whatever
 * heaps the dead left), check every shared block and free them all. */
static void *td_fresh(void *arg)
{
    atomic_int unused = 0;
    td_self = &unused;
    uint64_t rng = (uintptr_t)arg + 5;
    enum { N = 3000 };
    struct shared_blk **mine = malloc(N * sizeof *mine);
    if (!mine)
        return (void *)1;
    for (int i = 0; i < N; i++)
        mine[i] = td_new(&rng);
    for (unsigned i = (unsigned)(uintptr_t)arg; i < TD_SLOTS; i += TD_WORKERS) {
        struct shared_blk *b = atomic_exchange(&td_slot[i], NULL);
        if (b)
            td_check_free(b);
    }
    for (int i = 0; i < N; i++)
        if (mine[i])
            td_check_free(mine[i]);
    free(mine);
    return NULL;
}

START_TEST(t_threads_die_inside)
{
    on_signal(SIGUSR1, td_die, 0);

    pthread_t w[TD_WORKERS];
    static struct td_arg args[TD_WORKERS];
    uint64_t seq = 1, rng = 2024;
    for (unsigned i = 0; i < TD_WORKERS; i++) {
        args[i] = (struct td_arg){i, seq++};
        ck_assert_int_eq(pthread_create(&w[i], NULL, td_worker, &args[i]), 0);
    }
    double t0 = now_s();
    /* Without TLS too: a heap slot whose lock a dead thread holds is
     * given a new heap once every slot stays taken (heap.c), so deaths
     * never make malloc fail with ENOMEM (before that, Check's own
     * malloc(12) failed once all 256 slots were gone, after about
     * 1,000-1,900 deaths). */
    long max_deaths = (long)(TD_DEATHS * scale());
    /* 6 s, or up to 20 s until 300 deaths on a loaded machine: a hang
     * stops the deaths whatever the time */
    while (atomic_load(&td_deaths) < max_deaths &&
           (now_s() - t0 < 6 * scale() || (atomic_load(&td_deaths) < 300 && now_s() - t0 < 20)) &&
           atomic_load(&td_corrupt) == 0) {
        unsigned i = (unsigned)(tu_rand(&rng) % TD_WORKERS);
        /* a random moment, mostly one when the worker is inside emma */
        spin_ns((long)(tu_rand(&rng) % 100000));
        if (tu_rand(&rng) & 7)
            for (int k = 0; k < 20000 && !atomic_load(&td_inside[i]); k++)
                __builtin_ia32_pause();
        pthread_kill(w[i], SIGUSR1);
        ck_assert_int_eq(pthread_join(w[i], NULL), 0);
        atomic_store(&td_inside[i], 0);
        args[i] = (struct td_arg){i, seq++};
        ck_assert_int_eq(pthread_create(&w[i], NULL, td_worker, &args[i]), 0);
    }
    for (int i = 0; i < TD_WORKERS; i++) {
        pthread_kill(w[i], SIGUSR1);
        pthread_join(w[i], NULL);
    }
    signal(SIGUSR1, SIG_DFL);
    fprintf(stderr, "# threads die inside: %ld deaths, %ld inside emma, in %.1f s\n",
            atomic_load(&td_deaths), atomic_load(&td_deaths_inside), now_s() - t0);

    for (int round = 0; round < 2; round++) {
        pthread_t f[TD_WORKERS];
        for (int i = 0; i < TD_WORKERS; i++)
            ck_assert_int_eq(pthread_create(&f[i], NULL, td_fresh, (void *)(uintptr_t)i), 0);
        for (int i = 0; i < TD_WORKERS; i++) {
            void *r;
            pthread_join(f[i], &r);
            ck_assert_ptr_null(r);
        }
    }
    ck_assert_int_eq(atomic_load(&td_corrupt), 0);
    ck_assert_int_eq(atomic_load(&td_null), 0);
    ck_assert_msg(atomic_load(&td_deaths) >= 300, "only %ld deaths", atomic_load(&td_deaths));
}
END_TEST

#if EMMA_CONFIG_TLS
/* ================================================================== */
/* What threads dying inside emma cost, once everything is freed        */

/* Workers keep QB_TAB blocks each (16 B..2 KiB, an eighth 4..44 KiB) in a
 * table the main thread can see, replacing and reallocating them at
 * random, and are killed there (SYS_exit from a handler), mostly inside
 * emma.  A table slot is cleared before its block goes to emma and set
 * after it comes back, so a death leaves at most the block in flight
 * unaccounted for.  A death inside a slow path quarantines the heap
 * (heaps_abandoned): its pages are salvaged (salvage.c) once their blocks
 * come back.  After the deaths every block in the tables is freed and the
 * process trimmed: what stays resident, and bytes_quarantined, must be
 * what the deaths' blocks in flight pin (one page each at most), not the
 * dead heaps' memory.  With salvage disabled (salvage_pass returning at
 * once), 300 deaths left 105 MiB more resident here, all of it free;
 * with it, 8-10 MiB. */
enum { QB_WORKERS = 3, QB_TAB = 256 };
static _Atomic(void *) qb_tab[QB_WORKERS][QB_TAB];
static atomic_int qb_inside[QB_WORKERS];
static atomic_long qb_deaths;

static void qb_die(int sig)
{
    (void)sig;
    atomic_fetch_add(&qb_deaths, 1);
    syscall(SYS_exit, 0);
}

static size_t qb_size(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    return (r & 7) == 0 ? 4096 + r % 40000 : 16 + (r >> 8) % 2000;
}

static void *qb_worker(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg & 0xff;
    uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    for (;;) {
        unsigned k = (unsigned)(tu_rand(&rng) % QB_TAB);
        void *old = atomic_exchange(&qb_tab[me][k], NULL);
        atomic_store(&qb_inside[me], 1);
        void *p;
        if (old && (tu_rand(&rng) & 3) == 0) {
            p = realloc(old, qb_size(&rng));
        } else {
            free(old);
            p = malloc(qb_size(&rng));
        }
        atomic_store(&qb_inside[me], 0);
        if (p) {
            memset(p, 0x5a, 16);
            atomic_store(&qb_tab[me][k], p);
        }
    }
    return NULL;
}

static void qb_free_table(unsigned i)
{
    for (unsigned k = 0; k < QB_TAB; k++)
        free(atomic_exchange(&qb_tab[i][k], NULL));
}

START_TEST(t_quarantine_bounded)
{
    on_signal(SIGUSR1, qb_die, 0);
    malloc_trim(0);
    size_t rss0 = tu_rss();
    pthread_t w[QB_WORKERS];
    uint64_t seq = 1, rng = 77;
    for (unsigned i = 0; i < QB_WORKERS; i++)
        ck_assert_int_eq(pthread_create(&w[i], NULL, qb_worker, (void *)(uintptr_t)(seq++ << 8 | i)), 0);
    long target = (long)(300 * scale());
    double t0 = now_s();
    while (atomic_load(&qb_deaths) < target && now_s() - t0 < 20 * scale()) {
        unsigned i = (unsigned)(tu_rand(&rng) % QB_WORKERS);
        spin_ns((long)(tu_rand(&rng) % 1000000));
        for (int k = 0; k < 20000 && !atomic_load(&qb_inside[i]); k++)
            __builtin_ia32_pause();
        pthread_kill(w[i], SIGUSR1);
        ck_assert_int_eq(pthread_join(w[i], NULL), 0);
        atomic_store(&qb_inside[i], 0);
        if (tu_rand(&rng) & 1)
            qb_free_table(i); /* now, by main; else by its successor */
        ck_assert_int_eq(pthread_create(&w[i], NULL, qb_worker, (void *)(uintptr_t)(seq++ << 8 | i)), 0);
    }
    for (unsigned i = 0; i < QB_WORKERS; i++) {
        pthread_kill(w[i], SIGUSR1);
        pthread_join(w[i], NULL);
    }
    signal(SIGUSR1, SIG_DFL);
    for (unsigned i = 0; i < QB_WORKERS; i++)
        qb_free_table(i);
    malloc_trim(0);
    size_t rss1 = tu_rss();
    struct emma_stats st;
    ck_assert_int_eq(emma_stats(&st, sizeof st), 0);
    long deaths = atomic_load(&qb_deaths);
    size_t grown = rss1 > rss0 ? rss1 - rss0 : 0;
    fprintf(stderr,
            "# quarantine: %ld deaths, %zu heaps abandoned, %zu salvaged; after freeing all: "
            "%zu KiB more resident, %zu KiB quarantined, %zu KiB in use\n",
            deaths, st.heaps_abandoned, st.heaps_salvaged, grown >> 10, st.bytes_quarantined >> 10,
            st.bytes_in_use >> 10);
    ck_assert_msg(deaths >= 100, "only %ld deaths", deaths);
    ck_assert_msg(st.heaps_abandoned > 0, "no death inside a slow path in %ld", deaths);
    /* a death's block in flight pins one page: 64 KiB of small blocks
     * (of which one or two OS pages stay resident), 512 KiB of medium */
    ck_assert_msg(grown <= ((size_t)16 << 20) + (size_t)deaths * (32 << 10),
                  "%zu KiB still resident after %ld deaths", grown >> 10, deaths);
    ck_assert_msg(st.bytes_quarantined <= (size_t)deaths * (512 << 10),
                  "%zu KiB quarantined after %ld deaths", st.bytes_quarantined >> 10, deaths);
}
END_TEST
#endif

/* ================================================================== */
/* Threads cancelled while they hold one of emma's process-wide locks    */

/* Victims cancelled asynchronously (pthread_cancel with
 * PTHREAD_CANCEL_ASYNCHRONOUS: they die at any instruction, as with
 * pthread_kill-style deaths, inside emma most of the time).  Victim r
 * with r % 4 == 0 replaces blocks of 2..8 MiB (the huge-block cache's
 * lock); r % 4 == 2 blocks of 64 KiB..1 MiB (the shared heap's lock, taken
 * at each of their mallocs and frees); odd ones churn small blocks and
 * trim the whole process (the segment pool's lock, other heaps' free-page
 * and remote-free locks).  After each death the main thread does what
 * makes emma take those locks and wait for them: a huge block, small
 * blocks, shared-heap blocks, malloc_trim(0).  A lock left held by the
 * dead thread must be found dead and taken over, not waited on forever. */
static void *dl_victim(void *arg)
{
    int old;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 7;
    void *p[8] = {0};
    for (;;) {
        unsigned k = (unsigned)(tu_rand(&rng) % 8);
        free(p[k]);
        if ((uintptr_t)arg & 1) {
            p[k] = malloc(16 + (size_t)(tu_rand(&rng) % 40000));
            if ((tu_rand(&rng) & 63) == 0)
                malloc_trim(0);
        } else if ((uintptr_t)arg & 2) {
            p[k] = malloc((64u << 10) + 1 + (size_t)(tu_rand(&rng) % (960u << 10)));
        } else {
            p[k] = malloc((2u << 20) + (size_t)(tu_rand(&rng) % (6u << 20)));
        }
    }
    return NULL;
}

START_TEST(t_thread_dies_holding_lock)
{
    uint64_t rng = 77;
    /* Without TLS every death inside emma takes a heap slot out of
     * service for good (README, known limitations): past 64 such slots a
     * new thread first waits a while before opening one more, which on a
     * loaded machine made 300 deaths outlast the timeout. */
    unsigned rounds = (unsigned)((EMMA_CONFIG_TLS ? 300 : 50) * scale());
    double t0 = now_s();
    for (unsigned r = 0; r < rounds; r++) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, dl_victim, (void *)(uintptr_t)r), 0);
        usleep(300 + (useconds_t)(tu_rand(&rng) % 2000));
        ck_assert_int_eq(pthread_cancel(t), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        unsigned char *big = malloc(3u << 20);
        ck_assert_ptr_nonnull(big);
        memset(big, 1, 3u << 20);
        void *small[64];
        for (int k = 0; k < 64; k++) {
            small[k] = malloc(16 + (size_t)(tu_rand(&rng) % 4096));
            ck_assert_ptr_nonnull(small[k]);
            memset(small[k], 2, 16);
        }
        for (int k = 0; k < 64; k++)
            free(small[k]);
        for (int k = 0; k < 4; k++) { /* the shared heap's */
            void *b = malloc((size_t)(100 + 200 * k) << 10);
            ck_assert_ptr_nonnull(b);
            memset(b, 3, 64);
            free(b);
        }
        free(big);
        malloc_trim(0);
    }
    struct emma_stats st;
    ck_assert_int_eq(emma_stats(&st, sizeof st), 0);
    fprintf(stderr, "# thread dies holding lock: %u cancels in %.1f s, %zu locks taken over\n",
            rounds, now_s() - t0, st.locks_recovered);
}
END_TEST

/* ================================================================== */
/* A signal handler that trims while its thread is inside emma          */

/* emma_trim and malloc_trim are async-signal-safe: a handler that
 * interrupted a huge allocation or a trim (which hold the segment pool's
 * or the huge cache's lock) must not wait for its own thread. */
static pthread_t ts_target;
static atomic_int ts_stop;
static atomic_long ts_signals;

static void ts_handler(int sig)
{
    (void)sig;
    if (atomic_fetch_add(&ts_signals, 1) & 1)
        emma_trim();
    else
        malloc_trim(0);
}

static void *ts_sender(void *arg)
{
    (void)arg;
    while (!atomic_load(&ts_stop)) {
        pthread_kill(ts_target, SIGUSR1);
        usleep(20);
    }
    return NULL;
}

START_TEST(t_trim_in_signal_handler)
{
    on_signal(SIGUSR1, ts_handler, SA_RESTART);
    ts_target = pthread_self();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, ts_sender, NULL), 0);
    uint64_t rng = 9;
    void *keep[4] = {0};
    long loops = 0;
    double end = now_s() + 3 * scale();
    while (now_s() < end) {
        unsigned j = (unsigned)(tu_rand(&rng) % 4);
        free(keep[j]);
        keep[j] = malloc((tu_rand(&rng) & 1) ? (2u << 20) : (600u << 10));
        ck_assert_ptr_nonnull(keep[j]);
        memset(keep[j], 1, 4096);
        if ((++loops & 255) == 0)
            emma_trim();
    }
    atomic_store(&ts_stop, 1);
    pthread_join(t, NULL);
    signal(SIGUSR1, SIG_DFL);
    for (int j = 0; j < 4; j++)
        free(keep[j]);
    fprintf(stderr, "# trim in signal handler: %ld loops, %ld signals\n", loops,
            atomic_load(&ts_signals));
    ck_assert_int_gt(atomic_load(&ts_signals), 100);
}
END_TEST

/* ================================================================== */
/* The first allocation of a fresh process under a limit (robust_limit)  */

static void run_limit_helper(const char *mode)
{
    const char *dir = getenv("EMMA_TESTS_BUILDDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/robust_limit", dir ? dir : ".");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl(path, "robust_limit", mode, (char *)NULL);
        _exit(126);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 126), "cannot run %s", path);
    ck_assert_msg(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM),
                  "robust_limit %s hung (killed by its alarm: 25 s times CK_TIMEOUT_MULTIPLIER)", mode);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "robust_limit %s: %s %d", mode,
                  WIFEXITED(st) ? "exit code" : "killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

START_TEST(t_first_alloc_rlimit) { run_limit_helper("rlimit"); }
END_TEST

START_TEST(t_first_alloc_mapcount) { run_limit_helper("mapcount"); }
END_TEST

START_TEST(t_first_alloc_room) { run_limit_helper("room"); }
END_TEST

/* ================================================================== */
/* emma_owns while another thread unmaps the block asked about           */

static _Atomic(unsigned char *) ou_block;
static atomic_int ou_stop;

static void *ou_mapper(void *arg)
{
    (void)arg;
    uint64_t rng = 8;
    unsigned char *prev = NULL;
    while (!atomic_load(&ou_stop)) {
        /* huge, never cached: over the 32 MiB the huge cache keeps */
        size_t s = (33 << 20) + (size_t)(tu_rand(&rng) % (8 << 20));
        unsigned char *p = (tu_rand(&rng) & 1) ? malloc(s) : emma_alloc(s, (size_t)1 << 22);
        if (!p)
            continue;
        atomic_store(&ou_block, p);
        free(prev); /* prev's mapping goes away while others may ask about it */
        prev = p;
    }
    atomic_store(&ou_block, NULL);
    free(prev);
    return NULL;
}

static void *ou_asker(void *arg)
{
    uint64_t rng = 17 + (uintptr_t)arg;
    long *yes = arg ? (long *)arg : NULL;
    long n = 0;
    while (!atomic_load(&ou_stop)) {
        unsigned char *p = atomic_load(&ou_block);
        if (!p)
            continue;
        for (int k = 0; k < 16; k++) {
            size_t off = (size_t)(tu_rand(&rng) % (48 << 20)) - (4 << 20);
            n += emma_owns(p + off) != 0;
            n += emma_owns(p) != 0;
        }
    }
    if (yes)
        *yes = n;
    return NULL;
}

START_TEST(t_owns_races_unmap)
{
    pthread_t m, a[2];
    long yes = 0;
    ck_assert_int_eq(pthread_create(&m, NULL, ou_mapper, NULL), 0);
    ck_assert_int_eq(pthread_create(&a[0], NULL, ou_asker, &yes), 0);
    ck_assert_int_eq(pthread_create(&a[1], NULL, ou_asker, NULL), 0);
    struct timespec ts = {2, 0};
    nanosleep(&ts, NULL);
    atomic_store(&ou_stop, 1);
    pthread_join(m, NULL);
    pthread_join(a[0], NULL);
    pthread_join(a[1], NULL);
    ck_assert(yes > 0);
}
END_TEST

#if EMMA_CONFIG_CHECKS
/* The boundary checks ask the same question while the block goes away:
 * a check may report the pointer (caught here), never fault. */
static sigjmp_buf ck_jump;
static volatile sig_atomic_t ck_aborts;

static void ck_on_abort(int sig)
{
    (void)sig;
    ck_aborts++;
    siglongjmp(ck_jump, 1);
}

START_TEST(t_checks_race_unmap)
{
    pthread_t m;
    on_signal(SIGABRT, ck_on_abort, 0);
    int devnull = open("/dev/null", O_WRONLY);
    ck_assert_int_ge(devnull, 0);
    int saved_err = dup(2);
    dup2(devnull, 2); /* one report line per caught check */
    ck_assert_int_eq(pthread_create(&m, NULL, ou_mapper, NULL), 0);
    double t0 = now_s();
    volatile long n = 0;
    sigsetjmp(ck_jump, 1);
    while (now_s() - t0 < 2) {
        unsigned char *p = atomic_load(&ou_block);
        if (p)
            n += (long)malloc_usable_size(p) > 0;
    }
    atomic_store(&ou_stop, 1);
    pthread_join(m, NULL);
    dup2(saved_err, 2);
    signal(SIGABRT, SIG_DFL);
    fprintf(stderr, "# checks racing unmap: %ld answers, %d reports\n", (long)n, (int)ck_aborts);
    ck_assert(n > 0);
}
END_TEST
#endif

/* ================================================================== */
/* Double free in the default build, and alignments above 1 MiB          */

/* Run fn in a child with stderr on a pipe; it must die of SIGABRT after
 * writing exactly one line naming func and "double free". */
static void expect_misuse_abort(void (*fn)(void), const char *func, const char *problem,
                                const char *what)
{
    char got[1024];
    int st = tu_child_stderr(fn, got, sizeof got);
    size_t len = strlen(got);
    char want[128];
    snprintf(want, sizeof want, "emma: %s: %s (0x", func, problem);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
                  "%s: not detected (child %s %d, stderr \"%s\")", what,
                  WIFEXITED(st) ? "exited with" : "killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), got);
    ck_assert_msg(strncmp(got, want, strlen(want)) == 0 && strchr(got, '\n') == got + len - 1,
                  "%s: stderr \"%s\", wanted one line \"%s...)\"", what, got, want);
}

static void expect_double_free_abort(void (*fn)(void), const char *func, const char *what)
{
    expect_misuse_abort(fn, func, "double free", what);
}

static void df_free(void)
{
    void *p = malloc(64);
    free(p);
    free(p);
    void *a = malloc(64), *b = malloc(64);
    _exit(a == b ? 3 : 0); /* 3: the same block handed out twice */
}

static void df_free_sized(void)
{
    void *p = malloc(3000);
    free_sized(p, 3000);
    free_sized(p, 3000);
    void *a = malloc(3000), *b = malloc(3000);
    _exit(a == b ? 3 : 0);
}

static void df_dealloc(void)
{
    void *p = emma_alloc(40000, 64);
    emma_dealloc(p, 40000, 64);
    emma_dealloc(p, 40000, 64);
    void *a = emma_alloc(40000, 64), *b = emma_alloc(40000, 64);
    _exit(a == b ? 3 : 0);
}

static void df_free_large(void)
{
    void *p = malloc(700000);
    free(p);
    emma_free(p);
    void *a = malloc(700000), *b = malloc(700000);
    _exit(a == b ? 3 : 0);
}

/* Freed twice by two threads that do not own it, one after the other. */
static void *dfr_free(void *p)
{
    free(p);
    return NULL;
}

static void df_remote(void)
{
    void *p = malloc(48);
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, dfr_free, p) != 0)
            _exit(3);
        pthread_join(t, NULL);
    }
    void *a = malloc(48), *b = malloc(48); /* collects the remote frees */
    _exit(a == b ? 4 : 0);
}

/* The same with blocks above 8 KiB, whose frees by other threads go to
 * the depot (depot.c) while it has room, else to their page. */
static size_t dfrb_size;

static void df_remote_big(void)
{
    void *p = malloc(dfrb_size);
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, dfr_free, p) != 0)
            _exit(3);
        pthread_join(t, NULL);
    }
    void *a = malloc(dfrb_size), *b = malloc(dfrb_size); /* the depot's, else the page's */
    _exit(a == b ? 4 : 0);
}

static void df_remote_16k(void)
{
    dfrb_size = 16384;
    df_remote_big();
}

static void df_remote_600k(void)
{
    dfrb_size = 600000;
    df_remote_big();
}

/* Freed by its owner, whose page then went back to its segment (the
 * page's blocks all free, and another page of the class has room), then
 * freed again by another thread: the remote path reads the page's
 * remote_size (0 once the page is not in use), not its first line.  The
 * thread exists before the blocks do and waits on a pipe: pthread_create
 * allocates, and could take the free page for another class. */
static int dfrr_pipe[2];

static void *dfrr_free(void *arg)
{
    void *p;
    (void)arg;
    if (read(dfrr_pipe[0], &p, sizeof p) != (ssize_t)sizeof p)
        _exit(3);
    free(p);
    return NULL;
}

static void df_remote_released(void)
{
    enum { N = 30 }; /* 5000 B: about 12 blocks per 64 KiB page, the last page partial */
    void *b[N];
    pthread_t t;
    if (pipe(dfrr_pipe) != 0 || pthread_create(&t, NULL, dfrr_free, NULL) != 0)
        _exit(3);
    for (int i = 0; i < N; i++)
        if (!(b[i] = malloc(5000)))
            _exit(3);
    for (int i = 0; i < N; i++)
        free(b[i]);
    if (write(dfrr_pipe[1], &b[0], sizeof b[0]) != (ssize_t)sizeof b[0])
        _exit(3);
    pthread_join(t, NULL);
    for (int i = 0; i < N; i++) /* would hand out what the free pushed */
        (void)!malloc(5000);
    _exit(0);
}

#if EMMA_CONFIG_TLS || EMMA_CONFIG_CHECKS
/* Freed twice by another thread with another block freed in between
 * (A, B, A): the second free finds A on its page's list of other threads'
 * frees (its tag, then the list), before that list becomes a cycle, and
 * aborts there, the owner idle.  (Without TLS a thread that can lock the
 * owner's heap frees as its owner would, where only boundary checks see
 * this: emma(7).) */
static void *dfb_free(void *arg)
{
    void **v = arg;
    free(v[0]);
    free(v[1]);
    free(v[0]);
    return NULL;
}

static void df_remote_between(void)
{
    void *v[2] = {malloc(48), malloc(48)};
    pthread_t t;
    if (!v[0] || !v[1] || pthread_create(&t, NULL, dfb_free, v) != 0)
        _exit(3);
    pthread_join(t, NULL);
    _exit(5); /* not reported at the free */
}

/* The same above 8 KiB, the second free kept by the depot: A's first
 * free finds the depot's class full (16 blocks) and goes to its page's
 * list; emma_trim sends the depot's blocks home, onto that list in front
 * of A; the depot then takes A again unless it looks for A on the list.
 * One more block stays live, so that the page is never released (and
 * emma_trim never unmaps it) whoever frees the others: with boundary
 * checks and without TLS the thread may free as the owner. */
enum { DFD_N = 18 };

static void *dfd_free(void *arg)
{
    void **v = arg;
    for (int i = 1; i < DFD_N - 1; i++)
        free(v[i]);
    free(v[0]);
    emma_trim();
    free(v[0]);
    return NULL;
}

static void df_remote_depot(void)
{
    void *v[DFD_N];
    for (int i = 0; i < DFD_N; i++)
        if (!(v[i] = malloc(16384)))
            _exit(3);
    pthread_t t;
    if (pthread_create(&t, NULL, dfd_free, v) != 0)
        _exit(3);
    pthread_join(t, NULL);
    _exit(5);
}

START_TEST(t_double_free_remote_between)
{
    expect_double_free_abort(df_remote_between, "free",
                             "freed by another thread, another block in between (48 B)");
    expect_double_free_abort(df_remote_depot, "free",
                             "freed by another thread to its page, then to the depot (16 KiB)");
}
END_TEST
#endif

START_TEST(t_double_free_detected)
{
    expect_double_free_abort(df_remote, "free", "freed by two other threads in turn (48 B)");
    expect_double_free_abort(df_remote_16k, "free",
                             "freed by two other threads in turn (16 KiB, the depot's)");
    expect_double_free_abort(df_remote_600k, "free",
                             "freed by two other threads in turn (600000 B, the depot's)");
    expect_double_free_abort(df_remote_released, "free",
                             "freed by its owner, page released, then by another thread");
    expect_double_free_abort(df_free, "free", "free twice (64 B)");
    expect_double_free_abort(df_free_sized, "free_sized", "free_sized twice (3000 B)");
    expect_double_free_abort(df_dealloc, "emma_dealloc", "emma_dealloc twice (40000 B)");
    expect_double_free_abort(df_free_large, "emma_free", "free then emma_free (700000 B)");
}
END_TEST

/* A pointer into a huge block (> 1 MiB, its own mapping) that is not the
 * block's start: every build aborts with one line, as glibc does ("free():
 * invalid pointer"); before, the default build freed the whole block while
 * the program still held it, and the next malloc of its size returned it
 * again.  Exit 3: the block was handed out twice. */
#define HUGE_MISUSE_SIZE ((size_t)5 << 20)

static void hm_free_interior(void)
{
    char *p = malloc(HUGE_MISUSE_SIZE);
    memset(p, 1, 4096 * 3);
    free(p + 4096);
    char *q = malloc(HUGE_MISUSE_SIZE);
    _exit(q == p ? 3 : 0);
}

static void hm_free_misaligned(void)
{
    char *p = malloc(HUGE_MISUSE_SIZE);
    free(p + 8);
    char *q = malloc(HUGE_MISUSE_SIZE);
    _exit(q == p ? 3 : 0);
}

static void hm_realloc_interior(void)
{
    char *p = malloc(HUGE_MISUSE_SIZE);
    char *q = realloc(p + 65536, (size_t)8 << 20);
    _exit(q ? 3 : 0);
}

static void hm_emma_free_interior(void)
{
    char *p = emma_alloc(HUGE_MISUSE_SIZE, 64);
    emma_free(p + 128);
    _exit(0);
}

static void hm_realloc_freed(void)
{
    char *p = malloc(HUGE_MISUSE_SIZE);
    free(p);
    char *q = realloc(p, (size_t)6 << 20); /* p sits in the huge cache */
    _exit(q ? 3 : 0);
}

/* 4 MiB and more into a huge block: the pointer's 4 MiB chunk holds the
 * program's bytes, not a header (they are written here to look like
 * nothing: all ones); it used to be followed (SIGSEGV) */
static void hm_free_far_interior(void)
{
    char *p = malloc((size_t)12 << 20);
    memset(p, 0xff, (size_t)12 << 20);
    free(p + ((size_t)8 << 20));
    _exit(0);
}

static void hm_realloc_far_interior(void)
{
    char *p = malloc((size_t)12 << 20);
    memset(p, 0x01, (size_t)12 << 20);
    char *q = realloc(p + ((size_t)4 << 20), 100);
    _exit(q ? 3 : 0);
}

static void hm_usable_far_interior(void)
{
    char *p = malloc((size_t)12 << 20);
    memset(p, 0, (size_t)12 << 20);
    _exit(malloc_usable_size(p + ((size_t)5 << 20)) ? 3 : 0);
}

START_TEST(t_huge_interior_detected)
{
    static const char interior[] = "interior or misaligned pointer";
    expect_misuse_abort(hm_free_interior, "free", interior, "free(p + 4096), 5 MiB block");
    expect_misuse_abort(hm_free_misaligned, "free", interior, "free(p + 8), 5 MiB block");
    expect_misuse_abort(hm_realloc_interior, "realloc", interior, "realloc(p + 64 KiB), 5 MiB block");
    expect_misuse_abort(hm_emma_free_interior, "emma_free", interior, "emma_free(p + 128), 5 MiB block");
    expect_misuse_abort(hm_realloc_freed, "realloc", "double free", "realloc of a freed 5 MiB block");
    expect_misuse_abort(hm_free_far_interior, "free", interior, "free(p + 8 MiB), 12 MiB block");
    expect_misuse_abort(hm_realloc_far_interior, "realloc", interior,
                        "realloc(p + 4 MiB), 12 MiB block");
    expect_misuse_abort(hm_usable_far_interior, "malloc_usable_size", interior,
                        "malloc_usable_size(p + 5 MiB), 12 MiB block");
}
END_TEST

/* emma_realloc to any size keeps the alignment, also above 1 MiB and for
 * size 0: the result is emma's, measurable and freeable. */
START_TEST(t_realloc_big_align)
{
    static const size_t aligns[] = {(size_t)2 << 20, (size_t)4 << 20, (size_t)8 << 20};
    static const size_t news[] = {0, 1, 4096, 5000, (size_t)3 << 20};
    for (unsigned a = 0; a < 3; a++) {
        for (unsigned n = 0; n < 5; n++) {
            size_t al = aligns[a];
            unsigned char *p = emma_alloc(100, al);
            ck_assert_ptr_nonnull(p);
            memset(p, 7, 100);
            unsigned char *q = emma_realloc(p, 100, al, news[n]);
            ck_assert_ptr_nonnull(q);
            ck_assert_msg(((uintptr_t)q & (al - 1)) == 0, "align %zu new %zu: misaligned", al,
                          news[n]);
            ck_assert_msg(emma_owns(q), "align %zu new size %zu: emma_owns denies the result",
                          al, news[n]);
            ck_assert(emma_usable_size(q) >= news[n]);
            for (size_t i = 0; i < news[n] && i < 100; i++)
                TU_ASSERT(q[i] == 7);
            /* and back up from there */
            unsigned char *r = emma_realloc(q, news[n], al, 200);
            ck_assert_ptr_nonnull(r);
            ck_assert(emma_owns(r) && ((uintptr_t)r & (al - 1)) == 0);
            emma_dealloc(r, 200, al);
        }
    }
}
END_TEST

#if EMMA_CONFIG_CHECKS
/* ================================================================== */
/* Boundary checks: no false positives, no misses                       */

/* A live block's contents are the program's: whatever they look like,
 * freeing it once is fine. */
START_TEST(t_checks_live_block_any_content)
{
    for (size_t s = 16; s <= 70000; s = s * 2 + 16) {
        uintptr_t *p = malloc(s);
        ck_assert_ptr_nonnull(p);
        /* what the checked build wrote into freed blocks (FREED_TAG ^ p) */
        p[1] = (uintptr_t)0x9e3779b97f4a7c15ull ^ (uintptr_t)p;
        free(p);
        p = emma_alloc(s, 64);
        ck_assert_ptr_nonnull(p);
        for (size_t i = 0; i < s / sizeof *p; i++)
            p[i] = (uintptr_t)0x9e3779b97f4a7c15ull ^ (uintptr_t)(p + i);
        emma_dealloc(p, s, 64);
    }
}
END_TEST

/* A double free after emma gave the freed block's OS page back to the
 * kernel (sparse pages, lib/compact.c) is still a double free. */
enum { PG_COUNT = 3072 };
static void df_after_purge(void)
{
    /* 1 KiB blocks fill about 48 pages of 64 KiB; keep one block per
     * 64 KiB: every page is sparse. */
    static unsigned char *b[PG_COUNT];
    static char kept[PG_COUNT];
    uintptr_t last = 0;
    for (int i = 0; i < PG_COUNT; i++)
        b[i] = malloc(1024);
    for (int i = 0; i < PG_COUNT; i++) {
        if (((uintptr_t)b[i] >> 16) != last) {
            last = (uintptr_t)b[i] >> 16;
            kept[i] = 1;
        } else {
            free(b[i]);
        }
    }
    /* Allocation runs through one page and passes over the others, which
     * parks them (lib/alloc.c); then other sizes take fresh pages, a
     * compaction pass (lib/compact.c) at a time, until the parked pages'
     * free OS pages have been given back. */
    static void *again[200];
    for (int i = 0; i < 200; i++)
        again[i] = malloc(1024);
    for (int pass = 0; pass < 6; pass++) {
        struct timespec ts = {0, 80 * 1000 * 1000};
        nanosleep(&ts, NULL);
        for (int i = 0; i < 300; i++)
            (void)!malloc(2048 + 1024 * (size_t)(pass % 2));
    }
    /* the victim: a block freed above whose OS page is gone */
    unsigned char *victim = NULL;
    for (int i = 0; i < PG_COUNT && !victim; i++) {
        unsigned char vec = 1;
        int reused = 0;
        for (int k = 0; k < 200; k++)
            reused |= (unsigned char *)again[k] == b[i];
        if (kept[i] || reused)
            continue;
        void *os_page = (void *)((uintptr_t)b[i] & ~(uintptr_t)4095);
        if (mincore(os_page, 4096, &vec) == 0 && !(vec & 1))
            victim = b[i];
    }
    if (!victim)
        _exit(4); /* the setup did not get a page purged */
    free(victim);
    _exit(0);
}

START_TEST(t_checks_double_free_after_purge)
{
    expect_double_free_abort(df_after_purge, "free", "free of a block whose page was purged");
}
END_TEST
#endif

static void add(Suite *s, const char *name, const TTest *t, int timeout)
{
    tu_one_case(s, name, t, timeout * scale());
}

#if EMMA_CONFIG_HARDENING
/* A freed block whose link the program overwrites with an address of its
 * choosing: with encoded links the allocation after the block's own does
 * not return that address (the forged link decodes to garbage; following
 * it may fault, which is fine: it is not steered). */
static char hf_target[256] __attribute__((aligned(64)));

START_TEST(t_hardening_forged_link)
{
    int steered = 0, faulted = 0;
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            struct rlimit no_core = {0, 0};
            setrlimit(RLIMIT_CORE, &no_core); /* the fault is expected */
            char *p = malloc(64);
            if (!p)
                _exit(3);
            free(p);
            *(void **)p = hf_target; /* use after free: forge the link */
            /* compared as opaque integers: the compiler may assume that
             * malloc's result is neither a freed block nor a global */
            uintptr_t a = (uintptr_t)malloc(64), b, was = (uintptr_t)p;
            __asm__ volatile("" : "+r"(a), "+r"(was));
            if (a != was)
                _exit(4); /* the forged block was not the head: no test */
            b = (uintptr_t)malloc(64);
            __asm__ volatile("" : "+r"(b));
            _exit(b == (uintptr_t)hf_target ? 1 : 0);
        }
        ck_assert_int_ge(pid, 0);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        if (WIFEXITED(st)) {
            ck_assert_msg(WEXITSTATUS(st) != 3 && WEXITSTATUS(st) != 4,
                          "child could not set up the forged link (%d)", WEXITSTATUS(st));
            steered += WEXITSTATUS(st) == 1;
        } else {
            faulted++;
        }
    }
    fprintf(stderr, "# forged link: %d of 20 children faulted on the garbage link\n", faulted);
    ck_assert_msg(steered == 0, "%d of 20 children got the forged address", steered);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("robust");
    add(s, "fork_in_signal_handler", t_fork_in_signal_handler, 30);
    add(s, "signal_handler_allocates", t_signal_handler_allocates, 30);
    add(s, "siglongjmp_out_of_emma", t_siglongjmp_out_of_emma, 60);
    add(s, "siglongjmp_signal_stack", t_siglongjmp_signal_stack, 60);
    add(s, "fork_during_stats_walk", t_fork_during_stats_walk, 30);
    add(s, "threads_die_inside", t_threads_die_inside, 30);
    add(s, "thread_dies_holding_lock", t_thread_dies_holding_lock, 30);
#if EMMA_CONFIG_TLS
    add(s, "quarantine_bounded", t_quarantine_bounded, 60);
#else
    /* without TLS a heap is shared under a lock, and a thread that dies
     * holding it takes the heap out of service (emma(7)): nothing is
     * quarantined, so nothing to salvage */
    fprintf(stderr, "# SKIP quarantine_bounded: no quarantined heaps without TLS\n");
#endif
    add(s, "trim_in_signal_handler", t_trim_in_signal_handler, 30);
    add(s, "first_alloc_rlimit", t_first_alloc_rlimit, 30);
    add(s, "first_alloc_mapcount", t_first_alloc_mapcount, 30);
    add(s, "first_alloc_room", t_first_alloc_room, 30);
    add(s, "owns_races_unmap", t_owns_races_unmap, 30);
    add(s, "double_free_detected", t_double_free_detected, 30);
    add(s, "huge_interior_detected", t_huge_interior_detected, 30);
#if EMMA_CONFIG_TLS || EMMA_CONFIG_CHECKS
    add(s, "double_free_remote_between", t_double_free_remote_between, 30);
#else
    fprintf(stderr, "# SKIP double_free_remote_between: without TLS a free may lock the owner's heap\n");
#endif
#if EMMA_CONFIG_HARDENING
    add(s, "hardening_forged_link", t_hardening_forged_link, 30);
#endif
    add(s, "realloc_big_align", t_realloc_big_align, 30);
#if EMMA_CONFIG_CHECKS
    add(s, "checks_race_unmap", t_checks_race_unmap, 30);
    add(s, "checks_live_block_any_content", t_checks_live_block_any_content, 30);
    add(s, "checks_double_free_after_purge", t_checks_double_free_after_purge, 30);
#endif
    return tu_run(s);
}

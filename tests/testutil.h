/* Helpers shared by emma's Check-based tests.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Everything here is static so that each test program is self-contained.
 * Tests are compiled with -fno-builtin so that the compiler neither drops
 * nor folds the allocator calls under test.
 */
#ifndef EMMA_TESTUTIL_H
#define EMMA_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Assertions for hot loops.  In fork mode every passing ck_assert sends its
 * location to the runner through a pipe (one write(2) each); these only
 * call into Check when the condition fails. */
#define TU_ASSERT(cond)                                                       \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg("Assertion '%s' failed", #cond);                     \
    } while (0)
#define TU_ASSERT_MSG(cond, ...)                                              \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

/* ------------------------------------------------------------------ */
/* Deterministic data patterns: every byte depends on (seed, offset), so a
 * block overwritten by another block's pattern, shifted, or zeroed is
 * detected. */

static inline uint64_t tu_mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

static inline uint64_t tu_word(uint64_t seed, size_t off)
{
    return tu_mix(seed + (uint64_t)off * 0x9e3779b97f4a7c15ull);
}

static __attribute__((unused)) void tu_fill(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = tu_word(seed, i);
        memcpy(b + i, &w, 8);
    }
    if (i < n) {
        uint64_t w = tu_word(seed, i);
        for (size_t k = 0; i < n; i++, k++)
            b[i] = (unsigned char)(w >> (8 * k));
    }
}

/* Returns the first offset that differs from the pattern, or -1. */
static __attribute__((unused)) long tu_check(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = tu_word(seed, i), got;
        memcpy(&got, b + i, 8);
        if (got != w) {
            for (size_t k = 0; k < 8; k++)
                if (b[i + k] != (unsigned char)(w >> (8 * k)))
                    return (long)(i + k);
        }
    }
    if (i < n) {
        uint64_t w = tu_word(seed, i);
        for (size_t k = 0; i < n; i++, k++)
            if (b[i] != (unsigned char)(w >> (8 * k)))
                return (long)i;
    }
    return -1;
}

/* Nonzero if all n bytes are zero. */
static __attribute__((unused)) int tu_all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        if (w)
            return 0;
    }
    for (; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* Small, fast, per-caller PRNG (xorshift64*). */
static inline uint64_t tu_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* ------------------------------------------------------------------ */
/* Memory of this process.  Read with open/read and a static vector, never
 * stdio or malloc: the figures must not move because of the reading. */

/* Field `field` of /proc/self/statm (0: mapped size, 1: resident) in
 * bytes, or 0 if it cannot be read. */
static __attribute__((unused)) size_t tu_statm(int field)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *at = buf;
    unsigned long v = strtoul(at, &at, 10);
    for (int i = 0; i < field; i++)
        v = strtoul(at, &at, 10);
    return (size_t)v * (size_t)sysconf(_SC_PAGESIZE);
}

static __attribute__((unused)) size_t tu_rss(void)
{
    size_t r = tu_statm(1);
    TU_ASSERT_MSG(r > 0, "cannot read /proc/self/statm");
    return r;
}

static __attribute__((unused)) size_t tu_vm_size(void)
{
    size_t r = tu_statm(0);
    TU_ASSERT_MSG(r > 0, "cannot read /proc/self/statm");
    return r;
}

/* How many OS pages of [p, p + n) are resident (mincore), or -1 if part of
 * the range is not mapped.  p is rounded down to its page; n <= 64 MiB. */
static __attribute__((unused)) long tu_resident_pages(const void *p, size_t n)
{
    static unsigned char vec[(64 << 20) / 4096 + 1];
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(ps - 1);
    size_t pages = ((uintptr_t)p + n - lo + ps - 1) / ps;
    TU_ASSERT_MSG(pages <= sizeof vec, "tu_resident_pages: %zu pages", pages);
    if (mincore((void *)lo, pages * ps, vec) != 0)
        return -1;
    long count = 0;
    for (size_t i = 0; i < pages; i++)
        count += vec[i] & 1;
    return count;
}

#define TU_MIB ((size_t)1 << 20)

/* Wait for child `pid` and require exit status 0; `what` names the child
 * and explains its exit codes. */
static __attribute__((unused)) void tu_wait_exit0(pid_t pid, const char *what)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s %d", what,
                  WIFEXITED(st) ? "exit code" : "killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* Run fn() in a child whose stderr is captured into got (NUL-terminated,
 * at most n - 1 bytes); the child leaves with _exit(0) if fn returns and
 * dumps no core.  Returns the child's wait status. */
static __attribute__((unused)) int tu_child_stderr(void (*fn)(void), char *got, size_t n)
{
    int pfd[2], status;
    size_t len = 0;
    ck_assert_int_eq(pipe(pfd), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        close(pfd[0]);
        dup2(pfd[1], 2);
        close(pfd[1]);
        alarm(30);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    for (;;) {
        ssize_t r = read(pfd[0], got + len, n - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == n - 1)
            break;
    }
    got[len] = '\0';
    close(pfd[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* One test in a test case of its own (select it with CK_RUN_CASE=name). */
static __attribute__((unused)) TCase *tu_one_case(Suite *s, const char *name, const TTest *test,
                                                  double timeout)
{
    TCase *t = tcase_create(name);
    tcase_set_timeout(t, timeout);
    tcase_add_test(t, test);
    suite_add_tcase(s, t);
    return t;
}

/* ------------------------------------------------------------------ */
/* Skipped tests.  Check has no "skip" result, so a test that cannot run
 * here (a kernel feature missing, a build without the shared library, a
 * precondition the test could not set up) calls TU_SKIP("why"): it records
 * the skip where the runner sees it (shared memory: in fork mode the test
 * runs in a child) and returns, and tu_run turns that test's TAP line into
 * "ok N - ... # SKIP why", which automake's tap-driver counts as SKIP, not
 * PASS.  A loop test records its iteration (_i). */

#define TU_MAX_SKIPS 64
struct tu_skip {
    char name[64];   /* the test's name (START_TEST's) */
    int iteration;
    char reason[120];
};
static struct tu_skips {
    int count;
    struct tu_skip e[TU_MAX_SKIPS];
} *tu_skips;

static __attribute__((unused)) void tu_skip_record(const char *fn, int iteration, const char *why)
{
    /* START_TEST(t_x) defines t_x_fn */
    size_t n = strlen(fn);
    if (n > 3 && strcmp(fn + n - 3, "_fn") == 0)
        n -= 3;
    TU_ASSERT_MSG(tu_skips != NULL, "TU_SKIP outside tu_run: %s", why);
    int k = __atomic_fetch_add(&tu_skips->count, 1, __ATOMIC_RELAXED);
    TU_ASSERT_MSG(k < TU_MAX_SKIPS, "too many skips");
    snprintf(tu_skips->e[k].name, sizeof tu_skips->e[k].name, "%.*s", (int)n, fn);
    tu_skips->e[k].iteration = iteration;
    snprintf(tu_skips->e[k].reason, sizeof tu_skips->e[k].reason, "%s", why);
    fprintf(stderr, "# SKIP %.*s: %s\n", (int)n, fn, why);
}

#define TU_SKIP(why)                                                          \
    do {                                                                      \
        tu_skip_record(__func__, _i, (why));                                  \
        return;                                                               \
    } while (0)

/* The reason a skipped run of test `name` (its seen-th TAP line, which is
 * iteration `seen` of a loop test starting at 0) was skipped, or NULL. */
static const char *tu_skip_reason(const char *name, int seen)
{
    for (int k = 0; k < tu_skips->count && k < TU_MAX_SKIPS; k++)
        if (strcmp(tu_skips->e[k].name, name) == 0 && tu_skips->e[k].iteration == seen)
            return tu_skips->e[k].reason;
    return NULL;
}

/* Copy Check's TAP from `in` to stdout, marking the skipped tests.  A
 * passing line reads "ok N - FILE:TCASE:TEST: Passed". */
static void tu_copy_tap(FILE *in)
{
    char line[1024];
    struct { char name[64]; int seen; } runs[256];
    int nruns = 0;
    while (fgets(line, sizeof line, in)) {
        const char *tail = ": Passed\n";
        size_t len = strlen(line), tl = strlen(tail);
        if (strncmp(line, "ok ", 3) != 0 || len <= tl || strcmp(line + len - tl, tail) != 0) {
            fputs(line, stdout);
            continue;
        }
        line[len - tl] = '\0';
        const char *name = strrchr(line, ':');
        name = name ? name + 1 : line;
        int r = 0;
        while (r < nruns && strcmp(runs[r].name, name) != 0)
            r++;
        if (r == nruns && nruns < 256) {
            snprintf(runs[r].name, sizeof runs[r].name, "%s", name);
            runs[r].seen = 0;
            nruns++;
        }
        const char *why = r < nruns ? tu_skip_reason(name, runs[r].seen++) : NULL;
        if (why)
            printf("%s # SKIP %s\n", line, why);
        else
            printf("%s: Passed\n", line);
    }
}

/* ------------------------------------------------------------------ */
/* Run a suite with TAP output on stdout (read by automake's tap-driver)
 * and return the process exit status. */
static __attribute__((unused)) int tu_run(Suite *s)
{
    tu_skips = mmap(NULL, sizeof *tu_skips, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
    if (tu_skips == MAP_FAILED) {
        perror("mmap");
        return 99;
    }
    FILE *tap = tmpfile();
    if (!tap) {
        perror("tmpfile");
        return 99;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fileno(tap));
    SRunner *sr = srunner_create(s);
    int failed;
    srunner_set_tap(sr, path);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    fflush(stdout);
    rewind(tap);
    tu_copy_tap(tap);
    fclose(tap);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Run the NULL-terminated tests as one test case of one suite, as tu_run
 * does: what every test program's main() but test_api's and test_checks'
 * comes down to. */
static __attribute__((unused)) int tu_run_case(const char *suite, const char *tcase, int timeout,
                                               const TTest *const *tests)
{
    Suite *s = suite_create(suite);
    TCase *t = tcase_create(tcase);
    tcase_set_timeout(t, timeout);
    for (; *tests; tests++)
        tcase_add_test(t, *tests);
    suite_add_tcase(s, t);
    return tu_run(s);
}

/* main() of a program whose tests form one test case. */
#define TU_MAIN(suite, tcase, timeout, ...)                                   \
    int main(void)                                                            \
    {                                                                         \
        const TTest *tests_[] = {__VA_ARGS__, NULL};                          \
        return tu_run_case(suite, tcase, timeout, tests_);                    \
    }

#endif /* EMMA_TESTUTIL_H */

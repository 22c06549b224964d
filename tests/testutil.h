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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
/* Resident set size of this process in bytes, from /proc/self/statm. */
static __attribute__((unused)) size_t tu_rss(void)
{
    char buf[128];
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    ck_assert_msg(f != NULL, "cannot open /proc/self/statm");
    ck_assert(fgets(buf, sizeof buf, f) != NULL);
    fclose(f);
    ck_assert_int_eq(sscanf(buf, "%lu %lu", &size, &resident), 2);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
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
/* Run a suite with TAP output on stdout (read by automake's tap-driver)
 * and return the process exit status. */
static __attribute__((unused)) int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;
    srunner_set_tap(sr, "-");
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
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

#endif /* EMMA_TESTUTIL_H */

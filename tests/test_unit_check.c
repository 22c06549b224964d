/* White-box tests of check.c's fatal-error writer: one line on stderr in
 * the documented format, then death by SIGABRT even when it is blocked.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include <signal.h>
#include <sys/resource.h>

#include "internal.h"

/* emma_fatal: "emma: <func>: <problem> (0x<hex>)\n" on fd 2, then SIGABRT,
 * even when SIGABRT is blocked in the calling thread. */
static void fatal_case(const char *func, const char *problem, uintptr_t v,
                       int block_abort)
{
    char want[256], got[512];
    int pfd[2];
    snprintf(want, sizeof want, "emma: %s: %s (0x%lx)\n", func, problem,
             (unsigned long)v);
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        if (block_abort) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGABRT);
            sigprocmask(SIG_BLOCK, &set, NULL);
        }
        emma_fatal(func, problem, (const void *)v);
    }
    close(pfd[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(pfd[0], got + len, sizeof got - 1 - len)) > 0)
        len += (size_t)r;
    got[len] = '\0';
    close(pfd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
                  "emma_fatal did not die of SIGABRT (status %#x)", st);
    ck_assert_str_eq(got, want);
}

START_TEST(t_fatal_format)
{
    fatal_case("free", "double free", 0x7f0012345670ull, 0);
    fatal_case("emma_alloc", "alignment is not a power of two", 0, 0);
    fatal_case("emma_dealloc", "size does not match the allocation",
               UINTPTR_MAX, 0);
    fatal_case("realloc", "interior or misaligned pointer", 0x10, 1);
}
END_TEST

TU_MAIN("unit_check", "check", 60, t_fatal_format)

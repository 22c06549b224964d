/* White-box tests of fork.c: a forked child (and grandchild) notices the
 * fork, recovery runs once, the parent never notices.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include "internal.h"

static int recovered;
static void count_recovery(void) { recovered++; }

START_TEST(t_fork_detection)
{
    fork_init();
    fork_init(); /* idempotent */
    ck_assert(!fork_detected());
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int code = 0;
        if (!fork_detected())
            code |= 1;
        fork_recover(count_recovery);
        fork_recover(count_recovery); /* once only */
        if (recovered != 1)
            code |= 2;
        if (fork_detected())
            code |= 4;
        /* a grandchild notices again */
        pid_t g = fork();
        if (g == 0)
            _exit(fork_detected() ? 0 : 1);
        int gst;
        if (g < 0 || waitpid(g, &gst, 0) != g || !WIFEXITED(gst) ||
            WEXITSTATUS(gst) != 0)
            code |= 8;
        _exit(code);
    }
    tu_wait_exit0(pid, "fork child (1: not detected, 2: recover not run exactly "
                       "once, 4: still detected after recovery, 8: grandchild)");
    ck_assert(!fork_detected());
    ck_assert_int_eq(recovered, 0);
}
END_TEST

TU_MAIN("unit_fork", "fork", 60, t_fork_detection)

/* White-box tests of alloc.c's memory primitives (mem_copy, mem_zero) at
 * every small offset and length.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include "internal.h"

START_TEST(t_mem_copy_zero)
{
    enum { N = 3000 };
    static unsigned char src[N + 64], dst[N + 64], ref[N + 64];
    tu_fill(src, sizeof src, 9);
    for (size_t so = 0; so < 9; so++)
        for (size_t d = 0; d < 9; d++)
            for (size_t n = 0; n < N; n += (n < 80 ? 1 : 97)) {
                memset(dst, 0xee, sizeof dst);
                memset(ref, 0xee, sizeof ref);
                memcpy(ref + d, src + so, n);
                mem_copy(dst + d, src + so, n);
                if (memcmp(dst, ref, sizeof dst) != 0)
                    ck_abort_msg("mem_copy(+%zu, +%zu, %zu) wrong", d, so, n);
                memset(ref + d, 0, n);
                mem_zero(dst + d, n);
                if (memcmp(dst, ref, sizeof dst) != 0)
                    ck_abort_msg("mem_zero(+%zu, %zu) wrong", d, n);
            }
}
END_TEST

TU_MAIN("unit_alloc", "alloc", 60, t_mem_copy_zero)

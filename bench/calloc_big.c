/* calloc_big: big calloc must not touch pages the kernel already zeroed.
 *
 *   calloc_big SIZE_MB REPS [MID_KB MIDREPS]
 *
 * REPS times: calloc(1, SIZE_MB MiB), check that one byte in every 64 KiB
 * reads zero, write one byte in every MiB, free.  Fresh pages from the
 * kernel are already zero: an allocator that clears them anyway pays for
 * writing SIZE_MB MiB each time and its peak RSS grows to the whole block,
 * while one that relies on the kernel stays near SIZE_MB/256 MiB.
 * Then MIDREPS times calloc(1, MID_KB KiB) blocks, fully checked and
 * completely overwritten before they are freed, so that an allocator which
 * reuses them must really clear them.  One op = one calloc + one free.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

int main(int argc, char **argv)
{
    size_t size = (size_t)arg_long(argc, argv, 1, 256) << 20;
    long reps = arg_long(argc, argv, 2, 40);
    size_t mid = (size_t)arg_long(argc, argv, 3, 256) << 10;
    long midreps = arg_long(argc, argv, 4, 2000);
    unsigned long long ops = 0;

    for (long r = 0; r < reps; r++) {
        unsigned char *p = calloc(1, size);
        if (!p)
            bench_fail("calloc_big", "calloc returned NULL");
        for (size_t off = 0; off < size; off += 64 * 1024)
            if (p[off] != 0)
                bench_fail("calloc_big", "calloc memory not zero");
        if (size && p[size - 1] != 0)
            bench_fail("calloc_big", "calloc memory not zero");
        for (size_t off = 0; off < size; off += 1u << 20)
            p[off] = 0xa5;
        free(p);
        ops++;
    }
    if (mid >= sizeof(uint64_t)) {
        for (long r = 0; r < midreps; r++) {
            uint64_t *p = calloc(mid / sizeof(uint64_t), sizeof(uint64_t));
            if (!p)
                bench_fail("calloc_big", "calloc returned NULL");
            uint64_t acc = 0;
            for (size_t i = 0; i < mid / sizeof(uint64_t); i++)
                acc |= p[i];
            if (acc != 0)
                bench_fail("calloc_big", "calloc memory not zero");
            memset(p, 0xa5, mid);
            free(p);
            ops++;
        }
    }
    report_ops(ops);
    return 0;
}

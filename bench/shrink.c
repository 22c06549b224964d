/* shrink: realloc shrinking big blocks.
 *
 *   shrink COUNT FROM_KIB TO_KIB [ROUNDS]
 *
 * ROUNDS times (default 1): COUNT blocks of FROM_KIB KiB are allocated and
 * written whole, then realloc'd down to TO_KIB KiB each; their contents are
 * checked and `rss_shrunk` is reported while they are still live (what the
 * shrunk blocks cost), then they are freed.  One op = one realloc.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

static const char *prog = "shrink";

int main(int argc, char **argv)
{
    size_t count = (size_t)arg_long(argc, argv, 1, 10);
    size_t from = (size_t)arg_long(argc, argv, 2, 20 * 1024) << 10;
    size_t to = (size_t)arg_long(argc, argv, 3, 100) << 10;
    long rounds = arg_long(argc, argv, 4, 1);
    if (count == 0 || to == 0 || to > from)
        bench_fail(prog, "need COUNT > 0 and 0 < TO_KIB <= FROM_KIB");
    unsigned char **p = calloc(count, sizeof *p);
    if (!p)
        bench_fail(prog, "cannot allocate table");
    unsigned long long ops = 0;
    for (long r = 0; r < rounds; r++) {
        for (size_t i = 0; i < count; i++) {
            p[i] = bench_malloc(prog, from);
            memset(p[i], (int)(i + 1), from);
        }
        for (size_t i = 0; i < count; i++) {
            unsigned char *q = realloc(p[i], to);
            if (!q)
                bench_fail(prog, "realloc returned NULL");
            p[i] = q;
            ops++;
            for (size_t off = 0; off < to; off += 512)
                if (q[off] != (unsigned char)(i + 1))
                    bench_fail(prog, "contents lost by realloc");
            if (q[to - 1] != (unsigned char)(i + 1))
                bench_fail(prog, "contents lost by realloc");
        }
        report_rss("rss_shrunk");
        for (size_t i = 0; i < count; i++)
            free(p[i]);
    }
    free(p);
    report_ops(ops);
    return 0;
}

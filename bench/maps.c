/* maps: how many mappings blocks above 1 MiB cost.
 *
 *   maps COUNT [MIN_KIB [MAX_KIB [SEED]]]
 *
 * Allocates COUNT blocks of MIN_KIB..MAX_KIB KiB (default 1025..2048 KiB,
 * all above 1 MiB), touches the first byte of each, and reports
 * `maps_lines`: the lines of /proc/self/maps, i.e. the mappings the
 * process holds (vm.max_map_count, 65530 by default, caps them; when the
 * allocator spends one per block, every later mmap fails).  Then frees
 * them.  One op = one block.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

static const char *prog = "maps";

static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        bench_fail(prog, "cannot open /proc/self/maps");
    long n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    size_t count = (size_t)arg_long(argc, argv, 1, 10000);
    size_t lo = (size_t)arg_long(argc, argv, 2, 1025) << 10;
    size_t hi = (size_t)arg_long(argc, argv, 3, 2048) << 10;
    uint64_t rng = rng_seed((uint64_t)arg_long(argc, argv, 4, 42));
    unsigned char **p = calloc(count ? count : 1, sizeof *p);
    size_t *sz = calloc(count ? count : 1, sizeof *sz);
    if (!p || !sz)
        bench_fail(prog, "cannot allocate tables");
    long before = count_maps();
    for (size_t i = 0; i < count; i++) {
        sz[i] = rng_range(&rng, lo, hi);
        p[i] = bench_malloc(prog, sz[i]);
        uint64_t t = obj_tag(p[i], sz[i]);
        memcpy(p[i], &t, sizeof t);
    }
    long during = count_maps();
    printf("maps_before %ld\nmaps_lines %ld\n", before, during);
    for (size_t i = 0; i < count; i++) {
        uint64_t t;
        memcpy(&t, p[i], sizeof t);
        if (t != obj_tag(p[i], sz[i]))
            bench_fail(prog, "block corrupted");
        free(p[i]);
    }
    free(p);
    free(sz);
    report_ops(count);
    return 0;
}

/* oomcap: what can still be allocated under an address-space limit.
 *
 *   oomcap LIMIT_MIB SMALL_MIB [MIN_KIB [MAX_KIB [SEED]]]
 *   oomcap rounds LIMIT_MIB LO-HI LO-HI...
 *   oomcap grow LIMIT_MIB STEP
 *
 * Sets RLIMIT_AS (ulimit -v) to LIMIT_MIB MiB plus what the process maps
 * at start (libraries, stack), before its first allocation: VmSize is read
 * with open/read, not stdio, whose buffers come from malloc, so what the
 * allocator reserves for itself on its first call counts against the
 * limit, as under a shell's `ulimit -v`.  LIMIT_MIB 0 sets none: the
 * caller's applies (`(ulimit -v 409600; oomcap 0 200)`).  Then allocates
 * SMALL_MIB MiB of small blocks (16..512 B) and frees them, then blocks of
 * MIN_KIB..MAX_KIB KiB (default 1..7 MiB), touching one byte each, until
 * malloc returns NULL, and reports `cap_bytes`: the bytes it got.  An
 * allocator that keeps freed memory mapped must give it back and retry
 * when mmap fails.  One op = one block.
 *
 * `rounds`: under the same limit, one round per LO-HI (bytes, with an
 * optional k or m suffix: `1m-7m`, `16-64k`): blocks of LO..HI bytes until
 * malloc returns NULL, all freed, then the next round.  Reports
 * `cap_first` (the first round's bytes) and `cap_bytes` (the last
 * round's): what is left for one size range after another was taken whole
 * and freed.  A block's first bytes are written (a link); writing a byte
 * per page changed nothing for glibc or emma (address space counts,
 * touched or not).
 *
 * `grow`: under the same limit, one block grown by realloc, STEP bytes at
 * a time (k or m suffix; `half`: by half its size, plus 4 KiB), its last
 * byte written each time, until realloc returns NULL: `cap_bytes`, the
 * size reached.  An allocator that moves a block by mapping the new size
 * before it lets go of the old one stops at about half the limit.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "bench.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *prog = "oomcap";

struct cap_blk {
    struct cap_blk *next;
};

/* Blocks of lo..hi bytes onto *head until `max` bytes or malloc's NULL;
 * the bytes taken (*count gets the blocks). */
static size_t take(struct cap_blk **head, uint64_t *rng, size_t lo, size_t hi, size_t max,
                   unsigned long long *count)
{
    size_t got = 0;
    while (got < max) {
        size_t sz = rng_range(rng, lo, hi);
        struct cap_blk *b = malloc(sz);
        if (!b)
            break;
        b->next = *head;
        *head = b;
        got += sz;
        ++*count;
    }
    return got;
}

static void free_all(struct cap_blk *b)
{
    while (b) {
        struct cap_blk *next = b->next;
        free(b);
        b = next;
    }
}

/* "1m", "64k", "16": bytes */
static size_t parse_size(const char *s, char **end)
{
    size_t n = (size_t)strtoull(s, end, 10);
    if (**end == 'k' || **end == 'K')
        n <<= 10, ++*end;
    else if (**end == 'm' || **end == 'M')
        n <<= 20, ++*end;
    return n;
}

/* Blocks of lo..hi bytes until malloc returns NULL, then all freed: the
 * bytes got. */
static size_t round_until_null(uint64_t *rng, size_t lo, size_t hi, unsigned long long *ops)
{
    struct cap_blk *head = NULL;
    size_t got = take(&head, rng, lo, hi, SIZE_MAX, ops);
    free_all(head);
    return got;
}

/* RLIMIT_AS at limit bytes over what the process maps now, read without
 * stdio (whose buffers come from malloc). */
static void set_limit(size_t limit)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    unsigned long vsz = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        vsz = vsz * 10 + (unsigned long)(buf[i] - '0');
    if (vsz == 0)
        bench_fail(prog, "cannot read /proc/self/statm");
    struct rlimit rl = {limit + vsz * BENCH_PAGE, limit + vsz * BENCH_PAGE};
    if (limit != 0 && setrlimit(RLIMIT_AS, &rl) != 0)
        bench_fail(prog, "setrlimit failed");
}

static int rounds(int argc, char **argv)
{
    if (argc < 4)
        bench_fail(prog, "usage: oomcap rounds LIMIT_MIB LO-HI...");
    /* parsed before the limit: nothing allocates after it but the rounds */
    size_t lo[16], hi[16];
    int n = 0;
    for (int i = 3; i < argc && n < 16; i++, n++) {
        char *e;
        lo[n] = parse_size(argv[i], &e);
        if (*e != '-')
            bench_fail(prog, "a round is LO-HI");
        hi[n] = parse_size(e + 1, &e);
        if (*e || lo[n] < sizeof(struct cap_blk) || hi[n] < lo[n])
            bench_fail(prog, "a round is LO-HI, LO at least 16");
    }
    set_limit((size_t)arg_long(argc, argv, 2, 256) << 20);
    uint64_t rng = rng_seed(42);
    unsigned long long ops = 0;
    size_t first = 0, got = 0;
    for (int r = 0; r < n; r++) {
        got = round_until_null(&rng, lo[r], hi[r], &ops);
        if (r == 0)
            first = got;
    }
    printf("cap_first %zu\ncap_bytes %zu\n", first, got);
    report_ops(ops);
    return 0;
}

static int grow(int argc, char **argv)
{
    if (argc < 4)
        bench_fail(prog, "usage: oomcap grow LIMIT_MIB STEP|half");
    size_t step = 0;
    if (strcmp(argv[3], "half") != 0) {
        char *e;
        step = parse_size(argv[3], &e);
        if (*e || step == 0)
            bench_fail(prog, "STEP is bytes (k or m suffix) or half");
    }
    set_limit((size_t)arg_long(argc, argv, 2, 256) << 20);
    unsigned long long ops = 0;
    size_t size = 0;
    char *p = NULL;
    for (;;) {
        size_t next = step ? size + step : size + size / 2 + 4096;
        char *q = realloc(p, next);
        if (!q)
            break;
        q[next - 1] = 1;
        p = q;
        size = next;
        ops++;
    }
    free(p);
    printf("cap_bytes %zu\n", size);
    report_ops(ops);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "rounds") == 0)
        return rounds(argc, argv);
    if (argc > 1 && strcmp(argv[1], "grow") == 0)
        return grow(argc, argv);
    size_t limit = (size_t)arg_long(argc, argv, 1, 400) << 20;
    size_t small = (size_t)arg_long(argc, argv, 2, 200) << 20;
    size_t lo = (size_t)arg_long(argc, argv, 3, 1024) << 10;
    size_t hi = (size_t)arg_long(argc, argv, 4, 7 * 1024) << 10;
    uint64_t rng = rng_seed((uint64_t)arg_long(argc, argv, 5, 42));

    /* no stdio (nor anything else that allocates) before setrlimit */
    set_limit(limit);

    struct cap_blk *head = NULL;
    unsigned long long ops = 0;
    take(&head, &rng, sizeof(struct cap_blk), 512, small, &ops);
    free_all(head);
    head = NULL;
    ops = 0;
    size_t got = take(&head, &rng, lo, hi, SIZE_MAX, &ops);
    free_all(head);
    printf("cap_bytes %zu\n", got);
    report_ops(ops);
    return 0;
}

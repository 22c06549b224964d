/* oomcap: what can still be allocated under an address-space limit.
 *
 *   oomcap LIMIT_MIB SMALL_MIB [MIN_KIB [MAX_KIB [SEED]]]
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

int main(int argc, char **argv)
{
    size_t limit = (size_t)arg_long(argc, argv, 1, 400) << 20;
    size_t small = (size_t)arg_long(argc, argv, 2, 200) << 20;
    size_t lo = (size_t)arg_long(argc, argv, 3, 1024) << 10;
    size_t hi = (size_t)arg_long(argc, argv, 4, 7 * 1024) << 10;
    uint64_t rng = rng_seed((uint64_t)arg_long(argc, argv, 5, 42));

    /* no stdio (nor anything else that allocates) before setrlimit */
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

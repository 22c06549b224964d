/* robust_limit: the first allocations of a fresh process under a limit.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Run by test_robust (exec'd, so that emma starts from nothing): its very
 * first allocation happens with the address space limit or the mapping
 * count used up.  Every call must return (NULL with ENOMEM), and every
 * block emma hands out, even one taken right at the limit, must be emma's
 * (emma_owns) and accepted back by free.
 *
 *   robust_limit rlimit     RLIMIT_AS below what the process already uses
 *   robust_limit mapcount   vm.max_map_count used up by one-page mappings
 *   robust_limit room       RLIMIT_AS 24 MiB above what the process uses:
 *                           the first blocks (small ones and a 3 MiB one)
 *                           must fit, so emma's own tables must cost
 *                           address space in proportion to its use
 *
 * Exit status: 0 pass; 2.. a numbered failure (see the code); killed by
 * SIGALRM after 15 s: a hang.  Only the exec'd program allocates: no stdio
 * before the checks (stdio could allocate its buffers through emma).
 */
#define _GNU_SOURCE 1
#include "config.h"

#include <emma.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

void free_sized(void *ptr, size_t size);

static void say(const char *s) { (void)!write(2, s, strlen(s)); }

static int fail(int code, const char *what)
{
    say("robust_limit: ");
    say(what);
    say("\n");
    return code;
}

/* Every allocating entry point once; all must fail with ENOMEM (none may
 * hang).  Returns 0 or a failure code. */
static int all_fail(void)
{
    void *p;
    errno = 0;
    if ((p = malloc(16)) != NULL || errno != ENOMEM)
        return fail(2, "malloc(16) under the limit: not NULL+ENOMEM");
    errno = 0;
    if ((p = calloc(3, 100)) != NULL || errno != ENOMEM)
        return fail(3, "calloc under the limit: not NULL+ENOMEM");
    errno = 0;
    if ((p = emma_alloc(200, 64)) != NULL || errno != ENOMEM)
        return fail(4, "emma_alloc under the limit: not NULL+ENOMEM");
    errno = 0;
    if ((p = malloc(3 << 20)) != NULL || errno != ENOMEM)
        return fail(5, "malloc(3 MiB) under the limit: not NULL+ENOMEM");
    errno = 0;
    if ((p = realloc(NULL, 5000)) != NULL || errno != ENOMEM)
        return fail(6, "realloc(NULL) under the limit: not NULL+ENOMEM");
    if (posix_memalign(&p, 4096, 100) != ENOMEM)
        return fail(7, "posix_memalign under the limit: not ENOMEM");
    return 0;
}

/* Allocation works again once the limit is lifted. */
static int works_again(void)
{
    for (size_t s = 1; s < (8u << 20); s = s * 3 + 5) {
        unsigned char *p = malloc(s);
        if (!p)
            return fail(8, "malloc fails after the limit was lifted");
        p[0] = 1;
        p[s - 1] = 2;
        if (!emma_owns(p))
            return fail(9, "emma_owns denies a block after the limit was lifted");
        free(p);
    }
    return 0;
}

static int run_rlimit(void)
{
    struct rlimit old, none;
    if (getrlimit(RLIMIT_AS, &old) != 0)
        return fail(20, "getrlimit");
    none.rlim_cur = 0; /* below the current usage: every new mapping fails */
    none.rlim_max = old.rlim_max;
    if (setrlimit(RLIMIT_AS, &none) != 0)
        return fail(21, "setrlimit");
    int r = all_fail();
    if (r)
        return r;
    if (setrlimit(RLIMIT_AS, &old) != 0)
        return fail(22, "setrlimit (restore)");
    return works_again();
}

/* One-page mappings with alternating protections, so that neighbours
 * cannot merge, until the kernel refuses: the mapping count is used up. */
#define FILL_MAX 300000
static void *fill[FILL_MAX];
static size_t filled;

static void fill_mappings(void)
{
    while (filled < FILL_MAX) {
        void *p = mmap(NULL, 4096, (filled & 1) ? PROT_READ : PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            break;
        fill[filled++] = p;
    }
}

/* Blocks taken at the limit: allocate until NULL, then every one of them
 * must be emma's and freeable. */
#define HELD_MAX 4096
static void *held[HELD_MAX];
static size_t held_size[HELD_MAX];

static int take_and_give_back(unsigned round)
{
    static const size_t sizes[] = {16, 100, 1000, 5000, 40000, 300000, 900000, 2u << 20};
    size_t n = 0;
    for (unsigned k = 0; n < HELD_MAX; k++) {
        size_t s = sizes[(k + round) % (sizeof sizes / sizeof sizes[0])];
        unsigned char *p = malloc(s);
        if (!p) {
            if (errno != ENOMEM)
                return fail(30, "malloc at the mapping limit: NULL without ENOMEM");
            if (k > 64)
                break;
            continue;
        }
        p[0] = (unsigned char)k;
        p[s - 1] = (unsigned char)k;
        held[n] = p;
        held_size[n++] = s;
    }
    for (size_t i = 0; i < n; i++) {
        if (!emma_owns(held[i]))
            return fail(31, "a block handed out at the mapping limit is not emma's");
        if (emma_usable_size(held[i]) < held_size[i])
            return fail(32, "usable size of a block handed out at the mapping limit");
        if (i % 2)
            free(held[i]);
        else
            free_sized(held[i], held_size[i]);
    }
    return 0;
}

static int run_mapcount(void)
{
    fill_mappings();
    if (filled < 1000 || filled == FILL_MAX)
        return fail(40, "could not use up the mapping count");
    int r = all_fail();
    if (r)
        return r;
    /* Give back a few mappings at a time: emma gets just enough room for
     * some of its mappings, and the blocks it hands out then must be
     * accepted back. */
    for (unsigned round = 0; round < 40 && filled > 0; round++) {
        for (unsigned k = 0; k < 1 + round % 4 && filled > 0; k++)
            munmap(fill[--filled], 4096);
        r = take_and_give_back(round);
        if (r)
            return r;
    }
    while (filled > 0)
        munmap(fill[--filled], 4096);
    return works_again();
}

/* VmSize in bytes, from /proc/self/statm with raw reads (no stdio, which
 * could allocate); 0 if unreadable. */
static size_t vm_size(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    size_t pages = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        pages = pages * 10 + (size_t)(buf[i] - '0');
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* The very first allocations with 24 MiB of address space to spare: a
 * few thousand small blocks and one of 3 MiB (a segment, a huge mapping
 * and emma's tables) must all fit.  With a 64 MiB address map reserved
 * up front, the first malloc failed. */
static int run_room(void)
{
    size_t vsz = vm_size();
    if (vsz == 0)
        return fail(50, "cannot read /proc/self/statm");
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0)
        return fail(51, "getrlimit");
    rl.rlim_cur = vsz + ((size_t)24 << 20);
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return fail(52, "setrlimit");
    static unsigned char *small[3000];
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        size_t s = 16 + (i * 37) % 500;
        if (!(small[i] = malloc(s)))
            return fail(53, "malloc of a small block, 24 MiB below RLIMIT_AS, failed");
        memset(small[i], (int)i, s);
    }
    size_t big = (size_t)3 << 20;
    unsigned char *p = malloc(big);
    if (!p)
        return fail(54, "malloc(3 MiB), 24 MiB below RLIMIT_AS, failed");
    memset(p, 7, big);
    if (!emma_owns(p) || !emma_owns(small[0]) || !emma_owns(small[2999]))
        return fail(55, "emma_owns denies a block taken under RLIMIT_AS");
    free(p);
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        if (small[i][0] != (unsigned char)i)
            return fail(56, "a small block was overwritten");
        free(small[i]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* a hang is a failure; 25 s (under the test case's 30) because the
     * mapcount mode takes 2-3 s alone and went past 15 s once at load 10;
     * on a Firecracker VM it takes 10 s alone (160k page faults) and went
     * past 25 s at load 10-15, so CK_TIMEOUT_MULTIPLIER, which stretches
     * the test case's timeout, stretches this one too */
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    unsigned mult = m && atoi(m) > 1 ? (unsigned)atoi(m) : 1;
    alarm(25 * mult);
    if (argc != 2)
        return fail(1, "usage: robust_limit rlimit|mapcount|room");
    if (strcmp(argv[1], "room") == 0)
        return run_room();
    if (strcmp(argv[1], "rlimit") == 0)
        return run_rlimit();
    if (strcmp(argv[1], "mapcount") == 0)
        return run_mapcount();
    return fail(1, "unknown mode");
}

/* White-box tests of the OS layer (os.c: mappings, errno, address map), the
 * memory primitives (alloc.c) and the fatal-error writer (check.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "internal.h"

/* Total mapped size of this process, read without stdio (fopen would
 * allocate, and glibc's malloc may grow the heap, changing the figure). */
static size_t vm_size(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    return (size_t)strtoul(buf, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE);
}

/* mincore() over [p, p+n): 1 if every page is resident, 0 if not, -1 if
 * some page is not mapped.  A static vector: no malloc between the
 * vm_size() readings. */
static unsigned char mincore_vec[(64 << 20) / 4096 + 1];

static int resident(void *p, size_t n)
{
    size_t pages = (n + 4095) / 4096;
    ck_assert(pages <= sizeof mincore_vec);
    if (mincore(p, n, mincore_vec) != 0)
        return -1;
    for (size_t i = 0; i < pages; i++)
        if (!(mincore_vec[i] & 1))
            return 0;
    return 1;
}

static int mapped(void *p, size_t n) { return resident(p, n) >= 0; }

START_TEST(t_os_map)
{
    const size_t sizes[] = {4096, 8192, 65536, 3 << 20, 64 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = os_map(sizes[i]);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % OS_PAGE_SIZE, 0);
        ck_assert(tu_all_zero(p, sizes[i] < 65536 ? sizes[i] : 65536));
        p[0] = 1;
        p[sizes[i] - 1] = 2;
        os_unmap(p, sizes[i]);
        ck_assert(!mapped(p, sizes[i]));
    }
    ck_assert_ptr_null(os_map((size_t)1 << 62)); /* the kernel says no */
}
END_TEST

START_TEST(t_os_map_aligned)
{
    for (size_t a = OS_PAGE_SIZE; a <= ((size_t)64 << 20); a *= 2) {
        const size_t offsets[] = {0, OS_PAGE_SIZE, a / 2 >= OS_PAGE_SIZE ? a / 2 : 0,
                                  SEGMENT_SIZE};
        for (size_t k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
            size_t off = offsets[k];
            size_t size = SEGMENT_SIZE + 3 * OS_PAGE_SIZE;
            size_t out = 0;
            size_t before = vm_size();
            unsigned char *p = os_map_aligned(size, a, off, &out);
            size_t after = vm_size();
            ck_assert_msg(p != NULL, "os_map_aligned(%zu, %zu, %zu)", size, a,
                          off);
            ck_assert_msg(((uintptr_t)p + off) % a == 0,
                          "os_map_aligned(%zu, %zu, %zu) = %p", size, a, off,
                          (void *)p);
            ck_assert_uint_eq(out, size);
            /* the slack around the aligned range went back */
            ck_assert_msg(after - before == size,
                          "os_map_aligned(%zu, align %zu): mapping grew by "
                          "%zu bytes", size, a, after - before);
            p[0] = 1;
            p[size - 1] = 1;
            ck_assert_int_eq(resident(p, size), 0);
            before = vm_size(); /* Check's own bookkeeping may have grown */
            os_unmap(p, size);
            ck_assert_uint_eq(before - vm_size(), size);
        }
    }
    size_t out = 0;
    ck_assert_ptr_null(os_map_aligned(SIZE_MAX - 4095, SEGMENT_SIZE, 0, &out));
    ck_assert_ptr_null(os_map_aligned(SEGMENT_SIZE, SIZE_MAX / 2 + 1, 0, &out));
    ck_assert_ptr_null(os_map_aligned(MAX_REQUEST + 1, SEGMENT_SIZE, 0, &out));
}
END_TEST

START_TEST(t_os_purge)
{
    size_t n = 8 << 20;
    unsigned char *p = os_map(n);
    ck_assert_ptr_nonnull(p);
    memset(p, 0xab, n);
    ck_assert_int_eq(resident(p, n), 1);
    os_purge(p + 4096, n - 8192);
    /* still mapped, reads zero, no longer resident */
    ck_assert_int_eq(p[0], 0xab);
    ck_assert_int_eq(p[n - 1], 0xab);
    ck_assert_int_eq(resident(p + 4096, n - 8192), 0);
    ck_assert(tu_all_zero(p + 4096, n - 8192));
    os_unmap(p, n);
}
END_TEST

START_TEST(t_os_remap)
{
    /* a huge-block-like mapping: start + offset must stay aligned */
    const size_t aligns[] = {SEGMENT_SIZE, 16 << 20};
    for (size_t i = 0; i < 2; i++) {
        size_t a = aligns[i], off = a > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
        size_t sz = 6 << 20;
        unsigned char *p = os_map_aligned(sz, a, off, NULL);
        ck_assert_ptr_nonnull(p);
        tu_fill(p, sz, 42);
        /* block the neighbourhood so the kernel has to move it */
        void *wall = mmap(p + sz, 4096, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                          -1, 0);
        size_t nsz = 40 << 20;
        unsigned char *q = os_remap(p, sz, nsz, a, off);
        ck_assert_msg(q != NULL, "os_remap grow failed");
        ck_assert_msg(((uintptr_t)q + off) % a == 0, "os_remap lost alignment");
        ck_assert(tu_check(q, sz, 42) < 0);
        q[nsz - 1] = 7;
        unsigned char *r = os_remap(q, nsz, 5 << 20, a, off);
        ck_assert_ptr_eq(r, q); /* shrinking stays in place */
        ck_assert(tu_check(r, 5 << 20, 42) < 0);
        os_unmap(r, 5 << 20);
        if (wall != MAP_FAILED)
            munmap(wall, 4096);
    }
}
END_TEST

START_TEST(t_os_misc)
{
    errno = 0;
    os_set_errno(EMMA_ENOMEM);
    ck_assert_int_eq(errno, ENOMEM);
    os_set_errno(EMMA_EINVAL);
    ck_assert_int_eq(errno, EINVAL);
    uintptr_t s = os_secret();
    ck_assert(s != 0);
    ck_assert_uint_eq(os_secret(), s);
    ck_assert_uint_eq(os_gettid(), (uint32_t)syscall(SYS_gettid));
    os_yield();
}
END_TEST

START_TEST(t_addrmap)
{
    unsigned char *seg = os_map_aligned(3 * SEGMENT_SIZE, SEGMENT_SIZE, 0, NULL);
    ck_assert_ptr_nonnull(seg);
    ck_assert_uint_eq(addrmap_lookup(seg + 64), CHUNK_NONE);
    /* one segment with a header */
    addrmap_mark(seg, SEGMENT_SIZE, true);
    ck_assert_uint_eq(addrmap_lookup(seg + 1), CHUNK_HEADER);
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE / 2), CHUNK_HEADER);
    /* a block ending at the chunk boundary belongs to the chunk below */
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE), CHUNK_HEADER);
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE + 1), CHUNK_NONE);
    addrmap_clear(seg, SEGMENT_SIZE);
    ck_assert_uint_eq(addrmap_lookup(seg + 1), CHUNK_NONE);
    /* a multi-chunk (huge) mapping: header chunk, then interior chunks */
    addrmap_mark(seg, 2 * SEGMENT_SIZE + 4096, true);
    ck_assert_uint_eq(addrmap_lookup(seg + 4096), CHUNK_HEADER);
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE + 4096), CHUNK_INTERIOR);
    ck_assert_uint_eq(addrmap_lookup(seg + 2 * SEGMENT_SIZE + 16), CHUNK_INTERIOR);
    ck_assert_uint_eq(addrmap_lookup(seg + 3 * SEGMENT_SIZE + 16), CHUNK_NONE);
    addrmap_clear(seg, 2 * SEGMENT_SIZE + 4096);
    for (size_t off = 1; off < 3 * SEGMENT_SIZE; off += 65536)
        ck_assert_uint_eq(addrmap_lookup(seg + off), CHUNK_NONE);
    /* any value is safe */
    const uintptr_t odd[] = {0, 1, 4096, (uintptr_t)1 << 47, UINTPTR_MAX,
                             0x8000000000000000ull, (uintptr_t)-4096};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        ck_assert_uint_eq(addrmap_lookup((void *)odd[i]), CHUNK_NONE);
    os_unmap(seg, 3 * SEGMENT_SIZE);
}
END_TEST

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

int main(void)
{
    const TTest *tests[] = {
        t_os_map,
        t_os_map_aligned,
        t_os_purge,
        t_os_remap,
        t_os_misc,
        t_addrmap,
        t_mem_copy_zero,
        t_fatal_format,
        NULL,
    };
    return tu_run_case("unit_os", "os", 60, tests);
}

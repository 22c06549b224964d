/* The operating-system layer, the only code that talks to the kernel:
 * one named function per service (mappings, madvise, thread and process
 * ids, liveness probes, the PI-futex try-lock, writing to stderr and
 * aborting), errno interop, the per-process secret, and the address map
 * of emma's own memory.  Raw system calls come from syscall.h.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "observe.h"
#include "syscall.h"

/* errno lives in libc.  A weak reference resolves to libc's accessor when
 * one is loaded (LD_PRELOAD, -lemma in a normal program) and stays NULL in a
 * libc-free process, where errno simply does not exist. */
extern int *__errno_location(void) __attribute__((weak));

void os_set_errno(int e)
{
    if (__errno_location)
        *__errno_location() = e;
}

/* ------------------------------------------------------------------ */
/* Counters for emma_stats(): relaxed atomics next to system calls, which
 * cost a thousand times more. */

static struct {
    _Atomic size_t mmap_calls, munmap_calls, mremap_calls, madvise_calls;
    _Atomic size_t purges, bytes_purged;
    _Atomic size_t bytes_mapped, peak_bytes_mapped;
} counters;

static inline void count(_Atomic size_t *c, size_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void count_mapped(size_t n)
{
    size_t now = atomic_fetch_add_explicit(&counters.bytes_mapped, n, memory_order_relaxed) + n;
    size_t peak = atomic_load_explicit(&counters.peak_bytes_mapped, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak_explicit(&counters.peak_bytes_mapped, &peak,
                                                               now, memory_order_relaxed,
                                                               memory_order_relaxed))
        ;
}

static void count_unmapped(size_t n)
{
    atomic_fetch_sub_explicit(&counters.bytes_mapped, n, memory_order_relaxed);
}

void os_counters_read(struct os_counters *c)
{
    c->mmap_calls = atomic_load_explicit(&counters.mmap_calls, memory_order_relaxed);
    c->munmap_calls = atomic_load_explicit(&counters.munmap_calls, memory_order_relaxed);
    c->mremap_calls = atomic_load_explicit(&counters.mremap_calls, memory_order_relaxed);
    c->madvise_calls = atomic_load_explicit(&counters.madvise_calls, memory_order_relaxed);
    c->purges = atomic_load_explicit(&counters.purges, memory_order_relaxed);
    c->bytes_purged = atomic_load_explicit(&counters.bytes_purged, memory_order_relaxed);
    c->bytes_mapped = atomic_load_explicit(&counters.bytes_mapped, memory_order_relaxed);
    c->peak_bytes_mapped = atomic_load_explicit(&counters.peak_bytes_mapped, memory_order_relaxed);
}

static long madvise_counted(void *p, size_t size, long advice)
{
    count(&counters.madvise_calls, 1);
    return sys_call3(SYS_madvise, (long)p, (long)size, advice);
}

/* Private anonymous read-write memory, at `hint` if the kernel agrees.
 * Counted in bytes_mapped unless NORESERVE (the address map's leaves,
 * never touched beyond the entries emma uses). */
static void *map_anon(uintptr_t hint, size_t size, long flags)
{
    count(&counters.mmap_calls, 1);
    long r = sys_call6(SYS_mmap, (long)hint, (long)size, EMMA_PROT_RW,
                       EMMA_MAP_PRIVATE | EMMA_MAP_ANONYMOUS | flags, -1, 0);
    if (sys_failed(r))
        return NULL;
    if (!(flags & EMMA_MAP_NORESERVE))
        count_mapped(size);
    return (void *)r;
}

void *os_map(size_t size) { return map_anon(0, size, 0); }

/* ------------------------------------------------------------------ */
/* Walks over segment headers (stats.c) read memory that its owner may
 * unmap at any moment.  While a walk is in progress, unmapping is
 * deferred: the range goes on a lock-free stack (linked through its own
 * first bytes) and the last walk to end unmaps it.  An unmapper first
 * clears the range from the address map, then (after a full fence) looks
 * at the walk count; a walk increments the count before it reads the
 * address map.  So either the unmapper sees the walk and defers, or the
 * walk starts after the range left the address map and never reaches it. */

struct deferred_unmap {
    struct deferred_unmap *next;
    size_t size;
};
static _Atomic uint32_t walkers;
static _Atomic(struct deferred_unmap *) deferred;
/* The process the walk count belongs to: a fork child inherits the count
 * of walks that its parent's other threads had under way, which never end
 * in the child.  The first walk or unmap of the child that sees another
 * process here (or none yet: 0) starts the count again from 0 (-1 here: a
 * reset under way).
 * The forking thread itself is never inside a walk (stats.c blocks
 * signals around it, so no handler can fork there). */
static _Atomic int32_t walk_pid;

static bool unmap_now(void *p, size_t size)
{
    count(&counters.munmap_calls, 1);
    if (sys_failed(sys_call2(SYS_munmap, (long)p, (long)size)))
        return false;
    count_unmapped(size);
    return true;
}

static void unmap_deferred(void)
{
    struct deferred_unmap *d = atomic_exchange_explicit(&deferred, NULL, memory_order_acquire);
    while (d) {
        struct deferred_unmap *next = d->next;
        unmap_now(d, d->size);
        d = next;
    }
}

/* Make the walk count this process's (a system call: only where a count
 * is, or may be, inherited). */
static void walks_own(void)
{
    int32_t pid = os_getpid();
    for (;;) {
        int32_t seen = atomic_load_explicit(&walk_pid, memory_order_acquire);
        if (seen == pid)
            return;
        if (seen == -1) {
            os_yield(); /* another thread of this child is resetting */
            continue;
        }
        if (atomic_compare_exchange_strong(&walk_pid, &seen, -1)) {
            atomic_store(&walkers, 0);
            atomic_store_explicit(&walk_pid, pid, memory_order_release);
            unmap_deferred(); /* what the parent's walks held back */
            return;
        }
    }
}

/* false if the kernel refused (unmapping the middle of a mapping splits
 * it, which fails when vm.max_map_count is reached); a deferred unmap
 * counts as done. */
bool os_unmap(void *p, size_t size)
{
    if (!size)
        return true;
    atomic_thread_fence(memory_order_seq_cst);
    if (likely(atomic_load_explicit(&walkers, memory_order_relaxed) == 0))
        return unmap_now(p, size);
    walks_own();
    if (atomic_load_explicit(&walkers, memory_order_seq_cst) == 0)
        return unmap_now(p, size);
    struct deferred_unmap *d = p;
    d->size = size;
    struct deferred_unmap *head = atomic_load_explicit(&deferred, memory_order_relaxed);
    do {
        d->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&deferred, &head, d, memory_order_release,
                                                    memory_order_relaxed));
    return true;
}

void os_walk_begin(void)
{
    walks_own();
    atomic_fetch_add_explicit(&walkers, 1, memory_order_seq_cst);
}

void os_walk_end(void)
{
    if (atomic_fetch_sub_explicit(&walkers, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&deferred, memory_order_relaxed))
        unmap_deferred();
}

/* Bytes of [p, p + size) (page aligned, at most 4 MiB) that are resident,
 * or `size` if the kernel will not say. */
size_t os_resident_bytes(void *p, size_t size)
{
    unsigned char vec[(4u << 20) / 4096];
    size_t pages = size / OS_PAGE_SIZE;
    if (pages > sizeof vec || sys_failed(sys_call3(SYS_mincore, (long)p, (long)size, (long)vec)))
        return size;
    size_t n = 0;
    for (size_t i = 0; i < pages; i++)
        n += vec[i] & 1;
    return n * OS_PAGE_SIZE;
}

/* The address-space limit (RLIMIT_AS, `ulimit -v`) in bytes, or 0 if
 * there is none: under one, every byte mapped counts, touched or not. */
size_t os_address_space_limit(void)
{
    uint64_t lim[2] = {0, 0}; /* struct rlimit64: cur, max */
    long r = sys_call4(SYS_prlimit64, 0, EMMA_RLIMIT_AS, 0, (long)lim);
    if (sys_failed(r) || lim[0] == UINT64_MAX)
        return 0;
    return lim[0] != 0 && lim[0] <= SIZE_MAX ? (size_t)lim[0] : 1;
}

/* What emma has mapped now (emma_stats' bytes_mapped). */
size_t os_bytes_mapped(void)
{
    return atomic_load_explicit(&counters.bytes_mapped, memory_order_relaxed);
}

/* Give the memory back; the range stays mapped and reads as zeroes. */
void os_purge(void *p, size_t size)
{
    if (!size)
        return;
    count(&counters.purges, 1);
    count(&counters.bytes_purged, size);
    madvise_counted(p, size, EMMA_MADV_DONTNEED);
}

/* A forked child sees the range as zeroes (Linux 4.14); false if the
 * kernel cannot. */
bool os_wipe_on_fork(void *p, size_t size)
{
    return !sys_failed(madvise_counted(p, size, EMMA_MADV_WIPEONFORK));
}

/* Fault the range in, writable, in one system call (Linux 5.14; older
 * kernels say EINVAL and the pages fault in one by one when touched). */
void os_populate(void *p, size_t size)
{
    madvise_counted(p, size, EMMA_MADV_POPULATE_WRITE);
}

/* ------------------------------------------------------------------ */
/* Files: /proc/self/environ (options.c), and writing statistics. */

long os_write(int fd, const void *buf, size_t n)
{
    return sys_call3(SYS_write, fd, (long)buf, (long)n);
}

int os_open_read(const char *path)
{
    long r = sys_call4(SYS_openat, EMMA_AT_FDCWD, (long)path, EMMA_O_RDONLY_CLOEXEC, 0);
    return sys_failed(r) ? -1 : (int)r;
}

long os_read(int fd, void *buf, size_t n)
{
    long r;
    do {
        r = sys_call3(SYS_read, fd, (long)buf, (long)n);
    } while (r == -4); /* EINTR */
    return r;
}

void os_close(int fd) { sys_call1(SYS_close, fd); }

int os_dup_cloexec(int fd, int min_fd)
{
    long r = sys_call3(SYS_fcntl, fd, EMMA_F_DUPFD_CLOEXEC, min_fd);
    return sys_failed(r) ? -1 : (int)r;
}

static uint64_t monotonic_ns(void)
{
    struct {
        int64_t sec, nsec;
    } ts = {0, 0};
    sys_call2(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, (long)&ts);
    return (uint64_t)ts.sec * 1000000000u + (uint64_t)ts.nsec;
}

uint64_t os_tsc_per_ms(void)
{
    uint64_t t0 = monotonic_ns(), c0 = now_ticks(), t1, c1;
    do {
        t1 = monotonic_ns();
        c1 = now_ticks();
    } while (t1 - t0 < 1000000 && t1 >= t0);
    uint64_t ns = t1 > t0 ? t1 - t0 : 1;
    uint64_t per_ms = (c1 - c0) * 1000000 / ns;
    return per_ms ? per_ms : 1;
}

/* Where the next aligned mapping probably fits: just below the last one
 * (the kernel hands out addresses top-down). */
static _Atomic uintptr_t aligned_hint;

static void *map_at_hint(size_t size, size_t align)
{
    uintptr_t hint = atomic_load_explicit(&aligned_hint, memory_order_relaxed);
    if (hint == 0 || hint < size || (hint & (align - 1)))
        return NULL;
    uintptr_t want = hint - align_up(size, align);
    void *p = map_anon(want, size, 0);
    if (p && (uintptr_t)p != want) {
        os_unmap(p, size);
        return NULL;
    }
    return p;
}

static bool addrmap_reserve(const void *start, size_t size);

/* Map size bytes so that (start + offset) is aligned to align; the slack is
 * unmapped again. */
static void *map_aligned(size_t size, size_t align, size_t offset)
{
    if (offset == 0) {
        void *p = map_at_hint(size, align);
        if (p) {
            atomic_store_explicit(&aligned_hint, (uintptr_t)p, memory_order_relaxed);
            return p;
        }
    }
    size_t total = size + align;
    uint8_t *base = os_map(total);
    if (!base)
        return NULL;
    uintptr_t target = align_up((uintptr_t)base + offset, align) - offset;
    uint8_t *start = (uint8_t *)target;
    os_unmap(base, (size_t)(start - base));
    os_unmap(start + size, (size_t)(base + total - (start + size)));
    if (offset == 0)
        atomic_store_explicit(&aligned_hint, (uintptr_t)start, memory_order_relaxed);
    return start;
}

/* map_aligned, for a segment or huge mapping: with the address map's
 * leaves over the range mapped, so that marking it cannot fail; NULL when
 * either cannot be mapped.  *out_size receives the mapped length (== size). */
void *os_map_aligned(size_t size, size_t align, size_t offset, size_t *out_size)
{
    if (size > MAX_REQUEST || align > MAX_REQUEST - size)
        return NULL;
    if (out_size)
        *out_size = size;
    void *p = map_aligned(size, align, offset);
    if (p && !addrmap_reserve(p, size)) {
        os_unmap(p, size);
        return NULL;
    }
    return p;
}

/* size bytes (less than a segment) at a segment-aligned address, never
 * mapping more than size meanwhile: for when address space is too scarce
 * for map_aligned's slack (segment.c's partial segments, under RLIMIT_AS).
 * Tries the aligned addresses below the last aligned mapping, then those
 * at and below where the kernel puts size bytes.  MAP_FIXED_NOREPLACE
 * (Linux 4.17) never replaces a mapping; an older kernel takes it for a
 * hint, caught by comparing.  NULL when none is free or the kernel
 * refuses the mapping. */
#define PART_TRIES 8
void *os_map_aligned_part(size_t size)
{
    if (size == 0 || size > SEGMENT_SIZE)
        return NULL;
    uintptr_t from[2];
    from[0] = atomic_load_explicit(&aligned_hint, memory_order_relaxed) & ~(uintptr_t)SEGMENT_MASK;
    from[0] = from[0] ? from[0] - SEGMENT_SIZE : 0;
    void *probe = os_map(size);
    from[1] = probe ? (uintptr_t)probe & ~(uintptr_t)SEGMENT_MASK : 0;
    if (probe)
        os_unmap(probe, size);
    for (int s = 0; s < 2; s++)
        for (uintptr_t want = from[s], k = 0; want >= SEGMENT_SIZE && k < PART_TRIES;
             want -= SEGMENT_SIZE, k++) {
            count(&counters.mmap_calls, 1);
            long r = sys_call6(SYS_mmap, (long)want, (long)size, EMMA_PROT_RW,
                               EMMA_MAP_PRIVATE | EMMA_MAP_ANONYMOUS | EMMA_MAP_FIXED_NOREPLACE, -1, 0);
            if (sys_failed(r)) {
                if (r != -EMMA_EEXIST)
                    return NULL; /* out of address space or mappings */
                continue;
            }
            if ((uintptr_t)r != want) {
                sys_call2(SYS_munmap, r, (long)size);
                continue;
            }
            count_mapped(size);
            if (!addrmap_reserve((void *)r, size)) {
                os_unmap((void *)r, size);
                return NULL;
            }
            atomic_store_explicit(&aligned_hint, (uintptr_t)r, memory_order_relaxed);
            return (void *)r;
        }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Growing a mapping by moving it where address space is too scarce for
 * os_remap's usual move (under RLIMIT_AS): that one maps the whole aligned
 * destination before moving the old range into it, so the old and the new
 * size (and the alignment's slack) must fit under the limit at once, and a
 * block grown by realloc stopped well short of what glibc reaches
 * (bench/oomcap grow 256 64k: 148.4 MiB, glibc 255.8; 255.9 now).  The
 * kernel's own move-and-grow, mremap(MREMAP_MAYMOVE) without a
 * destination, is charged only for the growth, but lands at an address
 * aligned to its page (or 2 MiB), not to align.  So:
 *  1. mremap(p, old, S, MAYMOVE) with S = new + 2 align (then new + align
 *     if that does not fit): the kernel picks X; the old range is gone.
 *  2. A, the first address above X with A + offset aligned (the next one
 *     when the shift d = A - X would be under align / 4, so that the moves
 *     below stay few), is at most X + 2 align: [A, A + new) is inside.
 *  3. [X, X + new) is shifted up by d, top chunk first, in chunks of at
 *     most d (source and destination of one move may not overlap), with
 *     mremap(MREMAP_FIXED | MREMAP_DONTUNMAP): page tables move, nothing
 *     is copied, and the source stays mapped (empty) until the next chunk
 *     moves onto it.  MREMAP_FIXED replaces only pages of our own mapping,
 *     and no part of [X, X + S) is ever unmapped before the end, so there is
 *     never a hole another thread's mmap could take and we then overwrite.
 *     The kernel unmaps the destination before it charges the kept source:
 *     a move costs no address space.  The chunks keep their offsets in the
 *     original mapping and merge back into one mapping (Linux 6.18, checked
 *     in /proc/self/maps), so the block grows in place again later; were it
 *     left in pieces, os_remap's in-place growth would fail and the block
 *     would be moved again (or copied): slower, never wrong.
 *  4. [X, A) and [A + new, X + S) are unmapped.
 * Moving all new bytes, not just the old ones, is what lets the chunks
 * merge: the part past the old size has no pages, and moves at no cost.
 * Failures after step 1 (the address map's leaf cannot be mapped, or a move
 * is refused: vm.max_map_count) undo the moves done, then try os_remap's
 * usual move from X, else move the block back to p: only there, at the
 * limit and in a failure the kernel almost never gives, could another
 * thread have mapped the range p left meanwhile (MREMAP_FIXED would
 * replace it). */

/* MREMAP_DONTUNMAP works: 1 yes, 0 no (before Linux 5.7: EINVAL), -1 not
 * known yet.  Probed on one page before any block is moved, since a block
 * moved to X can go nowhere without it. */
static _Atomic int dontunmap_state = -1;

static bool dontunmap_works(void)
{
    int k = atomic_load_explicit(&dontunmap_state, memory_order_relaxed);
    if (k >= 0)
        return k;
    void *a = map_anon(0, OS_PAGE_SIZE, 0);
    if (!a)
        return false;
    count(&counters.mremap_calls, 1);
    long r = sys_call5(SYS_mremap, (long)a, OS_PAGE_SIZE, OS_PAGE_SIZE,
                       EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_DONTUNMAP, 0);
    if (!sys_failed(r)) {
        k = 1;
        count(&counters.munmap_calls, 1); /* never counted in bytes_mapped */
        sys_call2(SYS_munmap, r, OS_PAGE_SIZE);
    } else if (r == -EMMA_EINVAL) {
        k = 0;
    }
    os_unmap(a, OS_PAGE_SIZE);
    if (k >= 0)
        atomic_store_explicit(&dontunmap_state, k, memory_order_relaxed);
    return k > 0;
}

static bool shift_chunk(uintptr_t src, size_t len, uintptr_t dst)
{
    count(&counters.mremap_calls, 1);
    return !sys_failed(sys_call5(SYS_mremap, (long)src, (long)len, (long)len,
                                 EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED | EMMA_MREMAP_DONTUNMAP,
                                 (long)dst));
}

/* Shift [x, x + size) up by d (> 0) inside a mapping that covers
 * [x, x + size + d); false, with the chunks moved so far moved back, if
 * the kernel refused a move (*lost when even a move back was refused).
 * Every chunk but the lowest is d long, so the ones moved are too. */
static bool shift_up(uintptr_t x, size_t size, size_t d, bool *lost)
{
    size_t top = size;
    while (top > 0) {
        size_t len = top < d ? top : d;
        if (!shift_chunk(x + top - len, len, x + top - len + d))
            break;
        top -= len;
    }
    if (top == 0)
        return true;
    /* lowest first: its source is the one kept mapped, and empty */
    for (size_t at = top; at < size; at += d)
        if (!shift_chunk(x + at + d, d, x + at))
            *lost = true;
    return false;
}

static void *remap_scarce(void *p, size_t old_size, size_t new_size, size_t align, size_t offset)
{
    if (align > (MAX_REQUEST - new_size) / 2 || offset >= align || !dontunmap_works())
        return NULL;
    long r = -EMMA_ENOMEM;
    size_t total = 0;
    for (size_t k = 2; k >= 1 && r == -EMMA_ENOMEM; k--) {
        total = new_size + k * align;
        count(&counters.mremap_calls, 1);
        r = sys_call4(SYS_mremap, (long)p, (long)old_size, (long)total, EMMA_MREMAP_MAYMOVE);
    }
    if (sys_failed(r))
        return NULL;
    count_mapped(total - old_size);
    uintptr_t x = (uintptr_t)r, end = x + total;
    uintptr_t a = align_up(x + offset, align) - offset;
    if (a != x && a - x < align / 4 && a + align + new_size <= end)
        a += align;
    size_t d = a - x;
    bool lost = false;
    if (addrmap_reserve((void *)a, new_size) && (d == 0 || shift_up(x, new_size, d, &lost))) {
        os_unmap((void *)x, d);
        os_unmap((void *)(a + new_size), end - (a + new_size));
        return (void *)a;
    }
    if (lost)
        emma_fatal("realloc", "the kernel refused to move a block's pages back", p);
    /* the block is whole at x (perhaps in pieces: they move at one size
     * only, Linux 6.17): the usual move, else back to p */
    os_unmap((void *)(x + new_size), total - new_size);
    void *dst = os_map_aligned(new_size, align, offset, NULL);
    if (dst) {
        count(&counters.mremap_calls, 1);
        r = sys_call5(SYS_mremap, (long)x, (long)new_size, (long)new_size,
                      EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED, (long)dst);
        if (!sys_failed(r)) {
            count_unmapped(new_size);
            return dst;
        }
        os_unmap(dst, new_size);
    }
    os_unmap((void *)(x + old_size), new_size - old_size);
    count(&counters.mremap_calls, 1);
    r = sys_call5(SYS_mremap, (long)x, (long)old_size, (long)old_size,
                  EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED, (long)p);
    if (sys_failed(r))
        emma_fatal("realloc", "the kernel refused to move a block back", p);
    return NULL;
}

/* Resize a mapping whose start + offset must stay aligned to align: in place when the
 * kernel can, otherwise moved (page tables only, nothing is copied) to a
 * freshly reserved aligned range, or where that does not fit (RLIMIT_AS),
 * by remap_scarce. */
void *os_remap(void *p, size_t old_size, size_t new_size, size_t align, size_t offset,
               bool pieces)
{
    long r;
    /* growing in place needs the address map's leaves over the new extent
     * (os_map_aligned maps them for a moved one); a range the kernel holds
     * as several mappings (pieces) neither grows in place nor moves with
     * a new size */
    if (pieces && new_size > old_size)
        goto moved;
    if (new_size <= old_size || addrmap_reserve(p, new_size)) {
        count(&counters.mremap_calls, 1);
        r = sys_call4(SYS_mremap, (long)p, (long)old_size, (long)new_size, 0);
        if (!sys_failed(r)) {
            if (new_size >= old_size)
                count_mapped(new_size - old_size);
            else
                count_unmapped(old_size - new_size);
            return p;
        }
    }
    if (new_size < old_size)
        return NULL;
moved:;
    void *dst = os_map_aligned(new_size, align, offset, NULL);
    if (!dst)
        return pieces ? NULL : remap_scarce(p, old_size, new_size, align, offset);
    r = -1;
    if (!pieces) {
        count(&counters.mremap_calls, 1);
        r = sys_call5(SYS_mremap, (long)p, (long)old_size, (long)new_size,
                      EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED, (long)dst);
    }
    if (sys_failed(r)) {
        /* a range the kernel holds as several mappings (pages huge.c
         * gathered from others) moves only at its size (Linux 6.17),
         * into the start of dst */
        count(&counters.mremap_calls, 1);
        r = sys_call5(SYS_mremap, (long)p, (long)old_size, (long)old_size,
                      EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED, (long)dst);
        if (sys_failed(r)) {
            os_unmap(dst, new_size);
            return NULL;
        }
    }
    count_unmapped(old_size); /* the old range is gone, dst was counted */
    return dst;
}

/* Move the pages of [src, src + len) to dst, replacing what was mapped
 * there, and leave a hole at src: page tables move, no page is copied,
 * zeroed or faulted in.  1 when moved; else the kernel refused (before
 * Linux 6.17 a move may not span two mappings, and this one may, see
 * huge.c) and src is left as it may be: 0 when dst is mapped again
 * (empty), -1 when not even that worked. */
int os_move_pages(void *src, size_t len, void *dst)
{
    count(&counters.mremap_calls, 1);
    long r = sys_call5(SYS_mremap, (long)src, (long)len, (long)len,
                       EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED, (long)dst);
    if (!sys_failed(r)) {
        count_unmapped(len); /* the hole at src */
        return 1;
    }
    count(&counters.mmap_calls, 1);
    r = sys_call6(SYS_mmap, (long)dst, (long)len, EMMA_PROT_RW,
                  EMMA_MAP_PRIVATE | EMMA_MAP_ANONYMOUS | EMMA_MAP_FIXED, -1, 0);
    return sys_failed(r) ? -1 : 0;
}

void os_yield(void) { sys_call1(SYS_sched_yield, 0); }

/* Block every signal (the kernel keeps SIGKILL and SIGSTOP), the old mask
 * in *old; os_signals_restore puts it back. */
void os_signals_block(uint64_t *old)
{
    uint64_t all = ~(uint64_t)0;
    if (sys_call4(SYS_rt_sigprocmask, EMMA_SIG_BLOCK, (long)&all, (long)old, sizeof all) != 0)
        *old = 0;
}

void os_signals_restore(const uint64_t *old)
{
    sys_call4(SYS_rt_sigprocmask, EMMA_SIG_SETMASK, (long)old, 0, sizeof *old);
}

int32_t os_getpid(void) { return (int32_t)sys_call1(SYS_getpid, 0); }

uint32_t os_gettid(void) { return (uint32_t)sys_call1(SYS_gettid, 0); }

/* Signal 0 to the TID within our own thread group: ESRCH means no such
 * thread in this process (a thread of another process that got the TID
 * cannot fool it). */
bool os_thread_gone(uint32_t tid)
{
    return sys_call3(SYS_tgkill, os_getpid(), (long)tid, 0) == -EMMA_ESRCH;
}

bool os_on_altstack(uintptr_t *lo, uintptr_t *hi)
{
    struct {
        void *sp;
        int flags;
        size_t size;
    } ss = {0};
    *lo = *hi = 0;
    if (sys_call2(SYS_sigaltstack, 0, (long)&ss) != 0)
        return true; /* cannot tell: as if on it (callers then wait) */
    if (!(ss.flags & 2)) { /* not SS_DISABLE */
        *lo = (uintptr_t)ss.sp;
        *hi = *lo + ss.size;
    }
    return ss.flags & 1; /* SS_ONSTACK */
}

/* Does a seccomp mode (strict, or a filter that could kill us for a PI
 * futex call) confine this thread? */
bool os_seccomp_active(void)
{
    long mode = sys_call2(SYS_prctl, EMMA_PR_GET_SECCOMP, 0);
    return mode == EMMA_SECCOMP_MODE_FILTER || mode == EMMA_SECCOMP_MODE_STRICT;
}

enum os_pi_result os_futex_trylock_pi(_Atomic uint32_t *word)
{
    long r = sys_call4(SYS_futex, (long)word, EMMA_FUTEX_TRYLOCK_PI, 0, 0);
    if (r == 0)
        return OS_PI_TAKEN;
    if (r == -EMMA_ESRCH)
        return OS_PI_OWNER_DEAD;
    if (r == -EMMA_EDEADLK)
        return OS_PI_SELF;
    if (r == -EMMA_ENOSYS || r == -EMMA_EPERM || r == -EMMA_EINVAL)
        return OS_PI_UNSUPPORTED;
    return OS_PI_BUSY;
}

/* Copy n bytes from src, which another thread may be unmapping: false
 * instead of a fault when src is not mapped.  process_vm_readv(2) on our
 * own process; where it is unavailable (ENOSYS, EPERM) or a seccomp filter
 * might kill us for trying, a plain copy (the fault stays possible there). */
bool os_read_safe(void *dst, const void *src, size_t n)
{
    static _Atomic int direct = -1; /* -1 unknown, 0 syscall, 1 plain copy */
    int d = atomic_load_explicit(&direct, memory_order_relaxed);
    if (d < 0) {
        d = os_seccomp_active();
        atomic_store_explicit(&direct, d, memory_order_relaxed);
    }
    if (!d) {
        struct {
            void *base;
            size_t len;
        } local = {dst, n}, remote = {(void *)src, n};
        long r = sys_call6(SYS_process_vm_readv, os_getpid(), (long)&local, 1, (long)&remote, 1, 0);
        if (r == (long)n)
            return true;
        if (r != -EMMA_ENOSYS && r != -EMMA_EPERM)
            return false;
        atomic_store_explicit(&direct, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)dst)[i] = ((const volatile uint8_t *)src)[i];
    return true;
}

/* membarrier(2): MEMBARRIER_CMD_PRIVATE_EXPEDITED (Linux 4.14), which
 * needs the process registered once (a fork child's new address space
 * needs it again: EPERM until then). */
#define EMMA_MEMBARRIER_PRIVATE_EXPEDITED 8
#define EMMA_MEMBARRIER_REGISTER_PRIVATE_EXPEDITED 16
bool os_membarrier(void)
{
    static _Atomic int usable = -1; /* -1 unknown, 0 no, 1 yes */
    int u = atomic_load_explicit(&usable, memory_order_relaxed);
    if (u < 0) {
        u = !os_seccomp_active();
        atomic_store_explicit(&usable, u, memory_order_relaxed);
    }
    if (!u)
        return false;
    for (int k = 0; k < 2; k++) {
        long r = sys_call3(SYS_membarrier, EMMA_MEMBARRIER_PRIVATE_EXPEDITED, 0, 0);
        if (r == 0)
            return true;
        if (r != -EMMA_EPERM || k == 1 ||
            sys_failed(sys_call3(SYS_membarrier, EMMA_MEMBARRIER_REGISTER_PRIVATE_EXPEDITED, 0, 0)))
            break;
    }
    atomic_store_explicit(&usable, 0, memory_order_relaxed);
    return false;
}

void os_write_stderr(const char *s, size_t n) { sys_call3(SYS_write, 2, (long)s, (long)n); }

/* Unblock and raise SIGABRT for this thread; if that somehow returns,
 * leave with the conventional status. */
void os_abort(void)
{
    uint64_t set = (uint64_t)1 << (EMMA_SIGABRT - 1);
    sys_call4(SYS_rt_sigprocmask, EMMA_SIG_UNBLOCK, (long)&set, 0, sizeof set);
    sys_call3(SYS_tgkill, os_getpid(), (long)os_gettid(), EMMA_SIGABRT);
    sys_call1(SYS_exit_group, 127);
    __builtin_unreachable();
}

uintptr_t os_secret(void)
{
    static uintptr_t secret;
    uintptr_t s = __atomic_load_n(&secret, __ATOMIC_RELAXED);
    if (!s) {
        s = (uintptr_t)now_ticks() * GOLDEN_RATIO_64;
        s ^= (uintptr_t)&secret;
        s |= 1;
        uintptr_t expected = 0;
        if (!__atomic_compare_exchange_n(&secret, &expected, s, false, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED))
            s = expected;
    }
    return s;
}

/* ------------------------------------------------------------------ */
/* The address map of emma's memory: two bytes per 4 MiB chunk of the
 * 47-bit user address space, in two levels so that it costs address space
 * in proportion to what emma uses (RLIMIT_AS counts every byte reserved):
 * a top level of 1024 leaf pointers in this copy's .bss (8 KiB), and leaves
 * of 64 KiB, each covering 128 GiB, mapped when a segment or huge mapping
 * first lands in their range (os_map_aligned and os_remap map them before
 * handing a range out, so marking it cannot fail).  A leaf stays mapped
 * until emma_teardown, so a lookup (acquire load of the top level, then of
 * the entry) never reads unmapped memory, whatever another thread unmaps;
 * a missing leaf reads as "not emma's".  It answers emma_owns() and lets
 * boundary checks reject a foreign pointer before reading any header. */

#define ADDRMAP_CHUNKS ((size_t)1 << (47 - SEGMENT_SHIFT))
#define ADDRMAP_LEAF_SHIFT 15
#define ADDRMAP_LEAF_CHUNKS ((size_t)1 << ADDRMAP_LEAF_SHIFT)
#define ADDRMAP_LEAVES (ADDRMAP_CHUNKS >> ADDRMAP_LEAF_SHIFT)
/* Each entry: the chunk's kind (CHUNK_*) in the low two bits, and above
 * them how many OS pages of the chunk are mapped, 0 for all of them: the
 * extent of every mapping is known here, out of band, so emma_owns() and
 * the checks never read a header that another thread may be unmapping. */
typedef uint16_t addrmap_entry;
#define ADDRMAP_KIND 3u
#define ADDRMAP_PAGES_SHIFT 2
#define ADDRMAP_LEAF_BYTES (ADDRMAP_LEAF_CHUNKS * sizeof(addrmap_entry))
static _Atomic(addrmap_entry *) addrmap_top[ADDRMAP_LEAVES];

/* Chunk c's entry (c < ADDRMAP_CHUNKS); NULL if its leaf is not mapped. */
static inline addrmap_entry *addrmap_slot(uintptr_t c)
{
    addrmap_entry *leaf =
        atomic_load_explicit(&addrmap_top[c >> ADDRMAP_LEAF_SHIFT], memory_order_acquire);
    return leaf ? &leaf[c & (ADDRMAP_LEAF_CHUNKS - 1)] : NULL;
}

static inline unsigned addrmap_entry_of(uintptr_t c)
{
    addrmap_entry *e = c < ADDRMAP_CHUNKS ? addrmap_slot(c) : NULL;
    return e ? __atomic_load_n(e, __ATOMIC_ACQUIRE) : CHUNK_NONE;
}

/* Map leaf i unless it is; false if the kernel refuses (RLIMIT_AS,
 * vm.max_map_count).  Lock-free: of two threads racing, the loser unmaps
 * its copy. */
static bool addrmap_leaf_make(size_t i)
{
    if (atomic_load_explicit(&addrmap_top[i], memory_order_acquire))
        return true;
    addrmap_entry *m = map_anon(0, ADDRMAP_LEAF_BYTES, EMMA_MAP_NORESERVE);
    if (!m)
        return false;
    addrmap_entry *expected = NULL;
    if (!atomic_compare_exchange_strong(&addrmap_top[i], &expected, m)) {
        count(&counters.munmap_calls, 1); /* not in bytes_mapped (NORESERVE) */
        sys_call2(SYS_munmap, (long)m, (long)ADDRMAP_LEAF_BYTES);
    }
    return true;
}

/* Map the leaves covering [start, start + size); false if one cannot be. */
static bool addrmap_reserve(const void *start, size_t size)
{
    uintptr_t c = (uintptr_t)start >> SEGMENT_SHIFT;
    uintptr_t end = ((uintptr_t)start + size - 1) >> SEGMENT_SHIFT;
    if (size == 0 || end >= ADDRMAP_CHUNKS || end < c)
        return false;
    for (uintptr_t i = c >> ADDRMAP_LEAF_SHIFT; i <= end >> ADDRMAP_LEAF_SHIFT; i++)
        if (!addrmap_leaf_make(i))
            return false;
    return true;
}

/* Lowest and highest chunk ever marked, so that a walk (stats.c) reads
 * only the part of the map emma has used. */
static _Atomic uintptr_t addrmap_lo = UINTPTR_MAX, addrmap_hi;

static void addrmap_widen(uintptr_t c)
{
    uintptr_t lo = atomic_load_explicit(&addrmap_lo, memory_order_relaxed);
    while (c < lo && !atomic_compare_exchange_weak_explicit(&addrmap_lo, &lo, c, memory_order_relaxed,
                                                            memory_order_relaxed))
        ;
    uintptr_t hi = atomic_load_explicit(&addrmap_hi, memory_order_relaxed);
    while (c > hi && !atomic_compare_exchange_weak_explicit(&addrmap_hi, &hi, c, memory_order_relaxed,
                                                            memory_order_relaxed))
        ;
}

bool addrmap_range(uintptr_t *lo, uintptr_t *hi)
{
    *lo = atomic_load_explicit(&addrmap_lo, memory_order_acquire);
    *hi = atomic_load_explicit(&addrmap_hi, memory_order_acquire);
    return *lo <= *hi;
}

/* The kind (CHUNK_*) of chunk c. */
unsigned addrmap_chunk(uintptr_t c) { return addrmap_entry_of(c) & ADDRMAP_KIND; }

/* Marking maps the leaves it needs (normally there already: see
 * os_map_aligned); clearing skips chunks whose leaf was never mapped. */
static bool addrmap_fill(void *start, size_t size, unsigned first, unsigned rest)
{
    if (first != CHUNK_NONE && !addrmap_reserve(start, size))
        return false;
    uintptr_t c = (uintptr_t)start >> SEGMENT_SHIFT;
    uintptr_t end = ((uintptr_t)start + size - 1) >> SEGMENT_SHIFT;
    if (size == 0 || end >= ADDRMAP_CHUNKS)
        return false;
    if (first != CHUNK_NONE)
        addrmap_widen(c);
    /* the last chunk may be mapped in part (huge mappings) */
    size_t tail = (((uintptr_t)start + size - 1) & SEGMENT_MASK) / OS_PAGE_SIZE + 1;
    unsigned tail_pages = tail == SEGMENT_SIZE / OS_PAGE_SIZE || first == CHUNK_NONE
                              ? 0 : (unsigned)tail << ADDRMAP_PAGES_SHIFT;
    for (uintptr_t k = c; k <= end; k++) {
        addrmap_entry *e = addrmap_slot(k);
        if (e)
            __atomic_store_n(e, (addrmap_entry)((k == c ? first : rest) | (k == end ? tail_pages : 0)),
                             __ATOMIC_RELEASE);
    }
    return true;
}

bool addrmap_mark(void *start, size_t size, bool header)
{
    return addrmap_fill(start, size, header ? CHUNK_HEADER : CHUNK_INTERIOR, CHUNK_INTERIOR);
}

void addrmap_clear(void *start, size_t size) { (void)addrmap_fill(start, size, CHUNK_NONE, CHUNK_NONE); }

/* A huge mapping: a header like a segment's, but marked apart (see
 * observe.h). */
bool addrmap_mark_huge(void *start, size_t size)
{
    return addrmap_fill(start, size, CHUNK_HUGE, CHUNK_INTERIOR);
}

/* The segment (or huge mapping) whose mapped extent contains p, or NULL;
 * from the map alone. */
segment_t *addrmap_segment(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uintptr_t c = a >> SEGMENT_SHIFT;
    unsigned e = addrmap_entry_of(c);
    size_t pages = e >> ADDRMAP_PAGES_SHIFT;
    if ((e & ADDRMAP_KIND) == CHUNK_NONE || (pages && (a & SEGMENT_MASK) >= pages * OS_PAGE_SIZE))
        return NULL;
    while ((e & ADDRMAP_KIND) == CHUNK_INTERIOR && c > 0)
        e = addrmap_entry_of(--c);
    unsigned kind = e & ADDRMAP_KIND;
    return kind == CHUNK_HEADER || kind == CHUNK_HUGE ? (segment_t *)(c << SEGMENT_SHIFT) : NULL;
}

/* Classify the chunk holding p, the way segment_of() maps blocks: a block
 * that starts exactly at a chunk boundary belongs to the chunk below. */
unsigned addrmap_lookup(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    return a == 0 ? CHUNK_NONE : addrmap_entry_of((a - 1) >> SEGMENT_SHIFT) & ADDRMAP_KIND;
}

/* addrmap_lookup(p) and addrmap_segment(p), from one entry when p is
 * inside a chunk that holds a header (every block of a segment or huge
 * mapping but one at a chunk's very start). */
unsigned addrmap_check(const void *p, segment_t **seg)
{
    uintptr_t a = (uintptr_t)p, c = a >> SEGMENT_SHIFT;
    if (likely((a & SEGMENT_MASK) != 0 && c < ADDRMAP_CHUNKS)) {
        addrmap_entry *e = addrmap_slot(c);
        unsigned v = e ? __atomic_load_n(e, __ATOMIC_ACQUIRE) : CHUNK_NONE;
        unsigned kind = v & ADDRMAP_KIND;
        size_t pages = v >> ADDRMAP_PAGES_SHIFT;
        if (kind == CHUNK_HEADER || kind == CHUNK_HUGE) {
            bool inside = !pages || (a & SEGMENT_MASK) < pages * OS_PAGE_SIZE;
            *seg = inside ? (segment_t *)(c << SEGMENT_SHIFT) : NULL;
            return kind;
        }
        if (kind == CHUNK_NONE) {
            *seg = NULL;
            return kind;
        }
    }
    *seg = addrmap_segment(p);
    return addrmap_lookup(p);
}

/* Call fn on every segment and huge mapping in the map while it returns
 * true; false if it ever returned false.  For emma_teardown only: nothing
 * may map or unmap meanwhile. */
bool addrmap_walk(bool (*fn)(segment_t *, void *), void *arg)
{
    uintptr_t lo, hi;
    if (!addrmap_range(&lo, &hi))
        return true;
    for (uintptr_t c = lo; c <= hi; c++) {
        unsigned kind = addrmap_chunk(c);
        if ((kind == CHUNK_HEADER || kind == CHUNK_HUGE) &&
            !fn((segment_t *)(c << SEGMENT_SHIFT), arg))
            return false;
    }
    return true;
}

/* emma_teardown: unmap every leaf (the next mark maps them again). */
void addrmap_teardown(void)
{
    for (size_t i = 0; i < ADDRMAP_LEAVES; i++) {
        addrmap_entry *leaf = atomic_exchange(&addrmap_top[i], NULL);
        if (leaf) {
            count(&counters.munmap_calls, 1); /* not in bytes_mapped (NORESERVE) */
            sys_call2(SYS_munmap, (long)leaf, (long)ADDRMAP_LEAF_BYTES);
        }
    }
    atomic_store(&addrmap_lo, UINTPTR_MAX);
    atomic_store(&addrmap_hi, 0);
    atomic_store(&aligned_hint, 0);
}

/* This copy's ELF destructor (.fini_array), run when the object containing
 * it is unloaded (dlclose) and at exit: teardown.c's copy_finish prints the
 * statistics if asked, then unmaps everything if no block is live.  Here,
 * in the object every link pulls in, so that a static link keeps it. */
__attribute__((destructor)) static void os_unload(void) { copy_finish(); }

/* The operating-system layer: every mapping emma makes goes through here,
 * along with errno interop and the registry of emma's own address ranges.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "emma_internal.h"

/* errno lives in libc.  A weak reference resolves to libc's accessor when
 * one is loaded (LD_PRELOAD, -lemma in a normal program) and stays NULL in a
 * libc-free process, where errno simply does not exist. */
extern int *__errno_location(void) __attribute__((weak));

void os_set_errno(int e)
{
    if (__errno_location)
        *__errno_location() = e;
}

void *os_map(size_t size)
{
    long r = sys_call6(SYS_mmap, 0, (long)size, EMMA_PROT_RW,
                       EMMA_MAP_PRIVATE | EMMA_MAP_ANONYMOUS, -1, 0);
    return sys_failed(r) ? NULL : (void *)r;
}

void os_unmap(void *p, size_t size)
{
    if (size)
        sys_call2(SYS_munmap, (long)p, (long)size);
}

void os_purge(void *p, size_t size)
{
    if (size)
        sys_call3(SYS_madvise, (long)p, (long)size, EMMA_MADV_DONTNEED);
}

static inline uintptr_t align_up(uintptr_t x, size_t a) { return (x + a - 1) & ~(uintptr_t)(a - 1); }

/* Where the next aligned mapping probably fits: just below the last one
 * (the kernel hands out addresses top-down). */
static _Atomic uintptr_t aligned_hint;

static void *map_at_hint(size_t size, size_t align)
{
    uintptr_t hint = atomic_load_explicit(&aligned_hint, memory_order_relaxed);
    if (hint == 0 || hint < size || (hint & (align - 1)))
        return NULL;
    uintptr_t want = hint - ((size + align - 1) & ~(uintptr_t)(align - 1));
    long r = sys_call6(SYS_mmap, (long)want, (long)size, EMMA_PROT_RW,
                       EMMA_MAP_PRIVATE | EMMA_MAP_ANONYMOUS, -1, 0);
    if (sys_failed(r))
        return NULL;
    if ((uintptr_t)r != want) {
        os_unmap((void *)r, size);
        return NULL;
    }
    return (void *)r;
}

/* Map size bytes so that (start + offset) is aligned to align; the slack is
 * unmapped again.  *out_size receives the mapped length (== size). */
void *os_map_aligned(size_t size, size_t align, size_t offset, size_t *out_size)
{
    if (size > MAX_REQUEST || align > MAX_REQUEST - size)
        return NULL;
    if (out_size)
        *out_size = size;
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

/* Resize a mapping whose start + offset must stay aligned to align: in place when the
 * kernel can, otherwise moved (page tables only, nothing is copied) to a
 * freshly reserved aligned range. */
void *os_remap(void *p, size_t old_size, size_t new_size, size_t align, size_t offset)
{
    long r = sys_call4(SYS_mremap, (long)p, (long)old_size, (long)new_size, 0);
    if (!sys_failed(r))
        return p;
    if (new_size < old_size)
        return NULL;
    void *dst = os_map_aligned(new_size, align, offset, NULL);
    if (!dst)
        return NULL;
    r = sys_call5(SYS_mremap, (long)p, (long)old_size, (long)new_size,
                  EMMA_MREMAP_MAYMOVE | EMMA_MREMAP_FIXED, (long)dst);
    if (sys_failed(r)) {
        os_unmap(dst, new_size);
        return NULL;
    }
    return dst;
}

void os_yield(void) { sys_call1(SYS_sched_yield, 0); }

uint32_t os_gettid(void) { return (uint32_t)sys_call1(SYS_gettid, 0); }

uintptr_t os_secret(void)
{
    static uintptr_t secret;
    uintptr_t s = __atomic_load_n(&secret, __ATOMIC_RELAXED);
    if (!s) {
        uint32_t lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        s = (((uintptr_t)hi << 32) | lo) * 0x9e3779b97f4a7c15ull;
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
/* Registry of emma's address space: one byte per 4 MiB chunk of the
 * 47-bit user address space (32 MiB reserved, touched only where emma has
 * memory).  It answers emma_owns() and lets boundary checks reject a
 * foreign pointer before reading any header. */

#define REGISTRY_CHUNKS ((size_t)1 << (47 - SEGMENT_SHIFT))
static _Atomic(uint8_t *) registry;

static uint8_t *registry_get(bool create)
{
    uint8_t *r = atomic_load_explicit(&registry, memory_order_acquire);
    if (r || !create)
        return r;
    long m = sys_call6(SYS_mmap, 0, (long)REGISTRY_CHUNKS, EMMA_PROT_RW,
                       EMMA_MAP_PRIVATE | EMMA_MAP_ANONYMOUS | EMMA_MAP_NORESERVE, -1, 0);
    if (sys_failed(m))
        return NULL;
    uint8_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&registry, &expected, (uint8_t *)m)) {
        os_unmap((void *)m, REGISTRY_CHUNKS);
        return expected;
    }
    return (uint8_t *)m;
}

static void registry_fill(void *start, size_t size, uint8_t first, uint8_t rest)
{
    uint8_t *r = registry_get(first != CHUNK_NONE);
    if (!r)
        return;
    uintptr_t c = (uintptr_t)start >> SEGMENT_SHIFT;
    uintptr_t end = ((uintptr_t)start + size - 1) >> SEGMENT_SHIFT;
    if (end >= REGISTRY_CHUNKS)
        return;
    __atomic_store_n(&r[c], first, __ATOMIC_RELEASE);
    for (c++; c <= end; c++)
        __atomic_store_n(&r[c], rest, __ATOMIC_RELEASE);
}

bool registry_mark(void *start, size_t size, bool header)
{
    registry_fill(start, size, header ? CHUNK_HEADER : CHUNK_INTERIOR, CHUNK_INTERIOR);
    return registry_get(false) != NULL;
}

void registry_clear(void *start, size_t size) { registry_fill(start, size, CHUNK_NONE, CHUNK_NONE); }

/* The segment (or huge mapping) whose mapped extent contains p, or NULL. */
segment_t *registry_segment(const void *p)
{
    uint8_t *r = registry_get(false);
    uintptr_t a = (uintptr_t)p;
    uintptr_t c = a >> SEGMENT_SHIFT;
    if (!r || c >= REGISTRY_CHUNKS)
        return NULL;
    unsigned cls;
    while ((cls = __atomic_load_n(&r[c], __ATOMIC_ACQUIRE)) == CHUNK_INTERIOR && c > 0)
        c--;
    if (cls != CHUNK_HEADER)
        return NULL;
    segment_t *seg = (segment_t *)(c << SEGMENT_SHIFT);
    return a < (uintptr_t)seg + seg->map_size ? seg : NULL;
}

/* Classify the chunk holding p, the way segment_of() maps blocks: a block
 * that starts exactly at a chunk boundary belongs to the chunk below. */
unsigned registry_lookup(const void *p)
{
    uint8_t *r = registry_get(false);
    uintptr_t a = (uintptr_t)p;
    if (!r || a == 0)
        return CHUNK_NONE;
    uintptr_t c = (a - 1) >> SEGMENT_SHIFT;
    if (c >= REGISTRY_CHUNKS)
        return CHUNK_NONE;
    return __atomic_load_n(&r[c], __ATOMIC_ACQUIRE);
}

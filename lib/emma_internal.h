/* emma internals: the one private header shared by every file in lib/.
 *
 * Map of the core objects
 * -----------------------
 *   segment  4 MiB of address space, 4 MiB aligned, from one mmap.  Its
 *            header (struct segment) sits at the start and holds all the
 *            metadata of the memory behind it, out of band: the owner heap,
 *            the page size and one struct page per page.  Any block pointer
 *            p finds its segment as (p - 1) & ~(SEGMENT_SIZE - 1) and its
 *            page as (p - segment) >> page_shift.  ("p - 1" lets a huge block
 *            that is itself 4 MiB aligned keep its header 4 MiB below it.)
 *   page     a run of equal-sized blocks of one size class, with three free
 *            lists: `free` (allocate from here; the owner frees onto it, so
 *            a freed block is reused first, while still cached),
 *            `thread_free` (lock-free stack of frees by other threads) and
 *            `local_free` (where the owner collects thread_free).  Segment
 *            kinds fix the page size:
 *              small   64 KiB pages, 64 per segment, blocks <= 8 KiB
 *              medium 512 KiB pages,  8 per segment, blocks <= 64 KiB
 *              large    1 MiB pages,  4 per segment, blocks <= 512 KiB
 *              xlarge   4 MiB page,   1 per segment, blocks <= 1 MiB
 *              huge     one block of any size, its own mapping (mremap-able)
 *   heap     what one thread allocates from: per size class a queue of pages
 *            with free blocks, a direct table for sizes <= 1 KiB so the fast
 *            path is one load and one pop, the segments it owns, and a
 *            lock-free stack of its pages that other threads freed into.
 *            With TLS every thread owns one heap (found through one
 *            initial-exec TLS pointer); without TLS heaps are shared and
 *            each has a lock.
 *
 * Build variants (configure switches become constants so both branches are
 * always compiled and the optimiser removes the dead one):
 *   config_tls     per-thread heaps, no lock and no atomic on the owner's
 *                  fast path; cost: 8 bytes of TLS per thread.
 *   config_checks  every pointer/size/alignment at the API is validated
 *                  (a few loads and compares per call); misuse aborts.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef EMMA_INTERNAL_H
#define EMMA_INTERNAL_H

#include "config.h"
#include "namespace.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>

#include "syscall.h"

#define EMMA_HIDDEN __attribute__((visibility("hidden")))
#define EMMA_NOINLINE __attribute__((noinline))
#define EMMA_NORETURN __attribute__((noreturn))
#define EMMA_COLD __attribute__((cold))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

static const bool config_tls = EMMA_CONFIG_TLS;
static const bool config_checks = EMMA_CONFIG_CHECKS;

/* ------------------------------------------------------------------ */
/* Sizes                                                               */

#define OS_PAGE_SIZE ((size_t)4096)
#define SEGMENT_SHIFT 22
#define SEGMENT_SIZE ((size_t)1 << SEGMENT_SHIFT)
#define SEGMENT_MASK (SEGMENT_SIZE - 1)

#define MIN_ALIGN ((size_t)16)
#define SMALL_MAX ((size_t)8 << 10)    /* blocks in 64 KiB pages */
#define MEDIUM_MAX ((size_t)64 << 10)  /* blocks in 512 KiB pages */
#define LARGE_PAGE_MAX ((size_t)512 << 10) /* blocks in 1 MiB pages */
#define LARGE_MAX ((size_t)1 << 20)    /* blocks in one 4 MiB page */
#define DIRECT_MAX ((size_t)1024)      /* sizes served by heap->direct */
#define DIRECT_COUNT (DIRECT_MAX / 16 + 1)
#define MAX_REQUEST ((size_t)PTRDIFF_MAX - 2 * SEGMENT_SIZE)

/* Size classes: 16..128 in steps of 16, then 4 classes per doubling up to
 * 1 MiB (internal waste at most 25%).  Class 0 is unused. */
#define CLASS_COUNT 61
#define CLASS_HUGE 0

enum segment_kind { KIND_SMALL, KIND_MEDIUM, KIND_LARGE, KIND_XLARGE, KIND_HUGE, KIND_COUNT };

static inline unsigned log2_floor(size_t x) { return 63u - (unsigned)__builtin_clzll(x); }

/* Without -mpopcnt, __builtin_popcountll would call into libgcc. */
static inline size_t bit_count(uint64_t x)
{
    size_t n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

static inline unsigned class_of_size(size_t size)
{
    if (size <= 128)
        return size == 0 ? 1 : (unsigned)((size + 15) >> 4);
    unsigned k = log2_floor(size - 1);
    return 8 + (k - 7) * 4 + (unsigned)((size - 1 - ((size_t)1 << k)) >> (k - 2)) + 1;
}

static inline size_t class_size(unsigned c)
{
    if (c <= 8)
        return (size_t)c << 4;
    unsigned g = (c - 9) / 4, i = (c - 9) % 4;
    return ((size_t)1 << (7 + g)) + ((size_t)(i + 1) << (5 + g));
}

/* Largest power of two dividing the class size: every block of the class
 * is aligned to it. */
static inline size_t class_align(unsigned c)
{
    size_t s = class_size(c);
    return s & (~s + 1);
}

static inline enum segment_kind class_kind(unsigned c)
{
    size_t s = class_size(c);
    return s <= SMALL_MAX    ? KIND_SMALL
           : s <= MEDIUM_MAX ? KIND_MEDIUM
           : s <= LARGE_PAGE_MAX ? KIND_LARGE
                                 : KIND_XLARGE;
}

EMMA_HIDDEN unsigned class_for(size_t size, size_t align);

/* ------------------------------------------------------------------ */
/* Pages, segments, heaps                                              */

typedef struct block {
    struct block *next;
} block_t;

struct heap;

/* The first cache line holds what the owner touches on every allocation
 * and free; other threads' frees write only the second, so a consumer
 * freeing into the page a producer allocates from does not make their
 * cores fight over one line. */
typedef struct page {
    block_t *free;               /* allocation list (fast path) */
    uint32_t used;               /* blocks out, including unseen remote frees */
    uint32_t slow_mark;          /* a local free taking `used` here needs the slow path */
    uint8_t in_full;             /* no free block: not in its bin */
    uint8_t in_use;              /* assigned to a size class */
    uint8_t class_idx;
    uint8_t page_idx;
    uint32_t block_size;
    block_t *local_free;         /* collected frees of other threads */
    uint8_t *start;              /* first block */
    uint32_t capacity;           /* blocks carved out so far */
    uint32_t reserved;           /* blocks that fit */
    struct page *next, *prev;    /* bin queue */
    /* second cache line: other threads, and rarely used state */
    _Alignas(64) _Atomic(block_t *) thread_free; /* frees by other threads */
    struct page *remote_next;    /* link in heap->remote_pages */
    uint32_t dirty;              /* free page: bytes that may be resident */
    uint32_t absent;             /* blocks purged off the free list (compact.c) */
    uint64_t freed_at;           /* free page: when (now_ticks) */
    uint32_t compacted_used;     /* `used` when compact.c last scanned the page */
    uint32_t sparse_since;       /* compact.c pass that first saw it sparse, or 0 */
    uint16_t purged;             /* OS pages whose blocks are absent (small pages) */
    uint8_t parked;              /* in heap->parked: sparse, left to drain */
} page_t;

typedef struct segment {
    struct heap *heap;           /* owner; NULL for huge */
    uint8_t kind;
    uint8_t page_shift;
    uint16_t page_count;
    uint16_t used_pages;
    uint16_t flags;              /* huge: SEG_THP */
    uint64_t free_mask;          /* pages not in use */
    uint64_t dirty_mask;         /* free pages that may hold resident memory */
    size_t map_size;             /* bytes mapped from the segment start */
    uintptr_t cookie;            /* address ^ secret: validates headers */
    struct segment *next, *prev; /* heap's segments with free pages */
    struct heap *origin;         /* huge: the heap that allocated it */
    page_t pages[];
} segment_t;

/* segment_t.flags: a huge mapping advised to use transparent huge pages */
#define SEG_THP 1

typedef struct page_queue {
    page_t *first, *last;
} page_queue_t;

#define SEGMENT_CACHE 16
#define HUGE_CACHE 16
#define HUGE_CACHE_BYTES ((size_t)32 << 20)

typedef struct heap {
    page_t *direct[DIRECT_COUNT];        /* size/16 -> page to pop from */
    page_queue_t bins[CLASS_COUNT];      /* pages with room, allocation at the front */
    page_queue_t parked[CLASS_COUNT];    /* sparse pages used only when bins run dry */
    _Atomic(page_t *) remote_pages;      /* pages with frees from others */
    segment_t *segments[KIND_XLARGE + 1]; /* segments with free pages */
    segment_t *cached[SEGMENT_CACHE];    /* empty segments kept mapped */
    unsigned cached_count;
    size_t dirty_bytes;                  /* free but resident page memory */
    size_t used_bytes;                   /* memory of pages in use */
    uint64_t purge_checked;              /* now_ticks of the last aged purge */
    uint64_t compact_checked;            /* now_ticks of the last compact pass */
    uint32_t compact_pass;               /* compact passes so far */
    struct segment *huge_cache[HUGE_CACHE]; /* freed huge mappings (TLS) */
    unsigned huge_cache_count;
    size_t huge_cached_bytes;
    _Atomic uint32_t owner;              /* TLS: owner TID (PI futex word) */
    _Atomic uint32_t lock;               /* no TLS: 0 free, 1 held */
    uint8_t busy;                        /* inside a slow path */
    _Atomic uint8_t poisoned;            /* never adopt (state unknown) */
    struct heap *next_heap;              /* registry of all heaps */
} heap_t;

/* slow_mark values: absent = the page just emptied (0 unless compact.c
 * purged blocks off it); HELD = never (the page is the only one of its
 * class and stays even when empty); for a page out of its queue because it
 * was full, used - 1: its first local free. */
#define SLOW_MARK_HELD UINT32_MAX

/* A heap returns its free pages to the kernel once they exceed
 * max(PURGE_MIN, used_bytes / PURGE_FRACTION). */
#define PURGE_MIN ((size_t)8 << 20)
#define PURGE_FRACTION 8
/* How long a page stays free before it may be purged, in time-stamp
 * counter ticks: about 20-60 ms on current x86 (1-3 GHz TSC). */
#define PURGE_DELAY ((uint64_t)1 << 26)

/* A clock without a syscall: the invariant TSC of x86_64. */
static inline uint64_t now_ticks(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline segment_t *segment_of(const void *p)
{
    return (segment_t *)(((uintptr_t)p - 1) & ~(uintptr_t)SEGMENT_MASK);
}

static inline page_t *page_of(segment_t *seg, const void *p)
{
    return &seg->pages[((uintptr_t)p - (uintptr_t)seg) >> seg->page_shift];
}

/* ------------------------------------------------------------------ */
/* Modules                                                             */

/* os.c: the kernel's memory, errno, and the registry of our segments */
EMMA_HIDDEN void *os_map(size_t size);
EMMA_HIDDEN void *os_map_aligned(size_t size, size_t align, size_t offset, size_t *out_size);
EMMA_HIDDEN void os_unmap(void *p, size_t size);
EMMA_HIDDEN void os_purge(void *p, size_t size);
EMMA_HIDDEN void *os_remap(void *p, size_t old_size, size_t new_size, size_t align, size_t offset);
EMMA_HIDDEN void os_set_errno(int e);
EMMA_HIDDEN uintptr_t os_secret(void);
EMMA_HIDDEN void os_yield(void);
EMMA_HIDDEN uint32_t os_gettid(void);
#define CHUNK_NONE 0
#define CHUNK_HEADER 1
#define CHUNK_INTERIOR 2
EMMA_HIDDEN bool registry_mark(void *start, size_t size, bool header);
EMMA_HIDDEN void registry_clear(void *start, size_t size);
EMMA_HIDDEN unsigned registry_lookup(const void *p);
EMMA_HIDDEN struct segment *registry_segment(const void *p);

/* check.c: diagnostics */
EMMA_HIDDEN EMMA_NORETURN EMMA_COLD void emma_fatal(const char *func, const char *problem,
                                                    const void *p);
EMMA_HIDDEN void check_pointer(const void *p, const char *func);
EMMA_HIDDEN void check_layout(const void *p, size_t size, size_t align, const char *func);
EMMA_HIDDEN void check_mark_free(const void *p);
#define FREED_TAG ((uintptr_t)0x9e3779b97f4a7c15ull)
static inline void check_mark_allocated(void *b)
{
    if (config_checks)
        ((uintptr_t *)b)[1] = 0;
}

/* segment.c */
EMMA_HIDDEN page_t *segment_page_alloc(heap_t *h, enum segment_kind kind);
EMMA_HIDDEN void segment_page_release(heap_t *h, page_t *page);
EMMA_HIDDEN void heap_purge(heap_t *h);
EMMA_HIDDEN void heap_purge_older(heap_t *h, uint64_t before);
EMMA_HIDDEN size_t segment_header_size(enum segment_kind kind);
EMMA_HIDDEN segment_t *segment_of_page(page_t *page);

/* page.c */
EMMA_HIDDEN void page_init(page_t *page, unsigned c);
EMMA_HIDDEN void page_extend(page_t *page);
EMMA_HIDDEN void bin_push_front(heap_t *h, page_t *page);
EMMA_HIDDEN void bin_push_back(heap_t *h, page_t *page);
EMMA_HIDDEN void bin_remove(heap_t *h, page_t *page);
EMMA_HIDDEN void page_park(heap_t *h, page_t *page);
EMMA_HIDDEN page_t *page_unpark(heap_t *h, unsigned c);
EMMA_HIDDEN bool page_should_park(const page_t *page);
EMMA_HIDDEN void page_free_local_slow(heap_t *h, page_t *page);
EMMA_HIDDEN void page_mark_full(heap_t *h, page_t *page);
EMMA_HIDDEN void heap_collect_remote(heap_t *h);
EMMA_HIDDEN void page_free_remote(segment_t *seg, page_t *page, block_t *b);
EMMA_HIDDEN void heap_release_empty_pages(heap_t *h);

/* compact.c */
EMMA_HIDDEN void heap_compact_sparse(heap_t *h);
EMMA_HIDDEN void page_revive(page_t *page);

/* heap.c */
EMMA_HIDDEN extern page_t empty_page;
EMMA_HIDDEN extern heap_t heap_empty;
EMMA_HIDDEN heap_t *heap_new(void);
EMMA_HIDDEN void heap_reset(heap_t *h);
EMMA_HIDDEN heap_t *heap_acquire_for_thread(void);
EMMA_HIDDEN heap_t *heap_lock_any(void);
EMMA_HIDDEN heap_t *heap_registry_first(void);

/* fork.c */
EMMA_HIDDEN bool fork_detected(void);
EMMA_HIDDEN void fork_recover(void (*recover)(void));
EMMA_HIDDEN void fork_init(void);

/* lock.c */
/* Inline: without TLS every malloc and free takes and drops a heap lock. */
static inline bool spin_trylock(_Atomic uint32_t *l)
{
    uint32_t expected = 0;
    return atomic_load_explicit(l, memory_order_relaxed) == 0 &&
           atomic_compare_exchange_strong_explicit(l, &expected, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}
static inline void spin_unlock(_Atomic uint32_t *l) { atomic_store_explicit(l, 0, memory_order_release); }
EMMA_HIDDEN void spin_lock(_Atomic uint32_t *l);
static inline bool heap_trylock(heap_t *h) { return spin_trylock(&h->lock); }
static inline void heap_unlock(heap_t *h) { spin_unlock(&h->lock); }

/* alloc.c: the generic paths behind the inline fast paths */
EMMA_HIDDEN void *alloc_generic(heap_t *h, size_t size, size_t align);
EMMA_HIDDEN void free_generic(void *p);
EMMA_HIDDEN void *realloc_block(void *p, size_t new_size, size_t align, const char *func);
EMMA_HIDDEN size_t usable_size(const void *p);
EMMA_HIDDEN void *alloc_zeroed(size_t size, size_t align);
EMMA_HIDDEN void trim_current(void);
EMMA_HIDDEN void mem_copy(void *dst, const void *src, size_t n);
EMMA_HIDDEN void mem_zero(void *dst, size_t n);

/* huge.c */
EMMA_HIDDEN void *huge_alloc(size_t size, size_t align, bool zero);
EMMA_HIDDEN void huge_free(segment_t *seg);
EMMA_HIDDEN void huge_cache_expire(heap_t *h, uint64_t before);
EMMA_HIDDEN void *huge_realloc(segment_t *seg, void *p, size_t new_size);
EMMA_HIDDEN size_t huge_usable(segment_t *seg, const void *p);

/* ------------------------------------------------------------------ */
/* The thread's heap                                                   */

#if EMMA_CONFIG_TLS
EMMA_HIDDEN extern __thread heap_t *tls_heap __attribute__((tls_model("initial-exec")));
static inline heap_t *heap_get(void) { return tls_heap; }
static inline heap_t *tls_heap_or_null(void) { return tls_heap == &heap_empty ? NULL : tls_heap; }
static inline void heap_put(heap_t *h) { (void)h; }
static inline bool heap_owns_segment(heap_t *h, segment_t *seg) { return seg->heap == h; }
#else
#define HEAP_SLOTS 256
#define HEAP_SOFT_LIMIT 64
EMMA_HIDDEN extern _Atomic(heap_t *) heap_slots[HEAP_SLOTS];
EMMA_HIDDEN extern _Atomic unsigned heap_slot_limit;

/* A thread's preferred slot, from its stack address: threads' stacks lie
 * megabytes apart, so each thread tends to keep to a heap of its own. */
static inline unsigned preferred_slot(unsigned limit)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    uint64_t hash = ((sp >> 20) * 0x9e3779b97f4a7c15ull) >> 32;
    return (unsigned)((hash * limit) >> 32); /* hash * limit / 2^32: no division */
}

static inline heap_t *preferred_heap(void)
{
    unsigned limit = atomic_load_explicit(&heap_slot_limit, memory_order_relaxed);
    return atomic_load_explicit(&heap_slots[preferred_slot(limit)], memory_order_acquire);
}

/* The common case inline: the preferred heap exists and is free. */
static inline heap_t *heap_get(void)
{
    heap_t *h = preferred_heap();
    if (likely(h != NULL) && likely(heap_trylock(h)))
        return h;
    return heap_lock_any();
}
static inline heap_t *tls_heap_or_null(void) { return NULL; }
static inline void heap_put(heap_t *h) { heap_unlock(h); }
#endif

/* ------------------------------------------------------------------ */
/* Fast paths                                                          */

static inline void *page_pop(page_t *page)
{
    block_t *b = page->free;
    if (likely(b != NULL)) {
        page->free = b->next;
        /* the next block is likely cold (freed long ago, or by another
         * thread), and its link is the first thing the next pop reads */
        __builtin_prefetch(b->next, 1);
        page->used++;
        check_mark_allocated(b);
    }
    return b;
}

/* malloc-style allocation with the default alignment. */
static inline void *heap_alloc(heap_t *h, size_t size)
{
    if (likely(size <= DIRECT_MAX)) {
        void *b = page_pop(h->direct[(size + 15) >> 4]);
        if (likely(b != NULL))
            return b;
    }
    return alloc_generic(h, size, MIN_ALIGN);
}

/* Free of a block known to belong to a page of h. */
static inline void heap_free_local(heap_t *h, page_t *page, void *p)
{
    block_t *b = (block_t *)p;
    b->next = page->free;
    page->free = b;
    if (unlikely(--page->used == page->slow_mark))
        page_free_local_slow(h, page);
}

/* free() and friends after validation: the owner's pages inline, the rest
 * in free_generic. */
static inline void free_block(void *p, const char *func)
{
    if (config_checks) {
        check_pointer(p, func);
        check_mark_free(p);
    }
#if EMMA_CONFIG_TLS
    segment_t *seg = segment_of(p);
    heap_t *h = tls_heap;
    if (likely(seg->heap == h)) {
        heap_free_local(h, page_of(seg, p), p);
        return;
    }
#endif
    free_generic(p);
}

/* malloc-style allocation through the calling thread's heap. */
static inline void *alloc_block(size_t size, size_t align)
{
    heap_t *h = heap_get();
    if (!config_tls && unlikely(!h)) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    void *p = likely(align <= MIN_ALIGN) ? heap_alloc(h, size) : alloc_generic(h, size, align);
    heap_put(h);
    return p;
}

#endif

/* emma's core types and the geometry they encode: the one header every
 * file of lib/ includes (through internal.h).  Types, sizes and tiny
 * helpers only; no module's functions.
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
 * Build variants (configure switches become constants, so code that tests
 * them compiles in every build and the optimiser removes the dead branch;
 * only code that names the TLS variable itself, or fields and functions
 * that exist in one variant, is under #if EMMA_CONFIG_TLS):
 *   config_tls     per-thread heaps, no lock and no atomic on the owner's
 *                  fast path; cost: 8 bytes of TLS per thread.
 *   config_checks  every pointer/size/alignment at the API is validated
 *                  (a few loads and compares per call); misuse aborts.
 *   config_hardening  free-list links encoded with a per-process secret
 *                  (internal.h: link_get/link_set); cost: 3 instructions
 *                  per malloc+free.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef EMMA_TYPES_H
#define EMMA_TYPES_H

#include "config.h"
#include "namespace.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>

#define EMMA_HIDDEN __attribute__((visibility("hidden")))
#define EMMA_NOINLINE __attribute__((noinline))
#define EMMA_NORETURN __attribute__((noreturn))
#define EMMA_COLD __attribute__((cold))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
/* Relaxed load of a field another thread (a page's or heap's owner) writes
 * without atomics: a stale value only makes the reader skip or retry. */
#define PEEK(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static const bool config_tls = EMMA_CONFIG_TLS;
static const bool config_checks = EMMA_CONFIG_CHECKS;
static const bool config_hardening = EMMA_CONFIG_HARDENING;

/* ------------------------------------------------------------------ */
/* Sizes                                                               */

#define OS_PAGE_SIZE ((size_t)4096)
#define SEGMENT_SHIFT 22
#define SEGMENT_SIZE ((size_t)1 << SEGMENT_SHIFT)
#define SEGMENT_MASK (SEGMENT_SIZE - 1)

/* Page size of each segment kind (xlarge: the whole segment).  A huge
 * "segment" is one page covering the whole mapping, whatever its size. */
#define SMALL_PAGE_SHIFT 16
#define MEDIUM_PAGE_SHIFT 19
#define LARGE_PAGE_SHIFT 20
#define XLARGE_PAGE_SHIFT SEGMENT_SHIFT
#define HUGE_PAGE_SHIFT 62
#define PAGES_PER_SEGMENT(shift) ((unsigned)1 << (SEGMENT_SHIFT - (shift)))

#define MIN_ALIGN ((size_t)16)
#define SMALL_MAX ((size_t)8 << 10)    /* blocks in 64 KiB pages */
#define MEDIUM_MAX ((size_t)64 << 10)  /* blocks in 512 KiB pages */
#define LARGE_PAGE_MAX ((size_t)512 << 10) /* blocks in 1 MiB pages */
#define LARGE_MAX ((size_t)1 << 20)    /* blocks in one 4 MiB page */
#define DIRECT_MAX ((size_t)1024)      /* sizes served by heap->direct */
#define DIRECT_COUNT (DIRECT_MAX / MIN_ALIGN + 1)
#define MAX_REQUEST ((size_t)PTRDIFF_MAX - 2 * SEGMENT_SIZE)

/* Size classes (sizeclass.h): 16..128 in steps of 16, then 4 classes per
 * doubling up to 8 KiB, then 2 per doubling up to 1 MiB (numbered as if 4,
 * the odd ones above 8 KiB unused).  Class 0 is unused (it marks huge
 * blocks). */
#define CLASS_COUNT 61
#define CLASS_HUGE 0

enum segment_kind { KIND_SMALL, KIND_MEDIUM, KIND_LARGE, KIND_XLARGE, KIND_HUGE, KIND_COUNT };

/* 2^64 / golden ratio: an odd constant whose multiples scatter bits
 * (hashing, the secret, the freed-block tag). */
#define GOLDEN_RATIO_64 0x9e3779b97f4a7c15ull

/* x rounded up to a multiple of a (a power of two); a constant expression
 * when its arguments are. */
#define align_up(x, a) (((x) + ((a) - 1)) & ~(uintptr_t)((a) - 1))

static inline unsigned log2_floor(size_t x) { return 63u - (unsigned)__builtin_clzll(x); }

/* ------------------------------------------------------------------ */
/* Pages, segments, heaps                                              */

/* A free block's link.  It is encoded (internal.h: link_get/link_set),
 * and every list ends with PAGE_END(its page), never NULL. */
typedef struct block {
    struct block *next;
} block_t;

struct heap;

/* The first cache line holds what the owner touches on every allocation
 * and free; other threads' frees write only the second, so a consumer
 * freeing into the page a producer allocates from does not make their
 * cores fight over one line. */
typedef struct page {
    block_t *free;               /* allocation list (fast path); PAGE_END: empty */
    uint32_t used;               /* blocks out, including unseen remote frees */
    uint32_t slow_at;            /* a local free finding `used` at this needs the slow path */
    uint8_t in_full;             /* no free block: not in its bin */
    uint8_t in_use;              /* assigned to a size class */
    uint8_t class_idx;
    uint8_t page_idx;
    uint32_t block_size;
    block_t *local_free;         /* collected frees of other threads; NULL: empty */
    uint8_t *start;              /* first block */
    uint32_t capacity;           /* blocks carved out so far */
    uint32_t reserved;           /* blocks that fit */
    struct page *next, *prev;    /* bin queue */
    /* second cache line: other threads, and rarely used state */
    _Alignas(64) _Atomic uintptr_t thread_free; /* frees by other threads: their list's head
                                    and how many (TF_* below); 0: none */
    struct page *remote_next;    /* link in heap->remote_pages */
    block_t *thread_tail;        /* last block of thread_free's list: set by whoever
                                    made the list non-empty, before it pushed the page
                                    onto remote_pages */
    uint32_t dirty;              /* free page: bytes that may be resident */
    uint32_t absent;             /* blocks purged off the free list (sparse.c) */
    union {
        uint64_t freed_at;       /* free page: when (now_ticks) */
        _Atomic uint64_t remote_gone; /* page in use: blocks of remote frees that another
                                    thread purged (reclaim.c, sparse.c's page_thin_remote),
                                    waiting for the owner (page_absorb_remote): REMOTE_GONE_*
                                    below; 0: none */
    };
    uint32_t scanned_used;       /* `used` when sparse.c last scanned the page */
    uint32_t sparse_since;       /* sparse pass that first saw it sparse, or 0 */
    uint16_t purged;             /* OS pages whose blocks are absent (small pages) */
    uint8_t parked;              /* in heap->parked: sparse, left to drain */
    uint8_t in_depot;            /* of its blocks, how many wait in the depot (depot.c,
                                    under its class's lock) */
    uint32_t remote_size;        /* block_size while in use, else 0: what a remote
                                    free reads, so that it never reads the first
                                    line, which the owner writes at every malloc */
    _Atomic uint32_t tf_gen;     /* thread_free's lists taken so far (internal.h:
                                    tf_take), part of the tag remote frees leave */
    uint32_t held_bytes;         /* held by its owner (page.c: page_retire): the
                                    carved bytes counted in policy.c's pinned memory */
} page_t;

/* The end of a page's lists, and what a pop parks in page->free while it
 * takes the head (alloc.h): the page itself, never a block. */
#define PAGE_END(page) ((block_t *)(page))

/* page_t.thread_free: the head of the list of other threads' frees in the
 * low TF_SHIFT bits (user addresses, and so emma's memory, lie below
 * 2^47: os.c's address map), their number above, so that the owner's
 * collect knows it without walking the list (each of whose blocks another
 * core wrote last: a cache miss per block, one after the other).  A page
 * has at most PAGE_MAX_BLOCKS blocks (internal.h): a count that would pass
 * it means a block freed twice. */
#define TF_SHIFT 48
#define TF_ONE ((uintptr_t)1 << TF_SHIFT)
static inline block_t *tf_head(uintptr_t w) { return (block_t *)((w << (64 - TF_SHIFT)) >> (64 - TF_SHIFT)); }
static inline uint32_t tf_count(uintptr_t w) { return (uint32_t)(w >> TF_SHIFT); }

/* page_t.remote_gone: the OS pages purged (a bit each, by sparse.c's
 * os_page_index, small pages only) in its low 16 bits; the number of
 * blocks that left the remote-free list with them (absent blocks the owner
 * has not counted yet) in its high 32; in between, how many blocks the
 * last thinning left on the list (so that the next one waits for more). */
#define REMOTE_GONE_BITS(w) ((uint16_t)(w))
#define REMOTE_GONE_LEFT(w) ((uint32_t)((w) >> 16) & 0xffffu)
#define REMOTE_GONE_COUNT(w) ((uint32_t)((w) >> 32))
#define REMOTE_GONE_WORD(count, left, bits)                                                       \
    ((uint64_t)(count) << 32 | (uint64_t)((left) & 0xffffu) << 16 | (uint16_t)(bits))

/* page_t.in_use of a quarantined heap's page whose lists salvage.c found
 * broken: never used again (its blocks still out may be freed). */
#define PAGE_LOST 2
/* heap_t.salvage */
#define SALVAGE_ACTIVE 1

_Static_assert(offsetof(page_t, thread_free) == 64,
               "other threads' frees must not share the owner's cache line");
_Static_assert(offsetof(page_t, remote_size) >= 64 && sizeof(page_t) == 128,
               "a remote free reads the second line only");

typedef struct segment {
    struct heap *heap;           /* owner; NULL for huge */
    uint8_t kind;
    uint8_t page_shift;
    uint16_t page_count;
    uint16_t used_pages;
    uint16_t flags;              /* SEG_* below */
    uint64_t free_mask;          /* pages not in use */
    uint64_t dirty_mask;         /* free pages that may hold resident memory */
    size_t map_size;             /* bytes mapped from the segment start */
    uintptr_t cookie;            /* address ^ secret: validates headers */
    struct segment *self;        /* its own address: free's cheap check that
                                    a 4 MiB chunk holds a header (check.h) */
    struct segment *next, *prev; /* heap's segments with free pages; pool; huge cache */
    struct heap *origin;         /* huge: the heap that allocated it */
    struct segment *all_next, *all_prev; /* private heap: all its segments */
    size_t reserve_size;         /* huge: bytes mapped, map_size rounded up (huge.c) */
    size_t resident;             /* pooled or cached: bytes that may be resident */
    page_t pages[];
} segment_t;

/* segment_t.flags: a segment of a private heap, or a huge block of the
 * private heap `origin` */
#define SEG_PRIVATE 2
/* segment_t.flags: a huge block realloc shrank to a small class's size */
#define SEG_SHRUNK 4
/* segment_t.flags: a huge mapping that received pages moved from others
 * (huge.c's gather), which the kernel holds as several mappings */
#define SEG_GATHERED 8
/* segment_t.flags: a huge block whose pages emma filled in ahead (gather,
 * populate) in this use: what is resident of it when it is freed tells
 * nothing of how the program writes its blocks */
#define SEG_FILLED 16

/* Bytes of a segment header with `pages` pages, cache-line aligned; with
 * boundary checks it ends with the free-block bitmap (internal.h). */
#define CHECK_BITMAP_BYTES (EMMA_CONFIG_CHECKS ? SEGMENT_SIZE / MIN_ALIGN / 8 : 0)
#define SEGMENT_HEADER_SIZE(pages)                                                              \
    (align_up(sizeof(segment_t) + (pages) * sizeof(page_t), (size_t)64) + CHECK_BITMAP_BYTES)

/* Each header fits in the first page and leaves room for its biggest block;
 * free_mask and dirty_mask have a bit per page. */
_Static_assert(SEGMENT_HEADER_SIZE(PAGES_PER_SEGMENT(SMALL_PAGE_SHIFT)) + SMALL_MAX <=
                   (size_t)1 << SMALL_PAGE_SHIFT, "small segment header too big");
_Static_assert(SEGMENT_HEADER_SIZE(PAGES_PER_SEGMENT(MEDIUM_PAGE_SHIFT)) + MEDIUM_MAX <=
                   (size_t)1 << MEDIUM_PAGE_SHIFT, "medium segment header too big");
_Static_assert(SEGMENT_HEADER_SIZE(PAGES_PER_SEGMENT(LARGE_PAGE_SHIFT)) + LARGE_PAGE_MAX <=
                   (size_t)1 << LARGE_PAGE_SHIFT, "large segment header too big");
_Static_assert(SEGMENT_HEADER_SIZE(1) + LARGE_MAX <= SEGMENT_SIZE, "xlarge segment header too big");
_Static_assert(PAGES_PER_SEGMENT(SMALL_PAGE_SHIFT) <= 64, "free_mask has 64 bits");

typedef struct page_queue {
    page_t *first, *last;
} page_queue_t;


/* Free medium and large pages a heap counts at their carved extent rather
 * than ask the kernel what is resident (segment.c), medium ones (512 KiB)
 * UNMEASURED_PAGES at most: at most 8 MiB counted over. */
#define UNMEASURED_PAGES 4
#define UNMEASURED_LARGE_PAGES 8
#define UNMEASURED_ALL UNMEASURED_LARGE_PAGES

/* heap_t.big_cache: a slot for each class from 96 KiB (the first above
 * MEDIUM_MAX, sizeclass.h: class 46) to LARGE_PAGE_MAX (class 56), the
 * even classes only. */
#define BIG_CACHE_FIRST 46u
#define BIG_CACHE_SLOTS 6u
#define BIG_CACHE_RESERVED ((uintptr_t)1)
#define BIG_CACHE_OFF 2u

typedef struct heap {
    page_t *direct[DIRECT_COUNT];        /* size/16 -> page to pop from */
    page_queue_t bins[CLASS_COUNT];      /* pages with room, allocation at the front */
    page_queue_t parked[CLASS_COUNT];    /* sparse pages used only when bins run dry */
    _Atomic(page_t *) remote_pages;      /* pages with frees from others */
    segment_t *segments[KIND_XLARGE + 1]; /* segments with free pages */
    uint64_t kind_taken_at[KIND_XLARGE + 1]; /* now_ticks of its last page of each kind */
    size_t dirty_bytes;                  /* free but resident page memory */
    page_t *unmeasured[UNMEASURED_ALL]; /* segment.c: free medium and large pages counted at
                                          their carved extent, not measured yet; oldest first */
    size_t used_bytes;                   /* memory of pages in use */
    uint64_t sparse_checked;             /* now_ticks of the last sparse pass */
    uint32_t sparse_passes;              /* sparse passes so far */
    uint32_t class_pass[CLASS_COUNT];    /* sparse_passes at the class's last alloc_class */
    /* policy.c and reclaim.c: other threads giving this heap's memory back */
    _Atomic uint32_t seg_lock;           /* free pages and their accounting */
    _Atomic uint32_t collect_lock;       /* remote_pages and in_full pages */
    page_t *collect_next;                /* the collect_lock holder's pages still to
                                            do, taken off remote_pages (page.c) */
    uint64_t active_at;                  /* now_ticks of the owner's last slow path */
    uint64_t liveness_checked;           /* reclaim.c: now_ticks of the last "owner dead?" */
    size_t remote_freed;                 /* bytes its thread freed into other heaps' pages
                                            since its last remote step (policy.c) */
    _Atomic uint32_t owner;              /* TLS: owner TID (PI futex word) */
    _Atomic uint32_t lock;               /* no TLS: 0 free, 1 held */
    uint8_t busy;                        /* inside a slow path */
    uintptr_t busy_sp;                   /* TLS: the stack pointer of the outermost slow
                                            path on it (internal.h: tls_left_heap), or
                                            of a spare heap's holder */
    uint8_t spare;                       /* TLS: a spare heap (heap.c), never adopted */
    _Atomic uint8_t poisoned;            /* never adopt (state unknown) */
    uint8_t salvage;                     /* SALVAGE_ACTIVE: salvage.c recovers its pages */
    uint8_t salvage_first;               /* no salvage pass has seen it yet */
    uint32_t salvage_segments;           /* segments left at the last pass */
    struct heap *next_heap;              /* list of all heaps (heap.c) */
    uint8_t is_private;                  /* heap_private.c: never a thread's */
    struct heap *prev_private;           /* private: list of them (with next_heap) */
    struct segment *all_segments;        /* private: every segment it maps */
    struct segment *huge_blocks;         /* private: its huge blocks */
    struct segment *lost_segments;       /* private: quarantined (heap_private.c) */
    uint32_t fork_gen;                   /* private: lock_generation when last checked */
    struct heap *borrower;               /* shared (heap.c): the heap of the thread
                                            allocating from it now (alloc.c) */
    /* TLS, a thread's heap: one block of each class above SHARED_MIN,
     * taken from the shared heap and freed by this thread, kept for its
     * next malloc of the class (free.c: big_cache_put; the word is 0,
     * BIG_CACHE_RESERVED or the block) */
    _Atomic(uintptr_t) big_cache[BIG_CACHE_SLOTS];
    uint8_t big_cache_run;               /* free.c: big frees since its last big malloc
                                            (BIG_CACHE_OFF: two or more) */
    /* TLS, a thread's heap: reclaim.c's claim on it while its owner idles
     * (a lock word naming the claimer; the owner's slow_enter waits while
     * it is taken), what the claimer is unlinking (for the repair if it
     * dies there), what the last claim saw, and the owner's tls_heap */
    _Atomic uint32_t claim;
    uint8_t claim_class;                 /* class whose queues the claimer edits, or 0 */
    page_t *claim_page;                  /* the page it is taking out of them */
    uint64_t claim_active_at;            /* active_at at the last claim */
    uint64_t stepped_at;                 /* now_ticks of the last remote step at it (reclaim.c) */
    page_t *claim_remote;                /* remote_pages as the last claim left it */
    struct heap *const *owner_tls;       /* the owner thread's tls_heap (heap.c) */
} heap_t;

/* A heap's metadata mapping; a private heap's is followed by one page that
 * the kernel wipes in a fork child (heap_private.c). */
#define HEAP_MAP_SIZE align_up(sizeof(heap_t), OS_PAGE_SIZE)

/* slow_at is compared with `used` as a local free finds it, before its
 * decrement (the value the free's xadd returns, so the fast path needs no
 * subtraction): absent + 1 = the free that empties the page (SLOW_AT_EMPTY;
 * absent is 0 unless sparse.c purged blocks off it); HELD = never (the
 * page is the only one of its class and stays even when empty; no free of
 * a live block finds `used` at 0); for a page out of its queue because it
 * was full, used: its first local free. */
#define SLOW_AT_HELD 0u
#define SLOW_AT_EMPTY(page) ((page)->absent + 1)

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
    /* the index scaled first and the header's size added last, so the
     * compiler can fold that constant into one lea with the base */
    size_t off = (((uintptr_t)p - (uintptr_t)seg) >> seg->page_shift) * sizeof(page_t);
    return (page_t *)((uintptr_t)seg + off + offsetof(segment_t, pages));
}

#endif

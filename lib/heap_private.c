/* Private heaps (emma_heap_*): heaps that no thread allocates from by
 * itself.  A private heap is an ordinary heap_t that is on no list of
 * heap.c (so no thread finds, adopts or trims it), with `is_private` set
 * and two lists of its own memory, so that it can drop everything at once:
 *   all_segments  every segment it mapped, full ones and cached ones too
 *                 (linked through segment_t.all_next/all_prev; only its
 *                 user adds or removes segments, so no lock);
 *   huge_blocks   its live huge blocks (through segment_t.next/prev; any
 *                 thread may free one, so the list has a lock, h->lock,
 *                 which no other code uses in a private heap).
 * Allocation and the user's frees take alloc.c's and alloc.h's paths like
 * any heap; other threads' frees reach its pages through the usual
 * thread_free lists.  Destroy unmaps the lists' memory directly: nothing
 * goes to a cache that other heaps could use.
 *
 * fork: a fork may catch another thread anywhere in a call on a heap, or
 * holding a lock of this file.  The locks (h->lock, the list of private
 * heaps) are the policy's generation locks: a child's waiter takes one
 * held by a thread the child does not have, and repairs its list (every
 * list here is updated so that its forward links are right at every
 * instruction; the back links and counts are rebuilt).  The heap itself:
 * the heap's user marks it `busy` for the length of every call past the
 * fast path; the fast paths leave it consistent at every instruction (a
 * block or two lost at worst, alloc.h).  After the heap's metadata comes
 * one page the kernel wipes in a fork child (MADV_WIPEONFORK) holding
 * `fork_ok` (its alignment mask, which emma_heap_alloc's fast path tests
 * align against: 0 in a child), so a child's first
 * call on every heap takes the slow path, which (private_enter) finds a
 * heap still `busy` from before the fork (or from a thread that died in a
 * call) and quarantines its memory: every segment it had goes to
 * lost_heap, a heap that never allocates, so the blocks in them stay valid
 * and their frees go to remote lists nobody collects, and the heap starts
 * afresh; emma_heap_reset and emma_heap_destroy unmap the quarantined
 * segments (lost_segments) with the rest.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "observe.h"

#define EMMA_API __attribute__((visibility("default")))
#include "emma.h"

/* ------------------------------------------------------------------ */
/* Locks and lists that a fork child repairs */

/* A generation lock (internal.h) guarding a list: true if the list must be
 * repaired, its holder lost in a fork. */
static bool list_lock(_Atomic uint32_t *l) { return !gen_trylock(l) && gen_lock_wait_stale(l); }

/* Orders a list update's stores so that a fork at any instruction leaves
 * the forward links right. */
#define LIST_ORDER() __asm__ volatile("" ::: "memory")

/* The huge-block list's back links from its forward links. */
static void huge_list_lock(heap_t *h)
{
    if (!list_lock(&h->lock))
        return;
    segment_t *prev = NULL;
    for (segment_t *seg = h->huge_blocks; seg; seg = seg->next) {
        seg->prev = prev;
        prev = seg;
    }
}

/* Private heaps alive, on a list (next_heap, prev_private) for emma_stats;
 * emma_teardown refuses while there is one. */
static _Atomic size_t private_heaps;
static heap_t *private_list;
static _Atomic uint32_t private_list_lock;
/* their huge blocks and bytes, for emma_stats */
static _Atomic size_t private_huge_blocks, private_huge_bytes;

static void count_huge(segment_t *seg, bool add)
{
    size_t bytes = huge_usable(seg, seg->pages[0].start);
    if (add) {
        atomic_fetch_add_explicit(&private_huge_blocks, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&private_huge_bytes, bytes, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&private_huge_blocks, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&private_huge_bytes, bytes, memory_order_relaxed);
    }
}

size_t private_heap_count(void) { return atomic_load_explicit(&private_heaps, memory_order_acquire); }

/* The list of private heaps, locked; its back links and count rebuilt if
 * its holder was lost in a fork. */
static void private_list_lock_take(void)
{
    if (!list_lock(&private_list_lock))
        return;
    size_t n = 0;
    heap_t *prev = NULL;
    for (heap_t *h = private_list; h; h = h->next_heap, n++) {
        h->prev_private = prev;
        prev = h;
    }
    atomic_store_explicit(&private_heaps, n, memory_order_release);
}

static void private_list_add(heap_t *h)
{
    private_list_lock_take();
    h->prev_private = NULL;
    h->next_heap = private_list;
    if (private_list)
        private_list->prev_private = h;
    LIST_ORDER();
    private_list = h;
    atomic_fetch_add_explicit(&private_heaps, 1, memory_order_relaxed);
    gen_unlock(&private_list_lock);
}

static void private_list_remove(heap_t *h)
{
    private_list_lock_take();
    if (h->prev_private)
        h->prev_private->next_heap = h->next_heap;
    else
        private_list = h->next_heap;
    LIST_ORDER();
    if (h->next_heap)
        h->next_heap->prev_private = h->prev_private;
    atomic_fetch_sub_explicit(&private_heaps, 1, memory_order_release);
    gen_unlock(&private_list_lock);
}

void private_heap_stats(struct emma_stats *s)
{
    private_list_lock_take();
    for (heap_t *h = private_list; h; h = h->next_heap) {
        size_t dirty = __atomic_load_n(&h->dirty_bytes, __ATOMIC_RELAXED);
        s->private_bytes_free_resident += dirty;
        s->bytes_free_resident += dirty;
        s->private_heaps++;
    }
    gen_unlock(&private_list_lock);
    s->private_huge_blocks = atomic_load_explicit(&private_huge_blocks, memory_order_relaxed);
    s->private_bytes_in_use += atomic_load_explicit(&private_huge_bytes, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Bookkeeping hooks (segment.c, huge.c) */

void private_segment_added(heap_t *h, segment_t *seg)
{
    seg->flags |= SEG_PRIVATE; /* for emma_stats */
    seg->all_prev = NULL;
    seg->all_next = h->all_segments;
    if (h->all_segments)
        h->all_segments->all_prev = seg;
    LIST_ORDER();
    h->all_segments = seg;
}

void private_segment_removed(heap_t *h, segment_t *seg)
{
    if (seg->all_prev)
        seg->all_prev->all_next = seg->all_next;
    else
        h->all_segments = seg->all_next;
    LIST_ORDER();
    if (seg->all_next)
        seg->all_next->all_prev = seg->all_prev;
}

void private_huge_link(heap_t *h, segment_t *seg)
{
    seg->origin = h;
    seg->flags |= SEG_PRIVATE;
    count_huge(seg, true);
    huge_list_lock(h);
    seg->prev = NULL;
    seg->next = h->huge_blocks;
    if (h->huge_blocks)
        h->huge_blocks->prev = seg;
    LIST_ORDER();
    h->huge_blocks = seg;
    gen_unlock(&h->lock);
}

void private_huge_unlink(segment_t *seg)
{
    heap_t *h = seg->origin;
    count_huge(seg, false);
    huge_list_lock(h);
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        h->huge_blocks = seg->next;
    LIST_ORDER();
    if (seg->next)
        seg->next->prev = seg->prev;
    gen_unlock(&h->lock);
}

/* A huge block of h: always a fresh mapping (zero), never from a cache. */
void *private_huge_alloc(heap_t *h, size_t size, size_t align)
{
    void *p = huge_alloc_private(size, align);
    if (p)
        private_huge_link(h, segment_of(p));
    return p;
}

/* ------------------------------------------------------------------ */
/* Quarantine (fork, or a thread that died in a call on the heap) */

/* The owner of quarantined segments: never allocates, never collects; its
 * pages only receive frees (remote lists), and the private heap the
 * segment came from (seg->origin) unmaps it at reset or destroy. */
static heap_t lost_heap = {
    .direct = {[0 ... DIRECT_COUNT - 1] = &empty_page},
    .is_private = 1,
    .poisoned = 1,
};

/* The word after the heap's metadata: in the process that made or last
 * checked the heap, FORK_OK, the mask of the small alignments that
 * emma_heap_alloc's fast path tests align against (alloc.h's
 * align_small); 0 in a fork child (a wiped page), where no alignment
 * passes: the fork test costs the fast path nothing (the mask is loaded
 * from here instead of being an immediate). */
#define FORK_OK 0x10116u
static inline uint32_t *fork_ok(heap_t *h) { return (uint32_t *)((uint8_t *)h + HEAP_MAP_SIZE); }

/* h's state may be half updated: hand every segment of h to lost_heap and
 * start h afresh (its huge blocks, each a mapping of its own on a repaired
 * list, stay). */
static void quarantine(heap_t *h)
{
    segment_t *seg = h->all_segments;
    while (seg) {
        segment_t *next = seg->all_next;
        seg->origin = h;
        atomic_store_explicit((_Atomic(heap_t *) *)&seg->heap, &lost_heap, memory_order_release);
        seg->all_prev = NULL;
        seg->all_next = h->lost_segments;
        if (h->lost_segments)
            h->lost_segments->all_prev = seg;
        h->lost_segments = seg;
        seg = next;
    }
    atomic_thread_fence(memory_order_seq_cst);
    /* pages with remote frees: lost_heap's now (a push racing with this
     * lands on h's list, and h's collect forwards it, page.c) */
    (void)atomic_exchange_explicit(&h->remote_pages, NULL, memory_order_acquire);
    heap_reset(h);
    mem_zero(h->bins, sizeof h->bins);
    mem_zero(h->parked, sizeof h->parked);
    for (int k = 0; k <= KIND_XLARGE; k++)
        h->segments[k] = NULL;
    h->all_segments = NULL;
    h->dirty_bytes = h->used_bytes = 0;
    h->sparse_checked = 0;
    h->sparse_passes = 0;
    mem_zero(h->class_pass, sizeof h->class_pass);
    atomic_store(&h->seg_lock, 0);
    atomic_store(&h->collect_lock, 0);
    h->busy = 0;
}

/* Unmap h's quarantined segments (reset, destroy). */
static void drop_lost_segments(heap_t *h)
{
    segment_t *seg = h->lost_segments;
    h->lost_segments = NULL;
    while (seg) {
        segment_t *next = seg->all_next;
        segment_unmap(seg);
        seg = next;
    }
}

/* The start of every call of h's user past the fast path: in a fork child
 * (or after a fork the heap has not seen), or when a call on h never
 * finished (busy: its thread was lost in a fork or died in it; calls on
 * one heap never overlap), quarantine h's memory. */
static EMMA_NOINLINE void private_recover(heap_t *h)
{
    heap_check_fork(); /* first, in a fork child: lock_generation moves on */
    if (h->busy)
        quarantine(h);
    h->fork_gen = atomic_load_explicit(&lock_generation, memory_order_relaxed);
    *fork_ok(h) = FORK_OK;
}

static inline void private_enter(heap_t *h)
{
    /* Without MADV_WIPEONFORK, fork_gen tells once anything has called
     * heap_check_fork (every generation lock does: a fresh page does). */
    if (unlikely(h->busy || *fork_ok(h) != FORK_OK ||
                 h->fork_gen != atomic_load_explicit(&lock_generation, memory_order_relaxed)))
        private_recover(h);
}

/* private_enter, and h busy until private_leave. */
static inline void private_begin(heap_t *h)
{
    private_enter(h);
    h->busy = 1;
    __asm__ volatile("" ::: "memory");
}

static inline void private_leave(heap_t *h)
{
    __asm__ volatile("" ::: "memory");
    h->busy = 0;
}

/* The heap a block belongs to: a huge block's is its origin if private, a
 * quarantined segment's the heap it was taken from. */
static heap_t *block_heap(const void *p)
{
    segment_t *seg = segment_of(p);
    if (seg->kind != KIND_HUGE)
        return seg->heap == &lost_heap ? seg->origin : seg->heap;
    return (seg->flags & SEG_PRIVATE) ? seg->origin : NULL;
}

bool block_is_private(const void *p)
{
    heap_t *h = block_heap(p);
    return h != NULL && h->is_private;
}

/* ------------------------------------------------------------------ */
/* The API */

/* Is h a live private heap?  Looked up on the list, under its lock: reads
 * nothing of h itself, so a destroyed heap, a pointer into anything else or
 * garbage is reported, never dereferenced.  (A handle whose heap was
 * destroyed and whose metadata emma_heap_new has since handed out again is
 * that new heap: not detected.) */
static bool private_heap_live(const heap_t *h)
{
    bool found = false;
    private_list_lock_take();
    for (const heap_t *q = private_list; q && !found; q = q->next_heap)
        found = q == h;
    gen_unlock(&private_list_lock);
    return found;
}

/* ------------------------------------------------------------------ */
/* Valgrind memcheck (observe.h).  Under Valgrind a private heap's block
 * is a malloc-like block for memcheck, handed out and released by
 * api_emma.c's vg_alloc_from and vg_release as emma_alloc's are: handed
 * out it is MALLOCLIKE (undefined, or defined if zeroed) with a red zone
 * at the end of its room, and never the first block of its page, released
 * it is FREELIKE (no access; a double free reported), and its leaks are
 * reported.  emma_heap_reset and emma_heap_destroy release every block
 * they drop: a walk over every block slot the heap ever carved (and its
 * huge blocks), FREELIKE with error reporting off, since a slot that is
 * free or was never handed out is no block to memcheck, and the slots'
 * memory made inaccessible (the room past a block too).  So a block used
 * after reset is reported, and blocks destroy dropped are not leaks.
 * (memcheck's memory pools, VALGRIND_CREATE_MEMPOOL, would drop a heap's
 * blocks in one request, but Valgrind 3.19's leak check does not look at
 * their chunks.)  emma's own reads and writes of free blocks run with
 * error reporting off, as in api_emma.c.
 *
 * Under memcheck only: callgrind, which counts the fast paths'
 * instructions, sees emma's own paths.
 *
 * The fast paths pay nothing for it: under memcheck the handle that
 * emma_heap_new returns is the heap plus VG_HANDLE_OFFSET, so that
 * emma_heap_alloc's fork_ok test reads a word that is always 0 (the fork
 * page past fork_ok) and no segment's owner is the handle: every
 * emma_heap_alloc and emma_heap_dealloc leaves its fast path, and the
 * slow paths (handle_heap: the handle rounded down to its page, the heap)
 * go to Valgrind's. */
#define VG_HANDLE_OFFSET 64

static inline heap_t *handle_heap(emma_heap_t *heap)
{
    return (heap_t *)((uintptr_t)heap & ~(uintptr_t)(OS_PAGE_SIZE - 1));
}

#if EMMA_CONFIG_VALGRIND
/* Under memcheck only: other tools (callgrind, which measures the fast
 * paths) see emma's own paths.  Set by the first emma_heap_new. */
static uint8_t vg_memcheck;
#define VG_ON unlikely(vg_memcheck)
static inline void vg_quiet(void) { VALGRIND_DISABLE_ERROR_REPORTING; }
static inline void vg_loud(void) { VALGRIND_ENABLE_ERROR_REPORTING; }

/* A memcheck request on an address no process maps: memcheck answers with
 * that address, every other tool (and native code) with 0. */
static void vg_memcheck_detect(void)
{
    if (!vg_running || vg_memcheck)
        return;
    vg_quiet();
    uintptr_t bad = VALGRIND_CHECK_MEM_IS_ADDRESSABLE((void *)(uintptr_t)8, 1);
    vg_loud();
    vg_memcheck = bad != 0;
}
#else
static inline void vg_memcheck_detect(void) {}
#define VG_ON 0
static inline void vg_quiet(void) {}
static inline void vg_loud(void) {}
#define VALGRIND_FREELIKE_BLOCK(p, rz) ((void)(p))
#define VALGRIND_MAKE_MEM_NOACCESS(p, n) ((void)(p), (void)(n))
#endif

/* ------------------------------------------------------------------ */
/* The API */

/* The heap argument; with boundary checks, one that is not a live private
 * heap (NULL, destroyed, garbage) is a one-line abort. */
static heap_t *heap_arg(emma_heap_t *heap, const char *func)
{
    heap_t *h = handle_heap(heap);
    if (config_checks && (h == NULL || !private_heap_live(h)))
        emma_fatal(func, "not a live private heap", heap);
    return h;
}

static void check_in_heap(heap_t *h, const void *p, const char *func)
{
    if (block_heap(p) != h)
        emma_fatal(func, "pointer belongs to another heap", p);
}

/* The metadata and the fork_ok page. */
#define PRIVATE_MAP_SIZE (HEAP_MAP_SIZE + OS_PAGE_SIZE)

EMMA_API emma_heap_t *emma_heap_new(void)
{
    fork_init(); /* so that private_enter can tell a fork */
    heap_t *h = heap_map(OS_PAGE_SIZE);
    if (!h) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    /* Without MADV_WIPEONFORK (Linux < 4.14) fork_ok stays set in a child:
     * then only the slow paths notice a fork (fork_gen). */
    (void)os_wipe_on_fork(fork_ok(h), OS_PAGE_SIZE);
    *fork_ok(h) = FORK_OK;
    h->fork_gen = atomic_load_explicit(&lock_generation, memory_order_relaxed);
    h->is_private = 1;
    private_list_add(h);
    vg_memcheck_detect();
    if (VG_ON)
        return (emma_heap_t *)((uint8_t *)h + VG_HANDLE_OFFSET);
    return (emma_heap_t *)h;
}

/* Allocation past the fast path, and every allocation of the other calls. */
static void *heap_alloc_in(heap_t *h, size_t size, size_t align, bool zero)
{
    private_begin(h);
    void *p = align <= MIN_ALIGN ? alloc_generic(size, MIN_ALIGN, h) : alloc_generic(size, align, h);
    private_leave(h);
    if (zero && p && size <= LARGE_MAX && align <= LARGE_MAX)
        mem_zero(p, size); /* huge blocks are fresh mappings: zero already */
    return p;
}

static inline void *vg_heap_alloc(heap_t *h, size_t size, size_t align, bool zero)
{
    return vg_alloc_from(heap_alloc_in, h, size, align, zero);
}

/* Before emma_heap_reset or _destroy drops them: every block of h (every
 * slot carved in its segments, quarantined ones too, and its huge blocks)
 * released to memcheck, quietly (free slots are no blocks to it). */
static void vg_segments_release(segment_t *seg)
{
    for (; seg; seg = seg->all_next)
        for (unsigned i = 0; i < seg->page_count; i++) {
            page_t *page = &seg->pages[i];
            if (!page->in_use)
                continue;
            for (uint32_t k = 0; k < page->capacity; k++)
                VALGRIND_FREELIKE_BLOCK(page->start + (size_t)k * page->block_size, 0);
            VALGRIND_MAKE_MEM_NOACCESS(page->start, (size_t)page->capacity * page->block_size);
        }
}

static EMMA_NOINLINE EMMA_COLD void vg_heap_release_all(heap_t *h)
{
    vg_quiet();
    vg_segments_release(h->all_segments);
    vg_segments_release(h->lost_segments);
    huge_list_lock(h);
    for (segment_t *seg = h->huge_blocks; seg; seg = seg->next)
        VALGRIND_FREELIKE_BLOCK(seg->pages[0].start, 0);
    gen_unlock(&h->lock);
    vg_loud();
}

/* emma_heap_alloc past its fast path: with the same arguments in the same
 * registers, so that the fast path moves none of them. */
static EMMA_NOINLINE void *heap_alloc_slow(emma_heap_t *heap, size_t size, size_t align)
{
    heap_t *h = handle_heap(heap);
    if (unlikely(!align_ok(align, NULL, "emma_heap_alloc")))
        return NULL;
    if (VG_ON)
        return vg_heap_alloc(h, size, align, false);
    private_enter(h);
    return align <= MIN_ALIGN ? alloc_generic(size, MIN_ALIGN, h) : alloc_generic(size, align, h);
}

/* The fast path is heap_alloc's pop behind one bit test of align and the
 * fork_ok test: a few instructions more than malloc's (which loads its
 * heap from TLS instead).  It works on the handle (the heap itself but
 * under Valgrind). */
EMMA_API void *emma_heap_alloc(emma_heap_t *heap, size_t size, size_t align)
{
    (void)heap_arg(heap, "emma_heap_alloc");
    heap_t *h = (heap_t *)heap;
    _Static_assert(MIN_ALIGN == 16, "FORK_OK has bits 1, 2, 4, 8 and 16");
    if (likely(align <= MIN_ALIGN && ((*(volatile uint32_t *)fork_ok(h) >> align) & 1u) &&
               size <= DIRECT_MAX)) {
        void *b = page_pop(h->direct[(size + MIN_ALIGN - 1) / MIN_ALIGN]);
        if (likely(b != NULL))
            return b;
    }
    return heap_alloc_slow(heap, size, align);
}

EMMA_API void *emma_heap_alloc_zeroed(emma_heap_t *heap, size_t size, size_t align)
{
    heap_t *h = heap_arg(heap, "emma_heap_alloc_zeroed");
    if (unlikely(!align_ok(align, NULL, "emma_heap_alloc_zeroed")))
        return NULL;
    if (VG_ON)
        return vg_heap_alloc(h, size, align, true);
    return heap_alloc_in(h, size, align, true);
}

/* emma_heap_dealloc of a block on a page the handle does not own (huge
 * blocks, quarantined segments, every block under Valgrind), with the
 * caller's arguments in their registers. */
static EMMA_NOINLINE void heap_dealloc_other(emma_heap_t *heap, void *ptr)
{
    (void)heap;
    if (VG_ON) {
        vg_release(ptr, "emma_heap_dealloc"); /* FREELIKE, then freed */
        return;
    }
    free_generic(ptr, "emma_heap_dealloc");
}

/* The user's free of block p reached its page's slow path (the page's
 * queue changes). */
static EMMA_NOINLINE void heap_dealloc_slow(heap_t *h, void *p)
{
    private_enter(h);
    segment_t *seg = segment_of(p);
    if (seg->heap == h) /* else just quarantined */
        page_free_local_slow(h, page_of(seg, p));
}

EMMA_API void emma_heap_dealloc(emma_heap_t *heap, void *ptr, size_t size, size_t align)
{
    heap_t *h = heap_arg(heap, "emma_heap_dealloc");
    if (!ptr)
        return;
    if (config_checks) {
        if (VG_ON) {
            heap_dealloc_other(heap, ptr);
            return;
        }
        check_layout(ptr, size, align, "emma_heap_dealloc");
        check_in_heap(h, ptr, "emma_heap_dealloc");
        check_mark_free(ptr, "emma_heap_dealloc");
    }
    h = (heap_t *)heap; /* the handle: no segment's owner under Valgrind */
    segment_t *seg = segment_of(ptr);
    if (unlikely(seg->heap != h)) {
        heap_dealloc_other(heap, ptr);
        return;
    }
    heap_free_local_with(h, page_of(seg, ptr), ptr, "emma_heap_dealloc", heap_dealloc_slow);
}

/* Moved (never resized in place), so that memcheck follows the
 * definedness of the copied bytes into the new block. */
static EMMA_NOINLINE EMMA_COLD void *vg_heap_realloc(heap_t *h, void *p, size_t old_size, size_t align,
                                                     size_t new_size)
{
    void *q = vg_heap_alloc(h, new_size, align, false);
    if (!q || !p)
        return q;
    mem_copy(q, p, old_size < new_size ? old_size : new_size);
    vg_release(p, "emma_heap_realloc");
    return q;
}

EMMA_API void *emma_heap_realloc(emma_heap_t *heap, void *ptr, size_t old_size, size_t align,
                                 size_t new_size)
{
    heap_t *h = heap_arg(heap, "emma_heap_realloc");
    if (unlikely(!align_ok(align, ptr, "emma_heap_realloc")))
        return NULL;
    if (VG_ON)
        return vg_heap_realloc(h, ptr, old_size, align, new_size);
    if (!ptr)
        return heap_alloc_in(h, new_size, align, false);
    if (config_checks) {
        check_layout(ptr, old_size, align, "emma_heap_realloc");
        check_in_heap(h, ptr, "emma_heap_realloc");
    }
    private_begin(h);
    void *q = realloc_block(h, ptr, new_size, align, "emma_heap_realloc");
    private_leave(h);
    return q;
}

/* Unmap every huge block of h, one at a time off its list (a fork loses
 * one at most). */
static void drop_huge_blocks(heap_t *h)
{
    for (;;) {
        huge_list_lock(h);
        segment_t *seg = h->huge_blocks;
        if (seg) {
            h->huge_blocks = seg->next;
            LIST_ORDER();
            if (seg->next)
                seg->next->prev = NULL;
        }
        gen_unlock(&h->lock);
        if (!seg)
            return;
        atomic_fetch_sub_explicit(&huge_stats_blocks, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&huge_stats_bytes, huge_usable(seg, seg->pages[0].start),
                                  memory_order_relaxed);
        count_huge(seg, false);
        addrmap_clear(seg, seg->reserve_size);
        os_unmap(seg, seg->reserve_size);
    }
}

EMMA_API void emma_heap_reset(emma_heap_t *heap)
{
    heap_t *h = heap_arg(heap, "emma_heap_reset");
    if (VG_ON) {
        vg_heap_release_all(h); /* every block: no access */
        vg_quiet();
    }
    private_begin(h);
    drop_huge_blocks(h);
    drop_lost_segments(h);
    /* Forget every page queue and remote free: each page in use becomes a
     * free page of its segment (still resident, counted dirty), so the
     * next allocations cut them again. */
    atomic_store_explicit(&h->remote_pages, NULL, memory_order_relaxed);
    heap_reset(h);
    mem_zero(h->bins, sizeof h->bins);
    mem_zero(h->parked, sizeof h->parked);
    for (int k = 0; k <= KIND_XLARGE; k++)
        h->segments[k] = NULL;
    for (segment_t *seg = h->all_segments; seg; seg = seg->all_next)
        segment_reset(h, seg);
    private_leave(h);
    if (VG_ON)
        vg_loud();
}

EMMA_API void emma_heap_destroy(emma_heap_t *heap)
{
    if (!heap)
        return;
    heap_t *h = heap_arg(heap, "emma_heap_destroy");
    if (VG_ON) {
        vg_heap_release_all(h); /* its blocks are gone, not leaked */
        vg_quiet();
    }
    private_begin(h);
    /* off the list first: a fork child never finds it half destroyed */
    private_list_remove(h);
    drop_huge_blocks(h);
    drop_lost_segments(h);
    segment_t *seg = h->all_segments;
    while (seg) {
        segment_t *next = seg->all_next;
        segment_unmap(seg);
        seg = next;
    }
    os_unmap(h, PRIVATE_MAP_SIZE);
    if (VG_ON)
        vg_loud();
}

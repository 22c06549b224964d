/* The interfaces of lib/'s modules, one section per file, in layer order
 * (OS at the bottom, the allocation paths at the top), plus the inline
 * helpers of the locks and of finding the calling thread's heap.  The
 * inline fast paths live in alloc.h, for the files that need them.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_INTERNAL_H
#define EMMA_INTERNAL_H

#include "types.h"
#include "sizeclass.h"

/* ------------------------------------------------------------------ */
/* os.c: the only code that talks to the kernel                        */

#define EMMA_ENOMEM 12
#define EMMA_EINVAL 22
#define EMMA_EBUSY 16

EMMA_HIDDEN void *os_map(size_t size);
EMMA_HIDDEN void *os_map_aligned(size_t size, size_t align, size_t offset, size_t *out_size);
EMMA_HIDDEN void *os_map_aligned_part(size_t size);
EMMA_HIDDEN bool os_unmap(void *p, size_t size);
EMMA_HIDDEN size_t os_address_space_limit(void);
EMMA_HIDDEN size_t os_bytes_mapped(void);
EMMA_HIDDEN size_t os_resident_bytes(void *p, size_t size);
EMMA_HIDDEN void *os_remap(void *p, size_t old_size, size_t new_size, size_t align, size_t offset,
                             bool pieces);
EMMA_HIDDEN void os_purge(void *p, size_t size);
EMMA_HIDDEN bool os_wipe_on_fork(void *p, size_t size);
EMMA_HIDDEN void os_populate(void *p, size_t size);
EMMA_HIDDEN int os_move_pages(void *src, size_t len, void *dst);
EMMA_HIDDEN void os_set_errno(int e);
EMMA_HIDDEN uintptr_t os_secret(void);
EMMA_HIDDEN void os_yield(void);
EMMA_HIDDEN void os_signals_block(uint64_t *old);
EMMA_HIDDEN void os_signals_restore(const uint64_t *old);
EMMA_HIDDEN int32_t os_getpid(void);
EMMA_HIDDEN uint32_t os_gettid(void);
EMMA_HIDDEN bool os_thread_gone(uint32_t tid);
EMMA_HIDDEN bool os_seccomp_active(void);
/* The calling thread's alternate signal stack: true if it runs on it now
 * (or if that cannot be told); [*lo, *hi) is its range (empty if it has
 * none). */
EMMA_HIDDEN bool os_on_altstack(uintptr_t *lo, uintptr_t *hi);
/* FUTEX_TRYLOCK_PI on a word holding its owner's TID */
enum os_pi_result {
    OS_PI_TAKEN,       /* the word was free and is now ours */
    OS_PI_OWNER_DEAD,  /* ESRCH: the owner thread no longer exists */
    OS_PI_SELF,        /* EDEADLK: the owner's TID is the caller's */
    OS_PI_UNSUPPORTED, /* ENOSYS, EPERM, EINVAL: no PI futexes here */
    OS_PI_BUSY,        /* a live owner, or anything else */
};
EMMA_HIDDEN enum os_pi_result os_futex_trylock_pi(_Atomic uint32_t *word);
EMMA_HIDDEN void os_write_stderr(const char *s, size_t n);
EMMA_HIDDEN bool os_read_safe(void *dst, const void *src, size_t n);
/* A full memory barrier on every CPU running a thread of this process
 * (membarrier(2), private expedited, registered at the first call); false
 * where the kernel lacks it or a seccomp filter might kill us for it. */
EMMA_HIDDEN bool os_membarrier(void);
EMMA_HIDDEN EMMA_NORETURN void os_abort(void);

/* The address map (os.c): one entry per 4 MiB chunk says whether emma
 * mapped it, how much of it, and where a segment header is.  addrmap_mark
 * fails (false) when the map itself cannot be mapped: the caller must not
 * hand out memory the map does not know. */
#define CHUNK_NONE 0
#define CHUNK_HEADER 1
#define CHUNK_INTERIOR 2
#define CHUNK_HUGE 3 /* the header chunk of a huge mapping */
EMMA_HIDDEN bool addrmap_mark(void *start, size_t size, bool header);
EMMA_HIDDEN void addrmap_clear(void *start, size_t size);
EMMA_HIDDEN unsigned addrmap_lookup(const void *p);
EMMA_HIDDEN struct segment *addrmap_segment(const void *p);
/* Both at once, for the boundary checks: addrmap_lookup(p), and
 * addrmap_segment(p) in *seg. */
EMMA_HIDDEN unsigned addrmap_check(const void *p, struct segment **seg);
EMMA_HIDDEN bool addrmap_walk(bool (*fn)(segment_t *, void *), void *arg);
EMMA_HIDDEN void addrmap_teardown(void);

/* ------------------------------------------------------------------ */
/* check.c: boundary checks and fatal errors                           */

EMMA_HIDDEN EMMA_NORETURN EMMA_COLD void emma_fatal(const char *func, const char *problem,
                                                    const void *p);
EMMA_HIDDEN void check_pointer(const void *p, const char *func);
/* Every build, on free's, realloc's and malloc_usable_size's slow paths:
 * a pointer whose 4 MiB chunk holds no segment header of ours (4 MiB or
 * more into a huge block, whose bytes there are the program's) is
 * reported (check_bad_header), not followed.  The header names itself
 * (segment_t.self, written with the cookie: segment_stamp): a compare
 * with a memory operand and a branch. */
/* (Not declared noreturn, though it never returns: a caller that returns
 * right after it reaches it by a jump, with no stack frame set up.) */
EMMA_HIDDEN EMMA_COLD void check_bad_header(const void *p, const char *func);
static inline bool header_bad(const segment_t *seg) { return unlikely(seg->self != seg); }
/* segment.c: write seg's cookie and self */
EMMA_HIDDEN void segment_stamp(segment_t *seg);
/* Every build, on the slow path of free and realloc of a huge block: the
 * pointer must be the block's start and the block live (not in the huge
 * cache).  A pointer into a huge block's first 4 MiB masks to its header
 * like the block's own, so without this free(p + 4096) would free the
 * whole block while the program still uses it. */
static inline void huge_check_pointer(const segment_t *seg, const void *p, const char *func)
{
    if (unlikely(!seg->pages[0].in_use))
        emma_fatal(func, "double free", p);
    if (unlikely((const uint8_t *)p != seg->pages[0].start))
        emma_fatal(func, "interior or misaligned pointer", p);
}
EMMA_HIDDEN void check_layout(const void *p, size_t size, size_t align, const char *func);
EMMA_HIDDEN void check_mark_free(const void *p, const char *func);
EMMA_HIDDEN void check_not_private(const void *p, const char *func);
EMMA_HIDDEN size_t check_usable(const void *p, const char *func);
/* The boundary checks' record of which blocks are free: one bit per 16
 * bytes of a segment, set when a block is carved or freed, cleared when it
 * is handed out, in the segment header (CHECK_BITMAP_BYTES, types.h): out
 * of band, so a block's contents never make it look free, and a free block
 * whose memory was purged (sparse.c) still reads as free. */
static inline _Atomic uint64_t *check_bitmap_word(const void *p, uint64_t *bit)
{
    segment_t *seg = segment_of(p);
    size_t i = (size_t)((uintptr_t)p - (uintptr_t)seg) / MIN_ALIGN;
    _Atomic uint64_t *map = (_Atomic uint64_t *)((uint8_t *)seg + SEGMENT_HEADER_SIZE(seg->page_count) -
                                                 CHECK_BITMAP_BYTES);
    *bit = (uint64_t)1 << (i % 64);
    return map + i / 64;
}
static inline void check_mark_carved(void *b)
{
    if (config_checks) {
        uint64_t bit;
        _Atomic uint64_t *w = check_bitmap_word(b, &bit);
        atomic_fetch_or_explicit(w, bit, memory_order_relaxed);
    }
}
static inline void check_mark_allocated(void *b)
{
    if (config_checks) {
        uint64_t bit;
        _Atomic uint64_t *w = check_bitmap_word(b, &bit);
        atomic_fetch_and_explicit(w, ~bit, memory_order_relaxed);
    }
}

/* ------------------------------------------------------------------ */
/* Free-list links (page.c, sparse.c, free.c, alloc.h).  With hardening
 * every link is stored XOR list_key, a per-process secret set before the
 * first heap exists (heap_new): a block overwritten after its free, or a
 * forged link, decodes to garbage instead of steering allocation to an
 * address of the attacker's choice.  Lists end with PAGE_END(page). */

EMMA_HIDDEN extern uintptr_t list_key;
static inline uintptr_t link_key(void) { return config_hardening ? list_key : 0; }
static inline block_t *link_get(const block_t *b)
{
    return (block_t *)((uintptr_t)b->next ^ link_key());
}
static inline void link_set(block_t *b, const block_t *next)
{
    b->next = (block_t *)((uintptr_t)next ^ link_key());
}

/* ------------------------------------------------------------------ */
/* segment.c: segments, their pages, purging free pages                */

EMMA_HIDDEN page_t *segment_page_alloc(heap_t *h, enum segment_kind kind);
/* the same, with c nonzero a page last used for class c first, now being
 * now_ticks() (page_fresh) */
EMMA_HIDDEN page_t *segment_page_alloc_class(heap_t *h, enum segment_kind kind, unsigned c,
                                             uint64_t now);
EMMA_HIDDEN void segment_page_release(heap_t *h, page_t *page);
/* page.c: a page its owner held empty (page_retire) is not held any more */
EMMA_HIDDEN void page_unhold(page_t *page);
/* segment_page_release without the policy's event, for a caller holding
 * h->seg_lock (reclaim.c, releasing a page for its owner) */
EMMA_HIDDEN void segment_page_put(heap_t *h, page_t *page);
EMMA_HIDDEN size_t heap_purge(heap_t *h);
EMMA_HIDDEN size_t heap_purge_older(heap_t *h, uint64_t before, bool wait);
EMMA_HIDDEN size_t segment_header_size(enum segment_kind kind);
EMMA_HIDDEN segment_t *segment_of_page(page_t *page);
EMMA_HIDDEN void segment_unmap(segment_t *seg);
EMMA_HIDDEN void segment_reset(heap_t *h, segment_t *seg);
EMMA_HIDDEN bool segment_move(heap_t *from, heap_t *to, segment_t *seg);
EMMA_HIDDEN void pool_forget(void);
EMMA_HIDDEN unsigned pool_mend(segment_t **list, unsigned count);
/* salvage.c's use of a quarantined heap's segment: purge page i (returns
 * the bytes covered); give the segment, every page free, to the pool. */
EMMA_HIDDEN size_t segment_purge_page(segment_t *seg, unsigned i);
EMMA_HIDDEN void segment_salvaged(segment_t *seg);
/* Is page i of seg mapped (not past a partial segment's mapping)? */
EMMA_HIDDEN bool segment_page_mapped(const segment_t *seg, unsigned i);

/* ------------------------------------------------------------------ */
/* page.c: carving pages, the class queues, collecting remote frees    */

EMMA_HIDDEN void page_init(page_t *page, unsigned c);
EMMA_HIDDEN void page_extend(page_t *page);
EMMA_HIDDEN page_t *page_fresh(heap_t *h, unsigned c);
EMMA_HIDDEN void bin_push_front(heap_t *h, page_t *page);
EMMA_HIDDEN void bin_push_back(heap_t *h, page_t *page);
EMMA_HIDDEN void bin_remove(heap_t *h, page_t *page);
EMMA_HIDDEN void bin_repair(heap_t *h, unsigned c, page_t *drop);
EMMA_HIDDEN void page_park(heap_t *h, page_t *page);
EMMA_HIDDEN page_t *page_unpark(heap_t *h, unsigned c);
EMMA_HIDDEN bool page_should_park(const page_t *page);
EMMA_HIDDEN void page_free_local_slow(heap_t *h, page_t *page);
EMMA_HIDDEN void page_free_local_slow_marked(heap_t *h, page_t *page);
EMMA_HIDDEN void page_mark_full(heap_t *h, page_t *page);
/* sparse.c's pass: held pages past what is held for good, found empty */
EMMA_HIDDEN void heap_release_retired(heap_t *h);
EMMA_HIDDEN void heap_collect_remote(heap_t *h);
EMMA_HIDDEN void remote_pages_push(heap_t *h, page_t *page);

/* Take a page's list of remote frees (types.h: TF_*) for its owner or a
 * reclaimer that took the page off its heap's remote_pages stack.  The
 * list's generation moves first: the tags (free.c's remote_tag) of the
 * blocks taken stop matching before any of them can be handed out. */
static inline uintptr_t tf_take(page_t *page)
{
    atomic_store_explicit(&page->tf_gen,
                          atomic_load_explicit(&page->tf_gen, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return atomic_exchange_explicit(&page->thread_free, 0, memory_order_acq_rel);
}

/* Under h->collect_lock: take h's remote_pages stack, and step through it
 * (the journal that lets a holder's death lose one page, not the stack). */
EMMA_HIDDEN page_t *remote_pages_take(heap_t *h);
EMMA_HIDDEN page_t *remote_pages_next(heap_t *h, page_t *page);
EMMA_HIDDEN void heap_release_empty_pages(heap_t *h);

/* ------------------------------------------------------------------ */
/* sparse.c: giving back free OS pages inside sparse pages             */

EMMA_HIDDEN void sparse_pass(heap_t *h);
EMMA_HIDDEN void page_revive(page_t *page);
/* Purge the OS pages of page that hold only free blocks (salvage.c too). */
EMMA_HIDDEN void page_thin(page_t *page);
/* page_thin on every page of h's class queues (trim): h is the caller's, or
 * held exclusively. */
EMMA_HIDDEN void heap_thin_all(heap_t *h);
/* A bit per block of a page (a small page of MIN_ALIGN-byte blocks has
 * the most), and marking the blocks of one of its lists in it (NULL: an
 * empty local_free): false if a link leaves the carved part of the page,
 * misses a block boundary or names a block already marked (sparse.c, and
 * salvage.c's checks of quarantined pages). */
#define PAGE_MAX_BLOCKS (((size_t)1 << SMALL_PAGE_SHIFT) / MIN_ALIGN)
typedef struct {
    uint64_t w[PAGE_MAX_BLOCKS / 64];
} block_map_t;
static inline bool block_map_get(const block_map_t *m, size_t i) { return (m->w[i / 64] >> (i % 64)) & 1; }
static inline void block_map_set(block_map_t *m, size_t i) { m->w[i / 64] |= (uint64_t)1 << (i % 64); }
EMMA_HIDDEN bool page_mark_list(const page_t *page, block_t *b, block_map_t *map, size_t *count);

/* A remote-free list that a thread which does not own the page took whole
 * (tf_take: nobody else can reach its blocks), for page_thin_remote. */
typedef struct {
    block_t *head, *tail;        /* head NULL: no block left */
    uint32_t count;
    uint32_t gone_count;         /* out: blocks that left the list, absent now */
    uint16_t gone_bits;          /* out: the OS pages purged with them */
} remote_list_t;
/* Purge the OS pages of the page that only the list's blocks cover (never
 * memory the owner may touch: its own lists, live blocks, blocks it carves
 * meanwhile).  A small block whose link was purged leaves the list; the
 * caller records it in page->remote_gone for the owner.  Returns the bytes
 * purged. */
EMMA_HIDDEN size_t page_thin_remote(page_t *page, remote_list_t *l);

/* The owner, on a slow path: count the blocks other threads' thinning took
 * off its page's remote-free list as absent, as its own thinning does. */
static inline void page_absorb_remote(page_t *page)
{
    if (likely(atomic_load_explicit(&page->remote_gone, memory_order_relaxed) == 0))
        return;
    uint64_t w = atomic_exchange_explicit(&page->remote_gone, 0, memory_order_acquire);
    page->purged |= REMOTE_GONE_BITS(w);
    page->absent += REMOTE_GONE_COUNT(w);
    if (!page->in_full && page->slow_at != SLOW_AT_HELD)
        page->slow_at = SLOW_AT_EMPTY(page);
}

/* ------------------------------------------------------------------ */
/* huge.c: blocks in mappings of their own                             */

/* self: the heap whose slow path the caller is in (without TLS: whose
 * lock it holds), or NULL; when a mapping fails it is trimmed with every
 * other cache before the one retry (policy_release_for_retry), which
 * could not lock it. */
EMMA_HIDDEN void *huge_alloc(size_t size, size_t align, bool zero, heap_t *self);
EMMA_HIDDEN void *huge_alloc_exact(size_t size, heap_t *self);
EMMA_HIDDEN void huge_free(segment_t *seg);
/* Under an address-space limit (RLIMIT_AS), does emma map more than
 * 1/share of it?  (The limit is asked of the kernel once per decay time,
 * and at once in a fork child.) */
EMMA_HIDDEN bool space_scarce(unsigned share);
EMMA_HIDDEN void *huge_realloc(segment_t *seg, void *p, size_t new_size, heap_t *self);
EMMA_HIDDEN size_t huge_usable(segment_t *seg, const void *p);
EMMA_HIDDEN void cache_forget(void);
EMMA_HIDDEN void huge_tails_forget(void);
EMMA_HIDDEN void *huge_alloc_private(size_t size, size_t align);

/* ------------------------------------------------------------------ */
/* fork.c: noticing a fork                                             */

EMMA_HIDDEN bool fork_detected(void);
/* fork.c's wipe-on-fork word (NULL until fork_init, or where the kernel
 * has no MADV_WIPEONFORK), FORK_STATE_OK in a process that is no fork
 * child (or one that recovered) */
EMMA_HIDDEN extern _Atomic(_Atomic uint32_t *) fork_wipe_word;
#define FORK_STATE_OK 2u
/* false: certainly not a fork child; true: ask fork_detected */
static inline bool fork_maybe(void)
{
    _Atomic uint32_t *w = atomic_load_explicit(&fork_wipe_word, memory_order_acquire);
    return !w || atomic_load_explicit(w, memory_order_acquire) != FORK_STATE_OK;
}
EMMA_HIDDEN void fork_recover(void (*recover)(void));
EMMA_HIDDEN void fork_init(void);
EMMA_HIDDEN void fork_teardown(void);

/* ------------------------------------------------------------------ */
/* Locks (heaps without TLS): inline, since then every malloc and free
 * takes and drops one.  Nobody waits on one particular lock: heap.c
 * skips a heap whose lock is taken. */

static inline bool spin_trylock(_Atomic uint32_t *l)
{
    uint32_t expected = 0;
    return atomic_load_explicit(l, memory_order_relaxed) == 0 &&
           atomic_compare_exchange_strong_explicit(l, &expected, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}
static inline void spin_unlock(_Atomic uint32_t *l) { atomic_store_explicit(l, 0, memory_order_release); }
/* A lock that is waited on (private heaps' huge-block lists): spin, then
 * yield. */
static inline void spin_lock(_Atomic uint32_t *l)
{
    for (unsigned k = 0; !spin_trylock(l); k++) {
        if (k < 64)
            __builtin_ia32_pause();
        else
            os_yield();
    }
}

/* The policy's locks (heap->seg_lock, heap->collect_lock, the segment
 * pool, the huge cache, private heaps' lists; slow paths only, held for a
 * bounded time) hold a word that names their holder: the lock generation
 * (bits 22-31, GEN_FIELD: never 0) and the holder's TID (bits 0-21; Linux
 * TIDs stay below 2^22; 0 for an unnamed holder).  A fork child's recovery
 * advances the generation before the child takes any of them (each taker
 * first asks whether it is in a fork child: a load or two), and a waiter
 * probes a named holder with tgkill(pid, tid, 0): a lock held in an older
 * generation, or by a thread that no longer exists (cancelled or killed
 * inside emma), is taken over, and `forget` drops what it guarded
 * (policy.c).  Unnamed holders (gen_word(false)) are for locks only ever
 * taken under another lock that nobody waits for (--disable-tls heaps). */
#define GEN_TID_BITS 22
#define GEN_TID_MASK ((1u << GEN_TID_BITS) - 1)
EMMA_HIDDEN extern _Atomic uint32_t lock_generation;
EMMA_HIDDEN extern _Atomic size_t locks_recovered; /* emma_stats() */
/* heap.c: recover if we are a fork child (heap_check_fork: a load or
 * two inline, fork_maybe) */
EMMA_HIDDEN void heap_check_fork_slow(void);
static inline void heap_check_fork(void)
{
    if (unlikely(fork_maybe()))
        heap_check_fork_slow();
}
/* policy.c: the word a lock taken now by this thread holds; named: with
 * the caller's TID (cached per thread with TLS, else a system call). */
EMMA_HIDDEN uint32_t gen_word(bool named);
#if EMMA_CONFIG_TLS
/* policy.c: the thread's named word and the generation it was made in */
EMMA_HIDDEN extern __thread uint32_t tls_lock_word __attribute__((tls_model("initial-exec")));
EMMA_HIDDEN extern __thread uint32_t tls_lock_word_gen __attribute__((tls_model("initial-exec")));
#endif
/* gen_word, the thread's named word read inline when it is up to date
 * (the shared heap takes a named lock at every big malloc and free) */
static inline uint32_t gen_word_now(bool named)
{
#if EMMA_CONFIG_TLS
    if (named && likely(tls_lock_word_gen ==
                            atomic_load_explicit(&lock_generation, memory_order_relaxed) &&
                        tls_lock_word != 0))
        return tls_lock_word;
#endif
    return gen_word(named);
}
/* false, without the lock, if the calling thread itself holds it (named
 * locks only: a signal handler that interrupted the holder; the caller
 * does without), or if one live holder kept it for about 0.2 s (one that
 * left emma by siglongjmp: policy.c, GIVE_UP_TICKS) */
EMMA_HIDDEN bool gen_lock_wait_as(_Atomic uint32_t *l, void (*forget)(void), bool named);
/* gen_lock_wait for a caller that repairs what the lock guards itself:
 * true if the lock was taken over from a holder lost in a fork or dead. */
EMMA_HIDDEN bool gen_lock_wait_stale(_Atomic uint32_t *l);
/* heap.c's recovery after a siglongjmp out of emma (heap_left_recover):
 * release the process-wide locks still named by `me`, the calling
 * thread's word, each after its `forget` (policy.c; segment.c, huge.c,
 * depot.c and salvage.c for theirs). */
EMMA_HIDDEN void policy_locks_left(uint32_t me);
EMMA_HIDDEN void gen_release_left(_Atomic uint32_t *l, uint32_t me, void (*forget)(void));
EMMA_HIDDEN void segment_locks_left(uint32_t me);
EMMA_HIDDEN void huge_locks_left(uint32_t me);
EMMA_HIDDEN void depot_locks_left(uint32_t me);
EMMA_HIDDEN void salvage_locks_left(uint32_t me);
/* The pool and the huge cache on allocation and release paths, and decay
 * passes, never wait (a signal handler may have interrupted the holder):
 * they try, and do without when the lock is taken (by a live holder). */
EMMA_HIDDEN bool gen_lock_try_as(_Atomic uint32_t *l, void (*forget)(void), bool named);
static inline bool gen_trylock_as(_Atomic uint32_t *l, bool named)
{
    /* a fork child recovers before it takes any of these locks, so that
     * every lock held in an older generation is one a lost thread held */
    heap_check_fork();
    uint32_t expected = 0;
    return atomic_load_explicit(l, memory_order_relaxed) == 0 &&
           atomic_compare_exchange_strong_explicit(l, &expected, gen_word_now(named),
                                                   memory_order_acquire, memory_order_relaxed);
}
static inline bool gen_trylock(_Atomic uint32_t *l) { return gen_trylock_as(l, true); }
static inline bool gen_lock_try(_Atomic uint32_t *l, void (*forget)(void))
{
    return gen_lock_try_as(l, forget, true);
}
/* Taken, or false if this very thread holds it (a signal handler that
 * interrupted the holder): the pool's and the huge cache's trims. */
static inline bool gen_lock(_Atomic uint32_t *l, void (*forget)(void))
{
    return gen_trylock(l) || gen_lock_wait_as(l, forget, true);
}
/* A heap's seg_lock and collect_lock: named with TLS (other threads wait
 * for them); without TLS they are only taken under the heap's lock, which
 * nobody waits for, and a TID would cost a system call each time. */
static inline bool heap_gen_trylock(_Atomic uint32_t *l) { return gen_trylock_as(l, EMMA_CONFIG_TLS); }
static inline void heap_gen_lock(_Atomic uint32_t *l)
{
    /* never held by this thread: its signal handlers keep off its heap */
    while (!gen_trylock_as(l, EMMA_CONFIG_TLS) && !gen_lock_wait_as(l, NULL, EMMA_CONFIG_TLS))
        ;
}
static inline void gen_unlock(_Atomic uint32_t *l) { spin_unlock(l); }
static inline bool heap_trylock(heap_t *h) { return spin_trylock(&h->lock); }
static inline void heap_unlock(heap_t *h) { spin_unlock(&h->lock); }

/* ------------------------------------------------------------------ */
/* heap.c: heaps, and the calling thread's heap                        */

EMMA_HIDDEN extern page_t empty_page;
EMMA_HIDDEN extern heap_t heap_empty;
EMMA_HIDDEN heap_t *heap_new(void);
/* heap_new with `extra` bytes mapped after the heap (HEAP_MAP_SIZE) */
EMMA_HIDDEN heap_t *heap_map(size_t extra);
EMMA_HIDDEN void heap_delete(heap_t *h);
EMMA_HIDDEN void heap_teardown(void);
EMMA_HIDDEN void heap_reset(heap_t *h);
EMMA_HIDDEN heap_t *heap_acquire_for_thread(void);
EMMA_HIDDEN heap_t *heap_list_first(void);
EMMA_HIDDEN bool heap_take_if_dead(heap_t *h, uint32_t tid);
/* slow_enter found a claim on h (reclaim.c): wait until it is released,
 * repairing h's class queues if the claimer died with it. */
EMMA_HIDDEN void heap_claim_wait(heap_t *h);
/* reclaim.c: under h's claim lock taken over from a claimer that died
 * (or left emma by siglongjmp) while unlinking a page from a class queue:
 * mend that queue (page.c: bin_repair). */
EMMA_HIDDEN void claim_mend(heap_t *h);
/* The shared heaps: blocks of the classes above SHARED_MIN come from them,
 * whichever thread asks (alloc.c) and frees (free.c), each used under its
 * lock, only ever try-locked (shared_trylock: the lock word names its
 * holder, as the policy's locks do, with TLS).  heap_lock_shared(i) is
 * shared heap i locked (made on first use), or NULL if it is taken or
 * cannot be made; with `probe`, a lock whose holder died or was lost in
 * a fork is taken over, and a heap such a holder left in the middle of a
 * slow path is quarantined and replaced.  heap_t.spare is SPARE_SHARED
 * for them (1 for the signal handlers').  In front of them each thread
 * keeps the last block up to 512 KiB it freed of each class (free.c:
 * big_cache_put). */
#define SHARED_HEAPS 1
#define SPARE_SHARED 2
/* Blocks above 64 KiB only (the large and extra large classes): below, a
 * tight malloc+free loop of 16-32 KiB blocks ran 2.5-3x slower behind the
 * lock (bench/tight 1 3000000 16384,32768 1: 0.25-0.83 s against
 * 0.13-0.53 s without it), while the medium classes' share of bench
 * mstress's peak was small (69-72 MiB served from 64 KiB up, 59-63 MiB
 * from 8 KiB up, 112-115 MiB with no shared heap). */
#define SHARED_MIN (MEDIUM_MAX + 1)
EMMA_HIDDEN heap_t *heap_lock_shared(unsigned i, bool probe);
/* Shared heap i, unlocked, or NULL if not made yet. */
EMMA_HIDDEN extern _Atomic(heap_t *) shared_heaps[SHARED_HEAPS];
static inline heap_t *heap_shared(unsigned i)
{
    return atomic_load_explicit(&shared_heaps[i], memory_order_acquire);
}
static inline bool heap_is_shared(const heap_t *h) { return h->spare == SPARE_SHARED; }
static inline bool shared_trylock(heap_t *h) { return gen_trylock_as(&h->lock, EMMA_CONFIG_TLS); }
/* If shared heap h's lock is free: collect the frees other threads pushed
 * to its pages' remote lists (inside its slow path), and unlock it. */
EMMA_HIDDEN void shared_collect(heap_t *h);
/* Unlock, then collect the frees other threads pushed to the heap's
 * pages' remote lists meanwhile, finding its lock taken (free.c: such a
 * free tries the lock again after its push).  A plain store, no barrier:
 * an exchange here (a full barrier) made a loop of 128-512 KiB malloc+free
 * pairs 1.5x slower (bench/tight 1 4000000 131072,262144,524288 1:
 * task-clock 202-221 against 132-139 ms; tcmalloc 129-149).  So the load
 * may pass the store: a free that pushes meanwhile can find the lock
 * still taken while we find no page pushed, and its block then waits on
 * the page's list for the next unlock (any big malloc or free), decay
 * pass or trim (policy.c, reclaim.c), whichever comes first; it is
 * never lost. */
static inline void shared_unlock(heap_t *h)
{
    atomic_store_explicit(&h->lock, 0, memory_order_release);
    if (unlikely(atomic_load_explicit(&h->remote_pages, memory_order_relaxed) != NULL))
        shared_collect(h);
}

#if EMMA_CONFIG_TLS
/* tls_heap: the thread's heap, or heap_empty before its first allocation,
 * or heap_busy while the thread is inside a slow path of its heap (then a
 * signal handler that allocates on this thread reaches alloc_generic with
 * heap_busy and takes a spare heap, and its frees go to the remote lists:
 * nothing touches the interrupted heap).  tls_slow_heap: the heap whose
 * slow path the thread is in, for the code that needs it (huge.c's
 * cache, through tls_heap_or_null), NULL otherwise. */
EMMA_HIDDEN extern __thread heap_t *tls_heap __attribute__((tls_model("initial-exec")));
EMMA_HIDDEN extern __thread heap_t *tls_slow_heap __attribute__((tls_model("initial-exec")));
EMMA_HIDDEN extern heap_t heap_busy;
/* tls_left_heap: the heap of the thread's outermost slow path in progress
 * (its stack pointer in heap_t.busy_sp), NULL outside slow paths.  A
 * signal handler that leaves emma with siglongjmp leaves it set: the
 * thread's next call that finds heap_busy sees that frame gone from the
 * stack (heap.c: heap_left_recover) and takes a heap again. */
EMMA_HIDDEN extern __thread heap_t *tls_left_heap __attribute__((tls_model("initial-exec")));
static inline uintptr_t stack_pointer(void)
{
    uintptr_t sp;
    __asm__ volatile("movq %%rsp, %0" : "=r"(sp));
    return sp;
}
/* heap.c: after a siglongjmp out of a slow path (tls_left_heap's frame is
 * gone), quarantine what it was changing, give back what it held, and
 * set tls_heap to the thread's own heap again (or heap_empty): true;
 * false in a signal handler that interrupted that slow path. */
EMMA_HIDDEN bool heap_left_recover(void);
/* heap.c: is the frame whose stack pointer was sp gone from the calling
 * thread's stack (left by siglongjmp)?  Never true on a signal stack. */
EMMA_HIDDEN bool frame_left(uintptr_t sp);
static inline heap_t *heap_get(void) { return tls_heap; }
/* The calling thread's heap: the one whose slow path it is in, else its
 * own (NULL before its first allocation, or in a signal handler that
 * interrupted a slow path: slow_enter_self). */
static inline heap_t *tls_heap_or_null(void)
{
    if (tls_slow_heap || tls_heap == &heap_busy)
        return tls_slow_heap;
    return tls_heap == &heap_empty ? NULL : tls_heap;
}
static inline void heap_put(heap_t *h) { (void)h; }
/* A locked spare heap for a signal handler that interrupted a slow path,
 * or NULL. */
EMMA_HIDDEN heap_t *heap_lock_spare(void);
EMMA_HIDDEN void heap_unlock_spare(heap_t *h);

/* Entering and leaving a slow path of h (nestable). */
typedef struct slow_state {
    heap_t *tls, *slow;
    uint8_t busy, outer;
} slow_state;
static inline slow_state slow_enter(heap_t *h)
{
    slow_state s = {tls_heap, tls_slow_heap, h->busy, 0};
    tls_heap = &heap_busy;
    __asm__ volatile("" ::: "memory");
    tls_slow_heap = h;
    h->busy = 1;
    if (!tls_left_heap) {
        /* the outermost slow path: where a siglongjmp would leave it */
        h->busy_sp = stack_pointer();
        __asm__ volatile("" ::: "memory");
        tls_left_heap = h;
        s.outer = 1;
    }
    __asm__ volatile("" ::: "memory");
    /* another thread's claim on the heap while it idled (reclaim.c):
     * wait for it (a load and a branch; the claimer's membarrier orders
     * our store of busy before this load, or its claim before our look) */
    if (unlikely(__atomic_load_n(&h->claim, __ATOMIC_RELAXED) != 0))
        heap_claim_wait(h);
    return s;
}
static inline void slow_leave(heap_t *h, slow_state s)
{
    __asm__ volatile("" ::: "memory");
    h->busy = s.busy;
    tls_slow_heap = s.slow;
    if (s.outer)
        tls_left_heap = NULL;
    __asm__ volatile("" ::: "memory");
    tls_heap = s.tls;
}
/* For work that may use the calling thread's heap (huge.c's cache) but
 * needs none: the thread's heap, in its slow path; NULL (and no heap for
 * tls_heap_or_null) in a signal handler that interrupted a slow path, or
 * before the thread's first allocation. */
static inline heap_t *slow_enter_self(slow_state *st)
{
    heap_t *h = tls_heap;
    if (h == &heap_busy || h == &heap_empty) {
        *st = (slow_state){h, tls_slow_heap, 0, 0};
        tls_slow_heap = NULL;
        return NULL;
    }
    *st = slow_enter(h);
    return h;
}
static inline void slow_leave_self(heap_t *h, slow_state st)
{
    if (h)
        slow_leave(h, st);
    else
        tls_slow_heap = st.slow;
}
/* True in a signal handler that interrupted a slow path of its thread
 * (alloc_spare, slow_enter_self): the interrupted code may hold any of the
 * policy's locks, so policy.c's work, which may wait for them, is skipped
 * there, and the pool and the huge cache are only try-locked. */
static inline bool slow_interrupted(void) { return tls_heap == &heap_busy && !tls_slow_heap; }
/* At an entry point that is not an allocation (emma_trim, a remote step):
 * true in a signal handler that interrupted this thread anywhere inside
 * emma (a fast path's list operation or any slow path), where such work
 * is skipped. */
static inline bool call_interrupted(void) { return tls_heap == &heap_busy; }
#else
#define HEAP_SLOTS 256
#define HEAP_SOFT_LIMIT 64
EMMA_HIDDEN extern _Atomic(heap_t *) heap_slots[HEAP_SLOTS];
EMMA_HIDDEN extern _Atomic unsigned heap_slot_limit;
EMMA_HIDDEN heap_t *heap_lock_any(void);
/* heap_t.owner of a heap taken out of its slot (heap.c: slot_replace);
 * 0 for the others */
#define HEAP_ORPHAN 1u

/* A thread's preferred slot, from its stack address: threads' stacks lie
 * megabytes apart, so each thread tends to keep to a heap of its own. */
static inline unsigned preferred_slot(unsigned limit)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    uint64_t hash = ((sp >> 20) * GOLDEN_RATIO_64) >> 32;
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
/* Without TLS a slow path runs under its heap's lock. */
typedef struct slow_state {
    uint8_t busy;
} slow_state;
static inline slow_state slow_enter(heap_t *h)
{
    slow_state s = {h->busy};
    h->busy = 1;
    return s;
}
static inline void slow_leave(heap_t *h, slow_state s) { h->busy = s.busy; }
static inline heap_t *slow_enter_self(slow_state *st)
{
    (void)st;
    return NULL;
}
static inline void slow_leave_self(heap_t *h, slow_state st) { (void)h, (void)st; }
static inline bool slow_interrupted(void) { return false; }
static inline bool call_interrupted(void) { return false; }
#endif

/* ------------------------------------------------------------------ */
/* alloc.c and free.c: the generic paths behind alloc.h's fast paths   */

EMMA_HIDDEN void *alloc_generic(size_t size, size_t align, heap_t *h);
EMMA_HIDDEN void *alloc_zeroed(size_t size, size_t align);
EMMA_HIDDEN void *realloc_block(heap_t *h, void *p, size_t new_size, size_t align, const char *func);
EMMA_HIDDEN size_t usable_size(const void *p);
EMMA_HIDDEN void mem_copy(void *dst, const void *src, size_t n);
EMMA_HIDDEN void mem_zero(void *dst, size_t n);
EMMA_HIDDEN void free_generic(void *p, const char *func);
/* Push b onto its page's list of remote frees (types.h: TF_*), reporting
 * a block that is on it already; is b on it (freed by another thread, not
 * collected yet)? */
EMMA_HIDDEN void remote_push(segment_t *seg, page_t *page, block_t *b, const char *func);
EMMA_HIDDEN bool remote_listed_now(segment_t *seg, page_t *page, block_t *b);

/* depot.c: blocks of medium and large classes (DEPOT_MIN bytes and more)
 * freed by threads that do not own their page, for any thread to take. */
#define DEPOT_MIN (SMALL_MAX + 1)
EMMA_HIDDEN bool depot_put(segment_t *seg, page_t *page, size_t size, void *p, const char *func);
EMMA_HIDDEN void *depot_take(heap_t *h, unsigned c);
EMMA_HIDDEN size_t depot_release(uint64_t before);
EMMA_HIDDEN void depot_stats(size_t *blocks);
EMMA_HIDDEN void depot_forget(void);
EMMA_HIDDEN EMMA_NORETURN EMMA_COLD void remote_double_free(const void *p); /* page.c */

/* free.c: the threads' big-block slots (heap_t.big_cache).  The slot of
 * class c, for a class above SHARED_MIN (NULL for any other).  Every word
 * changes by one exchange or compare-and-swap: the owner takes and puts,
 * a signal handler that interrupts it may too, and big_cache_drain (a
 * decay pass, a trim) empties every heap's slots from any thread. */
static inline _Atomic(uintptr_t) *big_cache_slot(heap_t *h, unsigned c)
{
    unsigned i = (c - BIG_CACHE_FIRST) / 2;
    return c >= BIG_CACHE_FIRST && i < BIG_CACHE_SLOTS && !(c & 1) ? &h->big_cache[i] : NULL;
}
EMMA_HIDDEN void big_cache_drain(void);
EMMA_HIDDEN void big_cache_stats(size_t *waiting);

/* ------------------------------------------------------------------ */
/* heap_private.c: private heaps (emma_heap_*); teardown.c             */

EMMA_HIDDEN size_t private_heap_count(void);
EMMA_HIDDEN void private_segment_added(heap_t *h, segment_t *seg);
EMMA_HIDDEN void private_segment_removed(heap_t *h, segment_t *seg);
EMMA_HIDDEN void private_huge_link(heap_t *h, segment_t *seg);
EMMA_HIDDEN void private_huge_unlink(segment_t *seg);
EMMA_HIDDEN void *private_huge_alloc(heap_t *h, size_t size, size_t align);
EMMA_HIDDEN bool block_is_private(const void *p);
EMMA_HIDDEN int copy_teardown(void);
EMMA_HIDDEN void copy_finish(void);

#endif

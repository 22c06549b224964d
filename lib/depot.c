/* The depot: blocks of big classes freed by a thread that does not own
 * their page, kept where any thread can take them.
 *
 * A page belongs to one heap, and only its owner allocates from it; a
 * block another thread frees goes back onto the page's remote list for the
 * owner to reuse.  For big blocks that pins memory per thread: every
 * thread keeps a page of each class it uses, each holding as many touched
 * blocks as that thread ever had out of it at once, while the threads that
 * freed them (and need blocks of that class too) take fresh ones (bench
 * mstress, 8 threads passing blocks of up to 512 KiB around: 46 MiB
 * resident in 1 MiB pages for 16 MiB of live blocks).  So a free of
 * another heap's block of DEPOT_MIN bytes or more puts the block here
 * instead, and an allocation of its class takes it back before it takes a
 * fresh page, whichever thread it is: memory goes where it is needed, as
 * with tcmalloc's central lists.  For its page the block is still out
 * (counted in page->used); it goes home (remote_push, as the free
 * would have sent it) when the depot is full, when it has waited there for
 * the decay time (policy.c's decay pass), and at trim.  At most a quarter
 * of policy_free_bound (8 MiB by default) waits in the depot; those bytes
 * are not in the process-wide count of free resident memory (sending a
 * block home would not make it less), but the pages they keep in use are
 * held to the bound apart (pin, below).
 *
 * A spin lock per class, only ever try-locked (a thread that finds it
 * taken, or a signal handler that interrupted its holder, frees or
 * allocates the usual way), held for a push or a pop.  Blocks of private
 * heaps never come here.  The owner's fast paths do not change: frees by
 * other threads and allocations of big blocks are slow paths already.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "policy.h"

/* Blocks per class: 16 (bench mstress peak RSS, median of 5: 4 slots
 * 113 MiB, 8 110, 16 108, 64 121, without the depot 132). */
#define DEPOT_SLOTS 16

static struct depot_class {
    _Atomic uint32_t lock;
    uint32_t count;
    void *block[DEPOT_SLOTS];        /* oldest first */
    uint64_t put_at[DEPOT_SLOTS];    /* now_ticks when it came */
} depot[CLASS_COUNT];

static _Atomic size_t depot_total; /* bytes of blocks in the depot */

/* At most this many bytes wait in the depot, process-wide. */
#define DEPOT_MAX_BYTES(bound) ((bound) / 4)

/* A class whose lock was taken over from a holder that died (or was lost
 * in a fork) mid-operation, mended under that lock: each block kept once
 * (a depot_release that dies mid-shift leaves some twice; the blocks it
 * was sending home are lost with it, still counted as out by their pages:
 * a leak, never a block handed out twice).  The other classes are not
 * touched: their holders may be at work. */
static void depot_mend(struct depot_class *d)
{
    uint32_t kept = 0, n = d->count < DEPOT_SLOTS ? d->count : DEPOT_SLOTS;
    for (uint32_t i = 0; i < n; i++) {
        bool dup = false;
        for (uint32_t j = 0; j < kept && !dup; j++)
            dup = d->block[j] == d->block[i];
        if (!dup) {
            __atomic_store_n(&d->block[kept], d->block[i], __ATOMIC_RELAXED);
            d->put_at[kept++] = d->put_at[i];
        }
    }
    __atomic_store_n(&d->count, kept, __ATOMIC_RELEASE);
}

/* Try-lock class d, mending it if its lock was taken over: the lock
 * words' generation scheme counts every take-over in locks_recovered, so
 * a count that moved across our try means one may have been ours (or
 * another lock's at the same time: then the mend finds nothing to do). */
static bool depot_lock(struct depot_class *d)
{
    size_t recovered = atomic_load_explicit(&locks_recovered, memory_order_relaxed);
    if (!gen_lock_try(&d->lock, NULL))
        return false;
    if (unlikely(atomic_load_explicit(&locks_recovered, memory_order_relaxed) != recovered))
        depot_mend(d);
    return true;
}

/* A block waiting here keeps its page in use: the page's free blocks
 * (every block but this one, when the program has freed the rest) stay
 * resident and out of policy.c's count.  So a page is counted whole in
 * the policy's pinned memory while one of its blocks is here (per page,
 * page->in_depot, under the class's lock: a page has one class), within
 * a budget of its own (policy.h: DEPOT_PIN_MAX, 16 MiB by default); a
 * block whose page would pass it goes home. */
static bool pin(const segment_t *seg) { return policy_depot_pin((size_t)1 << seg->page_shift); }

/* p left the depot (under its class's lock). */
static void unpin(void *p)
{
    segment_t *seg = segment_of(p);
    page_t *page = page_of(seg, p);
    if (--page->in_depot == 0)
        policy_depot_unpin((size_t)1 << seg->page_shift);
}

/* Is p among the blocks of class d?  Without the lock a thread may look
 * for a block it is freeing: whoever took p from the depot before handing
 * it to us did so before (a take lowers count before p can be freed
 * again), so a match is p freed twice, never a stale slot. */
static bool depot_holds(const struct depot_class *d, const void *p)
{
    uint32_t n = __atomic_load_n(&d->count, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n && i < DEPOT_SLOTS; i++)
        if (__atomic_load_n(&d->block[i], __ATOMIC_RELAXED) == p)
            return true;
    return false;
}

/* A block of `size` bytes (its page's remote_size: the class is known
 * without reading the owner's cache line) into the depot, or false.  A
 * block freed twice by other threads is reported (emma(7)), whether its
 * first free left it here or on its page's remote list (which remote_push
 * checks for a block the depot refuses). */
bool depot_put(segment_t *seg, page_t *page, size_t size, void *p, const char *func)
{
    if (seg->flags & SEG_PRIVATE)
        return false;
    struct depot_class *d = &depot[class_of_size(size)];
    if (atomic_load_explicit(&depot_total, memory_order_relaxed) + size >
            DEPOT_MAX_BYTES(policy_free_bound) ||
        d->count == DEPOT_SLOTS || !depot_lock(d)) {
        if (unlikely(depot_holds(d, p)))
            emma_fatal(func, "double free", p);
        return false;
    }
    /* refused, the block goes to its page's list, whose push checks that
     * list (free.c); kept, it must not be on it */
    if (unlikely(depot_holds(d, p) || remote_listed_now(seg, page, p))) {
        gen_unlock(&d->lock);
        emma_fatal(func, "double free", p);
    }
    bool kept = d->count < DEPOT_SLOTS && (page->in_depot || pin(seg));
    if (kept) {
        page->in_depot++;
        __atomic_store_n(&d->block[d->count], p, __ATOMIC_RELAXED);
        d->put_at[d->count] = now_ticks();
        __atomic_store_n(&d->count, d->count + 1, __ATOMIC_RELEASE);
        atomic_fetch_add_explicit(&depot_total, size, memory_order_relaxed);
    }
    gen_unlock(&d->lock);
    if (kept && page->in_depot == 1)
        policy_depot_pinned_grew();
    return kept;
}

void *depot_take(heap_t *h, unsigned c)
{
    struct depot_class *d = &depot[c];
    if (h->is_private || d->count == 0 || !depot_lock(d))
        return NULL;
    void *b = NULL;
    if (d->count) {
        b = d->block[d->count - 1]; /* the newest: likeliest still cached */
        __atomic_store_n(&d->count, d->count - 1, __ATOMIC_RELAXED);
        unpin(b);
        atomic_fetch_sub_explicit(&depot_total, class_size(c), memory_order_relaxed);
    }
    gen_unlock(&d->lock);
    if (b)
        check_mark_allocated(b);
    return b;
}

/* Send the blocks that came before `before` (UINT64_MAX: all) home, as
 * their free would have; returns how many bytes went. */
size_t depot_release(uint64_t before)
{
    size_t bytes = 0;
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        struct depot_class *d = &depot[c];
        if (d->count == 0 || (before != UINT64_MAX && d->put_at[0] >= before) ||
            !depot_lock(d))
            continue;
        void *gone[DEPOT_SLOTS];
        unsigned n = 0;
        while (n < d->count && (before == UINT64_MAX || d->put_at[n] < before)) {
            gone[n] = d->block[n];
            unpin(gone[n]);
            n++;
        }
        for (unsigned i = n; i < d->count; i++) {
            __atomic_store_n(&d->block[i - n], d->block[i], __ATOMIC_RELAXED);
            d->put_at[i - n] = d->put_at[i];
        }
        __atomic_store_n(&d->count, d->count - n, __ATOMIC_RELAXED);
        gen_unlock(&d->lock);
        size_t size = class_size(c);
        atomic_fetch_sub_explicit(&depot_total, n * size, memory_order_relaxed);
        for (unsigned i = 0; i < n; i++) {
            segment_t *seg = segment_of(gone[i]);
            remote_push(seg, page_of(seg, gone[i]), (block_t *)gone[i], "free");
        }
        bytes += n * size;
    }
    return bytes;
}

/* emma_stats(): blocks waiting in the depot, per class. */
void depot_stats(size_t *blocks)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++)
        blocks[c] = depot[c].count;
}

/* After teardown (every segment unmapped): forget the blocks. */
static void depot_forget_all(void)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++)
        depot[c].count = 0;
    atomic_store_explicit(&depot_total, 0, memory_order_relaxed);
}

void depot_forget(void) { depot_forget_all(); }

/* heap.c: heap_left_recover: a class left locked mid-operation is mended
 * as after a death */
void depot_locks_left(uint32_t me)
{
    for (unsigned c = 0; c < CLASS_COUNT; c++) {
        struct depot_class *d = &depot[c];
        if (atomic_load_explicit(&d->lock, memory_order_relaxed) == me) {
            depot_mend(d);
            gen_release_left(&d->lock, me, NULL);
        }
    }
}

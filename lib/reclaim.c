/* Taking back what other threads hold: policy.c's decay pass and trim call
 * reclaim_heap() for every heap but the caller's, and its remote step
 * (a thread that has freed policy_remote_step_bytes into other threads' pages)
 * calls reclaim_remote() for every heap those frees wait in.
 *
 * Without TLS heaps are shared: a heap whose lock is free is locked,
 * collected, purged and unlocked.
 *
 * With TLS a heap belongs to its thread, which touches it without locks,
 * so another thread may only:
 *   - purge its free pages (segment.c's seg_lock, try-locked);
 *   - take the pages that remote frees emptied entirely (a decay pass:
 *     when the owner has been idle for the decay time; a remote step:
 *     whenever, the owner alive or dead).  Such a page is full (out of
 *     its class queue, so the owner cannot allocate from it) and every
 *     block it ever had is on its remote-free list, which we take: then
 *     nobody can reach it.  It
 *     goes back to its segment under the owner's seg_lock, as the owner's
 *     collect would have sent it: a free page, in the process-wide count,
 *     so the bound and the decay see it without the owner running; if the
 *     owner has been idle for the decay time, its memory goes back to the
 *     kernel first.  heap->collect_lock keeps the owner's collect out
 *     meanwhile;
 *   - when the owner is dead (a decay pass asks the kernel at most once
 *     per decay time per idle heap: heap.c's heap_take_if_dead): take the
 *     heap over, collect and purge everything, hand every segment with
 *     pages still in use to the caller's heap (so the next allocation of
 *     their classes reuses them instead of fresh pages), and leave the
 *     emptied heap without owner for the next new thread.  Remote steps
 *     do not: a new thread would get a purged heap where it could have
 *     adopted a warm one (bench mstress faulted three times as much);
 *   - a heap without owner (owner word 0) is locked by writing our TID in
 *     it for a moment.
 *   - thin the pages that remote frees reached but did not empty: the
 *     OS pages that only those frees cover go back to the kernel, their
 *     blocks taken off the list and left to the owner as absent ones
 *     (sparse.c's page_thin_remote, page->remote_gone): in a page the
 *     owner allocates from, once it has been idle for the decay time;
 *     in any page at trim (never while the owner runs: it may collect and
 *     reuse them soon).
 * What no other thread can take: the blocks themselves of remote frees
 * into a page a live owner still allocates from (in its class queue), or
 * into pages that still hold live blocks; the owner collects them at its
 * next slow path.
 * A heap whose owner died inside a slow path (`busy`) is never touched
 * here: heap.c quarantines it, and salvage.c recovers its pages.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

#if EMMA_CONFIG_TLS
static void take_segments(heap_t *self, heap_t *d);
#else
static void take_segments(heap_t *self, heap_t *d) { (void)self, (void)d; } /* never called */
#endif

/* Collect and purge a heap the caller holds exclusively; with `self`, then
 * hand what is left in it to self.  All of it inside h's slow path (busy):
 * if we die in the middle, h is quarantined, never adopted half moved. */
static size_t trim_held(heap_t *self, heap_t *h, uint64_t before, bool all)
{
    slow_state st = slow_enter(h);
    heap_collect_remote(h);
    if (all) {
        heap_release_empty_pages(h);
        heap_thin_all(h);
    }
    size_t n = heap_purge_older(h, all ? UINT64_MAX : before, true);
    if (self)
        take_segments(self, h);
    slow_leave(h, st);
    return n;
}

#if !EMMA_CONFIG_TLS

size_t reclaim_heap(heap_t *self, heap_t *h, uint64_t before, bool all)
{
    (void)self;
    if (!heap_trylock(h))
        return 0;
    size_t n = trim_held(NULL, h, before, all);
    heap_unlock(h);
    return n;
}

size_t reclaim_remote(heap_t *self, heap_t *h, uint64_t now)
{
    return reclaim_heap(self, h, now - policy_decay_ticks, false);
}

#else

/* The memory of a page, from its first block to its end, in OS pages. */
static size_t purge_page(page_t *page)
{
    segment_t *seg = segment_of_page(page);
    uintptr_t base = (uintptr_t)seg + ((uintptr_t)page->page_idx << seg->page_shift);
    uintptr_t end = base + ((uintptr_t)1 << seg->page_shift);
    uintptr_t start = align_up((uintptr_t)page->start, OS_PAGE_SIZE);
    size_t touched = align_up((size_t)page->capacity * page->block_size, OS_PAGE_SIZE);
    if (end > start)
        os_purge((void *)start, end - start);
    return touched;
}

/* Give a remote-free list of n blocks back to its page (prepended to
 * what arrived meanwhile); if the page had none left, it goes back on the
 * stack. */
static void give_back(heap_t *h, page_t *page, block_t *list, block_t *tail, uint32_t n)
{
    uintptr_t old = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
    do {
        link_set(tail, old ? tf_head(old) : PAGE_END(page));
    } while (!atomic_compare_exchange_weak_explicit(&page->thread_free, &old,
                                                    (uintptr_t)list + (old & ~(TF_ONE - 1)) +
                                                        n * TF_ONE,
                                                    memory_order_release, memory_order_relaxed));
    if (old == 0) {
        page->thread_tail = tail;
        remote_pages_push(h, page);
    }
}

/* Blocks of remote-free lists counted per call of reclaim_remote_emptied:
 * a page whose list is still partial is walked again at the next call. */
#define REMOTE_WALK_MAX 65536

/* A page of h whose every block is in the caller's hands (nobody else
 * can reach it) back to its segment, as its owner's collect would have
 * sent it: a free page, counted by the policy; with `purge` its memory
 * goes back to the kernel first.  False if h's seg_lock is taken, or the
 * segment changed hands (segment_move, under that lock). */
/* release_emptied's work, under h's seg_lock, for a page of h. */
static void emptied_put(heap_t *h, page_t *page, bool purge, size_t *n)
{
    if (purge) {
        *n += purge_page(page);
        page->capacity = 0; /* nothing carved is resident */
    }
    page->free = PAGE_END(page);
    page->local_free = NULL;
    page->used = 0;
    page->absent = 0;
    page->purged = 0;
    atomic_store_explicit(&page->remote_gone, 0, memory_order_relaxed);
    segment_page_put(h, page);
}

static bool release_emptied(heap_t *h, page_t *page, bool purge, size_t *n)
{
    if (!heap_gen_trylock(&h->seg_lock))
        return false;
    bool ours = segment_of_page(page)->heap == h;
    if (ours)
        emptied_put(h, page, purge, n);
    gen_unlock(&h->seg_lock);
    return ours;
}

/* Worth thinning the page with remote-free word w: its list holds at least
 * an OS page of blocks, and (unless `all`) the frees since the last
 * thinning are at least an OS page of small blocks or one big block, and
 * as many as the page had before it (gone and left on the list): a page
 * is thinned a few times as its blocks come back, not at every remote step. */
static bool worth_thinning(page_t *page, uintptr_t w, bool all)
{
    uint32_t bsize = PEEK(page->block_size), n = tf_count(w);
    if ((size_t)n * bsize < OS_PAGE_SIZE)
        return false;
    if (all)
        return true;
    uint64_t g = atomic_load_explicit(&page->remote_gone, memory_order_relaxed);
    uint32_t left = REMOTE_GONE_LEFT(g), more = bsize >= OS_PAGE_SIZE ? 1 : OS_PAGE_SIZE / bsize;
    if (n < left)
        return true; /* the owner took the list since: a new one */
    uint32_t since = n - left, before = left + REMOTE_GONE_COUNT(g);
    return since >= more && since >= before;
}

/* Record what page_thin_remote took off the list for the owner, and how
 * many blocks it left on it. */
static void note_thinned(page_t *page, const remote_list_t *l)
{
    uint64_t old = atomic_load_explicit(&page->remote_gone, memory_order_relaxed), w;
    do {
        w = REMOTE_GONE_WORD(REMOTE_GONE_COUNT(old) + l->gone_count, l->count,
                             REMOTE_GONE_BITS(old) | l->gone_bits);
    } while (!atomic_compare_exchange_weak_explicit(&page->remote_gone, &old, w,
                                                    memory_order_release, memory_order_relaxed));
}

/* What other threads' frees left in the pages of a live owner's heap (its
 * remote_pages): a full page they emptied entirely goes back to its
 * segment (with `purge`, the owner being idle, its memory goes back to the
 * kernel at once: nobody is about to use it).  With `purge`, the other
 * pages are thinned: the OS pages that only their remote frees cover go
 * back to the kernel (page_thin_remote), pages the owner still allocates
 * from or holds live blocks in: what an idle thread's heap keeps of the
 * blocks other threads freed (bench many threads trading small blocks,
 * then idle: 43 MiB of them stayed resident, even after emma_trim).
 * Returns the bytes purged. */
static size_t reclaim_remote_emptied(heap_t *h, bool purge, bool all)
{
    if (atomic_load_explicit(&h->remote_pages, memory_order_relaxed) == NULL ||
        !gen_lock_try_as(&h->collect_lock, NULL, true))
        return 0;
    if (atomic_load_explicit(&h->poisoned, memory_order_acquire)) {
        /* quarantined since our caller looked: salvage.c's now */
        gen_unlock(&h->collect_lock);
        return 0;
    }
    size_t n = 0;
    uint32_t budget = all ? UINT32_MAX : REMOTE_WALK_MAX; /* trim: every list */
    page_t *page = remote_pages_take(h);
    while (page) {
        page_t *next = remote_pages_next(h, page); /* before the page can be re-pushed */
        uint32_t reserved = PEEK(page->reserved);
        uintptr_t w = atomic_load_explicit(&page->thread_free, memory_order_relaxed);
        /* blocks an earlier thinning took off the list are free too (an
         * owner does not count them while its page is full: page_absorb_remote) */
        uint32_t gone = REMOTE_GONE_COUNT(atomic_load_explicit(&page->remote_gone,
                                                               memory_order_relaxed));
        bool whole = PEEK(page->in_full) && tf_count(w) + gone == reserved;
        /* An idle owner's page it allocates from is thinned (the owner
         * does not collect its frees); a full one only at trim: the frees
         * may soon empty it, and it then goes whole.  Not a page of an
         * owner that runs, which may collect and reuse the blocks soon
         * (bench mstress took 2.5 times the page faults when the remote
         * steps thinned such pages past the room the bound left). */
        bool thin = purge && (all || !PEEK(page->in_full)) && worth_thinning(page, w, all);
        if (segment_of_page(page)->heap != h || reserved > budget || !(whole || thin)) {
            remote_pages_push(h, page); /* the owner's (who forwards a moved one) */
            page = next;
            continue;
        }
        w = tf_take(page);
        remote_list_t l = {.head = tf_head(w), .count = 1};
        l.tail = l.head;
        block_t *end = PAGE_END(page);
        for (block_t *b; (b = link_get(l.tail)) != end; l.tail = b)
            if (unlikely(++l.count > reserved)) /* set while the page is in use */
                remote_double_free(b);
        budget -= l.count;
        if (l.count + gone == reserved && PEEK(page->in_full) &&
            release_emptied(h, page, purge, &n)) {
            page = next;
            continue;
        }
        if (thin) {
            n += page_thin_remote(page, &l);
            note_thinned(page, &l);
        }
        if (l.head)
            give_back(h, page, l.head, l.tail, l.count);
        page = next;
    }
    gen_unlock(&h->collect_lock);
    return n;
}

/* ---- A claim: an idle owner's pages that hold no live block ----
 *
 * What an idle owner keeps that the steps above cannot reach: pages in
 * its class queues (or parked) whose every block is free, some on the
 * owner's own lists (frees it collected before it went idle), the rest
 * on their remote lists (bench pairs: 16 producer threads handing 16-64
 * KiB blocks to consumers, then idle, kept 150 MiB of such pages, and
 * emma_trim() could give back only the remote frees' part).  Only the
 * owner edits its queues and lists, without a lock; so another thread
 * first claims the heap:
 *   - it takes h->claim (a lock word naming it), then membarrier(2)
 *     (os_membarrier: a full barrier on every CPU running one of our
 *     threads), then reads h->busy.  The owner's slow_enter stores busy,
 *     then reads the claim (internal.h).  So either the claimer sees busy
 *     (the owner is in a slow path: the claim is dropped) or the owner
 *     sees the claim and waits (heap_claim_wait) for the claimer: from
 *     here on the owner runs no slow path, and the claimer may do what
 *     the owner's would;
 *   - but its fast paths still run: they pop from the first page of a
 *     class queue (the direct table's page), which a claim never touches,
 *     and push a freed block onto the page it belongs to, which therefore
 *     holds a live block: a page taken here holds none.  A free in flight
 *     that has just counted the page's last block out (its xadd, locked:
 *     everything the owner stored before it is visible with it) may still
 *     be linking the block: so after reading the counts, the claimer reads
 *     the owner's tls_heap (through os_read_safe: the thread may be
 *     exiting), and takes the pages only if that is not heap_busy, the
 *     marker of an owner inside its fast path; a first page is counted
 *     again after that look: the owner may have popped a block off it
 *     whole between the claim's first count and the unlinking;
 *   - the pages taken go back to their segments, purged, as the owner's
 *     collect would have sent them (release_emptied).  A claimer that dies
 *     while it unlinks a page leaves claim_class/claim_page for the owner,
 *     who mends that class's queues when it takes the dead claim over.
 * Decay passes (an owner idle for the decay time), trims, and remote
 * steps once the owner has rested half the decay time (purging the pages
 * only once it has been idle for the whole: bench pairs-idle, RSS as
 * soon as 16 producer/consumer pairs idle, 134 -> 43-55 MiB) claim,
 * and only a heap that changed since its last claim (its owner ran a slow
 * path, or a new page got remote frees): a claim costs a membarrier
 * (0.75 us here: an interprocessor interrupt to the CPUs running our
 * threads) and a walk of the heap's queues.  Without
 * membarrier (old kernels, a seccomp filter) nothing is claimed. */

#define CLAIM_BATCH 32

struct claim_batch {
    unsigned n;
    bool purge; /* the pages' memory goes back to the kernel too */
    page_t *page[CLAIM_BATCH];
    block_t *head[CLAIM_BATCH], *tail[CLAIM_BATCH]; /* remote frees taken from it */
    uint32_t count[CLAIM_BATCH];
};

/* The first page of its class queue: the owner's fast paths pop from it. */
static bool page_is_first(const heap_t *h, const page_t *page)
{
    return !page->parked && !page->in_full && h->bins[page->class_idx].first == page;
}

/* Blocks of page the program holds, given `taken` remote frees off its
 * list (UINT32_MAX if the counts do not add up). */
static uint32_t claim_live(const page_t *page, uint32_t taken)
{
    uint32_t used = PEEK(page->used), absent = PEEK(page->absent);
    uint32_t gone = REMOTE_GONE_COUNT(atomic_load_explicit(&page->remote_gone,
                                                           memory_order_relaxed));
    uint64_t free = (uint64_t)absent + gone + taken;
    return free > used ? UINT32_MAX : used - (uint32_t)free;
}

static void claim_give_back(heap_t *h, struct claim_batch *b)
{
    for (unsigned i = 0; i < b->n; i++)
        if (b->head[i])
            give_back(h, b->page[i], b->head[i], b->tail[i], b->count[i]);
    b->n = 0;
}

/* The page the claimer is unlinking from class queues, for the repair if
 * it dies meanwhile (heap.c: heap_claim_wait). */
static void claim_mark(heap_t *h, page_t *page)
{
    h->claim_page = page;
    __atomic_store_n(&h->claim_class, page ? page->class_idx : 0, __ATOMIC_RELAXED);
    __asm__ volatile("" ::: "memory");
}

void claim_mend(heap_t *h)
{
    if (h->claim_class) {
        bin_repair(h, h->claim_class, h->claim_page);
        claim_mark(h, NULL);
    }
}

/* The owner is outside its fast paths: its tls_heap is not the busy
 * marker (read through os_read_safe: the thread may be exiting). */
static bool owner_outside(const heap_t *h)
{
    heap_t *const *slot = __atomic_load_n(&h->owner_tls, __ATOMIC_ACQUIRE);
    heap_t *marker = NULL;
    return slot && os_read_safe(&marker, slot, sizeof marker) && marker != &heap_busy;
}

/* The batch's pages back to their segments, if the owner is outside its
 * fast paths; false (remote frees given back, pages where they were) if
 * not, or if the owner's seg_lock is taken.  The first pages of their
 * class queues (`first`) are unlinked before we look (the direct table
 * then names the next page), with a membarrier in between: an owner that
 * read one of them before is still inside its pop (busy), one that reads
 * after finds the next. */
static bool claim_flush(heap_t *h, struct claim_batch *b, bool first, size_t *purged)
{
    if (b->n == 0)
        return true;
    if (!heap_gen_trylock(&h->seg_lock)) {
        claim_give_back(h, b);
        return false;
    }
    if (first) {
        for (unsigned i = 0; i < b->n; i++) {
            claim_mark(h, b->page[i]);
            bin_remove(h, b->page[i]);
        }
        claim_mark(h, NULL);
    }
    if (!(first ? os_membarrier() : true) || !owner_outside(h)) {
        if (first) {
            for (unsigned i = 0; i < b->n; i++) {
                claim_mark(h, b->page[i]);
                bin_push_front(h, b->page[i]);
            }
            claim_mark(h, NULL);
        }
        gen_unlock(&h->seg_lock);
        claim_give_back(h, b);
        return false;
    }
    for (unsigned i = 0; i < b->n; i++) {
        /* still h's: a segment changes hands under the seg_lock we hold,
         * and the batch took only pages of h's */
        page_t *page = b->page[i];
        if (first && claim_live(page, b->count[i]) != 0) {
            /* the owner popped a block off it before we unlinked it (a
             * pop in flight would have shown as busy): back in front */
            claim_mark(h, page);
            bin_push_front(h, page);
            claim_mark(h, NULL);
            if (b->head[i])
                give_back(h, page, b->head[i], b->tail[i], b->count[i]);
            continue;
        }
        claim_mark(h, page);
        if (!first) { /* first pages were unlinked above */
            if (page->in_full)
                page->in_full = 0; /* in no queue */
            else
                bin_remove(h, page);
        }
        emptied_put(h, page, b->purge, purged);
    }
    claim_mark(h, NULL);
    gen_unlock(&h->seg_lock);
    b->n = 0;
    return true;
}

/* Both batches, the other pages first: unlinking a first page makes the
 * next one first, which the owner's fast paths then pop from, and which
 * must not be waiting in b meanwhile (it was counted as no fast path's). */
static bool claim_flush_both(heap_t *h, struct claim_batch *b, struct claim_batch *f,
                             size_t *purged)
{
    return claim_flush(h, b, false, purged) && claim_flush(h, f, true, purged);
}

/* page (with the remote frees taken from it) into f if it is the first
 * of its class queue, else into b; both flushed when one is full. */
static bool claim_add(heap_t *h, struct claim_batch *b, struct claim_batch *f, page_t *page,
                      block_t *head, block_t *tail, uint32_t count, size_t *purged)
{
    struct claim_batch *to = page_is_first(h, page) ? f : b;
    to->page[to->n] = page;
    to->head[to->n] = head;
    to->tail[to->n] = tail;
    to->count[to->n] = count;
    return ++to->n < CLAIM_BATCH || claim_flush_both(h, b, f, purged);
}

/* Under the claim and collect_lock: the pages on h's remote stack.  One
 * that holds no live block once its remote frees are taken goes into a
 * batch (with them: the first pages of their queues into f, the others
 * into b); the others keep their frees, for the owner. */
static bool claim_remote_pages(heap_t *h, struct claim_batch *b, struct claim_batch *f,
                               size_t *purged)
{
    bool ok = true;
    page_t *page = remote_pages_take(h);
    while (page) {
        page_t *next = remote_pages_next(h, page);
        if (!ok || segment_of_page(page)->heap != h) {
            remote_pages_push(h, page); /* the owner's (who forwards a moved one) */
            page = next;
            continue;
        }
        block_t *tail = page->thread_tail; /* before the list is taken (page.c) */
        uintptr_t w = tf_take(page);
        block_t *head = tf_head(w);
        uint32_t n = tf_count(w);
        if (head && claim_live(page, n) == 0)
            ok = claim_add(h, b, f, page, head, tail, n, purged);
        else if (head)
            give_back(h, page, head, tail, n);
        page = next;
    }
    return ok;
}

/* Under the claim: the pages of h's class queues and its parked ones
 * that hold no live block and have no remote frees (the first pages of
 * the queues into f, flushed last). */
static bool claim_queued_pages(heap_t *h, struct claim_batch *b, struct claim_batch *f,
                               size_t *purged)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        page_queue_t *queues[2] = {&h->bins[c], &h->parked[c]};
        for (unsigned q = 0; q < 2; q++) {
            for (page_t *page = queues[q]->first, *next; page; page = next) {
                next = page->next; /* a flush unlinks pages before it only */
                if (atomic_load_explicit(&page->thread_free, memory_order_relaxed) == 0 &&
                    claim_live(page, 0) == 0 && !claim_add(h, b, f, page, NULL, NULL, 0, purged))
                    return false;
            }
        }
    }
    return true;
}

static size_t reclaim_claimed(heap_t *h, bool purge)
{
    if (PEEK(h->active_at) == h->claim_active_at &&
        atomic_load_explicit(&h->remote_pages, memory_order_relaxed) == h->claim_remote)
        return 0; /* nothing new since the last claim */
    if (!gen_lock_try_as(&h->claim, NULL, true))
        return 0;
    claim_mend(h); /* if taken over from a claimer that died unlinking */
    size_t purged = 0;
    if (os_membarrier() && !PEEK(h->busy) &&
        !atomic_load_explicit(&h->poisoned, memory_order_acquire) &&
        gen_lock_try_as(&h->collect_lock, NULL, true)) {
        struct claim_batch b, f;
        b.n = f.n = 0;
        b.purge = f.purge = purge;
        /* the remote stack's pages first: the queue walk then finds
         * the pages their frees emptied with nothing on their lists */
        bool done = claim_remote_pages(h, &b, &f, &purged) &&
                    claim_flush_both(h, &b, &f, &purged) &&
                    claim_queued_pages(h, &b, &f, &purged) &&
                    claim_flush_both(h, &b, &f, &purged);
        claim_give_back(h, &b);
        claim_give_back(h, &f);
        if (done) { /* else try again at the next chance */
            h->claim_active_at = PEEK(h->active_at);
            h->claim_remote = atomic_load_explicit(&h->remote_pages, memory_order_relaxed);
        }
        gen_unlock(&h->collect_lock);
    }
    gen_unlock(&h->claim);
    return purged;
}

/* Hand every segment of dead heap d that still has pages in use (found
 * through its class queues and its segment lists) to self. */
static void take_segments(heap_t *self, heap_t *d)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        page_t *page;
        while ((page = d->bins[c].first) != NULL)
            if (!segment_move(d, self, segment_of_page(page)))
                bin_remove(d, page); /* not d's: cannot happen, but never loop */
        while ((page = d->parked[c].first) != NULL)
            if (!segment_move(d, self, segment_of_page(page)))
                bin_remove(d, page);
    }
    for (int k = 0; k <= KIND_XLARGE; k++) {
        segment_t *seg;
        while ((seg = d->segments[k]) != NULL)
            if (!segment_move(d, self, seg))
                d->segments[k] = seg->next;
    }
}

static uint32_t my_tid(heap_t *self)
{
    return self ? atomic_load(&self->owner) & 0x3fffffffu : os_gettid();
}

size_t reclaim_heap(heap_t *self, heap_t *h, uint64_t before, bool all)
{
    if (atomic_load_explicit(&h->poisoned, memory_order_relaxed))
        return 0;
    if (h->spare) {
        /* a signal handlers' heap (heap.c): has no owner, is used under
         * its lock; never handed on */
        /* (a shared heap's lock names its holder: heap.c) */
        bool shared = heap_is_shared(h);
        if (!(shared ? shared_trylock(h) : gen_trylock(&h->lock)))
            return 0;
        if (!shared) {
            if (h->busy) { /* its holder died using it: heap.c replaces it */
                gen_unlock(&h->lock);
                return 0;
            }
            h->busy_sp = stack_pointer(); /* heap.c: spare_trylock */
        }
        size_t n = trim_held(NULL, h, before, all);
        if (shared)
            shared_unlock(h);
        else
            gen_unlock(&h->lock);
        return n;
    }
    uint32_t w = atomic_load(&h->owner);
    if (w == 0) {
        /* nobody's: lock it with our TID for a moment */
        uint32_t tid = my_tid(self);
        if (!atomic_compare_exchange_strong(&h->owner, &w, tid))
            return 0;
        if (h->busy) { /* a reclaimer died in it */
            heap_quarantine(h);
            return 0;
        }
        size_t n = trim_held(self, h, before, all);
        atomic_store(&h->owner, 0);
        return n;
    }
    uint64_t now = now_ticks();
    bool idle = now - PEEK(h->active_at) > policy_decay_ticks;
    size_t n = heap_purge_older(h, all ? UINT64_MAX : before, false);
    if (!idle && !all)
        return n;
    if (all || now - PEEK(h->liveness_checked) > policy_decay_ticks) {
        h->liveness_checked = now; /* racy, only spaces the checks out */
        if (heap_take_if_dead(h, my_tid(self))) {
            n += trim_held(self, h, UINT64_MAX, true);
            atomic_store(&h->owner, 0); /* for the next new thread */
            return n;
        }
    }
    n += reclaim_claimed(h, true);
    return n + reclaim_remote_emptied(h, true, all);
}

/* A remote step: what remote frees emptied in h, whether its owner is
 * alive or dead, idle or not; purged at once if the owner has been idle
 * for the decay time, as a decay pass does (with an eighth of it, bench
 * mstress, 8 threads on 2 cores, took 8% more page faults: a thread
 * waiting for a core is not idle).  A spare heap and a heap without owner
 * (a dead thread's, taken over by a decay pass, which left it the
 * segments whose every page is full) are locked whole and collected as a
 * decay pass does.  A dead owner's heap is not taken over here: decay
 * passes and new threads do that, warm. */
/* Remote steps look at one live owner's heap at most every
 * decay/STEP_EVERY (every remote step walked every heap's remote stack
 * before: bench pairs, 16 consumers freeing into 16 producers' pages, a
 * step every 64 KiB of frees, spent 16% of its CPU time there), and claim
 * it once its owner has rested for decay/STEP_IDLE (after an eighth,
 * bench larson, threads waiting for a core, peaked 13% higher). */
#define STEP_IDLE 2
#define STEP_EVERY 64

size_t reclaim_remote(heap_t *self, heap_t *h, uint64_t now)
{
    if (atomic_load_explicit(&h->poisoned, memory_order_relaxed))
        return 0;
    if (h->spare || atomic_load(&h->owner) == 0)
        return reclaim_heap(self, h, now - policy_decay_ticks, false);
    uint64_t idle = now - PEEK(h->active_at);
    bool resting = idle > policy_decay_ticks / STEP_IDLE;
    if (now - PEEK(h->stepped_at) < policy_decay_ticks / STEP_EVERY)
        return 0;
    h->stepped_at = now; /* racy: only spaces the steps out */
    size_t n = resting ? reclaim_claimed(h, idle > policy_decay_ticks) : 0;
    return n + reclaim_remote_emptied(h, idle > policy_decay_ticks, false);
}

#endif

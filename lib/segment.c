/* Segments: 4 MiB aligned mappings cut into pages, owned by one heap;
 * the accounting of free pages that may still be resident ("dirty"), the
 * process-wide pool of empty segments, and purging.
 *
 * A freed page stays resident so it can be reused without page faults;
 * when its memory goes back to the kernel is policy.c's decision, told of
 * every page freed.  Every change of a heap's dirty bytes is also added to
 * policy.c's process-wide count.  A purge is MADV_DONTNEED, one call per
 * run of free pages, never splitting a mapping (so vm.max_map_count is not
 * touched).
 *
 * A heap's free pages and their accounting are guarded by heap->seg_lock,
 * taken only here (page allocation and release are slow paths): the owner
 * takes it, and another thread's purge (policy.c) only try-locks it.
 *
 * An empty segment goes to one pool shared by every heap (a spin lock; the
 * owner of a segment is whoever takes it from the pool), still mapped and
 * with its dirty pages counted, so memory freed in one thread serves the
 * next thread's allocation, and allocation goes on from memory emma has
 * when the kernel refuses new mappings (vm.max_map_count).  At most
 * POOL_MAX segments wait there; policy.c purges and unmaps them.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "policy.h"

static const uint8_t kind_shift[KIND_COUNT] = {SMALL_PAGE_SHIFT, MEDIUM_PAGE_SHIFT, LARGE_PAGE_SHIFT,
                                               XLARGE_PAGE_SHIFT, HUGE_PAGE_SHIFT};
static const uint16_t kind_pages[KIND_COUNT] = {
    PAGES_PER_SEGMENT(SMALL_PAGE_SHIFT), PAGES_PER_SEGMENT(MEDIUM_PAGE_SHIFT),
    PAGES_PER_SEGMENT(LARGE_PAGE_SHIFT), PAGES_PER_SEGMENT(XLARGE_PAGE_SHIFT), 1};

size_t segment_header_size(enum segment_kind kind) { return SEGMENT_HEADER_SIZE(kind_pages[kind]); }

segment_t *segment_of_page(page_t *page)
{
    return (segment_t *)((uintptr_t)page & ~(uintptr_t)SEGMENT_MASK);
}

static size_t page_bytes(segment_t *seg) { return (size_t)1 << seg->page_shift; }

/* A free_mask with every one of n pages free. */
static uint64_t all_pages(unsigned n) { return n == 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1; }

/* Pages of `kind` that lie whole in a segment's map_size bytes: every one,
 * except in a partial segment (mapped in part, under an address-space
 * limit; segment_obtain), whose pages past the mapping stay out of its
 * free_mask for good. */
static unsigned mapped_pages(size_t map_size, enum segment_kind kind)
{
    unsigned n = (unsigned)(map_size >> kind_shift[kind]);
    return n < kind_pages[kind] ? n : kind_pages[kind];
}

static uint64_t usable_mask(const segment_t *seg)
{
    return all_pages(mapped_pages(seg->map_size, (enum segment_kind)seg->kind));
}

bool segment_page_mapped(const segment_t *seg, unsigned i) { return (usable_mask(seg) >> i) & 1; }

/* A private heap's free pages are its own business (emma_heap_reset,
 * emma_heap_destroy): they stay out of the process-wide count. */
static void dirty_add(heap_t *h, size_t n)
{
    h->dirty_bytes += n;
    if (!h->is_private)
        policy_resident_add(n);
}

static void dirty_sub(heap_t *h, size_t n)
{
    if (n > h->dirty_bytes)
        n = h->dirty_bytes;
    h->dirty_bytes -= n;
    if (!h->is_private)
        policy_resident_sub(n);
}

static void seglist_push(heap_t *h, segment_t *seg)
{
    segment_t **head = &h->segments[seg->kind];
    seg->prev = NULL;
    seg->next = *head;
    if (*head)
        (*head)->prev = seg;
    *head = seg;
}

static void seglist_remove(heap_t *h, segment_t *seg)
{
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        h->segments[seg->kind] = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    seg->next = seg->prev = NULL;
}

void segment_unmap(segment_t *seg)
{
    addrmap_clear(seg, seg->map_size);
    os_unmap(seg, seg->map_size);
}

/* Bytes of the segment's old cut that were dirty within [lo, hi). */
static size_t dirty_in_range(segment_t *seg, uintptr_t lo, uintptr_t hi)
{
    size_t sum = 0;
    for (unsigned j = 0; j < seg->page_count; j++) {
        uintptr_t plo = (uintptr_t)j << seg->page_shift, phi = (uintptr_t)(j + 1) << seg->page_shift;
        if (!(seg->dirty_mask & ((uint64_t)1 << j)) || phi <= lo || plo >= hi)
            continue;
        size_t d = seg->pages[j].dirty;
        size_t span = hi - lo;
        sum += d < span ? d : span;
    }
    return sum;
}

/* Cut a segment into pages of `kind`.  A recycled segment may still hold
 * resident memory from its previous cut: the new pages overlapping it are
 * marked dirty, with the bytes accounted to them. */
static void segment_cut(heap_t *h, segment_t *seg, enum segment_kind kind, bool recycled)
{
    unsigned shift = kind_shift[kind], pages = kind_pages[kind];
    uint64_t dirty_mask = 0;
    uint32_t dirty[64];
    for (unsigned i = 0; i < pages; i++) {
        size_t d = 0;
        if (recycled)
            d = dirty_in_range(seg, (uintptr_t)i << shift, (uintptr_t)(i + 1) << shift);
        dirty[i] = (uint32_t)d;
        if (d)
            dirty_mask |= (uint64_t)1 << i;
    }
    bool same_cut = recycled && seg->kind == kind;
    seg->heap = h;
    seg->kind = (uint8_t)kind;
    seg->page_shift = (uint8_t)shift;
    seg->page_count = (uint16_t)pages;
    seg->used_pages = 0;
    seg->free_mask = all_pages(mapped_pages(seg->map_size, kind));
    seg->dirty_mask = dirty_mask;
    segment_stamp(seg);
    for (unsigned i = 0; i < pages; i++) {
        page_t *p = &seg->pages[i];
        if (!same_cut)
            p->class_idx = 0; /* its carving tells nothing of this cut (page_fresh) */
        p->in_use = 0;
        p->remote_size = 0;
        p->page_idx = (uint8_t)i;
        p->free = p->local_free = NULL;
        p->used = 0;
        p->dirty = dirty[i];
        p->freed_at = now_ticks();
    }
}

/* ------------------------------------------------------------------ */
/* The pool of empty segments                                          */

#define POOL_MAX 64
static struct {
    _Atomic uint32_t lock;
    unsigned count;
    segment_t *seg[POOL_MAX]; /* oldest first */
} pool;

void pool_forget(void);
static void pool_recover(void);

/* Take the most recently pooled segment (its memory is likeliest to be
 * resident still), or NULL.  With `warm`, only one that may hold that many
 * resident bytes and was cut for `kind` or for a kind h has not taken a
 * page of for KIND_COLD (a segment that serves some kind all the time
 * stays with it: bench churn-mixed, which pools and takes back segments of
 * 1 MiB blocks all the time, faulted 125-150k times instead of 49k when
 * other kinds took them). */
#define KIND_COLD (2 * PURGE_DELAY)
static segment_t *pool_take(heap_t *h, size_t warm, enum segment_kind kind)
{
    if (pool.count == 0 || /* racy peek: only a hint */
        !gen_lock_try(&pool.lock, pool_recover))
        return NULL;
    segment_t *seg = NULL;
    uint64_t now = now_ticks();
    for (unsigned i = pool.count; i-- > 0;)
        if (pool.seg[i]->resident >= warm && mapped_pages(pool.seg[i]->map_size, kind) &&
            (!warm || pool.seg[i]->kind == kind ||
             now - h->kind_taken_at[pool.seg[i]->kind] > KIND_COLD)) {
            seg = pool.seg[i];
            for (; i + 1 < pool.count; i++)
                pool.seg[i] = pool.seg[i + 1];
            pool.count--;
            break;
        }
    gen_unlock(&pool.lock);
    return seg;
}

/* Pool an empty segment (its seg->resident bytes stay counted), or unmap
 * it when the pool is full. */
static void pool_put(segment_t *seg)
{
    bool kept = false;
    if (gen_lock_try(&pool.lock, pool_recover)) {
        kept = pool.count < POOL_MAX;
        if (kept)
            pool.seg[pool.count++] = seg;
        gen_unlock(&pool.lock);
    }
    if (!kept) {
        policy_resident_sub(seg->resident);
        segment_unmap(seg);
    }
}

static size_t segment_purge(segment_t *seg, uint64_t before, size_t limit);

/* Purge the pooled segments' pages freed before `before` (UINT64_MAX: all),
 * oldest segment first until about `limit` bytes are given back, and with
 * `unmap` unmap them all; returns the bytes given back. */
static size_t pool_purge(uint64_t before, bool unmap, size_t limit)
{
    size_t bytes = 0;
    /* trim, or a mapping failed: worth the wait (unless this thread holds
     * the lock, in a signal handler) */
    if (!(unmap ? gen_lock : gen_lock_try)(&pool.lock, pool_recover))
        return 0;
    for (unsigned i = 0; i < pool.count && bytes < limit; i++) {
        segment_t *seg = pool.seg[i];
        size_t b = segment_purge(seg, before, limit - bytes);
        if (b > seg->resident)
            b = seg->resident;
        seg->resident -= b;
        bytes += b;
    }
    /* Unmapped under the lock, newest first, each taken off the list just
     * before it goes: a holder that dies here loses one segment (mapped,
     * listed nowhere), not all of them, and never leaves on the list an
     * address the kernel may hand out again (trims and failed mappings
     * only: worth holding the lock that long). */
    size_t unmapped = 0;
    while (unmap && pool.count > 0) {
        segment_t *seg = pool.seg[--pool.count];
        size_t r = seg->resident;
        segment_unmap(seg);
        policy_resident_sub(r);
        unmapped += r;
    }
    gen_unlock(&pool.lock);
    policy_resident_sub(bytes);
    return bytes + unmapped;
}

size_t pool_release(uint64_t before, bool unmap) { return pool_purge(before, unmap, SIZE_MAX); }

size_t pool_purge_some(uint64_t before, size_t limit) { return pool_purge(before, false, limit); }

/* An empty segment from the pool, else a new mapping (if the kernel
 * refuses one, policy.c releases what every cache holds and we try once
 * more); with `warm` only a pooled segment that may still hold that many
 * resident bytes, else NULL.  Called without seg_lock: policy.c may purge
 * this very heap. */
#define PART_MAX ((size_t)1 << 20)
#define PART_MIN ((size_t)1 << SMALL_PAGE_SHIFT)
static segment_t *segment_obtain(heap_t *h, bool *recycled, size_t warm, enum segment_kind kind)
{
    segment_t *seg = pool_take(h, warm, kind);
    if (!seg && warm)
        return NULL;
    if (!seg) {
        policy_before_map(h);
        size_t size = SEGMENT_SIZE;
        seg = os_map_aligned(size, SEGMENT_SIZE, 0, NULL);
        if (!seg && policy_release_for_retry(h))
            seg = os_map_aligned(size, SEGMENT_SIZE, 0, NULL);
        /* Out of address space for a whole segment (map_aligned needs two
         * for a moment): a partial one, whose tail is never mapped, from
         * PART_MAX down to the kind's page 0 (the header's), so small
         * blocks are still served when a few hundred KiB are left (glibc
         * grows its heap by 132 KiB).  Not for a segment-sized page. */
        for (size_t part = PART_MAX; !seg && part >= PART_MIN && part >= ((size_t)1 << kind_shift[kind]);
             part /= 2)
            if ((seg = os_map_aligned_part(part)) != NULL)
                size = part;
        if (!seg)
            return NULL;
        if (!addrmap_mark(seg, size, true)) {
            os_unmap(seg, size);
            return NULL;
        }
        seg->map_size = size;
        seg->resident = 0;
    }
    *recycled = seg->resident != 0 || seg->dirty_mask != 0;
    policy_resident_sub(seg->resident); /* counted again below, as the heap's */
    if (h->is_private)
        private_segment_added(h, seg);
    return seg;
}

/* Kind k is not the one h is taking a page of, h has segments of it with
 * free pages, and took no page of it for KIND_COLD. */
static bool kind_cold(const heap_t *h, int k, enum segment_kind taking, uint64_t now)
{
    return k != (int)taking && h->segments[k] && now - h->kind_taken_at[k] > KIND_COLD;
}

/* Any free pages purge_cold_kinds might give back?  (Under seg_lock.) */
static bool cold_kinds_dirty(const heap_t *h, enum segment_kind taking)
{
    if (h->is_private || h->dirty_bytes == 0)
        return false;
    uint64_t now = now_ticks();
    for (int k = 0; k <= KIND_XLARGE; k++)
        if (kind_cold(h, k, taking, now))
            return true;
    return false;
}

/* h's free pages of the kinds it has not taken a page of for KIND_COLD:
 * the program has moved on to other sizes, so rather than keep them
 * resident until the decay (or the bound) takes them while memory is
 * faulted in for the sizes in use, give them back now. */
static void purge_cold_kinds(heap_t *h, enum segment_kind taking)
{
    heap_gen_lock(&h->seg_lock);
    if (cold_kinds_dirty(h, taking)) {
        uint64_t now = now_ticks();
        size_t bytes = 0;
        for (int k = 0; k <= KIND_XLARGE; k++)
            if (kind_cold(h, k, taking, now))
                for (segment_t *seg = h->segments[k]; seg; seg = seg->next)
                    if (seg->dirty_mask)
                        bytes += segment_purge(seg, UINT64_MAX, SIZE_MAX);
        dirty_sub(h, bytes);
    }
    gen_unlock(&h->seg_lock);
}

/* ------------------------------------------------------------------ */
/* Free medium and large pages not measured yet                        */

/* A free page of 512 KiB or more is counted at what is resident of its
 * carved part, which only the kernel knows (mincore): a program may touch
 * its blocks sparsely.  That system call cost more than the page's release
 * and retake together when a program fills a medium page and empties it
 * over and over (bench tight-medium: 41,668 mincore calls for 500,000
 * malloc+free pairs, 99.8% of the system time, emma 3-6x mimalloc's time;
 * bench/tight 1 200000 131072,262144,524288 8, large pages of 1 MiB in
 * the shared heap: 49,999 calls, emma 2.5x mimalloc's time).  So a heap
 * counts the medium and large pages it released last, UNMEASURED_ALL (8)
 * of them, at most UNMEASURED_PAGES (4) medium ones (about 7 large pages
 * cycle in that loop: three classes of 2-8 blocks a page), at their
 * carved extent (never less than what is resident: the bound holds, it
 * may only purge a little sooner, by at most 8 MiB per heap, 2 MiB in a
 * thread's heap, which has medium pages only: the large pages are the
 * shared heap's, alloc.c), and asks the kernel only when a newer release
 * pushes the oldest of its kind out; its count is then corrected
 * (dirty_sub).  A page taken back before that is never measured: the
 * next page of a class is taken from them first
 * (segment_page_alloc_class), so a program cycling through a few medium
 * or large classes gets each class's own page back, warm and carved
 * (page_fresh).  The list is under seg_lock; an entry whose page was
 * purged meanwhile (dirty bit clear) is skipped; a page leaves it when it
 * is taken, and its segment's pages when the segment goes to the pool or
 * to another heap.  Private heaps measure at once, as before. */

static size_t page_carved(const page_t *page)
{
    return align_up((size_t)page->capacity * page->block_size, OS_PAGE_SIZE);
}

static size_t page_resident(page_t *page, size_t carved)
{
    return os_resident_bytes((void *)align_up((uintptr_t)page->start, OS_PAGE_SIZE), carved);
}

/* The page from its first block to its end: what a purge covers
 * (reclaim.c's purge_page too). */
static size_t page_extent(page_t *page)
{
    segment_t *seg = segment_of_page(page);
    uintptr_t end = (uintptr_t)seg + ((uintptr_t)(page->page_idx + 1) << seg->page_shift);
    uintptr_t start = align_up((uintptr_t)page->start, OS_PAGE_SIZE);
    return end > start ? end - start : 0;
}

static bool page_is_dirty(page_t *page)
{
    return (segment_of_page(page)->dirty_mask >> page->page_idx) & 1;
}

/* Whether free pages of kind go on the list. */
static bool kind_listed(unsigned kind) { return kind == KIND_MEDIUM || kind == KIND_LARGE; }

static void unmeasured_drop(heap_t *h, unsigned i)
{
    for (; i + 1 < UNMEASURED_ALL && h->unmeasured[i + 1]; i++)
        h->unmeasured[i] = h->unmeasured[i + 1];
    h->unmeasured[i] = NULL;
}

/* page (or, for page NULL, every page of seg) leaves h's list. */
static void unmeasured_forget(heap_t *h, page_t *page, segment_t *seg)
{
    for (unsigned i = 0; i < UNMEASURED_ALL && h->unmeasured[i];)
        if (h->unmeasured[i] == page || (!page && segment_of_page(h->unmeasured[i]) == seg))
            unmeasured_drop(h, i);
        else
            i++;
}

/* The pages of seg on h's list. */
static uint64_t unmeasured_in(heap_t *h, segment_t *seg)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < UNMEASURED_ALL && h->unmeasured[i]; i++)
        if (segment_of_page(h->unmeasured[i]) == seg)
            m |= (uint64_t)1 << h->unmeasured[i]->page_idx;
    return m;
}

/* A free page h counts at its carved extent: the kernel's word instead. */
static void page_measure(heap_t *h, page_t *page)
{
    if (!page_is_dirty(page))
        return; /* purged meanwhile: no longer counted */
    size_t r = page_resident(page, page_extent(page));
    if (r < page->dirty) {
        dirty_sub(h, page->dirty - r);
        page->dirty = (uint32_t)r;
    }
}

/* page of seg joins h's list; the oldest of its kind is measured and
 * leaves when its kind has as many as it may (UNMEASURED_PAGES medium
 * ones), the oldest of all when the list is full. */
static void unmeasured_push(heap_t *h, segment_t *seg, page_t *page)
{
    unsigned limit = seg->kind == KIND_MEDIUM ? UNMEASURED_PAGES : UNMEASURED_ALL;
    unsigned same = 0, oldest = 0, i = 0;
    for (; i < UNMEASURED_ALL && h->unmeasured[i]; i++)
        if (segment_of_page(h->unmeasured[i])->kind == seg->kind && same++ == 0)
            oldest = i;
    if (same == limit || i == UNMEASURED_ALL) {
        unsigned out = same == limit ? oldest : 0;
        page_measure(h, h->unmeasured[out]);
        unmeasured_drop(h, out);
        i--;
    }
    h->unmeasured[i] = page;
}

/* The newest of h's unmeasured pages last carved for class c, still free
 * and resident, or NULL. */
static page_t *unmeasured_of_class(heap_t *h, unsigned c)
{
    for (unsigned i = UNMEASURED_ALL; i-- > 0;) {
        page_t *page = h->unmeasured[i];
        if (page && page->class_idx == c && page_is_dirty(page))
            return page;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Taking a page                                                       */

#define WARM_LOOK 8
page_t *segment_page_alloc_class(heap_t *h, enum segment_kind kind, unsigned c, uint64_t now)
{
    segment_t *seg;
    unsigned i;
    bool pool_tried = false;
    for (;;) {
        heap_gen_lock(&h->seg_lock);
        if (c && h->unmeasured[0]) {
            page_t *page = unmeasured_of_class(h, c);
            if (page) {
                seg = segment_of_page(page);
                i = page->page_idx;
                goto take_page;
            }
        }
        seg = h->segments[kind];
        /* a free page still resident first (no page faults, and what the
         * policy gives back is what stayed unused longest): in the first
         * of the segments with free pages that has one, looking at a few;
         * else an empty segment of the pool that may still hold a page's
         * worth of resident memory (pool_take), before a free page that
         * is not resident; then h's free pages of kinds it no longer
         * uses go back to the kernel before memory is faulted in for this
         * one (bench frag: as the size window slides down from 1..16 KiB,
         * the emptied pages of 8-16 KiB blocks stayed resident, 20-30 MiB
         * of them, under the bound, while fresh small pages were faulted
         * in) */
        unsigned look = 0;
        for (segment_t *s = seg; s && look < WARM_LOOK; s = s->next, look++)
            if (s->free_mask & s->dirty_mask) {
                seg = s;
                goto take;
            }
        if (seg && (pool_tried || (pool.count == 0 && !cold_kinds_dirty(h, kind))))
            goto take; /* (pool.count: a racy peek, only a hint) */
        gen_unlock(&h->seg_lock);
        /* the lock is dropped: seg may be gone meanwhile, look again */
        bool recycled;
        segment_t *fresh = segment_obtain(h, &recycled, (size_t)1 << kind_shift[kind], kind);
        if (!fresh) {
            purge_cold_kinds(h, kind);
            if (!seg)
                fresh = segment_obtain(h, &recycled, 0, kind);
            if (!fresh && !seg)
                return NULL;
        }
        pool_tried = true;
        if (fresh) {
            heap_gen_lock(&h->seg_lock);
            seg = fresh;
            segment_cut(h, seg, kind, recycled);
            dirty_add(h, dirty_in_range(seg, 0, SEGMENT_SIZE));
            seglist_push(h, seg);
            break;
        }
    }
take:;
    /* a resident page first, but one that another class left on the
     * unmeasured list last: its class is likely to want it back (a clean
     * page is faulted in once; stealing it back and forth would re-carve
     * a page at every take) */
    uint64_t listed = h->unmeasured[0] ? unmeasured_in(h, seg) : 0;
    uint64_t warm = seg->free_mask & seg->dirty_mask;
    uint64_t clean = seg->free_mask & ~seg->dirty_mask;
    uint64_t pick = warm & ~listed ? warm & ~listed : clean ? clean : seg->free_mask;
    i = (unsigned)__builtin_ctzll(pick);
take_page:;
    h->kind_taken_at[kind] = now;
    uint64_t bit = (uint64_t)1 << i;
    seg->free_mask &= ~bit;
    /* page->dirty of a page just taken: what may be resident of it, 0 if
     * nothing (page_fresh) */
    if (seg->dirty_mask & bit) {
        seg->dirty_mask &= ~bit;
        dirty_sub(h, seg->pages[i].dirty);
    } else {
        seg->pages[i].dirty = 0;
    }
    if (h->unmeasured[0])
        unmeasured_forget(h, &seg->pages[i], NULL);
    seg->used_pages++;
    h->used_bytes += page_bytes(seg);
    if (seg->free_mask == 0)
        seglist_remove(h, seg);
    gen_unlock(&h->seg_lock);
    return &seg->pages[i];
}

page_t *segment_page_alloc(heap_t *h, enum segment_kind kind)
{
    return segment_page_alloc_class(h, kind, 0, now_ticks());
}

/* An empty segment goes to the pool, with its dirty bytes. */
static void segment_release(heap_t *h, segment_t *seg)
{
    if (h->is_private)
        return; /* kept, on its lists, until emma_heap_reset or _destroy */
    seglist_remove(h, seg);
    if (h->unmeasured[0])
        unmeasured_forget(h, NULL, seg); /* counted as they are, in seg->resident */
    size_t d = dirty_in_range(seg, 0, SEGMENT_SIZE);
    dirty_sub(h, d);
    seg->heap = NULL;
    seg->resident = d;
    policy_resident_add(d);
    pool_put(seg);
}

/* Page `page` of seg is no longer in use: a free page, dirty where its
 * blocks were carved. */
static void page_set_free(heap_t *h, segment_t *seg, page_t *page, uint64_t now)
{
    uint64_t bit = (uint64_t)1 << page->page_idx;
    page->in_use = 0;
    page->remote_size = 0;
    page->in_full = 0;
    seg->free_mask |= bit;
    seg->used_pages--;
    h->used_bytes -= page_bytes(seg);
    if (page->capacity) {
        /* Only the blocks carved out were ever touched; of big blocks
         * (pages of 512 KiB and more), only what the program wrote, which
         * the kernel tells (a system call per such page released, cheaper
         * than purging memory that is not there for the sake of a count
         * that has it), later for a heap's last few medium and large
         * pages (above: unmeasured pages). */
        size_t touched = page_carved(page);
        /* what the page held when it was taken (segment_page_alloc_class
         * left it in page->dirty) is resident still where this use
         * carved less: a page of 512 KiB that one class filled and the
         * next carved 96 KiB of (bench idlebound, 16 threads: 3-4 MiB of
         * free memory resident and out of the count, before) */
        if (page->dirty > touched)
            touched = page->dirty < page_extent(page) ? page->dirty : page_extent(page);
        if (kind_listed(seg->kind) && !h->is_private)
            unmeasured_push(h, seg, page);
        else if (seg->page_shift >= MEDIUM_PAGE_SHIFT)
            touched = page_resident(page, page_extent(page));
        page->dirty = (uint32_t)touched;
        page->freed_at = now;
        seg->dirty_mask |= bit;
        dirty_add(h, page->dirty);
    }
}

/* emma_heap_reset: every page of seg becomes free, and seg goes back on
 * h's lists (which the caller emptied), empty segments too (a private
 * heap keeps them there). */
void segment_reset(heap_t *h, segment_t *seg)
{
    heap_gen_lock(&h->seg_lock);
    uint64_t now = now_ticks();
    for (unsigned i = 0; i < seg->page_count; i++)
        if (seg->pages[i].in_use)
            page_set_free(h, seg, &seg->pages[i], now);
    seglist_push(h, seg);
    gen_unlock(&h->seg_lock);
}

static void page_put(heap_t *h, page_t *page, uint64_t now)
{
    page_unhold(page);
    segment_t *seg = segment_of_page(page);
    if (seg->free_mask == 0)
        seglist_push(h, seg);
    page_set_free(h, seg, page, now);
    if (seg->used_pages == 0)
        segment_release(h, seg);
}

void segment_page_put(heap_t *h, page_t *page) { page_put(h, page, now_ticks()); }

void segment_page_release(heap_t *h, page_t *page)
{
    uint64_t now = now_ticks(); /* one clock read (policy.c: policy_tick_at) */
    heap_gen_lock(&h->seg_lock);
    page_put(h, page, now);
    gen_unlock(&h->seg_lock);
    policy_page_freed(h, now);
}

/* Return the memory of free pages [first, last] of seg to the kernel. */
static void purge_run(segment_t *seg, unsigned first, unsigned last)
{
    uintptr_t start = (uintptr_t)seg + ((uintptr_t)first << seg->page_shift);
    uintptr_t end = (uintptr_t)seg + ((uintptr_t)(last + 1) << seg->page_shift);
    if (first == 0)
        start += align_up(segment_header_size(seg->kind), OS_PAGE_SIZE);
    if (end > start)
        os_purge((void *)start, end - start);
}

/* salvage.c: purge page i of a quarantined heap's segment, whatever it
 * held; returns the bytes covered. */
size_t segment_purge_page(segment_t *seg, unsigned i)
{
    purge_run(seg, i, i);
    size_t bytes = page_bytes(seg);
    return i == 0 ? bytes - align_up(segment_header_size(seg->kind), OS_PAGE_SIZE) : bytes;
}

/* salvage.c: a quarantined heap's segment whose every page is free (and
 * purged) goes to the pool, for any heap; that heap's lists, which may
 * still name it, are never read again. */
void segment_salvaged(segment_t *seg)
{
    seg->free_mask = usable_mask(seg);
    seg->dirty_mask = 0;
    seg->used_pages = 0;
    seg->next = seg->prev = NULL;
    seg->resident = 0;
    atomic_store_explicit((_Atomic(heap_t *) *)&seg->heap, NULL, memory_order_release);
    pool_put(seg);
}

/* Purge the dirty pages of seg freed before `before` (all of them when
 * before is UINT64_MAX), page after page until about `limit` bytes are
 * given back; returns the bytes given back. */
static size_t segment_purge(segment_t *seg, uint64_t before, size_t limit)
{
    uint64_t m = seg->dirty_mask, done = 0;
    size_t bytes = 0;
    for (unsigned i = 0; i < seg->page_count && bytes < limit; i++) {
        uint64_t bit = (uint64_t)1 << i;
        if ((m & bit) && (before == UINT64_MAX || seg->pages[i].freed_at < before)) {
            done |= bit;
            bytes += seg->pages[i].dirty;
        }
    }
    for (uint64_t r = done; r;) {
        unsigned first = (unsigned)__builtin_ctzll(r), last = first;
        while (last + 1 < 64 && (r & ((uint64_t)1 << (last + 1))))
            last++;
        purge_run(seg, first, last);
        for (unsigned i = first; i <= last; i++)
            r &= ~((uint64_t)1 << i);
    }
    seg->dirty_mask &= ~done;
    return bytes;
}

/* Purge h's free pages freed before `before` (UINT64_MAX: all of them)
 * until about `limit` bytes are given back (SIZE_MAX: no limit); returns
 * the bytes given back.  The owner waits for seg_lock; another thread
 * (`wait` false) gives up if it is taken. */
size_t heap_purge_some(heap_t *h, uint64_t before, bool wait, size_t limit)
{
    if (wait)
        heap_gen_lock(&h->seg_lock);
    else if (!heap_gen_trylock(&h->seg_lock))
        return 0;
    size_t bytes = 0;
    if (h->dirty_bytes)
        for (int k = 0; k <= KIND_XLARGE && bytes < limit; k++)
            for (segment_t *seg = h->segments[k]; seg && bytes < limit; seg = seg->next)
                if (seg->dirty_mask)
                    bytes += segment_purge(seg, before, limit - bytes);
    if (before == UINT64_MAX && limit == SIZE_MAX)
        bytes = h->dirty_bytes;
    dirty_sub(h, bytes);
    gen_unlock(&h->seg_lock);
    return bytes;
}

size_t heap_purge_older(heap_t *h, uint64_t before, bool wait)
{
    return heap_purge_some(h, before, wait, SIZE_MAX);
}

size_t heap_purge(heap_t *h) { return heap_purge_older(h, UINT64_MAX, true); }

/* Hand segment seg, with every page in it, from heap `from` to heap `to`
 * (reclaim.c, taking over a dead thread's heap; the caller holds both).
 * Pages with room go to the back of to's class queues (a parked page is
 * unparked); full pages follow their segment.  Remote frees racing with
 * the move may still land on from's remote_pages; whoever collects them
 * there forwards them (page.c). */
bool segment_move(heap_t *from, heap_t *to, segment_t *seg)
{
    if (seg->heap != from || seg->kind == KIND_HUGE || from == to)
        return false;
    heap_gen_lock(&from->seg_lock);
    heap_gen_lock(&to->seg_lock);
    if (from->unmeasured[0])
        unmeasured_forget(from, NULL, seg); /* counted at their extent still, in to's count */
    size_t used = 0, dirty = 0;
    for (unsigned i = 0; i < seg->page_count; i++) {
        page_t *page = &seg->pages[i];
        if (!page->in_use) {
            if (seg->dirty_mask & ((uint64_t)1 << i))
                dirty += page->dirty;
            continue;
        }
        used += page_bytes(seg);
        if (page->in_full)
            continue;
        bin_remove(from, page);
        page_unhold(page); /* no longer the lone page of its class */
        bin_push_back(to, page);
    }
    if (seg->free_mask) {
        seglist_remove(from, seg);
        seglist_push(to, seg);
    }
    from->used_bytes -= used;
    to->used_bytes += used;
    if (dirty > from->dirty_bytes)
        dirty = from->dirty_bytes;
    from->dirty_bytes -= dirty; /* the process-wide count does not change */
    to->dirty_bytes += dirty;
    atomic_store_explicit((_Atomic(heap_t *) *)&seg->heap, to, memory_order_release);
    gen_unlock(&to->seg_lock);
    gen_unlock(&from->seg_lock);
    return true;
}

/* After teardown (every segment unmapped): forget the pooled segments. */
void pool_forget(void)
{
    pool.count = 0;
}

/* A pool list left by a holder that died or was lost in a fork, mended:
 * each entry kept once (a pool_take that dies mid-shift leaves one twice),
 * and only if it is still one of emma's segments, mapped, with its header
 * chunk in the address map (no path leaves another on the list; checked
 * all the same, since keeping a bad entry would hand out memory twice).
 * What is dropped stays mapped, or counted as resident, unused: a leak
 * beats a corruption.  Returns the number of entries kept, in order, at
 * the start of list. */
unsigned pool_mend(segment_t **list, unsigned count)
{
    unsigned kept = 0;
    for (unsigned i = 0; i < count && i < POOL_MAX; i++) {
        segment_t *seg = list[i];
        uintptr_t cookie;
        bool ok = seg && ((uintptr_t)seg & SEGMENT_MASK) == 0 &&
                  os_read_safe(&cookie, &seg->cookie, sizeof cookie) &&
                  cookie == ((uintptr_t)seg ^ os_secret()) &&
                  addrmap_lookup((uint8_t *)seg + OS_PAGE_SIZE) == CHUNK_HEADER;
        for (unsigned j = 0; ok && j < kept; j++)
            ok = list[j] != seg;
        if (ok)
            list[kept++] = seg;
    }
    return kept;
}

static void pool_recover(void)
{
    pool.count = pool_mend(pool.seg, pool.count);
}

/* heap.c: heap_left_recover */
void segment_locks_left(uint32_t me) { gen_release_left(&pool.lock, me, pool_recover); }

void segment_stamp(segment_t *seg)
{
    seg->cookie = (uintptr_t)seg ^ os_secret();
    seg->self = seg;
}

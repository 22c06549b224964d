/* Huge blocks (> 1 MiB, or alignment > 1 MiB): one mapping each, with a
 * header at its 4 MiB aligned start so free() finds it by masking like any
 * other block.  The block starts right after the header (256 bytes), in
 * the same OS page, or at the alignment asked for; an alignment above
 * 4 MiB puts the block exactly 4 MiB above the header.  realloc moves pages with mremap, never copies.
 *
 * A mapping is rounded up to a multiple of 4 MiB (reserve_size; the tail
 * is never touched, so it costs address space only) and placed just below
 * the previous one, so that neighbouring huge blocks and segments are one
 * mapping for the kernel (vm.max_map_count) and a block grows into its tail
 * without a system call.  Under an address-space limit (RLIMIT_AS), where
 * untouched bytes count too, mappings are exact, a cached one reused for a
 * shorter block is cut to its length (trim_reserve), and blocks of 64 KiB-
 * 1 MiB get exact mappings too once address space gets scarce
 * (huge_alloc_exact).
 *
 * Freed mappings go to one cache shared by every thread (a spin lock;
 * huge blocks are rare and slow anyway): the next huge request that fits
 * in one reuses its address space and whatever of its pages are still
 * resident, with no system call when it fits whole.  What the cache keeps
 * resident is counted in policy.c's process-wide total: while the program
 * does not reuse cached mappings (a block freed and the thread idle), at
 * most policy_huge_cold_bytes; once it does (buffers replaced at random),
 * as much as the process-wide bound leaves room for besides the other free
 * memory (cache_budget), purged oldest first; mappings freed for longer
 * than the decay time lose their pages, and later their address space
 * (policy.c's decay pass).  A block that reuses a longer mapping keeps the
 * pages beyond its end (the next one may be longer), up to a quarter of
 * the bound process-wide, within the bound (tail_fit).  While the blocks freed are
 * written whole, the pages of a new block (not calloc's) that are not
 * resident yet are first taken from other cached mappings, moved by mremap
 * (gather), and the rest faulted in by one madvise(MADV_POPULATE_WRITE)
 * rather than one page fault each (populate); the whole segments of a
 * reused mapping past such a block stay cached as a mapping of their own
 * (split_tail).
 *
 * No block is advised to use transparent huge pages (MADV_HUGEPAGE): with
 * the kernel's THP defrag setting at `madvise` (Debian's default) a fault
 * in an advised range may compact memory first, and on a virtual machine a
 * fresh 2 MiB page is memory the host may not have backed yet (bench
 * realloc-grow, which grows vectors past 8 MiB: 92 % system time, runs
 * spread by 125 %, with the advice).  realloc shrinking a huge block (to
 * 64 KiB or more) keeps it in place and gives the tail back.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "observe.h"
#include "policy.h"

static size_t round_pages(size_t n) { return align_up(n, OS_PAGE_SIZE); }

/* The header: the mapping's segment_t and its one page_t. */
#define HUGE_HEADER align_up(sizeof(segment_t) + sizeof(page_t), (size_t)64)

/* Offset of the block from the header for a given alignment: right after
 * the header, in its page, unless the alignment asks for more (bench maps,
 * 10,000 blocks of 1-2 MiB with their first byte written: one page touched
 * per block rather than two, 20k page faults -> 10k, perf stat task-clock
 * 98 -> 84 ms, median of 7). */
static size_t huge_offset(size_t align)
{
    if (align <= HUGE_HEADER)
        return HUGE_HEADER;
    return align < SEGMENT_SIZE ? align : SEGMENT_SIZE;
}

/* The mapping's bytes for a block of `size` bytes at `offset`. */
static size_t huge_map_size(size_t offset, size_t size)
{
    return round_pages(offset + (size == 0 ? 1 : size));
}

/* The block's first OS page, from the mapping's start (0: the header's). */
static size_t first_page(const segment_t *seg)
{
    return (size_t)(seg->pages[0].start - (const uint8_t *)seg) & ~(OS_PAGE_SIZE - 1);
}

/* The first page of the mapping that holds nothing of the header: where
 * pages may be moved in (gather) or faulted in ahead (populate). */
static size_t body_start(const segment_t *seg)
{
    size_t f = first_page(seg);
    return f > OS_PAGE_SIZE ? f : OS_PAGE_SIZE;
}

/* The untouched pages an alignment leaves between the header's page and
 * the block's first page. */
static size_t align_gap(size_t first)
{
    return first > OS_PAGE_SIZE ? first - OS_PAGE_SIZE : 0;
}

/* False (and nothing marked) when the address map cannot be made: the
 * caller gives the mapping back instead of handing out memory emma would
 * not recognise. */
static bool huge_init(segment_t *seg, size_t map_size, size_t reserve, size_t offset,
                      size_t map_align)
{
    seg->heap = NULL; /* keeps huge blocks off the free fast path */
    seg->origin = NULL;  /* a private heap's huge block: heap_private.c sets it */
    seg->kind = KIND_HUGE;
    seg->flags = 0;
    seg->page_shift = HUGE_PAGE_SHIFT;
    seg->page_count = 1;
    seg->used_pages = 1;
    seg->free_mask = seg->dirty_mask = 0;
    seg->map_size = map_size;
    page_t *page = &seg->pages[0];
    page->dirty = 0; /* in use: its tail's count (tail_fit) */
    seg->reserve_size = reserve;
    /* a fresh mapping: assume the block gets written; a reused one keeps
     * what it had */
    if (seg->resident < map_size)
        seg->resident = map_size;
    segment_stamp(seg);
    seg->next = seg->prev = NULL;
    page->in_use = 1;
    page->class_idx = CLASS_HUGE;
    page->start = (uint8_t *)seg + offset;
    page->used = 1;
    page->block_size = 0; /* see huge_usable */
    page->reserved = log2_floor(map_align); /* kept by realloc */
    page->free = page->local_free = NULL;
    return addrmap_mark_huge(seg, map_size);
}

/* ------------------------------------------------------------------ */
/* The process-wide cache of freed mappings                            */

void cache_forget(void);

#define CACHE_SLOTS 32
static struct {
    _Atomic uint32_t lock;
    unsigned count;
    segment_t *seg[CACHE_SLOTS]; /* oldest first */
    size_t resident;             /* sum of their weight() */
    uint64_t warm_until;         /* now_ticks: reuse seen recently */
    size_t typical;              /* moving average of the requests' sizes */
} cache;

/* seg->resident of a huge mapping: bytes from its start that may be
 * resident (the header page at least): where purges go.  What a cached
 * mapping weighs in the accounting, pages[0].dirty, is what the kernel
 * says is resident when it is cached (mincore: a program that touched a
 * big block sparsely keeps its few pages without crowding others out),
 * or, for mappings over 1 GiB, its extent less the gap an alignment left
 * between the header page and the block. */
static size_t extent_weight(const segment_t *seg, size_t extent)
{
    size_t gap = align_gap(first_page(seg));
    return extent > OS_PAGE_SIZE + gap ? extent - gap : OS_PAGE_SIZE;
}

static size_t weight(const segment_t *seg) { return seg->pages[0].dirty; }

/* One system call: the header's page and the block's first page (the
 * same page but for an alignment above the header's size) are taken to be
 * resident (nearly every block has its start written), the next
 * PROBE_BYTES are asked
 * about, and the rest is taken to be used alike (a program touches a big
 * block sparsely or whole, rarely half and half).  The kernel walks one
 * page-table entry per page asked about: bench maps (10,000 blocks of
 * 1-2 MiB, the first byte of each written) spent a quarter of its time in
 * mincore when the first 4 MiB were asked about.  Not the middle of the
 * block: the pages around the ends of the earlier, shorter blocks that
 * used the mapping stay resident there (bench bigbuf sparse then purged
 * 3.6 GiB in 500 calls rather than 0.2 GiB in 12, 36k page faults rather
 * than 20k). */
#define PROBE_BYTES ((size_t)256 << 10)

static void measure(segment_t *seg)
{
    size_t w = extent_weight(seg, seg->resident);
    size_t f = first_page(seg), taken = f + OS_PAGE_SIZE;
    if (seg->resident <= ((size_t)1 << 30) && seg->resident > taken) {
        size_t len = seg->resident - taken;
        size_t probe = len < PROBE_BYTES ? len : PROBE_BYTES;
        size_t r = os_resident_bytes((uint8_t *)seg + taken, probe);
        w = extent_weight(seg, taken) + r * (len / OS_PAGE_SIZE) / (probe / OS_PAGE_SIZE);
    }
    seg->pages[0].dirty = (uint32_t)w;
}

/* Give back the pages of a cached mapping beyond its first `keep` bytes;
 * returns what its weight went down by. */
static size_t purge_beyond(segment_t *seg, size_t keep)
{
    keep = align_up(keep < OS_PAGE_SIZE ? OS_PAGE_SIZE : keep, OS_PAGE_SIZE);
    if (seg->resident <= keep)
        return 0;
    size_t w = weight(seg), left = extent_weight(seg, keep);
    os_purge((uint8_t *)seg + keep, seg->resident - keep);
    seg->resident = keep;
    if (left < w)
        seg->pages[0].dirty = (uint32_t)left;
    return w - weight(seg);
}

/* Give back up to `excess` bytes of what the mappings freed before
 * `before` keep resident, oldest first, the last one in part (its first
 * pages stay), with the lock held; returns the bytes given back. */
static size_t cache_trim_oldest(uint64_t before, size_t excess)
{
    size_t n = 0;
    for (unsigned i = 0; i < cache.count && n < excess; i++) {
        segment_t *seg = cache.seg[i];
        if (before != UINT64_MAX && seg->pages[0].freed_at >= before)
            break; /* the rest were freed later */
        size_t over = excess - n;
        size_t keep = weight(seg) > over + OS_PAGE_SIZE && seg->resident > over ? seg->resident - over : 0;
        size_t b = purge_beyond(seg, keep & ~(OS_PAGE_SIZE - 1));
        cache.resident -= b;
        n += b;
    }
    return n;
}

/* Bring the cache's resident bytes down to `budget` (with the lock held). */
static size_t cache_shrink(size_t budget)
{
    return cache.resident > budget ? cache_trim_oldest(UINT64_MAX, cache.resident - budget) : 0;
}

static void cache_remove(unsigned i)
{
    cache.resident -= weight(cache.seg[i]);
    for (; i + 1 < cache.count; i++)
        cache.seg[i] = cache.seg[i + 1];
    cache.count--;
}

static void unmap_mapping(segment_t *seg)
{
    addrmap_clear(seg, seg->reserve_size);
    os_unmap(seg, seg->reserve_size);
}

/* What the cache may hold resident now: while the program reuses cached
 * mappings (big buffers replaced at random), whatever the process-wide
 * bound leaves room for besides the other free memory (`other`: free
 * pages, the pool, the tails of live blocks), so that a freed block mostly
 * serves the next request whole; else policy_huge_cold_bytes (a block
 * freed and the thread idle), within that room too.  Either way the cache
 * makes room for itself, oldest cached pages first, and the memory left
 * resident when every thread goes idle stays under the bound. */
static size_t cache_budget(uint64_t now, size_t other)
{
    size_t b = policy_free_bound;
    size_t room = other < b ? b - other : 0;
    size_t want = now < cache.warm_until ? b : policy_huge_cold_bytes;
    return want < room ? want : room;
}

/* Tails: a live block that reuses a longer cached mapping keeps the pages
 * of the mapping beyond its end resident (the next block to reuse the
 * mapping may be longer) when they are few, as in a block touched
 * sparsely (at most a quarter of the tail resident), up to a quarter of
 * the process-wide bound in all, and only as far as the bound has room:
 * free memory like any other, counted in policy.c's total (and here, and
 * in each block's pages[0].dirty, at their estimated resident bytes) but
 * purged only when the block is freed or resized.  A tail written whole
 * goes back at once: it would take room under the bound from the blocks
 * freed meanwhile, which serve the next requests better (bench/bigbuf
 * whole 400 20 5 25, perf stat task-clock: 1.18-1.34 s giving such tails
 * back, 1.31-1.43 s keeping them; bigbuf sparse 20000 20 5 25 keeps its
 * tails: 20k page faults, 147k when they went back too), unless it is at
 * most TAIL_KEEP_WHOLE: the tails of blocks that are huge for their
 * alignment only (bench aligned: 2 MiB aligned blocks of 1 KiB-1 MiB,
 * each in a 4 MiB mapping) are that small, and giving them back made the
 * next longer block fault them in again (bench aligned: 214k page faults,
 * 131k keeping them). */
#define TAILS_MAX(b) ((b) / 4)
#define TAIL_KEEP_WHOLE ((size_t)1 << 20)
static _Atomic size_t stale_bytes;

static void tail_fit(segment_t *seg, size_t weight_was, size_t extent_was)
{
    size_t end = seg->map_size;
    if (seg->resident <= end)
        return;
    size_t tail = seg->resident - end;
    size_t est = tail; /* at the density the kernel reported (measure) */
    if (weight_was < extent_was)
        est = (tail / OS_PAGE_SIZE) * (weight_was / OS_PAGE_SIZE) / (extent_was / OS_PAGE_SIZE) *
              OS_PAGE_SIZE;
    size_t have = atomic_load_explicit(&stale_bytes, memory_order_relaxed);
    size_t bound = policy_free_bound, free_now = policy_resident();
    size_t room = have < TAILS_MAX(bound) ? TAILS_MAX(bound) - have : 0;
    if (free_now < bound && bound - free_now < room)
        room = bound - free_now;
    if (free_now >= bound || (est > tail / 4 && tail > TAIL_KEEP_WHOLE))
        room = 0; /* over the bound, or a long tail written whole */
    if (est > room) {
        /* keep what fits, counted at full density */
        size_t keep = room & ~(OS_PAGE_SIZE - 1);
        os_purge((uint8_t *)seg + end + keep, tail - keep);
        seg->resident = end + keep;
        est = keep < est ? keep : est;
    }
    seg->pages[0].dirty = (uint32_t)est;
    atomic_fetch_add_explicit(&stale_bytes, est, memory_order_relaxed);
    policy_resident_add(est);
}

/* The tail's count goes (the block is freed or resized). */
static void tail_uncount(segment_t *seg)
{
    size_t est = seg->pages[0].dirty;
    seg->pages[0].dirty = 0;
    atomic_fetch_sub_explicit(&stale_bytes, est, memory_order_relaxed);
    policy_resident_sub(est);
}

/* Whether the program writes its big blocks whole: the last huge block
 * freed that emma did not fill in ahead itself was (nearly) all resident,
 * at its start and at its end (written_whole). */
static _Atomic bool dense_blocks;

/* Blocks filled in ahead (gather, populate) are resident whole whatever
 * the program wrote, so they are no evidence either way; one new block in
 * FILL_SAMPLE is left to the program's own page faults, so that a program
 * that stops writing its blocks whole is noticed (before, one realloc'd
 * block freed dense at its start made every later huge block of the
 * process resident whole, for good: 300 blocks of 2 MiB with one byte
 * written each took 600 MiB instead of 2, and 200x the time). */
#define FILL_SAMPLE 16
static _Atomic unsigned fill_count;

/* Whether a new block (not calloc's) gets its pages filled in ahead. */
static bool fill_ahead(bool zero)
{
    if (zero || !atomic_load_explicit(&dense_blocks, memory_order_relaxed))
        return false;
    return atomic_fetch_add_explicit(&fill_count, 1, memory_order_relaxed) % FILL_SAMPLE !=
           FILL_SAMPLE - 1;
}

/* A new block (not calloc's) of a program that writes its big blocks
 * whole: its pages not yet resident are faulted in by one system call
 * rather than one fault each. */
static void populate(segment_t *seg, size_t from, bool zero)
{
    if (zero || !atomic_load_explicit(&dense_blocks, memory_order_relaxed))
        return;
    size_t start = body_start(seg);
    from = from > start ? from : start;
    if (from < seg->map_size) {
        os_populate((uint8_t *)seg + from, seg->map_size - from);
        seg->flags |= SEG_FILLED;
    }
}

/* Gathering: a new block (not calloc's) of a program that writes its big
 * blocks whole, about to fault in its pages from `from` on, takes
 * resident pages of other cached mappings instead, moved by mremap (page
 * tables move; no page is faulted in, zeroed or copied), the last ones of
 * each mapping first, oldest mapping first, until the block is whole.
 * The cache keeps as many free pages resident as the bound allows, but
 * spread over several mappings, and the one a block reuses rarely has all
 * it needs: bench/bigbuf whole 600 20 5 25 faulted in about 800 pages per
 * step without this.  A mapping left with only its header is unmapped;
 * the others stay cached, shorter.  Returns where the block's resident
 * pages now end. */
#define GATHER_MIN ((size_t)256 << 10) /* a piece worth a system call */
#define GATHER_DONORS 8

static _Atomic bool gather_refused;

/* Is address space scarce (RLIMIT_AS)?  Asked of the kernel at most once
 * per decay time.  Then mappings are exact (reserve_for), and pages are
 * not gathered: a mapping that fails is retried after the caches are
 * released (policy_release_for_retry), and a cached mapping left whole is
 * what that finds to release (t_oom_retry without TLS, when the caller's
 * own heap, which holds the program's empty segments, was not trimmed
 * there, got 90 MiB of 256 with gathering, 248 without). */
static size_t space_limit(void)
{
    static _Atomic uint64_t checked_at;
    static _Atomic uint32_t checked_gen;
    static _Atomic size_t limit;
    uint64_t now = now_ticks(), t = atomic_load_explicit(&checked_at, memory_order_relaxed);
    /* asked again in a fork child (lock_generation moves on there), which
     * often sets its own limit at once */
    uint32_t gen = atomic_load_explicit(&lock_generation, memory_order_relaxed);
    if (t == 0 || now - t > policy_decay_ticks || gen != atomic_load_explicit(&checked_gen, memory_order_relaxed)) {
        atomic_store_explicit(&limit, os_address_space_limit(), memory_order_relaxed);
        atomic_store_explicit(&checked_at, now, memory_order_relaxed);
        atomic_store_explicit(&checked_gen, gen, memory_order_relaxed);
    }
    return atomic_load_explicit(&limit, memory_order_relaxed);
}

bool space_scarce(unsigned share)
{
    size_t limit = space_limit();
    return limit != 0 && os_bytes_mapped() > limit / share;
}

static bool space_limited(void) { return space_limit() != 0; }

/* A block just freed (and measured) was written whole: dense at its start
 * (measure) and in its last PROBE_BYTES (a block grown by realloc, or
 * written at its start only, is dense at its start and nowhere else). */
static bool written_whole(segment_t *seg)
{
    if (weight(seg) < extent_weight(seg, seg->map_size) / 8 * 7)
        return false;
    size_t end = seg->resident < seg->map_size ? seg->resident : seg->map_size;
    end &= ~(OS_PAGE_SIZE - 1);
    if (end < body_start(seg) + 2 * PROBE_BYTES)
        return true; /* measure's probe covered most of it */
    size_t r = os_resident_bytes((uint8_t *)seg + end - PROBE_BYTES, PROBE_BYTES);
    return r >= PROBE_BYTES / 8 * 7;
}

static bool dense_mapping(const segment_t *seg)
{
    return weight(seg) >= extent_weight(seg, seg->resident) / 8 * 7;
}

static void cache_insert(segment_t *seg)
{
    unsigned i = cache.count;
    while (i > 0 && cache.seg[i - 1]->pages[0].freed_at > seg->pages[0].freed_at) {
        cache.seg[i] = cache.seg[i - 1];
        i--;
    }
    cache.seg[i] = seg;
    cache.count++;
    cache.resident += weight(seg);
}

static size_t gather(segment_t *seg, size_t from, bool zero)
{
    size_t start = body_start(seg), end = seg->map_size;
    from = from > start ? from : start;
    if (zero || from + GATHER_MIN > end || cache.count == 0 ||
        !atomic_load_explicit(&dense_blocks, memory_order_relaxed) ||
        atomic_load_explicit(&gather_refused, memory_order_relaxed) || space_limited())
        return from;
    segment_t *donor[GATHER_DONORS];
    unsigned n = 0;
    size_t want = end - from, got = 0, taken = 0;
    if (!gen_lock_try(&cache.lock, cache_forget))
        return from;
    for (unsigned i = 0; i < cache.count && n < GATHER_DONORS && got < want;) {
        segment_t *d = cache.seg[i];
        size_t dstart = body_start(d);
        if (d->resident < dstart + GATHER_MIN || !dense_mapping(d)) {
            i++;
            continue;
        }
        got += d->resident - dstart;
        taken += weight(d);
        donor[n++] = d;
        cache_remove(i);
    }
    gen_unlock(&cache.lock);
    policy_resident_sub(taken);
    bool broken = false;
    for (unsigned k = 0; k < n; k++) {
        segment_t *d = donor[k];
        size_t dstart = body_start(d);
        size_t len = d->resident - dstart;
        if (len > end - from)
            len = end - from;
        if (broken || len < GATHER_MIN)
            continue; /* back to the cache as it was */
        size_t at = d->resident - len, reserve = d->reserve_size;
        int moved = os_move_pages((uint8_t *)d + at, len, (uint8_t *)seg + from);
        if (moved < 0)
            broken = true;
        if (moved <= 0) /* an older kernel: never again */
            atomic_store_explicit(&gather_refused, true, memory_order_relaxed);
        if (moved <= 0 || at == dstart) {
            /* used up, or the kernel refused: the donor goes */
            donor[k] = NULL;
            addrmap_clear(d, reserve);
            if (moved > 0) {
                os_unmap(d, at);
                os_unmap((uint8_t *)d + at + len, reserve - at - len);
            } else {
                os_unmap(d, reserve);
            }
        } else {
            addrmap_clear(d, d->map_size > at ? d->map_size : at);
            d->map_size = at;
            d->reserve_size = at;
            d->resident = at;
            d->pages[0].dirty = (uint32_t)extent_weight(d, at);
            addrmap_mark_huge(d, at);
            os_unmap((uint8_t *)d + at + len, reserve - at - len);
        }
        if (moved > 0) {
            from += len;
            seg->flags |= SEG_GATHERED | SEG_FILLED;
        }
    }
    size_t back = 0;
    bool locked = gen_lock_try(&cache.lock, cache_forget);
    for (unsigned k = 0; k < n; k++) {
        segment_t *d = donor[k];
        if (!d)
            continue;
        if (locked && cache.count < CACHE_SLOTS) {
            cache_insert(d);
            back += weight(d);
        } else {
            unmap_mapping(d);
        }
    }
    if (locked)
        gen_unlock(&cache.lock);
    policy_resident_add(back);
    if (broken) {
        /* a hole in the block: give it up */
        addrmap_clear(seg, seg->reserve_size);
        os_unmap(seg, seg->reserve_size);
        return SIZE_MAX;
    }
    return from;
}

/* A block that reuses a cached mapping much longer than itself, written
 * whole by its last block: the mapping's whole segments past the block's
 * last one become a cached mapping of their own (a header written at a
 * 4 MiB boundary, no system call), their resident pages free memory that
 * the next request (or gather) can use, where they would have been given
 * back as the block's tail. */
static void split_tail(segment_t *seg, size_t weight_was, size_t extent_was)
{
    size_t at = align_up(seg->map_size, SEGMENT_SIZE);
    if (weight_was < extent_was / 8 * 7 || seg->resident < at + GATHER_MIN ||
        seg->reserve_size <= at || first_page(seg) > OS_PAGE_SIZE)
        return;
    segment_t *t = (segment_t *)((uint8_t *)seg + at);
    size_t len = seg->resident - at, est = len;
    if (weight_was < extent_was)
        est = (len / OS_PAGE_SIZE) * (weight_was / OS_PAGE_SIZE) / (extent_was / OS_PAGE_SIZE) *
              OS_PAGE_SIZE;
    if (!gen_lock_try(&cache.lock, cache_forget))
        return;
    if (cache.count == CACHE_SLOTS || !addrmap_mark_huge(t, OS_PAGE_SIZE)) {
        gen_unlock(&cache.lock);
        return;
    }
    t->resident = 0;
    (void)huge_init(t, OS_PAGE_SIZE, seg->reserve_size - at, HUGE_HEADER, SEGMENT_SIZE);
    t->resident = len;
    t->flags = seg->flags & SEG_GATHERED;
    t->pages[0].in_use = 0;
    t->pages[0].freed_at = seg->pages[0].freed_at;
    t->pages[0].dirty = (uint32_t)(est < OS_PAGE_SIZE ? OS_PAGE_SIZE : est);
    seg->reserve_size = at;
    seg->resident = at;
    cache_insert(t);
    gen_unlock(&cache.lock);
    policy_resident_add(weight(t));
}

/* A full cache evicts its oldest mapping, and with it the cached mappings
 * next to it in the address space (huge mappings are placed one below the
 * other) that hold nothing resident but a page or two (blocks of which
 * the program wrote only the start): one munmap for the run, where the
 * cache would otherwise evict them one per free (bench maps, 10,000
 * blocks of 1-2 MiB freed in turn: a third of its time in munmap).
 * Mappings with more resident are left to serve the next requests.  With
 * the lock held; returns the run's start, its length and weight. */
#define EVICT_LIGHT (2 * OS_PAGE_SIZE)

static uint8_t *evict_run(size_t *len, size_t *w)
{
    segment_t *first = cache.seg[0];
    uint8_t *lo = (uint8_t *)first, *hi = lo + first->reserve_size;
    *w = weight(first);
    addrmap_clear(first, first->reserve_size);
    cache_remove(0);
    bool light = *w <= EVICT_LIGHT;
    for (unsigned i = 0; light && i < cache.count;) {
        segment_t *s = cache.seg[i];
        uint8_t *a = (uint8_t *)s, *b = a + s->reserve_size;
        if (weight(s) > EVICT_LIGHT || (b != lo && a != hi)) {
            i++;
            continue;
        }
        *w += weight(s);
        addrmap_clear(s, s->reserve_size);
        cache_remove(i);
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
        i = 0; /* the run grew: look again */
    }
    *len = (size_t)(hi - lo);
    return lo;
}

/* The spill: a mapping freed while the cache is full and cold (no reuse
 * seen lately: a program that frees many big blocks it does not replace)
 * is not measured (a mincore call) nor cached, but joins a run of such
 * mappings next to each other in the address space, given back by one
 * munmap when the next one is not adjacent, when the run reaches
 * SPILL_MAX, on a shrink and at every decay pass.  Each is counted at its
 * extent, all it may hold resident, in the cache's share of the bound;
 * those of more than SPILL_MAX / 4 are cached as before, measured.  They
 * stay in the address map (free() of one of them is a double free; the
 * teardown's walk unmaps them) until the run goes.  bench maps (10,000
 * blocks of 1-2 MiB, the first byte of each written, then freed): 10,000
 * mincore and 315 munmap calls became 32 and 991, perf stat task-clock
 * 84 -> 63 ms (medians of 7 interleaved runs; tcmalloc 58-64).  Not where
 * address space is scarce (space_limited): a run holds address space a
 * later mapping may need (under ulimit -v 256M, 1-2 MiB blocks after
 * 1-7 MiB ones were freed: 154 MiB with the spill, 183 without). */
#define SPILL_MAX(b) ((b) / 2)
static struct {
    uint8_t *lo, *hi; /* the run */
    unsigned count;
    size_t weight;    /* the sum of their extents */
} spill;              /* under cache.lock */

/* Take the run out, with the lock held: its start, *len and *w its length
 * and weight (policy_resident_sub it, spill_unmap it, after unlocking). */
static uint8_t *spill_take(size_t *len, size_t *w)
{
    uint8_t *lo = spill.lo;
    *len = (size_t)(spill.hi - spill.lo);
    *w = spill.weight;
    spill.lo = spill.hi = NULL;
    spill.count = 0;
    spill.weight = 0;
    return lo;
}

static void spill_unmap(uint8_t *lo, size_t len)
{
    if (lo) {
        addrmap_clear(lo, len);
        os_unmap(lo, len);
    }
}

static bool spill_put(segment_t *seg, uint64_t now)
{
    size_t w = extent_weight(seg, seg->resident), bound = policy_free_bound;
    /* racy peeks first: the common case takes no lock here */
    if (cache.count < CACHE_SLOTS || now < cache.warm_until || w > SPILL_MAX(bound) / 4 ||
        space_limited())
        return false; /* where address space is scarce, a spilled run holds it */
    if (!gen_lock_try(&cache.lock, cache_forget))
        return false;
    if (cache.count < CACHE_SLOTS || now < cache.warm_until) {
        gen_unlock(&cache.lock);
        return false;
    }
    uint8_t *a = (uint8_t *)seg, *b = a + seg->reserve_size, *gone = NULL;
    size_t gone_len = 0, gone_w = 0;
    if (spill.lo && ((b != spill.lo && a != spill.hi) || spill.weight + w > SPILL_MAX(bound)))
        gone = spill_take(&gone_len, &gone_w);
    spill.lo = spill.lo && spill.lo < a ? spill.lo : a;
    spill.hi = spill.hi && spill.hi > b ? spill.hi : b;
    spill.count++;
    spill.weight += w;
    gen_unlock(&cache.lock);
    policy_resident_add(w);
    policy_resident_sub(gone_w);
    spill_unmap(gone, gone_len);
    return true;
}

/* The spare: address space mapped ahead, SPARE_BYTES at a time, from
 * whose top fresh huge mappings of up to a quarter of that are carved
 * (whole segments, no system call), the next spare mapped just below the
 * last (os.c's hint) and merged with what is left of it, so that the
 * blocks still sit one below the other, one mapping for the kernel.  Its
 * header, at its start, is a cached mapping's (in the address map, not in
 * use: the teardown's walk unmaps it) but not in the cache: nothing but a
 * fresh mapping is carved from it, its pages never touched but the
 * header's (not counted under the bound: one page).  It goes back with the
 * cache's address space (16 decay times unused, trim, a failed mapping),
 * and is not used where mappings are exact (space_limited).  bench maps
 * (10,000 blocks of 1-2 MiB, each a 4 MiB mapping): 10,040 mmap calls ->
 * 1,291, perf stat task-clock 73 -> 64 ms (medians of 9 interleaved runs;
 * tcmalloc 66, glibc 106). */
#define SPARE_BYTES ((size_t)32 << 20)
static segment_t *spare; /* under cache.lock */

/* A fresh mapping of `reserve` bytes carved from the top of the spare, or
 * NULL; with the lock held. */
static segment_t *spare_carve(size_t reserve, uint64_t now)
{
    segment_t *s = spare;
    if (!s || s->reserve_size < reserve)
        return NULL;
    size_t left = s->reserve_size - reserve;
    segment_t *seg = (segment_t *)((uint8_t *)s + left);
    addrmap_clear(seg, reserve); /* the spare's mark, when it is used up */
    if (left == 0) {
        spare = NULL; /* its header page becomes the block's */
    } else {
        s->reserve_size = left;
        s->pages[0].freed_at = now;
    }
    return seg;
}

static segment_t *spare_take(size_t reserve)
{
    if (reserve > SPARE_BYTES / 4 || (reserve & (SEGMENT_SIZE - 1)) || space_limited())
        return NULL; /* big, or exact (space_limited: even a whole segment) */
    uint64_t now = now_ticks();
    if (!gen_lock_try(&cache.lock, cache_forget))
        return NULL;
    segment_t *seg = spare_carve(reserve, now);
    gen_unlock(&cache.lock);
    if (seg)
        return seg;
    segment_t *m = os_map_aligned(SPARE_BYTES, SEGMENT_SIZE, 0, NULL);
    if (!m)
        return NULL;
    m->resident = 0;
    if (!huge_init(m, OS_PAGE_SIZE, SPARE_BYTES, HUGE_HEADER, SEGMENT_SIZE) ||
        !gen_lock_try(&cache.lock, cache_forget)) {
        addrmap_clear(m, SPARE_BYTES);
        os_unmap(m, SPARE_BYTES);
        return NULL;
    }
    m->pages[0].in_use = 0;
    m->pages[0].freed_at = now;
    segment_t *old = spare, *drop = NULL;
    if (old && (uint8_t *)m + SPARE_BYTES == (uint8_t *)old) {
        /* one spare: the old header's bytes read as never written */
        m->reserve_size += old->reserve_size;
        addrmap_clear(old, OS_PAGE_SIZE);
        mem_zero(old, HUGE_HEADER);
    } else {
        drop = old;
    }
    spare = m;
    seg = spare_carve(reserve, now);
    gen_unlock(&cache.lock);
    if (drop) {
        addrmap_clear(drop, drop->reserve_size);
        os_unmap(drop, drop->reserve_size);
    }
    return seg;
}

static void cache_put(segment_t *seg)
{
    tail_uncount(seg);
    uint64_t now = now_ticks();
    seg->pages[0].in_use = 0;
    seg->pages[0].freed_at = now;
    if (spill_put(seg, now))
        return;
    measure(seg);
    if (!(seg->flags & SEG_FILLED))
        atomic_store_explicit(&dense_blocks, written_whole(seg), memory_order_relaxed);
    uint8_t *evicted = NULL;
    size_t added = weight(seg), evicted_weight = 0, evicted_len = 0;
    if (!gen_lock_try(&cache.lock, cache_forget)) {
        unmap_mapping(seg); /* never wait (gen_lock_try) */
        return;
    }
    if (cache.count == CACHE_SLOTS)
        evicted = evict_run(&evicted_len, &evicted_weight);
    /* the free memory besides the cache's (counted before `added` is) */
    size_t total = policy_resident(), counted = cache.resident;
    size_t other = total > counted ? total - counted : 0;
    cache.seg[cache.count++] = seg;
    cache.resident += added;
    size_t purged = cache_shrink(cache_budget(now, other));
    gen_unlock(&cache.lock);
    policy_resident_add(added);
    policy_resident_sub(purged + evicted_weight);
    if (evicted)
        os_unmap(evicted, evicted_len);
}

size_t huge_cache_release(uint64_t before, uint64_t unmap_before)
{
    segment_t *gone[CACHE_SLOTS + 1];
    unsigned ngone = 0;
    size_t n = 0, unmapped = 0, spill_len;
    if (cache.count == 0 && !spill.lo && !spare) /* racy peek: only a hint */
        return 0;
    /* trim, or a mapping failed: wait (unless this thread holds it, in a
     * signal handler) */
    if (!(unmap_before == UINT64_MAX ? gen_lock : gen_lock_try)(&cache.lock, cache_forget))
        return 0;
    /* the spill goes whatever its age: nothing reuses it */
    uint8_t *spilled = spill_take(&spill_len, &unmapped);
    if (spare && (unmap_before == UINT64_MAX || spare->pages[0].freed_at < unmap_before)) {
        gone[ngone++] = spare;
        spare = NULL;
    }
    for (unsigned i = 0; i < cache.count;) {
        segment_t *seg = cache.seg[i];
        uint64_t t = seg->pages[0].freed_at;
        if (unmap_before == UINT64_MAX || t < unmap_before) {
            unmapped += weight(seg);
            cache_remove(i);
            gone[ngone++] = seg;
            continue;
        }
        if (before == UINT64_MAX || t < before) {
            size_t b = purge_beyond(seg, 0);
            cache.resident -= b;
            n += b;
        }
        i++;
    }
    gen_unlock(&cache.lock);
    policy_resident_sub(n + unmapped);
    spill_unmap(spilled, spill_len);
    for (unsigned i = 0; i < ngone; i++)
        unmap_mapping(gone[i]);
    return n + unmapped + (size_t)ngone * OS_PAGE_SIZE;
}

/* policy.c's shrink: give back up to `excess` bytes of what mappings
 * freed before `before` keep resident, oldest first, the last one only in
 * part (its first pages stay); returns the bytes given back. */
size_t huge_cache_shrink(uint64_t before, size_t excess)
{
    if ((cache.count == 0 && !spill.lo) || excess == 0) /* racy peek: only a hint */
        return 0;
    if (!gen_lock_try(&cache.lock, cache_forget))
        return 0;
    size_t len, n; /* the spill first, whatever its age: nothing reuses it */
    uint8_t *spilled = spill_take(&len, &n);
    if (n < excess)
        n += cache_trim_oldest(before, excess - n);
    gen_unlock(&cache.lock);
    policy_resident_sub(n);
    spill_unmap(spilled, len);
    return n;
}

/* A cached mapping for a block of need bytes (from the mapping's start),
 * of which the block itself and the header page are `use` bytes (need less
 * the gap an alignment leaves below the block): of those at least need
 * bytes long and at most twice as long (plus the rounding to 4 MiB), the
 * one with the most resident memory the block would reuse (up to `use`),
 * then the smallest, then the one with the least resident memory beyond
 * that (best fit: a small block takes a mapping that had a small one, and
 * leaves the most resident mappings to the blocks that need them; bench
 * aligned, whose 2 MiB aligned blocks of 1 KiB-1 MiB each reuse a 4 MiB
 * mapping, took the most resident one and gave its tail back, then faulted
 * it in again for the next long block); if none is long enough, the one
 * with the most resident memory, if that is at least a quarter of the need
 * (the caller grows it with mremap, which moves page tables, not pages).
 * A request for zeroed memory takes only a mapping whose pages were all
 * given back (they read as zeroes). */
static segment_t *cache_take(size_t need, size_t use, bool zero)
{
    if (cache.count == 0) /* racy peek: only a hint */
        return NULL;
    bool exact = space_limited();
    uint64_t now = now_ticks();
    if (!gen_lock_try(&cache.lock, cache_forget))
        return NULL;
    cache.typical = cache.typical - cache.typical / 8 + need / 8;
    unsigned best = CACHE_SLOTS, grow = CACHE_SLOTS;
    size_t best_reuse = 0, grow_reuse = 0;
    for (unsigned i = 0; i < cache.count; i++) {
        segment_t *seg = cache.seg[i];
        size_t have = seg->reserve_size, w = weight(seg);
        if (have > 2 * need + SEGMENT_SIZE || (zero && seg->resident > OS_PAGE_SIZE))
            continue;
        size_t reuse = w < use ? w : use;
        if (have < need) {
            if (reuse >= need / 4 && reuse > grow_reuse) {
                grow = i;
                grow_reuse = reuse;
            }
        } else if (best == CACHE_SLOTS ||
                   (exact ? have < cache.seg[best]->reserve_size : reuse > best_reuse) ||
                   (reuse == best_reuse &&
                    (have < cache.seg[best]->reserve_size ||
                     (have == cache.seg[best]->reserve_size && w < weight(cache.seg[best]))))) {
            best = i;
            best_reuse = reuse;
        }
    }
    if (best == CACHE_SLOTS ||
        (!exact && grow != CACHE_SLOTS && grow_reuse > best_reuse + need / 4))
        best = grow;
    segment_t *seg = NULL;
    if (best != CACHE_SLOTS) {
        seg = cache.seg[best];
        cache_remove(best);
        /* reuse: the program replaces big blocks; let the cache keep more */
        cache.warm_until = now + policy_decay_ticks;
    }
    gen_unlock(&cache.lock);
    if (seg)
        policy_resident_sub(weight(seg));
    return seg;
}

/* emma_stats(): the cache's mappings and what they may hold resident. */
void huge_cache_stats(size_t *count, size_t *bytes)
{
    *count = __atomic_load_n(&cache.count, __ATOMIC_RELAXED) +
             __atomic_load_n(&spill.count, __ATOMIC_RELAXED);
    *bytes = __atomic_load_n(&cache.resident, __ATOMIC_RELAXED) +
             __atomic_load_n(&spill.weight, __ATOMIC_RELAXED);
}

/* emma_stats(): huge blocks in use and their usable bytes. */
_Atomic size_t huge_stats_blocks, huge_stats_bytes;

static void *huge_counted(segment_t *seg)
{
    atomic_fetch_add_explicit(&huge_stats_blocks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&huge_stats_bytes, huge_usable(seg, seg->pages[0].start),
                              memory_order_relaxed);
    return seg->pages[0].start;
}

/* After teardown (every mapping unmapped), or when the cache's lock was
 * held by a thread that did not survive a fork: forget the cached mappings
 * (in the latter case they stay mapped, unused). */
void cache_forget(void)
{
    policy_resident_sub(cache.resident + spill.weight);
    cache.count = 0;
    cache.resident = 0;
    spill.lo = spill.hi = NULL;
    spill.count = 0;
    spill.weight = 0;
    spare = NULL;
}

/* teardown.c, after unmapping every huge block: their tails are gone. */
void huge_tails_forget(void) { atomic_store_explicit(&stale_bytes, 0, memory_order_relaxed); }
/* Round a mapping up to whole segments, unless address space is scarce
 * (space_limited). */
static size_t reserve_for(size_t map_size)
{
    return space_limited() ? map_size : align_up(map_size, SEGMENT_SIZE);
}

/* Where address space is scarce (space_limited), a cached mapping reused
 * for a shorter block gives back its address space past the block's last
 * page: one munmap.  Kept whole, it held it for as long as the block
 * lived, and a later mapping could fail for want of it (under ulimit -v
 * 256M, 1-2 MiB blocks after 1-7 MiB ones were freed: 176 MiB of them,
 * where glibc got 253). */
static size_t slack_for(size_t map_size) { return map_size <= 2 * LARGE_MAX ? map_size / 8 : 0; }

static void trim_reserve(segment_t *seg, size_t map_size)
{
    if (!os_unmap((uint8_t *)seg + map_size, seg->reserve_size - map_size))
        return;
    seg->reserve_size = map_size;
    if (seg->resident > map_size)
        seg->resident = map_size;
}

/* A private heap's huge block (heap_private.c): a fresh, exact mapping,
 * never from the cache and never merged with its neighbours, since
 * emma_heap_reset and _destroy unmap it. */
void *huge_alloc_private(size_t size, size_t align)
{
    if (size > MAX_REQUEST || align > MAX_REQUEST / 2)
        return NULL;
    size_t offset = huge_offset(align);
    size_t map_size = huge_map_size(offset, size);
    size_t map_align = align > SEGMENT_SIZE ? align : SEGMENT_SIZE;
    size_t header_pos = align > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
    segment_t *seg = os_map_aligned(map_size, map_align, header_pos, NULL);
    if (!seg)
        return NULL;
    seg->resident = 0;
    if (!huge_init(seg, map_size, map_size, offset, map_align)) {
        os_unmap(seg, map_size);
        return NULL;
    }
    return huge_counted(seg);
}

void *huge_alloc(size_t size, size_t align, bool zero, heap_t *self)
{
    if (size > MAX_REQUEST || align > MAX_REQUEST / 2)
        return NULL;
    size_t offset = huge_offset(align);
    size_t map_size = huge_map_size(offset, size);
    if (align <= SEGMENT_SIZE) {
        segment_t *seg = cache_take(map_size, map_size - align_gap(offset & ~(OS_PAGE_SIZE - 1)), zero);
        if (seg) {
            addrmap_clear(seg, seg->map_size);
            if (seg->reserve_size < map_size) {
                size_t reserve = reserve_for(map_size);
                segment_t *moved = os_remap(seg, seg->reserve_size, reserve, SEGMENT_SIZE, 0,
                                            seg->flags & SEG_GATHERED);
                if (!moved) {
                    os_unmap(seg, seg->reserve_size);
                    return huge_alloc(size, align, zero, self); /* the cache has one less */
                }
                seg = moved;
                seg->reserve_size = reserve;
            } else if (seg->reserve_size > map_size + slack_for(map_size) && space_limited()) {
                trim_reserve(seg, map_size);
            }
            size_t had = seg->resident, had_weight = weight(seg);
            size_t had_extent = extent_weight(seg, had);
            uint16_t gathered = seg->flags & SEG_GATHERED;
            if (!huge_init(seg, map_size, seg->reserve_size, offset, SEGMENT_SIZE)) {
                os_unmap(seg, seg->reserve_size);
                return NULL;
            }
            seg->flags |= gathered;
            split_tail(seg, had_weight, had_extent);
            tail_fit(seg, had_weight, had_extent);
            bool plain = !fill_ahead(zero);
            had = gather(seg, had, plain);
            if (had == SIZE_MAX)
                return huge_alloc(size, align, zero, self);
            populate(seg, had, plain);
            if (zero && offset < OS_PAGE_SIZE) /* the header's page kept its bytes */
                mem_zero(seg->pages[0].start, OS_PAGE_SIZE - offset);
            return huge_counted(seg);
        }
    }
    /* The header must be 4 MiB aligned and the block `align` aligned. */
    size_t map_align = align > SEGMENT_SIZE ? align : SEGMENT_SIZE;
    size_t header_pos = align > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
    size_t reserve = align > SEGMENT_SIZE ? map_size : reserve_for(map_size);
    segment_t *seg = align <= SEGMENT_SIZE ? spare_take(reserve) : NULL;
    if (!seg)
        seg = os_map_aligned(reserve, map_align, header_pos, NULL);
    if (!seg && policy_release_for_retry(self)) {
        reserve = map_size;
        seg = os_map_aligned(reserve, map_align, header_pos, NULL);
    }
    if (!seg)
        return NULL;
    /* the header page and the block's first page, when the block does not
     * start in the header's (nearly every block has its start written), in
     * one system call rather than two page faults (bench maps with a page
     * aligned block: perf stat task-clock 81-88 -> 74-84 ms) */
    if (offset == OS_PAGE_SIZE)
        os_populate(seg, 2 * OS_PAGE_SIZE);
    if (!huge_init(seg, map_size, reserve, offset, map_align)) {
        os_unmap(seg, reserve);
        return NULL;
    }
    bool plain = !fill_ahead(zero);
    size_t had = gather(seg, 0, plain);
    if (had == SIZE_MAX)
        return huge_alloc(size, align, zero, self);
    populate(seg, had, plain);
    return huge_counted(seg);
}

/* A block of SHARED_MIN..LARGE_MAX bytes in a mapping of its own, where
 * address space is scarce, or NULL (then the caller uses its size class).
 * Under ulimit -v every byte mapped counts, and the classes above 64 KiB
 * round a block up by a sixth on average (two per doubling), and the page
 * that holds them wastes more (a 4 MiB segment holds three blocks of
 * 1 MiB, two of 384 KiB fill 768 KiB of a 1 MiB page): blocks of 64 KiB-
 * 1 MiB until malloc failed got 175 MiB under a limit of 256 MiB, glibc
 * 253.  A mapping of its own costs its rounding to the OS page and the
 * header, but a system call or two per block where sizes vary (bench/churn
 * 20000 16 65537 1048576 under ulimit -v 256M, perf stat task-clock:
 * 947 ms with a mapping each, 56 ms in the classes, glibc 645, which maps
 * its blocks above 128 KiB too): only once emma maps more than a
 * sixteenth of the limit (HUGE_EXACT_SHARE; the same under ulimit -v 4G
 * stays in the classes, 64 ms), and not past HUGE_EXACT_MAX huge blocks in
 * use (each is a mapping of its own: vm.max_map_count).  Marked
 * SEG_SHRUNK, as a huge block shrunk to such a size is. */
#define HUGE_EXACT_MAX 16384
#define HUGE_EXACT_SHARE 16
void *huge_alloc_exact(size_t size, heap_t *self)
{
    if (!space_scarce(HUGE_EXACT_SHARE) ||
        atomic_load_explicit(&huge_stats_blocks, memory_order_relaxed) >= HUGE_EXACT_MAX)
        return NULL;
    void *p = huge_alloc(size, MIN_ALIGN, false, self);
    if (p)
        segment_of(p)->flags |= SEG_SHRUNK;
    return p;
}

void huge_free(segment_t *seg)
{
    atomic_fetch_sub_explicit(&huge_stats_blocks, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&huge_stats_bytes, huge_usable(seg, seg->pages[0].start),
                              memory_order_relaxed);
    if (unlikely(seg->flags & SEG_PRIVATE)) {
        private_huge_unlink(seg); /* and unmapped: never cached */
        addrmap_clear(seg, seg->reserve_size);
        os_unmap(seg, seg->reserve_size);
        return;
    }
    cache_put(seg);
}

size_t huge_usable(segment_t *seg, const void *p)
{
    return (size_t)((uint8_t *)seg + seg->map_size - (const uint8_t *)p);
}

/* Grow or shrink in place (within the mapping's reserve, no system call;
 * shrinking gives the tail's pages back), or by moving page tables.  NULL
 * when the kernel refuses, with the block untouched. */
void *huge_realloc(segment_t *seg, void *p, size_t new_size, heap_t *self)
{
    size_t offset = (size_t)((uint8_t *)p - (uint8_t *)seg);
    if (new_size > MAX_REQUEST - offset)
        return NULL;
    size_t old_map = seg->map_size;
    size_t new_map = huge_map_size(offset, new_size);
    if (new_map == old_map)
        return p;
    size_t map_align = (size_t)1 << seg->pages[0].reserved;
    /* A tail kept from a longer cached mapping (tail_fit): a growing block
     * uses it; what is left past the new end goes back. */
    tail_uncount(seg);
    if (new_map <= seg->reserve_size) {
        addrmap_clear(seg, old_map);
        size_t end = seg->resident > old_map ? seg->resident : old_map;
        /* whole segments past a shrunk block's end: their address space
         * goes back, and their pages with it (not purged first: bench
         * shrink 10 20480 100 5 purged 20 MiB, then unmapped the same 20) */
        size_t keep = space_limited() ? new_map : align_up(new_map, SEGMENT_SIZE);
        if (new_map < old_map && map_align <= SEGMENT_SIZE && keep < seg->reserve_size &&
            os_unmap((uint8_t *)seg + keep, seg->reserve_size - keep)) {
            seg->reserve_size = keep;
            end = end < keep ? end : keep;
        }
        if (end > new_map) /* what may be resident past the new end */
            os_purge((uint8_t *)seg + new_map, end - new_map);
        seg->resident = new_map;
        seg->map_size = new_map;
        atomic_fetch_add_explicit(&huge_stats_bytes, new_map - old_map, memory_order_relaxed);
        if (new_size <= LARGE_MAX)
            seg->flags |= SEG_SHRUNK; /* a huge block of a small size now */
        addrmap_mark_huge(seg, new_map);
        return p;
    }
    size_t header_pos = map_align > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
    size_t old_reserve = seg->reserve_size;
    size_t new_reserve = map_align > SEGMENT_SIZE ? new_map : reserve_for(new_map);
    heap_t *private = seg->flags & SEG_PRIVATE ? seg->origin : NULL;
    if (private)
        private_huge_unlink(seg); /* linked again at its new address */
    addrmap_clear(seg, old_map);
    bool pieces = seg->flags & SEG_GATHERED;
    segment_t *moved = os_remap(seg, old_reserve, new_reserve, map_align, header_pos, pieces);
    if (!moved && policy_release_for_retry(self)) {
        new_reserve = new_map;
        moved = os_remap(seg, old_reserve, new_reserve, map_align, header_pos, pieces);
    }
    if (!moved) {
        if (seg->resident > old_map) { /* the tail, uncounted above */
            os_purge((uint8_t *)seg + old_map, seg->resident - old_map);
            seg->resident = old_map;
        }
        addrmap_mark_huge(seg, old_map);
        if (private) {
            private_huge_link(private, seg);
            return NULL;
        }
        /* a kernel before 6.17 cannot move a mapping that holds gathered
         * pages (several mappings for it): copy */
        void *q = huge_alloc(new_size, offset < SEGMENT_SIZE ? offset : map_align, false, self);
        if (q) {
            mem_copy(q, p, old_map - offset);
            huge_free(seg);
        }
        return q;
    }
    moved->map_size = new_map;
    atomic_fetch_add_explicit(&huge_stats_bytes, new_map - old_map, memory_order_relaxed);
    moved->reserve_size = new_reserve;
    moved->resident = new_map;
    segment_stamp(moved);
    moved->pages[0].start = (uint8_t *)moved + offset;
    addrmap_mark_huge(moved, new_map);
    if (private)
        private_huge_link(private, moved);
    return moved->pages[0].start;
}

/* heap.c: heap_left_recover */
void huge_locks_left(uint32_t me) { gen_release_left(&cache.lock, me, cache_forget); }

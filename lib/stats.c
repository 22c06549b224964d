/* Statistics: emma_stats() and emma_stats_print().
 *
 * Nothing is counted on the fast paths.  The figures come from three
 * places, read when asked:
 *   - the OS layer's counters (system calls, bytes mapped and their peak,
 *     purges), relaxed atomics next to system calls;
 *   - slow-path counters (huge blocks in use, heaps reclaimed and
 *     abandoned) and the heaps' own fields (free resident bytes, cached
 *     huge mappings), read with relaxed loads;
 *   - a walk over the page descriptors of every segment, found through the
 *     address map between the lowest and highest chunk emma ever used.  A
 *     page's `used` counts its blocks out (fast-path frees by the owner
 *     decrement it; frees by other threads count once the owner collects
 *     them).  Segments unmapped during the walk stay mapped until it ends
 *     (os_walk_begin/end); huge mappings are marked apart in the address
 *     map, so their headers, which any thread may unmap, are never read.
 * Other threads keep allocating meanwhile: each figure is read once, the
 * whole is not one instant's snapshot.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "observe.h"
#include "policy.h"

#define EMMA_API __attribute__((visibility("default")))


static const unsigned kind_page_shift[KIND_XLARGE + 1] = {
    SMALL_PAGE_SHIFT, MEDIUM_PAGE_SHIFT, LARGE_PAGE_SHIFT, XLARGE_PAGE_SHIFT};

/* The pages of one segment. */
static void walk_segment(struct emma_stats *s, const segment_t *seg)
{
    unsigned kind = __atomic_load_n(&seg->kind, __ATOMIC_RELAXED);
    if (kind > KIND_XLARGE)
        return;
    unsigned count = (unsigned)1 << (SEGMENT_SHIFT - kind_page_shift[kind]);
    unsigned used_pages = 0;
    s->segments++;
    bool quarantined = false;
    if (__atomic_load_n(&seg->flags, __ATOMIC_RELAXED) & SEG_PRIVATE) {
        s->private_segments++;
    } else {
        /* a public heap's metadata is never unmapped (but by teardown) */
        heap_t *h = __atomic_load_n(&seg->heap, __ATOMIC_RELAXED);
        quarantined = h && __atomic_load_n(&h->salvage, __ATOMIC_RELAXED) == SALVAGE_ACTIVE;
    }
    for (unsigned i = 0; i < count; i++) {
        const page_t *page = &seg->pages[i];
        if (!__atomic_load_n(&page->in_use, __ATOMIC_RELAXED))
            continue;
        unsigned c = __atomic_load_n(&page->class_idx, __ATOMIC_RELAXED);
        if (c < 1 || c >= CLASS_COUNT)
            continue;
        used_pages++;
        uint32_t used = __atomic_load_n(&page->used, __ATOMIC_RELAXED);
        uint32_t absent = __atomic_load_n(&page->absent, __ATOMIC_RELAXED) +
                          REMOTE_GONE_COUNT(atomic_load_explicit(&page->remote_gone,
                                                                 memory_order_relaxed));
        /* blocks other threads freed, waiting on the page's remote-free
         * list for its owner: free for the program (the count is part of
         * the list's word, so nothing of the list is read) */
        absent += tf_count(atomic_load_explicit(&page->thread_free, memory_order_relaxed));
        uint32_t capacity = __atomic_load_n(&page->capacity, __ATOMIC_RELAXED);
        uint32_t live = used >= absent ? used - absent : 0;
        if (live > capacity)
            live = capacity; /* read while the owner was changing it */
        struct emma_stats_class *k = &s->classes[c - 1];
        if (quarantined)
            s->bytes_quarantined += (size_t)1 << kind_page_shift[kind];
        if (__atomic_load_n(&seg->flags, __ATOMIC_RELAXED) & SEG_PRIVATE)
            s->private_bytes_in_use += (size_t)live * k->block_size;
        k->blocks_in_use += live;
        k->blocks_free += capacity - live;
        k->pages++;
        s->bytes_in_use += (size_t)live * k->block_size;
        s->bytes_free_in_pages += (size_t)(capacity - live) * k->block_size;
    }
    if (used_pages == 0)
        s->segments_cached++;
}

static void walk_segments(struct emma_stats *s)
{
    uintptr_t lo, hi;
    uint64_t mask;
    /* no handler of this thread runs (and forks) inside the walk: os.c */
    os_signals_block(&mask);
    os_walk_begin();
    if (addrmap_range(&lo, &hi))
        for (uintptr_t c = lo; c <= hi; c++)
            if (addrmap_chunk(c) == CHUNK_HEADER)
                walk_segment(s, (const segment_t *)(c << SEGMENT_SHIFT));
    os_walk_end();
    os_signals_restore(&mask);
}

static void walk_heaps(struct emma_stats *s)
{
    for (heap_t *h = heap_list_first(); h; h = h->next_heap) {
        s->heaps++;
#if EMMA_CONFIG_TLS
        /* the caller's own (after a fork its owner word still names the
         * parent's thread), and those whose owner thread exists */
        uint32_t owner = atomic_load_explicit(&h->owner, memory_order_relaxed) & 0x3fffffffu;
        if (h == tls_heap_or_null() ||
            (!atomic_load_explicit(&h->poisoned, memory_order_relaxed) && owner &&
             !os_thread_gone(owner)))
            s->heaps_live++;
#else
        /* in service: not replaced in its slot (heap.c) */
        s->heaps_live += atomic_load_explicit(&h->owner, memory_order_relaxed) != HEAP_ORPHAN;
#endif
    }
}

void stats_collect(struct emma_stats *s)
{
    mem_zero(s, sizeof *s);
    s->version = EMMA_STATS_VERSION;
    s->size = sizeof *s;
    s->class_count = CLASS_COUNT - 1;
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        s->classes[c - 1].block_size = class_size(c);
        s->classes[c - 1].page_size = (size_t)1 << kind_page_shift[class_kind(c)];
    }
    walk_segments(s);
    walk_heaps(s);
    /* blocks waiting in the depot or in a thread's slot are out for their
     * pages, free for the program (depot.c, free.c) */
    size_t waiting[CLASS_COUNT];
    depot_stats(waiting);
    big_cache_stats(waiting);
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        struct emma_stats_class *k = &s->classes[c - 1];
        size_t n = waiting[c] < k->blocks_in_use ? waiting[c] : k->blocks_in_use;
        k->blocks_in_use -= n;
        k->blocks_free += n;
        s->bytes_in_use -= n * k->block_size;
        s->bytes_free_in_pages += n * k->block_size;
    }
    /* policy.c's process-wide count: free pages of every heap, the segment
     * pool and the huge cache */
    s->bytes_free_resident = policy_resident();
    s->free_resident_bound = policy_free_bound;
    s->bytes_held = policy_held_bytes();
    s->bytes_depot_pinned = policy_depot_pinned_bytes();
    huge_cache_stats(&s->huge_cached, &s->huge_cached_bytes);
    private_heap_stats(s);

    s->huge_blocks = atomic_load_explicit(&huge_stats_blocks, memory_order_relaxed);
    s->huge_bytes = atomic_load_explicit(&huge_stats_bytes, memory_order_relaxed);
    s->bytes_in_use += s->huge_bytes;
    s->heaps_reclaimed = atomic_load_explicit(&heap_stats_reclaimed, memory_order_relaxed);
    s->heaps_abandoned = atomic_load_explicit(&heap_stats_abandoned, memory_order_relaxed);
    s->locks_recovered = atomic_load_explicit(&locks_recovered, memory_order_relaxed);
    s->heaps_salvaged = atomic_load_explicit(&salvage_stats_heaps, memory_order_relaxed);

    struct os_counters oc;
    os_counters_read(&oc);
    s->bytes_mapped = oc.bytes_mapped;
    s->peak_bytes_mapped = oc.peak_bytes_mapped < oc.bytes_mapped ? oc.bytes_mapped
                                                                   : oc.peak_bytes_mapped;
    s->purges = oc.purges;
    s->bytes_purged = oc.bytes_purged;
    s->mmap_calls = oc.mmap_calls;
    s->munmap_calls = oc.munmap_calls;
    s->mremap_calls = oc.mremap_calls;
    s->madvise_calls = oc.madvise_calls;
}

/* ------------------------------------------------------------------ */
/* The table */

static void label(struct outbuf *o, const char *text)
{
    out_str(o, "  ");
    out_str(o, text);
}

/* A row's label and first figure: a size for people, or a count. */
static void label_size(struct outbuf *o, const char *text, uint64_t v)
{
    label(o, text);
    out_human(o, v, 12);
}

static void label_count(struct outbuf *o, const char *text, uint64_t n)
{
    label(o, text);
    out_u64_width(o, n, 8);
}

/* The rest of a row: ", name value" pieces, sizes for people where
 * `human`, then the newline. */
struct field {
    const char *name;
    uint64_t v;
    bool human;
};
#define FIELDS(o, ...)                                                                        \
    fields(o, (const struct field[]){__VA_ARGS__},                                             \
           sizeof((const struct field[]){__VA_ARGS__}) / sizeof(struct field))

static void fields(struct outbuf *o, const struct field *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out_str(o, f[i].name);
        if (f[i].human)
            out_human(o, f[i].v, 0);
        else
            out_u64(o, f[i].v);
    }
    out_str(o, "\n");
}

static void count_of(struct outbuf *o, const char *what, uint64_t n, uint64_t bytes)
{
    out_str(o, what);
    out_u64(o, n);
    out_str(o, " (");
    out_human(o, bytes, 0);
    out_str(o, ")\n");
}

int stats_print_fd(int fd, const struct emma_stats *s)
{
    struct outbuf o;
    out_init(&o, fd);
    out_str(&o, "emma " EMMA_VERSION_STRING " statistics (pid ");
    out_u64(&o, (uint64_t)os_getpid());
    out_str(&o, ")\n");
    label_size(&o, "in use        ", s->bytes_in_use);
    count_of(&o, "   huge blocks ", s->huge_blocks, s->huge_bytes);
    label_size(&o, "free in pages ", s->bytes_free_in_pages);
    out_str(&o, "\n");
    label_size(&o, "free resident ", s->bytes_free_resident);
    FIELDS(&o, {"   held for reuse ", s->bytes_held, true},
           {", pinned by the depot ", s->bytes_depot_pinned, true},
           {", bound (all three) ", s->free_resident_bound, true});
    count_of(&o, "   cached huge mappings ", s->huge_cached, s->huge_cached_bytes);
    label_size(&o, "mapped        ", s->bytes_mapped);
    FIELDS(&o, {"   peak ", s->peak_bytes_mapped, true});
    label_size(&o, "purged        ", s->bytes_purged);
    out_str(&o, "   in ");
    out_u64(&o, s->purges);
    out_str(&o, " madvise(MADV_DONTNEED) calls\n");
    label_count(&o, "segments      ", s->segments);
    FIELDS(&o, {"       empty ", s->segments_cached, false});
    label_count(&o, "heaps         ", s->heaps);
    FIELDS(&o, {"       live ", s->heaps_live, false},
           {", reclaimed from dead threads ", s->heaps_reclaimed, false},
           {", abandoned ", s->heaps_abandoned, false},
           {", locks recovered ", s->locks_recovered, false});
    FIELDS(&o, {"       quarantined ", s->bytes_quarantined, true},
           {", salvaged heaps ", s->heaps_salvaged, false});
    label_count(&o, "private heaps ", s->private_heaps);
    FIELDS(&o, {"       in use ", s->private_bytes_in_use, true},
           {", free resident ", s->private_bytes_free_resident, true},
           {", segments ", s->private_segments, false},
           {", huge blocks ", s->private_huge_blocks, false});
    label(&o, "system calls  ");
    FIELDS(&o, {"  mmap ", s->mmap_calls, false}, {", munmap ", s->munmap_calls, false},
           {", mremap ", s->mremap_calls, false}, {", madvise ", s->madvise_calls, false});
    out_str(&o, "  block size   blocks in use   free blocks   pages   page size\n");
    for (size_t i = 0; i < s->class_count; i++) {
        const struct emma_stats_class *k = &s->classes[i];
        if (!k->pages)
            continue;
        out_str(&o, "  ");
        out_u64_width(&o, k->block_size, 10);
        out_u64_width(&o, k->blocks_in_use, 16);
        out_u64_width(&o, k->blocks_free, 14);
        out_u64_width(&o, k->pages, 8);
        out_u64_width(&o, k->page_size >> 10, 11);
        out_str(&o, "K\n");
    }
    out_flush(&o);
    return o.error;
}

/* ------------------------------------------------------------------ */
/* API */

EMMA_API int emma_stats(struct emma_stats *out, size_t size)
{
    if (!out || size < offsetof(struct emma_stats, bytes_in_use)) {
        os_set_errno(EMMA_EINVAL);
        return -1;
    }
    struct emma_stats s;
    stats_collect(&s);
    if (size > sizeof s)
        size = sizeof s;
    s.size = (unsigned)size;
    mem_copy(out, &s, size);
    return 0;
}

EMMA_API int emma_stats_print(int fd)
{
    struct emma_stats s;
    stats_collect(&s);
    int err = stats_print_fd(fd, &s);
    if (err) {
        os_set_errno(err);
        return -1;
    }
    return 0;
}

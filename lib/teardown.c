/* Tearing a whole copy of emma down (emma_teardown, and the destructor in
 * os.c that runs it at dlclose or exit): when no block of this copy is
 * live, unmap everything it ever mapped, so that an object embedding emma
 * can be loaded and unloaded any number of times without a leak.
 *
 * Everything emma maps is one of:
 *   - a segment or huge mapping: each is in the address map (os.c), whose
 *     walk finds them all, wherever they sit (a heap's lists, its cache of
 *     empty segments, a huge cache);
 *   - a heap's metadata: on heap.c's list (thread heaps) or held by its
 *     user (private heaps, which must all be destroyed first);
 *   - the fork-detection page (fork.c) and the address map itself (os.c).
 * A block is live when a page in use has more blocks out than purged
 * (`absent`, and remote_gone's count: reclaim.c), and freed by other
 * threads but not yet collected (thread_free), or a huge mapping is in use.
 *
 * The caller is the only thread in this copy (see emma_teardown(3)).
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"
#include "observe.h"
#include "policy.h"

static bool segment_idle(segment_t *seg, void *arg)
{
    (void)arg;
    if (seg->kind == KIND_HUGE)
        return !seg->pages[0].in_use; /* in use unless in a huge cache */
    for (unsigned i = 0; i < seg->page_count; i++) {
        page_t *page = &seg->pages[i];
        if (!page->in_use)
            continue;
        uint32_t remote = 0;
        block_t *b = tf_head(atomic_load_explicit(&page->thread_free, memory_order_acquire));
        for (; b && b != PAGE_END(page); b = link_get(b))
            if (++remote > page->reserved) /* a block freed twice: keep it all */
                return false;
        uint32_t gone = REMOTE_GONE_COUNT(atomic_load(&page->remote_gone));
        if (page->used != page->absent + gone + remote)
            return false;
    }
    return true;
}

static bool segment_drop(segment_t *seg, void *arg)
{
    (void)arg;
    size_t size = seg->kind == KIND_HUGE ? seg->reserve_size : seg->map_size;
    addrmap_clear(seg, size);
    os_unmap(seg, size);
    return true;
}

int copy_teardown(void)
{
    if (private_heap_count() != 0)
        return -1;
    /* Blocks waiting in the depot were freed: home first, as the remote
     * frees that segment_idle counts (they count in their pages' `used`
     * while there, so one left in the depot made the teardown refuse and
     * the copy's mappings stay: tests/test_unload t_unload_cycles, "maps
     * 44 -> 55, address space 37 -> 111 MiB", once in a few CI runs). */
    depot_release(UINT64_MAX);
    big_cache_drain(); /* the same for the threads' big-block slots */
    if (!addrmap_walk(segment_idle, NULL))
        return -1;
    addrmap_walk(segment_drop, NULL);
    policy_teardown(); /* the pool and the huge cache held some of them */
    heap_teardown();
    fork_teardown();
    addrmap_teardown();
    return 0;
}

/* At exit and dlclose (os.c's destructor): EMMA_SHOW_STATS's statistics
 * first, while they still describe the program's memory (no atexit: the
 * copy of stderr options.c made at start-up, none if stderr was closed
 * then, so the statistics never land in a file the program opened as fd 2
 * later), then the teardown. */
void copy_finish(void)
{
    if (emma_opt.show_stats && emma_opt.stats_fd > 0) {
        struct emma_stats s;
        stats_collect(&s);
        stats_print_fd(emma_opt.stats_fd, &s);
        os_close(emma_opt.stats_fd); /* dlclose: no descriptor left behind */
        emma_opt.stats_fd = 0;
    }
    (void)copy_teardown();
}

#define EMMA_API __attribute__((visibility("default")))
#include "emma.h"

EMMA_API int emma_teardown(void)
{
    if (copy_teardown() == 0)
        return 0;
    os_set_errno(EMMA_EBUSY);
    return -1;
}

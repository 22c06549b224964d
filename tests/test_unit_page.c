/* White-box tests of the page queues (page.c, alloc.c): sparse pages are
 * parked out of allocation's way, so that fuller pages are refilled first
 * and a sparse page can drain and be released; the fullest parked page is
 * the one taken back when nothing else has room.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.  The
 * heap is driven directly (alloc_generic, heap_free_local), so the tests
 * behave the same with and without TLS.
 */
#include "unitheap.h"

#include "policy.h"

#define SIZE 256
#define PAGES 4

/* A fresh heap with PAGES full pages of SIZE blocks: v[k][i] is block i of
 * page k (n[k] blocks), marked with byte 0x40 + k. */
typedef struct {
    heap_t *h;
    page_t *page[PAGES];
    void **v[PAGES];
    size_t n[PAGES];
} scene_t;

static scene_t fill_pages(void)
{
    scene_t sc;
    sc.h = heap_new();
    TU_ASSERT(sc.h != NULL);
    for (int k = 0; k < PAGES; k++) {
        void *first = take(sc.h, SIZE);
        sc.page[k] = page_holding(first);
        sc.n[k] = sc.page[k]->reserved;
        sc.v[k] = calloc(sc.n[k], sizeof(void *));
        TU_ASSERT(sc.v[k] != NULL);
        for (size_t i = 0; i < sc.n[k]; i++) {
            sc.v[k][i] = i ? take(sc.h, SIZE) : first;
            TU_ASSERT_MSG(page_holding(sc.v[k][i]) == sc.page[k], "page %d not filled in order", k);
            memset(sc.v[k][i], 0x40 + k, SIZE);
        }
    }
    return sc;
}

/* Free the blocks of page k whose index is (keep: is not) a multiple of
 * step; returns how many were freed. */
static size_t free_blocks(scene_t *sc, int k, size_t step, bool keep)
{
    size_t freed = 0;
    for (size_t i = 0; i < sc->n[k]; i++) {
        if (!sc->v[k][i] || (i % step == 0) == keep)
            continue;
        give(sc->h, sc->v[k][i]);
        sc->v[k][i] = NULL;
        freed++;
    }
    return freed;
}

/* The survivors still hold what was written into them. */
static void check_survivors(const scene_t *sc)
{
    for (int k = 0; k < PAGES; k++)
        for (size_t i = 0; i < sc->n[k]; i++)
            if (sc->v[k][i])
                TU_ASSERT_MSG(((unsigned char *)sc->v[k][i])[SIZE - 1] == 0x40 + k,
                              "survivor of page %d overwritten", k);
}

/* Pages 0 and 1 keep a tenth of their blocks and are freed into first, so
 * they come first in the class queue; page 2 keeps nine tenths.
 * Allocation refills page 2, not the sparse pages ahead of it, and a
 * sparse page whose last survivor goes is released. */
START_TEST(t_sparse_pages_drain)
{
    scene_t sc = fill_pages();
    free_blocks(&sc, 0, 10, true);
    free_blocks(&sc, 1, 10, true);
    size_t room = free_blocks(&sc, 2, 10, false);
    TU_ASSERT(room > 0);
    for (size_t i = 0; i < room; i++)
        TU_ASSERT_MSG(page_holding(take(sc.h, SIZE)) == sc.page[2],
                      "allocation %zu went to a sparse page while a fuller one had room", i);
    TU_ASSERT(sc.page[0]->parked && sc.page[1]->parked);
    check_survivors(&sc);
    /* the sparse pages' survivors die: both pages go back to the segment */
    free_blocks(&sc, 0, 1, false);
    free_blocks(&sc, 1, 1, false);
    TU_ASSERT_MSG(!sc.page[0]->in_use && !sc.page[1]->in_use, "drained sparse page kept");
    check_survivors(&sc);
}
END_TEST

/* With nothing but sparse pages left, allocation takes the fullest parked
 * page back and fills it, then the next fullest, before any fresh page. */
START_TEST(t_fullest_parked_page_first)
{
    scene_t sc = fill_pages();
    free_blocks(&sc, 0, 10, true); /* a tenth live */
    free_blocks(&sc, 1, 5, true);  /* a fifth live: the fullest */
    free_blocks(&sc, 2, 8, true);  /* an eighth live */
    size_t room = sc.page[1]->reserved - sc.page[1]->used;
    for (size_t i = 0; i < room; i++)
        TU_ASSERT_MSG(page_holding(take(sc.h, SIZE)) == sc.page[1],
                      "allocation %zu did not come from the fullest page", i);
    TU_ASSERT(sc.page[0]->parked && sc.page[2]->parked);
    TU_ASSERT_MSG(page_holding(take(sc.h, SIZE)) == sc.page[2], "second choice not the next fullest");
    check_survivors(&sc);
}
END_TEST

/* Survivors freed by other threads (the remote list) drain a parked page
 * just the same: collecting them releases it. */
START_TEST(t_parked_page_drained_remotely)
{
    scene_t sc = fill_pages();
    free_blocks(&sc, 0, 10, true);
    free_blocks(&sc, 1, 10, false); /* nine tenths live: page 1 takes the next blocks */
    TU_ASSERT(page_holding(take(sc.h, SIZE)) == sc.page[1]);
    TU_ASSERT(sc.page[0]->parked);
    for (size_t i = 0; i < sc.n[0]; i++) {
        if (!sc.v[0][i])
            continue;
        remote_push(segment_of(sc.v[0][i]), sc.page[0], (block_t *)sc.v[0][i], "free");
        sc.v[0][i] = NULL;
    }
    TU_ASSERT(sc.page[0]->in_use);
    heap_collect_remote(sc.h);
    TU_ASSERT_MSG(!sc.page[0]->in_use, "parked page emptied by remote frees kept");
    TU_ASSERT(sc.h->parked[class_of_size(SIZE)].first != sc.page[0]);
    check_survivors(&sc);
}
END_TEST

/* Remote frees are counted in their list's word and the list's last block
 * is noted (free.c's remote_push), so the owner's collect takes them
 * without walking them: a second list goes in front of the blocks the
 * first collect left on local_free, each block once, the count exact.
 * Until the owner collects it, a pushed block is found on its page's list
 * (remote_listed_now, the double-free check), and not after. */
START_TEST(t_remote_lists_collected)
{
    scene_t sc = fill_pages();
    page_t *page = sc.page[1];
    size_t n = sc.n[1], pushed = 0;
    for (int round = 0; round < 2; round++) {
        size_t before = pushed;
        for (size_t i = 1 + (size_t)round; i < n; i += 2) {
            segment_t *seg = segment_of(sc.v[1][i]);
            remote_push(seg, page, (block_t *)sc.v[1][i], "free");
            TU_ASSERT(remote_listed_now(seg, page, (block_t *)sc.v[1][i]));
            pushed++;
        }
        uintptr_t w = atomic_load(&page->thread_free);
        TU_ASSERT_MSG(tf_count(w) == pushed - before, "round %d: count %u, want %zu", round,
                      tf_count(w), pushed - before);
        heap_collect_remote(sc.h);
        TU_ASSERT(atomic_load(&page->thread_free) == 0);
        TU_ASSERT_MSG(page->used == n - pushed, "used %u, want %zu", page->used, n - pushed);
        for (size_t i = 1 + (size_t)round; i < n; i += 2)
            TU_ASSERT(!remote_listed_now(segment_of(sc.v[1][i]), page, (block_t *)sc.v[1][i]));
    }
    TU_ASSERT(pushed == n - 1);
    /* local_free: every block but v[1][0], once each, then PAGE_END */
    char *seen = calloc(n, 1);
    TU_ASSERT(seen != NULL);
    size_t count = 0;
    for (block_t *b = page->local_free; b != PAGE_END(page); b = link_get(b)) {
        size_t i = (size_t)((uint8_t *)b - page->start) / page->block_size;
        TU_ASSERT_MSG(i > 0 && i < n && (uint8_t *)b == page->start + i * page->block_size &&
                          !seen[i],
                      "block %zu on local_free twice or foreign", i);
        seen[i] = 1;
        count++;
    }
    TU_ASSERT_MSG(count == n - 1, "local_free holds %zu of %zu blocks", count, n - 1);
    free(seen);
    for (size_t i = 1; i < n; i++)
        sc.v[1][i] = NULL;
    check_survivors(&sc);
}
END_TEST

/* A class's only page, emptied after carving more than a held page keeps
 * for good (8 blocks of 16 KiB: 128 KiB, past HOLD_MAX), is retired with
 * a delay (page.c: page_retire): it stays with the heap, so the next batch
 * takes its blocks straight back; the heap's sparse passes give it back to
 * its segment only once one finds it empty after an earlier one saw it
 * held, and never while its blocks are in use.  Before, it went back to
 * its segment at once, and every batch took a page again. */
#define RETIRE_SIZE 16384
#define RETIRE_BATCH 8
START_TEST(t_emptied_page_retired_with_delay)
{
    size_t held = policy_held_bytes();
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    unsigned c = class_of_size(RETIRE_SIZE);
    void *v[RETIRE_BATCH];
    page_t *page = NULL;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < RETIRE_BATCH; i++) {
            v[i] = take(h, RETIRE_SIZE);
            if (!page)
                page = page_holding(v[0]);
            TU_ASSERT_MSG(page_holding(v[i]) == page, "round %d: block %d from another page",
                          round, i);
            memset(v[i], 0x5a, RETIRE_SIZE);
        }
        TU_ASSERT((size_t)page->capacity * RETIRE_SIZE > ((size_t)64 << 10));
        if (round == 1) {
            sparse_pass(h); /* in use: kept */
            TU_ASSERT(page->in_use && h->bins[c].first == page);
        }
        for (int i = 0; i < RETIRE_BATCH; i++)
            give(h, v[i]);
        TU_ASSERT_MSG(page->in_use && h->bins[c].first == page && page->slow_at == SLOW_AT_HELD,
                      "round %d: the emptied page went back to its segment at once", round);
        if (round == 0) {
            sparse_pass(h); /* the first pass to see it: kept */
            TU_ASSERT_MSG(page->in_use && h->bins[c].first == page,
                          "retired page given back without a delay");
        }
    }
    sparse_pass(h); /* empty, seen held by an earlier pass */
    TU_ASSERT_MSG(!page->in_use && h->bins[c].first == NULL, "retired page kept for good");
    TU_ASSERT_MSG(policy_held_bytes() == held, "held bytes %zu -> %zu", held, policy_held_bytes());
    /* the class works on: a page again */
    void *p = take(h, RETIRE_SIZE);
    memset(p, 0x5a, RETIRE_SIZE);
    give(h, p);
}
END_TEST

/* A page's descriptor lies in its segment's header, and a segment cut
 * before for bigger pages (a smaller header) had blocks there: page_init
 * must forget every byte the program wrote over it.  A stale held_bytes
 * (0x01010101, a memset's) was taken off the held-pages total at the
 * page's first carving: emma_stats' bytes_held read 16777215.9 TiB. */
START_TEST(t_page_init_forgets_stale_descriptor)
{
    heap_t *h = heap_new();
    TU_ASSERT(h != NULL);
    void *b = take(h, SIZE);
    page_t *page = page_holding(b);
    size_t held = policy_held_bytes();
    memset(&page->held_bytes, 1, sizeof page->held_bytes);
    page_init(page, page->class_idx); /* as page_fresh does on a page just cut */
    TU_ASSERT_MSG(page->held_bytes == 0, "page_init kept held_bytes %#x", (unsigned)page->held_bytes);
    page_extend(page);
    TU_ASSERT_MSG(policy_held_bytes() >= held && policy_held_bytes() - held <= (size_t)64 << 10,
                  "held total %zu -> %zu after carving the page", held, policy_held_bytes());
}
END_TEST

TU_MAIN("unit_page", "page", 60, t_sparse_pages_drain, t_fullest_parked_page_first, t_parked_page_drained_remotely,
        t_remote_lists_collected, t_emptied_page_retired_with_delay, t_page_init_forgets_stale_descriptor)

/* Boundary checks (--enable-boundary-checks) and fatal errors.  Messages are
 * one line on stderr (os_write_stderr, a raw write(2)), then SIGABRT
 * (os_abort): no stdio, no allocation, safe whatever state the heap is in.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "internal.h"

static size_t put(char *buf, size_t at, size_t cap, const char *s)
{
    for (; *s && at < cap; s++)
        buf[at++] = *s;
    return at;
}

static size_t put_hex(char *buf, size_t at, size_t cap, uintptr_t v)
{
    char tmp[18];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    at = put(buf, at, cap, "0x");
    while (n > 0 && at < cap)
        buf[at++] = tmp[--n];
    return at;
}

void check_bad_header(const void *p, const char *func)
{
    emma_fatal(func,
               addrmap_lookup(p) == CHUNK_INTERIOR ? "interior or misaligned pointer"
                                                    : "pointer was not allocated by emma",
               p);
}

void emma_fatal(const char *func, const char *problem, const void *p)
{
    char line[256];
    size_t n = put(line, 0, sizeof line - 1, "emma: ");
    n = put(line, n, sizeof line - 1, func);
    n = put(line, n, sizeof line - 1, ": ");
    n = put(line, n, sizeof line - 1, problem);
    n = put(line, n, sizeof line - 1, " (");
    n = put_hex(line, n, sizeof line - 2, (uintptr_t)p);
    n = put(line, n, sizeof line - 1, ")");
    line[n++] = '\n';
    os_write_stderr(line, n);
    os_abort();
}

/* What the checks read of a block's segment header: copied with
 * os_read_safe, since another thread may unmap the segment at any moment
 * (a free of the same block racing this check): the check then reports
 * the pointer as not emma's, never faults. */
typedef struct header_copy {
    segment_t seg; /* without pages[] */
    page_t page;   /* the block's page */
    uint64_t free_word, free_bit; /* its bit in the free-block bitmap */
} header_copy;

static bool copy_header(const void *p, header_copy *c)
{
    segment_t *seg = segment_of(p);
    if (!os_read_safe(&c->seg, seg, sizeof c->seg))
        return false;
    if (c->seg.cookie != ((uintptr_t)seg ^ os_secret()))
        return false;
    size_t idx = c->seg.kind == KIND_HUGE ? 0 : ((uintptr_t)p - (uintptr_t)seg) >> c->seg.page_shift;
    if (c->seg.kind >= KIND_COUNT || idx >= c->seg.page_count ||
        !os_read_safe(&c->page, &seg->pages[idx], sizeof c->page))
        return false;
    c->free_word = 0;
    c->free_bit = 0;
    if (c->seg.kind == KIND_HUGE)
        return true;
    size_t bit = (size_t)((uintptr_t)p - (uintptr_t)seg) / MIN_ALIGN;
    const uint64_t *map = (const uint64_t *)((const uint8_t *)seg + SEGMENT_HEADER_SIZE(c->seg.page_count) -
                                             CHECK_BITMAP_BYTES);
    c->free_bit = (uint64_t)1 << (bit % 64);
    return os_read_safe(&c->free_word, map + bit / 64, sizeof c->free_word);
}

/* Validate a pointer about to be freed, resized or measured; c receives
 * the header it was checked against. */
static void checked_header(const void *p, const char *func, header_copy *c)
{
    segment_t *seg;
    unsigned chunk = addrmap_check(p, &seg);
    if (chunk == CHUNK_NONE || !seg)
        emma_fatal(func, "pointer was not allocated by emma", p);
    if (chunk == CHUNK_INTERIOR || ((uintptr_t)p & (MIN_ALIGN - 1)))
        emma_fatal(func, "interior or misaligned pointer", p);
    if (!copy_header(p, c))
        emma_fatal(func, "pointer was not allocated by emma", p);
    const page_t *page = &c->page;
    if (c->seg.kind == KIND_HUGE) {
        if ((uint8_t *)p != page->start)
            emma_fatal(func, "interior or misaligned pointer", p);
        if (!page->in_use)
            emma_fatal(func, "double free", p); /* sits in the huge cache */
        return;
    }
    if (!page->in_use)
        emma_fatal(func, "double free", p);
    uint8_t *b = (uint8_t *)p;
    if (b < page->start || (size_t)(b - page->start) % page->block_size != 0)
        emma_fatal(func, "interior or misaligned pointer", p);
    if ((size_t)(b - page->start) / page->block_size >= page->capacity)
        emma_fatal(func, "pointer was not allocated by emma", p);
    if (c->free_word & c->free_bit)
        emma_fatal(func, "double free", p);
}

static size_t copy_usable(const header_copy *c, const void *p)
{
    if (c->seg.kind == KIND_HUGE)
        return (size_t)((uintptr_t)segment_of(p) + c->seg.map_size - (uintptr_t)p);
    return c->page.block_size;
}

void check_pointer(const void *p, const char *func)
{
    header_copy c;
    checked_header(p, func, &c);
}

size_t check_usable(const void *p, const char *func)
{
    header_copy c;
    checked_header(p, func, &c);
    return copy_usable(&c, p);
}

/* The block is free from now on (after check_pointer): a second free that
 * raced past the check with this one is caught here. */
void check_mark_free(const void *p, const char *func)
{
    if (segment_of(p)->kind == KIND_HUGE)
        return;
    uint64_t bit;
    _Atomic uint64_t *w = check_bitmap_word(p, &bit);
    if (atomic_fetch_or_explicit(w, bit, memory_order_relaxed) & bit)
        emma_fatal(func, "double free", p);
}

/* emma_dealloc / emma_realloc: the caller's layout must be the block's. */
void check_layout(const void *p, size_t size, size_t align, const char *func)
{
    if (align == 0 || (align & (align - 1)))
        emma_fatal(func, "alignment is not a power of two", p);
    header_copy c;
    checked_header(p, func, &c);
    if ((uintptr_t)p & (align - 1))
        emma_fatal(func, "alignment does not match the allocation", p);
    if (c.seg.kind == KIND_HUGE) {
        if (size > copy_usable(&c, p) ||
            (size <= LARGE_MAX && align <= LARGE_MAX && !(c.seg.flags & SEG_SHRUNK)))
            emma_fatal(func, "size does not match the allocation", p);
        return;
    }
    if (size > c.page.block_size || size > LARGE_MAX)
        emma_fatal(func, "size does not match the allocation", p);
    unsigned want = class_for(size, align);
    if (want == c.page.class_idx || class_for_coarse(size, align) == c.page.class_idx)
        return; /* (a block from before classes_go_fine has the coarse class) */
    /* Would the size fit this block under some other alignment? */
    for (size_t a = MIN_ALIGN; a <= LARGE_MAX; a <<= 1)
        if (class_for(size, a) == c.page.class_idx)
            emma_fatal(func, "alignment does not match the allocation", p);
    emma_fatal(func, "size does not match the allocation", p);
}

/* emma_realloc / realloc would move a private heap's block into the
 * calling thread's heap (emma_heap_new(3)): emma_heap_realloc only. */
void check_not_private(const void *p, const char *func)
{
    if (block_is_private(p))
        emma_fatal(func, "block of a private heap", p);
}

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

static bool block_tagged_free(const void *p)
{
    return ((const uintptr_t *)p)[1] == (FREED_TAG ^ (uintptr_t)p);
}

/* Validate a pointer about to be freed, resized or measured. */
static page_t *checked_page(const void *p, const char *func)
{
    unsigned chunk = addrmap_lookup(p);
    if (chunk == CHUNK_NONE || !addrmap_segment(p))
        emma_fatal(func, "pointer was not allocated by emma", p);
    if (chunk == CHUNK_INTERIOR || ((uintptr_t)p & (MIN_ALIGN - 1)))
        emma_fatal(func, "interior or misaligned pointer", p);
    segment_t *seg = segment_of(p);
    if (seg->cookie != ((uintptr_t)seg ^ os_secret()))
        emma_fatal(func, "pointer was not allocated by emma", p);
    page_t *page = page_of(seg, p);
    if (seg->kind == KIND_HUGE) {
        if ((uint8_t *)p != page->start)
            emma_fatal(func, "interior or misaligned pointer", p);
        if (!page->in_use)
            emma_fatal(func, "double free", p); /* sits in the huge cache */
        return page;
    }
    if (!page->in_use)
        emma_fatal(func, "double free", p);
    uint8_t *b = (uint8_t *)p;
    if (b < page->start || (size_t)(b - page->start) % page->block_size != 0)
        emma_fatal(func, "interior or misaligned pointer", p);
    if ((size_t)(b - page->start) / page->block_size >= page->capacity)
        emma_fatal(func, "pointer was not allocated by emma", p);
    if (block_tagged_free(p))
        emma_fatal(func, "double free", p);
    return page;
}

void check_pointer(const void *p, const char *func) { (void)checked_page(p, func); }

void check_mark_free(const void *p)
{
    segment_t *seg = segment_of(p);
    if (seg->kind != KIND_HUGE)
        check_tag_free((void *)p);
}

/* emma_dealloc / emma_realloc: the caller's layout must be the block's. */
void check_layout(const void *p, size_t size, size_t align, const char *func)
{
    if (align == 0 || (align & (align - 1)))
        emma_fatal(func, "alignment is not a power of two", p);
    page_t *page = checked_page(p, func);
    if ((uintptr_t)p & (align - 1))
        emma_fatal(func, "alignment does not match the allocation", p);
    segment_t *seg = segment_of(p);
    if (seg->kind == KIND_HUGE) {
        if (size > huge_usable(seg, p) || (size <= LARGE_MAX && align <= LARGE_MAX))
            emma_fatal(func, "size does not match the allocation", p);
        return;
    }
    if (size > page->block_size || size > LARGE_MAX)
        emma_fatal(func, "size does not match the allocation", p);
    unsigned want = class_for(size, align);
    if (want == page->class_idx)
        return;
    /* Would the size fit this block under some other alignment? */
    for (size_t a = MIN_ALIGN; a <= LARGE_MAX; a <<= 1)
        if (class_for(size, a) == page->class_idx)
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

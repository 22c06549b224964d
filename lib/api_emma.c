/* The emma_* API: size and alignment on every call.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
/* emma.h tells callers that emma_owns() does not read *ptr; here, where
 * ptr goes on to the address map, GCC would take that to mean that *ptr
 * is uninitialised (-Wmaybe-uninitialized). */
#define EMMA_NO_ACCESS_ATTR
#include "alloc.h"
#include "observe.h"
#include "policy.h"

#define EMMA_API __attribute__((visibility("default")))
#include "emma.h"

/* ------------------------------------------------------------------ */
/* Valgrind memcheck.  Under Valgrind, malloc and friends are Valgrind's
 * (it replaces them in every object, libemma included), so only the emma_*
 * entry points reach emma; these tell memcheck about their blocks with its
 * client requests: a block handed out is MALLOCLIKE (undefined, or defined
 * if zeroed), a block released is FREELIKE (no access) before emma links it
 * into a free list.  emma's own reads and writes of free blocks happen with
 * error reporting off.  Natively each entry point pays one load and an
 * untaken branch (vg_running); builds without valgrind/memcheck.h have no
 * such code at all. */

#if EMMA_CONFIG_VALGRIND
#define VG_ON unlikely(vg_running)

/* In libemma.la only (api_glibc.c): free() of the process, which under
 * Valgrind is Valgrind's. */
extern void vg_foreign_free(void *ptr) __attribute__((weak, visibility("hidden")));

static inline void vg_quiet(void) { VALGRIND_DISABLE_ERROR_REPORTING; }
static inline void vg_loud(void) { VALGRIND_ENABLE_ERROR_REPORTING; }

/* Each block handed out under Valgrind (emma_* and private heaps' alike)
 * carries a red zone under memcheck: VG_REDZONE more bytes are allocated,
 * and the last VG_REDZONE bytes of the block's usable room are made
 * inaccessible, so that a write running off the end of a block is
 * reported before it reaches the next block, live or free.  The room
 * between the requested size and the red zone stays usable (what
 * emma_usable_size reports, VG_REDZONE less than natively). */
#define VG_REDZONE 16

/* The first block of a page that holds several (not a huge block, which
 * has a mapping of its own). */
static bool first_of_page(const void *p)
{
    segment_t *seg = segment_of(p);
    return seg->kind != KIND_HUGE && page_of(seg, p)->start == p;
}

/* The word of a huge block's header that points at the block (its page
 * descriptor's start): while the block is live, memcheck must not take it
 * for a pointer that keeps the block reachable (or a leaked huge block
 * would be "still reachable"), so it is inaccessible from vg_alloc_from
 * until vg_release, to which emma's own reads of it, all with error
 * reporting off, are no errors (and read its value). */
static void vg_huge_hide(const void *p, bool hide)
{
    segment_t *seg = segment_of(p);
    if (seg->kind != KIND_HUGE)
        return;
    if (hide)
        VALGRIND_MAKE_MEM_NOACCESS(&seg->pages[0].start, sizeof seg->pages[0].start);
    else
        VALGRIND_MAKE_MEM_DEFINED(&seg->pages[0].start, sizeof seg->pages[0].start);
}

static void *emma_take(heap_t *h, size_t size, size_t align, bool zero)
{
    (void)h;
    return zero ? alloc_zeroed(size, align) : alloc_block(size, align);
}

/* A block of `size` bytes from take(h, ...), told to memcheck (observe.h). */
EMMA_NOINLINE EMMA_COLD void *vg_alloc_from(vg_take_fn *take, heap_t *h, size_t size, size_t align,
                                            bool zero)
{
    size_t n = size <= SIZE_MAX - VG_REDZONE ? size + VG_REDZONE : size;
    vg_quiet();
    char *p = take(h, n, align, zero);
    /* The first block of a page: the page descriptor points at it, so
     * memcheck would call it "still reachable" when it leaks.  Keep it out
     * of the program's hands (one block per page, under memcheck only) and
     * take the next: the second of its page, or, when the page had room
     * for one block only (a segment's first page also holds the segment's
     * header: one 512 KiB block), the first of the next page, kept too,
     * and then its second (every class has two blocks in a page without
     * a header). */
    for (int more = 2; p && first_of_page(p) && more > 0; more--) {
        char *q = take(h, n, align, zero);
        if (!q)
            break;
        /* out of the leak checker's sight: its first word still links
         * to the block that follows it */
        VALGRIND_MAKE_MEM_NOACCESS(p, usable_size(p));
        p = q;
    }
    size_t room = p ? usable_size(p) : 0;
    vg_loud();
    if (p) {
        VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, zero);
        size_t rz = room - VG_REDZONE; /* room >= n = size + VG_REDZONE */
        if (zero)
            VALGRIND_MAKE_MEM_DEFINED(p + size, rz - size);
        else
            VALGRIND_MAKE_MEM_UNDEFINED(p + size, rz - size);
        VALGRIND_MAKE_MEM_NOACCESS(p + rz, VG_REDZONE);
        vg_huge_hide(p, true);
    }
    return p;
}

static inline void *vg_alloc(size_t size, size_t align, bool zero)
{
    return vg_alloc_from(emma_take, NULL, size, align, zero);
}

/* emma_usable_size under memcheck: without the block's red zone. */
static EMMA_NOINLINE EMMA_COLD size_t vg_usable(const void *p)
{
    vg_quiet();
    size_t room = usable_size(p);
    vg_loud();
    return room < VG_REDZONE ? room : room - VG_REDZONE;
}

/* A block released under Valgrind (observe.h): memcheck reports a double
 * free, and Valgrind's own blocks go back to Valgrind. */
EMMA_NOINLINE EMMA_COLD void vg_release(void *p, const char *func)
{
    if (!addrmap_segment(p)) {
        if (vg_foreign_free)
            vg_foreign_free(p);
        return;
    }
    vg_quiet();
    bool live = VALGRIND_CHECK_MEM_IS_ADDRESSABLE(p, 1) == 0;
    vg_loud();
    VALGRIND_FREELIKE_BLOCK(p, 0); /* reports a double free */
    if (!live)
        return;
    vg_huge_hide(p, false);
    vg_quiet();
    size_t room = usable_size(p);
    free_block(p, func);
    vg_loud();
    VALGRIND_MAKE_MEM_NOACCESS(p, room); /* the room past the block too */
}

/* Moved (never resized in place) so that memcheck follows the definedness
 * of the copied bytes into the new block. */
static EMMA_NOINLINE EMMA_COLD void *vg_realloc(void *p, size_t old_size, size_t align,
                                                size_t new_size)
{
    void *q = vg_alloc(new_size, align, false);
    if (!q)
        return NULL;
    size_t n = old_size < new_size ? old_size : new_size;
    mem_copy(q, p, n);
    vg_release(p, "emma_realloc");
    return q;
}
#else
#define VG_ON 0
static inline void *vg_alloc(size_t size, size_t align, bool zero)
{
    (void)size, (void)align, (void)zero;
    return NULL;
}
static inline void *vg_realloc(void *p, size_t o, size_t a, size_t n)
{
    (void)p, (void)o, (void)a, (void)n;
    return NULL;
}
static inline size_t vg_usable(const void *p)
{
    (void)p;
    return 0;
}
#endif

/* emma_alloc and emma_alloc_zeroed; `func` names the caller in messages. */
static inline __attribute__((always_inline)) void *api_alloc(size_t size, size_t align, bool zero,
                                                             const char *func)
{
    if (unlikely(!align_ok(align, NULL, func)))
        return NULL;
    if (VG_ON)
        return vg_alloc(size, align, zero);
    return zero ? alloc_zeroed(size, align) : alloc_block(size, align);
}

EMMA_API void *emma_alloc(size_t size, size_t align)
{
    return api_alloc(size, align, false, "emma_alloc");
}

EMMA_API void *emma_alloc_zeroed(size_t size, size_t align)
{
    return api_alloc(size, align, true, "emma_alloc_zeroed");
}

EMMA_API void emma_dealloc(void *ptr, size_t size, size_t align)
{
    if (VG_ON && ptr) {
        vg_release(ptr, "emma_dealloc");
        return;
    }
    free_layout(ptr, size, align, "emma_dealloc");
}

EMMA_API void *emma_realloc(void *ptr, size_t old_size, size_t align, size_t new_size)
{
    if (unlikely(!align_ok(align, ptr, "emma_realloc")))
        return NULL;
    if (!ptr)
        return VG_ON ? vg_alloc(new_size, align, false) : alloc_block(new_size, align);
    if (VG_ON)
        return vg_realloc(ptr, old_size, align, new_size);
    if (config_checks) {
        check_layout(ptr, old_size, align, "emma_realloc");
        check_not_private(ptr, "emma_realloc");
    }
    return realloc_block(NULL, ptr, new_size, align, "emma_realloc");
}

EMMA_API size_t emma_usable_size(const void *ptr)
{
    if (!ptr)
        return 0;
    if (VG_ON)
        return vg_usable(ptr);
    if (config_checks)
        return check_usable(ptr, "emma_usable_size");
    return usable_size(ptr);
}

EMMA_API void emma_free(void *ptr)
{
    if (!ptr)
        return;
    if (VG_ON) {
        vg_release(ptr, "emma_free");
        return;
    }
    free_block(ptr, "emma_free");
}

EMMA_API int emma_owns(const void *ptr) { return addrmap_segment(ptr) != NULL; }

EMMA_API void emma_trim(void) { policy_trim(); }

EMMA_API const char *emma_version(void) { return EMMA_VERSION_STRING; }

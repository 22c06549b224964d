/* The malloc-compatible API, with glibc's documented semantics.  Kept in
 * its own object so a program that embeds libemma.a for the emma_* API
 * alone does not replace its malloc.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "observe.h"
#include "policy.h"

#define EMMA_API __attribute__((visibility("default")))

/* Our own prototypes: <stdlib.h> belongs to libc. */
EMMA_API void *malloc(size_t size);
EMMA_API void free(void *ptr);
EMMA_API void *calloc(size_t n, size_t size);
EMMA_API void *realloc(void *ptr, size_t size);
EMMA_API void *reallocarray(void *ptr, size_t n, size_t size);
EMMA_API void *aligned_alloc(size_t align, size_t size);
EMMA_API int posix_memalign(void **memptr, size_t align, size_t size);
EMMA_API void *memalign(size_t align, size_t size);
EMMA_API void *valloc(size_t size);
EMMA_API void *pvalloc(size_t size);
EMMA_API size_t malloc_usable_size(void *ptr);
EMMA_API void free_sized(void *ptr, size_t size);
EMMA_API void free_aligned_sized(void *ptr, size_t align, size_t size);
EMMA_API int malloc_trim(size_t pad);

static inline bool is_pow2(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

static inline bool mul_overflows(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

EMMA_API void *malloc(size_t size) { return alloc_block(size, MIN_ALIGN); }

EMMA_API void free(void *ptr)
{
    if (likely(ptr != NULL))
        free_block(ptr, "free");
}

EMMA_API void *calloc(size_t n, size_t size)
{
    size_t total;
    if (unlikely(mul_overflows(n, size, &total))) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    return alloc_zeroed(total, MIN_ALIGN);
}

EMMA_API void *realloc(void *ptr, size_t size)
{
    if (!ptr)
        return alloc_block(size, MIN_ALIGN);
    if (config_checks)
        check_pointer(ptr, "realloc");
    if (size == 0) {
        free_block(ptr, "realloc");
        return NULL;
    }
    if (config_checks)
        check_not_private(ptr, "realloc");
    return realloc_block(NULL, ptr, size, MIN_ALIGN, "realloc");
}

EMMA_API void *reallocarray(void *ptr, size_t n, size_t size)
{
    size_t total;
    if (unlikely(mul_overflows(n, size, &total))) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    return realloc(ptr, total);
}

EMMA_API void *aligned_alloc(size_t align, size_t size)
{
    if (unlikely(!is_pow2(align))) {
        os_set_errno(EMMA_EINVAL);
        return NULL;
    }
    return alloc_block(size, align);
}

EMMA_API int posix_memalign(void **memptr, size_t align, size_t size)
{
    if (!is_pow2(align) || align % sizeof(void *) != 0)
        return EMMA_EINVAL;
    void *p = alloc_block(size, align);
    if (!p)
        return EMMA_ENOMEM;
    *memptr = p;
    return 0;
}

/* glibc rounds an alignment that is not a power of two up to one. */
EMMA_API void *memalign(size_t align, size_t size)
{
    if (align > (SIZE_MAX >> 1) + 1) {
        os_set_errno(EMMA_EINVAL);
        return NULL;
    }
    if (!is_pow2(align))
        align = align < MIN_ALIGN ? MIN_ALIGN : (size_t)1 << (log2_floor(align) + 1);
    return alloc_block(size, align);
}

EMMA_API void *valloc(size_t size) { return alloc_block(size, OS_PAGE_SIZE); }

EMMA_API void *pvalloc(size_t size)
{
    size_t rounded = align_up(size, OS_PAGE_SIZE);
    if (rounded < size) {
        os_set_errno(EMMA_ENOMEM);
        return NULL;
    }
    return alloc_block(rounded ? rounded : OS_PAGE_SIZE, OS_PAGE_SIZE);
}

EMMA_API size_t malloc_usable_size(void *ptr)
{
    if (!ptr)
        return 0;
    if (config_checks)
        return check_usable(ptr, "malloc_usable_size");
    return usable_size(ptr);
}

EMMA_API void free_sized(void *ptr, size_t size)
{
    free_layout(ptr, size, MIN_ALIGN, "free_sized");
}

EMMA_API void free_aligned_sized(void *ptr, size_t align, size_t size)
{
    free_layout(ptr, size, align, "free_aligned_sized");
}

/* ------------------------------------------------------------------ */
/* Start and exit, without libc: DT_INIT_ARRAY and DT_FINI_ARRAY entries.
 * glibc calls init-array functions with (argc, argv, envp) (options.c
 * checks that they are real); they run at load time, and at dlopen.  The
 * destructor that prints EMMA_SHOW_STATS's statistics at exit and dlclose
 * is teardown.c's copy_finish (run from os.c's, before the copy is torn
 * down). */
static void emma_start(int argc, char **argv, char **envp) { options_init(argc, argv, envp); }

__attribute__((section(".init_array"), used)) static void (*emma_init_entry)(int, char **,
                                                                          char **) = emma_start;

/* glibc's meaning: give free memory back to the kernel, 1 if any was
 * released.  emma has no heap top to keep `pad` bytes of: what it gives
 * back is what emma_trim() does, from every thread's heap. */
EMMA_API int malloc_trim(size_t pad)
{
    (void)pad;
    return policy_trim() > 0;
}


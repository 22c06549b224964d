/* The emma_* API: size and alignment on every call.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "alloc.h"
#include "policy.h"

#define EMMA_API __attribute__((visibility("default")))
#include "emma.h"

static inline bool align_valid(size_t align) { return align != 0 && (align & (align - 1)) == 0; }

static bool align_ok(size_t align, const void *ptr, const char *func)
{
    if (likely(align_valid(align)))
        return true;
    if (config_checks)
        emma_fatal(func, "alignment is not a power of two", ptr);
    os_set_errno(EMMA_EINVAL);
    return false;
}

EMMA_API void *emma_alloc(size_t size, size_t align)
{
    if (unlikely(!align_ok(align, NULL, "emma_alloc")))
        return NULL;
    return alloc_block(size, align);
}

EMMA_API void *emma_alloc_zeroed(size_t size, size_t align)
{
    if (unlikely(!align_ok(align, NULL, "emma_alloc_zeroed")))
        return NULL;
    return alloc_zeroed(size, align);
}

EMMA_API void emma_dealloc(void *ptr, size_t size, size_t align)
{
    free_layout(ptr, size, align, "emma_dealloc");
}

EMMA_API void *emma_realloc(void *ptr, size_t old_size, size_t align, size_t new_size)
{
    if (unlikely(!align_ok(align, ptr, "emma_realloc")))
        return NULL;
    if (!ptr)
        return alloc_block(new_size, align);
    if (config_checks)
        check_layout(ptr, old_size, align, "emma_realloc");
    return realloc_block(ptr, new_size, align);
}

EMMA_API size_t emma_usable_size(const void *ptr)
{
    if (!ptr)
        return 0;
    if (config_checks)
        check_pointer(ptr, "emma_usable_size");
    return usable_size(ptr);
}

EMMA_API void emma_free(void *ptr)
{
    if (ptr)
        free_block(ptr, "emma_free");
}

EMMA_API int emma_owns(const void *ptr) { return addrmap_segment(ptr) != NULL; }

EMMA_API void emma_trim(void) { policy_trim(); }

EMMA_API const char *emma_version(void) { return EMMA_VERSION_STRING; }

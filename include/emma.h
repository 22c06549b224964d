/* emma: an embeddable, libc-free memory allocator for Linux x86_64.
 *
 * Public API.  Two families:
 *   - the emma_* API: every call carries the size and the alignment of the
 *     block, like a Rust GlobalAlloc, so the allocator can skip work;
 *   - the malloc-compatible API (malloc, free, calloc, ...), declared by
 *     <stdlib.h> and <malloc.h>, exported by libemma as well.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef EMMA_H
#define EMMA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMMA_VERSION_MAJOR 0
#define EMMA_VERSION_MINOR 2
#define EMMA_VERSION_PATCH 0
#define EMMA_VERSION_STRING "0.2.0"

#if defined(__GNUC__)
#define EMMA_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define EMMA_MALLOC_ATTR
#endif

/* emma_owns() only compares the pointer's address with emma's metadata: it
 * never reads the memory the pointer points to.  Saying so
 * keeps GCC (11 and later) from warning that freshly allocated memory "may
 * be used uninitialized" when such a pointer is passed to them. */
#ifndef EMMA_NO_ACCESS_ATTR
#if defined(__has_attribute)
#if __has_attribute(access) && !defined(__clang__)
#define EMMA_NO_ACCESS_ATTR __attribute__((access(none, 1)))
#endif
#endif
#endif
#ifndef EMMA_NO_ACCESS_ATTR
#define EMMA_NO_ACCESS_ATTR
#endif

/* Allocate size bytes aligned to align (a power of two).  Returns NULL if
 * the request cannot be met.  size 0 yields a unique, freeable pointer. */
void *emma_alloc(size_t size, size_t align) EMMA_MALLOC_ATTR;

/* Like emma_alloc, but the memory is zeroed. */
void *emma_alloc_zeroed(size_t size, size_t align) EMMA_MALLOC_ATTR;

/* Release a block obtained from emma with this size and alignment. */
void emma_dealloc(void *ptr, size_t size, size_t align);

/* Resize a block of old_size bytes (aligned to align) to new_size bytes.
 * On failure returns NULL and leaves the block untouched. */
void *emma_realloc(void *ptr, size_t old_size, size_t align, size_t new_size)
    __attribute__((warn_unused_result));

/* Usable size of a block (at least the requested size); 0 for NULL. */
size_t emma_usable_size(const void *ptr);

/* Release a block without knowing its size (any emma or malloc block). */
void emma_free(void *ptr);

/* Nonzero if ptr points into memory managed by this copy of emma (any
 * address inside one of its segments or huge blocks); 0 otherwise.  Safe to
 * call with any pointer value. */
int emma_owns(const void *ptr) EMMA_NO_ACCESS_ATTR;

/* Return the calling thread's unused memory to the kernel. */
void emma_trim(void);

/* Library version as "MAJOR.MINOR.PATCH". */
const char *emma_version(void);

/* ------------------------------------------------------------------ */
/* Statistics (emma_stats(3)).
 *
 * The struct is versioned by its size: a caller passes sizeof(struct
 * emma_stats) as it was compiled; the library fills that many bytes at most
 * (fields a newer library added are not written) and sets `size` to the
 * bytes it filled and `version` to EMMA_STATS_VERSION.  New fields are only
 * ever appended, so a program built against this header keeps working with
 * later libraries, and a newer program can tell from `size` which fields an
 * older library filled.  All figures are process-wide for this copy of emma
 * and are gathered when emma_stats() is called: a snapshot, not an atomic
 * one while other threads allocate. */
#define EMMA_STATS_VERSION 1
#define EMMA_STATS_MAX_CLASSES 64

struct emma_stats_class {
    size_t block_size;    /* bytes per block of this size class */
    size_t blocks_in_use; /* blocks handed out (see emma_stats(3)) */
    size_t blocks_free;   /* free blocks carved in its pages */
    size_t pages;         /* pages holding this class */
    size_t page_size;     /* bytes per page of this class */
};

struct emma_stats {
    unsigned version;           /* EMMA_STATS_VERSION of the library */
    unsigned size;              /* bytes of this struct the library filled */
    size_t bytes_in_use;        /* blocks handed out, at their usable size */
    size_t bytes_free_in_pages; /* free blocks in pages that are in use */
    size_t bytes_free_resident; /* free pages and cached huge mappings that
                                   may still be resident (not yet purged) */
    size_t bytes_mapped;        /* address space mapped now (segments, huge
                                   blocks, heaps; not the reservation of
                                   emma's address map) */
    size_t peak_bytes_mapped;   /* the most bytes_mapped has been */
    size_t segments;            /* 4 MiB segments mapped */
    size_t segments_cached;     /* of which empty, kept for reuse */
    size_t huge_blocks;         /* huge blocks (> 1 MiB) in use */
    size_t huge_bytes;          /* their usable bytes */
    size_t huge_cached;         /* freed huge mappings kept for reuse */
    size_t huge_cached_bytes;   /* their bytes */
    size_t heaps;               /* heaps created */
    size_t heaps_live;          /* heaps whose owner thread is alive (TLS),
                                   or heaps in service (--disable-tls) */
    size_t heaps_reclaimed;     /* times a dead thread's heap was adopted */
    size_t heaps_abandoned;     /* heaps never to be reused (owner died
                                   inside emma, or did not survive fork) */
    size_t purges;              /* madvise(MADV_DONTNEED) calls that gave
                                   memory back */
    size_t bytes_purged;        /* bytes they covered */
    size_t mmap_calls;          /* system calls made by emma */
    size_t munmap_calls;
    size_t mremap_calls;
    size_t madvise_calls;
    size_t class_count;         /* entries used in classes[] */
    struct emma_stats_class classes[EMMA_STATS_MAX_CLASSES];
};

/* Fill *out (size bytes of it, at most sizeof(struct emma_stats)).  Returns
 * 0, or -1 with errno EINVAL if out is NULL or size is smaller than the
 * version and size fields. */
int emma_stats(struct emma_stats *out, size_t size);

/* Write the statistics as a readable table to file descriptor fd, with
 * write(2) (no stdio, no allocation).  Returns 0, or -1 if a write failed. */
int emma_stats_print(int fd);

#ifdef __cplusplus
}
#endif

#endif /* EMMA_H */

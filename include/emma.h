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
#define EMMA_STATS_VERSION 2
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
                                   blocks and what is mapped ahead for them,
                                   heaps; not the reservation of emma's
                                   address map) */
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
    size_t heaps_abandoned;     /* heaps never to be adopted by another
                                   thread: the owner died inside emma, or
                                   the heap was owned when this process was
                                   forked (in a fork child this counts the
                                   forking thread's own heap too, which it
                                   keeps using) */
    size_t purges;              /* madvise(MADV_DONTNEED) calls that gave
                                   memory back */
    size_t bytes_purged;        /* bytes they covered */
    size_t mmap_calls;          /* system calls made by emma */
    size_t munmap_calls;
    size_t mremap_calls;
    size_t madvise_calls;
    size_t class_count;         /* entries used in classes[] */
    struct emma_stats_class classes[EMMA_STATS_MAX_CLASSES];
    /* private heaps (emma_heap_new(3)): included in the figures above too */
    size_t private_heaps;               /* alive (made and not destroyed) */
    size_t private_segments;            /* of segments */
    size_t private_bytes_in_use;        /* of bytes_in_use, huge blocks too */
    size_t private_huge_blocks;         /* of huge_blocks */
    size_t private_bytes_free_resident; /* of bytes_free_resident */
    size_t locks_recovered; /* emma's process-wide locks taken over from a
                               thread that died holding them (or did not
                               survive fork); see emma_stats(3) */
    size_t bytes_quarantined; /* memory of pages in heaps abandoned after
                                 their thread died inside emma, not yet
                                 recovered: blocks still in use there, and
                                 what the dead thread left half changed */
    size_t heaps_salvaged;    /* abandoned heaps whose memory was all
                                 recovered, back in service */
    /* EMMA_STATS_VERSION 2: */
    size_t free_resident_bound; /* the bound on free resident memory, in bytes
                                   (EMMA_FREE_RESIDENT_MAX, default 32 MiB):
                                   bytes_free_resident, bytes_held and
                                   bytes_depot_pinned are held to it together,
                                   process-wide (emma(7)) */
    size_t bytes_held;          /* emptied pages threads keep for their next
                                   block of the same size class, their carved
                                   bytes, and blocks of 96-512 KiB threads keep
                                   for their next allocation of the class, at
                                   the class's size (together at most an
                                   eighth of the bound) */
    size_t bytes_depot_pinned;  /* pages kept in use by freed blocks waiting
                                   in the depot, counted whole (at most half
                                   of the bound) */
};

/* Fill *out (size bytes of it, at most sizeof(struct emma_stats)).  Returns
 * 0, or -1 with errno EINVAL if out is NULL or size is smaller than the
 * version and size fields. */
int emma_stats(struct emma_stats *out, size_t size);

/* Write the statistics as a readable table to file descriptor fd, with
 * write(2) (no stdio, no allocation).  Returns 0, or -1 if a write failed. */
int emma_stats_print(int fd);

/* ------------------------------------------------------------------ */
/* Private heaps (see emma_heap_new(3)).
 *
 * A private heap is a heap of its own that no thread allocates from by
 * itself: blocks go into it only through emma_heap_alloc and friends.
 * emma_heap_destroy releases every block still in it at once and unmaps all
 * of its memory; emma_heap_reset drops every block but keeps the memory for
 * the next round (the arena pattern).
 *
 * Threading: the calls that take a heap argument (alloc, alloc_zeroed,
 * realloc, dealloc, reset, destroy) must not run concurrently on the same
 * heap: one thread at a time, any thread (the heap is not tied to the
 * thread that made it).  Different heaps are independent.  A block of a
 * private heap may also be released with emma_free / emma_dealloc (or free)
 * from any thread at any time, concurrently with the heap's user, as long
 * as that happens before the heap is reset or destroyed.  emma_usable_size
 * and emma_owns work on its blocks.  emma_realloc / realloc must not be
 * given a private heap's block (use emma_heap_realloc).
 *
 * After emma_heap_destroy (or reset), the heap's old blocks are gone: using
 * or freeing one is undefined behaviour; with --enable-boundary-checks a
 * free of one aborts with one line on stderr (its memory is unmapped, so
 * emma no longer knows the address). */
typedef struct emma_heap emma_heap_t;

/* A new, empty private heap, or NULL (errno ENOMEM).  Costs one 4 KiB page
 * of metadata (one mapping) until the first allocation; then memory in
 * 4 MiB segments (one mapping each, resident only where used) and one
 * mapping per block over 1 MiB. */
emma_heap_t *emma_heap_new(void);

/* As emma_alloc / emma_alloc_zeroed, into heap. */
void *emma_heap_alloc(emma_heap_t *heap, size_t size, size_t align) EMMA_MALLOC_ATTR;
void *emma_heap_alloc_zeroed(emma_heap_t *heap, size_t size, size_t align) EMMA_MALLOC_ATTR;

/* As emma_realloc, for a block of heap; the result is a block of heap. */
void *emma_heap_realloc(emma_heap_t *heap, void *ptr, size_t old_size, size_t align,
                        size_t new_size) __attribute__((warn_unused_result));

/* As emma_dealloc, for a block of heap (the fastest way to free one). */
void emma_heap_dealloc(emma_heap_t *heap, void *ptr, size_t size, size_t align);

/* Release every block of heap and the heap itself: all its mappings are
 * unmapped, none is kept in a cache.  NULL is ignored. */
void emma_heap_destroy(emma_heap_t *heap);

/* Release every block of heap, keeping its memory (resident, for reuse by
 * the heap's next allocations); blocks over 1 MiB are unmapped. */
void emma_heap_reset(emma_heap_t *heap);

/* Release every mapping this copy of emma made (its address map, heaps'
 * metadata, cached and free memory, fork-detection page), leaving it as if
 * it had never run.  Returns 0 when done; -1 (errno EBUSY, nothing
 * released, everything keeps working) while any block of this copy is
 * still live.  The caller must be the only thread using this copy now, and
 * other threads that used it must never call it again (they may have
 * exited); the calling thread may go on using it.  Runs by itself when the
 * object containing the copy is unloaded (dlclose) or at exit, if no block
 * is live then. */
int emma_teardown(void);

#ifdef __cplusplus
}
#endif

#endif /* EMMA_H */

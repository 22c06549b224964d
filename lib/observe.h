/* Observability: statistics (stats.c), options from the environment
 * (options.c), formatted output with raw writes (out.c), and Valgrind's
 * client requests (valgrind.h's macros, or nothing without them).  None of
 * it is on a fast path: the counters behind the statistics are kept by the
 * OS layer (relaxed atomics next to system calls) and by slow paths, and
 * per-page figures are read from the page descriptors when asked.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_OBSERVE_H
#define EMMA_OBSERVE_H

#define emma_opt emma__emma_opt
#define options_init emma__options_init
#define options_init_lazy emma__options_init_lazy
#define options_set_free_bound emma__options_set_free_bound
#define os_tsc_per_ms emma__os_tsc_per_ms
#define out_init emma__out_init
#define out_str emma__out_str
#define out_u64 emma__out_u64
#define out_u64_width emma__out_u64_width
#define out_bytes emma__out_bytes
#define out_human emma__out_human
#define out_flush emma__out_flush
#define stats_collect emma__stats_collect
#define private_heap_stats emma__private_heap_stats
#define stats_print_fd emma__stats_print_fd
#define vg_running emma__vg_running
#define vg_detect emma__vg_detect
#define vg_foreign_free emma__vg_foreign_free
#define vg_alloc_from emma__vg_alloc_from
#define vg_release emma__vg_release
#define os_write emma__os_write
#define os_open_read emma__os_open_read
#define os_read emma__os_read
#define os_close emma__os_close
#define os_dup_cloexec emma__os_dup_cloexec
#define os_counters_read emma__os_counters_read
#define os_walk_begin emma__os_walk_begin
#define os_walk_end emma__os_walk_end
#define addrmap_mark_huge emma__addrmap_mark_huge
#define addrmap_range emma__addrmap_range
#define addrmap_chunk emma__addrmap_chunk
#define heap_stats_reclaimed emma__heap_stats_reclaimed
#define heap_stats_abandoned emma__heap_stats_abandoned
#define huge_stats_blocks emma__huge_stats_blocks
#define huge_stats_bytes emma__huge_stats_bytes

#include "internal.h"
#include "emma.h"

#if defined(HAVE_VALGRIND_MEMCHECK_H) && HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#define EMMA_CONFIG_VALGRIND 1
#else
#define EMMA_CONFIG_VALGRIND 0
#endif

/* ------------------------------------------------------------------ */
/* options.c */
struct emma_options {
    uint8_t show_stats; /* EMMA_SHOW_STATS: statistics on stderr at exit */
    uint8_t verbose;    /* EMMA_VERBOSE: one line at start-up */
    /* With show_stats: where they go, a close-on-exec copy of stderr made
     * at start-up (programs such as cat close fd 2 before exit); 0 if none
     * could be made, then fd 2. */
    int stats_fd;
};
EMMA_HIDDEN extern struct emma_options emma_opt;
/* From the ELF constructor (api_malloc.c): glibc passes (argc, argv, envp). */
EMMA_HIDDEN void options_init(int argc, char **argv, char **envp);
/* From the first heap's creation: no constructor ran (musl, -nostdlib). */
EMMA_HIDDEN void options_init_lazy(void);
/* mallopt(M_TRIM_THRESHOLD): EMMA_FREE_RESIDENT_MAX (v < 0: no bound). */
EMMA_HIDDEN void options_set_free_bound(long long v);

/* Valgrind: nonzero when running under it (set with the options). */
EMMA_HIDDEN extern uint8_t vg_running;
EMMA_HIDDEN void vg_detect(void);
/* api_emma.c, for every block handed out under Valgrind, the emma_*
 * functions' and private heaps' (heap_private.c): vg_alloc_from takes a
 * block of the size asked for plus a red zone from take(h, ...) (with
 * error reporting off) and tells memcheck about it (MALLOCLIKE, the red
 * zone inaccessible; the first block of a page kept back, a huge block's
 * header word that points at it hidden, so that a leaked block is
 * "definitely lost"); vg_release releases one (FREELIKE, then freed). */
typedef void *vg_take_fn(heap_t *h, size_t size, size_t align, bool zero);
#if EMMA_CONFIG_VALGRIND
EMMA_HIDDEN void *vg_alloc_from(vg_take_fn *take, heap_t *h, size_t size, size_t align, bool zero);
EMMA_HIDDEN void vg_release(void *p, const char *func);
#else
static inline void *vg_alloc_from(vg_take_fn *take, heap_t *h, size_t size, size_t align, bool zero)
{
    (void)take, (void)h, (void)size, (void)align, (void)zero;
    return NULL;
}
static inline void vg_release(void *p, const char *func) { (void)p, (void)func; }
#endif

/* ------------------------------------------------------------------ */
/* out.c: text written with raw write(2), in pieces of a small buffer. */
struct outbuf {
    int fd;
    bool failed;
    int error; /* errno of the failed write */
    size_t n;
    char buf[512];
};
EMMA_HIDDEN void out_init(struct outbuf *o, int fd);
EMMA_HIDDEN void out_str(struct outbuf *o, const char *s);
EMMA_HIDDEN void out_u64(struct outbuf *o, uint64_t v);
EMMA_HIDDEN void out_u64_width(struct outbuf *o, uint64_t v, unsigned width);
/* An option value: 32M, 512K or a plain number. */
EMMA_HIDDEN void out_bytes(struct outbuf *o, uint64_t v);
/* A size for people: "12.3 MiB" or "512 B", right-aligned in `width`
 * columns (0: no padding). */
EMMA_HIDDEN void out_human(struct outbuf *o, uint64_t v, unsigned width);
/* Write what is buffered; false if any write failed. */
EMMA_HIDDEN bool out_flush(struct outbuf *o);

/* ------------------------------------------------------------------ */
/* os.c: files, for /proc/self/environ and for writing statistics. */
EMMA_HIDDEN long os_write(int fd, const void *buf, size_t n);
EMMA_HIDDEN int os_open_read(const char *path);
EMMA_HIDDEN long os_read(int fd, void *buf, size_t n);
EMMA_HIDDEN void os_close(int fd);
/* fcntl(F_DUPFD_CLOEXEC): a close-on-exec copy of fd, numbered min_fd or
 * above; -1 on failure (fd not open, min_fd over RLIMIT_NOFILE). */
EMMA_HIDDEN int os_dup_cloexec(int fd, int min_fd);
/* Time-stamp counter ticks per millisecond, measured against
 * CLOCK_MONOTONIC over about a millisecond (at least 1). */
EMMA_HIDDEN uint64_t os_tsc_per_ms(void);

/* os.c: what the OS layer counts. */
struct os_counters {
    size_t mmap_calls, munmap_calls, mremap_calls, madvise_calls;
    size_t purges, bytes_purged;
    size_t bytes_mapped, peak_bytes_mapped;
};
EMMA_HIDDEN void os_counters_read(struct os_counters *c);
/* A walk over segment headers (stats.c) is in progress between these: a
 * segment unmapped meanwhile stays mapped until the last walk ends. */
EMMA_HIDDEN void os_walk_begin(void);
EMMA_HIDDEN void os_walk_end(void);
/* The address map: huge mappings are marked apart from segments, so that a
 * walk never reads a huge block's header (any thread may unmap or move
 * it).  addrmap_range gives the lowest and highest chunk ever marked. */
EMMA_HIDDEN bool addrmap_mark_huge(void *start, size_t size);
EMMA_HIDDEN bool addrmap_range(uintptr_t *lo, uintptr_t *hi);
EMMA_HIDDEN unsigned addrmap_chunk(uintptr_t c);

/* heap.c and huge.c counters (relaxed atomics, slow paths only). */
EMMA_HIDDEN extern _Atomic size_t heap_stats_reclaimed, heap_stats_abandoned;
/* salvage.c: quarantined heaps recovered whole */
EMMA_HIDDEN extern _Atomic size_t salvage_stats_heaps;
EMMA_HIDDEN extern _Atomic size_t huge_stats_blocks, huge_stats_bytes;

/* heap_private.c: the private heaps' share of the statistics. */
EMMA_HIDDEN void private_heap_stats(struct emma_stats *s);

/* ------------------------------------------------------------------ */
/* stats.c */
EMMA_HIDDEN void stats_collect(struct emma_stats *s);
/* The table; 0, or the errno of the write that failed. */
EMMA_HIDDEN int stats_print_fd(int fd, const struct emma_stats *s);

#endif

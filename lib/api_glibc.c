/* The GNU C library's allocator introspection and tuning, with glibc's
 * meaning and emma's figures: mallinfo2, mallinfo, malloc_stats,
 * malloc_info, mallopt, and the old cfree.  In libemma.la only (like
 * api_malloc.c), so the white-box tests keep their own C library's.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "observe.h"

#define EMMA_API __attribute__((visibility("default")))

/* glibc's layouts (<malloc.h>), which are ABI: same field order. */
struct mallinfo2 {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks,
        keepcost;
};
struct mallinfo {
    int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};

EMMA_API struct mallinfo2 mallinfo2(void);
EMMA_API struct mallinfo mallinfo(void);
EMMA_API void malloc_stats(void);
EMMA_API int malloc_info(int options, void *stream);
EMMA_API int mallopt(int param, int value);
EMMA_API void cfree(void *ptr);
EMMA_API void free(void *ptr);

EMMA_API struct mallinfo2 mallinfo2(void)
{
    struct emma_stats s;
    stats_collect(&s);
    size_t small_in_use = s.bytes_in_use - s.huge_bytes;
    size_t arena = s.segments * SEGMENT_SIZE;
    struct mallinfo2 m = {0};
    m.arena = arena;
    for (size_t i = 0; i < s.class_count; i++)
        m.ordblks += s.classes[i].blocks_free;
    m.hblks = s.huge_blocks;
    m.hblkhd = s.huge_bytes;
    m.uordblks = small_in_use;
    m.fordblks = arena > small_in_use ? arena - small_in_use : 0;
    m.keepcost = s.bytes_free_resident;
    return m;
}

/* glibc fills the int fields by plain conversion (they wrap past 2 GiB). */
EMMA_API struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m;
    m.arena = (int)m2.arena;
    m.ordblks = (int)m2.ordblks;
    m.smblks = (int)m2.smblks;
    m.hblks = (int)m2.hblks;
    m.hblkhd = (int)m2.hblkhd;
    m.usmblks = (int)m2.usmblks;
    m.fsmblks = (int)m2.fsmblks;
    m.uordblks = (int)m2.uordblks;
    m.fordblks = (int)m2.fordblks;
    m.keepcost = (int)m2.keepcost;
    return m;
}

static void stats_line(struct outbuf *o, const char *label, uint64_t v)
{
    out_str(o, label);
    out_u64_width(o, v, 10);
    out_str(o, "\n");
}

/* glibc's format: per arena, then the totals with mmapped chunks. */
EMMA_API void malloc_stats(void)
{
    struct emma_stats s;
    stats_collect(&s);
    struct outbuf o;
    out_init(&o, 2);
    out_str(&o, "Arena 0:\n");
    stats_line(&o, "system bytes     = ", s.segments * SEGMENT_SIZE);
    stats_line(&o, "in use bytes     = ", s.bytes_in_use - s.huge_bytes);
    out_str(&o, "Total (incl. mmap):\n");
    stats_line(&o, "system bytes     = ", s.bytes_mapped);
    stats_line(&o, "in use bytes     = ", s.bytes_in_use);
    stats_line(&o, "max mmap regions = ", s.huge_blocks);
    stats_line(&o, "max mmap bytes   = ", s.huge_bytes);
    out_flush(&o);
}

static void xml_size(struct outbuf *o, const char *elem, const char *type, uint64_t count,
                     uint64_t size)
{
    out_str(o, elem);
    out_str(o, " type=\"");
    out_str(o, type);
    if (count != UINT64_MAX) {
        out_str(o, "\" count=\"");
        out_u64(o, count);
    }
    out_str(o, "\" size=\"");
    out_u64(o, size);
    out_str(o, "\"/>\n");
}

/* The descriptor of a glibc FILE: struct _IO_FILE (bits/types/struct_FILE.h,
 * public and unchanged since glibc 2.1) begins with int _flags and twelve
 * pointers (_IO_read_ptr .. _IO_save_end, _markers, _chain), then int
 * _fileno: offset 8 + 13 * 8 on x86_64.  libemma may not call fileno(). */
#define GLIBC_FILE_FILENO_OFFSET 112

EMMA_API int malloc_info(int options, void *stream)
{
    if (options != 0) {
        os_set_errno(EMMA_EINVAL);
        return -1;
    }
    int fd = stream ? *(const int *)(const void *)((const char *)stream + GLIBC_FILE_FILENO_OFFSET)
                    : -1;
    if (fd < 0) {
        os_set_errno(9); /* EBADF */
        return -1;
    }
    struct emma_stats s;
    stats_collect(&s);
    struct outbuf o;
    out_init(&o, fd);
    out_str(&o, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
    size_t free_blocks = 0, free_bytes = 0, from = 1;
    for (size_t i = 0; i < s.class_count; i++) {
        const struct emma_stats_class *k = &s.classes[i];
        if (k->blocks_free) {
            out_str(&o, "  <size from=\"");
            out_u64(&o, from);
            out_str(&o, "\" to=\"");
            out_u64(&o, k->block_size);
            out_str(&o, "\" total=\"");
            out_u64(&o, (uint64_t)k->blocks_free * k->block_size);
            out_str(&o, "\" count=\"");
            out_u64(&o, k->blocks_free);
            out_str(&o, "\"/>\n");
        }
        free_blocks += k->blocks_free;
        free_bytes += k->blocks_free * k->block_size;
        from = k->block_size + 1;
    }
    out_str(&o, "</sizes>\n");
    size_t arena = s.segments * SEGMENT_SIZE;
    xml_size(&o, "<total", "fast", 0, 0);
    xml_size(&o, "<total", "rest", free_blocks, free_bytes);
    xml_size(&o, "<system", "current", UINT64_MAX, arena);
    xml_size(&o, "<system", "max", UINT64_MAX, s.peak_bytes_mapped);
    xml_size(&o, "<aspace", "total", UINT64_MAX, arena);
    xml_size(&o, "<aspace", "mprotect", UINT64_MAX, arena);
    out_str(&o, "</heap>\n");
    xml_size(&o, "<total", "fast", 0, 0);
    xml_size(&o, "<total", "rest", free_blocks, free_bytes);
    xml_size(&o, "<total", "mmap", s.huge_blocks, s.huge_bytes);
    xml_size(&o, "<system", "current", UINT64_MAX, s.bytes_mapped);
    xml_size(&o, "<system", "max", UINT64_MAX, s.peak_bytes_mapped);
    xml_size(&o, "<aspace", "total", UINT64_MAX, s.bytes_mapped);
    xml_size(&o, "<aspace", "mprotect", UINT64_MAX, s.bytes_mapped);
    out_str(&o, "</malloc>\n");
    if (!out_flush(&o)) {
        os_set_errno(o.error);
        return -1;
    }
    return 0;
}

#define EMMA_M_TRIM_THRESHOLD (-1)

/* 1 if applied, 0 (mallopt's failure value) for what emma cannot honour. */
EMMA_API int mallopt(int param, int value)
{
    if (param != EMMA_M_TRIM_THRESHOLD)
        return 0;
    options_set_free_bound(value);
    return 1;
}

EMMA_API void cfree(void *ptr) { free(ptr); }

/* api_emma.c, under Valgrind: emma_free() of a block from the process's
 * malloc (Valgrind's) gives it back to its owner. */
void vg_foreign_free(void *ptr);
void vg_foreign_free(void *ptr) { free(ptr); }

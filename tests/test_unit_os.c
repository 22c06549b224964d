/* White-box tests of the OS layer (os.c): mappings, purging, remapping,
 * errno, ids, the secret and the address map.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la; this program's malloc is glibc's.
 */
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "internal.h"

START_TEST(t_os_map)
{
    const size_t sizes[] = {4096, 8192, 65536, 3 << 20, 64 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = os_map(sizes[i]);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % OS_PAGE_SIZE, 0);
        ck_assert(tu_all_zero(p, sizes[i] < 65536 ? sizes[i] : 65536));
        p[0] = 1;
        p[sizes[i] - 1] = 2;
        os_unmap(p, sizes[i]);
        ck_assert_int_lt(tu_resident_pages(p, sizes[i]), 0); /* not mapped */
    }
    ck_assert_ptr_null(os_map((size_t)1 << 62)); /* the kernel says no */
}
END_TEST

START_TEST(t_os_map_aligned)
{
    bool leaf_seen = false;
    for (size_t a = OS_PAGE_SIZE; a <= ((size_t)64 << 20); a *= 2) {
        const size_t offsets[] = {0, OS_PAGE_SIZE, a / 2 >= OS_PAGE_SIZE ? a / 2 : 0,
                                  SEGMENT_SIZE};
        for (size_t k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
            size_t off = offsets[k];
            size_t size = SEGMENT_SIZE + 3 * OS_PAGE_SIZE;
            size_t out = 0;
            size_t before = tu_vm_size();
            unsigned char *p = os_map_aligned(size, a, off, &out);
            size_t after = tu_vm_size();
            ck_assert_msg(p != NULL, "os_map_aligned(%zu, %zu, %zu)", size, a,
                          off);
            ck_assert_msg(((uintptr_t)p + off) % a == 0,
                          "os_map_aligned(%zu, %zu, %zu) = %p", size, a, off,
                          (void *)p);
            ck_assert_uint_eq(out, size);
            /* the slack around the aligned range went back; the first
             * range in a 128 GiB region also maps the address map's leaf
             * for it (64 KiB) */
            size_t leaf = (size_t)64 << 10;
            if (after - before == size + leaf && !leaf_seen) {
                leaf_seen = true;
                after -= leaf;
            }
            ck_assert_msg(after - before == size,
                          "os_map_aligned(%zu, align %zu): mapping grew by "
                          "%zu bytes", size, a, after - before);
            p[0] = 1;
            p[size - 1] = 1;
            ck_assert_int_lt(tu_resident_pages(p, size), (long)(size / 4096));
            before = tu_vm_size(); /* Check's own bookkeeping may have grown */
            os_unmap(p, size);
            ck_assert_uint_eq(before - tu_vm_size(), size);
        }
    }
    size_t out = 0;
    ck_assert_ptr_null(os_map_aligned(SIZE_MAX - 4095, SEGMENT_SIZE, 0, &out));
    ck_assert_ptr_null(os_map_aligned(SEGMENT_SIZE, SIZE_MAX / 2 + 1, 0, &out));
    ck_assert_ptr_null(os_map_aligned(MAX_REQUEST + 1, SEGMENT_SIZE, 0, &out));
}
END_TEST

START_TEST(t_os_purge)
{
    size_t n = 8 << 20;
    unsigned char *p = os_map(n);
    ck_assert_ptr_nonnull(p);
    memset(p, 0xab, n);
    ck_assert_int_eq(tu_resident_pages(p, n), (long)(n / 4096));
    os_purge(p + 4096, n - 8192);
    /* still mapped, reads zero, no longer resident */
    ck_assert_int_eq(p[0], 0xab);
    ck_assert_int_eq(p[n - 1], 0xab);
    ck_assert_int_lt(tu_resident_pages(p + 4096, n - 8192), (long)((n - 8192) / 4096));
    ck_assert(tu_all_zero(p + 4096, n - 8192));
    os_unmap(p, n);
}
END_TEST

START_TEST(t_os_remap)
{
    /* a huge-block-like mapping: start + offset must stay aligned */
    const size_t aligns[] = {SEGMENT_SIZE, 16 << 20};
    for (size_t i = 0; i < 2; i++) {
        size_t a = aligns[i], off = a > SEGMENT_SIZE ? SEGMENT_SIZE : 0;
        size_t sz = 6 << 20;
        unsigned char *p = os_map_aligned(sz, a, off, NULL);
        ck_assert_ptr_nonnull(p);
        tu_fill(p, sz, 42);
        /* block the neighbourhood so the kernel has to move it (a mapping
         * already there does that too) */
        void *wall = mmap(p + sz, 4096, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                          -1, 0);
        if (wall != MAP_FAILED && wall != p + sz) {
            munmap(wall, 4096); /* before Linux 4.17 the flag is only a hint */
            os_unmap(p, sz);
            TU_SKIP("MAP_FIXED_NOREPLACE not honoured: cannot force os_remap to move");
        }
        ck_assert_msg(wall != MAP_FAILED || errno == EEXIST, "guard mapping: %s", strerror(errno));
        size_t nsz = 40 << 20;
        unsigned char *q = os_remap(p, sz, nsz, a, off, false);
        ck_assert_msg(q != NULL, "os_remap grow failed");
        ck_assert_msg(q != p, "os_remap grew in place through the guard mapping");
        ck_assert_msg(((uintptr_t)q + off) % a == 0, "os_remap lost alignment");
        ck_assert(tu_check(q, sz, 42) < 0);
        q[nsz - 1] = 7;
        unsigned char *r = os_remap(q, nsz, 5 << 20, a, off, false);
        ck_assert_ptr_eq(r, q); /* shrinking stays in place */
        ck_assert(tu_check(r, 5 << 20, 42) < 0);
        os_unmap(r, 5 << 20);
        if (wall != MAP_FAILED)
            munmap(wall, 4096);
    }
}
END_TEST

START_TEST(t_os_misc)
{
    errno = 0;
    os_set_errno(EMMA_ENOMEM);
    ck_assert_int_eq(errno, ENOMEM);
    os_set_errno(EMMA_EINVAL);
    ck_assert_int_eq(errno, EINVAL);
    uintptr_t s = os_secret();
    ck_assert(s != 0);
    ck_assert_uint_eq(os_secret(), s);
    ck_assert_uint_eq(os_gettid(), (uint32_t)syscall(SYS_gettid));
    os_yield();
}
END_TEST

START_TEST(t_addrmap)
{
    unsigned char *seg = os_map_aligned(3 * SEGMENT_SIZE, SEGMENT_SIZE, 0, NULL);
    ck_assert_ptr_nonnull(seg);
    ck_assert_uint_eq(addrmap_lookup(seg + 64), CHUNK_NONE);
    /* one segment with a header */
    addrmap_mark(seg, SEGMENT_SIZE, true);
    ck_assert_uint_eq(addrmap_lookup(seg + 1), CHUNK_HEADER);
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE / 2), CHUNK_HEADER);
    /* a block ending at the chunk boundary belongs to the chunk below */
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE), CHUNK_HEADER);
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE + 1), CHUNK_NONE);
    addrmap_clear(seg, SEGMENT_SIZE);
    ck_assert_uint_eq(addrmap_lookup(seg + 1), CHUNK_NONE);
    /* a multi-chunk (huge) mapping: header chunk, then interior chunks */
    addrmap_mark(seg, 2 * SEGMENT_SIZE + 4096, true);
    ck_assert_uint_eq(addrmap_lookup(seg + 4096), CHUNK_HEADER);
    ck_assert_uint_eq(addrmap_lookup(seg + SEGMENT_SIZE + 4096), CHUNK_INTERIOR);
    ck_assert_uint_eq(addrmap_lookup(seg + 2 * SEGMENT_SIZE + 16), CHUNK_INTERIOR);
    ck_assert_uint_eq(addrmap_lookup(seg + 3 * SEGMENT_SIZE + 16), CHUNK_NONE);
    addrmap_clear(seg, 2 * SEGMENT_SIZE + 4096);
    for (size_t off = 1; off < 3 * SEGMENT_SIZE; off += 65536)
        ck_assert_uint_eq(addrmap_lookup(seg + off), CHUNK_NONE);
    /* any value is safe */
    const uintptr_t odd[] = {0, 1, 4096, (uintptr_t)1 << 47, UINTPTR_MAX,
                             0x8000000000000000ull, (uintptr_t)-4096};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        ck_assert_uint_eq(addrmap_lookup((void *)odd[i]), CHUNK_NONE);
        ck_assert_ptr_null(addrmap_segment((void *)odd[i]));
    }
    os_unmap(seg, 3 * SEGMENT_SIZE);
    /* The map has two levels: a leaf per 128 GiB, mapped when a range in
     * it is first marked.  A range across a leaf boundary (the map only;
     * nothing is mapped there): its interior chunks in the second leaf
     * find the header in the first. */
    uintptr_t leaf = (uintptr_t)1 << 37, b = 3 * leaf - SEGMENT_SIZE;
    ck_assert_ptr_null(addrmap_segment((void *)(b + 5)));
    ck_assert_ptr_null(addrmap_segment((void *)(b + 2 * SEGMENT_SIZE + 5)));
    ck_assert(addrmap_mark((void *)b, 3 * SEGMENT_SIZE - 8192, true));
    ck_assert_ptr_eq(addrmap_segment((void *)(b + 5)), (void *)b);
    ck_assert_ptr_eq(addrmap_segment((void *)(b + SEGMENT_SIZE)), (void *)b);
    ck_assert_ptr_eq(addrmap_segment((void *)(b + 3 * SEGMENT_SIZE - 8193)), (void *)b);
    ck_assert_ptr_null(addrmap_segment((void *)(b + 3 * SEGMENT_SIZE - 8192))); /* past its end */
    ck_assert_uint_eq(addrmap_lookup((void *)(b + SEGMENT_SIZE + 16)), CHUNK_INTERIOR);
    /* addrmap_check answers as addrmap_lookup and addrmap_segment do,
     * with a segment next to the huge range and around chunk starts */
    ck_assert(addrmap_mark((void *)(b + 3 * SEGMENT_SIZE), SEGMENT_SIZE, true));
    const uintptr_t probes[] = {0, 1, 16, SEGMENT_SIZE - 16, SEGMENT_SIZE, SEGMENT_SIZE + 16,
                                2 * SEGMENT_SIZE, 3 * SEGMENT_SIZE - 8208, 3 * SEGMENT_SIZE - 8192,
                                3 * SEGMENT_SIZE - 16, 3 * SEGMENT_SIZE, 3 * SEGMENT_SIZE + 16,
                                4 * SEGMENT_SIZE - 16, 4 * SEGMENT_SIZE, 4 * SEGMENT_SIZE + 16};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        for (int k = 0; k < 2; k++) {
            const void *q = (const void *)(k ? probes[i] : b + probes[i]);
            segment_t *s = (segment_t *)1;
            ck_assert_uint_eq(addrmap_check(q, &s), addrmap_lookup(q));
            ck_assert_ptr_eq(s, addrmap_segment(q));
        }
    }
    addrmap_clear((void *)(b + 3 * SEGMENT_SIZE), SEGMENT_SIZE);
    addrmap_clear((void *)b, 3 * SEGMENT_SIZE - 8192);
    ck_assert_ptr_null(addrmap_segment((void *)(b + SEGMENT_SIZE + 5)));
    /* a leaf that was never mapped reads as nothing */
    ck_assert_ptr_null(addrmap_segment((void *)(((uintptr_t)1 << 46) + 5 * leaf + 64)));
}
END_TEST

TU_MAIN("unit_os", "os", 60, t_os_map, t_os_map_aligned, t_os_purge, t_os_remap, t_os_misc, t_addrmap)

/* White-box tests of the size classes (sizeclass.h, sizeclass.c).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma_core.la (no malloc replacement: this program's
 * malloc is glibc's).
 */
#include "testutil.h"

#include "internal.h"

static int is_pow2(size_t x) { return x && !(x & (x - 1)); }

START_TEST(t_class_sizes_monotone)
{
    ck_assert_uint_eq(class_size(1), MIN_ALIGN);
    for (unsigned c = 2; c < CLASS_COUNT; c++)
        ck_assert_msg(class_size(c) > class_size(c - 1),
                      "class %u (%zu) not above class %u (%zu)", c,
                      class_size(c), c - 1, class_size(c - 1));
    /* the last class is the largest non-huge block */
    ck_assert_uint_eq(class_size(CLASS_COUNT - 1), LARGE_MAX);
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        ck_assert_msg(class_size(c) % MIN_ALIGN == 0,
                      "class %u size %zu not a multiple of %zu", c,
                      class_size(c), MIN_ALIGN);
        ck_assert(class_size(c) <= UINT32_MAX); /* page->block_size */
    }
}
END_TEST

START_TEST(t_class_of_size_covers_tightly)
{
    for (size_t s = 0; s <= LARGE_MAX; s++) {
        unsigned c = class_of_size(s);
        if (c < 1 || c >= CLASS_COUNT)
            ck_abort_msg("class_of_size(%zu) = %u out of range", s, c);
        if (class_size(c) < s)
            ck_abort_msg("class_of_size(%zu) = %u holds only %zu", s, c,
                         class_size(c));
        if (!class_in_use(c))
            ck_abort_msg("class_of_size(%zu) = %u, a class not in use", s, c);
        /* the smallest class in use that fits */
        for (unsigned d = c - 1; d >= 1 && d + 2 >= c; d--)
            if (class_in_use(d) && class_size(d) >= s)
                ck_abort_msg("class_of_size(%zu) = %u, but class %u (%zu) fits",
                             s, c, d, class_size(d));
    }
}
END_TEST

/* Internal waste at most 25% (or under 16 bytes for tiny sizes) up to
 * SMALL_MAX, at most 50% above (two classes per doubling), and the
 * classes above SMALL_MAX are exactly the even ones. */
START_TEST(t_class_waste_bounded)
{
    for (size_t s = 1; s <= LARGE_MAX; s++) {
        size_t got = class_size(class_of_size(s));
        size_t waste = got - s;
        if (s <= SMALL_MAX && waste >= MIN_ALIGN && waste * 4 > s)
            ck_abort_msg("size %zu -> class size %zu: waste %zu > 25%%", s,
                         got, waste);
        if (s > SMALL_MAX && waste * 2 > s)
            ck_abort_msg("size %zu -> class size %zu: waste %zu > 50%%", s,
                         got, waste);
    }
    ck_assert_uint_eq(class_size(CLASS_SMALL_LAST), SMALL_MAX);
    for (unsigned c = 1; c < CLASS_COUNT; c++)
        ck_assert_uint_eq(class_in_use(c), class_of_size(class_size(c)) == c);
}
END_TEST

START_TEST(t_class_align)
{
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        size_t a = class_align(c);
        ck_assert_msg(is_pow2(a), "class_align(%u) = %zu", c, a);
        ck_assert_msg(class_size(c) % a == 0, "class %u: %zu %% %zu", c,
                      class_size(c), a);
        /* largest such power of two */
        ck_assert_msg(class_size(c) % (2 * a) != 0,
                      "class_align(%u) = %zu is not the largest", c, a);
        ck_assert(a >= MIN_ALIGN);
    }
    /* power-of-two classes exist regularly (bounds aligned waste) */
    for (size_t p = 16; p <= LARGE_MAX; p *= 2) {
        unsigned c = class_of_size(p);
        ck_assert_msg(class_size(c) == p, "no class of size %zu", p);
        ck_assert_uint_eq(class_align(c), p);
    }
}
END_TEST

START_TEST(t_class_kind)
{
    enum segment_kind prev = KIND_SMALL;
    for (unsigned c = 1; c < CLASS_COUNT; c++) {
        enum segment_kind k = class_kind(c);
        size_t s = class_size(c);
        ck_assert_msg(k >= prev, "class kinds not monotone at %u", c);
        prev = k;
        switch (k) {
        case KIND_SMALL: ck_assert(s <= SMALL_MAX); break;
        case KIND_MEDIUM: ck_assert(s > SMALL_MAX && s <= MEDIUM_MAX); break;
        case KIND_LARGE: ck_assert(s > MEDIUM_MAX && s <= LARGE_PAGE_MAX); break;
        case KIND_XLARGE: ck_assert(s > LARGE_PAGE_MAX && s <= LARGE_MAX); break;
        default: ck_abort_msg("class %u has kind %d", c, (int)k);
        }
    }
}
END_TEST

/* class_for(size, align): the first class big enough and aligned enough. */
START_TEST(t_class_for)
{
    for (size_t a = 1; a <= LARGE_MAX; a *= 2) {
        for (size_t s = 0; s <= LARGE_MAX; s += (s < 4096 ? 1 : 61)) {
            unsigned c = class_for(s, a);
            if (c < 1 || c >= CLASS_COUNT)
                ck_abort_msg("class_for(%zu, %zu) = %u", s, a, c);
            size_t cs = class_size(c);
            if (cs < s)
                ck_abort_msg("class_for(%zu, %zu): class %u holds %zu", s, a,
                             c, cs);
            if (class_align(c) < a && a > MIN_ALIGN)
                ck_abort_msg("class_for(%zu, %zu): class %u aligned to %zu",
                             s, a, c, class_align(c));
            if (!class_in_use(c))
                ck_abort_msg("class_for(%zu, %zu) = %u, a class not in use", s, a, c);
            /* minimal */
            for (unsigned d = 1; d < c; d++)
                if (class_in_use(d) && class_size(d) >= s &&
                    (class_align(d) >= a || a <= MIN_ALIGN))
                    ck_abort_msg("class_for(%zu, %zu) = %u but %u fits", s, a,
                                 c, d);
            /* waste at most a factor of two over max(size, align) */
            size_t need = s > a ? s : a;
            if (need < MIN_ALIGN)
                need = MIN_ALIGN;
            if (cs > 2 * need)
                ck_abort_msg("class_for(%zu, %zu) = %zu bytes", s, a, cs);
            if (a <= MIN_ALIGN && c != class_of_size(s))
                ck_abort_msg("class_for(%zu, %zu) != class_of_size", s, a);
        }
    }
}
END_TEST

/* The fast path indexes heap->direct[(size + 15) >> 4]; page.c fills slot
 * i with class c for class_size(c-1)/16 < i <= class_size(c)/16.  Every
 * size <= DIRECT_MAX must land in the slot of its own class. */
START_TEST(t_direct_table_consistent)
{
    ck_assert_uint_eq(DIRECT_COUNT, DIRECT_MAX / 16 + 1);
    for (size_t s = 0; s <= DIRECT_MAX; s++) {
        size_t slot = (s + 15) >> 4;
        unsigned c = class_of_size(s);
        size_t lo = c == 1 ? 0 : class_size(c - 1) / 16 + 1;
        size_t hi = class_size(c) / 16;
        ck_assert_msg(slot < DIRECT_COUNT, "size %zu: slot %zu", s, slot);
        ck_assert_msg(lo <= slot && slot <= hi,
                      "size %zu: slot %zu outside class %u's [%zu, %zu]", s,
                      slot, c, lo, hi);
    }
}
END_TEST

/* The table of alloc.c's 1-64 KiB fast path gives class_of_size's class
 * for every size it serves. */
START_TEST(t_class_mid_table)
{
    for (size_t s = DIRECT_MAX + 1; s <= MEDIUM_MAX; s++)
        if (class_of_mid_size(s) != class_of_size(s))
            ck_abort_msg("class_of_mid_size(%zu) = %u, class_of_size %u", s,
                         class_of_mid_size(s), class_of_size(s));
}
END_TEST

/* classes_go_fine (under an address-space limit): every size above
 * SMALL_MAX gets the tightest of the four classes per doubling, the 1-64
 * KiB table follows, and class_for_coarse still names the class a block
 * from before had.  Last: the switch is for good (in this process). */
START_TEST(t_fine_classes)
{
    static uint8_t coarse[LARGE_MAX + 1];
    for (size_t s = SMALL_MAX + 1; s <= LARGE_MAX; s++)
        coarse[s] = (uint8_t)class_of_size(s);
    ck_assert(!class_fine);
    classes_go_fine();
    ck_assert(class_fine);
    unsigned odd = 0;
    for (size_t s = SMALL_MAX + 1; s <= LARGE_MAX; s++) {
        unsigned c = class_of_size(s);
        if (class_size(c) < s || class_size(c - 1) >= s)
            ck_abort_msg("fine class_of_size(%zu) = %u (%zu B), class below %zu B", s, c, class_size(c),
                         class_size(c - 1));
        if ((class_size(c) - s) * 5 > class_size(c)) /* at most a fifth of the block wasted */
            ck_abort_msg("fine class_of_size(%zu) = %zu B", s, class_size(c));
        if (class_for_coarse(s, MIN_ALIGN) != coarse[s])
            ck_abort_msg("class_for_coarse(%zu) = %u, was %u", s, class_for_coarse(s, MIN_ALIGN), coarse[s]);
        if (s <= MEDIUM_MAX && class_of_mid_size(s) != c)
            ck_abort_msg("class_of_mid_size(%zu) = %u, class_of_size %u", s, class_of_mid_size(s), c);
        odd += c & 1;
    }
    ck_assert_uint_gt(odd, (LARGE_MAX - SMALL_MAX) / 3);
    for (size_t a = MIN_ALIGN; a <= 65536; a <<= 1)
        for (size_t s = SMALL_MAX + 1; s <= LARGE_MAX; s += 977) {
            unsigned c = class_for(s, a), k = class_for_coarse(s, a);
            ck_assert_msg(class_size(c) >= s && class_align(c) >= a, "class_for(%zu, %zu) = %u", s, a, c);
            ck_assert_msg(class_size(k) >= s && class_align(k) >= a && !(k & 1),
                          "class_for_coarse(%zu, %zu) = %u", s, a, k);
        }
}
END_TEST

TU_MAIN("unit_sizeclass", "sizeclass", 60, t_class_sizes_monotone, t_class_of_size_covers_tightly, t_class_waste_bounded, t_class_align, t_class_kind, t_class_for, t_direct_table_consistent, t_class_mid_table, t_fine_classes)

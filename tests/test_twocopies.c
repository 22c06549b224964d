/* Two copies of emma in one process (each linked statically into its own
 * shared object, symbols not exported) must not share anything: a pointer
 * from copy A is owned by A and not by B, and the other way round, from
 * several threads.  This program's own malloc stays glibc's.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE 1
#include "testutil.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

void *a_alloc(size_t size, size_t align);
void a_dealloc(void *p, size_t size, size_t align);
void a_free(void *p);
int a_owns(const void *p);
size_t a_usable(const void *p);
void *b_alloc(size_t size, size_t align);
void b_dealloc(void *p, size_t size, size_t align);
void b_free(void *p);
int b_owns(const void *p);
size_t b_usable(const void *p);

START_TEST(t_no_leaked_symbols)
{
    /* neither object exports emma's API, and malloc is not emma's */
    ck_assert_ptr_null(dlsym(RTLD_DEFAULT, "emma_alloc"));
    ck_assert_ptr_null(dlsym(RTLD_DEFAULT, "emma_owns"));
    void *m = malloc(100);
    TU_ASSERT(!a_owns(m));
    TU_ASSERT(!b_owns(m));
    free(m);
}
END_TEST

START_TEST(t_ownership)
{
    const size_t sizes[] = {0, 1, 16, 100, 1000, 9000, 70000, 500000,
                            3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *pa = a_alloc(sizes[i], 16), *pb = b_alloc(sizes[i], 16);
        TU_ASSERT((pa) != NULL);
        TU_ASSERT((pb) != NULL);
        TU_ASSERT_MSG(a_owns(pa) && !b_owns(pa),
                      "size %zu: A's block owned by A %d, by B %d", sizes[i],
                      a_owns(pa), b_owns(pa));
        TU_ASSERT_MSG(b_owns(pb) && !a_owns(pb),
                      "size %zu: B's block owned by B %d, by A %d", sizes[i],
                      b_owns(pb), a_owns(pb));
        TU_ASSERT(a_usable(pa) >= sizes[i]);
        TU_ASSERT(b_usable(pb) >= sizes[i]);
        tu_fill(pa, sizes[i], 1);
        tu_fill(pb, sizes[i], 2);
        TU_ASSERT(tu_check(pa, sizes[i], 1) < 0);
        TU_ASSERT(tu_check(pb, sizes[i], 2) < 0);
        a_dealloc(pa, sizes[i], 16);
        b_free(pb);
    }
}
END_TEST

enum { TC_THREADS = 4, TC_ITERS = 20000 };
static atomic_long tc_errors;

static void *tc_worker(void *arg)
{
    uint64_t rng = 11 + (uintptr_t)arg;
    void *pa[64] = {0}, *pb[64] = {0};
    size_t sa[64] = {0}, sb[64] = {0};
    for (int i = 0; i < TC_ITERS; i++) {
        unsigned k = (unsigned)(tu_rand(&rng) % 64);
        if (pa[k]) {
            if (!a_owns(pa[k]) || b_owns(pa[k]) ||
                tu_check(pa[k], sa[k], (uintptr_t)pa[k]) >= 0)
                atomic_fetch_add(&tc_errors, 1);
            a_dealloc(pa[k], sa[k], 16);
        }
        if (pb[k]) {
            if (!b_owns(pb[k]) || a_owns(pb[k]) ||
                tu_check(pb[k], sb[k], (uintptr_t)pb[k]) >= 0)
                atomic_fetch_add(&tc_errors, 1);
            b_dealloc(pb[k], sb[k], 16);
        }
        sa[k] = (size_t)(tu_rand(&rng) % 5000);
        sb[k] = (size_t)(tu_rand(&rng) % 5000);
        pa[k] = a_alloc(sa[k], 16);
        pb[k] = b_alloc(sb[k], 16);
        if (!pa[k] || !pb[k]) {
            atomic_fetch_add(&tc_errors, 1);
            break;
        }
        tu_fill(pa[k], sa[k], (uintptr_t)pa[k]);
        tu_fill(pb[k], sb[k], (uintptr_t)pb[k]);
    }
    for (int k = 0; k < 64; k++) {
        if (pa[k])
            a_free(pa[k]);
        if (pb[k])
            b_free(pb[k]);
    }
    return NULL;
}

START_TEST(t_threads)
{
    pthread_t th[TC_THREADS];
    for (int i = 0; i < TC_THREADS; i++)
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, tc_worker, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < TC_THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&tc_errors), 0);
}
END_TEST

TU_MAIN("twocopies", "twocopies", 120, t_no_leaked_symbols, t_ownership, t_threads)

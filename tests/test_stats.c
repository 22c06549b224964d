/* Statistics (emma_stats, emma_stats_print) and glibc's introspection and
 * tuning functions as libemma implements them (mallinfo2, mallinfo,
 * malloc_stats, malloc_info, mallopt, cfree).  Linked with libemma.la: the
 * program's malloc is emma's.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <time.h>

void cfree(void *ptr); /* glibc declares it no more */

static struct emma_stats snap(void)
{
    struct emma_stats s;
    memset(&s, 0xa5, sizeof s);
    ck_assert_int_eq(emma_stats(&s, sizeof s), 0);
    return s;
}

static const struct emma_stats_class *class_of(const struct emma_stats *s, size_t block)
{
    for (size_t i = 0; i < s->class_count; i++)
        if (s->classes[i].block_size == block)
            return &s->classes[i];
    return NULL;
}

/* Read everything from fd into buf (NUL-terminated). */
static size_t slurp(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    return n;
}

START_TEST(t_stats_header)
{
    struct emma_stats s = snap();
    ck_assert_uint_eq(s.version, EMMA_STATS_VERSION);
    ck_assert_uint_eq(s.size, sizeof s);
    ck_assert_uint_le(s.class_count, EMMA_STATS_MAX_CLASSES);
    ck_assert_uint_ge(s.class_count, 50);
    /* classes in increasing block size, page sizes of emma's kinds */
    for (size_t i = 0; i < s.class_count; i++) {
        ck_assert_uint_gt(s.classes[i].block_size, 0);
        if (i)
            ck_assert_uint_gt(s.classes[i].block_size, s.classes[i - 1].block_size);
        size_t ps = s.classes[i].page_size;
        ck_assert(ps == 64 << 10 || ps == 512 << 10 || ps == 1 << 20 || ps == 4 << 20);
    }
    ck_assert_uint_eq(s.classes[0].block_size, 16);
    ck_assert_uint_eq(s.classes[s.class_count - 1].block_size, 1 << 20);

    errno = 0;
    ck_assert_int_eq(emma_stats(NULL, sizeof s), -1);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_int_eq(emma_stats(&s, 4), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* An older caller's smaller struct: only that much is written. */
START_TEST(t_stats_versioned_size)
{
    unsigned char buf[sizeof(struct emma_stats) + 64];
    memset(buf, 0x5a, sizeof buf);
    size_t part = offsetof(struct emma_stats, peak_bytes_mapped);
    ck_assert_int_eq(emma_stats((struct emma_stats *)(void *)buf, part), 0);
    struct emma_stats *s = (struct emma_stats *)(void *)buf;
    ck_assert_uint_eq(s->size, part);
    ck_assert_uint_eq(s->version, EMMA_STATS_VERSION);
    for (size_t i = part; i < sizeof buf; i++)
        ck_assert_uint_eq(buf[i], 0x5a);
    /* A larger (newer) caller's struct: the library fills what it knows. */
    memset(buf, 0x5a, sizeof buf);
    ck_assert_int_eq(emma_stats((struct emma_stats *)(void *)buf, sizeof buf), 0);
    ck_assert_uint_eq(s->size, sizeof(struct emma_stats));
    for (size_t i = sizeof(struct emma_stats); i < sizeof buf; i++)
        ck_assert_uint_eq(buf[i], 0x5a);
}
END_TEST

/* The bound and the two pinned kinds of free memory under it: an emptied
 * page kept for the next block of its class (the thread's only page of
 * that class), and, with thread-local heaps, a page whose block another
 * thread freed into the depot. */
static void *free_it(void *p)
{
    free(p);
    return NULL;
}

START_TEST(t_stats_bound_and_pinned)
{
    struct emma_stats a = snap();
    ck_assert_uint_eq(a.free_resident_bound, (size_t)32 << 20); /* no EMMA_FREE_RESIDENT_MAX */
    ck_assert_uint_le(a.bytes_held, a.free_resident_bound / 8);
    ck_assert_uint_le(a.bytes_depot_pinned, a.free_resident_bound / 2);
    /* a size class no other test here uses: 2 blocks of 5000 B, freed */
    void *x = malloc(5000), *y = malloc(5000);
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(y);
    free(x);
    free(y);
    struct emma_stats b = snap();
    ck_assert_msg(b.bytes_held >= a.bytes_held + 2 * 5000,
                  "an emptied page kept for its class: held %zu -> %zu bytes", a.bytes_held,
                  b.bytes_held);
#if EMMA_CONFIG_TLS
    /* a 20000-byte block of this thread's page, freed by another thread */
    void *z = malloc(20000);
    ck_assert_ptr_nonnull(z);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, free_it, z), 0);
    pthread_join(t, NULL);
    struct emma_stats c = snap();
    ck_assert_msg(c.bytes_depot_pinned >= b.bytes_depot_pinned + 20000,
                  "a page pinned by a block in the depot: %zu -> %zu bytes",
                  b.bytes_depot_pinned, c.bytes_depot_pinned);
#endif
}
END_TEST

START_TEST(t_stats_blocks)
{
    enum { N = 3000 };
    static void *p[N];
    struct emma_stats a = snap();
    const struct emma_stats_class *ca = class_of(&a, 112);
    ck_assert_ptr_nonnull(ca);
    size_t in_use0 = ca->blocks_in_use;
    for (int i = 0; i < N; i++) {
        p[i] = malloc(100);
        ck_assert_ptr_nonnull(p[i]);
    }
    struct emma_stats b = snap();
    const struct emma_stats_class *cb = class_of(&b, 112);
    ck_assert_uint_eq(cb->blocks_in_use, in_use0 + N);
    ck_assert_uint_ge(cb->pages, (N * 112) / (64 << 10));
    ck_assert_uint_ge(b.bytes_in_use, a.bytes_in_use + N * 112);
    ck_assert_uint_ge(b.bytes_mapped, b.bytes_in_use);
    ck_assert_uint_ge(b.peak_bytes_mapped, b.bytes_mapped);
    ck_assert_uint_ge(b.segments, 1);
    ck_assert_uint_ge(b.mmap_calls, 1);
    ck_assert_uint_ge(b.heaps, 1);
    ck_assert_uint_ge(b.heaps_live, 1);
    for (int i = 0; i < N; i++)
        free(p[i]);
    struct emma_stats c = snap();
    ck_assert_uint_eq(class_of(&c, 112)->blocks_in_use, in_use0);
    ck_assert_uint_le(c.bytes_in_use, b.bytes_in_use - N * 112);
}
END_TEST

/* Blocks freed by another thread count as free at once, not in use until
 * their owner (here idle, waiting) collects them: an idle thread pool
 * whose work items main freed showed them all as in use. */
enum { REMOTE_N = 2000 };
static void *remote_blocks[REMOTE_N];
static pthread_mutex_t remote_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t remote_cv = PTHREAD_COND_INITIALIZER;
static int remote_stage;

static void *remote_owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < REMOTE_N; i++)
        remote_blocks[i] = malloc(100);
    pthread_mutex_lock(&remote_mu);
    remote_stage = 1;
    pthread_cond_broadcast(&remote_cv);
    while (remote_stage != 2)
        pthread_cond_wait(&remote_cv, &remote_mu);
    pthread_mutex_unlock(&remote_mu);
    return NULL;
}

START_TEST(t_stats_remote_frees_free)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_owner, NULL), 0);
    pthread_mutex_lock(&remote_mu);
    while (remote_stage != 1)
        pthread_cond_wait(&remote_cv, &remote_mu);
    pthread_mutex_unlock(&remote_mu);
    for (int i = 0; i < REMOTE_N; i++)
        ck_assert_ptr_nonnull(remote_blocks[i]);
    struct emma_stats a = snap();
    size_t class_a = class_of(&a, 112)->blocks_in_use;
    for (int i = 0; i < REMOTE_N; i++)
        free(remote_blocks[i]);
    struct emma_stats b = snap(); /* the owner has not run since */
    size_t class_b = class_of(&b, 112)->blocks_in_use;
    pthread_mutex_lock(&remote_mu);
    remote_stage = 2;
    pthread_cond_broadcast(&remote_cv);
    pthread_mutex_unlock(&remote_mu);
    pthread_join(t, NULL);
    ck_assert_msg(class_b + REMOTE_N <= class_a,
                  "112-byte blocks in use %zu before main freed the owner's %d, %zu after", class_a,
                  (int)REMOTE_N, class_b);
    ck_assert_msg(b.bytes_in_use + REMOTE_N * 112 <= a.bytes_in_use,
                  "bytes in use %zu before, %zu after freeing %d x 112 B", a.bytes_in_use, b.bytes_in_use,
                  (int)REMOTE_N);
}
END_TEST

START_TEST(t_stats_huge_and_purge)
{
    struct emma_stats a = snap();
    size_t n = 40 * TU_MIB;
    char *h = malloc(n);
    ck_assert_ptr_nonnull(h);
    memset(h, 1, n);
    struct emma_stats b = snap();
    ck_assert_uint_eq(b.huge_blocks, a.huge_blocks + 1);
    ck_assert_uint_ge(b.huge_bytes, a.huge_bytes + n);
    ck_assert_uint_ge(b.bytes_in_use, a.bytes_in_use + n);
    ck_assert_uint_ge(b.bytes_mapped, a.bytes_mapped + n);
    ck_assert_uint_gt(b.mmap_calls, a.mmap_calls);
    free(h); /* 40 MiB: more than the huge cache keeps resident: purged */
    struct emma_stats c = snap();
    ck_assert_uint_eq(c.huge_blocks, a.huge_blocks);
    ck_assert_uint_gt(c.madvise_calls, b.madvise_calls);
    ck_assert_uint_eq(c.huge_cached, b.huge_cached + 1);

    /* Free pages become "free resident"; emma_trim purges them. */
    enum { N = 400 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(30000);
        memset(p[i], 2, 30000);
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
    struct emma_stats d = snap();
    emma_trim();
    struct emma_stats e = snap();
    ck_assert_uint_gt(e.purges, d.purges);
    ck_assert_uint_gt(e.bytes_purged, d.bytes_purged);
    ck_assert_uint_gt(e.madvise_calls, d.madvise_calls);
    ck_assert_uint_le(e.bytes_free_resident, d.bytes_free_resident);
    /* and unmaps the huge cache's mappings */
    ck_assert_uint_eq(e.huge_cached, 0);
    ck_assert_uint_gt(e.munmap_calls, b.munmap_calls);
    ck_assert_uint_lt(e.bytes_mapped, b.bytes_mapped);
}
END_TEST

static void *thread_alloc(void *arg)
{
    void *p = malloc(64);
    free(p);
    return arg;
}

START_TEST(t_stats_heaps)
{
    if (strcmp(getenv("EMMA_TLS") ? getenv("EMMA_TLS") : "yes", "no") == 0)
        TU_SKIP("--disable-tls: heaps are shared slots, no dead thread's heap to reclaim");
    struct emma_stats a = snap();
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, thread_alloc, NULL), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
    }
    struct emma_stats b = snap();
    /* the first thread may make a heap; the next ones adopt the dead one's */
    ck_assert_uint_ge(b.heaps_reclaimed, a.heaps_reclaimed + 3);
    ck_assert_uint_le(b.heaps, a.heaps + 1);
}
END_TEST

/* Walks race with other threads mapping and unmapping segments and huge
 * blocks (emma_trim gives everything back each round): no snapshot may
 * crash or report nonsense. */
static volatile int churn_stop;

static void *churn_thread(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
    static __thread void *p[128];
    while (!churn_stop) {
        for (int i = 0; i < 128; i++) {
            uint64_t r = tu_rand(&seed);
            size_t sz = r % 3 == 0 ? (size_t)(r >> 20) % (2 * TU_MIB) + 1 : (size_t)(r >> 40) % 70000 + 1;
            p[i] = malloc(sz);
            TU_ASSERT(p[i] != NULL);
            memset(p[i], 1, sz < 64 ? sz : 64);
        }
        for (int i = 0; i < 128; i++)
            free(p[i]);
        emma_trim();
    }
    return NULL;
}

START_TEST(t_stats_concurrent)
{
    enum { THREADS = 3 };
    pthread_t t[THREADS];
    churn_stop = 0;
    for (uintptr_t i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, churn_thread, (void *)(i + 1)), 0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long snapshots = 0;
    do {
        struct emma_stats s = snap();
        TU_ASSERT(s.version == EMMA_STATS_VERSION && s.classes[0].block_size == 16);
        TU_ASSERT(s.segments < 100000 && s.huge_blocks < 100000);
        snapshots++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 < 1500);
    churn_stop = 1;
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    struct emma_stats s = snap();
    ck_assert_uint_gt(s.munmap_calls, 0);
    ck_assert_int_gt(snapshots, 10);
}
END_TEST

START_TEST(t_stats_print)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    void *p = malloc(1000);
    ck_assert_int_eq(emma_stats_print(fds[1]), 0);
    close(fds[1]);
    static char buf[64 << 10];
    slurp(fds[0], buf, sizeof buf);
    close(fds[0]);
    free(p);
    ck_assert_msg(strstr(buf, "emma " EMMA_VERSION_STRING) != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "in use") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "mapped") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "mmap") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "      1024 ") != NULL, "size class 1024 not listed: %s", buf);
    ck_assert_int_eq(emma_stats_print(-1), -1);
}
END_TEST

START_TEST(t_mallinfo)
{
    enum { N = 1000 };
    static void *p[N];
    struct mallinfo2 a = mallinfo2();
    for (int i = 0; i < N; i++)
        p[i] = malloc(100 << 10); /* 100 MB in 100 KiB blocks */
    char *h = malloc(8 * TU_MIB);
    struct mallinfo2 b = mallinfo2();
    ck_assert_uint_ge(b.uordblks, a.uordblks + (size_t)N * (100 << 10));
    ck_assert_uint_ge(b.arena, b.uordblks);
    ck_assert_uint_eq(b.hblks, a.hblks + 1);
    ck_assert_uint_ge(b.hblkhd, a.hblkhd + 8 * TU_MIB);
    ck_assert_uint_eq(b.usmblks, 0);
    struct mallinfo old = mallinfo();
    ck_assert_int_eq(old.hblks, (int)b.hblks);
    ck_assert_int_ne(old.uordblks, 0);
    for (int i = 0; i < N; i++)
        free(p[i]);
    free(h);
    struct mallinfo2 c = mallinfo2();
    ck_assert_uint_le(c.uordblks + (size_t)N * (100 << 10), b.uordblks);
    ck_assert_uint_eq(c.hblks, a.hblks);
}
END_TEST

/* malloc_stats prints glibc's lines on stderr. */
START_TEST(t_malloc_stats)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    void *p = malloc(5000);
    malloc_stats();
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    static char buf[16 << 10];
    slurp(fds[0], buf, sizeof buf);
    close(fds[0]);
    free(p);
    ck_assert_msg(strstr(buf, "Arena 0:\nsystem bytes     = ") == buf, "%s", buf);
    ck_assert_msg(strstr(buf, "in use bytes     = ") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "Total (incl. mmap):\n") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "max mmap regions = ") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "max mmap bytes   = ") != NULL, "%s", buf);
    /* the in-use figure is emma's, not glibc's idle arena */
    unsigned long used = strtoul(strstr(buf, "in use bytes     = ") + 19, NULL, 10);
    ck_assert_uint_ge(used, 5000);
}
END_TEST

START_TEST(t_malloc_info)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    void *p = malloc(300), *q = malloc(3 * TU_MIB);
    free(malloc(300)); /* a free block of the 320-byte class */
    ck_assert_int_eq(malloc_info(0, f), 0);
    free(p);
    free(q);
    rewind(f);
    static char buf[256 << 10];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_msg(strncmp(buf, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", 43) == 0, "%s", buf);
    ck_assert_msg(strstr(buf, "</sizes>\n") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "<total type=\"mmap\" count=\"") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "<system type=\"current\" size=\"") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "<aspace type=\"total\" size=\"") != NULL, "%s", buf);
    ck_assert_msg(n > 10 && strcmp(buf + n - 10, "</malloc>\n") == 0, "%s", buf);
    ck_assert_msg(strstr(buf, "<size from=\"257\" to=\"320\" total=\"") != NULL, "%s", buf);
    /* the one huge block */
    ck_assert_msg(strstr(buf, "<total type=\"mmap\" count=\"1\" size=\"") != NULL, "%s", buf);

    errno = 0;
    ck_assert_int_eq(malloc_info(1, stdout), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(t_mallopt)
{
    /* honoured: mapped onto emma's knobs */
    ck_assert_int_eq(mallopt(M_TRIM_THRESHOLD, 64 << 20), 1);
    ck_assert_int_eq(mallopt(M_TRIM_THRESHOLD, -1), 1); /* glibc: never trim */
    /* not honoured: 0, mallopt's failure value */
    ck_assert_int_eq(mallopt(M_MXFAST, 0), 0);
    ck_assert_int_eq(mallopt(M_ARENA_MAX, 2), 0);
    ck_assert_int_eq(mallopt(M_MMAP_MAX, 0), 0);
    ck_assert_int_eq(mallopt(M_PERTURB, 0x55), 0);
    ck_assert_int_eq(mallopt(12345, 1), 0);
    ck_assert_int_eq(mallopt(M_TRIM_THRESHOLD, 8 << 20), 1);
}
END_TEST

START_TEST(t_cfree)
{
    void *p = malloc(10);
    ck_assert(emma_owns(p));
    cfree(p);
    cfree(NULL);
    void *q = malloc(10);
    ck_assert_ptr_eq(p, q); /* the block went back to emma */
    free(q);
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *t = tcase_create("stats");
    tcase_set_timeout(t, 20);
    tcase_add_test(t, t_stats_header);
    tcase_add_test(t, t_stats_versioned_size);
    tcase_add_test(t, t_stats_blocks);
    tcase_add_test(t, t_stats_bound_and_pinned);
    tcase_add_test(t, t_stats_remote_frees_free);
    tcase_add_test(t, t_stats_huge_and_purge);
    tcase_add_test(t, t_stats_heaps);
    tcase_add_test(t, t_stats_print);
    tcase_add_test(t, t_stats_concurrent);
    suite_add_tcase(s, t);
    TCase *g = tcase_create("glibc");
    tcase_set_timeout(g, 20);
    tcase_add_test(g, t_mallinfo);
    tcase_add_test(g, t_malloc_stats);
    tcase_add_test(g, t_malloc_info);
    tcase_add_test(g, t_mallopt);
    tcase_add_test(g, t_cfree);
    suite_add_tcase(s, g);
    return s;
}

int main(void) { return tu_run(stats_suite()); }

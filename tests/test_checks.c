/* --enable-boundary-checks: every misuse listed in doc/CONTRACT.md writes
 * exactly one documented line to stderr and kills the process with SIGABRT.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Each misuse runs in a child forked by expect_abort(), whose stderr is a
 * pipe: the parent compares the complete output with the expected line and
 * checks the signal.  Only built when EMMA_CHECKS is true.
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#if !EMMA_CONFIG_CHECKS
#error "test_checks needs --enable-boundary-checks"
#endif

void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

static const char NOT_EMMA[] = "pointer was not allocated by emma";
static const char DOUBLE[] = "double free";
static const char INTERIOR[] = "interior or misaligned pointer";
static const char BAD_SIZE[] = "size does not match the allocation";
static const char BAD_ALIGN[] = "alignment does not match the allocation";
static const char NOT_POW2[] = "alignment is not a power of two";

/* The documented line: "emma: <function>: <problem> (<pointer in hex>)\n",
 * the pointer written like printf's %p ("0x" and lowercase hex digits). */
static void expected_line(char *buf, size_t n, const char *func,
                          const char *problem, uintptr_t value)
{
    snprintf(buf, n, "emma: %s: %s (0x%lx)\n", func, problem,
             (unsigned long)value);
}

typedef void (*misuse_fn)(void);

/* Copy s with newlines shown as \n, for one-line failure messages. */
static const char *printable(char *out, size_t n, const char *s)
{
    size_t k = 0;
    for (; *s && k + 3 < n; s++) {
        if (*s == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *s;
        }
    }
    out[k] = '\0';
    return out;
}

/* Run fn in a child with stderr on a pipe; require SIGABRT and exactly the
 * expected output. */
static void expect_abort_line(misuse_fn fn, const char *func,
                              const char *problem, uintptr_t value,
                              const char *what)
{
    char want[512], got[4096];

    expected_line(want, sizeof want, func, problem, value);
    int status = tu_child_stderr(fn, got, sizeof got);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "%s: child %s %d, want SIGABRT; stderr: \"%s\"", what,
                  WIFSIGNALED(status) ? "killed by signal" : "exited with",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                  got);
    if (strcmp(got, want) != 0) {
        char g[4096], w[512];
        ck_abort_msg("%s: stderr is \"%s\", want \"%s\"", what,
                     printable(g, sizeof g, got), printable(w, sizeof w, want));
    }
}

static char stack_anchor_dummy; /* a static (non-heap) object */

/* ------------------------------------------------------------------ */
/* Pointers the misuses pass.  They are computed in the parent before the
 * fork (the child inherits the same memory), so the expected text is
 * known without talking to the child. */

static void *stack_ptr;       /* address on the parent's stack */
static void *mmap_ptr;        /* glibc/kernel memory, not emma's */
static unsigned char *small;  /* a live malloc(64) block */
static unsigned char *medium; /* a live malloc(20000) block */
static unsigned char *large;  /* a live malloc(300000) block */
static unsigned char *huge;   /* a live malloc(3 MiB) block */
static unsigned char *freed;  /* a malloc(48) block, already freed */
static unsigned char *freed_med; /* a malloc(30000) block, already freed */
static unsigned char *ealn;   /* emma_alloc(100, 4096) */
static unsigned char *e64;    /* emma_alloc(64, 16) */
static unsigned char *ehuge;  /* emma_alloc(3 MiB, 16) */
static void *fresh_b;         /* emma_alloc(200, 64) */
static unsigned char *e112;   /* emma_alloc(100, 16) */
static unsigned char *freed_huge; /* a malloc(3 MiB) block, already freed */

static void setup(void)
{
    stack_ptr = &stack_anchor_dummy; /* tests set a real stack address */
    mmap_ptr = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(mmap_ptr != MAP_FAILED);
    small = malloc(64);
    medium = malloc(20000);
    large = malloc(300000);
    huge = malloc(3 << 20);
    freed = malloc(48);
    free(freed);
    freed_med = malloc(30000);
    free(freed_med);
    ealn = emma_alloc(100, 4096);
    e64 = emma_alloc(64, 16);
    /* e64 must not be 1 MiB aligned (emma_dealloc(e64, 64, 1 MiB) would be
     * no misuse): if it is (the first block of a page at a 1 MiB boundary),
     * the next block of its page, 64 bytes on, is not */
    if (e64 && !((uintptr_t)e64 & ((1 << 20) - 1)))
        e64 = emma_alloc(64, 16);
    ck_assert_msg(e64 && ((uintptr_t)e64 & ((1 << 20) - 1)), "no e64 off a 1 MiB boundary");
    ehuge = emma_alloc(3 << 20, 16);
    e112 = emma_alloc(100, 16);
    ck_assert_ptr_nonnull(e112);
    ck_assert(small && medium && large && huge && ealn && e64 && ehuge);
    freed_huge = malloc(3 << 20); /* last, so nothing reuses its range */
    ck_assert_ptr_nonnull(freed_huge);
    free(freed_huge);
}

/* Foreign pointers ------------------------------------------------- */
static void m_free_stack(void) { free(stack_ptr); }
static void m_free_mmap(void) { free(mmap_ptr); }
static void m_free_static(void) { free(&stack_anchor_dummy); }
static void m_realloc_stack(void) { (void)!realloc(stack_ptr, 100); }
static void m_free_sized_mmap(void) { free_sized(mmap_ptr, 64); }
static void m_free_aligned_sized_mmap(void) { free_aligned_sized(mmap_ptr, 64, 64); }
static void m_usable_mmap(void) { (void)!malloc_usable_size(mmap_ptr); }
static void m_emma_dealloc_stack(void) { emma_dealloc(stack_ptr, 64, 16); }
static void m_emma_realloc_mmap(void) { (void)!emma_realloc(mmap_ptr, 64, 16, 128); }
static void m_emma_free_mmap(void) { emma_free(mmap_ptr); }
static void m_emma_usable_stack(void) { (void)!emma_usable_size(stack_ptr); }

/* Double frees ----------------------------------------------------- */
static void m_double_free(void) { free(freed); }
static void m_double_free_med(void) { free(freed_med); }
static void m_double_free_sized(void) { free_sized(freed, 48); }
static void m_double_emma_free(void) { emma_free(freed); }
static void m_double_emma_dealloc(void) { emma_dealloc(freed, 48, 16); }
static void m_double_free_huge(void) { free(freed_huge); }
static void *free_in_thread(void *p)
{
    free(p);
    return NULL;
}
static void m_double_free_thread(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, free_in_thread, freed) == 0)
        pthread_join(t, NULL);
}
static void m_double_emma_fresh(void)
{
    emma_dealloc(fresh_b, 200, 64);
    emma_dealloc(fresh_b, 200, 64);
}

/* Interior and misaligned pointers --------------------------------- */
static void m_interior_small(void) { free(small + 16); }
static void m_misaligned_small(void) { free(small + 1); }
static void m_interior_medium(void) { free(medium + 4096); }
static void m_interior_large(void) { free(large + 65536); }
static void m_interior_huge(void) { free(huge + 8192); }
static void m_misaligned_huge(void) { free(huge + 8); }
static void m_interior_realloc(void) { (void)!realloc(small + 32, 10); }
static void m_interior_usable(void) { (void)!malloc_usable_size(medium + 48); }
static void m_interior_emma_dealloc(void) { emma_dealloc(e64 + 16, 48, 16); }
static void m_interior_emma_free(void) { emma_free(ealn + 64); }
static void m_interior_emma_usable(void) { (void)!emma_usable_size(ehuge + 4096); }

/* Size and alignment mismatches ------------------------------------ */
static void m_dealloc_wrong_size(void) { emma_dealloc(e64, 4096, 16); }
/* e112 has class 112 (alignment 16): no alignment makes size 40 land in
 * that class, so the size is unambiguously the problem.  (Not e64 with size
 * 8: emma_alloc(8, 64) would also give a 64-byte block, so "alignment does
 * not match" is an equally valid diagnosis there.) */
static void m_dealloc_wrong_size_small(void) { emma_dealloc(e112, 40, 16); }
static void m_dealloc_wrong_size_huge(void) { emma_dealloc(ehuge, 9 << 20, 16); }
static void m_realloc_wrong_size(void) { (void)!emma_realloc(e64, 3000, 16, 5000); }
static void m_free_sized_wrong(void) { free_sized(small, 5000); }
static void m_dealloc_wrong_align(void) { emma_dealloc(ealn, 100, 16); }
static void m_dealloc_wrong_align_big(void) { emma_dealloc(e64, 64, 1 << 20); }
static void m_free_aligned_sized_wrong(void) { free_aligned_sized(ealn, 16, 100); }

/* Bad alignments at allocation ------------------------------------- */
static void m_alloc_align3(void) { (void)!emma_alloc(64, 3); }
static void m_alloc_align24(void) { (void)!emma_alloc(64, 24); }
static void m_alloc_align0(void) { (void)!emma_alloc(64, 0); }
static void m_realloc_align3(void) { (void)!emma_realloc(e64, 64, 3, 128); }
static void m_dealloc_align3(void) { emma_dealloc(e64, 64, 3); }
static void m_alloc_zeroed_align48(void) { (void)!emma_alloc_zeroed(64, 48); }

/* ------------------------------------------------------------------ */
/* The table: one Check test per misuse. */

#define P(expr) ((uintptr_t)(expr))
struct misuse {
    const char *what;
    misuse_fn fn;
    const char *func;
    const char *problem;
    int which; /* the pointer printed, see culprit() */
    size_t offset;
};

enum { STACK, MMAP, STATIC, FREED, FREED_MED, SMALL, MEDIUM, LARGE, HUGE,
       EALN, E64, EHUGE, FRESH, FREED_HUGE, E112, NONE };

static uintptr_t culprit(int which, size_t offset)
{
    switch (which) {
    case STACK: return P(stack_ptr) + offset;
    case MMAP: return P(mmap_ptr) + offset;
    case STATIC: return P(&stack_anchor_dummy) + offset;
    case FREED: return P(freed) + offset;
    case FREED_MED: return P(freed_med) + offset;
    case SMALL: return P(small) + offset;
    case MEDIUM: return P(medium) + offset;
    case LARGE: return P(large) + offset;
    case HUGE: return P(huge) + offset;
    case EALN: return P(ealn) + offset;
    case E64: return P(e64) + offset;
    case EHUGE: return P(ehuge) + offset;
    case FRESH: return P(fresh_b) + offset;
    case FREED_HUGE: return P(freed_huge) + offset;
    case E112: return P(e112) + offset;
    default: return 0; /* no pointer: the line shows 0x0 */
    }
}

static const struct misuse misuses[] = {
    /* foreign pointers */
    {"free(stack)", m_free_stack, "free", NOT_EMMA, STACK, 0},
    {"free(mmap)", m_free_mmap, "free", NOT_EMMA, MMAP, 0},
    {"free(static)", m_free_static, "free", NOT_EMMA, STATIC, 0},
    {"realloc(stack)", m_realloc_stack, "realloc", NOT_EMMA, STACK, 0},
    {"free_sized(mmap)", m_free_sized_mmap, "free_sized", NOT_EMMA, MMAP, 0},
    {"free_aligned_sized(mmap)", m_free_aligned_sized_mmap, "free_aligned_sized", NOT_EMMA, MMAP, 0},
    {"malloc_usable_size(mmap)", m_usable_mmap, "malloc_usable_size", NOT_EMMA, MMAP, 0},
    {"emma_dealloc(stack)", m_emma_dealloc_stack, "emma_dealloc", NOT_EMMA, STACK, 0},
    {"emma_realloc(mmap)", m_emma_realloc_mmap, "emma_realloc", NOT_EMMA, MMAP, 0},
    {"emma_free(mmap)", m_emma_free_mmap, "emma_free", NOT_EMMA, MMAP, 0},
    {"emma_usable_size(stack)", m_emma_usable_stack, "emma_usable_size", NOT_EMMA, STACK, 0},
    /* double frees (blocks up to 1 MiB: CONTRACT.md's detection limits) */
    {"free twice (small)", m_double_free, "free", DOUBLE, FREED, 0},
    {"free twice (medium)", m_double_free_med, "free", DOUBLE, FREED_MED, 0},
    {"free_sized twice", m_double_free_sized, "free_sized", DOUBLE, FREED, 0},
    {"emma_free twice", m_double_emma_free, "emma_free", DOUBLE, FREED, 0},
    {"emma_dealloc twice", m_double_emma_dealloc, "emma_dealloc", DOUBLE, FREED, 0},
    {"emma_dealloc twice in a row", m_double_emma_fresh, "emma_dealloc", DOUBLE, FRESH, 0},
    /* interior and misaligned pointers */
    {"free(small+16)", m_interior_small, "free", INTERIOR, SMALL, 16},
    {"free(small+1)", m_misaligned_small, "free", INTERIOR, SMALL, 1},
    {"free(medium+4096)", m_interior_medium, "free", INTERIOR, MEDIUM, 4096},
    {"free(large+65536)", m_interior_large, "free", INTERIOR, LARGE, 65536},
    {"free(huge+8192)", m_interior_huge, "free", INTERIOR, HUGE, 8192},
    {"free(huge+8)", m_misaligned_huge, "free", INTERIOR, HUGE, 8},
    {"realloc(small+32)", m_interior_realloc, "realloc", INTERIOR, SMALL, 32},
    {"malloc_usable_size(medium+48)", m_interior_usable, "malloc_usable_size", INTERIOR, MEDIUM, 48},
    {"emma_dealloc(e64+16)", m_interior_emma_dealloc, "emma_dealloc", INTERIOR, E64, 16},
    {"emma_free(ealn+64)", m_interior_emma_free, "emma_free", INTERIOR, EALN, 64},
    {"emma_usable_size(ehuge+4096)", m_interior_emma_usable, "emma_usable_size", INTERIOR, EHUGE, 4096},
    /* size and alignment mismatches */
    {"emma_dealloc(64-byte block, size 4096)", m_dealloc_wrong_size, "emma_dealloc", BAD_SIZE, E64, 0},
    {"emma_dealloc(112-byte block, size 40)", m_dealloc_wrong_size_small, "emma_dealloc", BAD_SIZE, E112, 0},
    {"emma_dealloc(3 MiB block, size 9 MiB)", m_dealloc_wrong_size_huge, "emma_dealloc", BAD_SIZE, EHUGE, 0},
    {"emma_realloc(64-byte block, old size 3000)", m_realloc_wrong_size, "emma_realloc", BAD_SIZE, E64, 0},
    {"free_sized(64-byte block, 5000)", m_free_sized_wrong, "free_sized", BAD_SIZE, SMALL, 0},
    {"emma_dealloc(4096-aligned block, align 16)", m_dealloc_wrong_align, "emma_dealloc", BAD_ALIGN, EALN, 0},
    {"emma_dealloc(16-aligned block, align 1 MiB)", m_dealloc_wrong_align_big, "emma_dealloc", BAD_ALIGN, E64, 0},
    {"free_aligned_sized(4096-aligned block, align 16)", m_free_aligned_sized_wrong, "free_aligned_sized", BAD_ALIGN, EALN, 0},
    /* alignments that are not powers of two (no pointer yet: 0x0) */
    {"emma_alloc(64, 3)", m_alloc_align3, "emma_alloc", NOT_POW2, NONE, 0},
    {"emma_alloc(64, 24)", m_alloc_align24, "emma_alloc", NOT_POW2, NONE, 0},
    {"emma_alloc(64, 0)", m_alloc_align0, "emma_alloc", NOT_POW2, NONE, 0},
    {"emma_alloc_zeroed(64, 48)", m_alloc_zeroed_align48, "emma_alloc_zeroed", NOT_POW2, NONE, 0},
    /* ... and with a pointer, the pointer is shown */
    {"emma_dealloc(e64, 64, align 3)", m_dealloc_align3, "emma_dealloc", NOT_POW2, E64, 0},
    {"emma_realloc(e64, 64, align 3, 128)", m_realloc_align3, "emma_realloc", NOT_POW2, E64, 0},
    /* a freed huge block waits in the process-wide huge cache, where a
     * second free is recognised (once the cache unmaps it, it is no longer
     * emma's: "not allocated") */
    {"free twice (huge)", m_double_free_huge, "free", DOUBLE, FREED_HUGE, 0},
    /* the second free from another thread */
    {"free twice, second in another thread", m_double_free_thread, "free", DOUBLE, FREED, 0},
};
#define N_MISUSES ((int)(sizeof misuses / sizeof misuses[0]))

START_TEST(t_misuse)
{
    const struct misuse *m = &misuses[_i];
    int on_stack;
    setup();
    stack_ptr = &on_stack;
    fresh_b = emma_alloc(200, 64);
    ck_assert_ptr_nonnull(fresh_b);
    fprintf(stderr, "# misuse %d: %s\n", _i, m->what);
    expect_abort_line(m->fn, m->func, m->problem, culprit(m->which, m->offset),
                      m->what);
}
END_TEST

/* The malloc API keeps its standard error returns with checks on. */
START_TEST(t_malloc_api_errors_not_fatal)
{
    void *p = (void *)0x1234;
    ck_assert_int_eq(posix_memalign(&p, 3, 64), EINVAL);
    ck_assert_int_eq(posix_memalign(&p, 24, 64), EINVAL);
    ck_assert_int_eq(posix_memalign(&p, 4, 64), EINVAL);
    ck_assert(p == (void *)0x1234);
    errno = 0;
    ck_assert_ptr_null(aligned_alloc(24, 64));
    ck_assert_int_eq(errno, EINVAL);
    /* memalign rounds such an alignment up, as glibc does */
    p = memalign(3, 64);
    ck_assert_ptr_nonnull(p);
    ck_assert(((uintptr_t)p & 3) == 0);
    free(p);
}
END_TEST

/* Correct use never trips a check: sizes anywhere in the block's class,
 * the exact alignment, usable sizes, any free function. */
START_TEST(t_correct_use_passes)
{
    for (size_t s = 0; s < 70000; s += (s < 2048 ? 1 : 97)) {
        void *p = malloc(s);
        ck_assert_ptr_nonnull(p);
        ck_assert(malloc_usable_size(p) >= s);
        free_sized(p, s);
        for (int sh = 0; sh <= 13; sh += 3) {
            size_t a = (size_t)1 << sh;
            p = emma_alloc(s, a);
            ck_assert_ptr_nonnull(p);
            ck_assert(emma_usable_size(p) >= s);
            void *q = emma_realloc(p, s, a, s + 100);
            ck_assert_ptr_nonnull(q);
            emma_dealloc(q, s + 100, a);
            p = aligned_alloc(a, s);
            ck_assert_ptr_nonnull(p);
            free_aligned_sized(p, a, s);
        }
    }
    void *h = emma_alloc(5 << 20, 1 << 21);
    ck_assert_ptr_nonnull(h);
    h = emma_realloc(h, 5 << 20, 1 << 21, 7 << 20);
    ck_assert_ptr_nonnull(h);
    emma_dealloc(h, 7 << 20, 1 << 21);
}
END_TEST

/* The same, through Check's own signal expectation. */
START_TEST(t_raise_double_free)
{
    void *p = malloc(40);
    free(p);
    free(p);
}
END_TEST

START_TEST(t_raise_foreign)
{
    long x[4];
    free(&x[2]);
}
END_TEST

static Suite *checks_suite(void)
{
    Suite *s = suite_create("checks");
    TCase *t = tcase_create("misuse");
    tcase_set_timeout(t, 120);
    tcase_add_loop_test(t, t_misuse, 0, N_MISUSES);
    tcase_add_test(t, t_malloc_api_errors_not_fatal);
    tcase_add_test(t, t_correct_use_passes);
    suite_add_tcase(s, t);
    /* Check's own signal expectation, on top of our harness */
    TCase *r = tcase_create("raise");
    tcase_add_test_raise_signal(r, t_raise_double_free, SIGABRT);
    tcase_add_test_raise_signal(r, t_raise_foreign, SIGABRT);
    suite_add_tcase(s, r);
    return s;
}

int main(void)
{
    return tu_run(checks_suite());
}

/* Differential fuzzer: random sequences of every malloc-API and emma-API
 * call, checked against a shadow model of what must hold.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Three threads, each with its own table of live blocks; blocks also move
 * between threads (through a shared exchange table) and are freed there.
 * For every block the model knows the size and alignment asked for, which
 * API made it (so the matching free is used, with the right size and
 * alignment), and the seed of the pattern written into it.  After every
 * call it checks: alignment, emma_usable_size >= size (and equal to
 * malloc_usable_size), emma_owns, zeroed memory from calloc and
 * emma_alloc_zeroed, contents kept by realloc, and the pattern of every
 * block when it is freed or resized.  Sizes go up to 40 MiB, alignments up
 * to 8 MiB.
 *
 * The run is bounded by EMMA_FUZZ_SECONDS (default 5) and FUZZ_OPS
 * operations per thread.  The seed is printed; EMMA_FUZZ_SEED=N reruns the
 * same operation sequences (each thread's sequence depends only on the
 * seed; the interleaving of the threads does not repeat exactly):
 *   EMMA_FUZZ_SEED=12345 ./tests/test_fuzz
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);

enum api { A_MALLOC, A_ALIGNED, A_EMMA };

struct blk {
    unsigned char *p;
    size_t size;  /* bytes asked for */
    size_t align; /* alignment asked for (A_EMMA: as passed to emma_*) */
    enum api api;
    uint64_t seed;
};

enum { THREADS = 3, LIVE = 192, SHARED = 64, FUZZ_OPS = 400000 };
#define LIVE_CAP ((size_t)160 << 20) /* bytes asked for, per thread */

static _Atomic(struct blk *) shared[SHARED];
static atomic_int stop;
static atomic_long ops_done;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[512];
static uint64_t the_seed;
static double deadline;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define FAIL(t, opn, ...)                                                      \
    do {                                                                       \
        pthread_mutex_lock(&fail_lock);                                        \
        if (!fail_msg[0]) {                                                    \
            int n_ = snprintf(fail_msg, sizeof fail_msg,                       \
                              "seed %llu thread %d op %ld: ",                  \
                              (unsigned long long)the_seed, (t), (long)(opn)); \
            snprintf(fail_msg + n_, sizeof fail_msg - (size_t)n_, __VA_ARGS__); \
        }                                                                      \
        pthread_mutex_unlock(&fail_lock);                                      \
        atomic_store(&stop, 1);                                                \
    } while (0)

/* ------------------------------------------------------------------ */
/* Patterns: whole blocks up to 8 KiB; bigger ones at both ends and at
 * eight 64-byte windows placed by the seed. */

#define WHOLE 8192
#define WIN 64

static size_t window_at(uint64_t seed, size_t size, int k)
{
    return (size_t)(tu_mix(seed + (uint64_t)k) % (size - WIN + 1));
}

static void fill(const struct blk *b)
{
    if (b->size <= WHOLE) {
        tu_fill(b->p, b->size, b->seed);
        return;
    }
    tu_fill(b->p, WIN, b->seed);
    tu_fill(b->p + b->size - WIN, WIN, b->seed + 1);
    for (int k = 0; k < 8; k++) {
        size_t at = window_at(b->seed, b->size, k);
        tu_fill(b->p + at, WIN, b->seed + 2 + (uint64_t)k);
    }
}

/* Check the pattern over the first `upto` bytes (the whole block when
 * upto >= size).  Windows are written in order, so a later window
 * overlapping an earlier one wins: check the last writer of each byte by
 * re-checking in the same order only where windows do not overlap later
 * ones. */
static int intact(const struct blk *b, size_t upto)
{
    if (upto > b->size)
        upto = b->size;
    if (b->size <= WHOLE)
        return tu_check(b->p, upto, b->seed) < 0;
    size_t at[10], len = WIN;
    uint64_t sd[10];
    at[0] = 0, sd[0] = b->seed;
    at[1] = b->size - WIN, sd[1] = b->seed + 1;
    for (int k = 0; k < 8; k++)
        at[2 + k] = window_at(b->seed, b->size, k), sd[2 + k] = b->seed + 2 + (uint64_t)k;
    for (int i = 0; i < 10; i++) {
        int overwritten = 0;
        for (int j = i + 1; j < 10; j++)
            overwritten |= at[j] < at[i] + len && at[i] < at[j] + len;
        if (overwritten || at[i] + len > upto)
            continue;
        if (tu_check(b->p + at[i], len, sd[i]) >= 0)
            return 0;
    }
    return 1;
}

static int zeroed(const struct blk *b)
{
    if (b->size <= WHOLE)
        return tu_all_zero(b->p, b->size);
    if (!tu_all_zero(b->p, WIN) || !tu_all_zero(b->p + b->size - WIN, WIN))
        return 0;
    for (int k = 0; k < 8; k++)
        if (!tu_all_zero(b->p + window_at(b->seed, b->size, k), WIN))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Random sizes and alignments */

static size_t rand_size(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    switch (r % 100) {
    case 0: return (size_t)(r >> 8) % ((size_t)40 << 20);            /* up to 40 MiB */
    case 1: case 2: return ((size_t)1 << 20) + (size_t)(r >> 8) % ((size_t)7 << 20);
    case 3: case 4: case 5: return (size_t)(r >> 8) % ((size_t)1 << 20);
    case 6: case 7: case 8: case 9: return (size_t)(r >> 8) % (64 << 10);
    case 10: return 0;
    case 11: case 12: return (size_t)1 << ((r >> 8) % 21);             /* powers of two */
    default: return (size_t)(r >> 8) % 1500;
    }
}

static size_t rand_align(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    if (r % 4)
        return (size_t)1 << ((r >> 8) % 13);      /* 1 .. 4 KiB */
    return (size_t)1 << ((r >> 8) % 24);          /* up to 8 MiB */
}

/* ------------------------------------------------------------------ */

struct th {
    int id;
    uint64_t rng;
    long op;
    struct blk live[LIVE];
    size_t live_bytes;
};

static void check_block(struct th *t, const struct blk *b, const char *what)
{
    size_t need = b->align > 16 ? b->align : 16;
    if (b->api == A_MALLOC)
        need = 16;
    if ((uintptr_t)b->p % need)
        FAIL(t->id, t->op, "%s: %p not aligned to %zu (size %zu)", what, (void *)b->p, need,
             b->size);
    size_t u = emma_usable_size(b->p);
    if (u < b->size)
        FAIL(t->id, t->op, "%s: usable %zu < size %zu (%p)", what, u, b->size, (void *)b->p);
    if (malloc_usable_size(b->p) != u)
        FAIL(t->id, t->op, "%s: malloc_usable_size %zu != emma_usable_size %zu", what,
             malloc_usable_size(b->p), u);
    if (!emma_owns(b->p) || !emma_owns(b->p + (b->size ? b->size - 1 : 0)))
        FAIL(t->id, t->op, "%s: emma_owns denies live block %p size %zu", what, (void *)b->p,
             b->size);
}

/* Free b the way its API calls for, after checking its contents. */
static void release(struct th *t, struct blk *b)
{
    if (!intact(b, b->size))
        FAIL(t->id, t->op, "block %p size %zu align %zu api %d corrupted", (void *)b->p, b->size,
             b->align, (int)b->api);
    check_block(t, b, "before free");
    uint64_t r = tu_rand(&t->rng);
    switch (b->api) {
    case A_MALLOC:
        switch (r % 4) {
        case 0: free(b->p); break;
        case 1: free_sized(b->p, b->size); break;
        case 2: emma_free(b->p); break;
        default: (void)!realloc(b->p, 0); break; /* frees, like glibc */
        }
        break;
    case A_ALIGNED:
        switch (r % 3) {
        case 0: free(b->p); break;
        case 1: free_aligned_sized(b->p, b->align, b->size); break;
        default: emma_free(b->p); break;
        }
        break;
    case A_EMMA:
        if (r % 2)
            emma_dealloc(b->p, b->size, b->align);
        else
            emma_free(b->p);
        break;
    }
    b->p = NULL;
}

/* A new block from a random allocating call. */
static int make(struct th *t, struct blk *b, const char **name)
{
    uint64_t r = tu_rand(&t->rng);
    size_t size = rand_size(&t->rng), align = rand_align(&t->rng);
    int zero = 0;
    b->api = A_MALLOC;
    b->align = 16;
    b->p = NULL;
    switch (r % 13) {
    case 0: *name = "malloc"; b->p = malloc(size); break;
    case 1: {
        size_t n = 1 + (size_t)(r >> 8) % 16, each = size / n;
        *name = "calloc";
        size = n * each;
        b->p = calloc(n, each);
        zero = 1;
        break;
    }
    case 2: *name = "realloc(NULL)"; b->p = realloc(NULL, size); break;
    case 3: {
        size_t n = 1 + (size_t)(r >> 8) % 8, each = size / n;
        *name = "reallocarray(NULL)";
        size = n * each;
        b->p = reallocarray(NULL, n, each);
        break;
    }
    case 4:
        *name = "aligned_alloc";
        if (align < 16)
            align = 16;
        b->p = aligned_alloc(align, size);
        b->api = A_ALIGNED, b->align = align;
        break;
    case 5: {
        void *q = (void *)1;
        *name = "posix_memalign";
        if (align < sizeof(void *))
            align = sizeof(void *);
        if (posix_memalign(&q, align, size) == 0)
            b->p = q;
        b->api = A_ALIGNED, b->align = align < 16 ? 16 : align;
        break;
    }
    case 6:
        *name = "memalign";
        b->p = memalign(align, size);
        b->api = A_ALIGNED, b->align = align < 16 ? 16 : align;
        break;
    case 7:
        *name = "valloc";
        b->p = valloc(size);
        b->api = A_ALIGNED, b->align = 4096;
        break;
    case 8:
        *name = "pvalloc";
        b->p = pvalloc(size);
        size = size ? (size + 4095) & ~(size_t)4095 : 4096;
        b->api = A_ALIGNED, b->align = 4096;
        break;
    case 9: case 10:
        *name = "emma_alloc";
        b->p = emma_alloc(size, align);
        b->api = A_EMMA, b->align = align;
        break;
    default:
        *name = "emma_alloc_zeroed";
        b->p = emma_alloc_zeroed(size, align);
        b->api = A_EMMA, b->align = align;
        zero = 1;
        break;
    }
    b->size = size;
    b->seed = tu_rand(&t->rng);
    if (!b->p) {
        FAIL(t->id, t->op, "%s(size %zu, align %zu) returned NULL (errno %d)", *name, size, align,
             errno);
        return 0;
    }
    check_block(t, b, *name);
    if (zero && !zeroed(b))
        FAIL(t->id, t->op, "%s(size %zu): memory not zeroed", *name, size);
    fill(b);
    return 1;
}

/* Resize b with the call its API allows; contents up to the smaller size
 * must survive. */
static void resize(struct th *t, struct blk *b)
{
    size_t n = rand_size(&t->rng);
    if (b->size + n > LIVE_CAP / 4)
        n /= 16;
    const char *name;
    unsigned char *q;
    uint64_t r = tu_rand(&t->rng);
    if (b->api == A_EMMA) {
        name = "emma_realloc";
        q = emma_realloc(b->p, b->size, b->align, n);
    } else if (b->api == A_MALLOC && n == 0) {
        return; /* realloc(p, 0) frees: covered by release() */
    } else if (b->api == A_MALLOC && (r & 1)) {
        size_t k = 1 + (size_t)(r >> 8) % 4, each = n / k;
        n = k * each;
        if (n == 0)
            return;
        name = "reallocarray";
        q = reallocarray(b->p, k, each);
    } else if (b->api == A_MALLOC) {
        name = "realloc";
        q = realloc(b->p, n);
    } else {
        return; /* realloc of an aligned block only promises 16 bytes */
    }
    if (!q) {
        FAIL(t->id, t->op, "%s(%p, %zu -> %zu) returned NULL", name, (void *)b->p, b->size, n);
        return;
    }
    struct blk old = *b;
    old.p = q;
    if (!intact(&old, n))
        FAIL(t->id, t->op, "%s %zu -> %zu (align %zu): contents not kept", name, b->size, n,
             b->align);
    b->p = q;
    t->live_bytes = t->live_bytes - b->size + n;
    b->size = n;
    b->seed = tu_rand(&t->rng);
    check_block(t, b, name);
    fill(b);
}

static void *fuzz_thread(void *arg)
{
    struct th *t = arg;
    int on_stack = 0;
    for (t->op = 0; t->op < FUZZ_OPS && !atomic_load(&stop); t->op++) {
        if ((t->op & 255) == 0 && now_s() > deadline)
            break;
        struct blk *b = &t->live[tu_rand(&t->rng) % LIVE];
        uint64_t r = tu_rand(&t->rng) % 100;
        const char *name = "";
        if (r < 45) {
            if (b->p) {
                t->live_bytes -= b->size;
                release(t, b);
            }
            if (t->live_bytes > LIVE_CAP)
                continue;
            if (make(t, b, &name))
                t->live_bytes += b->size;
        } else if (r < 65) {
            if (b->p)
                resize(t, b);
        } else if (r < 80) {
            /* hand the block to whichever thread takes the slot next */
            if (!b->p)
                continue;
            struct blk *box = malloc(sizeof *box);
            if (!box) {
                FAIL(t->id, t->op, "malloc(%zu) for a box returned NULL", sizeof *box);
                continue;
            }
            *box = *b;
            t->live_bytes -= b->size;
            b->p = NULL;
            box = atomic_exchange(&shared[tu_rand(&t->rng) % SHARED], box);
            if (box) {
                release(t, box);
                free(box);
            }
        } else if (r < 92) {
            if (b->p)
                check_block(t, b, "check");
        } else if (r < 96) {
            if (emma_owns(&on_stack) || emma_owns(&ops_done) || emma_owns(NULL) ||
                emma_owns((void *)1))
                FAIL(t->id, t->op, "emma_owns claims memory that is not emma's");
        } else if (r < 98) {
            if (b->p && !intact(b, b->size))
                FAIL(t->id, t->op, "block %p size %zu corrupted", (void *)b->p, b->size);
        } else if (r < 99) {
            emma_trim();
        } else {
            if (strcmp(emma_version(), PACKAGE_VERSION) != 0)
                FAIL(t->id, t->op, "emma_version() is \"%s\"", emma_version());
        }
    }
    for (int i = 0; i < LIVE; i++)
        if (t->live[i].p)
            release(t, &t->live[i]);
    atomic_fetch_add(&ops_done, t->op);
    return NULL;
}

START_TEST(t_fuzz)
{
    const char *s = getenv("EMMA_FUZZ_SEED");
    const char *secs = getenv("EMMA_FUZZ_SECONDS");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    the_seed = s ? strtoull(s, NULL, 0) : (uint64_t)ts.tv_sec * 1000003u + (uint64_t)ts.tv_nsec;
    fprintf(stderr, "# fuzz seed %llu (rerun: EMMA_FUZZ_SEED=%llu tests/test_fuzz)\n",
            (unsigned long long)the_seed, (unsigned long long)the_seed);
    deadline = now_s() + (secs ? atof(secs) : 5.0);
    static struct th th[THREADS];
    pthread_t p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        th[i].id = i;
        th[i].rng = tu_mix(the_seed + (uint64_t)i * 0x9e3779b97f4a7c15ull) | 1;
        ck_assert_int_eq(pthread_create(&p[i], NULL, fuzz_thread, &th[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(p[i], NULL);
    struct th last = {.id = -1, .rng = 1};
    for (int i = 0; i < SHARED; i++) {
        struct blk *box = atomic_exchange(&shared[i], NULL);
        if (box) {
            release(&last, box);
            free(box);
        }
    }
    fprintf(stderr, "# fuzz: %ld operations\n", atomic_load(&ops_done));
    ck_assert_msg(!fail_msg[0], "%s (rerun: EMMA_FUZZ_SEED=%llu)", fail_msg,
                  (unsigned long long)the_seed);
    ck_assert(atomic_load(&ops_done) > 1000);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {t_fuzz, NULL};
    return tu_run_case("fuzz", "fuzz", 60, tests);
}

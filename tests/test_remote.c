/* Remote frees into an idle or dead owner's pages are inside the
 * process-wide bound (issue 14): blocks made by worker threads and freed
 * by another thread must not stay resident outside the policy's count
 * until their owner (which may never run again) collects them.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma.la: malloc & co. are emma's, with the default
 * bound on free resident memory (32 MiB).  4 workers each make 24 MiB of
 * 64..512-byte blocks and hand them over; another thread frees all 96 MiB
 * and then only runs a small churn of its own, which need never reach a
 * slow path.  Before the remote frees counted, RSS stayed about 100 MiB
 * above the baseline (measured: bench/handoff shows 78 MiB for 68 MiB);
 * the tests allow the bound and FREED_SLACK more, right after the frees
 * and after 2 s of the churn.  Each test runs in its own process (Check's
 * fork mode), so RSS starts clean.
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <pthread.h>
#include <time.h>

#define WORKERS 4
#define WORKER_BYTES ((size_t)24 << 20)
#define BOUND ((size_t)32 << 20)
/* the last page of each class a worker still allocates from, the
 * freeing thread's step (2 MiB), heap metadata, Check's own memory */
#define FREED_SLACK ((size_t)12 << 20)

struct blk {
    struct blk *next;
    uint64_t tag;
};

static uint64_t blk_tag(const struct blk *b) { return (uint64_t)(uintptr_t)b * 0x9e3779b97f4a7c15ull; }

struct worker {
    pthread_t t;
    struct blk *head;
    uint64_t seed;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int made, released, stay;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = w->seed;
    for (size_t bytes = 0; bytes < WORKER_BYTES;) {
        size_t sz = 64 + (size_t)(tu_rand(&rng) % 449);
        struct blk *b = malloc(sz);
        TU_ASSERT(b != NULL);
        memset(b, 0x33, sz);
        b->tag = blk_tag(b);
        b->next = w->head;
        w->head = b;
        bytes += sz;
    }
    pthread_mutex_lock(&mu);
    made++;
    pthread_cond_broadcast(&cv);
    while (stay && !released)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static struct worker workers[WORKERS];

/* Start the workers; return once all made their blocks (and, unless they
 * stay, exited). */
static void produce(int stay_alive)
{
    stay = stay_alive;
    for (int i = 0; i < WORKERS; i++) {
        workers[i].seed = 0x1234567ull + (uint64_t)i * 7919;
        ck_assert_int_eq(pthread_create(&workers[i].t, NULL, worker_main, &workers[i]), 0);
    }
    pthread_mutex_lock(&mu);
    while (made < WORKERS)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (!stay)
        for (int i = 0; i < WORKERS; i++)
            ck_assert_int_eq(pthread_join(workers[i].t, NULL), 0);
}

static void free_all(void)
{
    for (int i = 0; i < WORKERS; i++)
        for (struct blk *b = workers[i].head, *next; b; b = next) {
            next = b->next;
            TU_ASSERT(b->tag == blk_tag(b));
            free(b);
        }
}

static void release_workers(void)
{
    if (!stay)
        return;
    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < WORKERS; i++)
        ck_assert_int_eq(pthread_join(workers[i].t, NULL), 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The freeing thread's own small work: LIVE blocks of 16..256 B replaced
 * at random for `seconds`. */
#define LIVE 1000
static void *live[LIVE];
static uint64_t live_rng = 42;

static void live_make(void)
{
    for (int i = 0; i < LIVE; i++)
        TU_ASSERT((live[i] = malloc(16 + tu_rand(&live_rng) % 241)) != NULL);
}

static void churn(double seconds)
{
    double end = now_s() + seconds;
    while (now_s() < end)
        for (int k = 0; k < 1000; k++) {
            size_t i = (size_t)(tu_rand(&live_rng) % LIVE);
            free(live[i]);
            TU_ASSERT((live[i] = malloc(16 + tu_rand(&live_rng) % 241)) != NULL);
            memset(live[i], 1, 16);
        }
}

static void live_free(void)
{
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
}

static void check_bound(size_t base, const char *when, const char *owner)
{
    size_t r = tu_rss();
    ck_assert_msg(r <= base + BOUND + FREED_SLACK,
                  "%s freeing %zu MiB of %s threads' blocks, RSS is %zu MiB above the "
                  "baseline (allowed: %zu)", when, (size_t)WORKERS * WORKER_BYTES / TU_MIB, owner,
                  (r > base ? r - base : 0) / TU_MIB, (BOUND + FREED_SLACK) / TU_MIB);
}

/* The freeing thread: main itself (it has a heap, its churn). */
static void run(int stay_alive, const char *owner)
{
    live_make();
    size_t base = tu_rss();
    produce(stay_alive);
    ck_assert_msg(tu_rss() > base + WORKERS * WORKER_BYTES / 2, "the workers used no memory");
    free_all();
    check_bound(base, "right after", owner);
    churn(2.0);
    check_bound(base, "2 s after", owner);
    live_free();
    release_workers();
}

START_TEST(t_remote_free_dead_owners) { run(0, "exited"); }
END_TEST

START_TEST(t_remote_free_idle_owners) { run(1, "idle"); }
END_TEST

/* The freeing thread never allocated (no heap of its own): its frees
 * count all the same. */
static void *free_only(void *arg)
{
    (void)arg;
    free_all();
    return NULL;
}

START_TEST(t_remote_free_by_free_only_thread)
{
    size_t base = tu_rss();
    produce(1);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, free_only, NULL), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    check_bound(base, "right after a free-only thread finished", "idle");
    release_workers();
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {t_remote_free_dead_owners, t_remote_free_idle_owners,
                                  t_remote_free_by_free_only_thread, NULL};
    return tu_run_case("remote", "remote", 10, tests);
}

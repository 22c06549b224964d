/* Multi-threaded stress, thread churn, fork, and memory given back.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Linked against libemma.la: malloc & co. are emma's.  No test asserts on
 * timing; the work done is fixed by iteration counts.  A hang is caught by
 * Check's per-test timeout (and, for fork children, by our own polling).
 */
#define _GNU_SOURCE 1
#include "config.h"
#include "testutil.h"

#include <emma.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>

void free_sized(void *ptr, size_t size);

/* A block in flight: the descriptor itself is malloc'd too. */
struct item {
    struct item *next;
    unsigned char *p;
    size_t size;
    size_t align; /* 0: from malloc/realloc; else from emma_alloc */
    uint64_t seed;
};

/* Release a block the way its allocation calls for. */
static void block_release(struct item *it, uint64_t *rng)
{
    if (it->align) {
        if (tu_rand(rng) & 1)
            emma_dealloc(it->p, it->size, it->align);
        else
            emma_free(it->p);
    } else {
        switch (tu_rand(rng) % 4) {
        case 0: emma_free(it->p); break;
        case 1: free_sized(it->p, it->size); break;
        default: free(it->p); break;
        }
    }
}

static size_t random_size(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    switch (r % 64) {
    case 0: /* huge: 1 MiB .. 3 MiB */
        return TU_MIB + (size_t)((r >> 8) % (2 * TU_MIB));
    case 1: case 2: case 3: case 4: /* medium/large: up to 256 KiB */
        return 16 + (size_t)((r >> 8) % (256 << 10));
    case 5: case 6: case 7: case 8: case 9: case 10: /* up to 64 KiB */
        return 16 + (size_t)((r >> 8) % (64 << 10));
    default: /* small: 16 B .. 2 KiB */
        return 16 + (size_t)((r >> 8) % 2048);
    }
}

/* Pattern seed derived from the address and the producing thread. */
static uint64_t seed_for(const void *p, unsigned thread)
{
    return (uint64_t)(uintptr_t)p * 31 + thread;
}

/* Fill only a sample of huge blocks to keep the test quick. */
static void fill_block(struct item *it)
{
    if (it->size <= (256 << 10)) {
        tu_fill(it->p, it->size, it->seed);
    } else {
        tu_fill(it->p, 4096, it->seed);
        tu_fill(it->p + it->size - 4096, 4096, it->seed + 1);
    }
}

static int check_block(const struct item *it)
{
    if (it->size <= (256 << 10))
        return tu_check(it->p, it->size, it->seed) < 0;
    return tu_check(it->p, 4096, it->seed) < 0 &&
           tu_check(it->p + it->size - 4096, 4096, it->seed + 1) < 0;
}

/* ================================================================== */
/* Cross-thread producer/consumer                                     */

enum { XT_THREADS = 4, XT_ITERS = 60000, XT_LOCAL = 256 };

struct mailbox {
    pthread_mutex_t mu;
    struct item *head;
    long count;
};

static struct mailbox boxes[XT_THREADS];
static atomic_long xt_errors;
static atomic_int xt_done;

static void mailbox_post(struct mailbox *b, struct item *it)
{
    pthread_mutex_lock(&b->mu);
    it->next = b->head;
    b->head = it;
    b->count++;
    pthread_mutex_unlock(&b->mu);
}

static struct item *mailbox_take_all(struct mailbox *b)
{
    pthread_mutex_lock(&b->mu);
    struct item *l = b->head;
    b->head = NULL;
    b->count = 0;
    pthread_mutex_unlock(&b->mu);
    return l;
}

/* Verify and release a block received from another thread; sometimes
 * realloc it first (a realloc of a block owned by a foreign heap). */
static void consume(struct item *it, uint64_t *rng)
{
    if (!check_block(it))
        atomic_fetch_add(&xt_errors, 1);
    if (tu_rand(rng) % 8 == 0) {
        size_t ns = random_size(rng);
        unsigned char *q = it->align ? emma_realloc(it->p, it->size, it->align, ns)
                                     : realloc(it->p, ns);
        if (q == NULL) {
            atomic_fetch_add(&xt_errors, 1);
        } else {
            size_t keep = ns < it->size ? ns : it->size;
            if (keep > 4096)
                keep = 4096;
            if (tu_check(q, keep, it->seed) >= 0)
                atomic_fetch_add(&xt_errors, 1);
            it->p = q;
            it->size = ns;
        }
    }
    block_release(it, rng);
    free(it);
}

static void *xt_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t rng = 0x1234567u + id * 0x9e3779b9u;
    struct item *local[XT_LOCAL] = {0};
    struct mailbox *mine = &boxes[id];

    for (long i = 0; i < XT_ITERS; i++) {
        struct item *it = malloc(sizeof *it);
        if (!it) {
            atomic_fetch_add(&xt_errors, 1);
            break;
        }
        it->size = random_size(&rng);
        it->align = (tu_rand(&rng) % 5 == 0)
                        ? (size_t)1 << (tu_rand(&rng) % 13) : 0;
        it->p = it->align ? emma_alloc(it->size, it->align)
                          : malloc(it->size);
        if (!it->p) {
            atomic_fetch_add(&xt_errors, 1);
            free(it);
            break;
        }
        it->seed = seed_for(it->p, id);
        fill_block(it);
        uint64_t r = tu_rand(&rng);
        if (r % 2 == 0) {
            /* hand it to another thread */
            unsigned to = (id + 1 + (unsigned)(r >> 8) % (XT_THREADS - 1)) %
                          XT_THREADS;
            mailbox_post(&boxes[to], it);
        } else {
            /* keep it a while, then free it here */
            unsigned slot = (unsigned)(r >> 16) % XT_LOCAL;
            if (local[slot]) {
                if (!check_block(local[slot]))
                    atomic_fetch_add(&xt_errors, 1);
                block_release(local[slot], &rng);
                free(local[slot]);
            }
            local[slot] = it;
        }
        if (i % 64 == 0) {
            for (struct item *l = mailbox_take_all(mine), *n; l; l = n) {
                n = l->next;
                consume(l, &rng);
            }
        }
    }
    for (unsigned s = 0; s < XT_LOCAL; s++) {
        if (local[s]) {
            if (!check_block(local[s]))
                atomic_fetch_add(&xt_errors, 1);
            block_release(local[s], &rng);
            free(local[s]);
        }
    }
    atomic_fetch_add(&xt_done, 1);
    /* keep draining until every producer is done */
    for (;;) {
        int done = atomic_load(&xt_done) == XT_THREADS;
        for (struct item *l = mailbox_take_all(mine), *n; l; l = n) {
            n = l->next;
            consume(l, &rng);
        }
        if (done)
            break;
        sched_yield();
    }
    return NULL;
}

START_TEST(t_cross_thread)
{
    pthread_t th[XT_THREADS];
    for (int i = 0; i < XT_THREADS; i++)
        pthread_mutex_init(&boxes[i].mu, NULL);
    for (int i = 0; i < XT_THREADS; i++)
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, xt_worker, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < XT_THREADS; i++)
        pthread_join(th[i], NULL);
    /* anything posted after its owner's last drain */
    uint64_t rng = 5;
    for (int i = 0; i < XT_THREADS; i++)
        for (struct item *l = mailbox_take_all(&boxes[i]), *n; l; l = n) {
            n = l->next;
            consume(l, &rng);
        }
    TU_ASSERT_MSG(atomic_load(&xt_errors) == 0,
                  "%ld blocks were corrupted or allocations failed",
                  (long)atomic_load(&xt_errors));
}
END_TEST

/* ================================================================== */
/* Remote frees racing with the owner on the same pages                */

/* The producer allocates small blocks and frees half of them itself while
 * the consumer, on the other core, frees the other half: both keep hitting
 * the same pages.  Every live block carries a unique stamp; a block handed
 * out twice (lost update on a page's counters or lists) shows up as a
 * changed stamp. */
enum { RACE_OPS = 4000000, RACE_RING = 1024, RACE_KEEP = 64 };

struct race_slot {
    _Atomic(uint64_t *) p;
    uint64_t stamp;
};
static struct race_slot race_ring[RACE_RING];
static atomic_long race_errors;
static atomic_int race_done;

static void *race_consumer(void *arg)
{
    unsigned head = 0, spins = 0;
    for (;;) {
        struct race_slot *s = &race_ring[head % RACE_RING];
        uint64_t *p = atomic_load_explicit(&s->p, memory_order_acquire);
        if (!p) {
            if (atomic_load(&race_done) &&
                !atomic_load_explicit(&s->p, memory_order_acquire))
                break;
            if (++spins % 1024 == 0)
                sched_yield(); /* we may share a core with the producer */
            continue;
        }
        if (p[0] != s->stamp || p[1] != ~s->stamp)
            atomic_fetch_add(&race_errors, 1);
        atomic_store_explicit(&s->p, NULL, memory_order_release);
        free(p);
        head++;
    }
    return NULL;
}

START_TEST(t_remote_free_race)
{
    pthread_t th;
    uint64_t *keep[RACE_KEEP] = {0};
    uint64_t keep_stamp[RACE_KEEP] = {0};
    uint64_t rng = 4242;
    unsigned tail = 0;
    ck_assert_int_eq(pthread_create(&th, NULL, race_consumer, NULL), 0);
    for (uint64_t i = 1; i <= RACE_OPS; i++) {
        size_t sz = 16 + (size_t)(tu_rand(&rng) % 4) * 16; /* 4 classes */
        uint64_t *p = malloc(sz);
        TU_ASSERT((p) != NULL);
        p[0] = i;
        p[1] = ~i;
        if (i & 1) {
            struct race_slot *s = &race_ring[tail % RACE_RING];
            for (unsigned spins = 1;
                 atomic_load_explicit(&s->p, memory_order_acquire); spins++)
                if (spins % 1024 == 0)
                    sched_yield(); /* ring full: let the consumer run */
            s->stamp = i;
            atomic_store_explicit(&s->p, p, memory_order_release);
            tail++;
        } else {
            unsigned k = (unsigned)(i >> 1) % RACE_KEEP;
            if (keep[k]) {
                if (keep[k][0] != keep_stamp[k] || keep[k][1] != ~keep_stamp[k])
                    atomic_fetch_add(&race_errors, 1);
                free(keep[k]);
            }
            keep[k] = p;
            keep_stamp[k] = i;
        }
    }
    atomic_store(&race_done, 1);
    pthread_join(th, NULL);
    for (unsigned k = 0; k < RACE_KEEP; k++) {
        if (keep[k] && (keep[k][0] != keep_stamp[k] || keep[k][1] != ~keep_stamp[k]))
            atomic_fetch_add(&race_errors, 1);
        free(keep[k]);
    }
    TU_ASSERT_MSG(atomic_load(&race_errors) == 0,
                  "%ld live blocks were handed out again (stamp overwritten)",
                  (long)atomic_load(&race_errors));
}
END_TEST

/* ================================================================== */
/* Thread churn: dead threads' heaps must be reused                    */

enum { CHURN_THREADS = 24000, CHURN_BATCH = 4, CHURN_LEFT = 512 };
#define CHURN_RSS_BOUND (256 * TU_MIB)

static pthread_mutex_t left_mu = PTHREAD_MUTEX_INITIALIZER;
static struct item *leftovers[CHURN_LEFT];
static atomic_long churn_errors;

static void *churn_thread(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *p[24];
    size_t sz[24];
    for (int i = 0; i < 24; i++) {
        uint64_t r = tu_rand(&rng);
        sz[i] = (r % 16 == 0) ? (size_t)(r >> 8) % 70000 : (size_t)(r >> 8) % 900;
        p[i] = malloc(sz[i]);
        if (!p[i]) {
            atomic_fetch_add(&churn_errors, 1);
            return NULL;
        }
        memset(p[i], (int)i, sz[i]);
    }
    for (int i = 0; i < 23; i++) {
        for (size_t k = 0; k < sz[i]; k += 97)
            if (((unsigned char *)p[i])[k] != (unsigned char)i)
                atomic_fetch_add(&churn_errors, 1);
        free(p[i]);
    }
    free(p[23]);
    /* leave one block behind for a later thread to free */
    struct item *it = malloc(sizeof *it);
    if (!it) {
        atomic_fetch_add(&churn_errors, 1);
        return NULL;
    }
    it->size = (size_t)(tu_rand(&rng) % 3000);
    it->align = 0;
    it->p = malloc(it->size);
    if (!it->p) {
        atomic_fetch_add(&churn_errors, 1);
        free(it);
        return NULL;
    }
    it->seed = seed_for(it->p, 7);
    tu_fill(it->p, it->size, it->seed);
    unsigned slot = (unsigned)(tu_rand(&rng) % CHURN_LEFT);
    pthread_mutex_lock(&left_mu);
    struct item *old = leftovers[slot];
    leftovers[slot] = it;
    pthread_mutex_unlock(&left_mu);
    if (old) {
        if (tu_check(old->p, old->size, old->seed) >= 0)
            atomic_fetch_add(&churn_errors, 1);
        free(old->p);
        free(old);
    }
    return NULL;
}

/* Run `threads` short-lived threads in batches; returns the RSS growth
 * seen after a warm-up (stops early once it passes the bound). */
static size_t churn_run(long threads, long *done)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    size_t rss0 = 0, growth = 0;
    long t;
    for (t = 0; t < threads; t += CHURN_BATCH) {
        pthread_t th[CHURN_BATCH];
        for (int i = 0; i < CHURN_BATCH; i++) {
            int rc = pthread_create(&th[i], &attr, churn_thread,
                                    (void *)(uintptr_t)(t + i));
            if (rc != 0)
                ck_abort_msg("pthread_create #%ld: %s", t + i, strerror(rc));
        }
        for (int i = 0; i < CHURN_BATCH; i++)
            pthread_join(th[i], NULL);
        if (t == 400) /* after a warm-up */
            rss0 = tu_rss();
        if (t > 400 && (t % 1000 == 0 || t + CHURN_BATCH >= threads)) {
            size_t r = tu_rss();
            if (r > rss0 && r - rss0 > growth)
                growth = r - rss0;
            if (growth >= CHURN_RSS_BOUND)
                break; /* no need to go on growing */
        }
    }
    *done = t;
    for (int i = 0; i < CHURN_LEFT; i++)
        if (leftovers[i]) {
            TU_ASSERT(tu_check(leftovers[i]->p, leftovers[i]->size,
                               leftovers[i]->seed) < 0);
            free(leftovers[i]->p);
            free(leftovers[i]);
            leftovers[i] = NULL;
        }
    pthread_attr_destroy(&attr);
    return growth;
}

START_TEST(t_thread_churn)
{
    long done;
    size_t growth = churn_run(CHURN_THREADS, &done);
    ck_assert_msg(atomic_load(&churn_errors) == 0,
                  "%ld corrupted blocks or failed allocations",
                  (long)atomic_load(&churn_errors));
    ck_assert_msg(growth < CHURN_RSS_BOUND,
                  "RSS grew by %zu MiB over %ld threads: dead threads' "
                  "memory is not reused", growth / TU_MIB, done);
}
END_TEST

/* The same under a seccomp filter that allows every system call: the
 * situation of a process in a container (Docker's default profile, systemd's
 * SystemCallFilter=, ...).  Memory of dead threads must still be reused:
 * with TLS, heap.c then asks tgkill instead of the PI futex (which some
 * filters kill the process for). */
START_TEST(t_thread_churn_seccomp)
{
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {1, allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        ck_abort_msg("cannot install a seccomp filter: %s", strerror(errno));
    long done;
    size_t growth = churn_run(CHURN_THREADS, &done);
    ck_assert_int_eq(atomic_load(&churn_errors), 0);
    ck_assert_msg(growth < CHURN_RSS_BOUND,
                  "under a seccomp filter, RSS grew by %zu MiB over %ld "
                  "threads: dead threads' memory is not reused", growth / TU_MIB,
                  done);
}
END_TEST

/* ================================================================== */
/* Many threads alive at once, freeing each other's blocks             */

enum { MANY = 100, MANY_BLOCKS = 300 };
static pthread_barrier_t many_bar;
static void *many_blocks[MANY][MANY_BLOCKS];
static atomic_long many_errors;

static void *many_thread(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t rng = 5 + id;
    for (int i = 0; i < MANY_BLOCKS; i++) {
        size_t s = 16 + (size_t)(tu_rand(&rng) % 4000);
        unsigned char *p = malloc(s);
        if (!p) {
            atomic_fetch_add(&many_errors, 1);
            many_blocks[id][i] = NULL;
            continue;
        }
        p[0] = (unsigned char)id;
        p[s - 1] = (unsigned char)i;
        memset(p + 1, 0x33, s > 2 ? s - 2 : 0);
        many_blocks[id][i] = p;
    }
    pthread_barrier_wait(&many_bar); /* everybody alive and allocated */
    unsigned other = (id + 37) % MANY;
    for (int i = 0; i < MANY_BLOCKS; i++) {
        unsigned char *p = many_blocks[other][i];
        if (p && p[0] != (unsigned char)other)
            atomic_fetch_add(&many_errors, 1);
        free(p);
    }
    pthread_barrier_wait(&many_bar);
    return NULL;
}

START_TEST(t_many_threads)
{
    pthread_t th[MANY];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 << 10);
    pthread_barrier_init(&many_bar, NULL, MANY);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(pthread_create(&th[i], &attr, many_thread,
                                        (void *)(uintptr_t)i), 0);
    for (int i = 0; i < MANY; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&many_bar);
    pthread_attr_destroy(&attr);
    ck_assert_int_eq(atomic_load(&many_errors), 0);
}
END_TEST

/* ================================================================== */
/* fork while other threads allocate                                   */

enum { FORK_THREADS = 3, FORK_COUNT = 50, FORK_HELD = 256 };

static atomic_int fork_stop;
static atomic_long fork_thread_errors;

static void *fork_busy(void *arg)
{
    uint64_t rng = 77 + (uintptr_t)arg;
    void *slot[64] = {0};
    size_t sz[64] = {0};
    while (!atomic_load(&fork_stop)) {
        unsigned i = (unsigned)(tu_rand(&rng) % 64);
        if (slot[i]) {
            if (tu_check(slot[i], sz[i], (uintptr_t)slot[i]) >= 0)
                atomic_fetch_add(&fork_thread_errors, 1);
            free(slot[i]);
        }
        sz[i] = (tu_rand(&rng) % 32 == 0) ? random_size(&rng) % (200 << 10)
                                          : (size_t)(tu_rand(&rng) % 1500);
        slot[i] = malloc(sz[i]);
        if (!slot[i]) {
            atomic_fetch_add(&fork_thread_errors, 1);
            continue;
        }
        tu_fill(slot[i], sz[i], (uintptr_t)slot[i]);
    }
    for (int i = 0; i < 64; i++)
        free(slot[i]);
    return NULL;
}

static void *child_thread(void *arg)
{
    uint64_t rng = (uintptr_t)arg;
    for (int i = 0; i < 1000; i++) {
        size_t s = random_size(&rng) % (128 << 10);
        unsigned char *p = malloc(s);
        if (!p)
            return (void *)1;
        tu_fill(p, s, i);
        if (tu_check(p, s, i) >= 0)
            return (void *)1;
        free(p);
    }
    return NULL;
}

/* The child: use the allocator heavily, from this thread and a new one,
 * and free blocks that the parent allocated before forking. */
static int fork_child(void **held, size_t *held_sz, int round)
{
    uint64_t rng = 1000 + (uint64_t)round;
    for (int i = 0; i < FORK_HELD; i++) {
        if (tu_check(held[i], held_sz[i], (uintptr_t)held[i] + 3) >= 0)
            return 2;
        if (i % 2)
            free(held[i]);
    }
    void *p[500];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 500; i++) {
            size_t s = random_size(&rng) % (300 << 10);
            p[i] = malloc(s);
            if (!p[i])
                return 3;
            memset(p[i], i, s < 64 ? s : 64);
        }
        for (int i = 0; i < 500; i++)
            free(p[i]);
    }
    pthread_t th;
    void *res = (void *)1;
    if (pthread_create(&th, NULL, child_thread, (void *)(uintptr_t)round) != 0)
        return 4;
    if (pthread_join(th, &res) != 0 || res != NULL)
        return 5;
    void *big = malloc(8 * TU_MIB);
    if (!big)
        return 6;
    memset(big, 1, 8 * TU_MIB);
    free(big);
    return 0;
}

START_TEST(t_fork_with_threads)
{
    pthread_t th[FORK_THREADS];
    static void *held[FORK_HELD];
    static size_t held_sz[FORK_HELD];
    uint64_t rng = 31337;
    for (int i = 0; i < FORK_THREADS; i++)
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, fork_busy, (void *)(uintptr_t)i), 0);

    for (int round = 0; round < FORK_COUNT; round++) {
        for (int i = 0; i < FORK_HELD; i++) {
            held_sz[i] = (size_t)(tu_rand(&rng) % 5000);
            held[i] = malloc(held_sz[i]);
            TU_ASSERT((held[i]) != NULL);
            tu_fill(held[i], held_sz[i], (uintptr_t)held[i] + 3);
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        TU_ASSERT_MSG(pid >= 0, "fork failed: %s", strerror(errno));
        if (pid == 0) {
            alarm(60); /* never outlive a broken parent */
            _exit(fork_child(held, held_sz, round));
        }
        /* poll for the child; 60 s is a hang, not a slow machine */
        int status = 0;
        pid_t w = 0;
        for (int tick = 0; tick < 30000; tick++) {
            w = waitpid(pid, &status, WNOHANG);
            if (w != 0)
                break;
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (w == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            atomic_store(&fork_stop, 1);
            ck_abort_msg("fork child %d (round %d) hung", (int)pid, round);
        }
        ck_assert_int_eq(w, pid);
        TU_ASSERT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "fork child (round %d) %s %d", round,
                      WIFEXITED(status) ? "exited with" : "killed by signal",
                      WIFEXITED(status) ? WEXITSTATUS(status)
                                        : WTERMSIG(status));
        /* the parent's copies are untouched by the child */
        for (int i = 0; i < FORK_HELD; i++) {
            TU_ASSERT(tu_check(held[i], held_sz[i], (uintptr_t)held[i] + 3) <
                      0);
            free(held[i]);
        }
    }
    atomic_store(&fork_stop, 1);
    for (int i = 0; i < FORK_THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&fork_thread_errors), 0);
}
END_TEST

/* ================================================================== */
/* Memory goes back to the kernel                                      */

START_TEST(t_rss_falls)
{
    const size_t target = 512 * TU_MIB;
    const size_t cap = 1 << 20;
    /* the pointer array lives outside emma so it does not count */
    void **p = mmap(NULL, cap * sizeof(void *), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TU_ASSERT(p != MAP_FAILED);
    uint64_t rng = 99;
    size_t n = 0, total = 0;

    size_t rss0 = tu_rss();
    while (total < target && n < cap) {
        uint64_t r = tu_rand(&rng);
        size_t s;
        if (r % 4 == 0)
            s = 16 + (size_t)((r >> 8) % 1024); /* small */
        else if (r % 4 == 1)
            s = 1024 + (size_t)((r >> 8) % (7 << 10)); /* small, larger */
        else if (r % 4 == 2)
            s = 8192 + (size_t)((r >> 8) % (56 << 10)); /* medium */
        else
            s = (64 << 10) + (size_t)((r >> 8) % (192 << 10)); /* large */
        p[n] = malloc(s);
        TU_ASSERT((p[n]) != NULL);
        memset(p[n], 0x77, s); /* touch every page */
        total += s;
        n++;
    }
    size_t peak = tu_rss();
    TU_ASSERT_MSG(peak > rss0 + target / 2,
                  "RSS did not grow as expected (%zu -> %zu MiB)",
                  rss0 / TU_MIB, peak / TU_MIB);
    /* free in a shuffled order */
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(tu_rand(&rng) % (i + 1));
        void *t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    size_t after_free = tu_rss();
    emma_trim();
    size_t after_trim = tu_rss();
    size_t growth = peak - rss0;
    size_t left = after_trim > rss0 ? after_trim - rss0 : 0;
    fprintf(stderr,
            "# rss: start %zu MiB, peak %zu MiB, after free %zu MiB, "
            "after emma_trim %zu MiB\n",
            rss0 / TU_MIB, peak / TU_MIB, after_free / TU_MIB,
            after_trim / TU_MIB);
    TU_ASSERT_MSG(left < growth / 4,
                  "RSS after freeing everything and emma_trim(): %zu MiB of "
                  "the %zu MiB peak growth still resident",
                  left / TU_MIB, growth / TU_MIB);
    munmap(p, cap * sizeof(void *));
}
END_TEST

/* Freed huge blocks go back at once, no trim needed. */
START_TEST(t_rss_huge_falls)
{
    size_t rss0 = tu_rss();
    enum { N = 16 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(16 * TU_MIB + (size_t)i * 4096);
        TU_ASSERT((p[i]) != NULL);
        memset(p[i], 1, 16 * TU_MIB);
    }
    size_t peak = tu_rss();
    TU_ASSERT(peak > rss0 + 200 * TU_MIB);
    for (int i = 0; i < N; i++)
        free(p[i]);
    size_t after = tu_rss();
    size_t left = after > rss0 ? after - rss0 : 0;
    TU_ASSERT_MSG(left < (peak - rss0) / 4,
                  "freed huge blocks still resident: %zu of %zu MiB",
                  left / TU_MIB, (peak - rss0) / TU_MIB);
}
END_TEST

/* Claims (reclaim.c) against owners that wake up: owner threads nap and
 * then allocate from the first page of their class queues (the fast
 * path, which a claim cannot stop), while the main thread trims, which
 * claims every heap whose owner is outside its slow paths.  A claim that
 * took a first page the owner had just popped a block off would purge
 * and hand on a page holding that block: its pattern, checked after
 * every nap, would change.  (The first claims, 8b5ca1b, counted a first
 * page's blocks only before unlinking it: under the more frequent claims
 * of a later change, bench pairs-exit found "block corrupted" in 1 run of
 * 6.) */
enum { WAKE_THREADS = 4, WAKE_BLOCKS = 48, WAKE_ROUNDS = 3000 };
static atomic_int wake_stop;
static void *wake_owner(void *arg)
{
    uint64_t rng = (uintptr_t)arg;
    void *b[WAKE_BLOCKS];
    size_t sz[WAKE_BLOCKS];
    for (int round = 0; round < WAKE_ROUNDS && !atomic_load(&wake_stop); round++) {
        int n = 1 + (int)(tu_rand(&rng) % WAKE_BLOCKS);
        for (int i = 0; i < n; i++) {
            /* a small class (direct table), a medium one (class queue) */
            sz[i] = (tu_rand(&rng) & 1) ? 16 + tu_rand(&rng) % 1000 : 9000 + tu_rand(&rng) % 30000;
            TU_ASSERT((b[i] = malloc(sz[i])) != NULL);
            tu_fill(b[i], sz[i], (uint64_t)round * 64 + (uint64_t)i);
        }
        if (tu_rand(&rng) % 4 == 0) {
            struct timespec ts = {0, (long)(tu_rand(&rng) % 200) * 1000};
            nanosleep(&ts, NULL);
        }
        for (int i = 0; i < n; i++) {
            TU_ASSERT_MSG(tu_check(b[i], sz[i], (uint64_t)round * 64 + (uint64_t)i) < 0,
                          "round %d: a block of %zu bytes changed while its owner held it", round,
                          sz[i]);
            free(b[i]);
        }
    }
    return NULL;
}

START_TEST(t_claims_race_waking_owners)
{
    pthread_t t[WAKE_THREADS];
    atomic_store(&wake_stop, 0);
    for (int i = 0; i < WAKE_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, wake_owner, (void *)(uintptr_t)(i * 7919 + 1)), 0);
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += 4;
    do {
        emma_trim();
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec < end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
    atomic_store(&wake_stop, 1);
    for (int i = 0; i < WAKE_THREADS; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
}
END_TEST

static Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    tu_one_case(s, "cross_thread", t_cross_thread, 240);
    tu_one_case(s, "remote_free_race", t_remote_free_race, 240);
    tu_one_case(s, "thread_churn", t_thread_churn, 240);
    tu_one_case(s, "thread_churn_seccomp", t_thread_churn_seccomp, 240);
    tu_one_case(s, "many_threads", t_many_threads, 120);
    tu_one_case(s, "fork", t_fork_with_threads, 240);
    tu_one_case(s, "rss", t_rss_falls, 120);
    tu_one_case(s, "rss_huge", t_rss_huge_falls, 120);
    tu_one_case(s, "claims", t_claims_race_waking_owners, 120);
    return s;
}

int main(void)
{
    return tu_run(stress_suite());
}

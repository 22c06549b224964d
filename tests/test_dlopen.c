/* libemma.so.0 loaded at run time with dlopen(RTLD_LOCAL), by a program
 * that does not link it, with threads that existed before the dlopen and
 * threads created after it.  Its initial-exec TLS must fit in the static
 * TLS surplus ("cannot allocate memory in static TLS block" otherwise).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _GNU_SOURCE 1
#include "testutil.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

#ifndef EMMA_SO_PATH
#error "EMMA_SO_PATH must name the built libemma.so.0"
#endif

static void *lib;
static void *(*e_alloc)(size_t, size_t);
static void (*e_dealloc)(void *, size_t, size_t);
static int (*e_owns)(const void *);
static void *(*e_malloc)(size_t);
static void (*e_free)(void *);
static atomic_long errors;

static void *sym(const char *name)
{
    void *f = dlsym(lib, name);
    ck_assert_msg(f != NULL, "dlsym(%s): %s", name, dlerror());
    return f;
}

static void load(void)
{
    if (access(EMMA_SO_PATH, F_OK) != 0) {
        lib = NULL; /* --disable-shared: nothing to load */
        return;
    }
    lib = dlopen(EMMA_SO_PATH, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(lib != NULL, "dlopen: %s", dlerror());
    e_alloc = (void *(*)(size_t, size_t))sym("emma_alloc");
    e_dealloc = (void (*)(void *, size_t, size_t))sym("emma_dealloc");
    e_owns = (int (*)(const void *))sym("emma_owns");
    e_malloc = (void *(*)(size_t))sym("malloc");
    e_free = (void (*)(void *))sym("free");
}

static void *work(void *arg)
{
    uint64_t rng = 99 + (uintptr_t)arg;
    void *p[32] = {0};
    size_t s[32] = {0};
    for (int i = 0; i < 20000; i++) {
        unsigned k = (unsigned)(tu_rand(&rng) % 32);
        if (p[k]) {
            if (!e_owns(p[k]) || tu_check(p[k], s[k], (uintptr_t)p[k]) >= 0)
                atomic_fetch_add(&errors, 1);
            if (k & 1)
                e_dealloc(p[k], s[k], 32);
            else
                e_free(p[k]);
        }
        s[k] = (size_t)(tu_rand(&rng) % 3000);
        p[k] = (k & 1) ? e_alloc(s[k], 32) : e_malloc(s[k]);
        if (!p[k]) {
            atomic_fetch_add(&errors, 1);
            return NULL;
        }
        tu_fill(p[k], s[k], (uintptr_t)p[k]);
    }
    for (int k = 0; k < 32; k++)
        if (p[k])
            e_free(p[k]);
    return NULL;
}

static pthread_barrier_t loaded;

static void *early_thread(void *arg)
{
    pthread_barrier_wait(&loaded); /* created before dlopen, runs after */
    return work(arg);
}

START_TEST(t_dlopen_local)
{
    pthread_t early[2], late[2];
    pthread_barrier_init(&loaded, NULL, 3);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&early[i], NULL, early_thread,
                                        (void *)(uintptr_t)i), 0);
    load();
    pthread_barrier_wait(&loaded);
    if (!lib) {
        for (int i = 0; i < 2; i++)
            pthread_cancel(early[i]);
        TU_SKIP("no shared library " EMMA_SO_PATH " (--disable-shared?)");
    }
    /* this program's malloc is still glibc's */
    void *g = malloc(100);
    ck_assert_int_eq(e_owns(g), 0);
    free(g);
    void *q = e_alloc(100, 4096);
    ck_assert_ptr_nonnull(q);
    ck_assert(e_owns(q));
    e_dealloc(q, 100, 4096);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&late[i], NULL, work,
                                        (void *)(uintptr_t)(i + 2)), 0);
    work((void *)(uintptr_t)9);
    for (int i = 0; i < 2; i++) {
        pthread_join(early[i], NULL);
        pthread_join(late[i], NULL);
    }
    ck_assert_int_eq(atomic_load(&errors), 0);
}
END_TEST

TU_MAIN("dlopen", "dlopen", 60, t_dlopen_local)

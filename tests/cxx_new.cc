// A C++ program that allocates only through new/delete and never names an
// emma function (it finds emma_owns with dlsym): under the linker's
// --as-needed, "-lemma" alone would be dropped from its NEEDED entries and
// new would keep glibc's malloc.  Built by tests/cxx-new.sh with
// $(pkg-config --libs emma), and by debian/tests/build-and-run.
// Checks that new (plain, array, aligned, std::string, std::vector) returns
// emma's memory, and that libstdc++'s semantics are unchanged: an impossible
// request throws std::bad_alloc, after calling the new_handler; nothrow new
// returns nullptr.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include <dlfcn.h>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <new>
#include <string>
#include <vector>

static int handler_calls;
static int failures;

static void check(bool ok, const char *what)
{
    if (!ok) {
        std::printf("FAIL: %s\n", what);
        failures++;
    }
}

static void handler()
{
    handler_calls++;
    std::set_new_handler(nullptr); // the next failure throws
}

struct alignas(256) Aligned {
    char c[300];
};

int main()
{
    int (*owns)(const void *) =
        reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "emma_owns"));
    if (!owns) {
        std::puts("emma is not loaded");
        return 1;
    }

    int *p = new int(42);
    check(owns(p), "new int is emma's memory");
    delete p;
    double *a = new double[1000];
    check(owns(a), "new double[1000] is emma's memory");
    delete[] a;
    Aligned *al = new Aligned;
    check(owns(al), "new of an alignas(256) type is emma's memory");
    check(reinterpret_cast<std::uintptr_t>(al) % 256 == 0, "alignas(256) respected");
    delete al;
    std::vector<std::string> v(100, std::string(200, 'x'));
    check(owns(v.data()) && owns(v[42].data()), "std::vector/std::string use emma");

    volatile std::size_t huge = SIZE_MAX / 2;
    bool threw = false;
    try {
        char *q = new char[huge];
        q[0] = 1;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw, "new char[SIZE_MAX / 2] throws std::bad_alloc");

    std::set_new_handler(handler);
    threw = false;
    try {
        char *q = new char[huge];
        q[0] = 1;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    check(threw && handler_calls == 1,
          "new_handler called once, then std::bad_alloc once it is removed");

    char *n = new (std::nothrow) char[huge];
    check(n == nullptr, "new (std::nothrow) of an impossible size returns nullptr");

    if (failures)
        return 1;
    std::puts("new comes from emma");
    return 0;
}

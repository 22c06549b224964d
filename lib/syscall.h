/* Raw Linux x86_64 system calls and the kernel's constants, for os.c
 * alone (the rest of lib/ calls os.c's named functions).  No libc, no
 * errno: every call returns the kernel's value, where -4095..-1 is -errno.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_SYSCALL_H
#define EMMA_SYSCALL_H

/* emma talks to the kernel with the `syscall` instruction and x86_64
 * Linux's call numbers, and relies on its 4 KiB pages, 47-bit user address
 * space (os.c's address map), MADV_WIPEONFORK/PI-futex semantics and the
 * invariant TSC (now_ticks): a port needs a new OS layer, not a rebuild. */
#if !defined(__x86_64__) || !defined(__linux__)
#error "emma supports only x86_64 Linux: lib/syscall.h and lib/os.c use its system calls and memory layout"
#endif

#include <stddef.h>
#include <stdint.h>

#define SYS_read 0
#define SYS_write 1
#define SYS_close 3
#define SYS_fcntl 72
#define SYS_openat 257
#define SYS_clock_gettime 228
#define SYS_mmap 9
#define SYS_mprotect 10
#define SYS_munmap 11
#define SYS_mremap 25
#define SYS_madvise 28
#define SYS_mincore 27
#define SYS_sched_yield 24
#define SYS_getpid 39
#define SYS_exit_group 231
#define SYS_gettid 186
#define SYS_tgkill 234
#define SYS_futex 202
#define SYS_prctl 157
#define SYS_rt_sigprocmask 14
#define SYS_process_vm_readv 310
#define SYS_prlimit64 302
#define SYS_membarrier 324
#define SYS_sigaltstack 131
#define EMMA_RLIMIT_AS 9

#define EMMA_AT_FDCWD (-100)
#define EMMA_O_RDONLY_CLOEXEC 02000000
#define EMMA_F_DUPFD_CLOEXEC 1030
#define EMMA_PROT_NONE 0
#define EMMA_PROT_RW 3
#define EMMA_MAP_PRIVATE 0x02
#define EMMA_MAP_FIXED 0x10
#define EMMA_MAP_ANONYMOUS 0x20
#define EMMA_MAP_NORESERVE 0x4000
#define EMMA_MAP_FIXED_NOREPLACE 0x100000
#define EMMA_MREMAP_MAYMOVE 1
#define EMMA_MREMAP_FIXED 2
#define EMMA_MREMAP_DONTUNMAP 4 /* Linux 5.7 */
#define EMMA_MADV_DONTNEED 4
#define EMMA_MADV_WIPEONFORK 18
#define EMMA_MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#define EMMA_FUTEX_WAIT_PRIVATE 128
#define EMMA_FUTEX_WAKE_PRIVATE 129
#define EMMA_FUTEX_TRYLOCK_PI 8
#define EMMA_PR_GET_SECCOMP 21
#define EMMA_SECCOMP_MODE_STRICT 1
#define EMMA_SECCOMP_MODE_FILTER 2
#define EMMA_SIG_BLOCK 0
#define EMMA_SIG_UNBLOCK 1
#define EMMA_SIG_SETMASK 2
#define EMMA_SIGABRT 6

#define EMMA_EAGAIN 11
#define EMMA_EEXIST 17
#define EMMA_ESRCH 3
#define EMMA_EDEADLK 35
#define EMMA_ENOSYS 38
#define EMMA_EPERM 1

static inline long sys_call1(long n, long a)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a) : "rcx", "r11", "memory");
    return r;
}

static inline long sys_call2(long n, long a, long b)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}

static inline long sys_call3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

static inline long sys_call4(long n, long a, long b, long c, long d)
{
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}

static inline long sys_call5(long n, long a, long b, long c, long d, long e)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return r;
}

static inline long sys_call6(long n, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

static inline int sys_failed(long r) { return (unsigned long)r > (unsigned long)-4096L; }

#endif

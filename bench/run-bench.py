#!/usr/bin/env python3
# emma benchmark harness.
#
# Runs every workload with glibc (no preload), emma and Debian's mimalloc,
# jemalloc and tcmalloc (each selected with LD_PRELOAD of the same
# benchmark binaries), interleaved, several runs each, and prints one table
# of median wall time and median peak RSS as ratios to emma, with geometric
# means; then instructions per operation (callgrind) for the single-thread
# workloads, the fragmentation ratio, and which performance targets are met.
# Writes results.csv, ratios.png (gnuplot) and report.txt to the output dir.
#
# Usually run through `make bench` / `make bench-quick` in the build tree's
# bench/ directory; see bench/README.md.  Standard library only.
#
# SPDX-License-Identifier: MIT OR Apache-2.0

import argparse
import csv
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1024 * 1024

PEERS = [
    # name, Debian package, shared object to preload
    ("mimalloc", "libmimalloc2.0", "libmimalloc.so.2"),
    ("jemalloc", "libjemalloc2", "libjemalloc.so.2"),
    ("tcmalloc", "libtcmalloc-minimal4", "libtcmalloc_minimal.so.4"),
]

# Performance targets emma is tuned for (see README.md).
TARGET_TIME = {"mimalloc": 0.95, "jemalloc": 0.90, "tcmalloc": 0.90}
TARGET_WORST = 1.25
TARGET_RSS_VS = "mimalloc"
TARGET_FRAG = 1.30
TARGET_IPO_WORKLOAD = "tight-1t"


# --------------------------------------------------------------------------
# Workloads.  argv entries: "@name" is a benchmark binary from --bindir,
# "%src/..." a file in the source dir, "%out/..." a file in the output dir.
# full/quick: the argv of a timed run.  cg: (argv with n, argv with n0) for
# the callgrind instruction count, single-thread workloads only: the result
# is (Ir(n) - Ir(n0)) / (ops(n) - ops(n0)), which cancels process start-up
# and set-up work.

def W(name, desc, full, quick, cg=None, cg_quick=False, env=None, ops=True, timed=True):
    """timed=False: the run time is mostly the program's own sleeping (the
    idle-memory workloads), so it stays out of the time ratios, geomeans
    and the worst-workload target; its readings and peak RSS count."""
    return {"name": name, "desc": desc, "full": full, "quick": quick,
            "cg": cg, "cg_quick": cg_quick, "env": env or {}, "ops": ops,
            "timed": timed}


# Lines "rss_* BYTES", "cap_* BYTES" and "maps_* COUNT" a program prints are
# readings taken where a user would look (idle, after the threads exit...),
# reported in their own table next to the runner's peak RSS.
READING_PREFIXES = ("rss_", "cap_", "maps_")


# bench/oomcap's rounds: the sizes of the first round (until malloc returns
# NULL, then freed) and of the second, whose cap is reported.
_BIG, _MID = ("1-7 MiB", "1m-7m"), ("1-2 MiB", "1m-2m")
_SMALL, _LARGE = ("16 B-64 KiB", "16-64k"), ("64 KiB-1 MiB", "64k-1m")
OOMCAP_ROUNDS = [("big-mid", _BIG, _MID), ("big-small", _BIG, _SMALL),
                 ("big-large", _BIG, _LARGE), ("small-big", _SMALL, _BIG),
                 ("large-big", _LARGE, _BIG)]


WORKLOADS = [
    W("churn-small", "1 thread, 10k live objects of 16..512 B replaced at random",
      ["@churn", 30000000, 10000, 16, 512, "uniform"],
      ["@churn", 3000000, 10000, 16, 512, "uniform"],
      cg=(["@churn", 300000, 10000, 16, 512, "uniform"],
          ["@churn", 0, 10000, 16, 512, "uniform"]), cg_quick=True),
    W("churn-mixed", "1 thread, 10k live objects, skewed sizes up to 1 MiB",
      ["@churn", 6000000, 10000, 16, 1048576, "mixed"],
      ["@churn", 600000, 10000, 16, 1048576, "mixed"],
      cg=(["@churn", 100000, 10000, 16, 1048576, "mixed"],
          ["@churn", 0, 10000, 16, 1048576, "mixed"])),
    W("tight-1t", "1 thread, p=malloc(n); free(p), n in 16,32,64,128",
      ["@tight", 1, 150000000, "16,32,64,128", 1],
      ["@tight", 1, 15000000, "16,32,64,128", 1],
      cg=(["@tight", 1, 1000000, "16,32,64,128", 1],
          ["@tight", 1, 0, "16,32,64,128", 1]), cg_quick=True),
    W("tight-1t-batch", "1 thread, 1000 mallocs then 1000 frees, n in 16..128",
      ["@tight", 1, 60000000, "16,32,64,128", 1000],
      ["@tight", 1, 6000000, "16,32,64,128", 1000],
      cg=(["@tight", 1, 1000000, "16,32,64,128", 1000],
          ["@tight", 1, 0, "16,32,64,128", 1000])),
    W("tight-medium", "1 thread, 8 blocks of 16, 32 or 64 KiB then freed: a medium page "
      "filled and emptied",
      ["@tight", 1, 10000000, "16384,32768,65536", 8],
      ["@tight", 1, 1000000, "16384,32768,65536", 8],
      cg=(["@tight", 1, 200000, "16384,32768,65536", 8],
          ["@tight", 1, 0, "16384,32768,65536", 8])),
    W("tight-2t", "2 threads, each p=malloc(n); free(p), n in 16..128",
      ["@tight", 2, 100000000, "16,32,64,128", 1],
      ["@tight", 2, 10000000, "16,32,64,128", 1]),
    W("tight-big-1t", "1 thread, p=malloc(n); free(p), n in 128,256,512 KiB (the shared heap)",
      ["@tight", 1, 8000000, "131072,262144,524288", 1],
      ["@tight", 1, 800000, "131072,262144,524288", 1],
      cg=(["@tight", 1, 200000, "131072,262144,524288", 1],
          ["@tight", 1, 0, "131072,262144,524288", 1])),
    W("tight-big-4t", "4 threads, each as tight-big-1t: one shared heap's lock",
      ["@tight", 4, 2000000, "131072,262144,524288", 1],
      ["@tight", 4, 200000, "131072,262144,524288", 1]),
    W("larson", "4 chains of threads replacing objects, handing them on",
      ["@larson", 4, 50, 100000, 1000, 16, 1024],
      ["@larson", 4, 10, 50000, 1000, 16, 1024]),
    W("xmalloc", "producer thread mallocs, consumer thread frees (two CPUs)",
      ["@xmalloc", 1, 3000000, 16, 512],
      ["@xmalloc", 1, 300000, 16, 512]),
    W("cache-thrash", "2 threads write their own 8-byte objects (active false sharing)",
      ["@cache", "thrash", 2, 1000, 200000, 8],
      ["@cache", "thrash", 2, 1000, 30000, 8]),
    W("cache-scratch", "as cache-thrash, first freeing a neighbour from main (passive)",
      ["@cache", "scratch", 2, 1000, 200000, 8],
      ["@cache", "scratch", 2, 1000, 30000, 8]),
    W("mstress", "8 threads, random sizes and lifetimes, objects migrate",
      ["@mstress", 8, 10, 200000, 1000, 1000],
      ["@mstress", 8, 4, 50000, 1000, 1000]),
    W("realloc-grow", "2 vectors doubling to 256 MiB, 2000 small ones to 64 KiB",
      ["@realloc_grow", 256 * MIB, 3, 2, 2000],
      ["@realloc_grow", 64 * MIB, 1, 2, 500],
      cg=(["@realloc_grow", 16 * MIB, 1, 2, 200],
          ["@realloc_grow", 16 * MIB, 0, 2, 200])),
    W("calloc-big", "calloc(256 MiB) sparsely used, then 256 KiB callocs reused",
      ["@calloc_big", 256, 20, 256, 2000],
      ["@calloc_big", 256, 4, 256, 400],
      cg=(["@calloc_big", 64, 4, 256, 100], ["@calloc_big", 64, 0, 256, 0])),
    W("aligned", "500 live blocks of 1 KiB..1 MiB aligned to 64 B..2 MiB",
      ["@aligned", 100000, 500, 1024, 1048576, 2097152],
      ["@aligned", 15000, 500, 1024, 1048576, 2097152],
      cg=(["@aligned", 5000, 500, 1024, 1048576, 2097152],
          ["@aligned", 0, 500, 1024, 1048576, 2097152])),
    W("frag", "drifting size mix, random lifetimes: peak RSS vs peak live",
      ["@frag", 256, 12, 2],
      ["@frag", 64, 12, 1],
      cg=(["@frag", 16, 12, 1], ["@frag", 16, 6, 1])),
    # memory given back (issue 14): readings at idle / after exit
    W("pool-idle", "16 workers: 40 MiB of nodes + 6-24 MiB buffers per task, then idle, exit",
      ["@pool", 16, 32, 40, 3, 6, 24, 1000],
      ["@pool", 16, 16, 10, 2, 6, 24, 300], timed=False),
    W("idle-bound-exit", "16 threads: 16 KiB-1 MiB blocks, a quarter freed by others; all freed, exit",
      ["@idlebound", 16, 2000, "exit", 1500], ["@idlebound", 16, 500, "exit", 1000], timed=False),
    W("idle-bound-idle", "as idle-bound-exit, the 16 threads stay alive, idle",
      ["@idlebound", 16, 2000, "idle", 1500], ["@idlebound", 16, 500, "idle", 1000], timed=False),
    W("pairs-idle", "16 producer/consumer pairs hand 16 B-256 KiB blocks over, then idle; "
      "1 s quiet, 1 s one thread churns, trim",
      ["@pairs", "idle", 16, 50000, 65536, 1000], ["@pairs", "idle", 16, 5000, 65536, 1000],
      timed=False),
    W("pairs-exit", "as pairs-idle, the 32 threads exit",
      ["@pairs", "exit", 16, 50000, 65536, 1000], ["@pairs", "exit", 16, 5000, 65536, 1000],
      timed=False),
    W("idle-active", "a thread frees 24 MiB and idles; 2 threads churn for 1 s",
      ["@idlebig", "active", 24, 1000], ["@idlebig", "active", 24, 1000], timed=False),
    W("idle-quiet", "a thread frees 24 MiB and idles; nothing else runs for 1 s",
      ["@idlebig", "quiet", 24, 1000], ["@idlebig", "quiet", 24, 1000], timed=False),
    W("idle-exit", "a thread frees 24 MiB and exits; nothing else runs for 1 s",
      ["@idlebig", "exit", 24, 1000], ["@idlebig", "exit", 24, 1000], timed=False),
    W("producer-exit", "a thread allocates 1 GiB of small blocks and exits; main frees, trims",
      ["@producer", "exit", 1024, 1, 1000], ["@producer", "exit", 256, 1, 300], timed=False),
    W("producer-idle", "as producer-exit, the producer stays alive, idle",
      ["@producer", "idle", 1024, 1, 1000], ["@producer", "idle", 256, 1, 300], timed=False),
    W("reclaimer", "8 producers hand 1 GiB of small blocks to one freeing thread; all exit",
      ["@producer", "reclaim", 1024, 8, 1000], ["@producer", "reclaim", 256, 8, 300],
      timed=False),
    W("handoff-exit", "4 threads make 68 MiB of 64-512 B blocks, exit; main frees, churns 3 s",
      ["@handoff", "exit", "busy", 68, 4], ["@handoff", "exit", "busy", 68, 4], timed=False),
    W("handoff-idle", "as handoff-exit, the 4 threads stay alive, idle",
      ["@handoff", "idle", "busy", 68, 4], ["@handoff", "idle", "busy", 68, 4], timed=False),
    W("handoff-quiet", "as handoff-idle, main only sleeps after its frees",
      ["@handoff", "idle", "quiet", 68, 4], ["@handoff", "idle", "quiet", 68, 4], timed=False),
    W("realloc-shrink", "10 blocks of 20 MiB written, realloc'd to 100 KiB, 5 rounds",
      ["@shrink", 10, 20480, 100, 5], ["@shrink", 10, 20480, 100, 2]),
    W("bigbuf-sparse", "20 live buffers of 5-25 MiB touched sparsely, one replaced per step",
      ["@bigbuf", "sparse", 20000, 20, 5, 25], ["@bigbuf", "sparse", 5000, 20, 5, 25]),
    W("bigbuf-whole", "20 live buffers of 5-25 MiB zero-filled whole, one replaced per step",
      ["@bigbuf", "whole", 2000, 20, 5, 25], ["@bigbuf", "whole", 300, 20, 5, 25]),
    W("maps", "10,000 live blocks of 1-2 MiB: /proc/self/maps lines",
      ["@maps", 10000], ["@maps", 10000]),
    W("oomcap", "ulimit -v 400M: 200 MiB of small blocks freed, then 1-7 MiB blocks until NULL",
      ["@oomcap", 400, 200], ["@oomcap", 400, 200], timed=False),
    *[W("oomcap-" + name, "ulimit -v 256M: %s blocks until NULL, freed, then %s ones" % (a, b),
        ["@oomcap", "rounds", 256, ra, rb], ["@oomcap", "rounds", 256, ra, rb], timed=False)
      for name, (a, ra), (b, rb) in OOMCAP_ROUNDS],
    *[W("oomcap-grow-" + name, "ulimit -v 256M: one block grown by realloc %s at a time until NULL" % what,
        ["@oomcap", "grow", 256, step], ["@oomcap", "grow", 256, step], timed=False)
      for name, what, step in [("64k", "64 KiB", "64k"), ("1m", "1 MiB", "1m"),
                               ("half", "by half its size", "half")]],
    W("python", "Debian python3 (PYTHONMALLOC=malloc) building large dicts/lists",
      ["/usr/bin/python3", "%src/pydict.py", 400000],
      ["/usr/bin/python3", "%src/pydict.py", 100000],
      env={"PYTHONMALLOC": "malloc"}),
    W("python-gc", "Debian python3 (PYTHONMALLOC=malloc): full GC passes over a large dict",
      ["/usr/bin/python3", "%src/pygc.py", 400000, 5],
      ["/usr/bin/python3", "%src/pygc.py", 100000, 3],
      env={"PYTHONMALLOC": "malloc"}),
    W("gcc", "Debian gcc -O2 compiling a generated 250-function C file",
      ["/usr/bin/gcc", "-O2", "-c", "%out/big.c", "-o", "%out/big.o"],
      ["/usr/bin/gcc", "-O2", "-c", "%out/small.c", "-o", "%out/small.o"], ops=False),
]


# The arena workload (bench/arena.c): build a tree of small nodes, drop it
# all, repeat.  Not a malloc workload (nothing to preload): each variant is
# a program linked against one heap API, run interleaved with the others,
# and reported as ratios to emma-destroy.  Selected with --workloads arena
# (and part of every run without --workloads).  (name, program, mode,
# preload the emma library under test?)
ARENA = [
    ("emma-destroy", "@arena_emma", "destroy", True),
    ("emma-reset", "@arena_emma", "reset", True),
    ("emma-free", "@arena_emma", "free", True),
    ("emma-malloc", "@arena_emma", "malloc", True),
    ("mi-destroy", "@arena_mi", "destroy", False),
    ("mi-free", "@arena_mi", "free", False),
    ("mi-malloc", "@arena_mi", "malloc", False),
    ("glibc-malloc", "@arena_libc", "malloc", False),
]
ARENA_ARGS = {"full": [200000, 50], "quick": [100000, 10]}
ARENA_DESC = ("arena: a random tree of N nodes of 24..120 B built, summed and dropped, "
              "R rounds; destroy/reset = the heap at once, free = each node into its "
              "heap, malloc = malloc/free of each node")


def run_arena(runner, emma_lib, runs, mode, timeout):
    """Interleaved timed runs of the arena variants: {name: [records]}."""
    variants = []
    for name, prog, m, preload in ARENA:
        path = runner.argv([prog])[0]
        if not os.path.exists(path):
            log("bench: arena: %s not built (%s): left out" % (name, path))
            continue
        if preload and not emma_lib:
            continue
        variants.append((name, [prog, m] + ARENA_ARGS[mode], preload))
    raw = {}
    for k in range(runs):
        order = variants[k % len(variants):] + variants[:k % len(variants)] if variants else []
        for name, argv, preload in order:
            env = dict(os.environ)
            env.pop("LD_PRELOAD", None)
            env.pop("BENCH_CHILD_PRELOAD", None)
            if preload:
                env["BENCH_CHILD_PRELOAD"] = emma_lib
            m = runner.measure(runner.argv(argv), env, timeout)
            st, wall, rss, out, err = m["status"], m["wall"], m["rss"], m["out"], m["err"]
            rec = {"run": k + 1, "status": st, "wall": wall, "rss": rss,
                   "ops": parse_kv(out).get("ops"), "sum": parse_kv(out).get("sum")}
            raw.setdefault(name, []).append(rec)
            if st != "ok":
                log("bench: FAIL arena %s: %s %s" % (name, st, err.strip()[-200:]))
            else:
                log("bench: run %d/%d arena %-13s %7.3f s %8.1f MiB"
                    % (k + 1, runs, name, wall, rss / 1024))
    return raw


def arena_report(raw):
    lines = ["", ARENA_DESC + " (N, R = %s)." % ", ".join(
        "%s %s" % (m, " ".join(map(str, a))) for m, a in ARENA_ARGS.items()),
        "Median wall time and peak RSS, ratios to emma-destroy (interleaved runs):",
        "%-13s %9s %9s %9s %9s" % ("variant", "s", "ratio", "MiB", "ratio")]
    med = {}
    for name, recs in raw.items():
        ok = [r for r in recs if r["status"] == "ok"]
        if ok and len(ok) == len(recs):
            med[name] = (median([r["wall"] for r in ok]), median([r["rss"] for r in ok]))
    base = med.get("emma-destroy")
    sums = {r["sum"] for recs in raw.values() for r in recs if r["status"] == "ok"}
    for name, _, _, _ in ARENA:
        if name not in raw:
            continue
        if name not in med:
            lines.append("%-13s %9s" % (name, "FAIL"))
            continue
        w, rss = med[name]
        lines.append("%-13s %9.3f %9s %9.1f %9s" % (
            name, w, "%.2f" % (w / base[0]) if base else "-", rss / 1024,
            "%.2f" % (rss / base[1]) if base else "-"))
    if len(sums) > 1:
        lines.append("note: arena variants disagree on the tree's sum: %s" % sorted(sums))
    return lines


# --------------------------------------------------------------------------
def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan")
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    if not xs:
        return float("nan")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def parse_kv(text):
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


class Runner:
    def __init__(self, args):
        self.args = args
        self.bindir = os.path.abspath(args.bindir)
        self.srcdir = os.path.abspath(args.srcdir)
        self.out = os.path.abspath(args.out)

    def argv(self, spec):
        res = []
        for a in spec:
            a = str(a)
            if a.startswith("@"):
                res.append(os.path.join(self.bindir, a[1:]))
            elif a.startswith("%src/"):
                res.append(os.path.join(self.srcdir, a[5:]))
            elif a.startswith("%out/"):
                res.append(os.path.join(self.out, a[5:]))
            else:
                res.append(a)
        return res

    def env(self, alloc, extra, via_runner=False):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.pop("BENCH_CHILD_PRELOAD", None)
        env.update(extra)
        if alloc["lib"]:
            env["BENCH_CHILD_PRELOAD" if via_runner else "LD_PRELOAD"] = alloc["lib"]
        return env

    def measure(self, argv, env, timeout):
        """Run argv through the C runner: a dict with status, wall (s), rss
        (peak KiB), out, err and rusage (user_s, sys_s, minflt, nvcsw,
        nivcsw; empty if the runner failed)."""
        fd, resfile = tempfile.mkstemp(prefix="bench-", dir=self.out)
        os.close(fd)
        try:
            cmd = [os.path.join(self.bindir, "runner"), resfile, str(timeout)] + argv
            st, wall, rss, out, err = self.run(cmd, env, timeout + 30)
            res = {}
            with open(resfile) as f:
                for line in f:
                    k, _, v = line.strip().partition(" ")
                    res[k] = v
        finally:
            os.unlink(resfile)
        m = {"status": st, "wall": wall, "rss": rss, "out": out, "err": err, "rusage": {}}
        if st != "ok" or "status" not in res:
            m["status"] = "runner failed: " + st
            return m
        rst = res["status"]
        if rst == "timeout":
            rst = "timeout after %ds" % timeout
        elif rst.startswith("signal"):
            rst = "killed by signal " + rst.split()[1]
        elif rst.startswith("exit"):
            rst = "exit status " + rst.split()[1]
        m.update(status=rst, wall=float(res["wall_s"]), rss=int(res["maxrss_kib"]),
                 rusage={k: float(res.get(k, "nan"))
                         for k in ("user_s", "sys_s", "minflt", "nvcsw", "nivcsw")})
        return m

    def run(self, argv, env, timeout):
        """Run argv; return (status, wall seconds, ru_maxrss KiB, stdout, stderr)."""
        with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
            t0 = time.perf_counter()
            try:
                p = subprocess.Popen(argv, env=env, stdout=fo, stderr=fe,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                return ("cannot start: %s" % e, 0.0, 0, "", "")
            timed_out = []

            def kill():
                timed_out.append(True)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                _, status, ru = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - t0
            p.returncode = 0  # reaped by wait4 already
            fo.seek(0)
            fe.seek(0)
            out = fo.read().decode(errors="replace")
            err = fe.read().decode(errors="replace")
        if timed_out:
            st = "timeout after %ds" % timeout
        elif os.WIFSIGNALED(status):
            st = "killed by signal %d" % os.WTERMSIG(status)
        elif os.WEXITSTATUS(status) != 0:
            st = "exit status %d" % os.WEXITSTATUS(status)
        else:
            st = "ok"
        return (st, wall, ru.ru_maxrss, out, err)


# --------------------------------------------------------------------------
def find_peer_lib(pkg, soname):
    try:
        files = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True,
                               check=False).stdout.split()
    except OSError:
        files = []
    for f in files:
        if os.path.basename(f) == soname and os.path.exists(f):
            return f
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib"):
        f = os.path.join(d, soname)
        if os.path.exists(f):
            return f
    return None


def missing_packages():
    """Debian packages the harness would use but cannot find."""
    missing = [pkg for _, pkg, soname in PEERS if not find_peer_lib(pkg, soname)]
    if not shutil.which("gnuplot"):
        missing.append("gnuplot-nox")
    if not shutil.which("valgrind"):
        missing.append("valgrind")
    return missing


def install_packages(missing):
    """--install: apt-get install what is missing (needs root)."""
    if os.geteuid() != 0:
        sys.exit("bench: --install needs root (missing: %s)" % ", ".join(missing))
    log("bench: installing %s with apt-get" % " ".join(missing))
    cmd = ["apt-get", "install", "-y"] + missing
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL)
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            log("bench: apt-get install failed; going on with what is there")


def check_packages(args):
    """Say what is missing; install it only when asked to (--install)."""
    missing = missing_packages()
    if not missing:
        return
    if args.install:
        install_packages(missing)
    else:
        log("bench: missing %s: left out (install them with apt-get install -y %s, "
            "or run the harness as root with --install)" % (", ".join(missing), " ".join(missing)))


def resolve_emma(path):
    """EMMA_LIB may name the library itself or a build directory."""
    if path and os.path.isdir(path):
        for cand in ("lib/.libs/libemma.so.0", ".libs/libemma.so.0", "libemma.so.0"):
            f = os.path.join(path, cand)
            if os.path.exists(f):
                return os.path.abspath(f)
        return os.path.abspath(os.path.join(path, "lib/.libs/libemma.so.0"))
    return os.path.abspath(path) if path else None


def build_allocators(args, runner):
    allocs = []
    emma = resolve_emma(os.environ.get("EMMA_LIB") or args.emma_lib)
    if emma and os.path.exists(emma):
        allocs.append({"name": "emma", "lib": emma})
    else:
        log("bench: emma library not found (%s): emma is left out" % emma)
    allocs.append({"name": "glibc", "lib": None})
    for name, pkg, soname in PEERS:
        lib = find_peer_lib(pkg, soname)
        if lib:
            allocs.append({"name": name, "lib": lib})
        else:
            log("bench: %s not found (package %s): left out" % (name, pkg))
    if args.allocators:
        keep = args.allocators.split(",")
        allocs = [a for a in allocs if a["name"] in keep]
    for extra in args.also:
        if "=" not in extra:
            sys.exit("bench: --also wants NAME=PATH, got %r" % extra)
        name, path = extra.split("=", 1)
        lib = resolve_emma(path)
        if not os.path.exists(lib):
            sys.exit("bench: --also %s: %s does not exist" % (name, lib))
        allocs.append({"name": name, "lib": lib})
    # check that the preload really replaces malloc
    which = os.path.join(runner.bindir, "whichmalloc")
    good = []
    for a in allocs:
        st, _, _, out, err = runner.run([which], runner.env(a, {}), 30)
        kv = out.split()
        src = kv[1] if len(kv) >= 2 and kv[0] == "malloc_from" else "?"
        want = a["lib"] or "libc.so.6"
        ok = st == "ok" and (os.path.realpath(src) == os.path.realpath(want)
                             if a["lib"] else os.path.basename(src).startswith("libc.so"))
        if a["lib"] and ok and a["name"].startswith("emma") and "emma_owns 1" not in out:
            ok = False
        if ok:
            good.append(a)
            a["check"] = src
        else:
            log("bench: %s: malloc does not come from %s (%s: %s %s); left out"
                % (a["name"], want, st, out.strip(), err.strip()))
    return good


# --------------------------------------------------------------------------
def callgrind_costs(path):
    """Total Ir and self Ir per object file from a callgrind output file."""
    names = {}
    per_ob = {}
    cur = None
    total = None
    skip = False
    with open(path) as f:
        for line in f:
            if skip:            # the cost line after calls= is inclusive
                skip = False
                continue
            c = line[:1]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    per_ob[cur] = per_ob.get(cur, 0) + int(parts[1])
            elif line.startswith("ob=") or line.startswith("cob="):
                # "(id) name" defines a compressed name, "(id)" uses it;
                # ob= and cob= share one table.  Only ob= changes the
                # object that the following self costs belong to.
                v = line.split("=", 1)[1].strip()
                name = v
                if v.startswith("("):
                    i = v.index(")")
                    key, nm = v[:i + 1], v[i + 1:].strip()
                    if nm:
                        names[key] = nm
                    name = names.get(key, key)
                if line.startswith("ob="):
                    cur = name
            elif line.startswith("calls="):
                skip = True
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    return total, per_ob


def callgrind_ir(runner, argv, env, outfile, timeout):
    """Run argv under callgrind: (total Ir, Ir outside the program's own
    executable, ops, status).  The benchmark programs call no library
    function but the allocator's in their loops, so the second figure is
    the allocator's work, including whatever libc or ld.so code the
    allocator itself calls."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + outfile] + argv
    st, _, _, out, err = runner.run(cmd, env, timeout)
    if st != "ok":
        tail = err.strip().splitlines()
        return None, None, None, "%s: %s" % (st, tail[-1]) if tail else st
    total, per_ob = callgrind_costs(outfile)
    prog = os.path.realpath(argv[0])
    lib_ir = total - sum(v for ob, v in per_ob.items()
                         if ob and os.path.realpath(ob) == prog)
    ops = parse_kv(out).get("ops")
    if total is None or ops is None:
        return None, None, None, "no Ir/ops found"
    return total, lib_ir, ops, "ok"


def run_callgrind(runner, allocs, workloads, quick, timeout):
    cgdir = os.path.join(runner.out, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    jobs = []
    for w in workloads:
        if not w["cg"] or (quick and not w["cg_quick"]):
            continue
        for a in allocs:
            jobs.append((w, a))
    results = {}
    lock = threading.Lock()

    def do(job):
        w, a = job
        env = runner.env(a, w["env"])
        f1 = os.path.join(cgdir, "%s.%s.out" % (w["name"], a["name"]))
        f0 = os.path.join(cgdir, "%s.%s.base.out" % (w["name"], a["name"]))
        ir1, lib1, ops1, st1 = callgrind_ir(runner, runner.argv(w["cg"][0]), env, f1,
                                            timeout)
        ir0, lib0, ops0, st0 = callgrind_ir(runner, runner.argv(w["cg"][1]), env, f0,
                                            timeout)
        if os.path.exists(f0):
            os.unlink(f0)
        if st1 == "ok" and st0 == "ok" and ops1 > ops0:
            r = {"ir": ir1, "ops": ops1, "ir0": ir0, "ops0": ops0,
                 "per_op": (ir1 - ir0) / (ops1 - ops0),
                 "lib_per_op": (lib1 - lib0) / (ops1 - ops0), "status": "ok"}
        else:
            r = {"status": st1 if st1 != "ok" else st0}
        with lock:
            results[(w["name"], a["name"])] = r
            log("bench: callgrind %-15s %-9s %s" % (
                w["name"], a["name"],
                "%.1f instructions/op (%.1f in the allocator)" % (r["per_op"], r["lib_per_op"])
                if r["status"] == "ok" else r["status"]))

    # callgrind counts are deterministic: run two at a time
    pending = list(jobs)
    threads = []
    plock = threading.Lock()

    def worker():
        while True:
            with plock:
                if not pending:
                    return
                job = pending.pop(0)
            do(job)
    for _ in range(max(1, min(2, os.cpu_count() or 1))):
        t = threading.Thread(target=worker)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return results


# --------------------------------------------------------------------------
def fmt_count(x):
    """Instruction counts, compact: 42, 6923, 123k, 505M."""
    if abs(x) >= 1e9:
        return "%.3gG" % (x / 1e9)
    if abs(x) >= 1e6:
        return "%.3gM" % (x / 1e6)
    if abs(x) >= 1e5:
        return "%.3gk" % (x / 1e3)
    return "%.0f" % x


def fmt_ratio(x):
    if x is None or not math.isfinite(x):
        return "FAIL"
    return "%.2f" % x


def parse_args():
    ap = argparse.ArgumentParser(description="emma benchmark harness (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="small parameters, 2 runs")
    ap.add_argument("--runs", type=int, help="runs per allocator and workload (default 5, quick 2)")
    ap.add_argument("--emma-lib", default=None,
                    help="libemma.so.0 or a build dir (the EMMA_LIB environment variable wins)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                    help="benchmark another library too, e.g. emma-notls=/tmp/bb-notls")
    ap.add_argument("--bindir", default=".", help="where the benchmark binaries are")
    ap.add_argument("--srcdir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default="bench-results", help="output directory")
    ap.add_argument("--allocators", help="comma-separated subset (emma,glibc,mimalloc,...)")
    ap.add_argument("--workloads", help="comma-separated subset of workloads")
    ap.add_argument("--baseline", default="emma", help="allocator the ratios are relative to")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--install", action="store_true",
                    help="apt-get install the missing peers, gnuplot-nox and valgrind (as root)")
    ap.add_argument("--no-install", action="store_true",
                    help="accepted for old command lines; installing needs --install")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per run (default 120, quick 60)")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    return ap.parse_args()


def list_workloads():
    for w in WORKLOADS:
        print("%-15s %s" % (w["name"], w["desc"]))
    print("%-15s %s" % ("arena", ARENA_DESC))


def select_workloads(spec):
    """(the WORKLOADS named in spec, or all; whether the arena runs)."""
    if not spec:
        return WORKLOADS, True
    keep = spec.split(",")
    unknown = set(keep) - {w["name"] for w in WORKLOADS} - {"arena"}
    if unknown:
        sys.exit("bench: unknown workloads: %s" % ", ".join(sorted(unknown)))
    return [w for w in WORKLOADS if w["name"] in keep], "arena" in keep


def make_inputs(runner):
    """The generated C sources the gcc workload compiles."""
    gen = os.path.join(runner.srcdir, "gen_bigc.py")
    subprocess.run([sys.executable, gen, "250", os.path.join(runner.out, "big.c")], check=True)
    subprocess.run([sys.executable, gen, "40", os.path.join(runner.out, "small.c")], check=True)


def choose_baseline(wanted, names):
    base = wanted if wanted in names else names[0]
    if base != wanted:
        log("bench: baseline %s missing; ratios are relative to %s" % (wanted, base))
    return base


def report_header(runner, allocs, mode, runs):
    """The lines saying what ran where (logged at once, and the report's top)."""
    header = ["emma benchmark, %s mode, %d run(s) per allocator and workload, %s"
              % (mode, runs, time.strftime("%Y-%m-%d %H:%M:%S")),
              "machine: %s, %d cores, kernel %s, load average at start %.2f"
              % (platform.machine(), os.cpu_count() or 0, platform.release(),
                 os.getloadavg()[0])]
    try:
        desc = subprocess.run(["git", "-C", runner.srcdir, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        desc = ""
    if desc:
        header.append("source tree: %s (git describe --always --dirty)" % desc)
    for a in allocs:
        header.append("  %-9s %s" % (a["name"], a["lib"] or "(no preload: glibc malloc)"))
    for h in header:
        log(h)
    return header


def timed_run(runner, w, a, k, mode, timeout):
    """Run k of workload w with allocator a: the record of the run."""
    m = runner.measure(runner.argv(w[mode]), runner.env(a, w["env"], True), timeout)
    kv = parse_kv(m["out"])
    st = m["status"]
    if st == "ok" and w["ops"] and "ops" not in kv:
        st = "no ops line in output"
    rec = {"run": k + 1, "status": st, "wall": m["wall"], "rss": m["rss"],
           "ops": kv.get("ops"), "peak_live": kv.get("peak_live"),
           "misaligned": kv.get("misaligned"), "load": os.getloadavg()[0],
           "err": m["err"],
           "readings": {x: v for x, v in kv.items() if x.startswith(READING_PREFIXES)}}
    rec.update(m["rusage"])
    return rec


def timed_runs(runner, allocs, workloads, runs, mode, timeout):
    """Interleaved: run k of every allocator before run k + 1, the
    allocators' order rotating.  Returns (raw: (workload, allocator) ->
    records, failed: (workload, allocator) -> reason)."""
    raw = {}
    failed = {}
    for k in range(runs):
        for w in workloads:
            order = allocs[k % len(allocs):] + allocs[:k % len(allocs)]
            for a in order:
                key = (w["name"], a["name"])
                if key in failed:
                    continue
                rec = timed_run(runner, w, a, k, mode, timeout)
                raw.setdefault(key, []).append(rec)
                if rec["status"] != "ok":
                    tail = " | ".join(rec["err"].strip().splitlines()[-2:])
                    failed[key] = "%s (%s)" % (rec["status"], tail) if tail else rec["status"]
                    log("bench: FAIL %s with %s: %s" % (w["name"], a["name"], failed[key]))
                else:
                    log("bench: run %d/%d %-15s %-9s %7.3f s %8.1f MiB"
                        % (k + 1, runs, w["name"], a["name"], rec["wall"], rec["rss"] / 1024))
    return raw, failed


def medians(raw, failed, workloads, allocs):
    """(workload, allocator) -> medians of the successful runs."""
    med = {}
    for w in workloads:
        for a in allocs:
            key = (w["name"], a["name"])
            recs = [r for r in raw.get(key, []) if r["status"] == "ok"]
            if key in failed or not recs:
                continue
            walls = [r["wall"] for r in recs]
            med[key] = {"wall": median(walls),
                        "spread": (max(walls) - min(walls)) / median(walls) if median(walls) else 0,
                        "rss": median([r["rss"] for r in recs]),
                        "user": median([r.get("user_s", float("nan")) for r in recs]),
                        "sys": median([r.get("sys_s", float("nan")) for r in recs]),
                        "minflt": median([r.get("minflt", float("nan")) for r in recs]),
                        "ops": recs[0]["ops"], "peak_live": recs[0]["peak_live"],
                        "misaligned": max((r["misaligned"] or 0) for r in recs),
                        "readings": {x: median([r["readings"][x] for r in recs
                                                if x in r["readings"]])
                                     for x in recs[0]["readings"]}}
    return med


class Results:
    """Everything measured, and the ratios to the baseline."""

    def __init__(self, workloads, allocs, base, raw, failed, cg, arena_raw):
        self.workloads = workloads
        self.allocs = allocs
        self.names = [a["name"] for a in allocs]
        self.base = base
        self.others = [n for n in self.names if n != base]
        self.raw = raw
        self.failed = failed
        self.med = medians(raw, failed, workloads, allocs)
        self.cg = cg
        self.arena_raw = arena_raw

    def ratio(self, wn, an, field):
        a = self.med.get((wn, an))
        b = self.med.get((wn, self.base))
        if not a or not b or not b[field]:
            return None
        return a[field] / b[field]


COL = 9


def time_rss_table(res):
    """The main table.  Returns (lines, geomean time ratios, geomean RSS
    ratios, [(workload, baseline time / fastest time)])."""
    base, others, med = res.base, res.others, res.med
    lines = ["", "Median wall time and median peak RSS; other allocators as ratios %s/%s"
             % ("X", base),
             "(ratio > 1: X is slower / uses more memory than %s).  'best' = %s's "
             "time / the fastest allocator's;" % (base, base),
             "'+-' = (max - min) / median of %s's run times; 'sys' = %s's system "
             "time share of its CPU time." % (base, base)]
    h1 = "%-15s | %8s %4s %4s %s %6s | %8s %s" % (
        "workload", base + " s", "+-", "sys", "".join("%*s" % (COL, n) for n in others),
        "best", base + " MiB", "".join("%*s" % (COL, n) for n in others))
    lines += [h1, "-" * len(h1)]
    time_r = {n: [] for n in others}
    rss_r = {n: [] for n in others}
    worst = []
    notes = []
    for w in res.workloads:
        wn = w["name"]
        b = med.get((wn, base))
        trow, rrow = [], []
        for n in others:
            tr, rr = res.ratio(wn, n, "wall"), res.ratio(wn, n, "rss")
            bad = "FAIL" if (wn, n) in res.failed else "-"
            trow.append("%*s" % (COL, fmt_ratio(tr) if tr is not None else bad))
            rrow.append("%*s" % (COL, fmt_ratio(rr) if rr is not None else bad))
            if tr is not None and w["timed"]:
                time_r[n].append(tr)
            if rr is not None:
                rss_r[n].append(rr)
        best = "-"
        if b:
            fastest = min(m["wall"] for (x, _), m in med.items() if x == wn)
            best_ratio = b["wall"] / fastest
            best = "%.2f" % best_ratio if w["timed"] else "(%.2f)" % best_ratio
            if w["timed"]:
                worst.append((wn, best_ratio))
        spread = "%3.0f%%" % (100 * b["spread"]) if b else "-"
        cpu = (b["user"] + b["sys"]) if b else float("nan")
        sysp = "%3.0f%%" % (100 * b["sys"] / cpu) if b and cpu > 0 else "-"
        lines.append("%-15s | %8s %4s %4s %s %6s | %8s %s" % (
            wn, "%.3f" % b["wall"] if b else "FAIL", spread, sysp, "".join(trow), best,
            "%.1f" % (b["rss"] / 1024) if b else "FAIL", "".join(rrow)))
        for n in res.names:
            m = med.get((wn, n))
            if m and m["misaligned"]:
                notes.append("%s: %s returned %d misaligned blocks (an allocator bug)"
                             % (wn, n, m["misaligned"]))
    lines.append("-" * len(h1))
    gt = {n: geomean(time_r[n]) for n in others}
    gr = {n: geomean(rss_r[n]) for n in others}
    lines.append("%-15s | %8s %4s %4s %s %6s | %8s %s" % (
        "geomean", "1", "", "", "".join("%*s" % (COL, fmt_ratio(gt[n])) for n in others), "",
        "1", "".join("%*s" % (COL, fmt_ratio(gr[n])) for n in others)))
    for (wn, an), why in sorted(res.failed.items()):
        notes.append("%s with %s failed: %s" % (wn, an, why))
    if notes:
        lines.append("")
        lines.extend("note: " + n for n in notes)
    return lines, gt, gr, worst


def readings_table(res):
    """The readings the programs took themselves (idle, after exit, ...)."""
    rd = [(w["name"], k) for w in res.workloads
          for k in sorted({k for n in res.names
                           for k in (res.med.get((w["name"], n)) or {}).get("readings", {})})]
    if not rd:
        return []
    def reading(wn, n, k):
        return ((res.med.get((wn, n)) or {}).get("readings") or {}).get(k)

    # cap_* readings (bytes an allocator could still hand out under a
    # limit) also as a ratio of glibc's: issue 14 asks for at least 0.95
    caps = "glibc" in res.names and any(k.startswith("cap_") for _, k in rd)
    lines = ["", "Readings taken by the programs (median; rss_*/cap_* in MiB, maps_* "
             "in lines of /proc/self/maps%s):" % ("; cap vs glibc: each allocator's "
                                                  "cap_* over glibc's" if caps else ""),
             "%-28s %s" % ("workload reading", "".join("%*s" % (COL + 1, n) for n in res.names))]
    for wn, k in rd:
        cells = []
        for n in res.names:
            v = reading(wn, n, k)
            if v is None:
                cells.append("%*s" % (COL + 1, "-"))
            elif k.startswith("maps_"):
                cells.append("%*d" % (COL + 1, v))
            else:
                cells.append("%*.1f" % (COL + 1, v / MIB))
        lines.append("%-28s %s" % (wn + " " + k, "".join(cells)))
        g = reading(wn, "glibc", k) if caps and k.startswith("cap_") else None
        if g:
            cells = []
            for n in res.names:
                v = reading(wn, n, k)
                cells.append("%*s" % (COL + 1, "-" if v is None else "%.3f" % (v / g)))
            lines.append("%-28s %s" % ("  cap vs glibc", "".join(cells)))
    lines.append("(workloads whose 'best' is in parentheses mostly sleep: their time is "
                 "left out of the time ratios)")
    return lines


def fault_table(res):
    """Page faults: where allocators hand memory back and fault it in again."""
    lines = ["", "Minor page faults per run (median, thousands; from the runner's rusage):",
             "%-15s %s" % ("workload", "".join("%*s" % (COL + 1, n) for n in res.names))]
    for w in res.workloads:
        cells = []
        for n in res.names:
            m = res.med.get((w["name"], n))
            f = m["minflt"] if m else float("nan")
            cells.append("%*s" % (COL + 1, "%.0f" % (f / 1000) if math.isfinite(f) else "-"))
        lines.append("%-15s %s" % (w["name"], "".join(cells)))
    return lines


def frag_ratios(res):
    """allocator -> peak RSS / peak live bytes of the frag workload."""
    frag = {}
    for n in res.names:
        m = res.med.get(("frag", n))
        if m and m["peak_live"]:
            frag[n] = m["rss"] * 1024 / m["peak_live"]
    return frag


def frag_lines(res, frag):
    if not frag:
        return []
    live = next(res.med[("frag", n)]["peak_live"] for n in frag)
    return ["", "frag: peak live %.1f MiB; peak RSS / peak live: %s" % (
        live / MIB, "  ".join("%s %.2f" % (n, frag[n]) for n in res.names if n in frag))]


def callgrind_table(res):
    if not res.cg:
        return []
    names = res.names
    lines = ["", "Instructions per op (callgrind; (Ir(n)-Ir(n0))/(ops(n)-ops(n0)), see README):",
             "  whole program / outside the benchmark's own code (= in the allocator)",
             "%-15s %s" % ("workload", "".join("%*s" % (COL + 6, n) for n in names))]
    for wn in [w["name"] for w in res.workloads if (w["name"], names[0]) in res.cg]:
        cells = []
        for n in names:
            r = res.cg.get((wn, n))
            cells.append("%*s" % (COL + 6, "%s / %s" % (fmt_count(r["per_op"]),
                                                        fmt_count(r["lib_per_op"]))
                                  if r and r["status"] == "ok" else "FAIL"))
        lines.append("%-15s %s" % (wn, "".join(cells)))
    return lines


def target_lines(res, gt, gr, worst, frag):
    """Which of emma's performance targets the run met."""
    lines = ["", "Targets (emma):"]
    tres = []

    def target(ok, text):
        tres.append(ok)
        lines.append("  [%s] %s" % ("MET   " if ok else "MISSED" if ok is not None else "N/A   ", text))

    if res.base != "emma":
        lines.append("  (not evaluated: emma is not the baseline)")
        return lines
    for peer, lim in TARGET_TIME.items():
        if peer in gt and math.isfinite(gt[peer]):
            v = 1 / gt[peer]
            target(v <= lim, "time geomean emma/%s = %.3f (target <= %.2f)" % (peer, v, lim))
        else:
            target(None, "time geomean vs %s: no data" % peer)
    bad = [(wn, r) for wn, r in worst if r > TARGET_WORST]
    failed_emma = [wn for (wn, an) in res.failed if an == "emma"]
    target(not bad and not failed_emma and bool(worst),
           "no workload slower than %.2fx the best: %s" % (
               TARGET_WORST,
               "worst %s %.2fx" % max(worst, key=lambda x: x[1]) if worst else "no data")
           + ("; over: " + ", ".join("%s %.2fx" % x for x in bad) if bad else "")
           + ("; failed: " + ", ".join(failed_emma) if failed_emma else ""))
    if TARGET_RSS_VS in gr and math.isfinite(gr[TARGET_RSS_VS]):
        v = 1 / gr[TARGET_RSS_VS]
        target(v <= 1.0, "peak RSS geomean emma/%s = %.3f (target <= 1.00)" % (TARGET_RSS_VS, v))
    else:
        target(None, "peak RSS geomean vs %s: no data" % TARGET_RSS_VS)
    if "emma" in frag:
        target(frag["emma"] <= TARGET_FRAG, "frag peak RSS / peak live = %.2f (target <= %.2f)"
               % (frag["emma"], TARGET_FRAG))
    else:
        target(None, "frag: no data")
    e = res.cg.get((TARGET_IPO_WORKLOAD, "emma"))
    m = res.cg.get((TARGET_IPO_WORKLOAD, "mimalloc"))
    if e and m and e["status"] == "ok" and m["status"] == "ok":
        target(e["lib_per_op"] < m["lib_per_op"],
               "instructions per malloc+free in the allocator (%s): emma %.1f vs "
               "mimalloc %.1f (target: fewer; whole program %.1f vs %.1f)"
               % (TARGET_IPO_WORKLOAD, e["lib_per_op"], m["lib_per_op"],
                  e["per_op"], m["per_op"]))
    else:
        target(None, "instructions per malloc+free: no callgrind data")
    lines.append("  %d of %d targets met" % (sum(1 for t in tres if t), len(tres)))
    return lines


def build_report(res, header, t_timed, out):
    lines = list(header)
    table, gt, gr, worst = time_rss_table(res)
    frag = frag_ratios(res)
    lines += table + readings_table(res) + fault_table(res) + frag_lines(res, frag) + callgrind_table(res)
    if res.arena_raw:
        lines.extend(arena_report(res.arena_raw))
    lines += target_lines(res, gt, gr, worst, frag)
    lines += ["", "timed runs took %.0f s; results in %s" % (t_timed, out)]
    return "\n".join(lines) + "\n"


def write_csv(res, path):
    """Raw runs, medians, arena runs, callgrind counts."""
    base = res.base
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["kind", "workload", "allocator", "run", "status", "wall_s",
                     "maxrss_kib", "ops", "peak_live_bytes", "time_ratio_to_" + base,
                     "rss_ratio_to_" + base, "instructions", "instructions_per_op",
                     "allocator_instructions_per_op", "user_s", "sys_s", "minflt",
                     "nvcsw", "nivcsw", "loadavg"])
        for w in res.workloads:
            for a in res.allocs:
                for r in res.raw.get((w["name"], a["name"]), []):
                    wr.writerow(["run", w["name"], a["name"], r["run"], r["status"],
                                 "%.4f" % r["wall"], r["rss"], r["ops"] or "",
                                 r["peak_live"] or "", "", "", "", "", "",
                                 r.get("user_s", ""), r.get("sys_s", ""),
                                 "%.0f" % r["minflt"] if "minflt" in r else "",
                                 "%.0f" % r["nvcsw"] if "nvcsw" in r else "",
                                 "%.0f" % r["nivcsw"] if "nivcsw" in r else "",
                                 "%.2f" % r["load"]])
        for w in res.workloads:
            for a in res.allocs:
                m = res.med.get((w["name"], a["name"]))
                if not m:
                    continue
                tr = res.ratio(w["name"], a["name"], "wall")
                rr = res.ratio(w["name"], a["name"], "rss")
                wr.writerow(["median", w["name"], a["name"], "", "ok", "%.4f" % m["wall"],
                             "%.0f" % m["rss"], m["ops"] or "", m["peak_live"] or "",
                             "%.4f" % tr if tr else "", "%.4f" % rr if rr else "", "", "", "",
                             "%.4f" % m["user"], "%.4f" % m["sys"], "%.0f" % m["minflt"],
                             "", "", ""])
        for name, recs in res.arena_raw.items():
            for r in recs:
                wr.writerow(["arena", "arena", name, r["run"], r["status"], "%.4f" % r["wall"],
                             r["rss"], r["ops"] or "", "", "", "", "", "", "", "", "", "",
                             "", "", ""])
        for w in res.workloads:
            for a in res.allocs:
                m = res.med.get((w["name"], a["name"]))
                for k, v in sorted((m or {}).get("readings", {}).items()):
                    wr.writerow(["reading", w["name"], a["name"], k, "ok", "", "", v,
                                 "", "", "", "", "", "", "", "", "", "", "", ""])
        for (wn, an), r in sorted(res.cg.items()):
            wr.writerow(["callgrind", wn, an, "", r["status"], "", "", r.get("ops", ""), "",
                         "", "", r.get("ir", ""),
                         "%.2f" % r["per_op"] if r["status"] == "ok" else "",
                         "%.2f" % r["lib_per_op"] if r["status"] == "ok" else "",
                         "", "", "", "", "", ""])


def main():
    args = parse_args()
    if args.list:
        list_workloads()
        return 0
    runs = args.runs or (2 if args.quick else 5)
    timeout = args.timeout or (60 if args.quick else 120)
    mode = "quick" if args.quick else "full"

    os.makedirs(args.out, exist_ok=True)
    runner = Runner(args)
    check_packages(args)
    workloads, want_arena = select_workloads(args.workloads)
    make_inputs(runner)
    allocs = build_allocators(args, runner)
    if not allocs:
        sys.exit("bench: no allocator to benchmark")
    base = choose_baseline(args.baseline, [a["name"] for a in allocs])
    header = report_header(runner, allocs, mode, runs)

    t_start = time.time()
    raw, failed = timed_runs(runner, allocs, workloads, runs, mode, timeout)
    arena_raw = {}
    if want_arena:
        emma_arena = next((a["lib"] for a in allocs if a["name"] == "emma"), None)
        arena_raw = run_arena(runner, emma_arena, runs, mode, timeout)
    t_timed = time.time() - t_start

    cg = {}
    if args.no_callgrind:
        pass
    elif shutil.which("valgrind"):
        cg = run_callgrind(runner, allocs, workloads, args.quick, timeout * 10)
    else:
        log("bench: valgrind not found: no instruction counts")

    res = Results(workloads, allocs, base, raw, failed, cg, arena_raw)
    report = build_report(res, header, t_timed, runner.out)
    with open(os.path.join(runner.out, "report.txt"), "w") as f:
        f.write(report)
    write_csv(res, os.path.join(runner.out, "results.csv"))
    plot(runner.out, res)
    print(report, end="")
    return 0


def plot(out, res):
    """ratios.png: time and RSS ratios per workload (gnuplot)."""
    workloads, others, base, ratio = res.workloads, res.others, res.base, res.ratio
    if not shutil.which("gnuplot") or not others:
        log("bench: gnuplot not found or nothing to compare: no plot")
        return
    dat = os.path.join(out, "ratios.dat")
    with open(dat, "w") as f:
        f.write("# workload " + " ".join("time_" + n for n in others) + " "
                + " ".join("rss_" + n for n in others) + "\n")
        for w in workloads:
            vals = []
            for field in ("wall", "rss"):
                for n in others:
                    r = ratio(w["name"], n, field)
                    vals.append("%.4f" % r if r else "NaN")
            f.write("%s %s\n" % (w["name"], " ".join(vals)))
    k = len(others)
    gp = os.path.join(out, "ratios.gp")
    with open(gp, "w") as f:
        f.write("""set terminal pngcairo size 1400,1000 font ',10'
set output '%(png)s'
set datafile missing 'NaN'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y 2
set grid ytics
set key outside right top
set xtics rotate by -40
set multiplot layout 2,1
set title 'Median wall time relative to %(base)s (above 1: slower than %(base)s)'
plot %(tplots)s, 1 with lines lc rgb 'black' lw 2 notitle
set title 'Median peak RSS relative to %(base)s (above 1: more memory than %(base)s)'
plot %(rplots)s, 1 with lines lc rgb 'black' lw 2 notitle
unset multiplot
""" % {"png": os.path.join(out, "ratios.png"), "base": base,
            "tplots": ", ".join("'%s' using %d:xtic(1) title '%s'" % (dat, 2 + i, n)
                                for i, n in enumerate(others)),
            "rplots": ", ".join("'%s' using %d:xtic(1) title '%s'" % (dat, 2 + k + i, n)
                                for i, n in enumerate(others))})
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        log("bench: gnuplot failed: %s" % r.stderr.strip())


if __name__ == "__main__":
    sys.exit(main())

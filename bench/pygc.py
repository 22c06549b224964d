# pygc: Python's cyclic garbage collector over a large structure.
#
#   python3 pygc.py N [COLLECTIONS]
#
# Run by the harness with Debian's /usr/bin/python3 and PYTHONMALLOC=malloc.
# Builds a dict of N string keys to (int, str, list) tuples, the way a
# program loads a data set (with a temporary string per entry, as string
# formatting makes), then runs COLLECTIONS full collections; deletes every
# other entry, derives a second dict and collects again.  A full collection
# walks every tracked object in the order they were allocated and touches
# what each one points to, so its time depends on how the allocator laid
# the objects out.  Prints "ops N".
#
# SPDX-License-Identifier: MIT OR Apache-2.0
import gc
import sys


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    gc.disable()  # only the explicit collections below
    d = {}
    for i in range(n):
        d["key-%d" % i] = (i, str(i) * 3, [i, i + 1])
    for _ in range(rounds):
        gc.collect()
    for i in range(0, n, 2):
        del d["key-%d" % i]
    d2 = {k: v[1] + "x" for k, v in d.items()}
    for _ in range(rounds):
        gc.collect()
    if len(d2) != n // 2:
        sys.exit(1)
    print("ops", n)


main()

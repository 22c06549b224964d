# pydict: a Python program that builds large dicts and lists.
#
#   python3 pydict.py N
#
# Run by the harness with Debian's /usr/bin/python3 and PYTHONMALLOC=malloc,
# so that every Python object (not only those over 512 bytes) comes from
# the preloaded malloc.  Builds a dict of N string keys to tuples, a list of
# N/2 small lists, deletes half of the dict, derives a second dict, sorts,
# joins strings and rebuilds a set: the allocation pattern of a typical
# data-munging script.  Prints "ops N".
#
# SPDX-License-Identifier: MIT OR Apache-2.0
import sys


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    d = {}
    for i in range(n):
        d["key-%d" % i] = (i, str(i) * 3, [i, i + 1])
    lists = [list(range(i % 40)) for i in range(n // 2)]
    for i in range(0, n, 2):
        del d["key-%d" % i]
    d2 = {k: v[1] + "x" for k, v in d.items()}
    values = sorted(d2.values(), reverse=True)
    text = ",".join(values[: n // 4])
    words = set(text.split(","))
    total = sum(len(x) for x in lists) + len(words) + len(d2)
    del lists, d, d2, values, text, words
    if total <= 0:
        sys.exit(1)
    print("ops", n)


main()

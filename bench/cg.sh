#!/bin/bash
# cg.sh LIBEMMA_SO [tight|batch|churn|private|xmalloc]...: instructions per
# malloc+free pair, counted by Valgrind's callgrind.
#
#   bench/cg.sh BUILD/lib/.libs/libemma.so.0             tight, batch, churn
#   bench/cg.sh BUILD/lib/.libs/libemma.so.0 churn private
#
# One op is one malloc + one free (private: emma_heap_alloc +
# emma_heap_dealloc on one private heap, bench/churn_emma).  Each figure is
# (Ir(n) - Ir(n0)) / (n - n0) over two runs of the same program with
# n = 400000 and n0 = 200000 ops, so that start-up and set-up cancel.
# tight and batch run bench/tight (16..128 B; batch frees 1000 at a time),
# churn and private bench/churn (10,000 live blocks of 16..512 B), xmalloc
# bench/xmalloc (one thread mallocs 16..512 B, another frees: every free a
# remote free), counting only the instructions inside malloc and free:
# the program's own waiting for its ring (spinning, yielding) varies from
# run to run.
# The programs are taken from the build tree LIBEMMA_SO belongs to and
# built there first.  Needs valgrind.  These are the figures that NEWS,
# README and emma(7) quote as "cg.sh".
# SPDX-License-Identifier: MIT OR Apache-2.0
set -eu
[ $# -ge 1 ] || { echo "usage: $0 LIBEMMA_SO [tight|batch|churn|private|xmalloc]..." >&2; exit 2; }
so=$(readlink -f "$1"); shift
command -v valgrind >/dev/null || { echo "$0: valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
b=$(dirname "$(dirname "$(dirname "$so")")")/bench
[ -f "$b/Makefile" ] || { echo "$0: no build tree's bench/ next to $so" >&2; exit 2; }
make -s -C "$b" tight churn churn_emma xmalloc >/dev/null
n=200000
# ir COMMAND...: callgrind's instruction count of one run on LIBEMMA_SO
# (with $only set: the instructions inside those functions only)

ir() { env "LD_PRELOAD=$so" valgrind --tool=callgrind --callgrind-out-file=/dev/null "${only[@]}" "$@" 2>&1 |
	sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'; }
[ $# -gt 0 ] || set -- tight batch churn
for w in "$@"; do
	only=()
	case $w in
	tight) prog=$b/tight; a1=(1 400000 16,32,64,128); a0=(1 200000 16,32,64,128) ;;
	batch) prog=$b/tight; a1=(1 400000 16,32,64,128 1000); a0=(1 200000 16,32,64,128 1000) ;;
	churn) prog=$b/churn; a1=(400000 10000 16 512); a0=(200000 10000 16 512) ;;
	private) prog=$b/churn_emma
		a1=(400000 10000 16 512 uniform 1 private); a0=(200000 10000 16 512 uniform 1 private) ;;
	xmalloc) prog=$b/xmalloc; a1=(1 400000 16 512); a0=(1 200000 16 512)
		only=(--toggle-collect=malloc --toggle-collect=free) ;;
	*) echo "$0: unknown workload $w" >&2; exit 2 ;;
	esac
	i1=$(ir "$prog" "${a1[@]}")
	i0=$(ir "$prog" "${a0[@]}")
	[ -n "$i1" ] && [ -n "$i0" ] || { echo "$0: callgrind gave no count for $w" >&2; exit 1; }
	echo "$w: $(((i1 - i0) / n)).$(printf %02d $((((i1 - i0) % n) * 100 / n))) instructions/op"
done

#!/bin/sh
# Valgrind memcheck sees emma_* blocks (emma's client requests): a leak
# ("definitely lost", the first block of a page and a huge block too), a
# use after free, an uninitialised read, an overflow into a free or live neighbour
# and a double free in emma_* code are each reported, a clean run is clean,
# and emma_free() of a block from valgrind's malloc does not crash; the same
# for private heaps' blocks (emma_heap_*), including use after
# emma_heap_reset, and no leak for blocks dropped by emma_heap_destroy.
# tests/valgrind_prog.c makes the mistakes.  Skipped (77) without valgrind
# or when configure found no valgrind headers.
# SPDX-License-Identifier: MIT OR Apache-2.0
set -u
[ "${EMMA_VALGRIND:-no}" = yes ] ||
	{ echo "SKIP: built without valgrind/memcheck.h (apt install valgrind, re-run configure)"; exit 77; }
command -v valgrind >/dev/null 2>&1 || { echo "SKIP: no valgrind"; exit 77; }
prog=./valgrind_prog
[ -x "$prog" ] || { echo "ERROR: $prog not built"; exit 99; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/emma-vg.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# run MODE STATUS PATTERN: valgrind exits with 33 on a reported error.
# (valgrind_prog is linked -no-install: a real program, no libtool wrapper.)
run() {
	mode=$1 want=$2 pattern=$3
	valgrind --tool=memcheck --error-exitcode=33 --leak-check=full \
		--errors-for-leak-kinds="${kinds:-definite}" --show-leak-kinds="${kinds:-definite}" \
		"$prog" "$mode" >"$tmp/$mode.out" 2>"$tmp/$mode.err"
	st=$?
	if [ "$st" -ne "$want" ] || ! grep -q -- "$pattern" "$tmp/$mode.err"; then
		bad "$mode: exit $st (want $want), '$pattern' expected in:"
		sed 's/^/    /' "$tmp/$mode.err"
	else
		echo "ok: $mode: $(grep -m1 -- "$pattern" "$tmp/$mode.err" | sed 's/^==[0-9]*== //')"
	fi
}
# run_lost MODE BYTES BLOCKS: a leak run whose lost blocks, "definitely"
# and "possibly" lost together, are exactly BYTES in BLOCKS, and none
# "still reachable" among them.  memcheck scans conservatively: a number in
# the loader's tables (symbol version hashes) can fall inside a big leaked
# block, which makes it "possibly lost" (seen with dpkg-buildflags builds,
# 1 run in 3 for 512 KiB and 5 MiB blocks); it is reported all the same.
run_lost() {
	kinds=definite,possible
	run "$1" 33 "LEAK SUMMARY"
	kinds=
	got=$(sed -n 's/.*\(definitely\|possibly\) lost: \([0-9,]*\) bytes in \([0-9]*\) blocks.*/\2 \3/p' \
		"$tmp/$1.err" | tr -d , | awk '{ b += $1; n += $2 } END { print b + 0, n + 0 }')
	[ "$got" = "$2 $3" ] || bad "$1: $got bytes/blocks lost, $2 $3 expected"
}
# Natively (no valgrind): no crash in any mode but double-free, which is
# undefined behaviour and not run.
for m in clean leak leak-first leak-alone leak-classes huge-leak huge-live use-after-free uninit overflow overflow-live foreign \
	heap-clean heap-use-after-reset heap-overflow-live heap-leak-first heap-use-after-dealloc heap-uninit \
	heap-leak heap-destroy; do
	"$prog" "$m" >/dev/null 2>&1 || bad "$m failed natively"
done
run clean 0 "ERROR SUMMARY: 0 errors"
run_lost leak 4000 1
run_lost leak-first 3000 1
run_lost leak-alone 1048544 2
# Every size class's first block, leaked (118 blocks): none reachable.
# (A few may be "possibly lost" instead of "definitely": memcheck scans
# memory conservatively, and the loader's tables hold numbers, such as
# symbol version hashes, that can fall inside a leaked block.)
run leak-classes 33 "still reachable: 0 bytes in 0 blocks"
n=$(sed -n 's/.*\(definitely\|possibly\) lost: [0-9,]* bytes in \([0-9]*\) blocks.*/\2/p' \
	"$tmp/leak-classes.err" | awk '{ n += $1 } END { print n + 0 }')
[ "$n" = 118 ] || bad "leak-classes: $n blocks definitely or possibly lost, 118 expected"
# A huge block's header points at it: hidden from the leak checker while
# the block lives.  huge-live: the live ones not lost, no false error.
run_lost huge-leak 5242880 1
run_lost huge-live 5242880 1
grep -q "ERROR SUMMARY: 1 errors" "$tmp/huge-live.err" ||
	bad "huge-live: errors besides the lost block: $(grep 'ERROR SUMMARY' "$tmp/huge-live.err")"
run use-after-free 33 "Invalid write of size 1"
run uninit 33 "Conditional jump or move depends on uninitialised value"
run overflow 33 "Invalid write of size 1"
run overflow-live 33 "Invalid write of size 1"
run double-free 33 "Invalid free()"
run foreign 0 "ERROR SUMMARY: 0 errors"
# Private heaps (emma_heap_new(3), Valgrind): each heap is a memcheck pool.
run heap-clean 0 "ERROR SUMMARY: 0 errors"
run heap-use-after-reset 33 "Invalid write of size 1"
run heap-overflow-live 33 "Invalid write of size 1"
run_lost heap-leak-first 3000 1
run heap-use-after-dealloc 33 "Invalid write of size 1"
run heap-uninit 33 "Conditional jump or move depends on uninitialised value"
run heap-double-free 33 "Invalid free()"
run_lost heap-leak 4000 1
run heap-destroy 0 "ERROR SUMMARY: 0 errors"
grep -q "definitely lost" "$tmp/heap-destroy.err" &&
	bad "heap-destroy: blocks dropped by emma_heap_destroy reported lost"
exit $fail

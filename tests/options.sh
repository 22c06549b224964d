#!/bin/sh
# emma's options from the environment (emma(7), ENVIRONMENT): EMMA_VERBOSE
# prints one start-up line, EMMA_SHOW_STATS the statistics at exit (from a
# fini-array function, no atexit), bad values one clear line and the
# default, the policy knobs take effect; and the options are found without
# the loader's envp, through /proc/self/environ (the libc-free
# test_nostdlib, whose _start runs no constructor).
# SPDX-License-Identifier: MIT OR Apache-2.0
set -u
prog=./options_prog
[ -x "$prog" ] || { echo "ERROR: $prog not built"; exit 99; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/emma-opt.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
# run NAME VAR=VALUE... -- ARGS: stdout in $tmp/NAME.out, stderr in .err
run() {
	name=$1
	shift
	env -u EMMA_SHOW_STATS -u EMMA_VERBOSE -u EMMA_DECAY_MS -u EMMA_FREE_RESIDENT_MAX \
		-u EMMA_HUGE_CACHE_MAX "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
	st=$?
	[ "$st" -eq 0 ] || bad "$name: exit status $st: $(cat "$tmp/$name.err")"
	grep -qx done "$tmp/$name.out" || bad "$name: program did not finish"
}
lines() { wc -l <"$1" | tr -d ' '; }

# Nothing set: nothing printed.
run plain "$prog"
[ -s "$tmp/plain.err" ] && bad "no option set, yet stderr: $(cat "$tmp/plain.err")"

# EMMA_VERBOSE=1: exactly one line, version, configuration, options.
run verbose EMMA_VERBOSE=1 "$prog"
[ "$(lines "$tmp/verbose.err")" -eq 1 ] || bad "EMMA_VERBOSE=1: not one line: $(cat "$tmp/verbose.err")"
for want in "emma $PACKAGE_VERSION:" "thread-local heaps $EMMA_TLS" "options from the loader" \
	"EMMA_SHOW_STATS=0" "EMMA_DECAY_MS=" "EMMA_FREE_RESIDENT_MAX=" "EMMA_HUGE_CACHE_MAX="; do
	grep -qF "$want" "$tmp/verbose.err" || bad "EMMA_VERBOSE=1: no '$want' in: $(cat "$tmp/verbose.err")"
done
echo "ok: EMMA_VERBOSE=1: $(cat "$tmp/verbose.err")"

# EMMA_SHOW_STATS=1: the table on stderr, after the program's own output.
run stats EMMA_SHOW_STATS=1 "$prog"
grep -q "^emma $PACKAGE_VERSION statistics (pid [0-9]*)" "$tmp/stats.err" &&
	grep -q "^  mapped " "$tmp/stats.err" && grep -q "block size   blocks in use" "$tmp/stats.err" ||
	bad "EMMA_SHOW_STATS=1: no statistics at exit: $(cat "$tmp/stats.err")"
echo "ok: EMMA_SHOW_STATS=1 printed $(lines "$tmp/stats.err") lines at exit"
# The program freed every block: the statistics are taken before emma's
# exit-time teardown, so they still show its memory (mapped, and its pages:
# a size-class row for a page held for the next allocation, or free
# resident memory for pages given back to their segments).
{ grep -Eq '^ +[0-9]+ +0 +[0-9]+ +[0-9]+ +[0-9]+[KM]$' "$tmp/stats.err" ||
	! grep -q "^  free resident  *0 B" "$tmp/stats.err"; } &&
	! grep -q "^  mapped  *0 B" "$tmp/stats.err" ||
	bad "EMMA_SHOW_STATS=1 after freeing every block: no pages or nothing mapped: $(cat "$tmp/stats.err")"

# Stderr closed when the program starts: nothing printed, and nothing
# written into the file the program then opens as descriptor 2.
env -u EMMA_VERBOSE EMMA_SHOW_STATS=1 "$prog" fd2 "$tmp/fd2.txt" >"$tmp/fd2.out" 2>&-
st=$?
[ "$st" -eq 0 ] && [ "$(cat "$tmp/fd2.txt")" = "user data" ] &&
	echo "ok: EMMA_SHOW_STATS=1 with stderr closed at start wrote nothing into the program's fd 2" ||
	bad "EMMA_SHOW_STATS=1, stderr closed at start: status $st, the program's file holds: $(cat "$tmp/fd2.txt")"

# EMMA_SHOW_STATS=1 in a program that closes stderr before exit (as
# coreutils' close_stdout does): the statistics still come, through the
# copy of stderr emma made at start-up.
run closeerr EMMA_SHOW_STATS=1 "$prog" closeerr
grep -q "^emma $PACKAGE_VERSION statistics (pid [0-9]*)" "$tmp/closeerr.err" &&
	grep -q "block size   blocks in use" "$tmp/closeerr.err" ||
	bad "EMMA_SHOW_STATS=1, stderr closed before exit: no statistics: $(cat "$tmp/closeerr.err")"
echo "ok: EMMA_SHOW_STATS=1 with stderr closed before exit printed $(lines "$tmp/closeerr.err") lines"
# The same for coreutils under LD_PRELOAD (what emma-run --stats sets).
if [ -r "${EMMA_SO:-}" ]; then
	for cmd in "cat /dev/null" "ls /" "sort /dev/null"; do
		set -- $cmd
		if command -v "$1" >/dev/null 2>&1; then
			env EMMA_SHOW_STATS=1 LD_PRELOAD="$EMMA_SO" "$@" >/dev/null 2>"$tmp/coreutils.err"
			grep -q "^emma $PACKAGE_VERSION statistics (pid [0-9]*)" "$tmp/coreutils.err" &&
				echo "ok: EMMA_SHOW_STATS=1 $cmd printed $(lines "$tmp/coreutils.err") lines" ||
				bad "EMMA_SHOW_STATS=1 LD_PRELOAD=libemma.so.0 $cmd: no statistics: $(cat "$tmp/coreutils.err")"
		else
			echo "note: no $1: not run under EMMA_SHOW_STATS=1"
		fi
	done
else
	echo "note: no shared libemma.so.0 (--disable-shared): cat, ls, sort not run under LD_PRELOAD"
fi

# Bad values: one line naming the variable and the default kept; no crash.
for setting in EMMA_SHOW_STATS=yes EMMA_VERBOSE=2 EMMA_DECAY_MS=-5 EMMA_DECAY_MS=10s \
	EMMA_DECAY_MS=99999999999999999999999 EMMA_FREE_RESIDENT_MAX=12Q \
	EMMA_FREE_RESIDENT_MAX= EMMA_HUGE_CACHE_MAX=4096T; do
	run badvalue "$setting" "$prog"
	if [ "$(lines "$tmp/badvalue.err")" -ne 1 ] ||
		! grep -q "^emma: $setting: not .*; using [0-9][0-9]*[KMG]*\$" "$tmp/badvalue.err"; then
		bad "$setting: expected one line 'emma: $setting: not ...; using DEFAULT', got: $(cat "$tmp/badvalue.err")"
	else
		echo "ok: $(cat "$tmp/badvalue.err")"
	fi
done

# A T suffix is accepted up to the bound the message names (1T); 2T gets
# the one-line message, which names only suffixes that are accepted.
run tera EMMA_FREE_RESIDENT_MAX=1T EMMA_VERBOSE=1 "$prog"
grep -q "EMMA_FREE_RESIDENT_MAX=1T" "$tmp/tera.err" && [ "$(lines "$tmp/tera.err")" -eq 1 ] &&
	echo "ok: EMMA_FREE_RESIDENT_MAX=1T accepted: $(cat "$tmp/tera.err")" ||
	bad "EMMA_FREE_RESIDENT_MAX=1T not accepted: $(cat "$tmp/tera.err")"
run tera2 EMMA_FREE_RESIDENT_MAX=2T "$prog"
grep -qx "emma: EMMA_FREE_RESIDENT_MAX=2T: not a number of bytes up to 1T (suffix K, M, G or T allowed); using 32M" \
	"$tmp/tera2.err" && echo "ok: $(cat "$tmp/tera2.err")" ||
	bad "EMMA_FREE_RESIDENT_MAX=2T: $(cat "$tmp/tera2.err")"

# The knobs take effect: with no free memory allowed to stay resident and
# no delay, the 20 MB freed are given back; by default most stays.
run default-policy "$prog" stats
run tight-policy EMMA_FREE_RESIDENT_MAX=0 EMMA_DECAY_MS=0 EMMA_HUGE_CACHE_MAX=0 "$prog" stats
d=$(sed -n 's/^free_resident //p' "$tmp/default-policy.out")
t=$(sed -n 's/^free_resident //p' "$tmp/tight-policy.out")
hd=$(sed -n 's/^huge_cached_bytes //p' "$tmp/default-policy.out")
ht=$(sed -n 's/^huge_cached_bytes //p' "$tmp/tight-policy.out")
if [ -n "$d" ] && [ -n "$t" ] && [ "$t" -lt "$d" ] && [ "$t" -le 1048576 ]; then
	echo "ok: free resident after freeing 20 MB: $d bytes by default, $t with EMMA_FREE_RESIDENT_MAX=0 EMMA_DECAY_MS=0"
else
	bad "policy knobs: free resident $d by default, $t with EMMA_FREE_RESIDENT_MAX=0 EMMA_DECAY_MS=0"
fi
# The freed 3 MiB huge block stays resident in the huge cache (up to 4 MiB
# by default), its pages given back at once with EMMA_HUGE_CACHE_MAX=0 (the
# mapping itself stays cached: address space only).
if [ -n "$hd" ] && [ -n "$ht" ] && [ "$hd" -ge 3145728 ] && [ "$ht" -le 4096 ]; then
	echo "ok: huge cache: $hd bytes resident by default, $ht with EMMA_HUGE_CACHE_MAX=0"
else
	bad "huge cache: $hd bytes resident by default, $ht with EMMA_HUGE_CACHE_MAX=0"
fi

# Without the loader's envp: a libc-free static program (its own _start,
# no constructors) reads /proc/self/environ at its first heap.
if [ -x ./test_nostdlib ] && [ -r /proc/self/environ ]; then
	EMMA_VERBOSE=1 ./test_nostdlib >"$tmp/nostdlib.out" 2>"$tmp/nostdlib.err"
	grep -q "options from /proc/self/environ" "$tmp/nostdlib.err" &&
		echo "ok: test_nostdlib: $(cat "$tmp/nostdlib.err")" ||
		bad "test_nostdlib with EMMA_VERBOSE=1: $(cat "$tmp/nostdlib.err")"
else
	echo "note: no test_nostdlib (--disable-static) or no /proc: /proc/self/environ not tried"
fi
exit $fail

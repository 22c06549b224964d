#!/bin/sh
# "make check" for emma-run: options, errors, LD_PRELOAD handling, and that a
# program not linked with emma really allocates through it under emma-run.
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# The installed emma-run preloads $(libdir)/libemma.so.0, which does not
# exist before "make install"; this test makes its own copies of emma-run
# from the same template, pointing at the library in the build tree.
#
# Environment: srcdir (set by automake), top_builddir, PACKAGE_VERSION.
set -u
srcdir=${srcdir:-.}
top_builddir=${top_builddir:-..}
libdir=$(cd "$top_builddir/lib/.libs" 2>/dev/null && pwd) || libdir=
tmp=$(mktemp -d "${TMPDIR:-/tmp}/emma-run-test.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0

problem() {
	echo "FAIL: $*"
	fail=1
}

make_copy() { # make_copy NAME LIBDIR
	sed -e "s|@libdir[@]|$2|g" -e "s|@PACKAGE_VERSION[@]|${PACKAGE_VERSION:-0}|g" \
		"$srcdir/emma-run.in" >"$tmp/$1" && chmod +x "$tmp/$1"
}

expect() { # expect STATUS PATTERN-IN-OUTPUT COMMAND...
	want=$1 pattern=$2
	shift 2
	out=$("$@" 2>&1)
	got=$?
	[ "$got" -eq "$want" ] || problem "$*: exit status $got, expected $want; output: $out"
	case $out in
	*"$pattern"*) ;;
	*) problem "$*: output does not contain '$pattern': $out" ;;
	esac
}

# The template must substitute everything.
make_copy emma-run-missing /nonexistent/lib || exit 99
grep -n '@[a-zA-Z_]*@' "$tmp/emma-run-missing" && problem "unsubstituted @VARIABLE@ left in emma-run"
if command -v checkbashisms >/dev/null 2>&1; then
	checkbashisms "$srcdir/emma-run.in" || problem "emma-run.in is not POSIX sh"
fi
sh -n "$tmp/emma-run-missing" || problem "emma-run does not parse"

expect 0 "Usage: emma-run COMMAND" "$tmp/emma-run-missing" --help
expect 0 "emma-run (emma) ${PACKAGE_VERSION:-0}" "$tmp/emma-run-missing" --version
expect 125 "no command given" "$tmp/emma-run-missing"
expect 125 "unknown option '-x'" "$tmp/emma-run-missing" -x true
expect 125 "/nonexistent/lib/libemma.so.0" "$tmp/emma-run-missing" true
expect 125 "library not found" "$tmp/emma-run-missing" -- true

if [ -z "$libdir" ] || [ ! -f "$libdir/libemma.so.0" ]; then
	echo "note: $top_builddir/lib/.libs/libemma.so.0 not built; preloading not tested"
	[ "$fail" -eq 0 ] && exit 77
	exit 1
fi
make_copy emma-run "$libdir" || exit 99
lib=$libdir/libemma.so.0

expect 127 "" "$tmp/emma-run" "$tmp/no-such-command"
expect 0 "" "$tmp/emma-run" true
expect 3 "" "$tmp/emma-run" sh -c 'exit 3'
# LD_PRELOAD: emma first, then what was there before.
# shellcheck disable=SC2016 # $LD_PRELOAD is for the inner shell
show='printf "[%s]" "$LD_PRELOAD"'
expect 0 "[$lib]" env -u LD_PRELOAD "$tmp/emma-run" sh -c "$show"
expect 0 "[$lib:$lib]" env LD_PRELOAD="$lib" "$tmp/emma-run" sh -c "$show"
# Arguments pass through untouched.
expect 0 "[a b][][*]" "$tmp/emma-run" sh -c 'printf "[%s]" "$@"' sh "a b" "" "*"

# The real thing: malloc of a program that does not link emma is emma's.
if [ -x ./preload-check ]; then
	expect 0 "malloc comes from emma" "$tmp/emma-run" ./preload-check
	expect 0 "malloc comes from emma" "$tmp/emma-run" -- ./preload-check
	expect 1 "emma is not loaded" env -u LD_PRELOAD ./preload-check
else
	problem "./preload-check was not built"
fi

[ "$fail" -eq 0 ] && echo "ok: emma-run"
exit "$fail"

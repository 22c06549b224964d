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
# A missing or unusable command: one clear line (not the shell's
# "emma-run: 78: exec: ...: not found"), and the shell's exit status.
expect_exact() { # expect_exact STATUS OUTPUT COMMAND...
	want=$1 text=$2
	shift 2
	out=$("$@" 2>&1)
	got=$?
	[ "$got" -eq "$want" ] || problem "$*: exit status $got, expected $want; output: $out"
	[ "$out" = "$text" ] || problem "$*: output '$out', expected '$text'"
}
expect_exact 127 "emma-run: nosuchcmd-emma-test: command not found" \
	"$tmp/emma-run" nosuchcmd-emma-test
expect_exact 127 "emma-run: $tmp/no-such-command: no such file" \
	"$tmp/emma-run" "$tmp/no-such-command"
: >"$tmp/not-executable"
expect_exact 126 "emma-run: $tmp/not-executable: not an executable file" \
	"$tmp/emma-run" "$tmp/not-executable"
expect_exact 126 "emma-run: $tmp: not an executable file" "$tmp/emma-run" "$tmp"
expect 0 "" "$tmp/emma-run" true
expect 3 "" "$tmp/emma-run" sh -c 'exit 3'
# LD_PRELOAD: emma first, then what was there before.
# shellcheck disable=SC2016 # $LD_PRELOAD is for the inner shell
show='printf "[%s]" "$LD_PRELOAD"'
expect 0 "[$lib]" env -u LD_PRELOAD "$tmp/emma-run" sh -c "$show"
expect 0 "[$lib:$lib]" env LD_PRELOAD="$lib" "$tmp/emma-run" sh -c "$show"
# --stats and --verbose set emma's variables (emma(7) ENVIRONMENT); emma
# itself may print to stderr meanwhile, so look for the marked value only.
# shellcheck disable=SC2016
showvars='printf "[%s,%s]" "${EMMA_SHOW_STATS-unset}" "${EMMA_VERBOSE-unset}"'
expect 0 "[unset,unset]" env -u EMMA_SHOW_STATS -u EMMA_VERBOSE "$tmp/emma-run" sh -c "$showvars"
expect 0 "[1,unset]" env -u EMMA_SHOW_STATS -u EMMA_VERBOSE "$tmp/emma-run" --stats sh -c "$showvars"
expect 0 "[unset,1]" env -u EMMA_SHOW_STATS -u EMMA_VERBOSE "$tmp/emma-run" --verbose sh -c "$showvars"
expect 0 "[1,1]" env -u EMMA_SHOW_STATS -u EMMA_VERBOSE "$tmp/emma-run" --verbose --stats -- sh -c "$showvars"
expect 125 "unknown option '--bogus'" "$tmp/emma-run" --stats --bogus true
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

#!/bin/sh
# Print the C program of a man page's EXAMPLES section as plain C.
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Usage: extract-example.sh PAGE
# The program is the text between the ".\" EXAMPLE-BEGIN" and
# ".\" EXAMPLE-END" comment lines, minus the roff requests around it.  The
# pages write code with only these escapes, undone here: \e (backslash),
# \- (minus), \(aq (quote), \(dq (double quote), \& (nothing).  A line in
# the code may not start with "." or "'" (roff would read a request).
set -eu
page=${1:?usage: extract-example.sh PAGE}
grep -q '^\.\\" EXAMPLE-BEGIN$' "$page" || {
	echo "extract-example.sh: $page: no EXAMPLE-BEGIN marker" >&2
	exit 1
}
printf '/* Extracted from %s by extract-example.sh: do not edit. */\n' \
	"$(basename "$page")"
sed -n '/^\.\\" EXAMPLE-BEGIN$/,/^\.\\" EXAMPLE-END$/{
	/^\.\\"/d
	/^\.in /d
	/^\.in$/d
	/^\.EX$/d
	/^\.EE$/d
	s/\\-/-/g
	s/\\(aq/'"'"'/g
	s/\\(dq/"/g
	s/\\&//g
	s/\\e/\\/g
	p
}' "$page"

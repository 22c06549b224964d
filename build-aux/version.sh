#!/bin/sh
# Print emma's version, read from the one place it is kept: include/emma.h.
h="$(dirname "$0")/../include/emma.h"
sed -n 's/^#define EMMA_VERSION_STRING "\(.*\)"$/\1/p' "$h" | tr -d '\n'

#!/usr/bin/env bash
# Builds the native core (native/src/core/, no Node) with its unit test under
# AddressSanitizer and UBSan, and runs it. Usage: bash native/test/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined -fno-sanitize-recover=all \
  -o "$out/core_test" "$here/core_test.cc" "$here"/../src/core/*.cc
TMPDIR="$out" "$out/core_test"

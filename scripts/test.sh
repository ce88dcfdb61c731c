#!/usr/bin/env bash
# The test suite: idempotent set-up, then every tap test file (unit tests and
# tests on real lab guests), then one line "N passed, N failed".
# Extra arguments select test files, e.g. scripts/test.sh dist/test/unit/*.test.js
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --tests || { echo "0 passed, 1 failed"; exit 1; }

# The whole suite: the build of every test file still in test/ (a renamed or removed test's old build
# output stays in dist/ and would run again).
if [ $# -gt 0 ]; then files=("$@"); else
  mapfile -t files < <(find dist/test -name '*.test.js' | LC_ALL=C sort | while IFS= read -r f; do
    src=${f#dist/}; [ -f "${src%.js}.ts" ] && printf '%s\n' "$f"; done)
fi
[ ${#files[@]} -gt 0 ] || { echo "no test files under dist/test"; echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
# This run's own sockets, pid files and overlays: clones sharing the machine never touch each other's guests.
INTROVISOR_RUN=$(mktemp -d "${TMPDIR:-/tmp}/introvisor-test-run.XXXXXX")
export INTROVISOR_RUN
trap 'rm -f "$log"; rm -rf "$INTROVISOR_RUN"' EXIT
# Two files at a time: each boots at most one TCG guest, and the machine has two cores.
npx --no-install tap --disable-coverage --reporter=tap --jobs="${INTROVISOR_TEST_JOBS:-2}" --timeout="${INTROVISOR_TEST_TIMEOUT:-900}" "${files[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Safety net: no QEMU this run started outlives it, whatever happened in it. Only pids named by a
# pid file under this run's own folder, and only while that process still has the pid file in its
# command line (a recycled pid is someone else's).
while IFS= read -r -d '' pidfile; do
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  [[ "$pid" =~ ^[0-9]+$ ]] || continue
  { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$pidfile" && kill -KILL "$pid" 2>/dev/null
done < <(find "$INTROVISOR_RUN" -name qemu.pid -print0 2>/dev/null)

summary=$(grep -a -E '^# \{ total: ' "$log" | tail -n1)  # -a: guest output can carry binary bytes
pass=$(sed -n 's/.*pass: \([0-9]*\).*/\1/p' <<<"$summary")
fail=$(sed -n 's/.*fail: \([0-9]*\).*/\1/p' <<<"$summary")
pass=${pass:-0}
fail=${fail:-0}
if [ "$rc" -ne 0 ] && [ "$fail" = 0 ]; then fail=1; fi  # the runner failed without a failing assertion
echo "$pass passed, $fail failed"
exit "$rc"

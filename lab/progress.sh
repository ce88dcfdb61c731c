# shellcheck shell=bash
# Progress of the long build scripts (lab/build-images.sh, lab/build-distro-guest.sh,
# scripts/build-appliance.sh). Source it (bash). Not part of any image's content key: how a build
# reports its progress does not change what it builds.
#
#   progress_wrap WORK SCRIPT [ARG...]  re-runs SCRIPT under `introvisor progress --work WORK` (a bar
#                                       on a terminal, timestamped lines otherwise; the estimate is
#                                       against the last run, kept in $INTROVISOR_CACHE/progress/) when
#                                       this checkout's CLI is built; else returns and the script
#                                       prints plain timestamped phase lines itself.
#                                       INTROVISOR_PROGRESS=off: no progress output at all.
#   progress_phase NAME                 the phase that begins now
#   progress_phases N                   how many phases this run has (before the first)

progress_wrap() {
  local work=$1 script=$2 cli
  shift 2
  [ -z "${INTROVISOR_PROGRESS_FD:-}" ] || return 0
  [ "${INTROVISOR_PROGRESS:-}" != off ] || return 0
  cli="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/dist/src/cli/main.js"
  [ -f "$cli" ] && command -v node >/dev/null || return 0
  exec node "$cli" progress --work "$work" -- bash "$script" "$@"
}

progress_phase() {
  if [ -n "${INTROVISOR_PROGRESS_FD:-}" ]; then
    echo "phase $*" >&"$INTROVISOR_PROGRESS_FD"
  elif [ "${INTROVISOR_PROGRESS:-}" != off ]; then
    echo "$(date -u +%H:%M:%S) phase: $*" >&2
  fi
}

progress_phases() {
  [ -z "${INTROVISOR_PROGRESS_FD:-}" ] || echo "phases $1" >&"$INTROVISOR_PROGRESS_FD"
}

# progress_unreported FILE...: the files' text without the progress lines (what content keys hash).
progress_unreported() {
  grep -hv -e 'progress_phase' -e 'progress_wrap' -e 'progress\.sh' "$@" || true
}

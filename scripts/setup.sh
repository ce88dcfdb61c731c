#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine with Node 20 (run as root):
# apt packages, npm ci (which builds the native addon), TypeScript build, lab guest images.
# Each step is skipped when already done; each one run says so on a timestamped line. The image
# builds show their phases (a bar on a terminal, timestamped lines otherwise; lab/progress.sh).
# INTROVISOR_SETUP_QUIET=1 hides these lines (and the builds' progress).
# --tests: also the images only the test suite boots (other kernel lines, the distro guest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { [ "${INTROVISOR_SETUP_QUIET:-}" = 1 ] || echo "$(date -u +%H:%M:%S) setup: $*"; }
[ "${INTROVISOR_SETUP_QUIET:-}" != 1 ] || export INTROVISOR_PROGRESS=off
die() { echo "setup: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is not installed (Node 20 is required)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node $node_major found; Node 20 or newer is required"

# --- apt ---------------------------------------------------------------------
packages=(qemu-system-x86 qemu-utils qemu-guest-agent busybox-static cpio kmod e2fsprogs
          build-essential mosquitto mosquitto-clients openssl chromium util-linux
          bc flex bison libelf-dev libssl-dev dwarves rsync patch xz-utils ovmf
          libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The guest kernel's headers, for the attack modules: the ABI linux-image-amd64 depends on, read
# after any apt-get update (stale package lists name an older kernel than the archive now holds).
# shellcheck source=lab/lib.sh
. lab/lib.sh
abi=${INTROVISOR_KERNEL_ABI:-}
[ -n "$abi" ] || abi=$(lab_archive_abi)
if [ ${#missing[@]} -gt 0 ] || [ -z "$abi" ]; then
  [ "$(id -u)" = 0 ] || die "needs root to install: ${missing[*]:-(package lists)}"
  say "apt-get update"
  apt-get update -qq >/dev/null
  abi=${INTROVISOR_KERNEL_ABI:-$(lab_archive_abi)}
  [ -n "$abi" ] || die "cannot tell which kernel linux-image-amd64 depends on"
fi
dpkg-query -W -f='${Status}' "linux-headers-$abi" 2>/dev/null | grep -q 'install ok installed' || missing+=("linux-headers-$abi")
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "needs root to install: ${missing[*]}"
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# --- npm ---------------------------------------------------------------------
# npm ci when node_modules does not match the lock file; the install script builds the addon.
stamp=node_modules/.introvisor-lock.sha256
want=$( (sha256sum package-lock.json; node --version) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -f build/Release/introvisor.node ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci failed"
  echo "$want" > "$stamp"
fi
# The addon again when its sources are newer than the build.
if [ -n "$(find native binding.gyp -newer build/Release/introvisor.node -print -quit)" ]; then
  say "building the native addon"
  npx --no-install node-gyp rebuild >/dev/null 2>&1 || die "native build failed: run 'npx node-gyp rebuild' to see why"
fi
say "compiling TypeScript"
npx --no-install tsc -p tsconfig.json || die "TypeScript build failed"

# --- lab guest images ----------------------------------------------------------
INTROVISOR_KERNEL_ABI=$abi bash lab/build-images.sh
if [ "${1:-}" = --tests ]; then
  # What only the test suite boots. The kernel matrix's other lines (Debian 11's 5.10,
  # bookworm-backports' 6.12): their packages come through a private apt configuration under the
  # cache; nothing is installed on this machine.
  for line in 5.10 6.12; do bash lab/build-images.sh "$line"; done
  # A full Debian 12 guest booting from its own disk (the first build fetches ~250 MB of packages).
  INTROVISOR_KERNEL_ABI=$abi bash lab/build-distro-guest.sh
fi
# KVM or TCG for lab guests: probed once per host kernel and QEMU version.
node dist/lab/cli.js accel

#!/usr/bin/env bash
# Builds the lab's guest images for one kernel line (5.10, 6.1 or 6.12; default 6.1), idempotently:
#   kernel  : the current linux-image-*-amd64 of the line's suite (the one linux-image-amd64
#             depends on): Debian 11 for 5.10, Debian 12 for 6.1, bookworm-backports for 6.12
#   initrd  : busybox-static, qemu-ga with its libraries, virtio/ext4 modules, the attack modules,
#             the eBPF loader bpfload
#   base    : a golden qcow2 data disk holding the critical service csdtest
# Output: $INTROVISOR_CACHE/lab/<abi>-<key>/ and $INTROVISOR_CACHE/lab/manifest-<line>.json
# pointing at it ($INTROVISOR_CACHE/lab/manifest.json too for the default line).
# Nothing here is downloaded except through apt; other suites' packages come through a private
# apt configuration (lab_private_apt) and are unpacked into the cache, never installed.
#   lab/build-images.sh [LINE]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest="$here/guest"
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
die() { echo "build-images: $*" >&2; exit 1; }
say() { echo "build-images: $*"; }
# shellcheck source=lab/lib.sh
. "$here/lib.sh"

for tool in apt-cache apt-get dpkg-deb cpio gzip xz modinfo mke2fs qemu-img gcc make sha256sum; do
  command -v "$tool" >/dev/null || die "missing tool '$tool' (run scripts/setup.sh first)"
done
lab_require_busybox
qga_bin=/usr/sbin/qemu-ga
[ -x "$qga_bin" ] || die "missing $qga_bin (apt-get install qemu-guest-agent)"

line=${1:-$LAB_DEFAULT_LINE}
[ -n "${LAB_LINES[$line]:-}" ] || die "unknown kernel line '$line' (known: ${!LAB_LINES[*]})"
# shellcheck source=lab/progress.sh
. "$here/progress.sh"
progress_wrap "build-images-$line" "${BASH_SOURCE[0]}" "$@"
suite=${LAB_LINES[$line]%% *}
[ "$suite" = - ] || lab_private_apt "$cache" "$suite"
# Which kernel: INTROVISOR_KERNEL_ABI (default line only) or what linux-image-amd64 depends on now.
lab_kernel_abi "$line"
abi=$LAB_ABI
if [ ! -f "$cache/kernel/$abi/.complete" ] && ! apt-cache "${LAB_APT[@]}" show "linux-image-$abi" >/dev/null 2>&1; then
  die "kernel package linux-image-$abi is not in the apt archive (apt-get update, or set INTROVISOR_KERNEL_ABI to one that is)"
fi
if [ "$suite" = - ]; then
  headers=/usr/src/linux-headers-$abi
  [ -f "$headers/Makefile" ] || die "kernel headers for $abi are not installed ($headers): apt-get install linux-headers-$abi"
fi

# The key hashes contents only (never this checkout's path), so clones of one commit share a build.
key_src=$( (echo "$abi"; progress_unreported "${BASH_SOURCE[0]}"; cat "$here/lib.sh"; cd "$guest" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$cache/lab/$abi-$key_src"
# The line's pointer, and the default one (what tests, benchmarks and the demo boot) for 6.1: in
# this checkout's build/lab/ (what this checkout reads first, so clones with other lab contents on one
# machine never boot each other's images) and in the cache (for a supervisor run from elsewhere).
publish_manifest() {
  local m local_dir="$here/../build/lab" targets=("$cache/lab/manifest-$line.json")
  mkdir -p "$local_dir"
  targets+=("$local_dir/manifest-$line.json")
  [ "$line" = "$LAB_DEFAULT_LINE" ] && targets+=("$cache/lab/manifest.json" "$local_dir/manifest.json")
  for m in "${targets[@]}"; do
    cp "$out/manifest.json" "$m.tmp.$$" && mv "$m.tmp.$$" "$m"
  done
}
if [ -f "$out/manifest.json" ]; then
  touch "$out"  # in use: kept by other clones' clean-up below
  publish_manifest
  echo "build-images: up to date ($out)"
  exit 0
fi

work=$(mktemp -d "$cache/lab/.build.XXXXXX" 2>/dev/null || { mkdir -p "$cache/lab"; mktemp -d "$cache/lab/.build.XXXXXX"; })
trap 'rm -rf "$work"' EXIT

# --- kernel package ---------------------------------------------------------
progress_phase "kernel package"
lab_fetch_kernel "$cache" "$abi"
kdir="$cache/kernel/$abi"
vmlinuz="$kdir/boot/vmlinuz-$abi"
moddir="$kdir/lib/modules/$abi"
[ -f "$vmlinuz" ] || die "$vmlinuz missing from the unpacked package"

# Other suites' headers: linux-headers-<abi>, its -common and linux-kbuild packages, unpacked
# into the cache. Their Makefiles and links name /usr/src and /usr/lib/linux-kbuild-*: those
# absolute paths are rewritten to the unpacked copies.
if [ "$suite" != - ]; then
  progress_phase "kernel headers"
  hroot="$cache/headers/$abi"
  if [ ! -f "$hroot/.complete" ]; then
    rm -rf "$hroot" && mkdir -p "$hroot"
    for pkg in "linux-headers-$abi" $(apt-cache "${LAB_APT[@]}" depends "linux-headers-$abi" 2>/dev/null \
        | sed -n 's/^ *|\{0,1\}Depends: \(linux-\(headers\|kbuild\)-[^ ]*\)$/\1/p'); do
      lab_fetch_deb "$cache" "$pkg" "$work/deb-$pkg"
      cp -a "$work/deb-$pkg/." "$hroot/"
    done
    rm -f "$hroot/.complete"
    grep -rlI --include=Makefile --include='*.mk' -e '/usr/src/' -e '/usr/lib/linux-kbuild' "$hroot/usr/src" 2>/dev/null \
      | xargs -r sed -i -e "s#/usr/src/#$hroot/usr/src/#g" -e "s#/usr/lib/linux-kbuild#$hroot/usr/lib/linux-kbuild#g"
    find "$hroot/usr/src" "$hroot/usr/lib" -type l | while IFS= read -r l; do
      t=$(readlink "$l")
      case "$t" in /usr/*) ln -sfn "$hroot$t" "$l" ;; esac
    done
    touch "$hroot/.complete"
  fi
  headers="$hroot/usr/src/linux-headers-$abi"
  [ -f "$headers/Makefile" ] || die "unpacked headers for $abi lack $headers/Makefile"
fi

# --- initramfs --------------------------------------------------------------
progress_phase "initramfs tree"
root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,run,tmp,data,usr/bin,lib/modules/lab,lib/introvisor}
lab_busybox_root "$root"
ln -s bin/busybox "$root/init"
cp -a "$guest/rootfs/." "$root/"

lab_index_modules "$moddir/kernel"
# Dependencies come from modinfo (5.10 has no virtio_pci_modern_dev; 6.12 builds some of these in).
for m in virtio_ring virtio virtio_pci virtio_console virtio_blk crc32c_generic ext4; do
  lab_add_module "$m" "$root/lib/modules/lab"
done
printf '%s\n' "${LAB_ORDER[@]}" > "$root/lib/modules/lab/load-order"

# qemu-ga and the shared libraries ldd names for it.
cp "$qga_bin" "$root/usr/bin/qemu-ga"
while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done < <(ldd "$qga_bin" | awk '/not found/ {print "MISSING:" $1; next} /=>/ {print $3; next} /^\t\// {print $1}')
if ldd "$qga_bin" | grep -q 'not found'; then die "qemu-ga needs libraries that are not installed: $(ldd "$qga_bin" | grep 'not found')"; fi

# Attack modules, built against the same kernel's headers, loadable on demand.
progress_phase "attack modules"
mkdir -p "$work/attacks"
cp "$guest/attacks/"* "$work/attacks/"
# The compiler the kernel was built with when it is here (gcc-12 for 6.1 and 6.12); else the
# machine's gcc (Debian 11's gcc-10 is not installable here: 5.10 modules build with gcc-12).
kcc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(gcc-[0-9]*\) .*/\1/p' "$headers/.config" 2>/dev/null | head -n1)
command -v "${kcc:-none}" >/dev/null || kcc=gcc
make -s -C "$headers" M="$work/attacks" CC="$kcc" modules >"$work/attacks.log" 2>&1 \
  || { cat "$work/attacks.log" >&2; die "building the attack modules against $headers with $kcc failed"; }
cp "$work/attacks/"*.ko "$root/lib/introvisor/"
# The eBPF loader (no bpftool or clang in the guest): hand-assembled programs, raw bpf().
gcc -static -O2 -Wall -o "$root/lib/introvisor/bpfload" "$guest/bpfload.c"

progress_phase "initramfs pack"
lab_pack_initramfs "$root" "$work/initrd.img" 6

# --- golden data disk ---------------------------------------------------------
progress_phase "data disk"
disk="$work/disk"
cp -a "$guest/disk" "$disk"
mkdir -p "$disk/bin"  # git keeps no empty folders
gcc -static -O2 -Wall -o "$disk/bin/csdtest" "$guest/csdtest.c"
truncate -s 64M "$work/base.raw"
mke2fs -q -t ext4 -L introvisor-data -d "$disk" -F "$work/base.raw"
qemu-img convert -q -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"

# --- publish ------------------------------------------------------------------
progress_phase "publish"
mkdir -p "$out.tmp"
cp "$vmlinuz" "$out.tmp/vmlinuz"
mv "$work/initrd.img" "$work/base.qcow2" "$out.tmp/"
cp "$root/lib/introvisor/"*.ko "$out.tmp/"
# Each attack module by its camelCase name (iv_syscall_hook.ko -> "syscallHook").
modules_json=$(cd "$root/lib/introvisor" && for ko in iv_*.ko; do
  name=$(basename "$ko" .ko | sed -E 's/^iv_//; s/_([a-z0-9])/\U\1/g')
  printf '    "%s": "/lib/introvisor/%s",\n' "$name" "$ko"
done | sed '$ s/,$//')
version=$(dpkg-deb -f "$(ls -t "$cache/debs"/linux-image-"$abi"_*_amd64.deb | head -n1)" Version)
cat > "$out.tmp/manifest.json" <<JSON
{
  "kernelLine": "$line",
  "kernelAbi": "$abi",
  "kernelVersion": "$version",
  "key": "$key_src",
  "dir": "$out",
  "kernel": "$out/vmlinuz",
  "initrd": "$out/initrd.img",
  "baseImage": "$out/base.qcow2",
  "attackModules": {
$modules_json
  },
  "criticalService": "/data/bin/csdtest",
  "bpfLoader": "/lib/introvisor/bpfload"
}
JSON
rm -rf "$out" && mv "$out.tmp" "$out"
publish_manifest
# Builds no clone has used for two days are removed; a newer one may still be in use by another
# clone on this machine (its guests' overlays are backed by it).
find "$cache/lab" -mindepth 1 -maxdepth 1 -type d -name '*-*' ! -name '.*' -mtime +2 -print0 | while IFS= read -r -d '' d; do
  [ "$d" = "$out" ] || rm -rf "$d"
done
echo "build-images: built $out"

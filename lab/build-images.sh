#!/usr/bin/env bash
# Builds the lab's guest images from Debian packages, idempotently:
#   kernel  : Debian 12's current linux-image-6.1.0-*-amd64 (the one linux-image-amd64 depends on)
#   initrd  : busybox-static, qemu-ga with its libraries, virtio/ext4 modules, the attack modules
#   base    : a golden qcow2 data disk holding the critical service csdtest
# Output: $INTROVISOR_CACHE/lab/<key>/ and $INTROVISOR_CACHE/lab/manifest.json pointing at it.
# Nothing here is downloaded except through apt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest="$here/guest"
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
die() { echo "build-images: $*" >&2; exit 1; }
say() { echo "build-images: $*"; }
# shellcheck source=lab/lib.sh
. "$here/lib.sh"

for tool in apt-cache apt-get dpkg-deb cpio gzip modinfo mke2fs qemu-img gcc make sha256sum; do
  command -v "$tool" >/dev/null || die "missing tool '$tool' (run scripts/setup.sh first)"
done
lab_require_busybox
qga_bin=/usr/sbin/qemu-ga
[ -x "$qga_bin" ] || die "missing $qga_bin (apt-get install qemu-guest-agent)"

# Which kernel: INTROVISOR_KERNEL_ABI (e.g. 6.1.0-56-amd64) or what linux-image-amd64 depends on now.
lab_kernel_abi
abi=$LAB_ABI
if [ ! -f "$cache/kernel/$abi/.complete" ] && ! apt-cache show "linux-image-$abi" >/dev/null 2>&1; then
  die "kernel package linux-image-$abi is not in the apt archive (apt-get update, or set INTROVISOR_KERNEL_ABI to one that is)"
fi
headers=/usr/src/linux-headers-$abi
[ -f "$headers/Makefile" ] || die "kernel headers for $abi are not installed ($headers): apt-get install linux-headers-$abi"

# The key hashes contents only (never this checkout's path), so clones of one commit share a build.
key_src=$( (echo "$abi"; cat "$0" "$here/lib.sh"; cd "$guest" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$cache/lab/$abi-$key_src"
manifest="$cache/lab/manifest.json"
if [ -f "$out/manifest.json" ]; then
  touch "$out"  # in use: kept by other clones' clean-up below
  cp "$out/manifest.json" "$manifest.tmp" && mv "$manifest.tmp" "$manifest"
  echo "build-images: up to date ($out)"
  exit 0
fi

work=$(mktemp -d "$cache/lab/.build.XXXXXX" 2>/dev/null || { mkdir -p "$cache/lab"; mktemp -d "$cache/lab/.build.XXXXXX"; })
trap 'rm -rf "$work"' EXIT

# --- kernel package ---------------------------------------------------------
lab_fetch_kernel "$cache" "$abi"
kdir="$cache/kernel/$abi"
vmlinuz="$kdir/boot/vmlinuz-$abi"
moddir="$kdir/lib/modules/$abi"
[ -f "$vmlinuz" ] || die "$vmlinuz missing from the unpacked package"

# --- initramfs --------------------------------------------------------------
root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,run,tmp,data,usr/bin,lib/modules/lab,lib/introvisor}
lab_busybox_root "$root"
ln -s bin/busybox "$root/init"
cp -a "$guest/rootfs/." "$root/"

lab_index_modules "$moddir/kernel"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console virtio_blk crc32c_generic ext4; do
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
mkdir -p "$work/attacks"
cp "$guest/attacks/"* "$work/attacks/"
make -s -C "$headers" M="$work/attacks" modules >"$work/attacks.log" 2>&1 \
  || { cat "$work/attacks.log" >&2; die "building the attack modules against $headers failed"; }
cp "$work/attacks/"*.ko "$root/lib/introvisor/"

lab_pack_initramfs "$root" "$work/initrd.img" 6

# --- golden data disk ---------------------------------------------------------
disk="$work/disk"
cp -a "$guest/disk" "$disk"
mkdir -p "$disk/bin"  # git keeps no empty folders
gcc -static -O2 -Wall -o "$disk/bin/csdtest" "$guest/csdtest.c"
truncate -s 64M "$work/base.raw"
mke2fs -q -t ext4 -L introvisor-data -d "$disk" -F "$work/base.raw"
qemu-img convert -q -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"

# --- publish ------------------------------------------------------------------
mkdir -p "$out.tmp"
cp "$vmlinuz" "$out.tmp/vmlinuz"
mv "$work/initrd.img" "$work/base.qcow2" "$out.tmp/"
cp "$root/lib/introvisor/"*.ko "$out.tmp/"
version=$(dpkg-deb -f "$(ls -t "$cache/debs"/linux-image-"$abi"_*_amd64.deb | head -n1)" Version)
cat > "$out.tmp/manifest.json" <<JSON
{
  "kernelAbi": "$abi",
  "kernelVersion": "$version",
  "key": "$key_src",
  "dir": "$out",
  "kernel": "$out/vmlinuz",
  "initrd": "$out/initrd.img",
  "baseImage": "$out/base.qcow2",
  "attackModules": {
    "syscallHook": "/lib/introvisor/iv_syscall_hook.ko",
    "dkomHide": "/lib/introvisor/iv_dkom_hide.ko",
    "hideModule": "/lib/introvisor/iv_hide_module.ko"
  },
  "criticalService": "/data/bin/csdtest"
}
JSON
rm -rf "$out" && mv "$out.tmp" "$out"
cp "$out/manifest.json" "$manifest.tmp" && mv "$manifest.tmp" "$manifest"
# Builds no clone has used for two days are removed; a newer one may still be in use by another
# clone on this machine (its guests' overlays are backed by it).
find "$cache/lab" -mindepth 1 -maxdepth 1 -type d -name '*-*' ! -name '.*' -mtime +2 -print0 | while IFS= read -r -d '' d; do
  [ "$d" = "$out" ] || rm -rf "$d"
done
echo "build-images: built $out"

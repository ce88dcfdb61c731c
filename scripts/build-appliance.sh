#!/usr/bin/env bash
# The appliance's disk image, built from Debian 12's packages with mmdebstrap:
#
#   GPT, 3 partitions:  1 bios-boot (GRUB's core.img)
#                       2 introvisor-root  ext4: Debian minbase + systemd, Debian's 6.1 kernel with the
#                                          patched kvm.ko/kvm-amd.ko in /lib/modules/<abi>/updates,
#                                          QEMU, Node, the supervisor (dist + node_modules + native
#                                          addon), the lab's demo guest, the rootfs/ overlay
#                       3 introvisor-data  ext4, empty: /var/lib/introvisor (device id, keys,
#                                          database, golden images); never rewritten by an update
#   GRUB for BIOS from Debian's grub-pc-bin, installed without loop devices or mounts.
#
#   scripts/build-appliance.sh           build (or reuse) the image; the last line is its path
#   scripts/build-appliance.sh --key     print the cache key of the current inputs and exit
#
# Idempotent and cached: $INTROVISOR_CACHE/appliance/<key>/ holds the image, its .bmap and a
# manifest; <key> hashes every input by content (this script, rootfs/, the product build, Node,
# the patched modules, the guest images, the package set), never by path. The mmdebstrap step
# is cached on its own (package set + kernel version), so a product change costs a re-assembly,
# not a new debootstrap. The Debian mirror is the one this machine's apt uses.
# Needs: the product built (npx tsc -p tsconfig.json, the native addon), the lab images
# (lab/build-images.sh) and the patched modules (test/trap/run-nested.sh --build-only, run here
# when missing). Env: INTROVISOR_CACHE (default /var/cache/introvisor), INTROVISOR_KERNEL_ABI.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
acache="$cache/appliance"
suite=bookworm
root_extra_mib=384   # free room on the root partition (journal, logs, apt state)
data_mib=512         # the data partition as built; a real disk grows it (docs/APPLIANCE.md)

die() { echo "build-appliance: $*" >&2; exit 1; }
say() { echo "build-appliance: $*" >&2; }
# shellcheck source=lab/lib.sh
. "$repo/lab/lib.sh"

only_key=0
case "${1:-}" in
  --key) only_key=1 ;;
  "") ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
  *) die "unknown argument '$1'" ;;
esac

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot, file ownership in the image)"
# shellcheck source=lab/progress.sh
. "$repo/lab/progress.sh"
[ "$only_key" = 1 ] || progress_wrap build-appliance "$0" "$@"
mkdir -p "$acache"
exec 8>"$acache/.lock"
flock 8

# --- tools (idempotent) -------------------------------------------------------------------
need=()
for p in mmdebstrap gdisk e2fsprogs bmap-tools qemu-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
fi

# --- inputs -------------------------------------------------------------------------------
manifest=$(lab_manifest "$cache" "$repo")
[ -f "$manifest" ] || die "lab images not built: lab/build-images.sh (scripts/setup.sh runs it)"
[ -f "$repo/dist/src/cli/main.js" ] || die "the product is not built: npx tsc -p tsconfig.json"
[ -f "$repo/build/Release/introvisor.node" ] || die "the native addon is not built: npm ci (or npx node-gyp rebuild)"
mf() { node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); process.stdout.write(String(m[process.argv[2]]))' "$manifest" "$1"; }
guest_kernel=$(mf kernel); guest_initrd=$(mf initrd); guest_base=$(mf baseImage)
kver=$(mf kernelVersion)
lab_patched_kvm "$cache" "$repo" >&2
abi=$LAB_ABI
[ "$(mf kernelAbi)" = "$abi" ] || die "the lab images are for $(mf kernelAbi), the patched modules for $abi"
[ "$(modinfo -F vermagic "$LAB_KVM_DIR/kvm.ko" | awk '{print $1}')" = "$abi" ] || die "$LAB_KVM_DIR/kvm.ko is not built for $abi"
node_bin=$(readlink -f "$(command -v node)")

packages=(systemd systemd-sysv udev dbus kmod "linux-image-$abi=$kver" initramfs-tools grub-pc-bin
  qemu-system-x86 qemu-utils openssl ca-certificates e2fsprogs util-linux iproute2 procps logrotate
  mosquitto-clients libstdc++6 less)

# Content hash of files under a folder: relative paths, modes, contents, link targets.
tree_hash() {
  (cd "$1" && {
    find . -type l -printf '%p -> %l\n'
    find . -type f ! -name '*.tsbuildinfo' -printf '%p %m\n'
    find . -type f ! -name '*.tsbuildinfo' -print0 | xargs -0 -r sha256sum
  } | LC_ALL=C sort) | sha256sum | cut -c1-16
}
file_hash() { sha256sum "$@" | cut -c1-64 | sha256sum | cut -c1-16; }

base_key=$(printf '%s\n' "v1" "$suite" "${packages[@]}" | sha256sum | cut -c1-16)
product_key=$( { tree_hash "$repo/dist/src"; tree_hash "$repo/bin"
  file_hash "$repo/package.json" "$repo/package-lock.json" "$repo/build/Release/introvisor.node" "$node_bin"
  find "$repo/node_modules" -name '*.node' -path '*/Release/*' | LC_ALL=C sort | xargs -r sha256sum | cut -c1-64; } | sha256sum | cut -c1-16)
key=$( { echo "$base_key $product_key $abi $kver"
  progress_unreported "$repo/scripts/build-appliance.sh" | sha256sum; tree_hash "$repo/rootfs"
  file_hash "$LAB_KVM_DIR/kvm.ko" "$LAB_KVM_DIR/kvm-amd.ko"
  # The guest images by the lab's own content key (its golden disk's bytes differ per build).
  echo "lab $(mf key)"
  if [ -f "$repo/docs/APPLIANCE.md" ]; then sha256sum < "$repo/docs/APPLIANCE.md"; fi; } | sha256sum | cut -c1-16)
if [ "$only_key" = 1 ]; then echo "$key"; exit 0; fi

out="$acache/$key"
if [ -f "$out/.complete" ]; then
  touch "$out/.complete"
  say "cached: $out (key $key)"
  echo "$out/introvisor-appliance.img"
  exit 0
fi

t0=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
work=$(mktemp -d "$acache/.build.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# --- 1. the Debian system (cached by package set) ----------------------------------------
progress_phase "debian system"
base="$acache/base-$base_key.tar"
if [ ! -f "$base" ]; then
  # The Debian archive entries (main) this machine's apt uses: "URI suite" per line.
  mirrors=$(apt-cache policy | awk '
    /^ *[0-9]+ [a-z]+:\/\// { uri=$2; split($3, s, "/"); suite=s[1]; comp=s[2]; next }
    /^ *release / && /o=Debian,/ && comp == "main" && suite ~ /^'"$suite"'(-updates|-security)?$/ { print uri, suite }' | sort -u)
  echo "$mirrors" | grep -q " $suite\$" || die "no Debian $suite main entry in this machine's apt sources (apt-get update?)"
  say "mmdebstrap $suite minbase + ${#packages[@]} packages (mirror: $(echo "$mirrors" | awk '{print $1}' | sort -u | tr '\n' ' '))"
  srcs=()
  while read -r uri s; do srcs+=("deb $uri $s main"); done <<<"$mirrors"
  tb=$(date +%s.%N)
  mmdebstrap --variant=minbase --mode=root --format=tar --include="$(IFS=,; echo "${packages[*]}")" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" "$work/base.tar" "${srcs[@]}" > "$work/mmdebstrap.log" 2>&1 \
    || { tail -30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }
  mv "$work/base.tar" "$base"
  say "mmdebstrap: $(secs "$tb") s, $(du -h "$base" | cut -f1)"
  # Keep the two newest base tarballs.
  ls -t "$acache"/base-*.tar | tail -n +3 | xargs -r rm -f
fi

# --- 2. the appliance's root ----------------------------------------------------------------
progress_phase "root"
root="$work/root"
mkdir -p "$root"
tar -C "$root" -xf "$base"
[ -f "$root/boot/vmlinuz-$abi" ] || die "the base system has no /boot/vmlinuz-$abi"

# A headless server: no sound, graphics, cameras, radios (about half of the modules' size).
for d in sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
         drivers/bluetooth net/bluetooth net/wireless net/mac80211 drivers/iio drivers/isdn; do
  rm -rf "$root/lib/modules/$abi/kernel/$d"
done
# The patched KVM: updates/ takes precedence over kernel/ for modprobe (depmod's search order).
mkdir -p "$root/lib/modules/$abi/updates"
cp "$LAB_KVM_DIR/kvm.ko" "$LAB_KVM_DIR/kvm-amd.ko" "$root/lib/modules/$abi/updates/"
chroot "$root" depmod -a "$abi"
grep -q "^updates/kvm-amd.ko:.*updates/kvm.ko" "$root/lib/modules/$abi/modules.dep" \
  || die "depmod did not pick the patched kvm-amd.ko/kvm.ko from updates/"

# The product: what `introvisor run` needs at run time, no dev dependencies.
app="$root/usr/lib/introvisor/app"
mkdir -p "$app/dist" "$app/build/Release"
cp -a "$repo/bin" "$repo/package.json" "$repo/package-lock.json" "$app/"
cp -a "$repo/dist/src" "$app/dist/src"
cp "$repo/build/Release/introvisor.node" "$app/build/Release/"
cp -a "$repo/node_modules" "$app/node_modules"
(cd "$app" && npm prune --omit=dev --offline --no-audit --no-fund --ignore-scripts >/dev/null 2>&1) \
  || die "npm prune --omit=dev failed in the staged product"
[ -f "$app/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ] || die "better-sqlite3's native module is missing from the staged product"
install -m 0755 "$node_bin" "$root/usr/bin/node"
mkdir -p "$root/usr/lib/introvisor/docs"
if [ -f "$repo/docs/APPLIANCE.md" ]; then cp "$repo/docs/APPLIANCE.md" "$root/usr/lib/introvisor/docs/"; fi

# The demo guest the default config guards (the lab's images; its golden disk is copied to the
# data partition at first boot).
mkdir -p "$root/usr/share/introvisor/guest"
cp "$guest_kernel" "$root/usr/share/introvisor/guest/vmlinuz"
cp "$guest_initrd" "$root/usr/share/introvisor/guest/initrd.img"
cp "$guest_base" "$root/usr/share/introvisor/guest/base.qcow2"

# The appliance's own files, then the system settings that are per image, not per box.
cp -a "$repo/rootfs/." "$root/"
echo introvisor > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tintrovisor\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
cat > "$root/etc/fstab" <<'EOF'
# The root and data partitions by GPT partition label (scripts/build-appliance.sh). The data partition
# is waited for as long as it takes: without it the box has no state, and a slow boot is no reason to
# give up into an emergency shell nobody can log in to.
PARTLABEL=introvisor-root  /                    ext4  defaults,errors=remount-ro  0 1
PARTLABEL=introvisor-data  /var/lib/introvisor  ext4  defaults,nodev,nosuid,x-systemd.device-timeout=10min  0 2
EOF
mkdir -p "$root/var/lib/introvisor"
: > "$root/etc/machine-id"   # systemd makes one at first boot
rm -f "$root/var/lib/dbus/machine-id"
# No password logins: the box is run through its web page, MQTT and OTA.
chroot "$root" passwd -l root >/dev/null
chroot "$root" systemctl enable introvisor.service introvisor-firstboot.service systemd-networkd.service >/dev/null 2>&1 \
  || die "systemctl enable failed in the image"
# The initramfs (made when the kernel was installed) must not carry the stock kvm modules: udev
# there would load them before the root, and its patched modules, are mounted.
if chroot "$root" lsinitramfs "/boot/initrd.img-$abi" | grep -qE '/kvm(-amd|-intel)?\.ko'; then
  die "the initramfs carries kvm modules"
fi

# GRUB: modules and config on the root partition; core.img finds it by filesystem label.
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
cat > "$root/boot/grub/grub.cfg" <<EOF
set timeout=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
menuentry 'introvisor appliance ($abi)' {
  search --no-floppy --label introvisor-root --set=root
  linux /boot/vmlinuz-$abi root=PARTLABEL=introvisor-root ro console=tty0 console=ttyS0,115200 quiet loglevel=4 systemd.show_status=auto
  initrd /boot/initrd.img-$abi
}
EOF
cat > "$work/early.cfg" <<'EOF'
search --no-floppy --label introvisor-root --set=root
set prefix=($root)/boot/grub
EOF
cp "$work/early.cfg" "$root/tmp/early.cfg"
chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub \
  biosdisk part_gpt ext2 search search_label normal configfile linux serial terminal echo test
mv "$root/tmp/core.img" "$work/core.img"; cp "$root/usr/lib/grub/i386-pc/boot.img" "$work/boot.img"
rm -f "$root/tmp/early.cfg"
say "root assembled: $(du -sh "$root" | cut -f1) ($(secs "$t0") s)"

# --- 3. the disk ----------------------------------------------------------------------------
progress_phase "disk"
root_mib=$(( $(du -sm "$root" | cut -f1) * 115 / 100 + root_extra_mib ))
mke2fs -q -F -t ext4 -L introvisor-root -E root_owner=0:0 -d "$root" "$work/root.ext4" "${root_mib}M" >/dev/null \
  || die "mke2fs of the root partition failed"
mke2fs -q -F -t ext4 -L introvisor-data -m 0 "$work/data.ext4" "${data_mib}M" >/dev/null || die "mke2fs of the data partition failed"
rm -rf "$root"

img="$work/introvisor-appliance.img"
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -le 2048 ] || die "core.img is $core_sectors sectors; the bios-boot partition has 2048"
# 1 MiB alignment: bios-boot at 1 MiB (1 MiB), root at 2 MiB, data after it, 1 MiB for the backup GPT.
root_start=4096; root_end=$(( root_start + root_mib * 2048 - 1 ))
data_start=$(( root_end + 1 )); data_end=$(( data_start + data_mib * 2048 - 1 ))
total_sectors=$(( data_end + 1 + 2048 ))
truncate -s $(( total_sectors * 512 )) "$img"
sgdisk -o \
  -n 1:2048:4095 -t 1:ef02 -c 1:bios-boot -u 1:5b0c3bd4-6a5e-4d2c-9a3f-1c2d3e4f5a61 \
  -n 2:$root_start:$root_end -t 2:8304 -c 2:introvisor-root -u 2:5b0c3bd4-6a5e-4d2c-9a3f-1c2d3e4f5a62 \
  -n 3:$data_start:$data_end -t 3:8300 -c 3:introvisor-data -u 3:5b0c3bd4-6a5e-4d2c-9a3f-1c2d3e4f5a63 \
  -U 5b0c3bd4-6a5e-4d2c-9a3f-1c2d3e4f5a60 \
  "$img" >/dev/null || die "sgdisk failed"
dd if="$work/root.ext4" of="$img" bs=1M seek=$(( root_start / 2048 )) conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$img" bs=1M seek=$(( data_start / 2048 )) conv=notrunc,sparse status=none
rm -f "$work/root.ext4" "$work/data.ext4"

# What grub-install does for BIOS + GPT: boot.img's code in the protective MBR (the partition
# table and signature stay), pointing at core.img in the bios-boot partition, whose first sector
# (diskboot) lists where the rest of core.img is.
le() { local v=$1 n=$2 i s=''; for ((i = 0; i < n; i++)); do s+=$(printf '\\x%02x' $(( (v >> (8 * i)) & 255 ))); done; printf '%b' "$s"; }
dd if="$work/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
le 2048 8 | dd of="$img" bs=1 seek=$((0x5c)) conv=notrunc status=none            # GRUB_BOOT_MACHINE_KERNEL_SECTOR
le 2049 8 > "$work/blocklist"; le $(( core_sectors - 1 )) 2 >> "$work/blocklist"
dd if="$work/blocklist" of="$work/core.img" bs=1 seek=$((0x200 - 12)) conv=notrunc status=none   # diskboot's first blocklist
dd if="$work/core.img" of="$img" bs=512 seek=2048 conv=notrunc status=none
sgdisk -v "$img" | grep -q 'No problems found' || die "sgdisk -v reports problems with the image's GPT"
[ "$(sgdisk -p "$img" | grep -cE '^ +[123] ')" = 3 ] || die "the image's GPT does not hold the three partitions"

progress_phase "bmap and publish"
bmaptool -q create -o "$work/introvisor-appliance.bmap" "$img" 2>/dev/null || bmaptool create -o "$work/introvisor-appliance.bmap" "$img"
sha=$(sha256sum "$img" | cut -c1-64)
build_s=$(secs "$t0")
cat > "$work/manifest.json" <<EOF
{
  "key": "$key",
  "kernelAbi": "$abi",
  "kernelVersion": "$kver",
  "image": "introvisor-appliance.img",
  "bytes": $(stat -c %s "$img"),
  "allocatedBytes": $(( $(stat -c %b "$img") * 512 )),
  "sha256": "$sha",
  "partitions": { "bios-boot": [2048, 4095], "introvisor-root": [$root_start, $root_end], "introvisor-data": [$data_start, $data_end] },
  "buildSeconds": $build_s
}
EOF
rm -rf "$out"
mkdir -p "$out"
mv "$img" "$work/introvisor-appliance.bmap" "$work/manifest.json" "$out/"
touch "$out/.complete"
# Keep the newest three images.
ls -td "$acache"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
say "built $out/introvisor-appliance.img: $(( $(stat -c %s "$out/introvisor-appliance.img") / 1048576 )) MiB, $(du -h "$out/introvisor-appliance.img" | cut -f1) allocated, ${build_s} s (key $key)"
echo "$out/introvisor-appliance.img"

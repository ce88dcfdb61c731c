#!/usr/bin/env bash
# Builds a full Debian 12 (systemd) guest that boots from its own disk, idempotently:
#   disk    : qcow2, MBR: p1 EFI system partition (FAT), p2 root (ext4, made with mke2fs -d)
#   boot    : GRUB on the disk for both firmwares (i386-pc core in the MBR gap, BOOTX64.EFI on the ESP)
#   system  : mmdebstrap from the machine's own Debian apt sources: Debian's kernel (the lab's ABI,
#             so the attack modules match), systemd, udev, qemu-guest-agent (started by udev on the
#             virtio port org.qemu.guest_agent.0), nginx (the critical service), serial console
#   attacks : lab/guest/attacks/*.ko built against linux-headers-<abi>, in /usr/lib/introvisor/
# Output: $INTROVISOR_CACHE/distro/debian12-<key>/ with disk.qcow2 and manifest.json, and
# $INTROVISOR_CACHE/distro/debian12.json pointing at it. The key hashes contents only (the ABI, this
# script, lab/lib.sh, the attack sources), never this checkout's path.
# Cost: one build downloads ~250 MB of packages and takes a few minutes; an unchanged key is a no-op.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
die() { echo "build-distro-guest: $*" >&2; exit 1; }
say() { [ "${INTROVISOR_SETUP_QUIET:-}" = 1 ] || echo "build-distro-guest: $*"; }
# shellcheck source=lab/lib.sh
. "$here/lib.sh"
# shellcheck source=lab/progress.sh
. "$here/progress.sh"
progress_wrap build-distro-guest "$0" "$@"

suite=bookworm
tag=debian12
root_mib=2048
esp_mib=32

# --- host tools (apt only) -----------------------------------------------------
tools=(mmdebstrap grub-pc-bin grub-efi-amd64-bin mtools dosfstools fdisk qemu-utils e2fsprogs)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "needs root to install: ${missing[*]}"
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

lab_kernel_abi
abi=$LAB_ABI
headers=/usr/src/linux-headers-$abi
[ -f "$headers/Makefile" ] || die "kernel headers for $abi are not installed ($headers): run scripts/setup.sh"

key=$( (echo "$abi $suite"; progress_unreported "$0"; cat "$here/lib.sh"; cd "$here/guest/attacks" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16)
out="$cache/distro/$tag-$key"
pointer="$cache/distro/$tag.json"
# The pointer in the cache and in this checkout's build/lab/ (read first: clones with other guest
# contents on one machine never boot each other's disks).
publish_pointer() {
  local p
  mkdir -p "$here/../build/lab"
  for p in "$pointer" "$here/../build/lab/$tag.json"; do cp "$out/manifest.json" "$p.tmp.$$" && mv "$p.tmp.$$" "$p"; done
}
if [ -f "$out/manifest.json" ]; then
  touch "$out"
  publish_pointer
  say "up to date ($out)"
  exit 0
fi

mkdir -p "$cache/distro"
work=$(mktemp -d "$cache/distro/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- apt sources: the machine's own Debian entries for this suite, read now ----------
progress_phase "apt sources"
# Both formats: one-line sources.list entries and deb822 .sources stanzas; disabled files are skipped.
sources="$work/sources.list"
{
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && grep -E "^[[:space:]]*deb[[:space:]].*[[:space:]]$suite(-[a-z]+)?[[:space:]]" "$f" || true
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uris != "" && suites != "" && enabled != "no") {
          n = split(suites, s, " "); m = split(uris, u, " ")
          for (i = 1; i <= n; i++) if (s[i] ~ "^" suite "(-[a-z]+)?$")
            for (j = 1; j <= m; j++) print "deb" (signed != "" ? " [signed-by=" signed "]" : "") " " u[j] " " s[i] " " comps
        }
        types = uris = suites = comps = signed = enabled = ""
      }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      { k = tolower($1); sub(/:$/, "", k); $1 = ""; v = $0; sub(/^ +/, "", v)
        if (k == "types") types = v; else if (k == "uris") uris = v; else if (k == "suites") suites = v
        else if (k == "components") comps = v; else if (k == "signed-by") signed = v; else if (k == "enabled") enabled = tolower(v) }
      END { flush() }' "$f"
  done
} > "$sources"
[ -s "$sources" ] || die "no '$suite' entry in the machine's apt sources (/etc/apt/sources.list*)"

# --- the root file system ---------------------------------------------------------
rootfs="$work/root"
packages=(systemd-sysv udev kmod "linux-image-$abi" initramfs-tools qemu-guest-agent nginx procps
          iproute2 e2fsprogs ca-certificates)
progress_phase "mmdebstrap"
say "mmdebstrap $suite ($abi) — a few minutes"
mmdebstrap --mode=root --variant=minbase --skip=check/empty \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook='echo introvisor-debian12 > "$1/etc/hostname"' \
  --customize-hook='printf "%s\n" "LABEL=iv-root / ext4 errors=remount-ro 0 1" "LABEL=iv-efi /boot/efi vfat umask=0077,nofail 0 2" "LABEL=iv-data /srv/data ext4 defaults,nofail,x-systemd.device-timeout=5s 0 2" > "$1/etc/fstab"' \
  --customize-hook='mkdir -p "$1/boot/efi" "$1/srv/data" "$1/usr/lib/introvisor"' \
  --customize-hook='printf "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/50-dhcp.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd nginx' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service' \
  --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
  --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*_Packages' \
  "$suite" "$rootfs" "$sources" >"$work/mmdebstrap.log" 2>&1 \
  || { tail -30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log above)"; }
kernel_file=$(ls "$rootfs/boot/vmlinuz-$abi") || die "no /boot/vmlinuz-$abi in the guest"
[ -f "$rootfs/boot/initrd.img-$abi" ] || die "no /boot/initrd.img-$abi in the guest (initramfs-tools did not run)"

# --- attack modules against the same kernel's headers -------------------------------
progress_phase "attack modules"
mkdir -p "$work/attacks"
cp "$here/guest/attacks/"* "$work/attacks/"
make -s -C "$headers" M="$work/attacks" modules >"$work/attacks.log" 2>&1 \
  || { cat "$work/attacks.log" >&2; die "building the attack modules against $headers failed"; }
cp "$work/attacks/"*.ko "$rootfs/usr/lib/introvisor/"

# --- GRUB: configuration and modules on the root file system -------------------------
progress_phase "grub"
cmdline="root=LABEL=iv-root ro console=ttyS0,115200 panic=-1"
mkdir -p "$rootfs/boot/grub"
cp -r /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi "$rootfs/boot/grub/"
cat > "$rootfs/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry 'Debian GNU/Linux ($abi)' {
  search --no-floppy --label --set=root iv-root
  linux /boot/vmlinuz-$abi $cmdline
  initrd /boot/initrd.img-$abi
}
CFG
# Both firmwares start GRUB with the root partition as its prefix.
early="$work/early.cfg"
printf 'search --no-floppy --label --set=root iv-root\nset prefix=($root)/boot/grub\n' > "$early"
grub-mkimage -O i386-pc -o "$work/core.img" -c "$early" -p /boot/grub \
  biosdisk part_msdos ext2 search search_label normal
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$early" -p /boot/grub \
  part_msdos ext2 fat search search_label normal

# --- the disk: MBR, ESP, root --------------------------------------------------------
progress_phase "disk"
raw="$work/disk.raw"
esp_start=2048                      # sectors; core.img lives in sectors 1..2047
root_start=$(( esp_start + esp_mib * 2048 ))
truncate -s $(( (root_start / 2048 + root_mib) ))M "$raw"
printf 'label: dos\nstart=%s, size=%s, type=ef\nstart=%s, type=83, bootable\n' \
  "$esp_start" $(( esp_mib * 2048 )) "$root_start" | sfdisk -q "$raw"
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -lt "$esp_start" ] || die "GRUB core image ($core_sectors sectors) does not fit before the first partition"
# boot.img's first 440 bytes (the partition table stays), core.img from sector 1: the blocklist
# grub-mkimage writes into core.img's first sector already reads on from sector 2.
dd if=/usr/lib/grub/i386-pc/boot.img of="$raw" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none
mkfs.fat -F 16 -n IV-EFI --offset "$esp_start" "$raw" $(( esp_mib * 1024 )) >/dev/null
mmd -i "$raw@@$(( esp_start * 512 ))" ::/EFI ::/EFI/BOOT
mcopy -i "$raw@@$(( esp_start * 512 ))" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mke2fs -q -t ext4 -L iv-root -E offset=$(( root_start * 512 )) -d "$rootfs" -F "$raw" "${root_mib}M"
progress_phase "qcow2"
say "converting to qcow2"
qemu-img convert -q -f raw -O qcow2 "$raw" "$work/disk.qcow2"

# --- publish -------------------------------------------------------------------------------
progress_phase "publish"
mkdir -p "$out.tmp"
mv "$work/disk.qcow2" "$out.tmp/"
version=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f='${Version}' "linux-image-$abi")
cat > "$out.tmp/manifest.json" <<JSON
{
  "distro": "$tag",
  "kernelAbi": "$abi",
  "kernelVersion": "$version",
  "key": "$key",
  "dir": "$out",
  "disk": "$out/disk.qcow2",
  "format": "qcow2",
  "attackModules": {
    "syscallHook": "/usr/lib/introvisor/iv_syscall_hook.ko",
    "dkomHide": "/usr/lib/introvisor/iv_dkom_hide.ko",
    "hideModule": "/usr/lib/introvisor/iv_hide_module.ko"
  },
  "criticalService": "nginx"
}
JSON
rm -rf "$out" && mv "$out.tmp" "$out"
publish_pointer
# Builds unused for two days go (another clone may still boot the newer one).
find "$cache/distro" -mindepth 1 -maxdepth 1 -type d -name "$tag-*" -mtime +2 -print0 | while IFS= read -r -d '' d; do
  [ "$d" = "$out" ] || rm -rf "$d"
done
say "built $out"

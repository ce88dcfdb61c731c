#!/usr/bin/env bash
# Nested test of the KVM write trap (kernel-patches/series), idempotent:
#   1. picks the lab's guest kernel ABI (INTROVISOR_KERNEL_ABI or what
#      linux-image-amd64 depends on) and checks that linux-headers-<abi> and
#      linux-source-6.1 carry the same Debian version as the image;
#   2. applies the series to linux-source-6.1 (must apply with no fuzz), runs
#      checkpatch.pl on it, builds the patched kvm.ko/kvm-amd.ko out of tree
#      against the headers (no warnings allowed);
#   3. builds test/trap/trap_test.c (static) and an initramfs with the modules;
#   4. boots Debian's stock kernel in qemu-system-x86_64 -accel tcg -cpu EPYC
#      and runs the test with kvm_amd npt=1 and npt=0 (shadow paging).
# Prints TAP ("ok N - ..." / "not ok N - ..."); exit 0 only if all passed.
#
#   test/trap/run-nested.sh                 build (cached) + nested test
#   test/trap/run-nested.sh --full-kernel   also build the full patched kernel
#                                           (small config, KVM built in)
#   test/trap/run-nested.sh --build-only    stop after building the modules
#
# Caches live in $INTROVISOR_CACHE/trap (default /var/cache/introvisor/trap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
series_dir="$repo/kernel-patches/series"
uapi_copy="$repo/kernel-patches/uapi/introvisor_trap.h"
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
tcache="$cache/trap"
# One build at a time: CI may run this and test/trap/node/run-nested-node.sh (which calls it) at once.
mkdir -p "$tcache"
exec 9>"$tcache/.lock"
flock 9
jobs=${INTROVISOR_JOBS:-$(nproc)}
qemu_timeout=${INTROVISOR_TRAP_TIMEOUT:-600}
loops=${INTROVISOR_TRAP_LOOPS:-1000}

full_kernel=0
build_only=0
for arg in "$@"; do
  case "$arg" in
    --full-kernel) full_kernel=1 ;;
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run-nested: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

die() { echo "run-nested: $*" >&2; echo "Bail out! $*"; exit 1; }
log() { echo "# $*"; }
say() { log "$@"; }
# shellcheck source=lab/lib.sh
. "$repo/lab/lib.sh"

# shellcheck source=test/trap/nested-tap.sh
. "$repo/test/trap/nested-tap.sh"

for tool in apt-cache apt-get dpkg-deb dpkg-query gcc make perl patch cpio gzip modinfo \
            qemu-system-x86_64 sha256sum rsync xz; do
  command -v "$tool" >/dev/null || die "missing tool '$tool' (apt-get install $tool)"
done
lab_require_busybox
ls "$series_dir"/*.patch >/dev/null 2>&1 || die "no patches in $series_dir"

# ---- 1. versions -------------------------------------------------------------
lab_kernel_abi
abi=$LAB_ABI

lab_fetch_kernel "$cache" "$abi"
kdir="$cache/kernel/$abi"
deb=$(ls -t "$cache/debs"/linux-image-"$abi"_*_amd64.deb 2>/dev/null | head -n1 || true)
if [ -n "$deb" ]; then
  image_ver=$(dpkg-deb -f "$deb" Version)
else
  image_ver=$(zcat "$kdir/usr/share/doc/linux-image-$abi/changelog.Debian.gz" 2>/dev/null \
              | sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p')
fi
[ -n "$image_ver" ] || die "cannot tell the Debian version of linux-image-$abi"
vmlinuz="$kdir/boot/vmlinuz-$abi"
moddir="$kdir/lib/modules/$abi"
[ -f "$vmlinuz" ] || die "$vmlinuz missing"

headers=/usr/src/linux-headers-$abi
headers_ver=$(dpkg-query -W -f='${Version}' "linux-headers-$abi" 2>/dev/null || true)
[ -n "$headers_ver" ] && [ -f "$headers/Makefile" ] \
  || die "linux-headers-$abi is not installed: apt-get install linux-headers-$abi=$image_ver"
[ "$headers_ver" = "$image_ver" ] \
  || die "linux-headers-$abi is $headers_ver but linux-image-$abi is $image_ver: apt-get install linux-headers-$abi=$image_ver"

source_ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || true)
if [ "$source_ver" != "$image_ver" ]; then
  log "installing linux-source-6.1=$image_ver (have '${source_ver:-none}')"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "linux-source-6.1=$image_ver" >/dev/null 2>&1 \
    || die "linux-source-6.1 $image_ver (matching linux-image-$abi) is not installable; installed: '${source_ver:-none}'. The archive may have moved on: apt-get update, or pin INTROVISOR_KERNEL_ABI to an ABI whose source is available"
  source_ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
fi
[ "$source_ver" = "$image_ver" ] || die "linux-source-6.1 is $source_ver, linux-image-$abi is $image_ver"
log "kernel: linux-image-$abi $image_ver, headers $headers_ver, source $source_ver"

# ---- 2. patched tree, checkpatch, modules ------------------------------------
t_start=$(date +%s)
pristine="$tcache/pristine/$source_ver"
if [ ! -f "$pristine/.complete" ]; then
  log "unpacking linux-source-6.1 $source_ver"
  rm -rf "$pristine" && mkdir -p "$pristine"
  tar -C "$pristine" -xJf /usr/src/linux-source-6.1.tar.xz
  touch "$pristine/.complete"
fi
pristine_src="$pristine/linux-source-6.1"

series_key=$(cat "$series_dir"/*.patch | sha256sum | cut -c1-12)
patched="$tcache/patched/$source_ver-$series_key"
if [ ! -f "$patched/.complete" ]; then
  log "applying the series to a copy of the source ($series_key)"
  rm -rf "$patched" && mkdir -p "$patched"
  cp -al "$pristine_src" "$patched/linux-source-6.1"
  ok=1
  for p in "$series_dir"/*.patch; do
    if ! (cd "$patched/linux-source-6.1" && patch -p1 -F0 -s --no-backup-if-mismatch < "$p") > "$patched/apply.log" 2>&1; then
      ok=0; cat "$patched/apply.log" >&2; break
    fi
  done
  [ "$ok" = 1 ] || { tap 0 "series applies cleanly to linux-source-6.1 $source_ver"; finish; }
  touch "$patched/.complete"
fi
tree="$patched/linux-source-6.1"
# Keep one patched tree and one selftest build: drop those of older series.
for d in "$tcache"/patched/* "$tcache"/selftest/*; do
  case "$d" in */"$source_ver-$series_key") ;; *) [ -d "$d" ] && rm -rf "$d" ;; esac
done
tap 1 "series applies cleanly (no fuzz) to linux-source-6.1 $source_ver ($(ls "$series_dir"/*.patch | wc -l) patches)"

# checkpatch results are cached with the patched tree (same series, same result).
if [ ! -f "$patched/checkpatch.txt" ]; then
  for p in "$series_dir"/*.patch; do
    echo "== $(basename "$p")"
    perl "$pristine_src/scripts/checkpatch.pl" --no-tree --strict "$p" 2>&1 || true
  done > "$patched/checkpatch.txt.tmp"
  mv "$patched/checkpatch.txt.tmp" "$patched/checkpatch.txt"
fi
cp_errors=$(awk '/^total: / && $2 != 0 {n++} END {print n+0}' "$patched/checkpatch.txt")
awk '/^== / {f=$2} /^total: / {print "# checkpatch: " f ": " $0}' "$patched/checkpatch.txt"
[ "$cp_errors" = 0 ] || grep -E '^(==|ERROR)' -A3 "$patched/checkpatch.txt" | sed 's/^/# /' | head -40
tap "$([ $cp_errors = 0 ] && echo 1 || echo 0)" "scripts/checkpatch.pl --strict: no errors in the series"

if cmp -s "$uapi_copy" "$tree/include/uapi/linux/introvisor_trap.h"; then
  tap 1 "kernel-patches/uapi/introvisor_trap.h is the header the series installs"
else
  tap 0 "kernel-patches/uapi/introvisor_trap.h is the header the series installs"
fi

# Out-of-tree build of arch/x86/kvm + virt/kvm against the headers of the
# same Debian version.  The include path puts the patched tree first, so
# changes to shared headers (kvm_host.h, the uapi header) are seen.
bdir="$tcache/build/$abi"
mkdir -p "$bdir/kvm/virt"
ln -sfn "$tree" "$bdir/tree"
rsync -rc --delete --exclude '*.o' --exclude '*.ko' --exclude '*.cmd' --exclude '*.mod*' \
  --exclude '*.a' --exclude 'modules.order' --exclude 'Module.symvers' --exclude '*.s' \
  --exclude 'kvm-asm-offsets.h' --exclude 'virt/' --exclude Kbuild --exclude Makefile \
  "$tree/arch/x86/kvm/" "$bdir/kvm/"
rsync -rc --delete --exclude '*.o' --exclude '*.cmd' --exclude '*.a' "$tree/virt/kvm/" "$bdir/kvm/virt/kvm/"
sed -e 's|-I \$(srctree)/arch/x86/kvm|-I $(src)|' \
    -e 's|include \$(srctree)/virt/kvm/Makefile.kvm|include $(src)/virt/kvm/Makefile.kvm|' \
    "$tree/arch/x86/kvm/Makefile" > "$bdir/kvm/Kbuild.new"
cmp -s "$bdir/kvm/Kbuild.new" "$bdir/kvm/Kbuild" 2>/dev/null || mv "$bdir/kvm/Kbuild.new" "$bdir/kvm/Kbuild"
rm -f "$bdir/kvm/Kbuild.new"
T="$bdir/tree"
b0=$(date +%s.%N)
set +e
make -C "$headers" M="$bdir/kvm" KVM=virt/kvm -j"$jobs" \
  NOSTDINC_FLAGS="-nostdinc -I$T/arch/x86/include -I$T/arch/x86/include/uapi -I$T/include -I$T/include/uapi" \
  CONFIG_KVM=m CONFIG_KVM_AMD=m CONFIG_KVM_INTEL= modules > "$bdir/build.log" 2>&1
rc=$?
set -e
b1=$(date +%s.%N)
build_s=$(awk -v a="$b0" -v b="$b1" 'BEGIN{printf "%.1f", b-a}')
if [ $rc != 0 ]; then
  tail -40 "$bdir/build.log" | sed 's/^/# /'
  tap 0 "patched kvm.ko and kvm-amd.ko build against linux-headers-$abi"
  finish
fi
tap 1 "patched kvm.ko and kvm-amd.ko build against linux-headers-$abi (${build_s}s)"
if grep -qi 'warning:' "$bdir/build.log"; then
  grep -i 'warning:' "$bdir/build.log" | head -20 | sed 's/^/# /'
  tap 0 "module build has no compiler warnings"
else
  tap 1 "module build has no compiler warnings"
fi
vermagic=$(modinfo -F vermagic "$bdir/kvm/kvm.ko" | awk '{print $1}')
tap "$([ "$vermagic" = "$abi" ] && echo 1 || echo 0)" "kvm.ko vermagic is $abi ($vermagic)"
echo "# build: modules ${build_s}s"

if [ "$full_kernel" = 1 ]; then
  fdir="$tcache/full/$abi"
  mkdir -p "$fdir"
  if [ ! -f "$fdir/.config" ]; then
    make -C "$tree" O="$fdir" -s x86_64_defconfig >/dev/null
    "$tree/scripts/config" --file "$fdir/.config" \
      -e VIRTUALIZATION -e KVM -e KVM_AMD -e KVM_INTEL -d KVM_WERROR \
      -e VIRTIO_PCI -e VIRTIO_BLK -e VIRTIO_NET -e VIRTIO_CONSOLE -e DEVTMPFS -e DEVTMPFS_MOUNT \
      -d DEBUG_INFO -d DEBUG_INFO_DWARF5 -d DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT -e DEBUG_INFO_NONE
    make -C "$tree" O="$fdir" -s olddefconfig >/dev/null
  fi
  ln -sfn "$tree" "$fdir/source-tree"
  f0=$(date +%s)
  set +e
  make -C "$tree" O="$fdir" -j"$jobs" bzImage > "$fdir/build.log" 2>&1
  rc=$?
  set -e
  f1=$(date +%s)
  kvm_in=$(grep -c '^CONFIG_KVM=y' "$fdir/.config" || true)
  if [ $rc = 0 ] && [ "$kvm_in" = 1 ]; then
    tap 1 "full patched kernel builds with KVM built in ($((f1 - f0))s, $fdir/arch/x86/boot/bzImage)"
  else
    tail -30 "$fdir/build.log" | sed 's/^/# /'
    tap 0 "full patched kernel builds with KVM built in"
  fi
  if grep -E 'arch/x86/kvm/.*warning:|virt/kvm/.*warning:' "$fdir/build.log" >/dev/null; then
    tap 0 "full kernel build: no warnings in arch/x86/kvm or virt/kvm"
  else
    tap 1 "full kernel build: no warnings in arch/x86/kvm or virt/kvm"
  fi
  echo "# build: full kernel $((f1 - f0))s"
fi
# The series' own KVM selftest (tools/testing/selftests/kvm/x86_64/
# introvisor_trap_test.c), built against the patched tree's uapi headers.
st_dir="$tcache/selftest/$source_ver-$series_key"
st_bin="$st_dir/out/x86_64/introvisor_trap_test"
if [ ! -x "$st_bin" ]; then
  rm -rf "$st_dir" && mkdir -p "$st_dir"
  s0=$(date +%s)
  if make -s -C "$tree" O="$st_dir/hdr-build" headers_install INSTALL_HDR_PATH="$st_dir/hdr" > "$st_dir/build.log" 2>&1 \
     && make -s -C "$tree/tools/testing/selftests/kvm" OUTPUT="$st_dir/out" \
          KHDR_INCLUDES="-isystem $st_dir/hdr/include" "$st_bin" >> "$st_dir/build.log" 2>&1; then
    echo "# build: selftest $(( $(date +%s) - s0 ))s"
  else
    tail -20 "$st_dir/build.log" | sed 's/^/# /'
  fi
fi
if [ -x "$st_bin" ] && ! grep -q 'warning:' "$st_dir/build.log"; then
  tap 1 "KVM selftest x86_64/introvisor_trap_test builds without warnings"
else
  tap 0 "KVM selftest x86_64/introvisor_trap_test builds without warnings"
fi

[ "$build_only" = 1 ] && finish

# ---- 3. test program and initramfs -------------------------------------------
work=$(mktemp -d "$tcache/.run.XXXXXX")
gcc -static -O2 -Wall -Wextra -Wno-unused-parameter -Werror -I "$repo/kernel-patches/uapi" \
  -o "$work/trap_test" "$here/trap_test.c" \
  || { tap 0 "test program builds (gcc -static)"; finish; }
tap 1 "test program builds (gcc -static)"

root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,lib/modules/trap}
lab_busybox_root "$root"
cp "$work/trap_test" "$root/bin/trap_test"
if [ -x "$st_bin" ]; then
  cp "$st_bin" "$root/bin/introvisor_trap_test"
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
  done < <(ldd "$st_bin" | awk '/=>/ && $3 ~ /^\// {print $3; next} /^\t\// {print $1}')
fi

# Modules in load order, each one's dependencies (modinfo -F depends) first:
# the patched kvm/kvm_amd from the build, everything else from the image.
lab_index_modules "$moddir/kernel"
LAB_MODPATH[kvm]="$bdir/kvm/kvm.ko"
LAB_MODPATH[kvm_amd]="$bdir/kvm/kvm-amd.ko"
lab_add_module kvm_amd "$root/lib/modules/trap"
order=("${LAB_ORDER[@]}")
log "modules: ${order[*]}"

cat > "$root/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "TRAP boot \$(cut -d' ' -f1 /proc/uptime)"
grep -q svm /proc/cpuinfo || echo "TRAP not ok - no SVM in the L1 guest CPU"
load() {
  for m in ${order[*]}; do
    p=""
    [ "\$m" = kvm_amd ] && p="npt=\$1 nested=1"
    grep -q "^\$m " /proc/modules || insmod /lib/modules/trap/\$m.ko \$p || echo "TRAP not ok - npt=\$1: insmod \$m"
  done
}
for npt in 1 0; do
  load \$npt
  echo "TRAP kvm_amd npt=\$(cat /sys/module/kvm_amd/parameters/npt) nested=\$(cat /sys/module/kvm_amd/parameters/nested)"
  t0=\$(cut -d' ' -f1 /proc/uptime)
  /bin/trap_test npt=\$npt $loops
  echo "TRAP exit npt=\$npt \$? \$t0 \$(cut -d' ' -f1 /proc/uptime)"
  if [ -x /bin/introvisor_trap_test ]; then
    /bin/introvisor_trap_test > /tmp/st.log 2>&1
    rc=\$?
    sed 's/^/# selftest: /' /tmp/st.log
    [ \$rc = 0 ] && echo "TRAP ok - npt=\$npt: KVM selftest introvisor_trap_test passes" \
                 || echo "TRAP not ok - npt=\$npt: KVM selftest introvisor_trap_test passes (exit \$rc)"
  fi
  rmmod kvm_amd
done
dmesg | grep -E 'kvm|SVM|BUG:|WARNING: CPU|Call Trace|RIP:' | sed 's/^/TRAP dmesg /' | tail -40
echo "TRAP all-done"
poweroff -f
EOF
chmod +x "$root/init"
lab_pack_initramfs "$root" "$work/initrd.img"

# ---- 4. boot and test --------------------------------------------------------
serial="$tcache/last-serial.log"
lab_boot_nested "$vmlinuz" "$work/initrd.img" 1024 "$serial" "$qemu_timeout" "$work"
boot_s=$LAB_BOOT_SECONDS

tr -d '\r' < "$serial" > "$work/serial.txt"
grep -q '^TRAP all-done' "$work/serial.txt" && tap 1 "nested guest ran to the end (${boot_s}s boot + tests)" \
  || { tail -40 "$work/serial.txt" | sed 's/^/# serial: /'; tap 0 "nested guest ran to the end"; }
for npt in 1 0; do
  if grep -q "^TRAP kvm_amd npt=$([ $npt = 1 ] && echo Y || echo N) nested=1" "$work/serial.txt"; then
    tap 1 "kvm_amd (patched) loaded with npt=$npt nested=1"
  else
    tap 0 "kvm_amd (patched) loaded with npt=$npt nested=1"
  fi
  if grep -q "^TRAP exit npt=$npt 0 " "$work/serial.txt"; then
    tap 1 "trap_test npt=$npt exited 0"
  else
    tap 0 "trap_test npt=$npt exited 0"
  fi
done
while IFS= read -r line; do
  nested_relay TRAP "$line" && continue
  case "$line" in
    "TRAP measure "*|"TRAP exit "*|"TRAP boot "*|"TRAP summary "*) echo "# ${line#TRAP }" ;;
    "TRAP dmesg "*) echo "# ${line}" ;;
    "# "*) echo "$line" ;;
  esac
done < "$work/serial.txt"
if grep -qE 'TRAP dmesg .*(BUG:|WARNING: CPU|Call Trace)' "$work/serial.txt"; then
  tap 0 "no kernel BUG/WARNING in the nested guest"
else
  tap 1 "no kernel BUG/WARNING in the nested guest"
fi
t_end=$(date +%s)
echo "# total $((t_end - t_start))s (modules ${build_s}s, qemu ${boot_s}s); serial log: $serial"
finish

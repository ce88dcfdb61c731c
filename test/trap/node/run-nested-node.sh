#!/usr/bin/env bash
# The write trap through introvisor's own native binding, in a nested guest:
# boots Debian's stock kernel (the lab ABI) in qemu-system-x86_64 -accel tcg
# -cpu EPYC with an initramfs holding node, this repo's dist/ and
# build/Release/introvisor.node, the patched kvm modules that
# test/trap/run-nested.sh built (and caches), and test/trap/node/vmm.c. Runs
# dist/test/trap/node/check-binding.js twice: with the patched kvm_amd
# ("patched": attach, arm, refused writes logged) and with the image's stock
# kvm_amd ("stock": trap unavailable). TAP on stdout; exit 0 only if all passed.
#
#   test/trap/node/run-nested-node.sh     (needs `npx tsc -p .` and the addon built)
#
# Env: INTROVISOR_CACHE (default /var/cache/introvisor), INTROVISOR_KERNEL_ABI,
# INTROVISOR_TRAP_TIMEOUT (QEMU wall-clock limit, default 600 s).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
tcache="$cache/trap"
qemu_timeout=${INTROVISOR_TRAP_TIMEOUT:-600}

die() { echo "run-nested-node: $*" >&2; echo "Bail out! $*"; exit 1; }
say() { echo "# $*"; }
# shellcheck source=lab/lib.sh
. "$repo/lab/lib.sh"

# shellcheck source=test/trap/nested-tap.sh
. "$repo/test/trap/nested-tap.sh"

for tool in gcc cpio gzip modinfo qemu-system-x86_64 ldd node; do
  command -v "$tool" >/dev/null || die "missing tool '$tool'"
done
lab_require_busybox
[ -f "$repo/dist/test/trap/node/check-binding.js" ] || die "dist/ is not built: npx tsc -p ."
[ -f "$repo/build/Release/introvisor.node" ] || die "native addon not built: npx node-gyp rebuild"

# The patched modules and the kernel image come from run-nested.sh's cache.
lab_patched_kvm "$cache" "$repo"
abi=$LAB_ABI
vmlinuz="$LAB_KDIR/boot/vmlinuz-$abi"
moddir="$LAB_KDIR/lib/modules/$abi"
echo "# kernel $abi; patched modules from $LAB_KVM_DIR"

work=$(mktemp -d "$tcache/.node.XXXXXX")
root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,lib/modules/patched,lib/modules/stock,iv/build/Release,iv/node_modules}
lab_busybox_root "$root"

gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/vmm" "$here/vmm.c" || { tap 0 "vmm.c builds (gcc -static)"; finish; }
tap 1 "vmm.c builds (gcc -static)"

# node, its shared libraries and the addon's, the compiled repo and the runtime modules it imports.
node_bin=$(readlink -f "$(command -v node)")
cp "$node_bin" "$root/bin/node"
for bin in "$node_bin" "$repo/build/Release/introvisor.node"; do
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
  done < <(ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $3; next} /^\t\// {print $1}')
done
cp "$repo/package.json" "$root/iv/"
cp "$repo/build/Release/introvisor.node" "$root/iv/build/Release/"
mkdir -p "$root/iv/dist/test/trap"
cp -r "$repo/dist/src" "$root/iv/dist/src"
cp -r "$repo/dist/test/trap/node" "$root/iv/dist/test/trap/node"
for m in ajv fast-deep-equal fast-uri json-schema-traverse require-from-string; do
  cp -r "$repo/node_modules/$m" "$root/iv/node_modules/$m"
done

# Modules in load order, dependencies first: patched kvm/kvm_amd, or the image's own.
lab_index_modules "$moddir/kernel"
lab_add_module kvm_amd "$root/lib/modules/stock"
order=("${LAB_ORDER[@]}")
cp "$LAB_KVM_DIR/kvm.ko" "$root/lib/modules/patched/kvm.ko"
cp "$LAB_KVM_DIR/kvm-amd.ko" "$root/lib/modules/patched/kvm_amd.ko"
echo "# modules: ${order[*]}"

cat > "$root/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "NODETEST boot \$(cut -d' ' -f1 /proc/uptime)"
load() {
  for m in ${order[*]}; do
    f=/lib/modules/stock/\$m.ko
    case "\$m" in kvm|kvm_amd) f=/lib/modules/\$1/\$m.ko ;; esac
    p=""
    [ "\$m" = kvm_amd ] && p="npt=1 nested=1"
    grep -q "^\$m " /proc/modules || insmod \$f \$p || echo "NODETEST insmod-failed \$1 \$m"
  done
}
for kind in patched stock; do
  load \$kind
  t0=\$(cut -d' ' -f1 /proc/uptime)
  (cd /iv && /bin/node dist/test/trap/node/check-binding.js /bin/vmm \$kind; echo "rc=\$?") 2>&1 | sed 's/^/NODE /'
  echo "NODETEST ran \$kind \$t0 \$(cut -d' ' -f1 /proc/uptime)"
  rmmod kvm_amd
  rmmod kvm
done
dmesg | grep -E 'BUG:|WARNING: CPU|Call Trace' | sed 's/^/NODETEST dmesg /' | tail -20
echo "NODETEST all-done"
poweroff -f
EOF
chmod +x "$root/init"
lab_pack_initramfs "$root" "$work/initrd.img"
echo "# initramfs $(du -h "$work/initrd.img" | cut -f1)"

serial="$tcache/last-node-serial.log"
lab_boot_nested "$vmlinuz" "$work/initrd.img" 1536 "$serial" "$qemu_timeout" "$work"
secs=$LAB_BOOT_SECONDS

tr -d '\r' < "$serial" > "$work/serial.txt"
if grep -q '^NODETEST all-done' "$work/serial.txt"; then tap 1 "nested guest ran to the end (${secs}s)"; else tail -40 "$work/serial.txt" | sed 's/^/# serial: /'; tap 0 "nested guest ran to the end"; fi
grep -q 'NODETEST insmod-failed' "$work/serial.txt" && { grep 'NODETEST insmod-failed' "$work/serial.txt" | sed 's/^/# /'; tap 0 "all kvm modules loaded"; }
while IFS= read -r line; do
  nested_relay NODE "$line" && continue
  case "$line" in
    "NODE rc="*) echo "# check-binding exit ${line#NODE rc=}" ;;
    "NODE "*) echo "# node: ${line#NODE }" ;;
    "NODETEST ran "*) set -- $line; echo "# $3: node run took $(awk -v a="$4" -v b="$5" 'BEGIN{printf "%.1f", b-a}')s inside L1" ;;
    "NODETEST dmesg "*) echo "# $line" ;;
  esac
done < "$work/serial.txt"
for kind in patched stock; do
  c=$(grep -c "^NODE \(not \)\?ok [0-9]* - $kind:" "$work/serial.txt" || true)
  [ "$c" -gt 0 ] && tap 1 "$kind: check-binding.js ran ($c checks)" || tap 0 "$kind: check-binding.js ran"
done
[ "$(grep -c '^NODE rc=0$' "$work/serial.txt" || true)" = 2 ] && tap 1 "check-binding.js exited 0 in both runs" || tap 0 "check-binding.js exited 0 in both runs"
grep -qE 'NODETEST dmesg .*(BUG:|WARNING: CPU|Call Trace)' "$work/serial.txt" && tap 0 "no kernel BUG/WARNING in the nested guest" || tap 1 "no kernel BUG/WARNING in the nested guest"
echo "# serial log: $serial"
finish

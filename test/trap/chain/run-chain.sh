#!/usr/bin/env bash
# The whole write-trap chain, as the appliance runs it: boots Debian's stock
# kernel (the lab ABI) under qemu-system-x86_64 -accel tcg -cpu EPYC (L1) with
# the patched kvm/kvm_amd that test/trap/run-nested.sh built. L1 mounts this
# host's root read-only over virtio-9p and chroots into it, so it runs the
# repo's own `introvisor run` (node, the native addon, SQLite), mosquitto and
# qemu-system-x86_64, which boots the lab guest (L2) under KVM. Inside L1,
# dist/test/trap/chain/chain-check.js drives it: trap armed, a real rootkit
# write (iv_syscall_hook) refused, recorded in SQLite, on MQTT and on the web
# API, counted as a finding. TAP on stdout; exit 0 only if every check passed.
#
#   test/trap/chain/run-chain.sh      (needs `npx tsc -p .`, the addon and the lab images built)
#
# Env: INTROVISOR_CACHE (default /var/cache/introvisor), INTROVISOR_KERNEL_ABI,
# INTROVISOR_TRAP_TIMEOUT (L1 wall-clock limit, default 900 s), IV_CHAIN_ACTIONS (the trap actions
# to run the chain with, one after the other in the same L1; default "gp drop").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
tcache="$cache/trap"
qemu_timeout=${INTROVISOR_TRAP_TIMEOUT:-900}
actions=${IV_CHAIN_ACTIONS:-gp drop}

die() { echo "run-chain: $*" >&2; echo "Bail out! $*"; exit 1; }
say() { echo "# $*"; }
# shellcheck source=lab/lib.sh
. "$repo/lab/lib.sh"
# shellcheck source=test/trap/nested-tap.sh
. "$repo/test/trap/nested-tap.sh"

for a in $actions; do case "$a" in gp|drop) ;; *) die "IV_CHAIN_ACTIONS holds gp and/or drop, not '$a'" ;; esac; done
[ -n "${actions// /}" ] || die "IV_CHAIN_ACTIONS is empty"
for tool in cpio gzip modinfo qemu-system-x86_64 node mosquitto; do
  command -v "$tool" >/dev/null || die "missing tool '$tool'"
done
lab_require_busybox
[ -f "$repo/dist/test/trap/chain/chain-check.js" ] || die "dist/ is not built: npx tsc -p ."
[ -f "$repo/build/Release/introvisor.node" ] || die "native addon not built: npx node-gyp rebuild"
lab_manifest_file=$(lab_manifest "$cache" "$repo")
[ -f "$lab_manifest_file" ] || die "lab images not built: lab/build-images.sh"

lab_patched_kvm "$cache" "$repo"
moddir="$LAB_KDIR/lib/modules/$LAB_ABI"
say "kernel $LAB_ABI; patched modules from $LAB_KVM_DIR"

work=$(mktemp -d "$tcache/.chain.XXXXXX")
root="$work/initramfs"
mkdir -p "$root"/{proc,sys,dev,host,lib/modules}
lab_busybox_root "$root"

# virtio-9p for the host root, then kvm_amd's dependencies; kvm/kvm_amd themselves are the patched ones.
lab_index_modules "$moddir/kernel"
for m in virtio_pci 9pnet_virtio 9p kvm_amd; do lab_add_module "$m" "$root/lib/modules"; done
cp "$LAB_KVM_DIR/kvm.ko" "$root/lib/modules/kvm.ko"
cp "$LAB_KVM_DIR/kvm-amd.ko" "$root/lib/modules/kvm_amd.ko"
say "modules: ${LAB_ORDER[*]}"

# The chroot keeps the host's view of every path (repo, cache, node, QEMU); writes go to tmpfs under /run.
path=$(command -v node | xargs dirname):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cat > "$root/init" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "CHAINTEST boot \$(cut -d' ' -f1 /proc/uptime)"
for m in ${LAB_ORDER[*]}; do
  p=""
  [ "\$m" = kvm_amd ] && p="npt=1 nested=1"
  insmod /lib/modules/\$m.ko \$p || echo "CHAINTEST insmod-failed \$m"
done
ifconfig lo 127.0.0.1 up
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host || echo "CHAINTEST mount-failed"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs shm /host/dev/shm
mount -t tmpfs run /host/run
mkdir -p /host/run/tmp
echo "CHAINTEST chroot \$(cut -d' ' -f1 /proc/uptime)"
# A stuck L1 (soft lockup, RCU stall, hung task) would otherwise sit out the whole timeout: dump every
# CPU's and every blocked task's stack to the console (sysrq l, w) and power off.
echo 1 > /proc/sys/kernel/sysrq
(while sleep 5; do
  if dmesg | grep -qE 'soft lockup|self-detected stall|blocked for more than'; then
    echo "CHAINTEST lockup \$(cut -d' ' -f1 /proc/uptime)"
    echo l > /proc/sysrq-trigger; echo w > /proc/sysrq-trigger; sleep 10
    dmesg | sed 's/^/CHAINTEST lockdump /'
    poweroff -f
  fi
done) &
for a in $actions; do
  (chroot /host /usr/bin/env -i PATH=$path HOME=/run/tmp TMPDIR=/run/tmp INTROVISOR_CACHE=$cache INTROVISOR_RUN=/run/introvisor INTROVISOR_ACCEL=kvm \\
    node $repo/dist/test/trap/chain/chain-check.js \$a; echo "exit \$a \$?") 2>&1 | sed 's/^/CHAIN /'
done
echo "CHAINTEST done \$(cut -d' ' -f1 /proc/uptime)"
dmesg | grep -E 'BUG:|WARNING: CPU|Call Trace|introvisor' | sed 's/^/CHAINTEST dmesg /' | tail -20
echo "CHAINTEST all-done"
poweroff -f
INIT
chmod +x "$root/init"
lab_pack_initramfs "$root" "$work/initrd.img"
say "initramfs $(du -h "$work/initrd.img" | cut -f1)"

serial="$tcache/last-chain-serial.log"
lab_boot_nested "$LAB_KDIR/boot/vmlinuz-$LAB_ABI" "$work/initrd.img" 3072 "$serial" "$qemu_timeout" "$work" \
  -smp 2 -append "console=ttyS0 loglevel=5 panic=-1 oops=panic no_timer_check" -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot

tr -d '\r' < "$serial" > "$work/serial.txt"
if grep -q '^CHAINTEST all-done' "$work/serial.txt"; then tap 1 "L1 ran to the end (${LAB_BOOT_SECONDS}s)"; else tail -60 "$work/serial.txt" | sed 's/^/# serial: /'; tap 0 "L1 ran to the end"; fi
if grep -q '^CHAINTEST lockup' "$work/serial.txt"; then
  grep -E '^CHAINTEST lockdump .*(soft lockup|stall|blocked for|RIP:|Call Trace|\+0x)' "$work/serial.txt" | head -150 | sed 's/^CHAINTEST lockdump /# /'
  tap 0 "L1 did not lock up (soft lockup, RCU stall or hung task; stacks above, whole dump in $tcache/last-chain-serial.log)"
fi
grep -q 'CHAINTEST \(insmod\|mount\)-failed' "$work/serial.txt" && { grep 'CHAINTEST .*-failed' "$work/serial.txt" | sed 's/^/# /'; tap 0 "L1 loaded its modules and mounted the host root"; }
while IFS= read -r line; do
  nested_relay CHAIN "$line" && continue
  case "$line" in
    "CHAIN "*) echo "# L1: ${line#CHAIN }" ;;
    "CHAINTEST "*) echo "# $line" ;;
  esac
done < "$work/serial.txt"
c=$(grep -c '^CHAIN \(not \)\?ok [0-9]* - ' "$work/serial.txt" || true)
[ "$c" -gt 0 ] && tap 1 "chain-check.js ran ($c checks)" || tap 0 "chain-check.js ran"
for a in $actions; do
  grep -q "^CHAIN exit $a 0\$" "$work/serial.txt" && tap 1 "chain-check.js $a exited 0" || tap 0 "chain-check.js $a exited 0"
done
grep -qE 'CHAINTEST dmesg .*(BUG:|WARNING: CPU|Call Trace)' "$work/serial.txt" && tap 0 "no kernel BUG/WARNING in L1" || tap 1 "no kernel BUG/WARNING in L1"
say "serial log: $serial"
finish

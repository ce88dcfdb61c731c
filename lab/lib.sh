# Shell functions shared by scripts/setup.sh and the scripts that build guest initramfs images:
# lab/build-images.sh, test/trap/run-nested.sh, test/trap/node/run-nested-node.sh,
# test/trap/chain/run-chain.sh. Source it (bash); the caller defines die() and say().

# lab_archive_abi: the ABI that linux-image-amd64 depends on in the apt lists (nothing when they do not say).
lab_archive_abi() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: linux-image-\(6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1 || true
}

# LAB_ABI := INTROVISOR_KERNEL_ABI, or the 6.1.0-N-amd64 that linux-image-amd64 depends on now.
lab_kernel_abi() {
  LAB_ABI=${INTROVISOR_KERNEL_ABI:-}
  if [ -z "$LAB_ABI" ]; then
    LAB_ABI=$(lab_archive_abi)
    [ -n "$LAB_ABI" ] || die "cannot tell which linux-image-6.1.0-*-amd64 linux-image-amd64 depends on (apt-get update?)"
  fi
  [[ "$LAB_ABI" =~ ^6\.1\.0-[0-9]+-amd64$ ]] || die "kernel ABI '$LAB_ABI' is not of the form 6.1.0-N-amd64"
}

# lab_require_busybox: a static busybox with insmod at /bin/busybox. The applet list is read whole
# first: busybox writes it one applet per write(), so `| grep -q` can SIGPIPE it mid-list.
lab_require_busybox() {
  local applets
  [ -x /bin/busybox ] && applets=$(/bin/busybox --list) && grep -qx insmod <<<"$applets" \
    || die "missing static busybox at /bin/busybox (apt-get install busybox-static)"
}

# lab_pack_initramfs ROOT OUT [GZIP_LEVEL]: ROOT as a newc cpio archive, gzipped (level 1 by default).
lab_pack_initramfs() {
  (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip "-${3:-1}" > "$2"
}

# lab_fetch_kernel CACHE ABI: Debian's linux-image-ABI unpacked into CACHE/kernel/ABI (once).
lab_fetch_kernel() {
  local cache=$1 abi=$2 kdir="$1/kernel/$2" deb
  [ -f "$kdir/.complete" ] && return 0
  mkdir -p "$cache/debs"
  say "fetching linux-image-$abi"
  (cd "$cache/debs" && apt-get download "linux-image-$abi" >/dev/null 2>&1) \
    || die "apt-get download linux-image-$abi failed: is the package in the archive (apt-get update)?"
  deb=$(ls -t "$cache/debs"/linux-image-"$abi"_*_amd64.deb | head -n1)
  rm -rf "$kdir" && mkdir -p "$kdir"
  dpkg-deb -x "$deb" "$kdir"
  touch "$kdir/.complete"
}

# lab_busybox_root ROOT: /bin/busybox and a link per applet, so scripts' #!/bin/sh resolve at once.
lab_busybox_root() {
  local root=$1 applet
  mkdir -p "$root/bin"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list-full); do
    [ -e "$root/$applet" ] || { mkdir -p "$root/$(dirname "$applet")"; ln -s /bin/busybox "$root/$applet"; }
  done
}

# Kernel modules in load order. The unpacked package has no modules.dep, so each module's
# dependencies (modinfo -F depends) are copied, and listed in LAB_ORDER, before it.
declare -gA LAB_MODPATH=() LAB_SEEN=()
LAB_ORDER=()

# lab_index_modules DIR: every .ko under DIR becomes findable by name (LAB_MODPATH[name]=file).
lab_index_modules() {
  local f
  while IFS= read -r f; do LAB_MODPATH[$(basename "$f" .ko)]=$f; done < <(find "$1" -name '*.ko')
}

# lab_add_module NAME DEST: copies NAME's dependencies, then NAME, to DEST/<name>.ko.
lab_add_module() {
  local m=${1//-/_} dest=$2 f deps d
  [ -n "${LAB_SEEN[$m]:-}" ] && return 0
  LAB_SEEN[$m]=1
  f=${LAB_MODPATH[$m]:-${LAB_MODPATH[${m//_/-}]:-}}
  [ -n "$f" ] || die "kernel module $m not found"
  deps=$(modinfo -F depends "$f")
  for d in ${deps//,/ }; do lab_add_module "$d" "$dest"; done
  cp "$f" "$dest/$m.ko"
  LAB_ORDER+=("$m")
}

# lab_boot_nested VMLINUZ INITRD MEM_MIB SERIAL_LOG TIMEOUT_S WORK [QEMU_ARG...]: boots a kernel
# under TCG with AMD SVM (-cpu EPYC, so KVM runs inside it) until it powers off or the timeout
# passes, then sets LAB_BOOT_SECONDS. Extra QEMU arguments go last (a later -smp wins). While QEMU
# runs its pid is in LAB_QEMU_PID, for the caller's EXIT trap.
LAB_QEMU_PID=
lab_boot_nested() {
  local vmlinuz=$1 initrd=$2 mem=$3 serial=$4 timeout=$5 work=$6 q0 q1 deadline
  shift 6
  : > "$serial"
  q0=$(date +%s.%N)
  qemu-system-x86_64 -accel tcg -cpu EPYC -m "$mem" -smp 1 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic" \
    -serial "file:$serial" -monitor none -display none -net none "$@" </dev/null >"$work/qemu.out" 2>&1 &
  LAB_QEMU_PID=$!
  deadline=$(( $(date +%s) + timeout ))
  while kill -0 "$LAB_QEMU_PID" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "QEMU did not finish within ${timeout}s; killing it"
      kill "$LAB_QEMU_PID" 2>/dev/null || true
      break
    fi
    sleep 1
  done
  wait "$LAB_QEMU_PID" 2>/dev/null || true
  LAB_QEMU_PID=
  q1=$(date +%s.%N)
  LAB_BOOT_SECONDS=$(awk -v a="$q0" -v b="$q1" 'BEGIN{printf "%.1f", b-a}')
  if [ -s "$work/qemu.out" ]; then sed 's/^/# qemu: /' "$work/qemu.out" | head -5; fi
}

# lab_patched_kvm CACHE REPO: the patched kvm.ko/kvm-amd.ko that test/trap/run-nested.sh builds and
# caches (it runs with --build-only first when they are absent). Sets LAB_ABI, LAB_KDIR (the unpacked
# kernel package) and LAB_KVM_DIR (the patched modules).
lab_patched_kvm() {
  local cache=$1 repo=$2 tcache="$1/trap"
  LAB_ABI=${INTROVISOR_KERNEL_ABI:-$(ls "$tcache/build" 2>/dev/null | head -n1 || true)}
  if [ -z "$LAB_ABI" ] || [ ! -f "$tcache/build/$LAB_ABI/kvm/kvm-amd.ko" ] || [ ! -f "$cache/kernel/$LAB_ABI/.complete" ]; then
    say "no cached patched kvm modules: running test/trap/run-nested.sh --build-only"
    "$repo/test/trap/run-nested.sh" --build-only | sed 's/^/# run-nested: /' || die "run-nested.sh --build-only failed"
    LAB_ABI=${INTROVISOR_KERNEL_ABI:-$(ls "$tcache/build" | head -n1)}
  fi
  LAB_KDIR="$cache/kernel/$LAB_ABI"
  LAB_KVM_DIR="$tcache/build/$LAB_ABI/kvm"
  [ -f "$LAB_KDIR/boot/vmlinuz-$LAB_ABI" ] && [ -f "$LAB_KVM_DIR/kvm-amd.ko" ] || die "cache incomplete for $LAB_ABI"
}

# Shell functions shared by the scripts that build guest initramfs images:
# src/lab/build-images.sh, test/trap/run-nested.sh, test/trap/node/run-nested-node.sh.
# Source it (bash); the caller defines die() and say().

# LAB_ABI := INTROVISOR_KERNEL_ABI, or the 6.1.0-N-amd64 that linux-image-amd64 depends on now.
lab_kernel_abi() {
  LAB_ABI=${INTROVISOR_KERNEL_ABI:-}
  if [ -z "$LAB_ABI" ]; then
    LAB_ABI=$(apt-cache depends linux-image-amd64 2>/dev/null \
      | sed -n 's/^ *Depends: linux-image-\(6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)
    [ -n "$LAB_ABI" ] || die "cannot tell which linux-image-6.1.0-*-amd64 linux-image-amd64 depends on (apt-get update?)"
  fi
  [[ "$LAB_ABI" =~ ^6\.1\.0-[0-9]+-amd64$ ]] || die "kernel ABI '$LAB_ABI' is not of the form 6.1.0-N-amd64"
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

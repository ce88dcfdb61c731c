# Shell functions shared by scripts/setup.sh and the scripts that build guest initramfs images:
# lab/build-images.sh, test/trap/run-nested.sh, test/trap/node/run-nested-node.sh,
# test/trap/chain/run-chain.sh. Source it (bash); the caller defines die() and say().

# Kernel lines the lab builds: line -> "suite abi-pattern". The native suite (the machine's own
# apt) is "-"; the others come through lab_private_apt. 6.1 is the default line.
declare -gA LAB_LINES=(
  [5.10]="bullseye ^5\\.10\\.0-[0-9]+-amd64$"
  [6.1]="- ^6\\.1\\.0-[0-9]+-amd64$"
  [6.12]="bookworm-backports ^6\\.12\\.[0-9]+[+a-z0-9]*-amd64$"
)
LAB_DEFAULT_LINE=6.1

# lab_archive_abi [LINE]: the ABI that linux-image-amd64 depends on in the line's package lists
# (nothing when they do not say). Needs LAB_APT set up for a non-native line.
lab_archive_abi() {
  local line=${1:-$LAB_DEFAULT_LINE} spec pattern
  spec=${LAB_LINES[$line]:-}
  pattern=${spec#* }
  apt-cache "${LAB_APT[@]}" depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: linux-image-\(.*-amd64\)$/\1/p' \
    | grep -E "$pattern" | head -n1 || true
}

# lab_kernel_abi [LINE]: LAB_ABI := INTROVISOR_KERNEL_ABI (default line only), or the ABI that
# linux-image-amd64 depends on now in the line's suite.
lab_kernel_abi() {
  local line=${1:-$LAB_DEFAULT_LINE} spec pattern
  spec=${LAB_LINES[$line]:-}
  [ -n "$spec" ] || die "unknown kernel line '$line' (known: ${!LAB_LINES[*]})"
  pattern=${spec#* }
  LAB_ABI=
  [ "$line" = "$LAB_DEFAULT_LINE" ] && LAB_ABI=${INTROVISOR_KERNEL_ABI:-}
  if [ -z "$LAB_ABI" ]; then
    LAB_ABI=$(lab_archive_abi "$line")
    [ -n "$LAB_ABI" ] || die "cannot tell which kernel linux-image-amd64 depends on for the $line line (apt-get update?)"
  fi
  [[ "$LAB_ABI" =~ $pattern ]] || die "kernel ABI '$LAB_ABI' does not match the $line line ($pattern)"
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

# lab_fetch_deb CACHE PACKAGE DEST: PACKAGE downloaded (with LAB_APT's configuration) into
# CACHE/debs and unpacked with dpkg-deb -x into DEST (once). Nothing is installed.
lab_fetch_deb() {
  local cache=$1 pkg=$2 dest=$3 deb
  [ -f "$dest/.complete" ] && return 0
  mkdir -p "$cache/debs"
  say "fetching $pkg"
  (cd "$cache/debs" && apt-get "${LAB_APT[@]}" download "$pkg" >/dev/null 2>&1) \
    || die "apt-get download $pkg failed: is the package in the archive (apt-get update)?"
  deb=$(ls -t "$cache/debs/${pkg}_"*_amd64.deb "$cache/debs/${pkg}_"*_all.deb 2>/dev/null | head -n1 || true)
  [ -n "$deb" ] || die "downloaded $pkg but found no .deb for it in $cache/debs"
  rm -rf "$dest" && mkdir -p "$dest"
  dpkg-deb -x "$deb" "$dest"
  touch "$dest/.complete"
}

# lab_fetch_kernel CACHE ABI: Debian's linux-image-ABI unpacked into CACHE/kernel/ABI (once).
lab_fetch_kernel() {
  lab_fetch_deb "$1" "linux-image-$2" "$1/kernel/$2"
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
declare -gA LAB_MODPATH=() LAB_SEEN=() LAB_BUILTIN=()
LAB_ORDER=()

# lab_index_modules DIR: every .ko under DIR becomes findable by name (LAB_MODPATH[name]=file).
lab_index_modules() {
  local f
  while IFS= read -r f; do f2=${f%.xz}; LAB_MODPATH[$(basename "$f2" .ko)]=$f; done < <(find "$1" -name '*.ko' -o -name '*.ko.xz')
  # Built-in "modules" (modules.builtin, next to kernel/) need no file.
  if [ -f "$1/../modules.builtin" ]; then
    while IFS= read -r f; do f2=$(basename "$f" .ko); LAB_BUILTIN[${f2//-/_}]=1; done < "$1/../modules.builtin"
  fi
}

# lab_add_module NAME DEST: copies NAME's dependencies, then NAME, to DEST/<name>.ko.
lab_add_module() {
  local m=${1//-/_} dest=$2 f deps d
  [ -n "${LAB_SEEN[$m]:-}" ] && return 0
  LAB_SEEN[$m]=1
  f=${LAB_MODPATH[$m]:-${LAB_MODPATH[${m//_/-}]:-}}
  if [ -z "$f" ]; then
    [ -n "${LAB_BUILTIN[$m]:-}" ] && return 0  # built into this kernel
    die "kernel module $m not found"
  fi
  deps=$(modinfo -F depends "$f")
  for d in ${deps//,/ }; do lab_add_module "$d" "$dest"; done
  # busybox insmod takes plain ELF: compressed modules (6.12's .ko.xz) are unpacked here.
  case "$f" in *.xz) xz -dc "$f" > "$dest/$m.ko" ;; *) cp "$f" "$dest/$m.ko" ;; esac
  LAB_ORDER+=("$m")
}

# lab_boot_nested VMLINUZ INITRD MEM_MIB SERIAL_LOG TIMEOUT_S WORK [QEMU_ARG...]: boots a kernel
# under TCG with AMD SVM (-cpu EPYC, so KVM runs inside it) until it powers off or the timeout
# passes, then sets LAB_BOOT_SECONDS. Extra QEMU arguments go last (a later -smp wins). While QEMU
# runs its pid is in LAB_QEMU_PID, for the caller's EXIT trap. no_timer_check: on a loaded host TCG can
# miss the kernel's IO-APIC timer test, which panics the boot.
LAB_QEMU_PID=
lab_boot_nested() {
  local vmlinuz=$1 initrd=$2 mem=$3 serial=$4 timeout=$5 work=$6 q0 q1 deadline
  shift 6
  : > "$serial"
  q0=$(date +%s.%N)
  qemu-system-x86_64 -accel tcg -cpu EPYC -m "$mem" -smp 1 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic no_timer_check" \
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

# --- other Debian suites, through a private APT configuration ---------------------------------
# The machine's own apt state (sources, lists, status, package selection) is never touched: each
# suite gets its own sources list, made from the machine's Debian mirror entry, and its own lists,
# cache and (empty) status under CACHE/apt/<suite>.

# lab_debian_uri: the URI of the machine's Debian archive entry (deb822 or one-line sources).
lab_debian_uri() {
  local codename uri
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  uri=$(lab_machine_uri "$codename")
  [ -n "$uri" ] || die "no Debian archive entry for '$codename' in /etc/apt/sources.list*"
  echo "$uri"
}

# lab_machine_uri SUITE: the URI of the machine's own apt entry for SUITE (deb822 .sources, then
# one-line .list files); nothing when the machine names no such suite.
lab_machine_uri() {
  local suite=$1 uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v c="$suite" '
    /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==c) {print u; exit}}')
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v c="$suite" '
      $1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {if ($(i+1)==c) {print $i; exit}; break}}')
  fi
  echo "$uri"
}

# lab_private_apt CACHE SUITE: sets LAB_APT to the apt-get/apt-cache options for SUITE alone, and
# refreshes its package lists when they are missing or older than a day. A release (no dash:
# bullseye) also gets its -updates suite and its -security suite, the latter from the machine's
# own security archive entry (the URI of its <codename>-security suite), so the line's newest
# kernel ABI is seen (Debian 11's current 5.10 is in bullseye-security). The configuration lives
# in CACHE/apt/<suite>-<hash of its sources>: clones with other sources never share lists.
LAB_APT=()
lab_private_apt() {
  local cache=$1 suite=$2 dir uri sec codename sources
  uri=$(lab_debian_uri)
  sources="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main"
  if [[ "$suite" != *-* ]]; then
    sources+=$'\n'"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite-updates main"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    sec=$(lab_machine_uri "$codename-security")
    if [ -n "$sec" ]; then
      sources+=$'\n'"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $sec $suite-security main"
    else
      say "the machine's apt sources name no $codename-security archive: $suite-security is left out" >&2
    fi
  fi
  dir="$cache/apt/$suite-$(printf '%s\n' "$sources" | sha256sum | cut -c1-8)"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc/sources.list.d" "$dir/etc/preferences.d"
  printf '%s\n' "$sources" > "$dir/etc/sources.list"
  [ -f "$dir/status" ] || : > "$dir/status"
  LAB_APT=(-o "Dir::Etc::sourcelist=$dir/etc/sources.list" -o "Dir::Etc::sourceparts=$dir/etc/sources.list.d"
           -o "Dir::Etc::preferencesparts=$dir/etc/preferences.d" -o "Dir::State::Lists=$dir/lists"
           -o "Dir::State::status=$dir/status" -o "Dir::Cache=$dir/cache" -o "APT::Sandbox::User=root")
  if [ -z "$(find "$dir/lists" -maxdepth 1 -name '*_Packages*' -mtime -1 -print -quit)" ]; then
    say "apt-get update ($suite, private lists)"
    apt-get "${LAB_APT[@]}" update -qq >/dev/null 2>"$dir/update.err" \
      || die "apt-get update for $suite failed: $(tail -n3 "$dir/update.err")"
  fi
}

# The lab manifest this checkout boots (as src/util/paths.ts labManifestPath() picks it):
# INTROVISOR_LAB_MANIFEST, else the one build-images.sh left in the checkout's build/lab/, else the cache's.
lab_manifest() {  # cache repo
  if [ -n "${INTROVISOR_LAB_MANIFEST:-}" ]; then echo "$INTROVISOR_LAB_MANIFEST"
  elif [ -f "$2/build/lab/manifest.json" ]; then echo "$2/build/lab/manifest.json"
  else echo "$1/lab/manifest.json"; fi
}

#!/usr/bin/env bash
# The appliance image end to end. scripts/build-appliance.sh builds (or reuses) the raw GPT
# image; it boots from its own bootloader under qemu-system-x86_64 -accel tcg -cpu EPYC with a
# virtio NIC on QEMU's user network, like a box on a site network:
#   - a provisioning disk (filesystem label introvisor-prov) brings the site's CA, the device's
#     MQTT client certificate and key, the web token, the broker's address and a site config;
#     its golden guest disk carries a dormant rootkit (iv_syscall_hook.ko, loaded from rc.local
#     after a delay, again every 30 s until it sticks);
#   - the broker is a mosquitto started here on 127.0.0.1 (TLS, client certificates required);
#     the appliance reaches it as introvisor-broker = 10.0.2.2, QEMU's address for this host;
#   - the operator page is reached through a hostfwd port forward.
# Checks: the supervisor starts from its service on the patched KVM (nested), arms the write
# trap, reports over MQTT with TLS, answers on the web port; the rootkit's write is refused and
# arrives at the broker as a refused-write event. Then the appliance is shut down (ACPI) and
# booted again from the same disk: same device id, keys, database and ladders, guest guarded again.
# TAP on stdout; exit 0 only if every check passed.
#
#   test/appliance/run-appliance.sh
#
# Env: INTROVISOR_CACHE, IV_APPLIANCE_REBOOT (0, default: first boot only, about 4 minutes under
# TCG; 1: also the shutdown and the second boot, about 5 more), IV_APPLIANCE_TIMEOUT (seconds per
# wait, default 600), IV_APPLIANCE_KEEP=1 (keep the work dir).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${INTROVISOR_CACHE:-/var/cache/introvisor}
wait_s=${IV_APPLIANCE_TIMEOUT:-600}
reboot=${IV_APPLIANCE_REBOOT:-0}

die() { echo "run-appliance: $*" >&2; echo "Bail out! $*"; exit 1; }
say() { echo "# $*"; }
# shellcheck source=lab/lib.sh
. "$repo/lab/lib.sh"
# shellcheck source=test/trap/nested-tap.sh
. "$repo/test/trap/nested-tap.sh"

for tool in qemu-system-x86_64 qemu-img mosquitto mosquitto_sub openssl mke2fs debugfs node; do
  command -v "$tool" >/dev/null || die "missing tool '$tool'"
done
lab_manifest_file=$(lab_manifest "$cache" "$repo")
[ -f "$lab_manifest_file" ] || die "lab images not built: lab/build-images.sh"

t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }

# --- the image --------------------------------------------------------------------------------
tb=$(date +%s)
blog=$(mktemp)
if ! img=$(bash "$repo/scripts/build-appliance.sh" 2>"$blog" | tail -n1) || [ ! -f "$img" ]; then
  sed 's/^/# build: /' "$blog" | tail -40; rm -f "$blog"
  tap 0 "scripts/build-appliance.sh built the image"; finish
fi
sed 's/^/# /' "$blog"; rm -f "$blog"
tap 1 "scripts/build-appliance.sh built or reused the image ($(( $(date +%s) - tb )) s): $(basename "$(dirname "$img")"), $(( $(stat -c %s "$img") / 1048576 )) MiB"

work=$(mktemp -d "${TMPDIR:-/tmp}/iv-appliance.XXXXXX")
mosq_pid=
sub_pid=
cleanup_all() {
  [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null
  [ -n "$mosq_pid" ] && kill "$mosq_pid" 2>/dev/null
  if [ "${IV_APPLIANCE_KEEP:-0}" = 1 ]; then say "kept $work"; work=; fi
  nested_cleanup
}
trap cleanup_all EXIT

# The appliance's disk: an overlay, so the cached image stays as built.
qemu-img create -q -f qcow2 -b "$img" -F raw "$work/disk.qcow2"

# --- the site: CA, broker, device certificate, consumer -----------------------------------
pki="$work/pki"; mkdir -p "$pki"
ossl() { openssl "$@" >/dev/null 2>&1 || die "openssl $1 failed"; }
device=iv-test-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=introvisor-site-ca -keyout "$pki/ca.key" -out "$pki/ca.crt"
issue() { # issue NAME CN EXT
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  printf '%s\n' "$3" > "$pki/$1.ext"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
}
issue broker introvisor-broker $'subjectAltName=DNS:introvisor-broker,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
issue device "$device" 'extendedKeyUsage=clientAuth'
issue consumer central-consumer 'extendedKeyUsage=clientAuth'

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
webport=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat > "$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
cafile $pki/ca.crt
certfile $pki/broker.crt
keyfile $pki/broker.key
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
allow_anonymous false
user root
persistence false
log_dest file $work/mosquitto.log
log_type error
log_type warning
log_type notice
EOF
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
mosq_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
mosquitto_sub -h 127.0.0.1 -p "$port" --cafile "$pki/ca.crt" --cert "$pki/consumer.crt" --key "$pki/consumer.key" \
  -i central-consumer -q 1 -t "introvisor/$device/#" -F '%t %p' > "$work/mqtt.log" 2>"$work/mqtt.err" &
sub_pid=$!

# --- the provisioning medium ----------------------------------------------------------------
prov="$work/prov"; mkdir -p "$prov/tls" "$prov/guests/demo"
echo "$device" > "$prov/device-id"
cp "$pki/ca.crt" "$prov/tls/ca.crt"; cp "$pki/device.crt" "$prov/tls/client.crt"; cp "$pki/device.key" "$prov/tls/client.key"
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$token" > "$prov/web-token"
echo "10.0.2.2 introvisor-broker" > "$prov/hosts"
# An OTA operator key (the device refuses OTA with an empty keyring).
mkdir -p "$prov/keyring"
ossl genpkey -algorithm ed25519 -out "$pki/operator.key"
ossl pkey -in "$pki/operator.key" -pubout -out "$prov/keyring/operator.pub"
# The site config: the image's default with this site's broker port.
node -e '
  const fs = require("fs"); const [src, out, port] = process.argv.slice(1);
  const c = JSON.parse(fs.readFileSync(src, "utf8"));
  c.report.mqtt.url = `mqtts://introvisor-broker:${port}`;
  fs.writeFileSync(out, JSON.stringify(c, null, 2));
' "$repo/rootfs/etc/introvisor/config.default.json" "$prov/config.json" "$port"
# The golden guest disk with the dormant rootkit: the lab's, with rc.local extended.
base=$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).baseImage' "$lab_manifest_file")
qemu-img convert -q -f qcow2 -O raw "$base" "$work/guest.raw"
debugfs -R 'cat /etc/rc.local' "$work/guest.raw" 2>/dev/null > "$work/rc.local"
grep -q csdtest "$work/rc.local" || die "the lab's golden disk has no /etc/rc.local starting csdtest"
cat >> "$work/rc.local" <<'EOF'
# A dormant rootkit: hooks sys_call_table[39] a while after boot, and again until it sticks.
(sleep 40; while ! insmod /lib/introvisor/iv_syscall_hook.ko nrs=39; do sleep 30; done) </dev/null >/dev/null 2>&1 &
EOF
debugfs -w -R 'rm /etc/rc.local' "$work/guest.raw" >/dev/null 2>&1
debugfs -w -f - "$work/guest.raw" >/dev/null 2>&1 <<EOF
write $work/rc.local /etc/rc.local
sif /etc/rc.local mode 0100755
EOF
debugfs -R 'cat /etc/rc.local' "$work/guest.raw" 2>/dev/null | grep -q iv_syscall_hook || die "could not write rc.local into the guest disk"
qemu-img convert -q -f raw -O qcow2 "$work/guest.raw" "$prov/guests/demo/base.qcow2"; rm -f "$work/guest.raw"
mke2fs -q -t ext4 -L introvisor-prov -d "$prov" "$work/prov.img" 64M >/dev/null

# --- boots ------------------------------------------------------------------------------------
qemu_pid=
boot() { # boot N: starts the appliance, serial in $work/serial-N.log
  : > "$work/serial-$1.log"
  qemu-system-x86_64 -accel tcg -cpu EPYC -m 3072 -smp 2 -nographic -no-reboot \
    -drive file="$work/disk.qcow2",if=virtio,format=qcow2 \
    -drive file="$work/prov.img",if=virtio,format=raw,readonly=on \
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:"$webport"-:8080 -device virtio-net-pci,netdev=n0 \
    -serial file:"$work/serial-$1.log" -monitor none -display none \
    -qmp unix:"$work/qmp.sock",server=on,wait=off </dev/null >"$work/qemu-$1.out" 2>&1 &
  qemu_pid=$!
  LAB_QEMU_PID=$qemu_pid
  boot_t0=$(date +%s)
}
since() { echo $(( $(date +%s) - boot_t0 )); }
# wait_for FILE REGEX [TIMEOUT]: the first matching line (on stdout), or status 1 after the timeout
# or when QEMU is gone.
wait_for() {
  local deadline=$(( $(date +%s) + ${3:-$wait_s} )) line
  while :; do
    line=$(tr -d '\r' < "$1" | grep -a -m1 -E "$2" || true)
    [ -n "$line" ] && { echo "$line"; return 0; }
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    kill -0 "$qemu_pid" 2>/dev/null || { sleep 1; line=$(tr -d '\r' < "$1" | grep -a -m1 -E "$2" || true); [ -n "$line" ] && { echo "$line"; return 0; }; return 1; }
    sleep 2
  done
}
# http_get PATH [TOKEN]: "<status> <body>" of a GET on the forwarded web port (node: no curl needed).
http_get() {
  node -e '
    const [url, token] = process.argv.slice(1);
    fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(20000) })
      .then(async (r) => console.log(`${r.status} ${await r.text()}`), (e) => console.log(`0 ${e.message}`));
  ' "http://127.0.0.1:$webport$1" "${2:-}"
}
api() { local r; r=$(http_get "$1" "$token"); echo "${r#* }"; }
qmp() { # qmp COMMAND
  node -e '
    const c = require("net").connect(process.argv[1]); let buf = "";
    c.on("data", (d) => { buf += d; if (/"QMP"/.test(buf) && !/capabilities_done/.test(buf)) { buf += "capabilities_done"; c.write(JSON.stringify({ execute: "qmp_capabilities" }) + "\n" + JSON.stringify({ execute: process.argv[2] }) + "\n"); setTimeout(() => c.end(), 500); } });
    c.on("error", (e) => { console.error(e.message); process.exit(1); });
  ' "$work/qmp.sock" "$1"
}
show_serial() { tr -d '\r' < "$work/serial-$1.log" | grep -a -E 'introvisor|kvm-ready|Failed|error|trap|refused|telemetry|web:' | tail -"${2:-40}" | sed 's/^/# serial: /'; }

boot_checks() { # boot_checks N: what every boot must show; sets fb_line
  local b=$1 s line
  s="$work/serial-$b.log"
  if fb_line=$(wait_for "$s" 'introvisor-firstboot: device '); then
    tap 1 "boot $b: the first-boot service ran ($(since) s): ${fb_line#*introvisor-firstboot: }"
  else
    show_serial "$b"; tap 0 "boot $b: the first-boot service ran"; return 1
  fi
  if line=$(wait_for "$s" 'kvm-ready: '); then
    [[ "$line" == *"kvm_amd loaded (nested=1)"*"/updates/kvm.ko"*"write trap present"* ]] && tap 1 "boot $b: ${line#*kvm-ready: }" \
      || tap 0 "boot $b: the patched KVM loaded with nested=1: ${line#*kvm-ready: }"
  else show_serial "$b"; tap 0 "boot $b: kvm-ready reported"; fi
  if line=$(wait_for "$s" 'write trap armed \(gp\) on sys_call_table'); then
    tap 1 "boot $b: the supervisor (from its service) armed the write trap on the guest's sys_call_table ($(since) s)"
  else show_serial "$b" 60; tap 0 "boot $b: the supervisor armed the write trap"; return 1; fi
  return 0
}

# ---- boot 1 ----
say "boot 1 ($(el) s since start)"
boot 1
if boot_checks 1; then
  fb1=$fb_line
  [[ "$fb1" == *"device $device; first boot: yes"* ]] && tap 1 "boot 1: first boot, device id from the provisioning medium" || tap 0 "boot 1: first boot, device id $device: $fb1"
  wait_for "$work/mqtt.log" "^introvisor/$device/" 60 >/dev/null || true
  # use_identity_as_username: the broker names the client by its certificate's CN.
  if grep -a -q "^introvisor/$device/" "$work/mqtt.log" && grep -a -q "u'$device'" "$work/mosquitto.log"; then
    tap 1 "the appliance published over MQTT with TLS, authenticated by its client certificate (CN $device): $(grep -a -c . "$work/mqtt.log") messages so far"
  else
    sed 's/^/# mosquitto: /' "$work/mosquitto.log" | tail -5; show_serial 1; tap 0 "the appliance published over MQTT with TLS and its client certificate"
  fi
  status=$(api /api/status || true)
  [[ "$status" == *"\"device\":\"$device\""* ]] && tap 1 "the operator page answers through the port forward (/api/status names $device)" || tap 0 "the operator page answers through the port forward: '${status:0:200}'"
  code=$(http_get /api/status | cut -d' ' -f1)
  [ "$code" = 401 ] && tap 1 "without the token the API answers 401" || tap 0 "without the token the API answers 401 (got $code)"
  if line=$(wait_for "$work/mqtt.log" "^introvisor/$device/events/refused-write .*\"entry\":39"); then
    tap 1 "the rootkit's write to sys_call_table[39] was refused and reached the broker as a refused-write event ($(since) s)"
  else show_serial 1 60; tap 0 "a refused-write event for sys_call_table[39] reached the broker"; fi
  line=$(tr -d '\r' < "$work/serial-1.log" | grep -a -m1 'REFUSED write to sys_call_table\[39\]' || true)
  [ -n "$line" ] && tap 1 "the supervisor logged it: ${line#*introvisor*: }" || tap 0 "the supervisor logged the refused write"
  rw1=$(api '/api/refused-writes?guest=demo' || true)
  n_rw1=$(node -e 'try { const a = JSON.parse(process.argv[1]); console.log(Array.isArray(a) ? a.filter((r) => r.entry === 39).length : 0) } catch { console.log(0) }' "$rw1")
  seqs1=$(node -e 'try { const a = JSON.parse(process.argv[1]); console.log(a.map((r) => r.seq).sort((x, y) => x - y).join(",")) } catch { console.log("") }' "$rw1")
  [ "$n_rw1" -ge 1 ] && tap 1 "GET /api/refused-writes lists $n_rw1 refused writes to entry 39" || tap 0 "GET /api/refused-writes lists the refused write: '${rw1:0:200}'"
  # The refused write raises a finding whose ladder takes a step: wait until the store has it.
  for _ in $(seq 30); do ladders1=$(api '/api/ladders?guest=demo' || true); [[ "$ladders1" == *'"fault"'* ]] && break; sleep 2; done
  say "ladders after boot 1: ${ladders1:0:300}"
fi
say "boot 1 done at $(since) s"

if [ "$reboot" = 1 ] && [ "$failed" = 0 ]; then
  # ---- reboot: ACPI power button, systemd shuts down (the supervisor stops its guest), boot again ----
  tq=$(date +%s)
  qmp system_powerdown || true
  for _ in $(seq 180); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$qemu_pid" 2>/dev/null; then
    tap 0 "the appliance shut down on the ACPI power button within 180 s"; kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true
  else
    wait "$qemu_pid" 2>/dev/null || true
    tap 1 "the appliance shut down cleanly on the ACPI power button ($(( $(date +%s) - tq )) s)"
  fi
  mqtt_before=$(grep -a -c "events/refused-write .*\"entry\":39" "$work/mqtt.log" || true)
  say "boot 2 ($(el) s since start)"
  boot 2
  if boot_checks 2; then
    [[ "$fb_line" == *"device $device; first boot: no"*"database present"* ]] && tap 1 "boot 2: not a first boot; the database was there" || tap 0 "boot 2: not a first boot, database present: $fb_line"
    k1=$(sed 's/.*tls client key \([0-9a-f]*\).*web token \([0-9a-f]*\).*/\1 \2/' <<<"$fb1")
    k2=$(sed 's/.*tls client key \([0-9a-f]*\).*web token \([0-9a-f]*\).*/\1 \2/' <<<"$fb_line")
    [ -n "$k1" ] && [ "$k1" = "$k2" ] && tap 1 "boot 2: same device id, TLS client key and web token ($k2)" || tap 0 "boot 2: same keys ('$k1' vs '$k2')"
    grep -a -q 'provisioning medium .* already applied' "$work/serial-2.log" && tap 1 "boot 2: the provisioning medium was not applied again" || tap 0 "boot 2: the provisioning medium was not applied again"
    rw2=$(api '/api/refused-writes?guest=demo' || true)
    kept=$(node -e 'try { const b = new Set(JSON.parse(process.argv[1]).map((r) => r.seq)); const a = process.argv[2].split(",").filter(Boolean).map(Number); console.log(a.length > 0 && a.every((s) => b.has(s)) ? "yes" : "no") } catch { console.log("no") }' "$rw2" "$seqs1")
    [ "$kept" = yes ] && tap 1 "boot 2: the database kept boot 1's refused writes (seq $seqs1)" || tap 0 "boot 2: the database kept boot 1's refused writes (seq $seqs1): '${rw2:0:200}'"
    ladders2=$(api '/api/ladders?guest=demo' || true)
    # Every ladder of boot 1 is still there, at the same or a later step (its row's seq only grows).
    same=$(node -e '
      try {
        const a = JSON.parse(process.argv[1]), b = JSON.parse(process.argv[2]);
        if (!Array.isArray(a) || !Array.isArray(b) || a.length === 0) { console.log("no"); process.exit(0); }
        console.log(a.every((l) => b.some((m) => m.fault === l.fault && m.seq >= l.seq)) ? "yes" : "no");
      } catch { console.log("no"); }' "$ladders1" "$ladders2")
    [ "$same" = yes ] && tap 1 "boot 2: the ladder state from boot 1 is still there" || tap 0 "boot 2: the ladder state survived ('${ladders1:0:200}' vs '${ladders2:0:200}')"
    deadline=$(( $(date +%s) + wait_s ))
    while [ "$(grep -a -c "events/refused-write .*\"entry\":39" "$work/mqtt.log" || true)" -le "$mqtt_before" ] && [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$qemu_pid" 2>/dev/null; do sleep 2; done
    [ "$(grep -a -c "events/refused-write .*\"entry\":39" "$work/mqtt.log" || true)" -gt "$mqtt_before" ] \
      && tap 1 "boot 2: the guest is guarded again: the rootkit's next write was refused and reported ($(since) s)" \
      || { show_serial 2 60; tap 0 "boot 2: a new refused-write event after the reboot"; }
  fi
  say "boot 2 done at $(since) s"
elif [ "$reboot" != 1 ]; then
  say "SKIP the reboot half (shutdown + second boot: about 5 more minutes of TCG on top of the first boot's 4, over the suite's budget for this file): IV_APPLIANCE_REBOOT=1 runs it"
fi

grep -a -E 'BUG:|WARNING: CPU|Call Trace' "$work"/serial-*.log | head -5 | sed 's/^/# /' || true
if grep -a -q -E 'BUG:|WARNING: CPU' "$work"/serial-*.log; then tap 0 "no kernel BUG/WARNING on the appliance"; else tap 1 "no kernel BUG/WARNING on the appliance"; fi
say "whole test $(el) s"
finish

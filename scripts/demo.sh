#!/usr/bin/env bash
# The main job: idempotent set-up, then the supervisor guarding the demo guest
# (examples/demo.json) with its web page on http://127.0.0.1:8080 and telemetry to
# an MQTT broker on 127.0.0.1:1883 (a local mosquitto is started when none listens
# there, standing in for the central broker). Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
state=/var/lib/introvisor
mkdir -p "$state/keyring" "$state/operator"

# A device keyring with one trusted key, so over-the-air policies can be tried:
# sign with $state/operator/demo.key (see docs/OTA.md).
if ! compgen -G "$state/keyring/*.pub" >/dev/null; then
  node ota/introvisor-ota.js keygen --out "$state/operator" --name demo >/dev/null
  cp "$state/operator/demo.pub" "$state/keyring/"
fi

# The page's access token: reading the page and acting on a guest from it need it.
if [ ! -s "$state/web.token" ]; then
  (umask 077; node -e "process.stdout.write(require('node:crypto').randomBytes(24).toString('hex'))" > "$state/web.token")
fi

broker_pid=""
sup=""
# The end, however it comes (Ctrl-C, SIGTERM, an error): the supervisor stops its guest; a guest
# it could not stop (it was killed) is stopped here; then the broker this script started.
cleanup() {
  if [ -n "$sup" ]; then
    kill -TERM "$sup" 2>/dev/null || true
    while kill -0 "$sup" 2>/dev/null; do wait "$sup" 2>/dev/null || true; done
    node scripts/stop-left-guests.mjs examples/demo.json || true
  fi
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
# Background jobs in their own process groups: Ctrl-C reaches this script only, which hands the
# supervisor ONE SIGTERM (a second signal tells it to stop at once, killing what it is booting).
set -m
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  conf=$(mktemp --suffix=.conf)
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n' > "$conf"
  mosquitto -c "$conf" &
  broker_pid=$!
  echo "demo: started a local MQTT broker on 127.0.0.1:1883 (watch it: mosquitto_sub -h 127.0.0.1 -t 'introvisor/#' -v)"
fi
echo "demo: web page on http://127.0.0.1:8080/#token=$(cat "$state/web.token") once the supervisor is up; Ctrl-C stops"
echo "demo: in another terminal, attack the guest and watch it recover:"
echo "        node bin/introvisor.js demo attack kill-critical   # or hook-syscall, hide-process, hide-module"
echo "        node bin/introvisor.js guest demo ps               # findings, syscalls, modules, release, action ..."
node dist/src/cli/main.js run --config examples/demo.json "$@" &
sup=$!
# INT/TERM/HUP to this script: one SIGTERM to the supervisor per signal (again: it stops at once).
trap 'kill -TERM "$sup" 2>/dev/null || true' INT TERM HUP
while kill -0 "$sup" 2>/dev/null; do wait "$sup" 2>/dev/null || true; done

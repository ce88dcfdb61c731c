# TAP bookkeeping and QEMU clean-up for the scripts that boot a nested guest
# (test/trap/run-nested.sh, node/run-nested-node.sh, chain/run-chain.sh). Source
# it after lab/lib.sh; the caller sets `work` to its scratch directory.
n=0
failed=0
work=
tap() { # tap <0|1> <description>
  n=$((n + 1))
  if [ "$1" = 1 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
finish() {
  echo "1..$n"
  if [ "$failed" = 0 ] && [ "$n" -gt 0 ]; then
    echo "# PASS: all $n checks passed"
    exit 0
  fi
  echo "# FAIL: $failed of $n checks failed"
  exit 1
}
# nested_relay PREFIX LINE: a TAP line that a program in L1 printed behind "PREFIX " becomes one of
# this script's checks or comments; returns 1 for any other line, for the caller to handle.
nested_relay() {
  local p="$1 " l=$2
  case "$l" in
    "${p}ok "*) tap 1 "$(sed 's/^[0-9]* *- //' <<<"${l#"${p}ok "}")" ;;
    "${p}not ok "*) tap 0 "$(sed 's/^[0-9]* *- //' <<<"${l#"${p}not ok "}")" ;;
    "${p}1.."*) ;;
    "${p}# "*) echo "${l#"$p"}" ;;
    *) return 1 ;;
  esac
}
nested_cleanup() {
  if [ -n "$LAB_QEMU_PID" ] && kill -0 "$LAB_QEMU_PID" 2>/dev/null; then
    kill "$LAB_QEMU_PID" 2>/dev/null || true
    sleep 1
    kill -9 "$LAB_QEMU_PID" 2>/dev/null || true
  fi
  [ -n "$work" ] && rm -rf "$work"
  return 0
}
trap nested_cleanup EXIT
trap 'exit 130' INT TERM

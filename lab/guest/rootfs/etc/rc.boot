#!/bin/sh
# Lab guest bring-up: pseudo filesystems, virtio drivers, the data disk, the critical service.
mkdir -p /proc /sys /dev /run /tmp /data /var/log
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
ln -sf /proc/self/fd /dev/fd

name=guest
for arg in $(cat /proc/cmdline); do
  case "$arg" in introvisor.name=*) name="${arg#introvisor.name=}" ;; esac
done
hostname "$name"

while read -r mod; do
  [ -n "$mod" ] && insmod "/lib/modules/lab/$mod.ko" || true
done < /lib/modules/lab/load-order

# The data disk holds the critical service, so removing it survives reboots
# and only an image restore brings it back.
if [ -b /dev/vda ] && mount -t ext4 /dev/vda /data; then
  [ -x /data/etc/rc.local ] && /data/etc/rc.local
else
  echo "introvisor-guest: data disk missing or unreadable" > /dev/console
fi
echo "introvisor-guest: $name ready" > /dev/console

#!/bin/sh
# Runs on the target tree after the overlay (rootfs/) is copied: the mount points and fstab
# entries of the layout in genimage.cfg, and the appliance's services enabled.
set -e

mkdir -p "$TARGET_DIR/var/lib/introvisor"
# The skeleton's /dev/root line gives way to the root by partition label.
sed -i -e '/introvisor-/d' -e '\#^/dev/root[[:space:]]#d' "$TARGET_DIR/etc/fstab"
cat >> "$TARGET_DIR/etc/fstab" <<FSTAB
PARTLABEL=introvisor-root	/	ext4	defaults,errors=remount-ro	0	1
PARTLABEL=introvisor-data	/var/lib/introvisor	ext4	defaults,nodev,nosuid,x-systemd.device-timeout=10min	0	2
FSTAB

wants="$TARGET_DIR/etc/systemd/system/multi-user.target.wants"
mkdir -p "$wants"
for unit in introvisor.service introvisor-firstboot.service; do
	ln -sf "../$unit" "$wants/$unit"
done

# The grub.cfg of this board replaces the one grub2 installs.
if [ -d "$BINARIES_DIR/efi-part/EFI/BOOT" ]; then
	cp -f "$BR2_EXTERNAL_INTROVISOR_PATH/board/introvisor/grub.cfg" "$BINARIES_DIR/efi-part/EFI/BOOT/grub.cfg"
fi

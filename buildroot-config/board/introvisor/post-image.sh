#!/bin/sh
# The disk image: GPT with the EFI system partition (GRUB, the kernel), the root file system and
# an empty data partition for /var/lib/introvisor (genimage.cfg).
set -e

BOARD_DIR="$(dirname "$0")"

support/scripts/genimage.sh -c "$BOARD_DIR/genimage.cfg"

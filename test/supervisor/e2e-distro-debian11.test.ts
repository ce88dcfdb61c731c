// The Debian 11 distro guest (lab/build-distro-guest.sh debian11: bullseye, its 5.10 kernel, systemd
// 247, qemu-guest-agent 5.2) through the distro battery: one boot, see distro-battery.ts.
import { distroGuestBattery } from './distro-battery.js';

distroGuestBattery('debian11', 'Debian 11');

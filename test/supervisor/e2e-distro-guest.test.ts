// The Debian 12 distro guest (lab/build-distro-guest.sh debian12: bookworm, the lab's default 6.1
// kernel) through the distro battery: one boot, see distro-battery.ts.
import { distroGuestBattery } from './distro-battery.js';

distroGuestBattery('debian12', 'Debian 12');

// Stops the guests of a supervisor config that its supervisor left running (it was killed, or
// died): guests outlive a supervisor by design, but the demo must leave nothing behind when it
// ends. A guest that a live supervisor still holds is left alone (its claim is refused).
// Usage: node scripts/stop-left-guests.mjs CONFIG
import { loadSupervisorConfig } from '../dist/src/supervisor/config.js';
import { vmForGuest } from '../dist/src/supervisor/supervisor.js';
import { QemuGuestController } from '../dist/src/recovery/qemu-controller.js';
import { readPid, processAlive } from '../dist/src/util/pid.js';

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/stop-left-guests.mjs CONFIG');
  process.exit(2);
}
const config = loadSupervisorConfig(file);
let failed = 0;
for (const g of config.guests) {
  const ctl = new QemuGuestController(vmForGuest(g, config.runDir));
  const pid = readPid(ctl.vm.pidPath);
  if (pid === undefined || !processAlive(pid)) continue;
  try {
    await ctl.ensureRunning(10_000); // adopts it (QMP), or refuses if a live supervisor holds it
    await ctl.close({ stopGuest: true });
    console.log(`stopped guest ${g.name}: its QEMU (pid ${pid}) outlived the supervisor`);
  } catch (e) {
    failed++;
    console.error(`guest ${g.name}: QEMU pid ${pid} left running: ${e instanceof Error ? e.message : String(e)}`);
  }
}
process.exit(failed ? 1 : 0);

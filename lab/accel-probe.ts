// The lab's accelerator probe: boots a lab guest under KVM once and caches
// whether that worked (src/vm/accel.ts reads the answer).
import { accessSync, constants } from 'node:fs';
import { release } from 'node:os';
import { qemuVersion, readAccelChoice, saveAccelChoice, type AccelChoice } from '../src/vm/accel.js';
import { errorMessage } from '../src/util/errors.js';

/** Probes (or returns the cached answer for this host kernel and QEMU). */
export async function chooseAccel(opts: { force?: boolean; timeoutMs?: number } = {}): Promise<AccelChoice> {
  const version = await qemuVersion();
  const cached = readAccelChoice();
  if (!opts.force && cached && cached.hostKernel === release() && cached.qemuVersion === version) return cached;
  let choice: AccelChoice;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    // Imported here: the probe boots a real lab guest.
    const { startLabGuest } = await import('./lab-guest.js');
    try {
      const vm = await startLabGuest('accel-probe', { accel: 'kvm', readyTimeoutMs: opts.timeoutMs ?? 30_000 });
      const ms = vm.lastBootMs;
      await vm.stop();
      choice = { accel: 'kvm', reason: `the lab guest booted under KVM in ${ms} ms`, hostKernel: release(), qemuVersion: version };
    } catch (e) {
      choice = { accel: 'tcg', reason: `KVM could not run the lab guest: ${errorMessage(e).split('\n')[0]}`, hostKernel: release(), qemuVersion: version };
    }
  } catch {
    choice = { accel: 'tcg', reason: '/dev/kvm is not available', hostKernel: release(), qemuVersion: version };
  }
  saveAccelChoice(choice);
  return choice;
}

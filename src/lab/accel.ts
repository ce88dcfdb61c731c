// Which accelerator lab guests use: KVM when it can actually run the lab guest,
// TCG otherwise. The answer comes from booting the guest under KVM once, cached per
// host kernel and QEMU version (a /dev/kvm that exists may still be unusable, as on
// a restricted nested host where KVM aborts or runs ~1000x slower than TCG).
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { cacheDir } from '../util/paths.js';
import { run } from '../util/exec.js';
import { errorMessage } from '../util/errors.js';

export type Accel = 'tcg' | 'kvm';

export interface AccelChoice {
  accel: Accel;
  reason: string;
  hostKernel: string;
  qemuVersion: string;
}

const choicePath = (): string => join(cacheDir(), 'lab', 'accel.json');

async function qemuVersion(): Promise<string> {
  try {
    return (await run('qemu-system-x86_64', ['--version'], 10_000)).stdout.split('\n')[0] ?? 'unknown';
  } catch {
    return 'none';
  }
}

function readChoice(): AccelChoice | undefined {
  try {
    const v = JSON.parse(readFileSync(choicePath(), 'utf8')) as Partial<AccelChoice>;
    if ((v.accel === 'kvm' || v.accel === 'tcg') && typeof v.reason === 'string' && typeof v.hostKernel === 'string' && typeof v.qemuVersion === 'string') {
      return v as AccelChoice;
    }
  } catch { /* none yet */ }
  return undefined;
}

/** INTROVISOR_ACCEL when set, else the cached probe result, else TCG. */
export function defaultAccel(): Accel {
  const env = process.env.INTROVISOR_ACCEL;
  if (env === 'kvm' || env === 'tcg') return env;
  const c = readChoice();
  return c && c.hostKernel === release() ? c.accel : 'tcg';
}

/** Probes (or returns the cached answer for this host kernel and QEMU). */
export async function chooseAccel(opts: { force?: boolean; timeoutMs?: number } = {}): Promise<AccelChoice> {
  const version = await qemuVersion();
  const cached = readChoice();
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
  mkdirSync(dirname(choicePath()), { recursive: true });
  writeFileSync(choicePath(), JSON.stringify(choice, null, 2) + '\n');
  return choice;
}

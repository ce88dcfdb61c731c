// Which accelerator guests use by default: KVM when it can actually run a guest,
// TCG otherwise. The answer is the lab's probe (it boots a lab guest under KVM once),
// cached per host kernel and QEMU version (a /dev/kvm that exists may still be
// unusable, as on a restricted nested host where KVM aborts or runs ~1000x slower than TCG).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { cacheDir } from '../util/paths.js';
import { run } from '../util/exec.js';

export type Accel = 'tcg' | 'kvm';

export interface AccelChoice {
  accel: Accel;
  reason: string;
  hostKernel: string;
  qemuVersion: string;
}

const choicePath = (): string => join(cacheDir(), 'lab', 'accel.json');

export async function qemuVersion(): Promise<string> {
  try {
    return (await run('qemu-system-x86_64', ['--version'], 10_000)).stdout.split('\n')[0] ?? 'unknown';
  } catch {
    return 'none';
  }
}

export function readAccelChoice(): AccelChoice | undefined {
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
  const c = readAccelChoice();
  return c && c.hostKernel === release() ? c.accel : 'tcg';
}

/** Caches a probe's answer. */
export function saveAccelChoice(choice: AccelChoice): void {
  mkdirSync(dirname(choicePath()), { recursive: true });
  writeFileSync(choicePath(), JSON.stringify(choice, null, 2) + '\n');
}

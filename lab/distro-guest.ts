// The lab's distro guests, as lab/build-distro-guest.sh leaves them (this checkout's build/lab/, else the cache): a Debian
// disk that boots through its own GRUB, with the attack modules for its kernel on it.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type JSONSchemaType } from 'ajv';
import { cacheDir, packageRoot } from '../src/util/paths.js';

export interface DistroGuestImage {
  distro: string;
  kernelAbi: string;
  kernelVersion: string;
  key: string;
  dir: string;
  /** The golden disk (GRUB in the MBR and on an EFI system partition, root on partition 2). */
  disk: string;
  format: 'qcow2';
  /** Paths inside the guest. */
  attackModules: { syscallHook: string; dkomHide: string; hideModule: string };
  criticalService: string;
}

const schema: JSONSchemaType<DistroGuestImage> = {
  type: 'object',
  required: ['distro', 'kernelAbi', 'kernelVersion', 'key', 'dir', 'disk', 'format', 'attackModules', 'criticalService'],
  properties: {
    distro: { type: 'string', pattern: '^[a-z0-9]+$' },
    kernelAbi: { type: 'string', minLength: 1 },
    kernelVersion: { type: 'string' },
    key: { type: 'string' },
    dir: { type: 'string' },
    disk: { type: 'string', minLength: 1 },
    format: { type: 'string', const: 'qcow2' },
    attackModules: {
      type: 'object',
      required: ['syscallHook', 'dkomHide', 'hideModule'],
      properties: { syscallHook: { type: 'string' }, dkomHide: { type: 'string' }, hideModule: { type: 'string' } },
    },
    criticalService: { type: 'string' },
  },
};
const validate = new Ajv({ allErrors: true }).compile(schema);

/** The distro guest's manifest: the one this checkout's build left in build/lab/, else the cache's. */
export function distroManifestPath(distro: string): string {
  const local = join(packageRoot(), 'build', 'lab', `${distro}.json`);
  return existsSync(local) ? local : join(cacheDir(), 'distro', `${distro}.json`);
}

export function loadDistroGuest(distro = 'debian12', path = distroManifestPath(distro)): DistroGuestImage {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not built yet' : (e as Error).message;
    throw new Error(`distro guest ${distro}: ${path}: ${why} (run scripts/setup.sh, which runs lab/build-distro-guest.sh)`);
  }
  if (!validate(raw)) throw new Error(`distro guest ${distro}: ${path}: ${validate.errors?.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ')}`);
  return raw;
}

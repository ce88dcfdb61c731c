// Where introvisor keeps its state, caches and per-run files; each can be moved by environment.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const cacheDir = (): string => process.env.INTROVISOR_CACHE ?? '/var/cache/introvisor';
export const runDir = (): string => process.env.INTROVISOR_RUN ?? '/run/introvisor';
export const shmDir = (): string => process.env.INTROVISOR_SHM ?? '/dev/shm';
/** The folder of this installation (where package.json is). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('introvisor: cannot find package.json above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/**
 * The lab's image manifest: INTROVISOR_LAB_MANIFEST, else the one the lab's build left in this
 * installation's build/lab/ (its own images, whatever other clones on the machine built), else the
 * machine's latest in the cache.
 */
export function labManifestPath(): string {
  const env = process.env.INTROVISOR_LAB_MANIFEST;
  if (env) return env;
  const local = join(packageRoot(), 'build', 'lab', 'manifest.json');
  return existsSync(local) ? local : join(cacheDir(), 'lab', 'manifest.json');
}
/** Where the appliance keeps its state (database, policy store); INTROVISOR_STATE moves it. */
export const stateDir = (): string => process.env.INTROVISOR_STATE ?? '/var/lib/introvisor';
export const defaultDatabasePath = (): string => join(stateDir(), 'introvisor.db');
export const defaultPolicyDir = (): string => join(stateDir(), 'policy');

// Where introvisor keeps caches and per-run files; both can be moved by environment.
import { join } from 'node:path';

export const cacheDir = (): string => process.env.INTROVISOR_CACHE ?? '/var/cache/introvisor';
export const runDir = (): string => process.env.INTROVISOR_RUN ?? '/run/introvisor';
export const shmDir = (): string => process.env.INTROVISOR_SHM ?? '/dev/shm';
export const labManifestPath = (): string => join(cacheDir(), 'lab', 'manifest.json');

// Where introvisor keeps its state, caches and per-run files; each can be moved by environment.
import { join } from 'node:path';

export const cacheDir = (): string => process.env.INTROVISOR_CACHE ?? '/var/cache/introvisor';
export const runDir = (): string => process.env.INTROVISOR_RUN ?? '/run/introvisor';
export const shmDir = (): string => process.env.INTROVISOR_SHM ?? '/dev/shm';
export const labManifestPath = (): string => join(cacheDir(), 'lab', 'manifest.json');
/** Where the appliance keeps its state (database, policy store); INTROVISOR_STATE moves it. */
export const stateDir = (): string => process.env.INTROVISOR_STATE ?? '/var/lib/introvisor';
export const defaultDatabasePath = (): string => join(stateDir(), 'introvisor.db');
export const defaultPolicyDir = (): string => join(stateDir(), 'policy');

// Loads the native addon (native/, built by node-gyp at `npm install`).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The addon's JavaScript surface; keep in step with native/src/addon.cc. */
export interface NativePhysicalMemory {
  readonly size: number;
  readonly path: string;
  read(offset: number | bigint, length: number): Buffer;
  indexOf(pattern: Buffer, from?: number, to?: number): number;
  close(): void;
}

export interface NativeBinding {
  PhysicalMemory: new (path: string) => NativePhysicalMemory;
}

/** The package root: the nearest folder above this file holding package.json. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('introvisor: cannot find package.json above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

let cached: NativeBinding | undefined;

export function loadNative(): NativeBinding {
  if (cached) return cached;
  const file = join(packageRoot(), 'build', 'Release', 'introvisor.node');
  if (!existsSync(file)) {
    throw new Error(`introvisor: native addon missing at ${file}; run "npm ci" (or scripts/setup.sh) to build it`);
  }
  cached = createRequire(import.meta.url)(file) as NativeBinding;
  return cached;
}

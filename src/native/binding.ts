// Loads the native addon (native/, built by node-gyp at `npm install`).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/paths.js';

/** The addon's JavaScript surface; keep in step with native/src/addon.cc. */
export interface NativePhysicalMemory {
  readonly size: number;
  readonly path: string;
  read(offset: number | bigint, length: number): Buffer;
  indexOf(pattern: Buffer, from?: number, to?: number): number;
  close(): void;
}

/** Guest-virtual access over a NativePhysicalMemory (binding native/src/address_space.cc over the walker in native/src/core/). */
export interface NativeAddressSpace {
  translate(va: bigint): bigint | null;
  read(va: bigint, length: number): Buffer;
  tryRead(va: bigint, length: number): Buffer | null;
  readPhys(pa: bigint, length: number): Buffer;
  readGather(addresses: BigUint64Array, offset: number, length: number): { data: Buffer; ok: Uint8Array };
  walkList(head: bigint, linkOffset: number, maxNodes: number, gatherOffset: number, gatherLength: number): { nodes: BigUint64Array; data: Buffer; error: string | null };
  clearCache(): void;
  setLinear(regions: BigUint64Array): void;
  /** Fixed-stride records: see RecordSpec in src/translate/address-space.ts. */
  walkRecords(head: bigint, linkOffset: number, maxNodes: number, fields: Uint32Array, derefs: Uint32Array, stride: number, floor: bigint): { records: ArrayBuffer; error: string | null };
  gatherRecords(addresses: BigUint64Array, fields: Uint32Array, derefs: Uint32Array, stride: number, floor: bigint): ArrayBuffer;
  walkXArray(head: bigint, shiftOffset: number, slotsOffset: number, maxDepth: number, maxNodes: number, maxEntries: number, floor: bigint, where: string): { indices: Float64Array; entries: BigUint64Array; errors: string[] };
}

/** The KVM write trap's control fd for one QEMU (native/src/write_trap.cc; kernel-patches/uapi/introvisor_trap.h). */
export interface NativeWriteTrap {
  /** The trap fd (-1 after close). */
  readonly fd: number;
  /** The fd number of the VM inside QEMU that was attached. */
  readonly qemuVmFd: number;
  addRange(gpa: bigint, len: bigint | number, action: number): void;
  delRange(gpa: bigint, len: bigint | number): void;
  /** [gpa, len, action]* */
  list(): BigUint64Array;
  stats(): { refused: bigint; logged: bigint; lost: bigint; queued: number; ringRecords: number; ranges: number; apiVersion: number };
  /** Up to max whole 112-byte records; empty when none are queued (never blocks). */
  readRecords(max: number): Buffer;
  close(): void;
}

export interface NativeBinding {
  PhysicalMemory: new (path: string) => NativePhysicalMemory;
  /** layout: [guestPhysical, fileOffset, size] triples. */
  AddressSpace: new (memory: NativePhysicalMemory, layout: BigUint64Array, root: bigint, levels: 4 | 5) => NativeAddressSpace;
  /** [start, end)* byte ranges of a sparse file that hold data (native/src/file_extents.cc). */
  fileDataExtents(path: string): BigUint64Array;
  /** The peer of a connected unix socket fd as the kernel recorded it at connect (SO_PEERCRED; native/src/peer_cred.cc). */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  /** Attaches the write trap to QEMU `qemuPid`'s VM; throws an Error with .code (errno name or ENOVMFD) and .step. */
  WriteTrap: new (qemuPid: number, ringRecords?: number) => NativeWriteTrap;
}

/** The package root: the nearest folder above this file holding package.json. */
export { packageRoot };

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

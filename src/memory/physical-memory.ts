// Guest physical memory: the first stage of the data path. A guest's RAM file
// (QEMU memory-backend-file) or a raw dump, read-only, every read bounds-checked.
import { loadNative, type NativePhysicalMemory } from '../native/binding.js';

export interface PhysicalMemory {
  /** Bytes of guest-physical memory the file covers. */
  readonly size: number;
  readonly source: string;
  /** A copy of [address, address+length); RangeError outside the memory. */
  read(address: number | bigint, length: number): Buffer;
  /** First match of pattern starting in [from, to), or -1. */
  indexOf(pattern: Buffer, from?: number, to?: number): number;
  close(): void;
  /** The native object, for other native parts (the page walker). */
  readonly native: NativePhysicalMemory;
}

class MappedPhysicalMemory implements PhysicalMemory {
  constructor(private readonly mem: NativePhysicalMemory) {}
  get native(): NativePhysicalMemory { return this.mem; }
  get size(): number { return this.mem.size; }
  get source(): string { return this.mem.path; }
  read(address: number | bigint, length: number): Buffer { return this.mem.read(address, length); }
  indexOf(pattern: Buffer, from?: number, to?: number): number { return this.mem.indexOf(pattern, from, to); }
  close(): void { this.mem.close(); }
}

/** Maps a RAM file or raw dump. Errors name the file and the reason. */
export function openPhysicalMemory(path: string): PhysicalMemory {
  const { PhysicalMemory: Native } = loadNative();
  return new MappedPhysicalMemory(new Native(path));
}

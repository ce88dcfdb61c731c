// Guest physical memory: the first stage of the data path. A guest's RAM file
// (QEMU memory-backend-file) or a raw dump, read-only, every read bounds-checked.
import { closeSync, openSync, readSync } from 'node:fs';
import { loadNative, type NativePhysicalMemory } from '../native/binding.js';

/** Bytes read per step when searching through the file rather than the mapping (1 MiB: the one buffer stays allocated). */
const SEARCH_CHUNK = 1 << 20;

export interface PhysicalMemory {
  /** Bytes of guest-physical memory the file covers. */
  readonly size: number;
  readonly source: string;
  /** A copy of [address, address+length); RangeError outside the memory. */
  read(address: number | bigint, length: number): Buffer;
  /** First match of pattern starting in [from, to), or -1. */
  indexOf(pattern: Buffer, from?: number, to?: number): number;
  /**
   * Offsets of up to `limit` matches of pattern starting in [from, to), in order, read through
   * the file in bounded chunks (a whole-RAM search then adds none of the searched pages to this
   * process's resident memory, as it would through the mapping).
   */
  search(pattern: Buffer, from: number, to: number, limit: number): number[];
  close(): void;
  /** The native object, for other native parts (the page walker). */
  readonly native: NativePhysicalMemory;
}

let scratch: Buffer | undefined;
/**
 * One chunk buffer for every search in the process (searches are synchronous): a fresh 4 MiB
 * per call made discovery's dozen searches a garbage-collector cost.
 */
function searchBuffer(length: number): Buffer {
  if (!scratch || scratch.length < length) scratch = Buffer.allocUnsafe(length);
  return scratch.subarray(0, length);
}

class MappedPhysicalMemory implements PhysicalMemory {
  constructor(private readonly mem: NativePhysicalMemory) {}
  get native(): NativePhysicalMemory { return this.mem; }
  get size(): number { return this.mem.size; }
  get source(): string { return this.mem.path; }
  read(address: number | bigint, length: number): Buffer { return this.mem.read(address, length); }
  indexOf(pattern: Buffer, from?: number, to?: number): number { return this.mem.indexOf(pattern, from, to); }

  search(pattern: Buffer, from: number, to: number, limit: number): number[] {
    const out: number[] = [];
    const end = Math.min(to, this.size);
    if (pattern.length === 0 || from >= end || limit <= 0) return out;
    const fd = openSync(this.source, 'r');
    try {
      const buf = searchBuffer(SEARCH_CHUNK + pattern.length - 1);
      for (let pos = from; pos < end && out.length < limit; pos += SEARCH_CHUNK) {
        // Each chunk overlaps the next by pattern.length - 1 bytes: a match across the seam is found once.
        const want = Math.min(buf.length, end - pos + pattern.length - 1, this.size - pos);
        let got = 0;
        while (got < want) {
          const n = readSync(fd, buf, got, want - got, pos + got);
          if (n <= 0) break;
          got += n;
        }
        const view = buf.subarray(0, got);
        const starts = Math.min(SEARCH_CHUNK, end - pos);
        for (let at = view.indexOf(pattern); at >= 0 && at < starts && out.length < limit; at = view.indexOf(pattern, at + 1)) out.push(pos + at);
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }

  close(): void { this.mem.close(); }
}

/** Maps a RAM file or raw dump. Errors name the file and the reason. */
export function openPhysicalMemory(path: string): PhysicalMemory {
  const { PhysicalMemory: Native } = loadNative();
  return new MappedPhysicalMemory(new Native(path));
}

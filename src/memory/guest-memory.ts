// Guest-physical memory as the guest sees it: QEMU puts RAM above the PCI hole
// at 4 GiB once a guest has more than the low window, so guest-physical
// address != offset in the RAM file. GuestMemory maps one to the other.
import { openPhysicalMemory, type PhysicalMemory } from './physical-memory.js';
import { loadNative, type NativePhysicalMemory } from '../native/binding.js';

/** One contiguous run of guest RAM: guest-physical [gpa, gpa+size) is file [fileOffset, fileOffset+size). */
export interface RamRange {
  readonly gpa: bigint;
  readonly fileOffset: bigint;
  readonly size: bigint;
}

/** q35 (what QemuVm runs), pc (i440fx), or flat (a dump whose offsets are addresses). */
export type MachineLayout = 'q35' | 'pc' | 'flat';

const GiB4 = 0x1_0000_0000n;

/** QEMU's split of `ramSize` bytes into below-4G and above-4G RAM (hw/i386/pc_q35.c, pc_piix.c). */
export function qemuRamLayout(ramSize: number, machine: MachineLayout = 'q35'): RamRange[] {
  const size = BigInt(ramSize);
  if (size <= 0n) throw new RangeError(`RAM size ${ramSize} must be positive`);
  if (machine === 'flat') return [{ gpa: 0n, fileOffset: 0n, size }];
  let lowmem: bigint;
  if (machine === 'q35') lowmem = size >= 0xb000_0000n ? 0x8000_0000n : 0xb000_0000n;
  else lowmem = size >= 0xe000_0000n ? 0xc000_0000n : 0xe000_0000n; // gigabyte-aligned split (QEMU default)
  if (size <= lowmem) return [{ gpa: 0n, fileOffset: 0n, size }];
  return [
    { gpa: 0n, fileOffset: 0n, size: lowmem },
    { gpa: GiB4, fileOffset: lowmem, size: size - lowmem },
  ];
}

export class GuestMemory {
  readonly layout: readonly RamRange[];

  /** `layout`: a QEMU machine type, or explicit ranges (e.g. from an ELF dump's program headers). */
  constructor(readonly file: PhysicalMemory, layout: MachineLayout | readonly RamRange[] = 'q35') {
    this.layout = typeof layout === 'string' ? qemuRamLayout(file.size, layout) : layout;
    for (const r of this.layout) {
      if (r.fileOffset + r.size > BigInt(file.size)) throw new RangeError(`RAM range at 0x${r.gpa.toString(16)} runs past the end of ${file.source}`);
    }
  }

  get source(): string { return this.file.source; }
  get size(): number { return this.file.size; }
  /** For the native AddressSpace. */
  get native(): NativePhysicalMemory { return this.file.native; }

  /** Layout as the native side wants it: [gpa, fileOffset, size]*. */
  layoutArray(): BigUint64Array {
    return BigUint64Array.from(this.layout.flatMap((r) => [r.gpa, r.fileOffset, r.size]));
  }

  fileOffsetOf(gpa: bigint, length = 1): bigint | null {
    for (const r of this.layout) {
      if (gpa >= r.gpa && gpa - r.gpa < r.size) return gpa - r.gpa + BigInt(length) <= r.size ? r.fileOffset + (gpa - r.gpa) : null;
    }
    return null;
  }

  /** A copy of guest-physical [gpa, gpa+length); RangeError naming the range when RAM does not back it. */
  readPhys(gpa: bigint, length: number): Buffer {
    const off = this.fileOffsetOf(gpa, length);
    if (off === null) throw new RangeError(`guest-physical range 0x${gpa.toString(16)}+0x${length.toString(16)} is not backed by RAM in ${this.source}`);
    return this.file.read(off, length);
  }

  /**
   * Guest-physical addresses of up to `limit` matches of pattern, in address order, optionally
   * within [fromGpa, toGpa). Only the file's data extents are scanned: on tmpfs, touching a hole
   * through the mapping would allocate it, turning a sparse guest RAM file into a full one.
   * `extents`: a dataExtents() the caller took for several searches in a row.
   */
  findAll(pattern: Buffer, limit = 64, fromGpa?: bigint, toGpa?: bigint, extents = this.dataExtents()): bigint[] {
    const out: bigint[] = [];
    for (const r of this.layout) {
      const lo = fromGpa !== undefined && fromGpa > r.gpa ? fromGpa : r.gpa;
      const hi = toGpa !== undefined && toGpa < r.gpa + r.size ? toGpa : r.gpa + r.size;
      if (lo >= hi) continue;
      const fileLo = r.fileOffset + (lo - r.gpa);
      const fileHi = r.fileOffset + (hi - r.gpa);
      for (let e = 0; e + 1 < extents.length && out.length < limit; e += 2) {
        const eLo = extents[e] as bigint;
        const eHi = extents[e + 1] as bigint;
        const from0 = eLo > fileLo ? eLo : fileLo;
        const to = Number(eHi < fileHi ? eHi : fileHi);
        for (const at of this.file.search(pattern, Number(from0), to, limit - out.length)) out.push(r.gpa + (BigInt(at) - r.fileOffset));
      }
    }
    return out;
  }

  /** [start, end)* data extents of the backing file (the whole file if unknown). */
  dataExtents(): BigUint64Array {
    try {
      return loadNative().fileDataExtents(this.file.source);
    } catch {
      return BigUint64Array.from([0n, BigInt(this.file.size)]);
    }
  }

  close(): void { this.file.close(); }
}

export function openGuestMemory(path: string, machine: MachineLayout = 'q35'): GuestMemory {
  return new GuestMemory(openPhysicalMemory(path), machine);
}

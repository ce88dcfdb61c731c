// Where the kernel image lies in guest-physical memory, found before any search for kallsyms, so
// that search reads the image (~20 MB up to kallsyms) rather than all of RAM. Only a hint: what
// is found here passes the same validation as a whole-RAM find (discovery's judgement), and
// discovery searches all of RAM when the probe finds nothing or nothing found here is valid.
//
// Live (CR3 known): the kernel image is what the page tables map in __START_KERNEL_map's 1 GiB
// (KERNEL_IMAGE_SIZE with KASLR; cleanup_highmap unmaps the rest), so its lowest mapped 2 MiB
// step is _text. A dump: the image starts 2 MiB-aligned (CONFIG_PHYSICAL_ALIGN) with startup_64
// in its first page, which takes _text's address with a RIP-relative LEA (`leaq _text(%rip)`):
// an instruction in that page that points back at the page's own start marks an image start.
// Checked on 5.10, 6.1 and 6.12; a kernel without it just takes the whole-RAM path.
import type { GuestMemory } from '../memory/guest-memory.js';
import { AddressSpace, type PagingLevels } from '../translate/address-space.js';

const MiB2 = 2n << 20n;
/** __START_KERNEL_map and KERNEL_IMAGE_SIZE (1 GiB with KASLR): where the image is mapped. */
const KERNEL_MAP = 0xffff_ffff_8000_0000n;
const KERNEL_MAP_SIZE = 1n << 30n;
/** Bytes of each 2 MiB-aligned block read for the signature. */
const SIGNATURE_WINDOW = 4096;
/** More image starts than this is not an honest guest's RAM (one kernel, maybe one left from before a reset). */
export const MAX_PROBED_IMAGES = 4;

export interface ImageProbe {
  /** Guest-physical start (_text) of each image found, in address order; empty: search all of RAM. */
  readonly starts: readonly bigint[];
  /** How they were found (or why none), for discovery's report. */
  readonly note: string;
}

const hex = (v: bigint): string => '0x' + v.toString(16);

/** Offset of a RIP-relative LEA (REX.W 8D, mod 00 r/m 101) in buf whose target is buf's start, or -1. */
export function leaToStart(buf: Buffer): number {
  for (let i = buf.indexOf(0x8d, 1); i >= 1 && i + 6 <= buf.length; i = buf.indexOf(0x8d, i + 1)) {
    const rex = buf[i - 1] as number;
    if ((rex & 0xf8) !== 0x48 || ((buf[i + 1] as number) & 0xc7) !== 0x05) continue;
    // The displacement is relative to the next instruction: start = (i - 1) + 7 + disp.
    if (buf.readInt32LE(i + 2) === -(i + 6)) return i - 1;
  }
  return -1;
}

/** Image starts in a dump: 2 MiB-aligned blocks (with data) whose first page holds the LEA to _text. */
export function probeBySignature(mem: GuestMemory): ImageProbe {
  const extents = mem.dataExtents();
  const starts: bigint[] = [];
  let probed = 0;
  for (const r of mem.layout) {
    let e = 0;
    for (let gpa = (r.gpa + MiB2 - 1n) & ~(MiB2 - 1n); gpa + BigInt(SIGNATURE_WINDOW) <= r.gpa + r.size; gpa += MiB2) {
      const off = r.fileOffset + (gpa - r.gpa);
      // Only blocks whose first page is file data: a hole reads as zeroes, and reading it through
      // the mapping would make tmpfs allocate it.
      while (e + 1 < extents.length && (extents[e + 1] as bigint) <= off) e += 2;
      if (e + 1 >= extents.length || (extents[e] as bigint) > off || (extents[e + 1] as bigint) < off + BigInt(SIGNATURE_WINDOW)) continue;
      probed++;
      if (leaToStart(mem.readPhys(gpa, SIGNATURE_WINDOW)) < 0) continue;
      starts.push(gpa);
      if (starts.length > MAX_PROBED_IMAGES) {
        return { starts: [], note: `kernel image probe: more than ${MAX_PROBED_IMAGES} 2 MiB blocks look like an image start; searching all of RAM` };
      }
    }
  }
  return {
    starts,
    note: starts.length > 0
      ? `kernel image probe: ${probed} 2 MiB-aligned blocks checked, image start (leaq _text(%rip)) at ${starts.map(hex).join(', ')}`
      : `kernel image probe: no image start among ${probed} 2 MiB-aligned blocks; searching all of RAM`,
  };
}

/** Image starts from the page tables at `root`: the lowest mapped 2 MiB step of the kernel map, per paging depth tried. */
export function probeByPageTables(mem: GuestMemory, root: bigint, levels: readonly PagingLevels[]): ImageProbe {
  const starts: bigint[] = [];
  for (const l of levels) {
    const space = new AddressSpace(mem, root, l);
    for (let va = KERNEL_MAP; va < KERNEL_MAP + KERNEL_MAP_SIZE; va += MiB2) {
      const pa = space.translate(va);
      if (pa === null) continue;
      if (!starts.includes(pa)) starts.push(pa);
      break;
    }
  }
  starts.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    starts,
    note: starts.length > 0
      ? `kernel image probe: page tables at ${hex(root)} map the kernel image from ${starts.map(hex).join(', ')}`
      : `kernel image probe: page tables at ${hex(root)} map nothing at ${hex(KERNEL_MAP)}..+1 GiB; searching all of RAM`,
  };
}

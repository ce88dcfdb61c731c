// Guest-virtual memory: the native x86-64 page walker (native/src/core/, bound in
// native/src/address_space.cc) behind a small typed surface. Reads either succeed or name the unmapped address.
import { loadNative, type NativeAddressSpace } from '../native/binding.js';

import type { GuestMemory } from '../memory/guest-memory.js';

const MAX_VA = 0xffff_ffff_ffff_ffffn;

export type PagingLevels = 4 | 5;

/**
 * Fixed-stride records gathered natively (native walkRecords/gatherRecords): bytes [0, 8) of
 * each record hold the structure's address, [8, 12) a status word (bit 0: every field was
 * readable; bit 1+k: deref k was followed); fields land at their dst (>= 16).
 */
export interface RecordSpec {
  /** [src offset in the structure, length, dst offset in the record]* */
  readonly fields: Uint32Array;
  /** [record offset of a u64 pointer, offset from that pointer, length, dst]*: followed only when the pointer is >= floor. */
  readonly derefs: Uint32Array;
  /** Record size: a multiple of 8, 16..4096. */
  readonly stride: number;
  readonly floor: bigint;
}

/** The page-table root in CR3: drop the PCID (bits 0-11), the KPTI user-half bit (12) and the no-flush bit (63). */
export function pageTableRootFromCr3(cr3: bigint): bigint {
  return cr3 & 0x000f_ffff_ffff_e000n;
}

export class AddressSpace {
  private readonly native: NativeAddressSpace;

  /** The page-table root (guest-physical) the walker translates through. */
  constructor(memory: GuestMemory, readonly root: bigint, readonly levels: PagingLevels) {
    const { AddressSpace: Native } = loadNative();
    this.native = new Native(memory.native, memory.layoutArray(), root, levels);
  }

  /** Forget cached translations: call at the start of each scan of a live guest. */
  clearCache(): void { this.native.clearCache(); }

  translate(va: bigint): bigint | null { return this.native.translate(va); }

  /**
   * Regions translated by arithmetic instead of a walk: the kernel's direct map and
   * image are linear by construction. Call only after checking samples against walks
   * (see verifyLinear); pass [] to walk everything.
   */
  setLinear(regions: readonly { va: bigint; pa: bigint; size: bigint }[]): void {
    this.native.setLinear(BigUint64Array.from(regions.flatMap((r) => [r.va, r.pa, r.size])));
  }

  /** Checks a region against real walks at `samples` evenly spread mapped pages; false on any disagreement. */
  verifyLinear(region: { va: bigint; pa: bigint; size: bigint }, samples = 64): boolean {
    this.native.setLinear(new BigUint64Array(0));
    const step = region.size / BigInt(samples);
    let mapped = 0;
    for (let i = 0n; i < BigInt(samples); i++) {
      const va = region.va + ((i * step) & ~0xfffn);
      const pa = this.native.translate(va);
      if (pa === null) continue;
      if (pa !== region.pa + (va - region.va)) return false;
      mapped++;
    }
    return mapped > 0;
  }
  /** `length` bytes from `va`: a fresh copy the caller owns (it may change it); throws naming the first unmapped address. */
  read(va: bigint, length: number): Buffer { return this.native.read(va, length); }
  /** Null for what cannot be read, including an address arithmetic on a hostile pointer took out of 64 bits. */
  tryRead(va: bigint, length: number): Buffer | null {
    if (va < 0n || va > MAX_VA) return null;
    return this.native.tryRead(va, length);
  }
  readPhys(pa: bigint, length: number): Buffer { return this.native.readPhys(pa, length); }
  readU64(va: bigint): bigint { return this.native.read(va, 8).readBigUInt64LE(0); }
  readU32(va: bigint): number { return this.native.read(va, 4).readUInt32LE(0); }
  /** One record of `length` bytes at each address + offset (ok[i] = 0, and zeroes, when unmapped). */
  readGather(addresses: BigUint64Array, offset: number, length: number): { data: Buffer; ok: Uint8Array } {
    return this.native.readGather(addresses, offset, length);
  }
  /**
   * Bounded, cycle-checked walk of the circular list_head at `head`: the containers (link - linkOffset)
   * and gatherLength bytes at container + gatherOffset of each; error says why it stopped short.
   */
  walkList(head: bigint, linkOffset: number, maxNodes: number, gatherOffset = 0, gatherLength = 0): { nodes: BigUint64Array; data: Buffer; error: string | null } {
    return this.native.walkList(head, linkOffset, maxNodes, gatherOffset, gatherLength);
  }

  /**
   * walkList's bounded, cycle-checked walk with one fixed-stride record per node (see RecordSpec);
   * a node whose fields cannot be read ends the walk there, with an error.
   */
  walkRecords(head: bigint, linkOffset: number, maxNodes: number, spec: RecordSpec): { records: ArrayBuffer; error: string | null } {
    return this.native.walkRecords(head, linkOffset, maxNodes, spec.fields, spec.derefs, spec.stride, spec.floor);
  }

  /** One record per address, in order; an unreadable structure's record has status 0. */
  gatherRecords(addresses: BigUint64Array, spec: RecordSpec): ArrayBuffer {
    return this.native.gatherRecords(addresses, spec.fields, spec.derefs, spec.stride, spec.floor);
  }

  /**
   * The pointer entries of the XArray whose xa_head is `head`, with their indices (depth first,
   * in index order); nodes must be kernel pointers (>= floor, 8-aligned) with a sane shift, and
   * depth, nodes and entries are bounded. errors: [where, message] pairs, where prefixed by `where`.
   */
  walkXArray(head: bigint, shiftOffset: number, slotsOffset: number, limits: { maxDepth: number; maxNodes: number; maxEntries: number },
    floor: bigint, where: string): { indices: Float64Array; entries: BigUint64Array; errors: string[] } {
    return this.native.walkXArray(head, shiftOffset, slotsOffset, limits.maxDepth, limits.maxNodes, limits.maxEntries, floor, where);
  }
}

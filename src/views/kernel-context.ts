// What every view needs: guest-virtual memory, the kernel profile, limits, and
// pointer sanity checks. The guest is hostile: a pointer is used only after it
// is checked to be a kernel address, counts are capped, and failures become
// ViewError values instead of exceptions.
import type { AddressSpace } from '../translate/address-space.js';
import type { KernelProfile } from '../profile/kernel-profile.js';
import type { ViewError } from './types.js';
import { errorMessage } from '../util/errors.js';

export interface ScanLimits {
  /** Most tasks (processes + threads) any walk accepts. */
  readonly maxTasks: number;
  readonly maxModules: number;
  readonly maxCpus: number;
  /** Most nodes in one pid IDR or run-queue tree walk. */
  readonly maxTreeNodes: number;
}

export const DEFAULT_LIMITS: ScanLimits = { maxTasks: 1 << 17, maxModules: 4096, maxCpus: 1024, maxTreeNodes: 1 << 18 };

export class KernelContext {
  /** Lowest kernel-half address for the paging mode (canonical, sign-extended). */
  readonly kernelHalf: bigint;

  constructor(
    readonly space: AddressSpace,
    readonly profile: KernelProfile,
    readonly limits: ScanLimits = DEFAULT_LIMITS,
  ) {
    this.kernelHalf = space.levels === 5 ? 0xff00_0000_0000_0000n : 0xffff_8000_0000_0000n;
  }

  /** A plausible kernel pointer: in the kernel half and 8-byte aligned where `align` says so. */
  isKernelPointer(va: bigint, align = 8n): boolean {
    return va >= this.kernelHalf && (va & (align - 1n)) === 0n;
  }

  /** Reads the field at struct offset `off` from a gathered record. */
  static u64(buf: Buffer, at: number): bigint { return buf.readBigUInt64LE(at); }
}

/** `build` once per kernel profile (its BTF offsets hold for every guest and scan of that build); a failed build is retried, not kept. */
export function perProfile<T>(build: (ctx: KernelContext) => T): (ctx: KernelContext) => T {
  const kept = new WeakMap<object, T>();
  return (ctx) => {
    let v = kept.get(ctx.profile);
    if (v === undefined) {
      v = build(ctx);
      kept.set(ctx.profile, v);
    }
    return v;
  };
}

export function viewError(where: string, e: unknown): ViewError {
  return { where, message: errorMessage(e) };
}

export const hex = (v: bigint | number): string => '0x' + v.toString(16);

/** In-order walk of a red-black tree of rb_nodes (rb_right at +8, rb_left at +16), bounded and cycle-checked. */
export function walkRbTree(ctx: KernelContext, root: bigint, maxNodes: number, errors: ViewError[], where: string): bigint[] {
  const out: bigint[] = [];
  const seen = new Set<bigint>();
  const stack: bigint[] = [];
  let node = root;
  while (node !== 0n || stack.length > 0) {
    while (node !== 0n) {
      if (!ctx.isKernelPointer(node)) { errors.push({ where: `${where}: rb_node ${hex(node)}`, message: 'not a kernel pointer' }); node = 0n; break; }
      if (seen.has(node)) { errors.push({ where: `${where}: rb_node ${hex(node)}`, message: 'cycle in the tree' }); node = 0n; break; }
      if (seen.size >= maxNodes) { errors.push({ where, message: `more than ${maxNodes} nodes` }); return out; }
      seen.add(node);
      stack.push(node);
      const left = ctx.space.tryRead(node + 16n, 8);
      if (!left) { errors.push({ where: `${where}: rb_node ${hex(node)}`, message: 'not mapped' }); stack.pop(); node = 0n; break; }
      node = left.readBigUInt64LE(0);
    }
    const top = stack.pop();
    if (top === undefined) break;
    out.push(top);
    const right = ctx.space.tryRead(top + 8n, 8);
    node = right ? right.readBigUInt64LE(0) : 0n;
  }
  return out;
}

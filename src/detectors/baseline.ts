// The known-good picture of a guest kernel, recorded at its first clean scan
// and kept (src/store/baseline-store.ts) to compare every later scan with.
// Kernel addresses are kept relative to the KASLR slide, so one baseline holds
// across reboots of the same kernel; what depends on the slide itself (the
// text and rodata hashes, which include relocated addresses) is per boot.
import type { KernelSnapshot } from '../views/types.js';

export interface KernelBaseline {
  readonly version: 1;
  /** Which kernel this baseline is of: release + banner. */
  readonly kernelKey: string;
  readonly recordedAtMs: number;
  /** table name -> slot -> handler offset from the slide (hex), or null when the slot held a non-kernel target. */
  readonly syscalls: { readonly [table: string]: readonly (string | null)[] };
  readonly dispatchers: { readonly [name: string]: string };
  /** IDT gate handlers, offset from the slide (hex). */
  readonly idt: readonly string[];
  readonly lstar: string | null;
  readonly boot: { readonly slide: string; readonly textHash: string | null; readonly rodataHash: string | null };
}

export interface BaselineStore {
  load(guest: string, kernelKey: string): KernelBaseline | null;
  save(guest: string, baseline: KernelBaseline): void;
}

export const kernelKey = (snap: KernelSnapshot): string => `${snap.kernel.release} ${snap.kernel.banner}`.slice(0, 500);

const rel = (addr: bigint, slide: bigint): string => `0x${BigInt.asUintN(64, addr - slide).toString(16)}`;
export const unrel = (offset: string, slide: bigint): bigint => BigInt.asUintN(64, BigInt(offset) + slide);

// A baseline list's offsets (syscall slots, IDT gates) as addresses under one slide: parsed once
// per (list, slide), not with BigInt per entry per scan (the baseline objects live as long as the
// watch keeps them).
const slid = new WeakMap<readonly (string | null)[], { slide: bigint; addrs: (bigint | null)[] }>();
export function slidAddresses(base: readonly (string | null)[], slide: bigint): readonly (bigint | null)[] {
  const c = slid.get(base);
  if (c && c.slide === slide) return c.addrs;
  const addrs = base.map((b) => (b === null || b === undefined ? null : unrel(b, slide)));
  slid.set(base, { slide, addrs });
  return addrs;
}

/** The baseline this (clean) snapshot describes. */
export function baselineOf(snap: KernelSnapshot, nowMs: number): KernelBaseline {
  const slide = snap.kernel.kaslrSlide;
  const syscalls: Record<string, (string | null)[]> = {};
  for (const t of snap.syscallTables) {
    const slots: (string | null)[] = [];
    for (const e of t.entries) slots[e.nr] = e.owner.kind === 'kernel' ? rel(e.target, slide) : null;
    syscalls[t.table] = Array.from(slots, (v) => v ?? null);
  }
  return {
    version: 1,
    kernelKey: kernelKey(snap),
    recordedAtMs: nowMs,
    syscalls,
    dispatchers: Object.fromEntries(snap.integrity.dispatchers.map((d) => [d.name, d.hash])),
    idt: snap.integrity.idt.map((a) => rel(a, slide)),
    lstar: snap.integrity.lstar === null ? null : rel(snap.integrity.lstar, slide),
    boot: { slide: `0x${slide.toString(16)}`, textHash: snap.integrity.textHash, rodataHash: snap.integrity.rodataHash },
  };
}

/** Both whole-region sha256s, or both hashes over page hashes (their prefix): only then comparable. */
export const sameHashKind = (a: string, b: string): boolean => (a.indexOf(':') < 0) === (b.indexOf(':') < 0) && a.slice(0, a.indexOf(':') + 1) === b.slice(0, b.indexOf(':') + 1);

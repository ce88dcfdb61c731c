// The system call tables, each slot resolved to the kernel function or module
// that holds its target, and to the handler the slot should hold.
import type { HandlerOwner, ModuleInfo, SyscallEntry, SyscallTableView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';
import { X64_SYSCALL_ENTRIES } from './syscall-names.js';

const TABLES = [
  { table: 'sys_call_table', prefix: '__x64_', abi: null },
  { table: 'ia32_sys_call_table', prefix: '__ia32_', abi: 'ia32' },
  { table: 'x32_sys_call_table', prefix: '__x64_', abi: 'x32' },
] as const;

/** The ABIs whose numbering is taken from the kernel itself (see abiNumbering): ia32, x32, and x64 past the known list. */
export type CompatAbi = 'x64' | 'ia32' | 'x32';
/** The handler families of each ABI (x32 shares the 64-bit handlers for its common calls). */
const FAMILIES: Record<CompatAbi, readonly string[]> = {
  x64: ['__x64_sys_'],
  ia32: ['__ia32_sys_', '__ia32_compat_sys_'],
  // x32's own calls: __x32_compat_sys_* up to 5.x, __x64_compat_sys_* on 6.x.
  x32: ['__x64_sys_', '__x32_compat_sys_', '__x64_compat_sys_'],
};
const NI = /^(__(x64|ia32)_)?sys_ni_syscall$/;
/** x32 numbers at and above this are its own; below, a slot is the 64-bit call of that number or unassigned. */
const X32_OWN = 512;
const numberings = new WeakMap<object, Map<CompatAbi, (string | null)[]>>();
const MAX_ENTRIES = 1024;

// Kernel-text resolutions never change for a profile: cache them across scans.
const kernelOwners = new WeakMap<object, Map<bigint, HandlerOwner | null>>();
const expectedNames = new WeakMap<object, Map<string, (string | null)[]>>();

/** Resolves a code address to the kernel text symbol or module that holds it. */
export function ownerOf(ctx: KernelContext, target: bigint, modules: readonly ModuleInfo[]): HandlerOwner {
  let cache = kernelOwners.get(ctx.profile);
  if (!cache) { cache = new Map(); kernelOwners.set(ctx.profile, cache); }
  let hit = cache.get(target);
  if (hit === undefined) {
    hit = kernelOwner(ctx, target);
    if (cache.size < 1 << 16) cache.set(target, hit);
  }
  if (hit) return hit;
  for (const m of modules) {
    if (target >= m.coreBase && target < m.coreBase + BigInt(m.coreSize)) return { kind: 'module', module: m.name, symbol: null };
  }
  return { kind: 'unknown' };
}

function kernelOwner(ctx: KernelContext, target: bigint): HandlerOwner | null {
  const s = ctx.profile.symbols;
  const stext = s.address('_stext');
  const etext = s.address('_etext');
  if (stext !== undefined && etext !== undefined && target >= stext && target < etext) {
    const hit = s.lookup(target);
    if (hit) return { kind: 'kernel', symbol: hit.offset === 0n ? hit.name : `${hit.name}+0x${hit.offset.toString(16)}` };
  }
  return null;
}

/** The handler each slot should hold, by the syscall numbering and this kernel's symbols. */
function expectedHandlers(ctx: KernelContext, table: string, prefix: string, count: number): (string | null)[] {
  let perProfile = expectedNames.get(ctx.profile);
  if (!perProfile) { perProfile = new Map(); expectedNames.set(ctx.profile, perProfile); }
  const key = `${table}:${count}`;
  const cached = perProfile.get(key);
  if (cached) return cached;
  const s = ctx.profile.symbols;
  const names = table === 'sys_call_table' ? X64_SYSCALL_ENTRIES : null;
  const ni = s.has(`${prefix}sys_ni_syscall`) ? `${prefix}sys_ni_syscall` : 'sys_ni_syscall';
  const out: (string | null)[] = [];
  for (let nr = 0; nr < count; nr++) {
    // Past the numbering this version knows (a newer kernel), the kernel's own numbering is used.
    if (!names || nr >= names.length) { out.push(null); continue; }
    const e = names[nr];
    out.push(e && s.has(prefix + e) ? prefix + e : ni);
  }
  perProfile.set(key, out);
  return out;
}

/**
 * When `target` is the start of a handler of the ABI (a family symbol or sys_ni_syscall, under any
 * of its names), the name its owner is reported by (so the two compare equal), else null.
 */
function handlerName(ctx: KernelContext, abi: CompatAbi, target: bigint | null): string | null {
  if (target === null) return null;
  const hit = kernelOwner(ctx, target);
  if (!hit || hit.kind !== 'kernel' || hit.symbol.includes('+')) return null;
  const isHandler = (n: string): boolean => NI.test(n) || FAMILIES[abi].some((p) => n.startsWith(p));
  return isHandler(hit.symbol) || ctx.profile.symbols.namesAt(target).some(isHandler) ? hit.symbol : null;
}

/** Whether two handler names are one function (aliases share an address). */
function sameHandler(ctx: KernelContext, a: string, b: string): boolean {
  if (a === b) return true;
  const x = ctx.profile.symbols.address(a);
  return x !== undefined && x === ctx.profile.symbols.address(b);
}

/**
 * The ia32/x32 numbering, from the kernel itself: the handler names of the first contents seen for
 * this kernel (its table as booted, or its dispatch switch's case->handler map, which is the
 * numbering on 6.9+), whichever is read first; the other is then checked against it. Slots below
 * 512 of x32 must also agree with the 64-bit numbering (the same call, or unassigned). A slot
 * whose first target is no handler of the ABI has no expected name (its owner is still checked).
 */
export function abiNumbering(ctx: KernelContext, abi: CompatAbi, targets: readonly (bigint | null)[]): (string | null)[] {
  let perProfile = numberings.get(ctx.profile);
  if (!perProfile) { perProfile = new Map(); numberings.set(ctx.profile, perProfile); }
  const known = perProfile.get(abi);
  if (known && known.length >= targets.length) return known;
  const x64 = abi === 'x32' && ctx.profile.symbols.has('sys_call_table') ? expectedHandlers(ctx, 'sys_call_table', '__x64_', X32_OWN) : null;
  const out: (string | null)[] = [];
  for (let nr = 0; nr < targets.length; nr++) {
    const first = known?.[nr];
    if (first !== undefined) { out.push(first); continue; }
    let name = handlerName(ctx, abi, targets[nr] ?? null);
    const shared = x64?.[nr];
    if (nr < X32_OWN && shared !== undefined && shared !== null && name !== null && !NI.test(name) && !sameHandler(ctx, name, shared)) name = shared;
    out.push(name);
  }
  perProfile.set(abi, out);
  return out;
}

/**
 * The last scan's tables per context (one boot): when every table holds the same bytes and every
 * slot resolved into kernel text (no module, whose place may have changed, owns a target), the
 * view is that scan's again, the very same object, so a detector may reuse its answer for it.
 */
const lastTables = new WeakMap<KernelContext, { readonly raws: readonly (Buffer | null)[]; readonly view: readonly SyscallTableView[] }>();

export function readSyscallTables(ctx: KernelContext, modules: readonly ModuleInfo[]): readonly SyscallTableView[] {
  const out: SyscallTableView[] = [];
  const raws: (Buffer | null)[] = [];
  const last = lastTables.get(ctx);
  const s = ctx.profile.symbols;
  for (const { table, prefix, abi } of TABLES) {
    const address = s.address(table);
    if (address === undefined) continue; // this kernel has no such table (e.g. ia32 on Debian 6.1)
    const errors: ViewError[] = [];
    // The table's size comes from the kernel: the gap to the next symbol (kallsyms), less the
    // zero padding the linker leaves after it (a live slot is never NULL: even an unassigned
    // number holds sys_ni_syscall). Never a constant: 5.10 has 441 slots, 6.1 451, 6.12 463.
    const extent = s.extent(table);
    let count = Math.min(Math.floor((extent ?? 0) / 8), MAX_ENTRIES);
    let probe: Buffer | null = null;
    if (count > 0) {
      try { probe = ctx.space.read(address, count * 8); } catch (e) {
        out.push({ table, address, entries: [], errors: [viewError(`${table} at ${hex(address)}`, e)] });
        continue;
      }
      while (count > 0 && probe.readBigUInt64LE((count - 1) * 8) === 0n) count--;
    }
    raws.push(probe);
    if (count <= 0 || !probe) { out.push({ table, address, entries: [], errors: [{ where: `${table} at ${hex(address)}`, message: 'size unknown' }] }); continue; }
    const raw = probe;
    const kept = last?.view[out.length];
    if (kept && kept.table === table && last?.raws[out.length]?.equals(raw)) { out.push(kept); continue; }
    const targets = Array.from({ length: count }, (_, nr) => raw.readBigUInt64LE(nr * 8));
    let expected = abi === null ? expectedHandlers(ctx, table, prefix, count) : abiNumbering(ctx, abi, targets);
    if (abi === null && expected.some((e) => e === null)) {
      const own = abiNumbering(ctx, 'x64', targets);
      expected = expected.map((e, nr) => e ?? own[nr] ?? null);
    }
    const entries: SyscallEntry[] = [];
    for (let nr = 0; nr < count; nr++) {
      const target = targets[nr] as bigint;
      entries.push({ nr, target, owner: ownerOf(ctx, target, modules), expected: expected[nr] ?? null });
    }
    out.push({ table, address, entries: Object.freeze(entries), errors });
  }
  if (last && out.length === last.view.length && out.every((t, i) => t === last.view[i])) return last.view;
  const view = Object.freeze(out);
  // Only tables read whole and resolved into kernel text alone are kept: a module's range is the module list's to say.
  const reusable = raws.length === out.length && out.every((t) => t.errors.length === 0 && t.entries.every((e) => e.owner.kind === 'kernel'));
  if (reusable) lastTables.set(ctx, { raws, view }); else lastTables.delete(ctx);
  return view;
}

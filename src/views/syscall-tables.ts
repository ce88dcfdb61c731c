// The system call tables, each slot resolved to the kernel function or module
// that holds its target, and to the handler the slot should hold.
import type { HandlerOwner, ModuleInfo, SyscallEntry, SyscallTableView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';
import { X64_SYSCALL_ENTRIES } from './syscall-names.js';

const TABLES = [
  { table: 'sys_call_table', prefix: '__x64_' },
  { table: 'ia32_sys_call_table', prefix: '__ia32_' },
  { table: 'x32_sys_call_table', prefix: '__x64_' },
] as const;
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
  const cached = perProfile.get(table);
  if (cached && cached.length === count) return cached;
  const s = ctx.profile.symbols;
  const names = table === 'sys_call_table' ? X64_SYSCALL_ENTRIES : null;
  const ni = s.has(`${prefix}sys_ni_syscall`) ? `${prefix}sys_ni_syscall` : 'sys_ni_syscall';
  const out: (string | null)[] = [];
  for (let nr = 0; nr < count; nr++) {
    if (!names) { out.push(null); continue; }
    const e = names[nr];
    out.push(e && s.has(prefix + e) ? prefix + e : ni);
  }
  perProfile.set(table, out);
  return out;
}

export function readSyscallTables(ctx: KernelContext, modules: readonly ModuleInfo[]): SyscallTableView[] {
  const out: SyscallTableView[] = [];
  const s = ctx.profile.symbols;
  for (const { table, prefix } of TABLES) {
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
    if (count <= 0 || !probe) { out.push({ table, address, entries: [], errors: [{ where: `${table} at ${hex(address)}`, message: 'size unknown' }] }); continue; }
    const raw = probe;
    const expected = expectedHandlers(ctx, table, prefix, count);
    const entries: SyscallEntry[] = [];
    for (let nr = 0; nr < count; nr++) {
      const target = raw.readBigUInt64LE(nr * 8);
      entries.push({ nr, target, owner: ownerOf(ctx, target, modules), expected: expected[nr] ?? null });
    }
    out.push({ table, address, entries, errors });
  }
  return out;
}

// Loaded modules, two ways: the kernel's `modules` list (what lsmod reads, and
// what a self-hiding module unlinks itself from) and the module kobjects under
// /sys/module (module_kset), which such a module usually forgets.
import type { ModuleInfo, ModuleListView, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';

const MODULE_NAME_LEN = 56;

interface ModLayout {
  list: number;
  name: number;
  coreBase: number;
  coreSize: number;
  ksetList: number;
  kobjEntry: number;
  kobjName: number;
  mkKobj: number;
  mkMod: number;
}

function layout(ctx: KernelContext): ModLayout {
  const p = ctx.profile;
  const has = (s: string, m: string): boolean => p.layouts.has(s, m);
  // 6.1: core_layout.{base,size}; 6.4+: mem[MOD_TEXT].{base,size}.
  const core = has('module', 'core_layout') ? 'core_layout' : 'mem';
  return {
    list: p.offsetof('module', 'list'),
    name: p.offsetof('module', 'name'),
    coreBase: p.offsetof('module', core) + p.offsetof(core === 'mem' ? 'module_memory' : 'module_layout', 'base'),
    coreSize: p.offsetof('module', core) + p.offsetof(core === 'mem' ? 'module_memory' : 'module_layout', 'size'),
    ksetList: p.offsetof('kset', 'list'),
    kobjEntry: p.offsetof('kobject', 'entry'),
    kobjName: p.offsetof('kobject', 'name'),
    mkKobj: p.offsetof('module_kobject', 'kobj'),
    mkMod: p.offsetof('module_kobject', 'mod'),
  };
}

const layoutOf = perProfile(layout);

function moduleName(buf: Buffer): string | null {
  const nul = buf.indexOf(0);
  const s = buf.toString('latin1', 0, nul < 0 ? buf.length : nul);
  return /^[A-Za-z0-9_-]{1,55}$/.test(s) ? s : null;
}

function readModules(ctx: KernelContext, L: ModLayout, addresses: readonly bigint[], errors: ViewError[], where: string): ModuleInfo[] {
  const lo = Math.min(L.name, L.coreBase, L.coreSize);
  const hi = Math.max(L.name + MODULE_NAME_LEN, L.coreBase + 8, L.coreSize + 4);
  const { data, ok } = ctx.space.readGather(BigUint64Array.from(addresses), lo, hi - lo);
  const out: ModuleInfo[] = [];
  for (let i = 0; i < addresses.length; i++) {
    const a = addresses[i] as bigint;
    if (!ok[i]) { errors.push({ where: `${where}: module ${hex(a)}`, message: 'not mapped' }); continue; }
    const rec = data.subarray(i * (hi - lo), (i + 1) * (hi - lo));
    const name = moduleName(rec.subarray(L.name - lo, L.name - lo + MODULE_NAME_LEN));
    if (name === null) { errors.push({ where: `${where}: module ${hex(a)}`, message: 'name is not a module name' }); continue; }
    out.push({ name, address: a, coreBase: rec.readBigUInt64LE(L.coreBase - lo), coreSize: rec.readUInt32LE(L.coreSize - lo) });
  }
  return out;
}

/**
 * The /sys/module kset walk (every kobject of it, built-in ones included: ~100-200 nodes, pointer
 * chasing through guest memory) is reused from the last walk of this context while the kset's list
 * head is unchanged (a kobject joins at its tail), the modules list holds the same nodes (a module
 * loading, unloading or unlinking itself from it changes that), and the walk is younger than this.
 */
export const KSET_REWALK_MS = 500;

const lastKset = new WeakMap<KernelContext, { readonly headAt: bigint; readonly head: Buffer; readonly listNodes: Buffer; readonly atMs: number; readonly kobjects: ModuleInfo[]; readonly errors: readonly ViewError[] }>();

export interface ModuleListOptions {
  /** Walk the kset whatever the last walk saw (a read that must be fresh). */
  readonly fresh?: boolean;
  /** The clock for KSET_REWALK_MS (tests). */
  readonly nowMs?: number;
}

export function readModuleList(ctx: KernelContext, opts: ModuleListOptions = {}): ModuleListView {
  const errors: ViewError[] = [];
  const nowMs = opts.nowMs ?? Date.now();
  let listNodes: Buffer | null = null;
  let L: ModLayout;
  try {
    L = layoutOf(ctx);
  } catch (e) {
    return { modules: [], kobjects: [], errors: [viewError('modules: profile', e)] };
  }
  let modules: ModuleInfo[] = [];
  try {
    const head = ctx.profile.symbol('modules');
    const w = ctx.space.walkList(head, L.list, ctx.limits.maxModules, 0, 0);
    if (w.error) errors.push({ where: `modules: list at ${hex(head)}`, message: w.error });
    else listNodes = Buffer.from(w.nodes.buffer, w.nodes.byteOffset, w.nodes.byteLength);
    modules = readModules(ctx, L, Array.from(w.nodes), errors, 'modules');
  } catch (e) {
    errors.push(viewError('modules: list', e));
  }
  let kobjects: ModuleInfo[] = [];
  try {
    const ksetPtr = ctx.profile.symbol('module_kset');
    const kset = ctx.space.readU64(ksetPtr);
    if (!ctx.isKernelPointer(kset)) throw new Error(`module_kset ${hex(kset)} is not a kernel pointer`);
    const headAt = kset + BigInt(L.ksetList);
    // The list head's next and prev.
    const head = ctx.space.read(headAt, 16);
    const last = lastKset.get(ctx);
    if (!opts.fresh && last && listNodes && nowMs - last.atMs < KSET_REWALK_MS && nowMs >= last.atMs &&
      last.headAt === headAt && last.head.equals(head) && last.listNodes.equals(listNodes)) {
      for (const e of last.errors) errors.push(e);
      return { modules, kobjects: last.kobjects, errors };
    }
    const before = errors.length;
    // kobject.entry links the kset's members; each module kobject sits in a module_kobject.
    const w = ctx.space.walkList(headAt, L.kobjEntry, ctx.limits.maxModules * 4, 0, 0);
    if (w.error) errors.push({ where: `modules: module_kset list at ${hex(kset)}`, message: w.error });
    const mks = Array.from(w.nodes, (kobj) => kobj - BigInt(L.mkKobj));
    const { data, ok } = ctx.space.readGather(BigUint64Array.from(mks), L.mkMod, 8);
    const mods: bigint[] = [];
    for (let i = 0; i < mks.length; i++) {
      if (!ok[i]) { errors.push({ where: `modules: module_kobject ${hex(mks[i] as bigint)}`, message: 'not mapped' }); continue; }
      const mod = data.readBigUInt64LE(8 * i);
      if (mod === 0n) continue; // built-in "module": parameters only, no struct module
      if (!ctx.isKernelPointer(mod)) { errors.push({ where: `modules: module_kobject ${hex(mks[i] as bigint)}`, message: `mod ${hex(mod)} is not a kernel pointer` }); continue; }
      mods.push(mod);
    }
    kobjects = readModules(ctx, L, mods, errors, 'module kobjects');
    // Kept only when the modules list was read whole: its nodes are half of what says the kset is still current.
    if (listNodes) lastKset.set(ctx, { headAt, head, listNodes: Buffer.from(listNodes), atMs: nowMs, kobjects, errors: errors.slice(before) });
    else lastKset.delete(ctx);
  } catch (e) {
    lastKset.delete(ctx);
    errors.push(viewError('modules: kobjects', e));
  }
  return { modules, kobjects, errors };
}

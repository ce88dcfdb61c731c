// ftrace, from outside: every registered ftrace_ops (ftrace_ops_list, ended by
// ftrace_list_end) with its handler and the owner of that handler, and the
// functions its filter hash selects; and the function entry sites ftrace
// currently calls out of (the dyn_ftrace records of ftrace_pages_start whose
// ENABLED bit is set). A rootkit that hooks through ftrace registers an ops
// whose func is its own code and whose filter names the functions it hooks.
import type { FtraceHandler, FtraceOps, FtraceView, ModuleInfo, ViewError } from './types.js';
import { hex, perProfile, viewError, type KernelContext } from './kernel-context.js';
import { ownerOf } from './syscall-tables.js';

/** Most ops on ftrace_ops_list (a busy tracing setup has a few dozen). */
export const MAX_FTRACE_OPS = 512;
/** Most filter entries read from one ops' hash; the names kept per ops. */
const MAX_HASH_ENTRIES = 1 << 16;
const MAX_FILTER_NAMES = 1024;
/** FTRACE_HASH_MAX_BITS is 12; anything far above is not a hash. */
const MAX_HASH_BITS = 16;
/** Most ftrace_page blocks and records walked (a distribution kernel with modules has ~60k records). */
const MAX_PAGES = 1 << 15;
const MAX_RECORDS = 1 << 21;
/** One page block holds PAGE_SIZE << order bytes of records; the kernel caps order well below this. */
const MAX_BLOCK_BYTES = 8 << 20;
/** Most replacement functions read from one livepatch ops' func_stack. */
const MAX_LIVEPATCH_FUNCS = 64;
/** Enabled sites listed (the function tracer enables every site; enabledCount says how many). */
export const MAX_ENABLED_SITES = 4096;
/** dyn_ftrace.flags: FTRACE_FL_ENABLED, bit 31 on every kernel with dynamic ftrace (3.x .. 6.12). */
const FTRACE_FL_ENABLED = 0x8000_0000;
/** ftrace_hash.flags: FTRACE_HASH_FL_MOD (a "mod:" filter waiting for its module; the hash is then not empty). */
const FTRACE_HASH_FL_MOD = 1n;

interface Layout {
  opsSize: number;
  func: number;
  next: number;
  flags: number;
  funcHash: number;
  trampoline: number;
  trampolineSize: number;
  filterHash: number;
  hashBits: number;
  hashBuckets: number;
  hashCount: number;
  hashFlags: number;
  entryLink: number;
  entryIp: number;
  entryDirect: number | null;
  pgNext: number;
  pgRecords: number;
  pgIndex: number;
  recSize: number;
  recIp: number;
  recFlags: number;
}

function layout(ctx: KernelContext): Layout {
  const p = ctx.profile;
  const o = (s: string, m: string): number => p.offsetof(s, m);
  return {
    opsSize: p.sizeof('ftrace_ops'),
    func: o('ftrace_ops', 'func'),
    next: o('ftrace_ops', 'next'),
    flags: o('ftrace_ops', 'flags'),
    funcHash: o('ftrace_ops', 'func_hash'),
    trampoline: o('ftrace_ops', 'trampoline'),
    trampolineSize: o('ftrace_ops', 'trampoline_size'),
    filterHash: o('ftrace_ops_hash', 'filter_hash'),
    hashBits: o('ftrace_hash', 'size_bits'),
    hashBuckets: o('ftrace_hash', 'buckets'),
    hashCount: o('ftrace_hash', 'count'),
    hashFlags: o('ftrace_hash', 'flags'),
    entryLink: o('ftrace_func_entry', 'hlist'),
    entryIp: o('ftrace_func_entry', 'ip'),
    // The direct-call target (register_ftrace_direct, BPF trampolines): 5.5+.
    entryDirect: p.layouts.has('ftrace_func_entry', 'direct') ? o('ftrace_func_entry', 'direct') : null,
    pgNext: o('ftrace_page', 'next'),
    pgRecords: o('ftrace_page', 'records'),
    pgIndex: o('ftrace_page', 'index'),
    recSize: p.sizeof('dyn_ftrace'),
    recIp: o('dyn_ftrace', 'ip'),
    recFlags: o('dyn_ftrace', 'flags'),
  };
}
// Layouts never change for a profile.
const layoutOf = perProfile(layout);

/** A kernel-text address as "name" (a function's entry or its fentry site, past ENDBR) or "name+0xoff"; a module's as "0x... [module]"; else hex. */
export function siteName(ctx: KernelContext, ip: bigint, modules: readonly ModuleInfo[]): string {
  const owner = ownerOf(ctx, ip, modules);
  if (owner.kind === 'kernel') return owner.symbol.replace(/\+0x[0-8]$/, '');
  if (owner.kind === 'module') return `${hex(ip)} [${owner.module}]`;
  return hex(ip);
}

interface HashRead { names: string[]; ips: bigint[]; count: number; tracesAll: boolean; complete: boolean; direct: { site: string; target: bigint }[] }

const EMPTY = (tracesAll: boolean, complete: boolean): HashRead => ({ names: [], ips: [], count: 0, tracesAll, complete, direct: [] });

function readFilterHash(ctx: KernelContext, L: Layout, hash: bigint, modules: readonly ModuleInfo[], errors: ViewError[], where: string): HashRead {
  if (hash === 0n) return EMPTY(true, true);
  if (!ctx.isKernelPointer(hash)) { errors.push({ where, message: `filter hash ${hex(hash)} is not a kernel pointer` }); return EMPTY(false, false); }
  const hdrLen = Math.max(L.hashBits, L.hashBuckets, L.hashCount, L.hashFlags) + 8;
  const h = ctx.space.tryRead(hash, hdrLen);
  if (!h) { errors.push({ where: `${where}: ftrace_hash ${hex(hash)}`, message: 'not mapped' }); return EMPTY(false, false); }
  const bits = h.readBigUInt64LE(L.hashBits);
  const buckets = h.readBigUInt64LE(L.hashBuckets);
  const count = h.readBigUInt64LE(L.hashCount);
  const flags = h.readBigUInt64LE(L.hashFlags);
  // ftrace_hash_empty(): no entries and no pending module filter; the ops then traces every function.
  if (count === 0n) return EMPTY((flags & FTRACE_HASH_FL_MOD) === 0n, true);
  if (bits > BigInt(MAX_HASH_BITS)) { errors.push({ where: `${where}: ftrace_hash ${hex(hash)}`, message: `size_bits ${bits} is implausible` }); return EMPTY(false, false); }
  if (!ctx.isKernelPointer(buckets)) { errors.push({ where: `${where}: ftrace_hash ${hex(hash)}`, message: `buckets ${hex(buckets)} is not a kernel pointer` }); return EMPTY(false, false); }
  const n = 1 << Number(bits);
  const heads = ctx.space.tryRead(buckets, n * 8);
  if (!heads) { errors.push({ where: `${where}: ftrace_hash buckets ${hex(buckets)}`, message: 'not mapped' }); return EMPTY(false, false); }
  const names: string[] = [];
  const ips: bigint[] = [];
  let complete = true;
  const direct: { site: string; target: bigint }[] = [];
  const seen = new Set<bigint>();
  const entryLen = Math.max(L.entryLink, L.entryIp, L.entryDirect ?? 0) + 8;
  let entries = 0;
  for (let b = 0; b < n; b++) {
    let node = heads.readBigUInt64LE(b * 8);
    while (node !== 0n) {
      if (!ctx.isKernelPointer(node)) { errors.push({ where: `${where}: hash bucket ${b}`, message: `entry ${hex(node)} is not a kernel pointer` }); complete = false; break; }
      if (seen.has(node)) { errors.push({ where: `${where}: hash bucket ${b}`, message: 'cycle in the bucket' }); complete = false; break; }
      if (seen.size >= MAX_HASH_ENTRIES) { errors.push({ where, message: `more than ${MAX_HASH_ENTRIES} filter entries` }); return { names: names.sort(), ips, count: entries, tracesAll: false, complete: false, direct }; }
      seen.add(node);
      const e = ctx.space.tryRead(node - BigInt(L.entryLink), entryLen);
      if (!e) { errors.push({ where: `${where}: ftrace_func_entry ${hex(node)}`, message: 'not mapped' }); complete = false; break; }
      entries++;
      const ip = e.readBigUInt64LE(L.entryIp);
      ips.push(ip);
      const site = siteName(ctx, ip, modules);
      if (names.length < MAX_FILTER_NAMES) names.push(site);
      if (L.entryDirect !== null) {
        const d = e.readBigUInt64LE(L.entryDirect);
        if (d !== 0n && direct.length < MAX_FILTER_NAMES) direct.push({ site, target: d });
      }
      node = e.readBigUInt64LE(L.entryLink); // hlist_node.next
    }
  }
  return { names: names.sort(), ips, count: entries, tracesAll: false, complete, direct };
}

/**
 * The user's code behind a kernel handler: fprobe (struct fprobe { ops; ...; entry_handler; exit_handler })
 * and livepatch (struct klp_ops { node; func_stack; fops }, klp_func.new_func on func_stack).
 */
function userHandlers(ctx: KernelContext, ops: bigint, func: bigint, modules: readonly ModuleInfo[], errors: ViewError[]): FtraceHandler[] | null {
  const p = ctx.profile;
  const out: FtraceHandler[] = [];
  const add = (role: FtraceHandler['role'], address: bigint): void => { if (address !== 0n) out.push({ role, address, owner: ownerOf(ctx, address, modules) }); };
  const where = `ftrace: ops ${hex(ops)}`;
  if (func === p.optionalSymbol('fprobe_handler') || func === p.optionalSymbol('fprobe_kprobe_handler')) {
    if (!p.layouts.has('fprobe', 'entry_handler')) return null;
    const base = ops - BigInt(p.offsetof('fprobe', 'ops'));
    const eo = p.offsetof('fprobe', 'entry_handler');
    const xo = p.offsetof('fprobe', 'exit_handler');
    const b = ctx.space.tryRead(base, Math.max(eo, xo) + 8);
    if (!b) { errors.push({ where: `${where}: fprobe ${hex(base)}`, message: 'not mapped' }); return out; }
    add('fprobe-entry', b.readBigUInt64LE(eo));
    add('fprobe-exit', b.readBigUInt64LE(xo));
    return out;
  }
  if (func === p.optionalSymbol('klp_ftrace_handler')) {
    if (!p.layouts.has('klp_ops', 'func_stack') || !p.layouts.has('klp_func', 'stack_node')) return null;
    const base = ops - BigInt(p.offsetof('klp_ops', 'fops'));
    const link = p.offsetof('klp_func', 'stack_node');
    const nf = p.offsetof('klp_func', 'new_func');
    const w = ctx.space.walkList(base + BigInt(p.offsetof('klp_ops', 'func_stack')), link, MAX_LIVEPATCH_FUNCS, nf, 8);
    if (w.error) errors.push({ where: `${where}: livepatch func_stack`, message: w.error });
    for (let i = 0; i < w.nodes.length; i++) add('livepatch', w.data.readBigUInt64LE(i * 8));
    return out;
  }
  return null;
}

/** Every ops on ftrace_ops_list, bounded and cycle-checked. */
function readOps(ctx: KernelContext, L: Layout, modules: readonly ModuleInfo[], errors: ViewError[], claimed: { ips: Set<bigint>; complete: boolean }): FtraceOps[] {
  const head = ctx.profile.symbol('ftrace_ops_list');
  const end = ctx.profile.symbol('ftrace_list_end');
  const out: FtraceOps[] = [];
  const seen = new Set<bigint>();
  let p = ctx.space.readU64(head);
  while (p !== end) {
    const where = `ftrace: ops ${hex(p)}`;
    if (!ctx.isKernelPointer(p)) { errors.push({ where, message: 'not a kernel pointer (the list must end at ftrace_list_end)' }); break; }
    if (seen.has(p)) { errors.push({ where, message: 'cycle in ftrace_ops_list' }); break; }
    if (seen.size >= MAX_FTRACE_OPS) { errors.push({ where: 'ftrace: ftrace_ops_list', message: `more than ${MAX_FTRACE_OPS} ops` }); break; }
    seen.add(p);
    const b = ctx.space.tryRead(p, L.opsSize);
    if (!b) { errors.push({ where, message: 'not mapped' }); break; }
    const func = b.readBigUInt64LE(L.func);
    // A direct-call ops gets its func cleared once unregistered: one caught in between calls nobody; skip it.
    if (func === 0n) { p = b.readBigUInt64LE(L.next); continue; }
    // Every registered ops has a handler in the kernel half; anything else is not an ops (freed, torn or forged).
    if (!ctx.isKernelPointer(func, 1n)) { errors.push({ where, message: `func ${hex(func)} is not a kernel address` }); break; }
    const fh = b.readBigUInt64LE(L.funcHash);
    let filter: HashRead = EMPTY(false, false);
    if (fh === 0n) filter = EMPTY(true, true);
    else if (!ctx.isKernelPointer(fh)) errors.push({ where, message: `func_hash ${hex(fh)} is not a kernel pointer` });
    else {
      const fp = ctx.space.tryRead(fh + BigInt(L.filterHash), 8);
      if (!fp) errors.push({ where: `${where}: func_hash ${hex(fh)}`, message: 'not mapped' });
      else filter = readFilterHash(ctx, L, fp.readBigUInt64LE(0), modules, errors, where);
    }
    const users = userHandlers(ctx, p, func, modules, errors);
    const ops: FtraceOps = {
      address: p,
      func,
      funcOwner: ownerOf(ctx, func, modules),
      trampoline: b.readBigUInt64LE(L.trampoline),
      trampolineSize: Number(b.readBigUInt64LE(L.trampolineSize) & 0xffff_ffffn),
      flags: Number(b.readBigUInt64LE(L.flags) & 0xffff_ffffn),
      filter: filter.names,
      tracesAll: filter.tracesAll,
      filterCount: filter.count,
      direct: filter.direct.map((d) => ({ site: d.site, target: d.target, owner: ownerOf(ctx, d.target, modules) })),
      ...(users ? { handlers: users } : {}),
    };

    out.push(ops);
    if (filter.tracesAll || !filter.complete) claimed.complete = false;
    for (const ip of filter.ips) if (claimed.ips.size < MAX_HASH_ENTRIES * 4) claimed.ips.add(ip); else claimed.complete = false;
    p = b.readBigUInt64LE(L.next);
  }
  return out;
}

/** The dyn_ftrace records whose call is live: their ips (bounded) and how many there are. */
function readEnabledSites(ctx: KernelContext, L: Layout, errors: ViewError[]): { sites: bigint[]; count: number; records: number } {
  const sites: bigint[] = [];
  let count = 0;
  let records = 0;
  const start = ctx.profile.optionalSymbol('ftrace_pages_start');
  if (start === undefined) { errors.push({ where: 'ftrace: records', message: 'no ftrace_pages_start symbol' }); return { sites, count, records }; }
  const seen = new Set<bigint>();
  const pgLen = Math.max(L.pgNext, L.pgRecords, L.pgIndex + 4) + 8;
  let pg = ctx.space.readU64(start);
  while (pg !== 0n) {
    const where = `ftrace: ftrace_page ${hex(pg)}`;
    if (!ctx.isKernelPointer(pg)) { errors.push({ where, message: 'not a kernel pointer' }); break; }
    if (seen.has(pg)) { errors.push({ where, message: 'cycle in the ftrace pages' }); break; }
    if (seen.size >= MAX_PAGES) { errors.push({ where: 'ftrace: records', message: `more than ${MAX_PAGES} ftrace pages` }); break; }
    seen.add(pg);
    const b = ctx.space.tryRead(pg, pgLen);
    if (!b) { errors.push({ where, message: 'not mapped' }); break; }
    const recs = b.readBigUInt64LE(L.pgRecords);
    const index = b.readInt32LE(L.pgIndex);
    if (index < 0 || index * L.recSize > MAX_BLOCK_BYTES) { errors.push({ where, message: `index ${index} is implausible` }); break; }
    if (records + index > MAX_RECORDS) { errors.push({ where: 'ftrace: records', message: `more than ${MAX_RECORDS} records` }); break; }
    if (index > 0) {
      if (!ctx.isKernelPointer(recs)) { errors.push({ where, message: `records ${hex(recs)} is not a kernel pointer` }); break; }
      const r = ctx.space.tryRead(recs, index * L.recSize);
      if (!r) { errors.push({ where: `${where}: records ${hex(recs)}`, message: 'not mapped' }); break; }
      records += index;
      // flags is an unsigned long; the bits ftrace defines live in its low 32. Tens of thousands of
      // records: read through a typed-array view (little-endian, as the guest) rather than a call per record.
      const words = (L.recSize | L.recFlags) % 4 === 0 && r.byteOffset % 4 === 0 ? new Uint32Array(r.buffer, r.byteOffset, r.length >>> 2) : null;
      for (let i = 0, at = 0; i < index; i++, at += L.recSize) {
        const flags = words ? (words[(at + L.recFlags) >>> 2] as number) : r.readUInt32LE(at + L.recFlags);
        if ((flags & FTRACE_FL_ENABLED) === 0) continue;
        count++;
        if (sites.length < MAX_ENABLED_SITES) sites.push(r.readBigUInt64LE(at + L.recIp));
      }
    }
    pg = b.readBigUInt64LE(L.pgNext);
  }
  return { sites, count, records };
}

export interface FtraceReadOptions {
  /** Walk the dyn_ftrace records for enabledSites (default true; the costly part, see docs/PERFORMANCE.md). */
  readonly records?: boolean;
}

/** The ftrace view: ops and, unless switched off, the live call sites. Never throws for what the guest wrote. */
export function readFtrace(ctx: KernelContext, modules: readonly ModuleInfo[], opts: FtraceReadOptions = {}): FtraceView {
  const errors: ViewError[] = [];
  let L: Layout;
  try {
    L = layoutOf(ctx);
  } catch (e) {
    return { ops: [], enabledSites: [], errors: [viewError('ftrace: profile', e)] };
  }
  // A kernel built without the function tracer has nothing to walk (and nothing to hook through).
  if (ctx.profile.optionalSymbol('ftrace_ops_list') === undefined) return { ops: [], enabledSites: [], errors };
  let ops: FtraceOps[] = [];
  const claimed = { ips: new Set<bigint>(), complete: true };
  try {
    ops = readOps(ctx, L, modules, errors, claimed);
  } catch (e) {
    claimed.complete = false;
    errors.push(viewError('ftrace: ftrace_ops_list', e));
  }
  if (opts.records === false) return { ops, enabledSites: [], errors };
  let sites = { sites: [] as bigint[], count: 0, records: 0 };
  try {
    sites = readEnabledSites(ctx, L, errors);
  } catch (e) {
    errors.push(viewError('ftrace: records', e));
  }
  // Sites whose call is live but that no registered ops selects: an ops taken off the list after it was
  // installed (its trampoline still runs). Judged only when every filter was read whole and none traces all.
  const unclaimed = claimed.complete && errors.length === 0 ? sites.sites.filter((ip) => !claimed.ips.has(ip)).map((ip) => siteName(ctx, ip, modules)) : null;
  return { ops, enabledSites: sites.sites, enabledCount: sites.count, records: sites.records, ...(unclaimed !== null ? { unclaimedSites: unclaimed } : {}), errors };
}

/** This scan's ops with the live call sites of an earlier scan that walked the records (a scanner walking them on its own cadence). */
export function withRecordsOf(now: FtraceView, last: FtraceView): FtraceView {
  const { unclaimedSites, enabledCount, records } = last;
  return {
    ...now, enabledSites: last.enabledSites,
    ...(enabledCount !== undefined ? { enabledCount } : {}), ...(records !== undefined ? { records } : {}), ...(unclaimedSites !== undefined ? { unclaimedSites } : {}),
  };
}

/**
 * Unclaimed sites seen by two record walks in a row, on the newer walk's view. Unregistering an ops takes
 * it off the list before its sites are switched back to nops: a walk that lands in that window (a running
 * guest, not paused) sees them unclaimed once. A hook whose ops was unlinked stays unclaimed walk after walk.
 */
export function confirmUnclaimed(now: FtraceView, previous: FtraceView | undefined): FtraceView {
  if (now.unclaimedSites === undefined) return now;
  const before = new Set(previous?.unclaimedSites ?? []);
  return { ...now, unclaimedSites: now.unclaimedSites.filter((x) => before.has(x)) };
}

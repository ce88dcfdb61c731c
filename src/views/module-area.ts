// The module area carved through the page tables: every executable mapping between the kernel
// image and MODULES_END, merged into runs, each given the owner the kernel itself records
// (a module's memory, an ftrace trampoline, a kprobe instruction page, a BPF image or pack);
// and struct module candidates in mapped memory no known module owns, which is where a module
// that erased itself from the module list and from /sys/module still lives.
//
// The range. x86-64 places modules at MODULES_VADDR = __START_KERNEL_map + KERNEL_IMAGE_SIZE
// up to MODULES_END = 0xffffffffff000000 (fixed since 4.17, either paging depth). KERNEL_IMAGE_SIZE
// is 1 GiB with CONFIG_RANDOMIZE_BASE (every distribution kernel) and 512 MiB without, which the
// kernel does not record anywhere we can read; so the walk starts at the lower of the two
// (0xffffffffa0000000) or at the image's end rounded to 2 MiB, whichever is higher. Between the
// image and MODULES_VADDR nothing is mapped after boot (cleanup_highmap clears those PMDs), so the
// wider range only costs a few empty directory entries — and code placed there is unowned too.
import type { CodeRegion, KernelSnapshot, ModuleAreaView, ModuleInfo, ModuleListView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';
import { readModuleList } from './modules.js';

export const MODULES_END = 0xffff_ffff_ff00_0000n;
const MODULES_FLOOR = 0xffff_ffff_a000_0000n;
const PAGE = 4096n;
const MODULE_NAME_LEN = 56;
/** enum mod_mem_type (6.4+): MOD_TEXT, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT, MOD_INIT_TEXT, MOD_INIT_DATA, MOD_INIT_RODATA. */
const MOD_MEM_TYPES = 7;
const MOD_DATA = 1;
/** enum module_state: LIVE, COMING, GOING, UNFORMED. */
const MAX_MODULE_STATE = 3;
const LIST_POISON1 = 0xdead_0000_0000_0100n;
const LIST_POISON2 = 0xdead_0000_0000_0122n;
/** A module allocation larger than this is no module (the biggest in-tree ones are a few MiB). */
const MAX_MODULE_MEM = 256n << 20n;

export interface ModuleAreaLimits {
  /** Most merged runs (mapped and executable) kept; beyond, an error. */
  readonly maxRuns: number;
  /** Most bytes of unowned, mapped, non-executable memory searched for struct module. */
  readonly maxCarveBytes: number;
  /** Most entries followed in each owner list (ftrace ops, kprobe pages, BPF symbols and packs, prog_idr). */
  readonly maxOwners: number;
}

export const DEFAULT_MODULE_AREA_LIMITS: ModuleAreaLimits = { maxRuns: 1 << 16, maxCarveBytes: 16 << 20, maxOwners: 1 << 14 };

/** A mapped stretch of the range: contiguous pages with the same executability. */
export interface MappedRun {
  start: bigint;
  end: bigint;
  exec: boolean;
  writable: boolean;
}

/** The module range this kernel's page tables are walked over, and how it was derived. */
export function moduleRange(ctx: KernelContext): { start: bigint; end: bigint; how: string } {
  const end = ctx.profile.optionalSymbol('_end');
  const imageEnd = end !== undefined && end < MODULES_END ? (end + (2n << 20n) - 1n) & ~((2n << 20n) - 1n) : MODULES_FLOOR;
  const start = imageEnd > MODULES_FLOOR ? imageEnd : MODULES_FLOOR;
  return { start, end: MODULES_END, how: `${hex(start)}..${hex(MODULES_END)} (max(__START_KERNEL_map + 512 MiB, _end rounded to 2 MiB) .. MODULES_END)` };
}

const ADDR_MASK = 0x000f_ffff_ffff_f000n;

/**
 * The mapped runs of [start, end) by a direct walk of the page tables from the space's root.
 * Bounded by the range itself: each directory page is read at most once per slot of the range
 * (≤ 2 page directories and ≤ 512 page tables per GiB), so hostile entries cannot loop.
 */
export function walkMapped(ctx: KernelContext, start: bigint, end: bigint, maxRuns: number, errors: ViewError[]): MappedRun[] {
  const runs: MappedRun[] = [];
  const space = ctx.space;
  let full = false;
  const emit = (va: bigint, size: bigint, exec: boolean, writable: boolean): void => {
    const last = runs[runs.length - 1];
    if (last && last.end === va && last.exec === exec && last.writable === writable) { last.end = va + size; return; }
    if (runs.length >= maxRuns) {
      if (!full) errors.push({ where: 'module area', message: `more than ${maxRuns} mapped runs` });
      full = true;
      return;
    }
    runs.push({ start: va, end: va + size, exec, writable });
  };
  // Level shifts from the top: 48 (PML5), 39 (PML4), 30 (PDPT), 21 (PD), 12 (PT).
  const shifts = ctx.space.levels === 5 ? [48n, 39n, 30n, 21n, 12n] : [39n, 30n, 21n, 12n];
  const names = ctx.space.levels === 5 ? ['PML5', 'PML4', 'PDPT', 'PD', 'PT'] : ['PML4', 'PDPT', 'PD', 'PT'];
  const walk = (pa: bigint, level: number, lo: bigint, hi: bigint, nx: boolean, rw: boolean): void => {
    const shift = shifts[level] as bigint;
    let buf: Buffer;
    try {
      buf = space.readPhys(pa, 4096);
    } catch (e) {
      errors.push(viewError(`module area: ${names[level] ?? 'page'} table at ${hex(pa)}`, e));
      return;
    }
    const span = 1n << shift;
    const base = lo & ~((span << 9n) - 1n); // VA of this table's entry 0
    const first = Number((lo >> shift) & 511n);
    const last = Number(((hi - 1n) >> shift) & 511n);
    for (let i = first; i <= last && !full; i++) {
      // Flags from the 32-bit halves: only present entries cost a BigInt.
      const low = buf.readUInt32LE(8 * i);
      if ((low & 1) === 0) continue;
      const high = buf.readUInt32LE(8 * i + 4);
      const va = base + (BigInt(i) << shift);
      const x = nx || (high & 0x8000_0000) !== 0;
      const w = rw && (low & 2) !== 0;
      const a = va < lo ? lo : va;
      const b = va + span > hi ? hi : va + span;
      if (shift === 12n || ((low & 0x80) !== 0 && (shift === 21n || shift === 30n))) {
        emit(a, b - a, !x, w);
        continue;
      }
      walk(((BigInt(high & 0x000f_ffff) << 32n) | BigInt(low >>> 0)) & ADDR_MASK, level + 1, a, b, x, w);
    }
  };
  walk(space.root, 0, start, end, false, true);
  return runs;
}

interface Owned { start: bigint; end: bigint; owner: CodeRegion['owner']; name: string | null }

const pageDown = (a: bigint): bigint => a & ~(PAGE - 1n);
const pageUp = (a: bigint): bigint => (a + PAGE - 1n) & ~(PAGE - 1n);

function cString(buf: Buffer, at: number, max: number): string {
  const s = buf.subarray(at, at + max);
  const nul = s.indexOf(0);
  return s.toString('latin1', 0, nul < 0 ? s.length : nul);
}

const isModuleName = (s: string): boolean => /^[A-Za-z0-9_-]{1,55}$/.test(s);

/** Where a struct module keeps its memory, per version: mem[] (6.4+) or core_layout/init_layout (≤ 6.3). */
interface ModMem {
  state: number;
  list: number;
  name: number;
  /** [offset of base, offset of size] per region of the module's memory. */
  regions: [number, number][];
  /** Index in `regions` of the region that holds struct module itself (MOD_DATA, or the core layout). */
  home: number;
  /** Index of the text region (for ModuleInfo.coreBase/coreSize). */
  text: number;
  span: number;
}

function modMem(ctx: KernelContext): ModMem {
  const p = ctx.profile;
  const regions: [number, number][] = [];
  if (p.layouts.has('module', 'mem')) {
    const mem = p.offsetof('module', 'mem');
    const stride = p.sizeof('module_memory');
    const b = p.offsetof('module_memory', 'base');
    const s = p.offsetof('module_memory', 'size');
    for (let i = 0; i < MOD_MEM_TYPES; i++) regions.push([mem + i * stride + b, mem + i * stride + s]);
  } else {
    for (const l of ['core_layout', 'init_layout']) {
      const o = p.offsetof('module', l);
      regions.push([o + p.offsetof('module_layout', 'base'), o + p.offsetof('module_layout', 'size')]);
    }
  }
  const state = p.offsetof('module', 'state');
  const list = p.offsetof('module', 'list');
  const name = p.offsetof('module', 'name');
  const span = Math.max(state + 4, list + 16, name + MODULE_NAME_LEN, ...regions.map(([b, s]) => Math.max(b + 8, s + 4)));
  return { state, list, name, regions, home: regions.length === 2 ? 0 : MOD_DATA, text: 0, span };
}

/** Each known module's memory regions (page-rounded), owned by that module. */
function moduleOwners(ctx: KernelContext, M: ModMem, mods: readonly ModuleInfo[], errors: ViewError[]): Owned[] {
  const out: Owned[] = [];
  if (mods.length === 0) return out;
  const { data, ok } = ctx.space.readGather(BigUint64Array.from(mods.map((m) => m.address)), 0, M.span);
  mods.forEach((m, i) => {
    if (!ok[i]) { errors.push({ where: `module area: module ${m.name} at ${hex(m.address)}`, message: 'not mapped' }); return; }
    const rec = data.subarray(i * M.span, (i + 1) * M.span);
    for (const [b, s] of M.regions) {
      const base = rec.readBigUInt64LE(b);
      const size = BigInt(rec.readUInt32LE(s));
      if (base === 0n || size === 0n || size > MAX_MODULE_MEM) continue;
      out.push({ start: pageDown(base), end: pageUp(base + size), owner: 'module', name: m.name });
    }
  });
  return out;
}

/** ftrace_ops_list: each ops' trampoline (page-rounded), and its handler as a reference. */
function ftraceOwners(ctx: KernelContext, limits: ModuleAreaLimits, owners: Owned[], refs: { from: string; target: bigint }[], errors: ViewError[]): void {
  const p = ctx.profile;
  const headSym = p.optionalSymbol('ftrace_ops_list');
  const endSym = p.optionalSymbol('ftrace_list_end');
  if (headSym === undefined || endSym === undefined) return;
  try {
    const next = p.offsetof('ftrace_ops', 'next');
    const func = p.offsetof('ftrace_ops', 'func');
    const tramp = p.offsetof('ftrace_ops', 'trampoline');
    const tsize = p.offsetof('ftrace_ops', 'trampoline_size');
    const span = Math.max(next, func, tramp) + 8;
    const seen = new Set<bigint>();
    let ops = ctx.space.readU64(headSym);
    while (ops !== endSym && ops !== 0n) {
      if (!ctx.isKernelPointer(ops)) { errors.push({ where: `module area: ftrace ops ${hex(ops)}`, message: 'not a kernel pointer' }); return; }
      if (seen.has(ops)) { errors.push({ where: `module area: ftrace ops ${hex(ops)}`, message: 'cycle in ftrace_ops_list' }); return; }
      if (seen.size >= limits.maxOwners) { errors.push({ where: 'module area: ftrace_ops_list', message: `more than ${limits.maxOwners} ops` }); return; }
      seen.add(ops);
      const rec = ctx.space.tryRead(ops, Math.max(span, tsize + 4));
      if (!rec) { errors.push({ where: `module area: ftrace ops ${hex(ops)}`, message: 'not mapped' }); return; }
      const t = rec.readBigUInt64LE(tramp);
      const size = BigInt(rec.readUInt32LE(tsize));
      if (t !== 0n && size > 0n && size < MAX_MODULE_MEM) owners.push({ start: pageDown(t), end: pageUp(t + size), owner: 'ftrace-trampoline', name: null });
      refs.push({ from: `ftrace ops ${hex(ops)} func`, target: rec.readBigUInt64LE(func) });
      ops = rec.readBigUInt64LE(next);
    }
  } catch (e) {
    errors.push(viewError('module area: ftrace_ops_list', e));
  }
}

/** kprobe_insn_slots / kprobe_optinsn_slots: one executable page per kprobe_insn_page. */
function kprobeOwners(ctx: KernelContext, limits: ModuleAreaLimits, owners: Owned[], errors: ViewError[]): void {
  const p = ctx.profile;
  for (const sym of ['kprobe_insn_slots', 'kprobe_optinsn_slots']) {
    const cache = p.optionalSymbol(sym);
    if (cache === undefined) continue;
    try {
      const pages = p.offsetof('kprobe_insn_cache', 'pages');
      const link = p.layouts.has('kprobe_insn_page', 'list') ? p.offsetof('kprobe_insn_page', 'list') : 0;
      const insns = p.layouts.has('kprobe_insn_page', 'insns') ? p.offsetof('kprobe_insn_page', 'insns') : 16;
      const w = ctx.space.walkList(cache + BigInt(pages), link, limits.maxOwners, insns, 8);
      if (w.error) errors.push({ where: `module area: ${sym} pages`, message: w.error });
      for (let i = 0; i < w.nodes.length; i++) {
        const page = w.data.readBigUInt64LE(8 * i);
        if (ctx.isKernelPointer(page)) owners.push({ start: pageDown(page), end: pageDown(page) + PAGE, owner: 'kprobe-slots', name: sym });
      }
    } catch (e) {
      errors.push(viewError(`module area: ${sym}`, e));
    }
  }
}

/** BPF: every image with a kernel symbol (programs, trampolines, dispatchers), the program packs, and prog_idr's JIT images. */
function bpfOwners(ctx: KernelContext, limits: ModuleAreaLimits, owners: Owned[], errors: ViewError[], snap: Partial<KernelSnapshot>): void {
  const p = ctx.profile;
  const ksyms = p.optionalSymbol('bpf_kallsyms');
  if (ksyms !== undefined) {
    try {
      const lnode = p.offsetof('bpf_ksym', 'lnode');
      const start = p.offsetof('bpf_ksym', 'start');
      const end = p.offsetof('bpf_ksym', 'end');
      const name = p.offsetof('bpf_ksym', 'name');
      const w = ctx.space.walkList(ksyms, lnode, limits.maxOwners, 0, Math.max(start, end) + 8);
      if (w.error) errors.push({ where: 'module area: bpf_kallsyms', message: w.error });
      const stride = Math.max(start, end) + 8;
      const names = ctx.space.readGather(w.nodes, name, 64);
      for (let i = 0; i < w.nodes.length; i++) {
        const s = w.data.readBigUInt64LE(i * stride + start);
        const e = w.data.readBigUInt64LE(i * stride + end);
        if (!ctx.isKernelPointer(s, 1n) || e <= s || e - s > MAX_MODULE_MEM) continue;
        const n = names.ok[i] ? cString(names.data, i * 64, 64) : '';
        owners.push({ start: pageDown(s), end: pageUp(e), owner: 'bpf-jit', name: /^[\x20-\x7e]{1,64}$/.test(n) ? n : null });
      }
    } catch (e) {
      errors.push(viewError('module area: bpf_kallsyms', e));
    }
  }
  const packs = p.optionalSymbol('pack_list');
  if (packs !== undefined) {
    try {
      // BPF_PROG_PACK_SIZE: a variable on some 6.x (bpf_prog_pack_size), else 2 MiB per possible node.
      let size = 2n << 20n;
      const sizeSym = p.optionalSymbol('bpf_prog_pack_size');
      const nodes = p.optionalSymbol('nr_node_ids');
      if (sizeSym !== undefined) {
        const v = ctx.space.readU64(sizeSym);
        if (v >= PAGE && v <= MAX_MODULE_MEM) size = v;
      } else if (nodes !== undefined) {
        const n = ctx.space.readU32(nodes);
        if (n >= 1 && n <= 1024) size *= BigInt(n);
      }
      const ptr = p.layouts.has('bpf_prog_pack', 'ptr') ? p.offsetof('bpf_prog_pack', 'ptr') : 16;
      const w = ctx.space.walkList(packs, 0, limits.maxOwners, ptr, 8);
      if (w.error) errors.push({ where: 'module area: bpf pack_list', message: w.error });
      for (let i = 0; i < w.nodes.length; i++) {
        const a = w.data.readBigUInt64LE(8 * i);
        if (ctx.isKernelPointer(a)) owners.push({ start: pageDown(a), end: pageUp(a + size), owner: 'bpf-jit', name: 'bpf_prog_pack' });
      }
    } catch (e) {
      errors.push(viewError('module area: bpf pack_list', e));
    }
  }
  // Programs by id: covers JIT images without a kernel symbol (net.core.bpf_jit_kallsyms=0).
  for (const prog of snap.bpf?.programs ?? []) {
    if (prog.jited) owners.push({ start: pageDown(prog.jited.start), end: pageUp(prog.jited.start + BigInt(prog.jited.size)), owner: 'bpf-jit', name: prog.name || null });
  }
  const idr = p.optionalSymbol('prog_idr');
  if (idr === undefined || snap.bpf) return;
  try {
    const head = ctx.space.readU64(idr + BigInt(p.offsetof('idr', 'idr_rt') + p.offsetof('xarray', 'xa_head')));
    const xa = ctx.space.walkXArray(head, p.offsetof('xa_node', 'shift'), p.offsetof('xa_node', 'slots'),
      { maxDepth: 12, maxNodes: limits.maxOwners, maxEntries: limits.maxOwners }, ctx.kernelHalf, 'module area: prog_idr');
    for (const m of xa.errors) errors.push({ where: 'module area: prog_idr', message: m });
    const func = p.offsetof('bpf_prog', 'bpf_func');
    const len = p.offsetof('bpf_prog', 'jited_len');
    const progs = Array.from(xa.entries).filter((a) => ctx.isKernelPointer(a));
    const f = ctx.space.readGather(BigUint64Array.from(progs), func, 8);
    const l = ctx.space.readGather(BigUint64Array.from(progs), len, 4);
    for (let i = 0; i < progs.length; i++) {
      if (!f.ok[i] || !l.ok[i]) continue;
      const a = f.data.readBigUInt64LE(8 * i);
      const n = BigInt(l.data.readUInt32LE(4 * i));
      if (ctx.isKernelPointer(a, 1n) && n > 0n && n < MAX_MODULE_MEM) owners.push({ start: pageDown(a), end: pageUp(a + n), owner: 'bpf-jit', name: null });
    }
  } catch (e) {
    errors.push(viewError('module area: prog_idr', e));
  }
}

/**
 * Trampolines of ftrace ops that are no longer on ftrace_ops_list. x86 gives a static (non-dynamic)
 * ops one trampoline and keeps it across unregister (FTRACE_OPS_FL_ALLOC_TRAMP: kprobe_ftrace_ops
 * after the last ftrace-based kprobe is gone, for one), and create_trampoline stores the ops
 * pointer right after the code (at trampoline_size - 8). A page is such a trampoline when a
 * pointer there leads to an ops in the kernel image or a known module whose trampoline is this
 * page and whose size puts the pointer where it is.
 */
function orphanTrampolines(ctx: KernelContext, parts: readonly { start: bigint; end: bigint }[], homes: readonly Owned[], errors: ViewError[]): Owned[] {
  const p = ctx.profile;
  const text = p.optionalSymbol('_text');
  const end = p.optionalSymbol('_end');
  let tramp: number, tsize: number;
  try {
    tramp = p.offsetof('ftrace_ops', 'trampoline');
    tsize = p.offsetof('ftrace_ops', 'trampoline_size');
  } catch {
    return [];
  }
  if (text === undefined || end === undefined) return [];
  const home = (a: bigint): boolean => (a >= text && a < end) || homes.some((o) => o.owner === 'module' && a >= o.start && a < o.end);
  const out: Owned[] = [];
  let pages = 0;
  for (const part of parts) {
    for (let page = pageDown(part.start); page < part.end; page += PAGE) {
      if (++pages > 256) { errors.push({ where: 'module area: trampolines', message: 'more than 256 unowned executable pages; the rest not matched to ftrace ops' }); return out; }
      const buf = ctx.space.tryRead(page, 4096);
      if (!buf) continue;
      for (let o = 1; o + 8 <= 4096; o++) {
        // cheap test: the top 32 bits of a kernel-image / module address are 0xffffffff
        if (buf.readUInt32LE(o + 4) !== 0xffff_ffff) continue;
        const ops = buf.readBigUInt64LE(o);
        if ((ops & 7n) !== 0n || !home(ops)) continue;
        const rec = ctx.space.tryRead(ops, Math.max(tramp + 8, tsize + 4));
        if (!rec || rec.readBigUInt64LE(tramp) !== page) continue;
        const size = rec.readUInt32LE(tsize);
        // trampoline_size counts code + RET_SIZE + the pointer itself (5.10-6.12); allow it without the pointer too.
        if (o + 8 !== size && (o - size < 1 || o - size > 2)) continue;
        const sym = p.symbols.lookup(ops);
        out.push({ start: page, end: pageUp(page + BigInt(o + 8)), owner: 'ftrace-trampoline', name: sym && sym.offset === 0n ? sym.name : hex(ops) });
        break;
      }
    }
  }
  return out;
}

/**
 * Classic BPF filters (socket filters, seccomp) JIT-compiled on kernels without program packs
 * (< 5.19): the image is in no registry these views read (no id in prog_idr, kept out of
 * bpf_kallsyms). Their allocation has a shape: struct bpf_binary_header's page count at the first
 * page, int3 filling the random hole, the JIT prologue (a 5-byte nop, push rbp, mov rbp,rsp) and
 * int3 again to the end. Only such exact frames are attributed (a weaker owner than a record:
 * code wrapped in the same frame would pass).
 */
function classicBpfFrames(ctx: KernelContext, parts: readonly { start: bigint; end: bigint }[]): Owned[] {
  if (ctx.profile.optionalSymbol('pack_list') !== undefined) return [];
  const out: Owned[] = [];
  for (const part of parts.slice(0, 256)) {
    const head = ctx.space.tryRead(part.start, 4);
    if (!head || (part.start & (PAGE - 1n)) !== 0n) continue;
    const pages = head.readUInt32LE(0);
    if (pages < 1 || pages > 64 || part.start + BigInt(pages) * PAGE > part.end) continue;
    const buf = ctx.space.tryRead(part.start, pages * 4096);
    if (!buf || !isClassicBpfFrame(buf)) continue;
    out.push({ start: part.start, end: part.start + BigInt(pages) * PAGE, owner: 'bpf-jit', name: 'classic BPF filter' });
  }
  return out;
}

/**
 * `buf` (a whole allocation, from its first page) is a classic BPF JIT frame: a page count that
 * matches its size, int3 from after it up to the image, the image 4-byte aligned (the header's
 * image[] is 4- or 8-aligned and the JIT picks a random 4-aligned offset in the hole, which may be
 * 0: the hole before the image can be as short as the header's padding), the JIT prologue, and
 * code after it.
 */
export function isClassicBpfFrame(buf: Buffer): boolean {
  if (buf.length < 4096 || buf.length % 4096 !== 0 || buf.readUInt32LE(0) !== buf.length / 4096) return false;
  let i = 4;
  while (i < buf.length && buf[i] === 0xcc) i++;
  let j = buf.length - 1;
  while (j > i && buf[j] === 0xcc) j--;
  if (i % 4 !== 0 || i + 9 > j) return false;
  const nop5 = buf.subarray(i, i + 5).toString('hex');
  return (nop5 === '0f1f440000' || nop5 === '6666666690') && buf.subarray(i + 5, i + 9).toString('hex') === '554889e5';
}

/** Splits [s, e) by the owners overlapping it (sorted by start); the gaps are 'unknown'. */
function attribute(s: bigint, e: bigint, owners: readonly Owned[], out: CodeRegion[]): void {
  let at = s;
  for (const o of owners) {
    if (o.end <= at || o.start >= e) continue;
    if (o.start > at) out.push({ start: at, size: Number(o.start - at), owner: 'unknown', name: null });
    const b = o.start > at ? o.start : at;
    const c = o.end < e ? o.end : e;
    const last = out[out.length - 1];
    if (last && last.owner === o.owner && last.name === o.name && last.start + BigInt(last.size) === b) out[out.length - 1] = { ...last, size: Number(c - last.start) };
    else out.push({ start: b, size: Number(c - b), owner: o.owner, name: o.name });
    at = c;
    if (at >= e) return;
  }
  if (at < e) out.push({ start: at, size: Number(e - at), owner: 'unknown', name: null });
}

/** The parts of the runs no owner covers. */
function uncovered(runs: readonly MappedRun[], owners: readonly Owned[]): { start: bigint; end: bigint }[] {
  const out: { start: bigint; end: bigint }[] = [];
  for (const r of runs) {
    const parts: CodeRegion[] = [];
    attribute(r.start, r.end, owners, parts);
    for (const x of parts) if (x.owner === 'unknown') out.push({ start: x.start, end: x.start + BigInt(x.size) });
  }
  return out;
}

/**
 * struct module candidates in [start, end) (memory no known module owns). struct module is
 * ____cacheline_aligned and sits in its module's own writable data (.gnu.linkonce.this_module),
 * so a candidate is a 64-byte aligned record whose state is a module state, whose list links are
 * kernel pointers or list_del's poison, whose name is a module name, and whose home region
 * (MOD_DATA, or the core layout) contains the record itself — the self-consistency that random
 * bytes do not have.
 */
function carveModules(ctx: KernelContext, M: ModMem, areas: readonly { start: bigint; end: bigint }[], budget: number, errors: ViewError[]): { found: ModuleInfo[]; regions: Owned[] } {
  const found: ModuleInfo[] = [];
  const regions: Owned[] = [];
  let spent = 0;
  const okLink = (v: bigint, self: bigint): boolean => v === self || v === LIST_POISON1 || v === LIST_POISON2 || ctx.isKernelPointer(v);
  for (const a of areas) {
    for (let page = pageDown(a.start); page < a.end; page += PAGE) {
      if (spent >= budget) { errors.push({ where: 'module area: carving', message: `more than ${budget} bytes of unowned memory; the rest not searched` }); return { found, regions }; }
      spent += 4096;
      const buf = ctx.space.tryRead(page, 4096);
      if (!buf) continue;
      for (let off = 0; off < 4096; off += 64) {
        if (off + M.state + 4 > 4096 || off + M.name + MODULE_NAME_LEN > 4096) break;
        if (buf.readUInt32LE(off + M.state) > MAX_MODULE_STATE) continue;
        const c0 = buf[off + M.name] ?? 0;
        // cheap first test on the name's first byte: [A-Za-z0-9_-]
        if (!((c0 >= 0x30 && c0 <= 0x39) || (c0 >= 0x41 && c0 <= 0x5a) || (c0 >= 0x61 && c0 <= 0x7a) || c0 === 0x5f || c0 === 0x2d)) continue;
        const name = cString(buf, off + M.name, MODULE_NAME_LEN);
        if (!isModuleName(name) || buf.indexOf(0, off + M.name) >= off + M.name + MODULE_NAME_LEN) continue;
        const addr = page + BigInt(off);
        const rec = off + M.span <= 4096 ? buf.subarray(off, off + M.span) : ctx.space.tryRead(addr, M.span);
        if (!rec) continue;
        const self = addr + BigInt(M.list);
        if (!okLink(rec.readBigUInt64LE(M.list), self) || !okLink(rec.readBigUInt64LE(M.list + 8), self)) continue;
        const [hb, hs] = M.regions[M.home] as [number, number];
        const homeBase = rec.readBigUInt64LE(hb);
        const homeSize = BigInt(rec.readUInt32LE(hs));
        if (homeSize === 0n || homeSize > MAX_MODULE_MEM || addr < homeBase || addr + BigInt(M.span) > homeBase + homeSize) continue;
        const [tb, ts] = M.regions[M.text] as [number, number];
        const textBase = rec.readBigUInt64LE(tb);
        const textSize = rec.readUInt32LE(ts);
        if (!ctx.isKernelPointer(textBase, PAGE) || textSize === 0 || BigInt(textSize) > MAX_MODULE_MEM) continue;
        found.push({ name, address: addr, coreBase: textBase, coreSize: textSize, state: rec.readUInt32LE(M.state) });
        for (const [b, s] of M.regions) {
          const base = rec.readBigUInt64LE(b);
          const size = BigInt(rec.readUInt32LE(s));
          if (ctx.isKernelPointer(base, 1n) && size > 0n && size <= MAX_MODULE_MEM) regions.push({ start: pageDown(base), end: pageUp(base + size), owner: 'module', name });
        }
      }
    }
  }
  return { found, regions };
}

/** What the walk can reuse between scans (the mapped runs, when the caller says they still hold). */
export interface ModuleAreaOptions {
  readonly limits?: ModuleAreaLimits;
  /** Other views of this scan (bpf, when read) the owners may come from. */
  readonly snapshot?: Partial<KernelSnapshot>;
}

export function readModuleArea(ctx: KernelContext, modules: ModuleListView, opts: ModuleAreaOptions = {}): ModuleAreaView {
  const limits = opts.limits ?? DEFAULT_MODULE_AREA_LIMITS;
  const errors: ViewError[] = [];
  let M: ModMem;
  try {
    M = modMem(ctx);
  } catch (e) {
    return { regions: [], hiddenModules: [], errors: [viewError('module area: profile', e)] };
  }
  const range = moduleRange(ctx);
  const runs = walkMapped(ctx, range.start, range.end, limits.maxRuns, errors);

  const known = new Map<bigint, ModuleInfo>();
  for (const m of [...modules.modules, ...modules.kobjects]) known.set(m.address, m);
  const owners = moduleOwners(ctx, M, [...known.values()], errors);
  const refs: { from: string; target: bigint }[] = [];
  ftraceOwners(ctx, limits, owners, refs, errors);
  kprobeOwners(ctx, limits, owners, errors);
  bpfOwners(ctx, limits, owners, errors, opts.snapshot ?? {});
  owners.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));

  // Carve what no known owner accounts for, executable or not (the struct lives in data).
  const carved = carveModules(ctx, M, uncovered(runs, owners), limits.maxCarveBytes, errors);
  let hiddenModules = carved.found.filter((m) => !known.has(m.address));
  if (hiddenModules.length > 0) {
    // The module list was read before the carving: a module loaded in between is on the list now.
    // Read once more (a hiding module stays off it; only the lists, never the carving, are trusted).
    const now = readModuleList(ctx, { fresh: true });
    const listed = new Set([...now.modules, ...now.kobjects].map((m) => m.address));
    hiddenModules = hiddenModules.filter((m) => !listed.has(m.address));
  }
  const byStart = (a: Owned, b: Owned): number => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0);
  let all = [...owners, ...carved.regions].sort(byStart);
  const unownedCode = uncovered(runs.filter((r) => r.exec), all);
  const later = unownedCode.length === 0 ? [] : [...orphanTrampolines(ctx, unownedCode, all, errors), ...classicBpfFrames(ctx, unownedCode)];
  if (later.length > 0) all = [...all, ...later].sort(byStart);
  const regions: CodeRegion[] = [];
  for (const r of runs) if (r.exec) attribute(r.start, r.end, all, regions);
  return {
    regions,
    hiddenModules,
    errors,
    range: { start: range.start, end: range.end },
    references: refs,
  };
}

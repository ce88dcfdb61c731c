// Zero-configuration kernel discovery: from nothing but guest RAM (plus CR3/CR4
// when the guest is live) find the kernel image, its symbols (kallsyms), its
// KASLR slide, its page-table root and paging depth, and its BTF.
//
// Pitfall: system_reset does not clear RAM, so after a reset the previous
// kernel's image (and its kallsyms) is still there. Live, the candidate whose
// addresses CR3 actually maps is the running one; in a dump, the one whose
// wall clock (tk_core) is latest.
import type { GuestMemory } from '../memory/guest-memory.js';
import { AddressSpace, pageTableRootFromCr3, type PagingLevels } from '../translate/address-space.js';
import { findKallsyms, findKallsymsInImage, MAX_IMAGE_SEARCH, type KallsymsTable } from '../profile/kallsyms.js';
import { probeByPageTables, probeBySignature } from './image-probe.js';
import { SymbolTable, slideSymbols } from '../profile/symbols.js';
import { Btf } from '../profile/btf.js';
import { BtfLayouts, type StructLayouts } from '../profile/layouts.js';
import { KernelProfile } from '../profile/kernel-profile.js';
import { sharedProfiles, type ProfileCache, type ProfileLease } from '../profile/profile-cache.js';
import type { KernelIdentity } from './types.js';

/** __START_KERNEL_map: the kernel image's virtual base before the KASLR slide. */
export const START_KERNEL_MAP = 0xffff_ffff_8000_0000n;
/** The default (unrandomised) _text: __START_KERNEL_map + CONFIG_PHYSICAL_START (16 MiB). */
export const DEFAULT_TEXT = 0xffff_ffff_8100_0000n;
const MAX_BTF_BYTES = 64 << 20;
const CR4_LA57 = 1n << 12n;
// phys_base is an unsigned long: it wraps when the virtual slide exceeds the physical one.
const U64 = 0xffff_ffff_ffff_ffffn;

export interface LiveRegisters {
  /** CR3 of any CPU (user or kernel half; PCID and PTI bits are masked here). */
  readonly cr3: bigint;
  readonly cr4?: bigint;
}

export interface DiscoveryOptions {
  /** Live guests: from QMP `info registers` (see registersFromHmp). */
  readonly registers?: LiveRegisters;
  /** Overrides: a user's System.map / ISF symbols (as built; slid here) or ISF layouts. */
  readonly symbols?: SymbolTable;
  readonly layouts?: StructLayouts;
  /**
   * Kernel builds decoded by other guests of this process (default: the process-wide cache);
   * null decodes everything here. Not used with overrides (a user's profile is this guest's own).
   */
  readonly profiles?: ProfileCache | null;
}

export interface DiscoveredKernel {
  readonly identity: KernelIdentity;
  readonly profile: KernelProfile;
  readonly space: AddressSpace;
  /** VA - PA for the kernel image mapping. */
  readonly imageDelta: bigint;
  readonly physBase: bigint;
  readonly tokenTablePhys: bigint;
  /** How each candidate image was judged (for reports). */
  readonly candidates: readonly string[];
  /** Regions translated arithmetically (verified against page walks at discovery). */
  readonly linear: readonly { readonly what: string; readonly va: bigint; readonly pa: bigint; readonly size: bigint }[];
  readonly timings: { readonly kallsymsMs: number; readonly btfMs: number; readonly totalMs: number };
  /** This guest's hold on the shared profile of its kernel build: release it when done with the kernel. */
  readonly lease?: ProfileLease;
}

export class DiscoveryError extends Error {
  override readonly name = 'DiscoveryError';
}

/** CR3 and CR4 of the first CPU in HMP `info registers` output. */
export function registersFromHmp(text: string): LiveRegisters {
  const cr3 = /CR3=([0-9a-fA-F]+)/.exec(text);
  const cr4 = /CR4=([0-9a-fA-F]+)/.exec(text);
  if (!cr3) throw new DiscoveryError(`no CR3 in "info registers" output: ${text.slice(0, 120)}`);
  return { cr3: BigInt('0x' + (cr3[1] as string)), ...(cr4 ? { cr4: BigInt('0x' + (cr4[1] as string)) } : {}) };
}

interface Candidate {
  table: KallsymsTable;
  symbols: SymbolTable;
  delta: bigint;
  levels: PagingLevels;
  space: AddressSpace;
  note: string;
}

const hex = (v: bigint): string => '0x' + v.toString(16);

export function discoverKernel(mem: GuestMemory, opts: DiscoveryOptions = {}): DiscoveredKernel {
  const t0 = performance.now();
  const cache = opts.symbols || opts.layouts ? undefined : (opts.profiles === undefined ? sharedProfiles : opts.profiles ?? undefined);
  // Names a table of the same build already decoded: in this RAM (a reboot or kexec leaves the old
  // image's kallsyms; the same build's decode to the same names) or for another guest (the cache).
  const decodedHere = new Map<string, { names: readonly string[]; types: string }>();
  const known = (k: string): { names: readonly string[]; types: string } | undefined => decodedHere.get(k) ?? cache?.names(k);
  const keep = (t: KallsymsTable): void => { if (decodedHere.size < 16) decodedHere.set(t.buildKey, { names: t.names, types: t.types }); };
  // The image first (page tables when CR3 is known, a bounded probe of a dump), kallsyms searched
  // only inside it; what it finds is judged like anything else, and all of RAM is searched when
  // it finds nothing valid.
  const probe = opts.registers ? probeByPageTables(mem, pageTableRootFromCr3(opts.registers.cr3), levelsFromRegisters(opts.registers))
    : probeBySignature(mem);
  const probed: KallsymsTable[] = [];
  const probeNotes = [probe.note];
  for (const start of probe.starts) {
    const found = findKallsymsInImage(mem, start, known);
    if (found.table) keep(found.table);
    if (found.table && !probed.some((t) => t.tokenTablePhys === found.table?.tokenTablePhys)) probed.push(found.table);
    else if (!found.table) probeNotes.push(`kernel image probe: no kallsyms within ${MAX_IMAGE_SEARCH >> 20} MiB of ${hex(start)}`);
  }
  let judged = probed.length > 0 ? judgeTables(mem, probed, [], opts, cache) : null;
  let kallsymsMs = performance.now() - t0;
  if (!judged || judged.valid.length === 0) {
    if (judged) probeNotes.push(...judged.notes.map((n) => `kernel image probe: ${n}`), 'kernel image probe: nothing valid; searching all of RAM');
    const { tables, rejected } = findKallsyms(mem, undefined, known);
    kallsymsMs = performance.now() - t0;
    judged = judgeTables(mem, tables, rejected, opts, cache);
    if (judged.valid.length === 0) {
      // What is missing and what would help: kallsyms must be in RAM (a System.map or ISF supplies
      // names and addresses but is placed by kallsyms' relative base, so it cannot stand in for it).
      const why = tables.length === 0
        ? 'no kallsyms table in RAM (a kernel built without CONFIG_KALLSYMS, or not an x86-64 Linux guest)'
        : judged.notes.join('; ');
      throw new DiscoveryError(`no running Linux kernel found in ${mem.source}: ${why}`);
    }
  }
  const { valid } = judged;
  const notes = [...probeNotes, ...judged.notes];
  const t1 = performance.now();
  let chosen = valid[0] as Candidate;
  const btfs = new Map<Candidate, Btf>();
  if (valid.length > 1) {
    // Only without CR3 can several survive: pick the latest wall clock.
    let best = -1n;
    for (const c of valid) {
      let btf: Btf;
      try {
        btf = loadBtf(c);
      } catch (e) {
        // A stale image is partly overwritten by the running kernel: unreadable BTF disqualifies it.
        notes.push(`image with kallsyms at ${hex(c.table.tokenTablePhys)}: BTF unreadable (${e instanceof Error ? e.message : String(e)})`);
        continue;
      }
      btfs.set(c, btf);
      const secs = wallClock(c, btf);
      notes.push(`image with kallsyms at ${hex(c.table.tokenTablePhys)}: wall clock ${secs}`);
      if (secs > best) { best = secs; chosen = c; }
    }
  }
  const symbols = chosen.symbols;
  const bannerVa = symbols.require('linux_banner');
  const banner = readCString(chosen.space, bannerVa, 512).replace(/\n$/, '');
  const text = symbols.require('_text');
  const identity: KernelIdentity = {
    banner,
    release: banner.split(' ')[2] ?? '',
    kaslrSlide: text - DEFAULT_TEXT,
    pagingLevels: chosen.levels,
  };
  const linear = linearRegions(mem, chosen);
  let layouts: StructLayouts;
  let lease: ProfileLease | undefined;
  if (opts.layouts) layouts = opts.layouts;
  else if (cache) {
    const r = cache.lease(chosen.table.buildKey, chosen.symbols, btfBytes(chosen));
    layouts = new BtfLayouts(r.btf);
    lease = r.lease;
  } else layouts = new BtfLayouts(btfs.get(chosen) ?? loadBtf(chosen));
  const btfMs = performance.now() - t1;
  const profile = new KernelProfile(symbols, layouts, {
    symbols: opts.symbols ? 'override' : `kallsyms@${hex(chosen.table.tokenTablePhys)}`,
    layouts: opts.layouts ? 'override' : 'btf',
  });
  return {
    identity,
    profile,
    space: chosen.space,
    imageDelta: chosen.delta,
    physBase: (START_KERNEL_MAP - chosen.delta) & U64,
    tokenTablePhys: chosen.table.tokenTablePhys,
    candidates: notes,
    linear,
    timings: { kallsymsMs, btfMs, totalMs: performance.now() - t0 },
    ...(lease ? { lease } : {}),
  };
}

/** Each table's image judged (see judgeCandidate); the banner search is bounded by the table's own symbols. */
function judgeTables(mem: GuestMemory, tables: readonly KallsymsTable[], rejected: readonly string[], opts: DiscoveryOptions, cache: ProfileCache | undefined):
  { valid: Candidate[]; notes: string[] } {
  const notes = rejected.map((r) => `kallsyms candidate ${r}`);
  const valid: Candidate[] = [];
  for (const table of tables) {
    // A user's System.map/ISF describes the unrandomised build: slide it to where this
    // image's kallsyms says _text is (kallsyms_relative_base is _text).
    const symbols = opts.symbols ? slideSymbols(opts.symbols, table.relativeBase - (opts.symbols.address('_text') ?? table.relativeBase))
      : cache?.symbolsAt(table.buildKey, table.addresses) ?? SymbolTable.fromKallsyms(table);
    const c = judgeCandidate(mem, table, symbols, bannersFor(mem, table, symbols), opts.registers);
    notes.push(c.note);
    if ('space' in c) valid.push(c);
  }
  return { valid, notes };
}

/**
 * linux_banner copies that could belong to this kallsyms' image: within 128 MiB of it, and where
 * the image's mapping they imply puts the token table inside this image's rodata (what
 * judgeCandidate keeps), so only a rodata-sized stretch is searched.
 */
function bannersFor(mem: GuestMemory, table: KallsymsTable, symbols: SymbolTable): bigint[] {
  const span = 128n << 20n;
  let lo = table.tokenTablePhys > span ? table.tokenTablePhys - span : 0n;
  let hi = table.tokenTablePhys + span;
  const bannerVa = symbols.address('linux_banner');
  const r0 = symbols.address('__start_rodata');
  const r1 = symbols.address('__end_rodata');
  if (bannerVa !== undefined && r0 !== undefined && r1 !== undefined) {
    if (r1 <= r0) return [];
    // tokenTablePhys + (bannerVa - pa) in [r0, r1)  <=>  pa in (tokenTablePhys + bannerVa - r1, tokenTablePhys + bannerVa - r0].
    const from = table.tokenTablePhys + bannerVa - r1 + 1n;
    const to = table.tokenTablePhys + bannerVa - r0 + 1n;
    if (from > lo) lo = from;
    if (to < hi) hi = to;
    if (hi <= lo || hi <= 0n) return [];
    if (lo < 0n) lo = 0n;
  }
  return mem.findAll(Buffer.from('Linux version '), 512, lo, hi);
}

function levelsFromRegisters(regs: LiveRegisters): PagingLevels[] {
  return regs.cr4 === undefined ? [4, 5] : (regs.cr4 & CR4_LA57) !== 0n ? [5] : [4];
}

function judgeCandidate(mem: GuestMemory, table: KallsymsTable, symbols: SymbolTable, banners: bigint[], regs: LiveRegisters | undefined):
  Candidate | { note: string } {
  const at = `image with kallsyms at ${hex(table.tokenTablePhys)}`;
  const bannerVa = symbols.address('linux_banner');
  const physBaseVa = symbols.address('phys_base');
  const rodata = [symbols.address('__start_rodata'), symbols.address('__end_rodata')] as const;
  if (bannerVa === undefined || physBaseVa === undefined || rodata[0] === undefined || rodata[1] === undefined) {
    return { note: `${at}: lacks linux_banner/phys_base/__start_rodata` };
  }
  // The image is mapped linearly: VA - PA is one constant. Each banner copy whose
  // implied mapping puts this kallsyms inside the image's rodata proposes one; those
  // that phys_base (a variable holding exactly that mapping) confirms go first, but
  // a guest can overwrite phys_base, so the page tables have the final word.
  const deltas: { d: bigint; confirmed: boolean }[] = [];
  for (const pa of banners) {
    const d = bannerVa - pa;
    const tokenVa = table.tokenTablePhys + d;
    if (tokenVa < rodata[0] || tokenVa >= rodata[1]) continue;
    let stored: bigint | undefined;
    try { stored = mem.readPhys(physBaseVa - d, 8).readBigUInt64LE(0); } catch { /* unconfirmed */ }
    deltas.push({ d, confirmed: stored === ((START_KERNEL_MAP - d) & U64) });
  }
  deltas.sort((x, y) => Number(y.confirmed) - Number(x.confirmed));
  if (deltas.length === 0) return { note: `${at}: no kernel banner where this image's rodata would be (not a complete kernel image)` };

  let lastRoot = 0n;
  for (const { d: delta } of deltas.slice(0, 8)) {
    const bannerPa = bannerVa - delta;
    let levelsToTry: PagingLevels[];
    let root: bigint;
    if (regs) {
      root = pageTableRootFromCr3(regs.cr3);
      levelsToTry = levelsFromRegisters(regs);
    } else {
      const pgd = symbols.address('init_top_pgt') ?? symbols.address('swapper_pg_dir');
      if (pgd === undefined) return { note: `${at}: no init_top_pgt symbol for a page-table root` };
      root = pgd - delta;
      // __pgtable_l5_enabled tells a dump's paging depth; try the other if it lies.
      const l5 = symbols.address('__pgtable_l5_enabled');
      let five = false;
      if (l5 !== undefined) { try { five = mem.readPhys(l5 - delta, 4).readUInt32LE(0) === 1; } catch { /* keep 4 */ } }
      levelsToTry = five ? [5, 4] : [4, 5];
    }
    lastRoot = root;
    for (const levels of levelsToTry) {
      const space = new AddressSpace(mem, root, levels);
      if (space.translate(bannerVa) === bannerPa && space.translate(physBaseVa) === physBaseVa - delta) {
        return { table, symbols, delta, levels, space, note: `${at}: running kernel (root ${hex(root)}, ${levels}-level, slide ${hex(symbols.require('_text') - DEFAULT_TEXT)})` };
      }
    }
  }
  const root = lastRoot;
  return { note: `${at}: page tables at ${hex(root)} do not map it (${regs ? 'a previous kernel left in RAM' : 'inconsistent image'})` };
}

/**
 * The kernel image and the direct map are linear by construction; translating them by
 * arithmetic keeps a scan off the page walker. Each is used only if walks agree.
 */
function linearRegions(mem: GuestMemory, c: Candidate): { what: string; va: bigint; pa: bigint; size: bigint }[] {
  const out: { what: string; va: bigint; pa: bigint; size: bigint }[] = [];
  const text = c.symbols.address('_text');
  const end = c.symbols.address('_end');
  if (text !== undefined && end !== undefined && end > text) {
    const va = text & ~0x1f_ffffn;
    out.push({ what: 'kernel image', va, pa: va - c.delta, size: end - va });
  }
  const pob = c.symbols.address('page_offset_base');
  if (pob !== undefined) {
    try {
      const base = c.space.readU64(pob);
      const top = mem.layout.reduce((m, r) => (r.gpa + r.size > m ? r.gpa + r.size : m), 0n);
      out.push({ what: 'direct map', va: base, pa: 0n, size: top });
    } catch { /* no shortcut */ }
  }
  const verified = out.filter((r) => c.space.verifyLinear(r));
  c.space.setLinear(verified);
  return verified;
}

function loadBtf(c: Candidate): Btf {
  return new Btf(btfBytes(c));
}

function btfBytes(c: Candidate): Buffer {
  const start = c.symbols.address('__start_BTF');
  const stop = c.symbols.address('__stop_BTF');
  if (start === undefined || stop === undefined) {
    throw new DiscoveryError('kernel has no __start_BTF/__stop_BTF (built without CONFIG_DEBUG_INFO_BTF): structure layouts are missing; supply a Volatility 3 ISF for this kernel build (--isf FILE)');
  }
  const len = stop - start;
  if (len <= 0n || len > BigInt(MAX_BTF_BYTES)) throw new DiscoveryError(`kernel BTF size ${len} is outside 1..${MAX_BTF_BYTES}`);
  return c.space.read(start, Number(len));
}

/** 2000-01-01: no running kernel's wall clock is earlier (QEMU starts the RTC at the host's time). */
const MIN_WALL_CLOCK_S = 946_684_800n;
/** A guest clock may run ahead of the host's, but not by more than a year. */
const MAX_CLOCK_AHEAD_S = 366n * 86_400n;

/** tk_core.timekeeper.xtime_sec: seconds of wall time at the kernel's last tick. */
function wallClock(c: Candidate, btf: Btf): bigint {
  try {
    const tk = c.symbols.require('tk_core');
    const off = btf.offsetof('timekeeper', 'xtime_sec');
    // tk_core is an anonymous struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }
    // (not in BTF): a 4-byte seqcount, then the 8-aligned timekeeper.
    const secs = c.space.readU64(tk + 8n + BigInt(off));
    // A stale image's half-overwritten BTF or data gives any number: only a plausible clock counts.
    return secs >= MIN_WALL_CLOCK_S && secs <= BigInt(Math.floor(Date.now() / 1000)) + MAX_CLOCK_AHEAD_S ? secs : -1n;
  } catch {
    return -1n;
  }
}

export function readCString(space: AddressSpace, va: bigint, max: number): string {
  const buf = space.tryRead(va, max) ?? space.read(va, 1);
  const end = buf.indexOf(0);
  return buf.toString('latin1', 0, end < 0 ? buf.length : end);
}

// Kernel integrity: hashes of kernel text and read-only data, of the syscall
// dispatchers (on 6.1.85+ dispatch goes through x64_sys_call's switch, not the
// table), and the IDT's handler addresses.
import { createHash, hash as oneShotHash } from 'node:crypto';
import type { KernelIntegrityView, ViewError } from './types.js';
import { hex, viewError, type KernelContext } from './kernel-context.js';
import type { TextCopy } from './text-copy.js';

const MAX_REGION = 64 << 20;
const MAX_FUNCTION = 1 << 20;
const DISPATCHERS = ['x64_sys_call', 'ia32_sys_call', 'x32_sys_call'];

// The last bytes hashed per function: an unchanged body (the usual case) costs a memcmp, not a sha256.
const lastBodies = new WeakMap<object, Map<string, { bytes: Buffer; hash: string }>>();

function hashFunction(ctx: KernelContext, name: string, bytes: Buffer): string {
  let m = lastBodies.get(ctx.profile);
  if (!m) { m = new Map(); lastBodies.set(ctx.profile, m); }
  const last = m.get(name);
  if (last && last.bytes.equals(bytes)) return last.hash;
  const hash = createHash('sha256').update(bytes).digest('hex');
  m.set(name, { bytes, hash });
  return hash;
}

export interface IntegrityOptions {
  /** Hash all of kernel text and rodata (~20 MB; tens of ms). Off for the fast periodic check. */
  readonly hashImage: boolean;
  /**
   * Hash the image incrementally: per-page hashes, all pages at the first scan of this context,
   * then per scan only the share of pages that keeps every page rehashed within this many ms
   * (a rotating cursor). The hashes are then PAGED_HASH_PREFIX + sha256 of the page hashes,
   * not a plain sha256 of the region. Absent: one plain sha256 of each whole region per scan.
   */
  readonly imageCoverageMs?: number;
  /** With imageCoverageMs: rehash every page this scan (a baseline is about to be taken from it). */
  readonly fullImage?: boolean;
  /** The clock for imageCoverageMs (tests). */
  readonly nowMs?: number;
  /** MSR_LSTAR if the caller could read it (QMP cannot). */
  readonly lstar?: bigint | null;
  /**
   * A clean copy of this kernel's text (the text-diff view's) from its first page: an incremental
   * scan does not rehash a text page whose bytes equal the copy's and did when it was last hashed.
   */
  readonly textCopy?: { readonly start: bigint; readonly copy: TextCopy } | null;
}

const MAX_PATCH_SITES = 1 << 20;
const NOP5 = Buffer.from([0x0f, 0x1f, 0x44, 0x00, 0x00]);
/** The 5-byte NOP older kernels (5.10) pick for some CPUs (TCG's EPYC model among them). */
const NOP5_PREFIXED = Buffer.from([0x66, 0x66, 0x66, 0x66, 0x90]);
const NOP2 = Buffer.from([0x66, 0x90]);
/** What a static call site to a function that returns 0 holds: `xor %eax,%eax` padded with CS prefixes. */
const XOR5RAX = Buffer.from([0x2e, 0x2e, 0x2e, 0x31, 0xc0]);

/** A run of text bytes the kernel itself rewrites at run time, in the state it may legitimately hold. */
export interface PatchSite { readonly at: bigint; readonly len: number; readonly ok: (b: Buffer) => boolean }

const rel32 = (b: Buffer, at: bigint, len: number): bigint => at + BigInt(len) + BigInt(b.readInt32LE(1));
/** `b` starts with `pattern` (compared here: a call into Buffer.equals per site cost more than the rest of the masking). */
export function startsWith(b: Buffer, pattern: Buffer): boolean {
  if (b.length < pattern.length) return false;
  for (let i = 0; i < pattern.length; i++) if (b[i] !== pattern[i]) return false;
  return true;
}
const is5 = (b: Buffer, pattern: Buffer): boolean => b.length === 5 && startsWith(b, pattern);

/**
 * Sites the kernel patches while it runs: jump labels (static keys flipped by sysctls, cgroup BPF,
 * socket memory accounting, ... as a distro's services start and stop) and static calls. Each is
 * hashed as zeros when it holds one of the states the kernel writes there (a NOP, or a jump or call
 * to where the entry says), and as its raw bytes otherwise, so a foreign patch on a site still
 * changes the hash. Kernels without the tables (or with implausible ones) get no sites.
 */
export function patchSites(ctx: KernelContext, errors: ViewError[]): readonly PatchSite[] {
  // Read once per context (one boot): the image hashes and the text-diff's copy share the ~50 000 sites.
  let kept = sitesOf.get(ctx);
  if (!kept) {
    const own: ViewError[] = [];
    kept = { sites: Object.freeze(readPatchSites(ctx, own)), errors: own };
    sitesOf.set(ctx, kept);
  }
  for (const e of kept.errors) errors.push(e);
  return kept.sites;
}

const sitesOf = new WeakMap<KernelContext, { readonly sites: readonly PatchSite[]; readonly errors: readonly ViewError[] }>();

function readPatchSites(ctx: KernelContext, errors: ViewError[]): PatchSite[] {
  const s = ctx.profile.symbols;
  const sites: PatchSite[] = [];
  const table = (start: string, stop: string, size: number): { base: bigint; buf: Buffer } | null => {
    const a = s.address(start);
    const b = s.address(stop);
    if (a === undefined || b === undefined) return null;
    if (b < a || (b - a) % BigInt(size) !== 0n || (b - a) / BigInt(size) > BigInt(MAX_PATCH_SITES)) {
      errors.push({ where: `integrity: ${start}..${stop}`, message: 'range implausible' });
      return null;
    }
    try {
      return { base: a, buf: ctx.space.read(a, Number(b - a)) };
    } catch (e) {
      errors.push(viewError(`integrity: ${start}`, e));
      return null;
    }
  };
  // struct jump_entry { s32 code; s32 target; long key; }: offsets relative to the fields themselves.
  const jt = table('__start___jump_table', '__stop___jump_table', 16);
  if (jt) {
    for (let o = 0; o < jt.buf.length; o += 16) {
      const e = jt.base + BigInt(o);
      const code = e + BigInt(jt.buf.readInt32LE(o));
      const target = e + 4n + BigInt(jt.buf.readInt32LE(o + 4));
      sites.push({
        at: code, len: 5,
        ok: (b) => is5(b, NOP5) || is5(b, NOP5_PREFIXED) || (b[0] === 0xe9 && rel32(b, code, 5) === target)
          || startsWith(b, NOP2) || (b[0] === 0xeb && code + 2n + BigInt(b.readInt8(1)) === target),
      });
    }
  }
  // struct static_call_site { s32 addr; s32 key; }: a call (for tail calls a jump or ret), a NOP, or
  // the 5-byte `xor %eax,%eax` of a call to return-0 (perf's guest callbacks flip these when kvm loads).
  const sc = table('__start_static_call_sites', '__stop_static_call_sites', 8);
  if (sc) {
    for (let o = 0; o < sc.buf.length; o += 8) {
      const at = sc.base + BigInt(o) + BigInt(sc.buf.readInt32LE(o));
      sites.push({ at, len: 5, ok: (b) => is5(b, NOP5) || is5(b, NOP5_PREFIXED) || is5(b, XOR5RAX) || b[0] === 0xe8 || b[0] === 0xe9 || b[0] === 0xc3 });
    }
  }
  // The static call trampolines: a jump to the current function, or a return.
  const ta = s.address('__static_call_text_start');
  const tb = s.address('__static_call_text_end');
  if (ta !== undefined && tb !== undefined && tb > ta && tb - ta <= 0x10_0000n) {
    sites.push({ at: ta, len: Number(tb - ta), ok: () => true });
  }
  return sites.sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0));
}

/**
 * Zeroes, in `piece` (the bytes at guest address `at`), each patch site (sorted by address) that holds
 * a state the kernel itself writes there; a site in any other state is left to change the hash.
 */
export function maskPatchSites(ctx: KernelContext, piece: Buffer, at: bigint, sites: readonly PatchSite[]): void {
  if (sites.length === 0) return;
  const len = piece.length;
  const end = at + BigInt(len);
  let lo = 0;
  let hi = sites.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const m = sites[mid] as PatchSite;
    if (m.at + BigInt(m.len) <= at) lo = mid + 1; else hi = mid;
  }
  for (let i = lo; i < sites.length; i++) {
    const site = sites[i] as PatchSite;
    if (site.at >= end) break;
    // Where the site starts in the piece (negative: before it): small, the site overlaps the piece.
    const rel = Number(site.at - at);
    const from = rel > 0 ? rel : 0;
    const to = Math.min(len, rel + site.len);
    // A site across a piece boundary is judged on its own bytes.
    const inside = rel >= 0 && rel + 5 <= len;
    const head = inside ? piece.subarray(from, from + 5) : ctx.space.read(site.at, 5);
    if (to > from && site.ok(head)) piece.fill(0, from, to);
  }
}

function hashRegion(ctx: KernelContext, from: string, to: string, errors: ViewError[], sites: readonly PatchSite[] = []): string | null {
  const s = ctx.profile.symbols;
  const a = s.address(from);
  const b = s.address(to);
  if (a === undefined || b === undefined || b <= a || b - a > BigInt(MAX_REGION)) {
    errors.push({ where: `integrity: ${from}..${to}`, message: 'symbols missing or range implausible' });
    return null;
  }
  const h = createHash('sha256');
  // 2 MiB pieces: bounded copies, and a hole is named precisely.
  for (let at = a; at < b; at += 0x20_0000n) {
    const len = Number(b - at < 0x20_0000n ? b - at : 0x20_0000n);
    try {
      // A virtual read is a fresh copy the caller owns: masked in place (a second copy of ~20 MB
      // into new memory was a quarter of the hashing's cost).
      const piece = ctx.space.read(at, len);
      maskPatchSites(ctx, piece, at, sites);
      h.update(piece);
    } catch (e) {
      errors.push(viewError(`integrity: ${from}..${to}`, e));
      return null;
    }
  }
  return h.digest('hex');
}

/** Marks a hash over per-page hashes: comparable only with another hash of the same kind. */
export const PAGED_HASH_PREFIX = 'pages4k:';
const PAGE = 4096;
const HASH_LEN = 32;

/** One region's page hashes and where the rotating cursor stands; per KernelContext (one boot). */
interface PagedRegion {
  readonly start: bigint;
  readonly pages: number;
  /** Pages rehashed at every scan: those holding the syscall tables (checked every scan anyway). */
  readonly hot: readonly number[];
  /** The bytes each hot page had when last hashed: an unchanged one is not hashed again. */
  readonly hotBytes: Map<number, Buffer>;
  /** Run-time patch sites in the region, masked as in hashRegion. */
  readonly sites: readonly PatchSite[];
  readonly hashes: Buffer;
  /** Pages last hashed from bytes equal to `copy`'s (1), so unchanged while they still are. */
  sameAsCopy: Uint8Array;
  copy: TextCopy | null;
  cursor: number;
  digest: string | null;
  lastAtMs: number;
}

const pagedRegions = new WeakMap<object, Map<string, PagedRegion>>();

/** The text's current per-page hashes (sha256 of each 4 KiB page, patch sites masked) when this context hashes incrementally. */
export function pagedTextHashes(ctx: KernelContext): { readonly start: bigint; readonly pages: number; readonly hashes: Buffer } | null {
  return pagedRegions.get(ctx)?.get('_stext.._etext') ?? null;
}

const HOT_SYMBOLS = ['sys_call_table', 'ia32_sys_call_table', 'x32_sys_call_table'];

function hotPages(ctx: KernelContext, start: bigint, pages: number): number[] {
  const hot = new Set<number>();
  for (const name of HOT_SYMBOLS) {
    const a = ctx.profile.symbols.address(name);
    if (a === undefined || a < start) continue;
    const len = Math.min(Math.max(ctx.profile.symbols.extent(name) ?? 8, 8), 64 * PAGE);
    const first = Number((a - start) / BigInt(PAGE));
    const last = Number((a + BigInt(len) - 1n - start) / BigInt(PAGE));
    for (let i = first; i <= last && i < pages; i++) hot.add(i);
  }
  return [...hot];
}

/**
 * Rehashes `count` pages from `first` (wrapping); false with an error pushed when a page cannot be read.
 * With a clean copy, a page whose bytes equal the copy's, as they did when it was last hashed, keeps its
 * hash (a memcmp instead of a sha256; a patch site across its edge changed from the next page still
 * changes that page's hash).
 */
function rehashPages(ctx: KernelContext, r: PagedRegion, first: number, count: number, where: string, errors: ViewError[], copy: TextCopy | null = null): boolean {
  let changed = false;
  let i = first;
  if (copy !== r.copy) { r.copy = copy; r.sameAsCopy.fill(0); }
  for (let done = 0; done < count;) {
    // Contiguous runs of up to 512 pages (2 MiB): one bounded copy each.
    const run = Math.min(count - done, r.pages - i, 512);
    let bytes: Buffer;
    let due = run;
    const skip = copy ? new Uint8Array(run) : null;
    try {
      bytes = ctx.space.read(r.start + BigInt(i * PAGE), run * PAGE);
      if (copy && skip) {
        for (let k = 0; k < run; k++) {
          const same = copy.bytes((i + k) * PAGE, PAGE)?.equals(bytes.subarray(k * PAGE, (k + 1) * PAGE)) === true;
          if (same && r.sameAsCopy[i + k] === 1) { skip[k] = 1; due--; }
          r.sameAsCopy[i + k] = same ? 1 : 0;
        }
      }
      // A fresh copy (see AddressSpace.read), compared above: masked in place.
      if (due > 0 && r.sites.length > 0) maskPatchSites(ctx, bytes, r.start + BigInt(i * PAGE), r.sites);
    } catch (e) {
      errors.push(viewError(where, e));
      return false;
    }
    for (let k = 0; k < run && due > 0; k++) {
      if (skip?.[k] === 1) continue;
      // One-shot: no Hash object per 4 KiB page (that object costs about what hashing the page does).
      const h = oneShotHash('sha256', bytes.subarray(k * PAGE, (k + 1) * PAGE), 'buffer');
      const at = (i + k) * HASH_LEN;
      if (!changed && h.compare(r.hashes, at, at + HASH_LEN) !== 0) changed = true;
      h.copy(r.hashes, at);
    }
    done += run;
    i = (i + run) % r.pages;
  }
  if (changed || r.digest === null) r.digest = PAGED_HASH_PREFIX + createHash('sha256').update(r.hashes).digest('hex');
  return true;
}

function pagedRegionHash(
  ctx: KernelContext, from: string, to: string, coverageMs: number, full: boolean, nowMs: number, errors: ViewError[],
  sites: () => readonly PatchSite[] = () => [], textCopy: IntegrityOptions['textCopy'] = null,
): string | null {
  const s = ctx.profile.symbols;
  const a = s.address(from);
  const b = s.address(to);
  const where = `integrity: ${from}..${to}`;
  if (a === undefined || b === undefined || b <= a || b - a > BigInt(MAX_REGION)) {
    errors.push({ where, message: 'symbols missing or range implausible' });
    return null;
  }
  let m = pagedRegions.get(ctx);
  if (!m) { m = new Map(); pagedRegions.set(ctx, m); }
  const key = `${from}..${to}`;
  let r = m.get(key);
  // A partial last page is hashed whole: the region's pages, as the page tables map them.
  const start = a & ~BigInt(PAGE - 1);
  const pages = Number((b - start + BigInt(PAGE - 1)) / BigInt(PAGE));
  // A scan a baseline may be taken from hashes every page itself.
  const copy = !full && textCopy && textCopy.start === start && textCopy.copy.length === pages * PAGE ? textCopy.copy : null;
  if (!r || r.start !== start || r.pages !== pages) {
    r = {
      start, pages, hot: hotPages(ctx, start, pages), hotBytes: new Map(), sites: sites(), hashes: Buffer.alloc(pages * HASH_LEN),
      sameAsCopy: new Uint8Array(pages), copy: null, cursor: 0, digest: null, lastAtMs: nowMs,
    };
    if (!rehashPages(ctx, r, 0, pages, where, errors, copy)) return null;
    m.set(key, r);
    return r.digest;
  }
  // The share of pages due since the last scan, so that every page is rehashed at least once per coverageMs.
  for (const i of full ? [] : r.hot) {
    const now = ctx.space.tryRead(start + BigInt(i * PAGE), PAGE);
    if (now && r.hotBytes.get(i)?.equals(now) === true) continue;
    if (!rehashPages(ctx, r, i, 1, where, errors, copy)) { m.delete(key); return null; }
    if (now) r.hotBytes.set(i, Buffer.from(now));
  }
  const due = full ? pages : Math.min(pages, Math.ceil((pages * Math.max(0, nowMs - r.lastAtMs)) / Math.max(1, coverageMs)));
  if (due > 0) {
    if (!rehashPages(ctx, r, r.cursor, due, where, errors, copy)) {
      // Unreadable now: the next scan starts over from every page.
      m.delete(key);
      return null;
    }
    r.cursor = (r.cursor + due) % pages;
    r.lastAtMs = nowMs;
  }
  return r.digest;
}

/** The IDT as the last scan of each context read it (the handler list is shared while the gates stay the same). */
const lastIdt = new WeakMap<KernelContext, { readonly raw: Buffer; readonly idt: bigint[] }>();

export function readIntegrity(ctx: KernelContext, opts: IntegrityOptions): KernelIntegrityView {
  const errors: ViewError[] = [];
  const s = ctx.profile.symbols;
  const cov = opts.imageCoverageMs;
  const now = opts.nowMs ?? Date.now();
  const image = (from: string, to: string, sites: () => readonly PatchSite[]): string | null => !opts.hashImage ? null
    : cov !== undefined ? pagedRegionHash(ctx, from, to, cov, opts.fullImage === true, now, errors, sites, from === '_stext' ? opts.textCopy : null) : hashRegion(ctx, from, to, errors, sites());
  const textHash = image('_stext', '_etext', () => patchSites(ctx, errors));
  const rodataHash = image('__start_rodata', '__end_rodata', () => []);
  const dispatchers: { name: string; hash: string }[] = [];
  for (const name of DISPATCHERS) {
    const a = s.address(name);
    const len = s.extent(name);
    if (a === undefined) continue;
    if (len === undefined || len <= 0 || len > MAX_FUNCTION) { errors.push({ where: `integrity: ${name}`, message: `size ${String(len)} implausible` }); continue; }
    try {
      dispatchers.push({ name, hash: hashFunction(ctx, name, ctx.space.read(a, len)) });
    } catch (e) {
      errors.push(viewError(`integrity: ${name} at ${hex(a)}`, e));
    }
  }
  let idt: bigint[] = [];
  const idtTable = s.address('idt_table');
  if (idtTable === undefined) errors.push({ where: 'integrity: idt', message: 'no idt_table symbol' });
  else {
    try {
      const raw = ctx.space.read(idtTable, 256 * 16);
      const last = lastIdt.get(ctx);
      // The same gates as the last scan: the same handler list (no 256 BigInts built per scan).
      if (last && last.raw.equals(raw)) idt = last.idt;
      else for (let v = 0; v < 256; v++) {
        const g = raw.subarray(v * 16, v * 16 + 16);
        // struct gate_struct: offset_low u16, segment u16, bits u16, offset_middle u16, offset_high u32, reserved u32
        idt.push(BigInt(g.readUInt16LE(0)) | (BigInt(g.readUInt16LE(6)) << 16n) | (BigInt(g.readUInt32LE(8)) << 32n));
      }
      if (last?.idt !== idt) lastIdt.set(ctx, { raw: Buffer.from(raw), idt });
    } catch (e) {
      errors.push(viewError(`integrity: idt_table at ${hex(idtTable)}`, e));
    }
  }
  return { textHash, rodataHash, dispatchers, idt, lstar: opts.lstar ?? null, errors };
}

// The kernel's own symbol table (kallsyms), found and decoded straight from
// guest-physical memory with no profile. Layout (scripts/kallsyms.c with
// CONFIG_KALLSYMS_BASE_RELATIVE; every label 8-aligned, in this order in .rodata):
//   up to 6.3:  kallsyms_offsets[N] (s32), kallsyms_relative_base (u64), kallsyms_num_syms (u32),
//               kallsyms_names (len-prefixed token streams), kallsyms_markers[ceil(N/256)] (u32),
//               kallsyms_seqs_of_names[N] (3 bytes; 6.2+ only), kallsyms_token_table
//               (256 NUL-terminated tokens), kallsyms_token_index[256] (u16).
//   6.4 and later: kallsyms_num_syms, kallsyms_names, kallsyms_markers, kallsyms_token_table,
//               kallsyms_token_index, kallsyms_offsets[N], kallsyms_relative_base,
//               kallsyms_seqs_of_names[N].
// We find the token table by its single-digit tokens ("0".."9" keep their own
// slots because every symbol set uses them), find N and the names below it (the
// same in both orders, seqs aside), then take the offsets from whichever side
// yields addresses in kallsyms order (ascending) with a kernel-half base.
import { createHash } from 'node:crypto';
import type { GuestMemory, RamRange } from '../memory/guest-memory.js';

export interface KallsymsTable {
  /** Guest-physical address of kallsyms_token_table (identifies which kernel image). */
  readonly tokenTablePhys: bigint;
  /** Table order: 'offsets-first' (up to 6.3) or 'names-first' (6.4+). */
  readonly order: 'offsets-first' | 'names-first';
  readonly relativeBase: bigint;
  readonly names: readonly string[];
  /** kallsyms type letter per symbol ('T', 't', 'D', 'A', ...). */
  readonly types: string;
  readonly addresses: BigUint64Array;
  /**
   * Identifies the kernel build's symbol set whatever its KASLR slide: sha256 of the bytes from
   * kallsyms_num_syms to the end of kallsyms_token_index (count, names, markers, seqs, tokens).
   */
  readonly buildKey: string;
}

/** Names and types already decoded for a build key (another guest of the same build), or undefined. */
export type KnownNames = (buildKey: string) => { readonly names: readonly string[]; readonly types: string } | undefined;

const DIGIT_TOKENS = Buffer.from('0\u00001\u00002\u00003\u00004\u00005\u00006\u00007\u00008\u00009\u0000', 'latin1');
/** How far before the token table the other arrays may start: 4 MiB first, then enough for ~300k symbols. */
const WINDOWS_BEFORE = [4 << 20, 24 << 20];
const MAX_SYMBOLS = 1 << 20;
const MAX_TOKEN_LEN = 256;

const align8 = (n: number): number => (n + 7) & ~7;

export class KallsymsError extends Error {
  override readonly name = 'KallsymsError';
}

/** Every kallsyms table in guest RAM (after a reset, the previous kernel's is still there). */
export function findKallsyms(mem: GuestMemory, maxCandidates = 4096, known?: KnownNames): { tables: KallsymsTable[]; rejected: string[] } {
  const tables: KallsymsTable[] = [];
  const rejected: string[] = [];
  // A table of a build already decoded here (the same kernel before a reset) takes its names.
  const here = (k: string): ReturnType<KnownNames> => tables.find((t) => t.buildKey === k) ?? known?.(k);
  for (const hit of mem.findAll(DIGIT_TOKENS, maxCandidates)) {
    try {
      tables.push(decodeAt(mem, hit, here));
    } catch (e) {
      rejected.push(`0x${hit.toString(16)}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return { tables, rejected };
}

/** How far into a kernel image kallsyms is looked for (distribution kernels: ~17-20 MiB). */
export const MAX_IMAGE_SEARCH = 128 << 20;
const IMAGE_SEARCH_STEP = 8n << 20n;

/**
 * The kallsyms table of the kernel image starting at `start`: the first one that decodes in
 * [start, start + span), searched a step at a time (an image holds one; most of it lies after).
 */
export function findKallsymsInImage(mem: GuestMemory, start: bigint, known?: KnownNames, span = MAX_IMAGE_SEARCH, maxCandidates = 4096): { table: KallsymsTable | null; rejected: string[] } {
  const rejected: string[] = [];
  const end = start + BigInt(span);
  let left = maxCandidates;
  const extents = mem.dataExtents();
  for (let lo = start; lo < end && left > 0; lo += IMAGE_SEARCH_STEP) {
    const hi = lo + IMAGE_SEARCH_STEP < end ? lo + IMAGE_SEARCH_STEP : end;
    const hits = mem.findAll(DIGIT_TOKENS, left, lo, hi, extents);
    left -= hits.length;
    for (const hit of hits) {
      try {
        return { table: decodeAt(mem, hit, known), rejected };
      } catch (e) {
        rejected.push(`0x${hit.toString(16)}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
  return { table: null, rejected };
}

function decodeAt(mem: GuestMemory, digitsPhys: bigint, known: KnownNames | undefined): KallsymsTable {
  const range = mem.layout.find((r) => digitsPhys >= r.gpa && digitsPhys - r.gpa < r.size);
  if (!range) throw new KallsymsError('candidate is outside guest RAM');
  // A small copy first: most candidates (digit runs elsewhere in RAM) fail the token checks.
  const small = readWindow(mem, range, digitsPhys, BigInt(0x31 * (MAX_TOKEN_LEN + 1) + 64), 8192n);
  const tokens = checkTokens(small.buf, Number(digitsPhys - small.start));
  const tokenTablePhys = small.start + BigInt(tokens.tokenTable);
  // Then one bounded copy holding everything from the offsets to the token table,
  // clipped to the RAM range (kernel images are physically contiguous). A 6.1
  // distribution kernel needs ~2 MB; the window grows only if that is not enough.
  for (const before of WINDOWS_BEFORE) {
    const big = readWindow(mem, range, tokenTablePhys, BigInt(before), 0n);
    // 6.4+: the offsets and the relative base follow the token index.
    const afterIndex = tokenTablePhys + BigInt(align8(tokens.indexEnd));
    const offsetsAfter = (n: number): Buffer | null => {
      const len = BigInt(align8(4 * n) + 8);
      if (afterIndex + len > range.gpa + range.size) return null;
      return mem.readPhys(afterIndex, Number(len));
    };
    const tokenTable = Number(tokenTablePhys - big.start);
    const found = findCount(big.buf, tokenTable, offsetsAfter);
    if (typeof found === 'number') {
      throw new KallsymsError(`the names of ${found} symbols decode, but no kallsyms_offsets beside them decode to ascending kernel addresses from a kallsyms_relative_base: an address encoding this version does not read (e.g. the place-relative offsets of Linux 7.0+, which have no relative base); a System.map cannot stand in, since it is placed by that base`);
    }
    if (found) {
      const tokenBytes = small.buf.subarray(tokens.tokenTable, tokens.tokenTable + tokens.indexEnd);
      const buildKey = createHash('sha256').update(big.buf.subarray(found.namesStart - 8, tokenTable)).update(tokenBytes).digest('hex');
      // Decoding ~100k names is most of the work: another guest of the same build did it already.
      const names = known?.(buildKey) ?? decodeNames(big.buf, found.addresses.length, found.namesStart, tokens.tokens);
      return { tokenTablePhys, relativeBase: found.relativeBase, addresses: found.addresses, order: found.order, names: names.names, types: names.types, buildKey };
    }
    if (big.start === range.gpa) break; // the window already reaches the start of RAM
  }
  throw new KallsymsError('no symbol count makes the markers, names and count agree');
}

type Decoded = { relativeBase: bigint; namesStart: number; addresses: BigUint64Array; order: KallsymsTable['order'] };
/** kallsyms_offsets[n] then kallsyms_relative_base, when they follow the token index (6.4+). */
type OffsetsAfter = (n: number) => Buffer | null;

/**
 * Finds N: the markers, seqs and names must line up exactly below the token table. A number:
 * the names of that many symbols line up but no offsets decode (an unknown address encoding).
 */
function findCount(buf: Buffer, tokenTable: number, after: OffsetsAfter): Decoded | number | null {
  const maxN = Math.min(MAX_SYMBOLS, Math.floor(tokenTable / 8));
  let namesOnly: number | null = null;
  // Without seqs the markers sit at the same place for 256 counts in a row: their check and the
  // scan for kallsyms_num_syms below them are made once per place (per count, they were most of
  // a 5.10 kernel's discovery).
  const blocks = new MarkerBlocks(buf);
  for (let n = 256; n <= maxN; n++) {
    const markerCount = (n + 255) >> 8;
    const seqsStart = tokenTable - align8(3 * n);
    for (const withSeqs of [true, false]) {
      const markersStart = (withSeqs ? seqsStart : tokenTable) - align8(4 * markerCount);
      if (markersStart < 16 || buf.readUInt32LE(markersStart) !== 0) continue;
      const table = tryN(buf, n, markersStart, blocks.at(markersStart, markerCount), after);
      if (table === 'no-offsets') namesOnly ??= n;
      else if (table) return table;
    }
  }
  return namesOnly;
}

/**
 * kallsyms_markers at one place: whether they are plausible, and for each symbol count they
 * allow, where that count stands 8 bytes before an 8-aligned names start (highest first).
 */
interface MarkerBlock { readonly lastMarker: number; readonly starts: Map<number, number[]> }

/** The last few marker blocks asked for (one place per count with seqs, one per 256 counts without). */
class MarkerBlocks {
  private readonly recent = new Map<string, MarkerBlock | null>();
  constructor(private readonly buf: Buffer) {}

  at(markersStart: number, markerCount: number): MarkerBlock | null {
    const key = `${markersStart}:${markerCount}`;
    let b = this.recent.get(key);
    if (b === undefined) {
      b = this.read(markersStart, markerCount);
      if (this.recent.size >= 4) this.recent.clear();
      this.recent.set(key, b);
    }
    return b;
  }

  private read(markersStart: number, markerCount: number): MarkerBlock | null {
    const buf = this.buf;
    let prev = 0;
    for (let i = 1; i < markerCount; i++) {
      const m = buf.readUInt32LE(markersStart + 4 * i);
      // each block of 256 symbols takes at least 2 bytes per symbol
      if (m < prev + 512 || m - prev > 256 * 0x4002) return null;
      prev = m;
    }
    const lastMarker = prev;
    // names starts 8-aligned right after num_syms; each aligned start that leaves room, highest first.
    const highest = markersStart - lastMarker - 8;
    const lowest = Math.max(24, highest - 256 * 300);
    const minN = 256 * (markerCount - 1) + 1;
    const maxN = 256 * markerCount;
    const starts = new Map<number, number[]>();
    for (let x = highest & ~7; x >= lowest; x -= 8) {
      const n = buf.readUInt32LE(x - 8);
      if (n < minN || n > maxN) continue;
      const xs = starts.get(n);
      if (xs) xs.push(x); else starts.set(n, [x]);
    }
    return { lastMarker, starts };
  }
}

function tryN(buf: Buffer, n: number, markersStart: number, block: MarkerBlock | null, after: OffsetsAfter): Decoded | 'no-offsets' | null {
  if (!block) return null;
  const markerCount = (n + 255) >> 8;
  const tailSymbols = n - 256 * (markerCount - 1);
  for (const x of block.starts.get(n) ?? []) {
    let off = x + block.lastMarker;
    let ok = true;
    for (let s = 0; s < tailSymbols; s++) {
      if (off >= markersStart) { ok = false; break; }
      let len = buf[off] as number;
      off++;
      if (len & 0x80) { len = (len & 0x7f) | ((buf[off] as number) << 7); off++; }
      if (len === 0) { ok = false; break; }
      off += len;
    }
    if (!ok || off > markersStart || align8(off) !== markersStart) continue;
    // 6.4+ first (names-first): offsets after the token index; then the older order below.
    const tail = after(n);
    const afterAddrs = tail ? decodeOffsets(tail, 0, n, tail.readBigUInt64LE(align8(4 * n))) : null;
    if (afterAddrs) return { namesStart: x, ...afterAddrs, order: 'names-first' };
    if (x - 16 - align8(4 * n) < 0) return null; // offsets start before this window: a bigger one will do
    const beforeAddrs = decodeOffsets(buf, x - 16 - align8(4 * n), n, buf.readBigUInt64LE(x - 16));
    if (beforeAddrs) return { namesStart: x, ...beforeAddrs, order: 'offsets-first' };
    return 'no-offsets';
  }
  return null;
}

const KERNEL_HALF = 0xffff_0000_0000_0000n;

/**
 * kallsyms_offsets[n] at `at` with this relative base, or null unless they decode to a
 * kernel-half base and addresses in kallsyms order (sorted ascending).
 */
function decodeOffsets(buf: Buffer, at: number, n: number, relativeBase: bigint): { relativeBase: bigint; addresses: BigUint64Array } | null {
  if (relativeBase < KERNEL_HALF || at < 0 || at + 4 * n > buf.length) return null;
  // CONFIG_KALLSYMS_ABSOLUTE_PERCPU: negative offsets are relative to base-1, others absolute.
  // Without it every offset is an unsigned distance from the base; a kernel image is far
  // smaller than 2 GiB, so any negative offset means the absolute-percpu encoding.
  let absolutePercpu = false;
  for (let i = 0; i < n; i++) if (buf.readInt32LE(at + 4 * i) < 0) { absolutePercpu = true; break; }
  // In 32-bit halves (no BigInt per symbol): addresses[i] is words[2i] + 2^32 * words[2i+1] on
  // little-endian x86-64, the only host this runs on.
  const addresses = new BigUint64Array(n);
  const words = new Uint32Array(addresses.buffer, addresses.byteOffset, 2 * n);
  const baseLo = Number(relativeBase & 0xffff_ffffn);
  const baseHi = Number(relativeBase >> 32n);
  let prevHi = 0;
  let prevLo = 0;
  for (let i = 0; i < n; i++) {
    const o = buf.readInt32LE(at + 4 * i);
    let lo: number;
    let hi: number;
    if (absolutePercpu && o >= 0) { lo = o; hi = 0; } else {
      // base + (o as u32), or base - 1 - o for a negative absolute-percpu offset: both add < 2^32.
      const add = absolutePercpu ? -1 - o : o >>> 0;
      const sum = baseLo + add;
      lo = sum >>> 0;
      hi = (baseHi + (sum >= 0x1_0000_0000 ? 1 : 0)) >>> 0;
    }
    if (hi < prevHi || (hi === prevHi && lo < prevLo)) return null;
    words[2 * i] = lo;
    words[2 * i + 1] = hi;
    prevHi = hi;
    prevLo = lo;
  }
  return { relativeBase, addresses };
}

function decodeNames(buf: Buffer, n: number, namesStart: number, tokens: string[]): { names: string[]; types: string } {
  // Every name expanded into one buffer, NUL after each (tokens never hold a NUL: they are read
  // up to one), then one string sliced: a string per token appended, or a Buffer.copy per token,
  // cost more than the rest of discovery.
  const tokenBytes = tokens.map((tk) => Buffer.from(tk, 'latin1'));
  let out = Buffer.allocUnsafe(Math.max(1 << 16, 24 * n));
  const types = Buffer.allocUnsafe(n);
  let w = 0;
  let off = namesStart;
  for (let i = 0; i < n; i++) {
    let len = buf[off] as number;
    off++;
    if (len & 0x80) { len = (len & 0x7f) | ((buf[off] as number) << 7); off++; }
    const first = w;
    for (let k = 0; k < len; k++) {
      const tk = tokenBytes[buf[off + k] as number] as Buffer;
      if (w + tk.length + 1 > out.length) {
        const bigger = Buffer.allocUnsafe(2 * (w + tk.length + 1));
        out.copy(bigger, 0, 0, w);
        out = bigger;
      }
      for (let j = 0; j < tk.length; j++) out[w++] = tk[j] as number;
    }
    if (w + 1 > out.length) {
      const bigger = Buffer.allocUnsafe(2 * (w + 1));
      out.copy(bigger, 0, 0, w);
      out = bigger;
    }
    out[w++] = 0;
    off += len;
    // The first character is the type letter; an empty expansion has neither.
    types[i] = w - first > 1 ? out[first] as number : 0;
  }
  const all = out.toString('latin1', 0, w);
  const names: string[] = new Array<string>(n);
  for (let i = 0, at = 0; i < n; i++) {
    const end = all.indexOf('\0', at);
    names[i] = end > at ? all.slice(at + 1, end) : '';
    at = end + 1;
  }
  return { names, types: types.toString('latin1') };
}

function readWindow(mem: GuestMemory, range: RamRange, at: bigint, before: bigint, after: bigint): { start: bigint; buf: Buffer } {
  let start = at > before ? at - before : 0n;
  if (start < range.gpa) start = range.gpa;
  start &= ~7n; // keep the 8-byte alignment of the kallsyms labels visible in buffer offsets
  if (start < range.gpa) start += 8n;
  const rangeEnd = range.gpa + range.size;
  const end = at + after < rangeEnd ? at + after : rangeEnd;
  return { start, buf: mem.readPhys(start, Number(end - start)) };
}

/** Checks the 256 tokens around the digit run and the token index after them. */
function checkTokens(buf: Buffer, digits: number): { tokenTable: number; tokens: string[]; indexEnd: number } {
  // Walk back over the 48 tokens before "0" (index 0x30) to the table's start.
  let p = digits;
  for (let k = 0; k < 0x30; k++) {
    if (p < 2 || buf[p - 1] !== 0) throw new KallsymsError(`token ${0x2f - k} is not NUL-terminated`);
    let q = p - 2;
    const stop = Math.max(0, p - 1 - MAX_TOKEN_LEN);
    while (q > stop && buf[q - 1] !== 0) q--;
    if (q === stop && q > 0 && buf[q - 1] !== 0) throw new KallsymsError('token longer than 256 bytes');
    if (q >= p - 1) throw new KallsymsError('empty token');
    p = q;
  }
  const tokenTable = p;
  if ((tokenTable & 7) !== 0) throw new KallsymsError(`token table at +0x${tokenTable.toString(16)} is not 8-aligned`);
  const tokens: string[] = [];
  const tokenOffsets: number[] = [];
  let q = tokenTable;
  for (let i = 0; i < 256; i++) {
    const end = buf.indexOf(0, q);
    if (end < 0 || end - q > MAX_TOKEN_LEN) throw new KallsymsError(`token ${i} runs off the window`);
    tokenOffsets.push(q - tokenTable);
    tokens.push(buf.toString('latin1', q, end));
    q = end + 1;
  }
  const tokenIndex = align8(q);
  if (tokenIndex + 512 > buf.length) throw new KallsymsError('token index runs off the window');
  for (let i = 0; i < 256; i++) {
    if (buf.readUInt16LE(tokenIndex + 2 * i) !== tokenOffsets[i]) throw new KallsymsError(`token index entry ${i} does not match the token table`);
  }

  // indexEnd: where the token index ends, relative to the token table.
  return { tokenTable, tokens, indexEnd: tokenIndex + 512 - tokenTable };
}

// Kernel symbols by name and by address, from kallsyms in guest memory or from
// a user's System.map / Volatility 3 ISF (optional overrides).
import type { KallsymsTable } from './kallsyms.js';

export interface SymbolHit {
  readonly name: string;
  readonly address: bigint;
  readonly offset: bigint;
}

/** What a symbol table derives from its names and address order: shared by the tables of one kernel build. */
interface SymbolIndex {
  readonly byName: NameIndex;
  /** Indices of non-absolute symbols sorted by address, for address -> symbol. */
  readonly sorted: Uint32Array;
}

export class SymbolTable {
  private readonly byName: NameIndex;
  private readonly sorted: Uint32Array;

  constructor(readonly names: readonly string[], readonly types: string, readonly addresses: BigUint64Array, shared?: SymbolTable) {
    if (names.length !== addresses.length || types.length !== names.length) throw new Error('symbol table: names, types and addresses differ in length');
    const index: SymbolIndex = shared && shared.names === names && shared.types === types && inOrder(shared.sorted, addresses)
      ? { byName: shared.byName, sorted: shared.sorted }
      : buildIndex(names, types, addresses);
    this.byName = index.byName;
    this.sorted = index.sorted;
  }

  /**
   * The same symbols at other addresses (another guest of the same kernel build, another KASLR
   * slide): names and both indices are shared, not copied, when the address order is unchanged.
   */
  withAddresses(addresses: BigUint64Array): SymbolTable {
    return new SymbolTable(this.names, this.types, addresses, this);
  }

  static fromKallsyms(t: KallsymsTable): SymbolTable {
    return new SymbolTable(t.names, t.types, t.addresses);
  }

  get size(): number { return this.names.length; }

  has(name: string): boolean { return this.byName.has(name); }

  /** Address of `name`, or undefined. */
  address(name: string): bigint | undefined {
    const i = this.byName.get(name);
    return i === undefined ? undefined : this.addresses[i];
  }

  /** Address of `name`; throws naming the symbol when the kernel lacks it. */
  require(name: string): bigint {
    const a = this.address(name);
    if (a === undefined) throw new Error(`kernel symbol ${name} not found`);
    return a;
  }

  type(name: string): string | undefined {
    const i = this.byName.get(name);
    return i === undefined ? undefined : this.types[i];
  }

  /** The symbol containing `address` (greatest start <= address), or null below the first. */
  lookup(address: bigint): SymbolHit | null {
    let lo = 0;
    let hi = this.sorted.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const a = this.addresses[this.sorted[mid] as number] as bigint;
      if (a <= address) { best = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (best < 0) return null;
    // Several names can share an address; prefer a global one.
    let pick = this.sorted[best] as number;
    const at = this.addresses[pick] as bigint;
    for (let k = best; k >= 0 && this.addresses[this.sorted[k] as number] === at; k--) {
      const i = this.sorted[k] as number;
      if (isGlobal(this.types.charCodeAt(i)) && !isGlobal(this.types.charCodeAt(pick))) pick = i;
    }
    return { name: this.names[pick] as string, address: at, offset: address - at };
  }

  /** Every name at exactly `address` (aliases: e.g. 5.10's no-argument ia32 syscall stubs are the x64 ones). */
  namesAt(address: bigint): string[] {
    let lo = 0;
    let hi = this.sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((this.addresses[this.sorted[mid] as number] as bigint) < address) lo = mid + 1; else hi = mid - 1;
    }
    const out: string[] = [];
    for (let k = lo; k < this.sorted.length && this.addresses[this.sorted[k] as number] === address && out.length < 64; k++) out.push(this.names[this.sorted[k] as number] as string);
    return out;
  }

  /** Bytes from `name` to the next symbol at a higher address: an upper bound on its size. */
  extent(name: string): number | undefined {
    const start = this.address(name);
    if (start === undefined) return undefined;
    let lo = 0;
    let hi = this.sorted.length - 1;
    let next: bigint | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const a = this.addresses[this.sorted[mid] as number] as bigint;
      if (a > start) { next = a; hi = mid - 1; } else lo = mid + 1;
    }
    return next === undefined ? undefined : Number(next - start);
  }
}

/** Name indexes by names array: tables of one build (two images of it in one RAM, other guests) share one. */
const nameIndexes = new WeakMap<readonly string[], { types: string; index: NameIndex }>();

function buildIndex(names: readonly string[], types: string, addresses: BigUint64Array): SymbolIndex {
  let held = nameIndexes.get(names);
  if (held?.types !== types) {
    held = { types, index: new NameIndex(names, types) };
    nameIndexes.set(names, held);
  }
  const byName = held.index;
  let kept = 0;
  const all = new Uint32Array(names.length);
  for (let i = 0; i < names.length; i++) {
    const c = types.charCodeAt(i);
    if (c !== 0x41 && c !== 0x61) all[kept++] = i; // not 'A'/'a' (absolute)
  }
  const sorted = all.slice(0, kept);
  // kallsyms lists symbols in address order already: then the sort (BigInt compares) is not needed.
  if (inOrder(sorted, addresses)) return { byName, sorted };
  const idx = Array.from(sorted);
  idx.sort((a, b) => {
    const x = addresses[a] as bigint;
    const y = addresses[b] as bigint;
    return x < y ? -1 : x > y ? 1 : a - b;
  });
  return { byName, sorted: Uint32Array.from(idx) };
}

/** Whether `sorted` (built for other addresses) still orders these addresses as buildIndex would. */
function inOrder(sorted: Uint32Array, addresses: BigUint64Array): boolean {
  // In 32-bit halves (little-endian x86-64, the only host this runs on): no BigInt per read.
  const w = new Uint32Array(addresses.buffer, addresses.byteOffset, 2 * addresses.length);
  for (let k = 1; k < sorted.length; k++) {
    const a = sorted[k - 1] as number;
    const b = sorted[k] as number;
    const ah = w[2 * a + 1] as number;
    const bh = w[2 * b + 1] as number;
    if (ah !== bh) { if (ah > bh) return false; continue; }
    const al = w[2 * a] as number;
    const bl = w[2 * b] as number;
    if (al > bl || (al === bl && a > b)) return false;
  }
  return true;
}

/**
 * Symbol names to their index: an open-addressed table of typed arrays (a Map of ~100k strings
 * was the largest part of discovery after the names' decode). For a name held several times, a
 * global definition wins over a static one, else the first listed.
 */
export class NameIndex {
  /** Symbol index + 1 per slot (0: empty), and the full hash of that slot's name. */
  private readonly slots: Int32Array;
  private readonly hashes: Uint32Array;
  private readonly mask: number;

  constructor(private readonly names: readonly string[], types: string) {
    let size = 1024;
    while (size < 2 * names.length) size *= 2;
    this.slots = new Int32Array(size);
    this.hashes = new Uint32Array(size);
    this.mask = size - 1;
    for (let i = 0; i < names.length; i++) {
      const name = names[i] as string;
      const h = stringHash(name);
      for (let b = h & this.mask; ; b = (b + 1) & this.mask) {
        const held = this.slots[b] as number;
        if (held === 0) { this.slots[b] = i + 1; this.hashes[b] = h; break; }
        if (this.hashes[b] === h && names[held - 1] === name) {
          if (isGlobal(types.charCodeAt(i)) && !isGlobal(types.charCodeAt(held - 1))) this.slots[b] = i + 1;
          break;
        }
      }
    }
  }

  get(name: string): number | undefined {
    const h = stringHash(name);
    for (let b = h & this.mask; ; b = (b + 1) & this.mask) {
      const held = this.slots[b] as number;
      if (held === 0) return undefined;
      if (this.hashes[b] === h && this.names[held - 1] === name) return held - 1;
    }
  }

  has(name: string): boolean { return this.get(name) !== undefined; }
}

/** FNV-1a over the UTF-16 code units (kallsyms names are ASCII). */
function stringHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x0100_0193);
  return h >>> 0;
}

function isGlobal(c: number): boolean {
  return c >= 65 && c <= 90; // upper-case kallsyms type letter
}

/** Parses System.map ("ffffffff81000000 T _text" per line); throws naming the first bad line. */
export function parseSystemMap(text: string, source = 'System.map'): SymbolTable {
  const names: string[] = [];
  const types: string[] = [];
  const addrs: bigint[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    const m = /^([0-9a-fA-F]{1,16})\s+([A-Za-z?])\s+(\S+)(?:\s+\[\S+\])?$/.exec(line);
    if (!m) throw new Error(`${source}:${i + 1}: not "<hex address> <type> <name>": ${line.slice(0, 80)}`);
    addrs.push(BigInt('0x' + (m[1] as string)));
    types.push(m[2] as string);
    names.push(m[3] as string);
  }
  if (names.length === 0) throw new Error(`${source}: no symbols`);
  return new SymbolTable(names, types.join(''), BigUint64Array.from(addrs));
}

/** Rebases every non-absolute symbol by `slide` (a System.map from disk describes the unrandomised kernel). */
export function slideSymbols(t: SymbolTable, slide: bigint): SymbolTable {
  const addrs = new BigUint64Array(t.addresses.length);
  for (let i = 0; i < addrs.length; i++) {
    const c = t.types[i];
    addrs[i] = c === 'A' || c === 'a' ? (t.addresses[i] as bigint) : ((t.addresses[i] as bigint) + slide) & 0xffff_ffff_ffff_ffffn;
  }
  return t.withAddresses(addrs);
}

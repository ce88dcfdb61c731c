// Kernel profiles shared by every guest that runs the same kernel build: the
// decoded kallsyms names and their indices (by name, by address), and the parsed
// BTF, are the same for every guest of one build, so they are decoded once per
// process and only what differs (the addresses, by the guest's KASLR slide) is
// per guest. A build is keyed by the bytes it was decoded from (sha256 of the
// kallsyms tables; sha256 of the BTF blob): a guest can only ever get what its
// own memory holds, never another guest's different data under the same key.
//
// Bounded: a build stays while a guest uses it (a lease, released when the
// guest's Introspector closes) and, unused, among the `maxIdle` most recently
// released ones (a rebooting guest comes back to its build); the others go.
import { createHash } from 'node:crypto';
import { Btf } from './btf.js';
import type { SymbolTable } from './symbols.js';

interface Entry<T> {
  readonly value: T;
  users: number;
  /** Order of the last release (for evicting the least recently used idle entry). */
  releasedAt: number;
}

/** Values by key, kept while leased and up to `maxIdle` more when not. */
export class SharedByKey<T> {
  private readonly entries = new Map<string, Entry<T>>();
  private releases = 0;

  constructor(readonly maxIdle: number) {}

  /** The value kept for `key` (leased or idle), without taking a lease. */
  peek(key: string): T | undefined {
    return this.entries.get(key)?.value;
  }

  /** A lease on the value for `key`: the kept one, or `make()`'s, kept from now on. release() is idempotent. */
  acquire(key: string, make: () => T): { readonly value: T; readonly shared: boolean; release(): void } {
    let e = this.entries.get(key);
    const shared = e !== undefined;
    if (!e) {
      e = { value: make(), users: 0, releasedAt: 0 };
      this.entries.set(key, e);
    }
    e.users++;
    const entry = e;
    let released = false;
    return {
      value: entry.value,
      shared,
      release: () => {
        if (released) return;
        released = true;
        entry.users--;
        entry.releasedAt = ++this.releases;
        this.evict();
      },
    };
  }

  /** Entries kept: leased (in use by a guest) and idle. */
  get stats(): { leased: number; idle: number } {
    let leased = 0;
    for (const e of this.entries.values()) if (e.users > 0) leased++;
    return { leased, idle: this.entries.size - leased };
  }

  private evict(): void {
    const idle = [...this.entries].filter(([, e]) => e.users === 0).sort((a, b) => a[1].releasedAt - b[1].releasedAt);
    for (let i = 0; i < idle.length - this.maxIdle; i++) this.entries.delete((idle[i] as [string, Entry<T>])[0]);
  }
}

/** What one guest holds of the shared profiles; give it back with release() when the guest's view closes. */
export interface ProfileLease {
  /** Whether the symbols / BTF came decoded from another guest of the same build. */
  readonly sharedSymbols: boolean;
  readonly sharedBtf: boolean;
  release(): void;
}

export class ProfileCache {
  /** The first guest's symbol table of each build: its names and indices serve every other guest of the build. */
  readonly symbols: SharedByKey<SymbolTable>;
  readonly btf: SharedByKey<Btf>;

  constructor(maxIdle = 2) {
    this.symbols = new SharedByKey(maxIdle);
    this.btf = new SharedByKey(maxIdle);
  }

  /** Names and types decoded before for this kallsyms build key (see findKallsyms). */
  names(buildKey: string): { names: readonly string[]; types: string } | undefined {
    const s = this.symbols.peek(buildKey);
    return s ? { names: s.names, types: s.types } : undefined;
  }

  /** This guest's symbol table: the build's shared names and indices at this guest's addresses, when the build is known. */
  symbolsAt(buildKey: string, addresses: BigUint64Array): SymbolTable | undefined {
    return this.symbols.peek(buildKey)?.withAddresses(addresses);
  }

  /** Leases the chosen kernel's symbols and its BTF (parsed here unless a guest with the same bytes did). */
  lease(buildKey: string, symbols: SymbolTable, btfBytes: Buffer): { btf: Btf; lease: ProfileLease } {
    const s = this.symbols.acquire(buildKey, () => symbols);
    let b;
    try {
      b = this.btf.acquire(createHash('sha256').update(btfBytes).digest('hex'), () => new Btf(btfBytes));
    } catch (e) {
      s.release();
      throw e;
    }
    return {
      btf: b.value,
      lease: { sharedSymbols: s.shared, sharedBtf: b.shared, release: () => { s.release(); b.release(); } },
    };
  }
}

/** The process-wide cache every attach uses unless told otherwise. */
export const sharedProfiles = new ProfileCache();

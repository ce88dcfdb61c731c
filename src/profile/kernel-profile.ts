// A kernel profile: what the views need to know about one running kernel —
// its symbols (by name and by address) and its structure layouts. Built from
// guest memory alone (kallsyms + BTF) by src/views/discovery.ts; either half
// can be replaced by a user's System.map or Volatility ISF.
import type { SymbolTable } from './symbols.js';
import type { StructLayouts } from './layouts.js';

export class KernelProfile {
  constructor(
    readonly symbols: SymbolTable,
    readonly layouts: StructLayouts,
    /** Where symbols and layouts came from, for reports ("kallsyms@0x...", "btf", "System.map"). */
    readonly origin: { readonly symbols: string; readonly layouts: string },
  ) {}

  symbol(name: string): bigint { return this.symbols.require(name); }
  optionalSymbol(name: string): bigint | undefined { return this.symbols.address(name); }
  offsetof(struct: string, path: string): number { return this.layouts.offsetof(struct, path); }
  sizeof(struct: string): number { return this.layouts.sizeof(struct); }
}

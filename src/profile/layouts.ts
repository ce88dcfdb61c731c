// Structure layouts: where a member lies in a kernel struct. From the guest's
// BTF by default; from a Volatility 3 ISF file when the user supplies one.
import { compiledOnUse } from '../util/lazy-validator.js';
import { ajvClass } from '../util/deferred-modules.js';
import { Btf } from './btf.js';
import { SymbolTable } from './symbols.js';

export interface StructLayouts {
  /** Byte offset of `path` ("tasks", "se.run_node") in `struct`; throws naming both when absent. */
  offsetof(struct: string, path: string): number;
  sizeof(struct: string): number;
  has(struct: string, path: string): boolean;
}

export class BtfLayouts implements StructLayouts {
  /** has()'s answers: views ask per scan, and a missing member costs a thrown error each time. */
  private readonly known = new Map<string, boolean>();
  constructor(readonly btf: Btf) {}
  offsetof(struct: string, path: string): number { return this.btf.offsetof(struct, path); }
  sizeof(struct: string): number { return this.btf.sizeofStruct(struct); }
  has(struct: string, path: string): boolean {
    const key = `${struct}.${path}`;
    let v = this.known.get(key);
    if (v === undefined) {
      try { this.btf.member(struct, path); v = true; } catch { v = false; }
      if (this.known.size >= 4096) this.known.clear(); // bounded whatever asks
      this.known.set(key, v);
    }
    return v;
  }
}

interface IsfTypeRef { kind: string; name?: string; subtype?: IsfTypeRef; count?: number }
interface IsfField { offset: number; type: IsfTypeRef; anonymous?: boolean }
interface IsfUserType { kind: string; size: number; fields: Record<string, IsfField> }
interface IsfDocument {
  symbols?: Record<string, { address: number | string; type?: unknown }>;
  user_types: Record<string, IsfUserType>;
}

const isfSchema = {
  type: 'object',
  required: ['user_types'],
  properties: {
    symbols: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        required: ['address'],
        // parseIsf() turns addresses into decimal strings: kernel addresses do not fit a double
        properties: { address: { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'string', pattern: '^[0-9]{1,20}$' }] } },
      },
    },
    user_types: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        required: ['kind', 'size', 'fields'],
        properties: {
          kind: { type: 'string' },
          size: { type: 'integer', minimum: 0 },
          fields: {
            type: 'object',
            additionalProperties: {
              type: 'object',
              required: ['offset', 'type'],
              properties: { offset: { type: 'integer', minimum: 0 }, type: { type: 'object' }, anonymous: { type: 'boolean' } },
            },
          },
        },
      },
    },
  },
} as const;

const validateIsf = compiledOnUse(() => new (ajvClass())({ allErrors: false }).compile<IsfDocument>(isfSchema));

/** Layouts from a Volatility 3 ISF JSON document (already parsed). */
export class IsfLayouts implements StructLayouts {
  private readonly types: Record<string, IsfUserType>;

  constructor(doc: unknown, readonly source = 'ISF') {
    if (!validateIsf(doc)) {
      const e = validateIsf.errors?.[0];
      throw new Error(`${source}: not a Volatility ISF: ${e?.instancePath || '/'} ${e?.message ?? 'invalid'}`);
    }
    this.types = doc.user_types;
  }

  offsetof(struct: string, path: string): number {
    let type = this.types[struct];
    if (!type) throw new Error(`${this.source}: no struct ${struct}`);
    let offset = 0;
    for (const part of path.split('.')) {
      const hit = this.field(type, part, 0);
      if (!hit) throw new Error(`${this.source}: ${struct} has no member ${path} (missing "${part}")`);
      offset += hit.offset;
      const next = hit.field.type.name ? this.types[hit.field.type.name] : undefined;
      type = next ?? { kind: 'scalar', size: 0, fields: {} };
    }
    return offset;
  }

  sizeof(struct: string): number {
    const t = this.types[struct];
    if (!t) throw new Error(`${this.source}: no struct ${struct}`);
    return t.size;
  }

  has(struct: string, path: string): boolean {
    try { this.offsetof(struct, path); return true; } catch { return false; }
  }

  private field(type: IsfUserType, name: string, depth: number): { offset: number; field: IsfField } | null {
    if (depth > 16) return null;
    const direct = type.fields[name];
    if (direct) return { offset: direct.offset, field: direct };
    for (const f of Object.values(type.fields)) {
      const inner = f.anonymous && f.type.name ? this.types[f.type.name] : undefined;
      if (!inner) continue;
      const hit = this.field(inner, name, depth + 1);
      if (hit) return { offset: hit.offset + f.offset, field: hit.field };
    }
    return null;
  }
}

/** Parses ISF JSON text keeping symbol addresses exact (JSON.parse would round them to doubles). */
export function parseIsf(text: string, source = 'ISF'): unknown {
  try {
    return JSON.parse(text.replace(/("address"\s*:\s*)(\d+)/g, '$1"$2"'));
  } catch (e) {
    throw new Error(`${source}: not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Symbols of an ISF document (addresses as built, i.e. before the KASLR slide). */
export function isfSymbols(doc: unknown, source = 'ISF'): SymbolTable {
  if (!validateIsf(doc)) throw new Error(`${source}: not a Volatility ISF`);
  const entries = Object.entries(doc.symbols ?? {});
  if (entries.length === 0) throw new Error(`${source}: has no symbols`);
  return new SymbolTable(
    entries.map(([n]) => n),
    'T'.repeat(entries.length),
    BigUint64Array.from(entries.map(([, s]) => BigInt(s.address))),
  );
}

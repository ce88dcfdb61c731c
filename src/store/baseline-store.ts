// Kernel baselines in SQLite, one per guest and kernel (release + banner). Its
// table comes from the store's migrations.
import type { Database, Statement } from 'better-sqlite3';
import { Ajv } from 'ajv';
import type { BaselineStore, KernelBaseline } from '../detectors/baseline.js';
import { describeAjvErrors } from '../policy/schema.js';

const hexStr = { type: 'string', pattern: '^0x[0-9a-f]{1,16}$' } as const;
const schema = {
  type: 'object',
  required: ['version', 'kernelKey', 'recordedAtMs', 'syscalls', 'dispatchers', 'idt', 'lstar', 'boot'],
  properties: {
    version: { const: 1 },
    kernelKey: { type: 'string' },
    recordedAtMs: { type: 'number' },
    syscalls: { type: 'object', additionalProperties: { type: 'array', items: { anyOf: [hexStr, { type: 'null' }] } } },
    dispatchers: { type: 'object', additionalProperties: { type: 'string' } },
    idt: { type: 'array', items: hexStr },
    lstar: { anyOf: [hexStr, { type: 'null' }] },
    boot: {
      type: 'object',
      required: ['slide', 'textHash', 'rodataHash'],
      properties: { slide: hexStr, textHash: { type: ['string', 'null'] }, rodataHash: { type: ['string', 'null'] } },
    },
  },
} as const;
const validate = new Ajv({ allErrors: true, allowUnionTypes: true }).compile<KernelBaseline>(schema);

/** A baseline read from anywhere (the store, a file); the error says where and every bad field. */
export function parseBaseline(raw: unknown, where: string): KernelBaseline {
  if (!validate(raw)) throw new Error(`${where}: not a kernel baseline: ${describeAjvErrors(validate.errors).join('; ')}`);
  return raw;
}

export class SqliteBaselineStore implements BaselineStore {
  private readonly get: Statement<[string, string], { baseline: string }>;
  private readonly put: Statement<[string, string, string, number]>;

  /** `db` must be migrated (src/store/migrations.ts). */
  constructor(db: Database) {
    this.get = db.prepare('SELECT baseline FROM watchdog_baseline WHERE guest = ? AND kernel_key = ?');
    this.put = db.prepare(`INSERT INTO watchdog_baseline (guest, kernel_key, baseline, recorded_at_ms) VALUES (?, ?, ?, ?)
      ON CONFLICT (guest, kernel_key) DO UPDATE SET baseline = excluded.baseline, recorded_at_ms = excluded.recorded_at_ms`);
  }

  load(guest: string, kernelKey: string): KernelBaseline | null {
    const row = this.get.get(guest, kernelKey);
    if (!row) return null;
    return parseBaseline(JSON.parse(row.baseline), `baseline store: guest ${guest}`);
  }

  save(guest: string, b: KernelBaseline): void {
    this.put.run(guest, b.kernelKey, JSON.stringify(b), b.recordedAtMs);
  }
}

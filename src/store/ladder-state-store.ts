// The ladder engine's state in SQLite: one row per guest, written on every
// transition (before an action is carried out), plus a journal of actions
// (started / finished). Its tables come from the store's migrations.
import type { Database, Statement } from 'better-sqlite3';
import { Ajv } from 'ajv';
import { ACTION_KINDS, FAULT_KINDS } from '../policy/types.js';
import type { GuestLadderState, PendingAction } from '../policy/ladder.js';
import type { ActionJournalRow, LadderStateStore } from '../policy/ladder-store.js';
import { describeAjvErrors } from '../policy/schema.js';

const num = { type: 'number' } as const;
const nullableNum = { type: ['number', 'null'] } as const;
const nullableStr = { type: ['string', 'null'] } as const;
const faultKind = { type: 'string', enum: [...FAULT_KINDS] } as const;
const stateSchema = {
  type: 'object',
  required: ['version', 'guest', 'seq', 'ladders', 'pending', 'actionTimesMs', 'held', 'capWaitSinceMs'],
  properties: {
    version: { const: 1 },
    guest: { type: 'string' },
    seq: { type: 'integer', minimum: 0 },
    ladders: {
      type: 'array',
      items: {
        type: 'object',
        required: ['kind', 'findingId', 'target', 'phase', 'rung', 'attemptsOnRung', 'totalActions', 'startedAtMs',
          'lastActionEndMs', 'verifyUntilMs', 'healthySinceMs', 'retryAfterMs'],
        properties: {
          kind: faultKind, findingId: nullableStr, target: nullableStr,
          phase: { type: 'string', enum: ['ready', 'verifying', 'watching', 'exhausted'] },
          rung: { type: 'integer', minimum: 0 }, attemptsOnRung: { type: 'integer', minimum: 0 }, totalActions: { type: 'integer', minimum: 0 },
          startedAtMs: num, lastActionEndMs: nullableNum, verifyUntilMs: nullableNum, healthySinceMs: nullableNum, retryAfterMs: nullableNum,
        },
      },
    },
    pending: {
      anyOf: [
        { type: 'null' },
        {
          type: 'object',
          required: ['actionId', 'fault', 'findingId', 'action', 'target', 'rung', 'attempt', 'count', 'startedAtMs'],
          properties: {
            actionId: { type: 'string' }, fault: faultKind, findingId: nullableStr, action: { type: 'string', enum: [...ACTION_KINDS] },
            target: nullableStr, rung: { type: 'integer', minimum: 0 }, attempt: { type: 'integer', minimum: 1 },
            count: { type: 'integer', minimum: 1 }, startedAtMs: num,
          },
        },
      ],
    },
    actionTimesMs: { type: 'array', items: num },
    held: {
      anyOf: [{ type: 'null' }, { type: 'object', required: ['sinceMs', 'fault', 'reason'], properties: { sinceMs: num, fault: faultKind, reason: { type: 'string' } } }],
    },
    capWaitSinceMs: nullableNum,
  },
} as const;
const validateState = new Ajv({ allErrors: true, allowUnionTypes: true }).compile<GuestLadderState>(stateSchema);

interface StateRow { state: string }
interface ActionRow {
  action_id: string; guest: string; fault: string; action: string; rung: number; attempt: number;
  started_at_ms: number; finished_at_ms: number | null; outcome: string | null; error: string | null;
}

export class SqliteLadderStateStore implements LadderStateStore {
  private readonly st: {
    get: Statement<[string], StateRow>;
    put: Statement<[string, number, string, number]>;
    startAction: Statement<[string, string, string, string, number, number, number]>;
    endAction: Statement<[number, string, string | null, string]>;
    list: Statement<[string], ActionRow>;
  };

  /** `db` must be migrated (src/store/migrations.ts): the EventStore's connection, or openDatabase(). */
  constructor(readonly db: Database, private readonly where = 'ladder store') {
    this.st = {
      get: db.prepare('SELECT state FROM watchdog_ladder WHERE guest = ?'),
      put: db.prepare(`INSERT INTO watchdog_ladder (guest, seq, state, updated_at_ms) VALUES (?, ?, ?, ?)
        ON CONFLICT (guest) DO UPDATE SET seq = excluded.seq, state = excluded.state, updated_at_ms = excluded.updated_at_ms`),
      startAction: db.prepare(`INSERT INTO watchdog_actions (action_id, guest, fault, action, rung, attempt, started_at_ms)
        VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (action_id) DO NOTHING`),
      endAction: db.prepare('UPDATE watchdog_actions SET finished_at_ms = ?, outcome = ?, error = ? WHERE action_id = ? AND outcome IS NULL'),
      list: db.prepare('SELECT * FROM watchdog_actions WHERE guest = ? ORDER BY started_at_ms, rowid'),
    };
  }

  load(guest: string): GuestLadderState | null {
    const row = this.st.get.get(guest);
    if (!row) return null;
    let raw: unknown;
    try {
      raw = JSON.parse(row.state);
    } catch (e) {
      throw new Error(`${this.where}: ladder state of guest ${guest} is not JSON: ${(e as Error).message}`);
    }
    if (!validateState(raw)) throw new Error(`${this.where}: ladder state of guest ${guest}: ${describeAjvErrors(validateState.errors).join('; ')}`);
    if (raw.guest !== guest) throw new Error(`${this.where}: ladder row for ${guest} holds the state of ${raw.guest}`);
    return raw;
  }

  save(state: GuestLadderState): void {
    this.db.transaction(() => {
      this.put(state);
      const p: PendingAction | null = state.pending;
      if (p) this.st.startAction.run(p.actionId, state.guest, p.fault, p.action, p.rung, p.attempt, p.startedAtMs);
    })();
  }

  finishAction(state: GuestLadderState, actionId: string, outcome: 'ok' | 'failed' | 'interrupted', error: string | null, atMs: number): void {
    this.db.transaction(() => {
      this.put(state);
      this.st.endAction.run(atMs, outcome, error, actionId);
    })();
  }

  actions(guest: string): ActionJournalRow[] {
    return this.st.list.all(guest).map((r) => ({
      actionId: r.action_id, guest: r.guest, fault: r.fault, action: r.action, rung: r.rung, attempt: r.attempt,
      startedAtMs: r.started_at_ms, finishedAtMs: r.finished_at_ms,
      outcome: r.outcome === 'ok' || r.outcome === 'failed' || r.outcome === 'interrupted' ? r.outcome : null,
      error: r.error,
    }));
  }

  private put(state: GuestLadderState): void {
    this.st.put.run(state.guest, state.seq, JSON.stringify(state), Date.now());
  }
}

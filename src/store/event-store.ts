// The event store: SQLite (better-sqlite3) in WAL mode with synchronous=FULL,
// so record() returns only after the event is on disk. It keeps the event
// journal, the telemetry outbox, the refused-write log and the current state
// (guest health, open findings, ladders) that the web page and CLI show.
import BetterSqlite3, { type Database, type Statement } from 'better-sqlite3';
import { makeDirs } from '../util/fs.js';
import { dirname } from 'node:path';
import type { EventSink } from '../events/sink.js';
import { payloadProblem } from '../events/schemas.js';
import {
  eventGuest, type EventInput, type EventKind, type EventPayloads, type GuestHealthPayload,
  type FindingPayload, type LadderStepPayload, type RecordedEvent, type RefusedWritePayload,
} from '../events/types.js';
import { migrate, migrations } from './migrations.js';


export interface RetentionSettings {
  /** Journal events older than this are deleted (current state and the outbox are kept). */
  readonly maxAgeMs: number;
  /** At most this many journal events are kept; the oldest go first. */
  readonly maxEvents: number;
}

export interface EventStoreOptions {
  readonly path: string;
  /** Stamped on every event; when omitted, the id the store was last opened with (for the CLI). */
  readonly deviceId?: string;
  readonly retention?: RetentionSettings;
  /** Most undelivered events kept for telemetry; beyond it the oldest are dropped (and an outbox-dropped event says so). 0 disables the outbox. */
  readonly outboxLimit?: number;
  /** Open for reading only (the CLI, next to a running supervisor): no migrations, no retention, no writes. */
  readonly readOnly?: boolean;
  readonly now?: () => number;
}

export const defaultRetention: RetentionSettings = { maxAgeMs: 30 * 24 * 3600 * 1000, maxEvents: 1_000_000 };
export const defaultOutboxLimit = 200_000;
/** Retention is checked every this many records, not on every one. */
const retentionEvery = 1000;

export interface OutboxRow { readonly seq: number; readonly message: string }
export interface OutboxStats { readonly pending: number; readonly oldestSeq: number | null; readonly droppedTotal: number; readonly limit: number }

export interface EventQuery {
  readonly guest?: string;
  readonly sinceMs?: number;
  readonly kinds?: readonly EventKind[];
  /** Newest first when true (default), oldest first otherwise. */
  readonly newestFirst?: boolean;
  readonly limit?: number;
  readonly afterSeq?: number;
}

interface EventRow { seq: number; kind: string; guest: string | null; at_ms: number; payload: string }
interface PayloadRow { seq: number; payload: string }

/** A stored refused write; rows recorded before schema version 2 have no action, source or trap seq. */
export type RefusedWriteRow = Omit<RefusedWritePayload, 'action' | 'source' | 'trapSeq'> & {
  readonly seq: number;
  readonly action: RefusedWritePayload['action'] | null;
  readonly source: RefusedWritePayload['source'] | null;
  readonly trapSeq: number | null;
};

export class EventStore implements EventSink {
  readonly db: Database;
  readonly stream: string;
  readonly deviceId: string;
  readonly retention: RetentionSettings;
  readonly outboxLimit: number;
  private readonly now: () => number;
  private outboxCount: number;
  private sinceRetention = 0;
  private readonly outboxListeners = new Set<() => void>();
  private readonly stmt: {
    insertEvent: Statement<[string, string | null, number, string]>;
    insertOutbox: Statement<[number, string]>;
    deleteOutbox: Statement<[number]>;
    oldestOutbox: Statement<[number], OutboxRow>;
    insertRefused: Statement<unknown[]>;
    upsertGuest: Statement<[string, number, string]>;
    upsertFinding: Statement<[string, string, number, string]>;
    deleteFinding: Statement<[string, string]>;
    upsertLadder: Statement<[string, string, number, string]>;
    deleteLadder: Statement<[string, string]>;
    outboxAfter: Statement<[number, number], OutboxRow>;
  };

  constructor(opts: EventStoreOptions) {
    if (opts.deviceId !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(opts.deviceId)) throw new Error(`event store: device id "${opts.deviceId}" must be 1-64 of [A-Za-z0-9._-]`);
    this.retention = opts.retention ?? defaultRetention;
    this.outboxLimit = opts.outboxLimit ?? defaultOutboxLimit;
    this.now = opts.now ?? Date.now;
    // Any failure to open (a folder that cannot be made, a read-only or full filesystem, a file that
    // is not SQLite) is said as what it is: this database, at this path.
    const opened = ((): { db: Database; stream: string; deviceId: string } => {
      let db: Database | undefined;
      try {
        if (!opts.readOnly) makeDirs(dirname(opts.path));
        db = opts.readOnly ? new BetterSqlite3(opts.path, { readonly: true, fileMustExist: true }) : new BetterSqlite3(opts.path);
        db.pragma('busy_timeout = 5000');
        if (opts.readOnly) {
          const have = db.pragma('user_version', { simple: true }) as number;
          const want = migrations[migrations.length - 1]?.version ?? 0;
          if (have !== want) throw new Error(`schema version ${have}, this program reads ${want}`);
        } else {
          db.pragma('journal_mode = WAL');
        }
        // FULL: a commit is fsynced before record() returns (the WAL default NORMAL could lose the last commits on power loss).
        db.pragma('synchronous = FULL');
        db.pragma('foreign_keys = ON');
        if (!opts.readOnly) migrate(db, opts.path);
        const stream = (db.prepare("SELECT value FROM meta WHERE key = 'stream'").get() as { value: string } | undefined)?.value;
        if (!stream) throw new Error('meta has no stream id');
        let deviceId: string;
        if (opts.deviceId !== undefined && !opts.readOnly) {
          db.prepare("INSERT INTO meta (key, value) VALUES ('device', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(opts.deviceId);
          deviceId = opts.deviceId;
        } else {
          const dev = (db.prepare("SELECT value FROM meta WHERE key = 'device'").get() as { value: string } | undefined)?.value;
          if (!dev) throw new Error('no device id given and none recorded in the store');
          deviceId = dev;
        }
        return { db, stream, deviceId };
      } catch (e) {
        try { db?.close(); } catch { /* already unusable */ }
        throw new Error(`event store: cannot open the database ${opts.path}: ${(e as Error).message}`);
      }
    })();
    this.db = opened.db;
    this.stream = opened.stream;
    this.deviceId = opened.deviceId;
    const db = this.db;
    this.stmt = {
      insertEvent: db.prepare('INSERT INTO events (kind, guest, at_ms, payload) VALUES (?, ?, ?, ?)'),
      insertOutbox: db.prepare('INSERT INTO outbox (seq, message) VALUES (?, ?)'),
      deleteOutbox: db.prepare('DELETE FROM outbox WHERE seq = ?'),
      oldestOutbox: db.prepare('SELECT seq, message FROM outbox ORDER BY seq LIMIT ?'),
      insertRefused: db.prepare(`INSERT INTO refused_writes (seq, guest, refused_at_ms, vcpu, gpa, gva, length, rip, instruction, value, protected_table, entry,
                                   action, source, trap_seq, lost_before)
                                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      upsertGuest: db.prepare('INSERT INTO guest_state (guest, seq, payload) VALUES (?, ?, ?) ON CONFLICT (guest) DO UPDATE SET seq = excluded.seq, payload = excluded.payload'),
      upsertFinding: db.prepare('INSERT INTO open_findings (guest, finding_id, seq, payload) VALUES (?, ?, ?, ?) ON CONFLICT (guest, finding_id) DO UPDATE SET seq = excluded.seq, payload = excluded.payload'),
      deleteFinding: db.prepare('DELETE FROM open_findings WHERE guest = ? AND finding_id = ?'),
      upsertLadder: db.prepare('INSERT INTO ladder_state (guest, fault, seq, payload) VALUES (?, ?, ?, ?) ON CONFLICT (guest, fault) DO UPDATE SET seq = excluded.seq, payload = excluded.payload'),
      deleteLadder: db.prepare('DELETE FROM ladder_state WHERE guest = ? AND fault = ?'),
      outboxAfter: db.prepare('SELECT seq, message FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?'),
    };
    this.outboxCount = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
    if (!opts.readOnly) this.pruneRetention();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  record(event: EventInput): RecordedEvent {
    const [recorded] = this.recordMany([event]);
    return recorded as RecordedEvent;
  }

  recordMany(events: readonly EventInput[]): RecordedEvent[] {
    // Check everything first so a bad event refuses the whole batch, not half of it.
    events.forEach((e, i) => {
      const problem = payloadProblem(e.kind, e.payload);
      if (problem) throw new Error(`event store: event ${i} of ${events.length} (${e.kind}) refused: ${problem}`);
      if (e.kind === 'device-state') throw new Error('event store: device-state is a retained status published by telemetry, not a journal event');
    });
    const out = this.db.transaction(() => events.map((e) => this.insert(e)))();
    this.sinceRetention += events.length;
    if (this.sinceRetention >= retentionEvery) this.pruneRetention();
    if (this.outboxLimit > 0) for (const l of this.outboxListeners) l();
    return out;
  }

  /** Called (synchronously, after commit) whenever new events entered the outbox. */
  onOutbox(listener: () => void): () => void {
    this.outboxListeners.add(listener);
    return () => this.outboxListeners.delete(listener);
  }

  private insert(e: EventInput): RecordedEvent {
    const atMs = e.atMs ?? this.now();
    const guest = eventGuest(e);
    const payloadJson = JSON.stringify(e.payload);
    const seq = Number(this.stmt.insertEvent.run(e.kind, guest, atMs, payloadJson).lastInsertRowid);
    const recorded = { v: 1, id: `${this.stream}:${seq}`, stream: this.stream, seq, device: this.deviceId, kind: e.kind, atMs, guest, payload: e.payload } as RecordedEvent;
    this.project(recorded, payloadJson);
    if (this.outboxLimit > 0) {
      // Drop a chunk (1% of the bound) at a time so drop notices stay rare compared with the events they replace.
      if (this.outboxCount >= this.outboxLimit) this.dropOldest(this.outboxCount - this.outboxLimit + Math.max(2, Math.ceil(this.outboxLimit / 100)));
      this.stmt.insertOutbox.run(seq, JSON.stringify(recorded));
      this.outboxCount++;
    }
    return recorded;
  }

  /** Keeps the current-state tables in step with the journal. */
  private project(e: RecordedEvent, payloadJson: string): void {
    switch (e.kind) {
      case 'guest-health':
        this.stmt.upsertGuest.run(e.payload.guest, e.seq, payloadJson);
        break;
      case 'finding':
        if (e.payload.state === 'raised') this.stmt.upsertFinding.run(e.payload.guest, e.payload.findingId, e.seq, payloadJson);
        else this.stmt.deleteFinding.run(e.payload.guest, e.payload.findingId);
        break;
      case 'ladder-step':
        if (e.payload.step === null) this.stmt.deleteLadder.run(e.payload.guest, e.payload.fault);
        else this.stmt.upsertLadder.run(e.payload.guest, e.payload.fault, e.seq, payloadJson);
        break;
      case 'refused-write': {
        const p = e.payload;
        this.stmt.insertRefused.run(e.seq, p.guest, p.refusedAtMs, p.vcpu, p.gpa, p.gva, p.length, p.rip, p.instruction, p.value, p.table, p.entry,
          p.action, p.source, p.trapSeq, p.lostBefore);
        break;
      }
      default:
        break;
    }
  }

  /**
   * Drops the n oldest undelivered events and queues a notice saying so (itself an event).
   * A notice that is dropped in turn is folded into the new one, so the notices that reach the
   * broker account for every dropped event: delivered events + the sum of delivered notices'
   * `dropped` = every event recorded (notices not counted).
   */
  private dropOldest(n: number): void {
    const rows = this.stmt.oldestOutbox.all(n);
    if (rows.length === 0) return;
    let dropped = 0;
    let events = 0;
    let firstSeq = Number.MAX_SAFE_INTEGER;
    for (const r of rows) {
      this.stmt.deleteOutbox.run(r.seq);
      const m = JSON.parse(r.message) as { kind: string; payload: { dropped?: number; firstSeq?: number } };
      if (m.kind === 'outbox-dropped') {
        dropped += m.payload.dropped ?? 0;
        firstSeq = Math.min(firstSeq, m.payload.firstSeq ?? r.seq);
      } else {
        dropped += 1;
        events += 1;
        firstSeq = Math.min(firstSeq, r.seq);
      }
    }
    this.outboxCount -= rows.length;
    const lastSeq = (rows[rows.length - 1] as OutboxRow).seq;
    this.db.prepare("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE key = 'outbox_dropped_total'").run(events);
    const notice: EventInput = { kind: 'outbox-dropped', payload: { dropped, firstSeq, lastSeq, limit: this.outboxLimit } };
    process.emitWarning(`event outbox full (${this.outboxLimit}): dropped ${events} undelivered events, seq ${firstSeq}..${lastSeq}`, { code: 'INTROVISOR_OUTBOX_DROPPED' });
    this.insert(notice);
  }

  /** Undelivered events after a sequence number, oldest first. */
  outboxAfter(afterSeq: number, limit: number): OutboxRow[] {
    return this.stmt.outboxAfter.all(afterSeq, limit);
  }

  /** Marks events delivered (the broker acknowledged them); one transaction for the batch. */
  markDelivered(seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    let removed = 0;
    this.db.transaction(() => {
      for (const s of seqs) removed += this.stmt.deleteOutbox.run(s).changes;
    })();
    this.outboxCount -= removed;
  }

  outboxStats(): OutboxStats {
    const oldest = this.db.prepare('SELECT min(seq) AS s FROM outbox').get() as { s: number | null };
    const dropped = this.db.prepare("SELECT value FROM meta WHERE key = 'outbox_dropped_total'").get() as { value: string };
    return { pending: this.outboxCount, oldestSeq: oldest.s, droppedTotal: Number(dropped.value), limit: this.outboxLimit };
  }

  /** Deletes journal events beyond the retention setting. Current state and the outbox are not touched. */
  pruneRetention(): number {
    this.sinceRetention = 0;
    const cutoff = this.now() - this.retention.maxAgeMs;
    let removed = this.db.prepare('DELETE FROM events WHERE at_ms < ?').run(cutoff).changes;
    removed += this.db.prepare('DELETE FROM refused_writes WHERE refused_at_ms < ?').run(cutoff).changes;
    const max = this.db.prepare('SELECT max(seq) AS s FROM events').get() as { s: number | null };
    if (max.s !== null) {
      const keepFrom = max.s - this.retention.maxEvents;
      if (keepFrom > 0) {
        removed += this.db.prepare('DELETE FROM events WHERE seq <= ?').run(keepFrom).changes;
        removed += this.db.prepare('DELETE FROM refused_writes WHERE seq <= ?').run(keepFrom).changes;
      }
    }
    return removed;
  }

  // ---- queries for the web page, the CLI and tests ----

  events(q: EventQuery = {}): RecordedEvent[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (q.guest !== undefined) { where.push('guest = ?'); params.push(q.guest); }
    if (q.sinceMs !== undefined) { where.push('at_ms >= ?'); params.push(q.sinceMs); }
    if (q.afterSeq !== undefined) { where.push('seq > ?'); params.push(q.afterSeq); }
    if (q.kinds && q.kinds.length > 0) { where.push(`kind IN (${q.kinds.map(() => '?').join(',')})`); params.push(...q.kinds); }
    const order = q.newestFirst === false ? 'ASC' : 'DESC';
    const sql = `SELECT seq, kind, guest, at_ms, payload FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq ${order} LIMIT ?`;
    params.push(Math.max(1, Math.min(q.limit ?? 100, 100_000)));
    return (this.db.prepare(sql).all(...params) as EventRow[]).map((r) => this.toRecorded(r));
  }

  private toRecorded(r: EventRow): RecordedEvent {
    return { v: 1, id: `${this.stream}:${r.seq}`, stream: this.stream, seq: r.seq, device: this.deviceId, kind: r.kind as EventKind, atMs: r.at_ms, guest: r.guest, payload: JSON.parse(r.payload) as EventPayloads[EventKind] } as RecordedEvent;
  }

  guests(): (GuestHealthPayload & { seq: number })[] {
    return (this.db.prepare('SELECT seq, payload FROM guest_state ORDER BY guest').all() as PayloadRow[])
      .map((r) => ({ ...(JSON.parse(r.payload) as GuestHealthPayload), seq: r.seq }));
  }

  openFindings(guest?: string): (FindingPayload & { seq: number })[] {
    const rows = guest === undefined
      ? this.db.prepare('SELECT seq, payload FROM open_findings ORDER BY seq DESC').all() as PayloadRow[]
      : this.db.prepare('SELECT seq, payload FROM open_findings WHERE guest = ? ORDER BY seq DESC').all(guest) as PayloadRow[];
    return rows.map((r) => ({ ...(JSON.parse(r.payload) as FindingPayload), seq: r.seq }));
  }

  ladders(guest?: string): (LadderStepPayload & { seq: number })[] {
    const rows = guest === undefined
      ? this.db.prepare('SELECT seq, payload FROM ladder_state ORDER BY guest, fault').all() as PayloadRow[]
      : this.db.prepare('SELECT seq, payload FROM ladder_state WHERE guest = ? ORDER BY fault').all(guest) as PayloadRow[];
    return rows.map((r) => ({ ...(JSON.parse(r.payload) as LadderStepPayload), seq: r.seq }));
  }

  refusedWrites(q: { guest?: string; limit?: number } = {}): RefusedWriteRow[] {
    const limit = Math.max(1, Math.min(q.limit ?? 200, 100_000));
    interface Row {
      seq: number; guest: string; refused_at_ms: number; vcpu: number; gpa: string; gva: string | null; length: number; rip: string; instruction: string | null;
      value: string; protected_table: string; entry: number | null; action: string | null; source: string | null; trap_seq: number | null; lost_before: number;
    }
    const rows = q.guest === undefined
      ? this.db.prepare('SELECT * FROM refused_writes ORDER BY seq DESC LIMIT ?').all(limit) as Row[]
      : this.db.prepare('SELECT * FROM refused_writes WHERE guest = ? ORDER BY seq DESC LIMIT ?').all(q.guest, limit) as Row[];
    return rows.map((r) => ({
      seq: r.seq, guest: r.guest, refusedAtMs: r.refused_at_ms, vcpu: r.vcpu, gpa: r.gpa, gva: r.gva, length: r.length,
      rip: r.rip, instruction: r.instruction, value: r.value, table: r.protected_table, entry: r.entry,
      action: r.action as RefusedWritePayload['action'] | null, source: r.source as RefusedWritePayload['source'] | null, trapSeq: r.trap_seq, lostBefore: r.lost_before,
    }));
  }

  lastSeq(): number {
    return (this.db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").get() as { seq: number } | undefined)?.seq ?? 0;
  }
}

// Versioned schema migrations, tracked in PRAGMA user_version. Append only:
// a released migration is never edited, a change is a new entry.
import type { Database } from 'better-sqlite3';
import { randomBytes } from 'node:crypto';

export interface Migration {
  readonly version: number;
  readonly what: string;
  up(db: Database): void;
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    what: 'event journal, outbox, refused writes, current guest/finding/ladder state',
    up(db) {
      db.exec(`
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
        -- Every recorded event (scan, finding, ladder-step, action, refused-write, policy-change,
        -- host-metrics, guest-health, outbox-dropped); seq is the event's sequence number in this stream.
        CREATE TABLE events (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          kind TEXT NOT NULL,
          guest TEXT,
          at_ms INTEGER NOT NULL,
          payload TEXT NOT NULL
        ) STRICT;
        CREATE INDEX events_kind_seq ON events (kind, seq);
        CREATE INDEX events_guest_seq ON events (guest, seq);
        CREATE INDEX events_at ON events (at_ms);
        -- Events not yet acknowledged by the broker: the full published message, in seq order.
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY, message TEXT NOT NULL) STRICT;
        -- The KVM write trap's refused writes, typed for the log view.
        CREATE TABLE refused_writes (
          seq INTEGER PRIMARY KEY,
          guest TEXT NOT NULL,
          refused_at_ms INTEGER NOT NULL,
          vcpu INTEGER NOT NULL,
          gpa TEXT NOT NULL,
          gva TEXT,
          length INTEGER NOT NULL,
          rip TEXT NOT NULL,
          instruction TEXT,
          value TEXT NOT NULL,
          protected_table TEXT NOT NULL,
          entry INTEGER
        ) STRICT;
        CREATE INDEX refused_writes_guest ON refused_writes (guest, seq);
        -- Current state, kept outside retention: latest health per guest, open findings, active ladders.
        CREATE TABLE guest_state (guest TEXT PRIMARY KEY, seq INTEGER NOT NULL, payload TEXT NOT NULL) STRICT;
        CREATE TABLE open_findings (
          guest TEXT NOT NULL, finding_id TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
          PRIMARY KEY (guest, finding_id)
        ) STRICT;
        CREATE TABLE ladder_state (
          guest TEXT NOT NULL, fault TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
          PRIMARY KEY (guest, fault)
        ) STRICT;
      `);
      // The stream id makes event ids unique across store re-creations on the same device.
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('stream', randomBytes(16).toString('hex'));
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('outbox_dropped_total', '0');
    },
  },
  {
    version: 2,
    what: 'refused writes: the action the guest saw, the KVM source, the trap log seq and records lost before',
    up(db) {
      // Rows from version 1 did not record these: NULL, and 0 lost.
      db.exec(`
        ALTER TABLE refused_writes ADD COLUMN action TEXT;
        ALTER TABLE refused_writes ADD COLUMN source TEXT;
        ALTER TABLE refused_writes ADD COLUMN trap_seq INTEGER;
        ALTER TABLE refused_writes ADD COLUMN lost_before INTEGER NOT NULL DEFAULT 0;
      `);
    },
  },
  {
    version: 3,
    what: 'watchdog: ladder state per guest, the action journal, kernel baselines',
    up(db) {
      // Supervisors before this version created these tables themselves; such files keep theirs.
      db.exec(`
        CREATE TABLE IF NOT EXISTS watchdog_ladder (
          guest TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL, updated_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS watchdog_actions (
          action_id TEXT PRIMARY KEY, guest TEXT NOT NULL, fault TEXT NOT NULL, action TEXT NOT NULL,
          rung INTEGER NOT NULL, attempt INTEGER NOT NULL, started_at_ms INTEGER NOT NULL,
          finished_at_ms INTEGER, outcome TEXT, error TEXT
        ) STRICT;
        CREATE INDEX IF NOT EXISTS watchdog_actions_guest ON watchdog_actions (guest, started_at_ms);
        CREATE TABLE IF NOT EXISTS watchdog_baseline (
          guest TEXT NOT NULL, kernel_key TEXT NOT NULL, baseline TEXT NOT NULL, recorded_at_ms INTEGER NOT NULL,
          PRIMARY KEY (guest, kernel_key)
        ) STRICT;
      `);
    },
  },
];

/** Brings the database to the newest version, each step in its own transaction. */
export function migrate(db: Database, path: string): number {
  let current = db.pragma('user_version', { simple: true }) as number;
  const newest = migrations[migrations.length - 1]?.version ?? 0;
  if (current > newest) throw new Error(`${path}: database schema version ${current} is newer than this supervisor knows (${newest})`);
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      m.up(db);
      db.pragma(`user_version = ${m.version}`);
    })();
    current = m.version;
  }
  return current;
}

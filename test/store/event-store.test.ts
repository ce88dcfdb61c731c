// The event store on a real SQLite file: durability across reopen, schema
// checks at the boundary, current-state projections, retention, outbox bound.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { EventStore } from '../../src/store/event-store.js';
import { migrations } from '../../src/store/migrations.js';
import { parseRecordedEvent } from '../../src/events/schemas.js';
import { sampleEvents } from '../telemetry/sample-events.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-store-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('records every kind durably, with WAL + synchronous=FULL, and survives reopen', (t) => {
  const path = join(dir, 'a.db');
  const store = new EventStore({ path, deviceId: 'dev1' });
  t.equal(store.db.pragma('journal_mode', { simple: true }), 'wal');
  t.equal(store.db.pragma('synchronous', { simple: true }), 2, 'synchronous=FULL');
  t.equal(store.db.pragma('user_version', { simple: true }), migrations[migrations.length - 1]?.version);
  const recorded = sampleEvents().map((e) => store.record(e));
  t.same(recorded.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  for (const r of recorded) t.doesNotThrow(() => parseRecordedEvent(JSON.parse(JSON.stringify(r)), 'test'), `${r.kind} envelope valid`);
  const stream = store.stream;
  store.close();

  const again = new EventStore({ path });
  t.equal(again.deviceId, 'dev1', 'device id remembered for readers');
  t.equal(again.stream, stream, 'stream id is stable');
  t.same(again.events({ newestFirst: false, limit: 100 }).map((e) => e.kind), recorded.map((r) => r.kind));
  t.equal(again.outboxStats().pending, 8, 'all 8 undelivered in the outbox');
  t.same(again.outboxAfter(0, 100).map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  t.same(JSON.parse(again.outboxAfter(4, 1)[0]?.message ?? 'null'), JSON.parse(JSON.stringify(recorded[4])), 'outbox holds the exact published message');
  t.equal(again.guests()[0]?.health, 'recovering');
  t.equal(again.openFindings()[0]?.fault, 'syscall-table-changed');
  t.equal(again.ladders()[0]?.action, 'restore-image');
  t.equal(again.refusedWrites()[0]?.rip, '0xffffffffc0a01234');
  t.equal(again.record(sampleEvents()[0] as never).seq, 9, 'seq continues after reopen');
  again.close();
  t.end();
});

t.test('refuses payloads that break their schema, naming the field; a bad batch records nothing', (t) => {
  const store = new EventStore({ path: join(dir, 'b.db'), deviceId: 'dev1' });
  t.throws(() => store.record({ kind: 'action', payload: { ...(sampleEvents()[3]?.payload as object), outcome: 'maybe' } as never }), /action payload: \/outcome must be equal to one of the allowed values/);
  t.throws(() => store.record({ kind: 'refused-write', payload: { ...(sampleEvents()[4]?.payload as object), gpa: '2a001138' } as never }), /\/gpa must match pattern/);
  t.throws(() => store.recordMany([sampleEvents()[0] as never, { kind: 'scan', payload: { guest: 'x' } as never }]), /event 1 of 2 \(scan\) refused/);
  t.throws(() => store.record({ kind: 'device-state', payload: { state: 'online', softwareVersion: '1', startedAtMs: 1, policyVersion: null } }), /retained status/);
  t.equal(store.lastSeq(), 0, 'nothing recorded');
  store.close();
  t.end();
});

t.test('finding cleared and ladder reset leave the current-state tables', (t) => {
  const store = new EventStore({ path: join(dir, 'c.db'), deviceId: 'dev1' });
  const [, finding, step] = sampleEvents();
  store.record(finding as never);
  store.record(step as never);
  t.equal(store.openFindings('lab1').length, 1);
  store.record({ kind: 'finding', payload: { ...(finding?.payload as never as object), state: 'cleared' } as never });
  store.record({ kind: 'ladder-step', payload: { guest: 'lab1', fault: 'syscall-table-changed', findingId: null, step: null, action: null, attempt: 0, reason: 'fault cleared' } });
  t.equal(store.openFindings('lab1').length, 0);
  t.equal(store.ladders('lab1').length, 0);
  t.equal(store.events({ kinds: ['finding'] }).length, 2, 'the journal keeps both');
  store.close();
  t.end();
});

t.test('retention bounds the journal by count and by age, keeping current state', (t) => {
  let now = 1_000_000;
  const store = new EventStore({ path: join(dir, 'd.db'), deviceId: 'dev1', retention: { maxAgeMs: 10_000, maxEvents: 50 }, now: () => now, outboxLimit: 0 });
  const health = sampleEvents('g1')[7];
  store.record(health as never);
  for (let i = 0; i < 120; i++) store.record(sampleEvents('g1')[0] as never);
  store.pruneRetention();
  t.equal(store.events({ limit: 1000 }).length, 50, 'at most maxEvents kept');
  now += 20_000;
  store.record(sampleEvents('g1')[0] as never);
  store.pruneRetention();
  t.equal(store.events({ limit: 1000 }).length, 1, 'older than maxAge removed');
  t.equal(store.guests().length, 1, 'guest state is not subject to retention');
  t.equal(store.outboxStats().pending, 0, 'outbox disabled');
  store.close();
  t.end();
});

t.test('a bounded outbox drops its oldest and says so with an outbox-dropped event', async (t) => {
  const store = new EventStore({ path: join(dir, 'e.db'), deviceId: 'dev1', outboxLimit: 10 });
  const warnings: string[] = [];
  const onWarning = (w: Error): void => { warnings.push(w.message); };
  process.on('warning', onWarning);
  for (let i = 0; i < 25; i++) store.record(sampleEvents()[0] as never);
  const rows = store.outboxAfter(0, 100);
  t.ok(rows.length <= 10, `outbox within its bound (${rows.length})`);
  const kinds = rows.map((r) => (JSON.parse(r.message) as { kind: string }).kind);
  t.ok(kinds.includes('outbox-dropped'), 'a drop notice is queued for the broker');
  const seqs = rows.map((r) => r.seq);
  t.same(seqs, [...seqs].sort((a, b) => a - b), 'still in order');
  t.equal(rows[rows.length - 1]?.seq, store.lastSeq(), 'newest kept');
  const stats = store.outboxStats();
  const inOutbox = rows.map((r) => JSON.parse(r.message) as { kind: string; payload: { dropped?: number } });
  const reported = inOutbox.reduce((n, m) => n + (m.kind === 'outbox-dropped' ? m.payload.dropped ?? 0 : 0), 0);
  const kept = inOutbox.filter((m) => m.kind !== 'outbox-dropped').length;
  t.equal(kept + reported, 25, 'what is still queued plus what its notices report = every event recorded');
  t.equal(reported, stats.droppedTotal, 'notices account for every drop');
  t.ok(stats.droppedTotal >= 15);
  store.markDelivered(seqs);
  t.equal(store.outboxStats().pending, 0);
  await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
  process.off('warning', onWarning);
  t.ok(warnings.some((w) => /event outbox full \(10\): dropped/.test(w)), 'a process warning names the drop');
  store.close();
});

t.test('a database from a newer supervisor is refused', (t) => {
  const path = join(dir, 'f.db');
  const raw = new BetterSqlite3(path);
  raw.pragma('user_version = 999');
  raw.close();
  t.throws(() => new EventStore({ path, deviceId: 'dev1' }), /schema version 999 is newer/);
  t.end();
});

t.test('a version-1 database is migrated: its refused writes keep their rows, without action/source/trap seq', (t) => {
  const path = join(dir, 'g.db');
  const raw = new BetterSqlite3(path);
  migrations[0]?.up(raw);
  raw.pragma('user_version = 1');
  raw.prepare(`INSERT INTO events (seq, kind, guest, at_ms, payload) VALUES (1, 'refused-write', 'old', ?, '{}')`).run(Date.now() - 1000);
  raw.prepare(`INSERT INTO refused_writes (seq, guest, refused_at_ms, vcpu, gpa, gva, length, rip, instruction, value, protected_table, entry)
               VALUES (1, 'old', ?, 0, '0x1000', NULL, 8, '0xffffffffc0001000', NULL, '00', 'sys_call_table', 2)`).run(Date.now() - 1000);
  raw.close();
  const store = new EventStore({ path, deviceId: 'dev1' });
  t.equal(store.db.pragma('user_version', { simple: true }), 3);
  store.record(sampleEvents()[4] as never);
  const [fresh, old] = store.refusedWrites();
  t.same([old?.guest, old?.action, old?.source, old?.trapSeq, old?.lostBefore], ['old', null, null, null, 0], 'the old row, with what version 1 did not record');
  t.same([fresh?.action, fresh?.source, fresh?.trapSeq, fresh?.lostBefore], ['gp', 'emulated', 1, 0], 'a new row carries them');
  store.close();
  t.end();
});

t.test('a version-2 database whose supervisor made its watchdog tables itself keeps their rows at version 3', (t) => {
  const path = join(dir, 'h.db');
  const raw = new BetterSqlite3(path);
  migrations[0]?.up(raw);
  migrations[1]?.up(raw);
  raw.pragma('user_version = 2');
  // As supervisors before version 3 created them, beside the migrations.
  raw.exec(`CREATE TABLE watchdog_baseline (guest TEXT NOT NULL, kernel_key TEXT NOT NULL, baseline TEXT NOT NULL, recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (guest, kernel_key)) STRICT`);
  raw.prepare("INSERT INTO watchdog_baseline VALUES ('old', 'k', '{}', 1)").run();
  raw.close();
  const store = new EventStore({ path, deviceId: 'dev1' });
  t.equal(store.db.pragma('user_version', { simple: true }), 3);
  t.same(store.db.prepare('SELECT guest, kernel_key FROM watchdog_baseline').all(), [{ guest: 'old', kernel_key: 'k' }], 'the old baseline row is kept');
  t.same(store.db.prepare('SELECT count(*) AS n FROM watchdog_ladder').get(), { n: 0 }, 'the ladder table is created');
  store.close();
  t.end();
});

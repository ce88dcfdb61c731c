// Ladder state in a real SQLite file: round trip, the action journal, a
// reopened database resuming a pending action without repeating it.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteLadderStateStore } from '../../src/store/ladder-state-store.js';
import { EventStore } from '../../src/store/event-store.js';
import { completeAction, initialLadderState, resumeAfterRestart, step } from '../../src/policy/ladder.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-ladder-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const fault = { kind: 'critical-process-missing' as const, findingId: 'f1', summary: 'csdtest missing', target: 'csdtest' };

t.test('state and action journal survive reopening; a pending action resumes as done', async (t) => {
  const path = join(dir, 'a.db');
  let db = new EventStore({ path: path, deviceId: 'test' }).db;
  let store = new SqliteLadderStateStore(db);
  t.equal(store.load('g1'), null);
  const r1 = step(initialLadderState('g1'), { nowMs: 1000, scanAtMs: 1000, faults: [fault], policy: DEFAULT_POLICY });
  if (r1.decision.kind !== 'act') throw new Error('expected an action');
  store.save(r1.state);
  const c1 = completeAction(r1.state, r1.decision.action.actionId, { ok: true, error: null }, 2000, DEFAULT_POLICY);
  store.finishAction(c1.state, r1.decision.action.actionId, 'ok', null, 2000);
  // Verify fails, second attempt decided and persisted; then the process "dies".
  const r2 = step(c1.state, { nowMs: 40_000, scanAtMs: 40_000, faults: [fault], policy: DEFAULT_POLICY });
  const r3 = step(r2.state, { nowMs: 43_000, scanAtMs: 43_000, faults: [fault], policy: DEFAULT_POLICY });
  t.equal(r3.decision.kind, 'act');
  store.save(r3.state);
  db.close();

  db = new EventStore({ path: path, deviceId: 'test' }).db;
  store = new SqliteLadderStateStore(db);
  const loaded = store.load('g1');
  t.same(loaded, r3.state, 'exact round trip');
  if (!loaded?.pending) throw new Error('pending lost');
  const journal = store.actions('g1');
  t.same(journal.map((a) => [a.action, a.attempt, a.outcome]), [['restart-process', 1, 'ok'], ['restart-process', 2, null]]);
  const resumed = resumeAfterRestart(loaded, 50_000, DEFAULT_POLICY);
  store.finishAction(resumed.state, loaded.pending.actionId, 'interrupted', 'supervisor restarted', 50_000);
  t.equal(resumed.state.ladders[0]?.attemptsOnRung, 2);
  t.equal(resumed.state.ladders[0]?.phase, 'verifying');
  t.same(store.actions('g1').map((a) => a.outcome), ['ok', 'interrupted']);
  // Saving the same pending action again does not add a second journal row.
  store.save(loaded);
  t.equal(store.actions('g1').length, 2);
  db.close();
});

t.test('a damaged row is an error naming the guest and the field', async (t) => {
  const db = new EventStore({ path: join(dir, 'b.db'), deviceId: 'test' }).db;
  const store = new SqliteLadderStateStore(db);
  store.save(initialLadderState('g2'));
  db.prepare("UPDATE watchdog_ladder SET state = json_set(state, '$.seq', 'x') WHERE guest = 'g2'").run();
  t.throws(() => store.load('g2'), /ladder state of guest g2: \/seq must be integer/);
  db.prepare("UPDATE watchdog_ladder SET state = '{' WHERE guest = 'g2'").run();
  t.throws(() => store.load('g2'), /guest g2 is not JSON/);
  db.close();
});

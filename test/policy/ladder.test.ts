// The ladder engine as a pure state machine: scripted scans against a clock.
import t from 'tap';
import {
  completeAction, initialLadderState, resumeAfterRestart, step,
  type ActiveFault, type GuestLadderState, type LadderDecision,
} from '../../src/policy/ladder.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';
import { validatePolicy } from '../../src/policy/schema.js';
import type { FaultKind, Policy } from '../../src/policy/types.js';

const fault = (kind: FaultKind, target: string | null = null): ActiveFault => ({ kind, findingId: `${kind}:1`, summary: `${kind} seen`, target });

/** Drives the engine like the supervisor: scan, step, act (succeeding), verify with the next scans. */
class Driver {
  state: GuestLadderState = initialLadderState('g1');
  now = 1_000_000;
  actions: string[] = [];
  alerts: string[] = [];
  constructor(readonly policy: Policy = DEFAULT_POLICY) {}
  scan(faults: ActiveFault[], opts: { actionOk?: boolean } = {}): LadderDecision {
    const r = step(this.state, { nowMs: this.now, scanAtMs: this.now, faults, policy: this.policy });
    this.state = r.state;
    for (const e of r.events) if (e.type === 'alert') this.alerts.push(e.reason);
    if (r.decision.kind === 'act') {
      this.actions.push(`${r.decision.action.action}#${r.decision.action.attempt}`);
      this.now += 1000;
      const c = completeAction(this.state, r.decision.action.actionId, { ok: opts.actionOk ?? true, error: opts.actionOk === false ? 'boom' : null }, this.now, this.policy);
      this.state = c.state;
    }
    return r.decision;
  }
  /** Keeps scanning every `everyMs` while the fault persists, until `n` actions happened or the ladder holds. */
  persist(faults: ActiveFault[], n: number, everyMs = 5_000): void {
    for (let i = 0; i < 10_000 && this.actions.length < n; i++) {
      const d = this.scan(faults);
      if (d.kind === 'hold') return;
      this.now += everyMs;
    }
  }
}

t.test('critical process missing climbs the default ladder with its counts, then holds and alerts', async (t) => {
  const d = new Driver();
  d.persist([fault('critical-process-missing', 'csdtest')], 100);
  t.same(d.actions, [
    'restart-process#1', 'restart-process#2', 'restart-process#3',
    'reboot-os#1', 'reboot-os#2', 'reboot-os#3',
    'restart-vm#1', 'restore-image#1',
  ]);
  t.ok(d.state.held, 'guest held');
  t.match(d.alerts.join('\n'), /critical-process-missing: ladder exhausted after 8 action\(s\)/);
  // No further action while held.
  d.now += 3_600_000;
  t.equal(d.scan([fault('critical-process-missing')]).kind, 'wait');
  t.equal(d.actions.length, 8);
});

t.test('hidden process: reboot x2, restart VM, restore image', async (t) => {
  const d = new Driver();
  d.persist([fault('hidden-process', '77')], 100);
  t.same(d.actions, ['reboot-os#1', 'reboot-os#2', 'restart-vm#1', 'restore-image#1']);
});

t.test('syscall table changed: restore image at once', async (t) => {
  const d = new Driver();
  const dec = d.scan([fault('syscall-table-changed')]);
  t.equal(dec.kind, 'act');
  t.same(d.actions, ['restore-image#1']);
});

t.test('a verified success, held for the reset window, resets the ladder', async (t) => {
  const d = new Driver();
  d.scan([fault('critical-process-missing', 'csdtest')]);
  t.same(d.actions, ['restart-process#1']);
  d.now += 2000;
  d.scan([]);
  t.equal(d.state.ladders[0]?.phase, 'watching');
  d.now += 300_000;
  d.scan([]);
  t.same(d.state.ladders, [], 'ladder gone after the reset window');
  d.scan([fault('critical-process-missing', 'csdtest')]);
  t.same(d.actions, ['restart-process#1', 'restart-process#1'], 'starts over at the first rung');
});

t.test('a fault back within the reset window continues the ladder', async (t) => {
  const d = new Driver();
  for (let i = 0; i < 4; i++) {
    d.scan([fault('critical-process-missing', 'csdtest')]);
    d.now += 10_000;
    d.scan([]); // verified
    d.now += 10_000; // well inside the 300 s window
  }
  t.same(d.actions, ['restart-process#1', 'restart-process#2', 'restart-process#3', 'reboot-os#1']);
});

t.test('verification waits for a scan taken after the action, and fails at the verify timeout', async (t) => {
  const d = new Driver();
  const f = [fault('critical-process-missing', 'csdtest')];
  d.scan(f);
  const endOfAction = d.now;
  // A scan that started before the action ended cannot verify it.
  const r = step(d.state, { nowMs: d.now + 10, scanAtMs: endOfAction - 500, faults: [], policy: DEFAULT_POLICY });
  t.equal(r.state.ladders[0]?.phase, 'verifying');
  d.now += 14_000;
  t.equal(d.scan(f).kind, 'wait', 'inside the 15 s verify timeout');
  t.equal(d.actions.length, 1);
  d.now += 1_000;
  const dec = d.scan(f);
  t.equal(dec.kind, 'wait', 'verify failed; backoff 2 s before attempt 2');
  d.now += 2_000;
  t.equal(d.scan(f).kind, 'act');
  t.same(d.actions, ['restart-process#1', 'restart-process#2']);
});

t.test('backoff grows by the factor between attempts of a rung', async (t) => {
  const d = new Driver();
  const f = [fault('critical-process-missing', 'c')];
  const times: number[] = [];
  for (let i = 0; i < 200 && d.actions.length < 3; i++) {
    const before = d.actions.length;
    d.scan(f);
    if (d.actions.length > before) times.push(d.now);
    d.now += 500;
  }
  // Each action ends 1 s after it starts; verify fails after 15 s, then backoff 2 s, then 4 s.
  const gaps = [times[1]! - times[0]!, times[2]! - times[1]!];
  t.ok(gaps[0]! >= 1000 + 15_000 + 2_000 && gaps[0]! <= 1000 + 15_000 + 2_000 + 1000, `gap 1 ${gaps[0]}`);
  t.ok(gaps[1]! >= 1000 + 15_000 + 4_000 && gaps[1]! <= 1000 + 15_000 + 4_000 + 1000, `gap 2 ${gaps[1]}`);
});

t.test('the hourly cap delays actions and alerts once', async (t) => {
  const v = validatePolicy({ version: 1, maxActionsPerHour: 2 });
  if (!v.ok) throw new Error(v.errors.join());
  const d = new Driver(v.policy);
  d.persist([fault('critical-process-missing', 'c')], 2);
  t.equal(d.actions.length, 2);
  const start = d.now;
  for (let i = 0; i < 50; i++) { d.scan([fault('critical-process-missing', 'c')]); d.now += 30_000; }
  t.equal(d.actions.length, 2, 'nothing more within the hour');
  t.equal(d.alerts.filter((a) => a.startsWith('hourly cap')).length, 1, 'alerted once');
  d.now = start + 3_600_000;
  d.persist([fault('critical-process-missing', 'c')], 3);
  t.equal(d.actions.length, 3, 'acts again once the oldest action left the hour');
});

t.test('the heaviest action goes first and one recovery runs at a time', async (t) => {
  const d = new Driver();
  d.scan([fault('critical-process-missing', 'c'), fault('syscall-table-changed')]);
  t.same(d.actions, ['restore-image#1']);
  // While the restore verifies, the critical-process ladder does not act.
  d.now += 1000;
  t.equal(d.scan([fault('critical-process-missing', 'c'), fault('syscall-table-changed')]).kind, 'wait');
  // The restore fixed both: the critical ladder that never acted is dropped.
  d.now += 1000;
  d.scan([]);
  t.same(d.state.ladders.map((l) => `${l.kind}:${l.phase}`), ['syscall-table-changed:watching']);
});

t.test('a failed action counts as an attempt and the ladder goes on after backoff', async (t) => {
  const d = new Driver();
  d.scan([fault('critical-process-missing', 'c')], { actionOk: false });
  t.equal(d.state.ladders[0]?.phase, 'ready');
  t.equal(d.state.ladders[0]?.attemptsOnRung, 1);
  d.now += 2_000;
  d.scan([fault('critical-process-missing', 'c')]);
  t.same(d.actions, ['restart-process#1', 'restart-process#2']);
});

t.test('undetermined kinds stand still (no false verification while the agent is down)', async (t) => {
  const d = new Driver();
  d.scan([fault('critical-process-missing', 'c')]);
  d.now += 60_000;
  const r = step(d.state, { nowMs: d.now, scanAtMs: d.now, faults: [], undetermined: ['critical-process-missing'], policy: DEFAULT_POLICY });
  t.equal(r.state.ladders[0]?.phase, 'verifying');
});

t.test('a supervisor restarted with an action pending does not repeat it', async (t) => {
  const d = new Driver();
  const f = [fault('hidden-process', '77')];
  d.persist(f, 2);
  t.same(d.actions, ['reboot-os#1', 'reboot-os#2']);
  // The second reboot's verify fails, then the engine decides restart-vm; the process dies before completing it.
  d.now += 60_000;
  let r = step(d.state, { nowMs: d.now, scanAtMs: d.now, faults: f, policy: DEFAULT_POLICY });
  t.equal(r.decision.kind, 'act');
  if (r.decision.kind !== 'act') return;
  t.equal(r.decision.action.action, 'restart-vm');
  const persisted: GuestLadderState = JSON.parse(JSON.stringify(r.state));
  // ...restart: resume from what was persisted.
  const resumed = resumeAfterRestart(persisted, d.now + 5_000, DEFAULT_POLICY);
  t.equal(resumed.state.pending, null);
  t.match(resumed.events[0], { type: 'step', action: 'restart-vm', reason: /counted as done, not repeated/ });
  t.same(resumed.state.ladders.map((l) => [l.kind, l.rung, l.attemptsOnRung, l.phase]), [['hidden-process', 1, 1, 'verifying']]);
  // The fault persists: the next action is the image restore, not a second VM restart.
  r = step(resumed.state, { nowMs: d.now + 70_000, scanAtMs: d.now + 70_000, faults: f, policy: DEFAULT_POLICY });
  t.equal(r.decision.kind, 'act');
  if (r.decision.kind === 'act') t.equal(r.decision.action.action, 'restore-image');
});

t.test('step refuses to run while an action is pending', async (t) => {
  const r = step(initialLadderState('g'), { nowMs: 1, scanAtMs: 1, faults: [fault('syscall-table-changed')], policy: DEFAULT_POLICY });
  t.throws(() => step(r.state, { nowMs: 2, scanAtMs: 2, faults: [], policy: DEFAULT_POLICY }), /pending/);
});

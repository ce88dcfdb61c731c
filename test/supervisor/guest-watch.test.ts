// GuestWatch with fakes of the guest (GuestController) and of introspection
// (KernelScanner), over a real SQLite store: each test asserts the events the
// watch recorded, not its log text.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestWatch, nextTick } from '../../src/supervisor/guest-watch.js';
import { EventRecorder, type StoreHealth } from '../../src/supervisor/recorder.js';
import { EventStore } from '../../src/store/event-store.js';
import { SqliteLadderStateStore } from '../../src/store/ladder-state-store.js';
import { SqliteBaselineStore } from '../../src/store/baseline-store.js';
import { kernelKey } from '../../src/detectors/baseline.js';
import { fixedPolicySource } from '../../src/policy/fixed-source.js';
import { validatePolicy } from '../../src/policy/schema.js';
import type { Policy } from '../../src/policy/types.js';
import type { RecordedEvent } from '../../src/events/types.js';
import { report, snapshot, task } from '../detectors/synthetic.js';
import { FakeGuest, FakeScanner, FlakySink } from './fakes.js';

const dir = mkdtempSync(join(tmpdir(), 'iv-watch-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function policyFrom(doc: unknown): Policy {
  const v = validatePolicy(doc);
  if (!v.ok) throw new Error(v.errors.join('; '));
  return v.policy;
}

const FAST = policyFrom({
  version: 1,
  faults: {
    'critical-process-missing': { confirmScans: 1, ladder: [{ action: 'restart-process', count: 2, verifyTimeoutSec: 60, backoffSec: 0 }, { action: 'restart-vm', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }] },
    'introspection-failed': { confirmScans: 3, ladder: [{ action: 'restart-vm', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }] },
  },
});

function setup(name: string, opts: { flaky?: boolean; agentIntervalMs?: number; summaryIntervalMs?: number; guest?: FakeGuest; timingsDir?: string } = {}) {
  const store = new EventStore({ path: join(dir, `${name}.db`), deviceId: 'test' });
  const sink = new FlakySink(store);
  const recorder = new EventRecorder(sink);
  const guest = opts.guest ?? new FakeGuest();
  const scanner = new FakeScanner();
  const ladders = new SqliteLadderStateStore(store.db);
  let laddersFail = false;
  const watch = new GuestWatch({
    controller: guest, scanner, critical: [{ name: 'csdtest', start: { path: '/data/bin/csdtest', args: ['-d'] } }],
    scanIntervalMs: 1000, policy: fixedPolicySource(FAST, 7, 'test'),
    // Every cycle takes the guest's report unless a test says otherwise.
    agentIntervalMs: opts.agentIntervalMs ?? 0,
    ...(opts.summaryIntervalMs !== undefined ? { summaryIntervalMs: opts.summaryIntervalMs } : {}),
    ...(opts.timingsDir !== undefined ? { timingsDir: opts.timingsDir } : {}),
    ladders: opts.flaky ? {
      load: (g) => ladders.load(g),
      save: (s) => { if (laddersFail) throw new Error('SQLITE_FULL'); ladders.save(s); },
      finishAction: (s, id, o, e, at) => { if (laddersFail) throw new Error('SQLITE_FULL'); ladders.finishAction(s, id, o, e, at); },
      actions: (g) => ladders.actions(g),
    } : ladders,
    baselines: new SqliteBaselineStore(store.db), recorder, log: () => undefined,
  });
  const events = (kind?: RecordedEvent['kind']): RecordedEvent[] => store.events({ newestFirst: false, limit: 1000, ...(kind ? { kinds: [kind] } : {}) });
  return { store, sink, recorder, guest, scanner, watch, events, ladders, setLaddersFail: (v: boolean) => { laddersFail = v; } };
}

t.test('clean cycles: clean scans, a healthy guest, a baseline once', async (t) => {
  const s = setup('clean');
  t.teardown(() => s.store.close());
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  t.same(s.events('scan').map((e) => e.kind === 'scan' && [e.payload.outcome, e.payload.stats.scans]), [['clean', 1]], 'the first scan; the unchanged ones wait for the summary');
  s.watch.flushSummary();
  const scans = s.events('scan').map((e) => (e.kind === 'scan' ? e.payload : null));
  t.same(scans.map((p) => [p?.outcome, p?.stats.scans, p?.stats.clean]), [['clean', 1, undefined], ['clean', 2, 2]], 'then one summary of the other two');
  t.same(scans.map((p) => p?.policyVersion), [7, 7], 'the policy source\'s version');
  t.same(s.events('guest-health').map((e) => e.kind === 'guest-health' && e.payload.health), ['healthy'], 'health on change');
  t.same(s.events('finding'), []);
  t.same(s.guest.calls, []);
});

t.test('a missing critical process: finding, restart through the guest, then the next rung', async (t) => {
  const s = setup('critical');
  t.teardown(() => s.store.close());
  await s.watch.cycle();
  const gone = snapshot({ tasks: [task(1, 'init'), task(120, 'qemu-ga')] });
  s.scanner.snap = gone;
  s.guest.guestReport = report(gone);
  await s.watch.cycle();
  t.same(s.guest.calls, ['start /data/bin/csdtest'], 'restart-process ran');
  const findings = s.events('finding');
  t.match(findings, [{ payload: { fault: 'critical-process-missing', state: 'raised', summary: /csdtest/ } }]);
  t.match(s.events('action'), [{ payload: { action: 'restart-process', outcome: 'ok', target: 'csdtest', fault: 'critical-process-missing' } }]);
  t.ok(s.events('ladder-step').length >= 1, 'ladder steps recorded');
  t.same(s.events('guest-health').map((e) => e.kind === 'guest-health' && e.payload.health), ['healthy', 'recovering']);
});

t.test('fail closed: a guest that makes its kernel unreadable is never clean, and climbs its own ladder', async (t) => {
  const s = setup('unreadable');
  t.teardown(() => s.store.close());
  await s.watch.cycle();
  s.scanner.snap = new Error('guest memory: cannot open /dev/shm/gone.ram');
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  s.watch.flushSummary();
  const scans = s.events('scan').map((e) => (e.kind === 'scan' ? e.payload : null));
  // Each scan counted once: by its own event (stats.scans 1) or in a summary (stats.scans n, its outcomes counted).
  const outcomes = scans.flatMap((p) => (p?.stats.scans === 1 ? [p.outcome] : (['clean', 'faults', 'failed'] as const).flatMap((o) => Array<string>(p?.stats[o] ?? 0).fill(o))));
  t.same(outcomes, ['clean', 'failed', 'failed', 'failed'], 'no clean scan without a kernel view');
  t.match(scans[1]?.error, /cannot open/);
  t.ok(scans.slice(1).every((p) => p?.outcome === 'failed'), 'every event after the first says failed');
  t.same(s.events('guest-health').map((e) => e.kind === 'guest-health' && e.payload.health).slice(0, 2), ['healthy', 'unknown'], 'not healthy while unread');
  t.match(s.events('finding'), [{ payload: { fault: 'introspection-failed', state: 'raised', severity: 'critical' } }], 'raised after confirmScans');
  t.same(s.guest.calls, ['restart-vm'], 'the policy\'s action for it');
});

t.test('a store that refuses writes never stops the watch, and catches up when it takes them again', async (t) => {
  const s = setup('full', { flaky: true });
  t.teardown(() => s.store.close());
  const health: StoreHealth[] = [];
  s.recorder.onHealthChange((h) => health.push(h));
  await s.watch.cycle();
  const before = s.events().length;
  // The disk fills up, then the critical process dies.
  s.sink.failing = true;
  s.setLaddersFail(true);
  const gone = snapshot({ tasks: [task(1, 'init'), task(120, 'qemu-ga')] });
  s.scanner.snap = gone;
  s.guest.guestReport = report(gone);
  await s.watch.cycle();
  t.same(s.guest.calls, ['start /data/bin/csdtest'], 'the ladder still acted, from memory');
  t.equal(s.events().length, before, 'nothing reached the full store');
  t.match(health, [{ ok: false, error: /SQLITE_FULL/ }], 'store-unavailable said once');
  t.ok(s.recorder.health.pending > 0, 'events wait in memory');
  // Still unwritable: the next cycles run (no "step() while pending" wedge) and verify the restart.
  s.scanner.snap = snapshot();
  s.guest.guestReport = report(snapshot());
  await s.watch.cycle();
  await s.watch.cycle();
  t.equal(s.watch.ladderState.pending, null, 'no action left pending');
  // Space returns.
  s.sink.failing = false;
  s.setLaddersFail(false);
  await s.watch.cycle();
  t.equal(s.recorder.health.pending, 0, 'caught up');
  t.match(health, [{ ok: false }, { ok: true }], 'and said so');
  const kinds = s.events().slice(before).map((e) => e.kind);
  t.ok(kinds.includes('finding') && kinds.includes('action'), 'the finding and the action recorded late, not lost');
  const seqs = s.events().map((e) => e.seq);
  t.same(seqs, [...seqs].sort((a, b) => a - b), 'in order');
  // The stored state equals the watch's but for seq, which moves at every step and is written only with a real change.
  const stored = s.ladders.load('g1');
  t.same({ ...stored, seq: 0 }, { ...s.watch.ladderState, seq: 0 }, 'the ladder state saved once the store took it');
  t.ok(stored !== null && stored.seq <= s.watch.ladderState.seq);
});

t.test('the guest\'s own view at its interval, and at once when the memory views disagree', async (t) => {
  const s = setup('agent-interval', { agentIntervalMs: 3_600_000 });
  t.teardown(() => s.store.close());
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  t.equal(s.guest.reports, 1, 'one report for three agreeing scans');
  // A process the kernel's task list holds but the pid IDR lacks (unlinked by a rootkit): the memory views disagree.
  const base = snapshot();
  const hidden = snapshot({ tasks: [...base.tasks.tasks, task(666, 'evil')] });
  s.scanner.snap = { ...hidden, pidIdr: base.pidIdr };
  s.guest.guestReport = report(base);
  await s.watch.cycle();
  t.equal(s.guest.reports, 2, 'a fresh report at once');
  await s.watch.cycle();
  t.equal(s.guest.reports, 3, 'and at every scan while it is judged');
  t.match(s.events('finding'), [{ payload: { fault: 'hidden-process', state: 'raised', summary: /pid 666/ } }], 'confirmed with fresh reports');
  // A process only the guest's view lacks is judged with a fresh report, never a kept one.
  s.scanner.snap = snapshot();
  s.guest.guestReport = report(snapshot());
  await s.watch.cycle();
  await s.watch.cycle();
  t.match(s.events('finding').at(-1), { payload: { fault: 'hidden-process', state: 'cleared' } });
  const n = s.guest.reports;
  const withNewProcess = snapshot({ tasks: [...snapshot().tasks.tasks, task(700, 'newcomer')] });
  s.scanner.snap = { ...withNewProcess, pidIdr: { entries: [...snapshot().pidIdr.entries, { pid: 700, task: task(700, 'newcomer').address }], errors: [] } };
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  t.equal(s.guest.reports, n, 'no report while the memory views agree');
  t.equal(s.events('finding').filter((e) => e.kind === 'finding' && e.payload.state === 'raised').length, 1, 'a kept report does not make the new process hidden');
  // Every real report lists the reporter's own shell (a new pid each time), gone from the kernel by the snapshot: that alone takes no report per scan.
  let shell = 900;
  const cycleWithShell = async (): Promise<void> => { s.guest.guestReport = report(snapshot(), [{ pid: shell++, ppid: 120, comm: 'sh', state: 'R' }]); await s.watch.cycle(); };
  s.scanner.snap = { ...hidden, pidIdr: base.pidIdr };
  await cycleWithShell();
  s.scanner.snap = snapshot();
  await cycleWithShell();
  const m = s.guest.reports;
  for (let i = 0; i < 3; i++) await cycleWithShell();
  t.equal(s.guest.reports, m, 'a pid only in the guest\'s list does not make every scan ask the agent');
  t.equal(s.events('finding').filter((e) => e.kind === 'finding' && e.payload.state === 'raised').length, 1, 'nor is it a finding');
});

t.test('events on change: health heartbeat, no ladder write for an unchanged state', async (t) => {
  const s = setup('quiet', { summaryIntervalMs: 50 });
  t.teardown(() => s.store.close());
  let saves = 0;
  const save = s.ladders.save.bind(s.ladders);
  s.ladders.save = (st) => { saves++; save(st); };
  await s.watch.cycle();
  const saved = saves;
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  t.equal(saves, saved, 'the unchanged ladder state is not written again');
  t.equal(s.events('guest-health').length, 1, 'health once while nothing changes');
  await new Promise((r) => setTimeout(r, 80));
  await s.watch.cycle();
  t.equal(s.events('guest-health').length, 2, 'and again as a heartbeat');
  const sum = s.events('scan').reduce((n, e) => n + (e.kind === 'scan' ? e.payload.stats.scans ?? 0 : 0), 0);
  s.watch.flushSummary();
  const all = s.events('scan').reduce((n, e) => n + (e.kind === 'scan' ? e.payload.stats.scans ?? 0 : 0), 0);
  t.ok(sum >= 2, 'a summary went out within its interval');
  t.equal(all, 5, 'every scan counted once');
});

t.test('a new boot on the same KASLR slide takes new per-boot hashes; the same boot keeps them', async (t) => {
  const s = setup('same-slide');
  t.teardown(() => s.store.close());
  const withRodata = (h: string) => { const b = snapshot(); return { ...b, integrity: { ...b.integrity, rodataHash: h } }; };
  s.scanner.snap = withRodata('ro-boot-1');
  await s.watch.cycle();
  const baselines = new SqliteBaselineStore(s.store.db);
  // The guest reboots (the hypervisor's boot count moves); __ro_after_init data differs, the slide does not.
  s.guest.bootGeneration++;
  s.scanner.snap = withRodata('ro-boot-2');
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  t.same(s.events('finding'), [], 'a new boot is not tampering');
  t.equal(baselines.load('g1', kernelKey(snapshot()))?.boot.rodataHash, 'ro-boot-2', 'the new boot\'s hashes recorded');
  // Within that boot, a changed rodata is a finding.
  s.scanner.snap = withRodata('ro-patched');
  for (let i = 0; i < 3; i++) await s.watch.cycle();
  t.match(s.events('finding'), [{ payload: { fault: 'kernel-integrity-changed', state: 'raised', summary: /rodata/ } }]);
});

t.test('the work under way: progress while an action runs, estimated against its last run, kept across supervisors', async (t) => {
  /** A guest whose VM restart runs until the test lets it end, its console showing a boot. */
  class SlowGuest extends FakeGuest {
    private release: (() => void) | null = null;
    override async restartVm(): Promise<string> {
      await new Promise<void>((r) => { this.release = r; });
      return super.restartVm();
    }
    consoleTail(): string { return 'Loading initrd\n\x1b[1mRun /init as init process\x1b[0m\r\n'; }
    finish(): void { this.release?.(); this.release = null; }
  }
  const timingsDir = join(dir, 'timings');
  const until = async (f: () => boolean): Promise<void> => { for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 10)); };
  const runOnce = async (name: string): Promise<{ during: ReturnType<GuestWatch['progress']>; after: ReturnType<GuestWatch['progress']>; ms: number }> => {
    const guest = new SlowGuest();
    const { watch, store } = setup(name, { guest, timingsDir });
    t.teardown(() => store.close());
    await watch.start();
    t.equal(watch.progress(), null, 'nothing under way after start (the guest was running: nothing timed)');
    const seen: unknown[] = [];
    const running = watch.runAction('restart-vm', null, (p) => seen.push(p));
    await until(() => watch.progress() !== null);
    await new Promise((r) => setTimeout(r, 1_100));
    const during = watch.progress();
    guest.finish();
    const r = await running;
    t.ok(r.ok, 'the restart ran');
    t.ok(seen.length >= 1, 'progress handed to the asker while it ran');
    return { during, after: watch.progress(), ms: r.durationMs };
  };
  const first = await runOnce('progress-1');
  t.match(first.during, { action: 'restart-vm', phase: null, expectedMs: null, percent: null, note: 'Run /init as init process' }, 'no estimate the first time; the console\'s last line');
  t.ok((first.during?.elapsedMs ?? 0) >= 1_000, 'elapsed time counted');
  t.equal(first.after, null, 'nothing under way once it ended');
  // Another watch of the same guest (a supervisor restarted): the last duration from the timings folder.
  const second = await runOnce('progress-2');
  t.equal(second.during?.expectedMs, first.ms, 'estimated against the first run, kept in the folder');
  t.type(second.during?.percent, 'number', `a percentage: ${second.during?.percent}`);
});

t.test('confirmation counts scans of one boot: the same race in two boots (same pid) is no finding', async (t) => {
  const s = setup('race-per-boot');
  t.teardown(() => s.store.close());
  // A kernel thread in the guest's ps that ends before the snapshot (ext4lazyinit after a boot): same pid in every boot.
  s.guest.guestReport = report(snapshot(), [{ pid: 106, ppid: 2, comm: 'ext4lazyinit', state: 'S' }]);
  await s.watch.cycle();
  s.guest.bootGeneration++; // an action booted the guest again
  await s.watch.cycle();
  t.same(s.events('finding'), [], 'one scan in each boot: not confirmed');
  await s.watch.cycle();
  t.match(s.events('finding'), [{ payload: { fault: 'hidden-process', state: 'raised', summary: /pid 106 \(ext4lazyinit\)/ } }], 'two scans in one boot: confirmed');
  s.guest.bootGeneration++;
  await s.watch.cycle();
  t.equal(s.events('finding').length, 1, 'a confirmed finding stands over a new boot that still shows it');
});

t.test('cycles start on shared clock ticks: the next multiple of the interval, or the first after an overrun', async (t) => {
  t.equal(nextTick(1_000_003, 1_000_040, 100), 1_000_100, 'a cycle that started 3 ms late still starts the next on the tick');
  t.equal(nextTick(1_000_050, 1_000_060, 100), 1_000_100, 'a guest that started between ticks joins the others');
  t.equal(nextTick(1_000_003, 1_000_230, 100), 1_000_300, 'an overrun waits for the tick after now, not a burst of late cycles');
  t.equal(nextTick(1_000_000, 1_000_000, 100), 1_000_100, 'exactly on a tick: the next one');
  t.equal(nextTick(5, 6, 0), 7, 'a zero interval is read as 1 ms');
  // Guests whose cycles started at different times in one interval all meet on the same tick.
  const ticks = new Set([1_000_001, 1_000_030, 1_000_090].map((s) => nextTick(s, s + 5, 100)));
  t.same([...ticks], [1_000_100]);
});

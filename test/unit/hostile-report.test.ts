// A hostile guest agent cannot switch its own watchdog off: a process report
// far over any real guest's (150,000 processes, a 20 MB name) goes through the
// detectors and the finding tracker without an exception, becomes a
// guest-report-malformed finding of bounded size, and a syscall hook made at
// the same time is still found.
import t from 'tap';
import { analyzeScan, type ScanInput } from '../../src/detectors/index.js';
import { FindingTracker } from '../../src/detectors/findings.js';
import { boundGuestReport, GUEST_REPORT_LIMITS } from '../../src/detectors/guest-report.js';
import { baselineOf } from '../../src/detectors/baseline.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';
import type { GuestProcess, GuestReport } from '../../src/detectors/types.js';
import { HANDLERS, handlerAddr, report, snapshot } from '../detectors/synthetic.js';

const HUGE_NAME = 'A'.repeat(20 * 1024 * 1024);

function floodReport(base: GuestReport): GuestReport {
  if (base.agent !== 'ok') throw new Error('expected an ok report');
  const processes: GuestProcess[] = [...base.processes, { pid: 999, ppid: 1, comm: HUGE_NAME, state: 'S' }];
  for (let i = 0; i < 150_000; i++) processes.push({ pid: 100_000 + i, ppid: 1, comm: `fake${i}`, state: 'S' });
  return { ...base, processes };
}

t.test('150k fake processes and a 20 MB name: a malformed finding, and a syscall hook still found', async (t) => {
  const clean = snapshot();
  const baseline = baselineOf(clean, 1);
  const entries = HANDLERS.map((h, nr) => (nr === 1
    ? { nr, target: 0xffffffffc0010001n, owner: { kind: 'module' as const, module: 'iv_syscall_hook', symbol: 'iv_hook_1' }, expected: h }
    : { nr, target: handlerAddr(nr), owner: { kind: 'kernel' as const, symbol: h }, expected: h }));
  const hooked = snapshot({ entries });
  const input: ScanInput = { nowMs: 5000, snapshot: hooked, snapshotError: null, report: floodReport(report(hooked)), critical: [{ name: 'csdtest' }], baseline };
  const tracker = new FindingTracker((k) => DEFAULT_POLICY.faults[k].confirmScans);
  let findings: ReturnType<FindingTracker['update']>['findings'] = [];
  for (let scan = 0; scan < 3; scan++) {
    const a = analyzeScan({ ...input, nowMs: 5000 + scan * 1000 });
    findings = tracker.update(a, 5000 + scan * 1000).findings;
  }
  const kinds = findings.map((f) => f.kind).sort();
  t.ok(kinds.includes('guest-report-malformed'), `a guest-report-malformed finding (have ${kinds.join(', ')})`);
  t.ok(kinds.includes('syscall-table-changed'), 'the syscall hook is still found');
  const malformed = findings.find((f) => f.kind === 'guest-report-malformed');
  t.match(malformed?.summary, /150\d{3} processes/);
  t.match(malformed?.summary, /name longer than 63 bytes/);
  // The finding is what becomes an event: its size must not follow the guest's.
  for (const f of findings) t.ok(JSON.stringify(f).length < 64 * 1024, `${f.kind} finding is ${JSON.stringify(f).length} bytes`);
  // A cut process list is not a view to cross-check: 150k "hidden" processes would be the guest's to invent.
  t.notOk(kinds.includes('hidden-process'), 'no hidden-process finding from an incomplete report');
});

t.test('boundGuestReport: cuts names to the 63 bytes /proc can show, caps the count, keeps a clean report as is', async (t) => {
  const ok = report(snapshot());
  t.equal(boundGuestReport(ok), ok, 'a clean report comes back unchanged');
  // What a real guest's /proc shows for a workqueue worker is longer than a comm, and fine.
  const kworker = { takenAtMs: 1, agent: 'ok' as const, processes: [{ pid: 301, ppid: 2, comm: 'kworker/0:1H-kblockd', state: 'I' }] };
  t.equal(boundGuestReport(kworker), kworker, 'a kernel worker\'s long /proc name is no fault');
  const b = boundGuestReport({ takenAtMs: 1, agent: 'ok', processes: [{ pid: 5, ppid: 1, comm: 'a'.repeat(100), state: 'S' }, { pid: 6, ppid: 1, comm: 'é'.repeat(32), state: 'S' }] });
  t.equal(b.agent, 'ok');
  if (b.agent !== 'ok') return;
  t.same(b.processes.map((p) => p.comm), ['a'.repeat(63), 'é'.repeat(31)]);
  t.ok(b.processes.every((p) => Buffer.byteLength(p.comm) <= 63));
  t.match(b.malformed, { complete: true, reasons: [/2 process names longer than 63 bytes/] });
  const many = floodReport(ok);
  const c = boundGuestReport(many);
  if (c.agent !== 'ok') return t.fail('ok expected');
  t.equal(c.processes.length, GUEST_REPORT_LIMITS.maxProcesses);
  t.equal(c.malformed?.complete, false);
  const bad = boundGuestReport({ takenAtMs: 1, agent: 'ok', processes: [{ pid: -1, ppid: 1, comm: 'x', state: 'S' }, { pid: 7, ppid: 1, comm: 'y', state: 'long' }] });
  if (bad.agent !== 'ok') return t.fail('ok expected');
  t.same(bad.processes, []);
  t.match(bad.malformed, { complete: false, reasons: [/2 entries with a bad pid, ppid or state/] });
  const down = boundGuestReport({ takenAtMs: 1, agent: 'down', error: HUGE_NAME });
  if (down.agent !== 'down') return t.fail('down expected');
  t.ok(down.error.length <= GUEST_REPORT_LIMITS.errorChars + 40, 'an agent error text is cut');
});

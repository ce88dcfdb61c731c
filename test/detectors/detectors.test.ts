// Detectors over synthetic snapshots: each fault the lab's attacks cause,
// the races that must not be faults, and confirmation over scans.
import t from 'tap';
import { analyzeScan, type ScanInput } from '../../src/detectors/index.js';
import { FindingTracker } from '../../src/detectors/findings.js';
import { detectHiddenProcesses } from '../../src/detectors/hidden-process.js';
import { baselineOf } from '../../src/detectors/baseline.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import { HANDLERS, SLIDE, handlerAddr, report, snapshot, task } from './synthetic.js';

const critical = [{ name: 'csdtest' }];
const input = (snap: KernelSnapshot | null, over: Partial<ScanInput> = {}): ScanInput => ({
  nowMs: 5000, snapshot: snap, snapshotError: null, report: snap ? report(snap) : { takenAtMs: 0, agent: 'ok', processes: [] },
  critical, baseline: null, ...over,
});

t.test('a clean guest: no observation, and its baseline is recorded', async (t) => {
  const s = snapshot();
  const a = analyzeScan(input(s));
  t.same(a.observations, []);
  t.same(a.undetermined, []);
  t.ok(a.baselineToRecord);
  t.equal(a.baselineToRecord?.syscalls.sys_call_table?.[1], '0xffffffff81300040');
  // Same kernel, next scan with the baseline: nothing to record again.
  const b = analyzeScan(input(s, { baseline: a.baselineToRecord }));
  t.same(b.observations, []);
  t.equal(b.baselineToRecord, null);
});

t.test('DKOM: a pid unlinked from the task list but in the IDR, run queue and guest ps', async (t) => {
  const hidden = task(200, 'evil');
  const base = snapshot();
  const s: KernelSnapshot = {
    ...base,
    pidIdr: { entries: [...base.pidIdr.entries, { pid: 200, task: hidden.address }], errors: [] },
    runQueues: { cpus: [{ cpu: 0, current: 0n, queued: [hidden.address] }], errors: [] },
  };
  const r = detectHiddenProcesses(s, report(s, [{ pid: 200, ppid: 1, comm: 'evil', state: 'R' }]));
  t.equal(r.observations.length, 1);
  t.match(r.observations[0], {
    kind: 'hidden-process', target: '200',
    evidence: { pid: 200, comm: 'evil', inViews: ['pid-idr', 'run-queue', 'guest-ps'], missingFrom: ['task-list'] },
  });
  t.match(r.observations[0]?.summary, 'pid 200 (evil) is in pid-idr, run-queue, guest-ps but not in task-list');
});

t.test('a process the guest hides from its own ps (task list has it, guest ps lacks it)', async (t) => {
  const s = snapshot();
  const r = detectHiddenProcesses(s, report(s, [], [130]));
  t.same(r.observations.map((o) => [o.evidence.pid, o.evidence.inViews, o.evidence.missingFrom]), [[130, ['task-list', 'pid-idr'], ['guest-ps']]]);
});

t.test('a queued task on no list at all is named by address', async (t) => {
  const base = snapshot();
  const s: KernelSnapshot = { ...base, runQueues: { cpus: [{ cpu: 0, current: 0n, queued: [0xffff888012345000n] }], errors: [] } };
  const r = detectHiddenProcesses(s, report(s));
  t.match(r.observations, [{ evidence: { pid: null, task: '0xffff888012345000', inViews: ['run-queue'], missingFrom: ['task-list', 'pid-idr'] } }]);
});

t.test('processes starting or exiting between views are not findings; persistent ones are', async (t) => {
  const tracker = new FindingTracker((k) => DEFAULT_POLICY.faults[k].confirmScans);
  // Scan 1: a shell the agent started appears only in guest ps; a process exited after the snapshot.
  let s = snapshot();
  let u = tracker.update(analyzeScan(input(s, { report: report(s, [{ pid: 300, ppid: 120, comm: 'cat', state: 'R' }], [140]) })), 1000);
  t.same(u.findings, [], 'one-scan discrepancies are not confirmed');
  // Scan 2: those are gone; new transient pids appear.
  s = snapshot({ tasks: [task(1, 'init'), task(120, 'qemu-ga'), task(130, 'csdtest')] });
  u = tracker.update(analyzeScan(input(s, { report: report(s, [{ pid: 301, ppid: 120, comm: 'cat', state: 'R' }]) })), 2000);
  t.same(u.findings, [], 'different transients each scan: never confirmed');
  // A hidden pid seen in two consecutive scans is confirmed.
  const hidden = task(200, 'evil');
  const dkom: KernelSnapshot = { ...s, pidIdr: { entries: [...s.pidIdr.entries, { pid: 200, task: hidden.address }], errors: [] } };
  u = tracker.update(analyzeScan(input(dkom)), 3000);
  t.same(u.findings, []);
  u = tracker.update(analyzeScan(input(dkom)), 4000);
  t.equal(u.raised.length, 1);
  t.match(u.raised[0], { kind: 'hidden-process', target: '200', evidence: { count: 1, items: [{ pid: 200, missingFrom: ['task-list'] }] } });
  const id = u.raised[0]?.id;
  u = tracker.update(analyzeScan(input(dkom)), 5000);
  t.same(u.raised, [], 'raised once');
  t.equal(u.findings[0]?.id, id, 'stable id');
  u = tracker.update(analyzeScan(input(s)), 6000);
  t.same(u.cleared.map((f) => f.id), [id], 'cleared when gone');
});

t.test('a new boot: unconfirmed observations count afresh (pids repeat across boots), confirmed findings stand', async (t) => {
  const tracker = new FindingTracker((k) => DEFAULT_POLICY.faults[k].confirmScans);
  t.equal(DEFAULT_POLICY.faults['hidden-process'].confirmScans, 2, 'hidden-process confirms over 2 scans');
  // A kernel thread that ends between the guest's ps and the snapshot, once in each boot, with the same pid.
  const race = { observations: [{ kind: 'hidden-process' as const, key: '106:ext4lazyinit:task-list,pid-idr', summary: 'pid 106 (ext4lazyinit) is in guest-ps but not in task-list, pid-idr', target: '106', evidence: {} }], undetermined: [] };
  const none = { observations: [], undetermined: [] };
  t.same(tracker.update(race, 1000).raised, [], 'first boot: one scan, not confirmed');
  // Scans with a kept (not fresh) report cannot judge it: its streak waits.
  tracker.update({ observations: [], undetermined: ['hidden-process'] }, 2000);
  tracker.newBoot();
  t.same(tracker.update(race, 3000).raised, [], 'the same race in the next boot does not confirm the first one');
  t.equal(tracker.update(race, 4000).raised.length, 1, 'two scans of one boot do');
  // A confirmed finding is not cleared by the reboot itself, only by a scan of the new boot without it.
  tracker.newBoot();
  const u = tracker.update(race, 5000);
  t.same([u.raised.length, u.cleared.length, u.findings.length], [0, 0, 1], 'confirmed: stands over the new boot');
  t.equal(tracker.update(none, 6000).cleared.length, 1, 'cleared by a clean scan');
});

t.test('critical process missing: from the task list, else from the guest ps; zombies do not count', async (t) => {
  const s = snapshot({ tasks: [task(1, 'init'), task(120, 'qemu-ga')] });
  const a = analyzeScan(input(s));
  t.match(a.observations, [{ kind: 'critical-process-missing', target: 'csdtest', evidence: { checkedIn: 'task-list' } }]);
  const b = analyzeScan(input(null, { report: { takenAtMs: 1, agent: 'ok', processes: [{ pid: 130, ppid: 1, comm: 'csdtest', state: 'Z' }] } }));
  t.match(b.observations, [{ kind: 'critical-process-missing', evidence: { checkedIn: 'guest-ps' } }]);
  t.same([...b.undetermined].sort(), ['bpf-hook', 'ftrace-hook', 'hidden-module', 'hidden-process', 'kernel-integrity-changed', 'kprobe-hook', 'syscall-table-changed', 'tracepoint-hook', 'unowned-kernel-code']);
  const c = analyzeScan(input(null, { introspectionOff: true, report: { takenAtMs: 1, agent: 'ok', processes: [{ pid: 130, ppid: 1, comm: 'csdtest', state: 'S' }] } }));
  t.same(c.observations, [], 'introspection off: the guest ps alone, and it holds csdtest');
  // A comm longer than 15 characters is matched truncated, as the kernel keeps it.
  const long = snapshot({ tasks: [task(1, 'init'), task(5, 'averylongdaemon')] });
  t.same(analyzeScan(input(long, { critical: [{ name: 'averylongdaemonname' }] })).observations.filter((o) => o.kind === 'critical-process-missing'), []);
});

t.test('fail closed: an agent that answers while the kernel cannot be read is introspection-failed, never clean', async (t) => {
  const ps = { takenAtMs: 1, agent: 'ok' as const, processes: [{ pid: 130, ppid: 1, comm: 'csdtest', state: 'S' }] };
  const a = analyzeScan(input(null, { snapshotError: 'guest memory: cannot open /dev/shm/x.ram', report: ps }));
  t.match(a.observations, [{ kind: 'introspection-failed', evidence: { error: /cannot open/ } }]);
  t.equal(a.baselineToRecord, null);
  t.same(analyzeScan(input(null, { introspectionOff: true, report: ps })).observations, [], 'not when introspection is switched off');
  const down = analyzeScan(input(null, { snapshotError: 'x', report: { takenAtMs: 1, agent: 'down', error: 'no answer' } }));
  t.same(down.observations.map((o) => o.kind), ['agent-down'], 'a guest that is down is agent-down, not introspection-failed');
});

t.test('agent down is a finding, and critical processes are then judged from the task list', async (t) => {
  const s = snapshot();
  const a = analyzeScan(input(s, { report: { takenAtMs: 1, agent: 'down', error: 'guest agent sync: no answer within 2000 ms' } }));
  t.match(a.observations, [{ kind: 'agent-down', evidence: { error: /no answer/ } }]);
  t.same(a.undetermined, []);
  const b = analyzeScan(input(null, { report: { takenAtMs: 1, agent: 'down', error: 'x' } }));
  t.ok(b.undetermined.includes('critical-process-missing'), 'no source for critical processes at all');
});

t.test('syscall hook: changed entries with old and new target and the owning module', async (t) => {
  const clean = snapshot();
  const baseline = baselineOf(clean, 1);
  const hook = 0xffffffffc0010000n;
  const entries = HANDLERS.map((h, nr) => (nr === 1 || nr === 3
    ? { nr, target: hook + BigInt(nr), owner: { kind: 'module' as const, module: 'iv_syscall_hook', symbol: `iv_hook_${nr}` }, expected: h }
    : { nr, target: handlerAddr(nr), owner: { kind: 'kernel' as const, symbol: h }, expected: h }));
  const hooked = snapshot({ entries });
  const a = analyzeScan(input(hooked, { baseline }));
  const sys = a.observations.filter((o) => o.kind === 'syscall-table-changed');
  t.same(sys.map((o) => [o.evidence.nr, o.evidence.oldTarget, o.evidence.newTarget, o.evidence.module]), [
    [1, `0x${handlerAddr(1).toString(16)}`, `0x${(hook + 1n).toString(16)}`, 'iv_syscall_hook'],
    [3, `0x${handlerAddr(3).toString(16)}`, `0x${(hook + 3n).toString(16)}`, 'iv_syscall_hook'],
  ]);
  t.match(sys[0]?.summary, 'sys_call_table[1] points to iv_hook_1 in module iv_syscall_hook instead of __x64_sys_write');
  t.equal(a.baselineToRecord, null, 'a hooked scan never becomes the baseline');
  // The hooking module is on neither module list: a hidden module as well.
  t.match(a.observations.filter((o) => o.kind === 'hidden-module'), [{ evidence: { module: 'iv_syscall_hook', inViews: ['syscall-owner'] } }]);
});

t.test('a slot swapped to another kernel function is caught by the baseline', async (t) => {
  const clean = snapshot();
  const baseline = baselineOf(clean, 1);
  const entries = HANDLERS.map((h, nr) => ({ nr, target: handlerAddr(nr === 2 ? 0 : nr), owner: { kind: 'kernel' as const, symbol: nr === 2 ? HANDLERS[0]! : h }, expected: null }));
  const a = analyzeScan(input(snapshot({ entries }), { baseline }));
  t.same(a.observations.map((o) => [o.kind, o.evidence.nr, o.evidence.reason]), [['syscall-table-changed', 2, 'differs from the baseline']]);
});

t.test('baseline holds across a reboot with a new KASLR slide; per-boot hashes are re-recorded', async (t) => {
  const baseline = baselineOf(snapshot(), 1);
  const rebooted = snapshot({ slide: SLIDE + 0x200000n });
  const a = analyzeScan(input(rebooted, { baseline }));
  t.same(a.observations, []);
  t.equal(a.baselineToRecord?.boot.slide, `0x${(SLIDE + 0x200000n).toString(16)}`);
  t.same(a.baselineToRecord?.syscalls, baseline.syscalls);
});

t.test('no baseline from a guest whose agent does not answer yet (a kernel still booting patches its own text)', async (t) => {
  const booting = { takenAtMs: 1, agent: 'down' as const, error: 'guest agent sync: no answer within 2000 ms' };
  t.equal(analyzeScan(input(snapshot(), { report: booting })).baselineToRecord, null, 'first scan of the guest');
  const rebooted = snapshot({ slide: SLIDE + 0x200000n });
  t.equal(analyzeScan(input(rebooted, { baseline: baselineOf(snapshot(), 1), report: booting })).baselineToRecord, null, 'first scan of a new boot');
  t.ok(analyzeScan(input(rebooted, { baseline: baselineOf(snapshot(), 1) })).baselineToRecord, 'recorded once the agent answers');
});

t.test('kernel integrity: dispatcher body, text hash, IDT and LSTAR against the baseline', async (t) => {
  const clean = snapshot();
  const baseline = baselineOf(clean, 1);
  const bad: KernelSnapshot = {
    ...clean,
    integrity: {
      ...clean.integrity,
      textHash: 'patched',
      dispatchers: [{ name: 'x64_sys_call', hash: 'evil' }, { name: 'ia32_sys_call', hash: 'd2' }],
      idt: [clean.integrity.idt[0]!, 0xffffffffc0020000n],
      lstar: 0xffffffffc0030000n,
    },
  };
  const a = analyzeScan(input(bad, { baseline }));
  t.same(a.observations.map((o) => o.evidence.what), ['x64_sys_call body', 'kernel text hash', 'IDT vector 1', 'MSR_LSTAR']);
  t.ok(a.observations.every((o) => o.kind === 'kernel-integrity-changed'));
});

t.test('hidden module: a kobject with no entry on the module list', async (t) => {
  const s = snapshot();
  const m = { name: 'iv_hide_module', address: 0xffffffffc0100000n, coreBase: 0xffffffffc00ff000n, coreSize: 0x2000 };
  const hid: KernelSnapshot = { ...s, modules: { ...s.modules, kobjects: [...s.modules.kobjects, m] } };
  const a = analyzeScan(input(hid));
  t.match(a.observations, [{ kind: 'hidden-module', target: 'iv_hide_module', evidence: { inViews: ['kobjects'], missingFrom: ['module-list'] } }]);
  t.equal(a.baselineToRecord, null);
});

t.test('a broken task-list walk is undetermined, not a flood of hidden processes', async (t) => {
  const s = snapshot();
  const broken: KernelSnapshot = { ...s, tasks: { ...s.tasks, tasks: s.tasks.tasks.slice(0, 2), errors: [{ where: 'tasks: task_struct@0x1', message: 'unmapped' }] } };
  const a = analyzeScan(input(broken));
  t.same(a.observations.filter((o) => o.kind === 'hidden-process'), []);
  t.ok(a.undetermined.includes('hidden-process'));
});

t.test('1,000 scans of a clean guest with churning transient processes raise no finding', async (t) => {
  const tracker = new FindingTracker((k) => DEFAULT_POLICY.faults[k].confirmScans);
  let baseline = null;
  let raised = 0;
  for (let i = 0; i < 1000; i++) {
    const s = snapshot({ slide: SLIDE + BigInt(i % 3) * 0x200000n });
    // Each scan's own `sh`/`cat` appear in the guest ps only (started after the snapshot).
    const r = report(s, [{ pid: 1000 + 2 * i, ppid: 120, comm: 'sh', state: 'S' }, { pid: 1001 + 2 * i, ppid: 1000 + 2 * i, comm: 'cat', state: 'R' }]);
    const a = analyzeScan(input(s, { report: r, baseline }));
    if (a.baselineToRecord) baseline = a.baselineToRecord;
    raised += tracker.update(a, i * 1000).raised.length;
  }
  t.equal(raised, 0);
});

// tracepoint-hook over synthetic views: who owns a probe, and which of the kernel's own users
// its data proves it to be, decide; the static call must reach the iterator or a probe.
import t from 'tap';
import { detectTracepointHooks } from '../../src/detectors/tracepoint-hooks.js';
import { analyzeScan } from '../../src/detectors/index.js';
import type { HandlerOwner, KernelSnapshot, TracepointInfo, TracepointProbe } from '../../src/views/types.js';
import { report, snapshot } from './synthetic.js';

const kernel = (symbol: string): HandlerOwner => ({ kind: 'kernel', symbol });
const module = (m: string): HandlerOwner => ({ kind: 'module', module: m, symbol: null });
const unknown: HandlerOwner = { kind: 'unknown' };
const ITER = 0xffffffff81100000n;

function probe(func: bigint, owner: HandlerOwner, via: TracepointProbe['via'] = null, data = 0xffff888001000000n): TracepointProbe {
  return { func, data, prio: 10, owner, via };
}
function tp(name: string, probes: TracepointProbe[], over: Partial<TracepointInfo> = {}): TracepointInfo {
  const call = probes.length === 1 ? (probes[0] as TracepointProbe).func : ITER;
  return { address: 0xffffffff82a00000n, name, module: null, enabled: probes.length > 0, iterator: ITER, call, callOwner: kernel('__traceiter_x'), probes, ...over };
}
const withTps = (tps: TracepointInfo[], errors: { where: string; message: string }[] = [], count = 1500): KernelSnapshot =>
  ({ ...snapshot(), tracepoints: { count, tracepoints: tps, errors } });
const kinds = (s: KernelSnapshot): string[] => detectTracepointHooks(s).observations.map((o) => `${String(o.evidence.tracepoint)} ${String(o.evidence.reason)}`);

t.test('the kernel\'s own users raise nothing', async (t) => {
  const s = withTps([
    tp('sys_enter', [
      probe(0xffffffff81200000n, kernel('trace_event_raw_event_sys_enter'), { kind: 'trace-event' }),
      probe(0xffffffff81200100n, kernel('perf_trace_sys_enter'), { kind: 'perf' }),
      probe(0xffffffff81200200n, kernel('__bpf_trace_sys_enter'), { kind: 'bpf', id: 7, name: 'iv_rawtp' }),
      probe(0xffffffff81200300n, kernel('ftrace_syscall_enter')),
      probe(0xffffffff81200400n, kernel('perf_syscall_enter'), null, 0n),
    ]),
    // A module's own trace event (its class probe in the module, proven through its data).
    tp('ext4_da_write_begin', [probe(0xffffffffc0100000n, module('ext4'), { kind: 'trace-event' })], { module: 'ext4' }),
  ]);
  t.same(detectTracepointHooks(s), { observations: [], undetermined: [] });
});

t.test('a probe in a module or in no known code is a hook', async (t) => {
  const s = withTps([
    tp('sys_enter', [probe(0xffffffffc0200000n, module('iv_tracepoint_hook'))]),
    tp('sched_process_fork', [probe(0xffffffff81300000n, kernel('trace_event_raw_event_sched_process_fork'), { kind: 'trace-event' }), probe(0xffffc90000400000n, unknown)]),
  ]);
  const r = detectTracepointHooks(s);
  t.same(r.observations.map((o) => [o.kind, o.target, o.evidence.tracepoint, o.evidence.reason]), [
    ['tracepoint-hook', 'iv_tracepoint_hook', 'sys_enter', 'probe in a module'],
    ['tracepoint-hook', null, 'sched_process_fork', 'probe owned by no known code'],
  ]);
  t.match(r.observations[0]?.summary, /probe on tracepoint sys_enter runs module iv_tracepoint_hook/);
  t.equal(r.observations[1]?.evidence.probeCount, 2, 'evidence lists every probe of the tracepoint');
  t.not(r.observations[0]?.key, r.observations[1]?.key);
});

t.test('a BPF trampoline with no program behind its data is a hook', async (t) => {
  t.same(kinds(withTps([tp('sys_exit', [probe(0xffffffff81200200n, kernel('__bpf_trace_sys_exit'), { kind: 'bpf', id: null, name: null })])])),
    ['sys_exit BPF raw tracepoint probe with no BPF program behind its data']);
});

t.test('the static call must reach the iterator or one of the probes', async (t) => {
  const ev = probe(0xffffffff81200000n, kernel('trace_event_raw_event_sys_enter'), { kind: 'trace-event' });
  t.same(kinds(withTps([tp('sys_enter', [ev])])), [], 'one probe, the call goes to it');
  t.same(kinds(withTps([tp('sys_enter', [ev, probe(0xffffffff81200100n, kernel('perf_trace_sys_enter'), { kind: 'perf' })])])), [], 'two, the call goes to the iterator');
  const bent = withTps([tp('sys_enter', [ev], { call: 0xffffffffc0300000n, callOwner: module('rk') })]);
  const r = detectTracepointHooks(bent);
  t.same(r.observations.map((o) => [o.target, o.evidence.reason]), [['rk', 'static call reaches code that is not the tracepoint\'s iterator or probe']]);
  t.match(r.observations[0]?.summary, /static call reaches module rk/);
  t.same(kinds(withTps([tp('sys_enter', [ev], { call: 0xffffffffc0300000n, callOwner: module('rk'), enabled: false })])), [], 'key off: the call sites do not call');
});

t.test('an unreadable view is undetermined; an absent one judges nothing', async (t) => {
  t.same(detectTracepointHooks(withTps([], [{ where: 'tracepoints: profile', message: 'no struct tracepoint' }], 0)), { observations: [], undetermined: ['tracepoint-hook'] });
  t.same(detectTracepointHooks({ ...snapshot() }), { observations: [], undetermined: [] });
  t.same(detectTracepointHooks(withTps([], [{ where: 'tracepoints: module x', message: 'tracepoints_ptrs not mapped' }])), { observations: [], undetermined: [] }, 'a partial walk still judges what it read');
});

t.test('analyzeScan: a tracepoint hook keeps the scan from becoming the baseline', async (t) => {
  const s = withTps([tp('sys_enter', [probe(0xffffffffc0200000n, module('iv_tracepoint_hook'))])]);
  const a = analyzeScan({ nowMs: 1, snapshot: s, snapshotError: null, report: report(s), critical: [], baseline: null });
  t.same(a.observations.map((o) => o.kind), ['tracepoint-hook']);
  t.equal(a.baselineToRecord, null);
  const c = analyzeScan({ nowMs: 1, snapshot: withTps([]), snapshotError: null, report: report(withTps([])), critical: [], baseline: null });
  t.same(c.observations, []);
  t.not(c.baselineToRecord, null, 'clean: baseline recorded');
});

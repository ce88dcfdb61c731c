// ftrace-hook and kprobe-hook over synthetic views: who owns the handler and what it hooks decide.
import t from 'tap';
import { detectFtraceHooks } from '../../src/detectors/ftrace-hooks.js';
import { detectKprobeHooks } from '../../src/detectors/kprobe-hooks.js';
import { baseSymbol, hookTargetCategory } from '../../src/detectors/hook-targets.js';
import { analyzeScan } from '../../src/detectors/index.js';
import { confirmUnclaimed, withRecordsOf } from '../../src/views/ftrace.js';
import type { FtraceOps, HandlerOwner, KernelSnapshot, KprobeInfo } from '../../src/views/types.js';
import { report, snapshot } from './synthetic.js';

const kernel = (symbol: string): HandlerOwner => ({ kind: 'kernel', symbol });
const module = (m: string): HandlerOwner => ({ kind: 'module', module: m, symbol: null });
const unknown: HandlerOwner = { kind: 'unknown' };

function ops(funcOwner: HandlerOwner, filter: string[], over: Partial<FtraceOps> = {}): FtraceOps {
  return { address: 0xffffffffc0001000n, func: 0xffffffffc0000100n, funcOwner, trampoline: 0n, trampolineSize: 0, flags: 0, filter, tracesAll: filter.length === 0, ...over };
}
function probe(symbol: string, owner: HandlerOwner, role: 'pre' | 'return' = 'pre'): KprobeInfo {
  return { address: 0xffffffffc0002000n, addr: 0xffffffff81234560n, symbol, preHandler: 0xffffffffc0000200n, postHandler: 0n, handlerOwner: owner, flags: 0, handlers: [{ role, address: 0xffffffffc0000200n, owner }] };
}
const withViews = (f: FtraceOps[], k: KprobeInfo[] = [], extra: Partial<KernelSnapshot['ftrace'] & object> = {}): KernelSnapshot =>
  ({ ...snapshot(), ftrace: { ops: f, enabledSites: [], errors: [], ...extra }, kprobes: { probes: k, errors: [] } });

t.test('the list of functions rootkits hook', async (t) => {
  for (const n of ['__x64_sys_getdents64', '__ia32_sys_kill', 'filldir64', 'iterate_dir', 'proc_pid_readdir', 'tcp4_seq_show', 'udp6_seq_show', 'm_show', 'kill_pid_info', 'audit_log_start', 'filldir64.isra.0', '__x64_sys_getdents64+0x20']) {
    t.ok(hookTargetCategory(n), `${n}: ${String(hookTargetCategory(n))}`);
  }
  for (const n of ['do_sys_openat2', 'schedule', 'vfs_read', 'ext4_readdir', 'tcp_sendmsg']) t.equal(hookTargetCategory(n), null, `${n}: not on the list`);
  t.equal(baseSymbol('filldir64.constprop.0'), 'filldir64');
});

t.test('ftrace: the kernel\'s own ops never alarm, whatever they trace', async (t) => {
  const s = withViews([
    ops(kernel('function_trace_call'), []),
    ops(kernel('kprobe_ftrace_handler'), ['__x64_sys_kill']),
    ops(kernel('call_direct_funcs'), ['__x64_sys_getdents64']),
  ]);
  t.same(detectFtraceHooks(s), { observations: [], undetermined: [] });
});

t.test('ftrace: a module on functions rootkits hook; a module elsewhere is its business', async (t) => {
  const r = detectFtraceHooks(withViews([ops(module('rk'), ['__x64_sys_getdents64', 'schedule']), ops(module('profiler'), ['ext4_readdir'])]));
  t.same(r.observations.map((o) => [o.kind, o.target, o.evidence.module]), [['ftrace-hook', 'rk', 'rk']]);
  t.match(r.observations[0]?.summary, /module rk hooks __x64_sys_getdents64 through ftrace/);
  t.same(r.observations[0]?.evidence.targets, [{ name: '__x64_sys_getdents64', category: 'syscall entry' }]);
  t.equal(detectFtraceHooks(withViews([ops(module('global'), [])])).observations.length, 1, 'a module tracing every function');
});

t.test('ftrace: a handler no known code owns, whatever it traces', async (t) => {
  const r = detectFtraceHooks(withViews([ops(unknown, ['ext4_readdir'])]));
  t.equal(r.observations.length, 1);
  t.match(r.observations[0]?.summary, /code no kernel symbol or module owns in front of ext4_readdir/);
});

t.test('ftrace: fprobe and livepatch ops are judged by the user code their kernel handler runs', async (t) => {
  const fp = (owner: HandlerOwner, filter: string[]): FtraceOps => ops(kernel('fprobe_handler'), filter, { handlers: [{ role: 'fprobe-entry', address: 0xffffffffc0000300n, owner }] });
  const r = detectFtraceHooks(withViews([fp(module('rk'), ['filldir64']), fp(module('monitor'), ['ext4_readdir']), fp(kernel('x'), ['filldir64'])]));
  t.same(r.observations.map((o) => [o.target, o.evidence.role, o.evidence.handler]), [['rk', 'fprobe-entry', '0xffffffffc0000300']]);
  t.match(r.observations[0]?.summary, /module rk hooks filldir64 through ftrace \(handler 0xffffffffc0000300 \(its fprobe-entry handler, run by kernel fprobe_handler\)\)/);
  const lp = detectFtraceHooks(withViews([ops(kernel('klp_ftrace_handler'), ['__x64_sys_getdents64'], { handlers: [{ role: 'livepatch', address: 0xffffffffc0000400n, owner: unknown }] })]));
  t.same(lp.observations.map((o) => [o.evidence.role, o.evidence.reason]), [['livepatch', 'handler owned by no known code']]);
});

t.test('ftrace: a live call site no registered ops claims', async (t) => {
  const r = detectFtraceHooks(withViews([], [], { unclaimedSites: ['filldir64', 'schedule'] }));
  t.same(r.observations.map((o) => [o.kind, o.evidence.count, o.evidence.sites]), [['ftrace-hook', 2, [{ site: 'filldir64', category: 'directory listing' }, { site: 'schedule', category: null }]]], 'one observation for all of them');
  // The supervisor keeps only what two record walks in a row saw (an ops being unregistered leaves the list first).
  const v = (u: string[]): NonNullable<KernelSnapshot['ftrace']> => ({ ops: [], enabledSites: [], unclaimedSites: u, errors: [] });
  t.same(confirmUnclaimed(v(['filldir64', 'schedule']), v(['filldir64'])).unclaimedSites, ['filldir64']);
  t.same(confirmUnclaimed(v(['filldir64']), undefined).unclaimedSites, []);
});

t.test('ftrace: an unreadable ops list is undetermined; record errors alone are not', async (t) => {
  t.same(detectFtraceHooks(withViews([], [], { errors: [{ where: 'ftrace: ops 0x10', message: 'not a kernel pointer' }] })).undetermined, ['ftrace-hook']);
  t.same(detectFtraceHooks(withViews([], [], { errors: [{ where: 'ftrace: records', message: 'x' }] })).undetermined, []);
  t.same(detectFtraceHooks(snapshot()), { observations: [], undetermined: [] }, 'a snapshot without the view judges nothing');
});

t.test('kprobes: tracefs events and handler-less probes are fine; modules on hooked functions and unowned code are not', async (t) => {
  const ok = detectKprobeHooks(withViews([], [
    probe('do_sys_openat2', kernel('kprobe_dispatcher')),
    probe('__x64_sys_kill', kernel('kprobe_dispatcher')),
    { ...probe('kallsyms_lookup_name', kernel('x')), preHandler: 0n, handlers: [] },
    probe('ext4_readdir', module('monitor')),
  ]));
  t.same(ok, { observations: [], undetermined: [] });
  const bad = detectKprobeHooks(withViews([], [probe('__x64_sys_kill', module('rk')), probe('schedule', unknown, 'return')]));
  t.same(bad.observations.map((o) => [o.evidence.symbol, o.target, o.evidence.reason]), [
    ['__x64_sys_kill', 'rk', 'module handler on a function rootkits hook'],
    ['schedule', null, 'handler owned by no known code'],
  ]);
  t.match(bad.observations[1]?.summary, /return handler/);
});

t.test('analyzeScan runs both', async (t) => {
  const s = withViews([ops(module('rk'), ['filldir64'])], [probe('__x64_sys_kill', module('rk'))]);
  const a = analyzeScan({ nowMs: 1, snapshot: s, snapshotError: null, report: report(s), critical: [], baseline: null });
  t.same(a.observations.map((o) => o.kind).sort(), ['ftrace-hook', 'kprobe-hook']);
});

t.test('a scan that skipped the ftrace records carries over the last walk\'s', async (t) => {
  const last = { ops: [], enabledSites: [0xffffffff81000000n], enabledCount: 1, records: 40_000, unclaimedSites: ['filldir64'], errors: [] };
  const now = { ops: [ops(module('rk'), ['filldir64'])], enabledSites: [], errors: [] };
  const m = withRecordsOf(now, last);
  t.same([m.ops.length, m.enabledSites, m.enabledCount, m.records, m.unclaimedSites], [1, [0xffffffff81000000n], 1, 40_000, ['filldir64']]);
});

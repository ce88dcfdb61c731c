// The text-diff judge on synthetic text diffs: ftrace, kprobes, BPF dispatchers and SMP
// alternatives are instrumentation; a jmp into a module, an int3 nobody registered and other
// bytes are patches, named with their function, instruction and destination's owner.
import t from 'tap';
import { analyzeScan } from '../../src/detectors/index.js';
import { baselineOf } from '../../src/detectors/baseline.js';
import { detectTextChanges, textInstrumentation } from '../../src/detectors/text-integrity.js';
import type { KernelSnapshot, TextBranch, TextDiffView, TextSite } from '../../src/views/types.js';
import { report, snapshot } from './synthetic.js';

const clean = snapshot();
const baseline = baselineOf(clean, 1);
const REF = { textHash: clean.integrity.textHash as string, pagedHash: 'pages4k:x' };
const MOD = 0xffffffffc0001000n;
const TRAMP = 0xffffffffc0200000n;
const FTRACE = 0xffffffff81e00000n;

const site = (over: Partial<TextSite>): TextSite => ({
  address: 0xffffffff81200004n, function: 'vfs_read', offset: 4, old: '0f1f440000', new: '0f1f440000',
  oldInstruction: 'nop', instruction: 'nop', atEntry: true, branch: null, int3: false, ...over,
});
const branch = (kind: 'call' | 'jmp', target: bigint, owner: TextBranch['owner'], looksLike: TextBranch['looksLike'] = null): TextBranch => ({ kind, target, owner, looksLike });

function withDiff(d: Partial<TextDiffView>, extra: Partial<KernelSnapshot> = {}): KernelSnapshot {
  return {
    ...clean, ...extra,
    integrity: { ...clean.integrity, textHash: 'changed' },
    textDiff: { reference: REF, pagesChanged: 1, sites: [], fentryGroups: [], truncated: false, kprobeAddresses: [], dispatchers: [], errors: [], ...d },
  };
}

t.test('ftrace calls, kprobes, BPF dispatchers, SMP alternatives: no observation, listed as instrumentation', async (t) => {
  const snap = withDiff({
    fentryGroups: [
      { state: 'call', branch: branch('call', FTRACE, { kind: 'kernel', symbol: 'ftrace_regs_caller' }), count: 40000, examples: ['vfs_read'] },
      { state: 'call', branch: branch('call', TRAMP, { kind: 'unknown' }, 'ftrace-trampoline'), count: 12, examples: ['vfs_write'] },
      { state: 'nop', branch: null, count: 3, examples: [] },
    ],
    sites: [
      site({ address: 0xffffffff81200010n, offset: 0x10, atEntry: false, int3: true, new: 'cc', instruction: 'int3' }),
      site({ address: 0xffffffff81200020n, offset: 0x20, atEntry: false, branch: branch('jmp', 0xffffffffc0300000n, { kind: 'unknown' }), instruction: 'jmp 0xffffffffc0300000' }),
      site({ function: 'bpf_dispatcher_xdp_func', branch: branch('jmp', 0xffffffffc0400000n, { kind: 'unknown' }), instruction: 'jmp 0xffffffffc0400000' }),
      site({ atEntry: false, offset: 0x40, old: 'f00fb111', new: '3e0fb111', oldInstruction: 'lock cmpxchg', instruction: 'ds cmpxchg' }),
    ],
    kprobeAddresses: [0xffffffff81200010n, 0xffffffff81200020n],
  });
  const a = analyzeScan({ nowMs: 2, snapshot: snap, snapshotError: null, report: report(snap), critical: [], baseline });
  t.same(a.observations, [], 'nothing observed (the plain text-hash change is explained)');
  const notes = textInstrumentation(snap, baseline);
  t.equal(notes.length, 7);
  t.match(notes.join('\n'), /40000 fentry sites: ftrace \(ftrace_regs_caller\)/);
  t.match(notes.join('\n'), /kprobe at vfs_read\+0x10/);
  t.match(notes.join('\n'), /optimized kprobe at vfs_read\+0x20/);
  t.match(notes.join('\n'), /BPF dispatcher bpf_dispatcher_xdp_func/);
  t.match(notes.join('\n'), /SMP alternatives/);
});

t.test('an inline jmp into a module is a patch naming function, instruction, destination and owner', async (t) => {
  const hook = site({ function: '__x64_sys_kill', new: 'e9f7ffff3e', instruction: 'jmp 0xffffffffc0001000', oldInstruction: 'nop', branch: branch('jmp', MOD, { kind: 'module', module: 'rootkit', symbol: null }) });
  const snap = withDiff({ sites: [hook], fentryGroups: [{ state: 'call', branch: branch('call', FTRACE, { kind: 'kernel', symbol: 'ftrace_caller' }), count: 5, examples: [] }] });
  const r = detectTextChanges(snap, baseline);
  t.equal(r.observations.length, 1);
  const o = r.observations[0];
  t.equal(o?.kind, 'kernel-integrity-changed');
  t.match(o?.summary ?? '', /__x64_sys_kill\+0x4: jmp 0xffffffffc0001000 \(jmp to 0xffffffffc0001000, module rootkit\), was nop/);
  t.match(o?.evidence ?? {}, { what: 'kernel text', function: '__x64_sys_kill', offset: 4, old: '0f1f440000', new: 'e9f7ffff3e', destination: '0xffffffffc0001000', module: 'rootkit', owner: { kind: 'module', module: 'rootkit' } });
  t.same(o?.evidence.instrumented, ['5 function entries call ftrace (ftrace_caller)'], 'instrumentation listed beside it');
});

t.test('what instrumentation does not cover stays a patch', async (t) => {
  const cases: [string, TextSite | null, TextDiffView['fentryGroups'][number] | null][] = [
    ['int3 where no kprobe is', site({ atEntry: false, offset: 8, address: 0xffffffff81200008n, int3: true, instruction: 'int3' }), null],
    ['a fentry call into a module (ftrace-like, not ftrace)', null, { state: 'call', branch: branch('call', MOD, { kind: 'module', module: 'rootkit', symbol: null }), count: 2, examples: ['filldir64'] }],
    ['a fentry call to unowned memory that is no trampoline copy', null, { state: 'call', branch: branch('call', TRAMP, { kind: 'unknown' }), count: 1, examples: ['iterate_dir'] }],
    ['a jmp at a kprobe address into a module', site({ address: 0xffffffff81200010n, atEntry: false, branch: branch('jmp', MOD, { kind: 'module', module: 'rootkit', symbol: null }) }), null],
    ['a BPF dispatcher jumping into a module', site({ function: 'bpf_dispatcher_xdp_func', branch: branch('jmp', MOD, { kind: 'module', module: 'rootkit', symbol: null }) }), null],
    ['other bytes', site({ atEntry: false, offset: 0x30, old: '4889e5', new: '31c0c3', oldInstruction: 'mov', instruction: 'xor; ret' }), null],
  ];
  for (const [name, s, g] of cases) {
    const snap = withDiff({ sites: s ? [s] : [], fentryGroups: g ? [g] : [], kprobeAddresses: [0xffffffff81200010n] });
    const r = detectTextChanges(snap, baseline);
    t.same(r.observations.map((o) => o.kind), ['kernel-integrity-changed'], name);
  }
  // A copy of ftrace's caller that no registered ops owns, once the ftrace view is there.
  const snap = withDiff({ fentryGroups: [{ state: 'call', branch: branch('call', TRAMP, { kind: 'unknown' }, 'ftrace-trampoline'), count: 1, examples: [] }] }, { ftrace: { ops: [], enabledSites: [], errors: [] } });
  t.equal(detectTextChanges(snap, baseline).observations.length, 1, 'a trampoline copy no ftrace ops owns');
  const owned = withDiff({ fentryGroups: [{ state: 'call', branch: branch('call', TRAMP + 0x10n, { kind: 'unknown' }), count: 1, examples: [] }] },
    { ftrace: { ops: [{ address: 0xffff888000001000n, func: FTRACE, funcOwner: { kind: 'kernel', symbol: 'function_trace_call' }, trampoline: TRAMP, trampolineSize: 0x100, flags: 0, filter: [], tracesAll: true }], enabledSites: [], errors: [] } });
  t.same(detectTextChanges(owned, baseline).observations, [], 'the trampoline of a registered ops');
});

t.test('a clean copy that is not the baseline explains nothing: the plain hash change stays', async (t) => {
  const hook = site({ branch: branch('jmp', MOD, { kind: 'module', module: 'rootkit', symbol: null }) });
  const snap: KernelSnapshot = { ...withDiff({ sites: [hook] }), textDiff: { ...(withDiff({ sites: [hook] }).textDiff as TextDiffView), reference: { textHash: 'other', pagedHash: 'pages4k:y' } } };
  t.same(detectTextChanges(snap, baseline).observations, []);
  const a = analyzeScan({ nowMs: 2, snapshot: snap, snapshotError: null, report: report(snap), critical: [], baseline });
  t.same(a.observations.map((o) => o.evidence.what), ['kernel text hash'], 'page-level: the text hash differs');
  const truncated = withDiff({ truncated: true, pagesChanged: 900 });
  t.same(detectTextChanges(truncated, baseline).observations.map((o) => o.key), ['text:more-sites'], 'more changes than listed: fail closed');
});

t.test('a dispatch switch body change is explained by its changed call', async (t) => {
  const was = baseline.dispatchers.x64_sys_call as string;
  const call = site({ function: 'x64_sys_call', offset: 0x1a3, atEntry: false, old: 'e8aabbccdd', new: 'e811223344', oldInstruction: 'call 0xffffffff81234560', instruction: 'call 0xffffffffc0001000', branch: branch('call', MOD, { kind: 'module', module: 'iv_dispatch_hook', symbol: null }), oldTarget: '__x64_sys_getpid' });
  const snap: KernelSnapshot = {
    ...withDiff({ sites: [call], dispatchers: [{ name: 'x64_sys_call', referenceHash: was, sites: [call] }] }),
    integrity: { ...clean.integrity, textHash: 'changed', dispatchers: [{ name: 'x64_sys_call', hash: 'd1-patched' }, { name: 'ia32_sys_call', hash: 'd2' }] },
  };
  const a = analyzeScan({ nowMs: 2, snapshot: snap, snapshotError: null, report: report(snap), critical: [], baseline });
  t.same(a.observations.map((o) => o.evidence.what), ['x64_sys_call body'], 'one observation: the body (its text site not twice)');
  t.match(a.observations[0]?.summary ?? '', /x64_sys_call body changed: x64_sys_call\+0x1a3: call 0xffffffffc0001000 \(call to 0xffffffffc0001000, module iv_dispatch_hook\), was call 0xffffffff81234560 \(__x64_sys_getpid\)/);
  t.match(a.observations[0]?.evidence.sites, [{ function: 'x64_sys_call', offset: 0x1a3, module: 'iv_dispatch_hook' }]);
  t.equal(a.observations[0]?.key, 'x64_sys_call body:d1-patched', 'keyed as before');
});

t.test('a dispatch switch only traced (its fentry call to ftrace) raises nothing; ftrace repointing its own caller neither', async (t) => {
  const was = baseline.dispatchers.x64_sys_call as string;
  const traced = site({ function: 'x64_sys_call', offset: 0, new: 'e8aabbccdd', instruction: 'call 0xffffffffc0200000', branch: branch('call', TRAMP, { kind: 'unknown' }, 'ftrace-trampoline') });
  const self = site({ function: 'ftrace_regs_call', offset: 0, atEntry: true, old: 'e811111111', new: 'e822222222', oldInstruction: 'call ftrace_stub', instruction: 'call ftrace_ops_list_func', branch: branch('call', FTRACE + 0x100n, { kind: 'kernel', symbol: 'ftrace_ops_list_func' }) });
  const snap: KernelSnapshot = {
    ...withDiff({ sites: [self], dispatchers: [{ name: 'x64_sys_call', referenceHash: was, sites: [traced] }] }),
    integrity: { ...clean.integrity, textHash: 'changed', dispatchers: [{ name: 'x64_sys_call', hash: 'd1-traced' }, { name: 'ia32_sys_call', hash: 'd2' }] },
  };
  const a = analyzeScan({ nowMs: 2, snapshot: snap, snapshotError: null, report: report(snap), critical: [], baseline });
  t.same(a.observations, []);
  t.same(textInstrumentation(snap, baseline), ["ftrace's ftrace_regs_call now reaches ftrace_ops_list_func", 'ftrace trampoline (a copy of ftrace_regs_caller) called at x64_sys_call+0x0']);
  const rootkit = withDiff({ sites: [{ ...self, branch: branch('call', MOD, { kind: 'module', module: 'rootkit', symbol: null }) }] });
  t.same(detectTextChanges(rootkit, baseline).observations.map((o) => o.evidence.module), ['rootkit'], 'ftrace_regs_call into a module no ftrace ops names is a patch');
});

t.test('without a trusted copy (a dump judged elsewhere): the hash stands, and the function entries are judged beside it', async (t) => {
  const hook = site({ function: '__x64_sys_kill', old: '', oldInstruction: '(no clean copy)', new: 'e9fbffffff', instruction: 'jmp 0xffffffffc0001000', branch: branch('jmp', MOD, { kind: 'module', module: 'rootkit', symbol: null }) });
  const traced = { state: 'call' as const, branch: branch('call', TRAMP, { kind: 'unknown' as const }, 'ftrace-trampoline'), count: 30000, examples: ['vfs_read'] };
  const snap: KernelSnapshot = { ...withDiff({}), textDiff: { ...(withDiff({}).textDiff as TextDiffView), reference: { textHash: 'changed', pagedHash: 'pages4k:z' }, entries: { sites: [hook], fentryGroups: [traced], truncated: false } } };
  const a = analyzeScan({ nowMs: 2, snapshot: snap, snapshotError: null, report: report(snap), critical: [], baseline });
  t.same(a.observations.map((o) => `${String(o.evidence.what)} ${String(o.evidence.function ?? '')} ${String(o.evidence.module ?? '')}`).sort(), ['kernel text __x64_sys_kill rootkit', 'kernel text hash  '], 'the hook named beside the plain hash');
  const same = { ...snap, integrity: { ...snap.integrity, textHash: clean.integrity.textHash } };
  t.same(detectTextChanges(same, baseline).observations, [], 'nothing when the text hashes as the baseline');
});

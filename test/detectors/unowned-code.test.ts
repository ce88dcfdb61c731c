// The module-area detector over synthetic snapshots: unowned executable runs (with what points into
// them), carved hidden modules, legitimate owners staying silent, and a skipped walk undetermined.
import t from 'tap';
import { analyzeScan } from '../../src/detectors/index.js';
import { detectUnownedCode } from '../../src/detectors/unowned-code.js';
import type { CodeRegion, KernelSnapshot } from '../../src/views/types.js';
import { report, snapshot } from './synthetic.js';

const ROGUE = 0xffffffffc0100000n;

function withArea(regions: CodeRegion[], over: Partial<NonNullable<KernelSnapshot['moduleArea']>> = {}): KernelSnapshot {
  const s = snapshot();
  return { ...s, moduleArea: { regions, hiddenModules: [], errors: [], ...over } };
}

t.test('legitimate owners raise nothing', async (t) => {
  const s = withArea([
    { start: 0xffffffffc0000000n, size: 0x2000, owner: 'module', name: 'virtio_blk' },
    { start: 0xffffffffc0010000n, size: 0x1000, owner: 'ftrace-trampoline', name: null },
    { start: 0xffffffffc0020000n, size: 0x1000, owner: 'kprobe-slots', name: 'kprobe_insn_slots' },
    { start: 0xffffffffc0200000n, size: 0x200000, owner: 'bpf-jit', name: 'bpf_prog_pack' },
  ]);
  t.same(detectUnownedCode(s), { observations: [], undetermined: [] });
  t.same(analyzeScan({ nowMs: 1, snapshot: s, snapshotError: null, report: report(s), critical: [], baseline: null }).observations, []);
});

t.test('an unowned run is unowned-kernel-code, naming what points into it', async (t) => {
  const s0 = withArea([{ start: ROGUE, size: 0x3000, owner: 'unknown', name: null }],
    { references: [{ from: 'ftrace ops 0xffff888001234000 func', target: ROGUE + 0x40n }] });
  const table = s0.syscallTables[0];
  if (!table) throw new Error('synthetic snapshot without a table');
  const entries = table.entries.map((e) => (e.nr === 1 ? { ...e, target: ROGUE + 0x10n, owner: { kind: 'unknown' as const } } : e));
  const s: KernelSnapshot = { ...s0, syscallTables: [{ ...table, entries }] };
  const r = detectUnownedCode(s);
  t.equal(r.observations.length, 1);
  const o = r.observations[0];
  t.equal(o?.kind, 'unowned-kernel-code');
  t.equal(o?.key, `unowned:0x${ROGUE.toString(16)}`, 'keyed by start: stable across scans');
  t.same(o?.evidence.pointedFrom, [`sys_call_table[1] -> 0x${(ROGUE + 0x10n).toString(16)}`, `ftrace ops 0xffff888001234000 func -> 0x${(ROGUE + 0x40n).toString(16)}`]);
  t.equal(o?.evidence.size, 0x3000);
  t.match(o?.summary, /12 KiB.*reached from sys_call_table\[1\]/);
  const a = analyzeScan({ nowMs: 1, snapshot: s, snapshotError: null, report: report(s), critical: [], baseline: null });
  t.equal(a.baselineToRecord, null, 'no baseline from a guest running unowned code');
});

t.test('a carved module is hidden-module, named, with its state', async (t) => {
  const s = withArea([{ start: ROGUE, size: 0x2000, owner: 'module', name: 'rk' }], {
    hiddenModules: [{ name: 'rk', address: 0xffffffffc0105000n, coreBase: ROGUE, coreSize: 0x2000, state: 0 }],
  });
  const r = detectUnownedCode(s);
  t.same(r.observations.map((o) => [o.kind, o.target, o.evidence.state, o.evidence.inViews]), [['hidden-module', 'rk', 'live', ['module-area']]]);
  t.match(r.observations[0]?.summary, /module rk .* on neither the module list nor \/sys\/module/);
});

t.test('a carved module coming or going (a failed init, an unload under way) is its code unowned, not hidden-module', async (t) => {
  const s = withArea([{ start: ROGUE, size: 0x2000, owner: 'module', name: 'snd_x' }], {
    hiddenModules: [{ name: 'snd_x', address: 0xffffffffc0105000n, coreBase: ROGUE, coreSize: 0x2000, state: 2 }],
  });
  const r = detectUnownedCode(s);
  t.same(r.observations.map((o) => [o.kind, o.key, o.evidence.module, o.evidence.state]), [['unowned-kernel-code', `unowned:0x${ROGUE.toString(16)}`, 'snd_x', 'going']],
    'one observation of a kind that confirms over walks (2 by default), so a passing unload does not act');
  t.match(r.observations[0]?.summary, /belongs to module snd_x, which is going and on neither/);
});

t.test('a scan without the walk is undetermined, and so is a walk that read nothing', async (t) => {
  const s = snapshot();
  const { moduleArea: _, ...without } = s;
  t.same(detectUnownedCode(without).undetermined, ['unowned-kernel-code', 'hidden-module']);
  t.same(detectUnownedCode(withArea([], { errors: [{ where: 'module area: top table', message: 'outside RAM' }] })).undetermined, ['unowned-kernel-code', 'hidden-module']);
});

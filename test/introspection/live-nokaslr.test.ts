// The introspection engine on a lab guest with KASLR off and 4-level paging
// (-cpu max,la57=off): symbols, processes, modules and the syscall table,
// live (CR3 from QMP) and from a raw dump.
import t from 'tap';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLabGuest } from '../../lab/lab-guest.js';
import { Introspector } from '../../src/views/scan.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import { compareProcesses, dumpRam, foreignSyscalls, guestKallsyms, guestModules, guestPs, kallsymsLines, paused } from './ground-truth.js';

t.setTimeout(600_000);
const dir = mkdtempSync(join(tmpdir(), 'iv-introspect-'));
const vm = await startLabGuest('iv-introspect-n', { kaslr: false, cpuModel: 'max,la57=off' });
const live = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
t.teardown(async () => {
  live.close();
  await vm.stop();
  rmSync(dir, { recursive: true, force: true });
});

t.test('discovery: no slide, 4-level paging', async (t) => {
  t.equal(live.kernel.identity.kaslrSlide, 0n, 'nokaslr: _text at 0xffffffff81000000');
  t.equal(live.kernel.identity.pagingLevels, 4);
});

t.test('symbols equal /proc/kallsyms', async (t) => {
  const lines = await guestKallsyms(vm);
  const truth = new Set(lines);
  const mine = kallsymsLines(live.kernel.profile.symbols);
  t.equal(mine.length, lines.length, `${lines.length} kernel symbols`);
  t.same(mine.filter((l) => !truth.has(l)).slice(0, 10), []);
});

t.test('live and dump: processes equal ps, modules equal /proc/modules, syscall table clean', async (t) => {
  // ps and a scan (or a dump) are a moment apart: a kernel thread that ends in between (ext4lazyinit)
  // is a race, not a difference; a real one persists over three tries.
  let ps = await guestPs(vm);
  const mods = await guestModules(vm);
  let snap = await paused(vm, () => live.scan());
  for (let i = 0; i < 2 && compareProcesses(ps, snap).length > 0; i++) { ps = await guestPs(vm); snap = await paused(vm, () => live.scan()); }
  t.same(compareProcesses(ps, snap), [], `live task list equals ps (${ps.length})`);
  t.same(snap.modules.modules.map((m) => m.name).sort(), mods);
  t.same(foreignSyscalls(snap), []);
  const all = new Map([...snap.tasks.tasks, ...snap.tasks.threads].map((x) => [x.address, x]));
  t.same(snap.pidIdr.entries.filter((e) => all.get(e.task)?.pid !== e.pid), [], 'IDR agrees with the task list');

  const dump = join(dir, 'guest.ram');
  let offline: Introspector | undefined;
  let d: KernelSnapshot | undefined;
  let psDump = ps;
  for (let i = 0; i < 3 && (!d || compareProcesses(psDump, d).length > 0); i++) {
    offline?.close();
    psDump = await guestPs(vm);
    await dumpRam(vm, dump);
    offline = await Introspector.attach(dump);
    d = offline.scan();
  }
  if (!offline || !d) throw new Error('no dump');
  const dumped = offline;
  t.teardown(() => dumped.close());
  t.equal(offline.kernel.identity.pagingLevels, 4);
  t.same(compareProcesses(psDump, d), [], 'dump task list equals ps');
  t.same(d.modules.modules.map((m) => m.name).sort(), mods);
  t.same(foreignSyscalls(d), []);
  t.equal(d.integrity.textHash, snap.integrity.textHash, 'same kernel text hash live and from the dump');

  // Incremental image hashes: every page at the first scan, then a rotating share per scan, so a
  // changed byte anywhere in text is seen within the coverage interval (here 10 scans' worth).
  const at = (ms: number) => offline.scan({ imageCoverageMs: 1000, nowMs: ms });
  const first = at(0).integrity;
  t.match(first.textHash, /^pages4k:[0-9a-f]{64}$/);
  t.equal(at(100).integrity.textHash, first.textHash, 'unchanged image, unchanged hash');
  const text = offline.kernel.profile.symbols.address('_stext') as bigint;
  const pa = offline.context.space.translate(text + 0x123457n);
  if (pa === null) throw new Error('text not mapped');
  const fd = openSync(dump, 'r+');
  t.teardown(() => closeSync(fd));
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, Number(pa));
  writeSync(fd, Buffer.from([b[0] as number ^ 0xff]), 0, 1, Number(pa));
  const seen: number[] = [];
  for (let ms = 200; ms <= 1300; ms += 100) if (at(ms).integrity.textHash !== first.textHash) seen.push(ms);
  t.ok(seen.length > 0 && (seen[0] as number) <= 1200, `the changed page is rehashed within the coverage interval (first seen at ${seen[0]} ms)`);
  t.ok(seen.every((ms, i) => i === 0 || ms === (seen[i - 1] as number) + 100), 'and stays changed');
  t.equal(offline.scan({ imageCoverageMs: 1000, nowMs: 1400, fullImage: true }).integrity.textHash, at(1500).integrity.textHash, 'a full pass agrees with the rotation');
  writeSync(fd, b, 0, 1, Number(pa));
  t.equal(offline.scan({ imageCoverageMs: 1000, nowMs: 1600, fullImage: true }).integrity.textHash, first.textHash, 'restored: the first hash again');
});

// The introspection engine on a real lab guest with KASLR on and 5-level paging
// (TCG -cpu max): zero-config discovery, symbols, BTF, every view against the
// guest's own answers, the three attack modules, a raw dump, and system_reset.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLabGuest } from '../../lab/lab-guest.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { Introspector } from '../../src/views/scan.js';
import { Btf } from '../../src/profile/btf.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import {
  compareProcesses, dumpRam, foreignSyscalls, guestBtf, guestKallsyms, guestModules, guestPs, kallsymsLines, paused,
} from './ground-truth.js';

// Booting under TCG and the reset take most of the time: allow well beyond tap's 30 s default.
t.setTimeout(600_000);
const images = loadLabImages();
const dir = mkdtempSync(join(tmpdir(), 'iv-introspect-'));
const vm = await startLabGuest('iv-introspect-k', { kaslr: true });
let ins: Introspector | undefined;
t.teardown(async () => {
  ins?.close();
  await vm.stop();
  rmSync(dir, { recursive: true, force: true });
});

const t0 = performance.now();
ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
const attachMs = performance.now() - t0;
const live = ins;
t.comment(`cold attach (kallsyms ${live.kernel.timings.kallsymsMs.toFixed(0)} ms, BTF ${live.kernel.timings.btfMs.toFixed(0)} ms): ${attachMs.toFixed(0)} ms`);

const scan = (): Promise<KernelSnapshot> => paused(vm, () => live.scan());

t.test('discovery finds the running kernel with nothing but its RAM and CR3', async (t) => {
  const k = live.kernel.identity;
  t.equal(k.release, images.kernelAbi);
  t.equal(k.pagingLevels, 5, 'TCG -cpu max runs the guest with LA57');
  t.not(k.kaslrSlide, 0n, 'KASLR moved the kernel');
  t.ok(k.banner.startsWith(`Linux version ${images.kernelAbi} `), `the banner names the lab kernel ${images.kernelAbi}`);
  t.equal(live.kernel.linear.length, 2, 'image and direct map verified linear');
});

t.test('symbols equal the guest\'s /proc/kallsyms', async (t) => {
  const truth = await guestKallsyms(vm);
  const mine = kallsymsLines(live.kernel.profile.symbols);
  t.equal(mine.length, truth.length, `${truth.length} kernel symbols`);
  const set = new Set(truth);
  const missing = mine.filter((l) => !set.has(l));
  t.same(missing.slice(0, 10), [], 'every decoded symbol is in /proc/kallsyms');
  t.equal(live.kernel.profile.symbol('_text') - 0xffff_ffff_8100_0000n, live.kernel.identity.kaslrSlide);
});

t.test('BTF in kernel memory is the guest\'s /sys/kernel/btf/vmlinux; offsets resolve by name', async (t) => {
  const file = await guestBtf(vm);
  const p = live.kernel.profile;
  const start = p.symbol('__start_BTF');
  const mem = live.context.space.read(start, Number(p.symbol('__stop_BTF') - start));
  t.ok(mem.equals(file), `in-memory BTF (${mem.length} bytes) is byte-identical to the sysfs file`);
  const fromFile = new Btf(file);
  for (const [s, m] of [['task_struct', 'tasks'], ['task_struct', 'pid'], ['task_struct', 'comm'], ['task_struct', 'mm'],
    ['task_struct', 'real_parent'], ['task_struct', 'se.run_node'], ['mm_struct', 'pgd'], ['module', 'list'], ['rq', 'cfs.tasks_timeline'],
    ['task_struct', 'thread_info.flags'], ['pid', 'numbers']] as const) {
    t.equal(p.offsetof(s, m), fromFile.offsetof(s, m), `${s}.${m}`);
  }
  // An anonymous union member and a bitfield.
  t.equal(p.offsetof('task_struct', '__state'), 24, 'task_struct.__state after thread_info and stack');
  const bf = fromFile.member('task_struct', 'sched_reset_on_fork');
  t.equal(bf.bitSize, 1, 'sched_reset_on_fork is a 1-bit bitfield');
  t.equal(p.sizeof('task_struct'), fromFile.sizeofStruct('task_struct'));
});

t.test('clean guest: processes, modules, pid IDR, run queues, syscall table, integrity', async (t) => {
  // A kernel thread that ends between ps and the scan (ext4lazyinit) is a race; a real difference persists over three tries.
  let ps = await guestPs(vm);
  const mods = await guestModules(vm);
  let snap = await scan();
  for (let i = 0; i < 2 && compareProcesses(ps, snap).length > 0; i++) { ps = await guestPs(vm); snap = await scan(); }
  t.same(compareProcesses(ps, snap), [], `task list equals ps (${ps.length} processes)`);
  t.same(snap.tasks.errors, []);
  t.ok(snap.tasks.tasks.some((x) => x.comm === 'csdtest' && !x.kernelThread && x.mm !== 0n && x.pgd !== 0n), 'csdtest has an mm and page tables');
  t.same(snap.modules.modules.map((m) => m.name).sort(), mods, 'module list equals /proc/modules');
  t.same(snap.modules.kobjects.map((m) => m.name).sort(), mods, 'module kobjects: the same modules');
  const all = new Map([...snap.tasks.tasks, ...snap.tasks.threads].map((x) => [x.address, x]));
  t.same(snap.pidIdr.errors, []);
  t.same(snap.pidIdr.entries.filter((e) => all.get(e.task)?.pid !== e.pid), [], 'every IDR pid maps to the task with that pid');
  t.equal(snap.pidIdr.entries.length, all.size, 'IDR and task list hold the same number of tasks');
  t.equal(snap.runQueues.cpus.length, 1);
  t.same(snap.runQueues.errors, []);
  const sys = snap.syscallTables.find((x) => x.table === 'sys_call_table');
  t.equal(sys?.entries.length, 451);
  t.same(foreignSyscalls(snap), [], 'every sys_call_table entry holds its own handler');
  t.ok(snap.integrity.textHash && snap.integrity.rodataHash, 'text and rodata hashed');
  t.same(snap.integrity.dispatchers.map((d) => d.name), ['x64_sys_call', 'ia32_sys_call', 'x32_sys_call']);
  t.equal(snap.integrity.idt.length, 256);
  const stext = live.kernel.profile.symbol('_stext');
  t.ok(snap.integrity.idt.slice(0, 32).every((a) => a >= stext), 'exception vectors point into kernel text');
  t.same(snap.integrity.errors, []);
  const again = await scan();
  t.equal(again.integrity.textHash, snap.integrity.textHash, 'kernel text is stable across scans');
});

t.test('syscall hook module: the changed entries show, and rmmod restores them', async (t) => {
  const agent = await vm.agent();
  const before = await scan();
  await agent.shell(`insmod ${images.attackModules.syscallHook} nrs=39,62`);
  const hooked = await scan();
  const sys = hooked.syscallTables.find((x) => x.table === 'sys_call_table');
  const changed = sys?.entries.filter((e) => e.owner.kind !== 'kernel' || e.owner.symbol !== e.expected) ?? [];
  t.same(changed.map((e) => e.nr), [39, 62], 'exactly getpid (39) and kill (62) changed');
  for (const e of changed) t.match(e.owner, { kind: 'module', module: 'iv_syscall_hook' }, `entry ${e.nr} points into iv_syscall_hook`);
  t.same(hooked.integrity.dispatchers, before.integrity.dispatchers, 'the dispatcher bodies are untouched');
  await agent.shell('rmmod iv_syscall_hook');
  t.same(foreignSyscalls(await scan()), [], 'rmmod put the handlers back');
});

t.test('DKOM module: the unlinked task leaves the task list but stays in the pid IDR and a run queue', async (t) => {
  const agent = await vm.agent();
  const victim = Number((await agent.shell('sh -c "while :; do :; done" </dev/null >/dev/null 2>&1 & echo $!')).trim());
  t.ok(victim > 1, `busy victim pid ${victim}`);
  t.teardown(() => agent.shell(`kill ${victim}`).catch(() => undefined));
  const before = await scan();
  t.ok(before.tasks.tasks.some((x) => x.pid === victim), 'victim on the task list before');
  await agent.shell(`insmod ${images.attackModules.dkomHide} pid=${victim}`);
  const after = await scan();
  t.notOk(after.tasks.tasks.some((x) => x.pid === victim), 'victim missing from the task list');
  const idr = after.pidIdr.entries.find((e) => e.pid === victim);
  t.ok(idr, 'victim still in the pid IDR');
  const onRq = after.runQueues.cpus.some((c) => c.current === idr?.task || c.queued.includes(idr?.task ?? 0n));
  t.ok(onRq, 'victim still on a run queue (current or queued)');
  const ps = await guestPs(vm);
  // procfs enumerates pids through the IDR, not the task list: the guest's ps still lists it.
  t.ok(ps.some((r) => r.pid === victim), 'the guest\'s own ps (procfs walks the pid IDR) still shows it');
  await agent.shell('rmmod iv_dkom_hide');
  const relinked = await scan();
  t.ok(relinked.tasks.tasks.some((x) => x.pid === victim), 'rmmod relinks it');
});

t.test('self-hiding module: gone from the module list, still a module kobject', async (t) => {
  const agent = await vm.agent();
  await agent.shell(`insmod ${images.attackModules.hideModule}`);
  const snap = await scan();
  t.notOk(snap.modules.modules.some((m) => m.name === 'iv_hide_module'), 'not on the modules list');
  const kobj = snap.modules.kobjects.find((m) => m.name === 'iv_hide_module');
  t.ok(kobj, 'still under module_kset');
  t.ok(kobj && kobj.coreSize > 0 && kobj.coreBase >= 0xffff_ffff_a000_0000n, 'with its struct module and core region');
  t.notOk((await guestModules(vm)).includes('iv_hide_module'), 'lsmod does not show it');
  await agent.shell('echo 0 > /sys/module/iv_hide_module/parameters/hidden && rmmod iv_hide_module');
  t.notOk((await scan()).modules.kobjects.some((m) => m.name === 'iv_hide_module'), 'unloaded');
});

t.test('a raw dump of the guest gives the same views with no CR3', async (t) => {
  const dump = join(dir, 'guest.ram');
  const ps = await guestPs(vm);
  await dumpRam(vm, dump);
  const offline = await Introspector.attach(dump);
  t.teardown(() => offline.close());
  t.equal(offline.kernel.identity.kaslrSlide, live.kernel.identity.kaslrSlide, 'same slide');
  t.equal(offline.kernel.identity.pagingLevels, 5, 'LA57 found from __pgtable_l5_enabled');
  t.same([offline.kernel.lease?.sharedSymbols, offline.kernel.lease?.sharedBtf], [true, true], 'the same kernel build: decoded names and BTF shared with the live view');
  t.equal(offline.kernel.profile.symbols.names, live.kernel.profile.symbols.names);
  const snap = offline.scan();
  t.same(compareProcesses(ps, snap), [], 'dump task list equals ps');
  t.same(foreignSyscalls(snap), []);
  t.same(snap.modules.modules.map((m) => m.name).sort(), await guestModules(vm));
});

t.test('after system_reset the CR3 walk picks the new kernel, not the old image left in RAM', async (t) => {
  const oldSlide = live.kernel.identity.kaslrSlide;
  await vm.reset();
  const t1 = performance.now();
  const fresh = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
  t.teardown(() => fresh.close());
  t.comment(`re-attach after reset: ${(performance.now() - t1).toFixed(0)} ms; candidates: ${fresh.kernel.candidates.filter((c) => c.startsWith('image')).join(' | ')}`);
  const truth = await guestKallsyms(vm);
  const set = new Set(truth);
  const mine = kallsymsLines(fresh.kernel.profile.symbols);
  t.same(mine.filter((l) => !set.has(l)).slice(0, 5), [], 'symbols are the new kernel\'s');
  // Same build, new slide: the names come from the first attach, the addresses are this boot's (checked above).
  t.equal(fresh.kernel.lease?.sharedSymbols, true, 'the build\'s names were not decoded again');
  t.comment(`slide before ${oldSlide.toString(16)}, after ${fresh.kernel.identity.kaslrSlide.toString(16)}`);
  const ps = await guestPs(vm);
  const snap = await paused(vm, () => fresh.scan({ hashImage: false }));
  t.same(compareProcesses(ps, snap), [], 'task list equals the new kernel\'s ps');
  // A dump after a reset has no CR3: the latest wall clock decides.
  const dump = join(dir, 'after-reset.ram');
  await dumpRam(vm, dump);
  const offline = await Introspector.attach(dump);
  t.teardown(() => offline.close());
  t.equal(offline.kernel.identity.kaslrSlide, fresh.kernel.identity.kaslrSlide, 'dump after reset: the running kernel wins');
});

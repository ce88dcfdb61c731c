// The kernel matrix: one boot per lab kernel line (Debian 11's 5.10, Debian 12's 6.1,
// bookworm-backports' 6.12), KASLR on, and a battery of checks on each: kallsyms against
// /proc/kallsyms, processes against ps, modules and kobjects against /proc/modules and
// /sys/module, every slot of every syscall table, pid IDR and run queues, each lab attack
// through the detectors with no false alarm, a clean guest over many scans, and a dump.
// Each line has its own test file (kernel-matrix-<line>.test.ts) so tap runs two at a time.
import type { Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLabGuest } from '../../lab/lab-guest.js';
import { loadLabImages, type LabKernelLine } from '../../lab/lab-images.js';
import { Introspector } from '../../src/views/scan.js';
import { analyzeScan } from '../../src/detectors/index.js';
import type { KernelBaseline } from '../../src/detectors/baseline.js';
import type { GuestReport, Observation } from '../../src/detectors/types.js';
import type { KernelSnapshot } from '../../src/views/types.js';
import type { QemuVm } from '../../src/vm/qemu-vm.js';
import { TECHNIQUES } from './techniques/index.js';
import type { TechniqueContext } from './techniques/context.js';
import { compatSlotMismatches, generatedHeaders } from './syscall-numbering.js';
import { mapSwitch } from '../../src/views/dispatch.js';
import { ChildSwitchDecoder } from '../../src/supervisor/switch-decoder.js';
import { compareProcesses, dumpRam, guestKallsyms, guestModules, guestPs, kallsymsLines, paused } from './ground-truth.js';

const CLEAN_SCANS = 200;

/** Slots (of every table) that do not hold their own kernel handler. */
function foreignSlots(snap: KernelSnapshot): string[] {
  return snap.syscallTables.flatMap((tb) => tb.entries
    .filter((e) => e.owner.kind !== 'kernel' || (e.expected !== null && e.owner.symbol !== e.expected))
    .map((e) => `${tb.table}[${e.nr}]: ${JSON.stringify(e.owner)} expected ${String(e.expected)}`));
}

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'introvisor.js');

/** `introvisor check --json` on a dump: its findings as observations (exit 0 clean, 3 findings; anything else fails). */
function checkCli(dump: string, baselineFile: string | null): Observation[] {
  const r = spawnSync(process.execPath, [CLI, 'check', '--json', ...(baselineFile ? ['--baseline', baselineFile] : []), dump], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0 && r.status !== 3) throw new Error(`introvisor check ${dump}: exit ${String(r.status)}: ${r.stderr}${r.stdout.slice(0, 4000)}`);
  const out = JSON.parse(r.stdout) as { findings: { kind: Observation['kind']; summary: string; target: string | null; evidence: Observation['evidence'] }[] };
  if ((out.findings.length > 0) !== (r.status === 3)) throw new Error(`introvisor check ${dump}: exit ${String(r.status)} with ${out.findings.length} findings`);
  return out.findings.map((f) => ({ kind: f.kind, key: f.summary, summary: f.summary, target: f.target, evidence: f.evidence }));
}

/** A hidden-process observation still stands with the guest's own list left out of both sides. */
function memoryViewsDisagree(evidence: Readonly<Record<string, unknown>>): boolean {
  const memory = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x !== 'guest-ps') : []);
  return memory(evidence.inViews).length > 0 && memory(evidence.missingFrom).length > 0;
}

async function report(vm: QemuVm): Promise<GuestReport> {
  const ps = await guestPs(vm);
  return { takenAtMs: Date.now(), agent: 'ok', processes: ps.map((r) => ({ ...r, state: 'S' })) };
}

/**
 * Observations that persist over `n` consecutive scans (each with a fresh ps first): what the
 * supervisor's finding tracker would confirm. Races between ps and a scan do not persist.
 */
async function persistent(vm: QemuVm, ins: Introspector, baseline: KernelBaseline | null, n = 3): Promise<Observation[]> {
  let keep = new Map<string, Observation>();
  for (let i = 0; i < n; i++) {
    const rep = await report(vm);
    const snap = await paused(vm, () => ins.scan({ hashImage: false }));
    const a = analyzeScan({ nowMs: Date.now(), snapshot: snap, snapshotError: null, report: rep, critical: [], baseline });
    const now: Map<string, Observation> = new Map(a.observations.map((o) => [o.key, o]));
    keep = i === 0 ? now : new Map([...keep].filter((e) => now.has(e[0])));
  }
  return [...keep.values()];
}

export async function kernelMatrix(t: Test, line: LabKernelLine): Promise<void> {
  t.setTimeout(900_000);
  await t.test(`kernel ${line}`, async (t) => {
    const images = loadLabImages(line);
    const dir = mkdtempSync(join(tmpdir(), `iv-matrix-${line}-`));
    const vm = await startLabGuest(`iv-matrix-${line.replace('.', '-')}`, { kaslr: true, images });
    let ins: Introspector | undefined;
    t.teardown(async () => {
      ins?.close();
      await vm.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const t0 = performance.now();
    ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
    const live = ins;
    t.comment(`${images.kernelAbi}: cold attach ${(performance.now() - t0).toFixed(0)} ms`);
    t.equal(live.kernel.identity.release, images.kernelAbi, `running kernel is ${images.kernelAbi}`);
    t.not(live.kernel.identity.kaslrSlide, 0n, 'KASLR moved the kernel');
    const scan = (): Promise<KernelSnapshot> => paused(vm, () => live.scan());

    const truth = await guestKallsyms(vm);
    const mine = kallsymsLines(live.kernel.profile.symbols);
    t.equal(mine.length, truth.length, `${truth.length} kernel symbols`);
    const truthSet = new Set(truth);
    t.same(mine.filter((l) => !truthSet.has(l)).slice(0, 5), [], 'every decoded symbol is in /proc/kallsyms');

    // ps and a scan are a moment apart: a kernel thread that ends in between (ext4lazyinit) is a
    // race, not a difference; a real one persists over three tries.
    let ps = await guestPs(vm);
    let snap = await scan();
    for (let i = 0; i < 2 && compareProcesses(ps, snap).length > 0; i++) { ps = await guestPs(vm); snap = await scan(); }
    t.same(compareProcesses(ps, snap), [], `task list equals ps (${ps.length} processes)`);
    const mods = await guestModules(vm);
    const sysModules = (await (await vm.agent()).shell('for m in /sys/module/*; do [ -e $m/initstate ] && basename $m; done; true'))
      .trim().split('\n').filter(Boolean).sort();
    t.same(snap.tasks.errors, [], 'task list without errors');
    t.ok(snap.tasks.tasks.some((x) => x.comm === 'csdtest'), 'csdtest found');
    t.same(snap.modules.modules.map((m) => m.name).sort(), mods, 'module list equals /proc/modules');
    t.same(snap.modules.kobjects.map((m) => m.name).sort(), sysModules, 'module kobjects equal /sys/module\'s loaded modules');
    t.same(snap.modules.errors, []);
    t.same(snap.pidIdr.errors, [], 'pid IDR without errors');
    const all = new Map([...snap.tasks.tasks, ...snap.tasks.threads].map((x) => [x.address, x]));
    t.same(snap.pidIdr.entries.filter((e) => all.get(e.task)?.pid !== e.pid), [], 'every IDR pid maps to the task with that pid');
    t.same(snap.runQueues.errors, [], 'run queues without errors');
    t.ok(snap.runQueues.cpus.every((c) => c.queued.every((a) => all.has(a))), 'every queued task is a listed task');
    t.ok(snap.syscallTables.length > 0, `tables: ${snap.syscallTables.map((x) => `${x.table} ${x.entries.length}`).join(', ')}`);
    for (const tb of snap.syscallTables) t.same(tb.errors, [], `${tb.table} read without errors`);
    t.same(foreignSlots(snap), [], 'every slot of every table holds its own handler');
    // The dispatch switches (6.9+ and backports): decoded call by call, each slot reaching its handler.
    const switches = ['x64_sys_call', 'ia32_sys_call', 'x32_sys_call'].filter((n) => live.kernel.profile.symbols.has(n));
    t.same((snap.dispatch ?? []).map((d) => d.name), switches, `dispatch switches: ${switches.join(', ') || 'none (dispatch through the table)'}`);
    for (const d of snap.dispatch ?? []) {
      t.same(d.errors, [], `${d.name}: decoded without errors`);
      t.ok(d.slots.length > 0, `${d.name}: ${d.slots.length} slots`);
      t.same(d.slots.filter((e) => e.owner.kind !== 'kernel' || (e.expected !== null && e.owner.symbol !== e.expected)).map((e) => e.nr), [],
        `${d.name}: every slot reaches its own handler`);
    }
    const x64 = snap.dispatch?.find((d) => d.name === 'x64_sys_call');
    const table = snap.syscallTables.find((x) => x.table === 'sys_call_table');
    if (x64 && table) t.same(x64.slots.filter((e) => table.entries[e.nr]?.target !== e.target).map((e) => e.nr), [], 'x64_sys_call and sys_call_table agree slot by slot');
    // The live supervisor decodes the switches in a child process: the same map as in-process.
    if (switches.length > 0) {
      const child = new ChildSwitchDecoder();
      try {
        for (const name of switches) {
          const at = live.kernel.profile.symbols.address(name) ?? 0n;
          const body = live.context.space.read(at, live.kernel.profile.symbols.extent(name) ?? 0);
          let m = child.decode(name, body, at);
          for (let i = 0; i < 600 && (m === null || child.busy); i++) { await new Promise((r) => setTimeout(r, 200)); m = child.decode(name, body, at); }
          const key = (x: { ranges: readonly { lo: number; hi: number; target: bigint }[] } | null): string[] => (x?.ranges ?? []).map((r) => `${r.lo}-${r.hi}:${r.target.toString(16)}`).sort();
          t.same(key(m), key(mapSwitch(body, at)), `${name}: the child process decodes it as in-process (${m?.ranges.length ?? 0} ranges)`);
          t.same(m?.errors, [], `${name}: the child reports no error`);
        }
      } finally { child.close(); }
    }
    // ia32/x32 (tables on 5.10, switches on 6.1+): each slot holds, and expects, the handler the
    // kernel's own build numbered there (its generated syscalls_*.h).
    const hdrs = generatedHeaders(images.kernelAbi);
    t.ok(hdrs, `generated syscall headers of ${images.kernelAbi}: ${String(hdrs)}`);
    const compat = [...snap.syscallTables.filter((x) => x.table !== 'sys_call_table').map((x) => `${x.table} ${x.entries.length}`),
      ...(snap.dispatch ?? []).filter((d) => d.name !== 'x64_sys_call').map((d) => `${d.name} ${d.slots.length}`)];
    t.ok(compat.length >= 2, `ia32 and x32 slots: ${compat.join(', ')}`);
    if (hdrs) t.same(compatSlotMismatches(snap, hdrs, live.kernel.profile.symbols).slice(0, 10), [], 'every ia32/x32 slot holds and expects its own named handler');
    t.same(snap.integrity.errors, [], 'integrity views without errors');

    // A clean guest: the first clean scan records the baseline; then no observation persists.
    const first = analyzeScan({ nowMs: Date.now(), snapshot: snap, snapshotError: null, report: await report(vm), critical: [], baseline: null });
    t.ok(first.baselineToRecord, 'the first clean scan records a baseline');
    const baseline = first.baselineToRecord;
    let rep = await report(vm);
    const streak = new Map<string, number>();
    const confirmed = new Set<string>();
    for (let i = 0; i < CLEAN_SCANS; i++) {
      if (i % 25 === 0) rep = await report(vm);
      const s = await paused(vm, () => live.scan({ hashImage: i % 50 === 0 }));
      const a = analyzeScan({ nowMs: Date.now(), snapshot: s, snapshotError: null, report: rep, critical: [], baseline });
      const keys = new Set(a.observations.filter((o) => o.kind !== 'hidden-process').map((o) => o.summary));
      // guest-ps can be up to 25 scans old (a process that exited since is in it, one started since is not):
      // only the kernel's own views count for processes here, as in the supervisor with a stale report.
      for (const o of a.observations) if (o.kind === 'hidden-process' && memoryViewsDisagree(o.evidence)) keys.add(o.summary);
      for (const k of [...streak.keys()]) if (!keys.has(k)) streak.delete(k);
      for (const k of keys) { const n = (streak.get(k) ?? 0) + 1; streak.set(k, n); if (n >= 3) confirmed.add(k); }
      if (a.undetermined.length > 0) confirmed.add(`undetermined: ${a.undetermined.join(',')}`);
    }
    t.same([...confirmed], [], `${CLEAN_SCANS} clean scans: no finding`);

    const agent = await vm.agent();
    // Attack 1: sys_call_table entries rewritten.
    await agent.shell(`insmod ${images.attackModules.syscallHook} nrs=39,62`);
    const hooked = await persistent(vm, live, baseline);
    t.same(hooked.map((o) => `${o.kind} ${String(o.evidence.table)}[${String(o.evidence.nr)}] ${String(o.evidence.module)}`).sort(),
      ['syscall-table-changed sys_call_table[39] iv_syscall_hook', 'syscall-table-changed sys_call_table[62] iv_syscall_hook'],
      'syscall hook: exactly slots 39 and 62, owned by the module');
    const hookDump = join(dir, 'hooked.ram');
    await dumpRam(vm, hookDump);
    t.same(checkCli(hookDump, null).map((o) => `${o.kind} ${String(o.evidence.table)}[${String(o.evidence.nr)}] ${String(o.evidence.module)}`).sort(),
      ['syscall-table-changed sys_call_table[39] iv_syscall_hook', 'syscall-table-changed sys_call_table[62] iv_syscall_hook'],
      'check on a dump (exit 3): the same slots and module');
    rmSync(hookDump, { force: true });
    await agent.shell('rmmod iv_syscall_hook');
    t.same(await persistent(vm, live, baseline), [], 'rmmod: nothing left');

    // Attack 2: a task unlinked from the task list.
    const victim = Number((await agent.shell('sh -c "while :; do :; done" </dev/null >/dev/null 2>&1 & echo $!')).trim());
    await agent.shell(`insmod ${images.attackModules.dkomHide} pid=${victim}`);
    const hidden = await persistent(vm, live, baseline);
    t.same(hidden.map((o) => `${o.kind} ${String(o.evidence.pid)}`), [`hidden-process ${victim}`], 'DKOM: exactly the victim is hidden');
    await agent.shell('rmmod iv_dkom_hide');
    await agent.shell(`kill ${victim}`);
    t.same(await persistent(vm, live, baseline), [], 'rmmod relinks it: nothing left');

    // Attack 3: a module unlinked from the module list.
    await agent.shell(`insmod ${images.attackModules.hideModule}`);
    const hiddenMod = await persistent(vm, live, baseline);
    t.same(hiddenMod.map((o) => o.kind), ['hidden-module'], 'self-hiding module: one hidden-module observation');
    t.match(hiddenMod[0]?.summary ?? '', /iv_hide_module/, 'naming the module');
    await agent.shell('echo 0 > /sys/module/iv_hide_module/parameters/hidden && rmmod iv_hide_module');
    t.same(await persistent(vm, live, baseline), [], 'unloaded: nothing left');

    // Attack 4: a call target rewritten in x64_sys_call (kernels that dispatch through it).
    if (x64 && images.attackModules.dispatchHook) {
      await agent.shell(`insmod ${images.attackModules.dispatchHook} nr=39 handler=__x64_sys_getpid`);
      const patched = await persistent(vm, live, baseline);
      t.same(patched.filter((o) => o.kind !== 'kernel-integrity-changed').map((o) => `${o.kind} ${String(o.evidence.dispatcher)}[${String(o.evidence.nr)}] ${String(o.evidence.module)}`),
        ['syscall-table-changed x64_sys_call[39] iv_dispatch_hook'], 'dispatch hook: exactly slot 39, its new target in the module');
      t.same(patched.filter((o) => o.kind === 'kernel-integrity-changed').map((o) => o.evidence.what), ['x64_sys_call body'], 'and the dispatcher body changed');
      await agent.shell('rmmod iv_dispatch_hook');
      t.same(await persistent(vm, live, baseline), [], 'rmmod restores the call: nothing left');
    } else {
      t.comment(`no dispatch switch on ${images.kernelAbi}: dispatch goes through sys_call_table, attack 4 does not apply`);
    }

    // Today's techniques, one battery each (test/introspection/techniques/), judged live and by
    // `introvisor check --baseline` on dumps.
    const baselineFile = join(dir, 'baseline.json');
    writeFileSync(baselineFile, JSON.stringify(baseline));
    let dumps = 0;
    const ctx: TechniqueContext = {
      line, images, vm, live, baseline: baseline ?? null, dir,
      shell: (command) => agent.shell(command),
      persistent: (n) => persistent(vm, live, baseline ?? null, n),
      checkDump: async () => {
        const file = join(dir, `technique-${++dumps}.ram`);
        await dumpRam(vm, file);
        try {
          return checkCli(file, baselineFile);
        } finally {
          rmSync(file, { force: true });
        }
      },
    };
    for (const b of TECHNIQUES) {
      if (b.lines && !b.lines.includes(line)) continue;
      await t.test(`technique: ${b.name}`, (t) => b.run(t, ctx));
    }

    // The same from a raw dump, with no CR3.
    // ps and the dump are a moment apart: a process that ends in between is a race; a real difference persists over three tries.
    const dump = join(dir, 'guest.ram');
    let psNow = await guestPs(vm);
    await dumpRam(vm, dump);
    let offline = await Introspector.attach(dump);
    for (let i = 0; i < 2 && compareProcesses(psNow, offline.scan()).length > 0; i++) {
      offline.close();
      psNow = await guestPs(vm);
      await dumpRam(vm, dump);
      offline = await Introspector.attach(dump);
    }
    const dumped = offline;
    t.teardown(() => dumped.close());
    t.equal(offline.kernel.identity.kaslrSlide, live.kernel.identity.kaslrSlide, 'dump: same slide');
    t.same(kallsymsLines(offline.kernel.profile.symbols).filter((l) => !truthSet.has(l)).slice(0, 5), [], 'dump: kallsyms equal /proc/kallsyms');
    const d = offline.scan();
    t.same(compareProcesses(psNow, d), [], 'dump: task list equals ps');
    t.same(d.modules.modules.map((m) => m.name).sort(), await guestModules(vm), 'dump: modules equal /proc/modules');
    t.same(foreignSlots(d), [], 'dump: every syscall slot holds its handler');
    t.same([...d.pidIdr.errors, ...d.runQueues.errors, ...d.tasks.errors], [], 'dump: views without errors');

    // What a person reads: `introvisor inspect <dump>`.
    const text = execFileSync(process.execPath, [CLI, 'inspect', '--no-hash', dump], { encoding: 'utf8', maxBuffer: 16 << 20 });
    t.notMatch(text, /FAILED/, 'inspect: no view failed');
    t.match(text, /in the pid IDR, not on the task list: none\n/, 'inspect: pid IDR cross view, one way');
    t.match(text, /on the task list, not in the pid IDR: none\n/, 'inspect: and the other');
    const csd = text.split('\n').find((l) => / csdtest /.test(l)) ?? '';
    t.match(csd, /^ +\d+ +\d+ +\d+ +\d+ +[SRDI]  csdtest /, `inspect: ps-style state letter (${csd.trim().slice(0, 60)})`);
    t.match(text, new RegExp(`sys_call_table at 0x[0-9a-f]+: ${String(d.syscallTables[0]?.entries.length)} entries, 0 not holding`), 'inspect: every slot holds its handler');

    // `introvisor check` on the clean dump: with the live baseline, and with one saved from the dump itself.
    t.same(checkCli(dump, baselineFile).map((o) => o.summary), [], 'check --baseline (the live one): the clean dump has no finding');
    t.same(checkCli(dump, null).map((o) => o.summary), [], 'check without a baseline: none either');
    const saved = join(dir, 'saved-baseline.json');
    const save = spawnSync(process.execPath, [CLI, 'baseline', 'save', dump, saved], { encoding: 'utf8' });
    t.equal(save.status, 0, `baseline save: ${save.stdout.trim()}${save.stderr.trim()}`);
    t.same(checkCli(dump, saved).map((o) => o.summary), [], 'check --baseline (saved from the dump): no finding');
    const again = spawnSync(process.execPath, [CLI, 'baseline', 'save', dump, saved], { encoding: 'utf8' });
    t.equal(again.status, 2, 'baseline save does not overwrite a file without --force');
    const other = join(dir, 'other-kernel.json');
    writeFileSync(other, JSON.stringify({ ...baseline, kernelKey: '4.19.0-0-amd64 some other build' }));
    const mismatch = spawnSync(process.execPath, [CLI, 'check', '--baseline', other, dump], { encoding: 'utf8' });
    t.equal(mismatch.status, 1, 'check with a baseline of another kernel: an error');
    t.match(mismatch.stderr, /is of another kernel \("4\.19\.0-0-amd64 some other build"\), not of this one/, 'naming both kernels');
    writeFileSync(other, '{"version": 1, "kernelKey": 7}');
    const malformed = spawnSync(process.execPath, [CLI, 'check', '--baseline', other, dump], { encoding: 'utf8' });
    t.equal(malformed.status, 1, 'a malformed baseline file: an error');
    t.match(malformed.stderr, /--baseline .*other-kernel\.json: not a kernel baseline: .*kernelKey/, 'naming the file and the field');
  });
}

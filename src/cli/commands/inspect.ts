// `introvisor inspect <guest | dump-file>`: rebuilds the guest kernel's views
// from its RAM alone and prints them (like vmi-process-list / vol linux.pslist).
import { existsSync, statSync } from 'node:fs';
import { parseArgs, UsageError } from '../args.js';
import { isGuestName, openTarget, TARGET_FLAGS, TARGET_USAGE } from './target.js';
import type { HandlerOwner, KernelSnapshot, TaskInfo, ViewError } from '../../views/types.js';
import { snapshotErrors } from '../../views/snapshot-errors.js';
import { errorMessage } from '../../util/errors.js';
import { taskStateLetter } from '../../views/task-state.js';
import { instrumentationNote } from '../../detectors/ftrace-hooks.js';

export const usage = `inspect <guest | dump-file> [--json] [--no-hash] [--from-ram] [--socket PATH] ${TARGET_USAGE}   print the kernel views rebuilt from guest memory (a supervised guest: the supervisor's latest scan)`;

const hex = (v: bigint): string => '0x' + v.toString(16);

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { boolean: ['json', 'no-hash', 'from-ram', ...TARGET_FLAGS.boolean], valued: ['socket', ...TARGET_FLAGS.valued] });
  const target = args.positional[0];
  if (target === undefined || args.positional.length > 1) throw new UsageError(`usage: introvisor ${usage}`);
  if (!args.flags.has('from-ram') && isGuestName(target) && !(existsSync(target) && statSync(target).isFile())) {
    // A supervised guest: the supervisor's latest scan, over its control socket (it holds the guest's QMP).
    // Loaded here only: the control client and its validators are start-up time a dump never needs.
    const { socketOf } = await import('./guest.js');
    const fromSupervisor = await supervisorViews(socketOf(args.flags.get('socket')), target, args.flags.has('json'));
    if (fromSupervisor !== null) return fromSupervisor;
  }
  const opened = await openTarget(target, args.flags);
  try {
    const t1 = performance.now();
    const snap = await opened.scan({ hashImage: !args.flags.has('no-hash') });
    const scanMs = performance.now() - t1;
    const ins = opened.ins;
    if (args.flags.has('json')) {
      console.log(JSON.stringify({ source: opened.source, mode: opened.mode, discovery: { ...ins.kernel.timings, candidates: ins.kernel.candidates, profile: ins.kernel.profile.origin }, scanMs, snapshot: snap },
        (_k, v: unknown) => (typeof v === 'bigint' ? hex(v) : v), 2));
    } else {
      printSnapshot(snap, `${opened.source} (${opened.mode}); discovery ${opened.attachMs.toFixed(0)} ms, scan ${scanMs.toFixed(1)} ms; profile: symbols ${ins.kernel.profile.origin.symbols}, layouts ${ins.kernel.profile.origin.layouts}`);
    }
    const errors = snapshotErrors(snap);
    return errors.length > 0 ? 1 : 0;
  } finally {
    opened.close();
  }
}

/** The supervisor's views of a guest it watches; null when no supervisor answers or it does not watch that guest. */
async function supervisorViews(socket: string, guest: string, json: boolean): Promise<number | null> {
  if (!existsSync(socket)) return null;
  const [{ controlRequest }, { printProcesses, printSummary }] = await Promise.all([import('../../control/client.js'), import('./guest.js')]);
  let summary: unknown;
  try {
    summary = await controlRequest(socket, { op: 'view', guest, view: 'summary' }, 5_000);
  } catch (e) {
    console.error(`(the supervisor at ${socket} did not give guest "${guest}": ${errorMessage(e)}; reading its RAM)`);
    return null;
  }
  const views = Object.fromEntries(await Promise.all((['ps', 'modules', 'syscalls', 'findings'] as const).map(async (v) => [v, await controlRequest(socket, { op: 'view', guest, view: v }, 10_000)] as const)));
  if (json) console.log(JSON.stringify({ source: `supervisor ${socket}`, summary, ...views }, null, 2));
  else {
    console.log(`source   the supervisor's latest scan (${socket})`);
    console.log(printSummary(summary as Parameters<typeof printSummary>[0]));
    console.log(printProcesses(views.ps as Parameters<typeof printProcesses>[0]));
  }
  return 0;
}

/** One line per view that failed outright (no entries at all): what a reader needs first. */
function failedViews(s: KernelSnapshot): string[] {
  const first = (errs: readonly ViewError[]): string => errs[0] ? `${errs[0].where}: ${errs[0].message}` : 'no entries';
  const out: string[] = [];
  if (s.tasks.tasks.length === 0) out.push(`task list unreadable: ${first(s.tasks.errors)}`);
  if (s.pidIdr.entries.length === 0) out.push(`pid IDR unreadable: ${first(s.pidIdr.errors)}`);
  if (s.runQueues.cpus.length === 0) out.push(`run queues unreadable: ${first(s.runQueues.errors)}`);
  if (s.modules.errors.length > 0 && s.modules.modules.length === 0 && s.modules.kobjects.length === 0) out.push(`modules unreadable: ${first(s.modules.errors)}`);
  for (const t of s.syscallTables) if (t.entries.length === 0) out.push(`${t.table} unreadable: ${first(t.errors)}`);
  return out;
}

function printSnapshot(s: KernelSnapshot, header: string): void {
  const out: string[] = [];
  out.push(`source   ${header}`);
  out.push(`kernel   ${s.kernel.banner}`);
  out.push(`         release ${s.kernel.release}, KASLR slide ${hex(s.kernel.kaslrSlide)}, ${s.kernel.pagingLevels}-level paging`);
  const failed = failedViews(s);
  for (const f of failed) out.push(`FAILED   ${f}`);
  const row = (t: TaskInfo): string =>
    `${String(t.pid).padStart(7)} ${String(t.tgid).padStart(7)} ${String(t.ppid).padStart(7)} ${String(t.uid).padStart(6)} ${taskStateLetter(t.state).padStart(2)}  ${t.comm.padEnd(16)} ${hex(t.address)}  ${t.kernelThread ? '-' : hex(t.mm)}`;
  out.push('', `processes (${s.tasks.tasks.length}) and threads (${s.tasks.threads.length}) on init_task.tasks`);
  out.push(`${'PID'.padStart(7)} ${'TGID'.padStart(7)} ${'PPID'.padStart(7)} ${'UID'.padStart(6)} ${'S'.padStart(2)}  ${'COMM'.padEnd(16)} ${'TASK'.padEnd(18)}  MM`);
  for (const t of s.tasks.tasks) out.push(row(t));
  for (const t of s.tasks.threads) out.push(row(t));
  const all = [...s.tasks.tasks, ...s.tasks.threads];
  const listed = new Set(all.map((t) => t.address));
  const inIdr = new Set(s.pidIdr.entries.map((e) => e.task));
  // The cross view, both ways, only when both views were read: a failed view proves nothing.
  if (s.tasks.tasks.length > 0 && s.pidIdr.entries.length > 0) {
    const idrOnly = s.pidIdr.entries.filter((e) => !listed.has(e.task));
    const listOnly = all.filter((t) => !inIdr.has(t.address));
    out.push('', `pid IDR: ${s.pidIdr.entries.length} pids with a task`);
    out.push(`  in the pid IDR, not on the task list: ${idrOnly.map((e) => `${e.pid} (${hex(e.task)})`).join(', ') || 'none'}`);
    out.push(`  on the task list, not in the pid IDR: ${listOnly.map((t) => `${t.pid} ${t.comm} (${hex(t.address)})`).join(', ') || 'none'}`);
  } else {
    out.push('', `pid IDR: ${s.pidIdr.entries.length} pids with a task; no cross view (a view failed, see above)`);
  }
  const byAddr = new Map(all.map((t) => [t.address, t]));
  for (const c of s.runQueues.cpus) {
    const name = (a: bigint): string => {
      if (a === c.idle) return 'idle';
      const t = byAddr.get(a);
      if (t) return `${t.comm} (${t.pid})`;
      return s.tasks.tasks.length > 0 ? `${hex(a)} (not on the task list)` : hex(a);
    };
    out.push(`run queue cpu ${c.cpu}: current ${name(c.current)}; queued: ${c.queued.map(name).join(', ') || 'none'}`);
  }
  out.push('', `modules (${s.modules.modules.length} on the list, ${s.modules.kobjects.length} kobjects)`);
  for (const m of s.modules.modules) out.push(`  ${m.name.padEnd(28)} ${hex(m.coreBase)} ${String(m.coreSize).padStart(9)}`);
  const onList = new Set(s.modules.modules.map((m) => m.address));
  for (const m of s.modules.kobjects.filter((k) => !onList.has(k.address))) out.push(`  ${m.name.padEnd(28)} ${hex(m.coreBase)} ${String(m.coreSize).padStart(9)}  NOT ON THE MODULE LIST`);
  for (const m of s.moduleArea?.hiddenModules ?? []) out.push(`  ${m.name.padEnd(28)} ${hex(m.coreBase)} ${String(m.coreSize).padStart(9)}  CARVED: ON NEITHER THE LIST NOR /sys/module (struct module ${hex(m.address)})`);
  if (s.moduleArea) {
    const a = s.moduleArea;
    out.push('', `module area: ${a.regions.length} executable runs, ${a.regions.filter((r) => r.owner === 'unknown').length} owned by nobody`);
    for (const r of a.regions) out.push(`  ${hex(r.start)} ${String(r.size).padStart(9)}  ${r.owner === 'unknown' ? 'OWNED BY NOBODY' : `${r.owner}${r.name ? ` ${r.name}` : ''}`}`);
  }
  const foreign = <E extends { owner: HandlerOwner; expected: string | null }>(es: readonly E[]): E[] =>
    es.filter((e) => e.owner.kind !== 'kernel' || (e.expected !== null && e.owner.symbol !== e.expected));
  const slotLine = (e: { nr: number; target: bigint; owner: HandlerOwner; expected: string | null }): string =>
    `  ${String(e.nr).padStart(4)} ${hex(e.target)} ${e.owner.kind === 'kernel' ? e.owner.symbol : e.owner.kind === 'module' ? `module ${e.owner.module}` : 'no kernel symbol or module'} (expected ${String(e.expected ?? 'a kernel handler')})`;
  for (const t of s.syscallTables) {
    const odd = foreign(t.entries);
    out.push('', `${t.table} at ${hex(t.address)}: ${t.entries.length} entries, ${odd.length} not holding their own handler`);
    for (const e of odd) out.push(slotLine(e));
  }
  for (const d of s.dispatch ?? []) {
    const odd = foreign(d.slots);
    out.push('', `${d.name} at ${hex(d.address)} (dispatch switch): ${d.slots.length} slots, ${odd.length} not reaching their own handler`);
    for (const e of odd) out.push(slotLine(e));
  }
  out.push(...instrumentationLines(s));
  const i = s.integrity;
  out.push('', `kernel text sha256   ${i.textHash ?? '(not hashed)'}`, `kernel rodata sha256 ${i.rodataHash ?? '(not hashed)'}`);
  for (const d of i.dispatchers) out.push(`${d.name.padEnd(20)} ${d.hash}`);
  out.push(`IDT: ${i.idt.length} vectors; LSTAR ${i.lstar === null ? '(not readable through QMP)' : hex(i.lstar)}`);
  const errors = snapshotErrors(s);
  if (errors.length > 0) {
    out.push('', `errors (${errors.length}):`);
    for (const e of errors.slice(0, 50)) out.push(`  ${e.where}: ${e.message}`);
  }
  console.log(out.join('\n'));
}

/** ftrace ops, kprobes and tracepoint probes, each with the owner of its handler; and the one-line "kernel instrumented" note. */
function instrumentationLines(s: KernelSnapshot): string[] {
  const own = (o: HandlerOwner, at: bigint): string => (o.kind === 'kernel' ? o.symbol : o.kind === 'module' ? `module ${o.module} (${hex(at)})` : `${hex(at)} NO KERNEL SYMBOL OR MODULE`);
  const out: string[] = [''];
  out.push(instrumentationNote(s) ?? 'kernel instrumented: no (no ftrace ops, no kprobe)');
  const f = s.ftrace;
  if (f) {
    out.push(`ftrace: ${f.ops.length} ops${f.enabledCount !== undefined ? `, ${f.enabledCount} of ${f.records ?? 0} function entries calling out` : ''}`);
    for (const o of f.ops) {
      const n = o.filterCount ?? o.filter.length;
      out.push(`  ops ${hex(o.address)} handler ${own(o.funcOwner, o.func)} flags 0x${o.flags.toString(16)}${o.trampoline !== 0n ? ` trampoline ${hex(o.trampoline)}+${o.trampolineSize}` : ''}: ` +
        `${o.tracesAll ? 'every function' : `${o.filter.slice(0, 8).join(', ')}${n > 8 ? ` and ${n - 8} more` : ''}` || 'nothing'}`);
    }
    if (f.unclaimedSites && f.unclaimedSites.length > 0) out.push(`  CALLING OUT FOR NO REGISTERED OPS: ${f.unclaimedSites.slice(0, 16).join(', ')}`);
  }
  const k = s.kprobes;
  if (k) {
    out.push(`kprobes: ${k.probes.length}`);
    for (const p of k.probes) {
      const hs = (p.handlers ?? []).map((h) => `${h.role} ${own(h.owner, h.address)}`).join(', ') || 'no handler';
      out.push(`  ${p.symbol ?? hex(p.addr)} (${hex(p.addr)}) flags 0x${p.flags.toString(16)}: ${hs}`);
    }
  }
  const tp = s.tracepoints;
  if (tp) {
    const active = tp.tracepoints.filter((x) => x.probes.length > 0);
    out.push(`tracepoints: ${tp.count}, ${active.length} with probes`);
    for (const x of tp.tracepoints) {
      const ps = x.probes.map((p) => p.via ? (p.via.kind === 'bpf' ? `bpf ${p.via.id === null ? 'NO PROGRAM' : `${p.via.id} ${p.via.name ?? ''}`}` : p.via.kind) : own(p.owner, p.func)).join(', ') || 'no probe';
      const call = x.call !== undefined && x.call !== x.iterator && !x.probes.some((p) => p.func === x.call) ? `, static call to ${own(x.callOwner ?? { kind: 'unknown' }, x.call)}` : '';
      out.push(`  ${x.name ?? hex(x.address)}${x.module ? ` [${x.module}]` : ''}${x.enabled ? '' : ' (key off)'}: ${ps}${call}`);
    }
  }
  return out;
}

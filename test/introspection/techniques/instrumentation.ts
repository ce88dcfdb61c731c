// Legitimate instrumentation raises nothing: with the function tracer on through tracefs (every
// function, then a set_ftrace_filter), a user's kprobe events (one at a function's entry, through
// ftrace; one inside a function: int3, later an optimized jmp), trace events on tracepoints (a
// syscall event, scheduler events, a module's event), and four eBPF tracing programs (a kprobe one,
// two on trace events through perf, a raw tracepoint one), a clean guest gives no finding of any kind over 1,000 scans,
// confirmed as the supervisor confirms (3 consecutive scans). The text
// does change, and the scans say how: ftrace's calls and the kprobes, not hooks. Then all off.
import type { Test } from 'tap';
import { Decoder, DecoderOptions, Instruction } from 'iced-x86';
import { analyzeScan } from '../../../src/detectors/index.js';
import { textInstrumentation } from '../../../src/detectors/text-integrity.js';
import type { GuestReport } from '../../../src/detectors/types.js';
import type { ScanOptions } from '../../../src/views/scan.js';
import { guestPs, paused } from '../ground-truth.js';
import type { TechniqueBattery, TechniqueContext } from './context.js';
import { persistentWith } from './text-patch.js';

const SCANS = 1000;
const T = '/sys/kernel/tracing';
const EVENTS = ['syscalls/sys_enter_kill', 'sched/sched_process_fork', 'sched/sched_process_exec', 'ext4/ext4_da_write_begin'];

/** A probe-able offset inside `fn`: the start of its fourth instruction (past endbr64, the fentry NOP and a push or two). */
function innerOffset(ctx: TechniqueContext, fn: string): number {
  const a = ctx.live.kernel.profile.symbols.require(fn);
  const d = new Decoder(64, ctx.live.context.space.read(a, 64), DecoderOptions.None);
  const ins = new Instruction();
  try {
    d.ip = a;
    for (let i = 0; i < 3; i++) d.decodeOut(ins);
    return Number(ins.nextIP - a);
  } finally {
    ins.free();
    d.free();
  }
}

async function report(ctx: TechniqueContext): Promise<GuestReport> {
  const ps = await guestPs(ctx.vm);
  return { takenAtMs: Date.now(), agent: 'ok', processes: ps.map((r) => ({ ...r, state: 'S' })) };
}

/** Hidden-process observations count only when the kernel's own views disagree (the ps may be up to 50 scans old). */
function memoryViewsDisagree(evidence: Readonly<Record<string, unknown>>): boolean {
  const memory = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x !== 'guest-ps') : []);
  return memory(evidence.inViews).length > 0 && memory(evidence.missingFrom).length > 0;
}

export const instrumentation: TechniqueBattery = {
  name: 'legitimate instrumentation: function tracer, kprobe events, eBPF tracing programs',
  async run(t: Test, ctx: TechniqueContext): Promise<void> {
    await ctx.shell(`[ -e ${T}/current_tracer ] || mount -t tracefs nodev ${T}`);
    t.match(await ctx.shell(`cat ${T}/available_tracers`), /\bfunction\b/, 'the function tracer is available');
    const off = innerOffset(ctx, 'vfs_read');
    // What a supervisor-style scan costs on this guest before any instrumentation (for the comparison below).
    const incremental: ScanOptions = { hashImage: true, imageCoverageMs: 2000, dispatchSwitches: false };
    const cleanMs: number[] = [];
    for (let i = 0; i < 20; i++) await paused(ctx.vm, () => { const t1 = performance.now(); ctx.live.scan(incremental); cleanMs.push(performance.now() - t1); });
    const on = async (filter: string): Promise<void> => {
      await ctx.shell(`echo '${filter}' > ${T}/set_ftrace_filter && echo function > ${T}/current_tracer && echo 1 > ${T}/tracing_on`);
    };
    await ctx.shell([
      `echo 'p:ivtest_entry do_sys_openat2' >> ${T}/kprobe_events`,
      `echo 'p:ivtest_inner vfs_read+${off}' >> ${T}/kprobe_events`,
      `echo 1 > ${T}/events/kprobes/ivtest_entry/enable`,
      `echo 1 > ${T}/events/kprobes/ivtest_inner/enable`,
    ].join(' && '));
    await on('');
    t.match(await ctx.shell(`cat ${T}/current_tracer`), /^function/, 'function tracer on (every function)');
    // Ordinary eBPF tracing: a kprobe program and a tracepoint program that only read and count.
    const loader = ctx.images.bpfLoader;
    if (!loader) throw new Error(`the lab image of ${ctx.line} has no bpfload: run scripts/setup.sh --tests`);
    // Their pids, so only these are stopped afterwards.
    const loaderPids = (await ctx.shell(`${loader} trace do_sys_openat2 </dev/null >/dev/null 2>&1 & echo $!; ${loader} tptrace syscalls/sys_enter_openat </dev/null >/dev/null 2>&1 & echo $!; ` +
      `${loader} tptrace sched/sched_process_exec </dev/null >/dev/null 2>&1 & echo $!; ${loader} rawtp sched_process_fork </dev/null >/dev/null 2>&1 & echo $!; sleep 2`))
      .trim().split(/\s+/).filter((x) => /^\d+$/.test(x));
    t.equal(loaderPids.length, 4, `four loaders started (pids ${loaderPids.join(', ')})`);
    // Trace events: a syscall event (ftrace's syscall probe), two scheduler events, and a module's (ext4's, when the kernel has it as one).
    const events = (await ctx.shell(`for e in ${EVENTS.join(' ')}; do [ -e ${T}/events/$e/enable ] && echo 1 > ${T}/events/$e/enable && echo $e; done; true`)).trim().split(/\s+/).filter(Boolean);
    t.ok(events.length >= 3, `trace events on: ${events.join(', ')}`);

    // The text changed, and the whole-image scan explains it as instrumentation, with no observation.
    const whole = await paused(ctx.vm, () => ctx.live.scan({ hashImage: true }));
    const notes = textInstrumentation(whole, ctx.baseline);
    const traced = notes.map((n) => /^(\d+) fentry sites/.exec(n)).reduce((n, m) => n + (m ? Number(m[1]) : 0), 0);
    t.ok(traced > 1000, `function tracer: ${traced} fentry sites calling ftrace (${notes.filter((n) => /fentry/.test(n)).join('; ').slice(0, 300)})`);
    t.ok(notes.some((n) => new RegExp(`kprobe at vfs_read\\+0x${off.toString(16)}$`).test(n)), `the inner kprobe told apart: ${notes.filter((n) => /kprobe/.test(n)).join('; ')}`);
    t.ok((whole.bpf?.programs ?? []).filter((b) => b.name === 'iv_trace').length >= 3, `the tracing programs are loaded: ${(whole.bpf?.programs ?? []).map((b) => `${b.name} ${String(b.attachTo)}`).join(', ')}`);
    const probes = (whole.tracepoints?.tracepoints ?? []).flatMap((x) => x.probes.map((p) => `${x.name ?? '?'}:${p.via?.kind ?? p.owner.kind}`));
    for (const want of ['sched_process_fork:trace-event', 'sched_process_fork:bpf', 'sched_process_exec:trace-event', 'sched_process_exec:perf', 'sys_enter:kernel']) {
      t.ok(probes.includes(want), `tracepoint probe ${want} (${probes.join(', ')})`);
    }
    const first = analyzeScan({ nowMs: Date.now(), snapshot: whole, snapshotError: null, report: await report(ctx), critical: [], baseline: ctx.baseline });
    t.same(first.observations.map((o) => o.summary), [], 'the instrumented text raises nothing');

    // 1,000 scans as the supervisor takes them (image hashed by rotating share), and every 100th whole.
    let rep = await report(ctx);
    const streak = new Map<string, number>();
    const confirmed = new Set<string>();
    const scanMs: number[] = [];
    const wholeMs: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < SCANS; i++) {
      // Every function traced slows a TCG guest to a crawl (its agent then misses deadlines): the first
      // tenth of the scans, then the filter.
      if (i === SCANS / 10) await on('vfs_* ksys_* do_sys_*');
      if (i % 50 === 0) rep = await report(ctx);
      const opts: ScanOptions = i % 100 === 0 ? { hashImage: true } : incremental;
      const s = await paused(ctx.vm, () => { const t1 = performance.now(); const r = ctx.live.scan(opts); (i % 100 === 0 ? wholeMs : scanMs).push(performance.now() - t1); return r; });
      const a = analyzeScan({ nowMs: Date.now(), snapshot: s, snapshotError: null, report: rep, critical: [], baseline: ctx.baseline });
      const keys = new Set(a.observations.filter((o) => o.kind !== 'hidden-process' || memoryViewsDisagree(o.evidence)).map((o) => `${o.kind}: ${o.summary}`));
      for (const k of [...streak.keys()]) if (!keys.has(k)) streak.delete(k);
      for (const k of keys) { const n = (streak.get(k) ?? 0) + 1; streak.set(k, n); if (n >= 3) confirmed.add(k); }
      if (a.undetermined.length > 0) confirmed.add(`undetermined: ${a.undetermined.join(',')}`);
    }
    const secs = (performance.now() - t0) / 1000;
    t.comment(`${SCANS} scans with the tracer and kprobes on: ${secs.toFixed(1)} s, ${(SCANS / secs).toFixed(1)} scans/s (guest paused per scan)`);
    const med = (xs: number[]): string => ([...xs].sort((a, b) => a - b)[xs.length >> 1] ?? 0).toFixed(2);
    t.comment(`scan (incremental image hash, in-process): median ${med(cleanMs)} ms clean, ${med(scanMs)} ms instrumented; whole-image scans instrumented: median ${med(wholeMs)} ms`);
    t.same([...confirmed].slice(0, 10), [], `${SCANS} scans: no finding of any kind`);
    t.match(await ctx.shell(`cat ${T}/set_ftrace_filter | head -3`), /vfs_|ksys_|do_sys_/, 'and the filter was in effect for the rest');

    await ctx.shell([
      `echo nop > ${T}/current_tracer`, `echo > ${T}/set_ftrace_filter`,
      `echo 0 > ${T}/events/kprobes/ivtest_entry/enable`, `echo 0 > ${T}/events/kprobes/ivtest_inner/enable`,
      `echo > ${T}/kprobe_events`, ...events.map((e) => `echo 0 > ${T}/events/${e}/enable`), `kill ${loaderPids.join(' ')}`, 'sleep 1',
    ].join(' && '));
    const after = await paused(ctx.vm, () => ctx.live.scan({ hashImage: true }));
    t.same(textInstrumentation(after, ctx.baseline), [], 'all off: the text is the clean copy again');
    t.equal(after.integrity.textHash, ctx.baseline?.boot.textHash, 'and hashes as the baseline');
    t.same(await persistentWith(ctx, { hashImage: true }), [], 'nothing persists');
  },
};

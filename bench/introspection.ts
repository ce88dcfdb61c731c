// Introspection figures on a live lab guest (KASLR on, LA57, TCG): cold start
// from nothing to the first full view, the median time of each view and of a
// full check, and how they grow with ~1k and ~10k guest tasks; then cold start and full check
// on each lab kernel line (5.10, 6.1, 6.12; 256 MiB guests).
// Reproduce: npm run bench -- introspection   (IV_BENCH_KERNELS_ONLY=1: only the per-kernel part)
import { startLabGuest } from '../lab/lab-guest.js';
import { LAB_KERNEL_LINES, loadLabImages } from '../lab/lab-images.js';
import { readDispatch } from '../src/views/dispatch.js';
import { Introspector } from '../src/views/scan.js';
import { readTaskList } from '../src/views/task-list.js';
import { readPidIdr } from '../src/views/pid-idr.js';
import { readRunQueues } from '../src/views/run-queues.js';
import { readModuleList } from '../src/views/modules.js';
import { readSyscallTables } from '../src/views/syscall-tables.js';
import { readIntegrity } from '../src/views/integrity.js';
import { readFtrace } from '../src/views/ftrace.js';
import { readKprobes } from '../src/views/kprobes.js';
import { readTracepoints } from '../src/views/tracepoints.js';
import { readModuleArea } from '../src/views/module-area.js';
import { readTextDiff } from '../src/views/text-diff.js';
import { median } from './stats.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChildSwitchDecoder } from '../src/supervisor/switch-decoder.js';

function timeIt(iterations: number, fn: () => unknown): number {
  for (let i = 0; i < Math.min(50, iterations); i++) fn(); // warm the JIT
  const xs: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(xs);
}

function measureViews(ins: Introspector, label: string, iterations: number): void {
  const ctx = ins.context;
  const mods = readModuleList(ctx).modules;
  const modView = readModuleList(ctx);
  const rows: [string, number][] = [
    ['task list', timeIt(iterations, () => { ctx.space.clearCache(); readTaskList(ctx); })],
    ['pid IDR', timeIt(iterations, () => { ctx.space.clearCache(); readPidIdr(ctx); })],
    ['run queues', timeIt(iterations, () => { ctx.space.clearCache(); readRunQueues(ctx); })],
    ['modules', timeIt(iterations, () => { ctx.space.clearCache(); readModuleList(ctx); })],
    ['syscall tables', timeIt(iterations, () => { ctx.space.clearCache(); readSyscallTables(ctx, mods); })],
    ['dispatch switches (decoded once per body)', timeIt(iterations, () => { ctx.space.clearCache(); readDispatch(ctx, mods, readSyscallTables(ctx, mods)); })],
    ['integrity (dispatchers, IDT)', timeIt(iterations, () => { ctx.space.clearCache(); readIntegrity(ctx, { hashImage: false }); })],
    ['ftrace ops', timeIt(iterations, () => { ctx.space.clearCache(); readFtrace(ctx, mods, { records: false }); })],
    ['ftrace ops + records (live call sites)', timeIt(iterations, () => { ctx.space.clearCache(); readFtrace(ctx, mods); })],
    ['kprobes', timeIt(iterations, () => { ctx.space.clearCache(); readKprobes(ctx, mods); })],
    ['tracepoints (every header, probes of the active ones)', timeIt(iterations, () => { ctx.space.clearCache(); readTracepoints(ctx, mods); })],
    ['module area (page walk, owners, carving)', timeIt(iterations, () => { ctx.space.clearCache(); readModuleArea(ctx, modView); })],
    ['FULL CHECK without the module area', timeIt(iterations, () => ins.scan({ hashImage: false, moduleArea: false }))],
    ['text diff vs clean copy (text unchanged)', ((): number => {
      // Steady state of the supervisor's scans: incremental page hashes equal to the copy's, switches compared, kprobe_table read.
      const integ = readIntegrity(ctx, { hashImage: true, imageCoverageMs: 30_000 });
      return timeIt(iterations, () => { ctx.space.clearCache(); readTextDiff(ctx, ins.kernel.identity, mods, integ, { hashImage: true, incremental: true }); });
    })()],
    ['FULL CHECK (all views, no image hash)', timeIt(iterations, () => ins.scan({ hashImage: false }))],
    ['full scan with text+rodata sha256', timeIt(Math.max(5, iterations / 20), () => ins.scan({ hashImage: true }))],
  ];
  const snap = ins.scan({ hashImage: false });
  console.log(`  ${label}: ${snap.tasks.tasks.length} processes + ${snap.tasks.threads.length} threads, ${snap.pidIdr.entries.length} pids`);
  for (const [name, ms] of rows) console.log(`    ${name.padEnd(40)} median ${ms.toFixed(3)} ms`);
}

/** Cold start (median of 3) and full check on one boot of each kernel line. */
async function perKernel(): Promise<void> {
  for (const line of LAB_KERNEL_LINES) {
    const images = loadLabImages(line);
    const vm = await startLabGuest(`bench-kernel-${line.replace('.', '-')}`, { kaslr: true, images });
    try {
      const colds: number[] = [];
      let first = '';
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
        ins.scan({ hashImage: true });
        colds.push(performance.now() - t0);
        const tm = ins.kernel.timings;
        first = `kallsyms ${tm.kallsymsMs.toFixed(0)} ms (${ins.kernel.profile.symbols.size} symbols), BTF ${tm.btfMs.toFixed(0)} ms`;
        ins.close();
      }
      const ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
      try {
        const full = timeIt(200, () => ins.scan({ hashImage: false }));
        const snap = ins.scan({ hashImage: false });
        const area = timeIt(200, () => { ins.context.space.clearCache(); readModuleArea(ins.context, snap.modules); });
        const owners = [...snap.modules.modules, ...snap.modules.kobjects];
        const tps = timeIt(200, () => { ins.context.space.clearCache(); readTracepoints(ins.context, owners); });
        const withoutTps = timeIt(200, () => ins.scan({ hashImage: false, tracepoints: false }));
        const slots = [...snap.syscallTables.map((t) => `${t.table} ${t.entries.length}`), ...(snap.dispatch ?? []).map((d) => `${d.name} ${d.slots.length}`)];
        console.log(`  ${images.kernelAbi}: cold start median ${median(colds).toFixed(0)} ms [${colds.map((c) => c.toFixed(0)).join(', ')}] (${first}); ` +
          `full check median ${full.toFixed(3)} ms (module area ${area.toFixed(3)} ms: ${snap.moduleArea?.regions.length ?? 0} executable runs; ` +
          `tracepoints ${tps.toFixed(3)} ms: ${snap.tracepoints?.count ?? 0}; without them ${withoutTps.toFixed(3)} ms); ${snap.tasks.tasks.length} processes; ${slots.join(', ')}`);
        // The live supervisor decodes the switches in a child process, once per switch body.
        if ((snap.dispatch ?? []).length > 0) {
          // A fresh attach: this one's switch maps are already decoded in-process.
          const fresh = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
          const child = new ChildSwitchDecoder();
          try {
            const t0 = performance.now();
            while (fresh.scan({ hashImage: false, switchDecoder: child.decode }).dispatch?.length !== snap.dispatch?.length || child.busy) await sleep(20);
            const childMs = performance.now() - t0;
            const cached = timeIt(50, () => fresh.scan({ hashImage: false, switchDecoder: child.decode }));
            console.log(`    live (switches decoded in a child process): all decoded after ${childMs.toFixed(0)} ms; full check median ${cached.toFixed(3)} ms`);
          } finally {
            child.close();
            fresh.close();
          }
        }
      } finally {
        ins.close();
      }
    } finally {
      await vm.stop();
    }
  }
}

export async function bench(): Promise<void> {
  await perKernel();
  if (process.env.IV_BENCH_KERNELS_ONLY === '1') return;
  const vm = await startLabGuest('bench-introspect', { memoryMiB: 2048, kaslr: true });
  try {
    // Cold start: map RAM, find kallsyms, decode symbols, load BTF, verify page tables, first full view.
    const colds: number[] = [];
    const phases: string[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
      ins.scan({ hashImage: true });
      colds.push(performance.now() - t0);
      const tm = ins.kernel.timings;
      phases.push(`kallsyms ${tm.kallsymsMs.toFixed(0)} + BTF ${tm.btfMs.toFixed(0)} of discovery ${tm.totalMs.toFixed(0)} ms`);
      ins.close();
    }
    console.log(`  cold start to first full view (no profile, 2 GiB guest): median ${median(colds).toFixed(0)} ms  [${colds.map((c) => c.toFixed(0)).join(', ')}]`);
    console.log(`    ${phases.join('; ')}`);

    const ins = await Introspector.attach(vm.ramPath, { qmp: vm.qmp });
    try {
      measureViews(ins, 'idle lab guest', 500);
      const agent = await vm.agent();
      await agent.shell('echo 200000 > /proc/sys/kernel/threads-max; echo 131072 > /proc/sys/kernel/pid_max; mkfifo /tmp/iv-bench-fifo');
      // Sleeping subshells blocked on a FIFO: one fork each, no exec.
      const spawn = async (n: number): Promise<void> => {
        for (let done = 0; done < n; done += 500) {
          const k = Math.min(500, n - done);
          await agent.shell(`i=0; while [ $i -lt ${k} ]; do (read x < /tmp/iv-bench-fifo) >/dev/null 2>&1 & i=$((i+1)); done`, { timeoutMs: 600_000 });
        }
      };
      let current = ins.scan({ hashImage: false }).tasks.tasks.length;
      for (const target of [1000, 10000]) {
        const t0 = Date.now();
        await spawn(target - current);
        current = ins.scan({ hashImage: false }).tasks.tasks.length;
        console.log(`  (spawned to ${current} guest processes in ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
        measureViews(ins, `~${target} guest tasks`, target > 5000 ? 50 : 200);
      }
    } finally {
      ins.close();
    }
  } finally {
    await vm.stop();
  }
}

// Tracepoint probes: the kernel's own users (tracefs trace events on a syscall, a scheduler and
// a module's tracepoint, perf through a trace-event BPF program, a raw tracepoint BPF program)
// raise nothing and are named as such in the view; a module's probe on sys_enter (the lab's
// iv_tracepoint_hook, alone and next to a trace event on the same tracepoint) is found live and
// from a dump by `introvisor check`, naming the tracepoint and the module, and is gone after rmmod.
import type { Test } from 'tap';
import type { Observation } from '../../../src/detectors/types.js';
import type { KernelSnapshot, TracepointInfo } from '../../../src/views/types.js';
import { paused } from '../ground-truth.js';
import type { TechniqueBattery, TechniqueContext } from './context.js';

const T = '/sys/kernel/tracing';
const mine = (os: readonly Observation[]): Observation[] => os.filter((o) => o.kind === 'tracepoint-hook');
const line = (o: Observation): string => `${o.kind} ${String(o.evidence.tracepoint)} ${String(o.evidence.module)}`;
/** Trace events turned on for the legitimate case: a syscall tracepoint, two scheduler ones and a module's (ext4). */
const EVENTS = ['raw_syscalls/sys_enter', 'sched/sched_process_fork', 'sched/sched_process_exec', 'ext4/ext4_da_write_begin'];

function byName(s: KernelSnapshot, name: string): TracepointInfo | undefined {
  return s.tracepoints?.tracepoints.find((x) => x.name === name);
}

/** Each probe of a tracepoint: who registered it (via) or its owner. */
function users(tp: TracepointInfo | undefined): string[] {
  return (tp?.probes ?? []).map((p) => p.via ? p.via.kind : p.owner.kind === 'kernel' ? `kernel ${p.owner.symbol}` : p.owner.kind === 'module' ? `module ${p.owner.module}` : 'unknown');
}

async function startLoader(ctx: TechniqueContext, args: string): Promise<number> {
  const loader = ctx.images.bpfLoader;
  if (!loader) throw new Error(`the lab image of ${ctx.line} has no bpfload: rebuild the images (lab/build-images.sh)`);
  const out = `/tmp/bpfload-tp-${args.replace(/\W/g, '_')}.out`;
  const pid = Number((await ctx.shell(`${loader} ${args} >${out} 2>&1 </dev/null & echo $!`)).trim());
  for (let i = 0; i < 50; i++) {
    const output = await ctx.shell(`cat ${out}; kill -0 ${pid} 2>/dev/null && echo RUNNING || echo EXITED`);
    if (/^id=\d+$/m.test(output)) return pid;
    if (output.includes('EXITED')) throw new Error(`bpfload ${args}: ${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`bpfload ${args} printed no id within 10 s`);
}

export const tracepointHooks: TechniqueBattery = {
  name: 'tracepoint probes',
  async run(t: Test, ctx: TechniqueContext): Promise<void> {
    const scan = (): Promise<KernelSnapshot> => paused(ctx.vm, () => ctx.live.scan({ hashImage: false }));
    await ctx.shell(`[ -e ${T}/events ] || mount -t tracefs nodev ${T}`);

    const clean = await scan();
    t.same(clean.tracepoints?.errors ?? ['no view'], [], 'the tracepoint view reads without errors');
    // Ground truth: every struct tracepoint is a __tracepoint_<name> data symbol in /proc/kallsyms (the kernel's and its
    // modules'); 6.12 also has a function __tracepoint_probe_module_cb.
    const named = Number((await ctx.shell("grep -E ' [dD] __tracepoint_' /proc/kallsyms | grep -cv ' __tracepoint_ptr_'")).trim());
    t.ok(named > 500, `${named} __tracepoint_ data symbols in /proc/kallsyms`);
    t.equal(clean.tracepoints?.count, named, `${clean.tracepoints?.count ?? 0} tracepoints walked (kernel and modules): one per symbol`);
    t.comment(`clean: ${clean.tracepoints?.tracepoints.map((x) => `${x.name ?? '?'}[${users(x).join(',')}]`).join(' ') || 'no tracepoint with probes'}`);
    t.same(mine(await ctx.persistent()).map(line), [], 'clean: no tracepoint-hook');

    await t.test('legitimate: trace events, perf and BPF on tracepoints', async (t) => {
      const have = (await ctx.shell(`for e in ${EVENTS.join(' ')}; do [ -e ${T}/events/$e/enable ] && echo $e; done`)).trim().split(/\s+/).filter(Boolean);
      t.ok(have.includes('raw_syscalls/sys_enter') && have.includes('sched/sched_process_fork'), `events present: ${have.join(', ')}`);
      await ctx.shell(have.map((e) => `echo 1 > ${T}/events/${e}/enable`).join(' && '));
      const pids: number[] = [];
      try {
        pids.push(await startLoader(ctx, 'tptrace raw_syscalls/sys_enter'));
        pids.push(await startLoader(ctx, 'rawtp sys_enter'));
        pids.push(await startLoader(ctx, 'tptrace sched/sched_process_exec'));
        await ctx.shell('sync; ls /data >/dev/null; true');
        const s = await scan();
        t.same(s.tracepoints?.errors ?? ['no view'], [], 'read without errors');
        t.same(users(byName(s, 'sys_enter')).sort(), ['bpf', 'perf', 'trace-event'], 'sys_enter: the trace event, perf (the BPF trace-event program) and the raw tracepoint program, each told apart');
        const bpf = byName(s, 'sys_enter')?.probes.find((p) => p.via?.kind === 'bpf');
        t.ok(bpf?.via?.kind === 'bpf' && bpf.via.id !== null && bpf.via.name === 'iv_rawtp', `the raw tracepoint probe names its program: ${JSON.stringify(bpf?.via)}`);
        t.same(users(byName(s, 'sched_process_fork')), ['trace-event'], 'sched_process_fork: the trace event');
        t.same(users(byName(s, 'sched_process_exec')).sort(), ['perf', 'trace-event'], 'sched_process_exec: the trace event and perf');
        const ext4 = byName(s, 'ext4_da_write_begin');
        if (have.includes('ext4/ext4_da_write_begin')) {
          const modular = /^ext4 /m.test(await ctx.shell('cat /proc/modules'));
          t.equal(ext4?.module ?? null, modular ? 'ext4' : null, `ext4_da_write_begin is ${modular ? 'ext4\'s (a module\'s tracepoint)' : 'the kernel\'s (ext4 built in)'}`);
          t.same(users(ext4), ['trace-event'], 'its probe, in the module, is the trace event\'s');
        }
        t.same(mine(await ctx.persistent()).map(line), [], 'no tracepoint-hook');
      } finally {
        if (pids.length > 0) await ctx.shell(`kill ${pids.join(' ')}; for p in ${pids.join(' ')}; do while kill -0 $p 2>/dev/null; do sleep 0.1; done; done; true`);
        await ctx.shell(have.map((e) => `echo 0 > ${T}/events/${e}/enable`).join('; '));
      }
      const off = await scan();
      t.same(users(byName(off, 'sys_enter')), [], 'all off: sys_enter has no probe');
    });

    const hook = ctx.images.attackModules.tracepointHook;
    if (!hook) { t.fail('the lab image lacks iv_tracepoint_hook (rebuild: bash lab/build-images.sh)'); return; }

    for (const withEvent of [false, true]) {
      await t.test(`a module's probe on sys_enter${withEvent ? ', next to the trace event' : ''}`, async (t) => {
        if (withEvent) await ctx.shell(`echo 1 > ${T}/events/raw_syscalls/sys_enter/enable`);
        const t0 = performance.now();
        await ctx.shell(`insmod ${hook}`);
        const obs = await ctx.persistent();
        const ms = performance.now() - t0;
        try {
          await ctx.shell('kill -0 1');
          t.not((await ctx.shell('cat /sys/module/iv_tracepoint_hook/parameters/hits')).trim(), '0', 'the probe saw kill(2)');
          const s = await scan();
          const tp = byName(s, 'sys_enter');
          t.same(users(tp).sort(), withEvent ? ['module iv_tracepoint_hook', 'trace-event'] : ['module iv_tracepoint_hook'], 'sys_enter\'s probes');
          t.ok(tp?.enabled, 'its static key is on');
          if (tp?.call !== undefined) {
            t.equal(tp.call, withEvent ? tp.iterator : tp.probes[0]?.func, `its static call reaches ${withEvent ? 'the iterator' : 'the one probe'}`);
          }
          const f = mine(obs);
          t.same(f.map(line), ['tracepoint-hook sys_enter iv_tracepoint_hook'], `exactly one tracepoint-hook, on sys_enter, owned by iv_tracepoint_hook (insmod to 3 scans: ${ms.toFixed(0)} ms)`);
          t.match(f[0]?.summary ?? '', /probe on tracepoint sys_enter runs module iv_tracepoint_hook/, `summary: ${f[0]?.summary ?? ''}`);
          t.same(obs.filter((o) => o.kind !== 'tracepoint-hook').map((o) => o.summary), [], 'and nothing else live');
          const d = await ctx.checkDump();
          t.same(mine(d).map(line), ['tracepoint-hook sys_enter iv_tracepoint_hook'], 'introvisor check on a dump: the same');
          const other = d.filter((o) => o.kind !== 'tracepoint-hook').map((o) => `${o.kind}: ${o.summary}`);
          if (other.length > 0) t.comment(`the dump also shows: ${other.join('; ').slice(0, 600)}`);
        } finally {
          await ctx.shell('rmmod iv_tracepoint_hook');
          if (withEvent) await ctx.shell(`echo 0 > ${T}/events/raw_syscalls/sys_enter/enable`);
        }
        t.same((await ctx.persistent()).map(line), [], 'rmmod: nothing left');
        t.same(users(byName(await scan(), 'sys_enter')), [], 'rmmod: sys_enter has no probe');
      });
    }
  },
};

// ftrace and kprobe hooks: the public-rootkit ftrace hook on getdents64 (listed, then off the
// module list), a kprobe and a kretprobe on kill with handlers in a module, each found live and
// from a dump naming the hooked function and the module, undone to a clean guest; and the
// legitimate instrumentation (the function tracer over every function, a tracefs kprobe event)
// in the same boot raising neither kind.
import type { Test } from 'tap';
import { analyzeScan } from '../../../src/detectors/index.js';
import { instrumentationNote } from '../../../src/detectors/ftrace-hooks.js';
import type { Observation } from '../../../src/detectors/types.js';
import type { KernelSnapshot } from '../../../src/views/types.js';
import { paused } from '../ground-truth.js';
import type { TechniqueBattery, TechniqueContext } from './context.js';

const MINE = new Set<string>(['ftrace-hook', 'kprobe-hook']);
/** The issue's false-alarm bar: legitimate instrumentation over this many scans. */
const LEGIT_SCANS = 1000;
const mine = (os: readonly Observation[]): Observation[] => os.filter((o) => MINE.has(o.kind));
const line = (o: Observation): string => `${o.kind} ${String(o.evidence.module)}`;

/** Other kinds the same state raised (the text-diff view's, with a hashed image), for the record. */
async function otherKinds(ctx: TechniqueContext): Promise<string> {
  const snap = await paused(ctx.vm, () => ctx.live.scan({ hashImage: true }));
  const a = analyzeScan({ nowMs: Date.now(), snapshot: snap, snapshotError: null, report: { takenAtMs: Date.now(), agent: 'down', error: 'not asked' }, reportFresh: false, critical: [], baseline: ctx.baseline });
  const kinds = a.observations.filter((o) => !MINE.has(o.kind)).map((o) => `${o.kind}${o.evidence.what ? ` (${String(o.evidence.what)})` : ''}`);
  return kinds.join(', ') || 'none';
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await fn();
  return [r, performance.now() - t0];
}

export const ftraceKprobe: TechniqueBattery = {
  name: 'ftrace and kprobe hooks',
  async run(t: Test, ctx: TechniqueContext): Promise<void> {
    const scan = (): Promise<KernelSnapshot> => paused(ctx.vm, () => ctx.live.scan({ hashImage: false }));
    const T = (await ctx.shell('[ -e /sys/kernel/tracing/current_tracer ] || mount -t tracefs nodev /sys/kernel/tracing; echo /sys/kernel/tracing')).trim();

    const clean = await scan();
    t.same([...clean.ftrace?.errors ?? [], ...clean.kprobes?.errors ?? []], [], 'ftrace and kprobe views read without errors');
    t.ok((clean.ftrace?.records ?? 0) > 10_000, `${clean.ftrace?.records ?? 0} ftrace records walked`);
    t.comment(`clean: ${instrumentationNote(clean) ?? 'no instrumentation'}`);

    await t.test('legitimate: the function tracer over every function', async (t) => {
      await ctx.shell(`echo function > ${T}/current_tracer`);
      try {
        const s = await scan();
        const tracer = s.ftrace?.ops.filter((o) => o.tracesAll && o.funcOwner.kind === 'kernel') ?? [];
        t.ok(tracer.length > 0, `an ops tracing every function, its handler in kernel text (${tracer.map((o) => o.funcOwner.kind === 'kernel' ? o.funcOwner.symbol : '').join(', ')})`);
        t.ok((s.ftrace?.enabledCount ?? 0) > 1000, `${s.ftrace?.enabledCount ?? 0} live call sites`);
        t.comment(instrumentationNote(s) ?? '');
        t.same(mine(await ctx.persistent()).map(line), [], 'no ftrace-hook or kprobe-hook');
        t.comment(`function tracer on, other kinds with the image hashed: ${await otherKinds(ctx)}`);
      } finally {
        await ctx.shell(`echo nop > ${T}/current_tracer`);
      }
    });

    await t.test('legitimate: a tracefs kprobe event', async (t) => {
      await ctx.shell(`echo 'p:ivprobe do_sys_openat2' >> ${T}/kprobe_events && echo 1 > ${T}/events/kprobes/ivprobe/enable`);
      try {
        const s = await scan();
        const p = s.kprobes?.probes.find((x) => x.symbol === 'do_sys_openat2');
        t.ok(p, 'the probe is in kprobe_table');
        t.equal(p?.handlerOwner.kind === 'kernel' ? p.handlerOwner.symbol : String(p?.handlerOwner.kind), 'kprobe_dispatcher', 'its handler: the kernel\'s kprobe_dispatcher');
        t.same(mine(await ctx.persistent()).map(line), [], 'no ftrace-hook or kprobe-hook');
        t.comment(`kprobe event on, other kinds with the image hashed: ${await otherKinds(ctx)}`);
      } finally {
        await ctx.shell(`echo 0 > ${T}/events/kprobes/ivprobe/enable; echo '-:ivprobe' >> ${T}/kprobe_events`);
      }
    });

    await t.test(`legitimate: function tracer and kprobe event at once, ${LEGIT_SCANS} scans`, async (t) => {
      await ctx.shell(`echo 'p:ivprobe do_sys_openat2' >> ${T}/kprobe_events && echo 1 > ${T}/events/kprobes/ivprobe/enable && echo function > ${T}/current_tracer`);
      try {
        const seen = new Map<string, number>();
        let kinds = 0;
        for (let i = 0; i < LEGIT_SCANS; i++) {
          const s = await scan();
          if ((s.ftrace?.ops.length ?? 0) >= 2 && (s.kprobes?.probes.length ?? 0) >= 1) kinds++;
          const a = analyzeScan({ nowMs: Date.now(), snapshot: s, snapshotError: null, report: { takenAtMs: Date.now(), agent: 'down', error: 'not asked' }, reportFresh: false, critical: [], baseline: ctx.baseline });
          for (const o of mine(a.observations)) seen.set(o.summary, (seen.get(o.summary) ?? 0) + 1);
          for (const k of a.undetermined) if (MINE.has(k)) seen.set(`undetermined ${k}`, (seen.get(`undetermined ${k}`) ?? 0) + 1);
        }
        t.equal(kinds, LEGIT_SCANS, 'every scan saw the tracer\'s and the kprobe\'s ops and the probe');
        t.same([...seen], [], 'no ftrace-hook or kprobe-hook observation in any scan');
      } finally {
        await ctx.shell(`echo nop > ${T}/current_tracer; echo 0 > ${T}/events/kprobes/ivprobe/enable; echo '-:ivprobe' >> ${T}/kprobe_events`);
      }
    });

    const hook = ctx.images.attackModules.ftraceHook;
    const probe = ctx.images.attackModules.kprobeHook;
    if (!hook || !probe) { t.fail('the lab image lacks iv_ftrace_hook / iv_kprobe_hook (rebuild: bash lab/build-images.sh)'); return; }

    for (const hidden of [false, true]) {
      await t.test(`ftrace hook on getdents64${hidden ? ', module off the list' : ''}`, async (t) => {
        await ctx.shell('mkdir -p /tmp/ivd && touch /tmp/ivd/iv_hidden_file /tmp/ivd/visible');
        const [obs, ms] = await timed(async () => { await ctx.shell(`insmod ${hook}${hidden ? ' hidden=1' : ''}`); return ctx.persistent(); });
        try {
          t.same((await ctx.shell('ls /tmp/ivd')).trim().split(/\s+/), ['visible'], 'the hook hides iv_hidden_file from ls');
          const f = mine(obs);
          t.same(f.map(line), ['ftrace-hook iv_ftrace_hook'], `exactly one ftrace-hook, owned by iv_ftrace_hook (insmod to 3 scans: ${ms.toFixed(0)} ms)`);
          t.match(f[0]?.summary ?? '', /__x64_sys_getdents64/, `naming the hooked function: ${f[0]?.summary ?? ''}`);
          t.same(obs.filter((o) => !MINE.has(o.kind)).map((o) => o.kind), hidden ? ['hidden-module'] : [], hidden ? 'and the hidden module' : 'and nothing else');
          const d = await ctx.checkDump();
          t.same(mine(d).map((o) => `${line(o)} ${JSON.stringify(o.evidence.hooked)}`), ['ftrace-hook iv_ftrace_hook ["__x64_sys_getdents64"]'], 'the dump: the same');
          t.comment(`other kinds, image hashed: ${await otherKinds(ctx)}`);
        } finally {
          if (hidden) await ctx.shell('echo 0 > /sys/module/iv_ftrace_hook/parameters/hidden');
          await ctx.shell('rmmod iv_ftrace_hook');
        }
        t.same((await ctx.shell('ls /tmp/ivd')).trim().split(/\s+/).sort(), ['iv_hidden_file', 'visible'], 'rmmod: the file is listed again');
        t.same((await ctx.persistent()).map(line), [], 'rmmod: nothing left');
      });
    }

    for (const ret of [false, true]) {
      await t.test(`${ret ? 'kretprobe' : 'kprobe'} on kill`, async (t) => {
        const [obs, ms] = await timed(async () => { await ctx.shell(`insmod ${probe}${ret ? ' ret=1' : ''}`); return ctx.persistent(); });
        try {
          await ctx.shell('kill -64 999999 2>/dev/null; true');
          t.not((await ctx.shell('cat /sys/module/iv_kprobe_hook/parameters/last_sender')).trim(), '0', 'the handler saw the magic signal');
          const f = mine(obs);
          t.same(f.map(line), ['kprobe-hook iv_kprobe_hook'], `exactly one kprobe-hook, owned by iv_kprobe_hook (insmod to 3 scans: ${ms.toFixed(0)} ms)`);
          t.equal(f[0]?.evidence.symbol, '__x64_sys_kill', `naming the probed function: ${f[0]?.summary ?? ''}`);
          t.same(obs.filter((o) => !MINE.has(o.kind)).map((o) => o.kind), [], 'and nothing else (the kernel\'s kprobe_ftrace_ops is no hook)');
          const d = await ctx.checkDump();
          t.same(mine(d).map((o) => `${line(o)} ${String(o.evidence.symbol)}`), ['kprobe-hook iv_kprobe_hook __x64_sys_kill'], 'the dump: the same');
        } finally {
          await ctx.shell('rmmod iv_kprobe_hook');
        }
        t.same((await ctx.persistent()).map(line), [], 'rmmod: nothing left');
      });
    }
  },
};

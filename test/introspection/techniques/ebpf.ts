// eBPF programs that alter what the kernel returns or what a process sees, loaded by the
// guest's bpfload (hand-assembled programs through the raw bpf() system call), against an
// ordinary tracing program that only reads. Each program stays attached while bpfload runs;
// killing it unloads the program.
import type { Test } from 'tap';
import type { TechniqueBattery, TechniqueContext } from './context.js';
import type { Observation } from '../../../src/detectors/types.js';
import { paused } from '../ground-truth.js';

interface Loaded { readonly pid: number; readonly id: number | null; readonly output: string }

/** Starts `bpfload MODE TARGET` in the background; waits until it prints its program id or exits. */
async function load(ctx: TechniqueContext, loader: string, mode: string, target: string): Promise<Loaded> {
  const out = `/tmp/bpfload-${mode}.out`;
  const pid = Number((await ctx.shell(`${loader} ${mode} ${target} >${out} 2>&1 </dev/null & echo $!`)).trim());
  for (let i = 0; i < 50; i++) {
    const output = await ctx.shell(`cat ${out}; kill -0 ${pid} 2>/dev/null && echo RUNNING || echo EXITED`);
    const id = /^id=(\d+)$/m.exec(output);
    if (id) return { pid, id: Number(id[1]), output };
    if (output.includes('EXITED')) return { pid, id: null, output };
    await new Promise((r) => setTimeout(r, 200));
  }
  return { pid, id: null, output: 'bpfload printed no id within 10 s' };
}

async function unload(ctx: TechniqueContext, l: Loaded): Promise<void> {
  await ctx.shell(`kill ${l.pid} 2>/dev/null; while kill -0 ${l.pid} 2>/dev/null; do sleep 0.1; done; true`);
}

const bpfHooks = (obs: readonly Observation[]): string[] => obs.filter((o) => o.kind === 'bpf-hook')
  .map((o) => `${String(o.evidence.name)} ${String(o.evidence.type)} ${String(o.evidence.attachType)} ${String(o.evidence.attachTo)} [${(o.evidence.reasons as string[]).map((r) => r.split(':')[0]).join('; ')}]`);

/** The attack: loaded, then exactly `expected` live (timed) and from a dump; unloaded, then clean. */
async function attack(t: Test, ctx: TechniqueContext, l: Loaded, expected: string[], what: string): Promise<void> {
  const t0 = performance.now();
  const live = await ctx.persistent();
  const ms = performance.now() - t0;
  t.same(bpfHooks(live), expected, `${what}: found live, naming the program, its type, attach point and the risky helper`);
  t.same(live.filter((o) => o.kind !== 'bpf-hook').map((o) => o.summary), [], `${what}: and nothing else live`);
  t.comment(`${what}: confirmed over 3 live scans ${ms.toFixed(0)} ms after loading`);
  t.match(live.find((o) => o.kind === 'bpf-hook')?.summary ?? '', new RegExp(`eBPF program ${l.id ?? -1} `), `${what}: the summary names program id ${l.id}`);
  const dump = await ctx.checkDump();
  t.same(bpfHooks(dump), expected, `${what}: the same from a dump`);
  const other = dump.filter((o) => o.kind !== 'bpf-hook' && o.kind !== 'kernel-integrity-changed' && o.kind !== 'agent-down');
  t.same(other.map((o) => o.summary), [], `${what}: nothing else from the dump but the text the attach patched`);
  const text = dump.filter((o) => o.kind === 'kernel-integrity-changed').map((o) => o.summary);
  if (text.length > 0) t.comment(`${what}: the dump also shows the attach's text patch: ${text.join('; ')}`);
  await unload(ctx, l);
  t.same(await ctx.persistent(), [], `${what}: killed, the program is gone`);
}

export const ebpfBattery: TechniqueBattery = {
  name: 'eBPF programs that override return values or write user memory',
  async run(t, ctx) {
    const loader = ctx.images.bpfLoader;
    if (!loader) { t.fail('the lab manifest names no bpfLoader: rebuild the images (lab/build-images.sh)'); return; }
    await ctx.shell('mkdir -p /tmp');

    // Legitimate instrumentation: a kprobe program that only reads. In the view, not a finding.
    const trace = await load(ctx, loader, 'trace', 'do_sys_openat2');
    t.ok(trace.id !== null, `tracing program loaded: ${trace.output.trim()}`);
    const snap = await paused(ctx.vm, () => ctx.live.scan({ hashImage: false }));
    const mine = snap.bpf?.programs.find((p) => p.id === trace.id);
    t.same(mine && { name: mine.name, type: mine.type, attachTo: mine.attachTo, helpers: mine.helpers, override: mine.kprobeOverride, jited: mine.jited !== null },
      { name: 'iv_trace', type: 'BPF_PROG_TYPE_KPROBE', attachTo: 'kprobe:do_sys_openat2', helpers: ['bpf_get_current_pid_tgid', 'bpf_ktime_get_ns'], override: false, jited: true },
      'the tracing program in the view: type, attach point, read-only helpers, JIT image');
    t.same(snap.bpf?.errors, [], 'BPF view without errors');
    t.same(await ctx.persistent(), [], 'a read-only tracing program raises nothing live');
    t.same(bpfHooks(await ctx.checkDump()), [], 'nor from a dump');
    await unload(ctx, trace);
    t.same((await paused(ctx.vm, () => ctx.live.scan({ hashImage: false }))).bpf?.programs.filter((p) => p.id === trace.id), [], 'killed: gone from the view');

    // The same read-only program on a trace event: named by its event, silent.
    const tpt = await load(ctx, loader, 'tptrace', 'syscalls/sys_enter_openat');
    t.ok(tpt.id !== null, `tracepoint program loaded: ${tpt.output.trim()}`);
    const tsnap = await paused(ctx.vm, () => ctx.live.scan({ hashImage: false }));
    t.same(tsnap.bpf?.programs.filter((p) => p.id === tpt.id).map((p) => `${p.type} ${p.attachTo}`), ['BPF_PROG_TYPE_TRACEPOINT tracepoint:syscalls/sys_enter_openat'], 'a tracepoint program is named by its trace event');
    t.same(await ctx.persistent(), [], 'and raises nothing');
    await unload(ctx, tpt);

    // User-memory writes (how eBPF rootkits rewrite getdents buffers and files as read): from a
    // kprobe, and from the getdents64 exit event as public eBPF rootkits hide pids and files.
    const wu = await load(ctx, loader, 'writeuser', 'do_sys_openat2');
    t.ok(wu.id !== null, `bpf_probe_write_user program loaded: ${wu.output.trim()}`);
    await attack(t, ctx, wu, ['iv_writeuser BPF_PROG_TYPE_KPROBE null kprobe:do_sys_openat2 [calls bpf_probe_write_user]'], 'bpf_probe_write_user');
    const wt = await load(ctx, loader, 'tpwriteuser', 'syscalls/sys_exit_getdents64');
    t.ok(wt.id !== null, `bpf_probe_write_user program on sys_exit_getdents64 loaded: ${wt.output.trim()}`);
    await attack(t, ctx, wt, ['iv_writeuser BPF_PROG_TYPE_TRACEPOINT null tracepoint:syscalls/sys_exit_getdents64 [calls bpf_probe_write_user]'], 'bpf_probe_write_user on getdents64');

    // bpf_override_return on a kprobe: only on kernels built with CONFIG_BPF_KPROBE_OVERRIDE
    // (the Debian kernels are not: their verifier refuses the helper, so the technique does not exist there).
    const ov = await load(ctx, loader, 'override', '__x64_sys_getpid');
    if (ov.id === null) {
      // 5.10/6.1: "unknown func bpf_override_return#58"; 6.12: "program of this type cannot use helper bpf_override_return#58".
      t.match(ov.output, /(unknown func|cannot use helper) bpf_override_return/, 'this kernel has no bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE off): the verifier refuses it');
      t.comment(`${ctx.images.kernelAbi}: bpf_override_return does not exist here; fmod_ret and LSM programs override return values instead`);
    } else {
      await attack(t, ctx, ov, ['iv_override BPF_PROG_TYPE_KPROBE null kprobe:__x64_sys_getpid [calls bpf_override_return]'], 'bpf_override_return');
    }

    // A return value overridden through a BPF_MODIFY_RETURN trampoline (allowed on security_* functions).
    const fm = await load(ctx, loader, 'fmodret', 'security_sb_statfs');
    t.ok(fm.id !== null, `fmod_ret program loaded: ${fm.output.trim()}`);
    t.match(await ctx.shell('stat -f / >/dev/null 2>&1 && echo statfs-ok || echo statfs-refused'), /statfs-refused/, 'statfs now fails: the return value is overridden');
    await attack(t, ctx, fm, ['iv_fmodret BPF_PROG_TYPE_TRACING BPF_MODIFY_RETURN security_sb_statfs [fmod_ret program]'], 'fmod_ret');
    t.match(await ctx.shell('stat -f / >/dev/null 2>&1 && echo statfs-ok || echo statfs-refused'), /statfs-ok/, 'statfs works again');

    // A BPF LSM program denying a security hook (in effect where the kernel enables the bpf LSM).
    const lsm = await load(ctx, loader, 'lsm', 'sb_statfs');
    t.ok(lsm.id !== null, `LSM program loaded: ${lsm.output.trim()}`);
    const enabled = (await ctx.shell('cat /sys/kernel/security/lsm 2>/dev/null || (mkdir -p /sys/kernel/security && mount -t securityfs securityfs /sys/kernel/security && cat /sys/kernel/security/lsm)')).split(',').includes('bpf');
    const statfs = await ctx.shell('stat -f / >/dev/null 2>&1 && echo statfs-ok || echo statfs-refused');
    t.match(statfs, enabled ? /statfs-refused/ : /statfs-ok/, enabled ? 'the bpf LSM is active: statfs is denied' : 'the bpf LSM is not active on this kernel: attached but never called');
    await attack(t, ctx, lsm, ['iv_lsm BPF_PROG_TYPE_LSM BPF_LSM_MAC bpf_lsm_sb_statfs [LSM program]'], 'BPF LSM');
  },
};

// E2E on a real lab guest of one kernel line, live supervisor: each of today's rootkit techniques in
// turn, in one boot — the ftrace hook on getdents64 (off the module list), a kprobe on kill, a module's
// probe on the sys_enter tracepoint, a module that erases itself from the module list and /sys/module, an inline jmp patched over a kernel
// function's entry, an eBPF program that writes user memory, and on kernels that dispatch through
// x64_sys_call a call target rewritten in it — each a finding of its kind naming what was hooked and
// by whom -> image restore -> a clean scan. One file per line (e2e-techniques-<line>.test.ts).
import type { Test } from 'tap';
import { FAST_POLICY, LiveSupervisor, makeHarness } from './harness.js';
import { loadLabImages, type LabKernelLine } from '../../lab/lab-images.js';
import { sleep } from '../../src/util/deadline.js';
import { DEFAULT_IMAGE_COVERAGE_MS } from '../../src/supervisor/kernel-scanner.js';

interface Step {
  readonly kind: string;
  /** The attack, played once in the guest (detached). */
  readonly attack: string;
  /** What the raised finding's log line must say. */
  readonly names: RegExp;
  /** The module the stored evidence must name (null: no module, the attack is a process). */
  readonly module: string | null;
  readonly findWithinMs?: number;
}

export async function techniquesLive(t: Test, line: LabKernelLine): Promise<void> {
  t.setTimeout(900_000);
  await t.test(`kernel ${line}: today's techniques each found live, the ladder restores the image, the guest comes back clean`, async (t) => {
    // Several attacks in one boot: each kind's ladder resets 2 s after it is verified and the next
    // attack waits for that, so one raising the same kind again (hidden-module, kernel-integrity-changed)
    // starts a fresh ladder instead of exhausting the first one.
    const restore = { confirmScans: 1, resetWindowSec: 2, ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }] };
    const kinds = ['ftrace-hook', 'kprobe-hook', 'tracepoint-hook', 'hidden-module', 'kernel-integrity-changed', 'unowned-kernel-code', 'bpf-hook', 'syscall-table-changed'];
    const policy = { ...FAST_POLICY, faults: { ...FAST_POLICY.faults, ...Object.fromEntries(kinds.map((k) => [k, restore])) } };
    const images = loadLabImages(line);
    const h = makeHarness(`e2e-tech-${line.replace('.', '-')}`, { policy, line });
    const s = new LiveSupervisor(h);
    t.teardown(async () => { await s.stop(); h.cleanup(); });
    const tStart = Date.now();
    await s.start();
    await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
    t.match(await s.shell('uname -r'), new RegExp(`^${images.kernelAbi.replace(/[.+]/g, '\\$&')}\\s*$`), `the guest runs ${images.kernelAbi}`);
    const mods = images.attackModules;
    for (const m of ['ftraceHook', 'kprobeHook', 'tracepointHook', 'eraseSelf', 'inlineHook']) if (!mods[m]) throw new Error(`the ${line} lab image lacks the attack module ${m}: run scripts/setup.sh --tests`);
    if (!images.bpfLoader) throw new Error(`the ${line} lab image lacks bpfload: run scripts/setup.sh --tests`);

    const steps: Step[] = [
      { kind: 'ftrace-hook', attack: `insmod ${mods.ftraceHook} hidden=1`, names: /module iv_ftrace_hook hooks __x64_sys_getdents64 through ftrace/, module: 'iv_ftrace_hook' },
      { kind: 'kprobe-hook', attack: `insmod ${mods.kprobeHook}`, names: /kprobe on __x64_sys_kill runs module iv_kprobe_hook/, module: 'iv_kprobe_hook' },
      { kind: 'tracepoint-hook', attack: `insmod ${mods.tracepointHook}`, names: /probe on tracepoint sys_enter runs module iv_tracepoint_hook/, module: 'iv_tracepoint_hook' },
      { kind: 'hidden-module', attack: `insmod ${mods.eraseSelf}`, names: /module iv_erase_self .*on neither the module list nor \/sys\/module/, module: 'iv_erase_self' },
      { kind: 'kernel-integrity-changed', attack: `insmod ${mods.inlineHook} target=__x64_sys_kill pid=99999`, names: /kernel text changed at __x64_sys_kill\+0x[0-9a-f]+/, module: 'iv_inline_hook',
        // Text is rehashed by a rotating share: every page within DEFAULT_IMAGE_COVERAGE_MS (30 s).
        findWithinMs: DEFAULT_IMAGE_COVERAGE_MS + 15_000 },
      { kind: 'bpf-hook', attack: `${images.bpfLoader} writeuser do_sys_openat2 </dev/null >/dev/null 2>&1 &`, names: /eBPF program \d+ "iv_writeuser" .*can alter.*bpf_probe_write_user/, module: null },
    ];
    // The dispatch switch, where the kernel dispatches through it (as the kernel matrix picks its attacks).
    const x64 = (await s.shell('grep -c " x64_sys_call$" /proc/kallsyms; true')).trim() !== '0';
    if (x64 && mods.dispatchHook) {
      steps.push({ kind: 'kernel-integrity-changed', attack: `insmod ${mods.dispatchHook} nr=39 handler=__x64_sys_getpid`, names: /x64_sys_call body changed: x64_sys_call\+0x[0-9a-f]+: (call|jmp) .*module iv_dispatch_hook\), was (call|jmp) 0x[0-9a-f]+ \(__x64_sys_getpid\)/, module: 'iv_dispatch_hook' });
    } else t.comment(`no dispatch switch on ${images.kernelAbi}: dispatch goes through sys_call_table, the dispatch patch does not apply`);

    const laddersReset = async (): Promise<void> => {
      for (const until = Date.now() + 30_000; s.ladders().length > 0;) {
        if (Date.now() > until) throw new Error(`ladders not reset 30 s after the guest came back clean: ${JSON.stringify(s.ladders().map((l) => [l.kind, l.phase]))}`);
        await sleep(200);
      }
    };
    for (const step of steps) {
      await laddersReset();
      const from = s.lines.length;
      const actionsBefore = s.actions().length;
      const t0 = Date.now();
      // Detached and never retried: the supervisor may find the hook and restore the VM before a waited-for
      // command could answer, and a retry would then play the attack again on the restored guest.
      await (await s.agent()).exec('/bin/sh', ['-c', step.attack], { detach: true });
      const raised = await s.waitFor(new RegExp(`finding raised: ${step.kind}`), step.findWithinMs ?? 15_000, from);
      t.match(raised.line, step.names, `${step.kind}: ${raised.line.slice(0, 200)}`);
      t.pass(`${line} ${step.kind}: finding ${raised.atMs - t0} ms after the attack`);
      const row = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'finding' AND guest = ? AND json_extract(payload, '$.fault') = ? ORDER BY seq DESC LIMIT 1").get(h.guest, step.kind) as { payload: string } | undefined;
      const ev = JSON.parse(row?.payload ?? '{}') as { evidence?: { items?: { module?: string | null }[] } };
      if (step.module) t.ok(JSON.stringify(ev.evidence ?? {}).includes(step.module), `${step.kind}: the stored evidence names ${step.module}`);
      const restored = await s.waitFor(/action restore-image done/, 120_000, from);
      t.pass(`${line} ${step.kind}: image restored ${restored.atMs - t0} ms after the attack`);
      // With the module off the list, hidden-module's ladder may act first; one restore clears both findings.
      const cleared = await s.waitFor(new RegExp(`finding cleared: ${step.kind}`), 90_000, from);
      t.pass(`${line} ${step.kind}: cleared by a clean scan ${cleared.atMs - t0} ms after the attack`);
      t.same(s.actions().slice(actionsBefore).map((a) => [a.action, a.outcome]), [['restore-image', 'ok']], `${step.kind}: one restore`);
      if (step.module) t.notMatch(await s.shell('cat /proc/modules; ls /sys/module'), new RegExp(step.module), `${step.kind}: the module is gone`);
      else t.notMatch(await s.shell('ps'), /bpfload/, `${step.kind}: the loader is gone`);
    }
    await laddersReset();
    t.same(s.sup.watches[0]?.lastScan?.findings, [], 'no finding left');
    t.comment(`${line}: ${steps.length} techniques, boot to last clean ${Date.now() - tStart} ms`);
  });
}

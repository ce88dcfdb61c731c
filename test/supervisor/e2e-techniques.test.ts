// E2E on a real lab guest, live supervisor: each of today's rootkit techniques in turn, in one boot —
// the ftrace hook on getdents64 (off the module list), a kprobe on kill, a module that erases itself
// from the module list and /sys/module, a module's probe on the sys_enter tracepoint, an inline jmp patched over a kernel function's entry, an eBPF
// program that writes user memory — each a finding of its kind naming what was hooked and by whom ->
// image restore -> a clean scan.
import t from 'tap';
import { FAST_POLICY, LiveSupervisor, makeHarness } from './harness.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { sleep } from '../../src/util/deadline.js';
import { DEFAULT_IMAGE_COVERAGE_MS } from '../../src/supervisor/kernel-scanner.js';

t.setTimeout(900_000);
t.test('today\'s techniques: each found live, the ladder restores the image, the guest comes back clean', async (t) => {
  // Two attacks in one boot: each kind's ladder resets 10 s after it is verified, so the second attack
  // (the text hash changes again) starts a fresh ladder instead of exhausting the first one.
  const restore = { confirmScans: 1, resetWindowSec: 10, ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }] };
  const policy = { ...FAST_POLICY, faults: { ...FAST_POLICY.faults, ...Object.fromEntries(['ftrace-hook', 'kprobe-hook', 'tracepoint-hook', 'hidden-module', 'kernel-integrity-changed', 'unowned-kernel-code', 'bpf-hook'].map((k) => [k, restore])) } };
  const h = makeHarness('e2e-tech', { policy });
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const images = loadLabImages();
  const mods = images.attackModules;
  for (const m of ['ftraceHook', 'kprobeHook', 'tracepointHook', 'eraseSelf', 'inlineHook']) if (!mods[m]) throw new Error(`the lab image lacks the attack module ${m}: run scripts/setup.sh`);
  if (!images.bpfLoader) throw new Error('the lab image lacks bpfload: run scripts/setup.sh');

  const steps = [
    { kind: 'ftrace-hook', insmod: `insmod ${mods.ftraceHook} hidden=1`, names: /module iv_ftrace_hook hooks __x64_sys_getdents64 through ftrace/, module: 'iv_ftrace_hook' },
    { kind: 'kprobe-hook', insmod: `insmod ${mods.kprobeHook}`, names: /kprobe on __x64_sys_kill runs module iv_kprobe_hook/, module: 'iv_kprobe_hook' },
    { kind: 'tracepoint-hook', insmod: `insmod ${mods.tracepointHook}`, names: /probe on tracepoint sys_enter runs module iv_tracepoint_hook/, module: 'iv_tracepoint_hook' },
    { kind: 'hidden-module', insmod: `insmod ${mods.eraseSelf}`, names: /module iv_erase_self .*on neither the module list nor \/sys\/module/, module: 'iv_erase_self' },
    { kind: 'kernel-integrity-changed', insmod: `insmod ${mods.inlineHook} target=__x64_sys_kill pid=99999`, names: /kernel text changed at __x64_sys_kill\+0x[0-9a-f]+/, module: 'iv_inline_hook',
      // Text is rehashed by a rotating share: every page within DEFAULT_IMAGE_COVERAGE_MS (30 s).
      findWithinMs: DEFAULT_IMAGE_COVERAGE_MS + 15_000 },
    { kind: 'bpf-hook', insmod: `${images.bpfLoader} writeuser do_sys_openat2 </dev/null >/dev/null 2>&1 &`, names: /eBPF program \d+ "iv_writeuser" .*can alter.*bpf_probe_write_user/, module: null },
  ];
  const shell = (command: string): Promise<string> => s.shell(command);
  for (const step of steps) {
    await sleep(12_000); // past every reset window
    const from = s.lines.length;
    const actionsBefore = s.actions().length;
    const t0 = Date.now();
    // Detached and never retried: the supervisor may find the hook and restore the VM before a waited-for
    // command could answer, and a retry would then play the attack again on the restored guest.
    await (await s.agent()).exec('/bin/sh', ['-c', step.insmod], { detach: true });
    const raised = await s.waitFor(new RegExp(`finding raised: ${step.kind}`), ('findWithinMs' in step ? step.findWithinMs : undefined) ?? 15_000, from);
    t.match(raised.line, step.names, `${step.kind}: ${raised.line.slice(0, 200)}`);
    t.pass(`${step.kind}: finding ${raised.atMs - t0} ms after insmod`);
    const row = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'finding' AND guest = ? AND json_extract(payload, '$.fault') = ? ORDER BY seq DESC LIMIT 1").get(h.guest, step.kind) as { payload: string } | undefined;
    const ev = JSON.parse(row?.payload ?? '{}') as { evidence?: { items?: { module?: string | null }[] } };
    if (step.module) t.ok(JSON.stringify(ev.evidence ?? {}).includes(step.module), `${step.kind}: the stored evidence names ${step.module}`);
    const restored = await s.waitFor(/action restore-image done/, 120_000, from);
    t.pass(`${step.kind}: image restored ${restored.atMs - t0} ms after insmod`);
    // With the module off the list, hidden-module's ladder may act first; one restore clears both findings.
    const cleared = await s.waitFor(new RegExp(`finding cleared: ${step.kind}`), 90_000, from);
    t.pass(`${step.kind}: cleared by a clean scan ${cleared.atMs - t0} ms after insmod`);
    t.same(s.actions().slice(actionsBefore).map((a) => [a.action, a.outcome]), [['restore-image', 'ok']], `${step.kind}: one restore`);
    if (step.module) t.notMatch(await shell('cat /proc/modules; ls /sys/module'), new RegExp(step.module), `${step.kind}: the module is gone`);
    else t.notMatch(await shell('ps'), /bpfload/, `${step.kind}: the loader is gone`);
  }
  t.same(s.sup.watches[0]?.lastScan?.findings, [], 'no finding left');
});

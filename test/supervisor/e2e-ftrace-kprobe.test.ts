// E2E on a real lab guest, live supervisor: the ftrace hook on getdents64 (off the module list) ->
// an ftrace-hook finding naming the hooked function and the module -> image restore -> a clean scan;
// then a kprobe on kill with its handler in a module -> kprobe-hook -> restore -> clean.
import t from 'tap';
import { FAST_POLICY, LiveSupervisor, makeHarness } from './harness.js';
import { loadLabImages } from '../../lab/lab-images.js';
import { sleep } from '../../src/util/deadline.js';

t.setTimeout(900_000);
t.test('ftrace and kprobe hooks: found live, the ladder restores the image, the guest comes back clean', async (t) => {
  // Two attacks in one boot: each kind's ladder resets 10 s after it is verified, so the second attack
  // (the text hash changes again) starts a fresh ladder instead of exhausting the first one.
  const restore = { confirmScans: 1, resetWindowSec: 10, ladder: [{ action: 'restore-image', count: 1, verifyTimeoutSec: 60, backoffSec: 0 }] };
  const policy = { ...FAST_POLICY, faults: { ...FAST_POLICY.faults, 'ftrace-hook': restore, 'kprobe-hook': restore, 'hidden-module': restore, 'kernel-integrity-changed': restore } };
  const h = makeHarness('e2e-ftrace', { policy });
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const mods = loadLabImages().attackModules;
  if (!mods.ftraceHook || !mods.kprobeHook) throw new Error('the lab image lacks iv_ftrace_hook / iv_kprobe_hook');

  const steps = [
    { kind: 'ftrace-hook', insmod: `insmod ${mods.ftraceHook} hidden=1`, names: /module iv_ftrace_hook hooks __x64_sys_getdents64 through ftrace/, module: 'iv_ftrace_hook' },
    { kind: 'kprobe-hook', insmod: `insmod ${mods.kprobeHook}`, names: /kprobe on __x64_sys_kill runs module iv_kprobe_hook/, module: 'iv_kprobe_hook' },
  ];
  // The agent's connection can drop on a loaded machine: retry on a fresh one (commands are idempotent).
  const shell = async (command: string): Promise<string> => {
    for (let i = 0; ; i++) {
      try { return await (await s.agent()).shell(command); } catch (e) { if (i >= 3 || !/connection closed|not reachable|timed out/i.test(String(e))) throw e; await sleep(2_000); }
    }
  };
  for (const step of steps) {
    await sleep(12_000); // past every reset window
    const from = s.lines.length;
    const actionsBefore = s.actions().length;
    const t0 = Date.now();
    await shell(`[ -d /sys/module/${step.module} ] || ${step.insmod}`);
    const raised = await s.waitFor(new RegExp(`finding raised: ${step.kind}`), 15_000, from);
    t.match(raised.line, step.names, `${step.kind}: ${raised.line.slice(0, 200)}`);
    t.pass(`${step.kind}: finding ${raised.atMs - t0} ms after insmod`);
    const row = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'finding' AND guest = ? AND json_extract(payload, '$.fault') = ? ORDER BY seq DESC LIMIT 1").get(h.guest, step.kind) as { payload: string } | undefined;
    const ev = JSON.parse(row?.payload ?? '{}') as { evidence?: { items?: { module?: string | null }[] } };
    t.same(ev.evidence?.items?.map((i) => i.module), [step.module], `${step.kind}: the stored evidence names ${step.module}`);
    const restored = await s.waitFor(/action restore-image done/, 120_000, from);
    t.pass(`${step.kind}: image restored ${restored.atMs - t0} ms after insmod`);
    // With the module off the list, hidden-module's ladder may act first; one restore clears both findings.
    const cleared = await s.waitFor(new RegExp(`finding cleared: ${step.kind}`), 90_000, from);
    t.pass(`${step.kind}: cleared by a clean scan ${cleared.atMs - t0} ms after insmod`);
    t.same(s.actions().slice(actionsBefore).map((a) => [a.action, a.outcome]), [['restore-image', 'ok']], `${step.kind}: one restore`);
    t.notMatch(await shell('cat /proc/modules; ls /sys/module'), new RegExp(step.module), `${step.kind}: the module is gone`);
  }
  t.same(s.sup.watches[0]?.lastScan?.findings, [], 'no finding left');
});

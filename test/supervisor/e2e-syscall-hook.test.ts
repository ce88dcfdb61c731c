// E2E on a real lab guest: the syscall-hook module rewrites sys_call_table
// entries 39 (getpid) and 62 (kill) -> a finding naming the changed entries ->
// image restore -> a clean scan.
import t from 'tap';
import { LiveSupervisor, makeHarness } from './harness.js';
import { loadLabImages } from '../../lab/lab-images.js';

t.test('syscall hook: finding names entries 39 and 62 within 10 s; image restored and a clean scan within 120 s', async (t) => {
  const h = makeHarness('e2e-hook');
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const agent = await s.agent();
  // A marker on the data disk: an image restore must discard it.
  await agent.shell('echo tampered > /data/marker && sync');
  const from = s.lines.length;
  const t0 = Date.now();
  await agent.shell(`insmod ${loadLabImages().attackModules.syscallHook} nrs=39,62`);
  const raised = await s.waitFor(/finding raised: syscall-table-changed/, 10_000, from);
  t.match(raised.line, /2 syscall-table-changed discrepancies/);
  t.match(raised.line, /sys_call_table\[39\] points to .* instead of __x64_sys_getpid/);
  t.match(raised.line, /sys_call_table\[62\] points to .* instead of __x64_sys_kill/);
  t.pass(`finding ${raised.atMs - t0} ms after insmod`);
  // The evidence in the event store: old and new targets and the owning module.
  const row = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'finding' AND guest = ? AND json_extract(payload, '$.fault') = 'syscall-table-changed' ORDER BY seq DESC LIMIT 1").get(h.guest) as { payload: string };
  const ev = JSON.parse(row.payload) as { fault: string; evidence: { items: { nr: number; oldTarget: string | null; newTarget: string; module: string | null }[] } };
  t.equal(ev.fault, 'syscall-table-changed');
  t.same(ev.evidence.items.map((i) => i.nr).sort((a, b) => a - b), [39, 62]);
  for (const i of ev.evidence.items) {
    // The kernel image (text included) lives in [0xffffffff80000000, 0xffffffffc0000000) at any KASLR
    // slide; modules start above it.
    const old = BigInt(i.oldTarget ?? '0');
    t.ok(old >= 0xffffffff80000000n && old < 0xffffffffc0000000n, `slot ${i.nr} old target ${i.oldTarget} is in the kernel image`);
    t.not(i.newTarget, i.oldTarget);
    t.equal(i.module, 'iv_syscall_hook', `slot ${i.nr} new target owned by the hook module`);
  }
  const restored = await s.waitFor(/action restore-image done/, 120_000, from);
  t.pass(`image restored ${restored.atMs - t0} ms after insmod`);
  const verified = await s.waitFor(/ladder syscall-table-changed: verified/, 60_000, restored.index);
  t.pass(`clean scan ${verified.atMs - t0} ms after insmod`);
  // The table lives in read-only data, so the rodata hash changed too; one restore serves both ladders.
  t.match(s.lines.slice(from).map((l) => l.line).join('\n'), /finding raised: kernel-integrity-changed: kernel rodata hash changed/);
  t.same(s.actions().map((a) => [a.action, a.outcome]), [['restore-image', 'ok']]);
  const agent2 = await s.agent();
  t.equal((await agent2.shell('cat /data/marker 2>/dev/null || echo none')).trim(), 'none', 'the overlay was discarded');
  t.notMatch(await agent2.shell('cat /proc/modules'), /iv_syscall_hook/);
  t.same(s.sup.watches[0]?.lastScan?.findings, []);
});

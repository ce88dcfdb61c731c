// E2E on a real lab guest: csdtest's binary removed from the data disk and the
// process killed -> restart-process x3 -> reboot-os x3 -> restart-vm -> image
// restore (which brings the binary back) -> healthy.
import t from 'tap';
import { LiveSupervisor, makeHarness } from './harness.js';

t.test('binary removed: ladder climbs restart x3, reboot x3, VM restart, image restore, then healthy (bound 6 min)', async (t) => {
  const h = makeHarness('e2e-climb');
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const agent = await s.agent();
  const from = s.lines.length;
  const t0 = Date.now();
  await agent.shell('rm /data/bin/csdtest && sync && kill $(cat /run/csdtest.pid)');
  const restored = await s.waitFor(/action restore-image done/, 360_000, from);
  const verified = await s.waitFor(/ladder critical-process-missing: verified/, 60_000, restored.index);
  t.pass(`healthy ${Math.round((verified.atMs - t0) / 1000)} s after the binary was removed`);
  t.same(s.actions().map((a) => `${a.action}#${a.attempt}:${a.outcome}`), [
    'restart-process#1:failed', 'restart-process#2:failed', 'restart-process#3:failed',
    'reboot-os#1:ok', 'reboot-os#2:ok', 'reboot-os#3:ok',
    'restart-vm#1:ok', 'restore-image#1:ok',
  ]);
  const agent2 = await s.agent();
  t.match(await agent2.shell('ls -l /data/bin/csdtest'), /csdtest/, 'the image restore brought the binary back');
  t.same(s.sup.watches[0]?.lastScan?.findings, []);
  t.equal(s.sup.watches[0]?.ladderState.held, null, 'not held');
});

// E2E on a real lab guest: `kill` of csdtest inside the guest -> finding ->
// process restarted -> healthy.
import t from 'tap';
import { LiveSupervisor, makeHarness } from './harness.js';

t.test('kill csdtest: finding within 10 s, restarted and verified healthy within 30 s of the kill', async (t) => {
  const h = makeHarness('e2e-kill');
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const agent = await s.agent();
  const pidBefore = (await agent.shell('cat /run/csdtest.pid')).trim();
  const from = s.lines.length;
  const killedAt = Date.now();
  await agent.shell(`kill ${pidBefore}`);
  const raised = await s.waitFor(/finding raised: critical-process-missing: critical process csdtest \(comm "csdtest"\) is not in the task-list/, 10_000, from);
  t.pass(`finding ${raised.atMs - killedAt} ms after the kill`);
  const done = await s.waitFor(/action restart-process done/, 20_000, from);
  const verified = await s.waitFor(/ladder critical-process-missing: verified/, 30_000, done.index);
  t.ok(verified.atMs - killedAt < 30_000, `healthy ${verified.atMs - killedAt} ms after the kill`);
  const pidAfter = (await agent.shell('cat /run/csdtest.pid')).trim();
  t.not(pidAfter, pidBefore, 'a new csdtest runs');
  t.match((await agent.shell('ps -o pid,comm')), /csdtest/);
  t.same(s.actions().map((a) => [a.action, a.outcome]), [['restart-process', 'ok']]);
  // Later scans stay clean: no further action.
  await new Promise((r) => setTimeout(r, 4000));
  t.equal(s.actions().length, 1);
  t.same(s.sup.watches[0]?.lastScan?.findings, []);
});

// E2E on a real lab guest: the DKOM module unlinks a process from the task
// list -> hidden-process finding naming the views that disagree -> the reboot
// ladder (reboot-os first) -> healthy.
import t from 'tap';
import { LiveSupervisor, makeHarness } from './harness.js';
import { loadLabImages } from '../../lab/lab-images.js';

t.test('DKOM-hidden pid: finding names task-list vs pid-idr/guest-ps within 10 s; OS reboot clears it within 90 s', async (t) => {
  const h = makeHarness('e2e-dkom');
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const agent = await s.agent();
  const pid = Number((await agent.shell('sleep 100000 </dev/null >/dev/null 2>&1 & echo $!')).trim());
  t.ok(pid > 1, `victim pid ${pid}`);
  await new Promise((r) => setTimeout(r, 3000));
  t.equal(s.actions().length, 0, 'a normal new process is not a finding');
  const from = s.lines.length;
  const t0 = Date.now();
  await agent.shell(`insmod ${loadLabImages().attackModules.dkomHide} pid=${pid}`);
  const raised = await s.waitFor(/finding raised: hidden-process/, 10_000, from);
  t.match(raised.line, new RegExp(`pid ${pid} \\(sleep\\) is in pid-idr(, run-queue)?, guest-ps but not in task-list`));
  t.pass(`finding ${raised.atMs - t0} ms after insmod`);
  const act = await s.waitFor(/action reboot-os \(attempt 1\/2\) for hidden-process/, 5_000, raised.index);
  const verified = await s.waitFor(/ladder hidden-process: verified/, 90_000, act.index);
  t.pass(`healthy ${verified.atMs - t0} ms after insmod`);
  t.same(s.actions().map((a) => `${a.fault}:${a.action}#${a.attempt}:${a.outcome}`), ['hidden-process:reboot-os#1:ok']);
  const row = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'finding' AND guest = ? AND json_extract(payload, '$.fault') = 'hidden-process' ORDER BY seq LIMIT 1").get(h.guest) as { payload: string };
  const ev = JSON.parse(row.payload) as { evidence: { items: { pid: number; inViews: string[]; missingFrom: string[] }[] } };
  t.match(ev.evidence.items, [{ pid, missingFrom: ['task-list'] }]);
  t.ok(ev.evidence.items[0]?.inViews.includes('pid-idr') && ev.evidence.items[0]?.inViews.includes('guest-ps'));
});

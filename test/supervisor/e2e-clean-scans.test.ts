// E2E on a real lab guest: 1,000 scans of a clean guest raise no finding and
// take no action (the guest's own processes come and go meanwhile).
import t from 'tap';
import { LiveSupervisor, makeHarness } from './harness.js';
import { sleep } from '../../src/util/deadline.js';

t.setTimeout(1_800_000); // 1,000 real scans take 7-8 min alone, longer beside another guest
t.test('1,000 scans of a clean guest raise no finding (bound 15 min)', async (t) => {
  const h = makeHarness('e2e-clean', { scanIntervalSec: 0.1 });
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 120_000);
  const w = s.sup.watches[0];
  if (!w) throw new Error('no watch');
  const start = w.scans;
  const t0 = Date.now();
  const agent = await s.agent();
  // Churn: short-lived processes in the guest while it is scanned.
  let churn = 0;
  while (w.scans - start < 1000) {
    if (Date.now() - t0 > 900_000) throw new Error(`only ${w.scans - start} scans in 15 min`);
    await agent.shell('for i in 1 2 3; do sleep 0.2 & done; wait').catch(() => undefined);
    churn++;
    await sleep(200);
  }
  const scans = w.scans - start;
  t.pass(`${scans} scans in ${((Date.now() - t0) / 1000).toFixed(0)} s with ${churn} bursts of short-lived processes`);
  const raised = s.sup.store.db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'finding' AND guest = ?").get(h.guest) as { n: number };
  t.equal(raised.n, 0, 'no finding raised');
  t.same(s.actions(), [], 'no action taken');
  const failed = s.sup.store.db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'scan' AND guest = ? AND json_extract(payload, '$.outcome') != 'clean'").get(h.guest) as { n: number };
  t.equal(failed.n, 0, 'every scan clean');
  t.equal(s.lines.filter((l) => /watch cycle failed|ALERT/.test(l.line)).length, 0);
});

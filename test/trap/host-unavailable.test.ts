// The write trap on this host's stock kernel, for real:
//  1. the native binding against a real KVM VM (test/trap/node/vmm.c) whose
//     kernel has no trap: attach reports "unavailable" (EINVAL/ENOTTY), no throw;
//  2. the supervisor watching a real lab guest: "trap unavailable: <reason>"
//     is logged once, scans go on clean, no finding, no crash.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { LiveSupervisor, makeHarness } from '../supervisor/harness.js';
import { sleep } from '../../src/util/deadline.js';

const root = packageRoot();

t.test('binding on a KVM without the trap: unavailable, said once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-trap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const vmm = join(dir, 'vmm');
  const cc = spawnSync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', vmm, join(root, 'test/trap/node/vmm.c')], { encoding: 'utf8' });
  t.equal(cc.status, 0, `vmm.c builds: ${cc.stderr}`);
  const probe = spawnSync(vmm, [], { input: 'quit\n', encoding: 'utf8', timeout: 10_000 });
  if (!/^READY /m.test(probe.stdout)) {
    t.comment(`SKIP: this host cannot create a KVM VM: ${probe.stdout.trim()}`);
    return;
  }
  const r = spawnSync(process.execPath, [join(root, 'dist/test/trap/node/check-binding.js'), vmm, 'stock'], { encoding: 'utf8', timeout: 60_000 });
  const checks = [...r.stdout.matchAll(/^(not )?ok \d+ - (.*)$/gm)];
  t.ok(checks.length >= 4, `check-binding.js stock ran its checks:\n${r.stdout}${r.stderr}`);
  for (const m of checks) t.ok(m[1] === undefined, m[2] as string);
  t.equal(r.status, 0, 'check-binding.js stock exits 0');
});

t.test('supervisor on a lab guest without the trap: says so once, keeps scanning', async (t) => {
  const h = makeHarness('trap-off', { scanIntervalSec: 0.5 });
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  await s.start();
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 180_000);
  const w = s.sup.watches[0];
  if (!w) throw new Error('no watch');
  const from = w.scans;
  const until = Date.now() + 120_000;
  while (w.scans - from < 10 && Date.now() < until) await sleep(200);
  t.ok(w.scans - from >= 10, `10 more scans after the baseline (${w.scans - from})`);
  const said = s.lines.filter((l) => /trap unavailable: /.test(l.line));
  t.equal(said.length, 1, `"trap unavailable" logged exactly once: ${said.map((l) => l.line).join(' | ')}`);
  t.match(said[0]?.line ?? '', /\[trap-off\] trap unavailable: .*(anon_inode:kvm-vm|has no introvisor write trap)/, 'with the reason (TCG guest: no KVM VM; KVM guest: no trap in the kernel)');
  t.equal(w.lastScan?.trap?.status, 'unavailable', 'the scan summary carries the trap state');
  // Unchanged scans are summed into one scan event (stats.scans); write the one still open.
  w.flushSummary();
  const scans = s.sup.store.db.prepare("SELECT json_extract(payload, '$.outcome') AS outcome, json_extract(payload, '$.stats.trapArmed') AS armed, json_extract(payload, '$.stats.scans') AS n FROM events WHERE kind = 'scan' AND guest = ?").all(h.guest) as { outcome: string; armed: number | null; n: number | null }[];
  const counted = scans.reduce((sum, x) => sum + (x.n ?? 1), 0);
  t.ok(counted >= 10 && scans.every((x) => x.armed === 0), `every scan event says trapArmed 0 (${counted} scans in ${scans.length} events)`);
  t.ok(scans.slice(-5).every((x) => x.outcome === 'clean'), 'the last scans are clean');
  const findings = s.sup.store.db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'finding' AND guest = ?").get(h.guest) as { n: number };
  t.equal(findings.n, 0, 'no finding');
  t.equal(s.lines.filter((l) => /watch cycle failed|ALERT/.test(l.line)).length, 0, 'no failed cycle');
});

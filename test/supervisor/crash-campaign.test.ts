// The crash campaign: a watchdog process (fixtures/campaign-child.ts: the real
// GuestWatch, SQLite store, ladder journal and policy store over a scripted
// guest) is SIGKILLed at seeded random points, across scans, ladder actions,
// OTA policy applies and store writes, and restarted each time. After every
// kill: the database passes integrity_check and holds every event the process
// had reported durable. At the end: no action ran twice, the ladder resumed and
// brought the guest back, and the policy store opens clean.
// IV_CAMPAIGN_KILLS (default 100) and IV_CAMPAIGN_SEED make it longer or
// another run; `npm run campaign` runs 1000.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { FilePolicyStore } from '../../src/ota/policy-store.js';
import { validatePolicy } from '../../src/policy/schema.js';
import type { Policy } from '../../src/policy/types.js';

const KILLS = Number(process.env.IV_CAMPAIGN_KILLS ?? 100);
const SEED = Number(process.env.IV_CAMPAIGN_SEED ?? 20261201);
const child = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'campaign-child.js');
const dir = mkdtempSync(join(tmpdir(), 'iv-campaign-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let seed = SEED >>> 0;
const rand = (): number => { seed = (seed * 1664525 + 1013904223) >>> 0; return seed / 2 ** 32; };

interface Run { durable: number; resumed: string | null; exitedByItself: string | null }

/** Starts the child, lets it run `runMs` after it resumed, then SIGKILLs it (or stops it at the end). */
function runOnce(i: number, runMs: number | 'settle'): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, dir, String(SEED + i), ...(runMs === 'settle' ? ['settle'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    const r: Run = { durable: 0, resumed: null, exitedByItself: null };
    let killed = false;
    let buf = '';
    let stderr = '';
    const guard = setTimeout(() => { killed = true; p.kill('SIGKILL'); }, 60_000);
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = JSON.parse(line) as { durable?: number; resumed?: string };
        if (m.durable !== undefined) r.durable = Math.max(r.durable, m.durable);
        if (m.resumed !== undefined && r.resumed === null) {
          r.resumed = m.resumed;
          if (runMs !== 'settle') setTimeout(() => { killed = true; p.kill('SIGKILL'); }, runMs);
        }
      }
    });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      clearTimeout(guard);
      if (!killed && !(runMs === 'settle' && code === 0)) r.exitedByItself = `exit ${code} ${signal}: ${stderr.slice(-2000)}`;
      resolve(r);
    });
  });
}

t.test(`${KILLS} SIGKILLs across scans, actions, policy applies and store writes`, async (t) => {
  const db = join(dir, 'campaign.db');
  let maxDurable = 0;
  let integrityFailures = 0;
  let lost = 0;
  let selfExits = 0;
  for (let i = 0; i < KILLS; i++) {
    const r = await runOnce(i, Math.round(30 + rand() * 300));
    if (r.exitedByItself) { selfExits++; t.fail(`run ${i}: the process ended by itself: ${r.exitedByItself}`); break; }
    maxDurable = Math.max(maxDurable, r.durable);
    const d = new BetterSqlite3(db, { readonly: true });
    try {
      if (d.pragma('integrity_check', { simple: true }) !== 'ok') integrityFailures++;
      const { n } = d.prepare('SELECT count(*) AS n FROM events WHERE seq <= ?').get(maxDurable) as { n: number };
      // seq is AUTOINCREMENT from 1 and nothing is old enough for retention: every reported seq must be there.
      lost += maxDurable - n;
    } finally {
      d.close();
    }
  }
  // A last run, without attacks, until the guest has been healthy a while; then what all the runs did.
  const last = await runOnce(KILLS, 'settle');
  t.equal(last.exitedByItself, null, 'the last run resumed the ladder and settled the guest');
  const d = new BetterSqlite3(db, { readonly: true });
  t.teardown(() => d.close());
  const executed = readFileSync(join(dir, 'executed.log'), 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')[0] as string);
  const repeated = executed.length - new Set(executed).size;
  const journal = d.prepare('SELECT outcome, count(*) AS n FROM watchdog_actions GROUP BY outcome').all() as { outcome: string | null; n: number }[];
  const attacks = existsSync(join(dir, 'attacks.log')) ? readFileSync(join(dir, 'attacks.log'), 'utf8').split('\n').filter(Boolean).length : 0;
  const ladder = JSON.parse((d.prepare("SELECT state FROM watchdog_ladder WHERE guest = 'g1'").get() as { state: string }).state) as { pending: unknown };
  const policy = FilePolicyStore.open<Policy>(join(dir, 'policy'), validatePolicy);
  t.comment(`campaign: ${KILLS} kills (seed ${SEED}), ${maxDurable} events durable, ${attacks} attacks, ${executed.length} actions run; lost ${lost}, repeated ${repeated}, integrity failures ${integrityFailures}; journal ${JSON.stringify(journal)}; policy version ${policy.current()?.version}`);
  t.equal(selfExits, 0, 'no run ended by itself');
  t.equal(integrityFailures, 0, 'integrity_check ok after every kill');
  t.equal(lost, 0, 'no event reported durable was lost');
  t.equal(repeated, 0, 'no action ran twice');
  t.ok(executed.length > 0 && attacks > 0, 'the campaign did attack and recover');
  t.ok(maxDurable > KILLS, 'events were recorded between kills');
  t.same(policy.openProblems, [], 'the policy store opens clean');
  t.ok((policy.current()?.version ?? 0) > 0, 'policies were applied over the air');
  t.equal(ladder.pending, null, 'the ladder resumed and finished what it started');
});

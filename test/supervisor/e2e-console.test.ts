// The operator's console on one real lab guest (one boot): every `introvisor
// guest` subcommand, `inspect` and `demo attack` run as the CLI against an
// in-process supervisor over its control socket. The guest starts held: its
// second critical process ("sleep") has no start command, so its one-rung
// ladder is exhausted at once; the operator starts it and releases the hold.
import t from 'tap';
import { execFile } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { LiveSupervisor, makeHarness } from './harness.js';
import { sleep } from '../../src/util/deadline.js';

const POLICY = {
  version: 1,
  maxActionsPerHour: 30,
  onExhausted: { hold: 'keep-running', alert: true },
  faults: {
    'critical-process-missing': { confirmScans: 1, resetWindowSec: 30, ladder: [{ action: 'restart-process', count: 1, verifyTimeoutSec: 10, backoffSec: 0 }] },
  },
};

interface Run { code: number; stdout: string; stderr: string }

t.test('introvisor guest / inspect / demo against a running supervisor', async (t) => {
  const h = makeHarness('e2e-console', { critical: [{ name: 'csdtest', start: ['/data/bin/csdtest', '-d'] }, { name: 'sleep' }] });
  writeFileSync(join(h.dir, 'policy.json'), JSON.stringify(POLICY));
  const s = new LiveSupervisor(h);
  t.teardown(async () => { await s.stop(); h.cleanup(); });
  const cli = (...args: string[]): Promise<Run> => new Promise((resolve) => {
    execFile(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), ...args], { timeout: 120_000 }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr });
    });
  });
  const socket = s.sup.controlSocket;
  const guest = (...args: string[]): Promise<Run> => cli('guest', h.guest, '--socket', socket, ...args);
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await guest(...args, '--json');
    if (r.code !== 0) throw new Error(`guest ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  await s.start();
  t.equal(statSync(socket).mode & 0o777, 0o600, 'control socket is mode 0600');
  await s.waitFor(/kernel baseline recorded at the first clean scan/, 180_000);
  await s.waitFor(/HOLD held: critical-process-missing/, 60_000);

  const list = await cli('guest', '--socket', socket, '--json');
  const guests = JSON.parse(list.stdout) as { name: string; held: { reason: string } | null; trap: { status: string; detail: string | null } }[];
  t.same(guests.map((g) => g.name), [h.guest], 'guest list');
  t.ok(guests[0]?.held, 'listed as held');
  t.ok(guests[0]?.trap.status, `write trap state ${guests[0]?.trap.status}: ${guests[0]?.trap.detail}`);
  const summary = await guest();
  t.match(summary.stdout, /HELD: critical-process-missing/, 'the summary says the guest is held');
  t.match(summary.stdout, /write trap /, 'and the write trap state');

  const ps = await json<{ rows: { pid: number; comm: string; outside: string | null; inside: string | null; mismatch: boolean }[] }>('ps');
  const csd = ps.rows.find((r) => r.comm === 'csdtest');
  t.ok(csd && csd.outside && csd.inside, `csdtest seen outside (${csd?.outside}) and inside (${csd?.inside})`);
  t.ok(ps.rows.every((r) => r.outside === null || /^[RSDTtXZPI]$/.test(r.outside)), 'ps letters, not raw state numbers');
  t.same(ps.rows.filter((r) => r.mismatch && !['sh', 'cat'].includes(r.comm)).map((r) => r.comm), [], 'no process on one side only (but the agent\'s own ps command)');
  const psText = await guest('ps');
  t.match(psText.stdout, /PID +PPID OUT IN +COMM/);
  const mods = await json<{ rows: { mismatch: boolean }[] }>('modules');
  t.ok(mods.rows.every((r) => !r.mismatch), `${mods.rows.length} modules, none hidden`);
  const sc = await json<{ tables: { table: string; entries: number; suspicious: number }[] }>('syscalls');
  t.ok(sc.tables.some((x) => x.table === 'sys_call_table' && x.entries > 300 && x.suspicious === 0), 'sys_call_table clean');
  const findings = await json<{ findings: { kind: string; evidence: unknown }[] }>('findings');
  t.same(findings.findings.map((f) => f.kind), ['critical-process-missing'], 'the open finding, with evidence');
  t.match((await guest('trap')).stdout, /^write trap \w+/);

  const insp = await cli('inspect', h.guest, '--socket', socket);
  t.equal(insp.code, 0);
  t.match(insp.stdout, /the supervisor's latest scan/, 'inspect asks the running supervisor');

  const started = await guest('exec', '--', '/bin/sh', '-c', 'for i in 1 2; do sleep 100000 </dev/null >/dev/null 2>&1 & echo $!; done');
  t.equal(started.code, 0, 'exec through the agent');
  const [, victim] = started.stdout.trim().split('\n').map(Number);
  t.ok(victim !== undefined && victim > 1, `two sleepers, one to kill: ${victim}`);
  t.equal((await guest('exec', '--', '/bin/sh', '-c', 'exit 3')).code, 3, 'exec gives the command\'s exit code');

  const from = s.lines.length;
  const rel = await guest('release');
  t.equal(rel.code, 0, rel.stderr);
  t.match(rel.stdout, /hold released/);
  await s.waitFor(/finding cleared: critical-process-missing/, 30_000, from);
  const again = await guest('release');
  t.equal(again.code, 1);
  t.match(again.stderr, /is not held/, 'a second release is refused');

  const kill = await guest('action', 'kill-process', '--target', String(victim));
  t.equal(kill.code, 0, kill.stderr);
  t.match(kill.stdout, /kill-process done/);
  const acc = await guest('baseline', 'accept');
  t.equal(acc.code, 0, acc.stderr);
  t.match(acc.stdout, /^baseline of .* recorded/);
  await s.waitFor(/kernel baseline accepted by an operator/, 1_000);

  t.same(await json('pause'), { watching: false });
  const before = (await json<{ scans: number; watching: boolean }>()).scans;
  await sleep(3_000);
  const paused = await json<{ scans: number; watching: boolean }>();
  t.equal(paused.watching, false);
  t.ok(paused.scans <= before + 1, `no scans while paused (${before} -> ${paused.scans})`);
  await guest('resume');
  await sleep(3_000);
  t.ok((await json<{ scans: number }>()).scans > paused.scans + 1, 'scans again after resume');
  const ps2 = await json<{ rows: { pid: number }[] }>('ps');
  t.notOk(ps2.rows.some((r) => r.pid === victim), 'the killed pid is gone from both views');

  t.equal((await guest('action', 'format-disk')).code, 2, 'an unknown action is a usage error');
  t.equal((await guest('frobnicate')).code, 2, 'an unknown subcommand is a usage error');

  // The demo's attack, played through the socket: finding -> ladder -> healthy.
  const f2 = s.lines.length;
  const demo = await cli('demo', 'attack', 'kill-critical', h.guest, '--socket', socket);
  t.equal(demo.code, 0, demo.stderr);
  const raised = await s.waitFor(/finding raised: critical-process-missing: .*csdtest/, 15_000, f2);
  await s.waitFor(/action restart-process \(attempt 1\/1\)/, 10_000, raised.index);
  await s.waitFor(/ladder critical-process-missing: verified/, 30_000, raised.index);

  const rows = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'operator-action' ORDER BY seq").all() as { payload: string }[];
  const ops = rows.map((r) => JSON.parse(r.payload) as { operation: string; outcome: string; who: string; detail: string | null });
  t.same(ops.map((o) => `${o.operation}:${o.outcome}`),
    ['exec:ok', 'exec:ok', 'release:ok', 'release:failed', 'action:ok', 'baseline-accept:ok', 'pause:ok', 'resume:ok', 'exec:ok'],
    'every operator action recorded with its outcome');
  t.ok(ops.every((o) => /^local cli pid \d+ \(claimed\)$/.test(o.who)), 'who asked');
  const opActions = s.sup.store.db.prepare("SELECT payload FROM events WHERE kind = 'action' AND json_extract(payload, '$.actionId') LIKE '%:operator:%'").all() as { payload: string }[];
  t.equal(opActions.length, 1, 'the operator\'s kill-process is an action event too');
});

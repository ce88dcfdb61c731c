// `introvisor status`, `log` and `policy show` as an operator runs them
// (bin/introvisor.js), on a store and policy directory this test filled.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EventStore } from '../../src/store/event-store.js';
import { FilePolicyStore } from '../../src/ota/policy-store.js';
import { validatePolicy } from '../../src/policy/schema.js';
import { sampleEvents } from '../telemetry/sample-events.js';

const bin = resolve(process.cwd(), 'bin', 'introvisor.js');
function introvisor(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const c = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    c.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    c.on('close', (code) => res({ code, stdout, stderr }));
  });
}

t.test('status, log and policy show', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const db = join(dir, 'introvisor.db');
  const store = new EventStore({ path: db, deviceId: 'box-1' });
  const old = Date.now() - 3 * 3600_000;
  const oldScan = sampleEvents('old-guest', old)[0];
  if (!oldScan) throw new Error('no sample');
  store.record({ ...oldScan, atMs: old });
  for (const e of sampleEvents('lab1')) store.record(e);
  // The supervisor keeps the store open while the CLI reads it.
  t.teardown(() => store.close());
  const policyDir = join(dir, 'policy');
  FilePolicyStore.open(policyDir, validatePolicy, { document: { version: 1, maxActionsPerHour: 7 }, source: 'file:/etc/introvisor/policy.json' });

  const status = await introvisor(['status', '--db', db, '--policy-dir', policyDir]);
  t.equal(status.code, 3, `exit 3: findings are open (${status.stderr})`);
  t.match(status.stdout, /device box-1/);
  t.match(status.stdout, /policy version 0 from file:\/etc\/introvisor\/policy.json/);
  t.match(status.stdout, /outbox 9 undelivered/);
  t.match(status.stdout, /lab1\s+recovering\s+1 open finding/);
  t.match(status.stdout, /critical syscall-table-changed: sys_call_table\[39\]/);
  t.match(status.stdout, /syscall-table-changed: step 0 restore-image attempt 1/);
  const json = JSON.parse((await introvisor(['status', '--db', db, '--policy-dir', policyDir, '--json'])).stdout) as { guests: unknown[]; policy: { version: number } };
  t.equal(json.guests.length, 1);

  const all = await introvisor(['log', '--db', db]);
  t.equal(all.code, 0, all.stderr);
  t.equal(all.stdout.trim().split('\n').length, 9);
  t.match(all.stdout, /old-guest\s+scan faults/);
  const recent = await introvisor(['log', '--db', db, '--since', '1h']);
  t.notMatch(recent.stdout, /old-guest/, '--since leaves out the old event');
  const guest = await introvisor(['log', '--db', db, '--guest', 'lab1', '--kind', 'action,refused-write']);
  const lines = guest.stdout.trim().split('\n');
  t.equal(lines.length, 2);
  t.match(lines[0] ?? '', /lab1\s+action restore-image ok \(7012 ms\)/);
  t.match(lines[1] ?? '', /refused write to sys_call_table\[39\] gpa 0x2a001138 len 8 from rip 0xffffffffc0a01234/);
  const bad = await introvisor(['log', '--db', db, '--kind', 'nonsense']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--kind nonsense: not one of/);
  const badSince = await introvisor(['log', '--db', db, '--since', 'last-tuesday']);
  t.equal(badSince.code, 2);

  const policy = await introvisor(['policy', 'show', '--policy-dir', policyDir]);
  t.equal(policy.code, 0, policy.stderr);
  t.match(policy.stdout, /version 0 from file:\/etc\/introvisor\/policy.json/);
  t.match(policy.stdout, /"maxActionsPerHour": 7/);
  t.match(policy.stdout, /effective \(with defaults filled in\)/);
  const missing = await introvisor(['policy', 'show', '--policy-dir', join(dir, 'nope')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /does not exist/);
  t.equal((await introvisor(['status', '--db', join(dir, 'absent.db')])).code, 1, 'a missing database is an error, not a new empty one');
});

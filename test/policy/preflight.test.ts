// Policy preflight: what a ladder needs from each guest, said before the fault
// comes; and the supervisor's gate, which makes the policy store roll back a
// policy the guests cannot carry out (a real FilePolicyStore on disk).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { policyProblems } from '../../src/policy/preflight.js';
import { validatePolicy } from '../../src/policy/schema.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';
import type { Policy } from '../../src/policy/types.js';
import { FilePolicyStore } from '../../src/ota/policy-store.js';
import { policyGate, preflightOnPolicyChange } from '../../src/supervisor/supervisor.js';

const guests = [
  { name: 'web', introspection: true, critical: [{ name: 'nginx', canStart: true }] },
  { name: 'db', introspection: true, critical: [{ name: 'postgres', canStart: false }] },
];

t.test('the defaults need a start command for each critical process', async (t) => {
  t.same(policyProblems(DEFAULT_POLICY, guests), ['guest db: critical-process-missing rung 0 (restart-process) needs a start command for postgres']);
  t.same(policyProblems(DEFAULT_POLICY, [guests[0] as (typeof guests)[0]]), []);
});

t.test('a process action on a whole-kernel fault is a problem', async (t) => {
  const v = validatePolicy({ version: 1, faults: { 'syscall-table-changed': { ladder: [{ action: 'kill-process', count: 1, verifyTimeoutSec: 10, backoffSec: 0 }] } } });
  if (!v.ok) throw new Error(v.errors.join('; '));
  t.match(policyProblems(v.policy, []), [/syscall-table-changed rung 0 \(kill-process\) names no process/]);
});

t.test('the gate makes the policy store roll back a policy the guests cannot carry out', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-gate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = FilePolicyStore.open<Policy>(dir, validatePolicy, { document: { version: 1, faults: { 'critical-process-missing': { ladder: [{ action: 'reboot-os', count: 1, verifyTimeoutSec: 10, backoffSec: 0 }] } } }, source: 'test' });
  store.subscribe(policyGate(() => guests));
  const bad = await store.apply({ version: 2, source: 'ota:test', keyId: null, digest: null, document: { version: 1 } });
  t.match(bad, { ok: false, rolledBack: true, reason: /guest db: .*postgres/, activeVersion: 0 });
  t.equal(store.current()?.version, 0, 'the previous policy runs');
  const good = await store.apply({ version: 3, source: 'ota:test', keyId: null, digest: null, document: { version: 1, maxActionsPerHour: 20, faults: { 'critical-process-missing': { ladder: [{ action: 'restart-vm', count: 1, verifyTimeoutSec: 10, backoffSec: 0 }] } } } });
  t.match(good, { ok: true, version: 3 });
});

t.test('a policy taken has the guests\' rungs checked again, each problem an alert, the policy kept', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'iv-gate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = FilePolicyStore.open<Policy>(dir, validatePolicy, { document: { version: 1 }, source: 'test' });
  const lines: string[] = [];
  let problems: string[] = [];
  store.subscribe(preflightOnPolicyChange(async () => problems, (l) => lines.push(l)));
  t.match(await store.apply({ version: 2, source: 'ota:test', keyId: null, digest: null, document: { version: 1, maxActionsPerHour: 20 } }), { ok: true, version: 2 });
  t.same(lines, [], 'nothing to say while every rung can run');
  problems = ['guest web: /image/libvirt: /srv/golden.qcow2 does not exist'];
  t.match(await store.apply({ version: 3, source: 'ota:test', keyId: null, digest: null, document: { version: 1, maxActionsPerHour: 21 } }), { ok: true, version: 3 });
  t.same(lines, ['ALERT preflight at policy version 3: guest web: /image/libvirt: /srv/golden.qcow2 does not exist']);
  t.equal(store.current()?.version, 3, 'the policy runs: the problem is the guest\'s');
});

// Policy validation: defaults fill what a file leaves out; errors name the field.
import t from 'tap';
import { validatePolicy, loadPolicyFile } from '../../src/policy/schema.js';
import { DEFAULT_POLICY } from '../../src/policy/defaults.js';

t.test('a minimal document gets the default ladders', async (t) => {
  const v = validatePolicy({ version: 1 });
  t.ok(v.ok);
  if (!v.ok) return;
  t.same(v.policy, DEFAULT_POLICY);
  t.same(v.policy.faults['critical-process-missing'].ladder.map((r) => `${r.action}x${r.count}`),
    ['restart-processx3', 'reboot-osx3', 'restart-vmx1', 'restore-imagex1']);
  t.same(v.policy.faults['hidden-process'].ladder.map((r) => `${r.action}x${r.count}`),
    ['reboot-osx2', 'restart-vmx1', 'restore-imagex1']);
  t.same(v.policy.faults['syscall-table-changed'].ladder.map((r) => r.action), ['restore-image']);
});

t.test('a fault kind given in the file replaces that ladder only', async (t) => {
  const v = validatePolicy({
    version: 1,
    maxActionsPerHour: 4,
    faults: { 'hidden-process': { ladder: [{ action: 'kill-process', count: 1, verifyTimeoutSec: 5, backoffSec: 0 }] } },
  });
  t.ok(v.ok);
  if (!v.ok) return;
  t.equal(v.policy.maxActionsPerHour, 4);
  t.same(v.policy.faults['hidden-process'].ladder.map((r) => r.action), ['kill-process']);
  t.equal(v.policy.faults['hidden-process'].confirmScans, DEFAULT_POLICY.faults['hidden-process'].confirmScans);
  t.same(v.policy.faults['critical-process-missing'], DEFAULT_POLICY.faults['critical-process-missing']);
});

t.test('errors name each bad field', async (t) => {
  const v = validatePolicy({
    version: 1,
    maxActionsPerHour: 0,
    onExhausted: { hold: 'explode' },
    faults: {
      'hidden-process': { ladder: [{ action: 'reboot-os', count: 0, verifyTimeoutSec: 5 }] },
      'no-such-fault': {},
    },
  });
  t.notOk(v.ok);
  if (v.ok) return;
  const text = v.errors.join('\n');
  t.match(text, '/maxActionsPerHour must be >= 1');
  t.match(text, '/onExhausted/hold must be one of "keep-running", "pause", "stop"');
  t.match(text, '/faults/hidden-process/ladder/0/count must be >= 1');
  t.match(text, '/faults/hidden-process/ladder/0/backoffSec is required');
  t.match(text, '/faults/no-such-fault is not a known field');
});

t.test('an empty ladder and a wrong version are refused', async (t) => {
  const a = validatePolicy({ version: 1, faults: { 'agent-down': { ladder: [] } } });
  t.notOk(a.ok);
  if (!a.ok) t.match(a.errors.join('\n'), '/faults/agent-down/ladder must NOT have fewer than 1 items');
  const b = validatePolicy({ version: 2 });
  t.notOk(b.ok);
  if (!b.ok) t.match(b.errors.join('\n'), '/version must be equal to constant');
});

t.test('the shipped example policy is valid', async (t) => {
  const p = loadPolicyFile(new URL('../../../examples/policy.json', import.meta.url).pathname);
  t.equal(p.version, 1);
  t.same(p.faults['hidden-process'].ladder.map((r) => r.action), ['reboot-os', 'restart-vm', 'restore-image']);
});
